// data/tokenizer.c: load a Hugging Face tokenizer.json (byte-level BPE) into the
// immutable `tokenizer` that data/bpe.c encodes with; the simple queries on it.
//
// What is accepted is exactly what data/bpe.c reproduces bit for bit; anything else is
// refused at load time with a one-line message naming the field and its value, so a
// tokenizer can never be silently encoded differently from `tokenizers`:
//   model          BPE: vocab, merges ("a b" strings or ["a", "b"] pairs), ignore_merges,
//                  unk_token/fuse_unk, byte_fallback; dropout null or 0;
//                  continuing_subword_prefix and end_of_word_suffix null or ""
//   added_tokens   content, single_word, lstrip, rstrip, normalized, special
//   normalizer     null, NFC, or a Sequence of those
//   pre_tokenizer  ByteLevel, or a Sequence of Split (Regex or String pattern,
//                  behavior Isolated, invert false) followed by one ByteLevel
//   decoder        ByteLevel or null
//   post_processor null, ByteLevel, TemplateProcessing (single template), or a
//                  Sequence of those
//
// Ids follow `tokenizers` rather than the file where they disagree: an added token gets
// the id of its content in the model vocab, or the next id after the vocab (HF's
// AddedVocabulary::add_tokens); the "id" written beside it is only checked (a warning).
//
// Every problem is reported once, here, as "anvil: tokenizer 'PATH': ..." and load
// returns 2; the helpers below return -1 after printing.
#include "data/tokenizer_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_ID 16777215   // 2^24 - 1: ids index dense tables; real vocabularies are < 2^18

// ---- byte-string hash map ---------------------------------------------------------------

int64_t tok_strmap_get(const tok_strmap *m, const char *key, size_t n) {
    return tok_strmap_get_hashed(m, key, n, tok_hash_bytes(key, n));
}

int64_t tok_strmap_get_hashed(const tok_strmap *m, const char *key, size_t n, uint64_t h) {
    if (!m->cap) return -1;
    uint32_t mask = m->cap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        uint32_t s = m->slots[i];
        if (!s) return -1;
        const tok_strmap_entry *e = &m->entries[s - 1];
        if (e->hash == h && e->len == n && memcmp(m->arena + e->off, key, n) == 0) return e->val;
    }
}

