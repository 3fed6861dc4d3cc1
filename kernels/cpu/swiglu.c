// kernels/cpu/swiglu.c: SwiGLU gate of the Llama MLP, fp32 cpu.
//
//   out = silu(gate) * up,  silu(g) = g * sigmoid(g)
//   dgate = dout * up * sigmoid(g) * (1 + g (1 - sigmoid(g)))   (overwritten, ops.h)
//   dup   = dout * silu(g)
// sigmoid is 1/(1 + exp(-g)) with the vectorizable cpu_expf (cpu_ops.h): for very
// negative g exp(-g) saturates at 1.7e38 and sigmoid is ~0, the right limit.
// gate and up are the two halves of each row of gu (N,2F) (ops.h), dgate and dup the
// halves of dgu's.
#include "kernels/cpu/cpu_ops.h"

void cpu_swiglu_forward(anv_act *out_, const anv_act *gu_, int N, int F) {
    float *out = out_;
    const float *gu = gu_;
    // out (N,F), gu (N,2F)
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *gate = gu + (size_t)r * 2 * F, *up = gate + F;   // (F) each
        float *o = out + (size_t)r * F;                                // (F)
        #pragma omp simd
        for (int i = 0; i < F; i++) {
            float g = gate[i];
            float sig = 1.0f / (1.0f + cpu_expf(-g));
            o[i] = g * sig * up[i];
        }
    }
}

void cpu_swiglu_backward(anv_act *dgu_, const anv_act *dout_, const anv_act *gu_, int N, int F) {
    float *dgu = dgu_;
    const float *dout = dout_;
    const float *gu = gu_;
    // dgu (N,2F) = (overwritten, ops.h), dout (N,F), gu (N,2F)
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        const float *gate = gu + (size_t)r * 2 * F, *up = gate + F;   // (F) each
        float *dgate = dgu + (size_t)r * 2 * F, *dup = dgate + F;     // (F) each
        const float *dy = dout + (size_t)r * F;                       // (F)
        #pragma omp simd
        for (int i = 0; i < F; i++) {
            float g = gate[i];
            float sig = 1.0f / (1.0f + cpu_expf(-g));
            dgate[i] = dy[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
            dup[i] = dy[i] * g * sig;
        }
    }
}
