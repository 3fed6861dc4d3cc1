// tests/unit/test_ckpt_commit.c: SHA-256, the checkpoint MANIFEST, the atomic commit,
// pruning and the search for the newest valid checkpoint (checkpoint/commit.c).
//
// SHA-256 is checked against the FIPS 180-4 example vectors and against the system's
// `sha256sum` on a random 3 MB file, on the SHA-NI path (where the CPU has it) and the
// portable one, and the two paths must agree on random inputs of 0..300 bytes and a few
// MB; an "info" line gives each path's speed on 256 MiB. A MANIFEST must pass `sha256sum --strict -c`, so
// the format is judged by an independent tool, not by our own parser alone. Every
// corruption a disk or a crash can cause (a flipped byte, a truncated file, a missing or
// extra file, a missing, cut-short or malformed MANIFEST, a `latest` naming a missing or
// bad directory, a half-written .tmp directory) must be caught with a reason naming the
// file, and ckpt_find_latest must fall back to the previous good checkpoint. Everything
// happens in a mkdtemp directory. Prints one line per check; exits 1 if any failed.
#include "checkpoint/checkpoint.h"
#include "checkpoint/sha256.h"
#include "tests/unit/capture.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;
static char dir[64];   // the mkdtemp directory

static void report(int ok, const char *name, const char *detail) {
    printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name, detail && *detail ? ": " : "",
           detail ? detail : "");
    if (!ok) failures++;
}


static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

// Whether msg is exactly one line "anvil: ...\n" containing want.
static int one_line(const char *msg, const char *want) {
    return !strncmp(msg, "anvil: ", 7) && count_lines(msg) == 1 && msg[strlen(msg) - 1] == '\n' &&
           strstr(msg, want) != NULL;
}

// The message without its final newline, for details.
static const char *chomp(const char *msg) {
    static char buf[8192];
    snprintf(buf, sizeof buf, "%s", msg[0] ? msg : "(no message)");
    size_t n = strlen(buf);
    if (n && buf[n - 1] == '\n') buf[n - 1] = '\0';
    return buf;
}

// ---- files -----------------------------------------------------------------------------

// "a/b" into out; the mkdtemp paths are short, so not fitting is a bug in this test.
static void path_in(char *out, size_t n, const char *a, const char *b) {
    int w = snprintf(out, n, "%s/%s", a, b);
    if (w < 0 || (size_t)w >= n) {
        printf("FAIL path '%s/%s' too long for the test's buffers\n", a, b);
        exit(1);
    }
}

static int write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static int write_text(const char *path, const char *s) { return write_file(path, s, strlen(s)); }

