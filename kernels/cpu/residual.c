// kernels/cpu/residual.c: residual connection out = a + b, fp32 cpu.
//
// out may alias a (the residual stream updated in place), so no pointer here is
// restrict-qualified. The backward passes dout through unchanged to both branches;
// either gradient may be NULL when that branch needs none.
#include "kernels/cpu/cpu_ops.h"

void cpu_residual_forward(anv_act *out_, const anv_act *a_, const anv_act *b_, size_t n) {
    float *out = out_;
    const float *a = a_;
    const float *b = b_;
    // out (n), a (n), b (n)
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cpu_residual_backward(anv_act *da_, anv_act *db_, const anv_act *dout_, size_t n) {
    float *da = da_;
    float *db = db_;
    const float *dout = dout_;
    // da (n) += or NULL, db (n) += or NULL, dout (n)
    if (da != NULL) {
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) da[i] += dout[i];
    }
    if (db != NULL) {
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) db[i] += dout[i];
    }
}