// Double the slot table and reinsert every entry. Returns 0 or -1.
static int strmap_grow(tok_strmap *m) {
    uint32_t cap = m->cap ? m->cap * 2 : 1024;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (uint32_t k = 0; k < m->n; k++) {
        uint32_t i = (uint32_t)m->entries[k].hash & (cap - 1);
        while (slots[i]) i = (i + 1) & (cap - 1);
        slots[i] = k + 1;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int tok_strmap_put(tok_strmap *m, const char *key, size_t n, uint32_t val, uint32_t *old) {
    if (2 * (uint64_t)(m->n + 1) >= m->cap && strmap_grow(m) != 0) return -1;
    uint64_t h = tok_hash_bytes(key, n);
    uint32_t mask = m->cap - 1, i = (uint32_t)h & mask;
    for (; m->slots[i]; i = (i + 1) & mask) {
        tok_strmap_entry *e = &m->entries[m->slots[i] - 1];
        if (e->hash == h && e->len == n && memcmp(m->arena + e->off, key, n) == 0) {
            if (old) *old = e->val;
            e->val = val;
            return 1;
        }
    }
    if (m->arena_len + n > UINT32_MAX) return -1;
    if (m->arena_len + n > m->arena_cap) {
        size_t c = m->arena_cap ? m->arena_cap * 2 : 65536;
        while (c < m->arena_len + n) c *= 2;
        char *a = realloc(m->arena, c);
        if (!a) return -1;
        m->arena = a;
        m->arena_cap = c;
    }
    if (m->n == m->ncap) {
        uint32_t c = m->ncap ? m->ncap * 2 : 1024;
        tok_strmap_entry *e = realloc(m->entries, (size_t)c * sizeof *e);
        if (!e) return -1;
        m->entries = e;
        m->ncap = c;
    }
    memcpy(m->arena + m->arena_len, key, n);
    m->entries[m->n] = (tok_strmap_entry){h, (uint32_t)m->arena_len, (uint32_t)n, val};
    m->arena_len += n;
    m->slots[i] = ++m->n;
    return 0;
}

void tok_strmap_free(tok_strmap *m) {
    free(m->slots);
    free(m->entries);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

// ---- errors ----------------------------------------------------------------------------

// Print "anvil: tokenizer 'PATH': <message>". Returns -1 (so callers can `return fail(...)`).
static int fail(const tokenizer *t, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "anvil: tokenizer '%s': %s\n", t->path, msg);
    return -1;
}

// A JSON value's type in words, for messages.
static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

// Up to 60 bytes of s for a message, with control characters shown as '?'.
static const char *shown(const char *s, size_t n, char buf[64]) {
    size_t k = n < 60 ? n : 60;
    for (size_t i = 0; i < k; i++) buf[i] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
    buf[k] = '\0';
    return buf;
}

// Optional boolean `key` of object o (absent or null: def). Returns 0 or -1.
static int get_bool(const tokenizer *t, const json_t *o, const char *where, const char *key,
                    int def, int *out) {
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return fail(t, "%s.%s: expected true or false, got %s", where, key, json_kind(v));
    *out = json_is_true(v);
    return 0;
}

// The "type" string of object o, or NULL after printing why not.
static const char *get_type(const tokenizer *t, const json_t *o, const char *where) {
    if (!json_is_object(o)) {
        fail(t, "%s: expected an object, got %s", where, json_kind(o));
        return NULL;
    }
    const json_t *v = json_object_get(o, "type");
    if (!json_is_string(v)) {
        fail(t, "%s.type: missing or not a string", where);
        return NULL;
    }
    return json_string_value(v);
}

// ---- the model -------------------------------------------------------------------------

// Raw bytes of a byte-level string s[0..n) into out (room for n). Returns the length, or
// -1 if some character is not in the byte-level alphabet.
static ptrdiff_t bytelevel_to_raw(const char *s, size_t n, char *out) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, k = 0;
    while (i < n) {
        size_t len = utf8_valid_len(u + i, n - i);
        if (len == 0) return -1;
        int b = bytelevel_cp_to_byte(utf8_decode_valid(u + i, len));
        if (b < 0) return -1;
        out[k++] = (char)b;
        i += len;
    }
    return (ptrdiff_t)k;
}

// Grow the per-id tables to hold ids below n (new ids have no token yet). Returns 0 or -1.
static int ids_reserve(tokenizer *t, uint32_t n) {
    if (n <= t->n_ids) return 0;
    uint32_t *off = realloc(t->dec_off, (size_t)n * sizeof *off);
    if (off) t->dec_off = off;
    uint32_t *len = realloc(t->dec_len, (size_t)n * sizeof *len);
    if (len) t->dec_len = len;
    uint8_t *sp = realloc(t->is_special, n);
    if (sp) t->is_special = sp;
    if (!off || !len || !sp) return -1;
    for (uint32_t i = t->n_ids; i < n; i++) {
        t->dec_len[i] = UINT32_MAX;
        t->dec_off[i] = 0;
        t->is_special[i] = 0;
    }
    t->n_ids = n;
    return 0;
}

// Arena for decoded token bytes (grown with realloc; offsets stay valid).
typedef struct dec_buf {
    size_t len, cap;
} dec_buf;

// Set id's decoded bytes to s[0..n). Returns 0 or -1 (out of memory).
static int dec_set(tokenizer *t, dec_buf *d, uint32_t id, const char *s, size_t n) {
    if (d->len + n > UINT32_MAX) return -1;
    if (d->len + n > d->cap) {
        size_t c = d->cap ? d->cap * 2 : 1 << 20;
        while (c < d->len + n) c *= 2;
        char *a = realloc(t->dec_arena, c);
        if (!a) return -1;
        t->dec_arena = a;
        d->cap = c;
    }
    memcpy(t->dec_arena + d->len, s, n);
    t->dec_off[id] = (uint32_t)d->len;
    t->dec_len[id] = (uint32_t)n;
    d->len += n;
    return 0;
}

// model.vocab: fill vocab, raw, byte_id and the decoded bytes. Returns 0 or -1.
static int load_vocab(tokenizer *t, const json_t *vocab, dec_buf *d) {
    if (!json_is_object(vocab))
        return fail(t, "model.vocab: expected an object (token -> id), got %s",
                    vocab ? json_kind(vocab) : "nothing (missing)");
    // First pass: the largest id, so the per-id tables are allocated once.
    uint64_t max_id = 0;
    size_t max_len = 0;
    char b1[64], b2[64];
    for (void *it = json_object_iter((json_t *)vocab); it;
         it = json_object_iter_next((json_t *)vocab, it)) {
        const json_t *v = json_object_iter_value(it);
        size_t klen = json_object_iter_key_len(it);
        const char *key = json_object_iter_key(it);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > TOK_MAX_ID)
            return fail(t, "model.vocab['%s']: expected an id from 0 to %d, got %s",
                        shown(key, klen, b1), TOK_MAX_ID,
                        json_is_integer(v) ? "one out of range" : json_kind(v));
        if ((uint64_t)json_integer_value(v) > max_id) max_id = (uint64_t)json_integer_value(v);
        if (klen > max_len) max_len = klen;
    }
    if (json_object_size(vocab) == 0) return fail(t, "model.vocab: empty");
    if (ids_reserve(t, (uint32_t)max_id + 1) != 0) return fail(t, "out of memory");
    char *raw = malloc(max_len + 1);
    if (!raw) return fail(t, "out of memory");
    int rc = 0;
    for (void *it = json_object_iter((json_t *)vocab); it && rc == 0;
         it = json_object_iter_next((json_t *)vocab, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        uint32_t id = (uint32_t)json_integer_value(json_object_iter_value(it));
        if (t->dec_len[id] != UINT32_MAX) {
            // HF would keep one of the two for decoding; a file like this is broken.
            const tok_strmap_entry *e = NULL;
            for (uint32_t k = 0; k < t->vocab.n && !e; k++)
                if (t->vocab.entries[k].val == id) e = &t->vocab.entries[k];
            rc = fail(t, "model.vocab: id %u is given to two tokens ('%s' and '%s')", id,
                      e ? shown(t->vocab.arena + e->off, e->len, b1) : "?",
                      shown(key, klen, b2));
            break;
        }
        if (tok_strmap_put(&t->vocab, key, klen, id, NULL) < 0) {
            rc = fail(t, "out of memory");
            break;
        }
        ptrdiff_t rlen = bytelevel_to_raw(key, klen, raw);
        if (rlen >= 0) {   // byte-level token: BPE can produce it
            if (tok_strmap_put(&t->raw, raw, (size_t)rlen, id, NULL) < 0) rc = fail(t, "out of memory");
            else if (dec_set(t, d, id, raw, (size_t)rlen) != 0) rc = fail(t, "out of memory");
        } else if (dec_set(t, d, id, key, klen) != 0) {   // HF's ByteLevel decoder: as is
            rc = fail(t, "out of memory");
        }
    }
    free(raw);
    if (rc != 0) return rc;
    t->model_vocab_entries = (uint32_t)json_object_size(vocab);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = (int32_t)tok_strmap_get(&t->raw, &c, 1);
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->fallback_id[b] = (int32_t)tok_strmap_get(&t->vocab, name, strlen(name));
    }
    return 0;
}

