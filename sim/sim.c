/* sim: graph -> timed tasks -> run -> metrics. */
#include "sim.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../hwmodel/cost.h"
#include "../hwmodel/quant.h"

struct sim_ctx {
    sim_des *des;
    uint8_t *late;     /* sim_decode_bound: per op, it starts after the first token */
    int32_t late_cap;
    double *step_end, *step_s;
    sim_time *step_tend; /* each step's last end, in clock units while the run goes */
    int steps_cap;
    int stream;        /* sim_stream: runs stream their graph */
    int32_t window;    /* 0: the default */
    uint64_t reruns;   /* streamed runs that had to run again whole */
    /* The last whole-graph run's graph, kept so that another split of the same plan runs without
     * building it again: the same tasks and dependencies (every split strictly between 0 and the
     * prompt has them, kv_graph_split_apply), with the split-dependent ops re-costed. */
    int have_graph, g_interior, g_split;
    kv_model gm;
    hw_profile gp;
    kv_plan gpl;           /* the plan, its split 0 and no per-step splits */
    int32_t gfirst;        /* its first token's task */
    int32_t *deps0;        /* every task's dependency count before the run */
    int32_t deps0cap;
    int32_t *sid;          /* the split-dependent ops: their tasks ... */
    kv_gop *sop;           /* ... and their fields */
    int32_t nsop, sopcap;
    uint64_t reused;       /* runs that re-costed the kept graph */
};

void sim_stream(sim_ctx *s, int on, int32_t window) { s->stream = on, s->window = window; }
uint64_t sim_stream_reruns(const sim_ctx *s) { return s->reruns; }

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
    free(s->late);
    free(s->deps0);
    free(s->sid);
    free(s->sop);
    free(s->step_end);
    free(s->step_tend);
    free(s->step_s);
    free(s);
}

/* The caller may change the tasks (sim/multi.c builds into it): the kept graph is forgotten. */
sim_des *sim_last_des(sim_ctx *s) {
    s->have_graph = 0;
    return s->des;
}

uint64_t sim_graph_reuses(const sim_ctx *s) { return s->reused; }
const sim_des *sim_graph_des(const sim_ctx *s) { return s->des; }

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
/* With --compress kv the byte counts are scaled by the packing ratios and the two dequantisations
 * (the activations' before the recompute, the streamed K/V's after both copies) run at the
 * datasheet HBM rate, reading packed and writing fp16, as the paper scheduler's formula has them
 * (sched/pipe.c): a layer then costs a l + max(r l, k (s - l)) + dkv (s - l). */
static void paper_cost(const cost_ctx *c, const kv_gop *o, double *fixed, double *work) {
    double h = c->m->hidden, pe = kv_dtype_bytes(c->m->dtype), rows = o->row1 - o->row0;
    double ra = c->comp_kv ? kv_store_act_bytes(c->m, KV_COMP_KV) / (double)kv_model_act_bytes_token(c->m) : 1;
    double rk = c->comp_kv ? kv_store_kv_bytes(c->m, KV_COMP_KV) / (double)kv_model_kv_bytes_token_layer(c->m) : 1;
    double hbm = c->p->gpu.hbm_bw.value;
    *fixed = *work = 0;
    if (o->op == KV_OP_ACT_H2D) *work = (double)o->nseq * rows * h * pe * ra;
    else if (o->op == KV_OP_KV_H2D) *work = 2.0 * o->nseq * rows * h * pe * rk;
    else if (o->op == KV_OP_RECOMPUTE) *fixed = hw_paper_layer(c->p, c->m, o->nseq, o->row1, o->row1).t_rec;
    else if (o->op == KV_OP_DQ_ACT && c->comp_kv) *fixed = (double)o->nseq * rows * h * pe * (ra + 1) / hbm;
    else if (o->op == KV_OP_DQ_KV && c->comp_kv) *fixed = 2.0 * o->nseq * rows * h * pe * (rk + 1) / hbm;
}

static void op_cost_miss(cost_ctx *c, const kv_gop *o, double *fixed, double *work);

