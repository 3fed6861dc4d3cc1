// data/pretokenize.c: the GPT-2 byte-level alphabet and the PCRE2 (JIT) splitter that
// byte-level BPE encoding (data/bpe.c) and training (data/bpe_train.c) share.
//
// Hugging Face `tokenizers` runs its regexes with Oniguruma; we run them with PCRE2,
// whose JIT is fast and which Debian ships. The two agree on the constructs the GPT-2,
// Llama-3 and Qwen2 patterns use (classes, (?i:...), lookahead, greedy repeats) except
// a few escapes and the Unicode version of their tables, which regex_translate makes
// good by rewriting the pattern to Oniguruma's meaning before compiling:
//   \s  Oniguruma: White_Space (U+0085 yes, U+180E no)  -> \p{White_Space}
//   \S                                                   -> \P{White_Space}
//   \w  Oniguruma: letters, marks, numbers, Pc           -> [\p{L}\p{M}\p{N}\p{Pc}]
//   \W  (outside a class)                                -> [^\p{L}\p{M}\p{N}\p{Pc}]
//   \h  Oniguruma (Ruby syntax): a hex digit             -> [0-9a-fA-F]
//   \H  (outside a class)                                -> [^0-9a-fA-F]
//   \p{L} \p{N} \p{M} (also \pL ...; \P{..} outside a class): the same class plus the
//       code points Oniguruma's newer Unicode tables (16.0 in `tokenizers` 0.23) put
//       in it and PCRE2 10.42's (Unicode 14.0) do not: UNICODE_EXTRA_* below
// (checked against `tokenizers` 0.23: tests/unit/test_tokenizer_hf.py).
//
// UNICODE_EXTRA_* were made by classifying every code point both ways: with
// tokenizers' Split(Regex("\p{L}"), "removed") over a string of all code points, and
// with pcre2_match("^\p{L}$") on each; for L, N and M the difference holds only
// additions (9272, 120 and 93 code points: scripts and CJK blocks of Unicode 15-16).
//
// Match iteration copies Oniguruma's find_iter (the `onig` crate HF uses): search from
// the end of the last match; an empty match that ends where the last match ended is
// rejected and the search restarts one character further on.
//
// UTF-8: PCRE2_NO_UTF_CHECK is passed only for ranges this file has validated. The
// matcher remembers, per text, the first invalid byte at or after where it is searching
// (`bad`); the regex searches from pos with the subject cut at bad, and the invalid byte is
// returned as a one-byte match. A forward walk over a text validates each byte once.
#include "data/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JIT_STACK_START (64 * 1024)        // enough for every pattern of the three families
#define JIT_STACK_MAX (8 * 1024 * 1024)    // a pathological pattern on a huge run of text

// ---- byte-level alphabet -------------------------------------------------------------

// Bytes that GPT-2 keeps as their own code point: '!'..'~', U+00A1..U+00AC, U+00AE..U+00FF.
static int bytelevel_is_direct(unsigned b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

// The other 68 bytes map to U+0100 + their rank among them: 0..32 -> U+0100..U+0120,
// 127..160 -> U+0121..U+0142, 173 -> U+0143.
uint32_t bytelevel_byte_to_cp(uint8_t b) {
    if (bytelevel_is_direct(b)) return b;
    if (b <= 32) return 256u + b;
    if (b <= 160) return b + 162u;
    return 323;   // 173, the soft hyphen
}

int bytelevel_cp_to_byte(uint32_t cp) {
    if (cp < 256) return bytelevel_is_direct(cp) ? (int)cp : -1;
    if (cp <= 288) return (int)(cp - 256);
    if (cp <= 322) return (int)(cp - 162);
    return cp == 323 ? 173 : -1;
}

size_t bytelevel_encode_bytes(const uint8_t *in, size_t n, char *out) {
    unsigned char *o = (unsigned char *)out;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = bytelevel_byte_to_cp(in[i]);   // < U+0800: one or two bytes
        if (cp < 0x80) {
            o[k++] = (unsigned char)cp;
        } else {
            o[k++] = (unsigned char)(0xC0 | (cp >> 6));
            o[k++] = (unsigned char)(0x80 | (cp & 0x3F));
        }
    }
    return k;
}

