/*
 * csr_scalar.c - portable C CSR kernels, written so that a compiler vectorises the batch loop
 * with whatever the baseline ISA offers (SSE2 on x86-64, NEON on aarch64).
 *
 * spmm keeps a tile of SP_TILE batch columns of one output row in a local accumulator and
 * streams the row's nonzeros through it: each nonzero is one broadcast and SP_TILE FMAs over a
 * contiguous row of X. Batch 1 is the shared row dot of csr_spmv.h.
 */
#include <string.h>

#include "../csr_spmv.h"

#define SP_TILE 32

static inline __attribute__((always_inline)) int64_t col_at(const sp_csr *w, int64_t k, bool wide) {
    return wide ? (int64_t)w->col_idx[k] : (int64_t)w->col_idx16[k];
}

static inline __attribute__((always_inline)) void spmm_rows(const sp_csr *w, int64_t r0,
                                                            int64_t r1, const float *x, int64_t ldx,
                                                            int64_t batch, float *y, int64_t ldy,
                                                            const float *bias, sp_act act,
                                                            bool wide) {
    const float *val = w->val;
    for (int64_t i = r0; i < r1; i++) {
        int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        if (batch == 1) {
            y[i * ldy] = sp_epilogue(sp_csr_row_dot(w, k0, k1, x, ldx), bias, i, act);
            continue;
        }
        for (int64_t b0 = 0; b0 < batch; b0 += SP_TILE) {
            int64_t nb = SP_MIN(SP_TILE, batch - b0);
            float acc[SP_TILE] = {0};
            for (int64_t k = k0; k < k1; k++) {
                const float *xr = x + col_at(w, k, wide) * ldx + b0;
                float v = val[k];
                if (nb == SP_TILE) {
                    for (int b = 0; b < SP_TILE; b++) acc[b] += v * xr[b];
                } else {
                    for (int b = 0; b < nb; b++) acc[b] += v * xr[b];
                }
            }
            float *yr = y + i * ldy + b0;
            for (int b = 0; b < nb; b++) yr[b] = sp_epilogue(acc[b], bias, i, act);
        }
    }
}

void sp_f32_spmm_csr__scalar(const sp_csr *w, int64_t r0, int64_t r1, const float *x,
                             int64_t ldx, int64_t batch, float *y, int64_t ldy, const float *bias,
                             sp_act act) {
    if (w->col_idx16) spmm_rows(w, r0, r1, x, ldx, batch, y, ldy, bias, act, false);
    else spmm_rows(w, r0, r1, x, ldx, batch, y, ldy, bias, act, true);
}

static inline __attribute__((always_inline)) void spmm_t_cols(const sp_csr *w, int64_t b0,
                                                              int64_t b1, const float *dy,
                                                              int64_t lddy, float *dx,
                                                              int64_t lddx, bool wide) {
    int64_t nb = b1 - b0;
    for (int64_t i = 0; i < w->rows; i++) {
        const float *g = dy + i * lddy + b0;
        for (int64_t k = w->row_ptr[i]; k < w->row_ptr[i + 1]; k++) {
            float v = w->val[k];
            float *d = dx + col_at(w, k, wide) * lddx + b0;
            for (int64_t b = 0; b < nb; b++) d[b] += v * g[b];
        }
    }
}

void sp_f32_spmm_t_csr__scalar(const sp_csr *w, int64_t b0, int64_t b1, const float *dy,
                               int64_t lddy, float *dx, int64_t lddx) {
    if (w->col_idx16) spmm_t_cols(w, b0, b1, dy, lddy, dx, lddx, false);
    else spmm_t_cols(w, b0, b1, dy, lddy, dx, lddx, true);
}

static inline __attribute__((always_inline)) void sddmm_rows(const sp_csr *w, int64_t r0,
                                                             int64_t r1, const float *dy,
                                                             int64_t lddy, const float *x,
                                                             int64_t ldx, int64_t batch,
                                                             float *dval, bool accumulate,
                                                             bool wide) {
    for (int64_t i = r0; i < r1; i++) {
        const float *g = dy + i * lddy;
        for (int64_t k = w->row_ptr[i]; k < w->row_ptr[i + 1]; k++) {
            const float *xr = x + col_at(w, k, wide) * ldx;
            float part[8] = {0};
            int64_t b = 0;
            for (; b + 8 <= batch; b += 8)
                for (int l = 0; l < 8; l++) part[l] += g[b + l] * xr[b + l];
            for (; b < batch; b++) part[0] += g[b] * xr[b];
            float acc = ((part[0] + part[1]) + (part[2] + part[3])) +
                        ((part[4] + part[5]) + (part[6] + part[7]));
            dval[k] = accumulate ? dval[k] + acc : acc;
        }
    }
}

