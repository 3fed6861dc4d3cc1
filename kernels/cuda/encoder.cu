// kernels/cuda/encoder.cu: token (+ optional learned position) embedding, bf16 cuda.
//
// Semantics are those of kernels/cpu/encoder.c. wte holds the vocabulary rows
// [v0, v0+Vs) of one tensor-parallel shard; a token outside the shard gathers a zero
// row and scatters nothing, so the P shards' outputs sum to the unsharded embedding.
//
// Forward is a gather: a thread writes 8 channels of one (b,t) row with 16-byte loads
// and stores when C % 8 == 0 and out, wte, wpe are 16-byte aligned, else one channel.
// wte row + wpe row are added in fp32 and rounded to bf16 once.
//
// Backward, dwpe (fp32): a thread owns 8 (or 1) channels of one position t and sums
// dout over the batch in order b = 0..B-1, then adds the sum into dwpe: no two threads
// write the same element, so the result is deterministic.
//
// Backward, dwte (fp32): a scatter-add with fp32 atomics, a thread per 8 (or 1)
// channels of one (b,t) row. This is NOT bitwise deterministic (the order in which
// repeated tokens meet in an element varies from run to run; the sum is the same up to
// fp32 rounding). A deterministic scheme needs the (b,t) rows grouped by token: the
// tokens are device memory here, so the host cannot bucket them without a sync (llm.c
// does it on the host from its host copy of the batch), and a device sort needs scratch
// memory the op's signature does not provide; without either, the race-free schemes
// found either scan all N tokens per token (O(N^2)) or serialise a frequent token's
// rows (a pad token repeated 30k times) in one warp. Atomics instead cost one red.add
// per element with no ordering, bounded by L2 atomic throughput (N*C of them, four to
// a float4 red.add on sm_90), which is small next to the step's matmuls.
#include "kernels/cuda/cuda_common.cuh"

#define ENCODER_THREADS 256                       // any multiple of 32 works

// acc (PER) += src (PER) in fp32: one 16-byte load when PER is 8, else one element.
template <int PER>
__device__ __forceinline__ void add_chunk(float *acc, const bf16 *src) {
    if (PER == 8) {
        x128<bf16> v = load128(src);
        #pragma unroll
        for (int k = 0; k < PER; k++) acc[k] += __bfloat162float(v[k]);
    } else {
        acc[0] += __bfloat162float(src[0]);
    }
}

// out (B,T,C); tokens (B,T); wte (Vs,C) rows [v0, v0+Vs); wpe (maxT,C) or NULL.
// PER channels per work item (8 or 1); nitems = B*T*C / PER.
template <int PER>
__global__ void encoder_forward_kernel(bf16 *out, const int32_t *tokens, const bf16 *wte,
                                       const bf16 *wpe, size_t nitems, int T, int C, int v0,
                                       int Vs) {
    int groups = C / PER;                                        // work items per row
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t w = (size_t)blockIdx.x * blockDim.x + threadIdx.x; w < nitems; w += stride) {
        int c0 = (int)(w % groups) * PER;
        size_t bt = w / groups;                                  // (b,t) flattened
        int t = (int)(bt % T);
        int ix = tokens[bt] - v0;                                // row in this shard
        float acc[PER];
        #pragma unroll
        for (int k = 0; k < PER; k++) acc[k] = 0.0f;
        if (ix >= 0 && ix < Vs) {
            const bf16 *src = wte + (size_t)ix * C + c0;         // (PER)
            add_chunk<PER>(acc, src);
        }
        if (wpe != NULL) {
            const bf16 *src = wpe + (size_t)t * C + c0;          // (PER)
            add_chunk<PER>(acc, src);
        }
        bf16 *dst = out + bt * C + c0;                           // (PER)
        if (PER == 8) {
            x128<bf16> o;
            #pragma unroll
            for (int k = 0; k < PER; k++) o[k] = __float2bfloat16_rn(acc[k]);
            store128(dst, o);
        } else {
            dst[0] = __float2bfloat16_rn(acc[0]);
        }
    }
}

// dwte (Vs,C) += scatter of dout (B,T,C) over tokens (B,T) in [v0, v0+Vs), by atomics.
// PER channels per work item (8 or 1); nitems = B*T*C / PER. With PER = 8, dwte and
// dout are 16-byte aligned and C % 8 == 0.
template <int PER>
__global__ void encoder_backward_wte_kernel(float *dwte, const bf16 *dout,
                                            const int32_t *tokens, size_t nitems, int C,
                                            int v0, int Vs) {
    int groups = C / PER;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t w = (size_t)blockIdx.x * blockDim.x + threadIdx.x; w < nitems; w += stride) {
        int c0 = (int)(w % groups) * PER;
        size_t bt = w / groups;
        int ix = tokens[bt] - v0;
        if (ix < 0 || ix >= Vs) continue;                        // another shard's token
        const bf16 *src = dout + bt * C + c0;                    // (PER)
        float *dst = dwte + (size_t)ix * C + c0;                 // (PER)
        if (PER == 8) {
            x128<bf16> v = load128(src);
#if __CUDA_ARCH__ >= 900
            // sm_90 has 16-byte float4 atomics: a quarter of the atomic operations
            atomicAdd(reinterpret_cast<float4 *>(dst),
                      make_float4(__bfloat162float(v[0]), __bfloat162float(v[1]),
                                  __bfloat162float(v[2]), __bfloat162float(v[3])));
            atomicAdd(reinterpret_cast<float4 *>(dst + 4),
                      make_float4(__bfloat162float(v[4]), __bfloat162float(v[5]),
                                  __bfloat162float(v[6]), __bfloat162float(v[7])));
#else
            #pragma unroll
            for (int k = 0; k < PER; k++) atomicAdd(dst + k, __bfloat162float(v[k]));
#endif
        } else {
            atomicAdd(dst, __bfloat162float(src[0]));
        }
    }
}

