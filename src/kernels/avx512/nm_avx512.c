/*
 * nm_avx512.c - AVX-512 N:M kernels (compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl).
 *
 * spmm, batch >= 2. Every row has the same number of slots, so the kernel runs a block of R
 * rows at once (R x NV zmm accumulators for a batch tile of 16 NV columns, NV <= 4) over a
 * column panel (nm_tile.h); each slot is one broadcast of its value and NV FMAs whose other
 * operand is the row of X its uint8 offset names. The panel of X is first copied into an
 * aligned buffer that stays in L1 while every row of the range streams through it; partial
 * sums wait in Y between panels. Panels are the outer loop and batch tiles the inner one, so
 * W comes from memory once. Loads bound the loop (one zmm of X per FMA already takes L1's 64
 * bytes a cycle), so the 2:4, 1:4 and 2:8 paths also take values and offsets 8 slots at a
 * time (one ymm and one 64-bit load) instead of one broadcast and one byte per slot; other
 * patterns run the same code with run-time n and m. The last batch tile is masked, so any
 * batch runs without a scalar tail.
 * spmm, batch 1 (SpMV): 16 slots at a time; their x values come from the registers holding the
 * columns the 16 slots span, picked by vpermt2ps (gather for strided x); the stream of W (5
 * bytes a slot, in order) sets the speed.
 * spmm_t: the panel of dX is copied to an aligned L1 buffer; each row's dY tile is held in
 * registers and added into the panel rows its slots name, rows in order (the reference order).
 * sddmm: per row, the dY tile in registers; 16 slots' dot products at a time against the packed
 * panel of X, then one transpose-and-add tree turns 16 accumulators into 16 sums.
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

/* Mask of the first n lanes (none for n <= 0, all for n >= 16). */
AI __mmask16 lanes(int64_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* Vector q of a tile at p: masked by `tail` when it is the last of a masked tile. */
AI __m512 load_q(const float *p, int q, const int NV, const bool MASKED, __mmask16 tail) {
    if (MASKED && q == NV - 1) return _mm512_maskz_loadu_ps(tail, p + 16 * q);
    return _mm512_loadu_ps(p + 16 * q);
}
AI void store_q(float *p, int q, __m512 v, const int NV, const bool MASKED, __mmask16 tail) {
    if (MASKED && q == NV - 1) _mm512_mask_storeu_ps(p + 16 * q, tail, v);
    else _mm512_storeu_ps(p + 16 * q, v);
}

/* Copies rows [c0, c1) of a (cols, ld) matrix, batch columns [b, b + 16 NV) (the last vector
 * masked by tail), into p with rows 16 NV floats apart; masked-off lanes become 0. */
AI void pack_panel(float *p, const float *a, int64_t ld, int64_t c0, int64_t c1, int64_t b,
                   const int NV, const bool MASKED, __mmask16 tail) {
    for (int64_t c = c0; c < c1; c++)
        for (int q = 0; q < NV; q++)
            _mm512_store_ps(p + (c - c0) * 16 * NV + 16 * q, load_q(a + c * ld + b, q, NV, MASKED, tail));
}

/* ---- spmm ---------------------------------------------------------------------------------- */

/* Slot of value vt and offset off in group g, into row r's NV accumulators; its X row is row
 * (g - g0) m + off of the packed panel. */
#define FMA_SLOT(r, vt, off, g)                                                                 \
    do {                                                                                        \
        const float *xr_ = xp + (((g) - g0) * M + (int64_t)(off)) * (16 * NV);                 \
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++)                                    \
            acc[r][q] = _mm512_fmadd_ps(vt, _mm512_load_ps(xr_ + 16 * q), acc[r][q]);           \
    } while (0)

/* Rows [i, i + R) over groups [g0, g1) for batch columns [b, b + 16 NV). Accumulators start at
 * 0 on the first panel and from Y otherwise; the last panel adds bias and applies act.
 *
 * The X rows are the only operand that must come from memory for every FMA (64 bytes a
 * cycle is all L1 gives), so with CHUNKED (n divides 8) the rest is taken off the load ports:
 * 8 slots of a row at a time, their values in one ymm load and spread to every lane by
 * vpermps, their offsets in one 64-bit load and picked out by shifts. */
