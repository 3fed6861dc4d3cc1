// trainer/model.h: the decoder-only transformer (gpt2 and llama families) as
// single-device code over the op interface (kernels/ops.h).
//
// Parameters live in one allocation with named views (as in llm.c), gradients in a
// second one of the same layout, so one buffer is zeroed, reduced and saved. Every
// tensor has a global name (below) and its init is drawn from an RNG stream keyed by
// (seed, name), so the initial weights do not depend on how a later issue shards the
// model. Activations are sized for (B, T) once in model_init; forward and backward
// never allocate.
//
// Tensor names and shapes (PyTorch Linear layout (out, in)); L = layer index:
//   wte                       (Vp, C)       token embedding (also the LM head if tied)
//   wpe                       (maxT, C)     gpt2 only
//   layers.L.norm_1.weight    (C)           [+ .bias (C) for gpt2]
//   layers.L.attn.wq.weight   (NH*HS, C)    [+ .bias for gpt2, or llama with qkv_bias]
//   layers.L.attn.wk.weight   (KVH*HS, C)   [+ .bias likewise]
//   layers.L.attn.wv.weight   (KVH*HS, C)   [+ .bias likewise]
//   layers.L.attn.wo.weight   (C, NH*HS)    [+ .bias for gpt2]
//   layers.L.norm_2.weight    (C)           [+ .bias for gpt2]
//   gpt2:  layers.L.mlp.fc.weight (F, C) + .bias (F); layers.L.mlp.proj.weight (C, F) + .bias (C)
//   llama: layers.L.mlp.gate.weight (F, C); layers.L.mlp.up.weight (F, C);
//          layers.L.mlp.down.weight (C, F)
//   norm_f.weight             (C)           [+ .bias for gpt2]
//   lm_head.weight            (Vp, C)       only when embeddings are untied
#ifndef ANVIL_TRAINER_MODEL_H
#define ANVIL_TRAINER_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"
#include "trainer/config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MODEL_MAX_NAME 64

typedef struct param_tensor {
    char name[MODEL_MAX_NAME];
    int ndim;                // 1 or 2
    int shape[2];
    size_t offset;           // in floats, into params / grads
    size_t numel;
    int is_matrix;           // 2-D weight of a linear layer (weight decay applies)
    int is_embedding;        // wte / wpe / untied lm_head
    float init_std;          // 0: constant init (norm weights 1, biases 0)
    float init_const;
} param_tensor;

// Views into the parameter (or gradient) buffer for one layer; NULL where absent.
typedef struct layer_params {
    float *norm1_w, *norm1_b;   // (C)
    float *wq, *bq;             // (NH*HS, C), (NH*HS)
    float *wk, *bk;             // (KVH*HS, C), (KVH*HS)
    float *wv, *bv;             // (KVH*HS, C), (KVH*HS)
    float *wo, *bo;             // (C, NH*HS), (C)
    float *norm2_w, *norm2_b;   // (C)
    float *w_fc, *b_fc;         // gpt2: (F, C), (F)        llama: gate (F, C)
    float *w_up;                // llama: up (F, C)
    float *w_proj, *b_proj;     // gpt2: (C, F), (C)        llama: down (C, F)
} layer_params;

typedef struct model_views {
    float *wte, *wpe;           // (Vp, C), (maxT, C)
    layer_params *layers;       // (L)
    float *normf_w, *normf_b;   // (C)
    float *lm_head;             // (Vp, C): wte when tied
} model_views;

// Activations of one layer saved for backward (sized for B, T).
typedef struct layer_acts {
    float *res_in;              // (B,T,C) residual stream entering the layer
    float *norm1, *n1_mean, *n1_rstd;   // (B,T,C), (B,T), (B,T)
    float *q, *k, *v;           // (B,T,NH,HS), (B,T,KVH,HS) x2 (after RoPE for llama)
    float *att_state;           // attention_state_floats(B,T,NH)
    float *att_out;             // (B,T,NH*HS)
    float *res_mid;             // (B,T,C) residual after attention
    float *norm2, *n2_mean, *n2_rstd;
    float *fc, *up, *act;       // (B,T,F): gpt2 fc pre-GELU / llama gate; llama up; GELU/SwiGLU out
} layer_acts;

