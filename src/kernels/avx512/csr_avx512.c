/*
 * csr_avx512.c - AVX-512 CSR kernels (compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl).
 *
 * spmm, batch >= 2: for each output row, tiles of 64/32/16 batch columns (4/2/1 zmm
 * accumulators) and a masked tail; each nonzero is one broadcast and one FMA per zmm over a
 * contiguous row of X (the feature-major layout makes that row contiguous). The 16-wide tile
 * unrolls the nonzeros 4 ways so that four independent FMA chains hide the FMA latency.
 * spmm, batch 1 (SpMV): the shared scalar row dot of csr_spmv.h, faster here than gathers.
 */
#include <immintrin.h>

#include "../csr_spmv.h"

static inline __attribute__((always_inline)) int64_t col_at(const sp_csr *w, int64_t k, bool wide) {
    return wide ? (int64_t)w->col_idx[k] : (int64_t)w->col_idx16[k];
}

#define PF 8 /* prefetch distance in stored entries */

static inline __attribute__((always_inline)) __m512 epi(__m512 v, __m512 bias, sp_act act) {
    v = _mm512_add_ps(v, bias);
    return act == SP_ACT_RELU ? _mm512_max_ps(v, _mm512_setzero_ps()) : v;
}

static inline __attribute__((always_inline)) void spmm_rows(const sp_csr *w, int64_t r0,
                                                            int64_t r1, const float *x, int64_t ldx,
                                                            int64_t batch, float *y, int64_t ldy,
                                                            const float *bias, sp_act act,
                                                            bool wide) {
    const float *val = w->val;
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        float *yr = y + i * ldy;
        if (batch == 1) {
            yr[0] = sp_epilogue(sp_csr_row_dot(w, k0, k1, x, ldx), bias, i, act);
            continue;
        }
        const __m512 vb = _mm512_set1_ps(bias ? bias[i] : 0.0f);
        int64_t b = 0;
        for (; b + 64 <= batch; b += 64) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            int64_t k = k0;
            /* prefetch the X rows of the entry PF ahead: the rows are scattered, so the
             * hardware prefetcher cannot, and each costs four cache lines (+3-5% measured) */
            for (; k + PF < k1; k++) {
                const char *pf = (const char *)(x + col_at(w, k + PF, wide) * ldx + b);
                _mm_prefetch(pf, _MM_HINT_T0);
                _mm_prefetch(pf + 64, _MM_HINT_T0);
                _mm_prefetch(pf + 128, _MM_HINT_T0);
                _mm_prefetch(pf + 192, _MM_HINT_T0);
                const float *xr = x + col_at(w, k, wide) * ldx + b;
                __m512 v = _mm512_set1_ps(val[k]);
                a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr), a0);
                a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 16), a1);
                a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 32), a2);
                a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 48), a3);
            }
            for (; k < k1; k++) {
                const float *xr = x + col_at(w, k, wide) * ldx + b;
                __m512 v = _mm512_set1_ps(val[k]);
                a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr), a0);
                a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 16), a1);
                a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 32), a2);
                a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 48), a3);
            }
            _mm512_storeu_ps(yr + b, epi(a0, vb, act));
            _mm512_storeu_ps(yr + b + 16, epi(a1, vb, act));
            _mm512_storeu_ps(yr + b + 32, epi(a2, vb, act));
            _mm512_storeu_ps(yr + b + 48, epi(a3, vb, act));
        }
        for (; b + 32 <= batch; b += 32) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            int64_t k = k0;
            for (; k + 2 <= k1; k += 2) {
                const float *xr0 = x + col_at(w, k, wide) * ldx + b;
                const float *xr1 = x + col_at(w, k + 1, wide) * ldx + b;
                __m512 v0 = _mm512_set1_ps(val[k]), v1 = _mm512_set1_ps(val[k + 1]);
                a0 = _mm512_fmadd_ps(v0, _mm512_loadu_ps(xr0), a0);
                a1 = _mm512_fmadd_ps(v0, _mm512_loadu_ps(xr0 + 16), a1);
                a2 = _mm512_fmadd_ps(v1, _mm512_loadu_ps(xr1), a2);
                a3 = _mm512_fmadd_ps(v1, _mm512_loadu_ps(xr1 + 16), a3);
            }
            if (k < k1) {
                const float *xr = x + col_at(w, k, wide) * ldx + b;
                __m512 v = _mm512_set1_ps(val[k]);
                a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr), a0);
                a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 16), a1);
            }
            _mm512_storeu_ps(yr + b, epi(_mm512_add_ps(a0, a2), vb, act));
            _mm512_storeu_ps(yr + b + 16, epi(_mm512_add_ps(a1, a3), vb, act));
        }
        for (; b < batch; b += 16) {
            __mmask16 m = (batch - b >= 16) ? 0xFFFF : (__mmask16)((1u << (batch - b)) - 1);
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            int64_t k = k0;
            for (; k + 4 <= k1; k += 4) {
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(val[k]),
                                     _mm512_maskz_loadu_ps(m, x + col_at(w, k, wide) * ldx + b), a0);
                a1 = _mm512_fmadd_ps(_mm512_set1_ps(val[k + 1]),
                                     _mm512_maskz_loadu_ps(m, x + col_at(w, k + 1, wide) * ldx + b), a1);
                a2 = _mm512_fmadd_ps(_mm512_set1_ps(val[k + 2]),
                                     _mm512_maskz_loadu_ps(m, x + col_at(w, k + 2, wide) * ldx + b), a2);
                a3 = _mm512_fmadd_ps(_mm512_set1_ps(val[k + 3]),
                                     _mm512_maskz_loadu_ps(m, x + col_at(w, k + 3, wide) * ldx + b), a3);
            }
            for (; k < k1; k++)
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(val[k]),
                                     _mm512_maskz_loadu_ps(m, x + col_at(w, k, wide) * ldx + b), a0);
            __m512 s = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
            _mm512_mask_storeu_ps(yr + b, m, epi(s, vb, act));
        }
    }
}

