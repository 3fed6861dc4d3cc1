// tests/gpu/test_gpu_ops_attention.c: the attention op of the gpu op test (packed qkv,
// with and without RoPE, both the generic and the tensor-core paths) against the cpu
// backend; helpers, bounds and the ground rules (poisoned outputs, guards) are
// test_gpu_ops.c's and test_gpu_ops.h's.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "tests/gpu/test_gpu_ops.h"

// ---- attention -----------------------------------------------------------------------

// RoPE tables (maxT, HS/2): plain (rope 1) or with Llama-3 scaling (rope 2)
static void rope_tables(float **ct, float **st, int maxT, int HS, int rope) {
    size_t nt = (size_t)maxT * (HS / 2);
    *ct = hfloats(nt);
    *st = hfloats(nt);
    rope_params rp = {rope == 2 ? 500000.0f : 10000.0f, rope == 2, 32.0f, 1.0f, 4.0f, 8192};
    rope_tables_fill(*ct, *st, maxT, HS, &rp);
}

// x (B,T,H,HS) rotated in double by the tables (the formula of ops.h), as a new array
static float *rope_host(const float *x, const float *ct, const float *st, int B, int T, int H,
                        int HS) {
    size_t n = (size_t)B * T * H * HS;
    int half = HS / 2;
    float *y = hfloats(n);
    for (size_t r = 0; r < n / HS; r++) {
        int t = (int)((r / H) % T);
        const float *xr = x + r * HS;
        for (int i = 0; i < half; i++) {
            double c = ct[(size_t)t * half + i], sn = st[(size_t)t * half + i];
            y[r * HS + i] = (float)(xr[i] * c - xr[i + half] * sn);
            y[r * HS + i + half] = (float)(xr[i + half] * c + xr[i] * sn);
        }
    }
    return y;
}

// lse (B,NH,T) of the scaled causal scores, in double from the same bf16 q, k (rotated
// by the caller when RoPE is on)
static float *attention_lse(const float *q, const float *k, int B, int T, int NH, int KVH,
                            int HS) {
    float *lse = hfloats((size_t)B * NH * T);
    double *sc = hmalloc((size_t)T * sizeof(double));
    double scale = 1.0 / sqrt((double)HS);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            int kvh = h / (NH / KVH);
            for (int t = 0; t < T; t++) {
                const float *qt = q + (((size_t)b * T + t) * NH + h) * HS;     // (HS)
                double m = -INFINITY, sum = 0.0;
                for (int u = 0; u <= t; u++) {
                    const float *ku = k + (((size_t)b * T + u) * KVH + kvh) * HS;   // (HS)
                    double d = 0.0;
                    for (int i = 0; i < HS; i++) d += (double)qt[i] * ku[i];
                    sc[u] = d * scale;
                    m = fmax(m, sc[u]);
                }
                for (int u = 0; u <= t; u++) sum += exp(sc[u] - m);
                lse[((size_t)b * NH + h) * T + t] = (float)(m + log(sum));
            }
        }
    }
    return lse;
}

// Column block [c0, c1) of a host (rows, ld) array, as a new (rows, c1 - c0) array.
static float *cols(const float *x, size_t rows, size_t ld, size_t c0, size_t c1) {
    float *y = hfloats(rows * (c1 - c0));
    for (size_t r = 0; r < rows; r++)
        memcpy(y + r * (c1 - c0), x + r * ld + c0, (c1 - c0) * sizeof(float));
    return y;
}

// An fp32 buffer of g floats on the gpu (NaN: whatever the op reads unwritten shows)
// and c on the cpu: the state and scratch, whose sizes differ by backend.
static pair f32_sized(size_t g, size_t c) {
    pair p = {t_new(gpu, F32, g), t_new(cpu, F32, c)};
    t_set(p.g, hconst(g, NAN));
    return p;
}

