// kernels/cuda/cuda_common.cuh: what every .cu file of the cuda backend shares.
//
// - Error checks: every CUDA runtime and cuBLASLt call goes through CUDA_CHECK /
//   CUBLAS_CHECK, every kernel launch is followed by CUDA_LAUNCH_CHECK(); a failure is
//   an internal error and ends the job through anv_fatal (kernels/fatal.h) with the
//   call, file:line and the library's text.
// - Streams: every op runs on cuda_stream_compute (created by backend.cu); none uses
//   the legacy default stream, so ordering against the communication stream is always
//   explicit (events).
// - bf16: activations and weights are __nv_bfloat16 (`bf16`); every reduction and every
//   matmul accumulates in fp32.
// - x128: 16-byte vector loads and stores (8 bf16 or 4 floats) for the bandwidth-bound
//   kernels, as in llm.c; callers check alignment and fall back to scalar code for
//   tails.
#ifndef ANVIL_KERNELS_CUDA_CUDA_COMMON_CUH
#define ANVIL_KERNELS_CUDA_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/fatal.h"
#include "kernels/cuda/cuda_ops.h"

typedef __nv_bfloat16 bf16;

// ---- error checks ------------------------------------------------------------------
#define CUDA_CHECK(call)                                                            \
    do {                                                                            \
        cudaError_t err_ = (call);                                                  \
        if (err_ != cudaSuccess)                                                    \
            anv_fatal(__FILE__, __LINE__, #call, cudaGetErrorString(err_));         \
    } while (0)

#define CUDA_LAUNCH_CHECK()                                                         \
    do {                                                                            \
        cudaError_t err_ = cudaGetLastError();                                      \
        if (err_ != cudaSuccess)                                                    \
            anv_fatal(__FILE__, __LINE__, "kernel launch", cudaGetErrorString(err_)); \
    } while (0)

#define CUBLAS_CHECK(call)                                                          \
    do {                                                                            \
        cublasStatus_t st_ = (call);                                                \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                           \
            anv_fatal(__FILE__, __LINE__, #call, cublasLt_status_text(st_));        \
    } while (0)

static inline const char *cublasLt_status_text(cublasStatus_t st) {
    switch (st) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
    }
}

// ---- cuBLASLt, loaded when the backend starts ----------------------------------------
// The library is opened with dlopen by anv_backend_cuda (backend.cu: cuda_lt_load), not
// linked: its initializers cost ~80 ms at every process start, device=cpu runs and
// `anvil tokenizer ...` included, for a library only a GPU run uses. Every call goes
// through this table, under the function's own name: cuda_lt_fn.cublasLtMatmul(...).
#define CUDA_LT_FNS(X)                                                                \
    X(cublasLtCreate) X(cublasLtDestroy) X(cublasLtGetVersion) X(cublasLtMatmul)      \
    X(cublasLtMatmulAlgoGetHeuristic) X(cublasLtMatmulDescCreate)                     \
    X(cublasLtMatmulDescDestroy) X(cublasLtMatmulDescSetAttribute)                    \
    X(cublasLtMatmulPreferenceCreate) X(cublasLtMatmulPreferenceDestroy)              \
    X(cublasLtMatmulPreferenceSetAttribute) X(cublasLtMatrixLayoutCreate)             \
    X(cublasLtMatrixLayoutDestroy)
#define CUDA_LT_FN_MEMBER(f) decltype(&::f) f;
struct cuda_lt_fns {
    CUDA_LT_FNS(CUDA_LT_FN_MEMBER)
};
#undef CUDA_LT_FN_MEMBER
extern cuda_lt_fns cuda_lt_fn;               // all NULL until cuda_lt_load succeeds

// ---- shared state (owned by backend.cu) --------------------------------------------
extern cudaStream_t cuda_stream_compute;     // every op
extern cublasLtHandle_t cuda_lt;             // cuBLASLt handle
extern void *cuda_lt_workspace;              // cuBLASLt workspace (device)
extern size_t cuda_lt_workspace_bytes;
extern int cuda_sm_count;                    // multiprocessors of the device
extern int cuda_deterministic;               // set_deterministic: no float atomics
extern int cuda_cc;                          // compute capability, e.g. 90
// Shared memory one block may have once a kernel opts in (cudaFuncSetAttribute):
// 227 KiB on sm_90, 163 KiB on sm_80, 99 KiB on sm_86 / sm_89. A kernel that needs more
// must not be launched (the launch fails): its caller takes another path.
extern int cuda_smem_optin;

// A device scratch buffer an op keeps between calls: *buf (of *cap bytes) is replaced
// by one of `need` bytes when it is smaller, after the queued work that may still read
// the old one; it never shrinks. Returns *buf.
void *cuda_scratch(void **buf, size_t *cap, size_t need);

// ---- helpers -----------------------------------------------------------------------
static inline unsigned cuda_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 0x7fffffffu ? 0x7fffffffu : (b ? b : 1));
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
// `sh` is __shared__ float[32]; the call ends with a barrier, so sh may be reused.
__device__ __forceinline__ float block_sum(float x, float *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    x = warp_sum(x);
    __syncthreads();
    if (lane == 0) sh[warp] = x;
    __syncthreads();
    x = lane < nw ? sh[lane] : 0.0f;
    x = warp_sum(x);
    __syncthreads();
    return x;
}

// Max over the block (blockDim.x a multiple of 32); every thread gets it. `sh` is
// __shared__ float[32]; ends with a barrier, so sh may be reused (as above).
__device__ __forceinline__ float block_max(float x, float *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    x = warp_max(x);
    __syncthreads();
    if (lane == 0) sh[warp] = x;
    __syncthreads();
    x = lane < nw ? sh[lane] : -INFINITY;
    x = warp_max(x);
    __syncthreads();
    return x;
}

// 16 bytes of T, loaded and stored as one vector.
template <typename T>
struct alignas(16) x128 {
    static constexpr int size = 16 / sizeof(T);
    T v[16 / sizeof(T)];
    __device__ __forceinline__ T &operator[](int i) { return v[i]; }
    __device__ __forceinline__ const T &operator[](int i) const { return v[i]; }
};
template <typename T>
__device__ __forceinline__ x128<T> load128(const T *p) {
    return *reinterpret_cast<const x128<T> *>(p);
}
template <typename T>
__device__ __forceinline__ void store128(T *p, const x128<T> &x) {
    *reinterpret_cast<x128<T> *>(p) = x;
}
static inline int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// The loop of the streaming kernels: visits [0, n) from index `first` in steps of
// `stride` (grid-wide or block-wide). With vec, body_w(i) for each whole group i of W
// elements ([W i, W i + W), i < n / W), then body_1(i) for the elements past the last
// group; without, body_1(i) for every element.
template <int W, typename FW, typename F1>
__device__ __forceinline__ void strided_vec(size_t n, size_t first, size_t stride, bool vec,
                                            FW body_w, F1 body_1) {
    size_t done = 0;
    if (vec) {
        const size_t nv = n / W;
        for (size_t i = first; i < nv; i += stride) body_w(i);
        done = nv * W;
    }
    for (size_t i = done + first; i < n; i += stride) body_1(i);
}

#endif
