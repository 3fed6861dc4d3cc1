// tests/emu/emu_stream.cc: CUDA streams, events and asynchronous copies for the host
// emulation (tests/emu), so that a missing stream wait or host synchronization changes
// the result, as it would on a GPU.
//
// EMU_STREAMS (read once) says when work queued on a stream (kernel launches, cuBLASLt
// matmuls, cudaMemcpyAsync / cudaMemsetAsync, the emulated NCCL calls) is carried out:
//   sync   (default) at once, when it is queued: every call has completed when it
//          returns, which hides every ordering bug;
//   lazy   as late as the program allows: only when something waits for it
//          (cudaStreamSynchronize, cudaEventSynchronize, a cudaStreamWaitEvent of
//          another stream that is being carried out, a synchronous copy, cudaFree).
//          A host read of a result without a wait, or a stream using another's result
//          without cudaStreamWaitEvent, then sees the old contents;
//   mixed  the first stream created (the cuda backend's compute stream) lazy, every
//          other stream (the NCCL groups') at once: a collective that does not wait
//          for the compute stream then runs before the kernels that make its input.
// Rules, as the CUDA runtime documents them: a stream runs its work in order; a
// cudaStreamWaitEvent holds the stream until the work before the event's latest record
// (at the time of the call) is done; an event never recorded counts as done.
// cudaMemcpyAsync from pageable host memory reads it when called, into pinned memory
// (cudaMallocHost) when carried out; to pageable host memory it returns once the copy
// is done (the stream is carried out up to it). cudaFree and cudaFreeHost wait for
// every stream first (what the runtime does in practice); cudaMalloc does not.
// A stream waiting for work queued on itself after the wait (a deadlock on a GPU) is
// reported and aborts.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <deque>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "tests/emu/emu_cuda.h"
#include "tests/emu/include/cuda_runtime_api.h"

struct emu_stream {
    emu_stream(int i, bool e) : id(i), eager(e) {}
    int id;                              // creation order, from 1; 0: the legacy stream
    bool eager;                          // carried out when queued (EMU_STREAMS)
    bool running = false;                // being carried out (flush)
    unsigned long long queued = 0, done = 0;
    std::deque<std::function<void()>> q;
};

struct emu_event {
    double ms = 0.0;                     // CLOCK_MONOTONIC when its record was carried out
    emu_stream *stream = nullptr;        // the latest record: stream and position
    unsigned long long seq = 0;
};

namespace {

enum mode_kind { MODE_SYNC, MODE_LAZY, MODE_MIXED };

struct streams_state {
    int mode = -1;
    int created = 0;
    emu_stream legacy{0, false};
    std::vector<emu_stream *> live;      // creation order
    std::map<const char *, size_t> pinned;   // cudaMallocHost blocks: start -> bytes
};
streams_state T;

int mode() {
    if (T.mode >= 0) return T.mode;
    const char *m = getenv("EMU_STREAMS");
    if (!m || !*m || !strcmp(m, "sync")) T.mode = MODE_SYNC;
    else if (!strcmp(m, "lazy")) T.mode = MODE_LAZY;
    else if (!strcmp(m, "mixed")) T.mode = MODE_MIXED;
    else {
        fprintf(stderr, "emu: EMU_STREAMS=%s: expected sync, lazy or mixed\n", m);
        exit(2);
    }
    T.legacy.eager = T.mode == MODE_SYNC;
    return T.mode;
}

emu_stream *of(cudaStream_t s) {
    mode();
    return s != nullptr ? s : &T.legacy;
}

double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

// Carry out st's work up to position upto (its first `upto` items).
int running_streams = 0;                 // streams being carried out now

void flush(emu_stream *st, unsigned long long upto) {
    if (upto <= st->done) return;
    if (st->running) {
        fprintf(stderr, "emu: stream %d waits for work queued on it after the wait (a "
                "deadlock on a GPU)\n", st->id);
        abort();
    }
    st->running = true;
    running_streams++;
    while (st->done < upto) {
        std::function<void()> fn = std::move(st->q.front());
        st->q.pop_front();
        st->done++;
        fn();
    }
    running_streams--;
    st->running = false;
}

void flush_all() {
    flush(&T.legacy, T.legacy.queued);
    for (size_t i = 0; i < T.live.size(); i++) flush(T.live[i], T.live[i]->queued);
}

bool is_pinned(const void *p, size_t n) {
    auto it = T.pinned.upper_bound((const char *)p);
    if (it == T.pinned.begin()) return false;
    --it;
    return (const char *)p + n <= it->first + it->second;
}

}   // namespace

