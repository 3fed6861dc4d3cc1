// checkpoint/write.c: writing the tensors of a piece file, bypassing the page cache.
//
// Why: a save writes gigabytes once and never reads them back, so the page cache only
// costs: every byte is copied into it, and the pages it needs must first be found. On
// a virtual machine whose host backs guest memory lazily, a process that holds
// gigabytes of model state gets fresh page-cache pages slowly (measured here: buffered
// writes of 1.5 GB at ~350 MB/s from a process holding 4 GB, O_DIRECT at ~1.9 GB/s).
// So HDF5 writes only the metadata (h5.c allocates each dataset's space, 4 KiB
// aligned when it is large), and this file writes the data with O_DIRECT: the body of
// each piece in 4 KiB blocks through an aligned 2 MiB buffer, its unaligned head and
// tail (which share a block with other objects) with ordinary writes. Where the
// filesystem has no O_DIRECT (tmpfs before Linux 6.6, some FUSE) everything goes
// through ordinary writes.
//
// The file's CRC-32C for the MANIFEST is put together from each piece's CRC (computed
// as the piece is copied into the aligned buffer, while it is in cache) and the bytes between pieces (HDF5's
// metadata, read back from the page cache: kilobytes), with crc32c_combine, so nothing
// written is read back.
#include "checkpoint/checkpoint.h"
#include "checkpoint/ckpt_internal.h"
#include "checkpoint/crc32c.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WRITE_CHUNK ((size_t)2 << 20)   // bytes per O_DIRECT write (a multiple of 4 KiB)

// Write all of [buf, buf + n) at off. Returns 0, or -1 with errno set.
static int write_full(int fd, const char *buf, size_t n, int64_t off) {
    while (n > 0) {
        ssize_t w = pwrite(fd, buf, n, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        buf += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

// Read all of [off, off + n) into buf. Returns 0, or -1 with errno set.
static int read_full(int fd, char *buf, size_t n, int64_t off) {
    while (n > 0) {
        ssize_t r = pread(fd, buf, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO;
            return -1;
        }
        buf += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

int ckpt_open_direct(const char *path, int flags) {
    const char *hook = getenv("ANVIL_TEST_NO_ODIRECT");
    if (hook && hook[0] == '1') return errno = EINVAL, -1;
    return open(path, flags | O_DIRECT);
}

static int cmp_addr(const void *a, const void *b, void *ctx) {
    const ckpt_piece *p = ctx;
    int64_t x = p[*(const int *)a].addr, y = p[*(const int *)b].addr;
    return (x > y) - (x < y);
}

int ckpt_write_data(const char *path, ckpt_piece *p, const float *const *data, int n,
                    uint32_t *file_crc, uint64_t *file_size) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return ckpt_fail("open", path);
    int fd_direct = ckpt_open_direct(path, O_WRONLY | O_CLOEXEC);   // -1: none here
    char *buf = aligned_alloc(CKPT_IO_ALIGN, WRITE_CHUNK);
    int *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    const char *what = NULL;
    if (!buf || !order) {
        errno = ENOMEM;
        what = "write";
        goto done;
    }
    for (int i = 0; i < n; i++) order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, cmp_addr, p);
    for (int k = 0; k < n && !what; k++) {
        ckpt_piece *q = &p[order[k]];
        const char *src = (const char *)data[order[k]];
        const int64_t bytes = q->len[0] * q->len[1] * (int64_t)sizeof(float);
        const int64_t a = q->addr, e = a + bytes;
        // [a, h): up to the first block boundary; [h, t): whole blocks; [t, e): the rest.
        // The CRC goes over the bytes in that order, the body's from the aligned buffer
        // while it is in cache (one pass over the source, not two).
        int64_t h = (a + CKPT_IO_ALIGN - 1) / CKPT_IO_ALIGN * CKPT_IO_ALIGN;
        int64_t t = e / CKPT_IO_ALIGN * CKPT_IO_ALIGN;
        if (fd_direct < 0 || h >= t) h = t = e;
        uint32_t crc = crc32c_update(0, src, (size_t)(h - a));
        if (write_full(fd, src, (size_t)(h - a), a) != 0) what = "write";
        for (int64_t off = h; off < t && !what; off += (int64_t)WRITE_CHUNK) {
            const size_t len = (size_t)(t - off) < WRITE_CHUNK ? (size_t)(t - off) : WRITE_CHUNK;
            memcpy(buf, src + (off - a), len);   // O_DIRECT wants an aligned source
            crc = crc32c_update(crc, buf, len);
            if (write_full(fd_direct, buf, len, off) != 0) what = "write (O_DIRECT)";
        }
        q->crc = crc32c_update(crc, src + (t - a), (size_t)(e - t));
        if (!what && write_full(fd, src + (t - a), (size_t)(e - t), t) != 0) what = "write";
    }
    if (!what && fsync(fd) != 0) what = "fsync";
    // the file's CRC: the bytes between pieces read back, the pieces' CRCs combined in
    struct stat st;
    if (!what && fstat(fd, &st) != 0) what = "stat";
    uint32_t crc = 0;
    int64_t at = 0;
    for (int k = 0; k <= n && !what; k++) {
        const int64_t next = k < n ? p[order[k]].addr : (int64_t)st.st_size;
        while (at < next && !what) {
            const size_t len = (size_t)(next - at) < WRITE_CHUNK ? (size_t)(next - at) : WRITE_CHUNK;
            if (read_full(fd, buf, len, at) != 0) what = "read back";
            else crc = crc32c_update(crc, buf, len), at += (int64_t)len;
        }
        if (k == n || what) break;
        const int64_t bytes = p[order[k]].len[0] * p[order[k]].len[1] * (int64_t)sizeof(float);
        crc = crc32c_combine(crc, p[order[k]].crc, (uint64_t)bytes);
        at = p[order[k]].addr + bytes;
    }
    if (!what) {
        *file_crc = crc;
        *file_size = (uint64_t)st.st_size;
    }
done:;
    int rc = what ? ckpt_fail(what, path) : 0;
    free(order);
    free(buf);
    if (fd_direct >= 0) close(fd_direct);
    if (close(fd) != 0 && rc == 0) rc = ckpt_fail("close", path);
    return rc;
}
