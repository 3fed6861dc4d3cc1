// trainer/profile.c: per-op timing of one training step (run.profile_step).
//
// profile_wrap copies the backend and replaces each op with a wrapper of the same
// signature that calls the real op between prof_open and prof_close. Outside the
// profiled step those two return at once; inside it they record a stamp before and
// after the op (and remember which table row the op belongs to), so the host does no
// waiting during the step: the stamps are read once, by profile_end. The stamps (CUDA
// events) and records are made by profile_begin, enough for a large model's step, so
// the step itself only records them (a pool that runs out doubles, rarely). Memory
// management, sizes and the stamps themselves are not wrapped.
//
// Rows: an op's name, plus the shape for matmuls and attention (a step holds several
// shapes of each, which run at different speeds). FLOPs, for the TFLOP/s column:
// matmul 2 N C OC per product (forward 1, backward 1 per wanted dinp / dweight);
// attention, the causal half's scores T (T + 1) / 2 per head, 2 products of HS
// forward and 5 backward (the scores recomputed, dV, dP, dK, dQ). Bytes, for the GB/s
// column: each op's compulsory memory traffic as docs/perf.md counts it (every input
// read once, every output written once, an accumulated output read and written;
// activations at the backend's width, fp32 gradients and state at 4; the small
// vectors - norm weights, biases, saved statistics - left out). A kernel that reads
// something twice moves more than that: GB/s against the device's bandwidth is then a
// lower bound of how busy the memory was.
#include "trainer/profile.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define PROF_MAX_ROWS 96         // the last one gathers what does not fit
#define PROF_START_OPS 8192      // records made ready by profile_begin (GPT-2 124M, 8
                                 // micro-batches: ~2200 ops per step)

typedef struct prof_row {
    char name[96];
    long calls;
    double flops, bytes, ms;
} prof_row;

typedef struct prof_rec {
    int row;
    void *a, *b;                 // stamps before and after the op
} prof_rec;

static struct {
    const anv_backend *in;       // the real backend
    anv_backend out;             // the wrapper handed to the model
    int on, failed;
    prof_row rows[PROF_MAX_ROWS];
    int n_rows;
    prof_rec *recs;
    size_t n_recs, cap_recs;
    void **pool;                 // stamps made ahead; [0, n_used) hold this step's
    size_t n_pool, n_used;
    void *first, *last;          // the step's first and last stamps
} P;

// Grow the records to `ops` and the stamp pool to 2 ops. Returns 0, or 1 (out of memory
// or device events: nothing is lost, what exists stays usable).
static int reserve(size_t ops) {
    if (ops > P.cap_recs) {
        prof_rec *g = realloc(P.recs, ops * sizeof *g);
        if (g == NULL) return 1;
        P.recs = g, P.cap_recs = ops;
    }
    if (2 * ops > P.n_pool) {
        void **g = realloc(P.pool, 2 * ops * sizeof *g);
        if (g == NULL) return 1;
        P.pool = g;
        while (P.n_pool < 2 * ops) {
            if ((P.pool[P.n_pool] = P.in->stamp_new()) == NULL) return 1;
            P.n_pool++;
        }
    }
    return 0;
}

// The next stamp of the pool, recorded now; NULL after marking the profile failed.
static void *stamp(void) {
    if (P.n_used == P.n_pool && reserve(P.n_pool)) {   // doubles the pool
        P.failed = 1;
        return NULL;
    }
    void *s = P.pool[P.n_used++];
    P.in->stamp_record(s);
    return s;
}