void sp_f32_sddmm_csr__scalar(const sp_csr *w, int64_t r0, int64_t r1, const float *dy,
                              int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                              float *dval, bool accumulate) {
    if (w->col_idx16) sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, false);
    else sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, true);
}

/* The panelled layout (src/sparse/csr_panels.h): per block and tile of SP_TILE batch columns,
 * Y starts at the bias, each row segment adds into it panel after panel, then the activation. */
void sp_f32_spmm_csr_panels__scalar(const sp_csr *w, int64_t r0, int64_t r1, const float *x,
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
        for (int64_t b0 = 0; b0 < batch; b0 += SP_TILE) {
            const int64_t nb = SP_MIN(SP_TILE, batch - b0);
            for (int64_t r = 0; r < rb; r++)
                for (int64_t b = 0; b < nb; b++) y[(row0 + r) * ldy + b0 + b] = bias ? bias[row0 + r] : 0.0f;
            for (int64_t q = 0; q < p->npanels; q++) {
                const float *xq = x + q * P * ldx + b0;
                for (int64_t r = 0; r < rb; r++) {
                    const uint32_t e0 = seg[q * rb + r], e1 = seg[q * rb + r + 1];
                    if (e0 == e1) continue;
                    float *yr = y + (row0 + r) * ldy + b0;
                    float acc[SP_TILE];
                    for (int64_t b = 0; b < nb; b++) acc[b] = yr[b];
                    for (uint32_t e = e0; e < e1; e++) {
                        const float *xr = xq + (int64_t)off[e] * ldx;
                        const float v = val[e];
                        for (int64_t b = 0; b < nb; b++) acc[b] += v * xr[b];
                    }
                    for (int64_t b = 0; b < nb; b++) yr[b] = acc[b];
                }
            }
            if (act != SP_ACT_NONE)
                for (int64_t r = 0; r < rb; r++)
                    for (int64_t b = 0; b < nb; b++) {
                        float *v = &y[(row0 + r) * ldy + b0 + b];
                        *v = sp_epilogue(*v, NULL, 0, act);
                    }
        }
    }
}

/* The fused backward (sp_csr_spmm_t_sddmm) over rows of W^T: a tile of SP_TILE columns of dX
 * row j accumulates locally while each entry's row of dY passes once, giving its dot with X's
 * row j (in 8 partial sums, as sddmm) on the way. */
static inline __attribute__((always_inline)) void spmm_t_sddmm_rows(
    const sp_csr *wt, const int64_t *perm, const float *wval, int64_t r0, int64_t r1,
    const float *dy, int64_t lddy, const float *x, int64_t ldx, int64_t batch, float *dx,
    int64_t lddx, float *dval, bool accumulate, bool wide) {
    for (int64_t j = r0; j < r1; j++) {
        const float *xj = x + j * ldx;
        for (int64_t b0 = 0; b0 < batch; b0 += SP_TILE) {
            const int64_t nb = SP_MIN(SP_TILE, batch - b0);
            float acc[SP_TILE] = {0};
            for (int64_t q = wt->row_ptr[j]; q < wt->row_ptr[j + 1]; q++) {
                const float *g = dy + col_at(wt, q, wide) * lddy + b0;
                const float v = wval[perm[q]];
                float part[8] = {0};
                int64_t b = 0;
                for (; b + 8 <= nb; b += 8)
                    for (int l = 0; l < 8; l++) {
                        acc[b + l] += v * g[b + l];
                        part[l] += g[b + l] * xj[b0 + b + l];
                    }
                for (; b < nb; b++) {
                    acc[b] += v * g[b];
                    part[0] += g[b] * xj[b0 + b];
                }
                const float dot = ((part[0] + part[1]) + (part[2] + part[3])) +
                                  ((part[4] + part[5]) + (part[6] + part[7]));
                float *d = dval + perm[q];
                *d = accumulate || b0 > 0 ? *d + dot : dot;
            }
            memcpy(dx + j * lddx + b0, acc, sizeof(float) * (size_t)nb);
        }
    }
}

void sp_f32_spmm_t_sddmm_csr__scalar(const sp_csr *wt, const int64_t *perm, const float *wval,
                                     int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                                     const float *x, int64_t ldx, int64_t batch, float *dx,
                                     int64_t lddx, float *dval, bool accumulate) {
    if (wt->col_idx16)
        spmm_t_sddmm_rows(wt, perm, wval, r0, r1, dy, lddy, x, ldx, batch, dx, lddx, dval,
                          accumulate, false);
    else
        spmm_t_sddmm_rows(wt, perm, wval, r0, r1, dy, lddy, x, ldx, batch, dx, lddx, dval,
                          accumulate, true);
}
