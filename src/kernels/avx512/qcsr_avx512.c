/*
 * qcsr_avx512.c - AVX-512 quantized CSR: activation quantization, and the VNNI product for
 * batches of 16 and more.
 *
 * vpdpbusd adds to each int32 lane the four products of its unsigned bytes (first operand) with
 * the signed bytes in the same lane of the second operand, modulo 2^32. Per output row and tile
 * of up to 64 batch columns, stored entries are taken four at a time (columns c0..c3, weights
 * w0..w3): the int8 X rows c0..c3 (one 64-byte load each) are interleaved in two unpack levels
 * (bytes, then 16-bit words) into four vectors whose every int32 lane holds (x[c0][b],
 * x[c1][b], x[c2][b], x[c3][b]) for one batch column b, and
 *
 *     acc = vpdpbusd(acc, quad, broadcast(w0 w1 w2 w3))    acc[b] += w0 x0 + w1 x1 + w2 x2 + w3 x3
 *
 * X is the unsigned operand. Without negative values (xpos: after a ReLU) its bytes are used as
 * they are. Signed X is shifted into [1, 255] by flipping the top bit (x + 128), and 128 times
 * the sum of the weights is subtracted once per row (per scale group for 4-bit weights):
 * sum w (x + 128) - 128 sum w = sum w x. The true sum fits in int32 (SP_QCSR_MAX_ROW) and
 * every addition is modulo 2^32, so the result is exact even where the shifted sum wraps.
 *
 * Per four stored entries and 64 batch columns that is four loads, eight unpacks and four
 * vpdpbusd (plus four xors for signed X): 256 multiply-adds, where the fp32 product needs 16
 * FMAs, and a quarter of its X bytes. The unpacks work within 128-bit lanes: accumulator j holds
 * batch column 16 L + 4 j + t in lane t of 128-bit block L; a 4x4 transpose of 128-bit blocks
 * per row restores the batch order before scaling. The int32 sums and the fp32 scaling order are
 * the reference's, so results are bit-identical to it.
 *
 * Activations are quantized with AVX-512 F/BW (sp_qact__avx512, no VNNI needed): one pass for
 * the per-sample maxima, one that scales, rounds and packs 64 columns per row with vpackssdw /
 * vpacksswb. Batches up to 16 (batch 1 included) and tiles of at most 16 columns run the AVX2
 * product, whose 16-column path fills its vectors (a 64-byte load here would carry three
 * quarters padding). Shapes: xq (cols x ldq) int8, ldq a multiple of 32 (sp_qcsr_ldq); a short
 * tile reads X, xs and writes Y with masks only.
 */
#include <immintrin.h>
#include <string.h>

#include "../kernel_table.h"
#include "../qcsr_x86.h"

#define QT 64 /* batch columns per tile: one 64-byte X load per stored entry */

/* The first n of 64 lanes (bytes) / 16 lanes (floats) */
static inline __mmask64 bytes_mask(int64_t n) { return n >= 64 ? ~0ull : (1ull << n) - 1; }
static inline __mmask16 floats_mask(int64_t n) {
    return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
}

/* ---- activation quantization (AVX-512 F/BW; the reference's values and flag) ----------------- */

/* 16 floats already multiplied by inv -> int32, clamped above only: min(127, v) keeps a NaN (the
 * second operand), and vcvtps2dq (rounding half to even by default, as rintf does) turns a NaN
 * or a value below -2^31 into INT32_MIN; after a saturating pack to bytes one vpmaxsb with -127
 * clamps from below, a NaN included, as the reference's fmaxf / fminf leave it */
static inline __m512i quant16i(__m512 v) {
    return _mm512_cvtps_epi32(_mm512_min_ps(_mm512_set1_ps(127.0f), v));
}

/* quant16i packed to 16 int8 in order (vpmovsdb) and clamped */
static inline __m128i quant16(__m512 v) {
    return _mm_max_epi8(_mm512_cvtsepi32_epi8(quant16i(v)), _mm_set1_epi8(-127));
}

