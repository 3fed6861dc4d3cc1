// data/bpe_merges.c: stage 3 of `anvil tokenizer train`, learning the merges of a
// byte-level BPE from the word counts of stage 2. data/bpe_train.c has the pipeline, the
// options and the other stages; this stage has a file of its own because it has data
// structures of its own (the trainer, in data/bpe_train_internal.h).
//
// Every word starts as its bytes (ids 0..255 are the bytes in byte order, so the alphabet
// covers any text). The counts of adjacent pairs (weighted by word frequency, overlaps
// included, as HF's BpeTrainer counts them) sit in a hash map; each pair keeps the list
// of words it occurs in; a max-heap holds (count, pair) entries with lazy invalidation
// (an entry whose count is no longer the pair's count is dropped when popped). A merge
// visits only the words on the pair's list: each one's pairs are subtracted, the pair is
// merged left to right, and its new pairs are added; pairs whose count changed are pushed
// again.
//
// Ties between pairs of equal count go to the smaller pair in the order of (bytes of left
// token, bytes of right token), each compared as byte strings (memcmp, a prefix first):
// deterministic, and independent of thread count and input order. Training stops when
// 256 + distinct merged tokens + specials reaches --vocab-size, or when the best pair's
// count is below --min-frequency. A merge whose result string already exists (a+bc after
// ab+c) is kept in the merge list but adds no vocab entry, as HF's BpeTrainer does.
//
// Out of memory is returned (1) and reported by the caller; nothing here calls exit().
#include "data/bpe_train_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t bpe_trainer_token_find(const bpe_trainer *T, const uint8_t *s, size_t n) {
    size_t j = bpe_train_hash_bytes(s, n) & (T->tok_map_cap - 1);
    for (; T->tok_map[j]; j = (j + 1) & (T->tok_map_cap - 1)) {
        uint32_t id = T->tok_map[j] - 1;
        if (T->tok_len[id] == n && !memcmp(T->tok_bytes + T->tok_off[id], s, n)) return id;
    }
    return -1;
}

// Enter token id in the token map (which has room).
static void tok_map_put(bpe_trainer *T, uint32_t id) {
    size_t mask = T->tok_map_cap - 1,
           j = bpe_train_hash_bytes(T->tok_bytes + T->tok_off[id], T->tok_len[id]) & mask;
    while (T->tok_map[j]) j = (j + 1) & mask;
    T->tok_map[j] = id + 1;
}

// Add a token with bytes s[0, n) (not present yet). Returns its id, or -1 (memory).
static int64_t token_add(bpe_trainer *T, const uint8_t *s, size_t n) {
    if (T->n_tokens == UINT32_MAX - 1 ||
        bpe_train_grow((void **)&T->tok_bytes, &T->cap_tok_bytes, T->n_tok_bytes + n, 1) ||
        bpe_train_grow((void **)&T->tok_off, &T->cap_tok_off, T->n_tokens + 1,
                       sizeof *T->tok_off) ||
        bpe_train_grow((void **)&T->tok_len, &T->cap_tok_len, T->n_tokens + 1,
                       sizeof *T->tok_len))
        return -1;
    if (2 * ((size_t)T->n_tokens + 1) > T->tok_map_cap) {
        size_t cap = T->tok_map_cap ? 2 * T->tok_map_cap : 1024;
        uint32_t *m = calloc(cap, sizeof *m);
        if (!m) return -1;
        free(T->tok_map);
        T->tok_map = m;
        T->tok_map_cap = cap;
        for (uint32_t id = 0; id < T->n_tokens; id++) tok_map_put(T, id);
    }
    uint32_t id = T->n_tokens++;
    memcpy(T->tok_bytes + T->n_tok_bytes, s, n);
    T->tok_off[id] = T->n_tok_bytes;
    T->tok_len[id] = (uint32_t)n;
    T->n_tok_bytes += n;
    tok_map_put(T, id);
    return id;
}

