// trainer/rng.h: the small deterministic random number generators of the trainer.
//
// splitmix64 is tiny, passes BigCrush, and lets a stream be keyed by (seed, name) so
// that what a tensor's init or a sample draws does not depend on anything else.
#ifndef ANVIL_TRAINER_RNG_H
#define ANVIL_TRAINER_RNG_H

#include <math.h>
#include <stdint.h>

static inline uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Uniform in [0, 1) with 53 random bits.
static inline double rng_uniform(uint64_t *s) { return (rng_next(s) >> 11) * 0x1.0p-53; }

// Standard normal (Box-Muller; one of the pair is discarded for simplicity).
static inline double rng_normal(uint64_t *s) {
    double u1 = rng_uniform(s), u2 = rng_uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;   // log(0) guard
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// FNV-1a of a string, mixed with a seed: the key of a named stream.
static inline uint64_t rng_stream(uint64_t seed, const char *name) {
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    uint64_t s = seed ^ h;
    rng_next(&s);
    return s;
}

#endif
