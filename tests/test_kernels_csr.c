/*
 * test_kernels_csr.c - every CSR kernel variant in the dispatch table against the reference,
 * over edge shapes: empty matrices, empty rows and columns (density 0), fully dense, batch sizes
 * around every vector tile (1..65), padded leading dimensions, both index widths, with and
 * without bias and ReLU. Then the public entry points: argument checks, and bitwise-identical
 * results on 1 and 2 threads.
 */
#include <math.h>
#include <stdlib.h>

#include "core/internal.h"
#include "kernels/ops_common.h"
#include "sparse/csr_panels.h"
#include "test.h"

static const int64_t shapes[][2] = {{0, 0}, {1, 1}, {1, 40}, {3, 5}, {17, 33}, {64, 64}, {70, 129}, {130, 300}};
static const int64_t batches[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 100};
static const double densities[] = {0.0, 0.07, 0.5, 1.0};


static sp_csr *abs_csr(const sp_csr *w) {
    sp_csr *a = NULL;
    if (sp_csr_new(w->rows, w->cols, w->nnz, w->col_idx ? SP_CSR_IDX32 : 0, &a) != SP_OK) return NULL;
    memcpy(a->row_ptr, w->row_ptr, sizeof(int64_t) * (size_t)(w->rows + 1));
    for (int64_t k = 0; k < w->nnz; k++) {
        if (w->col_idx) a->col_idx[k] = w->col_idx[k];
        else a->col_idx16[k] = w->col_idx16[k];
        a->val[k] = fabsf(w->val[k]);
    }
    return a;
}


/* W^T's structure (cols x rows, same index width; values copied) and perm: entry q of W^T is
 * entry perm[q] of W. */
static sp_csr *transpose_perm(const sp_csr *w, int64_t **perm) {
    sp_csr *t = NULL;
    *perm = malloc(sizeof(int64_t) * (size_t)(w->nnz + 1));
    int64_t *next = calloc((size_t)w->cols + 1, sizeof(int64_t));
    if (!*perm || !next ||
        sp_csr_new(w->cols, w->rows, w->nnz, w->col_idx ? SP_CSR_IDX32 : 0, &t) != SP_OK) {
        free(next);
        return NULL;
    }
    for (int64_t k = 0; k < w->nnz; k++) next[sp_csr_col(w, k) + 1]++;
    for (int64_t j = 0; j < w->cols; j++) next[j + 1] += next[j];
    memcpy(t->row_ptr, next, sizeof(int64_t) * (size_t)(w->cols + 1));
    for (int64_t i = 0; i < w->rows; i++)
        for (int64_t k = w->row_ptr[i]; k < w->row_ptr[i + 1]; k++) {
            const int64_t q = next[sp_csr_col(w, k)]++;
            if (t->col_idx) t->col_idx[q] = (int32_t)i;
            else t->col_idx16[q] = (uint16_t)i;
            t->val[q] = w->val[k];
            (*perm)[q] = k;
        }
    free(next);
    return t;
}

/* The fused backward over W^T: its reference against the two separate references (dX = W^T dY
 * from zero, sddmm), then every variant against its reference. */
