/* eng_host: the host backend. One thread per stream runs that stream's operations in order;
 * events are timestamps with a flag, and a wait blocks its stream until the event is recorded,
 * as cudaStreamWaitEvent does; a hold blocks its stream until release(), as the CUDA backend's
 * spin kernel does. Copies are memcpy, GEMMs OpenBLAS sgemm on fp32 copies of the
 * fp16 operands (fp32 accumulate, as cuBLAS's GemmEx with CUBLAS_COMPUTE_32F). */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "../kernels/ref.h"
#include "backend.h"
#include "host_quant.h"
#include "sysmem.h"

float eng_h2f(eng_half h) { return kref_h2f(h); }
eng_half eng_f2h(float f) { return kref_f2h(f); }

typedef enum { OP_COPY, OP_GEMM, OP_ATTN, OP_ACT, OP_NORM, OP_RECORD, OP_WAIT, OP_HOLD, OP_FN } op_kind;

typedef struct {
    op_kind k;
    void *dst;
    const void *src, *src2;
    size_t bytes;
    int M, N, K, ctx, nh, nkv, d, ev;
    void (*fn)(void *); /* OP_FN */
    void *arg;
    long gen; /* OP_HOLD: waits while the release count is still this */
    float beta;
    eng_act act;
} op_t;

typedef struct {
    pthread_t th;
    op_t *q;
    int head, tail, cap; /* ring */
    int busy;
    float *sa, *sb, *sc; /* sgemm scratch */
    size_t na, nb, nc;
} hstream;

struct eng_backend {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* any change: new op, op done, event recorded */
    hstream s[ENG_NSTREAMS];
    int stop;
    int nev;
    int *ev_done;
    double *ev_t; /* seconds, CLOCK_MONOTONIC */
    long releases; /* release() calls so far */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int ensure(float **p, size_t *n, size_t need) {
    if (*n >= need) return 0;
    float *q = realloc(*p, need * sizeof *q);
    if (!q) return -1;
    *p = q;
    *n = need;
    return 0;
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
/* fp16 -> fp32 eight at a time where the CPU has F16C (every x86-64 CPU since 2012): the LM head's
 * weights (hidden x vocab, tens of millions of values) are converted on every call */
__attribute__((target("avx,f16c"))) static void h2f_f16c(const eng_half *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i v;
        memcpy(&v, x + i, sizeof v); /* an unaligned load, without casting the pointer */
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(v));
    }
    const float *t = kref_h2f_table();
    for (; i < n; i++) y[i] = t[x[i]];
}

/* fp32 -> fp16, round to nearest even, eight at a time: converted one value at a time, a GEMM's
 * M x N output made ffn_up (N = 3072) take 40-46 % longer than ffn_down of the same size at
 * M = 128 and 256 */
__attribute__((target("avx,f16c"))) static void f2h_f16c(const float *x, eng_half *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        memcpy(y + i, &v, sizeof v);
    }
    for (; i < n; i++) y[i] = eng_f2h(x[i]);
}
#endif

static int have_f16c(void) {
#if defined(__x86_64__)
    static int f16c = -1;
    if (f16c < 0) {
        unsigned a, b, c, d;
        f16c = __get_cpuid(1, &a, &b, &c, &d) && (c >> 28 & 1) && (c >> 29 & 1);
    }
    return f16c;
#else
    return 0;
#endif
}

