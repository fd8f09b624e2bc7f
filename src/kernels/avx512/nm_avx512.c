/*
 * nm_avx512.c - AVX-512 N:M kernels (compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl).
 *
 * spmm, batch >= 2. Every row has the same number of slots, so the kernel runs a block of R
 * rows at once over a column panel (nm_tile.h): R x NV zmm accumulators (batch tile of 16 NV
 * columns, NV <= 4), and each slot is one broadcast of its value plus NV FMAs whose second
 * operand is a row of X loaded straight from L1, picked by the slot's uint8 offset. The panel
 * of X (m * groups rows of the tile) stays in L1 while all rows of the range stream through it;
 * the partial sums wait in Y between panels. n and m are constants in the 2:4, 1:4 and 2:8
 * paths, so the slot loop is fully unrolled; other patterns run the same code with run-time n
 * and m. The last batch tile is masked, so any batch runs without a scalar tail.
 * spmm, batch 1 (SpMV): 16 slots at a time (16 / n whole groups), offsets widened from bytes
 * and gathered from x; the stream of W (5 bytes a slot) sets the speed.
 * spmm_t: panels of dX kept in L1; each row's dY tile is held in registers and added into the
 * rows of dX its slots name, rows in order, so sums run in the reference order.
 * sddmm: per row, the dY tile in registers; 16 slots' dot products at a time, then one
 * transpose-and-add tree turns 16 accumulators into 16 sums stored with one vector store.
 */
#include <immintrin.h>
#include <string.h>

#include "../kernel_table.h"
#include "../nm_tile.h"

#define AI static inline __attribute__((always_inline))

/* Calls call(N, M) with constants for the fast patterns, run-time values otherwise. */
#define NM_DISPATCH(w, call)                                                                    \
    do {                                                                                        \
        if ((w)->n == 2 && (w)->m == 4) call(2, 4);                                             \
        else if ((w)->n == 1 && (w)->m == 4) call(1, 4);                                        \
        else if ((w)->n == 2 && (w)->m == 8) call(2, 8);                                        \
        else call((int64_t)(w)->n, (int64_t)(w)->m);                                            \
    } while (0)

/* Expands body once per tile width: NV vectors, the last masked when MASKED. */
#define NV_SWITCH(nv, body)                                                                     \
    switch (nv) {                                                                               \
    case 1: body(1); break;                                                                     \
    case 2: body(2); break;                                                                     \
    case 3: body(3); break;                                                                     \
    default: body(4); break;                                                                    \
    }

AI __mmask16 lanes(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1); }

/* Vector q of a tile at p: masked by `tail` when it is the last of a masked tile. */
AI __m512 load_q(const float *p, int q, const int NV, const bool MASKED, __mmask16 tail) {
    if (MASKED && q == NV - 1) return _mm512_maskz_loadu_ps(tail, p + 16 * q);
    return _mm512_loadu_ps(p + 16 * q);
}
AI void store_q(float *p, int q, __m512 v, const int NV, const bool MASKED, __mmask16 tail) {
    if (MASKED && q == NV - 1) _mm512_mask_storeu_ps(p + 16 * q, tail, v);
    else _mm512_storeu_ps(p + 16 * q, v);
}

/* ---- spmm ---------------------------------------------------------------------------------- */

/* Slot t of group g of a row (val, idx at the row's first slot) into R x NV accumulators. */
#define FMA_SLOT(r, vt, off, g)                                                                 \
    do {                                                                                        \
        const float *xr_ = x + ((g) * M + (int64_t)(off)) * ldx + b;                            \
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++)                                    \
            acc[r][q] = _mm512_fmadd_ps(vt, load_q(xr_, q, NV, MASKED, tail), acc[r][q]);       \
    } while (0)

/* Rows [i, i + R) over groups [g0, g1) for batch columns [b, b + 16 NV). Accumulators start at
 * 0 on the first panel and from Y otherwise; the last panel adds bias and applies act.
 *
 * The X rows are the only operand that must come from memory for every FMA (64 bytes a
 * cycle is all L1 gives), so with CHUNKED (n divides 8) the rest is taken off the load ports:
 * 8 slots of a row at a time, their values in one ymm load and spread to every lane by
 * vpermps, their offsets in one 64-bit load and picked out by shifts. */