/* The memo's check inline (nearly every op hits it), the costing out of line. */
static inline void op_cost(cost_ctx *c, const kv_gop *o, double *fixed, double *work) {
    __typeof__(c->memo[0]) *e = &c->memo[o->op];
    if (e->valid && e->step_pf == (o->step < 0) && e->nseq == o->nseq && e->ctx == o->ctx && e->rows == o->row1 - o->row0 &&
        e->bytes == o->bytes) {
        *fixed = e->fixed, *work = e->work;
        return;
    }
    op_cost_miss(c, o, fixed, work);
}

static void op_cost_miss(cost_ctx *c, const kv_gop *o, double *fixed, double *work) {
    __typeof__(c->memo[0]) *e = &c->memo[o->op];
    int pf = o->step < 0, rows = o->row1 - o->row0;
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
    int stream;
    int32_t win_fixed, step0_first; /* a window given by the caller; the first decode task */
    sim_time t0; /* end of the first token, once a decode task has finished (-1 before) */
    /* the decode step being emitted: its first task and its layers' first compute tasks
     * (layer 1 and 2, micro-batch 0), declared to the core as a periodic region (fast-forward) */
    int32_t ff_step, ff_first, ff_q1, ff_q2;
    sim_ctx *keep; /* whole-graph run: its split-dependent ops are kept here (NULL: not kept) */
    /* what each finished task adds to the result, in task order (streamed or not, the same sums) */
    sim_result *out;
    sim_time *step_end; /* the clock is monotone in seconds: the latest end converts once */
} sink_ctx;

/* The step just emitted, up to task b: its layers repeat with the period between their first
 * compute tasks (the core checks that they do). */
static void ff_declare(sink_ctx *sc, int32_t b) {
    if (sc->ff_step >= 0 && sc->ff_q1 >= 0 && sc->ff_q2 > sc->ff_q1)
        sim_des_periodic(sc->d, sc->ff_first, b, sc->ff_q2 - sc->ff_q1, sc->ff_q1);
    sc->ff_step = -1, sc->ff_q1 = sc->ff_q2 = -1;
}

static void keep_op(sink_ctx *sc, const kv_gop *o, int32_t id);

/* The anchors of the step being emitted: layer 1's and layer 2's first compute task. */
static inline void note_anchor(sink_ctx *sc, const kv_gop *o, int32_t id) {
    if (o->layer <= 2 && o->op == KV_OP_QKV && o->mb == 0 && o->step >= 0) {
        if (o->layer == 1) sc->ff_q1 = id;
        else if (o->layer == 2) sc->ff_q2 = id;
    }
}

static int32_t sim_emit(void *ctx, const kv_gop *o) {
    sink_ctx *sc = ctx;
    sim_task *t;
    if (o->step >= 0 && o->step != sc->ff_step) {
        ff_declare(sc, sim_des_count(sc->d));
        sc->ff_step = o->step, sc->ff_first = sim_des_count(sc->d);
        sim_des_edge_floor(sc->d, sc->ff_first);
    }
    int32_t id = sim_des_add(sc->d, (kv_op)o->op, (kv_queue)o->queue, o->step, o->layer, o->mb, o->deps, o->ndeps, &t);
    if (id < 0) return -1;
    t->bytes = o->bytes;
    t->flops = o->flops;
    op_cost(&sc->cost, o, &t->fixed_s, &t->work);
    if (o->step < 0 && o->op == KV_OP_HEAD) sim_des_mark(sc->d, sc->first_token = id);
    note_anchor(sc, o, id);
    if (sc->keep) keep_op(sc, o, id);
    if (sc->stream) {
        /* the window: a decode step's tasks and a half (a task's successors come at most about a
         * step later), known once the first step has been emitted; until then nothing runs */
        if (o->step == 0 && sc->step0_first < 0) sc->step0_first = id;
        if (o->step == 1 && sc->win_fixed == 0) {
            int32_t per = id - sc->step0_first;
            sim_des_window(sc->d, per + per / 2 + 256);
            sc->win_fixed = -1;
        }
        /* every 16 tasks: running events later than they could never changes the timeline
         * (emission pushes no events), and each pump has its fixed cost */
        if ((id & 15) == 15) sim_des_pump(sc->d);
    }
    return id;
}

