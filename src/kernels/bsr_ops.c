/*
 * bsr_ops.c - public BSR products: check arguments, pick the variant, split into tasks.
 *
 * spmm and sddmm split the block rows into tasks of about TASK_WORK multiply-adds; spmm_t splits
 * the batch into SP_SPMM_T_COLS-wide chunks (see kernel_table.h). The split depends only on the
 * problem size, so results are bitwise identical for any thread count.
 */
#include "ops_common.h"

#define TASK_WORK 32768 /* multiply-adds per task */

typedef struct bsr_task {
    const sp_bsr *w;
    const float *x, *dy;
    int64_t ldx, lddy, batch, rows_per_task;
    float *y, *dval;
    int64_t ldy;
    const float *bias;
    sp_act act;
    bool accumulate;
    void (*fn)(void);
} bsr_task;

/* Multiply-adds of one product over all stored values (padding included), saturated. */
static int64_t bsr_work(const sp_bsr *w, int64_t batch) {
    int64_t stored, work;
    if (!sp_mul_i64(w->nblocks, (int64_t)w->br * w->bc, &stored) ||
        !sp_mul_i64(stored, SP_MAX(batch, 1), &work))
        return INT64_MAX / 2;
    return work;
}

static void spmm_task(void *vctx, int64_t t) {
    const bsr_task *c = vctx;
    int64_t r0 = t * c->rows_per_task, r1 = SP_MIN(c->w->brows, r0 + c->rows_per_task);
    ((sp_bsr_spmm_fn)c->fn)(c->w, r0, r1, c->x, c->ldx, c->batch, c->y, c->ldy, c->bias, c->act);
}

sp_status sp_bsr_spmm(const sp_bsr *w, const float *x, int64_t ldx, int64_t batch, float *y,
                      int64_t ldy, const float *bias, sp_act act, int nthreads) {
    static const char fn[] = "bsr_spmm";
    if (!w) return sp_fail(SP_EINVAL, "%s: W is NULL", fn);
    sp_status st;
    if ((st = sp_check_dense(fn, "X", x, w->cols, batch, ldx)) ||
        (st = sp_check_dense(fn, "Y", y, w->rows, batch, ldy)) || (st = sp_check_act(fn, act)))
        return st;
    if (batch == 0 || w->rows == 0) return SP_OK;
    static const sp_kernel *_Atomic cached;
    const sp_kernel *k = sp_kernel_cached("bsr_spmm", &cached);
    bsr_task c = {.w = w, .x = x, .ldx = ldx, .batch = batch, .y = y, .ldy = ldy, .bias = bias,
                  .act = act, .fn = k->fn};
    c.rows_per_task = sp_rows_per_task(w->brows, bsr_work(w, batch), TASK_WORK);
    sp_parallel_for((w->brows + c.rows_per_task - 1) / c.rows_per_task,
                    sp_resolve_threads(nthreads), spmm_task, &c);
    return SP_OK;
}

static void spmm_t_task(void *vctx, int64_t t) {
    const bsr_task *c = vctx;
    int64_t b0, b1;
    sp_spmm_t_chunk(t, c->batch, c->w->cols, c->y, c->ldy, c->accumulate, &b0, &b1);
    ((sp_bsr_spmm_t_fn)c->fn)(c->w, b0, b1, c->dy, c->lddy, c->y, c->ldy);
}

sp_status sp_bsr_spmm_t(const sp_bsr *w, const float *dy, int64_t lddy, int64_t batch, float *dx,
                        int64_t lddx, bool accumulate, int nthreads) {
    static const char fn[] = "bsr_spmm_t";
    if (!w) return sp_fail(SP_EINVAL, "%s: W is NULL", fn);
    sp_status st;
    if ((st = sp_check_dense(fn, "dY", dy, w->rows, batch, lddy)) ||
        (st = sp_check_dense(fn, "dX", dx, w->cols, batch, lddx)))
        return st;
    if (batch == 0 || w->cols == 0) return SP_OK;
    static const sp_kernel *_Atomic cached;
    const sp_kernel *k = sp_kernel_cached("bsr_spmm_t", &cached);
    bsr_task c = {.w = w, .dy = dy, .lddy = lddy, .batch = batch, .y = dx, .ldy = lddx,
                  .accumulate = accumulate, .fn = k->fn};
    sp_parallel_for((batch + SP_SPMM_T_COLS - 1) / SP_SPMM_T_COLS, sp_resolve_threads(nthreads),
                    spmm_t_task, &c);
    return SP_OK;
}

static void sddmm_task(void *vctx, int64_t t) {
    const bsr_task *c = vctx;
    int64_t r0 = t * c->rows_per_task, r1 = SP_MIN(c->w->brows, r0 + c->rows_per_task);
    ((sp_bsr_sddmm_fn)c->fn)(c->w, r0, r1, c->dy, c->lddy, c->x, c->ldx, c->batch, c->dval,
                             c->accumulate);
}

sp_status sp_bsr_sddmm(const sp_bsr *w, const float *dy, int64_t lddy, const float *x,
                       int64_t ldx, int64_t batch, float *dval, bool accumulate, int nthreads) {
    static const char fn[] = "bsr_sddmm";
    if (!w) return sp_fail(SP_EINVAL, "%s: W is NULL", fn);
    sp_status st;
    if ((st = sp_check_dense(fn, "dY", dy, w->rows, batch, lddy)) ||
        (st = sp_check_dense(fn, "X", x, w->cols, batch, ldx)))
        return st;
    if (!dval && w->nblocks > 0) return sp_fail(SP_EINVAL, "%s: dval is NULL", fn);
    if (w->rows == 0 || w->nblocks == 0) return SP_OK;
    static const sp_kernel *_Atomic cached;
    const sp_kernel *k = sp_kernel_cached("bsr_sddmm", &cached);
    bsr_task c = {.w = w, .dy = dy, .lddy = lddy, .x = x, .ldx = ldx, .batch = batch,
                  .dval = dval, .accumulate = accumulate, .fn = k->fn};
    c.rows_per_task = sp_rows_per_task(w->brows, bsr_work(w, batch), TASK_WORK);
    sp_parallel_for((w->brows + c.rows_per_task - 1) / c.rows_per_task,
                    sp_resolve_threads(nthreads), sddmm_task, &c);
    return SP_OK;
}
