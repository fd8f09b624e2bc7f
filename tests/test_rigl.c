/*
 * test_rigl.c - RigL's growth selection (src/prune/rigl.c): the tiled, running top-k
 * sp_rigl_grow against the whole-gradient reference sp_rigl_grow_ref.
 *
 * Exactness: with small integer dy and x every product and partial sum is an integer below 2^24,
 * so G is exact in float whatever the GEMM's order (BLAS blocking, FMA) and the tiled and
 * reference G are bit-identical: the selections must then match exactly, ties included. With
 * random floats the tile GEMM and the reference loop round differently in the last bits, so the
 * sets are required to be identical only where the k-th and (k+1)-th free |G| (computed in
 * double here) are separated by far more than rounding (1e-4 of the largest sum |dy||x|,
 * against float rounding of about 16 * 6e-8 of it); elsewhere every chosen entry must score at
 * least the reference's k-th minus that rounding bound.
 */
#include <math.h>
#include <stdlib.h>

#include "test.h"

#define CHECK_MSG_HAS(what)                                                                     \
    CHECK_MSG(strstr(sp_last_error(), (what)) != NULL, "message \"%s\" lacks \"%s\"",          \
              sp_last_error(), (what))

/* A (rows x in) CSR whose entries are kept with probability density (values 1). */
static sp_csr *random_pattern(int64_t rows, int64_t in, double density, unsigned flags,
                              sp_rng *r) {
    float *d = calloc((size_t)(rows * in), sizeof(float));
    for (int64_t e = 0; e < rows * in; e++) d[e] = sp_rng_uniform(r) < density ? 1.0f : 0.0f;
    sp_csr *w = NULL;
    CHECK_OK(sp_csr_from_dense(rows, in, d, in, NULL, flags, &w));
    free(d);
    return w;
}

/* n integers uniform in [-m, m] */
static void fill_int(float *p, int64_t n, int m, sp_rng *r) {
    for (int64_t i = 0; i < n; i++) p[i] = (float)((int64_t)sp_rng_below(r, 2 * m + 1) - m);
}

static bool in_pattern(const sp_csr *w, int64_t i, int64_t j) {
    for (int64_t p = w->row_ptr[i]; p < w->row_ptr[i + 1]; p++)
        if (sp_csr_col(w, p) == j) return true;
    return false;
}

/* The k indices are ascending (so unique), in range and outside the pattern. */
static void check_valid(const sp_csr *w, const int64_t *idx, int64_t k, const char *what) {
    for (int64_t i = 0; i < k; i++) {
        CHECK_MSG(idx[i] >= 0 && idx[i] < w->rows * w->cols, "%s: idx[%lld] = %lld out of range",
                  what, (long long)i, (long long)idx[i]);
        if (i > 0)
            CHECK_MSG(idx[i] > idx[i - 1], "%s: idx[%lld] = %lld not above %lld", what,
                      (long long)i, (long long)idx[i], (long long)idx[i - 1]);
        if (idx[i] >= 0 && idx[i] < w->rows * w->cols)
            CHECK_MSG(!in_pattern(w, idx[i] / w->cols, idx[i] % w->cols),
                      "%s: idx[%lld] = %lld is in the pattern", what, (long long)i,
                      (long long)idx[i]);
    }
}

