/* eng_exec: the executor. It asks the graph builder (sched/graph.h) for the plan's ops, the same
 * ops the simulator times, and runs each as it comes: wait for its dependencies' end events on its
 * queue's stream, record a start event, dispatch on the op kind to copies and kernels, record an
 * end event. It knows ops, not policies: which ops exist, on which queue, with which rows,
 * sequences and buffer slots is the builder's decision.
 *
 * Buffers follow the layout: the K/V of the sequences whose cache is on the GPU stay in a resident
 * buffer per (layer, micro-batch); the others live in pinned host memory and stream through D x nb
 * slots. Every layer shares one random weight set, so a weight slot holds a whole layer: a weight
 * load moves exactly the streamed tensors' bytes, and the values it overwrites are equal.
 * Row layouts are position-major: [position][sequence][...], sequences of the GPU part first.
 *
 * A session sets up the host side once (weights, the CPU part of the cache, stored activations,
 * hidden states, pinned and filled) for plans that differ only in policy and split; each plan run
 * on it allocates its device buffers, warms up with one untimed decode step, and runs its graph
 * (the prompt pass, unless no_prefill, then the decode steps) with every op timed by its own
 * event pair. */
#include "exec.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../kernels/ref.h"
#include "../sched/graph.h"
#include "fill.h"
#include "host_quant.h"
#include "sysmem.h"

static const double GiB = 1073741824.0;

/* the stream each queue runs on */
static const int stream_of[KV_Q_COUNT] = {ENG_S_H2D, ENG_S_D2H, ENG_S_COMPUTE, ENG_S_CPU, ENG_S_WEIGHT, ENG_S_HIDDEN};

typedef struct task {
    int ev0, ev1;
    kv_op op;
    kv_queue q;
    int step, layer, mb;
    double bytes, flops;
} task_t;

/* cpu-attn: what the CPU queue's host function needs */
typedef struct {
    const eng_half *q, *kv;
    eng_half *out;
    int B, ctx, nh, nkv, d;
    const uint8_t *kvq; /* --compress: the packed cache, dequantised into kv (the fp16 host cache) first */
} cpu_attn_arg;

struct eng_session {
    const eng_backend_type *t;
    eng_backend *b;
    kv_model m;
    kv_plan cell;       /* the first plan: the shapes every plan of the session shares */
    kv_layout ly;       /* its layout, with room for every plan's stored activations */
    eng_devinfo dev;
    int nev, vcap, ncache, bg, bc, P, any_cpu_attn, gpu_from_host;
    size_t wel;         /* elements of one layer's weights (with norms and biases) */
    eng_half *wh;       /* one layer's weights */
    eng_half **kvh, **acth, **xh, **qh, **oh; /* the CPU part of the cache, stored activations, hidden states, cpu-attn buffers */
    eng_half **kvg;     /* decode only: the prompt's K/V of the GPU part, [P][bg] per cache, to start each run from */
    eng_half *x0;       /* every micro-batch's first hidden state: the prompt's [nb][P*B][h] or the first step's [nb][B][h] */
    /* --compress: the packed CPU cache and stored activations (kvh and acth stay as the fp16 form:
     * the synthetic cache is made there, and CPU attention dequantises into kvh), and the packed
     * layer of weights */
    uint8_t **kvq, **actq, *whq;
    size_t whq_bytes;
    double host_bytes, setup_s;
};

typedef struct {
    eng_session *s;
    const eng_backend_type *t;
    eng_backend *b;
    const kv_model *m;
    const kv_plan *pl;
    kv_layout ly;
    int L, B, nb, S, D, P, h, qd, kvd, ffn, gated, bg, bc, nslot, hidden_cpu, count_only, vcap;
    size_t wq, wkv, wo, wup, wdown, wlayer, whead, wel; /* elements */
    eng_half *wh;                     /* host: the session's layer weights */
    eng_half **wd;                    /* device: [L] resident layers, or [D] slots when weights stream */
    int nwd;
    eng_half *whd;                    /* device: LM head [h][vocab] */
    eng_half **kvres;                 /* device [L*nb]: [S][bg][2kvd], the GPU part of the cache */
    eng_half **kvslot, **actslot;     /* device [D*nb]: [S][bc][2kvd], [act_rows][bc][h] */
    eng_half **kvh, **acth, **xh, **qh, **oh; /* host, the session's */
    eng_half **x, **xn, **q, **ao, **u, **y, **kvn, **logit; /* device [nb], decode working buffers */
    /* the prompt pass: hidden states per micro-batch ([nb], or one load buffer when they live on the
     * CPU) and one set of scratch, which the graph lets a cell reuse once the last cell's stores
     * have read it */
    eng_half **pX;
    int npX;
    eng_half *pXN, *pQ, *pO, *pXM, *pU, *pY, *pKV;
    uint8_t **kvh_q, **acth_q, *whq;  /* host, the session's packed forms (--compress) */
    uint8_t **kvqslot, **actqslot, **wqd, **kvnq, *pKVq, *pACTq; /* device: packed slots, weights, new K/V, prompt stores */
    size_t kvs, acts;                 /* packed bytes per token of the CPU part's K/V and activations */
    cpu_attn_arg **ca;                /* one per cpu_attn op issued: it runs later, on the CPU queue */
    int nca, cap_ca;
    task_t *tasks;
    int ntasks, cap_tasks, nev, next_ev;
    double dev_bytes, host_bytes;
} ex_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define TRY(x)                             \
    do {                                   \
        if ((st = (x)) != KV_OK) goto out; \
    } while (0)

/* ---- device buffers of one plan ------------------------------------------------------------ */

/* With count_only set, allocations only add up their sizes: a plan's memory is checked against
 * the device before anything is allocated. */
static kv_status dalloc(ex_t *e, eng_half **p, size_t elems) {
    e->dev_bytes += (double)elems * 2;
    if (e->count_only) return KV_OK;
    return e->t->dev_alloc(e->b, (void **)p, elems * 2 + 2);
}

static kv_status dvec(ex_t *e, eng_half ***v, int n, size_t elems) {
    kv_status st = KV_OK;
    if (!e->count_only && !(*v = calloc((size_t)e->vcap, sizeof **v))) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int i = 0; i < n && !st; i++) st = elems ? dalloc(e, e->count_only ? NULL : &(*v)[i], elems) : KV_OK;
    return st;
}

static void dfree_vec(ex_t *e, eng_half **v) {
    for (int i = 0; v && i < e->vcap; i++)
        if (v[i]) e->t->dev_free(e->b, v[i]);
    free(v);
}

static void release(ex_t *e) {
    if (!e->b) return;
    e->t->sync(e->b);
    dfree_vec(e, e->wd);
    if (e->whd) e->t->dev_free(e->b, e->whd);
    dfree_vec(e, e->kvres), dfree_vec(e, e->kvslot), dfree_vec(e, e->actslot);
    dfree_vec(e, (eng_half **)e->kvqslot), dfree_vec(e, (eng_half **)e->actqslot), dfree_vec(e, (eng_half **)e->wqd);
    dfree_vec(e, (eng_half **)e->kvnq);
    if (e->pKVq) e->t->dev_free(e->b, e->pKVq);
    if (e->pACTq) e->t->dev_free(e->b, e->pACTq);
    eng_half ***w[] = {&e->x, &e->xn, &e->q, &e->ao, &e->u, &e->y, &e->kvn, &e->logit, &e->pX};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) dfree_vec(e, *w[i]);
    eng_half *pf[] = {e->pXN, e->pQ, e->pO, e->pXM, e->pU, e->pY, e->pKV};
    for (size_t i = 0; i < sizeof pf / sizeof pf[0]; i++)
        if (pf[i]) e->t->dev_free(e->b, pf[i]);
    for (int i = 0; i < e->nca; i++) free(e->ca[i]);
    free(e->ca);
    free(e->tasks);
    e->b = NULL;
}

