// Decode attention: softmax(q K^T / sqrt(d)) V over ctx positions for every (sequence, head).
// K/V rows are position-major ([pos][B][2*nkv*d]) so a layer's suffix crosses PCIe as one copy.
// The main path is flash-decoding as kernels/attn_split.h describes it; rows that cannot be read
// as 16-byte vectors (d not a multiple of 8, or unaligned pointers) take the simple kernel below.
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include "attn_split.h"
#include "attn_tune.cuh"
#include "kernels.cuh"

/* ---- simple kernel: one block per (query head, sequence), four warps over the positions ---- */

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

/* ---- flash-decoding ------------------------------------------------------------------------ */

__device__ __forceinline__ void h8_to_f(const uint4 &r, float f[8]) {
    const __half2 *h = reinterpret_cast<const __half2 *>(&r);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __half22float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

// TPP threads per position, G query heads per pass, U positions per group loaded before use (loads
// in flight; fewer when G's registers are many). ws: split results, [B*nh][splits][d] partial sums
// then [B*nh][splits][2] (m, l); unused when splits == 1 (the block writes out directly).
template <int TPP, int G, int U>
__global__ void __launch_bounds__(KATTN_THREADS)
    attn_split_k(const __half *__restrict__ q, const __half *__restrict__ kv, __half *__restrict__ out, float *__restrict__ ws,
                 int B, int ctx, int nh, int nkv, int d, int passes, int chunk, int splits, float qscale) {
    constexpr int GROUPS = KATTN_THREADS / TPP;
    const int split = blockIdx.x % splits, b = blockIdx.x / splits;
    const int kh = blockIdx.y / passes, pass = blockIdx.y % passes;
    const int grp = nh / nkv, h0 = kh * grp + pass * G, nhp = min(G, grp - pass * G);
    const int tid = threadIdx.x, lane = tid % TPP, w = tid / TPP;
    const bool active = lane * 8 < d; // lanes past d (d = 80 on 16 lanes, say) carry zeros
    const int p0 = split * chunk, p1 = min(ctx, p0 + chunk);

    float qf[G][8], m[G], l[G], acc[G][8];
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY, l[g] = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) qf[g][i] = 0.f, acc[g][i] = 0.f;
        if (g < nhp && active) {
            uint4 r = *reinterpret_cast<const uint4 *>(q + ((size_t)b * nh + h0 + g) * d + lane * 8);
            h8_to_f(r, qf[g]);
#pragma unroll
            for (int i = 0; i < 8; i++) qf[g][i] *= qscale;
        }
    }
    const size_t stride = (size_t)B * 2 * nkv * d; // elements from one position's row to the next
    const __half *kp = kv + (size_t)b * 2 * nkv * d + (size_t)kh * d + lane * 8;
    const __half *vp = kp + (size_t)nkv * d;
    // pb is the same for every thread of the block, so the shuffles below see full warps
    for (int pb = p0; pb < p1; pb += GROUPS * U) {
        uint4 kr[U], vr[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int p = pb + u * GROUPS + w;
            if (active && p < p1) {
                kr[u] = __ldg(reinterpret_cast<const uint4 *>(kp + (size_t)p * stride));
                vr[u] = __ldg(reinterpret_cast<const uint4 *>(vp + (size_t)p * stride));
            } else {
                kr[u] = make_uint4(0u, 0u, 0u, 0u);
                vr[u] = make_uint4(0u, 0u, 0u, 0u);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int p = pb + u * GROUPS + w;
            float kf[8], vf[8], s[G];
            h8_to_f(kr[u], kf);
            h8_to_f(vr[u], vf);
#pragma unroll
            for (int g = 0; g < G; g++) {
                s[g] = 0.f;
#pragma unroll
                for (int i = 0; i < 8; i++) s[g] = fmaf(qf[g][i], kf[i], s[g]);
            }
#pragma unroll
            for (int off = TPP / 2; off > 0; off >>= 1)
#pragma unroll
                for (int g = 0; g < G; g++) s[g] += __shfl_xor_sync(0xffffffffu, s[g], off);
            if (p < p1) {
#pragma unroll
                for (int g = 0; g < G; g++) {
                    float mn = fmaxf(m[g], s[g]), corr = exp2f(m[g] - mn), pe = exp2f(s[g] - mn);
                    l[g] = l[g] * corr + pe;
#pragma unroll
                    for (int i = 0; i < 8; i++) acc[g][i] = fmaf(pe, vf[i], acc[g][i] * corr);
                    m[g] = mn;
                }
            }
        }
    }
    // merge the position groups: every lane of a group holds the same m and l
    __shared__ float sm_m[G][GROUPS], sm_l[G][GROUPS], sm_M[G], sm_L[G];
    __shared__ __align__(16) float sm_acc[G][KATTN_THREADS * 8]; // [g][w * TPP * 8 + j]: dim j of group w
    if (lane == 0) {
#pragma unroll
        for (int g = 0; g < G; g++) sm_m[g][w] = m[g], sm_l[g][w] = l[g];
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
        float4 *dst = reinterpret_cast<float4 *>(&sm_acc[g][tid * 8]);
        dst[0] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
        dst[1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
    }
    __syncthreads();
    if (tid < nhp) {
        float M = -INFINITY, L = 0.f;
        for (int ww = 0; ww < GROUPS; ww++)
            if (sm_l[tid][ww] > 0.f) M = fmaxf(M, sm_m[tid][ww]);
        for (int ww = 0; ww < GROUPS; ww++)
            if (sm_l[tid][ww] > 0.f) L += sm_l[tid][ww] * exp2f(sm_m[tid][ww] - M);
        sm_M[tid] = M, sm_L[tid] = L;
    }
    __syncthreads();
    for (int idx = tid; idx < nhp * d; idx += KATTN_THREADS) {
        const int g = idx / d, j = idx % d;
        const float M = sm_M[g];
        float a = 0.f;
        for (int ww = 0; ww < GROUPS; ww++)
            if (sm_l[g][ww] > 0.f) a = fmaf(sm_acc[g][ww * TPP * 8 + j], exp2f(sm_m[g][ww] - M), a);
        const size_t bh = (size_t)b * nh + h0 + g;
        if (splits == 1) out[bh * d + j] = __float2half(a / sm_L[g]);
        else ws[(bh * splits + split) * d + j] = a;
    }
    if (splits > 1 && tid < nhp) {
        const size_t bh = (size_t)b * nh + h0 + tid;
        float *ws_ml = ws + (size_t)B * nh * splits * d;
        ws_ml[(bh * splits + split) * 2] = sm_M[tid];
        ws_ml[(bh * splits + split) * 2 + 1] = sm_L[tid];
    }
}

// One block per (sequence, head): merges the splits' partial results.
__global__ void attn_combine_k(const float *__restrict__ ws, __half *__restrict__ out, int B, int nh, int d, int splits) {
    const size_t bh = blockIdx.x;
    const float *ws_acc = ws, *ml = ws + (size_t)B * nh * splits * d + bh * splits * 2;
    __shared__ float f[KATTN_MAX_SPLITS], linv;
    if (threadIdx.x == 0) {
        float M = -INFINITY, L = 0.f;
        for (int s = 0; s < splits; s++)
            if (ml[2 * s + 1] > 0.f) M = fmaxf(M, ml[2 * s]);
        for (int s = 0; s < splits; s++) {
            f[s] = ml[2 * s + 1] > 0.f ? exp2f(ml[2 * s] - M) : 0.f;
            L += ml[2 * s + 1] * f[s];
        }
        linv = 1.f / L;
    }
    __syncthreads();
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float a = 0.f;
        for (int s = 0; s < splits; s++) a = fmaf(ws_acc[(bh * splits + s) * d + j], f[s], a);
        out[bh * d + j] = __float2half(a * linv);
    }
}

