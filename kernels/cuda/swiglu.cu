// kernels/cuda/swiglu.cu: SwiGLU gate of the Llama MLP, bf16 cuda.
//
// The formulas are those of kernels/cpu/swiglu.c:
//   out = silu(g) * up,  silu(g) = g * sigmoid(g),  sigmoid(g) = 1 / (1 + exp(-g))
//   dgate = dout * up * sigmoid(g) * (1 + g (1 - sigmoid(g)))   (overwritten, ops.h)
//   dup   = dout * silu(g)
// For very negative g, expf(-g) overflows to +inf and sigmoid is 0: the right limit.
//
// gate and up are the two halves of each row of gu (N,2F) (ops.h), dgate and dup the
// halves of dgu's. Pointwise and bandwidth-bound: a work item is 8 adjacent columns of
// one row, moved as 16-byte vectors (8 bf16) when F % 8 == 0 and every pointer is
// 16-byte aligned (every row and half then starts aligned), else element by element;
// grid-stride. fp32 math, one rounding to bf16 per stored value. Every element is read
// before the same element is written, by the same thread, so dgu may alias gu.
#include "kernels/cuda/cuda_common.cuh"

#define SWIGLU_THREADS 256                        // pointwise: any multiple of 32 works

__device__ __forceinline__ float swiglu_sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

// The gradients of one element (fp32).
__device__ __forceinline__ void swiglu_grad(float dy, float g, float u, float *dg, float *du) {
    float sig = swiglu_sigmoid(g);
    *dg = dy * u * sig * (1.0f + g * (1.0f - sig));
    *du = dy * g * sig;
}

// out (N,F), gu (N,2F). VEC: items of 8 columns as vectors, else of 1 column.
template <bool VEC>
__global__ void swiglu_forward_kernel(bf16 *out, const bf16 *gu, int N, int F) {
    constexpr int W = VEC ? 8 : 1;
    const size_t per_row = (size_t)F / W, items = (size_t)N * per_row;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t w = (size_t)blockIdx.x * blockDim.x + threadIdx.x; w < items; w += stride) {
        const size_t r = w / per_row, c = (w % per_row) * W;
        const bf16 *gate = gu + r * 2 * F + c, *up = gate + F;
        bf16 *o = out + r * F + c;
        if (VEC) {
            x128<bf16> g = load128(gate), u = load128(up), y;
            #pragma unroll
            for (int k = 0; k < 8; k++) {
                float gk = __bfloat162float(g[k]);
                y[k] = __float2bfloat16_rn(gk * swiglu_sigmoid(gk) * __bfloat162float(u[k]));
            }
            store128(o, y);
        } else {
            float gk = __bfloat162float(*gate);
            *o = __float2bfloat16_rn(gk * swiglu_sigmoid(gk) * __bfloat162float(*up));
        }
    }
}

// dgu (N,2F) =; dout (N,F), gu (N,2F).
template <bool VEC>
__global__ void swiglu_backward_kernel(bf16 *dgu, const bf16 *dout, const bf16 *gu, int N,
                                       int F) {
    constexpr int W = VEC ? 8 : 1;
    const size_t per_row = (size_t)F / W, items = (size_t)N * per_row;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t w = (size_t)blockIdx.x * blockDim.x + threadIdx.x; w < items; w += stride) {
        const size_t r = w / per_row, c = (w % per_row) * W;
        const bf16 *gate = gu + r * 2 * F + c, *up = gate + F, *dy = dout + r * F + c;
        bf16 *dgate = dgu + r * 2 * F + c, *dup = dgate + F;
        if (VEC) {
            x128<bf16> y = load128(dy), g = load128(gate), u = load128(up), dg, du;
            #pragma unroll
            for (int k = 0; k < 8; k++) {
                float a, b;
                swiglu_grad(__bfloat162float(y[k]), __bfloat162float(g[k]),
                            __bfloat162float(u[k]), &a, &b);
                dg[k] = __float2bfloat16_rn(a);
                du[k] = __float2bfloat16_rn(b);
            }
            store128(dgate, dg);
            store128(dup, du);
        } else {
            float a, b;
            swiglu_grad(__bfloat162float(*dy), __bfloat162float(*gate), __bfloat162float(*up),
                        &a, &b);
            *dgate = __float2bfloat16_rn(a);
            *dup = __float2bfloat16_rn(b);
        }
    }
}

void cuda_swiglu_forward(anv_act *out_, const anv_act *gu_, int N, int F) {
    bf16 *out = (bf16 *)out_;                                    // (N,F)
    const bf16 *gu = (const bf16 *)gu_;                          // (N,2F)
    if (N <= 0 || F <= 0) return;
    const size_t n = (size_t)N * F;
    if (F % 8 == 0 && aligned16(out) && aligned16(gu)) {
        swiglu_forward_kernel<true><<<cuda_blocks(n / 8, SWIGLU_THREADS), SWIGLU_THREADS, 0,
                                      cuda_stream_compute>>>(out, gu, N, F);
    } else {
        swiglu_forward_kernel<false><<<cuda_blocks(n, SWIGLU_THREADS), SWIGLU_THREADS, 0,
                                       cuda_stream_compute>>>(out, gu, N, F);
    }
    CUDA_LAUNCH_CHECK();
}

void cuda_swiglu_backward(anv_act *dgu_, const anv_act *dout_, const anv_act *gu_, int N,
                          int F) {
    bf16 *dgu = (bf16 *)dgu_;                                    // (N,2F) =
    const bf16 *dout = (const bf16 *)dout_;                      // (N,F)
    const bf16 *gu = (const bf16 *)gu_;                          // (N,2F)
    if (N <= 0 || F <= 0) return;
    const size_t n = (size_t)N * F;
    if (F % 8 == 0 && aligned16(dgu) && aligned16(dout) && aligned16(gu)) {
        swiglu_backward_kernel<true><<<cuda_blocks(n / 8, SWIGLU_THREADS), SWIGLU_THREADS, 0,
                                       cuda_stream_compute>>>(dgu, dout, gu, N, F);
    } else {
        swiglu_backward_kernel<false><<<cuda_blocks(n, SWIGLU_THREADS), SWIGLU_THREADS, 0,
                                        cuda_stream_compute>>>(dgu, dout, gu, N, F);
    }
    CUDA_LAUNCH_CHECK();
}
