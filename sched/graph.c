/* kv_graph: layout resolution and the graph builder (prefill and decode). */
#include "graph.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- weights: FlexGen's tensor lists and the midpoint rule ---------------------------------- */

/* rows: dimension 0 of a matrix stored [in][out] as the engine's GEMMs read it (1: a vector) */
static int add_t(kv_tensor *t, int n, const char *name, int sub, int kv, uint64_t elems, uint64_t rows) {
    t[n] = (kv_tensor){name, sub, kv, elems, rows, 0};
    return n + 1;
}

double kv_quant_bytes(double outer, double G, double inner) {
    return outer * ceil(G / KV_QGROUP) * inner * KV_QGROUP_BYTES;
}

double kv_store_kv_bytes(const kv_model *m, int compress) {
    if (!(compress & KV_COMP_KV)) return (double)kv_model_kv_bytes_token_layer(m);
    return kv_quant_bytes(2.0 * m->n_kv_heads, m->head_dim, 1);
}

double kv_store_act_bytes(const kv_model *m, int compress) {
    if (!(compress & KV_COMP_KV)) return (double)kv_model_act_bytes_token(m);
    return kv_quant_bytes(1, m->hidden, 1);
}

static double tensor_bytes(const kv_tensor *t, int pe, int packed) {
    return packed && t->rows > 1 ? kv_quant_bytes(1, (double)t->rows, (double)(t->elems / t->rows)) : (double)t->elems * pe;
}

int kv_layer_tensors(const kv_model *m, double wg, double wc, kv_tensor *t) {
    uint64_t h = (uint64_t)m->hidden, q = (uint64_t)m->n_heads * (uint64_t)m->head_dim, kv = (uint64_t)kv_model_kv_dim(m);
    uint64_t f = (uint64_t)m->ffn;
    int n = 0, b = m->bias;
    /* attention: FlexGen's SelfAttention weight list (flex_opt.py) */
    n = add_t(t, n, "w_q", 0, 0, h * q, h);
    if (b) n = add_t(t, n, "b_q", 0, 0, q, 1);
    n = add_t(t, n, "w_k", 0, 1, h * kv, h);
    if (b) n = add_t(t, n, "b_k", 0, 1, kv, 1);
    n = add_t(t, n, "w_v", 0, 1, h * kv, h);
    if (b) n = add_t(t, n, "b_v", 0, 1, kv, 1);
    n = add_t(t, n, "w_out", 0, 0, q * h, q);
    if (b) n = add_t(t, n, "b_out", 0, 0, h, 1);
    n = add_t(t, n, "w_ln", 0, 0, h, 1);
    if (b) n = add_t(t, n, "b_ln", 0, 0, h, 1);
    /* MLP: OPT's fc1/fc2 (MLP weight list); gated models' gate, up, down */
    if (m->gated_mlp) {
        n = add_t(t, n, "w_gate", 1, 0, h * f, h);
        n = add_t(t, n, "w_up", 1, 0, h * f, h);
        n = add_t(t, n, "w_down", 1, 0, f * h, f);
    } else {
        n = add_t(t, n, "w_fc1", 1, 0, h * f, h);
        if (b) n = add_t(t, n, "b_fc1", 1, 0, f, 1);
        n = add_t(t, n, "w_fc2", 1, 0, f * h, f);
        if (b) n = add_t(t, n, "b_fc2", 1, 0, h, 1);
    }
    n = add_t(t, n, "w_ln2", 1, 0, h, 1);
    if (b) n = add_t(t, n, "b_ln2", 1, 0, h, 1);
    /* Midpoint rule (FlexGen init_weight_list / get_choice): tensors laid out disk, cpu, gpu over the
     * sublayer's cumulative size; a tensor goes wholly where its midpoint falls. */
    double disk = 100 - wg - wc;
    if (disk < 0) disk = 0;
    for (int sub = 0; sub < 2; sub++) {
        double total = 0, cum = 0;
        for (int i = 0; i < n; i++)
            if (t[i].sublayer == sub) total += (double)t[i].elems;
        for (int i = 0; i < n; i++) {
            if (t[i].sublayer != sub) continue;
            cum += (double)t[i].elems;
            double mid = 100 * (cum - (double)t[i].elems / 2) / total;
            t[i].on_gpu = !(mid < disk) && !(mid < disk + wc);
        }
    }
    return n;
}

/* ---- layout ------------------------------------------------------------------------------- */

static int streams_policy(kv_policy p) { return p == KV_POL_OFFLOAD || p == KV_POL_KVPR || p == KV_POL_RECOMPUTE; }