/* max(m, |v|) that keeps m for a NaN v, as fmaxf does (vmaxps returns its second operand when
 * either is NaN) */
static inline __m512 max_abs16(__m512 m, __m512 v) { return _mm512_max_ps(_mm512_abs_ps(v), m); }

/* One sample whose features are contiguous (batch 1, ldx = ldq = 1): vectors run down the
 * features. Returns the no-negative-value flag. */
static bool qact1(const float *x, int64_t rows, float x_scale, float *xs, float *inv,
                  int8_t *xq) {
    if (x_scale > 0.0f) {
        xs[0] = x_scale, inv[0] = 1.0f / x_scale;
    } else {
        __m512 mv = _mm512_setzero_ps();
        for (int64_t j = 0; j < rows; j += 16)
            mv = max_abs16(mv, _mm512_maskz_loadu_ps(floats_mask(rows - j), x + j));
        const float m = _mm512_reduce_max_ps(mv); /* max: order-free */
        xs[0] = m / 127.0f;
        inv[0] = m > 0.0f ? 127.0f / m : 0.0f;
    }
    const __m512 iv = _mm512_set1_ps(inv[0]);
    __m128i mn = _mm_setzero_si128();
    for (int64_t j = 0; j < rows; j += 16) {
        const __mmask16 m = floats_mask(rows - j);
        const __m128i q = quant16(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), iv));
        mn = _mm_mask_min_epi8(mn, m, mn, q); /* lanes past rows: 0 * inv is NaN if inv is inf */
        _mm_mask_storeu_epi8(xq + j, m, q);
    }
    return !_mm_movemask_epi8(mn);
}

bool sp_qact__avx512(const float *x, int64_t ldx, int64_t rows, int64_t batch, float x_scale,
                     float *xs, float *inv, int8_t *xq, int64_t ldq) {
    if (batch == 1 && ldx == 1 && ldq == 1) return qact1(x, rows, x_scale, xs, inv, xq);
    if (x_scale > 0.0f) {
        for (int64_t b = 0; b < batch; b++) xs[b] = x_scale, inv[b] = 1.0f / x_scale;
    } else {
        /* 64 samples at a time, the running maxima in 4 registers */
        for (int64_t b0 = 0; b0 < batch; b0 += 64) {
            __m512 m[4];
            __mmask16 k[4];
            for (int v = 0; v < 4; v++) m[v] = _mm512_setzero_ps(), k[v] = floats_mask(SP_MAX(0, batch - b0 - 16 * v));
            for (int64_t j = 0; j < rows; j++) {
                const float *xr = x + j * ldx + b0;
                for (int v = 0; v < 4; v++) m[v] = max_abs16(m[v], _mm512_maskz_loadu_ps(k[v], xr + 16 * v));
            }
            for (int v = 0; v < 4; v++) _mm512_mask_storeu_ps(xs + b0 + 16 * v, k[v], m[v]);
        }
        for (int64_t b = 0; b < batch; b++) {
            const float m = xs[b];
            xs[b] = m / 127.0f;
            inv[b] = m > 0.0f ? 127.0f / m : 0.0f;
        }
    }
    for (int64_t b = batch; b < ldq; b++) xs[b] = 0.0f, inv[b] = 0.0f;
    /* 64 columns down all rows, inv in registers; the padding columns [batch, ldq) quantize a
     * masked-off (zero) x with inv 0 to 0 */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m512i mn = _mm512_setzero_si512(); /* running minimum of the int8 values */
    for (int64_t b0 = 0; b0 < ldq; b0 += 64) {
        __m512 iv[4];
        __mmask16 kx[4];
        for (int v = 0; v < 4; v++) {
            kx[v] = floats_mask(SP_MAX(0, batch - b0 - 16 * v));
            iv[v] = _mm512_maskz_loadu_ps(floats_mask(SP_MAX(0, ldq - b0 - 16 * v)), inv + b0 + 16 * v);
        }
        const __mmask64 kq = bytes_mask(ldq - b0);
        for (int64_t j = 0; j < rows; j++) {
            const float *xr = x + j * ldx + b0;
            __m512i q[4];
            for (int v = 0; v < 4; v++) q[v] = quant16i(_mm512_mul_ps(_mm512_maskz_loadu_ps(kx[v], xr + 16 * v), iv[v]));
            /* packs work per 128-bit block: block L holds columns 4L..4L+3 of q0, q1, q2, q3
             * (dword 4L + v); vpermd puts dword 4L + v at 4v + L */
            __m512i p = _mm512_packs_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]));
            p = _mm512_max_epi8(_mm512_permutexvar_epi32(order, p), _mm512_set1_epi8(-127));
            mn = _mm512_min_epi8(mn, p);
            _mm512_mask_storeu_epi8(xq + j * ldq + b0, kq, p);
        }
    }
    return !_mm512_movepi8_mask(mn);
}

