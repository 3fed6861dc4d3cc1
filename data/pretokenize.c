// data/pretokenize.c: the GPT-2 byte-level alphabet and the PCRE2 (JIT) splitter that
// byte-level BPE encoding (data/bpe.c) and training (data/bpe_train.c) share.
//
// Hugging Face `tokenizers` runs its regexes with Oniguruma; we run them with PCRE2,
// whose JIT is fast and which Debian ships. The two agree on everything the GPT-2,
// Llama-3 and Qwen2 patterns use (\p{L}, \p{N}, (?i:...), lookahead) except a few
// escapes, which regex_translate rewrites to the Oniguruma meaning before compiling:
//   \s  Oniguruma: White_Space (U+0085 yes, U+180E no)  -> \p{White_Space}
//   \S                                                   -> \P{White_Space}
//   \w  Oniguruma: letters, marks, numbers, Pc           -> [\p{L}\p{M}\p{N}\p{Pc}]
//   \W  (outside a class)                                -> [^\p{L}\p{M}\p{N}\p{Pc}]
//   \h  Oniguruma (Ruby syntax): a hex digit             -> [0-9a-fA-F]
//   \H  (outside a class)                                -> [^0-9a-fA-F]
// (checked against `tokenizers` 0.23: tests/unit/test_tokenizer_hf.py).
//
// Match iteration copies Oniguruma's find_iter (the `onig` crate HF uses): search from
// the end of the last match; an empty match that ends where the last match ended is
// rejected and the search restarts one character further on.
//
// UTF-8: PCRE2_NO_UTF_CHECK is passed only for ranges this file has validated. The
// matcher remembers, per text, the first invalid byte at or after where it is searching
// (`bad`); the regex runs on [pos, bad) as its whole subject and the invalid byte is
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

// The other 68 bytes map to U+0100 + their rank among them.
uint32_t bytelevel_byte_to_cp(uint8_t b) {
    if (bytelevel_is_direct(b)) return b;
    uint32_t rank = 0;
    for (unsigned x = 0; x < b; x++) rank += !bytelevel_is_direct(x);
    return 256 + rank;
}

int bytelevel_cp_to_byte(uint32_t cp) {
    if (cp < 256) return bytelevel_is_direct(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t rank = cp - 256;
    for (unsigned x = 0; x < 256; x++)
        if (!bytelevel_is_direct(x) && rank-- == 0) return (int)x;
    return -1;
}

// UTF-8 of each byte's character, built once: byte b's character is at
// bytelevel_utf8[b][1..], length bytelevel_utf8[b][0] (1 or 2).
static unsigned char bytelevel_utf8[256][3];
static int bytelevel_utf8_ready;

static void bytelevel_utf8_build(void) {
    unsigned char t[256][3];
    for (unsigned b = 0; b < 256; b++) {
        uint32_t cp = bytelevel_byte_to_cp((uint8_t)b);
        t[b][0] = (unsigned char)utf8_encode_cp(cp, (char *)&t[b][1]);
    }
    // Every thread computes the same bytes; a race writes identical values.
    memcpy(bytelevel_utf8, t, sizeof t);
    __atomic_store_n(&bytelevel_utf8_ready, 1, __ATOMIC_RELEASE);
}

size_t bytelevel_encode_bytes(const uint8_t *in, size_t n, char *out) {
    if (!__atomic_load_n(&bytelevel_utf8_ready, __ATOMIC_ACQUIRE)) bytelevel_utf8_build();
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *c = bytelevel_utf8[in[i]];
        out[k] = (char)c[1];
        if (c[0] == 2) out[k + 1] = (char)c[2];
        k += c[0];
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
            if (e == 's') rep = "\\p{White_Space}";
            else if (e == 'S') rep = "\\P{White_Space}";
            else if (e == 'w') rep = in_class ? "\\p{L}\\p{M}\\p{N}\\p{Pc}" : "[\\p{L}\\p{M}\\p{N}\\p{Pc}]";
            else if (e == 'W' && !in_class) rep = "[^\\p{L}\\p{M}\\p{N}\\p{Pc}]";
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
