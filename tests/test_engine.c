/* Engine: kernels against double references (and the CUDA attention's split arithmetic on the
 * CPU), the fast set-up, the executor through the host backend (kvpr equals offloading; plans of a
 * session start from the same data; timelines join the simulator's), memory and database checks,
 * its errors, and the CUDA selftest where a GPU is. */
#include <gsl/gsl_rng.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../engine/exec.h"
#include "../engine/fill.h"
#include "../engine/sysmem.h"
#include "../kernels/attn_split.h"
#include "../kernels/ref.h"
#include "../sim/sim.h"
#include "tests.h"

static void t_kernels_vs_reference(void **s) {
    (void)s;
    gsl_rng *r = gsl_rng_alloc(gsl_rng_taus2);
    gsl_rng_set(r, 3);
    int shapes[][5] = {{2, 1, 4, 4, 64}, {3, 100, 8, 2, 128}, {5, 257, 6, 6, 96}};
    for (int c = 0; c < 3; c++) {
        int B = shapes[c][0], ctx = shapes[c][1], nh = shapes[c][2], nkv = shapes[c][3], d = shapes[c][4];
        size_t nq = (size_t)B * nh * d, nk = (size_t)ctx * B * 2 * nkv * d;
        uint16_t *q = malloc(nq * 2), *kv = malloc(nk * 2), *o = malloc(nq * 2);
        double *ref = malloc(nq * sizeof(double));
        for (size_t i = 0; i < nq; i++) q[i] = eng_f2h((float)(4 * gsl_rng_uniform(r) - 2)), o[i] = 0x7E00;
        for (size_t i = 0; i < nk; i++) kv[i] = eng_f2h((float)(4 * gsl_rng_uniform(r) - 2));
        kref_attention_d(q, kv, ref, B, ctx, nh, nkv, d);
        kref_attention_f(q, kv, o, B, ctx, nh, nkv, d);
        assert_true(kref_relerr(o, ref, nq) < 5e-3); /* fp16 output */
        /* a single position: attention returns that position's V exactly (up to fp16) */
        if (ctx == 1)
            for (int h = 0; h < nh; h++)
                for (int j = 0; j < d; j++) assert_rel(ref[(size_t)h * d + j], eng_h2f(kv[(size_t)nkv * d + (size_t)(h / (nh / nkv)) * d + j]), 1e-12);
        free(q), free(kv), free(o), free(ref);
    }
    int rows = 5, cols = 333;
    uint16_t *x = malloc((size_t)rows * cols * 4), *o = malloc((size_t)rows * cols * 2);
    double *ref = malloc(sizeof(double) * (size_t)rows * cols);
    for (int i = 0; i < rows * cols * 2; i++) x[i] = eng_f2h((float)(8 * gsl_rng_uniform(r) - 4));
    for (int act = 1; act <= 2; act++) {
        for (int i = 0; i < rows * cols; i++) o[i] = 0x7E00;
        kref_activate_d(x, ref, rows, cols, act);
        kref_activate_f(x, o, rows, cols, act);
        assert_true(kref_relerr(o, ref, (size_t)rows * cols) < 1e-3);
    }
    for (int i = 0; i < rows * cols; i++) o[i] = 0x7E00;
    kref_rmsnorm_d(x, ref, rows, cols);
    kref_rmsnorm_f(x, o, rows, cols);
    assert_true(kref_relerr(o, ref, (size_t)rows * cols) < 1e-3);
    double ss = 0;
    for (int c = 0; c < cols; c++) ss += ref[c] * ref[c];
    assert_rel(ss / cols, 1.0, 1e-5); /* unit RMS */
    free(x), free(o), free(ref);
    gsl_rng_free(r);
}

static kv_model small(int gqa) {
    kv_model m = {.name = "small", .family = "llama", .n_layers = 4, .hidden = 128, .n_heads = 4, .n_kv_heads = gqa ? 1 : 4,
                  .head_dim = 32, .ffn = 256, .vocab = 100, .gated_mlp = gqa, .dtype = KV_DT_FP16};
    return m;
}

