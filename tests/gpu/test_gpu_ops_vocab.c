// tests/gpu/test_gpu_ops_vocab.c: the vocabulary ops of the gpu op test, the token
// embedding and the softmax cross-entropy, both over a (possibly sharded) vocabulary;
// helpers, bounds and the ground rules (poisoned outputs, pre-filled gradients,
// guards) are test_gpu_ops.c's and test_gpu_ops.h's.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kernels/ops.h"
#include "tests/gpu/test_gpu_ops.h"

// ---- encoder -----------------------------------------------------------------------------

// Tokens are drawn from [0, V): those outside the shard [v0, v0+Vs) gather nothing.
void test_encoder(int B, int T, int C, int v0, int Vs, int V, int with_wpe) {
    char cs[96];
    snprintf(cs, sizeof cs, "B=%d T=%d C=%d v0=%d Vs=%d V=%d%s", B, T, C, v0, Vs, V,
             with_wpe ? " wpe" : "");
    int maxT = T + 3;                             // dwpe rows [T, maxT) stay untouched
    size_t nbt = (size_t)B * T, nout = nbt * C, nwte = (size_t)Vs * C, nwpe = (size_t)maxT * C;
    int32_t *tok = hmalloc(nbt * sizeof(int32_t));
    for (size_t i = 0; i < nbt; i++) tok[i] = (int32_t)(rng_next() % (uint64_t)V);
    tok[0] = v0 + Vs - 1;                         // the shard's last row
    pair tokens = p_i32(tok, nbt);
    pair wte = p_in(ACT, hrand(nwte, -1, 1), nwte);
    pair wpe = with_wpe ? p_in(ACT, hrand(nwpe, -1, 1), nwpe) : NONE;
    pair out = p_out(ACT, nout);
    for (int s = 0; s < 2; s++) {
        const anv_backend *be = both[s];
        be->encoder_forward(on(out, be), on(tokens, be), on(wte, be), on(wpe, be), B, T, C,
                            v0, Vs);
    }
    compare(nm("encoder_forward out %s", cs), out, TOL_ROUND1);

    pair dout = p_in(ACT, hrand(nout, -1, 1), nout);
    pair dwte = p_zero(F32, nwte), dwpe = with_wpe ? p_zero(F32, nwpe) : NONE;
    cpu->encoder_backward(on(dwte, cpu), on(dwpe, cpu), on(dout, cpu), on(tokens, cpu), B, T,
                          C, v0, Vs);
    float *pre_wte = prefill(dwte), *pre_wpe = prefill(dwpe);
    for (int s = 0; s < 2; s++) {
        const anv_backend *be = both[s];
        be->encoder_backward(on(dwte, be), on(dwpe, be), on(dout, be), on(tokens, be), B, T,
                             C, v0, Vs);
    }
    compare_acc(nm("encoder_backward dwte %s", cs), dwte, pre_wte, TOL_F32);
    if (with_wpe) compare_acc(nm("encoder_backward dwpe %s", cs), dwpe, pre_wpe, TOL_F32);

    char *hit = hmalloc((size_t)Vs);
    memset(hit, 0, (size_t)Vs);
    for (size_t i = 0; i < nbt; i++) {
        int ix = tok[i] - v0;
        if (ix >= 0 && ix < Vs) hit[ix] = 1;
    }
    const float *g = t_get(dwte.g);
    int ok = 1, rows = 0;
    for (int r = 0; r < Vs; r++) {
        if (hit[r]) continue;
        rows++;
        for (int c = 0; c < C; c++) ok &= g[(size_t)r * C + c] == pre_wte[(size_t)r * C + c];
    }
    if (with_wpe) {
        const float *gp = t_get(dwpe.g);
        for (size_t i = (size_t)T * C; i < nwpe; i++) ok &= gp[i] == pre_wpe[i];
    }
    report(ok, "encoder_backward %s: %d dwte rows without a token%s untouched", cs, rows,
           with_wpe ? " and dwpe rows >= T" : "");

    // train.deterministic: the same dwte without atomics, and the same bits when run
    // again from the same starting values (under the emulation's shuffled schedules the
    // blocks run in another order each time)
    if (gpu->set_deterministic) {
        pair d2 = p_zero(F32, nwte);
        float *pre2 = prefill(d2);
        cpu->encoder_backward(on(d2, cpu), NULL, on(dout, cpu), on(tokens, cpu), B, T, C, v0,
                              Vs);
        gpu->set_deterministic(1);
        gpu->encoder_backward(on(d2, gpu), NULL, on(dout, gpu), on(tokens, gpu), B, T, C, v0,
                              Vs);
        float *first = t_get(d2.g);
        t_set(d2.g, pre2);
        gpu->encoder_backward(on(d2, gpu), NULL, on(dout, gpu), on(tokens, gpu), B, T, C, v0,
                              Vs);
        gpu->set_deterministic(0);
        compare_acc(nm("encoder_backward deterministic dwte %s", cs), d2, pre2, TOL_F32);
        compare_exact(nm("encoder_backward deterministic, run twice: same bits %s", cs),
                      t_get(d2.g), first, nwte);
    }
    case_end(nm("encoder %s", cs));
}

