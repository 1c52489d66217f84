/* eng_exec: the executor. Streams: compute, H2D copies, D2H copies. Buffers of layer u live in
 * slot u % D (D = prefetch depth): a transfer into a slot waits for the op that last used it. */
#include "exec.h"
#include <gsl/gsl_rng.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const eng_backend_type *t;
    eng_backend *b;
    const kv_model *m;
    const kv_plan *pl;
    int L, B, nb, S, D, h, qd, kvd, ffn, gated, thr, gpu_pol, steps;
    size_t wq, wkv, wo, wup, wdown, wlayer; /* weight sizes in elements */
    /* host */
    eng_half **kvh, **acth; /* [L*nb] each [S][B][2kvd] / [S][B][h] */
    eng_half *wh;           /* one layer's weights, host (throughput mode copies it per layer) */
    /* device */
    eng_half **wd;          /* latency: [L] resident; throughput: [D] slots */
    eng_half **kvslot, **actslot; /* [D] slots, or for the gpu policy kvslot is [L*nb] resident */
    eng_half **x, **xn, **q, **ao, **u, **y; /* per micro-batch; xn: the normalised hidden state */
    int nev, next_ev;
    struct task *tasks; /* one per op issued: its events and its span's keys */
    int ntasks, cap_tasks;
    int nslot;          /* K/V and activation buffer slots: D layers of nb micro-batches */
    double dev_bytes, host_bytes;
} ex_t;

void eng_plan_bytes(const kv_model *m, const kv_plan *pl, double *dev, double *host) {
    double L = kv_plan_layers(pl, m), B = pl->batch, nb = pl->nb, S = (double)pl->prompt + pl->gen, h = m->hidden;
    double kvd = kv_model_kv_dim(m), qd = (double)m->n_heads * m->head_dim, f = m->ffn, D = pl->prefetch;
    double wl = 2.0 * (h * qd + h * 2 * kvd + qd * h + h * f * (m->gated_mlp ? 2 : 1) + f * h);
    int thr = pl->mode == KV_MODE_THROUGHPUT, gpu = pl->policy == KV_POL_GPU;
    double kvbuf = S * B * 2 * kvd * 2, actbuf = S * B * h * 2;
    *dev = (thr && !gpu ? D : L) * wl + (gpu ? L * nb * kvbuf : D * nb * (kvbuf + actbuf)) +
           nb * B * 2.0 * (2 * h + 2 * qd + f * (m->gated_mlp ? 3 : 1));
    *host = L * nb * (kvbuf + actbuf) + wl;
}

static kv_status fill_random(eng_half *p, size_t n, double scale, gsl_rng *rng) {
    for (size_t i = 0; i < n; i++) p[i] = eng_f2h((float)((2 * gsl_rng_uniform(rng) - 1) * scale));
    return KV_OK;
}

/* ---- events and spans ----------------------------------------------------------------- */

typedef struct task {
    int ev0, ev1;
    kv_op op;
    kv_resource res;
    int step, layer, mb;
    double bytes, flops;
} task_t;

static kv_status begin(ex_t *e, int stream, kv_op op, int t, int j, int k, double bytes, double flops, int *id) {
    if (e->next_ev + 2 > e->nev) return kv_errorf(KV_EINVAL, "engine: out of events (%d)", e->nev);
    if (e->ntasks == e->cap_tasks) {
        int nc = e->cap_tasks ? 2 * e->cap_tasks : 1024;
        task_t *q = realloc(e->tasks, (size_t)nc * sizeof *q);
        if (!q) return kv_errorf(KV_ENOMEM, "engine: out of memory");
        e->tasks = q, e->cap_tasks = nc;
    }
    task_t *x = &e->tasks[e->ntasks];
    x->ev0 = e->next_ev++, x->ev1 = e->next_ev++;
    x->op = op;
    x->res = stream == ENG_S_H2D ? KV_RES_H2D : stream == ENG_S_D2H ? KV_RES_D2H : KV_RES_GPU;
    x->step = t, x->layer = j, x->mb = k, x->bytes = bytes, x->flops = flops;
    *id = e->ntasks++;
    return e->t->record(e->b, stream, x->ev0);
}
static kv_status end(ex_t *e, int stream, int id) { return e->t->record(e->b, stream, e->tasks[id].ev1); }
static kv_status wait_task(ex_t *e, int stream, int id) { return id >= 0 ? e->t->wait(e->b, stream, e->tasks[id].ev1) : KV_OK; }

