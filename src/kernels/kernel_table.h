/*
 * kernel_table.h - the kernel families and their variant tables (internal).
 *
 * Each family (csr_spmm, csr_spmm_t, ...) has one table listing its variants: the readable
 * reference first (the test oracle), then portable C and the ISA versions this build compiled.
 * The same table drives dispatch (sp_kernel_pick), the tests (every supported entry against the
 * reference) and the benchmarks. Kernels trust their arguments: the public entry points in
 * src/kernels/<format>_ops.c validate shapes and split the work into tasks.
 *
 * Work split. spmm and sddmm take a range of output rows (block rows for BSR); spmm_t takes a
 * range of batch columns [b0, b1) over all rows (chunks of SP_SPMM_T_COLS), so that its scatter into dX never races and
 * every dX element is summed in the same order for any thread count.
 */
#ifndef SPARROW_KERNEL_TABLE_H
#define SPARROW_KERNEL_TABLE_H

#include <string.h>

#include "sparrow/kernels.h"
#include "sparrow/quant.h"

#include "../core/internal.h"
#include "../sparse/csr_panels.h"

/* y[r0:r1, :] = act(W[r0:r1, :] x + bias[r0:r1]). The csr_spmm_panels family has the same type
 * and runs the panelled layout (w->panels, src/sparse/csr_panels.h): there r0 is a multiple of
 * its block_rows and r1 one too, or rows. */
typedef void (*sp_csr_spmm_fn)(const sp_csr *w, int64_t r0, int64_t r1, const float *x,
                               int64_t ldx, int64_t batch, float *y, int64_t ldy,
                               const float *bias, sp_act act);
/* dx[:, b0:b1] += W^T dy[:, b0:b1] */
typedef void (*sp_csr_spmm_t_fn)(const sp_csr *w, int64_t b0, int64_t b1, const float *dy,
                                 int64_t lddy, float *dx, int64_t lddx);
/* dval[k] (+)= dy[i, :] . x[col(k), :] for entries k of rows [r0, r1) */
typedef void (*sp_csr_sddmm_fn)(const sp_csr *w, int64_t r0, int64_t r1, const float *dy,
                                int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                                float *dval, bool accumulate);

/* For rows j in [r0, r1) of wt = W^T: dx[j, :] = sum_q wval[perm[q]] dy[col(q), :] and
 * dval[perm[q]] (+)= dy[col(q), :] . x[j, :] (sp_csr_spmm_t_sddmm). */
typedef void (*sp_csr_spmm_t_sddmm_fn)(const sp_csr *wt, const int64_t *perm, const float *wval,
                                       int64_t r0, int64_t r1, const float *dy, int64_t lddy,
                                       const float *x, int64_t ldx, int64_t batch, float *dx,
                                       int64_t lddx, float *dval, bool accumulate);

/* BSR: ranges are in block rows. */
typedef void (*sp_bsr_spmm_fn)(const sp_bsr *w, int64_t br0, int64_t br1, const float *x,
                               int64_t ldx, int64_t batch, float *y, int64_t ldy,
                               const float *bias, sp_act act);
typedef void (*sp_bsr_spmm_t_fn)(const sp_bsr *w, int64_t b0, int64_t b1, const float *dy,
                                 int64_t lddy, float *dx, int64_t lddx);
typedef void (*sp_bsr_sddmm_fn)(const sp_bsr *w, int64_t br0, int64_t br1, const float *dy,
                                int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                                float *dval, bool accumulate);

typedef void (*sp_nm_spmm_fn)(const sp_nm *w, int64_t r0, int64_t r1, const float *x, int64_t ldx,
                              int64_t batch, float *y, int64_t ldy, const float *bias, sp_act act);
typedef void (*sp_nm_spmm_t_fn)(const sp_nm *w, int64_t b0, int64_t b1, const float *dy,
                                int64_t lddy, float *dx, int64_t lddx);
typedef void (*sp_nm_sddmm_fn)(const sp_nm *w, int64_t r0, int64_t r1, const float *dy,
                               int64_t lddy, const float *x, int64_t ldx, int64_t batch,
                               float *dval, bool accumulate);

/* One variant of a family. fn is cast back to the family's type before the call. */
typedef struct sp_kernel {
    const char *name;  /* "sp_f32_spmm_csr__avx512" */
    sp_isa isa;        /* level it needs */
    bool is_ref;       /* the readable oracle: tested against, never dispatched */
    void (*fn)(void);
    unsigned feat;     /* SP_FEAT_* extensions it needs beyond its level (src/core/internal.h) */
} sp_kernel;

typedef struct sp_kernel_family {
    const char *name;          /* "csr_spmm" */
    const sp_kernel *kernels;
    int count;
} sp_kernel_family;

/* All families, for tests and benchmarks; NULL-terminated by name. */
extern const sp_kernel_family sp_kernel_families[];
const sp_kernel_family *sp_kernel_family_get(const char *name);
/* The variant of fam that runs at the active ISA level. Never NULL for a family with a scalar
 * entry. */
