/*
 * test_kernels_bsr.c - every BSR kernel variant in the dispatch table against the reference,
 * over edge shapes: empty matrices, empty block rows and columns (density 0), fully dense,
 * sizes that are not multiples of the block, batch sizes around every vector tile (1..65),
 * padded leading dimensions, with and without bias and ReLU, for the common block shapes and
 * odd ones, and a sweep over block shapes 1..64 x 1..64. Then the public entry points: argument
 * checks, and bitwise-identical results on 1 and 2 threads.
 *
 * Out-of-bounds checks that work without ASan: X and dY get GUARD extra rows, and their unused
 * leading-dimension columns, filled with NaN (a kernel that reads them, even to multiply by a
 * zero padding weight, produces NaN); Y, dX and dval get guard rows of sentinel values that must
 * survive.
 */
#include <math.h>
#include <stdlib.h>

#include "core/internal.h"
#include "kernels/ops_common.h"
#include "test.h"

#define GUARD 3

static const int64_t shapes[][2] = {{0, 0}, {1, 1}, {3, 5}, {17, 33}, {64, 64}, {70, 129}};
static const int64_t batches[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 100};
static const int64_t few_batches[] = {1, 5, 16, 33, 64, 65};
static const double densities[] = {0.0, 0.3, 1.0, 0.6};
/* the shapes with specialised paths get every batch; the others a few */
static const int32_t main_blocks[][2] = {{1, 4}, {4, 1}, {4, 4}, {8, 1}, {16, 1}};
static const int32_t odd_blocks[][2] = {{1, 1}, {3, 5}, {5, 3}, {64, 1}, {1, 64}, {2, 8}, {8, 8}, {64, 64}};


/* A (rows x cols) dense matrix in which each (br x bc) block is nonzero with probability
 * density, with random values inside. */
static float *draw_blocks(int64_t rows, int64_t cols, int64_t br, int64_t bc, double density,
                          sp_rng *r) {
    float *d = calloc((size_t)(rows * cols + 1), sizeof(float));
    for (int64_t i0 = 0; i0 < rows; i0 += br)
        for (int64_t j0 = 0; j0 < cols; j0 += bc) {
            if (!(sp_rng_uniform(r) < density)) continue;
            for (int64_t i = i0; i < SP_MIN(rows, i0 + br); i++)
                for (int64_t j = j0; j < SP_MIN(cols, j0 + bc); j++) {
                    float v = 2.0f * sp_rng_uniform(r) - 1.0f;
                    d[i * cols + j] = v == 0.0f ? 0.5f : v;
                }
        }
    return d;
}

static sp_bsr *abs_bsr(const sp_bsr *w) {
    sp_bsr *a = NULL;
    if (sp_bsr_new(w->rows, w->cols, w->br, w->bc, w->nblocks, &a) != SP_OK) return NULL;
    memcpy(a->row_ptr, w->row_ptr, sizeof(int64_t) * (size_t)(w->brows + 1));
    memcpy(a->col_idx, w->col_idx, sizeof(int32_t) * (size_t)w->nblocks);
    for (int64_t k = 0; k < w->nblocks * w->br * w->bc; k++) a->val[k] = fabsf(w->val[k]);
    return a;
}

/* An input operand (rows, ld) with NaN in its unused columns [batch, ld) and in GUARD extra
 * rows, and its absolute value (for magnitudes). */
static float *input_new(int64_t rows, int64_t batch, int64_t ld, sp_rng *r, float **abs_out) {
    float *p = sp_test_fill_new((rows + GUARD) * ld, r);
    for (int64_t i = 0; i < rows + GUARD; i++)
        for (int64_t b = (i < rows ? batch : 0); b < ld; b++) p[i * ld + b] = NAN;
    *abs_out = sp_test_abs_copy(p, rows * ld);
    return p;
}

/* Compares got to want over (rows, batch) of a (rows + GUARD, ld) output and checks that every
 * element outside it still equals before. */
static void compare_out(const char *what, const char *kernel, const float *got, const float *want,
                        const float *mag, const float *before, int64_t rows, int64_t batch,
                        int64_t ld) {
    for (int64_t i = 0; i < rows + GUARD; i++) {
        char why[200];
        if (i < rows && !sp_close(got + i * ld, want + i * ld, mag + i * ld, batch,
                                  sp_tol_for(SP_F32), why, sizeof why)) {
            sp_test_fail(__FILE__, __LINE__, "%s %s row %lld: %s", what, kernel, (long long)i, why);
            return;
        }
        for (int64_t b = (i < rows ? batch : 0); b < ld; b++)
            if (memcmp(&got[i * ld + b], &before[i * ld + b], sizeof(float)) != 0) {
                sp_test_fail(__FILE__, __LINE__, "%s %s wrote outside at (%lld, %lld)", what,
                             kernel, (long long)i, (long long)b);
                return;
            }
    }
}

