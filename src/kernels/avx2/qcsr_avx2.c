/*
 * qcsr_avx2.c - AVX2 quantized CSR product and activation quantization.
 *
 * Product, per output row and batch tile of up to 64 columns: the row's stored entries are
 * decoded (u8 gaps -> element offsets col * ldq, values -> int16) in chunks, then taken two at
 * a time. For entries (c0, w0), (c1, w1) and 16 batch columns, X rows c0 and c1 (int16) are
 * interleaved with unpacklo/hi_epi16 and multiplied by the broadcast pair (w0, w1) with
 * vpmaddwd: each int32 lane gets w0 * x[c0][b] + w1 * x[c1][b], exact (|.| <= 2 * 127 * 127).
 * unpacklo holds batch lanes {0-3, 8-11}, unpackhi {4-7, 12-15}; that lane order is undone
 * once per row when storing (vperm2i128). The int32 sums of a 64-column tile live in 8
 * registers. Shapes: xq (cols x ldq) int16, ldq a multiple of 16 when batch >= 16.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../kernel_table.h"

#define QT 64     /* batch columns per tile: 4 vectors of 16 int16, 8 int32 accumulators */
#define CHUNK 256 /* stored entries decoded at a time */

/* int32 view of the int16 value array (allowed to alias it) */
typedef int32_t __attribute__((may_alias)) sp_i32_alias;

static inline __m256i lanes(int64_t n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}

void sp_qact__avx2(const float *x, int64_t ldx, int64_t rows, int64_t batch, float x_scale,
                   float *xs, float *inv, int16_t *xq, int64_t ldq) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    int64_t b;
    if (x_scale > 0.0f) {
        for (b = 0; b < batch; b++) xs[b] = x_scale, inv[b] = 1.0f / x_scale;
    } else {
        for (b = 0; b < batch; b++) xs[b] = 0.0f;
        /* 64 samples at a time, the running maxima in 8 registers */
        int64_t b64 = 0;
        for (; b64 + 64 <= batch; b64 += 64) {
            __m256 m[8];
            for (int v = 0; v < 8; v++) m[v] = _mm256_setzero_ps();
            for (int64_t j = 0; j < rows; j++) {
                const float *xr = x + j * ldx + b64;
                for (int v = 0; v < 8; v++)
                    m[v] = _mm256_max_ps(m[v], _mm256_and_ps(_mm256_loadu_ps(xr + 8 * v), absmask));
            }
            for (int v = 0; v < 8; v++) _mm256_storeu_ps(xs + b64 + 8 * v, m[v]);
        }
        for (int64_t j = 0; j < rows && b64 < batch; j++) {
            const float *xr = x + j * ldx;
            for (b = b64; b + 8 <= batch; b += 8)
                _mm256_storeu_ps(xs + b, _mm256_max_ps(_mm256_loadu_ps(xs + b),
                                                       _mm256_and_ps(_mm256_loadu_ps(xr + b), absmask)));
            for (; b < batch; b++) xs[b] = fmaxf(xs[b], fabsf(xr[b]));
        }
        for (b = 0; b < batch; b++) {
            float m = xs[b];
            xs[b] = m / 127.0f;
            inv[b] = m > 0.0f ? 127.0f / m : 0.0f;
        }
    }
    for (b = batch; b < ldq; b++) xs[b] = 0.0f, inv[b] = 0.0f;
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    for (int64_t j = 0; j < rows; j++) {
        const float *xr = x + j * ldx;
        int16_t *qr = xq + j * ldq;
        for (b = 0; b + 16 <= batch; b += 16) {
            __m256 a = _mm256_mul_ps(_mm256_loadu_ps(xr + b), _mm256_loadu_ps(inv + b));
            __m256 c = _mm256_mul_ps(_mm256_loadu_ps(xr + b + 8), _mm256_loadu_ps(inv + b + 8));
            a = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), lo), hi);
            c = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), lo), hi);
            /* packs works per 128-bit lane: (a0-3 c0-3 a4-7 c4-7) -> fix with a 64-bit permute */
            __m256i p = _mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(c));
            _mm256_storeu_si256((__m256i *)(qr + b), _mm256_permute4x64_epi64(p, 0xd8));
        }
        for (; b < batch; b++) {
            float q = rintf(xr[b] * inv[b]);
            qr[b] = (int16_t)fminf(fmaxf(q, -127.0f), 127.0f);
        }
        for (; b < ldq; b++) qr[b] = 0;
    }
}

