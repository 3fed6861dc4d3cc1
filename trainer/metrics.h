// trainer/metrics.h: the run's metrics.jsonl (one JSON object per line) and the
// human progress line.
#ifndef ANVIL_TRAINER_METRICS_H
#define ANVIL_TRAINER_METRICS_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct step_metrics {
    long step;              // 1-based number of the completed step
    long steps;             // total steps of the run
    double loss;            // mean training loss of the global batch
    double lr;
    double grad_norm;       // before clipping
    double tokens_per_s;
    double ms_per_step;
    double mfu;             // fraction of peak FLOP/s, 0 if unknown
    double elapsed_s;       // since training started
    long long tokens;       // tokens consumed so far
    long skipped;           // steps skipped for a non-finite loss or gradient so far
    double comm_bytes;      // bytes this rank sent in the step's collectives
    long long samples;      // data position: samples (windows) consumed, over all ranks
} step_metrics;

// Append one training-step object to `f` and flush. Returns 0 or -1.
int metrics_write_step(FILE *f, const step_metrics *s);
// Append one evaluation object {"step": N, "val_loss": x, "val_tokens": n}.
int metrics_write_eval(FILE *f, long step, double val_loss, long long val_tokens);
// A rollback after non-finite steps: {"step": step, "rollback_to": to}.
int metrics_write_rollback(FILE *f, long step, long to);
// Print the progress line for s to `out`.
void metrics_print_progress(FILE *out, const step_metrics *s);
// Format seconds as H:MM:SS into buf (at least 16 bytes).
const char *metrics_format_duration(double seconds, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