// rope: 0 none, 1 plain RoPE, 2 with Llama-3 scaling (tables longer than T). q, k, v
// are packed in one qkv (B,T,NH+2KVH,HS) as ops.h lays them out; the gradients are
// compared block by block.
void test_attention(int B, int T, int NH, int KVH, int HS, int rope) {
    char cs[96];
    snprintf(cs, sizeof cs, "(B,T,NH,KVH,HS)=(%d,%d,%d,%d,%d)%s", B, T, NH, KVH, HS,
             rope == 2 ? " rope llama3" : rope ? " rope" : "");
    const size_t rows = (size_t)B * T, QD = (size_t)NH * HS, KD = (size_t)KVH * HS;
    const size_t ld = QD + 2 * KD, cut[4] = {0, QD, QD + KD, ld};
    size_t nq = rows * QD, nqkv = rows * ld;
    float *hqkv = hfloats(nqkv);
    for (size_t r = 0; r < rows; r++) {
        for (size_t i = 0; i < ld; i++) {
            float lim = i < QD + KD ? 2.0f : 1.0f;   // q, k: scores ~1.3 RMS, peaked
            hqkv[r * ld + i] = bf16_round(lim * urand());
        }
    }
    pair qkv = p_in(ACT, hqkv, nqkv);
    pair ct = NONE, st = NONE;
    float *hct = NULL, *hst = NULL;
    if (rope) {
        int maxT = T + 5;
        size_t nt = (size_t)maxT * (HS / 2);
        rope_tables(&hct, &hst, maxT, HS, rope);
        ct = p_in(F32, hct, nt);
        st = p_in(F32, hst, nt);
    }
    size_t sg = gpu->attention_state_floats(B, T, NH, KVH, HS, rope != 0);
    pair state = f32_sized(sg, cpu->attention_state_floats(B, T, NH, KVH, HS, rope != 0));
    pair out = p_out(ACT, nq);
    for (int s = 0; s < 2; s++) {
        const anv_backend *be = both[s];
        be->attention_forward(on(out, be), on(state, be), on(qkv, be), on(ct, be), on(st, be),
                              B, T, NH, KVH, HS);
    }
    compare(nm("attention_forward out %s", cs), out, TOL_ATTN);
    size_t nl = (size_t)B * NH * T;
    if (sg >= nl) {
        // the bf16 tensor-core path rounds the rotated q and k to bf16 (TOL_ATTN_LSE_ROPE);
        float *hq = cols(hqkv, rows, ld, 0, QD), *hk = cols(hqkv, rows, ld, QD, QD + KD);
        const float *rq = rope ? rope_host(hq, hct, hst, B, T, NH, HS) : hq;
        const float *rk = rope ? rope_host(hk, hct, hst, B, T, KVH, HS) : hk;
        compare_arrays(nm("attention_forward state = lse (B,NH,T) as ops.h says %s", cs),
                       t_get(state.g), attention_lse(rq, rk, B, T, NH, KVH, HS), NULL, nl,
                       rope ? TOL_ATTN_LSE_ROPE : TOL_ATTN_LSE);
    } else {
        report(0, "attention_state_floats %s = %zu, below B*NH*T = %zu", cs, sg, nl);
    }
    // the forward with 64-row query blocks (ANVIL_CUDA_ATT_FWD_ROWS=64; the default
    // takes 128 rows for head sizes 32 and 64): each row visits the same keys with the
    // same arithmetic, so the same bits, out and state
    {
        pair out64 = p_out(ACT, nq);
        pair state64 = f32_sized(sg, 1);
        setenv("ANVIL_CUDA_ATT_FWD_ROWS", "64", 1);
        gpu->attention_forward(on(out64, gpu), on(state64, gpu), on(qkv, gpu), on(ct, gpu),
                               on(st, gpu), B, T, NH, KVH, HS);
        unsetenv("ANVIL_CUDA_ATT_FWD_ROWS");
        compare_exact(nm("attention_forward out, 64-row query blocks: same bits %s", cs),
                      t_get(out64.g), t_get(out.g), nq);
        compare_exact(nm("attention_forward state, 64-row query blocks: same bits %s", cs),
                      t_get(state64.g), t_get(state.g), sg);
    }

    // backward, each backend on its own forward's out and state; the scratch the op
    // overwrites holds NaN on the gpu, so an op that assumes it zeroed fails
    pair dout = p_in(ACT, hrand(nq, -1, 1), nq);
    pair scratch = f32_sized(gpu->attention_scratch_floats(B, T, NH, KVH, HS, rope != 0),
                             cpu->attention_scratch_floats(B, T, NH, KVH, HS, rope != 0));
    // dqkv is overwritten (ops.h): NaN on the gpu beforehand
    pair dqkv = p_out(ACT, nqkv);
    for (int s = 0; s < 2; s++) {
        const anv_backend *be = both[s];
        be->attention_backward(on(dqkv, be), on(scratch, be), on(dout, be), on(out, be),
                               on(state, be), on(qkv, be), on(ct, be), on(st, be), B, T, NH,
                               KVH, HS);
    }
    const float *gg = t_get(dqkv.g), *gc = t_get(dqkv.c);
    for (int part = 0; part < 3; part++) {
        size_t c0 = cut[part], c1 = cut[part + 1];
        compare_arrays(nm("attention_backward d%c (overwritten) %s", "qkv"[part], cs),
                       cols(gg, rows, ld, c0, c1), cols(gc, rows, ld, c0, c1), NULL,
                       rows * (c1 - c0), TOL_ATTN_GRAD);
    }
    // train.deterministic: the same gradients (dq by query tiles, no atomics), and the
    // same bits when run again (under the emulation's shuffled schedules the blocks run
    // in another order each time)
    if (gpu->set_deterministic) {
        gpu->set_deterministic(1);
        pair det = p_out(ACT, nqkv);
        float *first = NULL;
        for (int rep = 0; rep < 2; rep++) {
            gpu->attention_backward(on(det, gpu), on(scratch, gpu), on(dout, gpu),
                                    on(out, gpu), on(state, gpu), on(qkv, gpu), on(ct, gpu),
                                    on(st, gpu), B, T, NH, KVH, HS);
            if (rep == 0) first = t_get(det.g);
        }
        gpu->set_deterministic(0);
        const float *gd = t_get(det.g);
        for (int part = 0; part < 3; part++) {
            size_t c0 = cut[part], c1 = cut[part + 1];
            compare_arrays(nm("attention_backward deterministic d%c %s", "qkv"[part], cs),
                           cols(gd, rows, ld, c0, c1), cols(gc, rows, ld, c0, c1), NULL,
                           rows * (c1 - c0), TOL_ATTN_GRAD);
        }
        compare_exact(nm("attention_backward deterministic, run twice: same bits %s", cs),
                      gd, first, nqkv);
    }
    case_end(nm("attention %s", cs));
}
