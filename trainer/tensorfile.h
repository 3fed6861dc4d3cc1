// trainer/tensorfile.h: a minimal named-tensor file used to exchange weights,
// batches and gradients with the PyTorch reference (tests/reference) and for debugging.
//
// Format (little endian): 8 bytes magic "ANVTENS1", then records until end of file:
//   u32 name_len, name bytes (no NUL), u32 dtype (0: float32, 1: int32),
//   u32 ndim, i64 dims[ndim], data (prod(dims) elements).
#ifndef ANVIL_TRAINER_TENSORFILE_H
#define ANVIL_TRAINER_TENSORFILE_H

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum tensorfile_dtype { TENSORFILE_DTYPE_F32 = 0, TENSORFILE_DTYPE_I32 = 1 };

// Open `path` for writing (truncates). Returns the FILE or NULL after printing why.
FILE *tensorfile_create(const char *path);
// Append one tensor. Returns 0 or -1.
int tensorfile_add(FILE *f, const char *name, int dtype, int ndim, const int64_t *dims,
                   const void *data);
// Read the tensor called `name` into data (capacity `count` elements, which must equal
// its element count). Returns 0, or -1 after printing why (missing, size mismatch).
int tensorfile_read(const char *path, const char *name, int dtype, void *data,
                    int64_t count);

#ifdef __cplusplus
}
#endif
#endif
