// tests/emu/emu_nccl.c: the NCCL calls of parallel/comm_nccl.c carried out over MPI, for
// the host emulation of the cuda backend (tests/emu), where device memory is host
// memory. With it the anvil binary built for the emulation (anvil_emulated) trains with
// device=cuda on several ranks, through comm_nccl.c's own code; what is checked then is
// how the trainer and comm_nccl.c use NCCL (which buffers, counts, types, in-place
// rules, the order of calls on every rank), not NCCL.
//
// Communicators. ncclCommInitRank learns only (nranks, id, rank), so the emulation
// needs every rank of MPI_COMM_WORLD to create its communicator at the same time, each
// with its own group's id (anvil's grid does: tp, then dp, then pp groups, on every
// rank): it splits MPI_COMM_WORLD by the id, which ncclGetUniqueId makes unique from
// the creating rank and a counter. Calls are checked when made and carried out on their
// stream (tests/emu/emu_stream.cc: at once by default, when waited for under
// EMU_STREAMS=lazy), with blocking MPI; send / recv between ncclGroupStart and
// ncclGroupEnd are carried out together, posted non-blocking and all waited for, as
// NCCL progresses a group together.
//
// Arithmetic: fp32 / fp64 / int32 sums and maxima are MPI's. bf16 (no MPI type) is
// moved as 16-bit words and reduced by an MPI user op that adds in fp32 and rounds to
// bf16 at every step (NCCL also rounds at every hop). ncclAvg is the sum divided by the
// group size.
#include "tests/emu/include/nccl.h"
#include "tests/unit/bf16_backend.h"   // the bf16 conversions

#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct emu_nccl_comm {
    MPI_Comm comm;
    int rank, size;
};


static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = bf16_emulated_from_f32(bf16_emulated_to_f32(a[i]) + bf16_emulated_to_f32(b[i]));
}
static void bf16_max(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = bf16_emulated_from_f32(fmaxf(bf16_emulated_to_f32(a[i]), bf16_emulated_to_f32(b[i])));
}

// MPI type and op of an NCCL (type, op); avg is a sum (divided afterwards). Returns 0,
// or -1 for a combination the emulation does not cover.
static int mpi_of(ncclDataType_t type, ncclRedOp_t op, MPI_Datatype *mt, MPI_Op *mo) {
    static MPI_Op bf_sum = MPI_OP_NULL, bf_max = MPI_OP_NULL;
    switch (type) {
    case ncclInt32: *mt = MPI_INT32_T; break;
    case ncclFloat32: *mt = MPI_FLOAT; break;
    case ncclFloat64: *mt = MPI_DOUBLE; break;
    case ncclBfloat16: *mt = MPI_UINT16_T; break;
    default: return -1;
    }
    if (mo == NULL) return 0;
    if (op != ncclSum && op != ncclMax && op != ncclAvg) return -1;
    if (type == ncclBfloat16) {
        if (bf_sum == MPI_OP_NULL) {
            MPI_Op_create(bf16_sum, 1, &bf_sum);
            MPI_Op_create(bf16_max, 1, &bf_max);
        }
        *mo = op == ncclMax ? bf_max : bf_sum;
    } else {
        *mo = op == ncclMax ? MPI_MAX : MPI_SUM;
    }
    return 0;
}

static size_t size_of(ncclDataType_t type) {
    return type == ncclFloat64 ? 8 : type == ncclBfloat16 ? 2 : 4;
}

// buf (count) /= n, for ncclAvg
static void divide(void *buf, size_t count, ncclDataType_t type, int n) {
    for (size_t i = 0; i < count; i++) {
        switch (type) {
        case ncclFloat32: ((float *)buf)[i] /= (float)n; break;
        case ncclFloat64: ((double *)buf)[i] /= (double)n; break;
        case ncclBfloat16: {
            uint16_t *b = buf;
            b[i] = bf16_emulated_from_f32(bf16_emulated_to_f32(b[i]) / (float)n);
            break;
        }
        default: break;
        }
    }
}

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclInvalidArgument: return "invalid argument (host emulation)";
    case ncclInvalidUsage: return "invalid usage (host emulation)";
    default: return "error (host emulation)";
    }
}
const char *ncclGetLastError(ncclComm_t comm) {
    (void)comm;
    return "";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    static int counter;
    int world = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &world);
    memset(id, 0, sizeof *id);
    int color = world * 4096 + (counter++ % 4096);   // a valid, unique MPI split color
    memcpy(id->internal, &color, sizeof color);
    return ncclSuccess;
}