static void t_kvpr_equals_offload(void **s) {
    (void)s;
    for (int gqa = 0; gqa < 2; gqa++)
        for (int mode = 0; mode < 2; mode++) {
            kv_model m = small(gqa);
            kv_plan pl;
            kv_plan_defaults(&pl);
            pl.mode = (kv_mode)mode, pl.batch = 2, pl.nb = mode ? 3 : 1, pl.prompt = 24, pl.gen = 5, pl.policy = KV_POL_OFFLOAD;
            eng_result base, r;
            if (eng_run(&eng_host_backend, 0, &m, &pl, 5, &base)) fail_msg("%s", kv_errmsg());
            int splits[] = {3, 24};
            for (int c = 0; c < 4; c++) {
                kv_plan q = pl;
                q.policy = c < 2 ? KV_POL_KVPR : c == 2 ? KV_POL_RECOMPUTE : KV_POL_GPU;
                q.split = c < 2 ? splits[c] : -1;
                q.keep_act = c == 1; /* kept activations recompute generated tokens too */
                if (c == 1) q.split = 27;
                if (eng_run(&eng_host_backend, 0, &m, &q, 5, &r)) fail_msg("%s", kv_errmsg());
                double e = 0, mx = 0;
                for (int i = 0; i < r.nhidden; i++) e = fmax(e, fabs(r.hidden[i] - base.hidden[i])), mx = fmax(mx, fabs(base.hidden[i]));
                if (!(e / mx < 2e-2)) fail_msg("gqa %d mode %d case %d: rel %.3g (tolerance 2e-2)", gqa, mode, c, e / mx);
                eng_result_free(&r);
            }
            eng_result_free(&base);
        }
}

typedef struct {
    int step, layer, mb;
    char op[16];
} span_key;

static int cmp_key(const void *a, const void *b) {
    const span_key *x = a, *y = b;
    if (x->step != y->step) return x->step - y->step;
    if (x->layer != y->layer) return x->layer - y->layer;
    if (x->mb != y->mb) return x->mb - y->mb;
    return strcmp(x->op, y->op);
}

static void t_timeline_joins_simulator(void **s) {
    (void)s;
    kv_model m = small(0);
    hw_profile p = hwp("a100-40gb-pcie4");
    for (int mode = 0; mode < 2; mode++) {
        kv_plan pl;
        kv_plan_defaults(&pl);
        pl.mode = (kv_mode)mode, pl.batch = 2, pl.nb = mode ? 2 : 1, pl.prompt = 16, pl.gen = 4, pl.policy = KV_POL_KVPR, pl.split = 6;
        eng_result r;
        if (eng_run(&eng_host_backend, 0, &m, &pl, 1, &r)) fail_msg("%s", kv_errmsg());
        sim_ctx *sx = sim_new();
        sim_result sr;
        if (sim_run(sx, &m, &p, &pl, &sr)) fail_msg("%s", kv_errmsg());
        sim_des *d = sim_last_des(sx);
        int n = sim_des_count(d);
        assert_int_equal(n, r.nspans);
        span_key *a = calloc((size_t)n, sizeof *a), *b = calloc((size_t)n, sizeof *b);
        for (int i = 0; i < n; i++) {
            sim_task *t = sim_des_get(d, i);
            a[i] = (span_key){t->step, t->layer, t->mb, ""};
            snprintf(a[i].op, sizeof a[i].op, "%s", kv_op_name((kv_op)t->op));
            b[i] = (span_key){r.spans[i].step, r.spans[i].layer, r.spans[i].mb, ""};
            snprintf(b[i].op, sizeof b[i].op, "%s", r.spans[i].op);
            assert_true(r.spans[i].end_ps >= r.spans[i].start_ps && r.spans[i].start_ps >= 0);
        }
        qsort(a, (size_t)n, sizeof *a, cmp_key);
        qsort(b, (size_t)n, sizeof *b, cmp_key);
        for (int i = 0; i < n; i++)
            if (cmp_key(&a[i], &b[i])) fail_msg("span %d: sim (%d,%d,%d,%s) engine (%d,%d,%d,%s)", i, a[i].step, a[i].layer, a[i].mb, a[i].op, b[i].step, b[i].layer, b[i].mb, b[i].op);
        /* measured dependencies hold: attention starts after its K/V transfer ended */
        for (int i = 0; i < r.nspans; i++) {
            if (strcmp(r.spans[i].op, "attn")) continue;
            for (int k = 0; k < r.nspans; k++)
                if (!strcmp(r.spans[k].op, "kv_h2d") && r.spans[k].step == r.spans[i].step && r.spans[k].layer == r.spans[i].layer &&
                    r.spans[k].mb == r.spans[i].mb)
                    assert_true(r.spans[i].start_ps >= r.spans[k].end_ps);
        }
        free(a), free(b);
        sim_free(sx);
        /* into results.db: an engine run with every span */
        char dbp[512];
        snprintf(dbp, sizeof dbp, "%s/engine.db", tmp_dir());
        unlink(dbp);
        kv_db *db;
        assert_int_equal(db_open(dbp, 1000, &db), KV_OK);
        assert_int_equal(eng_write_db(db, &r, &m, "host", &pl, NULL), KV_OK);
        sqlite3_stmt *q;
        sqlite3_prepare_v2(db_handle(db), "SELECT (SELECT kind FROM runs), (SELECT count(*) FROM spans)", -1, &q, NULL);
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(q, 0), "engine");
        assert_int_equal(sqlite3_column_int(q, 1), n);
        sqlite3_finalize(q);
        db_close(db);
        eng_result_free(&r);
    }
}