AI void spmm_block(const sp_nm *w, int64_t S, int64_t i, const int R, int64_t g0, int64_t g1,
                   int64_t gn, const int64_t N, const int64_t M, const bool CHUNKED,
                   const float *xp, int64_t b, const int NV, const bool MASKED, __mmask16 tail,
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

/* One panel (groups [g0, g1)) of one batch tile over rows [r0, r1), R rows at a time; gn ends
 * the next panel, whose slots are prefetched when `far`. */
#define NOINLINE static __attribute__((noinline))
AI void spmm_panel(const sp_nm *w, int64_t r0, int64_t r1, int64_t g0, int64_t g1, int64_t gn,
                   const float *x, int64_t ldx, int64_t b, const int NV, const bool MASKED,
                   __mmask16 tail, float *y, int64_t ldy, const float *bias, sp_act act,
                   const int64_t N, const int64_t M, const bool CHUNKED) {
    const int R = NV >= 3 ? 4 : 8; /* R * NV <= 16 accumulators of the 32 zmm */
    const int64_t S = w->groups * N;
    const bool first = g0 == 0, last = g1 == w->groups;
    /* Pack the panel of X: rows 16 NV floats apart, 64-byte aligned, the batch tail zeroed.
     * Whatever ldx is, the panel then fills L1 evenly (a stride of 1 KiB would crowd it into a
     * quarter of the sets) and no load splits a cache line. */
    float xp[SP_NM_PANEL_BYTES / sizeof(float)] __attribute__((aligned(64)));
    pack_panel(xp, x, ldx, g0 * M, SP_MIN(w->cols, g1 * M), b, NV, MASKED, tail);
    int64_t i = r0;
    for (; i + R <= r1; i += R)
        spmm_block(w, S, i, R, g0, g1, gn, N, M, CHUNKED, xp, b, NV, MASKED, tail, y, ldy,
                   first, last, bias, act);
    for (; i < r1; i++)
        spmm_block(w, S, i, 1, g0, g1, gn, N, M, CHUNKED, xp, b, NV, MASKED, tail, y, ldy,
                   first, last, bias, act);
}

/* Batch 1, x contiguous: y[i] = sum over slots of val * x[col]. A chunk of L = G n slots
 * (G = 16 / n whole groups) reads the `span` = G m columns that follow; those x values are in
 * up to four registers, and one or two vpermt2ps pick each slot's x by its column inside the
 * chunk, so no gather is needed. Other cases (strided x, span > 64) gather. The stream of W
 * (5 bytes a slot, read in order) sets the speed. */
AI __m512 pick_x(const float *xc, int64_t avail, int64_t span, __m512i col) {
    const __m512 x0 = _mm512_maskz_loadu_ps(lanes(avail), xc);
    if (span <= 16) return _mm512_permutexvar_ps(col, x0);
    const __m512 x1 = _mm512_maskz_loadu_ps(lanes(avail - 16), xc + 16);
    const __m512 lo = _mm512_permutex2var_ps(x0, col, x1);
    if (span <= 32) return lo;
    const __m512 x2 = _mm512_maskz_loadu_ps(lanes(avail - 32), xc + 32);
    const __m512 x3 = _mm512_maskz_loadu_ps(lanes(avail - 48), xc + 48);
    const __m512 hi = _mm512_permutex2var_ps(x2, col, x3);
    return _mm512_mask_blend_ps(_mm512_cmpge_epi32_mask(col, _mm512_set1_epi32(32)), lo, hi);
}

AI void spmv_rows(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx, float *y,
                  int64_t ldy, const float *bias, sp_act act, const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N, cols = w->cols;
    const int64_t G = N <= 16 ? 16 / N : 1, L = G * N, span = G * M;
    const bool permute = N <= 16 && ldx == 1 && span <= 64;
    const bool gather = !permute && N <= 16 && cols * ldx < INT32_MAX;
    int32_t base_l[16];
    for (int l = 0; l < 16; l++) base_l[l] = (int32_t)((l / N) * M);
    const __m512i base = _mm512_loadu_si512(base_l);
    const __m512i vld = _mm512_set1_epi32((int32_t)ldx);
    for (int64_t i = r0; i < r1; i++) {
        const float *val = w->val + i * S;
        const uint8_t *idx = w->idx + i * S;
        float s;
        if (permute) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0;
            const __mmask16 m = lanes(L);
            int64_t k = 0, c0 = 0;
            for (; k + 2 * L <= S; k += 2 * L, c0 += 2 * span) {
                __m512i c = _mm512_add_epi32(base, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, idx + k)));
                __m512i d = _mm512_add_epi32(base, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, idx + k + L)));
                a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, val + k), pick_x(x + c0, cols - c0, span, c), a0);
                a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, val + k + L),
                                     pick_x(x + c0 + span, cols - c0 - span, span, d), a1);
            }
            for (; k < S; k += L, c0 += span) {
                const __mmask16 mk = lanes(SP_MIN(L, S - k));
                __m512i c = _mm512_add_epi32(base, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, idx + k)));
                a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, val + k), pick_x(x + c0, cols - c0, span, c), a0);
            }
            s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        } else if (gather) {
            __m512 a0 = _mm512_setzero_ps();
            for (int64_t k = 0, c0 = 0; k < S; k += L, c0 += span) {
                const __mmask16 mk = lanes(SP_MIN(L, S - k));
                __m512i c = _mm512_add_epi32(_mm512_add_epi32(base, _mm512_set1_epi32((int32_t)c0)),
                                             _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mk, idx + k)));
                c = _mm512_mullo_epi32(c, vld);
                a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, val + k),
                                     _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, c, x, 4), a0);
            }
            s = _mm512_reduce_add_ps(a0);
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

