// tests/emu/include/cuda_runtime.h: the part of the CUDA runtime API the cuda backend's
// kernel files use, for the host emulation (tests/emu/emu_cuda.h). Memory is host
// memory; streams do not exist (every launch completes before it returns).
#ifndef ANVIL_TESTS_EMU_CUDA_RUNTIME_H
#define ANVIL_TESTS_EMU_CUDA_RUNTIME_H

#include <string.h>

#include "tests/emu/emu_cuda.h"

typedef int cudaError_t;
enum { cudaSuccess = 0 };
typedef struct emu_stream *cudaStream_t;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

static inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
static inline const char *cudaGetErrorString(cudaError_t e) {
    return e == cudaSuccess ? "no error" : "error";
}
static inline cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    (void)s;
    memset(p, v, n);
    return cudaSuccess;
}
template <typename K>
static inline cudaError_t cudaFuncSetAttribute(K kernel, cudaFuncAttribute a, int v) {
    (void)kernel, (void)a, (void)v;
    return cudaSuccess;
}

#endif
