// checkpoint/commit.c: checkpoint directories, their MANIFEST, the atomic commit and
// the search for the newest valid checkpoint.
//
// Durability follows the save-to-temporary, fsync, rename pattern at two levels. The
// files of step N are written into step_NNNNNNNN.tmp; ckpt_manifest_write hashes and
// fsyncs each of them, writes MANIFEST.tmp, fsyncs it, renames it to MANIFEST and fsyncs
// the directory; ckpt_commit renames the directory to step_NNNNNNNN, fsyncs the root,
// then replaces `latest` the same way (latest.tmp, fsync, rename, fsync root). A crash
// at any point leaves either the old state or the new one: a .tmp directory is never a
// candidate, and a committed directory whose MANIFEST is missing, cut short or wrong
// fails ckpt_verify and is skipped with a one-line report.
//
// MANIFEST is the input format of `sha256sum -c`: one line "HEX  NAME" (64 lower-case
// hex digits, two spaces) per regular file, sorted by name in byte order, then the
// trailer "# anvil-manifest 1 files N bytes B". GNU sha256sum skips lines that start
// with '#' (coreutils 9.1 exits 0 even with --strict --warn, tested in
// tests/unit/test_ckpt_commit.c), so the trailer costs no compatibility. The trailer is
// the last line written, which makes a MANIFEST cut short detectable, and it carries
// the only size information: sha256sum's format has no per-file size, and a file that
// was truncated simply fails its hash ("SHA-256 mismatch (file changed or truncated)").
// File names that sha256sum would have to escape (space, control characters,
// backslash) are refused; anvil never writes such names.
//
// Removal (a stale .tmp directory, pruned checkpoints) deletes regular files and then
// the directory, and refuses anything else (a subdirectory, a symlink) with an error
// rather than recursing: a checkpoint directory holds only regular files, so anything
// else means the path is not what we think it is.
#include "checkpoint/checkpoint.h"
#include "checkpoint/sha256.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CKPT_STEP_MAX 99999999L            // the largest step that fits in 8 digits
#define CKPT_MANIFEST "MANIFEST"
#define CKPT_MANIFEST_TMP "MANIFEST.tmp"
#define CKPT_MANIFEST_MAX (64u << 20)      // ~700k lines: far above a few files per rank
#define CKPT_TRAILER "# anvil-manifest 1 files "
#define CKPT_HEX 64                        // hex digits of a SHA-256
#define CKPT_LATEST_BYTES 14               // "step_NNNNNNNN\n"

// ---- small helpers -------------------------------------------------------------------

// Print "anvil: checkpoint: cannot WHAT 'PATH': strerror(errno)". Returns 2.
static int ckpt_fail(const char *what, const char *path) {
    int saved = errno;
    fprintf(stderr, "anvil: checkpoint: cannot %s '%s': %s\n", what, path, strerror(saved));
    return 2;
}

// Format the one-line reason for ckpt_verify into why (n bytes, may be 0). Returns 2.
static int ckpt_why(char *why, size_t n, const char *fmt, ...) {
    if (why && n > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
    return 2;
}

// "dir/name" into out (n bytes). Returns 0, or -1 if it does not fit.
static int ckpt_join(char *out, size_t n, const char *dir, const char *name) {
    size_t dl = strlen(dir);
    const char *sep = (dl > 0 && dir[dl - 1] == '/') ? "" : "/";
    int w = snprintf(out, n, "%s%s%s", dir, sep, name);
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

// Join, printing an error naming dir and name when the result is too long. Returns 0 or 2.
static int ckpt_join_or_fail(char *out, size_t n, const char *dir, const char *name) {
    if (ckpt_join(out, n, dir, name) == 0) return 0;
    fprintf(stderr, "anvil: checkpoint: path '%s/%s' is longer than %zu bytes\n", dir, name, n - 1);
    return 2;
}

// fsync a file or directory by path. Returns 0, or 2 after printing. A few file systems
// (some FUSE and CIFS mounts) answer EINVAL to fsync on a directory: nothing more can be
// done for the rename there, so that one case is not an error.
static int ckpt_fsync_path(const char *path, int is_dir) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | (is_dir ? O_DIRECTORY : 0));
    if (fd < 0) return ckpt_fail("open", path);
    if (fsync(fd) != 0 && !(is_dir && errno == EINVAL)) {
        int rc = ckpt_fail("fsync", path);
        close(fd);
        return rc;
    }
    if (close(fd) != 0) return ckpt_fail("close", path);
    return 0;
}

