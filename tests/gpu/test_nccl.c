// tests/gpu/test_nccl.c: the NCCL communicator backend against the MPI backend.
//
// An MPI program, normally run with one rank (the gpu suite's machine has one GPU);
// with several ranks it needs one GPU per rank on each node (NCCL refuses two ranks
// on one device). Exit 77 (skipped) when the CUDA runtime sees no GPU, or fewer GPUs
// than ranks on a node.
//
// Every check runs the same random input through both backends over MPI_COMM_WORLD:
// the MPI backend on host buffers, the NCCL backend on device buffers of the cuda
// backend, and compares the results bit for bit (bf16, which the MPI backend refuses,
// against a host reduction instead). Bitwise holds for any number of ranks, not only
// for one: every input is a small dyadic rational (f32 / f64: k / 8 with |k| <= 8000;
// i32: |k| <= 1000; bf16: integers |k| <= 8), so every partial sum is exact and the
// order in which either library adds is invisible. The one exception is AVG over a
// group whose size is not a power of two: NCCL pre-multiplies by 1/n, MPI divides the
// sum, so the two may differ by a few roundings; there the bound is
//   |nccl - mpi| <= (n + 2) eps * sum_r |x_r| / n
// (one rounding per pre-multiplied input, n - 1 in the sum, one in MPI's division).
//
// Stream ordering is part of what is checked: each NCCL input is staged on the device
// and moved into place by the backend's queued device copy just before the collective,
// and each result is copied out by another queued device copy just after it (after
// `wait` for the *_start variants), so a collective that did not wait for the compute
// stream, or that the compute stream did not wait for, reads or yields stale bytes.
// bytes_sent of the two backends must grow alike on every call.
//
// Checks: all_reduce SUM / AVG / MAX for f32, f64 and i32 (AVG i32 refused by both),
// bf16 SUM and MAX; reduce_scatter likewise; all_reduce_start + wait and
// reduce_scatter_start + wait; all_gather into a separate buffer and in place;
// broadcast from the first and last rank; barrier; with two ranks or more, send / recv
// and a ring of sendrecv (a point-to-point call with oneself never completes, so one
// rank skips them). Counts 0, 1, 7 and 1000003 (odd, not a multiple of any group size
// or vector width). World rank 0 prints one line per check, then "N passed, N failed";
// exit 1 if any check failed on any rank.
#include "kernels/ops.h"
#include "parallel/parallel.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#define MAX_COUNT ((size_t)1000003)
static const size_t counts[] = {0, 1, 7, MAX_COUNT};
#define N_COUNTS (sizeof counts / sizeof counts[0])
static const comm_op ops[] = {COMM_OP_SUM, COMM_OP_AVG, COMM_OP_MAX};
static const char *dtype_names[] = {"f32", "f64", "i32", "bf16"};
static const char *op_names[] = {"sum", "avg", "max"};

typedef struct test_ctx {
    const anv_backend *be;   // the cuda backend
    comm_group *mg, *ng;     // MPI and NCCL groups over MPI_COMM_WORLD
    int passed, failed;      // checks, counted on every rank alike
    unsigned salt;           // advanced per check so every check has fresh data
    void *stage_in, *stage_out;   // device staging, STAGE_BYTES(size) each (upload)
} test_ctx;

// The largest buffer of any check: reduce_scatter's send, size x the largest count of
// f64.
#define STAGE_BYTES(n) ((size_t)(n) * MAX_COUNT * 8)

// ---- data ---------------------------------------------------------------------------------

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t dtype_size(comm_dtype dt) {
    return dt == COMM_DTYPE_F64 ? 8 : dt == COMM_DTYPE_BF16 ? 2 : 4;
}

// bf16 <-> float for values bf16 holds exactly (the inputs and their sums): the top 16
// bits of the float.
static uint16_t bf16_of(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16);
}
static float float_of_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