// Insert merge (a, b) -> (rank, id) into the table (sized beforehand). A pair listed twice
// keeps its last rank, as HF's HashMap collect does.
static void merges_insert(tok_merges *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t id) {
    uint64_t key = ((uint64_t)a << 32) | b;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> m->shift;
    while (m->slots[i].key != TOK_MERGE_EMPTY && m->slots[i].key != key) i = (i + 1) & m->mask;
    if (m->slots[i].key == TOK_MERGE_EMPTY) m->n++;
    m->slots[i] = (tok_merge_slot){key, rank, id};
}

// model.merges. Returns 0 or -1.
static int load_merges(tokenizer *t, const json_t *merges) {
    if (!json_is_array(merges))
        return fail(t, "model.merges: expected an array, got %s",
                    merges ? json_kind(merges) : "nothing (missing)");
    size_t n = json_array_size(merges);
    if (n > UINT32_MAX / 4) return fail(t, "model.merges: too many (%zu)", n);
    uint64_t cap = 1024;
    int bits = 10;
    while (cap < 2 * (uint64_t)n + 2) {
        cap *= 2;
        bits++;
    }
    t->merges.slots = malloc(cap * sizeof *t->merges.slots);
    if (!t->merges.slots) return fail(t, "out of memory");
    for (uint64_t i = 0; i < cap; i++) t->merges.slots[i].key = TOK_MERGE_EMPTY;
    t->merges.mask = cap - 1;
    t->merges.shift = 64 - bits;
    char *cat = NULL;
    size_t cat_cap = 0;
    char b1[64];
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const json_t *m = json_array_get(merges, i);
        const char *a, *b;
        size_t alen, blen;
        if (json_is_string(m)) {   // "a b": exactly one space (HF splits on ' ', wants 2 parts)
            const char *s = json_string_value(m);
            size_t len = json_string_length(m);
            if (len >= 8 && memcmp(s, "#version", 8) == 0) continue;   // merges.txt header, skipped as HF does
            const char *sp = memchr(s, ' ', len);
            if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s)))
                return free(cat), fail(t, "model.merges[%zu]: '%s' is not two tokens separated by "
                                       "one space", i, shown(s, len, b1));
            a = s;
            alen = (size_t)(sp - s);
            b = sp + 1;
            blen = len - alen - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            alen = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            blen = json_string_length(json_array_get(m, 1));
        } else {
            rc = fail(t, "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"], got %s", i,
                      json_kind(m));
            break;
        }
        int64_t ia = tok_strmap_get(&t->vocab, a, alen);
        int64_t ib = tok_strmap_get(&t->vocab, b, blen);
        if (ia < 0 || ib < 0) {
            rc = fail(t, "model.merges[%zu]: token '%s' is not in the vocab", i,
                      ia < 0 ? shown(a, alen, b1) : shown(b, blen, b1));
            break;
        }
        if (alen + blen > cat_cap) {
            cat_cap = 2 * (alen + blen) + 64;
            char *c = realloc(cat, cat_cap);
            if (!c) {
                rc = fail(t, "out of memory");
                break;
            }
            cat = c;
        }
        memcpy(cat, a, alen);
        memcpy(cat + alen, b, blen);
        int64_t id = tok_strmap_get(&t->vocab, cat, alen + blen);
        if (id < 0) {
            rc = fail(t, "model.merges[%zu]: merged token '%s' is not in the vocab", i,
                      shown(cat, alen + blen, b1));
            break;
        }
        merges_insert(&t->merges, (uint32_t)ia, (uint32_t)ib, (uint32_t)i, (uint32_t)id);
    }
    free(cat);
    return rc;
}

