// trainer/train.c: `anvil train CONFIG [section.key=value ...]`, the training loop.
//
// Order of work: load and validate the config (exit 2 on any bad key), resolve the
// model shape, open the data, size and allocate everything (model, optimizer, batch
// buffers, sampler), write the effective config into run.dir, then loop. The loop
// allocates nothing: each step reads global batch k = stream positions
// [k*G, (k+1)*G) from the loader (G samples of T+1 tokens), runs G/B micro-batches of
// forward + backward accumulating gradients, clips by the global norm and takes one
// AdamW step. A loss or gradient that is not finite skips the update and is counted.
//
// SIGINT, SIGTERM and SIGUSR1 set a flag; the loop finishes the current step, logs,
// and exits with 75 (DESIGN.md: "stopped on request"; the checkpoint issue adds the
// checkpoint written before that exit).
#include "trainer/train.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "data/data.h"
#include "kernels/ops.h"
#include "trainer/config.h"
#include "trainer/metrics.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"
#include "trainer/rng.h"
#include "trainer/sample.h"
#include "trainer/tensorfile.h"
#include "parallel/parallel.h"

#define EXIT_STOPPED 75

static volatile sig_atomic_t g_stop_signal = 0;

static void on_stop_signal(int sig) { g_stop_signal = sig; }

static void install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Peak FLOP/s of this process on the CPU: threads x fp32 FLOPs per cycle x clock from
// /proc/cpuinfo. Two FMA pipes x 8 lanes x 2 = 32 FLOPs/cycle for AVX2, and for AMD's
// AVX-512 (Zen 4 runs 512-bit ops on 256-bit pipes); 64 for Intel cores with AVX-512.
// An estimate for MFU only; train.peak_flops overrides it.
static double estimate_cpu_peak_flops(void) {
    double mhz = 0.0;
    int avx512 = 0, amd = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[4096];
        while (fgets(line, sizeof line, f)) {
            if (mhz == 0.0 && strncmp(line, "cpu MHz", 7) == 0) {
                const char *c = strchr(line, ':');
                if (c) mhz = atof(c + 1);
            }
            if (strncmp(line, "vendor_id", 9) == 0 && strstr(line, "AuthenticAMD")) amd = 1;
            if (strncmp(line, "flags", 5) == 0 && strstr(line, " avx512f")) avx512 = 1;
        }
        fclose(f);
    }
    if (mhz <= 0.0) return 0.0;
    return (double)omp_get_max_threads() * (avx512 && !amd ? 64.0 : 32.0) * mhz * 1e6;
}

// Create run.dir, write the effective config into it and open metrics.jsonl (lead
// rank only). Returns 0, or 2 after printing which path failed.
static int open_run_dir(const anvil_config *cfg, FILE **metrics) {
    char fpath[CONFIG_STR + 64];
    if (data_mkdirs(cfg->run.dir, fpath, sizeof fpath) != 0) {
        fprintf(stderr, "anvil: run.dir '%s': cannot create '%s': %s\n", cfg->run.dir, fpath,
                strerror(errno));
        return 2;
    }
    snprintf(fpath, sizeof fpath, "%s/config.yaml", cfg->run.dir);
    FILE *cf = fopen(fpath, "w");
    if (!cf || config_write_yaml(cfg, cf) != 0 || fclose(cf) != 0) {
        fprintf(stderr, "anvil: cannot write '%s': %s\n", fpath, strerror(errno));
        return 2;
    }
    snprintf(fpath, sizeof fpath, "%s/metrics.jsonl", cfg->run.dir);
    if (!(*metrics = fopen(fpath, "w"))) {
        fprintf(stderr, "anvil: cannot open '%s': %s\n", fpath, strerror(errno));
        return 2;
    }
    return 0;
}

// The largest exit code any rank has, so all ranks leave alike (the rank that failed
// has printed why). Returns it (1 if the reduction itself fails).
static int agree_rc(parallel_grid *g, int rc) {
    if (g->world_g->be->all_reduce(g->world_g, &rc, 1, COMM_DTYPE_I32, COMM_OP_MAX)) return 1;
    return rc;
}

// Bytes this rank has sent over all its groups.
static uint64_t grid_bytes_sent(const parallel_grid *g) {
    return g->world_g->bytes_sent + g->dp_g->bytes_sent + g->tp_g->bytes_sent +
           g->pp_g->bytes_sent;
}