// buf (count) := the input of rank r for check `salt` (ranges in the file comment).
static void fill(void *buf, size_t count, comm_dtype dt, unsigned salt, int r) {
    uint64_t s = ((uint64_t)salt << 20) ^ (uint64_t)(r + 1) * 0x2545F4914F6CDD1Dull;
    for (size_t i = 0; i < count; i++) {
        uint64_t u = splitmix(&s);
        int k = (int)(u % 16001) - 8000;
        if (dt == COMM_DTYPE_F32) ((float *)buf)[i] = (float)k / 8.0f;
        else if (dt == COMM_DTYPE_F64) ((double *)buf)[i] = (double)k / 8.0;
        else if (dt == COMM_DTYPE_I32) ((int32_t *)buf)[i] = (int32_t)(u % 2001) - 1000;
        else ((uint16_t *)buf)[i] = bf16_of((float)((int)(u % 17) - 8));
    }
}

static double get(const void *buf, comm_dtype dt, size_t i) {
    if (dt == COMM_DTYPE_F32) return ((const float *)buf)[i];
    if (dt == COMM_DTYPE_F64) return ((const double *)buf)[i];
    if (dt == COMM_DTYPE_I32) return ((const int32_t *)buf)[i];
    return float_of_bf16(((const uint16_t *)buf)[i]);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_nccl: out of memory (%zu bytes)\n", n);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    memset(p, 0xA5, n);   // recognizable garbage where results should land
    return p;
}

static void *dev_alloc(test_ctx *t, size_t n) {
    void *p = t->be->alloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_nccl: out of device memory (%zu bytes)\n", n);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return p;
}

// dev (bytes) := host (bytes) through the staging buffer and a queued device copy,
// so the collective that follows must wait for the compute stream to see it. (The
// staging buffers live for the whole run: freeing one here could synchronize the
// device and hide a missing wait.)
static void upload(test_ctx *t, void *dev, const void *host, size_t bytes) {
    if (!bytes) return;
    t->be->copy_from_host(t->stage_in, host, bytes);
    t->be->copy(dev, t->stage_in, bytes);
}

// host (bytes) := dev (bytes) through a queued device copy into the other staging
// buffer, so the result is read only after the compute stream has waited for it.
static void download(test_ctx *t, void *host, const void *dev, size_t bytes) {
    if (!bytes) return;
    t->be->copy(t->stage_out, dev, bytes);
    t->be->copy_to_host(host, t->stage_out, bytes);
}

// ---- reference and comparison ------------------------------------------------------------

// out (count) := op over every rank's input (each `total` elements for check `salt`)
// at elements [off, off + count), summed in double (exact for these inputs), and
// sabs (count, or NULL) := the sum over ranks of |x| there. For bf16, the MPI-less
// reference.
static void host_reduce(void *out, double *sabs, size_t count, size_t total, size_t off,
                        comm_dtype dt, comm_op op, unsigned salt, int n) {
    double *acc = xmalloc(count * sizeof *acc);
    void *in = xmalloc(total * dtype_size(dt));
    for (int r = 0; r < n; r++) {
        fill(in, total, dt, salt, r);
        for (size_t i = 0; i < count; i++) {
            double x = get(in, dt, off + i);
            acc[i] = r == 0 ? x : op == COMM_OP_MAX ? fmax(acc[i], x) : acc[i] + x;
            if (sabs) sabs[i] = (r == 0 ? 0 : sabs[i]) + fabs(x);
        }
    }
    for (size_t i = 0; out && i < count; i++) {
        double v = op == COMM_OP_AVG ? acc[i] / n : acc[i];
        if (dt == COMM_DTYPE_BF16) ((uint16_t *)out)[i] = bf16_of((float)v);
        else if (dt == COMM_DTYPE_F32) ((float *)out)[i] = (float)v;
        else if (dt == COMM_DTYPE_F64) ((double *)out)[i] = v;
        else ((int32_t *)out)[i] = (int32_t)v;
    }
    free(in);
    free(acc);
}

