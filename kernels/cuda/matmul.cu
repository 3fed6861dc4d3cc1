// kernels/cuda/matmul.cu: fully-connected layer out = inp @ weight^T + bias on bf16
// tensor cores through cuBLASLt, with the GELU epilogues, and the dbias reduction.
//
// Layout. Our matrices are row-major; cuBLASLt's are column-major, and a row-major
// (R, K) matrix is the column-major (K, R) matrix with leading dimension K. So each
// product is written for the transposes (column-major shapes in brackets):
//   forward:  out^T [OC,N]   = W [C,OC]^T · inp^T [C,N]        opA = T, opB = N
//             m = OC, n = N, k = C; bias (OC) is a per-row vector of D (EPILOGUE_BIAS)
//   dinp:     dinp^T [C,N]  += W [C,OC]   · dout^T [OC,N]      opA = N, opB = N
//             m = C, n = N, k = OC
//   dweight:  dweight^T [C,OC] += inp^T [C,N] · (dout^T [OC,N])^T   opA = N, opB = T
//             m = C, n = OC, k = N; C and D fp32 (bf16 A and B, fp32 compute)
// A and B are bf16, compute CUBLAS_COMPUTE_32F, scale type fp32. beta = 1 makes the
// backward accumulate (C = D); the forward and the dGELU case use beta = 0.
//
// GELU. Forward with pre_gelu: EPILOGUE_GELU_AUX_BIAS (or GELU_AUX without bias)
// writes pre_gelu = inp @ W^T + b as the aux matrix (ld OC) and out = gelu(pre_gelu);
// cuBLASLt's GELU is the tanh approximation (GPT-2's, as in kernels/cpu/gelu.c), applied
// to the fp32 accumulator before rounding. Backward with pre_gelu: EPILOGUE_DGELU
// with aux pre_gelu (ld C) and beta = 0 overwrites dinp with (dout @ W) * gelu'(pre_gelu).
// The epilogues are used on Hopper and newer only, and only where cuBLASLt accepts the
// aux matrix (ld a multiple of 8, pointer 16-byte aligned) and its heuristic returns an
// algorithm for them (if not: said once, and the problem's cached plan is a refused one,
// computed without); on Ampere they are slower than separate passes (llm.c measured the same).
// Elsewhere the forward is a plain
// matmul (+ bias epilogue) into pre_gelu followed by cuda_gelu_forward, and the
// backward a plain matmul (beta = 0) into dinp followed by cuda_gelu_backward_inplace
// (gelu.cu), the derivative of kernels/cpu/gelu.c term for term.
//
// dbias (OC) += column sums of dout (N,OC). With dweight wanted too, on Hopper and
// newer: the dweight product's EPILOGUE_BGRADB, whose bias gradient is the sum of
// op(B) = dout over k = N for each of its n = OC columns, in fp32 (D's type), so dout
// is not read a second time (GPT-2: 9 C bf16 per token and layer; 2.7 GB per micro-batch
// of 16k tokens at 124M). It overwrites its vector, so it lands in an fp32 scratch of
// OC and one small pass adds it to dbias (gradient accumulation). Where cuBLASLt has no
// algorithm for it (said once), without dweight, or before Hopper: our own
// deterministic two-pass reduction. Pass 1: a grid of
// (column blocks, row groups); each thread sums 8 adjacent columns (one 16-byte load
// per row) over a strided set of rows, the block folds its 8 row lanes in shared memory
// and writes one fp32 partial row. Pass 2: one thread per column adds the partial rows
// in a fixed order to dbias. No atomics, so the result is the same bits every run.
//
// Plans. Creating descriptors and running the heuristic costs tens of microseconds, so
// each distinct problem (ops, shape, D type, epilogue, pointer alignments) gets a
// cached plan (descriptor, layouts, algorithm) in a small table searched linearly. The
// heuristic is told the real alignment of every pointer (MIN_ALIGNMENT_*_BYTES, and the
// bias / aux pointers themselves are set before it runs), so an offset view into a
// larger buffer never gets an algorithm that needs more alignment than it has.
//
// Choosing the algorithm. A plan starts with the heuristic's first choice. With
// train.matmul_algo timed, the trainer calls cuda_matmul_tune after its first step:
// every plan made so far has its heuristic's candidates (up to 8) run on operands of
// the same shapes and alignments placed in scratch memory the trainer lends (its
// activations and gradients, dead between two steps), each timed with events, and
// keeps the fastest. The heuristic orders candidates by a model of the GPU, not by
// measurement, and its first choice is not always the fastest for a given shape; the
// timing says by how much, per problem, in the report the trainer prints. The kept
// algorithms are also remembered by problem (mm_tuned), so a plan dropped from the
// table and made again does not fall back to the first choice. Timing-chosen
// algorithms can differ run to run (noise), and algorithms differ in rounding, so
// train.deterministic keeps the heuristic's choice (trainer/train.c).
//
// Numerics vs the fp32 cpu reference: inputs are bf16 (relative rounding 2^-9), the
// products accumulate in fp32, outputs round once to bf16 (dweight / dbias stay fp32).
// Expect a normalized error of a few 1e-3 on out / dinp and ~1e-3 on dweight / dbias.
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kernels/cuda/cuda_common.cuh"

