/*
 * sparrow/kernels.h - sparse x dense products for every sparse format.
 *
 * Activations are feature-major: X is (in, batch) and Y is (out, batch), row-major with leading
 * dimensions ldx, ldy >= batch. batch = 1 is a plain vector (SpMV). For a layer y = relu(W x + b):
 *
 *     // W: sp_csr (out x in), x: (in, B), y: (out, B), bias: out floats (or NULL)
 *     sp_status st = sp_csr_spmm(w, x, B, B, y, B, bias, SP_ACT_RELU, nthreads);
 *
 * Backward for the same layer, given dY (out, B):
 *     sp_csr_spmm_t(w, dy, B, B, dx, B, false, nthreads);         // dX = W^T dY      (in, B)
 *     sp_csr_sddmm(w, dy, B, x, B, B, dval, false, nthreads);     // dW = dY X^T at W's nonzeros
 *
 * dval has one entry per stored weight, in the format's own value order (w->val), so an
 * optimizer updates w->val and dval with one loop. `accumulate` adds into the output instead of
 * overwriting it. nthreads <= 0 means all hardware threads; results are bitwise identical for
 * any thread count. The kernel variant (scalar, AVX2, AVX-512, NEON) is chosen once per process
 * from the CPU and SPARROW_ISA. Errors: SP_EINVAL (NULL, batch < 0, bad act), SP_ESHAPE (ld too
 * small). The sparse operand is trusted to be valid (it was validated when built).
 */
#ifndef SPARROW_KERNELS_H
#define SPARROW_KERNELS_H

#include "sparrow/core.h"
#include "sparrow/sparse.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The activation fused into a product's epilogue: y = act(W x + bias). */
typedef enum sp_act {
    SP_ACT_NONE = 0,
    SP_ACT_RELU = 1,
} sp_act;

/* Y = act(W X + bias) */
sp_status sp_csr_spmm(const sp_csr *w, const float *x, int64_t ldx, int64_t batch, float *y,
                      int64_t ldy, const float *bias, sp_act act, int nthreads);
/* dX (+)= W^T dY */
sp_status sp_csr_spmm_t(const sp_csr *w, const float *dy, int64_t lddy, int64_t batch, float *dx,
                        int64_t lddx, bool accumulate, int nthreads);
/* dval (+)= (dY X^T) at W's stored entries */
sp_status sp_csr_sddmm(const sp_csr *w, const float *dy, int64_t lddy, const float *x,
                       int64_t ldx, int64_t batch, float *dval, bool accumulate, int nthreads);
/* Both halves of a CSR layer's backward pass in one sweep over W^T, for layers whose
 * activations do not fit in cache: each row of dY is fetched once for both products.
 * wt is the structure of W^T (in x out; its values are not read), perm[q] the index in W of
 * W^T's entry q (a permutation of [0, nnz), not checked: the caller builds it with wt), wval
 * W's values (in W's order). Computes
 *     dX = W^T dY                         (in, batch), overwritten
 *     dval[perm[q]] (+)= dY[col(q), :] . X[j, :] for every entry q of row j of wt,
 * i.e. sp_csr_spmm_t and sp_csr_sddmm of W, summed in another order. */
sp_status sp_csr_spmm_t_sddmm(const sp_csr *wt, const int64_t *perm, const float *wval,
                              const float *dy, int64_t lddy, const float *x, int64_t ldx,
                              int64_t batch, float *dx, int64_t lddx, float *dval,
                              bool accumulate, int nthreads);

sp_status sp_bsr_spmm(const sp_bsr *w, const float *x, int64_t ldx, int64_t batch, float *y,
                      int64_t ldy, const float *bias, sp_act act, int nthreads);
sp_status sp_bsr_spmm_t(const sp_bsr *w, const float *dy, int64_t lddy, int64_t batch, float *dx,
                        int64_t lddx, bool accumulate, int nthreads);
sp_status sp_bsr_sddmm(const sp_bsr *w, const float *dy, int64_t lddy, const float *x,
                       int64_t ldx, int64_t batch, float *dval, bool accumulate, int nthreads);

sp_status sp_nm_spmm(const sp_nm *w, const float *x, int64_t ldx, int64_t batch, float *y,
                     int64_t ldy, const float *bias, sp_act act, int nthreads);
sp_status sp_nm_spmm_t(const sp_nm *w, const float *dy, int64_t lddy, int64_t batch, float *dx,
                       int64_t lddx, bool accumulate, int nthreads);
sp_status sp_nm_sddmm(const sp_nm *w, const float *dy, int64_t lddy, const float *x, int64_t ldx,
                      int64_t batch, float *dval, bool accumulate, int nthreads);

/* Name of the variant a family runs with now ("avx512"), for logs and benchmarks. family is
 * one of "csr_spmm", "csr_spmm_t", "csr_sddmm", "bsr_spmm", ..., "nm_sddmm"; NULL if unknown. */
const char *sp_kernel_selected(const char *family);

#ifdef __cplusplus
}
#endif
#endif
