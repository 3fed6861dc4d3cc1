// data/prepare.c: `anvil prepare text`, text files -> train/val token shards.
//
// The pipeline has three stages, each a plain function over memory:
//   1. read every input and cut it into documents (a whole file, the pieces between
//      --doc-sep lines, or the "text" field of each JSONL line, JSON escapes decoded
//      to UTF-8), all into one text arena addressed by (offset, length) spans;
//   2. pick the held-out documents deterministically (val_is_doc: n_val of N spread
//      evenly), so the same inputs always give the same split;
//   3. tokenize the documents (the byte-level tokenizer, or a BPE tokenizer.json given
//      with --tokenizer) in blocks of ~16 MB: within a block the documents are encoded
//      in parallel (OpenMP, one tokenizer_encoder per thread, each document into its
//      own slot), then appended in document order with EOT after each, so the output
//      does not depend on the thread count; the ids stream into fixed-size shards
//      written with shard_write (tmp + fsync + rename: a re-run never leaves a
//      corrupt shard).
// Everything is read into memory first (the default corpus is ~3 MB); a streaming
// reader can replace stage 1 later without touching the other two.
//
// Exit codes: 0 done, 2 bad input (command line, unreadable or malformed file),
// 1 internal (out of memory). Nothing here calls exit().
#include "data/data.h"

#include <errno.h>
#include <glob.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PREPARE_DEFAULT_VAL_FRAC 0.01
#define PREPARE_DEFAULT_SHARD_TOKENS 100000000ull   // 200 MB of uint16 per shard
#define JSON_MAX_DEPTH 64   // nesting a JSONL record may use before it is rejected
// Text tokenized per parallel block: large enough to keep both cores busy and amortize
// the fork/join, small enough that the block's ids (4 bytes per text byte at most)
// stay far below memory.
#define PREPARE_BLOCK_BYTES (16u << 20)

static const char USAGE[] =
    "usage: anvil prepare text --out DIR [--tokenizer TOKENIZER.json] [--val-frac F]\n"
    "                          [--shard-tokens N] [--doc-sep STRING | --jsonl] FILES...\n";

static const char HELP[] =
    "Tokenize text files into token shards: DIR/train_000000.bin, ... and\n"
    "DIR/val_000000.bin (docs/formats.md). Every document is followed by end-of-text.\n"
    "\n"
    "  --out DIR           output directory (created if missing; required)\n"
    "  --tokenizer FILE    a Hugging Face tokenizer.json (byte-level BPE); default: the\n"
    "                      byte-level tokenizer (256 bytes + end-of-text)\n"
    "  --val-frac F        held-out fraction of documents, 0 <= F < 1 (default 0.01;\n"
    "                      at least one document when there are two or more)\n"
    "  --shard-tokens N    tokens per shard file (default 100000000)\n"
    "  --doc-sep STRING    a line equal to STRING separates documents (e.g. '%' for\n"
    "                      fortune files); default: each file is one document\n"
    "  --jsonl             inputs hold one JSON object per line; its \"text\" string\n"
    "                      is a document\n";

// ---- the tokenizer seam ----------------------------------------------------------------

// What prepare needs from a tokenizer: a name, the vocabulary size (uint16 or uint32
// shards), the end-of-text id appended after every document, and a BPE tokenizer or
// NULL for the byte-level one. Both emit at most one id per byte of text, which sizes
// each document's slot in a block.
typedef struct prepare_tokenizer {
    const char *name;
    uint32_t vocab_size;
    uint32_t eot;
    tokenizer *bpe;        // owned; NULL: byte-level
} prepare_tokenizer;