// The whole file into buf (n bytes, NUL-terminated); returns the length or -1.
static long read_text(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t got = fread(buf, 1, n - 1, f);
    fclose(f);
    buf[got] = '\0';
    return (long)got;
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void) {   // xorshift64*: any bytes will do, reproducibly
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

// Run a shell command; returns its exit status (-1 if it did not exit normally) and its
// combined output in out.
static int shell(const char *cmd, char *out, size_t n) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t got = fread(out, 1, n - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    return (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
}

// ---- SHA-256 ---------------------------------------------------------------------------
//
// sha256.c has two block functions, SHA-NI and portable; sha256_force_portable picks one.
// Each test below runs on every path this CPU has, and puts the path's name in its lines.

static int sha_have_fast;   // the CPU has the SHA-NI path (set by test_sha256_vectors)

static int sha_n_paths(void) { return sha_have_fast ? 2 : 1; }

// Path k (0: the run-time choice, 1: portable) for the hashes that follow; its name.
static const char *sha_use_path(int k) {
    sha256_force_portable(k == 1);
    return k == 1 || !sha_have_fast ? "portable" : "sha-ni";
}

static void hash_hex(const void *p, size_t n, char hex[SHA256_HEX_BYTES]) {
    sha256_ctx c;
    uint8_t d[SHA256_DIGEST_BYTES];
    sha256_init(&c);
    sha256_update(&c, p, n);
    sha256_final(&c, d);
    sha256_hex(d, hex);
}

// p hashed in pieces of 1..max_piece bytes (from rng_next), so blocks straddle updates.
static void hash_hex_pieces(const uint8_t *p, size_t n, size_t max_piece, char hex[SHA256_HEX_BYTES]) {
    sha256_ctx c;
    uint8_t d[SHA256_DIGEST_BYTES];
    sha256_init(&c);
    for (size_t off = 0; off < n;) {
        size_t k = 1 + (size_t)(rng_next() % max_piece);
        if (k > n - off) k = n - off;
        sha256_update(&c, p + off, k);
        off += k;
    }
    sha256_final(&c, d);
    sha256_hex(d, hex);
}

// 1 if /proc/cpuinfo lists the sha_ni flag (0 elsewhere, or if it cannot be read).
static int cpuinfo_has_sha_ni(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192];
    int has = 0;
    while (f && !has && fgets(line, sizeof line, f))
        if (!strncmp(line, "flags", 5) && strstr(line, " sha_ni")) has = 1;
    if (f) fclose(f);
    return has;
}

static void test_sha256_vectors(void) {
    sha_have_fast = sha256_force_portable(0);
    int cpu = cpuinfo_has_sha_ni();
    char detail[160];
    snprintf(detail, sizeof detail, "/proc/cpuinfo sha_ni %s, sha256 %s the SHA-NI path", cpu ? "yes" : "no",
             sha_have_fast ? "uses" : "does not use");
    report(!cpu || sha_have_fast, "sha256 uses SHA-NI where /proc/cpuinfo lists sha_ni", detail);

    // FIPS 180-4 examples (NIST "SHA256.pdf", "SHA2_Additional.pdf"), and the 112-byte
    // message of the SHA-512 example: two blocks once padded, the length in the second.
    static const struct { const char *msg, *hex; } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    static char a[1000000];
    memset(a, 'a', sizeof a);
    for (int k = 0; k < sha_n_paths(); k++) {
        const char *path = sha_use_path(k);
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
            char hex[SHA256_HEX_BYTES], hex_bytes[SHA256_HEX_BYTES], name[96];
            hash_hex(v[i].msg, strlen(v[i].msg), hex);
            sha256_ctx c;   // the same message a byte at a time: the block buffering path
            uint8_t d[SHA256_DIGEST_BYTES];
            sha256_init(&c);
            for (const char *p = v[i].msg; *p; p++) sha256_update(&c, p, 1);
            sha256_final(&c, d);
            sha256_hex(d, hex_bytes);
            snprintf(name, sizeof name, "sha256 [%s] \"%.12s%s\" (%zu bytes)", path, v[i].msg,
                     strlen(v[i].msg) > 12 ? "..." : "", strlen(v[i].msg));
            report(!strcmp(hex, v[i].hex) && !strcmp(hex_bytes, v[i].hex), name, hex);
        }
        // One million 'a', fed in chunks of 1..97 bytes so blocks straddle every offset.
        char one[SHA256_HEX_BYTES], chunked[SHA256_HEX_BYTES], name[96];
        hash_hex(a, sizeof a, one);
        sha256_ctx c;
        uint8_t d[SHA256_DIGEST_BYTES];
        sha256_init(&c);
        for (size_t off = 0, n = 1; off < sizeof a; off += n, n = n % 97 + 1)
            sha256_update(&c, a + off, off + n <= sizeof a ? n : sizeof a - off);
        sha256_final(&c, d);
        sha256_hex(d, chunked);
        const char *want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
        snprintf(name, sizeof name, "sha256 [%s] one million 'a' (whole, chunked)", path);
        report(!strcmp(one, want) && !strcmp(chunked, want), name, one);
    }
    sha256_force_portable(0);
}

