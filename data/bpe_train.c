// data/bpe_train.c: `anvil tokenizer train`, learn a byte-level BPE tokenizer and write
// it as a Hugging Face tokenizer.json.
//
// The pipeline:
//   1. read the inputs into one text arena and cut it into segments: documents (whole
//      files, or the pieces between --doc-sep lines), then the stretches between
//      occurrences of the special tokens (an added token is cut out of the text before
//      the regex runs, at encode time too), then, for load balance, long stretches at
//      "safe" line breaks: a '\n' with a printable non-space ASCII byte on both sides.
//      A cut there does not change the regex's pieces: the match holding the byte
//      before '\n' cannot hold '\n' (only the whitespace alternatives can), and '\n'
//      is a one-character match followed by a non-space in both cases.
//   2. split every segment with the GPT-2 regex (the ByteLevel pre-tokenizer with
//      add_prefix_space false, data/pretokenize.h) and count the pieces' bytes in a
//      hash map per OpenMP thread; the maps are then merged. A word is kept as its raw
//      bytes: the byte-level alphabet is a bijection, so strings become byte-level
//      characters only when the JSON is written.
//   3. learn merges, in data/bpe_merges.c (its top comment says how): every word starts
//      as its bytes, and the most frequent adjacent pair (ties: the smaller byte
//      strings) is merged until 256 + merged tokens + specials reaches --vocab-size or
//      the best pair's count is below --min-frequency.
//   4. write the JSON in the layout `tokenizers` itself saves (serde's pretty printer,
//      2-space indent, no final newline), to OUT.tmp, fsync, rename. Ids: the 256
//      byte tokens, the merged tokens in merge order, then the special tokens (a
//      special whose string is already a token keeps that token's id).
//
// What this file and data/bpe_merges.c share is in data/bpe_train_internal.h.
//
// Exit codes: 0 done, 2 bad input (command line, unreadable input, unwritable output),
// 1 internal (out of memory, regex failure). Nothing here calls exit().
#include "data/bpe_train_internal.h"
#include "data/data.h"
#include "data/pretokenize.h"

#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TRAIN_SEGMENT_BYTES (64u << 10)   // cut long documents near here: ~40 tasks per MB
#define TRAIN_DEFAULT_MIN_FREQUENCY 2     // a pair seen once is noise, as HF's default

static const char USAGE[] =
    "usage: anvil tokenizer train --vocab-size N --out TOKENIZER.json [--special TOKEN]...\n"
    "                             [--min-frequency K] [--doc-sep STRING] FILES...\n";

static const char HELP[] =
    "Learn a byte-level BPE tokenizer (GPT-2 pre-tokenizer) from text files and write it\n"
    "as a Hugging Face tokenizer.json (loads with tokenizers.Tokenizer.from_file).\n"
    "Ids: 0..255 the bytes, then the merged tokens in merge order, then the special\n"
    "tokens. Of two equally frequent pairs the one with the smaller byte strings merges\n"
    "first, so the result depends only on the text (not on threads or file order).\n"
    "\n"
    "  --vocab-size N       vocabulary size: 256 bytes + merges + special tokens (>= 257)\n"
    "  --out PATH           the tokenizer.json to write (required)\n"
    "  --special TOKEN      a special token (repeatable), ids after the merges; its\n"
    "                       occurrences in the training text are cut out\n"
    "  --min-frequency K    stop when the best pair occurs fewer than K times (default 2)\n"
    "  --doc-sep STRING     a line equal to STRING separates documents (e.g. '%' for\n"
    "                       fortune files); default: each file is one document\n";

// ---- small utilities (declared in data/bpe_train_internal.h: stage 3 uses them too) ----

double bpe_train_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int bpe_train_grow(void **p, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / sz) return 1;
        c *= 2;
    }
    void *q = realloc(*p, c * sz);
    if (!q) return 1;
    *p = q;
    *cap = c;
    return 0;
}

