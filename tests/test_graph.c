/* The one schedule: placement (midpoint rule, KV split by sequence), presets, the graph's shape
 * and dependencies, prefill by hand, and copies sharing a link direction (flow-level). */
#include <stdio.h>
#include <stdlib.h>
#include "../hwmodel/cost.h"
#include "../sched/graph.h"
#include "../engine/exec.h"
#include "../sim/sim.h"
#include "tests.h"

static kv_plan plan(int batch, int prompt, int gen) {
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.batch = batch, pl.prompt = prompt, pl.gen = gen;
    return pl;
}

static int count_op(const kv_graph_list *g, kv_op op, int step) {
    int n = 0;
    for (int i = 0; i < g->n; i++) n += g->ops[i].op == op && g->ops[i].step == step;
    return n;
}

static void build(const kv_model *m, const kv_plan *pl, kv_layout *ly, kv_graph_list *g) {
    memset(g, 0, sizeof *g);
    if (kv_layout_resolve(m, pl, ly)) fail_msg("%s", kv_errmsg());
    kv_graph_sink sink = {.ctx = g, .emit = kv_graph_list_emit};
    if (kv_graph_build(m, pl, ly, &sink)) fail_msg("%s", kv_errmsg());
}

/* FlexGen's midpoint rule on OPT-30B (h = 7168) with 20 % of the weights on the GPU: in the
 * attention list only w_out (midpoint 87.5 %) and what follows it land on the GPU; in the MLP
 * list fc1 (25 %) and fc2 (75 %) stay on the CPU, the tiny b_fc2 and the norm go to the GPU. */
static void t_midpoint_rule(void **s) {
    (void)s;
    kv_model m = mdl("OPT-30B");
    kv_tensor t[KV_MAX_TENSORS];
    int n = kv_layer_tensors(&m, 20, 80, t);
    const char *gpu[] = {"w_out", "b_out", "w_ln", "b_ln", "b_fc2", "w_ln2", "b_ln2"};
    uint64_t h = 7168, total = 0, on = 0;
    for (int i = 0; i < n; i++) {
        int want = 0;
        for (size_t k = 0; k < sizeof gpu / sizeof gpu[0]; k++) want |= !strcmp(t[i].name, gpu[k]);
        if (t[i].on_gpu != want) fail_msg("%s: on_gpu %d, expected %d", t[i].name, t[i].on_gpu, want);
        total += t[i].elems;
        on += t[i].on_gpu ? t[i].elems : 0;
    }
    assert_true(total == kv_model_params_layer(&m)); /* the list is the whole layer */
    assert_true(on == h * h + h + 2 * h + h + 2 * h);
    /* the extremes */
    n = kv_layer_tensors(&m, 100, 0, t);
    for (int i = 0; i < n; i++) assert_true(t[i].on_gpu);
    n = kv_layer_tensors(&m, 0, 100, t);
    for (int i = 0; i < n; i++) assert_false(t[i].on_gpu);
    /* at 50 % the attention list splits between w_k (37.5 %, CPU) and w_v (62.5 %, GPU) */
    n = kv_layer_tensors(&m, 50, 50, t);
    for (int i = 0; i < n; i++) {
        if (!strcmp(t[i].name, "w_k")) assert_false(t[i].on_gpu);
        if (!strcmp(t[i].name, "w_v")) assert_true(t[i].on_gpu);
        if (!strcmp(t[i].name, "w_fc2")) assert_true(t[i].on_gpu);
        if (!strcmp(t[i].name, "w_fc1")) assert_false(t[i].on_gpu);
    }
    /* the layout streams what is on the CPU */
    kv_plan pl = plan(8, 128, 4);
    pl.mode = KV_MODE_THROUGHPUT, pl.nb = 2, pl.policy = KV_POL_OFFLOAD;
    kv_percent_parse("20 80 0 100 100 0", &pl.percent);
    kv_layout ly;
    assert_int_equal(kv_layout_resolve(&m, &pl, &ly), KV_OK);
    assert_rel(ly.w_gpu, 2.0 * (h * h + 6 * h), 1e-15);
    assert_rel(ly.w_gpu + ly.w_cpu, (double)kv_model_bytes_layer(&m), 1e-15);
}

