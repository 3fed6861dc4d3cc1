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
//
// train.deterministic takes the sync: the tokens come back to the host, which groups
// the positions of each token in position order (a counting sort, O(N) with a counter
// per vocabulary row) and cuts each group into chunks of at most DET_CHUNK positions;
// a warp sums one chunk's dout rows for 32 x PER channels in order, straight into dwte
// when the token has one chunk, else into a partial row that a second kernel adds up,
// chunk by chunk in order. Every element is written by one thread in a fixed order, so
// the bits are the same every run; a frequent token costs its chunks, not one long
// serial sum.
#include <vector>

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

// ---- train.deterministic ------------------------------------------------------------
#define DET_CHUNK 64                              // positions per chunk
#define DET_WARPS 4                               // warps (items) per block

// One chunk: positions list[start, start+len) of vocabulary row `row` (within the
// shard); part >= 0: its partial row in `partial` (chunk index), -1: add into dwte.
struct enc_chunk {
    int start, len, row, part;
};
// A token of several chunks: partial rows [first, first + n) add into dwte[row].
struct enc_multi {
    int row, first, n;
};

// The calling lane's work in the deterministic kernels: item (warp of the grid) = (index
// < n, slice of 32 * PER channels); *ix the index, *c0 the lane's first channel. False
// when the lane has none.
template <int PER>
__device__ __forceinline__ bool det_item(int n, int C, int *ix, int *c0) {
    const int slices = (C + 32 * PER - 1) / (32 * PER);
    const int item = blockIdx.x * DET_WARPS + (int)(threadIdx.x >> 5);
    if (item >= n * slices) return false;
    *ix = item / slices;
    *c0 = (item % slices) * 32 * PER + (int)(threadIdx.x & 31) * PER;
    return *c0 < C;
}

// item = (chunk, slice of 32*PER channels): the chunk's dout rows summed in order.
template <int PER>
__global__ void encoder_det_chunks_kernel(float *dwte, float *partial, const bf16 *dout,
                                          const int32_t *list, const enc_chunk *chunks,
                                          int nchunks, int C) {
    int ix, c0;
    if (!det_item<PER>(nchunks, C, &ix, &c0)) return;
    const enc_chunk ch = chunks[ix];
    float acc[PER];
    #pragma unroll
    for (int k = 0; k < PER; k++) acc[k] = 0.0f;
    for (int i = 0; i < ch.len; i++)
        add_chunk<PER>(acc, dout + (size_t)list[ch.start + i] * C + c0);
    float *dst = ch.part >= 0 ? partial + (size_t)ch.part * C + c0
                              : dwte + (size_t)ch.row * C + c0;
    #pragma unroll
    for (int k = 0; k < PER; k++) dst[k] = ch.part >= 0 ? acc[k] : dst[k] + acc[k];
}

// item = (token of several chunks, slice): its partial rows added in chunk order.
template <int PER>
__global__ void encoder_det_multi_kernel(float *dwte, const float *partial,
                                         const enc_multi *multi, int nmulti, int C) {
    int ix, c0;
    if (!det_item<PER>(nmulti, C, &ix, &c0)) return;
    const enc_multi m = multi[ix];
    float acc[PER];
    #pragma unroll
    for (int k = 0; k < PER; k++) acc[k] = 0.0f;
    for (int i = 0; i < m.n; i++) {
        const float *p = partial + (size_t)(m.first + i) * C + c0;
        #pragma unroll
        for (int k = 0; k < PER; k++) acc[k] += p[k];
    }
    float *dst = dwte + (size_t)m.row * C + c0;
    #pragma unroll
    for (int k = 0; k < PER; k++) dst[k] += acc[k];
}

// The two kernels of the deterministic dwte, PER channels per lane.
template <int PER>
static void encoder_det_launch(float *dwte, float *partial, const bf16 *dout,
                               const int32_t *list, const enc_chunk *chunks, int nchunks,
                               const enc_multi *multi, int nmulti, int C) {
    const size_t slices = (size_t)(C + 32 * PER - 1) / (32 * PER);
    encoder_det_chunks_kernel<PER><<<cuda_blocks((size_t)nchunks * slices, DET_WARPS),
                                     DET_WARPS * 32, 0, cuda_stream_compute>>>(
        dwte, partial, dout, list, chunks, nchunks, C);
    CUDA_LAUNCH_CHECK();
    if (nmulti == 0) return;
    encoder_det_multi_kernel<PER><<<cuda_blocks((size_t)nmulti * slices, DET_WARPS),
                                    DET_WARPS * 32, 0, cuda_stream_compute>>>(
        dwte, partial, multi, nmulti, C);
    CUDA_LAUNCH_CHECK();
}

