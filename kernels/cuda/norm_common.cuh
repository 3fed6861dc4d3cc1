// kernels/cuda/norm_common.cuh: what layernorm.cu and rmsnorm.cu share.
//
// Both normalizations have the same shape (layernorm.cu's comment has the details):
// one block per row (forward) or per fixed stride of rows (backward); thread i holds
// chunks i, i + blockDim, ... of 8 channels (VPT in {1,2,4,8}) in fp32 registers;
// 16-byte vectors when C % 8 == 0 and the bf16 pointers are aligned (VEC), element
// accesses with the last chunk masked otherwise. Weight (and bias) gradients are
// reduced without atomics: G blocks write per-channel partial sums (K, G, C) to a
// scratch buffer, and norm_partials_reduce_kernel adds the G partials of each of the K
// gradients in a fixed order.
#ifndef ANVIL_KERNELS_CUDA_NORM_COMMON_CUH
#define ANVIL_KERNELS_CUDA_NORM_COMMON_CUH

#include <type_traits>

#include "kernels/cuda/cuda_common.cuh"

#define NORM_MAX_THREADS 256          // threads per row block; registers allow VPT <= 8
#define NORM_MAX_C (8 * 8 * NORM_MAX_THREADS)   // 8 channels x VPT 8 x 256 threads
#define NORM_MIN_ROWS_PER_BLOCK 8     // partials stay ~1/8 of the backward's traffic
#define NORM_REDUCE_Y 32              // partial-sum slices per reduce block (32 x 32 threads)

// Chunk c0..c0+7 of a row of C channels as fp32; with VEC one 16-byte load (C % 8 == 0,
// row aligned), else element loads with channels >= C read as 0. Requires c0 < C.
template <bool VEC>
__device__ __forceinline__ void norm_load8(float *dst, const bf16 *row, int c0, int C) {
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
__device__ __forceinline__ void norm_store8(bf16 *row, int c0, int C, const float *src) {
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

// The forward's row n (offset off = n * C) into this thread's chunks x (channels >= C
// read as 0). RES: the row is a + b, rounded to bf16 and stored to res (which may alias
// a or b); else it is a (res and b unused).
template <int VPT, bool VEC, bool RES>
__device__ __forceinline__ void norm_row_load(float (&x)[VPT][8], bf16 *res, const bf16 *a,
                                              const bf16 *b, size_t off, int C) {
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        const int c0 = 8 * (threadIdx.x + j * blockDim.x);
        #pragma unroll
        for (int i = 0; i < 8; i++) x[j][i] = 0.0f;
        if (c0 < C) {
            norm_load8<VEC>(x[j], a + off, c0, C);
            if (RES) {
                float y[8];
                norm_load8<VEC>(y, b + off, c0, C);
                #pragma unroll
                for (int i = 0; i < 8; i++)
                    x[j][i] = __bfloat162float(__float2bfloat16_rn(x[j][i] + y[i]));
                norm_store8<VEC>(res + off, c0, C, x[j]);
            }
        }
    }
}

// This thread's channels of a block's partial sums v into row (C) of the partials.
template <int VPT>
__device__ __forceinline__ void norm_partial_store(float *row, const float (&v)[VPT][8],
                                                   int C) {
    #pragma unroll
    for (int j = 0; j < VPT; j++) {
        const int c0 = 8 * (threadIdx.x + j * blockDim.x);
        #pragma unroll
        for (int i = 0; i < 8; i++)
            if (c0 + i < C) row[c0 + i] = v[j][i];
    }
}

// dst (C) += sum over g = 0..G-1 of part (K,G,C)[j][g], with j = blockIdx.y < K and
// dst = dst0 (j = 0) or dst1 (j = 1), either may be NULL. Block (32, NORM_REDUCE_Y): 32
// channels, slice y sums g = y, y + NORM_REDUCE_Y, ... in order; the slices are then
// added in order y = 0.. by one thread per channel. Deterministic.
static __global__ void __launch_bounds__(32 * NORM_REDUCE_Y)
    norm_partials_reduce_kernel(float *dst0, float *dst1, const float *part, int G, int C) {
    __shared__ float sh[NORM_REDUCE_Y][33];                      // +1: no bank conflicts
    float *dst = blockIdx.y == 0 ? dst0 : dst1;
    if (dst == NULL) return;                                     // uniform over the block
    const int c = blockIdx.x * 32 + threadIdx.x;
    const float *p = part + (size_t)blockIdx.y * G * C;          // (G,C)
    float acc = 0.0f;
    if (c < C)
        for (int g = threadIdx.y; g < G; g += NORM_REDUCE_Y) acc += p[(size_t)g * C + c];
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float total = 0.0f;
        for (int y = 0; y < NORM_REDUCE_Y; y++) total += sh[y][threadIdx.x];
        dst[c] += total;
    }
}

