/*
 * qcsr_scalar.c - portable C quantized CSR product and activation quantization. Same math as
 * ref/qcsr_ref.c; the batch is walked in tiles of QT columns whose int32 sums sit in a small
 * array (the compiler vectorizes the inner loop), each stored entry decoded once per tile.
 */
#include <math.h>
#include <string.h>

#include "../kernel_table.h"

#define QT 64

bool sp_qact__scalar(const float *x, int64_t ldx, int64_t rows, int64_t batch, float x_scale,
                     float *xs, float *inv, int8_t *xq, int64_t ldq) {
    if (x_scale > 0.0f) {
        for (int64_t b = 0; b < batch; b++) xs[b] = x_scale, inv[b] = 1.0f / x_scale;
    } else {
        for (int64_t b = 0; b < batch; b++) xs[b] = 0.0f; /* running max |x| */
        for (int64_t j = 0; j < rows; j++)
            for (int64_t b = 0; b < batch; b++) xs[b] = fmaxf(xs[b], fabsf(x[j * ldx + b]));
        for (int64_t b = 0; b < batch; b++) {
            float m = xs[b];
            xs[b] = m / 127.0f;
            inv[b] = m > 0.0f ? 127.0f / m : 0.0f;
        }
    }
    int neg = 0;
    for (int64_t j = 0; j < rows; j++) {
        for (int64_t b = 0; b < batch; b++) {
            float q = rintf(x[j * ldx + b] * inv[b]);
            q = fminf(fmaxf(q, -127.0f), 127.0f);
            xq[j * ldq + b] = (int8_t)q;
            neg |= q < 0.0f;
        }
        for (int64_t b = batch; b < ldq; b++) xq[j * ldq + b] = 0;
    }
    return !neg;
}

void sp_i8_spmm_qcsr__scalar(const sp_qcsr *w, int64_t r0, int64_t r1, const int8_t *xq,
                             int64_t ldq, int64_t batch, const float *xs, float *y, int64_t ldy,
                             const float *bias, sp_act act, bool xpos) {
    (void)xpos;
    int32_t acc[QT];
    float f[QT];
    const bool q4 = w->bits == 4;
    for (int64_t b0 = 0; b0 < batch; b0 += QT) {
        const int64_t nb = SP_MIN(QT, batch - b0);
        for (int64_t i = r0; i < r1; i++) {
            const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
            memset(acc, 0, sizeof acc);
            memset(f, 0, sizeof f);
            int64_t col = 0;
            for (int64_t k = k0; k < k1; k++) {
                col = w->gap ? col + w->gap[k] : k - k0;
                const int32_t q = sp_qcsr_q(w, k);
                const int8_t *xr = xq + col * ldq + b0;
                for (int64_t b = 0; b < nb; b++) acc[b] += q * (int32_t)xr[b];
                if (q4 && ((k - k0 + 1) % w->group == 0 || k + 1 == k1)) {
                    const float s = sp_qcsr_scale_of(w, i, k);
                    for (int64_t b = 0; b < nb; b++) f[b] += (float)acc[b] * s, acc[b] = 0;
                }
            }
            float *yr = y + i * ldy + b0;
            for (int64_t b = 0; b < nb; b++) {
                float v = q4 ? f[b] * xs[b0 + b] : ((float)acc[b] * w->scale[i]) * xs[b0 + b];
                yr[b] = sp_epilogue(v, bias, i, act);
            }
        }
    }
}
