// checkpoint/manifest.c: a checkpoint's MANIFEST: writing it, reading it, verifying a
// directory against it.
//
// Two formats, chosen by checkpoint.checksum when the checkpoint is written:
// - crc32c (the default), format 2: one line "HEX  SIZE  NAME" per regular file
//   (8 lower-case hex digits of the file's CRC-32C, its size in bytes, two spaces
//   between fields), then the trailer "# anvil-manifest 2 crc32c files N bytes B".
//   CRC-32C runs in hardware at many GB/s, so checksumming costs far less than the
//   disk; it detects every burst error up to 32 bits and all but 2^-32 of the others,
//   which is what a checksum against torn writes, truncation and bit rot needs (it is
//   not a defence against someone forging a file).
// - sha256, format 1: the input format of `sha256sum -c`: one line "HEX  NAME" (64
//   hex digits) per file, then "# anvil-manifest 1 files N bytes B". GNU sha256sum
//   skips lines that start with '#' (coreutils 9.1 exits 0 even with --strict --warn,
//   tested in tests/unit/test_ckpt_commit.c). For sites that want a cryptographic
//   digest and standard tools; about as fast as a disk on one core with SHA-NI.
// In both, the files are sorted by name in byte order and the trailer is the last line
// written, which makes a MANIFEST cut short detectable. File names that sha256sum
// would have to escape (space, control characters, backslash) are refused; anvil
// never writes such names.
//
// Verification comes in two strengths. ckpt_verify reads every file (anvil ckpt
// verify, anvil sample). ckpt_verify_quick checks the MANIFEST, that every file is
// present with its recorded size, and the checksum of model.h5 (small; every rank
// parses it): what a resume checks before it loads, because the loader (load.c)
// checksums every other file in the same pass that reads its tensors, so a resume
// reads the checkpoint once instead of twice.
#include "checkpoint/checkpoint.h"
#include "checkpoint/ckpt_internal.h"
#include "checkpoint/crc32c.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_MANIFEST_MAX (64u << 20)      // ~700k lines: far above a few files per rank
#define CKPT_TRAILER_1 "# anvil-manifest 1 files "
#define CKPT_TRAILER_2 "# anvil-manifest 2 crc32c files "
#define CKPT_READ_BLOCK ((size_t)1 << 20)  // 1 MiB reads: stays in L2, few syscalls

// ---- streaming checksum --------------------------------------------------------------

const char *ckpt_checksum_label(ckpt_checksum algo) {
    return algo == CKPT_CHECKSUM_SHA256 ? "SHA-256" : "CRC-32C";
}

void ckpt_sum_init(ckpt_sum *s, ckpt_checksum algo) {
    s->algo = algo;
    s->crc = 0;
    if (algo == CKPT_CHECKSUM_SHA256) sha256_init(&s->sha);
}

void ckpt_sum_update(ckpt_sum *s, const void *data, size_t n) {
    if (s->algo == CKPT_CHECKSUM_SHA256) sha256_update(&s->sha, data, n);
    else s->crc = crc32c_update(s->crc, data, n);
}

void ckpt_sum_hex(ckpt_sum *s, char hex[CKPT_SUM_HEX]) {
    if (s->algo == CKPT_CHECKSUM_SHA256) {
        uint8_t digest[SHA256_DIGEST_BYTES];
        sha256_final(&s->sha, digest);
        sha256_hex(digest, hex);
    } else {
        crc32c_hex(s->crc, hex);
    }
}

// Checksum everything from fd's offset to its end; *size gets the byte count. Returns
// 0, or -1 with errno set.
static int sum_fd(int fd, ckpt_checksum algo, char hex[CKPT_SUM_HEX], uint64_t *size) {
    uint8_t *buf = malloc(CKPT_READ_BLOCK);
    if (!buf) return errno = ENOMEM, -1;
    ckpt_sum s;
    ckpt_sum_init(&s, algo);
    uint64_t total = 0;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);   // advice only: failure is harmless
    for (;;) {
        ssize_t got = read(fd, buf, CKPT_READ_BLOCK);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            int saved = errno;
            free(buf);
            return errno = saved, -1;
        }
        if (got == 0) break;
        ckpt_sum_update(&s, buf, (size_t)got);
        total += (uint64_t)got;
    }
    free(buf);
    ckpt_sum_hex(&s, hex);
    *size = total;
    return 0;
}

