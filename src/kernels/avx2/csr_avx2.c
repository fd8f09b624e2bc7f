/*
 * csr_avx2.c - AVX2 + FMA CSR kernels (compiled with -mavx2 -mfma). The same plan as the
 * AVX-512 file with 8-wide vectors: batch tiles of 64/32/8 columns (8/4/1 ymm accumulators, the
 * 8-wide tile unrolled over four nonzeros) and a masked tail; SpMV is the shared row dot of csr_spmv.h.
 */
#include <immintrin.h>

#include "../csr_spmv.h"

#define PF 8 /* entries ahead whose rows are prefetched */

static inline __attribute__((always_inline)) int64_t col_at(const sp_csr *w, int64_t k, bool wide) {
    return wide ? (int64_t)w->col_idx[k] : (int64_t)w->col_idx16[k];
}

/* Lane mask with the first n (0..8) lanes set, for maskload/maskstore. */
static inline __m256i lanes(int64_t n) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), iota);
}

static inline __attribute__((always_inline)) __m256 epi(__m256 v, __m256 bias, sp_act act) {
    v = _mm256_add_ps(v, bias);
    return act == SP_ACT_RELU ? _mm256_max_ps(v, _mm256_setzero_ps()) : v;
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __attribute__((always_inline)) void spmm_rows(const sp_csr *w, int64_t r0,
                                                            int64_t r1, const float *x, int64_t ldx,
                                                            int64_t batch, float *y, int64_t ldy,
                                                            const float *bias, sp_act act,
                                                            bool wide) {
    const float *val = w->val;
    const int64_t kend = w->row_ptr[r1];
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        float *yr = y + i * ldy;
        if (batch == 1) {
            yr[0] = sp_epilogue(sp_csr_row_dot(w, k0, k1, x, ldx), bias, i, act);
            continue;
        }
        const __m256 vb = _mm256_set1_ps(bias ? bias[i] : 0.0f);
        int64_t b = 0;
        for (; b + 64 <= batch; b += 64) {
            /* tiles of 64 columns (8 accumulators), prefetching the X row segment of the entry
             * PF ahead, across row ends (where the next row starts at column 0): the rows of a
             * wide layer are scattered over more memory than the caches hold (333,334 x 64
             * floats: 85 MB) and the hardware prefetcher cannot guess them; 1.3x measured */
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            __m256 a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            for (int64_t k = k0; k < k1; k++) {
                if (k + PF < kend) {
                    const int64_t off = k + PF < k1 ? b : 0;
                    const char *pf = (const char *)(x + col_at(w, k + PF, wide) * ldx + off);
                    for (int l = 0; l < 4; l++) _mm_prefetch(pf + 64 * l, _MM_HINT_T0);
                }
                const float *xr = x + col_at(w, k, wide) * ldx + b;
                const __m256 v = _mm256_set1_ps(val[k]);
                a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr), a0);
                a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 8), a1);
                a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 16), a2);
                a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 24), a3);
                a4 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 32), a4);
                a5 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 40), a5);
                a6 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 48), a6);
                a7 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 56), a7);
            }
            const __m256 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
            for (int l = 0; l < 8; l++) _mm256_storeu_ps(yr + b + 8 * l, epi(acc[l], vb, act));
        }
        for (; b + 32 <= batch; b += 32) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t k = k0; k < k1; k++) {
                const float *xr = x + col_at(w, k, wide) * ldx + b;
                __m256 v = _mm256_set1_ps(val[k]);
                a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr), a0);
                a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 8), a1);
                a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 16), a2);
                a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 24), a3);
            }
            _mm256_storeu_ps(yr + b, epi(a0, vb, act));
            _mm256_storeu_ps(yr + b + 8, epi(a1, vb, act));
            _mm256_storeu_ps(yr + b + 16, epi(a2, vb, act));
            _mm256_storeu_ps(yr + b + 24, epi(a3, vb, act));
        }
        for (; b < batch; b += 8) {
            const int64_t nb = SP_MIN(8, batch - b);
            const __m256i m = lanes(nb);
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            int64_t k = k0;
#define XL(kk) _mm256_maskload_ps(x + col_at(w, (kk), wide) * ldx + b, m)
            for (; k + 4 <= k1; k += 4) {
                a0 = _mm256_fmadd_ps(_mm256_set1_ps(val[k]), XL(k), a0);
                a1 = _mm256_fmadd_ps(_mm256_set1_ps(val[k + 1]), XL(k + 1), a1);
                a2 = _mm256_fmadd_ps(_mm256_set1_ps(val[k + 2]), XL(k + 2), a2);
                a3 = _mm256_fmadd_ps(_mm256_set1_ps(val[k + 3]), XL(k + 3), a3);
            }
            for (; k < k1; k++) a0 = _mm256_fmadd_ps(_mm256_set1_ps(val[k]), XL(k), a0);
#undef XL
            __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
            _mm256_maskstore_ps(yr + b, m, epi(s, vb, act));
        }
    }
}

