// tests/mpi/test_collectives.c: the MPI communicator backend against a naive reference.
//
// Run under mpiexec with W ranks, it tests groups of every size 1..W (so -n 4 covers
// 1, 2, 3 and 4, a non-power of two included): the group of size s is world ranks
// 0..s-1 split with reversed keys, so group ranks differ from world ranks, and world
// rank 0 (the last group rank) is in every group and prints one line per check.
//
// Inputs are random, seeded by (check, group rank), so any rank can regenerate any
// other's input. Reductions are checked against a reference built independently of
// the backend: every rank's raw input gathered to every rank with a plain
// MPI_Allgather, then reduced in rank order in double. Tolerances:
//   sum f32 |got - ref| <= n * FLT_EPSILON * sum_r |x_r|  (the (n-1)u bound of any
//       summation order with u = FLT_EPSILON / 2, at least doubled; the reference's own
//       error is 2^29 times smaller);
//   avg f32 the sum's tolerance / n + FLT_EPSILON * |ref| (the division's rounding);
//   f64 the same with DBL_EPSILON and twice the factor (the reference rounds too);
//   max and every i32 result exact.
// all_gather, broadcast, send/recv and sendrecv move bits, so they are compared exactly
// with the regenerated inputs. Every call's byte count is checked against the formula
// in parallel.h. Counts 0, 1, 7 and 1000003 (not multiples of any group size > 1);
// sendrecv gives each rank a send count and a different receive count (sr_counts).
//
// Built twice by meson: against the library, and with comm_mpi.c compiled in with a
// chunk of 1000 elements so that the chunked paths (counts above INT_MAX) run on small
// buffers. Exit 0 if every check passed on every rank, else 1.
#include "parallel/parallel.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

static const size_t counts[] = {0, 1, 7, 1000003};
#define N_COUNTS (sizeof counts / sizeof counts[0])
// sendrecv: with rotation k, group rank r sends sr_counts[(k + r) % N_SR_COUNTS], so a
// rank's send and receive counts are different entries: 0 and 1000003 against small
// counts, and 2001 (3 pieces at the chunked build's 1000) against 1000003 (1001 pieces),
// so both directions run several pieces, in unequal numbers.
static const size_t sr_counts[] = {0, 7, 1000003, 2001, 1};
#define N_SR_COUNTS (sizeof sr_counts / sizeof sr_counts[0])
static const comm_dtype dtypes[] = {COMM_DTYPE_F32, COMM_DTYPE_F64, COMM_DTYPE_I32};
static const comm_op ops[] = {COMM_OP_SUM, COMM_OP_AVG, COMM_OP_MAX};
static const char *dtype_names[] = {"f32", "f64", "i32"};
static const char *op_names[] = {"sum", "avg", "max"};

// One group under test: the backend's view and the raw communicator for the reference.
typedef struct test_ctx {
    comm_group *g;
    MPI_Comm comm;
    int printer;         // this rank prints the group's lines (world rank 0)
    int failed;          // any check failed on this rank (or, after reduction, anywhere)
    unsigned salt;       // advanced per check so every check has fresh data
} test_ctx;

// ---- data ---------------------------------------------------------------------------------

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t dtype_size(comm_dtype dt) { return dt == COMM_DTYPE_F64 ? 8 : 4; }
static MPI_Datatype dtype_mpi(comm_dtype dt) {
    return dt == COMM_DTYPE_F32 ? MPI_FLOAT : dt == COMM_DTYPE_F64 ? MPI_DOUBLE : MPI_INT32_T;
}

// buf (count) := the input of group rank r for check `salt`: floats uniform in [-1, 1),
// i32 uniform in [-1000, 1000] (no overflow when summed over a few ranks).
static void fill(void *buf, size_t count, comm_dtype dt, unsigned salt, int r) {
    uint64_t s = ((uint64_t)salt << 20) ^ (uint64_t)(r + 1) * 0x2545F4914F6CDD1Dull;
    for (size_t i = 0; i < count; i++) {
        uint64_t u = splitmix(&s);
        double x = (double)(u >> 11) / 9007199254740992.0 * 2.0 - 1.0;
        if (dt == COMM_DTYPE_F32) ((float *)buf)[i] = (float)x;
        else if (dt == COMM_DTYPE_F64) ((double *)buf)[i] = x;
        else ((int32_t *)buf)[i] = (int32_t)(u % 2001) - 1000;
    }
}

