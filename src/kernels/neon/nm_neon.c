/*
 * nm_neon.c - aarch64 Advanced SIMD N:M kernels (4-wide float32x4_t, 32 registers). The plan
 * of the x86 files (nm_avx512.c):
 *
 * spmm, batch >= 2: panels of X (nm_tile.h) packed into an aligned L1 buffer (rows 4 NV floats
 * apart, the batch tail zeroed), batch tiles of 4 NV columns (NV <= 4, the last vector of the
 * last tile partial), blocks of R rows with R x NV <= 16 accumulators; each slot is NV FMAs on
 * the packed X row its offset names. For 2:4, 1:4 and 2:8 the values of 4 slots come in one
 * vector load and feed vfmaq_laneq_f32 directly, and their offsets in one 32-bit load. Panels
 * are the outer loop, so W comes from memory once, prefetched a panel ahead.
 * spmm, batch 1: a dot product per row with four partial sums (no gather on NEON).
 * spmm_t: the panel of dX in an aligned L1 buffer, rows in order (the reference order).
 * sddmm: 4 slots' dot products at a time, reduced together by pairwise adds.
 */
#include <arm_neon.h>
#include <string.h>

#include "../kernel_table.h"
#include "relu_neon.h"
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

/* Vector q of a tile at p; the last vector of a partial tile has only `rem` (1..4) lanes,
 * read and written through a small buffer so that nothing beyond them is touched. */
AI float32x4_t load_q(const float *p, int q, const int NV, const bool PARTIAL, int rem) {
    if (PARTIAL && q == NV - 1) {
        float t[4] = {0, 0, 0, 0};
        memcpy(t, p + 4 * q, (size_t)rem * sizeof(float));
        return vld1q_f32(t);
    }
    return vld1q_f32(p + 4 * q);
}
AI void store_q(float *p, int q, float32x4_t v, const int NV, const bool PARTIAL, int rem) {
    if (PARTIAL && q == NV - 1) {
        float t[4];
        vst1q_f32(t, v);
        memcpy(p + 4 * q, t, (size_t)rem * sizeof(float));
        return;
    }
    vst1q_f32(p + 4 * q, v);
}

/* Copies rows [c0, c1) of a (cols, ld) matrix, batch columns [b, b + 4 NV), into p with rows
 * 4 NV floats apart; lanes past the batch become 0. */
AI void pack_panel(float *p, const float *a, int64_t ld, int64_t c0, int64_t c1, int64_t b,
                   const int NV, const bool PARTIAL, int rem) {
    for (int64_t c = c0; c < c1; c++)
        for (int q = 0; q < NV; q++)
            vst1q_f32(p + (c - c0) * 4 * NV + 4 * q, load_q(a + c * ld + b, q, NV, PARTIAL, rem));
}

/* ---- spmm ---------------------------------------------------------------------------------- */

/* The packed X row of the slot with offset off in group g. */
#define X_ROW(off, g) (xp + (((g) - g0) * M + (int64_t)(off)) * (4 * NV))

/* Rows [i, i + R) over groups [g0, g1) for batch columns [b, b + 4 NV), X from the packed
 * panel xp. Accumulators start at 0 on the first panel and from Y otherwise; the last panel
 * adds bias and applies act. */