// Compare got with ref (count). Bitwise, except AVG over a group whose size is not a
// power of two (file comment), where the inputs behind each element are regenerated
// for the bound. Returns 1 if they agree.
static int compare(const void *got, const void *ref, size_t count, comm_dtype dt, comm_op op,
                   int n, size_t total, size_t off, unsigned salt) {
    size_t bytes = count * dtype_size(dt);
    if (op != COMM_OP_AVG || (n & (n - 1)) == 0) return memcmp(got, ref, bytes) == 0;
    double eps = dt == COMM_DTYPE_F32 ? FLT_EPSILON : dt == COMM_DTYPE_F64 ? DBL_EPSILON
                                                                           : 1.0 / 128;
    double *sabs = xmalloc(count * sizeof *sabs);
    host_reduce(NULL, sabs, count, total, off, dt, op, salt, n);
    int ok = 1;
    for (size_t i = 0; i < count; i++) {
        double e = fabs(get(got, dt, i) - get(ref, dt, i));
        if (!(e <= (n + 2) * eps * sabs[i] / n)) ok = 0;   // NaN fails too
    }
    free(sabs);
    return ok;
}

// Combine this rank's verdict with every rank's; rank 0 prints one line.
static void report(test_ctx *t, int ok, const char *what) {
    int all_ok = ok;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (all_ok) t->passed++;
    else t->failed++;
    if (t->mg->rank == 0)
        printf("%s n=%d %s\n", all_ok ? "ok  " : "FAIL", t->mg->size, what);
}

// ---- collectives -------------------------------------------------------------------------

// all_reduce (start: all_reduce_start + wait on NCCL) of dt / op / count.
static void check_all_reduce(test_ctx *t, comm_dtype dt, comm_op op, size_t count, int start) {
    int n = t->mg->size, rank = t->mg->rank;
    size_t bytes = count * dtype_size(dt);
    unsigned salt = ++t->salt;
    void *in = xmalloc(bytes), *ref = xmalloc(bytes), *got = xmalloc(bytes);
    void *dev = dev_alloc(t, bytes);
    fill(in, count, dt, salt, rank);
    char what[128];
    snprintf(what, sizeof what, "%s %s %s count=%zu",
             start ? "all_reduce_start+wait" : "all_reduce", dtype_names[dt], op_names[op],
             count);

    int mrc = 0;
    uint64_t mb = t->mg->bytes_sent;
    if (dt == COMM_DTYPE_BF16) {
        host_reduce(ref, NULL, count, count, 0, dt, op, salt, n);
    } else {
        memcpy(ref, in, bytes);
        mrc = t->mg->be->all_reduce(t->mg, ref, count, dt, op);
    }
    mb = t->mg->bytes_sent - mb;

    upload(t, dev, in, bytes);
    uint64_t nb = t->ng->bytes_sent;
    int nrc = start ? t->ng->be->all_reduce_start(t->ng, dev, count, dt, op)
                    : t->ng->be->all_reduce(t->ng, dev, count, dt, op);
    if (start && nrc == 0) nrc = t->ng->be->wait(t->ng);
    nb = t->ng->bytes_sent - nb;

    int ok;
    if (dt == COMM_DTYPE_I32 && op == COMM_OP_AVG) {
        strcat(what, " refused");
        ok = mrc == -1 && nrc == -1 && mb == 0 && nb == 0;
    } else {
        download(t, got, dev, bytes);
        uint64_t want = 2 * (uint64_t)(n - 1) * bytes / (uint64_t)n;
        ok = mrc == 0 && nrc == 0 && nb == want &&
             (dt == COMM_DTYPE_BF16 || mb == nb) &&
             compare(got, ref, count, dt, op, n, count, 0, salt);
    }
    report(t, ok, what);
    t->be->free(dev);
    free(in);
    free(ref);
    free(got);
}

