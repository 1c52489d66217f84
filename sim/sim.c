/* sim: graph -> timed tasks -> run -> metrics. */
#include "sim.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../hwmodel/cost.h"
#include "../hwmodel/quant.h"

struct sim_ctx {
    sim_des *des;
    double *step_end, *step_s;
    int steps_cap;
};

sim_ctx *sim_new(void) {
    sim_ctx *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->des = sim_des_new();
    if (!s->des) {
        free(s);
        return NULL;
    }
    return s;
}

void sim_free(sim_ctx *s) {
    if (!s) return;
    sim_des_free(s->des);
    free(s->step_end);
    free(s->step_s);
    free(s);
}

sim_des *sim_last_des(sim_ctx *s) { return s->des; }

/* ---- cost types: the time of one op ------------------------------------------------------ */

typedef struct {
    const kv_model *m;
    const hw_profile *p;
    int paper;
    int comp_kv; /* the CPU's cache is packed: cpu attention dequantises it first */
    /* one-entry memo per op kind: layers of a step are alike, so most ops hit it */
    struct {
        int valid, step_pf, nseq, ctx, rows;
        double bytes, fixed, work;
    } memo[KV_OP_COUNT];
} cost_ctx;

static void copy_cost(const cost_ctx *c, hw_dir dir, double bytes, double *fixed, double *work) {
    const hw_link_dir *d = dir == HW_H2D ? &c->p->link.h2d : &c->p->link.d2h;
    *fixed = bytes > 0 ? d->overhead.value : 0;
    *work = bytes > 0 ? bytes / hw_table_eval(&d->size_eff, bytes) : 0;
}

/* The calibrated hardware model. */
static void model_cost(const cost_ctx *c, const kv_gop *o, double *fixed, double *work) {
    const kv_model *m = c->m;
    const hw_profile *p = c->p;
    *fixed = *work = 0;
    switch ((kv_op)o->op) {
    case KV_OP_W_H2D: case KV_OP_WKV_H2D: case KV_OP_ACT_H2D: case KV_OP_KV_H2D: case KV_OP_O_H2D: case KV_OP_HID_H2D:
        copy_cost(c, HW_H2D, o->bytes, fixed, work);
        return;
    case KV_OP_KV_D2H: case KV_OP_Q_D2H: case KV_OP_HID_D2H: case KV_OP_ACT_D2H:
        copy_cost(c, HW_D2H, o->bytes, fixed, work);
        return;
    case KV_OP_RECOMPUTE: *fixed = hw_recompute_time(p, m, o->nseq, o->row1); return;
    case KV_OP_CPU_ATTN:
        *fixed = hw_cpu_attn_time(p, m, o->nseq, o->ctx);
        /* o->bytes is the packed cache; its dequantisation writes the fp16 form */
        if (c->comp_kv) *fixed += hw_quant_cpu_time(p, o->bytes + (double)o->nseq * (o->ctx + 1.0) * (double)kv_model_kv_bytes_token_layer(m));
        return;
    case KV_OP_DQ_W: case KV_OP_DQ_ACT: case KV_OP_DQ_KV: case KV_OP_QUANT: *fixed = hw_quant_gpu_time(p, o->bytes); return;
    case KV_OP_HEAD: *fixed = hw_head_time(p, m, o->nseq); return;
    case KV_OP_QKV: case KV_OP_ATTN: case KV_OP_FFN: {
        hw_layer_cost lc = o->step < 0 ? hw_prefill_layer(p, m, o->nseq, o->ctx) : hw_decode_layer(p, m, o->nseq, o->ctx);
        if (o->op == KV_OP_QKV) *fixed = lc.qkv + lc.other / 2;
        else if (o->op == KV_OP_FFN) *fixed = lc.out + lc.mlp + lc.other / 2;
        else *fixed = o->step < 0 ? lc.attn : hw_attn_time(p, m, o->nseq, o->ctx);
        return;
    }
    default: return;
    }
}

/* The paper's formula (method.md section 3): only the activation and K/V transfers at the
 * plateau bandwidth, with the paper's byte counts (h values per token, whatever the KV heads),
 * and the recompute at the peak rate; everything else is free. */