static void f2h_array(const float *x, eng_half *y, size_t n) {
#if defined(__x86_64__)
    if (have_f16c()) {
        f2h_f16c(x, y, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) y[i] = eng_f2h(x[i]);
}

static void h2f_array(const eng_half *x, float *y, size_t n) {
#if defined(__x86_64__)
    static int f16c = -1;
    if (f16c < 0) {
        /* CPUID leaf 1: ECX bit 28 is AVX, bit 29 F16C (clang's __builtin_cpu_supports lacks "f16c") */
        unsigned a, b, c, d;
        f16c = __get_cpuid(1, &a, &b, &c, &d) && (c >> 28 & 1) && (c >> 29 & 1);
    }
    if (f16c) {
        h2f_f16c(x, y, n);
        return;
    }
#endif
    const float *t = kref_h2f_table();
    for (size_t i = 0; i < n; i++) y[i] = t[x[i]];
}

/* The fp16 weights are converted a panel at a time (up to 512 columns by as many rows as fit in
 * 256 KiB), each panel multiplied while it is still in the cache, C accumulating over the panels
 * of a column block. Converting all of W first wrote a K x N fp32 copy (154 MB for OPT-125M's LM
 * head) to memory and read it back, so the time per weight grew with the matrix (M = 4, one thread:
 * 0.65-0.77 ns for OPT-125M's layer shapes, 1.05 ns for its LM head; in panels 0.58-0.78 and
 * 0.66 ns). */
#define GEMM_PANEL_BYTES (256 * 1024)

static void run_gemm(hstream *st, const op_t *o) {
    size_t mk = (size_t)o->M * o->K, mn = (size_t)o->M * o->N;
    int nb = o->N < 512 ? o->N : 512, kb = (int)(GEMM_PANEL_BYTES / 4 / (size_t)nb);
    if (kb < 16) kb = 16;
    if (kb > o->K) kb = o->K;
    if (ensure(&st->sa, &st->na, mk) || ensure(&st->sb, &st->nb, (size_t)kb * nb) || ensure(&st->sc, &st->nc, mn)) abort();
    const eng_half *A = o->src, *B = o->src2;
    eng_half *C = o->dst;
    h2f_array(A, st->sa, mk);
    if (o->beta != 0) h2f_array(C, st->sc, mn);
    for (int j = 0; j < o->N; j += nb) {
        int w = o->N - j < nb ? o->N - j : nb;
        for (int k0 = 0; k0 < o->K; k0 += kb) {
            int h = o->K - k0 < kb ? o->K - k0 : kb;
            for (int k = 0; k < h; k++) h2f_array(B + (size_t)(k0 + k) * o->N + j, st->sb + (size_t)k * w, (size_t)w);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, o->M, w, h, 1.0f, st->sa + k0, o->K, st->sb, w,
                        k0 ? 1.0f : o->beta, st->sc + j, o->N);
        }
    }
    f2h_array(st->sc, C, mn);
}

/* Decode attention over the engine's cache layout (position-major: row p*B + b holds K then V of
 * every KV head), streamed once in memory order: each row converted to fp32 once and used by every
 * query head of its group, with an online softmax per (sequence, head). The reference's loop (head
 * outer, a strided walk over the cache per head, fp16 decoded per element per head) reads the
 * cache nh times at a stride: 1.3-1.7 GB/s against this one's 3.1-3.2 (OPT-125M, batch 8, ctx
 * 256, one thread). The same arithmetic up to rounding: the test checks it against the double
 * reference. */
static void host_attention(hstream *st, const eng_half *q, const eng_half *kv, eng_half *out, int B, int ctx, int nh, int nkv, int d) {
    size_t row = 2 * (size_t)nkv * d, nq = (size_t)B * nh;
    /* scratch: q scaled (nq d), acc (nq d), m and l (nq each), one converted row */
    size_t need = 2 * nq * d + 2 * nq + row;
    if (ensure(&st->sa, &st->na, need)) abort();
    float *qs = st->sa, *acc = qs + nq * d, *m = acc + nq * d, *l = m + nq, *r = l + nq;
    int grp = nh / nkv;
    float scale = 1.0f / sqrtf((float)d);
    h2f_array(q, qs, nq * d);
    for (size_t i = 0; i < nq * d; i++) qs[i] *= scale, acc[i] = 0;
    for (size_t i = 0; i < nq; i++) m[i] = -INFINITY, l[i] = 0;
    for (int p = 0; p < ctx; p++)
        for (int b = 0; b < B; b++) {
            h2f_array(kv + ((size_t)p * B + b) * row, r, row);
            for (int h = 0; h < nh; h++) {
                size_t i = (size_t)b * nh + h;
                const float *k = r + (size_t)(h / grp) * d, *v = k + (size_t)nkv * d, *qv = qs + i * d;
                float s8[8] = {0}, s = 0; /* eight partial sums: a reduction the compiler may vectorise */
                int j = 0;
                for (; j + 8 <= d; j += 8)
                    for (int u = 0; u < 8; u++) s8[u] += qv[j + u] * k[j + u];
                for (; j < d; j++) s += qv[j] * k[j];
                for (int u = 0; u < 8; u++) s += s8[u];
                float *a = acc + i * d;
                if (s > m[i]) { /* a new maximum: rescale what was summed so far */
                    float c = expf(m[i] - s);
                    l[i] *= c;
                    for (j = 0; j < d; j++) a[j] *= c;
                    m[i] = s;
                }
                float w = expf(s - m[i]);
                l[i] += w;
                for (j = 0; j < d; j++) a[j] += w * v[j];
            }
        }
    for (size_t i = 0; i < nq; i++)
        for (int j = 0; j < d; j++) acc[i * d + j] = l[i] > 0 ? acc[i * d + j] / l[i] : 0;
    f2h_array(acc, out, nq * d);
}

