/*
 * csr_panels.h - the panelled kernel layout of a CSR matrix (sp_csr_pack). Internal.
 *
 * Rows are grouped in blocks of block_rows, columns in panels of panel_cols (<= 256, so a
 * column is a uint8 offset inside its panel). Within a block the entries are stored panel by
 * panel, and inside a panel row by row: segment s = p * rb + r (rb = rows of this block) holds
 * the entries of row r in panel p, at [seg[s], seg[s+1]) relative to the block's first entry.
 * The product walks one panel at a time, so the X rows of a panel (panel_cols x a batch tile of
 * 64 = 32 KiB) stay in L1 while every row of the block uses them.
 */
#ifndef SPARROW_CSR_PANELS_H
#define SPARROW_CSR_PANELS_H

#include "sparrow/sparse.h"

typedef struct sp_csr_panels {
    int32_t block_rows;   /* RB */
    int32_t panel_cols;   /* P, <= 256 */
    int64_t nblocks;      /* ceil(rows / RB) */
    int64_t npanels;      /* ceil(cols / P) */
    int64_t *block_start; /* nblocks + 1: first entry of each block in off/val */
    uint32_t *seg;        /* block b's segment bounds start at b * (RB * npanels + 1) */
    uint8_t *off;         /* nnz: column - panel * P */
    float *val;           /* nnz: values in layout order (a copy of w->val) */
} sp_csr_panels;

/* One row block as the kernels walk it: rows [row0, row0 + rb); row r's entries in panel q are
 * [seg[q * rb + r], seg[q * rb + r + 1]) of off and val. */
typedef struct sp_panel_block {
    int64_t row0, rb;
    const uint32_t *seg;
    const uint8_t *off;
    const float *val;
} sp_panel_block;

static inline sp_panel_block sp_csr_panels_block(const sp_csr *w, int64_t blk) {
    const sp_csr_panels *p = w->panels;
    const int64_t row0 = blk * p->block_rows;
    sp_panel_block b = {row0, (w->rows < row0 + p->block_rows ? w->rows : row0 + p->block_rows) - row0,
                        p->seg + blk * ((int64_t)p->block_rows * p->npanels + 1),
                        p->off + p->block_start[blk], p->val + p->block_start[blk]};
    return b;
}

/* Builds w->panels with panel width panel_cols (1..256) whatever the density: sp_csr_pack
 * decides whether it pays, tests force it. */
sp_status sp_csr_pack_panels(sp_csr *w, int32_t panel_cols);

#endif
