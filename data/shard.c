// data/shard.c: token shards on disk (docs/formats.md).
//
// A shard is read by mapping the whole file read-only: the loader then reads tokens
// straight from the page cache, so a corpus far larger than memory costs nothing up
// front, and every rank of a node shares the same pages. Everything in the header is
// checked against the file size before a single token is touched, so a truncated or
// foreign file is a one-line message with exit code 2, never a crash or garbage.
//
// Two layouts are read:
//   anvil   64-byte header, magic "ATOK", uint16 or uint32 tokens (data.h);
//   llm.c   256 x int32 header, [0] magic, [1] version, [2] n_tokens: magic 20240520
//           version 1 (GPT-2, uint16 tokens), and magic 20240801 version 7 (Llama 3,
//           uint32 tokens), as llm.c's dev/data scripts write them.
// Only the anvil layout is written, always through a temporary file that is fsynced
// and renamed into place, so an interrupted `prepare` never leaves a half shard under
// the real name.
#include "data/data.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHARD_VERSION 1
#define LLMC_HEADER_BYTES 1024        // 256 x int32
#define LLMC_MAGIC_LLAMA3 20240801u   // llm.c's uint32-token variant (Llama 3 vocab)
#define LLMC_VERSION_GPT2 1
#define LLMC_VERSION_LLAMA3 7

// ---- little-endian header fields (independent of the host's byte order) ----------
static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}
static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

// ---- reading -----------------------------------------------------------------------

// Check that a payload of `payload` bytes holds exactly n tokens of token_bytes each.
// Returns 0, or 2 after printing which way the size is wrong.
static int check_size(const char *path, uint64_t n, int token_bytes, uint64_t payload) {
    uint64_t have = payload / (uint64_t)token_bytes;
    if (payload % (uint64_t)token_bytes == 0 && have == n) return 0;
    if (n > have)
        fprintf(stderr, "anvil: shard '%s': truncated: header says %llu tokens "
                "(%llu bytes) but only %llu bytes follow the header\n", path,
                (unsigned long long)n,
                (unsigned long long)(n > UINT64_MAX / (uint64_t)token_bytes
                                     ? UINT64_MAX : n * (uint64_t)token_bytes),
                (unsigned long long)payload);
    else
        fprintf(stderr, "anvil: shard '%s': %llu trailing bytes after the %llu tokens "
                "the header announces\n", path,
                (unsigned long long)(payload - n * (uint64_t)token_bytes),
                (unsigned long long)n);
    return 2;
}

// Parse the header of a mapped file of `bytes` bytes into s (token_bytes, n_tokens,
// tokens). Returns 0, or 2 after printing what is wrong.
static int parse_header(shard *s, const uint8_t *m, size_t bytes) {
    uint32_t magic = get_u32(m);
    if (magic == SHARD_MAGIC) {
        uint32_t version = get_u32(m + 4), tb = get_u32(m + 8);
        if (version != SHARD_VERSION) {
            fprintf(stderr, "anvil: shard '%s': unsupported version %u (this build "
                    "reads version %d)\n", s->path, version, SHARD_VERSION);
            return 2;
        }
        if (tb != 2 && tb != 4) {
            fprintf(stderr, "anvil: shard '%s': unsupported token_bytes %u (2 or 4)\n",
                    s->path, tb);
            return 2;
        }
        s->token_bytes = (int)tb;
        s->n_tokens = get_u64(m + 16);
        s->tokens = m + SHARD_HEADER_BYTES;
        return check_size(s->path, s->n_tokens, s->token_bytes,
                          (uint64_t)bytes - SHARD_HEADER_BYTES);
    }
    if (magic == SHARD_MAGIC_LLMC || magic == LLMC_MAGIC_LLAMA3) {
        int llama3 = magic == LLMC_MAGIC_LLAMA3;
        uint32_t want = llama3 ? LLMC_VERSION_LLAMA3 : LLMC_VERSION_GPT2;
        if (bytes < LLMC_HEADER_BYTES) {
            fprintf(stderr, "anvil: shard '%s': llm.c shard of %zu bytes is shorter "
                    "than its %d-byte header\n", s->path, bytes, LLMC_HEADER_BYTES);
            return 2;
        }
        uint32_t version = get_u32(m + 4);
        int32_t n = (int32_t)get_u32(m + 8);
        if (version != want) {
            fprintf(stderr, "anvil: shard '%s': llm.c shard (magic %u) with unsupported "
                    "version %u (expected %u)\n", s->path, magic, version, want);
            return 2;
        }
        if (n < 0) {
            fprintf(stderr, "anvil: shard '%s': llm.c header has a negative token count "
                    "%d\n", s->path, n);
            return 2;
        }
        s->token_bytes = llama3 ? 4 : 2;
        s->n_tokens = (uint64_t)n;
        s->tokens = m + LLMC_HEADER_BYTES;
        return check_size(s->path, s->n_tokens, s->token_bytes,
                          (uint64_t)bytes - LLMC_HEADER_BYTES);
    }
    fprintf(stderr, "anvil: shard '%s': wrong magic 0x%08X (expected 0x%08X \"ATOK\", "
            "or llm.c's %u)\n", s->path, magic, SHARD_MAGIC, SHARD_MAGIC_LLMC);
    return 2;
}