size_t bytelevel_decode_text(const char *in, size_t n, uint8_t *out) {
    const uint8_t *u = (const uint8_t *)in;
    size_t i = 0, k = 0;
    while (i < n) {
        size_t len = utf8_valid_len(u + i, n - i);
        if (len == 0) {   // not UTF-8: copy the byte through
            out[k++] = u[i++];
            continue;
        }
        int b = bytelevel_cp_to_byte(utf8_decode_valid(u + i, len));
        if (b >= 0) {
            out[k++] = (uint8_t)b;
        } else {
            memcpy(out + k, u + i, len);
            k += len;
        }
        i += len;
    }
    return k;
}

// ---- UTF-8 ---------------------------------------------------------------------------

size_t utf8_valid_len(const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;                      // continuation byte or overlong lead
    if (c < 0xE0) return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;  // overlong
        if (c == 0xED && s[1] >= 0xA0) return 0; // surrogate
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;  // overlong
        if (c == 0xF4 && s[1] >= 0x90) return 0; // above U+10FFFF
        return 4;
    }
    return 0;
}

uint32_t utf8_decode_valid(const uint8_t *s, size_t len) {
    switch (len) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

size_t utf8_encode_cp(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

// Index of the first invalid UTF-8 byte in s[from..n), or n.
static size_t utf8_first_invalid(const uint8_t *s, size_t from, size_t n) {
    size_t i = from;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t len = utf8_valid_len(s + i, n - i);
        if (len == 0) return i;
        i += len;
    }
    return n;
}

// ---- compiling -------------------------------------------------------------------------

struct pretok_regex {
    pcre2_code *code;
    int jit;   // 1: JIT-compiled (pcre2_jit_match may be used)
};

struct pretok_matcher {
    const pretok_regex *re;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *stack;
    // per-text state (reset when a search starts at 0 or the text changes)
    const char *text;
    size_t n;
    size_t bad;             // first invalid byte at or after `checked`, or n
    size_t checked;         // position `bad` was computed from
    size_t last_match_end;  // end of the last match returned, SIZE_MAX: none yet
};

#define UNICODE_EXTRA_L \
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}" \
    "\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}" \
    "\\x{1123F}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}" \
    "\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}\\x{11BC0}-\\x{11BE0}" \
    "\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}" \
    "\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}" \
    "\\x{16D40}-\\x{16D6C}\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}" \
    "\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}" \
    "\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"

#define UNICODE_EXTRA_N \
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}" \
    "\\x{11F50}-\\x{11F59}\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}" \
    "\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}" \
    "\\x{1E5F1}-\\x{1E5FA}"

#define UNICODE_EXTRA_M \
    "\\x{897}\\x{CF3}\\x{ECE}\\x{10D69}-\\x{10D6D}\\x{10EFC}-\\x{10EFF}\\x{11241}" \
    "\\x{113B8}-\\x{113C0}\\x{113C2}\\x{113C5}\\x{113C7}-\\x{113CA}" \
    "\\x{113CC}-\\x{113D0}\\x{113D2}\\x{113E1}-\\x{113E2}\\x{11F00}-\\x{11F01}" \
    "\\x{11F03}\\x{11F34}-\\x{11F3A}\\x{11F3E}-\\x{11F42}\\x{11F5A}\\x{13440}" \
    "\\x{13447}-\\x{13455}\\x{1611E}-\\x{1612F}\\x{1E08F}\\x{1E4EC}-\\x{1E4EF}" \
    "\\x{1E5EE}-\\x{1E5EF}"