kv_status kv_layout_resolve(const kv_model *m, const kv_plan *pl, kv_layout *ly) {
    memset(ly, 0, sizeof *ly);
    kv_percent pc = kv_plan_percent(pl);
    int pe = kv_dtype_bytes(m->dtype);
    double h = m->hidden, qd = (double)m->n_heads * m->head_dim, f = m->ffn;
    double kvb = (double)kv_model_kv_bytes_token_layer(m), actb = (double)kv_model_act_bytes_token(m);
    ly->L = kv_plan_layers(pl, m), ly->nb = pl->nb, ly->B = pl->batch, ly->S = pl->prompt + pl->gen;
    ly->D = pl->paper_model ? 1 : pl->prefetch;
    ly->ntensors = kv_layer_tensors(m, pc.wg, pc.wc, ly->tensors);
    int cw = (pl->compress & KV_COMP_W) != 0;
    for (int i = 0; i < ly->ntensors; i++) {
        double b = (double)ly->tensors[i].elems * pe, bs = tensor_bytes(&ly->tensors[i], pe, cw);
        ly->w_layer += b;
        if (ly->tensors[i].on_gpu) ly->w_gpu += b;
        else {
            ly->w_cpu += b, ly->w_cpu_st += bs;
            if (ly->tensors[i].kv) ly->wkv_cpu += b, ly->wkv_cpu_st += bs;
        }
    }
    ly->comp_w = cw && ly->w_cpu > 0;
    ly->head_bytes = (double)kv_model_bytes_total(m) - (double)m->n_layers * (double)kv_model_bytes_layer(m);
    ly->b_gpu = pl->policy == KV_POL_GPU ? pl->batch : (int)floor(pl->batch * pc.cg / 100 + 0.5);
    if (ly->b_gpu > pl->batch) ly->b_gpu = pl->batch;
    ly->b_cpu = pl->batch - ly->b_gpu;
    ly->hidden_cpu = pc.hg == 0;
    ly->streams_kv = ly->b_cpu > 0 && streams_policy(pl->policy);
    ly->cpu_attn = ly->b_cpu > 0 && pl->policy == KV_POL_CPU_ATTN;
    ly->comp_kv = (pl->compress & KV_COMP_KV) && (ly->streams_kv || ly->cpu_attn);
    ly->kv_st = kv_store_kv_bytes(m, ly->comp_kv ? KV_COMP_KV : 0), ly->act_st = kv_store_act_bytes(m, ly->comp_kv ? KV_COMP_KV : 0);
    double kvs = ly->kv_st, acts = ly->act_st;
    int T = kv_plan_steps(pl);
    ly->lmin = ly->streams_kv ? pl->prompt + pl->gen : 0;
    for (int t = 0; ly->streams_kv && t < T; t++) {
        int l = kv_plan_split_at(pl, t);
        if (l < ly->lmin) ly->lmin = l;
        if (l > ly->lmax) ly->lmax = l;
    }
    ly->act_rows = ly->streams_kv ? (pl->keep_act ? ly->S : ly->lmax) : 0;
    double L = ly->L, nb = ly->nb, B = ly->B, S = ly->S, slots = (double)ly->D * nb;
    ly->gpu_weights = L * ly->w_gpu + ly->head_bytes;
    /* compressed: a packed buffer beside each fp16 slot, which the dequantisation fills */
    ly->gpu_wslots = ly->w_cpu > 0 ? ly->D * ly->w_cpu + (ly->comp_w ? ly->D * ly->w_cpu_st : 0) : 0;
    ly->gpu_kv = L * nb * ly->b_gpu * S * kvb;
    ly->gpu_kvslots = ly->streams_kv ? slots * ly->b_cpu * S * kvb + (ly->comp_kv ? slots * ly->b_cpu * S * kvs : 0) : 0;
    ly->gpu_actslots = slots * ly->b_cpu * ly->act_rows * actb + (ly->comp_kv ? slots * ly->b_cpu * ly->act_rows * acts : 0);
    /* per micro-batch: hidden state, its norm, q, attention output, MLP input and output, new K/V,
     * logits */
    ly->gpu_work = nb * B * (pe * (2 * h + 2 * qd + f * (m->gated_mlp ? 3 : 2) + m->vocab) + kvb);
    /* the prompt pass: every micro-batch's hidden states (one load buffer when they live on the
     * CPU), and one set of scratch: norms, q, attention output, the MLP activations of one chunk
     * of rows, the K/V of the CPU part on their way out */
    double P = pl->no_prefill || pl->paper_model ? 0 : pl->prompt;
    ly->gpu_prefill = P * B * pe * h * (ly->hidden_cpu ? 1 : nb) + P * B * pe * (2 * h + 2 * qd) +
                      fmin(P * B, KV_PREFILL_CHUNK) * pe * f * (m->gated_mlp ? 3 : 2) + P * ly->b_cpu * kvb +
                      (ly->comp_kv ? P * ly->b_cpu * (kvs + acts) : 0); /* packed K/V and activations on their way out */
    ly->gpu_total = ly->gpu_weights + ly->gpu_wslots + ly->gpu_kv + ly->gpu_kvslots + ly->gpu_actslots + ly->gpu_work +
                    ly->gpu_prefill;
    ly->cpu_weights = L * ly->w_cpu_st;
    ly->cpu_kv = L * nb * ly->b_cpu * S * kvs * (pl->policy == KV_POL_GPU ? 0 : 1);
    ly->cpu_act = L * nb * ly->b_cpu * ly->act_rows * acts;
    ly->cpu_hidden = ly->hidden_cpu ? nb * B * (pl->no_prefill ? 1 : pl->prompt) * actb : 0;
    ly->cpu_total = ly->cpu_weights + ly->cpu_kv + ly->cpu_act + ly->cpu_hidden;
    return KV_OK;
}

kv_status kv_layout_fits(const kv_layout *ly, double gpu_bytes, double cpu_bytes) {
    const double G = 1073741824.0;
    if (ly->cpu_total > cpu_bytes)
        return kv_errorf(KV_ENOFIT,
                         "does not fit in CPU memory: %.1f GiB needed > %.1f GiB (weights %.1f, KV cache %.1f, activations %.1f, "
                         "hidden states %.1f GiB)",
                         ly->cpu_total / G, cpu_bytes / G, ly->cpu_weights / G, ly->cpu_kv / G, ly->cpu_act / G,
                         ly->cpu_hidden / G);
    if (ly->gpu_total > gpu_bytes)
        return kv_errorf(KV_ENOFIT,
                         "does not fit in GPU memory: %.2f GiB needed > %.2f GiB capacity (weights %.2f, weight buffers %.2f, "
                         "KV cache %.2f, K/V buffers %.2f, activation buffers %.2f, working %.2f GiB)",
                         ly->gpu_total / G, gpu_bytes / G, ly->gpu_weights / G, ly->gpu_wslots / G, ly->gpu_kv / G,
                         ly->gpu_kvslots / G, ly->gpu_actslots / G, (ly->gpu_work + ly->gpu_prefill) / G);
    return KV_OK;
}

