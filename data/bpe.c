// data/bpe.c: encode text with a loaded byte-level BPE tokenizer, id for id as Hugging
// Face `tokenizers` does (TokenizerImpl::encode with one input, no truncation/padding).
//
// The pipeline, in HF's order:
//   1. added tokens that are not `normalized` are cut out of the raw text
//      (leftmost-longest, non-overlapping, as aho-corasick's LeftmostLongest find_iter;
//      single_word, lstrip and rstrip applied to each match as AddedVocabulary does);
//   2. each remaining segment is normalized (NFC) on its own, and the `normalized` added
//      tokens (searched for in NFC form) are cut out of it the same way;
//   3. each remaining piece goes through the Split stages (matches and the gaps between
//      them, "Isolated") and ByteLevel (add_prefix_space per piece, then the GPT-2
//      regex if use_regex);
//   4. each word (its raw bytes: the byte-level map is a bijection, so the byte-level
//      string is never built) becomes ids: with ignore_merges a word in the vocab is one
//      id; otherwise one symbol per byte and the lowest-ranked adjacent pair is merged
//      until none is left (leftmost first among equal ranks, which is what HF's heap of
//      (rank, position) pops). Short words scan the pairs; long ones use HF's heap.
// With add_special the post-processor's BOS ids go first and its EOS ids last.
//
// Speed: one encoder per thread holds the PCRE2 match data and a word cache (word bytes
// -> ids, cleared when full), so a repeated word costs one hash lookup; pieces of one
// byte skip everything but a table lookup.
#include "data/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define BPE_SCAN_MAX 48               // words up to this many symbols: scan pairs, no heap
#define CACHE_MAX_WORD 128            // longer words are not cached (rare, and would crowd it)
#define CACHE_SLOTS (1u << 16)        // slot table size (power of two)
#define CACHE_MAX_ENTRIES (1u << 15)  // half the slots: short probe sequences
#define CACHE_KEY_BYTES (1u << 21)    // 2 MiB of word bytes
#define CACHE_ID_COUNT (1u << 19)     // 2 MiB of ids

typedef struct cache_entry {
    uint64_t hash;
    uint32_t key_off, key_len;
    uint32_t ids_off, n_ids;
} cache_entry;

typedef struct heap_item {   // one candidate merge (HF's `Merge`)
    uint32_t rank;
    uint32_t pos;            // index of the left symbol
    uint32_t id;             // the merged token
} heap_item;

struct tokenizer_encoder {
    const tokenizer *t;
    pretok_matcher *split_m[TOK_MAX_SPLITS];
    pretok_matcher *bl_m;       // ByteLevel's GPT-2 regex, or NULL
    pretok_matcher *word_m;     // single_word test, or NULL
    // output of the current tokenizer_encode call
    uint32_t **out;
    size_t *out_cap;
    size_t out_n;
    int oom;
    // scratch
    char *pre;                  // " " + piece (add_prefix_space)
    size_t pre_cap;
    uint32_t *sym, *rank, *nid; // BPE symbols, pair ranks, pair results
    int32_t *prev, *next;       // linked list (heap path)
    heap_item *heap;
    size_t sym_cap, heap_cap, heap_n;
    // word cache
    uint32_t *slots;            // (CACHE_SLOTS) entry index + 1, 0: empty
    cache_entry *entries;       // (CACHE_MAX_ENTRIES)
    uint32_t n_entries;
    char *keys;                 // (CACHE_KEY_BYTES)
    uint32_t keys_len;
    uint32_t *cids;             // (CACHE_ID_COUNT)
    uint32_t cids_len;
};

// ---- output ------------------------------------------------------------------------------

// Append id to the caller's array, growing it. On out of memory sets e->oom.
static inline void out_push(tokenizer_encoder *e, uint32_t id) {
    if (e->out_n == *e->out_cap) {
        if (e->oom) return;
        size_t c = *e->out_cap ? *e->out_cap * 2 : 256;
        uint32_t *p = realloc(*e->out, c * sizeof *p);
        if (!p) {
            e->oom = 1;
            return;
        }
        *e->out = p;
        *e->out_cap = c;
    }
    (*e->out)[e->out_n++] = id;
}

// ---- NFC -----------------------------------------------------------------------------------

