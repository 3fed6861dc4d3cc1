// tests/emu/emu_cuda.cc: the fiber scheduler behind tests/emu/emu_cuda.h.
//
// One launch: for each block (x fastest), one fiber per thread, all on the caller's
// thread. The scheduler resumes the unfinished fibers in turn; a fiber gives control
// back only at a barrier it has to wait for, or when it ends. Barriers are counters
// with a generation number: the last live thread to arrive starts a new generation,
// which lets the waiters go. A thread that ends counts as arrived at every barrier
// still open (as on the GPU, where exited threads no longer hold a barrier). A full
// pass of the scheduler in which nothing finished and no barrier opened is a deadlock:
// reported with the kernel's block and the waiting threads, then abort().
//
// Orders (EMU_SCHEDULE, read once): `forward` (the default: blocks x fastest, fibers
// by thread index), `reverse` (both backwards), `random` (blocks, and the fibers of
// every pass, in a fresh pseudo-random order from EMU_SEED, default 1). On a GPU the
// order is unspecified, so every order must give the same result; a missing barrier
// that one order hides (the writer happens to run before the reader) the others show.
// EMU_CP_ASYNC=deferred makes cp.async asynchronous: the destination is poisoned
// (0xff) when the copy is issued and written only at the issuing thread's
// cp.async.wait_all (or when it ends), so a read that does not wait, or a copy into a
// tile other threads still read, changes the result.
//
// Switching fibers: on x86-64 a few lines of assembly save the callee-saved registers
// and the stack pointer (emu_ctx_switch), about 20x cheaper than ucontext's
// swapcontext, which also saves the FP environment and makes a sigprocmask system call
// each time; other architectures use ucontext.
#include "tests/emu/emu_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#if defined(__x86_64__)
// emu_ctx_switch(&from_sp, to_sp): push rbp, rbx, r12-r15 on the current stack, save
// the stack pointer in *from_sp, load to_sp, pop the same registers, return there.
extern "C" void emu_ctx_switch(void **from_sp, void *to_sp);
asm(R"(
    .text
    .globl emu_ctx_switch
    .type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch, .-emu_ctx_switch
)");
#define EMU_ASM_SWITCH 1
#endif

#include <vector>

extern "C" int emu_smem_optin(void);

