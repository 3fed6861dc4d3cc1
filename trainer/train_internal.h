// trainer/train_internal.h: what train.c shares with the files it is split into.
#ifndef ANVIL_TRAINER_TRAIN_INTERNAL_H
#define ANVIL_TRAINER_TRAIN_INTERNAL_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "parallel/parallel.h"
#include "trainer/config.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"

#ifdef __cplusplus
extern "C" {
#endif

// Gather every parameter at its global shape (vocabulary rows cut to V) on world rank
// 0 and write them to the named-tensor file `path` (gather.c): o's fp32 master weights
// where it keeps them (cuda), else m's parameters. Collective over the world (dp
// replica 0 sends; the other dp ranks take part in the master weights' all-gather
// under ZeRO-1, then return). Returns 0, 1 (communication or memory) or 2 (the file
// could not be written), on rank 0; 0 or 1 elsewhere.
int train_write_gathered(const model *m, parallel_grid *g, const optimizer *o,
                         const char *path);

// The largest exit code any rank has, so all ranks leave alike (the rank that failed
// has printed why). Returns it (1 if the reduction itself fails). Collective.
int train_agree_rc(parallel_grid *g, int rc);

// ---- device (device.c) ----------------------------------------------------------------

// The backend `device` selects: cpu; cuda on the GPU of this rank's index on its node
// (modulo the node's GPUs); auto: cuda when a GPU is usable, else cpu. Returns NULL
// after the cuda backend printed one line why it is unavailable. Collective (MPI) when
// no launcher variable gives the local rank.
const anv_backend *train_select_backend(device_kind d);
// Print (rank `lead`) the memory this rank will allocate for the model shard sh at
// (B, T), its gradients and optimizer state (ZeRO-1 sharded over dp when zero), and
// refuse a layout that does not fit the device: returns the agreed code (0, 2 after one
// line per rank that does not fit, 1). Collective over the world.
int train_memory_plan(parallel_grid *g, const model_config *mc, const anv_backend *be, int B,
                      int T, const model_shard *sh, int zero, int lead);

// Called by train.c after every step. The model's activations (but the RoPE tables:
// model_step_scratch) and gradients then hold nothing the next step reads (it zeroes
// the gradients and writes each activation before reading it; evaluation and sampling
// only run forwards), so they can serve as scratch. After the first step this process
// runs (*tuned 0, then set), with train.matmul_algo timed (auto: unless
// train.deterministic), the backend times its matmul algorithms there
// (be->matmul_tune), writes each problem's figures to
// run_dir/matmul_algos_rank<rank>.txt, and rank `lead` prints the summary. poison (the
// test hook ANVIL_TEST_POISON_SCRATCH=1) fills both with NaN after every step, so that
// a test shows they are dead indeed. Not collective.
void train_between_steps(const model *m, const anv_backend *be, const train_config *tc,
                         const char *run_dir, int rank, int lead, int poison, int *tuned);

// ---- watchdog (watchdog.c) -----------------------------------------------------------

// Start the watchdog thread (timeout_s <= 0: none): after timeout_s seconds without a
// watchdog_beat it prints one line naming `rank` and the phase and exits with 1.
// Returns 0, or 1 if the thread cannot start.
int watchdog_start(double timeout_s, int rank);
// Progress: reset the timer; `phase` (a static string) names what the rank does next.
void watchdog_beat(const char *phase);
void watchdog_stop(void);

// ---- checkpoints (checkpointing.c) ----------------------------------------------------

// The counters a checkpoint carries besides tensors.
typedef struct train_state {
    long step;                  // optimizer steps done
    long long tokens;           // tokens trained
    long long samples;          // data position: windows consumed over all ranks
    long skipped;               // updates skipped (non-finite)
    uint64_t sample_rng;        // the sampler's RNG state
    long opt_t;                 // AdamW's update count (set by the save itself)
} train_state;

typedef struct train_save train_save;   // a save in progress (checkpointing.c)



// What a save or a load works on.
typedef struct train_ckpt {
    const anvil_config *cfg;
    model *m;
    optimizer *opt;
    parallel_grid *grid;
    int zero;                   // ZeRO-1 in effect (moments sharded over dp)
    const char *config_yaml;    // the effective config, stored in the checkpoint
    train_save **pending;       // an async save not yet committed, or NULL
    FILE **metrics;             // rank 0: where a committed save's timings are logged
    float **staging;            // (3) host copies of params, adam m, adam v kept from one
                                // async save to the next (NULL: allocated per save);
                                // the caller frees them
} train_ckpt;

// Save the state after ts->step steps to run.dir/checkpoints/step_NNNNNNNN (atomic;
// collective over the world). A pending async save is committed first. With async,
// this rank's file is written by a background thread from a host copy and the save
// stays pending until train_checkpoint_poll commits it. Returns the agreed exit code
// (0, 1 or 2).
int train_checkpoint_save(const train_ckpt *c, const train_state *ts, int async);
// Whether this rank's part of the pending save is on disk (1 when none is pending).
int train_checkpoint_write_done(const train_ckpt *c);
// Commit the pending save, if any, when all_done (every rank's write finished, as the
// caller agreed) or wait (block until it has). Collective. Returns the agreed code.
int train_checkpoint_poll(const train_ckpt *c, int all_done, int wait);
// After an error: wait for this rank's background write and drop the pending save
// without committing it (not collective).
void train_checkpoint_abandon(const train_ckpt *c);
// Resume from what `mode` selects (checkpoint.resume: auto, none or a path; "auto"
// with rollback for a rollback to this run's newest checkpoint): find it (rank 0
// checks its MANIFEST and model.h5), load this rank's shard of the parameters,
// moments and counters whatever layout wrote it (c->opt NULL: the parameters only),
// and print how long it took. A checkpoint whose pieces prove damaged while loading
// is reported and the next older one is tried; when none is left the model and
// optimizer are initialized afresh (at start) or the run stops (rollback: 2).
// Returns the agreed exit code: 0 with *resumed = the step loaded and ts set (-1 and
// ts untouched for a fresh start), 2 for a bad given path or a checkpoint of another
// model. Collective.
int train_checkpoint_resume(const train_ckpt *c, const char *mode, int rollback,
                            train_state *ts, long *resumed);
// Load checkpoint dir (checked by ckpt_verify or ckpt_verify_quick) into this rank's
// shard of the model and optimizer (c->opt NULL: the parameters only). Returns the
// agreed code: 0 with ts set; 3 when a piece failed its checksum or could not be read
// (on the ranks that found it, why (why_n bytes) says which file and what, unprinted;
// elsewhere it is empty; the state is then undefined); 2 for a checkpoint of another
// model (printed); 1. Collective.
int train_checkpoint_load(const train_ckpt *c, const char *dir, train_state *ts, char *why,
                          size_t why_n);

#ifdef __cplusplus
}
#endif
#endif
