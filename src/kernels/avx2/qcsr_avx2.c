/*
 * qcsr_avx2.c - AVX2 quantized CSR product and activation quantization.
 *
 * Product, per output row and batch tile of up to 64 columns: stored entries are taken four at
 * a time. For entries (c0..c3, w0..w3) and 32 batch columns, the int8 X rows c0..c3 (one 32-byte
 * load each) are interleaved in two unpack levels (bytes, then 16-bit words) into four vectors
 * whose every int32 lane holds (x[c0][b], x[c1][b], x[c2][b], x[c3][b]) for one batch column b.
 * With w the broadcast bytes (w0, w1, w2, w3):
 *
 *     vpmaddubsw(|w|, vpsignb(quad, w))   int16 lanes w0 x0 + w1 x1 and w2 x2 + w3 x3, exact:
 *                                         the sign moves onto x, so the unsigned operand is |w|
 *                                         <= 127 and each pair sum <= 2 * 127 * 127 < 2^15
 *     vpmaddwd(that, 1)                   int32: the four products of batch column b
 *
 * and the int32 sums of a 64-column tile live in 8 registers. The unpacks leave batch lanes in
 * the order {0-3, 16-19}, {4-7, 20-23}, {8-11, 24-27}, {12-15, 28-31} per 32 columns; that is
 * undone once per row when storing (vperm2i128). Each stored weight reads 64 bytes of X (one
 * cache line per 64 batch columns), half of what int16 X did. A last group of at most 16
 * columns puts two quads of one row side by side in the two 128-bit lanes (rows16, rows16_q4);
 * 4-bit weights of wider tiles and the dense layout are decoded a chunk at a time into the quad
 * loop (rows_decoded), batches below 16 take a plainer loop, batch 1 a gather loop.
 * Shapes: xq (cols x ldq) int8, ldq a multiple of 32 when batch >= 16 (sp_qcsr_ldq).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../kernel_table.h"
#include "../qcsr_x86.h"

#define QT 64     /* batch columns per tile: 2 vectors of 32 int8, 8 int32 accumulators */

static inline __m256i lanes(int64_t n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}

/* 32 floats (already multiplied by inv) -> 32 int8 in order, clamped to [-127, 127] and rounded
 * by vcvtps2dq in the current rounding mode (half to even by default), as rintf does */
static inline __m256i quant32(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
#define SP_Q(v) _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi))
    /* packs works per 128-bit lane: (a0-3 b0-3 | a4-7 b4-7), then bytes (a0-3 b0-3 c0-3 d0-3 |
     * a4-7 b4-7 c4-7 d4-7); vpermd puts the 4-byte groups back in order */
    __m256i ab = _mm256_packs_epi32(SP_Q(a), SP_Q(b)), cd = _mm256_packs_epi32(SP_Q(c), SP_Q(d));
#undef SP_Q
    return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd),
                                       _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* fmaxf(m, |v|) and clamp(rintf(v * inv), -127, 127) as the reference computes them (a NaN
 * v leaves m, and is stored as -127), without the libm calls fmaxf / fminf compile to */
static inline float max_abs(float m, float v) {
    const float a = fabsf(v);
    return a > m ? a : m;
}
static inline int8_t quant1(float v, float inv) {
    float q = rintf(v * inv);
    q = q > -127.0f ? q : -127.0f;
    return (int8_t)(q < 127.0f ? q : 127.0f);
}

/* One sample whose features are contiguous (batch 1, ldx = ldq = 1): vectors run down the
 * features. Returns the no-negative-value flag. */
