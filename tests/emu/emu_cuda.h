// tests/emu/emu_cuda.h: the CUDA execution model, emulated on the host, so that the cuda
// backend's kernels (kernels/cuda/*.cu) run and are tested on a machine without a GPU.
//
// Not a simulator of the hardware's timing: a kernel launch runs its blocks one after
// the other, and the threads of a block as cooperative fibers (own stacks) on the calling
// thread. A fiber runs until it reaches a barrier (__syncthreads, __syncwarp, or a warp
// collective: __shfl_xor_sync, ldmatrix, mma), where it yields until every live thread
// of its block (or warp) has arrived. That gives what the kernels rely on: shared memory
// per block (static __shared__ variables are function statics, valid because blocks run
// one at a time, poisoned for each block by emu::shared_decl; dynamic shared memory is
// emu::dyn_smem(), poisoned the same way), private registers and
// stacks per thread, barriers, and the warp-wide data exchange of shuffles and tensor-
// core fragments (tests/emu/emu_ptx.h), with the register layouts the PTX manual gives.
// A barrier that can never complete (some threads of a block at __syncthreads, others
// finished or at another barrier) is reported and aborts, instead of hanging.
//
// Launches are checked as a GPU checks them, which the host would not: block and grid
// dimensions, __launch_bounds__ (cu2emu.py starts every kernel with emu::launch_bounds;
// a kernel without one may not take more than 256 threads, as its registers are not
// bounded), dynamic shared memory against the kernel's cudaFuncSetAttribute(
// MaxDynamicSharedMemorySize) (48 KiB without), static + dynamic against the device's
// opt-in limit (EMU_SMEM_OPTIN_KIB, default 227: sm_90; 99 is sm_86 / sm_89's).
//
// What it cannot show on its own: races between threads (a fiber runs alone until it
// yields, so a missing barrier goes unnoticed when the writer happens to run first;
// EMU_SCHEDULE=reverse / random run the blocks and threads in other orders, and
// EMU_CP_ASYNC=deferred delays cp.async to its wait, which shows most of them: see
// emu_cuda.cc), misaligned accesses (meson builds the kernels with
// -fsanitize=alignment, and cp.async, ldmatrix and atomicAdd check their addresses),
// the timing of anything, and whatever the compiler does differently for the
// device (fast-math contractions). Streams: emu_stream.cc (EMU_STREAMS).
//
// tests/emu/include/ holds the CUDA headers' stand-ins (cuda_runtime.h, cuda_bf16.h,
// cublasLt.h); tests/emu/cu2emu.py rewrites a .cu file into host C++ (launches become
// emu::launch calls, `extern __shared__` arrays emu::dyn_smem(), the PTX helpers of
// attention.cu the versions of emu_ptx.h).
#ifndef ANVIL_TESTS_EMU_EMU_CUDA_H
#define ANVIL_TESTS_EMU_EMU_CUDA_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(8) float2 {         // aligned as CUDA's
    float x, y;
};
static inline float2 make_float2(float x, float y) { return float2{x, y}; }

struct emu_stream;                 // tests/emu/emu_stream.cc (cudaStream_t)

namespace emu {
const uint3 &thread_idx();
const uint3 &block_idx();
const dim3 &block_dim();
const dim3 &grid_dim();
int lane();                              // lane of the calling thread in its warp
void syncthreads();
void warp_barrier();                     // every live lane of the warp arrives
// Warp exchange: publish() stores `bytes` (<= 64) of the calling lane's data and waits
// for the whole warp; slot(l) then reads lane l's; the caller ends with warp_barrier().
void publish(const void *src, size_t bytes);
const void *slot(int lane);
unsigned char *dyn_smem();
// A static __shared__ array (tests/emu/cu2emu.py): filled with 0xff bytes the first
// time a thread of the running block declares it, as shared memory does not survive a
// block.
void shared_decl(void *p, size_t bytes);
// cp.async of cp-size `size` (4, 8, 16): src_bytes copied, the rest zero-filled; at once,
// or under EMU_CP_ASYNC=deferred (emu_cuda.cc) at the thread's cp_async_wait_all.
void cp_async(void *dst, const void *src, int size, int src_bytes);
// A GPU faults on a misaligned access ("misaligned address"); the host would not.
[[noreturn]] void misaligned(const char *what, const void *p, int align);
void cp_async_wait_all();

struct launch_cfg {
    dim3 grid, block;
    size_t smem;
    ::emu_stream *stream;
    launch_cfg(dim3 g, dim3 b, size_t s = 0, ::emu_stream *st = nullptr)
        : grid(g), block(b), smem(s), stream(st) {}
};
// Queue fn on stream s (tests/emu/emu_stream.cc: carried out at once, or later under
// EMU_STREAMS=lazy / mixed).
void enqueue(::emu_stream *s, std::function<void()> fn);
// A kernel call with its arguments converted to the kernel's parameter types now, at
// the launch, as CUDA copies them (the call may be carried out later).
template <typename... P, typename... A>
std::function<void()> bind_args(void (*k)(P...), A &&...a) {
    std::tuple<typename std::decay<P>::type...> t(std::forward<A>(a)...);
    return [k, t] { std::apply(k, t); };
}
// Runs body (the kernel call) as a launch of `kernel` (its address; `name` for messages),
// after the checks a GPU makes: block and grid dimensions, dynamic shared memory against
// the kernel's MaxDynamicSharedMemorySize, and (once the static arrays are declared)
// static + dynamic shared memory against the device's.
void launch(const launch_cfg &cfg, const void *kernel, const char *name,
            std::function<void()> body);
// cudaFuncSetAttribute(kernel, MaxDynamicSharedMemorySize, bytes): 0 if above the
// device's opt-in limit (emu_smem_optin)
int set_max_dyn_smem(const void *kernel, int bytes);
// Called at the top of every kernel (cu2emu.py): its __launch_bounds__, 0 if none, which
// the running block's size must not exceed (256 without: registers)
void launch_bounds(int max_threads);
}   // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx())
#define blockDim (emu::block_dim())
#define gridDim (emu::grid_dim())

static inline void __syncthreads() { emu::syncthreads(); }
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    (void)mask;
    emu::warp_barrier();
}
template <typename T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    (void)mask;
    emu::publish(&v, sizeof v);
    T r;
    memcpy(&r, emu::slot(emu::lane() ^ lane_mask), sizeof r);
    emu::warp_barrier();
    return r;
}
// CUDA's integer min/max (device functions without std::)
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }

// Fibers never run at the same time, so a plain read-modify-write is atomic.
static inline float atomicAdd(float *p, float v) {
    if ((uintptr_t)p & 3u) emu::misaligned("atomicAdd(float)", p, 4);
    float old = *p;
    *p = old + v;
    return old;
}

#endif
