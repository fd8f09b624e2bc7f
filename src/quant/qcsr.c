/*
 * qcsr.c - the quantized CSR weight (sp_qcsr): quantization from CSR or dense, the validating
 * wrap of saved arrays (a parser of untrusted bytes), accessors, dequantization.
 *
 * Layout and math: include/sparrow/quant.h and docs/QUANTIZATION.md. Column indices are u8 gaps
 * with zero-valued filler entries bridging gaps above 255 (Han et al. 2016, "Deep Compression",
 * relative index). The product lives in qcsr_spmm.c and src/kernels/<isa>/qcsr_<isa>.c.
 */
#include <math.h>
#include <string.h>

#include "sparrow/quant.h"

#include "../core/internal.h"
#include "../kernels/kernel_table.h"

#define WHO "qcsr"

/* Fillers a distance d between consecutive stored columns needs (d = first column for a row's
 * first entry): each filler advances at most 255. */
static inline int64_t fillers_for(int64_t d) { return d > 0 ? (d - 1) / 255 : 0; }

void sp_qcsr_free(sp_qcsr *q) {
    if (!q) return;
    for (int i = 0; i < 4; i++) sp_free(q->own[i]);
    sp_free(q->scale_ptr);
    sp_free(q);
}

static sp_status check_bits(int bits, int group) {
    if (bits == 8) {
        if (group != 0)
            return sp_fail(SP_EINVAL, WHO ": group %d with bits 8 (must be 0: one scale per row)",
                           group);
        return SP_OK;
    }
    if (bits == 4) {
        if (group < 1 || group > 4096)
            return sp_fail(SP_EINVAL, WHO ": group %d outside [1, 4096] for bits 4", group);
        return SP_OK;
    }
    return sp_fail(SP_EINVAL, WHO ": bits %d (must be 8 or 4)", bits);
}

/* Fills the derived fields (scale_ptr for bits 4, max_row, dense) once the arrays are set. */
static sp_status finish(sp_qcsr *q) {
    q->dense = q->gap == NULL && q->nnz > 0;
    int32_t mx = 0;
    for (int64_t i = 0; i < q->rows; i++) mx = SP_MAX(mx, q->row_ptr[i + 1] - q->row_ptr[i]);
    q->max_row = mx;
    if (q->bits == 4) {
        q->scale_ptr = sp_alloc((size_t)(q->rows + 1) * sizeof(int64_t));
        if (!q->scale_ptr) return SP_ENOMEM;
        q->scale_ptr[0] = 0;
        for (int64_t i = 0; i < q->rows; i++) {
            int64_t n = q->row_ptr[i + 1] - q->row_ptr[i];
            q->scale_ptr[i + 1] = q->scale_ptr[i] + (n + q->group - 1) / q->group;
        }
    }
    return SP_OK;
}

/* ---- quantization from a row source ------------------------------------------------------ */

typedef struct src {
    const sp_csr *csr;
    const float *dense;
    int64_t ld;
    const sp_mask *mask;
    bool dense_layout;
} src;

/* Entries of row i: columns (strictly increasing) and values; returns the count. */
static int64_t src_row(const src *s, int64_t cols, int64_t i, int64_t *c, float *v) {
    int64_t n = 0;
    if (s->csr) {
        for (int64_t k = s->csr->row_ptr[i]; k < s->csr->row_ptr[i + 1]; k++, n++)
            c[n] = sp_csr_col(s->csr, k), v[n] = s->csr->val[k];
        return n;
    }
    const float *r = s->dense + i * s->ld;
    for (int64_t j = 0; j < cols; j++) {
        bool keep = s->dense_layout ? true : s->mask ? sp_mask_get(s->mask, i, j) : r[j] != 0.0f;
        if (keep) c[n] = j, v[n++] = r[j];
    }
    return n;
}

/* Symmetric scale of a block: max |v| / qmax, 0 for an all-zero block. */
static float block_scale(const float *v, int64_t n, int qmax) {
    float m = 0.0f;
    for (int64_t k = 0; k < n; k++) m = fmaxf(m, fabsf(v[k]));
    return m / (float)qmax;
}
/* round-half-even(v / scale) clamped to [-qmax, qmax]: |v - scale * q| <= scale / 2. */
int sp_quant_value(float v, float scale, int qmax) {
    if (scale == 0.0f) return 0;
    float q = rintf(v / scale);
    if (q > (float)qmax) q = (float)qmax;
    if (q < (float)-qmax) q = (float)-qmax;
    return (int)q;
}

