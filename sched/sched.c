/* sched: the formulations as types, memory limits, and the plan entry point. */
#include "sched.h"
#include "graph.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../hwmodel/cost.h"
#include "pipe.h"

typedef struct {
    const char *name;
    kv_status (*plan)(const kv_model *, const hw_profile *, const kv_plan *, int lmax, const char *, sched_result *);
    double (*model_time)(const kv_model *, const hw_profile *, const kv_plan *, int l);
} sched_type;

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e6 * (double)ts.tv_sec + 1e-3 * (double)ts.tv_nsec;
}

/* ---- memory limits ------------------------------------------------------------------ */

/* The largest split whose buffers fit, from the graph's layout (the memory model the simulator
 * and the engine use): memory is affine in l (activation slots on the GPU, stored activations on
 * the CPU), so two layouts give it. */
int sched_lmax(const kv_model *m, const hw_profile *p, const kv_plan *pl) {
    kv_plan q = *pl;
    q.policy = KV_POL_KVPR, q.split_steps = NULL, q.split = 0;
    kv_layout a, b;
    if (kv_layout_resolve(m, &q, &a)) return -1;
    if (kv_layout_fits(&a, pl->paper_model ? 1e300 : p->gpu.mem_bytes.value, p->cpu.mem_bytes.value)) return -1;
    q.split = 1;
    if (kv_layout_resolve(m, &q, &b)) return -1;
    double avail = pl->keep_act ? pl->prompt + pl->gen - 2 : pl->prompt;
    double dg = b.gpu_total - a.gpu_total, dc = b.cpu_total - a.cpu_total;
    if (dg > 0 && !pl->paper_model) avail = fmin(avail, floor((p->gpu.mem_bytes.value - a.gpu_total) / dg));
    if (dc > 0) avail = fmin(avail, floor((p->cpu.mem_bytes.value - a.cpu_total) / dc));
    return (int)avail;
}

static void kept(sched_result *r, const kv_model *m, const kv_plan *pl, int tokens) {
    r->kept_tokens = tokens;
    r->act_cpu_bytes = (double)pl->batch * pl->nb * tokens * (double)kv_model_act_bytes_token(m) * m->n_layers;
}

/* ---- paper -------------------------------------------------------------------------- */

static double paper_time(const kv_model *m, const hw_profile *p, const kv_plan *pl, int l) {
    double t = 0;
    int L = kv_plan_layers(pl, m);
    for (int s = 0; s < kv_plan_steps(pl); s++) {
        int ctx = pl->prompt + s, ls = l < ctx ? l : ctx;
        if (!(pl->compress & KV_COMP_KV)) {
            t += L * hw_paper_layer(p, m, pl->batch * pl->nb, ctx, ls).total;
            continue;
        }
        /* --compress kv: the same formula over packed bytes, with the dequantisations (sched/pipe.h) */
        paper_model pm;
        paper_build_comp(&pm, m, p, pl->batch * pl->nb, ctx, ctx, pl->compress);
        t += L * paper_eval(&pm, ls) / 1e6;
    }
    return t;
}

static kv_status paper_plan(const kv_model *m, const hw_profile *p, const kv_plan *pl, int lmax, const char *lpf,
                            sched_result *r) {
    paper_model pm;
    /* The authors' runtime: one l for the whole generation, from the final length, capped at the prompt. */
    paper_build_comp(&pm, m, p, pl->batch * pl->nb, pl->prompt + pl->gen, lmax, pl->compress);
    double t0 = now_us(), obj;
    kv_status st = paper_solve(&pm, lpf, &r->split, &obj);
    r->solve_us = now_us() - t0;
    if (st) return st;
    r->closed_form = pl->compress & KV_COMP_KV ? paper_lstar(&pm) : hw_paper_lstar(p, m, pl->prompt + pl->gen);
    r->predicted_s = paper_time(m, p, pl, r->split);
    r->offload_s = paper_time(m, p, pl, 0);
    r->rows = 2, r->cols = 2, r->ints = 1;
    kept(r, m, pl, r->split);
    return KV_OK;
}

/* ---- pipelined ---------------------------------------------------------------------- */

static int paper_guess(const kv_model *m, const hw_profile *p, const kv_plan *pl, int lmax) {
    int l = hw_paper_runtime_split(p, m, pl->prompt, pl->gen);
    return l < lmax ? l : lmax;
}

/* The copy efficiency depends on the copy size, which depends on l: solve, re-evaluate the
 * efficiency at the answer, solve again until the split stands still. */
static kv_status pipe_fixed(const kv_model *m, const hw_profile *p, const kv_plan *pl, int t0, int t1, int lmax, int lref,
                            const char *lpf, int *l, double *obj, sched_result *r) {
    pipe_model pm;
    kv_status st = KV_OK;
    for (int it = 0; it < 4; it++) {
        pipe_build(&pm, m, p, pl, t0, t1, lmax, lref);
        double a = now_us();
        st = pipe_solve(&pm, it == 0 ? lpf : NULL, l, obj, &r->rows, &r->cols, &r->ints);
        r->solve_us += now_us() - a;
        if (st || *l == lref) break;
        /* re-solve only if the efficiencies at the answer differ from those used */
        pipe_model next;
        pipe_build(&next, m, p, pl, t0, t1, 0, *l);
        if (next.eff_a == pm.eff_a && next.eff_k == pm.eff_k) break;
        lref = *l;
    }
    return st;
}

