/*
 * sparrow/quant.h - quantized sparse weights (int8 and 4-bit CSR) and their product with fp32
 * activations quantized on the fly.
 *
 *     sp_qcsr *q = NULL;
 *     sp_status st = sp_qcsr_from_csr(w, 8, 0, &q);          // int8, one scale per row
 *     size_t wb = sp_qcsr_work_bytes(q, batch);              // once, outside the hot path
 *     void *work = sp_alloc(wb);
 *     st = sp_qcsr_spmm(q, x, ldx, batch, 0.0f, y, ldy, bias, SP_ACT_RELU, work, wb, nthreads);
 *     sp_free(work);
 *     sp_qcsr_free(q);
 *
 * Format (docs/QUANTIZATION.md has the full story). W is (rows x cols) = (out x in), stored row
 * by row; the "stored entries" of row i are k in [row_ptr[i], row_ptr[i+1]). Four flat,
 * fixed-width, little-endian arrays define the matrix, in this order (sp_qcsr_array):
 *
 *   0 "row_ptr"  SP_I32, rows + 1     offsets of each row's stored entries: 0, ..., nnz
 *   1 "gap"      SP_U8,  nnz or 0     column gap of each stored entry: the first entry of a row
 *                                     stores its column, every next one (column - previous
 *                                     column), in [1, 255]. A gap above 255 is bridged by FILLER
 *                                     entries of value 0 (gap 255 each). Count 0 (NULL) = the
 *                                     DENSE layout: every row stores all cols columns in order.
 *   2 "val"      bits 8: SP_I8, nnz   quantized values q in [-127, 127]
 *                bits 4: SP_U8, ceil(nnz / 2) two values per byte, q in [-7, 7] as 4-bit two's
 *                                     complement: entry k is in byte k / 2, LOW nibble for even
 *                                     k, HIGH nibble for odd k (k counts over the whole matrix,
 *                                     so a row may start in a high nibble). The pad nibble of an
 *                                     odd nnz is 0.
 *   3 "scale"    SP_F32              finite, >= 0.
 *                bits 8: rows         one per row: w(i, col(k)) = scale[i] * q[k]
 *                bits 4: sum_i ceil(nnz_i / group): row i's entries are cut into groups of
 *                                     `group` consecutive stored entries (the last may be
 *                                     short); scale index = (groups of rows 0..i-1) +
 *                                     (k - row_ptr[i]) / group.
 *
 * `group` is 0 for bits 8 and in [1, 4096] for bits 4. Nothing else defines the matrix:
 * a loader may hand these arrays to sp_qcsr_wrap as a read-only (64-byte aligned) mapping.
 *
 * Product: y = act(deq(W) * deq(quant(X)) + bias) with X (cols x batch, feature-major, leading
 * dim ldx) quantized per call to int8 values in [-127, 127], symmetric, one scale per
 * SAMPLE (column b of X): dynamic xs[b] = max_j |x[j][b]| / 127, or a static x_scale given by
 * the caller (from calibration, sp_quant_act_absmax). q = round-half-even(x * inv), clamped to
 * [-127, 127], with inv = 127 / max_j |x[j][b]| (dynamic; 0 for an all-zero sample) or
 * 1 / x_scale (static): a multiplication by the reciprocal, not a division. Products are summed EXACTLY in int32 (the constructors and sp_qcsr_wrap refuse
 * rows long enough to overflow), then scaled in fp32:
 *   bits 8: y[i][b] = ((float)acc * scale[i]) * xs[b] (+ bias[i]), then act;
 *   bits 4: f = sum over the row's groups g in order of (float)acc_g * scale_g;
 *           y[i][b] = f * xs[b] (+ bias[i]), then act.
 * Results are bit-identical for any nthreads (work is split by rows and batch tiles only).
 * Inputs X must be finite: a NaN or infinity gives unspecified (but memory-safe) output.
 */
#ifndef SPARROW_QUANT_H
#define SPARROW_QUANT_H

#include "sparrow/core.h"
#include "sparrow/kernels.h"
#include "sparrow/nn.h"
#include "sparrow/sparse.h"
#include "sparrow/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A quantized CSR weight. Fields are read-only for callers; the arrays are owned by the object
 * (or borrowed, see sp_qcsr_wrap). */