static void check_reduce_scatter(test_ctx *t, comm_dtype dt, comm_op op, size_t count,
                                 int start) {
    int n = t->mg->size, rank = t->mg->rank;
    size_t total = (size_t)n * count, bytes = count * dtype_size(dt);
    unsigned salt = ++t->salt;
    void *in = xmalloc(total * dtype_size(dt)), *ref = xmalloc(bytes), *got = xmalloc(bytes);
    void *dsend = dev_alloc(t, total * dtype_size(dt)), *drecv = dev_alloc(t, bytes);
    fill(in, total, dt, salt, rank);
    char what[128];
    snprintf(what, sizeof what, "%s %s %s count=%zu",
             start ? "reduce_scatter_start+wait" : "reduce_scatter", dtype_names[dt],
             op_names[op], count);

    int mrc = 0;
    uint64_t mb = t->mg->bytes_sent;
    if (dt == COMM_DTYPE_BF16)
        host_reduce(ref, NULL, count, total, (size_t)rank * count, dt, op, salt, n);
    else
        mrc = t->mg->be->reduce_scatter(t->mg, in, ref, count, dt, op);
    mb = t->mg->bytes_sent - mb;

    upload(t, dsend, in, total * dtype_size(dt));
    uint64_t nb = t->ng->bytes_sent;
    int nrc = start ? t->ng->be->reduce_scatter_start(t->ng, dsend, drecv, count, dt, op)
                    : t->ng->be->reduce_scatter(t->ng, dsend, drecv, count, dt, op);
    if (start && nrc == 0) nrc = t->ng->be->wait(t->ng);
    nb = t->ng->bytes_sent - nb;

    int ok;
    if (dt == COMM_DTYPE_I32 && op == COMM_OP_AVG) {
        strcat(what, " refused");
        ok = mrc == -1 && nrc == -1 && mb == 0 && nb == 0;
    } else {
        download(t, got, drecv, bytes);
        uint64_t want = (uint64_t)(n - 1) * bytes;
        ok = mrc == 0 && nrc == 0 && nb == want && (dt == COMM_DTYPE_BF16 || mb == nb) &&
             compare(got, ref, count, dt, op, n, total, (size_t)rank * count, salt);
    }
    report(t, ok, what);
    t->be->free(dsend);
    t->be->free(drecv);
    free(in);
    free(ref);
    free(got);
}

// all_gather of count from every rank; in_place: send is this rank's block of recv.
// The reference is the regenerated inputs of every rank, in rank order.
static void check_all_gather(test_ctx *t, comm_dtype dt, size_t count, int in_place) {
    int n = t->mg->size, rank = t->mg->rank;
    size_t es = dtype_size(dt), bytes = count * es, total = (size_t)n * bytes;
    unsigned salt = ++t->salt;
    char *ref = xmalloc(total), *got = xmalloc(total), *in = xmalloc(bytes);
    for (int r = 0; r < n; r++) fill(ref + (size_t)r * bytes, count, dt, salt, r);
    fill(in, count, dt, salt, rank);
    char what[128];
    snprintf(what, sizeof what, "all_gather%s %s count=%zu", in_place ? " in place" : "",
             dtype_names[dt], count);

    int mrc = 0;
    uint64_t mb = t->mg->bytes_sent;
    if (dt != COMM_DTYPE_BF16) {
        char *mrecv = xmalloc(total);
        char *mine = mrecv + (size_t)rank * bytes;
        memcpy(mine, in, bytes);
        mrc = t->mg->be->all_gather(t->mg, in_place ? mine : in, mrecv, count, dt);
        if (mrc == 0 && memcmp(mrecv, ref, total) != 0) mrc = 1;   // MPI itself wrong
        free(mrecv);
    }
    mb = t->mg->bytes_sent - mb;

    char *drecv = dev_alloc(t, total), *dsend = in_place ? NULL : dev_alloc(t, bytes);
    char *dmine = drecv + (size_t)rank * bytes;
    upload(t, in_place ? dmine : dsend, in, bytes);
    uint64_t nb = t->ng->bytes_sent;
    int nrc = t->ng->be->all_gather(t->ng, in_place ? dmine : dsend, drecv, count, dt);
    nb = t->ng->bytes_sent - nb;
    download(t, got, drecv, total);

    uint64_t want = (uint64_t)(n - 1) * bytes;
    int ok = mrc == 0 && nrc == 0 && nb == want && (dt == COMM_DTYPE_BF16 || mb == nb) &&
             memcmp(got, ref, total) == 0;
    report(t, ok, what);
    t->be->free(drecv);
    t->be->free(dsend);
    free(ref);
    free(got);
    free(in);
}

