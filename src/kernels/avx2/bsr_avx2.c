/*
 * bsr_avx2.c - AVX2 + FMA BSR kernels (compiled with -mavx2 -mfma). The plan of the AVX-512
 * file with 8-wide vectors and 16 registers: a spmm tile is R rows x NV ymm vectors with at most
 * 8 accumulators (4x4 and 4x1: 4 rows x 16 columns; 8x1 and 16x1: 8 rows x 8 columns; 1x4: one
 * row x 32 columns, with two accumulator sets taking turns over the block's columns), each X row
 * segment loaded once per block column and reused by the R rows. Any other block shape runs a
 * generic 4-row instance; the batch tail is masked (maskload never touches masked-out lanes).
 * spmm_t keeps the block row's dY vectors in registers and updates each dX row segment once per
 * block column; sddmm computes up to 8 dot products of a block at once and reduces them with one
 * hadd tree. Edge blocks are clipped exactly as in the AVX-512 file.
 */
#include <immintrin.h>

#include "../bsr_geom.h"

#define AI static inline __attribute__((always_inline))

/* Lane mask with the first n (0..8) lanes set, for maskload/maskstore. */
AI __m256i lanes(int64_t n) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)SP_MIN(n, 8)), iota);
}

AI __m256 epi(__m256 v, __m256 bias, sp_act act) {
    v = _mm256_add_ps(v, bias);
    return act == SP_ACT_RELU ? _mm256_max_ps(v, _mm256_setzero_ps()) : v;
}

AI __m256 load_v(const float *p, const bool masked, __m256i m) {
    return masked ? _mm256_maskload_ps(p, m) : _mm256_loadu_ps(p);
}
AI void store_v(float *p, __m256 v, const bool masked, __m256i m) {
    if (masked) _mm256_maskstore_ps(p, m, v);
    else _mm256_storeu_ps(p, v);
}

/* ---- spmm ---------------------------------------------------------------------------------- */

/* Accumulator sets so that at least 8 FMA chains cover the FMA latency (see bsr_avx512.c). */
#define SETS_C(R, NV, BC) ((BC) > 1 && (R) * (NV) < 8 ? ((R) * (NV) >= 4 || (BC) < 4 ? 2 : 4) : 1)
#define SETS_K(R, NV, BC) ((R) * (NV) * SETS_C(R, NV, BC) < 8 ? 2 : 1)

/* acc[q][r][v] += W[r, c] * X[c, 8 v ...] for column c of one block. */
AI void col_fma(__m256 acc[8][8][4], int q, const float *wv, int64_t bc, const float *xb,
                int64_t ldx, int64_t c, const int R, const int NV, const bool MASK, __m256i m) {
    __m256 xv[4];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) xv[v] = load_v(xb + c * ldx + 8 * v, MASK && v == NV - 1, m);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const __m256 wr = _mm256_broadcast_ss(wv + r * bc + c);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[q][r][v] = _mm256_fmadd_ps(wr, xv[v], acc[q][r][v]);
    }
}

/* One whole block of compile-time width BC, columns taking turns over S accumulator sets from
 * set0 (fully unrolled), or, with BC == 0, cn columns of run-time count into set0 (a loop). */
AI void block_fma(__m256 acc[8][8][4], int set0, const int S, const float *wv, int64_t bc,
                  const float *xb, int64_t ldx, const int BC, int64_t cn, const int R,
                  const int NV, const bool MASK, __m256i m) {
    if (BC > 0) {
#pragma GCC unroll 16
        for (int c = 0; c < BC; c++) col_fma(acc, set0 + c % S, wv, bc, xb, ldx, c, R, NV, MASK, m);
    } else {
#pragma GCC unroll 1
        for (int64_t c = 0; c < cn; c++) col_fma(acc, set0, wv, bc, xb, ldx, c, R, NV, MASK, m);
    }
}

/* Y[I*br + r0 + r, b + ...] for r < R (rows inside the matrix only), 8 NV batch columns (the
 * last vector masked by m when MASK). BC > 0: the block width as a compile-time constant. */
