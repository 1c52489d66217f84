/* kvpr-engine: runs plans on a GPU (or the host backend), measures the link and the kernels,
 * and checks every kernel against its CPU reference. */
#include <stdarg.h>
#include <gsl/gsl_rng.h>
#include <gsl/gsl_sort.h>
#include <gsl/gsl_statistics_double.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../hwmodel/cost.h"
#include "../kernels/ref.h"
#include "../sched/sched.h"
#include "../cli/cli.h"
#include "exec.h"

static int fail(kv_status st) { return cli_fail(st); }

static const eng_backend_type *pick(const char *name, kv_status *st) {
    *st = KV_OK;
    if (!strcmp(name, "host")) return &eng_host_backend;
    if (!strcmp(name, "cuda")) {
        if (!eng_cuda_backend()) *st = kv_errorf(KV_EDEVICE, "this kvpr-engine was built without CUDA (no nvcc at build time)");
        return eng_cuda_backend();
    }
    *st = kv_errorf(KV_EINVAL, "unknown backend '%s' (cuda, host)", name);
    return NULL;
}

static void usage(FILE *f) {
    fprintf(f, "usage: kvpr-engine COMMAND [--backend cuda|host] [options]\n"
               "  info                                   the device\n"
               "  selftest                               kernels against CPU references; kvpr against offload\n"
               "  run --model M --batch B --prompt P --gen G [--policy P] [--split L] [--mode M] [--nb N]\n"
               "      [--layers N] [--prefetch D] [--keep-act] [--pageable] [--hw PROFILE] [--db FILE] [--json]\n"
               "                                         execute a decode plan, spans into results.db\n"
               "  bench [--quick] [--db FILE] [--csv FILE]   copy bandwidth, GEMM and attention times\n"
               "The default backend is cuda; 'host' runs the same executor on CPU threads.\n");
}

/* ---- selftest ----------------------------------------------------------------------------- */

typedef struct {
    int pass, fail;
} tally;

