/*
 * test_nm.c - the N:M format: round trips for every pattern in use (and shapes whose last group
 * is partial), construction through a mask, a catalogue of malformed matrices that must each
 * be refused with their own status and a message naming the bad value, and allocation failure
 * in every constructor.
 */
#include <stdlib.h>

#include "test.h"
#include "test_nm.h"

void sp_test_fill_nm(float *d, int64_t rows, int64_t cols, int64_t ld, int32_t n, int32_t m,
                     int kind, sp_rng *r) {
    for (int64_t i = 0; i < rows; i++) {
        memset(d + i * ld, 0, sizeof(float) * (size_t)ld);
        for (int64_t j0 = 0; j0 < cols; j0 += m) {
            int64_t width = SP_TEST_MIN(m, cols - j0);
            int64_t k = kind == SP_NM_FILL_ZERO ? 0
                        : kind == SP_NM_FILL_FULL ? n
                                                  : (int64_t)sp_rng_below(r, (uint64_t)n + 1);
            if (k > width) k = width;
            int perm[32];
            for (int o = 0; o < width; o++) perm[o] = o;
            for (int64_t s = 0; s < k; s++) { /* partial Fisher-Yates: k distinct offsets */
                int64_t t = s + (int64_t)sp_rng_below(r, (uint64_t)(width - s));
                int tmp = perm[s];
                perm[s] = perm[t], perm[t] = tmp;
                float v = 2.0f * sp_rng_uniform(r) - 1.0f;
                d[i * ld + j0 + perm[s]] = v != 0.0f ? v : 0.5f;
            }
        }
    }
}

static const int32_t patterns[][2] = {{2, 4}, {1, 4}, {2, 8}, {1, 1}, {3, 7}, {4, 32}};

TEST(nm_round_trips_dense) {
    sp_rng r;
    sp_rng_init(&r, 5, 0);
    for (size_t p = 0; p < sizeof patterns / sizeof patterns[0]; p++) {
        const int32_t n = patterns[p][0], m = patterns[p][1];
        /* whole groups, and a partial last group of n .. m-1 columns */
        const int64_t col_choices[] = {4 * m, 3 * m + n, 2 * m + (m - 1 > n ? m - 1 : n)};
        for (size_t c = 0; c < 3; c++) {
            for (int kind = SP_NM_FILL_ZERO; kind <= SP_NM_FILL_FULL; kind++) {
                const int64_t rows = 7, cols = col_choices[c], ld = cols + 3;
                float *d = malloc(sizeof(float) * (size_t)(rows * ld));
                float *back = malloc(sizeof(float) * (size_t)(rows * ld));
                sp_test_fill_nm(d, rows, cols, ld, n, m, kind, &r);
                sp_nm *w = NULL;
                CHECK_OK(sp_nm_from_dense(rows, cols, d, ld, NULL, n, m, &w));
                if (!w) {
                    free(d), free(back);
                    continue;
                }
                CHECK_OK(sp_nm_validate(w));
                CHECK_EQ(w->groups, (cols + m - 1) / m);
                CHECK(sp_nm_bytes(w) == (size_t)(rows * w->groups * n) * 5);
                for (int64_t k = 0; k < rows * ld; k++) back[k] = 7.0f; /* ld padding stays */
                CHECK_OK(sp_nm_to_dense(w, back, ld));
                for (int64_t i = 0; i < rows; i++) {
                    for (int64_t j = 0; j < cols; j++)
                        CHECK_MSG(back[i * ld + j] == d[i * ld + j],
                                  "%d:%d cols %lld kind %d at (%lld, %lld)", (int)n, (int)m,
                                  (long long)cols, kind, (long long)i, (long long)j);
                    for (int64_t j = cols; j < ld; j++) CHECK(back[i * ld + j] == 7.0f);
                }
                /* every slot holds the dense value at its column (0 for padding) */
                for (int64_t k = 0; k < rows * w->groups * n; k++) {
                    int64_t i = k / (w->groups * n), g = (k / n) % w->groups;
                    int64_t col = g * m + w->idx[k];
                    CHECK(w->val[k] == d[i * ld + col]);
                }
                sp_nm_free(w);
                free(d), free(back);
            }
        }
    }
}

