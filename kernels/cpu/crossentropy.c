// kernels/cpu/crossentropy.c: softmax cross-entropy over a (possibly sharded)
// vocabulary, fp32 cpu.
//
// logits (N,Vs) hold the vocabulary columns [v0, v0+Vs) of one tensor-parallel shard
// (all of them when unsharded: v0 = 0, Vs = Vp); the first Vv are real, the rest is
// padding (GPT-2 pads 50257 to 50304 for aligned matmuls, and the last shard of an
// uneven split holds that padding) that is not part of the distribution. A target < 0
// marks a row to ignore (SFT prompt tokens): its loss is 0 and its gradient row zero.
//
// With lse = log sum_j exp(l_j) over all real columns of all shards:
//   loss = lse - l[target]        dlogits = dloss * (exp(l - lse) - onehot(target))
// lse is split the usual way so that no rank needs another rank's logits. Each shard
// reduces a row to {m, s, z} (its max, sum exp(l - m), and the target logit if it owns
// the target); the P triples combine as M = max m_p, lse = M + log sum_p s_p exp(m_p - M)
// (each s_p rescaled to the common max, so nothing overflows whatever the logits'
// magnitude); and the backward needs only lse, not the probabilities.
//
// Stats read each row from memory once: a block of CE_BLOCK columns is reduced to its
// max, the running sum is rescaled if that raised the row's max, and the block (now in
// L1) is summed. The block sums are vectorized float reductions (cpu_expf, as before
// this op was split; a float lane sums at most CE_BLOCK / lanes terms), and the running
// sum across blocks is a double: one add per block is free, and it keeps the float
// rounding from growing with the vocabulary (50k columns = 13 blocks). The combine is
// O(N P) with a libm exp and log per term, so it runs entirely in double: lse rounds
// once to float, and loss = lse - z is formed before that rounding, so two logits of
// magnitude ~1e3 do not cancel in float.
//
// Backward overwrites dlogits; dlogits may alias logits: each element is read just
// before the same element is written, and the row is not read again, so no pointer is
// restrict-qualified. Rows are split over threads in all three steps.
//
// Fused (P = 1, training): the three steps one row at a time, through the same row
// functions, so its losses and gradient are the three ops' bit for bit; the row is
// still in cache for the backward's pass.
#include <math.h>

#include "kernels/cpu/cpu_ops.h"

// columns per block of the one-pass stats: 4096 floats = 16 KiB stay in L1 (32-48 KiB)
// between the max and the sum. Measured on GPT-2's 50257 columns (1024 rows, 1 core):
// 512 was 20% slower (per-block reduction overhead), 2048..whole-row within noise.
#define CE_BLOCK 4096

// A ternary, not fmaxf: without -ffast-math GCC keeps fmaxf a libm call per element.
static float crossentropy_block_max(const float *x, int n) {
    float maxval = -INFINITY;
    #pragma omp simd reduction(max:maxval)
    for (int i = 0; i < n; i++) maxval = x[i] > maxval ? x[i] : maxval;
    return maxval;
}

// {m, s, z} of one row (Vs columns, Vv real) whose target sits at column ix (any
// value: outside [0, Vv) gives z = 0).
static void ce_row_stats(float *st, const float *logits_n, int ix, int Vv) {
    float m = -INFINITY;
    double s = 0.0;
    for (int i0 = 0; i0 < Vv; i0 += CE_BLOCK) {
        const float *blk = logits_n + i0;                     // (len)
        int len = Vv - i0 < CE_BLOCK ? Vv - i0 : CE_BLOCK;
        float bm = crossentropy_block_max(blk, len);
        if (bm > m) {
            s *= exp((double)m - (double)bm);                 // first block: 0 * 0
            m = bm;
        }
        float bs = 0.0f;
        #pragma omp simd reduction(+:bs)
        for (int i = 0; i < len; i++) bs += cpu_expf(blk[i] - m);
        s += bs;
    }
    st[0] = m;
    st[1] = (float)s;
    st[2] = ix >= 0 && ix < Vv ? logits_n[ix] : 0.0f;
}

