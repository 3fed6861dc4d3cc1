// kernels/cuda/backend.cu: device setup, memory, conversions and the struct of the
// bf16 cuda backend.
//
// anv_backend_cuda(device) selects GPU `device % count`, creates the compute stream
// (non-blocking, so it never serializes with the legacy default stream), the cuBLASLt
// handle and its workspace, and a pinned staging buffer for the converting host copies;
// it fills the shared globals of cuda_common.cuh and returns one static struct that
// wires every member to its cuda_* function (one file per op in this folder). A
// machine without a GPU or driver, or a GPU older than compute capability 8.0 (no
// bf16 tensor cores), gets one line on stderr and NULL, never an abort.
//
// Memory: alloc zeroes on the compute stream and waits (allocation happens before the
// step loop, and the caller may hand the buffer to another stream at once); the copies
// to the host wait, as ops.h says; copy_from_host also waits, so the caller may reuse
// or free its (possibly pinned) buffer as soon as it returns.
//
// Conversions host fp32 <-> device bf16 go through a pinned staging buffer of two
// 8 MiB halves, so that the host converts one half while the DMA engine moves the
// other. The host does the rounding itself: round to nearest even on the bit pattern
// is exact, and a NaN stays a NaN (its quiet bit is forced, since truncating the
// mantissa could otherwise leave the infinity pattern). Device fp32 <-> bf16 (master
// weights <-> working weights) is a grid-stride kernel with 16-byte accesses:
// 8 elements per step, 6 bytes moved per element, one pass.
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

// ----------------------------------------------------------------------------
// the shared globals (cuda_common.cuh)

cudaStream_t cuda_stream_compute = NULL;
cublasLtHandle_t cuda_lt = NULL;
cuda_lt_fns cuda_lt_fn;
void *cuda_lt_workspace = NULL;
size_t cuda_lt_workspace_bytes = 0;
int cuda_sm_count = 0;
int cuda_deterministic = 0;
int cuda_cc = 0;
int cuda_smem_optin = 48 * 1024;

// cuBLASLt on Hopper wants at least 32 MiB of workspace for its fastest kernels
// (split-K and stream-K reductions); Ampere needs less, but 32 MiB is cheap.
#define CUDA_LT_WORKSPACE_BYTES ((size_t)32 << 20)
// One half of the pinned staging buffer of the converting host copies: large enough
// that per-copy overhead is small, small enough to be pinned without a second thought.
#define CUDA_STAGE_HALF_BYTES ((size_t)8 << 20)
#define CUDA_CONVERT_THREADS 256
// Grid cap of the grid-stride conversion kernels: 16 blocks of 256 threads per SM
// fill every SM (2048 threads) twice over, enough to hide memory latency.
#define CUDA_CONVERT_BLOCKS_PER_SM 16

static void *cuda_stage;                   // pinned, 2 halves of CUDA_STAGE_HALF_BYTES
static cudaEvent_t cuda_stage_done[2];     // last copy that used each half
static int cuda_device_index = -1;
static char cuda_description[512];         // anv_cuda_describe: "" until the backend is up

// ----------------------------------------------------------------------------
// cuBLASLt, opened at start (cuda_common.cuh says why it is not linked)

// The library the toolkit we were compiled with ships (libcublasLt.so.13 for CUDA 13),
// found the way a linked library would be (LD_LIBRARY_PATH, the binary's RUNPATH, the
// system's paths).
#define CUDA_LT_STR2(x) #x
#define CUDA_LT_STR(x) CUDA_LT_STR2(x)
#define CUDA_LT_SONAME "libcublasLt.so." CUDA_LT_STR(CUBLAS_VER_MAJOR)

// Fills cuda_lt_fn from `soname` (NULL: CUDA_LT_SONAME); functions the process already
// has (a build that links cuBLASLt, the host emulation of tests/emu) are taken as they
// are. Returns 0, or 2 after one line on stderr naming the library and what failed;
// cuda_lt_fn is then left all NULL.
extern "C" int cuda_lt_load(const char *soname) {
    if (soname == NULL) soname = CUDA_LT_SONAME;
    void *lib = NULL;                      // never closed: used for the life of the process
    void *from = RTLD_DEFAULT;
    if (dlsym(RTLD_DEFAULT, "cublasLtCreate") == NULL) {
        if ((lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL)) == NULL) {
            fprintf(stderr, "anvil: device cuda: cannot load cuBLASLt (%s)\n", dlerror());
            return 2;
        }
        from = lib;
    }
    cuda_lt_fns t;
    const char *missing = NULL;
