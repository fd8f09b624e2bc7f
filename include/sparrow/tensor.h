/*
 * sparrow/tensor.h - dense tensors and dense matrix multiply.
 *
 *     int64_t shape[2] = {784, 64};              // (features, batch)
 *     sp_tensor *x = NULL;
 *     if (sp_tensor_new(SP_F32, 2, shape, &x) != SP_OK) ...
 *     float *p = sp_tensor_f32(x);               // row-major, 64-byte aligned, zero-filled
 *     sp_tensor_free(x);
 *
 * Activations in sparrow are feature-major: a batch of B vectors of length n is an (n, B)
 * row-major matrix, so that Y = W X is the layer product and one weight multiplies a contiguous
 * row of B values (see docs/ARCHITECTURE.md, "Activation layout").
 */
#ifndef SPARROW_TENSOR_H
#define SPARROW_TENSOR_H

#include "sparrow/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sp_dtype {
    SP_F32 = 0,
    SP_I8 = 1,
    SP_I32 = 2,
    SP_BF16 = 3,
    SP_U8 = 4,   /* bytes: column gaps, packed 4-bit values (two per byte), text */
    SP_U16 = 5,  /* compact column indices */
    SP_I64 = 6,  /* row offsets */
    SP_DTYPE_COUNT
} sp_dtype;

/* One row of the dtype table. */
typedef struct sp_dtype_info {
    const char *name; /* "f32" */
    size_t size;      /* bytes per element */
} sp_dtype_info;

/* Traits of dtype t, or NULL if t is not a valid dtype. */
const sp_dtype_info *sp_dtype_get(sp_dtype t);

#define SP_TENSOR_MAX_DIMS 4

typedef struct sp_tensor {
    sp_dtype dtype;
    int ndim;
    int64_t shape[SP_TENSOR_MAX_DIMS];
    int64_t stride[SP_TENSOR_MAX_DIMS]; /* in elements, row-major */
    int64_t numel;
    void *data;                         /* owned, 64-byte aligned */
} sp_tensor;

/* New zero-filled tensor; returns owned *out. SP_EINVAL on a bad dtype/ndim or negative dim,
 * SP_EOVERFLOW if the byte size overflows, SP_ENOMEM. */
sp_status sp_tensor_new(sp_dtype dtype, int ndim, const int64_t *shape, sp_tensor **out);
/* Frees t and its data; accepts NULL. */
void sp_tensor_free(sp_tensor *t);
/* Data as float* (NULL if t is not f32). */
float *sp_tensor_f32(const sp_tensor *t);

/* ---- dense GEMM ---------------------------------------------------------------------------- */

/* C = alpha * op(A) op(B) + beta * C, row-major, op(X) = X or X^T. op(A) is (m, k), op(B) is
 * (k, n), C is (m, n). Uses CBLAS when built with SPARROW_BLAS, else a portable blocked GEMM.
 * nthreads <= 0 means the library default. Returns SP_EINVAL/SP_ESHAPE on bad sizes. */
sp_status sp_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                   int64_t ldc, int nthreads);

/* Name of the dense GEMM backend ("openblas (Cooperlake)", "builtin"). */
const char *sp_gemm_backend(void);

#ifdef __cplusplus
}
#endif
#endif