// Set up the tokenizer named by --tokenizer (NULL: byte-level). Returns 0 or 2.
static int prepare_tokenizer_open(prepare_tokenizer *tok, const char *path) {
    memset(tok, 0, sizeof *tok);
    if (!path) {
        tok->name = "byte";
        tok->vocab_size = BYTE_TOKENIZER_VOCAB;
        tok->eot = BYTE_TOKENIZER_EOT;
        return 0;
    }
    int rc = tokenizer_load(&tok->bpe, path);
    if (rc) return rc;
    int64_t eot = tokenizer_eot_id(tok->bpe);
    if (eot < 0) {
        fprintf(stderr, "anvil: prepare: tokenizer '%s' has no end-of-text token "
                "(<|endoftext|>, <|end_of_text|>, </s> or a post-processor EOS)\n", path);
        tokenizer_free(tok->bpe);
        tok->bpe = NULL;
        return 2;
    }
    tok->name = "BPE";
    tok->vocab_size = tokenizer_vocab_size(tok->bpe);
    tok->eot = (uint32_t)eot;
    return 0;
}

// Encode one document into out (room for n ids). enc is the thread's encoder (BPE
// only), buf/cap its growable scratch. Returns the count, or -1 (out of memory, or
// more ids than bytes, which would break the slot sizing).
static int64_t prepare_encode(const prepare_tokenizer *tok, tokenizer_encoder *enc,
                              const char *text, size_t n, uint32_t *out, uint32_t **buf,
                              size_t *cap) {
    if (!tok->bpe) return (int64_t)byte_tokenizer_encode(text, n, out);
    int64_t k = tokenizer_encode(enc, text, n, 0, buf, cap);
    if (k < 0 || (uint64_t)k > n) return -1;
    memcpy(out, *buf, (size_t)k * sizeof(uint32_t));
    return k;
}

// ---- options ---------------------------------------------------------------------------

typedef struct prepare_opts {
    const char *out;
    double val_frac;
    unsigned long long shard_tokens;
    const char *doc_sep;   // NULL: a file is one document
    const char *tokenizer; // NULL: byte-level
    int jsonl;
    char **files;          // (n_files) owned array of views into argv, in argv order
    int n_files;
} prepare_opts;

// Print a usage error. Returns 2.
static int usage_error(const char *fmt, const char *arg) {
    fputs("anvil: prepare text: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    fputs(USAGE, stderr);
    return 2;
}

// Parse argv (argv[0] == "text"). Returns 0 (o->files to be freed by the caller),
// -1 after printing help (exit 0), or 2 after a usage error.
static int parse_opts(prepare_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->val_frac = PREPARE_DEFAULT_VAL_FRAC;
    o->shard_tokens = PREPARE_DEFAULT_SHARD_TOKENS;
    char **files = malloc((size_t)argc * sizeof *files);
    if (!files) return usage_error("%s", "out of memory");
    int nf = 0, only_files = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_files || a[0] != '-' || a[1] == '\0') { files[nf++] = argv[i]; continue; }
        if (!strcmp(a, "--")) { only_files = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            fputs(HELP, stdout);
            free(files);
            return -1;
        }
        if (!strcmp(a, "--jsonl")) { o->jsonl = 1; continue; }
        // Options with a value: "--opt VALUE" or "--opt=VALUE".
        static const char *const with_value[] = {"--out", "--val-frac", "--shard-tokens",
                                                 "--doc-sep", "--tokenizer"};
        const char *val = NULL;
        int which = -1;
        for (int k = 0; k < (int)(sizeof with_value / sizeof *with_value); k++) {
            size_t len = strlen(with_value[k]);
            if (!strncmp(a, with_value[k], len) && (a[len] == '\0' || a[len] == '=')) {
                which = k;
                val = a[len] == '=' ? a + len + 1 : (i + 1 < argc ? argv[++i] : NULL);
                break;
            }
        }
        if (which < 0) { free(files); return usage_error("unknown option '%s'", a); }
        if (!val) { free(files); return usage_error("option '%s' needs a value", a); }
        char *end = NULL;
        errno = 0;
        if (which == 0) {
            o->out = val;
        } else if (which == 1) {
            o->val_frac = strtod(val, &end);
            if (errno || end == val || *end || !(o->val_frac >= 0 && o->val_frac < 1)) {
                free(files);
                return usage_error("--val-frac '%s' must be a number in [0, 1)", val);
            }
        } else if (which == 2) {
            o->shard_tokens = strtoull(val, &end, 10);
            if (errno || end == val || *end || val[0] == '-' || o->shard_tokens < 1) {
                free(files);
                return usage_error("--shard-tokens '%s' must be a positive integer", val);
            }
        } else if (which == 3) {
            o->doc_sep = val;
        } else {
            o->tokenizer = val;
        }
    }
    const char *bad = !o->out ? "--out DIR is required"
                    : nf == 0 ? "no input FILES given"
                    : o->jsonl && o->doc_sep ? "--jsonl and --doc-sep cannot be combined"
                    : NULL;
    if (bad) {
        free(files);
        return usage_error("%s", bad);
    }
    o->files = files;
    o->n_files = nf;
    return 0;
}