/* Fast path (tile_rows, nthreads) and reference give the same indices and scores, bit for bit. */
static void check_same(const sp_csr *w, const float *dy, const float *x, int64_t cols, int64_t k,
                       int64_t tile_rows, int nthreads) {
    int64_t *a = malloc(sizeof(int64_t) * (size_t)(k + 1)), *b = malloc(sizeof(int64_t) * (size_t)(k + 1));
    float *sa = malloc(sizeof(float) * (size_t)(k + 1)), *sb = malloc(sizeof(float) * (size_t)(k + 1));
    CHECK_OK(sp_rigl_grow(w, dy, x, cols, k, tile_rows, nthreads, a, sa));
    CHECK_OK(sp_rigl_grow_ref(w, dy, x, cols, k, b, sb));
    check_valid(w, a, k, "fast");
    check_valid(w, b, k, "ref");
    int bad = 0;
    for (int64_t i = 0; i < k && bad < 3; i++)
        if (a[i] != b[i] || memcmp(&sa[i], &sb[i], sizeof(float)) != 0) {
            bad++;
            sp_test_fail(__FILE__, __LINE__,
                         "%lld x %lld k %lld tile %lld: [%lld] fast %lld (%g), ref %lld (%g)",
                         (long long)w->rows, (long long)w->cols, (long long)k, (long long)tile_rows,
                         (long long)i, (long long)a[i], (double)sa[i], (long long)b[i],
                         (double)sb[i]);
        }
    free(a);
    free(b);
    free(sa);
    free(sb);
}

TEST(rigl_grow_hand_example) {
    /* w (2 x 3) holds (0, 1); dy = [1; 2], x = [1; -3; 2] with one sample:
     * G = [1 -3 2; 2 -6 4], free |G| by index: 0:1 2:2 3:2 4:6 5:4. k = 3 takes 6, 4 and, of the
     * tied 2s, index 2. */
    sp_csr *w = NULL;
    CHECK_OK(sp_csr_from_arrays(2, 3, 1, (const int64_t[]){0, 1, 1}, (const int32_t[]){1},
                                (const float[]){0.5f}, 0, &w));
    const float dy[2] = {1, 2}, x[3] = {1, -3, 2};
    int64_t idx[5];
    float s[5];
    for (int ref = 0; ref < 2; ref++) {
        memset(idx, 0, sizeof idx);
        CHECK_OK(ref ? sp_rigl_grow_ref(w, dy, x, 1, 3, idx, s)
                     : sp_rigl_grow(w, dy, x, 1, 3, 1, 1, idx, s));
        CHECK(idx[0] == 2 && idx[1] == 4 && idx[2] == 5);
        CHECK(s[0] == 2 && s[1] == 6 && s[2] == 4);
        CHECK_OK(ref ? sp_rigl_grow_ref(w, dy, x, 1, 5, idx, NULL)
                     : sp_rigl_grow(w, dy, x, 1, 5, 0, 1, idx, NULL));
        const int64_t all[5] = {0, 2, 3, 4, 5};
        for (int i = 0; i < 5; i++) CHECK_EQ(idx[i], all[i]);
        CHECK_OK(ref ? sp_rigl_grow_ref(w, dy, x, 1, 0, NULL, NULL)
                     : sp_rigl_grow(w, dy, x, 1, 0, 0, 1, NULL, NULL));
    }
    sp_csr_free(w);
}

TEST(rigl_grow_integer_inputs_match_reference_exactly) {
    sp_rng r;
    sp_rng_init(&r, 2020, 0);
    for (int trial = 0; trial < 6; trial++) {
        const int64_t rows = 7, in = 13, cols = 5;
        sp_csr *w = random_pattern(rows, in, 0.3, trial % 2 ? SP_CSR_IDX32 : 0, &r);
        float dy[7 * 5], x[13 * 5];
        int m = trial < 2 ? 1 : 3; /* values in {-1, 0, 1}: |G| <= 5, ties everywhere */
        fill_int(dy, rows * cols, m, &r);
        fill_int(x, in * cols, m, &r);
        if (trial == 5) memset(dy, 0, sizeof dy); /* G = 0: the lowest free indices win */
        const int64_t nfree = rows * in - w->nnz;
        const int64_t ks[] = {1, 2, 5, 17, nfree / 2, nfree - 1, nfree};
        for (size_t a = 0; a < sizeof ks / sizeof ks[0]; a++)
            for (int t = 0; t < 4; t++) /* 0: the default; 8 > rows */
                check_same(w, dy, x, cols, ks[a], (const int64_t[]){0, 1, 3, 8}[t], 1);
        if (trial == 5) {
            int64_t idx[10];
            CHECK_OK(sp_rigl_grow(w, dy, x, cols, 10, 2, 1, idx, NULL));
            int64_t e = 0;
            for (int i = 0; i < 10; i++, e++) {
                while (in_pattern(w, e / in, e % in)) e++;
                CHECK_EQ(idx[i], e);
            }
        }
        sp_csr_free(w);
    }
    /* A wider layer with an empty pattern and larger integers: still exact (|G| < 2^24). */
    {
        const int64_t rows = 40, in = 70, cols = 9;
        sp_csr *w = random_pattern(rows, in, 0.0, 0, &r);
        float *dy = malloc(sizeof(float) * rows * cols), *x = malloc(sizeof(float) * in * cols);
        fill_int(dy, rows * cols, 20, &r);
        fill_int(x, in * cols, 20, &r);
        for (int64_t k = 1; k <= rows * in; k = k * 3 + 1)
            for (int64_t tile = 0; tile <= 7; tile += 7) check_same(w, dy, x, cols, k, tile, 2);
        check_same(w, dy, x, cols, rows * in, 5, 1);
        free(dy);
        free(x);
        sp_csr_free(w);
    }
}