static void fused_case(const sp_csr *w, const sp_csr *wa, int64_t batch, int64_t ld,
                       const float *dy, const float *dya, const float *x, const float *xa,
                       const float *dx0, const float *dv0, bool accumulate, const char *label) {
    int64_t *perm = NULL, *perma = NULL;
    sp_csr *wt = transpose_perm(w, &perm), *wta = transpose_perm(wa, &perma);
    const int64_t rows = w->rows, cols = w->cols;
    const size_t xn = (size_t)(cols * ld), vn = (size_t)w->nnz + 1;
    float *dx_want = malloc(sizeof(float) * xn), *dx_mag = malloc(sizeof(float) * xn);
    float *dx_got = malloc(sizeof(float) * xn), *dx_sep = malloc(sizeof(float) * xn);
    float *v_want = malloc(sizeof(float) * vn), *v_mag = malloc(sizeof(float) * vn);
    float *v_got = malloc(sizeof(float) * vn), *v_sep = malloc(sizeof(float) * vn);
    const sp_kernel_family *ff = sp_kernel_family_get("csr_spmm_t_sddmm");
    if (!wt || !wta || !ff || !dx_want || !dx_mag || !dx_got || !dx_sep || !v_want || !v_mag ||
        !v_got || !v_sep) {
        sp_test_fail(__FILE__, __LINE__, "fused setup failed for %s", label);
        goto done;
    }
    const sp_csr_spmm_t_sddmm_fn ref = (sp_csr_spmm_t_sddmm_fn)ff->kernels[0].fn;
    CHECK(ff->kernels[0].is_ref);
    /* the reference: dX from dx0's padding, dval from dv0 */
    memcpy(dx_want, dx0, sizeof(float) * xn);
    memcpy(dx_mag, dx0, sizeof(float) * xn);
    memcpy(v_want, dv0, sizeof(float) * (size_t)w->nnz);
    for (int64_t k = 0; k < w->nnz; k++) v_mag[k] = accumulate ? fabsf(dv0[k]) : 0.0f;
    ref(wt, perm, w->val, 0, cols, dy, ld, x, ld, batch, dx_want, ld, v_want, accumulate);
    ref(wta, perma, wa->val, 0, cols, dya, ld, xa, ld, batch, dx_mag, ld, v_mag, true);
    /* = the separate products */
    const sp_kernel_family *ft = sp_kernel_family_get("csr_spmm_t");
    const sp_kernel_family *fd = sp_kernel_family_get("csr_sddmm");
    memcpy(dx_sep, dx0, sizeof(float) * xn);
    for (int64_t j = 0; j < cols; j++)
        for (int64_t b = 0; b < batch; b++) dx_sep[j * ld + b] = 0.0f;
    ((sp_csr_spmm_t_fn)ft->kernels[0].fn)(w, 0, batch, dy, ld, dx_sep, ld);
    sp_test_compare_block("fused = spmm_t", label, dx_want, dx_sep, dx_mag, cols, batch, ld, dx0);
    memcpy(v_sep, dv0, sizeof(float) * (size_t)w->nnz);
    ((sp_csr_sddmm_fn)fd->kernels[0].fn)(w, 0, rows, dy, ld, x, ld, batch, v_sep, accumulate);
    char why[200];
    if (!sp_close(v_want, v_sep, v_mag, w->nnz, sp_tol_for(SP_F32), why, sizeof why))
        sp_test_fail(__FILE__, __LINE__, "fused = sddmm %s: %s", label, why);
    for (int i = 1; i < ff->count; i++) {
        const sp_kernel *k = &ff->kernels[i];
        if (!sp_kernel_usable(k)) continue;
        memcpy(dx_got, dx0, sizeof(float) * xn);
        memcpy(v_got, dv0, sizeof(float) * (size_t)w->nnz);
        /* in two calls split mid-way, as tasks are */
        const sp_csr_spmm_t_sddmm_fn f = (sp_csr_spmm_t_sddmm_fn)k->fn;
        f(wt, perm, w->val, 0, cols / 2, dy, ld, x, ld, batch, dx_got, ld, v_got, accumulate);
        f(wt, perm, w->val, cols / 2, cols, dy, ld, x, ld, batch, dx_got, ld, v_got, accumulate);
        char what[200];
        snprintf(what, sizeof what, "fused dX %s", label);
        sp_test_compare_block(what, k->name, dx_got, dx_want, dx_mag, cols, batch, ld, dx0);
        if (!sp_close(v_got, v_want, v_mag, w->nnz, sp_tol_for(SP_F32), why, sizeof why))
            sp_test_fail(__FILE__, __LINE__, "fused dval %s %s: %s", label, k->name, why);
    }
done:
    free(perm), free(perma), free(dx_want), free(dx_mag), free(dx_got), free(dx_sep);
    free(v_want), free(v_mag), free(v_got), free(v_sep);
    sp_csr_free(wt), sp_csr_free(wta);
}