static void check(tally *t, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void check(tally *t, int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  %s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    ok ? t->pass++ : t->fail++;
}

static kv_status kernel_tests(const eng_backend_type *bt, tally *t) {
    eng_backend *b;
    kv_status st = bt->open(&b, 0, 4);
    if (st) return st;
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_taus2);
    gsl_rng_set(rng, 7);
    const int shapes[][5] = {{1, 1, 4, 4, 64}, {3, 17, 8, 8, 64}, {8, 300, 32, 32, 128}, {4, 1029, 32, 8, 128}, {2, 64, 12, 4, 256}, {16, 33, 16, 2, 80}};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0] && !st; c++) {
        int B = shapes[c][0], ctx = shapes[c][1], nh = shapes[c][2], nkv = shapes[c][3], d = shapes[c][4];
        size_t nq = (size_t)B * nh * d, nkvv = (size_t)ctx * B * 2 * nkv * d;
        eng_half *hq, *hkv, *ho, *dq, *dkv, *dout;
        double *ref = malloc(sizeof(double) * nq);
        bt->host_alloc(b, (void **)&hq, nq * 2, 1), bt->host_alloc(b, (void **)&hkv, nkvv * 2, 1), bt->host_alloc(b, (void **)&ho, nq * 2, 1);
        if ((st = bt->dev_alloc(b, (void **)&dq, nq * 2)) || (st = bt->dev_alloc(b, (void **)&dkv, nkvv * 2)) ||
            (st = bt->dev_alloc(b, (void **)&dout, nq * 2)))
            break;
        for (size_t i = 0; i < nq; i++) hq[i] = eng_f2h((float)(4 * gsl_rng_uniform(rng) - 2)), ho[i] = 0x7E00; /* poison: NaN */
        for (size_t i = 0; i < nkvv; i++) hkv[i] = eng_f2h((float)(4 * gsl_rng_uniform(rng) - 2));
        kref_attention_d(hq, hkv, ref, B, ctx, nh, nkv, d);
        if (!(st = bt->copy(b, 0, dq, hq, nq * 2, 0)) && !(st = bt->copy(b, 0, dkv, hkv, nkvv * 2, 0)) &&
            !(st = bt->copy(b, 0, dout, ho, nq * 2, 0)) && !(st = bt->attention(b, 0, dq, dkv, dout, B, ctx, nh, nkv, d)) &&
            !(st = bt->copy(b, 0, ho, dout, nq * 2, 1)) && !(st = bt->sync(b))) {
            double e = kref_relerr(ho, ref, nq);
            check(t, e < 5e-3, "attention B=%d ctx=%d heads=%d kv_heads=%d d=%d: rel err %.2e (tolerance 5e-3, fp16 output)", B, ctx, nh,
                  nkv, d, e);
        }
        bt->dev_free(b, dq), bt->dev_free(b, dkv), bt->dev_free(b, dout);
        bt->host_free(b, hq, 1), bt->host_free(b, hkv, 1), bt->host_free(b, ho, 1);
        free(ref);
    }
    /* GEMM against a double reference */
    const int g[][3] = {{1, 64, 64}, {7, 96, 40}, {128, 256, 512}, {333, 130, 257}};
    for (size_t c = 0; c < 4 && !st; c++) {
        int M = g[c][0], N = g[c][1], K = g[c][2];
        size_t na = (size_t)M * K, nbb = (size_t)K * N, nc = (size_t)M * N;
        eng_half *A = malloc(na * 2), *Bm = malloc(nbb * 2), *C = malloc(nc * 2), *dA, *dB, *dC;
        double *ref = calloc(nc, sizeof(double));
        for (size_t i = 0; i < na; i++) A[i] = eng_f2h((float)(2 * gsl_rng_uniform(rng) - 1));
        for (size_t i = 0; i < nbb; i++) Bm[i] = eng_f2h((float)(2 * gsl_rng_uniform(rng) - 1));
        for (size_t i = 0; i < nc; i++) C[i] = eng_f2h((float)(2 * gsl_rng_uniform(rng) - 1));
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = eng_h2f(C[(size_t)i * N + j]); /* beta = 1 */
                for (int k = 0; k < K; k++) s += (double)eng_h2f(A[(size_t)i * K + k]) * (double)eng_h2f(Bm[(size_t)k * N + j]);
                ref[(size_t)i * N + j] = s;
            }
        if (!(st = bt->dev_alloc(b, (void **)&dA, na * 2)) && !(st = bt->dev_alloc(b, (void **)&dB, nbb * 2)) &&
            !(st = bt->dev_alloc(b, (void **)&dC, nc * 2))) {
            if (!(st = bt->copy(b, 0, dA, A, na * 2, 0)) && !(st = bt->copy(b, 0, dB, Bm, nbb * 2, 0)) &&
                !(st = bt->copy(b, 0, dC, C, nc * 2, 0)) && !(st = bt->gemm(b, 0, M, N, K, dA, dB, dC, 1.f)) &&
                !(st = bt->copy(b, 0, C, dC, nc * 2, 1)) && !(st = bt->sync(b))) {
                double e = kref_relerr(C, ref, nc);
                check(t, e < 2e-3, "gemm %dx%dx%d, beta 1: rel err %.2e (tolerance 2e-3, fp16 output, fp32 accumulate)", M, N, K, e);
            }
            bt->dev_free(b, dA), bt->dev_free(b, dB), bt->dev_free(b, dC);
        }
        free(A), free(Bm), free(C), free(ref);
    }
    /* activations */
    for (int act = 1; act <= 2 && !st; act++) {
        int rows = 37, cols = 301;
        size_t nin = (size_t)rows * cols * (act == 2 ? 2 : 1), nout = (size_t)rows * cols;
        eng_half *x = malloc(nin * 2), *o = malloc(nout * 2), *dx, *dout;
        double *ref = malloc(sizeof(double) * nout);
        for (size_t i = 0; i < nin; i++) x[i] = eng_f2h((float)(8 * gsl_rng_uniform(rng) - 4));
        for (size_t i = 0; i < nout; i++) o[i] = 0x7E00;
        kref_activate_d(x, ref, rows, cols, act);
        if (!(st = bt->dev_alloc(b, (void **)&dx, nin * 2)) && !(st = bt->dev_alloc(b, (void **)&dout, nout * 2))) {
            if (!(st = bt->copy(b, 0, dx, x, nin * 2, 0)) && !(st = bt->copy(b, 0, dout, o, nout * 2, 0)) &&
                !(st = bt->activate(b, 0, dx, dout, rows, cols, (eng_act)act)) && !(st = bt->copy(b, 0, o, dout, nout * 2, 1)) &&
                !(st = bt->sync(b))) {
                double e = kref_relerr(o, ref, nout);
                check(t, e < 1e-3, "%s %dx%d: rel err %.2e (tolerance 1e-3)", act == 1 ? "relu" : "silu*up", rows, cols, e);
            }
            bt->dev_free(b, dx), bt->dev_free(b, dout);
        }
        free(x), free(o), free(ref);
    }
    /* RMS pre-norm */
    if (!st) {
        int rows = 9, cols = 4096;
        size_t n = (size_t)rows * cols;
        eng_half *x = malloc(n * 2), *o = malloc(n * 2), *dx, *dout;
        double *ref = malloc(sizeof(double) * n);
        for (size_t i = 0; i < n; i++) x[i] = eng_f2h((float)(20 * gsl_rng_uniform(rng) - 10)), o[i] = 0x7E00;
        kref_rmsnorm_d(x, ref, rows, cols);
        if (!(st = bt->dev_alloc(b, (void **)&dx, n * 2)) && !(st = bt->dev_alloc(b, (void **)&dout, n * 2))) {
            if (!(st = bt->copy(b, 0, dx, x, n * 2, 0)) && !(st = bt->copy(b, 0, dout, o, n * 2, 0)) &&
                !(st = bt->rmsnorm(b, 0, dx, dout, rows, cols)) && !(st = bt->copy(b, 0, o, dout, n * 2, 1)) && !(st = bt->sync(b))) {
                double e = kref_relerr(o, ref, n);
                check(t, e < 1e-3, "rmsnorm %dx%d: rel err %.2e (tolerance 1e-3)", rows, cols, e);
            }
            bt->dev_free(b, dx), bt->dev_free(b, dout);
        }
        free(x), free(o), free(ref);
    }
    gsl_rng_free(rng);
    bt->close(b);
    return st;
}