static double get(const void *buf, comm_dtype dt, size_t i) {
    if (dt == COMM_DTYPE_F32) return ((const float *)buf)[i];
    if (dt == COMM_DTYPE_F64) return ((const double *)buf)[i];
    return ((const int32_t *)buf)[i];
}

// The reference's own MPI calls: a failure there is the harness's, so stop everything.
static void mpi_ok(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    fprintf(stderr, "test_collectives: %s: %s\n", what, text);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_collectives: out of memory (%zu bytes)\n", n);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    memset(p, 0xA5, n);   // recognizable garbage where results should land
    return p;
}

// ---- reporting ----------------------------------------------------------------------------

// Combine this rank's verdict with the group's and print one line from the printer.
// `err` and `ratio` are the worst abs error and worst error / tolerance (0 for exact).
static void report(test_ctx *t, int ok, double err, double ratio, uint64_t bytes,
                   const char *what) {
    int all_ok = ok;
    double w[2] = {err, ratio}, wmax[2];
    mpi_ok(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, t->comm), "verdict");
    mpi_ok(MPI_Allreduce(w, wmax, 2, MPI_DOUBLE, MPI_MAX, t->comm), "verdict");
    if (!all_ok) t->failed = 1;
    if (t->printer)
        printf("%s n=%d %s: max_err %.3g err/tol %.3g bytes %llu\n", all_ok ? "ok  " : "FAIL",
               t->g->size, what, wmax[0], wmax[1], (unsigned long long)bytes);
}

// Compare got (count) with the rank-order double reduction of `all` (n blocks of
// count). Returns 1 if within tolerance (see the top of the file); sets worst err/ratio.
static int compare_reduced(const void *got, const void *all, size_t count, int n,
                           comm_dtype dt, comm_op op, double *err, double *ratio) {
    double eps = dt == COMM_DTYPE_F32 ? FLT_EPSILON : 2 * DBL_EPSILON;
    int exact = dt == COMM_DTYPE_I32 || op == COMM_OP_MAX, ok = 1;
    *err = 0;
    *ratio = 0;
    for (size_t i = 0; i < count; i++) {
        double ref = get(all, dt, i), sabs = fabs(ref);
        for (int r = 1; r < n; r++) {
            double x = get(all, dt, (size_t)r * count + i);
            ref = op == COMM_OP_MAX ? fmax(ref, x) : ref + x;
            sabs += fabs(x);
        }
        double tol = n * eps * sabs;
        if (op == COMM_OP_AVG) {
            ref /= n;
            tol = tol / n + eps * fabs(ref);
        }
        double e = fabs(get(got, dt, i) - ref);
        if (!(e <= (exact ? 0 : tol))) ok = 0;   // NaN fails too
        if (e > *err) *err = e;
        if (!exact && tol > 0 && e / tol > *ratio) *ratio = e / tol;
    }
    return ok;
}

// ---- checks -------------------------------------------------------------------------------

static void check_all_reduce(test_ctx *t, comm_dtype dt, comm_op op, size_t count) {
    comm_group *g = t->g;
    int n = g->size;
    size_t es = dtype_size(dt);
    unsigned salt = ++t->salt;
    void *in = xmalloc(count * es), *buf = xmalloc(count * es);
    fill(in, count, dt, salt, g->rank);
    memcpy(buf, in, count * es);
    uint64_t before = g->bytes_sent;
    int rc = g->be->all_reduce(g, buf, count, dt, op);
    uint64_t bytes = g->bytes_sent - before;
    char what[128];
    snprintf(what, sizeof what, "all_reduce %s %s count=%zu", dtype_names[dt], op_names[op],
             count);
    if (dt == COMM_DTYPE_I32 && op == COMM_OP_AVG) {
        // Refused on every rank alike (message above), nothing counted.
        strcat(what, " refused");
        report(t, rc == -1 && bytes == 0, 0, 0, bytes, what);
    } else {
        void *all = xmalloc((size_t)n * count * es);
        mpi_ok(MPI_Allgather(in, (int)count, dtype_mpi(dt), all, (int)count, dtype_mpi(dt),
                             t->comm), "reference gather");
        double err = 0, ratio = 0;
        int ok = rc == 0 && compare_reduced(buf, all, count, n, dt, op, &err, &ratio);
        ok = ok && bytes == 2 * (uint64_t)(n - 1) * count * es / (uint64_t)n;
        report(t, ok, err, ratio, bytes, what);
        free(all);
    }
    free(in);
    free(buf);
}

