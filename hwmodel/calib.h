/* hw_calib: fits a hardware profile to measurements (kvpr-engine bench rows in results.db, or a
 * .sql dump under traces/): per link direction the per-copy overhead and bandwidth (weighted least squares
 * on copy time against size), the size-efficiency table, the duplex factor, the pageable plateau;
 * the kernel launch overhead, the GEMM efficiency table against M, the attention kernel's effective
 * bandwidth. Every fourth point is held out; both errors are reported and written into each fitted
 * field's provenance. */
#ifndef HW_CALIB_H
#define HW_CALIB_H

#include <stdio.h>
#include "../core/db.h"
#include "profile.h"

typedef struct {
    const char *group; /* "h2d", "d2h", "gemm", "attention", ... */
    int n_fit, n_hold;
    double fit_rms, fit_max, hold_rms, hold_max; /* relative errors of predicted time */
} hw_calib_fit;

typedef struct {
    char device[256], date[32];
    hw_calib_fit fits[8];
    int nfits;
} hw_calib_report;

/* Opens a results database, or loads a .sql dump into a private in-memory database. */
kv_status hw_calib_open_source(const char *path, kv_db **out);
/* Replays a dump's SQL text into a new in-memory database, admitting only kvpr's tables and rows
 * (see calib.c); KV_EPARSE for anything else. label names it in messages. */
struct sqlite3;
kv_status hw_calib_load_dump(const char *sql, const char *label, struct sqlite3 **out);
/* Fits base's fields to the measurements of one device (the one with most rows if device is NULL). */
kv_status hw_calibrate(kv_db *db, const hw_profile *base, const char *source, const char *device, hw_profile *out,
                       hw_calib_report *rep);
void hw_calib_print(const hw_calib_report *rep, FILE *f);
char *hw_calib_json(const hw_calib_report *rep);

#endif