/* kvpr's outputs equal offloading's, within fp16 rounding: recomputed K/V equal stored ones */
static kv_status equivalence_tests(const eng_backend_type *bt, tally *t) {
    kv_model m = {.name = "test-mha", .family = "opt", .n_layers = 3, .hidden = 256, .n_heads = 4, .n_kv_heads = 4,
                  .head_dim = 64, .ffn = 512, .vocab = 1000, .bias = 1, .tied_embeddings = 1, .dtype = KV_DT_FP16};
    kv_model g = m;
    snprintf(g.name, sizeof g.name, "test-gqa");
    g.n_kv_heads = 2, g.gated_mlp = 1, g.bias = 0;
    const kv_model *ms[2] = {&m, &g};
    for (int mi = 0; mi < 2; mi++)
        for (int mode = 0; mode < 2; mode++) {
            kv_plan pl;
            kv_plan_defaults(&pl);
            pl.mode = (kv_mode)mode, pl.batch = 3, pl.nb = mode ? 2 : 1, pl.prompt = 40, pl.gen = 4;
            pl.policy = KV_POL_OFFLOAD;
            eng_result base;
            kv_status st = eng_run(bt, 0, ms[mi], &pl, 11, &base);
            if (st) return st;
            int splits[] = {1, 17, 40};
            kv_policy pols[] = {KV_POL_KVPR, KV_POL_KVPR, KV_POL_KVPR, KV_POL_RECOMPUTE, KV_POL_GPU};
            for (int c = 0; c < 5; c++) {
                kv_plan q = pl;
                q.policy = pols[c];
                q.split = c < 3 ? splits[c] : -1;
                eng_result r;
                if ((st = eng_run(bt, 0, ms[mi], &q, 11, &r))) {
                    eng_result_free(&base);
                    return st;
                }
                double e = 0, mx = 0, ea = 0, ma = 0;
                for (int i = 0; i < r.nhidden; i++) e = fmax(e, fabs(r.hidden[i] - base.hidden[i])), mx = fmax(mx, fabs(base.hidden[i]));
                int na = pl.batch * ms[mi]->n_heads * ms[mi]->head_dim;
                for (int i = 0; i < na; i++) ea = fmax(ea, fabs(r.attn[i] - base.attn[i])), ma = fmax(ma, fabs(base.attn[i]));
                check(t, e / mx < 2e-2 && ea / ma < 2e-2 && isfinite(e) && isfinite(ea),
                      "%s %s %s l=%d: output vs offload rel %.1e, attention rel %.1e (tolerance 2e-2, fp16)", ms[mi]->name,
                      kv_mode_name(q.mode), kv_policy_name(q.policy), q.split, e / mx, ea / ma);
                eng_result_free(&r);
            }
            eng_result_free(&base);
        }
    return KV_OK;
}

