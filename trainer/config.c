// trainer/config.c: the key table, and checking, printing and writing one value or all.
//
// Every key lives in one table (config_keys below): its full name, type, place in
// anvil_config, default, range and one-line description. Nothing else knows the keys:
// defaults are the table's default strings run through the same parser as user values
// (config_value_set), validation is that parser plus the table's range, `anvil help
// config` prints the table, and config_write_yaml walks it. Adding a key is one line
// here plus the struct member in config.h.
//
// Reading a YAML file and the command-line overrides, and layering them over the
// defaults and a model preset, is config_yaml.c; it reaches the table and the helpers
// it shares with this file through trainer/config_keys.h. The split keeps libfyaml out
// of this file and each file under the house size limit.
//
// Everything here handles user input, so nothing asserts: a bad value comes back as a
// one-line message (without the location, which the caller knows) and -1.
#include "trainer/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "trainer/config_keys.h"
#include "trainer/model.h"   // model_preset_names

// Enums are stored through an int (see config_value_set); that needs them int-sized.
_Static_assert(sizeof(model_family) == sizeof(int), "enum size");
_Static_assert(sizeof(rope_scaling) == sizeof(int), "enum size");
_Static_assert(sizeof(lr_schedule) == sizeof(int), "enum size");
_Static_assert(sizeof(data_order) == sizeof(int), "enum size");
_Static_assert(sizeof(device_kind) == sizeof(int), "enum size");
_Static_assert(sizeof(matmul_algo) == sizeof(int), "enum size");

// ---------------------------------------------------------------------------------
// The key table

static const char *const family_names[] = {"gpt2", "llama", NULL};
static const char *const rope_scaling_names[] = {"none", "llama3", NULL};
static const char *const schedule_names[] = {"cosine", "linear", "constant", "wsd", NULL};
static const char *const order_names[] = {"random", "sequential", NULL};
static const char *const recompute_names[] = {"none", "selective", "full", NULL};
static const char *const device_names[] = {"auto", "cpu", "cuda", NULL};
static const char *const matmul_algo_names[] = {"auto", "heuristic", "timed", NULL};
// in the order of ckpt_checksum (checkpoint/checkpoint.h)
static const char *const checksum_names[] = {"crc32c", "sha256", NULL};

#define MEMBER(m) offsetof(anvil_config, m), sizeof(((anvil_config *)0)->m)
#define INF INFINITY
#define SHAPE_MAX 1048576.0   // 1<<20: far above any real shape, small enough for int math
#define KINT(n, m, d, lo, hi, fl, h)  {n, KEY_TYPE_INT, MEMBER(m), d, lo, hi, fl, NULL, h}
#define KLONG(n, m, d, lo, hi, h)     {n, KEY_TYPE_LONG, MEMBER(m), d, lo, hi, 0, NULL, h}
#define KU64(n, m, d, h)              {n, KEY_TYPE_U64, MEMBER(m), d, 0, INF, 0, NULL, h}
#define KFLOAT(n, m, d, lo, hi, fl, h) {n, KEY_TYPE_FLOAT, MEMBER(m), d, lo, hi, fl, NULL, h}
#define KDOUBLE(n, m, d, lo, hi, h)   {n, KEY_TYPE_DOUBLE, MEMBER(m), d, lo, hi, 0, NULL, h}
#define KBOOL(n, m, d, h)             {n, KEY_TYPE_BOOL, MEMBER(m), d, 0, 1, 0, NULL, h}
#define KSTR(n, m, d, h)              {n, KEY_TYPE_STRING, MEMBER(m), d, 0, 0, 0, NULL, h}
#define KENUM(n, m, d, v, h)          {n, KEY_TYPE_ENUM, MEMBER(m), d, 0, 0, 0, v, h}

