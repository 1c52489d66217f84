// eng_cuda: the CUDA backend. Every CUDA and cuBLAS call is checked and turned into a one-line
// error with file and line; nothing exits.
#include <new>
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../kernels/kernels.cuh"
extern "C" {
#include "backend.h"
}

#define ATTN_WS_BYTES ((size_t)16 << 20) /* per stream: split results of decode attention */

struct eng_backend {
    int dev;
    cudaStream_t s[ENG_NSTREAMS];
    cudaEvent_t *ev;
    int nev;
    cublasHandle_t cb;
    kvpr_attn_ws ws[ENG_NSTREAMS];
    int *flag, *dflag; /* hold/release: pinned and mapped (host and device address); release() raises it */
    int releases;
};

/* Spins until the host raises *flag to at least `target` (release()), or 10 s have passed. Queued
 * ahead of timed work so that the work starts back to back once the host has queued all of it. */
__global__ void hold_k(const volatile int *flag, int target) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        if (*flag >= target) return;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < 10000000000ull);
}

#define CK(x)                                                                                                   \
    do {                                                                                                        \
        cudaError_t e_ = (x);                                                                                   \
        if (e_ != cudaSuccess)                                                                                  \
            return kv_errorf(KV_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #x, cudaGetErrorString(e_));      \
    } while (0)
#define CB(x)                                                                                                   \
    do {                                                                                                        \
        cublasStatus_t e_ = (x);                                                                                \
        if (e_ != CUBLAS_STATUS_SUCCESS)                                                                        \
            return kv_errorf(KV_EDEVICE, "%s:%d: %s: %s", __FILE__, __LINE__, #x, cublasGetStatusString(e_));   \
    } while (0)

static void c_close(eng_backend *b) {
    if (!b) return;
    cudaSetDevice(b->dev);
    for (int i = 0; i < b->nev; i++)
        if (b->ev[i]) cudaEventDestroy(b->ev[i]);
    free(b->ev);
    for (int i = 0; i < ENG_NSTREAMS; i++) {
        if (b->s[i]) cudaStreamDestroy(b->s[i]);
        if (b->ws[i].buf) cudaFree(b->ws[i].buf);
    }
    if (b->flag) cudaFreeHost(b->flag);
    if (b->cb) cublasDestroy(b->cb);
    free(b);
}

static kv_status c_open(eng_backend **out, int device, int n_events) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return kv_errorf(KV_EDEVICE, "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    if (device < 0 || device >= n) return kv_errorf(KV_EDEVICE, "no CUDA device %d (%d present)", device, n);
    eng_backend *b = (eng_backend *)calloc(1, sizeof *b);
    if (!b) return kv_errorf(KV_ENOMEM, "cuda backend: out of memory");
    b->dev = device;
    kv_status st = KV_OK;
#define TRY(x)                        \
    do {                              \
        if ((st = (x)) != KV_OK) {    \
            c_close(b);               \
            return st;                \
        }                             \
    } while (0)
    struct L {
        static kv_status init(eng_backend *b, int n_events) {
            CK(cudaSetDevice(b->dev));
            for (int i = 0; i < ENG_NSTREAMS; i++) CK(cudaStreamCreateWithFlags(&b->s[i], cudaStreamNonBlocking));
            CB(cublasCreate(&b->cb));
            CB(cublasSetMathMode(b->cb, CUBLAS_DEFAULT_MATH));
            b->ev = (cudaEvent_t *)calloc((size_t)n_events, sizeof(cudaEvent_t));
            if (!b->ev) return kv_errorf(KV_ENOMEM, "cuda backend: out of memory for %d events", n_events);
            b->nev = n_events;
            for (int i = 0; i < n_events; i++) CK(cudaEventCreate(&b->ev[i]));
            int sms = 1;
            CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, b->dev));
            for (int i = 0; i < ENG_NSTREAMS; i++) {
                CK(cudaMalloc((void **)&b->ws[i].buf, ATTN_WS_BYTES));
                b->ws[i].bytes = ATTN_WS_BYTES, b->ws[i].sms = sms;
            }
            CK(cudaHostAlloc((void **)&b->flag, sizeof(int), cudaHostAllocMapped));
            *(volatile int *)b->flag = 0;
            CK(cudaHostGetDevicePointer((void **)&b->dflag, b->flag, 0));
            return KV_OK;
        }
    };
    TRY(L::init(b, n_events));
#undef TRY
    *out = b;
    return KV_OK;
}

