// kernels/cpu/attention.c: causal self-attention with grouped-query heads, fp32 cpu.
//
// Query head h reads key/value head h / (NH/KVH) (GQA; NH == KVH is plain multi-head
// attention). For each batch row b, query head h and position t:
//   s[t2] = q_t . k_t2 / sqrt(HS) for t2 <= t       (causal: later positions masked)
//   p = softmax(s)        (max subtracted, so exp never overflows; cpu_expf of cpu_ops.h)
//   out_t = sum_t2 p[t2] v_t2
// The probabilities p are kept in `state` (B,NH,T,T), zero above the diagonal, for
// the backward pass. Forward splits the (b, h) pairs over threads.
//
// Backward (dq, dk, dv overwritten: each thread first zeroes the rows it owns, then
// accumulates into them), per (b, h, t), with dp[t2] = dout_t . v_t2:
//   dv_t2 += p[t2] dout_t
//   ds[t2] = p[t2] (dp[t2] - sum_j p[j] dp[j])       (softmax backward)
//   dq_t  += ds[t2] k_t2 / sqrt(HS),   dk_t2 += ds[t2] q_t / sqrt(HS)
// Several query heads share one kv head, so splitting query heads over threads would
// race on dk/dv. The backward therefore splits (b, kv head) pairs: one thread does every
// query head of a group and is the only writer of that group's dk/dv rows (and of the
// heads' dq rows). `scratch` holds one dp row (T) per (b, h): B*NH*T floats.
//
// RoPE (tables given): the forward rotates q and k into copies kept in `state` after
// the probabilities, and attends with those; the backward reads the copies, gathers
// the gradients w.r.t. the rotated q and k in `scratch` (after the dp rows, laid out
// like the copies), and writes them rotated back (the transpose) into dq and dk. The
// thread that owns a (b, kv head) does that for its own rows only.
//
// Layout (ops.h): q, k and v are column blocks of one qkv row per position (NH, KVH,
// KVH heads), so they, dq, dk and dv are read and written with the row stride
// ld = (NH + 2 KVH) HS; out and dout are (B,T,NH,HS); the rotated copies and their
// gradients are (B,T,NH,HS) and (B,T,KVH,HS).
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"

// Rotated q (B,T,NH,HS) and k (B,T,KVH,HS) follow the probabilities in the state.
size_t cpu_attention_state_floats(int B, int T, int NH, int KVH, int HS, int rope) {
    size_t n = (size_t)B * NH * T * T;    // softmax probabilities (B,NH,T,T)
    if (rope) n += (size_t)B * T * (NH + KVH) * HS;
    return n;
}

// dp rows (B,NH,T), then with RoPE the gradients w.r.t. the rotated q and k.
size_t cpu_attention_scratch_floats(int B, int T, int NH, int KVH, int HS, int rope) {
    size_t n = (size_t)B * NH * T;        // one dp row (T) per (b, h)
    if (rope) n += (size_t)B * T * (NH + KVH) * HS;
    return n;
}