AI void spmm_block(const sp_nm *w, int64_t S, int64_t i, const int R, int64_t g0, int64_t g1,
                   int64_t gn, const int64_t N, const int64_t M, const bool CHUNKED, const float *x,
                   int64_t ldx, int64_t b, const int NV, const bool MASKED, __mmask16 tail,
                   float *y, int64_t ldy, bool first, bool last, const float *bias, sp_act act) {
    __m512 acc[8][4];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < NV; q++)
            acc[r][q] = first ? _mm512_setzero_ps()
                              : load_q(y + (i + r) * ldy + b, q, NV, MASKED, tail);
    const float *val = w->val + i * S;
    const uint8_t *idx = w->idx + i * S;
    /* W is read panel by panel, so consecutive slots of a row are a panel apart in time and
     * consecutive rows of a panel are a row of W apart in memory: neither is a stream the
     * hardware prefetchers follow. So: the next block's rows of this panel go to L1 (from L2),
     * and this block's rows of the next panel to L2 (from memory), a whole panel ahead. */
    sp_nm_prefetch(w, i + R, SP_MIN(i + 2 * R, w->rows), g0, g1, false);
    sp_nm_prefetch(w, i, i + R, g1, gn, true);
    int64_t g = g0;
    if (CHUNKED) {
        const int64_t CG = 8 / N; /* groups per chunk of 8 slots */
        for (; g + CG <= g1; g += CG) {
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m512 vv = _mm512_castps256_ps512(_mm256_loadu_ps(val + r * S + g * N));
                uint64_t ob;
                memcpy(&ob, idx + r * S + g * N, sizeof ob);
#pragma GCC unroll 8
                for (int l = 0; l < 8; l++) {
                    const __m512 vt = _mm512_permutexvar_ps(_mm512_set1_epi32(l), vv);
                    FMA_SLOT(r, vt, (ob >> (8 * l)) & 0xFF, g + l / N);
                }
            }
        }
    }
    for (; g < g1; g++) {
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const float *v = val + r * S + g * N;
            const uint8_t *o = idx + r * S + g * N;
            for (int64_t t = 0; t < N; t++) FMA_SLOT(r, _mm512_set1_ps(v[t]), o[t], g);
        }
    }
    for (int r = 0; r < R; r++) {
        const __m512 vb = _mm512_set1_ps(bias ? bias[i + r] : 0.0f);
        for (int q = 0; q < NV; q++) {
            __m512 o = acc[r][q];
            if (last) {
                o = _mm512_add_ps(o, vb);
                if (act == SP_ACT_RELU) o = _mm512_max_ps(o, _mm512_setzero_ps());
            }
            store_q(y + (i + r) * ldy + b, q, o, NV, MASKED, tail);
        }
    }
}
#undef FMA_SLOT

/* One batch tile over rows [r0, r1): panel by panel, R rows at a time. Each (pattern, tile
 * width) pair is its own function (below), which keeps every accumulator in a register. */
#define NOINLINE static __attribute__((noinline))
AI void spmm_tile(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx, int64_t b,
                  const int NV, const bool MASKED, __mmask16 tail, float *y, int64_t ldy,
                  const float *bias, sp_act act, const int64_t N, const int64_t M) {
    const bool CHUNKED = __builtin_constant_p(N) && 8 % N == 0;
    const int R = NV >= 3 ? 4 : 8; /* R * NV <= 16 accumulators of the 32 zmm */
    const int64_t S = w->groups * N;
    const int64_t pg = sp_nm_panel_groups((int32_t)M, 64 * NV);
    int64_t g0 = 0;
    do { /* at least one pass, so that cols == 0 still writes act(bias) */
        const int64_t g1 = SP_MIN(w->groups, g0 + pg);
        const bool first = g0 == 0, last = g1 == w->groups;
        const int64_t gn = SP_MIN(w->groups, g1 + pg); /* the next panel, prefetched */
        int64_t i = r0;
        for (; i + R <= r1; i += R)
            spmm_block(w, S, i, R, g0, g1, gn, N, M, CHUNKED, x, ldx, b, NV, MASKED, tail, y, ldy,
                       first, last, bias, act);
        for (; i < r1; i++)
            spmm_block(w, S, i, 1, g0, g1, gn, N, M, CHUNKED, x, ldx, b, NV, MASKED, tail, y, ldy,
                       first, last, bias, act);
        g0 = g1;
    } while (g0 < w->groups);
}

