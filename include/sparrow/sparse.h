/*
 * sparrow/sparse.h - sparse weight formats: CSR, block-sparse BSR, N:M, and bit masks.
 *
 * A sparse weight W is (rows x cols) = (out x in). Build one from a dense matrix, optionally
 * through a mask that says which entries to keep, and turn it back into dense:
 *
 *     sp_csr *w = NULL;
 *     sp_status st = sp_csr_from_dense(300, 784, dense, 784, NULL, 0, &w);  // keep nonzeros
 *     ...                                  // sp_csr_spmm(w, ...) in sparrow/kernels.h
 *     sp_csr_to_dense(w, dense, 784);
 *     sp_csr_free(w);
 *
 * Every constructor validates what it is given and every format has a _validate function that
 * checks all invariants and names the first bad value in sp_last_error(). Objects are owned by
 * the caller and freed with their _free function, which accepts NULL.
 */
#ifndef SPARROW_SPARSE_H
#define SPARROW_SPARSE_H

#include "sparrow/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- masks --------------------------------------------------------------------------------- */

/* A (rows x cols) bit mask, one bit per entry: 1 = keep. Rows are padded to whole 64-bit
 * words, so bit (i, j) is bits[i * words_per_row + j / 64] >> (j % 64) & 1. Padding bits are 0. */
typedef struct sp_mask {
    int64_t rows, cols;
    int64_t words_per_row;
    uint64_t *bits;
} sp_mask;

/* New all-zero mask. Returns owned *out. SP_EINVAL on negative sizes, SP_EOVERFLOW, SP_ENOMEM. */
sp_status sp_mask_new(int64_t rows, int64_t cols, sp_mask **out);
void sp_mask_free(sp_mask *m);
/* Mask of the nonzero entries of a dense (rows x cols) matrix with leading dimension ld. */
sp_status sp_mask_from_dense(int64_t rows, int64_t cols, const float *dense, int64_t ld,
                             sp_mask **out);
static inline bool sp_mask_get(const sp_mask *m, int64_t i, int64_t j) {
    return (m->bits[i * m->words_per_row + (j >> 6)] >> (j & 63)) & 1u;
}
static inline void sp_mask_set(sp_mask *m, int64_t i, int64_t j, bool keep) {
    uint64_t *w = &m->bits[i * m->words_per_row + (j >> 6)];
    uint64_t bit = (uint64_t)1 << (j & 63);
    *w = keep ? (*w | bit) : (*w & ~bit);
}
/* Number of set bits. */
int64_t sp_mask_count(const sp_mask *m);
/* Zeroes the entries of dense (rows x cols, leading dim ld) where the mask is 0. */
sp_status sp_mask_apply(const sp_mask *m, float *dense, int64_t ld);

/* ---- CSR ----------------------------------------------------------------------------------- */

/* Compressed sparse rows. Row i holds entries k in [row_ptr[i], row_ptr[i+1]) with strictly
 * increasing column indices. Column indices are stored in one of two widths: col_idx16
 * (uint16, when cols <= 65536: half the index bytes, which is what SpMV speed is made of) or
 * col_idx (int32). Exactly one of the two is non-NULL. Explicit zeros are allowed. */
typedef struct sp_csr {
    int64_t rows, cols, nnz;
    int64_t *row_ptr;     /* rows + 1 entries, row_ptr[0] == 0, non-decreasing, [rows] == nnz */
    int32_t *col_idx;     /* nnz entries, or NULL when col_idx16 is used */
    uint16_t *col_idx16;  /* nnz entries, or NULL when col_idx is used */
    float *val;           /* nnz values */
    struct sp_csr_panels *panels; /* kernel layout built by sp_csr_pack, or NULL */
    bool borrowed;        /* row_ptr and the column indices belong to someone else (a mapped
                           * model file, docs/FORMAT.md): read-only, not freed by sp_csr_free */
} sp_csr;

/* Flags for CSR constructors. */
enum {
    SP_CSR_IDX32 = 1u << 0, /* always store int32 column indices (default: uint16 when it fits) */
};

