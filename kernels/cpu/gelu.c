// kernels/cpu/gelu.c: GELU, tanh approximation (GPT-2), fp32 cpu.
//
//   out = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
// computed through the identity 0.5 (1 + tanh(u)) = sigmoid(2u) =: s, so that only
// cpu_expf (vectorizable, cpu_ops.h) is needed instead of a libm tanhf call:
//   out = x s
//   dout/dx = s + x * 2 s (1 - s) * du/dx,  du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// (the tanh form's 0.5 x (1 - tanh^2) du/dx is the same term: 1 - tanh^2 = 4 s (1 - s)).
// For very negative u, exp(-2u) saturates at 1.7e38 and s is ~0: the correct limit.
// Pointwise, split over threads in contiguous ranges.
#include "kernels/cpu/cpu_ops.h"

#define GELU_SCALING_FACTOR 0.7978845608028654f   // sqrt(2/pi)
#define GELU_CUBIC 0.044715f                      // the approximation's cubic coefficient

void cpu_gelu_forward(anv_act *out_, const anv_act *inp_, size_t n) {
    float *out = out_;
    const float *inp = inp_;
    // out (n), inp (n)
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALING_FACTOR * (x + GELU_CUBIC * x * x * x);
        out[i] = x / (1.0f + cpu_expf(-2.0f * u));
    }
}

// d gelu(x) / dx (inlined, so the loops that call it still vectorize)
static inline float gelu_grad(float x) {
    float u = GELU_SCALING_FACTOR * (x + GELU_CUBIC * x * x * x);
    float s = 1.0f / (1.0f + cpu_expf(-2.0f * u));
    float du_dx = GELU_SCALING_FACTOR * (1.0f + 3.0f * GELU_CUBIC * x * x);
    return s + 2.0f * x * s * (1.0f - s) * du_dx;
}

// d (n) *= gelu'(x): the gradient w.r.t. gelu's output becomes the one w.r.t. its input
// (matmul_backward's dGELU step).
void cpu_gelu_backward_inplace(float *d, const float *x_, size_t n) {
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) d[i] *= gelu_grad(x_[i]);
}

void cpu_gelu_backward(anv_act *dinp_, const anv_act *inp_, const anv_act *dout_, size_t n) {
    float *dinp = dinp_;
    const float *inp = inp_;
    const float *dout = dout_;
    // dinp (n) +=, inp (n), dout (n)
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) dinp[i] += gelu_grad(inp[i]) * dout[i];
}
