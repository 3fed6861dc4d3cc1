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
//
// fused (P = 1, training): one block per row does all three, reading the row from
// memory once. Its first pass loads the row in 16-byte vectors, keeps each in shared
// memory and folds it into the thread's online max and sum as the stats kernel does;
// the block then forms M, S, lse and the loss exactly as stats + combine would (the
// same fp32 block reduction, the same double formula); the second pass reads the row
// back from shared memory and writes the gradient. Global memory sees one read and one
// write of the row (the three kernels: two reads and one write). Used when the row fits
// in shared memory with two blocks per multiprocessor, so one block's loads overlap the
// other's arithmetic (GPT-2's 50304 columns: 98 KiB; an H100 has 228 KiB per SM);
// otherwise (Llama 3's 128256 columns), or without vector access, the three kernels run.
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

// threads per row: a 50k-column row is ~6300 chunks of 8, ~12 per thread, and 512
// threads let 4 blocks share an SM for latency hiding
#define CE_THREADS 512
#define CE_COMBINE_THREADS 256

// Folds chunk v (columns c0 .. c0+7 of a row with Vv real columns) into a thread's
// online max m and sum s = sum exp(x - m) over its columns.
__device__ __forceinline__ void ce_fold(const x128<bf16> &v, int c0, int Vv, float &m,
                                        float &s) {
    float x[8], cm = -INFINITY;
    #pragma unroll
    for (int i = 0; i < 8; i++) {
        x[i] = c0 + i < Vv ? __bfloat162float(v[i]) : -INFINITY;
        cm = fmaxf(cm, x[i]);
    }
    if (cm > m) {
        s *= expf(m - cm);                                       // first chunk: 0 * 0
        m = cm;
    }
    if (m > -INFINITY) {
        #pragma unroll
        for (int i = 0; i < 8; i++) s += expf(x[i] - m);         // masked: exp(-inf) = 0
    }
}

// The gradient of chunk v (columns c0 .. c0+7): dloss * (exp(x - lse) - [column == ix])
// on real columns, 0 on padding; rounded once.
__device__ __forceinline__ x128<bf16> ce_grad(const x128<bf16> &v, int c0, int Vv, int ix,
                                              float lse, float dloss) {
    x128<bf16> o;
    #pragma unroll
    for (int i = 0; i < 8; i++) {
        float d = 0.0f;
        if (c0 + i < Vv) {
            d = dloss * expf(__bfloat162float(v[i]) - lse);
            if (c0 + i == ix) d -= dloss;
        }
        o[i] = __float2bfloat16_rn(d);
    }
    return o;
}

__device__ __forceinline__ x128<bf16> ce_zeros() {
    x128<bf16> o;
    #pragma unroll
    for (int i = 0; i < 8; i++) o[i] = __float2bfloat16_rn(0.0f);
    return o;
}

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
        for (int k = threadIdx.x; k < nchunks; k += blockDim.x)
            ce_fold(load128(row + 8 * k), 8 * k, Vv, m, s);
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
            store128(out + c0, keep && c0 < Vv ? ce_grad(load128(in + c0), c0, Vv, ix, lse_n,
                                                         dloss)
                                               : ce_zeros());
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

