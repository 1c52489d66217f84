/* Scheduler: GLPK against brute force with the same cost model, extremes, crossover,
 * monotonicity, GQA, glpsol on the written LP, bad input, solver status. */
#include <stdio.h>
#include <stdlib.h>
#include "../hwmodel/cost.h"
#include "../sched/pipe.h"
#include "../sched/sched.h"
#include "tests.h"

static const char *MODELS[] = {"OPT-125M", "OPT-1.3B", "OPT-6.7B", "OPT-13B", "OPT-30B", "LLaMA-2-7B", "Llama-3-8B", "Mistral-7B"};
static const char *HWS[] = {"paper-a100", "a100-40gb-pcie4", "h100-sxm", "h100-pcie", "t4", "l4", "gh200", "rtx4090"};


static void t_paper_vs_oracle(void **s) {
    (void)s;
    srand(4242);
    for (int it = 0; it < 300; it++) {
        kv_model m = mdl(MODELS[rand() % 8]);
        hw_profile p = hwp(HWS[rand() % 8]);
        int b = 1 + rand() % 128, S = 1 + rand() % 4096, cap = rand() % (S + 1);
        paper_model pm;
        int comp = it % 3 == 0 ? KV_COMP_KV : KV_COMP_NONE; /* packed bytes and dequantisations too */
        paper_build_comp(&pm, &m, &p, b, S, cap, comp);
        int l;
        double obj;
        if (paper_solve(&pm, NULL, &l, &obj)) fail_msg("%s", kv_errmsg());
        double best = 1e300;
        for (int x = 0; x <= pm.lcap; x++) best = fmin(best, paper_eval(&pm, x));
        assert_rel(obj, best, 1e-7);
        assert_true(obj >= best * (1 - 1e-7));  /* never beats the oracle */
        assert_rel(paper_eval(&pm, l), best, 1e-7);
        /* closed form: the integer optimum sits next to l*, or at the cap */
        double ls = comp ? paper_lstar(&pm) : hw_paper_lstar(&p, &m, S);
        if (!comp) assert_rel(paper_lstar(&pm), ls, 1e-12);
        if (ls <= pm.lcap) assert_true(fabs(l - ls) <= 1.0 + 1e-9);
        else assert_int_equal(l, pm.lcap);
    }
}

static void random_plan(kv_plan *pl) {
    kv_plan_defaults(pl);
    pl->mode = rand() % 3 == 0 ? KV_MODE_THROUGHPUT : KV_MODE_LATENCY;
    pl->batch = 1 + rand() % 64;
    pl->nb = pl->mode == KV_MODE_THROUGHPUT ? 1 + rand() % 8 : 1;
    pl->prompt = 1 + rand() % 2048;
    pl->gen = 2 + rand() % 128;
    pl->prefetch = 1 + rand() % 3;
    pl->keep_act = rand() % 4 == 0;
}

static void t_pipelined_vs_oracle(void **s) {
    (void)s;
    srand(999);
    int solved = 0;
    for (int it = 0; it < 200; it++) {
        kv_model m = mdl(MODELS[rand() % 5]); /* OPT family: fits the CPU for most random plans */
        hw_profile p = hwp(HWS[rand() % 8]);
        kv_plan pl;
        random_plan(&pl);
        int lmax = sched_lmax(&m, &p, &pl);
        if (lmax < 0) continue;
        int T = kv_plan_steps(&pl), lref = rand() % (lmax + 1);
        pipe_model pm;
        pipe_build(&pm, &m, &p, &pl, 0, T, lmax, lref);
        int l;
        double obj;
        if (pipe_solve(&pm, NULL, &l, &obj, NULL, NULL, NULL)) fail_msg("%s", kv_errmsg());
        double best = 1e300;
        for (int x = 0; x <= lmax; x++) best = fmin(best, pipe_eval(&pm, x));
        if (fabs(obj - best) > 1e-6 * best) fail_msg("it %d: MIP %.9g, oracle %.9g (l %d, lmax %d)", it, obj, best, l, lmax);
        assert_true(obj >= best * (1 - 1e-6));
        assert_rel(pipe_eval(&pm, l), best, 1e-6);
        solved++;
    }
    assert_true(solved > 100);
}

static double plan_obj(sched_kind k, const kv_model *m, const hw_profile *p, const kv_plan *pl, int *l) {
    sched_result r;
    if (sched_plan(k, m, p, pl, NULL, &r)) fail_msg("%s", kv_errmsg());
    *l = r.split;
    double t = r.predicted_s;
    sched_result_free(&r);
    return t;
}

