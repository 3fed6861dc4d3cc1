// parallel/comm_mpi.c: the MPI communicator backend (host buffers).
//
// Each comm_backend call maps onto one MPI collective on the group's communicator
// (impl is an MPI_Comm *): all_reduce -> MPI_Allreduce in place, reduce_scatter ->
// MPI_Reduce_scatter_block, all_gather -> MPI_Allgather (MPI_IN_PLACE when the send
// block already sits at this rank's place in recv), broadcast -> MPI_Bcast, send / recv
// -> blocking MPI_Send / MPI_Recv and sendrecv -> MPI_Sendrecv, all under one fixed
// tag (a sendrecv with dst or src -1 is a plain send or recv). MPI has no average, so
// AVG is a SUM followed by a division by the group size on every rank; an integer
// average would round, so it is refused rather than silently truncated.
//
// MPI counts are int. A buffer of more than COMM_MPI_CHUNK elements is moved in
// pieces of at most COMM_MPI_CHUNK elements: all-reduce, broadcast and send / recv
// simply walk the buffer; reduce-scatter and all-gather, whose buffers are n blocks
// of `count`, become one MPI_Reduce (resp. MPI_Bcast) per group rank per piece, so no
// single MPI call ever sees a count (or an n x count total) above the chunk. Every
// rank takes the same path because every rank passes the same count. sendrecv walks
// both buffers at once, step i moving send piece i and recv piece i in one
// MPI_Sendrecv, and a direction that has run out of pieces stands in as MPI_PROC_NULL
// (never as an empty message): each direction is then exactly the pieces of a plain
// send / recv of its count, so both ends agree whatever their other direction's count.
//
// Every MPI return code is checked. The grid sets MPI_ERRORS_RETURN on its
// communicators, so a failure comes back here as a code: it is printed once as
// "anvil: mpi: <op>: <MPI's text>" and the call returns -1 (an internal error: the
// caller aborts the job).
//
// bytes_sent grows by the standard algorithm's cost, not by what MPI does inside
// (parallel.h): ring all-reduce 2(n-1)/n x bytes, reduce-scatter and all-gather
// (n-1)/n x the full n x count buffer, broadcast the buffer on the root only, send and
// sendrecv (to a dst) the bytes they send. A group of one rank moves nothing and counts
// nothing: its collectives are no-ops apart from the copies the result needs.
#include "parallel/parallel.h"
#include "parallel/comm_mpi.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <mpi.h>

// Largest element count handed to one MPI call. Tests build this file with a small
// value to drive the chunked paths with small buffers.
#ifndef COMM_MPI_CHUNK
#define COMM_MPI_CHUNK ((size_t)INT_MAX)
#endif

// One tag for all point-to-point traffic: MPI keeps messages between one pair of
// ranks on one communicator and tag in order, which is all the pipeline needs.
#define COMM_MPI_TAG 7001

// ---- helpers --------------------------------------------------------------------------

static MPI_Comm comm_of(const comm_group *g) { return *(const MPI_Comm *)g->impl; }

int comm_mpi_check(int rc, const char *op) {
    if (rc == MPI_SUCCESS) return 0;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error code %d", rc);
    fprintf(stderr, "anvil: mpi: %s: %s\n", op, text);
    return -1;
}

// Map dt to its MPI type and element size. Returns 0, or -1 after printing.
static int dtype_info(comm_dtype dt, const char *op, MPI_Datatype *type, size_t *size) {
    switch (dt) {
    case COMM_DTYPE_F32: *type = MPI_FLOAT; *size = 4; return 0;
    case COMM_DTYPE_F64: *type = MPI_DOUBLE; *size = 8; return 0;
    case COMM_DTYPE_I32: *type = MPI_INT32_T; *size = 4; return 0;
    case COMM_DTYPE_BF16: break;   // device buffers only (NCCL)
    }
    fprintf(stderr, "anvil: mpi: %s: unknown dtype %d\n", op, (int)dt);
    return -1;
}

