// tests/gpu/test_gpu_ops.c: every op of the cuda backend against the cpu backend.
//
// Each op of kernels/ops.h runs on anv_backend_cuda(0) (bf16 anv_act) and on
// anv_backend_cpu() (fp32, the reference), forward and backward, on the same fresh
// random inputs, and the results are compared; also the memory members and the
// fp32 <-> bf16 conversions (exact). Exit 77 (skipped) without a GPU. This file holds
// the helpers, main and most ops; test_gpu_ops_vocab.c the encoder and cross-entropy;
// test_gpu_ops.h the table of bounds.
//
// How the comparison is made fair and strict:
// - Inputs are drawn in fp32 on the host and rounded to bf16 (host RNE, bf16_round) so
//   both backends see identical values; the GPU error is then only its own roundings.
// - Every GPU output is POISONED with NaN before the op: an element the op forgets to
//   write stays NaN and fails the check. Accumulated (+=) outputs are instead pre-filled
//   on both sides with the same random values (prefill: 1/4..1/2 of the gradient's RMS,
//   taken from one cpu run into zeroed buffers); the check compares result - prefill,
//   so an op that overwrites instead of accumulating fails. Scratch the op overwrites
//   is NaN too, so an op that assumes it zeroed fails.
// - Every GPU tensor has GUARD elements of SENTINEL before and after it: each case ends
//   with a check that no guard changed (a write out of bounds, e.g. a vector tail), and
//   an out-of-bounds read of 1024 into a sum, max or exp shows in the results.
// - Elements that must stay untouched (dwte rows no token hits, dwpe rows >= T, AdamW
//   elements outside the segments) are checked for exact equality, and zeros that must
//   be written (cross-entropy padding, ignored rows) for exact zero.
// - Shapes include sizes that are not multiples of any tile or vector width, odd
//   segment offsets, and every aliasing and NULL option ops.h allows.
//
// Figures: rel = ||gpu - cpu||_2 / ||cpu||_2 and max = max |gpu - cpu| / max |cpu|,
// sums in double, plus no NaN/Inf on either side; bounds per op in test_gpu_ops.h. One
// line per check, "ok  " or "FAIL", then "N passed, N failed"; exit 1 if any failed.
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "tests/gpu/test_gpu_ops.h"

// ---- state, random numbers, bf16 -----------------------------------------------------

const anv_backend *gpu, *cpu;
const anv_backend *both[2];
static int passed, failed;
static uint64_t rng_state = 0x243F6A8885A308D3ull;   // fixed: every run draws the same
static char namebuf[256];               // nm(): a check's name, used at once

#define GUARD 64                 // elements of sentinel on each side of a gpu tensor:
                                 // more than a 16-byte vector (8 bf16) of overrun
#define SENTINEL 1024.0f         // exact in bf16; large enough to wreck any result it
                                 // leaks into (a sum, a max, an exp)

static void die(const char *what) {
    fprintf(stderr, "test_gpu_ops: %s\n", what);
    exit(1);
}

// splitmix64
uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// uniform in [-1, 1)
float urand(void) {
    return (float)((rng_next() >> 40) * (1.0 / (1ull << 23)) - 1.0);
}

// x rounded to the nearest bf16 (ties to even), returned as the fp32 it widens to.
// Overflow rounds to inf as RNE does; NaN stays NaN.
float bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return x;
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

static float gelu_host(float x) {
    double d = x;
    return (float)(0.5 * d * (1.0 + tanh(sqrt(2.0 / M_PI) * (d + 0.044715 * d * d * d))));
}

const char *nm(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(namebuf, sizeof namebuf, fmt, ap);
    va_end(ap);
    return namebuf;
}

void report(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    if (ok) passed++;
    else failed++;
}

// ---- host memory of one case (freed together by case_end) -----------------------------

static void **host_live;
static size_t host_n, host_cap;

void *hmalloc(size_t bytes) {
    if (host_n == host_cap) {
        host_cap = host_cap ? 2 * host_cap : 256;
        host_live = realloc(host_live, host_cap * sizeof *host_live);
        if (host_live == NULL) die("out of host memory");
    }
    void *p = malloc(bytes > 0 ? bytes : 1);
    if (p == NULL) die("out of host memory");
    host_live[host_n++] = p;
    return p;
}

float *hfloats(size_t n) {
    return hmalloc(n * sizeof(float));
}

float *hconst(size_t n, float v) {
    float *h = hfloats(n);
    for (size_t i = 0; i < n; i++) h[i] = v;
    return h;
}

// n values uniform in [lo, hi), rounded to bf16
float *hrand(size_t n, float lo, float hi) {
    float *h = hfloats(n);
    for (size_t i = 0; i < n; i++) h[i] = bf16_round(lo + (hi - lo) * 0.5f * (urand() + 1.0f));
    return h;
}

// ---- backend tensors with guards -------------------------------------------------------

static tensor **live;
static size_t live_n, live_cap;

// n floats from the host into t at element address `at`, converting to anv_act if t is
static void t_write(tensor *t, unsigned char *at, const float *h, size_t n) {
    if (t->act) t->be->act_from_host_f32(at, h, n);
    else t->be->copy_from_host(at, h, n * sizeof(float));
}

static void t_read(const tensor *t, float *h, const unsigned char *at, size_t n) {
    if (t->act) t->be->act_to_host_f32(h, at, n);
    else t->be->copy_to_host(h, at, n * sizeof(float));
}

// A zeroed tensor of n elements (alloc zeroes) between two guards of SENTINEL.
tensor *t_new(const anv_backend *be, int act, size_t n) {
    if (live_n == live_cap) {
        live_cap = live_cap ? 2 * live_cap : 64;
        live = realloc(live, live_cap * sizeof *live);
        if (live == NULL) die("out of host memory");
    }
    tensor *t = malloc(sizeof *t);
    if (t == NULL) die("out of host memory");
    t->be = be;
    t->act = act;
    t->n = n;
    t->esize = act ? be->act_bytes : sizeof(float);
    t->base = be->alloc((n + 2 * GUARD) * t->esize);
    if (t->base == NULL) die("out of backend memory");
    t->p = t->base + GUARD * t->esize;
    const float *s = hconst(GUARD, SENTINEL);
    t_write(t, t->base, s, GUARD);
    t_write(t, t->base + (GUARD + n) * t->esize, s, GUARD);
    live[live_n++] = t;
    return t;
}

