/*
 * nm_avx2.c - AVX2 + FMA N:M kernels (compiled with -mavx2 -mfma). The plan of the AVX-512 file
 * (nm_avx512.c) with 8-wide vectors and 16 registers:
 *
 * spmm, batch >= 2: panels of X (nm_tile.h) packed into an aligned L1 buffer, batch tiles of
 * 8 NV columns (NV <= 4, the last one masked), blocks of R rows with R x NV <= 12 ymm
 * accumulators; each slot is one broadcast and NV FMAs on the packed X row its offset names.
 * Panels are the outer loop, so W comes from memory once, prefetched a panel ahead.
 * spmm, batch 1: for 2:4, 8 slots span 16 columns of x, held in two registers and picked by
 * two vpermps and a blend; other patterns gather.
 * spmm_t: the panel of dX in an aligned L1 buffer, rows in order (the reference order).
 * sddmm: 8 slots' dot products at a time, reduced together by one transpose-and-add tree.
 */
#include <immintrin.h>
#include <string.h>

#include "../kernel_table.h"
#include "../nm_tile.h"

#define AI static inline __attribute__((always_inline))
#define NOINLINE static __attribute__((noinline))

/* Calls call(N, M) with constants for the fast patterns, run-time values otherwise. */
#define NM_DISPATCH(w, call)                                                                    \
    do {                                                                                        \
        if ((w)->n == 2 && (w)->m == 4) call(2, 4);                                             \
        else if ((w)->n == 1 && (w)->m == 4) call(1, 4);                                        \
        else if ((w)->n == 2 && (w)->m == 8) call(2, 8);                                        \
        else call((int64_t)(w)->n, (int64_t)(w)->m);                                            \
    } while (0)

/* Expands body once per tile width NV. */
#define NV_SWITCH(nv, body)                                                                     \
    switch (nv) {                                                                               \
    case 1: body(1); break;                                                                     \
    case 2: body(2); break;                                                                     \
    case 3: body(3); break;                                                                     \
    default: body(4); break;                                                                    \
    }

/* Lane mask with the first n lanes set (none for n <= 0, all for n >= 8). */
AI __m256i lanes(int64_t n) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)SP_MAX(SP_MIN(n, 8), 0)), iota);
}

/* Vector q of a tile at p, masked by `tail` when it is the last of a masked tile. */
AI __m256 load_q(const float *p, int q, const int NV, const bool MASKED, __m256i tail) {
    if (MASKED && q == NV - 1) return _mm256_maskload_ps(p + 8 * q, tail);
    return _mm256_loadu_ps(p + 8 * q);
}
AI void store_q(float *p, int q, __m256 v, const int NV, const bool MASKED, __m256i tail) {
    if (MASKED && q == NV - 1) _mm256_maskstore_ps(p + 8 * q, tail, v);
    else _mm256_storeu_ps(p + 8 * q, v);
}

/* Copies rows [c0, c1) of a (cols, ld) matrix, batch columns [b, b + 8 NV), into p with rows
 * 8 NV floats apart; masked-off lanes become 0. */