#define CUDA_LT_FN_SYM(f)                                                    \
    if ((t.f = (decltype(t.f))dlsym(from, #f)) == NULL && missing == NULL) missing = #f;
    CUDA_LT_FNS(CUDA_LT_FN_SYM)
#undef CUDA_LT_FN_SYM
    if (missing != NULL) {
        fprintf(stderr, "anvil: device cuda: %s has no %s (a cuBLASLt older than CUDA %d?)\n",
                from == lib ? soname : "the process", missing, CUBLAS_VER_MAJOR);
        return 2;
    }
    cuda_lt_fn = t;
    return 0;
}

// ----------------------------------------------------------------------------
// device discovery and setup

extern "C" int anv_cuda_device_count(void) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();          // no driver / no device: not an error here
        return 0;
    }
    return count;
}

extern "C" int anv_cuda_device_id(int device, char *buf, size_t n) {
    if (n == 0) return -1;
    buf[0] = '\0';
    if (cudaDeviceGetPCIBusId(buf, (int)(n < 64 ? n : 64), device) != cudaSuccess) {
        (void)cudaGetLastError();
        buf[0] = '\0';
        return -1;
    }
    return 0;
}

// Releases whatever a failed setup created (errors ignored: we are already failing).
static void cuda_teardown(void) {
    for (int i = 0; i < 2; i++) {
        if (cuda_stage_done[i] != NULL) (void)cudaEventDestroy(cuda_stage_done[i]);
        cuda_stage_done[i] = NULL;
    }
    if (cuda_stage != NULL) (void)cudaFreeHost(cuda_stage);
    cuda_stage = NULL;
    if (cuda_lt_workspace != NULL) (void)cudaFree(cuda_lt_workspace);
    cuda_lt_workspace = NULL;
    cuda_lt_workspace_bytes = 0;
    if (cuda_lt != NULL) (void)cuda_lt_fn.cublasLtDestroy(cuda_lt);
    cuda_lt = NULL;
    if (cuda_stream_compute != NULL) (void)cudaStreamDestroy(cuda_stream_compute);
    cuda_stream_compute = NULL;
    (void)cudaGetLastError();
}

extern "C" void *cuda_compute_stream(void) {
    return (void *)cuda_stream_compute;
}

// Dense bf16 tensor-core peak of the device in FLOP/s (fp32 accumulation), 0 if
// unknown. The data-center parts are matched by compute capability and SM count and
// given their datasheet figure (which assumes a clock below the reported maximum);
// other parts of a known generation get (FLOPs per SM per clock) x SMs x max clock.
extern "C" double cuda_peak_flops(void) {
    if (cuda_device_index < 0) return 0.0;
    if (cuda_cc == 80 && cuda_sm_count == 108) return 312e12;   // A100
    if (cuda_cc == 90 && cuda_sm_count == 132) return 989.4e12; // H100 SXM, H200, GH200
    if (cuda_cc == 90 && cuda_sm_count == 114) return 756e12;   // H100 PCIe
    if (cuda_cc == 100 && cuda_sm_count == 148) return 2.25e15; // B200
    double per_sm_clk;                     // dense bf16 FLOPs per SM per clock
    switch (cuda_cc) {
    case 80: per_sm_clk = 2048; break;     // A100 / A30 class
    case 90: per_sm_clk = 4096; break;     // Hopper
    case 100: per_sm_clk = 8192; break;    // Blackwell data center
    default: return 0.0;                   // consumer parts vary too much to guess
    }
    int khz = 0;
    if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, cuda_device_index) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0.0;
    }
    return per_sm_clk * cuda_sm_count * (double)khz * 1e3;
}

// ----------------------------------------------------------------------------
// memory

// Returns `bytes` (at least 1) of zeroed device memory, or NULL when the device is out
// of memory; any other failure is fatal.
extern "C" void *cuda_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes > 0 ? bytes : 1);
    if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();          // clear it, so the next check does not see it
        return NULL;
    }
    CUDA_CHECK(err);
    if (bytes > 0) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cuda_stream_compute));
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_compute));
    return p;
}

