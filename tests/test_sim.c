/* Simulator: known answers on hand-built graphs, the paper-model formula on random
 * configurations, invariants on random plans, memory accounting, determinism, exports. */
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../hwmodel/cost.h"
#include "../sim/sim.h"
#include "tests.h"

/* ---- hand-built graphs on the core ----------------------------------------------- */

static int32_t copy(sim_des *d, kv_resource r, double bytes, double alpha) {
    int32_t id = sim_des_task(d, r == KV_RES_H2D ? KV_OP_KV_H2D : KV_OP_KV_D2H, r == KV_RES_H2D ? KV_Q_CACHE : KV_Q_STORE, 0, 0, 0);
    sim_task *t = sim_des_get(d, id);
    t->bytes = t->work = bytes;
    t->fixed_s = alpha;
    return id;
}
static int32_t comp(sim_des *d, double s) {
    int32_t id = sim_des_task(d, KV_OP_RECOMPUTE, KV_Q_COMPUTE, 0, 0, 0);
    sim_des_get(d, id)->fixed_s = s;
    return id;
}
static double run(sim_des *d) {
    sim_des_stats st;
    if (sim_des_run(d, &st) != KV_OK) fail_msg("%s", kv_errmsg());
    return sim_to_s(st.makespan);
}

/* Completions at the same time run in the order they were scheduled (time, then insertion order),
 * a re-rated copy's at the time of its last re-rating: the task that waits for both names the
 * second as the one that let it start. */
static void t_tie_order(void **s) {
    (void)s;
    sim_des *d = sim_des_new();
    sim_link one = {1e9, 1};
    /* CPU task y (1 us) starts at 0; compute x0 (0.5 us) then x1 (0.5 us): x1 is scheduled at
     * 0.5 us and ends with y at 1 us, after y in insertion order though its queue comes first */
    sim_des_links(d, one, one);
    int32_t x0 = comp(d, 0.5e-6), x1 = comp(d, 0.5e-6);
    int32_t y = sim_des_task(d, KV_OP_ATTN, KV_Q_CPU, 0, 0, 0);
    sim_des_get(d, y)->fixed_s = 1e-6;
    int32_t w = sim_des_task(d, KV_OP_KV_D2H, KV_Q_STORE, 0, 0, 0);
    sim_des_dep(d, x1, w), sim_des_dep(d, y, w);
    (void)x0;
    run(d);
    assert_true(sim_des_get(d, x1)->end == sim_des_get(d, y)->end);
    assert_int_equal(sim_des_get(d, w)->crit, x1);
    /* copy c1 (2,000 B at 1 GB/s) from 0; at 1 us copy c2 (500 B) joins it on the same direction
     * (each at half rate) and compute k (1.5 us) starts; c2 ends at 2 us and c1, re-rated then,
     * ends at 2.5 us with k: k was scheduled at 1 us, c1 last at 2 us, so k's completion runs first */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    int32_t c1 = copy(d, KV_RES_H2D, 2000, 0), p = comp(d, 1e-6), k = comp(d, 1.5e-6);
    int32_t c2 = sim_des_task(d, KV_OP_W_H2D, KV_Q_WEIGHT, 0, 0, 0);
    sim_des_get(d, c2)->bytes = sim_des_get(d, c2)->work = 500;
    sim_des_dep(d, p, c2);
    int32_t w2 = sim_des_task(d, KV_OP_KV_D2H, KV_Q_STORE, 0, 0, 0);
    sim_des_dep(d, k, w2), sim_des_dep(d, c1, w2);
    run(d);
    assert_true(sim_des_get(d, c2)->end == (sim_time)2000000000);
    assert_true(sim_des_get(d, c1)->end == (sim_time)2500000000 && sim_des_get(d, k)->end == (sim_time)2500000000);
    assert_int_equal(sim_des_get(d, w2)->crit, c1);
    sim_des_free(d);
}

static void t_known_answers(void **s) {
    (void)s;
    sim_des *d = sim_des_new();
    sim_link one = {1e9, 1}, half = {1e9, 0.5};
    /* pure transfer: 1 GB at 1 GB/s */
    sim_des_links(d, one, one);
    copy(d, KV_RES_H2D, 1e9, 0);
    assert_rel(run(d), 1.0, 1e-12);
    /* pure compute */
    sim_des_reset(d);
    comp(d, 0.5);
    assert_rel(run(d), 0.5, 1e-12);
    /* perfect overlap: independent transfer and compute */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    copy(d, KV_RES_H2D, 1e9, 0);
    comp(d, 1.0);
    assert_rel(run(d), 1.0, 1e-12);
    /* no overlap: compute needs the transfer */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    int32_t a = copy(d, KV_RES_H2D, 1e9, 0), b = comp(d, 1.0);
    sim_des_dep(d, a, b);
    assert_rel(run(d), 2.0, 1e-12);
    assert_int_equal(sim_des_get(d, b)->crit, a);
    /* per-copy overhead: 1 ms then 0.25 GB */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    copy(d, KV_RES_H2D, 0.25e9, 1e-3);
    assert_rel(run(d), 0.251, 1e-12);
    /* two copies on one direction share it: back to back */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    copy(d, KV_RES_H2D, 1e9, 0);
    copy(d, KV_RES_H2D, 1e9, 0);
    assert_rel(run(d), 2.0, 1e-12);
    /* both directions, coupled: each runs at half rate while the other runs */
    sim_des_reset(d);
    sim_des_links(d, half, half);
    copy(d, KV_RES_H2D, 1e9, 0);
    copy(d, KV_RES_D2H, 1e9, 0);
    assert_rel(run(d), 2.0, 1e-12);
    /* asymmetric coupling, re-rated mid-flight: D2H (unaffected) 0.5 GB ends at 0.5 s; H2D moved
     * 0.25 GB by then at half rate, the remaining 0.75 GB at full rate ends at 1.25 s */
    sim_des_reset(d);
    sim_des_links(d, half, one);
    int32_t h = copy(d, KV_RES_H2D, 1e9, 0), dd = copy(d, KV_RES_D2H, 0.5e9, 0);
    assert_rel(run(d), 1.25, 1e-12);
    assert_rel(sim_to_s(sim_des_get(d, dd)->end), 0.5, 1e-12);
    assert_rel(sim_to_s(sim_des_get(d, h)->end), 1.25, 1e-12);
    /* a copy that starts while the other direction is in its overhead phase is slowed from the start */
    sim_des_reset(d);
    sim_des_links(d, half, half);
    copy(d, KV_RES_D2H, 0.5e9, 0.5);   /* alpha 0.5 s, then 0.5 GB */
    copy(d, KV_RES_H2D, 0.25e9, 0);    /* 0.25 GB at half rate: 0.5 s */
    /* D2H: the H2D copy ends at 0.5 s, exactly as D2H's bytes start: D2H runs alone: 1.0 s */
    assert_rel(run(d), 1.0, 1e-12);
    sim_des_free(d);
}

static void t_program_order(void **s) {
    (void)s;
    sim_des *d = sim_des_new();
    sim_link one = {1e9, 1};
    sim_des_links(d, one, one);
    /* GPU runs A (waits for a 1 s copy) before B (ready at 0): in-order, as a CUDA stream */
    int32_t c = copy(d, KV_RES_H2D, 1e9, 0), A = comp(d, 0.5), B = comp(d, 0.25);
    sim_des_dep(d, c, A);
    assert_rel(run(d), 1.75, 1e-12);
    assert_true(sim_des_get(d, B)->start == sim_des_get(d, A)->end);
    /* a cycle leaves tasks unrun: reported, not hung */
    sim_des_reset(d);
    int32_t x = comp(d, 1), y = comp(d, 1);
    sim_des_dep(d, y, x);
    (void)x;
    sim_des_stats st;
    assert_int_equal(sim_des_run(d, &st), KV_EINVAL);
    assert_non_null(strstr(kv_errmsg(), "never ran"));
    sim_des_free(d);
}


