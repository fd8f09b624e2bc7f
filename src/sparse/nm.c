/*
 * nm.c - N:M semi-structured sparsity: construction, validation, conversion.
 *
 * Row i of an N:M matrix is cut into groups = ceil(cols / m) groups of m columns; each group
 * stores exactly n (value, uint8 offset) slots at val/idx[(i * groups + g) * n + s], offsets
 * strictly increasing inside the group. A group with fewer than n kept entries is padded with
 * explicit zeros at its lowest free offsets, so every row has the same number of slots: that
 * regularity is what the kernels exploit. A partial last group (cols % m != 0) has only
 * cols % m real columns, so it can hold n distinct offsets only when cols % m >= n.
 */
#include <string.h>

#include "sparrow/sparse.h"

#include "../core/internal.h"

/* ceil(cols / m) without overflow; cols >= 0, m >= 1. */
static int64_t nm_groups(int64_t cols, int32_t m) { return cols / m + (cols % m != 0); }

/* Columns of the last group: m, or cols % m when the last group is partial. */
static int64_t nm_last_width(int64_t cols, int32_t m) { return cols % m ? cols % m : m; }

/* Checks n and m, and that the last group can hold n distinct columns (when there are slots
 * at all). fn prefixes the message. */
static sp_status check_pattern(const char *fn, int64_t rows, int64_t cols, int32_t n, int32_t m) {
    if (m < 1 || m > 32)
        return sp_fail(SP_EINVAL, "%s: m %d out of range [1, 32]", fn, (int)m);
    if (n < 1 || n > m)
        return sp_fail(SP_EINVAL, "%s: n %d out of range [1, m %d]", fn, (int)n, (int)m);
    if (rows > 0 && cols > 0 && nm_last_width(cols, m) < n)
        return sp_fail(SP_ESHAPE,
                       "%s: cols %lld leaves a last group of %lld columns, fewer than n %d",
                       fn, (long long)cols, (long long)nm_last_width(cols, m), (int)n);
    return SP_OK;
}

sp_status sp_nm_new(int64_t rows, int64_t cols, int32_t n, int32_t m, sp_nm **out) {
    if (!out) return sp_fail(SP_EINVAL, "nm_new: out is NULL");
    *out = NULL;
    if (rows < 0 || cols < 0)
        return sp_fail(SP_EINVAL, "nm_new: negative shape rows=%lld cols=%lld", (long long)rows,
                       (long long)cols);
    sp_status st = check_pattern("nm_new", rows, cols, n, m);
    if (st != SP_OK) return st;
    const int64_t groups = nm_groups(cols, m);
    int64_t per_row, slots;
    size_t val_bytes, idx_bytes;
    if (!sp_mul_i64(groups, n, &per_row) || !sp_mul_i64(rows, per_row, &slots) ||
        !sp_bytes(slots, sizeof(float), &val_bytes) || !sp_bytes(slots, sizeof(uint8_t), &idx_bytes))
        return sp_fail(SP_EOVERFLOW, "nm_new: %lld x %lld at %d:%d overflows", (long long)rows,
                       (long long)cols, (int)n, (int)m);
    sp_nm *w = sp_calloc(1, sizeof *w);
    if (!w) return SP_ENOMEM;
    w->rows = rows;
    w->cols = cols;
    w->n = n;
    w->m = m;
    w->groups = groups;
    w->val = sp_alloc(val_bytes);
    w->idx = sp_alloc(idx_bytes);
    if (!w->val || !w->idx) {
        sp_nm_free(w);
        return SP_ENOMEM;
    }
    *out = w;
    return SP_OK;
}

void sp_nm_free(sp_nm *w) {
    if (!w) return;
    sp_free(w->val);
    sp_free(w->idx);
    sp_free(w);
}