static void t_engine_errors(void **s) {
    (void)s;
    kv_model m = small(0);
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.batch = 2, pl.prompt = 16, pl.gen = 3;
    eng_result r;
    pl.paper_model = 1; /* a simulator cost model, not something a device runs */
    assert_int_equal(eng_run(&eng_host_backend, 0, &m, &pl, 1, &r), KV_EINVAL);
    pl.paper_model = 0, pl.policy = KV_POL_OFFLOAD, pl.gen = 1;
    assert_int_equal(eng_run(&eng_host_backend, 0, &m, &pl, 1, &r), KV_EINVAL);
    pl.gen = 3;
    assert_int_equal(eng_run(eng_cuda_backend(), 0, &m, &pl, 1, &r), KV_EDEVICE); /* this binary has no CUDA */
    kv_model big = mdl("OPT-175B");
    pl.batch = 4096, pl.prompt = 4096, pl.layers = 96;
    assert_int_equal(eng_run(&eng_host_backend, 0, &big, &pl, 1, &r), KV_ENOFIT);
    assert_non_null(strstr(kv_errmsg(), "GiB of device memory"));
    char out[4096];
    assert_int_equal(run_cmd(out, sizeof out, "%s/kvpr-engine run --backend host --model OPT-125M --batch 0 --prompt 8 --gen 3", KVPR_BUILD_DIR), 2);
    assert_non_null(strstr(out, "kvpr-engine: --batch must be in [1, 1048576], got 0"));
    assert_int_equal(run_cmd(out, sizeof out, "%s/kvpr-engine run --backend tpu --model OPT-125M", KVPR_BUILD_DIR), 2);
    assert_non_null(strstr(out, "unknown backend 'tpu'"));
    /* a small real run through the command */
    assert_int_equal(run_cmd(out, sizeof out, "%s/kvpr-engine run --backend host --model OPT-125M --batch 2 --prompt 32 --gen 3 "
                                              "--policy kvpr --split 8 --layers 2 --no-db", KVPR_BUILD_DIR), 0);
    assert_non_null(strstr(out, "recompute"));
}

