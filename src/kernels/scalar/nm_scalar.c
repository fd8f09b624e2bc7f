/*
 * nm_scalar.c - portable C N:M kernels, written so that a compiler vectorises the batch loop
 * with whatever the baseline ISA offers (SSE2 on x86-64, NEON on aarch64).
 *
 * spmm keeps a tile of SP_TILE batch columns of two output rows in local accumulators and
 * walks the columns in panels (nm_tile.h) so that the panel of X stays in L1 for all rows of
 * the range. n and m are compile-time constants in the fast paths (2:4, 1:4, 2:8), so the slot
 * loop unrolls; any other pattern takes the same code with run-time n and m.
 */
#include <string.h>

#include "../kernel_table.h"
#include "../nm_tile.h"

#define SP_TILE 32
#define AI static inline __attribute__((always_inline))

/* Calls body(N, M) with constants for the fast patterns, run-time values otherwise. */
#define NM_DISPATCH(w, call)                                                                    \
    do {                                                                                        \
        if ((w)->n == 2 && (w)->m == 4) call(2, 4);                                             \
        else if ((w)->n == 1 && (w)->m == 4) call(1, 4);                                        \
        else if ((w)->n == 2 && (w)->m == 8) call(2, 8);                                        \
        else call((int64_t)(w)->n, (int64_t)(w)->m);                                            \
    } while (0)

/* Batch 1: y[i] = dot(row i, x) with four partial sums. */
AI void spmv_rows(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx, float *y,
                  int64_t ldy, const float *bias, sp_act act, const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N;
    for (int64_t i = r0; i < r1; i++) {
        const float *v = w->val + i * S;
        const uint8_t *o = w->idx + i * S;
        float s[4] = {0, 0, 0, 0};
        for (int64_t g = 0; g < w->groups; g++) {
            const float *xg = x + g * M * ldx;
            for (int64_t t = 0; t < N; t++) s[t & 3] += v[g * N + t] * xg[o[g * N + t] * ldx];
        }
        y[i * ldy] = sp_epilogue((s[0] + s[1]) + (s[2] + s[3]), bias, i, act);
    }
}

/* Rows [i, i + R) over groups [g0, g1) for batch columns [b, b + nb), nb <= SP_TILE. */
AI void spmm_block(const sp_nm *w, int64_t S, int64_t i, const int R, int64_t g0, int64_t g1,
                   const int64_t N, const int64_t M, const float *x, int64_t ldx, int64_t b,
                   const int64_t nb, float *y, int64_t ldy, bool first, bool last,
                   const float *bias, sp_act act) {
    float acc[2][SP_TILE];
    for (int r = 0; r < R; r++) {
        if (first) memset(acc[r], 0, sizeof acc[r]);
        else memcpy(acc[r], y + (i + r) * ldy + b, (size_t)nb * sizeof(float));
    }
    for (int64_t g = g0; g < g1; g++) {
        const float *xg = x + g * M * ldx + b;
        for (int r = 0; r < R; r++) {
            const float *v = w->val + (i + r) * S + g * N;
            const uint8_t *o = w->idx + (i + r) * S + g * N;
            for (int64_t t = 0; t < N; t++) {
                const float *xr = xg + o[t] * ldx;
                const float vt = v[t];
                for (int64_t c = 0; c < nb; c++) acc[r][c] += vt * xr[c];
            }
        }
    }
    for (int r = 0; r < R; r++) {
        float *yr = y + (i + r) * ldy + b;
        if (last) {
            for (int64_t c = 0; c < nb; c++) yr[c] = sp_epilogue(acc[r][c], bias, i + r, act);
        } else {
            memcpy(yr, acc[r], (size_t)nb * sizeof(float));
        }
    }
}

AI void spmm_tile(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx, int64_t b,
                  const int64_t nb, float *y, int64_t ldy, const float *bias, sp_act act,
                  const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N;
    const int64_t pg = sp_nm_panel_groups((int32_t)M, SP_TILE * (int64_t)sizeof(float));
    int64_t g0 = 0;
    do { /* at least one pass, so that cols == 0 still writes act(bias) */
        const int64_t g1 = SP_MIN(w->groups, g0 + pg);
        const bool first = g0 == 0, last = g1 == w->groups;
        int64_t i = r0;
        for (; i + 2 <= r1; i += 2)
            spmm_block(w, S, i, 2, g0, g1, N, M, x, ldx, b, nb, y, ldy, first, last, bias, act);
        if (i < r1)
            spmm_block(w, S, i, 1, g0, g1, N, M, x, ldx, b, nb, y, ldy, first, last, bias, act);
        g0 = g1;
    } while (g0 < w->groups);
}

