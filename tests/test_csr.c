/*
 * test_csr.c - the CSR format and the mask: round trips, and a catalogue of malformed inputs
 * that must each be refused with their own status and a message naming the bad value.
 */
#include <stdlib.h>

#include "test.h"

TEST(csr_round_trips_dense) {
    sp_rng r;
    sp_rng_init(&r, 3, 0);
    int64_t rows = 13, cols = 70, ld = 75;
    float *d = calloc((size_t)(rows * ld), sizeof(float)), *back = calloc((size_t)(rows * ld), sizeof(float));
    sp_test_fill_sparse(d, rows, ld, 0.3, &r);
    for (unsigned flags = 0; flags <= SP_CSR_IDX32; flags += SP_CSR_IDX32) {
        sp_csr *w = NULL;
        CHECK_OK(sp_csr_from_dense(rows, cols, d, ld, NULL, flags, &w));
        CHECK(w && (flags ? w->col_idx != NULL : w->col_idx16 != NULL));
        CHECK_OK(sp_csr_validate(w));
        CHECK_OK(sp_csr_to_dense(w, back, ld));
        int64_t nnz = 0;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) {
                CHECK(back[i * ld + j] == d[i * ld + j]);
                nnz += d[i * ld + j] != 0;
            }
        CHECK_EQ(w->nnz, nnz);
        CHECK(sp_csr_bytes(w) == (size_t)(rows + 1) * 8 + (size_t)nnz * (flags ? 8 : 6));
        sp_csr_free(w);
    }
    free(d), free(back);
}

TEST(csr_from_dense_with_mask_keeps_explicit_zeros) {
    float d[6] = {1, 0, 2, 0, 0, 3};
    sp_mask *m = NULL;
    CHECK_OK(sp_mask_new(2, 3, &m));
    sp_mask_set(m, 0, 1, true); /* a zero that the mask keeps */
    sp_mask_set(m, 1, 2, true);
    CHECK_EQ(sp_mask_count(m), 2);
    sp_csr *w = NULL;
    CHECK_OK(sp_csr_from_dense(2, 3, d, 3, m, 0, &w));
    CHECK_EQ(w->nnz, 2);
    CHECK_EQ(sp_csr_col(w, 0), 1);
    CHECK(w->val[0] == 0.0f && w->val[1] == 3.0f);
    sp_csr_free(w);
    sp_mask *wrong = NULL;
    CHECK_OK(sp_mask_new(3, 2, &wrong));
    CHECK_STATUS(sp_csr_from_dense(2, 3, d, 3, wrong, 0, &w), SP_ESHAPE);
    sp_mask_free(wrong);
    sp_mask_free(m);
}

TEST(mask_basics) {
    sp_mask *m = NULL;
    CHECK_OK(sp_mask_new(3, 130, &m));
    CHECK_EQ(m->words_per_row, 3);
    sp_mask_set(m, 2, 129, true);
    sp_mask_set(m, 0, 64, true);
    CHECK(sp_mask_get(m, 2, 129) && sp_mask_get(m, 0, 64) && !sp_mask_get(m, 1, 64));
    sp_mask_set(m, 0, 64, false);
    CHECK_EQ(sp_mask_count(m), 1);
    float d[3 * 130];
    for (int i = 0; i < 3 * 130; i++) d[i] = 1.0f;
    CHECK_OK(sp_mask_apply(m, d, 130));
    float sum = 0;
    for (int i = 0; i < 3 * 130; i++) sum += d[i];
    CHECK(sum == 1.0f && d[2 * 130 + 129] == 1.0f);
    sp_mask *m2 = NULL;
    CHECK_OK(sp_mask_from_dense(3, 130, d, 130, &m2));
    CHECK_EQ(sp_mask_count(m2), 1);
    sp_mask_free(m2);
    sp_mask_free(m);
    CHECK_STATUS(sp_mask_new(-1, 3, &m), SP_EINVAL);
    CHECK_STATUS(sp_mask_new(INT64_MAX, INT64_MAX, &m), SP_EOVERFLOW);
    CHECK_STATUS(sp_mask_apply(NULL, d, 3), SP_EINVAL);
}

/* A malformed CSR given as arrays, the status it must get and a word its message must hold. */
typedef struct bad_csr {
    const char *name;
    int64_t rows, cols, nnz;
    int64_t row_ptr[5];
    int32_t col_idx[6];
    sp_status want;
    const char *says;
} bad_csr;

