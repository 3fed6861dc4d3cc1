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
#include <unistd.h>

#include "data/data.h"
#include "kernels/ops.h"
#include "trainer/config.h"
#include "trainer/metrics.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"
#include "trainer/rng.h"
#include "trainer/profile.h"
#include "trainer/sample.h"
#include "trainer/train_internal.h"

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

// Keep the records of metrics.jsonl up to step `upto` (a resumed run logs the later
// steps again), through a temporary file and a rename. Returns 0, or 2 after printing.
static int trim_metrics(const char *path, long upto) {
    FILE *in = fopen(path, "r");
    if (!in) return errno == ENOENT ? 0 : 2;
    char tmp[CONFIG_STR + 80];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    char line[4096];
    int rc = out ? 0 : 2;
    while (rc == 0 && fgets(line, sizeof line, in)) {
        long step = -1;
        if (sscanf(line, "{\"step\": %ld", &step) == 1 && step <= upto) fputs(line, out);
    }
    fclose(in);
    if (out && fclose(out) != 0) rc = 2;
    if (rc == 0 && rename(tmp, path) != 0) rc = 2;
    if (rc) fprintf(stderr, "anvil: cannot rewrite '%s': %s\n", path, strerror(errno));
    return rc;
}

// Create run.dir, write the effective config into it and open metrics.jsonl (lead
// rank only): a fresh file, or after a resume from step `resumed` (>= 0) the old
// records up to that step followed by the new ones. Returns 0, or 2 after printing
// which path failed.
static int open_run_dir(const anvil_config *cfg, long resumed, FILE **metrics) {
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
    if (resumed >= 0 && trim_metrics(fpath, resumed) != 0) return 2;
    if (!(*metrics = fopen(fpath, resumed >= 0 ? "a" : "w"))) {
        fprintf(stderr, "anvil: cannot open '%s': %s\n", fpath, strerror(errno));
        return 2;
    }
    return 0;
}

// The effective config as YAML text (malloc'ed), for the checkpoint; NULL if out of
// memory.
static char *config_text(const anvil_config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    int bad = config_write_yaml(cfg, f) != 0;
    if (fclose(f) != 0 || bad) {
        free(buf);
        return NULL;
    }
    return buf;
}

int train_agree_rc(parallel_grid *g, int rc) {
    if (g->world_g->be->all_reduce(g->world_g, &rc, 1, COMM_DTYPE_I32, COMM_OP_MAX)) return 1;
    return rc;
}

// Bytes this rank has sent over all its groups.
static uint64_t grid_bytes_sent(const parallel_grid *g) {
    return g->world_g->bytes_sent + g->dp_g->bytes_sent + g->tp_g->bytes_sent +
           g->pp_g->bytes_sent;
}

// Test hooks, read from the environment once before the loop (docs/checkpoint.md):
// ANVIL_TEST_STOP_AFTER_STEP=K behaves as if a stop signal came during step K (every
// rank reads the same environment); ANVIL_TEST_HANG_AT_STEP=K makes the last rank hang
// in step K (the watchdog test); ANVIL_TEST_NAN_BATCHES="3,4,5" poisons the gradient
// computed from those global batches (1-based: batch k is data positions
// [(k-1)G, kG)) on world rank 0, to exercise the skip and the rollback;
// ANVIL_TEST_POISON_SCRATCH=1 fills what train_between_steps lends with NaN after every
// step.
typedef struct test_hooks {
    long stop_after, hang_at;   // 0: none
    const char *nan_batches;    // NULL: none
    int poison_scratch;         // 1: ANVIL_TEST_POISON_SCRATCH=1
} test_hooks;

static test_hooks test_hooks_read(void) {
    const char *stop = getenv("ANVIL_TEST_STOP_AFTER_STEP");
    const char *hang = getenv("ANVIL_TEST_HANG_AT_STEP");
    const char *poison = getenv("ANVIL_TEST_POISON_SCRATCH");
    test_hooks h = {stop ? atol(stop) : 0, hang ? atol(hang) : 0,
                    getenv("ANVIL_TEST_NAN_BATCHES"), poison && strcmp(poison, "1") == 0};
    return h;
}

