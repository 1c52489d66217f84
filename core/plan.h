/* kv_plan: what a decode run does, independent of who executes it. The simulator and the
 * engine both expand a plan into the same ops (names below), so their timelines join on
 * (step, layer, micro-batch, op). */
#ifndef KV_PLAN_H
#define KV_PLAN_H

#include <stdint.h>
#include "kv_err.h"
#include "model.h"

typedef enum { KV_MODE_LATENCY = 0, KV_MODE_THROUGHPUT } kv_mode;

typedef enum {
    KV_POL_GPU = 0,   /* everything resident on the GPU */
    KV_POL_OFFLOAD,   /* KV on the CPU, streamed each layer (l = 0) */
    KV_POL_KVPR,      /* activations of [0,l) + recompute, K/V of [l,s), concurrently */
    KV_POL_RECOMPUTE, /* l = every token with a stored activation */
    KV_POL_CPU_ATTN,  /* attention on the CPU over CPU-resident KV */
    KV_POL_COUNT
} kv_policy;

/* Op kinds; the names are the `op` column of spans. */
typedef enum {
    KV_OP_W_H2D = 0, /* layer weights (throughput mode), or W_K/W_V first when split */
    KV_OP_WKV_H2D,   /* W_K, W_V loaded first so recompute can start early */
    KV_OP_ACT_H2D,   /* stored activations of the prefix [0, l) */
    KV_OP_KV_H2D,    /* stored K/V of [l, s) */
    KV_OP_RECOMPUTE, /* K/V of the prefix from activations */
    KV_OP_QKV,       /* norm + q/k/v projection of the new token */
    KV_OP_ATTN,      /* decode attention on the GPU */
    KV_OP_FFN,       /* output projection, norm, MLP */
    KV_OP_KV_D2H,    /* write-back of the new token's K/V (and activation when kept) */
    KV_OP_Q_D2H,     /* cpu-attn: q of the new token to the CPU */
    KV_OP_CPU_ATTN,  /* cpu-attn: attention on the CPU */
    KV_OP_O_H2D,     /* cpu-attn: attention output back to the GPU */
    KV_OP_HID_H2D,   /* hidden state of a micro-batch from the CPU (activations placed on the CPU) */
    KV_OP_HID_D2H,   /* and back after the layer */
    KV_OP_ACT_D2H,   /* prefill (kvpr): the prompt's activations of [0, l) to their home on the CPU */
    KV_OP_HEAD,      /* final norm + LM head of the last position, once per step and micro-batch */
    /* --compress (4-bit group-wise, FlexGen's scheme): GPU kernels around the packed copies */
    KV_OP_DQ_W,      /* dequantise a streamed layer's weights after their load */
    KV_OP_DQ_ACT,    /* dequantise the stored activations of [0, l) before recomputation */
    KV_OP_DQ_KV,     /* dequantise the stored K/V of [l, s) before attention */
    KV_OP_QUANT,     /* quantise the new K/V (and activations) before their write-back */
    KV_OP_COUNT
} kv_op;

/* --compress: what is stored 4-bit (groups of 64, asymmetric min/max, fp16 step and minimum per
 * group, as FlexGen's compression.py). KV covers the CPU part of the cache and, for KVPR, the stored
 * activations (the authors allocate them 4-bit too); W the weights streamed from the CPU. */
enum { KV_COMP_NONE = 0, KV_COMP_KV = 1, KV_COMP_W = 2, KV_COMP_BOTH = 3 };
const char *kv_compress_name(int c);
kv_status kv_compress_parse(const char *s, int *out);

typedef enum { KV_RES_H2D = 0, KV_RES_D2H, KV_RES_GPU, KV_RES_CPU, KV_RES_COUNT } kv_resource;

/* Queues: in-order streams as CUDA runs them. Several queues load one link direction and share it
 * (the simulator splits a direction's bandwidth fairly among the copies in flight); each queue
 * maps to one engine stream. The first four equal the resource they use. */
typedef enum {
    KV_Q_CACHE = 0, /* h2d: K/V and stored activations */
    KV_Q_STORE,     /* d2h: write-backs, q to the CPU, hidden states out */
    KV_Q_COMPUTE,   /* gpu */
    KV_Q_CPU,       /* cpu attention */
    KV_Q_WEIGHT,    /* h2d: streamed weights */
    KV_Q_HIDDEN,    /* h2d: hidden states in, cpu-attn output back */
    KV_Q_COUNT
} kv_queue;
/* The resource a queue uses: inline, since the simulator asks for every task it adds. */
static inline kv_resource kv_queue_res(kv_queue q) {
    return q == KV_Q_STORE ? KV_RES_D2H : q == KV_Q_COMPUTE ? KV_RES_GPU : q == KV_Q_CPU ? KV_RES_CPU : KV_RES_H2D;
}
const char *kv_queue_name(kv_queue q);