static const bad_csr catalogue[] = {
    {"negative rows", -1, 3, 0, {0}, {0}, SP_EINVAL, "-1"},
    {"negative cols", 2, -3, 0, {0, 0, 0}, {0}, SP_EINVAL, "-3"},
    {"negative nnz", 2, 3, -1, {0, 0, 0}, {0}, SP_EINVAL, "-1"},
    {"row_ptr[0] not 0", 2, 3, 2, {1, 1, 2}, {0, 1}, SP_EFORMAT, "row_ptr[0] = 1"},
    {"row_ptr end != nnz", 2, 3, 3, {0, 1, 2}, {0, 1, 2}, SP_EFORMAT, "nnz = 3"},
    {"row_ptr decreasing", 3, 3, 2, {0, 2, 1, 2}, {0, 1}, SP_EFORMAT, "not monotonic"},
    {"row_ptr beyond nnz", 3, 3, 2, {0, 3, 1, 2}, {0, 1}, SP_EFORMAT, "not monotonic"},
    {"column too large", 2, 3, 2, {0, 1, 2}, {0, 3}, SP_EFORMAT, "column 3"},
    {"negative column", 2, 3, 2, {0, 1, 2}, {0, -4}, SP_EFORMAT, "column -4"},
    {"unsorted columns", 1, 5, 3, {0, 3}, {0, 3, 2}, SP_EFORMAT, "not strictly increasing"},
    {"duplicate column", 1, 5, 2, {0, 2}, {4, 4}, SP_EFORMAT, "not strictly increasing"},
};

TEST(csr_rejects_malformed_arrays) {
    float val[6] = {1, 2, 3, 4, 5, 6};
    for (size_t i = 0; i < sizeof catalogue / sizeof catalogue[0]; i++) {
        const bad_csr *b = &catalogue[i];
        sp_csr *w = (sp_csr *)(uintptr_t)1;
        sp_clear_error();
        sp_status st = sp_csr_from_arrays(b->rows, b->cols, b->nnz, b->row_ptr, b->col_idx, val,
                                          0, &w);
        CHECK_MSG(st == b->want, "%s: got %s want %s (%s)", b->name, sp_status_name(st),
                  sp_status_name(b->want), sp_last_error());
        CHECK_MSG(strstr(sp_last_error(), b->says) != NULL, "%s: message '%s' lacks '%s'",
                  b->name, sp_last_error(), b->says);
        CHECK_MSG(w == NULL, "%s: out not cleared", b->name);
    }
}

TEST(csr_validate_catches_corruption) {
    float d[6] = {1, 0, 2, 0, 3, 0};
    for (unsigned flags = 0; flags <= SP_CSR_IDX32; flags += SP_CSR_IDX32) {
        sp_csr *w = NULL;
        CHECK_OK(sp_csr_from_dense(2, 3, d, 3, NULL, flags, &w));
        CHECK_EQ(w->nnz, 3);
        /* swap the columns of row 0: unsorted */
        if (w->col_idx16) w->col_idx16[0] = 2, w->col_idx16[1] = 0;
        else w->col_idx[0] = 2, w->col_idx[1] = 0;
        CHECK_STATUS(sp_csr_validate(w), SP_EFORMAT);
        CHECK(strstr(sp_last_error(), "row 0") != NULL);
        if (w->col_idx16) w->col_idx16[0] = 0, w->col_idx16[1] = 7;
        else w->col_idx[0] = 0, w->col_idx[1] = 7;
        CHECK_STATUS(sp_csr_validate(w), SP_EFORMAT);
        CHECK(strstr(sp_last_error(), "column 7") != NULL);
        if (w->col_idx16) w->col_idx16[1] = 2;
        else w->col_idx[1] = 2;
        CHECK_OK(sp_csr_validate(w));
        w->row_ptr[1] = 5;
        CHECK_STATUS(sp_csr_validate(w), SP_EFORMAT);
        w->row_ptr[1] = 2;
        w->nnz = 4;
        CHECK_STATUS(sp_csr_validate(w), SP_EFORMAT);
        w->nnz = 3;
        sp_csr_free(w);
    }
    CHECK_STATUS(sp_csr_validate(NULL), SP_EINVAL);
}

TEST(csr_constructor_arguments) {
    sp_csr *w = NULL;
    float d[4] = {0};
    CHECK_STATUS(sp_csr_new(2, 2, 5, 0, &w), SP_EINVAL);              /* nnz > rows*cols */
    CHECK_STATUS(sp_csr_new(1, (int64_t)INT32_MAX + 1, 1, 0, &w), SP_EOVERFLOW);
    CHECK_STATUS(sp_csr_new(2, 2, 1, 0, NULL), SP_EINVAL);
    CHECK_STATUS(sp_csr_from_dense(2, 2, NULL, 2, NULL, 0, &w), SP_EINVAL);
    CHECK_STATUS(sp_csr_from_dense(2, 2, d, 1, NULL, 0, &w), SP_ESHAPE);
    CHECK_STATUS(sp_csr_from_dense(-2, 2, d, 2, NULL, 0, &w), SP_EINVAL);
    CHECK_STATUS(sp_csr_to_dense(NULL, d, 2), SP_EINVAL);
    /* 16-bit indices only up to 65536 columns; wider matrices get int32 automatically */
    CHECK_OK(sp_csr_new(1, 70000, 0, 0, &w));
    CHECK(w->col_idx != NULL && w->col_idx16 == NULL);
    sp_csr_free(w);
    CHECK_OK(sp_csr_new(0, 0, 0, 0, &w));
    CHECK_OK(sp_csr_validate(w));
    sp_csr_free(w);
}