// ----------------------------------------------------------------------------
// cached cuBLASLt plans

// Plans kept at once: a model uses ~12 distinct matmuls per layer shape (4 forward,
// 8 backward), times two micro-batch sizes (train / eval); 64 leaves ample room.
// When full, the oldest plan is replaced.
#define MM_PLANS 64

// Everything that makes two problems need different descriptors or algorithms. All
// members are int, so the struct has no padding and memcmp compares it.
typedef struct mm_key {
    int transa, transb;          // cublasOperation_t of A and B
    int m, n, k;                 // D is (m, n) column-major; k the reduced dimension
    int dtype_d;                 // cudaDataType_t of C and D
    int epilogue;                // cublasLtEpilogue_t
    int aux_ld;                  // leading dimension of the aux matrix; 0 if none
    int align_a, align_b, align_d, align_bias, align_aux;   // bytes, 1..256; 0 if unused
} mm_key;

typedef struct mm_plan {
    mm_key key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;      // d serves as C's layout too (C = D always)
    cublasLtMatmulAlgo_t algo;
    float beta;                          // the last call's beta (0 or 1): what timing uses
    int tuned;                           // its candidates were timed (or it has its kept
                                         // algorithm from mm_tuned)
    int refused;                         // no algorithm for its optional epilogue: no
                                         // descriptors (mm_optional_epilogue)
} mm_plan;

static mm_plan mm_plans[MM_PLANS];
static int mm_nplans;            // entries in use
static int mm_evict;             // next entry to replace once the table is full

// Algorithms kept by cuda_matmul_tune, by problem. Timing runs once per process, on the
// problems of the trainer's first step (a few dozen), so the table does not fill; when
// it does, further problems keep their choice only while their plan lives.
#define MM_TUNED 256
typedef struct mm_tuned {
    mm_key key;
    cublasLtMatmulAlgo_t algo;
} mm_tuned;
static mm_tuned mm_tuned_algos[MM_TUNED];
static int mm_ntuned;

// Largest power of two (at most 256, cuBLASLt's default assumption) dividing p.
static int mm_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a & (uintptr_t)(al - 1)) != 0) al >>= 1;
    return al;
}

static int mm_gelu_epilogue(int epi) {
    return epi == CUBLASLT_EPILOGUE_GELU_AUX || epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
           epi == CUBLASLT_EPILOGUE_DGELU;
}
// The epilogues a problem can do without (GELU, the bias gradient): no algorithm for
// one of them makes a refused plan, not an error.
static int mm_optional_epilogue(int epi) {
    return mm_gelu_epilogue(epi) || epi == CUBLASLT_EPILOGUE_BGRADB;
}

static void mm_plan_destroy(mm_plan *p) {
    if (p->refused) return;
    CUBLAS_CHECK(cuda_lt_fn.cublasLtMatmulDescDestroy(p->desc));
    CUBLAS_CHECK(cuda_lt_fn.cublasLtMatrixLayoutDestroy(p->a));
    CUBLAS_CHECK(cuda_lt_fn.cublasLtMatrixLayoutDestroy(p->b));
    CUBLAS_CHECK(cuda_lt_fn.cublasLtMatrixLayoutDestroy(p->d));
}

// One attribute of a matmul descriptor / a heuristic preference (checked).
static void mm_desc_set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                        const void *value, size_t bytes) {
    CUBLAS_CHECK(cuda_lt_fn.cublasLtMatmulDescSetAttribute(desc, attr, value, bytes));
}
static void mm_pref_set(cublasLtMatmulPreference_t pref,
                        cublasLtMatmulPreferenceAttributes_t attr, const void *value,
                        size_t bytes) {
    CUBLAS_CHECK(cuda_lt_fn.cublasLtMatmulPreferenceSetAttribute(pref, attr, value, bytes));
}