AI void spmm_tile(const sp_bsr *w, int64_t I, sp_bsr_brow blk, int64_t r0, const int R, const int BC,
                  const int NV, const bool MASK, __m256i m, const float *x, int64_t ldx,
                  int64_t b, float *y, int64_t ldy, const float *bias, sp_act act) {
    const int S = SETS_C(R, NV, BC), KS = SETS_K(R, NV, BC);
    const int64_t bc = BC > 0 ? BC : w->bc, bs = (int64_t)w->br * bc;
    const float *val = w->val + r0 * bc;
    const int32_t *cidx = w->col_idx;
    const float *xb = x + b;
    __m256 acc[8][8][4];
#pragma GCC unroll 8
    for (int q = 0; q < S * KS; q++)
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[q][r][v] = _mm256_setzero_ps();
    int64_t k = blk.k0;
    if (KS == 2)
        for (; k + 2 <= blk.kf; k += 2) {
            block_fma(acc, 0, S, val + k * bs, bc, xb + (int64_t)cidx[k] * bc * ldx, ldx, BC, bc,
                      R, NV, MASK, m);
            block_fma(acc, S, S, val + (k + 1) * bs, bc, xb + (int64_t)cidx[k + 1] * bc * ldx,
                      ldx, BC, bc, R, NV, MASK, m);
        }
    for (; k < blk.kf; k++)
        block_fma(acc, 0, S, val + k * bs, bc, xb + (int64_t)cidx[k] * bc * ldx, ldx, BC, bc, R,
                  NV, MASK, m);
    if (blk.kf < blk.k1) /* the edge block: a run-time column count */
        block_fma(acc, 0, 1, val + blk.kf * bs, bc, xb + (int64_t)cidx[blk.kf] * bc * ldx, ldx,
                  0, blk.cv_last, R, NV, MASK, m);
    const int64_t i0 = I * w->br + r0, rv = w->rows - i0;
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        if (r >= rv) break;
        const __m256 vb = _mm256_set1_ps(bias ? bias[i0 + r] : 0.0f);
        float *yr = y + (i0 + r) * ldy + b;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            __m256 s = acc[0][r][v];
#pragma GCC unroll 8
            for (int q = 1; q < S * KS; q++) s = _mm256_add_ps(s, acc[q][r][v]);
            store_v(yr + 8 * v, epi(s, vb, act), MASK && v == NV - 1, m);
        }
    }
}

/* Rows [r0, r0 + R) of block row I over the whole batch: full tiles of 8 NV columns, then one
 * masked tile of 1..NV vectors (or, with !WIDE_TAIL, masked tiles of one vector: less code for
 * the generic shapes). */
AI void spmm_chunk(const sp_bsr *w, int64_t I, sp_bsr_brow blk, int64_t r0, const int R, const int BC,
                   const int NV, const bool WIDE_TAIL, const float *x, int64_t ldx,
                   int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    const __m256i all = _mm256_set1_epi32(-1);
    int64_t b = 0;
    for (; b + 8 * NV <= batch; b += 8 * NV)
        spmm_tile(w, I, blk, r0, R, BC, NV, false, all, x, ldx, b, y, ldy, bias, act);
    if (!WIDE_TAIL) {
        for (; b < batch; b += 8)
            spmm_tile(w, I, blk, r0, R, BC, 1, true, lanes(batch - b), x, ldx, b, y, ldy, bias, act);
        return;
    }
    const int64_t rem = batch - b;
    if (rem <= 0) return;
    const __m256i m = lanes(rem - 8 * ((rem - 1) / 8));
    switch ((rem + 7) / 8) {
    case 1: spmm_tile(w, I, blk, r0, R, BC, 1, true, m, x, ldx, b, y, ldy, bias, act); break;
    case 2:
        spmm_tile(w, I, blk, r0, R, BC, NV >= 2 ? 2 : 1, true, m, x, ldx, b, y, ldy, bias, act);
        break;
    case 3:
        spmm_tile(w, I, blk, r0, R, BC, NV >= 3 ? 3 : 1, true, m, x, ldx, b, y, ldy, bias, act);
        break;
    default:
        spmm_tile(w, I, blk, r0, R, BC, NV >= 4 ? 4 : 1, true, m, x, ldx, b, y, ldy, bias, act);
        break;
    }
}

