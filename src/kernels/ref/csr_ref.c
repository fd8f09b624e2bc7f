/*
 * csr_ref.c - readable reference CSR kernels: the oracle every optimized variant is tested
 * against. One output at a time, in index order, no tricks.
 *
 * Shapes: W (rows x cols) sparse; X (cols, B); Y (rows, B); dY (rows, B); dX (cols, B).
 */
#include "../kernel_table.h"

/* Y[i, b] = act(bias[i] + sum_k W[i, col(k)] * X[col(k), b]) */
void sp_f32_spmm_csr__ref(const sp_csr *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                          int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    for (int64_t i = r0; i < r1; i++) {
        for (int64_t b = 0; b < batch; b++) {
            float acc = 0.0f;
            for (int64_t k = w->row_ptr[i]; k < w->row_ptr[i + 1]; k++)
                acc += w->val[k] * x[sp_csr_col(w, k) * ldx + b];
            y[i * ldy + b] = sp_epilogue(acc, bias, i, act);
        }
    }
}

/* The panelled layout: Y = bias, then Y[row, b] += val[e] * X[panel * P + off[e], b] segment
 * by segment, then the activation. */
void sp_f32_spmm_csr_panels__ref(const sp_csr *w, int64_t r0, int64_t r1, const float *x,
                                 int64_t ldx, int64_t batch, float *y, int64_t ldy,
                                 const float *bias, sp_act act) {
    const sp_csr_panels *p = w->panels;
    const int64_t RB = p->block_rows, P = p->panel_cols;
    for (int64_t blk = r0 / RB; blk * RB < r1; blk++) {
        const sp_panel_block k = sp_csr_panels_block(w, blk);
        const int64_t row0 = k.row0, rb = k.rb;
        const uint32_t *seg = k.seg;
        const uint8_t *off = k.off;
        const float *val = k.val;
        for (int64_t r = 0; r < rb; r++)
            for (int64_t b = 0; b < batch; b++) y[(row0 + r) * ldy + b] = bias ? bias[row0 + r] : 0.0f;
        for (int64_t q = 0; q < p->npanels; q++)
            for (int64_t r = 0; r < rb; r++)
                for (uint32_t e = seg[q * rb + r]; e < seg[q * rb + r + 1]; e++)
                    for (int64_t b = 0; b < batch; b++)
                        y[(row0 + r) * ldy + b] += val[e] * x[(q * P + off[e]) * ldx + b];
        for (int64_t r = 0; r < rb; r++)
            for (int64_t b = 0; b < batch; b++)
                y[(row0 + r) * ldy + b] = sp_epilogue(y[(row0 + r) * ldy + b], NULL, 0, act);
    }
}

/* dX[col(k), b] += W[i, col(k)] * dY[i, b] for b in [b0, b1) */
void sp_f32_spmm_t_csr__ref(const sp_csr *w, int64_t b0, int64_t b1, const float *dy,
                            int64_t lddy, float *dx, int64_t lddx) {
    for (int64_t i = 0; i < w->rows; i++)
        for (int64_t k = w->row_ptr[i]; k < w->row_ptr[i + 1]; k++)
            for (int64_t b = b0; b < b1; b++)
                dx[sp_csr_col(w, k) * lddx + b] += w->val[k] * dy[i * lddy + b];
}

/* dval[k] (+)= sum_b dY[i, b] * X[col(k), b] */
void sp_f32_sddmm_csr__ref(const sp_csr *w, int64_t r0, int64_t r1, const float *dy,
                           int64_t lddy, const float *x, int64_t ldx, int64_t batch, float *dval,
                           bool accumulate) {
    for (int64_t i = r0; i < r1; i++) {
        for (int64_t k = w->row_ptr[i]; k < w->row_ptr[i + 1]; k++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < batch; b++) acc += dy[i * lddy + b] * x[sp_csr_col(w, k) * ldx + b];
            dval[k] = accumulate ? dval[k] + acc : acc;
        }
    }
}

/* dX[j, b] = sum_q W^T[j, col(q)] * dY[col(q), b] and dval[perm[q]] (+)= sum_b dY[col(q), b] *
 * X[j, b], where W^T[j, col(q)] = wval[perm[q]] */
void sp_f32_spmm_t_sddmm_csr__ref(const sp_csr *wt, const int64_t *perm, const float *wval,
                                  int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                                  const float *x, int64_t ldx, int64_t batch, float *dx,
                                  int64_t lddx, float *dval, bool accumulate) {
    for (int64_t j = r0; j < r1; j++) {
        for (int64_t b = 0; b < batch; b++) {
            float acc = 0.0f;
            for (int64_t q = wt->row_ptr[j]; q < wt->row_ptr[j + 1]; q++)
                acc += wval[perm[q]] * dy[sp_csr_col(wt, q) * lddy + b];
            dx[j * lddx + b] = acc;
        }
        for (int64_t q = wt->row_ptr[j]; q < wt->row_ptr[j + 1]; q++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < batch; b++) acc += dy[sp_csr_col(wt, q) * lddy + b] * x[j * ldx + b];
            dval[perm[q]] = accumulate ? dval[perm[q]] + acc : acc;
        }
    }
}