static void check_reduce_scatter(test_ctx *t, comm_dtype dt, comm_op op, size_t count) {
    comm_group *g = t->g;
    int n = g->size;
    size_t es = dtype_size(dt);
    unsigned salt = ++t->salt;
    char *send = xmalloc((size_t)n * count * es), *recv = xmalloc(count * es);
    fill(send, (size_t)n * count, dt, salt, g->rank);
    uint64_t before = g->bytes_sent;
    int rc = g->be->reduce_scatter(g, send, recv, count, dt, op);
    uint64_t bytes = g->bytes_sent - before;
    char what[128];
    snprintf(what, sizeof what, "reduce_scatter %s %s count=%zu", dtype_names[dt],
             op_names[op], count);
    if (dt == COMM_DTYPE_I32 && op == COMM_OP_AVG) {
        strcat(what, " refused");
        report(t, rc == -1 && bytes == 0, 0, 0, bytes, what);
    } else {
        // Block b of every rank's send, gathered everywhere; rank b checks its result.
        void *blk = xmalloc((size_t)n * count * es);
        int ok = rc == 0;
        double err = 0, ratio = 0;
        for (int b = 0; b < n; b++) {
            mpi_ok(MPI_Allgather(send + (size_t)b * count * es, (int)count, dtype_mpi(dt), blk,
                                 (int)count, dtype_mpi(dt), t->comm), "reference gather");
            if (b == g->rank)
                ok = compare_reduced(recv, blk, count, n, dt, op, &err, &ratio) && ok;
        }
        ok = ok && bytes == (uint64_t)(n - 1) * count * es;
        report(t, ok, err, ratio, bytes, what);
        free(blk);
    }
    free(send);
    free(recv);
}

static void check_all_gather(test_ctx *t, comm_dtype dt, size_t count, int in_place) {
    comm_group *g = t->g;
    int n = g->size;
    size_t es = dtype_size(dt), bsz = count * es;
    unsigned salt = ++t->salt;
    char *recv = xmalloc((size_t)n * bsz), *own = xmalloc(bsz), *want = xmalloc(bsz);
    char *send = in_place ? recv + (size_t)g->rank * bsz : own;
    fill(send, count, dt, salt, g->rank);
    uint64_t before = g->bytes_sent;
    int ok = g->be->all_gather(g, send, recv, count, dt) == 0;
    uint64_t bytes = g->bytes_sent - before;
    for (int r = 0; r < n; r++) {
        fill(want, count, dt, salt, r);
        if (memcmp(recv + (size_t)r * bsz, want, bsz) != 0) ok = 0;
    }
    ok = ok && bytes == (uint64_t)(n - 1) * bsz;
    char what[128];
    snprintf(what, sizeof what, "all_gather %s count=%zu%s", dtype_names[dt], count,
             in_place ? " in place" : "");
    report(t, ok, 0, 0, bytes, what);
    free(recv);
    free(own);
    free(want);
}