// Create path with exactly these bytes, fsync and close it. Returns 0, or 2 after printing.
static int ckpt_write_durable(const char *path, const char *data, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) return ckpt_fail("create", path);
    const char *what = NULL;
    while (len > 0 && !what) {
        ssize_t w = write(fd, data, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            what = "write";
            break;
        }
        data += w;
        len -= (size_t)w;
    }
    if (!what && fsync(fd) != 0) what = "fsync";
    if (what) {
        int rc = ckpt_fail(what, path);
        close(fd);
        return rc;
    }
    if (close(fd) != 0) return ckpt_fail("close", path);
    return 0;
}

// A name this module will list in MANIFEST: not empty, not . or .., and no byte that
// sha256sum would escape or that would split the line (space, control, DEL, backslash).
static int ckpt_name_ok(const char *name) {
    if (!name[0] || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p <= ' ' || *p == 0x7f || *p == '\\' || *p == '/') return 0;
    return 1;
}

// Parse "step_NNNNNNNN" followed by exactly `suffix`. Returns 1 and sets *step, or 0.
static int ckpt_parse_step(const char *name, const char *suffix, long *step) {
    if (strncmp(name, "step_", 5) != 0) return 0;
    long s = 0;
    for (int i = 0; i < 8; i++) {
        char c = name[5 + i];
        if (c < '0' || c > '9') return 0;
        s = s * 10 + (c - '0');
    }
    if (strcmp(name + 13, suffix) != 0) return 0;
    *step = s;
    return 1;
}

// ---- name lists ----------------------------------------------------------------------

typedef struct name_list {
    char **v;
    size_t n, cap;
} name_list;

static void name_list_free(name_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

// Append a copy of s. Returns 0, or -1 with errno = ENOMEM.
static int name_list_push(name_list *l, const char *s) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return errno = ENOMEM, -1;
        l->v = v;
        l->cap = cap;
    }
    char *copy = strdup(s);
    if (!copy) return errno = ENOMEM, -1;
    l->v[l->n++] = copy;
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// Every entry of dir except . and .., sorted in byte order. Returns 0, or -1 with errno
// set (the list is then empty).
static int name_list_read_dir(name_list *l, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno == 0) break;
            goto fail;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (name_list_push(l, e->d_name) != 0) goto fail;
    }
    if (closedir(d) != 0) {
        name_list_free(l);
        return -1;
    }
    if (l->n > 1) qsort(l->v, l->n, sizeof *l->v, cmp_name);
    return 0;
fail:;
    int saved = errno;
    closedir(d);
    name_list_free(l);
    errno = saved;
    return -1;
}

static int cmp_long_desc(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

// The steps of the entries of root named step_NNNNNNNN (no suffix) into *steps (malloc'd,
// sorted newest first); only directories (following symlinks if follow) count.
// Returns 0, or -1 with errno set.
static int ckpt_list_steps(const char *root, int follow, long **steps, size_t *n_steps) {
    *steps = NULL;
    *n_steps = 0;
    name_list names = {0};
    if (name_list_read_dir(&names, root) != 0) return -1;
    long *v = malloc((names.n ? names.n : 1) * sizeof *v);
    if (!v) {
        name_list_free(&names);
        return errno = ENOMEM, -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < names.n; i++) {
        long s;
        char path[CKPT_PATH_MAX];
        struct stat st;
        if (!ckpt_parse_step(names.v[i], "", &s)) continue;
        if (ckpt_join(path, sizeof path, root, names.v[i]) != 0) continue;
        if ((follow ? stat(path, &st) : lstat(path, &st)) != 0 || !S_ISDIR(st.st_mode)) continue;
        v[n++] = s;
    }
    name_list_free(&names);
    if (n > 1) qsort(v, n, sizeof *v, cmp_long_desc);
    *steps = v;
    *n_steps = n;
    return 0;
}

// ---- directories ---------------------------------------------------------------------

int ckpt_step_dir(const char *root, long step, char *out, size_t n) {
    if (!root[0] || step < 0 || step > CKPT_STEP_MAX) return -1;
    char name[32];
    snprintf(name, sizeof name, "step_%08ld", step);
    return ckpt_join(out, n, root, name);
}

int ckpt_tmp_dir(const char *root, long step, char *out, size_t n) {
    if (!root[0] || step < 0 || step > CKPT_STEP_MAX) return -1;
    char name[32];
    snprintf(name, sizeof name, "step_%08ld.tmp", step);
    return ckpt_join(out, n, root, name);
}

// mkdir -p. Returns 0, or 2 after printing.
static int ckpt_mkdirs(const char *path) {
    char buf[CKPT_PATH_MAX];
    size_t len = strlen(path);
    if (len >= sizeof buf) {
        fprintf(stderr, "anvil: checkpoint: path '%s' is longer than %zu bytes\n", path, sizeof buf - 1);
        return 2;
    }
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        if (buf[i - 1] == '/') continue;   // "a//b" or a trailing slash
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0) {
            // EEXIST is the usual case; EACCES or EROFS may also come from an existing
            // parent we cannot write, so the test is whether a directory is there.
            int err = errno;
            struct stat st;
            if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode)) {
                errno = (err == EEXIST) ? ENOTDIR : err;
                return ckpt_fail("create directory", buf);
            }
        }
        buf[i] = saved;
    }
    return 0;
}

