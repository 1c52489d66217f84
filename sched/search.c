/* search: enumeration, the placement MIP (GLPK), simulation and ranking; brute force; FlexGen's
 * published policies. */
#include "search.h"
#include <glpk.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../hwmodel/cost.h"
#include "../sim/sim.h"
#include "graph.h"
#include "sched.h"

#define US 1e6
#define GIB 1073741824.0
#define NBK 4       /* decode buckets: steps of a bucket are costed at its middle context */
#define MAXW 24     /* distinct weight layouts (at most one per tensor, plus none) */
#define MAXROWS 48
#define SIM_TASKS_DEFAULT 4e6 /* about two seconds of the simulator on one core */
#define SIM_PRED_TOP 24       /* candidates simulated by predicted rank ... */
#define SIM_PER_POLICY 3      /* ... plus the best predicted of each policy (the model's bias differs by policy) */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *const obj_names[SEARCH_OBJ_COUNT] = {"generation", "decode", "latency"};
const char *search_objective_name(search_objective o) { return (unsigned)o < SEARCH_OBJ_COUNT ? obj_names[o] : "?"; }

kv_status search_objective_parse(const char *s, search_objective *out) {
    for (int i = 0; i < SEARCH_OBJ_COUNT; i++)
        if (!strcmp(s, obj_names[i])) {
            *out = (search_objective)i;
            return KV_OK;
        }
    return kv_errorf(KV_EINVAL, "unknown objective '%s' (generation, decode, latency)", s);
}

void search_opts_defaults(search_opts *o) {
    memset(o, 0, sizeof *o);
    o->objective = SEARCH_GENERATION;
    o->top = 5;
    o->prefetch_max = 2;
    o->per_step = 1;
}

/* ---- the search's context: model, capped profile, weight layouts ------------------------- */

/* One of the layer's weight placements the midpoint rule can produce. */
typedef struct {
    int wg;              /* the --percent WG that gives it (the smallest; 100 for all on the GPU) */
    double w_gpu, w_cpu; /* bytes per layer */
} wlayout;

typedef struct {
    const kv_model *m;
    hw_profile p; /* capacities replaced by the options' */
    const search_opts *o;
    int nw;
    wlayout w[MAXW];
    int wmask_of[101]; /* layout index of each integer WG */
    double kvb, actb, qd, pe;
    double kvs, acts; /* K/V and stored activation bytes per token on the link (packed under --compress kv) */
    int L, T;
    sim_ctx *sim;
} sctx;

static void ctx_layouts(sctx *cx) {
    kv_tensor t[KV_MAX_TENSORS];
    unsigned prev = ~0u;
    cx->nw = 0;
    for (int wg = 0; wg <= 100; wg++) {
        int n = kv_layer_tensors(cx->m, wg, 100 - wg, t);
        unsigned mask = 0;
        double g = 0, c = 0;
        for (int i = 0; i < n; i++) {
            double b = (double)t[i].elems * cx->pe;
            if (t[i].on_gpu) mask |= 1u << i, g += b;
            else c += (cx->o->compress & KV_COMP_W) && t[i].rows > 1 ? kv_quant_bytes(1, (double)t[i].rows, (double)(t[i].elems / t[i].rows)) : b;
        }
        if (mask != prev && cx->nw < MAXW) cx->w[cx->nw++] = (wlayout){wg, g, c};
        /* all on the GPU reads best as 100 % */
        if (c == 0) cx->w[cx->nw - 1].wg = 100;
        cx->wmask_of[wg] = cx->nw - 1;
        prev = mask;
    }
}

static kv_status ctx_init(sctx *cx, const kv_model *m, const hw_profile *p, const search_opts *o) {
    memset(cx, 0, sizeof *cx);
    cx->m = m, cx->p = *p, cx->o = o;
    /* several replicas on one host: the search sees one replica's share of the shared hops */
    if (o->topo && o->gpus > 0) hw_topo_effective(o->topo, p, o->gpus, 0, &cx->p);
    if (o->gpu_bytes > 0) cx->p.gpu.mem_bytes.value = o->gpu_bytes;
    if (o->cpu_bytes > 0) cx->p.cpu.mem_bytes.value = o->cpu_bytes;
    cx->pe = kv_dtype_bytes(m->dtype);
    cx->kvb = (double)kv_model_kv_bytes_token_layer(m), cx->actb = (double)kv_model_act_bytes_token(m);
    cx->kvs = kv_store_kv_bytes(m, o->compress), cx->acts = kv_store_act_bytes(m, o->compress);
    cx->qd = (double)m->n_heads * m->head_dim;
    cx->L = m->n_layers, cx->T = o->gen - 1;
    ctx_layouts(cx);
    cx->sim = sim_new();
    return cx->sim ? KV_OK : kv_errorf(KV_ENOMEM, "search: out of memory");
}

static void ctx_free(sctx *cx) { sim_free(cx->sim); }

static kv_status check_opts(const kv_model *m, const search_opts *o) {
    if (o->prompt < 1 || o->prompt > (1 << 24)) return kv_errorf(KV_EINVAL, "prompt must be in [1, 16777216], got %d", o->prompt);
    if (o->gen < 2 || o->gen > (1 << 24)) return kv_errorf(KV_EINVAL, "gen must be in [2, 16777216], got %d", o->gen);
    if ((unsigned)o->objective >= SEARCH_OBJ_COUNT) return kv_errorf(KV_EINVAL, "bad objective %d", (int)o->objective);
    if (o->top < 1 || o->top > 1000) return kv_errorf(KV_EINVAL, "top must be in [1, 1000], got %d", o->top);
    if (!(o->max_token_s >= 0) || !(o->gpu_bytes >= 0) || !(o->cpu_bytes >= 0) || !(o->sim_tasks >= 0))
        return kv_errorf(KV_EINVAL, "search: limits must be >= 0");
    if (o->sequences < 0 || o->sequences > (1 << 20)) return kv_errorf(KV_EINVAL, "sequences must be in [1, 1048576], got %d", o->sequences);
    if (o->max_gbs < 0 || o->max_nb < 0 || o->max_nb > 4096) return kv_errorf(KV_EINVAL, "search: max gbs/nb out of range");
    if (o->prefetch_max < 1 || o->prefetch_max > 8) return kv_errorf(KV_EINVAL, "prefetch depths: 1 to 8, got %d", o->prefetch_max);
    if (o->policies >> KV_POL_COUNT) return kv_errorf(KV_EINVAL, "search: unknown policy bits 0x%x", o->policies);
    (void)m;
    return KV_OK;
}

static int allowed(const search_opts *o, kv_policy pol) { return !o->policies || (o->policies >> pol & 1u); }

/* ---- canonical plans: one key per distinct run ------------------------------------------- */

static int b_gpu_of(const kv_plan *pl) {
    int b = (int)floor(pl->batch * pl->percent.cg / 100 + 0.5);
    return b > pl->batch ? pl->batch : b;
}

