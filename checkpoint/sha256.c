// checkpoint/sha256.c: SHA-256 as FIPS 180-4 section 6.2 writes it, with an x86-64
// SHA-NI block function chosen at run time.
//
// Messages are processed in 64-byte blocks: sha256_update buffers a partial block and
// hands every whole block of the caller's memory to one sha256_blocks call; sha256_final
// appends 0x80, zeros and the bit length (big-endian 64-bit) so the total is a multiple
// of 64.
//
// Why two block functions: checkpoint files are gigabytes and a local NVMe reads several
// GB/s, while the portable code hashes a few hundred MB/s, so without the SHA extensions
// verifying a checkpoint is bound by the hash, not the disk. sha256_blocks_shani is the
// only function built for those instructions (a target attribute, so the file needs no
// flags and a binary built with -march=native elsewhere still starts); sha256_blocks
// calls it only when CPUID says the CPU that runs us has them, otherwise the portable code.
// tests/unit/test_ckpt_commit.c checks both against the FIPS vectors and sha256sum, and
// against each other on random inputs, through sha256_force_portable.
#include "checkpoint/sha256.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif


// FIPS 180-4 4.2.2: the first 32 bits of the fractional parts of the cube roots of the
// first 64 primes. Aligned so SHA-NI's 16-byte loads of four of them never split a line.
static _Alignas(16) const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

// ---- portable ---------------------------------------------------------------------------

// One 64-byte block into the state (FIPS 180-4 6.2.2).
static void sha256_compress(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = hh + S1 + ch + K[t] + w[t];
        uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        hh = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

// n consecutive 64-byte blocks at p into the state.
static void sha256_blocks_portable(uint32_t h[8], const uint8_t *p, size_t n) {
    for (; n > 0; n--, p += 64) sha256_compress(h, p);
}

// ---- x86-64 SHA extensions ----------------------------------------------------------------
//
// SHA256RNDS2 runs two rounds: from (C,D,G,H) in its first operand, (A,B,E,F) in its
// second (lane 3 first: A in bits 127:96, F in 31:0) and W[t]+K[t], W[t+1]+K[t+1] in lanes
// 0 and 1 of the third, it returns the new (A,B,E,F). The new (C,D,G,H) after two rounds
// is the old (A,B,E,F), so a pair of calls that swap the two state registers does four
// rounds. SHA256MSG1(W[t-16..t-13], W[t-12..t-9]) gives W[t-16+i] + s0(W[t-15+i]);
// adding W[t-7..t-4] and feeding that with W[t-4..t-1] to SHA256MSG2, which adds
// s1(W[t-2+i]) (lanes 2 and 3 using the two words it has just made), gives W[t..t+3].
// The schedule lives in four registers, m[i % 4] holding W[4i..4i+3].

#if defined(__x86_64__)
__attribute__((target("sha,sse4.1,ssse3")))
static void sha256_blocks_shani(uint32_t h[8], const uint8_t *p, size_t n) {
    // Bytes 3,2,1,0 of each lane: the message words are big-endian.
    const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    // h[0..7] = a..h into lanes 3..0 of (A,B,E,F) and (C,D,G,H).
    __m128i abcd = _mm_loadu_si128((const __m128i *)&h[0]);            // lanes d c b a
    __m128i efgh = _mm_loadu_si128((const __m128i *)&h[4]);            // lanes h g f e
    abcd = _mm_shuffle_epi32(abcd, 0xB1);                              // c d a b
    efgh = _mm_shuffle_epi32(efgh, 0x1B);                              // e f g h
    __m128i abef = _mm_alignr_epi8(abcd, efgh, 8);                     // a b e f
    __m128i cdgh = _mm_blend_epi16(efgh, abcd, 0xF0);                  // c d g h
    for (; n > 0; n--, p += 64) {
        __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i m[4];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) {   // rounds 4i..4i+3
            if (i < 4) {
                m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
            } else {   // m[i % 4] held W[4i-16..4i-13]
                __m128i t = _mm_sha256msg1_epu32(m[i % 4], m[(i + 1) % 4]);
                t = _mm_add_epi32(t, _mm_alignr_epi8(m[(i + 3) % 4], m[(i + 2) % 4], 4));
                m[i % 4] = _mm_sha256msg2_epu32(t, m[(i + 3) % 4]);
            }
            __m128i wk = _mm_add_epi32(m[i % 4], _mm_load_si128((const __m128i *)&K[4 * i]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);   // rounds 4i, 4i+1: now (A,B,E,F)
            wk = _mm_shuffle_epi32(wk, 0x0E);               // lanes 2,3 down to 0,1
            abef = _mm_sha256rnds2_epu32(abef, cdgh, wk);   // rounds 4i+2, 4i+3
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    __m128i t = _mm_shuffle_epi32(abef, 0x1B);                         // f e b a
    cdgh = _mm_shuffle_epi32(cdgh, 0xB1);                              // d c h g
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(t, cdgh, 0xF0)); // d c b a
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(cdgh, t, 8));    // h g f e
}

// 1 if the running CPU has SHA-NI and the SSSE3/SSE4.1 shuffles around it, from CPUID
// (leaf 1 ECX, leaf 7 EBX) rather than __builtin_cpu_supports, whose "sha" clang 14
// rejects. Detected on first use; two threads racing to detect store the same answer.
static _Atomic int sha256_cpu_shani = -1;

static int sha256_have_shani(void) {
    int have = atomic_load_explicit(&sha256_cpu_shani, memory_order_relaxed);
    if (have < 0) {
        unsigned a, b, c, d;
        have = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSSE3) && (c & bit_SSE4_1) &&
               __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA);
        atomic_store_explicit(&sha256_cpu_shani, have, memory_order_relaxed);
    }
    return have;
}
#endif