static void bsr_case(int64_t rows, int64_t cols, int32_t br, int32_t bc, int64_t batch,
                     double density, int64_t pad, uint64_t seed) {
    sp_rng r;
    sp_rng_init(&r, seed, 0);
    float *dense = draw_blocks(rows, cols, br, bc, density, &r);
    sp_bsr *w = NULL, *wa = NULL;
    if (sp_bsr_from_dense(rows, cols, dense, cols, NULL, br, bc, &w) != SP_OK ||
        !(wa = abs_bsr(w))) {
        sp_test_fail(__FILE__, __LINE__, "setup failed: %s", sp_last_error());
        free(dense), sp_bsr_free(w);
        return;
    }
    const int64_t ld = batch + pad, nval = w->nblocks * br * bc;
    float *xa, *dya;
    float *x = input_new(cols, batch, ld, &r, &xa), *dy = input_new(rows, batch, ld, &r, &dya);
    float *bias = sp_test_fill_new(rows, &r), *biasa = sp_test_abs_copy(bias, rows);
    float *y0 = sp_test_fill_new((rows + GUARD) * ld, &r);  /* initial Y: sentinels outside */
    float *dx0 = sp_test_fill_new((cols + GUARD) * ld, &r); /* initial dX, accumulated into */
    float *dv0 = sp_test_fill_new(nval + GUARD, &r);
    const size_t cap = sizeof(float) * (size_t)(SP_MAX((SP_MAX(rows, cols) + GUARD) * ld, nval + GUARD));
    float *want = malloc(cap), *mag = malloc(cap), *got = malloc(cap);
    const bool use_bias = seed & 1;
    const sp_act act = (seed & 2) ? SP_ACT_RELU : SP_ACT_NONE;
    const bool accumulate = seed & 4;
    const int64_t mid = w->brows / 2; /* kernels are called on two block-row ranges */
    char label[160];
    snprintf(label, sizeof label, "%lldx%lld block %dx%d batch %lld density %.2f pad %lld",
             (long long)rows, (long long)cols, br, bc, (long long)batch, density, (long long)pad);

    const sp_kernel_family *fs = sp_kernel_family_get("bsr_spmm");
    const sp_kernel_family *ft = sp_kernel_family_get("bsr_spmm_t");
    const sp_kernel_family *fd = sp_kernel_family_get("bsr_sddmm");
    const sp_bsr_spmm_fn spmm_ref = (sp_bsr_spmm_fn)fs->kernels[0].fn;
    const sp_bsr_spmm_t_fn spmm_t_ref = (sp_bsr_spmm_t_fn)ft->kernels[0].fn;
    const sp_bsr_sddmm_fn sddmm_ref = (sp_bsr_sddmm_fn)fd->kernels[0].fn;
    char what[200];

    /* spmm: mag = |W| |X| + |bias| */
    size_t ybytes = sizeof(float) * (size_t)((rows + GUARD) * ld);
    memcpy(want, y0, ybytes);
    memcpy(mag, y0, ybytes);
    spmm_ref(w, 0, w->brows, x, ld, batch, want, ld, use_bias ? bias : NULL, act);
    spmm_ref(wa, 0, w->brows, xa, ld, batch, mag, ld, use_bias ? biasa : NULL, SP_ACT_NONE);
    snprintf(what, sizeof what, "spmm %s", label);
    for (int i = 1; i < fs->count; i++) {
        const sp_kernel *k = &fs->kernels[i];
        if (!sp_kernel_usable(k)) continue;
        memcpy(got, y0, ybytes);
        ((sp_bsr_spmm_fn)k->fn)(w, 0, mid, x, ld, batch, got, ld, use_bias ? bias : NULL, act);
        ((sp_bsr_spmm_fn)k->fn)(w, mid, w->brows, x, ld, batch, got, ld, use_bias ? bias : NULL, act);
        compare_out(what, k->name, got, want, mag, y0, rows, batch, ld);
    }

    /* spmm_t: dX = dX0 + W^T dY, mag = |dX0| + |W|^T |dY|; in 64-column chunks as dispatched */
    size_t xbytes = sizeof(float) * (size_t)((cols + GUARD) * ld);
    memcpy(want, dx0, xbytes);
    for (int64_t i = 0; i < (cols + GUARD) * ld; i++) mag[i] = fabsf(dx0[i]);
    spmm_t_ref(w, 0, batch, dy, ld, want, ld);
    spmm_t_ref(wa, 0, batch, dya, ld, mag, ld);
    snprintf(what, sizeof what, "spmm_t %s", label);
    for (int i = 1; i < ft->count; i++) {
        const sp_kernel *k = &ft->kernels[i];
        if (!sp_kernel_usable(k)) continue;
        memcpy(got, dx0, xbytes);
        for (int64_t b0 = 0; b0 < batch; b0 += SP_SPMM_T_COLS)
            ((sp_bsr_spmm_t_fn)k->fn)(w, b0, SP_MIN(batch, b0 + SP_SPMM_T_COLS), dy, ld, got, ld);
        compare_out(what, k->name, got, want, mag, dx0, cols, batch, ld);
    }

    /* sddmm: dval = (accumulate ? dv0 : 0) + dY X^T at W's entries, padding entries 0 */
    size_t vbytes = sizeof(float) * (size_t)(nval + GUARD);
    memcpy(want, dv0, vbytes);
    for (int64_t i = 0; i < nval; i++) mag[i] = accumulate ? fabsf(dv0[i]) : 0.0f;
    sddmm_ref(w, 0, w->brows, dy, ld, x, ld, batch, want, accumulate);
    sddmm_ref(w, 0, w->brows, dya, ld, xa, ld, batch, mag, true);
    snprintf(what, sizeof what, "sddmm %s", label);
    for (int i = 1; i < fd->count; i++) {
        const sp_kernel *k = &fd->kernels[i];
        if (!sp_kernel_usable(k)) continue;
        memcpy(got, dv0, vbytes);
        ((sp_bsr_sddmm_fn)k->fn)(w, 0, mid, dy, ld, x, ld, batch, got, accumulate);
        ((sp_bsr_sddmm_fn)k->fn)(w, mid, w->brows, dy, ld, x, ld, batch, got, accumulate);
        char why[200];
        if (!sp_close(got, want, mag, nval, sp_tol_for(SP_F32), why, sizeof why))
            sp_test_fail(__FILE__, __LINE__, "%s %s: %s", what, k->name, why);
        if (memcmp(got + nval, dv0 + nval, sizeof(float) * GUARD) != 0)
            sp_test_fail(__FILE__, __LINE__, "%s %s wrote past dval", what, k->name);
    }
    free(dense), free(x), free(xa), free(dy), free(dya), free(bias), free(biasa), free(y0);
    free(dx0), free(dv0), free(want), free(mag), free(got);
    sp_bsr_free(w), sp_bsr_free(wa);
}

