/*
 * bsr_neon.c - aarch64 Advanced SIMD BSR kernels (compiled only on aarch64).
 *
 * The plan of the x86 files with 4-wide vectors and 32 registers: a spmm tile is R rows x NV
 * q vectors (R*NV <= 16 accumulators: 4x4, 4x1 and 1x4 take 4 rows or 1 row x 16 columns, 8x1
 * 8 x 8, 16x1 16 x 4), each X row segment loaded once per block column and reused by the R rows.
 * Width-4 blocks keep a block's rows in registers and use fmla by lane; other widths broadcast
 * one weight at a time. Any other block shape runs a generic 4-row instance. NEON has no masked
 * loads, so the last batch % 4 columns run a short scalar tail. spmm_t keeps the block row's dY
 * vectors in registers and updates each dX row segment once per block column; sddmm computes up
 * to 16 dot products of a block at once. Edge blocks are clipped to the matrix: X and dY are
 * never read, nor Y and dX written, outside it.
 */
#include <arm_neon.h>

#include "../bsr_geom.h"
#include "relu_neon.h"

#define AI static inline __attribute__((always_inline))

AI float32x4_t epi(float32x4_t v, float32x4_t bias, sp_act act) {
    v = vaddq_f32(v, bias);
    return act == SP_ACT_RELU ? sp_relu_f32x4(v) : v;
}

/* ---- spmm ---------------------------------------------------------------------------------- */

/* Accumulator sets so that at least 8 FMA chains cover the FMA latency (see bsr_avx512.c). */
#define SETS_C(R, NV, BC) ((BC) > 1 && (R) * (NV) < 8 ? ((R) * (NV) >= 4 || (BC) < 4 ? 2 : 4) : 1)
#define SETS_K(R, NV, BC) ((R) * (NV) * SETS_C(R, NV, BC) < 8 ? 2 : 1)

/* acc[q][r][v] += W[r, c] * X[c, 4 v ...] for column c of one block. */
AI void col_fma(float32x4_t acc[8][16][4], int q, const float *wv, int64_t bc, const float *xb,
                int64_t ldx, int64_t c, const int R, const int NV) {
    float32x4_t xv[4];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) xv[v] = vld1q_f32(xb + c * ldx + 4 * v);
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        const float wr = wv[r * bc + c];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[q][r][v] = vfmaq_n_f32(acc[q][r][v], xv[v], wr);
    }
}

/* One whole block of compile-time width BC, columns taking turns over S accumulator sets from
 * set0 (fully unrolled), or, with BC == 0, cn columns of run-time count into set0 (a loop). */
AI void block_fma(float32x4_t acc[8][16][4], int set0, const int S, const float *wv, int64_t bc,
                  const float *xb, int64_t ldx, const int BC, int64_t cn, const int R,
                  const int NV) {
    if (BC > 0) {
#pragma GCC unroll 16
        for (int c = 0; c < BC; c++) col_fma(acc, set0 + c % S, wv, bc, xb, ldx, c, R, NV);
    } else {
#pragma GCC unroll 1
        for (int64_t c = 0; c < cn; c++) col_fma(acc, set0, wv, bc, xb, ldx, c, R, NV);
    }
}

/* A whole width-4 block: the block's rows are loaded as vectors and multiply by lane. */
AI void block_fma4(float32x4_t acc[8][16][4], int set0, const float *wv, const float *xb,
                   int64_t ldx, const int R, const int NV) {
    float32x4_t wr[16];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) wr[r] = vld1q_f32(wv + 4 * r);
#define SP_LANE(c_)                                                                             \
    do {                                                                                        \
        const int q_ = set0 + (c_) % SETS_C(R, NV, 4);                                          \
        float32x4_t xv_[4];                                                                     \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) xv_[v] =                          \
            vld1q_f32(xb + (c_) * ldx + 4 * v);                                                 \
        _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                                   \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[q_][r][v] =               \
                vfmaq_laneq_f32(acc[q_][r][v], xv_[v], wr[r], (c_));                            \
    } while (0)
    SP_LANE(0);
    SP_LANE(1);
    SP_LANE(2);
    SP_LANE(3);
