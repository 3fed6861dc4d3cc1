// parallel/pipeline.c: the 1F1B pipeline schedule (PipeDream-Flush, as in Megatron-LM).
//
// Stage s of P runs w = min(P - s - 1, M) warm-up forwards, then M - w rounds of one
// forward and one backward, then w cool-down backwards. So stage s never holds more
// than P - s micro-batches' activations (GPipe would hold all M), and every stage is
// busy once the pipeline has filled: the bubble is (P - 1) / (M + P - 1) of the step.
//
// Messages: the activation of micro-batch i goes from stage s to s + 1, its gradient
// from s + 1 back to s. In the steady state a stage sends an activation and receives
// a gradient (or sends a gradient and receives the next activation) at the same time,
// with one sendrecv, which pairs with the neighbour's matching sendrecv; two blocking
// calls in a row would deadlock as soon as messages exceed MPI's eager limit. The
// pairing (round j of stage s with round j of stage s + 1; the last round's plain
// send with the neighbour's first cool-down receive) is spelled out at each call.
#include "parallel/parallel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int pipeline_split_layers(const char *spec, int n_layer, int pp, int stage, int print,
                          int *layer0, int *count) {
    if (n_layer < pp) {
        if (print)
            fprintf(stderr, "anvil: parallel.pp = %d stages but the model has only %d layers "
                    "(model.n_layer): each stage needs at least one\n", pp, n_layer);
        return 2;
    }
    if (spec[0] == '\0') {
        const int base = n_layer / pp, extra = n_layer % pp;
        *layer0 = stage * base + (stage < extra ? stage : extra);
        *count = base + (stage < extra ? 1 : 0);
        return 0;
    }
    int n = 0, sum = 0;
    const char *p = spec;
    *layer0 = *count = 0;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > n_layer) {
            if (print)
                fprintf(stderr, "anvil: parallel.pp_layers '%s': expected comma-separated "
                        "layer counts of at least 1, e.g. \"6,6,4\"\n", spec);
            return 2;
        }
        if (n == stage) {
            *layer0 = sum;
            *count = (int)v;
        }
        sum += (int)v;
        n++;
        while (*end == ' ') end++;
        if (*end == '\0') break;
        if (*end != ',') {
            if (print)
                fprintf(stderr, "anvil: parallel.pp_layers '%s': unexpected '%c'\n", spec, *end);
            return 2;
        }
        p = end + 1;
    }
    if (n != pp || sum != n_layer) {
        if (print)
            fprintf(stderr, "anvil: parallel.pp_layers '%s' lists %d stages with %d layers; "
                    "the layout has parallel.pp = %d stages and the model %d layers\n", spec,
                    n, sum, pp, n_layer);
        return 2;
    }
    return 0;
}

int pipeline_slots(int pp, int stage, int n_micro) {
    int n = pp - stage;
    return n < n_micro ? n : n_micro;
}


int pipeline_train_1f1b(comm_group *pp, int n_micro, const pipeline_stage *st) {
    const comm_backend *be = pp->be;
    const int P = pp->size, s = pp->rank, M = n_micro;
    const int first = s == 0, last = s == P - 1;
    const int prev = first ? -1 : s - 1, next = last ? -1 : s + 1;
    const size_t n = st->act_count;
    int w = P - s - 1;
    if (w > M) w = M;
    const int steady = M - w;
#define SLOT(i) ((i) % st->n_slots)

    // warm-up: forwards only; each output goes on to the next stage's warm-up (or its
    // first receive below)
    for (int i = 0; i < w; i++) {
        if (!first && be->recv(pp, st->input(st->ctx, SLOT(i)), n, st->act_dtype, prev)) return -1;
        st->forward(st->ctx, i, SLOT(i));
        if (!last && be->send(pp, st->output(st->ctx, SLOT(i)), n, st->act_dtype, next)) return -1;
    }
    if (steady > 0 && !first && be->recv(pp, st->input(st->ctx, SLOT(w)), n, st->act_dtype, prev))
        return -1;
    // steady state: forward w + j, backward j
    for (int j = 0; j < steady; j++) {
        const int f = w + j;
        st->forward(st->ctx, f, SLOT(f));
        // send activation f, receive the gradient of micro-batch j (pairs with the next
        // stage's "send gradient j, receive activation f" below)
        if (!last && be->sendrecv(pp, st->output(st->ctx, SLOT(f)), n, next, st->grad(st->ctx),
                                  n, next, st->act_dtype))
            return -1;
        st->backward(st->ctx, j, SLOT(j));
        if (first) continue;
        if (j + 1 < steady) {
            // send gradient j, receive activation f + 1
            if (be->sendrecv(pp, st->grad(st->ctx), n, prev, st->input(st->ctx, SLOT(f + 1)),
                             n, prev, st->act_dtype))
                return -1;
        } else if (be->send(pp, st->grad(st->ctx), n, st->act_dtype, prev)) {
            return -1;   // pairs with the previous stage's first cool-down receive
        }
    }
    // cool-down: the backwards of the warm-up's micro-batches
    for (int i = steady; i < M; i++) {
        if (!last && be->recv(pp, st->grad(st->ctx), n, st->act_dtype, next)) return -1;
        st->backward(st->ctx, i, SLOT(i));
        if (!first && be->send(pp, st->grad(st->ctx), n, st->act_dtype, prev)) return -1;
    }
#undef SLOT
    return 0;
}

int pipeline_forward_only(comm_group *pp, int n_micro, const pipeline_stage *st) {
    const comm_backend *be = pp->be;
    const int s = pp->rank, first = s == 0, last = s == pp->size - 1;
    for (int i = 0; i < n_micro; i++) {
        if (!first && be->recv(pp, st->input(st->ctx, 0), st->act_count, st->act_dtype, s - 1)) return -1;
        st->forward(st->ctx, i, 0);
        if (!last && be->send(pp, st->output(st->ctx, 0), st->act_count, st->act_dtype, s + 1)) return -1;
    }
    return 0;
}
