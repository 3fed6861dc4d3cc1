// checkpoint/checkpoint.h: fault-tolerant sharded checkpoints.
//
// A checkpoint is a directory run.dir/checkpoints/step_NNNNNNNN/ (8 digits, the number
// of optimizer steps done) holding HDF5 files and a MANIFEST. It is written under
// step_NNNNNNNN.tmp, every file fsynced, the MANIFEST (a checksum of every file:
// CRC-32C, or SHA-256 in `sha256sum -c` format) written and fsynced last, then the directory is renamed into
// place and the `latest` pointer (a one-line text file naming the directory) replaced
// by rename. A crash at
// any point leaves the previous checkpoint and pointer intact; a directory without a
// valid MANIFEST is never loaded. docs/checkpoint.md documents the files.
#ifndef ANVIL_CHECKPOINT_CHECKPOINT_H
#define ANVIL_CHECKPOINT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CKPT_PATH_MAX 4096

// ---- directories, manifest, commit (commit.c) -------------------------------------

// "root/step_NNNNNNNN" and "root/step_NNNNNNNN.tmp" into out (n bytes). Returns 0, or
// -1 if it does not fit.
int ckpt_step_dir(const char *root, long step, char *out, size_t n);
int ckpt_tmp_dir(const char *root, long step, char *out, size_t n);

// Create root (and its parents) and an empty tmp directory for `step`, removing a
// stale one a crashed save left. A committed directory of the same step (left by a
// run that resumed from an older checkpoint) is moved aside to
// step_NNNNNNNN.replaced-TIME, never deleted. Returns 0, or 2 after printing the path
// and errno.
int ckpt_begin(const char *root, long step, char *tmp, size_t n);

// The checksum a MANIFEST holds for each file (checkpoint.checksum; manifest.c says
// why CRC-32C is the default).
typedef enum ckpt_checksum { CKPT_CHECKSUM_CRC32C = 0, CKPT_CHECKSUM_SHA256 = 1 } ckpt_checksum;

// Write dir/MANIFEST in the SHA-256 format: one line "SHA256  NAME" per regular file
// in dir (sorted by name, `sha256sum -c MANIFEST` format), then "# anvil-manifest 1
// files N bytes B". Every file and then MANIFEST and dir are fsynced. Returns 0, or 2
// after printing.
int ckpt_manifest_write(const char *dir);

// A file's checksum as computed by the rank that wrote it, so that rank 0 does not
// read every rank's file again to write the MANIFEST.
typedef struct ckpt_file_hash {
    char name[32];               // in the checkpoint directory
    char hex[68];                // lower-case hex digits, NUL-terminated
    int32_t algo;                // ckpt_checksum
    uint64_t size;               // bytes
} ckpt_file_hash;

// Checksum `path` with algo (hex into h->hex, size into h->size, h->name = its base
// name) and fsync it: what a writer does once its file is complete. Returns 0, or 2
// after printing.
int ckpt_hash_file(const char *path, ckpt_checksum algo, ckpt_file_hash *h);

// Write dir/MANIFEST with checksums of kind algo (CRC-32C: "HEX  SIZE  NAME" lines and
// the trailer "# anvil-manifest 2 crc32c files N bytes B"), taking those of the files
// listed in `known` (n of them) as given (their size is checked) and computing the
// others. Returns 0, or 2 after printing.
int ckpt_manifest_write_known(const char *dir, ckpt_checksum algo, const ckpt_file_hash *known,
                              int n);

// Check dir against its MANIFEST: present and well formed, every listed file present
// with its size and checksum, no file missing from the list. Returns 0, or 2 with `why`
// (n bytes) set to one line naming the file and what is wrong (nothing printed).
int ckpt_verify(const char *dir, char *why, size_t n);
// The same, except that only model.h5 is checksummed: what a resume checks before
// ckpt_load_rects reads the tensors, checking each piece's own CRC-32C as it goes.
int ckpt_verify_quick(const char *dir, char *why, size_t n);

// Commit: fsync tmp, rename it to root/step_NNNNNNNN (replacing nothing: a committed
// step is never overwritten, the caller must not save a step twice), fsync root,
// write root/latest.tmp with the directory name, fsync, rename over root/latest, fsync
// root. Then delete committed checkpoints beyond the newest `keep`, except steps that
// are multiples of keep_every (> 0). Returns 0, or 2 after printing.
int ckpt_commit(const char *root, const char *tmp, long step, int keep, long keep_every);

// The newest checkpoint under root that verifies: the one `latest` names if it does,
// else the highest-numbered step_NNNNNNNN that does. Each candidate that fails is
// reported on stderr once ("anvil: checkpoint DIR: FILE: what is wrong; skipped").
// Returns 0 with path (n bytes) and *step set; 1 when root holds no valid checkpoint
// (or does not exist); 2 on an error reading root.
int ckpt_find_latest(const char *root, char *path, size_t n, long *step);
// ckpt_find_latest among the steps below `below` only, verifying with
// ckpt_verify_quick when quick (a resume, which falls back to the next one down when
// the load finds a bad file).
int ckpt_find_latest_below(const char *root, long below, int quick, char *path, size_t n,
                           long *step);

