/*
 * rigl.c - RigL's growth selection (Evci et al. 2020, "Rigging the Lottery"): the k positions
 * outside a sparse weight's pattern where the dense gradient |dL/dW| is largest.
 *
 * The gradient of a linear layer's weight (out x in) is G = dY X^T with feature-major
 * activations: dY is (out x B), X is (in x B), so G_ij = sum_b dY[i,b] X[j,b]. G is as large as
 * the dense weight, which is what sparse training must not allocate. sp_rigl_grow computes G
 * tile_rows rows at a time into one tile buffer (one GEMM per tile) and keeps only a running
 * top-k of the free positions, so its memory is one tile plus O(k) candidates:
 *
 *   tile:       tile_rows * in floats (default: about 1 MiB)
 *   candidates: cap = min(2k, free) entries of (uint32 key, int64 index), 12 bytes each
 *
 * and nothing proportional to out * in. Pattern entries are excluded in place in the tile (their
 * |G| is overwritten with -1, below every real |G| >= 0), so no mask is needed either.
 *
 * Selection is exact: |G| maps to an order-preserving uint32 key (as in granularity.c). The
 * candidate buffer is kept in ascending index order (tiles arrive in row-major order and every
 * compaction is stable). While it holds fewer than k survivors every free entry is appended;
 * once k survivors define a threshold key t (the k-th best key), a later entry can only enter the
 * top k with key > t, since its index is higher than every entry held and ties go to the lower
 * index. When the buffer is full (or at the end), a radix select over the keys (four 8-bit
 * histogram passes) finds the k-th key and how many entries equal to it are kept, and a stable
 * pass keeps those (the lowest indices among ties). Each compaction costs O(cap) and, with
 * cap = 2k, follows k appends (with cap = free < 2k it runs once, at the end), so selection is
 * O(out * in) overall beside the GEMM's O(out * in * B). The buffer ends ascending by index.
 *
 * Threads: only the tile GEMM uses nthreads (sp_sgemm splits by sizes, never by thread count);
 * the selection is serial, so the result is identical for any nthreads.
 *
 * sp_rigl_grow_ref is the readable oracle: the whole G by a plain float loop (b ascending),
 * then all free entries sorted by (|G| descending, index ascending), the first k sorted by index.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/prune.h"
#include "sparrow/tensor.h"

#include "../core/internal.h"
#include "internal.h"

#define RIGL_TILE_BYTES ((int64_t)1 << 20) /* default tile: about 1 MiB of G */


/* Inverse of fkey for keys of floats >= +0 (sign bit set in the key). */
static inline float fkey_inv_nonneg(uint32_t u) {
    u ^= 0x80000000u;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Checks shared by the fast path and the reference (so both fail alike). *nfree = free count. */
static sp_status check_args(const char *who, const sp_csr *w, const float *dy, const float *x,
                            int64_t cols, int64_t k, const int64_t *grow_idx, int64_t *nfree) {
    if (!w) return sp_fail(SP_EINVAL, "%s: w is NULL", who);
    sp_status st = sp_csr_validate(w);
    if (st != SP_OK) return st;
    if (cols < 1)
        return sp_fail(SP_EINVAL, "%s: cols (samples) %lld < 1", who, (long long)cols);
    if (!dy) return sp_fail(SP_EINVAL, "%s: dy is NULL", who);
    if (!x) return sp_fail(SP_EINVAL, "%s: x is NULL", who);
    int64_t n, t;
    if (!sp_mul_i64(w->rows, w->cols, &n) || !sp_mul_i64(w->rows, cols, &t) ||
        !sp_mul_i64(w->cols, cols, &t))
        return sp_fail(SP_EOVERFLOW, "%s: %lld x %lld weight with %lld samples overflows", who,
                       (long long)w->rows, (long long)w->cols, (long long)cols);
    *nfree = n - w->nnz;
    if (k < 0) return sp_fail(SP_EINVAL, "%s: k %lld < 0", who, (long long)k);
    if (k > *nfree)
        return sp_fail(SP_EINVAL, "%s: k %lld exceeds the %lld free positions (%lld x %lld - nnz %lld)",
                       who, (long long)k, (long long)*nfree, (long long)w->rows,
                       (long long)w->cols, (long long)w->nnz);
    if (k > 0 && !grow_idx) return sp_fail(SP_EINVAL, "%s: grow_idx is NULL", who);
    return SP_OK;
}

/* ---- the running top-k ---------------------------------------------------------------------- */

typedef struct topk {
    uint32_t *key;  /* cap keys, sp_fkey(|G|) */
    int64_t *idx;   /* cap indices, ascending */
    int64_t n, cap, k;
    bool have_thr;  /* n >= k survivors were selected once: thr is the k-th best key */
    uint32_t thr;
} topk;

/* Keeps exactly the k best of the n (>= k) entries: key descending, ties to the lower index.
 * Radix select finds the k-th key thr and how many entries equal to thr make the cut; a stable
 * pass keeps them, so the buffer stays ascending by index. */
static void topk_compact(topk *t) {
    const int64_t n = t->n, k = t->k;
    uint32_t prefix = 0, pmask = 0;
    int64_t need = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        int64_t hist[256] = {0};
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = t->key[i];
            hist[(u >> shift) & 255u] += (u & pmask) == prefix;
        }
        const int d = sp_radix_pick(hist, &need);
        prefix |= (uint32_t)d << shift;
        pmask |= 0xffu << shift;
    }
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = t->key[i];
        if (u > prefix || (u == prefix && need > 0)) {
            if (u == prefix) need--;
            t->key[m] = u;
            t->idx[m] = t->idx[i];
            m++;
        }
    }
    t->n = m; /* == k */
    t->thr = prefix;
    t->have_thr = true;
}

