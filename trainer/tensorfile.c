// trainer/tensorfile.c: the named-tensor exchange file (format in tensorfile.h).
//
// The file is a flat sequence of self-describing records after an 8-byte magic, so a
// writer can append tensors as it produces them (no index to patch at the end) and a
// reader in any language needs only a dozen lines (tests/reference/model.py has one).
// Every header field is encoded byte by byte as little endian, and element data is
// byte-swapped on a big-endian host, so files move between machines unchanged.
// Reading scans the records for the requested name; the files are small (weights of
// test models, batches, gradients), so a scan per lookup is cheaper than an index.
#include "trainer/tensorfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define TENSORFILE_MAGIC "ANVTENS1"
#define TENSORFILE_MAGIC_LEN 8
#define TENSORFILE_MAX_NAME 4096   // longer names mean a corrupt length field
#define TENSORFILE_MAX_NDIM 8      // no tensor here has more; more means corruption
#define TENSORFILE_CHUNK 4096      // elements per swapped write/read on big-endian hosts

// ----------------------------------------------------------------------------
// byte order helpers

static int host_is_little_endian(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static void put_u32(unsigned char *p, uint32_t x) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(x >> (8 * i));
}

static void put_i64(unsigned char *p, int64_t x) {
    uint64_t u = (uint64_t)x;
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(u >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
    uint32_t x = 0;
    for (int i = 0; i < 4; i++) x |= (uint32_t)p[i] << (8 * i);
    return x;
}

static int64_t get_i64(const unsigned char *p) {
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u |= (uint64_t)p[i] << (8 * i);
    return (int64_t)u;
}

// Reverse the byte order of n 4-byte elements in place.
static void swap4(void *data, size_t n) {
    unsigned char *p = data;
    for (size_t i = 0; i < n; i++, p += 4) {
        unsigned char t0 = p[0], t1 = p[1];
        p[0] = p[3]; p[1] = p[2]; p[2] = t1; p[3] = t0;
    }
}

// ----------------------------------------------------------------------------
// writing

// Returns the FILE with the magic written, or NULL after printing why.
FILE *tensorfile_create(const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "tensorfile: cannot create %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (fwrite(TENSORFILE_MAGIC, 1, TENSORFILE_MAGIC_LEN, f) != TENSORFILE_MAGIC_LEN) {
        fprintf(stderr, "tensorfile: cannot write %s: %s\n", path, strerror(errno));
        fclose(f);
        return NULL;
    }
    return f;
}

// Write n 4-byte elements in file (little-endian) order. Returns 0 or -1.
static int write_elems(FILE *f, const void *data, size_t n) {
    if (host_is_little_endian()) return fwrite(data, 4, n, f) == n ? 0 : -1;
    unsigned char buf[TENSORFILE_CHUNK * 4];
    const unsigned char *src = data;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < TENSORFILE_CHUNK ? n - done : TENSORFILE_CHUNK;
        memcpy(buf, src + done * 4, k * 4);
        swap4(buf, k);
        if (fwrite(buf, 4, k, f) != k) return -1;
        done += k;
    }
    return 0;
}

// Returns 0, or -1 after printing which tensor could not be written and why.
int tensorfile_add(FILE *f, const char *name, int dtype, int ndim, const int64_t *dims,
                   const void *data) {
    size_t name_len = strlen(name);
    if (name_len == 0 || name_len > TENSORFILE_MAX_NAME || ndim < 0 ||
        ndim > TENSORFILE_MAX_NDIM ||
        (dtype != TENSORFILE_DTYPE_F32 && dtype != TENSORFILE_DTYPE_I32)) {
        fprintf(stderr, "tensorfile: bad tensor '%s' (dtype %d, ndim %d)\n", name, dtype,
                ndim);
        return -1;
    }
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0) {
            fprintf(stderr, "tensorfile: tensor '%s' has negative dim %lld\n", name,
                    (long long)dims[i]);
            return -1;
        }
        count *= (size_t)dims[i];
    }

    unsigned char head[4 + 4 + 4 + 8 * TENSORFILE_MAX_NDIM];
    put_u32(head, (uint32_t)name_len);
    if (fwrite(head, 1, 4, f) != 4 || fwrite(name, 1, name_len, f) != name_len) goto fail;
    put_u32(head, (uint32_t)dtype);
    put_u32(head + 4, (uint32_t)ndim);
    for (int i = 0; i < ndim; i++) put_i64(head + 8 + 8 * i, dims[i]);
    size_t head_len = 8 + 8 * (size_t)ndim;
    if (fwrite(head, 1, head_len, f) != head_len) goto fail;
    if (count > 0 && write_elems(f, data, count) != 0) goto fail;
    return 0;