/* ---- whole plans ------------------------------------------------------------------ */


static void t_paper_formula(void **s) {
    (void)s;
    const char *models[] = {"OPT-125M", "OPT-1.3B", "OPT-6.7B", "OPT-13B", "OPT-30B", "LLaMA-2-7B", "Llama-3-8B"};
    const char *hws[] = {"paper-a100", "a100-40gb-pcie4", "h100-sxm", "t4", "gh200"};
    srand(12345);
    sim_ctx *sx = sim_new();
    for (int it = 0; it < 200; it++) {
        kv_model m = mdl(models[rand() % 7]);
        hw_profile p = hwp(hws[rand() % 5]);
        kv_plan pl;
        kv_plan_defaults(&pl);
        pl.paper_model = 1;
        pl.batch = 1 + rand() % 64;
        pl.prompt = 16 + rand() % 2048;
        pl.gen = 2 + rand() % 6;
        pl.split = rand() % (pl.prompt + 1);
        pl.layers = 1 + rand() % 4;
        pl.policy = rand() % 5 == 0 ? KV_POL_OFFLOAD : KV_POL_KVPR;
        if (pl.policy == KV_POL_OFFLOAD) pl.split = -1;
        pl.compress = it % 3 == 0 ? (it % 2 ? KV_COMP_KV : KV_COMP_BOTH) : KV_COMP_NONE;
        sim_result r;
        if (sim_run(sx, &m, &p, &pl, &r)) fail_msg("%s", kv_errmsg());
        double want = 0;
        for (int t = 0; t < pl.gen - 1; t++) {
            int l = kv_plan_split_at(&pl, t), sc = pl.prompt + t;
            if (!pl.compress) {
                want += pl.layers * hw_paper_layer(&p, &m, pl.batch, sc, l).total;
                continue;
            }
            /* 4-bit: 36 bytes per 64 values; the packed copies, then the dequantisations at the
             * datasheet HBM rate (read packed, write fp16): a l + max(r l, k (s - l)) + dkv (s - l) */
            double b = pl.batch, h = m.hidden, pe = 2, vcom = p.link.h2d.bandwidth.value, hbm = p.gpu.hbm_bw.value;
            double ra = ceil(h / 64) * 36 / (h * pe), rk = ceil(m.head_dim / 64.0) * 36 / (m.head_dim * pe);
            double t_act = b * l * h * pe * ra / vcom, t_kv = 2 * b * (sc - l) * h * pe * rk / vcom;
            double t_rec = 4 * b * l * h * h / p.gpu.peak_flops.value + b * l * h * pe * (ra + 1) / hbm;
            double dkv = 2 * b * (sc - l) * h * pe * (rk + 1) / hbm;
            want += pl.layers * (t_act + fmax(t_rec, t_kv) + dkv);
        }
        assert_rel(r.decode_s, want, 1e-9);
    }
    sim_free(sx);
}

static void t_two_layer_by_hand(void **s) {
    (void)s;
    /* paper-a100, OPT-125M (h 768), b 1, s 1000, l 600, two layers, one step:
     * t_act = 600*768*2/32e9 = 28.8 us, t_kv = 2*400*768*2/32e9 = 38.4 us, t_rec = 4*600*768^2/312e12 */
    kv_model m = mdl("OPT-125M");
    hw_profile p = hwp("paper-a100");
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.paper_model = 1, pl.batch = 1, pl.prompt = 1000, pl.gen = 2, pl.split = 600, pl.layers = 2;
    sim_ctx *sx = sim_new();
    sim_result r;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_OK);
    assert_rel(r.decode_s, 2 * (28.8e-6 + 38.4e-6), 1e-12);
    /* recompute faster than the K/V transfer: kv is on the critical path, recompute not */
    assert_rel(r.crit_s[KV_OP_KV_H2D], 2 * 38.4e-6, 1e-12);
    assert_true(r.crit_s[KV_OP_RECOMPUTE] == 0);
    assert_rel(r.op_s[KV_OP_RECOMPUTE], 2 * 4.0 * 600 * 768.0 * 768 / 312e12, 1e-9); /* femtosecond rounding */
    /* offload: 2 * 2*1000*768*2/32e9 = 192 us */
    pl.policy = KV_POL_OFFLOAD;
    pl.split = -1;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_OK);
    assert_rel(r.decode_s, 2 * 96e-6, 1e-12);
    /* with prefetch (not the paper model) and a link-bound run, the two layers' K/V stream back to
     * back: decode = 2 copies + what follows the last copy (attention and ffn of layer 1, and the
     * LM head); decode only, so that no load is prefetched during the prompt pass */
    pl.paper_model = 0, pl.no_prefill = 1;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_OK);
    sim_des *d = sim_last_des(sx);
    double last_kv_end = 0, tail = 0;
    for (int32_t i = 0; i < sim_des_count(d); i++) {
        sim_task *t = sim_des_get(d, i);
        if (t->op == KV_OP_KV_H2D && sim_to_s(t->end) > last_kv_end) last_kv_end = sim_to_s(t->end);
    }
    assert_rel(last_kv_end, 2 * 96e-6, 1e-12);
    for (int32_t i = 0; i < sim_des_count(d); i++) {
        sim_task *t = sim_des_get(d, i);
        if ((t->layer == 1 && (t->op == KV_OP_ATTN || t->op == KV_OP_FFN)) || t->op == KV_OP_HEAD) tail += t->fixed_s;
    }
    assert_rel(r.decode_s, last_kv_end + tail, 1e-9);
    sim_free(sx);
}

static void check_invariants(sim_des *d, const sim_result *r) {
    int32_t n = sim_des_count(d);
    double sum = 0, busy[KV_Q_COUNT] = {0};
    sim_time last_end[KV_Q_COUNT];
    for (int k = 0; k < KV_Q_COUNT; k++) last_end[k] = 0;
    sim_time t0 = sim_from_s(r->prefill_s);
    for (int32_t i = 0; i < n; i++) {
        sim_task *t = sim_des_get(d, i);
        assert_true(t->start >= 0 && t->end >= t->start); /* ran, once */
        assert_true(t->res == kv_queue_res((kv_queue)t->queue));
        /* after the first token, per queue */
        sim_time a = t->start > t0 ? t->start : t0, b = t->end;
        if (b > a) sum += sim_to_s(b - a), busy[t->queue] += sim_to_s(b - a);
        int32_t ns;
        const int32_t *succ = sim_des_succ(d, i, &ns);
        for (int32_t k = 0; k < ns; k++) assert_true(sim_des_get(d, succ[k])->start >= t->end);
    }
    /* program order on every queue: tasks in creation order never overlap */
    for (int32_t i = 0; i < n; i++) {
        sim_task *t = sim_des_get(d, i);
        assert_true(t->start >= last_end[t->queue]);
        last_end[t->queue] = t->end;
    }
    for (int k = 0; k < KV_Q_COUNT; k++) assert_true(r->decode_s >= busy[k] * (1 - 1e-12));
    for (int k = 0; k < KV_RES_COUNT; k++) assert_true(r->util[k] >= 0 && r->util[k] <= 1 + 1e-12);
    assert_true(r->decode_s <= sum * (1 + 1e-12));
    assert_true(r->crit_wait_s < 1e-12);
    double cs = 0;
    for (int k = 0; k < KV_OP_COUNT; k++) cs += r->crit_s[k];
    /* the critical path covers the decode phase: from the first token (or a task that began
     * before it) to the end */
    assert_true(cs >= r->decode_s * (1 - 1e-9));
    assert_true(cs <= r->decode_s + r->prefill_s + 1e-12);
}

