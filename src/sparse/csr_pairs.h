/*
 * csr_pairs.h - the row-pair kernel layout of a CSR matrix (sp_csr_pack). Internal.
 *
 * Pair p holds rows 2p and 2p+1 (the last pair of an odd matrix has row 2p only, its partner's
 * values all 0). Its entries e in [ptr[p], ptr[p+1]) are the union of the two rows' columns,
 * increasing; val[2e] belongs to row 2p and val[2e+1] to row 2p+1, 0 where that row has no
 * entry. The product loads X[col[e], :] once for two rows.
 */
#ifndef SPARROW_CSR_PAIRS_H
#define SPARROW_CSR_PAIRS_H

#include "sparrow/sparse.h"

typedef struct sp_csr_pairs {
    int64_t npairs;  /* ceil(rows / 2) */
    int64_t entries; /* ptr[npairs] */
    int64_t *ptr;    /* npairs + 1 */
    int32_t *col;    /* entries */
    float *val;      /* 2 * entries */
} sp_csr_pairs;

/* Builds w->pairs whatever the density (sp_csr_pack decides whether it pays; tests force it). */
sp_status sp_csr_pack_pairs(sp_csr *w);

#endif
