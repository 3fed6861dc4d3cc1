// trainer/ckpt_cli.c: `anvil ckpt info|verify PATH` and `anvil sample CKPT`.
//
// PATH is a checkpoint directory (step_NNNNNNNN), or a run's checkpoints/ directory or
// run directory, meaning its newest valid checkpoint. `sample` rebuilds the model from
// the config stored in the checkpoint, loads its parameters on one rank and generates
// text; the prompt comes from --prompt or standard input.
#include "trainer/train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/checkpoint.h"
#include "data/data.h"
#include "kernels/ops.h"
#include "trainer/rng.h"
#include "trainer/sample.h"
#include "trainer/train_internal.h"

// Resolve PATH to a verified checkpoint directory: PATH itself if it holds a MANIFEST
// (then verified here), else the newest valid checkpoint under PATH/checkpoints or
// PATH (ckpt_find_latest has verified it). Returns 0, or 2 after printing.
static int resolve_verified(const char *path, char *dir, size_t n) {
    char probe[CKPT_PATH_MAX + 16], why[1024];
    struct stat st;
    snprintf(probe, sizeof probe, "%s/MANIFEST", path);
    if (stat(probe, &st) == 0) {
        snprintf(dir, n, "%s", path);
        if (ckpt_verify(dir, why, sizeof why) == 0) return 0;
        fprintf(stderr, "anvil: checkpoint '%s': %s\n", dir, why);
        return 2;
    }
    const char *roots[2] = {"%s/checkpoints", "%s"};
    for (int i = 0; i < 2; i++) {
        char root[CKPT_PATH_MAX];
        snprintf(root, sizeof root, roots[i], path);
        long step;
        int rc = ckpt_find_latest(root, dir, n, &step);
        if (rc == 0) return 0;
        if (rc == 2) return 2;
    }
    fprintf(stderr, "anvil: '%s' is not a checkpoint and holds no valid checkpoint\n", path);
    return 2;
}

static int ckpt_verify_main(const char *path) {
    char why[1024];
    if (ckpt_verify(path, why, sizeof why) != 0) {
        fprintf(stderr, "anvil: checkpoint '%s': %s\n", path, why);
        return 2;
    }
    printf("ok: %s (every file matches its size and checksum in MANIFEST)\n", path);
    return 0;
}

static int ckpt_info_main(const char *path) {
    char dir[CKPT_PATH_MAX];
    int rc = resolve_verified(path, dir, sizeof dir);
    if (rc) return rc;
    ckpt_reader *r;
    ckpt_state st;
    if ((rc = ckpt_h5_open(&r, dir, &st)) != 0) return rc;
    printf("checkpoint %s (verified)\n", dir);
    printf("  step %ld, %lld tokens, data position %lld samples, %ld skipped steps, AdamW "
           "t %ld\n", st.step, st.tokens, st.samples, st.skipped, st.opt_t);
    printf("  written by anvil (format %d) under dp=%d tp=%d pp=%d zero=%d\n", st.format,
           st.dp, st.tp, st.pp, st.zero);
    char manifest[CKPT_PATH_MAX + 16];
    snprintf(manifest, sizeof manifest, "%s/MANIFEST", dir);
    FILE *f = fopen(manifest, "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
        char name[512];
        if (line[0] == '#' || sscanf(line, "%*64s %511s", name) != 1) continue;
        char fp[CKPT_PATH_MAX + 600];
        struct stat fs;
        snprintf(fp, sizeof fp, "%s/%s", dir, name);
        if (stat(fp, &fs) == 0) printf("  %-20s %12lld bytes\n", name, (long long)fs.st_size);
    }
    if (f) fclose(f);
    char *cfg = ckpt_h5_config(r);
    if (cfg) {
        printf("config:\n%s", cfg);
        free(cfg);
    }
    ckpt_h5_close(r);
    return 0;
}