static int streams(kv_policy p) { return p == KV_POL_OFFLOAD || p == KV_POL_KVPR || p == KV_POL_RECOMPUTE; }

/* Two plans that run the same graph get the same fields: without CPU-resident cache every
 * policy is the same run (gpu, or offload when weights stream), prefetch depth matters only
 * when something is streamed into slots, and the mode only for what it changes (latency mode
 * runs one micro-batch with the weights resident). */
static void canon(const sctx *cx, kv_plan *pl) {
    pl->compress = cx->o->compress;
    int wi = cx->wmask_of[(int)lround(pl->percent.wg)];
    const wlayout *w = &cx->w[wi];
    int bg = pl->policy == KV_POL_GPU ? pl->batch : b_gpu_of(pl), bc = pl->batch - bg;
    /* relabel only into policies the user allowed: a restricted search keeps its own names */
    const search_opts *o = cx->o;
    kv_policy same = w->w_cpu > 0 ? KV_POL_OFFLOAD : KV_POL_GPU;
    if (bc == 0 && pl->policy != KV_POL_GPU && allowed(o, same)) pl->policy = same;
    if (pl->policy == KV_POL_GPU) wi = cx->nw - 1, w = &cx->w[wi], bg = pl->batch, bc = 0;
    /* KVPR at l = 0 is offloading, and at every stored activation it is recomputation (-1: to be chosen) */
    if (pl->policy == KV_POL_KVPR && !pl->split_steps && pl->split == 0 && allowed(o, KV_POL_OFFLOAD)) pl->policy = KV_POL_OFFLOAD;
    if (pl->policy == KV_POL_KVPR && !pl->split_steps && pl->split > 0 &&
        pl->split >= kv_plan_act_avail(pl, kv_plan_steps(pl) - 1) && allowed(o, KV_POL_RECOMPUTE))
        pl->policy = KV_POL_RECOMPUTE;
    if (pl->policy != KV_POL_KVPR) pl->split = -1;
    double cg = 100.0 * bg / pl->batch;
    pl->percent = (kv_percent){1, w->wg, 100 - w->wg, cg, 100 - cg, pl->percent.hg, 100 - pl->percent.hg};
    if (!(w->w_cpu > 0 || (streams(pl->policy) && bc > 0))) pl->prefetch = 2;
    pl->mode = pl->nb == 1 && w->w_cpu == 0 ? KV_MODE_LATENCY : KV_MODE_THROUGHPUT;
}

static int plan_key_cmp(const kv_plan *a, const kv_plan *b) {
#define K(x)                          \
    if (a->x != b->x) return a->x < b->x ? -1 : 1
    K(policy);
    K(batch);
    K(nb);
    K(percent.wg);
    K(percent.cg);
    K(percent.hg);
    K(prefetch);
    K(split);
#undef K
    int sa = a->split_steps != NULL, sb = b->split_steps != NULL;
    if (sa != sb) return sa - sb;
    if (sa)
        for (int i = 0; i < kv_plan_steps(a); i++)
            if (a->split_steps[i] != b->split_steps[i]) return a->split_steps[i] < b->split_steps[i] ? -1 : 1;
    return 0;
}

