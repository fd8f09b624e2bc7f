/*
 * csr_spmv.h - the CSR batch-1 row dot product, shared by the scalar, AVX2 and AVX-512 files
 * (each compiles its own copy with its own flags). Internal.
 *
 * Batch 1 reads W once and x at random: the cost is the loads per stored weight. Four partial
 * sums hide the FMA latency, and for 16-bit indices one 64-bit load fetches four column indices
 * (cutting loads per weight from three to 2.25). Measured on Zen 4 this plain loop beats
 * AVX-512/AVX2 gathers (0.51 ms vs 0.65 ms for 4096x4096 at 90%), whose sixteen element loads
 * cost as much as sixteen scalar ones. The compiler must not vectorise it into gathers again.
 */
#ifndef SPARROW_CSR_SPMV_H
#define SPARROW_CSR_SPMV_H

#include <string.h>

#include "kernel_table.h"

#if defined(__clang__)
#define SP_NO_VECTORIZE
#define SP_LOOP_NO_VECTORIZE _Pragma("clang loop vectorize(disable) interleave(disable)")
#else
#define SP_NO_VECTORIZE __attribute__((optimize("no-tree-vectorize")))
#define SP_LOOP_NO_VECTORIZE
#endif

/* sum_k val[k] * x[col(k) * ldx] over entries [k0, k1) of w */
SP_NO_VECTORIZE static float sp_csr_row_dot(const sp_csr *w, int64_t k0, int64_t k1,
                                            const float *x, int64_t ldx) {
    const float *val = w->val;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int64_t k = k0;
    if (w->col_idx16) {
        const uint16_t *ci = w->col_idx16;
        SP_LOOP_NO_VECTORIZE
        for (; k + 4 <= k1; k += 4) {
            uint64_t q;
            memcpy(&q, ci + k, sizeof q); /* four little-endian uint16 indices */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
            s0 += val[k] * x[(int64_t)ci[k] * ldx];
            s1 += val[k + 1] * x[(int64_t)ci[k + 1] * ldx];
            s2 += val[k + 2] * x[(int64_t)ci[k + 2] * ldx];
            s3 += val[k + 3] * x[(int64_t)ci[k + 3] * ldx];
            (void)q;
#else
            s0 += val[k] * x[(int64_t)(q & 0xFFFF) * ldx];
            s1 += val[k + 1] * x[(int64_t)((q >> 16) & 0xFFFF) * ldx];
            s2 += val[k + 2] * x[(int64_t)((q >> 32) & 0xFFFF) * ldx];
            s3 += val[k + 3] * x[(int64_t)(q >> 48) * ldx];
#endif
        }
        for (; k < k1; k++) s0 += val[k] * x[(int64_t)ci[k] * ldx];
    } else {
        const int32_t *ci = w->col_idx;
        SP_LOOP_NO_VECTORIZE
        for (; k + 4 <= k1; k += 4) {
            s0 += val[k] * x[(int64_t)ci[k] * ldx];
            s1 += val[k + 1] * x[(int64_t)ci[k + 1] * ldx];
            s2 += val[k + 2] * x[(int64_t)ci[k + 2] * ldx];
            s3 += val[k + 3] * x[(int64_t)ci[k + 3] * ldx];
        }
        for (; k < k1; k++) s0 += val[k] * x[(int64_t)ci[k] * ldx];
    }
    return (s0 + s1) + (s2 + s3);
}

#endif