static bool qact1(const float *x, int64_t rows, float x_scale, float *xs, float *inv,
                  int8_t *xq) {
    int64_t j = 0;
    if (x_scale > 0.0f) {
        xs[0] = x_scale, inv[0] = 1.0f / x_scale;
    } else {
        const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        __m256 mv = _mm256_setzero_ps();
        for (; j + 8 <= rows; j += 8) mv = _mm256_max_ps(mv, _mm256_and_ps(_mm256_loadu_ps(x + j), absmask));
        float lane[8], m = 0.0f;
        _mm256_storeu_ps(lane, mv);
        for (int t = 0; t < 8; t++) m = lane[t] > m ? lane[t] : m; /* max: order-free */
        for (; j < rows; j++) m = max_abs(m, x[j]);
        xs[0] = m / 127.0f;
        inv[0] = m > 0.0f ? 127.0f / m : 0.0f;
    }
    const __m256 iv = _mm256_set1_ps(inv[0]);
    __m256i mn = _mm256_setzero_si256();
    for (j = 0; j + 32 <= rows; j += 32) {
        const __m256i q = quant32(_mm256_mul_ps(_mm256_loadu_ps(x + j), iv),
                                  _mm256_mul_ps(_mm256_loadu_ps(x + j + 8), iv),
                                  _mm256_mul_ps(_mm256_loadu_ps(x + j + 16), iv),
                                  _mm256_mul_ps(_mm256_loadu_ps(x + j + 24), iv));
        mn = _mm256_min_epi8(mn, q);
        _mm256_storeu_si256((__m256i *)(xq + j), q);
    }
    bool neg = false;
    for (; j < rows; j++) xq[j] = quant1(x[j], inv[0]), neg |= xq[j] < 0;
    return !neg && !_mm256_movemask_epi8(mn);
}

bool sp_qact__avx2(const float *x, int64_t ldx, int64_t rows, int64_t batch, float x_scale,
                   float *xs, float *inv, int8_t *xq, int64_t ldq) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    if (batch == 1 && ldx == 1 && ldq == 1) return qact1(x, rows, x_scale, xs, inv, xq);
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
            for (; b < batch; b++) xs[b] = max_abs(xs[b], xr[b]);
        }
        for (b = 0; b < batch; b++) {
            float m = xs[b];
            xs[b] = m / 127.0f;
            inv[b] = m > 0.0f ? 127.0f / m : 0.0f;
        }
    }
    for (b = batch; b < ldq; b++) xs[b] = 0.0f, inv[b] = 0.0f;
    __m256i mn = _mm256_setzero_si256(); /* running minimum of the int8 values */
    bool neg = false;
    const int64_t b32 = batch & ~(int64_t)31;
    for (int64_t b0 = 0; b0 < b32; b0 += 32) { /* 32 columns down all rows, inv in registers */
        __m256 iv[4];
        for (int t = 0; t < 4; t++) iv[t] = _mm256_loadu_ps(inv + b0 + 8 * t);
        for (int64_t j = 0; j < rows; j++) {
            const float *xr = x + j * ldx + b0;
            __m256 v[4];
            for (int t = 0; t < 4; t++) v[t] = _mm256_mul_ps(_mm256_loadu_ps(xr + 8 * t), iv[t]);
            const __m256i q = quant32(v[0], v[1], v[2], v[3]);
            mn = _mm256_min_epi8(mn, q);
            _mm256_storeu_si256((__m256i *)(xq + j * ldq + b0), q);
        }
    }
    for (int64_t j = 0; j < rows; j++) {
        const float *xr = x + j * ldx;
        int8_t *qr = xq + j * ldq;
        b = b32;
        if (b + 16 <= batch) { /* the upper half of quant32's result is the zero vector's */
            const __m256 v0 = _mm256_mul_ps(_mm256_loadu_ps(xr + b), _mm256_loadu_ps(inv + b));
            const __m256 v1 = _mm256_mul_ps(_mm256_loadu_ps(xr + b + 8), _mm256_loadu_ps(inv + b + 8));
            const __m256 z = _mm256_setzero_ps();
            const __m256i q = quant32(v0, v1, z, z);
            mn = _mm256_min_epi8(mn, q);
            _mm_storeu_si128((__m128i *)(qr + b), _mm256_castsi256_si128(q));
            b += 16;
        }
        for (; b < batch; b++) {
            qr[b] = quant1(xr[b], inv[b]);
            neg |= qr[b] < 0; /* the stored value: a NaN input is stored as -127 */
        }
        for (; b < ldq; b++) qr[b] = 0;
    }
    return !neg && !_mm256_movemask_epi8(mn);
}

/* w0 x0 + w1 x1 and w2 x2 + w3 x3 in int16 lanes for quads q of X bytes and w the weight bytes
 * (wa = |w|). POS (no x is negative): x is the unsigned operand as it is. */
static inline __attribute__((always_inline)) __m256i pairs(__m256i q, __m256i w, __m256i wa,
                                                           bool POS) {
    return POS ? _mm256_maddubs_epi16(q, w) : _mm256_maddubs_epi16(wa, _mm256_sign_epi8(q, w));
}

