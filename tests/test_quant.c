/*
 * test_quant.c - the quantized CSR (sp_qcsr): quantization error bounds, the gap/filler layout,
 * round trips through sp_qcsr_wrap (copy and borrow), the catalogue of malformed arrays wrap
 * must refuse, every kernel of the qact / qcsr_spmm families against the reference (and the
 * reference against the dequantized fp32 product), the public product's checks, 1 vs 2 threads,
 * and allocation failures.
 */
#include <math.h>
#include <stdlib.h>

#include "core/internal.h"
#include "kernels/ops_common.h"
#include "test.h"

/* dense (rows x cols) with some columns far apart (gaps > 255) when cols is wide */
static float *rand_weight(int64_t rows, int64_t cols, double density, sp_rng *r) {
    float *w = malloc(sizeof(float) * (size_t)(rows * cols > 0 ? rows * cols : 1));
    sp_test_fill_sparse(w, rows, cols, density, r);
    return w;
}


TEST(qcsr_quantization_error_is_at_most_half_a_step) {
    sp_rng r;
    sp_rng_init(&r, 11, 0);
    const int64_t rows = 37, cols = 700;
    float *w = rand_weight(rows, cols, 0.2, &r);
    float *d = malloc(sizeof(float) * rows * cols);
    const int cfg[][2] = {{8, 0}, {4, 1}, {4, 5}, {4, 32}};
    for (int c = 0; c < 4; c++) {
        for (int dl = 0; dl < 2; dl++) {
            sp_qcsr *q = NULL;
            CHECK_OK(sp_qcsr_from_dense(rows, cols, w, cols, NULL, dl, cfg[c][0], cfg[c][1], &q));
            if (!q) continue;
            CHECK_EQ(q->dense, dl == 1);
            CHECK_OK(sp_qcsr_to_dense(q, d, cols));
            for (int64_t i = 0; i < rows; i++) {
                int64_t col = 0;
                for (int64_t k = q->row_ptr[i]; k < q->row_ptr[i + 1]; k++) {
                    col = q->gap ? col + q->gap[k] : k - q->row_ptr[i];
                    float s = sp_qcsr_scale_of(q, i, k), want = w[i * cols + col];
                    int qv = sp_qcsr_q(q, k);
                    CHECK(abs(qv) <= (cfg[c][0] == 8 ? 127 : 7));
                    CHECK_MSG(fabsf(want - s * (float)qv) <= 0.5f * s * (1 + 1e-5f) + 1e-30f,
                              "bits %d group %d (%lld, %lld): %g vs %g, scale %g", cfg[c][0],
                              cfg[c][1], (long long)i, (long long)col, want, s * qv, s);
                }
            }
            for (int64_t e = 0; e < rows * cols; e++)
                CHECK(w[e] != 0.0f || d[e] == 0.0f); /* zeros stay zeros, stored or not */
            sp_qcsr_free(q);
        }
    }
    free(w), free(d);
}

TEST(qcsr_gaps_above_255_use_filler_entries) {
    /* row 0: columns 0, 300, 1000; row 1: empty; row 2: column 1199 only */
    const int64_t cols = 1200;
    float *w = calloc(3 * cols, sizeof(float));
    w[0] = 1.0f, w[300] = -2.0f, w[1000] = 0.5f, w[2 * cols + 1199] = 3.0f;
    sp_csr *c = NULL;
    CHECK_OK(sp_csr_from_dense(3, cols, w, cols, NULL, 0, &c));
    sp_qcsr *q = NULL;
    CHECK_OK(sp_qcsr_from_csr(c, 8, 0, &q));
    if (q) {
        /* row 0: 0 | 255f 300 | 555f 810f 1000 ; row 2: 255f 510f 765f 1020f 1199 */
        const uint8_t want_gap[] = {0, 255, 45, 255, 255, 190, 255, 255, 255, 255, 179};
        const int32_t want_rp[] = {0, 6, 6, 11};
        CHECK_EQ(q->nnz, 11);
        CHECK(memcmp(q->gap, want_gap, sizeof want_gap) == 0);
        CHECK(memcmp(q->row_ptr, want_rp, sizeof want_rp) == 0);
        const int8_t *v = q->val;
        CHECK(abs(v[0] - 64) <= 1);
        CHECK_EQ(v[1], 0);
        CHECK_EQ(v[2], -127);
        CHECK_EQ(v[3], 0);
        CHECK_EQ(v[10], 127);
        float *d = malloc(sizeof(float) * 3 * cols);
        CHECK_OK(sp_qcsr_to_dense(q, d, cols));
        for (int64_t e = 0; e < 3 * cols; e++)
            CHECK(fabsf(d[e] - w[e]) <= 2.0f / 127 / 2 * 1.0001f);
        free(d);
        CHECK_EQ(sp_qcsr_bytes(q), 4 * 4 + 11 + 11 + 3 * 4);
    }
    sp_qcsr_free(q);
    sp_csr_free(c);
    free(w);
}