/* A block row whose block height is a multiple of R. */
AI void spmm_brow(const sp_bsr *w, int64_t I, const int R, const int BC, const int NV,
                  const float *x, int64_t ldx, int64_t batch, float *y, int64_t ldy,
                  const float *bias, sp_act act) {
    const sp_bsr_brow blk = sp_bsr_brow_of(w, I);
    const int64_t rv = sp_bsr_rows_in(w, I);
    for (int64_t r0 = 0; r0 < rv; r0 += R)
        spmm_chunk(w, I, blk, r0, R, BC, NV, true, x, ldx, batch, y, ldy, bias, act);
}

/* Any block shape: chunks of 4 rows, then the block's last 1..3 rows. */
static void spmm_brow_generic(const sp_bsr *w, int64_t I, const float *x, int64_t ldx,
                              int64_t batch, float *y, int64_t ldy, const float *bias,
                              sp_act act) {
    const sp_bsr_brow blk = sp_bsr_brow_of(w, I);
    const int64_t rv = sp_bsr_rows_in(w, I), br = w->br;
    int64_t r0 = 0;
    for (; r0 + 4 <= br && r0 < rv; r0 += 4)
        spmm_chunk(w, I, blk, r0, 4, 0, 2, false, x, ldx, batch, y, ldy, bias, act);
    if (r0 >= rv) return;
    switch (br - r0) {
    case 1: spmm_chunk(w, I, blk, r0, 1, 0, 2, false, x, ldx, batch, y, ldy, bias, act); break;
    case 2: spmm_chunk(w, I, blk, r0, 2, 0, 2, false, x, ldx, batch, y, ldy, bias, act); break;
    default: spmm_chunk(w, I, blk, r0, 3, 0, 2, false, x, ldx, batch, y, ldy, bias, act); break;
    }
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Batch 1. */
static void spmv_brow(const sp_bsr *w, int64_t I, const float *x, int64_t ldx, float *y,
                      int64_t ldy, const float *bias, sp_act act) {
    const int64_t br = w->br, bc = w->bc, bs = br * bc, rv = sp_bsr_rows_in(w, I);
    const int64_t k0 = w->row_ptr[I], k1 = w->row_ptr[I + 1];
    const int32_t *ci = w->col_idx;
    if (bc == 1 && (br == 4 || br == 8)) {
        /* 4x1 and 8x1: one FMA per block against a broadcast x value, four chains */
        __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                       _mm256_setzero_ps()};
        const __m256i m = lanes(br);
        int64_t k = k0;
        for (; k + 4 <= k1; k += 4)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++)
                a[u] = _mm256_fmadd_ps(br == 8 ? _mm256_loadu_ps(w->val + (k + u) * 8)
                                               : _mm256_maskload_ps(w->val + (k + u) * 4, m),
                                       _mm256_broadcast_ss(x + (int64_t)ci[k + u] * ldx), a[u]);
        for (; k < k1; k++)
            a[0] = _mm256_fmadd_ps(_mm256_maskload_ps(w->val + k * br, m),
                                   _mm256_broadcast_ss(x + (int64_t)ci[k] * ldx), a[0]);
        float o[8];
        _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
        for (int64_t r = 0; r < rv; r++) y[(I * br + r) * ldy] = sp_epilogue(o[r], bias, I * br + r, act);
        return;
    }
    if (ldx == 1 && bc == 4 && (br == 1 || br == 4)) {
        /* 1x4: two blocks per ymm; 4x4: rows (0,1) and (2,3) against x[j0 .. j0+4) twice */
        const sp_bsr_brow blk = sp_bsr_brow_of(w, I);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int64_t k = blk.k0;
        if (br == 1) {
            for (; k + 2 <= blk.kf; k += 2) {
                const __m256 xv = _mm256_set_m128(_mm_loadu_ps(x + (int64_t)ci[k + 1] * 4),
                                                  _mm_loadu_ps(x + (int64_t)ci[k] * 4));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w->val + k * 4), xv, a0);
            }
        } else {
            for (; k < blk.kf; k++) {
                const __m256 xv = _mm256_broadcast_ps((const __m128 *)(x + (int64_t)ci[k] * 4));
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w->val + k * 16), xv, a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w->val + k * 16 + 8), xv, a1);
            }
        }
        float o[16];
        _mm256_storeu_ps(o, a0);
        _mm256_storeu_ps(o + 8, a1);
        for (int64_t r = 0; r < rv; r++) {
            float s = br == 1 ? hsum(a0) : (o[4 * r] + o[4 * r + 1]) + (o[4 * r + 2] + o[4 * r + 3]);
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
SPMM_SHAPE(spmm_4x1, 4, 1, 2)
SPMM_SHAPE(spmm_4x4, 4, 4, 2)
SPMM_SHAPE(spmm_8x1, 8, 1, 1) /* 8x1 and 16x1 */

void sp_f32_spmm_bsr__avx2(const sp_bsr *w, int64_t br0, int64_t br1, const float *x,
                           int64_t ldx, int64_t batch, float *y, int64_t ldy, const float *bias,
                           sp_act act) {
    const int shape = w->br * 100 + w->bc;
    for (int64_t I = br0; I < br1; I++) {
        if (batch == 1) {
            spmv_brow(w, I, x, ldx, y, ldy, bias, act);
            continue;
        }
        switch (shape) {
        case 104: spmm_1x4(w, I, x, ldx, batch, y, ldy, bias, act); break;
        case 401: spmm_4x1(w, I, x, ldx, batch, y, ldy, bias, act); break;
        case 404: spmm_4x4(w, I, x, ldx, batch, y, ldy, bias, act); break;
        case 801:
        case 1601: spmm_8x1(w, I, x, ldx, batch, y, ldy, bias, act); break;
        default: spmm_brow_generic(w, I, x, ldx, batch, y, ldy, bias, act); break;
        }
    }
}

/* ---- spmm_t -------------------------------------------------------------------------------- */

/* dX[J*bc + c, b ...] += sum_r W[r, c] g[r] for column c of one block. */
AI void t_col(const __m256 g[8][4], const float *wv, int64_t bc, float *db, int64_t lddx,
              int64_t c, const int R, const int NV, const bool MASK, __m256i m) {
    float *d = db + c * lddx;
    __m256 a[4];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) a[v] = load_v(d + 8 * v, MASK && v == NV - 1, m);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        const __m256 wr = _mm256_broadcast_ss(wv + r * bc + c);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) a[v] = _mm256_fmadd_ps(wr, g[r][v], a[v]);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) store_v(d + 8 * v, a[v], MASK && v == NV - 1, m);
}

