// tests/bench/att_bench.c: anvil's attention kernels (kernels/cuda/attention.cu) timed at
// the benchmark's attention shapes, forward and backward, with the forward's 128-row
// query blocks (the default for head sizes 32 and 64) and with 64-row blocks
// (ANVIL_CUDA_ATT_FWD_ROWS=64), in the FLOP convention of sdpa_bench.py and of the per-op
// profile (trainer/profile.c: per query head, the causal half's T (T + 1) / 2 scores, 2
// products of HS forward and 5 backward). Printed beside sdpa_bench.py's PyTorch
// figures (tests/gpu/device_check.sh runs both), it says how far the mma.sync kernels
// are from FlashAttention-2 / cuDNN, and what the 128-row forward gave. A benchmark,
// not a test (att_bench_emulated only checks that it runs); it does check one thing,
// at these full sizes the op test does not reach: that the two forwards give the same
// bits (exit 1 if not).
//
// usage: att_bench [--iters N] [--warmup N] [SHAPE ...]
//   SHAPE: gpt2 (64 1024 12 12 64, no RoPE), llama (8 2048 32 8 64, RoPE), or
//   NAME=B,T,NH,KVH,HS[,rope]; default: gpt2 llama (the micro-batches gpu_bench.sh picks
//   on an H200). Exit 77 where the CUDA runtime sees no GPU, 2 on bad arguments.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"

typedef struct shape {
    char name[32];
    int B, T, NH, KVH, HS, rope;
} shape;

static int shape_parse(const char *s, shape *sh) {
    if (strcmp(s, "gpt2") == 0) {
        *sh = (shape){"gpt2", 64, 1024, 12, 12, 64, 0};
        return 0;
    }
    if (strcmp(s, "llama") == 0) {
        *sh = (shape){"llama", 8, 2048, 32, 8, 64, 1};
        return 0;
    }
    const char *eq = strchr(s, '=');
    if (eq == NULL || eq == s || (size_t)(eq - s) >= sizeof sh->name) return -1;
    memset(sh, 0, sizeof *sh);
    memcpy(sh->name, s, (size_t)(eq - s));
    int n = sscanf(eq + 1, "%d,%d,%d,%d,%d,%d", &sh->B, &sh->T, &sh->NH, &sh->KVH, &sh->HS,
                   &sh->rope);
    if (n < 5 || sh->B < 1 || sh->T < 1 || sh->NH < 1 || sh->KVH < 1 || sh->HS < 2 ||
        sh->HS % 2 != 0 || sh->NH % sh->KVH != 0)
        return -1;
    return 0;
}

static double flops(const shape *s, int products) {
    return products * 2.0 * s->B * s->NH * ((double)s->T * (s->T + 1) / 2.0) * s->HS;
}