namespace emu {
void enqueue(cudaStream_t s, std::function<void()> fn) {
    emu_stream *st = of(s);
    st->q.push_back(std::move(fn));
    st->queued++;
    if (st->eager) flush(st, st->queued);
}
}   // namespace emu

extern "C" {

void emu_enqueue_c(cudaStream_t s, void (*fn)(void *), void *arg) {
    emu::enqueue(s, [fn, arg] { fn(arg); });
}

void emu_streams_progress(void) {
    mode();
    if (running_streams == 0) flush_all();
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    (void)flags;
    mode();
    emu_stream *st = new emu_stream(++T.created, T.mode != MODE_LAZY);
    if (T.mode == MODE_MIXED) st->eager = st->id > 1;
    T.live.push_back(st);
    *s = st;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (s == nullptr) return cudaErrorInvalidValue;
    flush(s, s->queued);                 // queued work still completes
    for (size_t i = 0; i < T.live.size(); i++)
        if (T.live[i] == s) T.live.erase(T.live.begin() + (long)i);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    emu_stream *st = of(s);
    flush(st, st->queued);
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
    mode();
    flush_all();
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    (void)flags;
    *e = new emu_event;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    if (e == nullptr) return cudaErrorInvalidValue;
    if (e->stream) flush(e->stream, e->seq);   // its pending record writes e
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    emu_stream *st = of(s);
    emu::enqueue(s, [e] { e->ms = now_ms(); });
    e->stream = st;
    e->seq = st->queued;                 // done once the record itself is
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    (void)flags;
    emu_stream *es = e->stream;
    const unsigned long long seq = e->seq;  // the latest record at the time of the call
    if (es == nullptr) return cudaSuccess;  // never recorded: nothing to wait for
    emu::enqueue(s, [es, seq] { flush(es, seq); });
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (e->stream) flush(e->stream, e->seq);
    return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    cudaEventSynchronize(a);
    cudaEventSynchronize(b);
    *ms = (float)(b->ms - a->ms);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t n) {
    if (n == 0) n = 1;
    *p = malloc(n);
    if (*p == nullptr) return cudaErrorMemoryAllocation;
    T.pinned[(const char *)*p] = n;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p) {
    if (p == nullptr) return cudaSuccess;
    mode();
    flush_all();
    T.pinned.erase((const char *)p);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    if (p == nullptr) return cudaSuccess;
    mode();
    flush_all();
    emu_device_free(p);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    emu::enqueue(s, [p, v, n] { memset(p, v, n); });
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k,
                            cudaStream_t s) {
    emu_stream *st = of(s);
    if ((k == cudaMemcpyHostToDevice || k == cudaMemcpyHostToHost) && !is_pinned(src, n)) {
        // pageable source: read now
        std::vector<unsigned char> copy((const unsigned char *)src,
                                        (const unsigned char *)src + n);
        emu::enqueue(s, [dst, copy] { memcpy(dst, copy.data(), copy.size()); });
    } else {
        emu::enqueue(s, [dst, src, n] { memmove(dst, src, n); });
    }
    // pageable destination: the call returns once the copy is done
    if ((k == cudaMemcpyDeviceToHost || k == cudaMemcpyHostToHost) && !is_pinned(dst, n))
        flush(st, st->queued);
    return cudaSuccess;
}

}   // extern "C"