static void paper_cost(const cost_ctx *c, const kv_gop *o, double *fixed, double *work) {
    double h = c->m->hidden, pe = kv_dtype_bytes(c->m->dtype), rows = o->row1 - o->row0;
    *fixed = *work = 0;
    if (o->op == KV_OP_ACT_H2D) *work = (double)o->nseq * rows * h * pe;
    else if (o->op == KV_OP_KV_H2D) *work = 2.0 * o->nseq * rows * h * pe;
    else if (o->op == KV_OP_RECOMPUTE) *fixed = hw_paper_layer(c->p, c->m, o->nseq, o->row1, o->row1).t_rec;
}

static void op_cost(cost_ctx *c, const kv_gop *o, double *fixed, double *work) {
    __typeof__(c->memo[0]) *e = &c->memo[o->op];
    int pf = o->step < 0, rows = o->row1 - o->row0;
    if (e->valid && e->step_pf == pf && e->nseq == o->nseq && e->ctx == o->ctx && e->rows == rows && e->bytes == o->bytes) {
        *fixed = e->fixed, *work = e->work;
        return;
    }
    if (c->paper) paper_cost(c, o, fixed, work);
    else model_cost(c, o, fixed, work);
    e->valid = 1, e->step_pf = pf, e->nseq = o->nseq, e->ctx = o->ctx, e->rows = rows, e->bytes = o->bytes;
    e->fixed = *fixed, e->work = *work;
}

/* ---- the sink: graph ops become timed tasks --------------------------------------------- */

typedef struct {
    sim_des *d;
    cost_ctx cost;
    int32_t first_token; /* the prompt pass's last LM head */
} sink_ctx;

static int32_t sim_emit(void *ctx, const kv_gop *o) {
    sink_ctx *sc = ctx;
    sim_task *t;
    int32_t id = sim_des_add(sc->d, (kv_op)o->op, (kv_queue)o->queue, o->step, o->layer, o->mb, o->deps, o->ndeps, &t);
    if (id < 0) return -1;
    t->bytes = o->bytes;
    t->flops = o->flops;
    op_cost(&sc->cost, o, &t->fixed_s, &t->work);
    if (o->step < 0 && o->op == KV_OP_HEAD) sc->first_token = id;
    return id;
}

kv_status sim_build(sim_des *d, const kv_model *m, const hw_profile *p, const kv_plan *pl, const kv_layout *ly, int32_t *first_token) {
    sink_ctx sc;
    memset(&sc, 0, sizeof sc);
    sc.d = d, sc.cost.m = m, sc.cost.p = p, sc.cost.paper = pl->paper_model, sc.first_token = -1;
    kv_graph_sink sink = {&sc, sim_emit};
    kv_status st = kv_graph_build(m, pl, ly, &sink);
    *first_token = sc.first_token;
    return st == KV_ENOMEM ? kv_errorf(KV_ENOMEM, "sim: out of memory for tasks") : st;
}

