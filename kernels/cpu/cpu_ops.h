// kernels/cpu/cpu_ops.h: internal declarations of the fp32 cpu backend.
//
// One function per member of anv_backend (kernels/ops.h), named cpu_<member>. Each op
// lives in kernels/cpu/<op>.c (the same stem the cuda backend will use); backend.c
// holds the memory functions and wires everything into the static struct returned by
// anv_backend_cpu(). The semantics, shapes and accumulate conventions are those
// documented in ops.h and are not repeated here. Not a public header: only the files
// of this folder (and tests/unit/test_ops.c, which checks cpu_expf) include it.
//
// cpu_expf is here because it is shared by four ops (softmax in attention and
// cross-entropy, the sigmoids of GELU and SwiGLU). The libm expf/tanhf are calls the
// compiler cannot vectorize without -ffast-math, and that made those ops cost ~0.3 s
// of a GPT-2 124M step on 2 cores; this inline version vectorizes.
#ifndef ANVIL_KERNELS_CPU_CPU_OPS_H
#define ANVIL_KERNELS_CPU_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// exp(x) in float, branch-free and call-free so that loops calling it vectorize.
// x = n ln2 + r with n = round(x / ln2) and |r| <= ln2/2; exp(r) from Cephes' expf
// polynomial; 2^n written directly into the exponent bits. Relative error <= 2 ulp.
// x is clamped to [-87, 88], where 2^n stays a normal float: exp(-87) = 1.6e-38 stands
// in for underflow to 0 and exp(88) = 1.7e38 for overflow to inf. NaN stays NaN.
static inline float cpu_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    // adding 1.5 * 2^23 leaves no fraction bits, so t holds round(x / ln2) exactly
    // and its low mantissa bits hold n + 0x400000
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f;                       // ln2 = 0.693359375 - 2.12e-4,
    r = r + n * 2.12194440e-4f;                           // split for an exact product
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float er = p * r * r + r + 1.0f;                      // exp(r)
    uint32_t tbits;
    memcpy(&tbits, &t, sizeof tbits);
    uint32_t pow2_bits = (tbits - 0x4B400000u + 127u) << 23;   // biased exponent n + 127
    float pow2;
    memcpy(&pow2, &pow2_bits, sizeof pow2);
    return er * pow2;
}

// ---- memory (backend.c) ------------------------------------------------------------
void *cpu_alloc(size_t bytes);
void cpu_free(void *p);
void cpu_zero(void *p, size_t bytes);
void cpu_copy_from_host(void *dst, const void *src, size_t bytes);
void cpu_copy_to_host(void *dst, const void *src, size_t bytes);
void cpu_copy(void *dst, const void *src, size_t bytes);
void cpu_synchronize(void);
void cpu_act_from_f32(anv_act *dst, const float *src, size_t n);   // fp32: copies
void cpu_act_to_f32(float *dst, const anv_act *src, size_t n);

// ---- encoder.c ----------------------------------------------------------------------
void cpu_encoder_forward(anv_act *out, const int32_t *tokens, const anv_act *wte,
                         const anv_act *wpe, int B, int T, int C, int v0, int Vs);
void cpu_encoder_backward(float *dwte, float *dwpe, const anv_act *dout,
                          const int32_t *tokens, int B, int T, int C, int v0, int Vs);

// ---- layernorm.c --------------------------------------------------------------------
void cpu_layernorm_forward(anv_act *out, float *mean, float *rstd, const anv_act *inp,
                           const anv_act *weight, const anv_act *bias, int N, int C,
                           float eps);
void cpu_layernorm_residual_forward(anv_act *res, anv_act *out, float *mean, float *rstd,
                                    const anv_act *a, const anv_act *b, const anv_act *weight,
                                    const anv_act *bias, int N, int C, float eps);
void cpu_layernorm_backward(anv_act *dinp, float *dweight, float *dbias, const anv_act *dout,
                            const anv_act *inp, const anv_act *weight, const float *mean,
                            const float *rstd, int N, int C);

// ---- rmsnorm.c ----------------------------------------------------------------------
void cpu_rmsnorm_forward(anv_act *out, float *rstd, const anv_act *inp, const anv_act *weight,
                         int N, int C, float eps);