void t_set(tensor *t, const float *h) {
    t_write(t, t->p, h, t->n);
}

float *t_get(const tensor *t) {
    float *h = hfloats(t->n);
    t_read(t, h, t->p, t->n);
    return h;
}

static int t_guards_ok(const tensor *t) {
    float *h = hfloats(2 * GUARD);
    t_read(t, h, t->base, GUARD);
    t_read(t, h + GUARD, t->base + (GUARD + t->n) * t->esize, GUARD);
    const float s = SENTINEL;
    for (int i = 0; i < 2 * GUARD; i++) {
        if (memcmp(&h[i], &s, sizeof s) != 0) return 0;
    }
    return 1;
}

// x's pointer on backend be, NULL for NONE
void *on(pair x, const anv_backend *be) {
    if (x.g == NULL) return NULL;
    return be == gpu ? x.g->p : x.c->p;
}

pair p_zero(int act, size_t n) {
    pair x = {t_new(gpu, act, n), t_new(cpu, act, n)};
    return x;
}

// both sides hold h (already bf16-exact where it matters)
pair p_in(int act, const float *h, size_t n) {
    pair x = p_zero(act, n);
    t_set(x.g, h);
    t_set(x.c, h);
    return x;
}

// an output: NaN on the gpu, zero on the cpu
pair p_out(int act, size_t n) {
    pair x = p_zero(act, n);
    t_set(x.g, hconst(n, NAN));
    return x;
}

pair p_i32(const int32_t *h, size_t n) {
    pair x = p_zero(F32, n);
    gpu->copy_from_host(x.g->p, h, n * sizeof(int32_t));
    cpu->copy_from_host(x.c->p, h, n * sizeof(int32_t));
    return x;
}

// Ends a case: checks the guards of every gpu tensor, frees everything it allocated.
void case_end(const char *what) {
    int bad = 0, count = 0;
    for (size_t i = 0; i < live_n; i++) {
        if (live[i]->be != gpu) continue;
        count++;
        bad += !t_guards_ok(live[i]);
    }
    if (count > 0) {
        report(bad == 0, "%s: guards of %d gpu tensors intact (%d written over)", what, count,
               bad);
    }
    for (size_t i = 0; i < live_n; i++) {
        live[i]->be->free(live[i]->base);
        free(live[i]);
    }
    live_n = 0;
    for (size_t i = 0; i < host_n; i++) free(host_live[i]);
    host_n = 0;
}

// ---- comparisons ---------------------------------------------------------------------

// g (gpu) against c (cpu), n elements, bound t. With pre (an accumulated output's
// prefill) both sides are read as result - pre and the denominators are at least pre's.
void compare_arrays(const char *name, const float *g, const float *c, const float *pre,
                           size_t n, tol t) {
    double num = 0.0, den = 0.0, pden = 0.0, emax = 0.0, cmax = 0.0, pmax = 0.0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(g[i]) || !isfinite(c[i])) {
            bad++;
            continue;
        }
        double p = pre != NULL ? pre[i] : 0.0;
        double gi = (double)g[i] - p, ci = (double)c[i] - p, e = fabs(gi - ci);
        num += e * e;
        den += ci * ci;
        pden += p * p;
        emax = fmax(emax, e);
        cmax = fmax(cmax, fabs(ci));
        pmax = fmax(pmax, fabs(p));
    }
    if (bad > 0) {
        report(0, "%s: %zu of %zu elements NaN/Inf", name, bad, n);
        return;
    }
    den = fmax(den, pden);
    cmax = fmax(cmax, pmax);
    double rel = den > 0.0 ? sqrt(num / den) : sqrt(num);
    double mx = cmax > 0.0 ? emax / cmax : emax;
    report(rel <= t.rel && mx <= t.max, "%s: rel %.1e (bound %.1e), max %.1e (bound %.1e)",
           name, rel, t.rel, mx, t.max);
}

void compare(const char *name, pair x, tol t) {
    compare_arrays(name, t_get(x.g), t_get(x.c), NULL, x.g->n, t);
}

void compare_acc(const char *name, pair x, const float *pre, tol t) {
    compare_arrays(name, t_get(x.g), t_get(x.c), pre, x.g->n, t);
}

// Exact equality (-inf equals -inf, NaN equals nothing).
void compare_exact(const char *name, const float *g, const float *c, size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(g[i] == c[i])) {
            if (bad++ == 0) first = i;
        }
    }
    if (bad == 0) report(1, "%s: exact (n=%zu)", name, n);
    else report(0, "%s: %zu of %zu differ, first [%zu] %.9g vs %.9g", name, bad, n, first,
                g[first], c[first]);
}

// After the cpu op ran once into the zeroed x (the gradient's scale): loads both sides
// of x with the same bf16-exact random prefill, of magnitude 1/4..1/2 of that gradient's
// RMS (of 1e-3 when the gradient is ~0) and random sign, and returns it; NULL for NONE.
// Never small: an op that overwrites errs by >= 1/4 on every element.
float *prefill(pair x) {
    if (x.g == NULL) return NULL;
    size_t n = x.c->n;
    const float *c = t_get(x.c);
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)c[i] * c[i];
    float s = (float)(0.25 * sqrt(ss / (double)(n > 0 ? n : 1)));
    if (!(s >= 1e-3f)) s = 1e-3f;
    float *pre = hfloats(n);
    for (size_t i = 0; i < n; i++) {
        float mag = s * (1.5f + 0.5f * urand());                  // [s, 2s)
        pre[i] = bf16_round(rng_next() & 1 ? mag : -mag);
    }
    t_set(x.g, pre);
    t_set(x.c, pre);
    return pre;
}

