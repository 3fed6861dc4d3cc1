// tests/gpu/test_gpu_ops.h: what the parts of the gpu op test share (test_gpu_ops.c
// holds the helpers, main and most ops; test_gpu_ops_vocab.c the vocabulary ops,
// encoder and cross-entropy), and the table of bounds every comparison uses.
#ifndef ANVIL_TESTS_GPU_TEST_GPU_OPS_H
#define ANVIL_TESTS_GPU_TEST_GPU_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"

#if defined(__GNUC__)
#define TEST_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TEST_PRINTF(f, a)
#endif

// ---- bounds -----------------------------------------------------------------------------
// Error model: the reference is fp32 on the same bf16-exact inputs, so the GPU differs
// by its bf16 roundings plus fp32-level noise (~1e-6). bf16 keeps 8 significant bits:
// one rounding errs by at most u = 2^-8 = 3.9e-3 relative, ~1.6e-3 RMS over many
// elements. So per rounding on an op's path: rel ~1.6e-3, max <= u. For an accumulated
// output the denominators are at least the prefill's (a bf16 sum rounds relative to
// prefill + gradient, and the prefill is <= half the gradient's RMS: <= 1.5u). A wrong
// index, a dropped term or a missed element gives errors of order 1; no bound exceeds
// 3e-2.
typedef struct tol {
    double rel;                  // bound on ||gpu - cpu||_2 / ||cpu||_2
    double max;                  // bound on max |gpu - cpu| / max |cpu|
} tol;

// fp32-exact arithmetic (a copy, a sum, a rotation) rounded once: every element is
// within u, both figures <= 3.9e-3. encoder_forward, residual_forward, rope, res.
static const tol TOL_ROUND1 = {5e-3, 5e-3};
// The same rounded into a pre-filled gradient: <= 1.5u = 5.9e-3. residual_backward.
static const tol TOL_ROUND1_ACC = {8e-3, 8e-3};
// GELU and SwiGLU, forward and backward: one rounding (1.5u accumulated) plus the GPU's
// tanh/exp, which may be the fast intrinsics (tanh.approx: 2^-11 relative of tanh; it
// matters only where gelu(x) ~ 0, where it is ~1e-3 absolute at most).
static const tol TOL_POINTWISE = {1e-2, 1e-2};
// LayerNorm / RMSNorm out and dinp: fp32 statistics and formula, one rounding (1.5u
// accumulated); the fused residual variants may normalize the rounded res (another u
// scaled by |res| / |res - mean| ~ 1 with these inputs): <= ~2u worst, ~2.3e-3 RMS.
static const tol TOL_NORM = {1e-2, 1.5e-2};
// fp32 results computed in fp32 from the same inputs: norm mean (as |dmean| * rstd)
// and rstd, norm dweight / dbias, encoder dwte / dwpe, cross-entropy s, lse, losses.
// Only summation order and fast exp/log differ (~1e-6); 1e-4 leaves two orders of margin
// and still flags a value that went through bf16 (~1.6e-3).
static const tol TOL_F32 = {1e-4, 1e-4};
// The fused residual norms' mean and rstd, if computed from the rounded res: ~u RMS per
// element of res, averaged over C: ~1e-3 at C = 8.
static const tol TOL_NORM_RES_STAT = {5e-3, 5e-3};
// matmul out, pre_gelu and dinp: fp32 (tensor-core) sums of exact bf16 products rounded
// once; an unfused GELU / dGELU applies to the rounded product: <= 2u.
static const tol TOL_MATMUL = {1e-2, 1.5e-2};
// matmul dweight, dbias (fp32): sums of exact products over N <= 256 rows; tensor cores
// may truncate while accumulating (~N 2^-24 = 1.5e-5 relative).
static const tol TOL_MATMUL_F32 = {1e-3, 2e-3};
// attention out: flash attention rounds the probabilities to bf16 for P V (~u RMS on
// out), then out itself: ~2.3e-3 RMS, ~2u worst.
static const tol TOL_ATTN = {1e-2, 2e-2};
// attention state = lse (fp32, ops.h): fp32 scores of exact products (~1e-6); a q
// pre-scaled in bf16 (1/sqrt(HS) is not a power of 2 for HS = 8, 32, 128) adds ~u |score|.
static const tol TOL_ATTN_LSE = {1e-3, 5e-3};
// The same with RoPE: the tensor-core path rounds the rotated q and k to bf16 in shared
// memory (the cpu keeps them fp32): ~u/sqrt(3) per element, ~2e-3 absolute RMS on a
// score of this test, against an lse of 3..6.
static const tol TOL_ATTN_LSE_ROPE = {2e-3, 5e-3};
// attention dq, dk, dv: P recomputed and rounded to bf16 for its MMA, dS likewise, D =
// rowsum(dout * out) from the bf16 out, the result rounded into the prefill: 3-4
// roundings, ~4e-3 RMS.
static const tol TOL_ATTN_GRAD = {2e-2, 3e-2};
// crossentropy dlogits: dloss (p - onehot) in fp32 from the same logits and an lse that
// agrees to ~1e-6, rounded once: <= u.
static const tol TOL_CE_DLOGITS = {5e-3, 5e-3};
// AdamW master weights, m, v: the same fp32 formula on the same fp32 values; FMA
// contraction and 1/(1 - b^t) vs a division differ by ~1 ulp (6e-8) per step; 3 steps.
static const tol TOL_ADAMW = {2e-6, 2e-6};
// AdamW's bf16 param vs the cpu param rounded: equal except where the two masters
// straddle a rounding boundary (~1e-7 / 4e-3 of the elements), there by one bf16 ulp
// (<= 2^-7 of the element).
static const tol TOL_ADAMW_PARAM = {1e-3, 1e-2};
// sum_squares: fp32 partial sums of positive terms per block (~sqrt(k) 6e-8 relative),
// combined in double; every segment of the test contributes >= 5% of the total.
static const double TOL_SUMSQ = 1e-4;

