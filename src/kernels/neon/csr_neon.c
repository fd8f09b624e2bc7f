/*
 * csr_neon.c - AArch64 NEON (Advanced SIMD) CSR kernels. NEON is baseline on aarch64, so this
 * file needs no -m flags; CMake compiles it only when targeting aarch64.
 *
 * The plan of the AVX-512 file with 4-wide vectors. spmm, batch >= 2: for each output row,
 * tiles of 16 batch columns (4 float32x4 per nonzero, two sets of accumulators for even and odd
 * nonzeros so that 8 independent FMA chains hide the FMA latency), then tiles of 4 (the
 * nonzeros unrolled 4 ways, one accumulator each), then 1-3 columns in scalar code: NEON has no
 * masked loads, and reading past the batch could leave the buffer. Four nonzero values are
 * loaded at once and broadcast from their lane (vfmaq_laneq_f32); single nonzeros use
 * vfmaq_n_f32. spmm, batch 1 (SpMV): NEON has no gather, so x is assembled lane by lane, four
 * nonzeros per step into one float32x4 of partial sums; its speed is set by the bytes of W
 * streamed, which is why 16-bit column indices matter.
 * The bias + ReLU epilogue is exactly sp_epilogue: bias added only when given, and ReLU keeps v
 * only where v > 0 (NaN and -0 become +0), by compare-and-mask rather than vmaxq_f32 (FMAX
 * propagates NaN).
 *
 * Shapes: W (rows x cols) sparse; X (cols, B); Y (rows, B); dY (rows, B); dX (cols, B).
 */
#include <arm_neon.h>

#include "../kernel_table.h"
#include "relu_neon.h"

static inline __attribute__((always_inline)) int64_t col_at(const sp_csr *w, int64_t k, bool wide) {
    return wide ? (int64_t)w->col_idx[k] : (int64_t)w->col_idx16[k];
}

/* sp_epilogue on four lanes: vb holds bias[row] (used only if has_bias). */
static inline __attribute__((always_inline)) float32x4_t epi(float32x4_t v, float32x4_t vb,
                                                             bool has_bias, sp_act act) {
    if (has_bias) v = vaddq_f32(v, vb);
    return act == SP_ACT_RELU ? sp_relu_f32x4(v) : v;
}

/* y[i] = W[i, :] . x for one row, x with stride ldx: four partial sums in one register. */
static inline __attribute__((always_inline)) float spmv_row(const sp_csr *w, int64_t k0,
                                                            int64_t k1, const float *x,
                                                            int64_t ldx, bool wide) {
    const float *val = w->val;
    float32x4_t acc = vdupq_n_f32(0.0f);
    int64_t k = k0;
    for (; k + 4 <= k1; k += 4) {
        float32x4_t xv = vdupq_n_f32(0.0f);
        xv = vld1q_lane_f32(x + col_at(w, k, wide) * ldx, xv, 0);
        xv = vld1q_lane_f32(x + col_at(w, k + 1, wide) * ldx, xv, 1);
        xv = vld1q_lane_f32(x + col_at(w, k + 2, wide) * ldx, xv, 2);
        xv = vld1q_lane_f32(x + col_at(w, k + 3, wide) * ldx, xv, 3);
        acc = vfmaq_f32(acc, vld1q_f32(val + k), xv);
    }
    float s = vaddvq_f32(acc);
    for (; k < k1; k++) s += val[k] * x[col_at(w, k, wide) * ldx];
    return s;
}