static void t_extremes(void **s) {
    (void)s;
    kv_model m = mdl("OPT-6.7B");
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.batch = 32, pl.prompt = 512, pl.gen = 16;
    int l;
    for (int k = 0; k < SCHED_COUNT; k++) {
        hw_profile slow_gpu = hwp("a100-40gb-pcie4");
        slow_gpu.gpu.peak_flops.value = 1e9; /* 1 GFLOP/s: recomputing never pays */
        plan_obj((sched_kind)k, &m, &slow_gpu, &pl, &l);
        assert_int_equal(l, 0);
        hw_profile slow_link = hwp("a100-40gb-pcie4");
        slow_link.link.h2d.bandwidth.value = slow_link.link.h2d.pageable.value = 1e6; /* 1 MB/s */
        plan_obj((sched_kind)k, &m, &slow_link, &pl, &l);
        assert_int_equal(l, 512); /* everything recomputed: l = s (capped at the prompt) */
    }
    /* GQA: activations cost more than the K/V they replace: l = 0 for the runtime models */
    kv_model g = mdl("Llama-3-8B");
    hw_profile a = hwp("a100-40gb-pcie4");
    plan_obj(SCHED_PIPELINED, &g, &a, &pl, &l);
    assert_int_equal(l, 0);
    sched_result r;
    assert_int_equal(sched_plan(SCHED_DYNAMIC, &g, &a, &pl, NULL, &r), KV_OK);
    for (int i = 0; i < r.nsteps; i++) assert_int_equal(r.splits[i], 0);
    assert_int_equal(r.kept_tokens, 0);
    sched_result_free(&r);
    /* the paper's formula assumes multi-head attention and (wrongly) recomputes */
    plan_obj(SCHED_PAPER, &g, &a, &pl, &l);
    assert_true(l > 0);
}

/* --compress kv in the paper's formula, by hand. OPT-1.3B (h = 2048, 32 heads of 64), batch 8:
 * activation 4096 -> 32 groups x 36 = 1152 bytes, K/V 8192 -> 64 x 36 = 2304 (x0.28125 both).
 * v_com 32 GB/s, HBM 2 TB/s:
 *   a   = 8 x 1152 / 32e9          = 0.288 us per token
 *   k   = 8 x 2304 / 32e9          = 0.576 us
 *   dq_act = 8 x (1152 + 4096) / 2e12 = 0.020992 us (added to r)
 *   dkv = 8 x (2304 + 8192) / 2e12 = 0.041984 us per streamed token
 * v_gpu chosen so that the recompute is 1.323008 us per token: r = 1.344, and r l = k (s - l) at
 * l = 300 of s = 1000: l* = 0.576 x 1000 / (0.576 + 1.344) = 300,
 * T(300) = 0.288 x 300 + 1.344 x 300 + 0.041984 x 700 = 518.9888 us. */