/* acc[4h .. 4h+3] += w . (X rows r0..r3, batch columns 32h .. 32h+31), for h < NH */
static inline __attribute__((always_inline)) void quad(const int8_t *r0, const int8_t *r1,
                                                       const int8_t *r2, const int8_t *r3,
                                                       __m256i w, __m256i *acc, int NH, bool POS) {
    const __m256i wa = POS ? w : _mm256_abs_epi8(w), ones = _mm256_set1_epi16(1);
    for (int h = 0; h < NH; h++) {
        const __m256i a = _mm256_loadu_si256((const __m256i *)(r0 + 32 * h));
        const __m256i b = _mm256_loadu_si256((const __m256i *)(r1 + 32 * h));
        const __m256i c = _mm256_loadu_si256((const __m256i *)(r2 + 32 * h));
        const __m256i d = _mm256_loadu_si256((const __m256i *)(r3 + 32 * h));
        const __m256i abl = _mm256_unpacklo_epi8(a, b), abh = _mm256_unpackhi_epi8(a, b);
        const __m256i cdl = _mm256_unpacklo_epi8(c, d), cdh = _mm256_unpackhi_epi8(c, d);
        __m256i q[4] = {_mm256_unpacklo_epi16(abl, cdl), _mm256_unpackhi_epi16(abl, cdl),
                        _mm256_unpacklo_epi16(abh, cdh), _mm256_unpackhi_epi16(abh, cdh)};
        for (int j = 0; j < 4; j++)
            acc[4 * h + j] = _mm256_add_epi32(acc[4 * h + j],
                                              _mm256_madd_epi16(pairs(q[j], w, wa, POS), ones));
    }
}

/* One row's int8 entries with gaps (the common case): columns summed from the gaps inline on
 * the scalar ports beside the vector work. A short last quad gets zero weights on repeats of
 * its last column. */
static inline __attribute__((always_inline)) void row_gap8(const uint8_t *g, const int8_t *v,
                                                           int64_t n, const int8_t *xb,
                                                           int64_t ldq, __m256i *acc, int NH,
                                                           bool POS) {
    int64_t col = 0, k = 0;
    for (; k + 8 <= n; k += 8) { /* two quads per iteration: a little more room to schedule */
        const int64_t c0 = col + g[k], c1 = c0 + g[k + 1], c2 = c1 + g[k + 2], c3 = c2 + g[k + 3];
        const int64_t c4 = c3 + g[k + 4], c5 = c4 + g[k + 5], c6 = c5 + g[k + 6];
        col = c6 + g[k + 7];
        quad(xb + c0 * ldq, xb + c1 * ldq, xb + c2 * ldq, xb + c3 * ldq,
             _mm256_set1_epi32(sp_load_i32(v + k)), acc, NH, POS);
        quad(xb + c4 * ldq, xb + c5 * ldq, xb + c6 * ldq, xb + col * ldq,
             _mm256_set1_epi32(sp_load_i32(v + k + 4)), acc, NH, POS);
    }
    for (; k + 4 <= n; k += 4) {
        const int64_t c0 = col + g[k], c1 = c0 + g[k + 1], c2 = c1 + g[k + 2], c3 = c2 + g[k + 3];
        col = c3;
        quad(xb + c0 * ldq, xb + c1 * ldq, xb + c2 * ldq, xb + c3 * ldq,
             _mm256_set1_epi32(sp_load_i32(v + k)), acc, NH, POS);
    }
    if (k < n) {
        int64_t c[4];
        int8_t wq[4] = {0, 0, 0, 0};
        for (int m = 0; m < 4; m++) {
            if (k + m < n) col += g[k + m], wq[m] = v[k + m];
            c[m] = col;
        }
        quad(xb + c[0] * ldq, xb + c[1] * ldq, xb + c[2] * ldq, xb + c[3] * ldq,
             _mm256_set1_epi32(sp_load_i32(wq)), acc, NH, POS);
    }
}

/* Writes the row's 64-column tile: sums (or fp32 group sums for bits 4) in the unpack lane
 * order back in batch order, scaled, biased, activated. */
