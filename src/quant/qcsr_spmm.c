/*
 * qcsr_spmm.c - the public quantized CSR product: check arguments, lay out the caller's
 * workspace, quantize X once (qact family), split (batch tile, row block) tasks over threads
 * (qcsr_spmm family). Nothing here allocates: the inference session calls it in its hot path.
 */
#include <math.h>

#include "sparrow/quant.h"

#include "../kernels/ops_common.h"

#define QTILE 64         /* batch columns per task (the kernels' register tile) */
#define TASK_WORK 65536  /* multiply-adds per task */

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

size_t sp_qcsr_work_bytes(const sp_qcsr *w, int64_t batch) {
    if (!w || batch < 0) return 0;
    const int64_t ldq = sp_qcsr_ldq(batch);
    size_t xq, sc;
    int64_t n;
    if (!sp_mul_i64(w->cols, ldq, &n) || !sp_bytes(n, sizeof(int8_t), &xq) ||
        !sp_bytes(ldq, sizeof(float), &sc) || xq > SIZE_MAX / 2)
        return SIZE_MAX; /* no allocation can satisfy it: the product then fails cleanly */
    return 2 * round64(sc) + round64(xq) + 64; /* 64 spare bytes: 4-byte gathers of int8 X */
}

sp_status sp_quant_act_absmax(const float *x, int64_t ldx, int64_t rows, int64_t batch,
                              float *absmax) {
    static const char fn[] = "quant_act_absmax";
    sp_status st;
    if (!absmax) return sp_fail(SP_EINVAL, "%s: absmax is NULL", fn);
    if (rows < 0) return sp_fail(SP_EINVAL, "%s: rows %lld < 0", fn, (long long)rows);
    if ((st = sp_check_dense(fn, "X", x, rows, batch, ldx))) return st;
    float m = *absmax;
    for (int64_t j = 0; j < rows; j++)
        for (int64_t b = 0; b < batch; b++) {
            float a = fabsf(x[j * ldx + b]);
            if (!isfinite(a))
                return sp_fail(SP_EFORMAT, "%s: x[%lld][%lld] is not finite", fn, (long long)j,
                               (long long)b);
            m = fmaxf(m, a);
        }
    *absmax = m;
    return SP_OK;
}

typedef struct qtask {
    const sp_qcsr *w;
    const int8_t *xq;
    const float *xs, *bias;
    float *y;
    int64_t ldq, ldy, batch, rows_per_task, row_tasks;
    sp_act act;
    bool xpos; /* no quantized activation is negative */
    sp_qcsr_spmm_fn fn;
} qtask;

/* task t: row block t % row_tasks of batch tile t / row_tasks (consecutive tasks share a tile
 * of X) */
static void qcsr_task(void *vctx, int64_t t) {
    const qtask *c = vctx;
    const int64_t tile = t / c->row_tasks, blk = t % c->row_tasks;
    const int64_t b0 = tile * QTILE, nb = SP_MIN(QTILE, c->batch - b0);
    const int64_t r0 = blk * c->rows_per_task, r1 = SP_MIN(c->w->rows, r0 + c->rows_per_task);
    c->fn(c->w, r0, r1, c->xq + b0, c->ldq, nb, c->xs + b0, c->y + b0, c->ldy, c->bias, c->act,
          c->xpos);
}

sp_status sp_qcsr_spmm(const sp_qcsr *w, const float *x, int64_t ldx, int64_t batch,
                       float x_scale, float *y, int64_t ldy, const float *bias, sp_act act,
                       void *work, size_t work_bytes, int nthreads) {
    static const char fn[] = "qcsr_spmm";
    sp_status st;
    if (!w) return sp_fail(SP_EINVAL, "%s: W is NULL", fn);
    if ((st = sp_check_dense(fn, "X", x, w->cols, batch, ldx)) ||
        (st = sp_check_dense(fn, "Y", y, w->rows, batch, ldy)) || (st = sp_check_act(fn, act)))
        return st;
    if (!(x_scale <= 0.0f) && !(x_scale > 0.0f && isfinite(x_scale)))
        return sp_fail(SP_EINVAL, "%s: x_scale %g is not finite", fn, (double)x_scale);
    if (batch == 0 || w->rows == 0) return SP_OK;
    const size_t need = sp_qcsr_work_bytes(w, batch);
    if (work_bytes < need || !work)
        return sp_fail(SP_EINVAL, "%s: workspace of %zu bytes at %p, need %zu (sp_qcsr_work_bytes)",
                       fn, work_bytes, work, need);
    if (((uintptr_t)work & 63) != 0)
        return sp_fail(SP_EINVAL, "%s: workspace %p is not 64-byte aligned", fn, work);
    const int64_t ldq = sp_qcsr_ldq(batch);
    float *xs = work;
    float *inv = (float *)((char *)work + round64((size_t)ldq * sizeof(float)));
    int8_t *xq = (int8_t *)((char *)inv + round64((size_t)ldq * sizeof(float)));
    static const sp_kernel *_Atomic qact_k, *_Atomic spmm_k;
    const sp_kernel *qk = sp_kernel_cached("qact", &qact_k);
    const sp_kernel *mk = sp_kernel_cached("qcsr_spmm", &spmm_k);
    const bool xpos = ((sp_qact_fn)qk->fn)(x, ldx, w->cols, batch, x_scale, xs, inv, xq, ldq);
    qtask c = {.w = w, .xq = xq, .xs = xs, .bias = bias, .y = y, .ldq = ldq, .ldy = ldy,
               .batch = batch, .act = act, .xpos = xpos, .fn = (sp_qcsr_spmm_fn)mk->fn};
    const int64_t tiles = (batch + QTILE - 1) / QTILE;
    c.rows_per_task = sp_rows_per_task(w->rows, w->nnz * SP_MIN(batch, QTILE), TASK_WORK);
    c.row_tasks = (w->rows + c.rows_per_task - 1) / c.rows_per_task;
    sp_parallel_for(tiles * c.row_tasks, sp_resolve_threads(nthreads), qcsr_task, &c);
    return SP_OK;
}