/* Offers the free entries of one tile (r rows of `in` scores, -1 = in the pattern) whose first
 * index is base. */
static void topk_offer(topk *t, const float *tile, int64_t count, int64_t base) {
    for (int64_t e = 0; e < count; e++) {
        float v = tile[e];
        if (v < 0.0f) continue; /* in the pattern */
        uint32_t u = sp_fkey(v);
        if (t->have_thr && u <= t->thr) continue; /* a tie loses: its index is higher */
        t->key[t->n] = u;
        t->idx[t->n] = base + e;
        if (++t->n == t->cap) topk_compact(t);
    }
}

/* Rows [r0, r1) of G in tile (row-major, `in` per row): NaN check, |G|, pattern entries -> -1. */
static sp_status tile_scores(const char *who, const sp_csr *w, float *tile, int64_t r0,
                             int64_t r1) {
    const int64_t in = w->cols;
    for (int64_t i = r0; i < r1; i++) {
        float *row = tile + (i - r0) * in;
        for (int64_t j = 0; j < in; j++) {
            if (isnan(row[j]))
                return sp_fail(SP_EINVAL, "%s: G (%lld, %lld) is NaN (NaN or Inf in dy or x)", who,
                               (long long)i, (long long)j);
            row[j] = fabsf(row[j]);
        }
        for (int64_t p = w->row_ptr[i]; p < w->row_ptr[i + 1]; p++) row[sp_csr_col(w, p)] = -1.0f;
    }
    return SP_OK;
}

