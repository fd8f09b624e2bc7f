/*
 * ops_common.h - argument checks and work splitting shared by the public product functions of
 * every format (csr_ops.c, bsr_ops.c, nm_ops.c). Internal.
 */
#ifndef SPARROW_OPS_COMMON_H
#define SPARROW_OPS_COMMON_H

#include <stdatomic.h>
#include <string.h>

#include "kernel_table.h"

/* Checks a dense operand of `rows` rows and `batch` columns with leading dimension ld. */
static inline sp_status sp_check_dense(const char *fn, const char *what, const float *p,
                                       int64_t rows, int64_t batch, int64_t ld) {
    if (batch < 0) return sp_fail(SP_EINVAL, "%s: batch %lld < 0", fn, (long long)batch);
    if (ld < batch || ld < 1)
        return sp_fail(SP_ESHAPE, "%s: ld of %s is %lld, less than batch %lld", fn, what,
                       (long long)ld, (long long)batch);
    int64_t span;
    if (!sp_mul_i64(rows, ld, &span))
        return sp_fail(SP_EOVERFLOW, "%s: %s of %lld rows x ld %lld overflows", fn, what,
                       (long long)rows, (long long)ld);
    if (!p && rows > 0 && batch > 0) return sp_fail(SP_EINVAL, "%s: %s is NULL", fn, what);
    return SP_OK;
}

static inline sp_status sp_check_act(const char *fn, sp_act act) {
    if (act != SP_ACT_NONE && act != SP_ACT_RELU)
        return sp_fail(SP_EINVAL, "%s: activation %d is not an sp_act", fn, (int)act);
    return SP_OK;
}

static inline int sp_resolve_threads(int nthreads) {
    return nthreads > 0 ? nthreads : sp_threads_available();
}

/* Rows per task so that a task holds roughly `target` multiply-adds (at least one row). The
 * split only balances load: rows are independent, so results never depend on it. */
static inline int64_t sp_rows_per_task(int64_t rows, int64_t work, int64_t target) {
    if (rows <= 0) return 1;
    int64_t per_row = work / rows + 1;
    int64_t r = target / per_row;
    if (r < 1) r = 1;
    /* at least 8 tasks when there is enough work, for load balance */
    if (work > 8 * target && r > rows / 8) r = SP_MAX(1, rows / 8);
    return r;
}

/* Zeroes rows x batch of a (rows, ld) matrix. */
static inline void sp_zero_dense(float *p, int64_t rows, int64_t batch, int64_t ld) {
    for (int64_t i = 0; i < rows; i++) memset(p + i * ld, 0, (size_t)batch * sizeof(float));
}

/* spmm_t splits the batch into column chunks of this many (a multiple of every vector width;
 * 32 gives two threads work from batch 64 on). */
#define SP_SPMM_T_COLS 32

/* The batch columns [*b0, *b1) of spmm_t task t; zeroes them in dX (cols rows) unless the
 * product accumulates. Every format's spmm_t task starts with this. */
static inline void sp_spmm_t_chunk(int64_t t, int64_t batch, int64_t cols, float *dx, int64_t lddx,
                                   bool accumulate, int64_t *b0, int64_t *b1) {
    *b0 = t * SP_SPMM_T_COLS;
    *b1 = SP_MIN(batch, *b0 + SP_SPMM_T_COLS);
    if (!accumulate)
        for (int64_t j = 0; j < cols; j++)
            memset(dx + j * lddx + *b0, 0, (size_t)(*b1 - *b0) * sizeof(float));
}

#endif
