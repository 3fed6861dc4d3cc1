// parallel/comm_nccl.c: the NCCL communicator backend (device buffers).
//
// Each comm_backend call maps onto one NCCL call on the group's communicator:
// all_reduce -> ncclAllReduce in place, reduce_scatter -> ncclReduceScatter,
// all_gather -> ncclAllGather (in place when send is this rank's block of recv, which
// NCCL allows), broadcast -> ncclBroadcast in place, send / recv / sendrecv ->
// ncclSend / ncclRecv inside one ncclGroupStart / ncclGroupEnd (so the two halves of a
// sendrecv progress together and a ring of them cannot deadlock), barrier -> an
// all-reduce of one int on a tiny device buffer, then a wait for the group's stream.
//
// Streams. The group owns a stream (non-blocking, so it never syncs with the legacy
// default stream) and two events. Every collective is ordered after the work already
// queued on the cuda backend's compute stream and before the work queued after it:
//     record `ready` on compute; group stream waits on `ready`;   (begin)
//     the NCCL call on the group stream;
//     record `done` on the group stream; compute waits on `done`.  (finish)
// So to the caller an NCCL op is one more stream-ordered op like any kernel, and the
// host never blocks (only barrier waits, by its contract). The *_start variants do
// begin and the NCCL call only; wait does finish, making every later compute op wait
// for all ops started so far (they run in order on the one group stream, so the last
// record covers them all). Reusing one event is safe: a cudaStreamWaitEvent captures
// the event's latest record at the time of the call.
//
// Numerics. SUM and MAX are NCCL's own. AVG is ncclAvg for the float types, which NCCL
// computes as a sum of inputs pre-multiplied by 1/n (or as a sum then a division,
// depending on the algorithm it picks): for a group size that is not a power of two
// the result may differ in the last bit from the MPI backend's sum-then-divide. bf16
// sums accumulate in bf16 at every hop (NCCL's rule), so the caller reduces fp32
// buffers where precision matters. An integer average would round, so it is refused
// as the MPI backend refuses it.
//
// Errors. Every NCCL and CUDA return code is checked; a failure is printed once as
// "anvil: nccl: <op>: <library text>" (with NCCL's last-error detail when it has one)
// and the call returns -1 (an internal error: the caller aborts the job). Errors that
// happen asynchronously on the GPU (a peer gone) surface at the next barrier, which
// asks the communicator for them after its wait.
//
// bytes_sent grows exactly as in comm_mpi.c (parallel.h): ring all-reduce 2(n-1)/n x
// bytes, reduce-scatter and all-gather (n-1)/n x the full n x count buffer, broadcast
// the buffer on the root only, send and sendrecv (to a dst) the bytes they send. A group
// of one rank moves nothing and counts nothing: its collectives issue no NCCL call, only
// the device copies the result needs (on the compute stream, so they stay ordered).
//
// A build without NCCL (ANVIL_HAVE_NCCL not 1, set by meson with -Dcuda=enabled)
// keeps comm_nccl_group_init, which then refuses with one line, and a no-op free.
#include "parallel/parallel.h"

#include <stdio.h>
#include <string.h>

#if defined(ANVIL_HAVE_NCCL) && ANVIL_HAVE_NCCL == 1

#include "parallel/comm_mpi.h"

#include <stdlib.h>

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

// The cuda backend's compute stream (a cudaStream_t), from kernels/cuda/backend.cu.
extern void *cuda_compute_stream(void);

// The NCCL side of a comm_group (g->impl).
typedef struct nccl_group {
    ncclComm_t comm;
    cudaStream_t stream;        // the group's own stream: every NCCL call runs here
    cudaEvent_t ready;          // recorded on compute, waited on by `stream` (begin)
    cudaEvent_t done;           // recorded on `stream`, waited on by compute (finish)
    int *barrier_buf;           // (1) device int all-reduced by barrier, stays 0
    MPI_Comm mpi;               // the MPI communicator over the same ranks (not owned)
} nccl_group;

// ---- helpers --------------------------------------------------------------------------

static nccl_group *impl_of(const comm_group *g) { return g->impl; }

static cudaStream_t compute_stream(void) { return (cudaStream_t)cuda_compute_stream(); }

