// tests/unit/test_loader.c: token shards, the loader's sample stream, the byte
// tokenizer and `prepare text`, checked against values the test computes itself.
//
// Three shards of different sizes and layouts are written to a mkdtemp directory (an
// llm.c uint16 shard, an anvil uint32 shard, an anvil uint16 shard, deliberately
// created out of name order). The expected windows are cut from the raw token arrays
// here, independently of the loader's prefix sums, and every loader result is matched
// against them: sequential order must be exactly that list; random order must be a
// permutation per epoch that depends on the seed and nothing else; and a stream read
// in chunks, then resumed, must equal a fresh loader reading the same positions.
// Every kind of bad file must give return code 2 and exactly one "anvil: " line on
// stderr, never a crash. Prints one line per check; exits 1 if any failed.
#include "data/data.h"
#include "tests/unit/capture.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;
static char dir[64];   // the mkdtemp directory

static void report(int ok, const char *name, const char *detail) {
    printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name, detail && *detail ? ": " : "",
           detail ? detail : "");
    if (!ok) failures++;
}

static char *path_in(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}


// Whether msg is one line "anvil: ...\n" containing want (if given).
static int one_line(const char *msg, const char *want) {
    size_t n = strlen(msg);
    return n > 7 && !strncmp(msg, "anvil: ", 7) && msg[n - 1] == '\n' &&
           strchr(msg, '\n') == msg + n - 1 && (!want || strstr(msg, want));
}

// Check that rc is 2 and exactly one message line naming `want` was printed.
static void expect_error(const char *name, int rc, const char *msg, const char *want) {
    char detail[4200];
    size_t n = strlen(msg);
    snprintf(detail, sizeof detail, "rc %d, %.*s", rc, (int)(n && msg[n - 1] == '\n' ? n - 1 : n),
             n ? msg : "(no message)");
    report(rc == 2 && one_line(msg, want), name, detail);
}

// ---- writing test shards ---------------------------------------------------------------

static void write_bytes(const char *path, const void *p, size_t n, const char *mode) {
    FILE *f = fopen(path, mode);
    if (!f || fwrite(p, 1, n, f) != n) {
        printf("FAIL cannot write test file %s\n", path);
        exit(1);
    }
    fclose(f);
}

// An llm.c shard: 256 int32 header, uint16 tokens. n_claimed goes in the header.
static void write_llmc(const char *path, const uint32_t *tok, int n, int n_claimed) {
    int32_t header[256] = {0};
    header[0] = (int32_t)SHARD_MAGIC_LLMC;
    header[1] = 1;
    header[2] = n_claimed;
    write_bytes(path, header, sizeof header, "wb");
    uint16_t *t16 = malloc((size_t)n * 2 + 2);
    for (int i = 0; i < n; i++) t16[i] = (uint16_t)tok[i];
    write_bytes(path, t16, (size_t)n * 2, "ab");
    free(t16);
}

// An anvil header with arbitrary fields (for the malformed cases).
static void write_header(const char *path, uint32_t magic, uint32_t version, uint32_t tb,
                         uint64_t n) {
    uint8_t h[SHARD_HEADER_BYTES] = {0};
    memcpy(h, &magic, 4);
    memcpy(h + 4, &version, 4);
    memcpy(h + 8, &tb, 4);
    memcpy(h + 16, &n, 8);
    write_bytes(path, h, sizeof h, "wb");
}

// ---- the expected sample list ------------------------------------------------------------

#define N_SHARDS 3
static const char *shard_name[N_SHARDS] = {"a_llmc.bin", "b_u32.bin", "c_u16.bin"};  // sorted
static const int shard_len[N_SHARDS] = {513, 777, 1001};
static uint32_t *raw[N_SHARDS];

static uint32_t *expect_win;   // (S, T+1) windows in sequential order
static int expect_S;