/* A whole block of compile-time width BC (unrolled), or cn columns of run-time count. */
AI void t_block(const __m256 g[8][4], const float *wv, int64_t bc, float *db, int64_t lddx,
                const int BC, int64_t cn, const int R, const int NV, const bool MASK, __m256i m) {
    if (BC > 0) {
#pragma GCC unroll 16
        for (int c = 0; c < BC; c++) t_col(g, wv, bc, db, lddx, c, R, NV, MASK, m);
    } else {
#pragma GCC unroll 1
        for (int64_t c = 0; c < cn; c++) t_col(g, wv, bc, db, lddx, c, R, NV, MASK, m);
    }
}

/* The blocks of block row I, rows [r0, r0 + R) of the block (nr of them inside the matrix),
 * 8 NV batch columns from b; the R x NV dY vectors are loaded once (zero outside the matrix). */
AI void spmm_t_tile(const sp_bsr *w, int64_t I, int64_t r0, int64_t nr, const int R,
                    const int BC, const int NV, const bool MASK, __m256i m, int64_t b,
                    const float *dy, int64_t lddy, float *dx, int64_t lddx) {
    const int64_t bc = BC > 0 ? BC : w->bc, bs = (int64_t)w->br * bc;
    __m256 g[8][4];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            g[r][v] = _mm256_setzero_ps();
            if (r < nr)
                g[r][v] = load_v(dy + (I * w->br + r0 + r) * lddy + b + 8 * v, MASK && v == NV - 1, m);
        }
    const sp_bsr_brow blk = sp_bsr_brow_of(w, I);
    const float *val = w->val + r0 * bc;
    float *dxb = dx + b;
    for (int64_t k = blk.k0; k < blk.kf; k++)
        t_block(g, val + k * bs, bc, dxb + (int64_t)w->col_idx[k] * bc * lddx, lddx, BC, bc, R,
                NV, MASK, m);
    if (blk.kf < blk.k1)
        t_block(g, val + blk.kf * bs, bc, dxb + (int64_t)w->col_idx[blk.kf] * bc * lddx, lddx, 0,
                blk.cv_last, R, NV, MASK, m);
}