void cpu_attention_forward(anv_act *out_, float *state, const anv_act *qkv_,
                           const float *rope_cos, const float *rope_sin, int B, int T, int NH,
                           int KVH, int HS) {
    float *out = out_;
    const float *qkv = qkv_;
    // out (B,T,NH,HS), state (B,NH,T,T) [+ rotated q (B,T,NH,HS), k (B,T,KVH,HS)],
    // qkv (B,T,NH+2KVH,HS)
    int group = NH / KVH;                 // query heads per kv head
    float scale = 1.0f / sqrtf((float)HS);
    const size_t ld = (size_t)(NH + 2 * KVH) * HS;   // between positions in qkv
    const size_t os = (size_t)NH * HS;               // between positions in out
    const float *q = qkv, *k = qkv + os, *v = qkv + os + (size_t)KVH * HS;
    size_t qs = ld, ks = ld;              // between positions in the q and k read
    if (rope_cos) {
        float *qr = state + (size_t)B * NH * T * T;              // (B,T,NH,HS)
        float *kr = qr + (size_t)B * T * os;                     // (B,T,KVH,HS)
        cpu_rope_rotate(qr, q, ld, rope_cos, rope_sin, B, T, NH, HS, 1.0f);
        cpu_rope_rotate(kr, k, ld, rope_cos, rope_sin, B, T, KVH, HS, 1.0f);
        q = qr, qs = os;
        k = kr, ks = (size_t)KVH * HS;
    }

    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            int kvh = h / group;
            const float *q_bh = q + (size_t)b * T * qs + (size_t)h * HS;      // (T, HS) strided
            const float *k_bh = k + (size_t)b * T * ks + (size_t)kvh * HS;    // (T, HS) strided
            const float *v_bh = v + (size_t)b * T * ld + (size_t)kvh * HS;    // (T, HS) strided
            float *out_bh = out + (size_t)b * T * os + (size_t)h * HS;        // (T, HS) strided
            float *att_bh = state + ((size_t)b * NH + h) * T * T;             // (T, T)

            for (int t = 0; t < T; t++) {
                const float *q_t = q_bh + t * qs;                 // (HS)
                float *p = att_bh + (size_t)t * T;                // (T)

                // scores and their max, for t2 <= t
                float maxval = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *k_t2 = k_bh + t2 * ks;           // (HS)
                    float dot = 0.0f;
                    #pragma omp simd reduction(+:dot)
                    for (int i = 0; i < HS; i++) dot += q_t[i] * k_t2[i];
                    p[t2] = dot * scale;
                    if (p[t2] > maxval) maxval = p[t2];
                }
                // softmax; masked positions hold exact zeros
                float sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    p[t2] = cpu_expf(p[t2] - maxval);
                    sum += p[t2];
                }
                float inv_sum = 1.0f / sum;
                for (int t2 = 0; t2 <= t; t2++) p[t2] *= inv_sum;
                for (int t2 = t + 1; t2 < T; t2++) p[t2] = 0.0f;

                // weighted sum of values
                float *out_t = out_bh + t * os;                   // (HS)
                for (int i = 0; i < HS; i++) out_t[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *v_t2 = v_bh + t2 * ld;           // (HS)
                    float pt = p[t2];
                    for (int i = 0; i < HS; i++) out_t[i] += pt * v_t2[i];
                }
            }
        }
    }
}

// Zero the rows that belong to batch row b and kv head kvh: its query heads' rows of
// dq (positions qs apart), its rows of dk (ks apart) and dv (vs apart), each at its
// head's column block.
static void rows_zero(float *dq, float *dk, float *dv, size_t qs, size_t ks, size_t vs, int b,
                      int kvh, int T, int NH, int KVH, int HS) {
    int group = NH / KVH;
    for (int t = 0; t < T; t++) {
        size_t bt = (size_t)b * T + t;
        memset(dk + bt * ks + (size_t)kvh * HS, 0, (size_t)HS * sizeof(float));
        memset(dv + bt * vs + (size_t)kvh * HS, 0, (size_t)HS * sizeof(float));
        memset(dq + bt * qs + (size_t)kvh * group * HS, 0, (size_t)group * HS * sizeof(float));
    }
}

// The same rows of dq and dk (positions ld apart): rotated back from dq_rot
// (B,T,NH,HS) and dk_rot (B,T,KVH,HS).
static void rope_rows_back(float *dq, float *dk, size_t ld, const float *dq_rot,
                           const float *dk_rot, const float *cos_tab, const float *sin_tab,
                           int b, int kvh, int T, int NH, int KVH, int HS) {
    int group = NH / KVH;
    for (int t = 0; t < T; t++) {
        size_t bt = (size_t)b * T + t;
        cpu_rope_row(dk + bt * ld + (size_t)kvh * HS, dk_rot + (bt * KVH + kvh) * HS, cos_tab,
                     sin_tab, t, HS, -1.0f);
        for (int h = kvh * group; h < (kvh + 1) * group; h++)
            cpu_rope_row(dq + bt * ld + (size_t)h * HS, dq_rot + (bt * NH + h) * HS, cos_tab,
                         sin_tab, t, HS, -1.0f);
    }
}