// Write every parameter tensor, by name and global shape, to a tensorfile (the
// run.final_weights debugging hook; checkpoints come with their own issue).
// Returns 0, or 2 after printing why.
static int write_final_weights(const model *m, const char *path) {
    FILE *f = tensorfile_create(path);
    if (!f) return 2;
    float *host = malloc(m->n_params * sizeof(float));
    int rc = host ? 0 : 1;
    if (host) m->be->copy_to_host(host, m->params, m->n_params * sizeof(float));
    for (int i = 0; rc == 0 && i < m->n_tensors; i++) {
        const param_tensor *t = &m->tensors[i];
        int64_t dims[2] = {t->shape[0], t->shape[1]};
        if (tensorfile_add(f, t->name, TENSORFILE_DTYPE_F32, t->ndim, dims,
                           host + t->offset) != 0)
            rc = 2;
    }
    free(host);
    if (fclose(f) != 0 || rc != 0) {
        fprintf(stderr, "anvil: run.final_weights '%s': write failed\n", path);
        return rc ? rc : 2;
    }
    return 0;
}

// Split b windows of T+1 tokens, win (b, T+1), into inputs and next-token targets,
// inp and tgt (b, T).
static void split_windows(const int32_t *win, int b, int T, int32_t *inp, int32_t *tgt) {
    for (int i = 0; i < b; i++) {
        memcpy(inp + (size_t)i * T, win + (size_t)i * (T + 1), (size_t)T * sizeof(int32_t));
        memcpy(tgt + (size_t)i * T, win + (size_t)i * (T + 1) + 1, (size_t)T * sizeof(int32_t));
    }
}

// Mean validation loss over the first n_windows windows of the val loader (the same
// windows every time, so evaluations are comparable), split over the dp ranks. tok is
// (B, T+1) host scratch, inp and tgt (B, T). Collective over dp.
static double evaluate(model *m, loader *val, parallel_grid *g, long n_windows, int B, int T,
                       int32_t *tok, int32_t *inp, int32_t *tgt, long long *n_tokens) {
    double acc[2] = {0.0, 0.0};   // loss sum, token count
    // chunk c of B windows goes to dp rank c % dp; the sums are reduced over dp
    for (long w = (long)g->dp_rank * B; w < n_windows; w += (long)B * g->dp) {
        int b = (int)(n_windows - w < B ? n_windows - w : B);
        if (loader_fill(val, (uint64_t)w, b, tok) != 0) {
            acc[0] = NAN;
            break;
        }
        split_windows(tok, b, T, inp, tgt);
        acc[0] += model_forward(m, inp, tgt, b, T);
        acc[1] += (double)b * T;
    }
    if (g->dp_g->be->all_reduce(g->dp_g, acc, 2, COMM_DTYPE_F64, COMM_OP_SUM)) acc[0] = NAN;
    *n_tokens = (long long)acc[1];
    return acc[1] > 0 ? acc[0] / acc[1] : NAN;
}

// Writes each sampled token's text to stdout: through the BPE tokenizer when the run
// names one (data.tokenizer), else the byte-level tokenizer.
static void emit_token(int32_t id, void *ctx) {
    const tokenizer *tok = ctx;
    if (tok) {
        size_t len = 0;
        const char *bytes = tokenizer_token_bytes(tok, (uint32_t)id, &len);
        if (bytes) fwrite(bytes, 1, len, stdout);
        else fputs("\xEF\xBF\xBD", stdout);   // U+FFFD for an id the tokenizer lacks
    } else {
        char buf[16];
        fputs(byte_tokenizer_decode((uint32_t)id, buf), stdout);
    }
    fflush(stdout);
}

static void print_sample(sampler *s, model *m, const tokenizer *tok, int n_tokens,
                         uint64_t *rng) {
    // start as after a document boundary
    int64_t eot = tok ? tokenizer_eot_id(tok) : BYTE_TOKENIZER_EOT;
    int32_t prompt = eot >= 0 && eot < m->V ? (int32_t)eot : 0;
    printf("---- sample ----\n");
    sampler_generate(s, m, &prompt, 1, n_tokens, rng, emit_token, (void *)tok);
    printf("\n----------------\n");
    fflush(stdout);
}

// Parse the command line: [CONFIG] [section.key=value ...]. The config file is the
// first argument without '='; none means the embedded defaults.
static const char *split_args(int argc, char **argv, int *first_override) {
    if (argc >= 1 && strchr(argv[0], '=') == NULL) {
        *first_override = 1;
        return argv[0];
    }
    *first_override = 0;
    return NULL;
}