// Backend buffer of n floats converted from uniform values in [-lim, lim] (act: the
// backend's activation type, else fp32).
static void *filled(const anv_backend *be, size_t n, float lim, int act, unsigned *seed) {
    float *h = malloc(n * sizeof(float));
    void *d = be->alloc(n * (act ? be->act_bytes : sizeof(float)));
    if (h == NULL || d == NULL) {
        fprintf(stderr, "att_bench: out of memory (%zu elements)\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        h[i] = lim * ((float)(*seed >> 8) / 8388608.0f - 1.0f);
    }
    if (act) be->act_from_host_f32(d, h, n);
    else be->copy_from_host(d, h, n * sizeof(float));
    free(h);
    return d;
}

// The forward's outputs on the host: out (nq) then state (ns), fp32.
static float *fwd_result(const anv_backend *be, const anv_act *out, size_t nq,
                         const float *state, size_t ns) {
    float *h = malloc((nq + ns) * sizeof(float));
    if (h == NULL) {
        fprintf(stderr, "att_bench: out of host memory\n");
        exit(1);
    }
    be->act_to_host_f32(h, out, nq);
    be->copy_to_host(h + nq, state, ns * sizeof(float));
    return h;
}

// Returns 0 when the forward with 128- and with 64-row query blocks gave the same bits
// (out and state) at this shape, and the backward ran; 1 otherwise.
static int bench(const anv_backend *be, const shape *s, int iters, int warmup) {
    const size_t rows = (size_t)s->B * s->T, ld = (size_t)(s->NH + 2 * s->KVH) * s->HS;
    const size_t nq = rows * s->NH * s->HS;
    unsigned seed = 12345;
    // q, k ~U(-2, 2): peaked scores as in a trained model; v, dout ~U(-1, 1)
    anv_act *qkv = filled(be, rows * ld, 2.0f, 1, &seed);
    anv_act *dout = filled(be, nq, 1.0f, 1, &seed);
    anv_act *out = be->alloc(nq * be->act_bytes), *dqkv = be->alloc(rows * ld * be->act_bytes);
    const size_t ns = be->attention_state_floats(s->B, s->T, s->NH, s->KVH, s->HS, s->rope);
    float *state = be->alloc(ns * sizeof(float));
    float *scratch = be->alloc(be->attention_scratch_floats(s->B, s->T, s->NH, s->KVH,
                                                            s->HS, s->rope) * sizeof(float));
    float *rc = NULL, *rs = NULL;
    if (s->rope) {   // any angles: the kernels' work does not depend on them
        rc = filled(be, (size_t)s->T * (s->HS / 2), 1.0f, 0, &seed);
        rs = filled(be, (size_t)s->T * (s->HS / 2), 1.0f, 0, &seed);
    }
    void *a = be->stamp_new(), *b = be->stamp_new();
    if (!out || !dqkv || !state || !scratch || !a || !b) {
        fprintf(stderr, "att_bench: out of memory for %s\n", s->name);
        exit(1);
    }
    float *res[2] = {NULL, NULL};
    for (int rows64 = 0; rows64 < 2; rows64++) {
        if (rows64) setenv("ANVIL_CUDA_ATT_FWD_ROWS", "64", 1);
        else unsetenv("ANVIL_CUDA_ATT_FWD_ROWS");
        double ms[2];
        for (int pass = 0; pass < 2; pass++) {   // forward, backward
            for (int i = 0; i < warmup + iters; i++) {
                if (i == warmup) be->stamp_record(a);
                if (pass == 0)
                    be->attention_forward(out, state, qkv, rc, rs, s->B, s->T, s->NH, s->KVH,
                                          s->HS);
                else
                    be->attention_backward(dqkv, scratch, dout, out, state, qkv, rc, rs, s->B,
                                           s->T, s->NH, s->KVH, s->HS);
            }
            be->stamp_record(b);
            ms[pass] = be->stamp_ms(a, b) / iters;
            if (pass == 0) res[rows64] = fwd_result(be, out, nq, state, ns);
        }
        printf("%-6s B=%d T=%d NH=%d KVH=%d HS=%d rope=%d  forward rows %3s: %8.3f ms "
               "%7.1f TFLOP/s | backward: %8.3f ms %7.1f TFLOP/s\n", s->name, s->B, s->T,
               s->NH, s->KVH, s->HS, s->rope, rows64 ? "64" : "def", ms[0],
               flops(s, 2) / (ms[0] * 1e9), ms[1], flops(s, 5) / (ms[1] * 1e9));
    }
    unsetenv("ANVIL_CUDA_ATT_FWD_ROWS");
    // the same bits either way (attn_fwd_mma's comment), here at full size; NaN counts
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < nq + ns; i++)
        if (!(res[0][i] == res[1][i]) && bad++ == 0) first = i;
    if (bad == 0)
        printf("%-6s forward, 128- and 64-row query blocks: the same bits (out and lse, %zu "
               "values)\n", s->name, nq + ns);
    else
        printf("%-6s forward, 128- and 64-row query blocks: %zu of %zu values DIFFER, first "
               "[%zu] %.9g vs %.9g\n", s->name, bad, nq + ns, first, res[0][first],
               res[1][first]);
    free(res[0]);
    free(res[1]);
    be->stamp_free(a);
    be->stamp_free(b);
    be->free(qkv);
    be->free(dout);
    be->free(out);
    be->free(dqkv);
    be->free(state);
    be->free(scratch);
    be->free(rc);
    be->free(rs);
    return bad != 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int iters = 20, warmup = 3, n = 0;
    shape shapes[16];
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "--iters") == 0 || strcmp(argv[i], "--warmup") == 0) &&
            i + 1 < argc) {
            int v = atoi(argv[i + 1]);
            if (v < (argv[i][2] == 'i' ? 1 : 0)) {
                fprintf(stderr, "att_bench: %s: bad value '%s'\n", argv[i], argv[i + 1]);
                return 2;
            }
            *(argv[i][2] == 'i' ? &iters : &warmup) = v;
            i++;
        } else if (n < 16 && shape_parse(argv[i], &shapes[n]) == 0) {
            n++;
        } else {
            fprintf(stderr, "att_bench: bad argument '%s' (usage: att_bench [--iters N] "
                    "[--warmup N] [gpt2|llama|NAME=B,T,NH,KVH,HS[,rope] ...])\n", argv[i]);
            return 2;
        }
    }
    if (n == 0) {
        shape_parse("gpt2", &shapes[n++]);
        shape_parse("llama", &shapes[n++]);
    }
    if (anv_cuda_device_count() == 0) {
        printf("att_bench: skipped: the CUDA runtime sees no GPU\n");
        return 77;
    }
    const anv_backend *be = anv_backend_cuda(0);
    if (be == NULL || be->stamp_new == NULL) return 77;
    printf("att_bench: %s; %d timed calls after %d untimed; TFLOP/s of the causal half "
           "(forward 2, backward 5 products)\n", anv_cuda_describe(), iters, warmup);
    int bad = 0;
    for (int i = 0; i < n; i++) bad += bench(be, &shapes[i], iters, warmup);
    return bad ? 1 : 0;
}