static inline __attribute__((always_inline)) void store_row(const __m256 *f, float *yr, int64_t nb,
                                                            const float *xs, float bias,
                                                            bool has_bias, sp_act act, int NH) {
    for (int h = 0; h < NH; h++) {
        for (int part = 0; part < 4; part++) {
            /* batch 32h + 8 part ..: parts 0, 1 from the low halves of (f0, f1), (f2, f3);
             * parts 2, 3 from the high halves (the selector must be a literal) */
            const __m256 *s = f + 4 * h + (part & 1) * 2;
            __m256 t = part < 2 ? _mm256_permute2f128_ps(s[0], s[1], 0x20)
                                : _mm256_permute2f128_ps(s[0], s[1], 0x31);
            const int64_t b = 32 * h + 8 * part;
            if (b >= nb) return;
            t = _mm256_mul_ps(t, _mm256_loadu_ps(xs + b));
            if (has_bias) t = _mm256_add_ps(t, _mm256_set1_ps(bias));
            if (act == SP_ACT_RELU) t = _mm256_max_ps(t, _mm256_setzero_ps());
            if (b + 8 <= nb) _mm256_storeu_ps(yr + b, t);
            else _mm256_maskstore_ps(yr + b, lanes(nb - b), t);
        }
    }
}

/* store_row for 8-bit weights: the int32 sums times the row's scale */
static inline __attribute__((always_inline)) void store_row8(const __m256i *acc, float scale,
                                                             float *yr, int64_t nb,
                                                             const float *xs, const float *bias,
                                                             int64_t i, sp_act act, int NH) {
    __m256 f[8];
    const __m256 ws = _mm256_set1_ps(scale);
    for (int v = 0; v < 4 * NH; v++) f[v] = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[v]), ws);
    store_row(f, yr, nb, xs, bias ? bias[i] : 0.0f, bias != NULL, act, NH);
}

/* Rows r0..r1 of an 8-bit matrix with gaps (the common case): only the sums are live in the
 * loop, in 4 NH registers. */
static inline __attribute__((always_inline)) void rows_gap8(const sp_qcsr *w, int64_t r0,
                                                            int64_t r1, const int8_t *xb,
                                                            int64_t ldq, int64_t nb,
                                                            const float *xs, float *y,
                                                            int64_t ldy, const float *bias,
                                                            sp_act act, int NH, bool POS) {
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        __m256i acc[8];
        for (int v = 0; v < 4 * NH; v++) acc[v] = _mm256_setzero_si256();
        row_gap8(w->gap + k0, (const int8_t *)w->val + k0, k1 - k0, xb, ldq, acc, NH, POS);
        store_row8(acc, w->scale[i], y + i * ldy, nb, xs, bias, i, act, NH);
    }
}

/* Rows r0..r1 of any other matrix (dense layout, 4-bit weights): entries decoded a chunk at a
 * time (4-bit: never across a scale group), group sums folded into fp32. */
static inline __attribute__((always_inline)) void rows_decoded(const sp_qcsr *w, int64_t r0,
                                                               int64_t r1, const int8_t *xb,
                                                               int64_t ldq, int64_t nb,
                                                               const float *xs, float *y,
                                                               int64_t ldy, const float *bias,
                                                               sp_act act, int NH, bool POS) {
    int64_t off[CHUNK + 4];
    int8_t wv[CHUNK + 4];
    const bool q4 = w->bits == 4;
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        __m256i acc[8];
        __m256 f[8];
        for (int v = 0; v < 4 * NH; v++) acc[v] = _mm256_setzero_si256(), f[v] = _mm256_setzero_ps();
        int64_t col = 0;
        for (int64_t k = k0; k < k1;) {
            int64_t n = SP_MIN(CHUNK, k1 - k);
            if (q4) n = SP_MIN(n, w->group - (k - k0) % w->group);
            const int64_t nq = decode(w, k, n, k0, ldq, &col, off, wv);
            for (int64_t p = 0; p < nq; p++)
                quad(xb + off[4 * p], xb + off[4 * p + 1], xb + off[4 * p + 2],
                     xb + off[4 * p + 3], _mm256_set1_epi32(sp_load_i32(wv + 4 * p)), acc, NH, POS);
            k += n;
            if (q4 && ((k - k0) % w->group == 0 || k == k1)) {
                const __m256 s = _mm256_set1_ps(sp_qcsr_scale_of(w, i, k - 1));
                for (int v = 0; v < 4 * NH; v++) {
                    f[v] = _mm256_add_ps(f[v], _mm256_mul_ps(_mm256_cvtepi32_ps(acc[v]), s));
                    acc[v] = _mm256_setzero_si256();
                }
            }
        }
        if (q4) store_row(f, y + i * ldy, nb, xs, bias ? bias[i] : 0.0f, bias != NULL, act, NH);
        else store_row8(acc, w->scale[i], y + i * ldy, nb, xs, bias, i, act, NH);
    }
}

