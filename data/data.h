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

// ---- byte-level BPE tokenizer from a Hugging Face tokenizer.json ---------------
// Exact with Hugging Face `tokenizers` for byte-level BPE models (GPT-2, Llama-3,
// Qwen2 families): added tokens (special or not, lstrip/rstrip/single_word/normalized),
// an optional NFC normalizer, Split(regex) and ByteLevel pre-tokenizers (regexes run
// by PCRE2 with JIT), BPE merges in both stored forms, ignore_merges, the byte-level
// decoder, and BOS/EOS from a TemplateProcessing or ByteLevel post-processor.
// A loaded tokenizer is immutable and shared; each thread encodes through its own
// tokenizer_encoder (match data, scratch, word cache).
typedef struct tokenizer tokenizer;
typedef struct tokenizer_encoder tokenizer_encoder;

// Load `path`. Returns 0 and sets *out, or 2 after printing one line naming the file
// and what is wrong (unreadable, not JSON (with line:column), missing model, not BPE,
// bad merge entry (with its index), unknown pre-tokenizer type, bad regex, ...).
int tokenizer_load(tokenizer **out, const char *path);
void tokenizer_free(tokenizer *t);            // NULL is a no-op
// Number of ids (largest id + 1, added tokens included).
uint32_t tokenizer_vocab_size(const tokenizer *t);
// Id of the token that ends a document (the one `prepare` appends): the added token
// "<|endoftext|>", "<|end_of_text|>" or "</s>" if present, else the post-processor's
// EOS; -1 if none.
int64_t tokenizer_eot_id(const tokenizer *t);
// Id of token string `s` (added or vocab), or -1.
int64_t tokenizer_token_id(const tokenizer *t, const char *s);

tokenizer_encoder *tokenizer_encoder_new(const tokenizer *t);   // NULL: out of memory
void tokenizer_encoder_free(tokenizer_encoder *e);
// Encode n bytes of UTF-8 text (invalid UTF-8 is encoded as its bytes, never fails)
// and write the ids to (*ids)[0..] (capacity *cap, grown with realloc as needed); with
// add_special the post-processor's BOS/EOS are added as HF's add_special_tokens=True
// does. Returns the number of ids written, or -1 on out of memory.
int64_t tokenizer_encode(tokenizer_encoder *e, const char *text, size_t n, int add_special,
                         uint32_t **ids, size_t *cap);
// The bytes token `id` decodes to (byte-level decoding; added tokens as their
// content), length in *len; NULL for an id out of range.
const char *tokenizer_token_bytes(const tokenizer *t, uint32_t id, size_t *len);

// `anvil tokenizer encode|decode|train ...`: argv after "tokenizer". Returns the exit code.
int tokenizer_main(int argc, char **argv);
// `anvil tokenizer train ...` (data/bpe_train.c): argv after "train".
int tokenizer_train_main(int argc, char **argv);

// ---- `anvil prepare text` -------------------------------------------------------------
// Subcommand entry: argv after "prepare". Returns an exit code (0, 1 or 2).
int prepare_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