/* ---- the product ----------------------------------------------------------------------------- */

/* acc + the four products of the unsigned bytes of a with the signed bytes of b, per int32 lane
 * (modulo 2^32). Written out because GCC 12 copied the accumulators between registers around
 * the _mm512_dpbusd_epi32 builtin, up to eight moves per loop iteration; and so the file is
 * compiled without -mavx512vnni: the compiler cannot put VNNI instructions anywhere else, such
 * as in sp_qact__avx512, which also runs on AVX-512 machines without VNNI. */
static inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}

/* Four int32 sums of a 64-column tile, in the unpack lane order. Passed and returned by value:
 * through a pointer GCC copied the sums between registers on every quad. */
typedef struct acc4 {
    __m512i v[4];
} acc4;

/* acc + w . (X rows r0..r3 of the tile). FULL: 64 columns, plain loads; else the masked load
 * of the tile's m columns. POS: X has no negative value. */
static inline __attribute__((always_inline)) acc4 quad(const int8_t *r0, const int8_t *r1,
                                                       const int8_t *r2, const int8_t *r3,
                                                       __m512i w, acc4 acc, __mmask64 m,
                                                       bool FULL, bool POS) {
    __m512i a, b, c, d;
    if (FULL) {
        a = _mm512_loadu_si512(r0), b = _mm512_loadu_si512(r1);
        c = _mm512_loadu_si512(r2), d = _mm512_loadu_si512(r3);
    } else {
        a = _mm512_maskz_loadu_epi8(m, r0), b = _mm512_maskz_loadu_epi8(m, r1);
        c = _mm512_maskz_loadu_epi8(m, r2), d = _mm512_maskz_loadu_epi8(m, r3);
    }
    if (!POS) {
        const __m512i flip = _mm512_set1_epi8((char)0x80);
        a = _mm512_xor_si512(a, flip), b = _mm512_xor_si512(b, flip);
        c = _mm512_xor_si512(c, flip), d = _mm512_xor_si512(d, flip);
    }
    const __m512i abl = _mm512_unpacklo_epi8(a, b), abh = _mm512_unpackhi_epi8(a, b);
    const __m512i cdl = _mm512_unpacklo_epi8(c, d), cdh = _mm512_unpackhi_epi8(c, d);
    acc.v[0] = dpbusd(acc.v[0], _mm512_unpacklo_epi16(abl, cdl), w);
    acc.v[1] = dpbusd(acc.v[1], _mm512_unpackhi_epi16(abl, cdl), w);
    acc.v[2] = dpbusd(acc.v[2], _mm512_unpacklo_epi16(abh, cdh), w);
    acc.v[3] = dpbusd(acc.v[3], _mm512_unpackhi_epi16(abh, cdh), w);
    return acc;
}

/* Sum of n int8 values (the shift correction): bytes flipped to v + 128 and summed by vpsadbw */
static inline int64_t sum_i8(const int8_t *v, int64_t n) {
    const __m512i flip = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    __m512i s = zero;
    for (int64_t k = 0; k < n; k += 64) {
        const __mmask64 m = bytes_mask(n - k);
        const __m512i x = _mm512_maskz_mov_epi8(m, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, v + k), flip));
        s = _mm512_add_epi64(s, _mm512_sad_epu8(x, zero));
    }
    return _mm512_reduce_add_epi64(s) - 128 * n;
}