kv_status sim_run(sim_ctx *sx, const kv_model *m, const hw_profile *p, const kv_plan *pl, sim_result *out) {
    kv_status st = kv_plan_validate(pl, m);
    if (st) return st;
    memset(out, 0, sizeof *out);
    kv_layout *ly = &out->layout;
    if ((st = kv_layout_resolve(m, pl, ly))) return st;
    out->cpu_mem = ly->cpu_total;
    out->mem_peak = ly->gpu_total;
    int paper = pl->paper_model;
    if (!paper && (st = kv_layout_fits(ly, p->gpu.mem_bytes.value, p->cpu.mem_bytes.value))) return st;
    if (paper && ly->cpu_total > p->cpu.mem_bytes.value && (st = kv_layout_fits(ly, 1e300, p->cpu.mem_bytes.value))) return st;
    sim_des *d = sx->des;
    sim_des_reset(d);
    sim_link h2d = {pl->pageable ? p->link.h2d.pageable.value : p->link.h2d.bandwidth.value, paper ? 1 : p->link.h2d.duplex.value};
    sim_link d2h = {pl->pageable ? p->link.d2h.pageable.value : p->link.d2h.bandwidth.value, paper ? 1 : p->link.d2h.duplex.value};
    sim_des_links(d, h2d, d2h);
    sink_ctx sc;
    memset(&sc, 0, sizeof sc);
    sc.d = d, sc.cost.m = m, sc.cost.p = p, sc.cost.paper = paper, sc.first_token = -1, sc.cost.comp_kv = ly->comp_kv;
    kv_graph_sink sink = {&sc, sim_emit};
    if ((st = kv_graph_build(m, pl, ly, &sink))) return st == KV_ENOMEM ? kv_errorf(KV_ENOMEM, "sim: out of memory for tasks") : st;
    sim_des_mark(d, sc.first_token);
    sim_des_stats ds;
    if ((st = sim_des_run(d, &ds))) return st;

    int T = kv_plan_steps(pl);
    if (T > sx->steps_cap) {
        double *a = realloc(sx->step_end, (size_t)T * sizeof *a), *b = a ? realloc(sx->step_s, (size_t)T * sizeof *b) : NULL;
        if (a) sx->step_end = a;
        if (!b) return kv_errorf(KV_ENOMEM, "sim: out of memory");
        sx->step_s = b;
        sx->steps_cap = T;
    }
    out->prefill_s = sc.first_token >= 0 ? sim_to_s(sim_des_get(d, sc.first_token)->end) : 0;
    for (int t = 0; t < T; t++) sx->step_end[t] = out->prefill_s;
    int32_t n = sim_des_count(d);
    sim_time t0 = sc.first_token >= 0 ? sim_des_get(d, sc.first_token)->end : 0;
    for (int32_t i = 0; i < n; i++) {
        sim_task *x = sim_des_get(d, i);
        double e = sim_to_s(x->end);
        if (x->step < 0) {
            out->prefill_op_s[x->op] += sim_to_s(x->end - x->start);
            continue;
        }
        if (e > sx->step_end[x->step]) sx->step_end[x->step] = e;
        /* decode busy time after the first token, as utilisation counts it (a load may start early) */
        if (x->end > t0) out->op_s[x->op] += sim_to_s(x->end - (x->start > t0 ? x->start : t0));
    }
    for (int t = 0; t < T; t++) sx->step_s[t] = sx->step_end[t] - (t ? sx->step_end[t - 1] : out->prefill_s);
    out->step_s = sx->step_s;
    out->nsteps = T;
    out->decode_s = sim_to_s(ds.makespan) - out->prefill_s;
    double seqs = (double)pl->batch * pl->nb;
    out->decode_tok_s = out->decode_s > 0 ? seqs * T / out->decode_s : 0;
    out->throughput = out->decode_tok_s;
    out->generation_tok_s = out->prefill_s + out->decode_s > 0 ? seqs * pl->gen / (out->prefill_s + out->decode_s) : 0;
    /* utilisation over the decode phase: busy time after the first token */
    for (int r = 0; r < KV_RES_COUNT; r++)
        out->util[r] = out->decode_s > 0 ? sim_to_s(ds.busy[r] - ds.busy_at_mark[r]) / out->decode_s : 0;
    out->gpu_idle_s = out->decode_s - sim_to_s(ds.busy[KV_RES_GPU] - ds.busy_at_mark[KV_RES_GPU]);
    /* Critical path: from the task that ended last, follow the task whose completion let each start,
     * back to the first token. */
    for (int32_t i = ds.last; i >= 0;) {
        sim_task *x = sim_des_get(d, i);
        if (x->end <= t0 && t0 > 0) break; /* the path is back before the first token */
        sim_time a = x->start > t0 ? x->start : t0; /* only what falls in the decode phase */
        sim_time from = x->crit >= 0 ? sim_des_get(d, x->crit)->end : 0;
        out->crit_s[x->op] += sim_to_s(x->end - a);
        if (from > t0) out->crit_wait_s += sim_to_s(x->start - from);
        i = x->crit;
    }
    out->events = ds.events;
    out->tasks = n;
    out->split0 = ly->streams_kv ? kv_plan_split_at(pl, 0) : 0;
    out->split_last = ly->streams_kv ? kv_plan_split_at(pl, T - 1) : 0;
    return KV_OK;
}
