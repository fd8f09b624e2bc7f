/*
 * nm_tile.h - column panels shared by the N:M kernels (internal).
 *
 * Every row of an N:M matrix has the same number of slots, and its group g reads only the m
 * rows of X in columns [g * m, g * m + m). So the kernels cut the columns into panels of whole
 * groups, small enough that the panel of X (or of dX) for one batch tile stays in L1, and run
 * every row of their range through one panel before moving to the next: X is read from L2
 * once per panel and task instead of once per row. Partial sums wait in the output between
 * panels; the sum over a row still runs in slot order, so panels never change a result.
 */
#ifndef SPARROW_NM_TILE_H
#define SPARROW_NM_TILE_H

#include <stdint.h>

/* Bytes of X kept in L1 per panel: half of a 32 KiB L1, leaving room for W, Y and the stack. */
#define SP_NM_PANEL_BYTES 16384

/* Groups per panel when each row of X in the panel takes row_bytes (at least one group). */
static inline int64_t sp_nm_panel_groups(int32_t m, int64_t row_bytes) {
    int64_t g = SP_NM_PANEL_BYTES / ((int64_t)m * (row_bytes > 0 ? row_bytes : 1));
    return g > 0 ? g : 1;
}

#endif