AI void pack_panel(float *p, const float *a, int64_t ld, int64_t c0, int64_t c1, int64_t b,
                   const int NV, const bool MASKED, __m256i tail) {
    for (int64_t c = c0; c < c1; c++)
        for (int q = 0; q < NV; q++)
            _mm256_store_ps(p + (c - c0) * 8 * NV + 8 * q, load_q(a + c * ld + b, q, NV, MASKED, tail));
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- spmm ---------------------------------------------------------------------------------- */

/* Rows [i, i + R) over groups [g0, g1) for batch columns [b, b + 8 NV), X from the packed
 * panel xp. Accumulators start at 0 on the first panel and from Y otherwise; the last panel
 * adds bias and applies act. */
AI void spmm_block(const sp_nm *w, int64_t S, int64_t i, const int R, int64_t g0, int64_t g1,
                   int64_t gn, const int64_t N, const int64_t M, const float *xp, int64_t b,
                   const int NV, const bool MASKED, __m256i tail, float *y, int64_t ldy,
                   bool first, bool last, const float *bias, sp_act act) {
    __m256 acc[8][4];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < NV; q++)
            acc[r][q] = first ? _mm256_setzero_ps()
                              : load_q(y + (i + r) * ldy + b, q, NV, MASKED, tail);
    const float *val = w->val + i * S;
    const uint8_t *idx = w->idx + i * S;
    sp_nm_prefetch(w, i + R, SP_MIN(i + 2 * R, w->rows), g0, g1, false);
    sp_nm_prefetch(w, i, i + R, g1, gn, true);
    for (int64_t g = g0; g < g1; g++) {
        const float *xg = xp + (g - g0) * M * 8 * NV;
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const float *v = val + r * S + g * N;
            const uint8_t *o = idx + r * S + g * N;
            for (int64_t t = 0; t < N; t++) {
                const __m256 vt = _mm256_broadcast_ss(v + t);
                const float *xr = xg + (int64_t)o[t] * 8 * NV;
#pragma GCC unroll 4
                for (int q = 0; q < NV; q++)
                    acc[r][q] = _mm256_fmadd_ps(vt, _mm256_load_ps(xr + 8 * q), acc[r][q]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        const __m256 vb = _mm256_set1_ps(bias ? bias[i + r] : 0.0f);
        for (int q = 0; q < NV; q++) {
            __m256 o = acc[r][q];
            if (last) {
                o = _mm256_add_ps(o, vb);
                if (act == SP_ACT_RELU) o = _mm256_max_ps(o, _mm256_setzero_ps());
            }
            store_q(y + (i + r) * ldy + b, q, o, NV, MASKED, tail);
        }
    }
}

/* One panel of one batch tile over rows [r0, r1): pack X, then R rows at a time. */
AI void spmm_panel(const sp_nm *w, int64_t r0, int64_t r1, int64_t g0, int64_t g1, int64_t gn,
                   const float *x, int64_t ldx, int64_t b, const int NV, const bool MASKED,
                   __m256i tail, float *y, int64_t ldy, const float *bias, sp_act act,
                   const int64_t N, const int64_t M) {
    const int R = NV == 4 ? 3 : NV == 3 ? 4 : NV == 2 ? 6 : 8; /* R * NV <= 12 of 16 ymm */
    const int64_t S = w->groups * N;
    const bool first = g0 == 0, last = g1 == w->groups;
    float xp[SP_NM_PANEL_BYTES / sizeof(float)] __attribute__((aligned(64)));
    pack_panel(xp, x, ldx, g0 * M, SP_MIN(w->cols, g1 * M), b, NV, MASKED, tail);
    int64_t i = r0;
    for (; i + R <= r1; i += R)
        spmm_block(w, S, i, R, g0, g1, gn, N, M, xp, b, NV, MASKED, tail, y, ldy, first, last,
                   bias, act);
    for (; i < r1; i++)
        spmm_block(w, S, i, 1, g0, g1, gn, N, M, xp, b, NV, MASKED, tail, y, ldy, first, last,
                   bias, act);
}

/* Batch 1. 2:4 with contiguous x: 8 slots (4 groups) span 16 columns, whose x values sit in
 * two registers; each slot's value is picked by its column inside the chunk. Otherwise:
 * gather (columns fit int32) or scalar. */
AI void spmv_rows(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx, float *y,
                  int64_t ldy, const float *bias, sp_act act, const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N, cols = w->cols;
    const int64_t G = N <= 8 ? 8 / N : 1, L = G * N, span = G * M;
    const bool permute = N <= 8 && ldx == 1 && span <= 16;
    const bool gather = !permute && N <= 8 && cols * ldx < INT32_MAX;
    int32_t base_l[8];
    for (int l = 0; l < 8; l++) base_l[l] = (int32_t)((l / N) * M);
    const __m256i base = _mm256_loadu_si256((const __m256i *)base_l);
    const __m256i seven = _mm256_set1_epi32(7), vld = _mm256_set1_epi32((int32_t)ldx);
    for (int64_t i = r0; i < r1; i++) {
        const float *val = w->val + i * S;
        const uint8_t *idx = w->idx + i * S;
        float s;
        if (permute || gather) {
            __m256 a[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int64_t k = 0, c0 = 0, u = 0; k < S; k += L, c0 += span, u ^= 1) {
                const int64_t cnt = SP_MIN(L, S - k);
                const __m256i mk = lanes(cnt);
                __builtin_prefetch(val + k + 512, 0, 0); /* W streams from memory */
                __builtin_prefetch(idx + k + 512, 0, 0);
                uint64_t ob = 0;
                if (k + 8 <= S) memcpy(&ob, idx + k, 8); /* lanes >= cnt are masked off */
                else
                    for (int64_t l = 0; l < cnt; l++) ob |= (uint64_t)idx[k + l] << (8 * l);
                __m256i c = _mm256_add_epi32(base, _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)ob)));
                __m256 xv;
                if (permute) {
                    __m256 x0, x1;
                    if (c0 + 16 <= cols) {
                        x0 = _mm256_loadu_ps(x + c0), x1 = _mm256_loadu_ps(x + c0 + 8);
                    } else {
                        x0 = _mm256_maskload_ps(x + c0, lanes(cols - c0));
                        x1 = _mm256_maskload_ps(x + c0 + 8, lanes(cols - c0 - 8));
                    }
                    const __m256 lo = _mm256_permutevar8x32_ps(x0, c);
                    const __m256 hi = _mm256_permutevar8x32_ps(x1, c);
                    xv = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_cmpgt_epi32(c, seven)));
                } else {
                    c = _mm256_mullo_epi32(_mm256_add_epi32(c, _mm256_set1_epi32((int32_t)c0)), vld);
                    xv = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x, c,
                                                  _mm256_castsi256_ps(mk), 4);
                }
                const __m256 vv = cnt == 8 ? _mm256_loadu_ps(val + k) : _mm256_maskload_ps(val + k, mk);
                a[u] = _mm256_fmadd_ps(vv, xv, a[u]);
            }
            s = hsum(_mm256_add_ps(a[0], a[1]));
        } else {
            float p[4] = {0, 0, 0, 0};
            for (int64_t g = 0; g < w->groups; g++)
                for (int64_t t = 0; t < N; t++)
                    p[t & 3] += val[g * N + t] * x[(g * M + idx[g * N + t]) * ldx];
            s = (p[0] + p[1]) + (p[2] + p[3]);
        }
        y[i * ldy] = sp_epilogue(s, bias, i, act);
    }
}