uint64_t bpe_train_hash_bytes(const uint8_t *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xC4CEB9FE1A85EC53ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ v) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    h *= 0xFF51AFD7ED558CCDull;
    return h ^ (h >> 29);
}

// ---- options ---------------------------------------------------------------------------

typedef struct train_opts {
    uint64_t vocab_size;
    uint64_t min_frequency;
    const char *doc_sep;   // NULL: a file is one document
    const char *out;
    const char **specials; // (n_specials) distinct, in argv order
    int n_specials;
    const char **files;    // (n_files) in argv order
    int n_files;
} train_opts;

// Print a usage error: one line. Returns 2.
static int usage_error(const char *fmt, const char *arg) {
    fputs("anvil: tokenizer train: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs(" (anvil tokenizer train --help)\n", stderr);
    return 2;
}

// Parse a decimal unsigned integer. Returns 0, or -1 if s is not one.
static int parse_u64(const char *s, uint64_t *v) {
    if (!*s || *s == '-' || *s == '+') return -1;
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *v = x;
    return 0;
}

// Parse argv (after "train"). Returns 0 (the caller frees o->specials and o->files),
// -1 after printing help (exit 0), 2 after a usage error, or 1 when out of memory.
static int parse_opts(train_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->min_frequency = TRAIN_DEFAULT_MIN_FREQUENCY;
    size_t n = argc > 0 ? (size_t)argc : 1;
    o->files = malloc(n * sizeof *o->files);
    o->specials = malloc(n * sizeof *o->specials);
    if (!o->files || !o->specials) {
        fputs("anvil: tokenizer train: out of memory\n", stderr);
        return 1;
    }
    int only_files = 0, have_vocab = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_files || a[0] != '-' || a[1] == '\0') { o->files[o->n_files++] = a; continue; }
        if (!strcmp(a, "--")) { only_files = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            fputs(HELP, stdout);
            return -1;
        }
        static const char *const with_value[] = {"--vocab-size", "--out", "--special",
                                                 "--min-frequency", "--doc-sep"};
        const char *val = NULL;
        int which = -1;
        for (int k = 0; k < 5; k++) {
            size_t len = strlen(with_value[k]);
            if (!strncmp(a, with_value[k], len) && (a[len] == '\0' || a[len] == '=')) {
                which = k;
                val = a[len] == '=' ? a + len + 1 : (i + 1 < argc ? argv[++i] : NULL);
                break;
            }
        }
        if (which < 0) return usage_error("unknown option '%s'", a);
        if (!val) return usage_error("option '%s' needs a value", a);
        if (which == 0) {
            if (parse_u64(val, &o->vocab_size) || o->vocab_size < 257 ||
                o->vocab_size > UINT32_MAX)
                return usage_error("--vocab-size '%s' must be an integer >= 257", val);
            have_vocab = 1;
        } else if (which == 1) {
            if (!*val) return usage_error("%s", "--out needs a non-empty path");
            o->out = val;
        } else if (which == 2) {
            if (!*val) return usage_error("%s", "--special needs a non-empty token");
            int dup = 0;
            for (int k = 0; k < o->n_specials; k++) dup |= !strcmp(o->specials[k], val);
            if (!dup) o->specials[o->n_specials++] = val;
        } else if (which == 3) {
            if (parse_u64(val, &o->min_frequency))
                return usage_error("--min-frequency '%s' must be a non-negative integer", val);
        } else {
            o->doc_sep = val;
        }
    }
    if (!have_vocab) return usage_error("%s", "--vocab-size N is required");
    if (!o->out) return usage_error("%s", "--out TOKENIZER.json is required");
    if (o->n_files == 0) return usage_error("%s", "no input FILES given");
    if (o->vocab_size < 256 + (uint64_t)o->n_specials) {
        fprintf(stderr, "anvil: tokenizer train: --vocab-size %llu is smaller than 256 byte "
                "tokens + %d special tokens\n", (unsigned long long)o->vocab_size,
                o->n_specials);
        return 2;
    }
    return 0;
}