const sp_kernel *sp_kernel_pick(const sp_kernel_family *fam);
/* True when this machine can run variant k: its level and its extensions are supported (the
 * tests run every usable variant against the reference). */
bool sp_kernel_usable(const sp_kernel *k);

/* sp_kernel_pick(sp_kernel_family_get(family)), looked up once and kept in *slot: the entry
 * points call this on every product, and small products take well under a microsecond. */
const sp_kernel *sp_kernel_cached(const char *family, const sp_kernel *_Atomic *slot);

/* Applies bias and activation to one value: the epilogue every spmm variant must match. */
static inline float sp_epilogue(float v, const float *bias, int64_t row, sp_act act) {
    if (bias) v += bias[row];
    if (act == SP_ACT_RELU && !(v > 0.0f)) v = 0.0f;
    return v;
}

#define SP_KERNEL(fn_, isa_) {#fn_, isa_, false, (void (*)(void))(fn_), 0}
#define SP_KERNEL_FEAT(fn_, isa_, feat_) {#fn_, isa_, false, (void (*)(void))(fn_), feat_}
#define SP_KERNEL_REF(fn_) {#fn_, SP_ISA_SCALAR, true, (void (*)(void))(fn_), 0}

/* ---- variants (declared here, defined in ref/, scalar/, avx2/, avx512/, neon/) ---------- */

#define SP_DECLARE_CSR(suffix)                                                                  \
    void sp_f32_spmm_csr__##suffix(const sp_csr *, int64_t, int64_t, const float *, int64_t,   \
                                   int64_t, float *, int64_t, const float *, sp_act);          \
    void sp_f32_spmm_csr_panels__##suffix(const sp_csr *, int64_t, int64_t, const float *,      \
                                         int64_t, int64_t, float *, int64_t, const float *,    \
                                         sp_act);                                               \
    void sp_f32_spmm_t_csr__##suffix(const sp_csr *, int64_t, int64_t, const float *, int64_t, \
                                     float *, int64_t);                                         \
    void sp_f32_sddmm_csr__##suffix(const sp_csr *, int64_t, int64_t, const float *, int64_t,  \
                                    const float *, int64_t, int64_t, float *, bool);            \
    void sp_f32_spmm_t_sddmm_csr__##suffix(const sp_csr *, const int64_t *, const float *,      \
                                           int64_t, int64_t, const float *, int64_t,            \
                                           const float *, int64_t, int64_t, float *, int64_t,   \
                                           float *, bool);
#define SP_DECLARE_BSR(suffix)                                                                  \
    void sp_f32_spmm_bsr__##suffix(const sp_bsr *, int64_t, int64_t, const float *, int64_t,   \
                                   int64_t, float *, int64_t, const float *, sp_act);          \
    void sp_f32_spmm_t_bsr__##suffix(const sp_bsr *, int64_t, int64_t, const float *, int64_t, \
                                     float *, int64_t);                                         \
    void sp_f32_sddmm_bsr__##suffix(const sp_bsr *, int64_t, int64_t, const float *, int64_t,  \
                                    const float *, int64_t, int64_t, float *, bool);
#define SP_DECLARE_NM(suffix)                                                                   \
    void sp_f32_spmm_nm__##suffix(const sp_nm *, int64_t, int64_t, const float *, int64_t,     \
                                  int64_t, float *, int64_t, const float *, sp_act);           \
    void sp_f32_spmm_t_nm__##suffix(const sp_nm *, int64_t, int64_t, const float *, int64_t,   \
                                    float *, int64_t);                                          \
    void sp_f32_sddmm_nm__##suffix(const sp_nm *, int64_t, int64_t, const float *, int64_t,    \
                                   const float *, int64_t, int64_t, float *, bool);

SP_DECLARE_CSR(ref)
SP_DECLARE_CSR(scalar)
SP_DECLARE_CSR(avx2)
SP_DECLARE_CSR(avx512)
SP_DECLARE_CSR(neon)
SP_DECLARE_BSR(ref)
SP_DECLARE_BSR(scalar)
SP_DECLARE_BSR(avx2)
SP_DECLARE_BSR(avx512)
SP_DECLARE_BSR(neon)
SP_DECLARE_NM(ref)
SP_DECLARE_NM(scalar)
SP_DECLARE_NM(avx2)
SP_DECLARE_NM(avx512)
SP_DECLARE_NM(neon)

/* ---- quantized CSR (sp_qcsr, include/sparrow/quant.h) ------------------------------------ */

/* Row stride of the quantized X: the batch itself below 16, else padded to whole 32-byte
 * vectors (the AVX2 product loads 32 batch columns at a time). */
static inline int64_t sp_qcsr_ldq(int64_t batch) {
    return batch < 16 ? batch : (batch + 31) & ~(int64_t)31;
}