#undef SP_LANE
}

/* Y[I*br + r0 + r, b .. b + 4 NV) for r < R (rows inside the matrix only). BC > 0: the block
 * width as a compile-time constant. */
AI void spmm_tile(const sp_bsr *w, int64_t I, sp_bsr_brow blk, int64_t r0, const int R, const int BC,
                  const int NV, const float *x, int64_t ldx, int64_t b, float *y, int64_t ldy,
                  const float *bias, sp_act act) {
    const int S = SETS_C(R, NV, BC), KS = SETS_K(R, NV, BC);
    const int64_t bc = BC > 0 ? BC : w->bc, bs = (int64_t)w->br * bc;
    const float *val = w->val + r0 * bc;
    const int32_t *cidx = w->col_idx;
    const float *xb = x + b;
    float32x4_t acc[8][16][4];
#pragma GCC unroll 8
    for (int q = 0; q < S * KS; q++)
#pragma GCC unroll 16
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[q][r][v] = vdupq_n_f32(0.0f);
    int64_t k = blk.k0;
    if (BC == 4) {
        for (; k + 2 <= blk.kf && KS == 2; k += 2) {
            block_fma4(acc, 0, val + k * bs, xb + (int64_t)cidx[k] * 4 * ldx, ldx, R, NV);
            block_fma4(acc, S, val + (k + 1) * bs, xb + (int64_t)cidx[k + 1] * 4 * ldx, ldx, R, NV);
        }
        for (; k < blk.kf; k++)
            block_fma4(acc, 0, val + k * bs, xb + (int64_t)cidx[k] * 4 * ldx, ldx, R, NV);
    } else {
        for (; k + 2 <= blk.kf && KS == 2; k += 2) {
            block_fma(acc, 0, S, val + k * bs, bc, xb + (int64_t)cidx[k] * bc * ldx, ldx, BC, bc,
                      R, NV);
            block_fma(acc, S, S, val + (k + 1) * bs, bc, xb + (int64_t)cidx[k + 1] * bc * ldx,
                      ldx, BC, bc, R, NV);
        }
        for (; k < blk.kf; k++)
            block_fma(acc, 0, S, val + k * bs, bc, xb + (int64_t)cidx[k] * bc * ldx, ldx, BC, bc,
                      R, NV);
    }
    if (blk.kf < blk.k1) /* the edge block: a run-time column count */
        block_fma(acc, 0, 1, val + blk.kf * bs, bc, xb + (int64_t)cidx[blk.kf] * bc * ldx, ldx,
                  0, blk.cv_last, R, NV);
    const int64_t i0 = I * w->br + r0, rv = w->rows - i0;
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        if (r >= rv) break;
        const float32x4_t vb = vdupq_n_f32(bias ? bias[i0 + r] : 0.0f);
        float *yr = y + (i0 + r) * ldy + b;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            float32x4_t s = acc[0][r][v];
#pragma GCC unroll 8
            for (int q = 1; q < S * KS; q++) s = vaddq_f32(s, acc[q][r][v]);
            vst1q_f32(yr + 4 * v, epi(s, vb, act));
        }
    }
}

/* Batch columns [b0, batch), fewer than 4 NV of them, one at a time: the scalar tail. */
static void spmm_tail(const sp_bsr *w, int64_t I, int64_t b0, const float *x, int64_t ldx,
                      int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    const int64_t br = w->br, bc = w->bc, bs = br * bc, rv = sp_bsr_rows_in(w, I);
    for (int64_t r = 0; r < rv; r++)
        for (int64_t b = b0; b < batch; b++) {
            float acc = 0.0f;
            for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++) {
                const int64_t J = w->col_idx[k], cv = sp_bsr_cols_in(w, J);
                const float *v = w->val + k * bs + r * bc, *xj = x + J * bc * ldx + b;
                for (int64_t c = 0; c < cv; c++) acc += v[c] * xj[c * ldx];
            }
            y[(I * br + r) * ldy + b] = sp_epilogue(acc, bias, I * br + r, act);
        }
}

