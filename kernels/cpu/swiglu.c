// kernels/cpu/swiglu.c: SwiGLU gate of the Llama MLP, fp32 cpu.
//
//   out = silu(gate) * up,  silu(g) = g * sigmoid(g)
//   dgate += dout * up * sigmoid(g) * (1 + g (1 - sigmoid(g)))
//   dup   += dout * silu(g)
// sigmoid is 1/(1 + exp(-g)): for very negative g exp overflows to inf and sigmoid
// becomes exactly 0, which is the right limit, so no special case is needed.
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    // out (n), gate (n), up (n)
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float sig = 1.0f / (1.0f + expf(-g));
        out[i] = g * sig * up[i];
    }
}

void cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, size_t n) {
    // dgate (n) +=, dup (n) +=, dout (n), gate (n), up (n)
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float sig = 1.0f / (1.0f + expf(-g));
        dgate[i] += dout[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
        dup[i] += dout[i] * g * sig;
    }
}