/* ---- set-up ----------------------------------------------------------------------------- */

#define TRY(x)                          \
    do {                                \
        if ((st = (x)) != KV_OK) goto out; \
    } while (0)

static kv_status dalloc(ex_t *e, eng_half **p, size_t elems) {
    e->dev_bytes += (double)elems * 2;
    return e->t->dev_alloc(e->b, (void **)p, elems * 2);
}
static kv_status halloc(ex_t *e, eng_half **p, size_t elems) {
    e->host_bytes += (double)elems * 2;
    return e->t->host_alloc(e->b, (void **)p, elems * 2, !e->pl->pageable);
}

static void release(ex_t *e) {
    if (!e->b) return;
    e->t->sync(e->b);
    int nkv = e->gpu_pol ? e->L * e->nb : e->nslot, nw = e->thr && !e->gpu_pol ? e->D : e->L;
    for (int i = 0; e->kvh && i < e->L * e->nb; i++) e->t->host_free(e->b, e->kvh[i], !e->pl->pageable);
    for (int i = 0; e->acth && i < e->L * e->nb; i++) e->t->host_free(e->b, e->acth[i], !e->pl->pageable);
    if (e->wh) e->t->host_free(e->b, e->wh, !e->pl->pageable);
    for (int i = 0; e->wd && i < nw; i++) e->t->dev_free(e->b, e->wd[i]);
    for (int i = 0; e->kvslot && i < nkv; i++) e->t->dev_free(e->b, e->kvslot[i]);
    for (int i = 0; e->actslot && i < e->nslot; i++) e->t->dev_free(e->b, e->actslot[i]);
    for (int i = 0; i < e->nb; i++) {
        if (e->x) e->t->dev_free(e->b, e->x[i]);
        if (e->xn) e->t->dev_free(e->b, e->xn[i]);
        if (e->q) e->t->dev_free(e->b, e->q[i]);
        if (e->ao) e->t->dev_free(e->b, e->ao[i]);
        if (e->u) e->t->dev_free(e->b, e->u[i]);
        if (e->y) e->t->dev_free(e->b, e->y[i]);
    }
    free(e->kvh), free(e->acth), free(e->wd), free(e->kvslot), free(e->actslot);
    free(e->x), free(e->xn), free(e->q), free(e->ao), free(e->u), free(e->y);
    free(e->tasks);
    e->t->close(e->b);
    e->b = NULL;
}

static eng_half *wpart(eng_half *w, const ex_t *e, int part) {
    size_t off[5] = {0, e->wq, e->wq + e->wkv, e->wq + e->wkv + e->wo, e->wq + e->wkv + e->wo + e->wup};
    return w + off[part];
}

/* ---- one decode step of one layer and micro-batch ------------------------------------------ */

typedef struct {
    int *ffn_of;  /* per slot index v: task id of its ffn, -1 */
    int *d2h_of;  /* per (layer, mb): task id of the last write-back, -1 */
    int *d2h_slot; /* per slot index v (ring): task id of v's write-back, which reads the slot's row s */
    int *w_of;    /* per layer index g: task id of its weight load */
} deps_t;