static void t_paper_compressed(void **s) {
    (void)s;
    kv_model m = mdl("OPT-1.3B");
    hw_profile p = hwp("paper-a100");
    p.link.h2d.bandwidth.value = 32e9;
    p.gpu.hbm_bw.value = 2e12;
    p.gpu.peak_flops.value = 4.0 * 8 * 2048 * 2048 / 1.323008e-6;
    paper_model pm;
    paper_build_comp(&pm, &m, &p, 8, 1000, 1000, KV_COMP_KV);
    assert_rel(pm.a, 0.288, 1e-12);
    assert_rel(pm.k, 0.576, 1e-12);
    assert_rel(pm.r, 1.344, 1e-12);
    assert_rel(pm.dkv, 0.041984, 1e-12);
    assert_rel(paper_lstar(&pm), 300, 1e-9);
    int l;
    double obj;
    assert_int_equal(paper_solve(&pm, NULL, &l, &obj), KV_OK);
    assert_int_equal(l, 300);
    assert_rel(obj, 518.9888, 1e-9);
    assert_rel(paper_eval(&pm, 0), (0.576 + 0.041984) * 1000, 1e-12);
    /* --compress weights: the paper's formula has no weight term, so nothing moves */
    paper_model pw, p0;
    paper_build_comp(&pw, &m, &p, 8, 1000, 1000, KV_COMP_W);
    paper_build(&p0, &m, &p, 8, 1000, 1000);
    assert_true(pw.a == p0.a && pw.k == p0.k && pw.r == p0.r && pw.dkv == 0 && p0.dkv == 0);
    /* the scheduler: the split and the closed form are the packed ones, the fp16 split is larger */
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.mode = KV_MODE_THROUGHPUT, pl.batch = 32, pl.nb = 8, pl.prompt = 512, pl.gen = 32;
    kv_model o = mdl("OPT-13B");
    hw_profile a = hwp("a100-40gb-pcie4");
    sched_result r0, rc;
    assert_int_equal(sched_plan(SCHED_PAPER, &o, &a, &pl, NULL, &r0), KV_OK);
    pl.compress = KV_COMP_KV;
    assert_int_equal(sched_plan(SCHED_PAPER, &o, &a, &pl, NULL, &rc), KV_OK);
    paper_model q;
    paper_build_comp(&q, &o, &a, 256, 544, rc.lmax, KV_COMP_KV);
    assert_rel(rc.closed_form, paper_lstar(&q), 1e-12);
    assert_true(fabs(rc.split - rc.closed_form) <= 1.0);
    assert_true(rc.split < r0.split);
    /* the model time is the per-step formula summed over the 31 steps of every layer */
    double want = 0;
    for (int t = 0; t < 31; t++) {
        paper_build_comp(&q, &o, &a, 256, 512 + t, 512 + t, KV_COMP_KV);
        want += o.n_layers * paper_eval(&q, rc.split) / 1e6;
    }
    assert_rel(sched_model_time(SCHED_PAPER, &o, &a, &pl, rc.split), want, 1e-12);
    sched_result_free(&r0);
    sched_result_free(&rc);
}

static void t_crossover(void **s) {
    (void)s;
    /* choose v_gpu so that t_rec = t_kv exactly at l = 300 of s = 1000: r*300 = k*700 */
    kv_model m = mdl("OPT-1.3B");
    hw_profile p = hwp("paper-a100");
    paper_model pm;
    paper_build(&pm, &m, &p, 8, 1000, 1000);
    double r_want = pm.k * 700 / 300;
    p.gpu.peak_flops.value *= pm.r / r_want;
    paper_build(&pm, &m, &p, 8, 1000, 1000);
    assert_rel(pm.r * 300, pm.k * 700, 1e-12);
    assert_rel(hw_paper_lstar(&p, &m, 1000), 300, 1e-9);
    int l;
    double obj;
    assert_int_equal(paper_solve(&pm, NULL, &l, &obj), KV_OK);
    assert_int_equal(l, 300);
    assert_rel(obj, pm.a * 300 + pm.r * 300, 1e-9);
}

static void t_monotone(void **s) {
    (void)s;
    srand(31337);
    for (int it = 0; it < 60; it++) {
        kv_model m = mdl(MODELS[rand() % 5]);
        hw_profile p = hwp(HWS[rand() % 8]);
        kv_plan pl;
        random_plan(&pl);
        pl.gen = 2 + rand() % 16;
        if (sched_lmax(&m, &p, &pl) < 0) continue;
        for (int k = 0; k < SCHED_COUNT; k++) {
            int l;
            double base = plan_obj((sched_kind)k, &m, &p, &pl, &l);
            hw_profile fast_link = p, fast_gpu = p;
            fast_link.link.h2d.bandwidth.value *= 1.5;
            fast_link.link.h2d.pageable.value *= 1.5;
            fast_gpu.gpu.peak_flops.value *= 1.5;
            assert_true(plan_obj((sched_kind)k, &m, &fast_link, &pl, &l) <= base * (1 + 1e-9));
            assert_true(plan_obj((sched_kind)k, &m, &fast_gpu, &pl, &l) <= base * (1 + 1e-9));
        }
    }
}

static double glpsol_obj(const char *lp) {
    char out[1 << 14], cmd[1200];
    snprintf(cmd, sizeof cmd, "glpsol --lp %s -o %s.sol >/dev/null && grep '^Objective:' %s.sol", lp, lp, lp);
    if (run_cmd(out, sizeof out, "%s", cmd) != 0) fail_msg("glpsol failed: %s", out);
    char *e = strchr(out, '=');
    assert_non_null(e);
    return atof(e + 1);
}