TEST(rigl_grow_adjacent_floats_match_reference_exactly) {
    /* One sample: G_ij = dy[i] x[j]. dy walks up one ulp at a time from 1 and x holds powers of
     * two (either sign) and signed zeros, so every product is exact and neighbouring |G| differ
     * in the last bit only: thresholds are tested at key distance 1. */
    const int64_t rows = 20, in = 15;
    sp_rng r;
    sp_rng_init(&r, 3, 0);
    sp_csr *w = random_pattern(rows, in, 0.25, 0, &r);
    float dy[20], x[15];
    float v = 1.0f;
    for (int64_t i = 0; i < rows; i++) {
        dy[(i * 7) % rows] = (i % 2) ? -v : v; /* not monotone in the row index */
        v = nextafterf(v, 2.0f);
    }
    for (int64_t j = 0; j < in; j++) x[j] = (j % 2 ? -1.0f : 1.0f) * (float)(1 << (j % 3));
    x[4] = 0.0f;
    x[9] = -0.0f;
    const int64_t nfree = rows * in - w->nnz;
    for (int64_t k = 1; k <= nfree; k += 1 + k / 3)
        for (int t = 0; t < 4; t++) check_same(w, dy, x, 1, k, (const int64_t[]){0, 1, 4, 7}[t], 1);
    check_same(w, dy, x, 1, nfree, 2, 1);
    sp_csr_free(w);
}

static int desc_double(const void *a, const void *b) {
    double p = *(const double *)a, q = *(const double *)b;
    return (p < q) - (p > q);
}