// Chunks of 8 channels per thread (VPT, the smallest of 1,2,4,8 that fits) and threads
// per row block (a multiple of 32, at most NORM_MAX_THREADS) for rows of C channels.
// `op` names the caller in the internal error for C > NORM_MAX_C.
static inline void norm_shape(int C, const char *op, int *vpt, int *threads) {
    if (C > NORM_MAX_C) anv_fatal(__FILE__, __LINE__, op, "C > 16384 channels is not supported");
    int nchunks = (C + 7) / 8;
    int v = 1;
    while (v * NORM_MAX_THREADS < nchunks) v *= 2;
    int t = (nchunks + v - 1) / v;
    *vpt = v;
    *threads = (t + 31) / 32 * 32;
}

// Calls f(VPT, VEC) with VPT = std::integral_constant<int, vpt> (vpt in 1, 2, 4, 8) and
// VEC = std::integral_constant<bool, vec>: the kernel instance for a row shape.
template <typename F>
static inline void norm_dispatch(int vpt, bool vec, F &&f) {
    auto with_vec = [&](auto v) {
        if (vec) f(v, std::true_type{});
        else f(v, std::false_type{});
    };
    switch (vpt) {
    case 1: with_vec(std::integral_constant<int, 1>{}); break;
    case 2: with_vec(std::integral_constant<int, 2>{}); break;
    case 4: with_vec(std::integral_constant<int, 4>{}); break;
    default: with_vec(std::integral_constant<int, 8>{}); break;
    }
}

// Blocks G of a backward over N rows: enough to fill the device (per_sm resident per
// multiprocessor); with partials (K gradients into a scratch of cap_floats), at most
// what the scratch holds and at least NORM_MIN_ROWS_PER_BLOCK rows per block; at most N.
static inline long norm_backward_blocks(int per_sm, int N, int C, int K, long cap_floats,
                                        int partials) {
    long G = (long)(per_sm > 0 ? per_sm : 1) * (cuda_sm_count > 0 ? cuda_sm_count : 1);
    if (partials) {
        long cap = cap_floats / ((long)K * C);                   // >= 128 as C <= 16384
        long by_rows = (N + NORM_MIN_ROWS_PER_BLOCK - 1) / NORM_MIN_ROWS_PER_BLOCK;
        G = G < cap ? G : cap;
        G = G < by_rows ? G : by_rows;
    }
    return G < N ? G : N;
}

// Adds the partials (K,G,C) into dst0 (and dst1 when K = 2).
static inline void norm_partials_reduce(float *dst0, float *dst1, const float *part, int K,
                                        long G, int C) {
    dim3 grid((C + 31) / 32, K), block(32, NORM_REDUCE_Y);
    norm_partials_reduce_kernel<<<grid, block, 0, cuda_stream_compute>>>(dst0, dst1, part,
                                                                        (int)G, C);
    CUDA_LAUNCH_CHECK();
}

#endif