static inline __attribute__((always_inline)) void spmm_rows(const sp_csr *w, int64_t r0,
                                                            int64_t r1, const float *x, int64_t ldx,
                                                            int64_t batch, float *y, int64_t ldy,
                                                            const float *bias, sp_act act,
                                                            bool wide) {
    const float *val = w->val;
    const bool has_bias = bias != NULL;
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        float *yr = y + i * ldy;
        if (batch == 1) {
            yr[0] = sp_epilogue(spmv_row(w, k0, k1, x, ldx, wide), bias, i, act);
            continue;
        }
        const float32x4_t vb = vdupq_n_f32(has_bias ? bias[i] : 0.0f);
        int64_t b = 0;
        /* 16 columns: a* take nonzeros k, k+2; c* take k+1, k+3 */
        for (; b + 16 <= batch; b += 16) {
            float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
            float32x4_t c0 = a0, c1 = a0, c2 = a0, c3 = a0;
            int64_t k = k0;
            for (; k + 4 <= k1; k += 4) {
                const float32x4_t v = vld1q_f32(val + k);
                const float *x0 = x + col_at(w, k, wide) * ldx + b;
                const float *x1 = x + col_at(w, k + 1, wide) * ldx + b;
                const float *x2 = x + col_at(w, k + 2, wide) * ldx + b;
                const float *x3 = x + col_at(w, k + 3, wide) * ldx + b;
                a0 = vfmaq_laneq_f32(a0, vld1q_f32(x0), v, 0);
                a1 = vfmaq_laneq_f32(a1, vld1q_f32(x0 + 4), v, 0);
                a2 = vfmaq_laneq_f32(a2, vld1q_f32(x0 + 8), v, 0);
                a3 = vfmaq_laneq_f32(a3, vld1q_f32(x0 + 12), v, 0);
                c0 = vfmaq_laneq_f32(c0, vld1q_f32(x1), v, 1);
                c1 = vfmaq_laneq_f32(c1, vld1q_f32(x1 + 4), v, 1);
                c2 = vfmaq_laneq_f32(c2, vld1q_f32(x1 + 8), v, 1);
                c3 = vfmaq_laneq_f32(c3, vld1q_f32(x1 + 12), v, 1);
                a0 = vfmaq_laneq_f32(a0, vld1q_f32(x2), v, 2);
                a1 = vfmaq_laneq_f32(a1, vld1q_f32(x2 + 4), v, 2);
                a2 = vfmaq_laneq_f32(a2, vld1q_f32(x2 + 8), v, 2);
                a3 = vfmaq_laneq_f32(a3, vld1q_f32(x2 + 12), v, 2);
                c0 = vfmaq_laneq_f32(c0, vld1q_f32(x3), v, 3);
                c1 = vfmaq_laneq_f32(c1, vld1q_f32(x3 + 4), v, 3);
                c2 = vfmaq_laneq_f32(c2, vld1q_f32(x3 + 8), v, 3);
                c3 = vfmaq_laneq_f32(c3, vld1q_f32(x3 + 12), v, 3);
            }
            for (; k < k1; k++) {
                const float v = val[k];
                const float *xr = x + col_at(w, k, wide) * ldx + b;
                a0 = vfmaq_n_f32(a0, vld1q_f32(xr), v);
                a1 = vfmaq_n_f32(a1, vld1q_f32(xr + 4), v);
                a2 = vfmaq_n_f32(a2, vld1q_f32(xr + 8), v);
                a3 = vfmaq_n_f32(a3, vld1q_f32(xr + 12), v);
            }
            vst1q_f32(yr + b, epi(vaddq_f32(a0, c0), vb, has_bias, act));
            vst1q_f32(yr + b + 4, epi(vaddq_f32(a1, c1), vb, has_bias, act));
            vst1q_f32(yr + b + 8, epi(vaddq_f32(a2, c2), vb, has_bias, act));
            vst1q_f32(yr + b + 12, epi(vaddq_f32(a3, c3), vb, has_bias, act));
        }
        /* 4 columns: one accumulator per nonzero of the 4-way unroll */
        for (; b + 4 <= batch; b += 4) {
            float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
            int64_t k = k0;
            for (; k + 4 <= k1; k += 4) {
                const float32x4_t v = vld1q_f32(val + k);
                a0 = vfmaq_laneq_f32(a0, vld1q_f32(x + col_at(w, k, wide) * ldx + b), v, 0);
                a1 = vfmaq_laneq_f32(a1, vld1q_f32(x + col_at(w, k + 1, wide) * ldx + b), v, 1);
                a2 = vfmaq_laneq_f32(a2, vld1q_f32(x + col_at(w, k + 2, wide) * ldx + b), v, 2);
                a3 = vfmaq_laneq_f32(a3, vld1q_f32(x + col_at(w, k + 3, wide) * ldx + b), v, 3);
            }
            for (; k < k1; k++)
                a0 = vfmaq_n_f32(a0, vld1q_f32(x + col_at(w, k, wide) * ldx + b), val[k]);
            float32x4_t s = vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3));
            vst1q_f32(yr + b, epi(s, vb, has_bias, act));
        }
        /* 1-3 columns left: scalar, never reading past the batch */
        if (b < batch) {
            const int64_t nb = batch - b;
            float acc[3] = {0.0f, 0.0f, 0.0f};
            for (int64_t k = k0; k < k1; k++) {
                const float v = val[k];
                const float *xr = x + col_at(w, k, wide) * ldx + b;
                for (int64_t j = 0; j < nb; j++) acc[j] += v * xr[j];
            }
            for (int64_t j = 0; j < nb; j++) yr[b + j] = sp_epilogue(acc[j], bias, i, act);
        }
    }
}