void sp_f32_spmm_csr__avx512(const sp_csr *w, int64_t r0, int64_t r1, const float *x,
                             int64_t ldx, int64_t batch, float *y, int64_t ldy, const float *bias,
                             sp_act act) {
    if (w->col_idx16) spmm_rows(w, r0, r1, x, ldx, batch, y, ldy, bias, act, false);
    else spmm_rows(w, r0, r1, x, ldx, batch, y, ldy, bias, act, true);
}

/* dX[:, b0:b1] += W^T dY[:, b0:b1]: each row's dY segment stays in registers while its
 * nonzeros scatter-add into rows of dX. */
static inline __attribute__((always_inline)) void spmm_t_cols(const sp_csr *w, int64_t b0,
                                                              int64_t b1, const float *dy,
                                                              int64_t lddy, float *dx,
                                                              int64_t lddx, bool wide) {
    for (int64_t i = 0; i < w->rows; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        const float *g = dy + i * lddy;
        if (b1 - b0 == 1) {
            float gi = g[b0];
            for (int64_t k = k0; k < k1; k++) dx[col_at(w, k, wide) * lddx + b0] += w->val[k] * gi;
            continue;
        }
        int64_t b = b0;
        for (; b + 32 <= b1; b += 32) {
            __m512 g0 = _mm512_loadu_ps(g + b), g1 = _mm512_loadu_ps(g + b + 16);
            for (int64_t k = k0; k < k1; k++) {
                float *d = dx + col_at(w, k, wide) * lddx + b;
                __m512 v = _mm512_set1_ps(w->val[k]);
                _mm512_storeu_ps(d, _mm512_fmadd_ps(v, g0, _mm512_loadu_ps(d)));
                _mm512_storeu_ps(d + 16, _mm512_fmadd_ps(v, g1, _mm512_loadu_ps(d + 16)));
            }
        }
        for (; b < b1; b += 16) {
            __mmask16 m = (b1 - b >= 16) ? 0xFFFF : (__mmask16)((1u << (b1 - b)) - 1);
            __m512 g0 = _mm512_maskz_loadu_ps(m, g + b);
            for (int64_t k = k0; k < k1; k++) {
                float *d = dx + col_at(w, k, wide) * lddx + b;
                __m512 v = _mm512_set1_ps(w->val[k]);
                _mm512_mask_storeu_ps(d, m, _mm512_fmadd_ps(v, g0, _mm512_maskz_loadu_ps(m, d)));
            }
        }
    }
}