/* ---- builder -------------------------------------------------------------------------------- */

void kv_graph_split_init(kv_split_k *c, const kv_model *m, const kv_plan *pl, const kv_layout *ly) {
    c->m = m, c->prompt = pl->prompt, c->b_cpu = ly->b_cpu;
    c->streams_kv = ly->streams_kv, c->latency_kv = pl->mode == KV_MODE_LATENCY && ly->streams_kv;
    c->kvb = (double)kv_model_kv_bytes_token_layer(m), c->actb = (double)kv_model_act_bytes_token(m);
    c->kvs = ly->kv_st, c->acts = ly->act_st, c->h = m->hidden, c->kvd = kv_model_kv_dim(m);
}

/* The builder's state arrays, as the layer log names them. */
enum { ST_WUSER, ST_SLOTFFN, ST_SLOTWB, ST_CACHEWB, ST_HID, ST_HEAD, ST_N };
typedef struct {
    uint8_t a, w; /* array, write (else read) */
    int32_t i, v; /* index, value read or written */
} st_entry;

typedef struct {
    const kv_model *m;
    const kv_plan *pl;
    const kv_layout *ly;
    kv_graph_sink *sink;
    int32_t *w_user;    /* [D]: the last op that reads weight slot i (its layer's last ffn) */
    int32_t *slot_ffn;  /* [D*nb]: the last ffn that used K/V and activation slot i */
    int32_t *slot_wb;   /* [D*nb]: the last write-back that read slot i */
    int32_t *cache_wb;  /* [L*nb]: the last store into host cache (layer, mb) */
    int32_t *hid;       /* [nb]: the op that produced micro-batch k's hidden state on its home */
    int32_t *head;      /* [nb]: micro-batch k's last LM head (the token the next step starts from) */
    int32_t pf_store;   /* the prompt pass's last store: its scratch is reused by the next cell */
    int32_t pf_head;    /* and its last LM head, which reads the hidden-state load buffer too */
    int64_t g, v;       /* running layer index (weight slots), running (layer, mb) index (K/V slots) */
    double kvb, actb, pe;
    double kvs, acts;   /* bytes per token of the CPU part's K/V and activations as stored (packed under --compress kv) */
    kv_split_k sk;
    /* layer repeat (kv_graph_build): the state arrays by index, so that the reads and writes of a
     * layer built op by op can be logged; the log and the ops of the last such layer (the
     * template); the id the sink gives next */
    int32_t *arr[ST_N];
    uint32_t *stamp[ST_N]; /* 2 serial: read by the layer being logged, 2 serial + 1: written */
    uint32_t serial;
    int64_t nadd[ST_N], nmod[ST_N]; /* an entry's counterpart one layer on: i + nadd, less nmod past it */
    int logging, lbad, norepeat;
    st_entry *lg;
    int32_t nlg, lgcap;
    kv_gop *tm;
    int32_t ntm, tmcap;
    int tm_step, tm_layer; /* the template's step and layer (-1: none) */
    int32_t next_id;       /* -1 until the first op */
} bld;

static void op_init(kv_gop *o, kv_op op, kv_queue q, int step, int layer, int mb) {
    /* every field but the dependency array, which ndeps bounds */
    o->op = (uint8_t)op, o->queue = (uint8_t)q, o->ndeps = 0;
    o->step = step, o->layer = layer, o->mb = mb;
    o->seq0 = o->nseq = o->row0 = o->row1 = o->ctx = 0;
    o->slot = -1;
    o->bytes = o->flops = 0;
}

static void dep(kv_gop *o, int32_t id) {
    if (id < 0) return;
    for (int i = 0; i < o->ndeps; i++)
        if (o->deps[i] == id) return;
    o->deps[o->ndeps++] = id; /* at most 5 per op: KV_GRAPH_MAXDEP leaves room */
}

static kv_status emit(bld *b, const kv_gop *o, int32_t *id) {
    *id = b->sink->emit(b->sink->ctx, o);
    if (*id < 0) return KV_ENOMEM;
    /* ids come in emission order (the sink's contract); a sink that numbers otherwise gets no
     * repeated layers, whose ids are predicted */
    if (b->next_id >= 0 && *id != b->next_id) b->norepeat = 1;
    b->next_id = *id + 1;
    if (b->logging) {
        if (b->ntm == b->tmcap) {
            int32_t nc = b->tmcap ? 2 * b->tmcap : 64;
            kv_gop *q = realloc(b->tm, (size_t)nc * sizeof *q);
            if (!q) return KV_ENOMEM;
            b->tm = q, b->tmcap = nc;
        }
        kv_gop *c = &b->tm[b->ntm++];
        *c = *o;
        /* the unused dependency slots defined: repeat_layer shifts all of them */
        for (int d = c->ndeps; d < KV_GRAPH_MAXDEP; d++) c->deps[d] = 0;
    }
    return KV_OK;
}

/* Reads and writes of the state arrays by decode_one: logged while a layer is built op by op, so
 * that kv_graph_build can tell whether the next layer repeats it. A read of an entry the same
 * layer wrote makes the layer no template (its copy would read its own writes). */