TEST(nm_pads_groups_with_lowest_free_offsets) {
    /* 2:4, one row: group 0 has one nonzero at 2, group 1 none, group 2 (partial, 3 cols)
     * has one at 0 */
    float d[11] = {0, 0, 5, 0, 0, 0, 0, 0, 6, 0, 0};
    sp_nm *w = NULL;
    CHECK_OK(sp_nm_from_dense(1, 11, d, 11, NULL, 2, 4, &w));
    const uint8_t want_idx[6] = {0, 2, 0, 1, 0, 1};
    const float want_val[6] = {0, 5, 0, 0, 6, 0};
    for (int k = 0; k < 6; k++) {
        CHECK_EQ(w->idx[k], want_idx[k]);
        CHECK(w->val[k] == want_val[k]);
    }
    sp_nm_free(w);
}

TEST(nm_from_dense_with_mask) {
    /* 2x8 at 2:4; the mask keeps a zero at (0, 1), keeps (0, 2) and drops the nonzero (0, 3) */
    float d[16] = {0, 0, 2, 9, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 3, 0};
    sp_mask *mk = NULL;
    CHECK_OK(sp_mask_new(2, 8, &mk));
    sp_mask_set(mk, 0, 1, true);
    sp_mask_set(mk, 0, 2, true);
    sp_mask_set(mk, 1, 6, true);
    sp_nm *w = NULL;
    CHECK_OK(sp_nm_from_dense(2, 8, d, 8, mk, 2, 4, &w));
    CHECK_OK(sp_nm_validate(w));
    float back[16];
    CHECK_OK(sp_nm_to_dense(w, back, 8));
    const float want[16] = {0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0};
    CHECK(!memcmp(back, want, sizeof want));
    CHECK(w->idx[0] == 1 && w->idx[1] == 2); /* the masked zero is a slot of its own */
    sp_nm_free(w);
    /* a mask with three entries in a group is not 2:4, whatever the values */
    sp_mask_set(mk, 1, 0, true);
    sp_mask_set(mk, 1, 1, true);
    sp_mask_set(mk, 1, 3, true);
    CHECK_STATUS(sp_nm_from_dense(2, 8, d, 8, mk, 2, 4, &w), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "row 1 group 0") && strstr(sp_last_error(), "3 masked"));
    CHECK(w == NULL);
    sp_mask *wrong = NULL;
    CHECK_OK(sp_mask_new(2, 9, &wrong));
    CHECK_STATUS(sp_nm_from_dense(2, 8, d, 8, wrong, 2, 4, &w), SP_ESHAPE);
    sp_mask_free(wrong);
    sp_mask_free(mk);
}

TEST(nm_from_dense_refuses_matrices_that_are_not_nm) {
    float d[3 * 12] = {0};
    d[2 * 12 + 4] = 1, d[2 * 12 + 5] = 2, d[2 * 12 + 7] = 3; /* row 2 group 1: 3 nonzeros */
    d[0] = 1, d[1] = 1;
    sp_nm *w = (sp_nm *)(uintptr_t)1;
    CHECK_STATUS(sp_nm_from_dense(3, 12, d, 12, NULL, 2, 4, &w), SP_EFORMAT);
    CHECK_MSG(strstr(sp_last_error(), "row 2 group 1 (columns 4..7) has 3 nonzeros") != NULL,
              "message: %s", sp_last_error());
    CHECK(w == NULL);
    /* the same matrix is 3:4 */
    CHECK_OK(sp_nm_from_dense(3, 12, d, 12, NULL, 3, 4, &w));
    sp_nm_free(w);
}