static void t_glpsol_agrees(void **s) {
    (void)s;
    char f[512];
    kv_model m = mdl("OPT-13B");
    hw_profile p = hwp("a100-40gb-pcie4");
    paper_model pm;
    paper_build(&pm, &m, &p, 64, 640, 512);
    int l;
    double obj;
    snprintf(f, sizeof f, "%s/paper.lp", tmp_dir());
    assert_int_equal(paper_solve(&pm, f, &l, &obj), KV_OK);
    assert_rel(glpsol_obj(f), obj, 1e-5);
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.batch = 32, pl.prompt = 700, pl.gen = 40, pl.mode = KV_MODE_THROUGHPUT, pl.nb = 4;
    pipe_model pp;
    pipe_build(&pp, &m, &p, &pl, 0, 39, sched_lmax(&m, &p, &pl), 400);
    snprintf(f, sizeof f, "%s/pipe.lp", tmp_dir());
    assert_int_equal(pipe_solve(&pp, f, &l, &obj, NULL, NULL, NULL), KV_OK);
    assert_rel(glpsol_obj(f), obj, 1e-5);
}

static void t_bad_input(void **s) {
    (void)s;
    kv_model m = mdl("OPT-6.7B");
    hw_profile p = hwp("a100-40gb-pcie4");
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.batch = 8, pl.prompt = 0, pl.gen = 8;
    sched_result r;
    assert_int_equal(sched_plan(SCHED_PAPER, &m, &p, &pl, NULL, &r), KV_EINVAL);
    assert_non_null(strstr(kv_errmsg(), "prompt must be in"));
    pl.prompt = 64, pl.batch = 0;
    assert_int_equal(sched_plan(SCHED_PIPELINED, &m, &p, &pl, NULL, &r), KV_EINVAL);
    assert_non_null(strstr(kv_errmsg(), "batch must be in"));
    kv_model big = mdl("OPT-175B");
    pl.batch = 1;
    assert_int_equal(sched_plan(SCHED_PIPELINED, &big, &p, &pl, NULL, &r), KV_ENOFIT);
    assert_non_null(strstr(kv_errmsg(), "does not fit in GPU memory"));
    assert_non_null(strstr(kv_errmsg(), "(weights 32")); /* 325 GiB of weights: named */
    hw_profile small = p;
    small.cpu.mem_bytes.value = 1e9; /* 1 GB of DRAM: the KV cache does not fit */
    pl.batch = 64, pl.prompt = 1024;
    assert_int_equal(sched_plan(SCHED_DYNAMIC, &m, &small, &pl, NULL, &r), KV_ENOFIT);
    assert_non_null(strstr(kv_errmsg(), "CPU memory"));
    /* CPU memory that holds the KV cache but only some activations bounds l */
    small.cpu.mem_bytes.value = 64.0 * 1032 * 16384 * 32 + 64.0 * 100 * 8192 * 32;
    pl.gen = 8;
    assert_int_equal(sched_plan(SCHED_PIPELINED, &m, &small, &pl, NULL, &r), KV_OK);
    assert_int_equal(r.lmax, 100);
    assert_true(r.split <= 100);
    sched_result_free(&r);
    /* GPU buffers that cannot fit */
    hw_profile tiny = p;
    tiny.gpu.mem_bytes.value = 13.0 * 1073741824.0;
    assert_int_equal(sched_plan(SCHED_PAPER, &m, &tiny, &pl, NULL, &r), KV_ENOFIT);
    assert_non_null(strstr(kv_errmsg(), "K/V buffers"));
}

static void t_solver_status(void **s) {
    (void)s;
    /* an infeasible MIP: the only segment lies above l's bound */
    pipe_model pm;
    memset(&pm, 0, sizeof pm);
    pm.nseg = 1, pm.lo[0] = 10, pm.hi[0] = 20, pm.nb_ = 1, pm.cnt[0] = 1, pm.layers = 1, pm.nbm = 1, pm.depth = 2;
    pm.lmax = 5;
    int l;
    double obj;
    assert_int_equal(pipe_solve(&pm, NULL, &l, &obj, NULL, NULL, NULL), KV_ESOLVER);
    assert_non_null(strstr(kv_errmsg(), "infeasible"));
}

void group_sched(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_paper_vs_oracle), cmocka_unit_test(t_pipelined_vs_oracle),
                                   cmocka_unit_test(t_extremes),        cmocka_unit_test(t_crossover), cmocka_unit_test(t_paper_compressed),
                                   cmocka_unit_test(t_monotone),        cmocka_unit_test(t_glpsol_agrees),
                                   cmocka_unit_test(t_bad_input),       cmocka_unit_test(t_solver_status)};
    RUN_GROUP(c, "sched", t);
}