/* wrap(arrays of q) and compare everything */
static void check_round_trip(const sp_qcsr *q, bool borrow) {
    const void *a[4];
    int64_t n[4];
    for (int k = 0; k < 4; k++) {
        const char *name;
        sp_dtype dt;
        CHECK_OK(sp_qcsr_array(q, k, &name, &dt, &n[k], &a[k]));
    }
    sp_qcsr *b = NULL;
    CHECK_OK(sp_qcsr_wrap(q->rows, q->cols, q->bits, q->group, a[0], n[0], a[1], n[1], a[2], n[2],
                          a[3], n[3], borrow, &b));
    if (!b) return;
    CHECK_EQ(b->nnz, q->nnz);
    CHECK_EQ(b->dense, q->dense);
    CHECK_EQ(b->nscale, q->nscale);
    if (borrow) CHECK(b->row_ptr == q->row_ptr && (!a[2] || b->val == q->val) && (!a[3] || b->scale == q->scale));
    else CHECK(b->row_ptr != q->row_ptr);
    int64_t e = q->rows * q->cols;
    float *d1 = malloc(sizeof(float) * (size_t)(e ? e : 1)), *d2 = malloc(sizeof(float) * (size_t)(e ? e : 1));
    int64_t ld = q->cols ? q->cols : 1;
    CHECK_OK(sp_qcsr_to_dense(q, d1, ld));
    CHECK_OK(sp_qcsr_to_dense(b, d2, ld));
    CHECK(e == 0 || memcmp(d1, d2, sizeof(float) * (size_t)e) == 0);
    free(d1), free(d2);
    sp_qcsr_free(b);
}

TEST(qcsr_wrap_round_trips_copy_and_borrow) {
    sp_rng r;
    sp_rng_init(&r, 12, 0);
    const int64_t shapes[][2] = {{0, 0}, {3, 0}, {0, 5}, {5, 7}, {9, 600}, {4, 1}};
    const double dens[] = {0.0, 0.3, 1.0};
    const int cfg[][2] = {{8, 0}, {4, 3}, {4, 32}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int di = 0; di < 3; di++)
            for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++)
                for (int dl = 0; dl < 2; dl++) {
                    int64_t rows = shapes[s][0], cols = shapes[s][1];
                    float *w = rand_weight(rows, cols, dens[di], &r);
                    sp_qcsr *q = NULL;
                    CHECK_OK(sp_qcsr_from_dense(rows, cols, w, cols ? cols : 1, NULL, dl,
                                                cfg[c][0], cfg[c][1], &q));
                    if (q) check_round_trip(q, false), check_round_trip(q, true);
                    sp_qcsr_free(q);
                    free(w);
                }
}

TEST(qcsr_from_csr_and_from_dense_with_mask_agree) {
    sp_rng r;
    sp_rng_init(&r, 13, 0);
    const int64_t rows = 20, cols = 300;
    float *w = rand_weight(rows, cols, 0.3, &r);
    w[5] = 0.0f; /* an explicit zero kept by the mask */
    sp_mask *m = NULL;
    CHECK_OK(sp_mask_from_dense(rows, cols, w, cols, &m));
    if (m) sp_mask_set(m, 0, 5, true);
    sp_csr *c = NULL;
    CHECK_OK(sp_csr_from_dense(rows, cols, w, cols, m, 0, &c));
    sp_qcsr *a = NULL, *b = NULL;
    CHECK_OK(sp_qcsr_from_csr(c, 4, 8, &a));
    CHECK_OK(sp_qcsr_from_dense(rows, cols, w, cols, m, false, 4, 8, &b));
    if (a && b) {
        CHECK_EQ(a->nnz, b->nnz);
        CHECK(memcmp(a->gap, b->gap, (size_t)a->nnz) == 0);
        CHECK(memcmp(a->val, b->val, (size_t)(a->nnz + 1) / 2) == 0);
        CHECK(memcmp(a->scale, b->scale, sizeof(float) * (size_t)a->nscale) == 0);
    }
    sp_qcsr_free(b);
    b = NULL;
    CHECK_STATUS(sp_qcsr_from_dense(rows, cols, w, cols, m, true, 8, 0, &b), SP_EINVAL);
    CHECK_STATUS(sp_qcsr_from_csr(c, 5, 0, &b), SP_EINVAL);
    CHECK_STATUS(sp_qcsr_from_csr(c, 4, 0, &b), SP_EINVAL);
    CHECK_STATUS(sp_qcsr_from_csr(c, 4, 4097, &b), SP_EINVAL);
    w[7] = NAN;
    CHECK_STATUS(sp_qcsr_from_dense(rows, cols, w, cols, NULL, false, 8, 0, &b), SP_EFORMAT);
    CHECK(b == NULL);
    sp_qcsr_free(a);
    sp_mask_free(m);
    sp_csr_free(c);
    free(w);
}

/* ---- wrap catalogue ---------------------------------------------------------------------- */