static void csr_case(int64_t rows, int64_t cols, int64_t batch, double density, unsigned flags,
                     int64_t pad, uint64_t seed) {
    sp_rng r;
    sp_rng_init(&r, seed, 0);
    float *dense = malloc(sizeof(float) * (size_t)(rows * cols + 1));
    sp_test_fill_sparse(dense, rows, cols, density, &r);
    sp_csr *w = NULL, *wa = NULL;
    if (sp_csr_from_dense(rows, cols, dense, cols, NULL, flags, &w) != SP_OK ||
        !(wa = abs_csr(w))) {
        sp_test_fail(__FILE__, __LINE__, "setup failed: %s", sp_last_error());
        free(dense), sp_csr_free(w);
        return;
    }
    const int64_t ld = batch + pad;
    float *x = sp_test_fill_new(cols * ld, &r), *xa = sp_test_abs_copy(x, cols * ld);
    float *dy = sp_test_fill_new(rows * ld, &r), *dya = sp_test_abs_copy(dy, rows * ld);
    float *bias = sp_test_fill_new(rows, &r), *biasa = sp_test_abs_copy(bias, rows);
    float *y0 = sp_test_fill_new(rows * ld, &r);   /* initial contents: padding sentinel */
    float *dx0 = sp_test_fill_new(cols * ld, &r);  /* initial dX, accumulated into */
    float *dv0 = sp_test_fill_new(w->nnz, &r);
    const size_t cap = sizeof(float) * (size_t)(SP_MAX(SP_MAX(rows, cols) * ld, w->nnz) + 1);
    float *want = malloc(cap), *mag = malloc(cap), *got = malloc(cap);
    const bool use_bias = seed & 1;
    const sp_act act = (seed & 2) ? SP_ACT_RELU : SP_ACT_NONE;
    const bool accumulate = seed & 4;
    char label[160];
    snprintf(label, sizeof label, "%lldx%lld batch %lld density %.2f idx%s pad %lld",
             (long long)rows, (long long)cols, (long long)batch, density,
             w->col_idx16 ? "16" : "32", (long long)pad);

    const sp_kernel_family *fs = sp_kernel_family_get("csr_spmm");
    const sp_kernel_family *ft = sp_kernel_family_get("csr_spmm_t");
    const sp_kernel_family *fd = sp_kernel_family_get("csr_sddmm");
    const sp_csr_spmm_fn spmm_ref = (sp_csr_spmm_fn)fs->kernels[0].fn;
    const sp_csr_spmm_t_fn spmm_t_ref = (sp_csr_spmm_t_fn)ft->kernels[0].fn;
    const sp_csr_sddmm_fn sddmm_ref = (sp_csr_sddmm_fn)fd->kernels[0].fn;

    /* spmm: mag = |W| |X| + |bias| */
    size_t ybytes = sizeof(float) * (size_t)(rows * ld);
    memcpy(want, y0, ybytes);
    memcpy(mag, y0, ybytes);
    spmm_ref(w, 0, rows, x, ld, batch, want, ld, use_bias ? bias : NULL, act);
    spmm_ref(wa, 0, rows, xa, ld, batch, mag, ld, use_bias ? biasa : NULL, SP_ACT_NONE);
    for (int i = 1; i < fs->count; i++) {
        const sp_kernel *k = &fs->kernels[i];
        if (!sp_kernel_usable(k)) continue;
        memcpy(got, y0, ybytes);
        ((sp_csr_spmm_fn)k->fn)(w, 0, rows, x, ld, batch, got, ld, use_bias ? bias : NULL, act);
        char what[200];
        snprintf(what, sizeof what, "spmm %s", label);
        sp_test_compare_block(what, k->name, got, want, mag, rows, batch, ld, y0);
    }

    /* the panelled layout of the same matrix, every variant, for narrow and full panels, and
     * from two calls split at a block boundary */
    const sp_kernel_family *fp = sp_kernel_family_get("csr_spmm_panels");
    for (int32_t panel = 1; panel <= 256; panel *= 16) {
        if (sp_csr_pack_panels(w, panel) != SP_OK) {
            sp_test_fail(__FILE__, __LINE__, "pack: %s", sp_last_error());
            break;
        }
        const int64_t RB = w->panels->block_rows;
        for (int i = 0; i < fp->count; i++) {
            const sp_kernel *k = &fp->kernels[i];
            if (!sp_kernel_usable(k)) continue;
            memcpy(got, y0, ybytes);
            const int64_t mid = SP_MIN(rows, RB);
            ((sp_csr_spmm_fn)k->fn)(w, 0, mid, x, ld, batch, got, ld, use_bias ? bias : NULL, act);
            ((sp_csr_spmm_fn)k->fn)(w, mid, rows, x, ld, batch, got, ld, use_bias ? bias : NULL, act);
            char what[200];
            snprintf(what, sizeof what, "spmm panels(%d) %s", (int)panel, label);
            sp_test_compare_block(what, k->name, got, want, mag, rows, batch, ld, y0);
        }
    }
    sp_csr_unpack(w);

    /* spmm_t: dX = dX0 + W^T dY, mag = |dX0| + |W|^T |dY|; in 64-column chunks as dispatched */
    size_t xbytes = sizeof(float) * (size_t)(cols * ld);
    memcpy(want, dx0, xbytes);
    for (int64_t i = 0; i < cols * ld; i++) mag[i] = fabsf(dx0[i]);
    spmm_t_ref(w, 0, batch, dy, ld, want, ld);
    spmm_t_ref(wa, 0, batch, dya, ld, mag, ld);
    for (int i = 1; i < ft->count; i++) {
        const sp_kernel *k = &ft->kernels[i];
        if (!sp_kernel_usable(k)) continue;
        memcpy(got, dx0, xbytes);
        for (int64_t b0 = 0; b0 < batch; b0 += SP_SPMM_T_COLS)
            ((sp_csr_spmm_t_fn)k->fn)(w, b0, SP_MIN(batch, b0 + SP_SPMM_T_COLS), dy, ld, got, ld);
        char what[200];
        snprintf(what, sizeof what, "spmm_t %s", label);
        sp_test_compare_block(what, k->name, got, want, mag, cols, batch, ld, dx0);
    }

    /* sddmm: dval = (accumulate ? dv0 : 0) + dY X^T at W's entries */
    if (w->nnz > 0) {
        size_t vbytes = sizeof(float) * (size_t)w->nnz;
        memcpy(want, dv0, vbytes);
        for (int64_t i = 0; i < w->nnz; i++) mag[i] = accumulate ? fabsf(dv0[i]) : 0.0f;
        sddmm_ref(w, 0, rows, dy, ld, x, ld, batch, want, accumulate);
        sddmm_ref(w, 0, rows, dya, ld, xa, ld, batch, mag, true);
        for (int i = 1; i < fd->count; i++) {
            const sp_kernel *k = &fd->kernels[i];
            if (!sp_kernel_usable(k)) continue;
            memcpy(got, dv0, vbytes);
            ((sp_csr_sddmm_fn)k->fn)(w, 0, rows, dy, ld, x, ld, batch, got, accumulate);
            char why[200];
            if (!sp_close(got, want, mag, w->nnz, sp_tol_for(SP_F32), why, sizeof why))
                sp_test_fail(__FILE__, __LINE__, "sddmm %s %s: %s", label, k->name, why);
        }
    }
    fused_case(w, wa, batch, ld, dy, dya, x, xa, dx0, dv0, accumulate, label);
    free(dense), free(x), free(xa), free(dy), free(dya), free(bias), free(biasa), free(y0);
    free(dx0), free(dv0), free(want), free(mag), free(got);
    sp_csr_free(w), sp_csr_free(wa);
}