static uint64_t plan_hash(const kv_plan *p) {
    double f[8] = {p->policy, p->batch, p->nb, p->percent.wg, p->percent.cg, p->percent.hg, p->prefetch, p->split};
    uint64_t h = 1469598103934665603ull;
    const unsigned char *c = (const unsigned char *)f;
    for (size_t i = 0; i < sizeof f; i++) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

/* A set of plans seen (open addressing over indices into a growing array). */
typedef struct {
    kv_plan *k;
    int n, cap;
    int *slot;
    int nslot;
} pset;

static void pset_free(pset *s) {
    free(s->k);
    free(s->slot);
    memset(s, 0, sizeof *s);
}

/* 1: added, 0: already there, -1: out of memory. split_steps are not kept (the set is for fixed splits). */
static int pset_add(pset *s, const kv_plan *p) {
    if (2 * (s->n + 1) > s->nslot) {
        int ns = s->nslot ? 2 * s->nslot : 1024;
        int *sl = malloc((size_t)ns * sizeof *sl);
        if (!sl) return -1;
        for (int i = 0; i < ns; i++) sl[i] = -1;
        for (int i = 0; i < s->n; i++) {
            uint64_t h = plan_hash(&s->k[i]) % (uint64_t)ns;
            while (sl[h] >= 0) h = (h + 1) % (uint64_t)ns;
            sl[h] = i;
        }
        free(s->slot);
        s->slot = sl, s->nslot = ns;
    }
    uint64_t h = plan_hash(p) % (uint64_t)s->nslot;
    while (s->slot[h] >= 0) {
        if (!plan_key_cmp(&s->k[s->slot[h]], p)) return 0;
        h = (h + 1) % (uint64_t)s->nslot;
    }
    if (s->n == s->cap) {
        int nc = s->cap ? 2 * s->cap : 256;
        kv_plan *k = realloc(s->k, (size_t)nc * sizeof *k);
        if (!k) return -1;
        s->k = k, s->cap = nc;
    }
    s->k[s->n] = *p;
    s->k[s->n].split_steps = NULL;
    s->slot[h] = s->n++;
    return 1;
}

/* ---- the linear model of one outer choice ---------------------------------------------------
 * Per layer and decode bucket b, the period P_b (us) is at least each of rows
 *     a P_var >= c0 + cy y + cw W_k
 * where y is the number of sequences per micro-batch whose cache lives on the CPU and W_k the
 * copy time of the weights layout k leaves on the CPU. The variable var is a decode bucket, or
 * NBK for the prompt pass. Costs that are not linear in y (copy efficiency, GEMM efficiency) are
 * replaced by their secant over [0, gbs]: exact at both ends. */

typedef struct {
    int var;
    double a, c0, cy, cw;
} srow;

typedef struct {
    kv_policy pol;
    int l, gbs, nb, hg, D;
    int ylo, yhi;
    int nw;
    int wok[MAXW];
    double W[MAXW], mg[MAXW], mc[MAXW]; /* us; GPU and CPU bytes at y = 0 */
    double sg, sc;                      /* bytes per sequence of a micro-batch moved to the CPU */
    double gcap, ccap;
    int nbk;
    double cnt[NBK];
    int nrows;
    srow rows[MAXROWS];
    double wpf;      /* weight of the prompt pass in the objective */
    double bound_us; /* decode time bound (us), 0: none */
    double L;
} smodel;

static void row(smodel *sm, int var, double a, double c0, double cy, double cw) {
    if (sm->nrows < MAXROWS) sm->rows[sm->nrows++] = (srow){var, a, c0, cy, cw};
}

static double cp(const hw_profile *p, hw_dir d, double bytes) { return bytes > 0 ? US * hw_copy_time(p, d, bytes, 0, 0) : 0; }

static kv_status layout_of(const sctx *cx, kv_policy pol, int l, int gbs, int nb, int hg, int D, int wi, int y, kv_layout *ly) {
    kv_plan pl;
    kv_plan_defaults(&pl);
    pl.policy = pol, pl.batch = gbs, pl.nb = nb, pl.prompt = cx->o->prompt, pl.gen = cx->o->gen, pl.prefetch = D;
    pl.split = pol == KV_POL_KVPR ? l : -1;
    pl.mode = KV_MODE_THROUGHPUT, pl.compress = cx->o->compress;
    double cg = 100.0 * (gbs - y) / gbs;
    pl.percent = (kv_percent){1, cx->w[wi].wg, 100 - cx->w[wi].wg, cg, 100 - cg, hg, 100 - hg};
    return kv_layout_resolve(cx->m, &pl, ly);
}

static kv_status model_build(const sctx *cx, kv_policy pol, int l, int gbs, int nb, int hg, int D, smodel *sm) {
    const kv_model *m = cx->m;
    const hw_profile *p = &cx->p;
    const search_opts *o = cx->o;
    memset(sm, 0, sizeof *sm);
    sm->pol = pol, sm->l = l, sm->gbs = gbs, sm->nb = nb, sm->hg = hg, sm->D = D, sm->L = cx->L;
    sm->ylo = pol == KV_POL_GPU || pol == KV_POL_OFFLOAD ? 0 : 1;
    sm->yhi = pol == KV_POL_GPU ? 0 : gbs;
    sm->gcap = p->gpu.mem_bytes.value, sm->ccap = p->cpu.mem_bytes.value;
    sm->wpf = o->objective == SEARCH_GENERATION ? 1 : 0;
    sm->bound_us = o->max_token_s > 0 ? US * o->max_token_s * cx->T : 0;
    /* memory: exact, from the layout the simulator and the engine use (affine in y) */
    kv_layout ly;
    kv_status st;
    sm->nw = cx->nw;
    for (int k = 0; k < cx->nw; k++) {
        sm->wok[k] = pol != KV_POL_GPU || cx->w[k].w_cpu == 0;
        sm->W[k] = cp(p, HW_H2D, cx->w[k].w_cpu);
        if ((st = layout_of(cx, pol, l, gbs, nb, hg, D, k, 0, &ly))) return st;
        sm->mg[k] = ly.gpu_total, sm->mc[k] = ly.cpu_total;
    }
    if (sm->yhi > 0) {
        if ((st = layout_of(cx, pol, l, gbs, nb, hg, D, 0, gbs, &ly))) return st;
        sm->sg = (ly.gpu_total - sm->mg[0]) / gbs, sm->sc = (ly.cpu_total - sm->mc[0]) / gbs;
    }
    int cpuat = pol == KV_POL_CPU_ATTN, str = streams(pol), rec = (pol == KV_POL_KVPR || pol == KV_POL_RECOMPUTE) && l > 0;
    double g = gbs, actb = cx->actb, L = cx->L;
    double head = US * hw_head_time(p, m, gbs) / L;
    double hin = hg == 0 ? cp(p, HW_H2D, g * actb) : 0, hout = hg == 0 ? cp(p, HW_D2H, g * actb) : 0;
    int T = cx->T;
    sm->nbk = T < NBK ? T : NBK;
    for (int b = 0; b < sm->nbk; b++) {
        int a0 = (int)((long)T * b / sm->nbk), e = (int)((long)T * (b + 1) / sm->nbk), s = o->prompt + (a0 + e - 1) / 2;
        sm->cnt[b] = e - a0;
        hw_layer_cost lc = hw_decode_layer(p, m, gbs, s);
        double attn = US * lc.attn, rest = US * (lc.qkv + lc.out + lc.mlp + lc.other) + head;
        double af = attn + US * (lc.out + lc.mlp + lc.other / 2);
        double h2dy = 0, d2hy = 0, gpuy = 0, cpuy = 0;
        if (str) {
            int ll = l < s ? l : s;
            h2dy = (cp(p, HW_H2D, g * ll * cx->acts) + cp(p, HW_H2D, g * (s - ll) * cx->kvs)) / g;
            d2hy = cp(p, HW_D2H, g * cx->kvs) / g;
            if (rec) gpuy = US * hw_recompute_time(p, m, gbs, ll) / g;
        } else if (cpuat) {
            h2dy = cp(p, HW_H2D, g * cx->qd * cx->pe) / g;
            d2hy = cp(p, HW_D2H, g * (cx->qd * cx->pe + cx->kvs)) / g;
            cpuy = US * hw_cpu_attn_time(p, m, gbs, s) / g;
            gpuy = -attn / g; /* the GPU attends only over the sequences whose cache it holds */
        }
        row(sm, b, 1, nb * hin, nb * h2dy, 1);                                  /* h2d link */
        row(sm, b, 1, nb * hout, nb * d2hy, 0);                                 /* d2h link */
        row(sm, b, 1, nb * (rest + attn), nb * gpuy, 0);                        /* GPU */
        if (cpuat) {
            row(sm, b, 1, 0, nb * cpuy, 0); /* CPU */
            /* a micro-batch's chain: q out, CPU attention, output back, before its MLP; the
             * compute queue runs micro-batches in order, so the chains do not overlap */
            row(sm, b, 1, nb * rest, nb * (h2dy + d2hy + cpuy), 0);
        }
        if (D >= 2) row(sm, b, D, nb * (hin + af), nb * (h2dy + (cpuat ? gpuy : 0)), 1); /* buffer cycle */
        else row(sm, b, 1, nb * (hin + rest + attn), nb * (h2dy + gpuy), 1);      /* no prefetch: load, then compute */
        if (hg == 0) row(sm, b, 1, hin + hout + rest + attn, gpuy, 0);            /* hidden state's round trip */
    }
    /* the prompt pass: one cell (layer, micro-batch) at a time; its stores overlap its attention
     * and MLP, and the next cell starts once they have read the scratch */
    hw_layer_cost pc = hw_prefill_layer(p, m, gbs, o->prompt);
    double P = o->prompt, pg = US * pc.total + head;
    double phin = hg == 0 ? cp(p, HW_H2D, g * P * actb) : 0, phout = hg == 0 ? cp(p, HW_D2H, g * P * actb) : 0;
    double sty = pol != KV_POL_GPU ? cp(p, HW_D2H, g * P * cx->kvs) / g : 0;
    if (rec) sty += cp(p, HW_D2H, g * (l < P ? l : P) * cx->acts) / g;
    int v = NBK;
    row(sm, v, 1, nb * pg, 0, 0);
    row(sm, v, 1, nb * phin, 0, 1);
    row(sm, v, 1, nb * phout, nb * sty, 0);
    row(sm, v, 1, nb * (US * pc.qkv + phin + phout), nb * sty, 0);
    if (hg == 0) row(sm, v, 1, nb * (pg + phin + phout), 0, 0);
    return KV_OK;
}

/* The model at (layout k, y): prefill and decode seconds; objective in seconds. */
static double model_eval(const smodel *sm, int k, int y, double *pf, double *dec) {
    double P[NBK + 1] = {0};
    for (int i = 0; i < sm->nrows; i++) {
        const srow *r = &sm->rows[i];
        double v = (r->c0 + r->cy * y + r->cw * sm->W[k]) / r->a;
        if (v > P[r->var]) P[r->var] = v;
    }
    double d = 0;
    for (int b = 0; b < sm->nbk; b++) d += sm->cnt[b] * P[b];
    *pf = sm->L * P[NBK] / US, *dec = sm->L * d / US;
    return sm->wpf * *pf + *dec;
}

static int model_fits(const smodel *sm, int k, int y) {
    if (!sm->wok[k] || y < sm->ylo || y > sm->yhi) return 0;
    if (sm->mg[k] + sm->sg * y > sm->gcap || sm->mc[k] + sm->sc * y > sm->ccap) return 0;
    double pf, dec;
    model_eval(sm, k, y, &pf, &dec);
    return !(sm->bound_us > 0 && US * dec > sm->bound_us * (1 + 1e-9));
}

/* The MIP: binaries z_k (one weights layout), integer y, continuous periods. *found = 0 when
 * infeasible (memory or the latency bound), which is an answer, not an error. */
static kv_status model_solve(const smodel *sm, int *kout, int *yout, int *found, search_result *res) {
    *found = 0;
    int K = sm->nw;
    int cz = 1, cy = 1 + K, cp0 = 2 + K, ncol = K + 1 + NBK + 1;
    glp_term_out(GLP_OFF);
    glp_prob *lp = glp_create_prob();
    glp_set_obj_dir(lp, GLP_MIN);
    glp_add_cols(lp, ncol);
    for (int k = 0; k < K; k++) {
        glp_set_col_kind(lp, cz + k, GLP_BV);
        if (!sm->wok[k]) glp_set_col_bnds(lp, cz + k, GLP_FX, 0, 0);
    }
    glp_set_col_kind(lp, cy, GLP_IV);
    glp_set_col_bnds(lp, cy, sm->ylo == sm->yhi ? GLP_FX : GLP_DB, sm->ylo, sm->yhi);
    for (int b = 0; b <= NBK; b++) {
        glp_set_col_bnds(lp, cp0 + b, GLP_LO, 0, 0);
        double c = b < sm->nbk ? sm->L * sm->cnt[b] : b == NBK ? sm->L * sm->wpf : 0;
        glp_set_obj_coef(lp, cp0 + b, c / US); /* seconds: coefficients near 1 */
    }
    int ind[MAXW + NBK + 4];
    double val[MAXW + NBK + 4];
    int r, n = 0;
    for (int k = 0; k < K; k++) ind[++n] = cz + k, val[n] = 1;
    r = glp_add_rows(lp, 1);
    glp_set_mat_row(lp, r, n, ind, val);
    glp_set_row_bnds(lp, r, GLP_FX, 1, 1);
    for (int i = 0; i < sm->nrows; i++) {
        const srow *w = &sm->rows[i];
        n = 0;
        ind[++n] = cp0 + w->var, val[n] = w->a;
        if (w->cy != 0) ind[++n] = cy, val[n] = -w->cy;
        if (w->cw != 0)
            for (int k = 0; k < K; k++)
                if (sm->W[k] != 0) ind[++n] = cz + k, val[n] = -w->cw * sm->W[k];
        r = glp_add_rows(lp, 1);
        glp_set_mat_row(lp, r, n, ind, val);
        glp_set_row_bnds(lp, r, GLP_LO, w->c0, 0);
    }
    for (int mem = 0; mem < 2; mem++) { /* GiB: coefficients near 1 */
        const double *mk = mem ? sm->mc : sm->mg;
        n = 0;
        for (int k = 0; k < K; k++) ind[++n] = cz + k, val[n] = mk[k] / GIB;
        double s = mem ? sm->sc : sm->sg;
        if (s != 0) ind[++n] = cy, val[n] = s / GIB;
        r = glp_add_rows(lp, 1);
        glp_set_mat_row(lp, r, n, ind, val);
        glp_set_row_bnds(lp, r, GLP_UP, 0, (mem ? sm->ccap : sm->gcap) / GIB);
    }
    if (sm->bound_us > 0) {
        n = 0;
        for (int b = 0; b < sm->nbk; b++) ind[++n] = cp0 + b, val[n] = sm->L * sm->cnt[b] / US;
        r = glp_add_rows(lp, 1);
        glp_set_mat_row(lp, r, n, ind, val);
        glp_set_row_bnds(lp, r, GLP_UP, 0, sm->bound_us / US);
    }
    if (glp_get_num_rows(lp) > res->rows) res->rows = glp_get_num_rows(lp), res->cols = ncol, res->ints = K + 1;
    kv_status st = KV_OK;
    glp_smcp sp;
    glp_init_smcp(&sp);
    sp.msg_lev = GLP_MSG_OFF;
    int ret = glp_simplex(lp, &sp);
    if (ret != 0 && ret != GLP_ENOPFS && ret != GLP_ENODFS) {
        st = kv_errorf(KV_ESOLVER, "search MIP: GLPK glp_simplex failed (code %d)", ret);
        goto out;
    }
    if (ret != 0 || glp_get_status(lp) != GLP_OPT) goto out; /* no layout fits: infeasible */
    glp_iocp ip;
    glp_init_iocp(&ip);
    ip.msg_lev = GLP_MSG_OFF;
    ip.presolve = GLP_OFF;
    ip.tm_lim = 2000; /* a safety net: these problems close in well under a millisecond */
    ret = glp_intopt(lp, &ip);
    int ms = glp_mip_status(lp);
    if (ret == GLP_ETMLIM && ms == GLP_FEAS) ms = GLP_OPT; /* the incumbent: good enough, it is simulated anyway */
    else if (ret != 0 && ret != GLP_ENOPFS) {
        st = kv_errorf(KV_ESOLVER, "search MIP: GLPK glp_intopt failed (code %d)", ret);
        goto out;
    }
    if (ms != GLP_OPT) goto out;
    *yout = (int)lround(glp_mip_col_val(lp, cy));
    for (int k = 0; k < K; k++)
        if (glp_mip_col_val(lp, cz + k) > 0.5) *kout = k;
    *found = 1;
out:
    glp_delete_prob(lp);
    return st;
}

kv_status search_mip_check(const kv_model *m, const hw_profile *p, const search_opts *o, kv_policy pol, int split, int gbs,
                           int nb, int hg, int prefetch, double *mip, double *brute) {
    *mip = *brute = INFINITY;
    kv_status st = check_opts(m, o);
    if (st) return st;
    sctx cx;
    if ((st = ctx_init(&cx, m, p, o))) return st;
    smodel sm;
    search_result res = {0};
    int k = 0, y = 0, found = 0;
    if (!(st = model_build(&cx, pol, split, gbs, nb, hg, prefetch, &sm))) st = model_solve(&sm, &k, &y, &found, &res);
    double pf, dec;
    if (!st && found) *mip = model_eval(&sm, k, y, &pf, &dec);
    for (int kk = 0; !st && kk < sm.nw; kk++)
        for (int yy = sm.ylo; yy <= sm.yhi; yy++)
            if (model_fits(&sm, kk, yy)) *brute = fmin(*brute, model_eval(&sm, kk, yy, &pf, &dec));
    if (!st && found && !model_fits(&sm, k, y)) st = kv_errorf(KV_ESOLVER, "search MIP: its answer breaks a constraint");
    ctx_free(&cx);
    return st;
}

/* ---- candidates -------------------------------------------------------------------------- */

static double score_of(search_objective obj, double value) { return obj == SEARCH_LATENCY ? -value : value; }

static double pred_value(const sctx *cx, const kv_plan *pl, double pf, double dec) {
    double seqs = (double)pl->batch * pl->nb;
    switch (cx->o->objective) {
    case SEARCH_GENERATION: return seqs * pl->gen / (pf + dec);
    case SEARCH_DECODE: return seqs * (pl->gen - 1) / dec;
    default: return dec / (pl->gen - 1);
    }
}

static void make_plan(const sctx *cx, const smodel *sm, int k, int y, kv_plan *pl) {
    kv_plan_defaults(pl);
    pl->policy = sm->pol, pl->batch = sm->gbs, pl->nb = sm->nb, pl->prompt = cx->o->prompt, pl->gen = cx->o->gen;
    pl->prefetch = sm->D;
    pl->split = sm->pol == KV_POL_KVPR ? sm->l : -1;
    double cg = 100.0 * (sm->gbs - y) / sm->gbs;
    pl->percent = (kv_percent){1, cx->w[k].wg, 100 - cx->w[k].wg, cg, 100 - cg, sm->hg, 100 - sm->hg};
    canon(cx, pl);
}

typedef struct {
    kv_plan plan;
    double pf, dec, score;
} pcand;

typedef struct {
    pcand *c;
    int n, cap;
} plist;

static kv_status plist_add(plist *l, const pcand *c) {
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 256;
        pcand *q = realloc(l->c, (size_t)nc * sizeof *q);
        if (!q) return kv_errorf(KV_ENOMEM, "search: out of memory");
        l->c = q, l->cap = nc;
    }
    l->c[l->n++] = *c;
    return KV_OK;
}

