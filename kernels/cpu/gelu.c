// kernels/cpu/gelu.c: GELU, tanh approximation (GPT-2), fp32 cpu.
//
//   out = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   dout/dx = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// Pointwise, split over threads in contiguous ranges.
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

#define GELU_SCALING_FACTOR 0.7978845608028654f   // sqrt(2/pi)
#define GELU_CUBIC 0.044715f                      // the approximation's cubic coefficient

void cpu_gelu_forward(float *out, const float *inp, size_t n) {
    // out (n), inp (n)
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALING_FACTOR * (x + GELU_CUBIC * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanhf(u));
    }
}

void cpu_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    // dinp (n) +=, inp (n), dout (n)
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALING_FACTOR * (x + GELU_CUBIC * x * x * x);
        float th = tanhf(u);
        float du_dx = GELU_SCALING_FACTOR * (1.0f + 3.0f * GELU_CUBIC * x * x);
        float grad = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du_dx;
        dinp[i] += grad * dout[i];
    }
}