// NFC of a valid UTF-8 run appended to *b. Returns 0 or -1.
static int nfc_run(const char *s, size_t n, char **b, size_t *len, size_t *cap) {
    utf8proc_uint8_t *r = NULL;
    const char *src = s;
    size_t k = n;
    // Every code point below U+0300 is NFC_Quick_Check=Yes with combining class 0, so text
    // whose bytes are all below 0xCC (no character from U+0300 on) is already NFC.
    int plain = 1;
    for (size_t i = 0; i < n && plain; i++) plain = (unsigned char)s[i] < 0xCC;
    if (!plain) {
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &r,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m < 0) return m == UTF8PROC_ERROR_NOMEM ? -1 : (free(r), -2);
        src = (const char *)r;
        k = (size_t)m;
    }
    if (*len + k + 1 > *cap) {
        size_t c = (*cap + k) * 2 + 16;
        char *nb = realloc(*b, c);
        if (!nb) {
            free(r);
            return -1;
        }
        *b = nb;
        *cap = c;
    }
    memcpy(*b + *len, src, k);
    *len += k;
    free(r);
    return 0;
}

int tok_normalize_nfc(const char *s, size_t n, char **out, size_t *out_len) {
    char *b = NULL;
    size_t len = 0, cap = 0;
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        size_t j = i;   // the valid run [i, j)
        while (j < n) {
            size_t l = utf8_valid_len(u + j, n - j);
            if (!l) break;
            j += l;
        }
        if (j > i) {
            int rc = nfc_run(s + i, j - i, &b, &len, &cap);
            if (rc == -1) {
                free(b);
                return -1;
            }
            if (rc == -2) {   // utf8proc refused valid UTF-8 (cannot happen): keep as is
                char *nb = realloc(b, len + (j - i) + 1);
                if (!nb) {
                    free(b);
                    return -1;
                }
                b = nb;
                memcpy(b + len, s + i, j - i);
                len += j - i;
                cap = len + 1;
            }
        }
        if (j < n) {   // an invalid byte: kept as it is
            if (len + 2 > cap) {
                char *nb = realloc(b, (cap + 1) * 2 + 16);
                if (!nb) {
                    free(b);
                    return -1;
                }
                b = nb;
                cap = (cap + 1) * 2 + 16;
            }
            b[len++] = s[j++];
        }
        i = j;
    }
    if (!b && !(b = malloc(1))) return -1;
    b[len] = '\0';
    *out = b;
    *out_len = len;
    return 0;
}

// ---- word cache ----------------------------------------------------------------------------

// Empty the word cache (its memory is kept).
static void cache_clear(tokenizer_encoder *e) {
    memset(e->slots, 0, CACHE_SLOTS * sizeof *e->slots);
    e->n_entries = 0;
    e->keys_len = 0;
    e->cids_len = 0;
}

// The cached ids of word s[0..n) (count in *k), or NULL.
static const uint32_t *cache_get(const tokenizer_encoder *e, const char *s, size_t n,
                                 uint64_t h, uint32_t *k) {
    for (uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        uint32_t x = e->slots[i];
        if (!x) return NULL;
        const cache_entry *c = &e->entries[x - 1];
        if (c->hash == h && c->key_len == n && memcmp(e->keys + c->key_off, s, n) == 0) {
            *k = c->n_ids;
            return e->cids + c->ids_off;
        }
    }
}

// Remember word s[0..n) (hash h) -> ids[0..k), clearing the cache first when it is full.
static void cache_put(tokenizer_encoder *e, const char *s, size_t n, uint64_t h,
                      const uint32_t *ids, uint32_t k) {
    if (e->n_entries == CACHE_MAX_ENTRIES || e->keys_len + n > CACHE_KEY_BYTES ||
        e->cids_len + k > CACHE_ID_COUNT)
        cache_clear(e);   // simplest bounded policy; refills with the words in use
    uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);
    while (e->slots[i]) i = (i + 1) & (CACHE_SLOTS - 1);
    cache_entry *c = &e->entries[e->n_entries];
    c->hash = h;
    c->key_off = e->keys_len;
    c->key_len = (uint32_t)n;
    c->ids_off = e->cids_len;
    c->n_ids = k;
    memcpy(e->keys + e->keys_len, s, n);
    memcpy(e->cids + e->cids_len, ids, k * sizeof *ids);
    e->keys_len += (uint32_t)n;
    e->cids_len += k;
    e->slots[i] = ++e->n_entries;
}

// ---- BPE -----------------------------------------------------------------------------------

