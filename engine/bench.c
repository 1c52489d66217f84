/* kvpr-engine bench: the host link, the GEMMs and the decode attention the engine runs, measured
 * as bandwidth tools measure: every rep timed by its own event pair, the reps queued behind a hold
 * and released together (so the host's launch cost is not in them), warm-up first, random inputs,
 * and buffers rotated where a working set would otherwise sit in L2. Medians. Each measurement
 * goes to results.db (measurements) and the CSV as one row; the link's plateau values are printed
 * under the profile field names they calibrate. --estimate PROFILE runs nothing and prints how
 * long the same bench would take on that profile. */
#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../cli/cli.h"
#include "../hwmodel/cost.h"
#include "budget.h"
#include "cmds.h"
#include "fill.h"

#define MAXREPS 64
#define BENCH_ROUNDS 3

/* ci: the host backend's calibration in seconds (OPT-125M's shapes and LM head, copies of 4 KiB to
 * 16 MiB, attention to batch 32 x ctx 1024; on the host, three rounds of up to 7 reps);
 * tiny: OPT-125M's shapes at 3 reps, a dry run of the formats */
typedef enum { SIZE_TINY = 0, SIZE_CI, SIZE_SMALL, SIZE_FULL } bench_size;

typedef struct {
    const eng_backend_type *t;
    eng_backend *b;
    kv_db *db;
    FILE *csv;
    eng_devinfo dev;
    bench_size size;
    const hw_profile *est; /* estimate: nothing runs or prints; predicted seconds add up */
    double predicted;
    eng_half *rnd;         /* host: random fp16, copied into device buffers */
    size_t nrnd;
    size_t cursor;         /* rotated copies: where the next one starts in its region */
    size_t setc;           /* host: rotated GEMM and attention sets, the next one */
    /* rounds: the whole bench runs nrounds times and each measurement is the median of its rounds,
     * so a burst of other work on a shared host spoils one round of a point, not all its reps;
     * only the last round prints and stores */
    int round, nrounds, slot, nslots;
    double (*per_round)[2][BENCH_ROUNDS];
} bench_t;