static void st_log(bld *b, int a, int64_t i, int32_t v, int w) {
    if (!b->logging) return;
    uint32_t *sp = &b->stamp[a][i], r = 2 * b->serial;
    if (!w) {
        if (*sp == r + 1) b->lbad = 1;
        if (*sp == r || *sp == r + 1) return; /* the first read of an entry is the one that counts */
        *sp = r;
    } else
        *sp = r + 1;
    if (b->nlg == b->lgcap) {
        int32_t nc = b->lgcap ? 2 * b->lgcap : 256;
        st_entry *q = realloc(b->lg, (size_t)nc * sizeof *q);
        if (!q) {
            b->lbad = 1;
            return;
        }
        b->lg = q, b->lgcap = nc;
    }
    b->lg[b->nlg++] = (st_entry){(uint8_t)a, (uint8_t)w, (int32_t)i, v};
}
static int32_t rd(bld *b, int a, int64_t i) {
    int32_t v = b->arr[a][i];
    st_log(b, a, i, v, 0);
    return v;
}
static void wr(bld *b, int a, int64_t i, int32_t v) {
    b->arr[a][i] = v;
    st_log(b, a, i, v, 1);
}

#define EMIT(o, id)                              \
    do {                                         \
        if ((st = emit(b, &(o), &(id)))) return st; \
    } while (0)

static double gemm_bytes(const kv_model *m, double wel, double rows, double in, double out) {
    return (wel + rows * (in + out)) * kv_dtype_bytes(m->dtype);
}

/* --compress: a GPU kernel that (de)quantises `elems_bytes` of fp16 from or into `packed` bytes; its
 * cost is memory-bound over both (hwmodel/quant.h). Returns its id in *id. */
static kv_status quant_op(bld *b, kv_op op, int step, int j, int k, double packed, double fp16, int32_t after, int32_t *id) {
    kv_gop o;
    op_init(&o, op, KV_Q_COMPUTE, step, j, k);
    o.bytes = packed + fp16;
    dep(&o, after);
    return emit(b, &o, id);
}

/* A weight load; with compressed weights its dequantisation follows on the GPU, and what computes
 * with the weights waits for that instead (returned in *ready). */
static kv_status weight_load(bld *b, kv_op op, int step, int j, int k, double bytes_st, double bytes16, int32_t *ready) {
    kv_gop o;
    kv_status st;
    int32_t id;
    op_init(&o, op, KV_Q_WEIGHT, step, j, k);
    o.slot = (int32_t)(b->g % b->ly->D);
    o.bytes = bytes_st;
    dep(&o, rd(b, ST_WUSER, b->g % b->ly->D));
    EMIT(o, id);
    *ready = id;
    if (b->ly->comp_w) {
        if ((st = quant_op(b, KV_OP_DQ_W, step, j, k, bytes_st, bytes16, id, ready))) return st;
    }
    return KV_OK;
}

/* The fields that depend on the split (rows, context, bytes, FLOPs) of the ops that have them:
 * decode ops at split l (lmin = lmax = l), the prompt pass's stores for splits lmin..lmax over the
 * steps (K/V from lmin in latency mode, activations up to lmax). The one place the builder and
 * the re-costing of a graph at another split (kv_graph_split_apply) take them from. */
static void split_fields(const kv_split_k *c, kv_gop *o, int lmin, int lmax) {
    double nc = c->b_cpu;
    if (o->step < 0) {
        int p = c->prompt, r0 = c->latency_kv ? (lmin < p ? lmin : p) : 0, la = lmax < p ? lmax : p;
        switch ((kv_op)o->op) {
        case KV_OP_QUANT: { /* K/V of rows [r0, p) and activations of rows [0, la) */
            double n_kv = nc * (p - r0), n_act = c->streams_kv ? nc * la : 0;
            o->row0 = r0, o->row1 = p, o->ctx = c->streams_kv ? la : 0;
            o->bytes = n_kv * (c->kvs + c->kvb) + n_act * (c->acts + c->actb);
            return;
        }
        case KV_OP_KV_D2H:
            o->row0 = r0, o->row1 = p;
            o->bytes = nc * (p - r0) * c->kvs;
            return;
        case KV_OP_ACT_D2H:
            o->row0 = 0, o->row1 = la;
            o->bytes = nc * la * c->acts;
            return;
        default: return;
        }
    }
    int s = c->prompt + o->step, l = lmax;
    switch ((kv_op)o->op) {
    case KV_OP_ACT_H2D: /* the first l rows' stored activations */
        o->row0 = 0, o->row1 = l;
        o->bytes = nc * l * c->acts;
        return;
    case KV_OP_KV_H2D: /* the other rows' K/V */
        o->row0 = l, o->row1 = s;
        o->bytes = nc * (s - l) * c->kvs;
        return;
    case KV_OP_DQ_ACT:
        o->row0 = 0, o->row1 = l;
        o->bytes = nc * l * (c->acts + c->actb);
        return;
    case KV_OP_RECOMPUTE: /* K/V of the first l rows from their activations */
        o->row0 = 0, o->row1 = l, o->ctx = l;
        o->flops = kv_model_recompute_flops(c->m, (int64_t)c->b_cpu * l);
        o->bytes = gemm_bytes(c->m, c->h * 2 * c->kvd, nc * l, c->h, 2 * c->kvd);
        return;
    case KV_OP_DQ_KV:
        o->row0 = l, o->row1 = s;
        o->bytes = nc * (s - l) * (c->kvs + c->kvb);
        return;
    default: return;
    }
}

int kv_graph_split_op(const kv_gop *o) {
    if (o->step < 0) return o->op == KV_OP_QUANT || o->op == KV_OP_KV_D2H || o->op == KV_OP_ACT_D2H;
    return o->op == KV_OP_ACT_H2D || o->op == KV_OP_KV_H2D || o->op == KV_OP_DQ_ACT || o->op == KV_OP_RECOMPUTE || o->op == KV_OP_DQ_KV;
}

void kv_graph_split_apply(const kv_split_k *c, kv_gop *o, int l) { split_fields(c, o, l, l); }

