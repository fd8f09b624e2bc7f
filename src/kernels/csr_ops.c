/*
 * csr_ops.c - public CSR products: check arguments, pick the variant, split into tasks.
 */
#include "ops_common.h"

#define TASK_WORK 32768     /* multiply-adds per task */
#define PANELS_MIN_BATCH 40 /* see sp_csr_spmm */
#define PANELS_TILE 64      /* batch columns per panels task */

typedef struct csr_task {
    const sp_csr *w;
    const float *x, *dy;
    int64_t ldx, lddy, batch, rows_per_task;
    int64_t row_tasks; /* panels: tasks per batch tile */
    float *y, *dval;
    int64_t ldy;
    const float *bias;
    sp_act act;
    bool accumulate;
    void (*fn)(void);
} csr_task;

static void spmm_task(void *vctx, int64_t t) {
    const csr_task *c = vctx;
    int64_t r0 = t * c->rows_per_task, r1 = SP_MIN(c->w->rows, r0 + c->rows_per_task);
    ((sp_csr_spmm_fn)c->fn)(c->w, r0, r1, c->x, c->ldx, c->batch, c->y, c->ldy, c->bias, c->act);
}

/* Panels: task t is row block t % row_tasks of batch tile t / row_tasks. Consecutive tasks share
 * a tile, so that tile of X (cols x 64) is reused from L2 by every row block instead of all of
 * X being streamed once per block (768x3072 at batch 256: 3 MiB of X per block). */
static void spmm_panels_task(void *vctx, int64_t t) {
    const csr_task *c = vctx;
    const int64_t tile = t / c->row_tasks, blk = t % c->row_tasks;
    const int64_t b0 = tile * PANELS_TILE, nb = SP_MIN(PANELS_TILE, c->batch - b0);
    const int64_t r0 = blk * c->rows_per_task, r1 = SP_MIN(c->w->rows, r0 + c->rows_per_task);
    ((sp_csr_spmm_fn)c->fn)(c->w, r0, r1, c->x + b0, c->ldx, nb, c->y + b0, c->ldy, c->bias,
                            c->act);
}

sp_status sp_csr_spmm(const sp_csr *w, const float *x, int64_t ldx, int64_t batch, float *y,
                      int64_t ldy, const float *bias, sp_act act, int nthreads) {
    static const char fn[] = "csr_spmm";
    if (!w) return sp_fail(SP_EINVAL, "%s: W is NULL", fn);
    sp_status st;
    if ((st = sp_check_dense(fn, "X", x, w->cols, batch, ldx)) ||
        (st = sp_check_dense(fn, "Y", y, w->rows, batch, ldy)) || (st = sp_check_act(fn, act)))
        return st;
    if (batch == 0 || w->rows == 0) return SP_OK;
    /* The panelled layout, when packed, serves wide batches. Narrow ones keep the plain rows:
     * their X (cols x batch) is small enough for L2 and a row segment holds too little work
     * for its Y load/store. Measured at 4096x4096, 90%, one core (ms, panels vs plain):
     * batch 16 1.74 vs 1.29, 32 3.28 vs 2.35, 48 4.74 vs 7.47, 64 3.46 vs 4.70, 128 7.3 vs 16.2. */
    const bool panels = w->panels && batch >= PANELS_MIN_BATCH;
    static const sp_kernel *_Atomic plain_k, *_Atomic panels_k;
    const sp_kernel *k = panels ? sp_kernel_cached("csr_spmm_panels", &panels_k)
                                : sp_kernel_cached("csr_spmm", &plain_k);
    csr_task c = {.w = w, .x = x, .ldx = ldx, .batch = batch, .y = y, .ldy = ldy, .bias = bias,
                  .act = act, .fn = k->fn};
    if (panels) {
        c.rows_per_task = w->panels->block_rows; /* a task is one row block of one batch tile */
        c.row_tasks = (w->rows + c.rows_per_task - 1) / c.rows_per_task;
        sp_parallel_for(c.row_tasks * ((batch + PANELS_TILE - 1) / PANELS_TILE),
                        sp_resolve_threads(nthreads), spmm_panels_task, &c);
        return SP_OK;
    }
    c.rows_per_task = sp_rows_per_task(w->rows, w->nnz * batch, TASK_WORK);
    sp_parallel_for((w->rows + c.rows_per_task - 1) / c.rows_per_task,
                    sp_resolve_threads(nthreads), spmm_task, &c);
    return SP_OK;
}

static void spmm_t_task(void *vctx, int64_t t) {
    const csr_task *c = vctx;
    int64_t b0, b1;
    sp_spmm_t_chunk(t, c->batch, c->w->cols, c->y, c->ldy, c->accumulate, &b0, &b1);
    ((sp_csr_spmm_t_fn)c->fn)(c->w, b0, b1, c->dy, c->lddy, c->y, c->ldy);
}

