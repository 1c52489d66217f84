/* eng_fill: parallel random fp16 fill and parallel copy. */
#include "fill.h"
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define CHUNK ((size_t)1 << 20) /* values per independently seeded chunk */

int eng_fill_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 16 ? 16 : (int)n;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Magnitudes in [s/2, 2s) with s = 2^E: biased exponent E+15 or E+14, mantissa uniform. Their mean
 * square is 35/24 s^2, so s is the power of two nearest rms / sqrt(35/24). */
static int exponent_for(double rms) {
    double e = rms > 0 ? round(log2(rms / sqrt(35.0 / 24.0))) : -14;
    int be = (int)e + 15;
    return be < 2 ? 2 : be > 30 ? 30 : be;
}

double eng_fill_rms(double rms) { return ldexp(sqrt(35.0 / 24.0), exponent_for(rms) - 15); }

static void fill_chunk(eng_half *p, size_t n, int be, uint64_t seed) {
    uint64_t s = seed;
    size_t i = 0;
    while (i < n) {
        uint64_t r = splitmix(&s);
        for (int k = 0; k < 5 && i < n; k++, i++, r >>= 12) {
            /* 12 bits: sign, exponent step, 10 mantissa bits */
            unsigned sign = (unsigned)(r >> 11) & 1u, lo = (unsigned)(r >> 10) & 1u, mant = (unsigned)r & 0x3FFu;
            p[i] = (eng_half)(sign << 15 | (unsigned)(be - (int)lo) << 10 | mant);
        }
    }
}

typedef struct {
    eng_half *p;
    const unsigned char *src;
    unsigned char *dst;
    size_t n, first, last; /* chunk range [first, last) */
    int be;
    uint64_t seed;
} job;

static void *fill_worker(void *arg) {
    job *j = arg;
    for (size_t c = j->first; c < j->last; c++) {
        size_t off = c * CHUNK, len = j->n - off < CHUNK ? j->n - off : CHUNK;
        fill_chunk(j->p + off, len, j->be, j->seed ^ (c * 0xD1B54A32D192ED03ull));
    }
    return NULL;
}

static void *copy_worker(void *arg) {
    job *j = arg;
    memcpy(j->dst + j->first, j->src + j->first, j->last - j->first);
    return NULL;
}

/* Runs fn over nt jobs on threads; a thread that cannot start runs in this one instead. */
static void run_jobs(job *jobs, int nt, void *(*fn)(void *)) {
    pthread_t th[16];
    int started[16] = {0};
    for (int t = 1; t < nt; t++) started[t] = pthread_create(&th[t], NULL, fn, &jobs[t]) == 0;
    fn(&jobs[0]);
    for (int t = 1; t < nt; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        else fn(&jobs[t]);
    }
}

void eng_fill_random(eng_half *p, size_t n, double rms, uint64_t seed) {
    size_t chunks = (n + CHUNK - 1) / CHUNK;
    int nt = eng_fill_threads();
    if ((size_t)nt > chunks) nt = chunks ? (int)chunks : 1;
    job jobs[16];
    for (int t = 0; t < nt; t++)
        jobs[t] = (job){.p = p, .n = n, .first = chunks * (size_t)t / (size_t)nt, .last = chunks * (size_t)(t + 1) / (size_t)nt,
                        .be = exponent_for(rms), .seed = seed};
    run_jobs(jobs, nt, fill_worker);
}

void eng_fill_copy(void *dst, const void *src, size_t bytes) {
    int nt = eng_fill_threads();
    if (bytes < ((size_t)8 << 20)) nt = 1; /* thread start-up would cost more than it saves */
    job jobs[16];
    for (int t = 0; t < nt; t++) {
        /* 4 KiB-aligned boundaries: each thread writes whole pages */
        size_t a = bytes * (size_t)t / (size_t)nt & ~(size_t)4095, z = t + 1 == nt ? bytes : bytes * (size_t)(t + 1) / (size_t)nt & ~(size_t)4095;
        jobs[t] = (job){.src = src, .dst = dst, .first = a, .last = z};
    }
    run_jobs(jobs, nt, copy_worker);
}