static void t_invariants(void **s) {
    (void)s;
    const char *models[] = {"OPT-125M", "OPT-1.3B", "OPT-6.7B", "Llama-3-8B", "Mistral-7B"};
    const char *hws[] = {"a100-40gb-pcie4", "h100-pcie", "t4", "l4", "gh200", "rtx4090"};
    srand(777);
    sim_ctx *sx = sim_new();
    int ran = 0;
    for (int it = 0; it < 150; it++) {
        kv_model m = mdl(models[rand() % 5]);
        hw_profile p = hwp(hws[rand() % 6]);
        kv_plan pl;
        kv_plan_defaults(&pl);
        pl.mode = rand() % 2 ? KV_MODE_THROUGHPUT : KV_MODE_LATENCY;
        pl.policy = (kv_policy)(rand() % KV_POL_COUNT);
        pl.batch = 1 + rand() % 32;
        pl.nb = pl.mode == KV_MODE_THROUGHPUT ? 1 + rand() % 4 : 1;
        pl.prompt = 8 + rand() % 512;
        pl.gen = 2 + rand() % 5;
        pl.split = pl.policy == KV_POL_KVPR ? rand() % (pl.prompt + 1) : -1;
        pl.prefetch = 1 + rand() % 3;
        pl.keep_act = rand() % 2;
        pl.wkv_first = rand() % 2;
        pl.pageable = rand() % 4 == 0;
        pl.layers = 1 + rand() % 3;
        sim_result r;
        kv_status st = sim_run(sx, &m, &p, &pl, &r);
        if (st == KV_ENOFIT) continue;
        if (st) fail_msg("%s", kv_errmsg());
        ran++;
        check_invariants(sim_last_des(sx), &r);
        if (pl.policy == KV_POL_GPU) assert_true(r.op_s[KV_OP_KV_H2D] == 0 && r.op_s[KV_OP_KV_D2H] == 0);
        if (pl.policy == KV_POL_CPU_ATTN) assert_true(r.op_s[KV_OP_CPU_ATTN] > 0 && r.op_s[KV_OP_ATTN] == 0);
    }
    assert_true(ran > 100);
    sim_free(sx);
}

static void t_policy_relations(void **s) {
    (void)s;
    kv_model m = mdl("OPT-6.7B");
    hw_profile p = hwp("a100-40gb-pcie4");
    sim_ctx *sx = sim_new();
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.batch = 16, pl.prompt = 256, pl.gen = 4, pl.layers = 4;
    sim_result a, b;
    pl.policy = KV_POL_OFFLOAD;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &a), KV_OK);
    pl.policy = KV_POL_KVPR, pl.split = 0;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &b), KV_OK);
    assert_true(a.decode_s == b.decode_s); /* kvpr at l = 0 is offloading */
    pl.split = 256;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &a), KV_OK);
    pl.policy = KV_POL_RECOMPUTE, pl.split = -1;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &b), KV_OK);
    assert_true(a.decode_s == b.decode_s); /* recompute is kvpr at l = every stored activation */
    assert_int_equal(b.split0, 256);
    /* the split never exceeds the stored activations: prompt only, unless kept */
    pl.policy = KV_POL_KVPR, pl.split = 10000;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &a), KV_EINVAL);
    pl.split = 258, pl.keep_act = 0;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &a), KV_OK);
    assert_int_equal(a.split_last, 256);
    pl.keep_act = 1;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &a), KV_OK);
    assert_int_equal(a.split_last, 258);
    /* per-step splits */
    int steps[3] = {0, 100, 200};
    pl.keep_act = 0, pl.split_steps = steps;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &a), KV_OK);
    assert_int_equal(a.split0, 0);
    assert_int_equal(a.split_last, 200);
    sim_free(sx);
}

static void t_memory_plans(void **s) {
    (void)s;
    sim_ctx *sx = sim_new();
    kv_plan pl;
    kv_plan_defaults(&pl);
    sim_result r;
    kv_model m = mdl("OPT-66B");
    hw_profile p = hwp("a100-40gb-pcie4");
    pl.batch = 1, pl.prompt = 64, pl.gen = 2, pl.policy = KV_POL_OFFLOAD;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_ENOFIT); /* 123 GiB of weights */
    assert_non_null(strstr(kv_errmsg(), "GPU memory"));
    assert_non_null(strstr(kv_errmsg(), "weights 122.")); /* names what did not fit */
    m = mdl("OPT-6.7B");
    pl.policy = KV_POL_GPU, pl.batch = 64, pl.prompt = 1024, pl.gen = 32;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_ENOFIT); /* 12.4 GiB + 33 GiB of KV */
    pl.batch = 8;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_OK);
    /* K/V buffers that do not fit are named */
    pl.policy = KV_POL_OFFLOAD, pl.batch = 512, pl.prompt = 4096, pl.gen = 2, pl.layers = 2;
    hw_profile big = p;
    big.cpu.mem_bytes.value = 1e15;
    assert_int_equal(sim_run(sx, &m, &big, &pl, &r), KV_ENOFIT);
    assert_non_null(strstr(kv_errmsg(), "K/V buffers 64.0")); /* 2 slots x 512 x 4098 x 16 KiB */
    /* CPU memory */
    pl.batch = 4096, pl.prompt = 8192, pl.gen = 2, pl.layers = 1;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_ENOFIT);
    assert_non_null(strstr(kv_errmsg(), "CPU memory"));
    /* GPU memory is the layout's buffers, as the engine allocates them: the simulated layers'
     * weights and the embeddings, `prefetch` K/V slots of the final context, working buffers */
    pl.batch = 16, pl.prompt = 512, pl.gen = 3, pl.layers = 8, pl.prefetch = 2;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_OK);
    double head = (double)kv_model_bytes_total(&m) - 32.0 * (double)kv_model_bytes_layer(&m);
    assert_rel(r.layout.gpu_weights, 8.0 * (double)kv_model_bytes_layer(&m) + head, 1e-15);
    assert_rel(r.layout.gpu_kvslots, 2 * 16.0 * 515 * 16384, 1e-15);
    assert_rel(r.mem_peak, r.layout.gpu_weights + r.layout.gpu_kvslots + r.layout.gpu_work + r.layout.gpu_prefill, 1e-12);
    sim_free(sx);
}

