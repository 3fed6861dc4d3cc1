// tests/unit/test_ops.c: every op of the cpu backend against references and finite
// differences.
//
// Three kinds of check, one printed line each, exit status 1 if any fails:
// - forward vs a naive double-precision reference written here from the formula (and
//   the cpu backend's inline cpu_expf vs exp);
// - backward vs central finite differences of the forward: the scalar loss is a random
//   projection L = sum(out * R), computed in double, so dL/dout = R is what each backward
//   receives. Every input element (or a random subset of FD_SAMPLES for larger tensors) is
//   perturbed by +-h in float; the denominator is the perturbation actually applied
//   after rounding. The figure compared is the normalized error
//   ||g_analytic - g_fd|| / ||g_fd||;
// - conventions of ops.h: gradient buffers are pre-filled with random values and the
//   analytic gradient is read back as (after - before), so an op that overwrote instead
//   of accumulating fails; crossentropy_backward overwrites, zeroes ignored rows and
//   padded columns, and may alias its logits; rope_backward is the transpose of forward;
// - tensor-parallel vocabulary shards: the encoder and cross-entropy run on P shards
//   (uneven, with padding, with an empty one) and reassembled must match the unsharded op.
//
// Why FD_TOL = 1e-2 with h = 1e-2: all ops are smooth, inputs are O(1), and the central
// difference's truncation error is about h^2 |f'''| / 6 ~ 1e-5 relative. The rounding
// error of L (a float forward summed in double) is about 1e-7 * sqrt(n) * |out|, i.e.
// <~ 1e-5 absolute here, which divided by 2h gives <~ 1e-3 absolute on gradients
// that are O(0.1..1). Measured errors are 1e-5..1e-3; a wrong formula (a missing term, a
// sign, a dropped accumulation) gives errors of order 1.
//
// `test_ops --bench` also times matmul_forward at GPT-2 124M's MLP shape.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"

#define FD_H 1e-2f           // perturbation: large enough that float rounding of L is small
#define FD_TOL 1e-2          // see the header comment
#define FD_SAMPLES 64        // elements perturbed per tensor when it is larger than this
#define REF_TOL 1e-5         // forward vs double reference: a few float roundings per element

static const anv_backend *be;
static int failures;

// ----------------------------------------------------------------------------
// helpers

// splitmix64: a small, seedable generator so every run sees the same inputs.
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// uniform in [-1, 1)
static float rng_uniform(uint64_t *s) {
    return (float)((rng_next(s) >> 40) * (1.0 / (1ull << 23)) - 1.0);
}

static float *falloc(size_t n) {
    float *p = be->alloc(n * sizeof(float));
    if (p == NULL) {
        fprintf(stderr, "test_ops: out of memory allocating %zu floats\n", n);
        exit(1);
    }
    return p;
}

static float *frand(size_t n, float lo, float hi, uint64_t *s) {
    float *p = falloc(n);
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * 0.5f * (rng_uniform(s) + 1.0f);
    return p;
}

