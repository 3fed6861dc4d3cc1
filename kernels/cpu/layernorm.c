// kernels/cpu/layernorm.c: LayerNorm with weight and bias (GPT-2), fp32 cpu.
//
// Forward per row: mean, biased variance, rstd = 1/sqrt(var + eps); out = norm*w + b
// with norm = (x - mean)*rstd. mean and rstd are saved for backward.
//
// Backward, per row (llm.c's form):
//   dnorm = w * dout
//   dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
//   dweight += sum over rows of dout * norm,  dbias += sum over rows of dout
// Rows are independent for dinp and are split over threads. dweight/dbias are sums over
// rows, so splitting rows would race; a second pass splits the channels instead (each
// thread owns a block of columns and walks all rows), race-free and deterministic.
// Row sums carry `omp simd reduction` so they vectorize without -ffast-math (which
// would let the compiler reorder every float expression, not just these sums).
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_layernorm_forward(anv_act *out_, float *mean, float *rstd, const anv_act *inp_,
                           const anv_act *weight_, const anv_act *bias_, int N, int C,
                           float eps) {
    float *out = out_;
    const float *inp = inp_;
    const float *weight = weight_;
    const float *bias = bias_;
    // out (N,C), mean (N), rstd (N), inp (N,C), weight (C), bias (C)
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;                    // (C)
        float *o = out + (size_t)n * C;                          // (C)
        float m = 0.0f;
        #pragma omp simd reduction(+:m)
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        float var = 0.0f;
        #pragma omp simd reduction(+:var)
        for (int c = 0; c < C; c++) {
            float d = x[c] - m;
            var += d * d;
        }
        var /= C;                                                 // biased, as PyTorch
        float s = 1.0f / sqrtf(var + eps);
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

// res = a + b, then LayerNorm of res: two passes here (the fusion is for the GPU, where
// it saves a round trip of res through memory).
void cpu_layernorm_residual_forward(anv_act *res, anv_act *out, float *mean, float *rstd,
                                    const anv_act *a, const anv_act *b, const anv_act *weight,
                                    const anv_act *bias, int N, int C, float eps) {
    // res (N,C), out (N,C), mean (N), rstd (N), a (N,C), b (N,C), weight (C), bias (C)
    cpu_residual_forward(res, a, b, (size_t)N * C);
    cpu_layernorm_forward(out, mean, rstd, res, weight, bias, N, C, eps);
}

// columns per work unit of the dweight/dbias reduction (4 cache lines per row)
#define LAYERNORM_CBLOCK 64

void cpu_layernorm_backward(anv_act *dinp_, float *dweight, float *dbias, const anv_act *dout_,
                            const anv_act *inp_, const anv_act *weight_, const float *mean,
                            const float *rstd, int N, int C) {
    float *dinp = dinp_;
    const float *dout = dout_;
    const float *inp = inp_;
    const float *weight = weight_;
    // dinp (N,C) +=, dweight (C) +=, dbias (C) +=; dout, inp (N,C); weight (C);
    // mean, rstd (N). Any of dinp, dweight, dbias may be NULL.
    if (dinp != NULL) {
        #pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;                 // (C)
            const float *dy = dout + (size_t)n * C;               // (C)
            float *dx = dinp + (size_t)n * C;                     // (C)
            float m = mean[n], s = rstd[n];
            float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
            #pragma omp simd reduction(+:dnorm_mean, dnorm_norm_mean)
            for (int c = 0; c < C; c++) {
                float norm = (x[c] - m) * s;
                float dnorm = weight[c] * dy[c];
                dnorm_mean += dnorm;
                dnorm_norm_mean += dnorm * norm;
            }
            dnorm_mean /= C;
            dnorm_norm_mean /= C;
            for (int c = 0; c < C; c++) {
                float norm = (x[c] - m) * s;
                float dnorm = weight[c] * dy[c];
                dx[c] += s * (dnorm - dnorm_mean - norm * dnorm_norm_mean);
            }
        }
    }
    if (dweight != NULL || dbias != NULL) {
        int nblocks = (C + LAYERNORM_CBLOCK - 1) / LAYERNORM_CBLOCK;
        #pragma omp parallel for schedule(static)
        for (int blk = 0; blk < nblocks; blk++) {
            int c0 = blk * LAYERNORM_CBLOCK;
            int c1 = c0 + LAYERNORM_CBLOCK < C ? c0 + LAYERNORM_CBLOCK : C;
            float dw[LAYERNORM_CBLOCK] = {0}, db[LAYERNORM_CBLOCK] = {0};
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * C;             // (C)
                const float *dy = dout + (size_t)n * C;           // (C)
                float m = mean[n], s = rstd[n];
                for (int c = c0; c < c1; c++) {
                    dw[c - c0] += dy[c] * (x[c] - m) * s;
                    db[c - c0] += dy[c];
                }
            }
            for (int c = c0; c < c1; c++) {
                if (dweight != NULL) dweight[c] += dw[c - c0];
                if (dbias != NULL) dbias[c] += db[c - c0];
            }
        }
    }
}