/* The KV cache splits by sequence: 3 of 10 sequences (30 %) keep it on the GPU; only the other
 * 7 stream, attention still covers all 10. */
static void t_kv_split(void **s) {
    (void)s;
    kv_model m = mdl("OPT-6.7B");
    kv_plan pl = plan(10, 100, 3);
    pl.policy = KV_POL_OFFLOAD, pl.layers = 2;
    kv_percent_parse("100 0 30 70 100 0", &pl.percent);
    kv_layout ly;
    kv_graph_list g;
    build(&m, &pl, &ly, &g);
    double kvb = (double)kv_model_kv_bytes_token_layer(&m);
    assert_int_equal(ly.b_gpu, 3);
    assert_int_equal(ly.b_cpu, 7);
    assert_rel(ly.gpu_kv, 2.0 * 3 * 103 * kvb, 1e-15);
    assert_rel(ly.cpu_kv, 2.0 * 7 * 103 * kvb, 1e-15);
    int nkv = 0;
    for (int i = 0; i < g.n; i++) {
        const kv_gop *o = &g.ops[i];
        if (o->op == KV_OP_KV_H2D) {
            nkv++;
            assert_int_equal(o->seq0, 3), assert_int_equal(o->nseq, 7);
            assert_rel(o->bytes, 7.0 * (100 + o->step) * kvb, 1e-15);
        }
        if (o->op == KV_OP_ATTN && o->step >= 0) assert_int_equal(o->nseq, 10);
        if (o->op == KV_OP_KV_D2H && o->step < 0) assert_rel(o->bytes, 7.0 * 100 * kvb, 1e-15); /* the prompt's K/V home */
    }
    assert_int_equal(nkv, 2 * 2);
    kv_graph_list_free(&g);
    /* all of it on the GPU: nothing streams, nothing is stored */
    kv_percent_parse("100 0 100 0 100 0", &pl.percent);
    build(&m, &pl, &ly, &g);
    assert_int_equal(count_op(&g, KV_OP_KV_H2D, 0) + count_op(&g, KV_OP_KV_D2H, 0) + count_op(&g, KV_OP_KV_D2H, -1), 0);
    kv_graph_list_free(&g);
    /* bad placements are one-line errors */
    assert_int_equal(kv_percent_parse("100 0 30 70 100", &pl.percent), KV_EINVAL);
    assert_int_equal(kv_percent_parse("100 0 30 70 100 0 x", &pl.percent), KV_EINVAL);
    kv_percent_parse("50 40 0 100 100 0", &pl.percent);
    assert_int_equal(kv_plan_validate(&pl, &m), KV_EINVAL);
    assert_non_null(strstr(kv_errmsg(), "disk"));
    kv_percent_parse("100 0 0 100 50 50", &pl.percent);
    assert_int_equal(kv_plan_validate(&pl, &m), KV_EINVAL);
}

/* Every op's dependencies point backwards, every (step, layer, mb, op) is unique, and every op
 * carries its own FLOPs or bytes, for each policy, mode and preset. */
