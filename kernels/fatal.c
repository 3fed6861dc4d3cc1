// kernels/fatal.c: anv_fatal (fatal.h): report an internal error once and abort the job.
#include "kernels/fatal.h"

#include <stdio.h>
#include <stdlib.h>

#include <mpi.h>

void anv_fatal(const char *file, int line, const char *what, const char *text) {
    int up = 0, down = 0, rank = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (up && !down) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fprintf(stderr, "anvil: rank %d: %s:%d: %s: %s\n", rank, file, line, what, text);
    fflush(stderr);
    if (up && !down) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}