// The string option `key` of the model must be absent, null or "". Returns 0 or -1.
static int model_no_string(tokenizer *t, const json_t *model, const char *key) {
    const json_t *v = json_object_get(model, key);
    if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0)) return 0;
    char b[64];
    if (json_is_string(v))
        return fail(t, "model.%s: '%s' is not supported (byte-level BPE uses none)", key,
                    shown(json_string_value(v), json_string_length(v), b));
    return fail(t, "model.%s: expected a string or null, got %s", key, json_kind(v));
}

// The "model" section. Returns 0 or -1.
static int load_model(tokenizer *t, const json_t *root, dec_buf *d) {
    const json_t *model = json_object_get(root, "model");
    if (!model) return fail(t, "no \"model\" section");
    if (!json_is_object(model)) return fail(t, "model: expected an object, got %s", json_kind(model));
    const json_t *type = json_object_get(model, "type");
    char b[64];
    if (type && !json_is_string(type)) return fail(t, "model.type: expected a string");
    if (type && strcmp(json_string_value(type), "BPE") != 0)
        return fail(t, "model.type: '%s' is not supported (only BPE)",
                    shown(json_string_value(type), json_string_length(type), b));
    if (!type && !json_object_get(model, "merges"))   // untagged: only BPE has merges
        return fail(t, "model.type: missing (and no merges, so not a BPE model)");
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return fail(t, "model.dropout: must be null or 0 (dropout is random, encoding here is exact)");
    if (model_no_string(t, model, "continuing_subword_prefix") != 0 ||
        model_no_string(t, model, "end_of_word_suffix") != 0)
        return -1;
    if (get_bool(t, model, "model", "ignore_merges", 0, &t->ignore_merges) != 0 ||
        get_bool(t, model, "model", "byte_fallback", 0, &t->byte_fallback) != 0 ||
        get_bool(t, model, "model", "fuse_unk", 0, &t->fuse_unk) != 0)
        return -1;
    if (load_vocab(t, json_object_get(model, "vocab"), d) != 0) return -1;
    if (load_merges(t, json_object_get(model, "merges")) != 0) return -1;
    t->unk_id = -1;
    const json_t *unk = json_object_get(model, "unk_token");
    if (unk && !json_is_null(unk)) {
        if (!json_is_string(unk)) return fail(t, "model.unk_token: expected a string or null");
        t->unk_id = tok_strmap_get(&t->vocab, json_string_value(unk), json_string_length(unk));
        if (t->unk_id < 0)
            return fail(t, "model.unk_token: '%s' is not in the vocab",
                        shown(json_string_value(unk), json_string_length(unk), b));
    }
    return 0;
}

// ---- added tokens ----------------------------------------------------------------------

