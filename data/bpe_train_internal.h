// data/bpe_train_internal.h: what the two files of `anvil tokenizer train` share:
// data/bpe_train.c (the options, stages 1, 2 and 4, the subcommand) and data/bpe_merges.c
// (stage 3: learning the merges). Stage 2 hands its word counts to stage 3, and stage 4
// writes the tokens and merges that stage 3 leaves in the trainer, so both files see the
// word map and the trainer. Not a public header: the subcommand's entry point,
// tokenizer_train_main, is declared in data/data.h.
#ifndef ANVIL_DATA_BPE_TRAIN_INTERNAL_H
#define ANVIL_DATA_BPE_TRAIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

// ---- small utilities (data/bpe_train.c) ------------------------------------------------

// Seconds on the monotonic clock (for durations only).
double bpe_train_now_s(void);
// Grow *p (elements of size sz, capacity *cap) to hold at least `need`. Returns 0, or 1
// when out of memory (*p untouched).
int bpe_train_grow(void **p, size_t *cap, size_t need, size_t sz);
// 64-bit hash of a byte string: 8 bytes at a time, multiply-xorshift mixing.
uint64_t bpe_train_hash_bytes(const uint8_t *s, size_t n);

// ---- stage 2: the word counts (filled in data/bpe_train.c) -----------------------------

// A word: its bytes are text[off, off + len) of the shared arena (never copied).
typedef struct word_slot { uint64_t hash; size_t off; uint32_t len; uint64_t count; } word_slot;
typedef struct word_map { word_slot *v; size_t cap, n; } word_map;   // open addressing

// ---- stage 3: the trainer (data/bpe_merges.c) ------------------------------------------

typedef struct pair_stat {
    uint32_t a, b;        // token ids
    int64_t count;        // sum over words of occurrences * frequency
    uint32_t *words;      // (n_words) words that held the pair at some point (may be stale)
    size_t n_words, cap_words;
    uint32_t stamp;       // merge that last touched the count
    int64_t old_count;    // count before that merge
} pair_stat;

typedef struct heap_entry { int64_t count; uint32_t pair; } heap_entry;

typedef struct bpe_trainer {
    // words: symbols sym[off[w], off[w] + len[w]) (ids), frequency freq[w]
    uint32_t n_words;
    uint32_t *sym;
    size_t *off;
    uint32_t *len;
    uint64_t *freq;
    uint32_t *word_stamp;   // merge that last visited the word
    // tokens: bytes tok_bytes[tok_off[i], +tok_len[i]); tok_map: open addressing of ids
    uint8_t *tok_bytes;
    size_t n_tok_bytes, cap_tok_bytes;
    size_t *tok_off;
    uint32_t *tok_len;
    size_t cap_tok_off, cap_tok_len;
    uint32_t n_tokens;
    uint32_t *tok_map;      // (tok_map_cap) id + 1, 0 empty
    size_t tok_map_cap;
    // pairs: pair_map (open addressing) -> index into pairs
    pair_stat *pairs;
    size_t n_pairs, cap_pairs;
    uint64_t *pair_keys;    // (pair_map_cap) a << 32 | b
    uint32_t *pair_idx;     // (pair_map_cap) index + 1, 0 empty
    size_t pair_map_cap;
    heap_entry *heap;
    size_t n_heap, cap_heap;
    uint32_t *touched;      // pairs touched by the current merge
    size_t n_touched, cap_touched;
    uint32_t stamp;
    // result: merges (left, right) in order
    uint32_t *merges;       // (2 * n_merges)
    size_t n_merges, cap_merges;
} bpe_trainer;

// The progress line of bpe_trainer_merge: tty (stderr is a terminal) picks its form; t0 is
// when the merges started and last when the line was last printed (bpe_train_now_s).
typedef struct progress { int tty; double t0, last; } progress;

// Build words, byte tokens and initial pair counts from the word map (whose offsets are
// into text). Returns 0 or 1; either way T then needs bpe_trainer_free.
int bpe_trainer_init(bpe_trainer *T, const word_map *wm, const char *text, int64_t min_count);
// Learn merges until the vocabulary (with n_specials) reaches vocab_size or no pair
// occurs min_count times. Returns 0 or 1 (out of memory).
int bpe_trainer_merge(bpe_trainer *T, uint64_t vocab_size, int n_specials, int64_t min_count,
                      progress *prog);
// Id of the token with bytes s[0, n), or -1.
int64_t bpe_trainer_token_find(const bpe_trainer *T, const uint8_t *s, size_t n);
// Free what T owns (not T itself). T is zeroed or has been through bpe_trainer_init.
void bpe_trainer_free(bpe_trainer *T);

#endif