static eng_half *wpart(eng_half *w, const ex_t *e, int part) {
    size_t off[5] = {0, e->wq, e->wq + e->wkv, e->wq + e->wkv + e->wo, e->wq + e->wkv + e->wo + e->wup};
    return w + off[part];
}

/* The shapes of a plan (and its layout) into e. */
static kv_status ex_init(ex_t *e, const kv_model *m, const kv_plan *pl) {
    memset(e, 0, sizeof *e);
    kv_status st = kv_layout_resolve(m, pl, &e->ly);
    if (st) return st;
    e->m = m, e->pl = pl;
    e->L = e->ly.L, e->B = e->ly.B, e->nb = e->ly.nb, e->S = e->ly.S, e->D = e->ly.D, e->P = pl->no_prefill ? 0 : pl->prompt;
    e->h = m->hidden, e->qd = m->n_heads * m->head_dim, e->kvd = kv_model_kv_dim(m), e->ffn = m->ffn, e->gated = m->gated_mlp;
    e->bg = e->ly.b_gpu, e->bc = e->ly.b_cpu, e->nslot = e->D * e->nb, e->hidden_cpu = e->ly.hidden_cpu;
    e->vcap = e->L * e->nb > e->nslot ? e->L * e->nb : e->nslot;
    if (e->L > e->vcap) e->vcap = e->L;
    e->wq = (size_t)e->h * e->qd, e->wkv = (size_t)e->h * 2 * e->kvd, e->wo = (size_t)e->qd * e->h;
    e->wup = (size_t)e->h * e->ffn * (e->gated ? 2 : 1), e->wdown = (size_t)e->ffn * e->h;
    e->wlayer = e->wq + e->wkv + e->wo + e->wup + e->wdown, e->whead = (size_t)e->h * m->vocab;
    /* room for the layer's norms and biases too (the kernels use unit norms and no biases, but a
     * weight load moves every streamed tensor's bytes) */
    e->wel = e->wlayer > (size_t)(e->ly.w_layer / 2) ? e->wlayer : (size_t)(e->ly.w_layer / 2) + 1;
    e->kvs = (size_t)e->ly.kv_st, e->acts = (size_t)e->ly.act_st;
    return KV_OK;
}

/* The packed layer (--compress weights): each matrix quantised along dimension 0, in wpart order;
 * at least the bytes a weight load moves (1-D tensors travel as fp16 in the graph's count). */
static size_t wq_part(const ex_t *e, int part, int *K, int *N) {
    int k[5] = {e->h, e->h, e->qd, e->h, e->ffn}, n[5] = {e->qd, 2 * e->kvd, e->h, e->ffn * (e->gated ? 2 : 1), e->h};
    *K = k[part], *N = n[part];
    return kref_quant_bytes(1, *K, *N);
}
static size_t wq_image_bytes(const ex_t *e) {
    size_t n = 0;
    int K, N;
    for (int i = 0; i < 5; i++) n += wq_part(e, i, &K, &N);
    return n > (size_t)e->ly.w_cpu_st ? n : (size_t)e->ly.w_cpu_st + 2;
}
/* dequantise (or quantise, dir 1) the packed layer's five matrices, or only the first `limit` bytes
 * of the packed image: the whole matrices inside it and the whole 64-row groups of the one it ends
 * in (a weight load streams a prefix of the image, the rest of the slot is resident) */
static kv_status wq_convert(ex_t *e, int stream, uint8_t *q, eng_half *w, int dir, size_t limit) {
    kv_status st = KV_OK;
    size_t off = 0;
    for (int i = 0; i < 5 && !st && off < limit; i++) {
        int K, N;
        size_t n = wq_part(e, i, &K, &N);
        if (limit - off < n) { /* a group-row of the packed matrix is N groups of 36 bytes */
            size_t rows = (limit - off) / ((size_t)N * KREF_QGROUP_BYTES) * KREF_QGROUP;
            if (rows == 0) break;
            K = (int)rows; /* < K: a multiple of 64, so the prefix is the packing of the first rows */
        }
        st = dir ? e->t->quant(e->b, stream, wpart(w, e, i), q + off, 1, K, N) : e->t->dequant(e->b, stream, q + off, wpart(w, e, i), 1, K, N);
        off += n;
    }
    return st;
}

/* The packed bytes the load this dequant_w follows moved (its dependency in the graph), or the
 * whole image when none is found. */
static size_t wq_streamed(const ex_t *e, const kv_gop *o) {
    for (int i = 0; i < o->ndeps; i++) {
        const task_t *d = &e->tasks[o->deps[i]];
        if (d->op == KV_OP_W_H2D || d->op == KV_OP_WKV_H2D) return (size_t)d->bytes;
    }
    return SIZE_MAX;
}

static kv_status alloc_dev(ex_t *e) {
    kv_status st;
    const kv_layout *ly = &e->ly;
    int nc = e->L * e->nb, P = e->P, B = e->B;
    size_t krow = (size_t)2 * e->kvd, f2 = (size_t)e->ffn * (e->gated ? 2 : 1);
    e->nwd = ly->w_cpu > 0 ? e->D : e->L;
    if ((st = dvec(e, &e->wd, e->nwd, e->wel))) return st;
    if ((st = dalloc(e, e->count_only ? NULL : &e->whd, e->whead))) return st;
    if ((st = dvec(e, &e->kvres, e->bg ? nc : 0, (size_t)e->S * e->bg * krow))) return st;
    int streams = ly->streams_kv;
    if ((st = dvec(e, &e->kvslot, streams ? e->nslot : 0, (size_t)e->S * e->bc * krow))) return st;
    if ((st = dvec(e, &e->actslot, streams && ly->act_rows ? e->nslot : 0, (size_t)ly->act_rows * e->bc * e->h))) return st;
    if ((st = dvec(e, &e->x, e->nb, (size_t)B * e->h)) || (st = dvec(e, &e->xn, e->nb, (size_t)B * e->h)) ||
        (st = dvec(e, &e->q, e->nb, (size_t)B * e->qd)) || (st = dvec(e, &e->ao, e->nb, (size_t)B * e->qd)) ||
        (st = dvec(e, &e->u, e->nb, (size_t)B * f2)) || (st = dvec(e, &e->y, e->nb, (size_t)B * e->ffn)) ||
        (st = dvec(e, &e->kvn, e->nb, (size_t)B * krow)) || (st = dvec(e, &e->logit, e->nb, (size_t)B * e->m->vocab)))
        return st;
    if (ly->comp_kv) { /* packed buffers, in halves (dalloc counts elements of 2 bytes) */
        size_t kq = ((size_t)e->S * e->bc * e->kvs + 1) / 2, aq = ((size_t)ly->act_rows * e->bc * e->acts + 1) / 2;
        if ((st = dvec(e, (eng_half ***)&e->kvqslot, streams ? e->nslot : 0, kq)) ||
            (st = dvec(e, (eng_half ***)&e->actqslot, streams && ly->act_rows ? e->nslot : 0, aq)) ||
            (st = dvec(e, (eng_half ***)&e->kvnq, ly->cpu_attn ? e->nb : 0, ((size_t)e->bc * e->kvs + 1) / 2)))
            return st;
        if (P && ((st = dalloc(e, e->count_only ? NULL : (eng_half **)&e->pKVq, ((size_t)P * e->bc * e->kvs + 1) / 2)) ||
                  (st = dalloc(e, e->count_only ? NULL : (eng_half **)&e->pACTq, ((size_t)P * e->bc * e->acts + 1) / 2))))
            return st;
    }
    if (ly->comp_w && (st = dvec(e, (eng_half ***)&e->wqd, e->D, (wq_image_bytes(e) + 1) / 2))) return st;
    e->npX = P ? (e->hidden_cpu ? 1 : e->nb) : 0;
    if ((st = dvec(e, &e->pX, e->npX, (size_t)P * B * e->h))) return st;
    if (P) {
        size_t rows = (size_t)P * B, chunk = rows < KV_PREFILL_CHUNK ? rows : KV_PREFILL_CHUNK;
        eng_half **p[] = {&e->pXN, &e->pQ, &e->pO, &e->pXM, &e->pU, &e->pY, &e->pKV};
        size_t n[] = {rows * e->h, rows * e->qd, rows * e->qd, rows * e->h, chunk * f2, chunk * e->ffn, (size_t)P * e->bc * krow};
        for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
            if (n[i] && (st = dalloc(e, e->count_only ? NULL : p[i], n[i]))) return st;
    }
    return KV_OK;
}