// Start timing one op of row `name` (`flops` and `bytes` moved); returns its record, or
// -1 when not timing.
static long prof_open(const char *name, double flops, double bytes) {
    if (!P.on || P.failed) return -1;
    int r = 0;
    while (r < P.n_rows && strcmp(P.rows[r].name, name) != 0) r++;
    if (r == P.n_rows) {
        if (r == PROF_MAX_ROWS - 1) name = "(other ops and shapes)";
        if (r < PROF_MAX_ROWS) snprintf(P.rows[P.n_rows++].name, sizeof P.rows[r].name, "%s", name);
        else r = PROF_MAX_ROWS - 1;
    }
    if (P.n_recs == P.cap_recs && reserve(2 * P.cap_recs)) {
        P.failed = 1;
        return -1;
    }
    prof_rec *rec = &P.recs[P.n_recs];
    rec->row = r;
    rec->a = stamp();
    rec->b = NULL;
    if (rec->a == NULL) return -1;
    if (P.first == NULL) P.first = rec->a;
    P.rows[r].calls++;
    P.rows[r].flops += flops;
    P.rows[r].bytes += bytes;
    return (long)P.n_recs++;
}

static void prof_close(long i) {
    if (i < 0) return;
    void *s = stamp();
    P.recs[i].b = s;
    if (s != NULL) P.last = s;
}

// Name of a shaped row (only built while timing).
static const char *shaped(char *buf, size_t n, const char *fmt, ...) {
    if (!P.on) return "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    return buf;
}

// A plain op: the row is the op's name; `bytes` moved, no FLOPs.
#define TIMED(name, bytes, call)                           \
    do {                                                   \
        const long rec_ = prof_open(name, 0.0, (double)(bytes)); \
        call;                                              \
        prof_close(rec_);                                  \
    } while (0)
#define AB ((double)P.in->act_bytes)   // bytes per activation element

static void w_zero(void *p, size_t bytes) { TIMED("zero", bytes, P.in->zero(p, bytes)); }
static void w_copy_from_host(void *dst, const void *src, size_t bytes) {
    TIMED("copy_from_host", bytes, P.in->copy_from_host(dst, src, bytes));
}
static void w_copy_to_host(void *dst, const void *src, size_t bytes) {
    TIMED("copy_to_host", bytes, P.in->copy_to_host(dst, src, bytes));
}
static void w_copy(void *dst, const void *src, size_t bytes) {
    TIMED("copy", 2.0 * bytes, P.in->copy(dst, src, bytes));
}
static void w_act_from_host_f32(anv_act *dst, const float *src, size_t n) {
    TIMED("act_from_host_f32", n * (4 + AB), P.in->act_from_host_f32(dst, src, n));
}
static void w_act_to_host_f32(float *dst, const anv_act *src, size_t n) {
    TIMED("act_to_host_f32", n * (4 + AB), P.in->act_to_host_f32(dst, src, n));
}
static void w_act_from_f32(anv_act *dst, const float *src, size_t n) {
    TIMED("act_from_f32", n * (4 + AB), P.in->act_from_f32(dst, src, n));
}
static void w_act_to_f32(float *dst, const anv_act *src, size_t n) {
    TIMED("act_to_f32", n * (4 + AB), P.in->act_to_f32(dst, src, n));
}

static void w_encoder_forward(anv_act *out, const int32_t *tokens, const anv_act *wte,
                              const anv_act *wpe, int B, int T, int C, int v0, int Vs) {
    // rows gathered from wte (and wpe), out written
    const double nc = (double)B * T * C;
    TIMED("encoder_forward", nc * AB * (wpe ? 3 : 2),
          P.in->encoder_forward(out, tokens, wte, wpe, B, T, C, v0, Vs));
}
static void w_encoder_backward(float *dwte, float *dwpe, const anv_act *dout,
                               const int32_t *tokens, int B, int T, int C, int v0, int Vs) {
    // dout read (again for dwpe); fp32 dwte rows += (at most B T of them), dwpe +=
    const double nc = (double)B * T * C;
    TIMED("encoder_backward", nc * AB * (dwpe ? 2 : 1) + nc * 8 + (dwpe ? (double)T * C * 8 : 0),
          P.in->encoder_backward(dwte, dwpe, dout, tokens, B, T, C, v0, Vs));
}

