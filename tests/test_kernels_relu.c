/*
 * test_kernels_relu.c - the fused ReLU of every spmm variant of every format maps NaN (and
 * anything not > 0) to +0.0, bit for bit, as sp_epilogue does. The tolerance helper cannot see
 * this (NaN is never close), and a vector max can differ: AArch64 FMAX returns NaN.
 */
#include <math.h>
#include <stdlib.h>

#include "kernels/kernel_table.h"
#include "test.h"

/* Checks that y[0..n) are all +0.0 bits. */
static void expect_positive_zero(const char *kernel, int64_t batch, const float *y, int64_t n) {
    for (int64_t k = 0; k < n; k++) {
        uint32_t bits;
        memcpy(&bits, &y[k], sizeof bits);
        if (bits != 0) {
            sp_test_fail(__FILE__, __LINE__, "%s batch %lld: y[%lld] bits %08x", kernel,
                         (long long)batch, (long long)k, bits);
            return;
        }
    }
}

/* X (cols, batch) with NaN in row 0 and 2.0 elsewhere: every output row whose weights touch
 * column 0 is NaN before the activation. */
static float *nan_input(int64_t cols, int64_t batch) {
    float *x = malloc(sizeof(float) * (size_t)(cols * batch));
    for (int64_t i = 0; i < cols * batch; i++) x[i] = i < batch ? NAN : 2.0f;
    return x;
}

static const int64_t widths[] = {1, 5, 16, 64, 70};

TEST(relu_maps_nan_to_positive_zero_csr) {
    /* row 0 and 1 touch column 0 (one with a negative weight), row 2 is empty */
    const int64_t rows = 3, cols = 3;
    const float dense[9] = {1, 1, 1, -1, 0, 0, 0, 0, 0};
    for (size_t bi = 0; bi < sizeof widths / sizeof widths[0]; bi++) {
        const int64_t batch = widths[bi];
        float *x = nan_input(cols, batch), *y = malloc(sizeof(float) * (size_t)(rows * batch));
        sp_csr *w = NULL;
        CHECK_OK(sp_csr_from_dense(rows, cols, dense, cols, NULL, 0, &w));
        const char *fams[] = {"csr_spmm", "csr_spmm_panels"};
        for (int f = 0; f < 2; f++) {
            if (f == 1) CHECK_OK(sp_csr_pack_panels(w, 2));
            const sp_kernel_family *fam = sp_kernel_family_get(fams[f]);
            for (int i = 0; i < fam->count; i++) {
                if (!sp_kernel_usable(&fam->kernels[i])) continue;
                memset(y, 0xFF, sizeof(float) * (size_t)(rows * batch));
                ((sp_csr_spmm_fn)fam->kernels[i].fn)(w, 0, rows, x, batch, batch, y, batch, NULL,
                                                     SP_ACT_RELU);
                expect_positive_zero(fam->kernels[i].name, batch, y, rows * batch);
            }
        }
        sp_csr_free(w);
        free(x), free(y);
    }
}

TEST(relu_maps_nan_to_positive_zero_bsr) {
    const int32_t shapes[][2] = {{4, 4}, {16, 1}, {1, 4}, {3, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t rows = 17, cols = 9; /* ragged edges for every shape */
        float *dense = malloc(sizeof(float) * rows * cols);
        for (int64_t i = 0; i < rows * cols; i++) dense[i] = (i % 3 == 1) ? -1.0f : 1.0f;
        sp_bsr *w = NULL;
        CHECK_OK(sp_bsr_from_dense(rows, cols, dense, cols, NULL, shapes[s][0], shapes[s][1], &w));
        const sp_kernel_family *fam = sp_kernel_family_get("bsr_spmm");
        for (size_t bi = 0; w && bi < sizeof widths / sizeof widths[0]; bi++) {
            const int64_t batch = widths[bi];
            float *x = nan_input(cols, batch), *y = malloc(sizeof(float) * (size_t)(rows * batch));
            for (int i = 0; i < fam->count; i++) {
                if (!sp_kernel_usable(&fam->kernels[i])) continue;
                memset(y, 0xFF, sizeof(float) * (size_t)(rows * batch));
                ((sp_bsr_spmm_fn)fam->kernels[i].fn)(w, 0, w->brows, x, batch, batch, y, batch,
                                                     NULL, SP_ACT_RELU);
                expect_positive_zero(fam->kernels[i].name, batch, y, rows * batch);
            }
            free(x), free(y);
        }
        sp_bsr_free(w);
        free(dense);
    }
}

TEST(relu_maps_nan_to_positive_zero_nm) {
    const int32_t patterns[][2] = {{2, 4}, {1, 4}, {2, 8}};
    for (size_t p = 0; p < sizeof patterns / sizeof patterns[0]; p++) {
        const int32_t n = patterns[p][0], m = patterns[p][1];
        const int64_t rows = 9, cols = 4 * m;
        /* column 0 of every group kept (so every row sees the NaN), plus n - 1 more */
        float *dense = calloc((size_t)(rows * cols), sizeof(float));
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j += m)
                for (int32_t s = 0; s < n; s++) dense[i * cols + j + s] = (i + s) % 2 ? -1.0f : 1.0f;
        sp_nm *w = NULL;
        CHECK_OK(sp_nm_from_dense(rows, cols, dense, cols, NULL, n, m, &w));
        const sp_kernel_family *fam = sp_kernel_family_get("nm_spmm");
        for (size_t bi = 0; w && bi < sizeof widths / sizeof widths[0]; bi++) {
            const int64_t batch = widths[bi];
            float *x = nan_input(cols, batch), *y = malloc(sizeof(float) * (size_t)(rows * batch));
            for (int i = 0; i < fam->count; i++) {
                if (!sp_kernel_usable(&fam->kernels[i])) continue;
                memset(y, 0xFF, sizeof(float) * (size_t)(rows * batch));
                ((sp_nm_spmm_fn)fam->kernels[i].fn)(w, 0, rows, x, batch, batch, y, batch, NULL,
                                                    SP_ACT_RELU);
                expect_positive_zero(fam->kernels[i].name, batch, y, rows * batch);
            }
            free(x), free(y);
        }
        sp_nm_free(w);
        free(dense);
    }
}
