// kernels/cuda/adamw.cu: the optimizer ops of the cuda backend: sum of squares (global
// gradient norm), scale, add_f32 (tied-embedding gradient exchange), and AdamW.
//
// Multi-tensor: the caller passes a host array of segments (elements [off, off+n) of
// flat fp32 buffers, each with its weight decay), typically a few hundred. Each call
// cuts every segment into chunks of OPT_CHUNK elements and numbers the chunks of all
// segments consecutively; a table {off, n, first chunk, weight decay, vector flag} per
// segment is written into a pinned host buffer, copied to the device on the compute
// stream, and ONE grid-stride kernel walks all chunks: a block takes chunk c, finds its
// segment by binary search over the first-chunk column (thread 0, shared with the
// block) and processes that chunk. The pinned and device tables are allocated once and
// grown when a longer list comes; an event guards the pinned table against being
// rewritten while its previous copy is still queued.
//
// sum_squares: each chunk's sum of squares is accumulated in fp32 (64 squares per
// thread, then a block tree) and written to partial[c]; a second one-block kernel adds
// the partials in double in a fixed order, and the result (8 bytes) is copied back:
// this op waits. Deterministic, and the fp32 part only ever sums 16K terms.
//
// adamw_update: exactly the arithmetic of kernels/cpu/adamw.c, with the bias
// corrections 1 / (1 - b^t) computed once in double on the host; the fp32 master weight
// is updated and the bf16 working weight becomes master rounded to nearest even. The
// cuda backend has no fp32 working weights, so master must not be NULL. Per element it
// moves 30 bytes (master, grad, m, v read; master, m, v written as fp32, param as
// bf16), with 16-byte accesses (8-byte for param) where the segment start is aligned.
//
// Numerics vs the fp32 cpu reference: the update itself is fp32 like the CPU's (nvcc
// contracts a*b+c into fused multiply-adds, so the last bit may differ); the bf16
// param differs from the CPU's fp32 param by the rounding (relative 2^-9).
// sum_squares agrees with the CPU's double sum to about 1e-6 relative.
#include <math.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

// Elements per chunk: enough work per block (64 per thread at 256 threads) to amortize
// the segment lookup, small enough that GPT-2 124M (124M parameters) gives ~7600
// chunks to spread over the SMs; a multiple of 4, so a chunk starts as aligned as its
// segment does.
#define OPT_CHUNK 16384
#define OPT_THREADS 256
// Grid cap of the chunk-walking kernels: 8 resident blocks of 256 threads fill an SM.
#define OPT_BLOCKS_PER_SM 8
// Threads of the final double reduction of sum_squares (one block).
#define OPT_FINAL_THREADS 512

// One segment as the kernels see it.
typedef struct opt_seg {
    size_t off, n;               // elements [off, off + n) of every buffer
    unsigned first_chunk;        // number of the segment's first chunk over all segments
    float weight_decay;
    int vec;                     // 1: every buffer is aligned for vector access at off
    int pad_;                    // keeps the struct a multiple of 8 bytes (32)
} opt_seg;

// A segment table: pinned host copy, device copy, both of `cap` entries.
typedef struct opt_table {
    opt_seg *host;
    opt_seg *dev;
    int cap;
    cudaEvent_t uploaded;        // recorded after the last copy from host
} opt_table;

static opt_table opt_sumsq_table, opt_adamw_table;

// Returns the pinned host table with room for nseg entries, free to be written.
static opt_seg *opt_table_reserve(opt_table *t, int nseg) {
    if (t->uploaded == NULL)
        CUDA_CHECK(cudaEventCreateWithFlags(&t->uploaded, cudaEventDisableTiming));
    // the previous copy out of t->host must be done before it is rewritten (a
    // never-recorded event counts as done)
    CUDA_CHECK(cudaEventSynchronize(t->uploaded));
    if (nseg > t->cap) {
        int cap = nseg > 2 * t->cap ? nseg : 2 * t->cap;
        // queued kernels may still read the old device table
        CUDA_CHECK(cudaStreamSynchronize(cuda_stream_compute));
        if (t->host != NULL) CUDA_CHECK(cudaFreeHost(t->host));
        if (t->dev != NULL) CUDA_CHECK(cudaFree(t->dev));
        CUDA_CHECK(cudaMallocHost(&t->host, (size_t)cap * sizeof(opt_seg)));
        CUDA_CHECK(cudaMalloc(&t->dev, (size_t)cap * sizeof(opt_seg)));
        t->cap = cap;
    }
    return t->host;
}