static int eng_cmd_selftest(const eng_backend_type *bt) {
    tally t = {0, 0};
    eng_backend *b;
    kv_status st = bt->open(&b, 0, 1);
    if (st) {
        /* no device: say so, skip, and let the caller decide (the test suite counts it as skipped) */
        printf("selftest skipped: %s\n", kv_errmsg());
        return st == KV_EDEVICE ? 0 : fail(st);
    }
    char name[256];
    double fr, tot;
    bt->info(b, name, sizeof name, &fr, &tot);
    bt->close(b);
    printf("selftest on %s backend: %s\n", bt->name, name);
    if ((st = kernel_tests(bt, &t)) || (st = equivalence_tests(bt, &t))) return fail(st);
    printf("selftest: %d passed, %d failed\n", t.pass, t.fail);
    return t.fail ? 1 : 0;
}

/* ---- run ---------------------------------------------------------------------------------- */

static const char *run_help =
    "usage: kvpr-engine run --model M --batch B --prompt P --gen G [--policy offload|kvpr|recompute|gpu] [--split L]\n"
    "       [--mode latency|throughput --nb N] [--layers N] [--prefetch D] [--keep-act] [--pageable]\n"
    "       [--hw PROFILE] [--db FILE | --no-db] [--json] [--backend cuda|host]\n"
    "  --hw  the profile of this machine: labels the run, and without --split the pipelined scheduler picks l on it\n";

