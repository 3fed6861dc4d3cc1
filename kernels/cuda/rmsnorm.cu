// kernels/cuda/rmsnorm.cu: RMSNorm (Llama), bf16 cuda.
//
// Formulas are those of kernels/cpu/rmsnorm.c: per row rstd = 1/sqrt(mean(x^2) + eps),
// out = x * rstd * w; backward with r = rstd:
//   dinp += r * w * dout - x * r^3 * mean(dout * w * x),  dweight += sum over rows of
//   dout * x * r.
//
// The kernels have the shape of kernels/cuda/layernorm.cu (read its comment for the
// details): one block per row (forward) or per fixed stride of rows (backward); thread
// i holds chunks i, i + blockDim, ... of 8 channels (VPT in {1,2,4,8}) in fp32
// registers, so a row is read once; blockDim <= 256, hence C <= 16384; 16-byte vectors
// when C % 8 == 0 and the bf16 pointers are aligned, element accesses with the last
// chunk masked otherwise. The fused residual stores res = a + b rounded to bf16 and
// normalizes the rounded values (res may alias a or b: read before written, same
// thread). dweight is reduced deterministically: G blocks keep per-channel partial sums
// in registers over their rows, write them to a static 8 MiB scratch (G, C) of this
// file, and a second kernel adds the G partials in a fixed order into dweight. All
// math fp32, one rounding to bf16 per stored element.
#include <math.h>

#include "kernels/cuda/norm_common.cuh"

#define RMS_PARTIAL_FLOATS (1 << 21)  // 8 MiB: (G, C) partials, G = 256 at C = 8192

static __device__ float rmsnorm_partials[RMS_PARTIAL_FLOATS];

// ---- forward -------------------------------------------------------------------------------
// One block per row n = blockIdx.x. out (N,C); rstd (N); weight (C).
// RES: res (N,C) = a + b (may alias a or b) and the row is res; else the row is a (N,C)
// (res and b unused).
template <int VPT, bool VEC, bool RES>
__global__ void __launch_bounds__(NORM_MAX_THREADS)
    rmsnorm_forward_kernel(bf16 *res, bf16 *out, float *rstd, const bf16 *a, const bf16 *b,
                           const bf16 *weight, int C, float eps) {
    __shared__ float sh[32];
    const size_t off = (size_t)blockIdx.x * C;                   // row offset
    float x[VPT][8];                                             // this thread's chunks
    norm_row_load<VPT, VEC, RES>(x, res, a, b, off, C);
    float ss = 0.0f;
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        #pragma unroll
        for (int i = 0; i < 8; i++) ss += x[j][i] * x[j][i];     // masked channels are 0
    }
    const float s = 1.0f / sqrtf(block_sum(ss, sh) / C + eps);
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        const int c0 = 8 * (threadIdx.x + j * blockDim.x);
        if (c0 < C) {
            float w[8], o[8];
            norm_load8<VEC>(w, weight, c0, C);
            #pragma unroll
            for (int i = 0; i < 8; i++) o[i] = x[j][i] * s * w[i];
            norm_store8<VEC>(out + off, c0, C, o);
        }
    }
    if (threadIdx.x == 0) rstd[blockIdx.x] = s;
}

// ---- backward ------------------------------------------------------------------------------
// Block g of G = gridDim.x handles rows g, g + G, ... of dout, inp (N,C) with rstd (N),
// weight (C). dinp (N,C) += or NULL. part (G,C) or NULL: overwritten with this block's
// partial dweight sums.
template <int VPT, bool VEC>
__global__ void __launch_bounds__(NORM_MAX_THREADS)
    rmsnorm_backward_kernel(bf16 *dinp, float *part, const bf16 *dout, const bf16 *inp,
                            const bf16 *weight, const float *rstd, int N, int C) {
    __shared__ float sh[32];
    float dw[VPT][8];                                            // partial sums, own channels
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        #pragma unroll
        for (int i = 0; i < 8; i++) dw[j][i] = 0.0f;
    }
    for (int n = blockIdx.x; n < N; n += gridDim.x) {            // same trip count block-wide
        const size_t off = (size_t)n * C;
        const float s = rstd[n];
        float x[VPT][8], wdy[VPT][8];                            // inp, weight * dout
        float dot = 0.0f;                                        // sum dout * w * x
        #pragma unroll
        for (int j = 0; j < VPT; j++) {
            const int c0 = 8 * (threadIdx.x + j * blockDim.x);
            #pragma unroll
            for (int i = 0; i < 8; i++) x[j][i] = wdy[j][i] = 0.0f;
            if (c0 < C) {
                float dy[8], w[8];
                norm_load8<VEC>(x[j], inp + off, c0, C);
                norm_load8<VEC>(dy, dout + off, c0, C);
                norm_load8<VEC>(w, weight, c0, C);
                #pragma unroll
                for (int i = 0; i < 8; i++) {                    // masked channels are 0
                    wdy[j][i] = w[i] * dy[i];
                    dot += wdy[j][i] * x[j][i];
                    dw[j][i] += dy[i] * x[j][i] * s;
                }
            }
        }
        if (dinp == NULL) continue;                              // uniform: a kernel argument
        const float k = s * s * s * block_sum(dot, sh) / C;
        #pragma unroll
        for (int j = 0; j < VPT; j++) {
            const int c0 = 8 * (threadIdx.x + j * blockDim.x);
            if (c0 < C) {
                float dx[8];
                norm_load8<VEC>(dx, dinp + off, c0, C);
                #pragma unroll
                for (int i = 0; i < 8; i++) dx[i] += s * wdy[j][i] - k * x[j][i];
                norm_store8<VEC>(dinp + off, c0, C, dx);
            }
        }
    }
    if (part != NULL) norm_partial_store<VPT>(part + (size_t)blockIdx.x * C, dw, C);
}

