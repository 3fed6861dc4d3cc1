// kernels/cpu/swiglu.c: SwiGLU gate of the Llama MLP, fp32 cpu.
//
//   out = silu(gate) * up,  silu(g) = g * sigmoid(g)
//   dgate = dout * up * sigmoid(g) * (1 + g (1 - sigmoid(g)))   (overwritten, ops.h)
//   dup   = dout * silu(g)
// sigmoid is 1/(1 + exp(-g)) with the vectorizable cpu_expf (cpu_ops.h): for very
// negative g exp(-g) saturates at 1.7e38 and sigmoid is ~0, the right limit.
#include "kernels/cpu/cpu_ops.h"

void cpu_swiglu_forward(anv_act *out_, const anv_act *gate_, const anv_act *up_, size_t n) {
    float *out = out_;
    const float *gate = gate_;
    const float *up = up_;
    // out (n), gate (n), up (n)
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float sig = 1.0f / (1.0f + cpu_expf(-g));
        out[i] = g * sig * up[i];
    }
}

void cpu_swiglu_backward(anv_act *dgate_, anv_act *dup_, const anv_act *dout_, const anv_act *gate_,
                         const anv_act *up_, size_t n) {
    float *dgate = dgate_;
    float *dup = dup_;
    const float *dout = dout_;
    const float *gate = gate_;
    const float *up = up_;
    // dgate (n) =, dup (n) = (overwritten, ops.h), dout (n), gate (n), up (n)
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float sig = 1.0f / (1.0f + cpu_expf(-g));
        dgate[i] = dout[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
        dup[i] = dout[i] * g * sig;
    }
}