static int eng_cmd_run(const eng_backend_type *bt, int argc, char **argv) {
    kv_plan pl;
    kv_plan_defaults(&pl);
    const char *model = NULL, *hw = "", *dbpath = DB_DEFAULT_PATH, *trace = NULL;
    int js = 0;
    kv_status st;
    /* --backend was read by main; the rest are the plan options every command shares */
    char **rest = malloc(sizeof(char *) * (size_t)(argc + 1));
    if (!rest) return fail(kv_errorf(KV_ENOMEM, "out of memory"));
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) i++;
        else rest[n++] = argv[i];
    }
    rest[n] = NULL;
    int rc = cli_parse_plan(n, rest, &pl, &model, &hw, &trace, &dbpath, &js, run_help);
    free(rest);
    if (rc >= 0) return rc;
    if (trace) return fail(kv_errorf(KV_EINVAL, "run: --trace is for the simulator; engine timelines go to --db"));
    if (!*hw) hw = NULL;
    kv_model m;
    if ((st = kv_model_resolve(model, &m))) return fail(st);
    if (pl.policy == KV_POL_KVPR && pl.split < 0) {
        /* the split the pipelined scheduler picks on the named profile; without one, 3/4 of the prompt */
        hw_profile prof;
        sched_result sr;
        if (hw && hw_profile_resolve(hw, &prof) == KV_OK && sched_plan(SCHED_PIPELINED, &m, &prof, &pl, NULL, &sr) == KV_OK) {
            pl.split = sr.split;
            sched_result_free(&sr);
        } else {
            pl.split = pl.prompt * 3 / 4;
            fprintf(stderr, "kvpr-engine: no --split and no usable --hw profile: using l = %d (3/4 of the prompt)\n", pl.split);
        }
    }
    eng_result r;
    if ((st = eng_run(bt, 0, &m, &pl, 1, &r))) return fail(st);
    if (dbpath) {
        kv_db *db;
        if ((st = db_open(dbpath, 5000, &db)) || (st = eng_write_db(db, &r, &m, hw ? hw : r.device, &pl, NULL))) {
            eng_result_free(&r);
            return fail(st);
        }
        db_close(db);
    }
    double busy[KV_OP_COUNT] = {0};
    int cnt[KV_OP_COUNT] = {0};
    for (int i = 0; i < r.nspans; i++)
        for (int k = 0; k < KV_OP_COUNT; k++)
            if (!strcmp(r.spans[i].op, kv_op_name((kv_op)k)))
                busy[k] += (double)(r.spans[i].end_ps - r.spans[i].start_ps) * 1e-12, cnt[k]++;
    int T = kv_plan_steps(&pl);
    if (js) {
        printf("{\"device\": \"%s\", \"backend\": \"%s\", \"model\": \"%s\", \"decode_s\": %.9g, \"step_s\": %.9g, \"spans\": %d, \"ops\": {",
               r.device, bt->name, m.name, r.decode_s, r.decode_s / T, r.nspans);
        int first = 1;
        for (int k = 0; k < KV_OP_COUNT; k++)
            if (cnt[k]) printf("%s\"%s\": {\"count\": %d, \"mean_s\": %.9g}", first ? "" : ", ", kv_op_name((kv_op)k), cnt[k], busy[k] / cnt[k]), first = 0;
        printf("}}\n");
    } else {
        printf("%s on %s (%s backend): %s mode, policy %s", m.name, r.device, bt->name, kv_mode_name(pl.mode), kv_policy_name(pl.policy));
        if (pl.policy == KV_POL_KVPR) printf(", split l = %d", pl.split);
        printf("\n  workload   %d x %d sequences, prompt %d, gen %d, %d of %d layers\n", pl.batch, pl.nb, pl.prompt, pl.gen,
               kv_plan_layers(&pl, &m), m.n_layers);
        printf("  decode     %.4f s, %.3f ms per step (measured with events)\n", r.decode_s, 1e3 * r.decode_s / T);
        printf("  memory     %.2f GiB device, %.2f GiB %s host\n", r.dev_bytes / 1073741824.0, r.host_bytes / 1073741824.0,
               pl.pageable ? "pageable" : "pinned");
        printf("  ops        ");
        for (int k = 0; k < KV_OP_COUNT; k++)
            if (cnt[k]) printf("%s %.3f ms x %d  ", kv_op_name((kv_op)k), 1e3 * busy[k] / cnt[k], cnt[k]);
        printf("\n");
    }
    eng_result_free(&r);
    return 0;
}

/* ---- bench -------------------------------------------------------------------------------- */

static double median(double *x, int n) {
    gsl_sort(x, 1, (size_t)n);
    return gsl_stats_median_from_sorted_data(x, 1, (size_t)n);
}

typedef struct {
    eng_backend *b;
    const eng_backend_type *t;
    kv_db *db;
    FILE *csv;
    char dev[256];
    int ev;
} bench_t;

static void emit(bench_t *B, const char *kind, const char *params, double x, double value, const char *unit) {
    if (B->db) db_measurement(B->db, B->dev, kind, params, x, value, unit);
    if (B->csv) { /* CSV: the JSON params field quoted, its quotes doubled */
        fprintf(B->csv, "%s,\"", kind);
        for (const char *c = params; *c; c++) fputs(*c == '"' ? "\"\"" : (char[]){*c, 0}, B->csv);
        fprintf(B->csv, "\",%.9g,%.9g,%s\n", x, value, unit);
    }
}