extern "C" void cuda_free(void *p) {
    if (p == NULL) return;
    // queued work on the compute stream may still use p; cudaFree would wait for the
    // device too, but saying it here does not depend on that
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_compute));
    CUDA_CHECK(cudaFree(p));
}

void *cuda_scratch(void **buf, size_t *cap, size_t need) {
    if (need > *cap) {
        if (*buf != NULL) {
            CUDA_CHECK(cudaStreamSynchronize(cuda_stream_compute));
            CUDA_CHECK(cudaFree(*buf));
        }
        CUDA_CHECK(cudaMalloc(buf, need));
        *cap = need;
    }
    return *buf;
}

extern "C" void cuda_zero(void *p, size_t bytes) {
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, cuda_stream_compute));
}

extern "C" void cuda_copy_from_host(void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda_stream_compute));
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_compute));
}

extern "C" void cuda_copy_to_host(void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda_stream_compute));
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_compute));
}

extern "C" void cuda_copy(void *dst, const void *src, size_t bytes) {
    if (bytes == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice,
                               cuda_stream_compute));
}

extern "C" void cuda_synchronize(void) {
    CUDA_CHECK(cudaStreamSynchronize(cuda_stream_compute));
}

// ----------------------------------------------------------------------------
// host fp32 <-> device bf16, through the pinned staging buffer

// bf16 bit pattern of f, rounded to nearest even; NaN stays NaN (quiet bit forced).
static inline uint16_t host_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);       // ties go to the even upper half
    return (uint16_t)(u >> 16);
}

static inline float host_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;        // exact: bf16 is the top half of an fp32
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// elements of one staging half (bf16 is what crosses the bus: half the bytes of fp32)
#define CUDA_STAGE_ELEMS (CUDA_STAGE_HALF_BYTES / sizeof(uint16_t))

extern "C" void cuda_act_from_host_f32(anv_act *dst, const float *src, size_t n) {
    // dst (n) bf16 device, src (n) fp32 host
    bf16 *d = (bf16 *)dst;
    for (size_t i0 = 0, chunk = 0; i0 < n; i0 += CUDA_STAGE_ELEMS, chunk++) {
        int half = (int)(chunk & 1);
        size_t len = n - i0 < CUDA_STAGE_ELEMS ? n - i0 : CUDA_STAGE_ELEMS;
        uint16_t *stage = (uint16_t *)cuda_stage + (size_t)half * CUDA_STAGE_ELEMS;
        // the copy that last read this half (two chunks ago) must be done
        CUDA_CHECK(cudaEventSynchronize(cuda_stage_done[half]));
        for (size_t i = 0; i < len; i++) stage[i] = host_f32_to_bf16(src[i0 + i]);
        CUDA_CHECK(cudaMemcpyAsync(d + i0, stage, len * sizeof(uint16_t),
                                   cudaMemcpyHostToDevice, cuda_stream_compute));
        CUDA_CHECK(cudaEventRecord(cuda_stage_done[half], cuda_stream_compute));
    }
    // src was consumed on the host and the staging halves are guarded by their events:
    // nothing left to wait for
}