namespace emu {
namespace {

constexpr size_t STACK_BYTES = 256 * 1024;   // kernels keep fragments in locals: room
constexpr int MAX_WARPS = 32;                // 1024 threads
constexpr size_t SLOT_BYTES = 64;            // the largest exchange: an mma's operands

// a deferred cp.async: the source's bytes as read when it was issued
struct pending_copy {
    void *dst;
    int size, src_bytes;
    unsigned char data[16];
};

struct fiber {
    ucontext_t ctx;                    // without EMU_ASM_SWITCH
    void *sp;                          // with it: the saved stack pointer
    uint3 tid;
    int warp, lane;
    bool done;
    std::vector<pending_copy> copies;  // EMU_CP_ASYNC=deferred
};

enum order { ORDER_FORWARD, ORDER_REVERSE, ORDER_RANDOM };

struct state {
    std::vector<fiber> f;
    std::vector<char *> stacks;
    int cur = -1;                      // running fiber, -1 outside a launch
    ucontext_t main_ctx;
    void *main_sp;
    const std::function<void()> *body = nullptr;
    dim3 grid, block;
    uint3 bidx;
    std::vector<unsigned char> smem;
    long progress = 0;                 // barriers opened + fibers finished
    // block barrier
    int live = 0, bar_count = 0;
    unsigned bar_gen = 0;
    // warp barriers and exchange slots
    int wlive[MAX_WARPS], wcount[MAX_WARPS];
    unsigned wgen[MAX_WARPS];
    alignas(16) unsigned char slots[MAX_WARPS][32][SLOT_BYTES];
    // EMU_SCHEDULE / EMU_SEED / EMU_CP_ASYNC, read by the first launch
    bool configured = false;
    order ord = ORDER_FORWARD;
    unsigned long long rng = 1;
    bool deferred = false;
    std::vector<int> perm;             // the order of this pass (fibers) or launch (blocks)
    unsigned long block_serial = 0;    // blocks run so far, all launches
    std::vector<std::pair<void *, unsigned long>> statics;   // shared_decl: last block
    // launch resources: the running kernel, its static shared bytes in this block, and
    // each kernel's MaxDynamicSharedMemorySize (cudaFuncSetAttribute; default 48 KiB)
    const char *kname = "?";
    const void *kernel = nullptr;
    size_t static_bytes = 0, dyn_bytes = 0;
    std::vector<std::pair<const void *, int>> dyn_limits;
};
state S;

void fail(const char *what);

void configure() {
    S.configured = true;
    const char *o = getenv("EMU_SCHEDULE");
    if (!o || !*o || !strcmp(o, "forward")) S.ord = ORDER_FORWARD;
    else if (!strcmp(o, "reverse")) S.ord = ORDER_REVERSE;
    else if (!strcmp(o, "random")) S.ord = ORDER_RANDOM;
    else {
        fprintf(stderr, "emu: EMU_SCHEDULE=%s: expected forward, reverse or random\n", o);
        exit(2);
    }
    const char *seed = getenv("EMU_SEED");
    if (seed && *seed) S.rng = strtoull(seed, nullptr, 10);
    S.rng = S.rng * 0x9e3779b97f4a7c15ull + 1;    // never 0 (xorshift's fixed point)
    const char *c = getenv("EMU_CP_ASYNC");
    if (!c || !*c || !strcmp(c, "immediate")) S.deferred = false;
    else if (!strcmp(c, "deferred")) S.deferred = true;
    else {
        fprintf(stderr, "emu: EMU_CP_ASYNC=%s: expected immediate or deferred\n", c);
        exit(2);
    }
}

unsigned long long next_random() {    // xorshift64
    S.rng ^= S.rng << 13;
    S.rng ^= S.rng >> 7;
    S.rng ^= S.rng << 17;
    return S.rng;
}

// S.perm = 0..n-1 in this schedule's order (a fresh shuffle each call when random)
void order_of(int n) {
    S.perm.resize((size_t)n);
    for (int i = 0; i < n; i++) S.perm[(size_t)i] = S.ord == ORDER_REVERSE ? n - 1 - i : i;
    if (S.ord == ORDER_RANDOM)
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(next_random() % (unsigned long long)(i + 1));
            int t = S.perm[(size_t)i];
            S.perm[(size_t)i] = S.perm[(size_t)j];
            S.perm[(size_t)j] = t;
        }
}

// Lands the calling fiber's deferred copies (cp.async.wait_all, or the thread's end).
void land_copies(fiber &me) {
    for (const pending_copy &c : me.copies) {
        memset(c.dst, 0, (size_t)c.size);
        memcpy(c.dst, c.data, (size_t)c.src_bytes);
    }
    me.copies.clear();
}

void yield() {
#ifdef EMU_ASM_SWITCH
    emu_ctx_switch(&S.f[S.cur].sp, S.main_sp);
#else
    swapcontext(&S.f[S.cur].ctx, &S.main_ctx);
#endif
}

// Opens the block barrier when every live thread has arrived.
void bar_check() {
    if (S.bar_count > 0 && S.bar_count >= S.live) {
        S.bar_count = 0;
        S.bar_gen++;
        S.progress++;
    }
}
void warp_check(int w) {
    if (S.wcount[w] > 0 && S.wcount[w] >= S.wlive[w]) {
        S.wcount[w] = 0;
        S.wgen[w]++;
        S.progress++;
    }
}

void trampoline() {
    (*S.body)();
    fiber &me = S.f[S.cur];
    land_copies(me);
    me.done = true;
    S.live--;
    S.wlive[me.warp]--;
    S.progress++;
    bar_check();
    warp_check(me.warp);
#ifdef EMU_ASM_SWITCH
    emu_ctx_switch(&me.sp, S.main_sp);          // never resumed
    abort();
#endif
    // (ucontext) returning resumes uc_link: the scheduler
}

void fail(const char *what) {
    fprintf(stderr,
            "emu: %s in %s, block (%u,%u,%u) of grid (%u,%u,%u), block (%u,%u,%u)\n", what,
            S.kname, S.bidx.x, S.bidx.y, S.bidx.z, S.grid.x, S.grid.y, S.grid.z, S.block.x,
            S.block.y, S.block.z);
    abort();
}

// The launch checks a GPU makes (cudaErrorInvalidConfiguration / InvalidValue / "too
// many resources requested for launch"), which the host would not.
[[noreturn]] void launch_fail(const char *fmt, unsigned long long a, unsigned long long b) {
    char what[256];
    snprintf(what, sizeof what, fmt, a, b);
    fprintf(stderr, "emu: launch of %s: %s (a GPU refuses this launch)\n", S.kname, what);
    abort();
}

int dyn_limit(const void *kernel) {
    for (auto &d : S.dyn_limits)
        if (d.first == kernel) return d.second;
    return 48 * 1024;
}

// static + dynamic shared memory of the running block against the device's limits,
// once the block's static arrays are known (shared_decl)
void check_smem() {
    const size_t optin = (size_t)emu_smem_optin();
    if (S.static_bytes > 48 * 1024)
        launch_fail("%llu bytes of static shared memory, above 48 KiB (%llu)",
                    S.static_bytes, 48 * 1024);
    if (S.static_bytes + S.dyn_bytes > optin)
        launch_fail("%llu bytes of shared memory, above the device's %llu per block",
                    S.static_bytes + S.dyn_bytes, optin);
    if (dyn_limit(S.kernel) == 48 * 1024 && S.static_bytes + S.dyn_bytes > 48 * 1024)
        launch_fail("%llu bytes of shared memory without cudaFuncSetAttribute("
                    "MaxDynamicSharedMemorySize), above 48 KiB (%llu)",
                    S.static_bytes + S.dyn_bytes, 48 * 1024);
}

void run_block() {
    const int n = (int)(S.block.x * S.block.y * S.block.z);
    S.f.assign((size_t)n, fiber{});
    while ((int)S.stacks.size() < n) S.stacks.push_back((char *)malloc(STACK_BYTES));
    S.live = n;
    S.bar_count = 0;
    for (int w = 0; w < MAX_WARPS; w++) S.wlive[w] = S.wcount[w] = 0;
    for (int i = 0; i < n; i++) {
        fiber &f = S.f[i];
        f.tid = uint3{(unsigned)i % S.block.x, (unsigned)(i / S.block.x) % S.block.y,
                      (unsigned)(i / (S.block.x * S.block.y))};
        f.warp = i / 32;
        f.lane = i % 32;
        f.done = false;
        S.wlive[f.warp]++;
#ifdef EMU_ASM_SWITCH
        // a frame for emu_ctx_switch to "return" into trampoline: 6 register slots, the
        // return address, and a dummy caller slot, so that trampoline starts with the
        // stack pointer = 8 mod 16 as after a call
        uintptr_t top = ((uintptr_t)S.stacks[i] + STACK_BYTES) & ~(uintptr_t)15;
        void **sp = (void **)top;
        *--sp = nullptr;
        *--sp = (void *)trampoline;
        for (int r = 0; r < 6; r++) *--sp = nullptr;
        f.sp = sp;
#else
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = S.stacks[i];
        f.ctx.uc_stack.ss_size = STACK_BYTES;
        f.ctx.uc_link = &S.main_ctx;
        makecontext(&f.ctx, trampoline, 0);
#endif
    }
    // the contents of shared memory do not survive a block (NaN-like garbage); static
    // __shared__ arrays are poisoned by shared_decl
    memset(S.smem.data(), 0xff, S.smem.size());
    S.block_serial++;
    while (S.live > 0) {
        long before = S.progress;
        order_of(n);
        for (int k = 0; k < n; k++) {
            const int i = S.perm[(size_t)k];
            if (S.f[i].done) continue;
            S.cur = i;
#ifdef EMU_ASM_SWITCH
            emu_ctx_switch(&S.main_sp, S.f[i].sp);
#else
            swapcontext(&S.main_ctx, &S.f[i].ctx);
#endif
        }
        if (S.progress == before) fail("deadlock: a barrier no thread can complete");
    }
    S.cur = -1;
}

// ---- device memory: counted, with a header before each block that holds its size ----
constexpr size_t DEV_HEADER = 64;       // keeps the blocks 16-byte (and 64-byte) aligned
constexpr size_t DEV_CONTEXT = (size_t)1 << 30;
struct device_memory {
    bool configured = false;
    size_t total = (size_t)80 << 30;
    size_t used = DEV_CONTEXT, peak = DEV_CONTEXT;
};
device_memory D;

void report_peak() {
    fprintf(stderr, "emu: device memory peak %zu bytes allocated\n", D.peak - DEV_CONTEXT);
}

void device_configure() {
    D.configured = true;
    const char *m = getenv("EMU_DEVICE_MIB");
    if (m && *m) {
        long long mib = atoll(m);
        if (mib <= 1024 || mib > (1ll << 24)) {
            fprintf(stderr, "emu: EMU_DEVICE_MIB=%s: expected 1025..16777216\n", m);
            exit(2);
        }
        D.total = (size_t)mib << 20;
    }
    const char *r = getenv("EMU_REPORT_DEVICE_PEAK");
    if (r && !strcmp(r, "1")) atexit(report_peak);
}

}   // namespace

