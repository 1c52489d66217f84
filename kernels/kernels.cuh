/* CUDA kernels of the engine. Each has a double-precision CPU reference in kernels/ref.c and a
 * test (kvpr-engine selftest) comparing the two with a stated tolerance. */
#ifndef KVPR_KERNELS_CUH
#define KVPR_KERNELS_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>

/* Scratch for decode attention's split results, owned by the caller per stream (two launches on
 * different streams must not share one), and the multiprocessor count the split is sized for. */
typedef struct {
    float *buf;
    size_t bytes;
    int sms;
} kvpr_attn_ws;

/* Decode attention (kernels/attn_split.h): flash-decoding with 16-byte loads, the query heads of a
 * GQA group sharing one read of K/V, the context split across blocks when the batch alone would
 * not fill the device (ws NULL or too small: fewer or no splits). d <= 256. */
cudaError_t kvpr_attention(const __half *q, const __half *kv, __half *out, int B, int ctx, int nh, int nkv, int d,
                           const kvpr_attn_ws *ws, cudaStream_t s);
/* act 1: ReLU (out may be x); act 2: out = silu(gate) * up from rows [gate | up]. */
cudaError_t kvpr_activate(const __half *x, __half *out, int rows, int cols, int act, cudaStream_t s);

/* out[r] = x[r] / sqrt(mean(x[r]^2) + 1e-6), one block per row */
cudaError_t kvpr_rmsnorm(const __half *x, __half *out, int rows, int cols, cudaStream_t s);

/* 4-bit group-wise quantisation (--compress; layout in sched/graph.h): x [outer][G][inner] in
 * groups of up to 64 along G, 36 bytes per group (codes, fp16 step, fp16 minimum) */
cudaError_t kvpr_quant(const __half *x, unsigned char *q, size_t outer, int G, int inner, cudaStream_t s);
cudaError_t kvpr_dequant(const unsigned char *q, __half *x, size_t outer, int G, int inner, cudaStream_t s);

#endif