void sp_f32_spmm_t_csr__avx512(const sp_csr *w, int64_t b0, int64_t b1, const float *dy,
                               int64_t lddy, float *dx, int64_t lddx) {
    if (w->col_idx16) spmm_t_cols(w, b0, b1, dy, lddy, dx, lddx, false);
    else spmm_t_cols(w, b0, b1, dy, lddy, dx, lddx, true);
}

/* Sixteen dot products at batch 64 with the bits of the per-entry loop below: entry e's
 * sums a = (g0 x0 + g2 x2) + (g1 x1 + g3 x3) (the zmm quarters of the batch, two accumulators),
 * then _mm512_reduce_add_ps's tree, ((a[i] + a[i+8]) + (.. i+4 ..)) over lanes, done for all
 * sixteen at once: each level adds the same pairs (a float add is commutative), with two
 * entries' halves side by side in one vector, so a level costs two shuffles and an add for
 * two to eight entries instead of a whole reduction per entry. */
static inline __attribute__((always_inline)) __m512 dot16_b64(const __m512 *g, const float *x,
                                                              int64_t ldx, const sp_csr *w,
                                                              int64_t k, bool wide) {
    const __m512 zero = _mm512_setzero_ps(); /* fma onto +0, as the loop starts: the sign of a
                                                * zero product comes out the same */
    __m512 a[16];
    for (int e = 0; e < 16; e++) {
        const float *xr = x + col_at(w, k + e, wide) * ldx;
        const __m512 a0 = _mm512_fmadd_ps(g[2], _mm512_loadu_ps(xr + 32),
                                          _mm512_fmadd_ps(g[0], _mm512_loadu_ps(xr), zero));
        const __m512 a1 = _mm512_fmadd_ps(g[3], _mm512_loadu_ps(xr + 48),
                                          _mm512_fmadd_ps(g[1], _mm512_loadu_ps(xr + 16), zero));
        a[e] = _mm512_add_ps(a0, a1);
    }
    __m512 r[8], t[4], u[2];
    for (int p = 0; p < 8; p++) /* lanes i + 8: entries 2p, 2p + 1 in the two 256-bit halves */
        r[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0x44),
                             _mm512_shuffle_f32x4(a[2 * p], a[2 * p + 1], 0xee));
    for (int p = 0; p < 4; p++) /* lanes i + 4: entries 4p .. 4p + 3 in the 128-bit blocks */
        t[p] = _mm512_add_ps(_mm512_shuffle_f32x4(r[2 * p], r[2 * p + 1], 0x88),
                             _mm512_shuffle_f32x4(r[2 * p], r[2 * p + 1], 0xdd));
    for (int p = 0; p < 2; p++) /* lanes i + 2: block j holds entries 8p + j and 8p + 4 + j */
        u[p] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * p], t[2 * p + 1], 0x44),
                             _mm512_shuffle_ps(t[2 * p], t[2 * p + 1], 0xee));
    /* lanes 0 + 1: lane 4j + q holds entry 4q + j */
    const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], 0x88),
                                   _mm512_shuffle_ps(u[0], u[1], 0xdd));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, s);
}