// Map and validate. Returns 0, or 2 after printing one line; on failure s is left
// zeroed, so shard_close on it is harmless.
int shard_open(shard *s, const char *path) {
    int rc = 2, fd = -1;
    void *map = MAP_FAILED;
    struct stat st;
    const char *failed = NULL;   // the system call that failed, for the message
    memset(s, 0, sizeof *s);
    s->path = strdup(path);
    if (!s->path) { failed = "strdup"; goto fail; }

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { failed = "open"; goto fail; }
    if (fstat(fd, &st) != 0) { failed = "fstat"; goto fail; }
    if (!S_ISREG(st.st_mode)) {
        fprintf(stderr, "anvil: shard '%s': not a regular file\n", path);
        goto out;
    }
    if ((uint64_t)st.st_size < SHARD_HEADER_BYTES) {
        fprintf(stderr, "anvil: shard '%s': file of %lld bytes is shorter than a "
                "%d-byte header\n", path, (long long)st.st_size, SHARD_HEADER_BYTES);
        goto out;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        fprintf(stderr, "anvil: shard '%s': too large to map on this system\n", path);
        goto out;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) { failed = "mmap"; goto fail; }
    close(fd);
    fd = -1;
    s->map = map;
    s->map_bytes = (size_t)st.st_size;
    if (parse_header(s, map, s->map_bytes) != 0) goto out;
    return 0;

fail:
    fprintf(stderr, "anvil: shard '%s': cannot read (%s): %s\n", path, failed,
            strerror(errno));
out:
    if (fd >= 0) close(fd);
    if (map != MAP_FAILED) munmap(map, (size_t)st.st_size);
    free(s->path);
    memset(s, 0, sizeof *s);
    return rc;
}

void shard_close(shard *s) {
    if (!s) return;
    if (s->map) munmap((void *)s->map, s->map_bytes);
    free(s->path);
    memset(s, 0, sizeof *s);
}

// ---- writing -----------------------------------------------------------------------

// Make a rename in `path`'s directory durable. Best effort: some file systems refuse
// fsync on a directory, and the data itself is already on disk.
static void fsync_parent_dir(const char *path) {
    char *copy = strdup(path);
    if (!copy) return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

// Write the header and tokens to path.tmp, fsync, rename to path. Returns 0, or 2
// after printing the path and the system's reason; the tmp file is removed then.
int shard_write(const char *path, const uint32_t *tokens, uint64_t n, int token_bytes) {
    enum { CHUNK = 1 << 16 };   // tokens converted per fwrite
    int rc = 2;
    FILE *f = NULL;
    const char *failed = NULL;
    size_t len = strlen(path);
    char *tmp = malloc(len + 5);
    if (!tmp) {
        fprintf(stderr, "anvil: shard '%s': cannot write: out of memory\n", path);
        return 2;
    }
    memcpy(tmp, path, len);
    memcpy(tmp + len, ".tmp", 5);
    if (token_bytes != 2 && token_bytes != 4) {
        fprintf(stderr, "anvil: shard '%s': cannot write token_bytes %d (2 or 4)\n",
                path, token_bytes);
        free(tmp);
        return 2;
    }
    if (token_bytes == 2) {
        for (uint64_t i = 0; i < n; i++)
            if (tokens[i] > UINT16_MAX) {
                fprintf(stderr, "anvil: shard '%s': token %u at offset %llu does not "
                        "fit in uint16 tokens\n", path, tokens[i], (unsigned long long)i);
                free(tmp);
                return 2;
            }
    }

    uint8_t header[SHARD_HEADER_BYTES] = {0};
    put_u32(header, SHARD_MAGIC);
    put_u32(header + 4, SHARD_VERSION);
    put_u32(header + 8, (uint32_t)token_bytes);
    put_u64(header + 16, n);

    f = fopen(tmp, "wb");
    if (!f) { failed = "open"; goto fail; }
    if (fwrite(header, 1, sizeof header, f) != sizeof header) { failed = "write"; goto fail; }
    if (token_bytes == 4) {
        // The in-memory layout is the file layout on a little-endian host.
        if (n && fwrite(tokens, 4, (size_t)n, f) != (size_t)n) { failed = "write"; goto fail; }
    } else {
        uint16_t buf[CHUNK];
        for (uint64_t i = 0; i < n; i += CHUNK) {
            size_t k = n - i < CHUNK ? (size_t)(n - i) : CHUNK;
            for (size_t j = 0; j < k; j++) buf[j] = (uint16_t)tokens[i + j];
            if (fwrite(buf, 2, k, f) != k) { failed = "write"; goto fail; }
        }
    }
    if (fflush(f) != 0) { failed = "write"; goto fail; }
    if (fsync(fileno(f)) != 0) { failed = "fsync"; goto fail; }
    int close_rc = fclose(f);
    f = NULL;
    if (close_rc != 0) { failed = "close"; goto fail; }
    if (rename(tmp, path) != 0) { failed = "rename"; goto fail; }
    fsync_parent_dir(path);
    rc = 0;
    free(tmp);
    return rc;

fail:
    fprintf(stderr, "anvil: shard '%s': cannot write (%s '%s'): %s\n", path, failed,
            tmp, strerror(errno));
    if (f) fclose(f);
    unlink(tmp);
    free(tmp);
    return rc;
}

int data_mkdirs(const char *path, char *failed, size_t n) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        snprintf(failed, n, "%s", path);
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            snprintf(failed, n, "%s", buf);
            return -1;
        }
        *p = c;
        if (c == '\0') return 0;
    }
}