/* At most 16 batch columns: a quad of 16 columns fills only one 128-bit lane, so two quads of
 * the same row go side by side, entries k..k+3 in the low lane and k+4..k+7 in the high one
 * (one 16-byte X row load into each lane), and the two lanes are added when a row (8-bit) or a
 * scale group (4-bit) ends. Each lane's four sums hold batch columns 0-3, 4-7, 8-11, 12-15 in
 * order. */

/* acc += entries [0, n) of values v (kb: the row position of v[0], for the dense layout) with
 * gaps g (NULL: dense layout; col updated), a short last octet with zero weights on repeats of
 * its last column */
static inline __attribute__((always_inline)) void octets(const uint8_t *g, const int8_t *v,
                                                         int64_t n, int64_t kb,
                                                         const int8_t *xb, int64_t ldq,
                                                         int64_t *colp, __m256i *acc, bool POS) {
    const __m256i ones = _mm256_set1_epi16(1), spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    int64_t col = *colp;
    for (int64_t k = 0; k < n; k += 8) {
        int64_t c[8];
        int8_t wq[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (k + 8 <= n) {
            for (int m = 0; m < 8; m++) c[m] = col = g ? col + g[k + m] : kb + k + m;
            memcpy(wq, v + k, 8);
        } else {
            for (int m = 0; m < 8; m++) {
                if (k + m < n) col = g ? col + g[k + m] : kb + k + m, wq[m] = v[k + m];
                c[m] = col;
            }
        }
        int64_t w8;
        memcpy(&w8, wq, 8);
        /* low lane: bytes 0-3 four times, high lane: bytes 4-7 four times */
        const __m256i wv = _mm256_permutevar8x32_epi32(_mm256_set1_epi64x(w8), spread);
        const __m256i wa = POS ? wv : _mm256_abs_epi8(wv);
#define SP_LD2(m) _mm256_loadu2_m128i((const __m128i *)(xb + c[(m) + 4] * ldq), (const __m128i *)(xb + c[m] * ldq))
        const __m256i xa = SP_LD2(0), xb1 = SP_LD2(1), xc = SP_LD2(2), xd = SP_LD2(3);
#undef SP_LD2
        const __m256i abl = _mm256_unpacklo_epi8(xa, xb1), abh = _mm256_unpackhi_epi8(xa, xb1);
        const __m256i cdl = _mm256_unpacklo_epi8(xc, xd), cdh = _mm256_unpackhi_epi8(xc, xd);
        const __m256i q[4] = {_mm256_unpacklo_epi16(abl, cdl), _mm256_unpackhi_epi16(abl, cdl),
                              _mm256_unpacklo_epi16(abh, cdh), _mm256_unpackhi_epi16(abh, cdh)};
        for (int j = 0; j < 4; j++)
            acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(pairs(q[j], wv, wa, POS), ones));
    }
    *colp = col;
}

/* the low and high lanes of acc added: s[0] = batch 0-7, s[1] = 8-15 */
static inline void lanes16(const __m256i *acc, __m256i *s) {
    s[0] = _mm256_add_epi32(_mm256_permute2x128_si256(acc[0], acc[1], 0x20),
                            _mm256_permute2x128_si256(acc[0], acc[1], 0x31));
    s[1] = _mm256_add_epi32(_mm256_permute2x128_si256(acc[2], acc[3], 0x20),
                            _mm256_permute2x128_si256(acc[2], acc[3], 0x31));
}