static double pipe_time(const kv_model *m, const hw_profile *p, const kv_plan *pl, int l) {
    pipe_model pm;
    pipe_build(&pm, m, p, pl, 0, kv_plan_steps(pl), l > 0 ? l : 1, l);
    return pipe_eval(&pm, l) / 1e6;
}

static kv_status pipelined_plan(const kv_model *m, const hw_profile *p, const kv_plan *pl, int lmax, const char *lpf,
                                sched_result *r) {
    double obj;
    kv_status st = pipe_fixed(m, p, pl, 0, kv_plan_steps(pl), lmax, paper_guess(m, p, pl, lmax), lpf, &r->split, &obj, r);
    if (st) return st;
    r->predicted_s = obj / 1e6;
    r->offload_s = pipe_time(m, p, pl, 0);
    kept(r, m, pl, r->split);
    return KV_OK;
}

/* ---- dynamic ------------------------------------------------------------------------ */

static kv_status dynamic_plan(const kv_model *m, const hw_profile *p, const kv_plan *pl, int lmax, const char *lpf,
                              sched_result *r) {
    int T = kv_plan_steps(pl), lref = paper_guess(m, p, pl, lmax), top = 0;
    r->splits = malloc((size_t)T * sizeof *r->splits);
    if (!r->splits) return kv_errorf(KV_ENOMEM, "sched: out of memory");
    r->nsteps = T;
    double total = 0, off = 0;
    for (int t = 0; t < T; t++) {
        int lt = kv_plan_act_avail(pl, t);
        lt = lt < lmax ? lt : lmax;
        double obj;
        kv_status st = pipe_fixed(m, p, pl, t, t + 1, lt, lref < lt ? lref : lt, t == 0 ? lpf : NULL, &r->splits[t], &obj, r);
        if (st) return kv_errctx(st, "step %d: ", t);
        total += obj;
        pipe_model pm;
        pipe_build(&pm, m, p, pl, t, t + 1, 1, 0);
        off += pipe_eval(&pm, 0);
        lref = r->splits[t];
        if (lref > top) top = lref;
    }
    r->split = r->splits[0];
    r->predicted_s = total / 1e6;
    r->offload_s = off / 1e6;
    kept(r, m, pl, top);
    return KV_OK;
}

static const sched_type types[SCHED_COUNT] = {
    {"paper", paper_plan, paper_time},
    {"pipelined", pipelined_plan, pipe_time},
    {"dynamic", dynamic_plan, pipe_time},
};

const char *sched_name(sched_kind k) { return (unsigned)k < SCHED_COUNT ? types[k].name : "?"; }

kv_status sched_parse(const char *s, sched_kind *out) {
    for (int i = 0; i < SCHED_COUNT; i++)
        if (!strcmp(s, types[i].name)) {
            *out = (sched_kind)i;
            return KV_OK;
        }
    return kv_errorf(KV_EINVAL, "unknown scheduler '%s' (paper, pipelined, dynamic)", s);
}

void sched_result_free(sched_result *r) {
    free(r->splits);
    r->splits = NULL;
}

kv_status sched_plan(sched_kind k, const kv_model *m, const hw_profile *p, const kv_plan *pl, const char *write_lp,
                     sched_result *out) {
    memset(out, 0, sizeof *out);
    out->kind = k;
    if ((unsigned)k >= SCHED_COUNT) return kv_errorf(KV_EINVAL, "bad scheduler %d", (int)k);
    kv_status st = kv_plan_validate(pl, m);
    if (st) return st;
    int lmax = sched_lmax(m, p, pl);
    if (lmax < 0) return KV_ENOFIT;
    out->lmax = lmax;
    st = types[k].plan(m, p, pl, lmax, write_lp, out);
    if (st) sched_result_free(out);
    return st;
}

double sched_model_time(sched_kind k, const kv_model *m, const hw_profile *p, const kv_plan *pl, int l) {
    return types[k].model_time(m, p, pl, l);
}

kv_status sched_plan_shared(sched_kind k, const kv_model *m, const hw_profile *p, const hw_topo *t, int n, kv_plan *pl, int *alone) {
    for (int pass = alone ? 0 : 1; pass < 2; pass++) {
        hw_profile e;
        hw_topo_effective(t, p, pass ? n : 1, 0, &e);
        sched_result sr = {0};
        kv_status st = sched_plan(k, m, &e, pl, NULL, &sr);
        if (st) return st;
        if (pass) pl->split = sr.split;
        else *alone = sr.split;
        sched_result_free(&sr);
    }
    return KV_OK;
}