static kv_status c_info(eng_backend *b, eng_devinfo *o) {
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, b->dev));
    int drv = 0, rt = 0;
    CK(cudaDriverGetVersion(&drv));
    CK(cudaRuntimeGetVersion(&rt));
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%.100s (cc %d.%d, %d SMs, %d MiB L2, %d copy engines, driver API %d, runtime %d)", p.name, p.major,
             p.minor, p.multiProcessorCount, p.l2CacheSize >> 20, p.asyncEngineCount, drv, rt);
    size_t f = 0, t = 0;
    CK(cudaMemGetInfo(&f, &t));
    o->free_bytes = (double)f;
    o->total_bytes = (double)t;
    o->l2_bytes = (double)p.l2CacheSize;
    o->sms = p.multiProcessorCount;
    o->shares_host_memory = 0;
    return KV_OK;
}

static kv_status c_alloc(eng_backend *b, void **p, size_t bytes) {
    (void)b;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess)
        return kv_errorf(e == cudaErrorMemoryAllocation ? KV_ENOFIT : KV_EDEVICE, "cudaMalloc of %.1f MiB: %s",
                         (double)bytes / 1048576.0, cudaGetErrorString(e));
    return KV_OK;
}
static void c_free(eng_backend *b, void *p) { (void)b, cudaFree(p); }
static kv_status c_halloc(eng_backend *b, void **p, size_t bytes, int pinned) {
    (void)b;
    if (!pinned) {
        *p = malloc(bytes ? bytes : 1);
        return *p ? KV_OK : kv_errorf(KV_ENOMEM, "cannot allocate %.1f MiB of host memory", (double)bytes / 1048576.0);
    }
    cudaError_t e = cudaHostAlloc(p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e != cudaSuccess)
        return kv_errorf(KV_ENOFIT, "cudaHostAlloc of %.1f MiB pinned memory: %s", (double)bytes / 1048576.0, cudaGetErrorString(e));
    return KV_OK;
}
static void c_hfree(eng_backend *b, void *p, int pinned) {
    (void)b;
    if (pinned) cudaFreeHost(p);
    else free(p);
}
static kv_status c_copy(eng_backend *b, int s, void *dst, const void *src, size_t bytes, int dir) {
    cudaMemcpyKind k = dir == 0 ? cudaMemcpyHostToDevice : dir == 1 ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
    CK(cudaMemcpyAsync(dst, src, bytes, k, b->s[s]));
    return KV_OK;
}
static kv_status c_gemm(eng_backend *b, int s, int M, int N, int K, const eng_half *A, const eng_half *B, eng_half *C, float beta) {
    if (M <= 0 || N <= 0 || K <= 0) return kv_errorf(KV_EINVAL, "gemm: bad shape %d x %d x %d", M, N, K);
    float alpha = 1.f;
    CB(cublasSetStream(b->cb, b->s[s]));
    /* row-major C = A B is column-major C^T = B^T A^T */
    CB(cublasGemmEx(b->cb, CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &alpha, B, CUDA_R_16F, N, A, CUDA_R_16F, K, &beta, C,
                    CUDA_R_16F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return KV_OK;
}
static kv_status c_attn(eng_backend *b, int s, const eng_half *q, const eng_half *kv, eng_half *out, int B, int ctx, int nh,
                        int nkv, int d) {
    CK(kvpr_attention((const __half *)q, (const __half *)kv, (__half *)out, B, ctx, nh, nkv, d, &b->ws[s], b->s[s]));
    return KV_OK;
}
static kv_status c_act(eng_backend *b, int s, const eng_half *x, eng_half *out, int rows, int cols, eng_act act) {
    CK(kvpr_activate((const __half *)x, (__half *)out, rows, cols, (int)act, b->s[s]));
    return KV_OK;
}
static kv_status c_norm(eng_backend *b, int s, const eng_half *x, eng_half *out, int rows, int cols) {
    CK(kvpr_rmsnorm((const __half *)x, (__half *)out, rows, cols, b->s[s]));
    return KV_OK;
}
/* cudaLaunchHostFunc's callback type differs from the C interface's only in linkage */
struct host_call {
    void (*fn)(void *);
    void *arg;
};
static void CUDART_CB run_host_call(void *p) {
    host_call *h = (host_call *)p;
    h->fn(h->arg);
    delete h;
}
static kv_status c_hostfn(eng_backend *b, int s, void (*fn)(void *), void *arg) {
    host_call *h = new (std::nothrow) host_call{fn, arg};
    if (!h) return kv_errorf(KV_ENOMEM, "out of memory");
    cudaError_t e = cudaLaunchHostFunc(b->s[s], run_host_call, h);
    if (e != cudaSuccess) {
        delete h;
        return kv_errorf(KV_EDEVICE, "cudaLaunchHostFunc: %s", cudaGetErrorString(e));
    }
    return KV_OK;
}
static kv_status c_record(eng_backend *b, int s, int ev) {
    if (ev < 0 || ev >= b->nev) return kv_errorf(KV_EINVAL, "cuda backend: no event %d", ev);
    CK(cudaEventRecord(b->ev[ev], b->s[s]));
    return KV_OK;
}
static kv_status c_wait(eng_backend *b, int s, int ev) {
    if (ev < 0 || ev >= b->nev) return kv_errorf(KV_EINVAL, "cuda backend: no event %d", ev);
    CK(cudaStreamWaitEvent(b->s[s], b->ev[ev], 0));
    return KV_OK;
}
static kv_status c_sync(eng_backend *b) {
    for (int i = 0; i < ENG_NSTREAMS; i++) CK(cudaStreamSynchronize(b->s[i]));
    CK(cudaGetLastError());
    return KV_OK;
}
static kv_status c_elapsed(eng_backend *b, int a, int z, double *ms) {
    if (a < 0 || a >= b->nev || z < 0 || z >= b->nev) return kv_errorf(KV_EINVAL, "cuda backend: no event %d or %d", a, z);
    float f = 0;
    CK(cudaEventElapsedTime(&f, b->ev[a], b->ev[z]));
    *ms = f;
    return KV_OK;
}
static kv_status c_hold(eng_backend *b, int s) {
    hold_k<<<1, 1, 0, b->s[s]>>>(b->dflag, b->releases + 1);
    CK(cudaGetLastError());
    return KV_OK;
}
static kv_status c_release(eng_backend *b) {
    /* the device reads the flag over the bus: a plain store to mapped pinned memory reaches it */
    __atomic_store_n(b->flag, ++b->releases, __ATOMIC_SEQ_CST);
    return KV_OK;
}

static kv_status c_quant(eng_backend *b, int s, const eng_half *x, uint8_t *q, size_t outer, int G, int inner) {
    CK(kvpr_quant((const __half *)x, q, outer, G, inner, b->s[s]));
    return KV_OK;
}
static kv_status c_dequant(eng_backend *b, int s, const uint8_t *q, eng_half *x, size_t outer, int G, int inner) {
    CK(kvpr_dequant(q, (__half *)x, outer, G, inner, b->s[s]));
    return KV_OK;
}

static const eng_backend_type cuda_type = {"cuda", c_open, c_close, c_info, c_alloc, c_free, c_halloc, c_hfree, c_copy,
                                           c_gemm, c_attn, c_act, c_norm, c_hostfn, c_record, c_wait, c_sync, c_elapsed, c_hold, c_release,
                                           c_quant, c_dequant};

extern "C" const eng_backend_type *eng_cuda_backend(void) { return &cuda_type; }