static void t_determinism_and_exports(void **s) {
    (void)s;
    kv_model m = mdl("OPT-1.3B");
    hw_profile p = hwp("a100-40gb-pcie4");
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.mode = KV_MODE_THROUGHPUT, pl.batch = 8, pl.nb = 3, pl.prompt = 200, pl.gen = 4, pl.split = 120, pl.wkv_first = 1;
    char f1[512], f2[512], dbp[512];
    snprintf(f1, sizeof f1, "%s/t1.json", tmp_dir());
    snprintf(f2, sizeof f2, "%s/t2.json", tmp_dir());
    snprintf(dbp, sizeof dbp, "%s/sim.db", tmp_dir());
    sim_ctx *a = sim_new(), *b = sim_new();
    sim_result ra, rb;
    assert_int_equal(sim_run(a, &m, &p, &pl, &ra), KV_OK);
    assert_int_equal(sim_write_trace(a, f1, "t", -1, 1 << 30), KV_OK);
    /* a context reused after another run gives the same answer as a fresh one */
    kv_plan other = pl;
    other.nb = 1, other.mode = KV_MODE_LATENCY;
    assert_int_equal(sim_run(b, &m, &p, &other, &rb), KV_OK);
    assert_int_equal(sim_run(b, &m, &p, &pl, &rb), KV_OK);
    assert_int_equal(sim_write_trace(b, f2, "t", -1, 1 << 30), KV_OK);
    char *t1 = read_text(f1), *t2 = read_text(f2);
    assert_non_null(t1);
    assert_non_null(t2);
    assert_string_equal(t1, t2);
    char *j1 = sim_result_json(&ra, &m, &p, &pl), *j2 = sim_result_json(&rb, &m, &p, &pl);
    assert_string_equal(j1, j2);
    free(j1), free(j2), free(t2);
    /* the trace is valid JSON with one X event per task */
    json_error_t je;
    json_t *tr = json_loads(t1, 0, &je);
    free(t1);
    assert_non_null(tr);
    size_t nx = 0, i;
    json_t *e;
    /* spans of one queue never overlap in the trace's own decimal times (ends are rounded as end
     * points, not as start + rounded duration), and every queue is named */
    long long last_end[KV_Q_COUNT] = {0}; /* picoseconds, from the printed decimals */
    int named = 0;
    json_array_foreach(json_object_get(tr, "traceEvents"), i, e) {
        const char *ph = json_string_value(json_object_get(e, "ph"));
        if (!strcmp(ph, "M")) named += !strcmp(json_string_value(json_object_get(e, "name")), "thread_name");
        if (strcmp(ph, "X")) continue;
        nx++;
        int tid = (int)json_integer_value(json_object_get(e, "tid"));
        long long ts = llround(1e6 * json_number_value(json_object_get(e, "ts")));
        long long du = llround(1e6 * json_number_value(json_object_get(e, "dur")));
        assert_true(tid >= 0 && tid < KV_Q_COUNT);
        if (!(ts >= last_end[tid])) fail_msg("queue %d: span at %lld ps starts before the last one ended (%lld ps)", tid, ts, last_end[tid]);
        last_end[tid] = ts + du;
    }
    json_decref(tr);
    assert_int_equal(nx, ra.tasks);
    assert_int_equal(named, KV_Q_COUNT);
    /* a step window keeps only those steps' spans */
    assert_int_equal(sim_write_trace(a, f2, "t", 1, 2), KV_OK);
    t2 = read_text(f2);
    tr = json_loads(t2, 0, &je);
    free(t2);
    assert_non_null(tr);
    size_t nw = 0;
    json_array_foreach(json_object_get(tr, "traceEvents"), i, e) {
        if (strcmp(json_string_value(json_object_get(e, "ph")), "X")) continue;
        int st = (int)json_integer_value(json_object_get(json_object_get(e, "args"), "step"));
        assert_true(st >= 1 && st <= 2);
        nw++;
    }
    json_decref(tr);
    assert_true(nw > 0 && nw < nx);
    /* results.db: one run, every span, the metrics */
    kv_db *db;
    unlink(dbp);
    assert_int_equal(db_open(dbp, 1000, &db), KV_OK);
    int64_t id;
    assert_int_equal(sim_write_db(a, db, &m, &p, &pl, &ra, "k", 1, &id), KV_OK);
    sqlite3_stmt *q;
    sqlite3_prepare_v2(db_handle(db), "SELECT (SELECT count(*) FROM spans), (SELECT value FROM metrics WHERE name='decode_s'),"
                                      " (SELECT max(end_ps) FROM spans)", -1, &q, NULL);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int64(q, 0), ra.tasks);
    assert_rel(sqlite3_column_double(q, 1), ra.decode_s, 1e-12);
    assert_rel((double)sqlite3_column_int64(q, 2) * 1e-12, ra.prefill_s + ra.decode_s, 1e-9);
    sqlite3_finalize(q);
    db_close(db);
    sim_free(a);
    sim_free(b);
}

/* Two results equal to the bit (every number the JSON, the database and the report take). */
static void same_result(const sim_result *a, const sim_result *b) {
    assert_memory_equal(&a->prefill_s, &b->prefill_s, sizeof a->prefill_s);
    assert_memory_equal(&a->decode_s, &b->decode_s, sizeof a->decode_s);
    assert_memory_equal(a->prefill_op_s, b->prefill_op_s, sizeof a->prefill_op_s);
    assert_memory_equal(a->op_s, b->op_s, sizeof a->op_s);
    assert_memory_equal(a->util, b->util, sizeof a->util);
    assert_memory_equal(a->crit_s, b->crit_s, sizeof a->crit_s);
    assert_memory_equal(&a->crit_wait_s, &b->crit_wait_s, sizeof a->crit_wait_s);
    assert_memory_equal(&a->gpu_idle_s, &b->gpu_idle_s, sizeof a->gpu_idle_s);
    assert_memory_equal(&a->generation_tok_s, &b->generation_tok_s, sizeof a->generation_tok_s);
    assert_int_equal(a->nsteps, b->nsteps);
    assert_memory_equal(a->step_s, b->step_s, sizeof(double) * (size_t)a->nsteps);
    assert_true(a->events == b->events && a->tasks == b->tasks && a->split0 == b->split0 && a->split_last == b->split_last);
}

/* Streaming the graph changes nothing: random plans (every policy, both modes, prefill or not,
 * compression, partial placement) give the same result to the bit with the whole graph, with the
 * default window (no run has to run again), and with windows so small that tasks come late (the
 * run notices and runs again whole). A long streamed run keeps only the tasks in flight. */