// Print "anvil: nccl: <op>: <NCCL's text>[: <last error>]" unless rc is ncclSuccess.
// comm may be NULL (no communicator yet). Returns 0 on success, else -1.
static int nccl_check(ncclResult_t rc, ncclComm_t comm, const char *op) {
    if (rc == ncclSuccess) return 0;
    const char *detail = ncclGetLastError(comm);
    if (detail && detail[0])
        fprintf(stderr, "anvil: nccl: %s: %s: %s\n", op, ncclGetErrorString(rc), detail);
    else
        fprintf(stderr, "anvil: nccl: %s: %s\n", op, ncclGetErrorString(rc));
    return -1;
}

// Print "anvil: nccl: <op>: <CUDA's text>" unless rc is cudaSuccess. Returns 0 or -1.
static int cuda_check(cudaError_t rc, const char *op) {
    if (rc == cudaSuccess) return 0;
    fprintf(stderr, "anvil: nccl: %s: %s\n", op, cudaGetErrorString(rc));
    return -1;
}

// Map dt to its NCCL type and element size. Returns 0, or -1 after printing.
static int dtype_info(comm_dtype dt, const char *op, ncclDataType_t *type, size_t *size) {
    switch (dt) {
    case COMM_DTYPE_F32: *type = ncclFloat32; *size = 4; return 0;
    case COMM_DTYPE_F64: *type = ncclFloat64; *size = 8; return 0;
    case COMM_DTYPE_I32: *type = ncclInt32; *size = 4; return 0;
    case COMM_DTYPE_BF16: *type = ncclBfloat16; *size = 2; return 0;
    }
    fprintf(stderr, "anvil: nccl: %s: unknown dtype %d\n", op, (int)dt);
    return -1;
}

// Map op to NCCL's reduction. Returns 0, or -1 after printing (an unknown op, or AVG
// over integers, which NCCL would truncate).
static int op_info(comm_op op, comm_dtype dt, const char *name, ncclRedOp_t *nop) {
    switch (op) {
    case COMM_OP_SUM: *nop = ncclSum; return 0;
    case COMM_OP_MAX: *nop = ncclMax; return 0;
    case COMM_OP_AVG:
        if (dt == COMM_DTYPE_I32) {
            fprintf(stderr, "anvil: nccl: %s: avg is not defined for i32 (it would round)\n",
                    name);
            return -1;
        }
        *nop = ncclAvg;
        return 0;
    }
    fprintf(stderr, "anvil: nccl: %s: unknown op %d\n", name, (int)op);
    return -1;
}

// Check that r names a group rank. Returns 0, or -1 after printing.
static int rank_check(const comm_group *g, int r, const char *op, const char *what) {
    if (r >= 0 && r < g->size) return 0;
    fprintf(stderr, "anvil: nccl: %s: %s %d is not a rank of this group of %d\n", op, what, r,
            g->size);
    return -1;
}

// A peer (`what`: "peer", "dst", "src") must be another rank, as in comm_mpi.c: a send
// to oneself with no matching receive in the same NCCL group would hang the stream.
// Returns 0, or -1 after printing.
static int peer_check(const comm_group *g, int peer, const char *op, const char *what) {
    if (rank_check(g, peer, op, what)) return -1;
    if (peer != g->rank) return 0;
    fprintf(stderr, "anvil: nccl: %s: %s %d is this rank (a send or recv with oneself "
            "never completes)\n", op, what, peer);
    return -1;
}

// Make the group's stream wait for the work queued on the compute stream so far.
// Returns 0, or -1 after printing.
static int begin(nccl_group *c, const char *op) {
    if (cuda_check(cudaEventRecord(c->ready, compute_stream()), op) ||
        cuda_check(cudaStreamWaitEvent(c->stream, c->ready, 0), op))
        return -1;
    return 0;
}

// Make the compute stream wait for the work queued on the group's stream so far.
// Returns 0, or -1 after printing.
static int finish(nccl_group *c, const char *op) {
    if (cuda_check(cudaEventRecord(c->done, c->stream), op) ||
        cuda_check(cudaStreamWaitEvent(compute_stream(), c->done, 0), op))
        return -1;
    return 0;
}

// dst (bytes) := src (bytes) on the compute stream: a group of one's "collective".
static int local_copy(void *dst, const void *src, size_t bytes, const char *op) {
    return cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                                      compute_stream()), op);
}