static void w_layernorm_forward(anv_act *out, float *mean, float *rstd, const anv_act *inp,
                                const anv_act *weight, const anv_act *bias, int N, int C,
                                float eps) {
    TIMED("layernorm_forward", 2.0 * N * C * AB,
          P.in->layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps));
}
static void w_layernorm_residual_forward(anv_act *res, anv_act *out, float *mean,
                                         float *rstd, const anv_act *a, const anv_act *b,
                                         const anv_act *weight, const anv_act *bias, int N,
                                         int C, float eps) {
    TIMED("layernorm_residual_forward", 4.0 * N * C * AB,
          P.in->layernorm_residual_forward(res, out, mean, rstd, a, b, weight, bias, N, C,
                                           eps));
}
static void w_layernorm_backward(anv_act *dinp, float *dweight, float *dbias,
                                 const anv_act *dout, const anv_act *inp,
                                 const anv_act *weight, const float *mean, const float *rstd,
                                 int N, int C) {
    TIMED("layernorm_backward", 4.0 * N * C * AB,   // dout, inp read; dinp +=
          P.in->layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C));
}

static void w_rmsnorm_forward(anv_act *out, float *rstd, const anv_act *inp,
                              const anv_act *weight, int N, int C, float eps) {
    TIMED("rmsnorm_forward", 2.0 * N * C * AB,
          P.in->rmsnorm_forward(out, rstd, inp, weight, N, C, eps));
}
static void w_rmsnorm_residual_forward(anv_act *res, anv_act *out, float *rstd,
                                       const anv_act *a, const anv_act *b,
                                       const anv_act *weight, int N, int C, float eps) {
    TIMED("rmsnorm_residual_forward", 4.0 * N * C * AB,
          P.in->rmsnorm_residual_forward(res, out, rstd, a, b, weight, N, C, eps));
}
static void w_rmsnorm_backward(anv_act *dinp, float *dweight, const anv_act *dout,
                               const anv_act *inp, const anv_act *weight, const float *rstd,
                               int N, int C) {
    TIMED("rmsnorm_backward", 4.0 * N * C * AB,
          P.in->rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C));
}

static void w_matmul_forward(anv_act *out, anv_act *pre_gelu, const anv_act *inp,
                             const anv_act *weight, const anv_act *bias, int N, int C,
                             int OC) {
    char nm[96];
    // inp, weight read; out (and pre_gelu) written
    const double bytes = ((double)N * C + (double)OC * C + (double)N * OC * (pre_gelu ? 2 : 1)) * AB;
    const long r = prof_open(shaped(nm, sizeof nm, "matmul_forward %dx%d -> %d%s%s", N, C,
                                    OC, bias ? " +bias" : "", pre_gelu ? " +gelu" : ""),
                             2.0 * N * C * OC, bytes);
    P.in->matmul_forward(out, pre_gelu, inp, weight, bias, N, C, OC);
    prof_close(r);
}
static void w_matmul_backward(anv_act *dinp, anv_grad_mode dinp_mode, float *dweight,
                              float *dbias, const anv_act *dout, const anv_act *inp,
                              const anv_act *weight, const anv_act *pre_gelu, int N, int C,
                              int OC) {
    char nm[96];
    const double products = (dinp != NULL) + (dweight != NULL);
    // dout read per product (and for dbias); dinp: weight read, dinp written (read too
    // when accumulated; pre_gelu read for dgelu); dweight: inp read, fp32 dweight +=
    double bytes = (double)N * OC * AB * (products + (dbias != NULL));
    if (dinp)
        bytes += ((double)OC * C + (double)N * C * (1 + (dinp_mode == ANV_GRAD_MODE_ADD) +
                                                    (pre_gelu != NULL))) * AB;
    if (dweight) bytes += (double)N * C * AB + (double)OC * C * 8;
    const long r = prof_open(
        shaped(nm, sizeof nm, "matmul_backward %dx%d <- %d%s%s%s%s", N, C, OC,
               dinp ? (dinp_mode == ANV_GRAD_MODE_SET ? " dinp=" : " dinp+=") : "",
               pre_gelu ? " (dgelu)" : "", dweight ? " dweight" : "", dbias ? " dbias" : ""),
        products * 2.0 * N * C * OC, bytes);
    P.in->matmul_backward(dinp, dinp_mode, dweight, dbias, dout, inp, weight, pre_gelu, N, C,
                          OC);
    prof_close(r);
}

