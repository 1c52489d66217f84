/* sim_multi: the host network of a topology, N graphs in one run, per-GPU metrics. */
#include "multi.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add_hop(sim_net *net, const char *name, double cap, int per_byte) {
    sim_hop *h = &net->hop[net->nhop];
    snprintf(h->name, sizeof h->name, "%s", name);
    h->cap = cap, h->duplex = 1, h->pair = -1, h->per_byte = per_byte;
    return net->nhop++;
}

static void route_add(sim_route *r, int hop) { r->hop[r->n++] = hop; }

/* The hops of the first n GPUs of t, in a fixed order: GPU links, switch uplinks, the inter-socket
 * link, then each socket's DRAM and cores. */
static void build_net(const hw_topo *t, const hw_profile *p, const kv_model *m, const kv_plan *pl, int n, sim_net *net) {
    memset(net, 0, sizeof *net);
    net->nrep = n;
    char nm[40];
    int gl[HW_TOPO_MAX_GPUS][2], up[HW_TOPO_MAX_SWITCHES][2], xs[2] = {-1, -1}, dram[HW_TOPO_MAX_SOCKETS], cores[HW_TOPO_MAX_SOCKETS];
    for (int g = 0; g < n; g++) {
        for (int k = 0; k < 2; k++) {
            const hw_link_dir *ld = k ? &p->link.d2h : &p->link.h2d;
            snprintf(nm, sizeof nm, "gpu%d %s", g, k ? "d2h" : "h2d");
            gl[g][k] = add_hop(net, nm, pl->pageable ? ld->pageable.value : ld->bandwidth.value, 0);
            net->hop[gl[g][k]].duplex = pl->paper_model ? 1 : ld->duplex.value;
        }
        net->hop[gl[g][0]].pair = gl[g][1];
        net->hop[gl[g][1]].pair = gl[g][0];
    }
    for (int s = 0; s < t->nswitches; s++) {
        up[s][0] = up[s][1] = -1;
        for (int g = 0; g < n; g++)
            if (t->gpu[g].sw == s && up[s][0] < 0)
                for (int k = 0; k < 2; k++) {
                    snprintf(nm, sizeof nm, "%s uplink %s", t->sw[s].name, k ? "d2h" : "h2d");
                    up[s][k] = add_hop(net, nm, t->sw[s].uplink_bw.value, 1);
                }
    }
    for (int g = 0; g < n; g++)
        if (t->gpu[g].mem_socket != t->gpu[g].socket && xs[0] < 0) {
            xs[0] = add_hop(net, "inter-socket h2d", t->inter_socket_bw.value, 1);
            xs[1] = add_hop(net, "inter-socket d2h", t->inter_socket_bw.value, 1);
        }
    /* CPU attention flows count KV bytes: the cores' FLOP rate in KV bytes per second */
    double flop_per_byte = 4.0 * m->n_heads * m->head_dim / (double)kv_model_kv_bytes_token_layer(m);
    for (int s = 0; s < t->nsockets; s++) {
        dram[s] = cores[s] = -1;
        for (int g = 0; g < n; g++)
            if (t->gpu[g].mem_socket == s && dram[s] < 0) {
                snprintf(nm, sizeof nm, "%s dram", t->socket[s].name);
                dram[s] = add_hop(net, nm, t->socket[s].dram_bw.value, 1);
                snprintf(nm, sizeof nm, "%s cores", t->socket[s].name);
                cores[s] = add_hop(net, nm, t->socket[s].cores.value * t->socket[s].attn_per_core.value / flop_per_byte, 0);
            }
    }
    for (int g = 0; g < n; g++) {
        const hw_gpu_slot *sl = &t->gpu[g];
        for (int k = 0; k < 2; k++) {
            sim_route *r = &net->route[g][k];
            route_add(r, gl[g][k]);
            if (sl->sw >= 0) route_add(r, up[sl->sw][k]);
            if (sl->mem_socket != sl->socket) route_add(r, xs[k]);
            route_add(r, dram[sl->mem_socket]);
        }
        route_add(&net->route[g][SIM_R_CPU], cores[sl->mem_socket]);
        route_add(&net->route[g][SIM_R_CPU], dram[sl->mem_socket]);
    }
}

