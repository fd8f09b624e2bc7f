/*
 * gemm.c - dense SGEMM: CBLAS (OpenBLAS) when built with SPARROW_BLAS, else a portable blocked
 * loop so that the inference path builds with libc and libm alone.
 */
#include <stdio.h>

#include "sparrow/tensor.h"

#include "../core/internal.h"

#if defined(SPARROW_HAVE_CBLAS)
#include <cblas.h>
#endif
#if defined(SPARROW_HAVE_OPENBLAS)
void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);
#endif

static sp_status check_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a,
                            int64_t lda, const float *b, int64_t ldb, const float *c, int64_t ldc) {
    if (m < 0 || n < 0 || k < 0)
        return sp_fail(SP_EINVAL, "sgemm: negative size m=%lld n=%lld k=%lld", (long long)m,
                       (long long)n, (long long)k);
    int64_t a_cols = ta ? m : k, b_cols = tb ? k : n;
    if (lda < SP_MAX(1, a_cols))
        return sp_fail(SP_ESHAPE, "sgemm: lda %lld < %lld", (long long)lda, (long long)a_cols);
    if (ldb < SP_MAX(1, b_cols))
        return sp_fail(SP_ESHAPE, "sgemm: ldb %lld < %lld", (long long)ldb, (long long)b_cols);
    if (ldc < SP_MAX(1, n))
        return sp_fail(SP_ESHAPE, "sgemm: ldc %lld < n %lld", (long long)ldc, (long long)n);
    if ((m && n && !c) || (m && k && !a) || (k && n && !b))
        return sp_fail(SP_EINVAL, "sgemm: NULL matrix");
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX ||
        ldc > INT32_MAX)
        return sp_fail(SP_EOVERFLOW, "sgemm: a size exceeds the 32-bit BLAS interface");
    return SP_OK;
}

#if !defined(SPARROW_HAVE_CBLAS)
typedef struct gemm_ctx {
    bool ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const float *a, *b;
    float *c;
} gemm_ctx;

#define GEMM_ROWS 16 /* rows of C per task: fixed, so results do not depend on thread count */

/* One task: rows [i0, i0+16) of C. Loop order i-p-j keeps the inner loop contiguous in B and C
 * when B is not transposed, which the compiler vectorises. */
static void gemm_task(void *vctx, int64_t task) {
    const gemm_ctx *g = vctx;
    int64_t i0 = task * GEMM_ROWS, i1 = SP_MIN(g->m, i0 + GEMM_ROWS);
    for (int64_t i = i0; i < i1; i++) {
        float *c = g->c + i * g->ldc;
        for (int64_t j = 0; j < g->n; j++) c[j] = g->beta == 0.0f ? 0.0f : g->beta * c[j];
        for (int64_t p = 0; p < g->k; p++) {
            float aip = g->alpha * (g->ta ? g->a[p * g->lda + i] : g->a[i * g->lda + p]);
            if (g->tb) {
                for (int64_t j = 0; j < g->n; j++) c[j] += aip * g->b[j * g->ldb + p];
            } else {
                const float *b = g->b + p * g->ldb;
                for (int64_t j = 0; j < g->n; j++) c[j] += aip * b[j];
            }
        }
    }
}
#endif

#if defined(SPARROW_HAVE_CBLAS)
/* Threads for CBLAS. OpenBLAS's own pool and sparrow's pool would fight over the cores
 * (both spin while waiting), and OpenBLAS's split depends on its thread count. So OpenBLAS
 * runs single-threaded and sparrow splits C into tasks whose boundaries depend only on the
 * sizes: every element is computed by the same single-threaded call whatever the number of
 * threads, and the result is bitwise identical on 1 or 2 threads. */
typedef struct cblas_ctx {
    bool ta, tb, split_m;
    int64_t m, n, k, lda, ldb, ldc, chunk;
    float alpha, beta;
    const float *a, *b;
    float *c;
} cblas_ctx;

static void cblas_task(void *vctx, int64_t task) {
    const cblas_ctx *g = vctx;
    int64_t m = g->m, n = g->n;
    const float *a = g->a, *b = g->b;
    float *c = g->c;
    const int64_t lo = task * g->chunk;
    if (g->split_m) {
        m = SP_MIN(g->chunk, g->m - lo);
        a += g->ta ? lo : lo * g->lda; /* rows lo.. of op(A) */
        c += lo * g->ldc;
    } else {
        n = SP_MIN(g->chunk, g->n - lo);
        b += g->tb ? lo * g->ldb : lo; /* columns lo.. of op(B) */
        c += lo;
    }
    cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)g->k, g->alpha, a, (int)g->lda, b, (int)g->ldb, g->beta, c,
                (int)g->ldc);
}

#define GEMM_SPLIT_MIN_FLOPS (1 << 20) /* below this a single call is faster than any split */
#define GEMM_SPLIT_TASKS 4
#endif

sp_status sp_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                   int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
                   int nthreads) {
    sp_status st = check_gemm(ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
    if (st != SP_OK) return st;
    if (m == 0 || n == 0) return SP_OK;
    if (nthreads <= 0) nthreads = sp_threads_available();
#if defined(SPARROW_HAVE_CBLAS)
#if defined(SPARROW_HAVE_OPENBLAS)
    openblas_set_num_threads(1);
#endif
    cblas_ctx g = {ta, tb, m >= n, m, n, k, lda, ldb, ldc, 0, alpha, beta, a, b, c};
    const int64_t dim = g.split_m ? m : n;
    int64_t tasks = 1;
    g.chunk = dim;
    if (2 * m * n * k >= GEMM_SPLIT_MIN_FLOPS && dim >= 16) {
        /* GEMM_SPLIT_TASKS chunks rounded up to 8 rows/columns: a function of the sizes only. Few,
         * large chunks keep each OpenBLAS call efficient (lenet300 at 2 threads: 8 chunks
         * 71-76k samples/s, 4 chunks 78-80k) */
        g.chunk = ((dim + GEMM_SPLIT_TASKS - 1) / GEMM_SPLIT_TASKS + 7) / 8 * 8;
        tasks = (dim + g.chunk - 1) / g.chunk;
    }
    sp_parallel_for(tasks, nthreads, cblas_task, &g);
#else
    gemm_ctx g = {ta, tb, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c};
    sp_parallel_for((m + GEMM_ROWS - 1) / GEMM_ROWS, nthreads, gemm_task, &g);
#endif
    return SP_OK;
}

const char *sp_gemm_backend(void) {
#if defined(SPARROW_HAVE_OPENBLAS)
    static char name[64];
    snprintf(name, sizeof name, "openblas (%s)", openblas_get_corename());
    return name;
#elif defined(SPARROW_HAVE_CBLAS)
    return "cblas";
#else
    return "builtin";
#endif
}