AI void spmm_block(const sp_nm *w, int64_t S, int64_t i, const int R, int64_t g0, int64_t g1,
                   int64_t gn, const int64_t N, const int64_t M, const bool CHUNKED,
                   const float *xp, int64_t b, const int NV, const bool PARTIAL, int rem,
                   float *y, int64_t ldy, bool first, bool last, const float *bias, sp_act act) {
    float32x4_t acc[8][4];
    for (int r = 0; r < R; r++)
        for (int q = 0; q < NV; q++)
            acc[r][q] = first ? vdupq_n_f32(0.0f)
                              : load_q(y + (i + r) * ldy + b, q, NV, PARTIAL, rem);
    const float *val = w->val + i * S;
    const uint8_t *idx = w->idx + i * S;
    sp_nm_prefetch(w, i + R, SP_MIN(i + 2 * R, w->rows), g0, g1, false);
    sp_nm_prefetch(w, i, i + R, g1, gn, true);
    int64_t g = g0;
    if (CHUNKED) { /* 4 slots = 4 / n groups at a time: values by lane, offsets in 32 bits */
        const int64_t CG = 4 / N;
        for (; g + CG <= g1; g += CG) {
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const float32x4_t vv = vld1q_f32(val + r * S + g * N);
                uint32_t ob;
                memcpy(&ob, idx + r * S + g * N, sizeof ob);
#define LANE(l)                                                                                 \
    do {                                                                                        \
        const float *xr_ = X_ROW((ob >> (8 * (l))) & 0xFF, g + (l) / N);                        \
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++)                                    \
            acc[r][q] = vfmaq_laneq_f32(acc[r][q], vld1q_f32(xr_ + 4 * q), vv, l);              \
    } while (0)
                LANE(0);
                LANE(1);
                LANE(2);
                LANE(3);
#undef LANE
            }
        }
    }
    for (; g < g1; g++) {
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const float *v = val + r * S + g * N;
            const uint8_t *o = idx + r * S + g * N;
            for (int64_t t = 0; t < N; t++) {
                const float *xr = X_ROW(o[t], g);
#pragma GCC unroll 4
                for (int q = 0; q < NV; q++)
                    acc[r][q] = vfmaq_n_f32(acc[r][q], vld1q_f32(xr + 4 * q), v[t]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        const float32x4_t vb = vdupq_n_f32(bias ? bias[i + r] : 0.0f);
        for (int q = 0; q < NV; q++) {
            float32x4_t o = acc[r][q];
            if (last) {
                o = vaddq_f32(o, vb);
                if (act == SP_ACT_RELU) o = sp_relu_f32x4(o);
            }
            store_q(y + (i + r) * ldy + b, q, o, NV, PARTIAL, rem);
        }
    }
}
#undef X_ROW

/* One panel of one batch tile over rows [r0, r1): pack X, then R rows at a time. */
AI void spmm_panel(const sp_nm *w, int64_t r0, int64_t r1, int64_t g0, int64_t g1, int64_t gn,
                   const float *x, int64_t ldx, int64_t b, const int NV, const bool PARTIAL,
                   int rem, float *y, int64_t ldy, const float *bias, sp_act act,
                   const int64_t N, const int64_t M, const bool CHUNKED) {
    const int R = NV >= 3 ? 4 : 8; /* R * NV <= 16 of the 32 q registers */
    const int64_t S = w->groups * N;
    const bool first = g0 == 0, last = g1 == w->groups;
    float xp[SP_NM_PANEL_BYTES / sizeof(float)] __attribute__((aligned(64)));
    pack_panel(xp, x, ldx, g0 * M, SP_MIN(w->cols, g1 * M), b, NV, PARTIAL, rem);
    int64_t i = r0;
    for (; i + R <= r1; i += R)
        spmm_block(w, S, i, R, g0, g1, gn, N, M, CHUNKED, xp, b, NV, PARTIAL, rem, y, ldy, first,
                   last, bias, act);
    for (; i < r1; i++)
        spmm_block(w, S, i, 1, g0, g1, gn, N, M, CHUNKED, xp, b, NV, PARTIAL, rem, y, ldy, first,
                   last, bias, act);
}

/* Batch 1: a dot product per row, four partial sums. */
AI void spmv_rows(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx, float *y,
                  int64_t ldy, const float *bias, sp_act act, const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N;
    for (int64_t i = r0; i < r1; i++) {
        const float *val = w->val + i * S;
        const uint8_t *idx = w->idx + i * S;
        float p[4] = {0, 0, 0, 0};
        for (int64_t g = 0; g < w->groups; g++)
            for (int64_t t = 0; t < N; t++)
                p[(g * N + t) & 3] += val[g * N + t] * x[(g * M + idx[g * N + t]) * ldx];
        y[i * ldy] = sp_epilogue((p[0] + p[1]) + (p[2] + p[3]), bias, i, act);
    }
}

/* spmm_rows_<n>_<m> (nm: run-time n and m): panels outermost, then batch tiles of 16 columns
 * and a last partial tile, then row blocks. */
#define SPMM_PANEL_PARAMS                                                                       \
    const sp_nm *w, int64_t r0, int64_t r1, int64_t g0, int64_t g1, int64_t gn, const float *x, \
        int64_t ldx, int64_t b, int rem, float *y, int64_t ldy, const float *bias, sp_act act
#define DEFINE_SPMM_TAIL(suffix, NV, N, M, CHUNKED)                                             \
    NOINLINE void spmm_tail##NV##_##suffix(SPMM_PANEL_PARAMS) {                                 \
        spmm_panel(w, r0, r1, g0, g1, gn, x, ldx, b, NV, true, rem, y, ldy, bias, act, N, M,    \
                   CHUNKED);                                                                    \
    }
