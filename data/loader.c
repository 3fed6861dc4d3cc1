// data/loader.c: the sample stream over a set of token shards (docs/formats.md).
//
// The loader keeps no cursor. A sample is named by its stream position p alone: epoch
// e = p / S, slot r = p % S, sample perm_e[r] (identity in sequential order, a
// Fisher-Yates shuffle seeded by (seed, e) in random order), and sample g is window
// g - first_sample[s] of the shard s that holds it. So the same p gives the same
// window however the calls are chunked, whatever the number of ranks or micro-batch,
// and a resumed run needs nothing but the count of samples it has consumed.
//
// Everything is allocated in loader_init: the shard table, the prefix sums and the
// one permutation buffer (uint32, S entries), which loader_fill regenerates in place
// when it crosses into another epoch. Regenerating is O(S) and happens once per epoch
// in a forward-moving run, so keeping only one epoch's permutation costs nothing.
//
// The shuffle must be reproducible by anything that reads these shards (a Python
// check, a later version of anvil), so its PRNG is spelled out here and in
// docs/formats.md: splitmix64, seeded from mix64(seed ^ mix64(e ^ LOADER_SALT)), and
// bounded draws by rejection (no modulo bias).
#include "data/data.h"

#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LOADER_SALT 0x616E76696C646174ull   // "anvildat": keeps epoch seeds apart from other RNG streams
#define GOLDEN_GAMMA 0x9E3779B97F4A7C15ull  // splitmix64's increment

// ---- the permutation -----------------------------------------------------------------

// splitmix64's finalizer: a bijective 64-bit mix.
static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Next splitmix64 output; advances *state.
static uint64_t splitmix64_next(uint64_t *state) {
    *state += GOLDEN_GAMMA;
    return mix64(*state);
}

// Uniform in [0, bound), bound >= 1: draws below 2^64 mod bound are rejected so every
// residue is equally likely.
static uint64_t uniform_below(uint64_t *state, uint64_t bound) {
    uint64_t threshold = (0 - bound) % bound;
    for (;;) {
        uint64_t r = splitmix64_next(state);
        if (r >= threshold) return r % bound;
    }
}

