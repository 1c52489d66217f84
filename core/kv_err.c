/* kv_err: per-thread error message buffer (threads run sweeps in parallel). Messages quote keys,
 * names and paths from untrusted files, so control characters are escaped as they are stored:
 * every message stays one line and cannot drive the terminal that shows it. */
#include "kv_err.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "kv_str.h"

static _Thread_local char kv_msg[1024];

kv_status kv_errorf(kv_status st, const char *fmt, ...) {
    char raw[sizeof kv_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    kv_str_escape(kv_msg, sizeof kv_msg, raw);
    return st;
}

kv_status kv_errctx(kv_status st, const char *fmt, ...) {
    char raw[512], prefix[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    if (n < 0) return st;
    kv_str_escape(prefix, sizeof prefix, raw);
    size_t plen = strlen(prefix), mlen = strlen(kv_msg);
    if (plen + mlen >= sizeof kv_msg) { /* truncate the old tail, at a character boundary */
        mlen = sizeof kv_msg - 1 - plen;
        while (mlen > 0 && ((unsigned char)kv_msg[mlen] & 0xc0) == 0x80) mlen--;
    }
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
