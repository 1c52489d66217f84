// 4-bit group-wise quantisation (--compress): FlexGen's scheme (groups of 64, asymmetric min/max)
// in the layout of sched/graph.h. The arithmetic is engine/host_quant.c's, operation for operation
// (IEEE division, explicit fma), so the host backend and the GPU agree; kernels/ref.c is the
// double reference both are tested against (kvpr-engine selftest).
#include "kernels.cuh"

#define QG 64
#define QB 36

__device__ static inline int code_of(float v, float m0, float step) {
    float c = step > 0.f ? floorf((v - m0) / step + 0.5f) : 0.f;
    return c < 0.f ? 0 : c > 15.f ? 15 : (int)c;
}

// inner == 1 (K/V along the head dimension, activations along hidden): one warp per group, each
// lane two neighbouring values and one byte of codes, so loads and stores are coalesced.
__global__ void quant_warp_k(const __half *x, unsigned char *q, size_t outer, int G) {
    int ngrp = (G + QG - 1) / QG, lane = threadIdx.x & 31;
    size_t ngroups = outer * (size_t)ngrp, wid = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    size_t nw = (size_t)gridDim.x * blockDim.x / 32;
    for (size_t g = wid; g < ngroups; g += nw) {
        size_t o = g / ngrp;
        int gr = (int)(g % ngrp), n = G - gr * QG < QG ? G - gr * QG : QG, j = 2 * lane;
        const __half *xs = x + o * G + (size_t)gr * QG;
        float a = j < n ? __half2float(xs[j]) : 0.f, b = j + 1 < n ? __half2float(xs[j + 1]) : 0.f;
        float mn = j < n ? a : INFINITY, mx = j < n ? a : -INFINITY;
        if (j + 1 < n) mn = fminf(mn, b), mx = fmaxf(mx, b);
        for (int off = 16; off > 0; off >>= 1) {
            mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, off));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        }
        __half sh = __float2half((mx - mn) / 15.0f), mh = __float2half(mn);
        float step = __half2float(sh), m0 = __half2float(mh);
        unsigned char *p = q + g * QB;
        int c0 = j < n ? code_of(a, m0, step) : 0, c1 = j + 1 < n ? code_of(b, m0, step) : 0;
        p[lane] = (unsigned char)(c0 | c1 << 4);
        if (lane == 0) {
            *(__half *)(p + 32) = sh;
            *(__half *)(p + 34) = mh;
        }
    }
}

__global__ void dequant_warp_k(const unsigned char *q, __half *x, size_t outer, int G) {
    int ngrp = (G + QG - 1) / QG, lane = threadIdx.x & 31;
    size_t ngroups = outer * (size_t)ngrp, wid = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    size_t nw = (size_t)gridDim.x * blockDim.x / 32;
    for (size_t g = wid; g < ngroups; g += nw) {
        size_t o = g / ngrp;
        int gr = (int)(g % ngrp), n = G - gr * QG < QG ? G - gr * QG : QG, j = 2 * lane;
        const unsigned char *p = q + g * QB;
        float step = __half2float(*(const __half *)(p + 32)), m0 = __half2float(*(const __half *)(p + 34));
        unsigned char c = p[lane];
        __half *xs = x + o * G + (size_t)gr * QG;
        if (j < n) xs[j] = __float2half(__fmaf_rn((float)(c & 15), step, m0));
        if (j + 1 < n) xs[j + 1] = __float2half(__fmaf_rn((float)(c >> 4), step, m0));
    }
}

// inner > 1 (weights [rows][cols] along dimension 0): one thread per group, neighbouring threads
// neighbouring columns, so each of the group's 64 strided reads is coalesced across the warp.
__global__ void quant_col_k(const __half *x, unsigned char *q, size_t outer, int G, int inner) {
    int ngrp = (G + QG - 1) / QG;
    size_t ngroups = outer * (size_t)ngrp * inner;
    for (size_t g = blockIdx.x * (size_t)blockDim.x + threadIdx.x; g < ngroups; g += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(g % inner);
        size_t og = g / inner, o = og / ngrp;
        int gr = (int)(og % ngrp), n = G - gr * QG < QG ? G - gr * QG : QG;
        const __half *xs = x + (o * G + (size_t)gr * QG) * inner + i;
        float mn = INFINITY, mx = -INFINITY;
        for (int j = 0; j < n; j++) {
            float v = __half2float(xs[(size_t)j * inner]);
            mn = fminf(mn, v), mx = fmaxf(mx, v);
        }
        __half sh = __float2half((mx - mn) / 15.0f), mh = __float2half(mn);
        float step = __half2float(sh), m0 = __half2float(mh);
        unsigned char *p = q + g * QB;
        for (int b = 0; b < 32; b++) {
            int j = 2 * b;
            int c0 = j < n ? code_of(__half2float(xs[(size_t)j * inner]), m0, step) : 0;
            int c1 = j + 1 < n ? code_of(__half2float(xs[(size_t)(j + 1) * inner]), m0, step) : 0;
            p[b] = (unsigned char)(c0 | c1 << 4);
        }
        *(__half *)(p + 32) = sh;
        *(__half *)(p + 34) = mh;
    }
}

__global__ void dequant_col_k(const unsigned char *q, __half *x, size_t outer, int G, int inner) {
    int ngrp = (G + QG - 1) / QG;
    size_t ngroups = outer * (size_t)ngrp * inner;
    for (size_t g = blockIdx.x * (size_t)blockDim.x + threadIdx.x; g < ngroups; g += (size_t)gridDim.x * blockDim.x) {
        int i = (int)(g % inner);
        size_t og = g / inner, o = og / ngrp;
        int gr = (int)(og % ngrp), n = G - gr * QG < QG ? G - gr * QG : QG;
        const unsigned char *p = q + g * QB;
        float step = __half2float(*(const __half *)(p + 32)), m0 = __half2float(*(const __half *)(p + 34));
        __half *xs = x + (o * G + (size_t)gr * QG) * inner + i;
        for (int j = 0; j < n; j++) xs[(size_t)j * inner] = __float2half(__fmaf_rn((float)(p[j / 2] >> (4 * (j & 1)) & 15), step, m0));
    }
}

static unsigned blocks_for(size_t threads) {
    size_t b = (threads + 255) / 256;
    return (unsigned)(b < 65535 ? (b ? b : 1) : 65535);
}

cudaError_t kvpr_quant(const __half *x, unsigned char *q, size_t outer, int G, int inner, cudaStream_t s) {
    if (G <= 0 || inner <= 0) return cudaErrorInvalidValue;
    if (outer == 0) return cudaSuccess;
    size_t ngroups = outer * (size_t)((G + QG - 1) / QG) * inner;
    if (inner == 1) quant_warp_k<<<blocks_for(ngroups * 32), 256, 0, s>>>(x, q, outer, G);
    else quant_col_k<<<blocks_for(ngroups), 256, 0, s>>>(x, q, outer, G, inner);
    return cudaGetLastError();
}

cudaError_t kvpr_dequant(const unsigned char *q, __half *x, size_t outer, int G, int inner, cudaStream_t s) {
    if (G <= 0 || inner <= 0) return cudaErrorInvalidValue;
    if (outer == 0) return cudaSuccess;
    size_t ngroups = outer * (size_t)((G + QG - 1) / QG) * inner;
    if (inner == 1) dequant_warp_k<<<blocks_for(ngroups * 32), 256, 0, s>>>(q, x, outer, G);
    else dequant_col_k<<<blocks_for(ngroups), 256, 0, s>>>(q, x, outer, G, inner);
    return cudaGetLastError();
}
