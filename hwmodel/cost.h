/* hw_cost: time of copies, GEMMs, attention and whole decode layers on a profile.
 * All times in seconds (double); the simulator turns them into integer picoseconds. */
#ifndef HW_COST_H
#define HW_COST_H

#include "../core/model.h"
#include "profile.h"

typedef enum { HW_H2D = 0, HW_D2H = 1 } hw_dir;

/* A host-device copy: alpha + bytes / (B * eff(bytes)), B the pinned or pageable plateau,
 * scaled by the duplex factor when the other direction is copying at the same time. */
double hw_copy_time(const hw_profile *p, hw_dir dir, double bytes, int pageable, int duplex);
/* Effective bandwidth of a copy of `bytes` (bytes / time). */
double hw_copy_bw(const hw_profile *p, hw_dir dir, double bytes, int pageable, int duplex);

/* GEMM (M x K) * (K x N), elements of `elem` bytes, fp32 accumulate:
 * max(2MKN / (peak * eff(M)), bytes / (hbm_bw * hbm_eff)) + launch (no memory floor if the profile
 * says so). */
double hw_gemm_time(const hw_profile *p, double M, double K, double N, int elem);

/* Decode attention on the GPU for `batch` sequences over `ctx` cached positions plus the new
 * one: memory-bound, reads all of K and V. */
double hw_attn_time(const hw_profile *p, const kv_model *m, int batch, int ctx);
/* The same attention run by the CPU over CPU-resident K/V. */
double hw_cpu_attn_time(const hw_profile *p, const kv_model *m, int batch, int ctx);

/* Recomputing K and V of `tokens` prefix tokens per sequence, `batch` sequences, one layer:
 * one GEMM X[b*l, h] * [W_K W_V][h, 2*kv_dim]. */
double hw_recompute_time(const hw_profile *p, const kv_model *m, int batch, int tokens);

/* One decode layer's GPU work, weights and K/V resident. */
typedef struct {
    double qkv, attn, out, mlp, other; /* other: norms, residuals, activation */
    double total;
} hw_layer_cost;
hw_layer_cost hw_decode_layer(const hw_profile *p, const kv_model *m, int batch, int ctx);

/* One layer of the prompt pass for `batch` sequences of `prompt` tokens: GEMMs with
 * M = batch x prompt, causal attention over the prompt (compute-bound at these sizes: the GEMM
 * rate for M = prompt, or reading Q, K, V once where memory-bound). */
hw_layer_cost hw_prefill_layer(const hw_profile *p, const kv_model *m, int batch, int prompt);
/* Final norm and LM head of one position for `batch` sequences. */
double hw_head_time(const hw_profile *p, const kv_model *m, int batch);

/* The paper's per-layer cost model (method.md section 3) on a profile's plateau link
 * bandwidth and peak rate: T(l) = t_act + max(t_rec, t_kv). */
typedef struct {
    double t_act, t_kv, t_rec, total;
} hw_paper_cost;
hw_paper_cost hw_paper_layer(const hw_profile *p, const kv_model *m, int batch, int ctx, int l);
/* l* = s p v_gpu / (2 h v_com + p v_gpu), real-valued. */
double hw_paper_lstar(const hw_profile *p, const kv_model *m, int ctx);


/* The split the authors' runtime uses: l* from the final length (prompt + gen), rounded, and
 * capped at the prompt (only prompt tokens have stored activations). */
int hw_paper_runtime_split(const hw_profile *p, const kv_model *m, int prompt, int gen);
#endif
