// kernels/cuda/layernorm.cu: LayerNorm with weight and bias (GPT-2), bf16 cuda.
//
// Formulas are those of kernels/cpu/layernorm.c: per row, mean, biased variance,
// rstd = 1/sqrt(var + eps), out = (x - mean) * rstd * w + b; backward (llm.c's form)
//   dnorm = w * dout,  dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
//   dweight += sum over rows of dout * norm,  dbias += sum over rows of dout.
//
// Layout of the row kernels: one block per row (forward) or per group of rows taken in
// a fixed stride (backward). The row is split in chunks of 8 channels (one 16-byte
// vector); thread i holds chunks i, i + blockDim, ... (VPT of them, VPT in {1,2,4,8})
// in fp32 registers, so the row is read from memory once and both row reductions
// (block_sum) work on registers: the variance is the centered two-pass form, as on the
// cpu. blockDim is at most 256 threads, so C <= 8 * 8 * 256 = 16384 channels (VPT = 8
// may spill registers to L1 in the backward, C > 8192); a larger C is an internal error.
// When C % 8 == 0 and every bf16 pointer is 16-byte aligned, chunks are loaded and
// stored as vectors; otherwise element by element, with the channels past C of the last
// chunk masked out (C need not be a multiple of 8).
//
// Fused residual: res = a + b is rounded to bf16 and stored, and the rounded values are
// normalized, so mean/rstd describe exactly the res the backward will read. res may
// alias a or b: each element is read (from a and b) before it is written, by the same
// thread.
//
// Backward, dweight/dbias without atomics, deterministic: G blocks each walk rows
// n = block, block + G, ... and keep their channels' partial sums in registers (a thread
// owns the same channels on every row); each block writes its partials (2, G, C) to a
// fixed scratch buffer and a second kernel adds, for each channel, the G partials in
// order g = 0..G-1 into dweight/dbias. G depends only on C, N and the device, so a
// configuration gives the same bits run after run. The scratch is a static 16 MiB device
// array of this file (allocated with the module, before any step, never in the step
// loop); it is shared by all calls, which is safe because every op runs in order on
// cuda_stream_compute. All math fp32; bf16 rounding once per stored element (dinp: old
// value + gradient in fp32, rounded once).
#include <math.h>

#include "kernels/cuda/norm_common.cuh"

#define LN_PARTIAL_FLOATS (1 << 22)   // 16 MiB: (2, G, C) partials, G = 256 at C = 8192

static __device__ float layernorm_partials[LN_PARTIAL_FLOATS];

// ---- forward -------------------------------------------------------------------------------
// One block per row n = blockIdx.x. out (N,C); mean, rstd (N); weight, bias (C).
// RES: res (N,C) = a + b (may alias a or b) and the row is res; else the row is a (N,C)
// (res and b unused).
template <int VPT, bool VEC, bool RES>
__global__ void __launch_bounds__(NORM_MAX_THREADS)
    layernorm_forward_kernel(bf16 *res, bf16 *out, float *mean, float *rstd, const bf16 *a,
                             const bf16 *b, const bf16 *weight, const bf16 *bias, int C,
                             float eps) {
    __shared__ float sh[32];
    const size_t off = (size_t)blockIdx.x * C;                   // row offset
    float x[VPT][8];                                             // this thread's chunks
    norm_row_load<VPT, VEC, RES>(x, res, a, b, off, C);
    float sum = 0.0f;
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        #pragma unroll
        for (int i = 0; i < 8; i++) sum += x[j][i];              // masked channels are 0
    }
    const float m = block_sum(sum, sh) / C;
    float var = 0.0f;
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        const int c0 = 8 * (threadIdx.x + j * blockDim.x);
        if (c0 < C) {
            #pragma unroll
            for (int i = 0; i < 8; i++) {
                float d = x[j][i] - m;
                if (VEC || c0 + i < C) var += d * d;
            }
        }
    }
    const float s = 1.0f / sqrtf(block_sum(var, sh) / C + eps);  // biased variance
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        const int c0 = 8 * (threadIdx.x + j * blockDim.x);
        if (c0 < C) {
            float w[8], bb[8], o[8];
            norm_load8<VEC>(w, weight, c0, C);
            norm_load8<VEC>(bb, bias, c0, C);
            #pragma unroll
            for (int i = 0; i < 8; i++) o[i] = (x[j][i] - m) * s * w[i] + bb[i];
            norm_store8<VEC>(out + off, c0, C, o);
        }
    }
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = m;
        rstd[blockIdx.x] = s;
    }
}

