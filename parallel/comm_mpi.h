// parallel/comm_mpi.h: what grid.c shares with the MPI backend (private to parallel/).
#ifndef ANVIL_PARALLEL_COMM_MPI_H
#define ANVIL_PARALLEL_COMM_MPI_H

#ifdef __cplusplus
extern "C" {
#endif

// Print "anvil: mpi: <op>: <MPI's text for rc>" unless rc is MPI_SUCCESS. Returns 0 if
// rc is MPI_SUCCESS, else -1.
int comm_mpi_check(int rc, const char *op);

#ifdef __cplusplus
}
#endif
#endif
