/* CUDA kernels of the engine. Each has a double-precision CPU reference in kernels/ref.c and a
 * test (kvpr-engine selftest) comparing the two with a stated tolerance. */
#ifndef KVPR_KERNELS_CUH
#define KVPR_KERNELS_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>

/* Decode attention, one block per (query head, sequence), four warps; each warp streams a quarter
 * of the positions with an online softmax, then the warps combine. d <= 256. */
cudaError_t kvpr_attention(const __half *q, const __half *kv, __half *out, int B, int ctx, int nh, int nkv, int d,
                           cudaStream_t s);
/* act 1: ReLU (out may be x); act 2: out = silu(gate) * up from rows [gate | up]. */
cudaError_t kvpr_activate(const __half *x, __half *out, int rows, int cols, int act, cudaStream_t s);

/* out[r] = x[r] / sqrt(mean(x[r]^2) + 1e-6), one block per row */
cudaError_t kvpr_rmsnorm(const __half *x, __half *out, int rows, int cols, cudaStream_t s);

#endif
