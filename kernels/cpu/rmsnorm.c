// kernels/cpu/rmsnorm.c: RMSNorm (Llama), fp32 cpu.
//
// Forward per row: rstd = 1/sqrt(mean(x^2) + eps); out = x * rstd * w; rstd is saved.
// Backward per row, with r = rstd:
//   dinp += r * w * dout - x * r^3 * mean(dout * w * x)
//   dweight += sum over rows of dout * x * r
// dinp is split over rows; the dweight reduction is split over blocks of channels so
// that no two threads add into the same element (see layernorm.c).
// Row sums carry `omp simd reduction` so they vectorize without -ffast-math (which
// would let the compiler reorder every float expression, not just these sums).
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_rmsnorm_forward(anv_act *out_, float *rstd, const anv_act *inp_, const anv_act *weight_,
                         int N, int C, float eps) {
    float *out = out_;
    const float *inp = inp_;
    const float *weight = weight_;
    // out (N,C), rstd (N), inp (N,C), weight (C)
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;                    // (C)
        float *o = out + (size_t)n * C;                          // (C)
        float ss = 0.0f;
        #pragma omp simd reduction(+:ss)
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float s = 1.0f / sqrtf(ss / C + eps);
        for (int c = 0; c < C; c++) o[c] = x[c] * s * weight[c];
        rstd[n] = s;
    }
}

// res = a + b, then RMSNorm of res (two passes; fused on the GPU).
void cpu_rmsnorm_residual_forward(anv_act *res, anv_act *out, float *rstd, const anv_act *a,
                                  const anv_act *b, const anv_act *weight, int N, int C,
                                  float eps) {
    // res (N,C), out (N,C), rstd (N), a (N,C), b (N,C), weight (C)
    cpu_residual_forward(res, a, b, (size_t)N * C);
    cpu_rmsnorm_forward(out, rstd, res, weight, N, C, eps);
}

// columns per work unit of the dweight reduction (4 cache lines per row)
#define RMSNORM_CBLOCK 64

void cpu_rmsnorm_backward(anv_act *dinp_, float *dweight, const anv_act *dout_,
                          const anv_act *inp_, const anv_act *weight_, const float *rstd,
                          int N, int C) {
    float *dinp = dinp_;
    const float *dout = dout_;
    const float *inp = inp_;
    const float *weight = weight_;
    // dinp (N,C) += or NULL, dweight (C) += or NULL; dout, inp (N,C); weight (C); rstd (N)
    if (dinp != NULL) {
        #pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;                 // (C)
            const float *dy = dout + (size_t)n * C;               // (C)
            float *dx = dinp + (size_t)n * C;                     // (C)
            float s = rstd[n];
            float dot = 0.0f;                                     // sum dout * w * x
            #pragma omp simd reduction(+:dot)
            for (int c = 0; c < C; c++) dot += dy[c] * weight[c] * x[c];
            float k = s * s * s * dot / C;
            for (int c = 0; c < C; c++) dx[c] += s * weight[c] * dy[c] - k * x[c];
        }
    }
    if (dweight != NULL) {
        int nblocks = (C + RMSNORM_CBLOCK - 1) / RMSNORM_CBLOCK;
        #pragma omp parallel for schedule(static)
        for (int blk = 0; blk < nblocks; blk++) {
            int c0 = blk * RMSNORM_CBLOCK;
            int c1 = c0 + RMSNORM_CBLOCK < C ? c0 + RMSNORM_CBLOCK : C;
            float dw[RMSNORM_CBLOCK] = {0};
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * C;             // (C)
                const float *dy = dout + (size_t)n * C;           // (C)
                float s = rstd[n];
                for (int c = c0; c < c1; c++) dw[c - c0] += dy[c] * x[c] * s;
            }
            for (int c = c0; c < c1; c++) dweight[c] += dw[c - c0];
        }
    }
}