TEST(bsr_kernels_match_reference_common_blocks) {
    uint64_t seed = 1;
    for (size_t q = 0; q < sizeof main_blocks / sizeof main_blocks[0]; q++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
                if (sp_test_failures()) return;
                bsr_case(shapes[s][0], shapes[s][1], main_blocks[q][0], main_blocks[q][1],
                         batches[b], densities[seed % 4], (int64_t)(seed % 3 == 0 ? 5 : 0), seed);
                seed++;
            }
}

TEST(bsr_kernels_match_reference_odd_blocks) {
    uint64_t seed = 1000;
    for (size_t q = 0; q < sizeof odd_blocks / sizeof odd_blocks[0]; q++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t b = 0; b < sizeof few_batches / sizeof few_batches[0]; b++) {
                if (sp_test_failures()) return;
                bsr_case(shapes[s][0], shapes[s][1], odd_blocks[q][0], odd_blocks[q][1],
                         few_batches[b], densities[seed % 4], (int64_t)(seed % 3 == 0 ? 7 : 0),
                         seed);
                seed++;
            }
}

TEST(bsr_kernels_every_block_shape) {
    /* block sides around every power of two up to 64; one full and one partial block each way */
    static const int32_t sides[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64};
    const size_t n = sizeof sides / sizeof sides[0];
    uint64_t seed = 5000;
    for (size_t a = 0; a < n; a++)
        for (size_t b = 0; b < n; b++) {
            if (sp_test_failures()) return;
            const int32_t br = sides[a], bc = sides[b];
            bsr_case(br + br / 2 + 1, bc + bc / 2 + 1, br, bc, (seed & 8) ? 1 : 37, 0.75,
                     (int64_t)(seed % 3), seed);
            seed++;
        }
}