extern "C" void cuda_act_to_host_f32(float *dst, const anv_act *src, size_t n) {
    // dst (n) fp32 host, src (n) bf16 device
    const bf16 *s = (const bf16 *)src;
    size_t nchunks = (n + CUDA_STAGE_ELEMS - 1) / CUDA_STAGE_ELEMS;
    // chunk c goes to half c & 1; chunk c + 1 is in flight while chunk c is expanded
    for (size_t c = 0; c <= nchunks; c++) {
        if (c < nchunks) {
            int half = (int)(c & 1);
            size_t i0 = c * CUDA_STAGE_ELEMS;
            size_t len = n - i0 < CUDA_STAGE_ELEMS ? n - i0 : CUDA_STAGE_ELEMS;
            uint16_t *stage = (uint16_t *)cuda_stage + (size_t)half * CUDA_STAGE_ELEMS;
            // an earlier act_from_host_f32 may still be reading this half
            CUDA_CHECK(cudaEventSynchronize(cuda_stage_done[half]));
            CUDA_CHECK(cudaMemcpyAsync(stage, s + i0, len * sizeof(uint16_t),
                                       cudaMemcpyDeviceToHost, cuda_stream_compute));
            CUDA_CHECK(cudaEventRecord(cuda_stage_done[half], cuda_stream_compute));
        }
        if (c > 0) {
            size_t p = c - 1;              // the chunk to expand now
            int half = (int)(p & 1);
            size_t i0 = p * CUDA_STAGE_ELEMS;
            size_t len = n - i0 < CUDA_STAGE_ELEMS ? n - i0 : CUDA_STAGE_ELEMS;
            const uint16_t *stage =
                (const uint16_t *)cuda_stage + (size_t)half * CUDA_STAGE_ELEMS;
            CUDA_CHECK(cudaEventSynchronize(cuda_stage_done[half]));
            for (size_t i = 0; i < len; i++) dst[i0 + i] = host_bf16_to_f32(stage[i]);
        }
    }
}

// ----------------------------------------------------------------------------
// device fp32 <-> bf16

// dst (n) = bf16(src (n)), round to nearest even. VEC: both pointers 16-byte aligned,
// 8 elements per step (two 16-byte loads, one 16-byte store); the tail is scalar.
template <bool VEC>
__global__ void f32_to_bf16_kernel(bf16 *dst, const float *src, size_t n) {
    strided_vec<8>(
        n, (size_t)blockIdx.x * blockDim.x + threadIdx.x, (size_t)gridDim.x * blockDim.x, VEC,
        [&](size_t i) {
            x128<float> a = load128(src + 8 * i), b = load128(src + 8 * i + 4);
            x128<bf16> o;
            for (int k = 0; k < 4; k++) {
                o[k] = __float2bfloat16_rn(a[k]);
                o[k + 4] = __float2bfloat16_rn(b[k]);
            }
            store128(dst + 8 * i, o);
        },
        [&](size_t i) { dst[i] = __float2bfloat16_rn(src[i]); });
}

// dst (n) = fp32(src (n)), exact; same layout of work as above.
template <bool VEC>
__global__ void bf16_to_f32_kernel(float *dst, const bf16 *src, size_t n) {
    strided_vec<8>(
        n, (size_t)blockIdx.x * blockDim.x + threadIdx.x, (size_t)gridDim.x * blockDim.x, VEC,
        [&](size_t i) {
            x128<bf16> a = load128(src + 8 * i);
            x128<float> lo, hi;
            for (int k = 0; k < 4; k++) {
                lo[k] = __bfloat162float(a[k]);
                hi[k] = __bfloat162float(a[k + 4]);
            }
            store128(dst + 8 * i, lo);
            store128(dst + 8 * i + 4, hi);
        },
        [&](size_t i) { dst[i] = __bfloat162float(src[i]); });
}

// blocks for `work` units of one thread each, capped for the grid-stride loops
static unsigned convert_blocks(size_t work) {
    unsigned b = cuda_blocks(work, CUDA_CONVERT_THREADS);
    unsigned cap = (unsigned)(cuda_sm_count * CUDA_CONVERT_BLOCKS_PER_SM);
    return b < cap ? b : cap;
}

