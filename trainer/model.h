// trainer/model.h: the decoder-only transformer (gpt2 and llama families) as
// single-device code over the op interface (kernels/ops.h).
//
// Parameters live in one allocation with named views (as in llm.c), gradients in a
// second one of the same layout, so one buffer is zeroed, reduced and saved. A layer's
// q, k and v weights follow each other with no gap, and so do their biases: together
// they are one (NH+2*KVH)*HS x C matrix, so the projection is one matmul whose output
// is the attention's packed qkv (kernels/ops.h), and its backward one matmul too. The
// same holds for llama's gate and up: one 2F x C matrix, whose output is SwiGLU's gu. Every
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
//
// Sharding (tensor and pipeline parallel) is applied from outside through the shapes
// the model is given (model_shard): a pipeline stage holds a contiguous range of the
// global layers (tensors keep their global names), the embedding on the first stage,
// the final norm and the head on the last (with tied embeddings the last stage holds
// its own copy of wte, kept equal by the trainer). A tensor-parallel shard holds
// NH/tp query heads, KVH/tp kv heads, F/tp MLP channels and Vp/tp vocabulary rows:
// q/k/v, fc (gate, up) and their biases are split by output rows (column-parallel),
// wo and proj (down) by input columns (row-parallel), wte and lm_head by vocabulary
// rows; norms, wpe and the row-parallel biases are replicated. The two reductions this
// needs (Megatron's f and g: the sum of row-parallel outputs forward, of the input
// gradient of column-parallel layers backward) and the gather of the cross-entropy's
// per-shard statistics go through model_tp_comm, supplied by parallel/.
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
    char name[MODEL_MAX_NAME];  // global name
    int ndim;                // 1 or 2
    int shape[2];            // this shard's shape
    int gshape[2];           // the global tensor's shape (vocabulary rows padded: Vp*tp)
    int split_dim;           // -1: whole tensor here; 0: rows split; 1: columns split
    int split_off;           // first global row (split_dim 0) / column (1) held here
    int counted;             // counts toward the global grad norm and parameter count
                             // on this rank: 0 for a copy another rank also holds
                             // (tp-replicated on tp_rank > 0, the tied head's copy)
    size_t offset;           // in floats, into params / grads
    size_t numel;
    int is_matrix;           // 2-D weight of a linear layer (weight decay applies)
    int is_embedding;        // wte / wpe / untied lm_head
    int is_vocab;            // rows are vocabulary ids (wte, lm_head): padding rows >= V
    float init_std;          // 0: constant init (norm weights 1, biases 0)
    float init_const;
} param_tensor;

// Views into the parameter (or gradient) buffer for one layer; NULL where absent.
// Untyped: into params they are anv_act (the backend's weight type), into grads fp32.
typedef struct layer_params {
    void *norm1_w, *norm1_b;    // (C)
    void *wq, *bq;              // (NH*HS, C), (NH*HS); wk, wv (bk, bv) follow at once:
    void *wk, *bk;              // (KVH*HS, C), (KVH*HS)   wq is the stacked
    void *wv, *bv;              // (KVH*HS, C), (KVH*HS)   ((NH+2*KVH)*HS, C) matrix
    void *wo, *bo;              // (C, NH*HS), (C)
    void *norm2_w, *norm2_b;    // (C)
    void *w_fc, *b_fc;          // gpt2: (F, C), (F)        llama: gate (F, C), up follows
    void *w_up;                 // llama: up (F, C)         at once: (2F, C) stacked
    void *w_proj, *b_proj;      // gpt2: (C, F), (C)        llama: down (C, F)
} layer_params;

typedef struct model_views {
    void *wte, *wpe;            // (Vp, C), (maxT, C)
    layer_params *layers;       // (L)
    void *normf_w, *normf_b;    // (C)
    void *lm_head;              // (Vp, C): wte when tied
} model_views;

// Activations of one layer saved for backward (sized for B, T). anv_act: the
// backend's activation type (fp32 cpu, bf16 cuda); float: fp32 everywhere.
typedef struct layer_acts {
    anv_act *res_in;            // (B,T,C) residual stream entering the layer
    anv_act *norm1;             // (B,T,C)
    float *n1_mean, *n1_rstd;   // (B,T), (B,T)
    anv_act *qkv;               // (B,T,NH+2*KVH,HS) q, k, v heads per position (unrotated)
    float *att_state;           // attention_state_floats(B,T,NH,KVH,HS,rope)
    anv_act *att_out;           // (B,T,NH*HS)
    anv_act *res_mid;           // (B,T,C) residual after attention
    anv_act *norm2;             // (B,T,C)
    float *n2_mean, *n2_rstd;   // (B,T), (B,T)
    anv_act *fc, *act;          // gpt2: fc (B,T,F) pre-GELU; llama: fc = gu (B,T,2F), gate
                                // then up per row; act (B,T,F) GELU / SwiGLU out
} layer_acts;