ncclResult_t ncclGetVersion(int *version) {
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    int color;
    memcpy(&color, id.internal, sizeof color);
    struct emu_nccl_comm *c = calloc(1, sizeof *c);
    if (c == NULL) return ncclSystemError;
    if (MPI_Comm_split(MPI_COMM_WORLD, color, rank, &c->comm) != MPI_SUCCESS) {
        free(c);
        return ncclSystemError;
    }
    MPI_Comm_rank(c->comm, &c->rank);
    MPI_Comm_size(c->comm, &c->size);
    if (c->size != nranks || c->rank != rank) {
        fprintf(stderr, "emu_nccl: ncclCommInitRank: rank %d of %d asked, got %d of %d (every "
                "world rank must create its communicator at the same time)\n",
                rank, nranks, c->rank, c->size);
        MPI_Comm_free(&c->comm);
        free(c);
        return ncclInvalidUsage;
    }
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (comm == NULL) return ncclSuccess;
    MPI_Comm_free(&comm->comm);
    free(comm);
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async_error) {
    (void)comm;
    *async_error = ncclSuccess;
    return ncclSuccess;
}

// ---- collectives: checked when called, carried out on the stream ----
// (tests/emu/emu_stream.cc: at once by default, later under EMU_STREAMS=lazy / mixed).
// A failure when carried out is the GPU's asynchronous error: reported, then abort().

enum coll_kind { COLL_ALL_REDUCE, COLL_REDUCE_SCATTER, COLL_ALL_GATHER, COLL_BROADCAST };

struct coll {
    enum coll_kind kind;
    const void *send;
    void *recv;
    size_t count;
    ncclDataType_t type;
    ncclRedOp_t op;
    int root;
    ncclComm_t comm;
    MPI_Datatype mt;                 // MPI's type and (reductions) op, from mpi_of
    MPI_Op mo;
};

static void coll_run(void *arg) {
    struct coll *a = arg;
    const MPI_Datatype mt = a->mt;
    const MPI_Op mo = a->mo;
    const size_t es = size_of(a->type);
    int rc = MPI_SUCCESS;
    MPI_Comm comm = a->comm->comm;
    switch (a->kind) {
    case COLL_ALL_REDUCE:
        rc = MPI_Allreduce(a->send == a->recv ? MPI_IN_PLACE : a->send, a->recv,
                           (int)a->count, mt, mo, comm);
        break;
    case COLL_REDUCE_SCATTER: {
        // NCCL's in-place form: recv is this rank's block of send
        const char *mine = (const char *)a->send + (size_t)a->comm->rank * a->count * es;
        rc = MPI_Reduce_scatter_block(mine == (const char *)a->recv ? MPI_IN_PLACE : a->send,
                                      a->recv, (int)a->count, mt, mo, comm);
        break;
    }
    case COLL_ALL_GATHER: {
        const char *mine = (const char *)a->recv + (size_t)a->comm->rank * a->count * es;
        rc = MPI_Allgather(mine == (const char *)a->send ? MPI_IN_PLACE : a->send,
                           (int)a->count, mt, a->recv, (int)a->count, mt, comm);
        break;
    }
    case COLL_BROADCAST:
        if (a->comm->rank == a->root && a->send != a->recv)
            memmove(a->recv, a->send, a->count * es);
        rc = MPI_Bcast(a->recv, (int)a->count, mt, a->root, comm);
        break;
    }
    if (rc != MPI_SUCCESS) {
        fprintf(stderr, "emu_nccl: collective %d failed in MPI\n", (int)a->kind);
        abort();
    }
    if (a->op == ncclAvg && a->kind != COLL_ALL_GATHER && a->kind != COLL_BROADCAST)
        divide(a->recv, a->count, a->type, a->comm->size);
    free(a);
}