extern "C" void cuda_act_from_f32(anv_act *dst, const float *src, size_t n) {
    // dst (n) bf16, src (n) fp32
    if (n == 0) return;
    bf16 *d = (bf16 *)dst;
    if (aligned16(d) && aligned16(src)) {
        f32_to_bf16_kernel<true><<<convert_blocks(n / 8 > 0 ? n / 8 : n),
                                   CUDA_CONVERT_THREADS, 0, cuda_stream_compute>>>(d, src, n);
    } else {
        f32_to_bf16_kernel<false><<<convert_blocks(n), CUDA_CONVERT_THREADS, 0,
                                    cuda_stream_compute>>>(d, src, n);
    }
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_act_to_f32(float *dst, const anv_act *src, size_t n) {
    // dst (n) fp32, src (n) bf16
    if (n == 0) return;
    const bf16 *s = (const bf16 *)src;
    if (aligned16(dst) && aligned16(s)) {
        bf16_to_f32_kernel<true><<<convert_blocks(n / 8 > 0 ? n / 8 : n),
                                   CUDA_CONVERT_THREADS, 0, cuda_stream_compute>>>(dst, s, n);
    } else {
        bf16_to_f32_kernel<false><<<convert_blocks(n), CUDA_CONVERT_THREADS, 0,
                                    cuda_stream_compute>>>(dst, s, n);
    }
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

// train.deterministic: the embedding backward and attention's dQ without atomics
static void cuda_set_deterministic(int on) { cuda_deterministic = on != 0; }

// ----------------------------------------------------------------------------
// timing (run.profile_step): a stamp is a timing event on the compute stream

static void *cuda_stamp_new(void) {
    cudaEvent_t e = NULL;
    if (cudaEventCreate(&e) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    return (void *)e;
}

static void cuda_stamp_record(void *s) {
    CUDA_CHECK(cudaEventRecord((cudaEvent_t)s, cuda_stream_compute));
}

static double cuda_stamp_ms(void *a, void *b) {
    float ms = 0.0f;
    CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)b));
    CUDA_CHECK(cudaEventElapsedTime(&ms, (cudaEvent_t)a, (cudaEvent_t)b));
    return ms;
}

static void cuda_stamp_free(void *s) {
    if (s != NULL) (void)cudaEventDestroy((cudaEvent_t)s);
}

// ----------------------------------------------------------------------------
// the backend struct (members in the order of ops.h)

static const anv_backend cuda_backend = {
    .name = "cuda",
    .peak_flops = cuda_peak_flops,
    .host_memory = 0,
    .act_dtype = ANV_DTYPE_BF16,
    .act_bytes = 2,
    .vocab_multiple = 64,

    .alloc = cuda_alloc,
    .free = cuda_free,
    .zero = cuda_zero,
    .copy_from_host = cuda_copy_from_host,
    .copy_to_host = cuda_copy_to_host,
    .copy = cuda_copy,
    .synchronize = cuda_synchronize,
    .mem_info = cuda_mem_info,
    .set_deterministic = cuda_set_deterministic,
    .act_from_host_f32 = cuda_act_from_host_f32,
    .act_to_host_f32 = cuda_act_to_host_f32,
    .act_from_f32 = cuda_act_from_f32,
    .act_to_f32 = cuda_act_to_f32,

    .encoder_forward = cuda_encoder_forward,
    .encoder_backward = cuda_encoder_backward,

    .layernorm_forward = cuda_layernorm_forward,
    .layernorm_residual_forward = cuda_layernorm_residual_forward,
    .layernorm_backward = cuda_layernorm_backward,

    .rmsnorm_forward = cuda_rmsnorm_forward,
    .rmsnorm_residual_forward = cuda_rmsnorm_residual_forward,
    .rmsnorm_backward = cuda_rmsnorm_backward,

    .matmul_forward = cuda_matmul_forward,
    .matmul_backward = cuda_matmul_backward,

    .attention_state_floats = cuda_attention_state_floats,
    .attention_forward = cuda_attention_forward,
    .attention_scratch_floats = cuda_attention_scratch_floats,
    .attention_backward = cuda_attention_backward,

    .gelu_forward = cuda_gelu_forward,
    .gelu_backward = cuda_gelu_backward,
    .swiglu_forward = cuda_swiglu_forward,
    .swiglu_backward = cuda_swiglu_backward,
    .residual_forward = cuda_residual_forward,
    .residual_backward = cuda_residual_backward,

    .crossentropy_stats = cuda_crossentropy_stats,
    .crossentropy_combine = cuda_crossentropy_combine,
    .crossentropy_backward = cuda_crossentropy_backward,
    .crossentropy_fused = cuda_crossentropy_fused,

    .sum_squares = cuda_sum_squares,
    .scale = cuda_scale,
    .add_f32 = cuda_add_f32,
    .adamw_update = cuda_adamw_update,

    .matmul_tune = cuda_matmul_tune,
    .stamp_new = cuda_stamp_new,
    .stamp_record = cuda_stamp_record,
    .stamp_ms = cuda_stamp_ms,
    .stamp_free = cuda_stamp_free,
};