// Make room for n symbols. Returns 0 or -1.
static int sym_reserve(tokenizer_encoder *e, size_t n) {
    if (n <= e->sym_cap) return 0;
    size_t c = n * 2;
    uint32_t *a = realloc(e->sym, c * sizeof *a);
    if (a) e->sym = a;
    uint32_t *r = realloc(e->rank, c * sizeof *r);
    if (r) e->rank = r;
    uint32_t *d = realloc(e->nid, c * sizeof *d);
    if (d) e->nid = d;
    int32_t *p = realloc(e->prev, c * sizeof *p);
    if (p) e->prev = p;
    int32_t *q = realloc(e->next, c * sizeof *q);
    if (q) e->next = q;
    if (!a || !r || !d || !p || !q) return -1;
    e->sym_cap = c;
    return 0;
}

// The initial symbols of word s[0..n) into e->sym, as HF's BPE::merge_word builds them
// (a byte without a token: its "<0xXX>" tokens under byte_fallback, else unk, else
// nothing). Returns the count.
static size_t word_symbols(tokenizer_encoder *e, const uint8_t *s, size_t n) {
    const tokenizer *t = e->t;
    size_t k = 0;
    int64_t unk_pending = -1;   // HF keeps one unk back so that fuse_unk can extend it
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[s[i]];
        if (id >= 0) {
            if (unk_pending >= 0) e->sym[k++] = (uint32_t)unk_pending;
            unk_pending = -1;
            e->sym[k++] = (uint32_t)id;
            continue;
        }
        if (t->byte_fallback) {   // the UTF-8 bytes of the byte's byte-level character
            char c[2];
            size_t cl = bytelevel_encode_bytes(&s[i], 1, c);
            int ok = 1;
            for (size_t j = 0; j < cl; j++) ok &= t->fallback_id[(uint8_t)c[j]] >= 0;
            if (ok) {
                for (size_t j = 0; j < cl; j++) e->sym[k++] = (uint32_t)t->fallback_id[(uint8_t)c[j]];
                continue;
            }
        }
        if (t->unk_id >= 0) {
            if (unk_pending >= 0 && !t->fuse_unk) e->sym[k++] = (uint32_t)unk_pending;
            unk_pending = t->unk_id;
        }
    }
    if (unk_pending >= 0) e->sym[k++] = (uint32_t)unk_pending;
    return k;
}

// Rank and result of merging (a, b) into *rank / *id; rank UINT32_MAX: no merge.
static inline void pair_rank(const tok_merges *m, uint32_t a, uint32_t b, uint32_t *rank,
                             uint32_t *id) {
    const tok_merge_slot *s = tok_merges_find(m, a, b);
    *rank = s ? s->rank : UINT32_MAX;
    *id = s ? s->id : 0;
}

// Short words: repeatedly merge the leftmost lowest-ranked pair. Returns the new count.
static size_t bpe_scan(tokenizer_encoder *e, size_t k) {
    const tok_merges *m = &e->t->merges;
    uint32_t *sym = e->sym, *rank = e->rank, *nid = e->nid;
    for (size_t i = 0; i + 1 < k; i++) pair_rank(m, sym[i], sym[i + 1], &rank[i], &nid[i]);
    while (k > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < k; i++)
            if (rank[i] < rank[best]) best = i;
        if (rank[best] == UINT32_MAX) break;
        sym[best] = nid[best];
        for (size_t i = best + 1; i + 1 < k; i++) {   // drop symbol best + 1
            sym[i] = sym[i + 1];
            rank[i] = rank[i + 1];
            nid[i] = nid[i + 1];
        }
        k--;
        if (best > 0) pair_rank(m, sym[best - 1], sym[best], &rank[best - 1], &nid[best - 1]);
        if (best + 1 < k) pair_rank(m, sym[best], sym[best + 1], &rank[best], &nid[best]);
    }
    return k;
}

// HF's Merge order: lower rank first, then the leftmost position.
static inline int heap_less(const heap_item *a, const heap_item *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

// Push (rank, pos, id) onto the min-heap. Returns 0 or -1.
static int heap_push(tokenizer_encoder *e, uint32_t rank, uint32_t pos, uint32_t id) {
    if (e->heap_n == e->heap_cap) {
        size_t c = e->heap_cap ? e->heap_cap * 2 : 256;
        heap_item *h = realloc(e->heap, c * sizeof *h);
        if (!h) return -1;
        e->heap = h;
        e->heap_cap = c;
    }
    heap_item *h = e->heap;
    size_t i = e->heap_n++;
    h[i] = (heap_item){rank, pos, id};
    while (i > 0 && heap_less(&h[i], &h[(i - 1) / 2])) {
        heap_item x = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = x;
        i = (i - 1) / 2;
    }
    return 0;
}

// Remove and return the smallest item (the heap is not empty).
static heap_item heap_pop(tokenizer_encoder *e) {
    heap_item *h = e->heap, top = h[0];
    h[0] = h[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && heap_less(&h[l], &h[m])) m = l;
        if (r < n && heap_less(&h[r], &h[m])) m = r;
        if (m == i) break;
        heap_item x = h[i];
        h[i] = h[m];
        h[m] = x;
        i = m;
    }
    return top;
}

