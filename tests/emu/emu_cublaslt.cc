// tests/emu/emu_cublaslt.cc: the cuBLASLt calls of kernels/cuda/matmul.cu, on the host,
// with the meaning the cuBLASLt documentation gives them (tests/emu/include/cublasLt.h):
//   - matrices are column-major: element (i, j) of a (rows, cols) layout with leading
//     dimension ld is at i + j * ld; op(X) is X or its transpose (TRANSA / TRANSB);
//   - D (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C, in fp32 (COMPUTE_32F), then
//     the epilogue, then one rounding to D's type;
//   - BIAS adds bias[i] to every element of row i (a vector of D's rows, packed);
//   - GELU_AUX(_BIAS) writes the value before GELU (bias added) to the aux matrix (m, n,
//     leading dimension AUX_LD, bf16) and gelu of it to D;
//   - DGELU multiplies the matmul result by gelu'(aux) (aux as above, read).
//   - BGRADB writes the bias gradient: for each of D's n columns the sum of that column
//     of op(B) over k, in fp32, to the bias pointer in D's type (the bias data type left
//     at its default or set to D's); D itself is the plain product.
// The products are summed in fp32 by the cpu BLAS (sgemm), as COMPUTE_32F does on the
// GPU in some other order. GELU is the tanh approximation, which is what anvil assumes cuBLASLt computes
// (kernels/cuda/matmul.cu); the GPU suite checks that assumption on a GPU.
// Bad arguments (a layout whose shape does not match the problem, an epilogue without
// its pointer) return CUBLAS_STATUS_INVALID_VALUE, as the library does. The heuristic
// returns EMU_LT_ALGOS algorithms (default 3, at most as many as asked; algorithm i has
// data[0] = i), or none for the GELU epilogues under EMU_LT_NO_GELU_EPILOGUE=1 and none
// for BGRADB under EMU_LT_NO_BGRAD_EPILOGUE=1. The algorithms compute alike (the same
// bits); EMU_LT_SLOW_ALGO=i makes algorithm i take 20 ms longer per call (a first choice
// that timing should replace), and EMU_LT_CALLS=FILE writes, at exit, one line
// "algo I CALLS" per algorithm used, so a test can see which ones ran.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include <cblas.h>

#include "tests/emu/include/cublasLt.h"
#include "tests/emu/include/cuda_bf16.h"
#include "tests/emu/emu_cuda.h"

struct emu_lt_desc {
    int transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
    int epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void *bias = nullptr;
    int bias_type = -1;
    const void *aux = nullptr;
    int64_t aux_ld = 0;
};
struct emu_lt_layout {
    int type;
    uint64_t rows, cols;
    int64_t ld;
};
struct emu_lt_pref {
    int unused;
};

namespace {

float get(const emu_lt_layout *l, const void *p, uint64_t i, uint64_t j) {
    size_t at = (size_t)i + (size_t)j * (size_t)l->ld;
    if (l->type == CUDA_R_32F) return ((const float *)p)[at];
    return __bfloat162float(((const __nv_bfloat16 *)p)[at]);
}
void put(const emu_lt_layout *l, void *p, uint64_t i, uint64_t j, float v) {
    size_t at = (size_t)i + (size_t)j * (size_t)l->ld;
    if (l->type == CUDA_R_32F) ((float *)p)[at] = v;
    else ((__nv_bfloat16 *)p)[at] = __float2bfloat16_rn(v);
}

float gelu(float x) {
    const float s = 0.7978845608028654f;   // sqrt(2 / pi)
    return 0.5f * x * (1.0f + tanhf(s * (x + 0.044715f * x * x * x)));
}
float gelu_grad(float x) {
    const float s = 0.7978845608028654f;
    float u = s * (x + 0.044715f * x * x * x), t = tanhf(u);
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * s * (1.0f + 3.0f * 0.044715f * x * x);
}

// An attribute's value of type T from (buf, size); false when the size is not T's.
template <typename T>
bool attr_value(const void *buf, size_t size, T *v) {
    if (size != sizeof *v) return false;
    memcpy(v, buf, sizeof *v);
    return true;
}

}   // namespace