// Build the trie over the patterns of the added tokens with normalized == family.
// Returns 0 or -1.
static int trie_build(tokenizer *t, tok_trie *tr, int family) {
    size_t total = 1;
    for (uint32_t i = 0; i < t->n_added; i++)
        if (t->added[i].normalized == family) total += t->added[i].pattern_len;
    if (total == 1) return 0;
    // Upper bounds: one node per pattern byte plus the root; as many edges.
    tr->nodes = malloc(total * sizeof *tr->nodes);
    tr->edge_byte = malloc(total);
    tr->edge_child = malloc(total * sizeof *tr->edge_child);
    // Children are built as linked lists first, then laid out sorted.
    uint32_t *child_head = malloc(total * sizeof *child_head);
    uint32_t *sibling = malloc(total * sizeof *sibling);
    uint8_t *byte_of = malloc(total);
    if (!tr->nodes || !tr->edge_byte || !tr->edge_child || !child_head || !sibling || !byte_of) {
        free(child_head);
        free(sibling);
        free(byte_of);
        return fail(t, "out of memory");
    }
    uint32_t n = 1;
    child_head[0] = UINT32_MAX;
    tr->nodes[0].added = -1;
    for (uint32_t i = 0; i < t->n_added; i++) {
        const tok_added *a = &t->added[i];
        if (a->normalized != family || a->pattern_len == 0) continue;
        uint32_t node = 0;
        for (size_t k = 0; k < a->pattern_len; k++) {
            uint8_t c = (uint8_t)a->pattern[k];
            uint32_t ch = child_head[node];
            while (ch != UINT32_MAX && byte_of[ch] != c) ch = sibling[ch];
            if (ch == UINT32_MAX) {
                ch = n++;
                byte_of[ch] = c;
                child_head[ch] = UINT32_MAX;
                tr->nodes[ch].added = -1;
                sibling[ch] = child_head[node];
                child_head[node] = ch;
            }
            node = ch;
        }
        tr->nodes[node].added = (int32_t)i;   // same pattern twice: the later token wins
    }
    // Lay out each node's children as a sorted edge range.
    uint32_t e = 0;
    for (uint32_t v = 0; v < n; v++) {
        tr->nodes[v].first_edge = e;
        uint32_t k0 = e;
        for (uint32_t ch = child_head[v]; ch != UINT32_MAX; ch = sibling[ch]) {
            uint32_t k = e++;   // insertion sort by byte
            while (k > k0 && tr->edge_byte[k - 1] > byte_of[ch]) {
                tr->edge_byte[k] = tr->edge_byte[k - 1];
                tr->edge_child[k] = tr->edge_child[k - 1];
                k--;
            }
            tr->edge_byte[k] = byte_of[ch];
            tr->edge_child[k] = ch;
        }
        tr->nodes[v].n_edges = e - k0;
    }
    for (uint32_t k = 0; k < tr->nodes[0].n_edges; k++) tr->first[tr->edge_byte[k]] = 1;
    tr->n_nodes = n;
    tr->n_edges = e;
    free(child_head);
    free(sibling);
    free(byte_of);
    return 0;
}

// Free a trie's arrays (an empty trie is fine).
static void trie_free(tok_trie *tr) {
    free(tr->nodes);
    free(tr->edge_byte);
    free(tr->edge_child);
    memset(tr, 0, sizeof *tr);
}

// Copy s[0..n) into a new NUL-terminated string, or NULL.
static char *dup_bytes(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

// added_tokens, with ids assigned as HF's AddedVocabulary::add_tokens does. Returns 0 or -1.
static int load_added(tokenizer *t, const json_t *root, dec_buf *d) {
    const json_t *arr = json_object_get(root, "added_tokens");
    if (!arr || json_is_null(arr)) return 0;
    if (!json_is_array(arr)) return fail(t, "added_tokens: expected an array, got %s", json_kind(arr));
    size_t n = json_array_size(arr);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return fail(t, "out of memory");
    tok_strmap by_content = {0};   // content -> index in t->added
    int64_t max_added = -1;        // largest id given to an added token so far
    char where[64], b[64];
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const json_t *o = json_array_get(arr, i);
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        const json_t *c = json_object_get(o, "content");
        if (!json_is_object(o) || !json_is_string(c)) {
            rc = fail(t, "%s: expected an object with a string \"content\"", where);
            break;
        }
        tok_added a = {0};
        int sw = 0, ls = 0, rs = 0, no = 1, sp = 0;
        if (get_bool(t, o, where, "single_word", 0, &sw) || get_bool(t, o, where, "lstrip", 0, &ls) ||
            get_bool(t, o, where, "rstrip", 0, &rs) || get_bool(t, o, where, "normalized", 1, &no) ||
            get_bool(t, o, where, "special", 0, &sp)) {
            rc = -1;
            break;
        }
        const char *s = json_string_value(c);
        size_t len = json_string_length(c);
        if (len == 0) continue;   // HF ignores empty tokens
        a.single_word = (uint8_t)sw;
        a.lstrip = (uint8_t)ls;
        a.rstrip = (uint8_t)rs;
        a.normalized = (uint8_t)no;
        a.special = (uint8_t)sp;
        int64_t prev = tok_strmap_get(&by_content, s, len);
        int64_t id = prev >= 0 ? (int64_t)t->added[prev].id : tok_strmap_get(&t->vocab, s, len);
        if (id < 0) {
            uint32_t vs = t->model_vocab_entries;
            id = (max_added >= 0 && (max_added >= vs || vs == 0)) ? max_added + 1 : vs;
        }
        if (id > TOK_MAX_ID) {
            rc = fail(t, "%s: id %lld is too large", where, (long long)id);
            break;
        }
        if (id > max_added) max_added = id;
        const json_t *jid = json_object_get(o, "id");
        if (json_is_integer(jid) && json_integer_value(jid) != id)
            fprintf(stderr, "anvil: tokenizer '%s': warning: added token '%s' has id %lld in the "
                    "file; Hugging Face tokenizers (and anvil) give it id %lld\n", t->path,
                    shown(s, len, b), (long long)json_integer_value(jid), (long long)id);
        a.id = (uint32_t)id;
        a.content = dup_bytes(s, len);
        a.len = len;
        if (!a.content) {
            rc = fail(t, "out of memory");
            break;
        }
        uint32_t slot = prev >= 0 ? (uint32_t)prev : t->n_added;
        if (prev >= 0) {   // same content again: the later entry's flags win
            free(t->added[slot].content);
        } else {
            t->n_added++;
            if (tok_strmap_put(&by_content, s, len, slot, NULL) < 0) rc = fail(t, "out of memory");
        }
        t->added[slot] = a;
    }
    tok_strmap_free(&by_content);
    if (rc != 0) return rc;
    // Ids, decoded bytes, patterns (normalized tokens are searched for as NFC(content)).
    for (uint32_t i = 0; i < t->n_added; i++) {
        tok_added *a = &t->added[i];
        if (ids_reserve(t, a->id + 1) != 0 || dec_set(t, d, a->id, a->content, a->len) != 0)
            return fail(t, "out of memory");
        t->is_special[a->id] = a->special;
        if (a->normalized && t->nfc) {
            if (tok_normalize_nfc(a->content, a->len, &a->pattern, &a->pattern_len) != 0)
                return fail(t, "out of memory");
        } else {
            a->pattern = dup_bytes(a->content, a->len);
            a->pattern_len = a->len;
            if (!a->pattern) return fail(t, "out of memory");
        }
    }
    if (trie_build(t, &t->trie_raw, 0) != 0 || trie_build(t, &t->trie_norm, 1) != 0) return -1;
    for (uint32_t i = 0; i < t->n_added && !t->word_re; i++) {
        char err[256];
        if (t->added[i].single_word &&
            pretok_regex_compile(&t->word_re, TOK_WORD_CHAR_PATTERN, err, sizeof err) != 0)
            return fail(t, "single_word support: %s", err);
    }
    return 0;
}