/* acc - 128 * wsum in every lane, modulo 2^32 as vpdpbusd added */
static inline __m512i unshift(__m512i acc, int64_t wsum) {
    return _mm512_sub_epi32(acc, _mm512_set1_epi32((int32_t)(uint32_t)(uint64_t)(wsum * 128)));
}

/* The fp32 sums f (unpack lane order) of one row's tile in batch order, times xs, plus bias,
 * activated, stored: nb columns, the last vector masked */
static inline __attribute__((always_inline)) void store_row(const __m512 *f, float *yr, int64_t nb,
                                                            const float *xs, const float *bias,
                                                            int64_t i, sp_act act) {
    /* 4x4 transpose of 128-bit blocks: out h = block h of f0, f1, f2, f3 */
    const __m512 t0 = _mm512_shuffle_f32x4(f[0], f[1], 0x44), t1 = _mm512_shuffle_f32x4(f[2], f[3], 0x44);
    const __m512 t2 = _mm512_shuffle_f32x4(f[0], f[1], 0xee), t3 = _mm512_shuffle_f32x4(f[2], f[3], 0xee);
    const __m512 out[4] = {_mm512_shuffle_f32x4(t0, t1, 0x88), _mm512_shuffle_f32x4(t0, t1, 0xdd),
                           _mm512_shuffle_f32x4(t2, t3, 0x88), _mm512_shuffle_f32x4(t2, t3, 0xdd)};
    const __m512 bv = _mm512_set1_ps(bias ? bias[i] : 0.0f);
    for (int h = 0; h < 4; h++) {
        const int64_t b = 16 * h;
        if (b >= nb) break;
        const __mmask16 m = floats_mask(nb - b);
        __m512 t = _mm512_mul_ps(out[h], _mm512_maskz_loadu_ps(m, xs + b));
        if (bias) t = _mm512_add_ps(t, bv);
        if (act == SP_ACT_RELU) t = _mm512_max_ps(t, _mm512_setzero_ps()); /* NaN -> 0 */
        _mm512_mask_storeu_ps(yr + b, m, t);
    }
}

/* Rows r0..r1 of an 8-bit matrix: GAP, columns from the gaps (summed inline on the scalar ports
 * beside the vector work); else the dense layout, columns 0, 1, 2, ... Two sets of sums, for
 * alternate quads, shorten the dependency chains; a short last quad gets zero weights on
 * repeats of its last column. */
static inline __attribute__((always_inline)) void rows8(const sp_qcsr *w, int64_t r0, int64_t r1,
                                                        const int8_t *xb, int64_t ldq, int64_t nb,
                                                        const float *xs, float *y, int64_t ldy,
                                                        const float *bias, sp_act act, bool GAP,
                                                        bool FULL, bool POS) {
    const __mmask64 m = bytes_mask(nb);
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], n = w->row_ptr[i + 1] - k0;
        const uint8_t *g = GAP ? w->gap + k0 : NULL;
        const int8_t *v = (const int8_t *)w->val + k0;
        acc4 a, b;
        for (int j = 0; j < 4; j++) a.v[j] = b.v[j] = _mm512_setzero_si512();
        int64_t col = GAP ? 0 : -1, k = 0;