static int nlines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* The CUDA kernel's partition and its split/merge arithmetic, run on the CPU (kref_attention_split_f
 * follows kernels/attention.cu step by step), against the double reference: one split, a few, the
 * most the workspace allows, GQA groups that need two passes, rows of 10 vectors on 16 lanes. */
static void t_attention_split_emulation(void **s) {
    (void)s;
    gsl_rng *r = gsl_rng_alloc(gsl_rng_taus2);
    gsl_rng_set(r, 9);
    /* B, ctx, nh, nkv, d, sms, workspace bytes, expected splits (-1: more than one) */
    const long cases[][8] = {{2, 300, 8, 8, 64, 1, 0, 1},          {1, 1000, 8, 2, 128, 132, 16 << 20, 15},
                             {3, 257, 12, 1, 80, 132, 16 << 20, 4}, {1, 700, 24, 2, 64, 132, 16 << 20, -1},
                             {1, 129, 4, 4, 96, 132, 16 << 20, 2},  {2, 5000, 4, 2, 128, 132, 3 * 2 * 4 * 130 * 4, 3},
                             {4, 1, 4, 4, 64, 132, 16 << 20, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int B = (int)cases[c][0], ctx = (int)cases[c][1], nh = (int)cases[c][2], nkv = (int)cases[c][3], d = (int)cases[c][4];
        size_t nq = (size_t)B * nh * d, nk = (size_t)ctx * B * 2 * nkv * d;
        uint16_t *q = malloc(nq * 2), *kv = malloc(nk * 2), *o = malloc(nq * 2);
        double *ref = malloc(nq * sizeof(double));
        for (size_t i = 0; i < nq; i++) q[i] = eng_f2h((float)(4 * gsl_rng_uniform(r) - 2)), o[i] = 0x7E00;
        for (size_t i = 0; i < nk; i++) kv[i] = eng_f2h((float)(4 * gsl_rng_uniform(r) - 2));
        kref_attention_d(q, kv, ref, B, ctx, nh, nkv, d);
        int splits = kref_attention_split_f(q, kv, o, B, ctx, nh, nkv, d, (int)cases[c][5], (size_t)cases[c][6]);
        if (cases[c][7] > 0) assert_int_equal(splits, cases[c][7]);
        else assert_true(splits > 1);
        double e = kref_relerr(o, ref, nq);
        if (!(e < 5e-3)) fail_msg("case %zu (%d splits): rel err %.3g (tolerance 5e-3)", c, splits, e);
        free(q), free(kv), free(o), free(ref);
    }
    gsl_rng_free(r);
    /* the partition over many shapes: every split non-empty, the context covered, the workspace
     * respected, the threads of a position cover d with 16-byte vectors, every head served */
    for (int B = 1; B <= 64; B *= 4)
        for (int ctx = 1; ctx <= 20000; ctx = ctx * 3 + 1)
            for (int d = 8; d <= 256; d += 24)
                for (int grp = 1; grp <= 12; grp += 3) {
                    int nkv = 2, nh = nkv * grp;
                    size_t ws = (size_t)16 << 20;
                    kattn_plan p = kattn_make_plan(B, ctx, nh, nkv, d, 132, ws);
                    assert_true(p.splits >= 1 && p.splits <= KATTN_MAX_SPLITS);
                    assert_true((long)(p.splits - 1) * p.chunk < ctx && (long)p.splits * p.chunk >= ctx);
                    assert_true(p.splits == 1 || (size_t)p.splits * kattn_ws_per_split(B, nh, d) <= ws);
                    assert_true(p.splits == 1 || p.chunk >= KATTN_MIN_CHUNK);
                    assert_true(p.tpp * 8 >= d && (p.tpp & (p.tpp - 1)) == 0 && p.tpp <= 32 && p.groups * p.tpp == KATTN_THREADS);
                    assert_true(p.g <= KATTN_G && p.g * p.passes >= grp && p.g * (p.passes - 1) < grp);
                    /* the same partition invariants when splits are sized by waves of resident blocks */
                    for (int per_sm = 1; per_sm <= 8; per_sm *= 2) {
                        kattn_plan w = kattn_make_plan_occ(B, ctx, nh, nkv, d, 132, per_sm, ws);
                        assert_true(w.splits >= 1 && w.splits <= KATTN_MAX_SPLITS);
                        assert_true((long)(w.splits - 1) * w.chunk < ctx && (long)w.splits * w.chunk >= ctx);
                        assert_true(w.splits == 1 || (size_t)w.splits * kattn_ws_per_split(B, nh, d) <= ws);
                        assert_true(w.splits == 1 || w.chunk >= KATTN_MIN_CHUNK);
                        assert_true(w.tpp == p.tpp && w.g == p.g && w.passes == p.passes && w.u == p.u);
                    }
                }
    /* waves by hand, 528 slots (132 SMs x 4): 64 blocks need 8 splits (512 blocks, 97 % of one
     * wave); 512 blocks are 97 % already; 576 blocks (1.09 waves: 55 %) need 5 splits (2880 blocks,
     * 6 waves, 91 %: 2 splits are 73 %, 4 are 87 %); 300 blocks need 5 (1500 in 3 waves, 95 %) */
    assert_int_equal(kattn_splits_waves(64, 528, 128), 8);
    assert_int_equal(kattn_splits_waves(512, 528, 128), 1);
    assert_int_equal(kattn_splits_waves(576, 528, 128), 5);
    assert_int_equal(kattn_splits_waves(300, 528, 128), 5);
    /* capped at 3: the best filled of 300 (57 %), 600 (57 %), 900 blocks (85 %) */
    assert_int_equal(kattn_splits_waves(300, 528, 3), 3);
    assert_int_equal(kattn_splits_waves(7, 528, 1), 1);
    /* the rule before occupancy was known is kept for per_sm = 0: about four blocks per SM */
    assert_int_equal(kattn_splits_four(64, 132), 9);
    assert_int_equal(kattn_splits_four(600, 132), 1);
}

/* Random fp16 straight from bits: finite, normal, mean zero, the stated RMS, reproducible, and the
 * threaded copy equals memcpy at a size that does not split evenly. */
static void t_fill(void **s) {
    (void)s;
    size_t n = (3u << 20) + 12345;
    eng_half *a = malloc(n * 2), *b = malloc(n * 2);
    for (double rms = 0.01; rms < 3; rms *= 7) {
        eng_fill_random(a, n, rms, 42);
        double sum = 0, sq = 0;
        for (size_t i = 0; i < n; i++) {
            double v = eng_h2f(a[i]);
            if (!isfinite(v) || (a[i] & 0x7C00) == 0) fail_msg("value %zu: 0x%04x is not a finite normal fp16", i, a[i]);
            sum += v, sq += v * v;
        }
        double got = sqrt(sq / n);
        assert_rel(got, eng_fill_rms(rms), 0.01);
        assert_true(got > rms / sqrt(2.0) && got < rms * sqrt(2.0));
        assert_true(fabs(sum / n) < 0.01 * got);
        eng_fill_random(b, n, rms, 42);
        assert_memory_equal(a, b, n * 2);
    }
    eng_fill_random(b, n, 1.0, 43);
    eng_fill_random(a, n, 1.0, 42);
    size_t same = 0;
    for (size_t i = 0; i < n; i++) same += a[i] == b[i];
    assert_true(same < n / 100); /* another seed, other values */
    size_t bytes = (9u << 20) + 4097;
    char *src = malloc(bytes), *dst = calloc(bytes, 1);
    for (size_t i = 0; i < bytes; i++) src[i] = (char)(i * 131 + 7);
    eng_fill_copy(dst, src, bytes);
    assert_memory_equal(dst, src, bytes);
    free(a), free(b), free(src), free(dst);
}

/* Plans of one session start from the same weights, caches and hidden state: a plan run twice, or
 * run alone by eng_run with the same seed, gives the same outputs; shapes that differ are refused. */
static void t_session_same_data(void **s) {
    (void)s;
    kv_model m = small(1);
    kv_plan pl[3];
    kv_plan_defaults(&pl[0]);
    pl[0].batch = 2, pl[0].prompt = 20, pl[0].gen = 4, pl[0].policy = KV_POL_OFFLOAD;
    pl[1] = pl[0], pl[1].policy = KV_POL_KVPR, pl[1].split = 7;
    pl[2] = pl[0], pl[2].policy = KV_POL_GPU;
    eng_session *se;
    if (eng_session_open(&eng_host_backend, 0, &m, pl, 3, 5, &se)) fail_msg("%s", kv_errmsg());
    eng_result a, b, c;
    if (eng_session_run(se, &pl[1], &a) || eng_session_run(se, &pl[2], &b) || eng_session_run(se, &pl[1], &c)) fail_msg("%s", kv_errmsg());
    assert_int_equal(a.nhidden, c.nhidden);
    for (int i = 0; i < a.nhidden; i++) assert_true(a.hidden[i] == c.hidden[i]);
    assert_true(a.warm_s > 0 && a.nspans > 0);
    eng_result alone;
    if (eng_run(&eng_host_backend, 0, &m, &pl[1], 5, &alone)) fail_msg("%s", kv_errmsg());
    for (int i = 0; i < a.nhidden; i++) assert_true(a.hidden[i] == alone.hidden[i]);
    double e = 0, mx = 0;
    for (int i = 0; i < a.nhidden; i++) e = fmax(e, fabs(a.hidden[i] - b.hidden[i])), mx = fmax(mx, fabs(b.hidden[i]));
    assert_true(e / mx < 2e-2); /* kvpr and gpu agree within fp16 rounding */
    eng_result_free(&c);
    kv_plan other = pl[0];
    other.batch = 3;
    assert_int_equal(eng_session_run(se, &other, &c), KV_EINVAL);
    eng_result_free(&a), eng_result_free(&b), eng_result_free(&alone);
    eng_session_close(se);
    pl[2].prompt = 21;
    assert_int_equal(eng_session_open(&eng_host_backend, 0, &m, pl, 3, 5, &se), KV_EINVAL);
}

/* What host memory is left: MemAvailable, or a cgroup's limit less its usage when that is lower. */
static void t_sysmem(void **s) {
    (void)s;
    const char *mi = "MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable:     2000 kB\n";
    int byc;
    assert_rel(eng_sysmem_parse(mi, NULL, NULL, &byc), 2048000.0, 1e-12);
    assert_int_equal(byc, 0);
    assert_rel(eng_sysmem_parse(mi, "1500000\n", "1000000\n", &byc), 500000.0, 1e-12); /* v2 limit binds */
    assert_int_equal(byc, 1);
    assert_rel(eng_sysmem_parse(mi, "max\n", "1000000\n", &byc), 2048000.0, 1e-12);     /* no limit */
    assert_rel(eng_sysmem_parse(mi, "9223372036854771712\n", "5\n", &byc), 2048000.0, 1e-12); /* v1: no limit */
    assert_rel(eng_sysmem_parse(mi, "100\n", "300\n", &byc), 0.0, 0);                  /* over the limit */
    assert_true(eng_sysmem_parse(NULL, NULL, NULL, NULL) < 0);
    assert_true(eng_sysmem_available(NULL, 0) > 0);
}

/* A plan whose host side (K/V cache and activations, 58 GiB, plus the host backend's device
 * buffers, which are host memory too) exceeds what is available fails with one line before
 * anything is allocated; its device side alone (4.8 GiB) would pass the old check. Under a 12 GiB
 * address-space limit a missing check fails the allocation instead of taking the machine's memory. */
static void t_host_memory_check(void **s) {
    (void)s;
    char out[4096];
    if (eng_sysmem_available(NULL, 0) > 50e9) {
        print_message("  (this machine has room for the 63 GiB plan: nothing to refuse)\n");
        test_skip();
    }
#ifdef __SANITIZE_ADDRESS__
    const char *lim = ""; /* ASan reserves terabytes of address space: no ulimit -v */
#else
    const char *lim = "ulimit -v 12000000; ";
#endif
    int rc = run_cmd(out, sizeof out, "%s%s/kvpr-engine run --backend host --model OPT-125M --batch 64 --prompt 16384 --gen 4 --prefetch 1 "
                                      "--policy offload --no-db",
                     lim, KVPR_BUILD_DIR);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "GiB of host memory"));
    assert_non_null(strstr(out, "available ("));
    assert_non_null(strchr(out, '\n'));
    assert_int_equal(nlines(out), 1);
}

