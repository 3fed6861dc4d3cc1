// tests/unit/test_bf16_model.c: train a small model on the fp32 cpu backend and on the
// bf16 backend emulated on the CPU (bf16_backend.c) side by side, and compare.
//
// Why: only the cuda backend has 2-byte weights and activations, fp32 master weights in
// the optimizer, a padded vocabulary (vocab_multiple 64) and host_memory 0. Without a
// GPU those paths of trainer/model.c and trainer/optimizer.c (byte offsets in
// act_bytes, the master copy, the padding rows of wte / lm_head / logits) never run;
// here they do, against the fp32 model as reference.
//
// For each family (gpt2 tied: 2 layers, d_model 64, 4 heads, vocab 101 -> Vp 128 under
// vocab_multiple 64; llama untied with 2 kv heads, same size) both models are built from
// the same config and seed and trained TEST_STEPS AdamW steps on the same batches, as
// trainer/train.c steps: zero grads, forward, backward with dloss = 1/(B*T), global
// grad norm, clipped update. The checks:
//   Vp          128 on the emulated model, 101 on the cpu one
//   loss        every step's loss within LOSS_RTOL relative, and the loss falls
//   has_master  the emulated optimizer keeps fp32 master weights, the cpu one none
//   master      fp32 master weights (emulated) vs the cpu params after the steps, per
//               tensor (real vocabulary rows only): ||a - b|| / ||b|| <= MASTER_RTOL
//               (the gpt2 key bias excepted: its gradient is exactly zero, see below)
//   rounding    every bf16 working weight equals its master weight rounded, bit for bit
//   num_params  model_num_params equal on both
// Prints one line per check and "N passed, N failed"; exits 1 on a failure.
//
// Built a second time with ANV_TEST_EMULATED_CUDA (tests/emu/meson.build): the
// "emulated" side is then anv_backend_cuda(0) of tests/emu/emu_backend.cc, the cuda
// backend's own kernels executed on the host (all but matmul and the memory ops), so
// the same checks cover the whole training step through the CUDA kernels' code; with 2
// query heads (1 kv head for llama) of size 32, so attention takes its tensor-core path.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/bf16_backend.h"
#include "trainer/config.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"

#define TEST_B 2
#define TEST_T 16
#define TEST_STEPS 20
#define TEST_LR 1e-3f        // constant: the schedule is not under test
#define TEST_IDS 12          // batches draw from 12 token ids, so the loss can fall
#define LOSS_RTOL 2e-2       // bf16 activations: 8 significant bits
// Measured (gcc -O3, x86-64, 20 steps): worst tensor gpt2 2.1e-2 (a bias, which starts
// at 0 so its whole value is the update), llama 1.1e-2 (mlp.down); weights ~5e-3 to
// 1e-2. The bound is about 5x the worst. A wrong update of a tensor (wrong offset,
// stale weights) gives ~0.5 for weights and ~1 for biases.
#define MASTER_RTOL 1e-1

static int g_pass, g_fail;

static void check(int ok, const char *family, const char *what, const char *detail) {
    printf("%s %-6s %-11s %s\n", ok ? "PASS" : "FAIL", family, what, detail);
    if (ok) g_pass++; else g_fail++;
}

// ----------------------------------------------------------------------------
// batches (splitmix64: a seeded PRNG of one word)

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// inputs, targets (B,T): a (B,T+1) window of ids drawn uniformly from TEST_IDS ids
// spread over [0, V) (the last real row V-1 among them), split into [:, :T] and [:, 1:].
static void random_batch(int32_t *inputs, int32_t *targets, int V, uint64_t *rng) {
    for (int b = 0; b < TEST_B; b++) {
        int32_t prev = 0;
        for (int t = 0; t <= TEST_T; t++) {
            int k = (int)(splitmix64(rng) % TEST_IDS);
            int32_t id = (int32_t)((long)k * (V - 1) / (TEST_IDS - 1));
            if (t > 0) {
                inputs[b * TEST_T + t - 1] = prev;
                targets[b * TEST_T + t - 1] = id;
            }
            prev = id;
        }
    }
}

