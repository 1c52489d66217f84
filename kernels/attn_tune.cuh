/* Decode attention with a plan chosen by the caller (kernels/attn_split.h), for measuring the
 * partition and load-depth choices (bench/attn_tune.cu) that kvpr_attention makes by itself. */
#ifndef KVPR_ATTN_TUNE_CUH
#define KVPR_ATTN_TUNE_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include "attn_split.h"

/* Blocks of the flash-decoding kernel for (tpp, g, u) resident per multiprocessor (0 if unknown). */
int kvpr_attention_occupancy(int tpp, int g, int u);

/* Runs plan p; ws holds p->splits split results (kattn_ws_per_split each) when p->splits > 1. */
cudaError_t kvpr_attention_plan(const kattn_plan *p, const __half *q, const __half *kv, __half *out, float *ws, int B, int ctx, int nh,
                                int nkv, int d, cudaStream_t s);

#endif