const config_key config_keys[] = {
    // model.*
    KENUM("model.family", model.family, "gpt2", family_names,
          "gpt2 (LayerNorm, GELU, learned positions) or llama (RMSNorm, SwiGLU, RoPE)"),
    KSTR("model.preset", model.preset, "",
         "named model (\"\": none): sets every model key it defines; keys you set win"),
    KINT("model.n_layer", model.n_layer, "0", 0, SHAPE_MAX, KEY_ZERO_PRESET,
         "transformer blocks (0: from the preset, else the family default)"),
    KINT("model.d_model", model.d_model, "0", 0, SHAPE_MAX, KEY_ZERO_PRESET,
         "residual width C (0: from the preset, else the family default)"),
    KINT("model.n_head", model.n_head, "0", 0, SHAPE_MAX, KEY_ZERO_PRESET,
         "attention heads (0: from the preset, else the family default)"),
    KINT("model.n_kv_head", model.n_kv_head, "0", 0, SHAPE_MAX, KEY_ZERO_PRESET,
         "key/value heads for grouped-query attention (0: from the preset, else n_head)"),
    KINT("model.ffn_dim", model.ffn_dim, "0", 0, SHAPE_MAX, KEY_ZERO_PRESET,
         "MLP hidden width (0: from the preset, else 4*d_model, or the SwiGLU rule for llama)"),
    KINT("model.vocab_size", model.vocab_size, "0", 0, SHAPE_MAX, KEY_ZERO_PRESET,
         "vocabulary size (0: from the preset, else data.tokenizer's, else 257 for bytes)"),
    KINT("model.max_seq_len", model.max_seq_len, "0", 0, SHAPE_MAX, KEY_ZERO_PRESET,
         "longest sequence the model supports (0: from the preset, else the family default)"),
    KBOOL("model.tie_embeddings", model.tie_embeddings, "true",
          "share the token embedding with the LM head"),
    KBOOL("model.qkv_bias", model.qkv_bias, "false",
          "biases on the q/k/v projections (llama family only, as in Qwen2)"),
    KFLOAT("model.rope_theta", model.rope_theta, "10000", 0, INF, KEY_LO_OPEN,
           "RoPE base frequency (llama family)"),
    KENUM("model.rope_scaling", model.rope_scaling, "none", rope_scaling_names,
          "RoPE frequency scaling: none or llama3 (Llama 3.1 long-context rule)"),
    KFLOAT("model.rope_factor", model.rope_factor, "8", 0, INF, KEY_LO_OPEN,
           "llama3 scaling: overall factor"),
    KFLOAT("model.rope_low_freq_factor", model.rope_low_freq_factor, "1", 0, INF, KEY_LO_OPEN,
           "llama3 scaling: low-frequency factor"),
    KFLOAT("model.rope_high_freq_factor", model.rope_high_freq_factor, "4", 0, INF,
           KEY_LO_OPEN, "llama3 scaling: high-frequency factor"),
    KINT("model.rope_original_max_pos", model.rope_original_max_pos, "8192", 1, SHAPE_MAX, 0,
         "llama3 scaling: context length the model was trained with"),
    KFLOAT("model.norm_eps", model.norm_eps, "0", 0, 1, KEY_ZERO_PRESET,
           "epsilon of LayerNorm / RMSNorm (0: from the preset, else 1e-5)"),
    KFLOAT("model.init_std", model.init_std, "0.02", 0, 10, 0,
           "standard deviation of the initial weights"),

    // train.*
    KLONG("train.steps", train.steps, "1000", 1, INF, "optimizer steps to run"),
    KINT("train.seq_len", train.seq_len, "256", 1, SHAPE_MAX, 0,
         "tokens per sequence (T)"),
    KINT("train.micro_batch", train.micro_batch, "8", 1, SHAPE_MAX, 0,
         "sequences per forward/backward pass on one rank (B)"),
    KLONG("train.global_batch_tokens", train.global_batch_tokens, "0", 0, INF,
          "tokens per optimizer step, via gradient accumulation (0: micro_batch*seq_len*dp)"),
    KFLOAT("train.lr", train.lr, "6e-4", 0, 10, 0, "peak learning rate"),
    KFLOAT("train.min_lr", train.min_lr, "6e-5", 0, 10, 0,
           "learning rate at the end of the decay"),
    KLONG("train.warmup_steps", train.warmup_steps, "0", 0, INF,
          "steps of linear warmup from 0 to train.lr"),
    KENUM("train.schedule", train.schedule, "cosine", schedule_names,
          "learning-rate decay after warmup (wsd: warmup-stable-decay)"),
    KFLOAT("train.decay_frac", train.decay_frac, "0.2", 0, 1, 0,
           "wsd: fraction of the steps spent in the final decay"),
    KU64("train.seed", train.seed, "1337", "seed of every random stream (init, data order, sampling)"),
    KLONG("train.log_every", train.log_every, "10", 1, INF,
          "steps between log lines and metrics.jsonl records"),
    KLONG("train.eval_every", train.eval_every, "0", 0, INF,
          "steps between validation-loss evaluations (0: never)"),
    KLONG("train.eval_tokens", train.eval_tokens, "65536", 1, INF,
          "validation tokens per evaluation"),
    KLONG("train.sample_every", train.sample_every, "0", 0, INF,
          "steps between printed samples (0: never)"),
    KINT("train.sample_tokens", train.sample_tokens, "128", 1, SHAPE_MAX, 0,
         "tokens generated per sample"),
    KDOUBLE("train.peak_flops", train.peak_flops, "0", 0, INF,
            "peak FLOP/s of one rank, for MFU (0: estimate from the device)"),
    KENUM("train.recompute", train.recompute, "none", recompute_names,
          "activations recomputed in backward: none, selective (norm and MLP activation "
          "outputs), full (all but each layer's input)"),
    KBOOL("train.deterministic", train.deterministic, "false",
          "bit-identical results run to run on the GPU (no floating-point atomics: the "
          "embedding gradient and attention's dQ summed in a fixed order); slower"),
    KENUM("train.matmul_algo", train.matmul_algo, "auto", matmul_algo_names,
          "cuda: each matmul's cuBLASLt algorithm: heuristic (the library's first choice), "
          "timed (its candidates timed after step 1, the fastest kept), auto (timed unless "
          "train.deterministic)"),

    // optim.*
    KFLOAT("optim.beta1", optim.beta1, "0.9", 0, 1, KEY_HI_OPEN, "AdamW first-moment decay"),
    KFLOAT("optim.beta2", optim.beta2, "0.95", 0, 1, KEY_HI_OPEN, "AdamW second-moment decay"),
    KFLOAT("optim.eps", optim.eps, "1e-8", 0, 1, KEY_LO_OPEN, "AdamW epsilon"),
    KFLOAT("optim.weight_decay", optim.weight_decay, "0.1", 0, 10, 0,
           "decoupled weight decay, applied to matrices only"),
    KBOOL("optim.decay_embeddings", optim.decay_embeddings, "false",
          "apply weight decay to the embeddings too"),
    KFLOAT("optim.grad_clip", optim.grad_clip, "1.0", 0, INF, 0,
           "clip the global gradient norm to this (0: off)"),

    // data.*
    KSTR("data.train", data.train, "runs/data/fortunes/train_*.bin",
         "training token shards: files or glob patterns, comma separated, or a YAML list"),
    KSTR("data.val", data.val, "runs/data/fortunes/val_*.bin",
         "validation token shards, same form (\"\": none)"),
    KENUM("data.order", data.order, "random", order_names,
          "order of the training sequences: random (seeded) or sequential"),
    KSTR("data.tokenizer", data.tokenizer, "",
         "tokenizer.json the shards were made with, for samples (\"\": byte-level)"),

    // run.*
    KSTR("run.dir", run.dir, "runs/default",
         "where the effective config, metrics.jsonl and checkpoints/ go"),
    KSTR("run.final_weights", run.final_weights, "",
         "write the final parameters (fp32; the master weights on cuda) to this named-tensor "
         "file (\"\": none; tests, debugging)"),
    KDOUBLE("run.watchdog_s", run.watchdog_s, "1800", 0, INF,
            "abort the job when a rank makes no progress for this many seconds (0: off)"),
    KLONG("run.profile_step", run.profile_step, "0", 0, INF,
          "time every op of this step (1-based; 0: none) and print the table"),

    // parallel.*
    KINT("parallel.dp", parallel.dp, "auto", 0, SHAPE_MAX, KEY_AUTO_ZERO,
         "data-parallel ranks (auto or 0: world size / (tp*pp))"),
    KINT("parallel.tp", parallel.tp, "1", 1, SHAPE_MAX, 0, "tensor-parallel ranks"),
    KINT("parallel.pp", parallel.pp, "1", 1, SHAPE_MAX, 0, "pipeline-parallel stages"),
    KINT("parallel.zero", parallel.zero, "0", 0, 1, 0,
         "ZeRO stage: 0 (replicated optimizer state) or 1 (sharded over dp)"),
    KSTR("parallel.pp_layers", parallel.pp_layers, "",
         "layers of each pipeline stage, comma-separated (\"6,6,4\"); empty: balanced"),
    KFLOAT("parallel.bucket_mb", parallel.bucket_mb, "32", 0, 65536, 0,
           "MiB of gradients per data-parallel all-reduce started during the backward "
           "(0: one all-reduce after it)"),

    // checkpoint.*
    KLONG("checkpoint.every", checkpoint.every, "0", 0, INF,
          "steps between checkpoints (0: only at the end and on a stop signal)"),
    KINT("checkpoint.keep", checkpoint.keep, "3", 1, SHAPE_MAX, 0,
         "how many of the newest checkpoints to keep"),
    KBOOL("checkpoint.async", checkpoint.async, "false",
          "write checkpoints from a background thread while training continues"),
    KINT("checkpoint.rollback_after", checkpoint.rollback_after, "5", 0, SHAPE_MAX, 0,
         "non-finite steps in a row before rolling back to the last checkpoint (0: never)"),
    KLONG("checkpoint.keep_every", checkpoint.keep_every, "0", 0, INF,
          "also keep for ever every checkpoint whose step is a multiple of this (0: none)"),
    KSTR("checkpoint.resume", checkpoint.resume, "auto",
         "auto (newest valid checkpoint in run.dir, if any), none, or a checkpoint path"),
    KENUM("checkpoint.checksum", checkpoint.checksum, "crc32c", checksum_names,
          "MANIFEST checksum: crc32c (hardware, fast) or sha256 (sha256sum -c format)"),
    KBOOL("checkpoint.final", checkpoint.final, "true",
          "save a checkpoint when the run reaches train.steps (a stop signal always saves)"),

    // top level
    KENUM("device", device, "auto", device_names,
          "compute backend: auto (cuda if a GPU is usable, else cpu), cpu or cuda"),
};