typedef struct wcase {
    const char *name;
    int64_t rows, cols;
    int bits, group;
    int32_t rp[5];
    int64_t nrp;
    uint8_t gap[8];
    int64_t ngap;
    uint8_t val[8];
    int64_t nval;
    float scale[4];
    int64_t nscale;
    sp_status want;
    const char *msg; /* substring of sp_last_error() */
} wcase;

TEST(qcsr_wrap_refuses_malformed_arrays) {
    /* a valid base: 2 x 10, rows {1, 4} and {9}, bits 8 */
    const wcase base = {"valid", 2, 10, 8, 0, {0, 2, 3}, 3, {1, 3, 9}, 3, {5, 0xF9, 127}, 3,
                        {0.5f, 1.0f}, 2, SP_OK, ""};
    wcase cs[32];
    int n = 0;
#define CASE(nm, want_, msg_, ...)                                                              \
    do {                                                                                        \
        wcase c_ = base;                                                                        \
        c_.name = nm, c_.want = want_, c_.msg = msg_;                                           \
        __VA_ARGS__;                                                                            \
        cs[n++] = c_;                                                                           \
    } while (0)
    CASE("valid", SP_OK, "", (void)0);
    CASE("negative rows", SP_EINVAL, "shape -1 x 10", c_.rows = -1);
    CASE("negative cols", SP_EINVAL, "shape 2 x -3", c_.cols = -3);
    CASE("bits 5", SP_EINVAL, "bits 5", c_.bits = 5);
    CASE("bits 8 with a group", SP_EINVAL, "group 32 with bits 8", c_.group = 32);
    CASE("bits 4 group 0", SP_EINVAL, "group 0 outside [1, 4096]", c_.bits = 4, c_.group = 0);
    CASE("bits 4 group 5000", SP_EINVAL, "group 5000 outside", c_.bits = 4, c_.group = 5000);
    CASE("row_ptr count", SP_EFORMAT, "row_ptr has 2 entries, expected rows + 1 = 3", c_.nrp = 2);
    CASE("row_ptr[0] nonzero", SP_EFORMAT, "row_ptr[0] = 1", c_.rp[0] = 1);
    CASE("row_ptr decreasing", SP_EFORMAT, "row_ptr[2] = 1 < row_ptr[1] = 2", c_.rp[2] = 1);
    CASE("row too long", SP_EFORMAT, "more than 133143", c_.rp[1] = 200000, c_.rp[2] = 200001);
    CASE("gap count", SP_EFORMAT, "gap has 2 entries, expected nnz = 3", c_.ngap = 2);
    CASE("zero gap inside a row", SP_EFORMAT, "gap[1] = 0 in row 0", c_.gap[1] = 0);
    CASE("column past cols", SP_EFORMAT, "column 10 >= cols 10 at entry 1 of row 0",
         c_.gap[1] = 9);
    CASE("first column past cols", SP_EFORMAT, "column 12 >= cols 10 at entry 2 of row 1",
         c_.gap[2] = 12);
    CASE("dense layout with short rows", SP_EFORMAT, "dense layout (no gap array) but row 0",
         c_.ngap = 0);
    CASE("val count", SP_EFORMAT, "val has 2 entries, expected 3", c_.nval = 2);
    CASE("val -128", SP_EFORMAT, "val[1] = -128 outside [-127, 127]", c_.val[1] = 0x80);
    CASE("scale count", SP_EFORMAT, "scale has 1 entries, expected 2", c_.nscale = 1);
    CASE("scale negative", SP_EFORMAT, "scale[1] = -1", c_.scale[1] = -1.0f);
    CASE("scale NaN", SP_EFORMAT, "scale[0] = nan", c_.scale[0] = NAN);
    CASE("scale infinite", SP_EFORMAT, "scale[1] = inf", c_.scale[1] = INFINITY);
    /* 4-bit: 3 entries -> 2 bytes; group 2 -> row 0: 1 group, row 1: 1 group */
    CASE("4-bit valid", SP_OK, "", c_.bits = 4, c_.group = 2, c_.val[0] = 0x9F, c_.val[1] = 0x03,
         c_.nval = 2);
    CASE("4-bit val count", SP_EFORMAT, "val has 3 entries, expected 2", c_.bits = 4,
         c_.group = 2);
    CASE("4-bit nibble -8", SP_EFORMAT, "4-bit value of entry 1 is -8", c_.bits = 4,
         c_.group = 2, c_.val[0] = 0x81, c_.nval = 2);
    CASE("4-bit pad nibble", SP_EFORMAT, "pad nibble after the last of 3", c_.bits = 4,
         c_.group = 2, c_.val[0] = 0x11, c_.val[1] = 0x21, c_.nval = 2);
    CASE("4-bit scale count", SP_EFORMAT, "scale has 2 entries, expected 3", c_.bits = 4,
         c_.group = 1, c_.val[0] = 0x11, c_.val[1] = 0x01, c_.nval = 2);
    CASE("NULL row_ptr", SP_EINVAL, "row_ptr is NULL", c_.nrp = -7);
    CASE("NULL gap", SP_EINVAL, "gap is NULL", c_.ngap = -7);
    CASE("NULL val", SP_EINVAL, "val is NULL", c_.nval = -7);
    CASE("NULL scale", SP_EINVAL, "scale is NULL", c_.nscale = -7);
#undef CASE
    CHECK(n >= 20);
    for (int i = 0; i < n; i++) {
        const wcase *c = &cs[i];
        /* count -7 means: pass NULL with the right count */
        const int32_t *rp = c->nrp == -7 ? NULL : c->rp;
        const uint8_t *gp = c->ngap == -7 ? NULL : c->gap;
        const void *vp = c->nval == -7 ? NULL : c->val;
        const float *sp = c->nscale == -7 ? NULL : c->scale;
        int64_t nrp = c->nrp == -7 ? 3 : c->nrp, ngap = c->ngap == -7 ? 3 : c->ngap;
        int64_t nval = c->nval == -7 ? 3 : c->nval, nsc = c->nscale == -7 ? 2 : c->nscale;
        for (int borrow = 0; borrow < 2; borrow++) {
            sp_qcsr *q = (sp_qcsr *)&q; /* must be reset to NULL on failure */
            int64_t live = sp_alloc_live();
            sp_clear_error();
            sp_status st = sp_qcsr_wrap(c->rows, c->cols, c->bits, c->group, rp, nrp, gp, ngap,
                                        vp, nval, sp, nsc, borrow, &q);
            CHECK_MSG(st == c->want, "%s: got %s, want %s (%s)", c->name, sp_status_name(st),
                      sp_status_name(c->want), sp_last_error());
            if (st == SP_OK) {
                CHECK_MSG(q != NULL, "%s", c->name);
                sp_qcsr_free(q);
            } else {
                CHECK_MSG(q == NULL, "%s: out not cleared", c->name);
                CHECK_MSG(strstr(sp_last_error(), c->msg) != NULL, "%s: message '%s' lacks '%s'",
                          c->name, sp_last_error(), c->msg);
            }
            CHECK_EQ(sp_alloc_live(), live);
        }
    }
}