/* spmm_rows_<n>_<m> (nm: run-time n and m). Panels outermost, then batch tiles, then row
 * blocks: a panel's slots come from memory once (prefetched during the first tile) and are
 * reread from L2 by the other tiles. One function per tile width keeps the accumulators in
 * registers. */
#define SPMM_PANEL_PARAMS                                                                       \
    const sp_nm *w, int64_t r0, int64_t r1, int64_t g0, int64_t g1, int64_t gn, const float *x, \
        int64_t ldx, int64_t b, __mmask16 tail, float *y, int64_t ldy, const float *bias,       \
        sp_act act
#define SPMM_PANEL_ARGS w, r0, r1, g0, g1, gn, x, ldx, b, tail, y, ldy, bias, act
#define DEFINE_SPMM(suffix, N, M, CHUNKED)                                                      \
    NOINLINE void spmm_full_##suffix(SPMM_PANEL_PARAMS) {                                       \
        spmm_panel(w, r0, r1, g0, g1, gn, x, ldx, b, 4, false, tail, y, ldy, bias, act, N, M,   \
                   CHUNKED);                                                                    \
    }                                                                                           \
    NOINLINE void spmm_tail1_##suffix(SPMM_PANEL_PARAMS) {                                      \
        spmm_panel(w, r0, r1, g0, g1, gn, x, ldx, b, 1, true, tail, y, ldy, bias, act, N, M,    \
                   CHUNKED);                                                                    \
    }                                                                                           \
    NOINLINE void spmm_tail2_##suffix(SPMM_PANEL_PARAMS) {                                      \
        spmm_panel(w, r0, r1, g0, g1, gn, x, ldx, b, 2, true, tail, y, ldy, bias, act, N, M,    \
                   CHUNKED);                                                                    \
    }                                                                                           \
    NOINLINE void spmm_tail3_##suffix(SPMM_PANEL_PARAMS) {                                      \
        spmm_panel(w, r0, r1, g0, g1, gn, x, ldx, b, 3, true, tail, y, ldy, bias, act, N, M,    \
                   CHUNKED);                                                                    \
    }                                                                                           \
    NOINLINE void spmm_tail4_##suffix(SPMM_PANEL_PARAMS) {                                      \
        spmm_panel(w, r0, r1, g0, g1, gn, x, ldx, b, 4, true, tail, y, ldy, bias, act, N, M,    \
                   CHUNKED);                                                                    \
    }                                                                                           \
    NOINLINE void spmm_rows_##suffix(const sp_nm *w, int64_t r0, int64_t r1, const float *x,     \
                                     int64_t ldx, int64_t batch, float *y, int64_t ldy,          \
                                     const float *bias, sp_act act) {                            \
        if (batch == 1) {                                                                       \
            spmv_rows(w, r0, r1, x, ldx, y, ldy, bias, act, N, M);                              \
            return;                                                                             \
        }                                                                                       \
        const int64_t full = batch / 64 * 64, rest = batch - full, nv = (rest + 15) / 16;       \
        const __mmask16 tail = lanes(rest - 16 * (nv - 1));                                     \
        void (*tail_fn)(SPMM_PANEL_PARAMS) = nv == 1   ? spmm_tail1_##suffix                    \
                                             : nv == 2 ? spmm_tail2_##suffix                    \
                                             : nv == 3 ? spmm_tail3_##suffix                    \
                                                       : spmm_tail4_##suffix;                   \
        const int64_t pg = sp_nm_panel_groups((int32_t)(M), 64 * (full ? 4 : nv));              \
        int64_t g0 = 0;                                                                         \
        do { /* at least one pass, so that cols == 0 still writes act(bias) */                  \
            const int64_t g1 = SP_MIN(w->groups, g0 + pg), gn = SP_MIN(w->groups, g1 + pg);     \
            for (int64_t b = 0; b < full; b += 64)                                              \
                spmm_full_##suffix(w, r0, r1, g0, g1, b == 0 ? gn : g1, x, ldx, b, 0xFFFF, y,   \
                                   ldy, bias, act);                                             \
            if (rest)                                                                           \
                tail_fn(w, r0, r1, g0, g1, full == 0 ? gn : g1, x, ldx, full, tail, y, ldy,     \
                        bias, act);                                                             \
            g0 = g1;                                                                            \
        } while (g0 < w->groups);                                                               \
    }
