/* hw_calib: fits a hardware profile to measurements (kvpr-engine bench rows in results.db, or a
 * .sql dump under traces/): per link direction the per-copy overhead and bandwidth (weighted least squares
 * on copy time against size), the size-efficiency table, the duplex factor, the pageable plateau;
 * the device's own rates, none of them taken from the base profile: the GEMM peak (the best rate
 * measured), its efficiency against M and memory stream, the memory bandwidth, the attention
 * kernel's bandwidth, FLOP rate and fixed time, and one launch overhead no larger than the
 * smallest kernel. Every fourth point is held out; both errors are reported and written into each
 * fitted field's provenance, and a group above HW_CALIB_MAX_ERROR held out is marked failed. */
#ifndef HW_CALIB_H
#define HW_CALIB_H

#include <stdio.h>
#include "../core/db.h"
#include "profile.h"

/* A group whose held-out RMS error exceeds this cannot explain its own data: kvpr calibrate
 * refuses it (unless --force), and the fields it set carry HW_CALIB_FAILED in their provenance. */
#define HW_CALIB_MAX_ERROR 0.15
#define HW_CALIB_FAILED "FAILED: held-out error above 15 %"

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
/* The groups whose held-out error exceeds HW_CALIB_MAX_ERROR, as "gemm 19.2 %, attention 64.0 %"
 * into msg; returns how many. */
int hw_calib_failures(const hw_calib_report *rep, char *msg, size_t n);
/* 1 if any field of p carries the provenance of a failed fit (its source into what, if not NULL). */
int hw_profile_failed_fit(const hw_profile *p, char *what, size_t n);
char *hw_calib_json(const hw_calib_report *rep);

#endif