/* Every public constructor, failing each allocation in turn: SP_ENOMEM, nothing leaked. */
TEST(csr_mask_tensor_survive_allocation_failure) {
    float d[12] = {1, 0, 2, 0, 0, 3, 4, 0, 0, 0, 5, 6};
    int64_t rp[4] = {0, 2, 3, 6};
    int32_t ci[6] = {0, 2, 1, 0, 2, 3};
    float v[6] = {1, 2, 3, 4, 5, 6};
    for (int which = 0; which < 6; which++) {
        bool finished = false;
        for (int64_t n = 1; n < 50 && !finished; n++) {
            int64_t live = sp_alloc_live();
            sp_alloc_fail_after(n);
            sp_csr *w = NULL;
            sp_mask *m = NULL;
            sp_status st = SP_OK;
            switch (which) {
            case 0: st = sp_csr_new(3, 4, 6, 0, &w); break;
            case 1: st = sp_csr_from_dense(3, 4, d, 4, NULL, 0, &w); break;
            case 2: st = sp_csr_from_arrays(3, 4, 6, rp, ci, v, SP_CSR_IDX32, &w); break;
            case 3: st = sp_mask_from_dense(3, 4, d, 4, &m); break;
            case 4: st = sp_mask_new(3, 4, &m); break;
            case 5: {
                int64_t shape[2] = {3, 4};
                sp_tensor *t = NULL;
                st = sp_tensor_new(SP_F32, 2, shape, &t);
                CHECK(st == SP_OK || t == NULL);
                sp_tensor_free(t);
                break;
            }
            }
            sp_alloc_fail_after(0);
            if (st == SP_OK) {
                finished = true; /* n passed the number of allocations made */
                CHECK_MSG(n > 1, "constructor %d succeeded at the first injected failure", which);
            } else {
                CHECK_MSG(st == SP_ENOMEM, "constructor %d, failure %lld: %s", which,
                          (long long)n, sp_status_name(st));
                CHECK(w == NULL && m == NULL);
            }
            sp_csr_free(w);
            sp_mask_free(m);
            CHECK_MSG(sp_alloc_live() == live, "constructor %d leaks at failure %lld", which,
                      (long long)n);
        }
        CHECK_MSG(finished, "constructor %d never succeeded", which);
    }
}

TEST(csr_pack_decides_by_density) {
    sp_rng r;
    sp_rng_init(&r, 11, 0);
    float *d = malloc(sizeof(float) * 64 * 64);
    bool packed = true;
    sp_csr *w = NULL;
    sp_test_fill_sparse(d, 64, 64, 0.01, &r); /* segments too short: stays plain */
    CHECK_OK(sp_csr_from_dense(64, 64, d, 64, NULL, 0, &w));
    CHECK_OK(sp_csr_pack(w, &packed));
    CHECK(!packed && w->panels == NULL && sp_csr_packed_bytes(w) == 0);
    sp_csr_free(w);
    sp_test_fill_sparse(d, 64, 64, 0.6, &r); /* dense enough: packed */
    CHECK_OK(sp_csr_from_dense(63, 64, d, 64, NULL, 0, &w));
    CHECK_OK(sp_csr_pack(w, &packed));
    CHECK(packed && w->panels != NULL && sp_csr_packed_bytes(w) > 0);
    CHECK_OK(sp_csr_pack(w, &packed)); /* packing again replaces the old pack */
    sp_csr_unpack(w);
    CHECK(w->panels == NULL);
    sp_csr_unpack(NULL);
    CHECK_STATUS(sp_csr_pack(NULL, &packed), SP_EINVAL);
    /* allocation failure leaves the matrix unpacked and valid, nothing leaked */
    int64_t n = 1;
    for (; n < 50; n++) { /* every allocation of the pack fails once, then it succeeds */
        int64_t live = sp_alloc_live();
        sp_alloc_fail_after(n);
        sp_status st = sp_csr_pack(w, &packed);
        sp_alloc_fail_after(0);
        if (st == SP_OK) break;
        CHECK_EQ(st, SP_ENOMEM);
        CHECK(w->panels == NULL && !packed);
        CHECK_EQ(sp_alloc_live(), live);
    }
    CHECK(n > 1 && n < 50 && packed && w->panels != NULL);
    sp_csr_free(w); /* frees the pack too */
    free(d);
}