// ---- cross-entropy -------------------------------------------------------------------

// The vocabulary [0, V) split into P shards of Vs columns, shard p holding [p Vs, p Vs
// + Vs) of which Vv_p = clamp(V - p Vs, 0, Vs) are real. Each shard's stats are computed
// separately into stats[p], combined, and each shard's gradient formed, non-aliased
// (poisoned dlogits) and in place (dlogits = logits). Every 4th row is ignored.
void test_crossentropy(int N, int V, int P, int Vs) {
    char cs[64];
    snprintf(cs, sizeof cs, "N=%d V=%d P=%d Vs=%d", N, V, P, Vs);
    const float dloss = 0.25f;
    size_t nl = (size_t)N * Vs;
    int32_t *tg = hmalloc((size_t)N * sizeof(int32_t));
    for (int i = 0; i < N; i++) tg[i] = i % 4 == 3 ? -1 : (int32_t)(rng_next() % (uint64_t)V);
    pair targets = p_i32(tg, (size_t)N);
    pair stats = p_out(F32, (size_t)P * N * 3);
    pair logits[4];
    float *hl[4];
    int empty = -1;                               // a shard without real columns
    for (int p = 0; p < P; p++) {
        int v0 = p * Vs, Vv = V - v0 < 0 ? 0 : V - v0 > Vs ? Vs : V - v0;
        if (Vv == 0) empty = p;
        hl[p] = hrand(nl, -6, 6);
        for (int r = 0; r < N; r++) {
            // padding that took part would win the max and dominate the sum
            for (int i = Vv; i < Vs; i++) hl[p][(size_t)r * Vs + i] = 20.0f;
        }
        logits[p] = p_in(ACT, hl[p], nl);
        for (int s = 0; s < 2; s++) {
            const anv_backend *be = both[s];
            float *st = (float *)on(stats, be) + (size_t)p * N * 3;     // (N,3) of shard p
            be->crossentropy_stats(st, on(logits[p], be), on(targets, be), N, v0, Vv, Vs);
        }
    }
    const float *sg = t_get(stats.g), *sc = t_get(stats.c);
    size_t ns = (size_t)P * N;
    float *col[2][3];
    for (int j = 0; j < 3; j++) {
        col[0][j] = hfloats(ns);
        col[1][j] = hfloats(ns);
        for (size_t i = 0; i < ns; i++) {
            col[0][j][i] = sg[i * 3 + j];
            col[1][j][i] = sc[i * 3 + j];
        }
    }
    compare_exact(nm("crossentropy_stats m %s", cs), col[0][0], col[1][0], ns);
    compare_arrays(nm("crossentropy_stats s %s", cs), col[0][1], col[1][1], NULL, ns, TOL_F32);
    compare_exact(nm("crossentropy_stats z %s", cs), col[0][2], col[1][2], ns);
    if (empty >= 0) {
        int ok = 1;
        for (int r = 0; r < N; r++) {
            const float *st = sg + ((size_t)empty * N + r) * 3;
            ok &= st[0] == -INFINITY && st[1] == 0.0f && st[2] == 0.0f;
        }
        report(ok, "crossentropy_stats %s: shard %d (no real column) gives {-inf, 0, 0}", cs,
               empty);
    }

    pair lse = p_out(F32, (size_t)N), losses = p_out(F32, (size_t)N);
    for (int s = 0; s < 2; s++) {
        const anv_backend *be = both[s];
        be->crossentropy_combine(on(losses, be), on(lse, be), on(stats, be), on(targets, be),
                                 N, P);
    }
    compare(nm("crossentropy_combine lse %s", cs), lse, TOL_F32);
    compare(nm("crossentropy_combine losses %s", cs), losses, TOL_F32);

    for (int p = 0; p < P; p++) {
        int v0 = p * Vs, Vv = V - v0 < 0 ? 0 : V - v0 > Vs ? Vs : V - v0;
        for (int alias = 0; alias < 2; alias++) {
            pair dl = alias ? p_in(ACT, hl[p], nl) : p_out(ACT, nl);
            pair src = alias ? dl : logits[p];
            for (int s = 0; s < 2; s++) {
                const anv_backend *be = both[s];
                be->crossentropy_backward(on(dl, be), on(src, be), on(lse, be),
                                          on(targets, be), N, v0, Vv, Vs, dloss);
            }
            const char *an = alias ? " (aliases logits)" : "";
            compare(nm("crossentropy_backward dlogits shard %d%s %s", p, an, cs), dl,
                    TOL_CE_DLOGITS);
            const float *g = t_get(dl.g);
            int ok = 1;
            for (int r = 0; r < N; r++) {
                for (int i = tg[r] < 0 ? 0 : Vv; i < Vs; i++) ok &= g[(size_t)r * Vs + i] == 0.0f;
            }
            report(ok, "crossentropy_backward shard %d%s %s: padding and ignored rows 0", p,
                   an, cs);
        }
    }
    case_end(nm("crossentropy %s", cs));
}