/* Host bytes of the session's side for plan pl's layout (what eng_session_open allocates). */
static double host_bytes_of(const ex_t *e) {
    double L = e->L, nb = e->nb, S = e->S, B = e->B, P = e->P, krow = 2.0 * e->kvd;
    double h = e->wel;
    h += (e->bc && e->pl->policy != KV_POL_GPU) ? L * nb * S * e->bc * krow : 0;
    h += L * nb * e->ly.act_rows * e->bc * (double)e->h;
    h += e->hidden_cpu ? nb * (P + 2) * B * e->h : 0;
    h += e->ly.cpu_attn ? 2 * nb * e->bc * (double)e->qd : 0;
    h += nb * (P ? P : 1) * B * (double)e->h;             /* x0 */
    h += e->P ? 0 : L * nb * (double)e->pl->prompt * e->bg * krow; /* kvg (decode only) */
    double q = 0; /* packed forms, bytes */
    if (e->ly.comp_kv) q += L * nb * S * e->bc * (double)e->kvs + L * nb * e->ly.act_rows * e->bc * (double)e->acts;
    if (e->ly.comp_w) q += (double)wq_image_bytes(e);
    return 2 * h + q;
}

void eng_plan_bytes(const kv_model *m, const kv_plan *pl, double *dev, double *host) {
    ex_t e;
    *dev = *host = 0;
    if (ex_init(&e, m, pl)) return;
    e.count_only = 1;
    alloc_dev(&e);
    *dev = e.dev_bytes, *host = host_bytes_of(&e);
}

/* ---- session: the host side, set up once ---------------------------------------------------- */

/* Plans that can share a set-up: the same shapes and host-side placement (cache, hidden states);
 * policy, split and where weights live may differ (the host holds one layer's weights either way,
 * and the gpu policy keeps the whole cache on the GPU whatever the placement). */
static int same_cell(const kv_plan *a, const kv_plan *b, const kv_model *m) {
    kv_percent x = kv_plan_percent(a), y = kv_plan_percent(b);
    int same_place = x.hg == y.hg && (a->policy == KV_POL_GPU || b->policy == KV_POL_GPU || x.cg == y.cg);
    return a->mode == b->mode && a->batch == b->batch && a->nb == b->nb && a->prompt == b->prompt && a->gen == b->gen &&
           kv_plan_layers(a, m) == kv_plan_layers(b, m) && a->prefetch == b->prefetch && a->keep_act == b->keep_act &&
           a->pageable == b->pageable && a->no_prefill == b->no_prefill && a->compress == b->compress && same_place;
}

static kv_status check_plan(const kv_plan *pl, const kv_model *m) {
    kv_status st = kv_plan_validate(pl, m);
    if (st) return st;
    if (pl->paper_model) return kv_errorf(KV_EINVAL, "--paper-model is a simulator switch, not something a GPU runs");
    if (m->head_dim > 256) return kv_errorf(KV_EINVAL, "the attention kernel handles head_dim <= 256, got %d", m->head_dim);
    return KV_OK;
}

/* Ops of a plan's graph (events are two per op). */
static int32_t count_emit(void *ctx, const kv_gop *o) {
    (void)o;
    return (int32_t)(*(long *)ctx)++;
}
static kv_status plan_ops(const kv_model *m, const kv_plan *pl, long *n) {
    kv_layout ly;
    kv_status st = kv_layout_resolve(m, pl, &ly);
    *n = 0;
    kv_graph_sink sink = {.ctx = n, .emit = count_emit};
    return st ? st : kv_graph_build(m, pl, &ly, &sink);
}

/* Device and host memory for every plan, checked before anything large is allocated: a plan that
 * does not fit fails with one line instead of being killed half way through its set-up. */
static kv_status check_fit(eng_session *s, const kv_plan *plans, int nplans) {
    double dev = 0, host = 0, d, h;
    for (int i = 0; i < nplans; i++) {
        eng_plan_bytes(&s->m, &plans[i], &d, &h);
        dev = fmax(dev, d), host = fmax(host, h);
    }
    if (dev > s->dev.free_bytes)
        return kv_errorf(KV_ENOFIT, "the plan needs %.2f GiB of device memory, %.2f GiB are free on %s", dev / GiB,
                         s->dev.free_bytes / GiB, s->dev.name);
    char why[300];
    double avail = eng_sysmem_available(why, sizeof why);
    if (avail < 0) return KV_OK; /* nothing to go by (not Linux): let the allocations say */
    if (s->dev.shares_host_memory) {
        /* the host backend's "device" buffers are host memory too; its free_bytes already is `avail` */
        if (host + dev > avail)
            return kv_errorf(KV_ENOFIT,
                             "the plan needs %.2f GiB of host memory (%.2f GiB of K/V cache, activations and weights, %.2f GiB of the "
                             "host backend's device buffers), %.2f GiB are available (%s)",
                             (host + dev) / GiB, host / GiB, dev / GiB, avail / GiB, why);
    } else if (host > avail)
        return kv_errorf(KV_ENOFIT, "the plan needs %.2f GiB of %s host memory (K/V cache, activations and weights), %.2f GiB are available (%s)",
                         host / GiB, s->cell.pageable ? "pageable" : "pinned", avail / GiB, why);
    return KV_OK;
}

static kv_status hal(eng_session *s, eng_half **p, size_t elems) {
    s->host_bytes += (double)elems * 2;
    kv_status st = s->t->host_alloc(s->b, (void **)p, elems * 2 + 2, !s->cell.pageable);
    if (st) *p = NULL;
    return st;
}
static kv_status hvec(eng_session *s, eng_half ***v, int n, size_t elems) {
    kv_status st = KV_OK;
    if (!(*v = calloc((size_t)s->vcap, sizeof **v))) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int i = 0; i < n && !st && elems; i++) st = hal(s, &(*v)[i], elems);
    return st;
}
static void hfree_vec(eng_session *s, eng_half **v) {
    for (int i = 0; v && i < s->vcap; i++)
        if (v[i]) s->t->host_free(s->b, v[i], !s->cell.pageable);
    free(v);
}

void eng_session_close(eng_session *s) {
    if (!s) return;
    if (s->b) {
        s->t->sync(s->b);
        eng_half ***v[] = {&s->kvh, &s->acth, &s->xh, &s->qh, &s->oh, &s->kvg};
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) hfree_vec(s, *v[i]);
        if (s->wh) s->t->host_free(s->b, s->wh, !s->cell.pageable);
        hfree_vec(s, (eng_half **)s->kvq), hfree_vec(s, (eng_half **)s->actq);
        if (s->whq) s->t->host_free(s->b, s->whq, !s->cell.pageable);
        s->t->close(s->b);
    }
    free(s->x0);
    free(s);
}

/* Decode only: the cache as a prefill would leave it, once for every layer and micro-batch (the
 * layers share their weights): random stored activations of the prompt, K/V = X W_KV on the
 * device, split into the CPU part (host cache) and the GPU part (kvg). */