// Stored shapes (column-major rows, cols; all packed, ld = rows): A is (k, m) when
// transposed, else (m, k); B is (n, k) when transposed, else (k, n); D is (m, n).
static void mm_stored_shapes(const mm_key *key, uint64_t *ar, uint64_t *ac, uint64_t *br,
                             uint64_t *bc) {
    *ar = (uint64_t)(key->transa == CUBLAS_OP_T ? key->k : key->m);
    *ac = (uint64_t)(key->transa == CUBLAS_OP_T ? key->m : key->k);
    *br = (uint64_t)(key->transb == CUBLAS_OP_T ? key->n : key->k);
    *bc = (uint64_t)(key->transb == CUBLAS_OP_T ? key->k : key->n);
}

// Up to `want` algorithms for plan p's descriptors (filled in) into res, best first by
// cuBLASLt's estimate, *found of them; the preference carries the workspace and the
// key's alignments. Returns the heuristic's status.
static cublasStatus_t mm_heuristic(const mm_plan *p, int want,
                                   cublasLtMatmulHeuristicResult_t *res, int *found) {
    const mm_key *key = &p->key;
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cuda_lt_fn.cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = cuda_lt_workspace_bytes;
    mm_pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    uint32_t al_a = (uint32_t)key->align_a, al_b = (uint32_t)key->align_b,
             al_d = (uint32_t)key->align_d;
    mm_pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a);
    mm_pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b);
    mm_pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof al_d);
    mm_pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof al_d);
    memset(res, 0, (size_t)want * sizeof *res);
    *found = 0;
    cublasStatus_t st = cuda_lt_fn.cublasLtMatmulAlgoGetHeuristic(
        cuda_lt, p->desc, p->a, p->b, p->d, p->d, pref, want, res, found);
    CUBLAS_CHECK(cuda_lt_fn.cublasLtMatmulPreferenceDestroy(pref));
    return st;
}

