/*
 * sparrow/core.h - status codes, errors, memory, random numbers, CPU features, threads.
 *
 * Every fallible sparrow function returns an sp_status; SP_OK is 0 and every error is negative.
 * On error, sp_last_error() holds a message for the calling thread that names the bad value:
 *
 *     sp_csr *w = NULL;
 *     sp_status st = sp_csr_from_dense(rows, cols, dense, cols, NULL, 0, &w);
 *     if (st != SP_OK) {
 *         fprintf(stderr, "%s: %s\n", sp_status_name(st), sp_last_error());
 *         return st;
 *     }
 *     ...
 *     sp_csr_free(w);
 *
 * All memory that sparrow allocates goes through one allocator hook, 64-byte aligned. Tests use
 * sp_alloc_fail_after() to make the N-th allocation fail and sp_alloc_live() to find leaks.
 */
#ifndef SPARROW_CORE_H
#define SPARROW_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ------------------------------------------------------------------------- */

typedef enum sp_status {
    SP_OK = 0,
    SP_EINVAL = -1,       /* an argument is invalid (NULL, negative size, unknown enum value) */
    SP_ESHAPE = -2,       /* shapes or leading dimensions do not agree */
    SP_ENOMEM = -3,       /* an allocation failed */
    SP_EIO = -4,          /* reading or writing a file failed */
    SP_EFORMAT = -5,      /* data breaks a format invariant (unsorted indices, bad row_ptr, ...) */
    SP_EUNSUPPORTED = -6, /* valid request that this build or CPU cannot do */
    SP_EOVERFLOW = -7,    /* a size computed from the input does not fit its type */
} sp_status;

/* Name of a status code ("SP_EINVAL"); never NULL. */
const char *sp_status_name(sp_status st);

/* Message of the last error on this thread ("" if none). Valid until the next sparrow call. */
const char *sp_last_error(void);

/* Clears this thread's last-error message. */
void sp_clear_error(void);

/* ---- memory -------------------------------------------------------------------------------- */

/* An allocator: alloc returns `size` bytes aligned to `align` (a power of two >= 64), or NULL. */
typedef struct sp_allocator {
    void *(*alloc)(size_t size, size_t align, void *user);
    void (*free)(void *ptr, void *user);
    void *user;
} sp_allocator;

/* Installs an allocator for the whole process (NULL restores the default, aligned_alloc).
 * Call it before allocating: memory must be freed by the allocator that made it. */
void sp_set_allocator(const sp_allocator *a);

/* Returns `size` bytes aligned to 64, or NULL (and SP_ENOMEM in sp_last_error). size 0 gives a
 * valid unique pointer. Free with sp_free. */
void *sp_alloc(size_t size);

/* As sp_alloc for n * size bytes, zero-filled; NULL if the product overflows. */
void *sp_calloc(size_t n, size_t size);

/* Frees memory from sp_alloc/sp_calloc; accepts NULL. */
void sp_free(void *ptr);

/* Fault injection for tests: the n-th allocation from now (1 = the next one) fails and every
 * later one succeeds again. n <= 0 disables. Process-wide. */
void sp_alloc_fail_after(int64_t n);

/* Number of allocations made through sp_alloc that are not yet freed (for leak tests). */
int64_t sp_alloc_live(void);

/* ---- checked size arithmetic -------------------------------------------------------------- */

/* *out = a * b; false (and *out untouched) on overflow or if a or b is negative. */
static inline bool sp_mul_i64(int64_t a, int64_t b, int64_t *out) {
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}
static inline bool sp_add_i64(int64_t a, int64_t b, int64_t *out) {
    int64_t r;
    if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) return false;
    *out = r;
    return true;
}
/* *out = count * elem_size bytes; false on overflow or negative count. */
static inline bool sp_bytes(int64_t count, size_t elem_size, size_t *out) {
    size_t r;
    if (count < 0 || __builtin_mul_overflow((size_t)count, elem_size, &r)) return false;
    *out = r;
    return true;
}

/* ---- random numbers ------------------------------------------------------------------------ */

/* Counter-based generator (Philox4x32-10, Salmon et al. 2011). A stream is (key, counter): the
 * same seed and stream id give the same numbers on every platform and thread count, and
 * sp_rng_split derives independent child streams without touching the parent's sequence. */
typedef struct sp_rng {
    uint32_t key[2];
    uint64_t counter; /* number of 128-bit blocks consumed */
    uint32_t buf[4];
    int avail;        /* unread words left in buf */
} sp_rng;

/* Stream `stream` of generator `seed`. */
void sp_rng_init(sp_rng *r, uint64_t seed, uint64_t stream);
/* Child stream number `id` of r; r itself is unchanged. */
sp_rng sp_rng_split(const sp_rng *r, uint64_t id);
uint32_t sp_rng_u32(sp_rng *r);
uint64_t sp_rng_u64(sp_rng *r);
/* Uniform in [0, 1), 24 random bits: bit-identical on every platform. */
float sp_rng_uniform(sp_rng *r);
/* Uniform integer in [0, n) without modulo bias; n > 0. */
uint64_t sp_rng_below(sp_rng *r, uint64_t n);
/* Standard normal (Box-Muller on libm's logf/cosf: identical wherever libm agrees). */
float sp_rng_normal(sp_rng *r);
/* The raw Philox4x32-10 block function, exposed for its known-answer test. */
void sp_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* ---- CPU features and kernel ISA ---------------------------------------------------------- */

typedef enum sp_isa {
    SP_ISA_SCALAR = 0, /* portable C */
    SP_ISA_AVX2 = 1,   /* x86-64 AVX2 + FMA */
    SP_ISA_AVX512 = 2, /* x86-64 AVX-512 F/BW/DQ/VL */
    SP_ISA_NEON = 3,   /* aarch64 Advanced SIMD */
} sp_isa;

/* Name of an ISA level ("avx2"). */
const char *sp_isa_name(sp_isa isa);
/* True when this CPU and OS can run code of that level (CPUID and XGETBV on x86). */
bool sp_isa_supported(sp_isa isa);
/* The best level this machine supports. */
sp_isa sp_isa_best(void);
/* The level the kernels use: SPARROW_ISA (scalar|avx2|avx512|neon) if set and supported,
 * otherwise sp_isa_best(). Decided once per process. An unusable SPARROW_ISA value falls back to
 * the best level and is reported by sp_isa_env_warning(). */
sp_isa sp_isa_active(void);
/* A message if SPARROW_ISA could not be honoured, else NULL. */
const char *sp_isa_env_warning(void);

/* ---- threads ------------------------------------------------------------------------------- */

/* Number of hardware threads, >= 1. */
int sp_threads_available(void);
/* True if this build runs kernels on several threads (its own pthread pool). */
bool sp_threads_enabled(void);

/* ---- version ------------------------------------------------------------------------------- */

#define SPARROW_VERSION_MAJOR 0
#define SPARROW_VERSION_MINOR 1
#define SPARROW_VERSION_PATCH 0
const char *sp_version(void);

#ifdef __cplusplus
}
#endif
#endif