// Queues the copy of the first nseg host entries to the device; returns the device table.
static const opt_seg *opt_table_upload(opt_table *t, int nseg) {
    CUDA_CHECK(cudaMemcpyAsync(t->dev, t->host, (size_t)nseg * sizeof(opt_seg),
                               cudaMemcpyHostToDevice, cuda_stream_compute));
    CUDA_CHECK(cudaEventRecord(t->uploaded, cuda_stream_compute));
    return t->dev;
}

// Fills tab (nseg) from segs and returns the total number of chunks. `vec` is set
// where aligned_base (every buffer's base is aligned) holds and off is a multiple of 4
// elements (16 bytes of fp32, 8 of bf16).
static size_t opt_table_fill(opt_seg *tab, const anv_seg *segs, int nseg, int aligned_base) {
    size_t chunks = 0;
    for (int i = 0; i < nseg; i++) {
        if (chunks > 0xffffffffu)
            anv_fatal(__FILE__, __LINE__, "opt_table_fill", "more than 2^32 chunks");
        tab[i].off = segs[i].off;
        tab[i].n = segs[i].n;
        tab[i].first_chunk = (unsigned)chunks;
        tab[i].weight_decay = segs[i].weight_decay;
        tab[i].vec = aligned_base && segs[i].off % 4 == 0;
        tab[i].pad_ = 0;
        chunks += (segs[i].n + OPT_CHUNK - 1) / OPT_CHUNK;
    }
    if (chunks > 0xffffffffu)
        anv_fatal(__FILE__, __LINE__, "opt_table_fill", "more than 2^32 chunks");
    return chunks;
}

// The segment holding chunk c: the last one whose first chunk is <= c (empty segments
// share their first chunk with the next one and are skipped that way).
__device__ __forceinline__ int opt_find_seg(const opt_seg *segs, int nseg, unsigned c) {
    int lo = 0, hi = nseg - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (segs[mid].first_chunk <= c) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

static unsigned opt_grid(size_t chunks) {
    size_t cap = (size_t)cuda_sm_count * OPT_BLOCKS_PER_SM;
    return (unsigned)(chunks < cap ? chunks : cap);
}

// ----------------------------------------------------------------------------
// sum of squares

// partial (nchunks) OVERWRITTEN: partial[c] = sum of x^2 over chunk c.
__global__ void __launch_bounds__(OPT_THREADS)
sumsq_chunks_kernel(float *partial, const float *x, const opt_seg *segs, int nseg,
                    unsigned nchunks) {
    __shared__ float sh[32];
    __shared__ int sh_seg;
    for (unsigned c = blockIdx.x; c < nchunks; c += gridDim.x) {
        if (threadIdx.x == 0) sh_seg = opt_find_seg(segs, nseg, c);
        __syncthreads();
        const opt_seg *s = &segs[sh_seg];
        size_t start = (size_t)(c - s->first_chunk) * OPT_CHUNK;
        size_t len = s->n - start < OPT_CHUNK ? s->n - start : OPT_CHUNK;
        const float *p = x + s->off + start;                      // (len)
        float acc = 0.0f;
        strided_vec<4>(
            len, threadIdx.x, blockDim.x, s->vec,
            [&](size_t i) {
                x128<float> v = load128(p + 4 * i);
                acc += v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3];
            },
            [&](size_t i) { acc += p[i] * p[i]; });
        // block_sum ends with a barrier: every thread has read sh_seg before thread 0
        // writes the next one
        acc = block_sum(acc, sh);
        if (threadIdx.x == 0) partial[c] = acc;
    }
}

// out (1) OVERWRITTEN with the sum of partial (n) in double, in a fixed order.
__global__ void __launch_bounds__(OPT_FINAL_THREADS)
sumsq_final_kernel(double *out, const float *partial, unsigned n) {
    __shared__ double sh[OPT_FINAL_THREADS];
    double acc = 0.0;
    for (unsigned i = threadIdx.x; i < n; i += blockDim.x) acc += (double)partial[i];
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int s = OPT_FINAL_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = sh[0];
}

static void *opt_partial;                // (chunks) fp32 per-chunk sums
static size_t opt_partial_bytes;
static double *opt_result;               // (1) the final sum, device