// Remove dir, which must be a real directory holding only regular files. Everything is
// looked at before anything is removed, so a refused directory is left whole. Returns
// 0, or 2 after printing.
static int ckpt_remove_dir(const char *dir) {
    struct stat st;
    if (lstat(dir, &st) != 0) return ckpt_fail("stat", dir);
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "anvil: checkpoint: refusing to remove '%s': not a directory\n", dir);
        return 2;
    }
    name_list names = {0};
    if (name_list_read_dir(&names, dir) != 0) return ckpt_fail("read directory", dir);
    int rc = 0;
    char path[CKPT_PATH_MAX];
    for (size_t i = 0; i < names.n && rc == 0; i++) {
        if ((rc = ckpt_join_or_fail(path, sizeof path, dir, names.v[i])) != 0) break;
        if (lstat(path, &st) != 0) {
            rc = ckpt_fail("stat", path);
        } else if (!S_ISREG(st.st_mode)) {
            fprintf(stderr, "anvil: checkpoint: refusing to remove '%s': '%s' is not a regular file\n",
                    dir, names.v[i]);
            rc = 2;
        }
    }
    for (size_t i = 0; i < names.n && rc == 0; i++) {
        ckpt_join(path, sizeof path, dir, names.v[i]);   // fitted above
        if (unlink(path) != 0) rc = ckpt_fail("remove", path);
    }
    name_list_free(&names);
    if (rc == 0 && rmdir(dir) != 0) rc = ckpt_fail("remove directory", dir);
    return rc;
}

int ckpt_begin(const char *root, long step, char *tmp, size_t n) {
    char final[CKPT_PATH_MAX];
    if (ckpt_tmp_dir(root, step, tmp, n) != 0 || ckpt_step_dir(root, step, final, sizeof final) != 0) {
        fprintf(stderr, "anvil: checkpoint: '%s': step %ld is outside 0..%ld or the path is too long\n",
                root, step, CKPT_STEP_MAX);
        return 2;
    }
    int rc = ckpt_mkdirs(root);
    if (rc) return rc;
    // A directory for this step already exists when the run resumed from an older
    // checkpoint (the newer one failed to verify, or checkpoint.resume named an older
    // one). It is never overwritten nor deleted: it is moved aside, so nothing is lost
    // and the new save can commit.
    struct stat st;
    if (lstat(final, &st) == 0) {
        char aside[CKPT_PATH_MAX];
        int len = snprintf(aside, sizeof aside, "%s.replaced-%ld", final, (long)time(NULL));
        if (len < 0 || (size_t)len >= sizeof aside) return ckpt_fail("name", final);
        if (rename(final, aside) != 0) return ckpt_fail("move aside", final);
        fprintf(stderr, "anvil: checkpoint: '%s' existed (this run resumed from an older "
                "step); moved to '%s'\n", final, aside);
    } else if (errno != ENOENT) {
        return ckpt_fail("stat", final);
    }
    if (lstat(tmp, &st) == 0) {
        if ((rc = ckpt_remove_dir(tmp)) != 0) return rc;
    } else if (errno != ENOENT) {
        return ckpt_fail("stat", tmp);
    }
    if (mkdir(tmp, 0777) != 0) return ckpt_fail("create directory", tmp);
    return ckpt_fsync_path(root, 1);
}