typedef struct sp_qcsr {
    int64_t rows, cols;
    int bits;              /* 8 or 4 */
    int group;             /* bits 4: entries per scale group; bits 8: 0 */
    bool dense;            /* dense layout: gap == NULL, every row stores all cols columns */
    int64_t nnz;           /* stored entries, fillers included */
    int64_t nscale;        /* entries of scale */
    const int32_t *row_ptr;/* rows + 1 */
    const uint8_t *gap;    /* nnz, or NULL (dense) */
    const void *val;       /* int8_t[nnz] (bits 8) or uint8_t[(nnz + 1) / 2] (bits 4) */
    const float *scale;    /* nscale */
    /* derived at construction, not part of the format: */
    int64_t *scale_ptr;    /* bits 4: rows + 1 offsets of each row's first scale; else NULL */
    int32_t max_row;       /* most stored entries in a row */
    bool borrowed;         /* arrays are the caller's (sp_qcsr_wrap with borrow) */
    void *own[4];          /* owned arrays to free */
} sp_qcsr;

/* The longest row (stored entries) any quantized matrix may have: keeps the int32 sums exact
 * (133143 * 127 * 127 < 2^31). */
#define SP_QCSR_MAX_ROW 133143

/* Quantizes a CSR weight: bits 8 (group ignored, stored as 0) or 4 (group in [1, 4096]).
 * Keeps exactly W's stored entries (explicit zeros included) and adds fillers for gaps > 255.
 * Per-row (bits 8) or per-group (bits 4) scale = max |w| / qmax (0 for an all-zero row/group),
 * q = round-half-even(w / scale). Borrows w; returns owned *out. SP_EINVAL (bits, group),
 * SP_EFORMAT (non-finite value, row too long), SP_EOVERFLOW, SP_ENOMEM. */
sp_status sp_qcsr_from_csr(const sp_csr *w, int bits, int group, sp_qcsr **out);

/* Quantizes a dense (rows x cols, leading dim ld) matrix. dense_layout: store every entry, no
 * gap array (mask must then be NULL). Otherwise mask NULL stores the nonzero entries, a mask
 * (same shape) exactly its set entries. Borrows w and mask; returns owned *out. */
sp_status sp_qcsr_from_dense(int64_t rows, int64_t cols, const float *w, int64_t ld,
                             const sp_mask *mask, bool dense_layout, int bits, int group,
                             sp_qcsr **out);

/* Builds a matrix from its four arrays (layout above; gap NULL with n_gap 0 = dense layout).
 * Validates EVERY invariant before keeping anything (sizes, bits/group, counts consistent with
 * them, row_ptr from 0 non-decreasing to nnz, columns < cols and strictly increasing, values in
 * range, the odd pad nibble 0, scales finite and >= 0, rows not longer than SP_QCSR_MAX_ROW) and
 * returns SP_EFORMAT (SP_EINVAL for a bad size or bits/group) with a message naming the bad
 * value. borrow: the arrays are used in place, never written or freed, and must outlive *out;
 * else they are copied. Returns owned *out. */
sp_status sp_qcsr_wrap(int64_t rows, int64_t cols, int bits, int group,
                       const int32_t *row_ptr, int64_t n_row_ptr,
                       const uint8_t *gap, int64_t n_gap,
                       const void *val, int64_t n_val,
                       const float *scale, int64_t n_scale,
                       bool borrow, sp_qcsr **out);

/* Frees q (and its owned arrays); accepts NULL. */
void sp_qcsr_free(sp_qcsr *q);

/* Number of arrays (always 4) and array k in sp_qcsr_wrap's order: name ("row_ptr", "gap",
 * "val", "scale"), dtype, element count and data (NULL when count is 0). Any output may be
 * NULL. SP_EINVAL for a bad k. The data are borrowed from q. */
int sp_qcsr_narrays(const sp_qcsr *q);
sp_status sp_qcsr_array(const sp_qcsr *q, int k, const char **name, sp_dtype *dtype,
                        int64_t *count, const void **data);

