// data/pretokenize.h: what byte-level BPE encoding and training share before merges:
// the GPT-2 byte <-> unicode table and a PCRE2 (JIT) regex splitter.
//
// The byte-level table maps each of the 256 bytes to a printable code point (bytes
// 33..126, 161..172 and 174..255 map to themselves, the other 68 to U+0100.. in byte
// order), exactly as GPT-2's bytes_to_unicode() and HF's ByteLevel do; vocab and merge
// strings in tokenizer.json are written in these characters.
//
// The splitter finds successive matches as Hugging Face `tokenizers` (Oniguruma's
// find_iter) does: leftmost match from the end of the previous one; an empty match
// right after the previous match is skipped by moving on one character. Patterns are
// compiled with UTF + UCP; the escapes whose meaning differs between Oniguruma and
// PCRE2 (\s, \w, \h, and \p{L}/\p{N}/\p{M} for code points of Unicode 15-16) are
// rewritten before compiling (data/pretokenize.c, docs/tokenizer.md).
// Text need not be valid UTF-8: the matcher validates it (once per text, as it walks
// forward) and only then passes PCRE2_NO_UTF_CHECK; each invalid byte comes back as a
// one-byte match of its own and the regex runs on the valid runs between them.
#ifndef ANVIL_DATA_PRETOKENIZE_H
#define ANVIL_DATA_PRETOKENIZE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- GPT-2 byte-level alphabet ---------------------------------------------------
// Code point byte b stands for.
uint32_t bytelevel_byte_to_cp(uint8_t b);
// Byte that code point cp stands for, or -1 if cp is not a byte-level character.
int bytelevel_cp_to_byte(uint32_t cp);
// Write the UTF-8 of the byte-level characters of in[0..n) to out (room for 2n bytes;
// no NUL is written). Returns the number of bytes written.
size_t bytelevel_encode_bytes(const uint8_t *in, size_t n, char *out);
// Decode UTF-8 byte-level text in[0..n) back to bytes in out (room for n bytes). A
// character that is not byte-level is copied through as its UTF-8. Returns the length.
size_t bytelevel_decode_text(const char *in, size_t n, uint8_t *out);

// The ByteLevel pre-tokenizer's regex (HF `tokenizers`, use_regex: true).
#define PRETOKENIZE_GPT2_PATTERN \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

// ---- regex splitter ---------------------------------------------------------------
typedef struct pretok_regex pretok_regex;       // compiled pattern, shared read-only
typedef struct pretok_matcher pretok_matcher;   // per-thread match state

// Compile `pattern` (UTF-8). Returns 0 and sets *out, or -1 with PCRE2's message and
// the pattern offset in err (capacity errlen), or "out of memory".
int pretok_regex_compile(pretok_regex **out, const char *pattern, char *err, size_t errlen);
// Compile `literal` as a plain string to find (HF's Split {String: ...}). Same contract.
int pretok_regex_compile_literal(pretok_regex **out, const char *literal, char *err,
                                 size_t errlen);
void pretok_regex_free(pretok_regex *re);   // NULL is a no-op

// A matcher for one thread. NULL: out of memory.
pretok_matcher *pretok_matcher_new(const pretok_regex *re);
void pretok_matcher_free(pretok_matcher *m);   // NULL is a no-op

// Next match in text[0..n) at or after *pos. Start every new text with *pos = 0 and
// then pass back the *pos it leaves (the matcher keeps per-text state keyed on that).
// Returns 1 with the match in [*start, *end) (possibly empty) and *pos advanced, 0
// when there is no further match, or -1 if PCRE2 failed (resource limit): the caller
// should treat text[*pos..n) as one piece.
int pretok_next(pretok_matcher *m, const char *text, size_t n, size_t *pos, size_t *start,
                size_t *end);

// HF's Split behaviour "Isolated": the text cut into the matches and the gaps between
// them, in order, empty pieces dropped. Iterate with
//   pretok_split s; pretok_split_init(&s);
//   while (pretok_split_next(m, text, n, &s, &start, &end)) ... piece [start, end) ...
typedef struct pretok_split {
    size_t pos;          // where the next regex search starts
    size_t prev;         // end of the last piece handed out
    size_t mstart, mend; // a match found but not handed out yet (after its gap)
    int pending;         // 1: [mstart, mend) is waiting
    int done;            // 1: the regex has no more matches
} pretok_split;
void pretok_split_init(pretok_split *s);
// Next non-empty piece: returns 1 with it in [*start, *end), 0 at the end of the text.
int pretok_split_next(pretok_matcher *m, const char *text, size_t n, pretok_split *s,
                      size_t *start, size_t *end);

// Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 if s starts with an
// invalid byte (overlong forms, surrogates and code points above U+10FFFF are invalid).
size_t utf8_valid_len(const uint8_t *s, size_t n);
// Decode the valid sequence at s (as utf8_valid_len accepted, length len).
uint32_t utf8_decode_valid(const uint8_t *s, size_t len);
// Encode cp (<= 0x10FFFF) to out (4 bytes room). Returns the length.
size_t utf8_encode_cp(uint32_t cp, char *out);

#ifdef __cplusplus
}
#endif
#endif
