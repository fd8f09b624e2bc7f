/*
 * bsr_avx512.c - AVX-512 BSR kernels (compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl).
 *
 * spmm, batch >= 2: a tile is R rows of a block row times NV zmm vectors (16 NV batch columns)
 * of accumulators. For each stored block and each of its bc columns, one row segment of X is
 * loaded (NV loads) and reused by the R rows from registers (R broadcasts, R*NV FMAs): that
 * reuse is what blocks buy over CSR, where every loaded X row feeds a single output row. R, the
 * block width and NV are compile-time constants in the specialised instances (1x4, 4x1, 4x4,
 * 8x1, 16x1), so the tile is fully unrolled into registers; any other block shape runs the
 * generic instance (4-row chunks, block width read at run time). The last batch tile is masked.
 * spmm, batch 1 (SpMV): a block of at most 16 values is one zmm FMA against x permuted to the
 * block's layout (contiguous x) or a broadcast x value (width-1 blocks); its speed is set by the
 * bytes of W streamed.
 * spmm_t: the dY rows of a block row stay in registers while each block column reads, updates
 * and writes its dX row segment once. sddmm: all R x C dot products of a block at once (R + C
 * loads for R*C FMAs per 16 batch columns), then one transposing reduction of the <= 16
 * accumulators into the block's contiguous values.
 *
 * Edge blocks are clipped to the matrix: the last block of a block row may stick out of the
 * matrix and is run with its valid column count; rows past the matrix are computed (their
 * weights are zero padding) but never stored, and dY rows past it are never loaded.
 */
#include <immintrin.h>

#include "../bsr_geom.h"

#define AI static inline __attribute__((always_inline))

/* The first n lanes (n >= 16: all). */
AI __mmask16 lanes(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

AI __m512 epi(__m512 v, __m512 bias, sp_act act) {
    v = _mm512_add_ps(v, bias);
    return act == SP_ACT_RELU ? _mm512_max_ps(v, _mm512_setzero_ps()) : v;
}

/* ---- spmm ---------------------------------------------------------------------------------- */

/* Independent accumulator sets for a tile of R x NV vectors, so that at least 8 FMA chains
 * cover the FMA latency: SETS_C sets take turns over the columns of a block (compile-time
 * width only), SETS_K sets over alternate blocks. */
#define SETS_C(R, NV, BC) ((BC) > 1 && (R) * (NV) < 8 ? ((R) * (NV) >= 4 || (BC) < 4 ? 2 : 4) : 1)
#define SETS_K(R, NV, BC) ((R) * (NV) * SETS_C(R, NV, BC) < 8 ? 2 : 1)

/* acc[q][r][v] += W[r, c] * X[c, 16 v ...] for column c of one block: wv points at the
 * block's row r0, xb at X[first column of the block, b]. */
AI void col_fma(__m512 acc[8][16][4], int q, const float *wv, int64_t bc, const float *xb,
                int64_t ldx, int64_t c, const int R, const int NV, const bool MASK, __mmask16 m) {
    __m512 xv[4];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        xv[v] = (MASK && v == NV - 1) ? _mm512_maskz_loadu_ps(m, xb + c * ldx + 16 * v)
                                      : _mm512_loadu_ps(xb + c * ldx + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        const __m512 wr = _mm512_set1_ps(wv[r * bc + c]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[q][r][v] = _mm512_fmadd_ps(wr, xv[v], acc[q][r][v]);
    }
}

/* One whole block of compile-time width BC, columns taking turns over S accumulator sets from
 * set0 (fully unrolled), or, with BC == 0, cn columns of run-time count into set0 (a loop). */
AI void block_fma(__m512 acc[8][16][4], int set0, const int S, const float *wv, int64_t bc,
                  const float *xb, int64_t ldx, const int BC, int64_t cn, const int R,
                  const int NV, const bool MASK, __mmask16 m) {
    if (BC > 0) {
#pragma GCC unroll 16
        for (int c = 0; c < BC; c++) col_fma(acc, set0 + c % S, wv, bc, xb, ldx, c, R, NV, MASK, m);
    } else {
#pragma GCC unroll 1
        for (int64_t c = 0; c < cn; c++) col_fma(acc, set0, wv, bc, xb, ldx, c, R, NV, MASK, m);
    }
}

/* Y[I*br + r0 + r, b + ...] for r < R (rows inside the matrix only), 16 NV batch columns (the
 * last vector masked by m when MASK). BC > 0: the block width as a compile-time constant. */
AI void spmm_tile(const sp_bsr *w, int64_t I, sp_bsr_brow blk, int64_t r0, const int R, const int BC,
                  const int NV, const bool MASK, __mmask16 m, const float *x, int64_t ldx,
                  int64_t b, float *y, int64_t ldy, const float *bias, sp_act act) {
    const int S = SETS_C(R, NV, BC), KS = SETS_K(R, NV, BC);
    const int64_t bc = BC > 0 ? BC : w->bc, bs = (int64_t)w->br * bc;
    const float *val = w->val + r0 * bc;
    const int32_t *cidx = w->col_idx;
    const float *xb = x + b;
    __m512 acc[8][16][4];
#pragma GCC unroll 8
    for (int q = 0; q < S * KS; q++)
#pragma GCC unroll 16
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[q][r][v] = _mm512_setzero_ps();
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
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        if (r >= rv) break;
        const __m512 vb = _mm512_set1_ps(bias ? bias[i0 + r] : 0.0f);
        float *yr = y + (i0 + r) * ldy + b;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            __m512 s = acc[0][r][v];
#pragma GCC unroll 8
            for (int q = 1; q < S * KS; q++) s = _mm512_add_ps(s, acc[q][r][v]);
            s = epi(s, vb, act);
            if (MASK && v == NV - 1) _mm512_mask_storeu_ps(yr + 16 * v, m, s);
            else _mm512_storeu_ps(yr + 16 * v, s);
        }
    }
}