/* Quantizes X (rows x batch, ldx) per call: dynamic (x_scale <= 0) xs[b] = max_j |x[j][b]| / 127,
 * inv[b] = 127 / max (0 for an all-zero sample), or static xs[b] = x_scale, inv[b] = 1 / x_scale;
 * xq[j][b] = clamp(round-half-even(x[j][b] * inv[b]), -127, 127) as int8 (leading dim ldq >=
 * batch; columns batch..ldq-1 are written 0). xs and inv have room for ldq. Returns true when
 * no quantized value is negative (as after a ReLU): the product may then skip sign handling. */
typedef bool (*sp_qact_fn)(const float *x, int64_t ldx, int64_t rows, int64_t batch,
                           float x_scale, float *xs, float *inv, int8_t *xq, int64_t ldq);
/* y[r0:r1, 0:batch] = act(deq(W[r0:r1, :]) xq xs + bias) with the exact int32 sums and the
 * fp32 scaling order of quant.h. xq (cols x ldq) zero-padded up to ldq = sp_qcsr_ldq(batch of
 * the whole call), with at least 3 readable bytes past its end (batch 1 reads 4-byte words).
 * xpos: no value of xq is negative (what sp_qact_fn returned); false is always correct. */
typedef void (*sp_qcsr_spmm_fn)(const sp_qcsr *w, int64_t r0, int64_t r1, const int8_t *xq,
                                int64_t ldq, int64_t batch, const float *xs, float *y,
                                int64_t ldy, const float *bias, sp_act act, bool xpos);

/* 4-bit entry k of packed values: byte k / 2, low nibble for even k, 4-bit two's complement. */
static inline int sp_q4_get(const void *val, int64_t k) {
    unsigned b = ((const uint8_t *)val)[k >> 1];
    unsigned n = (k & 1) ? b >> 4 : b & 15u;
    return (int)n - (int)((n & 8u) << 1);
}
static inline void sp_q4_put(void *val, int64_t k, int q) {
    uint8_t *p = (uint8_t *)val + (k >> 1);
    unsigned n = (unsigned)q & 15u;
    *p = (k & 1) ? (uint8_t)((*p & 0x0fu) | (n << 4)) : (uint8_t)((*p & 0xf0u) | n);
}
/* The four bytes at p as one int32 (a broadcast source for four int8 weights) */
static inline int32_t sp_load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}
/* Quantized value of stored entry k, and the scale that applies to entry k of row i. */
static inline int sp_qcsr_q(const sp_qcsr *w, int64_t k) {
    return w->bits == 8 ? ((const int8_t *)w->val)[k] : sp_q4_get(w->val, k);
}
static inline float sp_qcsr_scale_of(const sp_qcsr *w, int64_t i, int64_t k) {
    if (w->bits == 8) return w->scale[i];
    return w->scale[w->scale_ptr[i] + (k - w->row_ptr[i]) / w->group];
}

/* Adam / AdamW on n parameters p with moments m and v and gradient g (src/optim/optim.c):
 *   Adam:  g += wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g;
 *          p -= step_size (m / (sqrt(v) / bc2_sqrt + eps))
 *   AdamW (decoupled): p *= decay first, and no wd term in g.
 * Every variant gives the reference's bits. */
typedef struct sp_adam_coef {
    float b1, b2, eps, wd, step_size, bc2_sqrt, decay;
    bool decoupled;
} sp_adam_coef;
typedef void (*sp_adam_fn)(float *p, float *m, float *v, const float *g, int64_t n,
                           const sp_adam_coef *c);
void sp_adam__ref(float *, float *, float *, const float *, int64_t, const sp_adam_coef *);
void sp_adam__avx2(float *, float *, float *, const float *, int64_t, const sp_adam_coef *);

#define SP_DECLARE_QCSR(suffix)                                                                 \
    bool sp_qact__##suffix(const float *, int64_t, int64_t, int64_t, float, float *, float *,   \
                           int8_t *, int64_t);                                                  \
    void sp_i8_spmm_qcsr__##suffix(const sp_qcsr *, int64_t, int64_t, const int8_t *, int64_t,  \
                                   int64_t, const float *, float *, int64_t, const float *,     \
                                   sp_act, bool);
SP_DECLARE_QCSR(ref)
SP_DECLARE_QCSR(scalar)
SP_DECLARE_QCSR(avx2)
SP_DECLARE_QCSR(neon)
/* AVX-512: the activation quantization (F/BW), the product (needs SP_FEAT_AVX512VNNI) */
bool sp_qact__avx512(const float *, int64_t, int64_t, int64_t, float, float *, float *, int8_t *,
                     int64_t);
void sp_i8_spmm_qcsr__avx512vnni(const sp_qcsr *, int64_t, int64_t, const int8_t *, int64_t,
                                 int64_t, const float *, float *, int64_t, const float *, sp_act,
                                 bool);

#endif
