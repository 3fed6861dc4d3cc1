// trainer/watchdog.c: turn a rank that stops making progress into an abort.
//
// A rank that hangs (a peer died without its MPI library noticing, a filesystem
// stalls, a driver deadlocks) would otherwise keep every other rank waiting in its
// next collective for ever, and the job would hold its nodes until the scheduler's
// time limit. A background thread checks, once a second, when the training loop last
// reported progress (watchdog_beat, at each step boundary and around evaluations and
// checkpoint saves); after `timeout` seconds without one it prints one line naming the
// rank and what it was doing, and ends the process with exit code 1. mpirun then ends
// the whole job, so the scheduler can restart it (resume: auto continues from the last
// checkpoint). Every rank runs its own watchdog: the stuck rank and the ranks waiting
// for it all time out.
//
// The thread calls only async-safe-enough functions (fprintf to stderr, _exit): MPI is
// initialized without thread support, so it must not call MPI_Abort.
#include "trainer/train_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static atomic_llong g_last_beat_ms;
static _Atomic(const char *) g_phase;
static atomic_int g_running;
static pthread_t g_thread;
static double g_timeout_s;
static int g_rank;

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *watch(void *arg) {
    (void)arg;
    while (atomic_load(&g_running)) {
        sleep(1);
        double idle = (double)(now_ms() - atomic_load(&g_last_beat_ms)) / 1000.0;
        if (atomic_load(&g_running) && idle > g_timeout_s) {
            fprintf(stderr, "anvil: watchdog: rank %d made no progress for %.0f s (while %s; "
                    "run.watchdog_s = %g): aborting the job so that it can be restarted\n",
                    g_rank, idle, atomic_load(&g_phase), g_timeout_s);
            fflush(stderr);
            _exit(1);
        }
    }
    return NULL;
}

int watchdog_start(double timeout_s, int rank) {
    if (timeout_s <= 0) return 0;
    g_timeout_s = timeout_s;
    g_rank = rank;
    atomic_store(&g_last_beat_ms, now_ms());
    atomic_store(&g_phase, "starting");
    atomic_store(&g_running, 1);
    if (pthread_create(&g_thread, NULL, watch, NULL) != 0) {
        atomic_store(&g_running, 0);
        fprintf(stderr, "anvil: watchdog: cannot start its thread\n");
        return 1;
    }
    return 0;
}

void watchdog_beat(const char *phase) {
    atomic_store(&g_last_beat_ms, now_ms());
    atomic_store(&g_phase, phase);
}

void watchdog_stop(void) {
    if (!atomic_load(&g_running)) return;
    atomic_store(&g_running, 0);
    pthread_join(g_thread, NULL);
}
