/*
 * test_nm.h - random N:M matrices for the format and kernel tests.
 */
#ifndef SPARROW_TEST_NM_H
#define SPARROW_TEST_NM_H

#include "sparrow/sparrow.h"

#define SP_TEST_MIN(a, b) ((a) < (b) ? (a) : (b))

/* How many nonzeros sp_test_fill_nm puts in each group. */
enum {
    SP_NM_FILL_ZERO = 0,  /* none: an all-zero matrix */
    SP_NM_FILL_SOME = 1,  /* a uniform count in [0, n]: groups with fewer than n nonzeros */
    SP_NM_FILL_FULL = 2,  /* exactly n */
};

/* Dense (rows x cols, leading dim ld; columns [cols, ld) zeroed) whose every group of m
 * columns holds nonzeros at distinct random offsets, as many as `kind` says. */
void sp_test_fill_nm(float *d, int64_t rows, int64_t cols, int64_t ld, int32_t n, int32_t m,
                     int kind, sp_rng *r);

#endif