// Map op to the MPI reduction (AVG reduces with SUM). Returns 0, or -1 after printing
// (an unknown op, or AVG over integers).
static int op_info(comm_op op, comm_dtype dt, const char *name, MPI_Op *mop) {
    switch (op) {
    case COMM_OP_SUM: *mop = MPI_SUM; return 0;
    case COMM_OP_MAX: *mop = MPI_MAX; return 0;
    case COMM_OP_AVG:
        if (dt == COMM_DTYPE_I32) {
            fprintf(stderr, "anvil: mpi: %s: avg is not defined for i32 (it would round)\n",
                    name);
            return -1;
        }
        *mop = MPI_SUM;
        return 0;
    }
    fprintf(stderr, "anvil: mpi: %s: unknown op %d\n", name, (int)op);
    return -1;
}

// Check that r names a group rank. Returns 0, or -1 after printing.
static int rank_check(const comm_group *g, int r, const char *op, const char *what) {
    if (r >= 0 && r < g->size) return 0;
    fprintf(stderr, "anvil: mpi: %s: %s %d is not a rank of this group of %d\n", op, what, r,
            g->size);
    return -1;
}

// buf (count) /= n, for the float types (AVG = SUM then this, on every rank).
static void divide(void *buf, size_t count, comm_dtype dt, int n) {
    if (dt == COMM_DTYPE_F32) {
        float *x = buf, d = (float)n;
        for (size_t i = 0; i < count; i++) x[i] /= d;
    } else if (dt == COMM_DTYPE_F64) {
        double *x = buf, d = (double)n;
        for (size_t i = 0; i < count; i++) x[i] /= d;
    }
}

static int chunk_of(size_t left) { return (int)(left < COMM_MPI_CHUNK ? left : COMM_MPI_CHUNK); }

// ---- collectives ----------------------------------------------------------------------

static int mpi_all_reduce(comm_group *g, void *buf, size_t count, comm_dtype dt, comm_op op) {
    MPI_Datatype type;
    MPI_Op mop;
    size_t es;
    if (dtype_info(dt, "all_reduce", &type, &es) || op_info(op, dt, "all_reduce", &mop))
        return -1;
    if (g->size == 1 || count == 0) return 0;
    char *p = buf;
    for (size_t done = 0; done < count;) {
        int c = chunk_of(count - done);
        if (comm_mpi_check(MPI_Allreduce(MPI_IN_PLACE, p + done * es, c, type, mop, comm_of(g)),
                      "all_reduce"))
            return -1;
        done += (size_t)c;
    }
    if (op == COMM_OP_AVG) divide(buf, count, dt, g->size);
    uint64_t n = (uint64_t)g->size;
    g->bytes_sent += 2 * (n - 1) * (uint64_t)(count * es) / n;
    return 0;
}

static int mpi_reduce_scatter(comm_group *g, const void *send, void *recv, size_t count,
                              comm_dtype dt, comm_op op) {
    MPI_Datatype type;
    MPI_Op mop;
    size_t es;
    if (dtype_info(dt, "reduce_scatter", &type, &es) ||
        op_info(op, dt, "reduce_scatter", &mop))
        return -1;
    if (count == 0) return 0;
    if (g->size == 1) {
        memcpy(recv, send, count * es);
        return 0;
    }
    size_t n = (size_t)g->size;
    if (n * count <= COMM_MPI_CHUNK) {
        if (comm_mpi_check(MPI_Reduce_scatter_block(send, recv, (int)count, type, mop, comm_of(g)),
                      "reduce_scatter"))
            return -1;
    } else {
        // Piece [done, done + c) of every block: reduced onto the rank that owns the block.
        const char *s = send;
        char *r = recv;
        for (size_t done = 0; done < count;) {
            int c = chunk_of(count - done);
            for (int root = 0; root < g->size; root++) {
                const char *sp = s + ((size_t)root * count + done) * es;
                void *rp = root == g->rank ? r + done * es : NULL;
                if (comm_mpi_check(MPI_Reduce(sp, rp, c, type, mop, root, comm_of(g)),
                              "reduce_scatter"))
                    return -1;
            }
            done += (size_t)c;
        }
    }
    if (op == COMM_OP_AVG) divide(recv, count, dt, g->size);
    g->bytes_sent += (uint64_t)(n - 1) * (uint64_t)(count * es);
    return 0;
}