static void t_streamed_same(void **s) {
    (void)s;
    const char *models[] = {"OPT-125M", "OPT-1.3B", "OPT-6.7B", "Llama-3-8B", "Mistral-7B"};
    const char *hws[] = {"a100-40gb-pcie4", "h100-pcie", "t4", "l4", "gh200", "rtx4090"};
    srand(4242);
    sim_ctx *whole = sim_new(), *str = sim_new(), *tiny = sim_new(), *mid = sim_new();
    sim_stream(str, SIM_STREAM_ALWAYS, 0);
    sim_stream(tiny, SIM_STREAM_ALWAYS, 2);
    sim_stream(mid, SIM_STREAM_ALWAYS, 300);
    int ran = 0;
    for (int it = 0; it < 120; it++) {
        kv_model m = mdl(models[rand() % 5]);
        hw_profile p = hwp(hws[rand() % 6]);
        kv_plan pl;
        kv_plan_defaults(&pl);
        pl.mode = rand() % 2 ? KV_MODE_THROUGHPUT : KV_MODE_LATENCY;
        pl.policy = (kv_policy)(rand() % KV_POL_COUNT);
        pl.batch = 1 + rand() % 32;
        pl.nb = pl.mode == KV_MODE_THROUGHPUT ? 1 + rand() % 4 : 1;
        pl.prompt = 8 + rand() % 512;
        pl.gen = 2 + rand() % 12;
        pl.split = pl.policy == KV_POL_KVPR ? rand() % (pl.prompt + 1) : -1;
        pl.prefetch = 1 + rand() % 3;
        pl.keep_act = rand() % 2;
        pl.no_prefill = rand() % 4 == 0;
        pl.compress = rand() % 3 == 0 ? KV_COMP_KV : KV_COMP_NONE;
        pl.paper_model = rand() % 8 == 0;
        pl.layers = rand() % 2 ? 1 + rand() % 3 : 0;
        sim_result a, b, c, d;
        kv_status st = sim_run(whole, &m, &p, &pl, &a);
        if (st == KV_ENOFIT || st == KV_EINVAL) continue;
        if (st) fail_msg("%s", kv_errmsg());
        double steps[4096];
        assert_true(a.nsteps <= 4096);
        memcpy(steps, a.step_s, sizeof(double) * (size_t)a.nsteps);
        a.step_s = steps;
        assert_int_equal(sim_run(str, &m, &p, &pl, &b), KV_OK);
        same_result(&a, &b);
        assert_int_equal(sim_run(tiny, &m, &p, &pl, &c), KV_OK);
        same_result(&a, &c);
        assert_int_equal(sim_run(mid, &m, &p, &pl, &d), KV_OK);
        same_result(&a, &d);
        ran++;
    }
    assert_true(ran > 60);
    assert_int_equal(sim_stream_reruns(str), 0);
    assert_true(sim_stream_reruns(tiny) > 0);
    /* a longer run: its first tasks have left memory, and it did not run again whole */
    kv_model m = mdl("OPT-1.3B");
    hw_profile p = hwp("a100-40gb-pcie4");
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.batch = 8, pl.prompt = 256, pl.gen = 200, pl.split = 100;
    sim_result a, b;
    assert_int_equal(sim_run(whole, &m, &p, &pl, &a), KV_OK);
    double steps[256];
    memcpy(steps, a.step_s, sizeof(double) * (size_t)a.nsteps);
    a.step_s = steps;
    uint64_t before = sim_stream_reruns(str);
    assert_int_equal(sim_run(str, &m, &p, &pl, &b), KV_OK);
    same_result(&a, &b);
    assert_int_equal(sim_stream_reruns(str), before);
    assert_null(sim_des_get(sim_last_des(str), 0));
    assert_non_null(sim_des_get(sim_last_des(whole), 0));
    sim_free(whole), sim_free(str), sim_free(tiny), sim_free(mid);
}


/* Random plans for the property tests below: both modes, every option and compression, the
 * paper's model, partial placement; g says how large and how often KVPR. */
typedef struct {
    int kvpr_every;          /* every n-th plan is KVPR (1: all), the others any policy */
    int batch, nb, prompt0, prompt_span, gen;
    int layers0, layers_span, layers_odds; /* a layer count of layers0 + [0, span) one time in odds */
    int percent;             /* sometimes a partial placement */
} plan_gen;

static void rand_plan(kv_plan *pl, int it, const plan_gen *g) {
    kv_plan_defaults(pl);
    pl->mode = rand() % 2 ? KV_MODE_THROUGHPUT : KV_MODE_LATENCY;
    pl->policy = g->kvpr_every <= 1 || it % g->kvpr_every ? KV_POL_KVPR : (kv_policy)(rand() % KV_POL_COUNT);
    pl->batch = 1 + rand() % g->batch;
    pl->nb = pl->mode == KV_MODE_THROUGHPUT ? 1 + rand() % g->nb : 1;
    pl->prompt = g->prompt0 + rand() % g->prompt_span;
    pl->gen = 2 + rand() % g->gen;
    pl->split = pl->policy == KV_POL_KVPR ? rand() % (pl->prompt + 1) : -1;
    pl->prefetch = 1 + rand() % 3;
    pl->keep_act = rand() % 2;
    pl->wkv_first = rand() % 2;
    pl->pageable = rand() % 4 == 0;
    pl->no_prefill = rand() % 4 == 0;
    pl->compress = rand() % 3 == 0 ? KV_COMP_KV : rand() % 4 == 0 ? KV_COMP_BOTH : KV_COMP_NONE;
    pl->paper_model = rand() % 8 == 0;
    pl->layers = rand() % g->layers_odds == 0 ? g->layers0 + rand() % g->layers_span : 0;
    if (g->percent && rand() % 4 == 0 && !pl->paper_model) {
        pl->percent = (kv_percent){1, 50, 50, 0, 100, rand() % 2 ? 100 : 0, 0};
        pl->percent.hc = 100 - pl->percent.hg;
    }
}

/* The lower bound and the branch and bound over splits. The bound never exceeds the run's decode
 * time (random plans of every policy and option); the bounds of all splits from one graph equal
 * each split's own; the best split found without running every split is the brute force's, time
 * and split (the smallest among equals), and every split it ran has the brute force's time. */
static void t_bound_best_split(void **s) {
    (void)s;
    const char *models[] = {"OPT-125M", "OPT-1.3B", "OPT-6.7B", "Llama-3-8B", "Mistral-7B"};
    const char *hws[] = {"a100-40gb-pcie4", "h100-pcie", "t4", "l4", "gh200", "rtx4090"};
    srand(777);
    sim_ctx *x = sim_new();
    int ran = 0, kv = 0, tight = 0;
    for (int it = 0; it < 160; it++) {
        kv_model m = mdl(models[rand() % 5]);
        hw_profile p = hwp(hws[rand() % 6]);
        kv_plan pl;
        const plan_gen g = {2, 32, 4, 2, 160, 8, 1, 3, 2, 1};
        rand_plan(&pl, it, &g);
        sim_result r;
        kv_status st = sim_run(x, &m, &p, &pl, &r);
        if (st == KV_ENOFIT || st == KV_EINVAL) continue;
        if (st) fail_msg("%s", kv_errmsg());
        double lb;
        assert_int_equal(sim_decode_bound(x, &m, &p, &pl, &lb), KV_OK);
        if (!(lb <= r.decode_s)) fail_msg("plan %d: bound %.12g above the run's %.12g", it, lb, r.decode_s);
        if (lb >= 0.8 * r.decode_s) tight++;
        ran++;
        if (pl.policy != KV_POL_KVPR || kv >= 24) continue;
        /* every split of this configuration: brute force against the branch and bound */
        int lmax = pl.prompt;
        double ts[200], lbs[200], bt = 1e300, bb;
        int bl = -1, bbl, nsim;
        kv_plan q = pl;
        for (int l = 0; l <= lmax; l++) {
            q.split = l;
            double one;
            if (sim_run(x, &m, &p, &q, &r)) fail_msg("split %d: %s", l, kv_errmsg());
            ts[l] = r.decode_s;
            if (r.decode_s < bt) bt = r.decode_s, bl = l;
            assert_int_equal(sim_decode_bound(x, &m, &p, &q, &one), KV_OK);
            lbs[l] = one;
            assert_true(one <= r.decode_s);
        }
        double got[200], glb[200];
        assert_int_equal(sim_best_split(x, &m, &p, &pl, lmax, got, glb, &bbl, &bb, &nsim), KV_OK);
        assert_true(bb == bt);
        assert_int_equal(bbl, bl);
        assert_true(nsim >= 1 && nsim <= lmax + 1);
        for (int l = 0; l <= lmax; l++) {
            if (fabs(glb[l] - lbs[l]) > 1e-12 * lbs[l]) fail_msg("split %d: bound from one graph %.17g, alone %.17g", l, glb[l], lbs[l]);
            if (got[l] == got[l]) assert_true(got[l] == ts[l]);
            else assert_true(glb[l] > bt); /* not run: its bound proved it slower */
        }
        kv++;
    }
    assert_true(ran > 80 && kv >= 20);
    /* the bound is near the run on most plans, or the search would run every split */
    assert_true(tight > ran / 2);
    sim_free(x);
}