static void t_graph_shape(void **s) {
    (void)s;
    kv_model m = mdl("Llama-3-8B");
    kv_preset presets[] = {KV_PRESET_NONE, KV_PRESET_HF_OFFLOAD, KV_PRESET_ACCELERATE, KV_PRESET_ZERO, KV_PRESET_FLEXGEN, KV_PRESET_KVPR};
    for (int pol = 0; pol < KV_POL_COUNT; pol++)
        for (int mode = 0; mode < 2; mode++)
            for (size_t ps = 0; ps < sizeof presets / sizeof presets[0]; ps++) {
                kv_plan pl = plan(4, 64, 4);
                pl.layers = 3, pl.split = 20;
                kv_plan_preset(&pl, presets[ps]);
                if (!presets[ps]) {
                    pl.policy = (kv_policy)pol, pl.mode = (kv_mode)mode;
                    if (pl.policy != KV_POL_KVPR) pl.split = -1;
                }
                if (pl.mode == KV_MODE_THROUGHPUT) pl.nb = 3;
                if (pl.policy != KV_POL_KVPR) pl.split = -1;
                assert_int_equal(kv_plan_validate(&pl, &m), KV_OK);
                kv_layout ly;
                kv_graph_list g;
                build(&m, &pl, &ly, &g);
                for (int i = 0; i < g.n; i++) {
                    const kv_gop *o = &g.ops[i];
                    for (int k = 0; k < o->ndeps; k++) assert_true(o->deps[k] >= 0 && o->deps[k] < i);
                    for (int k = i + 1; k < g.n && k < i + 64; k++) {
                        const kv_gop *u = &g.ops[k];
                        assert_false(u->op == o->op && u->step == o->step && u->layer == o->layer && u->mb == o->mb);
                    }
                    assert_true(o->bytes > 0 || o->flops > 0);
                    if (o->op == KV_OP_QKV || o->op == KV_OP_ATTN || o->op == KV_OP_FFN || o->op == KV_OP_HEAD) assert_true(o->flops > 0);
                }
                /* one LM head per step and micro-batch, prefill included */
                assert_int_equal(count_op(&g, KV_OP_HEAD, 0), pl.nb);
                assert_int_equal(count_op(&g, KV_OP_HEAD, -1), pl.nb);
                kv_graph_list_free(&g);
            }
}

static int gop_eq(const kv_gop *a, const kv_gop *b) {
    if (a->op != b->op || a->queue != b->queue || a->ndeps != b->ndeps || a->step != b->step || a->layer != b->layer || a->mb != b->mb ||
        a->seq0 != b->seq0 || a->nseq != b->nseq || a->row0 != b->row0 || a->row1 != b->row1 || a->ctx != b->ctx || a->slot != b->slot ||
        memcmp(&a->bytes, &b->bytes, sizeof a->bytes) || memcmp(&a->flops, &b->flops, sizeof a->flops))
        return 0;
    for (int k = 0; k < a->ndeps; k++)
        if (a->deps[k] != b->deps[k]) return 0;
    return 1;
}

/* A sink with repeat: checks the promise (each op the one n before, one layer on, its
 * dependencies n higher) and keeps the ops. */
typedef struct {
    kv_graph_list g;
    int calls, broken;
} rep_list;
static int32_t rep_emit(void *ctx, const kv_gop *o) { return kv_graph_list_emit(&((rep_list *)ctx)->g, o); }
static int32_t rep_repeat(void *ctx, const kv_gop *ops, int32_t n) {
    rep_list *r = ctx;
    int32_t first = r->g.n;
    r->calls++;
    for (int32_t i = 0; i < n; i++) {
        if (r->g.n < n) return -1;
        kv_gop x = r->g.ops[r->g.n - n];
        x.layer++, x.slot = ops[i].slot;
        for (int k = 0; k < x.ndeps; k++) x.deps[k] += n;
        if (!gop_eq(&x, &ops[i])) r->broken++;
        if (kv_graph_list_emit(&r->g, &ops[i]) < 0) return -1;
    }
    return first;
}

/* Repeated layers: the builder emits a layer as the previous one shifted when the state it reads
 * says so; the ops must be exactly those built op by op, over policies, modes, presets,
 * compression, prefetch depths, per-step splits (which change a layer's ops between steps), the
 * new token's activation, W_K/W_V first and no prompt pass. A sink with repeat gets the same
 * ops, each the copy it promises. */