void sp_f32_spmm_csr__neon(const sp_csr *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                           int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    if (w->col_idx16) spmm_rows(w, r0, r1, x, ldx, batch, y, ldy, bias, act, false);
    else spmm_rows(w, r0, r1, x, ldx, batch, y, ldy, bias, act, true);
}

/* dX[:, b0:b1] += W^T dY[:, b0:b1]: each row's dY segment stays in registers (16, then 4
 * columns) while its nonzeros scatter-add into rows of dX; 1-3 leftover columns in scalar. */
static inline __attribute__((always_inline)) void spmm_t_cols(const sp_csr *w, int64_t b0,
                                                              int64_t b1, const float *dy,
                                                              int64_t lddy, float *dx,
                                                              int64_t lddx, bool wide) {
    const float *val = w->val;
    for (int64_t i = 0; i < w->rows; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        const float *g = dy + i * lddy;
        if (b1 - b0 == 1) {
            const float gi = g[b0];
            for (int64_t k = k0; k < k1; k++) dx[col_at(w, k, wide) * lddx + b0] += val[k] * gi;
            continue;
        }
        int64_t b = b0;
        for (; b + 16 <= b1; b += 16) {
            const float32x4_t g0 = vld1q_f32(g + b), g1 = vld1q_f32(g + b + 4);
            const float32x4_t g2 = vld1q_f32(g + b + 8), g3 = vld1q_f32(g + b + 12);
            for (int64_t k = k0; k < k1; k++) {
                float *d = dx + col_at(w, k, wide) * lddx + b;
                const float v = val[k];
                vst1q_f32(d, vfmaq_n_f32(vld1q_f32(d), g0, v));
                vst1q_f32(d + 4, vfmaq_n_f32(vld1q_f32(d + 4), g1, v));
                vst1q_f32(d + 8, vfmaq_n_f32(vld1q_f32(d + 8), g2, v));
                vst1q_f32(d + 12, vfmaq_n_f32(vld1q_f32(d + 12), g3, v));
            }
        }
        for (; b + 4 <= b1; b += 4) {
            const float32x4_t g0 = vld1q_f32(g + b);
            for (int64_t k = k0; k < k1; k++) {
                float *d = dx + col_at(w, k, wide) * lddx + b;
                vst1q_f32(d, vfmaq_n_f32(vld1q_f32(d), g0, val[k]));
            }
        }
        if (b < b1) {
            for (int64_t k = k0; k < k1; k++) {
                float *d = dx + col_at(w, k, wide) * lddx;
                const float v = val[k];
                for (int64_t j = b; j < b1; j++) d[j] += v * g[j];
            }
        }
    }
}

void sp_f32_spmm_t_csr__neon(const sp_csr *w, int64_t b0, int64_t b1, const float *dy,
                             int64_t lddy, float *dx, int64_t lddx) {
    if (w->col_idx16) spmm_t_cols(w, b0, b1, dy, lddy, dx, lddx, false);
    else spmm_t_cols(w, b0, b1, dy, lddy, dx, lddx, true);
}

/* dval[k] (+)= dY[i, :] . X[col(k), :]: 16 columns per step into four accumulators, then 4,
 * then a scalar tail. */
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
            float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
            int64_t b = 0;
            for (; b + 16 <= batch; b += 16) {
                a0 = vfmaq_f32(a0, vld1q_f32(g + b), vld1q_f32(xr + b));
                a1 = vfmaq_f32(a1, vld1q_f32(g + b + 4), vld1q_f32(xr + b + 4));
                a2 = vfmaq_f32(a2, vld1q_f32(g + b + 8), vld1q_f32(xr + b + 8));
                a3 = vfmaq_f32(a3, vld1q_f32(g + b + 12), vld1q_f32(xr + b + 12));
            }
            for (; b + 4 <= batch; b += 4) a0 = vfmaq_f32(a0, vld1q_f32(g + b), vld1q_f32(xr + b));
            float acc = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
            for (; b < batch; b++) acc += g[b] * xr[b];
            dval[k] = accumulate ? dval[k] + acc : acc;
        }
    }
}