/* Batch columns [b0, b1) for the row chunk [r0, r0 + R) of every block row. */
AI void spmm_t_chunk(const sp_bsr *w, int64_t r0, const int R, const int BC, const int NV,
                     int64_t b0, int64_t b1, const float *dy, int64_t lddy, float *dx,
                     int64_t lddx) {
    const __m256i all = _mm256_set1_epi32(-1);
    int64_t b = b0;
    for (; b + 8 * NV <= b1; b += 8 * NV)
        for (int64_t I = 0; I < w->brows; I++) {
            const int64_t nr = sp_bsr_rows_in(w, I) - r0;
            if (nr > 0) spmm_t_tile(w, I, r0, nr, R, BC, NV, false, all, b, dy, lddy, dx, lddx);
        }
    for (; b < b1; b += 8) {
        const __m256i m = lanes(b1 - b);
        for (int64_t I = 0; I < w->brows; I++) {
            const int64_t nr = sp_bsr_rows_in(w, I) - r0;
            if (nr > 0) spmm_t_tile(w, I, r0, nr, R, BC, 1, true, m, b, dy, lddy, dx, lddx);
        }
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
    for (; r0 + 4 <= w->br; r0 += 4) spmm_t_chunk(w, r0, 4, 0, 2, b0, b1, dy, lddy, dx, lddx);
    switch (w->br - r0) {
    case 0: break;
    case 1: spmm_t_chunk(w, r0, 1, 0, 2, b0, b1, dy, lddy, dx, lddx); break;
    case 2: spmm_t_chunk(w, r0, 2, 0, 2, b0, b1, dy, lddy, dx, lddx); break;
    default: spmm_t_chunk(w, r0, 3, 0, 2, b0, b1, dy, lddy, dx, lddx); break;
    }
}

#define SPMM_T_SHAPE(name_, R_, BC_, NV_)                                                        \
    static __attribute__((noinline)) void name_(const sp_bsr *w, int64_t b0, int64_t b1,         \
                                                const float *dy, int64_t lddy, float *dx,        \
                                                int64_t lddx) {                                  \
        spmm_t_shape(w, R_, BC_, NV_, b0, b1, dy, lddy, dx, lddx);                                \
    }
SPMM_T_SHAPE(spmm_t_1x4, 1, 4, 4)
SPMM_T_SHAPE(spmm_t_4x1, 4, 1, 2)
SPMM_T_SHAPE(spmm_t_4x4, 4, 4, 2)
SPMM_T_SHAPE(spmm_t_8x1, 8, 1, 1) /* 8x1 and 16x1 */

void sp_f32_spmm_t_bsr__avx2(const sp_bsr *w, int64_t b0, int64_t b1, const float *dy,
                             int64_t lddy, float *dx, int64_t lddx) {
    switch (w->br * 100 + w->bc) {
    case 104: spmm_t_1x4(w, b0, b1, dy, lddy, dx, lddx); break;
    case 401: spmm_t_4x1(w, b0, b1, dy, lddy, dx, lddx); break;
    case 404: spmm_t_4x4(w, b0, b1, dy, lddy, dx, lddx); break;
    case 801:
    case 1601: spmm_t_8x1(w, b0, b1, dy, lddy, dx, lddx); break;
    default: spmm_t_generic(w, b0, b1, dy, lddy, dx, lddx); break;
    }
}

/* ---- sddmm --------------------------------------------------------------------------------- */

/* out[n] = sum of the 8 lanes of v[n], n < 8. */
AI __m256 reduce8(const __m256 v[8]) {
    const __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
    const __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3); /* per 128-bit half */
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* out[r*C + c] = dY[r, :] . X[c, :] for r < R, c < C (R*C <= 8), written to dv[r*ldv + c]
 * (+= when accumulating). */
AI void sddmm_tile(const float *g, int64_t lddy, const float *xr, int64_t ldx, int64_t batch,
                   const int R, const int C, float *dv, int64_t ldv, bool accumulate) {
    __m256 acc[8];
#pragma GCC unroll 8
    for (int n = 0; n < 8; n++) acc[n] = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 8 <= batch; b += 8) {
        __m256 xv[8];
#pragma GCC unroll 8
        for (int c = 0; c < C; c++) xv[c] = _mm256_loadu_ps(xr + c * ldx + b);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m256 gr = _mm256_loadu_ps(g + r * lddy + b);
#pragma GCC unroll 8
            for (int c = 0; c < C; c++) acc[r * C + c] = _mm256_fmadd_ps(gr, xv[c], acc[r * C + c]);
        }
    }
    if (b < batch) {
        const __m256i m = lanes(batch - b);
        __m256 xv[8];
#pragma GCC unroll 8
        for (int c = 0; c < C; c++) xv[c] = _mm256_maskload_ps(xr + c * ldx + b, m);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m256 gr = _mm256_maskload_ps(g + r * lddy + b, m);
#pragma GCC unroll 8
            for (int c = 0; c < C; c++) acc[r * C + c] = _mm256_fmadd_ps(gr, xv[c], acc[r * C + c]);
        }
    }
    float out[8];
    _mm256_storeu_ps(out, reduce8(acc));
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int c = 0; c < C; c++)
            dv[r * ldv + c] = accumulate ? dv[r * ldv + c] + out[r * C + c] : out[r * C + c];
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