/* Rows [r0, r0 + R) of block row I over the whole batch: full tiles of 16 NV columns, then one
 * masked tile of 1..NV vectors (or, with !WIDE_TAIL, masked tiles of one vector: less code for
 * the generic shapes). */
AI void spmm_chunk(const sp_bsr *w, int64_t I, sp_bsr_brow blk, int64_t r0, const int R, const int BC,
                   const int NV, const bool WIDE_TAIL, const float *x, int64_t ldx,
                   int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    int64_t b = 0;
    for (; b + 16 * NV <= batch; b += 16 * NV)
        spmm_tile(w, I, blk, r0, R, BC, NV, false, 0xFFFF, x, ldx, b, y, ldy, bias, act);
    if (!WIDE_TAIL) {
        for (; b < batch; b += 16)
            spmm_tile(w, I, blk, r0, R, BC, 1, true, lanes(batch - b), x, ldx, b, y, ldy, bias, act);
        return;
    }
    const int64_t rem = batch - b;
    if (rem <= 0) return;
    const __mmask16 m = lanes(rem - 16 * ((rem - 1) / 16));
    switch ((rem + 15) / 16) {
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
        spmm_chunk(w, I, blk, r0, 4, 0, 4, false, x, ldx, batch, y, ldy, bias, act);
    if (r0 >= rv) return;
    switch (br - r0) {
    case 1: spmm_chunk(w, I, blk, r0, 1, 0, 4, false, x, ldx, batch, y, ldy, bias, act); break;
    case 2: spmm_chunk(w, I, blk, r0, 2, 0, 4, false, x, ldx, batch, y, ldy, bias, act); break;
    default: spmm_chunk(w, I, blk, r0, 3, 0, 4, false, x, ldx, batch, y, ldy, bias, act); break;
    }
}

/* Batch 1. */
static void spmv_brow(const sp_bsr *w, int64_t I, const float *x, int64_t ldx, float *y,
                      int64_t ldy, const float *bias, sp_act act) {
    const int64_t br = w->br, bc = w->bc, bs = br * bc, rv = sp_bsr_rows_in(w, I);
    const int64_t k0 = w->row_ptr[I], k1 = w->row_ptr[I + 1];
    float out[64];
    if (bc == 1 && br == 4) {
        /* 4x1: one xmm FMA per block, four chains */
        __m128 a[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
        int64_t k = k0;
        for (; k + 4 <= k1; k += 4)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++)
                a[u] = _mm_fmadd_ps(_mm_loadu_ps(w->val + (k + u) * 4),
                                    _mm_set1_ps(x[(int64_t)w->col_idx[k + u] * ldx]), a[u]);
        for (; k < k1; k++)
            a[0] = _mm_fmadd_ps(_mm_loadu_ps(w->val + k * 4),
                                _mm_set1_ps(x[(int64_t)w->col_idx[k] * ldx]), a[0]);
        float o[4];
        _mm_storeu_ps(o, _mm_add_ps(_mm_add_ps(a[0], a[1]), _mm_add_ps(a[2], a[3])));
        for (int64_t r = 0; r < rv; r++)
            y[(I * 4 + r) * ldy] = sp_epilogue(o[r], bias, I * 4 + r, act);
        return;
    }
    if (bc == 1 && br == 8) {
        /* 8x1: one ymm FMA per block, four chains */
        __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                       _mm256_setzero_ps()};
        int64_t k = k0;
        for (; k + 4 <= k1; k += 4)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++)
                a[u] = _mm256_fmadd_ps(_mm256_loadu_ps(w->val + (k + u) * 8),
                                       _mm256_set1_ps(x[(int64_t)w->col_idx[k + u] * ldx]), a[u]);
        for (; k < k1; k++)
            a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w->val + k * 8),
                                   _mm256_set1_ps(x[(int64_t)w->col_idx[k] * ldx]), a[0]);
        float o[8];
        _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
        for (int64_t r = 0; r < rv; r++)
            y[(I * 8 + r) * ldy] = sp_epilogue(o[r], bias, I * 8 + r, act);
        return;
    }
    if (bc == 1) {
        /* width-1 blocks: 16 rows at a time, one broadcast x value per block */
        for (int64_t r0 = 0; r0 < rv; r0 += 16) {
            const __mmask16 m = lanes(br - r0);
            __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                           _mm512_setzero_ps()};
            int64_t k = k0;
            for (; k + 4 <= k1; k += 4)
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++)
                    a[u] = _mm512_fmadd_ps(
                        _mm512_maskz_loadu_ps(m, w->val + (k + u) * bs + r0),
                        _mm512_set1_ps(x[(int64_t)w->col_idx[k + u] * ldx]), a[u]);
            for (; k < k1; k++)
                a[0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w->val + k * bs + r0),
                                       _mm512_set1_ps(x[(int64_t)w->col_idx[k] * ldx]), a[0]);
            _mm512_storeu_ps(out + r0 % 64,
                             _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
            for (int64_t r = r0; r < SP_MIN(rv, r0 + 16); r++)
                y[(I * br + r) * ldy] = sp_epilogue(out[r % 64], bias, I * br + r, act);
        }
        return;
    }
    if (ldx == 1 && bc == 4 && (br == 1 || br == 4)) {
        /* 1x4: four blocks per zmm; 4x4: one block per zmm, x[j0 .. j0+4) in every 128-bit lane.
         * Lane r*4 + c of a 4x4 block holds W[r, c] * x[c]. */
        const sp_bsr_brow blk = sp_bsr_brow_of(w, I);
        const int32_t *ci = w->col_idx;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        int64_t k = blk.k0;
        if (br == 1) {
            for (; k + 8 <= blk.kf; k += 8) {
                __m512 x0 = _mm512_castps128_ps512(_mm_loadu_ps(x + (int64_t)ci[k] * 4));
                __m512 x1 = _mm512_castps128_ps512(_mm_loadu_ps(x + (int64_t)ci[k + 4] * 4));
                x0 = _mm512_insertf32x4(x0, _mm_loadu_ps(x + (int64_t)ci[k + 1] * 4), 1);
                x1 = _mm512_insertf32x4(x1, _mm_loadu_ps(x + (int64_t)ci[k + 5] * 4), 1);
                x0 = _mm512_insertf32x4(x0, _mm_loadu_ps(x + (int64_t)ci[k + 2] * 4), 2);
                x1 = _mm512_insertf32x4(x1, _mm_loadu_ps(x + (int64_t)ci[k + 6] * 4), 2);
                x0 = _mm512_insertf32x4(x0, _mm_loadu_ps(x + (int64_t)ci[k + 3] * 4), 3);
                x1 = _mm512_insertf32x4(x1, _mm_loadu_ps(x + (int64_t)ci[k + 7] * 4), 3);
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w->val + k * 4), x0, a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w->val + k * 4 + 16), x1, a1);
            }
            __m128 s0 = _mm_setzero_ps(), s1 = s0;
            for (; k < blk.kf; k++)
                s0 = _mm_fmadd_ps(_mm_loadu_ps(w->val + k * 4),
                                  _mm_loadu_ps(x + (int64_t)ci[k] * 4), s0);
            if (blk.kf < blk.k1) {
                const __mmask8 m = (__mmask8)lanes(blk.cv_last);
                s1 = _mm_mul_ps(_mm_loadu_ps(w->val + blk.kf * 4),
                                _mm_maskz_loadu_ps(m, x + (int64_t)ci[blk.kf] * 4));
            }
            const float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) +
                            _mm512_reduce_add_ps(_mm512_castps128_ps512(_mm_add_ps(s0, s1)));
            y[I * ldy] = sp_epilogue(s, bias, I, act);
            return;
        }
        for (; k + 2 <= blk.kf; k += 2) {
            const __m128 x0 = _mm_loadu_ps(x + (int64_t)ci[k] * 4);
            const __m128 x1 = _mm_loadu_ps(x + (int64_t)ci[k + 1] * 4);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w->val + k * 16), _mm512_broadcast_f32x4(x0), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w->val + (k + 1) * 16), _mm512_broadcast_f32x4(x1),
                                 a1);
        }
        for (; k < blk.k1; k++) {
            const __mmask8 m = (__mmask8)lanes(k < blk.kf ? 4 : blk.cv_last);
            const __m128 x0 = _mm_maskz_loadu_ps(m, x + (int64_t)ci[k] * 4);
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w->val + k * 16), _mm512_broadcast_f32x4(x0), a0);
        }
        float o[16];
        _mm512_storeu_ps(o, _mm512_add_ps(a0, a1));
        for (int64_t r = 0; r < rv; r++) {
            const float s = (o[4 * r] + o[4 * r + 1]) + (o[4 * r + 2] + o[4 * r + 3]);
            y[(I * br + r) * ldy] = sp_epilogue(s, bias, I * br + r, act);
        }
        return;
    }
    if (ldx == 1 && bs <= 16) {
        /* small blocks over contiguous x: lane r*bc + c of the block holds W[r, c] * x[c] */
        int32_t pat[16];
        for (int l = 0; l < 16; l++) pat[l] = (int32_t)(l % bc);
        const __m512i idx = _mm512_loadu_si512(pat);
        const __mmask16 mw = lanes(bs);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        int64_t k = k0;
        for (; k + 2 <= k1; k += 2) {
            const float *x0 = x + (int64_t)w->col_idx[k] * bc;
            const float *x1 = x + (int64_t)w->col_idx[k + 1] * bc;
            const __mmask16 m0 = lanes(sp_bsr_cols_in(w, w->col_idx[k]));
            const __mmask16 m1 = lanes(sp_bsr_cols_in(w, w->col_idx[k + 1]));
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mw, w->val + k * bs),
                                 _mm512_permutexvar_ps(idx, _mm512_maskz_loadu_ps(m0, x0)), a0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mw, w->val + (k + 1) * bs),
                                 _mm512_permutexvar_ps(idx, _mm512_maskz_loadu_ps(m1, x1)), a1);
        }
        if (k < k1) {
            const __m512 xv = _mm512_maskz_loadu_ps(lanes(sp_bsr_cols_in(w, w->col_idx[k])),
                                                    x + (int64_t)w->col_idx[k] * bc);
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mw, w->val + k * bs),
                                 _mm512_permutexvar_ps(idx, xv), a0);
        }
        _mm512_storeu_ps(out, _mm512_add_ps(a0, a1));
        for (int64_t r = 0; r < rv; r++) {
            float s = 0.0f;
            for (int64_t c = 0; c < bc; c++) s += out[r * bc + c];
            y[(I * br + r) * ldy] = sp_epilogue(s, bias, I * br + r, act);
        }
        return;
    }
    /* any other shape: per block row of the block, a dot with the block's slice of x */
    float xs[64];
    for (int64_t r = 0; r < rv; r++) out[r] = 0.0f;
    for (int64_t k = k0; k < k1; k++) {
        const int64_t J = w->col_idx[k], cv = sp_bsr_cols_in(w, J);
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
SPMM_SHAPE(spmm_4x1, 4, 1, 4)  /* also 8x1 at batch >= 48: two 4-row chunks of 64 columns */
SPMM_SHAPE(spmm_4x4, 4, 4, 4)
SPMM_SHAPE(spmm_8x1, 8, 1, 1)  /* 8x1 at small batch: one 8-row tile */
SPMM_SHAPE(spmm_16x1, 16, 1, 1)

void sp_f32_spmm_bsr__avx512(const sp_bsr *w, int64_t br0, int64_t br1, const float *x,
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
            if (batch >= 48) spmm_4x1(w, I, x, ldx, batch, y, ldy, bias, act);
            else spmm_8x1(w, I, x, ldx, batch, y, ldy, bias, act);
            break;
        case 1601: spmm_16x1(w, I, x, ldx, batch, y, ldy, bias, act); break;
        default: spmm_brow_generic(w, I, x, ldx, batch, y, ldy, bias, act); break;
        }
    }
}