fail:
    fprintf(stderr, "tensorfile: cannot write tensor '%s': %s\n", name, strerror(errno));
    return -1;
}

// ----------------------------------------------------------------------------
// reading

// Returns 0, or -1 after printing why (unreadable, corrupt, missing, size mismatch).
int tensorfile_read(const char *path, const char *name, int dtype, void *data,
                    int64_t count) {
    int rc = -1;
    char *rec_name = NULL;
    const char *what = NULL;   // which operation failed, for the one message below
    char mismatch[96];         // what, when it needs numbers
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tensorfile: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    char magic[TENSORFILE_MAGIC_LEN];
    if (fread(magic, 1, TENSORFILE_MAGIC_LEN, f) != TENSORFILE_MAGIC_LEN ||
        memcmp(magic, TENSORFILE_MAGIC, TENSORFILE_MAGIC_LEN) != 0) {
        what = "not a tensorfile (bad magic)";
        goto done;
    }
    size_t want_len = strlen(name);
    rec_name = malloc(TENSORFILE_MAX_NAME + 1);
    if (!rec_name) { what = "out of memory"; goto done; }

    for (;;) {
        unsigned char b[8];
        size_t got = fread(b, 1, 4, f);
        if (got == 0 && feof(f)) { what = "no such tensor"; goto done; }
        if (got != 4) { what = "truncated record header"; goto done; }
        uint32_t name_len = get_u32(b);
        if (name_len == 0 || name_len > TENSORFILE_MAX_NAME) {
            what = "corrupt record (name length)";
            goto done;
        }
        if (fread(rec_name, 1, name_len, f) != name_len) { what = "truncated name"; goto done; }
        rec_name[name_len] = '\0';
        if (fread(b, 1, 8, f) != 8) { what = "truncated record header"; goto done; }
        uint32_t rec_dtype = get_u32(b), ndim = get_u32(b + 4);
        if (rec_dtype > TENSORFILE_DTYPE_I32 || ndim > TENSORFILE_MAX_NDIM) {
            what = "corrupt record (dtype or ndim)";
            goto done;
        }
        int64_t n = 1;
        for (uint32_t i = 0; i < ndim; i++) {
            if (fread(b, 1, 8, f) != 8) { what = "truncated dims"; goto done; }
            int64_t d = get_i64(b);
            if (d < 0 || (d > 0 && n > INT64_MAX / 4 / d)) {
                what = "corrupt record (dims)";
                goto done;
            }
            n *= d;
        }
        int match = name_len == want_len && memcmp(rec_name, name, want_len) == 0;
        if (!match) {
            if (fseeko(f, (off_t)(n * 4), SEEK_CUR) != 0) { what = "seek failed"; goto done; }
            continue;
        }
        if ((int)rec_dtype != dtype) {
            snprintf(mismatch, sizeof mismatch, "dtype is %u, expected %d", rec_dtype, dtype);
            what = mismatch;
            goto done;
        }
        if (n != count) {
            snprintf(mismatch, sizeof mismatch, "has %lld elements, expected %lld",
                     (long long)n, (long long)count);
            what = mismatch;
            goto done;
        }
        if (n > 0 && fread(data, 4, (size_t)n, f) != (size_t)n) {
            what = "truncated data";
            goto done;
        }
        if (!host_is_little_endian()) swap4(data, (size_t)n);
        rc = 0;
        goto done;
    }
done:
    if (rc != 0) fprintf(stderr, "tensorfile: %s: reading '%s': %s\n", path, name, what);
    free(rec_name);
    fclose(f);
    return rc;
}
