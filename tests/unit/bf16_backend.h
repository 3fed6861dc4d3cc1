// tests/unit/bf16_backend.h: a test-only backend that stores anv_act as real bf16 on
// the host and computes every op with the fp32 cpu backend (bf16_backend.c says how).
// It lets the unit suite run, without a GPU, every host-side path that only the cuda
// backend takes: 2-byte weights and activations, fp32 master weights, vocabulary
// padding to 64 rows, and the device-memory code paths (host_memory 0).
#ifndef ANVIL_TESTS_UNIT_BF16_BACKEND_H
#define ANVIL_TESTS_UNIT_BF16_BACKEND_H

#include <stdint.h>

#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// The emulated backend: name "bf16-emulated", act_dtype ANV_DTYPE_BF16, act_bytes 2,
// vocab_multiple 64, host_memory 0 (its memory is host memory all the same).
const anv_backend *anv_backend_bf16_emulated(void);

// fp32 -> bf16 bits, rounding to nearest even (NaN stays a quiet NaN, overflow goes
// to inf); and bf16 bits -> fp32 (exact). The conversions the backend uses.
uint16_t bf16_emulated_from_f32(float x);
float bf16_emulated_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif
#endif