static void say(const bench_t *B, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const bench_t *B, const char *fmt, ...) {
    if (B->est || B->round < B->nrounds - 1) return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

static void emit(bench_t *B, const char *kind, const char *params, double x, double value, const char *unit) {
    if (B->round < B->nrounds - 1) return;
    if (B->db) db_measurement(B->db, B->dev.name, kind, params, x, value, unit);
    if (B->csv) { /* CSV: the JSON params field quoted, its quotes doubled */
        fprintf(B->csv, "%s,\"", kind);
        for (const char *c = params; *c; c++) fputs(*c == '"' ? "\"\"" : (char[]){*c, 0}, B->csv);
        fprintf(B->csv, "\",%.9g,%.9g,%s\n", x, value, unit);
    }
}

static double median(double *x, int n) {
    gsl_sort(x, 1, (size_t)n);
    return gsl_stats_median_from_sorted_data(x, 1, (size_t)n);
}

/* One timed operation: rep r runs on its own buffers where rotation is on. */
typedef struct op op_t;
struct op {
    kv_status (*run)(bench_t *B, const op_t *o, int stream, int rep);
    void *dst, *src, *src2;
    size_t bytes, stride, stride2; /* bytes between rotated sets of dst/src and of src2; nsets of them */
    int nsets, dir, M, N, K, batch, ctx, nh, nkv, d;
};

static kv_status run_copy(bench_t *B, const op_t *o, int s, int rep) {
    /* stride: a region each side walks through, each copy on from where the last one (of any size)
     * ended, so it touches what was touched longest ago (0: no rotation) */
    (void)rep;
    size_t off = 0;
    if (o->stride >= 2 * o->bytes) {
        if (B->cursor + o->bytes > o->stride) B->cursor = 0;
        off = B->cursor;
        B->cursor += o->bytes;
    }
    return B->t->copy(B->b, s, (char *)o->dst + off, (const char *)o->src + off, o->bytes, o->dir);
}
/* Which of an op's rotated sets rep r uses. On the host every call moves on through all of them
 * (a counter across reps, rounds and shapes): with r alone a measurement of 9 reps touched 9 sets
 * and found them in the CPU's cache, while the engine reads a layer's weights once a step. */
static int set_of(bench_t *B, const op_t *o, int rep) {
    if (o->nsets <= 1) return 0;
    return B->dev.shares_host_memory ? (int)(B->setc++ % (size_t)o->nsets) : rep % o->nsets;
}

static kv_status run_gemm(bench_t *B, const op_t *o, int s, int rep) {
    int k = set_of(B, o, rep);
    size_t off = (size_t)k * o->stride, off2 = (size_t)k * o->stride2;
    const eng_half *A = (const eng_half *)((const char *)o->src + off), *W = (const eng_half *)((const char *)o->src2 + off2);
    return B->t->gemm(B->b, s, o->M, o->N, o->K, A, W, (eng_half *)((char *)o->dst + off), 0.f);
}
static kv_status run_attn(bench_t *B, const op_t *o, int s, int rep) {
    int k = set_of(B, o, rep);
    size_t off = (size_t)k * o->stride, off2 = (size_t)k * o->stride2;
    return B->t->attention(B->b, s, (const eng_half *)((const char *)o->src + off), (const eng_half *)((const char *)o->src2 + off2),
                           (eng_half *)((char *)o->dst + off), o->batch, o->ctx, o->nh, o->nkv, o->d);
}

/* Median seconds of `reps` runs of each op in ops[0..n) (n = 2: the two run at once on their own
 * streams, each rep timed on its stream). `est` is one op's predicted time (estimate mode). Pageable
 * copies are not held: CUDA may synchronise the stream for them, which would wait on the hold. */
static kv_status timed(bench_t *B, const op_t *ops, const int *streams, int n, int reps, int hold, const double *est, double *out) {
    const int warm = 2;
    if (reps > MAXREPS) reps = MAXREPS;
    if (B->size == SIZE_TINY && reps > 3) reps = 3; /* the dry run checks formats, not numbers */
    if (B->nrounds > 1 && reps > 7) reps = 7;         /* rounds: fewer reps in each */
    if (B->est) {
        double longest = 0;
        for (int i = 0; i < n; i++) out[i] = est[i], longest = fmax(longest, est[i]);
        /* and per measurement: the syncs, reading the events, a row in the database */
        B->predicted += (warm + reps) * longest + 5e-3;
        return KV_OK;
    }
    kv_status st = KV_OK;
    for (int w = 0; w < warm && !st; w++)
        for (int i = 0; i < n && !st; i++) st = ops[i].run(B, &ops[i], streams[i], w);
    if (!st) st = B->t->sync(B->b);
    for (int i = 0; i < n && hold && !st; i++) st = B->t->hold(B->b, streams[i]);
    for (int r = 0; r < reps && !st; r++)
        for (int i = 0; i < n && !st; i++) {
            int e0 = 2 * (i * MAXREPS + r);
            if (!(st = B->t->record(B->b, streams[i], e0)) && !(st = ops[i].run(B, &ops[i], streams[i], warm + r)))
                st = B->t->record(B->b, streams[i], e0 + 1);
        }
    if (hold) {
        kv_status s2 = B->t->release(B->b);
        if (!st) st = s2;
    }
    kv_status s3 = B->t->sync(B->b);
    if (!st) st = s3;
    for (int i = 0; i < n && !st; i++) {
        double ts[MAXREPS];
        for (int r = 0; r < reps && !st; r++) {
            double ms;
            st = B->t->elapsed(B->b, 2 * (i * MAXREPS + r), 2 * (i * MAXREPS + r) + 1, &ms);
            ts[r] = ms * 1e-3;
        }
        /* The host backend shares its cores with whatever else the machine runs: a burst of that
         * slows a run of consecutive reps, and moved the median of some sizes by 2x. Its rate is
         * the lower quartile; a GPU's reps are not disturbed that way: the median. */
        if (!st && B->dev.shares_host_memory) {
            gsl_sort(ts, 1, (size_t)reps);
            out[i] = gsl_stats_quantile_from_sorted_data(ts, 1, (size_t)reps, 0.25);
        } else if (!st) out[i] = median(ts, reps);
    }
    if (!st && B->nrounds > 1) { /* this call's place in the sequence: its value in each round */
        int k = B->slot++;
        if (k < B->nslots)
            for (int i = 0; i < n && i < 2; i++) {
                B->per_round[k][i][B->round] = out[i];
                if (B->round == B->nrounds - 1) { /* the median of the rounds */
                    double r[BENCH_ROUNDS];
                    memcpy(r, B->per_round[k][i], sizeof r);
                    out[i] = median(r, B->nrounds);
                }
            }
    }
    return st;
}

/* Device buffer of random fp16 (estimate mode: nothing). */
static kv_status dev_random(bench_t *B, void **p, size_t bytes) {
    *p = NULL;
    if (B->est) {
        B->predicted += hw_copy_time(B->est, HW_H2D, (double)bytes, 0, 0);
        return KV_OK;
    }
    kv_status st = B->t->dev_alloc(B->b, p, bytes);
    if (st) return st;
    size_t chunk = B->nrnd * 2;
    for (size_t off = 0; off < bytes && !st; off += chunk)
        st = B->t->copy(B->b, ENG_S_H2D, (char *)*p + off, B->rnd, bytes - off < chunk ? bytes - off : chunk, 0);
    return st ? st : B->t->sync(B->b);
}
static void dev_release(bench_t *B, void *p) {
    if (p) B->t->dev_free(B->b, p);
}

/* ---- copies ---------------------------------------------------------------------------------- */

typedef struct {
    double alone[2][2], duplex[2][2], small_s[2]; /* [pinned][dir] GB/s at the largest size; the smallest pinned copy */
    double d2d;                                   /* device-to-device GB/s, bytes read + written */
} link_result;

static kv_status bench_copies(bench_t *B, link_result *lr) {
    kv_status st = KV_OK;
    size_t maxb = B->size == SIZE_FULL ? (size_t)1 << 30 : B->size == SIZE_SMALL ? (size_t)64 << 20 : B->size == SIZE_CI ? (size_t)16 << 20 : (size_t)1 << 20;
    /* Where "device" memory is host memory, a copy that rereads the same bytes measures the CPU's
     * caches, not the copies the engine makes (a layer's cache, cold): each rep then copies a fresh
     * piece of a region twice the last-level cache. A GPU's DMA copies do not go through them. */
    size_t room = maxb;
    int rotate = B->dev.shares_host_memory && !B->est;
    if (rotate) {
        size_t r = (size_t)(2 * (B->dev.l2_bytes > 0 ? B->dev.l2_bytes : 32e6));
        if (r > room) room = r;
    }
    /* pinned and pageable sources, and a destination of each, so no copy reads what another writes */
    void *hp = NULL, *hp2 = NULL, *hg = NULL, *hg2 = NULL, *d1 = NULL, *d2 = NULL;
    if (!B->est) {
        if ((st = B->t->host_alloc(B->b, &hp, room, 1))) return st;
        if ((st = B->t->host_alloc(B->b, &hp2, room, 1))) goto out;
        if ((st = B->t->host_alloc(B->b, &hg, room, 0))) goto out;
        if ((st = B->t->host_alloc(B->b, &hg2, room, 0))) goto out;
        eng_fill_random(hp, room / 2, 1.0, 11);
        eng_fill_copy(hp2, hp, room), eng_fill_copy(hg, hp, room), eng_fill_copy(hg2, hp, room);
    } else B->predicted += 2 * (double)maxb / eng_budget.pin_bps + 4 * (double)maxb / eng_budget.copy_bps;
    if ((st = dev_random(B, &d1, room)) || (st = dev_random(B, &d2, room))) goto out;
    say(B, "%-12s %-8s %12s %10s %10s\n", "copy", "memory", "bytes", "time us", "GB/s");
    if (!B->est) { /* the first timed op of a process ran 100x slow on the host backend: one, discarded */
        op_t w = {.run = run_copy, .dst = d1, .src = hp, .bytes = 4096, .nsets = 1, .dir = 0};
        int s0 = ENG_S_H2D;
        double e = 0, t;
        st = timed(B, &w, &s0, 1, 5, 1, &e, &t);
    }
    for (size_t n = 4096; n <= maxb && !st; n *= B->size == SIZE_CI ? 2 : 4) { /* ci: more sizes, fewer bytes */
        int reps = n < (1u << 20) ? 20 : n < (64u << 20) ? 8 : 5;
        for (int pinned = 1; pinned >= 0 && !st; pinned--) {
            void *h = pinned ? hp : hg, *h2 = pinned ? hp2 : hg2;
            if (rotate) {
                /* rotated host memory: written again before each size. Memory left alone for a few
                 * seconds came back slow (256 KiB copies in 112-127 us instead of about 32, with a
                 * third more page faults; the VM reclaims idle memory); the engine's are in use. */
                void *bufs[4] = {h, h2, d1, d2};
                for (int k = 0; k < 4; k++) memset(bufs[k], 0x3c, room);
            }
            char params[160];
            snprintf(params, sizeof params, "{\"bytes\":%zu,\"pinned\":%s}", n, pinned ? "true" : "false");
            for (int dir = 0; dir < 3 && !st; dir++) {
                /* 0, 1: each direction alone; 2: both at once, each on its own copy engine */
                size_t rot = rotate ? room : 0;
                op_t up = {.run = run_copy, .dst = d1, .src = h, .bytes = n, .stride = rot, .nsets = 1, .dir = 0};
                op_t down = {.run = run_copy, .dst = h2, .src = d2, .bytes = n, .stride = rot, .nsets = 1, .dir = 1};
                op_t both[2] = {up, down};
                int streams[2] = {ENG_S_H2D, ENG_S_D2H};
                double est[2] = {0, 0}, t[2] = {0, 0};
                if (B->est)
                    for (int i = 0; i < 2; i++) est[i] = hw_copy_time(B->est, i ? HW_D2H : HW_H2D, (double)n, !pinned, dir == 2);
                if (dir < 2) st = timed(B, dir ? &down : &up, &streams[dir], 1, reps, pinned, &est[dir], &t[dir]);
                else st = timed(B, both, streams, 2, reps, pinned, est, t);
                if (st) break;
                for (int i = 0; i < 2; i++) {
                    if (dir < 2 && i != dir) continue;
                    const char *name = i ? "d2h" : "h2d";
                    char kind[48];
                    snprintf(kind, sizeof kind, "copy_%s%s_%s", name, dir == 2 ? "_duplex" : "", pinned ? "pinned" : "pageable");
                    emit(B, kind, params, (double)n, t[i], "s");
                    say(B, "%-12s %-8s %12zu %10.1f %10.2f\n", dir == 2 ? (i ? "d2h_duplex" : "h2d_duplex") : name,
                           pinned ? "pinned" : "pageable", n, t[i] * 1e6, (double)n / t[i] / 1e9);
                    if (n * 4 > maxb) (dir == 2 ? lr->duplex : lr->alone)[pinned][i] = (double)n / t[i] / 1e9;
                    if (n == 4096 && pinned && dir < 2) lr->small_s[i] = t[i];
                }
            }
        }
    }
    if (!st) {
        /* device-to-device: the bandwidth attention is compared with (bytes read + written) */
        op_t dd = {.run = run_copy, .dst = d2, .src = d1, .bytes = maxb, .nsets = 1, .dir = 2};
        int s0 = ENG_S_COMPUTE;
        double est = 2.0 * (double)maxb / (B->est ? B->est->gpu.hbm_bw.value : 1), t;
        if (!(st = timed(B, &dd, &s0, 1, 10, 1, &est, &t))) {
            char params[96];
            snprintf(params, sizeof params, "{\"bytes\":%zu}", maxb);
            emit(B, "copy_d2d", params, (double)maxb, t, "s");
            lr->d2d = 2.0 * (double)maxb / t / 1e9;
            say(B, "%-12s %-8s %12zu %10.1f %10.2f (read + written)\n", "d2d", "device", maxb, t * 1e6, lr->d2d);
        }
    }
out:
    if (hp) B->t->host_free(B->b, hp, 1);
    if (hp2) B->t->host_free(B->b, hp2, 1);
    if (hg) B->t->host_free(B->b, hg, 0);
    if (hg2) B->t->host_free(B->b, hg2, 0);
    dev_release(B, d1), dev_release(B, d2);
    return st;
}

/* The plateau values under the profile fields they set (hwmodel/profiles/README.md). */
static void link_summary(bench_t *B, const link_result *lr) {
    say(B, "\nlink plateau (largest copies; profile fields):\n");
    const char *dn[2] = {"h2d", "d2h"};
    for (int i = 0; i < 2; i++) {
        struct {
            const char *field;
            double v;
            const char *unit, *how;
        } f[] = {{"bandwidth_gbps", lr->alone[1][i], "GB/s", "pinned, alone"},
                 {"pageable_gbps", lr->alone[0][i], "GB/s", "pageable, alone"},
                 {"duplex_factor", lr->alone[1][i] > 0 ? lr->duplex[1][i] / lr->alone[1][i] : 0, "", "pinned, other direction busy / alone"},
                 {"overhead_us", lr->small_s[i] * 1e6, "us", "a 4 KiB pinned copy (an upper bound; calibrate fits it)"}};
        for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) {
            char field[64], params[96];
            snprintf(field, sizeof field, "link.%s.%s", dn[i], f[k].field);
            say(B, "  %-28s %10.3f %-5s %s\n", field, f[k].v, f[k].unit, f[k].how);
            snprintf(params, sizeof params, "{\"field\":\"%s\"}", field);
            emit(B, "link_field", params, 0, f[k].v, f[k].unit[0] ? f[k].unit : "ratio");
        }
    }
    say(B, "  %-28s %10.3f GB/s  both directions at once, pinned (sum)\n", "link.both", lr->duplex[1][0] + lr->duplex[1][1]);
    say(B, "  %-28s %10.3f GB/s  pageable (sum)\n", "link.both.pageable", lr->duplex[0][0] + lr->duplex[0][1]);
    say(B, "  %-28s %10.3f GB/s  device-to-device copy, read + written\n", "gpu.d2d", lr->d2d);
    emit(B, "link_field", "{\"field\":\"link.both\"}", 0, lr->duplex[1][0] + lr->duplex[1][1], "GB/s");
    emit(B, "link_field", "{\"field\":\"gpu.d2d\"}", 0, lr->d2d, "GB/s");
}