TEST(bsr_kernels_long_block_rows) {
    /* block rows long enough for every unrolled loop and its tails */
    for (size_t q = 0; q < sizeof main_blocks / sizeof main_blocks[0]; q++)
        for (int64_t extra = 0; extra < 40; extra += 13)
            for (int64_t batch = 1; batch <= 129; batch += 32)
                bsr_case(main_blocks[q][0] + 1, 512 + extra, main_blocks[q][0], main_blocks[q][1],
                         batch, 0.9, 0, (uint64_t)(100 + extra + batch));
}

/* The public entry points: reference results, identical bits on 1 and 2 threads. */
TEST(bsr_public_products_are_deterministic) {
    static const int32_t blocks[][2] = {{4, 4}, {16, 1}, {1, 4}, {3, 5}};
    for (size_t q = 0; q < sizeof blocks / sizeof blocks[0]; q++) {
        sp_rng r;
        sp_rng_init(&r, 9 + q, 0);
        const int64_t rows = 301, cols = 203, batch = 37;
        float *dense = draw_blocks(rows, cols, blocks[q][0], blocks[q][1], 0.3, &r);
        sp_bsr *w = NULL;
        CHECK_OK(sp_bsr_from_dense(rows, cols, dense, cols, NULL, blocks[q][0], blocks[q][1], &w));
        if (!w) {
            free(dense);
            return;
        }
        const int64_t nval = w->nblocks * w->br * w->bc;
        float *x = sp_test_fill_new(cols * batch, &r), *dy = sp_test_fill_new(rows * batch, &r);
        float *bias = sp_test_fill_new(rows, &r);
        float *y1 = malloc(sizeof(float) * rows * batch), *y2 = malloc(sizeof(float) * rows * batch);
        float *dx1 = malloc(sizeof(float) * cols * batch), *dx2 = malloc(sizeof(float) * cols * batch);
        float *g1 = malloc(sizeof(float) * (size_t)nval), *g2 = malloc(sizeof(float) * (size_t)nval);
        float *yref = malloc(sizeof(float) * rows * batch);
        for (int pass = 0; pass < 2; pass++) {
            CHECK_OK(sp_bsr_spmm(w, x, batch, batch, y1, batch, bias, SP_ACT_RELU, 1));
            CHECK_OK(sp_bsr_spmm(w, x, batch, batch, y2, batch, bias, SP_ACT_RELU, 2));
            CHECK(!memcmp(y1, y2, sizeof(float) * rows * batch));
            CHECK_OK(sp_bsr_spmm_t(w, dy, batch, batch, dx1, batch, false, 1));
            CHECK_OK(sp_bsr_spmm_t(w, dy, batch, batch, dx2, batch, false, 2));
            CHECK(!memcmp(dx1, dx2, sizeof(float) * cols * batch));
            CHECK_OK(sp_bsr_sddmm(w, dy, batch, x, batch, batch, g1, false, 1));
            CHECK_OK(sp_bsr_sddmm(w, dy, batch, x, batch, batch, g2, false, 2));
            CHECK(!memcmp(g1, g2, sizeof(float) * (size_t)nval));
        }
        /* against the dense matrix in double */
        for (int64_t i = 0; i < rows; i++)
            for (int64_t b = 0; b < batch; b++) {
                double s = bias[i];
                for (int64_t j = 0; j < cols; j++) s += (double)dense[i * cols + j] * x[j * batch + b];
                yref[i * batch + b] = s > 0 ? (float)s : 0.0f;
            }
        CHECK_CLOSE(y1, yref, NULL, rows * batch, ((sp_tol){1e-5, 1e-4}));
        /* accumulate adds: dX computed twice with accumulate = 2 dX */
        CHECK_OK(sp_bsr_spmm_t(w, dy, batch, batch, dx2, batch, true, 2));
        for (int64_t i = 0; i < cols * batch; i++) dx1[i] *= 2.0f;
        CHECK_CLOSE(dx2, dx1, NULL, cols * batch, sp_tol_for(SP_F32));
        CHECK_OK(sp_bsr_sddmm(w, dy, batch, x, batch, batch, g2, true, 2));
        for (int64_t i = 0; i < nval; i++) g1[i] *= 2.0f;
        CHECK_CLOSE(g2, g1, NULL, nval, sp_tol_for(SP_F32));
        free(dense), free(x), free(dy), free(bias), free(y1), free(y2), free(dx1), free(dx2);
        free(g1), free(g2), free(yref);
        sp_bsr_free(w);
    }
}

