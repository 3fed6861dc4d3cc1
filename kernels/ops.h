// kernels/ops.h: the one interface through which the model runs every op.
//
// A backend is a struct of function pointers (as in ggml). The model code calls
// `be->matmul_forward(...)` and never knows whether the pointers it passes are host
// memory (cpu backend) or device memory (cuda backend). All memory a
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
// - Backward ops ACCUMULATE (+=) into parameter gradients (fp32, zeroed by the caller
//   once per step) and into the input gradients of the norms and the residual (the
//   residual stream's gradient). Input gradients that start a buffer are OVERWRITTEN,
//   so the model never zeroes them first: attention_backward's dqkv,
//   swiglu_backward's dgu, crossentropy_stats / _combine / _backward / _fused, and
//   matmul_backward's dinp when asked (anv_grad_mode). Each member's comment says which.
// - A NULL gradient pointer means "not needed" (a frozen weight, the first layer's
//   input) wherever the comment says "or NULL".
// - Weights and activations (anv_act) are fp32 on the cpu backend and bf16 on the cuda
//   backend; everything typed float is fp32 everywhere. Token ids and targets are
//   int32; a target < 0 is ignored (no loss, no gradient), which SFT masking relies on.
// - The cuda backend queues every op on its compute stream and returns at once; only
//   the copies to the host and sum_squares wait.
#ifndef ANVIL_KERNELS_OPS_H
#define ANVIL_KERNELS_OPS_H

#include <stddef.h>
#include <stdio.h>
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

// Element types of backend tensors.
typedef enum anv_dtype { ANV_DTYPE_F32 = 0, ANV_DTYPE_BF16 = 1 } anv_dtype;

// Storage of the working weights, the activations and the activations' gradients:
// fp32 on the cpu backend, bf16 on the cuda backend (be->act_dtype, be->act_bytes
// bytes per element). The model never reads these element by element, it only passes
// pointers (offsets are element counts times act_bytes), so they are untyped. Every
// pointer declared `float *` below is fp32 on every backend: parameter gradients,
// the normalizations' saved statistics, cross-entropy statistics and losses, RoPE
// tables, the optimizer state and the fp32 master weights.
typedef void anv_act;

// How matmul_backward writes dinp: SET overwrites it (the first contribution to the
// buffer, which then needs no zeroing), ADD accumulates into it.
typedef enum anv_grad_mode { ANV_GRAD_MODE_ADD = 0, ANV_GRAD_MODE_SET = 1 } anv_grad_mode;

// A contiguous run of a flat fp32 buffer for the multi-tensor ops: elements
// [off, off + n), and the weight decay AdamW applies to them.
typedef struct anv_seg {
    size_t off, n;
    float weight_decay;
} anv_seg;

// AdamW's hyper-parameters for one step (see adamw_update).
typedef struct anv_adamw_args {
    float lr, beta1, beta2, eps;
    float grad_scale;            // gradients are multiplied by it first (clipping)
    int t;                       // 1-based update count (bias correction)
} anv_adamw_args;

// What matmul_tune did (one rank's figures).
typedef struct anv_tune_report {
    int problems;                // problems whose candidates were timed
    int changed;                 // ... where one beat the library's first choice
    int single;                  // problems with one candidate only (nothing to time)
    int skipped;                 // problems whose operands did not fit the scratch
    int candidates;              // candidate algorithms timed, all problems together
    double first_ms;             // one call of each timed problem, its first choice
    double best_ms;              // the same with the algorithms kept
    double seconds;              // wall time of the whole call
} anv_tune_report;