/* Batch 1: y[i] = sum over slots of val * x[col]. 16 slots = G = 16 / n whole groups at a time;
 * lane l holds slot l of the chunk, whose column is (l / n) * m + offset, plus the chunk's
 * first column. */
AI void spmv_rows(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx, float *y,
                  int64_t ldy, const float *bias, sp_act act, const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N;
    const bool gather_ok = N <= 16 && w->cols * ldx < INT32_MAX;
    const int64_t G = gather_ok ? 16 / N : 1, L = G * N;
    int32_t base_l[16];
    for (int l = 0; l < 16; l++) base_l[l] = (int32_t)((l / N) * M);
    const __m512i base = _mm512_loadu_si512(base_l);
    const __m512i vld = _mm512_set1_epi32((int32_t)ldx);
    for (int64_t i = r0; i < r1; i++) {
        const float *val = w->val + i * S;
        const uint8_t *idx = w->idx + i * S;
        float s;
        if (gather_ok) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0;
            int64_t k = 0, c0 = 0;
            for (; k + 2 * L <= S; k += 2 * L, c0 += 2 * G * M) {
                const __mmask16 m = lanes(L);
                __m512i c = _mm512_add_epi32(_mm512_add_epi32(base, _mm512_set1_epi32((int32_t)c0)),
                                             _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, idx + k)));
                __m512i d = _mm512_add_epi32(
                    _mm512_add_epi32(base, _mm512_set1_epi32((int32_t)(c0 + G * M))),
                    _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, idx + k + L)));
                if (ldx != 1) c = _mm512_mullo_epi32(c, vld), d = _mm512_mullo_epi32(d, vld);
                a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, val + k),
                                     _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, c, x, 4), a0);
                a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, val + k + L),
                                     _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, d, x, 4), a1);
            }
            for (; k < S; k += L, c0 += G * M) {
                const __mmask16 m = lanes(SP_MIN(L, S - k));
                __m512i c = _mm512_add_epi32(_mm512_add_epi32(base, _mm512_set1_epi32((int32_t)c0)),
                                             _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, idx + k)));
                if (ldx != 1) c = _mm512_mullo_epi32(c, vld);
                a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, val + k),
                                     _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, c, x, 4), a0);
            }
            s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
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

/* spmm_rows_<n>_<m> (nm for run-time n and m): every batch tile of rows [r0, r1). */
#define SPMM_TILE_PARAMS                                                                        \
    const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx, int64_t b,             \
        __mmask16 tail, float *y, int64_t ldy, const float *bias, sp_act act
#define DEFINE_SPMM(suffix, N, M)                                                               \
    NOINLINE void spmm_full_##suffix(SPMM_TILE_PARAMS) {                                        \
        spmm_tile(w, r0, r1, x, ldx, b, 4, false, tail, y, ldy, bias, act, N, M);               \
    }                                                                                           \
    NOINLINE void spmm_tail1_##suffix(SPMM_TILE_PARAMS) {                                       \
        spmm_tile(w, r0, r1, x, ldx, b, 1, true, tail, y, ldy, bias, act, N, M);                \
    }                                                                                           \
    NOINLINE void spmm_tail2_##suffix(SPMM_TILE_PARAMS) {                                       \
        spmm_tile(w, r0, r1, x, ldx, b, 2, true, tail, y, ldy, bias, act, N, M);                \
    }                                                                                           \
    NOINLINE void spmm_tail3_##suffix(SPMM_TILE_PARAMS) {                                       \
        spmm_tile(w, r0, r1, x, ldx, b, 3, true, tail, y, ldy, bias, act, N, M);                \
    }                                                                                           \
    NOINLINE void spmm_tail4_##suffix(SPMM_TILE_PARAMS) {                                       \
        spmm_tile(w, r0, r1, x, ldx, b, 4, true, tail, y, ldy, bias, act, N, M);                \
    }                                                                                           \
    NOINLINE void spmm_rows_##suffix(const sp_nm *w, int64_t r0, int64_t r1, const float *x,     \
                                     int64_t ldx, int64_t batch, float *y, int64_t ldy,          \
                                     const float *bias, sp_act act) {                            \
        if (batch == 1) {                                                                       \
            spmv_rows(w, r0, r1, x, ldx, y, ldy, bias, act, N, M);                              \
            return;                                                                             \
        }                                                                                       \
        int64_t b = 0;                                                                          \
        for (; b + 64 <= batch; b += 64)                                                        \
            spmm_full_##suffix(w, r0, r1, x, ldx, b, 0xFFFF, y, ldy, bias, act);                \
        if (b < batch) {                                                                        \
            const int64_t rest = batch - b, nv = (rest + 15) / 16;                              \
            const __mmask16 tail = lanes(rest - 16 * (nv - 1));                                 \
            void (*tile)(SPMM_TILE_PARAMS) = nv == 1   ? spmm_tail1_##suffix                    \
                                             : nv == 2 ? spmm_tail2_##suffix                    \
                                             : nv == 3 ? spmm_tail3_##suffix                    \
                                                       : spmm_tail4_##suffix;                   \
            tile(w, r0, r1, x, ldx, b, tail, y, ldy, bias, act);                                \
        }                                                                                       \
    }