static void check_broadcast(test_ctx *t, comm_dtype dt, size_t count, int root) {
    int rank = t->mg->rank;
    size_t bytes = count * dtype_size(dt);
    unsigned salt = ++t->salt;
    void *ref = xmalloc(bytes), *in = xmalloc(bytes), *got = xmalloc(bytes);
    fill(ref, count, dt, salt, root);
    fill(in, count, dt, salt, rank);   // non-roots start from other data
    char what[128];
    snprintf(what, sizeof what, "broadcast %s root=%d count=%zu", dtype_names[dt], root, count);

    int mrc = 0;
    uint64_t mb = t->mg->bytes_sent;
    if (dt != COMM_DTYPE_BF16) {
        void *m = xmalloc(bytes);
        memcpy(m, in, bytes);
        mrc = t->mg->be->broadcast(t->mg, m, count, dt, root);
        if (mrc == 0 && memcmp(m, ref, bytes) != 0) mrc = 1;   // MPI itself wrong
        free(m);
    }
    mb = t->mg->bytes_sent - mb;

    void *dev = dev_alloc(t, bytes);
    upload(t, dev, in, bytes);
    uint64_t nb = t->ng->bytes_sent;
    int nrc = t->ng->be->broadcast(t->ng, dev, count, dt, root);
    nb = t->ng->bytes_sent - nb;
    download(t, got, dev, bytes);

    uint64_t want = rank == root && t->mg->size > 1 ? bytes : 0;
    int ok = mrc == 0 && nrc == 0 && nb == want && (dt == COMM_DTYPE_BF16 || mb == nb) &&
             memcmp(got, ref, bytes) == 0;
    report(t, ok, what);
    t->be->free(dev);
    free(ref);
    free(in);
    free(got);
}

// Refusals before any traffic: a root outside the group, on both backends.
static void check_bad_root(test_ctx *t) {
    float x = 0;
    void *dev = dev_alloc(t, sizeof x);
    int mrc = t->mg->be->broadcast(t->mg, &x, 1, COMM_DTYPE_F32, t->mg->size);
    int nrc = t->ng->be->broadcast(t->ng, dev, 1, COMM_DTYPE_F32, t->ng->size);
    report(t, mrc == -1 && nrc == -1, "broadcast root=size refused");
    t->be->free(dev);
}

static void check_barrier(test_ctx *t) {
    int mrc = t->mg->be->barrier(t->mg), nrc = t->ng->be->barrier(t->ng);
    int nrc2 = t->ng->be->barrier(t->ng);   // the barrier buffer is reused
    report(t, mrc == 0 && nrc == 0 && nrc2 == 0, "barrier x2");
}

// ---- point to point (two ranks or more) --------------------------------------------------

