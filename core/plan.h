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
    KV_OP_COUNT
} kv_op;

typedef enum { KV_RES_H2D = 0, KV_RES_D2H, KV_RES_GPU, KV_RES_CPU, KV_RES_COUNT } kv_resource;

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
} kv_plan;

void kv_plan_defaults(kv_plan *p);
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
