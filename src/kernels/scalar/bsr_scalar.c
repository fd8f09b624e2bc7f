/*
 * bsr_scalar.c - portable C BSR kernels, written so that a compiler vectorises the batch loop
 * with whatever the baseline ISA offers (SSE2 on x86-64, NEON on aarch64).
 *
 * spmm keeps a (SP_ROWS x SP_TILE) tile of outputs (up to four rows of a block row, SP_TILE
 * batch columns: 8 accumulator vectors, which fit the 16 registers of SSE2) in a local array
 * whose row count is a compile-time constant, so that it lives in registers; each row of X a
 * block touches is loaded once and reused by the rows of the tile, which is the point of
 * blocks over CSR. Batch 1 dots each
 * block row with the block's slice of x, read once per block. Edge blocks are clipped to the
 * matrix: X and dY are never read, nor Y and dX written, outside it.
 */
#include <string.h>

#include "../bsr_geom.h"

#define SP_TILE 8
#define SP_ROWS 4

static void spmv_block_row(const sp_bsr *w, int64_t I, const float *x, int64_t ldx, float *y,
                           int64_t ldy, const float *bias, sp_act act) {
    const int64_t br = w->br, bc = w->bc, bs = br * bc, rv = sp_bsr_rows_in(w, I);
    float acc[64] = {0}, xs[64];
    for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++) {
        const int64_t J = w->col_idx[k], cv = sp_bsr_cols_in(w, J);
        const float *xj = x + J * bc * ldx;
        for (int64_t c = 0; c < cv; c++) xs[c] = xj[c * ldx];
        const float *v = w->val + k * bs;
        for (int64_t r = 0; r < rv; r++) {
            float s = 0.0f;
            for (int64_t c = 0; c < cv; c++) s += v[r * bc + c] * xs[c];
            acc[r] += s;
        }
    }
    for (int64_t r = 0; r < rv; r++) y[(I * br + r) * ldy] = sp_epilogue(acc[r], bias, I * br + r, act);
}

/* Rows [r0, r0 + R) of block row I (R a constant after inlining, so that the R x SP_TILE tile
 * stays in registers), batch columns [b0, b0 + nb). */
static inline __attribute__((always_inline)) void spmm_tile(const sp_bsr *w, int64_t I,
                                                            int64_t r0, const int R, int64_t b0,
                                                            int64_t nb, const float *x,
                                                            int64_t ldx, float *y, int64_t ldy,
                                                            const float *bias, sp_act act) {
    const int64_t br = w->br, bc = w->bc, bs = br * bc;
    float acc[SP_ROWS][SP_TILE] = {{0}};
    for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++) {
        const int64_t J = w->col_idx[k], cv = sp_bsr_cols_in(w, J);
        const float *v = w->val + k * bs + r0 * bc;
        const float *xj = x + J * bc * ldx + b0;
        for (int64_t c = 0; c < cv; c++) {
            const float *xr = xj + c * ldx;
            if (nb == SP_TILE) {
                for (int r = 0; r < R; r++) {
                    const float wv = v[r * bc + c];
#pragma GCC unroll 1 /* keep it a loop for the loop vectoriser (SLP does worse here) */
                    for (int b = 0; b < SP_TILE; b++) acc[r][b] += wv * xr[b];
                }
            } else {
                for (int r = 0; r < R; r++) {
                    const float wv = v[r * bc + c];
                    for (int64_t b = 0; b < nb; b++) acc[r][b] += wv * xr[b];
                }
            }
        }
    }
    const int64_t rv = sp_bsr_rows_in(w, I) - r0;
    for (int r = 0; r < R && r < rv; r++) {
        const int64_t i = I * br + r0 + r;
        float *yr = y + i * ldy + b0;
        for (int64_t b = 0; b < nb; b++) yr[b] = sp_epilogue(acc[r][b], bias, i, act);
    }
}