#define N_KEYS ((int)(sizeof(config_keys) / sizeof(config_keys[0])))

const int config_n_keys = N_KEYS;

// ---------------------------------------------------------------------------------
// Small helpers

// Copy `len` bytes of user text into dst as a printable single-line excerpt (control
// bytes escaped, cut at CONFIG_QUOTE_MAX with "..."), so an error message stays one line.
void config_text_excerpt(char *dst, size_t n, const char *s, size_t len) {
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char tmp[8];
        if (c == '\n') snprintf(tmp, sizeof tmp, "\\n");
        else if (c == '\t') snprintf(tmp, sizeof tmp, "\\t");
        else if (c < 0x20 || c == 0x7f) snprintf(tmp, sizeof tmp, "\\x%02x", c);
        else { tmp[0] = (char)c; tmp[1] = '\0'; }
        size_t t = strlen(tmp);
        if (i >= CONFIG_QUOTE_MAX || o + t + 4 >= n) {
            if (o + 4 <= n) { memcpy(dst + o, "...", 3); o += 3; }
            break;
        }
        memcpy(dst + o, tmp, t);
        o += t;
    }
    dst[o < n ? o : n - 1] = '\0';
}

// Return the table entry for a full key name of `len` bytes, or NULL.
const config_key *config_key_find(const char *name, size_t len) {
    for (int i = 0; i < N_KEYS; i++)
        if (strlen(config_keys[i].name) == len && memcmp(config_keys[i].name, name, len) == 0)
            return &config_keys[i];
    return NULL;
}