// ---- stage 1: documents ----------------------------------------------------------------

typedef struct arena { char *p; size_t len, cap; } arena;
typedef struct doc_span { size_t off, len; } doc_span;
typedef struct doc_list { doc_span *v; size_t n, cap; } doc_list;

// Make room for `more` bytes past a->len. Returns 0, or 1 when out of memory.
static int arena_reserve(arena *a, size_t more) {
    if (a->cap - a->len >= more) return 0;
    size_t cap = a->cap ? a->cap : 1 << 16;
    while (cap - a->len < more) {
        if (cap > SIZE_MAX / 2) return 1;
        cap *= 2;
    }
    char *p = realloc(a->p, cap);
    if (!p) return 1;
    a->p = p;
    a->cap = cap;
    return 0;
}

// Append the whole file at path to a. Returns 0, 2 after printing why it cannot be
// read, or 1 when out of memory.
static int arena_read_file(arena *a, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "anvil: prepare: cannot read '%s': %s\n", path, strerror(errno));
        return 2;
    }
    for (;;) {
        if (arena_reserve(a, 1 << 20)) { fclose(f); return 1; }
        size_t got = fread(a->p + a->len, 1, a->cap - a->len, f);
        a->len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    int saved = errno;
    fclose(f);
    if (bad) {
        fprintf(stderr, "anvil: prepare: cannot read '%s': %s\n", path, strerror(saved));
        return 2;
    }
    return 0;
}

static int is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

// Add [off, off + len) as a document unless it is empty or all white space. Returns 0,
// or 1 when out of memory.
static int doc_add(doc_list *d, const arena *a, size_t off, size_t len) {
    size_t i = 0;
    while (i < len && is_blank(a->p[off + i])) i++;
    if (i == len) return 0;
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 1024;
        doc_span *v = realloc(d->v, cap * sizeof *v);
        if (!v) return 1;
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = (doc_span){off, len};
    return 0;
}

// Cut a->p[start, a->len) into documents at lines equal to sep (a trailing CR is
// ignored). The separator lines themselves belong to no document. Returns 0 or 1.
static int split_at_separator(doc_list *d, const arena *a, size_t start, const char *sep) {
    size_t sep_len = strlen(sep), doc = start, line = start;
    while (line < a->len) {
        const char *nl = memchr(a->p + line, '\n', a->len - line);
        size_t end = nl ? (size_t)(nl - a->p) : a->len;   // line is [line, end)
        size_t len = end - line;
        if (len > 0 && a->p[end - 1] == '\r') len--;
        size_t next = nl ? end + 1 : a->len;
        if (len == sep_len && !memcmp(a->p + line, sep, sep_len)) {
            if (doc_add(d, a, doc, line - doc)) return 1;
            doc = next;
        }
        line = next;
    }
    return doc_add(d, a, doc, a->len - doc);
}

// -- JSONL: a strict little JSON reader, enough to pull one string field out.

typedef struct json_in {
    const char *p, *end;
    const char *err;   // what is wrong, set on failure
} json_in;

static void json_ws(json_in *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
        j->p++;
}

