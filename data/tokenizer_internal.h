// data/tokenizer_internal.h: the loaded tokenizer and its lookup structures, shared by
// data/tokenizer.c (loading tokenizer.json, queries) and data/bpe.c (encoding). Not a
// public header: everything outside data/ goes through data/data.h.
//
// Model tokens are kept in two forms. The JSON form (byte-level characters, "Ġthe")
// answers tokenizer_token_id; the raw-byte form (" the") is what encoding works on:
// the byte-level map is a bijection, so BPE runs on the bytes of a pre-tokenized piece
// directly and never builds the byte-level string. A token whose JSON string holds a
// character outside the byte-level alphabet can never come out of BPE on byte-level
// words and is left out of the raw-byte map.
#ifndef ANVIL_DATA_TOKENIZER_INTERNAL_H
#define ANVIL_DATA_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "data/data.h"
#include "data/pretokenize.h"

// ---- byte-string -> uint32 hash map (open addressing; keys copied into one arena) ------
typedef struct tok_strmap_entry {
    uint64_t hash;
    uint32_t off, len;   // key bytes at arena + off
    uint32_t val;
} tok_strmap_entry;

typedef struct tok_strmap {
    uint32_t *slots;            // (cap) entry index + 1; 0: empty
    uint32_t cap;               // power of two, > 2 * n
    tok_strmap_entry *entries;  // (n) in insertion order
    uint32_t n, ncap;
    char *arena;
    size_t arena_len, arena_cap;
} tok_strmap;

// Hash of n bytes (8 at a time, then a 64-bit finalizer); in-memory tables only.
static inline uint64_t tok_hash_bytes(const void *p, size_t n) {
    const unsigned char *u = (const unsigned char *)p;
    uint64_t h = (uint64_t)n * 0x9E3779B97F4A7C15ull;
    for (; n >= 8; n -= 8, u += 8) {
        uint64_t w;
        memcpy(&w, u, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 29;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, u, n);
        h = (h ^ w) * 0x94D049BB133111EBull;
        h ^= h >> 31;
    }
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    return h;
}
// Insert or replace key -> val. Returns 0 (new key), 1 (replaced; old value in *old if
// old is not NULL) or -1 (out of memory, or more than 4 GiB of keys).
int tok_strmap_put(tok_strmap *m, const char *key, size_t n, uint32_t val, uint32_t *old);
// Value of key, or -1.
int64_t tok_strmap_get(const tok_strmap *m, const char *key, size_t n);
// The same with the key's tok_hash_bytes already computed.
int64_t tok_strmap_get_hashed(const tok_strmap *m, const char *key, size_t n, uint64_t h);
void tok_strmap_free(tok_strmap *m);

// ---- merges: (left id, right id) -> (rank, merged id) --------------------------------
#define TOK_MERGE_EMPTY UINT64_MAX
typedef struct tok_merge_slot {
    uint64_t key;   // (left << 32) | right, TOK_MERGE_EMPTY: free
    uint32_t rank;
    uint32_t id;
} tok_merge_slot;

typedef struct tok_merges {
    tok_merge_slot *slots;   // (mask + 1)
    uint64_t mask;
    int shift;               // 64 - log2(mask + 1)
    uint32_t n;
} tok_merges;

static inline const tok_merge_slot *tok_merges_find(const tok_merges *m, uint32_t a,
                                                    uint32_t b) {
    if (!m->slots) return NULL;
    uint64_t key = ((uint64_t)a << 32) | b;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> m->shift;   // Fibonacci hashing
    for (;;) {
        const tok_merge_slot *s = &m->slots[i];
        if (s->key == key) return s;
        if (s->key == TOK_MERGE_EMPTY) return NULL;
        i = (i + 1) & m->mask;
    }
}

// ---- added tokens and the trie that finds them --------------------------------------
typedef struct tok_added {
    char *content;        // as in tokenizer.json
    size_t len;
    char *pattern;        // what is searched for: content, or NFC(content) when normalized
    size_t pattern_len;
    uint32_t id;
    uint8_t single_word, lstrip, rstrip, normalized, special;
} tok_added;

// A byte trie over the patterns of one family (non-normalized or normalized tokens).
typedef struct tok_trie_node {
    uint32_t first_edge;   // edges [first_edge, first_edge + n_edges) sorted by byte
    uint32_t n_edges;
    int32_t added;         // index into tokenizer.added of the pattern ending here, or -1
} tok_trie_node;

typedef struct tok_trie {
    tok_trie_node *nodes;   // node 0 is the root; NULL: no patterns
    uint8_t *edge_byte;
    uint32_t *edge_child;
    uint32_t n_nodes, n_edges;
    uint8_t first[256];     // 1: some pattern starts with this byte
} tok_trie;

// Longest pattern starting at text[0..n): its added index (and length in *len), or -1.
int32_t tok_trie_longest(const tok_trie *t, const uint8_t *text, size_t n, size_t *len);

// ---- pre-tokenizer -------------------------------------------------------------------
#define TOK_MAX_SPLITS 8   // Split stages before ByteLevel (real files use one)

struct tokenizer {
    char *path;
    uint32_t n_ids;               // largest id + 1 over model and added tokens
    // the model
    tok_strmap vocab;             // JSON token string -> id
    tok_strmap raw;               // raw bytes -> id (byte-level tokens only)
    uint32_t model_vocab_entries; // entries in model.vocab (HF's get_vocab_size)
    int32_t byte_id[256];         // id of each single byte's token, -1: not in vocab
    int32_t fallback_id[256];     // id of "<0xXX>" (byte_fallback), -1: none
    tok_merges merges;
    int ignore_merges;
    int byte_fallback;
    int fuse_unk;
    int64_t unk_id;               // -1: no unk token
    // id -> decoded bytes (byte-level decoding; added tokens: content)
    char *dec_arena;
    uint32_t *dec_off, *dec_len;  // (n_ids); dec_len UINT32_MAX: no token has this id
    uint8_t *is_special;          // (n_ids) 1: a special added token
    // added tokens
    tok_added *added;
    uint32_t n_added;
    tok_trie trie_raw;            // non-normalized tokens, matched on the input
    tok_trie trie_norm;           // normalized tokens, matched after normalizing
    // normalizer
    int nfc;
    // pre-tokenizer: Split stages, then ByteLevel
    pretok_regex *split[TOK_MAX_SPLITS];
    int n_split;
    int prefix_space;             // ByteLevel add_prefix_space
    pretok_regex *bytelevel_re;   // ByteLevel use_regex (GPT-2 pattern), or NULL
    // post-processor
    uint32_t *bos, *eos;
    uint32_t n_bos, n_eos;
    int64_t eot;
    // single_word added tokens: a character of Rust regex's \w (compiled only if needed)
    pretok_regex *word_re;
};

// NFC of s[0..n) (invalid UTF-8 bytes are kept and the valid runs between them are
// normalized) into a new malloc'ed buffer *out of length *out_len. Returns 0 or -1 (out
// of memory).
int tok_normalize_nfc(const char *s, size_t n, char **out, size_t *out_len);
// Whether id is a special added token (decoding with special tokens skipped).
int tokenizer_token_is_special(const tokenizer *t, uint32_t id);
// The pattern of word_re: Rust regex's Unicode \w (HF's single_word test).
#define TOK_WORD_CHAR_PATTERN "^[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]"

#endif