DEFINE_SPMM(2_4, 2, 4, true)
DEFINE_SPMM(1_4, 1, 4, true)
DEFINE_SPMM(2_8, 2, 8, true)
DEFINE_SPMM(nm, (int64_t)w->n, (int64_t)w->m, false)

void sp_f32_spmm_nm__avx512(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                            int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    if (w->n == 2 && w->m == 4) spmm_rows_2_4(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else if (w->n == 1 && w->m == 4) spmm_rows_1_4(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else if (w->n == 2 && w->m == 8) spmm_rows_2_8(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else spmm_rows_nm(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
}

/* ---- spmm_t -------------------------------------------------------------------------------- */

/* dX[:, b:b+16NV] += W^T dY[:, b:b+16NV], panel by panel of dX: the panel is copied into an
 * aligned buffer (so that every update is a whole, unmasked, L1-resident vector), every row
 * adds its dY tile into the panel rows its slots name, rows in order (the reference order of
 * every sum), and the panel is written back. */
AI void spmm_t_tile(const sp_nm *w, int64_t b, const int NV, const bool MASKED, __mmask16 tail,
                    const float *dy, int64_t lddy, float *dx, int64_t lddx, const int64_t N,
                    const int64_t M) {
    const int64_t S = w->groups * N;
    const int64_t pg = sp_nm_panel_groups((int32_t)M, 64 * NV);
    float dp[SP_NM_PANEL_BYTES / sizeof(float)] __attribute__((aligned(64)));
    for (int64_t g0 = 0; g0 < w->groups; g0 += pg) {
        const int64_t g1 = SP_MIN(w->groups, g0 + pg);
        const int64_t c0 = g0 * M, c1 = SP_MIN(w->cols, g1 * M);
        pack_panel(dp, dx, lddx, c0, c1, b, NV, MASKED, tail);
        for (int64_t i = 0; i < w->rows; i++) {
            __m512 gv[4];
            for (int q = 0; q < NV; q++) gv[q] = load_q(dy + i * lddy + b, q, NV, MASKED, tail);
            const float *val = w->val + i * S;
            const uint8_t *idx = w->idx + i * S;
            sp_nm_prefetch(w, i + 1, SP_MIN(i + 2, w->rows), g0, g1, false);
            for (int64_t g = g0; g < g1; g++) {
                float *dg = dp + (g - g0) * M * 16 * NV;
                for (int64_t t = 0; t < N; t++) {
                    const __m512 vt = _mm512_set1_ps(val[g * N + t]);
                    float *d = dg + (int64_t)idx[g * N + t] * 16 * NV;
                    for (int q = 0; q < NV; q++)
                        _mm512_store_ps(d + 16 * q,
                                        _mm512_fmadd_ps(vt, gv[q], _mm512_load_ps(d + 16 * q)));
                }
            }
        }
        for (int64_t c = c0; c < c1; c++)
            for (int q = 0; q < NV; q++)
                store_q(dx + c * lddx + b, q, _mm512_load_ps(dp + (c - c0) * 16 * NV + 16 * q), NV,
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
 * says whether dval already holds a partial sum (an earlier batch tile, or accumulate). The
 * panel of X is packed as in spmm; each row's dY tile stays in registers while 16 slots at a
 * time take their dot products, reduced together by hsum16 into one vector store. */
AI void sddmm_tile(const sp_nm *w, int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                   const float *x, int64_t ldx, int64_t b, const int NV, const bool MASKED,
                   __mmask16 tail, float *dval, bool add, const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N;
    const int64_t pg = sp_nm_panel_groups((int32_t)M, 64 * NV);
    float xp[SP_NM_PANEL_BYTES / sizeof(float)] __attribute__((aligned(64)));
    for (int64_t g0 = 0; g0 < w->groups; g0 += pg) {
        const int64_t g1 = SP_MIN(w->groups, g0 + pg);
        pack_panel(xp, x, ldx, g0 * M, SP_MIN(w->cols, g1 * M), b, NV, MASKED, tail);
        const int64_t k0 = g0 * N, k1 = g1 * N;
        for (int64_t i = r0; i < r1; i++) {
            __m512 gv[4];
            for (int q = 0; q < NV; q++) gv[q] = load_q(dy + i * lddy + b, q, NV, MASKED, tail);
            const uint8_t *idx = w->idx + i * S;
            float *dv = dval + i * S;
            sp_nm_prefetch(w, i + 1, SP_MIN(i + 2, r1), g0, g1, false);
            int64_t g = g0, t = 0; /* slot k is slot t of group g */
#define DOT(l)                                                                                  \
    do {                                                                                        \
        const float *xr = xp + ((g - g0) * M + idx[k + (l)]) * 16 * NV;                         \
        a[l] = _mm512_mul_ps(gv[0], _mm512_load_ps(xr));                                        \
        for (int q = 1; q < NV; q++) a[l] = _mm512_fmadd_ps(gv[q], _mm512_load_ps(xr + 16 * q), a[l]); \
        if (++t == N) t = 0, g++;                                                               \
    } while (0)
            int64_t k = k0;
            for (; k + 16 <= k1; k += 16) {
                __m512 a[16];
#pragma GCC unroll 16
                for (int l = 0; l < 16; l++) DOT(l);
                __m512 sum = hsum16(a);
                if (add) sum = _mm512_add_ps(_mm512_loadu_ps(dv + k), sum);
                _mm512_storeu_ps(dv + k, sum);
            }
            if (k < k1) {
                const int64_t cnt = k1 - k;
                __m512 a[16];
                for (int l = 0; l < 16; l++) a[l] = _mm512_setzero_ps();
                for (int l = 0; l < cnt; l++) DOT(l);
                const __mmask16 mk = lanes(cnt);
                __m512 sum = hsum16(a);
                if (add) sum = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, dv + k), sum);
                _mm512_mask_storeu_ps(dv + k, mk, sum);
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