static sp_status build(int64_t rows, int64_t cols, const src *s, int bits, int group,
                       sp_qcsr **out) {
    sp_status st;
    if (!out) return sp_fail(SP_EINVAL, WHO ": out is NULL");
    *out = NULL;
    if (bits == 8) group = 0;
    if ((st = check_bits(bits, group))) return st;
    if (rows >= INT32_MAX || cols >= INT32_MAX)
        return sp_fail(SP_EINVAL, WHO ": shape %lld x %lld outside [0, 2^31 - 1)",
                       (long long)rows, (long long)cols);
    const int qmax = bits == 8 ? 127 : 7;
    int64_t *c = sp_alloc((size_t)(cols + 1) * sizeof(int64_t));
    float *v = sp_alloc((size_t)(cols + 1) * sizeof(float));
    /* one row in stored order, fillers included: at most cols entries plus one filler per 255 */
    float *sv = sp_alloc((size_t)(cols + cols / 255 + 2) * sizeof(float));
    int64_t *rp64 = sp_alloc((size_t)(rows + 1) * sizeof(int64_t));
    sp_qcsr *q = sp_calloc(1, sizeof *q);
    if (!c || !v || !sv || !rp64 || !q) {
        st = SP_ENOMEM;
        goto fail;
    }
    q->rows = rows, q->cols = cols, q->bits = bits, q->group = group;
    /* pass 1: stored entries per row (fillers included), validity of the values */
    rp64[0] = 0;
    int64_t nscale = 0;
    for (int64_t i = 0; i < rows; i++) {
        int64_t n = src_row(s, cols, i, c, v), stored = n, prev = 0;
        for (int64_t k = 0; k < n; k++) {
            if (!isfinite(v[k])) {
                st = sp_fail(SP_EFORMAT, WHO ": weight (%lld, %lld) is not finite", (long long)i,
                             (long long)c[k]);
                goto fail;
            }
            stored += fillers_for(c[k] - prev);
            prev = c[k];
        }
        if (stored > SP_QCSR_MAX_ROW) {
            st = sp_fail(SP_EFORMAT,
                         WHO ": row %lld stores %lld entries, more than %d (int32 sums could "
                             "overflow)",
                         (long long)i, (long long)stored, SP_QCSR_MAX_ROW);
            goto fail;
        }
        rp64[i + 1] = rp64[i] + stored;
        if (rp64[i + 1] > INT32_MAX) {
            st = sp_fail(SP_EOVERFLOW, WHO ": more than %d stored entries", INT32_MAX);
            goto fail;
        }
        nscale += bits == 8 ? 1 : (stored + group - 1) / group;
    }
    const int64_t nnz = rp64[rows];
    const bool dense = s->dense_layout && nnz > 0;
    q->nnz = nnz, q->nscale = nscale;
    int32_t *row_ptr = sp_alloc((size_t)(rows + 1) * sizeof(int32_t));
    uint8_t *gap = dense ? NULL : sp_alloc((size_t)nnz);
    void *val = sp_calloc(1, bits == 8 ? (size_t)nnz : (size_t)(nnz + 1) / 2);
    float *scale = sp_alloc((size_t)nscale * sizeof(float));
    q->own[0] = row_ptr, q->own[1] = gap, q->own[2] = val, q->own[3] = scale;
    if (!row_ptr || (!dense && !gap) || !val || !scale) {
        st = SP_ENOMEM;
        goto fail;
    }
    for (int64_t i = 0; i <= rows; i++) row_ptr[i] = (int32_t)rp64[i];
    /* pass 2: lay out each row with its fillers, quantize */
    int64_t si = 0;
    for (int64_t i = 0; i < rows; i++) {
        int64_t n = src_row(s, cols, i, c, v), m = 0, prev = 0;
        uint8_t *g = gap ? gap + rp64[i] : NULL;
        for (int64_t k = 0; k < n; k++) {
            int64_t d = c[k] - prev;
            while (d > 255) {
                if (g) g[m] = 255;
                sv[m++] = 0.0f;
                d -= 255;
            }
            if (g) g[m] = (uint8_t)d;
            sv[m++] = v[k];
            prev = c[k];
        }
        const int64_t k0 = rp64[i];
        if (bits == 8) {
            float sc = block_scale(sv, m, qmax);
            scale[si++] = sc;
            for (int64_t k = 0; k < m; k++)
                ((int8_t *)val)[k0 + k] = (int8_t)sp_quant_value(sv[k], sc, qmax);
        } else {
            for (int64_t g0 = 0; g0 < m; g0 += group) {
                int64_t gn = SP_MIN(group, m - g0);
                float sc = block_scale(sv + g0, gn, qmax);
                scale[si++] = sc;
                for (int64_t k = g0; k < g0 + gn; k++)
                    sp_q4_put(val, k0 + k, sp_quant_value(sv[k], sc, qmax));
            }
        }
    }
    q->row_ptr = row_ptr, q->gap = gap, q->val = val, q->scale = scale;
    if ((st = finish(q))) goto fail;
    sp_free(c), sp_free(v), sp_free(sv), sp_free(rp64);
    *out = q;
    return SP_OK;
fail:
    sp_free(c), sp_free(v), sp_free(sv), sp_free(rp64);
    sp_qcsr_free(q);
    if (st == SP_ENOMEM)
        return sp_fail(SP_ENOMEM, WHO ": out of memory building %lld x %lld", (long long)rows,
                       (long long)cols);
    return st;
}