// Cut windows from the raw arrays: window w of a shard starts at w*T and must end
// inside it. Returns the count S.
static int build_expected(int T) {
    free(expect_win);
    int S = 0;
    for (int s = 0; s < N_SHARDS; s++)
        for (int w = 0; w * T + T < shard_len[s]; w++) S++;
    expect_win = malloc((size_t)S * (T + 1) * sizeof *expect_win);
    int k = 0;
    for (int s = 0; s < N_SHARDS; s++)
        for (int w = 0; w * T + T < shard_len[s]; w++, k++)
            for (int t = 0; t <= T; t++) expect_win[(size_t)k * (T + 1) + t] = raw[s][w * T + t];
    expect_S = S;
    return S;
}

// Which expected window equals got (T+1 tokens)? Returns its index, or -1.
static int which_window(const int32_t *got, int T) {
    for (int k = 0; k < expect_S; k++) {
        int t = 0;
        while (t <= T && (uint32_t)got[t] == expect_win[(size_t)k * (T + 1) + t]) t++;
        if (t > T) return k;
    }
    return -1;
}

// Fill [pos, pos + n) in chunks cycling through `chunks` (0-terminated). Returns rc.
static int fill_chunked(loader *L, uint64_t pos, int n, int32_t *out, const int *chunks) {
    int done = 0, c = 0;
    while (done < n) {
        int k = chunks[c] < n - done ? chunks[c] : n - done;
        int rc = loader_fill(L, pos + (uint64_t)done, k, out + (size_t)done * (L->T + 1));
        if (rc) return rc;
        done += k;
        if (!chunks[++c]) c = 0;
    }
    return 0;
}

static char patterns[512];

// ---- (a) sequential ------------------------------------------------------------------

static void check_sequential(void) {
    static const int Ts[] = {1, 7, 16, 64};
    static const int chunks[] = {1, 2, 3, 5, 8, 13, 0};
    for (size_t ti = 0; ti < sizeof Ts / sizeof *Ts; ti++) {
        int T = Ts[ti];
        int S = build_expected(T);
        loader L;
        int rc = loader_init(&L, patterns, "data.train", T, 0, 0, 0);
        int n = 3 * S + 11;   // three epochs and a bit
        int32_t *got = malloc((size_t)n * (T + 1) * sizeof *got);
        int ok = rc == 0 && L.n_shards == N_SHARDS && L.n_samples == (uint64_t)S &&
                 fill_chunked(&L, 0, n, got, chunks) == 0;
        for (int p = 0; ok && p < n; p++)
            for (int t = 0; t <= T; t++)
                if ((uint32_t)got[(size_t)p * (T + 1) + t] !=
                    expect_win[(size_t)(p % S) * (T + 1) + t]) { ok = 0; break; }
        char name[96], detail[96];
        snprintf(name, sizeof name, "(a) sequential order, T=%d", T);
        snprintf(detail, sizeof detail, "S=%d, 3 shards, %d positions over 4 epochs", S, n);
        report(ok, name, detail);
        free(got);
        loader_free(&L);
    }
}

// ---- (b) random order ----------------------------------------------------------------

// The order (sample indices) of epoch e for seed, S entries into order. Returns 0 if
// every window was recognised.
static int epoch_order(unsigned long long seed, int epoch, int T, int *order) {
    loader L;
    if (loader_init(&L, patterns, "data.train", T, 1, seed, 0)) return -1;
    int S = (int)L.n_samples;
    int32_t *got = malloc((size_t)S * (T + 1) * sizeof *got);
    int rc = loader_fill(&L, (uint64_t)epoch * S, S, got);
    for (int i = 0; rc == 0 && i < S; i++)
        if ((order[i] = which_window(got + (size_t)i * (T + 1), T)) < 0) rc = -1;
    free(got);
    loader_free(&L);
    return rc;
}

