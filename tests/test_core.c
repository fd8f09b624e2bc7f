/*
 * test_core.c - status messages, allocator fault injection, RNG known answers and
 * determinism, ISA selection, checked arithmetic, dense tensors and GEMM.
 */
#include <math.h>
#include <stdlib.h>

#include "test.h"

TEST(status_names_and_messages) {
    CHECK(!strcmp(sp_status_name(SP_OK), "SP_OK"));
    CHECK(!strcmp(sp_status_name(SP_EFORMAT), "SP_EFORMAT"));
    CHECK(!strcmp(sp_status_name((sp_status)-99), "SP_E?"));
    sp_tensor *t = NULL;
    int64_t shape[1] = {-3};
    CHECK_STATUS(sp_tensor_new(SP_F32, 1, shape, &t), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "-3") != NULL);
    CHECK(t == NULL);
    sp_clear_error();
    CHECK(sp_last_error()[0] == '\0');
}

TEST(alloc_is_aligned_and_counted) {
    int64_t live = sp_alloc_live();
    void *p = sp_alloc(100), *q = sp_alloc(0);
    CHECK(p && q && p != q);
    CHECK(((uintptr_t)p & 63) == 0);
    CHECK_EQ(sp_alloc_live(), live + 2);
    sp_free(p);
    sp_free(q);
    sp_free(NULL);
    CHECK_EQ(sp_alloc_live(), live);
    CHECK(sp_calloc(SIZE_MAX / 2, 4) == NULL);
}

TEST(alloc_fails_at_the_nth_call_only) {
    sp_alloc_fail_after(2);
    void *a = sp_alloc(8), *b = sp_alloc(8), *c = sp_alloc(8);
    CHECK(a != NULL);
    CHECK(b == NULL);
    CHECK(c != NULL);
    CHECK(strstr(sp_last_error(), "out of memory") != NULL);
    sp_free(a);
    sp_free(c);
    sp_alloc_fail_after(0);
}

TEST(philox_known_answers) {
    /* Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors). */
    struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        sp_philox4x32_10(kat[i].ctr, kat[i].key, out);
        for (int j = 0; j < 4; j++)
            CHECK_MSG(out[j] == kat[i].out[j], "kat %zu word %d: %08x != %08x", i, j, out[j],
                      kat[i].out[j]);
    }
}

TEST(rng_streams_are_reproducible_and_independent) {
    sp_rng a, b, c;
    sp_rng_init(&a, 42, 0);
    sp_rng_init(&b, 42, 0);
    sp_rng_init(&c, 42, 1);
    int same_ac = 0;
    for (int i = 0; i < 1000; i++) {
        uint32_t x = sp_rng_u32(&a), y = sp_rng_u32(&b), z = sp_rng_u32(&c);
        CHECK_EQ(x, y);
        same_ac += x == z;
    }
    CHECK(same_ac < 3);
    /* splitting does not disturb the parent and gives distinct children */
    sp_rng p1, p2;
    sp_rng_init(&p1, 7, 0);
    sp_rng_init(&p2, 7, 0);
    sp_rng k1 = sp_rng_split(&p1, 1), k2 = sp_rng_split(&p1, 2);
    CHECK(sp_rng_u64(&k1) != sp_rng_u64(&k2));
    CHECK_EQ(sp_rng_u64(&p1), sp_rng_u64(&p2));
}

TEST(rng_distributions) {
    sp_rng r;
    sp_rng_init(&r, 1, 0);
    double sum = 0, sum2 = 0, usum = 0;
    int n = 20000, counts[5] = {0};
    for (int i = 0; i < n; i++) {
        float u = sp_rng_uniform(&r);
        CHECK(u >= 0.0f && u < 1.0f);
        usum += u;
        float z = sp_rng_normal(&r);
        CHECK(isfinite(z));
        sum += z, sum2 += (double)z * z;
        counts[sp_rng_below(&r, 5)]++;
    }
    CHECK(fabs(usum / n - 0.5) < 0.01);
    CHECK(fabs(sum / n) < 0.03);
    CHECK(fabs(sum2 / n - 1.0) < 0.05);
    for (int i = 0; i < 5; i++) CHECK(abs(counts[i] - n / 5) < n / 50);
}

TEST(isa_selection_is_consistent) {
    sp_isa a = sp_isa_active();
    CHECK(sp_isa_supported(a));
    CHECK(sp_isa_supported(SP_ISA_SCALAR));
    CHECK((int)a <= (int)sp_isa_best() || sp_isa_best() == SP_ISA_NEON);
    const char *env = getenv("SPARROW_ISA");
    if (env && !strcmp(env, "scalar")) CHECK(a == SP_ISA_SCALAR);
    if (!env) CHECK(a == sp_isa_best());
    CHECK(!strcmp(sp_isa_name(SP_ISA_AVX512), "avx512"));
    /* every family picks a variant that this CPU can run */
    CHECK(sp_kernel_selected("csr_spmm") != NULL);
    CHECK(sp_kernel_selected("no_such_family") == NULL);
}

