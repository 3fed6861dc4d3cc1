// tests/emu/emu_backend.cc: the backend the gpu suite's op test (tests/gpu/test_gpu_ops.c)
// runs against in the unit suite, where there is no GPU: the members whose CUDA kernels
// run under the host emulation (tests/emu/emu_cuda.h) are the cuda backend's own
// functions, compiled from kernels/cuda/<op>.cu by tests/emu/cu2emu.py; every other
// member is the bf16 stand-in of tests/unit/bf16_backend.c (real bf16 storage, fp32
// cpu ops), which keeps the same memory format (host memory, raw bf16). So the test
// compares the CUDA kernels' code, executed, with the fp32 cpu reference.
//
// It provides anv_backend_cuda / anv_cuda_device_count in place of kernels/cuda (the
// test binary links the cpu-only objects, never backend.cu).
#include "kernels/cuda/cuda_common.cuh"
#include "tests/unit/bf16_backend.h"

cudaStream_t cuda_stream_compute = nullptr;   // the emulation has no streams

static anv_backend emu_backend;

extern "C" const anv_backend *anv_backend_cuda(int device) {
    (void)device;
    emu_backend = *anv_backend_bf16_emulated();
    emu_backend.name = "cuda kernels emulated on the host (attention; the rest bf16 stand-in)";
    emu_backend.attention_state_floats = cuda_attention_state_floats;
    emu_backend.attention_forward = cuda_attention_forward;
    emu_backend.attention_scratch_floats = cuda_attention_scratch_floats;
    emu_backend.attention_backward = cuda_attention_backward;
    return &emu_backend;
}

extern "C" int anv_cuda_device_count(void) { return 1; }