// ---- memory and conversions -------------------------------------------------------------

static void test_memory(void) {
    static const size_t sizes[] = {1, 4093, ((size_t)3 << 20) + 5};   // odd; 3 MiB
    for (int i = 0; i < 3; i++) {
        size_t n = sizes[i];
        unsigned char *d = gpu->alloc(n), *h = hmalloc(n);
        if (d == NULL) die("gpu alloc failed");
        memset(h, 0xA5, n);
        gpu->copy_to_host(h, d, n);
        int ok = 1;
        for (size_t j = 0; j < n; j++) ok &= h[j] == 0;
        report(ok, "alloc(%zu) is zeroed", n);
        gpu->free(d);
    }
    size_t n = sizes[2];
    unsigned char *a = gpu->alloc(n), *b = gpu->alloc(n);
    unsigned char *h = hmalloc(n), *h2 = hmalloc(n);
    if (a == NULL || b == NULL) die("gpu alloc failed");
    for (size_t j = 0; j < n; j++) h[j] = (unsigned char)(rng_next() >> 56);
    gpu->copy_from_host(a, h, n);
    gpu->copy_from_host(b, h, n);
    gpu->zero(b, n);
    gpu->copy(b + 3, a + 1, n - 4);              // byte offsets: no alignment assumed
    gpu->copy_to_host(h2, b, n);
    int ok = h2[0] == 0 && h2[1] == 0 && h2[2] == 0 && h2[n - 1] == 0 &&
             memcmp(h2 + 3, h + 1, n - 4) == 0;
    gpu->copy_to_host(h2, a, n);
    ok = ok && memcmp(h2, h, n) == 0;
    gpu->synchronize();
    gpu->free(NULL);
    report(ok, "copy_from_host, zero, copy at odd offsets, copy_to_host, free(NULL)");
    gpu->free(a);
    gpu->free(b);
    if (gpu->mem_info != NULL) {
        size_t fr = 0, total = 0;
        gpu->mem_info(&fr, &total);
        report(total > 0 && fr <= total, "mem_info: %zu MiB free of %zu MiB", fr >> 20,
               total >> 20);
    }
    case_end("memory");
}

// Index of the first element of got that is not bf16_round(x) bit for bit (a NaN must
// stay a NaN, any payload), or n.
static size_t first_unrounded(const float *got, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float e = bf16_round(x[i]);
        if (isnan(e) ? !isnan(got[i]) : memcmp(&e, &got[i], sizeof e) != 0) return i;
    }
    return n;
}

static void report_rounded(const char *what, const float *got, const float *x, size_t n) {
    size_t i = first_unrounded(got, x, n);
    if (i == n) report(1, "%s: exact round to nearest even (n=%zu)", what, n);
    else report(0, "%s: [%zu] %.9g -> %.9g, expected %.9g", what, i, x[i], got[i],
                bf16_round(x[i]));
}

// The four conversions on x (n): host -> act -> host, device fp32 -> act, act -> fp32.
static void test_conversion(const char *kind, const float *x, size_t n) {
    tensor *a = t_new(gpu, ACT, n), *a2 = t_new(gpu, ACT, n);
    tensor *f = t_new(gpu, F32, n), *f2 = t_new(gpu, F32, n);
    t_set(a, x);
    report_rounded(nm("act_from_host_f32 + act_to_host_f32, %s", kind), t_get(a), x, n);
    t_set(f, x);
    t_set(a2, hconst(n, NAN));
    gpu->act_from_f32(a2->p, f->p, n);
    report_rounded(nm("act_from_f32, %s", kind), t_get(a2), x, n);
    t_set(f2, hconst(n, NAN));
    gpu->act_to_f32(f2->p, a2->p, n);
    report_rounded(nm("act_to_f32, %s", kind), t_get(f2), x, n);
    case_end(nm("conversions, %s", kind));
}

static void test_conversions(void) {
    // normal numbers over 41 binades; every 5th exactly halfway between two bf16 values
    size_t n = 1000003;
    float *x = hfloats(n);
    for (size_t i = 0; i < n; i++) {
        x[i] = urand() * (float)ldexp(1.0, (int)(rng_next() % 41) - 20);
        if (i % 5 == 0) {
            float y = bf16_round(x[i]);
            uint32_t u;
            memcpy(&u, &y, sizeof u);
            u |= 0x8000u;                        // the midpoint above |y|
            memcpy(&x[i], &u, sizeof u);
        }
    }
    test_conversion("random with ties", x, n);
    // signed zeros, infinities, NaNs, overflow, ties to even up and down, near-ties
    const float sp[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MAX, -FLT_MAX,
                        3.3895314e38f, 1.0f + 0x1p-8f, 1.0f + 0x3p-8f, -(1.0f + 0x1p-8f),
                        -(1.0f + 0x3p-8f), 1.0f + 0x1p-8f + 0x1p-20f,
                        1.0f + 0x1p-8f - 0x1p-20f, 1.17549435e-38f, 65504.0f};
    test_conversion("special values", sp, sizeof sp / sizeof sp[0]);
    const float sub[] = {FLT_TRUE_MIN, -FLT_TRUE_MIN, 1e-40f, -1e-40f, 5.9e-39f,
                         1.1754942e-38f, -3.3e-39f};
    test_conversion("subnormals", sub, sizeof sub / sizeof sub[0]);
}

// ---- layernorm and rmsnorm -----------------------------------------------------------

// max over rows of |mean_gpu - mean_cpu| * rstd: the mean's error in units of the
// row's standard deviation, which is what reaches out (a ratio to mean itself would
// blow up on rows whose mean is ~0)
static void check_mean(const char *name, pair mean, pair rstd, double bound) {
    const float *mg = t_get(mean.g), *mc = t_get(mean.c), *rc = t_get(rstd.c);
    double e = 0.0;
    size_t bad = 0;
    for (size_t i = 0; i < mean.g->n; i++) {
        if (!isfinite(mg[i])) bad++;
        else e = fmax(e, fabs((double)mg[i] - mc[i]) * rc[i]);
    }
    if (bad > 0) report(0, "%s: %zu NaN/Inf", name, bad);
    else report(e <= bound, "%s: max |dmean| * rstd %.1e (bound %.1e)", name, e, bound);
}