/* The results database is checked before measuring (KVPR_DB_TIMEOUT_MS bounds the wait for a
 * lock), and a run measured when the write then fails is kept in a side database. */
static void t_engine_db(void **s) {
    (void)s;
    char db[512], out[4096], side[600];
    snprintf(db, sizeof db, "%s/engine-lock.db", tmp_dir());
    unlink(db);
    const char *cmd = "%s/kvpr-engine run --backend host --model OPT-125M --batch 2 --prompt 16 --gen 3 --layers 1 --policy offload --db %s";
    assert_int_equal(run_cmd(out, sizeof out, cmd, KVPR_BUILD_DIR, db), 0);
    sqlite3 *h;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
    int rc = run_cmd(out, sizeof out, "KVPR_DB_TIMEOUT_MS=100 %s/kvpr-engine run --backend host --model OPT-125M --batch 2 --prompt 16 "
                                      "--gen 3 --layers 1 --policy offload --db %s",
                     KVPR_BUILD_DIR, db);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "not writable, nothing measured"));
    assert_non_null(strstr(out, "locked"));
    assert_null(strstr(out, "decode")); /* refused before measuring */
    sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
    assert_int_equal(run_cmd(out, sizeof out, "KVPR_DB_TIMEOUT_MS=abc %s/kvpr-engine run --backend host --model OPT-125M --batch 2 "
                                              "--prompt 16 --gen 3 --layers 1 --policy offload --db %s",
                             KVPR_BUILD_DIR, db),
                     2);
    assert_non_null(strstr(out, "KVPR_DB_TIMEOUT_MS"));
    /* writable at the check, refusing the spans after the run (one span per run at most): the runs
     * go to a side database */
    assert_int_equal(sqlite3_exec(h, "DELETE FROM spans; CREATE UNIQUE INDEX one_span_per_run ON spans(run_id)", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(h);
    rc = run_cmd(out, sizeof out, "cd %s && %s/kvpr-engine run --backend host --model OPT-125M --batch 2 --prompt 16 --gen 3 "
                                  "--layers 1 --policies offload,kvpr --splits 4,8 --db %s --json 2>&1 >/dev/null",
                 tmp_dir(), KVPR_BUILD_DIR, db);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "UNIQUE constraint failed"));
    assert_non_null(strstr(out, "3 measured runs kept in "));
    assert_int_equal(nlines(out), 1);
    const char *p = strstr(out, "kept in ") + strlen("kept in ");
    size_t n = strcspn(p, " ");
    snprintf(side, sizeof side, "%.*s", (int)n, p);
    assert_int_equal(sqlite3_open(side, &h), SQLITE_OK);
    sqlite3_stmt *q;
    sqlite3_prepare_v2(h, "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM spans)", -1, &q, NULL);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 3);
    assert_true(sqlite3_column_int(q, 1) > 0);
    sqlite3_finalize(q);
    sqlite3_close(h);
    unlink(side);
}