typedef struct model {
    model_config cfg;           // resolved (preset applied, zeros filled in)
    const anv_backend *be;
    int L, C, NH, KVH, HS, F, V, Vp, maxT;
    int B, T;                   // sizes activations were allocated for (maxima)
    float eps;

    // parameters: one allocation each for values and gradients, same layout
    param_tensor *tensors;      // (n_tensors) host table
    int n_tensors;
    size_t n_params;            // floats in the layout (tensors plus alignment gaps)
    size_t n_alloc;             // n_params rounded up to a multiple of n_shards
    float *params, *grads;      // (n_alloc) each; gaps and tail stay zero
    model_views p, g;           // views into params and grads

    // activations
    layer_acts *acts;           // (L)
    float *res_out;             // (B,T,C) residual after the last layer
    float *normf, *nf_mean, *nf_rstd;   // (B,T,C), (B,T), (B,T)
    float *logits;              // (B,T,Vp); holds dlogits after backward starts
    float *losses;              // (B,T)
    int32_t *inputs, *targets;  // (B,T) on the backend
    float *rope_cos, *rope_sin; // (maxT, HS/2), llama only
    // backward scratch
    float *d_res, *d_tmp;       // (B,T,C) residual-stream gradient and a second one
    float *d_norm;              // (B,T,C)
    float *d_q, *d_k, *d_v;     // like q, k, v
    float *d_att;               // (B,T,NH*HS)
    float *att_scratch;         // attention_scratch_floats
    float *d_fc, *d_up, *d_act; // (B,T,F)
    float *losses_host;         // (B,T) host copy of losses
    int curB, curT;             // shape of the last forward
    int have_targets;           // last forward had targets
} model;

// Fill the zeros of `mc` (shape keys no preset or key set) from the family rules and
// the small default model, and check the shape
// (heads divide d_model, kv heads divide heads, head size even for RoPE, ...).
// Returns 0, or 2 after printing one line naming the key.
int model_config_resolve(model_config *mc);

// Names of the presets, NULL-terminated; and a one-line description of each.
const char *const *model_preset_names(void);
// Set every key preset `name` defines (shape, family, RoPE, tying, bias). config_load
// applies it before the file's and the command line's own keys, so those override it.
// Returns 0, or -1 if `name` is unknown.
int model_preset_apply(model_config *mc, const char *name);

// Allocate parameters, gradients and activations for at most (B, T). `mc` must be
// resolved. params and grads get n_alloc floats, a multiple of n_shards (>= 1), so
// ZeRO-1 can split them into equal shards. Returns 0, or 2 (T > max_seq_len, ...) /
// 1 (out of memory) after printing.
int model_init(model *m, const model_config *mc, const anv_backend *be, int B, int T,
               int n_shards);
void model_free(model *m);

// Draw the initial weights from `seed` (GPT-2 init: std init_std, residual output
// projections wo and proj/down scaled by 1/sqrt(2*L); norm weights 1, biases 0).
int model_init_weights(model *m, unsigned long long seed);  // 0, or 1 out of memory

// Forward over inputs (B,T) (host int32, B <= m->B, T <= m->T). With targets (host,
// (B,T), < 0 = ignored) computes per-token losses and returns their sum over valid
// targets; without, returns 0 and leaves logits (B,T,Vp) in m->logits.
double model_forward(model *m, const int32_t *inputs, const int32_t *targets, int B, int T);

// Backward of the last forward (which must have had targets): accumulates into
// m->grads the gradient of dloss * sum(valid losses). m->logits is overwritten.
void model_backward(model *m, float dloss);

void model_zero_grad(model *m);

// Parameter counts: all, and without embeddings (for FLOP estimates).
size_t model_num_params(const model *m);
size_t model_num_nonembedding_params(const model *m);
// Training FLOPs per token at sequence length T (6*N_nonembed + LM head + attention).
double model_flops_per_token(const model *m, int T);

#ifdef __cplusplus
}
#endif
#endif