/* spmm_rows_<n>_<m> (nm: run-time n and m): panels outermost, then batch tiles of 32 columns
 * and a masked tail tile, then row blocks. */
#define SPMM_PANEL_PARAMS                                                                       \
    const sp_nm *w, int64_t r0, int64_t r1, int64_t g0, int64_t g1, int64_t gn, const float *x, \
        int64_t ldx, int64_t b, __m256i tail, float *y, int64_t ldy, const float *bias,         \
        sp_act act
#define DEFINE_SPMM_TAIL(suffix, NV, N, M)                                                      \
    NOINLINE void spmm_tail##NV##_##suffix(SPMM_PANEL_PARAMS) {                                 \
        spmm_panel(w, r0, r1, g0, g1, gn, x, ldx, b, NV, true, tail, y, ldy, bias, act, N, M);  \
    }
#define DEFINE_SPMM(suffix, N, M)                                                               \
    NOINLINE void spmm_full_##suffix(SPMM_PANEL_PARAMS) {                                       \
        spmm_panel(w, r0, r1, g0, g1, gn, x, ldx, b, 4, false, tail, y, ldy, bias, act, N, M);  \
    }                                                                                           \
    DEFINE_SPMM_TAIL(suffix, 1, N, M)                                                           \
    DEFINE_SPMM_TAIL(suffix, 2, N, M)                                                           \
    DEFINE_SPMM_TAIL(suffix, 3, N, M)                                                           \
    DEFINE_SPMM_TAIL(suffix, 4, N, M)                                                           \
    NOINLINE void spmm_rows_##suffix(const sp_nm *w, int64_t r0, int64_t r1, const float *x,     \
                                     int64_t ldx, int64_t batch, float *y, int64_t ldy,          \
                                     const float *bias, sp_act act) {                            \
        if (batch == 1) {                                                                       \
            spmv_rows(w, r0, r1, x, ldx, y, ldy, bias, act, N, M);                              \
            return;                                                                             \
        }                                                                                       \
        const int64_t full = batch / 32 * 32, rest = batch - full, nv = (rest + 7) / 8;         \
        const __m256i tail = lanes(rest - 8 * (nv - 1));                                        \
        void (*tail_fn)(SPMM_PANEL_PARAMS) = nv == 1   ? spmm_tail1_##suffix                    \
                                             : nv == 2 ? spmm_tail2_##suffix                    \
                                             : nv == 3 ? spmm_tail3_##suffix                    \
                                                       : spmm_tail4_##suffix;                   \
        const int64_t pg = sp_nm_panel_groups((int32_t)(M), 32 * (full ? 4 : nv));             \
        int64_t g0 = 0;                                                                         \
        do { /* at least one pass, so that cols == 0 still writes act(bias) */                  \
            const int64_t g1 = SP_MIN(w->groups, g0 + pg), gn = SP_MIN(w->groups, g1 + pg);     \
            for (int64_t b = 0; b < full; b += 32)                                              \
                spmm_full_##suffix(w, r0, r1, g0, g1, b == 0 ? gn : g1, x, ldx, b, tail, y,     \
                                   ldy, bias, act);                                             \
            if (rest)                                                                           \
                tail_fn(w, r0, r1, g0, g1, full == 0 ? gn : g1, x, ldx, full, tail, y, ldy,     \
                        bias, act);                                                             \
            g0 = g1;                                                                            \
        } while (g0 < w->groups);                                                               \
    }
