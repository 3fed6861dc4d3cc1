// tests/emu/emu_mpi_progress.c: the GPU keeps working while the host waits in MPI.
//
// Under EMU_STREAMS=lazy / mixed (tests/emu/emu_stream.cc) queued device work runs only
// when something waits for it. On a GPU it runs on its own, so a rank whose host blocks
// in an MPI call (the trainer's host-side reductions, broadcasts, pipeline messages)
// still carries out the NCCL sends its peers are waiting for. These wrappers of the
// blocking MPI calls anvil makes (through MPI's profiling interface, PMPI_*) first carry
// out every stream's queued work, as the GPU would have meanwhile; the emulated NCCL's
// own MPI calls (made while streams are being carried out) pass straight through.
// Linked into anvil_emulated only.
#include <mpi.h>

#include "tests/emu/include/cuda_runtime_api.h"

int MPI_Bcast(void *buf, int count, MPI_Datatype type, int root, MPI_Comm comm) {
    emu_streams_progress();
    return PMPI_Bcast(buf, count, type, root, comm);
}

int MPI_Allreduce(const void *send, void *recv, int count, MPI_Datatype type, MPI_Op op,
                  MPI_Comm comm) {
    emu_streams_progress();
    return PMPI_Allreduce(send, recv, count, type, op, comm);
}

int MPI_Reduce(const void *send, void *recv, int count, MPI_Datatype type, MPI_Op op,
               int root, MPI_Comm comm) {
    emu_streams_progress();
    return PMPI_Reduce(send, recv, count, type, op, root, comm);
}

int MPI_Reduce_scatter_block(const void *send, void *recv, int count, MPI_Datatype type,
                             MPI_Op op, MPI_Comm comm) {
    emu_streams_progress();
    return PMPI_Reduce_scatter_block(send, recv, count, type, op, comm);
}

int MPI_Allgather(const void *send, int scount, MPI_Datatype stype, void *recv, int rcount,
                  MPI_Datatype rtype, MPI_Comm comm) {
    emu_streams_progress();
    return PMPI_Allgather(send, scount, stype, recv, rcount, rtype, comm);
}

int MPI_Barrier(MPI_Comm comm) {
    emu_streams_progress();
    return PMPI_Barrier(comm);
}

int MPI_Send(const void *buf, int count, MPI_Datatype type, int dst, int tag, MPI_Comm comm) {
    emu_streams_progress();
    return PMPI_Send(buf, count, type, dst, tag, comm);
}

int MPI_Recv(void *buf, int count, MPI_Datatype type, int src, int tag, MPI_Comm comm,
             MPI_Status *status) {
    emu_streams_progress();
    return PMPI_Recv(buf, count, type, src, tag, comm, status);
}

int MPI_Sendrecv(const void *send, int scount, MPI_Datatype stype, int dst, int stag,
                 void *recv, int rcount, MPI_Datatype rtype, int src, int rtag, MPI_Comm comm,
                 MPI_Status *status) {
    emu_streams_progress();
    return PMPI_Sendrecv(send, scount, stype, dst, stag, recv, rcount, rtype, src, rtag, comm,
                         status);
}

int MPI_Finalize(void) {
    emu_streams_progress();
    return PMPI_Finalize();
}
