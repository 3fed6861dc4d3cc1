// trainer/gather.c: the model's parameters gathered to full global shapes on world
// rank 0 and written to a named-tensor file (run.final_weights; the layout tests
// compare every layout's result against one rank's through it).
//
// The values are the fp32 master weights where the optimizer keeps them (cuda: the
// bf16 working weights are only their rounding), gathered over dp first under ZeRO-1,
// where each dp rank holds one shard of them; else the parameters themselves.
//
// Every rank of dp replica 0 sends world rank 0 its tensor table and its parameter
// buffer (world rank 0 takes its own directly); rank 0 places each counted tensor's
// slice (model.h: split_dim, split_off) into a full-shape buffer per global name, so
// it needs no knowledge of how the layout cut the model. Vocabulary tensors are cut
// to the V real rows (the padding for tp never leaves the trainer). Tiny models only
// in practice: rank 0 holds the whole model once; checkpoints (HDF5) write slices in
// place instead.
#include "trainer/train_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "trainer/tensorfile.h"

typedef struct full_tensor {
    char name[MODEL_MAX_NAME];
    int ndim, shape[2];          // global shape, vocabulary rows not yet cut
    int is_vocab;                // rows are vocabulary ids: cut to V on writing
    float *data;
} full_tensor;

// Place tensor t's slice (src, t->numel floats) into its full tensor in `all`
// (created on first sight). Returns 0, or 1 out of memory.
static int place(full_tensor *all, int *n_all, int max_all, const param_tensor *t,
                 const float *src) {
    full_tensor *f = NULL;
    for (int i = 0; i < *n_all && !f; i++)
        if (strcmp(all[i].name, t->name) == 0) f = &all[i];
    if (!f) {
        if (*n_all == max_all) return 1;
        f = &all[(*n_all)++];
        snprintf(f->name, sizeof f->name, "%s", t->name);
        f->ndim = t->ndim;
        f->is_vocab = t->is_vocab;
        f->shape[0] = t->gshape[0];
        f->shape[1] = t->ndim == 2 ? t->gshape[1] : 1;
        f->data = calloc((size_t)f->shape[0] * f->shape[1], sizeof(float));
        if (!f->data) return 1;
    }
    const size_t g1 = (size_t)f->shape[1], r0 = (size_t)t->shape[0];
    const size_t c1 = t->ndim == 2 ? (size_t)t->shape[1] : 1;
    for (size_t r = 0; r < r0; r++) {
        size_t row = t->split_dim == 0 ? r + (size_t)t->split_off : r;
        size_t col = t->split_dim == 1 ? (size_t)t->split_off : 0;
        memcpy(f->data + row * g1 + col, src + r * c1, c1 * sizeof(float));
    }
    return 0;
}

// This rank's n_params parameters as fp32 on the host: the master weights where o
// has them (all-gathered over dp when o holds one shard: collective over dp then),
// else the parameters converted. Returns the buffer (free()), or NULL after printing
// (out of memory, or the all-gather failed).
static float *params_to_host(const model *m, parallel_grid *g, const optimizer *o) {
    const anv_backend *be = m->be;
    float *host = malloc(m->n_alloc * sizeof(float) + 1);
    int bad = !host;
    if (!o->master) {
        if (host) be->act_to_host_f32(host, m->params, m->n_params);
    } else if (o->lo == 0 && o->hi == m->n_alloc) {
        if (host) be->copy_to_host(host, o->master, m->n_alloc * sizeof(float));
    } else {   // ZeRO-1: equal shards [lo, hi) of n_alloc over the dp ranks
        float *full = be->alloc(m->n_alloc * sizeof(float));
        comm_group *dp = g->dp_g;
        // every rank must reach the all-gather, or none: agree first (over the world,
        // whose ranks all come here)
        bad = train_agree_rc(g, bad || !full) != 0 ||
              dp->be->all_gather(dp, o->master, full, o->hi - o->lo, COMM_DTYPE_F32) != 0;
        if (!bad) be->copy_to_host(host, full, m->n_alloc * sizeof(float));
        be->free(full);
    }
    if (bad) {
        fprintf(stderr, "anvil: run.final_weights: out of memory or the master weights' "
                        "all-gather failed on rank %d\n", g->rank);
        free(host);
        return NULL;
    }
    return host;
}

