// checkpoint/ckpt_internal.h: what the files of checkpoint/ share and nobody else
// needs: the small path and error helpers (commit.c), the MANIFEST reader and the
// streaming checksum (manifest.c), used by the verifier and by the loader (load.c).
#ifndef ANVIL_CHECKPOINT_CKPT_INTERNAL_H
#define ANVIL_CHECKPOINT_CKPT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint/checkpoint.h"
#include "checkpoint/sha256.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CKPT_MANIFEST "MANIFEST"
#define CKPT_MANIFEST_TMP "MANIFEST.tmp"
#define CKPT_INDEX "model.h5"

// ---- helpers (commit.c) -------------------------------------------------------------

// Print "anvil: checkpoint: cannot WHAT 'PATH': strerror(errno)". Returns 2.
int ckpt_fail(const char *what, const char *path);
// Format a one-line reason into why (n bytes, may be 0). Returns 2.
int ckpt_why(char *why, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
// "dir/name" into out (n bytes). Returns 0, or -1 if it does not fit.
int ckpt_join(char *out, size_t n, const char *dir, const char *name);
// ckpt_join, printing an error naming dir and name when too long. Returns 0 or 2.
int ckpt_join_or_fail(char *out, size_t n, const char *dir, const char *name);
// fsync a file or directory by path. Returns 0, or 2 after printing.
int ckpt_fsync_path(const char *path, int is_dir);
// Create path with exactly these bytes, fsync and close it. Returns 0, or 2 after printing.
int ckpt_write_durable(const char *path, const char *data, size_t len);
// A name MANIFEST may list: not empty, not . or .., no space, control, DEL, backslash
// or slash.
int ckpt_name_ok(const char *name);

// The entries of a directory, sorted in byte order.
typedef struct name_list {
    char **v;
    size_t n, cap;
} name_list;
// Every entry of dir except . and .. into l. Returns 0, or -1 with errno set.
int name_list_read_dir(name_list *l, const char *dir);
void name_list_free(name_list *l);

// ---- streaming checksum (manifest.c) ------------------------------------------------

#define CKPT_SUM_HEX 68   // room for the longest digest in hex (SHA-256: 64) and the NUL

typedef struct ckpt_sum {
    ckpt_checksum algo;
    uint32_t crc;         // CRC-32C so far
    sha256_ctx sha;       // SHA-256 state
} ckpt_sum;

void ckpt_sum_init(ckpt_sum *s, ckpt_checksum algo);
void ckpt_sum_update(ckpt_sum *s, const void *data, size_t n);
// The digest in lower-case hex into hex; s must be initialized again before reuse.
void ckpt_sum_hex(ckpt_sum *s, char hex[CKPT_SUM_HEX]);

// ---- the MANIFEST, parsed (manifest.c) ----------------------------------------------

typedef struct ckpt_manifest_entry {
    const char *name;     // NUL-terminated, inside the MANIFEST text
    const char *hex;      // the expected digest (hex_len digits, not NUL-terminated)
    uint64_t size;        // bytes (format 2); UINT64_MAX when the format has no sizes
} ckpt_manifest_entry;

typedef struct ckpt_manifest {
    char *text;                   // the file, edited in place (owned)
    ckpt_manifest_entry *e;       // (n) sorted by name (owned)
    size_t n;
    ckpt_checksum algo;
    int hex_len;                  // 64 (SHA-256) or 8 (CRC-32C)
    uint64_t bytes;               // the trailer's total
} ckpt_manifest;

// Read and parse dir/MANIFEST. Returns 0, or 2 with why (n bytes) naming what is wrong.
int ckpt_manifest_load(const char *dir, ckpt_manifest *m, char *why, size_t n);
void ckpt_manifest_free(ckpt_manifest *m);
// The entry named `name`, or NULL.
const ckpt_manifest_entry *ckpt_manifest_find(const ckpt_manifest *m, const char *name);
// Whether hex (a computed digest) is the one e expects.
int ckpt_manifest_matches(const ckpt_manifest *m, const ckpt_manifest_entry *e,
                          const char *hex);
// The algorithm's name as MANIFEST and messages spell it ("SHA-256", "CRC-32C").
const char *ckpt_checksum_label(ckpt_checksum algo);

// ---- writing tensor data (write.c) --------------------------------------------------

#define CKPT_IO_ALIGN 4096   // O_DIRECT: file offsets, lengths and buffers in 4 KiB blocks

// The flags for opening path with O_DIRECT added to flags (what a filesystem without it
// refuses with EINVAL; the callers then fall back to ordinary I/O), or without it when
// the test hook ANVIL_TEST_NO_ODIRECT=1 asks (docs/checkpoint.md). Returns the fd or -1.
int ckpt_open_direct(const char *path, int flags);

// Write each piece's data (data[i], p[i].len[0] x p[i].len[1] float32) at p[i].addr of
// the existing file `path` (HDF5 has allocated the space), set p[i].crc, fsync, and put
// the whole file's CRC-32C into *file_crc and its size into *file_size. Returns 0, or 2
// after printing.
int ckpt_write_data(const char *path, ckpt_piece *p, const float *const *data, int n,
                    uint32_t *file_crc, uint64_t *file_size);

#ifdef __cplusplus
}
#endif
#endif
