// tests/emu/include/cuda_runtime.h: the part of the CUDA runtime API the cuda backend's
// kernel files use, for the host emulation (tests/emu/emu_cuda.h). Memory is host
// memory; streams do not exist (every launch completes before it returns).
#ifndef ANVIL_TESTS_EMU_CUDA_RUNTIME_H
#define ANVIL_TESTS_EMU_CUDA_RUNTIME_H

#include <stdlib.h>
#include <string.h>

#include "tests/emu/emu_cuda.h"

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
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

// memory: host memory, copies done at once
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};
template <typename T>
static inline cudaError_t cudaMalloc(T **p, size_t n) {
    *p = (T *)malloc(n > 0 ? n : 1);
    return *p != NULL ? cudaSuccess : 2;
}
template <typename T>
static inline cudaError_t cudaMallocHost(T **p, size_t n) {
    return cudaMalloc(p, n);
}
static inline cudaError_t cudaFree(void *p) {
    free(p);
    return cudaSuccess;
}
static inline cudaError_t cudaFreeHost(void *p) { return cudaFree(p); }
static inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n,
                                          cudaMemcpyKind k, cudaStream_t s) {
    (void)k, (void)s;
    memmove(dst, src, n);
    return cudaSuccess;
}
// a __device__ variable is a host global here
template <typename T>
static inline cudaError_t cudaGetSymbolAddress(void **p, T &symbol) {
    *p = (void *)&symbol;
    return cudaSuccess;
}

// the device: one, an H100-like part (compute capability 9.0) with 16 multiprocessors
// (fewer than a real one: grids sized per SM stay small, and any count is correct) and
// 80 GiB, of which the emulation itself uses host memory as it goes
enum cudaDeviceAttr {
    cudaDevAttrClockRate = 13,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76
};
struct cudaDeviceProp {
    char name[256];
};
static inline cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
static inline cudaError_t cudaSetDevice(int dev) { return dev == 0 ? cudaSuccess : 101; }
static inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev) {
    (void)dev;
    switch (a) {
    case cudaDevAttrClockRate: *v = 1980000; break;            // kHz
    case cudaDevAttrMultiProcessorCount: *v = 16; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    }
    return cudaSuccess;
}
static inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev) {
    (void)dev;
    strcpy(p->name, "host emulation (tests/emu)");
    return cudaSuccess;
}
static inline cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    *total_bytes = (size_t)80 << 30;
    *free_bytes = (size_t)79 << 30;
    return cudaSuccess;
}

// streams and events: everything has completed when a call returns
typedef struct emu_event *cudaEvent_t;
enum { cudaEventDisableTiming = 2 };
enum { cudaStreamNonBlocking = 1 };
static inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    (void)flags;
    *s = (cudaStream_t)1;          // a token: never dereferenced
    return cudaSuccess;
}
static inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}
static inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
    (void)e;
    return cudaSuccess;
}
static inline cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}
static inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    (void)flags;
    *e = (cudaEvent_t)1;
    return cudaSuccess;
}
static inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    (void)e, (void)s;
    return cudaSuccess;
}
static inline cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    (void)e;
    return cudaSuccess;
}

// occupancy: an H100-like multiprocessor (2048 threads, at most 32 blocks)
template <typename K>
static inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, K kernel,
                                                                        int threads,
                                                                        size_t smem) {
    (void)kernel, (void)smem;
    int b = threads > 0 ? 2048 / threads : 1;
    *n = b < 1 ? 1 : b > 32 ? 32 : b;
    return cudaSuccess;
}

#endif
