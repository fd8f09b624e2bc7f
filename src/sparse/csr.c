/*
 * csr.c - compressed sparse rows: construction, validation, conversion.
 */
#include <string.h>

#include "sparrow/sparse.h"

#include "../core/internal.h"

#define CSR_IDX16_MAX_COLS 65536

static bool use_idx16(int64_t cols, unsigned flags) {
    return !(flags & SP_CSR_IDX32) && cols <= CSR_IDX16_MAX_COLS;
}

sp_status sp_csr_new(int64_t rows, int64_t cols, int64_t nnz, unsigned flags, sp_csr **out) {
    if (!out) return sp_fail(SP_EINVAL, "csr_new: out is NULL");
    *out = NULL;
    if (rows < 0 || cols < 0 || nnz < 0)
        return sp_fail(SP_EINVAL, "csr_new: negative size rows=%lld cols=%lld nnz=%lld",
                       (long long)rows, (long long)cols, (long long)nnz);
    if (cols > INT32_MAX)
        return sp_fail(SP_EOVERFLOW, "csr_new: cols %lld exceeds int32 indices", (long long)cols);
    int64_t cells;
    if (!sp_mul_i64(rows, cols, &cells) || nnz > cells)
        return sp_fail(SP_EINVAL, "csr_new: nnz %lld > rows*cols for %lld x %lld", (long long)nnz,
                       (long long)rows, (long long)cols);
    bool i16 = use_idx16(cols, flags);
    size_t rp_bytes, idx_bytes, val_bytes;
    if (!sp_bytes(rows + 1, sizeof(int64_t), &rp_bytes) ||
        !sp_bytes(nnz, i16 ? sizeof(uint16_t) : sizeof(int32_t), &idx_bytes) ||
        !sp_bytes(nnz, sizeof(float), &val_bytes))
        return sp_fail(SP_EOVERFLOW, "csr_new: array sizes overflow");
    sp_csr *w = sp_calloc(1, sizeof *w);
    if (!w) return SP_ENOMEM;
    w->rows = rows;
    w->cols = cols;
    w->nnz = nnz;
    w->row_ptr = sp_calloc(1, rp_bytes);
    if (i16) w->col_idx16 = sp_alloc(idx_bytes);
    else w->col_idx = sp_alloc(idx_bytes);
    w->val = sp_alloc(val_bytes);
    if (!w->row_ptr || !(w->col_idx16 || w->col_idx) || !w->val) {
        sp_csr_free(w);
        return SP_ENOMEM;
    }
    *out = w;
    return SP_OK;
}

void sp_csr_free(sp_csr *w) {
    if (!w) return;
    sp_csr_unpack(w);
    if (!w->borrowed) {
        sp_free(w->row_ptr);
        sp_free(w->col_idx);
        sp_free(w->col_idx16);
    }
    sp_free(w->val);
    sp_free(w);
}

sp_status sp_csr_validate(const sp_csr *w) {
    if (!w) return sp_fail(SP_EINVAL, "csr: NULL matrix");
    if (w->rows < 0 || w->cols < 0 || w->nnz < 0)
        return sp_fail(SP_EINVAL, "csr: negative size rows=%lld cols=%lld nnz=%lld",
                       (long long)w->rows, (long long)w->cols, (long long)w->nnz);
    if (!w->row_ptr) return sp_fail(SP_EFORMAT, "csr: row_ptr is NULL");
    if ((w->col_idx == NULL) == (w->col_idx16 == NULL))
        return sp_fail(SP_EFORMAT, "csr: exactly one of col_idx and col_idx16 must be set");
    if (w->col_idx16 && w->cols > CSR_IDX16_MAX_COLS)
        return sp_fail(SP_EFORMAT, "csr: cols %lld too many for 16-bit indices",
                       (long long)w->cols);
    if (w->nnz > 0 && !w->val) return sp_fail(SP_EFORMAT, "csr: val is NULL with nnz %lld", (long long)w->nnz);
    if (w->row_ptr[0] != 0)
        return sp_fail(SP_EFORMAT, "csr: row_ptr[0] = %lld, must be 0", (long long)w->row_ptr[0]);
    if (w->row_ptr[w->rows] != w->nnz)
        return sp_fail(SP_EFORMAT, "csr: row_ptr[%lld] = %lld != nnz %lld", (long long)w->rows,
                       (long long)w->row_ptr[w->rows], (long long)w->nnz);
    for (int64_t i = 0; i < w->rows; i++) {
        int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        if (k1 < k0 || k1 > w->nnz)
            return sp_fail(SP_EFORMAT, "csr: row_ptr not monotonic at row %lld (%lld -> %lld)",
                           (long long)i, (long long)k0, (long long)k1);
        int64_t prev = -1;
        for (int64_t k = k0; k < k1; k++) {
            int64_t c = sp_csr_col(w, k);
            if (c < 0 || c >= w->cols)
                return sp_fail(SP_EFORMAT, "csr: column %lld out of range [0, %lld) in row %lld",
                               (long long)c, (long long)w->cols, (long long)i);
            if (c <= prev)
                return sp_fail(SP_EFORMAT,
                               "csr: columns not strictly increasing in row %lld (%lld after %lld)",
                               (long long)i, (long long)c, (long long)prev);
            prev = c;
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
    if (mask && (mask->rows != rows || mask->cols != cols))
        return sp_fail(SP_ESHAPE, "%s: mask is %lld x %lld, matrix is %lld x %lld", fn,
                       (long long)mask->rows, (long long)mask->cols, (long long)rows,
                       (long long)cols);
    return SP_OK;
}

static bool keep(const float *dense, int64_t ld, const sp_mask *mask, int64_t i, int64_t j) {
    return mask ? sp_mask_get(mask, i, j) : dense[i * ld + j] != 0.0f;
}

sp_status sp_csr_from_dense(int64_t rows, int64_t cols, const float *dense, int64_t ld,
                            const sp_mask *mask, unsigned flags, sp_csr **out) {
    if (!out) return sp_fail(SP_EINVAL, "csr_from_dense: out is NULL");
    *out = NULL;
    sp_status st = check_dense_args("csr_from_dense", rows, cols, dense, ld, mask);
    if (st != SP_OK) return st;
    int64_t nnz = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) nnz += keep(dense, ld, mask, i, j);
    sp_csr *w;
    st = sp_csr_new(rows, cols, nnz, flags, &w);
    if (st != SP_OK) return st;
    int64_t k = 0;
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t j = 0; j < cols; j++) {
            if (!keep(dense, ld, mask, i, j)) continue;
            if (w->col_idx16) w->col_idx16[k] = (uint16_t)j;
            else w->col_idx[k] = (int32_t)j;
            w->val[k++] = dense[i * ld + j];
        }
        w->row_ptr[i + 1] = k;
    }
    *out = w;
    return SP_OK;
}