// ---- stage 1: text -> segments ---------------------------------------------------------

typedef struct text_arena { char *p; size_t len, cap; } text_arena;
typedef struct segment { size_t off, len; } segment;
typedef struct segment_list {
    segment *v;
    size_t n, cap;
    size_t docs;   // non-empty documents
    size_t *hit;   // (n_specials) scratch of add_document
} segment_list;

// Append the whole file at path. Returns 0, 2 after printing why it cannot be read, or 1
// when out of memory.
static int read_file(text_arena *a, const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "anvil: tokenizer train: '%s' is a directory, not a text file\n", path);
        return 2;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "anvil: tokenizer train: cannot read '%s': %s\n", path, strerror(errno));
        return 2;
    }
    for (;;) {
        if (bpe_train_grow((void **)&a->p, &a->cap, a->len + (1 << 20), 1)) { fclose(f); return 1; }
        size_t got = fread(a->p + a->len, 1, a->cap - a->len, f);
        a->len += got;
        if (got == 0) break;
    }
    int bad = ferror(f), saved = errno;
    fclose(f);
    if (bad) {
        fprintf(stderr, "anvil: tokenizer train: cannot read '%s': %s\n", path, strerror(saved));
        return 2;
    }
    return 0;
}

static int seg_push(segment_list *s, size_t off, size_t len) {
    if (len == 0) return 0;
    if (bpe_train_grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v)) return 1;
    s->v[s->n++] = (segment){off, len};
    return 0;
}

static int safe_byte(unsigned char c) { return c >= 0x21 && c <= 0x7E; }

// Add text[off, off + len) (no special token inside) as segments of about
// TRAIN_SEGMENT_BYTES, cut only at safe line breaks. Returns 0 or 1.
static int add_stretch(segment_list *s, const char *text, size_t off, size_t len) {
    size_t end = off + len;
    while (end - off > TRAIN_SEGMENT_BYTES) {
        size_t i = off + TRAIN_SEGMENT_BYTES, cut = 0;
        while (i + 1 < end) {
            const char *nl = memchr(text + i, '\n', end - 1 - i);
            if (!nl) break;
            i = (size_t)(nl - text);
            if (safe_byte((unsigned char)text[i - 1]) && safe_byte((unsigned char)text[i + 1])) {
                cut = i + 1;
                break;
            }
            i++;
        }
        if (!cut) break;
        if (seg_push(s, off, cut - off)) return 1;
        off = cut;
    }
    return seg_push(s, off, end - off);
}

// Add document text[off, off + len): cut out the special tokens (leftmost occurrence
// first, the longest on a tie, as HF's added-token matcher does) and add what lies
// between them. s->hit (n_specials) caches each special's next occurrence, so a long
// document is scanned once per special. Returns 0 or 1.
static int add_document(segment_list *s, const char *text, size_t off, size_t len,
                        const train_opts *o) {
    size_t end = off + len;
    s->docs += len > 0;
    for (int k = 0; k < o->n_specials; k++) s->hit[k] = 0;   // 0: look from off
    while (off < end) {
        size_t best = end, best_len = 0;
        for (int k = 0; k < o->n_specials; k++) {
            size_t sl = strlen(o->specials[k]);
            if (s->hit[k] != SIZE_MAX && s->hit[k] < off + 1) {
                const char *p = memmem(text + off, end - off, o->specials[k], sl);
                s->hit[k] = p ? (size_t)(p - text) + 1 : SIZE_MAX;   // position + 1
            }
            if (s->hit[k] == SIZE_MAX) continue;
            size_t at = s->hit[k] - 1;
            if (at < best || (at == best && sl > best_len)) { best = at; best_len = sl; }
        }
        if (add_stretch(s, text, off, best - off)) return 1;
        off = best + best_len;
    }
    return 0;
}