static int hex4(const char *p, const char *end, uint32_t *v) {
    if (end - p < 4) return -1;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

static size_t utf8_put(char *out, uint32_t cp) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

// Parse a JSON string at j->p (on its opening quote), decoding it to UTF-8 into out
// (room for as many bytes as the source holds: decoding never grows). A surrogate
// pair becomes one 4-byte character; a lone surrogate becomes U+FFFD. Returns the
// decoded length, or (size_t)-1 with j->err set.
static size_t json_string(json_in *j, char *out) {
    size_t n = 0;
    j->p++;   // opening quote
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"') return n;
        if (c < 0x20) { j->err = "control character inside a string"; return (size_t)-1; }
        if (c != '\\') { out[n++] = (char)c; continue; }
        if (j->p >= j->end) break;
        char e = *j->p++;
        switch (e) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (hex4(j->p, j->end, &cp)) { j->err = "bad \\u escape"; return (size_t)-1; }
            j->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && j->end - j->p >= 6 && j->p[0] == '\\' &&
                j->p[1] == 'u' && !hex4(j->p + 2, j->end, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                j->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD;   // lone surrogate: not representable in UTF-8
            }
            n += utf8_put(out + n, cp);
            break;
        }
        default: j->err = "bad escape in a string"; return (size_t)-1;
        }
    }
    j->err = "unterminated string";
    return (size_t)-1;
}

// Skip one JSON value of any kind, using scratch for strings. Returns 0, or -1 with
// j->err set.
static int json_skip(json_in *j, char *scratch, int depth) {
    json_ws(j);
    if (j->p >= j->end) { j->err = "value expected"; return -1; }
    if (depth > JSON_MAX_DEPTH) { j->err = "nested too deeply"; return -1; }
    char c = *j->p;
    if (c == '"') return json_string(j, scratch) == (size_t)-1 ? -1 : 0;
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        json_ws(j);
        if (j->p < j->end && *j->p == close) { j->p++; return 0; }
        for (;;) {
            if (c == '{') {
                json_ws(j);
                if (j->p >= j->end || *j->p != '"') { j->err = "object key expected"; return -1; }
                if (json_string(j, scratch) == (size_t)-1) return -1;
                json_ws(j);
                if (j->p >= j->end || *j->p != ':') { j->err = "':' expected"; return -1; }
                j->p++;
            }
            if (json_skip(j, scratch, depth + 1)) return -1;
            json_ws(j);
            if (j->p < j->end && *j->p == ',') { j->p++; continue; }
            if (j->p < j->end && *j->p == close) { j->p++; return 0; }
            j->err = c == '{' ? "',' or '}' expected" : "',' or ']' expected";
            return -1;
        }
    }
    static const char *const lits[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t len = strlen(lits[k]);
        if ((size_t)(j->end - j->p) >= len && !memcmp(j->p, lits[k], len)) {
            j->p += len;
            return 0;
        }
    }
    // A number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
    const char *p = j->p;
    if (p < j->end && *p == '-') p++;
    if (p < j->end && *p == '0') p++;
    else if (p < j->end && *p >= '1' && *p <= '9') while (p < j->end && *p >= '0' && *p <= '9') p++;
    else { j->err = "invalid value"; return -1; }
    if (p < j->end && *p == '.') {
        if (++p >= j->end || *p < '0' || *p > '9') { j->err = "invalid number"; return -1; }
        while (p < j->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < j->end && (*p == '+' || *p == '-')) p++;
        if (p >= j->end || *p < '0' || *p > '9') { j->err = "invalid number"; return -1; }
        while (p < j->end && *p >= '0' && *p <= '9') p++;
    }
    j->p = p;
    return 0;
}