// ---- tensors and state in HDF5 (h5.c) ----------------------------------------------
//
// Each writing rank stores rectangles ("pieces") of global tensors in its own file;
// model.h5 holds, for every tensor, one virtual dataset /KIND/NAME of the global shape
// that maps all of its pieces (HDF5 virtual datasets, relative file names), so any
// reader (h5py, h5dump, the loader under any layout) sees whole tensors.

#define CKPT_NAME_MAX 64

// A rectangle of a global tensor. 1-D tensors use index 0 only (off[1] = 0, len[1] =
// 1, gshape[1] = 0).
typedef struct ckpt_piece {
    char kind[8];                // "param", "adam_m", "adam_v"
    char name[CKPT_NAME_MAX];    // global tensor name
    int ndim;                    // 1 or 2
    int64_t gshape[2];           // global shape
    int64_t off[2], len[2];      // the rectangle
    char file[32];               // the file holding it, relative to the checkpoint dir
    int64_t addr;                // byte offset of its data (row-major float32) in file
    uint32_t crc;                // CRC-32C of its data (the loader checks it)
    uint32_t pad_;               // keeps the size a multiple of 8 (sent as int32 words)
} ckpt_piece;

// The run's state, stored as attributes of model.h5.
typedef struct ckpt_state {
    long step;                   // optimizer steps done
    long long tokens;            // tokens trained
    long long samples;           // data position: windows consumed over all ranks
    long opt_t;                  // AdamW's step count (bias correction)
    uint64_t sample_rng;         // the sampler's RNG state
    long skipped;                // updates skipped (non-finite)
    int dp, tp, pp, zero;        // the layout that wrote it
    int format;                  // CKPT_FORMAT
    char anvil_version[32];
} ckpt_state;

#define CKPT_FORMAT 2

// Write the pieces (data[i]: (len[0], len[1]) row-major float32) into a new file
// `path` as contiguous datasets /KIND/NAME/OFF0_OFF1, setting each p[i].addr and
// p[i].crc, and fsync it. *file_crc and *file_size get the whole file's CRC-32C and
// size, put together without reading the tensors back. Returns 0, or 2 after printing.
int ckpt_h5_write_pieces(const char *path, ckpt_piece *p, const float *const *data, int n,
                         uint32_t *file_crc, uint64_t *file_size);

// Write `path` (model.h5): per tensor a virtual dataset /KIND/NAME over all its pieces
// (from every rank), the piece table /pieces (kind, name, file, offsets, lengths, byte
// address: what the loader reads), the state as root attributes, the effective config
// as the string dataset /config. Returns 0, or 2 after printing.
int ckpt_h5_write_index(const char *path, const ckpt_piece *p, int n, const ckpt_state *st,
                        const char *config_yaml);

typedef struct ckpt_reader ckpt_reader;   // an open checkpoint (its model.h5)

// Open dir/model.h5 and read the state. Returns 0, or 2 after printing (file and what
// is wrong).
int ckpt_h5_open(ckpt_reader **r, const char *dir, ckpt_state *st);
// The global shape of /KIND/NAME: 0, or 2 (absent: *ndim = 0; nothing printed).
int ckpt_h5_shape(ckpt_reader *r, const char *kind, const char *name, int *ndim,
                  int64_t gshape[2]);
// The piece table /pieces into *p (malloc'ed, *n of them; the caller frees). Returns
// 0, or 2 after printing (absent or malformed).
int ckpt_h5_pieces(ckpt_reader *r, ckpt_piece **p, int *n);
// The stored config (malloc'ed NUL-terminated text; the caller frees), or NULL.
char *ckpt_h5_config(ckpt_reader *r);
void ckpt_h5_close(ckpt_reader *r);

// ---- loading in one pass (load.c) ----------------------------------------------------

// A rectangle of global tensor KIND/NAME that a rank wants, and where it goes:
// dst (len[0], len[1]) row-major float32.
typedef struct ckpt_rect {
    const char *kind, *name;
    int64_t off[2], len[2];
    float *dst;
} ckpt_rect;

// Fill every rectangle of `want` from the checkpoint in dir, whose pieces (from
// ckpt_h5_pieces) are p[0..n_p), verifying what it reads in the same pass: a file the
// rank needs most of is read whole, front to back, and checked against its MANIFEST
// checksum; from a file it needs little of, each piece it needs is read whole and
// checked against the piece's CRC-32C. The files are read in parallel. A checkpoint is
// so read once instead of twice (verify, then load). The destinations are written
// before the checksums are known: on failure their contents are undefined. Returns 0;
// 2 with why (n bytes) naming the file and what is wrong (nothing printed); 1 out of
// memory.
int ckpt_load_rects(const char *dir, const ckpt_piece *p, int n_p, const ckpt_rect *want,
                    int n_want, char *why, size_t n);

#ifdef __cplusplus
}
#endif
#endif