/* A repeated layer (sched/graph.h): each op is the copy of the task n before it, whose costs it
 * takes (a cost depends on the op's fields, which are the same). A repeated layer is never a
 * step's first nor holds its LM head, so of sim_emit's bookkeeping only the anchors, the kept ops
 * and pumping apply. */
static int32_t sim_repeat(void *ctx, const kv_gop *ops, int32_t n) {
    sink_ctx *sc = ctx;
    int32_t first = sim_des_count(sc->d);
    if (!sim_des_task_at(sc->d, first - n)) {
        /* a streamed run with a window shorter than a layer may have retired the copied tasks */
        for (int32_t i = 0; i < n; i++)
            if (sim_emit(ctx, &ops[i]) < 0) return -1;
        return first;
    }
    if (sim_des_add_copies(sc->d, n, ops[0].deps, &ops[0].ndeps, sizeof *ops) < 0) return -1;
    if (ops[0].layer <= 2)
        for (int32_t i = 0; i < n; i++) note_anchor(sc, &ops[i], first + i);
    if (sc->keep)
        for (int32_t i = 0; i < n && sc->keep; i++) keep_op(sc, &ops[i], first + i);
    /* pumped once for the layer: events run later than they could never change the timeline */
    if (sc->stream) sim_des_pump(sc->d);
    return first;
}

/* A whole-graph run keeps its split-dependent ops (sim_run re-costs them for another split). */
static void keep_op(sink_ctx *sc, const kv_gop *o, int32_t id) {
    if (!kv_graph_split_op(o)) return;
    sim_ctx *k = sc->keep;
    if (k->nsop == k->sopcap) {
        int32_t nc = k->sopcap ? 2 * k->sopcap : 1024;
        int32_t *a = realloc(k->sid, sizeof *a * (size_t)nc);
        if (a) k->sid = a;
        kv_gop *b = a ? realloc(k->sop, sizeof *b * (size_t)nc) : NULL;
        if (b) k->sop = b, k->sopcap = nc;
        else sc->keep = NULL; /* not kept: the next run builds again */
    }
    if (sc->keep) k->sid[k->nsop] = id, k->sop[k->nsop++] = *o;
}

/* Finished tasks' shares of the per-kind busy times and of their steps' ends, in task order (the
 * whole graph's sums after the run and a streamed run's as tasks retire are the same sums). Decode
 * tasks come after the whole prompt pass, so the first token (t0) has ended by the time they are
 * counted. With fits64 (every time summed fits 64 bits: up to 9,223 s of simulated time) the same sums in
 * 64-bit arithmetic (sim_to_s converts such a time as here). */
static void sum_tasks(sim_result *out, sim_time *step_end, const sim_task *x, int32_t n, sim_time t0, int fits64) {
    const sim_task *e = x + n;
    if (fits64) {
        /* a step's tasks come together: its latest end is kept here while they do */
        int64_t z = (int64_t)t0, cend = 0;
        int32_t cstep = -1;
        for (; x < e; x++) {
            int64_t a = (int64_t)x->start, f = (int64_t)x->end;
            if (x->step < 0) {
                out->prefill_op_s[x->op] += (double)(f - a) / SIM_FS_PER_S;
                continue;
            }
            if (x->step != cstep) {
                if (cstep >= 0 && cend > step_end[cstep]) step_end[cstep] = cend;
                cstep = x->step, cend = f;
            } else if (f > cend)
                cend = f;
            if (f > z) out->op_s[x->op] += (double)(f - (a > z ? a : z)) / SIM_FS_PER_S;
        }
        if (cstep >= 0 && cend > step_end[cstep]) step_end[cstep] = cend;
        return;
    }
    for (; x < e; x++) {
        sim_time a = x->start, f = x->end;
        if (x->step < 0) {
            out->prefill_op_s[x->op] += sim_to_s(f - a);
            continue;
        }
        if (f > step_end[x->step]) step_end[x->step] = f;
        /* decode busy time after the first token, as utilisation counts it (a load may start early) */
        if (f > t0) {
            sim_time dur = f - (a > t0 ? a : t0);
            out->op_s[x->op] += sim_to_s(dur);
        }
    }
}