/* Rows [r0, r0 + R) of block row I: tiles of 4 NV columns, then of 4 columns. */
AI void spmm_chunk(const sp_bsr *w, int64_t I, sp_bsr_brow blk, int64_t r0, const int R, const int BC,
                   const int NV, const float *x, int64_t ldx, int64_t batch, float *y,
                   int64_t ldy, const float *bias, sp_act act) {
    int64_t b = 0;
    for (; b + 4 * NV <= batch; b += 4 * NV)
        spmm_tile(w, I, blk, r0, R, BC, NV, x, ldx, b, y, ldy, bias, act);
    for (; b + 4 <= batch; b += 4) spmm_tile(w, I, blk, r0, R, BC, 1, x, ldx, b, y, ldy, bias, act);
}

/* A block row whose block height is a multiple of R. */
AI void spmm_brow(const sp_bsr *w, int64_t I, const int R, const int BC, const int NV,
                  const float *x, int64_t ldx, int64_t batch, float *y, int64_t ldy,
                  const float *bias, sp_act act) {
    const sp_bsr_brow blk = sp_bsr_brow_of(w, I);
    const int64_t rv = sp_bsr_rows_in(w, I);
    for (int64_t r0 = 0; r0 < rv; r0 += R)
        spmm_chunk(w, I, blk, r0, R, BC, NV, x, ldx, batch, y, ldy, bias, act);
}

/* Any block shape: chunks of 4 rows, then the block's last 1..3 rows. */
static void spmm_brow_generic(const sp_bsr *w, int64_t I, const float *x, int64_t ldx,
                              int64_t batch, float *y, int64_t ldy, const float *bias,
                              sp_act act) {
    const sp_bsr_brow blk = sp_bsr_brow_of(w, I);
    const int64_t rv = sp_bsr_rows_in(w, I), br = w->br;
    int64_t r0 = 0;
    for (; r0 + 4 <= br && r0 < rv; r0 += 4)
        spmm_chunk(w, I, blk, r0, 4, 0, 4, x, ldx, batch, y, ldy, bias, act);
    if (r0 >= rv) return;
    switch (br - r0) {
    case 1: spmm_chunk(w, I, blk, r0, 1, 0, 4, x, ldx, batch, y, ldy, bias, act); break;
    case 2: spmm_chunk(w, I, blk, r0, 2, 0, 4, x, ldx, batch, y, ldy, bias, act); break;
    default: spmm_chunk(w, I, blk, r0, 3, 0, 4, x, ldx, batch, y, ldy, bias, act); break;
    }
}