static void norm_backward(const anv_backend *be, int rms, pair dinp, pair dw, pair db,
                          pair dout, pair inp, pair w, pair mean, pair rstd, int N, int C) {
    if (rms) {
        be->rmsnorm_backward(on(dinp, be), on(dw, be), on(dout, be), on(inp, be), on(w, be),
                             on(rstd, be), N, C);
    } else {
        be->layernorm_backward(on(dinp, be), on(dw, be), on(db, be), on(dout, be), on(inp, be),
                               on(w, be), on(mean, be), on(rstd, be), N, C);
    }
}

static void test_norm(int rms, int N, int C) {
    const char *op = rms ? "rmsnorm" : "layernorm";
    char cs[48];
    snprintf(cs, sizeof cs, "N=%d C=%d", N, C);
    size_t n = (size_t)N * C;
    float eps = 1e-5f;
    pair inp = p_in(ACT, hrand(n, -1.0f, 1.5f), n);        // nonzero mean on purpose
    pair w = p_in(ACT, hrand((size_t)C, 0.5f, 1.5f), (size_t)C);
    pair b = rms ? NONE : p_in(ACT, hrand((size_t)C, -0.5f, 0.5f), (size_t)C);
    pair out = p_out(ACT, n), mean = rms ? NONE : p_out(F32, (size_t)N);
    pair rstd = p_out(F32, (size_t)N);
    for (int s = 0; s < 2; s++) {
        const anv_backend *be = both[s];
        if (rms) {
            be->rmsnorm_forward(on(out, be), on(rstd, be), on(inp, be), on(w, be), N, C, eps);
        } else {
            be->layernorm_forward(on(out, be), on(mean, be), on(rstd, be), on(inp, be),
                                  on(w, be), on(b, be), N, C, eps);
        }
    }
    compare(nm("%s_forward out %s", op, cs), out, TOL_NORM);
    if (!rms) check_mean(nm("layernorm_forward mean %s", cs), mean, rstd, TOL_F32.max);
    compare(nm("%s_forward rstd %s", op, cs), rstd, TOL_F32);

    // backward, each backend on its own forward's statistics
    pair dout = p_in(ACT, hrand(n, -1, 1), n);
    pair dinp = p_zero(ACT, n), dw = p_zero(F32, (size_t)C);
    pair db = rms ? NONE : p_zero(F32, (size_t)C);
    norm_backward(cpu, rms, dinp, dw, db, dout, inp, w, mean, rstd, N, C);
    float *pre_inp = prefill(dinp), *pre_w = prefill(dw), *pre_b = prefill(db);
    norm_backward(cpu, rms, dinp, dw, db, dout, inp, w, mean, rstd, N, C);
    norm_backward(gpu, rms, dinp, dw, db, dout, inp, w, mean, rstd, N, C);
    compare_acc(nm("%s_backward dinp %s", op, cs), dinp, pre_inp, TOL_NORM);
    compare_acc(nm("%s_backward dweight %s", op, cs), dw, pre_w, TOL_F32);
    if (!rms) compare_acc(nm("layernorm_backward dbias %s", cs), db, pre_b, TOL_F32);
    case_end(nm("%s %s", op, cs));
}

// The fused residual + norm; alias 0: res is its own (poisoned) buffer, 1: res is a,
// 2: res is b.
static void test_norm_residual(int rms, int N, int C, int alias) {
    const char *op = rms ? "rmsnorm_residual" : "layernorm_residual";
    static const char *alias_name[] = {"", " res=a", " res=b"};
    char cs[64];
    snprintf(cs, sizeof cs, "N=%d C=%d%s", N, C, alias_name[alias]);
    size_t n = (size_t)N * C;
    float eps = 1e-5f;
    pair a = p_in(ACT, hrand(n, -1.0f, 1.2f), n), b = p_in(ACT, hrand(n, -1.0f, 1.2f), n);
    pair w = p_in(ACT, hrand((size_t)C, 0.5f, 1.5f), (size_t)C);
    pair bias = rms ? NONE : p_in(ACT, hrand((size_t)C, -0.5f, 0.5f), (size_t)C);
    pair res = alias == 1 ? a : alias == 2 ? b : p_out(ACT, n);
    pair out = p_out(ACT, n), mean = rms ? NONE : p_out(F32, (size_t)N);
    pair rstd = p_out(F32, (size_t)N);
    for (int s = 0; s < 2; s++) {
        const anv_backend *be = both[s];
        if (rms) {
            be->rmsnorm_residual_forward(on(res, be), on(out, be), on(rstd, be), on(a, be),
                                         on(b, be), on(w, be), N, C, eps);
        } else {
            be->layernorm_residual_forward(on(res, be), on(out, be), on(mean, be),
                                           on(rstd, be), on(a, be), on(b, be), on(w, be),
                                           on(bias, be), N, C, eps);
        }
    }
    compare(nm("%s_forward res %s", op, cs), res, TOL_ROUND1);
    compare(nm("%s_forward out %s", op, cs), out, TOL_NORM);
    if (!rms) check_mean(nm("%s_forward mean %s", op, cs), mean, rstd, TOL_NORM_RES_STAT.max);
    compare(nm("%s_forward rstd %s", op, cs), rstd, TOL_NORM_RES_STAT);
    case_end(nm("%s %s", op, cs));
}

// ---- matmul ------------------------------------------------------------------------------

enum { NO_DINP = 1, NO_DWEIGHT = 2, NO_DBIAS = 4 };   // gradients passed as NULL