// dwpe (maxT,C) += dout (B,T,C) summed over b in order (deterministic). PER channels per
// work item (8 or 1); nitems = T*C / PER. With PER = 8, dout is 16-byte aligned.
template <int PER>
__global__ void encoder_backward_wpe_kernel(float *dwpe, const bf16 *dout, size_t nitems,
                                            int B, int T, int C) {
    int groups = C / PER;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t w = (size_t)blockIdx.x * blockDim.x + threadIdx.x; w < nitems; w += stride) {
        int c0 = (int)(w % groups) * PER;
        size_t t = w / groups;
        float acc[PER];
        #pragma unroll
        for (int k = 0; k < PER; k++) acc[k] = 0.0f;
        for (int b = 0; b < B; b++) {
            const bf16 *src = dout + ((size_t)b * T + t) * C + c0;   // (PER)
            add_chunk<PER>(acc, src);
        }
        float *dst = dwpe + t * C + c0;                          // (PER)
        #pragma unroll
        for (int k = 0; k < PER; k++) dst[k] += acc[k];
    }
}

void cuda_encoder_forward(anv_act *out_, const int32_t *tokens, const anv_act *wte_,
                          const anv_act *wpe_, int B, int T, int C, int v0, int Vs) {
    bf16 *out = (bf16 *)out_;                                    // (B,T,C)
    const bf16 *wte = (const bf16 *)wte_;                        // (Vs,C)
    const bf16 *wpe = (const bf16 *)wpe_;                        // (maxT,C) or NULL
    size_t n = (size_t)B * T * C;
    if (n == 0) return;
    if (C % 8 == 0 && aligned16(out) && aligned16(wte) && aligned16(wpe)) {
        encoder_forward_kernel<8><<<cuda_blocks(n / 8, ENCODER_THREADS), ENCODER_THREADS, 0,
                                    cuda_stream_compute>>>(out, tokens, wte, wpe, n / 8, T, C,
                                                           v0, Vs);
    } else {
        encoder_forward_kernel<1><<<cuda_blocks(n, ENCODER_THREADS), ENCODER_THREADS, 0,
                                    cuda_stream_compute>>>(out, tokens, wte, wpe, n, T, C, v0,
                                                           Vs);
    }
    CUDA_LAUNCH_CHECK();
}

void cuda_encoder_backward(float *dwte, float *dwpe, const anv_act *dout_,
                           const int32_t *tokens, int B, int T, int C, int v0, int Vs) {
    // dwte (Vs,C) += or NULL, dwpe (maxT,C) += or NULL, tokens (B,T)
    const bf16 *dout = (const bf16 *)dout_;                      // (B,T,C)
    size_t n = (size_t)B * T * C;
    if (n == 0) return;
    int vec = C % 8 == 0 && aligned16(dout);
    if (dwte != NULL) {
        if (vec && aligned16(dwte)) {
            encoder_backward_wte_kernel<8><<<cuda_blocks(n / 8, ENCODER_THREADS),
                                             ENCODER_THREADS, 0, cuda_stream_compute>>>(
                dwte, dout, tokens, n / 8, C, v0, Vs);
        } else {
            encoder_backward_wte_kernel<1><<<cuda_blocks(n, ENCODER_THREADS), ENCODER_THREADS,
                                             0, cuda_stream_compute>>>(dwte, dout, tokens, n,
                                                                       C, v0, Vs);
        }
        CUDA_LAUNCH_CHECK();
    }
    if (dwpe != NULL) {
        size_t m = (size_t)T * C;
        if (vec) {
            encoder_backward_wpe_kernel<8><<<cuda_blocks(m / 8, ENCODER_THREADS),
                                             ENCODER_THREADS, 0, cuda_stream_compute>>>(
                dwpe, dout, m / 8, B, T, C);
        } else {
            encoder_backward_wpe_kernel<1><<<cuda_blocks(m, ENCODER_THREADS), ENCODER_THREADS,
                                             0, cuda_stream_compute>>>(dwpe, dout, m, B, T, C);
        }
        CUDA_LAUNCH_CHECK();
    }
}
