// kernels/cuda/attention_tile.cuh: the tensor-core building blocks of attention.cu.
//
// The PTX wrappers (cp.async, ldmatrix, mma.sync.m16n8k16 with bf16 operands and fp32
// accumulators, in the register layouts of the PTX manual), the 64-row tile geometry,
// the copy of a tile into padded shared rows, RoPE on a shared tile, the ldmatrix
// addressing of A and B operands, the products a warp forms on its 16 rows, and the
// start of a key tile in the query-tile kernels. attention.cu's top comment says how
// the kernels use them; only attention.cu includes this file (tests/emu/cu2emu.py
// inlines it and swaps the PTX block for host versions).
#ifndef ANVIL_KERNELS_CUDA_ATTENTION_TILE_CUH
#define ANVIL_KERNELS_CUDA_ATTENTION_TILE_CUH

#include <stdint.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

// ---- PTX helpers (sm_80+) -----------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
// 16 bytes global -> shared, asynchronous; src_bytes = 0 writes zeros (rows past T).
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async4(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}
// Four 8x8 bf16 matrices; lane l gives the row address of matrix l/8, row l%8.
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)) : "memory");
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)) : "memory");
}
// c (16x8 fp32) += a (16x16 bf16, row) * b (16x8 bf16, col).
// Layouts (g = lane/4, t = lane%4): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..),
// a3 (g+8, 2t+8..); b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g); c0,c1 (g, 2t..2t+1),
// c2,c3 (g+8, 2t..2t+1).
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// ---- end of PTX helpers (tests/emu/cu2emu.py swaps the block above for host versions)

// p[0] += x, p[1] += y in global memory; p 8-byte aligned. One vector atomic on sm_90.
__device__ __forceinline__ void atomic_add2(float *p, float x, float y) {
#if __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2 *>(p), make_float2(x, y));
#else
    atomicAdd(p, x);
    atomicAdd(p + 1, y);
#endif
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);   // .x (low half) = lo
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}

// Tile geometry of the tensor-core kernels.
#define ATT_TILE 64            // rows of a query tile = rows of a key tile
#define ATT_THREADS 128        // 4 warps x 16 rows
#define ATT_PAD 8              // bf16 of padding per shared row (16 bytes)

// Rows [row0, row0+64) of a (T, D) matrix whose rows are `stride` elements apart, into
// shared rows of D + ATT_PAD; rows at or past T are zero-filled.
template <int D>
__device__ __forceinline__ void load_tile(bf16 *s, const bf16 *g, size_t stride, int row0,
                                          int T) {
    constexpr int CH = D / 8;                          // 16-byte chunks per row
    for (int c = threadIdx.x; c < ATT_TILE * CH; c += ATT_THREADS) {
        int r = c / CH, ch = c % CH, t = row0 + r;
        int ok = t < T;
        const bf16 *src = g + (size_t)(ok ? t : 0) * stride + ch * 8;
        cp_async16(s + r * (D + ATT_PAD) + ch * 8, src, ok ? 16 : 0);
    }
}

// RoPE on a tile: rows [row0, row0+64) of a shared (64, D + ATT_PAD) tile, those before
// T, rotated in place to their positions (pairs i, i + D/2; tables (maxT, D/2)). The
// caller synchronizes before and after.
template <int D>
__device__ __forceinline__ void rope_tile(bf16 *s, int row0, int T, const float *rc,
                                          const float *rs) {
    constexpr int H2 = D / 2, LD = D + ATT_PAD;
    for (int e = threadIdx.x; e < ATT_TILE * H2; e += ATT_THREADS) {
        int r = e / H2, i = e % H2, t = row0 + r;
        if (t >= T) continue;
        bf16 *x = s + r * LD;                                      // (D)
        float c = rc[(size_t)t * H2 + i], sn = rs[(size_t)t * H2 + i];
        float a = __bfloat162float(x[i]), d = __bfloat162float(x[i + H2]);
        x[i] = __float2bfloat16(a * c - d * sn);
        x[i + H2] = __float2bfloat16(d * c + a * sn);
    }
}