const uint3 &thread_idx() { return S.f[S.cur].tid; }
const uint3 &block_idx() { return S.bidx; }
const dim3 &block_dim() { return S.block; }
const dim3 &grid_dim() { return S.grid; }
int lane() { return S.f[S.cur].lane; }
unsigned char *dyn_smem() { return S.smem.data(); }

void shared_decl(void *p, size_t bytes) {
    bool seen = false;
    for (auto &d : S.statics)
        if (d.first == p) {
            if (d.second == S.block_serial) return;
            d.second = S.block_serial;
            seen = true;
            break;
        }
    memset(p, 0xff, bytes);
    if (!seen) S.statics.emplace_back(p, S.block_serial);
    S.static_bytes += bytes;            // first declaration in this block
    check_smem();
}

int set_max_dyn_smem(const void *kernel, int bytes) {
    if (bytes < 0 || bytes > emu_smem_optin()) return 0;
    for (auto &d : S.dyn_limits)
        if (d.first == kernel) {
            d.second = bytes;
            return 1;
        }
    S.dyn_limits.emplace_back(kernel, bytes);
    return 1;
}

void launch_bounds(int max_threads) {
    const unsigned long long n = (unsigned long long)S.block.x * S.block.y * S.block.z;
    if (max_threads > 0 && n > (unsigned long long)max_threads)
        launch_fail("%llu threads per block, above its __launch_bounds__ (%llu)", n,
                    (unsigned long long)max_threads);
    // Without __launch_bounds__ ptxas may give a thread 255 registers; 256 threads of
    // those fill a multiprocessor's 64K, more may not launch.
    if (max_threads <= 0 && n > 256)
        launch_fail("%llu threads per block and no __launch_bounds__: above %llu, the "
                    "registers are not sure to suffice", n, 256);
}

