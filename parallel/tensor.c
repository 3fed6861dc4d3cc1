// parallel/tensor.c: the collectives of a tensor-parallel model shard.
//
// The model (trainer/model.c) splits heads, MLP channels and vocabulary rows over the
// tp group and needs three things from it: the sum of a row-parallel layer's partial
// outputs (forward), the sum of a column-parallel layer's partial input gradients
// (backward), and the gather of the vocab-parallel cross-entropy's per-row statistics.
// It reaches them through function pointers so that it never calls a communicator;
// these are those functions over a comm_group of any backend.
#include "parallel/parallel.h"

#include <stdio.h>

#include <mpi.h>

static void tp_fail(const comm_group *g, const char *what) {
    fprintf(stderr, "anvil: tensor parallel: %s failed on tp rank %d of %d; aborting the "
            "job\n", what, g->rank, g->size);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

void tp_all_reduce_sum(void *ctx, void *buf, size_t n) {
    const tp_ctx *c = ctx;
    if (c->g->be->all_reduce(c->g, buf, n, c->act, COMM_OP_SUM)) tp_fail(c->g, "all-reduce");
}

void tp_all_gather(void *ctx, const float *send, float *recv, size_t n) {
    const tp_ctx *c = ctx;
    if (c->g->be->all_gather(c->g, send, recv, n, COMM_DTYPE_F32)) tp_fail(c->g, "all-gather");
}