/* ---- kernels against the reference -------------------------------------------------------- */

/* Runs every variant of both families on (q, x) and compares with the reference; also the
 * reference against the fp32 product of the dequantized operands. */
static void check_kernels(const sp_qcsr *q, const float *x, int64_t ldx, int64_t batch,
                          float x_scale, const float *bias, sp_act act, const char *what) {
    const sp_kernel_family *fa = sp_kernel_family_get("qact");
    const sp_kernel_family *fm = sp_kernel_family_get("qcsr_spmm");
    CHECK(fa && fm && fa->kernels[0].is_ref && fm->kernels[0].is_ref);
    if (!fa || !fm) return;
    const int64_t rows = q->rows, cols = q->cols, ldq = sp_qcsr_ldq(batch), ldy = batch + 3;
    /* 64 spare bytes past X, as the workspace has (batch 1 reads 4-byte words) */
    const size_t nq = (size_t)(cols * ldq + 64), ny = (size_t)(rows * ldy + 1);
    int8_t *xq_ref = calloc(nq, 1), *xq = malloc(nq);
    float *xs_ref = malloc((size_t)(ldq + 1) * 4), *inv_ref = malloc((size_t)(ldq + 1) * 4);
    float *xs = malloc((size_t)(ldq + 1) * 4), *inv = malloc((size_t)(ldq + 1) * 4);
    float *y_ref = malloc(ny * 4), *y = malloc(ny * 4), *mag = malloc(ny * 4);
    const bool pos = ((sp_qact_fn)fa->kernels[0].fn)(x, ldx, cols, batch, x_scale, xs_ref,
                                                     inv_ref, xq_ref, ldq);
    bool any_neg = false; /* the reference's claim, checked */
    for (int64_t j = 0; j < cols; j++)
        for (int64_t b = 0; b < batch; b++) any_neg |= xq_ref[j * ldq + b] < 0;
    CHECK_MSG(pos == !any_neg, "%s: qact ref says non-negative %d", what, (int)pos);
    for (int v = 1; v < fa->count; v++) {
        if (!sp_kernel_usable(&fa->kernels[v])) continue;
        memset(xq, 0x55, nq);
        const bool p = ((sp_qact_fn)fa->kernels[v].fn)(x, ldx, cols, batch, x_scale, xs, inv, xq, ldq);
        CHECK_MSG(p == pos, "%s: %s says non-negative %d, the reference %d", what,
                  fa->kernels[v].name, (int)p, (int)pos);
        CHECK_MSG(cols * ldq == 0 || memcmp(xq, xq_ref, (size_t)(cols * ldq)) == 0,
                  "%s: %s quantized X differs", what, fa->kernels[v].name);
        CHECK_MSG(batch == 0 || memcmp(xs, xs_ref, sizeof(float) * (size_t)batch) == 0,
                  "%s: %s scales differ", what, fa->kernels[v].name);
    }
    /* reference vs fp32 of the dequantized operands; magnitudes |W| |X| for the tolerance */
    float *wd = malloc(sizeof(float) * (size_t)(rows * cols + 1));
    sp_qcsr_to_dense(q, wd, cols ? cols : 1);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t b = 0; b < batch; b++) {
            double s = bias ? bias[i] : 0.0, m = bias ? fabs(bias[i]) : 0.0;
            for (int64_t j = 0; j < cols; j++) {
                double xv = (double)xq_ref[j * ldq + b] * xs_ref[b];
                s += (double)wd[i * cols + j] * xv, m += fabs((double)wd[i * cols + j] * xv);
            }
            if (act == SP_ACT_RELU && !(s > 0)) s = 0;
            y[i * ldy + b] = (float)s, mag[i * ldy + b] = (float)m;
        }
    sp_tol tol = {1e-6, 1e-5};
    memset(y_ref, 0, ny * 4);
    ((sp_qcsr_spmm_fn)fm->kernels[0].fn)(q, 0, rows, xq_ref, ldq, batch, xs_ref, y_ref, ldy, bias,
                                         act, false);
    for (int64_t i = 0; i < rows; i++) {
        char why[200];
        if (!sp_close(y_ref + i * ldy, y + i * ldy, mag + i * ldy, batch, tol, why, sizeof why))
            sp_test_fail(__FILE__, __LINE__, "%s: ref vs dequantized fp32, row %lld: %s", what,
                         (long long)i, why);
    }
    /* every variant, told the truth about the signs of X, and for non-negative X also told
     * false (always allowed) */
    for (int v = 1; v < fm->count; v++) {
        if (!sp_kernel_usable(&fm->kernels[v])) continue;
        for (int run = 0; run < (pos ? 2 : 1); run++) {
            const bool xpos = run == 0 && pos;
            for (size_t e = 0; e < ny; e++) y[e] = -777.0f;
            ((sp_qcsr_spmm_fn)fm->kernels[v].fn)(q, 0, rows, xq_ref, ldq, batch, xs_ref, y, ldy,
                                                 bias, act, xpos);
            for (int64_t i = 0; i < rows; i++) {
                /* bit-identical: exact int32 sums, then the reference's fp32 scaling order */
                CHECK_MSG(memcmp(y + i * ldy, y_ref + i * ldy, sizeof(float) * (size_t)batch) == 0,
                          "%s: %s (xpos %d) row %lld differs from the reference", what,
                          fm->kernels[v].name, (int)xpos, (long long)i);
                for (int64_t b = batch; b < ldy; b++)
                    CHECK_MSG(y[i * ldy + b] == -777.0f, "%s: %s wrote past batch", what,
                              fm->kernels[v].name);
            }
        }
    }
    free(xq_ref), free(xq), free(xs_ref), free(inv_ref), free(xs), free(inv);
    free(y_ref), free(y), free(mag), free(wd);
}