kv_status sim_multi_run(sim_ctx *sx, const kv_model *m, const hw_profile *p, const hw_topo *t, int n, const kv_plan *pl,
                        sim_multi_result *out) {
    kv_status st = kv_plan_validate(pl, m);
    if (st) return st;
    memset(out, 0, sizeof *out);
    kv_layout ly;
    if ((st = kv_layout_resolve(m, pl, &ly))) return st;
    if (!pl->paper_model && (st = kv_layout_fits(&ly, p->gpu.mem_bytes.value, 1e300))) return st;
    if ((st = hw_topo_check(t, p, n, ly.cpu_total))) return st;
    sim_net *net = malloc(sizeof *net);
    if (!net) return kv_errorf(KV_ENOMEM, "sim: out of memory");
    build_net(t, p, m, pl, n, net);
    sim_des *d = sim_last_des(sx);
    sim_des_reset(d);
    st = sim_des_net(d, net);
    out->nhop = net->nhop;
    for (int h = 0; h < net->nhop; h++) {
        snprintf(out->hop[h].name, sizeof out->hop[h].name, "%s", net->hop[h].name);
        out->hop[h].cap = net->hop[h].cap;
    }
    free(net);
    if (st) return st;
    int32_t ft[HW_TOPO_MAX_GPUS], first[HW_TOPO_MAX_GPUS + 1];
    for (int r = 0; r < n; r++) {
        sim_des_replica(d, r);
        first[r] = sim_des_count(d);
        if ((st = sim_build(d, m, p, pl, &ly, &ft[r]))) return st;
    }
    first[n] = sim_des_count(d);
    /* CPU attention becomes a flow over its socket's cores and DRAM: its work is the KV it reads */
    for (int32_t i = 0; i < first[n]; i++) {
        sim_task *x = sim_des_get(d, i);
        if (x->res == KV_RES_CPU) x->work = x->bytes;
    }
    sim_des_mark(d, -1);
    sim_des_stats ds;
    if ((st = sim_des_run(d, &ds))) return st;
    int T = kv_plan_steps(pl);
    double seqs = (double)pl->batch * pl->nb, gpu = 0;
    for (int r = 0; r < n; r++) {
        sim_time t0 = ft[r] >= 0 ? sim_des_get(d, ft[r])->end : 0, end = t0, busy = 0;
        for (int32_t i = first[r]; i < first[r + 1]; i++) {
            sim_task *x = sim_des_get(d, i);
            if (x->end > end) end = x->end;
            if (x->res == KV_RES_GPU && x->end > t0) busy += x->end - (x->start > t0 ? x->start : t0);
        }
        double pf = sim_to_s(t0), dec = sim_to_s(end - t0);
        if (pf > out->prefill_s) out->prefill_s = pf;
        if (dec > out->decode_s) out->decode_s = dec;
        out->rep_decode_s[r] = dec;
        out->rep_tok_s[r] = dec > 0 ? seqs * T / dec : 0;
        out->aggregate_tok_s += out->rep_tok_s[r];
        gpu += dec > 0 ? sim_to_s(busy) / dec : 0;
    }
    out->n = n;
    out->gpu_util = gpu / n;
    double total = sim_to_s(ds.makespan), best = 0;
    out->bottleneck = -1;
    for (int h = 0; h < out->nhop; h++) {
        sim_des_hop_stats(d, h, &out->hop[h].busy_s, &out->hop[h].sat_s, &out->hop[h].bytes);
        if (out->hop[h].sat_s > best) best = out->hop[h].sat_s, out->bottleneck = h;
    }
    out->bottleneck_share = total > 0 ? best / total : 0;
    /* a hop that binds less of the time than the GPUs compute is not what limits the run */
    if (out->bottleneck_share < out->gpu_util) out->bottleneck = -1, out->bottleneck_share = out->gpu_util;
    out->events = ds.events;
    out->tasks = first[n];
    out->split = ly.streams_kv ? kv_plan_split_at(pl, 0) : 0;
    return KV_OK;
}

const char *sim_multi_bottleneck(const sim_multi_result *r) {
    return r->bottleneck >= 0 ? r->hop[r->bottleneck].name : "gpu compute";
}

char *sim_multi_json(const sim_multi_result *r, const kv_model *m, const hw_topo *t, const kv_plan *pl) {
    json_t *o = json_object(), *per = json_array(), *hops = json_array();
    if (!o || !per || !hops) {
        json_decref(o), json_decref(per), json_decref(hops);
        return NULL;
    }
    for (int i = 0; i < r->n; i++) json_array_append_new(per, json_real(r->rep_tok_s[i]));
    double total = r->prefill_s + r->decode_s;
    for (int h = 0; h < r->nhop; h++) {
        const sim_hop_report *x = &r->hop[h];
        json_array_append_new(hops, json_pack("{s:s, s:f, s:f, s:f, s:f}", "name", x->name, "cap_gbps", x->cap / 1e9, "bytes", x->bytes,
                                              "busy_share", total > 0 ? x->busy_s / total : 0.0,
                                              "saturated_share", total > 0 ? x->sat_s / total : 0.0));
    }
    json_object_set_new(o, "model", json_string(m->name));
    json_object_set_new(o, "topology", json_string(t->name));
    json_object_set_new(o, "gpus", json_integer(r->n));
    json_object_set_new(o, "policy", json_string(kv_policy_name(pl->policy)));
    json_object_set_new(o, "mode", json_string(kv_mode_name(pl->mode)));
    json_object_set_new(o, "split", json_integer(r->split));
    json_object_set_new(o, "prefill_s", json_real(r->prefill_s));
    json_object_set_new(o, "decode_s", json_real(r->decode_s));
    json_object_set_new(o, "aggregate_tok_s", json_real(r->aggregate_tok_s));
    json_object_set_new(o, "per_gpu_tok_s", per);
    json_object_set_new(o, "gpu_util", json_real(r->gpu_util));
    json_object_set_new(o, "bottleneck", json_string(sim_multi_bottleneck(r)));
    json_object_set_new(o, "bottleneck_share", json_real(r->bottleneck_share));
    json_object_set_new(o, "hops", hops);
    json_object_set_new(o, "tasks", json_integer(r->tasks));
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(10));
    json_decref(o);
    return s;
}