// crossentropy_fused (P = 1) against the cpu's on the same bf16 logits: losses and
// dlogits, into poisoned outputs and in place (dlogits = logits). Every 4th row is
// ignored; padding columns hold large logits that must get no mass. Which cuda path
// runs depends on the row: one kernel when it fits in shared memory twice per SM
// (GPT-2's 50304 columns), else the three kernels (Llama 3's 128256, or Vs % 8 != 0).
void test_crossentropy_fused(int N, int V, int Vs) {
    char cs[64];
    snprintf(cs, sizeof cs, "N=%d V=%d Vs=%d", N, V, Vs);
    const float dloss = 0.125f;
    size_t nl = (size_t)N * Vs;
    int32_t *tg = hmalloc((size_t)N * sizeof(int32_t));
    for (int i = 0; i < N; i++) tg[i] = i % 4 == 3 ? -1 : (int32_t)(rng_next() % (uint64_t)V);
    pair targets = p_i32(tg, (size_t)N);
    float *hl = hrand(nl, -6, 6);
    for (int r = 0; r < N; r++)
        for (int i = V; i < Vs; i++) hl[(size_t)r * Vs + i] = 20.0f;
    pair logits = p_in(ACT, hl, nl);
    for (int alias = 0; alias < 2; alias++) {
        pair losses = p_out(F32, (size_t)N);
        pair dl = alias ? p_in(ACT, hl, nl) : p_out(ACT, nl);
        pair src = alias ? dl : logits;
        for (int s = 0; s < 2; s++) {
            const anv_backend *be = both[s];
            be->crossentropy_fused(on(dl, be), on(losses, be), on(src, be), on(targets, be),
                                   N, V, Vs, dloss);
        }
        const char *an = alias ? " (in place)" : "";
        compare(nm("crossentropy_fused losses%s %s", an, cs), losses, TOL_F32);
        compare(nm("crossentropy_fused dlogits%s %s", an, cs), dl, TOL_CE_DLOGITS);
        const float *g = t_get(dl.g), *lg = t_get(losses.g);
        int ok = 1;
        for (int r = 0; r < N; r++) {
            ok &= tg[r] >= 0 || lg[r] == 0.0f;
            for (int i = tg[r] < 0 ? 0 : V; i < Vs; i++) ok &= g[(size_t)r * Vs + i] == 0.0f;
        }
        report(ok, "crossentropy_fused%s %s: padding, ignored rows and their losses 0", an,
               cs);
    }
    case_end(nm("crossentropy_fused %s", cs));
}