// SHA-NI against portable on random inputs: every length 0..300 (each padding case, 0..4
// whole blocks), whole and in pieces, then a few MB in pieces of up to 100 kB.
static void test_sha256_paths_agree(void) {
    if (!sha_have_fast) {
        report(1, "sha256 sha-ni == portable on random inputs", "no SHA-NI on this CPU: portable only");
        return;
    }
    static const size_t big[] = {(1u << 20) + 1, (3u << 20) + 13, (5u << 20) - 7};   // odd tails
    size_t n_max = big[sizeof big / sizeof big[0] - 1];
    uint8_t *buf = malloc(n_max);
    if (!buf) {
        report(0, "sha256 sha-ni == portable on random inputs", "out of memory");
        return;
    }
    for (size_t i = 0; i < n_max; i++) buf[i] = (uint8_t)(rng_next() >> 56);
    char fast[SHA256_HEX_BYTES], fast_pieces[SHA256_HEX_BYTES], slow[SHA256_HEX_BYTES], detail[256];
    int bad = -1;
    for (int n = 0; n <= 300 && bad < 0; n++) {
        const uint8_t *p = buf + 7 * n;   // a different, unaligned start for each length
        sha_use_path(0);
        hash_hex(p, (size_t)n, fast);
        hash_hex_pieces(p, (size_t)n, 70, fast_pieces);
        sha_use_path(1);
        hash_hex(p, (size_t)n, slow);
        if (strcmp(fast, slow) || strcmp(fast_pieces, slow)) bad = n;
    }
    snprintf(detail, sizeof detail, bad < 0 ? "301 lengths, whole and in pieces"
             : "length %d: sha-ni %.16s.., in pieces %.16s.., portable %.16s..", bad, fast, fast_pieces, slow);
    report(bad < 0, "sha256 sha-ni == portable on random inputs of 0..300 bytes", detail);
    int ok = 1;
    for (size_t i = 0; i < sizeof big / sizeof big[0] && ok; i++) {
        sha_use_path(0);
        hash_hex_pieces(buf + 1, big[i] - 1, 100000, fast);
        sha_use_path(1);
        hash_hex(buf + 1, big[i] - 1, slow);
        ok = !strcmp(fast, slow);
        snprintf(detail, sizeof detail, "%zu bytes: sha-ni %s, portable %s", big[i] - 1, ok ? "==" : fast, slow);
    }
    report(ok, "sha256 sha-ni (in pieces) == portable (whole) on 1, 3 and 5 MB", detail);
    sha256_force_portable(0);
    free(buf);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// MiB/s of each path on 256 MiB in memory: information, not a check (machines differ).
static void test_sha256_speed(void) {
    size_t n = (size_t)256 << 20;   // large enough that the time is the hashing, not the timer
    uint64_t *buf = malloc(n);
    if (!buf) {
        printf("info sha256 speed: skipped, could not allocate 256 MiB\n");
        return;
    }
    for (size_t i = 0; i < n / 8; i++) buf[i] = rng_next();
    char hex[2][SHA256_HEX_BYTES], line[256];
    int len = snprintf(line, sizeof line, "info sha256 speed on 256 MiB in memory:");
    for (int k = 0; k < sha_n_paths(); k++) {
        const char *path = sha_use_path(k);
        double t0 = now_s();
        hash_hex(buf, n, hex[k]);
        double s = now_s() - t0;
        len += snprintf(line + len, sizeof line - (size_t)len, " %s %.0f MiB/s (%.2f s)%s", path,
                        256.0 / s, s, k + 1 < sha_n_paths() ? "," : "");
    }
    sha256_force_portable(0);
    printf("%s\n", line);
    if (sha_n_paths() == 2) report(!strcmp(hex[0], hex[1]), "sha256 sha-ni == portable on 256 MiB", hex[0]);
    free(buf);
}

static void test_sha256_file(void) {
    // 3 MiB + 13 bytes: several 1 MiB updates and a partial last block.
    size_t n = (3u << 20) + 13;
    uint8_t *buf = malloc(n);
    char path[128], hex[SHA256_HEX_BYTES], cmd[256], out[512], detail[256], name[96];
    if (!buf) {
        report(0, "sha256 of a 3 MB file", "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(rng_next() >> 56);
    path_in(path, sizeof path, dir, "random.bin");
    int written = write_file(path, buf, n) == 0;
    snprintf(cmd, sizeof cmd, "sha256sum '%s' 2>&1", path);
    int st = shell(cmd, out, sizeof out);
    for (int k = 0; k < sha_n_paths(); k++) {
        const char *how = sha_use_path(k);
        uint8_t d[SHA256_DIGEST_BYTES] = {0};
        sha256_ctx c;   // in 1 MiB updates, as the MANIFEST code feeds it
        sha256_init(&c);
        for (size_t at = 0; at < n; at += (size_t)1 << 20)
            sha256_update(&c, buf + at, n - at < ((size_t)1 << 20) ? n - at : (size_t)1 << 20);
        sha256_final(&c, d);
        sha256_hex(d, hex);
        int ok = written && st == 0 && strlen(out) > 64 && !strncmp(out, hex, 64);
        snprintf(detail, sizeof detail, "ours %s, sha256sum %.64s (status %d), %zu bytes", ok ? "==" : hex,
                 out, st, n);
        snprintf(name, sizeof name, "sha256 [%s] of a random 3 MB file == sha256sum", how);
        report(ok, name, detail);
    }
    sha256_force_portable(0);
    free(buf);
    unlink(path);
    // main calls only test_sha256_vectors and test_sha256_file; the rest of the SHA-256
    // checks run from here, after the known answers.
    test_sha256_paths_agree();
    test_sha256_speed();
}

// ---- checkpoints -----------------------------------------------------------------------

static const char *const ckpt_files[] = {"model.h5", "optim.h5", "shard_pp00_tp01.h5"};
#define N_CKPT_FILES 3

// begin, write the three files (contents depend on step), MANIFEST, commit. Returns 0,
// or the first nonzero return code.
static int make_ckpt(const char *root, long step, int keep, long keep_every) {
    char tmp[CKPT_PATH_MAX], path[CKPT_PATH_MAX];
    int rc = ckpt_begin(root, step, tmp, sizeof tmp);
    if (rc) return rc;
    for (int i = 0; i < N_CKPT_FILES; i++) {
        size_t n = 1000 + 4096 * (size_t)i + (size_t)step % 7;
        char *b = malloc(n);
        if (!b) return -1;
        for (size_t j = 0; j < n; j++) b[j] = (char)(rng_next() >> 56);
        path_in(path, sizeof path, tmp, ckpt_files[i]);
        int w = write_file(path, b, n);
        free(b);
        if (w) return -1;
    }
    if ((rc = ckpt_manifest_write(tmp))) return rc;
    return ckpt_commit(root, tmp, step, keep, keep_every);
}

static void step_dir(char *out, const char *root, long step) { ckpt_step_dir(root, step, out, CKPT_PATH_MAX); }

static void test_paths(void) {
    char p[CKPT_PATH_MAX], small[19];   // "/root/step_00000001" needs 20
    int ok = ckpt_step_dir("/r", 42, p, sizeof p) == 0 && !strcmp(p, "/r/step_00000042");
    ok = ok && ckpt_tmp_dir("/r/", 42, p, sizeof p) == 0 && !strcmp(p, "/r/step_00000042.tmp");
    ok = ok && ckpt_step_dir("/r", 99999999, p, sizeof p) == 0;
    ok = ok && ckpt_step_dir("/r", 100000000, p, sizeof p) == -1 && ckpt_step_dir("/r", -1, p, sizeof p) == -1;
    ok = ok && ckpt_step_dir("/root", 1, small, sizeof small) == -1;
    report(ok, "step and tmp paths (8 digits, range, too small a buffer)", p);
}

// begin, manifest, commit, verify, latest, find_latest and sha256sum -c on one checkpoint.
static void test_cycle(void) {
    char root[CKPT_PATH_MAX], tmp[CKPT_PATH_MAX], path[CKPT_PATH_MAX], final[CKPT_PATH_MAX];
    char text[4096], detail[8400], why[512], cmd[CKPT_PATH_MAX + 64], out[4096];
    snprintf(root, sizeof root, "%s/run/nested/checkpoints", dir);   // begin makes the parents

    int rc = ckpt_begin(root, 100, tmp, sizeof tmp);
    char want_tmp[CKPT_PATH_MAX];
    ckpt_tmp_dir(root, 100, want_tmp, sizeof want_tmp);
    struct stat st;
    report(rc == 0 && !strcmp(tmp, want_tmp) && stat(tmp, &st) == 0 && S_ISDIR(st.st_mode),
           "begin creates root's parents and step_00000100.tmp", tmp);

    uint64_t total = 0;
    for (int i = 0; i < N_CKPT_FILES; i++) {
        char body[256];
        snprintf(body, sizeof body, "contents of %s\n", ckpt_files[i]);
        total += strlen(body);
        path_in(path, sizeof path, tmp, ckpt_files[i]);
        write_text(path, body);
    }
    rc = ckpt_manifest_write(tmp);
    path_in(path, sizeof path, tmp, "MANIFEST");
    read_text(path, text, sizeof text);
    char want[4096];
    int w = 0;
    for (int i = 0; i < N_CKPT_FILES; i++) {
        char body[256], hex[SHA256_HEX_BYTES];
        snprintf(body, sizeof body, "contents of %s\n", ckpt_files[i]);
        hash_hex(body, strlen(body), hex);
        w += snprintf(want + w, sizeof want - (size_t)w, "%s  %s\n", hex, ckpt_files[i]);
    }
    snprintf(want + w, sizeof want - (size_t)w, "# anvil-manifest 1 files 3 bytes %llu\n",
             (unsigned long long)total);
    snprintf(detail, sizeof detail, "rc %d, MANIFEST:\n%s", rc, text);
    report(rc == 0 && !strcmp(text, want), "MANIFEST: sorted \"HEX  NAME\" lines and the trailer", rc ? detail : NULL);
    path_in(path, sizeof path, tmp, "MANIFEST.tmp");
    report(!exists(path), "MANIFEST.tmp renamed away", NULL);

    rc = ckpt_verify(tmp, why, sizeof why);
    report(rc == 0 && why[0] == '\0', "verify the tmp directory before commit", why);

    capture_begin();
    rc = ckpt_commit(root, tmp, 100, 2, 0);
    const char *msg = capture_end();
    step_dir(final, root, 100);
    snprintf(detail, sizeof detail, "rc %d, %s", rc, chomp(msg));
    report(rc == 0 && !msg[0] && !exists(tmp) && stat(final, &st) == 0 && S_ISDIR(st.st_mode),
           "commit renames step_00000100.tmp to step_00000100", detail);
    path_in(path, sizeof path, root, "latest");
    long n = read_text(path, text, sizeof text);
    path_in(path, sizeof path, root, "latest.tmp");
    report(n == 14 && !strcmp(text, "step_00000100\n") && !exists(path),
           "latest holds \"step_00000100\\n\", no latest.tmp left", text);

    rc = ckpt_verify(final, why, sizeof why);
    report(rc == 0, "verify the committed checkpoint", why);

    long step = -1;
    capture_begin();
    rc = ckpt_find_latest(root, path, sizeof path, &step);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, step %ld, %s, stderr: %s", rc, step, path, chomp(msg));
    report(rc == 0 && step == 100 && !strcmp(path, final) && !msg[0], "find_latest finds it quietly", detail);

    snprintf(cmd, sizeof cmd, "cd '%s' && sha256sum --strict --warn -c MANIFEST 2>&1", final);
    int status = shell(cmd, out, sizeof out);
    snprintf(detail, sizeof detail, "status %d: %s", status, chomp(out));
    report(status == 0 && !strstr(out, "WARNING") && !strstr(out, "FAILED"),
           "sha256sum --strict --warn -c MANIFEST passes (trailer ignored)", detail);

    // begin for a step that is already committed (a run resumed from an older one)
    // moves it aside, whole, with one line naming both paths; put it back after.
    capture_begin();
    rc = ckpt_begin(root, 100, tmp, sizeof tmp);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, %s", rc, chomp(msg));
    {
        const char *to = strstr(msg, "moved to '");
        char aside[CKPT_PATH_MAX] = "";
        if (to) snprintf(aside, sizeof aside, "%s", to + 10);
        char *q = strchr(aside, '\'');
        if (q) *q = '\0';
        report(rc == 0 && one_line(msg, "step_00000100") && aside[0] && !exists(final) &&
                   ckpt_verify(aside, why, sizeof why) == 0,
               "begin moves an already committed step aside, intact", detail);
        if (aside[0]) rename(aside, final);
        rmdir(tmp);
    }

    rc = ckpt_begin(root, 101, tmp, sizeof tmp);
    path_in(path, sizeof path, tmp, "bad name.h5");
    write_text(path, "x");
    capture_begin();
    rc = ckpt_manifest_write(tmp);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, %s", rc, chomp(msg));
    report(rc == 2 && one_line(msg, "bad name.h5"), "manifest_write refuses a name with a space", detail);
    unlink(path);

    mkdir(final, 0777);   // exists: no-op. Commit of step 100 again must refuse.
    char sub[CKPT_PATH_MAX];
    path_in(path, sizeof path, tmp, "a.h5");
    write_text(path, "a");
    ckpt_manifest_write(tmp);
    capture_begin();
    rc = ckpt_commit(root, tmp, 100, 2, 0);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, %s", rc, chomp(msg));
    report(rc == 2 && one_line(msg, "already exists") && exists(tmp) && ckpt_verify(final, why, sizeof why) == 0,
           "commit never replaces a committed step", detail);

    // A tmp directory holding a subdirectory is not ours: begin must refuse, touch nothing.
    path_in(sub, sizeof sub, tmp, "subdir");
    mkdir(sub, 0777);
    capture_begin();
    rc = ckpt_begin(root, 101, tmp, sizeof tmp);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, %s", rc, chomp(msg));
    report(rc == 2 && one_line(msg, "subdir") && exists(sub) && exists(path),
           "begin refuses a stale tmp holding a directory, removes nothing", detail);
    rmdir(sub);

    // A symlink named like the tmp directory: refused, the target left alone.
    char target[CKPT_PATH_MAX], link_path[CKPT_PATH_MAX];
    path_in(target, sizeof target, dir, "elsewhere");
    mkdir(target, 0777);
    path_in(path, sizeof path, target, "precious");
    write_text(path, "keep me");
    ckpt_tmp_dir(root, 102, link_path, sizeof link_path);
    int linked = symlink(target, link_path) == 0;
    capture_begin();
    rc = ckpt_begin(root, 102, tmp, sizeof tmp);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, %s", rc, chomp(msg));
    report(linked && rc == 2 && one_line(msg, "not a directory") && exists(path),
           "begin refuses a stale tmp that is a symlink", detail);
    unlink(link_path);
}

// keep=2, keep_every=300 over steps 100..700, with stale and foreign directories around.
static void test_prune(void) {
    char root[CKPT_PATH_MAX], path[CKPT_PATH_MAX], detail[8400];
    snprintf(root, sizeof root, "%s/prune", dir);
    mkdir(root, 0777);
    const char *foreign[] = {"step_123", "step_00000100_old", "step_00000900.tmp"};
    for (int i = 0; i < 3; i++) {
        path_in(path, sizeof path, root, foreign[i]);
        mkdir(path, 0777);
    }
    path_in(path, sizeof path, root, "step_00000050.tmp");   // a crashed save of an older step
    mkdir(path, 0777);
    path_in(path, sizeof path, root, "step_00000050.tmp/model.h5");
    write_text(path, "half written");

    static const char *want[] = {"100", "100,200", "200,300", "300,400", "300,400,500", "300,500,600"};
    for (int k = 0; k < 6; k++) {
        long step = 100 * (k + 1);
        if (k == 5) {   // a directory newer than anything this run commits: not ours to prune
            path_in(path, sizeof path, root, "step_00000950");
            mkdir(path, 0777);
        }
        capture_begin();
        int rc = make_ckpt(root, step, 2, 300);
        const char *msg = capture_end();
        char have[256] = "";
        for (long s = 100; s <= 900; s += 100) {
            step_dir(path, root, s);
            if (exists(path)) snprintf(have + strlen(have), sizeof have - strlen(have), "%s%ld", have[0] ? "," : "", s);
        }
        char name[96];
        snprintf(name, sizeof name, "prune keep=2 keep_every=300 after step %ld", step);
        snprintf(detail, sizeof detail, "rc %d, kept %s (want %s)%s%s", rc, have, want[k],
                 msg[0] ? ", " : "", msg[0] ? chomp(msg) : "");
        report(rc == 0 && !strcmp(have, want[k]) && !msg[0], name, detail);
    }
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        path_in(path, sizeof path, root, foreign[i]);
        ok = ok && exists(path);
    }
    path_in(path, sizeof path, root, "step_00000950");
    ok = ok && exists(path);
    path_in(path, sizeof path, root, "step_00000050.tmp");
    report(ok && !exists(path), "prune removes older .tmp dirs, leaves newer .tmp, newer steps and other names", NULL);

    // A checkpoint that holds something besides regular files is refused whole, and the
    // commit still succeeds (the new checkpoint is durable; a leftover costs only disk).
    char sub[CKPT_PATH_MAX];
    step_dir(path, root, 500);
    path_in(sub, sizeof sub, path, "subdir");
    mkdir(sub, 0777);
    capture_begin();
    int rc = make_ckpt(root, 700, 2, 300);
    const char *msg = capture_end();
    char model[CKPT_PATH_MAX];
    path_in(model, sizeof model, path, "model.h5");
    snprintf(detail, sizeof detail, "rc %d, %s", rc, chomp(msg));
    report(rc == 0 && one_line(msg, "step_00000500") && exists(sub) && exists(model),
           "prune refuses a directory holding a subdirectory, removes nothing of it", detail);
}

// One checkpoint per kind of damage, each verified on its own, then find_latest over all.
static void test_corruption(void) {
    char root[CKPT_PATH_MAX], d[CKPT_PATH_MAX], path[CKPT_PATH_MAX], why[512], detail[8400];
    char cmd[CKPT_PATH_MAX + 64], out[4096];
    snprintf(root, sizeof root, "%s/corrupt", dir);
    int made = 1;
    for (long s = 1; s <= 8; s++) made = made && make_ckpt(root, s, 0, 0) == 0;
    report(made, "eight checkpoints to damage (keep=0: no pruning)", NULL);

    struct {
        const char *what, *want1, *want2;
    } cases[] = {
        {"a flipped byte in model.h5", "model.h5", "SHA-256 mismatch"},
        {"optim.h5 truncated", "optim.h5", "SHA-256 mismatch"},
        {"MANIFEST deleted", "MANIFEST", "missing"},
        {"an extra file", "extra.bin", "not in MANIFEST"},
        {"shard_pp00_tp01.h5 deleted", "shard_pp00_tp01.h5", "missing"},
        {"MANIFEST cut short (no trailer)", "MANIFEST", "trailer"},
        {"MANIFEST line 2 garbled", "MANIFEST: line 2", "malformed"},
    };
    for (int k = 0; k < 7; k++) {
        step_dir(d, root, k + 1);
        switch (k) {
        case 0: {
            path_in(path, sizeof path, d, "model.h5");
            int fd = open(path, O_RDWR);
            unsigned char c = 0;
            if (fd >= 0 && pread(fd, &c, 1, 500) == 1) {
                c ^= 0x01;
                if (pwrite(fd, &c, 1, 500) != 1) c = 0;
            }
            if (fd >= 0) close(fd);
            break;
        }
        case 1:
            path_in(path, sizeof path, d, "optim.h5");
            if (truncate(path, 2000) != 0) perror(path);
            break;
        case 2:
            path_in(path, sizeof path, d, "MANIFEST");
            unlink(path);
            break;
        case 3:
            path_in(path, sizeof path, d, "extra.bin");
            write_text(path, "not listed");
            break;
        case 4:
            path_in(path, sizeof path, d, "shard_pp00_tp01.h5");
            unlink(path);
            break;
        case 5:   // drop the trailer: as if the write stopped one line short
        case 6: { // replace line 2 by something sha256sum would call improperly formatted
            char text[4096];
            path_in(path, sizeof path, d, "MANIFEST");
            long n = read_text(path, text, sizeof text);
            if (n > 0 && k == 5) {
                char *last = text + n - 1;
                *last = '\0';
                char *nl = strrchr(text, '\n');
                if (nl) nl[1] = '\0';
            } else if (n > 0) {
                char *l2 = strchr(text, '\n') + 1;
                char *l3 = strchr(l2, '\n');
                memmove(l2 + 8, l3, strlen(l3) + 1);
                memcpy(l2, "garbage!", 8);
            }
            write_text(path, text);
            break;
        }
        }
        int rc = ckpt_verify(d, why, sizeof why);
        char name[128];
        snprintf(name, sizeof name, "verify detects %s", cases[k].what);
        snprintf(detail, sizeof detail, "rc %d, \"%s\"", rc, why);
        report(rc == 2 && strstr(why, cases[k].want1) && strstr(why, cases[k].want2) && !strchr(why, '\n'),
               name, detail);
        if (k == 0) {   // the independent tool agrees
            snprintf(cmd, sizeof cmd, "cd '%s' && sha256sum --quiet -c MANIFEST 2>&1", d);
            int status = shell(cmd, out, sizeof out);
            snprintf(detail, sizeof detail, "status %d: %s", status, chomp(out));
            report(status != 0 && strstr(out, "model.h5"), "sha256sum -c also fails on the flipped byte", detail);
        }
    }
    // step 8 is good; latest names it. Point latest at the damaged step 7: find_latest must
    // report 7 once and fall back past 6..1 (each reported) to... 8, the highest valid.
    path_in(path, sizeof path, root, "latest");
    write_text(path, "step_00000007\n");
    long step = -1;
    char found[CKPT_PATH_MAX] = "";
    capture_begin();
    int rc = ckpt_find_latest(root, found, sizeof found, &step);
    const char *msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, step %ld, stderr: %s", rc, step, chomp(msg));
    report(rc == 0 && step == 8 && count_lines(msg) == 1 && strstr(msg, "step_00000007") &&
           strstr(msg, "MANIFEST: line 2 malformed; skipped"),
           "latest naming a bad checkpoint: reported once, the newest valid one found", detail);

    // Damage 8 too: every candidate fails, each reported once, rc 1.
    step_dir(d, root, 8);
    path_in(path, sizeof path, d, "model.h5");
    write_text(path, "replaced");
    capture_begin();
    rc = ckpt_find_latest(root, found, sizeof found, &step);
    msg = capture_end();
    int skipped = 0;
    for (const char *p = msg; (p = strstr(p, "; skipped\n")); p++) skipped++;
    snprintf(detail, sizeof detail, "rc %d, %d lines, %d skipped", rc, count_lines(msg), skipped);
    report(rc == 1 && count_lines(msg) == 8 && skipped == 8,
           "no valid checkpoint: each of the 8 reported once, rc 1", detail);
}

// latest pointing at a missing directory, a malformed latest, no latest, a crash before
// the rename, a stale .tmp directory; the root missing altogether.
static void test_find_latest(void) {
    char root[CKPT_PATH_MAX], path[CKPT_PATH_MAX], found[CKPT_PATH_MAX], want[CKPT_PATH_MAX];
    char latest[CKPT_PATH_MAX], detail[8400];
    snprintf(root, sizeof root, "%s/fallback", dir);
    int made = make_ckpt(root, 100, 3, 0) == 0 && make_ckpt(root, 200, 3, 0) == 0;
    report(made, "two checkpoints, steps 100 and 200", NULL);
    path_in(latest, sizeof latest, root, "latest");
    long step = -1;

    write_text(latest, "step_00000300\n");
    capture_begin();
    int rc = ckpt_find_latest(root, found, sizeof found, &step);
    const char *msg = capture_end();
    step_dir(want, root, 200);
    snprintf(detail, sizeof detail, "rc %d, step %ld, stderr: %s", rc, step, chomp(msg));
    report(rc == 0 && step == 200 && !strcmp(found, want) && one_line(msg, "step_00000300") &&
           strstr(msg, "skipped"), "latest naming a missing directory: reported, falls back to 200", detail);

    write_text(latest, "step_2\n");
    capture_begin();
    rc = ckpt_find_latest(root, found, sizeof found, &step);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, step %ld, stderr: %s", rc, step, chomp(msg));
    report(rc == 0 && step == 200 && one_line(msg, "latest") && strstr(msg, "malformed"),
           "malformed latest: reported, the scan finds 200", detail);

    unlink(latest);
    capture_begin();
    rc = ckpt_find_latest(root, found, sizeof found, &step);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, step %ld, stderr: %s", rc, step, chomp(msg));
    report(rc == 0 && step == 200 && !msg[0], "no latest: the scan finds 200 quietly", detail);
    write_text(latest, "step_00000200\n");

    // Crash simulation: step 300 written into its tmp directory, no MANIFEST, no rename.
    char tmp[CKPT_PATH_MAX];
    rc = ckpt_begin(root, 300, tmp, sizeof tmp);
    path_in(path, sizeof path, tmp, "model.h5");
    write_text(path, "the first half of a model");
    capture_begin();
    rc = ckpt_find_latest(root, found, sizeof found, &step);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, step %ld, stderr: %s", rc, step, chomp(msg));
    report(rc == 0 && step == 200 && !msg[0], "crash before the rename: the .tmp ignored quietly, 200 found",
           detail);

    // The same with a MANIFEST written (crash between manifest and rename): still a .tmp.
    ckpt_manifest_write(tmp);
    capture_begin();
    rc = ckpt_find_latest(root, found, sizeof found, &step);
    msg = capture_end();
    report(rc == 0 && step == 200 && !msg[0], "crash after MANIFEST, before the rename: 200 found", NULL);

    rc = ckpt_begin(root, 300, tmp, sizeof tmp);
    int empty = 1;
    struct stat st;
    path_in(path, sizeof path, tmp, "model.h5");
    empty = !exists(path);
    path_in(path, sizeof path, tmp, "MANIFEST");
    empty = empty && !exists(path);
    report(rc == 0 && empty && stat(tmp, &st) == 0 && S_ISDIR(st.st_mode),
           "begin removes the stale tmp and starts empty", NULL);
    rmdir(tmp);

    // Crash between the directory rename and the pointer: a valid step 300 exists but
    // latest still names 200; latest wins (the header's rule), quietly.
    rc = make_ckpt(root, 300, 3, 0);
    write_text(latest, "step_00000200\n");
    capture_begin();
    rc = ckpt_find_latest(root, found, sizeof found, &step);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, step %ld, stderr: %s", rc, step, chomp(msg));
    report(rc == 0 && step == 200 && !msg[0], "crash before latest moved: latest (200) is used", detail);

    // A committed directory without MANIFEST (someone moved a .tmp by hand): skipped.
    step_dir(path, root, 400);
    mkdir(path, 0777);
    unlink(latest);
    capture_begin();
    rc = ckpt_find_latest(root, found, sizeof found, &step);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, step %ld, stderr: %s", rc, step, chomp(msg));
    report(rc == 0 && step == 300 && one_line(msg, "step_00000400: MANIFEST: missing; skipped"),
           "a step directory without MANIFEST: reported, 300 found", detail);

    // Too small an output buffer is an error, not a crash.
    char small[8];
    capture_begin();
    rc = ckpt_find_latest(root, small, sizeof small, &step);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, stderr: %s", rc, chomp(msg));
    report(rc == 2 && count_lines(msg) >= 1, "find_latest with a too small buffer: rc 2", detail);

    snprintf(path, sizeof path, "%s/no/such/root", dir);
    capture_begin();
    rc = ckpt_find_latest(path, found, sizeof found, &step);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, stderr: %s", rc, chomp(msg));
    report(rc == 1 && !msg[0], "a root that does not exist: rc 1, quietly", detail);

    snprintf(path, sizeof path, "%s/empty_root", dir);
    mkdir(path, 0777);
    capture_begin();
    rc = ckpt_find_latest(path, found, sizeof found, &step);
    msg = capture_end();
    snprintf(detail, sizeof detail, "rc %d, stderr: %s", rc, chomp(msg));
    report(rc == 1 && !msg[0], "an empty root: rc 1, quietly", detail);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/anvil_ckpt_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_sha256_vectors();
    test_sha256_file();
    test_paths();
    test_cycle();
    test_prune();
    test_corruption();
    test_find_latest();
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (failures) printf("%d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