TEST(rigl_grow_random_floats_match_reference_where_separated) {
    const int64_t rows = 64, in = 200, cols = 16, n = rows * in;
    sp_rng r;
    sp_rng_init(&r, 7, 0);
    sp_csr *w = random_pattern(rows, in, 0.1, 0, &r);
    float *dy = sp_test_fill_new(rows * cols, &r), *x = sp_test_fill_new(in * cols, &r);
    /* G and the rounding scale in double */
    double *gd = malloc(sizeof(double) * n), *fs = malloc(sizeof(double) * n), mag = 0;
    int64_t nfree = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < in; j++) {
            double acc = 0, m = 0;
            for (int64_t b = 0; b < cols; b++) {
                acc += (double)dy[i * cols + b] * x[j * cols + b];
                m += fabs((double)dy[i * cols + b] * x[j * cols + b]);
            }
            gd[i * in + j] = fabs(acc);
            if (m > mag) mag = m;
            if (!in_pattern(w, i, j)) fs[nfree++] = fabs(acc);
        }
    qsort(fs, (size_t)nfree, sizeof(double), desc_double);
    const double round_tol = 1e-5 * mag, sep = 1e-4 * mag;
    int64_t *a = malloc(sizeof(int64_t) * n), *b = malloc(sizeof(int64_t) * n);
    float *sa = malloc(sizeof(float) * n), *sb = malloc(sizeof(float) * n);
    int exact = 0;
    const int64_t ks[] = {1, 3, 10, 40, 100, 333, 1000, 2500, 6000, nfree - 1, nfree};
    for (size_t q = 0; q < sizeof ks / sizeof ks[0]; q++) {
        const int64_t k = ks[q];
        for (int64_t tile = 0; tile <= 5; tile += 5) {
            CHECK_OK(sp_rigl_grow(w, dy, x, cols, k, tile, 1, a, sa));
            CHECK_OK(sp_rigl_grow_ref(w, dy, x, cols, k, b, sb));
            check_valid(w, a, k, "fast");
            check_valid(w, b, k, "ref");
            for (int64_t i = 0; i < k; i++) {
                CHECK_MSG(fabs(sa[i] - gd[a[i]]) <= round_tol, "fast score %g vs |G| %g",
                          (double)sa[i], gd[a[i]]);
                CHECK_MSG(fabs(sb[i] - gd[b[i]]) <= round_tol, "ref score %g vs |G| %g",
                          (double)sb[i], gd[b[i]]);
                /* every chosen entry is within rounding of the true top k */
                CHECK_MSG(gd[a[i]] >= fs[k - 1] - round_tol, "k %lld: fast picks %lld, |G| %g < %g",
                          (long long)k, (long long)a[i], gd[a[i]], fs[k - 1]);
                CHECK(gd[b[i]] >= fs[k - 1] - round_tol);
            }
            const bool separated = k == nfree || fs[k - 1] - fs[k] > sep;
            if (separated) {
                exact++;
                bool same = memcmp(a, b, sizeof(int64_t) * k) == 0;
                CHECK_MSG(same, "k %lld tile %lld: separated by %g but the sets differ",
                          (long long)k, (long long)tile, k == nfree ? 0 : fs[k - 1] - fs[k]);
            }
        }
    }
    CHECK_MSG(exact >= 6, "only %d separated cases: the check compared too little", exact);
    free(a);
    free(b);
    free(sa);
    free(sb);
    free(gd);
    free(fs);
    free(dy);
    free(x);
    sp_csr_free(w);
}

TEST(rigl_grow_same_result_on_1_and_2_threads) {
    /* 128 x 300 x 16: a tile GEMM above sparrow's split threshold, so 2 threads really split */
    const int64_t rows = 128, in = 300, cols = 16, k = 700;
    sp_rng r;
    sp_rng_init(&r, 11, 0);
    sp_csr *w = random_pattern(rows, in, 0.05, 0, &r);
    float *dy = sp_test_fill_new(rows * cols, &r), *x = sp_test_fill_new(in * cols, &r);
    int64_t a[700], b[700];
    float sa[700], sb[700];
    const int64_t tiles[] = {0, 32, 7};
    for (int t = 0; t < 3; t++) {
        CHECK_OK(sp_rigl_grow(w, dy, x, cols, k, tiles[t], 1, a, sa));
        CHECK_OK(sp_rigl_grow(w, dy, x, cols, k, tiles[t], 2, b, sb));
        CHECK(memcmp(a, b, sizeof a) == 0);
        CHECK(memcmp(sa, sb, sizeof sa) == 0);
        check_valid(w, a, k, "1 thread");
    }
    free(dy);
    free(x);
    sp_csr_free(w);
}

