/*
 * bsr_ref.c - readable reference BSR kernels: the oracle every optimized variant is tested
 * against. One output at a time, blocks in index order, entries of a block in row-major order,
 * no tricks. Entries of edge blocks that fall outside the matrix are skipped, so X and dY are
 * never read, and Y and dX never written, outside the matrix.
 *
 * Shapes: W (rows x cols) sparse, tiled by (br x bc) blocks; X (cols, B); Y (rows, B);
 * dY (rows, B); dX (cols, B). Block k of block row I covers rows I*br + r and columns
 * col_idx[k]*bc + c, with value val[k*br*bc + r*bc + c].
 */
#include "../kernel_table.h"

/* Y[i, b] = act(bias[i] + sum_{k, c} W[i, j] * X[j, b]) for rows i of block rows [br0, br1) */
void sp_f32_spmm_bsr__ref(const sp_bsr *w, int64_t br0, int64_t br1, const float *x,
                          int64_t ldx, int64_t batch, float *y, int64_t ldy, const float *bias,
                          sp_act act) {
    const int64_t br = w->br, bc = w->bc;
    for (int64_t I = br0; I < br1; I++) {
        for (int64_t r = 0; r < br && I * br + r < w->rows; r++) {
            const int64_t i = I * br + r;
            for (int64_t b = 0; b < batch; b++) {
                float acc = 0.0f;
                for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++) {
                    const int64_t j0 = (int64_t)w->col_idx[k] * bc;
                    for (int64_t c = 0; c < bc && j0 + c < w->cols; c++)
                        acc += w->val[k * br * bc + r * bc + c] * x[(j0 + c) * ldx + b];
                }
                y[i * ldy + b] = sp_epilogue(acc, bias, i, act);
            }
        }
    }
}

/* dX[j, b] += W[i, j] * dY[i, b] for b in [b0, b1) */
void sp_f32_spmm_t_bsr__ref(const sp_bsr *w, int64_t b0, int64_t b1, const float *dy,
                            int64_t lddy, float *dx, int64_t lddx) {
    const int64_t br = w->br, bc = w->bc;
    for (int64_t I = 0; I < w->brows; I++)
        for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++) {
            const int64_t j0 = (int64_t)w->col_idx[k] * bc;
            for (int64_t r = 0; r < br && I * br + r < w->rows; r++)
                for (int64_t c = 0; c < bc && j0 + c < w->cols; c++)
                    for (int64_t b = b0; b < b1; b++)
                        dx[(j0 + c) * lddx + b] +=
                            w->val[k * br * bc + r * bc + c] * dy[(I * br + r) * lddy + b];
        }
}

/* dval[k, r, c] (+)= sum_b dY[i, b] * X[j, b]; entries outside the matrix get 0 (or are left as
 * they are when accumulating): they are padding, not weights. */
void sp_f32_sddmm_bsr__ref(const sp_bsr *w, int64_t br0, int64_t br1, const float *dy,
                           int64_t lddy, const float *x, int64_t ldx, int64_t batch, float *dval,
                           bool accumulate) {
    const int64_t br = w->br, bc = w->bc;
    for (int64_t I = br0; I < br1; I++)
        for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++) {
            const int64_t j0 = (int64_t)w->col_idx[k] * bc;
            for (int64_t r = 0; r < br; r++)
                for (int64_t c = 0; c < bc; c++) {
                    const int64_t i = I * br + r, j = j0 + c;
                    float acc = 0.0f;
                    if (i < w->rows && j < w->cols)
                        for (int64_t b = 0; b < batch; b++) acc += dy[i * lddy + b] * x[j * ldx + b];
                    float *d = &dval[k * br * bc + r * bc + c];
                    *d = accumulate ? *d + acc : acc;
                }
        }
}
