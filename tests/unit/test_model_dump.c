// tests/unit/test_model_dump.c: run the CPU model and dump everything the PyTorch
// reference (tests/reference/test_parity.py) needs to check it.
//
// Usage: test_model_dump OUT.bin [--vocab-multiple=N] [section.key=value ...]
//
// --vocab-multiple=N runs the cpu backend with its vocab_multiple set to N, so the
// vocabulary padding the cuda backend asks for (64) is checked against the reference
// on the cpu.
//
// The model is built from the config defaults plus the overrides, initialised from
// train.seed, and run on random token batches; OUT.bin (trainer/tensorfile.h) gets:
//   meta              int32 [L, C, NH, KVH, HS, F, V, Vp, maxT, family, tied, qkv_bias, B, T]
//   meta_f            float [norm_eps, rope_theta, rope_scaling, rope_factor,
//                            rope_low_freq_factor, rope_high_freq_factor,
//                            rope_original_max_pos, lr, min_lr, warmup_steps, steps,
//                            beta1, beta2, eps, weight_decay, grad_clip, decay_embeddings]
//                     (the resolved config, so the reference can tell a config that was
//                     not applied from a model that computes wrongly)
//   NAME              every parameter tensor at init, by its global name
//   tokens            int32 (B, T+1): inputs are [:, :T], targets [:, 1:]
//   logits            (B, T, Vp) of the forward on `tokens`
//   loss              (1) mean loss over the B*T targets
//   grad.NAME         gradient of that mean loss
//   tokens.S          int32 (B, T+1), S = 0..9: the batches of 10 AdamW steps
//   train_losses      (10) mean loss of each step, before its update
//   grad_norms        (10) global gradient norm of each step, before clipping
//   lrs               (10) learning rate of each step (lr_at)
//   final.NAME        every parameter tensor after the 10 steps
// Exit: 0 written; 1 internal error (allocation, write); 2 bad config.
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/config.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"
#include "trainer/tensorfile.h"

#define DUMP_TRAIN_STEPS 10   // enough for AdamW's moments and the schedule to matter

// ----------------------------------------------------------------------------
// a small seeded PRNG for the token batches (splitmix64: no state beyond one word)

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Fill tokens (B, T+1) with ids uniform in [0, V).
static void random_tokens(int32_t *tokens, int B, int T, int V, uint64_t *rng) {
    for (int i = 0; i < B * (T + 1); i++) tokens[i] = (int32_t)(splitmix64(rng) % (uint64_t)V);
}

// Split a (B, T+1) window into inputs (B, T) = [:, :T] and targets (B, T) = [:, 1:].
static void split_window(int32_t *inputs, int32_t *targets, const int32_t *tokens, int B,
                         int T) {
    for (int b = 0; b < B; b++) {
        memcpy(inputs + (size_t)b * T, tokens + (size_t)b * (T + 1), (size_t)T * 4);
        memcpy(targets + (size_t)b * T, tokens + (size_t)b * (T + 1) + 1, (size_t)T * 4);
    }
}

// ----------------------------------------------------------------------------
// writers

// Returns 0 or -1 (tensorfile_add printed why).
static int put(FILE *f, const char *name, int dtype, int ndim, int64_t d0, int64_t d1,
               int64_t d2, const void *data) {
    int64_t dims[3] = {d0, d1, d2};
    return tensorfile_add(f, name, dtype, ndim, dims, data);
}