/* Where tensors live, FlexGen's --percent: weights (w), KV cache (c) and activations (h, the
 * hidden states between layers) on the GPU (g) and the CPU (c), in percent. Weights are placed per
 * tensor by the midpoint rule, the cache by sequence, activations whole. Disk (the remainder to
 * 100) is not modelled. */
typedef struct {
    int set; /* 0: the mode's and policy's default layout */
    double wg, wc, cg, cc, hg, hc;
} kv_percent;

/* Named layouts of the systems users compare against (offloading.md section 1). */
typedef enum {
    KV_PRESET_NONE = 0,
    KV_PRESET_HF_OFFLOAD, /* weights GPU, KV CPU pinned, next layer prefetched, attention on the GPU */
    KV_PRESET_ACCELERATE, /* weights CPU pageable, copied synchronously before each layer; KV GPU */
    KV_PRESET_ZERO,       /* ZeRO-Inference: weights CPU pinned, next layer prefetched; KV GPU */
    KV_PRESET_FLEXGEN,    /* zig-zag block, weights and cache on the CPU, attention on the CPU */
    KV_PRESET_KVPR,       /* weights GPU, activations of [0, l) and K/V of [l, s) on the CPU */
    KV_PRESET_COUNT
} kv_preset;
const char *kv_preset_name(kv_preset p);
const char *kv_preset_about(kv_preset p);
kv_status kv_preset_parse(const char *s, kv_preset *out);
/* Parses "WG WC CG CC HG HC" (spaces or commas). */
kv_status kv_percent_parse(const char *s, kv_percent *out);

const char *kv_op_name(kv_op op);
const char *kv_res_name(kv_resource r);
const char *kv_mode_name(kv_mode m);
const char *kv_policy_name(kv_policy p);
kv_status kv_mode_parse(const char *s, kv_mode *out);
kv_status kv_policy_parse(const char *s, kv_policy *out);

typedef struct {
    kv_mode mode;
    kv_policy policy;
    int batch;        /* latency: the batch; throughput: gbs (sequences per micro-batch) */
    int nb;           /* micro-batches per block (throughput mode), 1 in latency mode */
    int prompt, gen;  /* decode steps = gen - 1; step t attends over prompt + t cached tokens */
    int split;        /* fixed l for kvpr (-1: choose per the paper's runtime rule) */
    int *split_steps; /* optional: l per decode step (gen - 1 entries), overrides split */
    int prefetch;     /* buffers in flight: 2 = double buffering; 1 = no cross-layer prefetch */
    int keep_act;     /* also write back each new token's activation, so it can be recomputed */
    int wkv_first;    /* throughput: load W_K, W_V before the rest of the layer's weights */
    int pageable;     /* host buffers are pageable, not pinned */
    int paper_model;  /* no cross-layer prefetch, no overheads, only t_act + max(t_rec, t_kv) */
    int layers;       /* simulate only the first N layers (0: all) */
    kv_percent percent; /* placement (percent.set = 0: the default layout) */
    kv_preset preset;   /* the named layout the plan was made from (for reports) */
    int no_prefill;   /* 1: decode only, no prompt pass */
    int compress;     /* KV_COMP_* bits (0: fp16 everywhere) */
} kv_plan;

void kv_plan_defaults(kv_plan *p);
/* Sets mode, policy, placement, prefetch and pageable as the named system runs. */
void kv_plan_preset(kv_plan *p, kv_preset preset);
/* The placement in effect: percent if set, else the default of the mode and policy. */
kv_percent kv_plan_percent(const kv_plan *p);
/* Checks ranges and overflow of every size the plan implies for model m. */
kv_status kv_plan_validate(const kv_plan *p, const kv_model *m);
int kv_plan_steps(const kv_plan *p);
int kv_plan_layers(const kv_plan *p, const kv_model *m);
/* Tokens whose activation is stored on the CPU at step t (the prompt, plus generated tokens when
 * keep_act), and the split actually used at step t (clamped to that). */
int kv_plan_act_avail(const kv_plan *p, int step);
int kv_plan_split_at(const kv_plan *p, int step);
/* JSON of the plan for the runs table (malloc'ed), and back (split_steps malloc'ed, caller frees). */
char *kv_plan_json(const kv_plan *p);
kv_status kv_plan_from_json(const char *text, kv_plan *p);

#endif