// ---- MANIFEST ------------------------------------------------------------------------

int ckpt_hash_file(const char *path, ckpt_file_hash *h) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strlen(base) >= sizeof h->name) {
        fprintf(stderr, "anvil: checkpoint: '%s': file name too long\n", path);
        return 2;
    }
    snprintf(h->name, sizeof h->name, "%s", base);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ckpt_fail("open", path);
    uint8_t digest[SHA256_DIGEST_BYTES];
    const char *what = NULL;
    if (sha256_fd(fd, digest, &h->size) != 0) what = "read";
    else if (fsync(fd) != 0) what = "fsync";
    if (what) {
        int rc = ckpt_fail(what, path);
        close(fd);
        return rc;
    }
    if (close(fd) != 0) return ckpt_fail("close", path);
    char hex[SHA256_HEX_BYTES];
    sha256_hex(digest, hex);
    snprintf(h->hex, sizeof h->hex, "%s", hex);
    return 0;
}

int ckpt_manifest_write(const char *dir) { return ckpt_manifest_write_known(dir, NULL, 0); }

int ckpt_manifest_write_known(const char *dir, const ckpt_file_hash *known, int n_known) {
    name_list names = {0};
    if (name_list_read_dir(&names, dir) != 0) return ckpt_fail("read directory", dir);
    char *text = NULL;
    int rc = 0;
    // Each line is 64 hex + 2 spaces + name + newline; the trailer fits in 80 bytes.
    size_t cap = 80, len = 0;
    for (size_t i = 0; i < names.n; i++) cap += strlen(names.v[i]) + CKPT_HEX + 3;
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
            if (strcmp(known[j].name, name) == 0) k = &known[j];
        ckpt_file_hash h;
        if (k) {   // hashed (and fsynced) by the rank that wrote it
            if ((uint64_t)st.st_size != k->size) {
                fprintf(stderr, "anvil: checkpoint: '%s' is %lld bytes, its writer hashed "
                        "%llu\n", path, (long long)st.st_size, (unsigned long long)k->size);
                rc = 2;
                goto done;
            }
            h = *k;
        } else if ((rc = ckpt_hash_file(path, &h)) != 0) {
            goto done;
        }
        const char *hex = h.hex;
        uint64_t size = h.size;
        len += (size_t)snprintf(text + len, cap - len, "%s  %s\n", hex, name);
        n_files++;
        n_bytes += size;
    }
    len += (size_t)snprintf(text + len, cap - len, CKPT_TRAILER "%zu bytes %" PRIu64 "\n",
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

// One MANIFEST line: the expected hash and the name (pointing into the MANIFEST text).
typedef struct manifest_entry {
    const char *hex;   // 64 hex digits, not NUL-terminated
    const char *name;
} manifest_entry;

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const manifest_entry *)a)->name, ((const manifest_entry *)b)->name);
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

static int hex_equal(const char *a, const char *b) {
    for (int i = 0; i < CKPT_HEX; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'F') x = (char)(x - 'A' + 'a');
        if (x != y) return 0;
    }
    return 1;
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

