// data/data.h: token shards, the batch loader, the byte-level tokenizer, `prepare`.
//
// Shard format (docs/formats.md): a 64-byte little-endian header
//   u32 magic 0x4B4F5441 ("ATOK" read as bytes 'A','T','O','K')
//   u32 version = 1
//   u32 token_bytes (2: uint16 tokens, 4: uint32 tokens)
//   u32 reserved = 0
//   u64 n_tokens
//   40 bytes zero
// followed by n_tokens tokens. llm.c shards (256 x int32 header, [0] = 20240520,
// [1] = 1, [2] = n_tokens, uint16 tokens after byte 1024; and llm.c's Llama-3 shards,
// magic 20240801, version 7, uint32 tokens) are read as well.
//
// Loader: a sample is a window of T+1 tokens; shard s contributes
// floor((n_tokens_s - 1) / T) windows starting at multiples of T. All samples of all
// shards (in the sorted order of the expanded file list) form one index space of size
// S. Position p in the sample stream (p = consumed samples) maps to epoch e = p / S
// and sample perm_e[p % S], where perm_e is the identity (sequential order) or a
// Fisher-Yates permutation seeded by (seed, e) (random order). Global batch k is
// stream positions [k*G, (k+1)*G): a function of the seed and k alone, whatever the
// number of ranks or the micro-batch, so a run resumes from one counter.
#ifndef ANVIL_DATA_DATA_H
#define ANVIL_DATA_DATA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHARD_MAGIC 0x4B4F5441u
#define SHARD_MAGIC_LLMC 20240520u
#define SHARD_HEADER_BYTES 64

// ---- one memory-mapped shard ---------------------------------------------------
typedef struct shard {
    char *path;             // owned copy
    const void *map;        // whole file mapping
    size_t map_bytes;
    const uint8_t *tokens;  // first token
    int token_bytes;        // 2 or 4
    uint64_t n_tokens;
} shard;

// Map and validate `path`. Returns 0, or 2 after printing one line naming the file
// and the problem (missing, too short, wrong magic, unknown version/dtype, size that
// disagrees with the header's token count).
int shard_open(shard *s, const char *path);
void shard_close(shard *s);
// Token i (0 <= i < n_tokens).
static inline uint32_t shard_token(const shard *s, uint64_t i) {
    return s->token_bytes == 2 ? ((const uint16_t *)s->tokens)[i]
                               : ((const uint32_t *)s->tokens)[i];
}

// Write tokens to `path` atomically (path.tmp, fsync, rename). token_bytes 2 or 4.
// Returns 0, or 2 after printing why.
int shard_write(const char *path, const uint32_t *tokens, uint64_t n, int token_bytes);

// mkdir -p: create `path` and its missing parents (mode 0777 & ~umask). Returns 0, or
// -1 with errno set and, in `failed` (capacity n), the component that could not be made.
int data_mkdirs(const char *path, char *failed, size_t n);

// ---- the loader --------------------------------------------------------------------
typedef struct loader {
    shard *shards;           // n_shards, sorted by path
    int n_shards;
    uint64_t *first_sample;  // (n_shards + 1) prefix sums of windows per shard
    uint64_t n_samples;      // S
    int T;                   // window is T+1 tokens
    int random;              // 1: seeded permutation per epoch; 0: sequential
    unsigned long long seed;
    uint32_t *perm;          // (S) permutation of the current epoch (random order)
    uint64_t perm_epoch;     // epoch perm holds, UINT64_MAX: none yet
    uint32_t vocab_limit;    // tokens must be < this (0: unchecked)
} loader;

// Open all shards matched by `patterns` (comma-separated files or glob patterns),
// allocating everything the loader will ever need. `what` names the key for messages
// ("data.train"). Returns 0, or 2 after printing one line (no file matched, a bad
// shard, no full window of T+1 tokens in any shard).
int loader_init(loader *L, const char *patterns, const char *what, int T, int random,
                unsigned long long seed, uint32_t vocab_limit);
void loader_free(loader *L);

// Fill tokens (n, T+1) as int32 with the samples at stream positions
// [pos, pos + n). Does not allocate. Returns 0, or 2 if a token >= vocab_limit (names
// shard and offset).
int loader_fill(loader *L, uint64_t pos, int n, int32_t *tokens);

// ---- byte-level tokenizer (vocab 256 + end-of-text = 257) ------------------------
#define BYTE_TOKENIZER_VOCAB 257
#define BYTE_TOKENIZER_EOT 256
// Encode n bytes to ids (one per byte). Returns the count.
size_t byte_tokenizer_encode(const char *text, size_t n, uint32_t *ids);
// Decode one id to out (at most 16 bytes incl. NUL); EOT decodes to "\n<|endoftext|>\n".
// Never fails: an id out of range decodes to the replacement "\xEF\xBF\xBD".
const char *byte_tokenizer_decode(uint32_t id, char out[16]);

// ---- `anvil prepare text` -------------------------------------------------------------
// Subcommand entry: argv after "prepare". Returns an exit code (0, 1 or 2).
int prepare_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
