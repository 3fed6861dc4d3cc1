// checkpoint/crc32c.c: CRC-32C (RFC 3720 B.4, reflected polynomial 0x82F63B78), with an
// x86-64 SSE4.2 version chosen at run time.
//
// Both versions work on the raw register: crc32c_update turns the caller's CRC into it
// with ~, feeds the bytes, and turns it back with ~, so a CRC of 0 starts a message and
// the value after each call is the CRC of everything so far.
//
// Why two versions: checkpoint files are gigabytes and a local NVMe reads several GB/s,
// while slicing-by-8 (eight table lookups per 8 bytes) checks about 2 GB/s. The SSE4.2 crc32
// instruction does 8 bytes a cycle in throughput, but its result takes 3 cycles, so one
// chain of them runs at a third of that. crc32c_raw_sse42 therefore runs three chains over
// three adjacent blocks A, B, C of CRC32C_STREAM_BYTES (L) each, B and C from a zero
// register, and joins them: the raw CRC is linear over GF(2) in register and data, so
//     raw(c, A||B) = raw(raw(c, A), L zero bytes) ^ raw(0, B)
// and "run L zero bytes through the register" is a fixed 32x32 bit matrix, applied as
// four 256-entry tables, one per byte of the register (crc32c_shift). Those and the
// slicing-by-8 tables are built once, on first use, under pthread_once (callers may be
// several OpenMP threads). crc32c_raw_sse42 is the only function built for SSE4.2 (a
// target attribute, so the file needs no flags and a binary built elsewhere with
// -march=native still starts); crc32c_update calls it only when the CPU that runs us has
// the instruction. tests/unit/test_crc32c.c checks both against RFC 3720's vectors, a
// bit-at-a-time CRC, and each other on every length and alignment that takes a different
// branch, through crc32c_force_portable.
#include "checkpoint/crc32c.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define CRC32C_POLY 0x82F63B78u          // 0x1EDC6F41 with its 32 bits reversed
// L, the bytes each of the three SSE4.2 chains takes per round (24 KiB a round): long
// enough that the two table joins per round cost nothing beside 3 x 1024 crc32 steps, short
// enough that 1 MiB reads leave little (16 KiB) to the single chain. tests/unit/test_crc32c.c
// tests lengths around multiples of 3L: change it there too.
#define CRC32C_STREAM_BYTES 8192

// ---- tables ---------------------------------------------------------------------------------

// crc32c_table[0][b]: the raw register after one byte b from register 0; [k][b]: the same
// byte followed by k zero bytes, so eight lookups take 8 bytes at once (slicing-by-8).
static uint32_t crc32c_table[8][256];
// crc32c_shift[k][b]: L zero bytes run through a register holding b in bits 8k..8k+7.
static uint32_t crc32c_shift[4][256];
static pthread_once_t crc32c_tables_once = PTHREAD_ONCE_INIT;

static void crc32c_tables_build(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int i = 0; i < 8; i++) c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        crc32c_table[0][b] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int b = 0; b < 256; b++) {
            uint32_t c = crc32c_table[k - 1][b];
            crc32c_table[k][b] = (c >> 8) ^ crc32c_table[0][c & 0xff];
        }
    // The image of each register bit under L zero bytes; the map is linear, so a register
    // byte's image is the XOR of its set bits' images.
    uint32_t image[32];
    for (int i = 0; i < 32; i++) {
        uint32_t c = 1u << i;
        for (int j = 0; j < CRC32C_STREAM_BYTES; j++) c = (c >> 8) ^ crc32c_table[0][c & 0xff];
        image[i] = c;
    }
    for (int k = 0; k < 4; k++)
        for (int b = 0; b < 256; b++) {
            uint32_t c = 0;
            for (int i = 0; i < 8; i++)
                if (b >> i & 1) c ^= image[8 * k + i];
            crc32c_shift[k][b] = c;
        }
}

static void crc32c_tables(void) { pthread_once(&crc32c_tables_once, crc32c_tables_build); }

// ---- portable -------------------------------------------------------------------------------

// n bytes at p through raw register c (tables built), eight at a time. The bytes are
// assembled little-endian by hand, so big-endian machines get the same answer.
static uint32_t crc32c_raw_portable(uint32_t c, const uint8_t *p, size_t n) {
    uint32_t (*t)[256] = crc32c_table;
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
            t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    }
    for (; n > 0; n--, p++) c = (c >> 8) ^ t[0][(c ^ *p) & 0xff];
    return c;
}

// ---- x86-64 SSE4.2 --------------------------------------------------------------------------

#if defined(__x86_64__)
// Raw register c after L zero bytes (tables built).
static uint32_t crc32c_shift_stream(uint32_t c) {
    return crc32c_shift[0][c & 0xff] ^ crc32c_shift[1][(c >> 8) & 0xff] ^
           crc32c_shift[2][(c >> 16) & 0xff] ^ crc32c_shift[3][c >> 24];
}

