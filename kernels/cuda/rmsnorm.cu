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

#include "kernels/cuda/cuda_common.cuh"

#define NORM_MAX_THREADS 256          // threads per row block; registers allow VPT <= 8
#define NORM_MAX_C (8 * 8 * NORM_MAX_THREADS)   // 8 channels x VPT 8 x 256 threads
#define RMS_PARTIAL_FLOATS (1 << 21)  // 8 MiB: (G, C) partials, G = 256 at C = 8192
#define RMS_MIN_ROWS_PER_BLOCK 8      // partials stay ~1/8 of the backward's traffic
#define RMS_REDUCE_Y 32               // partial-sum slices per reduce block (32 x 32 threads)

static __device__ float rmsnorm_partials[RMS_PARTIAL_FLOATS];

// ---- chunk access ---------------------------------------------------------------------
// Chunk c0..c0+7 of a row of C channels as fp32; with VEC one 16-byte load (C % 8 == 0,
// row aligned), else element loads with channels >= C read as 0. Requires c0 < C.
template <bool VEC>
__device__ __forceinline__ void rms_load8(float *dst, const bf16 *row, int c0, int C) {
    if (VEC) {
        x128<bf16> v = load128(row + c0);
        #pragma unroll
        for (int i = 0; i < 8; i++) dst[i] = __bfloat162float(v[i]);
    } else {
        #pragma unroll
        for (int i = 0; i < 8; i++) dst[i] = c0 + i < C ? __bfloat162float(row[c0 + i]) : 0.0f;
    }
}

// Stores chunk c0..c0+7 (channels < C) rounded to bf16. Requires c0 < C.
template <bool VEC>
__device__ __forceinline__ void rms_store8(bf16 *row, int c0, int C, const float *src) {
    if (VEC) {
        x128<bf16> v;
        #pragma unroll
        for (int i = 0; i < 8; i++) v[i] = __float2bfloat16_rn(src[i]);
        store128(row + c0, v);
    } else {
        #pragma unroll
        for (int i = 0; i < 8; i++)
            if (c0 + i < C) row[c0 + i] = __float2bfloat16_rn(src[i]);
    }
}

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
    float ss = 0.0f;
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        const int c0 = 8 * (threadIdx.x + j * blockDim.x);
        #pragma unroll
        for (int i = 0; i < 8; i++) x[j][i] = 0.0f;
        if (c0 < C) {
            rms_load8<VEC>(x[j], a + off, c0, C);
            if (RES) {
                float y[8];
                rms_load8<VEC>(y, b + off, c0, C);
                #pragma unroll
                for (int i = 0; i < 8; i++)
                    x[j][i] = __bfloat162float(__float2bfloat16_rn(x[j][i] + y[i]));
                rms_store8<VEC>(res + off, c0, C, x[j]);
            }
        }
        #pragma unroll
        for (int i = 0; i < 8; i++) ss += x[j][i] * x[j][i];     // masked channels are 0
    }
    const float s = 1.0f / sqrtf(block_sum(ss, sh) / C + eps);
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        const int c0 = 8 * (threadIdx.x + j * blockDim.x);
        if (c0 < C) {
            float w[8], o[8];
            rms_load8<VEC>(w, weight, c0, C);
            #pragma unroll
            for (int i = 0; i < 8; i++) o[i] = x[j][i] * s * w[i];
            rms_store8<VEC>(out + off, c0, C, o);
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
                rms_load8<VEC>(x[j], inp + off, c0, C);
                rms_load8<VEC>(dy, dout + off, c0, C);
                rms_load8<VEC>(w, weight, c0, C);
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
                rms_load8<VEC>(dx, dinp + off, c0, C);
                #pragma unroll
                for (int i = 0; i < 8; i++) dx[i] += s * wdy[j][i] - k * x[j][i];
                rms_store8<VEC>(dinp + off, c0, C, dx);
            }
        }
    }
    if (part == NULL) return;
    float *pw = part + (size_t)blockIdx.x * C;                   // (C) partial dweight
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        const int c0 = 8 * (threadIdx.x + j * blockDim.x);
        #pragma unroll
        for (int i = 0; i < 8; i++)
            if (c0 + i < C) pw[c0 + i] = dw[j][i];
    }
}

// dst (C) += sum over g = 0..G-1 of part (G,C)[g]. Block (32, RMS_REDUCE_Y): 32
// channels, slice y sums g = y, y + RMS_REDUCE_Y, ... in order, then one thread per
// channel adds the slices in order y = 0... Deterministic.
__global__ void __launch_bounds__(32 * RMS_REDUCE_Y)
    rmsnorm_partials_reduce_kernel(float *dst, const float *part, int G, int C) {
    __shared__ float sh[RMS_REDUCE_Y][33];                       // +1: no bank conflicts
    const int c = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (c < C)
        for (int g = threadIdx.y; g < G; g += RMS_REDUCE_Y) acc += part[(size_t)g * C + c];
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float total = 0.0f;
        for (int y = 0; y < RMS_REDUCE_Y; y++) total += sh[y][threadIdx.x];
        dst[c] += total;
    }
}