// ---- normalizer, pre-tokenizer, decoder, post-processor --------------------------------

// The normalizer at `where` (null, NFC or a Sequence of them). Returns 0 or -1.
static int load_normalizer(tokenizer *t, const json_t *n, const char *where, int depth) {
    if (!n || json_is_null(n)) return 0;
    const char *type = get_type(t, n, where);
    if (!type) return -1;
    char b[64];
    if (strcmp(type, "NFC") == 0) {
        t->nfc = 1;
        return 0;
    }
    if (strcmp(type, "Sequence") == 0 && depth < 8) {
        const json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list)) return fail(t, "%s.normalizers: expected an array", where);
        for (size_t i = 0; i < json_array_size(list); i++) {
            char w[96];
            snprintf(w, sizeof w, "%s.normalizers[%zu]", where, i);
            if (load_normalizer(t, json_array_get(list, i), w, depth + 1) != 0) return -1;
        }
        return 0;
    }
    return fail(t, "%s.type: '%s' is not supported (null, NFC or a Sequence of NFC)", where,
                shown(type, strlen(type), b));
}

// The pre-tokenizer at `where`; *state: 0 before ByteLevel, 1 after it (nothing may
// follow). Returns 0 or -1.
static int load_pre(tokenizer *t, const json_t *p, const char *where, int depth, int *state) {
    const char *type = get_type(t, p, where);
    if (!type) return -1;
    char b[64], err[256];
    if (*state == 1)
        return fail(t, "%s: '%s' after ByteLevel is not supported (ByteLevel must come last)",
                    where, shown(type, strlen(type), b));
    if (strcmp(type, "Sequence") == 0 && depth < 8) {
        const json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list)) return fail(t, "%s.pretokenizers: expected an array", where);
        for (size_t i = 0; i < json_array_size(list); i++) {
            char w[96];
            snprintf(w, sizeof w, "%s.pretokenizers[%zu]", where, i);
            if (load_pre(t, json_array_get(list, i), w, depth + 1, state) != 0) return -1;
        }
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        int use_regex = 1;
        if (get_bool(t, p, where, "add_prefix_space", 1, &t->prefix_space) != 0 ||
            get_bool(t, p, where, "use_regex", 1, &use_regex) != 0)
            return -1;
        if (use_regex &&
            pretok_regex_compile(&t->bytelevel_re, PRETOKENIZE_GPT2_PATTERN, err, sizeof err) != 0)
            return fail(t, "%s: the GPT-2 regex does not compile: %s", where, err);
        *state = 1;
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        const json_t *pat = json_object_get(p, "pattern");
        const json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
        const json_t *beh = json_object_get(p, "behavior");
        int invert = 0;
        if (get_bool(t, p, where, "invert", 0, &invert) != 0) return -1;
        if (!json_is_string(re) && !json_is_string(lit))
            return fail(t, "%s.pattern: expected {\"Regex\": ...} or {\"String\": ...}", where);
        if (!json_is_string(beh)) return fail(t, "%s.behavior: missing or not a string", where);
        if (strcmp(json_string_value(beh), "Isolated") != 0)
            return fail(t, "%s.behavior: '%s' is not supported (only Isolated)", where,
                        shown(json_string_value(beh), json_string_length(beh), b));
        if (invert) return fail(t, "%s.invert: true is not supported", where);
        if (t->n_split == TOK_MAX_SPLITS)
            return fail(t, "%s: more than %d Split pre-tokenizers", where, TOK_MAX_SPLITS);
        const json_t *s = re ? re : lit;
        if (strlen(json_string_value(s)) != json_string_length(s))
            return fail(t, "%s.pattern: contains a NUL character", where);
        int rc = re ? pretok_regex_compile(&t->split[t->n_split], json_string_value(re), err, sizeof err)
                    : pretok_regex_compile_literal(&t->split[t->n_split], json_string_value(lit),
                                                   err, sizeof err);
        if (rc != 0) return fail(t, "%s.pattern: bad regex: %s", where, err);
        t->n_split++;
        return 0;
    }
    return fail(t, "%s.type: '%s' is not supported (ByteLevel, Split, Sequence)", where,
                shown(type, strlen(type), b));
}

