// kernels/cuda/attention.cu: causal self-attention with grouped-query heads, bf16 cuda.
//
// Same function as kernels/cpu/attention.c (query head h reads kv head h / (NH/KVH),
// scores scaled by 1/sqrt(HS), causal mask), computed flash-attention style: the T x T
// score matrix never exists in memory. Tiles of queries and keys meet in shared
// memory, the scores of a tile live in registers, and the softmax is computed online
// in fp32 (running max m and running sum l per query row, earlier partial results
// rescaled by exp(m_old - m_new) whenever the max grows).
//
// state (B,NH,T) holds one number per query row, the natural log-sum-exp of its scaled
// scores, lse = m + log(l). That is all the backward needs: it recomputes the
// probabilities as P = exp(s - lse) (FlashAttention-2).
//
// Tensor-core path (HS in {32, 64, 96, 128}, every pointer 16-byte aligned; its
// building blocks in kernels/cuda/attention_tile.cuh): bf16 mma
// (mma.sync.m16n8k16, fp32 accumulators, the register layouts of the PTX manual),
// operands moved from shared memory with ldmatrix, tiles copied in with cp.async into
// two buffers so the next tile arrives while the current one is computed. Tiles are
// 64 x 64; a block has 4 warps, each owning 16 rows of the tile (the forward for head
// sizes 32 and 64: two query tiles per block, 16 rows of each per warp, so that each
// K and V fragment read from shared memory feeds two MMAs; attn_fwd_mma's comment).
// Rows are padded by 8 bf16 (16 bytes) in shared memory so that the 8 row addresses
// of one ldmatrix fall into distinct banks.
//   forward  (grid: query block x B*NH, heaviest query blocks first): Q fragments in
//            registers; for each key block up to the diagonal, S = Q K^T into
//            registers, mask (diagonal block only), online softmax, O += P V with P
//            taken straight from the S accumulators (the accumulator layout of a
//            16x16 pair of n-tiles is the A-operand layout). out = O / l.
//   backward 1. Dv (B,NH,T) = rowsum(dout * out), the softmax backward's
//               sum_j p_j dp_j, one pass over dout and out.
//            2. grid: key block x KVH x B, heaviest (first) key blocks first. A block
//               holds its K and V tile and loops over every query head of its group
//               and every query block at or after its key block; per step it forms
//               S^T = K Q^T, P^T = exp(S^T - lse), dV += P^T dO, dP^T = V dO^T,
//               dS^T = P^T (dP^T - Dv), dK += dS^T Q, and dQ += dS K through fp32
//               atomics into an accumulator (B,T,NH,HS) in scratch. dK and dV stay in
//               registers for the whole loop: one block owns them, so no atomics.
//            3. dq (bf16) = the dQ accumulator.
// dq, dk and dv are OVERWRITTEN (ops.h): nothing zeroes them first or reads them.
// Generic path (attention_generic.cuh; any other HS, or unaligned pointers; the tiny
// test shapes): one warp per query row (forward, dq) or key row (dk, dv), keys or
// queries visited in tiles of 32 with the same online softmax and the same lse; CUDA
// cores, fp32. Its backward recomputes p in both the dk/dv and the dq kernel, so it
// needs no atomics.
//
// scratch (attention_scratch_floats): the dQ accumulator (B,T,NH,HS) then Dv (B,NH,T).
//
// Layout (ops.h): q, k and v are column blocks of one qkv row per position (NH, then
// KVH, then KVH heads of HS), so the kernels read them, and write dq, dk and dv into
// dqkv, with the row stride ld = (NH + 2 KVH) HS; out, dout and the dQ accumulator are
// (B,T,NH,HS).
//
// RoPE (ops.h: q and k arrive unrotated, with the cos/sin tables, for Llama) is applied
// where q and k are read, so no rotated copy goes through global memory. Tensor-core
// path: a tile of Q or K is rotated in place in shared memory after it lands (one pass
// and one __syncthreads; forward: the Q tile once and every K tile; backward: the K
// tile once and every Q tile), so the MMAs see rotated bf16 operands. The gradients
// come out w.r.t. the rotated q and k and are rotated back (the transpose) on their
// way out: dK in registers before its store (a thread holds both halves of each pair,
// columns c and c + D/2 being fragments i and i + D/16), dQ in the pass that converts
// the fp32 accumulator into dq. Generic path: each element is rotated as it is read
// (fp32, no rounding), and dq, dk rotated back as they are written.
//
// Numerics: inputs are bf16, products and every sum fp32. P is rounded to bf16 before
// the P V (and P^T dO, dS^T Q, dS K) products, as in FlashAttention; expect a
// normalized error of a few 1e-3 against the fp32 cpu reference, dominated by that
// rounding and by the bf16 output. The dq accumulation order of the atomics varies
// from run to run, so dq is not bitwise reproducible on the tensor-core path.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/attention_generic.cuh"
#include "kernels/cuda/attention_tile.cuh"
#include "kernels/cuda/cuda_common.cuh"

#define ATT_LOG2E 1.4426950408889634f