TEST(csr_kernels_match_reference) {
    uint64_t seed = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++)
            for (size_t d = 0; d < sizeof densities / sizeof densities[0]; d++) {
                if (sp_test_failures()) return;
                unsigned flags = (seed % 3 == 0) ? SP_CSR_IDX32 : 0;
                csr_case(shapes[s][0], shapes[s][1], batches[b], densities[d], flags,
                         (int64_t)(seed % 4 == 0 ? 5 : 0), seed);
                seed++;
            }
}

TEST(csr_kernels_long_rows) {
    /* rows long enough for every unrolled loop and its tails: 0..40 entries beyond 512 */
    for (int64_t extra = 0; extra < 40; extra += 13)
        for (int64_t batch = 1; batch <= 65; batch += 16)
            csr_case(5, 512 + extra, batch, 0.97, extra & 1 ? SP_CSR_IDX32 : 0, 0,
                     (uint64_t)(100 + extra + batch));
}

/* Dispatch runs the active level's own variant whenever the table has one; on aarch64 every
 * CSR family has a NEON variant and NEON is the best level, so the suite there exercises it. */
TEST(csr_dispatch_picks_active_isa) {
    static const char *fams[] = {"csr_spmm", "csr_spmm_t", "csr_sddmm", "csr_spmm_t_sddmm"};
    const sp_isa active = sp_isa_active();
#if defined(__aarch64__)
    CHECK(sp_isa_best() == SP_ISA_NEON);
#endif
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        const sp_kernel_family *fam = sp_kernel_family_get(fams[f]);
        CHECK_MSG(fam != NULL, "no family %s", fams[f]);
        if (!fam) continue;
        bool has_active = false, has_neon = false;
        for (int i = 0; i < fam->count; i++) {
            if (fam->kernels[i].is_ref) continue;
            has_active |= fam->kernels[i].isa == active;
            has_neon |= fam->kernels[i].isa == SP_ISA_NEON;
        }
#if defined(__aarch64__)
        CHECK_MSG(has_neon, "%s has no NEON variant", fams[f]);
#else
        CHECK_MSG(!has_neon, "%s lists a NEON variant off aarch64", fams[f]);
#endif
        const sp_kernel *k = sp_kernel_pick(fam);
        CHECK_MSG(k && !k->is_ref, "%s picked no optimized variant", fams[f]);
        if (k && has_active)
            CHECK_MSG(k->isa == active, "%s picked %s at level %s", fams[f], k->name,
                      sp_isa_name(active));
    }
}