/* median time (s) of reps runs of f, timed with events on stream s */
#define TIMED(B, s, reps, out, body)                                                      \
    do {                                                                                  \
        double ts_[64];                                                                   \
        int n_ = (reps) > 64 ? 64 : (reps);                                               \
        for (int r_ = 0; r_ < n_; r_++) {                                                 \
            int e0_ = 1 + 2 * r_, e1_ = 2 + 2 * r_;                                       \
            if ((st = B->t->record(B->b, s, e0_))) break;                                 \
            body;                                                                         \
            if ((st = B->t->record(B->b, s, e1_))) break;                                 \
        }                                                                                 \
        if (!st) st = B->t->sync(B->b);                                                   \
        for (int r_ = 0; r_ < n_ && !st; r_++) {                                          \
            double a_, b_;                                                                \
            if ((st = B->t->elapsed(B->b, 1 + 2 * r_, &a_)) || (st = B->t->elapsed(B->b, 2 + 2 * r_, &b_))) break; \
            ts_[r_] = (b_ - a_) * 1e-3;                                                   \
        }                                                                                 \
        out = st ? 0 : median(ts_, n_);                                                   \
    } while (0)

/* one copy each way, issued together: each runs on its own copy engine */
static kv_status duplex(bench_t *B, void *d_in, const void *h_src, const void *d_src, void *h_dst, size_t n) {
    kv_status st = B->t->copy(B->b, ENG_S_D2H, h_dst, d_src, n, 1);
    return st ? st : B->t->copy(B->b, ENG_S_H2D, d_in, h_src, n, 0);
}

static kv_status bench_copies(bench_t *B, int quick) {
    kv_status st = KV_OK;
    size_t maxb = quick ? (64u << 20) : (1u << 30);
    void *hp, *hg, *d1, *d2, *hp2;
    if ((st = B->t->host_alloc(B->b, &hp, maxb, 1)) || (st = B->t->host_alloc(B->b, &hp2, maxb, 1)) ||
        (st = B->t->host_alloc(B->b, &hg, maxb, 0)) || (st = B->t->dev_alloc(B->b, &d1, maxb)) || (st = B->t->dev_alloc(B->b, &d2, maxb)))
        return st;
    memset(hp, 1, maxb), memset(hp2, 2, maxb), memset(hg, 3, maxb);
    /* record 0 once: the origin */
    if ((st = B->t->record(B->b, 0, 0)) || (st = B->t->sync(B->b))) return st;
    printf("%-12s %-8s %12s %10s %10s\n", "copy", "memory", "bytes", "time us", "GB/s");
    for (size_t n = 4096; n <= maxb && !st; n *= 4) {
        int reps = n < (1u << 20) ? 20 : n < (64u << 20) ? 8 : 4;
        for (int pinned = 1; pinned >= 0 && !st; pinned--)
            for (int dir = 0; dir < 3 && !st; dir++) {
                double t = 0, t2 = 0;
                void *h = pinned ? hp : hg;
                char params[160];
                if (dir < 2) {
                    int s = dir == 0 ? ENG_S_H2D : ENG_S_D2H;
                    TIMED(B, s, reps, t, st = B->t->copy(B->b, s, dir == 0 ? d1 : h, dir == 0 ? h : d1, n, dir));
                } else {
                    /* both directions at once: H2D timed, D2H running beside it on its own engine */
                    TIMED(B, ENG_S_H2D, reps, t, st = duplex(B, d1, h, d2, pinned ? hp2 : hg, n));
                    TIMED(B, ENG_S_D2H, reps, t2, st = duplex(B, d1, h, d2, pinned ? hp2 : hg, n));
                }
                if (st) break;
                const char *kind = dir == 0 ? "h2d" : dir == 1 ? "d2h" : "h2d_duplex";
                snprintf(params, sizeof params, "{\"bytes\":%zu,\"pinned\":%s}", n, pinned ? "true" : "false");
                /* one kind per direction and memory: copy time in seconds against bytes */
                char k2[48];
                snprintf(k2, sizeof k2, "copy_%s_%s", kind, pinned ? "pinned" : "pageable");
                emit(B, k2, params, (double)n, t, "s");
                printf("%-12s %-8s %12zu %10.1f %10.2f\n", kind, pinned ? "pinned" : "pageable", n, t * 1e6, (double)n / t / 1e9);
                if (dir == 2) {
                    snprintf(k2, sizeof k2, "copy_d2h_duplex_%s", pinned ? "pinned" : "pageable");
                    emit(B, k2, params, (double)n, t2, "s");
                    printf("%-12s %-8s %12zu %10.1f %10.2f\n", "d2h_duplex", pinned ? "pinned" : "pageable", n, t2 * 1e6, (double)n / t2 / 1e9);
                }
            }
    }
    B->t->host_free(B->b, hp, 1), B->t->host_free(B->b, hp2, 1), B->t->host_free(B->b, hg, 0);
    B->t->dev_free(B->b, d1), B->t->dev_free(B->b, d2);
    return st;
}

