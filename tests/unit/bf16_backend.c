// tests/unit/bf16_backend.c: a bf16 backend emulated on the CPU, for tests only.
//
// Why: the cuda backend is the only one with act_bytes 2, fp32 master weights,
// vocab_multiple 64 and host_memory 0, so without a GPU the trainer's code for those
// cases (byte offsets in act_bytes, master weights in the optimizer, padded vocabulary
// rows, copies through copy_to_host) would never run. This backend takes all of those
// paths on the host.
//
// How: every anv_act is stored as real bf16 (uint16_t bits). Each op widens its anv_act
// arguments into fp32 scratch buffers (malloc'd per call: a test, simplicity wins),
// calls the same op of the fp32 cpu backend (anv_backend_cpu()) on the scratch, and
// rounds the anv_act outputs back to bf16. Outputs are widened in as well, whether the
// op accumulates into them (backward dinp += ...) or overwrites them: an accumulating op
// then adds to the stored value, and an element an overwriting op leaves alone keeps its
// value, as on a GPU. Every input is widened before anything is written back, so the
// aliasing ops.h allows (residual out == a, the fused norms' res == a or b, dlogits ==
// logits, RoPE in place) works. Arguments typed float are fp32 and pass straight
// through, as do the multi-tensor optimizer helpers (grads and moments are fp32).
//
// Element counts come from each op's shape arguments as ops.h documents them. The
// encoder's wpe is (maxT, C) but maxT is not passed: only rows [0, T) are read, so only
// T*C elements are widened.
//
// Numerics: rounding fp32 -> bf16 is round-to-nearest-even (8 significant bits,
// relative error <= 2^-9); NaN stays NaN (a quiet one), overflow rounds to inf.
#include "tests/unit/bf16_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BF16_ALIGN 64   // bytes: same alignment the cpu backend gives (a cache line)

// ----------------------------------------------------------------------------
// conversions

uint16_t bf16_emulated_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)              // NaN: keep sign, force quiet bit
        return (uint16_t)((u >> 16) | 0x0040u);
    // round to nearest even: add 0x7FFF plus the lowest kept bit, then truncate
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float bf16_emulated_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static void round_into(anv_act *dst, const float *src, size_t n) {
    uint16_t *d = (uint16_t *)dst;                     // (n)
    for (size_t i = 0; i < n; i++) d[i] = bf16_emulated_from_f32(src[i]);
}

static void widen_into(float *dst, const anv_act *src, size_t n) {
    const uint16_t *s = (const uint16_t *)src;        // (n)
    for (size_t i = 0; i < n; i++) dst[i] = bf16_emulated_to_f32(s[i]);
}

// fp32 copy (n) of bf16 src, malloc'd; NULL for a NULL src. Aborts when out of memory.
static float *widen(const anv_act *src, size_t n) {
    if (src == NULL) return NULL;
    float *f = malloc((n > 0 ? n : 1) * sizeof(float));
    if (f == NULL) {
        fprintf(stderr, "bf16_backend: out of memory (%zu floats of scratch)\n", n);
        abort();
    }
    widen_into(f, src, n);
    return f;
}

// Round the scratch s (n) into dst (when both exist) and free it.
static void narrow(anv_act *dst, float *s, size_t n) {
    if (dst != NULL && s != NULL) round_into(dst, s, n);
    free(s);
}

static const anv_backend *ref(void) { return anv_backend_cpu(); }

// ----------------------------------------------------------------------------
// memory (host memory throughout; host_memory is 0 only so the trainer takes its
// device paths)

static void *emu_alloc(size_t bytes) {
    size_t rounded = (bytes + BF16_ALIGN - 1) / BF16_ALIGN * BF16_ALIGN;
    if (rounded < bytes) return NULL;                 // size_t overflow
    if (rounded == 0) rounded = BF16_ALIGN;
    void *p = aligned_alloc(BF16_ALIGN, rounded);
    if (p != NULL) memset(p, 0, rounded);
    return p;
}

static void emu_free(void *p) { free(p); }
static void emu_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void emu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void emu_synchronize(void) {}

