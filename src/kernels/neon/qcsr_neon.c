/*
 * qcsr_neon.c - NEON quantized CSR product and activation quantization (aarch64).
 *
 * Product: per output row and tile of 16 batch columns, each stored entry (column c, weight q)
 * widens the 16 int8 xq[c][b] to int16 and adds q * xq[c][b] to four int32x4 sums with
 * vmlal_n_s16 (exact: |q x| <= 127^2,
 * rows are short enough for int32, see SP_QCSR_MAX_ROW). Same fp32 scaling as ref/qcsr_ref.c.
 * Activation quantization is the portable C one (vectorized by the compiler).
 */
#include <arm_neon.h>
#include <string.h>

#include "../kernel_table.h"

bool sp_qact__neon(const float *x, int64_t ldx, int64_t rows, int64_t batch, float x_scale,
                   float *xs, float *inv, int8_t *xq, int64_t ldq) {
    return sp_qact__scalar(x, ldx, rows, batch, x_scale, xs, inv, xq, ldq);
}

void sp_i8_spmm_qcsr__neon(const sp_qcsr *w, int64_t r0, int64_t r1, const int8_t *xq,
                           int64_t ldq, int64_t batch, const float *xs, float *y, int64_t ldy,
                           const float *bias, sp_act act, bool xpos) {
    const bool q4 = w->bits == 4;
    int64_t b0 = 0;
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