// Decode the "text" field of the JSON object in line[0, len) into a (appended at
// a->len, which advances). Returns 0, or -1 with *err set. a must have room for len
// more bytes.
static int json_text_field(arena *a, const char *line, size_t len, size_t *off,
                           size_t *text_len, const char **err) {
    json_in j = {line, line + len, NULL};
    char *scratch = a->p + a->len;   // keys and skipped strings decode here, then vanish
    int found = 0;
    json_ws(&j);
    if (j.p >= j.end || *j.p != '{') { *err = "a JSON object expected"; return -1; }
    j.p++;
    json_ws(&j);
    if (j.p < j.end && *j.p == '}') j.p++;
    else for (;;) {
        json_ws(&j);
        if (j.p >= j.end || *j.p != '"') { *err = "object key expected"; return -1; }
        size_t klen = json_string(&j, scratch);
        if (klen == (size_t)-1) { *err = j.err; return -1; }
        int is_text = klen == 4 && !memcmp(scratch, "text", 4);
        json_ws(&j);
        if (j.p >= j.end || *j.p != ':') { *err = "':' expected"; return -1; }
        j.p++;
        json_ws(&j);
        if (is_text) {
            if (j.p >= j.end || *j.p != '"') { *err = "\"text\" is not a string"; return -1; }
            // Decode in place at the arena's end; a repeated key wins, as in Python.
            size_t tl = json_string(&j, a->p + a->len);
            if (tl == (size_t)-1) { *err = j.err; return -1; }
            *off = a->len;
            *text_len = tl;
            a->len += tl;
            scratch = a->p + a->len;
            found = 1;
        } else if (json_skip(&j, scratch, 1)) {
            *err = j.err;
            return -1;
        }
        json_ws(&j);
        if (j.p < j.end && *j.p == ',') { j.p++; continue; }
        if (j.p < j.end && *j.p == '}') { j.p++; break; }
        *err = "',' or '}' expected";
        return -1;
    }
    json_ws(&j);
    if (j.p != j.end) { *err = "unexpected characters after the object"; return -1; }
    if (!found) { *err = "no \"text\" field"; return -1; }
    return 0;
}

// Read a JSONL file into documents. Returns 0, 2 after naming file:line, or 1.
static int read_jsonl(doc_list *d, arena *a, const char *path) {
    arena raw = {0};
    int rc = arena_read_file(&raw, path);
    if (rc) { free(raw.p); return rc; }
    size_t line_no = 0;
    for (size_t pos = 0; pos < raw.len;) {
        const char *nl = memchr(raw.p + pos, '\n', raw.len - pos);
        size_t end = nl ? (size_t)(nl - raw.p) : raw.len;
        const char *line = raw.p + pos;
        size_t len = end - pos;
        line_no++;
        pos = nl ? end + 1 : raw.len;
        size_t k = 0;
        while (k < len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r')) k++;
        if (k == len) continue;   // blank line
        if (arena_reserve(a, len)) { rc = 1; break; }
        size_t off = 0, tl = 0;
        const char *err = NULL;
        if (json_text_field(a, line, len, &off, &tl, &err)) {
            fprintf(stderr, "anvil: prepare: %s:%zu: malformed JSONL record: %s\n", path,
                    line_no, err);
            rc = 2;
            break;
        }
        if (doc_add(d, a, off, tl)) { rc = 1; break; }
    }
    free(raw.p);
    return rc;
}

// Read all inputs into the arena and the document list. Returns 0, 2 or 1.
static int read_documents(const prepare_opts *o, doc_list *d, arena *a) {
    for (int i = 0; i < o->n_files; i++) {
        const char *path = o->files[i];
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            fprintf(stderr, "anvil: prepare: '%s' is a directory, not a text file\n", path);
            return 2;
        }
        int rc;
        if (o->jsonl) {
            rc = read_jsonl(d, a, path);
        } else {
            size_t start = a->len;
            rc = arena_read_file(a, path);
            if (!rc) rc = o->doc_sep ? split_at_separator(d, a, start, o->doc_sep)
                                     : doc_add(d, a, start, a->len - start);
        }
        if (rc == 1) fprintf(stderr, "anvil: prepare: out of memory reading '%s'\n", path);
        if (rc) return rc;
    }
    return 0;
}

// ---- stage 2: the held-out split -----------------------------------------------------

// Number of validation documents out of n: round(frac * n), at least 1 when n >= 2 and
// frac > 0, and never all of them.
static uint64_t val_count(uint64_t n, double frac) {
    if (n < 2 || frac <= 0) return 0;
    uint64_t k = (uint64_t)llround(frac * (double)n);
    if (k < 1) k = 1;
    if (k > n - 1) k = n - 1;
    return k;
}

