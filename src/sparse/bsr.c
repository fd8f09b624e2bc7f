/*
 * bsr.c - block-sparse rows: construction, validation, conversion.
 *
 * The matrix is tiled by (br x bc) blocks and only the blocks that hold something are stored,
 * each as br*bc values row-major. The last block row and block column may stick out of the
 * matrix: their entries outside it are padding and must be 0, so that kernels may run a whole
 * block through the same code as long as they never touch X or Y outside the matrix.
 */
#include <string.h>

#include "sparrow/sparse.h"

#include "../core/internal.h"

#define BSR_MAX_BLOCK 64

static int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

static bool block_shape_ok(int32_t br, int32_t bc) {
    return br >= 1 && br <= BSR_MAX_BLOCK && bc >= 1 && bc <= BSR_MAX_BLOCK;
}

sp_status sp_bsr_new(int64_t rows, int64_t cols, int32_t br, int32_t bc, int64_t nblocks,
                     sp_bsr **out) {
    if (!out) return sp_fail(SP_EINVAL, "bsr_new: out is NULL");
    *out = NULL;
    if (rows < 0 || cols < 0 || nblocks < 0)
        return sp_fail(SP_EINVAL, "bsr_new: negative size rows=%lld cols=%lld nblocks=%lld",
                       (long long)rows, (long long)cols, (long long)nblocks);
    if (!block_shape_ok(br, bc))
        return sp_fail(SP_EINVAL, "bsr_new: block shape %dx%d outside [1, %d]", (int)br, (int)bc,
                       BSR_MAX_BLOCK);
    int64_t brows = ceil_div(rows, br), bcols = ceil_div(cols, bc);
    if (bcols > INT32_MAX)
        return sp_fail(SP_EOVERFLOW, "bsr_new: bcols %lld exceeds int32 indices",
                       (long long)bcols);
    int64_t cells;
    if (!sp_mul_i64(brows, bcols, &cells) || nblocks > cells)
        return sp_fail(SP_EINVAL, "bsr_new: nblocks %lld > brows*bcols for %lld x %lld blocks",
                       (long long)nblocks, (long long)brows, (long long)bcols);
    int64_t nval;
    size_t rp_bytes, idx_bytes, val_bytes;
    if (!sp_mul_i64(nblocks, (int64_t)br * bc, &nval) ||
        !sp_bytes(brows + 1, sizeof(int64_t), &rp_bytes) ||
        !sp_bytes(nblocks, sizeof(int32_t), &idx_bytes) ||
        !sp_bytes(nval, sizeof(float), &val_bytes))
        return sp_fail(SP_EOVERFLOW, "bsr_new: array sizes overflow");
    sp_bsr *w = sp_calloc(1, sizeof *w);
    if (!w) return SP_ENOMEM;
    w->rows = rows;
    w->cols = cols;
    w->br = br;
    w->bc = bc;
    w->brows = brows;
    w->bcols = bcols;
    w->nblocks = nblocks;
    w->row_ptr = sp_calloc(1, rp_bytes);
    w->col_idx = sp_alloc(idx_bytes);
    w->val = sp_calloc(1, val_bytes); /* zeroed: padding entries start valid */
    if (!w->row_ptr || !w->col_idx || !w->val) {
        sp_bsr_free(w);
        return SP_ENOMEM;
    }
    *out = w;
    return SP_OK;
}

void sp_bsr_free(sp_bsr *w) {
    if (!w) return;
    sp_free(w->row_ptr);
    sp_free(w->col_idx);
    sp_free(w->val);
    sp_free(w);
}

