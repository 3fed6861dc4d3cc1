// kernels/cuda/crossentropy.cu: softmax cross-entropy over a (possibly sharded)
// vocabulary, bf16 logits, cuda.
//
// The split into stats / combine / backward and every formula are those of
// kernels/cpu/crossentropy.c (read its comment first): logits (N,Vs) hold the vocabulary
// columns [v0, v0+Vs) of one shard, of which the first Vv are real and the rest is
// padding; a target < 0 marks an ignored row.
//
// stats: one block per row streams the row once. Each thread keeps an online max m and
// sum s = sum exp(x - m) over its columns: per 8-column chunk (one 16-byte load) it
// takes the chunk's max, rescales s by exp(m_old - m_new) only if the max rose, and adds
// the chunk's exponentials (one expf per element). The block then takes the max M of
// the threads' m and sums s * exp(m - M) (a thread that saw no real column has
// m = -inf, s = 0 and contributes 0; testing that avoids exp(-inf - -inf) = NaN when
// Vv = 0, which therefore gives {-inf, 0, 0} as on the cpu). Everything is fp32: a
// thread's sum has Vs / (8 * threads) chunks (~12 at 50k columns) of 8 terms each, and
// the block sum is a tree, so the rounding is not worse than the cpu's float blocks.
//
// combine: one thread per row, in double exactly as the cpu (O(N P), negligible).
//
// backward: one block per row; each element of the row is read, turned into
// dloss * (exp(x - lse) - onehot) in fp32, and written back rounded once, by the same
// thread, so dlogits may alias logits (no pointer is __restrict__). Padding columns and
// ignored rows are written with zeros (an ignored row's logits are not read). No fp32
// probabilities are ever stored.
//
// Both row kernels use 16-byte vectors when Vs % 8 == 0 and the buffers are 16-byte
// aligned (every row then starts aligned; the chunk holding column Vv - 1 ends at or
// before Vs, so a vector never leaves the row), else scalar accesses.
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

// threads per row: a 50k-column row is ~6300 chunks of 8, ~12 per thread, and 512
// threads let 4 blocks share an SM for latency hiding
#define CE_THREADS 512
#define CE_COMBINE_THREADS 256

// stats (N,3) overwritten; logits (N,Vs) with Vv real columns; targets (N).
// One block per row.
template <bool VEC>
__global__ void __launch_bounds__(CE_THREADS)
    crossentropy_stats_kernel(float *stats, const bf16 *logits, const int32_t *targets,
                              int v0, int Vv, int Vs) {
    __shared__ float sh[32];
    const int n = blockIdx.x;
    const bf16 *row = logits + (size_t)n * Vs;                   // (Vs)
    float m = -INFINITY, s = 0.0f;                               // this thread's columns
    if (VEC) {
        const int nchunks = (Vv + 7) / 8;
        #pragma unroll 4
        for (int k = threadIdx.x; k < nchunks; k += blockDim.x) {
            x128<bf16> v = load128(row + 8 * k);
            float x[8], cm = -INFINITY;
            #pragma unroll
            for (int i = 0; i < 8; i++) {
                x[i] = 8 * k + i < Vv ? __bfloat162float(v[i]) : -INFINITY;
                cm = fmaxf(cm, x[i]);
            }
            if (cm > m) {
                s *= expf(m - cm);                               // first chunk: 0 * 0
                m = cm;
            }
            if (m > -INFINITY) {
                #pragma unroll
                for (int i = 0; i < 8; i++) s += expf(x[i] - m); // masked: exp(-inf) = 0
            }
        }
    } else {
        for (int c = threadIdx.x; c < Vv; c += blockDim.x) {
            float x = __bfloat162float(row[c]);
            if (x > m) {
                s = s * expf(m - x) + 1.0f;
                m = x;
            } else if (m > -INFINITY) {
                s += expf(x - m);
            }
        }
    }
    const float M = block_max(m, sh);
    const float S = block_sum(m > -INFINITY ? s * expf(m - M) : 0.0f, sh);
    if (threadIdx.x == 0) {
        int ix = targets[n] - v0;                                // target's column here
        float *st = stats + (size_t)n * 3;                       // (3)
        st[0] = M;
        st[1] = S;
        st[2] = ix >= 0 && ix < Vv ? __bfloat162float(row[ix]) : 0.0f;
    }
}

// losses (N), lse (N) overwritten; stats (P,N,3) in rank order; targets (N).
// One thread per row, in double as kernels/cpu/crossentropy.c.
__global__ void crossentropy_combine_kernel(float *losses, float *lse, const float *stats,
                                            const int32_t *targets, int N, int P) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    double M = -INFINITY;
    for (int p = 0; p < P; p++) {
        double m = stats[((size_t)p * N + n) * 3];
        M = m > M ? m : M;
    }
    double S = 0.0, Z = 0.0;
    for (int p = 0; p < P; p++) {                                // rank order
        const float *st = stats + ((size_t)p * N + n) * 3;      // (3)
        Z += st[2];
        if (st[0] == -INFINITY) continue;                        // shard without real columns
        S += (double)st[1] * exp((double)st[0] - M);
    }
    double l = M + log(S);                                       // S >= 1 unless V = 0
    lse[n] = (float)l;
    losses[n] = targets[n] >= 0 ? (float)(l - Z) : 0.0f;
}

