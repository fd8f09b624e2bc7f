/*
 * test_bsr.c - the block-sparse BSR format: round trips over many block shapes (sizes that are
 * not multiples of the block included), masks, a catalogue of malformed matrices that must each
 * be refused with their own status and a message naming the bad value, and allocation failures.
 */
#include <stdlib.h>

#include "core/internal.h"
#include "test.h"

static const int32_t block_shapes[][2] = {{1, 1}, {1, 4}, {4, 1},  {4, 4}, {8, 1},  {16, 1},
                                          {3, 5}, {5, 3}, {64, 1}, {1, 64}, {2, 7}, {64, 64}};
static const int64_t mat_shapes[][2] = {{0, 0},   {0, 5},   {5, 0},   {1, 1},
                                        {13, 70}, {16, 16}, {33, 17}, {70, 130}};

/* Blocks of (rows x cols) tiled by br x bc that hold a nonzero of d (leading dim ld). */
static int64_t count_blocks(const float *d, int64_t rows, int64_t cols, int64_t ld, int64_t br,
                            int64_t bc) {
    int64_t n = 0;
    for (int64_t i0 = 0; i0 < rows; i0 += br)
        for (int64_t j0 = 0; j0 < cols; j0 += bc) {
            bool any = false;
            for (int64_t i = i0; i < SP_MIN(rows, i0 + br); i++)
                for (int64_t j = j0; j < SP_MIN(cols, j0 + bc); j++) any |= d[i * ld + j] != 0;
            n += any;
        }
    return n;
}

TEST(bsr_round_trips_dense_for_many_block_shapes) {
    sp_rng r;
    sp_rng_init(&r, 5, 0);
    for (size_t s = 0; s < sizeof mat_shapes / sizeof mat_shapes[0]; s++) {
        const int64_t rows = mat_shapes[s][0], cols = mat_shapes[s][1], ld = cols + 3;
        float *d = calloc((size_t)(rows * ld + 1), sizeof(float));
        float *back = calloc((size_t)(rows * ld + 1), sizeof(float));
        sp_test_fill_sparse(d, rows, ld, 0.05, &r);
        for (size_t b = 0; b < sizeof block_shapes / sizeof block_shapes[0]; b++) {
            const int32_t br = block_shapes[b][0], bc = block_shapes[b][1];
            sp_bsr *w = NULL;
            CHECK_OK(sp_bsr_from_dense(rows, cols, d, ld, NULL, br, bc, &w));
            if (!w) continue;
            CHECK_OK(sp_bsr_validate(w));
            CHECK_EQ(w->brows, (rows + br - 1) / br);
            CHECK_EQ(w->bcols, (cols + bc - 1) / bc);
            CHECK_EQ(w->nblocks, count_blocks(d, rows, cols, ld, br, bc));
            CHECK(sp_bsr_bytes(w) == (size_t)(w->brows + 1) * 8 + (size_t)w->nblocks * 4 +
                                         (size_t)(w->nblocks * br * bc) * 4);
            for (int64_t i = 0; i < rows * ld; i++) back[i] = -7.0f;
            CHECK_OK(sp_bsr_to_dense(w, back, ld));
            for (int64_t i = 0; i < rows; i++) {
                for (int64_t j = 0; j < ld; j++) {
                    float want = j < cols ? d[i * ld + j] : -7.0f; /* ld padding untouched */
                    CHECK_MSG(back[i * ld + j] == want, "%lldx%lld block %dx%d at (%lld, %lld)",
                              (long long)rows, (long long)cols, br, bc, (long long)i, (long long)j);
                    if (back[i * ld + j] != want) break;
                }
                if (sp_test_failures()) break;
            }
            sp_bsr_free(w);
        }
        free(d), free(back);
    }
}