#define DEFINE_SPMM(suffix, N, M, CHUNKED)                                                      \
    NOINLINE void spmm_full_##suffix(SPMM_PANEL_PARAMS) {                                       \
        spmm_panel(w, r0, r1, g0, g1, gn, x, ldx, b, 4, false, rem, y, ldy, bias, act, N, M,    \
                   CHUNKED);                                                                    \
    }                                                                                           \
    DEFINE_SPMM_TAIL(suffix, 1, N, M, CHUNKED)                                                  \
    DEFINE_SPMM_TAIL(suffix, 2, N, M, CHUNKED)                                                  \
    DEFINE_SPMM_TAIL(suffix, 3, N, M, CHUNKED)                                                  \
    DEFINE_SPMM_TAIL(suffix, 4, N, M, CHUNKED)                                                  \
    NOINLINE void spmm_rows_##suffix(const sp_nm *w, int64_t r0, int64_t r1, const float *x,     \
                                     int64_t ldx, int64_t batch, float *y, int64_t ldy,          \
                                     const float *bias, sp_act act) {                            \
        if (batch == 1) {                                                                       \
            spmv_rows(w, r0, r1, x, ldx, y, ldy, bias, act, N, M);                              \
            return;                                                                             \
        }                                                                                       \
        const int64_t full = batch / 16 * 16, rest = batch - full, nv = (rest + 3) / 4;         \
        const int rem = (int)(rest - 4 * (nv - 1));                                             \
        void (*tail_fn)(SPMM_PANEL_PARAMS) = nv == 1   ? spmm_tail1_##suffix                    \
                                             : nv == 2 ? spmm_tail2_##suffix                    \
                                             : nv == 3 ? spmm_tail3_##suffix                    \
                                                       : spmm_tail4_##suffix;                   \
        const int64_t pg = sp_nm_panel_groups((int32_t)(M), 16 * (full ? 4 : nv));             \
        int64_t g0 = 0;                                                                         \
        do { /* at least one pass, so that cols == 0 still writes act(bias) */                  \
            const int64_t g1 = SP_MIN(w->groups, g0 + pg), gn = SP_MIN(w->groups, g1 + pg);     \
            for (int64_t b = 0; b < full; b += 16)                                              \
                spmm_full_##suffix(w, r0, r1, g0, g1, b == 0 ? gn : g1, x, ldx, b, 4, y, ldy,   \
                                   bias, act);                                                  \
            if (rest)                                                                           \
                tail_fn(w, r0, r1, g0, g1, full == 0 ? gn : g1, x, ldx, full, rem, y, ldy, bias, \
                        act);                                                                   \
            g0 = g1;                                                                            \
        } while (g0 < w->groups);                                                               \
    }
DEFINE_SPMM(2_4, 2, 4, true)
DEFINE_SPMM(1_4, 1, 4, true)
DEFINE_SPMM(2_8, 2, 8, true)
DEFINE_SPMM(nm, (int64_t)w->n, (int64_t)w->m, false)

