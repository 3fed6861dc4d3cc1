// parallel/grid.c: the process grid (world = pp x dp x tp) and its communicators.
//
// Rank layout (DESIGN.md): tp innermost, then dp, then pp,
//     rank = (pp_rank * dp + dp_rank) * tp + tp_rank,
// so a tp group is tp adjacent ranks (one node, where the fast links are), a dp group
// strides by tp, and a pp group by dp x tp. Each group comes from one MPI_Comm_split
// whose color names the coordinates the members share and whose key is the coordinate
// that varies, so group rank == that coordinate. The world group is a duplicate of
// MPI_COMM_WORLD, so the grid's traffic never mixes with anybody else's.
//
// The layout is checked before any communicator exists, from numbers every rank has
// (world size, config, model heads, batch), so every rank reaches the same verdict and
// none is left waiting in a split the others skipped. World rank 0 alone prints the one
// line that lists every factor and every problem; the others return 2 quietly.
//
// Each group's communicator gets MPI_ERRORS_RETURN, so that an MPI failure comes back
// to comm_mpi.c as a code it can print, instead of MPI aborting with its own words.
#include "parallel/parallel.h"
#include "parallel/comm_mpi.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

// ---- comm_group over an MPI communicator ------------------------------------------------


// Free a group made by group_wrap (NULL is a no-op).
static void group_free(comm_group *grp) {
    if (!grp) return;
    MPI_Comm *c = grp->impl;
    if (c) {
        int finalized = 1;
        MPI_Finalized(&finalized);
        if (!finalized && *c != MPI_COMM_NULL) MPI_Comm_free(c);
        free(c);
    }
    free(grp);
}

// Wrap comm (now owned by the group) as an MPI-backend comm_group. Returns the group,
// or NULL after printing (comm is freed then).
static comm_group *group_wrap(MPI_Comm comm, const char *name) {
    comm_group *grp = calloc(1, sizeof *grp);
    MPI_Comm *c = malloc(sizeof *c);
    if (!grp || !c) {
        fprintf(stderr, "anvil: grid: out of memory for the %s group\n", name);
        free(grp);
        free(c);
        MPI_Comm_free(&comm);
        return NULL;
    }
    *c = comm;
    grp->be = comm_backend_mpi();
    grp->impl = c;
    if (comm_mpi_check(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), name) ||
        comm_mpi_check(MPI_Comm_rank(comm, &grp->rank), name) ||
        comm_mpi_check(MPI_Comm_size(comm, &grp->size), name)) {
        group_free(grp);
        return NULL;
    }
    return grp;
}

// Split MPI_COMM_WORLD by color and key into a group that must come out as rank `rank`
// of `size`. Returns the group, or NULL after printing.
static comm_group *group_split(int color, int key, int rank, int size, const char *name) {
    MPI_Comm comm = MPI_COMM_NULL;
    if (comm_mpi_check(MPI_Comm_split(MPI_COMM_WORLD, color, key, &comm), name)) return NULL;
    comm_group *grp = group_wrap(comm, name);
    if (grp && (grp->rank != rank || grp->size != size)) {
        // The colors and keys above are wrong if this happens: a bug, not an input.
        fprintf(stderr, "anvil: grid: %s group came out as rank %d of %d, expected %d of %d\n",
                name, grp->rank, grp->size, rank, size);
        group_free(grp);
        return NULL;
    }
    return grp;
}

// ---- layout check -----------------------------------------------------------------------

// A fixed-size line being built; appends past the end are cut off, never overflow.
typedef struct grid_msg {
    char text[1024];
    size_t len;
    int n_problems;
} grid_msg;