// dlogits (N,Vs) overwritten, may alias logits (N,Vs); losses (N) overwritten; targets
// (N). One block per row; dynamic shared memory holds the row (Vs bf16). Vs % 8 == 0,
// 16-byte aligned rows.
__global__ void __launch_bounds__(CE_THREADS)
    crossentropy_fused_kernel(bf16 *dlogits, float *losses, const bf16 *logits,
                              const int32_t *targets, int Vv, int Vs, float dloss) {
    extern __shared__ __align__(16) unsigned char ce_smem[];
    bf16 *srow = (bf16 *)ce_smem;                                // (Vs)
    __shared__ float sh[32];
    __shared__ float lse_sh;
    const int n = blockIdx.x;
    const bf16 *row = logits + (size_t)n * Vs;                   // (Vs)
    const int nreal = (Vv + 7) / 8, nchunks = Vs / 8;            // chunks with real columns
    float m = -INFINITY, s = 0.0f;                               // as the stats kernel
    #pragma unroll 4
    for (int k = threadIdx.x; k < nreal; k += blockDim.x) {
        x128<bf16> v = load128(row + 8 * k);
        store128(srow + 8 * k, v);
        ce_fold(v, 8 * k, Vv, m, s);
    }
    const float M = block_max(m, sh);                            // ends with a barrier:
    const float S = block_sum(m > -INFINITY ? s * expf(m - M) : 0.0f, sh);   // srow complete
    const int target = targets[n];
    if (threadIdx.x == 0) {
        // crossentropy_combine_kernel with P = 1, from the stats {M, S, z}
        float z = target >= 0 && target < Vv ? __bfloat162float(srow[target]) : 0.0f;
        double Sd = M == -INFINITY ? 0.0 : (double)S * exp((double)M - (double)M);
        double l = (double)M + log(Sd);
        lse_sh = (float)l;
        losses[n] = target >= 0 ? (float)(l - (double)z) : 0.0f;
    }
    __syncthreads();
    const float lse_n = lse_sh;
    const bool keep = target >= 0;
    bf16 *out = dlogits + (size_t)n * Vs;                        // (Vs)
    #pragma unroll 4
    for (int k = threadIdx.x; k < nchunks; k += blockDim.x) {   // the backward kernel's
        const int c0 = 8 * k;
        store128(out + c0, keep && c0 < Vv ? ce_grad(load128(srow + c0), c0, Vv, target,
                                                     lse_n, dloss)
                                           : ce_zeros());
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

void cuda_crossentropy_fused(anv_act *dlogits_, float *losses, const anv_act *logits_,
                             const int32_t *targets, int N, int Vv, int Vs, float dloss) {
    // losses (N) overwritten, targets (N)
    bf16 *dlogits = (bf16 *)dlogits_;                            // (N,Vs) overwritten
    const bf16 *logits = (const bf16 *)logits_;                  // (N,Vs), may be dlogits
    if (N <= 0 || Vs <= 0) return;
    const size_t smem = (size_t)Vs * sizeof(bf16);
    // blocks of this kernel one multiprocessor holds at smem bytes each (per Vs seen)
    static int last_vs = -1, per_sm = 0;
    if (Vs % 8 == 0 && aligned16(logits) && aligned16(dlogits) && Vs != last_vs) {
        per_sm = 0;
        // the attribute plus the kernel's static shared memory (sh, lse_sh: 132 bytes)
        // may not pass the opt-in limit, or cudaFuncSetAttribute fails
        if (smem + 256 <= (size_t)cuda_smem_optin) {
            if (smem > 48 * 1024)
                CUDA_CHECK(cudaFuncSetAttribute(crossentropy_fused_kernel,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                (int)smem));
            CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                &per_sm, crossentropy_fused_kernel, CE_THREADS, smem));
        }
        last_vs = Vs;
    }
    if (Vs % 8 == 0 && aligned16(logits) && aligned16(dlogits) && per_sm >= 2) {
        crossentropy_fused_kernel<<<N, CE_THREADS, smem, cuda_stream_compute>>>(
            dlogits, losses, logits, targets, Vv, Vs, dloss);
        CUDA_LAUNCH_CHECK();
        return;
    }
    // the three kernels, with the stats and lse in a scratch of this file's
    static void *scratch = NULL;
    static size_t scratch_bytes = 0;
    float *stats = (float *)cuda_scratch(&scratch, &scratch_bytes,
                                         (size_t)N * 4 * sizeof(float));   // (N,3), lse (N)
    float *lse = stats + (size_t)N * 3;
    cuda_crossentropy_stats(stats, logits_, targets, N, 0, Vv, Vs);
    cuda_crossentropy_combine(losses, lse, stats, targets, N, 1);
    cuda_crossentropy_backward(dlogits_, logits_, lse, targets, N, 0, Vv, Vs, dloss);
}