/* One (layer, micro-batch) of the prompt pass. */
static kv_status prefill_one(bld *b, int j, int k) {
    kv_status st;
    const kv_model *m = b->m;
    const kv_plan *pl = b->pl;
    const kv_layout *ly = b->ly;
    int B = ly->B, p = pl->prompt, D = ly->D;
    double h = m->hidden, qd = (double)m->n_heads * m->head_dim, kvd = kv_model_kv_dim(m), f = m->ffn;
    double rows = (double)B * p;
    kv_gop o;
    int32_t w = -1, hin = -1, qkv, ffn, id;
    if (k == 0 && ly->w_cpu > 0 && (st = weight_load(b, KV_OP_W_H2D, -1, j, k, ly->w_cpu_st, ly->w_cpu, &w))) return st;
    if (ly->hidden_cpu) {
        op_init(&o, KV_OP_HID_H2D, KV_Q_HIDDEN, -1, j, k);
        o.nseq = B, o.row1 = p, o.ctx = p;
        o.bytes = rows * b->actb;
        if (j > 0) dep(&o, b->hid[k]);
        dep(&o, b->pf_store); /* one load buffer: the last cell's hidden state must have gone out */
        dep(&o, b->pf_head);
        EMIT(o, hin);
    }
    op_init(&o, KV_OP_QKV, KV_Q_COMPUTE, -1, j, k);
    o.nseq = B, o.row1 = p, o.ctx = p;
    o.flops = 2 * rows * h * (qd + 2 * kvd);
    o.bytes = gemm_bytes(m, h * (qd + 2 * kvd), rows, h, qd + 2 * kvd);
    dep(&o, w), dep(&o, hin); /* later micro-batches follow the first on the compute queue */
    dep(&o, b->pf_store);     /* one set of scratch: the last cell's stores must have read it */
    EMIT(o, qkv);
    op_init(&o, KV_OP_ATTN, KV_Q_COMPUTE, -1, j, k);
    o.nseq = B, o.row1 = p, o.ctx = p;
    o.flops = 2.0 * B * qd * p * (p + 1.0); /* causal: q.K^T and P.V over (p + 1) / 2 positions on average */
    o.bytes = rows * (2 * qd * b->pe + b->kvb);
    EMIT(o, id);
    op_init(&o, KV_OP_FFN, KV_Q_COMPUTE, -1, j, k);
    o.nseq = B, o.row1 = p, o.ctx = p;
    o.flops = 2 * rows * (qd * h + h * f * (m->gated_mlp ? 3 : 2));
    o.bytes = gemm_bytes(m, qd * h + h * f * (m->gated_mlp ? 3 : 2), rows, 2 * h, 2 * h + f);
    EMIT(o, ffn);
    int c = j * ly->nb + k;
    if (ly->b_cpu > 0 && pl->policy != KV_POL_GPU) {
        /* K/V home: KVPR in latency mode keeps K/V only for [l, s) (the prefix is recomputed) */
        int r0 = pl->mode == KV_MODE_LATENCY && ly->streams_kv ? (ly->lmin < p ? ly->lmin : p) : 0;
        int la = ly->lmax < p ? ly->lmax : p;
        int32_t src = qkv; /* what the stores read: the new K/V, or their packed form */
        if (ly->comp_kv) {
            /* K/V of rows [r0, p) and activations of rows [0, la): the executor reads the rows from the op */
            op_init(&o, KV_OP_QUANT, KV_Q_COMPUTE, -1, j, k);
            o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu;
            split_fields(&b->sk, &o, ly->lmin, ly->lmax);
            dep(&o, qkv);
            EMIT(o, src);
        }
        if (p - r0 > 0) {
            op_init(&o, KV_OP_KV_D2H, KV_Q_STORE, -1, j, k);
            o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu;
            split_fields(&b->sk, &o, ly->lmin, ly->lmax);
            dep(&o, src);
            EMIT(o, b->cache_wb[c]);
            b->pf_store = b->cache_wb[c];
        }
        if (ly->streams_kv && la > 0) {
            op_init(&o, KV_OP_ACT_D2H, KV_Q_STORE, -1, j, k);
            o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu;
            split_fields(&b->sk, &o, ly->lmin, ly->lmax);
            dep(&o, src);
            EMIT(o, b->cache_wb[c]);
            b->pf_store = b->cache_wb[c];
        }
    }
    if (ly->hidden_cpu) {
        op_init(&o, KV_OP_HID_D2H, KV_Q_STORE, -1, j, k);
        o.nseq = B, o.row1 = p, o.ctx = p;
        o.bytes = rows * b->actb;
        dep(&o, ffn);
        EMIT(o, b->hid[k]);
        b->pf_store = b->hid[k];
    } else b->hid[k] = ffn;
    if (k == ly->nb - 1) b->w_user[b->g % D] = ffn;
    if (j == ly->L - 1) {
        op_init(&o, KV_OP_HEAD, KV_Q_COMPUTE, -1, ly->L, k);
        o.nseq = B, o.ctx = 1;
        o.flops = 2.0 * B * h * m->vocab;
        o.bytes = gemm_bytes(m, h * (double)m->vocab, B, h, m->vocab);
        dep(&o, ffn);
        EMIT(o, b->head[k]);
        b->pf_head = b->head[k];
    }
    return KV_OK;
}