/* The outer enumeration of FlexGen's cost model (experimental/cost_model.py, solve()): gbs = 1,
 * 2, 3, 4, then doubling; nb from 1 up while feasible, stopping at the first nb that predicts
 * worse than the one before. Past 8 micro-batches nb grows by about 1.5x (the curve is flat
 * there and every nb costs a MIP). */
static int next_gbs(int g) { return g < 4 ? g + 1 : 2 * g; }
static int next_nb(int n) { return n < 8 ? n + 1 : n < 12 ? 12 : n % 3 == 0 ? n / 3 * 4 : n / 4 * 6; }

typedef struct {
    kv_policy pol;
    double lfrac; /* KVPR: split as a share of the prompt (re-chosen by the scheduler after simulation) */
} variant;
static const variant VARIANTS[] = {{KV_POL_GPU, 0},    {KV_POL_OFFLOAD, 0},   {KV_POL_KVPR, 0.25}, {KV_POL_KVPR, 0.5},
                                   {KV_POL_KVPR, 0.75}, {KV_POL_RECOMPUTE, 1}, {KV_POL_CPU_ATTN, 0}};
#define NVAR ((int)(sizeof VARIANTS / sizeof VARIANTS[0]))

static kv_status solve_one(sctx *cx, const variant *v, int gbs, int nb, int hg, int D, plist *out, pset *seen, double *score,
                           int *found, search_result *res) {
    smodel sm;
    int l = v->pol == KV_POL_KVPR ? (int)lround(v->lfrac * cx->o->prompt) : v->pol == KV_POL_RECOMPUTE ? cx->o->prompt : 0;
    if (v->pol == KV_POL_KVPR && l < 1) l = 1;
    kv_status st = model_build(cx, v->pol, l, gbs, nb, hg, D, &sm);
    if (st) return st;
    int k = 0, y = 0;
    double t0 = now_s();
    st = model_solve(&sm, &k, &y, found, res);
    res->solve_s += now_s() - t0;
    res->mips++;
    if (st) return st;
    if (!*found) {
        res->infeasible++;
        return KV_OK;
    }
    pcand c;
    make_plan(cx, &sm, k, y, &c.plan);
    model_eval(&sm, k, y, &c.pf, &c.dec);
    c.score = score_of(cx->o->objective, pred_value(cx, &c.plan, c.pf, c.dec));
    *score = c.score;
    int added = pset_add(seen, &c.plan);
    if (added < 0) return kv_errorf(KV_ENOMEM, "search: out of memory");
    return added ? plist_add(out, &c) : KV_OK;
}