// The key bias's gradient is exactly zero: it adds q . bk to every score of a query
// row, and softmax ignores a shift of its row. Both models then apply AdamW to rounding
// noise (bf16 noise is larger, so the emulated bias wanders further, by up to ~lr a
// step, harmlessly); their values are not comparable and the master check skips it.
static int zero_grad_tensor(const char *name) {
    const char *suffix = "attn.wk.bias";
    size_t n = strlen(name), k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

// ----------------------------------------------------------------------------
// one family

typedef struct run {
    model m;
    optimizer o;
    int have_m, have_o;
    double loss[TEST_STEPS], gnorm[TEST_STEPS];
} run;

static int run_setup(run *r, const anvil_config *cfg, const anv_backend *be) {
    memset(r, 0, sizeof *r);
    if (model_init(&r->m, &cfg->model, be, TEST_B, TEST_T, NULL) != 0) return 1;
    r->have_m = 1;
    if (model_init_weights(&r->m, cfg->train.seed) != 0) return 1;
    if (optimizer_init(&r->o, &cfg->optim, &r->m, 0, r->m.n_alloc) != 0) return 1;
    r->have_o = 1;
    return 0;
}

static void run_free(run *r) {
    if (r->have_o) optimizer_free(&r->o);
    if (r->have_m) model_free(&r->m);
}

// One training step as trainer/train.c takes it on one rank.
static void run_step(run *r, int s, const int32_t *inputs, const int32_t *targets) {
    const double BT = (double)TEST_B * TEST_T;
    model_zero_grad(&r->m);
    r->loss[s] = model_forward(&r->m, inputs, targets, TEST_B, TEST_T) / BT;
    model_backward(&r->m, (float)(1.0 / BT));
    r->gnorm[s] = sqrt(optimizer_grad_sumsq(&r->o, &r->m, r->m.grads));
    optimizer_step(&r->o, &r->m, r->m.grads, TEST_LR, (float)r->gnorm[s]);
}

// Returns 0, or 1 when the models could not be built.
static int test_family(const char *name, model_family family) {
    anvil_config cfg;
    config_defaults(&cfg);
    model_config *mc = &cfg.model;
    mc->family = family;
    mc->n_layer = 2;
    mc->d_model = 64;
#ifdef ANV_TEST_EMULATED_CUDA
    mc->n_head = 2;      // head size 32: attention's tensor-core kernels, not the generic ones
    mc->n_kv_head = family == MODEL_FAMILY_LLAMA ? 1 : 2;
#else
    mc->n_head = 4;
    mc->n_kv_head = family == MODEL_FAMILY_LLAMA ? 2 : 4;
#endif
    mc->vocab_size = 101;
    mc->max_seq_len = 32;        // > T: the encoder reads only wpe's first T rows
    mc->tie_embeddings = family == MODEL_FAMILY_GPT2;
    cfg.train.seed = 1234;
    if (model_config_resolve(mc) != 0) return 1;

    run cpu, emu;
    int rc = 1;
    char d[256];
    int32_t inputs[TEST_B * TEST_T], targets[TEST_B * TEST_T];
    float *cpu_p = NULL, *emu_master = NULL;
    uint16_t *emu_p = NULL;
    memset(&cpu, 0, sizeof cpu);     // run_free is safe on both whatever fails first
    memset(&emu, 0, sizeof emu);
    if (run_setup(&cpu, &cfg, anv_backend_cpu()) != 0) goto done;
#ifdef ANV_TEST_EMULATED_CUDA
    if (run_setup(&emu, &cfg, anv_backend_cuda(0)) != 0) goto done;
#else
    if (run_setup(&emu, &cfg, anv_backend_bf16_emulated()) != 0) goto done;
#endif
    model *mcpu = &cpu.m, *memu = &emu.m;

    // ---- Vp ---------------------------------------------------------------------------
    snprintf(d, sizeof d, "emulated Vp %d (want 128), cpu Vp %d (want 101)", memu->Vp,
             mcpu->Vp);
    check(memu->Vp == 128 && mcpu->Vp == 101, name, "Vp", d);

    // ---- training ---------------------------------------------------------------------
    uint64_t rng = 0x5EEDull;
    for (int s = 0; s < TEST_STEPS; s++) {
        random_batch(inputs, targets, mc->vocab_size, &rng);
        run_step(&cpu, s, inputs, targets);
        run_step(&emu, s, inputs, targets);
    }
    double worst_loss = 0.0, worst_norm = 0.0;
    int finite = 1;
    for (int s = 0; s < TEST_STEPS; s++) {
        double rl = fabs(emu.loss[s] - cpu.loss[s]) / fabs(cpu.loss[s]);
        double rn = fabs(emu.gnorm[s] - cpu.gnorm[s]) / cpu.gnorm[s];
        finite &= isfinite(emu.loss[s]) && isfinite(cpu.loss[s]);
        if (!(rl <= worst_loss)) worst_loss = rl;    // NaN sticks
        if (!(rn <= worst_norm)) worst_norm = rn;
    }
    snprintf(d, sizeof d, "max rel diff %.2e over %d steps (bound %.0e); grad norm max rel "
             "diff %.2e (info)", worst_loss, TEST_STEPS, LOSS_RTOL, worst_norm);
    check(finite && worst_loss <= LOSS_RTOL, name, "loss", d);
    // the last three steps' mean below the first step's by a clear margin, on both
    const double drop = 0.5;   // nats; from ln(101) = 4.6 towards ln(12) = 2.5
    double last_cpu = (cpu.loss[TEST_STEPS - 1] + cpu.loss[TEST_STEPS - 2] +
                       cpu.loss[TEST_STEPS - 3]) / 3.0;
    double last_emu = (emu.loss[TEST_STEPS - 1] + emu.loss[TEST_STEPS - 2] +
                       emu.loss[TEST_STEPS - 3]) / 3.0;
    snprintf(d, sizeof d, "cpu %.4f -> %.4f, emulated %.4f -> %.4f (want a drop >= %.1f)",
             cpu.loss[0], last_cpu, emu.loss[0], last_emu, drop);
    check(last_cpu <= cpu.loss[0] - drop && last_emu <= emu.loss[0] - drop, name,
          "loss_falls", d);

    // ---- master weights vs the fp32 model -----------------------------------------------
    cpu_p = malloc(mcpu->n_alloc * sizeof(float));
    emu_master = malloc(memu->n_alloc * sizeof(float));
    emu_p = malloc(memu->n_alloc * sizeof(uint16_t));
    if (!cpu_p || !emu_master || !emu_p) goto done;
    int have_master = emu.o.master != NULL && cpu.o.master == NULL;
    snprintf(d, sizeof d, "master weights: emulated %s, cpu %s",
             emu.o.master ? "yes" : "NO", cpu.o.master ? "YES" : "no");
    check(have_master, name, "has_master", d);
    if (!have_master) goto counts;
    mcpu->be->copy_to_host(cpu_p, mcpu->params, mcpu->n_alloc * sizeof(float));
    memu->be->copy_to_host(emu_master, emu.o.master, memu->n_alloc * sizeof(float));
    memu->be->copy_to_host(emu_p, memu->params, memu->n_alloc * sizeof(uint16_t));

    double worst = 0.0, kbias_rms = 0.0;
    const char *worst_name = "-";
    int same_table = mcpu->n_tensors == memu->n_tensors;
    for (int i = 0; same_table && i < mcpu->n_tensors; i++) {
        const param_tensor *tc = &mcpu->tensors[i], *te = &memu->tensors[i];
        if (strcmp(tc->name, te->name) != 0 || tc->shape[1] != te->shape[1]) {
            same_table = 0;
            break;
        }
        // vocabulary tensors: the V real rows (the emulated one has Vp - V more)
        size_t n = tc->is_vocab ? (size_t)mc->vocab_size * tc->shape[1] : tc->numel;
        const float *a = emu_master + te->offset, *b = cpu_p + tc->offset;
        double num = 0.0, den = 0.0;
        for (size_t j = 0; j < n; j++) {
            num += ((double)a[j] - b[j]) * ((double)a[j] - b[j]);
            den += (double)b[j] * b[j];
        }
        double rel = sqrt(num) / (den > 0.0 ? sqrt(den) : 1.0);
        if (zero_grad_tensor(tc->name)) {
            double rms = sqrt(num / (double)(n > 0 ? n : 1));
            if (!(rms <= kbias_rms)) kbias_rms = rms;
            continue;
        }
        if (!(rel <= worst)) {
            worst = rel;
            worst_name = tc->name;
        }
    }
    snprintf(d, sizeof d, "max per-tensor rel err %.2e (%s; bound %.1e)%s%s", worst,
             worst_name, MASTER_RTOL, same_table ? "" : "; TENSOR TABLES DIFFER",
             kbias_rms > 0.0 ? "; attn.wk.bias excluded" : "");
    if (kbias_rms > 0.0) {
        size_t len = strlen(d);
        snprintf(d + len, sizeof d - len, " (abs rms diff %.1e)", kbias_rms);
    }
    check(same_table && worst <= MASTER_RTOL, name, "master", d);

    // ---- working weights == master rounded, every element of the buffer ---------------
    size_t bad = 0, first_bad = 0;
    for (size_t j = 0; j < memu->n_alloc; j++) {
        if (emu_p[j] != bf16_emulated_from_f32(emu_master[j])) {
            if (bad == 0) first_bad = j;
            bad++;
        }
    }
    if (bad == 0)
        snprintf(d, sizeof d, "all %zu bf16 params == round(master)", memu->n_alloc);
    else
        snprintf(d, sizeof d, "%zu of %zu differ, first at element %zu: 0x%04x vs "
                 "round(%.8g) = 0x%04x", bad, memu->n_alloc, first_bad, emu_p[first_bad],
                 emu_master[first_bad], bf16_emulated_from_f32(emu_master[first_bad]));
    check(bad == 0, name, "rounding", d);

counts:
    snprintf(d, sizeof d, "cpu %zu, emulated %zu", model_num_params(mcpu),
             model_num_params(memu));
    check(model_num_params(mcpu) == model_num_params(memu), name, "num_params", d);
    rc = 0;
done:
    if (rc != 0) {
        fprintf(stderr, "test_bf16_model: %s: could not build or run the models\n", name);
        g_fail++;
    }
    free(cpu_p);
    free(emu_master);
    free(emu_p);
    run_free(&cpu);
    run_free(&emu);
    return rc;
}

int main(void) {
    test_family("gpt2", MODEL_FAMILY_GPT2);
    test_family("llama", MODEL_FAMILY_LLAMA);
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail > 0 ? 1 : 0;
}
