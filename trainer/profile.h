// trainer/profile.h: time every backend op of one training step (run.profile_step).
//
// profile_wrap returns a backend that forwards every member to the real one; between
// profile_begin and profile_end it brackets each op with two stamps (ops.h: CUDA
// events on the compute stream, the wall clock on the cpu), so the time an op is
// charged is its own time on the device, not the host's launch time. profile_end
// waits for the stamps and prints a table: per op (matmuls and attention per shape)
// the calls, the milliseconds, the share of the step and, for matmuls and attention,
// the achieved TFLOP/s; then the step's span from its first stamp to its last, of
// which the ops' sum is a part: the rest is time the device sat idle between ops
// (host launch latency, waits on a host copy, waits on a collective on another
// stream). Collectives themselves are not backend ops and are not in the table.
#ifndef ANVIL_TRAINER_PROFILE_H
#define ANVIL_TRAINER_PROFILE_H

#include <stdio.h>

#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// A backend that forwards to be and can time it, or be itself when it cannot time
// (stamp members NULL). One per process: call once.
const anv_backend *profile_wrap(const anv_backend *be);

// Start timing every op (a no-op unless profile_wrap returned a wrapper).
void profile_begin(void);

// Stop timing, wait for the work timed, and write the table to f and to f2 (NULL:
// none), titled `title`. Returns 0, or 1 when timing was not possible (no wrapper, or
// out of memory or device events midway: one line then says so instead).
int profile_end(FILE *f, FILE *f2, const char *title);

#ifdef __cplusplus
}
#endif
#endif
