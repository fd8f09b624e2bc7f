/*
 * qcsr_neon.c - NEON quantized CSR product and activation quantization (aarch64).
 *
 * Product: per output row and tile of 16 batch columns, each stored entry (column c, weight q)
 * widens the 16 int8 xq[c][b] to int16 and adds q * xq[c][b] to four int32x4 sums with
 * vmlal_n_s16 (exact: |q x| <= 127^2, rows are short enough for int32, see SP_QCSR_MAX_ROW).
 * Where the CPU has the dot-product extension (FEAT_DotProd, HWCAP_ASIMDDP) 8-bit weights take
 * entries four at a time instead: the four X rows are zipped into quads (bytes, then 16-bit
 * pairs), so that each int32 lane holds (x[c0][b], x[c1][b], x[c2][b], x[c3][b]), and sdot
 * (vdotq_s32, signed x signed, exact) adds w0 x0 + w1 x1 + w2 x2 + w3 x3 to that lane; the lanes
 * come out in batch order. Same fp32 scaling as ref/qcsr_ref.c.
 * Activation quantization is the portable C one (vectorized by the compiler).
 */
#include <arm_neon.h>
#include <string.h>
#include <sys/auxv.h>

#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif

#include "../kernel_table.h"

bool sp_qact__neon(const float *x, int64_t ldx, int64_t rows, int64_t batch, float x_scale,
                   float *xs, float *inv, int8_t *xq, int64_t ldq) {
    return sp_qact__scalar(x, ldx, rows, batch, x_scale, xs, inv, xq, ldq);
}

/* 8-bit weights, 16 batch columns at b0, rows r0..r1, with sdot (see the top of the file) */
__attribute__((target("arch=armv8.2-a+dotprod"))) static void rows_dot(
    const sp_qcsr *w, int64_t r0, int64_t r1, const int8_t *xq, int64_t ldq, int64_t b0,
    const float *xs, float *y, int64_t ldy, const float *bias, sp_act act) {
    const int8_t *val = w->val;
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], n = w->row_ptr[i + 1] - k0;
        int32x4_t acc[4];
        for (int v = 0; v < 4; v++) acc[v] = vdupq_n_s32(0);
        int64_t col = 0;
        for (int64_t k = 0; k < n; k += 4) {
            int64_t c[4];
            int8_t wq[4] = {0, 0, 0, 0}; /* a short last quad: zero weights on its last column */
            for (int m = 0; m < 4; m++) {
                if (k + m < n) col = w->gap ? col + w->gap[k0 + k + m] : k + m, wq[m] = val[k0 + k + m];
                c[m] = col;
            }
            const int8x16_t a = vld1q_s8(xq + c[0] * ldq + b0), b = vld1q_s8(xq + c[1] * ldq + b0);
            const int8x16_t cc = vld1q_s8(xq + c[2] * ldq + b0), d = vld1q_s8(xq + c[3] * ldq + b0);
            const int16x8_t abl = vreinterpretq_s16_s8(vzip1q_s8(a, b));
            const int16x8_t abh = vreinterpretq_s16_s8(vzip2q_s8(a, b));
            const int16x8_t cdl = vreinterpretq_s16_s8(vzip1q_s8(cc, d));
            const int16x8_t cdh = vreinterpretq_s16_s8(vzip2q_s8(cc, d));
            const int8x16_t wv = vreinterpretq_s8_s32(vdupq_n_s32(sp_load_i32(wq)));
            acc[0] = vdotq_s32(acc[0], vreinterpretq_s8_s16(vzip1q_s16(abl, cdl)), wv);
            acc[1] = vdotq_s32(acc[1], vreinterpretq_s8_s16(vzip2q_s16(abl, cdl)), wv);
            acc[2] = vdotq_s32(acc[2], vreinterpretq_s8_s16(vzip1q_s16(abh, cdh)), wv);
            acc[3] = vdotq_s32(acc[3], vreinterpretq_s8_s16(vzip2q_s16(abh, cdh)), wv);
        }
        float *yr = y + i * ldy + b0;
        for (int v = 0; v < 4; v++) {
            float32x4_t t = vmulq_n_f32(vcvtq_f32_s32(acc[v]), w->scale[i]);
            t = vmulq_f32(t, vld1q_f32(xs + b0 + 4 * v));
            if (bias) t = vaddq_f32(t, vdupq_n_f32(bias[i]));
            if (act == SP_ACT_RELU) t = vmaxq_f32(t, vdupq_n_f32(0.0f));
            vst1q_f32(yr + 4 * v, t);
        }
    }
}

static bool has_dotprod(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }

void sp_i8_spmm_qcsr__neon(const sp_qcsr *w, int64_t r0, int64_t r1, const int8_t *xq,
                           int64_t ldq, int64_t batch, const float *xs, float *y, int64_t ldy,
                           const float *bias, sp_act act, bool xpos) {
    const bool q4 = w->bits == 4;
    int64_t b0 = 0;
    if (!q4 && has_dotprod()) {
        for (; b0 + 16 <= batch; b0 += 16) rows_dot(w, r0, r1, xq, ldq, b0, xs, y, ldy, bias, act);
    }
    for (; b0 + 16 <= batch; b0 += 16) {
        for (int64_t i = r0; i < r1; i++) {
            const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
            int32x4_t acc[4];
            float32x4_t f[4];
            for (int v = 0; v < 4; v++) acc[v] = vdupq_n_s32(0), f[v] = vdupq_n_f32(0.0f);
            int64_t col = 0;
            for (int64_t k = k0; k < k1; k++) {
                col = w->gap ? col + w->gap[k] : k - k0;
                const int16_t q = (int16_t)sp_qcsr_q(w, k);
                const int8x16_t xr = vld1q_s8(xq + col * ldq + b0);
                const int16x8_t x0 = vmovl_s8(vget_low_s8(xr)), x1 = vmovl_s8(vget_high_s8(xr));
                acc[0] = vmlal_n_s16(acc[0], vget_low_s16(x0), q);
                acc[1] = vmlal_n_s16(acc[1], vget_high_s16(x0), q);
                acc[2] = vmlal_n_s16(acc[2], vget_low_s16(x1), q);
                acc[3] = vmlal_n_s16(acc[3], vget_high_s16(x1), q);
                if (q4 && ((k - k0 + 1) % w->group == 0 || k + 1 == k1)) {
                    const float s = sp_qcsr_scale_of(w, i, k);
                    for (int v = 0; v < 4; v++) {
                        /* mul then add, as the reference (no fused multiply-add) */
                        f[v] = vaddq_f32(f[v], vmulq_n_f32(vcvtq_f32_s32(acc[v]), s));
                        acc[v] = vdupq_n_s32(0);
                    }
                }
            }
            float *yr = y + i * ldy + b0;
            for (int v = 0; v < 4; v++) {
                float32x4_t t = q4 ? f[v] : vmulq_n_f32(vcvtq_f32_s32(acc[v]), w->scale[i]);
                t = vmulq_f32(t, vld1q_f32(xs + b0 + 4 * v));
                if (bias) t = vaddq_f32(t, vdupq_n_f32(bias[i]));
                if (act == SP_ACT_RELU) t = vmaxq_f32(t, vdupq_n_f32(0.0f));
                vst1q_f32(yr + 4 * v, t);
            }
        }
    }
    if (b0 < batch) /* the last < 16 columns: portable C on the shifted operands */
        sp_i8_spmm_qcsr__scalar(w, r0, r1, xq + b0, ldq, batch - b0, xs + b0, y + b0, ldy, bias,
                                act, xpos);
}