// ---- host ----------------------------------------------------------------------------------
// The arguments of a forward launch (res and b NULL for the plain forward).
typedef struct rmsnorm_fwd_args {
    bf16 *res, *out;                  // (N,C)
    float *rstd;                      // (N)
    const bf16 *a, *b;                // (N,C)
    const bf16 *weight;               // (C)
    int N, C;
    float eps;
} rmsnorm_fwd_args;

template <bool RES>
static void rmsnorm_forward_any(const rmsnorm_fwd_args &p) {
    if (p.N <= 0 || p.C <= 0) return;
    int vpt, threads;
    norm_shape(p.C, "rmsnorm", &vpt, &threads);
    // aligned16(NULL) holds: the unused res, b of the plain forward do not matter
    bool vec = p.C % 8 == 0 && aligned16(p.res) && aligned16(p.out) && aligned16(p.a) &&
               aligned16(p.b) && aligned16(p.weight);
    norm_dispatch(vpt, vec, [&](auto V, auto E) {
        rmsnorm_forward_kernel<decltype(V)::value, decltype(E)::value, RES>
            <<<p.N, threads, 0, cuda_stream_compute>>>(p.res, p.out, p.rstd, p.a, p.b,
                                                       p.weight, p.C, p.eps);
        CUDA_LAUNCH_CHECK();
    });
}

void cuda_rmsnorm_forward(anv_act *out, float *rstd, const anv_act *inp,
                          const anv_act *weight, int N, int C, float eps) {
    // out (N,C), rstd (N), inp (N,C), weight (C)
    rmsnorm_fwd_args p = {NULL, (bf16 *)out, rstd, (const bf16 *)inp, NULL,
                          (const bf16 *)weight, N, C, eps};
    rmsnorm_forward_any<false>(p);
}

void cuda_rmsnorm_residual_forward(anv_act *res, anv_act *out, float *rstd, const anv_act *a,
                                   const anv_act *b, const anv_act *weight, int N, int C,
                                   float eps) {
    // res (N,C) = a + b (may alias a or b), out (N,C), rstd (N), weight (C)
    rmsnorm_fwd_args p = {(bf16 *)res, (bf16 *)out, rstd, (const bf16 *)a, (const bf16 *)b,
                          (const bf16 *)weight, N, C, eps};
    rmsnorm_forward_any<true>(p);
}

// Device address of the partials scratch (looked up once).
static float *rmsnorm_partials_ptr(void) {
    static float *p = NULL;
    if (p == NULL) CUDA_CHECK(cudaGetSymbolAddress((void **)&p, rmsnorm_partials));
    return p;
}

// The arguments of a backward launch.
typedef struct rmsnorm_bwd_args {
    bf16 *dinp;                       // (N,C) += or NULL
    float *dweight;                   // (C) += or NULL
    const bf16 *dout, *inp;           // (N,C)
    const bf16 *weight;               // (C)
    const float *rstd;                // (N)
    int N, C;
} rmsnorm_bwd_args;

template <int VPT, bool VEC>
static void rmsnorm_backward_launch(int threads, const rmsnorm_bwd_args &p) {
    static int cached_threads = 0, per_sm = 0;                  // per instantiation
    if (threads != cached_threads) {
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &per_sm, rmsnorm_backward_kernel<VPT, VEC>, threads, 0));
        cached_threads = threads;
    }
    const int partials = p.dweight != NULL;
    float *part = partials ? rmsnorm_partials_ptr() : NULL;      // (1,G,C)
    long G = norm_backward_blocks(per_sm, p.N, p.C, 1, RMS_PARTIAL_FLOATS, partials);
    rmsnorm_backward_kernel<VPT, VEC><<<(unsigned)G, threads, 0, cuda_stream_compute>>>(
        p.dinp, part, p.dout, p.inp, p.weight, p.rstd, p.N, p.C);
    CUDA_LAUNCH_CHECK();
    if (part != NULL) norm_partials_reduce(p.dweight, NULL, part, 1, G, p.C);
}

void cuda_rmsnorm_backward(anv_act *dinp, float *dweight, const anv_act *dout,
                           const anv_act *inp, const anv_act *weight, const float *rstd,
                           int N, int C) {
    // dinp (N,C) += or NULL, dweight (C) += or NULL; dout, inp (N,C); weight (C); rstd (N)
    rmsnorm_bwd_args p = {(bf16 *)dinp, dweight, (const bf16 *)dout, (const bf16 *)inp,
                          (const bf16 *)weight, rstd, N, C};
    if (N <= 0 || C <= 0 || (dinp == NULL && dweight == NULL)) return;
    int vpt, threads;
    norm_shape(C, "rmsnorm", &vpt, &threads);
    bool vec = C % 8 == 0 && aligned16(p.dinp) && aligned16(p.dout) && aligned16(p.inp) &&
               aligned16(p.weight);
    norm_dispatch(vpt, vec, [&](auto V, auto E) {
        rmsnorm_backward_launch<decltype(V)::value, decltype(E)::value>(threads, p);
    });
}
