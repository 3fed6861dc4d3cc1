// tests/unit/test_ops_vocab.c: the ops that touch the vocabulary, whole and as
// tensor-parallel shards: encoder_forward / encoder_backward over a slice [v0, v0+Vs)
// of the embedding table, and the three-step cross-entropy (crossentropy_stats,
// crossentropy_combine, crossentropy_backward) on P shards of the logits, against
// naive double references, finite differences and the unsharded op. Part of test_ops
// (helpers and conventions in test_ops.h and test_ops.c).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"
#include "tests/unit/test_ops.h"

// ----------------------------------------------------------------------------
// encoder

struct encoder_case {
    int B, T, C, v0, Vs;
    int32_t *tokens;         // (B,T), ids in the full vocabulary
    float *wte, *wpe;        // (Vs,C) rows [v0, v0+Vs) of the full table, (maxT,C) or NULL
    float *out, *R;          // (B,T,C)
};

static double encoder_loss(void *p) {
    struct encoder_case *c = p;
    be->encoder_forward(c->out, c->tokens, c->wte, c->wpe, c->B, c->T, c->C, c->v0, c->Vs);
    return dot_d(c->out, c->R, (size_t)c->B * c->T * c->C);
}

// The full table has Vp = 11 rows; the op sees the shard [v0, v0+Vs) (all of it when
// v0 = 0, Vs = 11). wte and dwte sit between two guard rows of random values: a read
// outside the shard changes the forward result, a write there changes a guard row.
void test_encoder(int with_wpe, int v0, int Vs, uint64_t *s) {
    struct encoder_case c = {.B = 2, .T = 5, .C = 6, .v0 = v0, .Vs = Vs};
    int Vp = 11, maxT = 8, C = c.C;
    size_t nout = (size_t)c.B * c.T * C, nwte = (size_t)Vs * C, nwpe = (size_t)maxT * C;
    int32_t tokens[10];
    for (int i = 0; i < c.B * c.T; i++) tokens[i] = (int32_t)(rng_next(s) % (uint64_t)Vp);
    tokens[0] = tokens[3] = tokens[7] = v0 + Vs - 1;  // the shard's last row, repeated
    tokens[1] = v0;                                   // its first row; rows just outside
    if (v0 + Vs < Vp) tokens[2] = v0 + Vs;
    if (v0 > 0) tokens[4] = v0 - 1;
    c.tokens = tokens;
    float *wte_buf = frand(nwte + 2 * C, -1, 1, s);
    c.wte = wte_buf + C;
    c.wpe = with_wpe ? frand(nwpe, -1, 1, s) : NULL;
    c.out = frand(nout, -1, 1, s);                // garbage: forward must overwrite
    c.R = frand(nout, -1, 1, s);
    char name[96];
    const char *tag = with_wpe ? "wpe" : "no wpe";

    // forward vs reference
    encoder_loss(&c);
    double *ref = malloc((nout + nwte + 2 * C) * sizeof(double));
    for (int bt = 0; bt < c.B * c.T; bt++) {
        int ix = tokens[bt] - v0;
        for (int i = 0; i < C; i++) {
            ref[(size_t)bt * C + i] = (ix >= 0 && ix < Vs ? c.wte[(size_t)ix * C + i] : 0.0)
                + (with_wpe ? c.wpe[(size_t)(bt % c.T) * C + i] : 0.0);
        }
    }
    snprintf(name, sizeof name, "encoder_forward (%s, v0=%d Vs=%d) vs reference", tag, v0, Vs);
    check(name, rel_err(c.out, ref, nout), REF_TOL);

    // backward, accumulated onto random pre-fills
    // (reference: guard rows included, where nothing may be added)
    float *dwte_buf = frand(nwte + 2 * C, -1, 1, s), *dwte_buf0 = fdup(dwte_buf, nwte + 2 * C);
    float *dwpe = with_wpe ? frand(nwpe, -1, 1, s) : NULL;
    float *dwpe0 = with_wpe ? fdup(dwpe, nwpe) : NULL;
    be->encoder_backward(dwte_buf + C, dwpe, c.R, c.tokens, c.B, c.T, C, v0, Vs);
    float *gwte = fdiff(dwte_buf, dwte_buf0, nwte + 2 * C);
    for (size_t i = 0; i < nwte + 2 * C; i++) ref[i] = 0.0;
    for (int bt = 0; bt < c.B * c.T; bt++) {
        int ix = tokens[bt] - v0;
        for (int i = 0; ix >= 0 && ix < Vs && i < C; i++) ref[(ix + 1) * C + i] += c.R[bt * C + i];
    }
    snprintf(name, sizeof name, "encoder_backward dwte (%s, v0=%d Vs=%d) vs reference", tag, v0, Vs);
    check(name, rel_err(gwte, ref, nwte + 2 * C), REF_TOL);
    snprintf(name, sizeof name, "encoder_backward dwte (%s, v0=%d Vs=%d) vs finite diff", tag, v0, Vs);
    check(name, fd_error(c.wte, nwte, gwte + C, encoder_loss, &c, s), FD_TOL);
    if (with_wpe) {
        float *gwpe = fdiff(dwpe, dwpe0, nwpe);
        snprintf(name, sizeof name, "encoder_backward dwpe (v0=%d Vs=%d) vs finite diff", v0, Vs);
        check(name, fd_error(c.wpe, nwpe, gwpe, encoder_loss, &c, s), FD_TOL);
        be->free(gwpe);
    }
    free(ref);
    be->free(gwte); be->free(dwte_buf); be->free(dwte_buf0); be->free(dwpe); be->free(dwpe0);
    be->free(wte_buf); be->free(c.wpe); be->free(c.out); be->free(c.R);
}

