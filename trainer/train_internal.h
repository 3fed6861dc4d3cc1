// trainer/train_internal.h: what train.c shares with the files it is split into.
#ifndef ANVIL_TRAINER_TRAIN_INTERNAL_H
#define ANVIL_TRAINER_TRAIN_INTERNAL_H

#include "parallel/parallel.h"
#include "trainer/model.h"

#ifdef __cplusplus
extern "C" {
#endif

// Gather every parameter at its global shape (vocabulary rows cut to V) on world rank
// 0 and write them to the named-tensor file `path` (gather.c). Collective over the
// world (dp replica 0 sends, the others return at once). Returns 0, 1 (communication
// or memory) or 2 (the file could not be written), on rank 0; 0 or 1 elsewhere.
int train_write_gathered(const model *m, parallel_grid *g, const char *path);

#ifdef __cplusplus
}
#endif
#endif
