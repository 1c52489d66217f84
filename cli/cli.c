/* cli: error reporting and strict number parsing shared by the subcommands. */
#include "cli.h"
#include "../core/db.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "../core/kv_str.h"

const char *cli_prog = "kvpr";

int cli_fail(kv_status st) {
    fprintf(stderr, "%s: %s\n", cli_prog, kv_errmsg());
    switch (st) {
    case KV_EINVAL: case KV_EPARSE: case KV_ENOTFOUND: case KV_EOVERFLOW: case KV_ENOFIT: return 2;
    default: return 1;
    }
}

int cli_usage(const char *fmt, ...) {
    /* usage errors quote the command line: escaped like every other message, so one line */
    char raw[1024], msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    kv_str_escape(msg, sizeof msg, raw);
    fprintf(stderr, "%s: %s\n", cli_prog, msg);
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
    int ms;
    kv_status st = db_timeout_from_env(5000, &ms);
    return st ? st : db_open(path, ms, db);
}

void cli_warn_context(const kv_model *m, int ctx) {
    /* a context past the trained one still runs (positions are computed, not looked up, for rotary
     * models), but its answers are about a model used outside its range: say so, do not refuse */
    if (m->ctx_max > 0 && ctx > m->ctx_max)
        fprintf(stderr, "%s: warning: context %d exceeds %s's max_position_embeddings (%d)\n", cli_prog, ctx, m->name, m->ctx_max);
}
