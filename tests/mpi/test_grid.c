// tests/mpi/test_grid.c: parallel_grid_init over every layout that fits the world, and
// the layouts that do not.
//
// For every tp x pp that divides the world size (dp given, and dp auto) it checks each
// rank's coordinates against rank = (pp_rank * dp + dp_rank) * tp + tp_rank, the group
// sizes and ranks, and, through the backend, that each group holds exactly the
// expected world ranks in coordinate order (an all_gather of world ranks, and an i32
// all_reduce sum that must equal the sum of the expected members).
//
// Bad layouts must return 2 on every rank, with one line on stderr from world rank 0
// only (stderr is captured to a file around the call and read back): a product that is
// not the world size (dp 2 x tp 2 x pp 2 on 6 ranks, the README's example, when run at
// -n 6), dp auto with a world not divisible by tp x pp, heads not divisible by tp, a
// batch that does not split over dp, fewer micro-batches than pipeline stages.
// Exit 0 if every check passed on every rank, else 1.
#include "parallel/parallel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

static int world, wrank, failed;

// Print one line from world rank 0 for a check whose verdict is combined over all ranks.
static void report(int ok, const char *fmt, const char *what) {
    int all = ok;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all) failed = 1;
    if (wrank == 0) printf("%s %s %s\n", all ? "ok  " : "FAIL", fmt, what);
    fflush(stdout);
}

// Members of this rank's group along one axis, in group-rank order: world ranks whose
// other coordinates equal this rank's.
static void expected_members(const parallel_grid *g, char axis, int *out, int *n) {
    *n = 0;
    for (int r = 0; r < world; r++) {
        int t = r % g->tp, d = (r / g->tp) % g->dp, p = r / (g->tp * g->dp);
        int same = axis == 't' ? (d == g->dp_rank && p == g->pp_rank)
                 : axis == 'd' ? (t == g->tp_rank && p == g->pp_rank)
                 : axis == 'p' ? (t == g->tp_rank && d == g->dp_rank) : 1;
        if (same) out[(*n)++] = r;
    }
}

// Check one group: size, rank, members (all_gather of world ranks), and an exact sum.
static int check_group(const parallel_grid *g, comm_group *grp, char axis, int coord) {
    int want[64], n = 0, got[64];
    expected_members(g, axis, want, &n);
    if (grp->size != n || grp->rank != coord || want[coord] != wrank) return 0;
    int me = wrank;
    if (grp->be->all_gather(grp, &me, got, 1, COMM_DTYPE_I32) != 0) return 0;
    if (memcmp(got, want, (size_t)n * sizeof(int)) != 0) return 0;
    int32_t sum = wrank, want_sum = 0;
    for (int i = 0; i < n; i++) want_sum += want[i];
    if (grp->be->all_reduce(grp, &sum, 1, COMM_DTYPE_I32, COMM_OP_SUM) != 0) return 0;
    return sum == want_sum;
}

static void check_good(int dp, int tp, int pp) {
    parallel_config pc = {.dp = dp, .tp = tp, .pp = pp};
    int real_dp = world / (tp * pp), mb = 2;
    long samples = (long)real_dp * mb * pp * 3;   // 3 micro-batches per stage
    parallel_grid g;
    int rc = parallel_grid_init(&g, &pc, 24 * tp, 8 * tp, samples, mb);
    int ok = rc == 0;
    if (ok) {
        ok = g.world == world && g.rank == wrank && g.dp == real_dp && g.tp == tp && g.pp == pp;
        ok = ok && (g.pp_rank * g.dp + g.dp_rank) * g.tp + g.tp_rank == wrank;
        ok = ok && g.tp_rank < tp && g.dp_rank < real_dp && g.pp_rank < pp;
        ok = ok && check_group(&g, g.tp_g, 't', g.tp_rank);
        ok = ok && check_group(&g, g.dp_g, 'd', g.dp_rank);
        ok = ok && check_group(&g, g.pp_g, 'p', g.pp_rank);
        ok = ok && check_group(&g, g.world_g, 'w', wrank);
        parallel_grid_free(&g);
        ok = ok && g.world_g == NULL;
    }
    char what[128];
    snprintf(what, sizeof what, "world %d dp %s%d tp %d pp %d: rank formula, group sizes, "
             "members", world, dp ? "" : "auto=", real_dp, tp, pp);
    report(ok, "layout", what);
}