/* Column of the k-th stored entry, whatever the index width. */
static inline int64_t sp_csr_col(const sp_csr *w, int64_t k) {
    return w->col_idx16 ? (int64_t)w->col_idx16[k] : (int64_t)w->col_idx[k];
}

/* Allocates a CSR with room for nnz entries; row_ptr is zero-filled and the rest is
 * uninitialised, to be filled by the caller and checked with sp_csr_validate. */
sp_status sp_csr_new(int64_t rows, int64_t cols, int64_t nnz, unsigned flags, sp_csr **out);
void sp_csr_free(sp_csr *w);
/* Checks every invariant; SP_EFORMAT (or SP_EINVAL for sizes) naming the first violation. */
sp_status sp_csr_validate(const sp_csr *w);
/* CSR of a dense (rows x cols) matrix with leading dimension ld. With mask == NULL, keeps the
 * nonzero entries; with a mask (same shape), keeps exactly the entries whose bit is set (zeros
 * included). Borrows dense and mask; returns owned *out. */
sp_status sp_csr_from_dense(int64_t rows, int64_t cols, const float *dense, int64_t ld,
                            const sp_mask *mask, unsigned flags, sp_csr **out);
/* CSR copied from caller arrays (int32 column indices), validated before anything is kept. */
sp_status sp_csr_from_arrays(int64_t rows, int64_t cols, int64_t nnz, const int64_t *row_ptr,
                             const int32_t *col_idx, const float *val, unsigned flags,
                             sp_csr **out);
/* Writes W into dense (rows x cols, leading dim ld), zeros elsewhere. */
sp_status sp_csr_to_dense(const sp_csr *w, float *dense, int64_t ld);
/* Bytes used by the arrays (row_ptr + indices + values), the packed layout not included. */
size_t sp_csr_bytes(const sp_csr *w);

/* Packs W for batched products (batch >= 2): blocks of 128 rows walk the columns in panels
 * of 128 or 256, so the X rows of a panel stay in L1 while the whole block uses them (plain CSR
 * re-fetches an X row from L2 for every stored weight). Below ~2.5% density the segments get too
 * short to pay and W is left unpacked (SP_OK, *packed = false). The pack holds a COPY of the
 * values (5 bytes per entry with its uint8 panel offsets): after changing w->val or the
 * structure, call sp_csr_pack again (or sp_csr_unpack). Products with batch < 40 use the plain
 * rows, which are faster there. packed may be NULL. SP_ENOMEM leaves W unpacked and valid. */
sp_status sp_csr_pack(sp_csr *w, bool *packed);
/* Drops the packed layout; accepts NULL. */
void sp_csr_unpack(sp_csr *w);
/* Bytes of the packed layout (0 if none). */
size_t sp_csr_packed_bytes(const sp_csr *w);

/* ---- BSR ----------------------------------------------------------------------------------- */

/* Block-sparse rows: the matrix is tiled by (br x bc) blocks, and only nonzero blocks are
 * stored. Block row I holds blocks k in [row_ptr[I], row_ptr[I+1]) with strictly increasing
 * block-column indices; block k's values are val[k*br*bc ...], row-major inside the block.
 * rows and cols need not be multiples of the block: edge blocks are padded with zeros and
 * entries outside the matrix must be 0. */
typedef struct sp_bsr {
    int64_t rows, cols;
    int32_t br, bc;          /* block shape, each in [1, 64] */
    int64_t brows, bcols;    /* ceil(rows / br), ceil(cols / bc) */
    int64_t nblocks;
    int64_t *row_ptr;        /* brows + 1 */
    int32_t *col_idx;        /* nblocks block-column indices */
    float *val;              /* nblocks * br * bc */
} sp_bsr;

/* Allocates a BSR with room for nblocks blocks; row_ptr and val are zero-filled, col_idx is
 * uninitialised, to be filled by the caller and checked with sp_bsr_validate. Returns owned
 * *out. SP_EINVAL (negative size, block shape outside [1, 64], nblocks > brows*bcols),
 * SP_EOVERFLOW, SP_ENOMEM. */