static kv_status bench_gemm(bench_t *B, int quick) {
    kv_status st = KV_OK;
    const char *models[] = {"OPT-6.7B", "OPT-13B", "OPT-30B", "Llama-3-8B"};
    int Ms[] = {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536};
    int nM = quick ? 9 : 15, nmod = quick ? 1 : 4;
    printf("\n%-12s %-10s %8s %6s %6s %10s %9s\n", "gemm", "shape", "M", "K", "N", "time us", "TFLOP/s");
    size_t cap = (size_t)65536 * 16384 * 2;
    void *A, *W, *C;
    if ((st = B->t->dev_alloc(B->b, &A, quick ? (size_t)4096 * 7168 * 2 : cap)) || (st = B->t->dev_alloc(B->b, &W, (size_t)28672 * 7168 * 2)) ||
        (st = B->t->dev_alloc(B->b, &C, quick ? (size_t)4096 * 28672 * 2 : (size_t)65536 * 28672 * 2)))
        return st;
    for (int mi = 0; mi < nmod && !st; mi++) {
        kv_model m;
        kv_model_find(models[mi], &m);
        int h = m.hidden, kv2 = 2 * kv_model_kv_dim(&m), qd = m.n_heads * m.head_dim;
        struct { const char *nm; int K, N, maxM; } sh[] = {{"recompute", h, kv2, 65536}, {"qkv", h, qd + kv2, 256},
                                                          {"out", qd, h, 256},         {"ffn_up", h, m.ffn * (m.gated_mlp ? 2 : 1), 256},
                                                          {"ffn_down", m.ffn, h, 256}};
        for (size_t si = 0; si < 5 && !st; si++)
            for (int k = 0; k < nM && !st; k++) {
                int M = Ms[k];
                if (M > sh[si].maxM || (quick && M > 4096)) continue;
                if ((size_t)M * sh[si].K * 2 > cap || (size_t)M * sh[si].N > (size_t)65536 * 28672) continue;
                double t;
                TIMED(B, 0, M >= 8192 ? 5 : 15, t, st = B->t->gemm(B->b, 0, M, sh[si].N, sh[si].K, A, W, C, 0.f));
                if (st) break;
                double tf = 2.0 * M * sh[si].K * sh[si].N / t / 1e12;
                char params[200];
                snprintf(params, sizeof params, "{\"model\":\"%s\",\"shape\":\"%s\",\"M\":%d,\"K\":%d,\"N\":%d}", m.name, sh[si].nm, M,
                         sh[si].K, sh[si].N);
                emit(B, "gemm_time", params, M, t, "s");
                printf("%-12s %-10s %8d %6d %6d %10.1f %9.1f\n", m.name, sh[si].nm, M, sh[si].K, sh[si].N, t * 1e6, tf);
            }
    }
    B->t->dev_free(B->b, A), B->t->dev_free(B->b, W), B->t->dev_free(B->b, C);
    return st;
}