/* Whole blocks of R0 x C in row chunks of R (R*C <= 8); edge blocks go the generic way. */
AI void sddmm_shape(const sp_bsr *w, int64_t br0, int64_t br1, const int R0, const int R,
                    const int C, const float *dy, int64_t lddy, const float *x, int64_t ldx,
                    int64_t batch, float *dval, bool accumulate) {
    const int64_t bs = (int64_t)R0 * C;
    for (int64_t I = br0; I < br1; I++) {
        const sp_bsr_brow blk = sp_bsr_brow_of(w, I);
        const bool full_rows = sp_bsr_rows_in(w, I) == R0;
        for (int64_t k = blk.k0; k < blk.k1; k++) {
            if (!full_rows || k >= blk.kf) {
                sddmm_block_generic(w, I, k, dy, lddy, x, ldx, batch, dval + k * bs, accumulate);
                continue;
            }
            const float *xr = x + (int64_t)w->col_idx[k] * C * ldx;
            for (int r0 = 0; r0 < R0; r0 += R)
                sddmm_tile(dy + (I * R0 + r0) * lddy, lddy, xr, ldx, batch, R, C,
                           dval + k * bs + r0 * C, C, accumulate);
        }
    }
}

#define SDDMM_SHAPE(name_, R0_, R_, C_)                                                          \
    static __attribute__((noinline)) void name_(const sp_bsr *w, int64_t br0, int64_t br1,       \
                                                const float *dy, int64_t lddy, const float *x,   \
                                                int64_t ldx, int64_t batch, float *dval,         \
                                                bool accumulate) {                               \
        sddmm_shape(w, br0, br1, R0_, R_, C_, dy, lddy, x, ldx, batch, dval, accumulate);        \
    }
SDDMM_SHAPE(sddmm_1x4, 1, 1, 4)
SDDMM_SHAPE(sddmm_4x1, 4, 4, 1)
SDDMM_SHAPE(sddmm_4x4, 4, 2, 4)
SDDMM_SHAPE(sddmm_8x1, 8, 8, 1)
SDDMM_SHAPE(sddmm_16x1, 16, 8, 1)

void sp_f32_sddmm_bsr__avx2(const sp_bsr *w, int64_t br0, int64_t br1, const float *dy,
                            int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                            float *dval, bool accumulate) {
    switch (w->br * 100 + w->bc) {
    case 104: sddmm_1x4(w, br0, br1, dy, lddy, x, ldx, batch, dval, accumulate); return;
    case 401: sddmm_4x1(w, br0, br1, dy, lddy, x, ldx, batch, dval, accumulate); return;
    case 404: sddmm_4x4(w, br0, br1, dy, lddy, x, ldx, batch, dval, accumulate); return;
    case 801: sddmm_8x1(w, br0, br1, dy, lddy, x, ldx, batch, dval, accumulate); return;
    case 1601: sddmm_16x1(w, br0, br1, dy, lddy, x, ldx, batch, dval, accumulate); return;
    default: break;
    }
    const int64_t bs = (int64_t)w->br * w->bc;
    for (int64_t I = br0; I < br1; I++)
        for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++)
            sddmm_block_generic(w, I, k, dy, lddy, x, ldx, batch, dval + k * bs, accumulate);
}