DEFINE_SPMM(2_4, 2, 4)
DEFINE_SPMM(1_4, 1, 4)
DEFINE_SPMM(2_8, 2, 8)
DEFINE_SPMM(nm, (int64_t)w->n, (int64_t)w->m)

void sp_f32_spmm_nm__avx512(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                            int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    if (w->n == 2 && w->m == 4) spmm_rows_2_4(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else if (w->n == 1 && w->m == 4) spmm_rows_1_4(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else if (w->n == 2 && w->m == 8) spmm_rows_2_8(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else spmm_rows_nm(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
}

/* ---- spmm_t -------------------------------------------------------------------------------- */

/* dX[:, b:b+16NV] += W^T dY[:, b:b+16NV], panel by panel of dX, rows in order. */
AI void spmm_t_tile(const sp_nm *w, int64_t b, const int NV, const bool MASKED, __mmask16 tail,
                    const float *dy, int64_t lddy, float *dx, int64_t lddx, const int64_t N,
                    const int64_t M) {
    const int64_t S = w->groups * N;
    const int64_t pg = sp_nm_panel_groups((int32_t)M, 64 * NV);
    for (int64_t g0 = 0; g0 < w->groups; g0 += pg) {
        const int64_t g1 = SP_MIN(w->groups, g0 + pg);
        for (int64_t i = 0; i < w->rows; i++) {
            __m512 gv[4];
            for (int q = 0; q < NV; q++) gv[q] = load_q(dy + i * lddy + b, q, NV, MASKED, tail);
            const float *val = w->val + i * S;
            const uint8_t *idx = w->idx + i * S;
            for (int64_t g = g0; g < g1; g++) {
                float *dg = dx + g * M * lddx + b;
                for (int64_t t = 0; t < N; t++) {
                    const __m512 vt = _mm512_set1_ps(val[g * N + t]);
                    float *d = dg + (int64_t)idx[g * N + t] * lddx;
                    for (int q = 0; q < NV; q++)
                        store_q(d, q, _mm512_fmadd_ps(vt, gv[q], load_q(d, q, NV, MASKED, tail)),
                                NV, MASKED, tail);
                }
            }
        }
    }
}

AI void spmm_t_cols(const sp_nm *w, int64_t b0, int64_t b1, const float *dy, int64_t lddy,
                    float *dx, int64_t lddx, const int64_t N, const int64_t M) {
    int64_t b = b0;
    for (; b + 64 <= b1; b += 64) spmm_t_tile(w, b, 4, false, 0xFFFF, dy, lddy, dx, lddx, N, M);
    if (b < b1) {
        const int64_t rest = b1 - b, nv = (rest + 15) / 16;
        const __mmask16 tail = lanes(rest - 16 * (nv - 1));
#define TILE(NV) spmm_t_tile(w, b, NV, true, tail, dy, lddy, dx, lddx, N, M)
        NV_SWITCH(nv, TILE)
#undef TILE
    }
}

void sp_f32_spmm_t_nm__avx512(const sp_nm *w, int64_t b0, int64_t b1, const float *dy,
                              int64_t lddy, float *dx, int64_t lddx) {
#define CALL(N, M) spmm_t_cols(w, b0, b1, dy, lddy, dx, lddx, N, M)
    NM_DISPATCH(w, CALL);
#undef CALL
}

/* ---- sddmm --------------------------------------------------------------------------------- */

/* out[l] = sum of the 16 lanes of a[l], l < 16: pairs of vectors are interleaved and added
 * (unpack within 128-bit lanes, then 64-bit halves, then 128-bit lanes twice), 15 adds and 30
 * shuffles for 16 sums instead of 16 separate reductions. */
AI __m512 hsum16(const __m512 *a) {
    __m512 t[8], u[4], v[2];
    for (int j = 0; j < 8; j++) /* per 128-bit lane: [A02 B02 A13 B13] */
        t[j] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * j], a[2 * j + 1]),
                             _mm512_unpackhi_ps(a[2 * j], a[2 * j + 1]));
    for (int j = 0; j < 4; j++) { /* per 128-bit lane: [A B C D] */
        __m512d p = _mm512_castps_pd(t[2 * j]), q = _mm512_castps_pd(t[2 * j + 1]);
        u[j] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(p, q)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(p, q)));
    }
    for (int j = 0; j < 2; j++) /* 128-bit lanes: [u0 L0+L1, u0 L2+L3, u1 L0+L1, u1 L2+L3] */
        v[j] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * j], u[2 * j + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u[2 * j], u[2 * j + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/* dval[i, k] (+)= dY[i, b:b+16NV] . X[col(k), b:b+16NV] for rows [r0, r1) and every slot; `add`
 * says whether dval already holds a partial sum (an earlier batch tile, or accumulate). */
AI void sddmm_tile(const sp_nm *w, int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                   const float *x, int64_t ldx, int64_t b, const int NV, const bool MASKED,
                   __mmask16 tail, float *dval, bool add, const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N;
    const int64_t pg = sp_nm_panel_groups((int32_t)M, 64 * NV);
    for (int64_t g0 = 0; g0 < w->groups; g0 += pg) {
        const int64_t g1 = SP_MIN(w->groups, g0 + pg);
        const int64_t k1 = g1 * N;
        for (int64_t i = r0; i < r1; i++) {
            __m512 gv[4];
            for (int q = 0; q < NV; q++) gv[q] = load_q(dy + i * lddy + b, q, NV, MASKED, tail);
            const uint8_t *idx = w->idx + i * S;
            float *dv = dval + i * S;
            int64_t g = g0, t = 0; /* slot k is slot t of group g */
            for (int64_t k = g0 * N; k < k1; k += 16) {
                const int64_t cnt = SP_MIN(16, k1 - k);
                __m512 a[16];
                for (int l = 0; l < 16; l++) {
                    a[l] = _mm512_setzero_ps();
                    if (l < cnt) {
                        const float *xr = x + (g * M + idx[k + l]) * ldx + b;
                        for (int q = 0; q < NV; q++)
                            a[l] = _mm512_fmadd_ps(gv[q], load_q(xr, q, NV, MASKED, tail), a[l]);
                        if (++t == N) t = 0, g++;
                    }
                }
                const __mmask16 m = lanes(cnt);
                __m512 s = hsum16(a);
                if (add) s = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dv + k), s);
                _mm512_mask_storeu_ps(dv + k, m, s);
            }
        }
    }
}

