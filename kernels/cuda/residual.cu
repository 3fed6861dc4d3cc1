// kernels/cuda/residual.cu: residual connection out = a + b, bf16 cuda.
//
// Forward: out = a + b in fp32, rounded once; out may alias a (the residual stream
// updated in place): each element is read by the thread that then writes it, so no
// pointer is __restrict__. Backward: da += dout and db += dout (either may be NULL) are
// the forward in place, each rounded once from the fp32 sum of the old value and dout.
//
// Pointwise and bandwidth-bound: 16-byte vectors (8 bf16) per array when every pointer
// used is 16-byte aligned, a scalar loop for the last n % 8 elements (or everything
// when a pointer is not aligned); both loops grid-stride.
#include "kernels/cuda/cuda_common.cuh"

#define RESIDUAL_THREADS 256                      // pointwise: any multiple of 32 works

// out, a, b (n); vectors [0, nvec) of 8 elements, then scalars [8 nvec, n).
__global__ void residual_forward_kernel(bf16 *out, const bf16 *a, const bf16 *b, size_t nvec,
                                        size_t n) {
    size_t gid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = gid; i < nvec; i += stride) {
        x128<bf16> x = load128(a + 8 * i), y = load128(b + 8 * i), o;
        #pragma unroll
        for (int k = 0; k < 8; k++)
            o[k] = __float2bfloat16_rn(__bfloat162float(x[k]) + __bfloat162float(y[k]));
        store128(out + 8 * i, o);
    }
    for (size_t i = 8 * nvec + gid; i < n; i += stride)
        out[i] = __float2bfloat16_rn(__bfloat162float(a[i]) + __bfloat162float(b[i]));
}

void cuda_residual_forward(anv_act *out_, const anv_act *a_, const anv_act *b_, size_t n) {
    bf16 *out = (bf16 *)out_;                                    // (n), may alias a
    const bf16 *a = (const bf16 *)a_;                            // (n)
    const bf16 *b = (const bf16 *)b_;                            // (n)
    if (n == 0) return;
    size_t nvec = aligned16(out) && aligned16(a) && aligned16(b) ? n / 8 : 0;
    residual_forward_kernel<<<cuda_blocks(nvec > 0 ? nvec : n, RESIDUAL_THREADS),
                              RESIDUAL_THREADS, 0, cuda_stream_compute>>>(out, a, b, nvec, n);
    CUDA_LAUNCH_CHECK();
}

void cuda_residual_backward(anv_act *da, anv_act *db, const anv_act *dout, size_t n) {
    // da (n) += dout, db (n) += dout, either NULL: each is the forward with out = a = d
    if (da != NULL) cuda_residual_forward(da, da, dout, n);
    if (db != NULL) cuda_residual_forward(db, db, dout, n);
}