/* The public entry points: reference results, identical bits on 1 and 2 threads. */
TEST(csr_public_products_are_deterministic) {
    sp_rng r;
    sp_rng_init(&r, 9, 0);
    const int64_t rows = 300, cols = 200, batch = 70; /* >= 40: the packed pass runs panels */
    float *dense = malloc(sizeof(float) * rows * cols);
    sp_test_fill_sparse(dense, rows, cols, 0.2, &r);
    sp_csr *w = NULL;
    CHECK_OK(sp_csr_from_dense(rows, cols, dense, cols, NULL, 0, &w));
    float *x = sp_test_fill_new(cols * batch, &r), *dy = sp_test_fill_new(rows * batch, &r);
    float *y1 = malloc(sizeof(float) * rows * batch), *y2 = malloc(sizeof(float) * rows * batch);
    float *dx1 = malloc(sizeof(float) * cols * batch), *dx2 = malloc(sizeof(float) * cols * batch);
    float *g1 = malloc(sizeof(float) * (size_t)w->nnz), *g2 = malloc(sizeof(float) * (size_t)w->nnz);
    float *yref = malloc(sizeof(float) * rows * batch);
    for (int pass = 0; pass < 3; pass++) {
        if (pass == 2) CHECK_OK(sp_csr_pack_panels(w, 64)); /* the last pass runs the packed layout */
        CHECK_OK(sp_csr_spmm(w, x, batch, batch, y1, batch, NULL, SP_ACT_RELU, 1));
        CHECK_OK(sp_csr_spmm(w, x, batch, batch, y2, batch, NULL, SP_ACT_RELU, 2));
        CHECK(!memcmp(y1, y2, sizeof(float) * rows * batch));
        CHECK_OK(sp_csr_spmm_t(w, dy, batch, batch, dx1, batch, false, 1));
        CHECK_OK(sp_csr_spmm_t(w, dy, batch, batch, dx2, batch, false, 2));
        CHECK(!memcmp(dx1, dx2, sizeof(float) * cols * batch));
        CHECK_OK(sp_csr_sddmm(w, dy, batch, x, batch, batch, g1, false, 1));
        CHECK_OK(sp_csr_sddmm(w, dy, batch, x, batch, batch, g2, false, 2));
        CHECK(!memcmp(g1, g2, sizeof(float) * (size_t)w->nnz));
    }
    /* the fused backward over W^T, on 1 and 2 threads */
    int64_t *perm = NULL;
    sp_csr *wt = transpose_perm(w, &perm);
    CHECK(wt != NULL);
    if (wt) {
        CHECK_OK(sp_csr_spmm_t_sddmm(wt, perm, w->val, dy, batch, x, batch, batch, dx1, batch, g1,
                                     false, 1));
        CHECK_OK(sp_csr_spmm_t_sddmm(wt, perm, w->val, dy, batch, x, batch, batch, dx2, batch, g2,
                                     false, 2));
        CHECK(!memcmp(dx1, dx2, sizeof(float) * cols * batch));
        CHECK(!memcmp(g1, g2, sizeof(float) * (size_t)w->nnz));
        /* argument checks: shapes are W^T's (in x out) */
        CHECK_STATUS(sp_csr_spmm_t_sddmm(NULL, perm, w->val, dy, batch, x, batch, batch, dx1,
                                         batch, g1, false, 1), SP_EINVAL);
        CHECK_STATUS(sp_csr_spmm_t_sddmm(wt, NULL, w->val, dy, batch, x, batch, batch, dx1, batch,
                                         g1, false, 1), SP_EINVAL);
        CHECK_STATUS(sp_csr_spmm_t_sddmm(wt, perm, w->val, dy, batch, x, batch, batch, dx1,
                                         batch - 1, g1, false, 1), SP_ESHAPE);
    }
    sp_csr_free(wt);
    free(perm);
    /* against the reference, through the dense matrix in double */
    for (int64_t i = 0; i < rows; i++)
        for (int64_t b = 0; b < batch; b++) {
            double s = 0;
            for (int64_t j = 0; j < cols; j++) s += (double)dense[i * cols + j] * x[j * batch + b];
            yref[i * batch + b] = s > 0 ? (float)s : 0.0f;
        }
    CHECK_CLOSE(y1, yref, NULL, rows * batch, ((sp_tol){1e-5, 1e-4}));
    /* accumulate adds: dX computed twice with accumulate = 2 dX */
    CHECK_OK(sp_csr_spmm_t(w, dy, batch, batch, dx2, batch, true, 2));
    for (int64_t i = 0; i < cols * batch; i++) dx1[i] *= 2.0f;
    CHECK_CLOSE(dx2, dx1, NULL, cols * batch, sp_tol_for(SP_F32));
    free(dense), free(x), free(dy), free(y1), free(y2), free(dx1), free(dx2), free(g1), free(g2);
    free(yref);
    sp_csr_free(w);
}

