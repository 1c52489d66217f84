/* sim: plan -> task graph -> run -> metrics. */
#include "sim.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../hwmodel/cost.h"

struct sim_ctx {
    sim_des *des;
    double *step_end, *step_s;
    int steps_cap;
    int32_t *last_ffn; /* ring over (layer, mb) slots: the ffn task, to find buffer owners */
    int32_t *last_wb;  /* same ring: the slot's write-back, which reads it after its ffn may be done */
    int32_t *cache_wb; /* per (layer, mb): the last write-back into that host cache */
    int32_t lf_cap, cw_cap;
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
    free(s->last_ffn);
    free(s->last_wb);
    free(s->cache_wb);
    free(s);
}

sim_des *sim_last_des(sim_ctx *s) { return s->des; }

/* Costs of one decode step; every layer of a step costs the same, so compute them once. */
typedef struct {
    int s, l;
    double act_b, act_w, kv_b, kv_w, a_h2d, a_d2h;
    double wb_b, wb_w, q_b, q_w, o_b, o_w;
    double rec, qkv, attn, ffn, cpu_attn, rec_flops, layer_flops, rec_kv_b;
} step_cost;

static void copy_of(const hw_profile *p, hw_dir dir, double bytes, int paper, double *work) {
    const hw_link_dir *d = dir == HW_H2D ? &p->link.h2d : &p->link.d2h;
    *work = paper ? bytes : bytes / hw_table_eval(&d->size_eff, bytes);
}

static void step_costs(const kv_model *m, const hw_profile *p, const kv_plan *pl, int t, step_cost *c) {
    int b = pl->batch, pe = kv_dtype_bytes(m->dtype);
    double h = m->hidden, kvb = (double)kv_model_kv_bytes_token_layer(m), actb = (double)kv_model_act_bytes_token(m);
    memset(c, 0, sizeof *c);
    c->s = pl->prompt + t;
    c->l = kv_plan_split_at(pl, t);
    if (pl->policy == KV_POL_GPU || pl->policy == KV_POL_CPU_ATTN) c->l = 0;
    c->a_h2d = pl->paper_model ? 0 : p->link.h2d.overhead.value;
    c->a_d2h = pl->paper_model ? 0 : p->link.d2h.overhead.value;
    c->rec_flops = kv_model_recompute_flops(m, (int64_t)b * c->l);
    c->rec_kv_b = (double)b * c->l * kvb;
    c->layer_flops = kv_model_decode_flops_layer(m, b, c->s);
    if (pl->paper_model) {
        /* method.md section 3, with v_com the H2D plateau and v_gpu the peak rate */
        hw_paper_cost pc = hw_paper_layer(p, m, b, c->s, c->l);
        c->act_b = c->act_w = (double)b * c->l * h * pe;
        c->kv_b = c->kv_w = 2.0 * b * (c->s - c->l) * h * pe;
        c->rec = pc.t_rec;
        return;
    }
    c->act_b = (double)b * c->l * actb;
    c->kv_b = (double)b * (c->s - c->l) * kvb;
    copy_of(p, HW_H2D, c->act_b, 0, &c->act_w);
    copy_of(p, HW_H2D, c->kv_b, 0, &c->kv_w);
    c->wb_b = (double)b * (kvb + (pl->keep_act ? actb : 0));
    copy_of(p, HW_D2H, c->wb_b, 0, &c->wb_w);
    c->rec = hw_recompute_time(p, m, b, c->l);
    hw_layer_cost lc = hw_decode_layer(p, m, b, c->s);
    c->qkv = lc.qkv + lc.other / 2;
    c->attn = lc.attn;
    c->ffn = lc.out + lc.mlp + lc.other / 2;
    /* cpu-attn: q with the new K/V go down, the attention output comes back */
    c->q_b = (double)b * ((double)m->n_heads * m->head_dim * pe + kvb);
    c->o_b = (double)b * h * pe;
    copy_of(p, HW_D2H, c->q_b, 0, &c->q_w);
    copy_of(p, HW_H2D, c->o_b, 0, &c->o_w);
    c->cpu_attn = hw_cpu_attn_time(p, m, b, c->s);
}

#define TASK(var, op, res)                                                      \
    do {                                                                        \
        var = sim_des_task(d, op, res, t, j, k);                                \
        if (var < 0) return kv_errorf(KV_ENOMEM, "sim: out of memory for tasks"); \
    } while (0)
