// tests/emu/include/cuda_bf16.h: bfloat16 for the host emulation: the raw 16 bits, and
// the conversions of CUDA's cuda_bf16.h (round to nearest even; NaN stays NaN), which
// are the bf16 stand-in backend's (tests/unit/bf16_backend.h).
#ifndef ANVIL_TESTS_EMU_CUDA_BF16_H
#define ANVIL_TESTS_EMU_CUDA_BF16_H

#include <stdint.h>
#include <string.h>

#include "tests/emu/emu_cuda.h"
#include "tests/unit/bf16_backend.h"

// aligned as CUDA's are, so that the emulation's alignment checks see what the GPU would
struct alignas(2) __nv_bfloat16 {
    uint16_t bits;
};
struct alignas(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};

static inline float __bfloat162float(__nv_bfloat16 h) { return bf16_emulated_to_f32(h.bits); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    return __nv_bfloat16{bf16_emulated_from_f32(f)};
}
static inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
static inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return __nv_bfloat162{__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}
static inline float2 __bfloat1622float2(__nv_bfloat162 v) {
    return float2{__bfloat162float(v.x), __bfloat162float(v.y)};
}

#endif
