// kernels/cpu/encoder.c: token (+ optional learned position) embedding, fp32 cpu.
//
// Forward is a gather: row tokens[b,t] of wte plus row t of wpe (GPT-2; Llama has no
// wpe and passes NULL). Backward is the matching scatter-add. A token can occur many
// times in a batch, so splitting the scatter over (b,t) would race on dwte rows; instead
// each thread owns a slice of the channels and walks every (b,t), which is race-free and
// gives the same sums on any thread count. dwpe has one row per t, so t is split.
//
// Under tensor parallelism wte is one vocabulary shard, rows [v0, v0+Vs) of the full
// table. A token outside the shard gathers a zero row and scatters nothing, so summing
// the P shards' outputs (the all-reduce in parallel/) gives the unsharded embedding;
// the caller passes wpe to one shard only, or it would be counted P times.
#include "kernels/cpu/cpu_ops.h"

void cpu_encoder_forward(anv_act *out_, const int32_t *tokens, const anv_act *wte_,
                         const anv_act *wpe_, int B, int T, int C, int v0, int Vs) {
    float *out = out_;
    const float *wte = wte_;
    const float *wpe = wpe_;
    // out (B,T,C), tokens (B,T), wte (Vs,C) rows [v0, v0+Vs), wpe (maxT,C) or NULL
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float *out_bt = out + ((size_t)b * T + t) * C;       // (C)
            int ix = tokens[b * T + t] - v0;                      // row in this shard
            const float *wte_ix = ix >= 0 && ix < Vs ? wte + (size_t)ix * C : NULL;  // (C)
            const float *wpe_t = wpe != NULL ? wpe + (size_t)t * C : NULL;          // (C)
            if (wte_ix != NULL && wpe_t != NULL) {
                for (int c = 0; c < C; c++) out_bt[c] = wte_ix[c] + wpe_t[c];
            } else if (wte_ix != NULL) {
                for (int c = 0; c < C; c++) out_bt[c] = wte_ix[c];
            } else if (wpe_t != NULL) {
                for (int c = 0; c < C; c++) out_bt[c] = wpe_t[c];
            } else {
                for (int c = 0; c < C; c++) out_bt[c] = 0.0f;
            }
        }
    }
}

// channels per work unit of the dwte scatter: 64 floats = 4 cache lines per row touched
#define ENCODER_CBLOCK 64

void cpu_encoder_backward(float *dwte, float *dwpe, const anv_act *dout_,
                          const int32_t *tokens, int B, int T, int C, int v0, int Vs) {
    const float *dout = dout_;
    // dwte (Vs,C) += rows [v0, v0+Vs), dwpe (maxT,C) += or NULL, dout (B,T,C),
    // tokens (B,T)
    if (dwte != NULL) {
        int nblocks = (C + ENCODER_CBLOCK - 1) / ENCODER_CBLOCK;
        #pragma omp parallel for schedule(static)
        for (int blk = 0; blk < nblocks; blk++) {
            int c0 = blk * ENCODER_CBLOCK;
            int c1 = c0 + ENCODER_CBLOCK < C ? c0 + ENCODER_CBLOCK : C;
            for (int bt = 0; bt < B * T; bt++) {
                int ix = tokens[bt] - v0;                         // row in this shard
                if (ix < 0 || ix >= Vs) continue;                 // another shard's token
                const float *dout_bt = dout + (size_t)bt * C;     // (C)
                float *dwte_ix = dwte + (size_t)ix * C;           // (C)
                for (int c = c0; c < c1; c++) dwte_ix[c] += dout_bt[c];
            }
        }
    }
    if (dwpe != NULL) {
        #pragma omp parallel for schedule(static)
        for (int t = 0; t < T; t++) {
            float *dwpe_t = dwpe + (size_t)t * C;                 // (C)
            for (int b = 0; b < B; b++) {
                const float *dout_bt = dout + ((size_t)b * T + t) * C;  // (C)
                for (int c = 0; c < C; c++) dwpe_t[c] += dout_bt[c];
            }
        }
    }
}
