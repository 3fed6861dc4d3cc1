// trainer/optimizer.c: AdamW over a range of the model's flat parameter buffer with
// global-norm clipping.
//
// The moments m and v cover [lo, hi) of the parameter buffer's layout, so the same
// code serves one rank (the whole buffer) and ZeRO-1 (this rank's shard). A tensor may
// straddle a shard boundary: each update touches the intersection of the tensor with
// [lo, hi). Weight decay is decided per tensor from the model's table: 2-D matrices of
// linear layers decay; norms, biases and (unless optim.decay_embeddings) embeddings
// do not.
#include "trainer/optimizer.h"

#include <stdio.h>
#include <string.h>

int optimizer_init(optimizer *o, const optim_config *cfg, const model *m, size_t lo,
                   size_t hi) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->be = m->be;
    o->lo = lo;
    o->hi = hi;
    size_t n = hi > lo ? hi - lo : 1;
    o->m = m->be->alloc(n * sizeof(float));
    o->v = m->be->alloc(n * sizeof(float));
    if (!o->m || !o->v) {
        fprintf(stderr, "anvil: out of memory allocating AdamW state (%zu parameters)\n", n);
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

// The part of tensor t inside [o->lo, o->hi): sets *a, *b (flat offsets). Returns 0
// when empty.
static int tensor_in_range(const optimizer *o, const param_tensor *t, size_t *a, size_t *b) {
    *a = t->offset > o->lo ? t->offset : o->lo;
    *b = t->offset + t->numel < o->hi ? t->offset + t->numel : o->hi;
    return *a < *b;
}

double optimizer_grad_sumsq(const optimizer *o, const model *m, const float *grads) {
    double ss = 0.0;
    for (int i = 0; i < m->n_tensors; i++) {
        size_t a, b;
        // a copy another rank also holds (model.h: counted) is summed there only
        if (m->tensors[i].counted && tensor_in_range(o, &m->tensors[i], &a, &b))
            ss += o->be->sum_squares(grads + (a - o->lo), b - a);
    }
    return ss;
}

void optimizer_step(optimizer *o, model *m, const float *grads, float lr, float grad_norm) {
    const optim_config *c = &o->cfg;
    float scale = 1.0f;
    if (c->grad_clip > 0.0f && grad_norm > c->grad_clip) scale = c->grad_clip / grad_norm;
    o->t++;
    for (int i = 0; i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        size_t a, b;
        if (!tensor_in_range(o, t, &a, &b)) continue;
        int decay = t->is_matrix || (t->is_embedding && c->decay_embeddings);
        o->be->adamw_update(m->params + a, grads + (a - o->lo), o->m + (a - o->lo),
                            o->v + (a - o->lo), b - a, lr, c->beta1, c->beta2, c->eps,
                            decay ? c->weight_decay : 0.0f, scale, (int)o->t);
    }
}