static kv_status enumerate(sctx *cx, plist *out, search_result *res) {
    const search_opts *o = cx->o;
    pset seen = {0};
    kv_status st = KV_OK;
    int gmax = o->max_gbs > 0 ? o->max_gbs : 1 << 20, nmax = o->max_nb > 0 ? o->max_nb : 4096;
    for (int vi = 0; vi < NVAR && !st; vi++) {
        const variant *v = &VARIANTS[vi];
        if (!allowed(o, v->pol)) continue;
        for (int hg = 100; hg >= 0 && !st; hg -= 100)
            for (int D = o->prefetch_max; D >= 1 && !st; D--) {
                if (v->pol == KV_POL_GPU && D != 2 && o->prefetch_max >= 2) continue; /* nothing streams */
                if (o->sequences > 0) {
                    for (int g = 1; g <= o->sequences && g <= gmax && !st; g++) {
                        if (o->sequences % g || o->sequences / g > nmax) continue;
                        double sc;
                        int f;
                        res->outer++;
                        st = solve_one(cx, v, g, o->sequences / g, hg, D, out, &seen, &sc, &f, res);
                    }
                    continue;
                }
                for (int g = 1; g <= gmax && !st; g = next_gbs(g)) {
                    double prev = -INFINITY;
                    int any = 0;
                    for (int nb = 1; nb <= nmax && !st; nb = next_nb(nb)) {
                        double sc = 0;
                        int f = 0;
                        res->outer++;
                        st = solve_one(cx, v, g, nb, hg, D, out, &seen, &sc, &f, res);
                        if (st || !f) break; /* memory and step time only grow with nb */
                        any = 1;
                        if (sc < prev) break;
                        prev = sc;
                    }
                    if (!any) break; /* nor does anything fit with a bigger gbs */
                }
            }
    }
    pset_free(&seen);
    return st;
}