/* Decodes stored entries [k, k + n) of a row (col: column before them, updated) into element
 * offsets and int16 pair words; an odd n gets a zero-weight pad entry. Returns the pairs. */
static inline int64_t decode(const sp_qcsr *w, int64_t k, int64_t n, int64_t k0, int64_t ldq,
                             int64_t *col, int64_t *off, int32_t *wp) {
    int16_t wv[CHUNK + 2];
    int64_t c = *col;
    for (int64_t m = 0; m < n; m++) {
        c = w->gap ? c + w->gap[k + m] : k + m - k0;
        off[m] = c * ldq;
        wv[m] = (int16_t)sp_qcsr_q(w, k + m);
    }
    *col = c;
    if (n & 1) off[n] = off[n - 1], wv[n] = 0;
    const int64_t np = (n + 1) / 2;
    for (int64_t p = 0; p < np; p++)
        wp[p] = (int32_t)((uint32_t)(uint16_t)wv[2 * p] | ((uint32_t)(uint16_t)wv[2 * p + 1] << 16));
    return np;
}

/* acc[2v], acc[2v+1] += pairs . X for NV vectors of 16 batch columns */
static inline __attribute__((always_inline)) void pairs_nv(const int16_t *xb, const int64_t *off,
                                                           const int32_t *wp, int64_t np,
                                                           __m256i *acc, int NV) {
    for (int64_t p = 0; p < np; p++) {
        const int16_t *a = xb + off[2 * p], *c = xb + off[2 * p + 1];
        const __m256i wv = _mm256_set1_epi32(wp[p]);
        for (int v = 0; v < NV; v++) {
            __m256i x0 = _mm256_loadu_si256((const __m256i *)(a + 16 * v));
            __m256i x1 = _mm256_loadu_si256((const __m256i *)(c + 16 * v));
            acc[2 * v] = _mm256_add_epi32(acc[2 * v], _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), wv));
            acc[2 * v + 1] = _mm256_add_epi32(acc[2 * v + 1], _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), wv));
        }
    }
}

static inline __attribute__((always_inline)) void rows_nv(const sp_qcsr *w, int64_t r0, int64_t r1,
                                                          const int16_t *xb, int64_t ldq, int64_t nb,
                                                          const float *xs, float *y, int64_t ldy,
                                                          const float *bias, sp_act act, int NV) {
    int64_t off[CHUNK + 2];
    int32_t wp[CHUNK / 2 + 1];
    const bool q4 = w->bits == 4;
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        __m256i acc[8];
        __m256 f[8];
        for (int v = 0; v < 2 * NV; v++) acc[v] = _mm256_setzero_si256(), f[v] = _mm256_setzero_ps();
        int64_t col = 0;
        for (int64_t k = k0; k < k1;) {
            int64_t n = SP_MIN(CHUNK, k1 - k);
            if (q4) n = SP_MIN(n, w->group - (k - k0) % w->group);
            int64_t np = decode(w, k, n, k0, ldq, &col, off, wp);
            pairs_nv(xb, off, wp, np, acc, NV);
            k += n;
            if (q4 && ((k - k0) % w->group == 0 || k == k1)) {
                const __m256 s = _mm256_set1_ps(sp_qcsr_scale_of(w, i, k - 1));
                for (int v = 0; v < 2 * NV; v++) {
                    f[v] = _mm256_add_ps(f[v], _mm256_mul_ps(_mm256_cvtepi32_ps(acc[v]), s));
                    acc[v] = _mm256_setzero_si256();
                }
            }
        }
        const __m256 ws = _mm256_set1_ps(q4 ? 1.0f : w->scale[i]);
        const __m256 bv = _mm256_set1_ps(bias ? bias[i] : 0.0f);
        float *yr = y + i * ldy;
        for (int v = 0; v < NV; v++) {
            for (int h = 0; h < 2; h++) {
                /* batch 16v + 8h .. + 7: the low lanes (h = 0) or the high lanes of the pair;
                 * the lane selector must be a literal (an immediate at every -O level) */
                __m256 t;
                if (q4) {
                    t = h ? _mm256_permute2f128_ps(f[2 * v], f[2 * v + 1], 0x31)
                          : _mm256_permute2f128_ps(f[2 * v], f[2 * v + 1], 0x20);
                } else {
                    __m256i a = h ? _mm256_permute2x128_si256(acc[2 * v], acc[2 * v + 1], 0x31)
                                  : _mm256_permute2x128_si256(acc[2 * v], acc[2 * v + 1], 0x20);
                    t = _mm256_mul_ps(_mm256_cvtepi32_ps(a), ws);
                }
                const int64_t b = 16 * v + 8 * h;
                if (b >= nb) break;
                t = _mm256_mul_ps(t, _mm256_loadu_ps(xs + b));
                if (bias) t = _mm256_add_ps(t, bv);
                if (act == SP_ACT_RELU) t = _mm256_max_ps(t, _mm256_setzero_ps());
                if (b + 8 <= nb) _mm256_storeu_ps(yr + b, t);
                else _mm256_maskstore_ps(yr + b, lanes(nb - b), t);
            }
        }
    }
}

