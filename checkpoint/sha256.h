// checkpoint/sha256.h: SHA-256 (FIPS 180-4), streaming, private to checkpoint/.
//
// Only the checkpoint MANIFEST uses it, to detect files that changed or were cut short.
// Checkpoint files are gigabytes, so on x86-64 CPUs with the SHA extensions (SHA-NI) the
// block function uses them, chosen at run time; elsewhere it is the portable code. Both
// give the same digests.
#ifndef ANVIL_CHECKPOINT_SHA256_H
#define ANVIL_CHECKPOINT_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHA256_DIGEST_BYTES 32
#define SHA256_HEX_BYTES 65   // 64 hex digits and the NUL

typedef struct sha256_ctx {
    uint32_t h[8];        // the chaining state
    uint64_t n_bytes;     // message bytes hashed so far
    uint8_t block[64];    // the partial block
    size_t n_block;       // bytes used in block
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
// Pads, writes the digest and leaves c to be re-initialized before any further use.
void sha256_final(sha256_ctx *c, uint8_t out[SHA256_DIGEST_BYTES]);

// Lower-case hex of a digest into hex (65 bytes, NUL-terminated).
void sha256_hex(const uint8_t digest[SHA256_DIGEST_BYTES], char hex[SHA256_HEX_BYTES]);

// For tests only: on != 0 sends every block hashed from now on through the portable code
// even where the CPU has SHA-NI; on == 0 restores the run-time choice. Returns 1 if this
// CPU has the SHA-NI path (so both paths can be compared), else 0.
int sha256_force_portable(int on);

#ifdef __cplusplus
}
#endif
#endif