/* run: lists of policies and splits, the one-line rule for the "no --split" note, estimates. */
static void t_engine_run_lists(void **s) {
    (void)s;
    char out[8192];
    assert_int_equal(run_cmd(out, sizeof out, "%s/kvpr-engine run --backend host --model OPT-125M --batch 2 --prompt 32 --gen 3 --layers 1 "
                                              "--policies offload,kvpr,gpu --splits 1/4,16,1/1 --no-db --json 2>/dev/null",
                             KVPR_BUILD_DIR),
                     0);
    int lines = 0;
    for (char *c = out; (c = strchr(c, '\n')); c++) lines++;
    assert_int_equal(lines, 5); /* offload, kvpr at 8, 16 and 32, gpu */
    assert_non_null(strstr(out, "\"policy\": \"kvpr\", \"split\": 8,"));
    assert_non_null(strstr(out, "\"policy\": \"kvpr\", \"split\": 32,"));
    assert_non_null(strstr(out, "\"policy\": \"gpu\""));
    assert_int_equal(run_cmd(out, sizeof out, "%s/kvpr-engine run --backend host --model OPT-125M --batch 2 --prompt 32 --gen 3 "
                                              "--policies kvpr,kvpr --no-db", KVPR_BUILD_DIR), 2);
    assert_non_null(strstr(out, "listed twice"));
    assert_int_equal(run_cmd(out, sizeof out, "%s/kvpr-engine run --backend host --model OPT-125M --batch 2 --prompt 32 --gen 3 "
                                              "--splits 3/2 --no-db", KVPR_BUILD_DIR), 2);
    assert_non_null(strstr(out, "more than the whole prompt"));
    /* no split, no profile, and then an error: the error alone, on one line */
    assert_int_equal(run_cmd(out, sizeof out, "%s/kvpr-engine run --backend host --model OPT-175B --batch 4096 --prompt 4096 --gen 3 "
                                              "--policy kvpr --no-db", KVPR_BUILD_DIR), 2);
    assert_null(strstr(out, "no --split"));
    assert_int_equal(nlines(out), 1);
    /* the same note after a run that worked */
    assert_int_equal(run_cmd(out, sizeof out, "%s/kvpr-engine run --backend host --model OPT-125M --batch 2 --prompt 32 --gen 3 --layers 1 "
                                              "--policy kvpr --no-db", KVPR_BUILD_DIR), 0);
    assert_non_null(strstr(out, "used l = 24 (3/4 of the prompt)"));
    assert_int_equal(run_cmd(out, sizeof out, "%s/kvpr-engine run --backend host --model OPT-6.7B --batch 32 --prompt 1024 --gen 8 "
                                              "--layers 4 --policies offload,kvpr --splits 1/2,1/1 --estimate h100-sxm", KVPR_BUILD_DIR), 0);
    double setup = 0, total = 0;
    const char *e = strstr(out, "set-up ");
    assert_non_null(e);
    assert_int_equal(sscanf(e, "set-up %lf s, %lf s in all predicted on h100-sxm", &setup, &total), 2);
    assert_true(setup > 0 && total > setup);
}