/* The int8 fast path: one row's sums for NV vectors of 16 batch columns. Value pairs are
 * widened 16 at a time (vpmovsxbw: the int16 array read as int32 words IS the pair words);
 * columns are summed from the gaps inline, on the scalar ports, beside the vector work. */
static inline __attribute__((always_inline)) void row_q8(const uint8_t *g, const int8_t *v,
                                                         int64_t n, const int16_t *xb,
                                                         int64_t ldq, __m256i *acc, int NV,
                                                         bool dense) {
    int16_t wv[CHUNK + 16] __attribute__((aligned(32)));
    int64_t col = 0;
    for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {
        const int64_t m = SP_MIN(CHUNK, n - c0);
        int64_t t = 0;
        for (; t + 16 <= m; t += 16)
            _mm256_store_si256((__m256i *)(wv + t),
                               _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(v + c0 + t))));
        for (; t < m; t++) wv[t] = v[c0 + t];
        wv[m] = 0; /* pad of an odd count */
        const sp_i32_alias *wp = (const sp_i32_alias *)wv; /* pair words over the int16s */
        const uint8_t *gg = dense ? NULL : g + c0;
        for (int64_t p = 0; 2 * p < m; p++) {
            int64_t ca, cb;
            if (dense) {
                ca = c0 + 2 * p, cb = 2 * p + 1 < m ? ca + 1 : ca;
            } else {
                ca = col + gg[2 * p];
                cb = 2 * p + 1 < m ? ca + gg[2 * p + 1] : ca;
                col = cb;
            }
            const int16_t *a = xb + ca * ldq, *c = xb + cb * ldq;
            const __m256i wpv = _mm256_set1_epi32(wp[p]);
            for (int j = 0; j < NV; j++) {
                __m256i x0 = _mm256_loadu_si256((const __m256i *)(a + 16 * j));
                __m256i x1 = _mm256_loadu_si256((const __m256i *)(c + 16 * j));
                acc[2 * j] = _mm256_add_epi32(acc[2 * j], _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), wpv));
                acc[2 * j + 1] = _mm256_add_epi32(acc[2 * j + 1], _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), wpv));
            }
        }
    }
}

