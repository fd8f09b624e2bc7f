/*
 * tolerance.c - the shared numeric comparison and random fills, and the test of the
 * comparison itself.
 */
#include <math.h>
#include <stdlib.h>

#include "test.h"

sp_tol sp_tol_for(sp_dtype dt) {
    switch (dt) {
    case SP_F32: return (sp_tol){1e-6, 2e-5};
    case SP_BF16: return (sp_tol){1e-3, 1e-2};
    case SP_I8:
    case SP_I32: return (sp_tol){0, 0};
    default: return (sp_tol){0, 0};
    }
}

bool sp_close(const float *got, const float *want, const float *mag, int64_t n, sp_tol tol,
              char *why, size_t why_len) {
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        double m = mag ? fabs((double)mag[i]) : fabs(w);
        double bound = tol.atol + tol.rtol * m;
        /* NaN never compares close; "!(x <= bound)" catches it */
        if (!(fabs(g - w) <= bound)) {
            if (why)
                snprintf(why, why_len, "index %lld: got %.9g want %.9g (|diff| %.3g > %.3g)",
                         (long long)i, g, w, fabs(g - w), bound);
            return false;
        }
    }
    return true;
}

void sp_test_fill(float *p, int64_t n, sp_rng *r) {
    for (int64_t i = 0; i < n; i++) p[i] = 2.0f * sp_rng_uniform(r) - 1.0f;
}

void sp_test_fill_sparse(float *p, int64_t rows, int64_t cols, double density, sp_rng *r) {
    for (int64_t i = 0; i < rows * cols; i++) {
        float v = 2.0f * sp_rng_uniform(r) - 1.0f;
        if (v == 0.0f) v = 0.5f;
        p[i] = sp_rng_uniform(r) < density ? v : 0.0f;
    }
}

float *sp_test_fill_new(int64_t n, sp_rng *r) {
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    sp_test_fill(p, n, r);
    return p;
}

float *sp_test_abs_copy(const float *p, int64_t n) {
    float *q = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) q[i] = fabsf(p[i]);
    return q;
}

void sp_test_compare_block(const char *what, const char *kernel, const float *got,
                           const float *want, const float *mag, int64_t rows, int64_t batch,
                           int64_t ld, const float *pad_before) {
    for (int64_t i = 0; i < rows; i++) {
        char why[200];
        if (!sp_close(got + i * ld, want + i * ld, mag + i * ld, batch, sp_tol_for(SP_F32), why,
                      sizeof why)) {
            sp_test_fail(__FILE__, __LINE__, "%s %s row %lld: %s", what, kernel, (long long)i, why);
            return;
        }
        for (int64_t b = batch; b < ld; b++)
            if (memcmp(&got[i * ld + b], &pad_before[i * ld + b], sizeof(float)) != 0) {
                sp_test_fail(__FILE__, __LINE__, "%s %s wrote padding at (%lld, %lld)", what,
                             kernel, (long long)i, (long long)b);
                return;
            }
    }
}

TEST(tolerance_accepts_within_and_rejects_outside) {
    sp_tol t = {1e-6, 1e-4};
    float want[3] = {1.0f, -2.0f, 0.0f};
    float ok[3] = {1.00005f, -2.0001f, 5e-7f};
    float bad[3] = {1.0f, -2.001f, 0.0f};
    CHECK(sp_close(ok, want, NULL, 3, t, NULL, 0));
    char why[200] = "";
    CHECK(!sp_close(bad, want, NULL, 3, t, why, sizeof why));
    CHECK(strstr(why, "index 1") != NULL);
    /* the magnitude widens the bound for cancelled sums */
    float mag[3] = {1.0f, 100.0f, 1.0f};
    CHECK(sp_close(bad, want, mag, 3, t, NULL, 0));
    /* NaN is never close, even to NaN */
    float nan1[1] = {NAN};
    CHECK(!sp_close(nan1, nan1, NULL, 1, t, NULL, 0));
    /* exact dtypes have zero tolerance */
    sp_tol ti = sp_tol_for(SP_I32);
    float a[1] = {3.0f}, b[1] = {3.0f}, c[1] = {4.0f};
    CHECK(sp_close(a, b, NULL, 1, ti, NULL, 0));
    CHECK(!sp_close(a, c, NULL, 1, ti, NULL, 0));
}