/* Batch 1. */
static void spmv_brow(const sp_bsr *w, int64_t I, const float *x, int64_t ldx, float *y,
                      int64_t ldy, const float *bias, sp_act act) {
    const int64_t br = w->br, bc = w->bc, bs = br * bc, rv = sp_bsr_rows_in(w, I);
    const int64_t k0 = w->row_ptr[I], k1 = w->row_ptr[I + 1];
    const int32_t *ci = w->col_idx;
    if (bc == 1 && br == 4) {
        /* 4x1: one FMA per block against a broadcast x value, four chains */
        float32x4_t a[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        int64_t k = k0;
        for (; k + 4 <= k1; k += 4)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++)
                a[u] = vfmaq_n_f32(a[u], vld1q_f32(w->val + (k + u) * 4), x[(int64_t)ci[k + u] * ldx]);
        for (; k < k1; k++) a[0] = vfmaq_n_f32(a[0], vld1q_f32(w->val + k * 4), x[(int64_t)ci[k] * ldx]);
        float o[4];
        vst1q_f32(o, vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])));
        for (int64_t r = 0; r < rv; r++) y[(I * 4 + r) * ldy] = sp_epilogue(o[r], bias, I * 4 + r, act);
        return;
    }
    if (ldx == 1 && bc == 4 && (br == 1 || br == 4)) {
        /* 1x4 and 4x4: each block row of a block against x[j0 .. j0+4) */
        const sp_bsr_brow blk = sp_bsr_brow_of(w, I);
        float32x4_t a[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
        int64_t k = blk.k0;
        if (br == 1) {
            for (; k + 4 <= blk.kf; k += 4)
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++)
                    a[u] = vfmaq_f32(a[u], vld1q_f32(w->val + (k + u) * 4),
                                     vld1q_f32(x + (int64_t)ci[k + u] * 4));
        } else {
            for (; k < blk.kf; k++) {
                const float32x4_t xv = vld1q_f32(x + (int64_t)ci[k] * 4);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) a[r] = vfmaq_f32(a[r], vld1q_f32(w->val + k * 16 + 4 * r), xv);
            }
        }
        for (int64_t r = 0; r < rv; r++) {
            float s = br == 1 ? vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])))
                              : vaddvq_f32(a[r]);
            for (int64_t kk = k; kk < blk.k1; kk++) { /* leftover and edge blocks */
                const int64_t J = ci[kk], cv = sp_bsr_cols_in(w, J);
                for (int64_t c = 0; c < cv; c++) s += w->val[kk * bs + r * 4 + c] * x[J * 4 + c];
            }
            y[(I * br + r) * ldy] = sp_epilogue(s, bias, I * br + r, act);
        }
        return;
    }
    /* any other shape: per block row of the block, a dot with the block's slice of x */
    float out[64], xs[64];
    for (int64_t r = 0; r < rv; r++) out[r] = 0.0f;
    for (int64_t k = k0; k < k1; k++) {
        const int64_t J = ci[k], cv = sp_bsr_cols_in(w, J);
        for (int64_t c = 0; c < cv; c++) xs[c] = x[(J * bc + c) * ldx];
        const float *v = w->val + k * bs;
        for (int64_t r = 0; r < rv; r++) {
            float s = 0.0f;
            for (int64_t c = 0; c < cv; c++) s += v[r * bc + c] * xs[c];
            out[r] += s;
        }
    }
    for (int64_t r = 0; r < rv; r++) y[(I * br + r) * ldy] = sp_epilogue(out[r], bias, I * br + r, act);
}

/* One function per specialised shape, so that each stays small enough to compile quickly. */
#define SPMM_SHAPE(name_, R_, BC_, NV_)                                                          \
    static __attribute__((noinline)) void name_(const sp_bsr *w, int64_t I, const float *x,      \
                                                int64_t ldx, int64_t batch, float *y,            \
                                                int64_t ldy, const float *bias, sp_act act) {    \
        spmm_brow(w, I, R_, BC_, NV_, x, ldx, batch, y, ldy, bias, act);                          \
    }
SPMM_SHAPE(spmm_1x4, 1, 4, 4)
SPMM_SHAPE(spmm_4x1, 4, 1, 4)
SPMM_SHAPE(spmm_4x4, 4, 4, 4)
SPMM_SHAPE(spmm_8x1, 8, 1, 2)
SPMM_SHAPE(spmm_16x1, 16, 1, 1)

void sp_f32_spmm_bsr__neon(const sp_bsr *w, int64_t br0, int64_t br1, const float *x,
                           int64_t ldx, int64_t batch, float *y, int64_t ldy, const float *bias,
                           sp_act act) {
    const int shape = w->br * 100 + w->bc;
    const int64_t b4 = batch & ~(int64_t)3; /* columns covered by whole vectors */
    for (int64_t I = br0; I < br1; I++) {
        if (batch == 1) {
            spmv_brow(w, I, x, ldx, y, ldy, bias, act);
            continue;
        }
        switch (shape) {
        case 104: spmm_1x4(w, I, x, ldx, b4, y, ldy, bias, act); break;
        case 401: spmm_4x1(w, I, x, ldx, b4, y, ldy, bias, act); break;
        case 404: spmm_4x4(w, I, x, ldx, b4, y, ldy, bias, act); break;
        case 801: spmm_8x1(w, I, x, ldx, b4, y, ldy, bias, act); break;
        case 1601: spmm_16x1(w, I, x, ldx, b4, y, ldy, bias, act); break;
        default: spmm_brow_generic(w, I, x, ldx, b4, y, ldy, bias, act); break;
        }
        if (b4 < batch) spmm_tail(w, I, b4, x, ldx, batch, y, ldy, bias, act);
    }
}