sp_status sp_bsr_new(int64_t rows, int64_t cols, int32_t br, int32_t bc, int64_t nblocks,
                     sp_bsr **out);
/* Frees w and its arrays; accepts NULL and half-built matrices. */
void sp_bsr_free(sp_bsr *w);
/* Checks every invariant (sizes, block shape, brows/bcols, row_ptr, sorted in-range block
 * columns, zero padding); SP_EFORMAT (or SP_EINVAL for sizes) naming the first violation. */
sp_status sp_bsr_validate(const sp_bsr *w);
/* BSR of a dense matrix: a block is stored when any entry in it is nonzero (mask == NULL) or
 * when any of its mask bits is set (entries outside the mask are stored as 0). Borrows dense and
 * mask; returns owned *out. */
sp_status sp_bsr_from_dense(int64_t rows, int64_t cols, const float *dense, int64_t ld,
                            const sp_mask *mask, int32_t br, int32_t bc, sp_bsr **out);
/* Writes W into dense (rows x cols, leading dim ld), zeros elsewhere. */
sp_status sp_bsr_to_dense(const sp_bsr *w, float *dense, int64_t ld);
/* Bytes used by the arrays (row_ptr + block columns + values, padding included). */
size_t sp_bsr_bytes(const sp_bsr *w);

/* ---- N:M semi-structured ------------------------------------------------------------------- */

/* N:M sparsity: every group of m consecutive columns in a row holds at most n nonzeros
 * (2:4, 1:4, 2:8, ...). Each row has groups = ceil(cols / m) groups and each group stores
 * exactly n (value, offset) slots: val[(i*groups + g)*n + s] and idx[...] = column - g*m, in
 * [0, m), strictly increasing within a group. A group with fewer nonzeros stores explicit
 * zeros. The uint8 offset is the compact metadata: 1 byte per kept weight instead of 4.
 * A partial last group (cols % m != 0) must not point at columns >= cols, so it can hold n
 * distinct offsets only if cols % m >= n: other shapes are refused with SP_ESHAPE. */
typedef struct sp_nm {
    int64_t rows, cols;
    int32_t n, m;            /* 1 <= n <= m <= 32 */
    int64_t groups;          /* per row: ceil(cols / m) */
    float *val;              /* rows * groups * n */
    uint8_t *idx;            /* rows * groups * n */
} sp_nm;

/* Allocates an N:M matrix; val and idx are uninitialised, to be filled by the caller and
 * checked with sp_nm_validate. Returns owned *out. SP_EINVAL (negative shape, n or m out of
 * range), SP_ESHAPE (last group narrower than n), SP_EOVERFLOW, SP_ENOMEM. */
sp_status sp_nm_new(int64_t rows, int64_t cols, int32_t n, int32_t m, sp_nm **out);
/* Accepts NULL and half-built matrices. */
void sp_nm_free(sp_nm *w);
/* Checks every invariant; SP_EFORMAT (SP_EINVAL for sizes) naming the first violation. */
sp_status sp_nm_validate(const sp_nm *w);
/* N:M of a dense matrix. mask == NULL: the dense matrix must already be N:M (SP_EFORMAT naming
 * the first group with more than n nonzeros otherwise). With a mask, keeps the masked entries,
 * which must themselves be N:M. Groups with fewer kept entries are padded with explicit zeros
 * at their lowest free offsets. Borrows dense and mask; returns owned *out. To *choose* N:M
 * entries by magnitude, use the pruning API. */
sp_status sp_nm_from_dense(int64_t rows, int64_t cols, const float *dense, int64_t ld,
                           const sp_mask *mask, int32_t n, int32_t m, sp_nm **out);
/* Writes W into dense (rows x cols, leading dim ld), zeros elsewhere. */
sp_status sp_nm_to_dense(const sp_nm *w, float *dense, int64_t ld);
/* Bytes used by the arrays (values + offsets, padding slots included). */
size_t sp_nm_bytes(const sp_nm *w);

#ifdef __cplusplus
}
#endif
#endif