// n bytes at p through raw register c: bytewise up to 8-byte alignment, then rounds of
// three chains over 3L bytes, then what is left (< 3L) on one chain.
__attribute__((target("sse4.2")))
static uint32_t crc32c_raw_sse42(uint32_t c, const uint8_t *p, size_t n) {
    enum { L = CRC32C_STREAM_BYTES };
    for (; n > 0 && ((uintptr_t)p & 7); n--, p++) c = _mm_crc32_u8(c, *p);
    uint64_t c0 = c;   // the instruction's 64-bit form keeps the CRC in the low 32 bits
    if (n >= 3 * (size_t)L) {
        crc32c_tables();
        do {
            uint64_t c1 = 0, c2 = 0;
            for (size_t i = 0; i < L; i += 8) {
                uint64_t a, b, d;
                memcpy(&a, p + i, 8);
                memcpy(&b, p + L + i, 8);
                memcpy(&d, p + 2 * L + i, 8);
                c0 = _mm_crc32_u64(c0, a);
                c1 = _mm_crc32_u64(c1, b);
                c2 = _mm_crc32_u64(c2, d);
            }
            c0 = crc32c_shift_stream((uint32_t)c0) ^ (uint32_t)c1;   // raw(c, A||B)
            c0 = crc32c_shift_stream((uint32_t)c0) ^ (uint32_t)c2;   // raw(c, A||B||C)
            p += 3 * L;
            n -= 3 * L;
        } while (n >= 3 * (size_t)L);
    }
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t a;
        memcpy(&a, p, 8);
        c0 = _mm_crc32_u64(c0, a);
    }
    c = (uint32_t)c0;
    for (; n > 0; n--, p++) c = _mm_crc32_u8(c, *p);
    return c;
}
#endif

// ---- dispatch -------------------------------------------------------------------------------

static _Atomic int crc32c_portable_forced;   // set only by the test hook

// 1 if the running CPU has the SSE4.2 crc32 instruction.
static int crc32c_have_sse42(void) {
#if defined(__x86_64__)
    return __builtin_cpu_supports("sse4.2") != 0;
#else
    return 0;
#endif
}

int crc32c_force_portable(int on) {
    atomic_store_explicit(&crc32c_portable_forced, on != 0, memory_order_relaxed);
    return crc32c_have_sse42();
}

uint32_t crc32c_update(uint32_t crc, const void *data, size_t n) {
    const uint8_t *p = data;
#if defined(__x86_64__)
    if (!atomic_load_explicit(&crc32c_portable_forced, memory_order_relaxed) &&
        crc32c_have_sse42())
        return ~crc32c_raw_sse42(~crc, p, n);
#endif
    crc32c_tables();
    return ~crc32c_raw_portable(~crc, p, n);
}

// ---- helpers --------------------------------------------------------------------------------

// ---- combining ---------------------------------------------------------------------------
//
// CRC(A||B) = S(CRC(A)) ^ CRC(B), where S runs |B| zero bytes through the register: a
// linear map, applied as a 32x32 bit matrix (one column per register bit). The matrix
// for 2^k zero bits comes from squaring the one for a single bit, so S for |B| bytes is
// the product of the squares that |B|'s binary digits select.

// mat (32 columns) times the bit vector vec.
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec) {
    uint32_t sum = 0;
    for (; vec; vec >>= 1, mat++)
        if (vec & 1) sum ^= *mat;
    return sum;
}

// sq = mat * mat.
static void gf2_square(uint32_t *sq, const uint32_t *mat) {
    for (int n = 0; n < 32; n++) sq[n] = gf2_times(mat, mat[n]);
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
    if (len_b == 0) return crc_a;
    uint32_t even[32], odd[32];
    odd[0] = CRC32C_POLY;   // one zero bit: shift right, xor the polynomial if bit 0 was set
    for (int n = 1; n < 32; n++) odd[n] = 1u << (n - 1);
    gf2_square(even, odd);   // two zero bits
    gf2_square(odd, even);   // four
    for (;;) {   // from one zero byte (8 bits) up, a square per binary digit of len_b
        gf2_square(even, odd);
        if (len_b & 1) crc_a = gf2_times(even, crc_a);
        if (!(len_b >>= 1)) break;
        gf2_square(odd, even);
        if (len_b & 1) crc_a = gf2_times(odd, crc_a);
        if (!(len_b >>= 1)) break;
    }
    return crc_a ^ crc_b;
}

void crc32c_hex(uint32_t crc, char hex[CRC32C_HEX_BYTES]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) hex[i] = digits[(crc >> (28 - 4 * i)) & 15];
    hex[8] = '\0';
}