// Class bodies (what goes between [ and ]) in Oniguruma's meaning.
#define CLASS_L "\\p{L}" UNICODE_EXTRA_L
#define CLASS_N "\\p{N}" UNICODE_EXTRA_N
#define CLASS_M "\\p{M}" UNICODE_EXTRA_M
#define CLASS_WORD CLASS_L CLASS_M CLASS_N "\\p{Pc}"

// The class body for property escape p[0..) ("\\p{L}", "\\pN", ...) if it is one of L,
// N, M, with its length in *len; else NULL.
static const char *property_body(const char *p, size_t *len) {
    static const struct {
        const char *esc;
        const char *body;
    } known[] = {{"p{L}", CLASS_L}, {"p{N}", CLASS_N}, {"p{M}", CLASS_M},
                 {"pL", CLASS_L},   {"pN", CLASS_N},   {"pM", CLASS_M}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        size_t k = strlen(known[i].esc);
        if (strncmp(p + 1, known[i].esc + 1, k - 1) == 0 && (p[0] == 'p' || p[0] == 'P')) {
            *len = k;
            return known[i].body;
        }
    }
    return NULL;
}

// Append s[0..k) to the growing buffer *b (length *len, capacity *cap). Returns 0 or -1.
static int buf_put(char **b, size_t *len, size_t *cap, const char *s, size_t k) {
    if (*len + k + 1 > *cap) {
        size_t nc = (*cap ? *cap * 2 : 64) + k;
        char *nb = realloc(*b, nc);
        if (!nb) return -1;
        *b = nb;
        *cap = nc;
    }
    memcpy(*b + *len, s, k);
    *len += k;
    (*b)[*len] = '\0';
    return 0;
}

// Rewrite the escapes whose Oniguruma meaning differs from PCRE2's (table at the top).
// Returns a malloc'ed pattern, or NULL on out of memory.
static char *regex_translate(const char *p) {
    char *b = NULL;
    size_t len = 0, cap = 0;
    int in_class = 0;   // inside [...] (nested POSIX classes [:alpha:] do not matter here)
    int rc = buf_put(&b, &len, &cap, "", 0);
    for (size_t i = 0; p[i] && rc == 0; i++) {
        char c = p[i];
        if (c == '\\' && p[i + 1]) {
            char e = p[i + 1];
            const char *rep = NULL;
            size_t plen = 0;
            const char *body = property_body(p + i + 1, &plen);
            if (body && (e == 'p' || !in_class)) {   // \p{L} ..., or \P{L} ... outside a class
                const char *open = in_class ? "" : e == 'p' ? "[" : "[^";
                rc = buf_put(&b, &len, &cap, open, strlen(open));
                if (rc == 0) rc = buf_put(&b, &len, &cap, body, strlen(body));
                if (rc == 0 && !in_class) rc = buf_put(&b, &len, &cap, "]", 1);
                i += plen;   // the backslash and the escape
                continue;
            }
            if (e == 's') rep = "\\p{White_Space}";
            else if (e == 'S') rep = "\\P{White_Space}";
            else if (e == 'w') rep = in_class ? CLASS_WORD : "[" CLASS_WORD "]";
            else if (e == 'W' && !in_class) rep = "[^" CLASS_WORD "]";
            else if (e == 'h') rep = in_class ? "0-9a-fA-F" : "[0-9a-fA-F]";
            else if (e == 'H' && !in_class) rep = "[^0-9a-fA-F]";
            if (rep) {
                rc = buf_put(&b, &len, &cap, rep, strlen(rep));
            } else if (e == 'Q') {   // \Q...\E: copy verbatim
                const char *q = strstr(p + i + 2, "\\E");
                size_t k = q ? (size_t)(q + 2 - (p + i)) : strlen(p + i);
                rc = buf_put(&b, &len, &cap, p + i, k);
                i += k - 2;
            } else {
                rc = buf_put(&b, &len, &cap, p + i, 2);
            }
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            rc = buf_put(&b, &len, &cap, p + i, 1);
            // a ']' right after '[' or '[^' is a literal
            if (rc == 0 && p[i + 1] == '^') rc = buf_put(&b, &len, &cap, p + ++i, 1);
            if (rc == 0 && p[i + 1] == ']') rc = buf_put(&b, &len, &cap, p + ++i, 1);
            continue;
        }
        if (in_class && c == '[' && p[i + 1] == ':') {   // POSIX class: copy to ":]"
            const char *q = strstr(p + i + 2, ":]");
            if (q) {
                size_t k = (size_t)(q + 2 - (p + i));
                rc = buf_put(&b, &len, &cap, p + i, k);
                i += k - 1;
                continue;
            }
        }
        if (in_class && c == ']') in_class = 0;
        rc = buf_put(&b, &len, &cap, p + i, 1);
    }
    if (rc != 0) {
        free(b);
        return NULL;
    }
    return b;
}

