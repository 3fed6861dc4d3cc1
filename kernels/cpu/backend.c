// kernels/cpu/backend.c: memory functions of the fp32 cpu backend and the backend struct.
//
// On the cpu backend "device" memory is host memory, so the copies are memcpy and
// synchronize has nothing to wait for. Allocations are 64-byte aligned (one cache line,
// one AVX-512 register) and zeroed, as ops.h promises. Large zero/copy calls are split
// over the OpenMP threads: zeroing every gradient buffer each step (about 500 MB for
// GPT-2 124M) is bandwidth-bound and one core alone does not saturate memory.
//
// anv_backend_cpu() returns one static struct that wires every member to its cpu_*
// function (declared in cpu_ops.h, one file per op in this folder).
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/cpu/cpu_ops.h"

// ----------------------------------------------------------------------------
// memory

#define CPU_ALIGN 64                      // bytes: a cache line and an AVX-512 vector
#define CPU_PARALLEL_BYTES (4u << 20)     // below 4 MiB a single memset/memcpy is faster
#define CPU_CHUNK_BYTES (1u << 20)        // work unit of the parallel memset/memcpy

// Returns a zeroed, 64-byte aligned block of `bytes` (at least one line), or NULL.
void *cpu_alloc(size_t bytes) {
    // round up to a whole number of lines: C11 aligned_alloc wants a multiple of the
    // alignment, and a zero-byte request still gets a distinct, freeable pointer
    size_t rounded = (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    if (rounded < bytes) return NULL;     // size_t overflow
    if (rounded == 0) rounded = CPU_ALIGN;
    void *p = aligned_alloc(CPU_ALIGN, rounded);
    if (p == NULL) return NULL;
    cpu_zero(p, rounded);
    return p;
}

void cpu_free(void *p) {
    free(p);                              // free(NULL) is already a no-op
}

void cpu_zero(void *p, size_t bytes) {
    if (bytes < CPU_PARALLEL_BYTES) {
        memset(p, 0, bytes);
        return;
    }
    char *c = (char *)p;
    size_t nchunks = (bytes + CPU_CHUNK_BYTES - 1) / CPU_CHUNK_BYTES;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nchunks; i++) {
        size_t off = i * CPU_CHUNK_BYTES;
        size_t len = bytes - off < CPU_CHUNK_BYTES ? bytes - off : CPU_CHUNK_BYTES;
        memset(c + off, 0, len);
    }
}

void cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes < CPU_PARALLEL_BYTES) {
        memcpy(dst, src, bytes);
        return;
    }
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t nchunks = (bytes + CPU_CHUNK_BYTES - 1) / CPU_CHUNK_BYTES;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nchunks; i++) {
        size_t off = i * CPU_CHUNK_BYTES;
        size_t len = bytes - off < CPU_CHUNK_BYTES ? bytes - off : CPU_CHUNK_BYTES;
        memcpy(d + off, s + off, len);
    }
}

void cpu_copy_from_host(void *dst, const void *src, size_t bytes) {
    cpu_copy(dst, src, bytes);
}

void cpu_copy_to_host(void *dst, const void *src, size_t bytes) {
    cpu_copy(dst, src, bytes);
}

void cpu_synchronize(void) {
    // every cpu op has finished when it returns
}

// anv_act is fp32 on this backend: the converting copies are plain copies.
void cpu_act_from_f32(anv_act *dst, const float *src, size_t n) {
    cpu_copy(dst, src, n * sizeof(float));
}

void cpu_act_to_f32(float *dst, const anv_act *src, size_t n) {
    cpu_copy(dst, src, n * sizeof(float));
}

// ----------------------------------------------------------------------------
// timing: every op has finished when it returns, so a stamp is the monotonic clock

static void *cpu_stamp_new(void) {
    return malloc(sizeof(double));
}

static void cpu_stamp_record(void *s) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    *(double *)s = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static double cpu_stamp_ms(void *a, void *b) {
    return *(const double *)b - *(const double *)a;
}

// ----------------------------------------------------------------------------
// the backend struct

static const anv_backend cpu_backend = {
    .name = "cpu",
    .peak_flops = NULL,             // train.c estimates the CPU's from its clock
    .host_memory = 1,
    .act_dtype = ANV_DTYPE_F32,
    .act_bytes = sizeof(float),
    .vocab_multiple = 1,

    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .copy_from_host = cpu_copy_from_host,
    .copy_to_host = cpu_copy_to_host,
    .copy = cpu_copy,
    .synchronize = cpu_synchronize,
    .mem_info = NULL,               // host memory: the plan is printed, not checked
    .set_deterministic = NULL,      // always deterministic
    .act_from_host_f32 = cpu_act_from_f32,
    .act_to_host_f32 = cpu_act_to_f32,
    .act_from_f32 = cpu_act_from_f32,
    .act_to_f32 = cpu_act_to_f32,

    .encoder_forward = cpu_encoder_forward,
    .encoder_backward = cpu_encoder_backward,

    .layernorm_forward = cpu_layernorm_forward,
    .layernorm_residual_forward = cpu_layernorm_residual_forward,
    .layernorm_backward = cpu_layernorm_backward,

    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_residual_forward = cpu_rmsnorm_residual_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,

    .matmul_forward = cpu_matmul_forward,
    .matmul_backward = cpu_matmul_backward,

    .attention_state_floats = cpu_attention_state_floats,
    .attention_forward = cpu_attention_forward,
    .attention_scratch_floats = cpu_attention_scratch_floats,
    .attention_backward = cpu_attention_backward,

    .gelu_forward = cpu_gelu_forward,
    .gelu_backward = cpu_gelu_backward,
    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,
    .residual_forward = cpu_residual_forward,
    .residual_backward = cpu_residual_backward,

    .crossentropy_stats = cpu_crossentropy_stats,
    .crossentropy_combine = cpu_crossentropy_combine,
    .crossentropy_backward = cpu_crossentropy_backward,
    .crossentropy_fused = cpu_crossentropy_fused,

    .sum_squares = cpu_sum_squares,
    .scale = cpu_scale,
    .add_f32 = cpu_add_f32,
    .adamw_update = cpu_adamw_update,

    .matmul_tune = NULL,            // one sgemm, nothing to choose
    .stamp_new = cpu_stamp_new,
    .stamp_record = cpu_stamp_record,
    .stamp_ms = cpu_stamp_ms,
    .stamp_free = free,
};

const anv_backend *anv_backend_cpu(void) {
    return &cpu_backend;
}