sp_status sp_csr_from_arrays(int64_t rows, int64_t cols, int64_t nnz, const int64_t *row_ptr,
                             const int32_t *col_idx, const float *val, unsigned flags,
                             sp_csr **out) {
    if (!out) return sp_fail(SP_EINVAL, "csr_from_arrays: out is NULL");
    *out = NULL;
    if (rows < 0 || cols < 0 || nnz < 0)
        return sp_fail(SP_EINVAL, "csr_from_arrays: negative size rows=%lld cols=%lld nnz=%lld",
                       (long long)rows, (long long)cols, (long long)nnz);
    if (!row_ptr || (nnz > 0 && (!col_idx || !val)))
        return sp_fail(SP_EINVAL, "csr_from_arrays: NULL array");
    /* Validate the caller's arrays before trusting nnz for an allocation. */
    if (row_ptr[0] != 0 || row_ptr[rows] != nnz)
        return sp_fail(SP_EFORMAT, "csr_from_arrays: row_ptr[0] = %lld, row_ptr[%lld] = %lld, nnz = %lld",
                       (long long)row_ptr[0], (long long)rows, (long long)row_ptr[rows], (long long)nnz);
    for (int64_t i = 0; i < rows; i++) {
        if (row_ptr[i + 1] < row_ptr[i] || row_ptr[i + 1] > nnz)
            return sp_fail(SP_EFORMAT, "csr: row_ptr not monotonic at row %lld (%lld -> %lld)",
                           (long long)i, (long long)row_ptr[i], (long long)row_ptr[i + 1]);
        for (int64_t k = row_ptr[i]; k < row_ptr[i + 1]; k++) {
            if (col_idx[k] < 0 || col_idx[k] >= cols)
                return sp_fail(SP_EFORMAT, "csr: column %lld out of range [0, %lld) in row %lld",
                               (long long)col_idx[k], (long long)cols, (long long)i);
            if (k > row_ptr[i] && col_idx[k] <= col_idx[k - 1])
                return sp_fail(SP_EFORMAT,
                               "csr: columns not strictly increasing in row %lld (%lld after %lld)",
                               (long long)i, (long long)col_idx[k], (long long)col_idx[k - 1]);
        }
    }
    sp_csr *w;
    sp_status st = sp_csr_new(rows, cols, nnz, flags, &w);
    if (st != SP_OK) return st;
    memcpy(w->row_ptr, row_ptr, (size_t)(rows + 1) * sizeof *row_ptr);
    for (int64_t k = 0; k < nnz; k++) {
        if (w->col_idx16) w->col_idx16[k] = (uint16_t)col_idx[k];
        else w->col_idx[k] = col_idx[k];
    }
    if (nnz) memcpy(w->val, val, (size_t)nnz * sizeof *val);
    *out = w;
    return SP_OK;
}

sp_status sp_csr_to_dense(const sp_csr *w, float *dense, int64_t ld) {
    if (!w) return sp_fail(SP_EINVAL, "csr_to_dense: matrix is NULL");
    sp_status st = check_dense_args("csr_to_dense", w->rows, w->cols, dense, ld, NULL);
    if (st != SP_OK) return st;
    for (int64_t i = 0; i < w->rows; i++) {
        memset(dense + i * ld, 0, (size_t)w->cols * sizeof(float));
        for (int64_t k = w->row_ptr[i]; k < w->row_ptr[i + 1]; k++)
            dense[i * ld + sp_csr_col(w, k)] = w->val[k];
    }
    return SP_OK;
}

size_t sp_csr_bytes(const sp_csr *w) {
    if (!w) return 0;
    size_t idx = w->col_idx16 ? sizeof(uint16_t) : sizeof(int32_t);
    return (size_t)(w->rows + 1) * sizeof(int64_t) + (size_t)w->nnz * (idx + sizeof(float));
}