// Append the ids of a template's special token `name` to *list. Returns 0 or -1.
static int template_special(tokenizer *t, const json_t *specials, const char *name,
                            const char *where, uint32_t **list, uint32_t *n) {
    char b[64];
    const json_t *ids = json_object_get(json_object_get(specials, name), "ids");
    if (!json_is_array(ids))
        return fail(t, "%s.special_tokens['%s'].ids: missing", where, shown(name, strlen(name), b));
    for (size_t i = 0; i < json_array_size(ids); i++) {
        const json_t *v = json_array_get(ids, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= t->n_ids)
            return fail(t, "%s.special_tokens['%s'].ids[%zu]: not an id of this tokenizer", where,
                        shown(name, strlen(name), b), i);
        uint32_t *l = realloc(*list, (*n + 1) * sizeof **list);
        if (!l) return fail(t, "out of memory");
        *list = l;
        l[(*n)++] = (uint32_t)json_integer_value(v);
    }
    return 0;
}

// The post-processor at `where`: BOS/EOS ids from a TemplateProcessing. Returns 0 or -1.
static int load_post(tokenizer *t, const json_t *p, const char *where, int depth) {
    if (!p || json_is_null(p)) return 0;
    const char *type = get_type(t, p, where);
    if (!type) return -1;
    char b[64];
    if (strcmp(type, "ByteLevel") == 0) return 0;   // only trims offsets
    if (strcmp(type, "Sequence") == 0 && depth < 8) {
        const json_t *list = json_object_get(p, "processors");
        if (!json_is_array(list)) return fail(t, "%s.processors: expected an array", where);
        for (size_t i = 0; i < json_array_size(list); i++) {
            char w[96];
            snprintf(w, sizeof w, "%s.processors[%zu]", where, i);
            if (load_post(t, json_array_get(list, i), w, depth + 1) != 0) return -1;
        }
        return 0;
    }
    if (strcmp(type, "TemplateProcessing") == 0) {
        if (t->n_bos || t->n_eos) return fail(t, "%s: a second TemplateProcessing", where);
        const json_t *single = json_object_get(p, "single");
        const json_t *specials = json_object_get(p, "special_tokens");
        if (!json_is_array(single)) return fail(t, "%s.single: expected an array", where);
        int seen_a = 0;
        for (size_t i = 0; i < json_array_size(single); i++) {
            const json_t *item = json_array_get(single, i);
            const json_t *sp = json_object_get(item, "SpecialToken");
            const json_t *seq = json_object_get(item, "Sequence");
            const json_t *id = json_object_get(sp ? sp : seq, "id");
            if (!json_is_string(id))
                return fail(t, "%s.single[%zu]: expected {\"SpecialToken\": {\"id\": ...}} or "
                            "{\"Sequence\": {\"id\": \"A\"}}", where, i);
            if (seq) {
                if (strcmp(json_string_value(id), "A") != 0 || seen_a)
                    return fail(t, "%s.single[%zu]: only one Sequence A is supported", where, i);
                seen_a = 1;
            } else if (template_special(t, specials, json_string_value(id), where,
                                        seen_a ? &t->eos : &t->bos, seen_a ? &t->n_eos : &t->n_bos) != 0) {
                return -1;
            }
        }
        if (!seen_a) return fail(t, "%s.single: no Sequence A", where);
        return 0;
    }
    return fail(t, "%s.type: '%s' is not supported (ByteLevel, TemplateProcessing, Sequence)",
                where, shown(type, strlen(type), b));
}