// Fills plan p for key (the bias / aux pointers are needed for the heuristic's view of
// their alignment). When cuBLASLt has no algorithm for an optional epilogue (GELU,
// BGRADB: mm_optional_epilogue), p is kept as a refused plan (said once per kind), whose
// problem the caller computes without the epilogue; with any other epilogue that is fatal.
static void mm_plan_create(mm_plan *p, const mm_key *key, const void *bias,
                           const void *aux) {
    p->key = *key;
    p->refused = 0;
    p->tuned = 0;
    CUBLAS_CHECK(
        cuda_lt_fn.cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    int32_t ta = key->transa, tb = key->transb;
    mm_desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    mm_desc_set(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    uint32_t epi = (uint32_t)key->epilogue;
    mm_desc_set(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    if (bias != NULL) {
        // a bias is bf16; a bias gradient (BGRADB) has D's type (fp32), the default
        int32_t bt = CUDA_R_16BF;
        if (key->epilogue != CUBLASLT_EPILOGUE_BGRADB)
            mm_desc_set(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt);
        mm_desc_set(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    }
    if (aux != NULL) {
        int64_t aux_ld = key->aux_ld;
        mm_desc_set(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld);
        mm_desc_set(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux);
    }

    uint64_t ar, ac, br, bc;
    mm_stored_shapes(key, &ar, &ac, &br, &bc);
    CUBLAS_CHECK(
        cuda_lt_fn.cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, ar, ac, (int64_t)ar));
    CUBLAS_CHECK(
        cuda_lt_fn.cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, br, bc, (int64_t)br));
    CUBLAS_CHECK(cuda_lt_fn.cublasLtMatrixLayoutCreate(&p->d, (cudaDataType_t)key->dtype_d,
                                                       key->m, key->n, key->m));

    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    cublasStatus_t st = mm_heuristic(p, 1, &res, &found);
    if ((st == CUBLAS_STATUS_SUCCESS || st == CUBLAS_STATUS_NOT_SUPPORTED) && found == 0 &&
        mm_optional_epilogue(key->epilogue)) {
        mm_plan_destroy(p);
        p->refused = 1;
        static int told_gelu, told_bgrad;
        int gelu = mm_gelu_epilogue(key->epilogue);
        int *told = gelu ? &told_gelu : &told_bgrad;
        if (!*told) {
            *told = 1;
            fprintf(stderr, "anvil: cuda: cuBLASLt has no algorithm for the %s epilogue "
                    "(epilogue %d, m=%d n=%d k=%d): %s runs as a separate pass there\n",
                    gelu ? "GELU" : "bias gradient", key->epilogue, key->m, key->n, key->k,
                    gelu ? "GELU" : "the bias gradient");
        }
        return;
    }
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        char text[256];
        snprintf(text, sizeof text,
                 "no algorithm (%s) for m=%d n=%d k=%d opA=%s opB=%s D=%s epilogue=%d, "
                 "alignment A/B/D/bias/aux %d/%d/%d/%d/%d bytes",
                 st != CUBLAS_STATUS_SUCCESS ? cublasLt_status_text(st) : "none returned",
                 key->m, key->n, key->k, key->transa == CUBLAS_OP_T ? "T" : "N",
                 key->transb == CUBLAS_OP_T ? "T" : "N",
                 key->dtype_d == CUDA_R_32F ? "fp32" : "bf16", key->epilogue, key->align_a,
                 key->align_b, key->align_d, key->align_bias, key->align_aux);
        anv_fatal(__FILE__, __LINE__, "cublasLtMatmulAlgoGetHeuristic", text);
    }
    p->algo = res.algo;
    for (int i = 0; i < mm_ntuned; i++) {
        if (memcmp(&mm_tuned_algos[i].key, key, sizeof *key) == 0) {
            p->algo = mm_tuned_algos[i].algo;
            p->tuned = 1;
            break;
        }
    }
}

// The operands of a problem, as mm_call and the timing's placement index them.
enum { MM_OP_A, MM_OP_B, MM_OP_D, MM_OP_BIAS, MM_OP_AUX, MM_OPS };

// One call of plan p's problem with `algo` on the operands op, queued on the compute
// stream (D is C too: beta = p->beta, the last call's). Returns cuBLASLt's status.
static cublasStatus_t mm_call(const mm_plan *p, const cublasLtMatmulAlgo_t *algo,
                              void *const *op) {
    const float alpha = 1.0f;
    return cuda_lt_fn.cublasLtMatmul(
        cuda_lt, p->desc, &alpha, op[MM_OP_A], p->a, op[MM_OP_B], p->b, &p->beta, op[MM_OP_D],
        p->d, op[MM_OP_D], p->d, algo, cuda_lt_workspace, cuda_lt_workspace_bytes,
        cuda_stream_compute);
}

// D (m,n) = A op B (+ epilogue) + beta * D, column-major as in the key, on the compute
// stream. bias: (m) bf16, or with BGRADB the (n) fp32 gradient written; NULL if unused;
// aux (aux_ld, n) bf16 or NULL, as the epilogue needs. Returns 0, or -1 (nothing
// queued) when cuBLASLt has no algorithm for an optional epilogue (GELU, BGRADB).
static int mm_run(int transa, int transb, int m, int n, int k, cudaDataType_t dtype_d,
                  cublasLtEpilogue_t epilogue, void *d, const void *a, const void *b,
                  const void *bias, const void *aux, int aux_ld, float beta) {
    mm_key key;
    memset(&key, 0, sizeof key);
    key.transa = transa;
    key.transb = transb;
    key.m = m;
    key.n = n;
    key.k = k;
    key.dtype_d = (int)dtype_d;
    key.epilogue = (int)epilogue;
    key.aux_ld = aux != NULL ? aux_ld : 0;
    key.align_a = mm_align(a);
    key.align_b = mm_align(b);
    key.align_d = mm_align(d);
    key.align_bias = bias != NULL ? mm_align(bias) : 0;
    key.align_aux = aux != NULL ? mm_align(aux) : 0;

    mm_plan *p = NULL;
    for (int i = 0; i < mm_nplans; i++) {
        if (memcmp(&mm_plans[i].key, &key, sizeof key) == 0) {
            p = &mm_plans[i];
            break;
        }
    }
    if (p == NULL) {
        if (mm_nplans < MM_PLANS) {
            p = &mm_plans[mm_nplans++];
        } else {
            p = &mm_plans[mm_evict];
            mm_evict = (mm_evict + 1) % MM_PLANS;
            mm_plan_destroy(p);
        }
        mm_plan_create(p, &key, bias, aux);
        if (p->refused) return -1;
    } else if (p->refused) {
        return -1;
    } else {
        // same alignments, new addresses: only the pointers held in the descriptor change
        if (bias != NULL)
            mm_desc_set(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
        if (aux != NULL)
            mm_desc_set(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux);
    }
    p->beta = beta;
    void *const op[MM_OPS] = {(void *)a, (void *)b, d, NULL, NULL};
    CUBLAS_CHECK(mm_call(p, &p->algo, op));
    return 0;
}

// Whether the GELU epilogues are used for an aux matrix at `aux` with leading
// dimension ld (see the design comment).
static int mm_gelu_epilogue_ok(const void *aux, int ld) {
    return cuda_cc >= 90 && ld % 8 == 0 && aligned16(aux);
}

// ----------------------------------------------------------------------------
// kernels

// dbias pass 1. Block (32, 8): threadIdx.x picks VEC adjacent columns, threadIdx.y one
// of 8 row lanes; the block covers columns [blockIdx.x * 32 VEC, +32 VEC) and rows
// blockIdx.y * 8 + threadIdx.y, stepping by gridDim.y * 8. partial (gridDim.y, OC)
// OVERWRITTEN with the block's sums. VEC = 8 needs OC % 8 == 0 and dout 16-byte aligned
// (each row's 8-column group is then one aligned 16-byte load).
#define MM_DBIAS_LANES 8         // row lanes per block (blockDim.y)
template <int VEC>
__global__ void __launch_bounds__(32 * MM_DBIAS_LANES)
dbias_partial_kernel(float *partial, const bf16 *dout, int N, int OC) {
    // layout [lane][k * 32 + tx] keeps a warp's stores in 32 distinct banks
    __shared__ float sh[MM_DBIAS_LANES][32 * VEC];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int col0 = (blockIdx.x * 32 + tx) * VEC;
    float acc[VEC];
    for (int k = 0; k < VEC; k++) acc[k] = 0.0f;
    if (col0 < OC) {
        for (size_t r = (size_t)blockIdx.y * MM_DBIAS_LANES + ty; r < (size_t)N;
             r += (size_t)gridDim.y * MM_DBIAS_LANES) {
            const bf16 *row = dout + r * OC + col0;
            if constexpr (VEC == 8) {
                x128<bf16> v = load128(row);
                for (int k = 0; k < VEC; k++) acc[k] += __bfloat162float(v[k]);
            } else {
                acc[0] += __bfloat162float(row[0]);
            }
        }
    }
    for (int k = 0; k < VEC; k++) sh[ty][k * 32 + tx] = acc[k];
    __syncthreads();
    for (int j = ty * 32 + tx; j < 32 * VEC; j += 32 * MM_DBIAS_LANES) {
        float s = 0.0f;
        for (int y = 0; y < MM_DBIAS_LANES; y++) s += sh[y][j];
        int col = blockIdx.x * 32 * VEC + (j % 32) * VEC + j / 32;
        if (col < OC) partial[(size_t)blockIdx.y * OC + col] = s;
    }
}

// dbias pass 2: dbias (OC) += sum over the `rows` partial rows (rows, OC), in order.
__global__ void dbias_final_kernel(float *dbias, const float *partial, int rows, int OC) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= OC) return;
    float s = 0.0f;
    for (int r = 0; r < rows; r++) s += partial[(size_t)r * OC + c];
    dbias[c] += s;
}