TEST(qcsr_kernels_match_reference) {
    sp_rng r;
    sp_rng_init(&r, 14, 0);
    const int64_t shapes[][2] = {{0, 0}, {1, 1}, {3, 5}, {17, 33}, {40, 700}, {9, 1300}};
    /* each AVX2 path: batch 1 (gather), < 16 (narrow), 16 and the 16-column tails of 33, 41,
     * 48, 65, 75, 130 (two quads side by side), 17-32 (one half), 55 and 64 (two halves) */
    const int64_t batches[] = {1, 2, 7, 15, 16, 17, 31, 33, 41, 48, 55, 64, 65, 75, 130};
    const double dens[] = {0.0, 0.08, 0.6, 1.0};
    const int cfg[][2] = {{8, 0}, {4, 32}, {4, 3}, {4, 300}}; /* 300: a group across chunks */
    int runs = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int di = 0; di < 4; di++)
            for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++)
                for (int dl = 0; dl < 2; dl++) {
                    const int64_t rows = shapes[s][0], cols = shapes[s][1];
                    if (dl && dens[di] != 0.6) continue;
                    float *w = rand_weight(rows, cols, dens[di], &r);
                    if (rows > 2 && cols > 0) /* an empty row */
                        memset(w + cols, 0, sizeof(float) * (size_t)cols);
                    sp_qcsr *q = NULL;
                    CHECK_OK(sp_qcsr_from_dense(rows, cols, w, cols ? cols : 1, NULL, dl,
                                                cfg[c][0], cfg[c][1], &q));
                    float *bias = sp_test_fill_new(rows, &r);
                    for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
                        const int64_t batch = batches[bi], ldx = batch + (bi & 1) * 5;
                        if (!q || (rows * cols > 20000 && batch > 65)) continue;
                        float *x = sp_test_fill_new(cols * ldx + 1, &r);
                        if (cols > 1) /* a large outlier and an all-zero sample */
                            x[ldx + 0] = 9.0f;
                        for (int64_t j = 0; j < cols && batch > 1; j++) x[j * ldx + batch - 1] = 0;
                        if ((bi / 4) % 2 == 1) /* non-negative X, as after a ReLU (batches 16-33
                                                  * and 65-130, with and without bias and ReLU) */
                            for (int64_t e = 0; e < cols * ldx; e++) x[e] = fabsf(x[e]);
                        char what[160];
                        const int act = (int)(bi % 2), withb = (int)((bi / 2) % 2);
                        /* a static scale that clamps (batch 1 too: its own contiguous path) */
                        const float xsc = bi % 3 == 2 || (bi == 0 && s % 2) ? 0.02f : 0.0f;
                        snprintf(what, sizeof what, "%lldx%lld d%.2f bits %d g%d dense %d batch %lld",
                                 (long long)rows, (long long)cols, dens[di], cfg[c][0], cfg[c][1],
                                 dl, (long long)batch);
                        check_kernels(q, x, ldx, batch, xsc, withb ? bias : NULL, (sp_act)act, what);
                        runs++;
                        free(x);
                    }
                    free(bias);
                    sp_qcsr_free(q);
                    free(w);
                }
    CHECK(runs > 300);
}