static kv_status bench_attn(bench_t *B, int quick) {
    kv_status st = KV_OK;
    kv_model m;
    kv_model_find("OPT-6.7B", &m);
    int bs[] = {1, 8, 32, 64}, cs[] = {128, 512, 2048, 8192};
    int nbs = quick ? 2 : 4, ncs = quick ? 2 : 4;
    size_t row = 2 * (size_t)kv_model_kv_dim(&m);
    void *q, *kv, *o;
    if ((st = B->t->dev_alloc(B->b, &q, (size_t)64 * m.hidden * 2)) || (st = B->t->dev_alloc(B->b, &o, (size_t)64 * m.hidden * 2)) ||
        (st = B->t->dev_alloc(B->b, &kv, (size_t)(quick ? 512 : 8192) * (quick ? 8 : 64) * row * 2)))
        return st;
    printf("\n%-10s %6s %6s %10s %9s\n", "attention", "batch", "ctx", "time us", "GB/s K+V");
    for (int i = 0; i < nbs && !st; i++)
        for (int j = 0; j < ncs && !st; j++) {
            double t;
            TIMED(B, 0, 15, t, st = B->t->attention(B->b, 0, q, kv, o, bs[i], cs[j], m.n_heads, m.n_kv_heads, m.head_dim));
            if (st) break;
            double bytes = (double)bs[i] * cs[j] * row * 2;
            char params[160];
            snprintf(params, sizeof params, "{\"model\":\"%s\",\"batch\":%d,\"ctx\":%d}", m.name, bs[i], cs[j]);
            emit(B, "attn_time", params, bytes, t, "s");
            printf("%-10s %6d %6d %10.1f %9.1f\n", m.name, bs[i], cs[j], t * 1e6, bytes / t / 1e9);
        }
    B->t->dev_free(B->b, q), B->t->dev_free(B->b, kv), B->t->dev_free(B->b, o);
    return st;
}

static int eng_cmd_bench(const eng_backend_type *bt, int argc, char **argv) {
    const char *dbpath = DB_DEFAULT_PATH, *csvf = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--no-db")) dbpath = NULL;
        else if (i + 1 < argc && !strcmp(argv[i], "--db")) dbpath = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--csv")) csvf = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--backend")) i++;
        else return fail(kv_errorf(KV_EINVAL, "bench: unknown or incomplete option '%s'", argv[i]));
    }
    bench_t B = {.t = bt};
    kv_status st = bt->open(&B.b, 0, 200);
    if (st) return fail(st);
    double fr, tot;
    if ((st = bt->info(B.b, B.dev, sizeof B.dev, &fr, &tot))) return fail(st);
    printf("bench on %s\n", B.dev);
    if (dbpath && (st = db_open(dbpath, 5000, &B.db))) return fail(st);
    if (csvf && !(B.csv = fopen(csvf, "w"))) return fail(kv_errorf(KV_EIO, "cannot write %s", csvf));
    if (B.csv) fprintf(B.csv, "# device: %s\nkind,params,x,value,unit\n", B.dev);
    if (!(st = bench_copies(&B, quick)) && !(st = bench_gemm(&B, quick))) st = bench_attn(&B, quick);
    if (B.csv) fclose(B.csv);
    db_close(B.db);
    bt->close(B.b);
    return st ? fail(st) : 0;
}

int main(int argc, char **argv) {
    cli_prog = "kvpr-engine";
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *be = "cuda";
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--backend")) be = argv[i + 1];
    kv_status st;
    const eng_backend_type *bt = pick(be, &st);
    if (st) return fail(st);
    const char *c = argv[1];
    if (!strcmp(c, "selftest")) return eng_cmd_selftest(bt);
    if (!strcmp(c, "run")) return eng_cmd_run(bt, argc - 1, argv + 1);
    if (!strcmp(c, "bench")) return eng_cmd_bench(bt, argc - 1, argv + 1);
    if (!strcmp(c, "info")) {
        eng_backend *b;
        if ((st = bt->open(&b, 0, 1))) return fail(st);
        char name[256];
        double fr, tot;
        st = bt->info(b, name, sizeof name, &fr, &tot);
        bt->close(b);
        if (st) return fail(st);
        printf("%s backend: %s, %.2f GiB free of %.2f GiB\n", bt->name, name, fr / 1073741824.0, tot / 1073741824.0);
        return 0;
    }
    return fail(kv_errorf(KV_EINVAL, "unknown command '%s' (info, selftest, run, bench)", c));
}