/* y[0 .. nb) of a row from its fp32 sums f (batch 0-7, 8-15) */
static inline __attribute__((always_inline)) void store16(const __m256 *f, float *yr, int64_t nb,
                                                          const float *xs, const float *bias,
                                                          int64_t i, sp_act act) {
    const __m256 bv = _mm256_set1_ps(bias ? bias[i] : 0.0f);
    for (int h = 0; h < 2; h++) {
        const int64_t b = 8 * h;
        if (b >= nb) break;
        __m256 t = _mm256_mul_ps(f[h], _mm256_loadu_ps(xs + b));
        if (bias) t = _mm256_add_ps(t, bv);
        if (act == SP_ACT_RELU) t = _mm256_max_ps(t, _mm256_setzero_ps());
        if (b + 8 <= nb) _mm256_storeu_ps(yr + b, t);
        else _mm256_maskstore_ps(yr + b, lanes(nb - b), t);
    }
}

/* 8-bit weights */
static inline __attribute__((always_inline)) void rows16(const sp_qcsr *w, int64_t r0,
                                                         int64_t r1, const int8_t *xb,
                                                         int64_t ldq, int64_t nb,
                                                         const float *xs, float *y, int64_t ldy,
                                                         const float *bias, sp_act act,
                                                         bool POS) {
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        __m256i acc[4], s[2];
        __m256 f[2];
        for (int j = 0; j < 4; j++) acc[j] = _mm256_setzero_si256();
        int64_t col = 0;
        octets(w->gap ? w->gap + k0 : NULL, (const int8_t *)w->val + k0, k1 - k0, 0, xb, ldq,
               &col, acc, POS);
        lanes16(acc, s);
        const __m256 ws = _mm256_set1_ps(w->scale[i]);
        for (int h = 0; h < 2; h++) f[h] = _mm256_mul_ps(_mm256_cvtepi32_ps(s[h]), ws);
        store16(f, y + i * ldy, nb, xs, bias, i, act);
    }
}

/* 4-bit weights: a chunk decoded at a time from a whole byte; octets never cross a scale group,
 * so a group's int32 sums are whole when it ends, and are folded into fp32 there */
static inline __attribute__((always_inline)) void rows16_q4(const sp_qcsr *w, int64_t r0,
                                                            int64_t r1, const int8_t *xb,
                                                            int64_t ldq, int64_t nb,
                                                            const float *xs, float *y,
                                                            int64_t ldy, const float *bias,
                                                            sp_act act, bool POS) {
    int8_t dec[CHUNK];
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        const uint8_t *g = w->gap ? w->gap + k0 : NULL;
        __m256i acc[4], s[2];
        __m256 f[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int j = 0; j < 4; j++) acc[j] = _mm256_setzero_si256();
        int64_t col = 0;
        for (int64_t kc = k0 & ~(int64_t)1; kc < k1; kc += CHUNK) {
            const int64_t end = SP_MIN(k1, kc + CHUNK);
            q4_values(w->val, kc, end - kc, dec);
            for (int64_t k = SP_MAX(kc, k0); k < end;) {
                const int64_t n = SP_MIN(end - k, w->group - (k - k0) % w->group);
                octets(g ? g + (k - k0) : NULL, dec + (k - kc), n, k - k0, xb, ldq, &col, acc,
                       POS);
                k += n;
                if ((k - k0) % w->group == 0 || k == k1) {
                    const __m256 sc = _mm256_set1_ps(sp_qcsr_scale_of(w, i, k - 1));
                    lanes16(acc, s);
                    for (int h = 0; h < 2; h++)
                        f[h] = _mm256_add_ps(f[h], _mm256_mul_ps(_mm256_cvtepi32_ps(s[h]), sc));
                    for (int j = 0; j < 4; j++) acc[j] = _mm256_setzero_si256();
                }
            }
        }
        store16(f, y + i * ldy, nb, xs, bias, i, act);
    }
}

/* 4-bit weights, at most 16 columns: out of line, so that the 8-bit loops' register
 * allocation in the inlined tile stays as it was (inlined, it cost the 8-bit batch-64 loop
 * ~6%) */
static __attribute__((noinline)) void rows16_q4_pos(const sp_qcsr *w, int64_t r0, int64_t r1,
                                                     const int8_t *xb, int64_t ldq, int64_t nb,
                                                     const float *xs, float *y, int64_t ldy,
                                                     const float *bias, sp_act act) {
    rows16_q4(w, r0, r1, xb, ldq, nb, xs, y, ldy, bias, act, true);
}
static __attribute__((noinline)) void rows16_q4_sign(const sp_qcsr *w, int64_t r0, int64_t r1,
                                                      const int8_t *xb, int64_t ldq, int64_t nb,
                                                      const float *xs, float *y, int64_t ldy,
                                                      const float *bias, sp_act act) {
    rows16_q4(w, r0, r1, xb, ldq, nb, xs, y, ldy, bias, act, false);
}