// ---- collectives ----------------------------------------------------------------------
//
// Each collective has one body taking `join`: 1 for the plain call (begin, NCCL call,
// finish), 0 for the *_start variant (no finish; wait does it later).

static int all_reduce_impl(comm_group *g, void *buf, size_t count, comm_dtype dt, comm_op op,
                           int join, const char *name) {
    ncclDataType_t type;
    ncclRedOp_t nop;
    size_t es;
    if (dtype_info(dt, name, &type, &es) || op_info(op, dt, name, &nop)) return -1;
    if (g->size == 1 || count == 0) return 0;
    nccl_group *c = impl_of(g);
    if (begin(c, name) ||
        nccl_check(ncclAllReduce(buf, buf, count, type, nop, c->comm, c->stream), c->comm,
                   name) ||
        (join && finish(c, name)))
        return -1;
    uint64_t n = (uint64_t)g->size;
    g->bytes_sent += 2 * (n - 1) * (uint64_t)(count * es) / n;
    return 0;
}

static int reduce_scatter_impl(comm_group *g, const void *send, void *recv, size_t count,
                               comm_dtype dt, comm_op op, int join, const char *name) {
    ncclDataType_t type;
    ncclRedOp_t nop;
    size_t es;
    if (dtype_info(dt, name, &type, &es) || op_info(op, dt, name, &nop)) return -1;
    if (count == 0) return 0;
    if (g->size == 1) return local_copy(recv, send, count * es, name);
    nccl_group *c = impl_of(g);
    if (begin(c, name) ||
        nccl_check(ncclReduceScatter(send, recv, count, type, nop, c->comm, c->stream),
                   c->comm, name) ||
        (join && finish(c, name)))
        return -1;
    g->bytes_sent += (uint64_t)(g->size - 1) * (uint64_t)(count * es);
    return 0;
}

static int nccl_all_reduce(comm_group *g, void *buf, size_t count, comm_dtype dt,
                           comm_op op) {
    return all_reduce_impl(g, buf, count, dt, op, 1, "all_reduce");
}

static int nccl_all_reduce_start(comm_group *g, void *buf, size_t count, comm_dtype dt,
                                 comm_op op) {
    return all_reduce_impl(g, buf, count, dt, op, 0, "all_reduce_start");
}

static int nccl_reduce_scatter(comm_group *g, const void *send, void *recv, size_t count,
                               comm_dtype dt, comm_op op) {
    return reduce_scatter_impl(g, send, recv, count, dt, op, 1, "reduce_scatter");
}

static int nccl_reduce_scatter_start(comm_group *g, const void *send, void *recv,
                                     size_t count, comm_dtype dt, comm_op op) {
    return reduce_scatter_impl(g, send, recv, count, dt, op, 0, "reduce_scatter_start");
}

static int nccl_wait(comm_group *g) {
    if (g->size == 1) return 0;   // nothing was started on the group's stream
    return finish(impl_of(g), "wait");
}

static int nccl_all_gather(comm_group *g, const void *send, void *recv, size_t count,
                           comm_dtype dt) {
    ncclDataType_t type;
    size_t es;
    if (dtype_info(dt, "all_gather", &type, &es)) return -1;
    if (count == 0) return 0;
    char *mine = (char *)recv + (size_t)g->rank * count * es;   // this rank's block
    if (g->size == 1)
        return (const char *)send == mine ? 0 : local_copy(mine, send, count * es, "all_gather");
    nccl_group *c = impl_of(g);
    if (begin(c, "all_gather") ||
        nccl_check(ncclAllGather(send, recv, count, type, c->comm, c->stream), c->comm,
                   "all_gather") ||
        finish(c, "all_gather"))
        return -1;
    g->bytes_sent += (uint64_t)(g->size - 1) * (uint64_t)(count * es);
    return 0;
}

static int nccl_broadcast(comm_group *g, void *buf, size_t count, comm_dtype dt, int root) {
    ncclDataType_t type;
    size_t es;
    if (dtype_info(dt, "broadcast", &type, &es) || rank_check(g, root, "broadcast", "root"))
        return -1;
    if (g->size == 1 || count == 0) return 0;
    nccl_group *c = impl_of(g);
    if (begin(c, "broadcast") ||
        nccl_check(ncclBroadcast(buf, buf, count, type, root, c->comm, c->stream), c->comm,
                   "broadcast") ||
        finish(c, "broadcast"))
        return -1;
    if (g->rank == root) g->bytes_sent += (uint64_t)(count * es);
    return 0;
}

