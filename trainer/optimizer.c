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
#include <stdlib.h>
#include <string.h>

// The part of tensor t inside [o->lo, o->hi): sets *a, *b (flat offsets). Returns 0
// when empty.
static int tensor_in_range(const optimizer *o, const param_tensor *t, size_t *a, size_t *b) {
    *a = t->offset > o->lo ? t->offset : o->lo;
    *b = t->offset + t->numel < o->hi ? t->offset + t->numel : o->hi;
    return *a < *b;
}

// Build the segment lists: the part of each tensor inside [lo, hi), as offsets from lo.
// Returns 0, or 1 out of memory.
static int build_segments(optimizer *o, const model *m) {
    o->upd = calloc((size_t)m->n_tensors + 1, sizeof *o->upd);
    o->cnt = calloc((size_t)m->n_tensors + 1, sizeof *o->cnt);
    if (!o->upd || !o->cnt) return 1;
    for (int i = 0; i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        size_t a, b;
        if (!tensor_in_range(o, t, &a, &b)) continue;
        int decay = t->is_matrix || (t->is_embedding && o->cfg.decay_embeddings);
        anv_seg sg = {a - o->lo, b - a, decay ? o->cfg.weight_decay : 0.0f};
        o->upd[o->n_upd++] = sg;
        // a copy another rank also holds (model.h: counted) is summed there only
        if (t->counted) o->cnt[o->n_cnt++] = sg;
    }
    return 0;
}

int optimizer_init(optimizer *o, const optim_config *cfg, const model *m, size_t lo,
                   size_t hi) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->be = m->be;
    o->lo = lo;
    o->hi = hi;
    size_t n = hi > lo ? hi - lo : 1;
    const anv_backend *be = m->be;
    o->m = be->alloc(n * sizeof(float));
    o->v = be->alloc(n * sizeof(float));
    int bad = !o->m || !o->v;
    // test hook (docs/checkpoint.md): master weights on the cpu too, where they equal
    // the parameters, so the GPU's checkpoint path runs without a GPU
    const char *hook = getenv("ANVIL_TEST_MASTER");
    if (!bad && (be->act_dtype != ANV_DTYPE_F32 || (hook && strcmp(hook, "1") == 0))) {
        o->master = be->alloc(n * sizeof(float));
        bad = !o->master;
        if (!bad && hi > lo)
            be->act_to_f32(o->master, (const char *)m->params + lo * be->act_bytes, hi - lo);
    }
    if (bad || build_segments(o, m)) {
        fprintf(stderr, "anvil: out of memory allocating AdamW state (%zu parameters)\n", n);
        optimizer_free(o);
        return 1;
    }
    return 0;
}

void optimizer_load_master(optimizer *o, const model *m, const float *host) {
    if (!o->master || o->hi <= o->lo) return;
    o->be->copy_from_host(o->master, host, (o->hi - o->lo) * sizeof(float));
    o->be->act_from_f32((char *)m->params + o->lo * o->be->act_bytes, o->master, o->hi - o->lo);
}

void optimizer_free(optimizer *o) {
    if (o->be) {
        o->be->free(o->m);
        o->be->free(o->v);
        o->be->free(o->master);
    }
    free(o->upd);
    free(o->cnt);
    memset(o, 0, sizeof *o);
}

double optimizer_grad_sumsq(const optimizer *o, const model *m, const float *grads) {
    (void)m;
    return o->n_cnt > 0 ? o->be->sum_squares(grads, o->cnt, o->n_cnt) : 0.0;
}

void optimizer_step(optimizer *o, model *m, const float *grads, float lr, float grad_norm) {
    const optim_config *c = &o->cfg;
    float scale = 1.0f;
    if (c->grad_clip > 0.0f && grad_norm > c->grad_clip) scale = c->grad_clip / grad_norm;
    o->t++;
    anv_adamw_args a = {lr, c->beta1, c->beta2, c->eps, scale, (int)o->t};
    if (o->n_upd > 0)
        o->be->adamw_update((char *)m->params + o->lo * o->be->act_bytes, o->master, grads,
                            o->m, o->v, o->upd, o->n_upd, &a);
}
