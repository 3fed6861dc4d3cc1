// kernels/cuda/gelu.cu: GELU, tanh approximation (GPT-2), bf16 cuda.
//
// The formula and constants are those of kernels/cpu/gelu.c:
//   out = x s,  s = sigmoid(2u) = 0.5 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   dout/dx = s + x * 2 s (1 - s) * du/dx,  du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// For very negative u, expf(-2u) overflows to +inf and s = 1/inf = 0: the right limit,
// and the gradient stays finite (2 x s (1 - s) = 0).
//
// Pointwise and bandwidth-bound: each thread moves 16 bytes (8 bf16) per array per step
// when every pointer is 16-byte aligned; the last n % 8 elements, or all of them when a
// pointer is not aligned, go through the scalar loop of the same kernel. Both loops are
// grid-stride, so any grid size is correct. All math is fp32; each result is rounded to
// bf16 once at the store. The backward accumulates: the old bf16 value of dinp is read,
// the gradient added in fp32, and the sum rounded once.
#include "kernels/cuda/cuda_common.cuh"

#define GELU_SCALING_FACTOR 0.7978845608028654f   // sqrt(2/pi)
#define GELU_CUBIC 0.044715f                      // the approximation's cubic coefficient
#define GELU_THREADS 256                          // pointwise: any multiple of 32 works

__device__ __forceinline__ float gelu_value(float x) {
    float u = GELU_SCALING_FACTOR * (x + GELU_CUBIC * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

__device__ __forceinline__ float gelu_grad(float x) {
    float u = GELU_SCALING_FACTOR * (x + GELU_CUBIC * x * x * x);
    float s = 1.0f / (1.0f + expf(-2.0f * u));
    float du_dx = GELU_SCALING_FACTOR * (1.0f + 3.0f * GELU_CUBIC * x * x);
    return s + 2.0f * x * s * (1.0f - s) * du_dx;
}

// out (n), inp (n); vectors [0, nvec) of 8 elements, then scalars [8 nvec, n).
__global__ void gelu_forward_kernel(bf16 *out, const bf16 *inp, size_t nvec, size_t n) {
    size_t gid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = gid; i < nvec; i += stride) {
        x128<bf16> x = load128(inp + 8 * i), o;
        #pragma unroll
        for (int k = 0; k < 8; k++)
            o[k] = __float2bfloat16_rn(gelu_value(__bfloat162float(x[k])));
        store128(out + 8 * i, o);
    }
    for (size_t i = 8 * nvec + gid; i < n; i += stride)
        out[i] = __float2bfloat16_rn(gelu_value(__bfloat162float(inp[i])));
}

// dinp (n) +=, inp (n), dout (n); dinp may alias dout (each element is read first).
__global__ void gelu_backward_kernel(bf16 *dinp, const bf16 *inp, const bf16 *dout,
                                     size_t nvec, size_t n) {
    size_t gid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = gid; i < nvec; i += stride) {
        x128<bf16> x = load128(inp + 8 * i), dy = load128(dout + 8 * i);
        x128<bf16> dx = load128(dinp + 8 * i);
        #pragma unroll
        for (int k = 0; k < 8; k++) {
            float g = gelu_grad(__bfloat162float(x[k])) * __bfloat162float(dy[k]);
            dx[k] = __float2bfloat16_rn(__bfloat162float(dx[k]) + g);
        }
        store128(dinp + 8 * i, dx);
    }
    for (size_t i = 8 * nvec + gid; i < n; i += stride) {
        float g = gelu_grad(__bfloat162float(inp[i])) * __bfloat162float(dout[i]);
        dinp[i] = __float2bfloat16_rn(__bfloat162float(dinp[i]) + g);
    }
}

// d (n) *= gelu'(x (n)) in place: the gradient w.r.t. gelu's output becomes the one
// w.r.t. its input (matmul.cu's dGELU where the cuBLASLt epilogue is not used).
__global__ void gelu_backward_inplace_kernel(bf16 *d, const bf16 *x, size_t nvec, size_t n) {
    size_t gid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = gid; i < nvec; i += stride) {
        x128<bf16> g = load128(d + 8 * i), xv = load128(x + 8 * i);
        #pragma unroll
        for (int k = 0; k < 8; k++)
            g[k] = __float2bfloat16_rn(__bfloat162float(g[k]) *
                                       gelu_grad(__bfloat162float(xv[k])));
        store128(d + 8 * i, g);
    }
    for (size_t i = 8 * nvec + gid; i < n; i += stride)
        d[i] = __float2bfloat16_rn(__bfloat162float(d[i]) * gelu_grad(__bfloat162float(x[i])));
}

void cuda_gelu_backward_inplace(anv_act *d_, const anv_act *x_, size_t n) {
    bf16 *d = (bf16 *)d_;                                        // (n) *= gelu'(x)
    const bf16 *x = (const bf16 *)x_;                            // (n)
    if (n == 0) return;
    size_t nvec = aligned16(d) && aligned16(x) ? n / 8 : 0;
    gelu_backward_inplace_kernel<<<cuda_blocks(nvec > 0 ? nvec : n, GELU_THREADS),
                                   GELU_THREADS, 0, cuda_stream_compute>>>(d, x, nvec, n);
    CUDA_LAUNCH_CHECK();
}

void cuda_gelu_forward(anv_act *out_, const anv_act *inp_, size_t n) {
    bf16 *out = (bf16 *)out_;                                    // (n)
    const bf16 *inp = (const bf16 *)inp_;                        // (n)
    if (n == 0) return;
    size_t nvec = aligned16(out) && aligned16(inp) ? n / 8 : 0;
    gelu_forward_kernel<<<cuda_blocks(nvec > 0 ? nvec : n, GELU_THREADS), GELU_THREADS, 0,
                          cuda_stream_compute>>>(out, inp, nvec, n);
    CUDA_LAUNCH_CHECK();
}

void cuda_gelu_backward(anv_act *dinp_, const anv_act *inp_, const anv_act *dout_, size_t n) {
    bf16 *dinp = (bf16 *)dinp_;                                  // (n) +=
    const bf16 *inp = (const bf16 *)inp_;                        // (n)
    const bf16 *dout = (const bf16 *)dout_;                      // (n)
    if (n == 0) return;
    size_t nvec = aligned16(dinp) && aligned16(inp) && aligned16(dout) ? n / 8 : 0;
    gelu_backward_kernel<<<cuda_blocks(nvec > 0 ? nvec : n, GELU_THREADS), GELU_THREADS, 0,
                           cuda_stream_compute>>>(dinp, inp, dout, nvec, n);
    CUDA_LAUNCH_CHECK();
}
