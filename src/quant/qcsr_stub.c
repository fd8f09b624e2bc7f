/* qcsr_stub.c - placeholders while the quantized CSR is being written (replaced shortly). */
#include "sparrow/quant.h"

#include "../core/internal.h"

#define STUB return sp_fail(SP_EUNSUPPORTED, "qcsr: not implemented yet")
sp_status sp_qcsr_from_csr(const sp_csr *w, int bits, int group, sp_qcsr **out) {
    (void)w, (void)bits, (void)group, (void)out;
    STUB;
}
sp_status sp_qcsr_from_dense(int64_t rows, int64_t cols, const float *w, int64_t ld,
                             const sp_mask *mask, bool dense_layout, int bits, int group,
                             sp_qcsr **out) {
    (void)rows, (void)cols, (void)w, (void)ld, (void)mask, (void)dense_layout, (void)bits;
    (void)group, (void)out;
    STUB;
}
sp_status sp_qcsr_wrap(int64_t rows, int64_t cols, int bits, int group, const int32_t *row_ptr,
                       int64_t n_row_ptr, const uint8_t *gap, int64_t n_gap, const void *val,
                       int64_t n_val, const float *scale, int64_t n_scale, bool borrow,
                       sp_qcsr **out) {
    (void)rows, (void)cols, (void)bits, (void)group, (void)row_ptr, (void)n_row_ptr, (void)gap;
    (void)n_gap, (void)val, (void)n_val, (void)scale, (void)n_scale, (void)borrow, (void)out;
    STUB;
}
void sp_qcsr_free(sp_qcsr *q) { (void)q; }
int sp_qcsr_narrays(const sp_qcsr *q) { (void)q; return 4; }
sp_status sp_qcsr_array(const sp_qcsr *q, int k, const char **name, sp_dtype *dtype,
                        int64_t *count, const void **data) {
    (void)q, (void)k, (void)name, (void)dtype, (void)count, (void)data;
    STUB;
}
sp_status sp_qcsr_to_dense(const sp_qcsr *q, float *dense, int64_t ld) {
    (void)q, (void)dense, (void)ld;
    STUB;
}
size_t sp_qcsr_bytes(const sp_qcsr *q) { (void)q; return 0; }
int64_t sp_qcsr_nnz(const sp_qcsr *q) { return q ? q->nnz : 0; }
sp_status sp_quant_act_absmax(const float *x, int64_t ldx, int64_t rows, int64_t batch,
                              float *absmax) {
    (void)x, (void)ldx, (void)rows, (void)batch, (void)absmax;
    STUB;
}
size_t sp_qcsr_work_bytes(const sp_qcsr *w, int64_t batch) { (void)w, (void)batch; return 0; }
sp_status sp_qcsr_spmm(const sp_qcsr *w, const float *x, int64_t ldx, int64_t batch,
                       float x_scale, float *y, int64_t ldy, const float *bias, sp_act act,
                       void *work, size_t work_bytes, int nthreads) {
    (void)w, (void)x, (void)ldx, (void)batch, (void)x_scale, (void)y, (void)ldy, (void)bias;
    (void)act, (void)work, (void)work_bytes, (void)nthreads;
    STUB;
}