static kv_status layer_step(ex_t *e, deps_t *dp, int t, int j, int k, long v, long g) {
    kv_status st = KV_OK;
    const kv_plan *pl = e->pl;
    int B = e->B, s = pl->prompt + t, l = e->gpu_pol ? 0 : kv_plan_split_at(pl, t), slot = (int)(v % e->nslot);
    size_t krow = (size_t)B * 2 * e->kvd, arow = (size_t)B * e->h;
    int cache = j * e->nb + k;
    eng_half *kvbuf = e->gpu_pol ? e->kvslot[cache] : e->kvslot[slot], *actbuf = e->gpu_pol ? NULL : e->actslot[slot];
    eng_half *w = e->thr && !e->gpu_pol ? e->wd[g % e->D] : e->wd[j];
    int id, act_id = -1, kv_id = -1, qkv_id, rec_id = -1;
    long prev = v - e->nslot; /* the slot's previous user */
    /* weights (throughput mode): once per layer, before its first micro-batch */
    if (e->thr && !e->gpu_pol && k == 0) {
        long pg = g - e->D;
        if (pg >= 0) TRY(wait_task(e, ENG_S_H2D, dp->ffn_of[(pg * e->nb + e->nb - 1) % (e->nslot + e->nb)]));
        TRY(begin(e, ENG_S_H2D, KV_OP_W_H2D, t, j, k, (double)e->wlayer * 2, 0, &id));
        TRY(e->t->copy(e->b, ENG_S_H2D, w, e->wh, e->wlayer * 2, 0));
        TRY(end(e, ENG_S_H2D, id));
        dp->w_of[g % e->D] = id;
    }
    int ring = e->nslot + e->nb;
    int prev_ffn = prev >= 0 ? dp->ffn_of[prev % ring] : -1, prev_d2h = prev >= 0 ? dp->d2h_slot[prev % ring] : -1;
    if (!e->gpu_pol && l > 0) {
        TRY(wait_task(e, ENG_S_H2D, prev_ffn));
        TRY(wait_task(e, ENG_S_H2D, dp->d2h_of[cache]));  /* this cache's rows written last step */
        TRY(wait_task(e, ENG_S_H2D, prev_d2h));           /* the slot's previous write-back still reading it */
        TRY(begin(e, ENG_S_H2D, KV_OP_ACT_H2D, t, j, k, (double)l * arow * 2, 0, &act_id));
        TRY(e->t->copy(e->b, ENG_S_H2D, actbuf, e->acth[cache], (size_t)l * arow * 2, 0));
        TRY(end(e, ENG_S_H2D, act_id));
    }
    if (!e->gpu_pol && s - l > 0) {
        TRY(wait_task(e, ENG_S_H2D, prev_ffn));
        TRY(wait_task(e, ENG_S_H2D, dp->d2h_of[cache]));
        TRY(wait_task(e, ENG_S_H2D, prev_d2h));
        TRY(begin(e, ENG_S_H2D, KV_OP_KV_H2D, t, j, k, (double)(s - l) * krow * 2, 0, &kv_id));
        TRY(e->t->copy(e->b, ENG_S_H2D, kvbuf + (size_t)l * krow, e->kvh[cache] + (size_t)l * krow, (size_t)(s - l) * krow * 2, 0));
        TRY(end(e, ENG_S_H2D, kv_id));
    }
    /* compute: q and the new token's K/V (into row s of the K/V buffer) */
    if (e->thr && !e->gpu_pol) TRY(wait_task(e, ENG_S_COMPUTE, dp->w_of[g % e->D]));
    /* row s of this slot is about to be written: the slot's previous write-back must have read it */
    TRY(wait_task(e, ENG_S_COMPUTE, prev_d2h));
    double fl_qkv = 2.0 * B * e->h * (e->qd + 2.0 * e->kvd);
    TRY(begin(e, ENG_S_COMPUTE, KV_OP_QKV, t, j, k, 0, fl_qkv, &qkv_id));
    /* the normalised input is the activation K/V are computed from; kept rows go to row s of the act slot */
    eng_half *xn = pl->keep_act && !e->gpu_pol ? actbuf + (size_t)s * arow : e->xn[k];
    TRY(e->t->rmsnorm(e->b, ENG_S_COMPUTE, e->x[k], xn, B, e->h));
    TRY(e->t->gemm(e->b, ENG_S_COMPUTE, B, e->qd, e->h, xn, wpart(w, e, 0), e->q[k], 0.f));
    TRY(e->t->gemm(e->b, ENG_S_COMPUTE, B, 2 * e->kvd, e->h, xn, wpart(w, e, 1), kvbuf + (size_t)s * krow, 0.f));
    TRY(end(e, ENG_S_COMPUTE, qkv_id));
    if (act_id >= 0) {
        TRY(wait_task(e, ENG_S_COMPUTE, act_id));
        TRY(begin(e, ENG_S_COMPUTE, KV_OP_RECOMPUTE, t, j, k, 0, 2.0 * B * l * e->h * 2.0 * e->kvd, &rec_id));
        TRY(e->t->gemm(e->b, ENG_S_COMPUTE, l * B, 2 * e->kvd, e->h, actbuf, wpart(w, e, 1), kvbuf, 0.f));
        TRY(end(e, ENG_S_COMPUTE, rec_id));
    }
    TRY(wait_task(e, ENG_S_COMPUTE, kv_id));
    TRY(begin(e, ENG_S_COMPUTE, KV_OP_ATTN, t, j, k, (double)(s + 1) * krow * 2, 4.0 * B * (s + 1) * e->qd, &id));
    TRY(e->t->attention(e->b, ENG_S_COMPUTE, e->q[k], kvbuf, e->ao[k], B, s + 1, e->m->n_heads, e->m->n_kv_heads, e->m->head_dim));
    TRY(end(e, ENG_S_COMPUTE, id));
    /* output projection and MLP, residuals through beta = 1 */
    double fl_ffn = 2.0 * B * (e->qd * e->h + e->h * e->ffn * (e->gated ? 3.0 : 2.0));
    TRY(begin(e, ENG_S_COMPUTE, KV_OP_FFN, t, j, k, 0, fl_ffn, &id));
    TRY(e->t->gemm(e->b, ENG_S_COMPUTE, B, e->h, e->qd, e->ao[k], wpart(w, e, 2), e->x[k], 1.f));
    TRY(e->t->rmsnorm(e->b, ENG_S_COMPUTE, e->x[k], e->xn[k], B, e->h));
    TRY(e->t->gemm(e->b, ENG_S_COMPUTE, B, e->ffn * (e->gated ? 2 : 1), e->h, e->xn[k], wpart(w, e, 3), e->u[k], 0.f));
    TRY(e->t->activate(e->b, ENG_S_COMPUTE, e->u[k], e->y[k], B, e->ffn, e->gated ? ENG_ACT_SILU_MUL : ENG_ACT_RELU));
    TRY(e->t->gemm(e->b, ENG_S_COMPUTE, B, e->h, e->ffn, e->y[k], wpart(w, e, 4), e->x[k], 1.f));
    TRY(end(e, ENG_S_COMPUTE, id));
    dp->ffn_of[v % ring] = id;
    /* write-back of the new token's K/V (and activation) into the host cache */
    if (!e->gpu_pol) {
        TRY(wait_task(e, ENG_S_D2H, qkv_id));
        double bytes = (double)krow * 2 + (pl->keep_act ? (double)arow * 2 : 0);
        TRY(begin(e, ENG_S_D2H, KV_OP_KV_D2H, t, j, k, bytes, 0, &id));
        TRY(e->t->copy(e->b, ENG_S_D2H, e->kvh[cache] + (size_t)s * krow, kvbuf + (size_t)s * krow, krow * 2, 1));
        if (pl->keep_act) TRY(e->t->copy(e->b, ENG_S_D2H, e->acth[cache] + (size_t)s * arow, actbuf + (size_t)s * arow, arow * 2, 1));
        TRY(end(e, ENG_S_D2H, id));
        dp->d2h_of[cache] = id;
        dp->d2h_slot[v % ring] = id;
    }
out:
    return st;
}