/* ---- spmm_t -------------------------------------------------------------------------------- */

/* dX[J*bc + c, b ...] += sum_r W[r, c] g[r] for column c of one block: the dX row segment is
 * read and written once. */
AI void t_col(const __m512 g[16][4], const float *wv, int64_t bc, float *db, int64_t lddx,
              int64_t c, const int R, const int NV, const bool MASK, __mmask16 m) {
    float *d = db + c * lddx;
    __m512 a[4];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++)
        a[v] = (MASK && v == NV - 1) ? _mm512_maskz_loadu_ps(m, d + 16 * v) : _mm512_loadu_ps(d + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
        const __m512 wr = _mm512_set1_ps(wv[r * bc + c]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) a[v] = _mm512_fmadd_ps(wr, g[r][v], a[v]);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        if (MASK && v == NV - 1) _mm512_mask_storeu_ps(d + 16 * v, m, a[v]);
        else _mm512_storeu_ps(d + 16 * v, a[v]);
    }
}

/* A whole block of compile-time width BC (unrolled), or cn columns of run-time count. */
AI void t_block(const __m512 g[16][4], const float *wv, int64_t bc, float *db, int64_t lddx,
                const int BC, int64_t cn, const int R, const int NV, const bool MASK,
                __mmask16 m) {
    if (BC > 0) {
#pragma GCC unroll 16
        for (int c = 0; c < BC; c++) t_col(g, wv, bc, db, lddx, c, R, NV, MASK, m);
    } else {
#pragma GCC unroll 1
        for (int64_t c = 0; c < cn; c++) t_col(g, wv, bc, db, lddx, c, R, NV, MASK, m);
    }
}