// Row n's loss and lse from the P shards' stats (P,N,3).
static void ce_row_combine(float *loss, float *lse, const float *stats, int n, int N, int P,
                           int target) {
    double M = -INFINITY;
    for (int p = 0; p < P; p++) {
        double m = stats[((size_t)p * N + n) * 3];
        M = m > M ? m : M;
    }
    double S = 0.0, Z = 0.0;
    for (int p = 0; p < P; p++) {                             // rank order: deterministic
        const float *st = stats + ((size_t)p * N + n) * 3;    // (3)
        Z += st[2];
        // a shard without real columns has m = -inf and s = 0; skipping it avoids
        // exp(-inf - M), which is NaN when M is -inf too
        if (st[0] == -INFINITY) continue;
        S += (double)st[1] * exp((double)st[0] - M);
    }
    double l = M + log(S);                                    // S >= 1 unless V = 0
    *lse = (float)l;
    *loss = target >= 0 ? (float)(l - Z) : 0.0f;
}

// One row's gradient; dlogits_n may be logits_n.
static void ce_row_backward(float *dlogits_n, const float *logits_n, float lse_n, int target,
                            int ix, int Vv, int Vs, float dloss) {
    if (target < 0) {
        for (int i = 0; i < Vs; i++) dlogits_n[i] = 0.0f;
        return;
    }
    // element i reads only logits_n[i]: safe to vectorize even when aliased
    #pragma omp simd
    for (int i = 0; i < Vv; i++) dlogits_n[i] = dloss * cpu_expf(logits_n[i] - lse_n);
    if (ix >= 0 && ix < Vv) dlogits_n[ix] -= dloss;
    for (int i = Vv; i < Vs; i++) dlogits_n[i] = 0.0f;
}

void cpu_crossentropy_stats(float *stats, const anv_act *logits_, const int32_t *targets,
                            int N, int v0, int Vv, int Vs) {
    const float *logits = logits_;
    // stats (N,3) overwritten, logits (N,Vs) with Vv real columns, targets (N)
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        ce_row_stats(stats + (size_t)n * 3, logits + (size_t)n * Vs, targets[n] - v0, Vv);
}

void cpu_crossentropy_combine(float *losses, float *lse, const float *stats,
                              const int32_t *targets, int N, int P) {
    // losses (N), lse (N) overwritten; stats (P,N,3) in rank order; targets (N)
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) ce_row_combine(&losses[n], &lse[n], stats, n, N, P, targets[n]);
}

void cpu_crossentropy_backward(anv_act *dlogits_, const anv_act *logits_, const float *lse,
                               const int32_t *targets, int N, int v0, int Vv, int Vs,
                               float dloss) {
    float *dlogits = dlogits_;
    const float *logits = logits_;
    // dlogits (N,Vs) overwritten (may alias logits), logits (N,Vs), lse (N), targets (N)
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        ce_row_backward(dlogits + (size_t)n * Vs, logits + (size_t)n * Vs, lse[n], targets[n],
                        targets[n] - v0, Vv, Vs, dloss);
}

void cpu_crossentropy_fused(anv_act *dlogits_, float *losses, const anv_act *logits_,
                            const int32_t *targets, int N, int Vv, int Vs, float dloss) {
    float *dlogits = dlogits_;
    const float *logits = logits_;
    // dlogits (N,Vs) overwritten (may alias logits), losses (N) overwritten, logits (N,Vs),
    // targets (N); unsharded (P = 1, v0 = 0)
    #pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *logits_n = logits + (size_t)n * Vs;
        float st[3], lse_n;
        ce_row_stats(st, logits_n, targets[n], Vv);
        ce_row_combine(&losses[n], &lse_n, st, 0, 1, 1, targets[n]);
        ce_row_backward(dlogits + (size_t)n * Vs, logits_n, lse_n, targets[n], targets[n], Vv,
                        Vs, dloss);
    }
}
