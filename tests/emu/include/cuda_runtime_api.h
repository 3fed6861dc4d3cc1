/* tests/emu/include/cuda_runtime_api.h: the CUDA runtime API calls anvil makes, for the
 * host emulation (tests/emu), in C (parallel/comm_nccl.c includes this header) and C++
 * (cuda_runtime.h adds what only C++ has: templates, the kernel execution model).
 * Device memory is host memory. Streams and events are emulated in emu_stream.cc: by
 * default (EMU_STREAMS=sync) every launch and copy has completed when its call returns;
 * EMU_STREAMS=lazy / mixed defer the work as a GPU may. The device: one, an H100-like part
 * (compute capability 9.0) with 16 multiprocessors (fewer than a real one, so that
 * grids sized per SM stay small; any count is correct: EMU_SM_COUNT) and 80 GiB
 * (EMU_DEVICE_MIB). */
#ifndef ANVIL_TESTS_EMU_CUDA_RUNTIME_API_H
#define ANVIL_TESTS_EMU_CUDA_RUNTIME_API_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int cudaError_t;
enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidDevice = 101
};
typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
enum { cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2 };

static inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
static inline const char *cudaGetErrorString(cudaError_t e) {
    return e == cudaSuccess ? "no error" : "error (host emulation)";
}

/* ---- memory: host memory, copies done at once ---- */
typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;
/* Device memory is counted (tests/emu/emu_cuda.cc): a device of EMU_DEVICE_MIB MiB
 * (default 80 GiB, 1 GiB of it taken by the context as on a GPU), cudaMalloc failing
 * past it, cudaMemGetInfo reporting what is left; EMU_REPORT_DEVICE_PEAK=1 prints the
 * peak of the bytes allocated at exit. Pinned host memory is not device memory. A new
 * allocation is filled with 0xff bytes (NaN in bf16 and fp32), as cudaMalloc's memory
 * is not zeroed. */
#ifdef __cplusplus
extern "C" {
#endif
void *emu_device_malloc(size_t n);
void emu_device_free(void *p);
void emu_device_info(size_t *free_bytes, size_t *total_bytes);
int emu_smem_optin(void);       /* EMU_SMEM_OPTIN_KIB: shared memory per block, opted in */
#ifdef __cplusplus
}
#endif
static inline cudaError_t cudaMalloc(void **p, size_t n) {
    *p = emu_device_malloc(n);
    return *p != NULL ? cudaSuccess : cudaErrorMemoryAllocation;
}
/* ---- streams, events, asynchronous copies: tests/emu/emu_stream.cc (EMU_STREAMS:
 * carried out at once, or as late as waits allow) ---- */
#ifdef __cplusplus
extern "C" {
#endif
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k,
                            cudaStream_t s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
/* queue fn(arg) on s (C callers: the emulated NCCL) */
void emu_enqueue_c(cudaStream_t s, void (*fn)(void *), void *arg);
/* carry out every stream's queued work, unless some is being carried out now (the host
 * is about to block: tests/emu/emu_mpi_progress.c) */
void emu_streams_progress(void);
#ifdef __cplusplus
}
#endif

/* cudaMemcpy (test programs; the backend copies asynchronously): the copy queued on the
 * legacy stream, returning once it and all earlier work of every stream is done (the
 * legacy stream waits for the blocking streams, and a device-to-host copy for itself) */
static inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k) {
    cudaError_t e = cudaMemcpyAsync(dst, src, n, k, NULL);
    return e != cudaSuccess ? e : cudaDeviceSynchronize();
}

static inline cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    emu_device_info(free_bytes, total_bytes);
    return cudaSuccess;
}

/* ---- the device ---- */
typedef enum cudaDeviceAttr {
    cudaDevAttrClockRate = 13,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97
} cudaDeviceAttr;
typedef struct cudaDeviceProp {
    char name[256];
} cudaDeviceProp;
/* The emulated node's GPUs: EMU_DEVICE_COUNT (default 8, so that every rank of a test
   gets its own, as on a GPU node) as this process sees them, the first being the node's
   GPU number EMU_DEVICE_FIRST (default 0; a launcher that gives each rank its own GPU
   through CUDA_VISIBLE_DEVICES is EMU_DEVICE_COUNT=1 with a different first per rank).
   Every one is the same host emulation; only the numbers differ. */
static inline int emu_env_int(const char *name, int dflt, int lo, int hi) {
    const char *e = getenv(name);
    int v = e && *e ? atoi(e) : dflt;
    return v >= lo && v <= hi ? v : dflt;
}
static inline cudaError_t cudaGetDeviceCount(int *n) {
    *n = emu_env_int("EMU_DEVICE_COUNT", 8, 1, 64);
    return cudaSuccess;
}
static inline cudaError_t cudaSetDevice(int dev) {
    int n = 0;
    cudaGetDeviceCount(&n);
    return dev >= 0 && dev < n ? cudaSuccess : cudaErrorInvalidDevice;
}
/* PCI bus id of device dev: bus number EMU_DEVICE_FIRST + dev */
static inline cudaError_t cudaDeviceGetPCIBusId(char *buf, int len, int dev) {
    int n = 0;
    cudaGetDeviceCount(&n);
    if (dev < 0 || dev >= n || len <= 0) return cudaErrorInvalidDevice;
    snprintf(buf, (size_t)len, "0000:%02x:00.0",
             (emu_env_int("EMU_DEVICE_FIRST", 0, 0, 191) + dev) & 0xff);
    return cudaSuccess;
}
static inline cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int dev) {
    (void)dev;
    switch (a) {
    case cudaDevAttrClockRate: *v = 1980000; break;            /* kHz */
    case cudaDevAttrMultiProcessorCount: {          /* EMU_SM_COUNT, default 16 */
        const char *e = getenv("EMU_SM_COUNT");
        int n = e && *e ? atoi(e) : 16;
        *v = n > 0 && n <= 1024 ? n : 16;
        break;
    }
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = emu_smem_optin(); break;
    }
    return cudaSuccess;
}
/* the toolkit the emulation stands in for */
static inline cudaError_t cudaDriverGetVersion(int *v) {
    *v = 13000;
    return cudaSuccess;
}
static inline cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = 13000;
    return cudaSuccess;
}
static inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev) {
    (void)dev;
    strcpy(p->name, "host emulation (tests/emu)");
    return cudaSuccess;
}

#endif