/* dval[k] = dY[i, :] . X[col(k), :], batch in zmm steps with a masked tail. */
static inline __attribute__((always_inline)) void sddmm_rows(const sp_csr *w, int64_t r0,
                                                             int64_t r1, const float *dy,
                                                             int64_t lddy, const float *x,
                                                             int64_t ldx, int64_t batch,
                                                             float *dval, bool accumulate,
                                                             bool wide) {
    for (int64_t i = r0; i < r1; i++) {
        const float *g = dy + i * lddy;
        int64_t k = w->row_ptr[i];
        if (batch == 64) {
            const __m512 gv[4] = {_mm512_loadu_ps(g), _mm512_loadu_ps(g + 16),
                                  _mm512_loadu_ps(g + 32), _mm512_loadu_ps(g + 48)};
            for (; k + 16 <= w->row_ptr[i + 1]; k += 16) {
                __m512 d = dot16_b64(gv, x, ldx, w, k, wide);
                if (accumulate) d = _mm512_add_ps(_mm512_loadu_ps(dval + k), d);
                _mm512_storeu_ps(dval + k, d);
            }
        }
        for (; k < w->row_ptr[i + 1]; k++) {
            const float *xr = x + col_at(w, k, wide) * ldx;
            float acc;
            if (batch == 1) {
                acc = g[0] * xr[0];
            } else {
                __m512 a0 = _mm512_setzero_ps(), a1 = a0;
                int64_t b = 0;
                for (; b + 32 <= batch; b += 32) {
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(g + b), _mm512_loadu_ps(xr + b), a0);
                    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(g + b + 16), _mm512_loadu_ps(xr + b + 16), a1);
                }
                for (; b < batch; b += 16) {
                    __mmask16 m = (batch - b >= 16) ? 0xFFFF : (__mmask16)((1u << (batch - b)) - 1);
                    a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, g + b), _mm512_maskz_loadu_ps(m, xr + b), a0);
                }
                acc = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
            }
            dval[k] = accumulate ? dval[k] + acc : acc;
        }
    }
}

void sp_f32_sddmm_csr__avx512(const sp_csr *w, int64_t r0, int64_t r1, const float *dy,
                              int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                              float *dval, bool accumulate) {
    if (w->col_idx16) sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, false);
    else sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, true);
}

/* The panelled layout (src/sparse/csr_panels.h). Per block of rows and tile of 64 batch
 * columns: Y starts at the bias; for each panel, each row's segment loads its 4 zmm of Y, adds
 * val * X[col, tile] for its entries (X rows of the panel stay in L1) and stores them back; the
 * activation runs over the block at the end. Tails use 16-wide masked tiles. */