// A table split into P shards: the sum of the shards' forward outputs (wpe on shard 0
// only) and the concatenation of their dwte must equal the unsharded op's BITWISE:
// every element is the same float sum, the other shards only add zeros / skip tokens.
void test_encoder_shards(int P, const int *v0s, uint64_t *s) {
    int B = 2, T = 5, C = 6, Vp = 11, maxT = 8;
    size_t nout = (size_t)B * T * C, nwte = (size_t)Vp * C, nwpe = (size_t)maxT * C;
    int32_t tokens[10];
    for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)(rng_next(s) % (uint64_t)Vp);
    float *wte = frand(nwte, -1, 1, s), *wpe = frand(nwpe, -1, 1, s), *dout = frand(nout, -1, 1, s);
    float *out1 = falloc(nout), *outp = falloc(nout), *sum = falloc(nout);
    float *dwte1 = falloc(nwte), *dwpe1 = falloc(nwpe), *dwtep = falloc(nwte), *dwpep = falloc(nwpe);
    be->encoder_forward(out1, tokens, wte, wpe, B, T, C, 0, Vp);
    be->encoder_backward(dwte1, dwpe1, dout, tokens, B, T, C, 0, Vp);
    for (int p = 0; p < P; p++) {
        int v0 = v0s[p], Vs = (p + 1 < P ? v0s[p + 1] : Vp) - v0;
        const float *wpe_p = p == 0 ? wpe : NULL;
        be->encoder_forward(outp, tokens, wte + (size_t)v0 * C, wpe_p, B, T, C, v0, Vs);
        for (size_t i = 0; i < nout; i++) sum[i] += outp[i];
        be->encoder_backward(dwtep + (size_t)v0 * C, p == 0 ? dwpep : NULL, dout, tokens,
                             B, T, C, v0, Vs);
    }
    char name[96];
    snprintf(name, sizeof name, "encoder over %d shards: sum of outputs == unsharded", P);
    check_true(name, memcmp(sum, out1, nout * sizeof(float)) == 0);
    snprintf(name, sizeof name, "encoder over %d shards: concatenated dwte, dwpe == unsharded", P);
    check_true(name, memcmp(dwtep, dwte1, nwte * sizeof(float)) == 0
                     && memcmp(dwpep, dwpe1, nwpe * sizeof(float)) == 0);
    be->free(wte); be->free(wpe); be->free(dout); be->free(out1); be->free(outp); be->free(sum);
    be->free(dwte1); be->free(dwpe1); be->free(dwtep); be->free(dwpep);
}

