// checkpoint/crc32c.h: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), streaming,
// private to checkpoint/.
//
// The same CRC as iSCSI (RFC 3720), ext4 and the `crc32c` Python package: a cheap check
// that a block of a checkpoint file reads back as written. Checkpoint files are gigabytes,
// so on x86-64 CPUs with SSE4.2 it uses the crc32 instruction on three streams at once,
// chosen at run time; elsewhere it is the portable code (slicing-by-8). Both give the same
// values.
#ifndef ANVIL_CHECKPOINT_CRC32C_H
#define ANVIL_CHECKPOINT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CRC32C_HEX_BYTES 9   // 8 hex digits and the NUL

// The CRC-32C of everything fed so far: start with crc = 0, then crc = crc32c_update(crc,
// p, n) for each block; the result is the CRC of the blocks' concatenation (the ~ before
// and after is applied inside, as zlib's crc32() does). Safe to call from many threads.
// crc32c_update(0, "123456789", 9) == 0xE3069283.
uint32_t crc32c_update(uint32_t crc, const void *data, size_t n);

// The CRC-32C of A followed by B from crc_a (of A) and crc_b (of B, len_b bytes)
// alone, without B's bytes (as zlib's crc32_combine): lets a writer that knows the CRC
// of each piece of a file put together the file's CRC. Costs about 64 small 32x32 bit
// matrix products.
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

// crc as 8 lower-case hex digits, most significant first (printf "%08x"), NUL-terminated.
void crc32c_hex(uint32_t crc, char hex[CRC32C_HEX_BYTES]);

// For tests only: on != 0 sends every CRC computed from now on through the portable code
// even where the CPU has SSE4.2; on == 0 restores the run-time choice. Returns 1 if this
// CPU has the SSE4.2 path (so both paths can be compared), else 0.
int crc32c_force_portable(int on);

#ifdef __cplusplus
}
#endif
#endif
