/*
 * test_kernels_nm.c - every N:M kernel variant in the dispatch tables against the reference:
 * every pattern in use (2:4, 1:4, 2:8, 1:1, 3:7, 4:32, and n > 16), empty matrices, all-zero
 * matrices, groups with fewer than n nonzeros, partial last groups, batch sizes around every
 * vector tile (1..65 and beyond), column panels crossed, padded leading dimensions, with and
 * without bias, ReLU and accumulation. Then the public entry points: argument checks, and
 * bitwise-identical results on 1 and 2 threads.
 */
#include <math.h>
#include <stdlib.h>

#include "core/internal.h"
#include "kernels/ops_common.h"
#include "test.h"
#include "test_nm.h"

static const int32_t patterns[][2] = {{2, 4}, {1, 4}, {2, 8}, {1, 1}, {3, 7}, {4, 32}, {17, 32}};
static const int64_t batches[] = {1,  2,  3,  4,  5,  7,  8,  9,  15, 16, 17, 31,
                                  32, 33, 47, 48, 49, 63, 64, 65, 100, 129};


/* Same pattern as w, values |w|: the magnitude matrix for tolerances. */
static sp_nm *abs_nm(const sp_nm *w) {
    sp_nm *a = NULL;
    if (sp_nm_new(w->rows, w->cols, w->n, w->m, &a) != SP_OK) return NULL;
    const int64_t slots = w->rows * w->groups * w->n;
    for (int64_t k = 0; k < slots; k++) a->idx[k] = w->idx[k], a->val[k] = fabsf(w->val[k]);
    return a;
}