TEST(checked_arithmetic) {
    int64_t r = 0;
    size_t b = 0;
    CHECK(sp_mul_i64(3, 4, &r) && r == 12);
    CHECK(!sp_mul_i64(INT64_MAX / 2, 3, &r));
    CHECK(!sp_mul_i64(-1, 3, &r));
    CHECK(sp_add_i64(INT64_MAX - 1, 1, &r) && r == INT64_MAX);
    CHECK(!sp_add_i64(INT64_MAX, 1, &r));
    CHECK(sp_bytes(10, 4, &b) && b == 40);
    CHECK(!sp_bytes(-1, 4, &b));
    CHECK(!sp_bytes(INT64_MAX, 8, &b));
}

TEST(tensor_new_validates) {
    sp_tensor *t = NULL;
    int64_t shape[2] = {3, 5};
    CHECK_OK(sp_tensor_new(SP_F32, 2, shape, &t));
    CHECK(t && t->numel == 15 && t->stride[0] == 5 && t->stride[1] == 1);
    CHECK(sp_tensor_f32(t) && sp_tensor_f32(t)[14] == 0.0f);
    sp_tensor_free(t);
    sp_tensor_free(NULL);
    CHECK_STATUS(sp_tensor_new((sp_dtype)99, 2, shape, &t), SP_EINVAL);
    CHECK_STATUS(sp_tensor_new(SP_F32, 5, shape, &t), SP_EINVAL);
    int64_t huge[3] = {INT64_MAX / 4, 8, 2};
    CHECK_STATUS(sp_tensor_new(SP_F32, 3, huge, &t), SP_EOVERFLOW);
    CHECK_STATUS(sp_tensor_new(SP_F32, 2, shape, NULL), SP_EINVAL);
    CHECK(sp_dtype_get(SP_I8)->size == 1 && sp_dtype_get(SP_BF16)->size == 2);
    CHECK(sp_dtype_get((sp_dtype)-1) == NULL);
}

/* C = op(A) op(B) against a triple loop in double. */
static void check_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int threads) {
    sp_rng r;
    sp_rng_init(&r, 5, (uint64_t)(m * 1000 + n * 10 + k));
    int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
    float *a = malloc(sizeof(float) * (size_t)((ta ? k : m) * lda + 1));
    float *b = malloc(sizeof(float) * (size_t)((tb ? n : k) * ldb + 1));
    float *c = malloc(sizeof(float) * (size_t)(m * ldc + 1));
    float *want = malloc(sizeof(float) * (size_t)(m * n + 1));
    float *mag = malloc(sizeof(float) * (size_t)(m * n + 1));
    float *got = malloc(sizeof(float) * (size_t)(m * n + 1));
    sp_test_fill(a, (ta ? k : m) * lda, &r);
    sp_test_fill(b, (tb ? n : k) * ldb, &r);
    sp_test_fill(c, m * ldc, &r);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0, s_abs = 0;
            for (int64_t p = 0; p < k; p++) {
                double av = ta ? a[p * lda + i] : a[i * lda + p];
                double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
                s += av * bv;
                s_abs += fabs(av * bv);
            }
            want[i * n + j] = (float)(2.0 * s + 0.5 * c[i * ldc + j]);
            mag[i * n + j] = (float)(2.0 * s_abs + 0.5 * fabs(c[i * ldc + j]));
        }
    CHECK_OK(sp_sgemm(ta, tb, m, n, k, 2.0f, a, lda, b, ldb, 0.5f, c, ldc, threads));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) got[i * n + j] = c[i * ldc + j];
    CHECK_CLOSE(got, want, mag, m * n, sp_tol_for(SP_F32));
    free(a), free(b), free(c), free(want), free(mag), free(got);
}

TEST(sgemm_matches_reference) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm(ta, tb, 1, 1, 1, 1);
            check_gemm(ta, tb, 17, 33, 9, 2);
            check_gemm(ta, tb, 64, 5, 70, 1);
        }
    CHECK_STATUS(sp_sgemm(false, false, -1, 2, 2, 1, NULL, 2, NULL, 2, 0, NULL, 2, 1), SP_EINVAL);
    float a[4] = {0}, b[4] = {0}, c[4] = {0};
    CHECK_STATUS(sp_sgemm(false, false, 2, 2, 2, 1, a, 1, b, 2, 0, c, 2, 1), SP_ESHAPE);
    CHECK_OK(sp_sgemm(false, false, 0, 2, 2, 1, NULL, 2, b, 2, 0, NULL, 2, 1));
}
