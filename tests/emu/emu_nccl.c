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
// the creating rank and a counter. Calls complete before they return (MPI blocking);
// send / recv between ncclGroupStart and ncclGroupEnd are posted non-blocking and all
// waited for at ncclGroupEnd, as NCCL progresses a group together.
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

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    MPI_Datatype mt;
    MPI_Op mo;
    if (mpi_of(type, op, &mt, &mo) || count > INT32_MAX) return ncclInvalidArgument;
    if (MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, (int)count, mt, mo,
                      comm->comm) != MPI_SUCCESS)
        return ncclSystemError;
    if (op == ncclAvg) divide(recv, count, type, comm->size);
    return ncclSuccess;
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount,
                               ncclDataType_t type, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
    (void)stream;
    MPI_Datatype mt;
    MPI_Op mo;
    if (mpi_of(type, op, &mt, &mo) || recvcount > INT32_MAX) return ncclInvalidArgument;
    // NCCL's in-place form: recv is this rank's block of send
    const char *mine = (const char *)send + (size_t)comm->rank * recvcount * size_of(type);
    if (MPI_Reduce_scatter_block(mine == (const char *)recv ? MPI_IN_PLACE : send, recv,
                                 (int)recvcount, mt, mo, comm->comm) != MPI_SUCCESS)
        return ncclSystemError;
    if (op == ncclAvg) divide(recv, recvcount, type, comm->size);
    return ncclSuccess;
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    MPI_Datatype mt;
    if (mpi_of(type, ncclSum, &mt, NULL) || sendcount > INT32_MAX) return ncclInvalidArgument;
    const char *mine = (const char *)recv + (size_t)comm->rank * sendcount * size_of(type);
    if (MPI_Allgather(mine == (const char *)send ? MPI_IN_PLACE : send, (int)sendcount, mt, recv,
                      (int)sendcount, mt, comm->comm) != MPI_SUCCESS)
        return ncclSystemError;
    return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    MPI_Datatype mt;
    if (mpi_of(type, ncclSum, &mt, NULL) || count > INT32_MAX) return ncclInvalidArgument;
    if (comm->rank == root && send != recv)
        memmove(recv, send, count * size_of(type));
    if (MPI_Bcast(recv, (int)count, mt, root, comm->comm) != MPI_SUCCESS) return ncclSystemError;
    return ncclSuccess;
}

// ---- point to point, grouped ----
#define EMU_MAX_P2P 64
static int group_depth;
static MPI_Request pending[EMU_MAX_P2P];
static int npending;

static ncclResult_t p2p(void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                        int is_send) {
    MPI_Datatype mt;
    if (mpi_of(type, ncclSum, &mt, NULL) || count > INT32_MAX || peer < 0 ||
        peer >= comm->size)
        return ncclInvalidArgument;
    if (npending == EMU_MAX_P2P) return ncclInternalError;
    int rc = is_send ? MPI_Isend(buf, (int)count, mt, peer, 0, comm->comm, &pending[npending])
                     : MPI_Irecv(buf, (int)count, mt, peer, 0, comm->comm, &pending[npending]);
    if (rc != MPI_SUCCESS) return ncclSystemError;
    npending++;
    if (group_depth == 0) return ncclGroupEnd();   // outside a group: complete now
    return ncclSuccess;
}

ncclResult_t ncclSend(const void *send, size_t count, ncclDataType_t type, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    return p2p((void *)send, count, type, peer, comm, 1);
}
ncclResult_t ncclRecv(void *recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
    (void)stream;
    return p2p(recv, count, type, peer, comm, 0);
}
ncclResult_t ncclGroupStart(void) {
    group_depth++;
    return ncclSuccess;
}
ncclResult_t ncclGroupEnd(void) {
    if (group_depth > 0) group_depth--;
    if (group_depth > 0) return ncclSuccess;
    int rc = MPI_Waitall(npending, pending, MPI_STATUSES_IGNORE);
    npending = 0;
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}