sp_status sp_nm_validate(const sp_nm *w) {
    if (!w) return sp_fail(SP_EINVAL, "nm: NULL matrix");
    if (w->rows < 0 || w->cols < 0)
        return sp_fail(SP_EINVAL, "nm: negative shape rows=%lld cols=%lld", (long long)w->rows,
                       (long long)w->cols);
    if (w->m < 1 || w->m > 32) return sp_fail(SP_EINVAL, "nm: m %d out of range [1, 32]", (int)w->m);
    if (w->n < 1 || w->n > w->m)
        return sp_fail(SP_EINVAL, "nm: n %d out of range [1, m %d]", (int)w->n, (int)w->m);
    const int64_t n = w->n, m = w->m;
    if (w->groups != nm_groups(w->cols, w->m))
        return sp_fail(SP_EFORMAT, "nm: groups %lld != ceil(cols %lld / m %lld) = %lld",
                       (long long)w->groups, (long long)w->cols, (long long)m,
                       (long long)nm_groups(w->cols, w->m));
    int64_t per_row, slots;
    if (!sp_mul_i64(w->groups, n, &per_row) || !sp_mul_i64(w->rows, per_row, &slots))
        return sp_fail(SP_EOVERFLOW, "nm: %lld x %lld at %lld:%lld overflows", (long long)w->rows,
                       (long long)w->cols, (long long)n, (long long)m);
    if (slots > 0 && (!w->val || !w->idx))
        return sp_fail(SP_EFORMAT, "nm: %s is NULL with %lld slots", w->val ? "idx" : "val",
                       (long long)slots);
    if (slots > 0 && nm_last_width(w->cols, w->m) < n)
        return sp_fail(SP_EFORMAT, "nm: last group has %lld columns, fewer than n %lld",
                       (long long)nm_last_width(w->cols, w->m), (long long)n);
    for (int64_t i = 0; i < w->rows; i++) {
        for (int64_t g = 0; g < w->groups; g++) {
            const uint8_t *off = w->idx + (i * w->groups + g) * n;
            for (int64_t s = 0; s < n; s++) {
                if (off[s] >= m)
                    return sp_fail(SP_EFORMAT, "nm: offset %d >= m %lld in row %lld group %lld",
                                   (int)off[s], (long long)m, (long long)i, (long long)g);
                if (g * m + off[s] >= w->cols)
                    return sp_fail(SP_EFORMAT,
                                   "nm: offset %d in row %lld group %lld is column %lld >= cols %lld",
                                   (int)off[s], (long long)i, (long long)g,
                                   (long long)(g * m + off[s]), (long long)w->cols);
                if (s > 0 && off[s] <= off[s - 1])
                    return sp_fail(SP_EFORMAT,
                                   "nm: offsets not strictly increasing in row %lld group %lld "
                                   "(%d after %d)",
                                   (long long)i, (long long)g, (int)off[s], (int)off[s - 1]);
            }
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

sp_status sp_nm_from_dense(int64_t rows, int64_t cols, const float *dense, int64_t ld,
                           const sp_mask *mask, int32_t n, int32_t m, sp_nm **out) {
    static const char fn[] = "nm_from_dense";
    if (!out) return sp_fail(SP_EINVAL, "%s: out is NULL", fn);
    *out = NULL;
    sp_status st = check_dense_args(fn, rows, cols, dense, ld, mask);
    if (st == SP_OK) st = check_pattern(fn, rows, cols, n, m);
    if (st != SP_OK) return st;
    /* Refuse a matrix that is not N:M before allocating anything. */
    const int64_t groups = nm_groups(cols, m);
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t g = 0; g < groups; g++) {
            const int64_t j0 = g * m, j1 = SP_MIN(cols, j0 + m);
            int64_t kept = 0;
            for (int64_t j = j0; j < j1; j++) kept += keep(dense, ld, mask, i, j);
            if (kept > n)
                return sp_fail(SP_EFORMAT,
                               "%s: row %lld group %lld (columns %lld..%lld) has %lld %s, "
                               "more than n %d",
                               fn, (long long)i, (long long)g, (long long)j0, (long long)(j1 - 1),
                               (long long)kept, mask ? "masked entries" : "nonzeros", (int)n);
        }
    }
    sp_nm *w;
    st = sp_nm_new(rows, cols, n, m, &w);
    if (st != SP_OK) return st;
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t g = 0; g < groups; g++) {
            const int64_t j0 = g * m, width = SP_MIN(cols - j0, (int64_t)m);
            int64_t kept = 0;
            for (int64_t o = 0; o < width; o++) kept += keep(dense, ld, mask, i, j0 + o);
            /* pad with the lowest free offsets: kept + pad == n, all offsets < width */
            int64_t pad = n - kept, k = (i * groups + g) * n;
            for (int64_t o = 0; o < width; o++) {
                bool kp = keep(dense, ld, mask, i, j0 + o);
                if (!kp && pad == 0) continue;
                if (!kp) pad--;
                w->idx[k] = (uint8_t)o;
                w->val[k++] = kp ? dense[i * ld + j0 + o] : 0.0f;
            }
        }
    }
    *out = w;
    return SP_OK;
}

sp_status sp_nm_to_dense(const sp_nm *w, float *dense, int64_t ld) {
    if (!w) return sp_fail(SP_EINVAL, "nm_to_dense: matrix is NULL");
    sp_status st = check_dense_args("nm_to_dense", w->rows, w->cols, dense, ld, NULL);
    if (st != SP_OK) return st;
    const int64_t per_row = w->groups * w->n;
    for (int64_t i = 0; i < w->rows; i++) {
        float *d = dense + i * ld;
        memset(d, 0, (size_t)w->cols * sizeof(float));
        for (int64_t k = 0; k < per_row; k++)
            d[(k / w->n) * w->m + w->idx[i * per_row + k]] = w->val[i * per_row + k];
    }
    return SP_OK;
}

size_t sp_nm_bytes(const sp_nm *w) {
    if (!w) return 0;
    return (size_t)(w->rows * w->groups * w->n) * (sizeof(float) + sizeof(uint8_t));
}