// Long words: HF's Word::merge_all (a heap of candidate merges, stale entries skipped;
// a removed symbol is marked by rank[pos] = 0). Compacts e->sym; returns the count, or
// 0 with e->oom set.
static size_t bpe_heap(tokenizer_encoder *e, size_t k) {
    const tok_merges *m = &e->t->merges;
    uint32_t *sym = e->sym;
    uint32_t *alive = e->rank;   // reused: 1 while the symbol exists
    e->heap_n = 0;
    for (size_t i = 0; i < k; i++) {
        e->prev[i] = (int32_t)i - 1;
        e->next[i] = i + 1 < k ? (int32_t)i + 1 : -1;
        alive[i] = 1;
    }
    for (size_t i = 0; i + 1 < k; i++) {
        const tok_merge_slot *s = tok_merges_find(m, sym[i], sym[i + 1]);
        if (s && heap_push(e, s->rank, (uint32_t)i, s->id) != 0) goto oom;
    }
    while (e->heap_n) {
        heap_item top = heap_pop(e);
        uint32_t p = top.pos;
        if (!alive[p] || e->next[p] < 0) continue;
        int32_t q = e->next[p];
        const tok_merge_slot *s = tok_merges_find(m, sym[p], sym[q]);
        if (!s || s->id != top.id) continue;   // stale entry
        sym[p] = top.id;
        alive[q] = 0;
        e->next[p] = e->next[q];
        if (e->next[q] >= 0) e->prev[e->next[q]] = (int32_t)p;
        if (e->prev[p] >= 0) {
            int32_t l = e->prev[p];
            s = tok_merges_find(m, sym[l], sym[p]);
            if (s && heap_push(e, s->rank, (uint32_t)l, s->id) != 0) goto oom;
        }
        if (e->next[p] >= 0) {
            s = tok_merges_find(m, sym[p], sym[e->next[p]]);
            if (s && heap_push(e, s->rank, p, s->id) != 0) goto oom;
        }
    }
    size_t n = 0;
    for (size_t i = 0; i < k; i++)
        if (alive[i]) sym[n++] = sym[i];
    return n;
oom:
    e->oom = 1;
    return 0;
}

// Encode one pre-tokenized word s[0..n) (n >= 1) and append its ids.
static void bpe_word(tokenizer_encoder *e, const char *s, size_t n) {
    const tokenizer *t = e->t;
    const uint8_t *u = (const uint8_t *)s;
    if (n == 1 && t->byte_id[u[0]] >= 0) {
        out_push(e, (uint32_t)t->byte_id[u[0]]);
        return;
    }
    uint64_t h = tok_hash_bytes(s, n);   // one hash for the vocab and the cache
    if (t->ignore_merges) {
        int64_t id = tok_strmap_get_hashed(&t->raw, s, n, h);
        if (id >= 0) {
            out_push(e, (uint32_t)id);
            return;
        }
    }
    if (n <= CACHE_MAX_WORD) {
        uint32_t k;
        const uint32_t *ids = cache_get(e, s, n, h, &k);
        if (ids) {
            for (uint32_t i = 0; i < k; i++) out_push(e, ids[i]);
            return;
        }
    }
    // at most 2 symbols per byte (byte_fallback of a 2-byte byte-level character)
    if (sym_reserve(e, 2 * n + 1) != 0) {
        e->oom = 1;
        return;
    }
    size_t k = word_symbols(e, u, n);
    k = k <= BPE_SCAN_MAX ? bpe_scan(e, k) : bpe_heap(e, k);
    for (size_t i = 0; i < k; i++) out_push(e, e->sym[i]);
    if (n <= CACHE_MAX_WORD && !e->oom) cache_put(e, s, n, h, e->sym, (uint32_t)k);
}

