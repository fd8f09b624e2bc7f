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

/* Segment bounds of block b: rb * npanels + 1 entries. */
static inline const uint32_t *sp_csr_panels_seg(const sp_csr_panels *p, int64_t b) {
    return p->seg + b * ((int64_t)p->block_rows * p->npanels + 1);
}

/* Builds w->panels with panel width panel_cols (1..256) whatever the density: sp_csr_pack
 * decides whether it pays, tests force it. */
sp_status sp_csr_pack_panels(sp_csr *w, int32_t panel_cols);

#endif