// Compile an already translated pattern. Returns 0 or -1 with err filled.
static int regex_compile_raw(pretok_regex **out, const char *pattern, char *err,
                             size_t errlen) {
    *out = NULL;
    pretok_regex *re = calloc(1, sizeof *re);
    if (!re) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int code;
    PCRE2_SIZE off;
    re->code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                             &code, &off, NULL);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(err, errlen, "%s at offset %zu", (const char *)msg, (size_t)off);
        free(re);
        return -1;
    }
    // Without JIT (a platform PCRE2 has no JIT for) the interpreter gives the same matches.
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    *out = re;
    return 0;
}

int pretok_regex_compile(pretok_regex **out, const char *pattern, char *err, size_t errlen) {
    *out = NULL;
    char *t = regex_translate(pattern);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = regex_compile_raw(out, t, err, errlen);
    free(t);
    return rc;
}

int pretok_regex_compile_literal(pretok_regex **out, const char *literal, char *err,
                                 size_t errlen) {
    *out = NULL;
    // Escape every ASCII punctuation character (PCRE2 treats an escaped non-alphanumeric
    // as itself), so no \Q...\E quoting problem can arise.
    size_t n = strlen(literal);
    char *t = malloc(2 * n + 1);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)literal[i];
        if (c < 0x80 && c > ' ' && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                                     (c >= 'A' && c <= 'Z')))
            t[k++] = '\\';
        t[k++] = (char)c;
    }
    t[k] = '\0';
    int rc = regex_compile_raw(out, t, err, errlen);
    free(t);
    return rc;
}

void pretok_regex_free(pretok_regex *re) {
    if (!re) return;
    pcre2_code_free(re->code);
    free(re);
}

// ---- matching --------------------------------------------------------------------------

pretok_matcher *pretok_matcher_new(const pretok_regex *re) {
    pretok_matcher *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->re = re;
    m->md = pcre2_match_data_create_from_pattern(re->code, NULL);
    m->mctx = pcre2_match_context_create(NULL);
    if (!m->md || !m->mctx) goto fail;
    // Oniguruma has no backtracking budget small enough to matter for these patterns;
    // PCRE2's default (10 million) could cut a long whitespace run short.
    pcre2_set_match_limit(m->mctx, UINT32_MAX);
    if (re->jit) {
        m->stack = pcre2_jit_stack_create(JIT_STACK_START, JIT_STACK_MAX, NULL);
        if (!m->stack) goto fail;
        pcre2_jit_stack_assign(m->mctx, NULL, m->stack);
    }
    return m;
fail:
    pretok_matcher_free(m);
    return NULL;
}

void pretok_matcher_free(pretok_matcher *m) {
    if (!m) return;
    pcre2_match_data_free(m->md);
    pcre2_match_context_free(m->mctx);
    pcre2_jit_stack_free(m->stack);
    free(m);
}