// ---- pre-tokenization ---------------------------------------------------------------------

// ByteLevel: the prefix space, then the GPT-2 regex (if use_regex), then BPE.
static void stage_bytelevel(tokenizer_encoder *e, const char *s, size_t n) {
    const tokenizer *t = e->t;
    if (t->prefix_space && s[0] != ' ') {
        if (n + 1 > e->pre_cap) {
            size_t c = 2 * (n + 1);
            char *p = realloc(e->pre, c);
            if (!p) {
                e->oom = 1;
                return;
            }
            e->pre = p;
            e->pre_cap = c;
        }
        e->pre[0] = ' ';
        memcpy(e->pre + 1, s, n);
        s = e->pre;
        n++;
    }
    if (!e->bl_m) {
        bpe_word(e, s, n);
        return;
    }
    pretok_split sp;
    pretok_split_init(&sp);
    size_t a, b;
    while (pretok_split_next(e->bl_m, s, n, &sp, &a, &b)) bpe_word(e, s + a, b - a);
}

// Split stage k (Isolated), then the next stage on each piece.
static void stage_split(tokenizer_encoder *e, int k, const char *s, size_t n) {
    if (k == e->t->n_split) {
        stage_bytelevel(e, s, n);
        return;
    }
    pretok_split sp;
    pretok_split_init(&sp);
    size_t a, b;
    while (pretok_split_next(e->split_m[k], s, n, &sp, &a, &b)) stage_split(e, k + 1, s + a, b - a);
}

// ---- added tokens ----------------------------------------------------------------------------

int32_t tok_trie_longest(const tok_trie *tr, const uint8_t *text, size_t n, size_t *len) {
    int32_t best = -1;
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        const tok_trie_node *v = &tr->nodes[node];
        uint32_t lo = v->first_edge, hi = lo + v->n_edges, c = text[i];
        while (lo < hi) {   // binary search the sorted edges
            uint32_t mid = (lo + hi) / 2;
            if (tr->edge_byte[mid] < c) lo = mid + 1;
            else hi = mid;
        }
        if (lo == v->first_edge + v->n_edges || tr->edge_byte[lo] != c) break;
        node = tr->edge_child[lo];
        if (tr->nodes[node].added >= 0) {
            best = tr->nodes[node].added;
            *len = i + 1;
        }
    }
    return best;
}