DEFINE_SPMM(2_4, 2, 4)
DEFINE_SPMM(1_4, 1, 4)
DEFINE_SPMM(2_8, 2, 8)
DEFINE_SPMM(nm, (int64_t)w->n, (int64_t)w->m)

void sp_f32_spmm_nm__avx2(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                          int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    if (w->n == 2 && w->m == 4) spmm_rows_2_4(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else if (w->n == 1 && w->m == 4) spmm_rows_1_4(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else if (w->n == 2 && w->m == 8) spmm_rows_2_8(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else spmm_rows_nm(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
}

/* ---- spmm_t -------------------------------------------------------------------------------- */

/* dX[:, b:b+8NV] += W^T dY[:, b:b+8NV], panel by panel of dX (copied to an aligned buffer and
 * back), rows in order. */
AI void spmm_t_tile(const sp_nm *w, int64_t b, const int NV, const bool MASKED, __m256i tail,
                    const float *dy, int64_t lddy, float *dx, int64_t lddx, const int64_t N,
                    const int64_t M) {
    const int64_t S = w->groups * N;
    const int64_t pg = sp_nm_panel_groups((int32_t)M, 32 * NV);
    float dp[SP_NM_PANEL_BYTES / sizeof(float)] __attribute__((aligned(64)));
    for (int64_t g0 = 0; g0 < w->groups; g0 += pg) {
        const int64_t g1 = SP_MIN(w->groups, g0 + pg);
        const int64_t c0 = g0 * M, c1 = SP_MIN(w->cols, g1 * M);
        pack_panel(dp, dx, lddx, c0, c1, b, NV, MASKED, tail);
        for (int64_t i = 0; i < w->rows; i++) {
            __m256 gv[4];
            for (int q = 0; q < NV; q++) gv[q] = load_q(dy + i * lddy + b, q, NV, MASKED, tail);
            const float *val = w->val + i * S;
            const uint8_t *idx = w->idx + i * S;
            sp_nm_prefetch(w, i + 1, SP_MIN(i + 2, w->rows), g0, g1, false);
            for (int64_t g = g0; g < g1; g++) {
                float *dg = dp + (g - g0) * M * 8 * NV;
                for (int64_t t = 0; t < N; t++) {
                    const __m256 vt = _mm256_broadcast_ss(val + g * N + t);
                    float *d = dg + (int64_t)idx[g * N + t] * 8 * NV;
                    for (int q = 0; q < NV; q++)
                        _mm256_store_ps(d + 8 * q,
                                        _mm256_fmadd_ps(vt, gv[q], _mm256_load_ps(d + 8 * q)));
                }
            }
        }
        for (int64_t c = c0; c < c1; c++)
            for (int q = 0; q < NV; q++)
                store_q(dx + c * lddx + b, q, _mm256_load_ps(dp + (c - c0) * 8 * NV + 8 * q), NV,
                        MASKED, tail);
    }
}

AI void spmm_t_cols(const sp_nm *w, int64_t b0, int64_t b1, const float *dy, int64_t lddy,
                    float *dx, int64_t lddx, const int64_t N, const int64_t M) {
    if (b1 - b0 == 1) { /* one column: scalar updates, in reference order */
        const int64_t S = w->groups * N;
        for (int64_t i = 0; i < w->rows; i++) {
            const float gi = dy[i * lddy + b0];
            const float *val = w->val + i * S;
            const uint8_t *idx = w->idx + i * S;
            for (int64_t g = 0; g < w->groups; g++)
                for (int64_t t = 0; t < N; t++)
                    dx[(g * M + idx[g * N + t]) * lddx + b0] += val[g * N + t] * gi;
        }
        return;
    }
    int64_t b = b0;
    for (; b + 32 <= b1; b += 32) spmm_t_tile(w, b, 4, false, lanes(8), dy, lddy, dx, lddx, N, M);
    if (b < b1) {
        const int64_t rest = b1 - b, nv = (rest + 7) / 8;
        const __m256i tail = lanes(rest - 8 * (nv - 1));
#define TILE(NV) spmm_t_tile(w, b, NV, true, tail, dy, lddy, dx, lddx, N, M)
        NV_SWITCH(nv, TILE)
#undef TILE
    }
}

void sp_f32_spmm_t_nm__avx2(const sp_nm *w, int64_t b0, int64_t b1, const float *dy,
                            int64_t lddy, float *dx, int64_t lddx) {
#define CALL(N, M) spmm_t_cols(w, b0, b1, dy, lddy, dx, lddx, N, M)
    NM_DISPATCH(w, CALL);
#undef CALL
}

/* ---- sddmm --------------------------------------------------------------------------------- */

/* out[l] = sum of the 8 lanes of a[l], l < 8: unpack within 128-bit lanes, then 64-bit halves,
 * then swap 128-bit halves: 7 adds for 8 sums. */
AI __m256 hsum8(const __m256 *a) {
    __m256 t[4], u[2];
    for (int j = 0; j < 4; j++) /* per 128-bit lane: [A02 B02 A13 B13] */
        t[j] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * j], a[2 * j + 1]),
                             _mm256_unpackhi_ps(a[2 * j], a[2 * j + 1]));
    for (int j = 0; j < 2; j++) { /* per 128-bit lane: [A B C D] */
        __m256d p = _mm256_castps_pd(t[2 * j]), q = _mm256_castps_pd(t[2 * j + 1]);
        u[j] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(p, q)),
                             _mm256_castpd_ps(_mm256_unpackhi_pd(p, q)));
    }
    return _mm256_add_ps(_mm256_permute2f128_ps(u[0], u[1], 0x20),
                         _mm256_permute2f128_ps(u[0], u[1], 0x31));
}

