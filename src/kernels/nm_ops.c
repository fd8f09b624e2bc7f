/*
 * nm_ops.c - public N:M products: check arguments, pick the variant, split into tasks.
 *
 * Tasks are larger than CSR's: an N:M kernel copies each panel of X (nm_tile.h) once per task
 * and then streams every row of the task through it, so a task holds at least TASK_ROWS rows
 * (fewer only to keep 8 tasks for load balance), and more when rows are short. The split
 * depends only on the problem size, and rows are independent, so it never changes a result.
 */
#include "ops_common.h"

#define TASK_WORK (1 << 24) /* multiply-adds per task (spmm, sddmm) */
#define TASK_ROWS 128       /* rows per task at least, when there are 8 such tasks */

static int64_t nm_rows_per_task(int64_t rows, int64_t work) {
    int64_t r = sp_rows_per_task(rows, work, TASK_WORK);
    int64_t floor_rows = SP_MIN(TASK_ROWS, (rows + 7) / 8);
    return SP_MAX(r, floor_rows);
}

typedef struct nm_task {
    const sp_nm *w;
    const float *x, *dy;
    int64_t ldx, lddy, batch, rows_per_task;
    float *y, *dval;
    int64_t ldy;
    const float *bias;
    sp_act act;
    bool accumulate;
    void (*fn)(void);
} nm_task;

/* Stored slots (values, padding included); the matrix was validated when built. */
static int64_t nm_slots(const sp_nm *w) { return w->rows * w->groups * w->n; }

static void spmm_task(void *vctx, int64_t t) {
    const nm_task *c = vctx;
    int64_t r0 = t * c->rows_per_task, r1 = SP_MIN(c->w->rows, r0 + c->rows_per_task);
    ((sp_nm_spmm_fn)c->fn)(c->w, r0, r1, c->x, c->ldx, c->batch, c->y, c->ldy, c->bias, c->act);
}

sp_status sp_nm_spmm(const sp_nm *w, const float *x, int64_t ldx, int64_t batch, float *y,
                     int64_t ldy, const float *bias, sp_act act, int nthreads) {
    static const char fn[] = "nm_spmm";
    if (!w) return sp_fail(SP_EINVAL, "%s: W is NULL", fn);
    sp_status st;
    if ((st = sp_check_dense(fn, "X", x, w->cols, batch, ldx)) ||
        (st = sp_check_dense(fn, "Y", y, w->rows, batch, ldy)) || (st = sp_check_act(fn, act)))
        return st;
    if (batch == 0 || w->rows == 0) return SP_OK;
    static const sp_kernel *_Atomic cached;
    const sp_kernel *k = sp_kernel_cached("nm_spmm", &cached);
    nm_task c = {.w = w, .x = x, .ldx = ldx, .batch = batch, .y = y, .ldy = ldy, .bias = bias,
                 .act = act, .fn = k->fn};
    c.rows_per_task = nm_rows_per_task(w->rows, nm_slots(w) * batch);
    sp_parallel_for((w->rows + c.rows_per_task - 1) / c.rows_per_task,
                    sp_resolve_threads(nthreads), spmm_task, &c);
    return SP_OK;
}

static void spmm_t_task(void *vctx, int64_t t) {
    const nm_task *c = vctx;
    int64_t b0, b1;
    sp_spmm_t_chunk(t, c->batch, c->w->cols, c->y, c->ldy, c->accumulate, &b0, &b1);
    ((sp_nm_spmm_t_fn)c->fn)(c->w, b0, b1, c->dy, c->lddy, c->y, c->ldy);
}

sp_status sp_nm_spmm_t(const sp_nm *w, const float *dy, int64_t lddy, int64_t batch, float *dx,
                       int64_t lddx, bool accumulate, int nthreads) {
    static const char fn[] = "nm_spmm_t";
    if (!w) return sp_fail(SP_EINVAL, "%s: W is NULL", fn);
    sp_status st;
    if ((st = sp_check_dense(fn, "dY", dy, w->rows, batch, lddy)) ||
        (st = sp_check_dense(fn, "dX", dx, w->cols, batch, lddx)))
        return st;
    if (batch == 0 || w->cols == 0) return SP_OK;
    static const sp_kernel *_Atomic cached;
    const sp_kernel *k = sp_kernel_cached("nm_spmm_t", &cached);
    nm_task c = {.w = w, .dy = dy, .lddy = lddy, .batch = batch, .y = dx, .ldy = lddx,
                 .accumulate = accumulate, .fn = k->fn};
    sp_parallel_for((batch + SP_SPMM_T_COLS - 1) / SP_SPMM_T_COLS, sp_resolve_threads(nthreads),
                    spmm_t_task, &c);
    return SP_OK;
}

static void sddmm_task(void *vctx, int64_t t) {
    const nm_task *c = vctx;
    int64_t r0 = t * c->rows_per_task, r1 = SP_MIN(c->w->rows, r0 + c->rows_per_task);
    ((sp_nm_sddmm_fn)c->fn)(c->w, r0, r1, c->dy, c->lddy, c->x, c->ldx, c->batch, c->dval,
                            c->accumulate);
}

sp_status sp_nm_sddmm(const sp_nm *w, const float *dy, int64_t lddy, const float *x, int64_t ldx,
                      int64_t batch, float *dval, bool accumulate, int nthreads) {
    static const char fn[] = "nm_sddmm";
    if (!w) return sp_fail(SP_EINVAL, "%s: W is NULL", fn);
    sp_status st;
    if ((st = sp_check_dense(fn, "dY", dy, w->rows, batch, lddy)) ||
        (st = sp_check_dense(fn, "X", x, w->cols, batch, ldx)))
        return st;
    const int64_t slots = nm_slots(w);
    if (!dval && slots > 0) return sp_fail(SP_EINVAL, "%s: dval is NULL", fn);
    if (w->rows == 0 || slots == 0) return SP_OK;
    static const sp_kernel *_Atomic cached;
    const sp_kernel *k = sp_kernel_cached("nm_sddmm", &cached);
    nm_task c = {.w = w, .dy = dy, .lddy = lddy, .x = x, .ldx = ldx, .batch = batch,
                 .dval = dval, .accumulate = accumulate, .fn = k->fn};
    c.rows_per_task = nm_rows_per_task(w->rows, slots * SP_MAX(batch, 1));
    sp_parallel_for((w->rows + c.rows_per_task - 1) / c.rows_per_task,
                    sp_resolve_threads(nthreads), sddmm_task, &c);
    return SP_OK;
}
