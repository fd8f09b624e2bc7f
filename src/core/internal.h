/*
 * internal.h - helpers shared by sparrow's own source files; not installed.
 */
#ifndef SPARROW_INTERNAL_H
#define SPARROW_INTERNAL_H

#include <time.h>

#include "sparrow/core.h"

/* Sets this thread's last-error message (printf-style) and returns st, so that a check reads
 *     if (n < 0) return sp_fail(SP_EINVAL, "csr: rows %lld < 0", (long long)n);            */
sp_status sp_fail(sp_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs fn(ctx, task) for task in [0, ntasks) on up to nthreads threads. Tasks are independent
 * and each writes its own output, so the result does not depend on the thread count. */
typedef void (*sp_task_fn)(void *ctx, int64_t task);
void sp_parallel_for(int64_t ntasks, int nthreads, sp_task_fn fn, void *ctx);

#define SP_UNUSED(x) ((void)(x))
#define SP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SP_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Seconds on the monotonic clock, for progress reports and timings (never for results). */
static inline double sp_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