void sp_f32_spmm_nm__neon(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                          int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
    if (w->n == 2 && w->m == 4) spmm_rows_2_4(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else if (w->n == 1 && w->m == 4) spmm_rows_1_4(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else if (w->n == 2 && w->m == 8) spmm_rows_2_8(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
    else spmm_rows_nm(w, r0, r1, x, ldx, batch, y, ldy, bias, act);
}

/* ---- spmm_t -------------------------------------------------------------------------------- */

/* dX[:, b:b+4NV] += W^T dY[:, b:b+4NV], panel by panel of dX (copied to an aligned buffer and
 * back), rows in order. */
AI void spmm_t_tile(const sp_nm *w, int64_t b, const int NV, const bool PARTIAL, int rem,
                    const float *dy, int64_t lddy, float *dx, int64_t lddx, const int64_t N,
                    const int64_t M) {
    const int64_t S = w->groups * N;
    const int64_t pg = sp_nm_panel_groups((int32_t)M, 16 * NV);
    float dp[SP_NM_PANEL_BYTES / sizeof(float)] __attribute__((aligned(64)));
    for (int64_t g0 = 0; g0 < w->groups; g0 += pg) {
        const int64_t g1 = SP_MIN(w->groups, g0 + pg);
        const int64_t c0 = g0 * M, c1 = SP_MIN(w->cols, g1 * M);
        pack_panel(dp, dx, lddx, c0, c1, b, NV, PARTIAL, rem);
        for (int64_t i = 0; i < w->rows; i++) {
            float32x4_t gv[4];
            for (int q = 0; q < NV; q++) gv[q] = load_q(dy + i * lddy + b, q, NV, PARTIAL, rem);
            const float *val = w->val + i * S;
            const uint8_t *idx = w->idx + i * S;
            sp_nm_prefetch(w, i + 1, SP_MIN(i + 2, w->rows), g0, g1, false);
            for (int64_t g = g0; g < g1; g++) {
                float *dg = dp + (g - g0) * M * 4 * NV;
                for (int64_t t = 0; t < N; t++) {
                    const float vt = val[g * N + t];
                    float *d = dg + (int64_t)idx[g * N + t] * 4 * NV;
                    for (int q = 0; q < NV; q++)
                        vst1q_f32(d + 4 * q, vfmaq_n_f32(vld1q_f32(d + 4 * q), gv[q], vt));
                }
            }
        }
        for (int64_t c = c0; c < c1; c++)
            for (int q = 0; q < NV; q++)
                store_q(dx + c * lddx + b, q, vld1q_f32(dp + (c - c0) * 4 * NV + 4 * q), NV,
                        PARTIAL, rem);
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
    for (; b + 16 <= b1; b += 16) spmm_t_tile(w, b, 4, false, 4, dy, lddy, dx, lddx, N, M);
    if (b < b1) {
        const int64_t rest = b1 - b, nv = (rest + 3) / 4;
        const int rem = (int)(rest - 4 * (nv - 1));
#define TILE(NV) spmm_t_tile(w, b, NV, true, rem, dy, lddy, dx, lddx, N, M)
        NV_SWITCH(nv, TILE)
#undef TILE
    }
}

void sp_f32_spmm_t_nm__neon(const sp_nm *w, int64_t b0, int64_t b1, const float *dy,
                            int64_t lddy, float *dx, int64_t lddx) {
#define CALL(N, M) spmm_t_cols(w, b0, b1, dy, lddy, dx, lddx, N, M)
    NM_DISPATCH(w, CALL);
#undef CALL
}

/* ---- sddmm --------------------------------------------------------------------------------- */

/* The four lane sums of a[0..3], as one vector: two rounds of pairwise adds. */
AI float32x4_t hsum4(const float32x4_t *a) {
    return vpaddq_f32(vpaddq_f32(a[0], a[1]), vpaddq_f32(a[2], a[3]));
}

/* dval[i, k] (+)= dY[i, b:b+4NV] . X[col(k), b:b+4NV] over the packed panel of X; `add` says
 * whether dval already holds a partial sum. */
AI void sddmm_tile(const sp_nm *w, int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                   const float *x, int64_t ldx, int64_t b, const int NV, const bool PARTIAL,
                   int rem, float *dval, bool add, const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N;
    const int64_t pg = sp_nm_panel_groups((int32_t)M, 16 * NV);
    float xp[SP_NM_PANEL_BYTES / sizeof(float)] __attribute__((aligned(64)));
    for (int64_t g0 = 0; g0 < w->groups; g0 += pg) {
        const int64_t g1 = SP_MIN(w->groups, g0 + pg);
        pack_panel(xp, x, ldx, g0 * M, SP_MIN(w->cols, g1 * M), b, NV, PARTIAL, rem);
        const int64_t k0 = g0 * N, k1 = g1 * N;
        for (int64_t i = r0; i < r1; i++) {
            float32x4_t gv[4];
            for (int q = 0; q < NV; q++) gv[q] = load_q(dy + i * lddy + b, q, NV, PARTIAL, rem);
            const uint8_t *idx = w->idx + i * S;
            float *dv = dval + i * S;
            sp_nm_prefetch(w, i + 1, SP_MIN(i + 2, r1), g0, g1, false);
            int64_t g = g0, t = 0; /* slot k is slot t of group g */
#define DOT(l)                                                                                  \
    do {                                                                                        \
        const float *xr = xp + ((g - g0) * M + idx[k + (l)]) * 4 * NV;                          \
        a[l] = vmulq_f32(gv[0], vld1q_f32(xr));                                                 \
        for (int q = 1; q < NV; q++) a[l] = vfmaq_f32(a[l], gv[q], vld1q_f32(xr + 4 * q));      \
        if (++t == N) t = 0, g++;                                                               \
    } while (0)
            int64_t k = k0;
            for (; k + 4 <= k1; k += 4) {
                float32x4_t a[4];
#pragma GCC unroll 4
                for (int l = 0; l < 4; l++) DOT(l);
                float32x4_t sum = hsum4(a);
                if (add) sum = vaddq_f32(vld1q_f32(dv + k), sum);
                vst1q_f32(dv + k, sum);
            }
            for (; k < k1; k++) {
                float32x4_t a[1];
                DOT(0);
                const float sum = vaddvq_f32(a[0]);
                dv[k] = add ? dv[k] + sum : sum;
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
    for (; b + 16 <= batch; b += 16)
        sddmm_tile(w, r0, r1, dy, lddy, x, ldx, b, 4, false, 4, dval, accumulate || b > 0, N, M);
    if (b < batch) {
        const int64_t rest = batch - b, nv = (rest + 3) / 4;
        const int rem = (int)(rest - 4 * (nv - 1));
        const bool add = accumulate || b > 0;
#define TILE(NV) sddmm_tile(w, r0, r1, dy, lddy, x, ldx, b, NV, true, rem, dval, add, N, M)
        NV_SWITCH(nv, TILE)
#undef TILE
    }
}

void sp_f32_sddmm_nm__neon(const sp_nm *w, int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                           const float *x, int64_t ldx, int64_t batch, float *dval,
                           bool accumulate) {
#define CALL(N, M) sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, N, M)
    NM_DISPATCH(w, CALL);
#undef CALL
}