// Parse the MANIFEST text in place (newlines become NULs) into entries (malloc'd, sorted
// by name) and the trailer's byte count. Returns 0, or 2 with why set.
static int manifest_parse(char *text, size_t len, manifest_entry **out, size_t *n_out,
                          uint64_t *trailer_bytes, char *why, size_t n) {
    *out = NULL;
    *n_out = 0;
    if (len == 0) return ckpt_why(why, n, "MANIFEST: empty");
    if (memchr(text, '\0', len)) return ckpt_why(why, n, "MANIFEST: holds a NUL byte");
    size_t n_lines = 0;
    for (size_t i = 0; i < len; i++) n_lines += text[i] == '\n';
    manifest_entry *e = malloc((n_lines + 1) * sizeof *e);
    if (!e) return ckpt_why(why, n, "MANIFEST: out of memory");
    size_t n_e = 0, line_no = 0;
    int have_trailer = 0;
    uint64_t trailer_files = 0;
    char *p = text, *end = text + len;
    while (p < end) {
        line_no++;
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            free(e);
            return ckpt_why(why, n, "MANIFEST: line %zu malformed (no final newline: cut short?)", line_no);
        }
        *nl = '\0';
        if (have_trailer) {
            free(e);
            return ckpt_why(why, n, "MANIFEST: line %zu malformed (text after the trailer)", line_no);
        }
        if (p[0] == '#') {
            const char *q = p + strlen(CKPT_TRAILER);
            if (strncmp(p, CKPT_TRAILER, strlen(CKPT_TRAILER)) != 0 || parse_u64(&q, &trailer_files) != 0 ||
                strncmp(q, " bytes ", 7) != 0 || (q += 7, parse_u64(&q, trailer_bytes) != 0) || *q != '\0') {
                free(e);
                return ckpt_why(why, n, "MANIFEST: line %zu malformed", line_no);
            }
            have_trailer = 1;
        } else {
            size_t l = (size_t)(nl - p);
            int ok = l > CKPT_HEX + 2 && p[CKPT_HEX] == ' ' && p[CKPT_HEX + 1] == ' ' &&
                     ckpt_name_ok(p + CKPT_HEX + 2);
            for (int i = 0; ok && i < CKPT_HEX; i++) {
                char c = p[i];
                ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
            }
            if (!ok || strcmp(p + CKPT_HEX + 2, CKPT_MANIFEST) == 0) {
                free(e);
                return ckpt_why(why, n, "MANIFEST: line %zu malformed", line_no);
            }
            e[n_e].hex = p;
            e[n_e].name = p + CKPT_HEX + 2;
            n_e++;
        }
        p = nl + 1;
    }
    if (!have_trailer) {
        free(e);
        return ckpt_why(why, n, "MANIFEST: no trailer line (cut short?)");
    }
    if (trailer_files != n_e) {
        free(e);
        return ckpt_why(why, n, "MANIFEST: the trailer says %" PRIu64 " files, %zu are listed",
                        trailer_files, n_e);
    }
    if (n_e > 1) qsort(e, n_e, sizeof *e, cmp_entry);
    for (size_t i = 1; i < n_e; i++) {
        if (strcmp(e[i - 1].name, e[i].name) == 0) {
            ckpt_why(why, n, "MANIFEST: %s listed twice", e[i].name);
            free(e);
            return 2;
        }
    }
    *out = e;
    *n_out = n_e;
    return 0;
}

// Whether name is in the sorted entries.
static int manifest_lists(const manifest_entry *e, size_t n_e, const char *name) {
    manifest_entry key = {NULL, name};
    return n_e > 0 && bsearch(&key, e, n_e, sizeof *e, cmp_entry) != NULL;
}

int ckpt_verify(const char *dir, char *why, size_t n) {
    if (why && n > 0) why[0] = '\0';
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno == ENOENT) return ckpt_why(why, n, "directory missing");
        return ckpt_why(why, n, "directory: %s", strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) return ckpt_why(why, n, "not a directory");
    char path[CKPT_PATH_MAX];
    if (ckpt_join(path, sizeof path, dir, CKPT_MANIFEST) != 0) return ckpt_why(why, n, "path too long");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return ckpt_why(why, n, "MANIFEST: missing");
        return ckpt_why(why, n, "MANIFEST: %s", strerror(errno));
    }
    size_t len = 0;
    char *text = manifest_read(fd, &len, why, n);
    close(fd);   // read-only: nothing a failed close could lose
    if (!text) return 2;

    manifest_entry *e = NULL;
    size_t n_e = 0;
    uint64_t trailer_bytes = 0, bytes = 0;
    name_list names = {0};
    int rc = manifest_parse(text, len, &e, &n_e, &trailer_bytes, why, n);
    if (rc) goto done;
    if (name_list_read_dir(&names, dir) != 0) {
        rc = ckpt_why(why, n, "directory: %s", strerror(errno));
        goto done;
    }
    // The cheap checks first: every listed file present and regular, nothing unlisted.
    for (size_t i = 0; i < n_e; i++) {
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
    }
    for (size_t i = 0; i < names.n; i++) {
        if (strcmp(names.v[i], CKPT_MANIFEST) == 0 || manifest_lists(e, n_e, names.v[i])) continue;
        rc = ckpt_why(why, n, "%s: not in MANIFEST", names.v[i]);
        goto done;
    }
    // The files are hashed in parallel (a rank writes its state as several part
    // files); the first bad one in MANIFEST order is the one reported.
    int *bad = calloc(n_e + 1, sizeof *bad);   // 0 ok, 1 unreadable, 2 mismatch
    int *err = calloc(n_e + 1, sizeof *err);
    uint64_t *sizes = calloc(n_e + 1, sizeof *sizes);
    if (!bad || !err || !sizes) {
        rc = ckpt_why(why, n, "out of memory");
        free(bad), free(err), free(sizes);
        goto done;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < n_e; i++) {
        char fpath[CKPT_PATH_MAX];
        ckpt_join(fpath, sizeof fpath, dir, e[i].name);   // fitted above
        int f = open(fpath, O_RDONLY | O_CLOEXEC);
        uint8_t digest[SHA256_DIGEST_BYTES];
        if (f < 0 || sha256_fd(f, digest, &sizes[i]) != 0) {
            bad[i] = 1;
            err[i] = errno;
        } else {
            char hex[SHA256_HEX_BYTES];
            sha256_hex(digest, hex);
            if (!hex_equal(e[i].hex, hex)) bad[i] = 2;
        }
        if (f >= 0) close(f);
    }
    for (size_t i = 0; i < n_e && rc == 0; i++) {
        if (bad[i] == 1) rc = ckpt_why(why, n, "%s: %s", e[i].name, strerror(err[i]));
        else if (bad[i] == 2)
            rc = ckpt_why(why, n, "%s: SHA-256 mismatch (file changed or truncated)", e[i].name);
        bytes += sizes[i];
    }
    free(bad), free(err), free(sizes);
    if (rc) goto done;
    if (bytes != trailer_bytes)
        rc = ckpt_why(why, n, "MANIFEST: the trailer says %" PRIu64 " bytes, the files hold %" PRIu64,
                      trailer_bytes, bytes);