// Compare token strings: memcmp order, a prefix before its extensions.
static int token_cmp(const bpe_trainer *T, uint32_t x, uint32_t y) {
    if (x == y) return 0;
    uint32_t lx = T->tok_len[x], ly = T->tok_len[y];
    int c = memcmp(T->tok_bytes + T->tok_off[x], T->tok_bytes + T->tok_off[y],
                   lx < ly ? lx : ly);
    return c ? c : (lx > ly) - (lx < ly);
}

// Whether heap entry e ranks above f: larger count, then the smaller pair of strings.
static int heap_above(const bpe_trainer *T, heap_entry e, heap_entry f) {
    if (e.count != f.count) return e.count > f.count;
    const pair_stat *p = &T->pairs[e.pair], *q = &T->pairs[f.pair];
    int c = token_cmp(T, p->a, q->a);
    return c ? c < 0 : token_cmp(T, p->b, q->b) < 0;
}

static int heap_push(bpe_trainer *T, heap_entry e) {
    if (bpe_train_grow((void **)&T->heap, &T->cap_heap, T->n_heap + 1, sizeof *T->heap)) return 1;
    size_t i = T->n_heap++;
    while (i > 0 && heap_above(T, e, T->heap[(i - 1) / 2])) {
        T->heap[i] = T->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    T->heap[i] = e;
    return 0;
}

static heap_entry heap_pop(bpe_trainer *T) {
    heap_entry top = T->heap[0], last = T->heap[--T->n_heap];
    size_t i = 0, n = T->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_above(T, T->heap[c + 1], T->heap[c])) c++;
        if (!heap_above(T, T->heap[c], last)) break;
        T->heap[i] = T->heap[c];
        i = c;
    }
    if (n) T->heap[i] = last;
    return top;
}

// Index of pair (a, b), created with count 0 if missing. Returns the index, or -1.
static int64_t pair_get(bpe_trainer *T, uint32_t a, uint32_t b) {
    uint64_t key = (uint64_t)a << 32 | b;
    if (2 * (T->n_pairs + 1) > T->pair_map_cap) {
        size_t cap = T->pair_map_cap ? 2 * T->pair_map_cap : 1 << 16;
        uint64_t *keys = malloc(cap * sizeof *keys);
        uint32_t *idx = calloc(cap, sizeof *idx);
        if (!keys || !idx) { free(keys); free(idx); return -1; }
        for (size_t i = 0; i < T->pair_map_cap; i++) {
            if (!T->pair_idx[i]) continue;
            size_t j = bpe_train_hash_bytes((const uint8_t *)&T->pair_keys[i], 8) & (cap - 1);
            while (idx[j]) j = (j + 1) & (cap - 1);
            keys[j] = T->pair_keys[i];
            idx[j] = T->pair_idx[i];
        }
        free(T->pair_keys);
        free(T->pair_idx);
        T->pair_keys = keys;
        T->pair_idx = idx;
        T->pair_map_cap = cap;
    }
    size_t j = bpe_train_hash_bytes((const uint8_t *)&key, 8) & (T->pair_map_cap - 1);
    for (; T->pair_idx[j]; j = (j + 1) & (T->pair_map_cap - 1))
        if (T->pair_keys[j] == key) return T->pair_idx[j] - 1;
    if (T->n_pairs >= UINT32_MAX - 1 ||
        bpe_train_grow((void **)&T->pairs, &T->cap_pairs, T->n_pairs + 1, sizeof *T->pairs))
        return -1;
    T->pairs[T->n_pairs] = (pair_stat){.a = a, .b = b};
    T->pair_keys[j] = key;
    T->pair_idx[j] = (uint32_t)++T->n_pairs;
    return (int64_t)T->n_pairs - 1;
}

