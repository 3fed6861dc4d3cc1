// tests/unit/test_ops.h: what the parts of test_ops share (test_ops.c holds the
// helpers, main and most ops; test_ops_vocab.c the vocabulary ops).
#ifndef ANVIL_TESTS_UNIT_TEST_OPS_H
#define ANVIL_TESTS_UNIT_TEST_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"

#define FD_H 1e-2f           // perturbation: large enough that float rounding of L is small
#define FD_TOL 1e-2          // see test_ops.c's header comment
#define FD_SAMPLES 64        // elements perturbed per tensor when it is larger than this
#define REF_TOL 1e-5         // forward vs double reference: a few float roundings per element

extern const anv_backend *be;   // the backend under test
extern int failures;            // checks failed so far

// The loss L = sum(out * R) of one op at the current inputs; ctx is the op's case.
typedef double (*loss_fn)(void *ctx);

uint64_t rng_next(uint64_t *s);                        // splitmix64
float rng_uniform(uint64_t *s);                        // [0, 1)
float *falloc(size_t n);                               // zeroed; exits if out of memory
float *frand(size_t n, float lo, float hi, uint64_t *s);   // uniform in [lo, hi)
float *fdup(const float *x, size_t n);
float *fdiff(const float *after, const float *before, size_t n);   // after - before
double dot_d(const float *a, const float *b, size_t n);
double rel_err(const float *a, const double *b, size_t n);   // ||a - b|| / ||b||
void check(const char *name, double err, double tol);        // prints, counts failures
void check_true(const char *name, int ok);
// Normalized error of the analytic gradient g of L w.r.t. x (n) against central
// differences (test_ops.c says how).
double fd_error(float *x, size_t n, const float *g, loss_fn loss, void *ctx, uint64_t *s);
// The same for the column block [c0, c1) of x's rows (rows of ld elements).
double fd_error_block(float *x, size_t rows, size_t ld, size_t c0, size_t c1, const float *g,
                      loss_fn loss, void *ctx, uint64_t *s);

// test_ops_vocab.c
void test_encoder(int with_wpe, int v0, int Vs, uint64_t *s);
void test_encoder_shards(int P, const int *v0s, uint64_t *s);
void test_crossentropy(int V, int Vp, int use_fd, uint64_t *s);
void test_crossentropy_sharded(int V, int P, int Vp, uint64_t *s);

#endif