static void t_graph_repeat(void **s) {
    (void)s;
    const char *models[] = {"OPT-1.3B", "Llama-3-8B"};
    kv_preset presets[] = {KV_PRESET_NONE, KV_PRESET_HF_OFFLOAD, KV_PRESET_ACCELERATE, KV_PRESET_ZERO, KV_PRESET_FLEXGEN, KV_PRESET_KVPR};
    int64_t total = 0, plans = 0;
    for (size_t mi = 0; mi < 2; mi++)
        for (int pol = 0; pol < KV_POL_COUNT; pol++)
            for (size_t ps = 0; ps < sizeof presets / sizeof presets[0]; ps++)
                for (int v = 0; v < 12; v++) {
                    kv_model m = mdl(models[mi]);
                    kv_plan pl = plan(4, 24, 5);
                    int steps[4] = {0, 7, 24, 3};
                    pl.layers = 9, pl.split = 10;
                    kv_plan_preset(&pl, presets[ps]);
                    if (!presets[ps]) pl.policy = (kv_policy)pol, pl.mode = (kv_mode)(v & 1);
                    else if (pol) continue;
                    if (pl.mode == KV_MODE_THROUGHPUT) pl.nb = 1 + v % 3;
                    pl.prefetch = 1 + v % 3;
                    pl.compress = (v / 2) % 4;
                    pl.keep_act = v % 5 == 1;
                    pl.wkv_first = v % 4 == 3;
                    pl.no_prefill = v == 6;
                    if (pl.policy == KV_POL_KVPR && v % 3 == 2) pl.split_steps = steps;
                    if (pl.policy != KV_POL_KVPR) pl.split = -1;
                    if (kv_plan_validate(&pl, &m)) continue;
                    kv_layout ly;
                    if (kv_layout_resolve(&m, &pl, &ly)) continue;
                    kv_graph_list a = {0};
                    rep_list b = {0};
                    kv_graph_sink se = {.ctx = &a, .emit = kv_graph_list_emit, .exact = 1};
                    kv_graph_sink sr = {.ctx = &b, .emit = rep_emit, .repeat = rep_repeat};
                    kv_graph_list c = {0};
                    kv_graph_sink sd = {.ctx = &c, .emit = kv_graph_list_emit};
                    assert_int_equal(kv_graph_build(&m, &pl, &ly, &se), KV_OK);
                    assert_int_equal(kv_graph_build(&m, &pl, &ly, &sr), KV_OK);
                    assert_int_equal(kv_graph_build(&m, &pl, &ly, &sd), KV_OK);
                    assert_int_equal(se.repeated, 0);
                    assert_int_equal(sr.repeated, b.calls);
                    assert_int_equal(sd.repeated, sr.repeated);
                    assert_int_equal(b.broken, 0);
                    assert_int_equal(a.n, b.g.n);
                    assert_int_equal(a.n, c.n);
                    for (int32_t i = 0; i < a.n; i++)
                        if (!gop_eq(&a.ops[i], &b.g.ops[i]) || !gop_eq(&a.ops[i], &c.ops[i]))
                            fail_msg("%s %s policy %d v %d: op %d differs (step %d layer %d)", models[mi], kv_preset_name(presets[ps]), pol, v, i,
                                     a.ops[i].step, a.ops[i].layer);
                    /* without per-step splits, layers D + 1 .. L - 2 repeat (the earlier ones read
                     * the previous step's last layer, whose LM heads shift its ops) in every step
                     * but the first one or two (they read the prompt pass's stores or a first step
                     * with other ops, as recompute's) */
                    if (!pl.split_steps) assert_true(sr.repeated >= (int64_t)(kv_plan_steps(&pl) - 2) * (ly.L - 3 - ly.D));
                    total += sr.repeated, plans++;
                    kv_graph_list_free(&a), kv_graph_list_free(&b.g), kv_graph_list_free(&c);
                }
    assert_true(plans >= 200); /* 240 valid plans, about 4,400 repeated layers */
    assert_true(total > 0);
}