static inline __attribute__((always_inline)) void rows_q8(const sp_qcsr *w, int64_t r0, int64_t r1,
                                                          const int16_t *xb, int64_t ldq, int64_t nb,
                                                          const float *xs, float *y, int64_t ldy,
                                                          const float *bias, sp_act act, int NV) {
    const int8_t *val = w->val;
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        __m256i acc[8];
        for (int j = 0; j < 2 * NV; j++) acc[j] = _mm256_setzero_si256();
        if (w->gap) row_q8(w->gap + k0, val + k0, k1 - k0, xb, ldq, acc, NV, false);
        else row_q8(NULL, val + k0, k1 - k0, xb, ldq, acc, NV, true);
        const __m256 ws = _mm256_set1_ps(w->scale[i]);
        const __m256 bv = _mm256_set1_ps(bias ? bias[i] : 0.0f);
        float *yr = y + i * ldy;
        for (int j = 0; j < NV; j++) {
            for (int h = 0; h < 2; h++) {
                const int64_t b = 16 * j + 8 * h;
                if (b >= nb) break;
                __m256i a = h ? _mm256_permute2x128_si256(acc[2 * j], acc[2 * j + 1], 0x31)
                              : _mm256_permute2x128_si256(acc[2 * j], acc[2 * j + 1], 0x20);
                __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(a), ws);
                t = _mm256_mul_ps(t, _mm256_loadu_ps(xs + b));
                if (bias) t = _mm256_add_ps(t, bv);
                if (act == SP_ACT_RELU) t = _mm256_max_ps(t, _mm256_setzero_ps());
                if (b + 8 <= nb) _mm256_storeu_ps(yr + b, t);
                else _mm256_maskstore_ps(yr + b, lanes(nb - b), t);
            }
        }
    }
}

/* batch < 16: X rows are not padded; plain sums per entry */
static void rows_narrow(const sp_qcsr *w, int64_t r0, int64_t r1, const int16_t *xq, int64_t ldq,
                        int64_t batch, const float *xs, float *y, int64_t ldy, const float *bias,
                        sp_act act) {
    int64_t off[CHUNK + 2];
    int32_t wp[CHUNK / 2 + 1];
    const bool q4 = w->bits == 4;
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        int32_t acc[16] = {0};
        float f[16] = {0};
        int64_t col = 0;
        for (int64_t k = k0; k < k1;) {
            int64_t n = SP_MIN(CHUNK, k1 - k);
            if (q4) n = SP_MIN(n, w->group - (k - k0) % w->group);
            int64_t np = decode(w, k, n, k0, ldq, &col, off, wp);
            for (int64_t p = 0; p < np; p++) {
                const int32_t w0 = (int16_t)(wp[p] & 0xffff), w1 = (int16_t)((uint32_t)wp[p] >> 16);
                const int16_t *a = xq + off[2 * p], *c = xq + off[2 * p + 1];
                for (int64_t b = 0; b < batch; b++) acc[b] += w0 * a[b] + w1 * c[b];
            }
            k += n;
            if (q4 && ((k - k0) % w->group == 0 || k == k1)) {
                const float s = sp_qcsr_scale_of(w, i, k - 1);
                for (int64_t b = 0; b < batch; b++) f[b] += (float)acc[b] * s, acc[b] = 0;
            }
        }
        for (int64_t b = 0; b < batch; b++) {
            float v = q4 ? f[b] * xs[b] : ((float)acc[b] * w->scale[i]) * xs[b];
            y[i * ldy + b] = sp_epilogue(v, bias, i, act);
        }
    }
}

