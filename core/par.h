/* kv_par: a loop over independent pieces of work in forked worker processes. Each worker takes
 * the next index from a counter in shared memory, so pieces of very different cost balance
 * themselves; results go to memory the caller mapped shared (kv_par_map), which the workers write
 * and the caller reads after the loop. Processes, not threads: each worker has its own simulator
 * state and error message, and the caller's open files (a database) are never touched by them. */
#ifndef KV_PAR_H
#define KV_PAR_H

#include <stddef.h>
#include "kv_err.h"

/* fn(ctx, i, &local) for piece i; local is the worker's own scratch (NULL at first), handed to
 * fini at the worker's end. fn returns non-zero when the worker must stop (out of memory): the
 * loop then fails; errors of one piece are the caller's to record in shared memory. With jobs <= 1
 * or n <= 1 the loop runs in this process. */
typedef int (*kv_par_fn)(void *ctx, long i, void **local);
kv_status kv_par_for(long n, int jobs, kv_par_fn fn, void (*fini)(void *local), void *ctx);

/* Zeroed memory shared with the workers (NULL if it cannot be mapped), and its release. */
void *kv_par_map(size_t bytes);
void kv_par_unmap(void *p, size_t bytes);

#endif