int train_write_gathered(const model *m, parallel_grid *g, const optimizer *o,
                         const char *path) {
    comm_group *w = g->world_g;
    const comm_backend *cb = w->be;
    // param_tensor holds only ints, chars and size_t: a whole number of int32 words
    const size_t words = sizeof(param_tensor) / sizeof(int32_t);
    int rc = 0;
    float *mine = params_to_host(m, g, o);   // collective over dp under ZeRO-1
    if (g->rank != 0) {
        if (g->dp_rank != 0) {
            free(mine);
            return mine ? 0 : 1;
        }
        double hdr[2] = {(double)m->n_tensors, (double)m->n_params};
        float *host = mine;
        if (!host)   // rank 0 is waiting for this rank: only an abort ends that
            MPI_Abort(MPI_COMM_WORLD, 1);
        rc = cb->send(w, hdr, 2, COMM_DTYPE_F64, 0) ||
             cb->send(w, m->tensors, words * (size_t)m->n_tensors, COMM_DTYPE_I32, 0) ||
             cb->send(w, host, m->n_params, COMM_DTYPE_F32, 0);
        free(host);
        return rc ? 1 : 0;
    }

    const int max_all = 16 + (int)m->cfg.n_layer * 20;
    full_tensor *all = calloc((size_t)max_all, sizeof *all);
    param_tensor *tab = NULL;
    float *buf = NULL;
    int n_all = 0;
    if (!all || !mine) {
        free(all);
        free(mine);
        return 1;
    }
    for (int r = 0; r < g->world && rc == 0; r++) {
        const int r_dp = (r / g->tp) % g->dp;
        if (r_dp != 0) continue;
        double hdr[2] = {(double)m->n_tensors, (double)m->n_params};
        if (r != 0 && cb->recv(w, hdr, 2, COMM_DTYPE_F64, r)) rc = 1;
        const int nt = (int)hdr[0];
        const size_t np = (size_t)hdr[1];
        free(tab);
        free(buf);
        tab = malloc((size_t)nt * sizeof *tab + 1);
        buf = malloc(np * sizeof(float) + 1);
        if (rc || !tab || !buf) {
            rc = 1;
            break;
        }
        if (r == 0) {
            memcpy(tab, m->tensors, (size_t)nt * sizeof *tab);
            memcpy(buf, mine, np * sizeof(float));
        } else if (cb->recv(w, tab, words * (size_t)nt, COMM_DTYPE_I32, r) ||
                   cb->recv(w, buf, np, COMM_DTYPE_F32, r)) {
            rc = 1;
            break;
        }
        for (int i = 0; i < nt && rc == 0; i++)
            if (tab[i].counted && place(all, &n_all, max_all, &tab[i], buf + tab[i].offset))
                rc = 1;
    }
    free(tab);
    free(buf);
    free(mine);
    if (rc) fprintf(stderr, "anvil: run.final_weights: gathering the parameters failed\n");

    FILE *f = rc ? NULL : tensorfile_create(path);
    if (!rc && !f) rc = 2;
    for (int i = 0; i < n_all && f && rc == 0; i++) {
        const full_tensor *t = &all[i];
        int64_t dims[2] = {t->is_vocab ? m->V : t->shape[0], t->shape[1]};
        if (tensorfile_add(f, t->name, TENSORFILE_DTYPE_F32, t->ndim, dims, t->data) != 0)
            rc = 2;
    }
    if (f && (fclose(f) != 0 || rc != 0)) {
        fprintf(stderr, "anvil: run.final_weights '%s': write failed\n", path);
        rc = 2;
    }
    for (int i = 0; i < n_all; i++) free(all[i].data);
    free(all);
    return rc;
}