// ---- forward, tensor cores ----------------------------------------------------------
// MT m-tiles per warp: a block takes MT query tiles of 64 rows (MT * 64 rows), warp w
// owning rows w*16.. of each. MT = 2 (head sizes 32 and 64) loads each K and V fragment
// from shared memory once for two MMAs instead of one, which halves the kernel's
// shared-memory reads per FLOP (with one m-tile per warp, 4 warps each reading every
// K and V fragment make ldmatrix, not the tensor cores, the bound); FlashAttention-2
// does the same (128-row query blocks of 4 warps). Per row, the keys are visited in the
// same order with the same arithmetic either way, so MT = 1 and MT = 2 give the same
// bits (the op test checks it). MT = 1 for head sizes 96 and 128, whose accumulators
// would not fit the registers twice.
template <int D, bool ROPE, int MT>
__global__ void __launch_bounds__(ATT_THREADS)
attn_fwd_mma(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
             int ld, const float *rc, const float *rs, int B, int T, int NH, int KVH,
             float scale) {
    // out (B,T,NH,D), lse (B,NH,T); q, k, v: NH, KVH, KVH heads of D per position,
    // positions ld apart; rc, rs (maxT, D/2) when ROPE
    constexpr int LD = D + ATT_PAD;
    constexpr int KT = D / 16;                  // k-chunks of Q K^T
    constexpr int NT = ATT_TILE / 8;            // n-tiles of S
    constexpr int DT = D / 8;                   // n-tiles of O
    extern __shared__ __align__(16) unsigned char att_smem[];
    bf16 *sQ = (bf16 *)att_smem;                // (MT * 64, LD)
    bf16 *sK = sQ + MT * ATT_TILE * LD;         // 2 x (64, LD)
    bf16 *sV = sK + 2 * ATT_TILE * LD;          // 2 x (64, LD)

    const int nq = (T + MT * ATT_TILE - 1) / (MT * ATT_TILE);
    const int nk = (T + ATT_TILE - 1) / ATT_TILE;
    const int bh = blockIdx.x % (B * NH);
    const int qb = nq - 1 - (int)(blockIdx.x / (B * NH));
    const int b = bh / NH, h = bh % NH, kvh = h / (NH / KVH);
    const int q0 = qb * MT * ATT_TILE;
    const bf16 *qg = q + (size_t)b * T * ld + (size_t)h * D;     // (T, D) rows ld apart
    const bf16 *kg = k + (size_t)b * T * ld + (size_t)kvh * D;   // (T, D) rows ld apart
    const bf16 *vg = v + (size_t)b * T * ld + (size_t)kvh * D;   // (T, D) rows ld apart

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t4 = lane & 3;
    const float sl2 = scale * ATT_LOG2E;        // exp(x*scale) = exp2(x*sl2)

    #pragma unroll
    for (int mt = 0; mt < MT; mt++)
        load_tile<D>(sQ + mt * ATT_TILE * LD, qg, ld, q0 + mt * ATT_TILE, T);
    load_tile<D>(sK, kg, ld, 0, T);
    load_tile<D>(sV, vg, ld, 0, T);
    cp_async_commit();

    uint32_t qf[MT * KT][4];                    // m-tile mt's k-chunk kk: qf[mt * KT + kk]
    float o[MT][DT][4];
    float m[MT][2], l[MT][2];                   // running max (raw scores), rows g, g+8;
                                                // running sum, this thread's columns
    #pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        #pragma unroll
        for (int i = 0; i < DT; i++)
            o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
    }

    // key tiles 0 .. the last query tile's diagonal (causal), and none past T
    const int nkv = MT * qb + MT < nk ? MT * qb + MT : nk;
    for (int j = 0; j < nkv; j++) {
        kv_tile_begin<D, ROPE, MT>(j, nkv, sQ, sK, sV, qf, kg, vg, ld, q0, T, rc, rs, warp,
                                   lane);
        const bf16 *cK = sK + (j & 1) * ATT_TILE * LD;
        const bf16 *cV = sV + (j & 1) * ATT_TILE * LD;
        // m-tile mt is query tile MT qb + mt: it sees key tile j up to its diagonal, and
        // not at all when its rows start at or past T (block-uniform, so no divergence)
        bool act[MT];
        #pragma unroll
        for (int mt = 0; mt < MT; mt++)
            act[mt] = j <= MT * qb + mt && (MT * qb + mt) * ATT_TILE < T;

        // S = Q K^T (16 x 64 per warp and m-tile), each K fragment loaded once
        float s[MT][NT][4];
        #pragma unroll
        for (int mt = 0; mt < MT; mt++)
            #pragma unroll
            for (int i = 0; i < NT; i++)
                s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.0f;
        #pragma unroll
        for (int kk = 0; kk < KT; kk++) {
            #pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t bb[4];
                ldsm_x4(bb, ldsm_b_addr(cK, LD, np * 16, kk * 16, lane));
                #pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    if (!act[mt]) continue;
                    mma_bf16(s[mt][2 * np], qf[mt * KT + kk], bb[0], bb[1]);
                    mma_bf16(s[mt][2 * np + 1], qf[mt * KT + kk], bb[2], bb[3]);
                }
            }
        }
        #pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            if (!act[mt]) continue;
            if (j == MT * qb + mt) {            // diagonal tile: key col > query row
                #pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    #pragma unroll
                    for (int c = 0; c < 4; c++) {
                        int col = nt * 8 + 2 * t4 + (c & 1);
                        int row = warp * 16 + g + (c >> 1) * 8;
                        if (col > row) s[mt][nt][c] = -INFINITY;
                    }
            }
            // online softmax; rows g (c = 0,1) and g+8 (c = 2,3), a quad shares a row
            #pragma unroll
            for (int r = 0; r < 2; r++) {
                float mx = m[mt][r];
                #pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                float mu = mx == -INFINITY ? 0.0f : mx;         // a fully masked row stays 0
                float alpha = exp2f((m[mt][r] - mu) * sl2);     // m = -inf: 0
                float msc = mu * sl2, sum = 0.0f;
                m[mt][r] = mx;
                #pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    float p0 = exp2f(fmaf(s[mt][nt][2 * r], sl2, -msc));
                    float p1 = exp2f(fmaf(s[mt][nt][2 * r + 1], sl2, -msc));
                    s[mt][nt][2 * r] = p0;
                    s[mt][nt][2 * r + 1] = p1;
                    sum += p0 + p1;
                }
                l[mt][r] = l[mt][r] * alpha + sum;
                #pragma unroll
                for (int i = 0; i < DT; i++) {
                    o[mt][i][2 * r] *= alpha;
                    o[mt][i][2 * r + 1] *= alpha;
                }
            }
        }

        // O += P V, each V fragment loaded once (the order of mma_a_rows)
        #pragma unroll
        for (int kc = 0; kc < ATT_TILE / 16; kc++) {
            uint32_t a[MT][4];
            #pragma unroll
            for (int mt = 0; mt < MT; mt++)
                if (act[mt]) acc_to_a(a[mt], s[mt], kc);
            #pragma unroll
            for (int dp = 0; dp < D / 16; dp++) {
                uint32_t bb[4];
                ldsm_x4_t(bb, ldsm_a_addr(cV, LD, kc * 16, dp * 16, lane));
                #pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    if (!act[mt]) continue;
                    mma_bf16(o[mt][2 * dp], a[mt], bb[0], bb[1]);
                    mma_bf16(o[mt][2 * dp + 1], a[mt], bb[2], bb[3]);
                }
            }
        }
    }

    #pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        #pragma unroll
        for (int r = 0; r < 2; r++) {
            float sum = l[mt][r];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            int row = q0 + mt * ATT_TILE + warp * 16 + g + r * 8;
            if (row >= T) continue;
            float inv = 1.0f / sum;
            bf16 *orow = out + (((size_t)b * T + row) * NH + h) * D;     // (D)
            #pragma unroll
            for (int i = 0; i < DT; i++) {
                *reinterpret_cast<__nv_bfloat162 *>(orow + i * 8 + 2 * t4) =
                    __floats2bfloat162_rn(o[mt][i][2 * r] * inv, o[mt][i][2 * r + 1] * inv);
            }
            if (t4 == 0) lse[((size_t)b * NH + h) * T + row] = m[mt][r] * scale + logf(sum);
        }
    }
}

