/* kv_graph: the one schedule. A builder turns (model, plan) into the op graph that the simulator
 * times and the engine executes: each op with its kind, queue, keys (step, layer, micro-batch), the
 * rows and sequences it touches, its buffer slot, bytes, FLOPs and its cross-queue dependencies.
 * Program order inside a queue is the order ops are emitted, as on a CUDA stream. Neither consumer
 * knows about policies or layouts: they are decided here, once.
 *
 * The layout (kv_layout) resolves the plan's placement: which weight tensors stay on the GPU (the
 * midpoint rule), how many sequences keep their KV cache on the GPU, where hidden states live, and
 * every buffer's size on the GPU and the CPU. The engine allocates what it says; the simulator
 * checks the same sums against the profile's memory.
 *
 * Ops are handed to a sink one at a time (prefill first, then the decode steps in order), so a
 * consumer can run them as they come and nothing requires the whole graph in memory. */
#ifndef KV_GRAPH_H
#define KV_GRAPH_H

#include <stdint.h>
#include "../core/kv_err.h"
#include "../core/model.h"
#include "../core/plan.h"

#define KV_GRAPH_MAXDEP 8
/* The prompt pass runs its MLP over at most this many rows (tokens x sequences) at a time, so that
 * its intermediate activations stay small beside the weights (as frameworks do by freeing them). */
#define KV_PREFILL_CHUNK 4096
#define KV_MAX_TENSORS 20

/* One weight tensor of a layer, in FlexGen's order. */
typedef struct {
    const char *name;
    int sublayer; /* 0 attention, 1 MLP: the midpoint rule runs over each sublayer's list */
    int kv;       /* 1 for W_K, W_V and their biases (loaded first under --wkv-first) */
    uint64_t elems;
    uint64_t rows; /* dimension 0 (1 for vectors): weights are quantised in groups along it */
    int on_gpu;
} kv_tensor;

typedef struct {
    int L, nb, B, S, D;       /* layers, micro-batches, sequences per micro-batch, final context, prefetch depth */
    int ntensors;
    kv_tensor tensors[KV_MAX_TENSORS];
    double w_layer, w_gpu, w_cpu, wkv_cpu; /* bytes per layer: all, resident, streamed, streamed W_K/W_V */
    int comp_kv, comp_w;      /* --compress in effect: the CPU part of the cache (and activations), streamed weights */
    double w_cpu_st, wkv_cpu_st; /* streamed bytes as stored and moved (packed under comp_w, else w_cpu, wkv_cpu) */
    double kv_st, act_st;     /* bytes per token of the CPU part's K/V and activations as stored and moved */
    double head_bytes;        /* embeddings, positions, final norm and LM head: resident on the GPU */
    int b_gpu, b_cpu;         /* sequences per micro-batch with their KV cache on the GPU / the CPU */
    int hidden_cpu;           /* hidden states live on the CPU between layers */
    int streams_kv;           /* the CPU part of the cache goes to the GPU each step (offload, kvpr, recompute) */
    int cpu_attn;             /* attention over the CPU part runs on the CPU */
    int lmin, lmax;           /* smallest and largest split over the decode steps */
    int act_rows;             /* rows of a stored-activation slot: lmax, or S when new tokens' activations are kept */
    /* memory, bytes */
    double gpu_weights, gpu_wslots, gpu_kv, gpu_kvslots, gpu_actslots, gpu_work, gpu_prefill, gpu_total;
    double cpu_weights, cpu_kv, cpu_act, cpu_hidden, cpu_total;
} kv_layout;

/* 4-bit group-wise quantisation (FlexGen's compression.py: num_bits 4, group_size 64, asymmetric
 * min/max). A tensor viewed as [outer][G][inner] is quantised in groups of up to 64 consecutive
 * indices of G (the last group of a row may be short). Each group is stored as 36 bytes: 32 bytes
 * of 4-bit codes (value j of the group in byte j / 2, the low nibble for even j; a short group's
 * unused codes are zero), then the fp16 step (max - min) / 15 and the fp16 minimum; a value is
 * min + code * step. Groups are ordered (o, group, i), so a range of outer rows is a contiguous
 * range of bytes. K/V: outer = tokens x heads, G = head_dim; activations: G = hidden; weights
 * [rows][cols]: G = rows (dimension 0), inner = cols. 1-D weights stay fp16, as in FlexGen. */
