// data/byte_tokenizer.c: the byte-level tokenizer (ids 0..255 are the bytes, 256 is
// end-of-text).
//
// It needs no vocabulary file, so the first-contact path (prepare a small corpus,
// train on the CPU, print a sample) works before any BPE tokenizer exists, and every
// byte sequence, valid UTF-8 or not, round-trips exactly. Decoding one id yields the
// raw byte: a multi-byte UTF-8 character comes out whole once its bytes are printed
// one after another.
#include "data/data.h"

#include <string.h>

// One id per byte. Returns n.
size_t byte_tokenizer_encode(const char *text, size_t n, uint32_t *ids) {
    const unsigned char *u = (const unsigned char *)text;
    for (size_t i = 0; i < n; i++) ids[i] = u[i];
    return n;
}

// Decode one id into out. Returns out. Byte 0 decodes to the empty string (out is a
// C string); an id past EOT decodes to U+FFFD.
const char *byte_tokenizer_decode(uint32_t id, char out[16]) {
    if (id < 256) {
        out[0] = (char)(unsigned char)id;
        out[1] = '\0';
    } else if (id == BYTE_TOKENIZER_EOT) {
        memcpy(out, "\n<|endoftext|>\n", 16);   // 15 characters + NUL: exactly fits
    } else {
        memcpy(out, "\xEF\xBF\xBD", 4);
    }
    return out;
}