int ckpt_main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[0], "verify") == 0) return ckpt_verify_main(argv[1]);
    if (argc == 2 && strcmp(argv[0], "info") == 0) return ckpt_info_main(argv[1]);
    fprintf(stderr, "usage: anvil ckpt info PATH | anvil ckpt verify CHECKPOINT_DIR\n");
    return 2;
}

// ---- anvil sample ---------------------------------------------------------------------

static void emit_text(int32_t id, void *ctx) {
    const tokenizer *tok = ctx;
    if (tok) {
        size_t len = 0;
        const char *b = tokenizer_token_bytes(tok, (uint32_t)id, &len);
        if (b) fwrite(b, 1, len, stdout);
    } else {
        char buf[16];
        fputs(byte_tokenizer_decode((uint32_t)id, buf), stdout);
    }
    fflush(stdout);
}

// Read all of standard input (malloc'ed, NUL-terminated), or NULL.
static char *read_stdin(void) {
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    size_t got;
    while (s && (got = fread(s + n, 1, cap - n - 1, stdin)) > 0) {
        n += got;
        if (cap - n < 2) {
            char *t = realloc(s, cap *= 2);
            if (!t) free(s);
            s = t;
        }
    }
    if (s) s[n] = '\0';
    return s;
}

int sample_main(int argc, char **argv) {
    const char *path = NULL, *prompt = NULL, *tok_path = NULL;
    float temperature = 1.0f, top_p = 1.0f;
    int top_k = 0;
    long max_tokens = 128;
    unsigned long long seed = 1337;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        errno = 0;
        if (strcmp(a, "--prompt") == 0 && v) { prompt = v; i++; continue; }
        if (strcmp(a, "--tokenizer") == 0 && v) { tok_path = v; i++; continue; }
        if (strcmp(a, "--temperature") == 0 && v) { temperature = strtof(v, &end); i++; }
        else if (strcmp(a, "--top-k") == 0 && v) { top_k = (int)strtol(v, &end, 10); i++; }
        else if (strcmp(a, "--top-p") == 0 && v) { top_p = strtof(v, &end); i++; }
        else if (strcmp(a, "--max-tokens") == 0 && v) { max_tokens = strtol(v, &end, 10); i++; }
        else if (strcmp(a, "--seed") == 0 && v) { seed = strtoull(v, &end, 10); i++; }
        else if (a[0] != '-' && !path) { path = a; continue; }
        else {
            fprintf(stderr, "anvil: sample: unknown or incomplete argument '%s'\n", a);
            return 2;
        }
        if (errno || !end || *end || temperature < 0 || top_k < 0 || top_p <= 0 ||
            top_p > 1 || max_tokens < 0) {
            fprintf(stderr, "anvil: sample: bad value for %s: '%s'\n", a, v);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: anvil sample CKPT [--prompt TEXT] [--max-tokens N] "
                "[--temperature T] [--top-k K] [--top-p P] [--seed S] [--tokenizer FILE]\n");
        return 2;
    }
    char dir[CKPT_PATH_MAX];
    int rc = resolve_verified(path, dir, sizeof dir);
    if (rc) return rc;
    // the run's config, from the checkpoint, through a temporary file
    ckpt_reader *r;
    ckpt_state st;
    if ((rc = ckpt_h5_open(&r, dir, &st)) != 0) return rc;
    char *yaml = ckpt_h5_config(r);
    ckpt_h5_close(r);
    char cpath[] = "/tmp/anvil-sample-XXXXXX";
    int fd = yaml ? mkstemp(cpath) : -1;
    if (fd < 0 || write(fd, yaml, strlen(yaml)) != (ssize_t)strlen(yaml)) {
        fprintf(stderr, "anvil: sample: cannot read the config stored in '%s'\n", dir);
        if (fd >= 0) { close(fd); unlink(cpath); }
        free(yaml);
        return 2;
    }
    close(fd);
    free(yaml);
    anvil_config cfg;
    char *over[] = {"parallel.dp=1", "parallel.tp=1", "parallel.pp=1", "parallel.zero=0",
                    "parallel.pp_layers="};
    rc = config_load(&cfg, cpath, 5, over);
    unlink(cpath);
    if (rc == 0) rc = model_config_resolve(&cfg.model);
    if (rc) return rc;
    if (!tok_path && cfg.data.tokenizer[0]) tok_path = cfg.data.tokenizer;
    tokenizer *tok = NULL;
    if (tok_path && (rc = tokenizer_load(&tok, tok_path)) != 0) return rc;

    parallel_grid grid;
    if ((rc = parallel_grid_init(&grid, &cfg.parallel, cfg.model.n_head, cfg.model.n_kv_head,
                                 1, 1)) != 0) {
        tokenizer_free(tok);
        return rc;
    }
    model m;
    sampler smp;
    memset(&smp, 0, sizeof smp);
    const int T = cfg.train.seq_len;
    rc = model_init(&m, &cfg.model, anv_backend_cpu(), 1, T, NULL);
    train_save *pending = NULL;
    const train_ckpt ck = {&cfg, &m, NULL, &grid, 0, "", &pending, NULL, NULL};
    train_state ts;
    char why[CKPT_PATH_MAX];
    if (rc == 0 && (rc = train_checkpoint_load(&ck, dir, &ts, why, sizeof why)) == 3) {
        fprintf(stderr, "anvil: sample: checkpoint %s: %s\n", dir, why);   // verified, yet
        rc = 2;                                                            // changed since
    }
    if (rc == 0) rc = sampler_init(&smp, &m, temperature, top_k, top_p);
    // the prompt: text from --prompt or stdin, encoded like the training data
    char *text = rc == 0 ? (prompt ? strdup(prompt) : read_stdin()) : NULL;
    int32_t *ids = text ? malloc((strlen(text) + 2) * 4 * sizeof(int32_t)) : NULL;
    long n_ids = 0;
    if (rc == 0 && (!text || !ids)) rc = 1;
    if (rc == 0) {
        int64_t eot = tok ? tokenizer_eot_id(tok) : BYTE_TOKENIZER_EOT;
        ids[n_ids++] = (int32_t)(eot >= 0 && eot < m.V ? eot : 0);   // a document start
        size_t len = strlen(text);
        if (tok) {
            tokenizer_encoder *e = tokenizer_encoder_new(tok);
            uint32_t *u = NULL;
            size_t cap = 0;
            int64_t k = e ? tokenizer_encode(e, text, len, 0, &u, &cap) : -1;
            // BPE never makes more ids than bytes: ids has room for 4 per byte
            for (int64_t i = 0; i < k; i++) ids[n_ids++] = (int32_t)u[i];
            if (k < 0) rc = 2;
            free(u);
            tokenizer_encoder_free(e);
        } else {
            uint32_t *u = malloc((len + 1) * sizeof(uint32_t));
            size_t k = u ? byte_tokenizer_encode(text, len, u) : 0;
            for (size_t i = 0; i < k; i++) ids[n_ids++] = (int32_t)u[i];
            free(u);
        }
        for (long i = 0; rc == 0 && i < n_ids; i++)
            if (ids[i] >= m.V) {
                fprintf(stderr, "anvil: sample: the prompt's token %d is outside the model's "
                        "vocabulary (%d): wrong --tokenizer?\n", ids[i], m.V);
                rc = 2;
            }
    }
    if (rc == 0) {
        uint64_t rng = rng_stream(seed, "sample");
        if (text) fputs(text, stdout);
        sampler_generate(&smp, &m, ids, (int)n_ids, (int)max_tokens, &rng, emit_text, tok);
        printf("\n");
    } else if (rc == 1) {
        fprintf(stderr, "anvil: sample: out of memory\n");
    }
    free(text);
    free(ids);
    sampler_free(&smp);
    model_free(&m);
    parallel_grid_free(&grid);
    tokenizer_free(tok);
    return rc;
}
