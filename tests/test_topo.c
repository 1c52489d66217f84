/* Host topologies and several GPUs on one host: shipped topologies load with provenance; bad files
 * are refused with the field named; the flow-level sharing of the discrete-event core against
 * answers worked by hand (a shared uplink, host DRAM, max-min with unequal hops, CPU attention on
 * DRAM and cores); N replicas on independent hops equal N single-GPU runs; the planner's share. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include "../hwmodel/cost.h"
#include "../hwmodel/topo.h"
#include "../exp/exp.h"
#include "../sched/sched.h"
#include "../sched/search.h"
#include "../sim/multi.h"
#include <sqlite3.h>
#include "tests.h"

/* ---- files ------------------------------------------------------------------------------ */

static void t_shipped(void **s) {
    (void)s;
    char names[32][64];
    int n = hw_topo_list(names, 32);
    const char *need[] = {"dgx-a100", "h100-pcie-8x", "rtx4090-8x", "gh200-pair"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        int found = 0;
        for (int k = 0; k < n; k++) found |= !strcmp(names[k], need[i]);
        assert_true(found);
    }
    for (int k = 0; k < n; k++) {
        hw_topo t;
        if (hw_topo_resolve(names[k], &t)) fail_msg("%s: %s", names[k], kv_errmsg());
        hw_profile p = hwp(t.profile);
        assert_int_equal(hw_topo_check(&t, &p, t.ngpus, 1e9), KV_OK);
        for (int i = 0; i < t.nsockets; i++) assert_non_null(strchr(t.socket[i].dram_bw.source, '['));
        for (int i = 0; i < t.nswitches; i++) assert_non_null(strchr(t.sw[i].uplink_bw.source, '['));
    }
    hw_topo t;
    assert_int_equal(hw_topo_resolve("dgx-a100", &t), KV_OK);
    assert_int_equal(t.ngpus, 8);
    assert_int_equal(t.nswitches, 4);
    assert_int_equal(t.nsockets, 2);
    assert_int_equal(t.gpu[3].sw, 1);
    assert_int_equal(t.gpu[5].socket, 1);
    assert_int_equal(t.gpu[5].mem_socket, 1);
    /* case ignored; an unknown name suggests */
    assert_int_equal(hw_topo_resolve("DGX-A100", &t), KV_OK);
    assert_int_equal(hw_topo_resolve("dgx-a10", &t), KV_ENOTFOUND);
    assert_non_null(strstr(kv_errmsg(), "dgx-a100"));
    /* more replicas than the host has memory for */
    hw_profile p = hwp("a100-80gb");
    assert_int_equal(hw_topo_resolve("dgx-a100", &t), KV_OK);
    assert_int_equal(hw_topo_check(&t, &p, 8, 200e9), KV_ENOFIT);
    assert_int_equal(hw_topo_check(&t, &p, 9, 1), KV_EINVAL);
}

#define V(x) "{\"value\": " #x ", \"source\": \"[est] test\"}"
#define SOCK "{\"name\": \"c0\", \"dram_gbps\": " V(100) ", \"cores\": " V(8) ", \"attn_gflops_per_core\": " V(1) ", \"memory_gib\": " V(64) "}"