#define SP_NEXT(e) (col = GAP ? col + g[e] : col + 1)
        for (; k + 8 <= n; k += 8) {
            /* the columns of 8 entries from the gaps as a tree of sums: two dependent adds per
             * iteration carry col, not eight (the chain bounded the loop) */
            const int64_t g0 = GAP ? g[k] : 1, g1 = GAP ? g[k + 1] : 1, g2 = GAP ? g[k + 2] : 1;
            const int64_t g3 = GAP ? g[k + 3] : 1, g4 = GAP ? g[k + 4] : 1, g5 = GAP ? g[k + 5] : 1;
            const int64_t g6 = GAP ? g[k + 6] : 1, g7 = GAP ? g[k + 7] : 1;
            const int64_t t01 = g0 + g1, t45 = g4 + g5;
            const int64_t c3 = col + (t01 + (g2 + g3)), c7 = c3 + (t45 + (g6 + g7));
            const int64_t c0 = col + g0, c1 = col + t01, c2 = c1 + g2;
            const int64_t c4 = c3 + g4, c5 = c3 + t45, c6 = c5 + g6;
            col = c7;
            a = quad(xb + c0 * ldq, xb + c1 * ldq, xb + c2 * ldq, xb + c3 * ldq,
                     _mm512_set1_epi32(sp_load_i32(v + k)), a, m, FULL, POS);
            b = quad(xb + c4 * ldq, xb + c5 * ldq, xb + c6 * ldq, xb + c7 * ldq,
                     _mm512_set1_epi32(sp_load_i32(v + k + 4)), b, m, FULL, POS);
        }
        if (k + 4 <= n) {
            const int64_t c0 = SP_NEXT(k), c1 = SP_NEXT(k + 1), c2 = SP_NEXT(k + 2), c3 = SP_NEXT(k + 3);
            a = quad(xb + c0 * ldq, xb + c1 * ldq, xb + c2 * ldq, xb + c3 * ldq,
                     _mm512_set1_epi32(sp_load_i32(v + k)), a, m, FULL, POS);
            k += 4;
        }
        if (k < n) {
            int64_t c[4];
            int8_t wq[4] = {0, 0, 0, 0};
            for (int e = 0; e < 4; e++) {
                if (k + e < n) SP_NEXT(k + e), wq[e] = v[k + e];
                c[e] = col;
            }
            b = quad(xb + c[0] * ldq, xb + c[1] * ldq, xb + c[2] * ldq, xb + c[3] * ldq,
                     _mm512_set1_epi32(sp_load_i32(wq)), b, m, FULL, POS);
        }
#undef SP_NEXT
        const int64_t wsum = POS ? 0 : sum_i8(v, n);
        const __m512 s = _mm512_set1_ps(w->scale[i]);
        __m512 f[4];
        for (int j = 0; j < 4; j++)
            f[j] = _mm512_mul_ps(_mm512_cvtepi32_ps(unshift(_mm512_add_epi32(a.v[j], b.v[j]), wsum)), s);
        store_row(f, y + i * ldy, nb, xs, bias, i, act);
    }
}

/* Rows r0..r1 of a 4-bit matrix: entries decoded a chunk at a time (never across a scale
 * group), each group's exact sums folded into fp32 when it ends, in the reference's order. */
static inline __attribute__((always_inline)) void rows4(const sp_qcsr *w, int64_t r0, int64_t r1,
                                                        const int8_t *xb, int64_t ldq, int64_t nb,
                                                        const float *xs, float *y, int64_t ldy,
                                                        const float *bias, sp_act act, bool FULL,
                                                        bool POS) {
    const __mmask64 m = bytes_mask(nb);
    int64_t off[CHUNK + 4];
    int8_t wv[CHUNK + 4];
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        acc4 acc;
        __m512 f[4];
        for (int j = 0; j < 4; j++) acc.v[j] = _mm512_setzero_si512(), f[j] = _mm512_setzero_ps();
        int64_t col = 0, wsum = 0;
        for (int64_t k = k0; k < k1;) {
            const int64_t n = SP_MIN(SP_MIN(CHUNK, k1 - k), w->group - (k - k0) % w->group);
            const int64_t nq = decode(w, k, n, k0, ldq, &col, off, wv);
            for (int64_t p = 0; p < nq; p++)
                acc = quad(xb + off[4 * p], xb + off[4 * p + 1], xb + off[4 * p + 2],
                           xb + off[4 * p + 3], _mm512_set1_epi32(sp_load_i32(wv + 4 * p)), acc, m,
                           FULL, POS);
            if (!POS) wsum += sum_i8(wv, n);
            k += n;
            if ((k - k0) % w->group == 0 || k == k1) {
                const __m512 s = _mm512_set1_ps(sp_qcsr_scale_of(w, i, k - 1));
                for (int j = 0; j < 4; j++) {
                    f[j] = _mm512_add_ps(f[j], _mm512_mul_ps(_mm512_cvtepi32_ps(unshift(acc.v[j], wsum)), s));
                    acc.v[j] = _mm512_setzero_si512();
                }
                wsum = 0;
            }
        }
        store_row(f, y + i * ldy, nb, xs, bias, i, act);
    }
}