// Fill L->perm with epoch e's permutation: identity, then Fisher-Yates from the top.
static void perm_generate(loader *L, uint64_t epoch) {
    uint64_t S = L->n_samples;
    uint32_t *perm = L->perm;   // (S)
    for (uint64_t i = 0; i < S; i++) perm[i] = (uint32_t)i;
    uint64_t state = mix64((uint64_t)L->seed ^ mix64(epoch ^ LOADER_SALT));
    for (uint64_t i = S - 1; i > 0; i--) {
        uint64_t j = uniform_below(&state, i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    L->perm_epoch = epoch;
}

// ---- the file list -----------------------------------------------------------------

typedef struct path_list {
    char **v;
    size_t n, cap;
} path_list;

static void path_list_free(path_list *pl) {
    for (size_t i = 0; i < pl->n; i++) free(pl->v[i]);
    free(pl->v);
    memset(pl, 0, sizeof *pl);
}

// Append a copy of path. Returns 0, or -1 when out of memory.
static int path_list_add(path_list *pl, const char *path) {
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? 2 * pl->cap : 16;
        char **v = realloc(pl->v, cap * sizeof *v);
        if (!v) return -1;
        pl->v = v;
        pl->cap = cap;
    }
    if (!(pl->v[pl->n] = strdup(path))) return -1;
    pl->n++;
    return 0;
}

static int cmp_path(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// Expand one entry (a plain path, or a pattern with * ? [) into pl. Returns 0, or 2
// after printing a line naming `what` and the entry.
static int expand_entry(path_list *pl, const char *entry, const char *what) {
    if (!strpbrk(entry, "*?[")) {
        struct stat st;
        if (stat(entry, &st) != 0) {
            fprintf(stderr, "anvil: %s: '%s': %s\n", what, entry, strerror(errno));
            return 2;
        }
        if (path_list_add(pl, entry) != 0) goto oom;
        return 0;
    }
    glob_t g;
    // No GLOB_ERR: a directory in the pattern that does not exist is "no match", which
    // is what the user needs to hear, not a read error.
    int grc = glob(entry, 0, NULL, &g);
    if (grc == GLOB_NOMATCH) {
        fprintf(stderr, "anvil: %s: pattern '%s' matches no file\n", what, entry);
        return 2;
    }
    if (grc != 0) {
        fprintf(stderr, "anvil: %s: pattern '%s': %s\n", what, entry,
                grc == GLOB_NOSPACE ? "out of memory" : "read error while matching");
        globfree(&g);
        return 2;
    }
    for (size_t i = 0; i < g.gl_pathc; i++)
        if (path_list_add(pl, g.gl_pathv[i]) != 0) {
            globfree(&g);
            goto oom;
        }
    globfree(&g);
    return 0;
oom:
    fprintf(stderr, "anvil: %s: out of memory listing '%s'\n", what, entry);
    return 2;
}

// Split `patterns` at commas (blanks around an entry ignored), expand each entry,
// sort and drop duplicates. Returns 0, or 2 after printing one line.
static int expand_patterns(path_list *pl, const char *patterns, const char *what) {
    char *copy = strdup(patterns ? patterns : "");
    if (!copy) {
        fprintf(stderr, "anvil: %s: out of memory\n", what);
        return 2;
    }
    int rc = 0;
    for (char *entry = copy, *next; entry && rc == 0; entry = next) {
        next = strchr(entry, ',');
        if (next) *next++ = '\0';
        while (*entry == ' ' || *entry == '\t') entry++;
        char *end = entry + strlen(entry);
        while (end > entry && (end[-1] == ' ' || end[-1] == '\t')) *--end = '\0';
        if (*entry) rc = expand_entry(pl, entry, what);
    }
    free(copy);
    if (rc != 0) return rc;
    if (pl->n == 0) {
        fprintf(stderr, "anvil: %s: no shard files given\n", what);
        return 2;
    }
    qsort(pl->v, pl->n, sizeof *pl->v, cmp_path);
    size_t k = 1;
    for (size_t i = 1; i < pl->n; i++) {
        if (strcmp(pl->v[i], pl->v[k - 1]) == 0) free(pl->v[i]);
        else pl->v[k++] = pl->v[i];
    }
    pl->n = k;
    return 0;
}

// ---- init / free -------------------------------------------------------------------

// Open the shards, sum their windows, allocate the permutation. Returns 0, or 2 after
// printing one line; on failure L is left freed (loader_free on it is harmless).
int loader_init(loader *L, const char *patterns, const char *what, int T, int random,
                unsigned long long seed, uint32_t vocab_limit) {
    path_list pl = {0};
    memset(L, 0, sizeof *L);
    L->perm_epoch = UINT64_MAX;
    L->T = T;
    L->random = random != 0;
    L->seed = seed;
    L->vocab_limit = vocab_limit;
    if (!what) what = "data";
    if (T < 1) {
        fprintf(stderr, "anvil: %s: sequence length %d must be at least 1\n", what, T);
        return 2;
    }
    if (expand_patterns(&pl, patterns, what) != 0) goto fail;
    if (pl.n > (size_t)INT32_MAX) {
        fprintf(stderr, "anvil: %s: %zu shard files are too many\n", what, pl.n);
        goto fail;
    }
    L->shards = calloc(pl.n, sizeof *L->shards);
    L->first_sample = calloc(pl.n + 1, sizeof *L->first_sample);
    if (!L->shards || !L->first_sample) {
        fprintf(stderr, "anvil: %s: out of memory for %zu shards\n", what, pl.n);
        goto fail;
    }
    uint64_t largest = 0;
    for (size_t i = 0; i < pl.n; i++) {
        if (shard_open(&L->shards[i], pl.v[i]) != 0) goto fail;
        L->n_shards = (int)i + 1;
        uint64_t n = L->shards[i].n_tokens;
        if (n > largest) largest = n;
        // Windows start at multiples of T and need T+1 tokens (the last one the
        // target of the T-th input): floor((n - 1) / T) of them.
        uint64_t windows = n >= 1 ? (n - 1) / (uint64_t)T : 0;
        L->first_sample[i + 1] = L->first_sample[i] + windows;
    }
    L->n_samples = L->first_sample[pl.n];
    if (L->n_samples == 0) {
        fprintf(stderr, "anvil: %s: no shard holds a full window of T+1 = %d tokens "
                "(largest: %llu tokens in %zu file%s)\n", what, T + 1,
                (unsigned long long)largest, pl.n, pl.n == 1 ? "" : "s");
        goto fail;
    }
    if (L->n_samples > UINT32_MAX) {
        fprintf(stderr, "anvil: %s: %llu samples of %d tokens is more than the loader's "
                "2^32 - 1 limit; use a longer sequence or fewer shards\n", what,
                (unsigned long long)L->n_samples, T + 1);
        goto fail;
    }
    if (L->random) {
        L->perm = malloc((size_t)L->n_samples * sizeof *L->perm);
        if (!L->perm) {
            fprintf(stderr, "anvil: %s: out of memory for the permutation of %llu "
                    "samples\n", what, (unsigned long long)L->n_samples);
            goto fail;
        }
    }
    path_list_free(&pl);
    return 0;
fail:
    path_list_free(&pl);
    loader_free(L);
    return 2;
}

void loader_free(loader *L) {
    if (!L) return;
    for (int i = 0; i < L->n_shards; i++) shard_close(&L->shards[i]);
    free(L->shards);
    free(L->first_sample);
    free(L->perm);
    memset(L, 0, sizeof *L);
    L->perm_epoch = UINT64_MAX;
}

// ---- the stream --------------------------------------------------------------------

// Index of the shard holding global sample g (first_sample[s] <= g < first_sample[s+1];
// shards with no window are skipped naturally since their range is empty).
static int shard_of_sample(const loader *L, uint64_t g) {
    int lo = 0, hi = L->n_shards;   // first_sample[lo] <= g < first_sample[hi]
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (L->first_sample[mid] <= g) lo = mid;
        else hi = mid;
    }
    return lo;
}

// Fill tokens (n, T+1) with the windows at stream positions [pos, pos + n). Does not
// allocate; regenerates L->perm when an epoch boundary is crossed. Returns 0, or 2
// after naming the shard and offset of a token >= vocab_limit (or one that does not
// fit an int32 when vocab_limit is 0).
int loader_fill(loader *L, uint64_t pos, int n, int32_t *tokens) {
    const uint64_t S = L->n_samples;
    const int T = L->T;
    const uint64_t limit = L->vocab_limit ? L->vocab_limit : (uint64_t)INT32_MAX + 1;
    for (int b = 0; b < n; b++) {
        uint64_t p = pos + (uint64_t)b;
        uint64_t epoch = p / S, slot = p % S, g = slot;
        if (L->random) {
            if (L->perm_epoch != epoch) perm_generate(L, epoch);
            g = L->perm[slot];
        }
        int s = shard_of_sample(L, g);
        const shard *sh = &L->shards[s];
        uint64_t start = (g - L->first_sample[s]) * (uint64_t)T;
        int32_t *out = tokens + (size_t)b * (size_t)(T + 1);   // (T+1)
        for (int t = 0; t <= T; t++) {
            uint32_t v = shard_token(sh, start + (uint64_t)t);
            if (v >= limit) {
                fprintf(stderr, "anvil: shard '%s': token %u at offset %llu is outside "
                        "the vocabulary (must be < %llu)\n", sh->path, v,
                        (unsigned long long)(start + (uint64_t)t),
                        (unsigned long long)limit);
                return 2;
            }
            out[t] = (int32_t)v;
        }
    }
    return 0;
}
