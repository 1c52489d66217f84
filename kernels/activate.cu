// MLP activations: ReLU (OPT), SiLU-and-multiply (SwiGLU: LLaMA, Mistral); the RMS pre-norm.
#include "kernels.cuh"

__global__ void relu_k(const __half *x, __half *o, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = __half2float(x[i]);
        o[i] = __float2half(v > 0.f ? v : 0.f);
    }
}

__global__ void silu_mul_k(const __half *x, __half *o, int rows, int cols) {
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i % cols;
        float g = __half2float(x[r * 2 * cols + c]), u = __half2float(x[r * 2 * cols + cols + c]);
        o[i] = __float2half(g / (1.f + __expf(-g)) * u);
    }
}

cudaError_t kvpr_activate(const __half *x, __half *out, int rows, int cols, int act, cudaStream_t s) {
    size_t n = (size_t)rows * cols;
    unsigned blocks = (unsigned)((n + 255) / 256 < 4096 ? (n + 255) / 256 : 4096);
    if (n == 0) return cudaSuccess;
    if (act == 1) relu_k<<<blocks, 256, 0, s>>>(x, out, n);
    else if (act == 2) silu_mul_k<<<blocks, 256, 0, s>>>(x, out, rows, cols);
    else return cudaErrorInvalidValue;
    return cudaGetLastError();
}

__global__ void rmsnorm_k(const __half *x, __half *out, int cols) {
    const __half *xr = x + (size_t)blockIdx.x * cols;
    __half *o = out + (size_t)blockIdx.x * cols;
    float ss = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = __half2float(xr[c]);
        ss += v * v;
    }
    __shared__ float part[32];
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.f;
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (threadIdx.x == 0) part[0] = rsqrtf(v / (float)cols + 1e-6f);
    }
    __syncthreads();
    float k = part[0];
    for (int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = __float2half(__half2float(xr[c]) * k);
}

cudaError_t kvpr_rmsnorm(const __half *x, __half *out, int rows, int cols, cudaStream_t s) {
    if (rows <= 0 || cols <= 0) return cudaErrorInvalidValue;
    rmsnorm_k<<<(unsigned)rows, 256, 0, s>>>(x, out, cols);
    return cudaGetLastError();
}
