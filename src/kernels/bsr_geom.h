/*
 * bsr_geom.h - where the blocks of a BSR matrix meet its edges; shared by every BSR kernel file
 * (each compiles its own copy). Internal.
 */
#ifndef SPARROW_BSR_GEOM_H
#define SPARROW_BSR_GEOM_H

#include "kernel_table.h"

/* Rows of block row I inside the matrix. */
static inline int64_t sp_bsr_rows_in(const sp_bsr *w, int64_t I) {
    return SP_MIN((int64_t)w->br, w->rows - I * w->br);
}

/* Columns of block column J inside the matrix. */
static inline int64_t sp_bsr_cols_in(const sp_bsr *w, int64_t J) {
    return SP_MIN((int64_t)w->bc, w->cols - J * w->bc);
}

/* The blocks of block row I: [k0, kf) are whole, and if kf < k1 the last one is an edge block
 * with only cv_last columns inside the matrix. */
typedef struct sp_bsr_brow {
    int64_t k0, kf, k1, cv_last;
} sp_bsr_brow;

static inline sp_bsr_brow sp_bsr_brow_of(const sp_bsr *w, int64_t I) {
    sp_bsr_brow b = {w->row_ptr[I], w->row_ptr[I + 1], w->row_ptr[I + 1], w->bc};
    if (b.k1 > b.k0) {
        int64_t cv = sp_bsr_cols_in(w, w->col_idx[b.k1 - 1]);
        if (cv < w->bc) b.kf = b.k1 - 1, b.cv_last = cv;
    }
    return b;
}

#endif