sp_status sp_qcsr_from_csr(const sp_csr *w, int bits, int group, sp_qcsr **out) {
    if (out) *out = NULL;
    if (!w) return sp_fail(SP_EINVAL, WHO ": W is NULL");
    sp_status st = sp_csr_validate(w);
    if (st) return st;
    src s = {.csr = w};
    return build(w->rows, w->cols, &s, bits, group, out);
}

sp_status sp_qcsr_from_dense(int64_t rows, int64_t cols, const float *w, int64_t ld,
                             const sp_mask *mask, bool dense_layout, int bits, int group,
                             sp_qcsr **out) {
    if (out) *out = NULL;
    if (rows < 0 || cols < 0)
        return sp_fail(SP_EINVAL, WHO ": shape %lld x %lld is negative", (long long)rows,
                       (long long)cols);
    if (ld < cols || ld < 1)
        return sp_fail(SP_ESHAPE, WHO ": ld %lld < cols %lld", (long long)ld, (long long)cols);
    int64_t span;
    if (!sp_mul_i64(rows, ld, &span))
        return sp_fail(SP_EOVERFLOW, WHO ": %lld rows x ld %lld overflows", (long long)rows,
                       (long long)ld);
    if (!w && rows > 0 && cols > 0) return sp_fail(SP_EINVAL, WHO ": W is NULL");
    if (dense_layout && mask) return sp_fail(SP_EINVAL, WHO ": a mask with the dense layout");
    if (mask && (mask->rows != rows || mask->cols != cols))
        return sp_fail(SP_ESHAPE, WHO ": mask %lld x %lld for a %lld x %lld weight",
                       (long long)mask->rows, (long long)mask->cols, (long long)rows,
                       (long long)cols);
    src s = {.dense = w, .ld = ld, .mask = mask, .dense_layout = dense_layout};
    return build(rows, cols, &s, bits, group, out);
}

/* ---- wrap: validate every invariant of untrusted arrays ---------------------------------- */

