// tests/unit/test_crc32c.c: CRC-32C (checkpoint/crc32c.c) on both of its paths.
//
// The SSE4.2 path (where the CPU has it) and the portable one must each give RFC 3720
// B.4's values and those of a bit-at-a-time CRC written from the definition; they must
// agree with each other at every length 0..1000 from every misalignment 0..7, and around
// each multiple of the three-chain round (3 x 8 KiB, CRC32C_STREAM_BYTES in crc32c.c)
// where the code changes branch; a buffer cut into 1..20 pieces at random points must give
// the CRC of the whole. The first calls come from 8 OpenMP threads at once, so the table
// building races. Prints one line per check; exits 1 if any failed.
//
// `test_crc32c --bench` runs no checks: it prints each path's speed over 256 MiB and over
// 1 MiB from cache (medians of 5).
#include "checkpoint/crc32c.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// crc32c.c's three chains take 8 KiB each per round; lengths near multiples of this are
// where the rounds, the single-chain tail and the bytewise head meet.
#define ROUND_BYTES (3 * 8192)

static int failures;

static void report(int ok, const char *name, const char *detail) {
    printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name, detail && *detail ? ": " : "",
           detail ? detail : "");
    if (!ok) failures++;
}

static uint64_t rng_state = 0x243F6A8885A308D3u;   // fixed seed: failures reproduce

// splitmix64: fast, and good enough to make bytes no CRC path could special-case.
static uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static void fill_random(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(rng_next() >> 56);
}

// CRC-32C one bit at a time, as RFC 3720 defines it: no tables, no instruction.
static uint32_t crc_bitwise(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

// ---- paths ----------------------------------------------------------------------------------
//
// crc32c.c has two paths, SSE4.2 and portable; crc32c_force_portable picks one. Each test
// below runs on every path this CPU has, and puts the path's name in its lines.

static int have_fast;   // the CPU has the SSE4.2 path

static int n_paths(void) { return have_fast ? 2 : 1; }

// Path k (0: the run-time choice, 1: portable) for the CRCs that follow; its name.
static const char *use_path(int k) {
    crc32c_force_portable(k == 1);
    return k == 1 || !have_fast ? "portable" : "sse4.2";
}

// 1 if /proc/cpuinfo lists the sse4_2 flag (0 elsewhere, or if it cannot be read).
static int cpuinfo_has_sse42(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192];
    int has = 0;
    while (f && !has && fgets(line, sizeof line, f))
        if (!strncmp(line, "flags", 5) && strstr(line, " sse4_2")) has = 1;
    if (f) fclose(f);
    return has;
}

// ---- checks ---------------------------------------------------------------------------------

// Runs before any other call: 8 threads make their first calls at once (on the portable
// path, which needs every table), so a table read before it is built shows as a wrong CRC.
static void test_first_use_threads(void) {
    enum { N = 3 * ROUND_BYTES + 5, THREADS = 8 };
    static uint8_t buf[N];
    fill_random(buf, N);
    uint32_t want = crc_bitwise(buf, N), got[THREADS];
    crc32c_force_portable(1);
#pragma omp parallel for num_threads(THREADS) schedule(static, 1)
    for (int t = 0; t < THREADS; t++) got[t] = crc32c_update(0, buf, N);
    crc32c_force_portable(0);
    int bad = 0;
    for (int t = 0; t < THREADS; t++) bad += got[t] != want;
    char detail[96];
    snprintf(detail, sizeof detail, "%d of %d threads wrong (want %08x)", bad, THREADS, want);
    report(bad == 0, "crc32c first calls from 8 threads at once", detail);
}

static void test_cpu(void) {
    have_fast = crc32c_force_portable(0);
    int cpu = cpuinfo_has_sse42();
    char detail[128];
    snprintf(detail, sizeof detail, "/proc/cpuinfo sse4_2 %s, crc32c %s the SSE4.2 path",
             cpu ? "yes" : "no", have_fast ? "uses" : "does not use");
    report(!cpu || have_fast, "crc32c uses SSE4.2 where /proc/cpuinfo lists sse4_2", detail);
}

// RFC 3720 B.4, the "check" value of the CRC catalogues, and the empty input; each whole
// and a byte at a time.
static void test_vectors(void) {
    uint8_t zeros[32], ones[32], up[32], down[32];
    for (int i = 0; i < 32; i++) {
        zeros[i] = 0;
        ones[i] = 0xFF;
        up[i] = (uint8_t)i;
        down[i] = (uint8_t)(31 - i);
    }
    const struct { const char *name; const void *p; size_t n; uint32_t want; } v[] = {
        {"32 bytes of 0x00", zeros, 32, 0x8A9136AAu},
        {"32 bytes of 0xFF", ones, 32, 0x62A8AB43u},
        {"32 bytes 0x00..0x1F", up, 32, 0x46DD794Eu},
        {"32 bytes 0x1F..0x00", down, 32, 0x113FDB5Cu},
        {"\"123456789\"", "123456789", 9, 0xE3069283u},
        {"empty", "", 0, 0},
    };
    for (int k = 0; k < n_paths(); k++) {
        const char *path = use_path(k);
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
            uint32_t whole = crc32c_update(0, v[i].p, v[i].n), bytes = 0;
            for (size_t j = 0; j < v[i].n; j++) bytes = crc32c_update(bytes, (const uint8_t *)v[i].p + j, 1);
            char name[96], detail[96];
            snprintf(name, sizeof name, "crc32c [%s] %s", path, v[i].name);
            snprintf(detail, sizeof detail, "whole %08x, bytewise %08x, want %08x", whole, bytes, v[i].want);
            report(whole == v[i].want && bytes == v[i].want, name, detail);
        }
    }
    crc32c_force_portable(0);
}