static inline __attribute__((always_inline)) void panels_tile(
    const sp_csr *w, int64_t blk, const float *x, int64_t ldx, int64_t b0, __mmask16 m, bool full,
    float *y, int64_t ldy, const float *bias, sp_act act) {
    const sp_csr_panels *p = w->panels;
    const int64_t P = p->panel_cols;
    const sp_panel_block k = sp_csr_panels_block(w, blk);
    const int64_t row0 = k.row0, rb = k.rb;
    const uint32_t *seg = k.seg;
    const uint8_t *off = k.off;
    const float *val = k.val;
    for (int64_t r = 0; r < rb; r++) {
        float *yr = y + (row0 + r) * ldy + b0;
        const __m512 vb = _mm512_set1_ps(bias ? bias[row0 + r] : 0.0f);
        if (full) {
            for (int v = 0; v < 4; v++) _mm512_storeu_ps(yr + 16 * v, vb);
        } else {
            _mm512_mask_storeu_ps(yr, m, vb);
        }
    }
    /* A leading dimension other than 64 floats maps the panel's X rows onto few L1 sets (at
     * ldx 256 every fourth row shares its sets: 512 lines into 128 ways), so full tiles copy
     * the panel into a contiguous buffer first (measured below in docs/BENCHMARKS.md). */
    float buf[256 * 64] __attribute__((aligned(64)));
    const bool copy = full && ldx != 64;
    const int64_t ldp = copy ? 64 : ldx;
    for (int64_t q = 0; q < p->npanels; q++) {
        const float *xq = x + q * P * ldx + b0;
        if (copy) {
            const int64_t n = SP_MIN(P, w->cols - q * P);
            for (int64_t j = 0; j < n; j++)
                for (int v = 0; v < 4; v++)
                    _mm512_store_ps(buf + j * 64 + 16 * v, _mm512_loadu_ps(xq + j * ldx + 16 * v));
            xq = buf;
        }
        const uint32_t *sq = seg + q * rb;
        for (int64_t r = 0; r < rb; r++) {
            const uint32_t e0 = sq[r], e1 = sq[r + 1];
            if (e0 == e1) continue;
            float *yr = y + (row0 + r) * ldy + b0;
            if (full) {
                __m512 a0 = _mm512_loadu_ps(yr), a1 = _mm512_loadu_ps(yr + 16);
                __m512 a2 = _mm512_loadu_ps(yr + 32), a3 = _mm512_loadu_ps(yr + 48);
                for (uint32_t e = e0; e < e1; e++) {
                    const float *xr = xq + (int64_t)off[e] * ldp;
                    const __m512 v = _mm512_set1_ps(val[e]);
                    a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr), a0);
                    a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 16), a1);
                    a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 32), a2);
                    a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 48), a3);
                }
                _mm512_storeu_ps(yr, a0);
                _mm512_storeu_ps(yr + 16, a1);
                _mm512_storeu_ps(yr + 32, a2);
                _mm512_storeu_ps(yr + 48, a3);
            } else {
                __m512 a0 = _mm512_maskz_loadu_ps(m, yr), a1 = _mm512_setzero_ps();
                uint32_t e = e0;
                for (; e + 2 <= e1; e += 2) {
                    a0 = _mm512_fmadd_ps(_mm512_set1_ps(val[e]),
                                         _mm512_maskz_loadu_ps(m, xq + (int64_t)off[e] * ldx), a0);
                    a1 = _mm512_fmadd_ps(_mm512_set1_ps(val[e + 1]),
                                         _mm512_maskz_loadu_ps(m, xq + (int64_t)off[e + 1] * ldx), a1);
                }
                if (e < e1)
                    a0 = _mm512_fmadd_ps(_mm512_set1_ps(val[e]),
                                         _mm512_maskz_loadu_ps(m, xq + (int64_t)off[e] * ldx), a0);
                _mm512_mask_storeu_ps(yr, m, _mm512_add_ps(a0, a1));
            }
        }
    }
    if (act == SP_ACT_RELU) {
        const __m512 z = _mm512_setzero_ps();
        for (int64_t r = 0; r < rb; r++) {
            float *yr = y + (row0 + r) * ldy + b0;
            if (full) {
                for (int v = 0; v < 4; v++)
                    _mm512_storeu_ps(yr + 16 * v, _mm512_max_ps(_mm512_loadu_ps(yr + 16 * v), z));
            } else {
                _mm512_mask_storeu_ps(yr, m, _mm512_max_ps(_mm512_maskz_loadu_ps(m, yr), z));
            }
        }
    }
}

void sp_f32_spmm_csr_panels__avx512(const sp_csr *w, int64_t r0, int64_t r1, const float *x,
                                    int64_t ldx, int64_t batch, float *y, int64_t ldy,
                                    const float *bias, sp_act act) {
    const int64_t RB = w->panels->block_rows;
    for (int64_t blk = r0 / RB; blk * RB < r1; blk++) {
        int64_t b = 0;
        for (; b + 64 <= batch; b += 64) panels_tile(w, blk, x, ldx, b, 0xFFFF, true, y, ldy, bias, act);
        for (; b < batch; b += 16) {
            __mmask16 m = (batch - b >= 16) ? 0xFFFF : (__mmask16)((1u << (batch - b)) - 1);
            panels_tile(w, blk, x, ldx, b, m, false, y, ldy, bias, act);
        }
    }
}

