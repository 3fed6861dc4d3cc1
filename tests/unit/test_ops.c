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
//   padded columns, and may alias its logits;
// - tensor-parallel vocabulary shards: the encoder and cross-entropy run on P shards
//   (uneven, with padding, with an empty one) and reassembled must match the unsharded op
//   (those two ops' tests are in test_ops_vocab.c; shared helpers in test_ops.h).
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
#include "tests/unit/test_ops.h"


const anv_backend *be;
int failures;

// ----------------------------------------------------------------------------
// helpers

// splitmix64: a small, seedable generator so every run sees the same inputs.
uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// uniform in [-1, 1)
float rng_uniform(uint64_t *s) {
    return (float)((rng_next(s) >> 40) * (1.0 / (1ull << 23)) - 1.0);
}

float *falloc(size_t n) {
    float *p = be->alloc(n * sizeof(float));
    if (p == NULL) {
        fprintf(stderr, "test_ops: out of memory allocating %zu floats\n", n);
        exit(1);
    }
    return p;
}

float *frand(size_t n, float lo, float hi, uint64_t *s) {
    float *p = falloc(n);
    for (size_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * 0.5f * (rng_uniform(s) + 1.0f);
    return p;
}

float *fdup(const float *x, size_t n) {
    float *p = falloc(n);
    memcpy(p, x, n * sizeof(float));
    return p;
}

// after - before, elementwise: the amount a backward op added to a pre-filled buffer
float *fdiff(const float *after, const float *before, size_t n) {
    float *p = falloc(n);
    for (size_t i = 0; i < n; i++) p[i] = after[i] - before[i];
    return p;
}

double dot_d(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

// ||a - b|| / ||b|| for a float a against a double reference b (plain ||a - b|| if b = 0)
double rel_err(const float *a, const double *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

void check(const char *name, double err, double tol) {
    int ok = err <= tol;                  // false for NaN too
    printf("%s  %-58s err %.2e  (tol %.0e)\n", ok ? "PASS" : "FAIL", name, err, tol);
    if (!ok) failures++;
}

void check_true(const char *name, int ok) {
    printf("%s  %s\n", ok ? "PASS" : "FAIL", name);
    if (!ok) failures++;
}


// Normalized error of the analytic gradient g of L w.r.t. the column block [c0, c1) of
// x's `rows` rows of ld elements, against central differences, over all its elements
// or FD_SAMPLES random ones. x is restored afterwards.
double fd_error_block(float *x, size_t rows, size_t ld, size_t c0, size_t c1, const float *g,
                      loss_fn loss, void *ctx, uint64_t *s) {
    const size_t w = c1 - c0, n = rows * w;
    size_t count = n <= FD_SAMPLES ? n : FD_SAMPLES;
    double num = 0.0, den = 0.0;
    for (size_t j = 0; j < count; j++) {
        size_t k = n <= FD_SAMPLES ? j : (size_t)(rng_next(s) % n);
        size_t i = k / w * ld + c0 + k % w;
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

// The same over all of x (n).
double fd_error(float *x, size_t n, const float *g, loss_fn loss, void *ctx, uint64_t *s) {
    return fd_error_block(x, 1, n, 0, n, g, loss, ctx, s);
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

// The fused residual + norm: res = a + b exactly, out = norm(res) against a double
// reference, with res a separate buffer and res aliasing a (the model's usage).
static void test_norm_residual(int rms, int alias, uint64_t *s) {
    const int N = 5, C = 12;
    const float eps = 1e-5f;
    size_t n = (size_t)N * C;
    float *a = frand(n, -1.0f, 1.5f, s), *b = frand(n, -1.0f, 1.0f, s);
    float *a0 = fdup(a, n);
    float *w = frand(C, 0.5f, 1.5f, s), *bias = frand(C, -0.5f, 0.5f, s);
    float *res = alias ? a : frand(n, -1, 1, s), *out = frand(n, -1, 1, s);
    float *mean = falloc(N), *rstd = falloc(N);
    if (rms)
        be->rmsnorm_residual_forward(res, out, rstd, a, b, w, N, C, eps);
    else
        be->layernorm_residual_forward(res, out, mean, rstd, a, b, w, bias, N, C, eps);
    int exact = 1;
    for (size_t i = 0; i < n; i++) exact &= res[i] == a0[i] + b[i];
    double *ref = malloc(n * sizeof(double));
    for (int r = 0; r < N; r++) {
        double x[64], m = 0.0, v = 0.0;
        for (int i = 0; i < C; i++) x[i] = (double)(a0[(size_t)r * C + i] + b[(size_t)r * C + i]);
        for (int i = 0; i < C; i++) m += x[i];
        m = rms ? 0.0 : m / C;
        for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        double rs = 1.0 / sqrt(v / C + eps);
        for (int i = 0; i < C; i++)
            ref[(size_t)r * C + i] = (x[i] - m) * rs * w[i] + (rms ? 0.0 : bias[i]);
    }
    char name[96];
    snprintf(name, sizeof name, "%s_residual_forward%s: res = a + b exactly",
             rms ? "rmsnorm" : "layernorm", alias ? " (res aliases a)" : "");
    check_true(name, exact);
    snprintf(name, sizeof name, "%s_residual_forward%s vs reference",
             rms ? "rmsnorm" : "layernorm", alias ? " (res aliases a)" : "");
    check(name, rel_err(out, ref, n), REF_TOL);
    free(ref);
    if (!alias) be->free(res);
    be->free(a); be->free(a0); be->free(b); be->free(w); be->free(bias); be->free(out);
    be->free(mean); be->free(rstd);
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
    be->matmul_forward(c->out, NULL, c->inp, c->weight, c->bias, c->N, c->C, c->OC);
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
    be->matmul_backward(dinp, ANV_GRAD_MODE_ADD, dw, db, c.R, c.inp, c.weight, NULL, N, C, OC);
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
    // dinp_mode SET: a NaN-filled dinp is overwritten with what ADD added
    float *dset = falloc(ni);
    for (size_t i = 0; i < ni; i++) {
        dset[i] = NAN;
        ref[i] = ginp[i];
    }
    be->matmul_backward(dset, ANV_GRAD_MODE_SET, NULL, NULL, c.R, c.inp, c.weight, NULL, N, C,
                        OC);
    snprintf(name, sizeof name, "matmul_backward dinp SET (%s) = the ADD increment", tag);
    check(name, rel_err(dset, ref, ni), REF_TOL);
    free(ref);
    be->free(dinp); be->free(dinp0); be->free(dw); be->free(dw0); be->free(db); be->free(db0);
    be->free(ginp); be->free(gw); be->free(gb); be->free(dset);
    be->free(c.inp); be->free(c.weight); be->free(c.bias); be->free(c.out); be->free(c.R);
}

// The GELU epilogue: forward writes pre_gelu = inp @ W^T + b and out = gelu(pre_gelu)
// (checked against double formulas); backward with pre_gelu overwrites dinp with the
// gradient w.r.t. the previous layer's pre-GELU values (checked by finite differences
// of L = R . (gelu(pre) @ W^T)).
struct gelu_mm_case {
    int N, C, OC;
    float *pre, *act, *weight, *out, *R;  // (N,C), (N,C), (OC,C), (N,OC), (N,OC)
};

static double gelu_mm_loss(void *p) {
    struct gelu_mm_case *c = p;
    be->gelu_forward(c->act, c->pre, (size_t)c->N * c->C);
    be->matmul_forward(c->out, NULL, c->act, c->weight, NULL, c->N, c->C, c->OC);
    return dot_d(c->out, c->R, (size_t)c->N * c->OC);
}

static void test_matmul_gelu(uint64_t *s) {
    const int N = 6, C = 9, OC = 11;
    size_t ni = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    float *inp = frand(ni, -1, 1, s), *w = frand(nw, -1, 1, s), *bias = frand(OC, -1, 1, s);
    float *pre = frand(no, -1, 1, s), *out = frand(no, -1, 1, s);   // garbage: overwritten
    be->matmul_forward(out, pre, inp, w, bias, N, C, OC);
    double *zref = malloc(no * sizeof(double)), *gref = malloc(no * sizeof(double));
    for (int r = 0; r < N; r++) {
        for (int o = 0; o < OC; o++) {
            double z = bias[o];
            for (int i = 0; i < C; i++) z += (double)inp[(size_t)r * C + i] * w[(size_t)o * C + i];
            zref[(size_t)r * OC + o] = z;
            gref[(size_t)r * OC + o] =
                0.5 * z * (1.0 + tanh(sqrt(2.0 / M_PI) * (z + 0.044715 * z * z * z)));
        }
    }
    check("matmul_forward with GELU epilogue: pre_gelu vs reference", rel_err(pre, zref, no),
          REF_TOL);
    check("matmul_forward with GELU epilogue: out = gelu(pre) vs reference",
          rel_err(out, gref, no), REF_TOL);
    free(zref);
    free(gref);
    be->free(inp); be->free(w); be->free(bias); be->free(pre); be->free(out);

    struct gelu_mm_case c = {N, C, OC, frand(ni, -2, 2, s), falloc(ni), frand((size_t)OC * C, -1, 1, s),
                             falloc(no), frand(no, -1, 1, s)};
    gelu_mm_loss(&c);
    float *dpre = frand(ni, -1, 1, s);            // garbage: the dGELU form overwrites
    be->matmul_backward(dpre, ANV_GRAD_MODE_SET, NULL, NULL, c.R, c.act, c.weight, c.pre, N, C,
                        OC);
    check("matmul_backward with dGELU epilogue: dinp vs finite diff",
          fd_error(c.pre, ni, dpre, gelu_mm_loss, &c, s), FD_TOL);
    be->free(dpre);
    be->free(c.pre); be->free(c.act); be->free(c.weight); be->free(c.out); be->free(c.R);
}

// ----------------------------------------------------------------------------
// rope tables (the rotation itself is tested inside attention below)

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
    float *qkv;                        // (B,T,NH+2*KVH,HS): q, k, v heads per position
    float *out, *state, *R;            // (B,T,NH,HS), state floats, (B,T,NH,HS)
    float *cos_tab, *sin_tab;          // (maxT, HS/2), or NULL: no RoPE
};

static double attention_loss(void *p) {
    struct attention_case *c = p;
    be->attention_forward(c->out, c->state, c->qkv, c->cos_tab, c->sin_tab, c->B, c->T, c->NH,
                          c->KVH, c->HS);
    return dot_d(c->out, c->R, (size_t)c->B * c->T * c->NH * c->HS);
}

// Head row x (HS) at position t, rotated in double from the formula when rope (angle
// t * 10000^(-2i/HS), element i paired with i + HS/2), else copied.
static void ref_rope_row(double *y, const float *x, int t, int HS, int rope) {
    int half = HS / 2;
    for (int i = 0; i < HS; i++) y[i] = x[i];
    if (!rope) return;
    for (int i = 0; i < half; i++) {
        double ang = t * pow(10000.0, -2.0 * i / HS);
        y[i] = x[i] * cos(ang) - x[i + half] * sin(ang);
        y[i + half] = x[i + half] * cos(ang) + x[i] * sin(ang);
    }
}

static void test_attention(int NH, int KVH, int rope, uint64_t *s) {
    struct attention_case c = {.B = 2, .T = 7, .NH = NH, .KVH = KVH, .HS = 8};
    int B = c.B, T = c.T, HS = c.HS, maxT = T + 2;
    const size_t ld = (size_t)(NH + 2 * KVH) * HS, QD = (size_t)NH * HS, KD = (size_t)KVH * HS;
    size_t nq = (size_t)B * T * NH * HS, nqkv = (size_t)B * T * ld;
    if (rope) {
        rope_params rp = {.theta = 10000.0f};
        c.cos_tab = falloc((size_t)maxT * (HS / 2));
        c.sin_tab = falloc((size_t)maxT * (HS / 2));
        rope_tables_fill(c.cos_tab, c.sin_tab, maxT, HS, &rp);
    }
    c.qkv = frand(nqkv, -1, 1, s);
    c.out = frand(nq, -1, 1, s);                  // garbage: forward must overwrite
    c.state = falloc(be->attention_state_floats(B, T, NH, KVH, HS, rope));
    c.R = frand(nq, -1, 1, s);
    attention_loss(&c);

    // naive O(T^2) reference in double, rotating q and k itself; q, k and v of position
    // (b, t) are the column blocks [0, QD), [QD, QD+KD), [QD+KD, ld) of qkv's row
    double *ref = malloc(nq * sizeof(double));
    double *p = malloc((size_t)T * sizeof(double));
    double *qt = malloc((size_t)HS * sizeof(double)), *ku = malloc((size_t)HS * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            int kvh = h / (NH / KVH);
            for (int t = 0; t < T; t++) {
                ref_rope_row(qt, c.qkv + ((size_t)b * T + t) * ld + (size_t)h * HS, t, HS, rope);
                double mx = -INFINITY, sum = 0.0;
                for (int u = 0; u <= t; u++) {
                    ref_rope_row(ku, c.qkv + ((size_t)b * T + u) * ld + QD + (size_t)kvh * HS,
                                 u, HS, rope);
                    double d = 0.0;
                    for (int i = 0; i < HS; i++) d += qt[i] * ku[i];
                    p[u] = d / sqrt((double)HS);
                    mx = fmax(mx, p[u]);
                }
                for (int u = 0; u <= t; u++) sum += (p[u] = exp(p[u] - mx));
                for (int i = 0; i < HS; i++) {
                    double acc = 0.0;
                    for (int u = 0; u <= t; u++) {
                        acc += p[u] / sum *
                               c.qkv[((size_t)b * T + u) * ld + QD + KD + (size_t)kvh * HS + i];
                    }
                    ref[(((size_t)b * T + t) * NH + h) * HS + i] = acc;
                }
            }
        }
    }
    char name[96];
    const char *rs = rope ? " rope" : "";
    snprintf(name, sizeof name, "attention_forward NH=%d KVH=%d T=%d%s vs reference", NH, KVH,
             T, rs);
    check(name, rel_err(c.out, ref, nq), REF_TOL);

    // dqkv is overwritten (ops.h): it starts as NaN
    float *g = falloc(nqkv);
    for (size_t i = 0; i < nqkv; i++) g[i] = NAN;
    float *scratch = frand(be->attention_scratch_floats(B, T, NH, KVH, HS, rope), -1, 1, s);
    be->attention_backward(g, scratch, c.R, c.out, c.state, c.qkv, c.cos_tab, c.sin_tab, B, T,
                           NH, KVH, HS);
    const size_t rows = (size_t)B * T, cut[4] = {0, QD, QD + KD, ld};
    for (int part = 0; part < 3; part++) {   // dq, dk, dv: dqkv's column blocks
        snprintf(name, sizeof name, "attention_backward d%c NH=%d KVH=%d%s vs finite diff",
                 "qkv"[part], NH, KVH, rs);
        check(name, fd_error_block(c.qkv, rows, ld, cut[part], cut[part + 1], g,
                                   attention_loss, &c, s), FD_TOL);
    }
    free(ref); free(p); free(qt); free(ku);
    be->free(c.cos_tab); be->free(c.sin_tab);
    be->free(scratch); be->free(g);
    be->free(c.qkv); be->free(c.out); be->free(c.state);
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

// swiglu over gu (N,2F): a holds gu, n = N*F; N = SWIGLU_N rows
#define SWIGLU_N 5
static double swiglu_loss(void *p) {
    struct pointwise_case *c = p;
    be->swiglu_forward(c->out, c->a, SWIGLU_N, (int)c->n / SWIGLU_N);
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

    // swiglu on gu (N,2F): each row's gate (c.a's values) then up (c.b's)
    struct pointwise_case sw = c;
    const int N = SWIGLU_N, F = (int)n / N;
    sw.a = falloc(2 * n);
    for (int r = 0; r < N; r++) {
        memcpy(sw.a + (size_t)r * 2 * F, c.a + (size_t)r * F, (size_t)F * sizeof(float));
        memcpy(sw.a + (size_t)r * 2 * F + F, c.b + (size_t)r * F, (size_t)F * sizeof(float));
    }
    swiglu_loss(&sw);
    for (size_t i = 0; i < n; i++) ref[i] = c.a[i] / (1.0 + exp(-(double)c.a[i])) * c.b[i];
    check("swiglu_forward (gu packed) vs reference", rel_err(sw.out, ref, n), REF_TOL);
    // swiglu_backward overwrites (ops.h): a NaN-filled dgu is written over
    float *dgu = falloc(2 * n);
    for (size_t i = 0; i < 2 * n; i++) dgu[i] = NAN;
    be->swiglu_backward(dgu, sw.R, sw.a, N, F);
    check("swiglu_backward dgate (overwritten) vs finite diff",
          fd_error_block(sw.a, N, 2 * F, 0, F, dgu, swiglu_loss, &sw, s), FD_TOL);
    check("swiglu_backward dup (overwritten) vs finite diff",
          fd_error_block(sw.a, N, 2 * F, F, 2 * F, dgu, swiglu_loss, &sw, s), FD_TOL);
    be->free(sw.a); be->free(dgu);

    // residual, forward in place (out aliases a) as the model uses it
    float *db = frand(n, -1, 1, s), *db0 = fdup(db, n);
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
// optimizer

// AdamW over two segments of one flat buffer with different weight decay (and a gap
// between them that must stay untouched), 3 steps against a double reference.
static void test_adamw(uint64_t *s) {
    const size_t n = 53;
    const anv_seg segs[2] = {{0, 20, 0.1f}, {29, 24, 0.0f}};   // [20, 29) is a gap
    float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, gs = 0.5f;
    float *param = frand(n, -1, 1, s), *m = falloc(n), *v = falloc(n), *grad = falloc(n);
    float *param0 = fdup(param, n);
    double *pd = malloc(n * sizeof(double)), *md = calloc(n, sizeof(double));
    double *vd = calloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++) pd[i] = param[i];
    for (int t = 1; t <= 3; t++) {
        for (size_t i = 0; i < n; i++) grad[i] = rng_uniform(s);
        anv_adamw_args a = {lr, b1, b2, eps, gs, t};
        be->adamw_update(param, NULL, grad, m, v, segs, 2, &a);
        for (int k = 0; k < 2; k++) {
            for (size_t i = segs[k].off; i < segs[k].off + segs[k].n; i++) {
                double g = (double)grad[i] * gs, wd = segs[k].weight_decay;
                md[i] = b1 * md[i] + (1.0 - b1) * g;
                vd[i] = b2 * vd[i] + (1.0 - b2) * g * g;
                double mhat = md[i] / (1.0 - pow(b1, t)), vhat = vd[i] / (1.0 - pow(b2, t));
                pd[i] -= lr * (mhat / (sqrt(vhat) + eps) + wd * pd[i]);
            }
        }
    }
    double err = 0.0;
    for (size_t i = 0; i < n; i++) {
        err = fmax(err, fabs(param[i] - pd[i]));
        err = fmax(err, fabs(m[i] - md[i]));
        err = fmax(err, fabs(v[i] - vd[i]));
    }
    // params are O(1): each step adds ~6e-8 of float rounding, updates are ~lr
    check("adamw_update, 2 segments, 3 steps vs double reference (max abs error)", err, 1e-6);
    int gap = 1;
    for (size_t i = 20; i < 29; i++) gap &= param[i] == param0[i] && m[i] == 0.0f;
    check_true("adamw_update leaves the gap between segments untouched", gap);
    free(pd); free(md); free(vd);
    be->free(param); be->free(param0); be->free(m); be->free(v); be->free(grad);

    size_t big = 1000003;                         // odd and large: several threads' ranges
    float *x = frand(big, -1, 1, s);
    const anv_seg ss[3] = {{0, 1000, 0}, {5000, 600000, 0}, {700001, 300002, 0}};
    double ref = 0.0;
    for (int k = 0; k < 3; k++)
        for (size_t i = ss[k].off; i < ss[k].off + ss[k].n; i++) ref += (double)x[i] * x[i];
    // only the summation order differs: ~sqrt(n) * 1e-16 relative
    check("sum_squares over 3 segments vs double sum (relative)",
          fabs(be->sum_squares(x, ss, 3) - ref) / ref, 1e-10);
    float *y = fdup(x, big);
    be->scale(y, 0.37f, big);
    int same = 1;
    for (size_t i = 0; i < big; i++) same &= y[i] == x[i] * 0.37f;
    check_true("scale: x *= s exactly", same);
    float *z = fdup(x, big);
    be->add_f32(z, y, big);
    same = 1;
    for (size_t i = 0; i < big; i++) same &= z[i] == x[i] + y[i];
    check_true("add_f32: dst += src exactly", same);
    be->free(x); be->free(y); be->free(z);
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
    be->matmul_forward(out, NULL, inp, w, bias, N, C, OC);          // warm-up
    double t0 = omp_get_wtime();
    for (int r = 0; r < reps; r++) be->matmul_forward(out, NULL, inp, w, bias, N, C, OC);
    double t1 = omp_get_wtime();
    for (int r = 0; r < reps; r++)
        be->matmul_backward(dinp, ANV_GRAD_MODE_ADD, dw, db, out, inp, w, NULL, N, C, OC);
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
    for (int rms = 0; rms < 2; rms++)
        for (int alias = 0; alias < 2; alias++) test_norm_residual(rms, alias, &seed);
    test_matmul_gelu(&seed);
    test_matmul(1, 5, 7, 9, 1, &seed);
    test_matmul(0, 5, 7, 9, 1, &seed);
    test_matmul(1, 67, 130, 97, 0, &seed);         // larger, odd: blocked sgemm paths
    test_rope_tables();
    test_attention(4, 2, 0, &seed);
    test_attention(3, 3, 0, &seed);
    test_attention(4, 2, 1, &seed);
    test_attention(3, 3, 1, &seed);
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
