/*
 * nm_ref.c - readable reference N:M kernels: the oracle every optimized variant is tested
 * against. One output at a time, slots in storage order, no tricks.
 *
 * Shapes: W (rows x cols) N:M with S = groups * n slots per row; slot k = i * S + g * n + s
 * holds W[i, g * m + idx[k]]. X (cols, B); Y (rows, B); dY (rows, B); dX (cols, B).
 */
#include "../kernel_table.h"

/* Column of slot k of a row (k counted from the row's first slot). */
static int64_t slot_col(const sp_nm *w, int64_t i, int64_t k) {
    return (k / w->n) * w->m + w->idx[i * w->groups * w->n + k];
}

/* Y[i, b] = act(bias[i] + sum_k W[i, col(k)] * X[col(k), b]) */
void sp_f32_spmm_nm__ref(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                         int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    const int64_t S = w->groups * w->n;
    for (int64_t i = r0; i < r1; i++) {
        for (int64_t b = 0; b < batch; b++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < S; k++) acc += w->val[i * S + k] * x[slot_col(w, i, k) * ldx + b];
            y[i * ldy + b] = sp_epilogue(acc, bias, i, act);
        }
    }
}

/* dX[col(k), b] += W[i, col(k)] * dY[i, b] for b in [b0, b1) */
void sp_f32_spmm_t_nm__ref(const sp_nm *w, int64_t b0, int64_t b1, const float *dy, int64_t lddy,
                           float *dx, int64_t lddx) {
    const int64_t S = w->groups * w->n;
    for (int64_t i = 0; i < w->rows; i++)
        for (int64_t k = 0; k < S; k++)
            for (int64_t b = b0; b < b1; b++)
                dx[slot_col(w, i, k) * lddx + b] += w->val[i * S + k] * dy[i * lddy + b];
}

/* dval[k] (+)= sum_b dY[i, b] * X[col(k), b], padding slots included */
void sp_f32_sddmm_nm__ref(const sp_nm *w, int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                          const float *x, int64_t ldx, int64_t batch, float *dval,
                          bool accumulate) {
    const int64_t S = w->groups * w->n;
    for (int64_t i = r0; i < r1; i++) {
        for (int64_t k = 0; k < S; k++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < batch; b++) acc += dy[i * lddy + b] * x[slot_col(w, i, k) * ldx + b];
            dval[i * S + k] = accumulate ? dval[i * S + k] + acc : acc;
        }
    }
}