static void t_gpu_selftest(void **s) {
    (void)s;
    char out[1 << 14];
    /* the CUDA runtime and ASan's shadow memory need this to coexist */
    int rc = run_cmd(out, sizeof out, "ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=0 %s/kvpr-engine selftest --backend cuda", KVPR_BUILD_DIR);
    if (strstr(out, "selftest skipped") || strstr(out, "built without CUDA")) {
        print_message("  (no GPU here: %s", strchr(out, ':') ? strchr(out, ':') + 2 : out);
        test_skip();
    }
    if (rc != 0) fail_msg("GPU selftest failed:\n%s", out);
}

void group_engine(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_kernels_vs_reference), cmocka_unit_test(t_attention_split_emulation),
                                   cmocka_unit_test(t_fill),                 cmocka_unit_test(t_kvpr_equals_offload),
                                   cmocka_unit_test(t_session_same_data),    cmocka_unit_test(t_timeline_joins_simulator),
                                   cmocka_unit_test(t_sysmem),               cmocka_unit_test(t_host_memory_check),
                                   cmocka_unit_test(t_engine_db),            cmocka_unit_test(t_engine_run_lists),
                                   cmocka_unit_test(t_engine_errors),        cmocka_unit_test(t_gpu_selftest)};
    RUN_GROUP(c, "engine", t);
}