/* ---- GEMMs ------------------------------------------------------------------------------------- */

/* Rotated sets of a working set of `ws` bytes: enough to cover four times L2 when it would fit in
 * it, within `room` bytes. */
static int rotation(const bench_t *B, size_t ws, size_t room) {
    double l2 = B->dev.l2_bytes > 0 ? B->dev.l2_bytes : 50e6;
    int n = (double)ws < 2 * l2 ? (int)ceil(4 * l2 / (double)ws) : 1;
    int cap = B->dev.shares_host_memory ? 1024 : 16; /* the host: cover the cache however small the op */
    if (n > cap) n = cap;
    while (n > 1 && (size_t)n * ws > room) n--;
    return n;
}

static size_t up256(size_t b) { return (b + 255) & ~(size_t)255; }

static kv_status bench_gemm(bench_t *B) {
    kv_status st = KV_OK;
    const char *full[] = {"OPT-6.7B", "OPT-13B", "OPT-30B", "Llama-3-8B"}, *tiny[] = {"OPT-125M"};
    const char **models = B->size <= SIZE_CI ? tiny : full;
    int nmod = B->size == SIZE_FULL ? 4 : 1;
    int Ms[] = {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536};
    int maxM = B->size == SIZE_FULL ? 65536 : B->size == SIZE_SMALL ? 4096 : B->size == SIZE_CI ? 1024 : 64;
    /* inputs (A, W) and outputs (C) apart, so outputs never feed later inputs and grow */
    size_t in_b = B->size == SIZE_FULL ? (size_t)1536 << 20 : B->size == SIZE_SMALL ? (size_t)256 << 20 : B->size == SIZE_CI ? (size_t)192 << 20 : (size_t)8 << 20;
    size_t out_b = B->size == SIZE_FULL ? (size_t)2048 << 20 : B->size == SIZE_SMALL ? (size_t)256 << 20 : B->size == SIZE_CI ? (size_t)192 << 20 : (size_t)8 << 20;
    void *in = NULL, *out = NULL;
    if ((st = dev_random(B, &in, in_b)) || (st = dev_random(B, &out, out_b))) goto done;
    say(B, "\n%-12s %-10s %8s %6s %6s %5s %10s %9s\n", "gemm", "shape", "M", "K", "N", "sets", "time us", "TFLOP/s");
    for (int mi = 0; mi < nmod && !st; mi++) {
        kv_model m;
        if ((st = kv_model_find(models[mi], &m))) break;
        int h = m.hidden, kv2 = 2 * kv_model_kv_dim(&m), qd = m.n_heads * m.head_dim;
        /* the engine's own GEMMs: q and K|V of the new token (two GEMMs, as it runs them), the
         * output projection, the MLP, and the recompute of a prefix's K|V at M = tokens x batch */
        struct {
            const char *nm;
            int K, N, maxM;
        } sh[] = {{"recompute", h, kv2, 65536}, {"q", h, qd, 256}, {"kv", h, kv2, 256}, {"out", qd, h, 256},
                  {"ffn_up", h, m.ffn * (m.gated_mlp ? 2 : 1), 256}, {"ffn_down", m.ffn, h, 256},
                  /* ci: the LM head too, the decode step's largest GEMM (hidden x vocab: on the host,
                   * tens of MB of weights converted per call) */
                  {"lm_head", h, m.vocab, B->size == SIZE_CI ? 16 : 0}};
        for (size_t si = 0; si < sizeof sh / sizeof sh[0] && !st; si++)
            for (size_t k = 0; k < sizeof Ms / sizeof Ms[0] && !st; k++) {
                int M = Ms[k];
                if (M > sh[si].maxM || M > maxM) continue;
                size_t a = up256((size_t)M * sh[si].K * 2), w = up256((size_t)sh[si].K * sh[si].N * 2), c = up256((size_t)M * sh[si].N * 2);
                if (a + w > in_b || c > out_b) continue;
                /* one stride for inputs and outputs: the larger of the two sets */
                size_t stride = a + w > c ? a + w : c;
                int sets = rotation(B, a + w + c, in_b < out_b ? in_b : out_b);
                while (sets > 1 && (size_t)sets * stride > (in_b < out_b ? in_b : out_b)) sets--;
                op_t o = {.run = run_gemm, .dst = out, .src = in, .src2 = B->est ? NULL : (char *)in + a, .stride = stride,
                          .stride2 = stride, .nsets = sets, .M = M, .N = sh[si].N, .K = sh[si].K};
                int s0 = ENG_S_COMPUTE;
                double est = B->est ? hw_gemm_time(B->est, M, sh[si].K, sh[si].N, 2) : 0, t;
                if ((st = timed(B, &o, &s0, 1, M >= 8192 ? 5 : 15, 1, &est, &t))) break;
                char params[200];
                snprintf(params, sizeof params, "{\"model\":\"%s\",\"shape\":\"%s\",\"M\":%d,\"K\":%d,\"N\":%d,\"sets\":%d}", m.name,
                         sh[si].nm, M, sh[si].K, sh[si].N, sets);
                emit(B, "gemm_time", params, M, t, "s");
                say(B, "%-12s %-10s %8d %6d %6d %5d %10.1f %9.1f\n", m.name, sh[si].nm, M, sh[si].K, sh[si].N, sets, t * 1e6,
                       2.0 * M * sh[si].K * sh[si].N / t / 1e12);
            }
    }
done:
    dev_release(B, in), dev_release(B, out);
    return st;
}