static void spmm_block_row(const sp_bsr *w, int64_t I, const float *x, int64_t ldx,
                           int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    const int64_t br = w->br, rv = sp_bsr_rows_in(w, I);
    for (int64_t b0 = 0; b0 < batch; b0 += SP_TILE) {
        const int64_t nb = SP_MIN(SP_TILE, batch - b0);
        int64_t r0 = 0;
        for (; r0 + SP_ROWS <= br && r0 < rv; r0 += SP_ROWS)
            spmm_tile(w, I, r0, SP_ROWS, b0, nb, x, ldx, y, ldy, bias, act);
        if (r0 >= rv) continue;
        switch (br - r0) { /* the block's last rows: never read weights past the block */
        case 1: spmm_tile(w, I, r0, 1, b0, nb, x, ldx, y, ldy, bias, act); break;
        case 2: spmm_tile(w, I, r0, 2, b0, nb, x, ldx, y, ldy, bias, act); break;
        default: spmm_tile(w, I, r0, 3, b0, nb, x, ldx, y, ldy, bias, act); break;
        }
    }
}

void sp_f32_spmm_bsr__scalar(const sp_bsr *w, int64_t br0, int64_t br1, const float *x,
                             int64_t ldx, int64_t batch, float *y, int64_t ldy, const float *bias,
                             sp_act act) {
    for (int64_t I = br0; I < br1; I++) {
        if (batch == 1) spmv_block_row(w, I, x, ldx, y, ldy, bias, act);
        else spmm_block_row(w, I, x, ldx, batch, y, ldy, bias, act);
    }
}

/* dX[:, b0:b1] += W^T dY[:, b0:b1]: for each column of a block, the dX row segment is summed in
 * a local tile over the block's rows and written back once. */
void sp_f32_spmm_t_bsr__scalar(const sp_bsr *w, int64_t b0, int64_t b1, const float *dy,
                               int64_t lddy, float *dx, int64_t lddx) {
    const int64_t br = w->br, bc = w->bc, bs = br * bc;
    for (int64_t t0 = b0; t0 < b1; t0 += SP_TILE) {
        const int64_t nb = SP_MIN(SP_TILE, b1 - t0);
        for (int64_t I = 0; I < w->brows; I++) {
            const int64_t rv = sp_bsr_rows_in(w, I);
            const float *g = dy + I * br * lddy + t0;
            for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++) {
                const int64_t J = w->col_idx[k], cv = sp_bsr_cols_in(w, J);
                const float *v = w->val + k * bs;
                for (int64_t c = 0; c < cv; c++) {
                    float *d = dx + (J * bc + c) * lddx + t0;
                    float acc[SP_TILE];
                    memcpy(acc, d, (size_t)nb * sizeof(float));
                    for (int64_t r = 0; r < rv; r++) {
                        const float wv = v[r * bc + c];
                        const float *gr = g + r * lddy;
                        if (nb == SP_TILE) {
#pragma GCC unroll 1 /* keep it a loop for the loop vectoriser */
                            for (int b = 0; b < SP_TILE; b++) acc[b] += wv * gr[b];
                        } else {
                            for (int64_t b = 0; b < nb; b++) acc[b] += wv * gr[b];
                        }
                    }
                    memcpy(d, acc, (size_t)nb * sizeof(float));
                }
            }
        }
    }
}

/* dval[k, r, c] (+)= dY[i, :] . X[j, :], 8 partial sums; padding entries get 0. */
void sp_f32_sddmm_bsr__scalar(const sp_bsr *w, int64_t br0, int64_t br1, const float *dy,
                              int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                              float *dval, bool accumulate) {
    const int64_t br = w->br, bc = w->bc, bs = br * bc;
    for (int64_t I = br0; I < br1; I++) {
        const int64_t rv = sp_bsr_rows_in(w, I);
        for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++) {
            const int64_t J = w->col_idx[k], cv = sp_bsr_cols_in(w, J);
            float *dv = dval + k * bs;
            for (int64_t r = 0; r < br; r++) {
                for (int64_t c = 0; c < bc; c++) {
                    float acc = 0.0f;
                    if (r < rv && c < cv) {
                        const float *g = dy + (I * br + r) * lddy;
                        const float *xr = x + (J * bc + c) * ldx;
                        float part[8] = {0};
                        int64_t b = 0;
                        for (; b + 8 <= batch; b += 8)
                            for (int l = 0; l < 8; l++) part[l] += g[b + l] * xr[b + l];
                        for (; b < batch; b++) part[0] += g[b] * xr[b];
                        acc = ((part[0] + part[1]) + (part[2] + part[3])) +
                              ((part[4] + part[5]) + (part[6] + part[7]));
                    }
                    dv[r * bc + c] = accumulate ? dv[r * bc + c] + acc : acc;
                }
            }
        }
    }
}