static void sim_retire(void *ctx, const sim_task *x, int32_t n) {
    sink_ctx *sc = ctx;
    /* every time so far fits 64 bits while the latest end does (t0 and the starts are earlier) */
    int fits64 = sim_des_last_end(sc->d) <= INT64_MAX;
    /* the first decode task to retire fixes t0 (the prompt pass's tasks all retire before it) */
    int32_t i = 0;
    if (sc->t0 < 0) {
        while (i < n && x[i].step < 0) i++;
        sum_tasks(sc->out, sc->step_end, x, i, 0, fits64);
        if (i == n) return;
        sc->t0 = sc->first_token >= 0 ? sim_des_mark_end(sc->d) : 0;
    }
    sum_tasks(sc->out, sc->step_end, x + i, n - i, sc->t0, fits64);
}

/* The links a run copies over: pinned or pageable plateau; the paper's model has no duplex loss. */
static void run_links(const hw_profile *p, const kv_plan *pl, sim_link *h2d, sim_link *d2h) {
    *h2d = (sim_link){pl->pageable ? p->link.h2d.pageable.value : p->link.h2d.bandwidth.value, pl->paper_model ? 1 : p->link.h2d.duplex.value};
    *d2h = (sim_link){pl->pageable ? p->link.d2h.pageable.value : p->link.d2h.bandwidth.value, pl->paper_model ? 1 : p->link.d2h.duplex.value};
}