// ---- backward, tensor cores ---------------------------------------------------------
// Dv (B,NH,T) = rowsum(dout * out); 8 lanes per row (one 16-byte vector each per step).
__global__ void attn_bwd_dot(float *Dv, const bf16 *dout, const bf16 *out, int B, int T,
                             int NH, int HS, int vec) {
    // dout, out (B,T,NH,HS)
    const size_t rows = (size_t)B * T * NH;
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 3;
    const int sub = threadIdx.x & 7;
    float acc = 0.0f;
    if (row < rows) {
        const bf16 *a = dout + row * HS, *o = out + row * HS;       // (HS)
        if (vec) {
            for (int d = sub * 8; d < HS; d += 64) {
                x128<bf16> xa = load128(a + d), xo = load128(o + d);
                for (int i = 0; i < 8; i++)
                    acc += __bfloat162float(xa[i]) * __bfloat162float(xo[i]);
            }
        } else {
            for (int d = sub; d < HS; d += 8)
                acc += __bfloat162float(a[d]) * __bfloat162float(o[d]);
        }
    }
    acc += __shfl_xor_sync(0xffffffffu, acc, 4);
    acc += __shfl_xor_sync(0xffffffffu, acc, 2);
    acc += __shfl_xor_sync(0xffffffffu, acc, 1);
    if (row < rows && sub == 0) {
        int h = (int)(row % NH);
        size_t bt = row / NH;
        int t = (int)(bt % T), b = (int)(bt / T);
        Dv[((size_t)b * NH + h) * T + t] = acc;
    }
}