static void execute(eng_backend *b, hstream *st, const op_t *o) {
    switch (o->k) {
    case OP_COPY: memcpy(o->dst, o->src, o->bytes); break;
    case OP_GEMM: run_gemm(st, o); break;
    case OP_ATTN: host_attention(st, o->src, o->src2, o->dst, o->M, o->ctx, o->nh, o->nkv, o->d); break;
    case OP_ACT: kref_activate_f(o->src, o->dst, o->M, o->N, (int)o->act); break;
    case OP_NORM: kref_rmsnorm_f(o->src, o->dst, o->M, o->N); break;
    case OP_FN: o->fn(o->arg); break;
    case OP_RECORD:
        pthread_mutex_lock(&b->mu);
        b->ev_t[o->ev] = now_s();
        b->ev_done[o->ev] = 1;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        break;
    case OP_WAIT:
        pthread_mutex_lock(&b->mu);
        while (!b->ev_done[o->ev] && !b->stop) pthread_cond_wait(&b->cv, &b->mu);
        pthread_mutex_unlock(&b->mu);
        break;
    case OP_HOLD: {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10; /* as the CUDA backend's spin kernel: never hang on a missing release */
        pthread_mutex_lock(&b->mu);
        while (b->releases == o->gen && !b->stop)
            if (pthread_cond_timedwait(&b->cv, &b->mu, &until) != 0) break;
        pthread_mutex_unlock(&b->mu);
        break;
    }
    }
}

typedef struct {
    eng_backend *b;
    int i;
} targ;

static void *worker(void *arg) {
    eng_backend *b = ((targ *)arg)->b;
    hstream *st = &b->s[((targ *)arg)->i];
    free(arg);
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (st->head == st->tail && !b->stop) pthread_cond_wait(&b->cv, &b->mu);
        if (b->stop) break;
        op_t o = st->q[st->head % st->cap];
        st->busy = 1;
        pthread_mutex_unlock(&b->mu);
        execute(b, st, &o);
        pthread_mutex_lock(&b->mu);
        st->head++;
        st->busy = 0;
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static kv_status enqueue(eng_backend *b, int s, const op_t *o) {
    if (s < 0 || s >= ENG_NSTREAMS) return kv_errorf(KV_EINVAL, "host backend: no stream %d", s);
    hstream *st = &b->s[s];
    pthread_mutex_lock(&b->mu);
    if (st->tail - st->head == st->cap) {
        /* grow the ring: copy the live part in order */
        int nc = st->cap * 2;
        op_t *q = malloc((size_t)nc * sizeof *q);
        if (!q) {
            pthread_mutex_unlock(&b->mu);
            return kv_errorf(KV_ENOMEM, "host backend: out of memory");
        }
        for (int i = st->head; i < st->tail; i++) q[i - st->head] = st->q[i % st->cap];
        st->tail -= st->head;
        st->head = 0;
        free(st->q);
        st->q = q;
        st->cap = nc;
    }
    if (o->k == OP_RECORD) b->ev_done[o->ev] = 0; /* a wait enqueued from now on waits for this record */
    st->q[st->tail % st->cap] = *o;
    st->tail++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return KV_OK;
}

static void h_close(eng_backend *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stop = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < ENG_NSTREAMS; i++) {
        if (b->s[i].q) pthread_join(b->s[i].th, NULL);
        free(b->s[i].q);
        free(b->s[i].sa), free(b->s[i].sb), free(b->s[i].sc);
    }
    free(b->ev_done);
    free(b->ev_t);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}

