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
    if (a != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
    return emu::set_max_dyn_smem(reinterpret_cast<const void *>(kernel), v)
               ? cudaSuccess
               : cudaErrorInvalidValue;
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
// occupancy: an H100-like multiprocessor (2048 threads, at most 32 blocks, 1 KiB more
// shared memory than a block may have, emu_smem_optin: 228 of 227 KiB by default;
// registers not counted)
template <typename K>
static inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, K kernel,
                                                                        int threads,
                                                                        size_t smem) {
    (void)kernel;
    int b = threads > 0 ? 2048 / threads : 1;
    if (smem > 0) {
        const size_t optin = (size_t)emu_smem_optin();
        int bs = smem > optin ? 0 : (int)((optin + 1024) / smem);
        b = bs < b ? bs : b;
    }
    *n = b < 0 ? 0 : b > 32 ? 32 : b;
    return cudaSuccess;
}

#endif