// Cut a->p[start, a->len) into documents at lines equal to o->doc_sep (a trailing CR is
// ignored; the separator lines belong to no document). Returns 0 or 1.
static int add_file_documents(segment_list *s, const text_arena *a, size_t start,
                              const train_opts *o) {
    if (!o->doc_sep) return add_document(s, a->p, start, a->len - start, o);
    size_t sep_len = strlen(o->doc_sep), doc = start, line = start;
    while (line < a->len) {
        const char *nl = memchr(a->p + line, '\n', a->len - line);
        size_t end = nl ? (size_t)(nl - a->p) : a->len, len = end - line;
        if (len > 0 && a->p[end - 1] == '\r') len--;
        size_t next = nl ? end + 1 : a->len;
        if (len == sep_len && !memcmp(a->p + line, o->doc_sep, sep_len)) {
            if (add_document(s, a->p, doc, line - doc, o)) return 1;
            doc = next;
        }
        line = next;
    }
    return add_document(s, a->p, doc, a->len - doc, o);
}

// ---- stage 2: word counting ------------------------------------------------------------

// The word map (word_slot, word_map) is in data/bpe_train_internal.h: stage 3 reads it.

// Add `count` to the word text[off, off + len) with hash h. Returns 0 or 1 (memory).
static int word_map_add(word_map *m, const char *text, size_t off, uint32_t len, uint64_t h,
                        uint64_t count) {
    if (2 * (m->n + 1) > m->cap) {   // keep the load under 1/2
        size_t cap = m->cap ? 2 * m->cap : 1 << 12;
        word_slot *v = calloc(cap, sizeof *v);
        if (!v) return 1;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->v[i].count) continue;
            size_t j = m->v[i].hash & (cap - 1);
            while (v[j].count) j = (j + 1) & (cap - 1);
            v[j] = m->v[i];
        }
        free(m->v);
        m->v = v;
        m->cap = cap;
    }
    size_t j = h & (m->cap - 1);
    for (;; j = (j + 1) & (m->cap - 1)) {
        word_slot *w = &m->v[j];
        if (!w->count) break;
        if (w->hash == h && w->len == len && !memcmp(text + w->off, text + off, len)) {
            w->count += count;
            return 0;
        }
    }
    m->v[j] = (word_slot){h, off, len, count};
    m->n++;
    return 0;
}

// Count the regex pieces of all segments into *out, with one map per thread merged at
// the end. Sets *n_pieces. Returns 0, or 1 (out of memory or a regex failure, printed).
static int count_words(const text_arena *a, const segment_list *s, word_map *out,
                       uint64_t *n_pieces) {
    char err[256];
    pretok_regex *re = NULL;
    if (pretok_regex_compile(&re, PRETOKENIZE_GPT2_PATTERN, err, sizeof err)) {
        fprintf(stderr, "anvil: tokenizer train: cannot compile the GPT-2 regex: %s\n", err);
        return 1;
    }
    int nt = omp_get_max_threads();
    word_map *maps = calloc((size_t)nt, sizeof *maps);
    uint64_t *pieces = calloc((size_t)nt, sizeof *pieces);
    int failed = !maps || !pieces;
    if (!failed) {
#pragma omp parallel num_threads(nt) reduction(| : failed)
        {
            int t = omp_get_thread_num();
            pretok_matcher *m = pretok_matcher_new(re);
            if (!m) failed = 1;
#pragma omp for schedule(dynamic, 1)
            for (size_t i = 0; i < s->n; i++) {
                if (failed) continue;
                const char *text = a->p + s->v[i].off;
                size_t n = s->v[i].len, start, end;
                pretok_split sp;
                pretok_split_init(&sp);
                while (!failed && pretok_split_next(m, text, n, &sp, &start, &end)) {
                    size_t len = end - start;
                    // Word lengths are 32-bit: a longer piece (a 4 GiB run with no
                    // break) is counted in 1 GiB parts.
                    for (size_t k = 0; k < len && !failed; k += 1u << 30) {
                        uint32_t l = (uint32_t)(len - k < (1u << 30) ? len - k : 1u << 30);
                        size_t off = s->v[i].off + start + k;
                        uint64_t h = bpe_train_hash_bytes((const uint8_t *)a->p + off, l);
                        failed = word_map_add(&maps[t], a->p, off, l, h, 1);
                    }
                    pieces[t]++;
                }
            }
            pretok_matcher_free(m);
        }
    }
    *out = (word_map){0};
    *n_pieces = 0;
    for (int t = 0; t < nt && maps && pieces; t++) {
        *n_pieces += pieces[t];
        if (t == 0 && !failed) {
            *out = maps[0];
            maps[0] = (word_map){0};
            continue;
        }
        for (size_t i = 0; i < maps[t].cap && !failed; i++)
            if (maps[t].v[i].count)
                failed = word_map_add(out, a->p, maps[t].v[i].off, maps[t].v[i].len,
                                      maps[t].v[i].hash, maps[t].v[i].count);
        free(maps[t].v);
    }
    free(maps);
    free(pieces);
    pretok_regex_free(re);
    if (failed) fprintf(stderr, "anvil: tokenizer train: out of memory counting words\n");
    return failed;
}