static kv_status h_open(eng_backend **out, int device, int n_events) {
    (void)device;
    if (n_events < 1) return kv_errorf(KV_EINVAL, "host backend: need at least one event");
    eng_backend *b = calloc(1, sizeof *b);
    if (!b) return kv_errorf(KV_ENOMEM, "host backend: out of memory");
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    /* one OpenBLAS thread per call: the streams are the parallelism, as on a GPU. With OpenBLAS's own
     * pool the compute stream's GEMM takes every core from the copy streams, and its spinning
     * workers slowed the next kernel (attention after the GEMMs: 2.1 GB/s with the pool, 3.5 without). */
    openblas_set_num_threads(1);
    b->nev = n_events;
    b->ev_done = calloc((size_t)n_events, sizeof *b->ev_done);
    b->ev_t = calloc((size_t)n_events, sizeof *b->ev_t);
    if (!b->ev_done || !b->ev_t) {
        h_close(b);
        return kv_errorf(KV_ENOMEM, "host backend: out of memory for %d events", n_events);
    }
    for (int i = 0; i < ENG_NSTREAMS; i++) {
        b->s[i].cap = 1024;
        b->s[i].q = malloc(1024 * sizeof(op_t));
        targ *a = malloc(sizeof *a);
        if (!b->s[i].q || !a || (a->b = b, a->i = i, pthread_create(&b->s[i].th, NULL, worker, a) != 0)) {
            free(a);
            free(b->s[i].q);
            b->s[i].q = NULL;
            h_close(b);
            return kv_errorf(KV_ENOMEM, "host backend: cannot start stream threads");
        }
    }
    *out = b;
    return KV_OK;
}

static kv_status h_info(eng_backend *b, eng_devinfo *o) {
    (void)b;
    long pages = sysconf(_SC_PHYS_PAGES), ps = sysconf(_SC_PAGESIZE), cores = sysconf(_SC_NPROCESSORS_ONLN);
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "host (CPU threads, OpenBLAS)");
    o->total_bytes = (double)pages * (double)ps;
    /* what this process may still allocate, cgroup limits included: "device" buffers are host RAM */
    o->free_bytes = eng_sysmem_available(NULL, 0);
    if (o->free_bytes < 0) o->free_bytes = (double)sysconf(_SC_AVPHYS_PAGES) * (double)ps;
    o->l2_bytes = 32.0 * 1048576; /* a typical last-level cache: only decides buffer rotation in bench */
    o->sms = cores > 0 ? (int)cores : 1;
    o->shares_host_memory = 1;
    return KV_OK;
}

static kv_status h_alloc(eng_backend *b, void **p, size_t bytes) {
    (void)b;
    *p = malloc(bytes ? bytes : 1);
    return *p ? KV_OK : kv_errorf(KV_ENOMEM, "host backend: cannot allocate %.1f MiB of 'device' memory", (double)bytes / 1048576.0);
}
static void h_free(eng_backend *b, void *p) { (void)b, free(p); }
static kv_status h_halloc(eng_backend *b, void **p, size_t bytes, int pinned) {
    (void)pinned;
    return h_alloc(b, p, bytes);
}
static void h_hfree(eng_backend *b, void *p, int pinned) { (void)b, (void)pinned, free(p); }