sp_status sp_rigl_grow(const sp_csr *w, const float *dy, const float *x, int64_t cols, int64_t k,
                       int64_t tile_rows, int nthreads, int64_t *grow_idx, float *score) {
    static const char who[] = "rigl_grow";
    int64_t nfree = 0;
    sp_status st = check_args(who, w, dy, x, cols, k, grow_idx, &nfree);
    if (st != SP_OK || k == 0) return st;
    const int64_t rows = w->rows, in = w->cols; /* both >= 1 since k <= rows * in - nnz */
    if (tile_rows <= 0) tile_rows = SP_MAX((int64_t)1, RIGL_TILE_BYTES / (int64_t)sizeof(float) / in);
    tile_rows = SP_MIN(tile_rows, rows);

    topk t = {.k = k, .cap = k <= nfree / 2 ? 2 * k : nfree};
    size_t tile_bytes, kb, ib;
    int64_t tile_n;
    if (!sp_mul_i64(tile_rows, in, &tile_n) || !sp_bytes(tile_n, sizeof(float), &tile_bytes) ||
        !sp_bytes(t.cap, sizeof(uint32_t), &kb) || !sp_bytes(t.cap, sizeof(int64_t), &ib))
        return sp_fail(SP_EOVERFLOW, "%s: buffers for tile %lld x %lld and %lld candidates overflow",
                       who, (long long)tile_rows, (long long)in, (long long)t.cap);
    float *tile = sp_alloc(tile_bytes);
    t.key = sp_alloc(kb);
    t.idx = sp_alloc(ib);
    if (!tile || !t.key || !t.idx) {
        st = sp_fail(SP_ENOMEM, "%s: out of memory for a %lld x %lld tile and %lld candidates",
                     who, (long long)tile_rows, (long long)in, (long long)t.cap);
        goto done;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
        const int64_t r1 = SP_MIN(rows, r0 + tile_rows);
        /* (r1-r0, B) x (B, in) -> (r1-r0, in): dy rows times x^T */
        st = sp_sgemm(false, true, r1 - r0, in, cols, 1.0f, dy + r0 * cols, cols, x, cols, 0.0f,
                      tile, in, nthreads);
        if (st != SP_OK) goto done;
        if ((st = tile_scores(who, w, tile, r0, r1)) != SP_OK) goto done;
        topk_offer(&t, tile, (r1 - r0) * in, r0 * in);
    }
    if (t.n > k || !t.have_thr) topk_compact(&t); /* n >= k: k <= free and every free was seen */
    for (int64_t i = 0; i < k; i++) {
        grow_idx[i] = t.idx[i];
        if (score) score[i] = fkey_inv_nonneg(t.key[i]);
    }
done:
    sp_free(tile);
    sp_free(t.key);
    sp_free(t.idx);
    return st;
}

/* ---- the reference ---------------------------------------------------------------------------- */

typedef struct cand {
    float s;     /* |G_ij| */
    int64_t idx; /* i * in + j */
} cand;

/* |G| descending, then index ascending: the order in which positions are grown. */
static int by_score(const void *a, const void *b) {
    const cand *p = a, *q = b;
    if (p->s != q->s) return p->s > q->s ? -1 : 1;
    return (p->idx > q->idx) - (p->idx < q->idx);
}

static int by_index(const void *a, const void *b) {
    const cand *p = a, *q = b;
    return (p->idx > q->idx) - (p->idx < q->idx);
}

sp_status sp_rigl_grow_ref(const sp_csr *w, const float *dy, const float *x, int64_t cols,
                           int64_t k, int64_t *grow_idx, float *score) {
    static const char who[] = "rigl_grow_ref";
    int64_t nfree = 0;
    sp_status st = check_args(who, w, dy, x, cols, k, grow_idx, &nfree);
    if (st != SP_OK || k == 0) return st;
    const int64_t rows = w->rows, in = w->cols;
    float *g = sp_calloc((size_t)(rows * in), sizeof(float)); /* (out x in), the whole G */
    cand *c = sp_calloc((size_t)nfree, sizeof(cand));
    if (!g || !c) {
        st = sp_fail(SP_ENOMEM, "%s: out of memory for a %lld x %lld gradient", who,
                     (long long)rows, (long long)in);
        goto done;
    }
    /* G_ij = sum_b dY[i,b] X[j,b], in float, b ascending */
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < in; j++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < cols; b++) acc += dy[i * cols + b] * x[j * cols + b];
            g[i * in + j] = acc;
        }
    for (int64_t e = 0; e < rows * in; e++)
        if (isnan(g[e])) {
            st = sp_fail(SP_EINVAL, "%s: G (%lld, %lld) is NaN (NaN or Inf in dy or x)", who,
                         (long long)(e / in), (long long)(e % in));
            goto done;
        }
    /* the free positions: walk each row beside its sorted pattern */
    int64_t n = 0;
    for (int64_t i = 0; i < rows; i++) {
        int64_t p = w->row_ptr[i], end = w->row_ptr[i + 1];
        for (int64_t j = 0; j < in; j++) {
            if (p < end && sp_csr_col(w, p) == j) {
                p++;
                continue;
            }
            c[n++] = (cand){fabsf(g[i * in + j]), i * in + j};
        }
    }
    qsort(c, (size_t)n, sizeof *c, by_score);
    qsort(c, (size_t)k, sizeof *c, by_index);
    for (int64_t i = 0; i < k; i++) {
        grow_idx[i] = c[i].idx;
        if (score) score[i] = c[i].s;
    }
done:
    sp_free(g);
    sp_free(c);
    return st;
}