TEST(bsr_from_dense_with_mask_stores_whole_blocks) {
    /* 3 x 5 with 2 x 2 blocks: block rows {0-1, 2}, block columns {0-1, 2-3, 4} */
    const float d[15] = {1, 0, 0, 0, 2,  /* row 0 */
                         0, 3, 0, 0, 0,  /* row 1 */
                         0, 0, 0, 4, 5}; /* row 2 */
    sp_mask *m = NULL;
    CHECK_OK(sp_mask_new(3, 5, &m));
    sp_mask_set(m, 0, 2, true); /* a zero: block (0, 1) is stored, all zeros */
    sp_mask_set(m, 1, 1, true); /* block (0, 0): keeps 3, drops the unmasked 1 */
    sp_mask_set(m, 2, 4, true); /* block (1, 2): an edge block, one entry inside */
    sp_bsr *w = NULL;
    CHECK_OK(sp_bsr_from_dense(3, 5, d, 5, m, 2, 2, &w));
    CHECK_OK(sp_bsr_validate(w));
    CHECK_EQ(w->nblocks, 3);
    CHECK_EQ(w->row_ptr[1], 2);
    CHECK_EQ(w->col_idx[0], 0);
    CHECK_EQ(w->col_idx[1], 1);
    CHECK_EQ(w->col_idx[2], 2);
    const float want_val[12] = {0, 0, 0, 3, /* block (0,0): the 1 is outside the mask */
                                0, 0, 0, 0, /* block (0,1) */
                                5, 0, 0, 0}; /* block (1,2): padding stays 0 */
    for (int i = 0; i < 12; i++) CHECK_MSG(w->val[i] == want_val[i], "val[%d] = %g", i, w->val[i]);
    sp_bsr_free(w);
    /* without a mask, every block with a nonzero */
    CHECK_OK(sp_bsr_from_dense(3, 5, d, 5, NULL, 2, 2, &w));
    CHECK_EQ(w->nblocks, 4);
    sp_bsr_free(w);
    sp_mask *wrong = NULL;
    CHECK_OK(sp_mask_new(5, 3, &wrong));
    CHECK_STATUS(sp_bsr_from_dense(3, 5, d, 5, wrong, 2, 2, &w), SP_ESHAPE);
    CHECK(w == NULL);
    sp_mask_free(wrong);
    sp_mask_free(m);
}

/* A malformed BSR given as arrays: all values are 0 except val[poison] = 7 (if poison >= 0);
 * null_what names an array set to NULL. The status it must get and a fragment of its message. */
typedef struct bad_bsr {
    const char *name;
    int64_t rows, cols;
    int32_t br, bc;
    int64_t brows, bcols, nblocks;
    int64_t row_ptr[4];
    int32_t col_idx[5];
    int poison;
    const char *null_what;
    sp_status want;
    const char *says;
} bad_bsr;

/* The base case is 4 x 6 in 2 x 2 blocks: brows 2, bcols 3. */
static const bad_bsr catalogue[] = {
    {"negative rows", -1, 6, 2, 2, 0, 3, 0, {0}, {0}, -1, NULL, SP_EINVAL, "rows=-1"},
    {"negative cols", 4, -6, 2, 2, 2, 0, 0, {0, 0, 0}, {0}, -1, NULL, SP_EINVAL, "cols=-6"},
    {"negative nblocks", 4, 6, 2, 2, 2, 3, -2, {0, 0, 0}, {0}, -1, NULL, SP_EINVAL, "nblocks=-2"},
    {"zero block rows", 4, 6, 0, 2, 2, 3, 0, {0, 0, 0}, {0}, -1, NULL, SP_EINVAL, "0x2"},
    {"block too wide", 4, 6, 2, 65, 2, 1, 0, {0, 0, 0}, {0}, -1, NULL, SP_EINVAL, "2x65"},
    {"brows inconsistent", 5, 6, 2, 2, 2, 3, 0, {0, 0, 0}, {0}, -1, NULL, SP_EFORMAT, "brows 2"},
    {"bcols inconsistent", 4, 7, 2, 2, 2, 3, 0, {0, 0, 0}, {0}, -1, NULL, SP_EFORMAT, "bcols 3"},
    {"more blocks than cells", 2, 2, 2, 2, 1, 1, 2, {0, 2}, {0, 0}, -1, NULL, SP_EFORMAT,
     "nblocks 2 > brows*bcols"},
    {"row_ptr NULL", 4, 6, 2, 2, 2, 3, 1, {0, 1, 1}, {0}, -1, "row_ptr", SP_EFORMAT,
     "row_ptr is NULL"},
    {"col_idx NULL", 4, 6, 2, 2, 2, 3, 1, {0, 1, 1}, {0}, -1, "col_idx", SP_EFORMAT,
     "col_idx is NULL"},
    {"val NULL", 4, 6, 2, 2, 2, 3, 1, {0, 1, 1}, {0}, -1, "val", SP_EFORMAT, "val is NULL"},
    {"row_ptr[0] not 0", 4, 6, 2, 2, 2, 3, 2, {1, 1, 2}, {0, 1}, -1, NULL, SP_EFORMAT,
     "row_ptr[0] = 1"},
    {"row_ptr end != nblocks", 4, 6, 2, 2, 2, 3, 3, {0, 1, 2}, {0, 1, 2}, -1, NULL, SP_EFORMAT,
     "row_ptr[2] = 2 != nblocks 3"},
    {"row_ptr decreasing", 6, 6, 2, 2, 3, 3, 2, {0, 2, 1, 2}, {0, 1}, -1, NULL, SP_EFORMAT,
     "not monotonic at block row 1"},
    {"row_ptr beyond nblocks", 4, 6, 2, 2, 2, 3, 2, {0, 3, 2}, {0, 1, 2}, -1, NULL, SP_EFORMAT,
     "not monotonic at block row 0"},
    {"block column too large", 4, 16, 2, 2, 2, 8, 3, {0, 1, 3}, {2, 1, 9}, -1, NULL, SP_EFORMAT,
     "block column 9 >= bcols 8 in block row 1"},
    {"negative block column", 4, 6, 2, 2, 2, 3, 2, {0, 1, 2}, {0, -2}, -1, NULL, SP_EFORMAT,
     "block column -2 < 0 in block row 1"},
    {"unsorted block columns", 4, 6, 2, 2, 2, 3, 3, {0, 3, 3}, {0, 2, 1}, -1, NULL, SP_EFORMAT,
     "not strictly increasing in block row 0 (1 after 2)"},
    {"duplicate block column", 4, 6, 2, 2, 2, 3, 2, {0, 0, 2}, {1, 1}, -1, NULL, SP_EFORMAT,
     "not strictly increasing in block row 1 (1 after 1)"},
    /* 3 x 5 in 2 x 2 blocks: row 3 and column 5 are padding */
    {"nonzero padding row", 3, 5, 2, 2, 2, 3, 2, {0, 1, 2}, {1, 0}, 4 + 2, NULL, SP_EFORMAT,
     "padding entry (1, 0) of block 1 (block row 1, block column 0)"},
    {"nonzero padding column", 3, 5, 2, 2, 2, 3, 2, {0, 1, 2}, {2, 0}, 3, NULL, SP_EFORMAT,
     "padding entry (1, 1) of block 0 (block row 0, block column 2)"},
    {"nonzero padding corner", 3, 5, 2, 2, 2, 3, 1, {0, 0, 1}, {2}, 3, NULL, SP_EFORMAT,
     "padding entry (1, 1) of block 0 (block row 1, block column 2)"},
};