sp_status sp_qcsr_wrap(int64_t rows, int64_t cols, int bits, int group, const int32_t *row_ptr,
                       int64_t n_row_ptr, const uint8_t *gap, int64_t n_gap, const void *val,
                       int64_t n_val, const float *scale, int64_t n_scale, bool borrow,
                       sp_qcsr **out) {
    sp_status st;
    if (!out) return sp_fail(SP_EINVAL, WHO ": out is NULL");
    *out = NULL;
    if (rows < 0 || cols < 0 || rows >= INT32_MAX || cols >= INT32_MAX)
        return sp_fail(SP_EINVAL, WHO ": shape %lld x %lld outside [0, 2^31 - 1)",
                       (long long)rows, (long long)cols);
    if ((st = check_bits(bits, group))) return st;
    if (n_row_ptr != rows + 1)
        return sp_fail(SP_EFORMAT, WHO ": row_ptr has %lld entries, expected rows + 1 = %lld",
                       (long long)n_row_ptr, (long long)(rows + 1));
    if (!row_ptr) return sp_fail(SP_EINVAL, WHO ": row_ptr is NULL");
    if (row_ptr[0] != 0)
        return sp_fail(SP_EFORMAT, WHO ": row_ptr[0] = %d, must be 0", (int)row_ptr[0]);
    int64_t nscale = 0;
    for (int64_t i = 0; i < rows; i++) {
        int64_t n = (int64_t)row_ptr[i + 1] - row_ptr[i];
        if (n < 0)
            return sp_fail(SP_EFORMAT, WHO ": row_ptr[%lld] = %d < row_ptr[%lld] = %d",
                           (long long)(i + 1), (int)row_ptr[i + 1], (long long)i,
                           (int)row_ptr[i]);
        if (n > SP_QCSR_MAX_ROW)
            return sp_fail(SP_EFORMAT,
                           WHO ": row %lld stores %lld entries, more than %d (int32 sums could "
                               "overflow)",
                           (long long)i, (long long)n, SP_QCSR_MAX_ROW);
        nscale += bits == 8 ? 1 : (n + group - 1) / group;
    }
    const int64_t nnz = row_ptr[rows];
    if (n_gap == 0 && nnz > 0) {
        for (int64_t i = 0; i < rows; i++) {
            int64_t n = (int64_t)row_ptr[i + 1] - row_ptr[i];
            if (n != cols)
                return sp_fail(SP_EFORMAT,
                               WHO ": dense layout (no gap array) but row %lld stores %lld "
                                   "entries, not cols = %lld",
                               (long long)i, (long long)n, (long long)cols);
        }
        gap = NULL;
    } else if (n_gap != nnz) {
        return sp_fail(SP_EFORMAT,
                       WHO ": gap has %lld entries, expected nnz = %lld (or 0 for the dense "
                           "layout)",
                       (long long)n_gap, (long long)nnz);
    } else if (nnz > 0 && !gap) {
        return sp_fail(SP_EINVAL, WHO ": gap is NULL with %lld entries", (long long)n_gap);
    } else {
        if (nnz == 0) gap = NULL;
        for (int64_t i = 0; i < rows; i++) {
            int64_t col = 0;
            for (int64_t k = row_ptr[i]; k < row_ptr[i + 1]; k++) {
                if (k > row_ptr[i] && gap[k] == 0)
                    return sp_fail(SP_EFORMAT,
                                   WHO ": gap[%lld] = 0 in row %lld (columns must strictly "
                                       "increase)",
                                   (long long)k, (long long)i);
                col += gap[k];
                if (col >= cols)
                    return sp_fail(SP_EFORMAT,
                                   WHO ": column %lld >= cols %lld at entry %lld of row %lld",
                                   (long long)col, (long long)cols, (long long)k, (long long)i);
            }
        }
    }
    const int64_t want_val = bits == 8 ? nnz : (nnz + 1) / 2;
    if (n_val != want_val)
        return sp_fail(SP_EFORMAT,
                       WHO ": val has %lld entries, expected %lld for %lld entries of %d bits",
                       (long long)n_val, (long long)want_val, (long long)nnz, bits);
    if (want_val > 0 && !val) return sp_fail(SP_EINVAL, WHO ": val is NULL");
    if (bits == 8) {
        const int8_t *v = val;
        for (int64_t k = 0; k < nnz; k++)
            if (v[k] < -127)
                return sp_fail(SP_EFORMAT, WHO ": val[%lld] = %d outside [-127, 127]",
                               (long long)k, (int)v[k]);
    } else {
        for (int64_t k = 0; k < nnz; k++)
            if (sp_q4_get(val, k) < -7)
                return sp_fail(SP_EFORMAT, WHO ": 4-bit value of entry %lld is -8, outside [-7, 7]",
                               (long long)k);
        if ((nnz & 1) && (((const uint8_t *)val)[nnz / 2] >> 4) != 0)
            return sp_fail(SP_EFORMAT,
                           WHO ": pad nibble after the last of %lld 4-bit entries is %d, must be 0",
                           (long long)nnz, ((const uint8_t *)val)[nnz / 2] >> 4);
    }
    if (n_scale != nscale)
        return sp_fail(SP_EFORMAT, WHO ": scale has %lld entries, expected %lld",
                       (long long)n_scale, (long long)nscale);
    if (nscale > 0 && !scale) return sp_fail(SP_EINVAL, WHO ": scale is NULL");
    for (int64_t k = 0; k < nscale; k++)
        if (!isfinite(scale[k]) || !(scale[k] >= 0.0f))
            return sp_fail(SP_EFORMAT, WHO ": scale[%lld] = %g is not finite and >= 0",
                           (long long)k, (double)scale[k]);
    /* valid: keep */
    sp_qcsr *q = sp_calloc(1, sizeof *q);
    if (!q) return sp_fail(SP_ENOMEM, WHO ": out of memory");
    q->rows = rows, q->cols = cols, q->bits = bits, q->group = group, q->nnz = nnz;
    q->nscale = nscale, q->borrowed = borrow;
    const size_t sz[4] = {(size_t)(rows + 1) * sizeof(int32_t), gap ? (size_t)nnz : 0,
                          (size_t)want_val, (size_t)nscale * sizeof(float)};
    const void *from[4] = {row_ptr, gap, want_val ? val : NULL, nscale ? scale : NULL};
    const void *dst[4];
    for (int a = 0; a < 4; a++) {
        if (borrow || !from[a]) {
            dst[a] = from[a];
            continue;
        }
        void *p = sp_alloc(sz[a]);
        if (!p) {
            sp_qcsr_free(q);
            return sp_fail(SP_ENOMEM, WHO ": out of memory");
        }
        memcpy(p, from[a], sz[a]);
        q->own[a] = p, dst[a] = p;
    }
    q->row_ptr = dst[0], q->gap = dst[1], q->val = dst[2], q->scale = dst[3];
    if (finish(q)) {
        sp_qcsr_free(q);
        return sp_fail(SP_ENOMEM, WHO ": out of memory");
    }
    *out = q;
    return SP_OK;
}