// Pass 1 aims at this many blocks per SM (8 resident blocks of 256 threads fill an SM
// on sm_80 / sm_90; 4 leave room while keeping every SM busy)...
#define MM_DBIAS_BLOCKS_PER_SM 4
// ...but gives each block at least this many rows, so pass 2 stays small.
#define MM_DBIAS_MIN_ROWS 64

static void *mm_dbias_scratch;           // (rows, OC) fp32 partial sums of pass 1, or
                                         // (OC) the BGRADB epilogue's gradient
static size_t mm_dbias_scratch_bytes;

static void dbias_accumulate(float *dbias, const bf16 *dout, int N, int OC) {
    // dbias (OC) +=, dout (N,OC)
    int vec = (OC % 8 == 0 && aligned16(dout)) ? 8 : 1;
    int gx = (OC + 32 * vec - 1) / (32 * vec);
    int target = cuda_sm_count * MM_DBIAS_BLOCKS_PER_SM;
    int gy = (target + gx - 1) / gx;
    int max_gy = (N + MM_DBIAS_MIN_ROWS - 1) / MM_DBIAS_MIN_ROWS;
    if (gy > max_gy) gy = max_gy;
    if (gy > 65535) gy = 65535;          // gridDim.y limit
    if (gy < 1) gy = 1;

    float *part = (float *)cuda_scratch(&mm_dbias_scratch, &mm_dbias_scratch_bytes,
                                        (size_t)gy * OC * sizeof(float));   // (gy, OC)
    dim3 grid((unsigned)gx, (unsigned)gy), block(32, MM_DBIAS_LANES);
    if (vec == 8)
        dbias_partial_kernel<8><<<grid, block, 0, cuda_stream_compute>>>(part, dout, N, OC);
    else
        dbias_partial_kernel<1><<<grid, block, 0, cuda_stream_compute>>>(part, dout, N, OC);
    CUDA_LAUNCH_CHECK();
    dbias_final_kernel<<<cuda_blocks((size_t)OC, 256), 256, 0, cuda_stream_compute>>>(
        dbias, part, gy, OC);
    CUDA_LAUNCH_CHECK();
}

// ----------------------------------------------------------------------------
// the ops