/* The fused backward (sp_csr_spmm_t_sddmm) over rows j of W^T: tiles of 64 columns of dX row j
 * in 4 accumulators while each entry's row of dY (prefetched PF entries ahead) passes once and
 * is also dotted with X's row j; 16-column masked tiles for the rest. */
static inline __attribute__((always_inline)) void spmm_t_sddmm_rows(
    const sp_csr *wt, const int64_t *perm, const float *wval, int64_t r0, int64_t r1,
    const float *dy, int64_t lddy, const float *x, int64_t ldx, int64_t batch, float *dx,
    int64_t lddx, float *dval, bool accumulate, bool wide) {
    const int64_t qend = wt->row_ptr[r1];
    for (int64_t j = r0; j < r1; j++) {
        const int64_t q0 = wt->row_ptr[j], q1 = wt->row_ptr[j + 1];
        const float *xj = x + j * ldx;
        float *dxj = dx + j * lddx;
        int64_t b = 0;
        for (; b + 64 <= batch; b += 64) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t q = q0; q < q1; q++) {
                if (q + PF < qend) {
                    const int64_t off = q + PF < q1 ? b : 0;
                    const char *pf = (const char *)(dy + col_at(wt, q + PF, wide) * lddy + off);
                    for (int l = 0; l < 4; l++) _mm_prefetch(pf + 64 * l, _MM_HINT_T0);
                    _mm_prefetch((const char *)(wval + perm[q + PF]), _MM_HINT_T0);
                    _mm_prefetch((const char *)(dval + perm[q + PF]), _MM_HINT_T0);
                }
                const float *g = dy + col_at(wt, q, wide) * lddy + b;
                const __m512 v = _mm512_set1_ps(wval[perm[q]]);
                const __m512 g0 = _mm512_loadu_ps(g), g1 = _mm512_loadu_ps(g + 16);
                const __m512 g2 = _mm512_loadu_ps(g + 32), g3 = _mm512_loadu_ps(g + 48);
                a0 = _mm512_fmadd_ps(v, g0, a0);
                a1 = _mm512_fmadd_ps(v, g1, a1);
                a2 = _mm512_fmadd_ps(v, g2, a2);
                a3 = _mm512_fmadd_ps(v, g3, a3);
                __m512 s0 = _mm512_mul_ps(g0, _mm512_loadu_ps(xj + b));
                __m512 s1 = _mm512_mul_ps(g1, _mm512_loadu_ps(xj + b + 16));
                s0 = _mm512_fmadd_ps(g2, _mm512_loadu_ps(xj + b + 32), s0);
                s1 = _mm512_fmadd_ps(g3, _mm512_loadu_ps(xj + b + 48), s1);
                const float dot = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
                float *d = dval + perm[q];
                *d = accumulate || b > 0 ? *d + dot : dot;
            }
            _mm512_storeu_ps(dxj + b, a0);
            _mm512_storeu_ps(dxj + b + 16, a1);
            _mm512_storeu_ps(dxj + b + 32, a2);
            _mm512_storeu_ps(dxj + b + 48, a3);
        }
        for (; b < batch; b += 16) {
            const __mmask16 m = (batch - b >= 16) ? 0xFFFF : (__mmask16)((1u << (batch - b)) - 1);
            const __m512 xv = _mm512_maskz_loadu_ps(m, xj + b);
            __m512 a0 = _mm512_setzero_ps();
            for (int64_t q = q0; q < q1; q++) {
                const __m512 g = _mm512_maskz_loadu_ps(m, dy + col_at(wt, q, wide) * lddy + b);
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(wval[perm[q]]), g, a0);
                const float dot = _mm512_reduce_add_ps(_mm512_mul_ps(g, xv));
                float *d = dval + perm[q];
                *d = accumulate || b > 0 ? *d + dot : dot;
            }
            _mm512_mask_storeu_ps(dxj + b, m, a0);
        }
    }
}

void sp_f32_spmm_t_sddmm_csr__avx512(const sp_csr *wt, const int64_t *perm, const float *wval,
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