// ---- dispatch -----------------------------------------------------------------------------

static _Atomic int sha256_portable_forced;   // set only by the test hook

int sha256_force_portable(int on) {
    atomic_store_explicit(&sha256_portable_forced, on != 0, memory_order_relaxed);
#if defined(__x86_64__)
    return sha256_have_shani();
#else
    return 0;
#endif
}

// n consecutive 64-byte blocks at p into the state, on the fastest path this CPU has.
static void sha256_blocks(uint32_t h[8], const uint8_t *p, size_t n) {
#if defined(__x86_64__)
    if (!atomic_load_explicit(&sha256_portable_forced, memory_order_relaxed) &&
        sha256_have_shani()) {
        sha256_blocks_shani(h, p, n);
        return;
    }
#endif
    sha256_blocks_portable(h, p, n);
}

// ---- streaming interface ------------------------------------------------------------------

void sha256_init(sha256_ctx *c) {
    // FIPS 180-4 5.3.3: fractional parts of the square roots of the first 8 primes.
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, H0, sizeof H0);
    c->n_bytes = 0;
    c->n_block = 0;
}

void sha256_update(sha256_ctx *c, const void *data, size_t n) {
    const uint8_t *p = data;
    c->n_bytes += n;
    if (c->n_block > 0) {
        size_t take = 64 - c->n_block < n ? 64 - c->n_block : n;
        memcpy(c->block + c->n_block, p, take);
        c->n_block += take;
        p += take;
        n -= take;
        if (c->n_block < 64) return;
        sha256_blocks(c->h, c->block, 1);
        c->n_block = 0;
    }
    size_t whole = n / 64;
    if (whole > 0) sha256_blocks(c->h, p, whole);
    p += 64 * whole;
    n -= 64 * whole;
    memcpy(c->block, p, n);
    c->n_block = n;
}

void sha256_final(sha256_ctx *c, uint8_t out[SHA256_DIGEST_BYTES]) {
    uint64_t bits = c->n_bytes * 8;
    c->block[c->n_block++] = 0x80;
    if (c->n_block > 56) {   // no room for the 8-byte length: pad out this block
        memset(c->block + c->n_block, 0, 64 - c->n_block);
        sha256_blocks(c->h, c->block, 1);
        c->n_block = 0;
    }
    memset(c->block + c->n_block, 0, 56 - c->n_block);
    for (int i = 0; i < 8; i++) c->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_blocks(c->h, c->block, 1);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)c->h[i];
    }
    memset(c, 0, sizeof *c);
}

void sha256_hex(const uint8_t digest[SHA256_DIGEST_BYTES], char hex[SHA256_HEX_BYTES]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < SHA256_DIGEST_BYTES; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[64] = '\0';
}