void cpu_rmsnorm_residual_forward(anv_act *res, anv_act *out, float *rstd, const anv_act *a,
                                  const anv_act *b, const anv_act *weight, int N, int C,
                                  float eps);
void cpu_rmsnorm_backward(anv_act *dinp, float *dweight, const anv_act *dout,
                          const anv_act *inp, const anv_act *weight, const float *rstd,
                          int N, int C);

// ---- matmul.c -----------------------------------------------------------------------
void cpu_matmul_forward(anv_act *out, anv_act *pre_gelu, const anv_act *inp,
                        const anv_act *weight, const anv_act *bias, int N, int C, int OC);
void cpu_matmul_backward(anv_act *dinp, anv_grad_mode dinp_mode, float *dweight, float *dbias,
                         const anv_act *dout, const anv_act *inp, const anv_act *weight,
                         const anv_act *pre_gelu, int N, int C, int OC);

// ---- rope.c (helpers of attention.c) -----------------------------------------------
// dst (B,T,H,HS) = src rotated by sign * angle, src's H heads of HS at each position,
// positions src_ld elements apart; dst may be src when src_ld = H * HS.
void cpu_rope_rotate(float *dst, const float *src, size_t src_ld, const float *cos_tab,
                     const float *sin_tab, int B, int T, int H, int HS, float sign);
// One head row (HS) at position t: dst = src rotated by sign * angle; dst may be src.
void cpu_rope_row(float *dst, const float *src, const float *cos_tab, const float *sin_tab,
                  int t, int HS, float sign);

// ---- attention.c --------------------------------------------------------------------
size_t cpu_attention_state_floats(int B, int T, int NH, int KVH, int HS, int rope);
void cpu_attention_forward(anv_act *out, float *state, const anv_act *qkv,
                           const float *rope_cos, const float *rope_sin, int B, int T, int NH,
                           int KVH, int HS);
size_t cpu_attention_scratch_floats(int B, int T, int NH, int KVH, int HS, int rope);
void cpu_attention_backward(anv_act *dqkv, float *scratch, const anv_act *dout,
                            const anv_act *out, const float *state, const anv_act *qkv,
                            const float *rope_cos, const float *rope_sin, int B, int T,
                            int NH, int KVH, int HS);

// ---- gelu.c, swiglu.c, residual.c ---------------------------------------------------
void cpu_gelu_forward(anv_act *out, const anv_act *inp, size_t n);
void cpu_gelu_backward_inplace(float *d, const float *x, size_t n);   // d *= gelu'(x)
void cpu_gelu_backward(anv_act *dinp, const anv_act *inp, const anv_act *dout, size_t n);
void cpu_swiglu_forward(anv_act *out, const anv_act *gu, int N, int F);
void cpu_swiglu_backward(anv_act *dgu, const anv_act *dout, const anv_act *gu, int N, int F);
void cpu_residual_forward(anv_act *out, const anv_act *a, const anv_act *b, size_t n);
void cpu_residual_backward(anv_act *da, anv_act *db, const anv_act *dout, size_t n);

// ---- crossentropy.c -----------------------------------------------------------------
void cpu_crossentropy_stats(float *stats, const anv_act *logits, const int32_t *targets,
                            int N, int v0, int Vv, int Vs);
void cpu_crossentropy_combine(float *losses, float *lse, const float *stats,
                              const int32_t *targets, int N, int P);
void cpu_crossentropy_backward(anv_act *dlogits, const anv_act *logits, const float *lse,
                               const int32_t *targets, int N, int v0, int Vv, int Vs,
                               float dloss);
void cpu_crossentropy_fused(anv_act *dlogits, float *losses, const anv_act *logits,
                            const int32_t *targets, int N, int Vv, int Vs, float dloss);

// ---- adamw.c (optimizer helpers) ----------------------------------------------------
double cpu_sum_squares(const float *x, const anv_seg *segs, int nseg);
void cpu_scale(float *x, float s, size_t n);
void cpu_add_f32(float *dst, const float *src, size_t n);
void cpu_adamw_update(anv_act *param, float *master, const float *grad, float *m, float *v,
                      const anv_seg *segs, int nseg, const anv_adamw_args *a);

#ifdef __cplusplus
}
#endif
#endif