// dinp is accumulated (ADD) unless pre_gelu is given (the dGELU form overwrites)
static void matmul_backward(const anv_backend *be, pair dinp, pair dw, pair db, pair dout,
                            pair inp, pair w, pair pre, int N, int C, int OC) {
    anv_grad_mode mode = pre.g != NULL ? ANV_GRAD_MODE_SET : ANV_GRAD_MODE_ADD;
    be->matmul_backward(on(dinp, be), mode, on(dw, be), on(db, be), on(dout, be), on(inp, be),
                        on(w, be), on(pre, be), N, C, OC);
}

static const char *mm_tag = "";          // " tuned" once matmul_tune has run

static void test_matmul(int N, int C, int OC, int bias, int gelu, int nulls) {
    char cs[112];
    snprintf(cs, sizeof cs, "(%d,%d,%d)%s%s%s%s%s%s", N, C, OC, bias ? " bias" : "",
             gelu ? " gelu" : "", nulls & NO_DINP ? " dinp=NULL" : "",
             nulls & NO_DWEIGHT ? " dweight=NULL" : "", nulls & NO_DBIAS ? " dbias=NULL" : "",
             mm_tag);
    size_t ni = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    float ws = 1.7f / sqrtf((float)C);            // out ~0.6 RMS: GELU's curved range
    pair inp = p_in(ACT, hrand(ni, -1, 1), ni);
    pair w = p_in(ACT, hrand(nw, -ws, ws), nw);
    pair bi = bias ? p_in(ACT, hrand((size_t)OC, -0.5f, 0.5f), (size_t)OC) : NONE;
    pair out = p_out(ACT, no), pre = gelu ? p_out(ACT, no) : NONE;
    for (int s = 0; s < 2; s++) {
        const anv_backend *be = both[s];
        be->matmul_forward(on(out, be), on(pre, be), on(inp, be), on(w, be), on(bi, be), N, C,
                           OC);
    }
    compare(nm("matmul_forward out %s", cs), out, TOL_MATMUL);
    if (gelu) compare(nm("matmul_forward pre_gelu %s", cs), pre, TOL_MATMUL);

    // backward; with gelu the input came through a GELU, inp = gelu(pre_in) (N,C), and
    // dinp is OVERWRITTEN with the gradient w.r.t. pre_in
    pair dout = p_in(ACT, hrand(no, -1, 1), no);
    pair pre_in = NONE, x = inp;
    if (gelu) {
        float *h = hrand(ni, -3, 3), *gx = hfloats(ni);
        for (size_t i = 0; i < ni; i++) gx[i] = bf16_round(gelu_host(h[i]));
        pre_in = p_in(ACT, h, ni);
        x = p_in(ACT, gx, ni);
    }
    pair dinp = nulls & NO_DINP ? NONE : gelu ? p_out(ACT, ni) : p_zero(ACT, ni);
    pair dw = nulls & NO_DWEIGHT ? NONE : p_zero(F32, nw);
    pair db = bias && !(nulls & NO_DBIAS) ? p_zero(F32, (size_t)OC) : NONE;
    matmul_backward(cpu, dinp, dw, db, dout, x, w, pre_in, N, C, OC);
    float *pre_inp = gelu ? NULL : prefill(dinp), *pre_w = prefill(dw), *pre_b = prefill(db);
    matmul_backward(cpu, dinp, dw, db, dout, x, w, pre_in, N, C, OC);
    matmul_backward(gpu, dinp, dw, db, dout, x, w, pre_in, N, C, OC);
    if (dinp.g != NULL) {
        compare_acc(nm("matmul_backward dinp%s %s", gelu ? " (dGELU, overwritten)" : "", cs),
                    dinp, pre_inp, TOL_MATMUL);
    }
    if (dw.g != NULL) compare_acc(nm("matmul_backward dweight %s", cs), dw, pre_w, TOL_MATMUL_F32);
    if (db.g != NULL) compare_acc(nm("matmul_backward dbias %s", cs), db, pre_b, TOL_MATMUL_F32);
    if (dinp.g != NULL && !gelu) {
        // dinp_mode SET (the model's first write to a buffer): a NaN-filled dinp overwritten
        pair dset = p_out(ACT, ni);
        for (int s = 0; s < 2; s++) {
            const anv_backend *be = both[s];
            be->matmul_backward(on(dset, be), ANV_GRAD_MODE_SET, NULL, NULL, on(dout, be),
                                on(x, be), on(w, be), NULL, N, C, OC);
        }
        compare(nm("matmul_backward dinp SET (overwritten) %s", cs), dset, TOL_MATMUL);
    }
    case_end(nm("matmul %s", cs));
}

// ---- pointwise ---------------------------------------------------------------------------

static void test_gelu(size_t n) {
    pair x = p_in(ACT, hrand(n, -4, 4), n), dout = p_in(ACT, hrand(n, -1, 1), n);
    pair out = p_out(ACT, n);
    for (int s = 0; s < 2; s++) both[s]->gelu_forward(on(out, both[s]), on(x, both[s]), n);
    compare(nm("gelu_forward n=%zu", n), out, TOL_POINTWISE);
    // gelu_backward accumulates
    pair dx = p_zero(ACT, n);
    cpu->gelu_backward(on(dx, cpu), on(x, cpu), on(dout, cpu), n);
    float *px = prefill(dx);
    for (int s = 0; s < 2; s++)
        both[s]->gelu_backward(on(dx, both[s]), on(x, both[s]), on(dout, both[s]), n);
    compare_acc(nm("gelu_backward n=%zu", n), dx, px, TOL_POINTWISE);
    case_end(nm("gelu n=%zu", n));
}