// Return 1 if `name` (len bytes) is a section, i.e. some key starts with "name.".
int config_key_is_section(const char *name, size_t len) {
    for (int i = 0; i < N_KEYS; i++)
        if (strncmp(config_keys[i].name, name, len) == 0 && config_keys[i].name[len] == '.')
            return 1;
    return 0;
}

// Return the Levenshtein distance between a and b (each cut at CONFIG_NAME_MAX bytes).
static int levenshtein(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > CONFIG_NAME_MAX) la = CONFIG_NAME_MAX;
    if (lb > CONFIG_NAME_MAX) lb = CONFIG_NAME_MAX;
    int row[CONFIG_NAME_MAX + 1];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];   // distance(a[:i-1], b[:j-1])
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

// Return the last dotted component of a name ("lr" for "train.lr").
static const char *key_leaf(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

// Return the valid key closest to `name`: the smallest Levenshtein distance over full
// names, where matching only the part after the last dot ("lr" for train.lr, or
// "optim.lr") counts one more than its own distance, so a key put in the wrong section
// or with its section left out still finds its home. NULL when nothing is close
// (more than a third of the name's letters would change): a far-fetched suggestion
// misleads more than none.
static const char *key_closest(const char *name) {
    const char *best = config_keys[0].name;
    int best_d = INT_MAX;
    for (int i = 0; i < N_KEYS; i++) {
        int d = levenshtein(name, config_keys[i].name);
        int dl = levenshtein(key_leaf(name), key_leaf(config_keys[i].name)) + 1;
        if (dl < d) d = dl;
        if (d < best_d) { best_d = d; best = config_keys[i].name; }
    }
    int limit = (int)strlen(key_leaf(name)) / 3 + 1;
    return best_d <= limit ? best : NULL;
}

// Write "unknown key 'x' (did you mean 'y'?)" for a name of len bytes into msg.
void config_msg_unknown_key(char *msg, size_t n, const char *name, size_t len) {
    char shown[4 * CONFIG_QUOTE_MAX], cut[CONFIG_NAME_MAX + 1];
    config_text_excerpt(shown, sizeof shown, name, len);
    size_t l = len < CONFIG_NAME_MAX ? len : CONFIG_NAME_MAX;
    memcpy(cut, name, l);
    cut[l] = '\0';
    const char *close = key_closest(cut);
    if (close)
        snprintf(msg, n, "unknown key '%s' (did you mean '%s'?)", shown, close);
    else
        snprintf(msg, n, "unknown key '%s' (`anvil help config` lists every key)", shown);
}

// Format a table number for help, messages and docs: integers in full, else %g.
static void num_format(char *buf, size_t n, double v) {
    if (isinf(v)) snprintf(buf, n, v > 0 ? "inf" : "-inf");
    else if (v == floor(v) && fabs(v) < 1e15) snprintf(buf, n, "%.0f", v);
    else snprintf(buf, n, "%g", v);
}

// Write the allowed values of key k ("[0, 1)", "gpt2 | llama", ...) into buf; "" for strings.
static void key_range(const config_key *k, char *buf, size_t n) {
    char lo[32], hi[32];
    buf[0] = '\0';
    switch (k->type) {
    case KEY_TYPE_INT: case KEY_TYPE_LONG: case KEY_TYPE_FLOAT: case KEY_TYPE_DOUBLE:
        num_format(lo, sizeof lo, k->lo);
        num_format(hi, sizeof hi, k->hi);
        snprintf(buf, n, "%c%s, %s%c%s", (k->flags & KEY_LO_OPEN) ? '(' : '[', lo, hi,
                 ((k->flags & KEY_HI_OPEN) || isinf(k->hi)) ? ')' : ']',
                 (k->flags & KEY_AUTO_ZERO) ? " or auto" : "");
        break;
    case KEY_TYPE_U64: snprintf(buf, n, "[0, 2^64-1]"); break;
    case KEY_TYPE_BOOL: snprintf(buf, n, "true|false"); break;
    case KEY_TYPE_ENUM:
        for (int i = 0; k->values[i]; i++) {
            size_t o = strlen(buf);
            snprintf(buf + o, n - o, "%s%s", i ? "|" : "", k->values[i]);
        }
        break;
    case KEY_TYPE_STRING: break;
    }
}

// Return the type name shown in help and docs.
static const char *key_type_name(const config_key *k) {
    switch (k->type) {
    case KEY_TYPE_INT: case KEY_TYPE_LONG: return "int";
    case KEY_TYPE_U64: return "uint64";
    case KEY_TYPE_FLOAT: case KEY_TYPE_DOUBLE: return "float";
    case KEY_TYPE_BOOL: return "bool";
    case KEY_TYPE_STRING: return "string";
    case KEY_TYPE_ENUM: return "enum";
    }
    return "?";
}

// ---------------------------------------------------------------------------------
// Parsing one value

// Return 1 if the len bytes of s look like a decimal number ([+-] digits . e E) and
// nothing else, so strtod's extras (hex, inf, nan, leading blanks) are refused.
static int number_chars_ok(const char *s, size_t len) {
    if (len == 0) return 0;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)s[i]) && !strchr("+-.eE", s[i])) return 0;
    return 1;
}