/* ---- attention ------------------------------------------------------------------------------- */

static kv_status bench_attn(bench_t *B, double d2d_gbps) {
    kv_status st = KV_OK;
    const char *names[] = {"OPT-6.7B", "Llama-3-8B"}, *tiny[] = {"OPT-125M"};
    int bs[] = {1, 8, 32, 64}, cs[] = {128, 512, 2048, 8192};
    int nmod = B->size <= SIZE_CI ? 1 : 2, nbs = B->size == SIZE_FULL ? 4 : B->size == SIZE_CI ? 3 : 2,
        ncs = B->size == SIZE_FULL ? 4 : B->size == SIZE_CI ? 3 : 2;
    size_t arena = B->size == SIZE_FULL ? (size_t)4096 << 20 : B->size == SIZE_SMALL ? (size_t)256 << 20 : B->size == SIZE_CI ? (size_t)128 << 20 : (size_t)4 << 20;
    void *kv = NULL, *qo = NULL;
    size_t qo_b = B->size == SIZE_FULL ? (size_t)64 << 20 : (size_t)4 << 20;
    if ((st = dev_random(B, &kv, arena)) || (st = dev_random(B, &qo, qo_b))) goto done;
    say(B, "\n%-10s %6s %6s %5s %10s %9s %7s\n", "attention", "batch", "ctx", "sets", "time us", "GB/s K+V", "of d2d");
    for (int mi = 0; mi < nmod && !st; mi++) {
        kv_model m;
        if ((st = kv_model_find((B->size <= SIZE_CI ? tiny : names)[mi], &m))) break;
        size_t row = 2 * (size_t)kv_model_kv_dim(&m) * 2, qbytes = up256((size_t)m.n_heads * m.head_dim * 2);
        for (int i = 0; i < nbs && !st; i++)
            for (int j = 0; j < ncs && !st; j++) {
                int batch = bs[i], ctx = B->size == SIZE_TINY ? cs[j] / 4 : B->size == SIZE_CI ? cs[j] / 2 : cs[j];
                size_t kvb = up256((size_t)batch * ctx * row), qb = qbytes * batch;
                if (kvb > arena || 2 * qb > qo_b) continue;
                int sets = rotation(B, kvb + 2 * qb, arena);
                while (sets > 1 && (size_t)sets * 2 * qb > qo_b) sets--;
                /* set r: q and out at qo + r * 2 qb, K/V at kv + r * kvb */
                op_t o = {.run = run_attn, .dst = B->est ? NULL : (char *)qo + qb, .src = qo, .src2 = kv, .stride = 2 * qb, .stride2 = kvb,
                          .nsets = sets, .batch = batch, .ctx = ctx, .nh = m.n_heads, .nkv = m.n_kv_heads, .d = m.head_dim};
                int s0 = ENG_S_COMPUTE;
                double est = B->est ? hw_attn_time(B->est, &m, batch, ctx - 1) : 0, t;
                if ((st = timed(B, &o, &s0, 1, 15, 1, &est, &t))) break;
                double bytes = (double)batch * ctx * (double)row;
                char params[160];
                snprintf(params, sizeof params, "{\"model\":\"%s\",\"batch\":%d,\"ctx\":%d,\"sets\":%d}", m.name, batch, ctx, sets);
                emit(B, "attn_time", params, bytes, t, "s");
                say(B, "%-10s %6d %6d %5d %10.1f %9.1f %6.0f%%\n", m.name, batch, ctx, sets, t * 1e6, bytes / t / 1e9,
                       d2d_gbps > 0 ? 100 * bytes / t / 1e9 / d2d_gbps : 0);
            }
    }
done:
    dev_release(B, kv), dev_release(B, qo);
    return st;
}