static void msg_add(grid_msg *m, const char *fmt, ...) {
    if (m->len >= sizeof m->text - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(m->text + m->len, sizeof m->text - m->len, fmt, ap);
    va_end(ap);
    if (k > 0) m->len += (size_t)k;
    if (m->len > sizeof m->text - 1) m->len = sizeof m->text - 1;
}

static void msg_problem(grid_msg *m, const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    msg_add(m, "%s%s", m->n_problems++ ? "; " : "", line);
}

// Resolve dp (0: auto) and check the layout against world, heads and batch. Fills *dp.
// Returns 0, or 2 after printing one line from world rank 0 that lists every factor and
// every problem.
static int grid_layout_check(int world, int rank, const parallel_config *pc, int n_head,
                             int n_kv_head, long samples, int micro_batch, int *dp_out) {
    int tp = pc->tp, pp = pc->pp, dp = pc->dp;
    int dp_auto = dp == 0;
    if (n_kv_head == 0) n_kv_head = n_head;   // model.n_kv_head 0 means "= n_head"
    grid_msg why = {0};

    if (tp < 1) msg_problem(&why, "tp %d must be at least 1", tp);
    if (pp < 1) msg_problem(&why, "pp %d must be at least 1", pp);
    if (dp < 0) msg_problem(&why, "dp %d must be at least 1 (or 0 for auto)", dp);
    if (dp_auto && tp >= 1 && pp >= 1) {
        dp = world / (tp * pp);
        if (dp < 1 || world % (tp * pp) != 0)
            msg_problem(&why, "dp auto: world %d is not a multiple of tp %d x pp %d = %d",
                        world, tp, pp, tp * pp);
    }
    long ranks = (long)dp * tp * pp;
    if (tp >= 1 && pp >= 1 && dp >= 1 && ranks != world)
        msg_problem(&why, "dp x tp x pp must equal the world size %d", world);
    if (n_head < 1) msg_problem(&why, "n_head %d must be at least 1", n_head);
    if (n_kv_head < 1) msg_problem(&why, "n_kv_head %d must be at least 1", n_kv_head);
    if (tp >= 1 && n_head >= 1 && n_head % tp != 0)
        msg_problem(&why, "n_head %d is not divisible by tp %d", n_head, tp);
    if (tp >= 1 && n_kv_head >= 1 && n_kv_head % tp != 0)
        msg_problem(&why, "n_kv_head %d is not divisible by tp %d", n_kv_head, tp);
    if (micro_batch < 1) msg_problem(&why, "micro-batch %d must be at least 1", micro_batch);
    if (samples < 1) msg_problem(&why, "%ld samples per step must be at least 1", samples);

    long per_rank = 0;   // micro-batches per dp rank, when whole
    if (dp >= 1 && micro_batch >= 1 && samples >= 1) {
        long unit = (long)dp * micro_batch;
        if (samples % unit != 0)
            msg_problem(&why, "%ld samples per step do not split into micro-batches of %d "
                        "over dp %d (need a multiple of %ld)", samples, micro_batch, dp, unit);
        else
            per_rank = samples / unit;
        if (per_rank > 0 && pp >= 1 && per_rank < pp)
            msg_problem(&why, "only %ld micro-batches per dp rank for %d pipeline stages "
                        "(1F1B needs at least one per stage)", per_rank, pp);
    }
    *dp_out = dp;
    if (why.n_problems == 0) return 0;
    if (rank != 0) return 2;

    // One line: every factor, then what is wrong.
    grid_msg m = {0};
    msg_add(&m, "anvil: parallel layout does not fit: world %d = dp ", world);
    if (dp_auto && dp < 1) msg_add(&m, "auto");
    else if (dp_auto) msg_add(&m, "auto(%d)", dp);
    else msg_add(&m, "%d", dp);
    msg_add(&m, " x tp %d x pp %d = ", tp, pp);
    if (dp >= 1) msg_add(&m, "%ld", ranks);
    else msg_add(&m, "?");
    msg_add(&m, " ranks (n_head %d, n_kv_head %d, %ld samples per step in micro-batches of "
            "%d -> ", n_head, n_kv_head, samples, micro_batch);
    if (dp >= 1 && micro_batch >= 1)
        msg_add(&m, "%.3g", (double)samples / ((double)dp * micro_batch));
    else
        msg_add(&m, "?");
    msg_add(&m, " per dp rank, pp %d): %s", pp, why.text);
    fprintf(stderr, "%s\n", m.text);
    return 2;
}

// ---- the grid ---------------------------------------------------------------------------

int parallel_grid_init(parallel_grid *g, const parallel_config *pc, int n_head,
                       int n_kv_head, long samples, int micro_batch) {
    memset(g, 0, sizeof *g);
    int world = 0, rank = 0;
    if (comm_mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &world), "grid: world size") ||
        comm_mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "grid: world rank"))
        return 1;
    int dp = 0;
    int rc = grid_layout_check(world, rank, pc, n_head, n_kv_head, samples, micro_batch, &dp);
    if (rc) return rc;

    int tp = pc->tp, pp = pc->pp;
    g->world = world;
    g->rank = rank;
    g->dp = dp;
    g->tp = tp;
    g->pp = pp;
    g->tp_rank = rank % tp;
    g->dp_rank = (rank / tp) % dp;
    g->pp_rank = rank / (tp * dp);

    // Each step below has printed its own failure already.
    MPI_Comm dup = MPI_COMM_NULL;
    if (comm_mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "grid: world")) goto fail;
    if (!(g->world_g = group_wrap(dup, "world"))) goto fail;
    // Same (pp, dp) -> one tp group; same (pp, tp) -> one dp group; same (dp, tp) -> pp.
    g->tp_g = group_split(g->pp_rank * dp + g->dp_rank, g->tp_rank, g->tp_rank, tp, "tp");
    if (!g->tp_g) goto fail;
    g->dp_g = group_split(g->pp_rank * tp + g->tp_rank, g->dp_rank, g->dp_rank, dp, "dp");
    if (!g->dp_g) goto fail;
    g->pp_g = group_split(g->dp_rank * tp + g->tp_rank, g->pp_rank, g->pp_rank, pp, "pp");
    if (!g->pp_g) goto fail;
    return 0;