// Return 1 if v lies in the range of key k.
static int range_ok(const config_key *k, double v) {
    if ((k->flags & KEY_LO_OPEN) ? !(v > k->lo) : !(v >= k->lo)) return 0;
    if ((k->flags & KEY_HI_OPEN) ? !(v < k->hi) : !(v <= k->hi)) return 0;
    return 1;
}

// Return what a value of key k must be, for messages ("an integer", ...).
const char *config_key_want(const config_key *k) {
    switch (k->type) {
    case KEY_TYPE_INT: case KEY_TYPE_LONG:
        return (k->flags & KEY_AUTO_ZERO) ? "an integer or auto" : "an integer";
    case KEY_TYPE_U64: return "a non-negative integer";
    case KEY_TYPE_FLOAT: case KEY_TYPE_DOUBLE: return "a number";
    case KEY_TYPE_BOOL: return "true or false";
    case KEY_TYPE_STRING: return "a string or a list of strings";
    case KEY_TYPE_ENUM: return "one name";
    }
    return "?";
}

// Store the number in num (already checked to hold only number characters) into
// integer key k. Plain integers are exact over the whole 64-bit range; forms such as
// 1e6 or 2.5e3 are accepted when they denote an exact integer. Returns 0, 1 when out
// of the key's range, or -1 with the message in err.
static int value_set_int(const config_key *k, char *dst, const char *num, const char *shown,
                         char *err, size_t errn) {
    char *end;
    long long ll = 0;
    unsigned long long ull = 0;
    int too_big = 0;
    errno = 0;
    if (k->type == KEY_TYPE_U64) ull = strtoull(num, &end, 10);
    else ll = strtoll(num, &end, 10);
    if (*end == '\0' && errno == ERANGE) too_big = 1;
    if (*end != '\0') {
        errno = 0;
        double d = strtod(num, &end);
        if (*end != '\0' || errno == ERANGE || d != floor(d)) {
            snprintf(err, errn, "key '%s': expected %s, got '%s'", k->name, config_key_want(k),
                     shown);
            return -1;
        }
        // 2^63 and 2^64 are exact doubles; anything at or above them does not fit.
        if (k->type == KEY_TYPE_U64) {
            if (d >= 18446744073709551616.0) too_big = 1;
            else ull = (unsigned long long)d;
        } else {
            if (d >= 9223372036854775808.0 || d < -9223372036854775808.0) too_big = 1;
            else ll = (long long)d;
        }
    }
    if (too_big) {
        snprintf(err, errn, "key '%s' = %s does not fit in a 64-bit integer", k->name, shown);
        return -1;
    }
    if (k->type == KEY_TYPE_U64) {
        *(unsigned long long *)dst = ull;
        return 0;
    }
    if (!range_ok(k, (double)ll)) return 1;
    if (k->type == KEY_TYPE_INT) *(int *)dst = (int)ll;   // every int key's range fits in int
    else *(long *)dst = (long)ll;
    return 0;
}