/* The presets set what the systems do (offloading.md section 1). */
static void t_presets(void **s) {
    (void)s;
    kv_model m = mdl("LLaMA-2-13B");
    kv_plan pl = plan(8, 512, 8);
    kv_layout ly;
    kv_graph_list g;
    kv_plan_preset(&pl, KV_PRESET_ZERO);
    pl.layers = 2;
    build(&m, &pl, &ly, &g);
    assert_rel(ly.w_cpu, (double)kv_model_bytes_layer(&m), 1e-15); /* every weight streamed */
    assert_int_equal(ly.b_gpu, 8);                                  /* KV on the GPU */
    assert_int_equal(count_op(&g, KV_OP_W_H2D, 0), 2);
    assert_int_equal(count_op(&g, KV_OP_KV_H2D, 0), 0);
    kv_graph_list_free(&g);
    kv_plan_defaults(&pl);
    pl.batch = 8, pl.prompt = 512, pl.gen = 8, pl.layers = 2;
    kv_plan_preset(&pl, KV_PRESET_ACCELERATE);
    assert_int_equal(pl.prefetch, 1);
    assert_int_equal(pl.pageable, 1);
    kv_plan_preset(&pl, KV_PRESET_FLEXGEN);
    pl.nb = 2;
    build(&m, &pl, &ly, &g);
    assert_int_equal(pl.mode, KV_MODE_THROUGHPUT);
    assert_int_equal(count_op(&g, KV_OP_CPU_ATTN, 0), 2 * 2);
    assert_int_equal(count_op(&g, KV_OP_KV_H2D, 0), 0);
    kv_graph_list_free(&g);
    kv_preset ps;
    assert_int_equal(kv_preset_parse("zero-inference", &ps), KV_OK);
    assert_int_equal(ps, KV_PRESET_ZERO);
    assert_int_equal(kv_preset_parse("deepspeed", &ps), KV_EINVAL);
}

/* Prefill by hand: one and two layers, weights resident (compute back to back) or streamed
 * with double buffering (max-plus of loads and compute). Time to first token = the prompt pass up
 * to the last LM head. */
static void t_prefill_by_hand(void **s) {
    (void)s;
    kv_model m = mdl("OPT-1.3B");
    hw_profile p = hwp("a100-80gb");
    sim_ctx *sx = sim_new();
    sim_result r;
    int B = 4, P = 256;
    hw_layer_cost lc = hw_prefill_layer(&p, &m, B, P);
    double head = hw_head_time(&p, &m, B);
    /* KV on the GPU (no stores), weights on the GPU: compute only */
    kv_plan pl = plan(B, P, 2);
    pl.policy = KV_POL_GPU, pl.layers = 1;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_OK);
    assert_rel(r.prefill_s, lc.total + head, 1e-9);
    pl.layers = 2;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_OK);
    assert_rel(r.prefill_s, 2 * lc.total + head, 1e-9);
    /* weights streamed, KV on the GPU (ZeRO-Inference's layout): loads prefetched two deep */
    pl.policy = KV_POL_OFFLOAD;
    kv_percent_parse("0 100 100 0 100 0", &pl.percent);
    double tw = hw_copy_time(&p, HW_H2D, (double)kv_model_bytes_layer(&m), 0, 0);
    pl.layers = 1;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_OK);
    assert_rel(r.prefill_s, tw + lc.total + head, 1e-9);
    pl.layers = 2;
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_OK);
    double c0 = tw + lc.total, c1 = fmax(c0, 2 * tw) + lc.total;
    assert_rel(r.prefill_s, c1 + head, 1e-9);
    /* generation throughput is FlexGen's: gen x sequences / (prefill + decode) */
    assert_rel(r.generation_tok_s, (double)B * 2 / (r.prefill_s + r.decode_s), 1e-12);
    assert_rel(r.decode_tok_s, (double)B * 1 / r.decode_s, 1e-12);
    /* kvpr in latency mode stores the prompt's K/V of [l, p) and its activations of [0, l) */
    kv_plan kp = plan(B, P, 3);
    kp.policy = KV_POL_KVPR, kp.split = 100, kp.layers = 2;
    kv_layout ly;
    kv_graph_list g;
    build(&m, &kp, &ly, &g);
    double kvb = (double)kv_model_kv_bytes_token_layer(&m), actb = (double)kv_model_act_bytes_token(&m);
    for (int i = 0; i < g.n; i++) {
        if (g.ops[i].step >= 0) continue;
        if (g.ops[i].op == KV_OP_KV_D2H) assert_rel(g.ops[i].bytes, (double)B * (P - 100) * kvb, 1e-15);
        if (g.ops[i].op == KV_OP_ACT_D2H) assert_rel(g.ops[i].bytes, (double)B * 100 * actb, 1e-15);
    }
    assert_int_equal(count_op(&g, KV_OP_ACT_D2H, -1), 2);
    kv_graph_list_free(&g);
    sim_free(sx);
}