// One activation set: everything a micro-batch's backward needs from its forward. A
// pipeline stage keeps one per micro-batch in flight (1F1B: pp - stage).
typedef struct model_slot {
    layer_acts *acts;           // (L); acts[0].res_in is the stage's input
    anv_act *res_out;           // (B,T,C) residual after the last layer: the stage's output
    anv_act *normf;             // (B,T,C)                     last stage only
    float *nf_mean, *nf_rstd;   // (B,T), (B,T)
    anv_act *logits;            // (B,T,Vp); holds dlogits after backward starts
    float *losses, *lse;        // (B,T) each
    float *stats;               // (B,T,3) this shard's cross-entropy statistics
    int32_t *inputs, *targets;  // (B,T) on the backend
    float *losses_host;         // (B,T) host copy of losses
    int curB, curT;             // shape of the slot's last forward
    int have_targets;           // the slot's last forward had targets
    float ce_dloss;             // != 0: its forward left dlogits (this dloss) in logits
} model_slot;

// How this rank's model is cut out of the global one. model_init(..., NULL) means the
// whole model on one device (tp 1, all layers, one slot, no padding).
typedef struct model_shard {
    int tp, tp_rank;            // heads, kv heads, F and vocabulary rows split tp ways
    int layer0, n_layer;        // this stage's layers: global [layer0, layer0 + n_layer)
    int first, last;            // holds the embedding / the final norm and the head
    int n_slots;                // activation sets (micro-batches in flight at once)
    int n_shards;               // params and grads padded to a multiple (ZeRO-1)
    recompute_mode recompute;   // what backward recomputes instead of keeping (memory)
} model_shard;

// Called by the backward when a layer's parameter gradients are complete (trainer:
// start their data-parallel all-reduce while the backward goes on).
typedef struct model_grad_hook {
    void *ctx;
    // grads [off, off + n) (elements of the flat buffer) hold their final values for
    // this backward
    void (*ready)(void *ctx, size_t off, size_t n);
} model_grad_hook;

// The collectives of a tensor-parallel shard, over its tp group (parallel/ supplies
// them; unused when tp == 1). A failure is an internal error: the implementation
// reports it and aborts the job, so these return nothing.
typedef struct model_tp_comm {
    void *ctx;
    // activations (anv_act, the backend's type) summed in place
    void (*all_reduce)(void *ctx, anv_act *buf, size_t n);
    // fp32: send (n) of every rank into recv (tp, n)
    void (*all_gather)(void *ctx, const float *send, float *recv, size_t n);
} model_tp_comm;