void sp_i8_spmm_qcsr__avx2(const sp_qcsr *w, int64_t r0, int64_t r1, const int16_t *xq,
                           int64_t ldq, int64_t batch, const float *xs, float *y, int64_t ldy,
                           const float *bias, sp_act act) {
    if (batch == 1 && w->bits == 8) {
        /* SpMV: one int32 dot product per row, columns summed from the gaps */
        const int8_t *val = w->val;
        for (int64_t i = r0; i < r1; i++) {
            const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
            int32_t s0 = 0, s1 = 0;
            if (w->gap && ldq == 1) {
                /* 8 entries at a time: prefix sum of the gaps in a vector, one gather of the
                 * int16 X values (4 bytes at 2 * col: the low half is x[col]; the workspace
                 * holds 64 spare bytes past X), vpmaddwd against the int32 weights with the
                 * upper halves of x cleared: w * x exactly. */
                const __m256i lo16 = _mm256_set1_epi32(0xffff), last = _mm256_set1_epi32(7);
                __m256i base = _mm256_setzero_si256(), acc = _mm256_setzero_si256();
                int64_t k = k0;
                for (; k + 8 <= k1; k += 8) {
                    __m256i g = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(w->gap + k)));
                    g = _mm256_add_epi32(g, _mm256_slli_si256(g, 4));
                    g = _mm256_add_epi32(g, _mm256_slli_si256(g, 8));
                    __m256i h = _mm256_shuffle_epi32(g, 0xff);          /* lane 3 of each half */
                    g = _mm256_add_epi32(g, _mm256_permute2x128_si256(h, h, 0x08)); /* to the high half */
                    const __m256i cols = _mm256_add_epi32(g, base);
                    /* the 8 gaps' total off the loop-carried chain (vpermd is slow) */
                    base = _mm256_add_epi32(base, _mm256_permutevar8x32_epi32(g, last));
                    __m256i xv = _mm256_i32gather_epi32((const int *)xq, cols, 2);
                    __m256i wv = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(val + k)));
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_and_si256(xv, lo16), wv));
                }
                __m128i a4 = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
                a4 = _mm_add_epi32(a4, _mm_shuffle_epi32(a4, 0x4e));
                a4 = _mm_add_epi32(a4, _mm_shuffle_epi32(a4, 0xb1));
                s0 = _mm_cvtsi128_si32(a4);
                int64_t col = _mm256_cvtsi256_si32(base);
                for (; k < k1; k++) col += w->gap[k], s1 += val[k] * (int32_t)xq[col];
            } else if (w->gap) {
                int64_t col = 0, k = k0;
                for (; k + 1 < k1; k += 2) {
                    col += w->gap[k];
                    s0 += val[k] * (int32_t)xq[col * ldq];
                    col += w->gap[k + 1];
                    s1 += val[k + 1] * (int32_t)xq[col * ldq];
                }
                if (k < k1) col += w->gap[k], s0 += val[k] * (int32_t)xq[col * ldq];
            } else {
                for (int64_t k = k0; k < k1; k++) s0 += val[k] * (int32_t)xq[(k - k0) * ldq];
            }
            float v = ((float)(s0 + s1) * w->scale[i]) * xs[0];
            y[i * ldy] = sp_epilogue(v, bias, i, act);
        }
        return;
    }
    if (batch < 16) {
        rows_narrow(w, r0, r1, xq, ldq, batch, xs, y, ldy, bias, act);
        return;
    }
    for (int64_t b0 = 0; b0 < batch; b0 += QT) {
        const int64_t nb = SP_MIN(QT, batch - b0);
        const int nv = (int)((nb + 15) / 16);
        const int16_t *xb = xq + b0;
        float *yb = y + b0;
        if (w->bits == 8) {
            switch (nv) {
            case 1: rows_q8(w, r0, r1, xb, ldq, nb, xs + b0, yb, ldy, bias, act, 1); break;
            case 2: rows_q8(w, r0, r1, xb, ldq, nb, xs + b0, yb, ldy, bias, act, 2); break;
            case 3: rows_q8(w, r0, r1, xb, ldq, nb, xs + b0, yb, ldy, bias, act, 3); break;
            default: rows_q8(w, r0, r1, xb, ldq, nb, xs + b0, yb, ldy, bias, act, 4); break;
            }
            continue;
        }
        switch (nv) {
        case 1: rows_nv(w, r0, r1, xb, ldq, nb, xs + b0, yb, ldy, bias, act, 1); break;
        case 2: rows_nv(w, r0, r1, xb, ldq, nb, xs + b0, yb, ldy, bias, act, 2); break;
        case 3: rows_nv(w, r0, r1, xb, ldq, nb, xs + b0, yb, ldy, bias, act, 3); break;
        default: rows_nv(w, r0, r1, xb, ldq, nb, xs + b0, yb, ldy, bias, act, 4); break;
        }
    }
}
