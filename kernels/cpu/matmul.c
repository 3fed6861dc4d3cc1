// kernels/cpu/matmul.c: fully-connected layer out = inp @ weight^T + bias, fp32 cpu.
//
// The weight is stored (OC, C) as in PyTorch's nn.Linear, so every product is one
// cblas_sgemm on row-major matrices with a transpose flag; matmuls are most of a
// training step and OpenBLAS (its OpenMP build, sharing our thread pool) does them far
// better than any loop written here.
//   forward:  out   (N,OC)  = inp (N,C)   @ weight^T          (beta = 0), then + bias
//   backward: dinp  (N,C)  += dout (N,OC) @ weight (OC,C)     (beta = 1)
//             dweight (OC,C) += dout^T (OC,N) @ inp (N,C)     (beta = 1)
//             dbias (OC)   += column sums of dout
// beta = 1 is what makes the backward accumulate, as every backward op must (ops.h).
#include <cblas.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_matmul_forward(float *out, const float *inp, const float *weight,
                        const float *bias, int N, int C, int OC) {
    // out (N,OC), inp (N,C), weight (OC,C), bias (OC) or NULL
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C,
                1.0f, inp, C, weight, C, 0.0f, out, OC);
    if (bias != NULL) {
        #pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            float *out_n = out + (size_t)n * OC;                  // (OC)
            for (int o = 0; o < OC; o++) out_n[o] += bias[o];
        }
    }
}

// columns per work unit of the dbias reduction (4 cache lines per row)
#define MATMUL_OCBLOCK 64

void cpu_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int N, int C, int OC) {
    // dinp (N,C) += or NULL, dweight (OC,C) += or NULL, dbias (OC) += or NULL;
    // dout (N,OC), inp (N,C), weight (OC,C)
    if (dinp != NULL) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC,
                    1.0f, dout, OC, weight, C, 1.0f, dinp, C);
    }
    if (dweight != NULL) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N,
                    1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    }
    if (dbias != NULL) {
        // each thread owns a block of output channels and sums it over all rows, so no
        // two threads touch the same dbias element
        int nblocks = (OC + MATMUL_OCBLOCK - 1) / MATMUL_OCBLOCK;
        #pragma omp parallel for schedule(static)
        for (int blk = 0; blk < nblocks; blk++) {
            int o0 = blk * MATMUL_OCBLOCK;
            int o1 = o0 + MATMUL_OCBLOCK < OC ? o0 + MATMUL_OCBLOCK : OC;
            float sum[MATMUL_OCBLOCK] = {0};
            for (int n = 0; n < N; n++) {
                const float *dout_n = dout + (size_t)n * OC;      // (OC)
                for (int o = o0; o < o1; o++) sum[o - o0] += dout_n[o];
            }
            for (int o = o0; o < o1; o++) dbias[o] += sum[o - o0];
        }
    }
}
