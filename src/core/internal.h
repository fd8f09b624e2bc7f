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

/* A whole regular file into owned *bytes (free with sp_free) and *len (file.c); SP_EIO naming
 * `who` and path if it cannot be opened, is not a regular file or reads short. */
sp_status sp_read_file(const char *path, const char *who, uint8_t **bytes, size_t *len);

/* Atomic replacement of a file (file.c). sp_atomic_open creates a new temporary file
 * next to path (mode 0666 less the umask) and returns its descriptor and owned name (free with
 * sp_free); SP_EIO naming `who` and path if it cannot. sp_atomic_commit takes the descriptor
 * after the caller wrote it (err: the caller's first errno, 0 if none): fsync, close, rename
 * over path, fsync of the directory; on any error the temporary file is removed and path is
 * untouched. Returns 0 or the errno. */
sp_status sp_atomic_open(const char *path, const char *who, int *fd, char **tmp);
int sp_atomic_commit(int fd, const char *tmp, const char *path, int err);

/* Extensions that a kernel variant may need beyond its ISA level (sp_kernel.feat): probed
 * once per process (cpu.c); a bit is set only if its ISA level is supported too. */
enum { SP_FEAT_AVX512VNNI = 1u << 0 /* vpdpbusd on zmm: CPUID.(7,0):ECX bit 11 */ };
unsigned sp_cpu_features(void);

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