static kv_status synthetic_cache(eng_session *s, uint64_t seed) {
    const kv_model *m = &s->m;
    size_t h = (size_t)m->hidden, kv2 = 2 * (size_t)kv_model_kv_dim(m), P = (size_t)s->cell.prompt, B = (size_t)s->cell.batch;
    size_t wq = h * (size_t)m->n_heads * m->head_dim, bg = (size_t)s->bg, bc = (size_t)s->bc;
    eng_half *dw = NULL, *da = NULL, *dk = NULL, *act = malloc(P * B * h * 2 + 2), *kv = malloc(P * B * kv2 * 2 + 2);
    kv_status st = act && kv ? KV_OK : kv_errorf(KV_ENOMEM, "out of memory");
    if (!st) eng_fill_random(act, P * B * h, 1.0, seed + 6);
    if (!st && !(st = s->t->dev_alloc(s->b, (void **)&dw, h * kv2 * 2)) && !(st = s->t->dev_alloc(s->b, (void **)&da, P * B * h * 2)) &&
        !(st = s->t->dev_alloc(s->b, (void **)&dk, P * B * kv2 * 2)) &&
        !(st = s->t->copy(s->b, ENG_S_COMPUTE, dw, s->wh + wq, h * kv2 * 2, 0)) &&
        !(st = s->t->copy(s->b, ENG_S_COMPUTE, da, act, P * B * h * 2, 0)) &&
        !(st = s->t->gemm(s->b, ENG_S_COMPUTE, (int)(P * B), (int)kv2, (int)h, da, dw, dk, 0.f)) &&
        !(st = s->t->copy(s->b, ENG_S_COMPUTE, kv, dk, P * B * kv2 * 2, 1)))
        st = s->t->sync(s->b);
    if (dw) s->t->dev_free(s->b, dw);
    if (da) s->t->dev_free(s->b, da);
    if (dk) s->t->dev_free(s->b, dk);
    int arows = s->ly.act_rows < s->cell.prompt ? s->ly.act_rows : s->cell.prompt;
    for (size_t i = 0; !st && i < P; i++) {
        if (s->kvh && s->kvh[0]) memcpy(s->kvh[0] + i * bc * kv2, kv + (i * B + bg) * kv2, bc * kv2 * 2);
        if (s->kvg && s->kvg[0]) memcpy(s->kvg[0] + i * bg * kv2, kv + i * B * kv2, bg * kv2 * 2);
        if (s->acth && s->acth[0] && (int)i < arows) memcpy(s->acth[0] + i * bc * h, act + (i * B + bg) * h, bc * h * 2);
    }
    if (!st && s->kvq && s->kvq[0]) { /* --compress: the packed form is what the CPU holds */
        eng_quant_f(s->kvh[0], s->kvq[0], P * bc * 2 * (size_t)m->n_kv_heads, m->head_dim, 1);
        if (s->actq && s->actq[0]) eng_quant_f(s->acth[0], s->actq[0], (size_t)arows * bc, (int)h, 1);
    }
    size_t kq = P * bc * (size_t)s->ly.kv_st, aq = (size_t)arows * bc * (size_t)s->ly.act_st;
    for (int c = 1; !st && c < s->ncache; c++) {
        if (s->kvq && s->kvq[0]) eng_fill_copy(s->kvq[c], s->kvq[0], kq);
        if (s->actq && s->actq[0]) eng_fill_copy(s->actq[c], s->actq[0], aq);
        if (s->kvh && s->kvh[0]) eng_fill_copy(s->kvh[c], s->kvh[0], P * bc * kv2 * 2);
        if (s->kvg && s->kvg[0]) eng_fill_copy(s->kvg[c], s->kvg[0], P * bg * kv2 * 2);
        if (s->acth && s->acth[0]) eng_fill_copy(s->acth[c], s->acth[0], (size_t)arows * bc * h * 2);
    }
    free(act), free(kv);
    return st;
}

kv_status eng_session_open(const eng_backend_type *bt, int device, const kv_model *m, const kv_plan *plans, int nplans, uint64_t seed,
                           eng_session **out) {
    *out = NULL;
    if (!bt) return kv_errorf(KV_EDEVICE, "this build has no CUDA backend");
    if (nplans < 1) return kv_errorf(KV_EINVAL, "engine: no plan to run");
    kv_status st;
    long nops = 0;
    int base = 0; /* the plan whose placement the host side follows: the first that is not gpu */
    for (int i = 0; i < nplans; i++) {
        if ((st = check_plan(&plans[i], m))) return st;
        if (!same_cell(&plans[0], &plans[i], m))
            return kv_errorf(KV_EINVAL, "engine: plans of one set-up may differ only in policy and split");
        long n;
        if ((st = plan_ops(m, &plans[i], &n))) return st;
        if (n > 25000000L) return kv_errorf(KV_EINVAL, "engine: %ld ops is too many for one run (use --layers or fewer steps)", n);
        nops = n > nops ? n : nops;
        if (plans[base].policy == KV_POL_GPU && plans[i].policy != KV_POL_GPU) base = i;
    }
    double t0 = now_s();
    eng_session *s = calloc(1, sizeof *s);
    if (!s) return kv_errorf(KV_ENOMEM, "out of memory");
    s->t = bt, s->m = *m, s->cell = plans[base], s->nev = (int)(2 * nops + 4);
    s->cell.split_steps = NULL; /* the cell's shapes only: the policy and split come with each plan */
    if ((st = kv_layout_resolve(m, &s->cell, &s->ly))) goto out;
    /* room for the stored activations of every plan */
    for (int i = 0; i < nplans; i++) {
        kv_layout l2;
        if ((st = kv_layout_resolve(m, &plans[i], &l2))) goto out;
        if (l2.act_rows > s->ly.act_rows) s->ly.act_rows = l2.act_rows;
        s->any_cpu_attn |= l2.cpu_attn;
        s->gpu_from_host |= plans[i].policy == KV_POL_GPU;
    }
    s->bg = s->ly.b_gpu, s->bc = s->ly.b_cpu;
    s->P = s->cell.no_prefill ? 0 : s->cell.prompt;
    s->ncache = s->ly.L * s->ly.nb;
    s->vcap = s->ncache > s->ly.nb ? s->ncache : s->ly.nb;
    if ((st = bt->open(&s->b, device, s->nev))) {
        s->b = NULL;
        goto out;
    }
    if ((st = bt->info(s->b, &s->dev)) || (st = check_fit(s, plans, nplans))) goto out;
    ex_t e;
    if ((st = ex_init(&e, m, &s->cell))) goto out;
    s->wel = e.wel;
    size_t h = (size_t)m->hidden, qd = (size_t)e.qd, kv2 = 2 * (size_t)e.kvd, f = (size_t)m->ffn, B = (size_t)e.B;
    size_t S = (size_t)e.S, P = (size_t)s->P, nb = (size_t)e.nb;
    /* weights: one random layer (variance 1/fan-in), which every layer uses */
    if ((st = hal(s, &s->wh, s->wel))) goto out;
    eng_fill_random(s->wh, e.wq, 1 / sqrt((double)h), seed + 1);
    eng_fill_random(s->wh + e.wq, e.wkv, 1 / sqrt((double)h), seed + 2);
    eng_fill_random(s->wh + e.wq + e.wkv, e.wo, 1 / sqrt((double)qd), seed + 3);
    eng_fill_random(s->wh + e.wq + e.wkv + e.wo, e.wup, 1 / sqrt((double)h), seed + 4);
    eng_fill_random(s->wh + e.wlayer - e.wdown, e.wdown + (s->wel - e.wlayer), 1 / sqrt((double)f), seed + 5);
    int cpu_cache = s->bc > 0; /* offload, kvpr, recompute or cpu-attn plans keep the CPU part here */
    if ((st = hvec(s, &s->kvh, cpu_cache ? s->ncache : 0, S * (size_t)s->bc * kv2)) ||
        (st = hvec(s, &s->acth, s->ly.act_rows ? s->ncache : 0, (size_t)s->ly.act_rows * (size_t)s->bc * h)) ||
        (st = hvec(s, &s->xh, s->ly.hidden_cpu ? (int)nb : 0, (P + 2) * B * h)) ||
        (st = hvec(s, &s->qh, s->any_cpu_attn ? (int)nb : 0, (size_t)s->bc * qd)) ||
        (st = hvec(s, &s->oh, s->any_cpu_attn ? (int)nb : 0, (size_t)s->bc * qd)) ||
        (st = hvec(s, &s->kvg, !P && s->bg ? s->ncache : 0, (size_t)s->cell.prompt * (size_t)s->bg * kv2)))
        goto out;
    size_t kq = (S * (size_t)s->bc * (size_t)s->ly.kv_st + 1) / 2, aq = ((size_t)s->ly.act_rows * (size_t)s->bc * (size_t)s->ly.act_st + 1) / 2;
    if (s->ly.comp_kv && ((st = hvec(s, (eng_half ***)&s->kvq, s->ncache, kq)) ||
                          (st = hvec(s, (eng_half ***)&s->actq, s->ly.act_rows ? s->ncache : 0, aq))))
        goto out;
    if (s->ly.comp_w) { /* the packed layer, from the same random weights */
        s->whq_bytes = wq_image_bytes(&e);
        if ((st = hal(s, (eng_half **)&s->whq, (s->whq_bytes + 1) / 2))) goto out;
        memset(s->whq, 0, s->whq_bytes);
        size_t off = 0;
        for (int i = 0; i < 5; i++) {
            int K, N;
            size_t n = wq_part(&e, i, &K, &N);
            eng_quant_f(wpart(s->wh, &e, i), s->whq + off, 1, K, N);
            off += n;
        }
    }
    /* rows nothing writes before a warm-up step may read them are zero, not uninitialised */
    for (int c = 0; c < s->ncache; c++) {
        if (s->kvh[c]) memset(s->kvh[c], 0, S * (size_t)s->bc * kv2 * 2);
        if (s->acth[c]) memset(s->acth[c], 0, (size_t)s->ly.act_rows * (size_t)s->bc * h * 2);
        if (s->kvq && s->kvq[c]) memset(s->kvq[c], 0, kq * 2);
        if (s->actq && s->actq[c]) memset(s->actq[c], 0, aq * 2);
    }
    /* each micro-batch's first hidden state: the prompt's ([P][B][h], as drawn), or the first step's */
    size_t n0 = (P ? P : 1) * B * h;
    if (!(s->x0 = malloc(nb * n0 * 2 + 2))) {
        st = kv_errorf(KV_ENOMEM, "out of memory");
        goto out;
    }
    s->host_bytes += (double)nb * n0 * 2;
    eng_fill_random(s->x0, nb * n0, 1.0, seed + 7);
    if (!P && (st = synthetic_cache(s, seed))) goto out;
    s->setup_s = now_s() - t0;
out:
    if (st) {
        eng_session_close(s);
        return st;
    }
    *out = s;
    return KV_OK;
}