/* A static scale so small that its inverse is infinite (the product accepts any finite scale
 * above 0): every positive x quantizes to 127, and every variant must say, as the reference
 * does, that no value is negative, also for a sample whose length is not a multiple of any
 * vector width (the lanes past its end multiply 0 by infinity). */
TEST(qact_infinite_inverse_keeps_the_sign_flag) {
    const int64_t rows = 3, cols = 37;
    sp_rng r;
    sp_rng_init(&r, 17, 0);
    float *w = rand_weight(rows, cols, 0.5, &r);
    float x[37 * 20];
    for (int64_t e = 0; e < 37 * 20; e++) x[e] = 0.25f + (float)(e % 7);
    sp_qcsr *q = NULL;
    CHECK_OK(sp_qcsr_from_dense(rows, cols, w, cols, NULL, false, 8, 0, &q));
    if (q) {
        check_kernels(q, x, 1, 1, 1e-39f, NULL, SP_ACT_NONE, "infinite inverse, batch 1");
        check_kernels(q, x, 20, 20, 1e-39f, NULL, SP_ACT_NONE, "infinite inverse, batch 20");
    }
    sp_qcsr_free(q);
    free(w);
}

/* The longest row allowed, every weight and activation at full scale: the exact sum comes within
 * 2^31 of overflow, and a variant that shifts signed X by 128 (AVX-512 VNNI) wraps its int32 sums
 * modulo 2^32 on the way. Every variant must still give the reference's bits. */
TEST(qcsr_kernels_longest_row_exact) {
    const int64_t rows = 2, cols = SP_QCSR_MAX_ROW, batch = 20;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    float *x = malloc(sizeof(float) * (size_t)(cols * batch));
    for (int64_t e = 0; e < rows * cols; e++) w[e] = e < cols ? 1.0f : -1.0f;
    for (int64_t e = 0; e < cols * batch; e++) x[e] = 1.0f;
    for (int64_t b = 0; b < batch; b += 2) x[(b * 7) * batch + b] = -1.0f; /* signed X */
    for (int dl = 0; dl < 2; dl++) {
        sp_qcsr *q = NULL;
        CHECK_OK(sp_qcsr_from_dense(rows, cols, w, cols, NULL, dl, 8, 0, &q));
        if (q) check_kernels(q, x, batch, batch, 0.0f, NULL, SP_ACT_NONE, dl ? "longest row, dense layout" : "longest row");
        sp_qcsr_free(q);
    }
    free(w), free(x);
}

/* ---- the public product -------------------------------------------------------------------- */

/* Through the public product, whose tasks hand the kernels tiles of 64 batch columns (and
 * short last tiles on a padded X): bit-identical to the reference run on the whole batch. */