// Rank 0 sends count to rank 1 with send / recv on both backends.
static void check_send_recv(test_ctx *t, comm_dtype dt, size_t count) {
    int rank = t->mg->rank;
    size_t bytes = count * dtype_size(dt);
    unsigned salt = ++t->salt;
    void *ref = xmalloc(bytes), *got = xmalloc(bytes);
    fill(ref, count, dt, salt, 0);
    char what[128];
    snprintf(what, sizeof what, "send/recv 0->1 %s count=%zu", dtype_names[dt], count);
    void *dev = dev_alloc(t, bytes);
    int ok = 1;
    uint64_t nb = t->ng->bytes_sent;
    if (rank == 0) {
        upload(t, dev, ref, bytes);
        ok = t->ng->be->send(t->ng, dev, count, dt, 1) == 0 &&
             t->ng->bytes_sent - nb == bytes;
        if (dt != COMM_DTYPE_BF16)
            ok = ok && t->mg->be->send(t->mg, ref, count, dt, 1) == 0;
    } else if (rank == 1) {
        ok = t->ng->be->recv(t->ng, dev, count, dt, 0) == 0 && t->ng->bytes_sent == nb;
        download(t, got, dev, bytes);
        ok = ok && memcmp(got, ref, bytes) == 0;
        if (dt != COMM_DTYPE_BF16) {
            memset(got, 0xA5, bytes);
            ok = ok && t->mg->be->recv(t->mg, got, count, dt, 0) == 0 &&
                 memcmp(got, ref, bytes) == 0;
        }
    }
    report(t, ok, what);
    t->be->free(dev);
    free(ref);
    free(got);
}

// A ring: every rank sends its input to rank + 1 and receives rank - 1's, so each
// receives the regenerated input of its predecessor.
static void check_sendrecv_ring(test_ctx *t, comm_dtype dt, size_t count) {
    int n = t->mg->size, rank = t->mg->rank;
    int dst = (rank + 1) % n, src = (rank + n - 1) % n;
    size_t bytes = count * dtype_size(dt);
    unsigned salt = ++t->salt;
    void *in = xmalloc(bytes), *ref = xmalloc(bytes), *got = xmalloc(bytes);
    fill(in, count, dt, salt, rank);
    fill(ref, count, dt, salt, src);
    char what[128];
    snprintf(what, sizeof what, "sendrecv ring %s count=%zu", dtype_names[dt], count);
    void *dsend = dev_alloc(t, bytes), *drecv = dev_alloc(t, bytes);
    upload(t, dsend, in, bytes);
    uint64_t nb = t->ng->bytes_sent;
    int ok = t->ng->be->sendrecv(t->ng, dsend, count, dst, drecv, count, src, dt) == 0 &&
             t->ng->bytes_sent - nb == bytes;
    download(t, got, drecv, bytes);
    ok = ok && memcmp(got, ref, bytes) == 0;
    if (dt != COMM_DTYPE_BF16) {
        memset(got, 0xA5, bytes);
        ok = ok && t->mg->be->sendrecv(t->mg, in, count, dst, got, count, src, dt) == 0 &&
             memcmp(got, ref, bytes) == 0;
    }
    report(t, ok, what);
    t->be->free(dsend);
    t->be->free(drecv);
    free(in);
    free(ref);
    free(got);
}

// ---- main ---------------------------------------------------------------------------------