done:
    name_list_free(&names);
    free(e);
    free(text);
    return rc;
}

// ---- commit and prune ----------------------------------------------------------------

// Remove committed checkpoints beyond the newest `keep` at or below `step` (directories
// newer than the one just committed, left by a run that was rolled back, are not ours
// to judge and stay), except multiples of keep_every, and stale .tmp directories of
// older steps. Failures are printed and otherwise ignored: the new checkpoint is already
// durable, and a leftover old one costs only disk.
static void ckpt_prune(const char *root, long step, int keep, long keep_every) {
    name_list names = {0};
    if (name_list_read_dir(&names, root) != 0) {
        ckpt_fail("read directory", root);
        return;
    }
    for (size_t i = 0; i < names.n; i++) {
        long s;
        char path[CKPT_PATH_MAX];
        if (ckpt_parse_step(names.v[i], ".tmp", &s) && s < step &&
            ckpt_join_or_fail(path, sizeof path, root, names.v[i]) == 0)
            ckpt_remove_dir(path);
    }
    name_list_free(&names);
    if (keep <= 0) return;
    long *steps = NULL;
    size_t n_steps = 0;
    if (ckpt_list_steps(root, 0, &steps, &n_steps) != 0) {
        ckpt_fail("read directory", root);
        return;
    }
    size_t kept = 0;
    for (size_t i = 0; i < n_steps; i++) {
        long s = steps[i];
        if (s > step) continue;
        if (kept < (size_t)keep || s == step) {
            kept++;
            continue;
        }
        if (keep_every > 0 && s % keep_every == 0) continue;
        char path[CKPT_PATH_MAX];
        if (ckpt_step_dir(root, s, path, sizeof path) == 0) ckpt_remove_dir(path);
    }
    free(steps);
}