int train_main(int argc, char **argv) {
    int rc = 0, first = 0;
    const char *path = split_args(argc, argv, &first);
    anvil_config cfg;
    rc = config_load(&cfg, path, argc - first, argv + first);
    if (rc != 0) return rc;

    if (cfg.device == DEVICE_KIND_CUDA) {
        fprintf(stderr, "anvil: device: cuda: this build has no CUDA backend yet; use "
                "device=cpu\n");
        return 2;
    }
    const anv_backend *be = anv_backend_cpu();

    model_config mc = cfg.model;
    // The tokenizer (data.tokenizer) decodes samples, and gives the vocabulary size
    // when neither the config nor a preset sets model.vocab_size.
    tokenizer *tok = NULL;
    if (cfg.data.tokenizer[0] != '\0') {
        if ((rc = tokenizer_load(&tok, cfg.data.tokenizer)) != 0) return rc;
        if (mc.vocab_size == 0) mc.vocab_size = (int)tokenizer_vocab_size(tok);
        if (tokenizer_vocab_size(tok) > (uint32_t)mc.vocab_size) {
            fprintf(stderr, "anvil: model.vocab_size (%d) is smaller than the vocabulary of "
                    "data.tokenizer '%s' (%u)\n", mc.vocab_size, cfg.data.tokenizer,
                    tokenizer_vocab_size(tok));
            tokenizer_free(tok);
            return 2;
        }
    }
    if ((rc = model_config_resolve(&mc)) != 0) {
        tokenizer_free(tok);
        return rc;
    }
    cfg.model = mc;   // the effective config records the resolved shape
    const train_config *tc = &cfg.train;
    const int B = tc->micro_batch, T = tc->seq_len;
    long long gb_tokens = tc->global_batch_tokens > 0 ? tc->global_batch_tokens
                                                      : (long long)B * T;
    if (gb_tokens % ((long long)B * T) != 0) {
        fprintf(stderr, "anvil: train.global_batch_tokens (%lld) is not a multiple of "
                "train.micro_batch x train.seq_len (%d x %d = %d)\n", gb_tokens, B, T, B * T);
        rc = 2;
        goto out_tokenizer;
    }
    const int G = (int)(gb_tokens / T);        // samples per global batch

    // ---- the process grid: dp x tp x pp over the MPI world -------------------------
    parallel_grid grid;
    if ((rc = parallel_grid_init(&grid, &cfg.parallel, mc.n_head, mc.n_kv_head, G, B)) != 0)
        goto out_tokenizer;
    if (grid.tp > 1 || grid.pp > 1) {
        if (grid.rank == 0)
            fprintf(stderr, "anvil: parallel.tp = %d, parallel.pp = %d: tensor and pipeline "
                    "parallelism are not implemented yet (data parallelism and ZeRO-1 are)\n",
                    grid.tp, grid.pp);
        rc = 2;
        goto out_grid;
    }
    const int lead = grid.rank == 0;           // the rank that prints and writes files
    const int Gr = G / grid.dp;                // samples of each global batch on this rank
    const int accum = Gr / B;                  // micro-batches per step on this rank

    // ---- data ----------------------------------------------------------------
    loader train_data, val_data;
    int have_val = 0;
    memset(&val_data, 0, sizeof val_data);
    rc = loader_init(&train_data, cfg.data.train, "data.train", T,
                     cfg.data.order == DATA_ORDER_RANDOM, tc->seed, (uint32_t)mc.vocab_size);
    if (rc != 0) goto out_grid;
    long eval_windows = tc->eval_tokens / T > 0 ? tc->eval_tokens / T : 1;
    if (cfg.data.val[0] != '\0') {
        rc = loader_init(&val_data, cfg.data.val, "data.val", T, 0, tc->seed,
                         (uint32_t)mc.vocab_size);
        if (rc != 0) goto out_train_data;
        have_val = 1;
        if ((uint64_t)eval_windows > val_data.n_samples) eval_windows = (long)val_data.n_samples;
    }

    // ---- model, optimizer, buffers: everything the loop needs, allocated once ------
    model m;
    optimizer opt;
    sampler smp;
    memset(&opt, 0, sizeof opt);
    memset(&smp, 0, sizeof smp);
    float *grad_shard = NULL;
    if ((rc = model_init(&m, &mc, be, B, T, grid.dp)) != 0) goto out_val_data;
    if ((rc = model_init_weights(&m, tc->seed)) != 0) goto out_model;
    // ZeRO-1: this rank keeps AdamW state for one dp-th of the flat buffer and receives
    // that shard's summed gradient by reduce-scatter; without it, the whole buffer.
    const int zero = cfg.parallel.zero && grid.dp > 1;
    const size_t shard = m.n_alloc / (size_t)grid.dp;
    const size_t lo = zero ? (size_t)grid.dp_rank * shard : 0;
    const size_t hi = zero ? lo + shard : m.n_alloc;
    if ((rc = optimizer_init(&opt, &cfg.optim, &m, lo, hi)) != 0) goto out_model;
    if (zero && !(grad_shard = be->alloc(shard * sizeof(float)))) {
        fprintf(stderr, "anvil: out of memory allocating the ZeRO-1 gradient shard\n");
        rc = 1;
        goto out_opt;
    }
    if ((rc = sampler_init(&smp, &m, 1.0f, 0, 1.0f)) != 0) goto out_opt;
    int32_t *batch = malloc((size_t)Gr * (T + 1) * sizeof(int32_t));  // (Gr, T+1)
    int32_t *inp = malloc((size_t)B * T * sizeof(int32_t));           // (B, T)
    int32_t *tgt = malloc((size_t)B * T * sizeof(int32_t));           // (B, T)
    if (!batch || !inp || !tgt) {
        fprintf(stderr, "anvil: out of memory allocating batch buffers\n");
        rc = 1;
        goto out_buffers;
    }

    // ---- run directory (the lead rank writes; every rank learns the outcome) -------
    FILE *metrics = NULL;
    if (lead) rc = open_run_dir(&cfg, &metrics);
    if ((rc = agree_rc(&grid, rc)) != 0) goto out_buffers;

    const double flops_per_token = model_flops_per_token(&m, T);
    const double peak = tc->peak_flops > 0 ? tc->peak_flops : estimate_cpu_peak_flops();
    if (lead) {
        printf("anvil %s | device %s, %d threads/rank | %s model: %d layers, d_model %d, %d "
               "heads (%d kv), ffn %d, vocab %d | %.2fM parameters\n",
               "train", be->name, omp_get_max_threads(),
               mc.family == MODEL_FAMILY_GPT2 ? "gpt2" : "llama", mc.n_layer, mc.d_model,
               mc.n_head, mc.n_kv_head, mc.ffn_dim, mc.vocab_size,
               (double)model_num_params(&m) / 1e6);
        printf("layout dp=%d tp=%d pp=%d zero=%d (%d rank%s) | batch: %d x %d tokens = %d per "
               "dp rank in %d micro-batches of %d -> %lld tokens/step | train data: %llu "
               "windows in %d shard(s)%s | run.dir %s\n",
               grid.dp, grid.tp, grid.pp, zero, grid.world, grid.world == 1 ? "" : "s", G, T,
               Gr, accum, B, gb_tokens, (unsigned long long)train_data.n_samples,
               train_data.n_shards, have_val ? ", validation on" : "", cfg.run.dir);
        fflush(stdout);
    }

    install_stop_handlers();
    uint64_t sample_rng = rng_stream(tc->seed, "sample");
    long skipped = 0;
    long long tokens_done = 0;
    const double t_start = now_s();
    const float dloss = 1.0f / (float)((double)G * T);
    long step;
    for (step = 0; step < tc->steps; step++) {
        double t0 = now_s();
        uint64_t bytes0 = grid_bytes_sent(&grid);
        // This rank's part of global batch `step`: positions [step*G + dp_rank*Gr, +Gr).
        rc = loader_fill(&train_data, (uint64_t)step * G + (uint64_t)grid.dp_rank * Gr, Gr,
                         batch);
        // Every rank must take the same branch: stop on a signal any rank got (or a bad
        // batch any rank read) together, never leaving the others waiting.
        int flags[2] = {rc, (int)g_stop_signal};
        if (grid.world_g->be->all_reduce(grid.world_g, flags, 2, COMM_DTYPE_I32, COMM_OP_MAX)) {
            rc = 1;
            break;
        }
        if (flags[0] != 0) {
            rc = flags[0];
            break;
        }
        if (flags[1] != 0) {
            if (!g_stop_signal) g_stop_signal = flags[1];
            break;
        }
        model_zero_grad(&m);
        double loss_sum = 0.0;
        for (int a = 0; a < accum; a++) {
            split_windows(batch + (size_t)a * B * (T + 1), B, T, inp, tgt);
            loss_sum += model_forward(&m, inp, tgt, B, T);
            model_backward(&m, dloss);
        }
        // Gradients: every rank summed dloss-weighted gradients of its Gr samples; the
        // sum over dp is the gradient of the global batch's mean loss.
        const float *grads = m.grads;
        double ss = 0.0;
        comm_group *dpg = grid.dp_g;
        int crc = dpg->be->all_reduce(dpg, &loss_sum, 1, COMM_DTYPE_F64, COMM_OP_SUM);
        if (zero) {
            crc |= dpg->be->reduce_scatter(dpg, m.grads, grad_shard, shard, COMM_DTYPE_F32,
                                           COMM_OP_SUM);
            grads = grad_shard;
            ss = optimizer_grad_sumsq(&opt, &m, grads);
            crc |= dpg->be->all_reduce(dpg, &ss, 1, COMM_DTYPE_F64, COMM_OP_SUM);
        } else {
            crc |= dpg->be->all_reduce(dpg, m.grads, m.n_alloc, COMM_DTYPE_F32, COMM_OP_SUM);
            ss = optimizer_grad_sumsq(&opt, &m, grads);
        }
        double loss = loss_sum / ((double)G * T);
        float gnorm = (float)sqrt(ss);
        float lr = lr_at(tc, step);
        if (isfinite(loss) && isfinite(gnorm)) {
            optimizer_step(&opt, &m, grads, lr, gnorm);
            if (zero)   // every rank gets every shard's updated parameters
                crc |= dpg->be->all_gather(dpg, m.params + lo, m.params, shard,
                                           COMM_DTYPE_F32);
        } else {
            skipped++;
            if (lead)
                fprintf(stderr, "anvil: step %ld: non-finite %s, update skipped (%ld so far)\n",
                        step + 1, isfinite(loss) ? "gradient" : "loss", skipped);
        }
        if (crc) {
            rc = 1;
            break;
        }
        tokens_done += gb_tokens;
        double dt = now_s() - t0;
        step_metrics sm = {
            .step = step + 1, .steps = tc->steps, .loss = loss, .lr = lr, .grad_norm = gnorm,
            .tokens_per_s = (double)gb_tokens / dt, .ms_per_step = 1e3 * dt,
            .mfu = peak > 0 ? flops_per_token * (double)gb_tokens / dt / peak : 0.0,
            .elapsed_s = now_s() - t_start, .tokens = tokens_done, .skipped = skipped,
            .comm_bytes = (double)(grid_bytes_sent(&grid) - bytes0)};
        if (lead) {
            metrics_write_step(metrics, &sm);
            if ((step + 1) % tc->log_every == 0 || step == 0 || step + 1 == tc->steps)
                metrics_print_progress(stdout, &sm);
        }

        int last = step + 1 == tc->steps;
        if (have_val && tc->eval_every > 0 && ((step + 1) % tc->eval_every == 0 || last)) {
            long long vt = 0;
            double vl = evaluate(&m, &val_data, &grid, eval_windows, B, T, batch, inp, tgt, &vt);
            if (lead) {
                metrics_write_eval(metrics, step + 1, vl, vt);
                printf("step %ld | val_loss %.4f over %lld tokens\n", step + 1, vl, vt);
            }
        }
        if (lead && tc->sample_every > 0 && ((step + 1) % tc->sample_every == 0 || last))
            print_sample(&smp, &m, tok, tc->sample_tokens, &sample_rng);
    }
    if (rc == 0 && lead && cfg.run.final_weights[0] != '\0')
        rc = write_final_weights(&m, cfg.run.final_weights);
    rc = agree_rc(&grid, rc);
    if (rc == 0 && g_stop_signal) {
        // Exit 75 is the "stopped on request" contract of DESIGN.md; until checkpoints
        // exist, running the command again starts the run over.
        if (lead)
            printf("anvil: stopped by signal %d after step %ld (no checkpoint yet: running "
                   "the same command again starts over)\n", (int)g_stop_signal, step);
        rc = EXIT_STOPPED;
    } else if (rc == 0 && lead) {
        char el[32];
        printf("done: %ld steps, %lld tokens in %s\n", step, tokens_done,
               metrics_format_duration(now_s() - t_start, el, sizeof el));
    }
    if (metrics) fclose(metrics);
out_buffers:
    free(batch);
    free(inp);
    free(tgt);
    sampler_free(&smp);
out_opt:
    be->free(grad_shard);
    optimizer_free(&opt);
out_model:
    model_free(&m);
out_val_data:
    if (have_val) loader_free(&val_data);
out_train_data:
    loader_free(&train_data);
out_grid:
    parallel_grid_free(&grid);
out_tokenizer:
    tokenizer_free(tok);
    return rc;
}