// 2 products of HS per score of the causal half, per query head
static double attention_flops(int B, int T, int NH, int HS) {
    return 2.0 * 2.0 * B * NH * ((double)T * (T + 1) / 2.0) * HS;
}
// Open attention's row: op at this shape, `passes` products of the scores (forward 2,
// backward 5), `acts` activation-sized arrays of the query width and as many of the
// kv width moved (forward: qkv read, out written; backward: dout, out, qkv read, dqkv
// written).
static long attention_open(const char *op, int B, int T, int NH, int KVH, int HS, int rope,
                           double passes, double acts) {
    char nm[96];
    const double nq = (double)B * T * NH * HS, nk = (double)B * T * KVH * HS;
    return prof_open(shaped(nm, sizeof nm, "%s B=%d T=%d heads %d/%d x %d%s", op, B, T, NH,
                            KVH, HS, rope ? " rope" : ""),
                     passes / 2.0 * attention_flops(B, T, NH, HS), acts * (nq + nk) * AB);
}
static void w_attention_forward(anv_act *out, float *state, const anv_act *qkv,
                                const float *rope_cos, const float *rope_sin, int B, int T,
                                int NH, int KVH, int HS) {
    const long r = attention_open("attention_forward", B, T, NH, KVH, HS, rope_cos != NULL,
                                  2.0, 2.0);
    P.in->attention_forward(out, state, qkv, rope_cos, rope_sin, B, T, NH, KVH, HS);
    prof_close(r);
}
static void w_attention_backward(anv_act *dqkv, float *scratch, const anv_act *dout,
                                 const anv_act *out, const float *state, const anv_act *qkv,
                                 const float *rope_cos, const float *rope_sin, int B, int T,
                                 int NH, int KVH, int HS) {
    const long r = attention_open("attention_backward", B, T, NH, KVH, HS, rope_cos != NULL,
                                  5.0, 4.0);
    P.in->attention_backward(dqkv, scratch, dout, out, state, qkv, rope_cos, rope_sin, B, T,
                             NH, KVH, HS);
    prof_close(r);
}

static void w_gelu_forward(anv_act *out, const anv_act *inp, size_t n) {
    TIMED("gelu_forward", 2.0 * n * AB, P.in->gelu_forward(out, inp, n));
}
static void w_gelu_backward(anv_act *dinp, const anv_act *inp, const anv_act *dout, size_t n) {
    TIMED("gelu_backward", 4.0 * n * AB, P.in->gelu_backward(dinp, inp, dout, n));
}
static void w_swiglu_forward(anv_act *out, const anv_act *gu, int N, int F) {
    TIMED("swiglu_forward", 3.0 * N * F * AB, P.in->swiglu_forward(out, gu, N, F));
}
static void w_swiglu_backward(anv_act *dgu, const anv_act *dout, const anv_act *gu, int N,
                              int F) {
    TIMED("swiglu_backward", 5.0 * N * F * AB, P.in->swiglu_backward(dgu, dout, gu, N, F));
}
static void w_residual_forward(anv_act *out, const anv_act *a, const anv_act *b, size_t n) {
    TIMED("residual_forward", 3.0 * n * AB, P.in->residual_forward(out, a, b, n));
}
static void w_residual_backward(anv_act *da, anv_act *db, const anv_act *dout, size_t n) {
    TIMED("residual_backward", (1.0 + 2 * (da != NULL) + 2 * (db != NULL)) * n * AB,
          P.in->residual_backward(da, db, dout, n));
}