static void check_broadcast(test_ctx *t, comm_dtype dt, size_t count, int root) {
    comm_group *g = t->g;
    size_t es = dtype_size(dt);
    unsigned salt = ++t->salt;
    char *buf = xmalloc(count * es), *want = xmalloc(count * es);
    fill(want, count, dt, salt, root);
    if (g->rank == root) memcpy(buf, want, count * es);
    uint64_t before = g->bytes_sent;
    int ok = g->be->broadcast(g, buf, count, dt, root) == 0;
    uint64_t bytes = g->bytes_sent - before;
    ok = ok && memcmp(buf, want, count * es) == 0;
    ok = ok && bytes == (g->size > 1 && g->rank == root ? count * es : 0);
    char what[128];
    snprintf(what, sizeof what, "broadcast %s count=%zu root=%d", dtype_names[dt], count, root);
    report(t, ok, 0, 0, bytes, what);
    free(buf);
    free(want);
}

// Ring: rank r sends its input to r+1 and receives r-1's. Rank 0 sends first and the
// others receive first, so blocking (rendezvous) sends cannot deadlock.
static void check_ring(test_ctx *t, comm_dtype dt, size_t count) {
    comm_group *g = t->g;
    int n = g->size, r = g->rank;
    size_t es = dtype_size(dt);
    unsigned salt = ++t->salt;
    char *out = xmalloc(count * es), *in = xmalloc(count * es), *want = xmalloc(count * es);
    fill(out, count, dt, salt, r);
    char what[128];
    snprintf(what, sizeof what, "send/recv ring %s count=%zu", dtype_names[dt], count);
    uint64_t before = g->bytes_sent;
    int ok;
    if (n == 1) {
        // The only peer is oneself: refused (a blocking send to self never completes).
        strcat(what, " to self refused");
        ok = g->be->send(g, out, count, dt, 0) == -1 && g->be->recv(g, in, count, dt, 0) == -1;
        ok = ok && g->bytes_sent == before;
    } else {
        int next = (r + 1) % n, prev = (r + n - 1) % n;
        if (r == 0) {
            ok = g->be->send(g, out, count, dt, next) == 0;
            ok = g->be->recv(g, in, count, dt, prev) == 0 && ok;
        } else {
            ok = g->be->recv(g, in, count, dt, prev) == 0;
            ok = g->be->send(g, out, count, dt, next) == 0 && ok;
        }
        fill(want, count, dt, salt, prev);
        ok = ok && memcmp(in, want, count * es) == 0;
        ok = ok && g->bytes_sent - before == count * es;
    }
    report(t, ok, 0, 0, g->bytes_sent - before, what);
    free(out);
    free(in);
    free(want);
}

// The count group rank r sends in sendrecv check rotation k (see sr_counts).
static size_t sr_count(int k, int r) { return sr_counts[(size_t)(k + r) % N_SR_COUNTS]; }

// sendrecv around the ring: rank r sends sr_count(k, r) elements to r + dir and receives
// what r - dir sends (dir 1, or -1 for the reverse ring), all ranks at once, which two
// blocking calls in a row would deadlock on (large counts are not buffered by MPI).
static void check_sendrecv_ring(test_ctx *t, comm_dtype dt, int k, int dir) {
    comm_group *g = t->g;
    int n = g->size, r = g->rank, dst = (r + dir + n) % n, src = (r - dir + n) % n;
    size_t es = dtype_size(dt), sc = sr_count(k, r), rc = sr_count(k, src);
    unsigned salt = ++t->salt;
    char *out = xmalloc(sc * es), *in = xmalloc(rc * es), *want = xmalloc(rc * es);
    fill(out, sc, dt, salt, r);
    uint64_t before = g->bytes_sent;
    int ok = g->be->sendrecv(g, out, sc, dst, in, rc, src, dt) == 0;
    uint64_t bytes = g->bytes_sent - before;
    fill(want, rc, dt, salt, src);
    ok = ok && memcmp(in, want, rc * es) == 0 && bytes == sc * es;
    char what[128];
    snprintf(what, sizeof what, "sendrecv %s %s send=%zu recv=%zu",
             dir > 0 ? "ring" : "reverse ring", dtype_names[dt], sc, rc);
    report(t, ok, 0, 0, bytes, what);
    free(out);
    free(in);
    free(want);
}