void sp_f32_sddmm_csr__neon(const sp_csr *w, int64_t r0, int64_t r1, const float *dy,
                            int64_t lddy, const float *x, int64_t ldx, int64_t batch, float *dval,
                            bool accumulate) {
    if (w->col_idx16) sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, false);
    else sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, true);
}

/* The fused backward (sp_csr_spmm_t_sddmm) over rows j of W^T: tiles of 16 columns of dX row j
 * in 4 accumulators while each entry's row of dY passes once and is also dotted with X's row j;
 * then tiles of 4 and 1-3 scalar columns (no masked loads). A tile after the first adds its part
 * of an entry's dot to dval. */
static inline __attribute__((always_inline)) void spmm_t_sddmm_rows(
    const sp_csr *wt, const int64_t *perm, const float *wval, int64_t r0, int64_t r1,
    const float *dy, int64_t lddy, const float *x, int64_t ldx, int64_t batch, float *dx,
    int64_t lddx, float *dval, bool accumulate, bool wide) {
    for (int64_t j = r0; j < r1; j++) {
        const int64_t q0 = wt->row_ptr[j], q1 = wt->row_ptr[j + 1];
        const float *xj = x + j * ldx;
        float *dxj = dx + j * lddx;
        int64_t b = 0;
        for (; b + 16 <= batch; b += 16) {
            float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
            const float32x4_t x0 = vld1q_f32(xj + b), x1 = vld1q_f32(xj + b + 4);
            const float32x4_t x2 = vld1q_f32(xj + b + 8), x3 = vld1q_f32(xj + b + 12);
            for (int64_t q = q0; q < q1; q++) {
                const float *g = dy + col_at(wt, q, wide) * lddy + b;
                const float v = wval[perm[q]];
                const float32x4_t g0 = vld1q_f32(g), g1 = vld1q_f32(g + 4);
                const float32x4_t g2 = vld1q_f32(g + 8), g3 = vld1q_f32(g + 12);
                a0 = vfmaq_n_f32(a0, g0, v);
                a1 = vfmaq_n_f32(a1, g1, v);
                a2 = vfmaq_n_f32(a2, g2, v);
                a3 = vfmaq_n_f32(a3, g3, v);
                float32x4_t s0 = vmulq_f32(g0, x0), s1 = vmulq_f32(g1, x1);
                s0 = vfmaq_f32(s0, g2, x2);
                s1 = vfmaq_f32(s1, g3, x3);
                const float dot = vaddvq_f32(vaddq_f32(s0, s1));
                float *d = dval + perm[q];
                *d = accumulate || b > 0 ? *d + dot : dot;
            }
            vst1q_f32(dxj + b, a0);
            vst1q_f32(dxj + b + 4, a1);
            vst1q_f32(dxj + b + 8, a2);
            vst1q_f32(dxj + b + 12, a3);
        }
        for (; b + 4 <= batch; b += 4) {
            float32x4_t a0 = vdupq_n_f32(0.0f);
            const float32x4_t xv = vld1q_f32(xj + b);
            for (int64_t q = q0; q < q1; q++) {
                const float32x4_t g = vld1q_f32(dy + col_at(wt, q, wide) * lddy + b);
                a0 = vfmaq_n_f32(a0, g, wval[perm[q]]);
                const float dot = vaddvq_f32(vmulq_f32(g, xv));
                float *d = dval + perm[q];
                *d = accumulate || b > 0 ? *d + dot : dot;
            }
            vst1q_f32(dxj + b, a0);
        }
        for (; b < batch; b++) {
            float a = 0.0f;
            for (int64_t q = q0; q < q1; q++) {
                const float g = dy[col_at(wt, q, wide) * lddy + b];
                a += wval[perm[q]] * g;
                float *d = dval + perm[q];
                *d = accumulate || b > 0 ? *d + g * xj[b] : g * xj[b];
            }
            dxj[b] = a;
        }
    }
}

void sp_f32_spmm_t_sddmm_csr__neon(const sp_csr *wt, const int64_t *perm, const float *wval,
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