TEST(bsr_public_products_edge_sizes) {
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[8], bias[4] = {1, -2, 3, -4};
    sp_bsr *w = NULL;
    /* no columns: Y = act(bias) */
    CHECK_OK(sp_bsr_new(4, 0, 2, 2, 0, &w));
    CHECK_OK(sp_bsr_spmm(w, NULL, 2, 2, y, 2, bias, SP_ACT_RELU, 2));
    for (int i = 0; i < 8; i++) CHECK(y[i] == (bias[i / 2] > 0 ? bias[i / 2] : 0.0f));
    CHECK_OK(sp_bsr_spmm_t(w, x, 2, 2, NULL, 2, false, 1)); /* dX has no rows */
    CHECK_OK(sp_bsr_sddmm(w, x, 2, NULL, 2, 2, NULL, false, 1));
    sp_bsr_free(w);
    /* no rows */
    CHECK_OK(sp_bsr_new(0, 4, 2, 2, 0, &w));
    for (int i = 0; i < 8; i++) y[i] = 9.0f;
    CHECK_OK(sp_bsr_spmm(w, x, 2, 2, NULL, 2, NULL, SP_ACT_NONE, 1));
    CHECK_OK(sp_bsr_spmm_t(w, NULL, 2, 2, y, 2, false, 1)); /* dX = 0 */
    for (int i = 0; i < 8; i++) CHECK(y[i] == 0.0f);
    sp_bsr_free(w);
}

TEST(bsr_public_products_check_arguments) {
    float d[6] = {1, 0, 2, 0, 3, 0}, x[8] = {0}, y[8] = {0};
    sp_bsr *w = NULL;
    CHECK_OK(sp_bsr_from_dense(2, 3, d, 3, NULL, 2, 2, &w));
    CHECK_STATUS(sp_bsr_spmm(NULL, x, 1, 1, y, 1, NULL, SP_ACT_NONE, 1), SP_EINVAL);
    CHECK_STATUS(sp_bsr_spmm(w, NULL, 1, 1, y, 1, NULL, SP_ACT_NONE, 1), SP_EINVAL);
    CHECK_STATUS(sp_bsr_spmm(w, x, 1, 1, NULL, 1, NULL, SP_ACT_NONE, 1), SP_EINVAL);
    CHECK_STATUS(sp_bsr_spmm(w, x, 1, -1, y, 1, NULL, SP_ACT_NONE, 1), SP_EINVAL);
    CHECK_STATUS(sp_bsr_spmm(w, x, 1, 2, y, 2, NULL, SP_ACT_NONE, 1), SP_ESHAPE);
    CHECK_STATUS(sp_bsr_spmm(w, x, 2, 2, y, 1, NULL, SP_ACT_NONE, 1), SP_ESHAPE);
    CHECK_STATUS(sp_bsr_spmm(w, x, 1, 1, y, 1, NULL, (sp_act)7, 1), SP_EINVAL);
    CHECK_STATUS(sp_bsr_spmm(w, x, INT64_MAX, 1, y, 1, NULL, SP_ACT_NONE, 1), SP_EOVERFLOW);
    CHECK_OK(sp_bsr_spmm(w, x, 1, 0, y, 1, NULL, SP_ACT_NONE, 1)); /* empty batch */
    CHECK_STATUS(sp_bsr_spmm_t(NULL, x, 1, 1, y, 1, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_bsr_spmm_t(w, x, 1, 1, NULL, 1, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_bsr_spmm_t(w, x, 0, 1, y, 1, false, 1), SP_ESHAPE);
    CHECK_STATUS(sp_bsr_spmm_t(w, x, 1, -3, y, 1, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_bsr_sddmm(NULL, x, 1, y, 1, 1, y, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_bsr_sddmm(w, x, 1, y, 1, 1, NULL, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_bsr_sddmm(w, x, 1, NULL, 1, 1, y, false, 1), SP_EINVAL);
    CHECK_STATUS(sp_bsr_sddmm(w, x, 1, y, 0, 1, y, false, 1), SP_ESHAPE);
    sp_bsr_free(w);
}

TEST(bsr_families_are_registered) {
    static const char *fams[] = {"bsr_spmm", "bsr_spmm_t", "bsr_sddmm"};
    for (size_t i = 0; i < 3; i++) {
        const sp_kernel_family *f = sp_kernel_family_get(fams[i]);
        CHECK(f != NULL && f->count >= 2 && f->kernels[0].is_ref);
        CHECK(sp_kernel_selected(fams[i]) != NULL);
        if (!f) continue;
        /* every x86-64 build has scalar, avx2 and avx512 variants; aarch64 has scalar and neon */
#if defined(__x86_64__) || defined(__aarch64__)
        CHECK(f->count >= 3);
#endif
    }
}