// sendrecv along a chain, as a pipeline does: rank r sends to r + dir and receives from
// r - dir, -1 where that is past an end (so the ends run one half only, and a group of
// one runs neither: a no-op). The half that is -1 gets a count anyway: it must be
// ignored (no bytes counted for a dst of -1, recv left untouched for a src of -1).
static void check_sendrecv_chain(test_ctx *t, comm_dtype dt, int k, int dir) {
    comm_group *g = t->g;
    int n = g->size, r = g->rank, dst = r + dir, src = r - dir;
    if (dst < 0 || dst >= n) dst = -1;
    if (src < 0 || src >= n) src = -1;
    size_t es = dtype_size(dt), sc = sr_count(k, r), rc = src >= 0 ? sr_count(k, src) : sc;
    unsigned salt = ++t->salt;
    char *out = xmalloc(sc * es), *in = xmalloc(rc * es), *want = xmalloc(rc * es);
    fill(out, sc, dt, salt, r);
    uint64_t before = g->bytes_sent;
    int ok = g->be->sendrecv(g, out, sc, dst, in, rc, src, dt) == 0;
    uint64_t bytes = g->bytes_sent - before;
    if (src >= 0) fill(want, rc, dt, salt, src);
    else memset(want, 0xA5, rc * es);   // xmalloc's garbage, untouched
    ok = ok && memcmp(in, want, rc * es) == 0 && bytes == (dst >= 0 ? sc * es : 0);
    char what[128];
    snprintf(what, sizeof what, "sendrecv %s %s send=%zu%s recv=%zu%s",
             dir > 0 ? "chain" : "reverse chain", dtype_names[dt], sc, dst < 0 ? " (dst -1)" : "",
             rc, src < 0 ? " (src -1)" : "");
    report(t, ok, 0, 0, bytes, what);
    free(out);
    free(in);
    free(want);
}

// The -1 halves against the plain calls: group rank 0 sends with send and rank 1
// receives with sendrecv (dst -1), then back, rank 1 with sendrecv (src -1) and rank 0
// with recv. The pieces must match the plain calls' pieces in the chunked build.
static void check_sendrecv_halves(test_ctx *t, comm_dtype dt, size_t count) {
    comm_group *g = t->g;
    int r = g->rank;
    size_t es = dtype_size(dt);
    unsigned salt = ++t->salt;
    char *out = xmalloc(count * es), *in = xmalloc(count * es), *want = xmalloc(count * es);
    fill(out, count, dt, salt, r);
    uint64_t before = g->bytes_sent;
    int ok = 1;
    if (r == 0) {
        ok = g->be->send(g, out, count, dt, 1) == 0;
        ok = g->be->recv(g, in, count, dt, 1) == 0 && ok;
    } else if (r == 1) {
        ok = g->be->sendrecv(g, NULL, 0, -1, in, count, 0, dt) == 0;
        ok = g->be->sendrecv(g, out, count, 0, NULL, 0, -1, dt) == 0 && ok;
    }
    uint64_t bytes = g->bytes_sent - before;
    if (r <= 1) {
        fill(want, count, dt, salt, 1 - r);
        ok = ok && memcmp(in, want, count * es) == 0 && bytes == count * es;
    } else {
        ok = bytes == 0;
    }
    char what[128];
    snprintf(what, sizeof what, "sendrecv -1 halves against send/recv %s count=%zu",
             dtype_names[dt], count);
    report(t, ok, 0, 0, bytes, what);
    free(out);
    free(in);
    free(want);
}

// A group of one: there is no peer, so every real dst or src is refused (oneself, or
// out of range), before any traffic and counting nothing.
static void check_sendrecv_alone(test_ctx *t) {
    comm_group *g = t->g;
    float x[4] = {0}, y[4] = {0};
    uint64_t before = g->bytes_sent;
    int ok = g->be->sendrecv(g, x, 4, 0, y, 4, -1, COMM_DTYPE_F32) == -1;
    ok = g->be->sendrecv(g, x, 4, -1, y, 4, 0, COMM_DTYPE_F32) == -1 && ok;
    ok = g->be->sendrecv(g, x, 4, 0, y, 4, 0, COMM_DTYPE_F32) == -1 && ok;
    ok = g->be->sendrecv(g, x, 4, 1, y, 4, -1, COMM_DTYPE_F32) == -1 && ok;
    report(t, ok && g->bytes_sent == before, 0, 0, 0, "sendrecv with self or rank 1 refused");
}