extern "C" double cuda_sum_squares(const float *x, const anv_seg *segs, int nseg) {
    // x: flat fp32 buffer; segs (nseg) host array of ranges of x
    if (nseg <= 0) return 0.0;
    opt_seg *tab = opt_table_reserve(&opt_sumsq_table, nseg);
    size_t chunks = opt_table_fill(tab, segs, nseg, aligned16(x));
    if (chunks == 0) return 0.0;
    const opt_seg *dtab = opt_table_upload(&opt_sumsq_table, nseg);

    float *partial = (float *)cuda_scratch(&opt_partial, &opt_partial_bytes,
                                           chunks * sizeof(float));   // (chunks)
    if (opt_result == NULL) CUDA_CHECK(cudaMalloc(&opt_result, sizeof(double)));

    sumsq_chunks_kernel<<<opt_grid(chunks), OPT_THREADS, 0, cuda_stream_compute>>>(
        partial, x, dtab, nseg, (unsigned)chunks);
    CUDA_LAUNCH_CHECK();
    sumsq_final_kernel<<<1, OPT_FINAL_THREADS, 0, cuda_stream_compute>>>(
        opt_result, partial, (unsigned)chunks);
    CUDA_LAUNCH_CHECK();
    double sum = 0.0;
    CUDA_CHECK(cudaMemcpyAsync(&sum, opt_result, sizeof sum, cudaMemcpyDeviceToHost,
                               cuda_stream_compute));
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_compute));
    return sum;
}

// ----------------------------------------------------------------------------
// scale and add

// x (n) *= s. VEC: x 16-byte aligned, 4 per step; scalar tail.
template <bool VEC>
__global__ void scale_kernel(float *x, float s, size_t n) {
    strided_vec<4>(
        n, (size_t)blockIdx.x * blockDim.x + threadIdx.x, (size_t)gridDim.x * blockDim.x, VEC,
        [&](size_t i) {
            x128<float> v = load128(x + 4 * i);
            for (int k = 0; k < 4; k++) v[k] *= s;
            store128(x + 4 * i, v);
        },
        [&](size_t i) { x[i] *= s; });
}

// dst (n) += src (n). VEC: both 16-byte aligned, 4 per step; scalar tail.
template <bool VEC>
__global__ void add_f32_kernel(float *dst, const float *src, size_t n) {
    strided_vec<4>(
        n, (size_t)blockIdx.x * blockDim.x + threadIdx.x, (size_t)gridDim.x * blockDim.x, VEC,
        [&](size_t i) {
            x128<float> d = load128(dst + 4 * i);
            x128<float> s = load128(src + 4 * i);
            for (int k = 0; k < 4; k++) d[k] += s[k];
            store128(dst + 4 * i, d);
        },
        [&](size_t i) { dst[i] += src[i]; });
}

// Blocks for the streaming kernels above: one thread per vector (or element), capped at
// 16 blocks of 256 threads per SM for the grid-stride loop (plenty to hide latency).
static unsigned opt_stream_blocks(size_t n, int vec) {
    size_t work = vec && n >= 4 ? n / 4 : n;
    unsigned blocks = cuda_blocks(work, OPT_THREADS);
    unsigned cap = (unsigned)(cuda_sm_count * 16);
    return blocks < cap ? blocks : cap;
}