// ---- stage 3: merges: data/bpe_merges.c ------------------------------------------------

// ---- stage 4: tokenizer.json -----------------------------------------------------------

// Write s[0, n) as a JSON string, escaped as serde_json does (", \ and controls).
static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { fputc('\\', f); fputc(c, f); }
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\b') fputs("\\b", f);
        else if (c == '\f') fputs("\\f", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

// Write token id's bytes as a JSON string of byte-level characters (scratch: 2x room).
static void json_token(FILE *f, const bpe_trainer *T, uint32_t id, char *scratch) {
    size_t n = bytelevel_encode_bytes(T->tok_bytes + T->tok_off[id], T->tok_len[id], scratch);
    json_str(f, scratch, n);
}

typedef struct special_id { const char *content; uint32_t id; int in_vocab; } special_id;

static int special_cmp(const void *x, const void *y) {
    uint32_t a = ((const special_id *)x)->id, b = ((const special_id *)y)->id;
    return (a > b) - (a < b);
}

// The id of each special token: an existing token whose byte-level string equals it,
// else the next free id. Fills sp (sorted by id). Returns the vocabulary size, or 0
// when out of memory.
static uint32_t assign_special_ids(const bpe_trainer *T, const train_opts *o, special_id *sp) {
    uint32_t next = T->n_tokens;
    for (int k = 0; k < o->n_specials; k++) {
        size_t n = strlen(o->specials[k]);
        uint8_t *raw = malloc(n ? n : 1);
        if (!raw) return 0;
        // Decode byte-level characters to bytes; if any character is not one, the
        // special cannot equal a token.
        int all_bytelevel = 1;
        size_t rn = 0;
        for (size_t i = 0; i < n && all_bytelevel;) {
            size_t l = utf8_valid_len((const uint8_t *)o->specials[k] + i, n - i);
            int b = l ? bytelevel_cp_to_byte(utf8_decode_valid((const uint8_t *)o->specials[k] + i,
                                                               l)) : -1;
            if (b < 0) all_bytelevel = 0;
            else raw[rn++] = (uint8_t)b;
            i += l ? l : 1;
        }
        int64_t id = all_bytelevel ? bpe_trainer_token_find(T, raw, rn) : -1;
        free(raw);
        sp[k] = (special_id){o->specials[k], id >= 0 ? (uint32_t)id : next, id < 0};
        if (id < 0) next++;
    }
    if (o->n_specials > 1) qsort(sp, (size_t)o->n_specials, sizeof *sp, special_cmp);
    return next;
}

// One ByteLevel component ("pre_tokenizer", "post_processor" or "decoder") as `tokenizers`
// writes it for a GPT-2 style tokenizer.
static void json_bytelevel(FILE *f, const char *key, int add_prefix_space, int trim_offsets) {
    fprintf(f, "  \"%s\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": %s,\n"
            "    \"trim_offsets\": %s,\n    \"use_regex\": true\n  },\n", key,
            add_prefix_space ? "true" : "false", trim_offsets ? "true" : "false");
}

// Write the tokenizer to f. Returns 0, or 1 when out of memory.
static int write_json(FILE *f, const bpe_trainer *T, const special_id *sp, int n_sp) {
    size_t longest = 1;
    for (uint32_t i = 0; i < T->n_tokens; i++)
        if (T->tok_len[i] > longest) longest = T->tok_len[i];
    char *scratch = malloc(2 * longest);
    if (!scratch) return 1;
    fputs("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n", f);
    fputs(n_sp ? "  \"added_tokens\": [\n" : "  \"added_tokens\": [],\n", f);
    for (int k = 0; k < n_sp; k++) {
        fprintf(f, "    {\n      \"id\": %u,\n      \"content\": ", sp[k].id);
        json_str(f, sp[k].content, strlen(sp[k].content));
        fputs(",\n      \"single_word\": false,\n      \"lstrip\": false,\n      \"rstrip\": false,"
              "\n      \"normalized\": false,\n      \"special\": true\n    }", f);
        fputs(k + 1 < n_sp ? ",\n" : "\n  ],\n", f);
    }
    fputs("  \"normalizer\": null,\n", f);
    json_bytelevel(f, "pre_tokenizer", 0, 1);   // add_prefix_space false: text as given
    json_bytelevel(f, "post_processor", 1, 0);  // offsets only; adds no tokens
    json_bytelevel(f, "decoder", 1, 1);
    fputs("  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n"
          "    \"unk_token\": null,\n    \"continuing_subword_prefix\": null,\n"
          "    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
          "    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n", f);
    fputs("    \"vocab\": {\n", f);
    int k = 0;
    uint32_t n_vocab = T->n_tokens;
    for (int j = 0; j < n_sp; j++) n_vocab += (uint32_t)sp[j].in_vocab;
    for (uint32_t id = 0; id < n_vocab; id++) {
        fputs("      ", f);
        while (k < n_sp && !sp[k].in_vocab) k++;
        if (id < T->n_tokens) {
            json_token(f, T, id, scratch);
        } else {
            json_str(f, sp[k].content, strlen(sp[k].content));
            k++;
        }
        fprintf(f, ": %u%s\n", id, id + 1 < n_vocab ? "," : "");
    }
    fputs("    },\n", f);
    fputs(T->n_merges ? "    \"merges\": [\n" : "    \"merges\": []\n", f);
    for (size_t m = 0; m < T->n_merges; m++) {
        fputs("      [\n        ", f);
        json_token(f, T, T->merges[2 * m], scratch);
        fputs(",\n        ", f);
        json_token(f, T, T->merges[2 * m + 1], scratch);
        fputs(m + 1 < T->n_merges ? "\n      ],\n" : "\n      ]\n    ]\n", f);
    }
    fputs("  }\n}", f);
    free(scratch);
    return 0;
}

// ---- the subcommand -------------------------------------------------------------------

// `anvil tokenizer train ...`: argv after "train". Returns 0, 2 (bad input) or 1.
int tokenizer_train_main(int argc, char **argv) {
    train_opts o;
    int rc = parse_opts(&o, argc, argv);
    if (rc) {
        free(o.files);
        free(o.specials);
        return rc < 0 ? 0 : rc;
    }
    double t0 = bpe_train_now_s();
    text_arena text = {0};
    segment_list segs = {0};
    word_map words = {0};
    bpe_trainer T;
    memset(&T, 0, sizeof T);
    special_id *sp = NULL;
    FILE *f = NULL;
    size_t tlen = strlen(o.out) + 5;
    char *tmp = malloc(tlen);
    if (!tmp) goto oom;
    snprintf(tmp, tlen, "%s.tmp", o.out);

    // The output is opened before the training, so that a bad path fails at once.
    struct stat st;
    if (stat(o.out, &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "anvil: tokenizer train: --out '%s' is a directory\n", o.out);
        rc = 2;
        goto done;
    }
    if (!(segs.hit = malloc(((size_t)o.n_specials + 1) * sizeof *segs.hit))) goto oom;
    for (int i = 0; i < o.n_files; i++) {
        size_t start = text.len;
        if ((rc = read_file(&text, o.files[i]))) goto done;
        if (add_file_documents(&segs, &text, start, &o)) goto oom;
    }
    // Create the output's directory (mkdir -p), as prepare does for --out.
    char dir[4096], failed[4096];
    snprintf(dir, sizeof dir, "%s", o.out);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (data_mkdirs(dir, failed, sizeof failed) != 0) {
            fprintf(stderr, "anvil: tokenizer train: --out '%s': cannot create '%s': %s\n",
                    o.out, failed, strerror(errno));
            rc = 2;
            goto done;
        }
    }
    if (!(f = fopen(tmp, "wb"))) {
        fprintf(stderr, "anvil: tokenizer train: cannot write '%s': %s\n", o.out, strerror(errno));
        rc = 2;
        goto done;
    }
    uint64_t n_pieces = 0;
    if ((rc = count_words(&text, &segs, &words, &n_pieces))) goto done;
    int tty = isatty(STDERR_FILENO);
    double t_count = bpe_train_now_s();
    fprintf(stderr, "tokenizer train: %.2f MB, %zu documents, %llu words (%zu distinct) "
            "counted in %.2f s\n", (double)text.len / 1e6, segs.docs,
            (unsigned long long)n_pieces, words.n, t_count - t0);
    int64_t min_count = o.min_frequency > 1 ? (int64_t)o.min_frequency : 1;
    if (bpe_trainer_init(&T, &words, text.p, min_count)) goto oom;
    free(words.v);
    words.v = NULL;
    progress prog = {tty, t_count, t_count};
    if (bpe_trainer_merge(&T, o.vocab_size, o.n_specials, min_count, &prog)) goto oom;
    double t_train = bpe_train_now_s();

    if (o.n_specials && !(sp = malloc((size_t)o.n_specials * sizeof *sp))) goto oom;
    uint32_t n_vocab = assign_special_ids(&T, &o, sp);
    if (!n_vocab || write_json(f, &T, sp, o.n_specials)) goto oom;
    int bad = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    int saved = errno;
    bad |= fclose(f) != 0;
    f = NULL;
    if (bad || rename(tmp, o.out) != 0) {
        fprintf(stderr, "anvil: tokenizer train: cannot write '%s': %s\n", o.out,
                strerror(bad ? saved : errno));
        unlink(tmp);
        rc = 2;
        goto done;
    }
    if (n_vocab < o.vocab_size)
        fprintf(stderr, "tokenizer train: stopped at vocab %u < --vocab-size %llu: no pair of "
                "tokens occurs %llu times or more\n", n_vocab,
                (unsigned long long)o.vocab_size, (unsigned long long)min_count);
    printf("tokenizer train: vocab %u (256 bytes + %u merged tokens from %zu merges + %u "
           "special) from %zu documents, %.2f MB, %zu distinct words; counting %.2f s, "
           "merges %.2f s; wrote %s\n", n_vocab, T.n_tokens - 256u, T.n_merges,
           n_vocab - T.n_tokens, segs.docs, (double)text.len / 1e6, (size_t)T.n_words,
           t_count - t0, t_train - t_count, o.out);
    fflush(stdout);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "anvil: tokenizer train: out of memory\n");
    rc = 1;
done:
    if (f) {
        fclose(f);
        unlink(tmp);
    }
    bpe_trainer_free(&T);
    free(sp);
    free(tmp);
    free(words.v);
    free(segs.v);
    free(segs.hit);
    free(text.p);
    free(o.files);
    free(o.specials);
    return rc;
}