static void emu_act_from_f32(anv_act *dst, const float *src, size_t n) {
    round_into(dst, src, n);
}
static void emu_act_to_f32(float *dst, const anv_act *src, size_t n) {
    widen_into(dst, src, n);
}

// ----------------------------------------------------------------------------
// embedding

static void emu_encoder_forward(anv_act *out, const int32_t *tokens, const anv_act *wte,
                                const anv_act *wpe, int B, int T, int C, int v0, int Vs) {
    const size_t NC = (size_t)B * T * C;
    float *fwte = widen(wte, (size_t)Vs * C);        // (Vs,C)
    float *fwpe = widen(wpe, (size_t)T * C);         // rows [0,T) of (maxT,C)
    float *fout = widen(out, NC);                    // (B,T,C)
    ref()->encoder_forward(fout, tokens, fwte, fwpe, B, T, C, v0, Vs);
    narrow(out, fout, NC);
    free(fwte);
    free(fwpe);
}

static void emu_encoder_backward(float *dwte, float *dwpe, const anv_act *dout,
                                 const int32_t *tokens, int B, int T, int C, int v0,
                                 int Vs) {
    float *fdout = widen(dout, (size_t)B * T * C);   // (B,T,C)
    ref()->encoder_backward(dwte, dwpe, fdout, tokens, B, T, C, v0, Vs);
    free(fdout);
}

// ----------------------------------------------------------------------------
// LayerNorm, RMSNorm

static void emu_layernorm_forward(anv_act *out, float *mean, float *rstd, const anv_act *inp,
                                  const anv_act *weight, const anv_act *bias, int N, int C,
                                  float eps) {
    const size_t NC = (size_t)N * C;
    float *finp = widen(inp, NC), *fw = widen(weight, (size_t)C), *fb = widen(bias, (size_t)C);
    float *fout = widen(out, NC);
    ref()->layernorm_forward(fout, mean, rstd, finp, fw, fb, N, C, eps);
    narrow(out, fout, NC);
    free(finp);
    free(fw);
    free(fb);
}

static void emu_layernorm_residual_forward(anv_act *res, anv_act *out, float *mean,
                                           float *rstd, const anv_act *a, const anv_act *b,
                                           const anv_act *weight, const anv_act *bias, int N,
                                           int C, float eps) {
    const size_t NC = (size_t)N * C;
    float *fa = widen(a, NC), *fb = widen(b, NC);    // before res (may alias a or b) changes
    float *fw = widen(weight, (size_t)C), *fbias = widen(bias, (size_t)C);
    float *fres = widen(res, NC), *fout = widen(out, NC);
    ref()->layernorm_residual_forward(fres, fout, mean, rstd, fa, fb, fw, fbias, N, C, eps);
    narrow(res, fres, NC);
    narrow(out, fout, NC);
    free(fa);
    free(fb);
    free(fw);
    free(fbias);
}

static void emu_layernorm_backward(anv_act *dinp, float *dweight, float *dbias,
                                   const anv_act *dout, const anv_act *inp,
                                   const anv_act *weight, const float *mean, const float *rstd,
                                   int N, int C) {
    const size_t NC = (size_t)N * C;
    float *fdinp = widen(dinp, NC);                  // accumulated into
    float *fdout = widen(dout, NC), *finp = widen(inp, NC), *fw = widen(weight, (size_t)C);
    ref()->layernorm_backward(fdinp, dweight, dbias, fdout, finp, fw, mean, rstd, N, C);
    narrow(dinp, fdinp, NC);
    free(fdout);
    free(finp);
    free(fw);
}

static void emu_rmsnorm_forward(anv_act *out, float *rstd, const anv_act *inp,
                                const anv_act *weight, int N, int C, float eps) {
    const size_t NC = (size_t)N * C;
    float *finp = widen(inp, NC), *fw = widen(weight, (size_t)C), *fout = widen(out, NC);
    ref()->rmsnorm_forward(fout, rstd, finp, fw, N, C, eps);
    narrow(out, fout, NC);
    free(finp);
    free(fw);
}