// Unicode White_Space (Rust's char::is_whitespace and regex \s).
static int is_white_space(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

// The code point of the character ending at s[end) (start in *start), or UINT32_MAX if
// the bytes before end are not valid UTF-8.
static uint32_t cp_before(const uint8_t *s, size_t end, size_t *start) {
    for (size_t l = 1; l <= 4 && l <= end; l++) {
        if (utf8_valid_len(s + end - l, l) == l) {
            *start = end - l;
            return utf8_decode_valid(s + end - l, l);
        }
        if ((s[end - l] & 0xC0) != 0x80) break;
    }
    return UINT32_MAX;
}

// Start of the whitespace that ends s[0..end) (HF's space_leftmost_at_end).
static size_t space_start_before(const uint8_t *s, size_t end) {
    size_t st;
    uint32_t c;
    while (end > 0 && (c = cp_before(s, end, &st)) != UINT32_MAX && is_white_space(c)) end = st;
    return end;
}

// End of the whitespace that starts s[from..n) (HF's space_rightmost_at_start).
static size_t space_end_after(const uint8_t *s, size_t from, size_t n) {
    while (from < n) {
        size_t l = utf8_valid_len(s + from, n - from);
        if (!l || !is_white_space(utf8_decode_valid(s + from, l))) break;
        from += l;
    }
    return from;
}

// Whether the character at s[0..len) is a word character (Rust regex \w).
static int is_word_char(tokenizer_encoder *e, const uint8_t *s, size_t len) {
    size_t pos = 0, a, b;
    return e->word_m && pretok_next(e->word_m, (const char *)s, len, &pos, &a, &b) == 1;
}

typedef void (*segment_fn)(tokenizer_encoder *e, const char *s, size_t n);

// HF's AddedVocabulary::find_matches + split: cut the tokens of trie tr out of s[0..n),
// pass the segments between them (non-empty) to next, and append the tokens' ids.
static void split_added(tokenizer_encoder *e, const tok_trie *tr, const char *s, size_t n,
                        segment_fn next) {
    const uint8_t *u = (const uint8_t *)s;
    size_t start_offset = 0, i = 0;
    while (i < n) {
        if (!tr->first[u[i]]) {
            i++;
            continue;
        }
        size_t len;
        int32_t k = tok_trie_longest(tr, u + i, n - i, &len);
        if (k < 0) {
            i++;
            continue;
        }
        const tok_added *a = &e->t->added[k];
        size_t start = i, stop = i + len;
        i = stop;   // the automaton goes on after the match, whatever is decided below
        if (a->single_word) {
            size_t st;
            int start_space = start == 0;
            if (!start_space) {
                uint32_t c = cp_before(u, start, &st);
                start_space = c == UINT32_MAX || !is_word_char(e, u + st, start - st);
            }
            int stop_space = stop == n;
            if (!stop_space) {
                size_t l = utf8_valid_len(u + stop, n - stop);
                stop_space = !l || !is_word_char(e, u + stop, l);
            }
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = space_start_before(u, start);
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) stop = space_end_after(u, stop, n);
        if (start_offset < start) next(e, s + start_offset, start - start_offset);
        out_push(e, a->id);
        start_offset = stop;
    }
    if (start_offset < n) next(e, s + start_offset, n - start_offset);
}

// A piece left between added tokens: pre-tokenize and encode it.
static void stage_pretokenize(tokenizer_encoder *e, const char *s, size_t n) {
    stage_split(e, 0, s, n);
}

// A segment between non-normalized added tokens: normalize, cut the normalized tokens.
static void stage_normalize(tokenizer_encoder *e, const char *s, size_t n) {
    const tokenizer *t = e->t;
    char *norm = NULL;
    if (t->nfc) {
        size_t len;
        if (tok_normalize_nfc(s, n, &norm, &len) != 0) {
            e->oom = 1;
            return;
        }
        s = norm;
        n = len;
    }
    if (n > 0) {
        if (t->trie_norm.nodes) split_added(e, &t->trie_norm, s, n, stage_pretokenize);
        else stage_pretokenize(e, s, n);
    }
    free(norm);
}

// ---- public --------------------------------------------------------------------------------

tokenizer_encoder *tokenizer_encoder_new(const tokenizer *t) {
    tokenizer_encoder *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->t = t;
    int ok = 1;
    for (int k = 0; k < t->n_split; k++) ok &= (e->split_m[k] = pretok_matcher_new(t->split[k])) != NULL;
    if (t->bytelevel_re) ok &= (e->bl_m = pretok_matcher_new(t->bytelevel_re)) != NULL;
    if (t->word_re) ok &= (e->word_m = pretok_matcher_new(t->word_re)) != NULL;
    e->slots = calloc(CACHE_SLOTS, sizeof *e->slots);
    e->entries = malloc(CACHE_MAX_ENTRIES * sizeof *e->entries);
    e->keys = malloc(CACHE_KEY_BYTES);
    e->cids = malloc(CACHE_ID_COUNT * sizeof *e->cids);
    if (!ok || !e->slots || !e->entries || !e->keys || !e->cids || sym_reserve(e, 256) != 0) {
        tokenizer_encoder_free(e);
        return NULL;
    }
    return e;
}

void tokenizer_encoder_free(tokenizer_encoder *e) {
    if (!e) return;
    for (int k = 0; k < TOK_MAX_SPLITS; k++) pretok_matcher_free(e->split_m[k]);
    pretok_matcher_free(e->bl_m);
    pretok_matcher_free(e->word_m);
    free(e->pre);
    free(e->sym);
    free(e->rank);
    free(e->nid);
    free(e->prev);
    free(e->next);
    free(e->heap);
    free(e->slots);
    free(e->entries);
    free(e->keys);
    free(e->cids);
    free(e);
}

int64_t tokenizer_encode(tokenizer_encoder *e, const char *text, size_t n, int add_special,
                         uint32_t **ids, size_t *cap) {
    const tokenizer *t = e->t;
    e->out = ids;
    e->out_cap = cap;
    e->out_n = 0;
    e->oom = 0;
    if (add_special)
        for (uint32_t i = 0; i < t->n_bos; i++) out_push(e, t->bos[i]);
    if (n > 0) {
        if (t->trie_raw.nodes) split_added(e, &t->trie_raw, text, n, stage_normalize);
        else stage_normalize(e, text, n);
    }
    if (add_special)
        for (uint32_t i = 0; i < t->n_eos; i++) out_push(e, t->eos[i]);
    return e->oom ? -1 : (int64_t)e->out_n;
}
