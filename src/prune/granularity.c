/*
 * granularity.c - granularities: scores in, a keep-mask out (unstructured layer-wise, global over
 * layers, N:M, r x c blocks, whole rows).
 *
 * Selection is exact and does not depend on the platform: every score maps to a 32-bit key that
 * orders like the float (-0 and +0 equal), and the k-th highest key is found by radix select
 * (four histogram passes of 8 bits over the scores: O(n), no allocation). Entries above that
 * threshold are kept, and of the entries equal to it the ones with the lowest indices, as many as
 * k still needs. So the kept count is exactly k and ties go to the lower index.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sparrow/prune.h"

#include "../core/internal.h"
#include "internal.h"


typedef struct seg {
    const float *p;
    int64_t n;
} seg;

/* The selection of the k highest entries over the segments taken in order: an entry with key u
 * is kept if u > thr, or if u == thr and fewer than `ties` equal entries were kept before it. */
typedef struct sel {
    uint32_t thr;
    int64_t ties;
} sel;

static sel select_top(const seg *s, int64_t ns, int64_t k) {
    sel r = {UINT32_MAX, 0}; /* k == 0: NaN is refused, so no key exceeds or meets the quota */
    if (k <= 0) return r;
    uint32_t prefix = 0, pmask = 0;
    int64_t need = k; /* how many of the entries matching the prefix are still to keep */
    for (int shift = 24; shift >= 0; shift -= 8) {
        int64_t hist[256] = {0};
        for (int64_t l = 0; l < ns; l++)
            for (int64_t i = 0; i < s[l].n; i++) {
                uint32_t u = sp_fkey(s[l].p[i]);
                hist[(u >> shift) & 255u] += (u & pmask) == prefix; /* branch-free */
            }
        const int d = sp_radix_pick(hist, &need);
        prefix |= (uint32_t)d << shift;
        pmask |= 0xffu << shift;
    }
    r.thr = prefix;
    r.ties = need;
    return r;
}

static inline bool sel_keep(sel *r, float f) {
    uint32_t u = sp_fkey(f);
    if (u > r->thr) return true;
    if (u == r->thr && r->ties > 0) {
        r->ties--;
        return true;
    }
    return false;
}

static sp_status check_sparsity(const char *who, double s) {
    if (!(s >= 0.0 && s < 1.0))
        return sp_fail(SP_EINVAL, "%s: sparsity %g is outside [0, 1)", who, s);
    return SP_OK;
}

/* round((1 - s) n), in [0, n] */
static int64_t keep_count(double s, int64_t n) {
    double k = floor((1.0 - s) * (double)n + 0.5);
    if (k < 0) return 0;
    if (k > (double)n) return n;
    return (int64_t)k;
}

/* Shape, overflow and NULL checks; *n = rows * cols. */
static sp_status check_shape(const char *who, int64_t rows, int64_t cols, const float *scores,
                             int64_t *n) {
    if (rows < 0 || cols < 0)
        return sp_fail(SP_EINVAL, "%s: negative shape %lld x %lld", who, (long long)rows,
                       (long long)cols);
    if (!sp_mul_i64(rows, cols, n))
        return sp_fail(SP_EOVERFLOW, "%s: %lld x %lld overflows", who, (long long)rows,
                       (long long)cols);
    if (*n > 0 && !scores) return sp_fail(SP_EINVAL, "%s: scores is NULL", who);
    return SP_OK;
}

static sp_status check_nan(const char *who, const float *p, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            if (isnan(p[i * cols + j]))
                return sp_fail(SP_EINVAL, "%s: score (%lld, %lld) is NaN", who, (long long)i,
                               (long long)j);
    return SP_OK;
}

/* Sets the bits of m (rows x cols) for the entries of p (row-major) that the selection keeps. */
static void fill_mask(sp_mask *m, const float *p, sel *r) {
    for (int64_t i = 0; i < m->rows; i++) {
        uint64_t *words = m->bits + i * m->words_per_row;
        const float *row = p + i * m->cols;
        for (int64_t j0 = 0; j0 < m->cols; j0 += 64) {
            int64_t j1 = SP_MIN(j0 + 64, m->cols);
            uint64_t w = 0;
            for (int64_t j = j0; j < j1; j++)
                if (sel_keep(r, row[j])) w |= (uint64_t)1 << (j - j0);
            words[j0 >> 6] = w;
        }
    }
}

