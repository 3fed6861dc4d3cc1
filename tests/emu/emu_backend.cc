// tests/emu/emu_backend.cc: the backend the gpu suite's op test (tests/gpu/test_gpu_ops.c)
// runs against in the unit suite, where there is no GPU: every op whose CUDA kernels run
// under the host emulation (tests/emu/emu_cuda.h) is the cuda backend's own function,
// compiled from kernels/cuda/<op>.cu by tests/emu/cu2emu.py. The rest is the bf16
// stand-in of tests/unit/bf16_backend.c (real bf16 storage, fp32 cpu ops), which keeps
// the same memory format (host memory, raw bf16): backend.cu's memory, copies and
// conversions (the CUDA runtime's device management). matmul.cu runs on the cuBLASLt
// API emulation of tests/emu/emu_cublaslt.cc.
// So the test compares the CUDA kernels' code, executed, with the fp32 cpu reference.
//
// It provides anv_backend_cuda / anv_cuda_device_count in place of kernels/cuda (the
// test binary links the cpu-only objects, never backend.cu).
#include "kernels/cuda/cuda_common.cuh"
#include "tests/unit/bf16_backend.h"

cudaStream_t cuda_stream_compute = nullptr;   // the emulation has no streams
int cuda_sm_count = 16;                       // sizes grids; any count is correct
int cuda_cc = 90;                             // Hopper: matmul uses the GELU epilogues
cublasLtHandle_t cuda_lt = nullptr;           // tests/emu/emu_cublaslt.cc needs none
void *cuda_lt_workspace = nullptr;
size_t cuda_lt_workspace_bytes = 0;

static anv_backend emu_backend;

extern "C" const anv_backend *anv_backend_cuda(int device) {
    (void)device;
    emu_backend = *anv_backend_bf16_emulated();
    emu_backend.name = "cuda kernels emulated on the host (memory and conversions: bf16 "
                       "stand-in)";
    anv_backend &b = emu_backend;
    b.encoder_forward = cuda_encoder_forward;
    b.encoder_backward = cuda_encoder_backward;
    b.layernorm_forward = cuda_layernorm_forward;
    b.layernorm_residual_forward = cuda_layernorm_residual_forward;
    b.layernorm_backward = cuda_layernorm_backward;
    b.rmsnorm_forward = cuda_rmsnorm_forward;
    b.rmsnorm_residual_forward = cuda_rmsnorm_residual_forward;
    b.rmsnorm_backward = cuda_rmsnorm_backward;
    b.matmul_forward = cuda_matmul_forward;
    b.matmul_backward = cuda_matmul_backward;
    b.attention_state_floats = cuda_attention_state_floats;
    b.attention_forward = cuda_attention_forward;
    b.attention_scratch_floats = cuda_attention_scratch_floats;
    b.attention_backward = cuda_attention_backward;
    b.gelu_forward = cuda_gelu_forward;
    b.gelu_backward = cuda_gelu_backward;
    b.swiglu_forward = cuda_swiglu_forward;
    b.swiglu_backward = cuda_swiglu_backward;
    b.residual_forward = cuda_residual_forward;
    b.residual_backward = cuda_residual_backward;
    b.crossentropy_stats = cuda_crossentropy_stats;
    b.crossentropy_combine = cuda_crossentropy_combine;
    b.crossentropy_backward = cuda_crossentropy_backward;
    b.sum_squares = cuda_sum_squares;
    b.scale = cuda_scale;
    b.add_f32 = cuda_add_f32;
    b.adamw_update = cuda_adamw_update;
    return &emu_backend;
}

extern "C" int anv_cuda_device_count(void) { return 1; }
