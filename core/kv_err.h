/* kv_err: status codes and the last error message of the calling thread.
 * Library functions never exit(): they return a kv_status and leave a one-line
 * message saying what went wrong and where; the CLI prints it and picks the exit code. */
#ifndef KV_ERR_H
#define KV_ERR_H

typedef enum {
    KV_OK = 0,
    KV_EINVAL,    /* bad argument or out-of-range value */
    KV_EPARSE,    /* malformed input file */
    KV_ENOTFOUND, /* unknown model, profile or file */
    KV_ENOMEM,    /* allocation failed */
    KV_EOVERFLOW, /* a size does not fit the integer type */
    KV_ENOFIT,    /* a plan does not fit in memory */
    KV_EIO,       /* file system error */
    KV_EDB,       /* SQLite error (locked, corrupt, ...) */
    KV_ESOLVER,   /* the LP/MIP solver did not return an optimum */
    KV_EDEVICE    /* GPU missing or a CUDA call failed */
} kv_status;

/* Sets the thread's message (printf-style) and returns st, so callers write
 * `return kv_errorf(KV_EINVAL, "batch must be > 0, got %d", b);` */
kv_status kv_errorf(kv_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends context ("profile foo.json: ") to the current message; returns st. */
kv_status kv_errctx(kv_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *kv_errmsg(void);
const char *kv_status_name(kv_status st);
void kv_errclear(void);

#endif