/* Fast-forward over repeating layers changes nothing: random plans (every policy, both modes,
 * prefill or not, compression, partial placement, paper model) give the same result and the same
 * timeline, task by task (start, end, the task that let it start), with it and without it, whole
 * and streamed (also with a window so small the run goes back to the whole graph); and it does
 * skip layers in most of them (or this test would prove nothing). */
static void t_fast_forward_same(void **s) {
    (void)s;
    const char *models[] = {"OPT-125M", "OPT-1.3B", "OPT-6.7B", "Llama-3-8B", "Mistral-7B", "OPT-30B"};
    const char *hws[] = {"a100-40gb-pcie4", "h100-pcie", "t4", "l4", "gh200", "rtx4090", "a100-80gb"};
    srand(9090);
    sim_ctx *off = sim_new(), *on = sim_new(), *str = sim_new(), *tiny = sim_new();
    sim_stream(str, SIM_STREAM_ALWAYS, 0);
    sim_stream(tiny, SIM_STREAM_ALWAYS, 200); /* tasks come late: the run notices, runs whole */
    int ran = 0, skipped = 0, sskipped = 0;
    for (int it = 0; it < 150; it++) {
        kv_model m = mdl(models[rand() % 6]);
        hw_profile p = hwp(hws[rand() % 7]);
        kv_plan pl;
        const plan_gen g = {3, 48, 6, 8, 700, 10, 6, 20, 3, 0};
        rand_plan(&pl, it, &g);
        sim_result a, b;
        setenv("KVPR_SIM_FF", "0", 1);
        kv_status st = sim_run(off, &m, &p, &pl, &a);
        unsetenv("KVPR_SIM_FF");
        if (st == KV_ENOFIT || st == KV_EINVAL) continue;
        if (st) fail_msg("%s", kv_errmsg());
        static double steps[4096];
        assert_true(a.nsteps <= 4096);
        memcpy(steps, a.step_s, sizeof(double) * (size_t)a.nsteps);
        a.step_s = steps;
        assert_int_equal(sim_run(on, &m, &p, &pl, &b), KV_OK);
        same_result(&a, &b);
        sim_des *x = sim_last_des(off), *y = sim_last_des(on);
        assert_int_equal(sim_des_count(x), sim_des_count(y));
        for (int32_t i = 0; i < sim_des_count(x); i++) {
            const sim_task *u = sim_des_get(x, i), *v = sim_des_get(y, i);
            if (u->start != v->start || u->end != v->end || u->crit != v->crit)
                fail_msg("plan %d task %d (%s step %d layer %d): start/end/crit differ with fast-forward", it, i, kv_op_name((kv_op)u->op), u->step,
                         u->layer);
        }
        assert_int_equal(sim_des_ff_periods(x), 0);
        if (sim_des_ff_periods(y) > 0) skipped++;
        /* streamed, fast-forwarding as the graph comes (the critical path from its kept nodes) */
        assert_int_equal(sim_run(str, &m, &p, &pl, &b), KV_OK);
        same_result(&a, &b);
        if (sim_des_ff_periods(sim_graph_des(str)) > 0) sskipped++;
        assert_int_equal(sim_run(tiny, &m, &p, &pl, &b), KV_OK);
        same_result(&a, &b);
        ran++;
    }
    assert_true(ran > 80);
    assert_true(skipped > ran / 3 && sskipped > ran / 3);
    assert_int_equal(sim_stream_reruns(str), 0);
    sim_free(off), sim_free(on), sim_free(str), sim_free(tiny);
}


/* A state that repeats every two layers (OPT-13B on an L4 in throughput mode at split 192: the
 * signature alternates between two values) is fast-forwarded in periods of two layers: the
 * same tasks' times as without fast-forward, whole and streamed, and most layers skipped (256 of
 * 600 when only one-layer periods were compared). */
static void t_fast_forward_two_layers(void **s) {
    (void)s;
    kv_model m = mdl("OPT-13B");
    hw_profile p = hwp("l4");
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.mode = KV_MODE_THROUGHPUT, pl.batch = 16, pl.nb = 8, pl.prompt = 512, pl.gen = 16;
    int splits[] = {192, 256, 200};
    sim_ctx *off = sim_new(), *on = sim_new(), *str = sim_new();
    sim_stream(str, SIM_STREAM_ALWAYS, 0);
    for (int i = 0; i < 3; i++) {
        pl.split = splits[i];
        sim_result a, b;
        setenv("KVPR_SIM_FF", "0", 1);
        assert_int_equal(sim_run(off, &m, &p, &pl, &a), KV_OK);
        unsetenv("KVPR_SIM_FF");
        static double steps[64];
        memcpy(steps, a.step_s, sizeof(double) * (size_t)a.nsteps);
        a.step_s = steps;
        assert_int_equal(sim_run(on, &m, &p, &pl, &b), KV_OK);
        same_result(&a, &b);
        sim_des *x = sim_last_des(off), *y = sim_last_des(on);
        for (int32_t t = 0; t < sim_des_count(x); t++) {
            const sim_task *u = sim_des_get(x, t), *v = sim_des_get(y, t);
            if (u->start != v->start || u->end != v->end || u->crit != v->crit) fail_msg("split %d task %d differs with fast-forward", pl.split, t);
        }
        if (i == 0) assert_true(sim_des_ff_periods(y) >= 440);
        assert_int_equal(sim_run(str, &m, &p, &pl, &b), KV_OK);
        same_result(&a, &b);
        if (i == 0) assert_true(sim_des_ff_periods(sim_graph_des(str)) >= 440);
    }
    sim_free(off), sim_free(on), sim_free(str);
}

/* A streamed run keeps the critical path's settled part as sums, not as nodes: eight times the
 * decode steps need no more nodes (without the fold the chain grows with the run: 4.1 k nodes at
 * gen 64, 33 k at gen 512), and the path's per-kind times are the whole graph's to the bit. */