static void nm_case(int64_t rows, int64_t cols, int32_t n, int32_t m, int64_t batch, int kind,
                    int64_t pad, uint64_t seed) {
    sp_rng r;
    sp_rng_init(&r, seed, 0);
    float *dense = malloc(sizeof(float) * (size_t)(rows * cols + 1));
    sp_test_fill_nm(dense, rows, cols, cols, n, m, kind, &r);
    sp_nm *w = NULL, *wa = NULL;
    if (sp_nm_from_dense(rows, cols, dense, cols, NULL, n, m, &w) != SP_OK || !(wa = abs_nm(w))) {
        sp_test_fail(__FILE__, __LINE__, "setup failed: %s", sp_last_error());
        free(dense), sp_nm_free(w);
        return;
    }
    const int64_t slots = rows * w->groups * n;
    const int64_t ld = batch + pad;
    float *x = sp_test_fill_new(cols * ld, &r), *xa = sp_test_abs_copy(x, cols * ld);
    float *dy = sp_test_fill_new(rows * ld, &r), *dya = sp_test_abs_copy(dy, rows * ld);
    float *bias = sp_test_fill_new(rows, &r), *biasa = sp_test_abs_copy(bias, rows);
    float *y0 = sp_test_fill_new(rows * ld, &r);   /* initial contents: padding sentinel */
    float *dx0 = sp_test_fill_new(cols * ld, &r);  /* initial dX, accumulated into */
    float *dv0 = sp_test_fill_new(slots, &r);
    const size_t cap = sizeof(float) * (size_t)(SP_MAX(SP_MAX(rows, cols) * ld, slots) + 1);
    float *want = malloc(cap), *mag = malloc(cap), *got = malloc(cap);
    const bool use_bias = seed & 1;
    const sp_act act = (seed & 2) ? SP_ACT_RELU : SP_ACT_NONE;
    const bool accumulate = seed & 4;
    char label[160];
    snprintf(label, sizeof label, "%d:%d %lldx%lld batch %lld fill %d pad %lld", (int)n, (int)m,
             (long long)rows, (long long)cols, (long long)batch, kind, (long long)pad);

    const sp_kernel_family *fs = sp_kernel_family_get("nm_spmm");
    const sp_kernel_family *ft = sp_kernel_family_get("nm_spmm_t");
    const sp_kernel_family *fd = sp_kernel_family_get("nm_sddmm");
    const sp_nm_spmm_fn spmm_ref = (sp_nm_spmm_fn)fs->kernels[0].fn;
    const sp_nm_spmm_t_fn spmm_t_ref = (sp_nm_spmm_t_fn)ft->kernels[0].fn;
    const sp_nm_sddmm_fn sddmm_ref = (sp_nm_sddmm_fn)fd->kernels[0].fn;

    /* spmm: mag = |W| |X| + |bias|; also over a row range that starts inside the matrix */
    size_t ybytes = sizeof(float) * (size_t)(rows * ld);
    memcpy(want, y0, ybytes);
    memcpy(mag, y0, ybytes);
    spmm_ref(w, 0, rows, x, ld, batch, want, ld, use_bias ? bias : NULL, act);
    spmm_ref(wa, 0, rows, xa, ld, batch, mag, ld, use_bias ? biasa : NULL, SP_ACT_NONE);
    for (int i = 1; i < fs->count; i++) {
        const sp_kernel *k = &fs->kernels[i];
        if (!sp_kernel_usable(k)) continue;
        memcpy(got, y0, ybytes);
        const int64_t split = rows / 3;
        ((sp_nm_spmm_fn)k->fn)(w, 0, split, x, ld, batch, got, ld, use_bias ? bias : NULL, act);
        ((sp_nm_spmm_fn)k->fn)(w, split, rows, x, ld, batch, got, ld, use_bias ? bias : NULL, act);
        char what[200];
        snprintf(what, sizeof what, "spmm %s", label);
        sp_test_compare_block(what, k->name, got, want, mag, rows, batch, ld, y0);
    }

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
            ((sp_nm_spmm_t_fn)k->fn)(w, b0, SP_MIN(batch, b0 + SP_SPMM_T_COLS), dy, ld, got, ld);
        char what[200];
        snprintf(what, sizeof what, "spmm_t %s", label);
        sp_test_compare_block(what, k->name, got, want, mag, cols, batch, ld, dx0);
    }

    /* sddmm: dval = (accumulate ? dv0 : 0) + dY X^T at every slot, padding included */
    if (slots > 0) {
        size_t vbytes = sizeof(float) * (size_t)slots;
        memcpy(want, dv0, vbytes);
        for (int64_t i = 0; i < slots; i++) mag[i] = accumulate ? fabsf(dv0[i]) : 0.0f;
        sddmm_ref(w, 0, rows, dy, ld, x, ld, batch, want, accumulate);
        sddmm_ref(w, 0, rows, dya, ld, xa, ld, batch, mag, true);
        for (int i = 1; i < fd->count; i++) {
            const sp_kernel *k = &fd->kernels[i];
            if (!sp_kernel_usable(k)) continue;
            memcpy(got, dv0, vbytes);
            const int64_t split = (rows + 1) / 2;
            ((sp_nm_sddmm_fn)k->fn)(w, 0, split, dy, ld, x, ld, batch, got, accumulate);
            ((sp_nm_sddmm_fn)k->fn)(w, split, rows, dy, ld, x, ld, batch, got, accumulate);
            char why[200];
            if (!sp_close(got, want, mag, slots, sp_tol_for(SP_F32), why, sizeof why))
                sp_test_fail(__FILE__, __LINE__, "sddmm %s %s: %s", label, k->name, why);
        }
    }
    free(dense), free(x), free(xa), free(dy), free(dya), free(bias), free(biasa), free(y0);
    free(dx0), free(dv0), free(want), free(mag), free(got);
    sp_nm_free(w), sp_nm_free(wa);
}

/* Small shapes: every pattern, every batch; whole and partial last groups. */
TEST(nm_kernels_match_reference) {
    uint64_t seed = 1;
    for (size_t p = 0; p < sizeof patterns / sizeof patterns[0]; p++) {
        const int32_t n = patterns[p][0], m = patterns[p][1];
        const int64_t part = n < m ? m - 1 : 0; /* a partial last group of m - 1 >= n columns */
        const int64_t shapes[][2] = {{0, 0}, {1, m}, {3, 2 * m + part}, {5, 5 * m}, {6, 0},
                                     {9, 3 * m + part}};
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
                if (sp_test_failures()) return;
                nm_case(shapes[s][0], shapes[s][1], n, m, batches[b], (int)(seed % 3),
                        seed % 4 == 0 ? 5 : 0, seed);
                seed++;
            }
    }
}