static void t_bad_input(void **s) {
    (void)s;
    hw_topo t;
    const char *good = "{\"name\": \"x\", \"profile\": \"a100-80gb\", \"sockets\": [" SOCK "], \"switches\": [{\"name\": \"s\", \"socket\": 0, "
                       "\"uplink_gbps\": " V(20) "}], \"gpus\": [{\"switch\": 0}, {\"socket\": 0}]}";
    if (hw_topo_parse(good, "good", &t)) fail_msg("%s", kv_errmsg());
    assert_int_equal(t.gpu[0].sw, 0);
    assert_int_equal(t.gpu[1].sw, -1);
    assert_rel(t.sw[0].uplink_bw.value, 20e9, 1e-15);
    struct {
        const char *text, *msg;
    } bad[] = {
        {"{\"name\": \"x\", \"profile\": \"p\", \"sockets\": [" SOCK "], \"gpus\": [{\"socket\": 0}], \"extra\": 1}", "unknown key 'extra'"},
        {"{\"name\": \"x\", \"profile\": \"p\", \"sockets\": [" SOCK "], \"gpus\": [{\"socket\": 1}]}", "gpus[0].socket"},
        {"{\"name\": \"x\", \"profile\": \"p\", \"sockets\": [" SOCK "], \"gpus\": [{\"switch\": 0}]}", "no switches"},
        {"{\"name\": \"x\", \"profile\": \"p\", \"sockets\": [" SOCK "], \"switches\": [{\"name\": \"s\", \"socket\": 0, \"uplink_gbps\": " V(20) "}],"
         " \"gpus\": [{\"switch\": 0, \"socket\": 0}]}", "exactly one of"},
        {"{\"name\": \"x\", \"profile\": \"p\", \"sockets\": [" SOCK "], \"switches\": [{\"name\": \"s\", \"socket\": 0, \"uplink_gbps\": " V(20) "}],"
         " \"gpus\": [{\"socket\": 0}]}", "no GPU under it"},
        {"{\"name\": \"x\", \"profile\": \"p\", \"sockets\": [" SOCK "], \"switches\": [{\"name\": \"s\", \"socket\": 0, \"uplink_gbps\": " V(-3) "}],"
         " \"gpus\": [{\"switch\": 0}]}", "uplink_gbps.value"},
        {"{\"name\": \"x\", \"profile\": \"p\", \"sockets\": [" SOCK "], \"inter_socket_gbps\": " V(10) ", \"gpus\": [{\"socket\": 0}]}",
         "two or more sockets"},
        {"{\"name\": \"x\", \"profile\": \"p\", \"sockets\": [" SOCK ", " SOCK "], \"gpus\": [{\"socket\": 0}]}", "inter_socket_gbps"},
        {"{\"name\": \"x\", \"profile\": \"p\", \"sockets\": [{\"name\": \"c0\", \"dram_gbps\": {\"value\": 100, \"source\": \"no label\"}, "
         "\"cores\": " V(8) ", \"attn_gflops_per_core\": " V(1) ", \"memory_gib\": " V(64) "}], \"gpus\": [{\"socket\": 0}]}", "label"},
        {"{\"name\": \"x\", \"profile\": \"p\", \"sockets\": [], \"gpus\": [{\"socket\": 0}]}", "sockets"},
        {"{\"name\": \"x\", \"profile\": \"p\", \"sockets\": [" SOCK "], \"gpus\": [{\"socket\": 0, \"memory_socket\": 2}]}", "memory_socket"},
        {"{\"name\": \"x\", \"sockets\": [" SOCK "], \"gpus\": [{\"socket\": 0}]}", "missing field 'profile'"},
        {"[1, 2]", "top level"},
        {"{\"name\": ", "bad:1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (hw_topo_parse(bad[i].text, "bad", &t) == KV_OK) fail_msg("case %zu accepted", i);
        if (!strstr(kv_errmsg(), bad[i].msg)) fail_msg("case %zu: '%s' does not say '%s'", i, kv_errmsg(), bad[i].msg);
    }
}

/* ---- the flow-level core, by hand ---------------------------------------------------------- */

static int hop(sim_net *n, double cap, int per_byte) {
    n->hop[n->nhop] = (sim_hop){"h", cap, 1, -1, per_byte};
    return n->nhop++;
}
static void route(sim_net *n, int r, int kind, int a, int b, int c) {
    sim_route *rt = &n->route[r][kind];
    rt->n = 0;
    rt->hop[rt->n++] = a;
    if (b >= 0) rt->hop[rt->n++] = b;
    if (c >= 0) rt->hop[rt->n++] = c;
}
static int32_t xfer(sim_des *d, int rep, kv_resource r, double bytes, double work) {
    sim_des_replica(d, rep);
    int32_t id = sim_des_task(d, r == KV_RES_H2D ? KV_OP_KV_H2D : r == KV_RES_D2H ? KV_OP_KV_D2H : KV_OP_CPU_ATTN,
                              r == KV_RES_H2D ? KV_Q_CACHE : r == KV_RES_D2H ? KV_Q_STORE : KV_Q_CPU, 0, 0, 0);
    sim_task *t = sim_des_get(d, id);
    t->bytes = bytes, t->work = work;
    return id;
}
static double run(sim_des *d) {
    sim_des_stats st;
    if (sim_des_run(d, &st) != KV_OK) fail_msg("%s", kv_errmsg());
    return sim_to_s(st.makespan);
}
static double end_of(sim_des *d, int32_t id) { return sim_to_s(sim_des_get(d, id)->end); }

/* Replicas r < n: GPU link (h2d, d2h) of 10 GB/s, then uplink of replica r's switch, then DRAM. */
static void star(sim_net *net, int n, int per_switch, double link, double uplink, double dram, double cores) {
    memset(net, 0, sizeof *net);
    net->nrep = n;
    int gl[8][2], up[8][2], dr = -1, co = -1;
    for (int r = 0; r < n; r++) {
        gl[r][0] = hop(net, link, 0), gl[r][1] = hop(net, link, 0);
        net->hop[gl[r][0]].pair = gl[r][1], net->hop[gl[r][1]].pair = gl[r][0];
    }
    for (int s = 0; s < (n + per_switch - 1) / per_switch; s++) up[s][0] = hop(net, uplink, 1), up[s][1] = hop(net, uplink, 1);
    dr = hop(net, dram, 1), co = hop(net, cores, 0);
    for (int r = 0; r < n; r++) {
        route(net, r, SIM_R_H2D, gl[r][0], up[r / per_switch][0], dr);
        route(net, r, SIM_R_D2H, gl[r][1], up[r / per_switch][1], dr);
        route(net, r, SIM_R_CPU, co, dr, -1);
    }
}

static void t_shared_uplink(void **s) {
    (void)s;
    sim_des *d = sim_des_new();
    sim_net net;
    /* one replica, 1 GB through a 1 GB/s uplink behind a 10 GB/s link: 1 s */
    star(&net, 1, 2, 10e9, 1e9, 1e12, 1e12);
    assert_int_equal(sim_des_net(d, &net), KV_OK);
    xfer(d, 0, KV_RES_H2D, 1e9, 1e9);
    assert_rel(run(d), 1.0, 1e-12);
    /* two replicas on that uplink, the uplink the only bottleneck: twice as long */
    sim_des_reset(d);
    star(&net, 2, 2, 10e9, 1e9, 1e12, 1e12);
    assert_int_equal(sim_des_net(d, &net), KV_OK);
    int32_t a = xfer(d, 0, KV_RES_H2D, 1e9, 1e9), b = xfer(d, 1, KV_RES_H2D, 1e9, 1e9);
    assert_rel(run(d), 2.0, 1e-12);
    assert_rel(end_of(d, a), 2.0, 1e-12);
    assert_rel(end_of(d, b), 2.0, 1e-12);
    double busy, sat, bytes;
    sim_des_hop_stats(d, 4, &busy, &sat, &bytes); /* hops: 4 GPU link directions, then the uplink h2d */
    assert_rel(busy, 2.0, 1e-12);
    assert_rel(sat, 2.0, 1e-12);
    assert_rel(bytes, 2e9, 1e-12);
    sim_des_hop_stats(d, 0, &busy, &sat, &bytes);
    assert_rel(sat, 0, 1e-12); /* the GPU links never bound */
    /* the same replicas on two switches: independent, 1 s */
    sim_des_reset(d);
    star(&net, 2, 1, 10e9, 1e9, 1e12, 1e12);
    assert_int_equal(sim_des_net(d, &net), KV_OK);
    xfer(d, 0, KV_RES_H2D, 1e9, 1e9), xfer(d, 1, KV_RES_H2D, 1e9, 1e9);
    assert_rel(run(d), 1.0, 1e-12);
    /* H2D and D2H on one uplink are separate directions: 1 s */
    sim_des_reset(d);
    star(&net, 2, 2, 10e9, 1e9, 1e12, 1e12);
    assert_int_equal(sim_des_net(d, &net), KV_OK);
    xfer(d, 0, KV_RES_H2D, 1e9, 1e9), xfer(d, 1, KV_RES_D2H, 1e9, 1e9);
    assert_rel(run(d), 1.0, 1e-12);
    /* the size efficiency slows a copy on its own link, not the wire: work 2 GB for 1 GB of bytes
     * on a 1 GB/s link (2 s alone); on an uplink of 0.5 GB/s the bytes bound: 1 GB / 0.5 = 2 s, and
     * a second such copy on the uplink makes it 4 s */
    sim_des_reset(d);
    star(&net, 2, 2, 1e9, 0.5e9, 1e12, 1e12);
    assert_int_equal(sim_des_net(d, &net), KV_OK);
    xfer(d, 0, KV_RES_H2D, 1e9, 2e9), xfer(d, 1, KV_RES_H2D, 1e9, 2e9);
    assert_rel(run(d), 4.0, 1e-12);
    sim_des_free(d);
}

static void t_dram_bound(void **s) {
    (void)s;
    sim_des *d = sim_des_new();
    sim_net net;
    /* four replicas, own switches of 10 GB/s, host DRAM 20 GB/s: 4 GB / 20 GB/s = 0.2 s (alone 0.1 s) */
    star(&net, 4, 1, 10e9, 10e9, 20e9, 1e12);
    assert_int_equal(sim_des_net(d, &net), KV_OK);
    for (int r = 0; r < 4; r++) xfer(d, r, KV_RES_H2D, 1e9, 1e9);
    assert_rel(run(d), 0.2, 1e-12);
    /* both directions draw on DRAM: H2D of 1 GB and D2H of 1 GB on 10 GB/s of DRAM: 0.2 s */
    sim_des_reset(d);
    star(&net, 2, 1, 10e9, 10e9, 10e9, 1e12);
    assert_int_equal(sim_des_net(d, &net), KV_OK);
    xfer(d, 0, KV_RES_H2D, 1e9, 1e9), xfer(d, 1, KV_RES_D2H, 1e9, 1e9);
    assert_rel(run(d), 0.2, 1e-12);
    /* CPU attention reads 1 GB of KV (cores 100 GB/s) while a copy moves 1 GB, DRAM 10 GB/s:
     * each gets 5 GB/s, both end at 0.2 s */
    sim_des_reset(d);
    star(&net, 2, 1, 10e9, 10e9, 10e9, 100e9);
    assert_int_equal(sim_des_net(d, &net), KV_OK);
    int32_t c = xfer(d, 0, KV_RES_CPU, 1e9, 1e9), h = xfer(d, 1, KV_RES_H2D, 1e9, 1e9);
    assert_rel(run(d), 0.2, 1e-12);
    assert_rel(end_of(d, c), 0.2, 1e-12);
    assert_rel(end_of(d, h), 0.2, 1e-12);
    /* cores the bound: two CPU attentions of 1 GB each on cores of 4 GB/s (DRAM 100): 0.5 s;
     * CPU attention's fixed time is ignored on a network, its rate comes from the hops */
    sim_des_reset(d);
    star(&net, 2, 1, 10e9, 10e9, 100e9, 4e9);
    assert_int_equal(sim_des_net(d, &net), KV_OK);
    sim_des_get(d, xfer(d, 0, KV_RES_CPU, 1e9, 1e9))->fixed_s = 7;
    xfer(d, 1, KV_RES_CPU, 1e9, 1e9);
    assert_rel(run(d), 0.5, 1e-12);
    sim_des_free(d);
}

static void t_maxmin(void **s) {
    (void)s;
    sim_des *d = sim_des_new();
    sim_net net;
    /* A crosses its 1 GB/s link and a shared 3 GB/s uplink, B its 10 GB/s link and the uplink:
     * max-min gives A 1 and B the remaining 2. A (1 GB) ends at 1 s; B moved 2 of its 4 GB by then,
     * the other 2 at min(10, 3) = 3 GB/s: 1 + 2/3 s */
    memset(&net, 0, sizeof net);
    net.nrep = 2;
    int la = hop(&net, 1e9, 0), lb = hop(&net, 10e9, 0), up = hop(&net, 3e9, 1), dr = hop(&net, 1e12, 1);
    route(&net, 0, SIM_R_H2D, la, up, dr), route(&net, 1, SIM_R_H2D, lb, up, dr);
    for (int r = 0; r < 2; r++) route(&net, r, SIM_R_D2H, r ? lb : la, dr, -1), route(&net, r, SIM_R_CPU, dr, -1, -1);
    assert_int_equal(sim_des_net(d, &net), KV_OK);
    int32_t a = xfer(d, 0, KV_RES_H2D, 1e9, 1e9), b = xfer(d, 1, KV_RES_H2D, 4e9, 4e9);
    assert_rel(run(d), 1.0 + 2.0 / 3, 1e-12);
    assert_rel(end_of(d, a), 1.0, 1e-12);
    assert_rel(end_of(d, b), 1.0 + 2.0 / 3, 1e-12);
    /* duplex coupling stays on a GPU link: 0.5 while the other direction copies (as one GPU) */
    sim_des_reset(d);
    star(&net, 1, 1, 1e9, 100e9, 1e12, 1e12);
    net.hop[0].duplex = net.hop[1].duplex = 0.5;
    assert_int_equal(sim_des_net(d, &net), KV_OK);
    xfer(d, 0, KV_RES_H2D, 1e9, 1e9), xfer(d, 0, KV_RES_D2H, 1e9, 1e9);
    assert_rel(run(d), 2.0, 1e-12);
    /* a malformed network is refused */
    net.route[0][SIM_R_H2D].n = 0;
    assert_int_equal(sim_des_net(d, &net), KV_EINVAL);
    star(&net, 1, 1, 1e9, 1e9, 1e9, 1e9);
    net.hop[2].cap = 0;
    assert_int_equal(sim_des_net(d, &net), KV_EINVAL);
    sim_des_free(d);
}

/* ---- whole plans -------------------------------------------------------------------------- */

/* n GPUs, each on its own switch and socket, every shared hop as fast as the profile's CPU: no
 * replica can slow another. */
static void independent(const hw_profile *p, int n, hw_topo *t) {
    hw_topo_default(p, n, t);
    t->nsockets = n, t->nswitches = n;
    for (int g = 0; g < n; g++) {
        t->socket[g] = t->socket[0];
        t->sw[g].socket = g;
        t->sw[g].uplink_bw.value = 1e15;
        t->gpu[g] = (hw_gpu_slot){g, g, g};
    }
}

static void t_independent_equals_single(void **s) {
    (void)s;
    kv_model m = mdl("opt-1.3b");
    hw_profile p = hwp("a100-80gb");
    kv_policy pols[] = {KV_POL_OFFLOAD, KV_POL_KVPR, KV_POL_CPU_ATTN};
    sim_ctx *a = sim_new(), *b = sim_new();
    for (int i = 0; i < 3; i++)
        for (int mode = 0; mode < 2; mode++) {
            kv_plan pl;
            kv_plan_defaults(&pl);
            pl.policy = pols[i], pl.mode = mode ? KV_MODE_THROUGHPUT : KV_MODE_LATENCY;
            pl.batch = 8, pl.nb = mode ? 2 : 1, pl.prompt = 200, pl.gen = 4, pl.layers = 3;
            if (pl.policy == KV_POL_KVPR) pl.split = 120;
            sim_result one;
            if (sim_run(a, &m, &p, &pl, &one)) fail_msg("%s", kv_errmsg());
            hw_topo t;
            independent(&p, 4, &t);
            sim_multi_result r;
            if (sim_multi_run(b, &m, &p, &t, 4, &pl, &r)) fail_msg("%s", kv_errmsg());
            for (int g = 0; g < 4; g++) assert_rel(r.rep_decode_s[g], one.decode_s, 1e-9);
            assert_rel(r.prefill_s, one.prefill_s, 1e-9);
            assert_rel(r.aggregate_tok_s, 4 * one.decode_tok_s, 1e-9);
            /* deterministic: the same run twice, bit for bit */
            sim_multi_result r2;
            if (sim_multi_run(b, &m, &p, &t, 4, &pl, &r2)) fail_msg("%s", kv_errmsg());
            assert_true(r2.aggregate_tok_s == r.aggregate_tok_s && r2.decode_s == r.decode_s);
            /* and a single-GPU run after a multi-GPU one on the same context is the single run */
            sim_result again;
            if (sim_run(b, &m, &p, &pl, &again)) fail_msg("%s", kv_errmsg());
            assert_true(again.decode_s == one.decode_s && again.prefill_s == one.prefill_s);
        }
    sim_free(a);
    sim_free(b);
}

static void t_shared_plans(void **s) {
    (void)s;
    kv_model m = mdl("opt-1.3b");
    hw_profile p = hwp("a100-80gb");
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.policy = KV_POL_OFFLOAD, pl.batch = 32, pl.prompt = 512, pl.gen = 3, pl.layers = 2, pl.no_prefill = 1;
    sim_ctx *x = sim_new();
    /* two GPUs behind one uplink of a tenth of their link: a link-bound run takes about twice as
     * long as one GPU alone behind it, and never less */
    hw_topo t;
    hw_topo_default(&p, 2, &t);
    t.nswitches = 1;
    t.sw[0] = (hw_switch){"sw", 0, {p.link.h2d.bandwidth.value / 10, "[est] test"}};
    t.socket[0].dram_bw.value = 1e15;
    t.gpu[0].sw = t.gpu[1].sw = 0;
    sim_multi_result one, two;
    if (sim_multi_run(x, &m, &p, &t, 1, &pl, &one) || sim_multi_run(x, &m, &p, &t, 2, &pl, &two)) fail_msg("%s", kv_errmsg());
    assert_true(two.rep_decode_s[0] >= one.rep_decode_s[0]);
    assert_rel(two.rep_decode_s[0], 2 * one.rep_decode_s[0], 0.02);
    assert_string_equal(sim_multi_bottleneck(&two), "sw uplink h2d");
    /* the planner's share: DGX A100 at 8 GPUs gives each GPU half a switch uplink and a quarter of
     * a socket's DRAM and cores */
    hw_topo d;
    assert_int_equal(hw_topo_resolve("dgx-a100", &d), KV_OK);
    hw_profile e;
    hw_topo_effective(&d, &p, 8, 0, &e);
    assert_rel(e.link.h2d.bandwidth.value, 13e9, 1e-12);
    assert_rel(e.cpu.mem_bw.value, 164e9 / 4, 1e-12);
    assert_rel(e.cpu.attn_flops.value, 64 * 2.56e9 / 4, 1e-12);
    hw_topo_effective(&d, &p, 1, 0, &e);
    assert_rel(e.link.h2d.bandwidth.value, p.link.h2d.bandwidth.value, 1e-12);
    /* a slower share never makes the pipelined scheduler recompute less */
    kv_model m7 = mdl("opt-6.7b");
    hw_profile q = hwp("rtx4090");
    hw_topo r4;
    assert_int_equal(hw_topo_resolve("rtx4090-8x", &r4), KV_OK);
    kv_plan k;
    kv_plan_defaults(&k);
    k.batch = 16, k.prompt = 1024, k.gen = 8;
    int prev = -1;
    for (int n = 1; n <= 8; n *= 2) {
        hw_topo_effective(&r4, &q, n, 0, &e);
        sched_result sr = {0};
        if (sched_plan(SCHED_PIPELINED, &m7, &e, &k, NULL, &sr)) fail_msg("%s", kv_errmsg());
        assert_true(sr.split >= prev);
        prev = sr.split;
        sched_result_free(&sr);
    }
    sim_free(x);
}

/* The search plans one replica of a shared host: with eight GPUs on DGX A100's four uplinks, the
 * best offloading plan streams at most half an uplink, so it cannot be faster than alone. */
static void t_search(void **s) {
    (void)s;
    kv_model m = mdl("OPT-1.3B");
    hw_profile p = hwp("a100-80gb");
    hw_topo t;
    assert_int_equal(hw_topo_resolve("dgx-a100", &t), KV_OK);
    search_opts o;
    search_opts_defaults(&o);
    o.prompt = 256, o.gen = 4, o.top = 2, o.objective = SEARCH_DECODE;
    o.policies = 1u << KV_POL_OFFLOAD, o.gpu_bytes = 3.0 * 1073741824.0, o.sequences = 64;
    search_result alone, shared;
    if (search_run(&m, &p, &o, &alone)) fail_msg("%s", kv_errmsg());
    o.topo = &t, o.gpus = 8;
    if (search_run(&m, &p, &o, &shared)) fail_msg("%s", kv_errmsg());
    assert_true(alone.has[KV_POL_OFFLOAD] && shared.has[KV_POL_OFFLOAD]);
    assert_true(shared.best[KV_POL_OFFLOAD].decode_tok_s < alone.best[KV_POL_OFFLOAD].decode_tok_s);
    search_result_free(&alone);
    search_result_free(&shared);
}

/* ---- the command line and experiments ------------------------------------------------------ */

static void t_cli(void **s) {
    (void)s;
    static char out[1 << 16];
    const char *w = "--model opt-1.3b --batch 8 --prompt 256 --gen 4 --layers 2 --no-db";
    /* --gpus 1 without a topology is the single-GPU run, to the printed digit */
    assert_int_equal(run_cmd(out, sizeof out, "%s sim %s --hw a100-80gb --policy offload --json", kvpr_bin(), w), 0);
    json_t *one = json_loads(out, 0, NULL);
    assert_non_null(one);
    assert_int_equal(run_cmd(out, sizeof out, "%s sim %s --hw a100-80gb --policy offload --gpus 1 --json", kvpr_bin(), w), 0);
    json_t *g1 = json_loads(out, 0, NULL);
    assert_non_null(g1);
    assert_rel(json_real_value(json_object_get(g1, "aggregate_tok_s")), json_real_value(json_object_get(one, "decode_tok_s")), 1e-9);
    json_decref(one), json_decref(g1);
    /* a shipped topology: its profile unless --hw, per-GPU figures summing to the aggregate */
    assert_int_equal(run_cmd(out, sizeof out, "%s sim %s --topology dgx-a100 --gpus 4 --policy kvpr --json", kvpr_bin(), w), 0);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    json_t *per = json_object_get(j, "per_gpu_tok_s");
    assert_int_equal(json_array_size(per), 4);
    double sum = 0;
    for (size_t i = 0; i < 4; i++) sum += json_real_value(json_array_get(per, i));
    assert_rel(sum, json_real_value(json_object_get(j, "aggregate_tok_s")), 1e-9);
    assert_string_equal(json_string_value(json_object_get(j, "topology")), "dgx-a100");
    assert_true(json_string_length(json_object_get(j, "bottleneck")) > 0);
    json_decref(j);
    assert_int_equal(run_cmd(out, sizeof out, "%s sim %s --topology rtx4090-8x --gpus 8 --policy offload", kvpr_bin(), w), 0);
    assert_non_null(strstr(out, "bottleneck   sw0 uplink h2d"));
    /* bad input: one line, non-zero */
    const char *bad[][2] = {{"--hw a100-80gb --gpus 0", "--gpus wants"},      {"--hw a100-80gb --gpus 17", "--gpus wants"},
                            {"--hw a100-80gb --gpus x", "--gpus wants"},      {"--topology gh200-pair --gpus 3", "1 to 2"},
                            {"--topology no-such", "unknown topology"},       {"--topology ../x", "../x"},
                            {"--topology dgx-a100 --trace t.json", "--trace"}, {"--topology dgx-a100 --csv", "--csv"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = run_cmd(out, sizeof out, "%s sim %s %s", kvpr_bin(), w, bad[i][0]);
        if (rc == 0 || !strstr(out, bad[i][1])) fail_msg("'%s' gave %d: %s", bad[i][0], rc, out);
        char *nl = strchr(out, '\n');
        if (!nl || nl[1]) fail_msg("'%s': not one line: %s", bad[i][0], out);
    }
}

static void t_experiment(void **s) {
    (void)s;
    exp_spec sp;
    char path[600];
    assert_int_equal(exp_find("whatif-servers", path, sizeof path), KV_OK);
    assert_int_equal(exp_parse(path, &sp), KV_OK);
    assert_int_equal(exp_check(&sp), KV_OK);
    assert_int_equal(sp.ngpus, 4);
    int ran, nofit;
    char db[600];
    snprintf(db, sizeof db, "%s/servers.db", tmp_dir());
    remove(db);
    /* before any run: the report says every run is missing */
    kv_db *h;
    assert_int_equal(db_open(db, 1000, &h), KV_OK);
    db_close(h);
    char *buf = NULL;
    size_t bn = 0;
    FILE *f = open_memstream(&buf, &bn);
    assert_int_equal(exp_servers_report(&sp, db, NULL, 0, f), KV_OK);
    fclose(f);
    assert_non_null(strstr(buf, "42 of 42 runs are not in"));
    free(buf);
    assert_int_equal(exp_servers_execute(&sp, db, &ran, &nofit), KV_OK);
    /* 3 topologies x 3 policies x 4 GPU counts, and the GH200 pair at 1 and 2 */
    assert_int_equal(ran + nofit, 3 * 3 * 4 + 3 * 2);
    assert_int_equal(nofit, 0);
    /* a rerun replaces its runs (run keys), one run per configuration */
    assert_int_equal(exp_servers_execute(&sp, db, &ran, &nofit), KV_OK);
    assert_int_equal(db_open_ro(db, 1000, &h), KV_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db_handle(h), "SELECT count(*), count(DISTINCT run_key) FROM runs", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 42);
    assert_int_equal(sqlite3_column_int(q, 1), 42);
    sqlite3_finalize(q);
    /* a stored run against the same configuration simulated here: rtx4090-8x, offload, 4 GPUs */
    assert_int_equal(sqlite3_prepare_v2(db_handle(h),
                                        "SELECT m.name, m.value, r.hardware FROM runs r JOIN metrics m ON m.run_id = r.id WHERE r.run_key = "
                                        "'exp/whatif-servers/OPT-6.7B/rtx4090-8x/latency/16/1024/8/offload/-/gpus-4'",
                                        -1, &q, NULL),
                     SQLITE_OK);
    double agg = -1, g3 = -1, share = -1;
    const char *bott = NULL;
    char bn_[64] = "";
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *nm = (const char *)sqlite3_column_text(q, 0);
        if (!strcmp(nm, "aggregate_tok_s")) agg = sqlite3_column_double(q, 1);
        if (!strcmp(nm, "gpu3_tok_s")) g3 = sqlite3_column_double(q, 1);
        if (!strncmp(nm, "bottleneck:", 11)) snprintf(bn_, sizeof bn_, "%s", nm + 11), share = sqlite3_column_double(q, 1), bott = bn_;
        assert_string_equal((const char *)sqlite3_column_text(q, 2), "rtx4090-8x");
    }
    sqlite3_finalize(q);
    db_close(h);
    {
        kv_model m = mdl("OPT-6.7B");
        hw_profile p = hwp("rtx4090");
        hw_topo t;
        assert_int_equal(hw_topo_resolve("rtx4090-8x", &t), KV_OK);
        kv_plan pl;
        kv_plan_defaults(&pl);
        pl.policy = KV_POL_OFFLOAD, pl.batch = 16, pl.prompt = 1024, pl.gen = 8;
        sim_ctx *x = sim_new();
        sim_multi_result r;
        if (sim_multi_run(x, &m, &p, &t, 4, &pl, &r)) fail_msg("%s", kv_errmsg());
        sim_free(x);
        assert_rel(agg, r.aggregate_tok_s, 1e-12);
        assert_rel(g3, r.rep_tok_s[3], 1e-12);
        assert_non_null(bott);
        assert_string_equal(bott, sim_multi_bottleneck(&r));
        assert_rel(share, r.bottleneck_share, 1e-12);
    }
    /* the report reads them back: every row present, the same figure */
    f = open_memstream(&buf, &bn);
    assert_int_equal(exp_servers_report(&sp, db, NULL, 1, f), KV_OK);
    fclose(f);
    assert_null(strstr(buf, "not run"));
    char row[160];
    snprintf(row, sizeof row, "rtx4090-8x,OPT-6.7B,offload,4,,%.6g,", agg);
    if (!strstr(buf, row)) fail_msg("no '%s' in\n%s", row, buf);
    free(buf);
    const char *bad[][2] = {{"name = x\nmodels = OPT-1.3B\nhardware = dgx-a100\nbatch = 8\nprompt = 64\ngen = 4\ngpus = 0\n", "gpus"},
                            {"name = x\nmodels = OPT-1.3B\nhardware = dgx-a100\nbatch = 8 16\nprompt = 64\ngen = 4\ngpus = 1 2\n", "one mode"},
                            {"name = x\nmodels = OPT-1.3B\nhardware = dgx-a100\nbatch = 8\nprompt = 64\ngen = 4\ngpus = 2 2\n", "twice"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (exp_parse_text(bad[i][0], "t.exp", &sp) == KV_OK) fail_msg("case %zu accepted", i);
        if (!strstr(kv_errmsg(), bad[i][1])) fail_msg("case %zu: '%s'", i, kv_errmsg());
    }
    /* hardware names topologies there: a profile name is refused before any run */
    assert_int_equal(exp_parse_text("name = x\nmodels = OPT-1.3B\nhardware = a100-80gb\nbatch = 8\nprompt = 64\ngen = 4\ngpus = 2\n", "t.exp", &sp),
                     KV_OK);
    assert_int_not_equal(exp_check(&sp), KV_OK);
    assert_non_null(strstr(kv_errmsg(), "unknown topology"));
}

/* The search for one of 8 replicas on DGX A100 (two GPUs per switch uplink) against the search for
 * one GPU alone on the same host, both choices simulated with all 8 replicas together: the plans
 * differ and the shared one is faster in aggregate. */
static double agg_of(sim_ctx *x, const kv_model *m, const hw_profile *p, const hw_topo *t, int n, const kv_plan *pl) {
    sim_multi_result r;
    kv_status st = sim_multi_run(x, m, p, t, n, pl, &r);
    if (st == KV_ENOFIT) {
        kv_errclear();
        return 0;
    }
    if (st) fail_msg("%s", kv_errmsg());
    return r.aggregate_tok_s;
}

/* the case of both tests: OPT-1.3B on DGX A100 with 3 GiB of GPU memory, 64 sequences per GPU */
static void gpus_case(kv_model *m, hw_profile *p, hw_topo *t, search_opts *o) {
    *m = mdl("OPT-1.3B");
    *p = hwp("a100-80gb");
    if (hw_topo_resolve("dgx-a100", t)) fail_msg("%s", kv_errmsg());
    search_opts_defaults(o);
    o->prompt = 512, o->gen = 4, o->top = 8, o->objective = SEARCH_DECODE, o->per_step = 0;
    o->policies = 1u << KV_POL_KVPR, o->gpu_bytes = 3.0 * 1073741824.0, o->sequences = 64;
    p->gpu.mem_bytes.value = o->gpu_bytes; /* the replicas' simulation checks the same GPU */
    o->topo = t;
}

static void t_search_gpus(void **s) {
    (void)s;
    kv_model m;
    hw_profile p;
    hw_topo t;
    search_opts o;
    gpus_case(&m, &p, &t, &o);
    search_result alone, shared;
    o.gpus = 1;
    if (search_run(&m, &p, &o, &alone)) fail_msg("%s", kv_errmsg());
    o.gpus = 8;
    if (search_run(&m, &p, &o, &shared)) fail_msg("%s", kv_errmsg());
    const kv_plan *a = &alone.c[0].plan, *b = &shared.c[0].plan;
    assert_true(a->split != b->split || a->batch != b->batch || a->nb != b->nb || a->percent.cc != b->percent.cc);
    sim_ctx *x = sim_new();
    double va = agg_of(x, &m, &p, &t, 8, a), vb = agg_of(x, &m, &p, &t, 8, b);
    assert_true(va > 0 && vb > 1.05 * va);
    sim_free(x);
    search_result_free(&alone);
    search_result_free(&shared);
}

/* kvpr search --gpus/--topology: the plan is for N replicas on T, simulated together; JSON fields;
 * bad input on one line */
static void t_search_cli(void **s) {
    (void)s;
    static char out[1 << 17];
    const char *w = "--model opt-1.3b --prompt 512 --gen 4 --objective decode --policies kvpr --gpu-mem 3 --sequences 64 --top 2";
    assert_int_equal(run_cmd(out, sizeof out, "%s search %s --topology dgx-a100 --gpus 8 --json", kvpr_bin(), w), 0);
    json_t *j = json_loads(out, 0, NULL);
    if (!j) fail_msg("not JSON: %s", out);
    assert_string_equal(json_string_value(json_object_get(j, "topology")), "dgx-a100");
    assert_string_equal(json_string_value(json_object_get(j, "hw")), "a100-80gb");
    assert_int_equal(json_integer_value(json_object_get(j, "gpus")), 8);
    json_t *rep = json_object_get(j, "replicas"), *al = json_object_get(json_object_get(j, "alone"), "replicas");
    assert_true(json_is_object(rep) && json_is_object(al));
    json_t *per = json_object_get(rep, "per_gpu_tok_s");
    assert_int_equal(json_array_size(per), 8);
    double sum = 0;
    for (size_t i = 0; i < 8; i++) sum += json_real_value(json_array_get(per, i));
    double agg = json_real_value(json_object_get(rep, "aggregate_tok_s")), aagg = json_real_value(json_object_get(al, "aggregate_tok_s"));
    assert_rel(sum, agg, 1e-8);
    assert_true(agg > aagg);
    assert_rel(json_real_value(json_object_get(j, "aggregate_gain_over_alone")), agg / aagg - 1, 1e-8);
    /* brute force: every candidate of the same search (its first 8) with every split (step 8),
     * each run by the 8 replicas; the command's plan is within 1 % of the best, the one-GPU plan is not */
    {
        kv_model m;
        hw_profile p;
        hw_topo t;
        search_opts o;
        search_result r;
        gpus_case(&m, &p, &t, &o);
        o.gpus = 8;
        if (search_run(&m, &p, &o, &r)) fail_msg("%s", kv_errmsg());
        sim_ctx *x = sim_new();
        double best = 0;
        for (int i = 0; i < r.n; i++) {
            kv_plan q = r.c[i].plan;
            q.split_steps = NULL;
            for (int l = 0; l <= q.prompt; l += 8) {
                q.split = l;
                double v = agg_of(x, &m, &p, &t, 8, &q);
                if (v > best) best = v;
            }
        }
        sim_free(x);
        search_result_free(&r);
        if (agg < 0.99 * best) fail_msg("command's plan %.1f tok/s, brute force %.1f tok/s", agg, best);
        assert_true(aagg < 0.99 * best);
    }
    assert_true(json_string_length(json_object_get(rep, "bottleneck")) > 0);
    /* the replicas run the plan reported */
    json_t *c0 = json_object_get(j, "plan");
    assert_int_equal(json_integer_value(json_object_get(c0, "split")), json_integer_value(json_object_get(rep, "split")));
    assert_string_equal(json_string_value(json_object_get(c0, "policy")), json_string_value(json_object_get(rep, "policy")));
    json_decref(j);
    assert_int_equal(run_cmd(out, sizeof out, "%s search %s --topology dgx-a100 --gpus 8", kvpr_bin(), w), 0);
    assert_non_null(strstr(out, "8 replicas on dgx-a100"));
    assert_non_null(strstr(out, "bottleneck sw"));
    assert_non_null(strstr(out, "run it: kvpr sim --model OPT-1.3B --gpus 8 --topology dgx-a100"));
    const char *bad[][2] = {{"--topology gh200-pair --gpus 3", "1 to 2"},   {"--topology no-such", "unknown topology"},
                            {"--hw a100-80gb --gpus 0", "--gpus"},          {"--hw a100-80gb --gpus 17", "--gpus"},
                            {"--topology dgx-a100 --validate", "--validate"}, {"--gpus 2", "--hw (or --topology)"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = run_cmd(out, sizeof out, "%s search %s %s", kvpr_bin(), w, bad[i][0]);
        if (rc == 0 || !strstr(out, bad[i][1])) fail_msg("'%s' gave %d: %s", bad[i][0], rc, out);
        char *nl = strchr(out, '\n');
        if (!nl || nl[1]) fail_msg("'%s': not one line: %s", bad[i][0], out);
    }
}

/* kvpr hw topologies / hw show TOPOLOGY: every shipped topology listed; its JSON reads back as the
 * same topology (every number with its source); a profile name still shows the profile */
static void t_hw_cli(void **s) {
    (void)s;
    static char out[1 << 17];
    char names[32][64];
    int n = hw_topo_list(names, 32);
    assert_true(n >= 4);
    assert_int_equal(run_cmd(out, sizeof out, "%s hw topologies", kvpr_bin()), 0);
    for (int i = 0; i < n; i++) assert_non_null(strstr(out, names[i]));
    assert_non_null(strstr(out, "a100-80gb"));
    assert_int_equal(run_cmd(out, sizeof out, "%s hw topologies --json", kvpr_bin()), 0);
    json_t *a = json_loads(out, 0, NULL);
    assert_true(json_is_array(a));
    assert_int_equal(json_array_size(a), n);
    json_decref(a);
    for (int i = 0; i < n; i++) {
        hw_topo t, u;
        assert_int_equal(hw_topo_resolve(names[i], &t), KV_OK);
        assert_int_equal(run_cmd(out, sizeof out, "%s hw show %s --json", kvpr_bin(), names[i]), 0);
        if (hw_topo_parse(out, names[i], &u)) fail_msg("%s: %s", names[i], kv_errmsg());
        assert_int_equal(u.ngpus, t.ngpus);
        assert_int_equal(u.nsockets, t.nsockets);
        assert_int_equal(u.nswitches, t.nswitches);
        for (int k = 0; k < t.nsockets; k++) {
            assert_rel(u.socket[k].dram_bw.value, t.socket[k].dram_bw.value, 1e-9);
            assert_rel(u.socket[k].attn_per_core.value, t.socket[k].attn_per_core.value, 1e-9);
            assert_rel(u.socket[k].mem_bytes.value, t.socket[k].mem_bytes.value, 1e-9);
            assert_string_equal(u.socket[k].attn_per_core.source, t.socket[k].attn_per_core.source);
        }
        for (int k = 0; k < t.nswitches; k++) assert_rel(u.sw[k].uplink_bw.value, t.sw[k].uplink_bw.value, 1e-9);
        for (int k = 0; k < t.ngpus; k++) {
            assert_int_equal(u.gpu[k].sw, t.gpu[k].sw);
            assert_int_equal(u.gpu[k].mem_socket, t.gpu[k].mem_socket);
        }
        /* the text form: each number's source printed */
        assert_int_equal(run_cmd(out, sizeof out, "%s hw show %s", kvpr_bin(), names[i]), 0);
        assert_non_null(strstr(out, t.socket[0].dram_bw.source));
        assert_non_null(strstr(out, t.socket[0].attn_per_core.source));
    }
    assert_int_equal(run_cmd(out, sizeof out, "%s hw show a100-80gb", kvpr_bin()), 0);
    assert_non_null(strstr(out, "profile a100-80gb"));
    assert_int_equal(run_cmd(out, sizeof out, "%s hw list", kvpr_bin()), 0);
    assert_non_null(strstr(out, "host topologies (kvpr hw topologies): dgx-a100"));
    int rc = run_cmd(out, sizeof out, "%s hw show dgx-b300", kvpr_bin());
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "nor a topology"));
    assert_int_not_equal(run_cmd(out, sizeof out, "%s hw topologies extra", kvpr_bin()), 0);
}

/* kvpr sim --gpus stores one run (keyed: a rerun replaces it) with the figures it prints */
static void t_sim_db(void **s) {
    (void)s;
    static char out[1 << 16];
    char db[600];
    snprintf(db, sizeof db, "%s/simgpus.db", tmp_dir());
    remove(db);
    const char *w = "--model opt-1.3b --batch 8 --prompt 256 --gen 4 --topology dgx-a100 --gpus 4 --policy offload";
    for (int k = 0; k < 2; k++) assert_int_equal(run_cmd(out, sizeof out, "%s sim %s --db %s --json", kvpr_bin(), w, db), 0);
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    kv_db *h;
    assert_int_equal(db_open_ro(db, 1000, &h), KV_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db_handle(h),
                                        "SELECT count(DISTINCT r.id), r.hardware, max(CASE WHEN m.name = 'aggregate_tok_s' THEN m.value END), "
                                        "max(CASE WHEN m.name = 'bottleneck:' || ? THEN m.value END) FROM runs r JOIN metrics m ON m.run_id = r.id",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(q, 1, json_string_value(json_object_get(j, "bottleneck")), -1, SQLITE_TRANSIENT);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1);
    assert_string_equal((const char *)sqlite3_column_text(q, 1), "dgx-a100");
    assert_rel(sqlite3_column_double(q, 2), json_real_value(json_object_get(j, "aggregate_tok_s")), 1e-9);
    assert_rel(sqlite3_column_double(q, 3), json_real_value(json_object_get(j, "bottleneck_share")), 1e-9);
    sqlite3_finalize(q);
    db_close(h);
    json_decref(j);
}

void group_topo(tcount *c) {
    const struct CMUnitTest t[] = {cmocka_unit_test(t_shipped),       cmocka_unit_test(t_bad_input),
                                   cmocka_unit_test(t_shared_uplink), cmocka_unit_test(t_dram_bound),
                                   cmocka_unit_test(t_maxmin),        cmocka_unit_test(t_independent_equals_single),
                                   cmocka_unit_test(t_shared_plans),  cmocka_unit_test(t_cli),
                                   cmocka_unit_test(t_experiment),    cmocka_unit_test(t_search),
                                   cmocka_unit_test(t_search_gpus),   cmocka_unit_test(t_search_cli),
                                   cmocka_unit_test(t_hw_cli),        cmocka_unit_test(t_sim_db)};
    RUN_GROUP(c, "topo", t);
}