static void test_hex(void) {
    char a[CRC32C_HEX_BYTES], b[CRC32C_HEX_BYTES], c[CRC32C_HEX_BYTES], detail[64];
    crc32c_hex(0xE3069283u, a);
    crc32c_hex(0x0000000Au, b);
    crc32c_hex(0xFFFFFFFFu, c);
    snprintf(detail, sizeof detail, "%s %s %s", a, b, c);
    report(!strcmp(a, "e3069283") && !strcmp(b, "0000000a") && !strcmp(c, "ffffffff"),
           "crc32c_hex as printf %08x", detail);
}

// Lengths where the SSE4.2 path changes branch: around 1, 2 and 5 rounds, with and without
// a single-chain tail, and 1 MiB reads.
static const size_t edge_lengths[] = {
    ROUND_BYTES - 9, ROUND_BYTES - 8, ROUND_BYTES - 1, ROUND_BYTES, ROUND_BYTES + 1,
    ROUND_BYTES + 7, ROUND_BYTES + 8, ROUND_BYTES + 9, 2 * ROUND_BYTES - 1, 2 * ROUND_BYTES,
    2 * ROUND_BYTES + 1, 5 * ROUND_BYTES + 17, (1u << 20) - 1, 1u << 20, (1u << 20) + 3,
    (3u << 20) + 13,
};
#define EDGE_MAX ((3u << 20) + 13 + 8)   // the longest edge length at misalignment 7

// Each path against the bit-at-a-time CRC: every length 0..300 (unaligned starts), and
// every edge length.
static void test_bitwise(uint8_t *buf) {
    for (int k = 0; k < n_paths(); k++) {
        const char *path = use_path(k);
        char name[96], detail[128] = "";
        int bad = 0;
        for (size_t n = 0; n <= 300 && !bad; n++) {
            const uint8_t *p = buf + 3 * n;
            uint32_t got = crc32c_update(0, p, n), want = crc_bitwise(p, n);
            if (got != want) {
                bad = 1;
                snprintf(detail, sizeof detail, "length %zu at offset %zu: %08x, want %08x", n, 3 * n, got, want);
            }
        }
        for (size_t i = 0; i < sizeof edge_lengths / sizeof edge_lengths[0] && !bad; i++) {
            size_t n = edge_lengths[i];
            uint32_t got = crc32c_update(0, buf + 1, n), want = crc_bitwise(buf + 1, n);
            if (got != want) {
                bad = 1;
                snprintf(detail, sizeof detail, "length %zu at offset 1: %08x, want %08x", n, got, want);
            }
        }
        snprintf(name, sizeof name, "crc32c [%s] == bit-at-a-time CRC, 0..300 bytes and edge lengths", path);
        report(!bad, name, detail);
    }
    crc32c_force_portable(0);
}

// SSE4.2 against portable: every length 0..1000 and every edge length, each from every
// misalignment 0..7.
static void test_paths_agree(uint8_t *buf) {
    const char *name = "crc32c sse4.2 == portable, lengths 0..1000 and edge lengths, misalignments 0..7";
    if (!have_fast) {
        report(1, name, "no SSE4.2 on this CPU: portable only");
        return;
    }
    size_t n_edge = sizeof edge_lengths / sizeof edge_lengths[0];
    char detail[128] = "";
    int bad = 0;
    for (size_t i = 0; i <= 1000 + n_edge && !bad; i++) {
        size_t n = i <= 1000 ? i : edge_lengths[i - 1001];
        for (int m = 0; m < 8 && !bad; m++) {
            const uint8_t *p = buf + m;   // buf is from malloc: p is m bytes past a multiple of 8
            use_path(0);
            uint32_t fast = crc32c_update(0, p, n);
            use_path(1);
            uint32_t slow = crc32c_update(0, p, n);
            if (fast != slow) {
                bad = 1;
                snprintf(detail, sizeof detail, "length %zu, misalignment %d: sse4.2 %08x, portable %08x",
                         n, m, fast, slow);
            }
        }
    }
    crc32c_force_portable(0);
    report(!bad, name, detail);
}