/* One tile (xb, xs, yb at its first batch column), each specialization out of line */
#define SP_ROWS8(name, GAP, FULL, POS)                                                          \
    static __attribute__((noinline)) void name(const sp_qcsr *w, int64_t r0, int64_t r1,        \
                                               const int8_t *xb, int64_t ldq, int64_t nb,       \
                                               const float *xs, float *y, int64_t ldy,          \
                                               const float *bias, sp_act act) {                 \
        rows8(w, r0, r1, xb, ldq, nb, xs, y, ldy, bias, act, GAP, FULL, POS);                   \
    }
#define SP_ROWS4(name, FULL, POS)                                                               \
    static __attribute__((noinline)) void name(const sp_qcsr *w, int64_t r0, int64_t r1,        \
                                               const int8_t *xb, int64_t ldq, int64_t nb,       \
                                               const float *xs, float *y, int64_t ldy,          \
                                               const float *bias, sp_act act) {                 \
        rows4(w, r0, r1, xb, ldq, nb, xs, y, ldy, bias, act, FULL, POS);                        \
    }
SP_ROWS8(gap_full_pos, true, true, true)
SP_ROWS8(gap_full_sign, true, true, false)
SP_ROWS8(gap_part_pos, true, false, true)
SP_ROWS8(gap_part_sign, true, false, false)
SP_ROWS8(dense_full_pos, false, true, true)
SP_ROWS8(dense_full_sign, false, true, false)
SP_ROWS8(dense_part_pos, false, false, true)
SP_ROWS8(dense_part_sign, false, false, false)
SP_ROWS4(q4_full_pos, true, true)
SP_ROWS4(q4_full_sign, true, false)
SP_ROWS4(q4_part_pos, false, true)
SP_ROWS4(q4_part_sign, false, false)

typedef void (*rows_fn)(const sp_qcsr *, int64_t, int64_t, const int8_t *, int64_t, int64_t,
                        const float *, float *, int64_t, const float *, sp_act);

void sp_i8_spmm_qcsr__avx512vnni(const sp_qcsr *w, int64_t r0, int64_t r1, const int8_t *xq,
                                 int64_t ldq, int64_t batch, const float *xs, float *y,
                                 int64_t ldy, const float *bias, sp_act act, bool xpos) {
    /* [layout][full][pos]: layout 0 gaps, 1 dense (8-bit), 2 4-bit */
    static const rows_fn pick[3][2][2] = {
        {{gap_part_sign, gap_part_pos}, {gap_full_sign, gap_full_pos}},
        {{dense_part_sign, dense_part_pos}, {dense_full_sign, dense_full_pos}},
        {{q4_part_sign, q4_part_pos}, {q4_full_sign, q4_full_pos}},
    };
    const int layout = w->bits == 4 ? 2 : w->gap ? 0 : 1;
    for (int64_t b0 = 0; b0 < batch; b0 += QT) {
        const int64_t nb = SP_MIN(QT, batch - b0);
        if (nb <= 16) { /* batch <= 16, or a short last tile: AVX2 fits 16 columns in its vectors */
            sp_i8_spmm_qcsr__avx2(w, r0, r1, xq + b0, ldq, nb, xs + b0, y + b0, ldy, bias, act, xpos);
            continue;
        }
        pick[layout][nb == QT][xpos](w, r0, r1, xq + b0, ldq, nb, xs + b0, y + b0, ldy, bias, act);
    }
}