// Every section of the parsed file, in dependency order. Returns 0 or -1.
static int load_sections(tokenizer *t, const json_t *root, dec_buf *d) {
    if (!json_is_object(root)) return fail(t, "expected a JSON object at the top, got %s", json_kind(root));
    if (load_model(t, root, d) != 0) return -1;
    if (load_normalizer(t, json_object_get(root, "normalizer"), "normalizer", 0) != 0) return -1;
    if (load_added(t, root, d) != 0) return -1;
    const json_t *pre = json_object_get(root, "pre_tokenizer");
    int state = 0;
    if (!pre || json_is_null(pre))
        return fail(t, "pre_tokenizer: null is not supported (a byte-level BPE needs ByteLevel)");
    if (load_pre(t, pre, "pre_tokenizer", 0, &state) != 0) return -1;
    if (state == 0) return fail(t, "pre_tokenizer: no ByteLevel (not a byte-level BPE)");
    const json_t *dec = json_object_get(root, "decoder");
    if (dec && !json_is_null(dec)) {
        const char *type = get_type(t, dec, "decoder");
        char b[64];
        if (!type) return -1;
        if (strcmp(type, "ByteLevel") != 0)
            return fail(t, "decoder.type: '%s' is not supported (ByteLevel)", shown(type, strlen(type), b));
    }
    if (load_post(t, json_object_get(root, "post_processor"), "post_processor", 0) != 0) return -1;
    const char *keys[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(root, keys[i]);
        if (v && !json_is_null(v))
            fprintf(stderr, "anvil: tokenizer '%s': warning: %s is ignored (anvil never "
                    "truncates or pads)\n", t->path, keys[i]);
    }
    // End of text: the usual added tokens, else the template's last EOS.
    const char *eot_names[] = {"<|endoftext|>", "<|end_of_text|>", "</s>"};
    t->eot = -1;
    for (int i = 0; i < 3 && t->eot < 0; i++)
        for (uint32_t k = 0; k < t->n_added; k++)
            if (strcmp(t->added[k].content, eot_names[i]) == 0 &&
                t->added[k].len == strlen(eot_names[i]))
                t->eot = t->added[k].id;
    if (t->eot < 0 && t->n_eos) t->eot = t->eos[t->n_eos - 1];
    return 0;
}

// ---- public --------------------------------------------------------------------------

int tokenizer_load(tokenizer **out, const char *path) {
    *out = NULL;
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        fprintf(stderr, "anvil: tokenizer '%s': out of memory\n", path);
        return 2;
    }
    t->unk_id = -1;
    t->eot = -1;
    t->path = dup_bytes(path, strlen(path));
    if (!t->path) {
        free(t);
        fprintf(stderr, "anvil: tokenizer '%s': out of memory\n", path);
        return 2;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        fail(t, "cannot open: %s", strerror(errno));
        tokenizer_free(t);
        return 2;
    }
    json_error_t jerr;
    json_t *root = json_loadf(f, JSON_ALLOW_NUL, &jerr);
    fclose(f);
    if (!root) {
        fail(t, "not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        tokenizer_free(t);
        return 2;
    }
    dec_buf d = {0};
    int rc = load_sections(t, root, &d);
    json_decref(root);
    if (rc != 0) {
        tokenizer_free(t);
        return 2;
    }
    *out = t;
    return 0;
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    free(t->path);
    tok_strmap_free(&t->vocab);
    tok_strmap_free(&t->raw);
    free(t->merges.slots);
    free(t->dec_arena);
    free(t->dec_off);
    free(t->dec_len);
    free(t->is_special);
    for (uint32_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].pattern);
    }
    free(t->added);
    trie_free(&t->trie_raw);
    trie_free(&t->trie_norm);
    for (int i = 0; i < t->n_split; i++) pretok_regex_free(t->split[i]);
    pretok_regex_free(t->bytelevel_re);
    pretok_regex_free(t->word_re);
    free(t->bos);
    free(t->eos);
    free(t);
}

uint32_t tokenizer_vocab_size(const tokenizer *t) {
    return t->n_ids;
}

int64_t tokenizer_eot_id(const tokenizer *t) {
    return t->eot;
}

int64_t tokenizer_token_id(const tokenizer *t, const char *s) {
    size_t n = strlen(s);
    for (uint32_t i = 0; i < t->n_added; i++)   // added tokens first, as HF
        if (t->added[i].len == n && memcmp(t->added[i].content, s, n) == 0) return t->added[i].id;
    return tok_strmap_get(&t->vocab, s, n);
}

const char *tokenizer_token_bytes(const tokenizer *t, uint32_t id, size_t *len) {
    if (id >= t->n_ids || t->dec_len[id] == UINT32_MAX) {
        *len = 0;
        return NULL;
    }
    *len = t->dec_len[id];
    return t->dec_arena ? t->dec_arena + t->dec_off[id] : "";
}

// Whether id is a special added token (for decoding with special tokens skipped).
int tokenizer_token_is_special(const tokenizer *t, uint32_t id) {
    return id < t->n_ids && t->is_special[id];
}
