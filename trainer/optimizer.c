// trainer/optimizer.c: AdamW over the model's parameter buffer with global-norm
// clipping.
//
// The moments m and v mirror the parameter buffer's layout (one allocation each), so
// the later ZeRO-1 issue can shard them by offset ranges. Weight decay is decided per
// tensor from the model's table: 2-D matrices of linear layers decay; norms, biases
// and (unless optim.decay_embeddings) embeddings do not.
#include "trainer/optimizer.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int optimizer_init(optimizer *o, const optim_config *cfg, const model *m) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->be = m->be;
    o->m = m->be->alloc(m->n_params * sizeof(float));
    o->v = m->be->alloc(m->n_params * sizeof(float));
    if (!o->m || !o->v) {
        fprintf(stderr, "anvil: out of memory allocating AdamW state (%zu parameters)\n",
                m->n_params);
        optimizer_free(o);
        return 1;
    }
    return 0;
}

void optimizer_free(optimizer *o) {
    if (o->be) {
        o->be->free(o->m);
        o->be->free(o->v);
    }
    memset(o, 0, sizeof *o);
}

float optimizer_grad_norm(const optimizer *o, const model *m) {
    double ss = 0.0;
    for (int i = 0; i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        ss += o->be->sum_squares(m->grads + t->offset, t->numel);
    }
    return (float)sqrt(ss);
}

void optimizer_step(optimizer *o, model *m, float lr, float grad_norm) {
    const optim_config *c = &o->cfg;
    float scale = 1.0f;
    if (c->grad_clip > 0.0f && grad_norm > c->grad_clip) scale = c->grad_clip / grad_norm;
    o->t++;
    for (int i = 0; i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        int decay = t->is_matrix || (t->is_embedding && c->decay_embeddings);
        o->be->adamw_update(m->params + t->offset, m->grads + t->offset, o->m + t->offset,
                            o->v + t->offset, t->numel, lr, c->beta1, c->beta2, c->eps,
                            decay ? c->weight_decay : 0.0f, scale, (int)o->t);
    }
}