extern "C" void cuda_matmul_forward(anv_act *out, anv_act *pre_gelu, const anv_act *inp,
                                    const anv_act *weight, const anv_act *bias, int N, int C,
                                    int OC) {
    // out (N,OC), pre_gelu (N,OC) or NULL, inp (N,C), weight (OC,C), bias (OC) or NULL
    if (N <= 0 || OC <= 0 || C <= 0) return;
    if (pre_gelu != NULL && mm_gelu_epilogue_ok(pre_gelu, OC)) {
        cublasLtEpilogue_t epi =
            bias != NULL ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
        if (mm_run(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, CUDA_R_16BF, epi, out, weight, inp,
                   bias, pre_gelu, OC, 0.0f) == 0)
            return;
    }
    // without the fused GELU: the matmul (+ bias) lands in pre_gelu, then the GELU pass
    void *dst = pre_gelu != NULL ? pre_gelu : out;
    cublasLtEpilogue_t epi = bias != NULL ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    mm_run(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, CUDA_R_16BF, epi, dst, weight, inp, bias, NULL,
           0, 0.0f);
    if (pre_gelu != NULL) cuda_gelu_forward(out, pre_gelu, (size_t)N * OC);
}

extern "C" void cuda_matmul_backward(anv_act *dinp, anv_grad_mode dinp_mode, float *dweight,
                                     float *dbias, const anv_act *dout, const anv_act *inp,
                                     const anv_act *weight, const anv_act *pre_gelu, int N,
                                     int C, int OC) {
    // dinp (N,C) = or += (dinp_mode; always = when pre_gelu is given) or NULL,
    // dweight (OC,C) += or NULL, dbias (OC) += or NULL; dout (N,OC), inp (N,C),
    // weight (OC,C), pre_gelu (N,C) or NULL
    if (N <= 0 || OC <= 0 || C <= 0) return;
    int dbias_done = 0;
    if (dweight != NULL && dbias != NULL && cuda_cc >= 90) {
        // dbias from the dweight product's epilogue, into scratch (OC), then added
        float *g = (float *)cuda_scratch(&mm_dbias_scratch, &mm_dbias_scratch_bytes,
                                         (size_t)OC * sizeof(float));
        if (mm_run(CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, CUDA_R_32F, CUBLASLT_EPILOGUE_BGRADB,
                   dweight, inp, dout, g, NULL, 0, 1.0f) == 0) {
            dbias_final_kernel<<<cuda_blocks((size_t)OC, 256), 256, 0, cuda_stream_compute>>>(
                dbias, g, 1, OC);
            CUDA_LAUNCH_CHECK();
            dbias_done = 1;
        }
    }
    if (!dbias_done) {
        if (dbias != NULL) dbias_accumulate(dbias, (const bf16 *)dout, N, OC);
        if (dweight != NULL) {
            mm_run(CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, CUDA_R_32F, CUBLASLT_EPILOGUE_DEFAULT,
                   dweight, inp, dout, NULL, NULL, 0, 1.0f);
        }
    }
    if (dinp != NULL) {
        if (pre_gelu == NULL) {
            // beta 0 for SET: the buffer is neither zeroed before nor read
            mm_run(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, CUDA_R_16BF, CUBLASLT_EPILOGUE_DEFAULT,
                   dinp, weight, dout, NULL, NULL, 0,
                   dinp_mode == ANV_GRAD_MODE_SET ? 0.0f : 1.0f);
        } else if (mm_gelu_epilogue_ok(pre_gelu, C) &&
                   mm_run(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, CUDA_R_16BF,
                          CUBLASLT_EPILOGUE_DGELU, dinp, weight, dout, NULL, pre_gelu, C,
                          0.0f) == 0) {
            // done by the epilogue
        } else {
            mm_run(CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, CUDA_R_16BF, CUBLASLT_EPILOGUE_DEFAULT,
                   dinp, weight, dout, NULL, NULL, 0, 0.0f);
            cuda_gelu_backward_inplace(dinp, pre_gelu, (size_t)N * C);
        }
    }
}

// ----------------------------------------------------------------------------
// timing the candidates (be->matmul_tune; see "Choosing the algorithm" above)

// Candidates asked of the heuristic per problem: its estimate rarely ranks the fastest
// below the first few, and each candidate costs MM_TUNE_REPS + 1 calls.
#define MM_TUNE_CANDIDATES 8
// Timed calls per candidate, after one untimed call (first-call costs); the fastest
// counts, being the least disturbed by clock changes and other work.
#define MM_TUNE_REPS 3
// A candidate replaces the first choice only when faster by more than this fraction:
// closer than that, timing noise could pick either, and a stable choice is worth more.
#define MM_TUNE_MARGIN 0.02
// Scratch regions used at most (the trainer lends two).
#define MM_TUNE_REGIONS 4