static void w_crossentropy_stats(float *stats, const anv_act *logits, const int32_t *targets,
                                 int N, int v0, int Vv, int Vs) {
    TIMED("crossentropy_stats", (double)N * Vs * AB,
          P.in->crossentropy_stats(stats, logits, targets, N, v0, Vv, Vs));
}
static void w_crossentropy_combine(float *losses, float *lse, const float *stats,
                                   const int32_t *targets, int N, int Pn) {
    TIMED("crossentropy_combine", (double)N * (12.0 * Pn + 12),
          P.in->crossentropy_combine(losses, lse, stats, targets, N, Pn));
}
static void w_crossentropy_backward(anv_act *dlogits, const anv_act *logits, const float *lse,
                                    const int32_t *targets, int N, int v0, int Vv, int Vs,
                                    float dloss) {
    TIMED("crossentropy_backward", 2.0 * N * Vs * AB,
          P.in->crossentropy_backward(dlogits, logits, lse, targets, N, v0, Vv, Vs, dloss));
}

static void w_crossentropy_fused(anv_act *dlogits, float *losses, const anv_act *logits,
                                 const int32_t *targets, int N, int Vv, int Vs, float dloss) {
    TIMED("crossentropy_fused", 2.0 * N * Vs * AB,
          P.in->crossentropy_fused(dlogits, losses, logits, targets, N, Vv, Vs, dloss));
}

static double seg_elems(const anv_seg *segs, int nseg) {
    double n = 0.0;
    for (int i = 0; i < nseg; i++) n += (double)segs[i].n;
    return n;
}
static double w_sum_squares(const float *x, const anv_seg *segs, int nseg) {
    double s = 0.0;
    TIMED("sum_squares", 4.0 * seg_elems(segs, nseg), s = P.in->sum_squares(x, segs, nseg));
    return s;
}
static void w_scale(float *x, float s, size_t n) { TIMED("scale", 8.0 * n, P.in->scale(x, s, n)); }
static void w_add_f32(float *dst, const float *src, size_t n) {
    TIMED("add_f32", 12.0 * n, P.in->add_f32(dst, src, n));
}
static void w_adamw_update(anv_act *param, float *master, const float *grad, float *m,
                           float *v, const anv_seg *segs, int nseg, const anv_adamw_args *a) {
    // grad read, m and v +=, the weight += (master fp32 and param written, or param fp32)
    const double per = 4 + 16 + (master ? 8 + AB : 8);
    TIMED("adamw_update", per * seg_elems(segs, nseg),
          P.in->adamw_update(param, master, grad, m, v, segs, nseg, a));
}

const anv_backend *profile_wrap(const anv_backend *be) {
    if (!be->stamp_new || !be->stamp_record || !be->stamp_ms) return be;
    P.in = be;
    anv_backend *w = &P.out;
    *w = *be;   // sizes, memory management, stamps: the real backend's
    w->zero = w_zero;
    w->copy_from_host = w_copy_from_host;
    w->copy_to_host = w_copy_to_host;
    w->copy = w_copy;
    w->act_from_host_f32 = w_act_from_host_f32;
    w->act_to_host_f32 = w_act_to_host_f32;
    w->act_from_f32 = w_act_from_f32;
    w->act_to_f32 = w_act_to_f32;
    w->encoder_forward = w_encoder_forward;
    w->encoder_backward = w_encoder_backward;
    w->layernorm_forward = w_layernorm_forward;
    w->layernorm_residual_forward = w_layernorm_residual_forward;
    w->layernorm_backward = w_layernorm_backward;
    w->rmsnorm_forward = w_rmsnorm_forward;
    w->rmsnorm_residual_forward = w_rmsnorm_residual_forward;
    w->rmsnorm_backward = w_rmsnorm_backward;
    w->matmul_forward = w_matmul_forward;
    w->matmul_backward = w_matmul_backward;
    w->attention_forward = w_attention_forward;
    w->attention_backward = w_attention_backward;
    w->gelu_forward = w_gelu_forward;
    w->gelu_backward = w_gelu_backward;
    w->swiglu_forward = w_swiglu_forward;
    w->swiglu_backward = w_swiglu_backward;
    w->residual_forward = w_residual_forward;
    w->residual_backward = w_residual_backward;
    w->crossentropy_stats = w_crossentropy_stats;
    w->crossentropy_combine = w_crossentropy_combine;
    w->crossentropy_backward = w_crossentropy_backward;
    w->crossentropy_fused = w_crossentropy_fused;
    w->sum_squares = w_sum_squares;
    w->scale = w_scale;
    w->add_f32 = w_add_f32;
    w->adamw_update = w_adamw_update;
    return w;
}

