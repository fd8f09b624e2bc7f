/*
 * schedule.c - learning-rate schedules: constant, step decay and cosine annealing (Loshchilov
 * & Hutter 2017, without restarts), each with an optional linear warmup.
 */
#include <math.h>

#include "sparrow/train.h"

float sp_schedule_lr(const sp_schedule *s, int64_t t) {
    if (t < 0) t = 0;
    if (s->warmup > 0 && t < s->warmup) return (float)(s->lr * (double)(t + 1) / (double)s->warmup);
    int64_t u = t - (s->warmup > 0 ? s->warmup : 0);
    switch (s->kind) {
    case SP_SCHED_CONSTANT: return (float)s->lr;
    case SP_SCHED_STEP:
        if (s->step_size <= 0) return (float)s->lr;
        return (float)(s->lr * pow(s->gamma, (double)(u / s->step_size)));
    case SP_SCHED_COSINE: {
        int64_t T = s->total - (s->warmup > 0 ? s->warmup : 0);
        if (T <= 0) return (float)s->lr;
        double f = u >= T ? 1.0 : (double)u / (double)T;
        return (float)(s->min_lr + (s->lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * f)));
    }
    }
    return (float)s->lr;
}

const char *sp_sched_name(sp_sched_kind kind) {
    switch (kind) {
    case SP_SCHED_CONSTANT: return "constant";
    case SP_SCHED_STEP: return "step";
    case SP_SCHED_COSINE: return "cosine";
    }
    return NULL;
}