/* batch < 16 (a whole call's, or a short last tile's): plain sums per entry */
static void rows_narrow(const sp_qcsr *w, int64_t r0, int64_t r1, const int8_t *xq, int64_t ldq,
                        int64_t batch, const float *xs, float *y, int64_t ldy, const float *bias,
                        sp_act act) {
    int64_t off[CHUNK + 4];
    int8_t wv[CHUNK + 4];
    const bool q4 = w->bits == 4;
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        int32_t acc[16] = {0};
        float f[16] = {0};
        int64_t col = 0;
        for (int64_t k = k0; k < k1;) {
            int64_t n = SP_MIN(CHUNK, k1 - k);
            if (q4) n = SP_MIN(n, w->group - (k - k0) % w->group);
            decode(w, k, n, k0, ldq, &col, off, wv);
            for (int64_t m = 0; m < n; m++) {
                const int32_t q = wv[m];
                const int8_t *a = xq + off[m];
                for (int64_t b = 0; b < batch; b++) acc[b] += q * a[b];
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

/* sum over m < n of wv[m] x[c_m], the columns c_m following the gaps from *col (updated), for
 * one contiguous sample x. 8 entries at a time: prefix sum of the gaps in a vector, one gather
 * of 4-byte words at the columns (the workspace holds 64 spare bytes past X), the low byte
 * sign-extended into the low 16 bits with the upper 16 cleared, vpmaddwd against the int32
 * weights: w * x exactly. */
static inline int32_t dot_gap(const uint8_t *gap, const int8_t *wv, int64_t n, const int8_t *xq,
                              int64_t *col) {
    const __m256i lo16 = _mm256_set1_epi32(0xffff), last = _mm256_set1_epi32(7);
    __m256i base = _mm256_set1_epi32((int32_t)*col), acc = _mm256_setzero_si256();
    int64_t m = 0;
    for (; m + 8 <= n; m += 8) {
        __m256i g = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(gap + m)));
        g = _mm256_add_epi32(g, _mm256_slli_si256(g, 4));
        g = _mm256_add_epi32(g, _mm256_slli_si256(g, 8));
        __m256i h = _mm256_shuffle_epi32(g, 0xff);                      /* lane 3 of each half */
        g = _mm256_add_epi32(g, _mm256_permute2x128_si256(h, h, 0x08)); /* to the high half */
        const __m256i cols = _mm256_add_epi32(g, base);
        /* the 8 gaps' total off the loop-carried chain (vpermd is slow) */
        base = _mm256_add_epi32(base, _mm256_permutevar8x32_epi32(g, last));
        __m256i xv = _mm256_i32gather_epi32((const int *)xq, cols, 1);
        xv = _mm256_and_si256(_mm256_srai_epi16(_mm256_slli_epi16(xv, 8), 8), lo16);
        const __m256i w8 = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(wv + m)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(xv, w8));
    }
    __m128i a4 = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    a4 = _mm_add_epi32(a4, _mm_shuffle_epi32(a4, 0x4e));
    a4 = _mm_add_epi32(a4, _mm_shuffle_epi32(a4, 0xb1));
    int32_t s = _mm_cvtsi128_si32(a4);
    int64_t c = _mm256_cvtsi256_si32(base);
    for (; m < n; m++) c += gap[m], s += wv[m] * (int32_t)xq[c];
    *col = c;
    return s;
}

/* batch 1: one int32 dot product per row (8-bit), or per scale group, folded into fp32 in the
 * reference's order (4-bit, with gaps and a contiguous sample: the caller sends the rest to
 * rows_narrow) */