// ---- writing -------------------------------------------------------------------------

int ckpt_hash_file(const char *path, ckpt_checksum algo, ckpt_file_hash *h) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strlen(base) >= sizeof h->name) {
        fprintf(stderr, "anvil: checkpoint: '%s': file name too long\n", path);
        return 2;
    }
    snprintf(h->name, sizeof h->name, "%s", base);
    h->algo = algo;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ckpt_fail("open", path);
    const char *what = NULL;
    if (sum_fd(fd, algo, h->hex, &h->size) != 0) what = "read";
    else if (fsync(fd) != 0) what = "fsync";
    if (what) {
        int rc = ckpt_fail(what, path);
        close(fd);
        return rc;
    }
    if (close(fd) != 0) return ckpt_fail("close", path);
    return 0;
}

int ckpt_manifest_write(const char *dir) {
    return ckpt_manifest_write_known(dir, CKPT_CHECKSUM_SHA256, NULL, 0);
}

int ckpt_manifest_write_known(const char *dir, ckpt_checksum algo, const ckpt_file_hash *known,
                              int n_known) {
    name_list names = {0};
    if (name_list_read_dir(&names, dir) != 0) return ckpt_fail("read directory", dir);
    char *text = NULL;
    int rc = 0;
    // A line is at most 64 hex + 2 spaces + 20 digits + 2 spaces + name + newline; the
    // trailer fits in 100 bytes.
    size_t cap = 100, len = 0;
    for (size_t i = 0; i < names.n; i++) cap += strlen(names.v[i]) + 64 + 25;
    if (!(text = malloc(cap))) {
        errno = ENOMEM;
        rc = ckpt_fail("list the files of", dir);
        goto done;
    }
    size_t n_files = 0;
    uint64_t n_bytes = 0;
    for (size_t i = 0; i < names.n; i++) {
        const char *name = names.v[i];
        if (strcmp(name, CKPT_MANIFEST) == 0 || strcmp(name, CKPT_MANIFEST_TMP) == 0) continue;
        char path[CKPT_PATH_MAX];
        if ((rc = ckpt_join_or_fail(path, sizeof path, dir, name)) != 0) goto done;
        if (!ckpt_name_ok(name)) {
            fprintf(stderr, "anvil: checkpoint: '%s': the name has a space, a control character or "
                    "a backslash; refusing to list it in MANIFEST\n", path);
            rc = 2;
            goto done;
        }
        struct stat st;
        if (lstat(path, &st) != 0) {
            rc = ckpt_fail("stat", path);
            goto done;
        }
        if (!S_ISREG(st.st_mode)) {
            fprintf(stderr, "anvil: checkpoint: '%s' is not a regular file; a checkpoint holds "
                    "only regular files\n", path);
            rc = 2;
            goto done;
        }
        const ckpt_file_hash *k = NULL;
        for (int j = 0; j < n_known && !k; j++)
            if (strcmp(known[j].name, name) == 0 && known[j].algo == (int32_t)algo) k = &known[j];
        ckpt_file_hash h;
        if (k) {   // checksummed (and fsynced) by the rank that wrote it
            if ((uint64_t)st.st_size != k->size) {
                fprintf(stderr, "anvil: checkpoint: '%s' is %lld bytes, its writer checksummed "
                        "%llu\n", path, (long long)st.st_size, (unsigned long long)k->size);
                rc = 2;
                goto done;
            }
            h = *k;
        } else if ((rc = ckpt_hash_file(path, algo, &h)) != 0) {
            goto done;
        }
        if (algo == CKPT_CHECKSUM_SHA256)
            len += (size_t)snprintf(text + len, cap - len, "%s  %s\n", h.hex, name);
        else
            len += (size_t)snprintf(text + len, cap - len, "%s  %" PRIu64 "  %s\n", h.hex,
                                    h.size, name);
        n_files++;
        n_bytes += h.size;
    }
    len += (size_t)snprintf(text + len, cap - len, "%s%zu bytes %" PRIu64 "\n",
                            algo == CKPT_CHECKSUM_SHA256 ? CKPT_TRAILER_1 : CKPT_TRAILER_2,
                            n_files, n_bytes);
    char tmp_path[CKPT_PATH_MAX], path[CKPT_PATH_MAX];
    if ((rc = ckpt_join_or_fail(tmp_path, sizeof tmp_path, dir, CKPT_MANIFEST_TMP)) != 0) goto done;
    if ((rc = ckpt_join_or_fail(path, sizeof path, dir, CKPT_MANIFEST)) != 0) goto done;
    if ((rc = ckpt_write_durable(tmp_path, text, len)) != 0) goto done;
    if (rename(tmp_path, path) != 0) {
        rc = ckpt_fail("rename to MANIFEST", tmp_path);
        goto done;
    }
    rc = ckpt_fsync_path(dir, 1);
done:
    free(text);
    name_list_free(&names);
    return rc;
}