// SwiGLU on gu (N,2F): gate in [-4, 4), up in [-2, 2); dgu overwritten (NaN on the gpu
// beforehand)
static void test_swiglu(int N, int F) {
    const size_t n = (size_t)N * F;
    float *h = hfloats(2 * n);
    for (size_t i = 0; i < 2 * n; i++)
        h[i] = bf16_round((i / F) % 2 == 0 ? 4.0f * urand() : 2.0f * urand());
    pair gu = p_in(ACT, h, 2 * n), dout = p_in(ACT, hrand(n, -1, 1), n);
    pair out = p_out(ACT, n), dgu = p_out(ACT, 2 * n);
    for (int s = 0; s < 2; s++) {
        const anv_backend *be = both[s];
        be->swiglu_forward(on(out, be), on(gu, be), N, F);
        be->swiglu_backward(on(dgu, be), on(dout, be), on(gu, be), N, F);
    }
    compare(nm("swiglu_forward N=%d F=%d", N, F), out, TOL_POINTWISE);
    compare(nm("swiglu_backward dgu (overwritten) N=%d F=%d", N, F), dgu, TOL_POINTWISE);
    case_end(nm("swiglu N=%d F=%d", N, F));
}

static void test_residual(size_t n) {
    float *ha = hrand(n, -1, 1);
    pair a = p_in(ACT, ha, n), b = p_in(ACT, hrand(n, -1, 1), n), out = p_out(ACT, n);
    pair a2 = p_in(ACT, ha, n), dout = p_in(ACT, hrand(n, -1, 1), n);
    for (int s = 0; s < 2; s++) {
        const anv_backend *be = both[s];
        be->residual_forward(on(out, be), on(a, be), on(b, be), n);
        be->residual_forward(on(a2, be), on(a2, be), on(b, be), n);
    }
    compare(nm("residual_forward n=%zu", n), out, TOL_ROUND1);
    compare(nm("residual_forward (out aliases a) n=%zu", n), a2, TOL_ROUND1);
    // backward with both gradients, with da = NULL, with db = NULL
    for (int variant = 0; variant < 3; variant++) {
        static const char *vname[] = {"", " da=NULL", " db=NULL"};
        pair da = variant == 1 ? NONE : p_zero(ACT, n), db = variant == 2 ? NONE : p_zero(ACT, n);
        cpu->residual_backward(on(da, cpu), on(db, cpu), on(dout, cpu), n);
        float *pa = prefill(da), *pb = prefill(db);
        for (int s = 0; s < 2; s++) {
            const anv_backend *be = both[s];
            be->residual_backward(on(da, be), on(db, be), on(dout, be), n);
        }
        if (da.g != NULL) {
            compare_acc(nm("residual_backward da%s n=%zu", vname[variant], n), da, pa,
                        TOL_ROUND1_ACC);
        }
        if (db.g != NULL) {
            compare_acc(nm("residual_backward db%s n=%zu", vname[variant], n), db, pb,
                        TOL_ROUND1_ACC);
        }
    }
    case_end(nm("residual n=%zu", n));
}

// ---- optimizer -----------------------------------------------------------------------

static void test_sum_squares_scale(void) {
    // odd offsets, gaps between segments, a one-element segment; each segment is scaled
    // to contribute ~1e4 (>= 5% of the total) and the gaps hold 1000 (1e6 each), so a
    // dropped, doubled or overrun segment is far outside the bound
    static const anv_seg segs[] = {{0, 1, 0.0f}, {5, 999, 0.0f}, {1007, 2000003, 0.0f},
                                   {2001013, 999001, 0.0f}};
    size_t n = 3000017;
    float *h = hconst(n, 1000.0f);
    for (int k = 0; k < 4; k++) {
        float a = sqrtf(1e4f / (float)segs[k].n);
        for (size_t i = 0; i < segs[k].n; i++) {
            float mag = a * (1.0f + 0.5f * urand());               // [0.5a, 1.5a)
            h[segs[k].off + i] = bf16_round(rng_next() & 1 ? mag : -mag);
        }
    }
    pair x = p_in(F32, h, n);
    for (int nseg = 1; nseg <= 4; nseg += 3) {
        double g = gpu->sum_squares(on(x, gpu), segs, nseg);
        double c = cpu->sum_squares(on(x, cpu), segs, nseg);
        double rel = fabs(g - c) / c;
        report(isfinite(g) && rel <= TOL_SUMSQ,
               "sum_squares, %d segment(s): %.9g vs %.9g, rel %.1e (bound %.1e)", nseg, g, c,
               rel, TOL_SUMSQ);
    }
    for (size_t m = 5; m <= 1000003; m += 999998) {
        pair y = p_in(F32, hrand(m, -1, 1), m);
        for (int s = 0; s < 2; s++) both[s]->scale(on(y, both[s]), 0.37f, m);
        compare_exact(nm("scale n=%zu (x *= 0.37, one correctly rounded product)", m),
                      t_get(y.g), t_get(y.c), m);
    }
    case_end("sum_squares, scale");
}

// compare_arrays over the elements inside the segments only (the sentinels outside
// would dominate both norms)
static void compare_inside(const char *name, const float *g, const float *c,
                           const char *inside, size_t n, tol t) {
    float *gi = hfloats(n), *ci = hfloats(n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!inside[i]) continue;
        gi[k] = g[i];
        ci[k++] = c[i];
    }
    compare_arrays(name, gi, ci, NULL, k, t);
}

