// kernels/fatal.h: the internal-error exit shared by the backends.
//
// A failing CUDA, cuBLASLt or NCCL call, or a kernel launch that did not start, is an
// internal error (nothing a user or a file can cause): it is printed once with the
// call, file:line, this rank and the library's own text, and the whole job is aborted
// (MPI_Abort when MPI is up, since one rank dying alone leaves the others waiting).
#ifndef ANVIL_KERNELS_FATAL_H
#define ANVIL_KERNELS_FATAL_H

#ifdef __cplusplus
extern "C" {
#endif

// Print "anvil: rank R: FILE:LINE: WHAT: TEXT" and abort the job. Never returns.
#if defined(__GNUC__)
__attribute__((noreturn))
#endif
void anv_fatal(const char *file, int line, const char *what, const char *text);

#ifdef __cplusplus
}
#endif
#endif