static int test_nan_batch(const test_hooks *h, long batch) {
    const char *s = h->nan_batches;
    while (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) return 0;
        if (v == batch) return 1;
        s = *end == ',' ? end + 1 : end;
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

// run.profile_step: every rank's table to run.dir/profile_step<N>_rank<R>.txt, rank 0's
// also on stdout. Not collective.
static void write_profile(const anvil_config *cfg, const parallel_grid *g,
                          const anv_backend *be, long step, int lead) {
    char path[CONFIG_STR + 64], title[128];
    snprintf(path, sizeof path, "%s/profile_step%ld_rank%d.txt", cfg->run.dir, step, g->rank);
    snprintf(title, sizeof title, "profile of step %ld, rank %d of %d (%s)", step, g->rank,
             g->world, be->name);
    FILE *f = fopen(path, "w");
    if (!f) fprintf(stderr, "anvil: run.profile_step: cannot write '%s'\n", path);
    profile_end(f ? f : stderr, lead ? stdout : NULL, title);
    if (f && fclose(f) != 0) fprintf(stderr, "anvil: run.profile_step: writing '%s' failed\n", path);
}

// ---- the step's passes, as the pipeline schedule drives them ------------------------

// What the schedule's callbacks need: the model and this rank's micro-batches.
typedef struct step_ctx {
    model *m;
    const int32_t *windows;     // (n, T+1) this rank's windows, micro-batch i at i*B
    int B, T;
    long n_windows;             // windows available (the last micro-batch may be short)
    int32_t *inp, *tgt;         // (B,T) host scratch
    float dloss;
    double loss_sum;            // summed token losses (last stage) ...
    double n_tokens;            // ... over this many tokens
    const model_grad_hook *last_hook;   // set on the model for the step's last backward
} step_ctx;

static int micro_rows(const step_ctx *c, int micro) {
    long left = c->n_windows - (long)micro * c->B;
    return (int)(left < c->B ? left : c->B);
}

static void step_forward(void *ctx, int micro, int slot) {
    step_ctx *c = ctx;
    const int b = micro_rows(c, micro);
    split_windows(c->windows + (size_t)micro * c->B * (c->T + 1), b, c->T, c->inp, c->tgt);
    c->loss_sum += model_forward_slot(c->m, slot, c->inp, c->tgt, b, c->T, c->dloss);
    c->n_tokens += (double)b * c->T;
}

static void step_backward(void *ctx, int micro, int slot) {
    step_ctx *c = ctx;
    // the last micro-batch completes each layer's gradient as its backward goes down
    const long n_micro = (c->n_windows + c->B - 1) / c->B;
    c->m->grad_hook = micro == n_micro - 1 ? c->last_hook : NULL;
    model_backward_slot(c->m, slot, c->dloss);
    c->m->grad_hook = NULL;
}

// ---- data-parallel gradient reduction overlapped with the backward -------------------
//
// During the step's last backward the model reports each layer's gradients complete
// (model_grad_hook, layers from the last down); consecutive layers are gathered into
// buckets of at least parallel.bucket_mb and each bucket's all-reduce is started on
// the dp group's own stream (NCCL) while the backward goes on. What no layer covers
// (embeddings, final norm, head) is reduced after the backward, then the compute
// stream waits for every reduction before the optimizer reads a gradient. On the MPI
// backend a started reduction completes at once, in the same order.
typedef struct dp_overlap {
    comm_group *dp;
    float *grads;               // the flat fp32 gradient buffer
    size_t n;                   // its length
    size_t bucket;              // elements per bucket
    size_t lo, hi;              // layers reported but not started: [lo, hi)
    size_t done_lo, done_hi;    // started so far: [done_lo, done_hi) (empty: lo > hi)
    int err;
} dp_overlap;

static void dp_overlap_flush(dp_overlap *o) {
    if (o->hi <= o->lo) return;
    o->err |= o->dp->be->all_reduce_start(o->dp, o->grads + o->lo, o->hi - o->lo,
                                          COMM_DTYPE_F32, COMM_OP_SUM);
    if (o->done_lo > o->done_hi) o->done_lo = o->lo, o->done_hi = o->hi;
    o->done_lo = o->lo < o->done_lo ? o->lo : o->done_lo;
    o->done_hi = o->hi > o->done_hi ? o->hi : o->done_hi;
    o->lo = o->hi = 0;
}

static void dp_grads_ready(void *ctx, size_t off, size_t n) {
    dp_overlap *o = ctx;
    if (o->hi > o->lo && off + n != o->lo) dp_overlap_flush(o);   // not adjacent
    if (o->hi > o->lo)
        o->lo = off;
    else
        o->lo = off, o->hi = off + n;
    if (o->hi - o->lo >= o->bucket) dp_overlap_flush(o);
}

static void dp_overlap_begin(dp_overlap *o) {
    o->lo = o->hi = 0;
    o->done_lo = 1, o->done_hi = 0;
    o->err = 0;
}

// After the backward: the last bucket, what no layer covered, then wait. Returns 0 or
// -1 (a communication error, printed).
static int dp_overlap_finish(dp_overlap *o) {
    dp_overlap_flush(o);
    const comm_backend *be = o->dp->be;
    if (o->done_lo > o->done_hi) {
        o->err |= be->all_reduce_start(o->dp, o->grads, o->n, COMM_DTYPE_F32, COMM_OP_SUM);
    } else {
        if (o->done_lo > 0)
            o->err |= be->all_reduce_start(o->dp, o->grads, o->done_lo, COMM_DTYPE_F32,
                                           COMM_OP_SUM);
        if (o->done_hi < o->n)
            o->err |= be->all_reduce_start(o->dp, o->grads + o->done_hi, o->n - o->done_hi,
                                           COMM_DTYPE_F32, COMM_OP_SUM);
    }
    o->err |= be->wait(o->dp);
    return o->err ? -1 : 0;
}

static void *step_input(void *ctx, int slot) { return model_slot_input(((step_ctx *)ctx)->m, slot); }
static void *step_output(void *ctx, int slot) { return model_slot_output(((step_ctx *)ctx)->m, slot); }
static void *step_grad(void *ctx) { return model_input_grad(((step_ctx *)ctx)->m); }

// The communicator type of the backend's activations.
static comm_dtype act_comm_dtype(const anv_backend *be) {
    return be->act_dtype == ANV_DTYPE_BF16 ? COMM_DTYPE_BF16 : COMM_DTYPE_F32;
}

static pipeline_stage stage_of(step_ctx *c, int n_slots) {
    pipeline_stage st = {c, n_slots, (size_t)c->B * c->T * c->m->C, act_comm_dtype(c->m->be),
                         step_forward, step_backward, step_input, step_output, step_grad};
    return st;
}

// The sum of x over one model replica's ranks, counted once: the last stage's tp rank
// 0 of dp replica `dp_rank` contributes (the others pass 0), summed over the world.
// With all_dp, every dp replica's contribution is summed. Returns 0 or -1.
static int sum_from_last_stage(parallel_grid *g, double *x, int n, int all_dp) {
    const int mine = g->pp_rank == g->pp - 1 && g->tp_rank == 0 && (all_dp || g->dp_rank == 0);
    if (!mine)
        for (int i = 0; i < n; i++) x[i] = 0.0;
    return g->world_g->be->all_reduce(g->world_g, x, (size_t)n, COMM_DTYPE_F64, COMM_OP_SUM);
}

// Mean validation loss over the first n_windows windows of the val loader (the same
// windows every time, so evaluations are comparable), split over the dp ranks in
// chunks of B windows (chunk c to dp rank c % dp), each chunk through the pipeline.
// win is (B, T+1) host scratch. Collective over the world.
static double evaluate(model *m, loader *val, parallel_grid *g, long n_windows, int B, int T,
                       int32_t *win, int32_t *inp, int32_t *tgt, long long *n_tokens) {
    step_ctx c = {m, win, B, T, 0, inp, tgt, 0.0f, 0.0, 0.0, NULL};
    pipeline_stage st = stage_of(&c, 1);
    int bad = 0;
    for (long w = (long)g->dp_rank * B; w < n_windows; w += (long)B * g->dp) {
        c.n_windows = n_windows - w < B ? n_windows - w : B;
        if (loader_fill(val, (uint64_t)w, (int)c.n_windows, win) != 0) bad = 1;
        if (bad || pipeline_forward_only(g->pp_g, 1, &st) != 0) {
            bad = 1;   // a data error; the val shards were checked at open, so rare
            break;
        }
    }
    double acc[3] = {c.loss_sum, c.n_tokens, 0.0};
    if (sum_from_last_stage(g, acc, 2, 1) != 0) bad = 1;
    // every rank learns whether any failed (the sums above are then meaningless)
    acc[2] = bad;
    g->world_g->be->all_reduce(g->world_g, &acc[2], 1, COMM_DTYPE_F64, COMM_OP_MAX);
    *n_tokens = (long long)acc[1];
    return acc[2] == 0 && acc[1] > 0 ? acc[0] / acc[1] : NAN;
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

// ---- setup ------------------------------------------------------------------------

// Errors every rank hits alike (a bad key, a missing file) would print once per rank:
// between quiet_begin and quiet_end the ranks other than world rank 0 write stderr to
// a temporary file, and quiet_end prints it only when rank 0 did not fail (then the
// problem is this rank's own, e.g. a file missing on its node). Collective over
// MPI_COMM_WORLD; every rank must reach quiet_end.
typedef struct rank_quiet {
    int rank;
    int saved_fd;        // the real stderr, or -1 when not capturing
    FILE *tmp;
} rank_quiet;

static void quiet_begin(rank_quiet *q) {
    MPI_Comm_rank(MPI_COMM_WORLD, &q->rank);
    q->saved_fd = -1;
    q->tmp = NULL;
    if (q->rank == 0 || !(q->tmp = tmpfile())) return;
    fflush(stderr);
    q->saved_fd = dup(2);
    if (q->saved_fd < 0 || dup2(fileno(q->tmp), 2) < 0) {
        if (q->saved_fd >= 0) close(q->saved_fd);
        q->saved_fd = -1;
    }
}

// Returns the largest rc of any rank (all ranks return the same).
static int quiet_end(rank_quiet *q, int rc) {
    if (q->saved_fd >= 0) {
        fflush(stderr);
        dup2(q->saved_fd, 2);
        close(q->saved_fd);
    }
    int v[2] = {rc, q->rank == 0 ? rc : 0}, out[2] = {1, 1};
    if (MPI_Allreduce(v, out, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS) out[0] = 1;
    if (q->tmp) {
        if (rc != 0 && out[1] == 0) {   // this rank's own problem: show it
            char buf[4096];
            size_t n;
            rewind(q->tmp);
            while ((n = fread(buf, 1, sizeof buf, q->tmp)) > 0) fwrite(buf, 1, n, stderr);
            fflush(stderr);
        }
        fclose(q->tmp);
    }
    return out[0];
}

// Everything before the process grid: the config, the device, the tokenizer, the
// model's shape, the batch. Sets *G (samples per global batch). Returns 0 or an exit
// code after printing.
static int setup(int argc, char **argv, anvil_config *cfg, tokenizer **tok, int *G) {
    int first = 0;
    const char *path = split_args(argc, argv, &first);
    int rc = config_load(cfg, path, argc - first, argv + first);
    if (rc != 0) return rc;
    model_config mc = cfg->model;
    // The tokenizer (data.tokenizer) decodes samples, and gives the vocabulary size
    // when neither the config nor a preset sets model.vocab_size.
    if (cfg->data.tokenizer[0] != '\0') {
        if ((rc = tokenizer_load(tok, cfg->data.tokenizer)) != 0) return rc;
        if (mc.vocab_size == 0) mc.vocab_size = (int)tokenizer_vocab_size(*tok);
        if (tokenizer_vocab_size(*tok) > (uint32_t)mc.vocab_size) {
            fprintf(stderr, "anvil: model.vocab_size (%d) is smaller than the vocabulary of "
                    "data.tokenizer '%s' (%u)\n", mc.vocab_size, cfg->data.tokenizer,
                    tokenizer_vocab_size(*tok));
            return 2;
        }
    }
    if ((rc = model_config_resolve(&mc)) != 0) return rc;
    cfg->model = mc;   // the effective config records the resolved shape
    const int B = cfg->train.micro_batch, T = cfg->train.seq_len;
    long long gb_tokens = cfg->train.global_batch_tokens > 0 ? cfg->train.global_batch_tokens
                                                             : (long long)B * T;
    if (gb_tokens % ((long long)B * T) != 0) {
        fprintf(stderr, "anvil: train.global_batch_tokens (%lld) is not a multiple of "
                "train.micro_batch x train.seq_len (%d x %d = %d)\n", gb_tokens, B, T, B * T);
        return 2;
    }
    *G = (int)(gb_tokens / T);
    if (cfg->train.matmul_algo == MATMUL_ALGO_TIMED && cfg->train.deterministic) {
        fprintf(stderr, "anvil: train.matmul_algo=timed conflicts with train.deterministic="
                "true: timing may pick other algorithms run to run, which round differently "
                "(use auto or heuristic)\n");
        return 2;
    }
    return 0;
}

// train_main and plan_main: plan_only stops after the memory plan (no data, no NCCL,
// no watchdog, nothing allocated on the device).
static int train_or_plan(int argc, char **argv, int plan_only) {
    // From the first moment: a stop signal during setup, evaluation or the first steps
    // is honoured at the next step boundary (checkpoint, then exit 75).
    if (!plan_only) install_stop_handlers();
    int rc = 0, G = 0;
    anvil_config cfg;
    tokenizer *tok = NULL;
    // Every rank reads the same config and files: only rank 0 prints what is wrong.
    rank_quiet q;
    quiet_begin(&q);
    rc = quiet_end(&q, setup(argc, argv, &cfg, &tok, &G));
    if (rc != 0) {
        tokenizer_free(tok);
        return rc;
    }
    const anv_backend *be = train_select_backend(cfg.device);
    if (!be) {   // the cuda backend has printed why (one line)
        tokenizer_free(tok);
        return 2;
    }
    if (cfg.train.deterministic && be->set_deterministic) be->set_deterministic(1);
    if (cfg.run.profile_step > 0 && !plan_only) be = profile_wrap(be);   // times step N's ops
    model_config mc = cfg.model;
    const train_config *tc = &cfg.train;
    const int B = tc->micro_batch, T = tc->seq_len;
    const long long gb_tokens = (long long)G * T;

    // ---- the process grid: dp x tp x pp over the MPI world -------------------------
    parallel_grid grid;
    if ((rc = parallel_grid_init(&grid, &cfg.parallel, mc.n_head, mc.n_kv_head, G, B)) != 0)
        goto out_tokenizer;
    if (!plan_only &&
        (rc = train_agree_rc(&grid, watchdog_start(cfg.run.watchdog_s, grid.rank))) != 0)
        goto out_grid;
    // device buffers move over NCCL: the dp, tp and pp groups become NCCL communicators
    if (!plan_only && !be->host_memory &&
        (rc = train_agree_rc(&grid, parallel_grid_use_nccl(&grid))) != 0)
        goto out_grid;
    const int lead = grid.rank == 0;           // the rank that prints and writes files
    const int Gr = G / grid.dp;                // samples of each global batch on this rank
    const int accum = Gr / B;                  // micro-batches per step on this rank
    // The model's side of the layout: MLP channels split over tp (heads were checked
    // with the grid), this stage's layers. Every rank checks alike; the lead prints.
    int layer0 = 0, n_layers = 0;
    if (mc.ffn_dim % grid.tp != 0) {
        if (lead)
            fprintf(stderr, "anvil: parallel layout does not fit the model: model.ffn_dim %d "
                    "is not divisible by tp %d\n", mc.ffn_dim, grid.tp);
        rc = 2;
        goto out_grid;
    }
    if ((rc = pipeline_split_layers(cfg.parallel.pp_layers, mc.n_layer, grid.pp, grid.pp_rank,
                                    lead, &layer0, &n_layers)) != 0)
        goto out_grid;
    // what this rank will allocate: printed, and refused when it cannot fit the device
    const int zero = cfg.parallel.zero && grid.dp > 1;
    const model_shard shard_of_rank = {
        .tp = grid.tp, .tp_rank = grid.tp_rank, .layer0 = layer0, .n_layer = n_layers,
        .first = grid.pp_rank == 0, .last = grid.pp_rank == grid.pp - 1,
        .n_slots = pipeline_slots(grid.pp, grid.pp_rank, accum), .n_shards = zero ? grid.dp : 1,
        .recompute = tc->recompute};
    if ((rc = train_memory_plan(&grid, &mc, be, B, T, &shard_of_rank, zero, lead)) != 0 ||
        plan_only)
        goto out_grid;

    // ---- data ----------------------------------------------------------------
    loader train_data, val_data;
    int have_val = 0;
    memset(&val_data, 0, sizeof val_data);
    quiet_begin(&q);
    rc = loader_init(&train_data, cfg.data.train, "data.train", T,
                     cfg.data.order == DATA_ORDER_RANDOM, tc->seed, (uint32_t)mc.vocab_size);
    if ((rc = quiet_end(&q, rc)) != 0) goto out_train_data;
    long eval_windows = tc->eval_tokens / T > 0 ? tc->eval_tokens / T : 1;
    if (cfg.data.val[0] != '\0') {
        quiet_begin(&q);
        rc = loader_init(&val_data, cfg.data.val, "data.val", T, 0, tc->seed,
                         (uint32_t)mc.vocab_size);
        have_val = rc == 0;
        if ((rc = quiet_end(&q, rc)) != 0) goto out_val_data;
        if ((uint64_t)eval_windows > val_data.n_samples) eval_windows = (long)val_data.n_samples;
    }

    // ---- model, optimizer, buffers: everything the loop needs, allocated once ------
    model m;
    optimizer opt;
    sampler smp;
    memset(&m, 0, sizeof m);
    memset(&opt, 0, sizeof opt);
    memset(&smp, 0, sizeof smp);
    float *grad_shard = NULL, *tied_peer = NULL;
    int32_t *batch = NULL, *inp = NULL, *tgt = NULL;
    char *config_yaml = NULL;
    float *ck_staging[3] = {NULL, NULL, NULL};   // host copies for async saves
    tp_ctx tpc = {grid.tp_g, act_comm_dtype(be)};
    const model_tp_comm tp_comm = {&tpc, tp_all_reduce_sum, tp_all_gather};
    rc = model_init(&m, &mc, be, B, T, &shard_of_rank);
    if (rc == 0) rc = model_init_weights(&m, tc->seed);
    if ((rc = train_agree_rc(&grid, rc)) != 0) goto out_model;
    m.tp_comm = &tp_comm;
    // ZeRO-1: this rank keeps AdamW state for one dp-th of the flat buffer and receives
    // that shard's summed gradient by reduce-scatter; without it, the whole buffer.
    const size_t shard = m.n_alloc / (size_t)grid.dp;
    const size_t lo = zero ? (size_t)grid.dp_rank * shard : 0;
    const size_t hi = zero ? lo + shard : m.n_alloc;
    // Tied embeddings over a pipeline: the first stage's wte (embedding) and the last
    // stage's copy (head) exchange gradients each step; both then hold the same sum.
    const param_tensor *wte_t = NULL;
    for (int i = 0; i < m.n_tensors; i++)
        if (strcmp(m.tensors[i].name, "wte") == 0) wte_t = &m.tensors[i];
    const int tied_pp = grid.pp > 1 && mc.tie_embeddings && wte_t;
    const int tied_peer_rank = grid.pp_rank == 0 ? grid.pp - 1 : 0;
    rc = optimizer_init(&opt, &cfg.optim, &m, lo, hi);
    if (rc == 0 && zero && !(grad_shard = be->alloc(shard * sizeof(float)))) rc = 1;
    if (rc == 0 && tied_pp && !(tied_peer = be->alloc(wte_t->numel * sizeof(float)))) rc = 1;
    // samples need the whole model on this rank (tp 1, pp 1); anvil sample comes with
    // checkpoints
    const int can_sample = grid.tp == 1 && grid.pp == 1;
    if (rc == 0 && can_sample) rc = sampler_init(&smp, &m, 1.0f, 0, 1.0f);
    if (rc == 0) {
        batch = malloc((size_t)Gr * (T + 1) * sizeof(int32_t));  // (Gr, T+1)
        inp = malloc((size_t)B * T * sizeof(int32_t));           // (B, T)
        tgt = malloc((size_t)B * T * sizeof(int32_t));           // (B, T)
        if (!batch || !inp || !tgt) rc = 1;
    }
    if (rc == 1) fprintf(stderr, "anvil: out of memory allocating optimizer and batch buffers\n");
    if ((rc = train_agree_rc(&grid, rc)) != 0) goto out_buffers;

    // ---- resume (checkpoint.resume), then the run directory ------------------------
    train_state ts = {0, 0, 0, 0, rng_stream(tc->seed, "sample"), 0};
    train_save *pending_save = NULL;
    FILE *metrics = NULL;
    config_yaml = config_text(&cfg);
    if ((rc = train_agree_rc(&grid, config_yaml ? 0 : 1)) != 0) goto out_buffers;
    const train_ckpt ck = {&cfg, &m, &opt, &grid, zero, config_yaml, &pending_save, &metrics,
                           ck_staging};
    long resumed = -1;
    if ((rc = train_checkpoint_resume(&ck, cfg.checkpoint.resume, 0, &ts, &resumed)) != 0)
        goto out_buffers;
    if (lead) rc = open_run_dir(&cfg, resumed, &metrics);
    if ((rc = train_agree_rc(&grid, rc)) != 0) goto out_buffers;

    // global figures: each replica rank's share, summed (model.h)
    double global[2] = {(double)model_num_params(&m), model_flops_per_token(&m, T)};
    if (grid.dp_rank != 0) global[0] = global[1] = 0.0;
    if (grid.world_g->be->all_reduce(grid.world_g, global, 2, COMM_DTYPE_F64, COMM_OP_SUM)) {
        rc = 1;
        goto out_metrics;
    }
    const double flops_per_token = global[1];
    const double dev_peak = be->peak_flops ? be->peak_flops() : 0.0;
    const double peak = (tc->peak_flops > 0 ? tc->peak_flops
                         : dev_peak > 0     ? dev_peak
                                            : estimate_cpu_peak_flops()) *
                        grid.world;
    if (lead) {
        printf("anvil %s | device %s, %d threads/rank | %s model: %d layers, d_model %d, %d "
               "heads (%d kv), ffn %d, vocab %d | %.2fM parameters\n",
               "train", be->name, omp_get_max_threads(),
               mc.family == MODEL_FAMILY_GPT2 ? "gpt2" : "llama", mc.n_layer, mc.d_model,
               mc.n_head, mc.n_kv_head, mc.ffn_dim, mc.vocab_size, global[0] / 1e6);
        printf("layout dp=%d tp=%d pp=%d zero=%d (%d rank%s) | batch: %d x %d tokens = %d per "
               "dp rank in %d micro-batches of %d -> %lld tokens/step | train data: %llu "
               "windows in %d shard(s)%s | run.dir %s\n",
               grid.dp, grid.tp, grid.pp, zero, grid.world, grid.world == 1 ? "" : "s", G, T,
               Gr, accum, B, gb_tokens, (unsigned long long)train_data.n_samples,
               train_data.n_shards, have_val ? ", validation on" : "", cfg.run.dir);
        if (grid.pp > 1) {
            printf("pipeline: 1F1B over %d stages, layers per stage:", grid.pp);
            for (int s = 0; s < grid.pp; s++) {
                int a, n;
                pipeline_split_layers(cfg.parallel.pp_layers, mc.n_layer, grid.pp, s, 0, &a, &n);
                printf(" %d", n);
            }
            printf("\n");
        }
        if (tc->sample_every > 0 && !can_sample)
            printf("note: samples during training need tp=1 and pp=1; none will be printed\n");
        fflush(stdout);
    }

    uint64_t sample_rng = ts.sample_rng;
    long skipped = ts.skipped;
    long long tokens_done = ts.tokens;
    long step0 = ts.step;                      // the step samples0 belongs to: where this
    unsigned long long samples0 = (unsigned long long)ts.samples;   // process (or a
                                               // rollback) started
    int bad_in_row = 0;                        // non-finite steps in a row
    long saved = resumed;                      // the step of the last checkpoint on disk
    if (lead && step0 >= tc->steps)
        printf("the checkpoint is at step %ld, train.steps is %ld: nothing left to train "
               "(raise train.steps to continue, or checkpoint.resume=none to start over)\n",
               step0, tc->steps);
    const double t_start = now_s();
    // the dp gradient all-reduce, bucketed and started during the last backward
    dp_overlap ovl = {grid.dp_g, m.grads, m.n_alloc,
                      (size_t)((double)cfg.parallel.bucket_mb * (1 << 20) / sizeof(float)),
                      0, 0, 1, 0, 0};
    const model_grad_hook dp_hook = {&ovl, dp_grads_ready};
    const int overlap = !zero && grid.dp > 1 && cfg.parallel.bucket_mb > 0;
    step_ctx sc = {&m, batch, B, T, Gr, inp, tgt, 1.0f / (float)((double)G * T), 0.0, 0.0,
                   overlap ? &dp_hook : NULL};
    const pipeline_stage stage = stage_of(&sc, shard_of_rank.n_slots);
    const test_hooks hooks = test_hooks_read();
    int tuned = 0;                    // train.matmul_algo has timed (train_between_steps)
    long step;
    for (step = step0; step < tc->steps; step++) {
        watchdog_beat("in a training step");
        if (hooks.hang_at == step + 1 && grid.rank == grid.world - 1)
            for (;;) pause();
        const int profiled = step + 1 == cfg.run.profile_step;
        if (profiled) profile_begin();   // makes its stamps before the step's clock starts
        double t0 = now_s();
        uint64_t bytes0 = grid_bytes_sent(&grid);
        // This rank's part of the step's global batch: G samples from the data position
        // (samples consumed so far, whatever layout consumed them), dp rank r's Gr of
        // them from position + r*Gr.
        const unsigned long long pos = samples0 + (unsigned long long)(step - step0) * G;
        rc = loader_fill(&train_data, pos + (uint64_t)grid.dp_rank * Gr, Gr, batch);
        // Every rank must take the same branch: stop on a signal any rank got (or a bad
        // batch any rank read) together, never leaving the others waiting.
        // (and whether any rank is still writing its part of an async checkpoint)
        int flags[3] = {rc, (int)g_stop_signal, !train_checkpoint_write_done(&ck)};
        if (grid.world_g->be->all_reduce(grid.world_g, flags, 3, COMM_DTYPE_I32, COMM_OP_MAX)) {
            rc = 1;
            break;
        }
        if (pending_save && flags[2] == 0) {   // every rank's write is done: commit
            watchdog_beat("committing a checkpoint");
            if ((rc = train_checkpoint_poll(&ck, 1, 0)) != 0) break;
        }
        if (flags[0] != 0) {
            rc = flags[0];
            break;
        }
        if (flags[1] != 0) {
            if (!g_stop_signal) g_stop_signal = flags[1];
            break;
        }
        // forward and backward of every micro-batch, in the 1F1B order over the stages
        model_zero_grad(&m);
        sc.loss_sum = sc.n_tokens = 0.0;
        dp_overlap_begin(&ovl);
        int crc = pipeline_train_1f1b(grid.pp_g, accum, &stage);
        if (lead && test_nan_batch(&hooks, (long)(pos / (unsigned long long)G) + 1)) {
            float nan = NAN;
            be->copy_from_host(m.grads, &nan, sizeof nan);
        }
        // tied embeddings over a pipeline: first and last stage add each other's
        // gradient (a + b == b + a bit for bit, so both keep identical weights)
        if (tied_pp && (grid.pp_rank == 0 || grid.pp_rank == grid.pp - 1)) {
            float *gw = m.grads + wte_t->offset;
            crc |= grid.pp_g->be->sendrecv(grid.pp_g, gw, wte_t->numel, tied_peer_rank,
                                           tied_peer, wte_t->numel, tied_peer_rank,
                                           COMM_DTYPE_F32);
            be->add_f32(gw, tied_peer, wte_t->numel);
        }
        // Gradients: every rank summed dloss-weighted gradients of its Gr samples; the
        // sum over dp is the gradient of the global batch's mean loss.
        const float *grads = m.grads;
        comm_group *dpg = grid.dp_g;
        if (zero) {
            crc |= dpg->be->reduce_scatter(dpg, m.grads, grad_shard, shard, COMM_DTYPE_F32,
                                           COMM_OP_SUM);
            grads = grad_shard;
        } else if (overlap) {
            crc |= dp_overlap_finish(&ovl);
        } else {
            crc |= dpg->be->all_reduce(dpg, m.grads, m.n_alloc, COMM_DTYPE_F32, COMM_OP_SUM);
        }
        // the global norm: every parameter counted once over the replica's tp shards
        // and stages (and the dp shards under ZeRO-1), then summed over the world
        double red[2] = {optimizer_grad_sumsq(&opt, &m, grads), 0.0};
        if (!zero && grid.dp_rank != 0) red[0] = 0.0;
        crc |= grid.world_g->be->all_reduce(grid.world_g, red, 1, COMM_DTYPE_F64, COMM_OP_SUM);
        red[1] = sc.loss_sum;
        crc |= sum_from_last_stage(&grid, &red[1], 1, 1);
        double loss = red[1] / ((double)G * T);
        float gnorm = (float)sqrt(red[0]);
        float lr = lr_at(tc, step);
        if (isfinite(loss) && isfinite(gnorm)) {
            optimizer_step(&opt, &m, grads, lr, gnorm);
            if (zero)   // every rank gets every shard's updated parameters
                crc |= dpg->be->all_gather(dpg, (char *)m.params + lo * be->act_bytes,
                                           m.params, shard, act_comm_dtype(be));
            bad_in_row = 0;
        } else {
            skipped++;
            bad_in_row++;
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
            .samples = (long long)(pos + (unsigned long long)G),
            .comm_bytes = (double)(grid_bytes_sent(&grid) - bytes0)};
        if (lead) {
            metrics_write_step(metrics, &sm);
            if ((step + 1) % tc->log_every == 0 || step == 0 || step + 1 == tc->steps)
                metrics_print_progress(stdout, &sm);
        }
        if (profiled) write_profile(&cfg, &grid, be, step + 1, lead);
        train_between_steps(&m, be, tc, cfg.run.dir, grid.rank, lead, hooks.poison_scratch,
                            &tuned);

        // Too many non-finite steps in a row: back to the last checkpoint, and on from
        // the data after the offending batches (not the same batches again).
        if (cfg.checkpoint.rollback_after > 0 && bad_in_row >= cfg.checkpoint.rollback_after) {
            watchdog_beat("rolling back to a checkpoint");
            if ((rc = train_checkpoint_poll(&ck, 0, 1)) != 0) break;
            train_state back = ts;
            long back_step = -1;
            if ((rc = train_checkpoint_resume(&ck, "auto", 1, &back, &back_step)) != 0) break;
            if (back_step >= 0) {
                if (lead) {
                    fprintf(stderr, "anvil: %d non-finite steps in a row: rolled back to step "
                            "%ld, continuing with the data after step %ld's batch\n",
                            bad_in_row, back.step, step + 1);
                    metrics_write_rollback(metrics, step + 1, back.step);
                }
                samples0 = pos + (unsigned long long)G;
                step0 = back.step;
                tokens_done = back.tokens;
                sample_rng = back.sample_rng;
                saved = back.step;
                bad_in_row = 0;
                step = back.step - 1;   // the loop's step++ makes it back.step
                continue;
            }
            if (lead && bad_in_row == cfg.checkpoint.rollback_after)
                fprintf(stderr, "anvil: %d non-finite steps in a row and no checkpoint to roll "
                        "back to: skipping on\n", bad_in_row);
        }

        int last = step + 1 == tc->steps;
        if (have_val && tc->eval_every > 0 && ((step + 1) % tc->eval_every == 0 || last)) {
            long long vt = 0;
            watchdog_beat("evaluating");
            double vl = evaluate(&m, &val_data, &grid, eval_windows, B, T, batch, inp, tgt, &vt);
            if (lead) {
                metrics_write_eval(metrics, step + 1, vl, vt);
                printf("step %ld | val_loss %.4f over %lld tokens\n", step + 1, vl, vt);
            }
        }
        if (lead && can_sample && tc->sample_every > 0 &&
            ((step + 1) % tc->sample_every == 0 || last))
            print_sample(&smp, &m, tok, tc->sample_tokens, &sample_rng);
        if (hooks.stop_after == step + 1 && !g_stop_signal) g_stop_signal = SIGUSR1;
        if (cfg.checkpoint.every > 0 && (step + 1) % cfg.checkpoint.every == 0 && !last) {
            train_state now = {step + 1, tokens_done, (long long)(pos + G), skipped, sample_rng,
                               0};
            watchdog_beat("saving a checkpoint");
            if ((rc = train_checkpoint_save(&ck, &now, cfg.checkpoint.async)) != 0) break;
            saved = step + 1;
        }
    }
    // The state at the end, or at a stop: saved unless already on disk (a run that
    // resumes a finished checkpoint saves nothing) or, at train.steps, not wanted
    // (checkpoint.final false: benchmarks); a stop signal always saves.
    const int want_final = cfg.checkpoint.final || g_stop_signal || step < tc->steps;
    if (rc == 0 && step != saved && want_final) {
        train_state now = {step, tokens_done,
                           (long long)(samples0 + (unsigned long long)(step - step0) * G),
                           skipped, sample_rng, 0};
        watchdog_beat("saving a checkpoint");
        rc = train_checkpoint_save(&ck, &now, 0);
    } else if (rc == 0) {
        rc = train_checkpoint_poll(&ck, 0, 1);   // an async save still pending
    }
    train_checkpoint_abandon(&ck);   // after an error: wait for the writer, commit nothing
    if (rc == 0 && cfg.run.final_weights[0] != '\0')
        rc = train_write_gathered(&m, &grid, &opt, cfg.run.final_weights);
    rc = train_agree_rc(&grid, rc);
    if (rc == 0 && g_stop_signal) {
        // Exit 75 is the "stopped on request" contract of DESIGN.md: the checkpoint is
        // on disk, and running the same command again continues from it.
        if (lead)
            printf("anvil: stopped by signal %d after step %ld; checkpoint saved, run the "
                   "same command again to continue\n", (int)g_stop_signal, step);
        rc = EXIT_STOPPED;
    } else if (rc == 0 && lead) {
        char el[32];
        printf("done: %ld steps, %lld tokens in %s\n", step, tokens_done,
               metrics_format_duration(now_s() - t_start, el, sizeof el));
    }
out_metrics:
    if (metrics) fclose(metrics);
out_buffers:
    for (int k = 0; k < 3; k++) free(ck_staging[k]);
    free(config_yaml);
    free(batch);
    free(inp);
    free(tgt);
    sampler_free(&smp);
    be->free(grad_shard);
    be->free(tied_peer);
    optimizer_free(&opt);
out_model:
    model_free(&m);
out_val_data:
    if (have_val) loader_free(&val_data);
out_train_data:
    loader_free(&train_data);
out_grid:
    watchdog_stop();
    parallel_grid_free(&grid);
out_tokenizer:
    tokenizer_free(tok);
    return rc;
}

int train_main(int argc, char **argv) { return train_or_plan(argc, argv, 0); }
int plan_main(int argc, char **argv) { return train_or_plan(argc, argv, 1); }
