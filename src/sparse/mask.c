/*
 * mask.c - bit masks: which entries of a weight matrix are kept (shared with pruning).
 */
#include <string.h>

#include "sparrow/sparse.h"

#include "../core/internal.h"

sp_status sp_mask_new(int64_t rows, int64_t cols, sp_mask **out) {
    if (!out) return sp_fail(SP_EINVAL, "mask_new: out is NULL");
    *out = NULL;
    if (rows < 0 || cols < 0)
        return sp_fail(SP_EINVAL, "mask_new: negative shape %lld x %lld", (long long)rows,
                       (long long)cols);
    int64_t wpr = cols / 64 + (cols % 64 != 0), words;
    size_t bytes;
    if (!sp_mul_i64(rows, wpr, &words) || !sp_bytes(words, sizeof(uint64_t), &bytes))
        return sp_fail(SP_EOVERFLOW, "mask_new: %lld x %lld overflows", (long long)rows,
                       (long long)cols);
    sp_mask *m = sp_calloc(1, sizeof *m);
    if (!m) return SP_ENOMEM;
    m->bits = sp_calloc(1, bytes);
    if (!m->bits) {
        sp_free(m);
        return SP_ENOMEM;
    }
    m->rows = rows;
    m->cols = cols;
    m->words_per_row = wpr;
    *out = m;
    return SP_OK;
}

void sp_mask_free(sp_mask *m) {
    if (!m) return;
    sp_free(m->bits);
    sp_free(m);
}

sp_status sp_mask_from_dense(int64_t rows, int64_t cols, const float *dense, int64_t ld,
                             sp_mask **out) {
    if (out) *out = NULL;
    if (!dense && rows > 0 && cols > 0) return sp_fail(SP_EINVAL, "mask_from_dense: dense is NULL");
    if (ld < cols) return sp_fail(SP_ESHAPE, "mask_from_dense: ld %lld < cols %lld", (long long)ld, (long long)cols);
    sp_status st = sp_mask_new(rows, cols, out);
    if (st != SP_OK) return st;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            if (dense[i * ld + j] != 0.0f) sp_mask_set(*out, i, j, true);
    return SP_OK;
}

int64_t sp_mask_count(const sp_mask *m) {
    if (!m) return 0;
    int64_t n = 0;
    for (int64_t w = 0; w < m->rows * m->words_per_row; w++) n += __builtin_popcountll(m->bits[w]);
    return n;
}

sp_status sp_mask_apply(const sp_mask *m, float *dense, int64_t ld) {
    if (!m) return sp_fail(SP_EINVAL, "mask_apply: mask is NULL");
    if (!dense && m->rows > 0 && m->cols > 0) return sp_fail(SP_EINVAL, "mask_apply: dense is NULL");
    if (ld < m->cols)
        return sp_fail(SP_ESHAPE, "mask_apply: ld %lld < cols %lld", (long long)ld, (long long)m->cols);
    /* a word at a time: all set, none set, or a branch-free select per bit */
    for (int64_t i = 0; i < m->rows; i++) {
        const uint64_t *row = m->bits + i * m->words_per_row;
        for (int64_t w = 0; w < m->words_per_row; w++) {
            const uint64_t bits = row[w];
            const int64_t j0 = w * 64, n = SP_MIN(64, m->cols - j0);
            float *d = dense + i * ld + j0;
            if (bits == UINT64_MAX) continue;
            if (bits == 0) {
                memset(d, 0, sizeof(float) * (size_t)n);
                continue;
            }
            for (int64_t b = 0; b < n; b++) {
                uint32_t u;
                memcpy(&u, d + b, sizeof u);
                u &= (uint32_t)0 - (uint32_t)((bits >> b) & 1u);
                memcpy(d + b, &u, sizeof u);
            }
        }
    }
    return SP_OK;
}