/* ---- spmm_t -------------------------------------------------------------------------------- */

/* dX[J*bc + c, b ...] += sum_r W[r, c] g[r] for column c of one block. */
AI void t_col(const float32x4_t g[16][4], const float *wv, int64_t bc, float *db, int64_t lddx,
              int64_t c, const int R, const int NV) {
    float *d = db + c * lddx;
    float32x4_t a[4];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) a[v] = vld1q_f32(d + 4 * v);
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        const float wr = wv[r * bc + c];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) a[v] = vfmaq_n_f32(a[v], g[r][v], wr);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) vst1q_f32(d + 4 * v, a[v]);
}

/* A whole block of compile-time width BC (unrolled), or cn columns of run-time count. */
AI void t_block(const float32x4_t g[16][4], const float *wv, int64_t bc, float *db, int64_t lddx,
                const int BC, int64_t cn, const int R, const int NV) {
    if (BC > 0) {
#pragma GCC unroll 16
        for (int c = 0; c < BC; c++) t_col(g, wv, bc, db, lddx, c, R, NV);
    } else {
#pragma GCC unroll 1
        for (int64_t c = 0; c < cn; c++) t_col(g, wv, bc, db, lddx, c, R, NV);
    }
}

/* The blocks of block row I, rows [r0, r0 + R) of the block (nr of them inside the matrix),
 * 4 NV batch columns from b; the R x NV dY vectors are loaded once (zero outside the matrix). */
AI void spmm_t_tile(const sp_bsr *w, int64_t I, int64_t r0, int64_t nr, const int R,
                    const int BC, const int NV, int64_t b, const float *dy, int64_t lddy,
                    float *dx, int64_t lddx) {
    const int64_t bc = BC > 0 ? BC : w->bc, bs = (int64_t)w->br * bc;
    float32x4_t g[16][4];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            g[r][v] = vdupq_n_f32(0.0f);
            if (r < nr) g[r][v] = vld1q_f32(dy + (I * w->br + r0 + r) * lddy + b + 4 * v);
        }
    const sp_bsr_brow blk = sp_bsr_brow_of(w, I);
    const float *val = w->val + r0 * bc;
    float *dxb = dx + b;
    for (int64_t k = blk.k0; k < blk.kf; k++)
        t_block(g, val + k * bs, bc, dxb + (int64_t)w->col_idx[k] * bc * lddx, lddx, BC, bc, R, NV);
    if (blk.kf < blk.k1)
        t_block(g, val + blk.kf * bs, bc, dxb + (int64_t)w->col_idx[blk.kf] * bc * lddx, lddx, 0,
                blk.cv_last, R, NV);
}

/* Whole vectors of batch columns in [b0, b1) for the row chunk [r0, r0 + R) of every block row. */
AI void spmm_t_chunk(const sp_bsr *w, int64_t r0, const int R, const int BC, const int NV,
                     int64_t b0, int64_t b1, const float *dy, int64_t lddy, float *dx,
                     int64_t lddx) {
    int64_t b = b0;
    for (; b + 4 * NV <= b1; b += 4 * NV)
        for (int64_t I = 0; I < w->brows; I++) {
            const int64_t nr = sp_bsr_rows_in(w, I) - r0;
            if (nr > 0) spmm_t_tile(w, I, r0, nr, R, BC, NV, b, dy, lddy, dx, lddx);
        }
    for (; b + 4 <= b1; b += 4)
        for (int64_t I = 0; I < w->brows; I++) {
            const int64_t nr = sp_bsr_rows_in(w, I) - r0;
            if (nr > 0) spmm_t_tile(w, I, r0, nr, R, BC, 1, b, dy, lddy, dx, lddx);
        }
}

/* A block height that is a multiple of R. */
AI void spmm_t_shape(const sp_bsr *w, const int R, const int BC, const int NV, int64_t b0,
                     int64_t b1, const float *dy, int64_t lddy, float *dx, int64_t lddx) {
    for (int64_t r0 = 0; r0 < w->br; r0 += R) spmm_t_chunk(w, r0, R, BC, NV, b0, b1, dy, lddy, dx, lddx);
}

