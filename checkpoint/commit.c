// checkpoint/commit.c: checkpoint directories, the atomic commit, pruning and the
// search for the newest valid checkpoint.
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
// The MANIFEST itself (its two formats, hashing, verification) is manifest.c; the small
// helpers both files use are declared in ckpt_internal.h.
//
// Removal (a stale .tmp directory, pruned checkpoints) deletes regular files and then
// the directory, and refuses anything else (a subdirectory, a symlink) with an error
// rather than recursing: a checkpoint directory holds only regular files, so anything
// else means the path is not what we think it is.
#include "checkpoint/checkpoint.h"
#include "checkpoint/ckpt_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CKPT_STEP_MAX 99999999L            // the largest step that fits in 8 digits
#define CKPT_LATEST_BYTES 14               // "step_NNNNNNNN\n"

// ---- small helpers -------------------------------------------------------------------

// Print "anvil: checkpoint: cannot WHAT 'PATH': strerror(errno)". Returns 2.
int ckpt_fail(const char *what, const char *path) {
    int saved = errno;
    fprintf(stderr, "anvil: checkpoint: cannot %s '%s': %s\n", what, path, strerror(saved));
    return 2;
}

// Format the one-line reason for ckpt_verify into why (n bytes, may be 0). Returns 2.
int ckpt_why(char *why, size_t n, const char *fmt, ...) {
    if (why && n > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, n, fmt, ap);
        va_end(ap);
    }
    return 2;
}

// "dir/name" into out (n bytes). Returns 0, or -1 if it does not fit.
int ckpt_join(char *out, size_t n, const char *dir, const char *name) {
    size_t dl = strlen(dir);
    const char *sep = (dl > 0 && dir[dl - 1] == '/') ? "" : "/";
    int w = snprintf(out, n, "%s%s%s", dir, sep, name);
    return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

// Join, printing an error naming dir and name when the result is too long. Returns 0 or 2.
int ckpt_join_or_fail(char *out, size_t n, const char *dir, const char *name) {
    if (ckpt_join(out, n, dir, name) == 0) return 0;
    fprintf(stderr, "anvil: checkpoint: path '%s/%s' is longer than %zu bytes\n", dir, name, n - 1);
    return 2;
}

// fsync a file or directory by path. Returns 0, or 2 after printing. A few file systems
// (some FUSE and CIFS mounts) answer EINVAL to fsync on a directory: nothing more can be
// done for the rename there, so that one case is not an error.
int ckpt_fsync_path(const char *path, int is_dir) {
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
int ckpt_write_durable(const char *path, const char *data, size_t len) {
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
int ckpt_name_ok(const char *name) {
    if (!name[0] || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p <= ' ' || *p == 0x7f || *p == '\\' || *p == '/') return 0;
    return 1;
}

// Parse "step_NNNNNNNN" followed by exactly `suffix`. Returns 1 and sets *step, or 0.
int ckpt_parse_step(const char *name, const char *suffix, long *step) {
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

void name_list_free(name_list *l) {
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
int name_list_read_dir(name_list *l, const char *dir) {
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
static int ckpt_try(const char *root, long step, int quick, char *path, size_t n) {
    char dir[CKPT_PATH_MAX], why[CKPT_PATH_MAX];
    if (ckpt_step_dir(root, step, dir, sizeof dir) != 0) return 1;
    if ((quick ? ckpt_verify_quick : ckpt_verify)(dir, why, sizeof why) != 0) {
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
    return ckpt_find_latest_below(root, LONG_MAX, 0, path, n, step);
}

int ckpt_find_latest_below(const char *root, long below, int quick, char *path, size_t n,
                           long *step) {
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
    if (named >= below) named = -1;
    if (named >= 0) {
        int rc = ckpt_try(root, named, quick, path, n);
        if (rc == 0) *step = named;
        if (rc != 1) return rc;
    }
    long *steps = NULL;
    size_t n_steps = 0;
    if (ckpt_list_steps(root, 1, &steps, &n_steps) != 0) return ckpt_fail("read directory", root);
    int rc = 1;
    for (size_t i = 0; i < n_steps && rc == 1; i++) {
        if (steps[i] == named || steps[i] >= below) continue;   // tried and reported; too new
        rc = ckpt_try(root, steps[i], quick, path, n);
        if (rc == 0) *step = steps[i];
    }
    free(steps);
    return rc;
}
