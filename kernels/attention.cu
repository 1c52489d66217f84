// Decode attention: softmax(q K^T / sqrt(d)) V over ctx positions for every (sequence, head).
// K/V rows are position-major ([pos][B][2*nkv*d]) so a layer's suffix crosses PCIe as one copy.
#include <math.h>
#include "kernels.cuh"

#define WARPS 4
#define MAXDPL 8 /* dims per lane: d <= 256 */

__global__ void attn_decode(const __half *__restrict__ q, const __half *__restrict__ kv, __half *__restrict__ out, int B,
                            int ctx, int nh, int nkv, int d, float scale) {
    int h = blockIdx.x, b = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int row = 2 * nkv * d, kh = h / (nh / nkv);
    float qv[MAXDPL], acc[MAXDPL];
    const __half *qp = q + ((size_t)b * nh + h) * d;
#pragma unroll
    for (int i = 0; i < MAXDPL; i++) {
        int j = lane + 32 * i;
        qv[i] = j < d ? __half2float(qp[j]) : 0.f;
        acc[i] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int p = warp; p < ctx; p += WARPS) {
        const __half *k = kv + ((size_t)p * B + b) * row + (size_t)kh * d;
        const __half *v = k + (size_t)nkv * d;
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < MAXDPL; i++) {
            int j = lane + 32 * i;
            if (j < d) dot += qv[i] * __half2float(k[j]);
        }
        for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        float sc = dot * scale, mn = fmaxf(m, sc), corr = __expf(m - mn), pe = __expf(sc - mn);
        l = l * corr + pe;
#pragma unroll
        for (int i = 0; i < MAXDPL; i++) {
            int j = lane + 32 * i;
            acc[i] = acc[i] * corr + (j < d ? pe * __half2float(v[j]) : 0.f);
        }
        m = mn;
    }
    __shared__ float sm[WARPS], sl[WARPS];
    __shared__ float sacc[WARPS][MAXDPL * 32];
    if (lane == 0) sm[warp] = m, sl[warp] = l;
#pragma unroll
    for (int i = 0; i < MAXDPL; i++) sacc[warp][lane + 32 * i] = acc[i];
    __syncthreads();
    if (warp != 0) return;
    float M = -INFINITY;
    for (int w = 0; w < WARPS; w++) M = fmaxf(M, sm[w]);
    float L = 0.f, f[WARPS];
    for (int w = 0; w < WARPS; w++) f[w] = sl[w] > 0.f ? __expf(sm[w] - M) : 0.f, L += sl[w] * f[w];
    __half *op = out + ((size_t)b * nh + h) * d;
    for (int i = 0; i < MAXDPL; i++) {
        int j = lane + 32 * i;
        if (j >= d) break;
        float o = 0.f;
        for (int w = 0; w < WARPS; w++) o += sacc[w][j] * f[w];
        op[j] = __float2half(o / L);
    }
}

cudaError_t kvpr_attention(const __half *q, const __half *kv, __half *out, int B, int ctx, int nh, int nkv, int d,
                           cudaStream_t s) {
    if (d > 32 * MAXDPL || d <= 0 || nkv <= 0 || nh % nkv != 0 || ctx <= 0 || B <= 0) return cudaErrorInvalidValue;
    dim3 grid((unsigned)nh, (unsigned)B);
    attn_decode<<<grid, 32 * WARPS, 0, s>>>(q, kv, out, B, ctx, nh, nkv, d, 1.0f / sqrtf((float)d));
    return cudaGetLastError();
}
