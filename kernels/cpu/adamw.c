// kernels/cpu/adamw.c: AdamW update and the two helpers of gradient clipping, fp32 cpu.
//
// AdamW (decoupled weight decay, as torch.optim.AdamW), per element:
//   g = grad * grad_scale                (grad_scale folds in clipping / loss scaling)
//   m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
//   param -= lr * (mhat / (sqrt(vhat) + eps) + wd * param)
//   mhat = m / (1 - b1^t),   vhat = v / (1 - b2^t)
// The bias corrections b^t are computed once in double: in float, 1 - 0.999^t loses
// most of its digits for small t. The loop is bound by memory (7 floats per element)
// only if sqrtf vectorizes, which GCC does only under -fno-math-errno; without that
// flag the update is 3-5x slower (scalar sqrt plus an errno check per element).
// sum_squares (for the global gradient norm) accumulates in double: a float sum of
// 124M squares would drop the small terms.
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

double cpu_sum_squares(const float *x, size_t n) {
    // x (n)
    double sum = 0.0;
    #pragma omp parallel for simd reduction(+:sum) schedule(static)
    for (size_t i = 0; i < n; i++) sum += (double)x[i] * (double)x[i];
    return sum;
}

void cpu_scale(float *x, float s, size_t n) {
    // x (n) *= s
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

void cpu_adamw_update(float *param, const float *grad, float *m, float *v, size_t n,
                      float lr, float beta1, float beta2, float eps, float weight_decay,
                      float grad_scale, int t) {
    // param (n), grad (n), m (n), v (n) updated in place; t >= 1 is the step number
    float bc1 = (float)(1.0 / (1.0 - pow((double)beta1, t)));     // 1 / (1 - b1^t)
    float bc2 = (float)(1.0 / (1.0 - pow((double)beta2, t)));     // 1 / (1 - b2^t)
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi * bc1;
        float vhat = vi * bc2;
        param[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * param[i]);
    }
}