// Bytes of each operand of key's problem (0: unused).
static void mm_operand_bytes(const mm_key *key, size_t bytes[MM_OPS]) {
    uint64_t ar, ac, br, bc;
    mm_stored_shapes(key, &ar, &ac, &br, &bc);
    const size_t dsz = key->dtype_d == CUDA_R_32F ? 4 : 2;
    bytes[MM_OP_A] = (size_t)(ar * ac) * 2;
    bytes[MM_OP_B] = (size_t)(br * bc) * 2;
    bytes[MM_OP_D] = (size_t)key->m * (size_t)key->n * dsz;
    bytes[MM_OP_BIAS] = key->align_bias == 0 ? 0
                        : key->epilogue == CUBLASLT_EPILOGUE_BGRADB ? (size_t)key->n * dsz
                                                                    : (size_t)key->m * 2;
    bytes[MM_OP_AUX] = key->align_aux == 0 ? 0 : (size_t)key->aux_ld * (size_t)key->n * 2;
}

// Places the operands of key in the scratch regions (largest first, first fit), each at
// an address whose alignment (mm_align) is exactly the key's, so the problem is the
// same one: ptr[i] (NULL where unused). Returns 0, or -1 when they do not fit.
static int mm_operands_place(const mm_key *key, void *const *scratch, const size_t *bytes,
                             int n, void *ptr[MM_OPS]) {
    size_t need[MM_OPS], used[MM_TUNE_REGIONS] = {0};
    const int align[MM_OPS] = {key->align_a, key->align_b, key->align_d, key->align_bias,
                               key->align_aux};
    mm_operand_bytes(key, need);
    int order[MM_OPS] = {0, 1, 2, 3, 4};
    for (int i = 1; i < MM_OPS; i++)      // insertion sort, largest first
        for (int j = i; j > 0 && need[order[j]] > need[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (int oi = 0; oi < MM_OPS; oi++) {
        const int o = order[oi];
        ptr[o] = NULL;
        if (need[o] == 0) continue;
        for (int r = 0; r < n && r < MM_TUNE_REGIONS && ptr[o] == NULL; r++) {
            uintptr_t base = (uintptr_t)scratch[r], end = base + bytes[r];
            uintptr_t at = (base + used[r] + 255) / 256 * 256;
            if (align[o] < 256) at += (uintptr_t)align[o];   // lowest set bit: align
            if (at > end || end - at < need[o]) continue;
            ptr[o] = (void *)at;
            used[r] = (size_t)(at + need[o] - base);
        }
        if (ptr[o] == NULL) return -1;
        if (mm_align(ptr[o]) != align[o])   // a different problem would be timed
            anv_fatal(__FILE__, __LINE__, "mm_operands_place", "alignment not reproduced");
    }
    return 0;
}

// Milliseconds of the fastest of MM_TUNE_REPS calls with algo, after one untimed call;
// ev holds MM_TUNE_REPS + 1 events. Returns -1 when cuBLASLt refuses the algorithm.
static double mm_time(const mm_plan *p, const cublasLtMatmulAlgo_t *algo, void *const *op,
                      cudaEvent_t *ev) {
    if (mm_call(p, algo, op) != CUBLAS_STATUS_SUCCESS) return -1.0;
    CUDA_CHECK(cudaEventRecord(ev[0], cuda_stream_compute));
    for (int r = 0; r < MM_TUNE_REPS; r++) {
        if (mm_call(p, algo, op) != CUBLAS_STATUS_SUCCESS) return -1.0;
        CUDA_CHECK(cudaEventRecord(ev[r + 1], cuda_stream_compute));
    }
    CUDA_CHECK(cudaEventSynchronize(ev[MM_TUNE_REPS]));
    double best = -1.0;
    for (int r = 0; r < MM_TUNE_REPS; r++) {
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, ev[r], ev[r + 1]));
        if (best < 0.0 || ms < best) best = ms;
    }
    return best;
}

