// trainer/optimizer.h: AdamW over the model's parameter buffer, global-norm clipping,
// and the learning-rate schedule.
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
    float *m, *v;           // (n_params) first and second moments, backend memory
    long t;                 // number of updates done (bias correction uses t+1)
} optimizer;

// Allocate the moments. Returns 0, or 1 (out of memory) after printing.
int optimizer_init(optimizer *o, const optim_config *cfg, const model *m);
void optimizer_free(optimizer *o);

// Global L2 norm of all gradients (sqrt of the sum of squares over every tensor).
float optimizer_grad_norm(const optimizer *o, const model *m);

// One AdamW update with learning rate lr. Gradients are scaled by
// min(1, grad_clip / grad_norm) when grad_clip > 0. Weight decay applies to matrices,
// and to embeddings only with decay_embeddings. Increments t.
void optimizer_step(optimizer *o, model *m, float lr, float grad_norm);

// Learning rate at 0-based step s of tc->steps (warmup: lr*(s+1)/warmup_steps;
// then cosine / linear / constant from lr to min_lr over the remaining steps; wsd:
// constant, then linear decay over the last decay_frac of all steps).
float lr_at(const train_config *tc, long s);

#ifdef __cplusplus
}
#endif
#endif