sp_status sp_bsr_validate(const sp_bsr *w) {
    if (!w) return sp_fail(SP_EINVAL, "bsr: NULL matrix");
    if (w->rows < 0 || w->cols < 0 || w->nblocks < 0)
        return sp_fail(SP_EINVAL, "bsr: negative size rows=%lld cols=%lld nblocks=%lld",
                       (long long)w->rows, (long long)w->cols, (long long)w->nblocks);
    if (!block_shape_ok(w->br, w->bc))
        return sp_fail(SP_EINVAL, "bsr: block shape %dx%d outside [1, %d]", (int)w->br,
                       (int)w->bc, BSR_MAX_BLOCK);
    const int64_t br = w->br, bc = w->bc;
    if (w->brows != ceil_div(w->rows, br))
        return sp_fail(SP_EFORMAT, "bsr: brows %lld != ceil(rows %lld / br %lld) = %lld",
                       (long long)w->brows, (long long)w->rows, (long long)br,
                       (long long)ceil_div(w->rows, br));
    if (w->bcols != ceil_div(w->cols, bc))
        return sp_fail(SP_EFORMAT, "bsr: bcols %lld != ceil(cols %lld / bc %lld) = %lld",
                       (long long)w->bcols, (long long)w->cols, (long long)bc,
                       (long long)ceil_div(w->cols, bc));
    if (w->bcols > INT32_MAX)
        return sp_fail(SP_EFORMAT, "bsr: bcols %lld exceeds int32 indices", (long long)w->bcols);
    int64_t cells;
    if (!sp_mul_i64(w->brows, w->bcols, &cells) || w->nblocks > cells)
        return sp_fail(SP_EFORMAT, "bsr: nblocks %lld > brows*bcols = %lld x %lld",
                       (long long)w->nblocks, (long long)w->brows, (long long)w->bcols);
    if (!w->row_ptr) return sp_fail(SP_EFORMAT, "bsr: row_ptr is NULL");
    if (w->nblocks > 0 && (!w->col_idx || !w->val))
        return sp_fail(SP_EFORMAT, "bsr: %s is NULL with nblocks %lld",
                       w->col_idx ? "val" : "col_idx", (long long)w->nblocks);
    if (w->row_ptr[0] != 0)
        return sp_fail(SP_EFORMAT, "bsr: row_ptr[0] = %lld, must be 0", (long long)w->row_ptr[0]);
    if (w->row_ptr[w->brows] != w->nblocks)
        return sp_fail(SP_EFORMAT, "bsr: row_ptr[%lld] = %lld != nblocks %lld",
                       (long long)w->brows, (long long)w->row_ptr[w->brows],
                       (long long)w->nblocks);
    /* rows of the last block row and columns of the last block column that are padding */
    const int64_t rows_last = w->rows - (w->brows - 1) * br;
    const int64_t cols_last = w->cols - (w->bcols - 1) * bc;
    for (int64_t I = 0; I < w->brows; I++) {
        int64_t k0 = w->row_ptr[I], k1 = w->row_ptr[I + 1];
        if (k1 < k0 || k1 > w->nblocks)
            return sp_fail(SP_EFORMAT,
                           "bsr: row_ptr not monotonic at block row %lld (%lld -> %lld)",
                           (long long)I, (long long)k0, (long long)k1);
        int64_t prev = -1;
        const int64_t rv = I == w->brows - 1 ? rows_last : br;
        for (int64_t k = k0; k < k1; k++) {
            int64_t J = w->col_idx[k];
            if (J < 0)
                return sp_fail(SP_EFORMAT, "bsr: block column %lld < 0 in block row %lld",
                               (long long)J, (long long)I);
            if (J >= w->bcols)
                return sp_fail(SP_EFORMAT, "bsr: block column %lld >= bcols %lld in block row %lld",
                               (long long)J, (long long)w->bcols, (long long)I);
            if (J <= prev)
                return sp_fail(SP_EFORMAT,
                               "bsr: block columns not strictly increasing in block row %lld "
                               "(%lld after %lld)",
                               (long long)I, (long long)J, (long long)prev);
            prev = J;
            const int64_t cv = J == w->bcols - 1 ? cols_last : bc;
            if (rv == br && cv == bc) continue;
            const float *v = w->val + k * br * bc;
            for (int64_t r = 0; r < br; r++)
                for (int64_t c = 0; c < bc; c++)
                    if ((r >= rv || c >= cv) && v[r * bc + c] != 0.0f)
                        return sp_fail(SP_EFORMAT,
                                       "bsr: padding entry (%lld, %lld) of block %lld (block row "
                                       "%lld, block column %lld) is %g, must be 0",
                                       (long long)r, (long long)c, (long long)k, (long long)I,
                                       (long long)J, (double)v[r * bc + c]);
        }
    }
    return SP_OK;
}

static sp_status check_dense_args(const char *fn, int64_t rows, int64_t cols, const void *dense,
                                  int64_t ld, const sp_mask *mask) {
    if (rows < 0 || cols < 0)
        return sp_fail(SP_EINVAL, "%s: negative shape %lld x %lld", fn, (long long)rows,
                       (long long)cols);
    if (!dense && rows > 0 && cols > 0) return sp_fail(SP_EINVAL, "%s: dense is NULL", fn);
    if (ld < cols || ld < 0)
        return sp_fail(SP_ESHAPE, "%s: ld %lld < cols %lld", fn, (long long)ld, (long long)cols);
    int64_t span;
    if (!sp_mul_i64(rows, ld, &span))
        return sp_fail(SP_EOVERFLOW, "%s: %lld rows x ld %lld overflows", fn, (long long)rows,
                       (long long)ld);
    if (mask && (mask->rows != rows || mask->cols != cols))
        return sp_fail(SP_ESHAPE, "%s: mask is %lld x %lld, matrix is %lld x %lld", fn,
                       (long long)mask->rows, (long long)mask->cols, (long long)rows,
                       (long long)cols);
    return SP_OK;
}