/* The weight quantizer of sp_qcsr (exporters use it to quantize alike): a block of values
 * (a row for 8 bits, a group for 4) has the symmetric scale max |v| / qmax (qmax 127 or 7; 0
 * for an all-zero block), and each value v becomes clamp(round-half-even(v / scale), -qmax,
 * qmax), in float arithmetic; 0 when the scale is 0. */
int sp_quant_value(float v, float scale, int qmax);

/* Dequantized W into dense (rows x cols, leading dim ld), zeros elsewhere. */
sp_status sp_qcsr_to_dense(const sp_qcsr *q, float *dense, int64_t ld);
/* Bytes of the four arrays (what the model file stores). */
size_t sp_qcsr_bytes(const sp_qcsr *q);
/* Stored entries, fillers included. */
int64_t sp_qcsr_nnz(const sp_qcsr *q);

/* Calibration of a static activation scale: *absmax = max(*absmax, max |x[j][b]|) over the
 * rows x batch block of x (leading dim ldx). The caller
 * starts with *absmax = 0 and may call it over many batches; the static scale is then
 * absmax / 127. SP_EINVAL/SP_ESHAPE on bad arguments, SP_EFORMAT on a non-finite x. */
sp_status sp_quant_act_absmax(const float *x, int64_t ldx, int64_t rows, int64_t batch,
                              float *absmax);

/* Workspace bytes sp_qcsr_spmm needs for this batch (the quantized X and its scales). */
size_t sp_qcsr_work_bytes(const sp_qcsr *w, int64_t batch);

/* y (rows x batch, ldy) = act(deq(W) quant(X) + bias), X (cols x batch, ldx). x_scale <= 0:
 * dynamic per-sample scales; > 0 (finite): static scale for every sample. work: at least
 * sp_qcsr_work_bytes(w, batch) bytes, 64-byte aligned (sp_alloc); nothing is allocated here.
 * bias may be NULL. nthreads <= 0 uses every core. SP_EINVAL, SP_ESHAPE. */
sp_status sp_qcsr_spmm(const sp_qcsr *w, const float *x, int64_t ldx, int64_t batch,
                       float x_scale, float *y, int64_t ldy, const float *bias, sp_act act,
                       void *work, size_t work_bytes, int nthreads);

/* ---- quantizing a model ------------------------------------------------------------------- *
 *     sp_quant_opts o = {.bits = 8, .calib_x = x, .calib_n = 1024};   // x: (features, 1024)
 *     sp_model *qm = NULL;
 *     if (sp_model_quantize(m, &o, &qm) == SP_OK) ... sp_checkpoint_save(path, qm, ...)
 */
typedef struct sp_quant_opts {
    int bits;              /* 8 or 4 */
    int group;             /* bits 4: stored entries per scale (0: 32) */
    const float *calib_x;  /* calibration inputs, feature-major (features, calib_n), or NULL:
                            * activations get dynamic per-sample scales at run time */
    int64_t calib_n;       /* samples in calib_x */
    int64_t calib_batch;   /* samples per calibration pass (0: 256) */
    int nthreads;          /* for the calibration passes and the model's later runs (0: all) */
} sp_quant_opts;

/* A new inference-only model (owned *out): every `linear` layer of m becomes a `qlinear` layer
 * (docs/CONFIG.md) whose weights are m's quantized symmetrically, per output row for 8 bits and
 * per group of o->group stored entries for 4 bits, keeping the layer's sparsity pattern (only
 * stored entries are quantized; indices untouched) or, for a dense layer, every entry without
 * an index. Biases stay float; every other layer is copied unchanged. With calibration inputs,
 * each qlinear layer's static activation scale is the largest |input| it saw over them / 127
 * (the model runs them with the layers before it already quantized); without, activations are
 * quantized per sample at run time. m is not changed. SP_EINVAL (bits, group, no linear layer),
 * SP_ENOMEM, and the errors of a calibration pass. */
sp_status sp_model_quantize(const sp_model *m, const sp_quant_opts *o, sp_model **out);

#ifdef __cplusplus
}
#endif
#endif