TEST(qcsr_spmm_tiles_match_reference) {
    sp_rng r;
    sp_rng_init(&r, 16, 0);
    const sp_kernel_family *fa = sp_kernel_family_get("qact");
    const sp_kernel_family *fm = sp_kernel_family_get("qcsr_spmm");
    CHECK(fa && fm && fa->kernels[0].is_ref && fm->kernels[0].is_ref);
    if (!fa || !fm) return;
    const int64_t rows = 37, cols = 300, batches[] = {65, 70, 80, 129}; /* 80: a 16-column tile */
    const int cfg[][3] = {{8, 0, 0}, {8, 0, 1}, {4, 32, 0}}; /* bits, group, dense layout */
    float *w = rand_weight(rows, cols, 0.2, &r), *bias = sp_test_fill_new(rows, &r);
    for (size_t bi = 0; bi < 4; bi++)
        for (int c = 0; c < 3; c++) {
            const int64_t batch = batches[bi], ldq = sp_qcsr_ldq(batch), ldy = batch + 1;
            sp_qcsr *q = NULL;
            CHECK_OK(sp_qcsr_from_dense(rows, cols, w, cols, NULL, cfg[c][2], cfg[c][0], cfg[c][1], &q));
            if (!q) continue;
            float *x = sp_test_fill_new(cols * batch, &r);
            if (bi == 1) /* non-negative X: the kernels' unsigned path */
                for (int64_t e = 0; e < cols * batch; e++) x[e] = fabsf(x[e]);
            float *y = malloc(sizeof(float) * (size_t)(rows * ldy));
            float *y_ref = malloc(sizeof(float) * (size_t)(rows * ldy));
            float *xs = malloc(sizeof(float) * (size_t)ldq), *inv = malloc(sizeof(float) * (size_t)ldq);
            int8_t *xq = calloc((size_t)(cols * ldq + 64), 1);
            const size_t wb = sp_qcsr_work_bytes(q, batch);
            void *work = sp_alloc(wb);
            CHECK_OK(sp_qcsr_spmm(q, x, batch, batch, 0.0f, y, ldy, bias, SP_ACT_RELU, work, wb, 2));
            ((sp_qact_fn)fa->kernels[0].fn)(x, batch, cols, batch, 0.0f, xs, inv, xq, ldq);
            ((sp_qcsr_spmm_fn)fm->kernels[0].fn)(q, 0, rows, xq, ldq, batch, xs, y_ref, ldy, bias,
                                                 SP_ACT_RELU, false);
            for (int64_t i = 0; i < rows; i++)
                CHECK_MSG(memcmp(y + i * ldy, y_ref + i * ldy, sizeof(float) * (size_t)batch) == 0,
                          "batch %lld bits %d dense %d: row %lld differs from the reference",
                          (long long)batch, cfg[c][0], cfg[c][2], (long long)i);
            sp_free(work);
            free(x), free(y), free(y_ref), free(xs), free(inv), free(xq);
            sp_qcsr_free(q);
        }
    free(w), free(bias);
}

TEST(qcsr_spmm_checks_arguments_and_is_thread_count_independent) {
    sp_rng r;
    sp_rng_init(&r, 15, 0);
    const int64_t rows = 300, cols = 500, batch = 150, ldx = 151, ldy = 152;
    float *w = rand_weight(rows, cols, 0.1, &r);
    float *x = sp_test_fill_new(cols * ldx, &r), *bias = sp_test_fill_new(rows, &r);
    float *y1 = calloc((size_t)(rows * ldy), 4), *y2 = calloc((size_t)(rows * ldy), 4);
    sp_qcsr *q = NULL;
    CHECK_OK(sp_qcsr_from_dense(rows, cols, w, cols, NULL, false, 8, 0, &q));
    size_t wb = sp_qcsr_work_bytes(q, batch);
    void *work = sp_alloc(wb);
    CHECK(wb >= (size_t)(cols * 160)); /* int8 X, rows padded to 160 */
    CHECK_OK(sp_qcsr_spmm(q, x, ldx, batch, 0.0f, y1, ldy, bias, SP_ACT_RELU, work, wb, 1));
    CHECK_OK(sp_qcsr_spmm(q, x, ldx, batch, 0.0f, y2, ldy, bias, SP_ACT_RELU, work, wb, 2));
    CHECK(memcmp(y1, y2, sizeof(float) * (size_t)(rows * ldy)) == 0);
    /* no allocation in the product */
    int64_t live = sp_alloc_live();
    sp_alloc_fail_after(1);
    CHECK_OK(sp_qcsr_spmm(q, x, ldx, batch, 0.5f, y1, ldy, NULL, SP_ACT_NONE, work, wb, 1));
    sp_alloc_fail_after(0);
    CHECK_EQ(sp_alloc_live(), live);
    /* a static scale equal to the dynamic one of every sample gives the same result */
    float am = 0.0f;
    CHECK_OK(sp_quant_act_absmax(x, ldx, cols, 1, &am));
    CHECK_OK(sp_qcsr_spmm(q, x, ldx, 1, am / 127.0f, y1, ldy, bias, SP_ACT_NONE, work, wb, 1));
    CHECK_OK(sp_qcsr_spmm(q, x, ldx, 1, 0.0f, y2, ldy, bias, SP_ACT_NONE, work, wb, 1));
    for (int64_t i = 0; i < rows; i++) CHECK(fabsf(y1[i * ldy] - y2[i * ldy]) <= 1e-5f * (1 + fabsf(y2[i * ldy])));
    CHECK_STATUS(sp_qcsr_spmm(q, x, ldx, batch, 0.0f, y1, ldy, NULL, SP_ACT_NONE, work, wb - 1, 1), SP_EINVAL);
    CHECK_STATUS(sp_qcsr_spmm(q, x, ldx, batch, 0.0f, y1, ldy, NULL, SP_ACT_NONE, (char *)work + 4, wb, 1), SP_EINVAL);
    CHECK_STATUS(sp_qcsr_spmm(q, x, ldx, batch, NAN, y1, ldy, NULL, SP_ACT_NONE, work, wb, 1), SP_EINVAL);
    CHECK_STATUS(sp_qcsr_spmm(q, x, ldx, batch, INFINITY, y1, ldy, NULL, SP_ACT_NONE, work, wb, 1), SP_EINVAL);
    CHECK_STATUS(sp_qcsr_spmm(q, x, batch - 1, batch, 0.0f, y1, ldy, NULL, SP_ACT_NONE, work, wb, 1), SP_ESHAPE);
    CHECK_STATUS(sp_qcsr_spmm(q, x, ldx, batch, 0.0f, y1, ldy, NULL, (sp_act)7, work, wb, 1), SP_EINVAL);
    CHECK_STATUS(sp_qcsr_spmm(NULL, x, ldx, batch, 0.0f, y1, ldy, NULL, SP_ACT_NONE, work, wb, 1), SP_EINVAL);
    float m = 0.0f;
    x[3] = -42.0f;
    CHECK_OK(sp_quant_act_absmax(x, ldx, cols, batch, &m));
    CHECK(m == 42.0f);
    x[4] = NAN;
    CHECK_STATUS(sp_quant_act_absmax(x, ldx, cols, batch, &m), SP_EFORMAT);
    sp_free(work);
    sp_qcsr_free(q);
    free(w), free(x), free(bias), free(y1), free(y2);
}