// Exit 77 on every rank (after one line from rank 0) if any rank lacks a GPU of its own.
// Returns this rank's device otherwise.
static int pick_device(int rank) {
    MPI_Comm node;
    int local = 0, local_n = 1;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local);
    MPI_Comm_size(node, &local_n);
    MPI_Comm_free(&node);
    int gpus = anv_cuda_device_count();
    int skip = gpus < local_n, any_skip = skip;
    MPI_Allreduce(&skip, &any_skip, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (any_skip) {
        if (skip && local == 0)
            printf("test_nccl: skipped: the CUDA runtime sees %d GPU(s) for %d rank(s) on this "
                   "node (no GPU, driver or CUDA build, or too many ranks)\n", gpus, local_n);
        MPI_Finalize();
        exit(77);
    }
    return local;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, world = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int device = pick_device(rank);

    const anv_backend *be = anv_backend_cuda(device);
    int ok = be != NULL;
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!ok) {
        fprintf(stderr, "test_nccl: the cuda backend did not start\n");
        MPI_Finalize();
        return 1;
    }

    // The MPI group, as parallel/grid.c builds one, over a duplicate of the world.
    MPI_Comm mcomm;
    MPI_Comm_dup(MPI_COMM_WORLD, &mcomm);
    MPI_Comm_set_errhandler(mcomm, MPI_ERRORS_RETURN);
    comm_group mg = {.be = comm_backend_mpi(), .rank = rank, .size = world, .impl = &mcomm};

    comm_group ng;
    memset(&ng, 0xA5, sizeof ng);   // init must not rely on a zeroed group
    MPI_Comm ncomm;
    MPI_Comm_dup(MPI_COMM_WORLD, &ncomm);
    ok = comm_nccl_group_init(&ng, &ncomm) == 0;
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!ok) {
        fprintf(stderr, "test_nccl: comm_nccl_group_init failed\n");
        MPI_Finalize();
        return 1;
    }

    test_ctx t = {.be = be, .mg = &mg, .ng = &ng};
    t.stage_in = dev_alloc(&t, STAGE_BYTES(world));
    t.stage_out = dev_alloc(&t, STAGE_BYTES(world));
    report(&t, strcmp(ng.be->name, "nccl") == 0 && ng.rank == rank && ng.size == world &&
                   ng.bytes_sent == 0,
           "group_init: name, rank, size, bytes");

    for (size_t c = 0; c < N_COUNTS; c++) {
        size_t count = counts[c];
        for (int dt = COMM_DTYPE_F32; dt <= COMM_DTYPE_I32; dt++)
            for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
                check_all_reduce(&t, (comm_dtype)dt, ops[o], count, 0);
                check_reduce_scatter(&t, (comm_dtype)dt, ops[o], count, 0);
            }
        check_all_reduce(&t, COMM_DTYPE_BF16, COMM_OP_SUM, count, 0);
        check_all_reduce(&t, COMM_DTYPE_BF16, COMM_OP_MAX, count, 0);
        check_reduce_scatter(&t, COMM_DTYPE_BF16, COMM_OP_SUM, count, 0);
        // The overlapped forms, as the data-parallel gradient reduction uses them.
        check_all_reduce(&t, COMM_DTYPE_F32, COMM_OP_AVG, count, 1);
        check_all_reduce(&t, COMM_DTYPE_BF16, COMM_OP_SUM, count, 1);
        check_reduce_scatter(&t, COMM_DTYPE_F32, COMM_OP_AVG, count, 1);
        check_reduce_scatter(&t, COMM_DTYPE_F32, COMM_OP_SUM, count, 1);
        for (int dt = COMM_DTYPE_F32; dt <= COMM_DTYPE_BF16; dt++) {
            check_all_gather(&t, (comm_dtype)dt, count, 0);
            check_all_gather(&t, (comm_dtype)dt, count, 1);
            check_broadcast(&t, (comm_dtype)dt, count, 0);
            if (world > 1) check_broadcast(&t, (comm_dtype)dt, count, world - 1);
        }
        if (world > 1) {
            check_send_recv(&t, COMM_DTYPE_F32, count);
            check_send_recv(&t, COMM_DTYPE_BF16, count);
            check_sendrecv_ring(&t, COMM_DTYPE_F32, count);
            check_sendrecv_ring(&t, COMM_DTYPE_BF16, count);
        }
    }
    check_bad_root(&t);
    check_barrier(&t);

    comm_nccl_group_free(&ng);
    comm_nccl_group_free(&ng);   // a freed group: a no-op
    report(&t, ng.impl == NULL, "group_free twice");

    be->free(t.stage_in);
    be->free(t.stage_out);
    if (rank == 0) printf("%d passed, %d failed\n", t.passed, t.failed);
    int failed = t.failed;
    MPI_Comm_free(&ncomm);
    MPI_Comm_free(&mcomm);
    MPI_Finalize();
    return failed ? 1 : 0;
}