static void t_crit_bounded(void **s) {
    (void)s;
    kv_model m = mdl("OPT-6.7B");
    hw_profile p = hwp("a100-40gb-pcie4");
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.batch = 8, pl.prompt = 512, pl.split = 200;
    int32_t nodes[2];
    for (int i = 0; i < 2; i++) {
        pl.gen = i ? 512 : 64;
        sim_ctx *whole = sim_new(), *str = sim_new();
        sim_stream(str, SIM_STREAM_ALWAYS, 0);
        sim_result a, b;
        assert_int_equal(sim_run(whole, &m, &p, &pl, &a), KV_OK);
        assert_int_equal(sim_run(str, &m, &p, &pl, &b), KV_OK);
        assert_memory_equal(a.crit_s, b.crit_s, sizeof a.crit_s);
        assert_true(a.crit_wait_s == b.crit_wait_s);
        double cs = 0;
        for (int k = 0; k < KV_OP_COUNT; k++) cs += b.crit_s[k];
        assert_rel(cs, b.decode_s, 1e-9); /* the path covers the decode phase */
        nodes[i] = sim_des_crit_nodes(sim_graph_des(str));
        assert_true(nodes[i] > 0);
        /* the replays' later periods made no nodes (their share added in one go), and the sums
         * above are still the whole graph's */
        assert_true(sim_des_ff_bulk(sim_graph_des(str), NULL) > 0);
        sim_free(whole), sim_free(str);
    }
    if (!(nodes[1] < 2 * nodes[0] && nodes[1] < 8192)) fail_msg("critical-path nodes: %d at gen 64, %d at gen 512", nodes[0], nodes[1]);
    /* small windows run events before the prompt pass's last task (the first token) is added:
     * what is folded then must not count once the first token's time is known */
    kv_model m2 = mdl("OPT-1.3B");
    hw_profile p2 = hwp("rtx4090");
    kv_plan_defaults(&pl);
    pl.mode = KV_MODE_THROUGHPUT, pl.policy = KV_POL_CPU_ATTN, pl.batch = 27, pl.nb = 16, pl.prompt = 197, pl.gen = 12;
    pl.split = -1, pl.prefetch = 1, pl.keep_act = 1, pl.wkv_first = 1;
    sim_ctx *whole = sim_new();
    sim_result a;
    assert_int_equal(sim_run(whole, &m2, &p2, &pl, &a), KV_OK);
    int wins[] = {50, 100, 0};
    for (int i = 0; i < 3; i++) {
        sim_ctx *str = sim_new();
        sim_stream(str, SIM_STREAM_ALWAYS, wins[i]);
        sim_result b;
        assert_int_equal(sim_run(str, &m2, &p2, &pl, &b), KV_OK);
        if (memcmp(a.crit_s, b.crit_s, sizeof a.crit_s) || a.crit_wait_s != b.crit_wait_s) fail_msg("window %d: critical path differs from the whole graph's", wins[i]);
        sim_free(str);
    }
    sim_free(whole);
}

/* Another split of the same plan re-costs the kept graph instead of building it: a sequence of
 * splits (interior, the same again, 0, the prompt, interior) on one context gives every result
 * and every task's timeline as a fresh context does, and the kept graph was used. */
static void t_graph_reuse_same(void **s) {
    (void)s;
    const char *models[] = {"OPT-125M", "OPT-1.3B", "OPT-6.7B", "Llama-3-8B", "Mistral-7B"};
    const char *hws[] = {"a100-40gb-pcie4", "h100-pcie", "t4", "l4", "gh200", "rtx4090"};
    srand(5151);
    sim_ctx *keep = sim_new();
    int ran = 0;
    for (int it = 0; it < 60; it++) {
        kv_model m = mdl(models[rand() % 5]);
        hw_profile p = hwp(hws[rand() % 6]);
        kv_plan pl;
        /* two plans in three KVPR, the others any policy (one that ignores the split keeps its graph
         * as it is); the same split twice, -1 (the policy's own) twice */
        const plan_gen g = {3, 32, 4, 4, 400, 8, 1, 8, 3, 0};
        rand_plan(&pl, it, &g);
        int splits[] = {1 + rand() % (pl.prompt - 1), -1, 0, pl.prompt, 1 + rand() % (pl.prompt - 1), 1 + rand() % (pl.prompt - 1), -1, -1};
        splits[1] = splits[0];
        for (int k = 0; k < 8; k++) {
            pl.split = splits[k];
            sim_result a, b;
            sim_ctx *fresh = sim_new();
            kv_status st = sim_run(fresh, &m, &p, &pl, &a);
            if (st == KV_ENOFIT || st == KV_EINVAL) {
                assert_int_equal(sim_run(keep, &m, &p, &pl, &b), st);
                sim_free(fresh);
                continue;
            }
            if (st) fail_msg("%s", kv_errmsg());
            assert_int_equal(sim_run(keep, &m, &p, &pl, &b), KV_OK);
            same_result(&a, &b);
            /* the timelines, read without forgetting the kept graph */
            const sim_des *x = sim_graph_des(fresh), *y = sim_graph_des(keep);
            assert_int_equal(sim_des_count(x), sim_des_count(y));
            for (int32_t i = 0; i < sim_des_count(x); i++) {
                const sim_task *u = sim_des_task_at(x, i), *v = sim_des_task_at(y, i);
                if (u->start != v->start || u->end != v->end || u->crit != v->crit || memcmp(&u->bytes, &v->bytes, sizeof u->bytes) ||
                    memcmp(&u->fixed_s, &v->fixed_s, sizeof u->fixed_s) || memcmp(&u->work, &v->work, sizeof u->work))
                    fail_msg("plan %d split %d task %d (%s): differs on the kept graph", it, pl.split, i, kv_op_name((kv_op)u->op));
            }
            sim_free(fresh);
            ran++;
        }
    }
    assert_true(ran > 150);
    assert_true(sim_graph_reuses(keep) > 80);
    sim_free(keep);
}


/* The fast-forward on the core alone, over random periodic graphs: a prefix, R copies of a random
 * template of Q tasks (every queue, durations with ties and zeros, copies on both link directions
 * with random duplex, dependencies up to two periods back), a suffix. Every run's makespan, events,
 * busy times and last task, and every task's start, end and parent, equal the run without it. (A
 * link busy through the anchors of periods whose busy stretches began differently once came out
 * with the wrong busy time; 172 of 100,000 such graphs showed it.) */
static uint32_t ff_rng(uint32_t *x) {
    *x ^= *x << 13, *x ^= *x >> 17, *x ^= *x << 5;
    return *x;
}

/* (win > 0: streamed with that window, the tasks' ends then retired unseen) */
static kv_status ff_graph(int ff, int win, uint32_t seed, sim_des *d, sim_des_stats *st) {
    static const kv_queue qs[] = {KV_Q_CACHE, KV_Q_STORE, KV_Q_COMPUTE, KV_Q_CPU, KV_Q_WEIGHT, KV_Q_HIDDEN};
    uint32_t x = seed * 2654435761u + 1;
    sim_des_reset(d);
    sim_des_links(d, (sim_link){1e9 * (1 + ff_rng(&x) % 4), ff_rng(&x) % 2 ? 1 : 0.25 * (1 + ff_rng(&x) % 4)},
                  (sim_link){1e9 * (1 + ff_rng(&x) % 4), ff_rng(&x) % 2 ? 1 : 0.5});
    if (win > 0) sim_des_stream(d, win, NULL, NULL);
    int Q = 2 + (int)(ff_rng(&x) % 10), R = 6 + (int)(ff_rng(&x) % 20), P = (int)(ff_rng(&x) % 6);
    struct {
        kv_queue q;
        int nd, back[7];
        double fx, wk;
    } T[12];
    for (int i = 0; i < Q; i++) {
        T[i].q = i == 0 ? KV_Q_COMPUTE : qs[ff_rng(&x) % 6];
        T[i].fx = (ff_rng(&x) % 4) * (ff_rng(&x) % 2 ? 1e-6 : 0.5e-6); /* ties and zeros */
        int copy = T[i].q != KV_Q_COMPUTE && T[i].q != KV_Q_CPU;
        T[i].wk = copy ? (ff_rng(&x) % 5) * 1e3 * (1 + ff_rng(&x) % 3) : 0;
        T[i].nd = (int)(ff_rng(&x) % 8);
        for (int k = 0; k < T[i].nd; k++) T[i].back[k] = 1 + (int)(ff_rng(&x) % (2 * Q));
    }
    for (int i = 0; i < P; i++) {
        sim_task *t = sim_des_get(d, sim_des_task(d, KV_OP_QKV, qs[ff_rng(&x) % 6], -1, 0, 0));
        t->fixed_s = (ff_rng(&x) % 3) * 1e-6, t->work = (ff_rng(&x) % 3) * 1e3;
    }
    int32_t a = sim_des_count(d), anchor = -1;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < Q; i++) {
            int32_t id = sim_des_task(d, KV_OP_QKV, T[i].q, 0, r, 0);
            if (r == 1 && i == 0) anchor = id;
            sim_task *t = sim_des_get(d, id);
            t->fixed_s = T[i].fx, t->work = T[i].wk;
            for (int k = 0; k < T[i].nd; k++) {
                int32_t f = id - T[i].back[k];
                if (f < a) f = r > 0 ? a : -1; /* before the region: its first task, or none */
                if (f >= 0 && f < id && sim_des_dep(d, f, id)) return KV_ENOMEM;
            }
            if (win > 0) sim_des_pump(d);
        }
    int32_t b = sim_des_count(d);
    for (int i = 0; i < 3; i++) {
        int32_t id = sim_des_task(d, KV_OP_FFN, qs[ff_rng(&x) % 6], 1, 0, 0);
        sim_task *t = sim_des_get(d, id);
        t->fixed_s = 1e-6, t->work = 1e3;
        if (sim_des_dep(d, id - 1 - (int32_t)(ff_rng(&x) % (uint32_t)Q), id)) return KV_ENOMEM;
        if (win > 0) sim_des_pump(d);
    }
    sim_des_periodic(d, a, b, Q, anchor);
    if (!ff) setenv("KVPR_SIM_FF", "0", 1);
    kv_status rs = sim_des_run(d, st);
    unsetenv("KVPR_SIM_FF");
    return rs;
}

