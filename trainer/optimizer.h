// trainer/optimizer.h: AdamW over the model's parameter buffer, global-norm clipping,
// and the learning-rate schedule.
//
// The optimizer owns the state of one contiguous range [lo, hi) of the flat parameter
// buffer: the whole buffer on one rank, or this rank's shard under ZeRO-1 (the
// trainer reduce-scatters the gradients into that range and all-gathers the
// parameters after the update).
#ifndef ANVIL_TRAINER_OPTIMIZER_H
#define ANVIL_TRAINER_OPTIMIZER_H

#include "trainer/config.h"
#include "trainer/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct optimizer {
    optim_config cfg;
    const anv_backend *be;
    size_t lo, hi;          // the range of the flat parameter buffer this state covers
    float *m, *v;           // (hi - lo) first and second moments, backend memory
    float *master;          // (hi - lo) fp32 master weights when the backend's weights
                            // are narrower (bf16 on cuda); NULL on the cpu backend
    long t;                 // number of updates done (bias correction uses t+1)
    anv_seg *upd;           // (n_upd) the tensors' parts in [lo, hi), offsets from lo,
    int n_upd;              // with their weight decay: one multi-tensor AdamW launch
    anv_seg *cnt;           // (n_cnt) the same, counted ones only (model.h): the
    int n_cnt;              // global-norm segments
} optimizer;

// Allocate the moments (and master weights) for [lo, hi) of m's flat buffer (0,
// m->n_alloc for all of it) and take the master weights from m's parameters, which
// must be set. Returns 0, or 1 (out of memory) after printing.
int optimizer_init(optimizer *o, const optim_config *cfg, const model *m, size_t lo,
                   size_t hi);
void optimizer_free(optimizer *o);

// Set the master weights from fp32 host values of the parameters [lo, hi) (host
// element lo at index 0) and the working weights [lo, hi) from them; a no-op without
// master weights (the caller sets m->params itself).
void optimizer_load_master(optimizer *o, const model *m, const float *host);

// Sum of squares of the gradient over [lo, hi) of the tensors counted on this rank
// (model.h: a tensor-parallel replica or the tied head's copy counts elsewhere);
// grads holds element lo at index 0. The global norm is the square root of the sum
// of this over the ranks of one replica (and the dp shards under ZeRO-1).
double optimizer_grad_sumsq(const optimizer *o, const model *m, const float *grads);

// One AdamW update of the parameters in [lo, hi) from grads (element lo at index 0)
// with learning rate lr. Gradients are scaled by min(1, grad_clip / grad_norm) when
// grad_clip > 0. Weight decay applies to matrices, and to embeddings only with
// decay_embeddings. Increments t.
void optimizer_step(optimizer *o, model *m, const float *grads, float lr, float grad_norm);

// Learning rate at 0-based step s of tc->steps (warmup: lr*(s+1)/warmup_steps;
// then cosine / linear / constant from lr to min_lr over the remaining steps; wsd:
// constant, then linear decay over the last decay_frac of all steps).
float lr_at(const train_config *tc, long s);

#ifdef __cplusplus
}
#endif
#endif