void sp_f32_spmm_csr__avx2(const sp_csr *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                           int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    if (w->col_idx16) spmm_rows(w, r0, r1, x, ldx, batch, y, ldy, bias, act, false);
    else spmm_rows(w, r0, r1, x, ldx, batch, y, ldy, bias, act, true);
}

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
        for (int64_t b = b0; b < b1; b += 8) {
            const __m256i m = lanes(SP_MIN(8, b1 - b));
            __m256 g0 = _mm256_maskload_ps(g + b, m);
            for (int64_t k = k0; k < k1; k++) {
                float *d = dx + col_at(w, k, wide) * lddx + b;
                __m256 v = _mm256_set1_ps(w->val[k]);
                _mm256_maskstore_ps(d, m, _mm256_fmadd_ps(v, g0, _mm256_maskload_ps(d, m)));
            }
        }
    }
}

void sp_f32_spmm_t_csr__avx2(const sp_csr *w, int64_t b0, int64_t b1, const float *dy,
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
            __m256 a0 = _mm256_setzero_ps(), a1 = a0;
            int64_t b = 0;
            for (; b + 16 <= batch; b += 16) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(g + b), _mm256_loadu_ps(xr + b), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(g + b + 8), _mm256_loadu_ps(xr + b + 8), a1);
            }
            for (; b < batch; b += 8) {
                const __m256i m = lanes(SP_MIN(8, batch - b));
                a0 = _mm256_fmadd_ps(_mm256_maskload_ps(g + b, m), _mm256_maskload_ps(xr + b, m), a0);
            }
            float acc = hsum(_mm256_add_ps(a0, a1));
            dval[k] = accumulate ? dval[k] + acc : acc;
        }
    }
}

void sp_f32_sddmm_csr__avx2(const sp_csr *w, int64_t r0, int64_t r1, const float *dy,
                            int64_t lddy, const float *x, int64_t ldx, int64_t batch, float *dval,
                            bool accumulate) {
    if (w->col_idx16) sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, false);
    else sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, true);
}

/* The panelled layout (src/sparse/csr_panels.h), as in the AVX-512 file: tiles of 32 batch
 * columns (4 ymm per row segment) and 8-wide masked tails. */
static inline __attribute__((always_inline)) void panels_tile(
    const sp_csr *w, int64_t blk, const float *x, int64_t ldx, int64_t b0, int64_t nb, bool full,
    float *y, int64_t ldy, const float *bias, sp_act act) {
    const sp_csr_panels *p = w->panels;
    const int64_t P = p->panel_cols;
    const sp_panel_block k = sp_csr_panels_block(w, blk);
    const int64_t row0 = k.row0, rb = k.rb;
    const uint32_t *seg = k.seg;
    const uint8_t *off = k.off;
    const float *val = k.val;
    const __m256i m = lanes(nb);
    for (int64_t r = 0; r < rb; r++) {
        float *yr = y + (row0 + r) * ldy + b0;
        const __m256 vb = _mm256_set1_ps(bias ? bias[row0 + r] : 0.0f);
        if (full) {
            for (int v = 0; v < 4; v++) _mm256_storeu_ps(yr + 8 * v, vb);
        } else {
            _mm256_maskstore_ps(yr, m, vb);
        }
    }
    for (int64_t q = 0; q < p->npanels; q++) {
        const float *xq = x + q * P * ldx + b0;
        const uint32_t *sq = seg + q * rb;
        for (int64_t r = 0; r < rb; r++) {
            const uint32_t e0 = sq[r], e1 = sq[r + 1];
            if (e0 == e1) continue;
            float *yr = y + (row0 + r) * ldy + b0;
            if (full) {
                __m256 a0 = _mm256_loadu_ps(yr), a1 = _mm256_loadu_ps(yr + 8);
                __m256 a2 = _mm256_loadu_ps(yr + 16), a3 = _mm256_loadu_ps(yr + 24);
                for (uint32_t e = e0; e < e1; e++) {
                    const float *xr = xq + (int64_t)off[e] * ldx;
                    const __m256 v = _mm256_set1_ps(val[e]);
                    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr), a0);
                    a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 8), a1);
                    a2 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 16), a2);
                    a3 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xr + 24), a3);
                }
                _mm256_storeu_ps(yr, a0);
                _mm256_storeu_ps(yr + 8, a1);
                _mm256_storeu_ps(yr + 16, a2);
                _mm256_storeu_ps(yr + 24, a3);
            } else {
                __m256 a0 = _mm256_maskload_ps(yr, m);
                for (uint32_t e = e0; e < e1; e++)
                    a0 = _mm256_fmadd_ps(_mm256_set1_ps(val[e]),
                                         _mm256_maskload_ps(xq + (int64_t)off[e] * ldx, m), a0);
                _mm256_maskstore_ps(yr, m, a0);
            }
        }
    }
    if (act == SP_ACT_RELU) {
        const __m256 z = _mm256_setzero_ps();
        for (int64_t r = 0; r < rb; r++) {
            float *yr = y + (row0 + r) * ldy + b0;
            if (full) {
                for (int v = 0; v < 4; v++)
                    _mm256_storeu_ps(yr + 8 * v, _mm256_max_ps(_mm256_loadu_ps(yr + 8 * v), z));
            } else {
                _mm256_maskstore_ps(yr, m, _mm256_max_ps(_mm256_maskload_ps(yr, m), z));
            }
        }
    }
}