AI void sddmm_rows(const sp_nm *w, int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                   const float *x, int64_t ldx, int64_t batch, float *dval, bool accumulate,
                   const int64_t N, const int64_t M) {
    if (batch == 0) { /* the sum over no batch columns is 0 */
        if (!accumulate) {
            const int64_t S = w->groups * N;
            for (int64_t k = r0 * S; k < r1 * S; k++) dval[k] = 0.0f;
        }
        return;
    }
    int64_t b = 0;
    for (; b + 64 <= batch; b += 64)
        sddmm_tile(w, r0, r1, dy, lddy, x, ldx, b, 4, false, 0xFFFF, dval, accumulate || b > 0, N,
                   M);
    if (b < batch) {
        const int64_t rest = batch - b, nv = (rest + 15) / 16;
        const __mmask16 tail = lanes(rest - 16 * (nv - 1));
        const bool add = accumulate || b > 0;
#define TILE(NV) sddmm_tile(w, r0, r1, dy, lddy, x, ldx, b, NV, true, tail, dval, add, N, M)
        NV_SWITCH(nv, TILE)
#undef TILE
    }
}

void sp_f32_sddmm_nm__avx512(const sp_nm *w, int64_t r0, int64_t r1, const float *dy,
                             int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                             float *dval, bool accumulate) {
#define CALL(N, M) sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, N, M)
    NM_DISPATCH(w, CALL);
#undef CALL
}