// ---- backward ------------------------------------------------------------------------------
// Block g of G = gridDim.x handles rows g, g + G, ... of dout, inp (N,C) with mean,
// rstd (N), weight (C). dinp (N,C) += or NULL. part (2,G,C) or NULL: overwritten with
// this block's partial dweight (part[0]) and dbias (part[1]) sums.
template <int VPT, bool VEC>
__global__ void __launch_bounds__(NORM_MAX_THREADS)
    layernorm_backward_kernel(bf16 *dinp, float *part, const bf16 *dout, const bf16 *inp,
                              const bf16 *weight, const float *mean, const float *rstd, int N,
                              int C) {
    __shared__ float sh[32];
    float dw[VPT][8], db[VPT][8];                                // partial sums, own channels
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        #pragma unroll
        for (int i = 0; i < 8; i++) dw[j][i] = db[j][i] = 0.0f;
    }
    for (int n = blockIdx.x; n < N; n += gridDim.x) {            // same trip count block-wide
        const size_t off = (size_t)n * C;
        const float m = mean[n], s = rstd[n];
        float norm[VPT][8], dnorm[VPT][8];
        float sum_dnorm = 0.0f, sum_dnorm_norm = 0.0f;
        #pragma unroll
        for (int j = 0; j < VPT; j++) {
            const int c0 = 8 * (threadIdx.x + j * blockDim.x);
            #pragma unroll
            for (int i = 0; i < 8; i++) norm[j][i] = dnorm[j][i] = 0.0f;
            if (c0 < C) {
                float x[8], dy[8], w[8];
                norm_load8<VEC>(x, inp + off, c0, C);
                norm_load8<VEC>(dy, dout + off, c0, C);
                norm_load8<VEC>(w, weight, c0, C);
                #pragma unroll
                for (int i = 0; i < 8; i++) {
                    if (!VEC && c0 + i >= C) continue;           // masked channel
                    norm[j][i] = (x[i] - m) * s;
                    dnorm[j][i] = w[i] * dy[i];
                    sum_dnorm += dnorm[j][i];
                    sum_dnorm_norm += dnorm[j][i] * norm[j][i];
                    dw[j][i] += dy[i] * norm[j][i];
                    db[j][i] += dy[i];
                }
            }
        }
        if (dinp == NULL) continue;                              // uniform: a kernel argument
        const float mean_dnorm = block_sum(sum_dnorm, sh) / C;
        const float mean_dnorm_norm = block_sum(sum_dnorm_norm, sh) / C;
        #pragma unroll
        for (int j = 0; j < VPT; j++) {
            const int c0 = 8 * (threadIdx.x + j * blockDim.x);
            if (c0 < C) {
                float dx[8];
                norm_load8<VEC>(dx, dinp + off, c0, C);
                #pragma unroll
                for (int i = 0; i < 8; i++)
                    dx[i] += s * (dnorm[j][i] - mean_dnorm - norm[j][i] * mean_dnorm_norm);
                norm_store8<VEC>(dinp + off, c0, C, dx);
            }
        }
    }
    if (part == NULL) return;
    norm_partial_store<VPT>(part + (size_t)blockIdx.x * C, dw, C);                 // dweight
    norm_partial_store<VPT>(part + ((size_t)gridDim.x + blockIdx.x) * C, db, C);  // dbias
}

// ---- host ----------------------------------------------------------------------------------
// The arguments of a forward launch (res and b NULL for the plain forward).
typedef struct layernorm_fwd_args {
    bf16 *res, *out;                  // (N,C)
    float *mean, *rstd;               // (N)
    const bf16 *a, *b;                // (N,C)
    const bf16 *weight, *bias;        // (C)
    int N, C;
    float eps;
} layernorm_fwd_args;

template <bool RES>
static void layernorm_forward_any(const layernorm_fwd_args &p) {
    if (p.N <= 0 || p.C <= 0) return;
    int vpt, threads;
    norm_shape(p.C, "layernorm", &vpt, &threads);
    // aligned16(NULL) holds: the unused res, b of the plain forward do not matter
    bool vec = p.C % 8 == 0 && aligned16(p.res) && aligned16(p.out) && aligned16(p.a) &&
               aligned16(p.b) && aligned16(p.weight) && aligned16(p.bias);
    norm_dispatch(vpt, vec, [&](auto V, auto E) {
        layernorm_forward_kernel<decltype(V)::value, decltype(E)::value, RES>
            <<<p.N, threads, 0, cuda_stream_compute>>>(p.res, p.out, p.mean, p.rstd, p.a, p.b,
                                                       p.weight, p.bias, p.C, p.eps);
        CUDA_LAUNCH_CHECK();
    });
}