// ----------------------------------------------------------------------------
// crossentropy

struct ce_case {
    int N, V, Vp;            // unsharded: v0 = 0, Vv = V, Vs = Vp
    float dloss;
    float *logits, *stats;   // (N,Vp), (N,3)
    float *losses, *lse;     // (N), (N)
    int32_t *targets;        // (N)
};

// L = dloss * sum(losses) through stats + combine (P = 1): crossentropy_backward's
// output is its gradient
static double ce_loss(void *p) {
    struct ce_case *c = p;
    be->crossentropy_stats(c->stats, c->logits, c->targets, c->N, 0, c->V, c->Vp);
    be->crossentropy_combine(c->losses, c->lse, c->stats, c->targets, c->N, 1);
    double sum = 0.0;
    for (int i = 0; i < c->N; i++) sum += c->losses[i];
    return c->dloss * sum;
}

// V > CE_BLOCK (4096) takes the stats' blocked path, where a later block raises the max.
// Finite differences only for small V (use_fd): at V = 9000 gradients are ~1e-4 and the
// float losses' rounding swamps them. Backward vs reference at 1e-4: lse is a float, and
// at |lse| ~ 1e3 its rounding (3e-5) is a relative error of each exp(l - lse) of the row.
void test_crossentropy(int V, int Vp, int use_fd, uint64_t *s) {
    struct ce_case c = {.N = 6, .V = V, .Vp = Vp, .dloss = 0.25f};
    int N = c.N;
    size_t n = (size_t)N * Vp;
    int32_t targets[6] = {3, -1, (int32_t)(V - 1), 0, -1, 7};
    char name[96];
    c.targets = targets;
    c.logits = frand(n, -3, 3, s);
    c.stats = frand((size_t)N * 3, -1, 1, s);     // garbage: every output is overwritten
    c.losses = frand(N, -1, 1, s), c.lse = frand(N, -1, 1, s);
    // exp(+-1000) is far out of float range: only max subtraction keeps the sums finite.
    // Padding holds logits larger than any real one: they must get no probability mass.
    for (int i = 0; i < Vp; i++) {
        c.logits[1 * Vp + i] += 1000.0f;                              // an ignored row
        c.logits[3 * Vp + i] += 1000.0f;
        c.logits[5 * Vp + i] -= 1000.0f;
    }
    for (size_t i = 0; i < n; i++) c.logits[i] = (int)(i % Vp) < V ? c.logits[i] : 2000.0f;
    c.logits[V - 1] = 8.0f;                       // row 0's max in its last column
    ce_loss(&c);

    // s and lse: relative errors summed over the rows (rows at |l| ~ 1e3 would dominate
    // a norm; a sum, unlike fmax, keeps a NaN); m and z are copied logits: exact
    double ref_loss[6], ref_lse[6], s_err = 0.0, lse_err = 0.0;
    int mz_exact = 1;
    for (int r = 0; r < N; r++) {
        const float *l = c.logits + (size_t)r * Vp;
        double mx = -INFINITY, sum = 0.0;
        for (int i = 0; i < V; i++) mx = fmax(mx, l[i]);
        for (int i = 0; i < V; i++) sum += exp(l[i] - mx);
        ref_lse[r] = log(sum) + mx;
        ref_loss[r] = targets[r] < 0 ? 0.0 : ref_lse[r] - l[targets[r]];
        float z = targets[r] < 0 ? 0.0f : l[targets[r]];
        mz_exact &= c.stats[r * 3] == (float)mx && c.stats[r * 3 + 2] == z;
        s_err += fabs(c.stats[r * 3 + 1] - sum) / sum;
        lse_err += fabs(c.lse[r] - ref_lse[r]) / fabs(ref_lse[r]);
    }
    snprintf(name, sizeof name, "crossentropy_stats V=%d: m = max real logit, z = target logit", V);
    check_true(name, mz_exact);
    snprintf(name, sizeof name, "crossentropy_stats V=%d s (ignored, padded, |l|~1e3) vs reference", V);
    check(name, s_err, REF_TOL);
    snprintf(name, sizeof name, "crossentropy_combine V=%d P=1 losses vs reference", V);
    check(name, rel_err(c.losses, ref_loss, N), REF_TOL);
    snprintf(name, sizeof name, "crossentropy_combine V=%d P=1 lse vs reference", V);
    check(name, lse_err, REF_TOL);

    float *dlogits = frand(n, 5, 7, s);           // garbage: backward must overwrite
    be->crossentropy_backward(dlogits, c.logits, c.lse, c.targets, N, 0, V, Vp, c.dloss);
    double *ref = malloc(n * sizeof(double));
    int zero_ok = 1;
    for (int r = 0; r < N; r++) {
        for (int i = 0; i < Vp; i++) {
            size_t k = (size_t)r * Vp + i;
            double p = exp(c.logits[k] - ref_lse[r]) - (i == targets[r]);
            ref[k] = targets[r] < 0 || i >= V ? 0.0 : c.dloss * p;
            zero_ok &= ref[k] != 0.0 || dlogits[k] == 0.0f;
        }
    }
    snprintf(name, sizeof name, "crossentropy_backward V=%d vs reference", V);
    check(name, rel_err(dlogits, ref, n), 1e-4);
    if (use_fd) {
        snprintf(name, sizeof name, "crossentropy_backward V=%d vs finite diff of stats + combine", V);
        check(name, fd_error(c.logits, n, dlogits, ce_loss, &c, s), FD_TOL);
        ce_loss(&c);                              // lse of the unperturbed logits again
    }
    check_true("crossentropy_backward: exact zeros on ignored rows and padded columns", zero_ok);
    float *alias = fdup(c.logits, n);
    be->crossentropy_backward(alias, alias, c.lse, c.targets, N, 0, V, Vp, c.dloss);
    check_true("crossentropy_backward with dlogits aliasing logits: identical result",
               memcmp(alias, dlogits, n * sizeof(float)) == 0);

    // crossentropy_fused: the reference's losses and gradient, into garbage outputs and
    // in place; on the cpu the very bits of stats + combine + backward (same row code)
    float *fl = frand(N, -1, 1, s), *fd = frand(n, 5, 7, s), *fa = fdup(c.logits, n);
    be->crossentropy_fused(fd, fl, c.logits, c.targets, N, V, Vp, c.dloss);
    snprintf(name, sizeof name, "crossentropy_fused V=%d losses vs reference", V);
    check(name, rel_err(fl, ref_loss, N), REF_TOL);
    snprintf(name, sizeof name, "crossentropy_fused V=%d dlogits vs reference", V);
    check(name, rel_err(fd, ref, n), 1e-4);
    free(ref);
    float *fl2 = frand(N, -1, 1, s);
    be->crossentropy_fused(fa, fl2, fa, c.targets, N, V, Vp, c.dloss);
    check_true("crossentropy_fused in place and not: the same bits, and those of the three ops",
               memcmp(fa, fd, n * sizeof(float)) == 0 &&
               memcmp(fl2, fl, N * sizeof(float)) == 0 &&
               memcmp(fd, dlogits, n * sizeof(float)) == 0 &&
               memcmp(fl, c.losses, N * sizeof(float)) == 0);
    be->free(fl); be->free(fd); be->free(fa); be->free(fl2);
    be->free(alias); be->free(dlogits); be->free(c.logits); be->free(c.stats);
    be->free(c.losses); be->free(c.lse);
}