kv_status eng_run(const eng_backend_type *bt, int device, const kv_model *m, const kv_plan *pl, uint64_t seed, eng_result *r) {
    memset(r, 0, sizeof *r);
    if (!bt) return kv_errorf(KV_EDEVICE, "this build has no CUDA backend");
    kv_status st = kv_plan_validate(pl, m);
    if (st) return st;
    if (pl->policy == KV_POL_CPU_ATTN) return kv_errorf(KV_EINVAL, "the engine runs gpu, offload, kvpr and recompute (not cpu-attn)");
    if (pl->paper_model) return kv_errorf(KV_EINVAL, "--paper-model is a simulator switch, not something a GPU runs");
    if (m->head_dim > 256) return kv_errorf(KV_EINVAL, "the attention kernel handles head_dim <= 256, got %d", m->head_dim);
    ex_t e;
    memset(&e, 0, sizeof e);
    e.t = bt, e.m = m, e.pl = pl;
    e.L = kv_plan_layers(pl, m), e.B = pl->batch, e.nb = pl->nb, e.S = pl->prompt + pl->gen, e.D = pl->prefetch;
    e.h = m->hidden, e.qd = m->n_heads * m->head_dim, e.kvd = kv_model_kv_dim(m), e.ffn = m->ffn, e.gated = m->gated_mlp;
    e.thr = pl->mode == KV_MODE_THROUGHPUT, e.gpu_pol = pl->policy == KV_POL_GPU, e.steps = kv_plan_steps(pl);
    e.wq = (size_t)e.h * e.qd, e.wkv = (size_t)e.h * 2 * e.kvd, e.wo = (size_t)e.qd * e.h;
    e.wup = (size_t)e.h * e.ffn * (e.gated ? 2 : 1), e.wdown = (size_t)e.ffn * e.h;
    e.wlayer = e.wq + e.wkv + e.wo + e.wup + e.wdown;
    e.nslot = e.D * e.nb;
    long nslots = (long)e.steps * e.L * e.nb;
    long events = 1 + 2 * (nslots * 7 + (long)e.steps * e.L); /* at most 7 ops per slot, 1 weight load per layer */
    if (events > 50000000L) return kv_errorf(KV_EINVAL, "engine: %ld ops is too many for one run (use --layers or fewer steps)", events / 2);
    e.nev = (int)events;
    double need_dev, need_host;
    eng_plan_bytes(m, pl, &need_dev, &need_host);
    if ((st = bt->open(&e.b, device, e.nev))) return st;
    double fr, tot;
    if ((st = bt->info(e.b, r->device, sizeof r->device, &fr, &tot))) goto out;
    if (need_dev > fr) {
        st = kv_errorf(KV_ENOFIT, "the plan needs %.2f GiB of device memory, %.2f GiB are free on %s", need_dev / 1073741824.0,
                       fr / 1073741824.0, r->device);
        goto out;
    }
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_taus2);
    if (!rng) {
        st = kv_errorf(KV_ENOMEM, "out of memory");
        goto out;
    }
    gsl_rng_set(rng, (unsigned long)seed);
    int ncache = e.L * e.nb, nw = e.thr && !e.gpu_pol ? e.D : e.L, nkv = e.gpu_pol ? ncache : e.nslot;
    size_t krow = (size_t)e.B * 2 * e.kvd, arow = (size_t)e.B * e.h;
    e.kvh = calloc((size_t)ncache, sizeof *e.kvh), e.acth = calloc((size_t)ncache, sizeof *e.acth);
    e.wd = calloc((size_t)nw, sizeof *e.wd), e.kvslot = calloc((size_t)nkv, sizeof *e.kvslot);
    e.actslot = calloc((size_t)e.nslot, sizeof *e.actslot);
    e.xn = calloc((size_t)e.nb, sizeof(eng_half *));
    e.x = calloc((size_t)e.nb, sizeof(eng_half *)), e.q = calloc((size_t)e.nb, sizeof(eng_half *));
    e.ao = calloc((size_t)e.nb, sizeof(eng_half *)), e.u = calloc((size_t)e.nb, sizeof(eng_half *));
    e.y = calloc((size_t)e.nb, sizeof(eng_half *));
    if (!e.kvh || !e.acth || !e.wd || !e.kvslot || !e.actslot || !e.x || !e.xn || !e.q || !e.ao || !e.u || !e.y) {
        st = kv_errorf(KV_ENOMEM, "out of memory");
        goto rng_out;
    }
    /* weights: one random layer (uniform, variance 1/fan-in), copied to every layer's buffer */
    if ((st = halloc(&e, &e.wh, e.wlayer))) goto rng_out;
    fill_random(wpart(e.wh, &e, 0), e.wq, sqrt(3.0 / e.h), rng);
    fill_random(wpart(e.wh, &e, 1), e.wkv, sqrt(3.0 / e.h), rng);
    fill_random(wpart(e.wh, &e, 2), e.wo, sqrt(3.0 / e.qd), rng);
    fill_random(wpart(e.wh, &e, 3), e.wup, sqrt(3.0 / e.h), rng);
    fill_random(wpart(e.wh, &e, 4), e.wdown, sqrt(3.0 / e.ffn), rng);
    for (int i = 0; i < nw && !st; i++)
        if (!(st = dalloc(&e, &e.wd[i], e.wlayer))) st = bt->copy(e.b, ENG_S_H2D, e.wd[i], e.wh, e.wlayer * 2, 0);
    if (!st) st = bt->sync(e.b); /* the prefill below computes on the compute stream with these weights */
    for (int i = 0; i < nkv && !st; i++) st = dalloc(&e, &e.kvslot[i], (size_t)e.S * krow);
    for (int i = 0; i < e.nslot && !st; i++) st = dalloc(&e, &e.actslot[i], (size_t)e.S * arow);
    for (int i = 0; i < e.nb && !st; i++)
        if (!(st = dalloc(&e, &e.x[i], arow)) && !(st = dalloc(&e, &e.xn[i], arow)) && !(st = dalloc(&e, &e.q[i], (size_t)e.B * e.qd)) &&
            !(st = dalloc(&e, &e.ao[i], (size_t)e.B * e.qd)) && !(st = dalloc(&e, &e.u[i], (size_t)e.B * e.ffn * (e.gated ? 2 : 1))))
            st = dalloc(&e, &e.y[i], (size_t)e.B * e.ffn);
    /* prefill: random stored activations, K/V = X W_KV with this layer's weights */
    for (int c = 0; c < ncache && !st; c++) {
        if ((st = halloc(&e, &e.kvh[c], (size_t)e.S * krow)) || (st = halloc(&e, &e.acth[c], (size_t)e.S * arow))) break;
        memset(e.kvh[c], 0, (size_t)e.S * krow * 2);
        memset(e.acth[c], 0, (size_t)e.S * arow * 2);
        fill_random(e.acth[c], (size_t)pl->prompt * arow, sqrt(3.0), rng);
        eng_half *wk = e.thr && !e.gpu_pol ? e.wd[0] : e.wd[c / e.nb];
        eng_half *dst = e.gpu_pol ? e.kvslot[c] : e.kvslot[0];
        if ((st = bt->copy(e.b, ENG_S_COMPUTE, e.actslot[0], e.acth[c], (size_t)pl->prompt * arow * 2, 0)) ||
            (st = bt->gemm(e.b, ENG_S_COMPUTE, pl->prompt * e.B, 2 * e.kvd, e.h, e.actslot[0], wpart(wk, &e, 1), dst, 0.f)) ||
            (st = bt->copy(e.b, ENG_S_COMPUTE, e.kvh[c], dst, (size_t)pl->prompt * krow * 2, 1)) || (st = bt->sync(e.b)))
            break;
    }
    for (int k = 0; k < e.nb && !st; k++) {
        eng_half *x0 = malloc(arow * 2);
        if (!x0) {
            st = kv_errorf(KV_ENOMEM, "out of memory");
            break;
        }
        fill_random(x0, arow, sqrt(3.0), rng);
        if (!(st = bt->copy(e.b, ENG_S_COMPUTE, e.x[k], x0, arow * 2, 0))) st = bt->sync(e.b);
        free(x0);
    }
