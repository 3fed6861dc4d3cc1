// kernels/cuda/attention_generic.cuh: the generic path of attention.cu, for any head
// size and alignment (the tiny test shapes, head sizes the tensor-core kernels do not
// take): one warp per query row (forward, dq) or key row (dk, dv), keys or queries in
// tiles of 32 with the same online softmax and the same lse as the tensor-core kernels,
// CUDA cores and fp32; RoPE applied to each element as it is read, the gradients rotated
// back as they are written. attention.cu's top comment says how it fits; only
// attention.cu includes this file (tests/emu/cu2emu.py inlines it).
#ifndef ANVIL_KERNELS_CUDA_ATTENTION_GENERIC_CUH
#define ANVIL_KERNELS_CUDA_ATTENTION_GENERIC_CUH

#include "kernels/cuda/cuda_common.cuh"

// ---- generic path (any HS): one warp per row, CUDA cores ----------------------------
#define GEN_WARPS 4            // warps per block of the generic kernels

// Element d of a head row x (HS) at position t, rotated when rc is given (generic path).
__device__ __forceinline__ float rope_elem(const bf16 *x, int d, int HS, int t, const float *rc,
                                           const float *rs) {
    float v = __bfloat162float(x[d]);
    if (rc == nullptr) return v;
    const int H2 = HS / 2, i = d < H2 ? d : d - H2;
    const float c = rc[(size_t)t * H2 + i], sn = rs[(size_t)t * H2 + i];
    return d < H2 ? v * c - __bfloat162float(x[d + H2]) * sn
                  : v * c + __bfloat162float(x[d - H2]) * sn;
}

// Element d of a gradient row g (HS, shared) w.r.t. a rotated row, rotated back to the
// unrotated row's (the transpose: d1 = g1 cos + g2 sin, d2 = g2 cos - g1 sin).
__device__ __forceinline__ float rope_back_elem(const float *g, int d, int HS, int t,
                                                const float *rc, const float *rs) {
    if (rc == nullptr) return g[d];
    const int H2 = HS / 2, i = d < H2 ? d : d - H2;
    const float c = rc[(size_t)t * H2 + i], sn = rs[(size_t)t * H2 + i];
    return d < H2 ? g[d] * c + g[d + H2] * sn : g[d] * c - g[d - H2] * sn;
}

// Forward for query row (b, t, h). Shared per warp: q*scale (HS), acc (HS), p (32).
__global__ void attn_fwd_generic(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                 const bf16 *v, size_t ld, const float *rc, const float *rs,
                                 int B, int T, int NH, int KVH, int HS, float scale) {
    extern __shared__ float gen_smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *sq = gen_smem + (size_t)warp * (2 * HS + 32);
    float *sacc = sq + HS, *sp = sacc + HS;
    const size_t row = (size_t)blockIdx.x * GEN_WARPS + warp;    // as in out: (b, t, h)
    if (row >= (size_t)B * T * NH) return;
    const int h = (int)(row % NH), t = (int)((row / NH) % T), b = (int)(row / NH / T);
    const int kvh = h / (NH / KVH);
    const size_t kvs = ld;
    const bf16 *kb = k + (size_t)b * T * ld + (size_t)kvh * HS;  // (T, HS) rows ld apart
    const bf16 *vb = v + (size_t)b * T * ld + (size_t)kvh * HS;  // (T, HS) rows ld apart
    const bf16 *qr = q + (row / NH) * ld + (size_t)h * HS;       // (HS)
    for (int d = lane; d < HS; d += 32) {
        sq[d] = rope_elem(qr, d, HS, t, rc, rs) * scale;
        sacc[d] = 0.0f;
    }
    __syncwarp();
    float m = -INFINITY, l = 0.0f;
    for (int j0 = 0; j0 <= t; j0 += 32) {
        int j = j0 + lane;
        float s = -INFINITY;
        if (j <= t) {
            const bf16 *kr = kb + (size_t)j * kvs;
            float dot = 0.0f;
            for (int d = 0; d < HS; d++) dot += sq[d] * rope_elem(kr, d, HS, j, rc, rs);
            s = dot;
        }
        float mn = fmaxf(m, warp_max(s));                 // finite: key j0 <= t is valid
        float alpha = expf(m - mn);
        float p = j <= t ? expf(s - mn) : 0.0f;
        l = l * alpha + warp_sum(p);
        m = mn;
        sp[lane] = p;
        __syncwarp();
        int cnt = min(32, t - j0 + 1);
        for (int d = lane; d < HS; d += 32) {
            float a = sacc[d] * alpha;
            for (int jj = 0; jj < cnt; jj++)
                a += sp[jj] * __bfloat162float(vb[(size_t)(j0 + jj) * kvs + d]);
            sacc[d] = a;
        }
        __syncwarp();
    }
    for (int d = lane; d < HS; d += 32) out[row * HS + d] = __float2bfloat16(sacc[d] / l);
    if (lane == 0) lse[((size_t)b * NH + h) * T + t] = m + logf(l);
}