// dk, dv = for one key tile; with DQ, dq_acc (B,T,NH,D) += through atomics (without:
// train.deterministic, attn_bwd_dq_mma makes dq instead, and dq_acc is unused).
template <int D, bool ROPE, bool DQ>
__global__ void __launch_bounds__(ATT_THREADS)
attn_bwd_mma(bf16 *dk, bf16 *dv, float *dq_acc, const bf16 *dout, const float *lse,
             const float *Dv, const bf16 *q, const bf16 *k, const bf16 *v, int ld,
             const float *rc, const float *rs, int B, int T, int NH, int KVH, float scale) {
    // dout (B,T,NH,D); lse, Dv (B,NH,T); q, k, v and dk, dv: NH, KVH, KVH heads of D per
    // position, positions ld apart; rc, rs (maxT, D/2) when ROPE (dq_acc then gathers
    // the gradient w.r.t. the rotated q)
    constexpr int LD = D + ATT_PAD;
    constexpr int LDS = ATT_TILE + ATT_PAD;     // dS^T rows: 64 query columns + pad
    constexpr int NT = ATT_TILE / 8;
    constexpr int DT = D / 8;
    extern __shared__ __align__(16) unsigned char att_smem[];
    bf16 *sK = (bf16 *)att_smem;                // (64, LD)
    bf16 *sV = sK + ATT_TILE * LD;              // (64, LD)
    bf16 *sQ = sV + ATT_TILE * LD;              // 2 x (64, LD)
    bf16 *sO = sQ + 2 * ATT_TILE * LD;          // 2 x (64, LD): dout
    bf16 *sS = sO + 2 * ATT_TILE * LD;          // (64 keys, LDS): dS^T
    float *sL = (float *)(sS + ATT_TILE * LDS); // 2 x (64): lse
    float *sD = sL + 2 * ATT_TILE;              // 2 x (64): Dv

    const int nt_all = (T + ATT_TILE - 1) / ATT_TILE;
    const int bk = blockIdx.x % (B * KVH);
    const int jb = (int)(blockIdx.x / (B * KVH));
    const int b = bk / KVH, kvh = bk % KVH, group = NH / KVH;
    const int kv0 = jb * ATT_TILE;
    const int nqt = nt_all - jb;                // query tiles jb..nt_all-1
    const int total = group * nqt;
    const size_t qs = (size_t)NH * D;           // dout and dq_acc rows

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t4 = lane & 3;
    const float sl2 = scale * ATT_LOG2E;

    // tile `it` of the loop: query head kvh*group + it/nqt, query tile jb + it%nqt
    auto load_q_tile = [&](int it, int buf) {
        int h = kvh * group + it / nqt, q0 = (jb + it % nqt) * ATT_TILE;
        const bf16 *qg = q + (size_t)b * T * ld + (size_t)h * D;
        const bf16 *og = dout + ((size_t)b * T * NH + h) * D;
        load_tile<D>(sQ + buf * ATT_TILE * LD, qg, ld, q0, T);
        load_tile<D>(sO + buf * ATT_TILE * LD, og, qs, q0, T);
        const float *src = (threadIdx.x < ATT_TILE ? lse : Dv) + ((size_t)b * NH + h) * T;
        float *dst = (threadIdx.x < ATT_TILE ? sL : sD) + buf * ATT_TILE;
        int r = threadIdx.x % ATT_TILE, ok = q0 + r < T;
        cp_async4(dst + r, src + (ok ? q0 + r : 0), ok ? 4 : 0);
    };

    load_tile<D>(sK, k + (size_t)b * T * ld + (size_t)kvh * D, ld, kv0, T);
    load_tile<D>(sV, v + (size_t)b * T * ld + (size_t)kvh * D, ld, kv0, T);
    load_q_tile(0, 0);
    cp_async_commit();

    float dka[DT][4], dva[DT][4];
    for (int i = 0; i < DT; i++)
        for (int c = 0; c < 4; c++) dka[i][c] = dva[i][c] = 0.0f;

    for (int it = 0; it < total; it++) {
        const int buf = it & 1;
        const int h = kvh * group + it / nqt;
        const int qt = jb + it % nqt, q0 = qt * ATT_TILE;
        cp_async_wait_all();
        __syncthreads();                        // tile it landed; it-1's buffers, dS free
        if (it + 1 < total) load_q_tile(it + 1, buf ^ 1);
        cp_async_commit();
        if (ROPE) {
            if (it == 0) rope_tile<D>(sK, kv0, T, rc, rs);
            rope_tile<D>(sQ + buf * ATT_TILE * LD, q0, T, rc, rs);
            __syncthreads();                    // rotated tiles seen by every warp
        }
        const bf16 *cQ = sQ + buf * ATT_TILE * LD;
        const bf16 *cO = sO + buf * ATT_TILE * LD;
        const float *cL = sL + buf * ATT_TILE;
        const float *cD = sD + buf * ATT_TILE;

        // S^T = K Q^T (16 keys x 64 queries per warp)
        float s[NT][4];
        mma_abt<D>(s, sK, cQ, warp * 16, lane);
        // P^T = exp(S^T scale - lse); zero where query < key (causal) or query >= T
        const int need_mask = qt == jb || q0 + ATT_TILE > T;
        for (int nt = 0; nt < NT; nt++)
            for (int c = 0; c < 4; c++) {
                int col = nt * 8 + 2 * t4 + (c & 1);            // query in tile
                int row = warp * 16 + g + (c >> 1) * 8;         // key in tile
                float p = exp2f(fmaf(s[nt][c], sl2, -cL[col] * ATT_LOG2E));
                if (need_mask && (q0 + col < kv0 + row || q0 + col >= T)) p = 0.0f;
                s[nt][c] = p;
            }
        // dV += P^T dO
        for (int kc = 0; kc < ATT_TILE / 16; kc++) {
            uint32_t a[4];
            acc_to_a(a, s, kc);
            mma_a_rows<D>(dva, a, cO, LD, kc * 16, lane);
        }
        // dP^T = V dO^T, then dS^T = P^T (dP^T - Dv) in place of P^T
        {
            float dp[NT][4];
            mma_abt<D>(dp, sV, cO, warp * 16, lane);
            for (int nt = 0; nt < NT; nt++)
                for (int c = 0; c < 4; c++) {
                    int col = nt * 8 + 2 * t4 + (c & 1);
                    s[nt][c] = s[nt][c] * (dp[nt][c] - cD[col]);
                }
        }
        // dK += dS^T Q; dS^T to shared for dQ
        for (int kc = 0; kc < ATT_TILE / 16; kc++) {
            uint32_t a[4];
            acc_to_a(a, s, kc);
            mma_a_rows<D>(dka, a, cQ, LD, kc * 16, lane);
            if (!DQ) continue;
            bf16 *row0 = sS + (warp * 16 + g) * LDS + kc * 16 + 2 * t4;   // 4-byte aligned
            *reinterpret_cast<uint32_t *>(row0) = a[0];
            *reinterpret_cast<uint32_t *>(row0 + 8 * LDS) = a[1];
            *reinterpret_cast<uint32_t *>(row0 + 8) = a[2];
            *reinterpret_cast<uint32_t *>(row0 + 8 * LDS + 8) = a[3];
        }
        if (!DQ) continue;
        __syncthreads();                        // every warp's dS^T rows written

        // dQ (16 queries per warp x D) += dS K scale, 16 columns at a time
        float *dqrow = dq_acc + (((size_t)b * T + q0 + warp * 16 + g) * NH + h) * D;
        const int r0_ok = q0 + warp * 16 + g < T, r1_ok = q0 + warp * 16 + g + 8 < T;
        for (int dc = 0; dc < D / 16; dc++) {
            float acc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
            for (int kc = 0; kc < ATT_TILE / 16; kc++) {
                uint32_t a[4], bb[4];
                // A = dS (query, key) read transposed from dS^T (key, query)
                ldsm_x4_t(a, ldsm_b_addr(sS, LDS, kc * 16, warp * 16, lane));
                ldsm_x4_t(bb, ldsm_a_addr(sK, LD, kc * 16, dc * 16, lane));
                mma_bf16(acc[0], a, bb[0], bb[1]);
                mma_bf16(acc[1], a, bb[2], bb[3]);
            }
            for (int n = 0; n < 2; n++) {
                int col = dc * 16 + n * 8 + 2 * t4;
                if (r0_ok) atomic_add2(dqrow + col, acc[n][0] * scale, acc[n][1] * scale);
                if (r1_ok)
                    atomic_add2(dqrow + 8 * qs + col, acc[n][2] * scale, acc[n][3] * scale);
            }
        }
    }

    #pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = kv0 + warp * 16 + g + r * 8;
        if (row >= T) continue;
        if (ROPE)   // w.r.t. the rotated row -> w.r.t. the row
            rope_back_acc<D>(dka, r, t4, rc + (size_t)row * (D / 2), rs + (size_t)row * (D / 2));
        size_t off = ((size_t)b * T + row) * ld + (size_t)kvh * D + 2 * t4;
        #pragma unroll
        for (int i = 0; i < DT; i++) {
            *reinterpret_cast<__nv_bfloat162 *>(dk + off + i * 8) =
                __floats2bfloat162_rn(dka[i][2 * r] * scale, dka[i][2 * r + 1] * scale);
            *reinterpret_cast<__nv_bfloat162 *>(dv + off + i * 8) =
                __floats2bfloat162_rn(dva[i][2 * r], dva[i][2 * r + 1]);
        }
    }
}