typedef struct anv_backend {
    const char *name;            // "cpu" or "cuda"
    // Dense peak FLOP/s of the device in the act type (for MFU), 0 if unknown; the
    // member may be NULL (cpu: the trainer estimates it; train.peak_flops overrides).
    double (*peak_flops)(void);
    int host_memory;             // 1: alloc returns host memory the CPU may read directly
    anv_dtype act_dtype;         // type of weights and activations (anv_act)
    size_t act_bytes;            // its size: 4 (cpu, fp32) or 2 (cuda, bf16)
    int vocab_multiple;          // the model pads each vocabulary shard's rows to a
                                 // multiple of this (cpu 1; cuda 64: 16-byte logits
                                 // rows for cuBLASLt and the vector kernels, whole
                                 // tensor-core tiles); padding rows get no probability

    // ---- memory --------------------------------------------------------------
    void *(*alloc)(size_t bytes);                        // zeroed; NULL on failure
    void (*free)(void *p);                               // free(NULL) is a no-op
    void (*zero)(void *p, size_t bytes);
    void (*copy_from_host)(void *dst, const void *src, size_t bytes);
    void (*copy_to_host)(void *dst, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);  // same-backend copy
    void (*synchronize)(void);                           // wait for queued work
    // Free and total bytes of the device's memory; the member may be NULL (cpu).
    void (*mem_info)(size_t *free_bytes, size_t *total_bytes);
    // Bit-identical results run to run (on: no floating-point atomics, a fixed order for
    // every sum) or the faster order-free ways (off, the default). NULL: always
    // deterministic (cpu).
    void (*set_deterministic)(int on);
    // Converting copies between host fp32 and backend anv_act (n elements); rounding
    // to nearest even where act_dtype is narrower.
    void (*act_from_host_f32)(anv_act *dst, const float *src, size_t n);
    void (*act_to_host_f32)(float *dst, const anv_act *src, size_t n);
    // The same within the backend: fp32 master weights <-> working weights.
    void (*act_from_f32)(anv_act *dst, const float *src, size_t n);
    void (*act_to_f32)(float *dst, const anv_act *src, size_t n);

    // ---- embedding: token + optional learned position ---------------------
    // The table may be one tensor-parallel shard of the vocabulary: wte holds rows
    // [v0, v0 + Vs) of the full table (v0 = 0, Vs = Vp when unsharded).
    // out (B,T,C) = (v0 <= tok < v0+Vs ? wte[tok - v0] : 0) + (wpe ? wpe[t] : 0), with
    // tok = tokens[b,t]; wte (Vs,C), wpe (maxT,C) or NULL.
    void (*encoder_forward)(anv_act *out, const int32_t *tokens, const anv_act *wte,
                            const anv_act *wpe, int B, int T, int C, int v0, int Vs);
    // dwte (Vs,C) += scatter of dout (B,T,C) for tokens in [v0, v0+Vs); dwpe (maxT,C)
    // += dout summed over the batch, or NULL.
    void (*encoder_backward)(float *dwte, float *dwpe, const anv_act *dout,
                             const int32_t *tokens, int B, int T, int C, int v0, int Vs);
    // ---- LayerNorm (with bias) ------------------------------------------------
    // out (N,C); mean, rstd (N) saved for backward; weight, bias (C).
    void (*layernorm_forward)(anv_act *out, float *mean, float *rstd, const anv_act *inp,
                              const anv_act *weight, const anv_act *bias, int N, int C,
                              float eps);
    // Fused residual add + LayerNorm: res (N,C) = a + b (res may alias a or b), then
    // out = layernorm(res) as above. Saves a pass over res.
    void (*layernorm_residual_forward)(anv_act *res, anv_act *out, float *mean,
                                       float *rstd, const anv_act *a, const anv_act *b,
                                       const anv_act *weight, const anv_act *bias, int N,
                                       int C, float eps);
    // dinp (N,C), dweight (C), dbias (C): all accumulated.
    void (*layernorm_backward)(anv_act *dinp, float *dweight, float *dbias,
                               const anv_act *dout, const anv_act *inp,
                               const anv_act *weight, const float *mean, const float *rstd,
                               int N, int C);

    // ---- RMSNorm ----------------------------------------------------------------
    // out (N,C) = inp * rstd * weight; rstd (N) saved.
    void (*rmsnorm_forward)(anv_act *out, float *rstd, const anv_act *inp,
                            const anv_act *weight, int N, int C, float eps);
    // Fused residual add + RMSNorm: res = a + b (res may alias a or b), out = rmsnorm(res).
    void (*rmsnorm_residual_forward)(anv_act *res, anv_act *out, float *rstd,
                                     const anv_act *a, const anv_act *b,
                                     const anv_act *weight, int N, int C, float eps);
    void (*rmsnorm_backward)(anv_act *dinp, float *dweight, const anv_act *dout,
                             const anv_act *inp, const anv_act *weight, const float *rstd,
                             int N, int C);

    // ---- matmul: out = inp @ weight^T + bias, optionally through GELU ---------------
    // out (N,OC) overwritten; inp (N,C); weight (OC,C) (PyTorch Linear layout);
    // bias (OC) or NULL. pre_gelu (N,OC) or NULL: when given, pre_gelu = inp @ weight^T
    // + bias and out = gelu(pre_gelu) (tanh approximation; the GELU epilogue).
    void (*matmul_forward)(anv_act *out, anv_act *pre_gelu, const anv_act *inp,
                           const anv_act *weight, const anv_act *bias, int N, int C, int OC);
    // dinp (N,C) or NULL, written as dinp_mode says; dweight (OC,C) or NULL and dbias
    // (OC) or NULL accumulated. pre_gelu (N,C) or NULL: when given, inp =
    // gelu(pre_gelu) came from the layer before, and dinp is the gradient w.r.t.
    // pre_gelu: (dout @ weight) * gelu'(pre_gelu) (the dGELU epilogue), always
    // OVERWRITTEN (dinp_mode must be SET).
    void (*matmul_backward)(anv_act *dinp, anv_grad_mode dinp_mode, float *dweight,
                            float *dbias, const anv_act *dout, const anv_act *inp,
                            const anv_act *weight, const anv_act *pre_gelu, int N, int C,
                            int OC);

    // ---- causal self-attention with grouped-query heads and RoPE ----------------------
    // qkv (B,T,NH+2*KVH,HS): at each position the NH query heads, then the KVH key
    // heads, then the KVH value heads, one row of (NH+2*KVH)*HS elements; it is the
    // output of one matmul by the q, k and v weights stacked (the model keeps them
    // adjacent). Query head h reads kv head h / (NH/KVH).
    // RoPE is applied inside the op, on q and k's way into the scores: rope_cos and
    // rope_sin (maxT, HS/2) are the tables of rope_tables_fill copied to the backend, or
    // both NULL (no rotation, GPT-2). q and k are the UNROTATED projections, and
    // backward's dq and dk are gradients w.r.t. them; positions are t = 0..T-1.
    // out (B,T,NH,HS) overwritten. `state` (fp32) holds what backward needs; its size in
    // floats is attention_state_floats(B,T,NH,KVH,HS,rope) with rope = tables given
    // (cpu: the softmax probabilities (B,NH,T,T), then the rotated q and k; cuda: the
    // log-sum-exp of each query row (B,NH,T)).
    size_t (*attention_state_floats)(int B, int T, int NH, int KVH, int HS, int rope);
    void (*attention_forward)(anv_act *out, float *state, const anv_act *qkv,
                              const float *rope_cos, const float *rope_sin, int B, int T,
                              int NH, int KVH, int HS);
    // dqkv (B,T,NH+2*KVH,HS), laid out as qkv, OVERWRITTEN. `scratch` (fp32) has
    // attention_scratch_floats(B,T,NH,KVH,HS,rope) floats and is overwritten. out,
    // state and the tables are the forward's.
    size_t (*attention_scratch_floats)(int B, int T, int NH, int KVH, int HS, int rope);
    void (*attention_backward)(anv_act *dqkv, float *scratch, const anv_act *dout,
                               const anv_act *out, const float *state, const anv_act *qkv,
                               const float *rope_cos, const float *rope_sin, int B, int T,
                               int NH, int KVH, int HS);

    // ---- pointwise -------------------------------------------------------------------
    // GELU, tanh approximation (GPT-2): out (n) overwritten, dinp (n) accumulated.
    void (*gelu_forward)(anv_act *out, const anv_act *inp, size_t n);
    void (*gelu_backward)(anv_act *dinp, const anv_act *inp, const anv_act *dout, size_t n);
    // SwiGLU over the stacked gate / up projection: gu (N,2F) holds at each row the F
    // gate values, then the F up values (one matmul by the stacked weights makes it);
    // out (N,F) = silu(gate) * up overwritten. dgu (N,2F), laid out as gu, OVERWRITTEN.
    void (*swiglu_forward)(anv_act *out, const anv_act *gu, int N, int F);
    void (*swiglu_backward)(anv_act *dgu, const anv_act *dout, const anv_act *gu, int N,
                            int F);
    // residual: out = a + b (out may alias a); backward: da += dout, db += dout
    // (da or db may be NULL).
    void (*residual_forward)(anv_act *out, const anv_act *a, const anv_act *b, size_t n);
    void (*residual_backward)(anv_act *da, anv_act *db, const anv_act *dout, size_t n);

    // ---- softmax cross-entropy over a (possibly sharded) vocabulary -------------
    // In three steps so that a vocabulary split over P tensor-parallel ranks never
    // needs the full logits on one rank: each rank reduces its columns to three numbers
    // per row, the P triples of a row are gathered and combined into the log-sum-exp,
    // and each rank forms the gradient of its own columns. Unsharded, P = 1, v0 = 0.
    // logits (N,Vs) hold the vocabulary columns [v0, v0+Vs) of which the first Vv are
    // real (0 <= Vv <= Vs; the rest is padding that gets no probability mass). No op
    // holds fp32 probabilities: each streams a row of logits through registers.
    //
    // stats (N,3) OVERWRITTEN per row: {m, s, z} with m = the max over the real
    // columns, s = sum over them of exp(logit - m), z = the target's logit when the
    // target falls in [v0, v0+Vv), else 0. A shard with no real column (Vv = 0) gives
    // {-inf, 0, 0}.
    void (*crossentropy_stats)(float *stats, const anv_act *logits, const int32_t *targets,
                               int N, int v0, int Vv, int Vs);
    // stats (P,N,3): the P shards' stats in rank order. lse (N) and losses (N)
    // OVERWRITTEN: lse = M + log(sum_p s_p exp(m_p - M)) with M = max_p m_p;
    // losses = lse - sum_p z_p for rows with target >= 0, 0 elsewhere.
    void (*crossentropy_combine)(float *losses, float *lse, const float *stats,
                                 const int32_t *targets, int N, int P);
    // dlogits (N,Vs) OVERWRITTEN with dloss * (exp(logit - lse) - onehot(target)) over
    // the real columns of rows with target >= 0; zero on ignored rows and on padding.
    // dlogits may alias logits (the usual case: the logits buffer is reused).
    void (*crossentropy_backward)(anv_act *dlogits, const anv_act *logits, const float *lse,
                                  const int32_t *targets, int N, int v0, int Vv, int Vs,
                                  float dloss);
    // The three at once when the vocabulary is not sharded (P = 1, v0 = 0) and the
    // gradient is wanted now (training): losses (N) OVERWRITTEN as crossentropy_combine's,
    // dlogits (N,Vs) OVERWRITTEN as crossentropy_backward's with that dloss; dlogits may
    // alias logits. One pass: an implementation may read each row of logits once.
    void (*crossentropy_fused)(anv_act *dlogits, float *losses, const anv_act *logits,
                               const int32_t *targets, int N, int Vv, int Vs, float dloss);
    // ---- optimizer (multi-tensor: one launch for all segments) --------------------------
    // Sum of squares of x over the nseg segments (host array), accumulated in double
    // (cpu) or fp32 per block and double across blocks (cuda); for the global grad norm.
    // Waits for the result.
    double (*sum_squares)(const float *x, const anv_seg *segs, int nseg);
    // In-place x *= s.
    void (*scale)(float *x, float s, size_t n);
    // dst (n) += src (n), fp32 (the tied embedding's gradient exchange over a pipeline).
    void (*add_f32)(float *dst, const float *src, size_t n);
    // AdamW on the segments (host array) of the flat buffers: for each element i of a
    // segment with weight decay wd: g = grad[i] * grad_scale;
    // m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; w -= lr * (mhat / (sqrt(vhat) + eps)
    // + wd * w) with mhat = m / (1 - b1^t), vhat = v / (1 - b2^t), where w is master[i]
    // when master is not NULL (then param[i] = w rounded to act_dtype), else param[i]
    // (act_dtype fp32). All five buffers are indexed alike.
    void (*adamw_update)(anv_act *param, float *master, const float *grad, float *m,
                         float *v, const anv_seg *segs, int nseg, const anv_adamw_args *a);

    // ---- matmul algorithms (train.matmul_algo; NULL: the backend has no choice, cpu) ---
    // Times the candidate algorithms of every matmul problem met so far and not yet
    // timed, and keeps the fastest of each from then on (and for a problem met again
    // after its plan was dropped). The operands are placed in `scratch`: n regions of
    // bytes[i] each, backend memory whose contents are DESTROYED (the trainer lends its
    // activations and gradients between two steps); a problem whose operands do not fit
    // keeps the library's first choice until a call with the room. Fills *rep; with
    // `table` not NULL also writes there one line per problem (its shape, the times of
    // the first choice and of the kept algorithm). Returns when its work is done.
    void (*matmul_tune)(void *const *scratch, const size_t *bytes, int n, FILE *table,
                        anv_tune_report *rep);

    // ---- timing (run.profile_step; members NULL: the backend cannot time) --------------
    // A stamp marks the moment the work queued before it completes: a CUDA event
    // recorded on the compute stream (cuda), the wall clock at the call (cpu, whose ops
    // are done when they return). stamp_ms(a, b): milliseconds from a to b, both
    // recorded; it may wait for them.
    void *(*stamp_new)(void);                            // NULL on failure
    void (*stamp_record)(void *s);
    double (*stamp_ms)(void *a, void *b);
    void (*stamp_free)(void *s);                         // NULL is a no-op
} anv_backend;

// The fp32 reference backend (OpenMP + BLAS). Always available.
const anv_backend *anv_backend_cpu(void);

// The cuda backend on GPU `device` (the launcher's local rank modulo the GPUs seen):
// sets the device, creates its streams and cuBLASLt handle on first use. Returns NULL
// after printing one line why (no GPU or driver, a build without CUDA: HAVE_CUDA 0 in
// config.h). Not thread-safe; call once at start.
const anv_backend *anv_backend_cuda(int device);
// Number of GPUs the CUDA runtime sees (0 without a GPU, a driver, or CUDA support).
int anv_cuda_device_count(void);
// The physical identity of GPU `device` (of those this process sees): its PCI bus id,
// "0000:3b:00.0", into buf (n bytes, 13 at least), the same in every process on the
// node whatever CUDA_VISIBLE_DEVICES says. Returns 0, or -1 (buf "") when unknown.
int anv_cuda_device_id(int device, char *buf, size_t n);
// One line on the GPU the cuda backend runs on (name, compute capability,
// multiprocessors) and the driver, runtime and cuBLASLt versions; "" before
// anv_backend_cuda has succeeded.
const char *anv_cuda_describe(void);

#ifdef __cplusplus
}
#endif
#endif