rng_out:
    gsl_rng_free(rng);
    if (st) goto out;
    r->dev_bytes = e.dev_bytes, r->host_bytes = e.host_bytes;

    /* decode */
    deps_t dp;
    int ring = e.nslot + e.nb;
    dp.ffn_of = malloc(sizeof(int) * (size_t)ring);
    dp.d2h_of = malloc(sizeof(int) * (size_t)ncache);
    dp.w_of = malloc(sizeof(int) * (size_t)e.D);
    dp.d2h_slot = malloc(sizeof(int) * (size_t)ring);
    if (!dp.ffn_of || !dp.d2h_of || !dp.w_of || !dp.d2h_slot) st = kv_errorf(KV_ENOMEM, "out of memory");
    for (int i = 0; !st && i < ring; i++) dp.ffn_of[i] = dp.d2h_slot[i] = -1;
    for (int i = 0; !st && i < ncache; i++) dp.d2h_of[i] = -1;
    for (int i = 0; !st && i < e.D; i++) dp.w_of[i] = -1;
    e.next_ev = 1;
    if (!st) st = bt->record(e.b, ENG_S_COMPUTE, 0);
    for (int t = 0; t < e.steps && !st; t++)
        for (int j = 0; j < e.L && !st; j++)
            for (int k = 0; k < e.nb && !st; k++) {
                long g = (long)t * e.L + j, v = g * e.nb + k;
                st = layer_step(&e, &dp, t, j, k, v, g);
            }
    free(dp.ffn_of), free(dp.d2h_of), free(dp.w_of), free(dp.d2h_slot);
    if (!st) st = bt->sync(e.b);
    if (st) goto out;
    /* timeline */
    int ntasks = e.ntasks;
    task_t *tasks = e.tasks;
    r->spans = malloc(sizeof(kv_span) * (size_t)(ntasks ? ntasks : 1));
    if (!r->spans) {
        st = kv_errorf(KV_ENOMEM, "out of memory");
        goto out;
    }
    double t0 = 1e300, t1 = -1e300;
    for (int i = 0; i < ntasks && !st; i++) {
        double a, b;
        if ((st = bt->elapsed(e.b, tasks[i].ev0, &a)) || (st = bt->elapsed(e.b, tasks[i].ev1, &b))) break;
        if (b < a) b = a;
        r->spans[i] = (kv_span){tasks[i].step, tasks[i].layer, tasks[i].mb, kv_op_name(tasks[i].op),
                                kv_res_name(tasks[i].res), (int64_t)llround(a * 1e9), (int64_t)llround(b * 1e9),
                                tasks[i].bytes, tasks[i].flops};
        t0 = fmin(t0, a), t1 = fmax(t1, b);
    }
    if (st) goto out;
    /* spans start at the first op */
    for (int i = 0; i < ntasks; i++) r->spans[i].start_ps -= (int64_t)llround(t0 * 1e9), r->spans[i].end_ps -= (int64_t)llround(t0 * 1e9);
    r->nspans = ntasks;
    r->decode_s = (t1 - t0) / 1e3;
    /* outputs for the numerical checks */
    r->nhidden = e.nb * e.B * e.h;
    r->hidden = malloc(sizeof(float) * (size_t)r->nhidden);
    r->attn = malloc(sizeof(float) * (size_t)e.B * e.qd);
    eng_half *tmp = malloc(arow * 2 > (size_t)e.B * e.qd * 2 ? arow * 2 : (size_t)e.B * e.qd * 2);
    if (!r->hidden || !r->attn || !tmp) st = kv_errorf(KV_ENOMEM, "out of memory");
    for (int k = 0; k < e.nb && !st; k++) {
        if ((st = bt->copy(e.b, ENG_S_COMPUTE, tmp, e.x[k], arow * 2, 1)) || (st = bt->sync(e.b))) break;
        for (size_t i = 0; i < arow; i++) r->hidden[(size_t)k * arow + i] = eng_h2f(tmp[i]);
    }
    if (!st && !(st = bt->copy(e.b, ENG_S_COMPUTE, tmp, e.ao[0], (size_t)e.B * e.qd * 2, 1)) && !(st = bt->sync(e.b)))
        for (size_t i = 0; i < (size_t)e.B * e.qd; i++) r->attn[i] = eng_h2f(tmp[i]);
    free(tmp);