/* Copies on several queues of one direction share it fairly. */
static int32_t task(sim_des *d, kv_op op, kv_queue q, double fixed, double work) {
    int32_t id = sim_des_task(d, op, q, 0, 0, 0);
    sim_task *t = sim_des_get(d, id);
    t->fixed_s = fixed, t->work = t->bytes = work;
    return id;
}

static void t_link_sharing(void **s) {
    (void)s;
    sim_des *d = sim_des_new();
    sim_des_stats st;
    sim_link one = {1e9, 1}, half = {1e9, 0.5};
    /* two equal copies started together on one direction: each takes twice as long as alone */
    sim_des_links(d, one, one);
    int32_t a = task(d, KV_OP_KV_H2D, KV_Q_CACHE, 0, 1e9), b = task(d, KV_OP_W_H2D, KV_Q_WEIGHT, 0, 1e9);
    assert_int_equal(sim_des_run(d, &st), KV_OK);
    assert_rel(sim_to_s(sim_des_get(d, a)->end), 2.0, 1e-12);
    assert_rel(sim_to_s(sim_des_get(d, b)->end), 2.0, 1e-12);
    assert_rel(sim_to_s(st.busy[KV_RES_H2D]), 2.0, 1e-12); /* the link was busy 2 s, not 4 */
    /* three at once: a third each */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    a = task(d, KV_OP_KV_H2D, KV_Q_CACHE, 0, 1e9);
    task(d, KV_OP_W_H2D, KV_Q_WEIGHT, 0, 1e9);
    task(d, KV_OP_HID_H2D, KV_Q_HIDDEN, 0, 1e9);
    assert_int_equal(sim_des_run(d, &st), KV_OK);
    assert_rel(sim_to_s(sim_des_get(d, a)->end), 3.0, 1e-12);
    /* a copy that starts mid-way re-rates the other: A (1 GB) alone for 0.5 s, then B (0.25 GB)
     * joins at 0.5 s; both at 0.5 GB/s: B ends at 1.0; A has 0.25 GB left, alone again: 1.25 */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    a = task(d, KV_OP_KV_H2D, KV_Q_CACHE, 0, 1e9);
    int32_t g = task(d, KV_OP_QKV, KV_Q_COMPUTE, 0.5, 0);
    b = task(d, KV_OP_W_H2D, KV_Q_WEIGHT, 0, 0.25e9);
    sim_des_dep(d, g, b);
    assert_int_equal(sim_des_run(d, &st), KV_OK);
    assert_rel(sim_to_s(sim_des_get(d, b)->end), 1.0, 1e-12);
    assert_rel(sim_to_s(sim_des_get(d, a)->end), 1.25, 1e-12);
    /* the same on one queue runs in order: no sharing */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    a = task(d, KV_OP_ACT_H2D, KV_Q_CACHE, 0, 1e9);
    b = task(d, KV_OP_KV_H2D, KV_Q_CACHE, 0, 1e9);
    assert_int_equal(sim_des_run(d, &st), KV_OK);
    assert_rel(sim_to_s(sim_des_get(d, a)->end), 1.0, 1e-12);
    assert_rel(sim_to_s(sim_des_get(d, b)->end), 2.0, 1e-12);
    /* sharing and duplex together: two H2D copies of 1 GB with a D2H copy of 0.5 GB, duplex 0.5:
     * each H2D copy gets 1e9 / 2 * 0.5 = 0.25 GB/s while the D2H copy runs (0.5 GB at 0.5 GB/s:
     * 1 s); then 0.75 GB each at 0.5 GB/s: 1.5 s more, ending at 2.5 s */
    sim_des_reset(d);
    sim_des_links(d, half, half);
    a = task(d, KV_OP_KV_H2D, KV_Q_CACHE, 0, 1e9);
    b = task(d, KV_OP_W_H2D, KV_Q_WEIGHT, 0, 1e9);
    int32_t c = task(d, KV_OP_KV_D2H, KV_Q_STORE, 0, 0.5e9);
    assert_int_equal(sim_des_run(d, &st), KV_OK);
    assert_rel(sim_to_s(sim_des_get(d, c)->end), 1.0, 1e-12);
    assert_rel(sim_to_s(sim_des_get(d, a)->end), 2.5, 1e-12);
    assert_rel(sim_to_s(sim_des_get(d, b)->end), 2.5, 1e-12);
    /* a duration the clock cannot hold is an error, not undefined behaviour */
    sim_des_reset(d);
    sim_des_links(d, one, one);
    task(d, KV_OP_QKV, KV_Q_COMPUTE, 1e300, 0);
    assert_int_equal(sim_des_run(d, &st), KV_EINVAL);
    assert_non_null(strstr(kv_errmsg(), "out of range"));
    sim_des_free(d);
}

