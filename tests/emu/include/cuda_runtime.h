// tests/emu/include/cuda_runtime.h: the CUDA runtime for the host emulation, C++ side:
// the C calls of cuda_runtime_api.h, the kernel execution model (tests/emu/emu_cuda.h),
// and the calls that are templates in CUDA's own header.
#ifndef ANVIL_TESTS_EMU_CUDA_RUNTIME_H
#define ANVIL_TESTS_EMU_CUDA_RUNTIME_H

#include "tests/emu/include/cuda_runtime_api.h"
#include "tests/emu/emu_cuda.h"

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

template <typename K>
static inline cudaError_t cudaFuncSetAttribute(K kernel, cudaFuncAttribute a, int v) {
    (void)kernel, (void)a, (void)v;
    return cudaSuccess;
}
template <typename T>
static inline cudaError_t cudaMalloc(T **p, size_t n) {
    return cudaMalloc((void **)p, n);
}
template <typename T>
static inline cudaError_t cudaMallocHost(T **p, size_t n) {
    return cudaMallocHost((void **)p, n);
}
// a __device__ variable is a host global here
template <typename T>
static inline cudaError_t cudaGetSymbolAddress(void **p, T &symbol) {
    *p = (void *)&symbol;
    return cudaSuccess;
}
// occupancy: an H100-like multiprocessor (2048 threads, at most 32 blocks, 228 KiB of
// shared memory of which a block may have 227 KiB; registers not counted)
template <typename K>
static inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, K kernel,
                                                                        int threads,
                                                                        size_t smem) {
    (void)kernel;
    int b = threads > 0 ? 2048 / threads : 1;
    if (smem > 0) {
        int bs = smem > (size_t)227 * 1024 ? 0 : (int)(((size_t)228 * 1024) / smem);
        b = bs < b ? bs : b;
    }
    *n = b < 0 ? 0 : b > 32 ? 32 : b;
    return cudaSuccess;
}

#endif
