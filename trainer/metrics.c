// trainer/metrics.c: metrics.jsonl records and the progress line.
//
// Keys are fixed by DESIGN.md ("step", "loss", "lr", "grad_norm", "tokens_per_s" for
// steps; "step", "val_loss" for evaluations): launch scripts and outside checks parse
// them. Every line is flushed so a killed run keeps what it logged.
#include "trainer/metrics.h"

#include <math.h>

// JSON has no NaN/Infinity: print null for them so every line stays parseable.
static void put_num(FILE *f, const char *key, double x, int last) {
    if (isfinite(x)) fprintf(f, "\"%s\": %.9g%s", key, x, last ? "" : ", ");
    else fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
}

int metrics_write_step(FILE *f, const step_metrics *s) {
    if (!f) return 0;
    fprintf(f, "{\"step\": %ld, ", s->step);
    put_num(f, "loss", s->loss, 0);
    put_num(f, "lr", s->lr, 0);
    put_num(f, "grad_norm", s->grad_norm, 0);
    put_num(f, "tokens_per_s", s->tokens_per_s, 0);
    put_num(f, "ms_per_step", s->ms_per_step, 0);
    put_num(f, "mfu", s->mfu, 0);
    fprintf(f, "\"tokens\": %lld, \"samples\": %lld, \"skipped_steps\": %ld, ", s->tokens,
            s->samples, s->skipped);
    put_num(f, "comm_bytes", s->comm_bytes, 0);
    put_num(f, "elapsed_s", s->elapsed_s, 1);
    fputs("}\n", f);
    return fflush(f) == 0 ? 0 : -1;
}

int metrics_write_eval(FILE *f, long step, double val_loss, long long val_tokens) {
    if (!f) return 0;
    fprintf(f, "{\"step\": %ld, ", step);
    put_num(f, "val_loss", val_loss, 0);
    fprintf(f, "\"val_tokens\": %lld}\n", val_tokens);
    return fflush(f) == 0 ? 0 : -1;
}

int metrics_write_rollback(FILE *f, long step, long to) {
    if (!f) return 0;
    fprintf(f, "{\"step\": %ld, \"rollback_to\": %ld}\n", step, to);
    return fflush(f) == 0 ? 0 : -1;
}

const char *metrics_format_duration(double seconds, char *buf, size_t len) {
    if (!isfinite(seconds) || seconds < 0) seconds = 0;
    long t = (long)(seconds + 0.5);
    snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    return buf;
}

void metrics_print_progress(FILE *out, const step_metrics *s) {
    char el[32], eta[32];
    double rate = s->elapsed_s / (double)(s->step > 0 ? s->step : 1);
    metrics_format_duration(s->elapsed_s, el, sizeof el);
    metrics_format_duration(rate * (double)(s->steps - s->step), eta, sizeof eta);
    fprintf(out, "step %*ld/%ld | loss %.4f | lr %.2e | norm %6.3f | %8.0f tok/s | "
            "%6.0f ms | MFU %5.1f%% | %s elapsed | ETA %s\n",
            s->steps >= 1000000 ? 7 : s->steps >= 1000 ? 4 : 3, s->step, s->steps, s->loss,
            s->lr, s->grad_norm, s->tokens_per_s, s->ms_per_step, 100.0 * s->mfu, el, eta);
    fflush(out);
}
