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
// With pre_gelu (the GELU epilogue of the GPU's cuBLASLt, here simply a second pass)
// the forward writes the product to pre_gelu and gelu of it to out, and the backward
// overwrites dinp with the gradient w.r.t. the previous layer's pre-GELU values.
#include <cblas.h>

#include "kernels/cpu/cpu_ops.h"

void cpu_matmul_forward(anv_act *out_, anv_act *pre_gelu_, const anv_act *inp_,
                        const anv_act *weight_, const anv_act *bias_, int N, int C, int OC) {
    float *pre_gelu = pre_gelu_;
    float *out = out_;
    const float *inp = inp_;
    const float *weight = weight_;
    const float *bias = bias_;
    // out (N,OC), pre_gelu (N,OC) or NULL, inp (N,C), weight (OC,C), bias (OC) or NULL
    float *z = pre_gelu != NULL ? pre_gelu : out;                 // (N,OC) the product
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C,
                1.0f, inp, C, weight, C, 0.0f, z, OC);
    if (bias != NULL) {
        #pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            float *z_n = z + (size_t)n * OC;                      // (OC)
            for (int o = 0; o < OC; o++) z_n[o] += bias[o];
        }
    }
    if (pre_gelu != NULL) cpu_gelu_forward(out, pre_gelu, (size_t)N * OC);
}

// columns per work unit of the dbias reduction (4 cache lines per row)
#define MATMUL_OCBLOCK 64

void cpu_matmul_backward(anv_act *dinp_, anv_grad_mode dinp_mode, float *dweight, float *dbias,
                         const anv_act *dout_, const anv_act *inp_, const anv_act *weight_,
                         const anv_act *pre_gelu_, int N, int C, int OC) {
    const float *pre_gelu = pre_gelu_;
    float *dinp = dinp_;
    const float *dout = dout_;
    const float *inp = inp_;
    const float *weight = weight_;
    // dinp (N,C) = or += (dinp_mode) or NULL, dweight (OC,C) += or NULL, dbias (OC) +=
    // or NULL; dout (N,OC), inp (N,C), weight (OC,C), pre_gelu (N,C) or NULL
    if (dinp != NULL && pre_gelu == NULL) {
        const float beta = dinp_mode == ANV_GRAD_MODE_SET ? 0.0f : 1.0f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC,
                    1.0f, dout, OC, weight, C, beta, dinp, C);
    } else if (dinp != NULL) {
        // dGELU: dinp = (dout @ weight) * gelu'(pre_gelu), OVERWRITTEN (ops.h)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC,
                    1.0f, dout, OC, weight, C, 0.0f, dinp, C);
        cpu_gelu_backward_inplace(dinp, pre_gelu, (size_t)N * C);
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