/* One (step, layer, micro-batch) of decoding. */
static kv_status decode_one(bld *b, int t, int j, int k) {
    kv_status st;
    const kv_model *m = b->m;
    const kv_plan *pl = b->pl;
    const kv_layout *ly = b->ly;
    int B = ly->B, D = ly->D, s = pl->prompt + t;
    int l = ly->streams_kv ? kv_plan_split_at(pl, t) : 0;
    double h = m->hidden, qd = (double)m->n_heads * m->head_dim, kvd = kv_model_kv_dim(m), f = m->ffn;
    int slot = (int)(b->v % ((int64_t)D * ly->nb)), c = j * ly->nb + k;
    kv_gop o;
    int32_t w = -1, wkv = -1, act = -1, kv = -1, hin = -1, qkv, rec = -1, attn = -1, oh = -1, ffn, id;
    if (k == 0 && ly->w_cpu > 0) {
        double wb = ly->w_cpu, wbs = ly->w_cpu_st;
        if (pl->wkv_first && ly->wkv_cpu > 0 && l > 0) {
            if ((st = weight_load(b, KV_OP_WKV_H2D, t, j, k, ly->wkv_cpu_st, ly->wkv_cpu, &wkv))) return st;
            wb -= ly->wkv_cpu, wbs -= ly->wkv_cpu_st;
        }
        if (wb > 0 && (st = weight_load(b, KV_OP_W_H2D, t, j, k, wbs, wb, &w))) return st;
    }
    if (ly->streams_kv) {
        /* A slot is free once its previous user's ffn is done and its write-back has read it; a host
         * cache's rows once the last store into them is done (the engine found both races). */
        if (l > 0) {
            op_init(&o, KV_OP_ACT_H2D, KV_Q_CACHE, t, j, k);
            o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu, o.slot = slot;
            split_fields(&b->sk, &o, l, l);
            dep(&o, rd(b, ST_SLOTFFN, slot)), dep(&o, rd(b, ST_SLOTWB, slot)), dep(&o, rd(b, ST_CACHEWB, c));
            EMIT(o, act);
        }
        if (s - l > 0) {
            op_init(&o, KV_OP_KV_H2D, KV_Q_CACHE, t, j, k);
            o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu, o.slot = slot;
            split_fields(&b->sk, &o, l, l);
            dep(&o, rd(b, ST_SLOTFFN, slot)), dep(&o, rd(b, ST_SLOTWB, slot)), dep(&o, rd(b, ST_CACHEWB, c));
            EMIT(o, kv);
        }
    }
    if (ly->hidden_cpu) {
        op_init(&o, KV_OP_HID_H2D, KV_Q_HIDDEN, t, j, k);
        o.nseq = B, o.row0 = s, o.row1 = s + 1;
        o.bytes = (double)B * b->actb;
        dep(&o, j == 0 ? rd(b, ST_HEAD, k) : rd(b, ST_HID, k));
        EMIT(o, hin);
    }
    op_init(&o, KV_OP_QKV, KV_Q_COMPUTE, t, j, k);
    o.nseq = B, o.row0 = s, o.row1 = s + 1, o.ctx = 1, o.slot = ly->streams_kv ? slot : -1;
    o.flops = 2.0 * B * h * (qd + 2 * kvd);
    o.bytes = gemm_bytes(m, h * (qd + 2 * kvd), B, h, qd + 2 * kvd);
    dep(&o, w), dep(&o, wkv), dep(&o, hin);
    if (ly->streams_kv) dep(&o, rd(b, ST_SLOTWB, slot)); /* row s of the slot: its last write-back must have read it */
    EMIT(o, qkv);
    int32_t newkv = qkv; /* what the new K/V's write-back (or trip to the CPU) reads */
    if (ly->comp_kv) {
        /* the new token's K/V (and activation when kept) packed for the CPU, first so the write-back starts early */
        double na = pl->keep_act && ly->streams_kv ? ly->b_cpu : 0;
        op_init(&o, KV_OP_QUANT, KV_Q_COMPUTE, t, j, k);
        o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu, o.row0 = s, o.row1 = s + 1, o.slot = ly->streams_kv ? slot : -1;
        o.bytes = ly->b_cpu * (b->kvs + b->kvb) + na * (b->acts + b->actb);
        dep(&o, qkv);
        EMIT(o, newkv);
        if (act >= 0) {
            op_init(&o, KV_OP_DQ_ACT, KV_Q_COMPUTE, t, j, k);
            o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu, o.slot = slot;
            split_fields(&b->sk, &o, l, l);
            dep(&o, act);
            EMIT(o, act);
        }
    }
    if (act >= 0) {
        op_init(&o, KV_OP_RECOMPUTE, KV_Q_COMPUTE, t, j, k);
        o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu, o.slot = slot;
        split_fields(&b->sk, &o, l, l);
        dep(&o, act), dep(&o, wkv >= 0 ? wkv : w);
        EMIT(o, rec);
    }
    if (ly->cpu_attn) {
        if (ly->b_gpu > 0) {
            op_init(&o, KV_OP_ATTN, KV_Q_COMPUTE, t, j, k);
            o.nseq = ly->b_gpu, o.ctx = s;
            o.flops = 4.0 * ly->b_gpu * (s + 1.0) * qd;
            o.bytes = (double)ly->b_gpu * (s + 1.0) * b->kvb;
            EMIT(o, attn);
        }
        int32_t q, ca;
        op_init(&o, KV_OP_Q_D2H, KV_Q_STORE, t, j, k);
        o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu, o.row0 = s, o.row1 = s + 1;
        o.bytes = (double)ly->b_cpu * (qd * b->pe + b->kvs); /* q, and the new K/V for the CPU cache */
        dep(&o, newkv);
        EMIT(o, q);
        op_init(&o, KV_OP_CPU_ATTN, KV_Q_CPU, t, j, k);
        o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu, o.ctx = s;
        o.flops = 4.0 * ly->b_cpu * (s + 1.0) * qd;
        o.bytes = (double)ly->b_cpu * (s + 1.0) * b->kvs; /* the cache as stored (the CPU dequantises a packed one) */
        dep(&o, q);
        EMIT(o, ca);
        op_init(&o, KV_OP_O_H2D, KV_Q_HIDDEN, t, j, k);
        o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu;
        o.bytes = (double)ly->b_cpu * qd * b->pe;
        dep(&o, ca);
        EMIT(o, oh);
    } else {
        if (kv >= 0 && ly->comp_kv) {
            op_init(&o, KV_OP_DQ_KV, KV_Q_COMPUTE, t, j, k);
            o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu, o.slot = slot;
            split_fields(&b->sk, &o, l, l);
            dep(&o, kv);
            EMIT(o, kv);
        }
        op_init(&o, KV_OP_ATTN, KV_Q_COMPUTE, t, j, k);
        o.nseq = B, o.ctx = s, o.slot = ly->streams_kv ? slot : -1;
        o.flops = 4.0 * B * (s + 1.0) * qd;
        o.bytes = (double)B * (s + 1.0) * b->kvb;
        dep(&o, qkv), dep(&o, rec), dep(&o, kv);
        EMIT(o, attn);
    }
    op_init(&o, KV_OP_FFN, KV_Q_COMPUTE, t, j, k);
    o.nseq = B, o.ctx = 1;
    o.flops = 2.0 * B * (qd * h + h * f * (m->gated_mlp ? 3 : 2));
    o.bytes = gemm_bytes(m, qd * h + h * f * (m->gated_mlp ? 3 : 2), B, 2 * h, 2 * h + f);
    dep(&o, attn), dep(&o, oh);
    EMIT(o, ffn);
    if (ly->streams_kv) {
        wr(b, ST_SLOTFFN, slot, ffn);
        op_init(&o, KV_OP_KV_D2H, KV_Q_STORE, t, j, k);
        o.seq0 = ly->b_gpu, o.nseq = ly->b_cpu, o.row0 = s, o.row1 = s + 1, o.slot = slot;
        o.bytes = (double)ly->b_cpu * (b->kvs + (pl->keep_act ? b->acts : 0));
        dep(&o, newkv);
        EMIT(o, id);
        wr(b, ST_CACHEWB, c, id), wr(b, ST_SLOTWB, slot, id);
    }
    if (ly->hidden_cpu) {
        op_init(&o, KV_OP_HID_D2H, KV_Q_STORE, t, j, k);
        o.nseq = B, o.row0 = s, o.row1 = s + 1;
        o.bytes = (double)B * b->actb;
        dep(&o, ffn);
        EMIT(o, id);
        wr(b, ST_HID, k, id);
    } else wr(b, ST_HID, k, ffn);
    if (k == ly->nb - 1) wr(b, ST_WUSER, b->g % D, ffn);
    if (j == ly->L - 1) {
        op_init(&o, KV_OP_HEAD, KV_Q_COMPUTE, t, ly->L, k);
        o.nseq = B, o.ctx = 1;
        o.flops = 2.0 * B * h * m->vocab;
        o.bytes = gemm_bytes(m, h * (double)m->vocab, B, h, m->vocab);
        dep(&o, ffn);
        EMIT(o, id);
        wr(b, ST_HEAD, k, id);
    }
    return KV_OK;
}

