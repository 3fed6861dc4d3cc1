// kernels/cuda/swiglu.cu: SwiGLU gate of the Llama MLP, bf16 cuda.
//
// The formulas are those of kernels/cpu/swiglu.c:
//   out = silu(g) * up,  silu(g) = g * sigmoid(g),  sigmoid(g) = 1 / (1 + exp(-g))
//   dgate = dout * up * sigmoid(g) * (1 + g (1 - sigmoid(g)))   (overwritten, ops.h)
//   dup   = dout * silu(g)
// For very negative g, expf(-g) overflows to +inf and sigmoid is 0: the right limit.
//
// Pointwise and bandwidth-bound: 16-byte vectors (8 bf16) per array when every pointer
// is 16-byte aligned, a scalar loop for the last n % 8 elements (or for everything when
// a pointer is not aligned); both loops grid-stride. fp32 math, one rounding to bf16 per
// stored value.
// dgate and dup are required (ops.h has no NULL option for them). Every element of
// every array is read before the same element is written, by the same thread, so the
// gradients may alias the inputs.
#include "kernels/cuda/cuda_common.cuh"

#define SWIGLU_THREADS 256                        // pointwise: any multiple of 32 works

__device__ __forceinline__ float swiglu_sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

// out, gate, up (n); vectors [0, nvec) of 8 elements, then scalars [8 nvec, n).
__global__ void swiglu_forward_kernel(bf16 *out, const bf16 *gate, const bf16 *up,
                                      size_t nvec, size_t n) {
    size_t gid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = gid; i < nvec; i += stride) {
        x128<bf16> g = load128(gate + 8 * i), u = load128(up + 8 * i), o;
        #pragma unroll
        for (int k = 0; k < 8; k++) {
            float gk = __bfloat162float(g[k]);
            o[k] = __float2bfloat16_rn(gk * swiglu_sigmoid(gk) * __bfloat162float(u[k]));
        }
        store128(out + 8 * i, o);
    }
    for (size_t i = 8 * nvec + gid; i < n; i += stride) {
        float gk = __bfloat162float(gate[i]);
        out[i] = __float2bfloat16_rn(gk * swiglu_sigmoid(gk) * __bfloat162float(up[i]));
    }
}

// The two gradients of one element (fp32).
__device__ __forceinline__ void swiglu_grad(float dy, float g, float u, float *dg, float *du) {
    float sig = swiglu_sigmoid(g);
    *dg = dy * u * sig * (1.0f + g * (1.0f - sig));
    *du = dy * g * sig;
}

// dgate, dup (n) =; dout, gate, up (n).
__global__ void swiglu_backward_kernel(bf16 *dgate, bf16 *dup, const bf16 *dout,
                                       const bf16 *gate, const bf16 *up, size_t nvec,
                                       size_t n) {
    size_t gid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = gid; i < nvec; i += stride) {
        x128<bf16> dy = load128(dout + 8 * i), g = load128(gate + 8 * i);
        x128<bf16> u = load128(up + 8 * i), dg, du;
        #pragma unroll
        for (int k = 0; k < 8; k++) {
            float a, b;
            swiglu_grad(__bfloat162float(dy[k]), __bfloat162float(g[k]),
                        __bfloat162float(u[k]), &a, &b);
            dg[k] = __float2bfloat16_rn(a);
            du[k] = __float2bfloat16_rn(b);
        }
        store128(dgate + 8 * i, dg);
        store128(dup + 8 * i, du);
    }
    for (size_t i = 8 * nvec + gid; i < n; i += stride) {
        float a, b;
        swiglu_grad(__bfloat162float(dout[i]), __bfloat162float(gate[i]),
                    __bfloat162float(up[i]), &a, &b);
        dgate[i] = __float2bfloat16_rn(a);
        dup[i] = __float2bfloat16_rn(b);
    }
}

void cuda_swiglu_forward(anv_act *out_, const anv_act *gate_, const anv_act *up_, size_t n) {
    bf16 *out = (bf16 *)out_;                                    // (n)
    const bf16 *gate = (const bf16 *)gate_;                      // (n)
    const bf16 *up = (const bf16 *)up_;                          // (n)
    if (n == 0) return;
    size_t nvec = aligned16(out) && aligned16(gate) && aligned16(up) ? n / 8 : 0;
    swiglu_forward_kernel<<<cuda_blocks(nvec > 0 ? nvec : n, SWIGLU_THREADS), SWIGLU_THREADS,
                            0, cuda_stream_compute>>>(out, gate, up, nvec, n);
    CUDA_LAUNCH_CHECK();
}

void cuda_swiglu_backward(anv_act *dgate_, anv_act *dup_, const anv_act *dout_,
                          const anv_act *gate_, const anv_act *up_, size_t n) {
    bf16 *dgate = (bf16 *)dgate_;                                // (n) =
    bf16 *dup = (bf16 *)dup_;                                    // (n) =
    const bf16 *dout = (const bf16 *)dout_;                      // (n)
    const bf16 *gate = (const bf16 *)gate_;                      // (n)
    const bf16 *up = (const bf16 *)up_;                          // (n)
    if (n == 0) return;
    size_t nvec = aligned16(dgate) && aligned16(dup) && aligned16(dout) && aligned16(gate) &&
                          aligned16(up)
                      ? n / 8
                      : 0;
    swiglu_backward_kernel<<<cuda_blocks(nvec > 0 ? nvec : n, SWIGLU_THREADS), SWIGLU_THREADS,
                             0, cuda_stream_compute>>>(dgate, dup, dout, gate, up, nvec, n);
    CUDA_LAUNCH_CHECK();
}