/* The weight load of the next layer no longer waits behind the cache queue: a FlexGen run
 * with the cache streamed keeps weights and K/V on separate queues sharing the link. */
static void t_streams_not_links(void **s) {
    (void)s;
    kv_model m = mdl("OPT-6.7B");
    kv_plan pl = plan(8, 512, 3);
    pl.mode = KV_MODE_THROUGHPUT, pl.nb = 2, pl.policy = KV_POL_OFFLOAD, pl.layers = 2;
    kv_layout ly;
    kv_graph_list g;
    build(&m, &pl, &ly, &g);
    for (int i = 0; i < g.n; i++) {
        if (g.ops[i].op == KV_OP_W_H2D) assert_int_equal(g.ops[i].queue, KV_Q_WEIGHT);
        if (g.ops[i].op == KV_OP_KV_H2D) assert_int_equal(g.ops[i].queue, KV_Q_CACHE);
    }
    kv_graph_list_free(&g);
    /* in the simulator a weight load and a K/V load overlap in time */
    sim_ctx *sx = sim_new();
    sim_result r;
    hw_profile p = hwp("a100-40gb-pcie4");
    assert_int_equal(sim_run(sx, &m, &p, &pl, &r), KV_OK);
    sim_des *d = sim_last_des(sx);
    int overlap = 0;
    for (int32_t i = 0; i < sim_des_count(d) && !overlap; i++) {
        sim_task *w = sim_des_get(d, i);
        if (w->op != KV_OP_W_H2D || w->step < 0) continue;
        for (int32_t k = 0; k < sim_des_count(d); k++) {
            sim_task *c = sim_des_get(d, k);
            if (c->op == KV_OP_KV_H2D && c->start < w->end && w->start < c->end) overlap = 1;
        }
    }
    assert_true(overlap);
    sim_free(sx);
}

/* ---- the engine runs the same graphs --------------------------------------------------------- */

static kv_model tiny(int gqa) {
    kv_model m = {.name = "tiny", .family = "llama", .n_layers = 3, .hidden = 64, .n_heads = 4, .n_kv_heads = gqa ? 2 : 4,
                  .head_dim = 16, .ffn = 128, .vocab = 50, .gated_mlp = gqa, .dtype = KV_DT_FP16};
    return m;
}

/* Executed op list = the builder's graph (kind, queue and keys, in order), for every policy,
 * mode and preset, on the host backend. */