extern "C" void cuda_scale(float *x, float s, size_t n) {
    // x (n) *= s
    if (n == 0) return;
    int vec = aligned16(x);
    unsigned blocks = opt_stream_blocks(n, vec);
    if (vec)
        scale_kernel<true><<<blocks, OPT_THREADS, 0, cuda_stream_compute>>>(x, s, n);
    else
        scale_kernel<false><<<blocks, OPT_THREADS, 0, cuda_stream_compute>>>(x, s, n);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_add_f32(float *dst, const float *src, size_t n) {
    // dst (n) += src (n)
    if (n == 0) return;
    int vec = aligned16(dst) && aligned16(src);
    unsigned blocks = opt_stream_blocks(n, vec);
    if (vec)
        add_f32_kernel<true><<<blocks, OPT_THREADS, 0, cuda_stream_compute>>>(dst, src, n);
    else
        add_f32_kernel<false><<<blocks, OPT_THREADS, 0, cuda_stream_compute>>>(dst, src, n);
    CUDA_LAUNCH_CHECK();
}

// ----------------------------------------------------------------------------
// AdamW

// The step's constants (see kernels/cpu/adamw.c).
typedef struct adamw_consts {
    float lr, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, grad_scale;
    float bc1, bc2;              // 1 / (1 - b1^t), 1 / (1 - b2^t)
} adamw_consts;

// One element: m, v updated in place; returns the new weight.
__device__ __forceinline__ float adamw_elem(float w, float grad, float &m, float &v,
                                            float wd, const adamw_consts &k) {
    float g = grad * k.grad_scale;
    float mi = k.beta1 * m + k.one_minus_beta1 * g;
    float vi = k.beta2 * v + k.one_minus_beta2 * g * g;
    m = mi;
    v = vi;
    float mhat = mi * k.bc1;
    float vhat = vi * k.bc2;
    return w - k.lr * (mhat / (sqrtf(vhat) + k.eps) + wd * w);
}

// Four bf16, stored as one 8-byte access.
struct alignas(8) bf16x4 {
    __nv_bfloat162 lo, hi;
};

// master, grad, m, v (fp32) and param (bf16) updated over every chunk of the segments.
__global__ void __launch_bounds__(OPT_THREADS)
adamw_chunks_kernel(bf16 *param, float *master, const float *grad, float *m, float *v,
                    const opt_seg *segs, int nseg, unsigned nchunks, adamw_consts k) {
    __shared__ int sh_seg;
    for (unsigned c = blockIdx.x; c < nchunks; c += gridDim.x) {
        if (threadIdx.x == 0) sh_seg = opt_find_seg(segs, nseg, c);
        __syncthreads();
        const opt_seg s = segs[sh_seg];
        // everyone has read sh_seg before thread 0 may overwrite it for the next chunk
        __syncthreads();
        size_t start = (size_t)(c - s.first_chunk) * OPT_CHUNK;
        size_t len = s.n - start < OPT_CHUNK ? s.n - start : OPT_CHUNK;
        size_t base = s.off + start;
        float wd = s.weight_decay;
        strided_vec<4>(
            len, threadIdx.x, blockDim.x, s.vec,
            [&](size_t i) {
                size_t e = base + 4 * i;
                x128<float> w = load128(master + e), g = load128(grad + e);
                x128<float> mm = load128(m + e), vv = load128(v + e);
                for (int j = 0; j < 4; j++) w[j] = adamw_elem(w[j], g[j], mm[j], vv[j], wd, k);
                store128(master + e, w);
                store128(m + e, mm);
                store128(v + e, vv);
                bf16x4 p;
                p.lo = __floats2bfloat162_rn(w[0], w[1]);
                p.hi = __floats2bfloat162_rn(w[2], w[3]);
                *reinterpret_cast<bf16x4 *>(param + e) = p;
            },
            [&](size_t i) {
                size_t e = base + i;
                float mi = m[e], vi = v[e];
                float w = adamw_elem(master[e], grad[e], mi, vi, wd, k);
                master[e] = w;
                m[e] = mi;
                v[e] = vi;
                param[e] = __float2bfloat16_rn(w);
            });
    }
}

extern "C" void cuda_adamw_update(anv_act *param, float *master, const float *grad, float *m,
                                  float *v, const anv_seg *segs, int nseg,
                                  const anv_adamw_args *a) {
    // param (bf16), master, grad, m, v (fp32): flat buffers indexed alike; segs (nseg)
    // host array
    if (master == NULL)
        anv_fatal(__FILE__, __LINE__, "cuda_adamw_update",
                  "master is NULL (the cuda backend keeps fp32 master weights)");
    if (nseg <= 0) return;
    bf16 *p = (bf16 *)param;
    int aligned = aligned16(master) && aligned16(grad) && aligned16(m) && aligned16(v) &&
                  ((uintptr_t)p & 7u) == 0;
    opt_seg *tab = opt_table_reserve(&opt_adamw_table, nseg);
    size_t chunks = opt_table_fill(tab, segs, nseg, aligned);
    if (chunks == 0) return;
    const opt_seg *dtab = opt_table_upload(&opt_adamw_table, nseg);

    adamw_consts k;
    k.lr = a->lr;
    k.beta1 = a->beta1;
    k.beta2 = a->beta2;
    k.one_minus_beta1 = 1.0f - a->beta1;
    k.one_minus_beta2 = 1.0f - a->beta2;
    k.eps = a->eps;
    k.grad_scale = a->grad_scale;
    // in double: in float, 1 - 0.999^t loses most of its digits for small t
    k.bc1 = (float)(1.0 / (1.0 - pow((double)a->beta1, a->t)));
    k.bc2 = (float)(1.0 / (1.0 - pow((double)a->beta2, a->t)));

    adamw_chunks_kernel<<<opt_grid(chunks), OPT_THREADS, 0, cuda_stream_compute>>>(
        p, master, grad, m, v, dtab, nseg, (unsigned)chunks, k);
    CUDA_LAUNCH_CHECK();
}