// dlogits (N,Vs) overwritten, may alias logits (N,Vs); lse (N); targets (N).
// One block per row.
template <bool VEC>
__global__ void __launch_bounds__(CE_THREADS)
    crossentropy_backward_kernel(bf16 *dlogits, const bf16 *logits, const float *lse,
                                 const int32_t *targets, int v0, int Vv, int Vs,
                                 float dloss) {
    const int n = blockIdx.x;
    const bf16 *in = logits + (size_t)n * Vs;                    // (Vs)
    bf16 *out = dlogits + (size_t)n * Vs;                        // (Vs)
    const int target = targets[n];
    const bool keep = target >= 0;                               // row not ignored
    const int ix = target - v0;                                  // target's column here
    const float lse_n = keep ? lse[n] : 0.0f;
    if (VEC) {
        const int nchunks = Vs / 8;
        #pragma unroll 4
        for (int k = threadIdx.x; k < nchunks; k += blockDim.x) {
            const int c0 = 8 * k;
            x128<bf16> o;
            if (keep && c0 < Vv) {
                x128<bf16> v = load128(in + c0);
                #pragma unroll
                for (int i = 0; i < 8; i++) {
                    float d = 0.0f;
                    if (c0 + i < Vv) {
                        d = dloss * expf(__bfloat162float(v[i]) - lse_n);
                        if (c0 + i == ix) d -= dloss;
                    }
                    o[i] = __float2bfloat16_rn(d);
                }
            } else {
                #pragma unroll
                for (int i = 0; i < 8; i++) o[i] = __float2bfloat16_rn(0.0f);
            }
            store128(out + c0, o);
        }
    } else {
        for (int c = threadIdx.x; c < Vs; c += blockDim.x) {
            float d = 0.0f;
            if (keep && c < Vv) {
                d = dloss * expf(__bfloat162float(in[c]) - lse_n);
                if (c == ix) d -= dloss;
            }
            out[c] = __float2bfloat16_rn(d);
        }
    }
}

void cuda_crossentropy_stats(float *stats, const anv_act *logits_, const int32_t *targets,
                             int N, int v0, int Vv, int Vs) {
    // stats (N,3) overwritten, targets (N)
    const bf16 *logits = (const bf16 *)logits_;                  // (N,Vs), Vv real columns
    if (N <= 0) return;
    if (Vs % 8 == 0 && aligned16(logits)) {
        crossentropy_stats_kernel<true><<<N, CE_THREADS, 0, cuda_stream_compute>>>(
            stats, logits, targets, v0, Vv, Vs);
    } else {
        crossentropy_stats_kernel<false><<<N, CE_THREADS, 0, cuda_stream_compute>>>(
            stats, logits, targets, v0, Vv, Vs);
    }
    CUDA_LAUNCH_CHECK();
}

void cuda_crossentropy_combine(float *losses, float *lse, const float *stats,
                               const int32_t *targets, int N, int P) {
    // losses (N), lse (N) overwritten; stats (P,N,3); targets (N)
    if (N <= 0) return;
    crossentropy_combine_kernel<<<cuda_blocks((size_t)N, CE_COMBINE_THREADS),
                                  CE_COMBINE_THREADS, 0, cuda_stream_compute>>>(
        losses, lse, stats, targets, N, P);
    CUDA_LAUNCH_CHECK();
}

void cuda_crossentropy_backward(anv_act *dlogits_, const anv_act *logits_, const float *lse,
                                const int32_t *targets, int N, int v0, int Vv, int Vs,
                                float dloss) {
    // lse (N), targets (N)
    bf16 *dlogits = (bf16 *)dlogits_;                            // (N,Vs) overwritten
    const bf16 *logits = (const bf16 *)logits_;                  // (N,Vs), may be dlogits
    if (N <= 0 || Vs <= 0) return;
    if (Vs % 8 == 0 && aligned16(logits) && aligned16(dlogits)) {
        crossentropy_backward_kernel<true><<<N, CE_THREADS, 0, cuda_stream_compute>>>(
            dlogits, logits, lse, targets, v0, Vv, Vs, dloss);
    } else {
        crossentropy_backward_kernel<false><<<N, CE_THREADS, 0, cuda_stream_compute>>>(
            dlogits, logits, lse, targets, v0, Vv, Vs, dloss);
    }
    CUDA_LAUNCH_CHECK();
}