const char *eng_session_device(const eng_session *s) { return s->dev.name; }
double eng_session_setup_s(const eng_session *s) { return s->setup_s; }

/* ---- one plan on a session ------------------------------------------------------------------- */

typedef struct {
    ex_t *e;
    kv_status st;
} run_sink;

static kv_status dispatch(ex_t *e, const kv_gop *o, int64_t g);

static int32_t exec_emit(void *ctx, const kv_gop *o) {
    run_sink *rs = ctx;
    ex_t *e = rs->e;
    kv_status st;
    if (e->ntasks == e->cap_tasks) {
        int nc = e->cap_tasks ? 2 * e->cap_tasks : 1024;
        task_t *q = realloc(e->tasks, (size_t)nc * sizeof *q);
        if (!q) {
            rs->st = kv_errorf(KV_ENOMEM, "engine: out of memory");
            return -1;
        }
        e->tasks = q, e->cap_tasks = nc;
    }
    if (e->next_ev + 2 > e->nev) {
        rs->st = kv_errorf(KV_EINVAL, "engine: out of events (%d)", e->nev);
        return -1;
    }
    int s = stream_of[o->queue];
    for (int i = 0; i < o->ndeps; i++)
        if ((st = e->t->wait(e->b, s, e->tasks[o->deps[i]].ev1))) goto fail;
    task_t *x = &e->tasks[e->ntasks];
    *x = (task_t){e->next_ev, e->next_ev + 1, (kv_op)o->op, (kv_queue)o->queue, o->step, o->layer, o->mb, o->bytes, o->flops};
    e->next_ev += 2;
    /* the layer index whose weight slot the op uses, as the builder counts (prompt pass first) */
    int64_t g = o->step < 0 ? o->layer : (int64_t)(e->P ? e->L : 0) + (int64_t)o->step * e->L + o->layer;
    if ((st = e->t->record(e->b, s, x->ev0)) || (st = dispatch(e, o, g)) || (st = e->t->record(e->b, s, x->ev1))) goto fail;
    return e->ntasks++;
fail:
    rs->st = st;
    return -1;
}

/* Runs pl's graph (all of it, or the warm-up plan's) on e's buffers. */
static kv_status run_graph(ex_t *e, const kv_plan *pl) {
    kv_layout ly;
    kv_status st = kv_layout_resolve(e->m, pl, &ly);
    if (st) return st;
    run_sink rs = {e, KV_OK};
    kv_graph_sink sink = {.ctx = &rs, .emit = exec_emit};
    st = kv_graph_build(e->m, pl, &ly, &sink);
    if (rs.st) st = rs.st;
    return st ? st : e->t->sync(e->b);
}

/* Every micro-batch's starting hidden state (and, decode only, the GPU part of the cache), from the
 * session's: each run starts from the same data. */
static kv_status reset_inputs(ex_t *e) {
    eng_session *s = e->s;
    const eng_backend_type *t = e->t;
    kv_status st = KV_OK;
    size_t h = (size_t)e->h, B = (size_t)e->B, bg = (size_t)e->bg, bc = (size_t)e->bc, P = (size_t)e->P;
    size_t n0 = (P ? P : 1) * B * h;
    eng_half *tmp = P && bg && bc ? malloc(n0 * 2) : NULL;
    if (P && bg && bc && !tmp) return kv_errorf(KV_ENOMEM, "out of memory");
    for (int k = 0; k < e->nb && !st; k++) {
        const eng_half *x0 = s->x0 + (size_t)k * n0;
        if (tmp) {
            /* [P][B][h] as drawn, into the two parts' blocks [P][bg][h] and [P][bc][h] */
            for (size_t i = 0; i < P; i++) {
                memcpy(tmp + i * bg * h, x0 + i * B * h, bg * h * 2);
                memcpy(tmp + (P * bg + i * bc) * h, x0 + (i * B + bg) * h, bc * h * 2);
            }
            x0 = tmp;
        }
        if (e->hidden_cpu) memcpy(e->xh[k], x0, n0 * 2); /* the prompt's, or the first step's input */
        if (!(P && e->hidden_cpu)) st = t->copy(e->b, ENG_S_COMPUTE, P ? e->pX[k] : e->x[k], x0, n0 * 2, 0);
        if (!st) st = t->sync(e->b);
    }
    free(tmp);
    /* decode only: the prompt's K/V of the GPU part, as a prefill would have left them */
    size_t kv2 = 2 * (size_t)e->kvd, p = (size_t)e->pl->prompt;
    for (int c = 0; !P && bg && !st && c < e->L * e->nb; c++) {
        if ((size_t)s->bg == bg) st = t->copy(e->b, ENG_S_COMPUTE, e->kvres[c], s->kvg[c], p * bg * kv2 * 2, 0);
        else if (s->bg == 0) st = t->copy(e->b, ENG_S_COMPUTE, e->kvres[c], s->kvh[c], p * bg * kv2 * 2, 0);
        else
            for (size_t i = 0; i < p && !st; i++) /* the gpu policy on a set-up whose cache is split */
                if (!(st = t->copy(e->b, ENG_S_COMPUTE, e->kvres[c] + i * bg * kv2, s->kvg[c] + i * s->bg * kv2, (size_t)s->bg * kv2 * 2, 0)))
                    st = t->copy(e->b, ENG_S_COMPUTE, e->kvres[c] + (i * bg + (size_t)s->bg) * kv2, s->kvh[c] + i * s->bc * kv2,
                                 (size_t)s->bc * kv2 * 2, 0);
    }
    return st ? st : t->sync(e->b);
}