// train.deterministic: dq for one query tile of one head, the sum of dS K scale over its
// key tiles 0..qb in order, in registers (no atomics, so the same bits every run).
// S = Q K^T and dP = dO V^T are recomputed (3 products per tile where attn_bwd_mma's dQ
// took 1). Layout as attn_fwd_mma: 4 warps x 16 query rows, K and V double-buffered.
template <int D, bool ROPE>
__global__ void __launch_bounds__(ATT_THREADS)
attn_bwd_dq_mma(bf16 *dq, const bf16 *dout, const float *lse, const float *Dv,
                const bf16 *q, const bf16 *k, const bf16 *v, int ld, const float *rc,
                const float *rs, int B, int T, int NH, int KVH, float scale) {
    // dq, q, k, v: NH, NH, KVH, KVH heads of D per position, positions ld apart; dout
    // (B,T,NH,D); lse, Dv (B,NH,T); rc, rs (maxT, D/2) when ROPE (dq rotated back)
    constexpr int LD = D + ATT_PAD;
    constexpr int KT = D / 16;                  // k-chunks of Q K^T and dO V^T
    constexpr int NT = ATT_TILE / 8;            // n-tiles of S and dP
    constexpr int DT = D / 8;                   // n-tiles of dQ
    extern __shared__ __align__(16) unsigned char att_smem[];
    bf16 *sQ = (bf16 *)att_smem;                // (64, LD)
    bf16 *sO = sQ + ATT_TILE * LD;              // (64, LD): dout
    bf16 *sK = sO + ATT_TILE * LD;              // 2 x (64, LD)
    bf16 *sV = sK + 2 * ATT_TILE * LD;          // 2 x (64, LD)

    const int nq = (T + ATT_TILE - 1) / ATT_TILE;
    const int bh = blockIdx.x % (B * NH);
    const int qb = nq - 1 - (int)(blockIdx.x / (B * NH));      // the longest first
    const int b = bh / NH, h = bh % NH, kvh = h / (NH / KVH);
    const int q0 = qb * ATT_TILE;
    const bf16 *qg = q + (size_t)b * T * ld + (size_t)h * D;     // (T, D) rows ld apart
    const bf16 *og = dout + ((size_t)b * T * NH + h) * D;        // (T, D) rows NH*D apart
    const bf16 *kg = k + (size_t)b * T * ld + (size_t)kvh * D;
    const bf16 *vg = v + (size_t)b * T * ld + (size_t)kvh * D;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t4 = lane & 3;
    const float sl2 = scale * ATT_LOG2E;
    // this thread's two query rows (g, g + 8 of its warp's 16): lse in log2 units, Dv
    float l2[2], dvr[2];
    for (int r = 0; r < 2; r++) {
        const int row = q0 + warp * 16 + g + r * 8;
        const size_t i = ((size_t)b * NH + h) * T + (row < T ? row : 0);
        l2[r] = lse[i] * ATT_LOG2E;
        dvr[r] = Dv[i];
    }

    load_tile<D>(sQ, qg, ld, q0, T);
    load_tile<D>(sO, og, (size_t)NH * D, q0, T);
    load_tile<D>(sK, kg, ld, 0, T);
    load_tile<D>(sV, vg, ld, 0, T);
    cp_async_commit();

    uint32_t qf[KT][4];
    float dqa[DT][4];
    for (int i = 0; i < DT; i++) dqa[i][0] = dqa[i][1] = dqa[i][2] = dqa[i][3] = 0.0f;

    const int nkv = qb + 1;                     // key tiles 0..qb (causal)
    for (int j = 0; j < nkv; j++) {
        kv_tile_begin<D, ROPE>(j, nkv, sQ, sK, sV, qf, kg, vg, ld, q0, T, rc, rs, warp, lane);
        const bf16 *cK = sK + (j & 1) * ATT_TILE * LD;
        const bf16 *cV = sV + (j & 1) * ATT_TILE * LD;

        // S = Q K^T and dP = dO V^T (16 x 64 per warp)
        float s[NT][4], dp[NT][4];
        for (int i = 0; i < NT; i++)
            for (int c = 0; c < 4; c++) s[i][c] = dp[i][c] = 0.0f;
        for (int kk = 0; kk < KT; kk++) {
            uint32_t of[4];
            ldsm_x4(of, ldsm_a_addr(sO, LD, warp * 16, kk * 16, lane));
            for (int np = 0; np < NT / 2; np++) {
                uint32_t bk[4], bv[4];
                ldsm_x4(bk, ldsm_b_addr(cK, LD, np * 16, kk * 16, lane));
                ldsm_x4(bv, ldsm_b_addr(cV, LD, np * 16, kk * 16, lane));
                mma_bf16(s[2 * np], qf[kk], bk[0], bk[1]);
                mma_bf16(s[2 * np + 1], qf[kk], bk[2], bk[3]);
                mma_bf16(dp[2 * np], of, bv[0], bv[1]);
                mma_bf16(dp[2 * np + 1], of, bv[2], bv[3]);
            }
        }
        // dS = P (dP - Dv), P = exp(S scale - lse); 0 where key > query (the diagonal
        // tile) or the query row is past T
        for (int nt = 0; nt < NT; nt++)
            for (int c = 0; c < 4; c++) {
                const int col = nt * 8 + 2 * t4 + (c & 1);          // key in tile
                const int row = warp * 16 + g + (c >> 1) * 8;       // query in tile
                float p = exp2f(fmaf(s[nt][c], sl2, -l2[c >> 1]));
                if ((j == qb && col > row) || q0 + row >= T) p = 0.0f;
                s[nt][c] = p * (dp[nt][c] - dvr[c >> 1]);
            }
        // dQ += dS K
        for (int kc = 0; kc < ATT_TILE / 16; kc++) {
            uint32_t a[4];
            acc_to_a(a, s, kc);
            mma_a_rows<D>(dqa, a, cK, LD, kc * 16, lane);
        }
    }

    #pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = q0 + warp * 16 + g + r * 8;
        if (row >= T) continue;
        if (ROPE)   // w.r.t. the rotated row -> w.r.t. the row
            rope_back_acc<D>(dqa, r, t4, rc + (size_t)row * (D / 2), rs + (size_t)row * (D / 2));
        bf16 *drow = dq + ((size_t)b * T + row) * ld + (size_t)h * D + 2 * t4;
        #pragma unroll
        for (int i = 0; i < DT; i++)
            *reinterpret_cast<__nv_bfloat162 *>(drow + i * 8) =
                __floats2bfloat162_rn(dqa[i][2 * r] * scale, dqa[i][2 * r + 1] * scale);
    }
}

