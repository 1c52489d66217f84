/* kv_par: forked workers over a shared piece counter. */
#include "par.h"
#include <stdio.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

void *kv_par_map(size_t bytes) {
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void kv_par_unmap(void *p, size_t bytes) {
    if (p) munmap(p, bytes ? bytes : 1);
}

static int drain(long n, long *next, kv_par_fn fn, void (*fini)(void *), void *ctx) {
    void *local = NULL;
    int bad = 0;
    for (long i; !bad && (i = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED)) < n;) bad = fn(ctx, i, &local);
    if (fini) fini(local);
    return bad;
}

kv_status kv_par_for(long n, int jobs, kv_par_fn fn, void (*fini)(void *), void *ctx) {
    long inline_next = 0;
    if (jobs > n) jobs = (int)n;
    if (jobs <= 1) return drain(n, &inline_next, fn, fini, ctx) ? kv_errorf(KV_ENOMEM, "out of memory") : KV_OK;
    if (jobs > 64) jobs = 64;
    long *next = kv_par_map(sizeof *next);
    if (!next) return kv_errorf(KV_ENOMEM, "cannot map shared memory for %d workers", jobs);
    pid_t pids[64], parent = getpid();
    int started = 0;
    fflush(NULL); /* buffered output must not be written twice */
    for (; started < jobs; started++) {
        pids[started] = fork();
        if (pids[started] == 0) {
            /* a worker outliving a killed caller would only burn CPU for nobody */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(1);
            _exit(drain(n, next, fn, fini, ctx) ? 1 : 0);
        }
        if (pids[started] < 0) break;
    }
    int bad = started == 0 && drain(n, next, fn, fini, ctx);
    for (int w = 0; w < started; w++) {
        int wst;
        if (waitpid(pids[w], &wst, 0) < 0 || !WIFEXITED(wst) || WEXITSTATUS(wst) != 0) bad = 1;
    }
    /* fewer workers than asked (fork failed) still finish every piece: the counter is shared */
    kv_par_unmap(next, sizeof *next);
    return bad ? kv_errorf(KV_EIO, "a worker process failed or could not start") : KV_OK;
}