out:
    release(&e);
    if (st) eng_result_free(r);
    return st;
}

void eng_result_free(eng_result *r) {
    free(r->spans), free(r->hidden), free(r->attn);
    r->spans = NULL, r->hidden = r->attn = NULL;
    r->nspans = 0;
}

kv_status eng_write_db(kv_db *db, const eng_result *r, const kv_model *m, const char *hw_label, const kv_plan *pl,
                       const char *run_key) {
    char wl[256], *plan = kv_plan_json(pl);
    snprintf(wl, sizeof wl, "{\"batch\":%d,\"nb\":%d,\"prompt\":%d,\"gen\":%d,\"mode\":\"%s\",\"device\":\"%.120s\"}", pl->batch,
             pl->nb, pl->prompt, pl->gen, kv_mode_name(pl->mode), r->device);
    for (char *c = wl; *c; c++)
        if (*c == '\\') *c = '/';
    db_run_info in = {.kind = "engine", .model = m->name, .hardware = hw_label, .workload = wl, .plan = plan ? plan : "{}",
                      .run_key = run_key};
    int64_t id;
    kv_status st = db_run_begin(db, &in, &id);
    free(plan);
    if (st) return st;
    for (int i = 0; i < r->nspans && !st; i++) st = db_run_span(db, id, &r->spans[i]);
    if (!st) st = db_run_metric(db, id, "decode_s", r->decode_s, "s");
    if (!st) {
        int T = kv_plan_steps(pl);
        double *end = calloc((size_t)T, sizeof *end);
        for (int i = 0; end && i < r->nspans; i++)
            end[r->spans[i].step] = fmax(end[r->spans[i].step], (double)r->spans[i].end_ps * 1e-12);
        char nm[64];
        for (int t = 0; end && t < T && !st; t++) {
            snprintf(nm, sizeof nm, "step_%d_s", t);
            st = db_run_metric(db, id, nm, end[t] - (t ? end[t - 1] : 0), "s");
        }
        free(end);
    }
    if (st) {
        db_run_abort(db);
        return st;
    }
    return db_run_commit(db);
}