/* dval[i, k] (+)= dY[i, b:b+8NV] . X[col(k), b:b+8NV] over the packed panel of X; `add` says
 * whether dval already holds a partial sum. */
AI void sddmm_tile(const sp_nm *w, int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                   const float *x, int64_t ldx, int64_t b, const int NV, const bool MASKED,
                   __m256i tail, float *dval, bool add, const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N;
    const int64_t pg = sp_nm_panel_groups((int32_t)M, 32 * NV);
    float xp[SP_NM_PANEL_BYTES / sizeof(float)] __attribute__((aligned(64)));
    for (int64_t g0 = 0; g0 < w->groups; g0 += pg) {
        const int64_t g1 = SP_MIN(w->groups, g0 + pg);
        pack_panel(xp, x, ldx, g0 * M, SP_MIN(w->cols, g1 * M), b, NV, MASKED, tail);
        const int64_t k0 = g0 * N, k1 = g1 * N;
        for (int64_t i = r0; i < r1; i++) {
            __m256 gv[4];
            for (int q = 0; q < NV; q++) gv[q] = load_q(dy + i * lddy + b, q, NV, MASKED, tail);
            const uint8_t *idx = w->idx + i * S;
            float *dv = dval + i * S;
            sp_nm_prefetch(w, i + 1, SP_MIN(i + 2, r1), g0, g1, false);
            int64_t g = g0, t = 0; /* slot k is slot t of group g */
#define DOT(l)                                                                                  \
    do {                                                                                        \
        const float *xr = xp + ((g - g0) * M + idx[k + (l)]) * 8 * NV;                          \
        a[l] = _mm256_mul_ps(gv[0], _mm256_load_ps(xr));                                        \
        for (int q = 1; q < NV; q++) a[l] = _mm256_fmadd_ps(gv[q], _mm256_load_ps(xr + 8 * q), a[l]); \
        if (++t == N) t = 0, g++;                                                               \
    } while (0)
            int64_t k = k0;
            for (; k + 8 <= k1; k += 8) {
                __m256 a[8];
#pragma GCC unroll 8
                for (int l = 0; l < 8; l++) DOT(l);
                __m256 sum = hsum8(a);
                if (add) sum = _mm256_add_ps(_mm256_loadu_ps(dv + k), sum);
                _mm256_storeu_ps(dv + k, sum);
            }
            if (k < k1) {
                const int64_t cnt = k1 - k;
                __m256 a[8];
                for (int l = 0; l < 8; l++) a[l] = _mm256_setzero_ps();
                for (int l = 0; l < cnt; l++) DOT(l);
                const __m256i mk = lanes(cnt);
                __m256 sum = hsum8(a);
                if (add) sum = _mm256_add_ps(_mm256_maskload_ps(dv + k, mk), sum);
                _mm256_maskstore_ps(dv + k, mk, sum);
            }
#undef DOT
        }
    }
}