static void emu_rmsnorm_residual_forward(anv_act *res, anv_act *out, float *rstd,
                                         const anv_act *a, const anv_act *b,
                                         const anv_act *weight, int N, int C, float eps) {
    const size_t NC = (size_t)N * C;
    float *fa = widen(a, NC), *fb = widen(b, NC), *fw = widen(weight, (size_t)C);
    float *fres = widen(res, NC), *fout = widen(out, NC);
    ref()->rmsnorm_residual_forward(fres, fout, rstd, fa, fb, fw, N, C, eps);
    narrow(res, fres, NC);
    narrow(out, fout, NC);
    free(fa);
    free(fb);
    free(fw);
}

static void emu_rmsnorm_backward(anv_act *dinp, float *dweight, const anv_act *dout,
                                 const anv_act *inp, const anv_act *weight, const float *rstd,
                                 int N, int C) {
    const size_t NC = (size_t)N * C;
    float *fdinp = widen(dinp, NC);                  // accumulated into
    float *fdout = widen(dout, NC), *finp = widen(inp, NC), *fw = widen(weight, (size_t)C);
    ref()->rmsnorm_backward(fdinp, dweight, fdout, finp, fw, rstd, N, C);
    narrow(dinp, fdinp, NC);
    free(fdout);
    free(finp);
    free(fw);
}

// ----------------------------------------------------------------------------
// matmul

static void emu_matmul_forward(anv_act *out, anv_act *pre_gelu, const anv_act *inp,
                               const anv_act *weight, const anv_act *bias, int N, int C,
                               int OC) {
    const size_t NO = (size_t)N * OC;
    float *finp = widen(inp, (size_t)N * C);         // (N,C)
    float *fw = widen(weight, (size_t)OC * C);       // (OC,C)
    float *fb = widen(bias, (size_t)OC);             // (OC)
    float *fout = widen(out, NO), *fpre = widen(pre_gelu, NO);   // (N,OC) each
    ref()->matmul_forward(fout, fpre, finp, fw, fb, N, C, OC);
    narrow(out, fout, NO);
    narrow(pre_gelu, fpre, NO);
    free(finp);
    free(fw);
    free(fb);
}

static void emu_matmul_backward(anv_act *dinp, anv_grad_mode dinp_mode, float *dweight,
                                float *dbias, const anv_act *dout, const anv_act *inp,
                                const anv_act *weight, const anv_act *pre_gelu, int N, int C,
                                int OC) {
    const size_t NC = (size_t)N * C;
    float *fdinp = widen(dinp, NC);                  // (N,C) accumulated or overwritten
    float *fdout = widen(dout, (size_t)N * OC);      // (N,OC)
    float *finp = widen(inp, NC), *fpre = widen(pre_gelu, NC);   // (N,C)
    float *fw = widen(weight, (size_t)OC * C);       // (OC,C)
    ref()->matmul_backward(fdinp, dinp_mode, dweight, dbias, fdout, finp, fw, fpre, N, C, OC);
    narrow(dinp, fdinp, NC);
    free(fdout);
    free(finp);
    free(fpre);
    free(fw);
}

// ----------------------------------------------------------------------------
// attention

static size_t emu_attention_state_floats(int B, int T, int NH, int KVH, int HS, int rope) {
    return ref()->attention_state_floats(B, T, NH, KVH, HS, rope);
}

static size_t emu_attention_scratch_floats(int B, int T, int NH, int KVH, int HS, int rope) {
    return ref()->attention_scratch_floats(B, T, NH, KVH, HS, rope);
}

static void emu_attention_forward(anv_act *out, float *state, const anv_act *qkv,
                                  const float *rope_cos, const float *rope_sin, int B, int T,
                                  int NH, int KVH, int HS) {
    const size_t nq = (size_t)B * T * NH * HS, nqkv = (size_t)B * T * (NH + 2 * KVH) * HS;
    float *fqkv = widen(qkv, nqkv);
    float *fout = widen(out, nq);                    // (B,T,NH,HS)
    ref()->attention_forward(fout, state, fqkv, rope_cos, rope_sin, B, T, NH, KVH, HS);
    narrow(out, fout, nq);
    free(fqkv);
}