/* ---- simulation and ranking -------------------------------------------------------------- */

void search_cand_free(search_cand *c) {
    free(c->plan.split_steps);
    c->plan.split_steps = NULL;
}

kv_status search_cand_copy(search_cand *dst, const search_cand *src) {
    *dst = *src;
    if (src->plan.split_steps) {
        size_t n = (size_t)kv_plan_steps(&src->plan);
        dst->plan.split_steps = malloc(n * sizeof(int));
        if (!dst->plan.split_steps) return kv_errorf(KV_ENOMEM, "search: out of memory");
        memcpy(dst->plan.split_steps, src->plan.split_steps, n * sizeof(int));
    }
    return KV_OK;
}

void search_result_free(search_result *r) {
    for (int i = 0; i < r->n; i++) search_cand_free(&r->c[i]);
    for (int i = 0; i < KV_POL_COUNT; i++)
        if (r->has[i]) search_cand_free(&r->best[i]);
    memset(r->has, 0, sizeof r->has);
    free(r->c);
    r->c = NULL;
    r->n = 0;
}

static double sim_value(search_objective obj, const sim_result *r, int gen) {
    switch (obj) {
    case SEARCH_GENERATION: return r->generation_tok_s;
    case SEARCH_DECODE: return r->decode_tok_s;
    default: return r->decode_s / (gen - 1);
    }
}

static kv_status simulate(sctx *cx, const kv_plan *pl, search_cand *c, int *fits) {
    memset(c, 0, sizeof *c);
    *fits = 0;
    kv_layout ly;
    kv_status st = kv_plan_validate(pl, cx->m);
    if (st) return st;
    if ((st = kv_layout_resolve(cx->m, pl, &ly))) return st;
    if (kv_layout_fits(&ly, cx->p.gpu.mem_bytes.value, cx->p.cpu.mem_bytes.value)) {
        kv_errclear();
        return KV_OK; /* pruned before simulating */
    }
    sim_result r;
    if ((st = sim_run(cx->sim, cx->m, &cx->p, pl, &r))) return st;
    *fits = 1;
    c->plan = *pl;
    c->plan.split_steps = NULL;
    if (pl->split_steps) {
        size_t n = (size_t)kv_plan_steps(pl);
        if (!(c->plan.split_steps = malloc(n * sizeof(int)))) return kv_errorf(KV_ENOMEM, "search: out of memory");
        memcpy(c->plan.split_steps, pl->split_steps, n * sizeof(int));
    }
    c->split_how = pl->policy != KV_POL_KVPR ? "-" : pl->split_steps ? "per-step" : "fixed";
    c->prefill_s = r.prefill_s, c->decode_s = r.decode_s;
    c->decode_tok_s = r.decode_tok_s, c->generation_tok_s = r.generation_tok_s;
    c->token_s = r.decode_s / kv_plan_steps(pl);
    for (int i = 0; i < KV_RES_COUNT; i++) c->util[i] = r.util[i];
    c->gpu_bytes = r.mem_peak, c->cpu_bytes = r.cpu_mem;
    c->value = sim_value(cx->o->objective, &r, pl->gen);
    c->bound = 0;
    for (int i = 1; i < KV_RES_COUNT; i++)
        if (c->util[i] > c->util[c->bound]) c->bound = i;
    return KV_OK;
}

kv_status search_simulate(const kv_model *m, const hw_profile *p, const search_opts *o, const kv_plan *pl, search_cand *c,
                          int *fits) {
    sctx cx;
    kv_status st = ctx_init(&cx, m, p, o);
    if (!st) st = simulate(&cx, pl, c, fits);
    ctx_free(&cx);
    return st;
}

static int cmp_int(double a, double b) { return a < b ? -1 : a > b ? 1 : 0; }

int search_cmp(const search_cand *a, const search_cand *b, search_objective obj) {
    /* 7 significant digits: runs that differ only by rounding tie, and the order stays total */
    float va = (float)a->value, vb = (float)b->value;
    int c;
    if (va != vb) return obj == SEARCH_LATENCY ? (va < vb ? -1 : 1) : (va > vb ? -1 : 1);
    /* the simpler policy (gpu, offload, kvpr, recompute, cpu-attn), then the smaller footprint */
    if (a->plan.policy != b->plan.policy) return a->plan.policy < b->plan.policy ? -1 : 1;
    if ((c = cmp_int(a->gpu_bytes, b->gpu_bytes)) || (c = cmp_int(a->cpu_bytes, b->cpu_bytes))) return c;
    return plan_key_cmp(&a->plan, &b->plan);
}

void search_rank(search_cand *c, int n, search_objective obj) {
    /* insertion sort: stable, no global state, and n is at most a few hundred */
    for (int i = 1; i < n; i++) {
        search_cand x = c[i];
        int j = i - 1;
        while (j >= 0 && search_cmp(&x, &c[j], obj) < 0) {
            c[j + 1] = c[j];
            j--;
        }
        c[j + 1] = x;
    }
}

static int pcand_cmp(const void *a, const void *b) {
    const pcand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return plan_key_cmp(&x->plan, &y->plan);
}

static double tasks_of(const sctx *cx, const kv_plan *pl) {
    return (double)cx->L * pl->nb * (pl->gen + 1) * 10.0; /* ~10 ops per (layer, micro-batch, step) */
}

typedef struct {
    search_cand *c;
    int n, cap;
} clist;

static kv_status clist_push(clist *l, search_cand *c) {
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 64;
        search_cand *q = realloc(l->c, (size_t)nc * sizeof *q);
        if (!q) {
            search_cand_free(c);
            return kv_errorf(KV_ENOMEM, "search: out of memory");
        }
        l->c = q, l->cap = nc;
    }
    l->c[l->n++] = *c;
    return KV_OK;
}

static int meets(const sctx *cx, const search_cand *c) {
    return !(cx->o->max_token_s > 0 && c->token_s > cx->o->max_token_s * (1 + 1e-9));
}

/* Simulates pl (once per distinct plan) and keeps it if it fits and meets the bound. */
static kv_status try_plan(sctx *cx, const kv_plan *pl, double pf, double dec, pset *done, clist *out, search_result *res) {
    if (!pl->split_steps) {
        int a = pset_add(done, pl);
        if (a < 0) return kv_errorf(KV_ENOMEM, "search: out of memory");
        if (!a) return KV_OK;
    }
    search_cand c;
    int fits;
    double t0 = now_s();
    kv_status st = simulate(cx, pl, &c, &fits);
    res->sim_s += now_s() - t0;
    if (st) return st;
    if (!fits) {
        res->pruned++;
        return KV_OK;
    }
    res->simulated++;
    res->tasks += tasks_of(cx, pl);
    c.pred_prefill_s = pf, c.pred_decode_s = dec;
    c.pred_value = dec > 0 ? pred_value(cx, pl, pf, dec) : 0;
    if (!meets(cx, &c)) {
        res->over_bound++;
        search_cand_free(&c);
        return KV_OK;
    }
    return clist_push(out, &c);
}