int eng_cmd_bench(const eng_backend_type *bt, int argc, char **argv) {
    const char *dbpath = DB_DEFAULT_PATH, *csvf = NULL, *estp = NULL;
    bench_size size = SIZE_FULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) size = SIZE_SMALL;
        else if (i + 1 < argc && !strcmp(argv[i], "--size")) {
            const char *v = argv[++i];
            if (!strcmp(v, "full")) size = SIZE_FULL;
            else if (!strcmp(v, "small")) size = SIZE_SMALL;
            else if (!strcmp(v, "tiny")) size = SIZE_TINY;
            else if (!strcmp(v, "ci")) size = SIZE_CI;
            else return cli_fail(kv_errorf(KV_EINVAL, "bench: --size must be full, small, ci or tiny, got '%s'", v));
        } else if (!strcmp(argv[i], "--no-db")) dbpath = NULL;
        else if (i + 1 < argc && !strcmp(argv[i], "--db")) dbpath = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--csv")) csvf = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--estimate")) estp = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--backend")) i++;
        else return cli_fail(kv_errorf(KV_EINVAL, "bench: unknown or incomplete option '%s'", argv[i]));
    }
    bench_t B = {.t = bt, .size = size};
    hw_profile prof;
    kv_status st;
    if (estp) {
        /* what the bench would take there: the same loops, each op's time from the profile */
        if ((st = hw_profile_resolve(estp, &prof))) return cli_fail(st);
        B.est = &prof;
        snprintf(B.dev.name, sizeof B.dev.name, "%s (estimate)", prof.name);
        B.dev.l2_bytes = 50e6;
        link_result lr = {0};
        st = bench_copies(&B, &lr);
        if (!st) st = bench_gemm(&B);
        if (!st) st = bench_attn(&B, 0);
        if (st) return cli_fail(st);
        printf("bench --size %s on %s: %.0f s predicted\n", size == SIZE_FULL ? "full" : size == SIZE_SMALL ? "small" : size == SIZE_CI ? "ci" : "tiny", prof.name,
               B.predicted + eng_budget.start_s);
        return 0;
    }
    if ((st = bt->open(&B.b, 0, 4 * MAXREPS + 8))) return cli_fail(st);
    if ((st = bt->info(B.b, &B.dev))) goto out;
    printf("bench on %s\n", B.dev.name);
    if (dbpath && (st = cli_db_open(dbpath, &B.db))) goto out;
    if (csvf && !(B.csv = fopen(csvf, "w"))) {
        st = kv_errorf(KV_EIO, "cannot write %s", csvf);
        goto out;
    }
    if (B.csv) fprintf(B.csv, "# device: %s\nkind,params,x,value,unit\n", B.dev.name);
    B.nrnd = (size_t)16 << 20;
    if (!(B.rnd = malloc(B.nrnd * 2))) {
        st = kv_errorf(KV_ENOMEM, "out of memory");
        goto out;
    }
    eng_fill_random(B.rnd, B.nrnd, 0.25, 5);
    link_result lr = {0};
    /* ci on the host backend: three rounds of the short bench (see bench_t) */
    B.nrounds = size == SIZE_CI && B.dev.shares_host_memory ? BENCH_ROUNDS : 1;
    B.nslots = 4096;
    if (B.nrounds > 1 && !(B.per_round = calloc((size_t)B.nslots, sizeof *B.per_round))) st = kv_errorf(KV_ENOMEM, "out of memory");
    for (B.round = 0; B.round < B.nrounds && !st; B.round++) {
        B.slot = 0;
        if (!(st = bench_copies(&B, &lr))) {
            link_summary(&B, &lr);
            if (!(st = bench_gemm(&B))) st = bench_attn(&B, lr.d2d);
        }
    }
    free(B.per_round);
out:
    free(B.rnd);
    if (B.csv && fclose(B.csv) != 0 && !st) st = kv_errorf(KV_EIO, "cannot write %s", csvf);
    db_close(B.db);
    bt->close(B.b);
    return st ? cli_fail(st) : 0;
}