static kv_status h_copy(eng_backend *b, int s, void *dst, const void *src, size_t bytes, int dir) {
    (void)dir;
    op_t o = {.k = OP_COPY, .dst = dst, .src = src, .bytes = bytes};
    return enqueue(b, s, &o);
}
static kv_status h_gemm(eng_backend *b, int s, int M, int N, int K, const eng_half *A, const eng_half *B, eng_half *C, float beta) {
    if (M <= 0 || N <= 0 || K <= 0) return kv_errorf(KV_EINVAL, "gemm: bad shape %d x %d x %d", M, N, K);
    op_t o = {.k = OP_GEMM, .dst = C, .src = A, .src2 = B, .M = M, .N = N, .K = K, .beta = beta};
    return enqueue(b, s, &o);
}
static kv_status h_attn(eng_backend *b, int s, const eng_half *q, const eng_half *kv, eng_half *out, int B, int ctx, int nh,
                        int nkv, int d) {
    op_t o = {.k = OP_ATTN, .dst = out, .src = q, .src2 = kv, .M = B, .ctx = ctx, .nh = nh, .nkv = nkv, .d = d};
    return enqueue(b, s, &o);
}
static kv_status h_act(eng_backend *b, int s, const eng_half *x, eng_half *out, int rows, int cols, eng_act act) {
    op_t o = {.k = OP_ACT, .src = x, .dst = out, .M = rows, .N = cols, .act = act};
    return enqueue(b, s, &o);
}
static kv_status h_norm(eng_backend *b, int s, const eng_half *x, eng_half *out, int rows, int cols) {
    op_t o = {.k = OP_NORM, .src = x, .dst = out, .M = rows, .N = cols};
    return enqueue(b, s, &o);
}
static kv_status h_hostfn(eng_backend *b, int s, void (*fn)(void *), void *arg) {
    op_t o = {.k = OP_FN, .fn = fn, .arg = arg};
    return enqueue(b, s, &o);
}
static kv_status h_record(eng_backend *b, int s, int ev) {
    if (ev < 0 || ev >= b->nev) return kv_errorf(KV_EINVAL, "host backend: no event %d", ev);
    op_t o = {.k = OP_RECORD, .ev = ev};
    return enqueue(b, s, &o);
}
static kv_status h_wait(eng_backend *b, int s, int ev) {
    if (ev < 0 || ev >= b->nev) return kv_errorf(KV_EINVAL, "host backend: no event %d", ev);
    op_t o = {.k = OP_WAIT, .ev = ev};
    return enqueue(b, s, &o);
}
static kv_status h_sync(eng_backend *b) {
    pthread_mutex_lock(&b->mu);
    for (;;) {
        int idle = 1;
        for (int i = 0; i < ENG_NSTREAMS; i++) idle &= b->s[i].head == b->s[i].tail && !b->s[i].busy;
        if (idle) break;
        pthread_cond_wait(&b->cv, &b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return KV_OK;
}
static kv_status h_elapsed(eng_backend *b, int a, int z, double *ms) {
    if (a < 0 || a >= b->nev || z < 0 || z >= b->nev || !b->ev_done[a] || !b->ev_done[z])
        return kv_errorf(KV_EINVAL, "host backend: event %d or %d was not recorded", a, z);
    *ms = 1e3 * (b->ev_t[z] - b->ev_t[a]);
    return KV_OK;
}
static kv_status h_hold(eng_backend *b, int s) {
    pthread_mutex_lock(&b->mu);
    long g = b->releases;
    pthread_mutex_unlock(&b->mu);
    op_t o = {.k = OP_HOLD, .gen = g};
    return enqueue(b, s, &o);
}
static kv_status h_release(eng_backend *b) {
    pthread_mutex_lock(&b->mu);
    b->releases++;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return KV_OK;
}

const eng_backend_type eng_host_backend = {"host", h_open, h_close, h_info, h_alloc, h_free, h_halloc, h_hfree, h_copy,
                                            h_gemm, h_attn, h_act, h_norm, h_hostfn, h_record, h_wait, h_sync, h_elapsed, h_hold, h_release,
                                            eng_host_quant, eng_host_dequant};