// ---- point to point -------------------------------------------------------------------

// Send scount to dst and receive rcount from src in one NCCL group (dst / src -1: that
// half is absent; a count of 0 is absent too, as in comm_mpi.c, where an empty send and
// its empty receive both move nothing). Peers are checked by the caller. Returns 0, or
// -1 after printing.
static int p2p(comm_group *g, const void *send, size_t scount, int dst, void *recv,
               size_t rcount, int src, ncclDataType_t type, const char *op) {
    int do_send = dst != -1 && scount > 0, do_recv = src != -1 && rcount > 0;
    if (!do_send && !do_recv) return 0;
    nccl_group *c = impl_of(g);
    if (begin(c, op)) return -1;
    if (nccl_check(ncclGroupStart(), c->comm, op)) return -1;
    // ncclGroupEnd must close the group even when a call inside it failed.
    int bad = (do_send &&
               nccl_check(ncclSend(send, scount, type, dst, c->comm, c->stream), c->comm, op)) ||
              (do_recv &&
               nccl_check(ncclRecv(recv, rcount, type, src, c->comm, c->stream), c->comm, op));
    if (nccl_check(ncclGroupEnd(), c->comm, op) || bad) return -1;
    return finish(c, op);
}

static int nccl_send(comm_group *g, const void *buf, size_t count, comm_dtype dt, int peer) {
    ncclDataType_t type;
    size_t es;
    if (dtype_info(dt, "send", &type, &es) || peer_check(g, peer, "send", "peer")) return -1;
    if (p2p(g, buf, count, peer, NULL, 0, -1, type, "send")) return -1;
    g->bytes_sent += (uint64_t)(count * es);
    return 0;
}

static int nccl_recv(comm_group *g, void *buf, size_t count, comm_dtype dt, int peer) {
    ncclDataType_t type;
    size_t es;
    if (dtype_info(dt, "recv", &type, &es) || peer_check(g, peer, "recv", "peer")) return -1;
    return p2p(g, NULL, 0, -1, buf, count, peer, type, "recv");
}

static int nccl_sendrecv(comm_group *g, const void *send, size_t scount, int dst, void *recv,
                         size_t rcount, int src, comm_dtype dt) {
    ncclDataType_t type;
    size_t es;
    if (dtype_info(dt, "sendrecv", &type, &es) ||
        (dst != -1 && peer_check(g, dst, "sendrecv", "dst")) ||
        (src != -1 && peer_check(g, src, "sendrecv", "src")))
        return -1;
    if (p2p(g, send, scount, dst, recv, rcount, src, type, "sendrecv")) return -1;
    if (dst != -1) g->bytes_sent += (uint64_t)(scount * es);
    return 0;
}

// The all-reduce completes on no rank before every rank has issued it, so waiting for
// it on the host is a barrier. It is not ordered after the compute stream: a barrier
// meets the other ranks, it does not wait for this rank's kernels.
static int nccl_barrier(comm_group *g) {
    if (g->size == 1) return 0;
    nccl_group *c = impl_of(g);
    ncclResult_t async = ncclSuccess;
    if (nccl_check(ncclAllReduce(c->barrier_buf, c->barrier_buf, 1, ncclInt32, ncclSum,
                                 c->comm, c->stream),
                   c->comm, "barrier") ||
        cuda_check(cudaStreamSynchronize(c->stream), "barrier") ||
        nccl_check(ncclCommGetAsyncError(c->comm, &async), c->comm, "barrier") ||
        nccl_check(async, c->comm, "barrier"))
        return -1;
    return 0;
}

// ---- the backend ----------------------------------------------------------------------

static const comm_backend nccl_backend = {
    .name = "nccl",
    .all_reduce = nccl_all_reduce,
    .reduce_scatter = nccl_reduce_scatter,
    .all_gather = nccl_all_gather,
    .broadcast = nccl_broadcast,
    .send = nccl_send,
    .recv = nccl_recv,
    .sendrecv = nccl_sendrecv,
    .barrier = nccl_barrier,
    .all_reduce_start = nccl_all_reduce_start,
    .reduce_scatter_start = nccl_reduce_scatter_start,
    .wait = nccl_wait,
};

