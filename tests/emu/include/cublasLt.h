// tests/emu/include/cublasLt.h: the cuBLASLt names kernels/cuda/cuda_common.cuh
// mentions, so that it compiles for the host emulation. cuBLASLt itself is not
// emulated: matmul.cu is not among the emulated files.
#ifndef ANVIL_TESTS_EMU_CUBLASLT_H
#define ANVIL_TESTS_EMU_CUBLASLT_H

typedef enum cublasStatus_t {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED,
    CUBLAS_STATUS_ALLOC_FAILED,
    CUBLAS_STATUS_INVALID_VALUE,
    CUBLAS_STATUS_ARCH_MISMATCH,
    CUBLAS_STATUS_MAPPING_ERROR,
    CUBLAS_STATUS_EXECUTION_FAILED,
    CUBLAS_STATUS_INTERNAL_ERROR,
    CUBLAS_STATUS_NOT_SUPPORTED
} cublasStatus_t;
typedef struct emu_lt *cublasLtHandle_t;

#endif