void profile_begin(void) {
    if (P.in == NULL) return;
    P.failed = reserve(PROF_START_OPS);
    P.on = 1;
}

static int by_ms_desc(const void *a, const void *b) {
    const double x = ((const prof_row *)a)->ms, y = ((const prof_row *)b)->ms;
    return (x < y) - (x > y);
}

static void free_stamps(void) {
    for (size_t i = 0; i < P.n_pool; i++) P.in->stamp_free(P.pool[i]);
    free(P.pool);
    free(P.recs);
    P.pool = NULL;
    P.recs = NULL;
    P.n_pool = P.n_used = P.n_recs = P.cap_recs = 0;
    P.first = P.last = NULL;
    P.n_rows = 0;
    memset(P.rows, 0, sizeof P.rows);
}

// Write the table (or why there is none) to f.
static void report(FILE *f, const char *title, double sum, double span) {
    if (P.failed || P.first == NULL || P.last == NULL) {
        fprintf(f, "%s: not timed (%s)\n", title,
                P.failed ? "out of memory or device events" : "no op ran");
        return;
    }
    fprintf(f, "%s: %zu ops, %.3f ms in ops of a %.3f ms span (first op's start to last "
               "op's end); %.3f ms (%.1f%%) between ops\n",
            title, P.n_recs, sum, span, span - sum,
            span > 0.0 ? 100.0 * (span - sum) / span : 0.0);
    fprintf(f, "%10s %6s %7s %8s %8s  %s\n", "ms", "%span", "calls", "TFLOP/s", "GB/s", "op");
    for (int r = 0; r < P.n_rows; r++) {
        const prof_row *w = &P.rows[r];
        char tf[16] = "-", bw[16] = "-";
        if (w->flops > 0.0 && w->ms > 0.0)
            snprintf(tf, sizeof tf, "%.1f", w->flops / (w->ms * 1e-3) / 1e12);
        if (w->bytes > 0.0 && w->ms > 0.0)
            snprintf(bw, sizeof bw, "%.0f", w->bytes / (w->ms * 1e-3) / 1e9);
        fprintf(f, "%10.3f %6.1f %7ld %8s %8s  %s\n", w->ms,
                span > 0.0 ? 100.0 * w->ms / span : 0.0, w->calls, tf, bw, w->name);
    }
}

int profile_end(FILE *f, FILE *f2, const char *title) {
    if (P.in == NULL) {
        fprintf(f, "%s: not timed (this backend has no timer)\n", title);
        if (f2) fprintf(f2, "%s: not timed (this backend has no timer)\n", title);
        return 1;
    }
    P.on = 0;
    const int ok = !P.failed && P.first != NULL && P.last != NULL;
    double sum = 0.0, span = 0.0;
    if (ok) {
        for (size_t i = 0; i < P.n_recs; i++) {
            const double ms = P.in->stamp_ms(P.recs[i].a, P.recs[i].b);
            P.rows[P.recs[i].row].ms += ms;
            sum += ms;
        }
        span = P.in->stamp_ms(P.first, P.last);
        qsort(P.rows, (size_t)P.n_rows, sizeof P.rows[0], by_ms_desc);
    }
    report(f, title, sum, span);
    if (f2) report(f2, title, sum, span);
    free_stamps();
    P.failed = 0;
    return ok ? 0 : 1;
}