#define KV_QGROUP 64
#define KV_QGROUP_BYTES 36
double kv_quant_bytes(double outer, double G, double inner);
/* Bytes per token and layer of K/V and of a stored activation as they are stored on the CPU and
 * cross the link: packed when the plan compresses the cache, fp16 otherwise. */
double kv_store_kv_bytes(const kv_model *m, int compress);
double kv_store_act_bytes(const kv_model *m, int compress);

/* The layer's weight tensors in FlexGen's order, each with its home under placement wg/wc (percent). */
int kv_layer_tensors(const kv_model *m, double wg, double wc, kv_tensor *out);
kv_status kv_layout_resolve(const kv_model *m, const kv_plan *pl, kv_layout *out);
/* Checks GPU and CPU capacity (bytes); the message names what did not fit. */
kv_status kv_layout_fits(const kv_layout *ly, double gpu_bytes, double cpu_bytes);

typedef struct {
    uint8_t op;       /* kv_op */
    uint8_t queue;    /* kv_queue */
    uint8_t ndeps;
    int32_t step;     /* -1: the prompt pass (prefill) */
    int32_t layer;    /* the LM head has layer = L */
    int32_t mb;
    int32_t seq0, nseq; /* sequences of the micro-batch it covers: [seq0, seq0 + nseq) */
    int32_t row0, row1; /* token rows it moves or recomputes: [row0, row1) */
    int32_t ctx;      /* positions attended to (attention ops), tokens per sequence in the GEMMs otherwise */
    int32_t slot;     /* buffer slot: weights (w_h2d, wkv_h2d) g % D; K/V and activations v % (D * nb); -1 none */
    double bytes, flops;
    int32_t deps[KV_GRAPH_MAXDEP]; /* ids of ops it waits for (on other queues, or any) */
} kv_gop;

typedef struct {
    void *ctx;
    /* Adds an op; returns its id (consecutive ids in emission order: 0, 1, 2, ... or from any
     * start) or -1 with kv_errorf set. */
    int32_t (*emit)(void *ctx, const kv_gop *op);
    /* Optional: adds ops[0..n) at once, each a copy of the op emitted n before it except for its
     * layer (one higher), its buffer slot (the next layer's) and its dependencies (each n higher);
     * returns the first one's id or -1. Without it such ops come one by one through emit. */
    int32_t (*repeat)(void *ctx, const kv_gop *ops, int32_t n);
    int exact;        /* build every layer op by op (no repeated layers: tests compare the two) */
    int64_t repeated; /* out: decode layers that were repeated rather than built */
} kv_graph_sink;

/* The ops whose fields depend on the split l (decode: act_h2d, kv_h2d, recompute and their
 * dequantisations; the prompt pass: its K/V and activation stores and their quantisation), and
 * those fields (rows, context, bytes, FLOPs) set for a fixed split l: the one place the builder
 * takes them from, so a consumer can re-cost a graph at another split. For 0 < l < prompt every
 * split has the same ops and dependencies; only these fields differ. */
int kv_graph_split_op(const kv_gop *o);
/* What the fields are computed from (once per plan), then applied to each op for split l. */
typedef struct {
    const kv_model *m;
    int prompt, b_cpu, latency_kv; /* latency_kv: latency mode streaming the cache (K/V kept only for [l, s)) */
    int streams_kv;
    double kvb, actb, kvs, acts, h, kvd;
} kv_split_k;
void kv_graph_split_init(kv_split_k *c, const kv_model *m, const kv_plan *pl, const kv_layout *ly);
void kv_graph_split_apply(const kv_split_k *c, kv_gop *o, int l);

/* Emits the whole run: the prompt pass unless pl->no_prefill, then gen - 1 decode steps. A decode
 * layer whose ops would be the previous layer's shifted by one layer (the same ops, each
 * depending on what the previous layer's counterpart depended on, one layer on) is not built op
 * by op: the previous layer's ops are shifted and emitted again (sink->repeat when the sink has
 * it). The builder tells such a layer from the state it reads (logged while the previous layer
 * was built), so the ops are the same either way (sink->exact builds every layer: tests compare). */
kv_status kv_graph_build(const kv_model *m, const kv_plan *pl, const kv_layout *ly, kv_graph_sink *sink);

/* A sink that keeps every op (tests, the engine's op list check). */
typedef struct {
    kv_gop *ops;
    int32_t n, cap;
} kv_graph_list;
int32_t kv_graph_list_emit(void *ctx, const kv_gop *op);
void kv_graph_list_free(kv_graph_list *g);

#endif