kv_status eng_session_run(eng_session *s, const kv_plan *pl, eng_result *r) {
    memset(r, 0, sizeof *r);
    kv_status st = check_plan(pl, &s->m);
    if (st) return st;
    if (!same_cell(&s->cell, pl, &s->m)) return kv_errorf(KV_EINVAL, "engine: this plan's shapes differ from the set-up's");
    const eng_backend_type *bt = s->t;
    ex_t e;
    if ((st = ex_init(&e, &s->m, pl))) return st;
    if (e.ly.act_rows > s->ly.act_rows) return kv_errorf(KV_EINVAL, "engine: this plan stores more activations than the set-up has room for");
    e.s = s, e.t = bt, e.b = s->b, e.nev = s->nev;
    e.wh = s->wh, e.kvh = s->kvh, e.acth = s->acth, e.xh = s->xh, e.qh = s->qh, e.oh = s->oh;
    e.kvh_q = s->kvq, e.acth_q = s->actq, e.whq = s->whq;
    snprintf(r->device, sizeof r->device, "%s", s->dev.name);
    if ((e.ly.comp_kv && !s->kvq) || (e.ly.comp_w && !s->whq) || ((e.ly.comp_kv || e.ly.comp_w) && (!bt->quant || !bt->dequant)))
        return kv_errorf(KV_EINVAL, "engine: this plan's compression differs from the set-up's");
    TRY(alloc_dev(&e));
    for (int i = 0; i < e.nwd; i++) TRY(bt->copy(e.b, ENG_S_COMPUTE, e.wd[i], e.wh, e.wel * 2, 0));
    /* compressed weights: every slot starts as the packed layer dequantised, the values each load
     * then rewrites (so a load's values are equal to what they overwrite, as without compression) */
    for (int i = 0; e.ly.comp_w && i < e.D; i++) {
        TRY(bt->copy(e.b, ENG_S_COMPUTE, e.wqd[i], e.whq, s->whq_bytes, 0));
        TRY(wq_convert(&e, ENG_S_COMPUTE, e.wqd[i], e.wd[i], 0, SIZE_MAX));
    }
    /* the LM head: the layer's weights repeated (its values only feed logits) */
    for (size_t o = 0; o < e.whead; o += e.wel)
        TRY(bt->copy(e.b, ENG_S_COMPUTE, e.whd + o, e.wh, 2 * (e.whead - o < e.wel ? e.whead - o : e.wel), 0));
    TRY(bt->sync(e.b));
    r->dev_bytes = e.dev_bytes, r->host_bytes = s->host_bytes;

    /* warm-up: one decode step, untimed (lazy module loading, cuBLAS's first call of each shape),
     * on this plan's buffers; then every input back to the session's */
    kv_plan warm = *pl;
    warm.gen = 2, warm.no_prefill = 1, warm.split_steps = NULL;
    if (pl->split_steps) warm.split = pl->split_steps[0];
    int P = e.P;
    TRY(reset_inputs(&e));
    double w0 = now_s();
    e.P = 0, e.next_ev = 1, e.ntasks = 0;
    TRY(run_graph(&e, &warm));
    e.P = P;
    r->warm_s = now_s() - w0;
    TRY(reset_inputs(&e));
    for (int i = 0; i < e.nca; i++) free(e.ca[i]);
    e.nca = 0;

    /* the run: event 0 is the origin, and the other streams wait for it so no span starts before it */
    e.ntasks = 0, e.next_ev = 1;
    TRY(bt->record(e.b, ENG_S_COMPUTE, 0));
    for (int i = 0; i < ENG_NSTREAMS; i++)
        if (i != ENG_S_COMPUTE) TRY(bt->wait(e.b, i, 0));
    TRY(run_graph(&e, pl));
    /* timeline: each span's length from its own two events, its start from the origin */
    int ntasks = e.ntasks;
    r->spans = malloc(sizeof(kv_span) * (size_t)(ntasks ? ntasks : 1));
    r->ops = malloc(sizeof *r->ops * (size_t)(ntasks ? ntasks : 1));
    if (!r->spans || !r->ops) TRY(kv_errorf(KV_ENOMEM, "out of memory"));
    double t0 = 1e300, t1 = -1e300, first_token = -1;
    for (int i = 0; i < ntasks; i++) {
        double a, len;
        TRY(bt->elapsed(e.b, 0, e.tasks[i].ev0, &a));
        TRY(bt->elapsed(e.b, e.tasks[i].ev0, e.tasks[i].ev1, &len));
        double z = a + fmax(len, 0);
        task_t *x = &e.tasks[i];
        r->spans[i] = (kv_span){x->step, x->layer, x->mb, kv_op_name(x->op), kv_res_name(kv_queue_res(x->q)), (int64_t)llround(a * 1e9),
                                (int64_t)llround(z * 1e9), x->bytes, x->flops};
        r->ops[i] = (eng_op_key){(int)x->op, (int)x->q, x->step, x->layer, x->mb};
        t0 = fmin(t0, a), t1 = fmax(t1, z);
        if (x->step < 0 && x->op == KV_OP_HEAD) first_token = fmax(first_token, z);
    }
    /* spans start at the first op */
    for (int i = 0; i < ntasks; i++) r->spans[i].start_ps -= (int64_t)llround(t0 * 1e9), r->spans[i].end_ps -= (int64_t)llround(t0 * 1e9);
    r->nspans = ntasks;
    r->prefill_s = first_token >= 0 ? (first_token - t0) / 1e3 : 0;
    r->decode_s = ntasks ? (t1 - t0) / 1e3 - r->prefill_s : 0;
    /* outputs for the numerical checks */
    size_t arow = (size_t)e.B * e.h;
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

kv_status eng_run(const eng_backend_type *bt, int device, const kv_model *m, const kv_plan *pl, uint64_t seed, eng_result *r) {
    memset(r, 0, sizeof *r);
    eng_session *s;
    kv_status st = eng_session_open(bt, device, m, pl, 1, seed, &s);
    if (st) return st;
    st = eng_session_run(s, pl, r);
    if (!st) r->setup_s = s->setup_s;
    eng_session_close(s);
    return st;
}

/* ---- running ops -------------------------------------------------------------------------- */

static void run_cpu_attn(void *arg) {
    cpu_attn_arg *a = arg;
    if (a->kvq) eng_dequant_f(a->kvq, (eng_half *)a->kv, (size_t)a->ctx * a->B * 2 * a->nkv, a->d, 1);
    kref_attention_f(a->q, a->kv, a->out, a->B, a->ctx, a->nh, a->nkv, a->d);
}

/* The weights an op of layer-index g computes with. */
static eng_half *wts(ex_t *e, const kv_gop *o, int64_t g) {
    return e->ly.w_cpu > 0 ? e->wd[g % e->D] : e->wd[o->layer < e->L ? o->layer : 0];
}

/* Prompt pass, one part of the micro-batch's sequences (0: KV on the GPU, 1: on the CPU). */
static kv_status prefill_part(ex_t *e, const kv_gop *o, int part, eng_half *w) {
    kv_status st = KV_OK;
    const eng_backend_type *t = e->t;
    eng_backend *b = e->b;
    int s = ENG_S_COMPUTE, P = e->P, n = part ? e->bc : e->bg;
    if (n == 0) return KV_OK;
    size_t r0 = part ? (size_t)P * e->bg : 0; /* first row of this part in the [P*B] buffers */
    int c = o->layer * e->nb + o->mb;
    eng_half *X = e->pX[e->hidden_cpu ? 0 : o->mb] + r0 * e->h, *XN = e->pXN + r0 * e->h, *Q = e->pQ + r0 * e->qd;
    eng_half *O = e->pO + r0 * e->qd, *XM = e->pXM + r0 * e->h;
    eng_half *U = e->pU, *Y = e->pY; /* one chunk of rows at a time */
    eng_half *KV = part ? e->pKV : o->layer < e->L ? e->kvres[c] : NULL; /* the LM head has no K/V */
    int M = P * n;
    switch ((kv_op)o->op) {
    case KV_OP_QKV:
        if ((st = t->rmsnorm(b, s, X, XN, M, e->h)) || (st = t->gemm(b, s, M, e->qd, e->h, XN, wpart(w, e, 0), Q, 0.f)))
            return st;
        return t->gemm(b, s, M, 2 * e->kvd, e->h, XN, wpart(w, e, 1), KV, 0.f);
    case KV_OP_ATTN:
        /* causal: position i attends to positions [0, i] */
        for (int i = 0; i < P && !st; i++)
            st = t->attention(b, s, Q + (size_t)i * n * e->qd, KV, O + (size_t)i * n * e->qd, n, i + 1, e->m->n_heads,
                              e->m->n_kv_heads, e->m->head_dim);
        return st;
    case KV_OP_FFN:
        if ((st = t->gemm(b, s, M, e->h, e->qd, O, wpart(w, e, 2), X, 1.f)) || (st = t->rmsnorm(b, s, X, XM, M, e->h))) return st;
        for (int r = 0; r < M && !st; r += KV_PREFILL_CHUNK) {
            int mr = M - r < KV_PREFILL_CHUNK ? M - r : KV_PREFILL_CHUNK;
            if ((st = t->gemm(b, s, mr, e->ffn * (e->gated ? 2 : 1), e->h, XM + (size_t)r * e->h, wpart(w, e, 3), U, 0.f)) ||
                (st = t->activate(b, s, U, Y, mr, e->ffn, e->gated ? ENG_ACT_SILU_MUL : ENG_ACT_RELU)))
                break;
            st = t->gemm(b, s, mr, e->h, e->ffn, Y, wpart(w, e, 4), X + (size_t)r * e->h, 1.f);
        }
        return st;
    case KV_OP_HEAD:
        /* the last position's hidden state becomes the decode input */
        if ((st = t->copy(b, s, e->x[o->mb] + (size_t)(part ? e->bg : 0) * e->h, X + (size_t)(P - 1) * n * e->h, (size_t)n * e->h * 2, 2)))
            return st;
        return KV_OK;
    default: return KV_OK;
    }
}

/* Final norm and LM head; the next step's input (the last hidden state: inputs are synthetic) goes
 * to the CPU when hidden states live there. */
static kv_status head(ex_t *e, int s, int k) {
    kv_status st;
    if ((st = e->t->rmsnorm(e->b, s, e->x[k], e->xn[k], e->B, e->h)) ||
        (st = e->t->gemm(e->b, s, e->B, e->m->vocab, e->h, e->xn[k], e->whd, e->logit[k], 0.f)))
        return st;
    if (e->hidden_cpu) st = e->t->copy(e->b, s, e->xh[k] + (size_t)e->P * e->B * e->h, e->x[k], (size_t)e->B * e->h * 2, 1);
    return st;
}

static kv_status dispatch(ex_t *e, const kv_gop *o, int64_t g) {
    kv_status st = KV_OK;
    const eng_backend_type *t = e->t;
    eng_backend *b = e->b;
    int s = stream_of[o->queue], k = o->mb, c = o->layer * e->nb + k;
    size_t krow = (size_t)2 * e->kvd, bc = (size_t)e->bc, bg = (size_t)e->bg, h = (size_t)e->h;
    eng_half *w = o->layer < e->L ? wts(e, o, g) : NULL;
    if (o->step < 0) {
        switch ((kv_op)o->op) {
        case KV_OP_W_H2D:
            if (e->ly.comp_w) return t->copy(b, s, e->wqd[g % e->D], e->whq, (size_t)o->bytes, 0);
            return t->copy(b, s, e->wd[g % e->D], e->wh, (size_t)o->bytes, 0);
        case KV_OP_DQ_W: return wq_convert(e, s, e->wqd[g % e->D], e->wd[g % e->D], 0, wq_streamed(e, o));
        case KV_OP_QUANT: /* the CPU part's K/V of rows [row0, row1) and activations of rows [0, ctx) */
            if ((st = t->quant(b, s, e->pKV + (size_t)o->row0 * bc * krow, e->pKVq + (size_t)o->row0 * bc * e->kvs,
                               (size_t)(o->row1 - o->row0) * bc * 2 * e->m->n_kv_heads, e->m->head_dim, 1)))
                return st;
            return t->quant(b, s, e->pXN + (size_t)e->P * bg * h, e->pACTq, (size_t)o->ctx * bc, e->h, 1);
        case KV_OP_HID_H2D: return t->copy(b, s, e->pX[0], e->xh[k], (size_t)o->bytes, 0);
        case KV_OP_HID_D2H: return t->copy(b, s, e->xh[k], e->pX[0], (size_t)o->bytes, 1);
        case KV_OP_KV_D2H:
            if (e->ly.comp_kv)
                return t->copy(b, s, e->kvh_q[c] + (size_t)o->row0 * bc * e->kvs, e->pKVq + (size_t)o->row0 * bc * e->kvs, (size_t)o->bytes, 1);
            return t->copy(b, s, e->kvh[c] + (size_t)o->row0 * bc * krow, e->pKV + (size_t)o->row0 * bc * krow, (size_t)o->bytes, 1);
        case KV_OP_ACT_D2H:
            if (e->ly.comp_kv) return t->copy(b, s, e->acth_q[c], e->pACTq, (size_t)o->bytes, 1);
            return t->copy(b, s, e->acth[c], e->pXN + (size_t)e->P * bg * h, (size_t)o->bytes, 1);
        case KV_OP_HEAD:
            if ((st = prefill_part(e, o, 0, w)) || (st = prefill_part(e, o, 1, w))) return st;
            return head(e, s, k);
        default:
            if ((st = prefill_part(e, o, 0, w))) return st;
            return prefill_part(e, o, 1, w);
        }
    }
    int sl = o->slot, srow = o->row0; /* decode: row s is the new token's */
    switch ((kv_op)o->op) {
    case KV_OP_W_H2D: case KV_OP_WKV_H2D:
        if (e->ly.comp_w) return t->copy(b, s, e->wqd[g % e->D], e->whq, (size_t)o->bytes, 0);
        return t->copy(b, s, e->wd[g % e->D], e->wh, (size_t)o->bytes, 0);
    case KV_OP_DQ_W: return wq_convert(e, s, e->wqd[g % e->D], e->wd[g % e->D], 0, wq_streamed(e, o));
    case KV_OP_ACT_H2D:
        if (e->ly.comp_kv) return t->copy(b, s, e->actqslot[sl], e->acth_q[c], (size_t)o->bytes, 0);
        return t->copy(b, s, e->actslot[sl], e->acth[c], (size_t)o->bytes, 0);
    case KV_OP_DQ_ACT: return t->dequant(b, s, e->actqslot[sl], e->actslot[sl], (size_t)o->row1 * bc, e->h, 1);
    case KV_OP_KV_H2D: {
        if (e->ly.comp_kv) {
            size_t off = (size_t)o->row0 * bc * e->kvs;
            return t->copy(b, s, e->kvqslot[sl] + off, e->kvh_q[c] + off, (size_t)o->bytes, 0);
        }
        size_t off = (size_t)o->row0 * bc * krow;
        return t->copy(b, s, e->kvslot[sl] + off, e->kvh[c] + off, (size_t)o->bytes, 0);
    }
    case KV_OP_DQ_KV:
        return t->dequant(b, s, e->kvqslot[sl] + (size_t)o->row0 * bc * e->kvs, e->kvslot[sl] + (size_t)o->row0 * bc * krow,
                          (size_t)(o->row1 - o->row0) * bc * 2 * e->m->n_kv_heads, e->m->head_dim, 1);
    case KV_OP_QUANT: { /* the new token's K/V (and activation) of the CPU part, packed for their trip down */
        size_t heads = bc * 2 * (size_t)e->m->n_kv_heads;
        if (!e->ly.streams_kv) return t->quant(b, s, e->kvn[k], e->kvnq[k], heads, e->m->head_dim, 1);
        if ((st = t->quant(b, s, e->kvslot[sl] + (size_t)srow * bc * krow, e->kvqslot[sl] + (size_t)srow * bc * e->kvs, heads,
                           e->m->head_dim, 1)))
            return st;
        if (e->pl->keep_act)
            st = t->quant(b, s, e->actslot[sl] + (size_t)srow * bc * h, e->actqslot[sl] + (size_t)srow * bc * e->acts, bc, e->h, 1);
        return st;
    }
    case KV_OP_HID_H2D: /* layer 0 starts from the LM head's output, the others from the last layer's */
        return t->copy(b, s, e->x[k], e->xh[k] + (size_t)(e->P + (o->layer > 0)) * e->B * h, (size_t)o->bytes, 0);
    case KV_OP_HID_D2H: return t->copy(b, s, e->xh[k] + (size_t)(e->P + 1) * e->B * h, e->x[k], (size_t)o->bytes, 1);
    case KV_OP_QKV: {
        if ((st = t->rmsnorm(b, s, e->x[k], e->xn[k], e->B, e->h)) || (st = t->gemm(b, s, e->B, e->qd, e->h, e->xn[k], wpart(w, e, 0), e->q[k], 0.f)))
            return st;
        /* new K/V: the GPU part into the resident cache's row s, the rest into the slot's row s
         * (or a staging buffer that goes down with q, for CPU attention) */
        if (bg && (st = t->gemm(b, s, e->bg, (int)krow, e->h, e->xn[k], wpart(w, e, 1), e->kvres[c] + (size_t)srow * bg * krow, 0.f)))
            return st;
        if (!bc) return KV_OK;
        eng_half *dst = e->ly.streams_kv ? e->kvslot[sl] + (size_t)srow * bc * krow : e->kvn[k];
        if ((st = t->gemm(b, s, e->bc, (int)krow, e->h, e->xn[k] + bg * h, wpart(w, e, 1), dst, 0.f))) return st;
        if (e->pl->keep_act && e->ly.streams_kv) /* the normalised input is the activation K/V come from */
            st = t->copy(b, s, e->actslot[sl] + (size_t)srow * bc * h, e->xn[k] + bg * h, bc * h * 2, 2);
        return st;
    }
    case KV_OP_RECOMPUTE: return t->gemm(b, s, o->row1 * e->bc, (int)krow, e->h, e->actslot[sl], wpart(w, e, 1), e->kvslot[sl], 0.f);
    case KV_OP_ATTN: {
        int nh = e->m->n_heads, nkv = e->m->n_kv_heads, d = e->m->head_dim;
        if (bg && (st = t->attention(b, s, e->q[k], e->kvres[c], e->ao[k], e->bg, o->ctx + 1, nh, nkv, d))) return st;
        if (bc && !e->ly.cpu_attn)
            st = t->attention(b, s, e->q[k] + bg * e->qd, e->kvslot[sl], e->ao[k] + bg * e->qd, e->bc, o->ctx + 1, nh, nkv, d);
        return st;
    }
    case KV_OP_FFN:
        if ((st = t->gemm(b, s, e->B, e->h, e->qd, e->ao[k], wpart(w, e, 2), e->x[k], 1.f)) ||
            (st = t->rmsnorm(b, s, e->x[k], e->xn[k], e->B, e->h)) ||
            (st = t->gemm(b, s, e->B, e->ffn * (e->gated ? 2 : 1), e->h, e->xn[k], wpart(w, e, 3), e->u[k], 0.f)) ||
            (st = t->activate(b, s, e->u[k], e->y[k], e->B, e->ffn, e->gated ? ENG_ACT_SILU_MUL : ENG_ACT_RELU)))
            return st;
        return t->gemm(b, s, e->B, e->h, e->ffn, e->y[k], wpart(w, e, 4), e->x[k], 1.f);
    case KV_OP_KV_D2H: {
        if (e->ly.comp_kv) {
            size_t off = (size_t)srow * bc * e->kvs;
            if ((st = t->copy(b, s, e->kvh_q[c] + off, e->kvqslot[sl] + off, bc * e->kvs, 1))) return st;
            if (e->pl->keep_act)
                st = t->copy(b, s, e->acth_q[c] + (size_t)srow * bc * e->acts, e->actqslot[sl] + (size_t)srow * bc * e->acts, bc * e->acts, 1);
            return st;
        }
        size_t off = (size_t)srow * bc * krow;
        if ((st = t->copy(b, s, e->kvh[c] + off, e->kvslot[sl] + off, bc * krow * 2, 1))) return st;
        if (e->pl->keep_act)
            st = t->copy(b, s, e->acth[c] + (size_t)srow * bc * h, e->actslot[sl] + (size_t)srow * bc * h, bc * h * 2, 1);
        return st;
    }
    case KV_OP_Q_D2H:
        if ((st = t->copy(b, s, e->qh[k], e->q[k] + bg * e->qd, bc * e->qd * 2, 1))) return st;
        if (e->ly.comp_kv) return t->copy(b, s, e->kvh_q[c] + (size_t)srow * bc * e->kvs, e->kvnq[k], bc * e->kvs, 1);
        return t->copy(b, s, e->kvh[c] + (size_t)srow * bc * krow, e->kvn[k], bc * krow * 2, 1);
    case KV_OP_CPU_ATTN: {
        if (e->nca == e->cap_ca) {
            int nc = e->cap_ca ? 2 * e->cap_ca : 256;
            cpu_attn_arg **v = realloc(e->ca, (size_t)nc * sizeof *v);
            if (!v) return kv_errorf(KV_ENOMEM, "out of memory");
            e->ca = v, e->cap_ca = nc;
        }
        cpu_attn_arg *a = malloc(sizeof *a);
        if (!a) return kv_errorf(KV_ENOMEM, "out of memory");
        *a = (cpu_attn_arg){e->qh[k], e->kvh[c], e->oh[k], e->bc, o->ctx + 1, e->m->n_heads, e->m->n_kv_heads, e->m->head_dim,
                            e->ly.comp_kv ? e->kvh_q[c] : NULL};
        e->ca[e->nca++] = a;
        return t->host_fn(b, s, run_cpu_attn, a);
    }
    case KV_OP_O_H2D: return t->copy(b, s, e->ao[k] + bg * e->qd, e->oh[k], bc * e->qd * 2, 0);
    case KV_OP_HEAD: return head(e, s, k);
    default: return kv_errorf(KV_EINVAL, "engine: no way to run op %s", kv_op_name((kv_op)o->op));
    }
}

void eng_result_free(eng_result *r) {
    free(r->spans), free(r->hidden), free(r->attn), free(r->ops);
    r->spans = NULL, r->hidden = r->attn = NULL, r->ops = NULL;
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
    if (!st && r->prefill_s > 0) st = db_run_metric(db, id, "prefill_s", r->prefill_s, "s");
    if (!st) {
        int T = kv_plan_steps(pl);
        double *end = calloc((size_t)T, sizeof *end);
        for (int t = 0; end && t < T; t++) end[t] = r->prefill_s;
        for (int i = 0; end && i < r->nspans; i++)
            if (r->spans[i].step >= 0) end[r->spans[i].step] = fmax(end[r->spans[i].step], (double)r->spans[i].end_ps * 1e-12);
        char nm[64];
        for (int t = 0; end && t < T && !st; t++) {
            snprintf(nm, sizeof nm, "step_%d_s", t);
            st = db_run_metric(db, id, nm, end[t] - (t ? end[t - 1] : r->prefill_s), "s");
        }
        free(end);
    }
    if (st) {
        db_run_abort(db);
        return st;
    }
    return db_run_commit(db);
}