// Call parallel_grid_init with stderr sent to a file; the message comes back in msg.
static int init_capturing(parallel_grid *g, const parallel_config *pc, int n_head, int n_kv,
                          long samples, int mb, char *msg, size_t cap) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/anvil_test_grid_%d_%d.txt", (int)getpid(), wrank);
    fflush(stderr);
    int saved = dup(2);
    FILE *f = fopen(path, "w+");
    if (!f || saved < 0) {
        fprintf(stderr, "test_grid: cannot capture stderr in %s\n", path);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    dup2(fileno(f), 2);
    int rc = parallel_grid_init(g, pc, n_head, n_kv, samples, mb);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t k = fread(msg, 1, cap - 1, f);
    msg[k] = 0;
    fclose(f);
    unlink(path);
    return rc;
}

// A bad layout: 2 on every rank, one line from rank 0 holding every `needles` string,
// nothing from the others.
static void check_bad(const char *name, int dp, int tp, int pp, int n_head, int n_kv,
                      long samples, int mb, const char *const *needles) {
    parallel_config pc = {.dp = dp, .tp = tp, .pp = pp};
    parallel_grid g;
    char msg[2048];
    int rc = init_capturing(&g, &pc, n_head, n_kv, samples, mb, msg, sizeof msg);
    int ok = rc == 2 && g.world_g == NULL;
    if (wrank == 0) {
        char *nl = strchr(msg, '\n');
        const char *head = "anvil: parallel layout does not fit: ";
        ok = ok && strncmp(msg, head, strlen(head)) == 0;
        ok = ok && nl && nl[1] == 0;   // exactly one line
        for (int i = 0; needles[i]; i++)
            if (!strstr(msg, needles[i])) {
                printf("  missing \"%s\"\n", needles[i]);
                ok = 0;
            }
        printf("  %s", msg);
    } else {
        ok = ok && msg[0] == 0;
    }
    report(ok, "refused", name);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
    if (world > 64) {
        if (wrank == 0) fprintf(stderr, "test_grid: run with at most 64 ranks\n");
        MPI_Finalize();
        return 1;
    }

    for (int tp = 1; tp <= world; tp++)
        for (int pp = 1; pp <= world / tp; pp++)
            if (world % (tp * pp) == 0) {
                check_good(world / (tp * pp), tp, pp);
                check_good(0, tp, pp);
            }

    char w[32], prod[64];
    snprintf(w, sizeof w, "world %d", world);
    // dp 2 x tp 2 x pp 2 is 8 ranks: wrong for any world but 8 (use dp 1 x 2 x 2 there).
    int dp = world == 8 ? 1 : 2;
    snprintf(prod, sizeof prod, "dp %d x tp 2 x pp 2 = %d ranks", dp, dp * 4);
    check_bad("product is not the world size", dp, 2, 2, 4, 2, 8, 2,
              (const char *const[]){w, prod, "n_head 4", "n_kv_head 2", "micro-batches of 2",
                                    "must equal the world size", NULL});
    check_bad("dp auto, world not divisible by tp x pp", 0, world + 1, 1, 4, 4, 8, 1,
              (const char *const[]){w, "dp auto", "not a multiple of tp", NULL});
    int tp = world % 2 == 0 ? 2 : 1;
    int ndp = world / tp;
    if (tp == 2)
        check_bad("n_head / n_kv_head not divisible by tp", 0, 2, 1, 5, 3, ndp * 2L, 2,
                  (const char *const[]){"n_head 5 is not divisible by tp 2",
                                        "n_kv_head 3 is not divisible by tp 2", NULL});
    check_bad("samples do not split over dp", 0, tp, 1, 4, 2, (long)ndp * 2 + 1, 2,
              (const char *const[]){"do not split into micro-batches of 2", NULL});
    if (world % 2 == 0) {
        // dp world/2, pp 2, one micro-batch per dp rank < 2 stages.
        check_bad("fewer micro-batches than pipeline stages", 0, 1, 2, 4, 4, (long)world / 2, 1,
                  (const char *const[]){"only 1 micro-batches per dp rank for 2 pipeline stages",
                                        NULL});
    }
    check_bad("micro-batch 0, tp 0", 0, 0, 1, 4, 4, 8, 0,
              (const char *const[]){"tp 0 must be at least 1", "micro-batch 0", NULL});

    if (wrank == 0) printf("%s\n", failed ? "FAILED" : "all grid checks passed");
    MPI_Finalize();
    return failed ? 1 : 0;
}