int ckpt_commit(const char *root, const char *tmp, long step, int keep, long keep_every) {
    char final[CKPT_PATH_MAX], latest[CKPT_PATH_MAX], latest_tmp[CKPT_PATH_MAX], manifest[CKPT_PATH_MAX];
    if (ckpt_step_dir(root, step, final, sizeof final) != 0) {
        fprintf(stderr, "anvil: checkpoint: '%s': step %ld is outside 0..%ld or the path is too long\n",
                root, step, CKPT_STEP_MAX);
        return 2;
    }
    int rc;
    if ((rc = ckpt_join_or_fail(latest, sizeof latest, root, "latest")) != 0) return rc;
    if ((rc = ckpt_join_or_fail(latest_tmp, sizeof latest_tmp, root, "latest.tmp")) != 0) return rc;
    if ((rc = ckpt_join_or_fail(manifest, sizeof manifest, tmp, CKPT_MANIFEST)) != 0) return rc;
    struct stat st;
    if (lstat(manifest, &st) != 0) return ckpt_fail("find", manifest);   // manifest_write first
    if ((rc = ckpt_fsync_path(tmp, 1)) != 0) return rc;
    // rename() would silently replace an empty directory, so look first; one process
    // commits, so nothing can appear between the look and the rename.
    if (lstat(final, &st) == 0) {
        fprintf(stderr, "anvil: checkpoint: '%s' already exists; a committed step is never overwritten\n",
                final);
        return 2;
    }
    if (errno != ENOENT) return ckpt_fail("stat", final);
    if (rename(tmp, final) != 0) {
        int saved = errno;
        fprintf(stderr, "anvil: checkpoint: cannot rename '%s' to '%s': %s\n", tmp, final, strerror(saved));
        return 2;
    }
    if ((rc = ckpt_fsync_path(root, 1)) != 0) return rc;
    char line[32];
    int len = snprintf(line, sizeof line, "step_%08ld\n", step);
    if ((rc = ckpt_write_durable(latest_tmp, line, (size_t)len)) != 0) return rc;
    if (rename(latest_tmp, latest) != 0) {
        int saved = errno;
        fprintf(stderr, "anvil: checkpoint: cannot rename '%s' to '%s': %s\n", latest_tmp, latest,
                strerror(saved));
        return 2;
    }
    if ((rc = ckpt_fsync_path(root, 1)) != 0) return rc;
    ckpt_prune(root, step, keep, keep_every);
    return 0;
}

// ---- finding the newest valid checkpoint ---------------------------------------------

// The step `latest` names, or -1 when there is none or it is malformed (reported).
static long ckpt_read_latest(const char *root) {
    char path[CKPT_PATH_MAX];
    if (ckpt_join(path, sizeof path, root, "latest") != 0) return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        // No pointer yet, or a crash between the directory rename and the pointer's:
        // the scan finds the newest directory either way.
        if (errno != ENOENT) {
            int saved = errno;
            fprintf(stderr, "anvil: checkpoint %s: %s; ignored\n", path, strerror(saved));
        }
        return -1;
    }
    char buf[CKPT_LATEST_BYTES + 2];
    size_t got = 0;
    while (got < sizeof buf - 1) {
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int saved = errno;
            fprintf(stderr, "anvil: checkpoint %s: %s; ignored\n", path, strerror(saved));
            close(fd);
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    long step;
    int ok = got == CKPT_LATEST_BYTES && buf[got - 1] == '\n';
    buf[ok ? got - 1 : got] = '\0';   // drop the newline
    if (!ok || !ckpt_parse_step(buf, "", &step)) {
        fprintf(stderr, "anvil: checkpoint %s: malformed (expected one line step_NNNNNNNN); ignored\n",
                path);
        return -1;
    }
    return step;
}

// Verify root's step `step`; on success put its path in path (n bytes) and return 0;
// else report it and return 1 (2 if the path does not fit in n).
static int ckpt_try(const char *root, long step, char *path, size_t n) {
    char dir[CKPT_PATH_MAX], why[CKPT_PATH_MAX];
    if (ckpt_step_dir(root, step, dir, sizeof dir) != 0) return 1;
    if (ckpt_verify(dir, why, sizeof why) != 0) {
        fprintf(stderr, "anvil: checkpoint %s: %s; skipped\n", dir, why);
        return 1;
    }
    if (ckpt_step_dir(root, step, path, n) != 0) {
        fprintf(stderr, "anvil: checkpoint: '%s' does not fit in %zu bytes\n", dir, n);
        return 2;
    }
    return 0;
}

int ckpt_find_latest(const char *root, char *path, size_t n, long *step) {
    struct stat st;
    if (stat(root, &st) != 0) {
        if (errno == ENOENT) return 1;
        return ckpt_fail("stat", root);
    }
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return ckpt_fail("read directory", root);
    }
    long named = ckpt_read_latest(root);
    if (named >= 0) {
        int rc = ckpt_try(root, named, path, n);
        if (rc == 0) *step = named;
        if (rc != 1) return rc;
    }
    long *steps = NULL;
    size_t n_steps = 0;
    if (ckpt_list_steps(root, 1, &steps, &n_steps) != 0) return ckpt_fail("read directory", root);
    int rc = 1;
    for (size_t i = 0; i < n_steps && rc == 1; i++) {
        if (steps[i] == named) continue;   // already tried and reported
        rc = ckpt_try(root, steps[i], path, n);
        if (rc == 0) *step = steps[i];
    }
    free(steps);
    return rc;
}