// GPU: fp32 master + bf16 param; CPU: master NULL, fp32 param. 3 steps with fresh
// gradients, a weight decay per segment, grad_scale 0.5.
static void test_adamw(void) {
    // 13 chunks of 16384: more than a block each on a machine of 1 multiprocessor
    // (EMU_SM_COUNT=1), so the grid-stride loop is run too
    static const anv_seg segs[] = {{0, 1, 0.1f}, {3, 1000, 0.0f}, {1005, 4099, 0.1f},
                                   {5107, 150001, 0.5f}};
    const int nseg = 4;
    size_t n = 155111;                            // 3 elements past the last segment
    char *inside = hmalloc(n);
    memset(inside, 0, n);
    for (int k = 0; k < nseg; k++) memset(inside + segs[k].off, 1, segs[k].n);
    // outside the segments: values no update may change (gradients 3 there)
    float *w0 = hfloats(n), *z0 = hfloats(n);
    for (size_t i = 0; i < n; i++) {
        w0[i] = inside[i] ? urand() : 5.0f;       // fp32 master: not rounded
        z0[i] = inside[i] ? 0.0f : 7.0f;
    }
    pair param = p_in(ACT, w0, n), m = p_in(F32, z0, n), v = p_in(F32, z0, n);
    pair grad = p_zero(F32, n);
    tensor *master = t_new(gpu, F32, n);
    t_set(master, w0);
    for (int t = 1; t <= 3; t++) {
        float *g = hfloats(n);
        for (size_t i = 0; i < n; i++) g[i] = inside[i] ? urand() : 3.0f;
        t_set(grad.g, g);
        t_set(grad.c, g);
        anv_adamw_args a = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
                            .grad_scale = 0.5f, .t = t};
        gpu->adamw_update(on(param, gpu), master->p, on(grad, gpu), on(m, gpu), on(v, gpu),
                          segs, nseg, &a);
        cpu->adamw_update(on(param, cpu), NULL, on(grad, cpu), on(m, cpu), on(v, cpu), segs,
                          nseg, &a);
    }
    const float *gm = t_get(master), *gw = t_get(param.g), *cw = t_get(param.c);
    const float *mg = t_get(m.g), *mc = t_get(m.c), *vg = t_get(v.g), *vc = t_get(v.c);
    compare_inside("adamw_update 3 steps: gpu master vs cpu param", gm, cw, inside, n,
                   TOL_ADAMW);
    compare_inside("adamw_update 3 steps: m", mg, mc, inside, n, TOL_ADAMW);
    compare_inside("adamw_update 3 steps: v", vg, vc, inside, n, TOL_ADAMW);
    float *rc = hfloats(n), *rm = hfloats(n);
    for (size_t i = 0; i < n; i++) {
        rc[i] = bf16_round(cw[i]);
        rm[i] = bf16_round(gm[i]);
    }
    compare_inside("adamw_update 3 steps: gpu bf16 param vs cpu param rounded", gw, rc,
                   inside, n, TOL_ADAMW_PARAM);
    compare_exact("adamw_update: bf16 param = its master rounded to nearest even", gw, rm, n);
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        if (!inside[i]) ok &= gm[i] == 5.0f && gw[i] == 5.0f && mg[i] == 7.0f && vg[i] == 7.0f;
    }
    report(ok, "adamw_update: master, param, m, v outside the segments untouched");
    case_end("adamw_update");
}

// The cases of main's matmul group: shapes from 1 row to GPT-2's q, k, v (N, C, OC), each
// with and without bias and GELU, and the NULL gradients the model passes.
static void test_matmul_cases(void) {
    static const int mm[][3] = {{1, 8, 8}, {7, 33, 65}, {100, 96, 200}, {256, 768, 2304}};
    for (int si = 0; si < 4; si++) {
        for (int bias = 1; bias >= 0; bias--) {
            for (int gelu = 0; gelu < 2; gelu++) {
                int nulls = 0;
                if (si == 0 && bias && !gelu) nulls = NO_DBIAS;      // a frozen bias
                if (si == 1 && bias && !gelu) nulls = NO_DINP;       // the first layer
                if (si == 2 && !bias && !gelu) nulls = NO_DWEIGHT;   // a frozen weight
                test_matmul(mm[si][0], mm[si][1], mm[si][2], bias, gelu, nulls);
            }
        }
    }
}

static void tune_print(const char *what, const anv_tune_report *r) {
    printf("matmul_tune, %s: %d problems timed (%d candidates), %d faster than cuBLASLt's "
           "first choice (one call of each %.3f -> %.3f ms), %d with one candidate, %d "
           "without room, %.2f s\n", what, r->problems, r->candidates, r->changed,
           r->first_ms, r->best_ms, r->single, r->skipped, r->seconds);
    report(r->best_ms <= r->first_ms && r->changed <= r->problems &&
               r->candidates >= 2 * r->problems,
           "matmul_tune, %s: the report is consistent (kept %.3f <= first %.3f ms, %d "
           "changed, %d candidates for %d problems)", what, r->best_ms, r->first_ms,
           r->changed, r->candidates, r->problems);
}

// be->matmul_tune (train.matmul_algo): the candidates of the problems the matmul cases
// made are timed on operands placed in two guarded scratch tensors, and nothing is
// written outside them. First with 64 + 256 KiB, room for the small cases only (the
// others are left for later), then with 8 + 16 MiB, room for the rest (the largest:
// 7 MiB of fp32 dweight); a third call finds nothing new. main then runs the cases
// again on the algorithms kept, against the cpu.
static void test_matmul_tune(void) {
    if (gpu->matmul_tune == NULL) {
        report(0, "matmul_tune: the cuda backend has none");
        return;
    }
    anv_tune_report r1, r2, r3;
    tensor *s0 = t_new(gpu, F32, (size_t)16 << 10), *s1 = t_new(gpu, F32, (size_t)64 << 10);
    void *const small[2] = {s0->p, s1->p};
    const size_t small_bytes[2] = {s0->n * s0->esize, s1->n * s1->esize};
    gpu->matmul_tune(small, small_bytes, 2, NULL, &r1);
    tune_print("64 + 256 KiB", &r1);
    report(r1.problems + r1.single > 0 && r1.skipped > 0,
           "matmul_tune, 64 + 256 KiB: the small problems considered (%d timed, %d with one "
           "candidate), the large ones without room (%d)", r1.problems, r1.single,
           r1.skipped);
    s0 = t_new(gpu, F32, (size_t)2 << 20);
    s1 = t_new(gpu, F32, (size_t)4 << 20);
    void *const large[2] = {s0->p, s1->p};
    const size_t large_bytes[2] = {s0->n * s0->esize, s1->n * s1->esize};
    gpu->matmul_tune(large, large_bytes, 2, stdout, &r2);
    tune_print("8 + 16 MiB", &r2);
    report(r2.problems + r2.single == r1.skipped && r2.skipped == 0,
           "matmul_tune, 8 + 16 MiB: the %d problems left considered now (%d timed, %d with "
           "one candidate, %d without room)", r1.skipped, r2.problems, r2.single, r2.skipped);
    gpu->matmul_tune(large, large_bytes, 2, NULL, &r3);
    report(r3.problems + r3.single + r3.skipped == 0,
           "matmul_tune: a third call finds nothing new to time");
    case_end("matmul_tune (the scratch's guards)");
    mm_tag = " tuned";
}