sp_status sp_csr_spmm_t(const sp_csr *w, const float *dy, int64_t lddy, int64_t batch, float *dx,
                        int64_t lddx, bool accumulate, int nthreads) {
    static const char fn[] = "csr_spmm_t";
    if (!w) return sp_fail(SP_EINVAL, "%s: W is NULL", fn);
    sp_status st;
    if ((st = sp_check_dense(fn, "dY", dy, w->rows, batch, lddy)) ||
        (st = sp_check_dense(fn, "dX", dx, w->cols, batch, lddx)))
        return st;
    if (batch == 0 || w->cols == 0) return SP_OK;
    static const sp_kernel *_Atomic cached;
    const sp_kernel *k = sp_kernel_cached("csr_spmm_t", &cached);
    csr_task c = {.w = w, .dy = dy, .lddy = lddy, .batch = batch, .y = dx, .ldy = lddx,
                  .accumulate = accumulate, .fn = k->fn};
    sp_parallel_for((batch + SP_SPMM_T_COLS - 1) / SP_SPMM_T_COLS, sp_resolve_threads(nthreads),
                    spmm_t_task, &c);
    return SP_OK;
}

typedef struct fused_task {
    const sp_csr *wt;
    const int64_t *perm;
    const float *wval, *dy, *x;
    int64_t lddy, ldx, batch, lddx, rows_per_task;
    float *dx, *dval;
    bool accumulate;
    sp_csr_spmm_t_sddmm_fn fn;
} fused_task;

static void fused_task_run(void *vctx, int64_t t) {
    const fused_task *c = vctx;
    const int64_t r0 = t * c->rows_per_task, r1 = SP_MIN(c->wt->rows, r0 + c->rows_per_task);
    c->fn(c->wt, c->perm, c->wval, r0, r1, c->dy, c->lddy, c->x, c->ldx, c->batch, c->dx,
          c->lddx, c->dval, c->accumulate);
}

/* Tasks are row ranges of W^T: each writes its own rows of dX and its own entries of dval, so
 * every value is summed in the same order for any thread count. */
sp_status sp_csr_spmm_t_sddmm(const sp_csr *wt, const int64_t *perm, const float *wval,
                              const float *dy, int64_t lddy, const float *x, int64_t ldx,
                              int64_t batch, float *dx, int64_t lddx, float *dval,
                              bool accumulate, int nthreads) {
    static const char fn[] = "csr_spmm_t_sddmm";
    if (!wt) return sp_fail(SP_EINVAL, "%s: W^T is NULL", fn);
    sp_status st;
    if ((st = sp_check_dense(fn, "dY", dy, wt->cols, batch, lddy)) ||
        (st = sp_check_dense(fn, "X", x, wt->rows, batch, ldx)) ||
        (st = sp_check_dense(fn, "dX", dx, wt->rows, batch, lddx)))
        return st;
    if (wt->nnz > 0 && (!perm || !wval || !dval))
        return sp_fail(SP_EINVAL, "%s: perm, wval or dval is NULL", fn);
    if (batch == 0 || wt->rows == 0) return SP_OK;
    static const sp_kernel *_Atomic cached;
    const sp_kernel *k = sp_kernel_cached("csr_spmm_t_sddmm", &cached);
    fused_task c = {.wt = wt, .perm = perm, .wval = wval, .dy = dy, .x = x, .lddy = lddy,
                    .ldx = ldx, .batch = batch, .lddx = lddx, .dx = dx, .dval = dval,
                    .accumulate = accumulate, .fn = (sp_csr_spmm_t_sddmm_fn)k->fn};
    c.rows_per_task = sp_rows_per_task(wt->rows, 2 * wt->nnz * batch + wt->rows, TASK_WORK);
    sp_parallel_for((wt->rows + c.rows_per_task - 1) / c.rows_per_task,
                    sp_resolve_threads(nthreads), fused_task_run, &c);
    return SP_OK;
}

static void sddmm_task(void *vctx, int64_t t) {
    const csr_task *c = vctx;
    int64_t r0 = t * c->rows_per_task, r1 = SP_MIN(c->w->rows, r0 + c->rows_per_task);
    ((sp_csr_sddmm_fn)c->fn)(c->w, r0, r1, c->dy, c->lddy, c->x, c->ldx, c->batch, c->dval,
                             c->accumulate);
}

sp_status sp_csr_sddmm(const sp_csr *w, const float *dy, int64_t lddy, const float *x,
                       int64_t ldx, int64_t batch, float *dval, bool accumulate, int nthreads) {
    static const char fn[] = "csr_sddmm";
    if (!w) return sp_fail(SP_EINVAL, "%s: W is NULL", fn);
    sp_status st;
    if ((st = sp_check_dense(fn, "dY", dy, w->rows, batch, lddy)) ||
        (st = sp_check_dense(fn, "X", x, w->cols, batch, ldx)))
        return st;
    if (!dval && w->nnz > 0) return sp_fail(SP_EINVAL, "%s: dval is NULL", fn);
    if (w->rows == 0 || w->nnz == 0) return SP_OK;
    static const sp_kernel *_Atomic cached;
    const sp_kernel *k = sp_kernel_cached("csr_sddmm", &cached);
    csr_task c = {.w = w, .dy = dy, .lddy = lddy, .x = x, .ldx = ldx, .batch = batch,
                  .dval = dval, .accumulate = accumulate, .fn = k->fn};
    c.rows_per_task = sp_rows_per_task(w->rows, w->nnz * SP_MAX(batch, 1), TASK_WORK);
    sp_parallel_for((w->rows + c.rows_per_task - 1) / c.rows_per_task,
                    sp_resolve_threads(nthreads), sddmm_task, &c);
    return SP_OK;
}