// dk, dv for key row (b, j, kvh) over every query head of its group. Shared per warp:
// k (HS), v (HS), dk (HS), dv (HS), p (32), ds (32).
__global__ void attn_bwd_dkdv_generic(bf16 *dk, bf16 *dv, const bf16 *dout,
                                      const float *lse, const float *Dv, const bf16 *q,
                                      const bf16 *k, const bf16 *v, size_t ld, const float *rc,
                                      const float *rs, int B, int T, int NH, int KVH, int HS,
                                      float scale) {
    extern __shared__ float gen_smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *sk = gen_smem + (size_t)warp * (4 * HS + 64);
    float *sv = sk + HS, *sdk = sv + HS, *sdv = sdk + HS, *sp = sdv + HS, *sds = sp + 32;
    const size_t row = (size_t)blockIdx.x * GEN_WARPS + warp;    // (b, j, kvh)
    if (row >= (size_t)B * T * KVH) return;
    const int kvh = (int)(row % KVH), j = (int)((row / KVH) % T), b = (int)(row / KVH / T);
    const int group = NH / KVH;
    const size_t qs = ld, os = (size_t)NH * HS;
    const size_t kvo = (row / KVH) * ld + (size_t)kvh * HS;      // this key row in k, v
    for (int d = lane; d < HS; d += 32) {
        sk[d] = rope_elem(k + kvo, d, HS, j, rc, rs);
        sv[d] = __bfloat162float(v[kvo + d]);
        sdk[d] = sdv[d] = 0.0f;
    }
    __syncwarp();
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        const bf16 *qb = q + (size_t)b * T * ld + (size_t)h * HS;   // (T, HS) rows ld apart
        const bf16 *ob = dout + ((size_t)b * T * NH + h) * HS;      // (T, HS) rows os apart
        const float *lr = lse + ((size_t)b * NH + h) * T;        // (T)
        const float *dr = Dv + ((size_t)b * NH + h) * T;         // (T)
        for (int t0 = j; t0 < T; t0 += 32) {
            int t = t0 + lane;
            float p = 0.0f, ds = 0.0f;
            if (t < T) {
                float sdot = 0.0f, pdot = 0.0f;
                for (int d = 0; d < HS; d++) {
                    sdot += rope_elem(qb + (size_t)t * qs, d, HS, t, rc, rs) * sk[d];
                    pdot += __bfloat162float(ob[(size_t)t * os + d]) * sv[d];
                }
                p = expf(sdot * scale - lr[t]);
                ds = p * (pdot - dr[t]);
            }
            sp[lane] = p;
            sds[lane] = ds;
            __syncwarp();
            int cnt = min(32, T - t0);
            for (int d = lane; d < HS; d += 32) {
                float a = sdv[d], c = sdk[d];
                for (int tt = 0; tt < cnt; tt++) {
                    a += sp[tt] * __bfloat162float(ob[(size_t)(t0 + tt) * os + d]);
                    c += sds[tt] * rope_elem(qb + (size_t)(t0 + tt) * qs, d, HS, t0 + tt, rc, rs);
                }
                sdv[d] = a;
                sdk[d] = c;
            }
            __syncwarp();
        }
    }
    __syncwarp();                               // every lane's sdk, for its RoPE partner
    for (int d = lane; d < HS; d += 32) {
        dk[kvo + d] = __float2bfloat16(rope_back_elem(sdk, d, HS, j, rc, rs) * scale);
        dv[kvo + d] = __float2bfloat16(sdv[d]);
    }
}