// ----------------------------------------------------------------------------------------

// The environment's GPU_OPS_ONLY, a comma-separated list of groups (memory, encoder,
// norm, matmul, attention, pointwise, crossentropy, optimizer), selects what runs (all
// when unset): a sanitizer run (tests/gpu/device_check.sh) takes a subset.
static int want(const char *group) {
    const char *only = getenv("GPU_OPS_ONLY");
    if (only == NULL || *only == '\0') return 1;
    const size_t n = strlen(group);
    for (const char *p = only; *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, group, n) == 0) return 1;
        p += len + (end != NULL);
    }
    return 0;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int ndev = anv_cuda_device_count();
    if (ndev == 0) {
        printf("test_gpu_ops: skipped: the CUDA runtime sees no GPU\n");
        return 77;
    }
    gpu = anv_backend_cuda(0);
    if (gpu == NULL) {
        printf("test_gpu_ops: skipped: anv_backend_cuda(0) returned NULL\n");
        return 77;
    }
    cpu = anv_backend_cpu();
    both[0] = gpu;
    both[1] = cpu;
    printf("test_gpu_ops: %s backend (%zu-byte act) vs %s backend, %d GPU(s) seen\n", gpu->name,
           gpu->act_bytes, cpu->name, ndev);

    if (want("memory")) {
        test_memory();
        test_conversions();
    }

    if (want("encoder")) {
        test_encoder(1, 1, 8, 0, 3, 3, 1);
        test_encoder(2, 7, 33, 4, 5, 12, 0);          // tokens below and above the shard
        test_encoder(2, 7, 33, 4, 5, 12, 1);
        test_encoder(4, 64, 768, 0, 5, 9, 1);         // ~28 tokens per row: a contended scatter
        test_encoder(8, 128, 72, 0, 3, 3, 0);         // ~340 per row: several chunks each
        test_encoder(2, 100, 2048, 1000, 3000, 5000, 0);
        test_encoder(4, 64, 768, 0, 50304, 50257, 1); // GPT-2's table: most rows untouched
    }

    static const int norm_n[] = {1, 5, 300}, norm_c[] = {8, 33, 768, 2048};
    for (int rms = 0; rms < 2 && want("norm"); rms++) {
        for (int i = 0; i < 3; i++) {
            for (int j = 0; j < 4; j++) test_norm(rms, norm_n[i], norm_c[j]);
        }
        static const int rn[][2] = {{1, 8}, {5, 33}, {300, 768}, {5, 2048}};
        for (int i = 0; i < 4; i++) {
            for (int alias = 0; alias < 3; alias++) {
                test_norm_residual(rms, rn[i][0], rn[i][1], alias);
            }
        }
    }

    if (want("matmul")) {
        test_matmul_cases();
        test_matmul_tune();
        test_matmul_cases();      // on the algorithms the timing kept
    }

    // HS 8 and 16: the generic path; 32..128: tensor cores. Each with and without RoPE.
    static const int at[][5] = {{1, 1, 1, 1, 8},   {2, 7, 4, 2, 16},   {1, 33, 4, 1, 64},
                                {2, 100, 6, 3, 64}, {1, 257, 8, 2, 128}, {1, 200, 4, 4, 32},
                                {1, 130, 2, 1, 96}};
    for (int i = 0; i < 7 && want("attention"); i++) {
        for (int rope = 0; rope < 2; rope++) {
            test_attention(at[i][0], at[i][1], at[i][2], at[i][3], at[i][4],
                           rope ? 1 + i % 2 : 0);
        }
    }

    static const size_t pn[] = {7, 1001, 65537, 1048583};      // none a multiple of 8
    for (int i = 0; i < 4 && want("pointwise"); i++) test_gelu(pn[i]);
    // F % 8 != 0 (the scalar kernel) and F % 8 == 0 (vectors), up to ~1M elements
    static const int sw[][2] = {{1, 7}, {7, 143}, {31, 2114}, {3, 8}, {128, 8192}};
    for (int i = 0; i < 5 && want("pointwise"); i++) test_swiglu(sw[i][0], sw[i][1]);
    static const size_t rsn[] = {1, 7, 1001, 1048583};
    for (int i = 0; i < 4 && want("pointwise"); i++) test_residual(rsn[i]);

    if (want("crossentropy")) {
        test_crossentropy(1, 8, 1, 8);
        test_crossentropy(5, 13, 1, 16);              // 3 padding columns
        test_crossentropy(37, 1000, 2, 512);          // shard 1: 488 real, 24 padding
        test_crossentropy(6, 9, 3, 5);                // shard 2 has no real column
        test_crossentropy(64, 50257, 1, 50304);       // GPT-2
        test_crossentropy(64, 50257, 2, 25152);
        test_crossentropy(8, 128256, 1, 128256);      // Llama 3: long rows, no padding
        test_crossentropy_fused(9, 13, 16);           // one kernel, 3 padding columns
        test_crossentropy_fused(33, 50257, 50304);    // GPT-2: one kernel, the row in smem
        test_crossentropy_fused(6, 128256, 128256);   // Llama 3: too long, the three kernels
        test_crossentropy_fused(5, 99, 101);          // Vs % 8 != 0: the three kernels
    }

    if (want("optimizer")) {
        test_sum_squares_scale();
        test_adamw();
    }

    printf("%d passed, %d failed\n", passed, failed);
    return failed > 0 ? 1 : 0;
}