#define DEP(a, b)                                          \
    do {                                                   \
        if ((a) >= 0 && (st = sim_des_dep(d, a, b))) return st; \
    } while (0)

static void set_copy(sim_task *x, double bytes, double work, double alpha, double alloc) {
    x->bytes = bytes;
    x->work = work;
    x->fixed_s = alpha;
    x->mem_alloc = alloc;
}

static kv_status expand(sim_ctx *sx, const kv_model *m, const hw_profile *p, const kv_plan *pl) {
    sim_des *d = sx->des;
    kv_status st;
    int T = kv_plan_steps(pl), L = kv_plan_layers(pl, m), nb = pl->nb;
    int thr = pl->mode == KV_MODE_THROUGHPUT, paper = pl->paper_model;
    int pol = pl->policy, D = paper ? 1 : pl->prefetch;
    int offl = pol == KV_POL_OFFLOAD || pol == KV_POL_KVPR || pol == KV_POL_RECOMPUTE;
    int w_on_cpu = thr && pol != KV_POL_GPU;
    int pe = kv_dtype_bytes(m->dtype);
    double wkv_bytes = 2.0 * m->hidden * kv_model_kv_dim(m) * pe;
    double layer_bytes = (double)kv_model_bytes_layer(m);
    int64_t nslots = (int64_t)L * nb;
    if (nslots > (1 << 28)) return kv_errorf(KV_EOVERFLOW, "sim: %lld layer x micro-batch slots is too many", (long long)nslots);

    /* Ring of the last D*nb+nb ffn tasks in (layer, mb) order: the buffer owners. */
    int32_t ring = D * nb + nb + 1;
    if (ring > sx->lf_cap) {
        int32_t *q = realloc(sx->last_ffn, (size_t)ring * sizeof *q), *w = q ? realloc(sx->last_wb, (size_t)ring * sizeof *w) : NULL;
        if (q) sx->last_ffn = q;
        if (!w) return kv_errorf(KV_ENOMEM, "sim: out of memory");
        sx->last_wb = w;
        sx->lf_cap = ring;
    }
    if (nslots > sx->cw_cap) {
        int32_t *q = realloc(sx->cache_wb, (size_t)nslots * sizeof *q);
        if (!q) return kv_errorf(KV_ENOMEM, "sim: out of memory");
        sx->cache_wb = q;
        sx->cw_cap = (int32_t)nslots;
    }
    for (int32_t i = 0; i < ring; i++) sx->last_ffn[i] = sx->last_wb[i] = -1;
    for (int64_t i = 0; i < nslots; i++) sx->cache_wb[i] = -1;
    int64_t v = 0; /* running (step, layer, mb) index */
    step_cost c;
    for (int t = 0; t < T; t++) {
        step_costs(m, p, pl, t, &c);
        for (int j = 0; j < L; j++) {
            int32_t w = -1, wkv = -1;
            int k = 0;
            /* Buffers of layer g are those of layer g - D: free once that layer's last mb is done. */
            int32_t wbuf = v - (int64_t)D * nb + nb - 1 >= 0 ? sx->last_ffn[(v - (int64_t)D * nb + nb - 1) % ring] : -1;
            if (w_on_cpu && pl->wkv_first && c.l > 0) {
                TASK(wkv, KV_OP_WKV_H2D, KV_RES_H2D);
                double wk;
                copy_of(p, HW_H2D, wkv_bytes, paper, &wk);
                set_copy(sim_des_get(d, wkv), wkv_bytes, wk, c.a_h2d, wkv_bytes);
                DEP(wbuf, wkv);
            }
            for (k = 0; k < nb; k++, v++) {
                int32_t act = -1, kv = -1, qkv, rec = -1, attn = -1, ffn, wb = -1;
                int32_t buf = v - D * (int64_t)nb >= 0 ? sx->last_ffn[(v - (int64_t)D * nb) % ring] : -1;
                /* as the engine: a slot is free once its last user's write-back has read it, and a host
                 * cache's rows once last step's write-back into it is done */
                int32_t bufwb = v - D * (int64_t)nb >= 0 ? sx->last_wb[(v - (int64_t)D * nb) % ring] : -1;
                int32_t cwb = sx->cache_wb[(int64_t)j * nb + k];
                if (paper) buf = v - 1 >= 0 ? sx->last_ffn[(v - 1) % ring] : -1, bufwb = cwb = -1;
                if (offl && c.l > 0) {
                    TASK(act, KV_OP_ACT_H2D, KV_RES_H2D);
                    set_copy(sim_des_get(d, act), c.act_b, c.act_w, c.a_h2d, c.act_b);
                    DEP(buf, act);
                    DEP(bufwb, act);
                    DEP(cwb, act);
                }
                if (w_on_cpu && k == 0) {
                    double wbytes = wkv >= 0 ? layer_bytes - wkv_bytes : layer_bytes, ww;
                    TASK(w, KV_OP_W_H2D, KV_RES_H2D);
                    copy_of(p, HW_H2D, wbytes, paper, &ww);
                    set_copy(sim_des_get(d, w), wbytes, ww, c.a_h2d, wbytes);
                    DEP(wbuf, w);
                }
                if (offl && c.s - c.l > 0) {
                    TASK(kv, KV_OP_KV_H2D, KV_RES_H2D);
                    set_copy(sim_des_get(d, kv), c.kv_b, c.kv_w, c.a_h2d, c.kv_b);
                    DEP(buf, kv);
                    DEP(bufwb, kv);
                    DEP(cwb, kv);
                }
                TASK(qkv, KV_OP_QKV, KV_RES_GPU);
                sim_des_get(d, qkv)->fixed_s = paper ? 0 : c.qkv;
                DEP(w, qkv);
                DEP(bufwb, qkv);
                if (act >= 0) {
                    TASK(rec, KV_OP_RECOMPUTE, KV_RES_GPU);
                    sim_task *r = sim_des_get(d, rec);
                    r->fixed_s = c.rec;
                    r->flops = c.rec_flops;
                    r->mem_alloc = c.rec_kv_b;  /* the recomputed K/V, until attention */
                    r->mem_free += c.act_b;     /* the activations are consumed */
                    DEP(act, rec);
                    DEP(wkv >= 0 ? wkv : w, rec);
                }
                if (pol == KV_POL_CPU_ATTN) {
                    int32_t q, ca, o;
                    TASK(q, KV_OP_Q_D2H, KV_RES_D2H);
                    set_copy(sim_des_get(d, q), c.q_b, c.q_w, c.a_d2h, 0);
                    TASK(ca, KV_OP_CPU_ATTN, KV_RES_CPU);
                    sim_des_get(d, ca)->fixed_s = c.cpu_attn;
                    TASK(o, KV_OP_O_H2D, KV_RES_H2D);
                    set_copy(sim_des_get(d, o), c.o_b, c.o_w, c.a_h2d, 0);
                    DEP(qkv, q);
                    DEP(q, ca);
                    DEP(ca, o);
                    TASK(ffn, KV_OP_FFN, KV_RES_GPU);
                    DEP(o, ffn);
                } else {
                    TASK(attn, KV_OP_ATTN, KV_RES_GPU);
                    sim_task *a = sim_des_get(d, attn);
                    a->fixed_s = paper ? 0 : c.attn;
                    a->mem_free = (kv >= 0 ? c.kv_b : 0) + (rec >= 0 ? c.rec_kv_b : 0);
                    DEP(qkv, attn);
                    DEP(rec, attn);
                    DEP(kv, attn);
                    TASK(ffn, KV_OP_FFN, KV_RES_GPU);
                    DEP(attn, ffn);
                }
                sim_task *f = sim_des_get(d, ffn);
                f->fixed_s = paper ? 0 : c.ffn;
                f->flops = c.layer_flops;
                if (k == nb - 1) f->mem_free += (w >= 0 ? sim_des_get(d, w)->bytes : 0) + (wkv >= 0 ? wkv_bytes : 0);
                if (pol != KV_POL_GPU && pol != KV_POL_CPU_ATTN && !paper) {
                    TASK(wb, KV_OP_KV_D2H, KV_RES_D2H);
                    set_copy(sim_des_get(d, wb), c.wb_b, c.wb_w, c.a_d2h, 0);
                    DEP(qkv, wb);
                    sx->cache_wb[(int64_t)j * nb + k] = wb;
                }
                sx->last_ffn[v % ring] = ffn;
                sx->last_wb[v % ring] = wb;
            }
        }
    }
    return KV_OK;
}