TEST(csr_public_products_check_arguments) {
    float d[6] = {1, 0, 2, 0, 3, 0}, x[8] = {0}, y[8] = {0};
    sp_csr *w = NULL;
    CHECK_OK(sp_csr_from_dense(2, 3, d, 3, NULL, 0, &w));
    CHECK_STATUS(sp_csr_spmm(NULL, x, 1, 1, y, 1, NULL, SP_ACT_NONE, 1), SP_EINVAL);
    CHECK_STATUS(sp_csr_spmm(w, NULL, 1, 1, y, 1, NULL, SP_ACT_NONE, 1), SP_EINVAL);
    CHECK_STATUS(sp_csr_spmm(w, x, 1, -1, y, 1, NULL, SP_ACT_NONE, 1), SP_EINVAL);
    CHECK_STATUS(sp_csr_spmm(w, x, 1, 2, y, 2, NULL, SP_ACT_NONE, 1), SP_ESHAPE);
    CHECK_STATUS(sp_csr_spmm(w, x, 2, 2, y, 1, NULL, SP_ACT_NONE, 1), SP_ESHAPE);
    CHECK_STATUS(sp_csr_spmm(w, x, 1, 1, y, 1, NULL, (sp_act)7, 1), SP_EINVAL);
    CHECK_STATUS(sp_csr_spmm(w, x, INT64_MAX, 1, y, 1, NULL, SP_ACT_NONE, 1), SP_EOVERFLOW);
    CHECK_OK(sp_csr_spmm(w, x, 1, 0, y, 1, NULL, SP_ACT_NONE, 1)); /* empty batch */
    CHECK_STATUS(sp_csr_spmm_t(w, x, 1, 1, NULL, 1, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_csr_spmm_t(w, x, 0, 1, y, 1, false, 1), SP_ESHAPE);
    CHECK_STATUS(sp_csr_sddmm(w, x, 1, y, 1, 1, NULL, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_csr_sddmm(w, x, 1, NULL, 1, 1, y, false, 1), SP_EINVAL);
    sp_csr_free(w);
}