// dq for query row (b, t, h). Shared per warp: q (HS), dout (HS), acc (HS), ds (32).
__global__ void attn_bwd_dq_generic(bf16 *dq, const bf16 *dout, const float *lse,
                                    const float *Dv, const bf16 *q, const bf16 *k,
                                    const bf16 *v, size_t ld, const float *rc, const float *rs,
                                    int B, int T, int NH, int KVH, int HS, float scale) {
    extern __shared__ float gen_smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float *sq = gen_smem + (size_t)warp * (3 * HS + 32);
    float *so = sq + HS, *sacc = so + HS, *sds = sacc + HS;
    const size_t row = (size_t)blockIdx.x * GEN_WARPS + warp;    // as in dout: (b, t, h)
    if (row >= (size_t)B * T * NH) return;
    const int h = (int)(row % NH), t = (int)((row / NH) % T), b = (int)(row / NH / T);
    const int kvh = h / (NH / KVH);
    const size_t kvs = ld;
    const bf16 *kb = k + (size_t)b * T * ld + (size_t)kvh * HS;  // (T, HS) rows ld apart
    const bf16 *vb = v + (size_t)b * T * ld + (size_t)kvh * HS;  // (T, HS) rows ld apart
    const size_t qo = (row / NH) * ld + (size_t)h * HS;          // this query row in q, dq
    const float lse_t = lse[((size_t)b * NH + h) * T + t];
    const float d_t = Dv[((size_t)b * NH + h) * T + t];
    for (int d = lane; d < HS; d += 32) {
        sq[d] = rope_elem(q + qo, d, HS, t, rc, rs);
        so[d] = __bfloat162float(dout[row * HS + d]);
        sacc[d] = 0.0f;
    }
    __syncwarp();
    for (int j0 = 0; j0 <= t; j0 += 32) {
        int j = j0 + lane;
        float ds = 0.0f;
        if (j <= t) {
            float sdot = 0.0f, pdot = 0.0f;
            for (int d = 0; d < HS; d++) {
                sdot += sq[d] * rope_elem(kb + (size_t)j * kvs, d, HS, j, rc, rs);
                pdot += so[d] * __bfloat162float(vb[(size_t)j * kvs + d]);
            }
            float p = expf(sdot * scale - lse_t);
            ds = p * (pdot - d_t);
        }
        sds[lane] = ds;
        __syncwarp();
        int cnt = min(32, t - j0 + 1);
        for (int d = lane; d < HS; d += 32) {
            float a = sacc[d];
            for (int jj = 0; jj < cnt; jj++)
                a += sds[jj] * rope_elem(kb + (size_t)(j0 + jj) * kvs, d, HS, j0 + jj, rc, rs);
            sacc[d] = a;
        }
        __syncwarp();
    }
    __syncwarp();                               // every lane's sacc, for its RoPE partner
    for (int d = lane; d < HS; d += 32)
        dq[qo + d] = __float2bfloat16(rope_back_elem(sacc, d, HS, t, rc, rs) * scale);
}

#endif  // ANVIL_KERNELS_CUDA_ATTENTION_GENERIC_CUH