/* Matrices wide enough to cross several column panels for every tile width, row counts that
 * leave every row-block remainder, and groups with fewer than n nonzeros. */
TEST(nm_kernels_cross_panels) {
    static const int64_t wide_batches[] = {1, 8, 16, 17, 33, 64, 65, 129};
    uint64_t seed = 1000;
    for (size_t p = 0; p < sizeof patterns / sizeof patterns[0]; p++) {
        const int32_t n = patterns[p][0], m = patterns[p][1];
        const int64_t cols = (1100 / m) * m + (n < m ? n : 0);
        for (size_t b = 0; b < sizeof wide_batches / sizeof wide_batches[0]; b++) {
            if (sp_test_failures()) return;
            nm_case(7 + (int64_t)(b % 4), cols, n, m, wide_batches[b],
                    b % 3 == 2 ? SP_NM_FILL_FULL : SP_NM_FILL_SOME, b % 2 ? 19 : 0, seed++);
        }
    }
}

/* The public entry points: reference results, identical bits on 1 and 2 threads. */
TEST(nm_public_products_are_deterministic) {
    sp_rng r;
    sp_rng_init(&r, 11, 0);
    /* 700 rows of 514 slots at batch 70: two row tasks (nm_ops.c), two batch chunks for spmm_t */
    const int64_t rows = 700, cols = 1026, batch = 70;
    float *dense = malloc(sizeof(float) * rows * cols);
    sp_test_fill_nm(dense, rows, cols, cols, 2, 4, SP_NM_FILL_SOME, &r);
    sp_nm *w = NULL;
    CHECK_OK(sp_nm_from_dense(rows, cols, dense, cols, NULL, 2, 4, &w));
    const int64_t slots = rows * w->groups * w->n;
    float *x = sp_test_fill_new(cols * batch, &r), *dy = sp_test_fill_new(rows * batch, &r);
    float *y1 = malloc(sizeof(float) * rows * batch), *y2 = malloc(sizeof(float) * rows * batch);
    float *dx1 = malloc(sizeof(float) * cols * batch), *dx2 = malloc(sizeof(float) * cols * batch);
    float *g1 = malloc(sizeof(float) * (size_t)slots), *g2 = malloc(sizeof(float) * (size_t)slots);
    float *yref = malloc(sizeof(float) * rows * batch);
    for (int pass = 0; pass < 3; pass++) {
        CHECK_OK(sp_nm_spmm(w, x, batch, batch, y1, batch, NULL, SP_ACT_RELU, 1));
        CHECK_OK(sp_nm_spmm(w, x, batch, batch, y2, batch, NULL, SP_ACT_RELU, 2));
        CHECK(!memcmp(y1, y2, sizeof(float) * rows * batch));
        CHECK_OK(sp_nm_spmm_t(w, dy, batch, batch, dx1, batch, false, 1));
        CHECK_OK(sp_nm_spmm_t(w, dy, batch, batch, dx2, batch, false, 2));
        CHECK(!memcmp(dx1, dx2, sizeof(float) * cols * batch));
        CHECK_OK(sp_nm_sddmm(w, dy, batch, x, batch, batch, g1, false, 1));
        CHECK_OK(sp_nm_sddmm(w, dy, batch, x, batch, batch, g2, false, 2));
        CHECK(!memcmp(g1, g2, sizeof(float) * (size_t)slots));
    }
    /* against the dense matrix, in double */
    float *back = malloc(sizeof(float) * rows * cols);
    CHECK_OK(sp_nm_to_dense(w, back, cols));
    CHECK(!memcmp(back, dense, sizeof(float) * rows * cols));
    for (int64_t i = 0; i < rows; i++)
        for (int64_t b = 0; b < batch; b++) {
            double s = 0;
            for (int64_t j = 0; j < cols; j++) s += (double)dense[i * cols + j] * x[j * batch + b];
            yref[i * batch + b] = s > 0 ? (float)s : 0.0f;
        }
    CHECK_CLOSE(y1, yref, NULL, rows * batch, ((sp_tol){1e-5, 1e-4}));
    /* dval of a padding slot is a real gradient: dY[i, :] . X[col, :] */
    {
        const int64_t k = 1, S = w->groups * w->n, col = (k % S / w->n) * w->m + w->idx[k];
        double s = 0;
        for (int64_t b = 0; b < batch; b++) s += (double)dy[(k / S) * batch + b] * x[col * batch + b];
        float want = (float)s;
        CHECK_CLOSE(&g1[k], &want, NULL, 1, ((sp_tol){1e-5, 1e-4}));
    }
    /* accumulate adds: dX computed twice with accumulate = 2 dX */
    CHECK_OK(sp_nm_spmm_t(w, dy, batch, batch, dx2, batch, true, 2));
    for (int64_t i = 0; i < cols * batch; i++) dx1[i] *= 2.0f;
    CHECK_CLOSE(dx2, dx1, NULL, cols * batch, sp_tol_for(SP_F32));
    CHECK_OK(sp_nm_sddmm(w, dy, batch, x, batch, batch, g2, true, 2));
    for (int64_t i = 0; i < slots; i++) g1[i] *= 2.0f;
    CHECK_CLOSE(g2, g1, NULL, slots, sp_tol_for(SP_F32));
    free(dense), free(back), free(x), free(dy), free(y1), free(y2), free(dx1), free(dx2);
    free(g1), free(g2), free(yref);
    sp_nm_free(w);
}

