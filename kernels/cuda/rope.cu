// kernels/cuda/rope.cu: rotary position embeddings (Llama), in place, bf16 cuda.
//
// Hugging Face "rotate_half" layout, as kernels/cpu/rope.c: within each head, element i
// (i < HS/2) and element i + HS/2 form a pair rotated by the angle t * inv_freq[i],
// whose cos/sin come from the fp32 tables (maxT, HS/2) of rope_tables_fill:
//   forward:  y1 = x1 cos - x2 sin,   y2 = x2 cos + x1 sin
//   backward: the same with sin negated (rotation by -angle; the transpose), in place.
// A thread rotates 8 adjacent pairs: one 16-byte load from each half of the head and
// two 16-byte loads from each table, when HS/2 is a multiple of 8 and x and both tables
// are 16-byte aligned (true for HS = 64 and 128, every Llama); otherwise one pair per
// thread with scalar accesses. Each pair is read and written by one thread only, so
// the in-place update has no race. fp32 math, one rounding per stored element.
#include "kernels/cuda/cuda_common.cuh"

#define ROPE_THREADS 256                          // any multiple of 32 works

// x (B,T,H,HS) in place; cos_tab, sin_tab (maxT, HS/2). PER pairs per work item (8 or
// 1), nitems = B*T*H*(HS/2) / PER work items. sign = +1 forward, -1 backward.
template <int PER>
__global__ void rope_kernel(bf16 *x, const float *cos_tab, const float *sin_tab, size_t nitems,
                            int T, int H, int HS, float sign) {
    int half = HS / 2;
    int groups = half / PER;                                     // work items per head
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t w = (size_t)blockIdx.x * blockDim.x + threadIdx.x; w < nitems; w += stride) {
        int i0 = (int)(w % groups) * PER;                        // first pair in the head
        size_t bth = w / groups;                                 // (b, t, h) flattened
        int t = (int)((bth / H) % T);
        bf16 *x1 = x + bth * HS + i0;                            // (PER) first half
        bf16 *x2 = x1 + half;                                    // (PER) second half
        const float *cos_t = cos_tab + (size_t)t * half + i0;    // (PER)
        const float *sin_t = sin_tab + (size_t)t * half + i0;    // (PER)
        if (PER == 8) {
            x128<bf16> a = load128(x1), d = load128(x2);
            x128<float> c0 = load128(cos_t), c1 = load128(cos_t + 4);
            x128<float> s0 = load128(sin_t), s1 = load128(sin_t + 4);
            #pragma unroll
            for (int k = 0; k < 8; k++) {
                float c = k < 4 ? c0[k] : c1[k - 4];
                float s = sign * (k < 4 ? s0[k] : s1[k - 4]);
                float av = __bfloat162float(a[k]), dv = __bfloat162float(d[k]);
                a[k] = __float2bfloat16_rn(av * c - dv * s);
                d[k] = __float2bfloat16_rn(dv * c + av * s);
            }
            store128(x1, a);
            store128(x2, d);
        } else {
            float c = cos_t[0], s = sign * sin_t[0];
            float av = __bfloat162float(x1[0]), dv = __bfloat162float(x2[0]);
            x1[0] = __float2bfloat16_rn(av * c - dv * s);
            x2[0] = __float2bfloat16_rn(dv * c + av * s);
        }
    }
}

static void rope_launch(bf16 *x, const float *cos_tab, const float *sin_tab, int B, int T,
                        int H, int HS, float sign) {
    int half = HS / 2;
    size_t npairs = (size_t)B * T * H * half;
    if (npairs == 0) return;
    if (half % 8 == 0 && aligned16(x) && aligned16(cos_tab) && aligned16(sin_tab)) {
        size_t nitems = npairs / 8;
        rope_kernel<8><<<cuda_blocks(nitems, ROPE_THREADS), ROPE_THREADS, 0,
                         cuda_stream_compute>>>(x, cos_tab, sin_tab, nitems, T, H, HS, sign);
    } else {
        rope_kernel<1><<<cuda_blocks(npairs, ROPE_THREADS), ROPE_THREADS, 0,
                         cuda_stream_compute>>>(x, cos_tab, sin_tab, npairs, T, H, HS, sign);
    }
    CUDA_LAUNCH_CHECK();
}

void cuda_rope_forward(anv_act *x, const float *cos_tab, const float *sin_tab, int B, int T,
                       int H, int HS) {
    // x (B,T,H,HS) in place; cos_tab, sin_tab (maxT, HS/2)
    rope_launch((bf16 *)x, cos_tab, sin_tab, B, T, H, HS, 1.0f);
}

void cuda_rope_backward(anv_act *dx, const float *cos_tab, const float *sin_tab, int B, int T,
                        int H, int HS) {
    // dx (B,T,H,HS) in place: gradient w.r.t. the rotated tensor in, unrotated out
    rope_launch((bf16 *)dx, cos_tab, sin_tab, B, T, H, HS, -1.0f);
}