TEST(bsr_validate_rejects_malformed_matrices) {
    for (size_t i = 0; i < sizeof catalogue / sizeof catalogue[0]; i++) {
        const bad_bsr *b = &catalogue[i];
        int64_t row_ptr[4];
        int32_t col_idx[5];
        float val[5 * 4] = {0};
        memcpy(row_ptr, b->row_ptr, sizeof row_ptr);
        memcpy(col_idx, b->col_idx, sizeof col_idx);
        if (b->poison >= 0) val[b->poison] = 7.0f;
        sp_bsr w = {.rows = b->rows, .cols = b->cols, .br = b->br, .bc = b->bc,
                    .brows = b->brows, .bcols = b->bcols, .nblocks = b->nblocks,
                    .row_ptr = row_ptr, .col_idx = col_idx, .val = val};
        if (b->null_what && !strcmp(b->null_what, "row_ptr")) w.row_ptr = NULL;
        if (b->null_what && !strcmp(b->null_what, "col_idx")) w.col_idx = NULL;
        if (b->null_what && !strcmp(b->null_what, "val")) w.val = NULL;
        sp_clear_error();
        sp_status st = sp_bsr_validate(&w);
        CHECK_MSG(st == b->want, "%s: got %s want %s (%s)", b->name, sp_status_name(st),
                  sp_status_name(b->want), sp_last_error());
        CHECK_MSG(strstr(sp_last_error(), b->says) != NULL, "%s: message '%s' lacks '%s'",
                  b->name, sp_last_error(), b->says);
        /* the same arrays with the fault removed are valid (the catalogue tests one rule each) */
        if (b->poison >= 0) {
            val[b->poison] = 0.0f;
            CHECK_MSG(sp_bsr_validate(&w) == SP_OK, "%s without poison: %s", b->name,
                      sp_last_error());
        }
    }
    CHECK_STATUS(sp_bsr_validate(NULL), SP_EINVAL);
}

TEST(bsr_validate_catches_corruption) {
    float d[4 * 6] = {1, 0, 0, 0, 2, 0, /* 4 x 6 in 2 x 3 blocks: all four blocks nonzero */
                      0, 0, 3, 0, 0, 0,
                      0, 4, 0, 0, 0, 5,
                      0, 0, 0, 0, 0, 0};
    sp_bsr *w = NULL;
    CHECK_OK(sp_bsr_from_dense(4, 6, d, 6, NULL, 2, 3, &w));
    CHECK_EQ(w->nblocks, 4);
    w->col_idx[0] = 1, w->col_idx[1] = 0; /* unsorted */
    CHECK_STATUS(sp_bsr_validate(w), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "block row 0") != NULL);
    w->col_idx[0] = 0, w->col_idx[1] = 2;
    CHECK_STATUS(sp_bsr_validate(w), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "block column 2 >= bcols 2") != NULL);
    w->col_idx[1] = 1;
    CHECK_OK(sp_bsr_validate(w));
    w->row_ptr[1] = 5;
    CHECK_STATUS(sp_bsr_validate(w), SP_EFORMAT);
    w->row_ptr[1] = 2;
    w->bcols = 3;
    CHECK_STATUS(sp_bsr_validate(w), SP_EFORMAT);
    w->bcols = 2;
    w->br = 65;
    CHECK_STATUS(sp_bsr_validate(w), SP_EINVAL);
    w->br = 2;
    CHECK_OK(sp_bsr_validate(w));
    sp_bsr_free(w);
}