// ---- host ----------------------------------------------------------------------------------
// Chunks of 8 channels per thread (VPT, the smallest of 1,2,4,8 that fits) and threads
// per row block (a multiple of 32, at most NORM_MAX_THREADS) for rows of C channels.
static void rmsnorm_shape(int C, int *vpt, int *threads) {
    if (C > NORM_MAX_C)
        anv_fatal(__FILE__, __LINE__, "rmsnorm", "C > 16384 channels is not supported");
    int nchunks = (C + 7) / 8;
    int v = 1;
    while (v * NORM_MAX_THREADS < nchunks) v *= 2;
    int t = (nchunks + v - 1) / v;
    *vpt = v;
    *threads = (t + 31) / 32 * 32;
}

// The arguments of a forward launch (res and b NULL for the plain forward).
typedef struct rmsnorm_fwd_args {
    bf16 *res, *out;                  // (N,C)
    float *rstd;                      // (N)
    const bf16 *a, *b;                // (N,C)
    const bf16 *weight;               // (C)
    int N, C;
    float eps;
} rmsnorm_fwd_args;

template <int VPT, bool VEC, bool RES>
static void rmsnorm_forward_launch(int threads, const rmsnorm_fwd_args &p) {
    rmsnorm_forward_kernel<VPT, VEC, RES><<<p.N, threads, 0, cuda_stream_compute>>>(
        p.res, p.out, p.rstd, p.a, p.b, p.weight, p.C, p.eps);
    CUDA_LAUNCH_CHECK();
}

template <int VPT, bool RES>
static void rmsnorm_forward_vec(bool vec, int threads, const rmsnorm_fwd_args &p) {
    if (vec)
        rmsnorm_forward_launch<VPT, true, RES>(threads, p);
    else
        rmsnorm_forward_launch<VPT, false, RES>(threads, p);
}

template <bool RES>
static void rmsnorm_forward_any(const rmsnorm_fwd_args &p) {
    if (p.N <= 0 || p.C <= 0) return;
    int vpt, threads;
    rmsnorm_shape(p.C, &vpt, &threads);
    // aligned16(NULL) holds: the unused res, b of the plain forward do not matter
    bool vec = p.C % 8 == 0 && aligned16(p.res) && aligned16(p.out) && aligned16(p.a) &&
               aligned16(p.b) && aligned16(p.weight);
    switch (vpt) {
    case 1: rmsnorm_forward_vec<1, RES>(vec, threads, p); break;
    case 2: rmsnorm_forward_vec<2, RES>(vec, threads, p); break;
    case 4: rmsnorm_forward_vec<4, RES>(vec, threads, p); break;
    default: rmsnorm_forward_vec<8, RES>(vec, threads, p); break;
    }
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
    // G: enough blocks to fill the device, at most what the scratch holds, at least
    // RMS_MIN_ROWS_PER_BLOCK rows per block, at most N
    long G = (long)(per_sm > 0 ? per_sm : 1) * (cuda_sm_count > 0 ? cuda_sm_count : 1);
    float *part = NULL;                                          // (G,C)
    if (p.dweight != NULL) {
        part = rmsnorm_partials_ptr();
        long cap = RMS_PARTIAL_FLOATS / (long)p.C;               // >= 128 as C <= 16384
        long by_rows = (p.N + RMS_MIN_ROWS_PER_BLOCK - 1) / RMS_MIN_ROWS_PER_BLOCK;
        G = G < cap ? G : cap;
        G = G < by_rows ? G : by_rows;
    }
    G = G < p.N ? G : p.N;
    rmsnorm_backward_kernel<VPT, VEC><<<(unsigned)G, threads, 0, cuda_stream_compute>>>(
        p.dinp, part, p.dout, p.inp, p.weight, p.rstd, p.N, p.C);
    CUDA_LAUNCH_CHECK();
    if (part != NULL) {
        dim3 grid((p.C + 31) / 32), block(32, RMS_REDUCE_Y);
        rmsnorm_partials_reduce_kernel<<<grid, block, 0, cuda_stream_compute>>>(
            p.dweight, part, (int)G, p.C);
        CUDA_LAUNCH_CHECK();
    }
}

template <int VPT>
static void rmsnorm_backward_vec(bool vec, int threads, const rmsnorm_bwd_args &p) {
    if (vec)
        rmsnorm_backward_launch<VPT, true>(threads, p);
    else
        rmsnorm_backward_launch<VPT, false>(threads, p);
}

void cuda_rmsnorm_backward(anv_act *dinp, float *dweight, const anv_act *dout,
                           const anv_act *inp, const anv_act *weight, const float *rstd,
                           int N, int C) {
    // dinp (N,C) += or NULL, dweight (C) += or NULL; dout, inp (N,C); weight (C); rstd (N)
    rmsnorm_bwd_args p = {(bf16 *)dinp, dweight, (const bf16 *)dout, (const bf16 *)inp,
                          (const bf16 *)weight, rstd, N, C};
    if (N <= 0 || C <= 0 || (dinp == NULL && dweight == NULL)) return;
    int vpt, threads;
    rmsnorm_shape(C, &vpt, &threads);
    bool vec = C % 8 == 0 && aligned16(p.dinp) && aligned16(p.dout) && aligned16(p.inp) &&
               aligned16(p.weight);
    switch (vpt) {
    case 1: rmsnorm_backward_vec<1>(vec, threads, p); break;
    case 2: rmsnorm_backward_vec<2>(vec, threads, p); break;
    case 4: rmsnorm_backward_vec<4>(vec, threads, p); break;
    default: rmsnorm_backward_vec<8>(vec, threads, p); break;
    }
}