// One PCRE2 search of text[0..lim) from `from` (the range is valid UTF-8). Returns 1
// with the match in [*s, *e), 0 for no match, -1 on a PCRE2 error.
static int match_once(pretok_matcher *m, const char *text, size_t lim, size_t from, size_t *s,
                      size_t *e) {
    int rc = m->re->jit ? pcre2_jit_match(m->re->code, (PCRE2_SPTR)text, lim, from, 0, m->md,
                                          m->mctx)
                        : pcre2_match(m->re->code, (PCRE2_SPTR)text, lim, from,
                                      PCRE2_NO_UTF_CHECK, m->md, m->mctx);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return -1;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
    *s = ov[0];
    *e = ov[1];
    return 1;
}

int pretok_next(pretok_matcher *m, const char *text, size_t n, size_t *pos, size_t *start,
                size_t *end) {
    const uint8_t *u = (const uint8_t *)text;
    if (*pos == 0 || text != m->text || n != m->n || *pos < m->checked) {
        m->text = text;
        m->n = n;
        m->checked = *pos;
        m->bad = utf8_first_invalid(u, *pos, n);
        m->last_match_end = SIZE_MAX;
    }
    for (;;) {
        size_t p = *pos;
        if (p > n) return 0;
        if (p > m->bad) {   // walked past the invalid byte: find the next one
            m->checked = p;
            m->bad = utf8_first_invalid(u, p, n);
        }
        if (p == m->bad && p < n) {   // an invalid byte is a match of its own
            *start = p;
            *end = p + 1;
            *pos = p + 1;
            m->last_match_end = p + 1;
            return 1;
        }
        size_t s, e;
        int rc = match_once(m, text, m->bad, p, &s, &e);
        if (rc < 0) return -1;
        if (rc == 0) {
            if (m->bad >= n) {
                *pos = n + 1;   // searched to the end: nothing left
                return 0;
            }
            *pos = m->bad;      // nothing before the invalid byte: it comes next
            continue;
        }
        if (s == e && m->last_match_end == e) {
            // Oniguruma's rule: skip an empty match at the end of the last match, move
            // on one character (one byte past the end of the subject ends the search).
            // An invalid byte at e is not skipped: it comes next as its own match.
            if (e == m->bad && e < n) {
                *pos = e;
                m->last_match_end = SIZE_MAX;
                continue;
            }
            size_t step = e < m->bad ? utf8_valid_len(u + e, m->bad - e) : 1;
            *pos = e + (step ? step : 1);
            continue;
        }
        *start = s;
        *end = e;
        *pos = e;
        m->last_match_end = e;
        // After an empty match the next search from e would find the same empty match
        // and skip it: start one character on right away, so *pos never stays at 0
        // (which would read as a new text). An invalid byte at e is not stepped over.
        if (s == e && !(e == m->bad && e < n)) {
            size_t step = e < m->bad ? utf8_valid_len(u + e, m->bad - e) : 1;
            *pos = e + (step ? step : 1);
        }
        return 1;
    }
}

void pretok_split_init(pretok_split *s) {
    memset(s, 0, sizeof *s);
}

int pretok_split_next(pretok_matcher *m, const char *text, size_t n, pretok_split *s,
                      size_t *start, size_t *end) {
    for (;;) {
        if (s->pending) {
            if (s->prev < s->mstart) {   // the gap before the match first
                *start = s->prev;
                *end = s->mstart;
                s->prev = s->mstart;
                return 1;
            }
            s->pending = 0;
            s->prev = s->mend;
            if (s->mend > s->mstart) {
                *start = s->mstart;
                *end = s->mend;
                return 1;
            }
            continue;
        }
        if (s->done) {
            if (s->prev < n) {   // the tail after the last match
                *start = s->prev;
                *end = n;
                s->prev = n;
                return 1;
            }
            return 0;
        }
        size_t ms, me;
        int rc = pretok_next(m, text, n, &s->pos, &ms, &me);
        if (rc == 1) {
            s->mstart = ms;
            s->mend = me;
            s->pending = 1;
        } else {
            s->done = 1;   // 0: no more matches; -1: the rest is one piece
        }
    }
}