// Whether document i of n is held out: the k of them where floor(i * k / n) steps up,
// spread evenly (for k = 1 the last document).
static int val_is_doc(uint64_t i, uint64_t n, uint64_t k) {
    return k && (i + 1) * k / n > i * k / n;
}

// ---- stage 3: tokens -> shards ---------------------------------------------------------

typedef struct shard_sink {
    const char *dir, *split;   // files are DIR/SPLIT_NNNNNN.bin
    int token_bytes;
    uint32_t *buf;             // (cap) tokens of the shard being filled
    uint64_t n, cap;
    int written;               // shard files written
    uint64_t total;            // tokens written or buffered
} shard_sink;

// Write the buffered tokens as the next shard. Returns 0, 2 from shard_write, or 1.
static int sink_flush(shard_sink *s) {
    if (s->n == 0) return 0;
    size_t len = strlen(s->dir) + strlen(s->split) + 32;
    char *path = malloc(len);
    if (!path) {
        fprintf(stderr, "anvil: prepare: out of memory\n");
        return 1;
    }
    snprintf(path, len, "%s/%s_%06d.bin", s->dir, s->split, s->written);
    int rc = shard_write(path, s->buf, s->n, s->token_bytes);
    free(path);
    if (rc) return rc;
    s->written++;
    s->n = 0;
    return 0;
}

// Append ids, writing a shard each time the buffer fills. Returns 0, 2 or 1.
static int sink_push(shard_sink *s, const uint32_t *ids, size_t n) {
    s->total += n;
    while (n > 0) {
        size_t k = s->cap - s->n < n ? (size_t)(s->cap - s->n) : n;
        memcpy(s->buf + s->n, ids, k * sizeof *ids);
        s->n += k;
        ids += k;
        n -= k;
        if (s->n == s->cap) {
            int rc = sink_flush(s);
            if (rc) return rc;
        }
    }
    return 0;
}