// Store the number in num into float key k. Floats are parsed straight to their own
// precision, so the range is checked on the value actually stored (0.99999999 becomes
// 1.0f, refused for beta1). Returns 0, 1 when out of range, or -1 with the message in err.
static int value_set_float(const config_key *k, char *dst, const char *num, const char *shown,
                           char *err, size_t errn) {
    char *end;
    double d = k->type == KEY_TYPE_FLOAT ? strtof(num, &end) : strtod(num, &end);
    if (*end != '\0') {
        snprintf(err, errn, "key '%s': expected %s, got '%s'", k->name, config_key_want(k), shown);
        return -1;
    }
    if (!isfinite(d)) {
        snprintf(err, errn, "key '%s' = %s does not fit in a %d-bit float", k->name, shown,
                 k->type == KEY_TYPE_FLOAT ? 32 : 64);
        return -1;
    }
    if (!range_ok(k, d)) return 1;
    if (k->type == KEY_TYPE_FLOAT) *(float *)dst = (float)d;
    else *(double *)dst = d;
    return 0;
}

// Parse the len bytes of `text` as the value of key k and store it in cfg. Returns 0,
// or -1 with a message (no location prefix) in err. Used for defaults, YAML scalars and
// overrides alike.
int config_value_set(const config_key *k, anvil_config *cfg, const char *text, size_t len,
                     char *err, size_t errn) {
    static const struct { const char *word; int value; } bools[] = {
        {"true", 1}, {"false", 0}, {"yes", 1}, {"no", 0}, {"on", 1}, {"off", 0}, {"1", 1}, {"0", 0}};
    char *dst = (char *)cfg + k->offset;
    char shown[4 * CONFIG_QUOTE_MAX], num[64];
    config_text_excerpt(shown, sizeof shown, text, len);

    switch (k->type) {
    case KEY_TYPE_STRING:
        if (memchr(text, '\0', len)) {
            snprintf(err, errn, "key '%s': the value contains a NUL byte", k->name);
            return -1;
        }
        if (len >= k->size) {
            snprintf(err, errn, "key '%s': the value is %zu bytes long, at most %zu allowed",
                     k->name, len, k->size - 1);
            return -1;
        }
        memcpy(dst, text, len);
        dst[len] = '\0';
        return 0;
    case KEY_TYPE_ENUM: {
        char allowed[256] = "";
        for (int i = 0; k->values[i]; i++) {
            if (strlen(k->values[i]) == len && memcmp(k->values[i], text, len) == 0) {
                memcpy(dst, &i, sizeof i);
                return 0;
            }
            size_t o = strlen(allowed);
            snprintf(allowed + o, sizeof allowed - o, "%s%s", i ? ", " : "", k->values[i]);
        }
        snprintf(err, errn, "key '%s': unknown value '%s' (expected one of: %s)",
                 k->name, shown, allowed);
        return -1;
    }
    case KEY_TYPE_BOOL:
        for (size_t i = 0; i < sizeof bools / sizeof bools[0]; i++) {
            if (strlen(bools[i].word) == len && strncasecmp(bools[i].word, text, len) == 0) {
                *(int *)dst = bools[i].value;
                return 0;
            }
        }
        snprintf(err, errn, "key '%s': expected true or false, got '%s'", k->name, shown);
        return -1;
    default:
        break;
    }

    // Numbers. "auto" stands for 0 where the key allows it.
    if ((k->flags & KEY_AUTO_ZERO) && len == 4 && memcmp(text, "auto", 4) == 0) {
        text = "0";
        len = 1;
    }
    if (!number_chars_ok(text, len) || len >= sizeof num ||
        (k->type == KEY_TYPE_U64 && memchr(text, '-', len))) {
        if (len == 0)
            snprintf(err, errn, "key '%s': expected %s, got nothing", k->name, config_key_want(k));
        else
            snprintf(err, errn, "key '%s': expected %s, got '%s'", k->name, config_key_want(k),
                     shown);
        return -1;
    }
    memcpy(num, text, len);
    num[len] = '\0';
    int rc = (k->type == KEY_TYPE_FLOAT || k->type == KEY_TYPE_DOUBLE)
                 ? value_set_float(k, dst, num, shown, err, errn)
                 : value_set_int(k, dst, num, shown, err, errn);
    if (rc == 1) {
        char range[256];
        key_range(k, range, sizeof range);
        snprintf(err, errn, "key '%s' = %s is out of range %s", k->name, shown, range);
        return -1;
    }
    return rc;
}

