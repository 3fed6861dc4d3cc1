// trainer/schedule.c: the learning-rate schedule, a pure function of the step so that
// a resumed run needs no schedule state beyond the step counter.
#include <math.h>

#include "trainer/optimizer.h"

float lr_at(const train_config *tc, long s) {
    const double lr = tc->lr, lo = tc->min_lr;
    const long S = tc->steps, W = tc->warmup_steps;
    if (s < W) return (float)(lr * (double)(s + 1) / (double)W);
    if (tc->schedule == LR_SCHEDULE_CONSTANT) return (float)lr;
    if (tc->schedule == LR_SCHEDULE_WSD) {
        // warmup-stable-decay: constant, then linear to min_lr over the last decay_frac
        long decay_start = S - lround(tc->decay_frac * (double)S);
        if (decay_start < W) decay_start = W;
        if (s < decay_start) return (float)lr;
        long span = S - decay_start > 1 ? S - decay_start : 1;
        return (float)(lr + (lo - lr) * (double)(s - decay_start) / (double)span);
    }
    long span = S - W > 1 ? S - W : 1;
    double p = (double)(s - W) / (double)span;
    if (p > 1.0) p = 1.0;
    if (tc->schedule == LR_SCHEDULE_LINEAR) return (float)(lr + (lo - lr) * p);
    return (float)(lo + 0.5 * (lr - lo) * (1.0 + cos(M_PI * p)));   // cosine
}