static ncclResult_t coll_queue(enum coll_kind kind, const void *send, void *recv, size_t count,
                               ncclDataType_t type, ncclRedOp_t op, int root, ncclComm_t comm,
                               cudaStream_t stream) {
    MPI_Datatype mt;
    MPI_Op mo = MPI_OP_NULL;
    const int reduces = kind == COLL_ALL_REDUCE || kind == COLL_REDUCE_SCATTER;
    if (mpi_of(type, reduces ? op : ncclSum, &mt, reduces ? &mo : NULL) || count > INT32_MAX ||
        (kind == COLL_BROADCAST && (root < 0 || root >= comm->size)))
        return ncclInvalidArgument;
    struct coll *a = malloc(sizeof *a);
    if (a == NULL) return ncclSystemError;
    *a = (struct coll){kind, send, recv, count, type, reduces ? op : ncclSum, root, comm, mt, mo};
    emu_enqueue_c(stream, coll_run, a);
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    return coll_queue(COLL_ALL_REDUCE, send, recv, count, type, op, 0, comm, stream);
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount,
                               ncclDataType_t type, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
    return coll_queue(COLL_REDUCE_SCATTER, send, recv, recvcount, type, op, 0, comm, stream);
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
    return coll_queue(COLL_ALL_GATHER, send, recv, sendcount, type, ncclSum, 0, comm, stream);
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t stream) {
    return coll_queue(COLL_BROADCAST, send, recv, count, type, ncclSum, root, comm, stream);
}

// ---- point to point, grouped ----
// Between ncclGroupStart and ncclGroupEnd the sends and receives are collected; at the
// outermost ncclGroupEnd they are queued as one item on the stream of the first, which
// posts them all non-blocking and waits for all (NCCL progresses a group together). A
// send or receive outside a group is a group of one.
#define EMU_MAX_P2P 64

struct p2p_op {
    void *buf;
    int count, peer, is_send;
    MPI_Datatype mt;
    ncclComm_t comm;
};
struct p2p_group {
    int n;
    struct p2p_op op[EMU_MAX_P2P];
};

static int group_depth;
static struct p2p_group *open_group;
static cudaStream_t group_stream;

static void p2p_run(void *arg) {
    struct p2p_group *g = arg;
    MPI_Request req[EMU_MAX_P2P];
    for (int i = 0; i < g->n; i++) {
        struct p2p_op *o = &g->op[i];
        int rc = o->is_send ? MPI_Isend(o->buf, o->count, o->mt, o->peer, 0, o->comm->comm, &req[i])
                            : MPI_Irecv(o->buf, o->count, o->mt, o->peer, 0, o->comm->comm, &req[i]);
        if (rc != MPI_SUCCESS) {
            fprintf(stderr, "emu_nccl: send / recv failed in MPI\n");
            abort();
        }
    }
    if (MPI_Waitall(g->n, req, MPI_STATUSES_IGNORE) != MPI_SUCCESS) {
        fprintf(stderr, "emu_nccl: send / recv failed in MPI\n");
        abort();
    }
    free(g);
}

static ncclResult_t p2p(void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                        int is_send, cudaStream_t stream) {
    MPI_Datatype mt;
    if (mpi_of(type, ncclSum, &mt, NULL) || count > INT32_MAX || peer < 0 ||
        peer >= comm->size)
        return ncclInvalidArgument;
    if (group_depth == 0) {                      // outside a group: a group of one
        ncclResult_t r = ncclGroupStart();
        if (r == ncclSuccess) r = p2p(buf, count, type, peer, comm, is_send, stream);
        ncclResult_t e = ncclGroupEnd();
        return r != ncclSuccess ? r : e;
    }
    if (open_group == NULL) {
        open_group = calloc(1, sizeof *open_group);
        if (open_group == NULL) return ncclSystemError;
        group_stream = stream;
    }
    if (open_group->n == EMU_MAX_P2P) return ncclInternalError;
    open_group->op[open_group->n++] = (struct p2p_op){buf, (int)count, peer, is_send, mt, comm};
    return ncclSuccess;
}

ncclResult_t ncclSend(const void *send, size_t count, ncclDataType_t type, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
    return p2p((void *)send, count, type, peer, comm, 1, stream);
}
ncclResult_t ncclRecv(void *recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
    return p2p(recv, count, type, peer, comm, 0, stream);
}
ncclResult_t ncclGroupStart(void) {
    group_depth++;
    return ncclSuccess;
}
ncclResult_t ncclGroupEnd(void) {
    if (group_depth == 0) return ncclInvalidUsage;
    if (--group_depth > 0 || open_group == NULL) return ncclSuccess;
    struct p2p_group *g = open_group;
    open_group = NULL;
    emu_enqueue_c(group_stream, p2p_run, g);
    return ncclSuccess;
}