// ---------------------------------------------------------------------------------
// Defaults

void config_defaults(anvil_config *cfg) {
    char err[CONFIG_MSG_MAX];
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        if (config_value_set(k, cfg, k->def, strlen(k->def), err, sizeof err) != 0) {
            // A bad table default is a programming error, never user input.
            fprintf(stderr, "anvil: internal error: bad default in the config table: %s\n", err);
            abort();
        }
    }
}

// ---------------------------------------------------------------------------------
// Writing and printing

// Write the value of key k in cfg as YAML text into buf: numbers in the shortest form
// that reads back to the same bits, strings double-quoted with escapes.
static void value_format(const config_key *k, const anvil_config *cfg, char *buf, size_t n) {
    const char *src = (const char *)cfg + k->offset;
    switch (k->type) {
    case KEY_TYPE_INT: {
        int v = *(const int *)src;
        if (v == 0 && (k->flags & KEY_AUTO_ZERO)) snprintf(buf, n, "auto");
        else snprintf(buf, n, "%d", v);
        break;
    }
    case KEY_TYPE_LONG: snprintf(buf, n, "%ld", *(const long *)src); break;
    case KEY_TYPE_U64: snprintf(buf, n, "%llu", *(const unsigned long long *)src); break;
    case KEY_TYPE_FLOAT: {
        float v = *(const float *)src;
        for (int p = 6; p <= 9; p++) {   // 9 significant digits always round-trip a float
            snprintf(buf, n, "%.*g", p, (double)v);
            if (strtof(buf, NULL) == v) break;
        }
        break;
    }
    case KEY_TYPE_DOUBLE: {
        double v = *(const double *)src;
        for (int p = 15; p <= 17; p++) {   // 17 always round-trip a double
            snprintf(buf, n, "%.*g", p, v);
            if (strtod(buf, NULL) == v) break;
        }
        break;
    }
    case KEY_TYPE_BOOL: snprintf(buf, n, "%s", *(const int *)src ? "true" : "false"); break;
    case KEY_TYPE_ENUM: {
        int v;
        memcpy(&v, src, sizeof v);
        int count = 0;
        while (k->values[count]) count++;
        snprintf(buf, n, "%s", v >= 0 && v < count ? k->values[v] : "?");
        break;
    }
    case KEY_TYPE_STRING: {
        size_t o = 0;
        buf[o++] = '"';
        for (const unsigned char *s = (const unsigned char *)src; *s && o + 6 < n; s++) {
            if (*s == '"' || *s == '\\') { buf[o++] = '\\'; buf[o++] = (char)*s; }
            else if (*s == '\n') { buf[o++] = '\\'; buf[o++] = 'n'; }
            else if (*s == '\t') { buf[o++] = '\\'; buf[o++] = 't'; }
            else if (*s < 0x20 || *s == 0x7f) o += (size_t)snprintf(buf + o, n - o, "\\x%02x", *s);
            else buf[o++] = (char)*s;
        }
        buf[o++] = '"';
        buf[o] = '\0';
        break;
    }
    }
}