TEST(bsr_constructor_arguments) {
    sp_bsr *w = NULL;
    float d[4] = {0};
    CHECK_STATUS(sp_bsr_new(2, 2, 1, 1, 1, NULL), SP_EINVAL);
    CHECK_STATUS(sp_bsr_new(-1, 2, 1, 1, 0, &w), SP_EINVAL);
    CHECK_STATUS(sp_bsr_new(4, 4, 2, 2, 5, &w), SP_EINVAL); /* nblocks > 2 x 2 blocks */
    CHECK_STATUS(sp_bsr_new(4, 4, 0, 2, 0, &w), SP_EINVAL);
    CHECK_STATUS(sp_bsr_new(4, 4, 2, 65, 0, &w), SP_EINVAL);
    CHECK_STATUS(sp_bsr_new(1, (int64_t)INT32_MAX + 1, 1, 1, 0, &w), SP_EOVERFLOW);
    CHECK_STATUS(sp_bsr_new((int64_t)1 << 40, (int64_t)1 << 30, 64, 64, (int64_t)1 << 57, &w),
                 SP_EOVERFLOW);
    CHECK(w == NULL);
    CHECK_STATUS(sp_bsr_from_dense(2, 2, NULL, 2, NULL, 1, 1, &w), SP_EINVAL);
    CHECK_STATUS(sp_bsr_from_dense(2, 2, d, 1, NULL, 1, 1, &w), SP_ESHAPE);
    CHECK_STATUS(sp_bsr_from_dense(-2, 2, d, 2, NULL, 1, 1, &w), SP_EINVAL);
    CHECK_STATUS(sp_bsr_from_dense(2, 2, d, 2, NULL, 1, 0, &w), SP_EINVAL);
    CHECK_STATUS(sp_bsr_from_dense(2, 2, d, 2, NULL, 1, 1, NULL), SP_EINVAL);
    CHECK_STATUS(sp_bsr_to_dense(NULL, d, 2), SP_EINVAL);
    CHECK_OK(sp_bsr_new(2, 2, 1, 1, 0, &w));
    CHECK_STATUS(sp_bsr_to_dense(w, d, 1), SP_ESHAPE);
    CHECK_STATUS(sp_bsr_to_dense(w, NULL, 2), SP_EINVAL);
    sp_bsr_free(w);
    CHECK_OK(sp_bsr_new(0, 0, 64, 64, 0, &w));
    CHECK_OK(sp_bsr_validate(w));
    CHECK(sp_bsr_bytes(w) == 8);
    sp_bsr_free(w);
    CHECK(sp_bsr_bytes(NULL) == 0);
    sp_bsr_free(NULL);
}

/* Every public constructor, failing each allocation in turn: SP_ENOMEM, nothing leaked. */
TEST(bsr_survives_allocation_failure) {
    const float d[12] = {1, 0, 2, 0, 0, 3, 4, 0, 0, 0, 5, 6};
    sp_mask *mask = NULL;
    CHECK_OK(sp_mask_from_dense(3, 4, d, 4, &mask));
    for (int which = 0; which < 3; which++) {
        bool finished = false;
        for (int64_t n = 1; n < 50 && !finished; n++) {
            int64_t live = sp_alloc_live();
            sp_alloc_fail_after(n);
            sp_bsr *w = NULL;
            sp_status st = SP_OK;
            switch (which) {
            case 0: st = sp_bsr_new(3, 4, 2, 3, 3, &w); break;
            case 1: st = sp_bsr_from_dense(3, 4, d, 4, NULL, 2, 3, &w); break;
            case 2: st = sp_bsr_from_dense(3, 4, d, 4, mask, 3, 1, &w); break;
            }
            sp_alloc_fail_after(0);
            if (st == SP_OK) {
                finished = true; /* n passed the number of allocations made */
                CHECK_MSG(n > 1, "constructor %d succeeded at the first injected failure", which);
                if (which > 0) CHECK_OK(sp_bsr_validate(w));
            } else {
                CHECK_MSG(st == SP_ENOMEM, "constructor %d, failure %lld: %s", which,
                          (long long)n, sp_status_name(st));
                CHECK(w == NULL);
            }
            sp_bsr_free(w);
            CHECK_MSG(sp_alloc_live() == live, "constructor %d leaks at failure %lld", which,
                      (long long)n);
        }
        CHECK_MSG(finished, "constructor %d never succeeded", which);
    }
    sp_mask_free(mask);
}