TEST(nm_public_products_check_arguments) {
    float d[8] = {1, 0, 2, 0, 0, 3, 0, 0}, x[8] = {0}, y[8] = {0};
    sp_nm *w = NULL;
    CHECK_OK(sp_nm_from_dense(2, 4, d, 4, NULL, 2, 4, &w));
    CHECK_STATUS(sp_nm_spmm(NULL, x, 1, 1, y, 1, NULL, SP_ACT_NONE, 1), SP_EINVAL);
    CHECK_STATUS(sp_nm_spmm(w, NULL, 1, 1, y, 1, NULL, SP_ACT_NONE, 1), SP_EINVAL);
    CHECK_STATUS(sp_nm_spmm(w, x, 1, 1, NULL, 1, NULL, SP_ACT_NONE, 1), SP_EINVAL);
    CHECK_STATUS(sp_nm_spmm(w, x, 1, -1, y, 1, NULL, SP_ACT_NONE, 1), SP_EINVAL);
    CHECK_STATUS(sp_nm_spmm(w, x, 1, 2, y, 2, NULL, SP_ACT_NONE, 1), SP_ESHAPE);
    CHECK_STATUS(sp_nm_spmm(w, x, 2, 2, y, 1, NULL, SP_ACT_NONE, 1), SP_ESHAPE);
    CHECK_STATUS(sp_nm_spmm(w, x, 1, 1, y, 1, NULL, (sp_act)7, 1), SP_EINVAL);
    CHECK_STATUS(sp_nm_spmm(w, x, INT64_MAX, 1, y, 1, NULL, SP_ACT_NONE, 1), SP_EOVERFLOW);
    CHECK_OK(sp_nm_spmm(w, x, 1, 0, y, 1, NULL, SP_ACT_NONE, 1)); /* empty batch */
    CHECK_STATUS(sp_nm_spmm_t(NULL, x, 1, 1, y, 1, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_nm_spmm_t(w, x, 1, 1, NULL, 1, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_nm_spmm_t(w, x, 0, 1, y, 1, false, 1), SP_ESHAPE);
    CHECK_STATUS(sp_nm_spmm_t(w, x, 1, -2, y, 1, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_nm_sddmm(NULL, x, 1, y, 1, 1, y, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_nm_sddmm(w, x, 1, y, 1, 1, NULL, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_nm_sddmm(w, x, 1, NULL, 1, 1, y, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_nm_sddmm(w, x, 1, y, 0, 1, y, false, 1), SP_ESHAPE);
    /* a 2x4 product by hand: row 0 = 1 x0 + 2 x2, row 1 = 3 x1 */
    float xv[4] = {1, 10, 100, 1000}, yv[2] = {0, 0}, bias[2] = {0.5f, -100};
    CHECK_OK(sp_nm_spmm(w, xv, 1, 1, yv, 1, bias, SP_ACT_RELU, 0));
    CHECK(yv[0] == 201.5f && yv[1] == 0.0f);
    sp_nm_free(w);
}