template <int TPP, int G, int U>
static void launch_u(const kattn_plan &p, const __half *q, const __half *kv, __half *out, float *ws, int B, int ctx, int nh, int nkv,
                     int d, float qscale, cudaStream_t s) {
    dim3 grid((unsigned)(B * p.splits), (unsigned)(nkv * p.passes));
    attn_split_k<TPP, G, U><<<grid, KATTN_THREADS, 0, s>>>(q, kv, out, ws, B, ctx, nh, nkv, d, p.passes, p.chunk, p.splits, qscale);
}

template <int TPP, int G, int U>
static int occ_u() {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, attn_split_k<TPP, G, U>, KATTN_THREADS, 0) != cudaSuccess) {
        (void)cudaGetLastError();
        n = 0;
    }
    return n;
}

// The two load depths compiled per head count (kattn_u_default, kattn_u_other).
template <int TPP, int G>
static void launch_split(const kattn_plan &p, const __half *q, const __half *kv, __half *out, float *ws, int B, int ctx, int nh,
                         int nkv, int d, float qscale, cudaStream_t s) {
    constexpr int UA = G <= 2 ? 4 : G == 4 ? 2 : 1, UB = G <= 2 ? 2 : G == 4 ? 4 : 2; // the two depths compiled (kattn_u_default, kattn_u_other)
    if (p.u == UB) launch_u<TPP, G, UB>(p, q, kv, out, ws, B, ctx, nh, nkv, d, qscale, s);
    else launch_u<TPP, G, UA>(p, q, kv, out, ws, B, ctx, nh, nkv, d, qscale, s);
}

template <int TPP, int G>
static int occ_split(int u) {
    constexpr int UA = G <= 2 ? 4 : G == 4 ? 2 : 1, UB = G <= 2 ? 2 : G == 4 ? 4 : 2; // the two depths compiled (kattn_u_default, kattn_u_other)
    return u == UB ? occ_u<TPP, G, UB>() : occ_u<TPP, G, UA>();
}