static void emu_attention_backward(anv_act *dqkv, float *scratch, const anv_act *dout,
                                   const anv_act *out, const float *state, const anv_act *qkv,
                                   const float *rope_cos, const float *rope_sin, int B, int T,
                                   int NH, int KVH, int HS) {
    const size_t nq = (size_t)B * T * NH * HS, nqkv = (size_t)B * T * (NH + 2 * KVH) * HS;
    float *fdqkv = widen(dqkv, nqkv);                // overwritten
    float *fdout = widen(dout, nq), *fout = widen(out, nq);
    float *fqkv = widen(qkv, nqkv);
    ref()->attention_backward(fdqkv, scratch, fdout, fout, state, fqkv, rope_cos, rope_sin, B,
                              T, NH, KVH, HS);
    narrow(dqkv, fdqkv, nqkv);
    free(fdout);
    free(fout);
    free(fqkv);
}

// ----------------------------------------------------------------------------
// pointwise

static void emu_gelu_forward(anv_act *out, const anv_act *inp, size_t n) {
    float *finp = widen(inp, n), *fout = widen(out, n);
    ref()->gelu_forward(fout, finp, n);
    narrow(out, fout, n);
    free(finp);
}

static void emu_gelu_backward(anv_act *dinp, const anv_act *inp, const anv_act *dout,
                              size_t n) {
    float *fdinp = widen(dinp, n), *finp = widen(inp, n), *fdout = widen(dout, n);
    ref()->gelu_backward(fdinp, finp, fdout, n);
    narrow(dinp, fdinp, n);
    free(finp);
    free(fdout);
}

static void emu_swiglu_forward(anv_act *out, const anv_act *gu, int N, int F) {
    const size_t n = (size_t)N * F;
    float *fgu = widen(gu, 2 * n), *fout = widen(out, n);
    ref()->swiglu_forward(fout, fgu, N, F);
    narrow(out, fout, n);
    free(fgu);
}

static void emu_swiglu_backward(anv_act *dgu, const anv_act *dout, const anv_act *gu, int N,
                                int F) {
    const size_t n = (size_t)N * F;
    float *fdgu = widen(dgu, 2 * n);                  // overwritten
    float *fdout = widen(dout, n), *fgu = widen(gu, 2 * n);
    ref()->swiglu_backward(fdgu, fdout, fgu, N, F);
    narrow(dgu, fdgu, 2 * n);
    free(fdout);
    free(fgu);
}

static void emu_residual_forward(anv_act *out, const anv_act *a, const anv_act *b, size_t n) {
    float *fa = widen(a, n), *fb = widen(b, n), *fout = widen(out, n);   // out may alias a
    ref()->residual_forward(fout, fa, fb, n);
    narrow(out, fout, n);
    free(fa);
    free(fb);
}

static void emu_residual_backward(anv_act *da, anv_act *db, const anv_act *dout, size_t n) {
    float *fda = widen(da, n), *fdb = widen(db, n), *fdout = widen(dout, n);
    ref()->residual_backward(fda, fdb, fdout, n);
    narrow(da, fda, n);
    narrow(db, fdb, n);
    free(fdout);
}

// ----------------------------------------------------------------------------
// cross-entropy

static void emu_crossentropy_stats(float *stats, const anv_act *logits, const int32_t *targets,
                                   int N, int v0, int Vv, int Vs) {
    float *fl = widen(logits, (size_t)N * Vs);       // (N,Vs)
    ref()->crossentropy_stats(stats, fl, targets, N, v0, Vv, Vs);
    free(fl);
}

static void emu_crossentropy_combine(float *losses, float *lse, const float *stats,
                                     const int32_t *targets, int N, int P) {
    ref()->crossentropy_combine(losses, lse, stats, targets, N, P);
}

static void emu_crossentropy_backward(anv_act *dlogits, const anv_act *logits, const float *lse,
                                      const int32_t *targets, int N, int v0, int Vv, int Vs,
                                      float dloss) {
    const size_t n = (size_t)N * Vs;
    float *fl = widen(logits, n), *fd = widen(dlogits, n);   // may alias: both read first
    ref()->crossentropy_backward(fd, fl, lse, targets, N, v0, Vv, Vs, dloss);
    narrow(dlogits, fd, n);
    free(fl);
}