static void spmm_t_generic(const sp_bsr *w, int64_t b0, int64_t b1, const float *dy,
                           int64_t lddy, float *dx, int64_t lddx) {
    int64_t r0 = 0;
    for (; r0 + 4 <= w->br; r0 += 4) spmm_t_chunk(w, r0, 4, 0, 4, b0, b1, dy, lddy, dx, lddx);
    switch (w->br - r0) {
    case 0: break;
    case 1: spmm_t_chunk(w, r0, 1, 0, 4, b0, b1, dy, lddy, dx, lddx); break;
    case 2: spmm_t_chunk(w, r0, 2, 0, 4, b0, b1, dy, lddy, dx, lddx); break;
    default: spmm_t_chunk(w, r0, 3, 0, 4, b0, b1, dy, lddy, dx, lddx); break;
    }
}

void sp_f32_spmm_t_bsr__neon(const sp_bsr *w, int64_t b0, int64_t b1, const float *dy,
                             int64_t lddy, float *dx, int64_t lddx) {
    const int64_t b4 = b0 + ((b1 - b0) & ~(int64_t)3);
    switch (w->br * 100 + w->bc) {
    case 104: spmm_t_shape(w, 1, 4, 4, b0, b4, dy, lddy, dx, lddx); break;
    case 401: spmm_t_shape(w, 4, 1, 4, b0, b4, dy, lddy, dx, lddx); break;
    case 404: spmm_t_shape(w, 4, 4, 4, b0, b4, dy, lddy, dx, lddx); break;
    case 801: spmm_t_shape(w, 8, 1, 2, b0, b4, dy, lddy, dx, lddx); break;
    case 1601: spmm_t_shape(w, 16, 1, 1, b0, b4, dy, lddy, dx, lddx); break;
    default: spmm_t_generic(w, b0, b4, dy, lddy, dx, lddx); break;
    }
    if (b4 == b1) return;
    /* the scalar tail: the last (b1 - b0) % 4 columns */
    const int64_t br = w->br, bc = w->bc, bs = br * bc;
    for (int64_t I = 0; I < w->brows; I++) {
        const int64_t rv = sp_bsr_rows_in(w, I);
        for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++) {
            const int64_t J = w->col_idx[k], cv = sp_bsr_cols_in(w, J);
            for (int64_t c = 0; c < cv; c++)
                for (int64_t b = b4; b < b1; b++) {
                    float a = dx[(J * bc + c) * lddx + b];
                    for (int64_t r = 0; r < rv; r++)
                        a += w->val[k * bs + r * bc + c] * dy[(I * br + r) * lddy + b];
                    dx[(J * bc + c) * lddx + b] = a;
                }
        }
    }
}

/* ---- sddmm --------------------------------------------------------------------------------- */

/* out[r*C + c] = dY[r, :] . X[c, :] for r < R, c < C (R*C <= 16), written to dv[r*ldv + c]
 * (+= when accumulating). */