// ---- reading -------------------------------------------------------------------------

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const ckpt_manifest_entry *)a)->name, ((const ckpt_manifest_entry *)b)->name);
}

// Parse a decimal uint64 at *p (at least one digit, no sign), advancing *p. Returns 0 or -1.
static int parse_u64(const char **p, uint64_t *out) {
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9') return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - 9) / 10) return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *p = s;
    *out = v;
    return 0;
}

static int is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int ckpt_manifest_matches(const ckpt_manifest *m, const ckpt_manifest_entry *e,
                          const char *hex) {
    for (int i = 0; i < m->hex_len; i++) {
        char x = e->hex[i], y = hex[i];
        if (x >= 'A' && x <= 'F') x = (char)(x - 'A' + 'a');
        if (x != y) return 0;
    }
    return hex[m->hex_len] == '\0';
}

// Read all of fd (a regular file of at most CKPT_MANIFEST_MAX bytes) into a malloc'd,
// NUL-terminated buffer. Returns it, or NULL with why set.
static char *manifest_read(int fd, size_t *len, char *why, size_t n) {
    struct stat st;
    if (fstat(fd, &st) != 0) return ckpt_why(why, n, "MANIFEST: %s", strerror(errno)), NULL;
    if (!S_ISREG(st.st_mode)) return ckpt_why(why, n, "MANIFEST: not a regular file"), NULL;
    if ((uint64_t)st.st_size > CKPT_MANIFEST_MAX) {
        ckpt_why(why, n, "MANIFEST: %lld bytes, more than the %u allowed", (long long)st.st_size,
                 CKPT_MANIFEST_MAX);
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, got = 0;
    char *text = malloc(cap);
    if (!text) return ckpt_why(why, n, "MANIFEST: out of memory"), NULL;
    while (got < cap - 1) {
        ssize_t r = read(fd, text + got, cap - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            ckpt_why(why, n, "MANIFEST: %s", strerror(errno));
            free(text);
            return NULL;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    text[got] = '\0';
    *len = got;
    return text;
}

// Which format the trailer (the last line) announces: sets m->algo and m->hex_len.
// Returns 0, or 2 with why set.
static int manifest_format(const char *text, size_t len, ckpt_manifest *m, char *why, size_t n) {
    if (len == 0 || text[len - 1] != '\n')
        return ckpt_why(why, n, "MANIFEST: %s", len ? "no final newline (cut short?)" : "empty");
    size_t start = len - 1;
    while (start > 0 && text[start - 1] != '\n') start--;
    const char *last = text + start;
    if (strncmp(last, CKPT_TRAILER_2, strlen(CKPT_TRAILER_2)) == 0) {
        m->algo = CKPT_CHECKSUM_CRC32C;
        m->hex_len = 8;
    } else if (strncmp(last, CKPT_TRAILER_1, strlen(CKPT_TRAILER_1)) == 0) {
        m->algo = CKPT_CHECKSUM_SHA256;
        m->hex_len = 64;
    } else {
        return ckpt_why(why, n, "MANIFEST: no trailer line (cut short?)");
    }
    return 0;
}

// Parse m->text (len bytes) in place (newlines become NULs) into m->e, sorted by name.
// Returns 0, or 2 with why set.
static int manifest_parse(ckpt_manifest *m, size_t len, char *why, size_t n) {
    char *text = m->text;
    if (memchr(text, '\0', len)) return ckpt_why(why, n, "MANIFEST: holds a NUL byte");
    if (manifest_format(text, len, m, why, n)) return 2;
    const char *trailer = m->algo == CKPT_CHECKSUM_SHA256 ? CKPT_TRAILER_1 : CKPT_TRAILER_2;
    size_t n_lines = 0;
    for (size_t i = 0; i < len; i++) n_lines += text[i] == '\n';
    ckpt_manifest_entry *e = m->e = malloc((n_lines + 1) * sizeof *e);
    if (!e) return ckpt_why(why, n, "MANIFEST: out of memory");
    size_t n_e = 0, line_no = 0;
    uint64_t trailer_files = 0;
    char *p = text, *end = text + len;
    const int hl = m->hex_len;
    while (p < end) {
        line_no++;
        char *nl = memchr(p, '\n', (size_t)(end - p));   // found: the text ends in '\n'
        *nl = '\0';
        if (nl + 1 == end) {   // the trailer (manifest_format checked its start)
            const char *q = p + strlen(trailer);
            if (parse_u64(&q, &trailer_files) != 0 || strncmp(q, " bytes ", 7) != 0 ||
                (q += 7, parse_u64(&q, &m->bytes) != 0) || *q != '\0')
                return ckpt_why(why, n, "MANIFEST: line %zu malformed", line_no);
            break;
        }
        int ok = (size_t)(nl - p) > (size_t)hl + 2 && p[hl] == ' ' && p[hl + 1] == ' ';
        for (int i = 0; ok && i < hl; i++) ok = is_hex(p[i]);
        const char *q = p + hl + 2;
        uint64_t size = UINT64_MAX;
        if (ok && m->algo == CKPT_CHECKSUM_CRC32C)
            ok = parse_u64(&q, &size) == 0 && q[0] == ' ' && q[1] == ' ' && (q += 2, 1);
        if (!ok || !ckpt_name_ok(q) || strcmp(q, CKPT_MANIFEST) == 0)
            return ckpt_why(why, n, "MANIFEST: line %zu malformed", line_no);
        e[n_e].hex = p;
        e[n_e].name = q;
        e[n_e].size = size;
        n_e++;
        p = nl + 1;
    }
    if (trailer_files != n_e)
        return ckpt_why(why, n, "MANIFEST: the trailer says %" PRIu64 " files, %zu are listed",
                        trailer_files, n_e);
    if (n_e > 1) qsort(e, n_e, sizeof *e, cmp_entry);
    for (size_t i = 1; i < n_e; i++)
        if (strcmp(e[i - 1].name, e[i].name) == 0)
            return ckpt_why(why, n, "MANIFEST: %s listed twice", e[i].name);
    m->n = n_e;
    return 0;
}

void ckpt_manifest_free(ckpt_manifest *m) {
    free(m->text);
    free(m->e);
    memset(m, 0, sizeof *m);
}

int ckpt_manifest_load(const char *dir, ckpt_manifest *m, char *why, size_t n) {
    memset(m, 0, sizeof *m);
    char path[CKPT_PATH_MAX];
    if (ckpt_join(path, sizeof path, dir, CKPT_MANIFEST) != 0) return ckpt_why(why, n, "path too long");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return ckpt_why(why, n, "MANIFEST: missing");
        return ckpt_why(why, n, "MANIFEST: %s", strerror(errno));
    }
    size_t len = 0;
    m->text = manifest_read(fd, &len, why, n);
    close(fd);   // read-only: nothing a failed close could lose
    if (!m->text) return 2;
    if (manifest_parse(m, len, why, n) != 0) {
        ckpt_manifest_free(m);
        return 2;
    }
    return 0;
}

const ckpt_manifest_entry *ckpt_manifest_find(const ckpt_manifest *m, const char *name) {
    ckpt_manifest_entry key = {name, NULL, 0};
    return m->n > 0 ? bsearch(&key, m->e, m->n, sizeof *m->e, cmp_entry) : NULL;
}

// ---- verification --------------------------------------------------------------------

// Check dir against its MANIFEST; checksum every file (all) or only model.h5.
static int verify(const char *dir, int all, char *why, size_t n) {
    if (why && n > 0) why[0] = '\0';
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT) return ckpt_why(why, n, "directory missing");
        return ckpt_why(why, n, "directory: %s", strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) return ckpt_why(why, n, "not a directory");
    ckpt_manifest m;
    if (ckpt_manifest_load(dir, &m, why, n) != 0) return 2;
    name_list names = {0};
    char path[CKPT_PATH_MAX];
    int rc = 0;
    uint64_t bytes = 0;
    const ckpt_manifest_entry *e = m.e;
    if (name_list_read_dir(&names, dir) != 0) {
        rc = ckpt_why(why, n, "directory: %s", strerror(errno));
        goto done;
    }
    // The cheap checks first: every listed file present, regular and (format 2) of its
    // size, nothing unlisted.
    for (size_t i = 0; i < m.n; i++) {
        if (ckpt_join(path, sizeof path, dir, e[i].name) != 0) {
            rc = ckpt_why(why, n, "%s: path too long", e[i].name);
            goto done;
        }
        if (lstat(path, &st) != 0) {
            if (errno == ENOENT) rc = ckpt_why(why, n, "%s: missing", e[i].name);
            else rc = ckpt_why(why, n, "%s: %s", e[i].name, strerror(errno));
            goto done;
        }
        if (!S_ISREG(st.st_mode)) {
            rc = ckpt_why(why, n, "%s: not a regular file", e[i].name);
            goto done;
        }
        if (e[i].size != UINT64_MAX && (uint64_t)st.st_size != e[i].size) {
            rc = ckpt_why(why, n, "%s: %lld bytes, MANIFEST says %" PRIu64 " (truncated or "
                          "changed)", e[i].name, (long long)st.st_size, e[i].size);
            goto done;
        }
        bytes += (uint64_t)st.st_size;
    }
    for (size_t i = 0; i < names.n; i++) {
        if (strcmp(names.v[i], CKPT_MANIFEST) == 0 || ckpt_manifest_find(&m, names.v[i])) continue;
        rc = ckpt_why(why, n, "%s: not in MANIFEST", names.v[i]);
        goto done;
    }
    if (!all && !ckpt_manifest_find(&m, CKPT_INDEX)) {
        rc = ckpt_why(why, n, "%s: missing", CKPT_INDEX);
        goto done;
    }
    // The files are checksummed in parallel (a rank writes its state as several part
    // files); the first bad one in MANIFEST order is the one reported.
    int *bad = calloc(m.n + 1, sizeof *bad);   // 0 ok, 1 unreadable, 2 mismatch
    int *err = calloc(m.n + 1, sizeof *err);
    if (!bad || !err) {
        rc = ckpt_why(why, n, "out of memory");
        free(bad), free(err);
        goto done;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < m.n; i++) {
        if (!all && strcmp(e[i].name, CKPT_INDEX) != 0) continue;
        char fpath[CKPT_PATH_MAX];
        ckpt_join(fpath, sizeof fpath, dir, e[i].name);   // fitted above
        int f = open(fpath, O_RDONLY | O_CLOEXEC);
        char hex[CKPT_SUM_HEX];
        uint64_t size;   // checked against MANIFEST by the cheap checks above
        if (f < 0 || sum_fd(f, m.algo, hex, &size) != 0) {
            bad[i] = 1;
            err[i] = errno;
        } else if (!ckpt_manifest_matches(&m, &e[i], hex)) {
            bad[i] = 2;
        }
        if (f >= 0) close(f);
    }
    for (size_t i = 0; i < m.n && rc == 0; i++) {
        if (bad[i] == 1) rc = ckpt_why(why, n, "%s: %s", e[i].name, strerror(err[i]));
        else if (bad[i] == 2)
            rc = ckpt_why(why, n, "%s: %s mismatch (file changed or truncated)", e[i].name,
                          ckpt_checksum_label(m.algo));
    }
    free(bad), free(err);
    if (rc) goto done;
    if (bytes != m.bytes)
        rc = ckpt_why(why, n, "MANIFEST: the trailer says %" PRIu64 " bytes, the files hold %" PRIu64,
                      m.bytes, bytes);
done:
    name_list_free(&names);
    ckpt_manifest_free(&m);
    return rc;
}

int ckpt_verify(const char *dir, char *why, size_t n) { return verify(dir, 1, why, n); }

int ckpt_verify_quick(const char *dir, char *why, size_t n) { return verify(dir, 0, why, n); }