static int mpi_all_gather(comm_group *g, const void *send, void *recv, size_t count,
                          comm_dtype dt) {
    MPI_Datatype type;
    size_t es;
    if (dtype_info(dt, "all_gather", &type, &es)) return -1;
    if (count == 0) return 0;
    char *r = recv;
    char *mine = r + (size_t)g->rank * count * es;   // this rank's block of recv
    int in_place = (const char *)send == mine;
    if (g->size == 1) {
        if (!in_place) memmove(mine, send, count * es);
        return 0;
    }
    size_t n = (size_t)g->size;
    if (n * count <= COMM_MPI_CHUNK) {
        const void *sp = in_place ? MPI_IN_PLACE : send;
        if (comm_mpi_check(MPI_Allgather(sp, (int)count, type, recv, (int)count, type, comm_of(g)),
                      "all_gather"))
            return -1;
    } else {
        // Own block into place, then each rank broadcasts its block piece by piece.
        if (!in_place) memmove(mine, send, count * es);
        for (size_t done = 0; done < count;) {
            int c = chunk_of(count - done);
            for (int root = 0; root < g->size; root++) {
                char *p = r + ((size_t)root * count + done) * es;
                if (comm_mpi_check(MPI_Bcast(p, c, type, root, comm_of(g)), "all_gather"))
                    return -1;
            }
            done += (size_t)c;
        }
    }
    g->bytes_sent += (uint64_t)(n - 1) * (uint64_t)(count * es);
    return 0;
}

static int mpi_broadcast(comm_group *g, void *buf, size_t count, comm_dtype dt, int root) {
    MPI_Datatype type;
    size_t es;
    if (dtype_info(dt, "broadcast", &type, &es) || rank_check(g, root, "broadcast", "root"))
        return -1;
    if (g->size == 1 || count == 0) return 0;
    char *p = buf;
    for (size_t done = 0; done < count;) {
        int c = chunk_of(count - done);
        if (comm_mpi_check(MPI_Bcast(p + done * es, c, type, root, comm_of(g)), "broadcast"))
            return -1;
        done += (size_t)c;
    }
    if (g->rank == root) g->bytes_sent += (uint64_t)(count * es);
    return 0;
}

// ---- point to point -------------------------------------------------------------------

// A blocking send to oneself would wait for a receive that the same thread can never
// post, so a peer (`what`: "peer", "dst", "src") must be another rank (in a group of one
// there is none). Returns 0, or -1 after printing.
static int peer_check(const comm_group *g, int peer, const char *op, const char *what) {
    if (rank_check(g, peer, op, what)) return -1;
    if (peer != g->rank) return 0;
    fprintf(stderr, "anvil: mpi: %s: %s %d is this rank (a blocking send or recv with oneself "
            "never completes)\n", op, what, peer);
    return -1;
}

// A receive of c elements from peer completed with status st: a longer message has
// already failed in MPI (MPI_ERR_TRUNCATE), a shorter one arrives quietly, so compare.
// Returns 0, or -1 after printing.
static int got_check(const MPI_Status *st, MPI_Datatype type, int c, int peer, const char *op) {
    int got = 0;
    if (comm_mpi_check(MPI_Get_count(st, type, &got), op)) return -1;
    if (got == c) return 0;
    fprintf(stderr, "anvil: mpi: %s: peer %d sent %d elements where %d were expected\n", op,
            peer, got, c);
    return -1;
}

// buf (count) to peer, piece by piece; counts nothing. Returns 0, or -1 after printing.
static int send_pieces(comm_group *g, const void *buf, size_t count, MPI_Datatype type,
                       size_t es, int peer, const char *op) {
    const char *p = buf;
    for (size_t done = 0; done < count;) {
        int c = chunk_of(count - done);
        if (comm_mpi_check(MPI_Send(p + done * es, c, type, peer, COMM_MPI_TAG, comm_of(g)), op))
            return -1;
        done += (size_t)c;
    }
    return 0;
}

// buf (count) from peer, piece by piece. Returns 0, or -1 after printing.
static int recv_pieces(comm_group *g, void *buf, size_t count, MPI_Datatype type, size_t es,
                       int peer, const char *op) {
    char *p = buf;
    for (size_t done = 0; done < count;) {
        int c = chunk_of(count - done);
        MPI_Status st;
        if (comm_mpi_check(MPI_Recv(p + done * es, c, type, peer, COMM_MPI_TAG, comm_of(g), &st),
                           op) ||
            got_check(&st, type, c, peer, op))
            return -1;
        done += (size_t)c;
    }
    return 0;
}