AI void sddmm_tile(const float *g, int64_t lddy, const float *xr, int64_t ldx, int64_t batch,
                   const int R, const int C, float *dv, int64_t ldv, bool accumulate) {
    float32x4_t acc[16];
#pragma GCC unroll 16
    for (int n = 0; n < R * C; n++) acc[n] = vdupq_n_f32(0.0f);
    int64_t b = 0;
    for (; b + 4 <= batch; b += 4) {
        float32x4_t xv[16];
#pragma GCC unroll 16
        for (int c = 0; c < C; c++) xv[c] = vld1q_f32(xr + c * ldx + b);
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            const float32x4_t gr = vld1q_f32(g + r * lddy + b);
#pragma GCC unroll 16
            for (int c = 0; c < C; c++) acc[r * C + c] = vfmaq_f32(acc[r * C + c], gr, xv[c]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 16
        for (int c = 0; c < C; c++) {
            float s = vaddvq_f32(acc[r * C + c]);
            for (int64_t t = b; t < batch; t++) s += g[r * lddy + t] * xr[c * ldx + t];
            dv[r * ldv + c] = accumulate ? dv[r * ldv + c] + s : s;
        }
}

/* Any block, edge blocks included: 1 row x up to 8 columns at a time; padding entries 0. */
static void sddmm_block_generic(const sp_bsr *w, int64_t I, int64_t k, const float *dy,
                                int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                                float *dv, bool accumulate) {
    const int64_t br = w->br, bc = w->bc, J = w->col_idx[k];
    const int64_t rv = sp_bsr_rows_in(w, I), cv = sp_bsr_cols_in(w, J);
    for (int64_t r = 0; r < br; r++) {
        float *d = dv + r * bc;
        int64_t c0 = 0;
        if (r < rv) {
            const float *g = dy + (I * br + r) * lddy;
            for (; c0 + 8 <= cv; c0 += 8)
                sddmm_tile(g, lddy, x + (J * bc + c0) * ldx, ldx, batch, 1, 8, d + c0, 8, accumulate);
            const float *xr = x + (J * bc + c0) * ldx;
            switch (cv - c0) {
            case 0: break;
            case 1: sddmm_tile(g, lddy, xr, ldx, batch, 1, 1, d + c0, 1, accumulate); break;
            case 2: sddmm_tile(g, lddy, xr, ldx, batch, 1, 2, d + c0, 2, accumulate); break;
            case 3: sddmm_tile(g, lddy, xr, ldx, batch, 1, 3, d + c0, 3, accumulate); break;
            case 4: sddmm_tile(g, lddy, xr, ldx, batch, 1, 4, d + c0, 4, accumulate); break;
            case 5: sddmm_tile(g, lddy, xr, ldx, batch, 1, 5, d + c0, 5, accumulate); break;
            case 6: sddmm_tile(g, lddy, xr, ldx, batch, 1, 6, d + c0, 6, accumulate); break;
            default: sddmm_tile(g, lddy, xr, ldx, batch, 1, 7, d + c0, 7, accumulate); break;
            }
            c0 = cv;
        }
        if (!accumulate)
            for (int64_t c = c0; c < bc; c++) d[c] = 0.0f;
    }
}

AI void sddmm_shape(const sp_bsr *w, int64_t br0, int64_t br1, const int R, const int C,
                    const float *dy, int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                    float *dval, bool accumulate) {
    const int64_t bs = (int64_t)R * C;
    for (int64_t I = br0; I < br1; I++) {
        const sp_bsr_brow blk = sp_bsr_brow_of(w, I);
        const bool full_rows = sp_bsr_rows_in(w, I) == R;
        const float *g = dy + I * R * lddy;
        for (int64_t k = blk.k0; k < blk.k1; k++) {
            if (!full_rows || k >= blk.kf) {
                sddmm_block_generic(w, I, k, dy, lddy, x, ldx, batch, dval + k * bs, accumulate);
                continue;
            }
            sddmm_tile(g, lddy, x + (int64_t)w->col_idx[k] * C * ldx, ldx, batch, R, C,
                       dval + k * bs, C, accumulate);
        }
    }
}

void sp_f32_sddmm_bsr__neon(const sp_bsr *w, int64_t br0, int64_t br1, const float *dy,
                            int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                            float *dval, bool accumulate) {
    switch (w->br * 100 + w->bc) {
    case 104: sddmm_shape(w, br0, br1, 1, 4, dy, lddy, x, ldx, batch, dval, accumulate); return;
    case 401: sddmm_shape(w, br0, br1, 4, 1, dy, lddy, x, ldx, batch, dval, accumulate); return;
    case 404: sddmm_shape(w, br0, br1, 4, 4, dy, lddy, x, ldx, batch, dval, accumulate); return;
    case 801: sddmm_shape(w, br0, br1, 8, 1, dy, lddy, x, ldx, batch, dval, accumulate); return;
    case 1601: sddmm_shape(w, br0, br1, 16, 1, dy, lddy, x, ldx, batch, dval, accumulate); return;
    default: break;
    }
    const int64_t bs = (int64_t)w->br * w->bc;
    for (int64_t I = br0; I < br1; I++)
        for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++)
            sddmm_block_generic(w, I, k, dy, lddy, x, ldx, batch, dval + k * bs, accumulate);
}