// A buffer cut at random points into 1..20 pieces gives the CRC of the whole, on each path.
static void test_streaming(uint8_t *buf) {
    for (int k = 0; k < n_paths(); k++) {
        const char *path = use_path(k);
        char name[96], detail[160] = "";
        int bad = 0;
        for (int trial = 0; trial < 300 && !bad; trial++) {
            // Half the trials short (pieces of a few bytes), half past several rounds.
            size_t n = (size_t)(rng_next() % (trial % 2 ? 8 * ROUND_BYTES : 200));
            size_t off = (size_t)(rng_next() % 64);
            int pieces = 1 + (int)(rng_next() % 20);
            size_t cut[21];   // sorted cut points: cut[0] = 0, cut[pieces] = n
            cut[0] = 0;
            cut[pieces] = n;
            for (int j = 1; j < pieces; j++) {
                size_t x = n ? (size_t)(rng_next() % (n + 1)) : 0, y = j;
                while (y > 1 && cut[y - 1] > x) { cut[y] = cut[y - 1]; y--; }   // insertion sort
                cut[y] = x;
            }
            uint32_t crc = 0, whole = crc32c_update(0, buf + off, n);
            for (int j = 0; j < pieces; j++) crc = crc32c_update(crc, buf + off + cut[j], cut[j + 1] - cut[j]);
            if (crc != whole) {
                bad = 1;
                snprintf(detail, sizeof detail, "length %zu at offset %zu in %d pieces: %08x, whole %08x",
                         n, off, pieces, crc, whole);
            }
        }
        snprintf(name, sizeof name, "crc32c [%s] 300 buffers in 1..20 random pieces == whole", path);
        report(!bad, name, detail);
    }
    crc32c_force_portable(0);
}

// crc32c_combine(crc(A), crc(B), |B|) == crc(A||B), for random cuts and for an empty
// side, from lengths of a few bytes to past several rounds.
static void test_combine(uint8_t *buf) {
    char detail[160] = "";
    int bad = 0;
    for (int trial = 0; trial < 300 && !bad; trial++) {
        size_t n = (size_t)(rng_next() % (trial % 2 ? 8 * ROUND_BYTES : 300));
        size_t cut = trial % 50 == 0 ? 0 : trial % 50 == 1 ? n : (n ? (size_t)(rng_next() % (n + 1)) : 0);
        uint32_t a = crc32c_update(0, buf, cut), b = crc32c_update(0, buf + cut, n - cut);
        uint32_t got = crc32c_combine(a, b, n - cut), whole = crc32c_update(0, buf, n);
        if (got != whole) {
            bad = 1;
            snprintf(detail, sizeof detail, "length %zu cut at %zu: %08x, whole %08x", n, cut, got, whole);
        }
    }
    report(!bad, "crc32c_combine(crc(A), crc(B), |B|) == crc(A||B), 300 random cuts", detail);
}

// ---- bench ----------------------------------------------------------------------------------

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Median GB/s of 5 timings of crc32c_update over n bytes at p, reps times each; *crc gets
// the CRC of one pass.
static double bench_gbs(const uint8_t *p, size_t n, int reps, uint32_t *crc) {
    double s[5];
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        for (int i = 0; i < reps; i++) *crc = crc32c_update(0, p, n);
        s[r] = now_s() - t0;
    }
    qsort(s, 5, sizeof s[0], cmp_double);
    return (double)n * reps / s[2] / 1e9;
}

// 256 MiB once (the memory's speed caps this on most machines), and its first 1 MiB 256
// times (from cache: the code's own speed).
static int bench(void) {
    const size_t n = (size_t)256 << 20;
    uint8_t *buf = malloc(n);
    if (!buf) {
        fprintf(stderr, "test_crc32c --bench: out of memory for 256 MiB\n");
        return 1;
    }
    fill_random(buf, n);
    have_fast = crc32c_force_portable(0);
    uint32_t crc[2] = {0, 0}, crc_1m;
    for (int k = 0; k < n_paths(); k++) {
        const char *path = use_path(k);
        double big = bench_gbs(buf, n, 1, &crc[k]);
        double cached = bench_gbs(buf, (size_t)1 << 20, 256, &crc_1m);
        printf("crc32c [%s] 256 MiB: %.2f GB/s; 1 MiB from cache: %.2f GB/s (medians of 5; crc %08x)\n",
               path, big, cached, crc[k]);
    }
    crc32c_force_portable(0);
    free(buf);
    if (have_fast && crc[0] != crc[1]) {
        printf("FAIL the two paths disagree on the bench buffer\n");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--bench")) return bench();
    if (argc != 1) {
        fprintf(stderr, "usage: test_crc32c [--bench]\n");
        return 2;
    }
    test_first_use_threads();
    test_cpu();
    uint8_t *buf = malloc(EDGE_MAX);
    if (!buf) {
        report(0, "crc32c: allocate the test buffer", "out of memory");
        return 1;
    }
    fill_random(buf, EDGE_MAX);
    test_vectors();
    test_hex();
    test_bitwise(buf);
    test_paths_agree(buf);
    test_streaming(buf);
    test_combine(buf);
    free(buf);
    if (failures) printf("%d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