static void rows_spmv(const sp_qcsr *w, int64_t r0, int64_t r1, const int8_t *xq, int64_t ldq,
                      const float *xs, float *y, int64_t ldy, const float *bias, sp_act act) {
    const int8_t *val = w->val;
    int8_t wv[CHUNK];
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        int32_t s0 = 0, s1 = 0;
        int64_t col = 0;
        if (w->bits == 4) {
            /* decoded a chunk at a time from a whole byte (the vector decode), then group by
             * group */
            float f = 0.0f;
            for (int64_t kc = k0 & ~(int64_t)1; kc < k1; kc += CHUNK) {
                const int64_t end = SP_MIN(k1, kc + CHUNK);
                q4_values(w->val, kc, end - kc, wv);
                for (int64_t k = SP_MAX(kc, k0); k < end;) {
                    const int64_t n = SP_MIN(end - k, w->group - (k - k0) % w->group);
                    s0 += dot_gap(w->gap + k, wv + (k - kc), n, xq, &col);
                    k += n;
                    if ((k - k0) % w->group == 0 || k == k1) {
                        f += (float)s0 * sp_qcsr_scale_of(w, i, k - 1);
                        s0 = 0;
                    }
                }
            }
            y[i * ldy] = sp_epilogue(f * xs[0], bias, i, act);
            continue;
        }
        if (w->gap && ldq == 1) {
            s0 = dot_gap(w->gap + k0, val + k0, k1 - k0, xq, &col);
        } else if (w->gap) {
            int64_t k = k0;
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
}

/* One tile of at most 64 batch columns (xb, yb, xs at its first column) */
static inline __attribute__((always_inline)) void tile(const sp_qcsr *w, int64_t r0, int64_t r1,
                                                       const int8_t *xb, int64_t ldq, int64_t nb,
                                                       const float *xs, float *yb, int64_t ldy,
                                                       const float *bias, sp_act act, bool POS) {
    if (w->bits == 8) {
        /* whole 32-column halves (a part-filled one when more than 16 columns are left),
         * then a last group of at most 16 columns (rows16) */
        const int64_t n32 = nb > 48 || (nb > 16 && nb <= 32) ? nb : nb > 32 ? 32 : 0;
        if (n32 > 32 && w->gap) rows_gap8(w, r0, r1, xb, ldq, n32, xs, yb, ldy, bias, act, 2, POS);
        else if (n32 > 32) rows_decoded(w, r0, r1, xb, ldq, n32, xs, yb, ldy, bias, act, 2, POS);
        else if (n32 > 0 && w->gap) rows_gap8(w, r0, r1, xb, ldq, n32, xs, yb, ldy, bias, act, 1, POS);
        else if (n32 > 0) rows_decoded(w, r0, r1, xb, ldq, n32, xs, yb, ldy, bias, act, 1, POS);
        if (nb > n32)
            rows16(w, r0, r1, xb + n32, ldq, nb - n32, xs + n32, yb + n32, ldy, bias, act, POS);
    } else if (nb > 32) {
        rows_decoded(w, r0, r1, xb, ldq, nb, xs, yb, ldy, bias, act, 2, POS);
    } else if (nb > 16) {
        rows_decoded(w, r0, r1, xb, ldq, nb, xs, yb, ldy, bias, act, 1, POS);
    } else {
        if (POS) rows16_q4_pos(w, r0, r1, xb, ldq, nb, xs, yb, ldy, bias, act);
        else rows16_q4_sign(w, r0, r1, xb, ldq, nb, xs, yb, ldy, bias, act);
    }
}

void sp_i8_spmm_qcsr__avx2(const sp_qcsr *w, int64_t r0, int64_t r1, const int8_t *xq,
                           int64_t ldq, int64_t batch, const float *xs, float *y, int64_t ldy,
                           const float *bias, sp_act act, bool xpos) {
    if (batch == 1 && (w->bits == 8 || (w->gap && ldq == 1))) {
        rows_spmv(w, r0, r1, xq, ldq, xs, y, ldy, bias, act);
        return;
    }
    if (batch < 16) {
        rows_narrow(w, r0, r1, xq, ldq, batch, xs, y, ldy, bias, act);
        return;
    }
    for (int64_t b0 = 0; b0 < batch; b0 += QT) {
        const int64_t nb = SP_MIN(QT, batch - b0);
        if (xpos) tile(w, r0, r1, xq + b0, ldq, nb, xs + b0, y + b0, ldy, bias, act, true);
        else tile(w, r0, r1, xq + b0, ldq, nb, xs + b0, y + b0, ldy, bias, act, false);
    }
}
