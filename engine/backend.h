/* eng_backend: what the executor needs from a device, as a type (name + functions) with two
 * implementations: CUDA (streams, events, pinned memory, cuBLAS) and host (CPU threads standing in
 * for streams, memcpy for copies, OpenBLAS for GEMMs), so the executor's logic and numerics are
 * tested where there is no GPU. Plain C interface: fp16 values travel as uint16_t bit patterns. */
#ifndef ENG_BACKEND_H
#define ENG_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "../core/kv_err.h"

typedef uint16_t eng_half;

/* Streams: one per queue of the op graph (kv_queue). Copies on H2D, WEIGHT and HIDDEN share the
 * host-to-device link; CPU runs host functions (attention over the host cache). */
enum { ENG_S_COMPUTE = 0, ENG_S_H2D = 1, ENG_S_D2H = 2, ENG_S_CPU = 3, ENG_S_WEIGHT = 4, ENG_S_HIDDEN = 5, ENG_NSTREAMS = 6 };
typedef enum { ENG_ACT_NONE = 0, ENG_ACT_RELU, ENG_ACT_SILU_MUL } eng_act;

typedef struct eng_backend eng_backend;

/* What a device is and has. */
typedef struct {
    char name[256];
    double free_bytes, total_bytes; /* device memory (host backend: host memory this process may still use) */
    double l2_bytes;                /* last-level cache that timed working sets are compared with */
    int sms;                        /* multiprocessors (host backend: cores) */
    int shares_host_memory;         /* 1: "device" buffers come out of host RAM (host backend) */
} eng_devinfo;

typedef struct {
    const char *name;
    /* events: a pool of n, indexed 0..n-1 */
    kv_status (*open)(eng_backend **out, int device, int n_events);
    void (*close)(eng_backend *b);
    kv_status (*info)(eng_backend *b, eng_devinfo *out);
    kv_status (*dev_alloc)(eng_backend *b, void **p, size_t bytes);
    void (*dev_free)(eng_backend *b, void *p);
    kv_status (*host_alloc)(eng_backend *b, void **p, size_t bytes, int pinned);
    void (*host_free)(eng_backend *b, void *p, int pinned);
    /* asynchronous on a stream; dir 0 host-to-device, 1 device-to-host, 2 device-to-device */
    kv_status (*copy)(eng_backend *b, int stream, void *dst, const void *src, size_t bytes, int dir);
    /* C[MxN] = A[MxK] B[KxN] + beta C, row-major fp16, fp32 accumulate */
    kv_status (*gemm)(eng_backend *b, int stream, int M, int N, int K, const eng_half *A, const eng_half *B, eng_half *C,
                      float beta);
    /* decode attention: q [B][nh*d]; kv [ctx][ld_b rows][2*nkv*d] (K then V per row, sequence i in
     * row i of each position); out [B][nh*d] */
    kv_status (*attention)(eng_backend *b, int stream, const eng_half *q, const eng_half *kv, eng_half *out, int B, int ctx,
                           int nh, int nkv, int d);
    /* ReLU: out[r][c] = max(0, x[r][c]) (out may be x), cols columns. SiLU-and-multiply of a gated
     * MLP: x rows are [gate | up] (2*cols wide), out [rows][cols] = silu(gate) * up. */
    kv_status (*activate)(eng_backend *b, int stream, const eng_half *x, eng_half *out, int rows, int cols, eng_act act);
    /* out[r] = x[r] / sqrt(mean(x[r]^2) + 1e-6), rows x cols (the layer's pre-norm; unit gain) */
    kv_status (*rmsnorm)(eng_backend *b, int stream, const eng_half *x, eng_half *out, int rows, int cols);
    /* fn(arg) on the host, in the stream's order (cudaLaunchHostFunc); it must not call the backend */
    kv_status (*host_fn)(eng_backend *b, int stream, void (*fn)(void *), void *arg);
    kv_status (*record)(eng_backend *b, int stream, int ev);
    kv_status (*wait)(eng_backend *b, int stream, int ev);
    kv_status (*sync)(eng_backend *b);
    /* milliseconds from event a to event z, both recorded and complete (after sync). Each span is
     * timed by its own pair: offsets from one distant origin would lose microseconds to the
     * float that CUDA reports them in. */
    kv_status (*elapsed)(eng_backend *b, int a, int z, double *ms);
    /* hold: work queued on `stream` after this waits until release(), so that timed work is queued
     * first and then runs back to back, without the host's launch cost in between (nvbandwidth's
     * method). Queue only a few hundred operations behind a hold, and no pageable copies (CUDA
     * synchronises the stream for those, which would wait on the hold). A hold lets go by itself
     * after 10 s, so a forgotten release cannot hang the program. */
    kv_status (*hold)(eng_backend *b, int stream);
    kv_status (*release)(eng_backend *b);
    /* 4-bit group-wise quantisation (--compress), the layout of sched/graph.h and kernels/ref.h:
     * x [outer][G][inner] in groups of up to 64 along G, to and from 36 bytes per group */
    kv_status (*quant)(eng_backend *b, int stream, const eng_half *x, uint8_t *q, size_t outer, int G, int inner);
    kv_status (*dequant)(eng_backend *b, int stream, const uint8_t *q, eng_half *x, size_t outer, int G, int inner);
} eng_backend_type;

extern const eng_backend_type eng_host_backend;
/* NULL in builds without CUDA */
const eng_backend_type *eng_cuda_backend(void);

float eng_h2f(eng_half h);
eng_half eng_f2h(float f);

#endif