/* ---- accessors --------------------------------------------------------------------------- */

int sp_qcsr_narrays(const sp_qcsr *q) {
    SP_UNUSED(q);
    return 4;
}

sp_status sp_qcsr_array(const sp_qcsr *q, int k, const char **name, sp_dtype *dtype,
                        int64_t *count, const void **data) {
    if (!q) return sp_fail(SP_EINVAL, WHO ": q is NULL");
    static const char *names[4] = {"row_ptr", "gap", "val", "scale"};
    if (k < 0 || k > 3) return sp_fail(SP_EINVAL, WHO ": array %d outside [0, 3]", k);
    const sp_dtype dt[4] = {SP_I32, SP_U8, q->bits == 8 ? SP_I8 : SP_U8, SP_F32};
    const int64_t n[4] = {q->rows + 1, q->gap ? q->nnz : 0,
                          q->bits == 8 ? q->nnz : (q->nnz + 1) / 2, q->nscale};
    const void *d[4] = {q->row_ptr, q->gap, q->val, q->scale};
    if (name) *name = names[k];
    if (dtype) *dtype = dt[k];
    if (count) *count = n[k];
    if (data) *data = n[k] ? d[k] : NULL;
    return SP_OK;
}

size_t sp_qcsr_bytes(const sp_qcsr *q) {
    if (!q) return 0;
    size_t b = (size_t)(q->rows + 1) * 4 + (q->gap ? (size_t)q->nnz : 0) +
               (q->bits == 8 ? (size_t)q->nnz : (size_t)(q->nnz + 1) / 2) +
               (size_t)q->nscale * 4;
    return b;
}

int64_t sp_qcsr_nnz(const sp_qcsr *q) { return q ? q->nnz : 0; }

sp_status sp_qcsr_to_dense(const sp_qcsr *q, float *dense, int64_t ld) {
    if (!q) return sp_fail(SP_EINVAL, WHO ": q is NULL");
    if (ld < q->cols || ld < 1)
        return sp_fail(SP_ESHAPE, WHO ": ld %lld < cols %lld", (long long)ld, (long long)q->cols);
    if (!dense && q->rows > 0 && q->cols > 0) return sp_fail(SP_EINVAL, WHO ": dense is NULL");
    for (int64_t i = 0; i < q->rows; i++) {
        float *r = dense + i * ld;
        memset(r, 0, (size_t)q->cols * sizeof(float));
        int64_t col = 0;
        for (int64_t k = q->row_ptr[i]; k < q->row_ptr[i + 1]; k++) {
            col = q->gap ? col + q->gap[k] : k - q->row_ptr[i];
            r[col] = sp_qcsr_scale_of(q, i, k) * (float)sp_qcsr_q(q, k);
        }
    }
    return SP_OK;
}