static void t_engine_runs_graph(void **s) {
    (void)s;
    kv_model m = tiny(1);
    kv_preset presets[] = {KV_PRESET_NONE, KV_PRESET_HF_OFFLOAD, KV_PRESET_ACCELERATE, KV_PRESET_ZERO, KV_PRESET_FLEXGEN, KV_PRESET_KVPR};
    int runs = 0;
    for (int pol = 0; pol < KV_POL_COUNT; pol++)
        for (int mode = 0; mode < 2; mode++)
            for (size_t ps = 0; ps < sizeof presets / sizeof presets[0]; ps++) {
                if (presets[ps] && (pol || mode)) continue; /* a preset sets policy and mode itself */
                kv_plan pl = plan(3, 12, 3);
                kv_plan_preset(&pl, presets[ps]);
                if (!presets[ps]) pl.policy = (kv_policy)pol, pl.mode = (kv_mode)mode;
                pl.split = pl.policy == KV_POL_KVPR ? 5 : -1;
                pl.nb = pl.mode == KV_MODE_THROUGHPUT ? 2 : 1;
                kv_layout ly;
                kv_graph_list g;
                build(&m, &pl, &ly, &g);
                eng_result r;
                if (eng_run(&eng_host_backend, 0, &m, &pl, 3, &r)) fail_msg("%s", kv_errmsg());
                assert_int_equal(r.nspans, g.n);
                for (int i = 0; i < g.n; i++) {
                    const kv_gop *o = &g.ops[i];
                    const eng_op_key *x = &r.ops[i];
                    if (x->op != o->op || x->queue != o->queue || x->step != o->step || x->layer != o->layer || x->mb != o->mb)
                        fail_msg("policy %d mode %d preset %s: op %d is %s/%d (%d,%d,%d), the graph says %s/%d (%d,%d,%d)", pol, mode,
                                 kv_preset_name(presets[ps]), i, kv_op_name((kv_op)x->op), x->queue, x->step, x->layer, x->mb,
                                 kv_op_name((kv_op)o->op), o->queue, o->step, o->layer, o->mb);
                    assert_true(r.spans[i].end_ps >= r.spans[i].start_ps);
                }
                /* dependencies hold in measured time */
                for (int i = 0; i < g.n; i++)
                    for (int k = 0; k < g.ops[i].ndeps; k++) assert_true(r.spans[i].start_ps >= r.spans[g.ops[i].deps[k]].end_ps);
                eng_result_free(&r);
                kv_graph_list_free(&g);
                runs++;
            }
    assert_int_equal(runs, KV_POL_COUNT * 2 + 5);
}

/* Every layout computes what plain offloading computes: the same final hidden states (fp16
 * rounding apart), with the prompt pass run by the engine. */
static void t_engine_layouts_equal_offload(void **s) {
    (void)s;
    for (int gqa = 0; gqa < 2; gqa++)
        for (int mode = 0; mode < 2; mode++) {
            kv_model m = tiny(gqa);
            kv_plan base = plan(4, 16, 4);
            base.mode = (kv_mode)mode, base.nb = mode ? 2 : 1, base.policy = KV_POL_OFFLOAD;
            eng_result ref, r;
            if (eng_run(&eng_host_backend, 0, &m, &base, 9, &ref)) fail_msg("%s", kv_errmsg());
            const char *pcts[] = {"100 0 50 50 100 0", "30 70 0 100 100 0", "100 0 0 100 0 100", "40 60 25 75 0 100"};
            for (int c = 0; c < 8; c++) {
                kv_plan q = base;
                if (c < 4) kv_percent_parse(pcts[c], &q.percent);
                if (c == 4) q.policy = KV_POL_CPU_ATTN;
                if (c == 5) q.policy = KV_POL_CPU_ATTN, kv_percent_parse("0 100 50 50 100 0", &q.percent);
                if (c == 6) q.policy = KV_POL_KVPR, q.split = 7, kv_percent_parse("50 50 25 75 0 100", &q.percent);
                if (c == 7) q.policy = KV_POL_RECOMPUTE;
                if (eng_run(&eng_host_backend, 0, &m, &q, 9, &r)) fail_msg("%s", kv_errmsg());
                double e = 0, mx = 0;
                for (int i = 0; i < r.nhidden; i++) e = fmax(e, fabs(r.hidden[i] - ref.hidden[i])), mx = fmax(mx, fabs(ref.hidden[i]));
                if (!(e / mx < 2e-2)) fail_msg("gqa %d mode %d case %d: rel %.3g (tolerance 2e-2)", gqa, mode, c, e / mx);
                assert_true(r.prefill_s > 0 && r.decode_s > 0);
                eng_result_free(&r);
            }
            eng_result_free(&ref);
        }
}

void group_graph(tcount *c) {
    const struct CMUnitTest t[] = {
        cmocka_unit_test(t_midpoint_rule),   cmocka_unit_test(t_kv_split),   cmocka_unit_test(t_graph_shape), cmocka_unit_test(t_graph_repeat),
        cmocka_unit_test(t_presets),         cmocka_unit_test(t_prefill_by_hand), cmocka_unit_test(t_link_sharing),
        cmocka_unit_test(t_streams_not_links), cmocka_unit_test(t_engine_runs_graph), cmocka_unit_test(t_engine_layouts_equal_offload),
    };
    RUN_GROUP(c, "graph", t);
}