// dq = acc (B,T,NH,HS), bf16 from fp32; dq's positions ld apart. A work item is 8
// elements of a head row (HS % 8 == 0, ld % 8 == 0, both 16-byte aligned).
__global__ void attn_dq_set(bf16 *dq, const float *acc, size_t rows, int NH, int HS,
                            size_t ld) {
    const int per_row = HS / 8;
    const size_t n = rows * per_row, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t w = (size_t)blockIdx.x * blockDim.x + threadIdx.x; w < n; w += stride) {
        const size_t row = w / per_row;                         // (b, t, h)
        const int i0 = (int)(w % per_row) * 8;
        const float *a = acc + row * HS + i0;                   // (8)
        x128<bf16> d;
        x128<float> a0 = load128(a), a1 = load128(a + 4);
        for (int j = 0; j < 4; j++) {
            d[j] = __float2bfloat16(a0[j]);
            d[j + 4] = __float2bfloat16(a1[j]);
        }
        store128(dq + (row / NH) * ld + (row % NH) * HS + i0, d);
    }
}

// dq = acc (B,T,NH,HS) rotated back by RoPE's transpose at each row's position; dq's
// positions ld apart. A work item is 8 pairs: 8 elements of a head's first half and
// their partners HS/2 later (HS/2 a multiple of 8, dq and acc 16-byte aligned).
__global__ void attn_dq_set_rope(bf16 *dq, const float *acc, const float *rc, const float *rs,
                                 size_t rows, int T, int NH, int HS, size_t ld) {
    const int H2 = HS / 2, per_row = H2 / 8;
    const size_t n = rows * per_row, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t w = (size_t)blockIdx.x * blockDim.x + threadIdx.x; w < n; w += stride) {
        const size_t row = w / per_row;                         // (b, t, h)
        const int i0 = (int)(w % per_row) * 8, t = (int)((row / NH) % T);
        bf16 *d1 = dq + (row / NH) * ld + (row % NH) * HS + i0, *d2 = d1 + H2;   // (8) each
        const float *a1 = acc + row * HS + i0, *a2 = a1 + H2;    // (8) each half
        const float *cr = rc + (size_t)t * H2 + i0, *sr = rs + (size_t)t * H2 + i0;
        x128<bf16> o1, o2;
        x128<float> x0 = load128(a1), x1 = load128(a1 + 4);
        x128<float> y0 = load128(a2), y1 = load128(a2 + 4);
        #pragma unroll
        for (int j = 0; j < 8; j++) {
            float x = j < 4 ? x0[j] : x1[j - 4], y = j < 4 ? y0[j] : y1[j - 4];
            float c = cr[j], sn = sr[j];
            o1[j] = __float2bfloat16(x * c + y * sn);
            o2[j] = __float2bfloat16(y * c - x * sn);
        }
        store128(d1, o1);
        store128(d2, o2);
    }
}

// ---- host ---------------------------------------------------------------------------
// Dynamic shared memory above the 48 KiB default must be asked for per kernel.
template <typename K>
static void att_set_smem(K kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)bytes));
}

static int att_mma_ok(int HS) { return HS == 32 || HS == 64 || HS == 96 || HS == 128; }

// Shared memory of the tensor-core kernels for head size D (the forward's MT: below).
static size_t fwd_mma_smem(int D, int MT) {
    return (size_t)(MT + 4) * ATT_TILE * (D + ATT_PAD) * sizeof(bf16);         // Q, 2K, 2V
}

// m-tiles per warp of the forward for head size HS: 2 for 32 and 64 (attn_fwd_mma's
// comment), 1 for 96 and 128, and 1 for every head size when the environment has
// ANVIL_CUDA_ATT_FWD_ROWS=64: 64-row query blocks, to compare the two on a GPU (the op
// test checks they give the same bits).
static int fwd_mma_mt(int HS) {
    const char *e = getenv("ANVIL_CUDA_ATT_FWD_ROWS");
    if (e != nullptr && strcmp(e, "64") == 0) return 1;
    return HS <= 64 ? 2 : 1;
}
static size_t bwd_mma_smem(int D) {
    return (size_t)6 * ATT_TILE * (D + ATT_PAD) * sizeof(bf16)               // K V 2Q 2dO
           + (size_t)ATT_TILE * (ATT_TILE + ATT_PAD) * sizeof(bf16)          // dS^T
           + (size_t)4 * ATT_TILE * sizeof(float);                           // 2 lse, 2 Dv
}
static size_t dq_mma_smem(int D) {
    return (size_t)6 * ATT_TILE * (D + ATT_PAD) * sizeof(bf16);              // Q dO 2K 2V
}

// Whether the tensor-core kernel needing `smem` bytes fits this GPU (cuda_smem_optin:
// head size 128's backward takes 112 KiB, more than sm_86 / sm_89 allow). If not, the
// generic kernels run, correct but several times slower: said once per kernel kind.
static int att_fits(size_t smem, const char *what, int HS) {
    if (smem <= (size_t)cuda_smem_optin) return 1;
    static int told[3];
    const int i = what[0] == 'f' ? 0 : what[0] == 'b' ? 1 : 2;
    if (!told[i]) {
        told[i] = 1;
        fprintf(stderr,
                "anvil: cuda: the tensor-core attention %s for head size %d needs %zu KiB of "
                "shared memory per block, this GPU allows %d KiB: using the generic kernels "
                "(slower)\n", what, HS, smem / 1024, cuda_smem_optin / 1024);
    }
    return 0;
}