fail:
    parallel_grid_free(g);
    return 1;
}

// An NCCL group over the ranks of MPI group *mpi, or NULL after printing.
static comm_group *nccl_over(comm_group *mpi) {
    comm_group *n = calloc(1, sizeof *n);
    if (!n) {
        fprintf(stderr, "anvil: grid: out of memory for an NCCL group\n");
        return NULL;
    }
    if (comm_nccl_group_init(n, mpi->impl) != 0) {
        free(n);
        return NULL;
    }
    return n;
}

int parallel_grid_use_nccl(parallel_grid *g) {
    if (g->mpi_tp_g) return 0;
    // every rank creates the three in the same order (ncclCommInitRank blocks)
    comm_group *tp = nccl_over(g->tp_g);
    comm_group *dp = tp ? nccl_over(g->dp_g) : NULL;
    comm_group *pp = dp ? nccl_over(g->pp_g) : NULL;
    if (!pp) {
        comm_nccl_group_free(tp);
        comm_nccl_group_free(dp);
        free(tp);
        free(dp);
        return 1;
    }
    g->mpi_tp_g = g->tp_g, g->tp_g = tp;
    g->mpi_dp_g = g->dp_g, g->dp_g = dp;
    g->mpi_pp_g = g->pp_g, g->pp_g = pp;
    return 0;
}

void parallel_grid_free(parallel_grid *g) {
    if (!g) return;
    if (g->mpi_tp_g) {
        comm_group *n[3] = {g->pp_g, g->dp_g, g->tp_g};
        for (int i = 0; i < 3; i++) {
            comm_nccl_group_free(n[i]);
            free(n[i]);
        }
        g->pp_g = g->mpi_pp_g, g->dp_g = g->mpi_dp_g, g->tp_g = g->mpi_tp_g;
    }
    group_free(g->pp_g);
    group_free(g->dp_g);
    group_free(g->tp_g);
    group_free(g->world_g);
    memset(g, 0, sizeof *g);
}