static double cpu_bytes(const kv_model *m, const kv_plan *pl) {
    if (pl->policy == KV_POL_GPU) return 0;
    double seqs = (double)pl->batch * pl->nb, ctx = (double)pl->prompt + pl->gen, L = m->n_layers;
    double b = seqs * ctx * (double)kv_model_kv_bytes_token_layer(m) * L;
    /* activations are kept only for the tokens some step recomputes: [0, max split) */
    int kept = 0;
    for (int t = 0; t < kv_plan_steps(pl); t++) {
        int l = kv_plan_split_at(pl, t);
        kept = l > kept ? l : kept;
    }
    b += seqs * kept * (double)kv_model_act_bytes_token(m) * L;
    if (pl->mode == KV_MODE_THROUGHPUT) b += (double)kv_model_bytes_total(m);
    return b;
}

static double gpu_resident(const kv_model *m, const kv_plan *pl) {
    double r = 0;
    if (pl->mode == KV_MODE_LATENCY || pl->policy == KV_POL_GPU) r += (double)kv_model_bytes_total(m);
    else r += 2.0 * m->vocab * m->hidden * kv_dtype_bytes(m->dtype); /* embeddings and lm_head stay */
    if (pl->policy == KV_POL_GPU)
        r += (double)pl->batch * pl->nb * ((double)pl->prompt + pl->gen) * (double)kv_model_kv_bytes_token_layer(m) *
             m->n_layers;
    return r;
}