TEST(nm_constructor_arguments) {
    sp_nm *w = NULL;
    float d[16] = {0};
    struct {
        int64_t rows, cols;
        int32_t n, m;
        sp_status want;
        const char *says;
    } cases[] = {
        {-1, 4, 2, 4, SP_EINVAL, "rows=-1"},
        {2, -4, 2, 4, SP_EINVAL, "cols=-4"},
        {2, 4, 0, 4, SP_EINVAL, "n 0"},
        {2, 4, 5, 4, SP_EINVAL, "n 5"},
        {2, 4, 1, 0, SP_EINVAL, "m 0"},
        {2, 64, 2, 33, SP_EINVAL, "m 33"},
        {2, 5, 2, 4, SP_ESHAPE, "last group of 1 columns"},
        {2, 15, 3, 7, SP_ESHAPE, "fewer than n 3"},
        {INT64_MAX, 1 << 20, 2, 4, SP_EOVERFLOW, "overflows"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sp_clear_error();
        sp_status st = sp_nm_new(cases[i].rows, cases[i].cols, cases[i].n, cases[i].m, &w);
        CHECK_MSG(st == cases[i].want && strstr(sp_last_error(), cases[i].says),
                  "case %zu: %s '%s', want %s '%s'", i, sp_status_name(st), sp_last_error(),
                  sp_status_name(cases[i].want), cases[i].says);
        CHECK(w == NULL);
    }
    CHECK_STATUS(sp_nm_new(2, 4, 2, 4, NULL), SP_EINVAL);
    CHECK_STATUS(sp_nm_from_dense(2, 4, NULL, 4, NULL, 2, 4, &w), SP_EINVAL);
    CHECK_STATUS(sp_nm_from_dense(2, 4, d, 3, NULL, 2, 4, &w), SP_ESHAPE);
    CHECK_STATUS(sp_nm_from_dense(2, 4, d, 4, NULL, 2, 4, NULL), SP_EINVAL);
    CHECK_STATUS(sp_nm_from_dense(2, 5, d, 5, NULL, 2, 4, &w), SP_ESHAPE);
    CHECK_STATUS(sp_nm_from_dense(2, 4, d, 4, NULL, 3, 2, &w), SP_EINVAL);
    CHECK_STATUS(sp_nm_to_dense(NULL, d, 4), SP_EINVAL);
    CHECK(sp_nm_bytes(NULL) == 0);
    sp_nm_free(NULL);
    /* empty shapes are fine, and so is a last group too narrow when there are no rows */
    CHECK_OK(sp_nm_new(0, 0, 2, 4, &w));
    CHECK_OK(sp_nm_validate(w));
    sp_nm_free(w);
    CHECK_OK(sp_nm_new(0, 5, 2, 4, &w));
    CHECK_OK(sp_nm_validate(w));
    sp_nm_free(w);
    CHECK_OK(sp_nm_new(3, 0, 2, 4, &w));
    CHECK_EQ(w->groups, 0);
    CHECK_OK(sp_nm_validate(w));
    CHECK_OK(sp_nm_to_dense(w, d, 0));
    sp_nm_free(w);
    CHECK_OK(sp_nm_from_dense(0, 0, NULL, 0, NULL, 1, 1, &w));
    sp_nm_free(w);
}

/* A malformed N:M matrix: a valid base of 3 rows x 32 columns at 2:4 (offsets 0, 1 in every
 * group), then one field or one offset changed. KEEP leaves a field alone. */
#define KEEP INT64_MIN
typedef struct bad_nm {
    const char *name;
    int64_t rows, cols, n, m, groups; /* overrides, or KEEP */
    int64_t row, group, slot, offset; /* an offset to poke (row KEEP: none) */
    int null_array;                   /* 1: val = NULL, 2: idx = NULL */
    sp_status want;
    const char *says;
} bad_nm;

static const bad_nm catalogue[] = {
    {"offset >= m", KEEP, KEEP, KEEP, KEEP, KEEP, 2, 7, 1, 5, 0, SP_EFORMAT,
     "offset 5 >= m 4 in row 2 group 7"},
    {"offset 255", KEEP, KEEP, KEEP, KEEP, KEEP, 0, 0, 1, 255, 0, SP_EFORMAT, "offset 255 >= m 4"},
    {"offsets decreasing", KEEP, KEEP, KEEP, KEEP, KEEP, 1, 3, 0, 2, 0, SP_EFORMAT,
     "not strictly increasing in row 1 group 3 (1 after 2)"},
    {"duplicate offset", KEEP, KEEP, KEEP, KEEP, KEEP, 2, 0, 1, 0, 0, SP_EFORMAT,
     "not strictly increasing in row 2 group 0 (0 after 0)"},
    {"partial group past cols", KEEP, 30, KEEP, KEEP, KEEP, 1, 7, 1, 2, 0, SP_EFORMAT,
     "column 30 >= cols 30"},
    {"groups too few", KEEP, KEEP, KEEP, KEEP, 7, KEEP, 0, 0, 0, 0, SP_EFORMAT,
     "groups 7 != ceil(cols 32 / m 4) = 8"},
    {"groups too many", KEEP, 28, KEEP, KEEP, KEEP, KEEP, 0, 0, 0, 0, SP_EFORMAT, "groups 8 !="},
    {"last group narrower than n", KEEP, 29, KEEP, KEEP, 8, KEEP, 0, 0, 0, 0, SP_EFORMAT,
     "last group has 1 columns, fewer than n 2"},
    {"n > m", KEEP, KEEP, 5, KEEP, KEEP, KEEP, 0, 0, 0, 0, SP_EINVAL, "n 5 out of range"},
    {"n 0", KEEP, KEEP, 0, KEEP, KEEP, KEEP, 0, 0, 0, 0, SP_EINVAL, "n 0 out of range"},
    {"m > 32", KEEP, KEEP, KEEP, 40, KEEP, KEEP, 0, 0, 0, 0, SP_EINVAL, "m 40 out of range"},
    {"negative rows", -3, KEEP, KEEP, KEEP, KEEP, KEEP, 0, 0, 0, 0, SP_EINVAL, "rows=-3"},
    {"negative cols", KEEP, -1, KEEP, KEEP, KEEP, KEEP, 0, 0, 0, 0, SP_EINVAL, "cols=-1"},
    {"val NULL", KEEP, KEEP, KEEP, KEEP, KEEP, KEEP, 0, 0, 0, 1, SP_EFORMAT, "val is NULL"},
    {"idx NULL", KEEP, KEEP, KEEP, KEEP, KEEP, KEEP, 0, 0, 0, 2, SP_EFORMAT, "idx is NULL"},
};

TEST(nm_validate_rejects_malformed_matrices) {
    for (size_t c = 0; c < sizeof catalogue / sizeof catalogue[0]; c++) {
        const bad_nm *b = &catalogue[c];
        sp_nm *w = NULL;
        CHECK_OK(sp_nm_new(3, 32, 2, 4, &w));
        if (!w) return;
        for (int64_t k = 0; k < 3 * 8 * 2; k++) w->idx[k] = (uint8_t)(k % 2), w->val[k] = 1.0f;
        CHECK_OK(sp_nm_validate(w));
        sp_nm saved = *w;
        if (b->rows != KEEP) w->rows = b->rows;
        if (b->cols != KEEP) w->cols = b->cols;
        if (b->n != KEEP) w->n = (int32_t)b->n;
        if (b->m != KEEP) w->m = (int32_t)b->m;
        if (b->groups != KEEP) w->groups = b->groups;
        if (b->row != KEEP) w->idx[(b->row * 8 + b->group) * 2 + b->slot] = (uint8_t)b->offset;
        if (b->null_array == 1) w->val = NULL;
        if (b->null_array == 2) w->idx = NULL;
        sp_clear_error();
        sp_status st = sp_nm_validate(w);
        CHECK_MSG(st == b->want, "%s: got %s want %s (%s)", b->name, sp_status_name(st),
                  sp_status_name(b->want), sp_last_error());
        CHECK_MSG(strstr(sp_last_error(), b->says) != NULL, "%s: message '%s' lacks '%s'",
                  b->name, sp_last_error(), b->says);
        *w = saved;
        sp_nm_free(w);
    }
    CHECK_STATUS(sp_nm_validate(NULL), SP_EINVAL);
}

/* Every public constructor, failing each allocation in turn: SP_ENOMEM, nothing leaked. */
TEST(nm_survives_allocation_failure) {
    float d[3 * 10] = {1, 0, 2, 0, 0, 0, 3, 0, 4, 0,  /* 2:4 with a partial last group */
                       0, 5, 0, 0, 6, 7, 0, 0, 0, 0,
                       0, 0, 0, 0, 0, 0, 0, 0, 0, 8};
    sp_mask *mk = NULL;
    CHECK_OK(sp_mask_from_dense(3, 10, d, 10, &mk));
    for (int which = 0; which < 3; which++) {
        bool finished = false;
        for (int64_t n = 1; n < 50 && !finished; n++) {
            int64_t live = sp_alloc_live();
            sp_alloc_fail_after(n);
            sp_nm *w = NULL;
            sp_status st = SP_OK;
            switch (which) {
            case 0: st = sp_nm_new(3, 10, 2, 4, &w); break;
            case 1: st = sp_nm_from_dense(3, 10, d, 10, NULL, 2, 4, &w); break;
            case 2: st = sp_nm_from_dense(3, 10, d, 10, mk, 2, 4, &w); break;
            }
            sp_alloc_fail_after(0);
            if (st == SP_OK) {
                finished = true; /* n passed the number of allocations made */
                CHECK_MSG(n > 1, "constructor %d succeeded at the first injected failure", which);
                if (which > 0) CHECK_OK(sp_nm_validate(w)); /* sp_nm_new leaves slots unset */
            } else {
                CHECK_MSG(st == SP_ENOMEM, "constructor %d, failure %lld: %s", which,
                          (long long)n, sp_status_name(st));
                CHECK(w == NULL);
            }
            sp_nm_free(w);
            CHECK_MSG(sp_alloc_live() == live, "constructor %d leaks at failure %lld", which,
                      (long long)n);
        }
        CHECK_MSG(finished, "constructor %d never succeeded", which);
    }
    sp_mask_free(mk);
}