static void t_fast_forward_core(void **s) {
    (void)s;
    sim_des *x = sim_des_new(), *y = sim_des_new();
    int skipped = 0;
    for (uint32_t seed = 1; seed <= 40000; seed++) {
        sim_des_stats A, B;
        kv_status e1 = ff_graph(0, 0, seed, x, &A), e2 = ff_graph(1, 0, seed, y, &B);
        assert_int_equal(e1, e2);
        if (e1) continue;
        if (sim_des_ff_periods(y) > 0) skipped++;
        if (A.makespan != B.makespan || A.events != B.events || memcmp(A.busy, B.busy, sizeof A.busy) || A.last != B.last)
            fail_msg("graph %u: the run's totals differ with fast-forward (busy h2d %.17g / %.17g)", seed, sim_to_s(A.busy[KV_RES_H2D]),
                     sim_to_s(B.busy[KV_RES_H2D]));
        for (int32_t i = 0; i < sim_des_count(x); i++) {
            const sim_task *u = sim_des_task_at(x, i), *v = sim_des_task_at(y, i);
            if (u->start != v->start || u->end != v->end || u->crit != v->crit) fail_msg("graph %u task %d differs with fast-forward", seed, i);
        }
    }
    assert_true(skipped > 4000);
    sim_des_free(x), sim_des_free(y);
}

/* The same graphs streamed: the critical path's sums equal the whole graph's, in replays whose
 * later periods make no nodes (the trees at the ends of the first two equal) and in replays that
 * make every period's nodes (the trees differing); both kinds occur. */
static void t_crit_bulk_core(void **s) {
    (void)s;
    sim_des *x = sim_des_new(), *y = sim_des_new();
    uint64_t bulk = 0, refused = 0;
    int compared = 0;
    for (uint32_t seed = 1; seed <= 4000; seed++) {
        sim_des_stats A, B;
        if (ff_graph(1, 0, seed, x, &A)) continue;
        sim_time op0[KV_OP_COUNT], w0, op1[KV_OP_COUNT], w1;
        sim_des_crit_sums(x, 0, op0, &w0);
        for (int wi = 0; wi < 2; wi++) {
            int win = wi ? 1000000 : 40;
            assert_int_equal(ff_graph(1, win, seed, y, &B), KV_OK);
            if (sim_des_overrun(y)) continue;
            uint64_t no;
            bulk += sim_des_ff_bulk(y, &no), refused += no, compared++;
            sim_des_crit_sums(y, 0, op1, &w1);
            if (B.makespan != A.makespan || memcmp(op0, op1, sizeof op0) || w0 != w1)
                fail_msg("graph %u window %d: the streamed critical path differs from the whole graph's", seed, win);
        }
    }
    if (!(bulk > 100 && refused > 0 && compared > 4000)) fail_msg("replays in bulk %llu, refused %llu, runs %d", (unsigned long long)bulk, (unsigned long long)refused, compared);
    sim_des_free(x), sim_des_free(y);
}

/* The core notices a task added too late: with the whole graph it would have started at once. */
static void t_stream_late(void **s) {
    (void)s;
    sim_des *d = sim_des_new();
    sim_link one = {1, 1};
    sim_retire_fn fn = NULL;
    /* window 1: A runs and ends before B exists; B, free to start, would have started at 0 */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    sim_des_stream(d, 1, fn, NULL);
    comp(d, 1.0);
    sim_des_pump(d);
    int32_t b = copy(d, KV_RES_H2D, 1, 0);
    (void)b;
    sim_des_pump(d);
    assert_true(sim_des_overrun(d));
    /* B waiting for A (ended already) and heading an idle queue: late too */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    sim_des_stream(d, 1, fn, NULL);
    int32_t a = comp(d, 1.0);
    sim_des_pump(d);
    sim_task *t;
    int32_t x = sim_des_add(d, KV_OP_KV_H2D, KV_Q_CACHE, 0, 0, 0, &a, 1, &t);
    assert_false(sim_des_overrun(d)); /* looked at when the caller says the task is complete */
    sim_des_pump(d);
    assert_true(x == 1 && sim_des_overrun(d));
    /* window 2: both exist before anything runs: no overrun, B starts after A */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    sim_des_stream(d, 2, fn, NULL);
    a = comp(d, 1.0);
    sim_des_pump(d);
    x = sim_des_add(d, KV_OP_KV_H2D, KV_Q_CACHE, 0, 0, 0, &a, 1, &t);
    t->work = 1;
    sim_des_pump(d);
    sim_des_stats st;
    assert_int_equal(sim_des_run(d, &st), KV_OK);
    assert_false(sim_des_overrun(d));
    assert_rel(sim_to_s(st.makespan), 2.0, 1e-12);
    sim_des_free(d);
}

void group_sim(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_known_answers), cmocka_unit_test(t_tie_order),   cmocka_unit_test(t_program_order),
                                        cmocka_unit_test(t_paper_formula),
                                   cmocka_unit_test(t_two_layer_by_hand), cmocka_unit_test(t_invariants),
                                   cmocka_unit_test(t_policy_relations), cmocka_unit_test(t_memory_plans),
                                   cmocka_unit_test(t_determinism_and_exports), cmocka_unit_test(t_streamed_same),
                                   cmocka_unit_test(t_stream_late), cmocka_unit_test(t_bound_best_split), cmocka_unit_test(t_fast_forward_same), cmocka_unit_test(t_fast_forward_two_layers), cmocka_unit_test(t_graph_reuse_same), cmocka_unit_test(t_fast_forward_core), cmocka_unit_test(t_crit_bounded), cmocka_unit_test(t_crit_bulk_core)};
    RUN_GROUP(c, "sim", t);
}