// V (padded to Vp = P Vs) split into P column shards as tensor parallelism does: the
// last shards hold the padding, perhaps no real column. Per-shard stats + combine must
// give the P = 1 losses and lse, the shards' backward side by side the P = 1 gradient.
// Why 1e-6: with O(1) logits lse and losses are O(1..5), where a float ulp is <= 4.8e-7;
// the paths differ only in the rounding of the per-shard sums s_p (~1e-7 relative),
// which moves lse, and each exp(l - lse), by about one ulp at most.
void test_crossentropy_sharded(int V, int P, int Vp, uint64_t *s) {
    int N = 7, Vs = Vp / P;
    float dloss = 0.3f;
    int32_t targets[7] = {0, (int32_t)(V - 1), -1, (int32_t)Vs, (int32_t)(Vs - 1),
                          (int32_t)(V / 2), -1};
    size_t n = (size_t)N * Vp;
    float *logits = frand(n, -3, 3, s);                       // (N,Vp)
    for (size_t i = 0; i < n; i++) logits[i] = (int)(i % Vp) < V ? logits[i] : 2000.0f;
    float *stats = frand((size_t)(1 + P) * N * 3, -1, 1, s);  // (N,3) P=1, then (P,N,3)
    float *loss = frand(2 * N, -1, 1, s), *lse = frand(2 * N, -1, 1, s);  // P=1, then P
    float *d = frand(2 * n, -1, 1, s), *shards = falloc(n);   // (2,N,Vp), (P,N,Vs)
    be->crossentropy_stats(stats, logits, targets, N, 0, V, Vp);
    be->crossentropy_combine(loss, lse, stats, targets, N, 1);
    be->crossentropy_backward(d, logits, lse, targets, N, 0, V, Vp, dloss);
    int empty_ok = 1, nempty = 0;
    for (int p = 0; p < P; p++) {
        int v0 = p * Vs, Vv = V - v0 < 0 ? 0 : V - v0 < Vs ? V - v0 : Vs;
        float *shard = shards + (size_t)p * N * Vs, *st = stats + (size_t)(1 + p) * N * 3;
        for (int r = 0; r < N; r++) {
            memcpy(shard + (size_t)r * Vs, logits + (size_t)r * Vp + v0, Vs * sizeof(float));
        }
        be->crossentropy_stats(st, shard, targets, N, v0, Vv, Vs);
        for (int r = 0; Vv == 0 && r < N; r++) {
            empty_ok &= st[r * 3] == -INFINITY && st[r * 3 + 1] == 0.0f && st[r * 3 + 2] == 0.0f;
        }
        nempty += Vv == 0;
    }
    be->crossentropy_combine(loss + N, lse + N, stats + (size_t)N * 3, targets, N, P);
    for (int p = 0; p < P; p++) {
        int v0 = p * Vs, Vv = V - v0 < 0 ? 0 : V - v0 < Vs ? V - v0 : Vs;
        float *shard = shards + (size_t)p * N * Vs;
        // in place, as the model reuses its logits buffer
        be->crossentropy_backward(shard, shard, lse + N, targets, N, v0, Vv, Vs, dloss);
        for (int r = 0; r < N; r++) {
            memcpy(d + n + (size_t)r * Vp + v0, shard + (size_t)r * Vs, Vs * sizeof(float));
        }
    }
    double *ref = malloc(n * sizeof(double));
    char name[96];
    const char *what[3] = {"losses", "lse", "backward shards side by side"};
    const float *one[3] = {loss, lse, d};
    size_t len[3] = {(size_t)N, (size_t)N, n};
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < len[k]; i++) ref[i] = one[k][i];
        snprintf(name, sizeof name, "crossentropy V=%d P=%d Vp=%d: %s == P=1", V, P, Vp, what[k]);
        check(name, rel_err(one[k] + len[k], ref, len[k]), 1e-6);
    }
    int zero_ok = 1;
    for (size_t i = 0; i < n; i++) zero_ok &= d[i] != 0.0f || d[n + i] == 0.0f;
    snprintf(name, sizeof name, "crossentropy V=%d P=%d: zeros where P=1 has them, "
             "%d empty shard(s)", V, P, nempty);
    check_true(name, zero_ok && empty_ok);
    if (nempty > 0) {        // M = -inf on a row where no shard has a real column
        float empty[6] = {-INFINITY, 0.0f, 0.0f, -INFINITY, 0.0f, 0.0f}, loss0, lse0; // (2,1,3)
        be->crossentropy_combine(&loss0, &lse0, empty, &targets[2], 1, 2);   // ignored row
        check_true("crossentropy_combine: only empty shards give lse = -inf, loss 0, no NaN",
                   loss0 == 0.0f && lse0 == -INFINITY);
    }
    free(ref);
    be->free(logits); be->free(stats); be->free(loss); be->free(lse); be->free(d); be->free(shards);
}