// ---- shared state and helpers (test_gpu_ops.c) -----------------------------------------

extern const anv_backend *gpu, *cpu;
extern const anv_backend *both[2];       // {gpu, cpu}: run an op on each in turn

enum { F32 = 0, ACT = 1 };       // tensor element kinds: fp32 (or int32), anv_act

typedef struct tensor {
    const anv_backend *be;
    int act;                     // ACT: be->act_bytes per element; F32: 4 (fp32 or int32)
    size_t n, esize;             // elements, bytes per element
    unsigned char *base;         // the allocation: GUARD + n + GUARD elements
    void *p;                     // the tensor: base + GUARD elements
} tensor;

// One tensor on each backend, same shape; {0} (NONE) stands for a NULL argument.
typedef struct pair {
    tensor *g, *c;
} pair;
static const pair NONE = {NULL, NULL};

uint64_t rng_next(void);                          // splitmix64, fixed seed
float urand(void);                                // uniform in [-1, 1)
float bf16_round(float x);                        // host round to nearest even
const char *nm(const char *fmt, ...) TEST_PRINTF(1, 2);   // a check's name, use at once
void report(int ok, const char *fmt, ...) TEST_PRINTF(2, 3);   // one line, counted
// host memory freed by case_end
void *hmalloc(size_t bytes);
float *hfloats(size_t n);
float *hconst(size_t n, float v);
float *hrand(size_t n, float lo, float hi);       // uniform, rounded to bf16
// backend tensors (freed by case_end)
tensor *t_new(const anv_backend *be, int act, size_t n);   // zeroed, guarded
void t_set(tensor *t, const float *h);
float *t_get(const tensor *t);                    // a host copy, fp32
void *on(pair x, const anv_backend *be);          // x's pointer on be; NULL for NONE
pair p_zero(int act, size_t n);                   // zero on both sides
pair p_in(int act, const float *h, size_t n);     // h on both sides
pair p_out(int act, size_t n);                    // NaN on the gpu, zero on the cpu
pair p_i32(const int32_t *h, size_t n);
void case_end(const char *what);                  // guards checked, everything freed
// comparisons (test_gpu_ops.c says how)
void compare_arrays(const char *name, const float *g, const float *c, const float *pre,
                    size_t n, tol t);
void compare(const char *name, pair x, tol t);
void compare_acc(const char *name, pair x, const float *pre, tol t);
void compare_exact(const char *name, const float *g, const float *c, size_t n);
float *prefill(pair x);

// test_gpu_ops_vocab.c
void test_encoder(int B, int T, int C, int v0, int Vs, int V, int with_wpe);
void test_crossentropy(int N, int V, int P, int Vs);
void test_crossentropy_fused(int N, int V, int Vs);

// test_gpu_ops_attention.c; rope: 0 none, 1 plain RoPE, 2 with Llama-3 scaling
void test_attention(int B, int T, int NH, int KVH, int HS, int rope);

#endif
