// kvpr-attn-tune: decode attention's partition and load depth, measured on the GPU (make attn-tune).
//
// For each shape (a model's heads, KV heads and head size; batch; context) it runs the
// flash-decoding kernel under each choice the launcher could make: splits sized for four blocks
// per multiprocessor (the default) or by waves of resident blocks (kattn_splits_waves, with the
// kernel's occupancy from the CUDA runtime), each with the two load depths compiled for the
// shape's heads per pass. Every rep is timed by its own event pair, all reps queued behind a busy
// kernel so the host's launch gaps are not in them; K/V rotate over enough copies to cover four
// times L2. Output: CSV (one line per shape and choice) with the median time, K+V bytes read per
// second and its share of a device-to-device copy's read + written rate, and each choice's largest
// difference from the default's output (they must agree to fp16 rounding).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "kernels/attn_tune.cuh"

#define CK(x)                                                                                     \
    do {                                                                                          \
        cudaError_t e_ = (x);                                                                     \
        if (e_ != cudaSuccess) {                                                                  \
            fprintf(stderr, "kvpr-attn-tune: %s: %s\n", #x, cudaGetErrorString(e_));              \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

__global__ void fill_k(__half *p, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned x = (unsigned)i * 2654435761u ^ seed;
        x ^= x >> 15, x *= 2246822519u, x ^= x >> 13;
        p[i] = __float2half(((float)(x & 0xffff) / 32768.f - 1.f));
    }
}

__global__ void busy_k(long long ns) {
    long long t0 = clock64();
    while (clock64() - t0 < ns) {
    }
}

struct shape_t {
    const char *model;
    int nh, nkv, d;
};

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    if (reps < 3 || reps > 1000) reps = 20;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    int sms = prop.multiProcessorCount;
    size_t l2 = (size_t)prop.l2CacheSize;
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    // device-to-device copy of 1 GiB: the bandwidth attention is compared with
    size_t cb = (size_t)1 << 30;
    void *ca, *cbuf;
    CK(cudaMalloc(&ca, cb));
    CK(cudaMalloc(&cbuf, cb));
    std::vector<float> ct;
    for (int r = 0; r < 7; r++) {
        CK(cudaEventRecord(e0, st));
        CK(cudaMemcpyAsync(cbuf, ca, cb, cudaMemcpyDeviceToDevice, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (r >= 2) ct.push_back(ms);
    }
    std::sort(ct.begin(), ct.end());
    double d2d = 2.0 * (double)cb / (ct[ct.size() / 2] * 1e-3) / 1e9;
    CK(cudaFree(ca));
    CK(cudaFree(cbuf));
    printf("# kvpr-attn-tune on %s (cc %d.%d, %d SMs, %zu MiB L2), %d reps, d2d %.1f GB/s (read + written)\n", prop.name, prop.major,
           prop.minor, sms, l2 >> 20, reps, d2d);
    printf("model,nh,nkv,d,batch,ctx,rule,u,per_sm,splits,blocks,waves,time_us,gbps,of_d2d,max_rel_diff\n");

    const shape_t shapes[] = {{"OPT-6.7B", 32, 32, 128}, {"Llama-3-8B", 32, 8, 128}, {"Llama-3-70B", 64, 8, 128}, {"Qwen-d64", 16, 2, 64}};
    const int batches[] = {1, 8, 32, 64};
    const int ctxs[] = {512, 2048, 8192};
    const size_t ws_bytes = (size_t)64 << 20;
    float *ws;
    CK(cudaMalloc((void **)&ws, ws_bytes));
    for (const shape_t &sh : shapes)
        for (int B : batches)
            for (int ctx : ctxs) {
                size_t kvn = (size_t)ctx * B * 2 * sh.nkv * sh.d, qn = (size_t)B * sh.nh * sh.d;
                size_t kvb = kvn * 2;
                if (kvb > ((size_t)16 << 30)) continue;
                int sets = (int)std::min<size_t>(16, std::max<size_t>(1, (4 * l2 + kvb - 1) / kvb));
                __half *kv, *q, *out, *ref;
                CK(cudaMalloc((void **)&kv, kvb * sets));
                CK(cudaMalloc((void **)&q, qn * 2));
                CK(cudaMalloc((void **)&out, qn * 2));
                CK(cudaMalloc((void **)&ref, qn * 2));
                fill_k<<<1024, 256, 0, st>>>(kv, kvn * sets, 17u);
                fill_k<<<64, 256, 0, st>>>(q, qn, 99u);
                CK(cudaGetLastError());
                std::vector<__half> hout(qn), href(qn);
                kattn_plan p0 = kattn_make_plan(B, ctx, sh.nh, sh.nkv, sh.d, sms, ws_bytes);
                for (int rule = 0; rule < 2; rule++)
                    for (int ui = 0; ui < 2; ui++) {
                        int u = ui ? kattn_u_other(p0.g) : kattn_u_default(p0.g);
                        int per_sm = kvpr_attention_occupancy(p0.tpp, p0.g, u);
                        kattn_plan p = kattn_make_plan_occ(B, ctx, sh.nh, sh.nkv, sh.d, sms, rule ? per_sm : 0, ws_bytes);
                        p.u = u;
                        long blocks = (long)B * p.splits * sh.nkv * p.passes;
                        double waves = per_sm > 0 ? (double)blocks / ((double)sms * per_sm) : 0;
                        // correctness against the default choice (the first)
                        CK(kvpr_attention_plan(&p, q, kv, out, ws, B, ctx, sh.nh, sh.nkv, sh.d, st));
                        CK(cudaStreamSynchronize(st));
                        if (rule == 0 && ui == 0) CK(cudaMemcpy(ref, out, qn * 2, cudaMemcpyDeviceToDevice));
                        CK(cudaMemcpy(hout.data(), out, qn * 2, cudaMemcpyDeviceToHost));
                        CK(cudaMemcpy(href.data(), ref, qn * 2, cudaMemcpyDeviceToHost));
                        double md = 0, mr = 0;
                        for (size_t i = 0; i < qn; i++) {
                            md = std::max(md, (double)std::fabs(__half2float(hout[i]) - __half2float(href[i])));
                            mr = std::max(mr, (double)std::fabs(__half2float(href[i])));
                        }
                        std::vector<cudaEvent_t> ev(2 * reps);
                        for (auto &e : ev) CK(cudaEventCreate(&e));
                        busy_k<<<1, 1, 0, st>>>(20LL * 1000 * 1000); // about 10 ms: the reps queue behind it
                        for (int r = 0; r < reps; r++) {
                            const __half *k = kv + (size_t)(r % sets) * kvn;
                            CK(cudaEventRecord(ev[2 * r], st));
                            CK(kvpr_attention_plan(&p, q, k, out, ws, B, ctx, sh.nh, sh.nkv, sh.d, st));
                            CK(cudaEventRecord(ev[2 * r + 1], st));
                        }
                        CK(cudaStreamSynchronize(st));
                        std::vector<float> t;
                        for (int r = 0; r < reps; r++) {
                            float ms;
                            CK(cudaEventElapsedTime(&ms, ev[2 * r], ev[2 * r + 1]));
                            t.push_back(ms);
                        }
                        for (auto &e : ev) CK(cudaEventDestroy(e));
                        std::sort(t.begin(), t.end());
                        double us = t[t.size() / 2] * 1e3, gbps = (double)kvb / (us * 1e-6) / 1e9;
                        printf("%s,%d,%d,%d,%d,%d,%s,%d,%d,%d,%ld,%.2f,%.2f,%.1f,%.3f,%.2e\n", sh.model, sh.nh, sh.nkv, sh.d, B, ctx,
                               rule ? "waves" : "four", u, per_sm, p.splits, blocks, waves, us, gbps, gbps / d2d, mr > 0 ? md / mr : md);
                    }
                fflush(stdout);
                CK(cudaFree(kv));
                CK(cudaFree(q));
                CK(cudaFree(out));
                CK(cudaFree(ref));
            }
    CK(cudaFree(ws));
    return 0;
}