static int mpi_send(comm_group *g, const void *buf, size_t count, comm_dtype dt, int peer) {
    MPI_Datatype type;
    size_t es;
    if (dtype_info(dt, "send", &type, &es) || peer_check(g, peer, "send", "peer")) return -1;
    if (send_pieces(g, buf, count, type, es, peer, "send")) return -1;
    g->bytes_sent += (uint64_t)(count * es);
    return 0;
}

static int mpi_recv(comm_group *g, void *buf, size_t count, comm_dtype dt, int peer) {
    MPI_Datatype type;
    size_t es;
    if (dtype_info(dt, "recv", &type, &es) || peer_check(g, peer, "recv", "peer")) return -1;
    return recv_pieces(g, buf, count, type, es, peer, "recv");
}

// Step i sends piece i of send and receives piece i of recv (file comment): a direction
// with fewer pieces stands in as MPI_PROC_NULL once it has run out, so dst receives
// exactly the pieces that its recv half (or a plain recv) of scount expects. Every step
// completes once the pair's step i is posted on dst and src, so a ring of sendrecvs
// cannot deadlock; with more than one piece, though, a peer that is both dst and src
// must itself call sendrecv, not a blocking send and recv in a row. Refusals (dtype,
// dst, src) come before any traffic.
static int mpi_sendrecv(comm_group *g, const void *send, size_t scount, int dst, void *recv,
                        size_t rcount, int src, comm_dtype dt) {
    MPI_Datatype type;
    size_t es;
    if (dtype_info(dt, "sendrecv", &type, &es) ||
        (dst != -1 && peer_check(g, dst, "sendrecv", "dst")) ||
        (src != -1 && peer_check(g, src, "sendrecv", "src")))
        return -1;
    if (src == -1) {
        if (dst == -1) return 0;
        if (send_pieces(g, send, scount, type, es, dst, "sendrecv")) return -1;
    } else if (dst == -1) {
        return recv_pieces(g, recv, rcount, type, es, src, "sendrecv");
    } else {
        const char *s = send;
        char *r = recv;
        for (size_t done = 0; done < scount || done < rcount; done += COMM_MPI_CHUNK) {
            int sc = done < scount ? chunk_of(scount - done) : 0;
            int rc = done < rcount ? chunk_of(rcount - done) : 0;
            MPI_Status st;
            if (comm_mpi_check(MPI_Sendrecv(sc ? s + done * es : NULL, sc, type,
                                            sc ? dst : MPI_PROC_NULL, COMM_MPI_TAG,
                                            rc ? r + done * es : NULL, rc, type,
                                            rc ? src : MPI_PROC_NULL, COMM_MPI_TAG, comm_of(g),
                                            &st),
                               "sendrecv"))
                return -1;
            if (rc && got_check(&st, type, rc, src, "sendrecv")) return -1;
        }
    }
    g->bytes_sent += (uint64_t)(scount * es);
    return 0;
}

static int mpi_barrier(comm_group *g) {
    if (g->size == 1) return 0;
    return comm_mpi_check(MPI_Barrier(comm_of(g)), "barrier");
}

// Host buffers have no streams to overlap on: the "started" operations complete here.
static int mpi_all_reduce_start(comm_group *g, void *buf, size_t count, comm_dtype dt,
                                comm_op op) {
    return mpi_all_reduce(g, buf, count, dt, op);
}

static int mpi_reduce_scatter_start(comm_group *g, const void *send, void *recv, size_t count,
                                    comm_dtype dt, comm_op op) {
    return mpi_reduce_scatter(g, send, recv, count, dt, op);
}

static int mpi_wait(comm_group *g) {
    (void)g;
    return 0;
}

// ---- the backend ----------------------------------------------------------------------

static const comm_backend mpi_backend = {
    .name = "mpi",
    .all_reduce = mpi_all_reduce,
    .reduce_scatter = mpi_reduce_scatter,
    .all_gather = mpi_all_gather,
    .broadcast = mpi_broadcast,
    .send = mpi_send,
    .recv = mpi_recv,
    .sendrecv = mpi_sendrecv,
    .barrier = mpi_barrier,
    .all_reduce_start = mpi_all_reduce_start,
    .reduce_scatter_start = mpi_reduce_scatter_start,
    .wait = mpi_wait,
};

const comm_backend *comm_backend_mpi(void) { return &mpi_backend; }
