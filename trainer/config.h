// trainer/config.h: the run configuration, one struct per section.
//
// Every key lives in one table in config.c (type, default, range, one-line
// description); `anvil help config` prints that table, and validation comes from it.
// Each component receives only its own section struct (model_config to the model,
// data_config to the loader, ...), never the whole anvil_config.
#ifndef ANVIL_TRAINER_CONFIG_H
#define ANVIL_TRAINER_CONFIG_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CONFIG_STR 1024   // longest string value (paths, glob lists), bytes incl. NUL

typedef enum model_family { MODEL_FAMILY_GPT2 = 0, MODEL_FAMILY_LLAMA = 1 } model_family;
typedef enum rope_scaling { ROPE_SCALING_NONE = 0, ROPE_SCALING_LLAMA3 = 1 } rope_scaling;
typedef enum lr_schedule {
    LR_SCHEDULE_COSINE = 0, LR_SCHEDULE_LINEAR = 1, LR_SCHEDULE_CONSTANT = 2,
    LR_SCHEDULE_WSD = 3
} lr_schedule;
typedef enum data_order { DATA_ORDER_RANDOM = 0, DATA_ORDER_SEQUENTIAL = 1 } data_order;
typedef enum device_kind { DEVICE_KIND_AUTO = 0, DEVICE_KIND_CPU = 1, DEVICE_KIND_CUDA = 2 } device_kind;

// model.*: shape keys set to 0 mean "from model.preset" (or, with no preset, the
// default listed in the table).
typedef struct model_config {
    model_family family;     // model.family: gpt2 | llama
    char preset[64];         // model.preset: "" or a named shape (model_presets in model.c)
    int n_layer;             // model.n_layer
    int d_model;             // model.d_model
    int n_head;              // model.n_head
    int n_kv_head;           // model.n_kv_head (0: = n_head)
    int ffn_dim;             // model.ffn_dim (0: 4*d_model for gpt2, SwiGLU rule for llama)
    int vocab_size;          // model.vocab_size
    int max_seq_len;         // model.max_seq_len
    int tie_embeddings;      // model.tie_embeddings (bool)
    int qkv_bias;            // model.qkv_bias (bool; llama only, as in Qwen2)
    float rope_theta;        // model.rope_theta
    rope_scaling rope_scaling;     // model.rope_scaling: none | llama3
    float rope_factor;             // model.rope_factor
    float rope_low_freq_factor;    // model.rope_low_freq_factor
    float rope_high_freq_factor;   // model.rope_high_freq_factor
    int rope_original_max_pos;     // model.rope_original_max_pos
    float norm_eps;          // model.norm_eps (0: 1e-5)
    float init_std;          // model.init_std
} model_config;

// train.*: the run and its learning-rate schedule.
// train.recompute: what the backward pass recomputes instead of keeping
// (trainer/model.c says which activations).
typedef enum recompute_mode {
    RECOMPUTE_MODE_NONE = 0, RECOMPUTE_MODE_SELECTIVE = 1, RECOMPUTE_MODE_FULL = 2
} recompute_mode;
// train.matmul_algo: how the cuda backend picks each matmul's cuBLASLt algorithm
// (kernels/cuda/matmul.cu): AUTO is TIMED unless train.deterministic.
typedef enum matmul_algo {
    MATMUL_ALGO_AUTO = 0, MATMUL_ALGO_HEURISTIC = 1, MATMUL_ALGO_TIMED = 2
} matmul_algo;

typedef struct train_config {
    long steps;              // train.steps
    int seq_len;             // train.seq_len (T)
    int micro_batch;         // train.micro_batch (B)
    long global_batch_tokens;// train.global_batch_tokens (0: = micro_batch*seq_len*dp)
    float lr;                // train.lr: peak learning rate
    float min_lr;            // train.min_lr: end of decay
    long warmup_steps;       // train.warmup_steps
    lr_schedule schedule;    // train.schedule: cosine | linear | constant | wsd
    float decay_frac;        // train.decay_frac: wsd's final decay fraction of steps
    unsigned long long seed; // train.seed
    long log_every;          // train.log_every
    long eval_every;         // train.eval_every (0: never)
    long eval_tokens;        // train.eval_tokens
    long sample_every;       // train.sample_every (0: never)
    int sample_tokens;       // train.sample_tokens
    double peak_flops;       // train.peak_flops: per rank, for MFU (0: estimate)
    recompute_mode recompute;// train.recompute: none | selective | full
    int deterministic;       // train.deterministic: bit-reproducible on the GPU
    matmul_algo matmul_algo; // train.matmul_algo: auto | heuristic | timed
} train_config;

// optim.*: AdamW.
typedef struct optim_config {
    float beta1, beta2, eps; // optim.beta1, optim.beta2, optim.eps
    float weight_decay;      // optim.weight_decay (matrices only)
    int decay_embeddings;    // optim.decay_embeddings (bool)
    float grad_clip;         // optim.grad_clip (0: off)
} optim_config;

// data.*
typedef struct data_config {
    char train[CONFIG_STR];  // data.train: shard files / glob patterns, comma separated
    char val[CONFIG_STR];    // data.val: same, "" for none
    data_order order;        // data.order: random | sequential
    char tokenizer[CONFIG_STR]; // data.tokenizer: tokenizer.json, "" for byte-level
} data_config;

// run.*
typedef struct run_config {
    char dir[CONFIG_STR];    // run.dir
    char final_weights[CONFIG_STR]; // run.final_weights: tensorfile of the final params
    double watchdog_s;       // run.watchdog_s: abort after this long without progress
    long profile_step;       // run.profile_step: time every op of this step (0: none)
} run_config;

// parallel.* (used from the distributed issue on; dp 0 means auto)
typedef struct parallel_config {
    int dp, tp, pp, zero;
    char pp_layers[CONFIG_STR];   // layers per stage, "4,4,3"; "" = balanced
    float bucket_mb;              // dp gradient all-reduce bucket, MiB (0: one, after)
} parallel_config;

// checkpoint.* (used from the checkpoint issue on)
typedef struct checkpoint_config {
    long every;
    int keep;
    long keep_every;         // steps that are multiples of it are kept for ever (0: none)
    int final;               // checkpoint.final: save at train.steps (bool)
    int rollback_after;      // non-finite steps in a row before a rollback (0: never)
    int async;               // write checkpoints from a background thread
    int checksum;            // MANIFEST checksum: 0 crc32c, 1 sha256 (ckpt_checksum)
    char resume[CONFIG_STR]; // auto | none | a path
} checkpoint_config;

typedef struct anvil_config {
    model_config model;
    train_config train;
    optim_config optim;
    data_config data;
    run_config run;
    parallel_config parallel;
    checkpoint_config checkpoint;
    device_kind device;      // device: cpu | cuda | auto
} anvil_config;

// Fill every key with its table default.
void config_defaults(anvil_config *cfg);

// Load: defaults, then the YAML file `path` (NULL: none), then each override
// "section.key=value" in order. Returns 0, or 2 after printing one line to stderr that
// names the file or key and what is wrong (unknown key with the closest valid one,
// wrong type, out of range, missing/unreadable file, YAML syntax error with line).
int config_load(anvil_config *cfg, const char *path, int n_overrides,
                char *const *overrides);

// Write the effective config as YAML (every key, grouped by section). Returns 0 or -1.
int config_write_yaml(const anvil_config *cfg, FILE *f);

// Print the key table (key, type, default, range, description) for `anvil help config`.
void config_print_help(FILE *f);

#ifdef __cplusplus
}
#endif
#endif