AI void sddmm_rows(const sp_nm *w, int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                   const float *x, int64_t ldx, int64_t batch, float *dval, bool accumulate,
                   const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N;
    if (batch <= 1) { /* one product per slot (or none: the sum over no columns is 0) */
        for (int64_t i = r0; i < r1; i++) {
            const float gi = batch ? dy[i * lddy] : 0.0f;
            const uint8_t *idx = w->idx + i * S;
            float *dv = dval + i * S;
            for (int64_t g = 0; g < w->groups; g++)
                for (int64_t t = 0; t < N; t++) {
                    const float p = batch ? gi * x[(g * M + idx[g * N + t]) * ldx] : 0.0f;
                    dv[g * N + t] = accumulate ? dv[g * N + t] + p : p;
                }
        }
        return;
    }
    int64_t b = 0;
    for (; b + 32 <= batch; b += 32)
        sddmm_tile(w, r0, r1, dy, lddy, x, ldx, b, 4, false, lanes(8), dval, accumulate || b > 0,
                   N, M);
    if (b < batch) {
        const int64_t rest = batch - b, nv = (rest + 7) / 8;
        const __m256i tail = lanes(rest - 8 * (nv - 1));
        const bool add = accumulate || b > 0;
#define TILE(NV) sddmm_tile(w, r0, r1, dy, lddy, x, ldx, b, NV, true, tail, dval, add, N, M)
        NV_SWITCH(nv, TILE)
#undef TILE
    }
}

void sp_f32_sddmm_nm__avx2(const sp_nm *w, int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                           const float *x, int64_t ldx, int64_t batch, float *dval,
                           bool accumulate) {
#define CALL(N, M) sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, N, M)
    NM_DISPATCH(w, CALL);
#undef CALL
}
