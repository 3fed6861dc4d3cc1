// kernels/cpu/crossentropy.c: softmax cross-entropy over the vocabulary, fp32 cpu.
//
// logits (N,Vp) have Vp >= V columns; the padding columns V..Vp-1 (GPT-2 pads 50257 to
// 50304 for aligned matmuls) are not part of the distribution: the softmax runs over
// the first V columns only and the padding gets zero gradient. A target < 0 marks a row
// to ignore (SFT prompt tokens): its loss is 0 and its gradient row is all zero.
//
// Per row, with m = max logit (subtracted so that exp never overflows) and
// Z = sum exp(l - m):
//   loss = log Z + m - l[target]
//   dlogits = dloss * (exp(l - m) / Z - onehot(target))
// The backward recomputes m and Z instead of storing the probabilities, and overwrites
// dlogits. dlogits may alias logits: each element is read just before the same element
// is written (exp(l - m) goes into dlogits while Z is summed, then the row is scaled),
// and logits are not read again after that, so no pointer is restrict-qualified.
// Rows are split over threads; exp is the vectorizable cpu_expf (cpu_ops.h).
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

// A ternary, not fmaxf: without -ffast-math GCC keeps fmaxf a libm call per element.
static float crossentropy_row_max(const float *logits_n, int V) {
    float maxval = -INFINITY;
    #pragma omp simd reduction(max:maxval)
    for (int i = 0; i < V; i++) maxval = logits_n[i] > maxval ? logits_n[i] : maxval;
    return maxval;
}

void cpu_crossentropy_forward(float *losses, const float *logits, const int32_t *targets,
                              int N, int V, int Vp) {
    // losses (N), logits (N,Vp), targets (N)
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        int target = targets[n];
        if (target < 0) {
            losses[n] = 0.0f;
            continue;
        }
        const float *logits_n = logits + (size_t)n * Vp;          // (Vp)
        float maxval = crossentropy_row_max(logits_n, V);
        float sum = 0.0f;
        #pragma omp simd reduction(+:sum)
        for (int i = 0; i < V; i++) sum += cpu_expf(logits_n[i] - maxval);
        losses[n] = logf(sum) + maxval - logits_n[target];
    }
}

void cpu_crossentropy_backward(float *dlogits, const float *logits,
                               const int32_t *targets, int N, int V, int Vp, float dloss) {
    // dlogits (N,Vp) overwritten (may alias logits), logits (N,Vp), targets (N)
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *logits_n = logits + (size_t)n * Vp;          // (Vp)
        float *dlogits_n = dlogits + (size_t)n * Vp;              // (Vp)
        int target = targets[n];
        if (target < 0) {
            for (int i = 0; i < Vp; i++) dlogits_n[i] = 0.0f;
            continue;
        }
        float maxval = crossentropy_row_max(logits_n, V);
        float sum = 0.0f;
        #pragma omp simd reduction(+:sum)
        for (int i = 0; i < V; i++) {
            float e = cpu_expf(logits_n[i] - maxval);
            dlogits_n[i] = e;
            sum += e;
        }
        float dscale = dloss / sum;
        for (int i = 0; i < V; i++) dlogits_n[i] *= dscale;
        dlogits_n[target] -= dloss;
        for (int i = V; i < Vp; i++) dlogits_n[i] = 0.0f;
    }
}
