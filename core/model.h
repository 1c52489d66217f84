/* kv_model: transformer shapes and the sizes and FLOPs derived from them.
 * One vocabulary for the scheduler, the simulator and the engine. */
#ifndef KV_MODEL_H
#define KV_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "kv_err.h"

typedef enum { KV_DT_FP16 = 0, KV_DT_BF16, KV_DT_FP32 } kv_dtype;

typedef struct {
    char name[64];
    char family[16];   /* "opt", "llama", "mistral", or the config's model_type */
    int n_layers;
    int hidden;        /* h */
    int n_heads;
    int n_kv_heads;    /* == n_heads for multi-head attention */
    int head_dim;      /* usually hidden / n_heads */
    int ffn;           /* MLP inner size */
    int vocab;
    int max_pos;       /* learned positional embeddings (OPT), 0 if rotary */
    int gated_mlp;     /* 1: SwiGLU, three ffn matrices (gate, up, down) */
    int bias;          /* 1: linear layers carry biases (OPT) */
    int tied_embeddings;
    kv_dtype dtype;
    /* attention-only biases where the rest has none: 1 on Q, K, V (Qwen2), 2 on Q, K, V and O (Llama's
     * attention_bias); 0 otherwise (bias = 1 already counts every linear layer's) */
    int attn_bias;
    int ctx_max;       /* max_position_embeddings: the longest context the model was trained for; 0 unknown */
} kv_model;

/* Built-in models; name lookup ignores case ("opt-6.7b", "OPT-6.7B"). */
int kv_model_builtin_count(void);
const kv_model *kv_model_builtin(int i);
kv_status kv_model_find(const char *name, kv_model *out);
/* A built-in name, or a path to a Hugging Face config.json. */
kv_status kv_model_resolve(const char *name_or_path, kv_model *out);
kv_status kv_model_load_hf(const char *path, kv_model *out);
/* The same from text in memory; path names it in messages. */
kv_status kv_model_parse_hf(const char *text, size_t len, const char *path, kv_model *out);
kv_status kv_model_validate(const kv_model *m);

int kv_dtype_bytes(kv_dtype d);
const char *kv_dtype_name(kv_dtype d);

/* Derived quantities. All sizes in bytes, FLOPs as doubles (they exceed 2^53 only for
 * absurd configurations, where relative precision is all that matters). */
uint64_t kv_model_params_layer(const kv_model *m);
uint64_t kv_model_params_total(const kv_model *m);
uint64_t kv_model_bytes_layer(const kv_model *m);
uint64_t kv_model_bytes_total(const kv_model *m);
int kv_model_kv_dim(const kv_model *m);                 /* n_kv * head_dim */
uint64_t kv_model_kv_bytes_token_layer(const kv_model *m);  /* 2 * n_kv * d * p */
uint64_t kv_model_act_bytes_token(const kv_model *m);       /* h * p */
/* FLOPs of one decode step of one layer for `batch` sequences at context `ctx`
 * (projections, attention over ctx+1 positions, MLP). */
double kv_model_decode_flops_layer(const kv_model *m, int batch, int ctx);
/* FLOPs to recompute K and V of `tokens` tokens in one layer: 2 * tokens * h * 2*kv_dim. */
double kv_model_recompute_flops(const kv_model *m, int64_t tokens);

/* Overflow-checked size arithmetic; returns KV_EOVERFLOW with a message naming `what`. */
kv_status kv_mul_u64(uint64_t a, uint64_t b, uint64_t *out, const char *what);

#endif