TEST(qcsr_survives_allocation_failure) {
    sp_rng r;
    sp_rng_init(&r, 16, 0);
    float *w = rand_weight(6, 400, 0.3, &r);
    sp_qcsr *src = NULL;
    CHECK_OK(sp_qcsr_from_dense(6, 400, w, 400, NULL, false, 4, 4, &src));
    for (int which = 0; which < 3 && src; which++) {
        bool finished = false;
        for (int64_t n = 1; n < 60 && !finished; n++) {
            int64_t live = sp_alloc_live();
            sp_alloc_fail_after(n);
            sp_qcsr *q = NULL;
            sp_status st = SP_OK;
            const void *a[4];
            int64_t c[4];
            for (int k = 0; k < 4; k++) sp_qcsr_array(src, k, NULL, NULL, &c[k], &a[k]);
            switch (which) {
            case 0: st = sp_qcsr_from_dense(6, 400, w, 400, NULL, false, 8, 0, &q); break;
            case 1: st = sp_qcsr_from_dense(6, 400, w, 400, NULL, true, 4, 4, &q); break;
            case 2:
                st = sp_qcsr_wrap(6, 400, 4, 4, a[0], c[0], a[1], c[1], a[2], c[2], a[3], c[3],
                                  false, &q);
                break;
            }
            sp_alloc_fail_after(0);
            if (st == SP_OK) {
                finished = true;
                CHECK_MSG(n > 1, "constructor %d succeeded at the first injected failure", which);
                sp_qcsr_free(q);
            } else {
                CHECK_MSG(st == SP_ENOMEM, "constructor %d, failure %lld: %s", which, (long long)n,
                          sp_status_name(st));
                CHECK(q == NULL);
            }
            CHECK_EQ(sp_alloc_live(), live);
        }
        CHECK_MSG(finished, "constructor %d never succeeded", which);
    }
    sp_qcsr_free(src);
    free(w);
}

TEST(quant_value_rounds_half_to_even_and_clamps) {
    /* the quantizer sp_qcsr and export-c --int8 share */
    CHECK_EQ(sp_quant_value(2.5f, 1.0f, 127), 2);
    CHECK_EQ(sp_quant_value(3.5f, 1.0f, 127), 4);
    CHECK_EQ(sp_quant_value(-2.5f, 1.0f, 127), -2);
    CHECK_EQ(sp_quant_value(0.74f, 0.5f, 127), 1);
    CHECK_EQ(sp_quant_value(1000.0f, 1.0f, 127), 127);
    CHECK_EQ(sp_quant_value(-1000.0f, 1.0f, 127), -127);
    CHECK_EQ(sp_quant_value(9.0f, 1.0f, 7), 7);
    CHECK_EQ(sp_quant_value(-7.4f, 1.0f, 7), -7);
    CHECK_EQ(sp_quant_value(5.0f, 0.0f, 127), 0); /* an all-zero row's scale */
    /* the stored values of a quantized row are exactly these */
    const float w[4] = {1.27f, -0.635f, 0.3175f, 0.0f};
    sp_qcsr *q = NULL;
    CHECK_OK(sp_qcsr_from_dense(1, 4, w, 4, NULL, true, 8, 0, &q));
    if (!q) return;
    const float sc = 1.27f / 127.0f;
    CHECK(q->scale[0] == sc);
    for (int k = 0; k < 4; k++)
        CHECK_EQ(((const int8_t *)q->val)[k], sp_quant_value(w[k], sc, 127));
    sp_qcsr_free(q);
}