// Calls a user of the interface can get wrong: refused alike on every rank, -1, no bytes.
static void check_refusals(test_ctx *t) {
    comm_group *g = t->g;
    float x[4] = {0};
    uint64_t before = g->bytes_sent;
    int ok = g->be->broadcast(g, x, 4, COMM_DTYPE_F32, g->size) == -1;
    report(t, ok && g->bytes_sent == before, 0, 0, 0, "broadcast root=size refused");
    ok = g->be->all_reduce(g, x, 4, (comm_dtype)7, COMM_OP_SUM) == -1;
    report(t, ok && g->bytes_sent == before, 0, 0, 0, "all_reduce unknown dtype refused");
    ok = g->be->all_reduce(g, x, 4, COMM_DTYPE_F32, (comm_op)9) == -1;
    report(t, ok && g->bytes_sent == before, 0, 0, 0, "all_reduce unknown op refused");
    ok = g->be->send(g, x, 4, COMM_DTYPE_F32, -1) == -1;
    report(t, ok && g->bytes_sent == before, 0, 0, 0, "send peer=-1 refused");
    // A message shorter, then longer, than the receive: the receiver returns -1 (the
    // second through MPI's own error, MPI_ERR_TRUNCATE, and MPI_Error_string).
    for (int sent = 3; sent <= 5; sent += 2) {
        if (g->rank == 0) ok = g->be->send(g, x, (size_t)sent, COMM_DTYPE_F32, 1) == 0;
        else ok = g->be->recv(g, x, 4, COMM_DTYPE_F32, 0) == -1;
        report(t, ok, 0, 0, 0, sent < 4 ? "recv of a short message refused"
                                        : "recv of a long message refused");
    }
    // sendrecv refusals, each with the other half valid: refused before any traffic, so
    // nothing is left in flight for the checks after them (probed below, and they would
    // fail) and no rank waits for a partner that refused.
    int other = 1 - g->rank;
    float y[4] = {0};
    before = g->bytes_sent;   // the short and long sends above counted theirs
    ok = g->be->sendrecv(g, x, 4, g->size, y, 4, other, COMM_DTYPE_F32) == -1;
    report(t, ok && g->bytes_sent == before, 0, 0, 0, "sendrecv dst=size refused");
    ok = g->be->sendrecv(g, x, 4, other, y, 4, -2, COMM_DTYPE_F32) == -1;
    report(t, ok && g->bytes_sent == before, 0, 0, 0, "sendrecv src=-2 refused");
    ok = g->be->sendrecv(g, x, 4, g->rank, y, 4, other, COMM_DTYPE_F32) == -1;
    report(t, ok && g->bytes_sent == before, 0, 0, 0, "sendrecv dst=self refused");
    ok = g->be->sendrecv(g, x, 4, other, y, 4, g->rank, COMM_DTYPE_F32) == -1;
    report(t, ok && g->bytes_sent == before, 0, 0, 0, "sendrecv src=self refused");
    ok = g->be->sendrecv(g, x, 4, other, y, 4, other, (comm_dtype)7) == -1;
    report(t, ok && g->bytes_sent == before, 0, 0, 0, "sendrecv unknown dtype refused");
    // A refusal that sent anyway would leave a message queued here (sound, not complete:
    // a message still in transit after the barrier goes unseen).
    int pending = 0;
    mpi_ok(MPI_Barrier(t->comm), "barrier");
    mpi_ok(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, t->comm, &pending, MPI_STATUS_IGNORE),
           "probe");
    report(t, !pending, 0, 0, 0, "nothing in flight after the refused sendrecvs");
    // Short, then long, message in sendrecv's paired path (both dst and src given; the
    // direction with 0 elements sends nothing): the receiver returns -1.
    for (int sent = 3; sent <= 5; sent += 2) {
        if (g->rank == 0) ok = g->be->sendrecv(g, x, (size_t)sent, 1, y, 0, 1, COMM_DTYPE_F32) == 0;
        else ok = g->be->sendrecv(g, y, 0, 0, x, 4, 0, COMM_DTYPE_F32) == -1;
        report(t, ok, 0, 0, 0, sent < 4 ? "sendrecv of a short message refused"
                                        : "sendrecv of a long message refused");
    }
}