TEST(rigl_grow_rejects_bad_input) {
    sp_csr *w = NULL;
    CHECK_OK(sp_csr_from_arrays(2, 3, 1, (const int64_t[]){0, 1, 1}, (const int32_t[]){1},
                                (const float[]){0.5f}, 0, &w));
    float dy[2] = {1, 2}, x[3] = {1, -3, 2};
    int64_t idx[6];
    for (int ref = 0; ref < 2; ref++) {
#define GROW(w_, dy_, x_, cols_, k_, idx_)                                                      \
    (ref ? sp_rigl_grow_ref((w_), (dy_), (x_), (cols_), (k_), (idx_), NULL)                     \
         : sp_rigl_grow((w_), (dy_), (x_), (cols_), (k_), 0, 1, (idx_), NULL))
        CHECK_STATUS(GROW(w, dy, x, 1, 6, idx), SP_EINVAL);
        CHECK_MSG_HAS("k 6");
        CHECK_MSG_HAS("5 free");
        CHECK_STATUS(GROW(w, dy, x, 1, -1, idx), SP_EINVAL);
        CHECK_MSG_HAS("k -1 < 0");
        CHECK_STATUS(GROW(NULL, dy, x, 1, 1, idx), SP_EINVAL);
        CHECK_MSG_HAS("w is NULL");
        CHECK_STATUS(GROW(w, NULL, x, 1, 1, idx), SP_EINVAL);
        CHECK_MSG_HAS("dy is NULL");
        CHECK_STATUS(GROW(w, dy, NULL, 1, 1, idx), SP_EINVAL);
        CHECK_MSG_HAS("x is NULL");
        CHECK_STATUS(GROW(w, dy, x, 1, 1, NULL), SP_EINVAL);
        CHECK_MSG_HAS("grow_idx is NULL");
        CHECK_STATUS(GROW(w, dy, x, 0, 1, idx), SP_EINVAL);
        CHECK_MSG_HAS("cols (samples) 0 < 1");
        dy[1] = NAN; /* row 1 of G */
        CHECK_STATUS(GROW(w, dy, x, 1, 1, idx), SP_EINVAL);
        CHECK_MSG_HAS("G (1, 0) is NaN");
        dy[1] = 0;
        x[2] = INFINITY; /* 0 * Inf: G (1, 2) */
        CHECK_STATUS(GROW(w, dy, x, 1, 1, idx), SP_EINVAL);
        CHECK_MSG_HAS("G (1, 2) is NaN");
        x[2] = 2;
        dy[1] = 2;
        int64_t saved = w->row_ptr[1];
        w->row_ptr[1] = 2; /* malformed pattern */
        CHECK_STATUS(GROW(w, dy, x, 1, 1, idx), SP_EFORMAT);
        w->row_ptr[1] = saved;
        CHECK_OK(GROW(w, dy, x, 1, 5, idx));
#undef GROW
    }
    sp_csr_free(w);
}

TEST(rigl_grow_survives_allocation_failure) {
    const int64_t rows = 9, in = 11, cols = 4;
    sp_rng r;
    sp_rng_init(&r, 5, 0);
    sp_csr *w = random_pattern(rows, in, 0.3, 0, &r);
    float dy[9 * 4], x[11 * 4];
    fill_int(dy, rows * cols, 2, &r);
    fill_int(x, in * cols, 2, &r);
    int64_t want[10], got[10];
    CHECK_OK(sp_rigl_grow_ref(w, dy, x, cols, 10, want, NULL));
    for (int which = 0; which < 2; which++) {
        bool finished = false;
        for (int64_t n = 1; n < 50 && !finished; n++) {
            int64_t live = sp_alloc_live();
            sp_alloc_fail_after(n);
            sp_status st = which ? sp_rigl_grow_ref(w, dy, x, cols, 10, got, NULL)
                                 : sp_rigl_grow(w, dy, x, cols, 10, 2, 1, got, NULL);
            sp_alloc_fail_after(0);
            if (st == SP_OK) {
                finished = true;
                CHECK_MSG(n > 1, "function %d succeeded at the first injected failure", which);
                CHECK(memcmp(got, want, sizeof want) == 0);
            } else {
                CHECK_MSG(st == SP_ENOMEM, "function %d, failure %lld: %s", which, (long long)n,
                          sp_status_name(st));
            }
            CHECK_MSG(sp_alloc_live() == live, "function %d leaks at failure %lld", which,
                      (long long)n);
        }
        CHECK_MSG(finished, "function %d never succeeded", which);
    }
    sp_csr_free(w);
}