typedef struct model {
    model_config cfg;           // resolved (preset applied, zeros filled in): global
    const anv_backend *be;
    model_shard sh;
    const model_tp_comm *tp_comm;   // set by the caller when sh.tp > 1
    // local shape: L layers of this stage; NH, KVH, F and Vp of this tp shard
    int L, C, NH, KVH, HS, F, V, Vp, maxT;
    int v0, Vv;                 // vocabulary rows held: global [v0, v0+Vp), Vv real
    int B, T;                   // sizes activations were allocated for (maxima)
    float eps;

    // parameters: one allocation each for values and gradients, same layout
    param_tensor *tensors;      // (n_tensors) host table
    int n_tensors;
    size_t n_params;            // elements in the layout (tensors plus alignment gaps)
    size_t n_alloc;             // n_params rounded up to a multiple of sh.n_shards
    anv_act *params;            // (n_alloc) working weights, be->act_dtype
    float *grads;               // (n_alloc) fp32; gaps and tail of both stay zero
    model_views p, g;           // views into params and grads

    // activations
    void *act_block;            // the one allocation every activation is carved from
    size_t act_block_bytes;     // its size
    size_t step_off;            // act_block's bytes before it: what lives across steps
                                // (RoPE tables); from it on, what each step rewrites
    model_slot *slots;          // (sh.n_slots)
    int n_slots, cur_slot;      // cur_slot: the slot of the last forward
    layer_acts rc;              // what recompute rebuilds (one layer's worth, shared)
    size_t *layer_off;          // (L+1) layer l's tensors fill [layer_off[l], layer_off[l+1])
    const model_grad_hook *grad_hook;   // NULL, or called by backward per layer
    anv_act *logits;            // slots[0].logits (model_forward's output, sampling)
    float *rope_cos, *rope_sin; // (maxT, HS/2), llama only
    float *stats_all;           // (tp,B,T,3) gathered cross-entropy statistics
    // backward scratch, shared by the slots (activation gradients: anv_act)
    anv_act *d_res, *d_tmp;     // (B,T,C) residual-stream gradient and a second one
    anv_act *d_norm;            // (B,T,C)
    anv_act *d_qkv;             // like qkv
    anv_act *d_att;             // (B,T,NH*HS)
    float *att_scratch;         // attention_scratch_floats
    anv_act *d_fc, *d_act;      // like fc, and (B,T,F)
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

// Allocate parameters, gradients and activations for at most (B, T), for the part of
// the model `sh` describes (NULL: the whole model). `mc` must be resolved and the
// shard must fit it (tp divides the heads, kv heads and ffn_dim; the stage's layers
// exist; parallel/ checks this first). params and grads get n_alloc floats, a multiple
// of sh->n_shards, so ZeRO-1 can split them into equal shards. Returns 0, or 2
// (T > max_seq_len, ...) / 1 (out of memory) after printing.
int model_init(model *m, const model_config *mc, const anv_backend *be, int B, int T,
               const model_shard *sh);
void model_free(model *m);
// What model_init would allocate, without allocating it: *n_alloc elements each of
// parameters (be->act_bytes each) and gradients (fp32), and *act_bytes of activations.
// Returns 0, or 2 / 1 as model_init (after printing).
int model_memory(const model_config *mc, const anv_backend *be, int B, int T,
                 const model_shard *sh, size_t *n_alloc, size_t *act_bytes);

// Draw the initial weights from `seed` (GPT-2 init: std init_std, residual output
// projections wo and proj/down scaled by 1/sqrt(2*n_layer); norm weights 1, biases 0).
// Each tensor is drawn whole from its (seed, name) stream and this shard keeps its
// slice, so every layout starts from the same global weights.
int model_init_weights(model *m, unsigned long long seed);  // 0, or 1 out of memory

// Forward of one micro-batch (B <= m->B, T <= m->T) into activation slot `slot`.
// First stage: embeds inputs (host int32 (B,T)); other stages read their input from
// model_slot_input(m, slot), where the caller has put the previous stage's output.
// Last stage with targets (host (B,T), < 0 = ignored): computes the per-token losses
// and returns their sum over valid targets; without targets it leaves logits
// (B,T,Vp) in the slot. Other stages return 0 and leave their output in
// model_slot_output(m, slot). dloss: the scale the slot's backward will be called with
// (training), or 0 when no backward follows (evaluation); with it, an unsharded head
// forms the logits' gradient in the same pass as the losses (crossentropy_fused).
double model_forward_slot(model *m, int slot, const int32_t *inputs,
                          const int32_t *targets, int B, int T, float dloss);
// Backward of the slot's last forward: accumulates into m->grads the gradient of
// dloss * sum(valid losses). Last stage: the forward must have had targets (the
// slot's logits are overwritten), and a nonzero dloss of the forward must be this one. Other stages: the gradient of the loss w.r.t. the
// stage's output must be in model_input_grad(m) first. On return model_input_grad(m)
// holds the gradient w.r.t. the stage's input (valid until the next backward).
void model_backward_slot(model *m, int slot, float dloss);
anv_act *model_slot_input(model *m, int slot);    // (B,T,C) on the backend
anv_act *model_slot_output(model *m, int slot);   // (B,T,C) on the backend
anv_act *model_input_grad(model *m);              // (B,T,C) on the backend
// The working weights of tensor t (anv_act) and its gradient (fp32).
anv_act *model_param_ptr(const model *m, const param_tensor *t);
float *model_grad_ptr(const model *m, const param_tensor *t);

// The whole model on one device: model_forward_slot (dloss 0) / model_backward_slot on
// slot 0.
double model_forward(model *m, const int32_t *inputs, const int32_t *targets, int B, int T);
void model_backward(model *m, float dloss);

void model_zero_grad(model *m);
// The part of the activation block a step writes before it reads (everything but the
// RoPE tables): between two steps it holds nothing the next step, an evaluation or a
// sample needs, so it may serve as scratch (trainer/device.c, be->matmul_tune).
void model_step_scratch(const model *m, void **p, size_t *bytes);

// This rank's share of the global parameter count (counted tensors, vocabulary rows
// below V only), and of the training FLOPs per token at sequence length T (6 per
// weight of every matmul incl. the head, plus attention): summed over the ranks of
// one model replica they give the global figures.
size_t model_num_params(const model *m);
double model_flops_per_token(const model *m, int T);

#ifdef __cplusplus
}
#endif
#endif
