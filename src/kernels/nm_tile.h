/*
 * nm_tile.h - column panels shared by the N:M kernels (internal).
 *
 * Every row of an N:M matrix has the same number of slots, and its group g reads only the m
 * rows of X in columns [g * m, g * m + m). So the kernels cut the columns into panels of whole
 * groups, small enough that the panel of X (or of dX) for one batch tile stays in L1, and run
 * every row of their range through one panel before moving to the next: X is read from L2
 * once per panel and task instead of once per row. Partial sums wait in the output between
 * panels; the sum over a row still runs in slot order, so panels never change a result.
 * Walking W panel by panel is not a stream the hardware prefetchers follow, hence
 * sp_nm_prefetch.
 */
#ifndef SPARROW_NM_TILE_H
#define SPARROW_NM_TILE_H

#include <stdbool.h>
#include <stdint.h>

#include "sparrow/sparse.h"

/* Bytes of X kept in L1 per panel: three quarters of a 32 KiB L1 (measured best on Zen 4 at
 * 2:4, batch 64: 16 KiB pays more per-panel overhead, 32 KiB loses X to W and Y). */
#ifndef SP_NM_PANEL_BYTES
#define SP_NM_PANEL_BYTES 24576
#endif
/* The kernels pack a panel into a stack buffer of this size, and a panel holds at least one
 * group: m = 32 rows of the widest tile (64 floats). */
_Static_assert(SP_NM_PANEL_BYTES >= 32 * 64 * 4, "SP_NM_PANEL_BYTES below one 32-column group");

/* Groups per panel when each row of X in the panel takes row_bytes (at least one group). */
static inline int64_t sp_nm_panel_groups(int32_t m, int64_t row_bytes) {
    int64_t g = SP_NM_PANEL_BYTES / ((int64_t)m * (row_bytes > 0 ? row_bytes : 1));
    return g > 0 ? g : 1;
}

/* Prefetches the values and offsets of groups [g0, g1) of rows [r0, r1): into L1, or into L2
 * when far (the data is needed a whole panel later). */
static inline void sp_nm_prefetch(const sp_nm *w, int64_t r0, int64_t r1, int64_t g0, int64_t g1,
                                  bool far) {
    if (g1 <= g0) return;
    const int64_t S = w->groups * w->n, k0 = g0 * w->n, nk = (g1 - g0) * w->n;
    for (int64_t r = r0; r < r1; r++) {
        const char *pv = (const char *)(w->val + r * S + k0);
        const char *pi = (const char *)(w->idx + r * S + k0);
        for (int64_t o = 0; o < nk * 4 + 63; o += 64) {
            const char *p = pv + (o < nk * 4 ? o : nk * 4 - 1);
            if (far) __builtin_prefetch(p, 0, 2);
            else __builtin_prefetch(p, 0, 3);
        }
        for (int64_t o = 0; o < nk + 63; o += 64) {
            const char *p = pi + (o < nk ? o : nk - 1);
            if (far) __builtin_prefetch(p, 0, 2);
            else __builtin_prefetch(p, 0, 3);
        }
    }
}

#endif
