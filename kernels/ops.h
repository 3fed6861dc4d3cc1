// kernels/ops.h: the one interface through which the model runs every op.
//
// A backend is a struct of function pointers (as in ggml). The model code calls
// `be->matmul_forward(...)` and never knows whether the pointers it passes are host
// memory (cpu backend) or device memory (cuda backend, a later issue). All memory a
// backend op touches is allocated through the same backend's `alloc`.
//
// Dimension legend (used in every shape comment below and in the model):
//   B  batch (micro-batch) size          T   sequence length
//   C  model channels (d_model)          N   rows = B*T
//   NH query heads                       KVH key/value heads (NH % KVH == 0)
//   HS head size                         F   feed-forward (MLP hidden) channels
//   V  real vocabulary size              Vp  padded vocabulary (rows of wte / logits)
//   Vs rows of a vocabulary shard         Vv  real (unpadded) rows of a shard
//   P  ranks a tensor is sharded over (tensor parallel)
//   OC output channels of a matmul
//
// Conventions every op follows:
// - Backward ops ACCUMULATE (+=) into every gradient buffer they write, inputs and
//   parameters alike; the caller zeroes gradient buffers when it needs to. Exceptions
//   are named in the member's comment (rope_backward works in place,
//   crossentropy_stats / _combine / _backward overwrite).
// - A NULL gradient pointer means "not needed" (a frozen weight, the first layer's
//   input) wherever the comment says "or NULL".
// - Tensors are fp32 on the cpu backend. Token ids and targets are int32; a target < 0
//   is ignored (no loss, no gradient), which SFT masking relies on.
#ifndef ANVIL_KERNELS_OPS_H
#define ANVIL_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// RoPE frequency parameters; `scaling_llama3` selects Llama-3's wavelength-dependent
// frequency scaling (factor, low/high frequency factors, original context length).
typedef struct rope_params {
    float theta;                 // base, 10000 (Llama 2) or 500000 (Llama 3)
    int scaling_llama3;          // 0: plain RoPE; 1: Llama-3 scaling below
    float factor;                // e.g. 32 (Llama 3.2) or 8 (Llama 3.1)
    float low_freq_factor;       // e.g. 1
    float high_freq_factor;      // e.g. 4
    int original_max_pos;        // e.g. 8192
} rope_params;

// Fill host tables cos/sin (maxT, HS/2) for RoPE in the Hugging Face "rotate_half"
// layout: element i of a head is paired with element i + HS/2 and rotated by angle
// pos * inv_freq[i]. Host-side helper shared by every backend (tables are copied in).
void rope_tables_fill(float *cos_tab, float *sin_tab, int maxT, int HS, const rope_params *p);