/* True if block (I, J), clipped to the matrix, holds a kept entry. */
static bool block_kept(const float *dense, int64_t ld, const sp_mask *mask, int64_t i0,
                       int64_t i1, int64_t j0, int64_t j1) {
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j = j0; j < j1; j++)
            if (mask ? sp_mask_get(mask, i, j) : dense[i * ld + j] != 0.0f) return true;
    return false;
}

sp_status sp_bsr_from_dense(int64_t rows, int64_t cols, const float *dense, int64_t ld,
                            const sp_mask *mask, int32_t br, int32_t bc, sp_bsr **out) {
    if (!out) return sp_fail(SP_EINVAL, "bsr_from_dense: out is NULL");
    *out = NULL;
    sp_status st = check_dense_args("bsr_from_dense", rows, cols, dense, ld, mask);
    if (st != SP_OK) return st;
    if (!block_shape_ok(br, bc))
        return sp_fail(SP_EINVAL, "bsr_from_dense: block shape %dx%d outside [1, %d]", (int)br,
                       (int)bc, BSR_MAX_BLOCK);
    const int64_t brows = ceil_div(rows, br), bcols = ceil_div(cols, bc);
    int64_t nblocks = 0;
    for (int64_t I = 0; I < brows; I++)
        for (int64_t J = 0; J < bcols; J++)
            nblocks += block_kept(dense, ld, mask, I * br, SP_MIN(rows, (I + 1) * br), J * bc,
                                  SP_MIN(cols, (J + 1) * bc));
    sp_bsr *w;
    st = sp_bsr_new(rows, cols, br, bc, nblocks, &w);
    if (st != SP_OK) return st;
    int64_t k = 0;
    for (int64_t I = 0; I < brows; I++) {
        const int64_t i0 = I * br, i1 = SP_MIN(rows, i0 + br);
        for (int64_t J = 0; J < bcols; J++) {
            const int64_t j0 = J * bc, j1 = SP_MIN(cols, j0 + bc);
            if (!block_kept(dense, ld, mask, i0, i1, j0, j1)) continue;
            float *v = w->val + k * br * bc; /* zero-filled by sp_bsr_new: padding stays 0 */
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++)
                    if (!mask || sp_mask_get(mask, i, j))
                        v[(i - i0) * bc + (j - j0)] = dense[i * ld + j];
            w->col_idx[k++] = (int32_t)J;
        }
        w->row_ptr[I + 1] = k;
    }
    *out = w;
    return SP_OK;
}

sp_status sp_bsr_to_dense(const sp_bsr *w, float *dense, int64_t ld) {
    if (!w) return sp_fail(SP_EINVAL, "bsr_to_dense: matrix is NULL");
    sp_status st = check_dense_args("bsr_to_dense", w->rows, w->cols, dense, ld, NULL);
    if (st != SP_OK) return st;
    const int64_t br = w->br, bc = w->bc;
    for (int64_t i = 0; i < w->rows; i++) memset(dense + i * ld, 0, (size_t)w->cols * sizeof(float));
    for (int64_t I = 0; I < w->brows; I++) {
        const int64_t i0 = I * br, i1 = SP_MIN(w->rows, i0 + br);
        for (int64_t k = w->row_ptr[I]; k < w->row_ptr[I + 1]; k++) {
            const int64_t j0 = (int64_t)w->col_idx[k] * bc, j1 = SP_MIN(w->cols, j0 + bc);
            const float *v = w->val + k * br * bc;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++) dense[i * ld + j] = v[(i - i0) * bc + (j - j0)];
        }
    }
    return SP_OK;
}

size_t sp_bsr_bytes(const sp_bsr *w) {
    if (!w) return 0;
    return (size_t)(w->brows + 1) * sizeof(int64_t) + (size_t)w->nblocks * sizeof(int32_t) +
           (size_t)w->nblocks * (size_t)w->br * (size_t)w->bc * sizeof(float);
}