/* The split the pipelined scheduler picks for a KVPR candidate's layout (fixed), or per step. */
static kv_status resplit(sctx *cx, const kv_plan *pl, sched_kind k, kv_plan *out, int *ok) {
    *ok = 0;
    sched_result sr;
    kv_plan q = *pl;
    q.split_steps = NULL;
    kv_status st = sched_plan(k, cx->m, &cx->p, &q, NULL, &sr);
    if (st == KV_ENOFIT || st == KV_ESOLVER) {
        kv_errclear(); /* the candidate stands with its own split */
        return KV_OK;
    }
    if (st) return st;
    *out = q;
    out->split = sr.split;
    out->split_steps = k == SCHED_DYNAMIC ? sr.splits : NULL;
    if (k != SCHED_DYNAMIC) sched_result_free(&sr);
    *ok = 1;
    return KV_OK;
}

/* The linear model's prediction for a plan the search did not make itself (another split). */
static kv_status predict(const sctx *cx, const kv_plan *pl, double *pf, double *dec) {
    smodel sm;
    int l = pl->policy == KV_POL_KVPR ? pl->split : pl->policy == KV_POL_RECOMPUTE ? pl->prompt : 0;
    kv_status st = model_build(cx, pl->policy, l, pl->batch, pl->nb, (int)pl->percent.hg, pl->prefetch, &sm);
    if (!st) model_eval(&sm, cx->wmask_of[(int)lround(pl->percent.wg)], pl->batch - b_gpu_of(pl), pf, dec);
    return st;
}

kv_status search_run(const kv_model *m, const hw_profile *p, const search_opts *o, search_result *res) {
    memset(res, 0, sizeof *res);
    kv_status st = check_opts(m, o);
    if (st) return st;
    sctx cx;
    if ((st = ctx_init(&cx, m, p, o))) return st;
    plist pc = {0};
    clist sims = {0};
    pset done = {0};
    if ((st = enumerate(&cx, &pc, res))) goto out;
    if (pc.n == 0) {
        st = kv_errorf(KV_ENOFIT, "no configuration of %s fits %.1f GiB of GPU and %.1f GiB of CPU memory%s", m->name,
                       cx.p.gpu.mem_bytes.value / GIB, cx.p.cpu.mem_bytes.value / GIB,
                       o->max_token_s > 0 ? " within the per-token latency bound" : "");
        goto out;
    }
    qsort(pc.c, (size_t)pc.n, sizeof *pc.c, pcand_cmp);
    /* which candidates to simulate, in this order: the best predicted of every policy (the
     * model's bias differs by policy, and the report compares them), then the best predicted
     * overall and the next few of every policy; those past the first `top` only while the budget
     * of simulated tasks lasts */
    int *order = malloc(sizeof(int) * (size_t)pc.n);
    char *pick = calloc((size_t)pc.n, 1);
    if (!pick || !order) {
        free(order);
        free(pick);
        st = kv_errorf(KV_ENOMEM, "search: out of memory");
        goto out;
    }
    int per[KV_POL_COUNT] = {0}, no = 0, nfirst;
    for (int i = 0; i < pc.n; i++) res->feasible[pc.c[i].plan.policy]++;
    for (int i = 0; i < pc.n; i++)
        if (!per[pc.c[i].plan.policy]++) order[no++] = i, pick[i] = 1;
    nfirst = no;
    memset(per, 0, sizeof per);
    for (int i = 0; i < pc.n; i++) {
        int k = per[pc.c[i].plan.policy]++;
        if (!pick[i] && (i < SIM_PRED_TOP || k < SIM_PER_POLICY)) order[no++] = i, pick[i] = 1;
    }
    double budget = o->sim_tasks > 0 ? o->sim_tasks : SIM_TASKS_DEFAULT;
    for (int j = 0; j < no && !st; j++) {
        int i = order[j];
        if (j >= nfirst + o->top && res->tasks + tasks_of(&cx, &pc.c[i].plan) > budget) continue;
        st = try_plan(&cx, &pc.c[i].plan, pc.c[i].pf, pc.c[i].dec, &done, &sims, res);
        /* KVPR: the pipelined scheduler's split for this layout, too */
        if (!st && pc.c[i].plan.policy == KV_POL_KVPR) {
            kv_plan q;
            int ok;
            double pf = 0, dec = 0;
            st = resplit(&cx, &pc.c[i].plan, SCHED_PIPELINED, &q, &ok);
            if (!st && ok) canon(&cx, &q);
            if (!st && ok && !(st = predict(&cx, &q, &pf, &dec))) st = try_plan(&cx, &q, pf, dec, &done, &sims, res);
        }
    }
    free(pick);
    free(order);
    if (st) goto out;
    search_rank(sims.c, sims.n, o->objective);
    /* a split per decode step for the best KVPR candidates */
    if (o->per_step) {
        int nk = 0, n0 = sims.n;
        for (int i = 0; i < n0 && nk < 2 && !st; i++) {
            if (sims.c[i].plan.policy != KV_POL_KVPR || sims.c[i].plan.split_steps) continue;
            nk++;
            kv_plan q;
            int ok;
            kv_plan base = sims.c[i].plan;
            double pf = sims.c[i].pred_prefill_s;
            st = resplit(&cx, &base, SCHED_DYNAMIC, &q, &ok);
            if (st || !ok) continue;
            /* a per-step split that never changes is the fixed split again */
            int varies = 0;
            for (int t = 1; t < kv_plan_steps(&q); t++) varies |= q.split_steps[t] != q.split_steps[0];
            if (varies) st = try_plan(&cx, &q, pf, 0, &done, &sims, res);
            free(q.split_steps);
        }
        search_rank(sims.c, sims.n, o->objective);
    }
    if (st) goto out;
    if (sims.n == 0) {
        st = kv_errorf(KV_ENOFIT, "no simulated configuration of %s meets the per-token latency bound of %.2f ms (%d over it)",
                       m->name, 1e3 * o->max_token_s, res->over_bound);
        goto out;
    }
    for (int i = 0; i < sims.n && !st; i++) {
        kv_policy pol = sims.c[i].plan.policy;
        if (res->has[pol]) continue;
        st = search_cand_copy(&res->best[pol], &sims.c[i]);
        res->has[pol] = !st;
    }
    if (st) goto out;
    int keep = sims.n < o->top ? sims.n : o->top;
    for (int i = keep; i < sims.n; i++) search_cand_free(&sims.c[i]);
    res->c = sims.c, res->n = keep;
    sims.c = NULL;
out:
    if (sims.c) {
        for (int i = 0; i < sims.n; i++) search_cand_free(&sims.c[i]);
        free(sims.c);
    }
    free(pc.c);
    pset_free(&done);
    ctx_free(&cx);
    if (st) search_result_free(res);
    return st;
}

/* ---- brute force and regret -------------------------------------------------------------- */