// The shuffle as docs/formats.md specifies it, written out again here so that a change
// to the loader's order (which would silently change every run's data order) fails.
static uint64_t ref_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void ref_permutation(unsigned long long seed, uint64_t epoch, int S, int *perm) {
    uint64_t state = ref_mix(seed ^ ref_mix(epoch ^ 0x616E76696C646174ull));
    for (int i = 0; i < S; i++) perm[i] = i;
    for (int i = S - 1; i > 0; i--) {
        uint64_t bound = (uint64_t)i + 1, r;
        do {
            state += 0x9E3779B97F4A7C15ull;
            r = ref_mix(state);
        } while (r < (0 - bound) % bound);
        int j = (int)(r % bound), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static void check_random(void) {
    const int T = 16;
    int S = build_expected(T);
    int *o[5], *seen = calloc((size_t)S, sizeof *seen);
    for (int i = 0; i < 5; i++) o[i] = malloc((size_t)S * sizeof *o[i]);
    // o[0], o[1], o[2]: seed 1234 epochs 0, 1, 2; o[3]: seed 1234 epoch 0 again,
    // o[4]: seed 1235 epoch 0.
    int ok = !epoch_order(1234, 0, T, o[0]) && !epoch_order(1234, 1, T, o[1]) &&
             !epoch_order(1234, 2, T, o[2]) && !epoch_order(1234, 0, T, o[3]) &&
             !epoch_order(1235, 0, T, o[4]);
    report(ok, "(b) random order: every window is one of the expected windows", NULL);
    int perm_ok = ok;
    for (int e = 0; ok && e < 3; e++) {
        memset(seen, 0, (size_t)S * sizeof *seen);
        for (int i = 0; i < S; i++) seen[o[e][i]]++;
        for (int i = 0; i < S; i++) perm_ok &= seen[i] == 1;
    }
    report(perm_ok, "(b) random order: each sample exactly once per epoch", "epochs 0, 1, 2");
    int identity = 1, same01 = 1, same_seed = 1, same_other = 1;
    for (int i = 0; i < S; i++) {
        identity &= o[0][i] == i;
        same01 &= o[0][i] == o[1][i];
        same_seed &= o[0][i] == o[3][i];
        same_other &= o[0][i] == o[4][i];
    }
    report(ok && !identity, "(b) random order is not the sequential order", NULL);
    report(ok && !same01, "(b) consecutive epochs have different orders", NULL);
    report(ok && same_seed, "(b) same seed gives the same order", NULL);
    report(ok && !same_other, "(b) different seeds give different orders", "1234 vs 1235");
    int ref_ok = ok;
    for (int e = 0; e < 3; e++) {
        ref_permutation(1234, (uint64_t)e, S, seen);
        for (int i = 0; i < S; i++) ref_ok &= o[e][i] == seen[i];
    }
    report(ref_ok, "(b) random order is the shuffle docs/formats.md specifies", "epochs 0, 1, 2");
    for (int i = 0; i < 5; i++) free(o[i]);
    free(seen);
}

// ---- (c) restart ------------------------------------------------------------------------

static void check_restart(void) {
    const int T = 16;
    int S = build_expected(T);
    static const int pre_chunks[] = {1, 3, 7, 2, 13, 0};
    static const int post_chunks[] = {5, 1, 11, 4, 64, 0};
    const int ks[] = {0, 5, S + 37, 2 * S - 3};
    const int m = 2 * S + 11;   // crosses at least two epoch boundaries
    for (int random = 0; random <= 1; random++)
        for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
            int k = ks[ki];
            loader A, B;
            int32_t *pre = malloc(((size_t)k + 1) * (T + 1) * sizeof *pre);
            int32_t *a = malloc((size_t)m * (T + 1) * sizeof *a);
            int32_t *b = malloc((size_t)m * (T + 1) * sizeof *b);
            int ok = !loader_init(&A, patterns, "data.train", T, random, 99, 0) &&
                     !loader_init(&B, patterns, "data.train", T, random, 99, 0) &&
                     !fill_chunked(&A, 0, k, pre, pre_chunks) &&
                     !fill_chunked(&A, (uint64_t)k, m, a, post_chunks) &&
                     !loader_fill(&B, (uint64_t)k, m, b) &&
                     !memcmp(a, b, (size_t)m * (T + 1) * sizeof *a);
            // Going back to an earlier epoch after a later one regenerates it exactly.
            ok = ok && !loader_fill(&A, (uint64_t)k + 3, 1, a) &&
                 !memcmp(a, b + 3 * (T + 1), (T + 1) * sizeof *a);
            char name[128], detail[96];
            snprintf(name, sizeof name, "(c) restart, %s order, k=%d (epoch %d + %d)",
                     random ? "random" : "sequential", k, k / S, k % S);
            snprintf(detail, sizeof detail, "[k, k+%d) chunked == fresh loader in one call", m);
            report(ok, name, detail);
            loader_free(&A);
            loader_free(&B);
            free(pre);
            free(a);
            free(b);
        }
}

// ---- (d) bad inputs ---------------------------------------------------------------------

static void expect_bad_shard(const char *name, const char *file, const char *want) {
    char path[256], pat[sizeof patterns + 260];
    path_in(path, sizeof path, file);
    shard s;
    capture_begin();
    int rc = shard_open(&s, path);
    const char *msg = capture_end();
    char label[160];
    snprintf(label, sizeof label, "(d) %s: shard_open", name);
    expect_error(label, rc, msg, want ? want : path);
    shard_close(&s);   // harmless after a failed open
    // The same file among good ones fails the loader too.
    snprintf(pat, sizeof pat, "%s,%s", patterns, path);
    loader L;
    capture_begin();
    rc = loader_init(&L, pat, "data.train", 16, 1, 1, 0);
    msg = capture_end();
    snprintf(label, sizeof label, "(d) %s: loader_init", name);
    expect_error(label, rc, msg, path);
    loader_free(&L);
}

static void check_bad_inputs(void) {
    char path[256];
    uint32_t tok[100];
    for (int i = 0; i < 100; i++) tok[i] = (uint32_t)i;

    // Truncated: a valid shard cut short, by one byte and by whole tokens.
    path_in(path, sizeof path, "bad_trunc.bin");
    shard_write(path, tok, 100, 2);
    if (truncate(path, SHARD_HEADER_BYTES + 200 - 1)) report(0, "truncate", path);
    expect_bad_shard("truncated by one byte", "bad_trunc.bin", "truncated");
    path_in(path, sizeof path, "bad_trunc4.bin");
    shard_write(path, tok, 100, 4);
    if (truncate(path, SHARD_HEADER_BYTES + 4 * 90)) report(0, "truncate", path);
    expect_bad_shard("truncated by ten tokens", "bad_trunc4.bin", "truncated");
    // Trailing garbage.
    path_in(path, sizeof path, "bad_trail.bin");
    shard_write(path, tok, 100, 2);
    write_bytes(path, "junk!", 5, "ab");
    expect_bad_shard("trailing bytes", "bad_trail.bin", "trailing");
    // Wrong magic: the message shows the magic found in hex.
    path_in(path, sizeof path, "bad_magic.bin");
    write_header(path, 0x12345678u, 1, 2, 0);
    expect_bad_shard("wrong magic", "bad_magic.bin", "0x12345678");
    // Shorter than a header.
    path_in(path, sizeof path, "bad_short.bin");
    write_bytes(path, "ATOK", 4, "wb");
    expect_bad_shard("shorter than a header", "bad_short.bin", "shorter");
    // Empty file.
    path_in(path, sizeof path, "bad_empty.bin");
    write_bytes(path, "", 0, "wb");
    expect_bad_shard("empty file", "bad_empty.bin", "shorter");
    // Unsupported version and token size.
    path_in(path, sizeof path, "bad_version.bin");
    write_header(path, SHARD_MAGIC, 9, 2, 0);
    expect_bad_shard("unsupported version", "bad_version.bin", "version 9");
    path_in(path, sizeof path, "bad_dtype.bin");
    write_header(path, SHARD_MAGIC, 1, 3, 0);
    expect_bad_shard("unsupported token_bytes", "bad_dtype.bin", "token_bytes 3");
    // A header claiming so many tokens that n * token_bytes overflows.
    path_in(path, sizeof path, "bad_huge.bin");
    write_header(path, SHARD_MAGIC, 1, 4, UINT64_MAX / 2);
    expect_bad_shard("token count overflowing the size", "bad_huge.bin", "truncated");
    // llm.c shards: truncated payload, header shorter than 1024 bytes.
    path_in(path, sizeof path, "bad_llmc.bin");
    write_llmc(path, tok, 50, 60);
    expect_bad_shard("llm.c shard truncated", "bad_llmc.bin", "truncated");
    path_in(path, sizeof path, "bad_llmc_short.bin");
    int32_t h[20] = {(int32_t)SHARD_MAGIC_LLMC, 1, 0};
    write_bytes(path, h, sizeof h, "wb");
    expect_bad_shard("llm.c header cut short", "bad_llmc_short.bin", "llm.c");
    // A directory where a shard should be.
    path_in(path, sizeof path, "dir_shard.bin");
    mkdir(path, 0700);
    expect_bad_shard("a directory", "dir_shard.bin", "regular file");
    // A missing file.
    expect_bad_shard("missing file", "no_such_file.bin", "no_such_file.bin");

    // Loader-level errors naming the key.
    loader L;
    const char *msg;
    int rc;
    char pat[300];
    snprintf(pat, sizeof pat, "%s/zzz_*.bin", dir);
    capture_begin();
    rc = loader_init(&L, pat, "data.train", 16, 1, 1, 0);
    msg = capture_end();
    expect_error("(d) glob matching nothing", rc, msg, "data.train");
    report(strstr(msg, pat) != NULL, "(d) glob message names the pattern", NULL);
    capture_begin();
    rc = loader_init(&L, " , ", "data.val", 16, 1, 1, 0);
    msg = capture_end();
    expect_error("(d) empty file list", rc, msg, "data.val");
    path_in(path, sizeof path, "tiny.bin");
    shard_write(path, tok, 17, 2);   // 17 tokens: one window of T=16, none of T=17
    capture_begin();
    rc = loader_init(&L, path, "data.train", 17, 1, 1, 0);
    msg = capture_end();
    expect_error("(d) no full window in any shard", rc, msg, "data.train");
    rc = loader_init(&L, path, "data.train", 16, 1, 1, 0);
    report(rc == 0 && L.n_samples == 1, "(d) exactly one window of T+1 tokens is accepted", NULL);
    loader_free(&L);
    capture_begin();
    rc = loader_init(&L, path, "data.train", 0, 1, 1, 0);
    msg = capture_end();
    expect_error("(d) T=0 refused", rc, msg, "data.train");
    loader_free(&L);   // harmless after a failed init

    // shard_write failures leave nothing behind.
    char bad[300], tmp[310];
    snprintf(bad, sizeof bad, "%s/no_such_dir/x.bin", dir);
    capture_begin();
    rc = shard_write(bad, tok, 10, 2);
    msg = capture_end();
    expect_error("(d) shard_write into a missing directory", rc, msg, bad);
    path_in(path, sizeof path, "too_wide.bin");
    uint32_t wide[3] = {1, 70000, 2};
    capture_begin();
    rc = shard_write(path, wide, 3, 2);
    msg = capture_end();
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    expect_error("(d) shard_write of a token too wide for uint16", rc, msg, "70000");
    report(access(path, F_OK) != 0 && access(tmp, F_OK) != 0,
           "(d) failed shard_write leaves neither file nor tmp", NULL);
}

// ---- (e) vocabulary limit ---------------------------------------------------------------

static void check_vocab(void) {
    const int T = 16;
    char path[256];
    int32_t out[6 * 17];
    loader L;
    // b_u32 holds 70000 + 3i: with limit 70300, token offset 100 is the first bad one,
    // and it sits in window 6 (tokens 96..112); windows 0..5 are fine.
    path_in(path, sizeof path, "b_u32.bin");
    int rc = loader_init(&L, path, "data.train", T, 0, 0, 70300);
    int ok = rc == 0 && loader_fill(&L, 0, 6, out) == 0;
    report(ok, "(e) tokens below vocab_limit pass", "windows 0..5");
    capture_begin();
    rc = loader_fill(&L, 6, 1, out);
    const char *msg = capture_end();
    expect_error("(e) token >= vocab_limit reported", rc, msg, "offset 100");
    report(strstr(msg, path) != NULL, "(e) the message names the shard", NULL);
    loader_free(&L);
    // With no limit, a uint32 token that does not fit int32 is refused all the same.
    path_in(path, sizeof path, "huge_token.bin");
    uint32_t t[20] = {0};
    t[5] = 0x80000000u;
    shard_write(path, t, 20, 4);
    rc = loader_init(&L, path, "data.train", T, 0, 0, 0);
    capture_begin();
    int rc2 = loader_fill(&L, 0, 1, out);
    msg = capture_end();
    expect_error("(e) token >= 2^31 refused with vocab_limit 0", rc == 0 ? rc2 : -1, msg,
                 "offset 5");
    loader_free(&L);
}

// ---- (f) byte tokenizer -----------------------------------------------------------------

static void check_byte_tokenizer(void) {
    const char text[] = "h\xC3\xA9llo\n\xFF";
    size_t n = sizeof text - 1;
    uint32_t ids[16];
    int ok = byte_tokenizer_encode(text, n, ids) == n;
    char out[16], back[64] = "";
    for (size_t i = 0; ok && i < n; i++) {
        ok &= ids[i] == (unsigned char)text[i];
        strcat(back, byte_tokenizer_decode(ids[i], out));
    }
    report(ok && !strcmp(back, text), "(f) byte tokenizer round-trips bytes", NULL);
    report(!strcmp(byte_tokenizer_decode(BYTE_TOKENIZER_EOT, out), "\n<|endoftext|>\n") &&
           !strcmp(byte_tokenizer_decode(BYTE_TOKENIZER_VOCAB, out), "\xEF\xBF\xBD") &&
           !strcmp(byte_tokenizer_decode(UINT32_MAX, out), "\xEF\xBF\xBD"),
           "(f) EOT and out-of-range ids decode as documented", NULL);
}

// ---- (g) prepare text -------------------------------------------------------------------

// Concatenated tokens of DIR/SPLIT_000000.bin, ... (count files). Returns the total
// tokens, or -1 if a shard is missing or bad.
static long read_split(const char *out, const char *split, int files, uint32_t *buf) {
    long n = 0;
    for (int i = 0; i < files; i++) {
        char p[300];
        snprintf(p, sizeof p, "%s/%s_%06d.bin", out, split, i);
        shard s;
        if (shard_open(&s, p)) return -1;
        for (uint64_t k = 0; k < s.n_tokens; k++) buf[n++] = shard_token(&s, k);
        shard_close(&s);
    }
    return n;
}

static int exists(const char *out, const char *split, int i) {
    char p[300];
    snprintf(p, sizeof p, "%s/%s_%06d.bin", out, split, i);
    return access(p, F_OK) == 0;
}

// Expected token stream of the given documents, each followed by EOT.
static long expect_docs(uint32_t *buf, const char *const *docs, int n) {
    long k = 0;
    for (int d = 0; d < n; d++) {
        for (const char *c = docs[d]; *c; c++) buf[k++] = (unsigned char)*c;
        buf[k++] = BYTE_TOKENIZER_EOT;
    }
    return k;
}

static int same(const uint32_t *a, long na, const uint32_t *b, long nb) {
    return na == nb && na >= 0 && !memcmp(a, b, (size_t)na * sizeof *a);
}

static void check_prepare(void) {
    char f1[256], f2[256], j1[256], j2[256], out[256];
    path_in(f1, sizeof f1, "fort1");
    path_in(f2, sizeof f2, "fort2");
    path_in(out, sizeof out, "prep_out");
    const char fort1[] = "one\n%\ntwo two\n%\n  \n%\nthree\r\n%\r\n";
    write_bytes(f1, fort1, sizeof fort1 - 1, "wb");
    write_bytes(f2, "hello world", 11, "wb");
    uint32_t got[256], want[256];

    // 4 documents ("one\n", "two two\n", "three\r\n" and "hello world"; the blank one
    // is dropped); val-frac 0.34 holds out round(1.36) = 1, the last one. Train is 21
    // tokens: shards of 8, 8, 5. Val is 12 tokens: 8 and 4.
    char *argv1[] = {"text", "--out", out, "--doc-sep", "%", "--val-frac=0.34",
                     "--shard-tokens", "8", f1, f2};
    int rc = prepare_main(10, argv1);
    static const char *const train_docs[] = {"one\n", "two two\n", "three\r\n"};
    static const char *const val_docs[] = {"hello world"};
    long nw = expect_docs(want, train_docs, 3), ng = read_split(out, "train", 3, got);
    report(rc == 0 && same(got, ng, want, nw) && !exists(out, "train", 3),
           "(g) prepare --doc-sep: train shards hold documents + EOT", "3 shards of <= 8");
    nw = expect_docs(want, val_docs, 1);
    ng = read_split(out, "val", 2, got);
    report(rc == 0 && same(got, ng, want, nw) && !exists(out, "val", 2),
           "(g) prepare: the held-out document is in val", "2 shards");

    // Re-run with larger shards: one train shard, and the stale ones are gone.
    char *argv2[] = {"text", "--out", out, "--doc-sep", "%", "--val-frac", "0.34", f1, f2};
    rc = prepare_main(9, argv2);
    nw = expect_docs(want, train_docs, 3);
    ng = read_split(out, "train", 1, got);
    report(rc == 0 && same(got, ng, want, nw) && !exists(out, "train", 1) &&
           !exists(out, "val", 1), "(g) prepare re-run replaces shards, removes stale ones", NULL);

    // Without --doc-sep each file is one document.
    char *argv3[] = {"text", "--out", out, "--val-frac", "0", f2, f1};
    rc = prepare_main(7, argv3);
    const char *const whole[] = {"hello world", fort1};
    nw = expect_docs(want, whole, 2);
    ng = read_split(out, "train", 1, got);
    report(rc == 0 && same(got, ng, want, nw) && !exists(out, "val", 0),
           "(g) prepare: a file is one document by default; --val-frac 0 holds none out", NULL);

    // JSONL with every escape, a surrogate pair, nested fields and a blank line.
    path_in(j1, sizeof j1, "data.jsonl");
    const char jsonl[] =
        "{\"id\": 1, \"text\": \"a\\nb\\u00e9\\ud83d\\ude00\\\"\\\\\\/\\t\\u20AC\", "
        "\"meta\": {\"x\": [1, -2.5e-3, true, null, {\"text\": 0}], \"s\": \"\\\"}\"}}\n"
        "\n"
        "  {\"text\": \"second\\r\"}  \r\n"
        "{\"text\": \"lone \\udc00 surrogate\", \"text2\": []}";
    write_bytes(j1, jsonl, sizeof jsonl - 1, "wb");
    char *argv4[] = {"text", "--jsonl", "--out", out, "--val-frac", "0", j1};
    rc = prepare_main(7, argv4);
    const char *const jdocs[] = {"a\nb\xC3\xA9\xF0\x9F\x98\x80\"\\/\t\xE2\x82\xAC", "second\r",
                                 "lone \xEF\xBF\xBD surrogate"};
    nw = expect_docs(want, jdocs, 3);
    ng = read_split(out, "train", 1, got);
    report(rc == 0 && same(got, ng, want, nw), "(g) prepare --jsonl decodes escapes to UTF-8",
           "\\n \\\" \\\\ \\/ \\t \\u00e9 \\u20AC, a surrogate pair, a lone surrogate");

    // Errors: a malformed line names file:line; a missing input names the file.
    path_in(j2, sizeof j2, "bad.jsonl");
    const char bad_jsonl[] = "{\"text\": \"ok\"}\n{\"text\": \"abc}\n";
    write_bytes(j2, bad_jsonl, sizeof bad_jsonl - 1, "wb");
    char *argv5[] = {"text", "--jsonl", "--out", out, j2};
    capture_begin();
    rc = prepare_main(5, argv5);
    const char *msg = capture_end();
    char want_loc[300];
    snprintf(want_loc, sizeof want_loc, "%s:2:", j2);
    expect_error("(g) prepare: malformed JSONL names file:line", rc, msg, want_loc);
    write_bytes(j2, "{\"title\": \"x\"}\n", strlen("{\"title\": \"x\"}\n"), "wb");
    capture_begin();
    rc = prepare_main(5, argv5);
    msg = capture_end();
    expect_error("(g) prepare: a JSONL record without \"text\"", rc, msg, "text");
    path_in(j2, sizeof j2, "missing.txt");
    char *argv6[] = {"text", "--out", out, f1, j2};
    capture_begin();
    rc = prepare_main(5, argv6);
    msg = capture_end();
    expect_error("(g) prepare: missing input file", rc, msg, "missing.txt");
    char *argv7[] = {"binary", "--out", out, f1};
    capture_begin();
    rc = prepare_main(4, argv7);
    msg = capture_end();
    report(rc == 2 && strstr(msg, "binary"), "(g) prepare: unknown kind is a usage error", NULL);
    char *argv8[] = {"text", f1};
    capture_begin();
    rc = prepare_main(2, argv8);
    msg = capture_end();
    report(rc == 2 && strstr(msg, "--out"), "(g) prepare: --out is required", NULL);
    char *argv9[] = {"text", "--out", out, "--val-frac", "1.5", f1};
    capture_begin();
    rc = prepare_main(6, argv9);
    msg = capture_end();
    report(rc == 2 && strstr(msg, "val-frac"), "(g) prepare: --val-frac out of range", NULL);
}

// ---- main -------------------------------------------------------------------------------

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);   // every check line survives a crash
    strcpy(dir, "/tmp/anvil_test_loader_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }

    // Distinct tokens in every shard, so a window identifies itself.
    for (int s = 0; s < N_SHARDS; s++) raw[s] = malloc((size_t)shard_len[s] * sizeof *raw[s]);
    for (int i = 0; i < shard_len[0]; i++) raw[0][i] = 40000u + (uint32_t)i;
    for (int i = 0; i < shard_len[1]; i++) raw[1][i] = 70000u + 3u * (uint32_t)i;
    for (int i = 0; i < shard_len[2]; i++) raw[2][i] = (7919u * (uint32_t)i + 13u) & 0xFFFF;
    char path[256];
    int rc = shard_write(path_in(path, sizeof path, shard_name[2]), raw[2], shard_len[2], 2);
    rc |= shard_write(path_in(path, sizeof path, shard_name[1]), raw[1], shard_len[1], 4);
    write_llmc(path_in(path, sizeof path, shard_name[0]), raw[0], shard_len[0], shard_len[0]);
    report(rc == 0, "shard_write of the test shards", NULL);
    // A glob over all three plus one of them again (de-duplicated), out of order.
    snprintf(patterns, sizeof patterns, "%s/c_u16.bin, %s/?_*.bin,%s/a_llmc.bin", dir, dir, dir);

    shard s;
    int ok = !shard_open(&s, path_in(path, sizeof path, shard_name[0])) && s.token_bytes == 2 &&
             s.n_tokens == (uint64_t)shard_len[0] && shard_token(&s, 7) == raw[0][7];
    shard_close(&s);
    report(ok, "llm.c uint16 shard opens with its token count", NULL);
    ok = !shard_open(&s, path_in(path, sizeof path, shard_name[1])) && s.token_bytes == 4 &&
         s.n_tokens == (uint64_t)shard_len[1] && shard_token(&s, 776) == raw[1][776];
    shard_close(&s);
    report(ok, "anvil uint32 shard opens with its token count", NULL);

    check_sequential();
    check_random();
    check_restart();
    check_bad_inputs();
    check_vocab();
    check_byte_tokenizer();
    check_prepare();

    for (int i = 0; i < N_SHARDS; i++) free(raw[i]);
    free(expect_win);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    printf("%s: %d failure%s\n", failures ? "FAIL" : "ok", failures, failures == 1 ? "" : "s");
    return failures ? 1 : 0;
}