void sp_f32_spmm_csr_panels__avx2(const sp_csr *w, int64_t r0, int64_t r1, const float *x,
                                  int64_t ldx, int64_t batch, float *y, int64_t ldy,
                                  const float *bias, sp_act act) {
    const int64_t RB = w->panels->block_rows;
    for (int64_t blk = r0 / RB; blk * RB < r1; blk++) {
        int64_t b = 0;
        for (; b + 32 <= batch; b += 32) panels_tile(w, blk, x, ldx, b, 8, true, y, ldy, bias, act);
        for (; b < batch; b += 8) panels_tile(w, blk, x, ldx, b, SP_MIN(8, batch - b), false, y, ldy, bias, act);
    }
}

/* The fused backward (sp_csr_spmm_t_sddmm) over rows j of W^T: tiles of 64 columns of dX row j
 * in 8 accumulators while each entry's row of dY passes once and is also dotted with X's row j
 * (from L1); 8-column masked tiles for the rest. The entry PF ahead has its row of dY and its
 * value and gradient (scattered through perm) prefetched: 0.77 -> 0.58 s for 333,334 x 333,334
 * with 40 entries a row at batch 64, against spmm of W^T plus sddmm. */
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
            __m256 a[8];
            for (int l = 0; l < 8; l++) a[l] = _mm256_setzero_ps();
            for (int64_t q = q0; q < q1; q++) {
                if (q + PF < qend) {
                    const int64_t off = q + PF < q1 ? b : 0;
                    const char *pf = (const char *)(dy + col_at(wt, q + PF, wide) * lddy + off);
                    for (int l = 0; l < 4; l++) _mm_prefetch(pf + 64 * l, _MM_HINT_T0);
                    _mm_prefetch((const char *)(wval + perm[q + PF]), _MM_HINT_T0);
                    _mm_prefetch((const char *)(dval + perm[q + PF]), _MM_HINT_T0);
                }
                const float *g = dy + col_at(wt, q, wide) * lddy + b;
                const __m256 v = _mm256_set1_ps(wval[perm[q]]);
                __m256 s0 = _mm256_setzero_ps(), s1 = s0;
                for (int l = 0; l < 8; l += 2) {
                    const __m256 g0 = _mm256_loadu_ps(g + 8 * l), g1 = _mm256_loadu_ps(g + 8 * l + 8);
                    a[l] = _mm256_fmadd_ps(v, g0, a[l]);
                    a[l + 1] = _mm256_fmadd_ps(v, g1, a[l + 1]);
                    s0 = _mm256_fmadd_ps(g0, _mm256_loadu_ps(xj + b + 8 * l), s0);
                    s1 = _mm256_fmadd_ps(g1, _mm256_loadu_ps(xj + b + 8 * l + 8), s1);
                }
                const float dot = hsum(_mm256_add_ps(s0, s1));
                float *d = dval + perm[q];
                *d = accumulate || b > 0 ? *d + dot : dot;
            }
            for (int l = 0; l < 8; l++) _mm256_storeu_ps(dxj + b + 8 * l, a[l]);
        }
        for (; b < batch; b += 8) {
            const __m256i m = lanes(SP_MIN(8, batch - b));
            const __m256 xv = _mm256_maskload_ps(xj + b, m);
            __m256 a0 = _mm256_setzero_ps();
            for (int64_t q = q0; q < q1; q++) {
                const __m256 g = _mm256_maskload_ps(dy + col_at(wt, q, wide) * lddy + b, m);
                a0 = _mm256_fmadd_ps(_mm256_set1_ps(wval[perm[q]]), g, a0);
                const float dot = hsum(_mm256_mul_ps(g, xv));
                float *d = dval + perm[q];
                *d = accumulate || b > 0 ? *d + dot : dot;
            }
            _mm256_maskstore_ps(dxj + b, m, a0);
        }
    }
}

void sp_f32_spmm_t_sddmm_csr__avx2(const sp_csr *wt, const int64_t *perm, const float *wval,
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
