/*
 * thread.c - the parallel loop behind every multi-threaded kernel (OpenMP when available).
 *
 * Tasks are handed out dynamically, but each task always covers the same slice of the problem
 * and writes only its own output, so results are bitwise identical for any thread count.
 */
#include <unistd.h>

#include "internal.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

int sp_threads_available(void) {
#if defined(_OPENMP)
    int n = omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#endif
    return n > 0 ? (int)n : 1;
}

bool sp_threads_enabled(void) {
#if defined(_OPENMP)
    return true;
#else
    return false;
#endif
}

void sp_parallel_for(int64_t ntasks, int nthreads, sp_task_fn fn, void *ctx) {
    if (ntasks <= 0) return;
    if (nthreads > ntasks) nthreads = (int)ntasks;
#if defined(_OPENMP)
    if (nthreads > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
        for (int64_t t = 0; t < ntasks; t++) fn(ctx, t);
        return;
    }
#endif
    for (int64_t t = 0; t < ntasks; t++) fn(ctx, t);
}