sp_status sp_prune_mask_unstructured(int64_t rows, int64_t cols, const float *scores,
                                     double sparsity, sp_mask **out) {
    static const char who[] = "prune_mask_unstructured";
    if (!out) return sp_fail(SP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    int64_t n;
    sp_status st = check_shape(who, rows, cols, scores, &n);
    if (st == SP_OK) st = check_sparsity(who, sparsity);
    if (st == SP_OK && n > 0) st = check_nan(who, scores, rows, cols);
    if (st != SP_OK) return st;
    sp_mask *m = NULL;
    if ((st = sp_mask_new(rows, cols, &m)) != SP_OK) return st;
    if (n > 0) {
        seg s = {scores, n};
        sel r = select_top(&s, 1, keep_count(sparsity, n));
        fill_mask(m, scores, &r);
    }
    *out = m;
    return SP_OK;
}

sp_status sp_prune_mask_global(int64_t nlayers, const sp_prune_layer *layers, double sparsity,
                               sp_mask **masks) {
    static const char who[] = "prune_mask_global";
    if (!masks) return sp_fail(SP_EINVAL, "%s: masks is NULL", who);
    if (nlayers < 0) return sp_fail(SP_EINVAL, "%s: nlayers %lld < 0", who, (long long)nlayers);
    for (int64_t l = 0; l < nlayers; l++) masks[l] = NULL;
    if (nlayers > 0 && !layers) return sp_fail(SP_EINVAL, "%s: layers is NULL", who);
    sp_status st = check_sparsity(who, sparsity);
    if (st != SP_OK) return st;
    int64_t total = 0;
    for (int64_t l = 0; l < nlayers; l++) {
        int64_t n = 0;
        char lwho[64];
        snprintf(lwho, sizeof lwho, "%s: layer %lld", who, (long long)l);
        if ((st = check_shape(lwho, layers[l].rows, layers[l].cols, layers[l].scores, &n)) != SP_OK)
            return st;
        if (n > 0 && (st = check_nan(lwho, layers[l].scores, layers[l].rows, layers[l].cols)) != SP_OK)
            return st;
        if (!sp_add_i64(total, n, &total))
            return sp_fail(SP_EOVERFLOW, "%s: total weight count overflows at layer %lld", who,
                           (long long)l);
    }
    /* one segment per layer, on the stack for the usual few layers: one selection over all */
    enum { SEG_STACK = 64 };
    seg stack_segs[SEG_STACK];
    seg *segs = stack_segs;
    if (nlayers > SEG_STACK) {
        size_t bytes;
        if (!sp_bytes(nlayers, sizeof(seg), &bytes))
            return sp_fail(SP_EOVERFLOW, "%s: %lld layers overflow", who, (long long)nlayers);
        if (!(segs = sp_alloc(bytes))) return SP_ENOMEM;
    }
    for (int64_t l = 0; l < nlayers; l++) {
        segs[l].p = layers[l].scores;
        segs[l].n = layers[l].rows * layers[l].cols;
    }
    for (int64_t l = 0; l < nlayers && st == SP_OK; l++)
        st = sp_mask_new(layers[l].rows, layers[l].cols, &masks[l]);
    if (st == SP_OK) {
        sel r = select_top(segs, nlayers, keep_count(sparsity, total));
        for (int64_t l = 0; l < nlayers; l++)
            if (segs[l].n > 0) fill_mask(masks[l], layers[l].scores, &r);
    } else {
        for (int64_t l = 0; l < nlayers; l++) {
            sp_mask_free(masks[l]);
            masks[l] = NULL;
        }
    }
    if (segs != stack_segs) sp_free(segs);
    return st;
}

sp_status sp_prune_mask_nm(int64_t rows, int64_t cols, const float *scores, int32_t n, int32_t m,
                           sp_mask **out) {
    static const char who[] = "prune_mask_nm";
    if (!out) return sp_fail(SP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (m < 2 || m > 32 || n < 1 || n >= m)
        return sp_fail(SP_EINVAL, "%s: pattern %d:%d needs 1 <= n < m <= 32", who, (int)n, (int)m);
    int64_t total;
    sp_status st = check_shape(who, rows, cols, scores, &total);
    if (st != SP_OK) return st;
    if (cols % m != 0)
        return sp_fail(SP_ESHAPE, "%s: cols %lld is not a multiple of m = %d", who,
                       (long long)cols, (int)m);
    if (total > 0 && (st = check_nan(who, scores, rows, cols)) != SP_OK) return st;
    sp_mask *mk = NULL;
    if ((st = sp_mask_new(rows, cols, &mk)) != SP_OK) return st;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t g = 0; g < cols; g += m) {
            const float *p = scores + i * cols + g;
            uint32_t key[32];
            for (int32_t t = 0; t < m; t++) key[t] = sp_fkey(p[t]);
            /* keep offset t if fewer than n offsets beat it (higher key, or equal key at a
             * lower offset): O(m^2) per group, branch-free */
            for (int32_t t = 0; t < m; t++) {
                int32_t rank = 0;
                for (int32_t q = 0; q < m; q++)
                    rank += (key[q] > key[t]) | ((key[q] == key[t]) & (q < t));
                if (rank < n) sp_mask_set(mk, i, g + t, true);
            }
        }
    *out = mk;
    return SP_OK;
}

sp_status sp_prune_mask_blocks(int64_t rows, int64_t cols, const float *scores, int32_t br,
                               int32_t bc, double sparsity, sp_mask **out) {
    static const char who[] = "prune_mask_blocks";
    if (!out) return sp_fail(SP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    if (br < 1 || bc < 1)
        return sp_fail(SP_EINVAL, "%s: block %d x %d: both sizes must be >= 1", who, (int)br,
                       (int)bc);
    int64_t n;
    sp_status st = check_shape(who, rows, cols, scores, &n);
    if (st == SP_OK) st = check_sparsity(who, sparsity);
    if (st != SP_OK) return st;
    int64_t nbr = rows / br + (rows % br != 0), nbc = cols / bc + (cols % bc != 0), nb = nbr * nbc;
    size_t bytes;
    if (!sp_bytes(nb, sizeof(float), &bytes))
        return sp_fail(SP_EOVERFLOW, "%s: %lld blocks overflow", who, (long long)nb);
    float *bs = sp_alloc(bytes); // (nbr, nbc) block scores
    if (!bs) return SP_ENOMEM;
    sp_mask *m = NULL;
    if ((st = sp_mask_new(rows, cols, &m)) != SP_OK) goto fail;
    for (int64_t bi = 0; bi < nbr; bi++)
        for (int64_t bj = 0; bj < nbc; bj++) {
            int64_t i1 = SP_MIN(rows, (bi + 1) * br), j1 = SP_MIN(cols, (bj + 1) * bc);
            double acc = 0.0; /* summed in a fixed order: row by row, left to right */
            for (int64_t i = bi * br; i < i1; i++)
                for (int64_t j = bj * bc; j < j1; j++) acc += scores[i * cols + j];
            bs[bi * nbc + bj] = (float)acc;
            if (isnan(bs[bi * nbc + bj])) {
                st = sp_fail(SP_EINVAL, "%s: block (%lld, %lld) score is NaN", who, (long long)bi,
                             (long long)bj);
                goto fail;
            }
        }
    seg s = {bs, nb};
    sel r = select_top(&s, 1, keep_count(sparsity, nb));
    for (int64_t b = 0; b < nb; b++) {
        if (!sel_keep(&r, bs[b])) continue;
        int64_t bi = b / nbc, bj = b % nbc;
        int64_t i1 = SP_MIN(rows, (bi + 1) * br), j1 = SP_MIN(cols, (bj + 1) * bc);
        for (int64_t i = bi * br; i < i1; i++)
            for (int64_t j = bj * bc; j < j1; j++) sp_mask_set(m, i, j, true);
    }
    sp_free(bs);
    *out = m;
    return SP_OK;
fail:
    sp_free(bs);
    sp_mask_free(m);
    return st;
}

sp_status sp_prune_mask_rows(int64_t rows, int64_t cols, const float *row_scores,
                             double sparsity, sp_mask **out, int64_t **kept, int64_t *nkept) {
    static const char who[] = "prune_mask_rows";
    if (kept) *kept = NULL;
    if (nkept) *nkept = 0;
    if (!out) return sp_fail(SP_EINVAL, "%s: out is NULL", who);
    *out = NULL;
    int64_t n;
    sp_status st = check_shape(who, rows, cols, row_scores, &n);
    if (st != SP_OK) return st;
    if (rows > 0 && !row_scores) return sp_fail(SP_EINVAL, "%s: row_scores is NULL", who);
    if ((st = check_sparsity(who, sparsity)) != SP_OK) return st;
    for (int64_t i = 0; i < rows; i++)
        if (isnan(row_scores[i]))
            return sp_fail(SP_EINVAL, "%s: score of row %lld is NaN", who, (long long)i);
    int64_t k = keep_count(sparsity, rows);
    sp_mask *m = NULL;
    int64_t *idx = NULL;
    if ((st = sp_mask_new(rows, cols, &m)) != SP_OK) return st;
    if (kept && !(idx = sp_alloc(sizeof(int64_t) * (size_t)k))) {
        sp_mask_free(m);
        return SP_ENOMEM;
    }
    seg s = {row_scores, rows};
    sel r = select_top(&s, 1, k);
    int64_t c = 0;
    for (int64_t i = 0; i < rows; i++) {
        if (!sel_keep(&r, row_scores[i])) continue;
        for (int64_t j = 0; j < cols; j++) sp_mask_set(m, i, j, true);
        if (idx) idx[c] = i;
        c++;
    }
    *out = m;
    if (kept) *kept = idx;
    if (nkept) *nkept = c;
    return SP_OK;
}