kv_status sim_build(sim_des *d, const kv_model *m, const hw_profile *p, const kv_plan *pl, const kv_layout *ly, int32_t *first_token) {
    sink_ctx sc;
    memset(&sc, 0, sizeof sc);
    sc.d = d, sc.cost.m = m, sc.cost.p = p, sc.cost.paper = pl->paper_model, sc.first_token = -1;
    sc.ff_step = sc.ff_q1 = sc.ff_q2 = -1;
    kv_graph_sink sink = {.ctx = &sc, .emit = sim_emit, .repeat = sim_repeat};
    kv_status st = kv_graph_build(m, pl, ly, &sink);
    if (!st) ff_declare(&sc, sim_des_count(d));
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
    int T = kv_plan_steps(pl);
    if (T > sx->steps_cap) {
        double *a = realloc(sx->step_end, (size_t)T * sizeof *a), *b = a ? realloc(sx->step_s, (size_t)T * sizeof *b) : NULL;
        if (a) sx->step_end = a;
        if (b) sx->step_s = b;
        sim_time *c = b ? realloc(sx->step_tend, (size_t)T * sizeof *c) : NULL;
        if (!c) return kv_errorf(KV_ENOMEM, "sim: out of memory");
        sx->step_tend = c;
        sx->steps_cap = T;
    }
    sim_des *d = sx->des;
    sink_ctx sc;
    sim_des_stats ds;
    /* A streamed run is the whole graph's run, or says it is not (a task came later than it would
     * have started): then it runs again with the whole graph. */
    /* tasks of the run, about: a decode step has fewer than 12 per layer and micro-batch */
    double est = 12.0 * ly->L * ly->nb * (T + 1);
    int want = sx->stream == SIM_STREAM_ALWAYS || (sx->stream == SIM_STREAM_LARGE && est > SIM_STREAM_MIN_TASKS);
    kv_plan key = *pl;
    key.split = 0, key.split_steps = NULL;
    int interior = !pl->split_steps && pl->split > 0 && pl->split < pl->prompt;
    int reuse = !want && sx->have_graph && !pl->split_steps && ((interior && sx->g_interior) || pl->split == sx->g_split) &&
                !memcmp(&sx->gm, m, sizeof *m) && !memcmp(&sx->gp, p, sizeof *p) && !memcmp(&sx->gpl, &key, sizeof key);
    if (reuse) {
        for (int t = 0; t < T; t++) sx->step_tend[t] = -1;
        memset(out->prefill_op_s, 0, sizeof out->prefill_op_s);
        memset(out->op_s, 0, sizeof out->op_s);
        /* copies of a layer stay copies: ops with the same kind, step and sequences get the same
         * fields at any split, so the same cost (the verified regions stay valid) */
        sim_des_rewind(d, sx->deps0);
        sim_link h2d, d2h;
        run_links(p, pl, &h2d, &d2h);
        sim_des_links(d, h2d, d2h);
        memset(&sc, 0, sizeof sc);
        sc.d = d, sc.cost.m = m, sc.cost.p = p, sc.cost.paper = paper, sc.first_token = sx->gfirst, sc.cost.comp_kv = ly->comp_kv;
        sc.out = out, sc.step_end = sx->step_tend, sc.t0 = -1, sc.step0_first = -1;
        kv_split_k spk;
        kv_graph_split_init(&spk, m, pl, ly);
        /* the layers of a step repeat: one re-costing per (kind, step, sequences) */
        struct {
            int valid;
            kv_gop o;
            double fixed, work;
        } mm[KV_OP_COUNT];
        memset(mm, 0, sizeof mm);
        /* only a KVPR plan's ops depend on the split (kv_plan_split_at: the others ignore it), and
         * the same split needs no re-costing */
        int32_t nre = pl->policy == KV_POL_KVPR && pl->split != sx->g_split ? sx->nsop : 0;
        for (int32_t i = 0; i < nre; i++) {
            const kv_gop *src = &sx->sop[i];
            __typeof__(mm[0]) *e = &mm[src->op];
            if (!e->valid || e->o.step != src->step || e->o.nseq != src->nseq || e->o.seq0 != src->seq0 || e->o.queue != src->queue) {
                e->o = *src;
                kv_graph_split_apply(&spk, &e->o, pl->split);
                op_cost(&sc.cost, &e->o, &e->fixed, &e->work);
                e->valid = 1;
            }
            sim_task *t = sim_des_get(d, sx->sid[i]);
            t->bytes = e->o.bytes, t->flops = e->o.flops, t->fixed_s = e->fixed, t->work = e->work;
        }
        sx->have_graph = 0; /* until this run has ended well */
        if ((st = sim_des_run(d, &ds))) return st;
        sx->have_graph = 1, sx->g_split = pl->split, sx->reused++;
    }
    for (int stream = want; !reuse; stream = 0) {
        for (int t = 0; t < T; t++) sx->step_tend[t] = -1;
        memset(out->prefill_op_s, 0, sizeof out->prefill_op_s);
        memset(out->op_s, 0, sizeof out->op_s);
        sim_des_reset(d);
        sim_link h2d, d2h;
        run_links(p, pl, &h2d, &d2h);
        sim_des_links(d, h2d, d2h);
        memset(&sc, 0, sizeof sc);
        sc.d = d, sc.cost.m = m, sc.cost.p = p, sc.cost.paper = paper, sc.first_token = -1, sc.cost.comp_kv = ly->comp_kv;
        sc.out = out, sc.step_end = sx->step_tend, sc.stream = stream;
        sc.win_fixed = sx->window, sc.step0_first = -1, sc.t0 = -1;
        sc.ff_step = sc.ff_q1 = sc.ff_q2 = -1;
        if (stream) sim_des_stream(d, sx->window > 0 ? sx->window : INT32_MAX / 2, sim_retire, &sc);
        kv_graph_sink sink = {.ctx = &sc, .emit = sim_emit, .repeat = sim_repeat};
        sx->have_graph = 0, sx->nsop = 0;
        if (!stream && !pl->split_steps) sc.keep = sx;
        if ((st = kv_graph_build(m, pl, ly, &sink))) return st == KV_ENOMEM ? kv_errorf(KV_ENOMEM, "sim: out of memory for tasks") : st;
        ff_declare(&sc, sim_des_count(d));
        int32_t n = sim_des_count(d);
        if (sc.keep && n > sx->deps0cap) {
            int32_t *q = realloc(sx->deps0, sizeof *q * (size_t)n);
            if (q) sx->deps0 = q, sx->deps0cap = n;
            else sc.keep = NULL;
        }
        if (sc.keep)
            for (int32_t i = 0; i < n; i++) sx->deps0[i] = sim_des_get(d, i)->deps_left;
        if ((st = sim_des_run(d, &ds))) return st;
        if (sc.keep && !sim_des_overrun(d)) {
            sx->have_graph = 1, sx->g_split = pl->split, sx->g_interior = interior, sx->gfirst = sc.first_token;
            sx->gm = *m, sx->gp = *p, sx->gpl = key;
        }
        if (!stream || !sim_des_overrun(d)) break;
        sx->reruns++;
    }
    sim_time t0 = sc.first_token >= 0 ? sim_des_mark_end(d) : 0;
    if (!sc.stream) { /* the whole graph: the same sums, in the same task order */
        const sim_task *tk = sim_des_tasks(d);
        int32_t n = sim_des_count(d);
        if (tk) sum_tasks(out, sc.step_end, tk, n, t0, t0 >= 0 && ds.makespan <= INT64_MAX);
        else
            for (int32_t i = 0; i < n; i++) sum_tasks(out, sc.step_end, sim_des_get(d, i), 1, t0, 0);
    }
    out->prefill_s = sc.first_token >= 0 ? sim_to_s(t0) : 0;
    for (int t = 0; t < T; t++) {
        sx->step_end[t] = sx->step_tend[t] >= 0 ? sim_to_s(sx->step_tend[t]) : -HUGE_VAL;
        if (!(sx->step_end[t] > out->prefill_s)) sx->step_end[t] = out->prefill_s;
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
    {
        sim_time cs[KV_OP_COUNT], cw;
        sim_des_crit_sums(d, t0, cs, &cw);
        for (int k = 0; k < KV_OP_COUNT; k++) out->crit_s[k] = sim_to_s(cs[k]);
        out->crit_wait_s = sim_to_s(cw);
    }
    int32_t n = sim_des_count(d);
    out->events = ds.events;
    out->tasks = n;
    out->split0 = ly->streams_kv ? kv_plan_split_at(pl, 0) : 0;
    out->split_last = ly->streams_kv ? kv_plan_split_at(pl, T - 1) : 0;
    return KV_OK;
}

/* ---- a lower bound on the decode time, and the best split by branch and bound ------------- */

/* An op "starts late" when it cannot start before the first token has ended: a decode op of the
 * compute queue (it is behind the prompt pass's LM head in that queue's order), an op that waits
 * for one that starts late, or one behind such an op in its own queue. Every queue runs its late
 * ops one at a time after the first token, and a link direction moves at most its plateau rate,
 * so the decode time is at least each queue's sum of late durations (a copy: its overhead plus its
 * work at the full rate) and each direction's late work over its rate. */
/* Late ops whose cost depends on the split, gathered by (queue, kind, step, sequences): the ops of
 * one group have the same fields at every split (kv_graph_split_apply), so one costing serves all. */
typedef struct {
    kv_gop o;
    double count;
} bound_group;

typedef struct {
    sim_ctx *s;
    cost_ctx cost;
    int32_t n;
    int gather;                /* gather split-dependent late ops into groups instead of costing them */
    int bad;                   /* an op's duration does not fit the clock (absurd profile values) */
    bound_group *g;
    int ng, gcap;
    uint8_t qlate[KV_Q_COUNT];
    sim_time qfix[KV_Q_COUNT]; /* late durations (compute, CPU) and copy overheads, as the DES rounds them */
    double qwork[KV_Q_COUNT];  /* late copies' work */
} bound_ctx;

static int bound_add(bound_ctx *b, const kv_gop *o, double count) {
    double fixed, work;
    op_cost(&b->cost, o, &fixed, &work);
    if (!sim_time_ok(fixed) || !(work >= 0)) {
        b->bad = 1;
        return -1;
    }
    b->qfix[o->queue] += (sim_time)count * sim_from_s(fixed);
    b->qwork[o->queue] += count * work;
    return 0;
}

static int32_t bound_emit(void *ctx, const kv_gop *o) {
    bound_ctx *b = ctx;
    sim_ctx *s = b->s;
    if (b->n >= s->late_cap) {
        int32_t nc = s->late_cap ? 2 * s->late_cap : 65536;
        uint8_t *q = nc > 0 ? realloc(s->late, (size_t)nc) : NULL;
        if (!q) return -1;
        s->late = q, s->late_cap = nc;
    }
    int late = (o->queue == KV_Q_COMPUTE && o->step >= 0) || b->qlate[o->queue];
    for (int i = 0; i < o->ndeps && !late; i++)
        if (o->deps[i] >= 0 && o->deps[i] < b->n) late = s->late[o->deps[i]];
    s->late[b->n] = (uint8_t)late;
    if (late) {
        b->qlate[o->queue] = 1;
        if (b->gather && o->step >= 0 && kv_graph_split_op(o)) {
            /* the group is among the last few: ops come step by step */
            int i = b->ng - 1;
            for (; i >= 0 && i >= b->ng - 16; i--)
                if (b->g[i].o.op == o->op && b->g[i].o.queue == o->queue && b->g[i].o.step == o->step && b->g[i].o.nseq == o->nseq) break;
            if (i < 0 || i < b->ng - 16) {
                if (b->ng == b->gcap) {
                    int nc = b->gcap ? 2 * b->gcap : 256;
                    bound_group *q = realloc(b->g, sizeof *q * (size_t)nc);
                    if (!q) return -1;
                    b->g = q, b->gcap = nc;
                }
                i = b->ng++;
                b->g[i] = (bound_group){*o, 0};
            }
            b->g[i].count++;
        } else if (bound_add(b, o, 1)) return -1;
    }
    return b->n++;
}

/* max over queues of their late time, and over link directions of their late work at full rate */
static double bound_total(const bound_ctx *b, const hw_profile *p, const kv_plan *pl) {
    sim_link h2d, d2h;
    run_links(p, pl, &h2d, &d2h);
    double x = 0, dir[2] = {0, 0};
    for (int q = 0; q < KV_Q_COUNT; q++) {
        kv_resource r = kv_queue_res((kv_queue)q);
        double rate = r == KV_RES_H2D ? h2d.rate : r == KV_RES_D2H ? d2h.rate : 0;
        double t = sim_to_s(b->qfix[q]) + (rate > 0 ? b->qwork[q] / rate : 0);
        if (t > x) x = t;
        if (r == KV_RES_H2D || r == KV_RES_D2H) dir[r == KV_RES_D2H] += rate > 0 ? b->qwork[q] / rate : 0;
    }
    if (dir[0] > x) x = dir[0];
    if (dir[1] > x) x = dir[1];
    /* a margin far above the rounding of the clock, of the copies' remaining work and of summing
     * a group's costs as a product */
    return x * (1 - 1e-9);
}

/* Builds the plan's graph through the bound's sink (gathering or not). */
static kv_status bound_build(bound_ctx *b, sim_ctx *s, const kv_model *m, const hw_profile *p, const kv_plan *pl, int gather) {
    kv_status st = kv_plan_validate(pl, m);
    if (st) return st;
    kv_layout ly;
    if ((st = kv_layout_resolve(m, pl, &ly))) return st;
    memset(b, 0, sizeof *b);
    b->s = s, b->cost.m = m, b->cost.p = p, b->cost.paper = pl->paper_model, b->cost.comp_kv = ly.comp_kv, b->gather = gather;
    kv_graph_sink sink = {.ctx = b, .emit = bound_emit};
    if ((st = kv_graph_build(m, pl, &ly, &sink))) {
        free(b->g);
        if (b->bad) return kv_errorf(KV_EINVAL, "simulated time out of range: an op would take longer than %g s (the profile's values are absurd)", SIM_MAX_S);
        return st == KV_ENOMEM ? kv_errorf(KV_ENOMEM, "sim: out of memory for the bound") : st;
    }
    return KV_OK;
}

kv_status sim_decode_bound(sim_ctx *s, const kv_model *m, const hw_profile *p, const kv_plan *pl, double *lb) {
    *lb = 0;
    bound_ctx b;
    kv_status st = bound_build(&b, s, m, p, pl, 0);
    if (st) return st;
    *lb = bound_total(&b, p, pl);
    return KV_OK;
}

kv_status sim_decode_bounds(sim_ctx *s, const kv_model *m, const hw_profile *p, const kv_plan *plan, int lmax, double *lb) {
    kv_plan pl = *plan;
    pl.split_steps = NULL;
    kv_status st = KV_OK;
    if (pl.policy != KV_POL_KVPR) { /* the split is ignored: one graph, one bound */
        if (lmax < 0 || (st = sim_decode_bound(s, m, p, &pl, &lb[0]))) return st;
        for (int l = 1; l <= lmax; l++) lb[l] = lb[0];
        return KV_OK;
    }
    /* 0 and prompt have ops of their own (no activations; no K/V at the first step): built alone */
    for (int l = 0; l <= lmax && !st; l++)
        if (l == 0 || l >= pl.prompt) {
            pl.split = l;
            st = sim_decode_bound(s, m, p, &pl, &lb[l]);
        }
    if (st || lmax < 1 || pl.prompt < 2) return st;
    /* every split in between: one graph, its split-dependent late ops re-costed per split */
    pl.split = 1;
    bound_ctx b;
    if ((st = bound_build(&b, s, m, p, &pl, 1))) return st;
    kv_layout ly;
    if ((st = kv_layout_resolve(m, &pl, &ly))) goto out;
    sim_time qfix[KV_Q_COUNT];
    double qwork[KV_Q_COUNT];
    memcpy(qfix, b.qfix, sizeof qfix);
    memcpy(qwork, b.qwork, sizeof qwork);
    kv_split_k spk;
    kv_graph_split_init(&spk, m, &pl, &ly);
    for (int l = 1; l <= lmax && l < pl.prompt; l++) {
        memcpy(b.qfix, qfix, sizeof qfix);
        memcpy(b.qwork, qwork, sizeof qwork);
        for (int i = 0; i < b.ng; i++) {
            kv_gop o = b.g[i].o;
            kv_graph_split_apply(&spk, &o, l);
            if (bound_add(&b, &o, b.g[i].count)) {
                st = kv_errorf(KV_EINVAL, "simulated time out of range at split %d: an op would take longer than %g s (the profile's values are absurd)", l, SIM_MAX_S);
                goto out;
            }
        }
        pl.split = l;
        lb[l] = bound_total(&b, p, &pl);
    }
out:
    free(b.g);
    return st;
}

typedef struct {
    double lb;
    int l;
} bound_at;

static int cmp_bound(const void *a, const void *b) {
    const bound_at *x = a, *y = b;
    return x->lb < y->lb ? -1 : x->lb > y->lb ? 1 : x->l - y->l;
}

kv_status sim_best_split(sim_ctx *s, const kv_model *m, const hw_profile *p, const kv_plan *plan, int lmax, double *ts, double *lb,
                         int *best_l, double *best_s, int *nsim) {
    *best_l = -1, *best_s = HUGE_VAL, *nsim = 0;
    if (lmax < 0) return kv_errorf(KV_EINVAL, "sim: no split to search");
    kv_plan pl = *plan;
    pl.split_steps = NULL;
    bound_at *o = malloc(sizeof *o * ((size_t)lmax + 1));
    if (!o) return kv_errorf(KV_ENOMEM, "sim: out of memory");
    kv_status st = sim_decode_bounds(s, m, p, &pl, lmax, lb);
    for (int l = 0; l <= lmax; l++) ts[l] = NAN, o[l] = (bound_at){lb[l], l};
    if (!st) qsort(o, (size_t)lmax + 1, sizeof *o, cmp_bound);
    /* best first: once the next bound exceeds the best time, no later split can beat it (or tie) */
    for (int i = 0; i <= lmax && !st && !(o[i].lb > *best_s); i++) {
        sim_result r;
        pl.split = o[i].l;
        if ((st = sim_run(s, m, p, &pl, &r))) break;
        ts[o[i].l] = r.decode_s;
        ++*nsim;
        if (r.decode_s < *best_s || (r.decode_s == *best_s && o[i].l < *best_l)) *best_s = r.decode_s, *best_l = o[i].l;
    }
    free(o);
    return st;
}