void cuda_layernorm_forward(anv_act *out, float *mean, float *rstd, const anv_act *inp,
                            const anv_act *weight, const anv_act *bias, int N, int C,
                            float eps) {
    // out (N,C), mean (N), rstd (N), inp (N,C), weight (C), bias (C)
    layernorm_fwd_args p = {NULL, (bf16 *)out, mean, rstd, (const bf16 *)inp, NULL,
                            (const bf16 *)weight, (const bf16 *)bias, N, C, eps};
    layernorm_forward_any<false>(p);
}

void cuda_layernorm_residual_forward(anv_act *res, anv_act *out, float *mean, float *rstd,
                                     const anv_act *a, const anv_act *b,
                                     const anv_act *weight, const anv_act *bias, int N,
                                     int C, float eps) {
    // res (N,C) = a + b (may alias a or b), out (N,C), mean, rstd (N), weight, bias (C)
    layernorm_fwd_args p = {(bf16 *)res, (bf16 *)out, mean, rstd, (const bf16 *)a,
                            (const bf16 *)b, (const bf16 *)weight, (const bf16 *)bias, N, C,
                            eps};
    layernorm_forward_any<true>(p);
}

// Device address of the partials scratch (looked up once).
static float *layernorm_partials_ptr(void) {
    static float *p = NULL;
    if (p == NULL) CUDA_CHECK(cudaGetSymbolAddress((void **)&p, layernorm_partials));
    return p;
}

// The arguments of a backward launch.
typedef struct layernorm_bwd_args {
    bf16 *dinp;                       // (N,C) += or NULL
    float *dweight, *dbias;           // (C) += or NULL
    const bf16 *dout, *inp;           // (N,C)
    const bf16 *weight;               // (C)
    const float *mean, *rstd;         // (N)
    int N, C;
} layernorm_bwd_args;

template <int VPT, bool VEC>
static void layernorm_backward_launch(int threads, const layernorm_bwd_args &p) {
    static int cached_threads = 0, per_sm = 0;                  // per instantiation
    if (threads != cached_threads) {
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &per_sm, layernorm_backward_kernel<VPT, VEC>, threads, 0));
        cached_threads = threads;
    }
    const int partials = p.dweight != NULL || p.dbias != NULL;
    float *part = partials ? layernorm_partials_ptr() : NULL;    // (2,G,C)
    long G = norm_backward_blocks(per_sm, p.N, p.C, 2, LN_PARTIAL_FLOATS, partials);
    layernorm_backward_kernel<VPT, VEC><<<(unsigned)G, threads, 0, cuda_stream_compute>>>(
        p.dinp, part, p.dout, p.inp, p.weight, p.mean, p.rstd, p.N, p.C);
    CUDA_LAUNCH_CHECK();
    if (part != NULL) norm_partials_reduce(p.dweight, p.dbias, part, 2, G, p.C);
}

void cuda_layernorm_backward(anv_act *dinp, float *dweight, float *dbias,
                             const anv_act *dout, const anv_act *inp, const anv_act *weight,
                             const float *mean, const float *rstd, int N, int C) {
    // dinp (N,C) += or NULL, dweight (C) += or NULL, dbias (C) += or NULL;
    // dout, inp (N,C); weight (C); mean, rstd (N)
    layernorm_bwd_args p = {(bf16 *)dinp, dweight, dbias, (const bf16 *)dout,
                            (const bf16 *)inp, (const bf16 *)weight, mean, rstd, N, C};
    if (N <= 0 || C <= 0 || (dinp == NULL && dweight == NULL && dbias == NULL)) return;
    int vpt, threads;
    norm_shape(C, "layernorm", &vpt, &threads);
    bool vec = C % 8 == 0 && aligned16(p.dinp) && aligned16(p.dout) && aligned16(p.inp) &&
               aligned16(p.weight);
    norm_dispatch(vpt, vec, [&](auto V, auto E) {
        layernorm_backward_launch<decltype(V)::value, decltype(E)::value>(threads, p);
    });
}
