/*
 * test.h - sparrow's small test harness. A test is a function registered with TEST(name);
 * checks record a failure with file and line and let the test go on. The runner prints one line
 * per failing check and closes with "N passed, N failed".
 *
 *     TEST(csr_rejects_unsorted_columns) {
 *         CHECK_STATUS(sp_csr_from_arrays(...), SP_EFORMAT);
 *     }
 */
#ifndef SPARROW_TEST_H
#define SPARROW_TEST_H

#include <stdio.h>
#include <string.h>

#include "sparrow/sparrow.h"

typedef void (*sp_test_fn)(void);
void sp_test_register(const char *name, sp_test_fn fn);
void sp_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Number of failed checks so far in the current test. */
int sp_test_failures(void);

#define TEST(name)                                                                              \
    static void name(void);                                                                     \
    __attribute__((constructor)) static void register_##name(void) {                            \
        sp_test_register(#name, name);                                                          \
    }                                                                                           \
    static void name(void)

#define CHECK(cond)                                                                             \
    do {                                                                                        \
        if (!(cond)) sp_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                      \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                    \
    do {                                                                                        \
        if (!(cond)) sp_test_fail(__FILE__, __LINE__, __VA_ARGS__);                             \
    } while (0)

#define CHECK_EQ(a, b)                                                                          \
    do {                                                                                        \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                   \
        if (va_ != vb_) sp_test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, va_, vb_); \
    } while (0)

/* Checks that expr returns status want and, for an error, leaves a non-empty message. */
#define CHECK_STATUS(expr, want)                                                                \
    do {                                                                                        \
        sp_clear_error();                                                                       \
        sp_status got_ = (expr);                                                                \
        if (got_ != (want))                                                                     \
            sp_test_fail(__FILE__, __LINE__, "%s: got %s, want %s (%s)", #expr,                 \
                         sp_status_name(got_), sp_status_name(want), sp_last_error());          \
        else if ((want) != SP_OK && sp_last_error()[0] == '\0')                                 \
            sp_test_fail(__FILE__, __LINE__, "%s: %s without a message", #expr,                 \
                         sp_status_name(got_));                                                 \
    } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, SP_OK)

/* ---- tolerance: one helper for every numeric comparison ----------------------------------- */

/* A tolerance: |got - want| <= atol + rtol * mag, where mag is the magnitude the result was
 * built from (for a dot product, sum |a_i b_i|; rounding error scales with it, not with the
 * possibly cancelled result). */
typedef struct sp_tol {
    double atol, rtol;
} sp_tol;

/* The per-dtype table. */
sp_tol sp_tol_for(sp_dtype dt);

/* True if every got[i] is within tol of want[i] given mag[i] (mag NULL: |want[i]|). On the
 * first mismatch, describes it in why (if not NULL). */
bool sp_close(const float *got, const float *want, const float *mag, int64_t n, sp_tol tol,
              char *why, size_t why_len);

#define CHECK_CLOSE(got, want, mag, n, tol)                                                     \
    do {                                                                                        \
        char why_[200];                                                                         \
        if (!sp_close((got), (want), (mag), (n), (tol), why_, sizeof why_))                     \
            sp_test_fail(__FILE__, __LINE__, "%s ~ %s: %s", #got, #want, why_);                 \
    } while (0)

/* ---- random data ----------------------------------------------------------------------------- */

/* Fills p[0..n) with uniform values in [-1, 1). */
void sp_test_fill(float *p, int64_t n, sp_rng *r);
/* Dense (rows x cols) with each entry kept with probability density, else 0. */
void sp_test_fill_sparse(float *p, int64_t rows, int64_t cols, double density, sp_rng *r);
/* malloc'ed n floats filled by sp_test_fill (free with free). */
float *sp_test_fill_new(int64_t n, sp_rng *r);
/* malloc'ed copy of p[0..n) with absolute values: the input of a magnitude run. */
float *sp_test_abs_copy(const float *p, int64_t n);

/* Compares got to want over a (rows, batch) block with leading dimension ld within the f32
 * tolerance (magnitudes in mag), and checks that the padding columns [batch, ld) still hold
 * what pad_before holds there, bit for bit. Reports the first mismatch as a failure. */
void sp_test_compare_block(const char *what, const char *kernel, const float *got,
                           const float *want, const float *mag, int64_t rows, int64_t batch,
                           int64_t ld, const float *pad_before);

#endif