// Add delta to the count of (a, b), noting it as touched by the current merge, and,
// when word w >= 0 is given, list w among the pair's words. Returns 0 or 1 (memory).
static int pair_add(bpe_trainer *T, uint32_t a, uint32_t b, int64_t delta, int64_t w) {
    int64_t i = pair_get(T, a, b);
    if (i < 0) return 1;
    pair_stat *p = &T->pairs[i];
    if (p->stamp != T->stamp) {
        p->stamp = T->stamp;
        p->old_count = p->count;
        if (bpe_train_grow((void **)&T->touched, &T->cap_touched, T->n_touched + 1,
                           sizeof *T->touched))
            return 1;
        T->touched[T->n_touched++] = (uint32_t)i;
    }
    p->count += delta;
    if (w >= 0 && (p->n_words == 0 || p->words[p->n_words - 1] != (uint32_t)w)) {
        if (bpe_train_grow((void **)&p->words, &p->cap_words, p->n_words + 1, sizeof *p->words))
            return 1;
        p->words[p->n_words++] = (uint32_t)w;
    }
    return 0;
}

// Push every touched pair whose count changed and is still worth merging; clear the
// touched list. Returns 0 or 1.
static int push_touched(bpe_trainer *T, int64_t min_count) {
    for (size_t k = 0; k < T->n_touched; k++) {
        pair_stat *p = &T->pairs[T->touched[k]];
        if (p->count != p->old_count && p->count >= min_count &&
            heap_push(T, (heap_entry){p->count, T->touched[k]}))
            return 1;
    }
    T->n_touched = 0;
    return 0;
}

int bpe_trainer_init(bpe_trainer *T, const word_map *wm, const char *text, int64_t min_count) {
    memset(T, 0, sizeof *T);
    if (wm->n > UINT32_MAX - 1) return 1;
    T->n_words = (uint32_t)wm->n;
    size_t total = 0, nw = wm->n ? wm->n : 1;
    for (size_t i = 0; i < wm->cap; i++) total += wm->v[i].count ? wm->v[i].len : 0;
    T->sym = malloc((total ? total : 1) * sizeof *T->sym);
    T->off = malloc(nw * sizeof *T->off);
    T->len = malloc(nw * sizeof *T->len);
    T->freq = malloc(nw * sizeof *T->freq);
    T->word_stamp = calloc(nw, sizeof *T->word_stamp);
    if (!T->sym || !T->off || !T->len || !T->freq || !T->word_stamp) return 1;
    uint8_t b[1];
    for (int c = 0; c < 256; c++) {
        b[0] = (uint8_t)c;
        if (token_add(T, b, 1) < 0) return 1;
    }
    T->stamp = 1;
    uint32_t w = 0;
    size_t pos = 0;
    for (size_t i = 0; i < wm->cap; i++) {
        const word_slot *s = &wm->v[i];
        if (!s->count) continue;
        T->off[w] = pos;
        T->len[w] = s->len;
        T->freq[w] = s->count;
        for (uint32_t k = 0; k < s->len; k++) {
            T->sym[pos + k] = (uint8_t)text[s->off + k];
            if (k && pair_add(T, T->sym[pos + k - 1], T->sym[pos + k], (int64_t)s->count, w))
                return 1;
        }
        pos += s->len;
        w++;
    }
    return push_touched(T, min_count);
}

// Whether word w holds the adjacent pair (a, b).
static int word_has_pair(const bpe_trainer *T, uint32_t w, uint32_t a, uint32_t b) {
    const uint32_t *s = T->sym + T->off[w];
    for (uint32_t k = 0; k + 1 < T->len[w]; k++)
        if (s[k] == a && s[k + 1] == b) return 1;
    return 0;
}

