// trainer/sample.h: autoregressive sampling from the model (temperature, top-k,
// top-p), used for the in-training samples and, with checkpoints, `anvil sample`.
#ifndef ANVIL_TRAINER_SAMPLE_H
#define ANVIL_TRAINER_SAMPLE_H

#include <stdint.h>

#include "trainer/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sampler {
    float temperature;     // 0: greedy
    int top_k;             // 0: off
    float top_p;           // 1: off
    float *probs;          // (V) host
    int32_t *order;        // (V) host, indices sorted by probability for top-k/top-p
    int32_t *seq;          // (m->T) host, the growing sequence
} sampler;

// Allocate host buffers for model m. Returns 0, or 1 (out of memory) after printing.
int sampler_init(sampler *s, const model *m, float temperature, int top_k, float top_p);
void sampler_free(sampler *s);

// Generate: start from prompt (n_prompt >= 1 ids), append up to n_new ids, calling
// emit(id, ctx) for each new one. The context is the last m->T ids (the model has no
// KV cache yet, so each step reruns the forward pass over the window). Does not
// allocate. rng is a splitmix64 state (trainer/rng.h).
void sampler_generate(sampler *s, model *m, const int32_t *prompt, int n_prompt, int n_new,
                      uint64_t *rng, void (*emit)(int32_t id, void *ctx), void *ctx);

#ifdef __cplusplus
}
#endif
#endif