// ---- init / free ----------------------------------------------------------------------

// Release what c holds (any part may be missing), then c itself. NCCL work still on
// the group's stream is waited for first: ncclCommDestroy must not pull the
// communicator from under it. Errors are printed and otherwise ignored.
static void impl_free(nccl_group *c) {
    if (!c) return;
    if (c->stream) cuda_check(cudaStreamSynchronize(c->stream), "group_free");
    if (c->comm) nccl_check(ncclCommDestroy(c->comm), NULL, "group_free");
    if (c->barrier_buf) cuda_check(cudaFree(c->barrier_buf), "group_free");
    if (c->done) cuda_check(cudaEventDestroy(c->done), "group_free");
    if (c->ready) cuda_check(cudaEventDestroy(c->ready), "group_free");
    if (c->stream) cuda_check(cudaStreamDestroy(c->stream), "group_free");
    free(c);
}

// The stream, events and barrier buffer of c (this rank only). Returns 0, or -1 after
// printing.
static int local_init(nccl_group *c) {
    const char *op = "group_init";
    if (!cuda_compute_stream()) {
        fprintf(stderr, "anvil: nccl: %s: the cuda backend has no compute stream "
                "(anv_backend_cuda not called)\n", op);
        return -1;
    }
    if (cuda_check(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), op) ||
        cuda_check(cudaEventCreateWithFlags(&c->ready, cudaEventDisableTiming), op) ||
        cuda_check(cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming), op) ||
        cuda_check(cudaMalloc((void **)&c->barrier_buf, sizeof(int)), op) ||
        // 0 summed over the group stays 0, so repeated barriers never overflow it.
        cuda_check(cudaMemsetAsync(c->barrier_buf, 0, sizeof(int), c->stream), op))
        return -1;
    return 0;
}

int comm_nccl_group_init(comm_group *g, void *mpi_comm) {
    const char *op = "group_init";
    memset(g, 0, sizeof *g);
    MPI_Comm comm = *(MPI_Comm *)mpi_comm;
    int rank = 0, size = 0;
    if (comm_mpi_check(MPI_Comm_rank(comm, &rank), "nccl group_init") ||
        comm_mpi_check(MPI_Comm_size(comm, &size), "nccl group_init"))
        return 1;
    nccl_group *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "anvil: nccl: %s: out of memory\n", op);
        return 1;
    }
    c->mpi = comm;

    // Every rank learns whether every rank got this far (its local resources, and rank
    // 0 its unique id) before any rank enters a call that needs all of them: a rank
    // that failed alone would otherwise leave the others waiting in MPI_Bcast or in
    // ncclCommInitRank.
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    int ok = local_init(c) == 0;
    if (ok && rank == 0) ok = nccl_check(ncclGetUniqueId(&id), NULL, op) == 0;
    int all_ok = 0;
    if (comm_mpi_check(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm),
                       "nccl group_init")) {
        impl_free(c);
        return 1;
    }
    if (!all_ok) {
        if (ok) fprintf(stderr, "anvil: nccl: %s: another rank of the group failed\n", op);
        impl_free(c);
        return 1;
    }
    if (comm_mpi_check(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, comm), "nccl group_init") ||
        nccl_check(ncclCommInitRank(&c->comm, size, id, rank), NULL, op)) {
        c->comm = NULL;   // not created: nothing to destroy
        impl_free(c);
        return 1;
    }
    g->be = &nccl_backend;
    g->rank = rank;
    g->size = size;
    g->bytes_sent = 0;
    g->impl = c;
    return 0;
}

int comm_nccl_version(void) {
    int v = 0;
    return ncclGetVersion(&v) == ncclSuccess ? v : 0;
}

void comm_nccl_group_free(comm_group *g) {
    if (!g || !g->impl) return;
    impl_free(g->impl);
    memset(g, 0, sizeof *g);
}

#else   // no NCCL in this build

int comm_nccl_group_init(comm_group *g, void *mpi_comm) {
    (void)mpi_comm;
    memset(g, 0, sizeof *g);
    fprintf(stderr, "anvil: nccl: this build has no NCCL (configure with -Dcuda=enabled)\n");
    return 1;
}

void comm_nccl_group_free(comm_group *g) { (void)g; }

int comm_nccl_version(void) { return 0; }

#endif