// Merge pair index pi into token c in every word that holds it. Returns 0 or 1.
static int apply_merge(bpe_trainer *T, uint32_t pi, uint32_t c, int64_t min_count) {
    uint32_t a = T->pairs[pi].a, b = T->pairs[pi].b;
    uint32_t *list = T->pairs[pi].words;   // taken: the pair is gone from every word after
    size_t n_list = T->pairs[pi].n_words;
    T->pairs[pi].words = NULL;
    T->pairs[pi].n_words = T->pairs[pi].cap_words = 0;
    T->stamp++;
    int rc = 0;
    for (size_t k = 0; k < n_list && !rc; k++) {
        uint32_t w = list[k];
        if (T->word_stamp[w] == T->stamp || !word_has_pair(T, w, a, b)) continue;
        T->word_stamp[w] = T->stamp;
        uint32_t *s = T->sym + T->off[w], n = T->len[w];
        int64_t f = (int64_t)T->freq[w];
        for (uint32_t i = 0; i + 1 < n && !rc; i++) rc = pair_add(T, s[i], s[i + 1], -f, -1);
        uint32_t m = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (i + 1 < n && s[i] == a && s[i + 1] == b) {
                s[m++] = c;
                i++;
            } else {
                s[m++] = s[i];
            }
        }
        T->len[w] = m;
        for (uint32_t i = 0; i + 1 < m && !rc; i++)
            rc = pair_add(T, s[i], s[i + 1], f, s[i] == c || s[i + 1] == c ? (int64_t)w : -1);
    }
    free(list);
    return rc || push_touched(T, min_count);
}

void bpe_trainer_free(bpe_trainer *T) {
    for (size_t i = 0; i < T->n_pairs; i++) free(T->pairs[i].words);
    void *owned[] = {T->sym, T->off, T->len, T->freq, T->word_stamp, T->tok_bytes,
                     T->tok_off, T->tok_len, T->tok_map, T->pairs, T->pair_keys,
                     T->pair_idx, T->heap, T->touched, T->merges};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++) free(owned[i]);
}

// The progress line: on a terminal rewritten in place with \r (at most every 0.1 s),
// otherwise a plain line every 10 s so a log file is not flooded; always a final one.
static void progress_merges(progress *p, size_t done, size_t total, int final) {
    double t = bpe_train_now_s();
    if (!final && t - p->last < (p->tty ? 0.1 : 10.0)) return;
    p->last = t;
    fprintf(stderr, "%stokenizer train: %zu / %zu merges, %.1f s%s", p->tty ? "\r" : "", done,
            total, t - p->t0, p->tty ? "   " : "\n");
    if (final && p->tty) fputc('\n', stderr);
    fflush(stderr);
}

int bpe_trainer_merge(bpe_trainer *T, uint64_t vocab_size, int n_specials, int64_t min_count,
                      progress *prog) {
    size_t target = (size_t)(vocab_size - 256 - (uint64_t)n_specials);
    uint8_t *buf = NULL;
    size_t cap_buf = 0;
    while ((uint64_t)T->n_tokens + (uint64_t)n_specials < vocab_size && T->n_heap) {
        heap_entry e = heap_pop(T);
        pair_stat *p = &T->pairs[e.pair];
        if (e.count != p->count) continue;   // stale: a fresher entry is in the heap
        if (e.count < min_count) break;
        size_t la = T->tok_len[p->a], lb = T->tok_len[p->b];
        if (bpe_train_grow((void **)&buf, &cap_buf, la + lb, 1)) goto oom;
        memcpy(buf, T->tok_bytes + T->tok_off[p->a], la);
        memcpy(buf + la, T->tok_bytes + T->tok_off[p->b], lb);
        int64_t c = bpe_trainer_token_find(T, buf, la + lb);
        if (c < 0 && (c = token_add(T, buf, la + lb)) < 0) goto oom;
        if (bpe_train_grow((void **)&T->merges, &T->cap_merges, 2 * (T->n_merges + 1),
                           sizeof *T->merges))
            goto oom;
        T->merges[2 * T->n_merges] = p->a;
        T->merges[2 * T->n_merges + 1] = p->b;
        T->n_merges++;
        if (apply_merge(T, e.pair, (uint32_t)c, min_count)) goto oom;
        progress_merges(prog, T->n_tokens - 256u, target, 0);
    }
    progress_merges(prog, T->n_tokens - 256u, target, 1);
    free(buf);
    return 0;
oom:
    free(buf);
    return 1;
}