template <int D, bool ROPE, int MT>
static void fwd_mma_launch(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                           const bf16 *v, size_t ld, const float *rc, const float *rs, int B,
                           int T, int NH, int KVH, float scale) {
    const size_t smem = fwd_mma_smem(D, MT);
    const unsigned nq = (unsigned)((T + MT * ATT_TILE - 1) / (MT * ATT_TILE));
    att_set_smem(attn_fwd_mma<D, ROPE, MT>, smem);
    attn_fwd_mma<D, ROPE, MT><<<nq * (unsigned)(B * NH), ATT_THREADS, smem,
                                cuda_stream_compute>>>(out, lse, q, k, v, (int)ld, rc, rs, B,
                                                       T, NH, KVH, scale);
    CUDA_LAUNCH_CHECK();
}

template <int D, bool ROPE>
static void bwd_mma_launch(bf16 *dk, bf16 *dv, float *dq_acc, const bf16 *dout,
                           const float *lse, const float *Dv, const bf16 *q, const bf16 *k,
                           const bf16 *v, size_t ld, const float *rc, const float *rs, int B,
                           int T, int NH, int KVH, float scale) {
    const size_t smem = bwd_mma_smem(D);
    const unsigned nk = (unsigned)((T + ATT_TILE - 1) / ATT_TILE);
    if (dq_acc != nullptr) {
        att_set_smem(attn_bwd_mma<D, ROPE, true>, smem);
        attn_bwd_mma<D, ROPE, true><<<nk * (unsigned)(B * KVH), ATT_THREADS, smem,
                                      cuda_stream_compute>>>(dk, dv, dq_acc, dout, lse, Dv, q,
                                                             k, v, (int)ld, rc, rs, B, T, NH,
                                                             KVH, scale);
    } else {   // train.deterministic: dk, dv only
        att_set_smem(attn_bwd_mma<D, ROPE, false>, smem);
        attn_bwd_mma<D, ROPE, false><<<nk * (unsigned)(B * KVH), ATT_THREADS, smem,
                                       cuda_stream_compute>>>(dk, dv, nullptr, dout, lse, Dv,
                                                              q, k, v, (int)ld, rc, rs, B, T,
                                                              NH, KVH, scale);
    }
    CUDA_LAUNCH_CHECK();
}

template <int D, bool ROPE>
static void bwd_dq_mma_launch(bf16 *dq, const bf16 *dout, const float *lse, const float *Dv,
                              const bf16 *q, const bf16 *k, const bf16 *v, size_t ld,
                              const float *rc, const float *rs, int B, int T, int NH, int KVH,
                              float scale) {
    const size_t smem = dq_mma_smem(D);
    const unsigned nq = (unsigned)((T + ATT_TILE - 1) / ATT_TILE);
    att_set_smem(attn_bwd_dq_mma<D, ROPE>, smem);
    attn_bwd_dq_mma<D, ROPE><<<nq * (unsigned)(B * NH), ATT_THREADS, smem,
                               cuda_stream_compute>>>(dq, dout, lse, Dv, q, k, v, (int)ld, rc,
                                                      rs, B, T, NH, KVH, scale);
    CUDA_LAUNCH_CHECK();
}

typedef void (*fwd_fn)(bf16 *, float *, const bf16 *, const bf16 *, const bf16 *, size_t,
                       const float *, const float *, int, int, int, int, float);
typedef void (*bwd_fn)(bf16 *, bf16 *, float *, const bf16 *, const float *, const float *,
                       const bf16 *, const bf16 *, const bf16 *, size_t, const float *,
                       const float *, int, int, int, int, float);

typedef void (*dq_fn)(bf16 *, const bf16 *, const float *, const float *, const bf16 *,
                      const bf16 *, const bf16 *, size_t, const float *, const float *, int,
                      int, int, int, float);

// The tensor-core kernels for head size HS (att_mma_ok), with or without RoPE; the
// forward's with mt m-tiles per warp (fwd_mma_mt).
template <bool ROPE>
static fwd_fn fwd_pick(int HS, int mt) {
    if (mt == 2) return HS == 32 ? fwd_mma_launch<32, ROPE, 2> : fwd_mma_launch<64, ROPE, 2>;
    return HS == 32 ? fwd_mma_launch<32, ROPE, 1> : HS == 64 ? fwd_mma_launch<64, ROPE, 1>
         : HS == 96 ? fwd_mma_launch<96, ROPE, 1> : fwd_mma_launch<128, ROPE, 1>;
}
template <bool ROPE>
static bwd_fn bwd_pick(int HS) {
    return HS == 32 ? bwd_mma_launch<32, ROPE> : HS == 64 ? bwd_mma_launch<64, ROPE>
         : HS == 96 ? bwd_mma_launch<96, ROPE> : bwd_mma_launch<128, ROPE>;
}

template <bool ROPE>
static dq_fn dq_pick(int HS) {
    return HS == 32 ? bwd_dq_mma_launch<32, ROPE> : HS == 64 ? bwd_dq_mma_launch<64, ROPE>
         : HS == 96 ? bwd_dq_mma_launch<96, ROPE> : bwd_dq_mma_launch<128, ROPE>;
}

extern "C" size_t cuda_attention_state_floats(int B, int T, int NH, int KVH, int HS, int rope) {
    (void)KVH, (void)HS, (void)rope;
    return (size_t)B * NH * T;                 // log-sum-exp per query row (B,NH,T)
}

// dQ accumulator (B,T,NH,HS) first (16-byte aligned when scratch is), then Dv (B,NH,T).
// One size whichever path runs, since the path also depends on pointer alignment; RoPE
// needs nothing more (dq and dk are rotated back on their way out).
extern "C" size_t cuda_attention_scratch_floats(int B, int T, int NH, int KVH, int HS,
                                                int rope) {
    (void)KVH, (void)rope;
    return (size_t)B * T * NH * HS + (size_t)B * NH * T;
}