// Fills cuda_description: the GPU, and the versions of the driver, the runtime and
// cuBLASLt, for the run's log (what a bug report or a benchmark figure needs to say).
static void cuda_describe_device(int dev, int major, int minor, int sms) {
    char name[256] = "?";
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
        snprintf(name, sizeof name, "%s", prop.name);
    int drv = 0, rt = 0;
    if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
    if (cudaRuntimeGetVersion(&rt) != cudaSuccess) rt = 0;
    (void)cudaGetLastError();
    size_t lt = cuda_lt_fn.cublasLtGetVersion();   // major * 10000 + minor * 100 + patch
    snprintf(cuda_description, sizeof cuda_description,
             "GPU %d: %s (compute capability %d.%d, %d multiprocessors), CUDA driver %d.%d, "
             "runtime %d.%d, cuBLASLt %zu.%zu.%zu", dev, name, major, minor, sms, drv / 1000,
             drv % 1000 / 10, rt / 1000, rt % 1000 / 10, lt / 10000, lt / 100 % 100,
             lt % 100);
}

extern "C" const char *anv_cuda_describe(void) { return cuda_description; }

// ----------------------------------------------------------------------------
// the entry point

// Returns the backend on GPU `device % count`, or NULL after one line on stderr.
extern "C" const anv_backend *anv_backend_cuda(int device) {
    static int ready = 0;
    if (ready) return &cuda_backend;

    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count <= 0) {
        (void)cudaGetLastError();
        fprintf(stderr, "anvil: device cuda: no GPU found (%s)\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "the CUDA runtime sees none");
        return NULL;
    }
    int dev = ((device % count) + count) % count;
    const char *step = "cudaSetDevice";
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    int major = 0, minor = 0, sms = 0, optin = 0;
    if ((err = cudaSetDevice(dev)) != cudaSuccess) goto fail;
    step = "cudaDeviceGetAttribute";
    if ((err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev)) !=
            cudaSuccess ||
        (err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev)) !=
            cudaSuccess ||
        (err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) !=
            cudaSuccess ||
        (err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)) !=
            cudaSuccess)
        goto fail;
    if (major < 8) {
        char name[256] = "?";
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
            snprintf(name, sizeof name, "%s", prop.name);
        (void)cudaGetLastError();
        fprintf(stderr,
                "anvil: device cuda: GPU %d (%s) has compute capability %d.%d; bf16 tensor "
                "cores need 8.0 or newer\n", dev, name, major, minor);
        return NULL;
    }
    step = "cudaStreamCreateWithFlags";
    if ((err = cudaStreamCreateWithFlags(&cuda_stream_compute, cudaStreamNonBlocking)) !=
        cudaSuccess)
        goto fail;
    if (cuda_lt_load(NULL) != 0) {
        cuda_teardown();
        return NULL;
    }
    step = "cublasLtCreate";
    if ((st = cuda_lt_fn.cublasLtCreate(&cuda_lt)) != CUBLAS_STATUS_SUCCESS) goto fail;
    step = "cudaMalloc (cuBLASLt workspace)";
    if ((err = cudaMalloc(&cuda_lt_workspace, CUDA_LT_WORKSPACE_BYTES)) != cudaSuccess)
        goto fail;
    cuda_lt_workspace_bytes = CUDA_LT_WORKSPACE_BYTES;
    step = "cudaMallocHost (staging buffer)";
    if ((err = cudaMallocHost(&cuda_stage, 2 * CUDA_STAGE_HALF_BYTES)) != cudaSuccess)
        goto fail;
    step = "cudaEventCreateWithFlags";
    for (int i = 0; i < 2; i++)
        if ((err = cudaEventCreateWithFlags(&cuda_stage_done[i], cudaEventDisableTiming)) !=
            cudaSuccess)
            goto fail;

    cuda_sm_count = sms;
    cuda_cc = major * 10 + minor;
    cuda_smem_optin = optin;
    cuda_device_index = dev;
    cuda_describe_device(dev, major, minor, sms);
    ready = 1;
    return &cuda_backend;

fail:
    fprintf(stderr, "anvil: device cuda: GPU %d: %s failed (%s)\n", dev, step,
            st != CUBLAS_STATUS_SUCCESS ? cublasLt_status_text(st) : cudaGetErrorString(err));
    cuda_teardown();
    return NULL;
}
