/* kv_err: per-thread error message buffer (threads run sweeps in parallel). */
#include "kv_err.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char kv_msg[1024];

kv_status kv_errorf(kv_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kv_msg, sizeof kv_msg, fmt, ap);
    va_end(ap);
    return st;
}

kv_status kv_errctx(kv_status st, const char *fmt, ...) {
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    if (n < 0) return st;
    size_t plen = strlen(prefix), mlen = strlen(kv_msg);
    if (plen + mlen >= sizeof kv_msg) mlen = sizeof kv_msg - 1 - plen; /* truncate the old tail */
    memmove(kv_msg + plen, kv_msg, mlen);
    memcpy(kv_msg, prefix, plen);
    kv_msg[plen + mlen] = 0;
    return st;
}

const char *kv_errmsg(void) { return kv_msg[0] ? kv_msg : "no error"; }
void kv_errclear(void) { kv_msg[0] = 0; }

const char *kv_status_name(kv_status st) {
    static const char *names[] = {"ok", "invalid argument", "parse error", "not found",
                                  "out of memory", "overflow", "does not fit", "I/O error",
                                  "database error", "solver error", "device error"};
    unsigned i = (unsigned)st;
    return i < sizeof names / sizeof names[0] ? names[i] : "unknown error";
}