AI void spmm_rows(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                  int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act,
                  const int64_t N, const int64_t M) {
    if (batch == 1) {
        spmv_rows(w, r0, r1, x, ldx, y, ldy, bias, act, N, M);
        return;
    }
    int64_t b = 0;
    for (; b + SP_TILE <= batch; b += SP_TILE)
        spmm_tile(w, r0, r1, x, ldx, b, SP_TILE, y, ldy, bias, act, N, M);
    if (b < batch) spmm_tile(w, r0, r1, x, ldx, b, batch - b, y, ldy, bias, act, N, M);
}

void sp_f32_spmm_nm__scalar(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                            int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act) {
#define CALL(N, M) spmm_rows(w, r0, r1, x, ldx, batch, y, ldy, bias, act, N, M)
    NM_DISPATCH(w, CALL);
#undef CALL
}

/* dX[:, b0:b1] += W^T dY[:, b0:b1]: for each panel of dX columns (kept in L1), every row's dY
 * segment is added into the panel's rows at its slots; rows run in order, so each dX element
 * is summed in the same order as the reference. */
AI void spmm_t_cols(const sp_nm *w, int64_t b0, int64_t b1, const float *dy, int64_t lddy,
                    float *dx, int64_t lddx, const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N;
    for (int64_t b = b0; b < b1; b += SP_TILE) {
        const int64_t nb = SP_MIN(SP_TILE, b1 - b);
        const int64_t pg = sp_nm_panel_groups((int32_t)M, nb * (int64_t)sizeof(float));
        for (int64_t g0 = 0; g0 < w->groups; g0 += pg) {
            const int64_t g1 = SP_MIN(w->groups, g0 + pg);
            for (int64_t i = 0; i < w->rows; i++) {
                const float *gr = dy + i * lddy + b;
                for (int64_t g = g0; g < g1; g++) {
                    const float *v = w->val + i * S + g * N;
                    const uint8_t *o = w->idx + i * S + g * N;
                    float *dg = dx + g * M * lddx + b;
                    for (int64_t t = 0; t < N; t++) {
                        float *d = dg + o[t] * lddx;
                        const float vt = v[t];
                        for (int64_t c = 0; c < nb; c++) d[c] += vt * gr[c];
                    }
                }
            }
        }
    }
}

void sp_f32_spmm_t_nm__scalar(const sp_nm *w, int64_t b0, int64_t b1, const float *dy,
                              int64_t lddy, float *dx, int64_t lddx) {
#define CALL(N, M) spmm_t_cols(w, b0, b1, dy, lddy, dx, lddx, N, M)
    NM_DISPATCH(w, CALL);
#undef CALL
}

/* dval[k] (+)= dY[i, :] . X[col(k), :], eight partial sums per dot product; the columns are
 * walked in panels so that X's rows for a panel stay in L1 across the rows of the range. */
AI void sddmm_rows(const sp_nm *w, int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                   const float *x, int64_t ldx, int64_t batch, float *dval, bool accumulate,
                   const int64_t N, const int64_t M) {
    const int64_t S = w->groups * N;
    const int64_t pg = sp_nm_panel_groups((int32_t)M, batch * (int64_t)sizeof(float));
    for (int64_t g0 = 0; g0 < w->groups; g0 += pg) {
        const int64_t g1 = SP_MIN(w->groups, g0 + pg);
        for (int64_t i = r0; i < r1; i++) {
            const float *gr = dy + i * lddy;
            for (int64_t g = g0; g < g1; g++) {
                const uint8_t *o = w->idx + i * S + g * N;
                float *dv = dval + i * S + g * N;
                for (int64_t t = 0; t < N; t++) {
                    const float *xr = x + (g * M + o[t]) * ldx;
                    float part[8] = {0};
                    int64_t c = 0;
                    for (; c + 8 <= batch; c += 8)
                        for (int l = 0; l < 8; l++) part[l] += gr[c + l] * xr[c + l];
                    for (; c < batch; c++) part[0] += gr[c] * xr[c];
                    float acc = ((part[0] + part[1]) + (part[2] + part[3])) +
                                ((part[4] + part[5]) + (part[6] + part[7]));
                    dv[t] = accumulate ? dv[t] + acc : acc;
                }
            }
        }
    }
}

void sp_f32_sddmm_nm__scalar(const sp_nm *w, int64_t r0, int64_t r1, const float *dy,
                             int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                             float *dval, bool accumulate) {
#define CALL(N, M) sddmm_rows(w, r0, r1, dy, lddy, x, ldx, batch, dval, accumulate, N, M)
    NM_DISPATCH(w, CALL);
#undef CALL
}