template <int TPP>
static void launch_g(const kattn_plan &p, const __half *q, const __half *kv, __half *out, float *ws, int B, int ctx, int nh, int nkv,
                     int d, float qscale, cudaStream_t s) {
    switch (p.g) {
    case 1: launch_split<TPP, 1>(p, q, kv, out, ws, B, ctx, nh, nkv, d, qscale, s); break;
    case 2: launch_split<TPP, 2>(p, q, kv, out, ws, B, ctx, nh, nkv, d, qscale, s); break;
    case 4: launch_split<TPP, 4>(p, q, kv, out, ws, B, ctx, nh, nkv, d, qscale, s); break;
    default: launch_split<TPP, KATTN_G>(p, q, kv, out, ws, B, ctx, nh, nkv, d, qscale, s); break;
    }
}

template <int TPP>
static int occ_g(int g, int u) {
    switch (g) {
    case 1: return occ_split<TPP, 1>(u);
    case 2: return occ_split<TPP, 2>(u);
    case 4: return occ_split<TPP, 4>(u);
    default: return occ_split<TPP, KATTN_G>(u);
    }
}

int kvpr_attention_occupancy(int tpp, int g, int u) {
    switch (tpp) {
    case 4: return occ_g<4>(g, u);
    case 8: return occ_g<8>(g, u);
    case 16: return occ_g<16>(g, u);
    default: return occ_g<32>(g, u);
    }
}

cudaError_t kvpr_attention_plan(const kattn_plan *p, const __half *q, const __half *kv, __half *out, float *ws, int B, int ctx, int nh,
                                int nkv, int d, cudaStream_t s) {
    if (!kattn_vec_ok(d) || ((((uintptr_t)q | (uintptr_t)kv) & 15u) != 0) || (p->splits > 1 && !ws)) return cudaErrorInvalidValue;
    const float qscale = (float)(KATTN_LOG2E / sqrt((double)d));
    switch (p->tpp) {
    case 4: launch_g<4>(*p, q, kv, out, ws, B, ctx, nh, nkv, d, qscale, s); break;
    case 8: launch_g<8>(*p, q, kv, out, ws, B, ctx, nh, nkv, d, qscale, s); break;
    case 16: launch_g<16>(*p, q, kv, out, ws, B, ctx, nh, nkv, d, qscale, s); break;
    default: launch_g<32>(*p, q, kv, out, ws, B, ctx, nh, nkv, d, qscale, s); break;
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || p->splits == 1) return e;
    attn_combine_k<<<(unsigned)((size_t)B * nh), 128, 0, s>>>(ws, out, B, nh, d, p->splits);
    return cudaGetLastError();
}

cudaError_t kvpr_attention(const __half *q, const __half *kv, __half *out, int B, int ctx, int nh, int nkv, int d,
                           const kvpr_attn_ws *ws, cudaStream_t s) {
    if (d > 32 * MAXDPL || d <= 0 || nkv <= 0 || nh % nkv != 0 || ctx <= 0 || B <= 0) return cudaErrorInvalidValue;
    const int aligned = (((uintptr_t)q | (uintptr_t)kv) & 15u) == 0;
    kattn_plan p = kattn_make_plan(B, ctx, nh, nkv, d, ws ? ws->sms : 1, ws && ws->buf ? ws->bytes : 0);
    if (p.g >= 4 && ws && ws->buf && kattn_vec_ok(d)) {
        // GQA groups of 4 or more heads per pass: splits by waves of resident blocks measured
        // faster (Llama-3-8B, batch 8-64, context 2048-8192: 43-73 % of a device copy's rate
        // against 41-66 % with four blocks per SM; traces/nvidia-h200-2026-11-26/attn-tune.csv);
        // one head per pass is faster with the simpler rule (56-103 % against 60-104 %, and
        // 91 % against 73 % at batch 32, context 512)
        static int occ[4][4]; // [tpp 4, 8, 16, 32][g 1, 2, 4, 8]: resident blocks, 0 = not asked yet
        int ti = p.tpp == 4 ? 0 : p.tpp == 8 ? 1 : p.tpp == 16 ? 2 : 3, gi = p.g == 4 ? 2 : 3;
        int n = __atomic_load_n(&occ[ti][gi], __ATOMIC_RELAXED);
        if (!n) {
            n = kvpr_attention_occupancy(p.tpp, p.g, p.u);
            __atomic_store_n(&occ[ti][gi], n, __ATOMIC_RELAXED);
        }
        if (n > 0) p = kattn_make_plan_occ(B, ctx, nh, nkv, d, ws->sms, n, ws->bytes);
    }
    if (!kattn_vec_ok(d) || !aligned || (long)B * p.splits > INT_MAX || (long)nkv * p.passes > 65535) {
        if (B > 65535) return cudaErrorInvalidValue;
        dim3 grid((unsigned)nh, (unsigned)B);
        attn_decode<<<grid, 32 * WARPS, 0, s>>>(q, kv, out, B, ctx, nh, nkv, d, 1.0f / sqrtf((float)d));
        return cudaGetLastError();
    }
    return kvpr_attention_plan(&p, q, kv, out, p.splits > 1 ? ws->buf : NULL, B, ctx, nh, nkv, d, s);
}