void cpu_attention_backward(anv_act *dqkv_, float *scratch, const anv_act *dout_,
                            const anv_act *out, const float *state, const anv_act *qkv_,
                            const float *rope_cos, const float *rope_sin, int B, int T,
                            int NH, int KVH, int HS) {
    (void)out;   // the saved probabilities (state) make the forward's output unneeded
    float *dqkv = dqkv_;
    const float *dout = dout_;
    const float *qkv = qkv_;
    // dqkv (B,T,NH+2KVH,HS) =, scratch (B,NH,T) [+ dq_rot (B,T,NH,HS), dk_rot
    // (B,T,KVH,HS)] overwritten, dout (B,T,NH,HS), state as the forward's,
    // qkv (B,T,NH+2KVH,HS)
    int group = NH / KVH;
    float scale = 1.0f / sqrtf((float)HS);
    const size_t ld = (size_t)(NH + 2 * KVH) * HS;
    const size_t os = (size_t)NH * HS, kvd = (size_t)KVH * HS;
    const float *q = qkv, *k = qkv + os, *v = qkv + os + kvd;
    float *dq = dqkv, *dk = dqkv + os, *dv = dqkv + os + kvd;
    // with RoPE: attend with the rotated copies, gather into dq_rot / dk_rot
    float *dq_acc = dq, *dk_acc = dk;
    size_t qs = ld, ks = ld;              // between positions in q / dq_acc, k / dk_acc
    if (rope_cos) {
        q = state + (size_t)B * NH * T * T;
        k = q + (size_t)B * T * os;
        dq_acc = scratch + (size_t)B * NH * T;
        dk_acc = dq_acc + (size_t)B * T * os;
        qs = os, ks = kvd;
    }

    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int kvh = 0; kvh < KVH; kvh++) {
            const float *k_bh = k + (size_t)b * T * ks + (size_t)kvh * HS;   // (T, HS) strided
            const float *v_bh = v + (size_t)b * T * ld + (size_t)kvh * HS;   // (T, HS) strided
            float *dk_bh = dk_acc + (size_t)b * T * ks + (size_t)kvh * HS;   // (T, HS) strided
            float *dv_bh = dv + (size_t)b * T * ld + (size_t)kvh * HS;       // (T, HS) strided
            rows_zero(dq_acc, dk_acc, dv, qs, ks, ld, b, kvh, T, NH, KVH, HS);

            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                const float *q_bh = q + (size_t)b * T * qs + (size_t)h * HS;        // (T, HS)
                const float *dout_bh = dout + (size_t)b * T * os + (size_t)h * HS;  // (T, HS)
                float *dq_bh = dq_acc + (size_t)b * T * qs + (size_t)h * HS;        // (T, HS)
                const float *att_bh = state + ((size_t)b * NH + h) * T * T;         // (T, T)
                float *dp = scratch + ((size_t)b * NH + h) * T;                     // (T)

                for (int t = 0; t < T; t++) {
                    const float *p = att_bh + (size_t)t * T;      // (T)
                    const float *q_t = q_bh + t * qs;             // (HS)
                    const float *dout_t = dout_bh + t * os;       // (HS)
                    float *dq_t = dq_bh + t * qs;                 // (HS)

                    // through out_t = sum p v: dp and dv
                    float pdp = 0.0f;                             // sum_j p[j] dp[j]
                    for (int t2 = 0; t2 <= t; t2++) {
                        const float *v_t2 = v_bh + t2 * ld;       // (HS)
                        float *dv_t2 = dv_bh + t2 * ld;           // (HS)
                        float dot = 0.0f;
                        float pt = p[t2];
                        #pragma omp simd reduction(+:dot)
                        for (int i = 0; i < HS; i++) {
                            dot += dout_t[i] * v_t2[i];
                            dv_t2[i] += pt * dout_t[i];
                        }
                        dp[t2] = dot;
                        pdp += pt * dot;
                    }
                    // through the softmax and the scaled dot products: dq and dk
                    for (int t2 = 0; t2 <= t; t2++) {
                        const float *k_t2 = k_bh + t2 * ks;       // (HS)
                        float *dk_t2 = dk_bh + t2 * ks;           // (HS)
                        float ds = p[t2] * (dp[t2] - pdp) * scale;
                        for (int i = 0; i < HS; i++) {
                            dq_t[i] += ds * k_t2[i];
                            dk_t2[i] += ds * q_t[i];
                        }
                    }
                }
            }
            if (rope_cos)
                rope_rows_back(dq, dk, ld, dq_acc, dk_acc, rope_cos, rope_sin, b, kvh, T, NH,
                               KVH, HS);
        }
    }
}