void syncthreads() {
    unsigned gen = S.bar_gen;
    S.bar_count++;
    bar_check();
    while (S.bar_gen == gen) yield();
}

void warp_barrier() {
    const int w = S.f[S.cur].warp;
    if (S.wlive[w] != 32 && S.block.x * S.block.y * S.block.z >= 32u * (unsigned)(w + 1))
        fail("warp collective with exited lanes (CUDA: undefined)");
    unsigned gen = S.wgen[w];
    S.wcount[w]++;
    warp_check(w);
    while (S.wgen[w] == gen) yield();
}

void publish(const void *src, size_t bytes) {
    if (bytes > SLOT_BYTES) fail("warp exchange larger than a slot");
    const fiber &me = S.f[S.cur];
    memcpy(S.slots[me.warp][me.lane], src, bytes);
    warp_barrier();
}

const void *slot(int l) { return S.slots[S.f[S.cur].warp][l & 31]; }

void misaligned(const char *what, const void *p, int align) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s: address %p is not %d-byte aligned (a GPU faults)", what, p,
             align);
    fail(msg);
    abort();
}

void cp_async(void *dst, const void *src, int size, int src_bytes) {
    if (size != 4 && size != 8 && size != 16) fail("cp.async cp-size other than 4, 8, 16");
    if ((uintptr_t)dst % (unsigned)size) misaligned("cp.async destination", dst, size);
    if ((uintptr_t)src % (unsigned)size) misaligned("cp.async source", src, size);
    if (src_bytes < 0 || src_bytes > size) fail("cp.async src-size outside 0..cp-size");
    if (!S.deferred) {
        memset(dst, 0, (size_t)size);
        if (src_bytes > 0) memcpy(dst, src, (size_t)src_bytes);
        return;
    }
    pending_copy c;
    c.dst = dst;
    c.size = size;
    c.src_bytes = src_bytes;
    if (src_bytes > 0) memcpy(c.data, src, (size_t)src_bytes);
    memset(dst, 0xff, (size_t)size);                  // undefined until the wait
    S.f[S.cur].copies.push_back(c);
}

void cp_async_wait_all() {
    if (S.cur < 0) fail("cp.async.wait_all outside a kernel");
    land_copies(S.f[S.cur]);
}

void run_launch(const launch_cfg &cfg, const void *kernel, const char *name,
                const std::function<void()> &body);