static float *fdup(const float *x, size_t n) {
    float *p = falloc(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}

// after - before, elementwise: the amount a backward op added to a pre-filled buffer
static float *fdiff(const float *after, const float *before, size_t n) {
    float *p = falloc(n);
    for (size_t i = 0; i < n; i++) p[i] = after[i] - before[i];
    return p;
}

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

// ||a - b|| / ||b|| for a float a against a double reference b (plain ||a - b|| if b = 0)
static double rel_err(const float *a, const double *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

static void check(const char *name, double err, double tol) {
    int ok = err <= tol;                  // false for NaN too
    printf("%s  %-58s err %.2e  (tol %.0e)\n", ok ? "PASS" : "FAIL", name, err, tol);
    if (!ok) failures++;
}

static void check_true(const char *name, int ok) {
    printf("%s  %s\n", ok ? "PASS" : "FAIL", name);
    if (!ok) failures++;
}

// The loss L = sum(out * R) of one op at the current inputs; ctx is the op's case.
typedef double (*loss_fn)(void *ctx);

// Normalized error of the analytic gradient g of L w.r.t. x (n) against central
// differences, over all elements or FD_SAMPLES random ones. x is restored afterwards.
static double fd_error(float *x, size_t n, const float *g, loss_fn loss, void *ctx,
                       uint64_t *s) {
    size_t count = n <= FD_SAMPLES ? n : FD_SAMPLES;
    double num = 0.0, den = 0.0;
    for (size_t j = 0; j < count; j++) {
        size_t i = n <= FD_SAMPLES ? j : (size_t)(rng_next(s) % n);
        float x0 = x[i];
        x[i] = x0 + FD_H;
        float xp = x[i];
        double lp = loss(ctx);
        x[i] = x0 - FD_H;
        float xm = x[i];
        double lm = loss(ctx);
        x[i] = x0;
        double fd = (lp - lm) / ((double)xp - (double)xm);
        num += (g[i] - fd) * (g[i] - fd);
        den += fd * fd;
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

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
static void test_encoder(int with_wpe, int v0, int Vs, uint64_t *s) {
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
static void test_encoder_shards(int P, const int *v0s, uint64_t *s) {
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
// layernorm and rmsnorm

struct norm_case {
    int N, C;
    float eps;
    float *inp, *weight, *bias;        // (N,C), (C), (C) (bias: layernorm only)
    float *out, *mean, *rstd, *R;      // (N,C), (N), (N), (N,C)
};

static double layernorm_loss(void *p) {
    struct norm_case *c = p;
    be->layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->weight, c->bias, c->N, c->C,
                          c->eps);
    return dot_d(c->out, c->R, (size_t)c->N * c->C);
}

static double rmsnorm_loss(void *p) {
    struct norm_case *c = p;
    be->rmsnorm_forward(c->out, c->rstd, c->inp, c->weight, c->N, c->C, c->eps);
    return dot_d(c->out, c->R, (size_t)c->N * c->C);
}

static void test_norm(int rms, uint64_t *s) {
    struct norm_case c = {.N = 6, .C = 10, .eps = 1e-5f};
    size_t n = (size_t)c.N * c.C;
    c.inp = frand(n, -1.0f, 1.5f, s);             // nonzero mean on purpose
    c.weight = frand(c.C, 0.5f, 1.5f, s);
    c.bias = frand(c.C, -0.5f, 0.5f, s);
    c.out = falloc(n);
    c.mean = falloc(c.N);
    c.rstd = falloc(c.N);
    c.R = frand(n, -1, 1, s);
    loss_fn loss = rms ? rmsnorm_loss : layernorm_loss;
    loss(&c);

    double *ref = malloc(n * sizeof(double));
    for (int r = 0; r < c.N; r++) {
        const float *x = c.inp + (size_t)r * c.C;
        double m = 0.0, v = 0.0;
        for (int i = 0; i < c.C; i++) m += x[i];
        m = rms ? 0.0 : m / c.C;                  // rmsnorm: mean of squares about 0
        for (int i = 0; i < c.C; i++) v += (x[i] - m) * (x[i] - m);
        double rstd = 1.0 / sqrt(v / c.C + c.eps);
        for (int i = 0; i < c.C; i++) {
            ref[(size_t)r * c.C + i] = (x[i] - m) * rstd * c.weight[i] + (rms ? 0.0 : c.bias[i]);
        }
    }
    check(rms ? "rmsnorm_forward vs reference" : "layernorm_forward vs reference",
          rel_err(c.out, ref, n), REF_TOL);

    float *dinp = frand(n, -1, 1, s), *dinp0 = fdup(dinp, n);
    float *dw = frand(c.C, -1, 1, s), *dw0 = fdup(dw, c.C);
    float *db = frand(c.C, -1, 1, s), *db0 = fdup(db, c.C);
    if (rms) {
        be->rmsnorm_backward(dinp, dw, c.R, c.inp, c.weight, c.rstd, c.N, c.C);
    } else {
        be->layernorm_backward(dinp, dw, db, c.R, c.inp, c.weight, c.mean, c.rstd, c.N, c.C);
    }
    float *ginp = fdiff(dinp, dinp0, n), *gw = fdiff(dw, dw0, c.C), *gb = fdiff(db, db0, c.C);
    check(rms ? "rmsnorm_backward dinp vs finite diff" : "layernorm_backward dinp vs finite diff",
          fd_error(c.inp, n, ginp, loss, &c, s), FD_TOL);
    check(rms ? "rmsnorm_backward dweight vs finite diff" : "layernorm_backward dweight vs finite diff",
          fd_error(c.weight, c.C, gw, loss, &c, s), FD_TOL);
    if (!rms) {
        check("layernorm_backward dbias vs finite diff",
              fd_error(c.bias, c.C, gb, loss, &c, s), FD_TOL);
    }
    free(ref);
    be->free(dinp); be->free(dinp0); be->free(dw); be->free(dw0); be->free(db); be->free(db0);
    be->free(ginp); be->free(gw); be->free(gb);
    be->free(c.inp); be->free(c.weight); be->free(c.bias); be->free(c.out);
    be->free(c.mean); be->free(c.rstd); be->free(c.R);
}

// ----------------------------------------------------------------------------
// matmul

struct matmul_case {
    int N, C, OC;
    float *inp, *weight, *bias;        // (N,C), (OC,C), (OC) or NULL
    float *out, *R;                    // (N,OC)
};

static double matmul_loss(void *p) {
    struct matmul_case *c = p;
    be->matmul_forward(c->out, c->inp, c->weight, c->bias, c->N, c->C, c->OC);
    return dot_d(c->out, c->R, (size_t)c->N * c->OC);
}

// Small shapes: forward vs reference and finite differences. Large shapes: forward and
// every gradient vs double references (different sgemm code paths, same conventions).
static void test_matmul(int with_bias, int N, int C, int OC, int use_fd, uint64_t *s) {
    struct matmul_case c = {.N = N, .C = C, .OC = OC};
    size_t ni = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    c.inp = frand(ni, -1, 1, s);
    c.weight = frand(nw, -1, 1, s);
    c.bias = with_bias ? frand(OC, -1, 1, s) : NULL;
    c.out = frand(no, -1, 1, s);                  // garbage: forward must overwrite
    c.R = frand(no, -1, 1, s);
    matmul_loss(&c);

    char name[96];
    const char *tag = with_bias ? "bias" : "no bias";
    double *ref = malloc((ni + nw + no) * sizeof(double));   // big enough for any of them
    for (int r = 0; r < N; r++) {
        for (int o = 0; o < OC; o++) {
            double acc = with_bias ? c.bias[o] : 0.0;
            for (int i = 0; i < C; i++) acc += (double)c.inp[(size_t)r * C + i] * c.weight[(size_t)o * C + i];
            ref[(size_t)r * OC + o] = acc;
        }
    }
    snprintf(name, sizeof name, "matmul_forward (%s, %dx%dx%d) vs reference", tag, N, C, OC);
    check(name, rel_err(c.out, ref, no), REF_TOL);

    float *dinp = frand(ni, -1, 1, s), *dinp0 = fdup(dinp, ni);
    float *dw = frand(nw, -1, 1, s), *dw0 = fdup(dw, nw);
    float *db = with_bias ? frand(OC, -1, 1, s) : NULL;
    float *db0 = with_bias ? fdup(db, OC) : NULL;
    be->matmul_backward(dinp, dw, db, c.R, c.inp, c.weight, N, C, OC);
    float *ginp = fdiff(dinp, dinp0, ni), *gw = fdiff(dw, dw0, nw);
    float *gb = with_bias ? fdiff(db, db0, OC) : NULL;
    if (use_fd) {
        snprintf(name, sizeof name, "matmul_backward dinp (%s) vs finite diff", tag);
        check(name, fd_error(c.inp, ni, ginp, matmul_loss, &c, s), FD_TOL);
        snprintf(name, sizeof name, "matmul_backward dweight (%s) vs finite diff", tag);
        check(name, fd_error(c.weight, nw, gw, matmul_loss, &c, s), FD_TOL);
        if (with_bias) {
            snprintf(name, sizeof name, "matmul_backward dbias (%s) vs finite diff", tag);
            check(name, fd_error(c.bias, OC, gb, matmul_loss, &c, s), FD_TOL);
        }
    } else {
        // dinp = R @ W, dweight = R^T @ inp, dbias = column sums of R
        for (int r = 0; r < N; r++) {
            for (int i = 0; i < C; i++) {
                double acc = 0.0;
                for (int o = 0; o < OC; o++) acc += (double)c.R[(size_t)r * OC + o] * c.weight[(size_t)o * C + i];
                ref[(size_t)r * C + i] = acc;
            }
        }
        snprintf(name, sizeof name, "matmul_backward dinp (%dx%dx%d) vs reference", N, C, OC);
        check(name, rel_err(ginp, ref, ni), REF_TOL);
        for (int o = 0; o < OC; o++) {
            for (int i = 0; i < C; i++) {
                double acc = 0.0;
                for (int r = 0; r < N; r++) acc += (double)c.R[(size_t)r * OC + o] * c.inp[(size_t)r * C + i];
                ref[(size_t)o * C + i] = acc;
            }
        }
        snprintf(name, sizeof name, "matmul_backward dweight (%dx%dx%d) vs reference", N, C, OC);
        check(name, rel_err(gw, ref, nw), REF_TOL);
        if (with_bias) {
            for (int o = 0; o < OC; o++) {
                double acc = 0.0;
                for (int r = 0; r < N; r++) acc += c.R[(size_t)r * OC + o];
                ref[o] = acc;
            }
            snprintf(name, sizeof name, "matmul_backward dbias (%dx%dx%d) vs reference", N, C, OC);
            check(name, rel_err(gb, ref, OC), REF_TOL);
        }
    }
    free(ref);
    be->free(dinp); be->free(dinp0); be->free(dw); be->free(dw0); be->free(db); be->free(db0);
    be->free(ginp); be->free(gw); be->free(gb);
    be->free(c.inp); be->free(c.weight); be->free(c.bias); be->free(c.out); be->free(c.R);
}

// ----------------------------------------------------------------------------
// rope

struct rope_case {
    int B, T, H, HS;
    float *cos_tab, *sin_tab;          // (maxT, HS/2)
    float *x, *work, *R;               // (B,T,H,HS)
};

static double rope_loss(void *p) {
    struct rope_case *c = p;
    size_t n = (size_t)c->B * c->T * c->H * c->HS;
    memcpy(c->work, c->x, n * sizeof(float));
    be->rope_forward(c->work, c->cos_tab, c->sin_tab, c->B, c->T, c->H, c->HS);
    return dot_d(c->work, c->R, n);
}

static void test_rope(uint64_t *s) {
    struct rope_case c = {.B = 2, .T = 7, .H = 3, .HS = 8};
    int maxT = 9, half = c.HS / 2;
    size_t n = (size_t)c.B * c.T * c.H * c.HS;
    rope_params rp = {.theta = 10000.0f};
    c.cos_tab = falloc((size_t)maxT * half);
    c.sin_tab = falloc((size_t)maxT * half);
    rope_tables_fill(c.cos_tab, c.sin_tab, maxT, c.HS, &rp);
    c.x = frand(n, -1, 1, s);
    c.work = falloc(n);
    c.R = frand(n, -1, 1, s);
    rope_loss(&c);

    // reference: rotate_half with angle t * theta^(-2i/HS)
    double *ref = malloc(n * sizeof(double));
    for (int b = 0; b < c.B; b++) {
        for (int t = 0; t < c.T; t++) {
            for (int h = 0; h < c.H; h++) {
                size_t base = (((size_t)b * c.T + t) * c.H + h) * c.HS;
                for (int i = 0; i < half; i++) {
                    double ang = t * pow(10000.0, -2.0 * i / c.HS);
                    double x1 = c.x[base + i], x2 = c.x[base + i + half];
                    ref[base + i] = x1 * cos(ang) - x2 * sin(ang);
                    ref[base + i + half] = x2 * cos(ang) + x1 * sin(ang);
                }
            }
        }
    }
    check("rope_forward vs reference", rel_err(c.work, ref, n), REF_TOL);

    // backward, in place on a copy of R
    float *g = fdup(c.R, n);
    be->rope_backward(g, c.cos_tab, c.sin_tab, c.B, c.T, c.H, c.HS);
    check("rope_backward (in place) vs finite diff of forward",
          fd_error(c.x, n, g, rope_loss, &c, s), FD_TOL);
    // transpose: <rope(x), R> == <x, rope_backward(R)>
    double lhs = rope_loss(&c), rhs = dot_d(c.x, g, n);
    check("rope_backward is the transpose of rope_forward", fabs(lhs - rhs) / fabs(lhs), REF_TOL);
    free(ref);
    be->free(g); be->free(c.cos_tab); be->free(c.sin_tab);
    be->free(c.x); be->free(c.work); be->free(c.R);
}

// Tables: plain RoPE, and Llama-3 scaling in the torch.where form of Hugging Face's
// _compute_llama3_parameters, written out independently of kernels/rope_tables.c.
static void test_rope_tables(void) {
    int HS = 128, maxT = 300, half = HS / 2;
    float *ct = falloc((size_t)maxT * half), *st = falloc((size_t)maxT * half);

    rope_params plain = {.theta = 10000.0f};
    rope_tables_fill(ct, st, maxT, HS, &plain);
    double err = 0.0;
    for (int t = 0; t < maxT; t++) {
        for (int i = 0; i < half; i++) {
            double ang = t * pow(10000.0, -2.0 * i / HS);
            err = fmax(err, fabs(ct[t * half + i] - cos(ang)));
            err = fmax(err, fabs(st[t * half + i] - sin(ang)));
        }
    }
    // float rounding of a value in [-1, 1] is at most 6e-8
    check("rope_tables_fill plain (max abs error)", err, 1e-6);

    rope_params l3 = {.theta = 500000.0f, .scaling_llama3 = 1, .factor = 32.0f,
                      .low_freq_factor = 1.0f, .high_freq_factor = 4.0f,
                      .original_max_pos = 8192};
    rope_tables_fill(ct, st, maxT, HS, &l3);
    double low_wavelen = 8192.0 / 1.0, high_wavelen = 8192.0 / 4.0;
    int nlow = 0, nmid = 0, nhigh = 0;
    err = 0.0;
    for (int i = 0; i < half; i++) {
        double inv_freq = 1.0 / pow(500000.0, (2.0 * i) / HS);
        double wavelen = 2.0 * M_PI / inv_freq;
        double llama = wavelen > low_wavelen ? inv_freq / 32.0 : inv_freq;
        double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
        double smoothed = (1.0 - smooth) * llama / 32.0 + smooth * llama;
        int is_medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        if (is_medium) llama = smoothed;
        nlow += wavelen > low_wavelen;
        nhigh += wavelen < high_wavelen;
        nmid += is_medium;
        for (int t = 0; t < maxT; t++) {
            err = fmax(err, fabs(ct[t * half + i] - cos(t * llama)));
            err = fmax(err, fabs(st[t * half + i] - sin(t * llama)));
        }
    }
    check("rope_tables_fill llama3 scaling (max abs error)", err, 1e-6);
    char name[96];
    snprintf(name, sizeof name, "rope llama3 test covers all bands (low %d, mid %d, high %d)",
             nlow, nmid, nhigh);
    check_true(name, nlow > 0 && nmid > 0 && nhigh > 0);
    be->free(ct); be->free(st);
}

// ----------------------------------------------------------------------------
// attention

struct attention_case {
    int B, T, NH, KVH, HS;
    float *q, *k, *v;                  // (B,T,NH,HS), (B,T,KVH,HS), (B,T,KVH,HS)
    float *out, *state, *R;            // (B,T,NH,HS), state floats, (B,T,NH,HS)
};

static double attention_loss(void *p) {
    struct attention_case *c = p;
    be->attention_forward(c->out, c->state, c->q, c->k, c->v, c->B, c->T, c->NH, c->KVH,
                          c->HS);
    return dot_d(c->out, c->R, (size_t)c->B * c->T * c->NH * c->HS);
}

static void test_attention(int NH, int KVH, uint64_t *s) {
    struct attention_case c = {.B = 2, .T = 7, .NH = NH, .KVH = KVH, .HS = 8};
    int B = c.B, T = c.T, HS = c.HS;
    size_t nq = (size_t)B * T * NH * HS, nkv = (size_t)B * T * KVH * HS;
    c.q = frand(nq, -1, 1, s);
    c.k = frand(nkv, -1, 1, s);
    c.v = frand(nkv, -1, 1, s);
    c.out = frand(nq, -1, 1, s);                  // garbage: forward must overwrite
    c.state = falloc(be->attention_state_floats(B, T, NH));
    c.R = frand(nq, -1, 1, s);
    attention_loss(&c);

    // naive O(T^2) reference in double
    double *ref = malloc(nq * sizeof(double));
    double *p = malloc((size_t)T * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            int kvh = h / (NH / KVH);
            for (int t = 0; t < T; t++) {
                const float *qt = c.q + (((size_t)b * T + t) * NH + h) * HS;
                double mx = -INFINITY, sum = 0.0;
                for (int u = 0; u <= t; u++) {
                    const float *ku = c.k + (((size_t)b * T + u) * KVH + kvh) * HS;
                    double d = 0.0;
                    for (int i = 0; i < HS; i++) d += (double)qt[i] * ku[i];
                    p[u] = d / sqrt((double)HS);
                    mx = fmax(mx, p[u]);
                }
                for (int u = 0; u <= t; u++) sum += (p[u] = exp(p[u] - mx));
                for (int i = 0; i < HS; i++) {
                    double acc = 0.0;
                    for (int u = 0; u <= t; u++) {
                        acc += p[u] / sum * c.v[(((size_t)b * T + u) * KVH + kvh) * HS + i];
                    }
                    ref[(((size_t)b * T + t) * NH + h) * HS + i] = acc;
                }
            }
        }
    }
    char name[96];
    snprintf(name, sizeof name, "attention_forward NH=%d KVH=%d T=%d vs reference", NH, KVH, T);
    check(name, rel_err(c.out, ref, nq), REF_TOL);

    float *dq = frand(nq, -1, 1, s), *dq0 = fdup(dq, nq);
    float *dk = frand(nkv, -1, 1, s), *dk0 = fdup(dk, nkv);
    float *dv = frand(nkv, -1, 1, s), *dv0 = fdup(dv, nkv);
    float *scratch = frand(be->attention_scratch_floats(B, T, NH), -1, 1, s);
    be->attention_backward(dq, dk, dv, scratch, c.R, c.state, c.q, c.k, c.v, B, T, NH, KVH, HS);
    float *gq = fdiff(dq, dq0, nq), *gk = fdiff(dk, dk0, nkv), *gv = fdiff(dv, dv0, nkv);
    snprintf(name, sizeof name, "attention_backward dq NH=%d KVH=%d vs finite diff", NH, KVH);
    check(name, fd_error(c.q, nq, gq, attention_loss, &c, s), FD_TOL);
    snprintf(name, sizeof name, "attention_backward dk NH=%d KVH=%d vs finite diff", NH, KVH);
    check(name, fd_error(c.k, nkv, gk, attention_loss, &c, s), FD_TOL);
    snprintf(name, sizeof name, "attention_backward dv NH=%d KVH=%d vs finite diff", NH, KVH);
    check(name, fd_error(c.v, nkv, gv, attention_loss, &c, s), FD_TOL);
    free(ref); free(p);
    be->free(dq); be->free(dq0); be->free(dk); be->free(dk0); be->free(dv); be->free(dv0);
    be->free(scratch); be->free(gq); be->free(gk); be->free(gv);
    be->free(c.q); be->free(c.k); be->free(c.v); be->free(c.out); be->free(c.state);
    be->free(c.R);
}

// ----------------------------------------------------------------------------
// pointwise: gelu, swiglu, residual

struct pointwise_case {
    size_t n;
    float *a, *b;                      // (n): inp / gate / a, and up / b
    float *out, *R;                    // (n)
};

static double gelu_loss(void *p) {
    struct pointwise_case *c = p;
    be->gelu_forward(c->out, c->a, c->n);
    return dot_d(c->out, c->R, c->n);
}

static double swiglu_loss(void *p) {
    struct pointwise_case *c = p;
    be->swiglu_forward(c->out, c->a, c->b, c->n);
    return dot_d(c->out, c->R, c->n);
}

static double residual_loss(void *p) {
    struct pointwise_case *c = p;
    be->residual_forward(c->out, c->a, c->b, c->n);
    return dot_d(c->out, c->R, c->n);
}

static void test_pointwise(uint64_t *s) {
    struct pointwise_case c = {.n = 50};
    size_t n = c.n;
    c.a = frand(n, -4, 4, s);
    c.b = frand(n, -1, 1, s);
    c.out = falloc(n);
    c.R = frand(n, -1, 1, s);
    double *ref = malloc(n * sizeof(double));
    float *ga = falloc(n), *gb = falloc(n);

    // gelu
    gelu_loss(&c);
    for (size_t i = 0; i < n; i++) {
        double x = c.a[i];
        ref[i] = 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    }
    check("gelu_forward vs reference", rel_err(c.out, ref, n), REF_TOL);
    float *da = frand(n, -1, 1, s), *da0 = fdup(da, n);
    be->gelu_backward(da, c.a, c.R, n);
    for (size_t i = 0; i < n; i++) ga[i] = da[i] - da0[i];
    check("gelu_backward vs finite diff", fd_error(c.a, n, ga, gelu_loss, &c, s), FD_TOL);

    // swiglu
    swiglu_loss(&c);
    for (size_t i = 0; i < n; i++) ref[i] = c.a[i] / (1.0 + exp(-(double)c.a[i])) * c.b[i];
    check("swiglu_forward vs reference", rel_err(c.out, ref, n), REF_TOL);
    float *db = frand(n, -1, 1, s), *db0 = fdup(db, n);
    memcpy(da0, da, n * sizeof(float));
    be->swiglu_backward(da, db, c.R, c.a, c.b, n);
    for (size_t i = 0; i < n; i++) { ga[i] = da[i] - da0[i]; gb[i] = db[i] - db0[i]; }
    check("swiglu_backward dgate vs finite diff", fd_error(c.a, n, ga, swiglu_loss, &c, s), FD_TOL);
    check("swiglu_backward dup vs finite diff", fd_error(c.b, n, gb, swiglu_loss, &c, s), FD_TOL);

    // residual, forward in place (out aliases a) as the model uses it
    float *a_copy = fdup(c.a, n);
    be->residual_forward(a_copy, a_copy, c.b, n);
    for (size_t i = 0; i < n; i++) ref[i] = (double)c.a[i] + c.b[i];
    check("residual_forward (out aliases a) vs reference", rel_err(a_copy, ref, n), REF_TOL);
    memcpy(da0, da, n * sizeof(float));
    memcpy(db0, db, n * sizeof(float));
    be->residual_backward(da, db, c.R, n);
    for (size_t i = 0; i < n; i++) { ga[i] = da[i] - da0[i]; gb[i] = db[i] - db0[i]; }
    check("residual_backward da vs finite diff", fd_error(c.a, n, ga, residual_loss, &c, s), FD_TOL);
    check("residual_backward db vs finite diff", fd_error(c.b, n, gb, residual_loss, &c, s), FD_TOL);
    memcpy(db0, db, n * sizeof(float));
    be->residual_backward(NULL, db, c.R, n);
    for (size_t i = 0; i < n; i++) gb[i] = db[i] - db0[i];
    check("residual_backward with da = NULL", fd_error(c.b, n, gb, residual_loss, &c, s), FD_TOL);

    free(ref);
    be->free(a_copy); be->free(ga); be->free(gb);
    be->free(da); be->free(da0); be->free(db); be->free(db0);
    be->free(c.a); be->free(c.b); be->free(c.out); be->free(c.R);
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
static void test_crossentropy(int V, int Vp, int use_fd, uint64_t *s) {
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
    free(ref);
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
    be->free(alias); be->free(dlogits); be->free(c.logits); be->free(c.stats);
    be->free(c.losses); be->free(c.lse);
}

// V (padded to Vp = P Vs) split into P column shards as tensor parallelism does: the
// last shards hold the padding, perhaps no real column. Per-shard stats + combine must
// give the P = 1 losses and lse, the shards' backward side by side the P = 1 gradient.
// Why 1e-6: with O(1) logits lse and losses are O(1..5), where a float ulp is <= 4.8e-7;
// the paths differ only in the rounding of the per-shard sums s_p (~1e-7 relative),
// which moves lse, and each exp(l - lse), by about one ulp at most.
static void test_crossentropy_sharded(int V, int P, int Vp, uint64_t *s) {
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

// ----------------------------------------------------------------------------
// optimizer

static void test_adamw(uint64_t *s) {
    size_t n = 37;
    float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
    float *param = frand(n, -1, 1, s), *m = falloc(n), *v = falloc(n), *grad = falloc(n);
    double *pd = malloc(n * sizeof(double)), *md = calloc(n, sizeof(double));
    double *vd = calloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++) pd[i] = param[i];
    for (int t = 1; t <= 3; t++) {
        for (size_t i = 0; i < n; i++) grad[i] = rng_uniform(s);
        be->adamw_update(param, grad, m, v, n, lr, b1, b2, eps, wd, gs, t);
        for (size_t i = 0; i < n; i++) {
            double g = (double)grad[i] * gs;
            md[i] = b1 * md[i] + (1.0 - b1) * g;
            vd[i] = b2 * vd[i] + (1.0 - b2) * g * g;
            double mhat = md[i] / (1.0 - pow(b1, t)), vhat = vd[i] / (1.0 - pow(b2, t));
            pd[i] -= lr * (mhat / (sqrt(vhat) + eps) + wd * pd[i]);
        }
    }
    double err = 0.0;
    for (size_t i = 0; i < n; i++) {
        err = fmax(err, fabs(param[i] - pd[i]));
        err = fmax(err, fabs(m[i] - md[i]));
        err = fmax(err, fabs(v[i] - vd[i]));
    }
    // params are O(1): each step adds ~6e-8 of float rounding, updates are ~lr
    check("adamw_update, 3 steps vs double reference (max abs error)", err, 1e-6);
    free(pd); free(md); free(vd);
    be->free(param); be->free(m); be->free(v); be->free(grad);

    size_t big = 1000003;                         // odd and large: several threads' ranges
    float *x = frand(big, -1, 1, s);
    double ref = 0.0;
    for (size_t i = 0; i < big; i++) ref += (double)x[i] * x[i];
    // only the summation order differs: ~sqrt(n) * 1e-16 relative
    check("sum_squares vs double sum (relative)", fabs(be->sum_squares(x, big) - ref) / ref, 1e-10);
    float *y = fdup(x, big);
    be->scale(y, 0.37f, big);
    int same = 1;
    for (size_t i = 0; i < big; i++) same &= y[i] == x[i] * 0.37f;
    check_true("scale: x *= s exactly", same);
    be->free(x); be->free(y);
}

// ----------------------------------------------------------------------------
// cpu_expf, the vectorizable exp behind softmax, GELU and SwiGLU

static void test_expf(void) {
    double err = 0.0;
    for (int j = 0; j <= 1750000; j++) {
        float x = -87.0f + 1e-4f * j;             // the whole unclamped range, [-87, 88]
        double ref = exp((double)x);
        err = fmax(err, fabs(cpu_expf(x) - ref) / ref);
    }
    // float's unit roundoff is 6e-8; Cephes' polynomial plus reconstruction stays
    // within 2 ulp (2.4e-7)
    check("cpu_expf over [-87, 88] (max relative error)", err, 2.4e-7);
    float nan = NAN;
    check_true("cpu_expf saturates: exp(-1000) < 1e-37, exp(1000) > 1e38, NaN stays NaN",
               cpu_expf(-1000.0f) < 1e-37f && cpu_expf(1000.0f) > 1e38f && isnan(cpu_expf(nan)));
}

// ----------------------------------------------------------------------------
// memory

static void test_memory(void) {
    size_t n = (size_t)3 << 20;                   // 12 MiB: the threaded zero/copy path
    unsigned char *a = be->alloc(n), *b = be->alloc(n);
    int ok = a != NULL && b != NULL && ((uintptr_t)a % 64) == 0 && ((uintptr_t)b % 64) == 0;
    for (size_t i = 0; ok && i < n; i++) ok = a[i] == 0;
    check_true("alloc: 64-byte aligned and zeroed", ok);
    if (a == NULL || b == NULL) return;
    for (size_t i = 0; i < n; i++) a[i] = (unsigned char)(i * 7 + 1);
    be->copy_from_host(b, a, n);
    ok = memcmp(a, b, n) == 0;
    be->zero(b, n);
    for (size_t i = 0; ok && i < n; i++) ok = b[i] == 0;
    be->copy(b, a, n - 3);
    be->copy_to_host(a, b, n - 3);
    ok = ok && memcmp(a, b, n - 3) == 0 && b[n - 1] == 0;
    be->synchronize();
    be->free(NULL);
    check_true("zero, copy, copy_from_host, copy_to_host, free(NULL)", ok);
    be->free(a); be->free(b);
}

// ----------------------------------------------------------------------------
// benchmark (test_ops --bench)

static void bench_matmul(uint64_t *s) {
    int N = 256, C = 768, OC = 3072;              // GPT-2 124M MLP up-projection, B*T = 4*64
    float *inp = frand((size_t)N * C, -1, 1, s), *w = frand((size_t)OC * C, -1, 1, s);
    float *bias = frand(OC, -1, 1, s), *out = falloc((size_t)N * OC);
    float *dinp = falloc((size_t)N * C), *dw = falloc((size_t)OC * C), *db = falloc(OC);
    int reps = 50;
    double flops = 2.0 * N * C * OC;
    be->matmul_forward(out, inp, w, bias, N, C, OC);          // warm-up
    double t0 = omp_get_wtime();
    for (int r = 0; r < reps; r++) be->matmul_forward(out, inp, w, bias, N, C, OC);
    double t1 = omp_get_wtime();
    for (int r = 0; r < reps; r++) be->matmul_backward(dinp, dw, db, out, inp, w, N, C, OC);
    double t2 = omp_get_wtime();
    printf("bench matmul_forward  N=%d C=%d OC=%d: %.2f ms, %.1f GFLOP/s (%d threads)\n",
           N, C, OC, (t1 - t0) / reps * 1e3, flops * reps / (t1 - t0) * 1e-9,
           omp_get_max_threads());
    printf("bench matmul_backward N=%d C=%d OC=%d: %.2f ms, %.1f GFLOP/s\n",
           N, C, OC, (t2 - t1) / reps * 1e3, 2.0 * flops * reps / (t2 - t1) * 1e-9);
    be->free(inp); be->free(w); be->free(bias); be->free(out);
    be->free(dinp); be->free(dw); be->free(db);
}

// ----------------------------------------------------------------------------

int main(int argc, char **argv) {
    be = anv_backend_cpu();
    uint64_t seed = 1234;

    if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
        bench_matmul(&seed);
        return 0;
    }

    test_memory();
    test_expf();
    test_encoder(1, 0, 11, &seed);
    test_encoder(0, 0, 11, &seed);
    test_encoder(1, 4, 4, &seed);                  // a middle shard of an 11-row table
    test_encoder(0, 8, 3, &seed);                  // the last shard
    test_encoder_shards(2, (const int[]){0, 6}, &seed);
    test_encoder_shards(3, (const int[]){0, 4, 8}, &seed);
    test_norm(0, &seed);
    test_norm(1, &seed);
    test_matmul(1, 5, 7, 9, 1, &seed);
    test_matmul(0, 5, 7, 9, 1, &seed);
    test_matmul(1, 67, 130, 97, 0, &seed);         // larger, odd: blocked sgemm paths
    test_rope(&seed);
    test_rope_tables();
    test_attention(4, 2, &seed);
    test_attention(3, 3, &seed);
    test_pointwise(&seed);
    test_crossentropy(11, 16, 1, &seed);
    test_crossentropy(9000, 9216, 0, &seed);
    test_crossentropy_sharded(13, 3, 15, &seed);  // last shard: 3 real columns, 2 padding
    test_crossentropy_sharded(9, 3, 15, &seed);   // last shard: no real column
    test_crossentropy_sharded(9000, 2, 9216, &seed);   // two stats blocks per shard
    test_adamw(&seed);

    if (failures > 0) {
        printf("test_ops: %d check(s) FAILED\n", failures);
        return 1;
    }
    printf("test_ops: all checks passed\n");
    return 0;
}