static void run_group(test_ctx *t) {
    // Refusals (i32 avg, send to oneself in a group of one) print a message on every
    // rank, so they are checked at one count (7) only.
    for (size_t c = 0; c < N_COUNTS; c++)
        for (int d = 0; d < 3; d++)
            for (int o = 0; o < 3; o++)
                if (!(dtypes[d] == COMM_DTYPE_I32 && ops[o] == COMM_OP_AVG) || counts[c] == 7)
                    check_all_reduce(t, dtypes[d], ops[o], counts[c]);
    for (size_t c = 0; c < N_COUNTS; c++)
        for (int d = 0; d < 3; d++)
            for (int o = 0; o < 3; o++)
                if (!(dtypes[d] == COMM_DTYPE_I32 && ops[o] == COMM_OP_AVG) || counts[c] == 7)
                    check_reduce_scatter(t, dtypes[d], ops[o], counts[c]);
    for (size_t c = 0; c < N_COUNTS; c++)
        for (int d = 0; d < 3; d++) {
            check_all_gather(t, dtypes[d], counts[c], 0);
            check_all_gather(t, dtypes[d], counts[c], 1);
        }
    for (size_t c = 0; c < N_COUNTS; c++)
        for (int d = 0; d < 3; d++)
            for (int root = 0; root < t->g->size; root++)
                check_broadcast(t, dtypes[d], counts[c], root);
    for (size_t c = 0; c < N_COUNTS; c++)
        for (int d = 0; d < 3; d++)
            if (t->g->size > 1 || (counts[c] == 7 && d == 0)) check_ring(t, dtypes[d], counts[c]);
    for (int k = 0; k < (int)N_SR_COUNTS; k++)
        for (int d = 0; d < 3; d++) {
            if (t->g->size > 1) {
                check_sendrecv_ring(t, dtypes[d], k, 1);
                check_sendrecv_ring(t, dtypes[d], k, -1);
            }
            check_sendrecv_chain(t, dtypes[d], k, 1);
            check_sendrecv_chain(t, dtypes[d], k, -1);
        }
    if (t->g->size > 1) {
        check_sendrecv_halves(t, COMM_DTYPE_F32, 7);
        check_sendrecv_halves(t, COMM_DTYPE_F64, 1000003);
    } else {
        check_sendrecv_alone(t);
    }
    int ok = t->g->be->barrier(t->g) == 0;
    report(t, ok, 0, 0, 0, "barrier");
    if (t->g->size == 2) check_refusals(t);   // once is enough: they print messages
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int world, wrank;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
    int failed = 0;
    for (int s = 1; s <= world; s++) {
        // Group of size s: world ranks 0..s-1, group rank s-1-world rank.
        MPI_Comm comm;
        MPI_Comm_split(MPI_COMM_WORLD, wrank < s ? 0 : MPI_UNDEFINED, s - 1 - wrank, &comm);
        if (comm != MPI_COMM_NULL) {
            MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
            comm_group g = {.be = comm_backend_mpi(), .impl = &comm};
            MPI_Comm_rank(comm, &g.rank);
            MPI_Comm_size(comm, &g.size);
            test_ctx t = {.g = &g, .comm = comm, .printer = wrank == 0, .salt = (unsigned)s * 1000};
            if (t.printer) printf("--- group of %d rank(s), backend %s\n", s, g.be->name);
            run_group(&t);
            failed |= t.failed;
            MPI_Comm_free(&comm);
        }
        fflush(stdout);
        MPI_Barrier(MPI_COMM_WORLD);
    }
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (wrank == 0) printf("%s\n", any ? "FAILED" : "all collectives checks passed");
    MPI_Finalize();
    return any ? 1 : 0;
}
