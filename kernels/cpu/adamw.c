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

double cpu_sum_squares(const float *x, const anv_seg *segs, int nseg) {
    // x: the segments' elements
    double sum = 0.0;
    for (int s = 0; s < nseg; s++) {
        const float *xs = x + segs[s].off;                        // (segs[s].n)
        const size_t n = segs[s].n;
        #pragma omp parallel for simd reduction(+:sum) schedule(static)
        for (size_t i = 0; i < n; i++) sum += (double)xs[i] * (double)xs[i];
    }
    return sum;
}

void cpu_scale(float *x, float s, size_t n) {
    // x (n) *= s
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

void cpu_add_f32(float *dst, const float *src, size_t n) {
    // dst (n) += src (n)
    #pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

// One segment (the cpu backend has no master copy: param is fp32 itself).
static void adamw_segment(float *param, const float *grad, float *m, float *v, size_t n,
                          float wd, const anv_adamw_args *a, float bc1, float bc2) {
    // param (n), grad (n), m (n), v (n) updated in place
    const float lr = a->lr, beta1 = a->beta1, beta2 = a->beta2, eps = a->eps;
    const float gs = a->grad_scale;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * gs;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi * bc1;
        float vhat = vi * bc2;
        param[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * param[i]);
    }
}

void cpu_adamw_update(anv_act *param_, float *master, const float *grad, float *m, float *v,
                      const anv_seg *segs, int nseg, const anv_adamw_args *a) {
    // param, master (unused: NULL or param itself), grad, m, v: the segments' elements
    float *param = master != NULL ? master : (float *)param_;
    const double t = a->t;                                        // t >= 1
    float bc1 = (float)(1.0 / (1.0 - pow((double)a->beta1, t)));  // 1 / (1 - b1^t)
    float bc2 = (float)(1.0 / (1.0 - pow((double)a->beta2, t)));  // 1 / (1 - b2^t)
    for (int s = 0; s < nseg; s++) {
        size_t o = segs[s].off;
        adamw_segment(param + o, grad + o, m + o, v + o, segs[s].n, segs[s].weight_decay, a,
                      bc1, bc2);
    }
    if (master != NULL && master != param_) {
        for (int s = 0; s < nseg; s++)
            cpu_copy((float *)param_ + segs[s].off, master + segs[s].off,
                     segs[s].n * sizeof(float));
    }
}