/* Where a state entry's counterpart lies one layer on: weight slots advance by one, K/V slots
 * and host caches by a layer's micro-batches; hidden states and heads are per micro-batch. */
static inline int64_t st_next(const bld *b, int a, int64_t i) {
    int64_t x = i + b->nadd[a];
    return x < b->nmod[a] ? x : x - b->nmod[a];
}

/* Layer j of step t repeats the template (layer j - 1, built op by op or repeated): decode_one
 * depends on the layer only through j == 0 and j == L - 1, the layer field, the buffer slots
 * (counters) and the state it reads, so if every entry the template read holds, at its
 * counterpart, the template's value shifted by the template's op count (or both are -1), layer j's
 * ops are the template's shifted, and so are its writes. */
static int layer_repeats(const bld *b, int t, int j) {
    if (b->tm_step != t || b->tm_layer != j - 1 || j > b->ly->L - 2 || b->norepeat || b->ntm == 0) return 0;
    int32_t Q = b->ntm;
    for (int32_t i = 0; i < b->nlg; i++) {
        const st_entry *e = &b->lg[i];
        if (e->w) continue;
        int32_t cur = b->arr[e->a][st_next(b, e->a, e->i)];
        if (e->v < 0 ? cur >= 0 : cur != e->v + Q) return 0;
    }
    return 1;
}

static int is_wslot(int op) { return op == KV_OP_W_H2D || op == KV_OP_WKV_H2D; }

/* Emits the template one layer on and makes its writes there; the log becomes the new layer's. */
static kv_status repeat_layer(bld *b) {
    int32_t Q = b->ntm;
    int D = b->ly->D;
    int64_t ns = (int64_t)D * b->ly->nb;
    for (int32_t i = 0; i < Q; i++) {
        kv_gop *o = &b->tm[i];
        o->layer++;
        /* the slots decode_one gives: weights g % D, K/V and activations v % (D nb) */
        if (o->slot >= 0) {
            int64_t x = o->slot + (is_wslot(o->op) ? 1 : b->ly->nb), m = is_wslot(o->op) ? D : ns;
            o->slot = (int32_t)(x < m ? x : x - m);
        }
        /* every slot of the array (those past ndeps are unused): a fixed-length loop the compiler
         * turns into a few vector adds; unsigned, so that unused slots cannot overflow */
        for (int d = 0; d < KV_GRAPH_MAXDEP; d++) o->deps[d] = (int32_t)((uint32_t)o->deps[d] + (uint32_t)Q);
    }
    int32_t id0 = b->next_id;
    if (b->sink->repeat) {
        int32_t id = b->sink->repeat(b->sink->ctx, b->tm, Q);
        if (id < 0) return KV_ENOMEM;
        if (id != id0) return kv_errorf(KV_EINVAL, "graph: the sink numbered a repeated layer out of order");
    } else
        for (int32_t i = 0; i < Q; i++) {
            int32_t id = b->sink->emit(b->sink->ctx, &b->tm[i]);
            if (id < 0) return KV_ENOMEM;
            if (id != id0 + i) return kv_errorf(KV_EINVAL, "graph: the sink numbered a repeated layer out of order");
        }
    b->next_id = id0 + Q;
    for (int32_t i = 0; i < b->nlg; i++) {
        st_entry *e = &b->lg[i];
        e->i = (int32_t)st_next(b, e->a, e->i);
        if (e->w) b->arr[e->a][e->i] = e->v += Q;
        else if (e->v >= 0) e->v += Q;
    }
    b->tm_layer++;
    b->sink->repeated++;
    return KV_OK;
}

