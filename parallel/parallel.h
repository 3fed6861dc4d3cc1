// parallel/parallel.h: the process grid and the communicator interface.
//
// world = pp x dp x tp, tp innermost (adjacent ranks, so a tp group sits in one node),
// then dp, then pp (DESIGN.md): rank = (pp_rank * dp + dp_rank) * tp + tp_rank. Each
// group (tp, dp, pp, world) is a comm_group: a communicator of some backend. The
// backend is a struct of function pointers (as kernels/ops.h is for compute): MPI over
// host buffers now, NCCL over device buffers with the CUDA issue, behind the same
// calls. Model and trainer code never call MPI directly.
//
// Every collective counts the bytes this rank sends, by the algorithm's standard cost
// (ring all-reduce 2(n-1)/n x bytes, reduce-scatter and all-gather (n-1)/n x the full
// buffer, broadcast the buffer on the root, send its bytes), so the trainer can report
// communication volume per step whatever the MPI library does inside.
#ifndef ANVIL_PARALLEL_PARALLEL_H
#define ANVIL_PARALLEL_PARALLEL_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/config.h"

#ifdef __cplusplus
extern "C" {
#endif

// BF16 is for device buffers (NCCL); the MPI backend refuses it.
typedef enum comm_dtype {
    COMM_DTYPE_F32 = 0, COMM_DTYPE_F64 = 1, COMM_DTYPE_I32 = 2, COMM_DTYPE_BF16 = 3
} comm_dtype;
typedef enum comm_op { COMM_OP_SUM = 0, COMM_OP_AVG = 1, COMM_OP_MAX = 2 } comm_op;

typedef struct comm_group comm_group;

// A communicator backend. Every call is collective over the group unless it says
// otherwise; counts are in elements; buffers are host memory for MPI, device memory for
// NCCL. Each returns 0, or -1 after printing the library's error text (an internal
// error: the caller aborts the job).
typedef struct comm_backend {
    const char *name;   // "mpi" or "nccl"
    // buf (count) reduced in place over the group.
    int (*all_reduce)(comm_group *g, void *buf, size_t count, comm_dtype dt, comm_op op);
    // send (size * count): block r of count elements is reduced over the group into
    // rank r's recv (count). send and recv must not overlap.
    int (*reduce_scatter)(comm_group *g, const void *send, void *recv, size_t count,
                          comm_dtype dt, comm_op op);
    // send (count) from every rank lands in recv (size * count), rank r's at block r.
    // send may be recv + rank * count (in place).
    int (*all_gather)(comm_group *g, const void *send, void *recv, size_t count,
                      comm_dtype dt);
    // buf (count) copied from group rank root to all.
    int (*broadcast)(comm_group *g, void *buf, size_t count, comm_dtype dt, int root);
    // point to point, blocking, to / from group rank peer (not collective).
    int (*send)(comm_group *g, const void *buf, size_t count, comm_dtype dt, int peer);
    int (*recv)(comm_group *g, void *buf, size_t count, comm_dtype dt, int peer);
    // send (scount) to group rank dst and, at the same time, recv (rcount) from group
    // rank src (not collective): the pipeline's exchange of an activation for a
    // gradient, which two blocking calls in a row would deadlock on. dst or src may be
    // -1 for "none" (then only the other half happens); send and recv must not overlap.
    int (*sendrecv)(comm_group *g, const void *send, size_t scount, int dst, void *recv,
                    size_t rcount, int src, comm_dtype dt);
    int (*barrier)(comm_group *g);
    // Overlap (the data-parallel gradient reduction during the backward pass): start
    // an all-reduce / reduce-scatter of data the compute work queued so far produces,
    // and return at once; comm_wait makes every later compute op wait for all started
    // ones. The buffers must not be touched in between. NCCL runs them on the group's
    // own stream, ordered after the compute stream by an event; MPI (host buffers, no
    // streams) completes them before returning.
    int (*all_reduce_start)(comm_group *g, void *buf, size_t count, comm_dtype dt,
                            comm_op op);
    int (*reduce_scatter_start)(comm_group *g, const void *send, void *recv, size_t count,
                                comm_dtype dt, comm_op op);
    int (*wait)(comm_group *g);
} comm_backend;

struct comm_group {
    const comm_backend *be;
    int rank, size;            // this rank's index in the group, the group's size
    uint64_t bytes_sent;       // by this rank, by the standard algorithm cost (above)
    void *impl;                // backend's handle (MPI_Comm * for MPI)
};

// The MPI backend (host buffers).
const comm_backend *comm_backend_mpi(void);

// The NCCL backend (device buffers, parallel/comm_nccl.c). comm_nccl_group_init makes
// g an NCCL communicator over the same ranks as the MPI communicator *mpi_comm (an
// MPI_Comm *, passed untyped so this header needs no mpi.h): group rank 0 creates the
// unique id and broadcasts it over MPI, every rank calls ncclCommInitRank on the GPU
// the cuda backend selected, and a stream of its own is created for the group.
// Collective over mpi_comm. Returns 0, or 1 after printing (no NCCL in this build, or
// NCCL's error text).
int comm_nccl_group_init(comm_group *g, void *mpi_comm);
void comm_nccl_group_free(comm_group *g);   // on a zeroed or freed group: a no-op
// The NCCL library's version, major * 10000 + minor * 100 + patch (2.28.9: 22809); 0
// in a build without NCCL or when it does not say.
int comm_nccl_version(void);

// The grid of one job.
typedef struct parallel_grid {
    int world, rank;           // MPI_COMM_WORLD size and rank
    int dp, tp, pp;            // group sizes
    int dp_rank, tp_rank, pp_rank;
    comm_group *world_g, *dp_g, *tp_g, *pp_g;   // owned
    // after parallel_grid_use_nccl: the MPI groups dp_g, tp_g, pp_g replaced (world_g
    // stays MPI: it carries the host-side flags and sums)
    comm_group *mpi_dp_g, *mpi_tp_g, *mpi_pp_g;
} parallel_grid;

// Build the grid for `pc` over MPI_COMM_WORLD (MPI initialized): dp 0 means
// world / (tp * pp). Refuses, after printing one line (from world rank 0 only) listing
// every factor: a layout whose product is not the world size; n_head or n_kv_head not
// divisible by tp; a global batch of `samples` sequences that does not split into
// whole micro-batches of `micro_batch` on each of the dp ranks; fewer micro-batches per
// rank (samples / (dp * micro_batch)) than pipeline stages. Every rank checks the same
// numbers, so every rank refuses alike. Returns 0, 2 (bad layout) or 1 (MPI error).
int parallel_grid_init(parallel_grid *g, const parallel_config *pc, int n_head,
                       int n_kv_head, long samples, int micro_batch);
void parallel_grid_free(parallel_grid *g);
// Device buffers (the cuda backend): make dp_g, tp_g and pp_g NCCL communicators over
// the same ranks (the MPI ones are kept underneath and freed with the grid). Call once,
// after the cuda backend has selected this rank's GPU. Collective. Returns 0, or 1
// after printing.
int parallel_grid_use_nccl(parallel_grid *g);

// ---- tensor parallel (tensor.c) ----------------------------------------------------

// The tensor-parallel model's collectives over ctx (a tp_ctx *), shaped for
// trainer/model.h's model_tp_comm hooks: buf (n) of type act (the backend's
// activation type) summed in place; fp32 send (n) of every rank gathered into recv
// (size, n) in rank order. A communication failure is an internal error: it is
// reported and the job aborted (MPI_Abort), since a rank returning alone would leave
// the others waiting.
typedef struct tp_ctx {
    comm_group *g;             // the tp group
    comm_dtype act;            // COMM_DTYPE_F32 (cpu) or COMM_DTYPE_BF16 (cuda)
} tp_ctx;
void tp_all_reduce_sum(void *ctx, void *buf, size_t n);
void tp_all_gather(void *ctx, const float *send, float *recv, size_t n);

// ---- pipeline schedule (pipeline.c) ------------------------------------------------

// One stage as the schedule sees it: callbacks that run the model on a micro-batch
// and name the buffers the schedule sends and receives (host memory for MPI, device
// memory for NCCL). Micro-batch i runs in activation slot i % n_slots.
typedef struct pipeline_stage {
    void *ctx;
    int n_slots;                              // pipeline_slots(...) or more
    size_t act_count;                         // elements in one activation (B*T*C)
    comm_dtype act_dtype;                     // their type (the backend's anv_act)
    void (*forward)(void *ctx, int micro, int slot);   // input already in place
    void (*backward)(void *ctx, int micro, int slot);  // output gradient in place
    void *(*input)(void *ctx, int slot);      // receives the previous stage's output
    void *(*output)(void *ctx, int slot);     // sent to the next stage
    void *(*grad)(void *ctx);                 // receives the output's gradient before
                                              // backward, holds the input's after it
} pipeline_stage;

// The layers of pipeline stage `stage` of pp: global [*layer0, *layer0 + *count).
// spec is parallel.pp_layers: "" splits n_layer as evenly as possible (the first
// n_layer % pp stages get one more: the last stage also runs the head), else a
// comma-separated count per stage. Returns 0, or 2 when spec is malformed, does not
// list pp counts of at least 1 or does not sum to n_layer, or n_layer < pp (then it
// prints one line naming parallel.pp_layers / parallel.pp, if `print`).
int pipeline_split_layers(const char *spec, int n_layer, int pp, int stage, int print,
                          int *layer0, int *count);

// Activation slots stage `stage` of `pp` needs under 1F1B with n_micro micro-batches:
// the micro-batches it has in flight at most, min(pp - stage, n_micro).
int pipeline_slots(int pp, int stage, int n_micro);

// One training step's forward and backward passes of n_micro micro-batches over the
// stages of group `pp` (this rank is stage pp->rank), in the 1F1B order: warm-up of
// pp - stage - 1 forwards, then one forward and one backward alternating, then the
// remaining backwards. Activations go to the next stage and gradients back with
// sendrecv where a stage both sends and receives, so no pair of blocking calls can
// deadlock. pp of size 1 is forward, backward per micro-batch. Returns 0, or -1 after
// a communication error.
int pipeline_train_1f1b(comm_group *pp, int n_micro, const pipeline_stage *st);

// Forward passes only (evaluation), micro-batch by micro-batch in slot 0.
int pipeline_forward_only(comm_group *pp, int n_micro, const pipeline_stage *st);

#ifdef __cplusplus
}
#endif
#endif