/* The blocks of block row I, rows [r0, r0 + R) of the block (nr of them inside the matrix),
 * 16 NV batch columns from b. The R x NV dY vectors are loaded once (zero outside the matrix). */
AI void spmm_t_tile(const sp_bsr *w, int64_t I, int64_t r0, int64_t nr, const int R,
                    const int BC, const int NV, const bool MASK, __mmask16 m, int64_t b,
                    const float *dy, int64_t lddy, float *dx, int64_t lddx) {
    const int64_t bc = BC > 0 ? BC : w->bc, bs = (int64_t)w->br * bc;
    __m512 g[16][4];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            const __mmask16 mv = (MASK && v == NV - 1) ? m : (__mmask16)0xFFFF;
            g[r][v] = _mm512_setzero_ps();
            if (r < nr) g[r][v] = _mm512_maskz_loadu_ps(mv, dy + (I * w->br + r0 + r) * lddy + b + 16 * v);
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
    int64_t b = b0;
    for (; b + 16 * NV <= b1; b += 16 * NV)
        for (int64_t I = 0; I < w->brows; I++) {
            const int64_t nr = sp_bsr_rows_in(w, I) - r0;
            if (nr > 0) spmm_t_tile(w, I, r0, nr, R, BC, NV, false, 0xFFFF, b, dy, lddy, dx, lddx);
        }
    for (; b < b1; b += 16) {
        const __mmask16 m = lanes(b1 - b);
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
    for (; r0 + 4 <= w->br; r0 += 4) spmm_t_chunk(w, r0, 4, 0, 4, b0, b1, dy, lddy, dx, lddx);
    switch (w->br - r0) {
    case 0: break;
    case 1: spmm_t_chunk(w, r0, 1, 0, 4, b0, b1, dy, lddy, dx, lddx); break;
    case 2: spmm_t_chunk(w, r0, 2, 0, 4, b0, b1, dy, lddy, dx, lddx); break;
    default: spmm_t_chunk(w, r0, 3, 0, 4, b0, b1, dy, lddy, dx, lddx); break;
    }
}

#define SPMM_T_SHAPE(name_, R_, BC_, NV_)                                                        \
    static __attribute__((noinline)) void name_(const sp_bsr *w, int64_t b0, int64_t b1,         \
                                                const float *dy, int64_t lddy, float *dx,        \
                                                int64_t lddx) {                                  \
        spmm_t_shape(w, R_, BC_, NV_, b0, b1, dy, lddy, dx, lddx);                                \
    }
SPMM_T_SHAPE(spmm_t_1x4, 1, 4, 4)
SPMM_T_SHAPE(spmm_t_4x1, 4, 1, 4)
SPMM_T_SHAPE(spmm_t_4x4, 4, 4, 4)
SPMM_T_SHAPE(spmm_t_8x1, 8, 1, 2)
SPMM_T_SHAPE(spmm_t_16x1, 16, 1, 1)

void sp_f32_spmm_t_bsr__avx512(const sp_bsr *w, int64_t b0, int64_t b1, const float *dy,
                               int64_t lddy, float *dx, int64_t lddx) {
    switch (w->br * 100 + w->bc) {
    case 104: spmm_t_1x4(w, b0, b1, dy, lddy, dx, lddx); break;
    case 401: spmm_t_4x1(w, b0, b1, dy, lddy, dx, lddx); break;
    case 404: spmm_t_4x4(w, b0, b1, dy, lddy, dx, lddx); break;
    case 801: spmm_t_8x1(w, b0, b1, dy, lddy, dx, lddx); break;
    case 1601: spmm_t_16x1(w, b0, b1, dy, lddy, dx, lddx); break;
    default: spmm_t_generic(w, b0, b1, dy, lddy, dx, lddx); break;
    }
}

/* ---- sddmm --------------------------------------------------------------------------------- */

/* out[n] = sum of the 16 lanes of v[n], n < 16: a transposing tree of 15 adds. */
AI __m512 reduce16(const __m512 v[16]) {
    __m512 a[8], b4[4], c2[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) /* lanes 0-7: v[2i] halves summed, 8-15: v[2i+1] */
        a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) /* 128-bit lane L: 4 partials of v[4j + L] */
        b4[j] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0x88),
                              _mm512_shuffle_f32x4(a[2 * j], a[2 * j + 1], 0xDD));