// A operand (16x16) at rows r0.., cols c0.. of a row-major shared matrix with ld
// elements per row; the same addressing serves the B operands of two n-tiles read
// transposed (ldsm_x4_t on a (k, n) row-major matrix).
__device__ __forceinline__ const bf16 *ldsm_a_addr(const bf16 *s, int ld, int r0, int c0,
                                                   int lane) {
    return s + (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + c0 + (lane >> 4) * 8;
}
// B operands of two n-tiles (n0.., n0+8..) x k-chunk k0.. from an (n, k) row-major
// shared matrix (non-transposed ldmatrix); regs 0,1 = tile n0, regs 2,3 = tile n0+8.
__device__ __forceinline__ const bf16 *ldsm_b_addr(const bf16 *s, int ld, int n0, int k0,
                                                   int lane) {
    return s + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8;
}

// The A operand (16x16, bf16) of key chunk kc from fp32 accumulators acc (16 rows x 64
// columns per warp, n-tiles of 8): the accumulator layout of n-tiles 2kc and 2kc+1 is the
// A layout, so P (or dS) goes from one product into the next without shared memory.
__device__ __forceinline__ void acc_to_a(uint32_t a[4], const float (*acc)[4], int kc) {
    a[0] = pack_bf16(acc[2 * kc][0], acc[2 * kc][1]);
    a[1] = pack_bf16(acc[2 * kc][2], acc[2 * kc][3]);
    a[2] = pack_bf16(acc[2 * kc + 1][0], acc[2 * kc + 1][1]);
    a[3] = pack_bf16(acc[2 * kc + 1][2], acc[2 * kc + 1][3]);
}

// acc (16 x D, D/8 n-tiles) += A (16x16) . M[k0..k0+16) (rows of a row-major (., D)
// shared matrix with ld elements per row, read transposed by ldmatrix).
template <int D>
__device__ __forceinline__ void mma_a_rows(float (*acc)[4], const uint32_t a[4], const bf16 *m,
                                           int ld, int k0, int lane) {
    #pragma unroll
    for (int dp = 0; dp < D / 16; dp++) {
        uint32_t bb[4];
        ldsm_x4_t(bb, ldsm_a_addr(m, ld, k0, dp * 16, lane));
        mma_bf16(acc[2 * dp], a, bb[0], bb[1]);
        mma_bf16(acc[2 * dp + 1], a, bb[2], bb[3]);
    }
}

// acc (16 x 64) = X[r0..r0+16) . Y[0..64)^T for two row-major (., D) shared tiles X and
// Y (ld D + ATT_PAD): the scores of one warp's 16 rows against a 64-row tile.
template <int D>
__device__ __forceinline__ void mma_abt(float (*acc)[4], const bf16 *x, const bf16 *y, int r0,
                                        int lane) {
    constexpr int LD = D + ATT_PAD, NT = ATT_TILE / 8;
    #pragma unroll
    for (int i = 0; i < NT; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
    #pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        uint32_t a[4];
        ldsm_x4(a, ldsm_a_addr(x, LD, r0, kk * 16, lane));
        #pragma unroll
        for (int np = 0; np < NT / 2; np++) {
            uint32_t bb[4];
            ldsm_x4(bb, ldsm_b_addr(y, LD, np * 16, kk * 16, lane));
            mma_bf16(acc[2 * np], a, bb[0], bb[1]);
            mma_bf16(acc[2 * np + 1], a, bb[2], bb[3]);
        }
    }
}

// A gradient w.r.t. a rotated row (accumulators acc, 16 x D per warp, of which this
// thread holds row half r: columns i*8 + 2*t4 + e) turned into the gradient w.r.t. the
// unrotated row (RoPE's transpose; column c pairs with c + D/2, which the same thread
// holds in n-tile i + D/16); cr, sr: the row's (D/2) cos / sin.
template <int D>
__device__ __forceinline__ void rope_back_acc(float (*acc)[4], int r, int t4, const float *cr,
                                              const float *sr) {
    constexpr int DT = D / 8;
    #pragma unroll
    for (int i = 0; i < DT / 2; i++) {
        #pragma unroll
        for (int e = 0; e < 2; e++) {
            const int c = i * 8 + 2 * t4 + e;
            const float x = acc[i][2 * r + e], y = acc[i + DT / 2][2 * r + e];
            acc[i][2 * r + e] = x * cr[c] + y * sr[c];
            acc[i + DT / 2][2 * r + e] = y * cr[c] - x * sr[c];
        }
    }
}

// The start of key tile j in the query-tile kernels (attn_fwd_mma, attn_bwd_dq_mma): wait
// for tile j (K and V double-buffered, tile 0 queued with Q before the loop), rotate it,
// and Q at j = 0, when ROPE, take the warp's Q fragments at j = 0, and queue the copy of
// tile j + 1 into the other buffers. The Q tile has MT * 64 rows (MT m-tiles per warp:
// rows mt * 64 + warp * 16 ..); m-tile mt's k-chunk kk lands in qf[mt * D/16 + kk].
template <int D, bool ROPE, int MT = 1>
__device__ __forceinline__ void kv_tile_begin(int j, int nkv, bf16 *sQ, bf16 *sK, bf16 *sV,
                                              uint32_t (*qf)[4], const bf16 *kg,
                                              const bf16 *vg, int ld, int q0, int T,
                                              const float *rc, const float *rs, int warp,
                                              int lane) {
    constexpr int LD = D + ATT_PAD;
    cp_async_wait_all();
    __syncthreads();                            // tile j landed; tile j-1's buffers free
    if (ROPE) {
        if (j == 0)
            for (int mt = 0; mt < MT; mt++)
                rope_tile<D>(sQ + mt * ATT_TILE * LD, q0 + mt * ATT_TILE, T, rc, rs);
        rope_tile<D>(sK + (j & 1) * ATT_TILE * LD, j * ATT_TILE, T, rc, rs);
        __syncthreads();                        // rotated tiles seen by every warp
    }
    if (j == 0) {
        for (int mt = 0; mt < MT; mt++)
            for (int kk = 0; kk < D / 16; kk++)
                ldsm_x4(qf[mt * (D / 16) + kk],
                        ldsm_a_addr(sQ, LD, mt * ATT_TILE + warp * 16, kk * 16, lane));
    }
    if (j + 1 < nkv) {
        const int nb = ((j + 1) & 1) * ATT_TILE * LD, row0 = (j + 1) * ATT_TILE;
        load_tile<D>(sK + nb, kg, ld, row0, T);
        load_tile<D>(sV + nb, vg, ld, row0, T);
    }
    cp_async_commit();
}

#endif  // ANVIL_KERNELS_CUDA_ATTENTION_TILE_CUH