size_t cublasLtGetVersion(void) { return (size_t)CUBLAS_VER_MAJOR * 10000; }   // 13.0.0

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) {
    *handle = (cublasLtHandle_t)1;    // a token: the emulation keeps no state
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
    (void)handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
    if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *desc = new emu_lt_desc;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    delete desc;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size) {
    int32_t i32;
    uint32_t u32;
    const void *p;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
        if (!attr_value(buf, size, &i32)) break;
        (attr == CUBLASLT_MATMUL_DESC_TRANSA ? desc->transa : desc->transb) = i32;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
        if (!attr_value(buf, size, &u32)) break;
        desc->epilogue = (int)u32;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
        if (!attr_value(buf, size, &i32)) break;
        desc->bias_type = i32;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
        if (!attr_value(buf, size, &p)) break;
        (attr == CUBLASLT_MATMUL_DESC_BIAS_POINTER ? desc->bias : desc->aux) = p;
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
        if (!attr_value(buf, size, &desc->aux_ld)) break;
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType_t type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
    if (ld < (int64_t)rows || (type != CUDA_R_32F && type != CUDA_R_16BF))
        return CUBLAS_STATUS_INVALID_VALUE;
    *layout = new emu_lt_layout{(int)type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
    delete layout;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
    *pref = new emu_lt_pref{0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    delete pref;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size) {
    (void)pref, (void)attr, (void)buf, (void)size;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle,
                                              cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t *results,
                                              int *found) {
    (void)handle, (void)a, (void)b, (void)c, (void)d, (void)pref;
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    memset(results, 0, (size_t)requested * sizeof *results);
    // EMU_LT_NO_GELU_EPILOGUE=1: a library with no algorithm for the GELU epilogues (the
    // caller must then compute GELU without them)
    const char *no_gelu = getenv("EMU_LT_NO_GELU_EPILOGUE");
    const int e = desc->epilogue;
    if (no_gelu && !strcmp(no_gelu, "1") &&
        (e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
         e == CUBLASLT_EPILOGUE_DGELU)) {
        *found = 0;
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    // EMU_LT_NO_BGRAD_EPILOGUE=1: the same for the bias gradient
    const char *no_bgrad = getenv("EMU_LT_NO_BGRAD_EPILOGUE");
    if (no_bgrad && !strcmp(no_bgrad, "1") && e == CUBLASLT_EPILOGUE_BGRADB) {
        *found = 0;
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    const char *na = getenv("EMU_LT_ALGOS");
    int n = na ? atoi(na) : 3;
    if (n < 1) n = 1;
    if (n > requested) n = requested;
    for (int i = 0; i < n; i++) {
        results[i].algo.data[0] = (uint64_t)i;
        results[i].state = CUBLAS_STATUS_SUCCESS;
        results[i].wavesCount = 1.0f;
    }
    *found = n;
    return CUBLAS_STATUS_SUCCESS;
}

namespace {
// EMU_LT_CALLS: calls per algorithm, written at exit
std::mutex calls_mu;
std::vector<unsigned long> calls;
void calls_write() {
    const char *path = getenv("EMU_LT_CALLS");
    FILE *f = path ? fopen(path, "w") : nullptr;
    if (f == nullptr) return;
    std::lock_guard<std::mutex> g(calls_mu);
    for (size_t i = 0; i < calls.size(); i++)
        if (calls[i] != 0) fprintf(f, "algo %zu %lu\n", i, calls[i]);
    fclose(f);
}
void calls_count(uint64_t algo) {
    if (getenv("EMU_LT_CALLS") == nullptr || algo > 1000) return;
    std::lock_guard<std::mutex> g(calls_mu);
    if (calls.empty()) atexit(calls_write);
    if (calls.size() <= algo) calls.resize(algo + 1);
    calls[algo]++;
}
}   // namespace

namespace {
void matmul_run(const emu_lt_desc *desc, const emu_lt_layout *al, const void *a,
                const emu_lt_layout *bl, const void *b, const emu_lt_layout *cl, const void *c,
                const emu_lt_layout *dl, void *d, float alpha, float beta, bool ta, bool tb,
                uint64_t m, uint64_t n, uint64_t k, int epi, bool use_bias);
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                              const void *alpha_, const void *a, cublasLtMatrixLayout_t al,
                              const void *b, cublasLtMatrixLayout_t bl, const void *beta_,
                              const void *c, cublasLtMatrixLayout_t cl, void *d,
                              cublasLtMatrixLayout_t dl, const cublasLtMatmulAlgo_t *algo,
                              void *workspace, size_t workspace_bytes, void *stream) {
    (void)handle, (void)workspace, (void)workspace_bytes;
    if (algo == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    const uint64_t algo_i = algo->data[0];
    const char *slow = getenv("EMU_LT_SLOW_ALGO");
    const bool is_slow = slow != nullptr && *slow != '\0' && (uint64_t)atoi(slow) == algo_i;
    const float alpha = *(const float *)alpha_, beta = *(const float *)beta_;
    const bool ta = desc->transa == CUBLAS_OP_T, tb = desc->transb == CUBLAS_OP_T;
    const uint64_t m = dl->rows, n = dl->cols;
    const uint64_t k = ta ? al->rows : al->cols;
    // shapes: op(A) (m, k), op(B) (k, n), C and D (m, n)
    if ((ta ? al->cols : al->rows) != m || (tb ? bl->cols : bl->rows) != k ||
        (tb ? bl->rows : bl->cols) != n || cl->rows != m || cl->cols != n)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (al->type != CUDA_R_16BF || bl->type != CUDA_R_16BF || cl->type != dl->type)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    const int epi = desc->epilogue;
    const bool use_bias = epi == CUBLASLT_EPILOGUE_BIAS || epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    const bool use_aux = epi == CUBLASLT_EPILOGUE_GELU_AUX ||
                         epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || epi == CUBLASLT_EPILOGUE_DGELU;
    if (use_bias && (desc->bias == nullptr || desc->bias_type != CUDA_R_16BF))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (use_aux && (desc->aux == nullptr || desc->aux_ld < (int64_t)m))
        return CUBLAS_STATUS_INVALID_VALUE;
    const bool bgrad = epi == CUBLASLT_EPILOGUE_BGRADB;
    if (bgrad && (desc->bias == nullptr || (desc->bias_type != -1 &&
                                            desc->bias_type != (int)dl->type)))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (epi != CUBLASLT_EPILOGUE_DEFAULT && !use_bias && !use_aux && !bgrad)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    // carried out on the stream (tests/emu/emu_stream.cc), with the descriptor's and the
    // layouts' values and alpha, beta as they are now (the caller may change them after)
    emu::enqueue((::emu_stream *)stream,
                 [dsc = *desc, A_ = *al, B_ = *bl, C_ = *cl, D_ = *dl, a, b, c, d, alpha, beta,
                  ta, tb, m, n, k, epi, use_bias, algo_i, is_slow] {
                     calls_count(algo_i);
                     if (is_slow) std::this_thread::sleep_for(std::chrono::milliseconds(20));
                     matmul_run(&dsc, &A_, a, &B_, b, &C_, c, &D_, d, alpha, beta, ta, tb, m,
                                n, k, epi, use_bias);
                 });
    return CUBLAS_STATUS_SUCCESS;
}

namespace {
void matmul_run(const emu_lt_desc *desc, const emu_lt_layout *al, const void *a,
                const emu_lt_layout *bl, const void *b, const emu_lt_layout *cl, const void *c,
                const emu_lt_layout *dl, void *d, float alpha, float beta, bool ta, bool tb,
                uint64_t m, uint64_t n, uint64_t k, int epi, bool use_bias) {
    // op(A) as rows of k (m, k) and op(B)^T as rows of k (n, k), in fp32
    std::vector<float> A((size_t)m * k), B((size_t)n * k);
    for (uint64_t i = 0; i < m; i++)
        for (uint64_t l = 0; l < k; l++) A[i * k + l] = ta ? get(al, a, l, i) : get(al, a, i, l);
    for (uint64_t j = 0; j < n; j++)
        for (uint64_t l = 0; l < k; l++) B[j * k + l] = tb ? get(bl, b, j, l) : get(bl, b, l, j);
    // the products in fp32 (COMPUTE_32F): P (m, n) row-major = A B^T, by the cpu BLAS
    std::vector<float> P((size_t)m * n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, A.data(),
                (int)k, B.data(), (int)k, 0.0f, P.data(), (int)n);
    if (epi == CUBLASLT_EPILOGUE_BGRADB) {
        // column j of op(B) summed over k, in fp32, stored in D's type (a packed vector)
        emu_lt_layout gl{dl->type, 1, n, 1};
        for (uint64_t j = 0; j < n; j++) {
            float s = 0.0f;
            for (uint64_t l = 0; l < k; l++) s += B[j * k + l];
            put(&gl, (void *)desc->bias, 0, j, s);
        }
    }
    emu_lt_layout auxl{CUDA_R_16BF, m, n, desc->aux_ld};
    for (uint64_t j = 0; j < n; j++) {
        for (uint64_t i = 0; i < m; i++) {
            float v = alpha * P[i * n + j];
            if (beta != 0.0f) v += beta * get(cl, c, i, j);
            if (use_bias) v += __bfloat162float(((const __nv_bfloat16 *)desc->bias)[i]);
            if (epi == CUBLASLT_EPILOGUE_GELU_AUX || epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
                put(&auxl, (void *)desc->aux, i, j, v);
                v = gelu(v);
            } else if (epi == CUBLASLT_EPILOGUE_DGELU) {
                v *= gelu_grad(get(&auxl, desc->aux, i, j));
            }
            put(dl, d, i, j, v);
        }
    }
}
}   // namespace