kv_status search_brute(const kv_model *m, const hw_profile *p, const search_opts *o, search_cand *best, int *nsim) {
    memset(best, 0, sizeof *best);
    *nsim = 0;
    kv_status st = check_opts(m, o);
    if (st) return st;
    if (!o->sequences && (o->max_gbs < 1 || o->max_nb < 1))
        return kv_errorf(KV_EINVAL, "brute force needs a bounded grid: set max gbs and nb, or the sequences");
    sctx cx;
    if ((st = ctx_init(&cx, m, p, o))) return st;
    pset seen = {0};
    int have = 0;
    int gmax = o->sequences ? o->sequences : o->max_gbs;
    for (int pol = 0; pol < KV_POL_COUNT && !st; pol++) {
        if (!allowed(o, (kv_policy)pol)) continue;
        for (int wg = 0; wg <= 100 && !st; wg += 10)
            for (int cg = 0; cg <= 100 && !st; cg += 10)
                for (int hg = 100; hg >= 0 && !st; hg -= 100)
                    for (int g = 1; g <= gmax && !st; g = o->sequences ? g + 1 : next_gbs(g)) {
                        if (o->sequences && o->sequences % g) continue;
                        int n0 = o->sequences ? o->sequences / g : 1, n1 = o->sequences ? n0 : o->max_nb;
                        for (int nb = n0; nb <= n1 && !st; nb++) {
                            if (pol == KV_POL_GPU && (wg != 100 || cg != 100)) continue;
                            kv_plan pl;
                            kv_plan_defaults(&pl);
                            pl.policy = (kv_policy)pol, pl.batch = g, pl.nb = nb, pl.prompt = o->prompt, pl.gen = o->gen;
                            pl.prefetch = 2;
                            pl.percent = (kv_percent){1, wg, 100 - wg, cg, 100 - cg, hg, 100 - hg};
                            canon(&cx, &pl);
                            int a = pset_add(&seen, &pl);
                            if (a < 0) st = kv_errorf(KV_ENOMEM, "search: out of memory");
                            if (a <= 0) continue;
                            kv_layout ly;
                            if ((st = kv_layout_resolve(m, &pl, &ly))) break;
                            if (kv_layout_fits(&ly, cx.p.gpu.mem_bytes.value, cx.p.cpu.mem_bytes.value)) continue;
                            if (pl.policy == KV_POL_KVPR) {
                                kv_plan q;
                                int ok;
                                if ((st = resplit(&cx, &pl, SCHED_PIPELINED, &q, &ok))) break;
                                if (!ok) continue;
                                pl = q;
                                canon(&cx, &pl);
                            }
                            search_cand c;
                            int fits;
                            if ((st = simulate(&cx, &pl, &c, &fits))) break;
                            if (!fits) continue;
                            (*nsim)++;
                            if (!meets(&cx, &c)) continue;
                            if (!have || search_cmp(&c, best, o->objective) < 0) *best = c, have = 1;
                        }
                    }
    }
    pset_free(&seen);
    ctx_free(&cx);
    if (!st && !have)
        st = kv_errorf(KV_ENOFIT, "brute force: no configuration of %s fits%s", m->name,
                       o->max_token_s > 0 ? " and meets the latency bound" : "");
    return st;
}

kv_status search_regret_of(const kv_model *m, const hw_profile *p, const search_opts *o, search_regret *out) {
    memset(out, 0, sizeof *out);
    search_result r;
    double t0 = now_s();
    kv_status st = search_run(m, p, o, &r);
    out->search_s = now_s() - t0;
    if (st) return st;
    st = search_cand_copy(&out->chosen, &r.c[0]);
    search_result_free(&r);
    if (st) return st;
    t0 = now_s();
    st = search_brute(m, p, o, &out->best, &out->brute_sims);
    out->brute_s = now_s() - t0;
    if (st) {
        search_cand_free(&out->chosen);
        return st;
    }
    out->search_value = out->chosen.value, out->brute_value = out->best.value;
    out->regret = o->objective == SEARCH_LATENCY ? out->search_value / out->brute_value - 1
                                                 : 1 - out->search_value / out->brute_value;
    return KV_OK;
}

void search_regret_free(search_regret *r) {
    search_cand_free(&r->chosen);
    search_cand_free(&r->best);
}

/* ---- FlexGen's published policies ---------------------------------------------------------- */

/* FMInference/FlexLLMGen (FlexGen), benchmark/flexgen/bench_suite.py: the single-T4 policies of
 * its paper's Table 2 runs (prompt 512 and 1024, gen 32). "--overlap False" is no prefetch;
 * "--cpu" is cpu_cache_compute (attention over the CPU-resident cache on the CPU). FlexGen
 * publishes no single-GPU policy for OPT-13B or OPT-66B. */
static const search_flexgen_case FLEXGEN[] = {
    {"OPT-6.7B", 512, 32, {100, 0, 100, 0, 100, 0}, 2, 1, 0,
     "bench_suite.py suite_6b7_1x1: --percent 100 0 100 0 100 0 --gpu-batch-size 2 --overlap False"},
    {"OPT-6.7B", 1024, 32, {100, 0, 100, 0, 100, 0}, 1, 1, 0,
     "bench_suite.py suite_6b7_1x1: --percent 100 0 100 0 100 0 --gpu-batch-size 1 --overlap False --prompt-len 1024"},
    {"OPT-30B", 512, 32, {20, 80, 0, 100, 0, 100}, 48, 3, 1,
     "bench_suite.py suite_30b_1x1: --percent 20 80 0 100 0 100 --gpu-batch-size 48 --num-gpu-batches 3 --cpu"},
    {"OPT-30B", 1024, 32, {4, 96, 0, 100, 0, 100}, 20, 4, 1,
     "bench_suite.py suite_30b_1x1: --percent 4 96 0 100 0 100 --gpu-batch-size 20 --num-gpu-batches 4 --cpu --prompt-len 1024"},
};

int search_flexgen_cases(const search_flexgen_case **out) {
    *out = FLEXGEN;
    return (int)(sizeof FLEXGEN / sizeof FLEXGEN[0]);
}

void search_flexgen_plan(const search_flexgen_case *fc, kv_plan *pl) {
    kv_plan_defaults(pl);
    const double *c = fc->percent;
    pl->mode = KV_MODE_THROUGHPUT;
    pl->policy = c[0] == 100 && c[2] == 100 ? KV_POL_GPU : fc->cpu_attn ? KV_POL_CPU_ATTN : KV_POL_OFFLOAD;
    pl->batch = fc->gbs, pl->nb = fc->nb, pl->prompt = fc->prompt, pl->gen = fc->gen;
    pl->prefetch = strstr(fc->source, "--overlap False") ? 1 : 2;
    pl->percent = (kv_percent){1, c[0], c[1], c[2], c[3], c[4], c[5]};
    pl->preset = KV_PRESET_FLEXGEN;
}