#pragma GCC unroll 2
    for (int k = 0; k < 2; k++) /* lane L: 2 partials of v[8k + L], 2 of v[8k + 4 + L] */
        c2[k] = _mm512_add_ps(_mm512_shuffle_ps(b4[2 * k], b4[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_ps(b4[2 * k], b4[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* lane L, element e: the sum of v[4e + L] */
    __m512 d = _mm512_add_ps(_mm512_shuffle_ps(c2[0], c2[1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(c2[0], c2[1], _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, d);
}

/* out[r*C + c] = dY[r, :] . X[c, :] for r < R, c < C (R*C <= 16), g and xr at the first rows;
 * written to dv[r*ldv + c] (+= when accumulating). */
AI void sddmm_tile(const float *g, int64_t lddy, const float *xr, int64_t ldx, int64_t batch,
                   const int R, const int C, float *dv, int64_t ldv, bool accumulate) {
    __m512 acc[16];
#pragma GCC unroll 16
    for (int n = 0; n < 16; n++) acc[n] = _mm512_setzero_ps();
    for (int64_t b = 0; b < batch; b += 16) {
        const __mmask16 m = lanes(batch - b);
        __m512 xv[16];
#pragma GCC unroll 16
        for (int c = 0; c < C; c++) xv[c] = _mm512_maskz_loadu_ps(m, xr + c * ldx + b);
#pragma GCC unroll 16
        for (int r = 0; r < R; r++) {
            const __m512 gr = _mm512_maskz_loadu_ps(m, g + r * lddy + b);
#pragma GCC unroll 16
            for (int c = 0; c < C; c++) acc[r * C + c] = _mm512_fmadd_ps(gr, xv[c], acc[r * C + c]);
        }
    }
    const __m512 s = reduce16(acc);
    if (ldv == C) {
        const __mmask16 mo = lanes(R * C);
        _mm512_mask_storeu_ps(dv, mo, accumulate ? _mm512_add_ps(s, _mm512_maskz_loadu_ps(mo, dv)) : s);
        return;
    }
    float out[16];
    _mm512_storeu_ps(out, s);
    for (int r = 0; r < R; r++)
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

#define SDDMM_SHAPE(name_, R_, C_)                                                               \
    static __attribute__((noinline)) void name_(const sp_bsr *w, int64_t br0, int64_t br1,       \
                                                const float *dy, int64_t lddy, const float *x,   \
                                                int64_t ldx, int64_t batch, float *dval,         \
                                                bool accumulate) {                               \
        sddmm_shape(w, br0, br1, R_, C_, dy, lddy, x, ldx, batch, dval, accumulate);             \
    }
SDDMM_SHAPE(sddmm_1x4, 1, 4)
SDDMM_SHAPE(sddmm_4x1, 4, 1)
SDDMM_SHAPE(sddmm_4x4, 4, 4)
SDDMM_SHAPE(sddmm_8x1, 8, 1)
SDDMM_SHAPE(sddmm_16x1, 16, 1)

void sp_f32_sddmm_bsr__avx512(const sp_bsr *w, int64_t br0, int64_t br1, const float *dy,
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