// Copy the section of a key name ("train" for "train.lr", "" for "device") into buf.
static void key_section(const char *name, char *buf, size_t n) {
    const char *dot = strchr(name, '.');
    size_t l = dot ? (size_t)(dot - name) : 0;
    if (l >= n) l = n - 1;
    memcpy(buf, name, l);
    buf[l] = '\0';
}

int config_write_yaml(const anvil_config *cfg, FILE *f) {
    // Strings can grow up to 4x when escaped (\xNN), plus quotes.
    char val[4 * CONFIG_STR + 8];
    int err = 0;
    if (fprintf(f, "# anvil effective config: every key (see `anvil help config`)\n") < 0) err = 1;
    // Sections in order of first appearance in the table, each with all its keys.
    for (int i = 0; i < N_KEYS && !err; i++) {
        char sec[64], other[64];
        key_section(config_keys[i].name, sec, sizeof sec);
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) {
            key_section(config_keys[j].name, other, sizeof other);
            seen = strcmp(sec, other) == 0;
        }
        if (seen) continue;
        if (sec[0] && fprintf(f, "%s:\n", sec) < 0) err = 1;
        for (int j = i; j < N_KEYS && !err; j++) {
            const config_key *k = &config_keys[j];
            key_section(k->name, other, sizeof other);
            if (strcmp(sec, other) != 0) continue;
            value_format(k, cfg, val, sizeof val);
            if (sec[0]) {
                if (fprintf(f, "  %s: %s\n", key_leaf(k->name), val) < 0) err = 1;
            } else if (fprintf(f, "%s: %s\n", k->name, val) < 0) {
                err = 1;
            }
        }
    }
    if (fflush(f) != 0 || ferror(f)) err = 1;
    return err ? -1 : 0;
}

void config_print_help(FILE *f) {
    // Column widths from the table. String keys have no range, so their (long) default
    // may run on into the range column; the other defaults are short.
    int wk = 3, wt = 4, wd = 7, wr = 5;
    char buf[256];
    for (int i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        int l;
        if ((l = (int)strlen(k->name)) > wk) wk = l;
        if ((l = (int)strlen(key_type_name(k))) > wt) wt = l;
        key_range(k, buf, sizeof buf);
        if ((l = (int)strlen(buf)) > wr) wr = l;
        if (buf[0] && (l = (int)strlen(k->def)) > wd) wd = l;
    }
    fprintf(f, "Configuration keys. Set them in the YAML file (nested under their section, or\n"
               "flat as section.key), or after the file on the command line as section.key=value;\n"
               "overrides win over the file, later ones over earlier ones. Bad input stops anvil\n"
               "with one line naming the key, and exit code 2.\n\n");
    fprintf(f, "%-*s  %-*s  %-*s  %-*s  %s\n", wk, "KEY", wt, "TYPE", wd, "DEFAULT", wr, "RANGE",
            "DESCRIPTION");
    char prev[64] = "", sec[64];
    for (int i = 0; i < N_KEYS; i++) {
        const config_key *k = &config_keys[i];
        key_section(k->name, sec, sizeof sec);
        if (i > 0 && strcmp(sec, prev) != 0) fputc('\n', f);
        snprintf(prev, sizeof prev, "%s", sec);
        key_range(k, buf, sizeof buf);
        const char *def = k->def[0] ? k->def : "\"\"";
        if (buf[0])
            fprintf(f, "%-*s  %-*s  %-*s  %-*s  %s\n", wk, k->name, wt, key_type_name(k), wd, def,
                    wr, buf, k->help);
        else
            fprintf(f, "%-*s  %-*s  %-*s  %s\n", wk, k->name, wt, key_type_name(k), wd + 2 + wr,
                    def, k->help);
    }
    fprintf(f, "\nmodel.preset names:");
    for (const char *const *p = model_preset_names(); *p; p++) fprintf(f, " %s", *p);
    fprintf(f, "\n");
}