// Host side of the deterministic dwte: buffers kept between calls.
static struct {
    int32_t *tokens = nullptr;                 // pinned: (N) the tokens
    size_t tokens_cap = 0;
    unsigned char *up = nullptr;               // pinned: list, chunks, multi to upload
    size_t up_cap = 0;
    std::vector<int> count, seen, cursor;      // per vocabulary row / distinct rows
    std::vector<int32_t> list;
    std::vector<enc_chunk> chunks;
    std::vector<enc_multi> multi;
    void *dev = nullptr;                       // list, chunks, multi on the device
    size_t dev_cap = 0;
    void *partial = nullptr;                   // (partial rows, C) fp32
    size_t partial_cap = 0;
} enc_det;

static void encoder_backward_wte_det(float *dwte, const bf16 *dout, const int32_t *tokens,
                                     int N, int C, int v0, int Vs, int vec) {
    auto &E = enc_det;
    // the tokens to the host: the one sync of this path
    size_t tb = (size_t)N * sizeof(int32_t);
    if (tb > E.tokens_cap) {
        if (E.tokens != nullptr) CUDA_CHECK(cudaFreeHost(E.tokens));
        CUDA_CHECK(cudaMallocHost(&E.tokens, tb));
        E.tokens_cap = tb;
    }
    CUDA_CHECK(cudaMemcpyAsync(E.tokens, tokens, tb, cudaMemcpyDeviceToHost,
                               cuda_stream_compute));
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_compute));
    // group the positions by row, in position order (counting sort over the rows seen)
    if ((int)E.count.size() < Vs) E.count.assign((size_t)Vs, 0);
    E.seen.clear();
    for (int i = 0; i < N; i++) {
        const int r = E.tokens[i] - v0;
        if (r < 0 || r >= Vs) continue;                          // another shard's token
        if (E.count[(size_t)r]++ == 0) E.seen.push_back(r);
    }
    E.list.resize((size_t)N);
    E.chunks.clear();
    E.multi.clear();
    E.cursor.resize(E.seen.size());
    int at = 0, parts = 0;
    for (size_t s = 0; s < E.seen.size(); s++) {
        const int r = E.seen[s], n = E.count[(size_t)r];
        E.cursor[s] = at;
        const int nch = (n + DET_CHUNK - 1) / DET_CHUNK;
        if (nch > 1) E.multi.push_back(enc_multi{r, parts, nch});
        for (int c = 0; c < nch; c++) {
            const int len = n - c * DET_CHUNK < DET_CHUNK ? n - c * DET_CHUNK : DET_CHUNK;
            E.chunks.push_back(enc_chunk{at + c * DET_CHUNK, len, r, nch > 1 ? parts++ : -1});
        }
        E.count[(size_t)r] = (int)s;                             // row -> its group
        at += n;
    }
    for (int i = 0; i < N; i++) {
        const int r = E.tokens[i] - v0;
        if (r >= 0 && r < Vs) E.list[(size_t)E.cursor[(size_t)E.count[(size_t)r]]++] = i;
    }
    for (int r : E.seen) E.count[(size_t)r] = 0;                 // ready for the next call
    if (E.chunks.empty()) return;
    // upload list, chunks, multi (one buffer; the pinned staging is free again: the
    // stream was idle at the sync above, and the next call syncs before rewriting it)
    const size_t lb = (size_t)at * sizeof(int32_t), cb = E.chunks.size() * sizeof(enc_chunk),
                 mb = E.multi.size() * sizeof(enc_multi);
    const size_t lb16 = (lb + 15) / 16 * 16, cb16 = (cb + 15) / 16 * 16;
    const size_t total = lb16 + cb16 + mb;
    unsigned char *dev = (unsigned char *)cuda_scratch(&E.dev, &E.dev_cap, total);
    if (total > E.up_cap) {
        if (E.up != nullptr) CUDA_CHECK(cudaFreeHost(E.up));
        CUDA_CHECK(cudaMallocHost(&E.up, total));
        E.up_cap = total;
    }
    memcpy(E.up, E.list.data(), lb);
    memcpy(E.up + lb16, E.chunks.data(), cb);
    if (mb) memcpy(E.up + lb16 + cb16, E.multi.data(), mb);
    CUDA_CHECK(cudaMemcpyAsync(dev, E.up, total, cudaMemcpyHostToDevice, cuda_stream_compute));
    float *partial = parts > 0 ? (float *)cuda_scratch(&E.partial, &E.partial_cap,
                                                       (size_t)parts * C * sizeof(float))
                               : nullptr;
    const int32_t *dlist = (const int32_t *)dev;
    const enc_chunk *dchunks = (const enc_chunk *)(dev + lb16);
    const enc_multi *dmulti = (const enc_multi *)(dev + lb16 + cb16);
    const int nchunks = (int)E.chunks.size(), nmulti = (int)E.multi.size();
    if (vec)
        encoder_det_launch<8>(dwte, partial, dout, dlist, dchunks, nchunks, dmulti, nmulti, C);
    else
        encoder_det_launch<1>(dwte, partial, dout, dlist, dchunks, nchunks, dmulti, nmulti, C);
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
    if (dwte != NULL && cuda_deterministic) {
        encoder_backward_wte_det(dwte, dout, tokens, B * T, C, v0, Vs, vec && aligned16(dwte));
    } else if (dwte != NULL) {
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