void launch(const launch_cfg &cfg, const void *kernel, const char *name,
            std::function<void()> body) {
    if (S.cur >= 0) fail("launch from inside a kernel");
    S.kname = name;
    S.kernel = kernel;
    const unsigned long long nt = (unsigned long long)cfg.block.x * cfg.block.y * cfg.block.z;
    if (nt == 0 || nt > 1024) launch_fail("%llu threads per block, outside 1..%llu", nt, 1024);
    if (cfg.block.z > 64) launch_fail("blockDim.z %llu, above %llu", cfg.block.z, 64);
    if (cfg.grid.x == 0 || cfg.grid.y == 0 || cfg.grid.z == 0)
        launch_fail("an empty grid (%llu blocks in x; %llu in y * z)", cfg.grid.x,
                    (unsigned long long)cfg.grid.y * cfg.grid.z);
    if (cfg.grid.y > 65535 || cfg.grid.z > 65535)
        launch_fail("gridDim.y or .z of %llu, above %llu",
                    cfg.grid.y > cfg.grid.z ? cfg.grid.y : cfg.grid.z, 65535);
    if (cfg.grid.x > 0x7fffffffu)
        launch_fail("gridDim.x of %llu, above %llu", cfg.grid.x, 0x7fffffffull);
    if (cfg.smem > (size_t)dyn_limit(kernel))
        launch_fail("%llu bytes of dynamic shared memory, above the kernel's "
                    "MaxDynamicSharedMemorySize (%llu: 48 KiB unless cudaFuncSetAttribute "
                    "raised it)", cfg.smem, (unsigned long long)dyn_limit(kernel));
    // (static + dynamic against the device's limit: check_smem, per block when run)
    enqueue(cfg.stream, [cfg, kernel, name, body] { run_launch(cfg, kernel, name, body); });
}

// A launch carried out (emu_stream.cc): its blocks one after the other.
void run_launch(const launch_cfg &cfg, const void *kernel, const char *name,
                const std::function<void()> &body) {
    if (S.cur >= 0) fail("a launch carried out inside a kernel");
    S.kname = name;
    S.kernel = kernel;
    S.dyn_bytes = cfg.smem;
    S.grid = cfg.grid;
    S.block = cfg.block;
    S.body = &body;
    S.smem.assign(cfg.smem > 0 ? cfg.smem : 16, 0);
    if (!S.configured) configure();
    const unsigned long long nb = (unsigned long long)cfg.grid.x * cfg.grid.y * cfg.grid.z;
    if (nb > 0x7fffffffull) fail("grid of more than 2^31-1 blocks (an emulation limit)");
    order_of((int)nb);
    const std::vector<int> blocks = S.perm;          // run_block reuses S.perm
    for (int b : blocks) {
        const unsigned x = (unsigned)b % cfg.grid.x, y = (unsigned)b / cfg.grid.x % cfg.grid.y,
                       z = (unsigned)b / (cfg.grid.x * cfg.grid.y);
        S.bidx = uint3{x, y, z};
        S.static_bytes = 0;
        run_block();
    }
}

}   // namespace emu

// the C calls of tests/emu/include/cuda_runtime_api.h (device memory)
using emu::D;
using emu::DEV_HEADER;

extern "C" void *emu_device_malloc(size_t n) {
    if (!D.configured) emu::device_configure();
    if (n == 0) n = 1;
    if (n > D.total - D.used) return nullptr;
    unsigned char *b = (unsigned char *)aligned_alloc(DEV_HEADER, (DEV_HEADER + n + 63) / 64 * 64);
    if (!b) return nullptr;
    memcpy(b, &n, sizeof n);
    // cudaMalloc's memory holds whatever was there: 0xff bytes here (NaN as bf16 and
    // fp32), so that a kernel reading memory nothing wrote fails its test instead of
    // finding the zeros of a fresh host page
    memset(b + DEV_HEADER, 0xff, n);
    D.used += n;
    if (D.used > D.peak) D.peak = D.used;
    return b + DEV_HEADER;
}

extern "C" void emu_device_free(void *p) {
    if (!p) return;
    unsigned char *b = (unsigned char *)p - DEV_HEADER;
    size_t n;
    memcpy(&n, b, sizeof n);
    D.used -= n;
    free(b);
}

// Shared memory per block after opting in: EMU_SMEM_OPTIN_KIB, default 227 (sm_90; 163
// is sm_80's, 99 sm_86's and sm_89's)
extern "C" int emu_smem_optin(void) {
    static int v = 0;
    if (v == 0) {
        const char *e = getenv("EMU_SMEM_OPTIN_KIB");
        int k = e && *e ? atoi(e) : 227;
        if (k < 48 || k > 1024) {
            fprintf(stderr, "emu: EMU_SMEM_OPTIN_KIB=%s: expected 48..1024\n", e);
            exit(2);
        }
        v = k * 1024;
    }
    return v;
}

extern "C" void emu_device_info(size_t *free_bytes, size_t *total_bytes) {
    if (!D.configured) emu::device_configure();
    *total_bytes = D.total;
    *free_bytes = D.total - D.used;
}