extern "C" void cuda_attention_forward(anv_act *out_, float *state, const anv_act *qkv_,
                                       const float *rc, const float *rs, int B, int T, int NH,
                                       int KVH, int HS) {
    // out (B,T,NH,HS), state (B,NH,T), qkv (B,T,NH+2KVH,HS); rc, rs (maxT, HS/2) or NULL
    bf16 *out = (bf16 *)out_;
    const size_t ld = (size_t)(NH + 2 * KVH) * HS;
    const bf16 *q = (const bf16 *)qkv_, *k = q + (size_t)NH * HS, *v = k + (size_t)KVH * HS;
    const float scale = 1.0f / sqrtf((float)HS);
    if (B <= 0 || T <= 0 || NH <= 0) return;
    // HS % 8 == 0 (att_mma_ok) keeps every row of q, k, v as aligned as qkv
    const int mt = att_mma_ok(HS) ? fwd_mma_mt(HS) : 1;
    if (att_mma_ok(HS) && aligned16(out) && aligned16(q) &&
        att_fits(fwd_mma_smem(HS, mt), "forward", HS)) {
        fwd_fn fn = rc ? fwd_pick<true>(HS, mt) : fwd_pick<false>(HS, mt);
        fn(out, state, q, k, v, ld, rc, rs, B, T, NH, KVH, scale);
        return;
    }
    const size_t smem = (size_t)GEN_WARPS * (2 * HS + 32) * sizeof(float);
    att_set_smem(attn_fwd_generic, smem);
    attn_fwd_generic<<<cuda_blocks((size_t)B * T * NH, GEN_WARPS), GEN_WARPS * 32, smem,
                       cuda_stream_compute>>>(out, state, q, k, v, ld, rc, rs, B, T, NH, KVH,
                                              HS, scale);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_attention_backward(anv_act *dqkv_, float *scratch, const anv_act *dout_,
                                        const anv_act *out_, const float *state,
                                        const anv_act *qkv_, const float *rc, const float *rs,
                                        int B, int T, int NH, int KVH, int HS) {
    // dqkv (B,T,NH+2KVH,HS) =, scratch: dq_acc (B,T,NH,HS) and Dv (B,NH,T) overwritten;
    // dout, out (B,T,NH,HS); state (B,NH,T); qkv (B,T,NH+2KVH,HS); rc, rs (maxT, HS/2)
    // or NULL
    const size_t ld = (size_t)(NH + 2 * KVH) * HS, qd = (size_t)NH * HS, kd = (size_t)KVH * HS;
    bf16 *dq = (bf16 *)dqkv_, *dk = dq + qd, *dv = dk + kd;
    const bf16 *dout = (const bf16 *)dout_, *out = (const bf16 *)out_;
    const bf16 *q = (const bf16 *)qkv_, *k = q + qd, *v = k + kd;
    const float scale = 1.0f / sqrtf((float)HS);
    if (B <= 0 || T <= 0 || NH <= 0) return;
    const size_t nq_elems = (size_t)B * T * NH * HS;
    float *dq_acc = scratch;                   // (B,T,NH,HS)
    float *Dv = scratch + nq_elems;            // (B,NH,T)

    const size_t rows = (size_t)B * T * NH;
    const int vec = HS % 8 == 0 && aligned16(dout) && aligned16(out);
    attn_bwd_dot<<<cuda_blocks(rows * 8, 256), 256, 0, cuda_stream_compute>>>(
        Dv, dout, out, B, T, NH, HS, vec);
    CUDA_LAUNCH_CHECK();

    if (att_mma_ok(HS) && aligned16(dq) && aligned16(dout) && aligned16(q) &&
        aligned16(scratch) && att_fits(bwd_mma_smem(HS), "backward", HS) &&
        (!cuda_deterministic || att_fits(dq_mma_smem(HS), "dq (deterministic)", HS))) {
        bwd_fn fn = rc ? bwd_pick<true>(HS) : bwd_pick<false>(HS);
        if (cuda_deterministic) {              // dk, dv; then dq by query tiles, in order
            fn(dk, dv, nullptr, dout, state, Dv, q, k, v, ld, rc, rs, B, T, NH, KVH, scale);
            dq_fn dfn = rc ? dq_pick<true>(HS) : dq_pick<false>(HS);
            dfn(dq, dout, state, Dv, q, k, v, ld, rc, rs, B, T, NH, KVH, scale);
            return;
        }
        CUDA_CHECK(cudaMemsetAsync(dq_acc, 0, nq_elems * sizeof(float),
                                   cuda_stream_compute));
        fn(dk, dv, dq_acc, dout, state, Dv, q, k, v, ld, rc, rs, B, T, NH, KVH, scale);
        if (rc) {
            attn_dq_set_rope<<<cuda_blocks(nq_elems / 16, 256), 256, 0,
                               cuda_stream_compute>>>(dq, dq_acc, rc, rs, rows, T, NH, HS, ld);
        } else {
            attn_dq_set<<<cuda_blocks(nq_elems / 8, 256), 256, 0, cuda_stream_compute>>>(
                dq, dq_acc, rows, NH, HS, ld);
        }
        CUDA_LAUNCH_CHECK();
        return;
    }

    const size_t smem_kv = (size_t)GEN_WARPS * (4 * HS + 64) * sizeof(float);
    att_set_smem(attn_bwd_dkdv_generic, smem_kv);
    attn_bwd_dkdv_generic<<<cuda_blocks((size_t)B * T * KVH, GEN_WARPS), GEN_WARPS * 32,
                            smem_kv, cuda_stream_compute>>>(
        dk, dv, dout, state, Dv, q, k, v, ld, rc, rs, B, T, NH, KVH, HS, scale);
    CUDA_LAUNCH_CHECK();
    const size_t smem_q = (size_t)GEN_WARPS * (3 * HS + 32) * sizeof(float);
    att_set_smem(attn_bwd_dq_generic, smem_q);
    attn_bwd_dq_generic<<<cuda_blocks(rows, GEN_WARPS), GEN_WARPS * 32, smem_q,
                          cuda_stream_compute>>>(dq, dout, state, Dv, q, k, v, ld, rc, rs, B,
                                                 T, NH, KVH, HS, scale);
    CUDA_LAUNCH_CHECK();
}