// Remove DIR/SPLIT_NNNNNN.bin files numbered >= keep, left by an earlier run with
// more shards: a glob over the directory would otherwise mix them into this data.
// Returns the number removed.
static int remove_stale_shards(const char *dir, const char *split, int keep) {
    size_t len = strlen(dir) + strlen(split) + 32;
    char *pattern = malloc(len);
    if (!pattern) return 0;
    snprintf(pattern, len, "%s/%s_[0-9]*.bin", dir, split);
    glob_t g;
    int removed = 0;
    if (glob(pattern, 0, NULL, &g) == 0) {
        size_t prefix = strlen(dir) + 1 + strlen(split) + 1;
        for (size_t i = 0; i < g.gl_pathc; i++) {
            const char *num = g.gl_pathv[i] + prefix;
            char *end = NULL;
            long idx = strtol(num, &end, 10);
            if (end - num >= 6 && !strcmp(end, ".bin") && idx >= keep &&
                unlink(g.gl_pathv[i]) == 0)
                removed++;
        }
        globfree(&g);
    }
    free(pattern);
    return removed;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// The progress line: on a terminal rewritten in place with \r (at most every 0.1 s),
// otherwise a plain line every 10 s so a log file is not flooded.
typedef struct progress {
    int tty;
    double t0, last;
    uint64_t bytes_total;
} progress;

static void progress_show(progress *p, uint64_t bytes, uint64_t docs, uint64_t tokens,
                          int final) {
    double t = now_s();
    if (!final && t - p->last < (p->tty ? 0.1 : 10.0)) return;
    if (final && !p->tty) return;
    p->last = t;
    double el = t - p->t0, rate = el > 0 ? (double)tokens / el : 0;
    double eta = bytes > 0 ? el * (double)(p->bytes_total - bytes) / (double)bytes : 0;
    fprintf(stderr, "%sprepare: %.1f / %.1f MB, %llu documents, %.2f M tokens/s, ETA %.0f s%s",
            p->tty ? "\r" : "", (double)bytes / 1e6, (double)p->bytes_total / 1e6,
            (unsigned long long)docs, rate / 1e6, eta, p->tty ? "   " : "\n");
    if (final) fputc('\n', stderr);
    fflush(stderr);
}

// ---- the subcommand -------------------------------------------------------------------

// `anvil prepare text ...`. Returns 0, 2 (bad input) or 1 (internal).
static int prepare_text(int argc, char **argv) {
    prepare_opts o;
    int rc = parse_opts(&o, argc, argv);
    if (rc) return rc < 0 ? 0 : rc;

    prepare_tokenizer tok;
    arena text = {0};
    doc_list docs = {0};
    uint32_t *ids = NULL;          // the block's ids, one slot per document
    int64_t *count = NULL;         // (docs in a block) ids of each document
    size_t *slot = NULL;           // (docs in a block + 1) slot offsets into ids
    int n_threads = omp_get_max_threads();
    tokenizer_encoder **enc = calloc((size_t)n_threads, sizeof *enc);
    uint32_t **tbuf = calloc((size_t)n_threads, sizeof *tbuf);
    size_t *tcap = calloc((size_t)n_threads, sizeof *tcap);
    if ((rc = prepare_tokenizer_open(&tok, o.tokenizer)) != 0) {
        free(enc); free(tbuf); free(tcap); free(o.files);
        return rc;
    }
    if (!enc || !tbuf || !tcap) { rc = 1; goto oom; }
    for (int t = 0; tok.bpe && t < n_threads; t++)
        if (!(enc[t] = tokenizer_encoder_new(tok.bpe))) { rc = 1; goto oom; }
    shard_sink sink[2] = {{0}, {0}};   // [0] train, [1] val
    struct stat st;

    rc = read_documents(&o, &docs, &text);
    if (rc) goto done;
    if (docs.n == 0) {
        fprintf(stderr, "anvil: prepare: no documents in the %d input file%s (all empty "
                "or blank)\n", o.n_files, o.n_files == 1 ? "" : "s");
        rc = 2;
        goto done;
    }
    char failed[4096];
    if (data_mkdirs(o.out, failed, sizeof failed) != 0) {
        fprintf(stderr, "anvil: prepare: --out '%s': cannot create '%s': %s\n", o.out, failed,
                strerror(errno));
        rc = 2;
        goto done;
    }
    if (stat(o.out, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "anvil: prepare: '%s' is not a directory\n", o.out);
        rc = 2;
        goto done;
    }

    // Size each split's buffer: one shard, or less when the split is smaller (the
    // encoder emits at most one id per byte, plus EOT per document).
    uint64_t n_val = val_count(docs.n, o.val_frac), bound[2] = {0, 0}, bytes_total = 0;
    size_t longest = 0;
    for (size_t i = 0; i < docs.n; i++) {
        bound[val_is_doc(i, docs.n, n_val)] += docs.v[i].len + 1;
        bytes_total += docs.v[i].len;
        if (docs.v[i].len > longest) longest = docs.v[i].len;
    }
    static const char *const split_name[2] = {"train", "val"};
    for (int k = 0; k < 2; k++) {
        sink[k].dir = o.out;
        sink[k].split = split_name[k];
        sink[k].token_bytes = tok.vocab_size <= 65536 ? 2 : 4;
        sink[k].cap = bound[k] < o.shard_tokens ? bound[k] : o.shard_tokens;
        if (sink[k].cap > SIZE_MAX / sizeof(uint32_t)) sink[k].cap = SIZE_MAX / sizeof(uint32_t);
        if (sink[k].cap && !(sink[k].buf = malloc((size_t)sink[k].cap * sizeof(uint32_t)))) {
            rc = 1;
            goto oom;
        }
    }
    // A block holds whole documents, at least one, up to PREPARE_BLOCK_BYTES of text.
    size_t block_cap = (longest > PREPARE_BLOCK_BYTES ? longest : PREPARE_BLOCK_BYTES);
    if (!(ids = malloc(block_cap * sizeof *ids)) || !(count = malloc(docs.n * sizeof *count)) ||
        !(slot = malloc((docs.n + 1) * sizeof *slot))) {
        rc = 1;
        goto oom;
    }

    progress prog = {isatty(STDERR_FILENO), now_s(), 0, bytes_total};
    prog.last = prog.t0;
    uint64_t bytes_done = 0;
    for (size_t i = 0; i < docs.n;) {
        size_t j = i, bytes = 0;
        while (j < docs.n && (j == i || bytes + docs.v[j].len <= PREPARE_BLOCK_BYTES)) {
            slot[j - i] = bytes;
            bytes += docs.v[j++].len;
        }
        int failed_doc = 0;
        #pragma omp parallel for schedule(dynamic, 8) reduction(|:failed_doc)
        for (size_t d = i; d < j; d++) {
            int t = omp_get_thread_num();
            count[d - i] = prepare_encode(&tok, enc[t], text.p + docs.v[d].off, docs.v[d].len,
                                          ids + slot[d - i], &tbuf[t], &tcap[t]);
            if (count[d - i] < 0) failed_doc = 1;
        }
        if (failed_doc) {
            fprintf(stderr, "anvil: prepare: tokenizing failed (out of memory)\n");
            rc = 1;
            goto done;
        }
        for (size_t d = i; d < j; d++) {
            shard_sink *sk = &sink[val_is_doc(d, docs.n, n_val)];
            if ((rc = sink_push(sk, ids + slot[d - i], (size_t)count[d - i]))) goto done;
            if ((rc = sink_push(sk, &tok.eot, 1))) goto done;
        }
        bytes_done += bytes;
        progress_show(&prog, bytes_done, j, sink[0].total + sink[1].total, 0);
        i = j;
    }
    for (int k = 0; k < 2; k++)
        if ((rc = sink_flush(&sink[k]))) goto done;
    progress_show(&prog, bytes_done, docs.n, sink[0].total + sink[1].total, 1);
    int stale = remove_stale_shards(o.out, "train", sink[0].written) +
                remove_stale_shards(o.out, "val", sink[1].written);

    printf("prepare: %zu documents (%llu train, %llu val), %llu bytes; tokens: %llu train, "
           "%llu val (%s tokenizer, vocab %u); wrote %d train + %d val shards to %s",
           docs.n, (unsigned long long)(docs.n - n_val), (unsigned long long)n_val,
           (unsigned long long)bytes_total, (unsigned long long)sink[0].total,
           (unsigned long long)sink[1].total, tok.name, tok.vocab_size, sink[0].written,
           sink[1].written, o.out);
    if (stale) printf(", removed %d stale shard%s", stale, stale == 1 ? "" : "s");
    printf("\n");
    fflush(stdout);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "anvil: prepare: out of memory\n");
done:
    for (int t = 0; enc && t < n_threads; t++) {
        tokenizer_encoder_free(enc[t]);
        free(tbuf[t]);
    }
    free(enc);
    free(tbuf);
    free(tcap);
    tokenizer_free(tok.bpe);
    free(count);
    free(slot);
    free(ids);
    free(o.files);
    for (int k = 0; k < 2; k++) free(sink[k].buf);
    free(docs.v);
    free(text.p);
    return rc;
}

// Entry: argv after "prepare" (argv[0] is the kind of data). Returns 0, 1 or 2.
int prepare_main(int argc, char **argv) {
    if (argc < 1 || !argv[0]) {
        fprintf(stderr, "anvil: prepare: which data? (text)\n%s", USAGE);
        return 2;
    }
    if (!strcmp(argv[0], "text")) return prepare_text(argc, argv);
    if (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help") || !strcmp(argv[0], "help")) {
        fputs(USAGE, stdout);
        fputs(HELP, stdout);
        return 0;
    }
    fprintf(stderr, "anvil: prepare: unknown kind '%s' (known: text)\n%s", argv[0], USAGE);
    return 2;
}