// One line of the table for plan p's problem, in the ops' terms (as the profile names
// them): forward N x C -> OC, dinp N x C <- OC, dweight N x C <- OC (the keys'
// column-major products, the design comment at the top).
static void mm_table_line(FILE *f, const mm_plan *p, int found, double first, double best,
                          int kept) {
    const mm_key *k = &p->key;
    const char *op = k->transa == CUBLAS_OP_T ? "forward"
                     : k->transb == CUBLAS_OP_T ? "dweight" : "dinp";
    const int N = k->transa == CUBLAS_OP_T ? k->n : k->transb == CUBLAS_OP_T ? k->k : k->n;
    const int C = k->transa == CUBLAS_OP_T ? k->k : k->m;
    const int OC = k->transa == CUBLAS_OP_T ? k->m : k->transb == CUBLAS_OP_T ? k->n : k->k;
    const char *epi = k->epilogue == CUBLASLT_EPILOGUE_BIAS            ? "bias"
                      : k->epilogue == CUBLASLT_EPILOGUE_GELU_AUX        ? "gelu"
                      : k->epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS   ? "bias+gelu"
                      : k->epilogue == CUBLASLT_EPILOGUE_DGELU           ? "dgelu"
                      : k->epilogue == CUBLASLT_EPILOGUE_BGRADB          ? "dbias"
                                                                         : "-";
    char what[96];
    snprintf(what, sizeof what, "%s %dx%d %s %d", op, N, C, op[0] == 'f' ? "->" : "<-", OC);
    fprintf(f, "%-34s %9s %5d %10.4f %10.4f %6.1f%% %s (alignment A/B/D %d/%d/%d)\n", what,
            epi, found, first, best, first > 0 ? 100.0 * (1.0 - best / first) : 0.0,
            kept ? "faster kept" : "first choice kept", k->align_a, k->align_b, k->align_d);
}

// Times plan p's candidates on operands in scratch and keeps the fastest (see
// MM_TUNE_MARGIN) in p and in mm_tuned; adds to *rep and, if table, writes its line.
// A problem whose operands do not fit the scratch stays untimed (a later call may have
// the room).
static void mm_plan_tune(mm_plan *p, void *const *scratch, const size_t *bytes, int n,
                         cudaEvent_t *ev, FILE *table, anv_tune_report *rep) {
    void *op[MM_OPS];
    if (mm_operands_place(&p->key, scratch, bytes, n, op) != 0) {
        rep->skipped++;                   // left for a call with more room
        return;
    }
    p->tuned = 1;                         // once, whatever the outcome
    if (op[MM_OP_BIAS] != NULL)
        mm_desc_set(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &op[MM_OP_BIAS],
                    sizeof op[MM_OP_BIAS]);
    if (op[MM_OP_AUX] != NULL)
        mm_desc_set(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &op[MM_OP_AUX],
                    sizeof op[MM_OP_AUX]);
    cublasLtMatmulHeuristicResult_t res[MM_TUNE_CANDIDATES];
    int found = 0;
    if (mm_heuristic(p, MM_TUNE_CANDIDATES, res, &found) != CUBLAS_STATUS_SUCCESS ||
        found <= 1) {
        rep->single++;
        return;
    }
    // the plan's algorithm (the heuristic's first choice) is the one to beat
    const double first = mm_time(p, &p->algo, op, ev);
    if (first < 0.0) anv_fatal(__FILE__, __LINE__, "cublasLtMatmul", "the planned algorithm "
                               "was refused on operands of the same shapes and alignments");
    double best = first;
    int best_i = -1;
    for (int i = 0; i < found && i < MM_TUNE_CANDIDATES; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS ||
            memcmp(&res[i].algo, &p->algo, sizeof p->algo) == 0)
            continue;
        const double t = mm_time(p, &res[i].algo, op, ev);
        if (t < 0.0) continue;            // refused: not a candidate after all
        rep->candidates++;
        if (t < best) {
            best = t;
            best_i = i;
        }
    }
    rep->candidates++;                    // the first choice
    rep->problems++;
    rep->first_ms += first;
    const int change = best_i >= 0 && best < (1.0 - MM_TUNE_MARGIN) * first;
    if (change) {
        p->algo = res[best_i].algo;
        rep->changed++;
    }
    rep->best_ms += change ? best : first;
    if (table) mm_table_line(table, p, found, first, change ? best : first, change);
    if (mm_ntuned < MM_TUNED) {
        mm_tuned_algos[mm_ntuned].key = p->key;
        mm_tuned_algos[mm_ntuned].algo = p->algo;
        mm_ntuned++;
    }
}

extern "C" void cuda_matmul_tune(void *const *scratch, const size_t *bytes, int n,
                                 FILE *table, anv_tune_report *rep) {
    memset(rep, 0, sizeof *rep);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cudaEvent_t ev[MM_TUNE_REPS + 1];
    for (int r = 0; r <= MM_TUNE_REPS; r++) CUDA_CHECK(cudaEventCreate(&ev[r]));
    if (table)
        fprintf(table, "%-34s %9s %5s %10s %10s %7s\n", "matmul (ops.h terms)", "epilogue",
                "cands", "first ms", "kept ms", "gain");
    for (int i = 0; i < mm_nplans; i++) {
        mm_plan *p = &mm_plans[i];
        if (!p->refused && !p->tuned) mm_plan_tune(p, scratch, bytes, n, ev, table, rep);
    }
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_compute));
    for (int r = 0; r <= MM_TUNE_REPS; r++) CUDA_CHECK(cudaEventDestroy(ev[r]));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    rep->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}
