// kernels/cuda/cuda_ops.h: internal declarations of the bf16 cuda backend.
//
// One function per member of anv_backend (kernels/ops.h), named cuda_<member>, with
// C linkage and no CUDA type, so that C code (the gpu test suite) may call them. Each
// op lives in kernels/cuda/<op>.cu, the same stem as kernels/cpu/<op>.c; backend.cu
// holds device setup, the streams, memory and the conversions, and wires everything
// into the struct anv_backend_cuda() returns. Semantics, shapes and accumulate
// conventions are those of ops.h and are not repeated here. anv_act pointers are
// __nv_bfloat16 device memory; float pointers fp32 device memory.
#ifndef ANVIL_KERNELS_CUDA_CUDA_OPS_H
#define ANVIL_KERNELS_CUDA_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// backend.cu: memory and conversions
void *cuda_alloc(size_t bytes);
void cuda_free(void *p);
void cuda_zero(void *p, size_t bytes);
void cuda_copy_from_host(void *dst, const void *src, size_t bytes);
void cuda_copy_to_host(void *dst, const void *src, size_t bytes);
void cuda_copy(void *dst, const void *src, size_t bytes);
void cuda_synchronize(void);
void cuda_act_from_host_f32(anv_act *dst, const float *src, size_t n);
void cuda_act_to_host_f32(float *dst, const anv_act *src, size_t n);
void cuda_act_from_f32(anv_act *dst, const float *src, size_t n);
void cuda_act_to_f32(float *dst, const anv_act *src, size_t n);
double cuda_peak_flops(void);
void cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
// The compute stream (a cudaStream_t) for the NCCL backend's event ordering.
void *cuda_compute_stream(void);
// Opens cuBLASLt (soname NULL: the toolkit's, libcublasLt.so.<major>) and resolves what
// the backend calls; anv_backend_cuda does it first. Returns 0, or 2 after one line on
// stderr (no such library, or a function missing from it).
int cuda_lt_load(const char *soname);

// encoder.cu
void cuda_encoder_forward(anv_act *out, const int32_t *tokens, const anv_act *wte,
                          const anv_act *wpe, int B, int T, int C, int v0, int Vs);
void cuda_encoder_backward(float *dwte, float *dwpe, const anv_act *dout,
                           const int32_t *tokens, int B, int T, int C, int v0, int Vs);
// layernorm.cu
void cuda_layernorm_forward(anv_act *out, float *mean, float *rstd, const anv_act *inp,
                            const anv_act *weight, const anv_act *bias, int N, int C,
                            float eps);
void cuda_layernorm_residual_forward(anv_act *res, anv_act *out, float *mean, float *rstd,
                                     const anv_act *a, const anv_act *b,
                                     const anv_act *weight, const anv_act *bias, int N,
                                     int C, float eps);
void cuda_layernorm_backward(anv_act *dinp, float *dweight, float *dbias,
                             const anv_act *dout, const anv_act *inp, const anv_act *weight,
                             const float *mean, const float *rstd, int N, int C);
// rmsnorm.cu
void cuda_rmsnorm_forward(anv_act *out, float *rstd, const anv_act *inp,
                          const anv_act *weight, int N, int C, float eps);
void cuda_rmsnorm_residual_forward(anv_act *res, anv_act *out, float *rstd,
                                   const anv_act *a, const anv_act *b, const anv_act *weight,
                                   int N, int C, float eps);
void cuda_rmsnorm_backward(anv_act *dinp, float *dweight, const anv_act *dout,
                           const anv_act *inp, const anv_act *weight, const float *rstd,
                           int N, int C);
// matmul.cu
void cuda_matmul_forward(anv_act *out, anv_act *pre_gelu, const anv_act *inp,
                         const anv_act *weight, const anv_act *bias, int N, int C, int OC);
void cuda_matmul_backward(anv_act *dinp, anv_grad_mode dinp_mode, float *dweight,
                          float *dbias, const anv_act *dout, const anv_act *inp,
                          const anv_act *weight, const anv_act *pre_gelu, int N, int C, int OC);
void cuda_matmul_tune(void *const *scratch, const size_t *bytes, int n, FILE *table,
                      anv_tune_report *rep);
// attention.cu (RoPE inside, see ops.h)
size_t cuda_attention_state_floats(int B, int T, int NH, int KVH, int HS, int rope);
void cuda_attention_forward(anv_act *out, float *state, const anv_act *qkv,
                            const float *rope_cos, const float *rope_sin, int B, int T, int NH,
                            int KVH, int HS);
size_t cuda_attention_scratch_floats(int B, int T, int NH, int KVH, int HS, int rope);
void cuda_attention_backward(anv_act *dqkv, float *scratch, const anv_act *dout,
                             const anv_act *out, const float *state, const anv_act *qkv,
                             const float *rope_cos, const float *rope_sin, int B, int T,
                             int NH, int KVH, int HS);
// gelu.cu, swiglu.cu, residual.cu
void cuda_gelu_forward(anv_act *out, const anv_act *inp, size_t n);
void cuda_gelu_backward(anv_act *dinp, const anv_act *inp, const anv_act *dout, size_t n);
// not a backend member: d (n) *= gelu'(x (n)) in place (matmul.cu's dGELU fallback)
void cuda_gelu_backward_inplace(anv_act *d, const anv_act *x, size_t n);
void cuda_swiglu_forward(anv_act *out, const anv_act *gu, int N, int F);
void cuda_swiglu_backward(anv_act *dgu, const anv_act *dout, const anv_act *gu, int N, int F);
void cuda_residual_forward(anv_act *out, const anv_act *a, const anv_act *b, size_t n);
void cuda_residual_backward(anv_act *da, anv_act *db, const anv_act *dout, size_t n);
// crossentropy.cu
void cuda_crossentropy_stats(float *stats, const anv_act *logits, const int32_t *targets,
                             int N, int v0, int Vv, int Vs);
void cuda_crossentropy_combine(float *losses, float *lse, const float *stats,
                               const int32_t *targets, int N, int P);
void cuda_crossentropy_backward(anv_act *dlogits, const anv_act *logits, const float *lse,
                                const int32_t *targets, int N, int v0, int Vv, int Vs,
                                float dloss);
void cuda_crossentropy_fused(anv_act *dlogits, float *losses, const anv_act *logits,
                             const int32_t *targets, int N, int Vv, int Vs, float dloss);
// adamw.cu
double cuda_sum_squares(const float *x, const anv_seg *segs, int nseg);
void cuda_scale(float *x, float s, size_t n);
void cuda_add_f32(float *dst, const float *src, size_t n);
void cuda_adamw_update(anv_act *param, float *master, const float *grad, float *m, float *v,
                       const anv_seg *segs, int nseg, const anv_adamw_args *a);

#ifdef __cplusplus
}
#endif
#endif