typedef struct anv_backend {
    const char *name;            // "cpu" or "cuda"
    int host_memory;             // 1: alloc returns host memory the CPU may read directly

    // ---- memory --------------------------------------------------------------
    void *(*alloc)(size_t bytes);                        // zeroed; NULL on failure
    void (*free)(void *p);                               // free(NULL) is a no-op
    void (*zero)(void *p, size_t bytes);
    void (*copy_from_host)(void *dst, const void *src, size_t bytes);
    void (*copy_to_host)(void *dst, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);  // same-backend copy
    void (*synchronize)(void);                           // wait for queued work

    // ---- embedding: token + optional learned position ---------------------
    // The table may be one tensor-parallel shard of the vocabulary: wte holds rows
    // [v0, v0 + Vs) of the full table (v0 = 0, Vs = Vp when unsharded).
    // out (B,T,C) = (v0 <= tok < v0+Vs ? wte[tok - v0] : 0) + (wpe ? wpe[t] : 0), with
    // tok = tokens[b,t]; wte (Vs,C), wpe (maxT,C) or NULL.
    void (*encoder_forward)(float *out, const int32_t *tokens, const float *wte,
                            const float *wpe, int B, int T, int C, int v0, int Vs);
    // dwte (Vs,C) += scatter of dout (B,T,C) for tokens in [v0, v0+Vs); dwpe (maxT,C)
    // += dout summed over the batch, or NULL.
    void (*encoder_backward)(float *dwte, float *dwpe, const float *dout,
                             const int32_t *tokens, int B, int T, int C, int v0, int Vs);
    // ---- LayerNorm (with bias) ------------------------------------------------
    // out (N,C); mean, rstd (N) saved for backward; weight, bias (C).
    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int N, int C,
                              float eps);
    // dinp (N,C), dweight (C), dbias (C): all accumulated.
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias,
                               const float *dout, const float *inp, const float *weight,
                               const float *mean, const float *rstd, int N, int C);

    // ---- RMSNorm ----------------------------------------------------------------
    // out (N,C) = inp * rstd * weight; rstd (N) saved.
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp,
                            const float *weight, int N, int C, float eps);
    void (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout,
                             const float *inp, const float *weight, const float *rstd,
                             int N, int C);

    // ---- matmul: out = inp @ weight^T + bias -----------------------------------
    // out (N,OC) overwritten; inp (N,C); weight (OC,C) (PyTorch Linear layout);
    // bias (OC) or NULL.
    void (*matmul_forward)(float *out, const float *inp, const float *weight,
                           const float *bias, int N, int C, int OC);
    // dinp (N,C) or NULL, dweight (OC,C) or NULL, dbias (OC) or NULL; accumulated.
    void (*matmul_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int C, int OC);

    // ---- RoPE, in place ----------------------------------------------------------
    // x (B,T,H,HS) rotated in place, position t = 0..T-1; cos/sin tables (maxT, HS/2)
    // from rope_tables_fill, copied to the backend.
    void (*rope_forward)(float *x, const float *cos_tab, const float *sin_tab,
                         int B, int T, int H, int HS);
    // dx (B,T,H,HS): IN PLACE, the gradient w.r.t. the rotated tensor becomes the
    // gradient w.r.t. the unrotated one (rotation by -angle).
    void (*rope_backward)(float *dx, const float *cos_tab, const float *sin_tab,
                          int B, int T, int H, int HS);

    // ---- causal self-attention with grouped-query heads ------------------------------
    // q (B,T,NH,HS), k and v (B,T,KVH,HS); query head h reads kv head h / (NH/KVH).
    // out (B,T,NH,HS) overwritten. `state` holds what backward needs; its size in floats
    // is attention_state_floats(B,T,NH) (cpu: the softmax probabilities (B,NH,T,T)).
    size_t (*attention_state_floats)(int B, int T, int NH);
    void (*attention_forward)(float *out, float *state, const float *q, const float *k,
                              const float *v, int B, int T, int NH, int KVH, int HS);
    // dq (B,T,NH,HS), dk and dv (B,T,KVH,HS) accumulated. `scratch` has
    // attention_scratch_floats(B,T,NH) floats and is overwritten.
    size_t (*attention_scratch_floats)(int B, int T, int NH);
    void (*attention_backward)(float *dq, float *dk, float *dv, float *scratch,
                               const float *dout, const float *state, const float *q,
                               const float *k, const float *v, int B, int T, int NH,
                               int KVH, int HS);

    // ---- pointwise -------------------------------------------------------------------
    // GELU, tanh approximation (GPT-2): out (n) overwritten, dinp (n) accumulated.
    void (*gelu_forward)(float *out, const float *inp, size_t n);
    void (*gelu_backward)(float *dinp, const float *inp, const float *dout, size_t n);
    // SwiGLU: out = silu(gate) * up; dgate, dup accumulated.
    void (*swiglu_forward)(float *out, const float *gate, const float *up, size_t n);
    void (*swiglu_backward)(float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, size_t n);
    // residual: out = a + b (out may alias a); backward: da += dout, db += dout
    // (da or db may be NULL).
    void (*residual_forward)(float *out, const float *a, const float *b, size_t n);
    void (*residual_backward)(float *da, float *db, const float *dout, size_t n);

    // ---- softmax cross-entropy over a (possibly sharded) vocabulary -------------
    // In three steps so that a vocabulary split over P tensor-parallel ranks never
    // needs the full logits on one rank: each rank reduces its columns to three numbers
    // per row, the P triples of a row are gathered and combined into the log-sum-exp,
    // and each rank forms the gradient of its own columns. Unsharded, P = 1, v0 = 0.
    // logits (N,Vs) hold the vocabulary columns [v0, v0+Vs) of which the first Vv are
    // real (0 <= Vv <= Vs; the rest is padding that gets no probability mass).
    //
    // stats (N,3) OVERWRITTEN per row: {m, s, z} with m = the max over the real
    // columns, s = sum over them of exp(logit - m), z = the target's logit when the
    // target falls in [v0, v0+Vv), else 0. A shard with no real column (Vv = 0) gives
    // {-inf, 0, 0}.
    void (*crossentropy_stats)(float *stats, const float *logits, const int32_t *targets,
                               int N, int v0, int Vv, int Vs);
    // stats (P,N,3): the P shards' stats in rank order. lse (N) and losses (N)
    // OVERWRITTEN: lse = M + log(sum_p s_p exp(m_p - M)) with M = max_p m_p;
    // losses = lse - sum_p z_p for rows with target >= 0, 0 elsewhere.
    void (*crossentropy_combine)(float *losses, float *lse, const float *stats,
                                 const int32_t *targets, int N, int P);
    // dlogits (N,Vs) OVERWRITTEN with dloss * (exp(logit - lse) - onehot(target)) over
    // the real columns of rows with target >= 0; zero on ignored rows and on padding.
    // dlogits may alias logits (the usual case: the logits buffer is reused).
    void (*crossentropy_backward)(float *dlogits, const float *logits, const float *lse,
                                  const int32_t *targets, int N, int v0, int Vv, int Vs,
                                  float dloss);
    // ---- optimizer ---------------------------------------------------------------------
    // sum of squares of x (n), accumulated in double; used for the global grad norm.
    double (*sum_squares)(const float *x, size_t n);
    // In-place x *= s.
    void (*scale)(float *x, float s, size_t n);
    // AdamW on one tensor: g = grad * grad_scale; m = b1 m + (1-b1) g;
    // v = b2 v + (1-b2) g^2; param -= lr * (mhat / (sqrt(vhat) + eps) + wd * param)
    // with mhat = m / (1 - b1^t), vhat = v / (1 - b2^t), t >= 1.
    void (*adamw_update)(float *param, const float *grad, float *m, float *v, size_t n,
                         float lr, float beta1, float beta2, float eps, float weight_decay,
                         float grad_scale, int t);
} anv_backend;

// The fp32 reference backend (OpenMP + BLAS). Always available.
const anv_backend *anv_backend_cpu(void);

#ifdef __cplusplus
}
#endif
#endif