kv_status sim_run(sim_ctx *sx, const kv_model *m, const hw_profile *p, const kv_plan *pl, sim_result *out) {
    kv_status st = kv_plan_validate(pl, m);
    if (st) return st;
    memset(out, 0, sizeof *out);
    out->cpu_mem = cpu_bytes(m, pl);
    if (out->cpu_mem > p->cpu.mem_bytes.value)
        return kv_errorf(KV_ENOFIT, "does not fit in CPU memory: KV cache%s need %.1f GiB of %.1f GiB",
                         pl->mode == KV_MODE_THROUGHPUT ? ", activations and weights" : " and activations",
                         out->cpu_mem / 1073741824.0, p->cpu.mem_bytes.value / 1073741824.0);
    sim_des *d = sx->des;
    sim_des_reset(d);
    int paper = pl->paper_model;
    sim_link h2d = {pl->pageable ? p->link.h2d.pageable.value : p->link.h2d.bandwidth.value, paper ? 1 : p->link.h2d.duplex.value};
    sim_link d2h = {pl->pageable ? p->link.d2h.pageable.value : p->link.d2h.bandwidth.value, paper ? 1 : p->link.d2h.duplex.value};
    sim_des_links(d, h2d, d2h);
    sim_des_memory(d, paper ? 1e300 : p->gpu.mem_bytes.value, paper ? 0 : gpu_resident(m, pl));
    if ((st = expand(sx, m, p, pl))) return st;
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
    for (int t = 0; t < T; t++) sx->step_end[t] = 0;
    int32_t n = sim_des_count(d);
    for (int32_t i = 0; i < n; i++) {
        sim_task *x = sim_des_get(d, i);
        double e = sim_to_s(x->end), dur = sim_to_s(x->end - x->start);
        if (e > sx->step_end[x->step]) sx->step_end[x->step] = e;
        out->op_s[x->op] += dur;
    }
    for (int t = 0; t < T; t++) sx->step_s[t] = sx->step_end[t] - (t ? sx->step_end[t - 1] : 0);
    out->step_s = sx->step_s;
    out->nsteps = T;
    out->decode_s = sim_to_s(ds.makespan);
    out->throughput = out->decode_s > 0 ? (double)pl->batch * pl->nb * T / out->decode_s : 0;
    for (int r = 0; r < KV_RES_COUNT; r++) out->util[r] = out->decode_s > 0 ? sim_to_s(ds.busy[r]) / out->decode_s : 0;
    out->gpu_idle_s = out->decode_s - sim_to_s(ds.busy[KV_RES_GPU]);
    /* Critical path: from the task that ended last, follow the task whose completion let each start. */
    for (int32_t i = ds.last; i >= 0;) {
        sim_task *x = sim_des_get(d, i);
        out->crit_s[x->op] += sim_to_s(x->end - x->start);
        sim_time prev_end = x->crit >= 0 ? sim_des_get(d, x->crit)->end : 0;
        out->crit_wait_s += sim_to_s(x->start - prev_end);
        i = x->crit;
    }
    out->mem_peak = ds.mem_peak;
    out->events = ds.events;
    out->tasks = n;
    out->split0 = kv_plan_split_at(pl, 0);
    out->split_last = kv_plan_split_at(pl, T - 1);
    if (pl->policy == KV_POL_GPU || pl->policy == KV_POL_CPU_ATTN) out->split0 = out->split_last = 0;
    return KV_OK;
}