static void emu_crossentropy_fused(anv_act *dlogits, float *losses, const anv_act *logits,
                                   const int32_t *targets, int N, int Vv, int Vs, float dloss) {
    const size_t n = (size_t)N * Vs;
    float *fl = widen(logits, n), *fd = widen(dlogits, n);   // may alias: both read first
    ref()->crossentropy_fused(fd, losses, fl, targets, N, Vv, Vs, dloss);
    narrow(dlogits, fd, n);
    free(fl);
}

// ----------------------------------------------------------------------------
// optimizer: grads, moments and master weights are fp32; only param is bf16

static double emu_sum_squares(const float *x, const anv_seg *segs, int nseg) {
    return ref()->sum_squares(x, segs, nseg);
}

static void emu_scale(float *x, float s, size_t n) { ref()->scale(x, s, n); }

static void emu_add_f32(float *dst, const float *src, size_t n) { ref()->add_f32(dst, src, n); }

// The update runs on the fp32 master weights (as the cpu backend's param, no master),
// then each segment of master is rounded into the bf16 working weights.
static void emu_adamw_update(anv_act *param, float *master, const float *grad, float *m,
                             float *v, const anv_seg *segs, int nseg,
                             const anv_adamw_args *a) {
    if (master == NULL) {
        fprintf(stderr, "bf16_backend: adamw_update without master weights (bf16 params "
                "need them)\n");
        abort();
    }
    ref()->adamw_update(master, NULL, grad, m, v, segs, nseg, a);
    for (int s = 0; s < nseg; s++)
        round_into((uint16_t *)param + segs[s].off, master + segs[s].off, segs[s].n);
}

// ----------------------------------------------------------------------------
// the backend struct

static const anv_backend bf16_backend = {
    .name = "bf16-emulated",
    .peak_flops = NULL,
    .host_memory = 0,               // host memory really, but take the device paths
    .act_dtype = ANV_DTYPE_BF16,
    .act_bytes = sizeof(uint16_t),
    .vocab_multiple = 64,           // what the cuda backend asks for

    .alloc = emu_alloc,
    .free = emu_free,
    .zero = emu_zero,
    .copy_from_host = emu_copy,
    .copy_to_host = emu_copy,
    .copy = emu_copy,
    .synchronize = emu_synchronize,
    .mem_info = NULL,
    .set_deterministic = NULL,
    .act_from_host_f32 = emu_act_from_f32,
    .act_to_host_f32 = emu_act_to_f32,
    .act_from_f32 = emu_act_from_f32,
    .act_to_f32 = emu_act_to_f32,

    .encoder_forward = emu_encoder_forward,
    .encoder_backward = emu_encoder_backward,

    .layernorm_forward = emu_layernorm_forward,
    .layernorm_residual_forward = emu_layernorm_residual_forward,
    .layernorm_backward = emu_layernorm_backward,

    .rmsnorm_forward = emu_rmsnorm_forward,
    .rmsnorm_residual_forward = emu_rmsnorm_residual_forward,
    .rmsnorm_backward = emu_rmsnorm_backward,

    .matmul_forward = emu_matmul_forward,
    .matmul_backward = emu_matmul_backward,

    .attention_state_floats = emu_attention_state_floats,
    .attention_forward = emu_attention_forward,
    .attention_scratch_floats = emu_attention_scratch_floats,
    .attention_backward = emu_attention_backward,

    .gelu_forward = emu_gelu_forward,
    .gelu_backward = emu_gelu_backward,
    .swiglu_forward = emu_swiglu_forward,
    .swiglu_backward = emu_swiglu_backward,
    .residual_forward = emu_residual_forward,
    .residual_backward = emu_residual_backward,

    .crossentropy_stats = emu_crossentropy_stats,
    .crossentropy_combine = emu_crossentropy_combine,
    .crossentropy_backward = emu_crossentropy_backward,
    .crossentropy_fused = emu_crossentropy_fused,

    .sum_squares = emu_sum_squares,
    .scale = emu_scale,
    .add_f32 = emu_add_f32,
    .adamw_update = emu_adamw_update,
};

const anv_backend *anv_backend_bf16_emulated(void) {
    return &bf16_backend;
}
