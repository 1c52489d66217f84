/* cli: error reporting and strict number parsing shared by the subcommands. */
#include "cli.h"
#include "../core/db.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

const char *cli_prog = "kvpr";

int cli_fail(kv_status st) {
    fprintf(stderr, "%s: %s\n", cli_prog, kv_errmsg());
    switch (st) {
    case KV_EINVAL: case KV_EPARSE: case KV_ENOTFOUND: case KV_EOVERFLOW: case KV_ENOFIT: return 2;
    default: return 1;
    }
}

int cli_usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", cli_prog);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 2;
}

kv_status cli_int(const char *opt, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno)
        return kv_errorf(KV_EINVAL, "%s expects an integer, got '%s'", opt, s);
    if (v < lo || v > hi) return kv_errorf(KV_EINVAL, "%s must be in [%ld, %ld], got %ld", opt, lo, hi, v);
    *out = (int)v;
    return KV_OK;
}

kv_status cli_double(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v)) return kv_errorf(KV_EINVAL, "%s expects a number, got '%s'", opt, s);
    if (v < lo || v > hi) return kv_errorf(KV_EINVAL, "%s must be in [%g, %g], got %g", opt, lo, hi, v);
    *out = v;
    return KV_OK;
}

kv_status cli_db_open(const char *path, kv_db **db) {
    int ms = 5000;
    const char *e = getenv("KVPR_DB_TIMEOUT_MS");
    if (e && *e) {
        kv_status st = cli_int("KVPR_DB_TIMEOUT_MS", e, 0, 3600000, &ms);
        if (st) return st;
    }
    return db_open(path, ms, db);
}
