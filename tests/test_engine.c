/* Engine: kernels against double references, the executor through the host backend (kvpr equals
 * offloading; timelines join the simulator's), its errors, and the CUDA selftest where a GPU is. */
#include <gsl/gsl_rng.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "../engine/exec.h"
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
    pl.policy = KV_POL_CPU_ATTN;
    assert_int_equal(eng_run(&eng_host_backend, 0, &m, &pl, 1, &r), KV_EINVAL);
    pl.policy = KV_POL_OFFLOAD, pl.gen = 1;
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
    const struct CMUnitTest t[] = {cmocka_unit_test(t_kernels_vs_reference), cmocka_unit_test(t_kvpr_equals_offload),
                                   cmocka_unit_test(t_timeline_joins_simulator), cmocka_unit_test(t_engine_errors),
                                   cmocka_unit_test(t_gpu_selftest)};
    RUN_GROUP(c, "engine", t);
}