kv_status kv_graph_build(const kv_model *m, const kv_plan *pl, const kv_layout *ly, kv_graph_sink *sink) {
    bld b;
    memset(&b, 0, sizeof b);
    b.m = m, b.pl = pl, b.ly = ly, b.sink = sink;
    b.pf_store = b.pf_head = -1;
    b.tm_step = b.tm_layer = -1, b.next_id = -1;
    sink->repeated = 0;
    int64_t nslots = (int64_t)ly->D * ly->nb, ncache = (int64_t)ly->L * ly->nb;
    if (nslots > (1 << 24) || ncache > (1 << 28))
        return kv_errorf(KV_EOVERFLOW, "graph: %lld layer x micro-batch caches is too many", (long long)ncache);
    size_t n = (size_t)(ly->D + 2 * nslots + ncache + 2 * ly->nb);
    int32_t *mem = malloc(n * sizeof *mem);
    uint32_t *stamps = calloc(n, sizeof *stamps);
    if (!mem || !stamps) {
        free(mem), free(stamps);
        return kv_errorf(KV_ENOMEM, "graph: out of memory");
    }
    for (size_t i = 0; i < n; i++) mem[i] = -1;
    b.w_user = mem, b.slot_ffn = b.w_user + ly->D, b.slot_wb = b.slot_ffn + nslots, b.cache_wb = b.slot_wb + nslots;
    b.hid = b.cache_wb + ncache, b.head = b.hid + ly->nb;
    b.arr[ST_WUSER] = b.w_user, b.arr[ST_SLOTFFN] = b.slot_ffn, b.arr[ST_SLOTWB] = b.slot_wb;
    b.arr[ST_CACHEWB] = b.cache_wb, b.arr[ST_HID] = b.hid, b.arr[ST_HEAD] = b.head;
    for (int a = 0; a < ST_N; a++) b.stamp[a] = stamps + (b.arr[a] - mem), b.nadd[a] = 0, b.nmod[a] = INT64_MAX;
    /* weight slots advance by one (of D), K/V slots by a layer's micro-batches (of D nb), host caches
     * by a layer's micro-batches; hidden states and heads are per micro-batch */
    b.nadd[ST_WUSER] = 1, b.nmod[ST_WUSER] = ly->D;
    b.nadd[ST_SLOTFFN] = b.nadd[ST_SLOTWB] = ly->nb, b.nmod[ST_SLOTFFN] = b.nmod[ST_SLOTWB] = nslots;
    b.nadd[ST_CACHEWB] = ly->nb;
    b.kvb = (double)kv_model_kv_bytes_token_layer(m), b.actb = (double)kv_model_act_bytes_token(m);
    b.pe = kv_dtype_bytes(m->dtype);
    b.kvs = ly->kv_st, b.acts = ly->act_st;
    kv_graph_split_init(&b.sk, m, pl, ly);
    kv_status st = KV_OK;
    if (!pl->no_prefill && !pl->paper_model)
        for (int j = 0; j < ly->L && !st; j++, b.g++)
            for (int k = 0; k < ly->nb && !st; k++) st = prefill_one(&b, j, k);
    int T = kv_plan_steps(pl);
    for (int t = 0; t < T && !st; t++)
        for (int j = 0; j < ly->L && !st; j++, b.g++) {
            if (layer_repeats(&b, t, j)) {
                st = repeat_layer(&b);
                b.v += ly->nb;
                continue;
            }
            /* a layer that can be a template is built with its state reads and writes logged */
            b.logging = !sink->exact && !b.norepeat && j >= 1 && j <= ly->L - 3;
            if (b.logging) {
                if (++b.serial == (1u << 31)) { /* stamps from 2^31 layers ago would look current */
                    memset(stamps, 0, n * sizeof *stamps);
                    b.serial = 1;
                }
                b.nlg = b.ntm = 0, b.lbad = 0;
            }
            for (int k = 0; k < ly->nb && !st; k++, b.v++) st = decode_one(&b, t, j, k);
            int ok = b.logging && !b.lbad;
            b.logging = 0;
            b.tm_step = ok ? t : -1, b.tm_layer = ok ? j : -1;
        }
    free(mem), free(stamps), free(b.lg), free(b.tm);
    if (st == KV_ENOMEM) return kv_errorf(KV_ENOMEM, "graph: out of memory for ops");
    return st;
}

int32_t kv_graph_list_emit(void *ctx, const kv_gop *op) {
    kv_graph_list *g = ctx;
    if (g->n == g->cap) {
        int32_t nc = g->cap ? 2 * g->cap : 1024;
        kv_gop *q = realloc(g->ops, (size_t)nc * sizeof *q);
        if (!q) return -1;
        g->ops = q, g->cap = nc;
    }
    g->ops[g->n] = *op;
    return g->n++;
}

void kv_graph_list_free(kv_graph_list *g) {
    free(g->ops);
    g->ops = NULL;
    g->n = g->cap = 0;
}