// Write every parameter (prefix "") or gradient (src = grads, prefix "grad.") tensor.
// `host` is scratch of n_params floats. Returns 0 or -1.
static int put_tensors(FILE *f, const model *m, const float *src, const char *prefix,
                       float *host) {
    m->be->copy_to_host(host, src, m->n_params * sizeof(float));
    for (int i = 0; i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        char name[MODEL_MAX_NAME + 16];
        snprintf(name, sizeof name, "%s%s", prefix, t->name);
        int64_t dims[2] = {t->shape[0], t->ndim > 1 ? t->shape[1] : 0};
        if (tensorfile_add(f, name, TENSORFILE_DTYPE_F32, t->ndim, dims, host + t->offset))
            return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s OUT.bin [section.key=value ...]\n", argv[0]);
        return 2;
    }
    anv_backend be = *anv_backend_cpu();
    int n = 0;                        // the overrides, the flag taken out wherever it is
    for (int i = 2; i < argc; i++) {
        if (strncmp(argv[i], "--vocab-multiple=", 17) == 0)
            be.vocab_multiple = atoi(argv[i] + 17);
        else
            argv[2 + n++] = argv[i];
    }
    anvil_config cfg;
    config_defaults(&cfg);
    if (config_load(&cfg, NULL, n, argv + 2) != 0) return 2;
    if (model_config_resolve(&cfg.model) != 0) return 2;

    const int B = cfg.train.micro_batch, T = cfg.train.seq_len;
    model m;
    int rc = model_init(&m, &cfg.model, &be, B, T, NULL);
    if (rc != 0) return rc;
    optimizer o;
    int have_opt = 0;
    FILE *f = NULL;
    const char *failed = NULL;   // which step failed, for the one message below
    rc = 1;
    size_t BT = (size_t)B * T, BT1 = (size_t)B * (T + 1);
    float *host = malloc(m.n_params * sizeof(float));
    float *logits = malloc(BT * (size_t)m.Vp * sizeof(float));
    int32_t *tokens = malloc(BT1 * sizeof(int32_t));
    int32_t *inputs = malloc(BT * sizeof(int32_t)), *targets = malloc(BT * sizeof(int32_t));
    if (!host || !logits || !tokens || !inputs || !targets) { failed = "allocation"; goto done; }
    if (model_init_weights(&m, cfg.train.seed) != 0) { failed = "model_init_weights"; goto done; }
    if (!(f = tensorfile_create(argv[1]))) { failed = "create"; goto done; }

    // ---- shape and resolved config ---------------------------------------------------
    const model_config *mc = &m.cfg;
    int32_t meta[14] = {m.L, m.C, m.NH, m.KVH, m.HS, m.F, m.V, m.Vp, m.maxT,
                        (int32_t)mc->family, mc->tie_embeddings, mc->qkv_bias, B, T};
    const optim_config *oc = &cfg.optim;
    const train_config *tc = &cfg.train;
    float meta_f[17] = {m.eps, mc->rope_theta, (float)mc->rope_scaling, mc->rope_factor,
                        mc->rope_low_freq_factor, mc->rope_high_freq_factor,
                        (float)mc->rope_original_max_pos, tc->lr, tc->min_lr,
                        (float)tc->warmup_steps, (float)tc->steps, oc->beta1, oc->beta2,
                        oc->eps, oc->weight_decay, oc->grad_clip, (float)oc->decay_embeddings};
    if (put(f, "meta", TENSORFILE_DTYPE_I32, 1, 14, 0, 0, meta) ||
        put(f, "meta_f", TENSORFILE_DTYPE_F32, 1, 17, 0, 0, meta_f) ||
        put_tensors(f, &m, m.params, "", host)) { failed = "write init"; goto done; }

    // ---- one forward + backward at init ---------------------------------------------
    uint64_t rng = (uint64_t)cfg.train.seed ^ 0xA5A5F00Dull;  // any fixed offset from seed
    random_tokens(tokens, B, T, m.V, &rng);
    split_window(inputs, targets, tokens, B, T);
    float loss = (float)(model_forward(&m, inputs, targets, B, T) / (double)BT);
    // backward reuses the logits buffer for dlogits, so copy them out first
    m.be->copy_to_host(logits, m.logits, BT * (size_t)m.Vp * sizeof(float));
    model_zero_grad(&m);
    model_backward(&m, 1.0f / (float)BT);
    if (put(f, "tokens", TENSORFILE_DTYPE_I32, 2, B, T + 1, 0, tokens) ||
        put(f, "logits", TENSORFILE_DTYPE_F32, 3, B, T, m.Vp, logits) ||
        put(f, "loss", TENSORFILE_DTYPE_F32, 1, 1, 0, 0, &loss) ||
        put_tensors(f, &m, m.grads, "grad.", host)) { failed = "write grads"; goto done; }

    // ---- DUMP_TRAIN_STEPS AdamW steps ---------------------------------------------------
    if (optimizer_init(&o, &cfg.optim, &m, 0, m.n_alloc) != 0) { failed = "optimizer_init"; goto done; }
    have_opt = 1;
    float losses[DUMP_TRAIN_STEPS], norms[DUMP_TRAIN_STEPS], lrs[DUMP_TRAIN_STEPS];
    for (int s = 0; s < DUMP_TRAIN_STEPS; s++) {
        char name[32];
        random_tokens(tokens, B, T, m.V, &rng);
        split_window(inputs, targets, tokens, B, T);
        snprintf(name, sizeof name, "tokens.%d", s);
        if (put(f, name, TENSORFILE_DTYPE_I32, 2, B, T + 1, 0, tokens)) {
            failed = "write tokens";
            goto done;
        }
        model_zero_grad(&m);
        losses[s] = (float)(model_forward(&m, inputs, targets, B, T) / (double)BT);
        model_backward(&m, 1.0f / (float)BT);
        norms[s] = (float)sqrt(optimizer_grad_sumsq(&o, &m, m.grads));
        lrs[s] = lr_at(&cfg.train, s);
        optimizer_step(&o, &m, m.grads, lrs[s], norms[s]);
    }
    if (put(f, "train_losses", TENSORFILE_DTYPE_F32, 1, DUMP_TRAIN_STEPS, 0, 0, losses) ||
        put(f, "grad_norms", TENSORFILE_DTYPE_F32, 1, DUMP_TRAIN_STEPS, 0, 0, norms) ||
        put(f, "lrs", TENSORFILE_DTYPE_F32, 1, DUMP_TRAIN_STEPS, 0, 0, lrs) ||
        put_tensors(f, &m, m.params, "final.", host)) { failed = "write final"; goto done; }

    if (fclose(f) != 0) { f = NULL; failed = "close"; goto done; }
    f = NULL;
    rc = 0;
done:
    if (rc != 0) fprintf(stderr, "test_model_dump: %s failed (%s)\n", failed, argv[1]);
    if (f) fclose(f);
    if (have_opt) optimizer_free(&o);
    free(host);
    free(logits);
    free(tokens);
    free(inputs);
    free(targets);
    model_free(&m);
    return rc;
}
