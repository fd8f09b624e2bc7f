/*
 * qcsr_ref.c - readable oracles of the quantized CSR product (sp_qcsr, include/sparrow/quant.h):
 * activation quantization and the exact integer product. Every other variant must match these
 * (the int32 sums exactly; the fp32 scaling in the order written here).
 */
#include <math.h>
#include <string.h>

#include "../kernel_table.h"

/* x (rows x batch, ldx) -> xs (batch), inv (batch), xq (rows x ldq, zero-padded); true when no
 * quantized value is negative */
bool sp_qact__ref(const float *x, int64_t ldx, int64_t rows, int64_t batch, float x_scale,
                  float *xs, float *inv, int8_t *xq, int64_t ldq) {
    for (int64_t b = 0; b < batch; b++) {
        if (x_scale > 0.0f) {
            xs[b] = x_scale, inv[b] = 1.0f / x_scale;
            continue;
        }
        float m = 0.0f; /* max_j |x[j][b]| */
        for (int64_t j = 0; j < rows; j++) m = fmaxf(m, fabsf(x[j * ldx + b]));
        xs[b] = m / 127.0f;
        inv[b] = m > 0.0f ? 127.0f / m : 0.0f;
    }
    bool pos = true;
    for (int64_t j = 0; j < rows; j++) {
        for (int64_t b = 0; b < batch; b++) {
            float q = rintf(x[j * ldx + b] * inv[b]); /* round half to even */
            q = fminf(fmaxf(q, -127.0f), 127.0f);
            xq[j * ldq + b] = (int8_t)q;
            if (q < 0.0f) pos = false;
        }
        for (int64_t b = batch; b < ldq; b++) xq[j * ldq + b] = 0;
    }
    return pos;
}

/* y[i][b] = act(deq(W)[i, :] . deq(xq)[:, b] + bias[i]) */
void sp_i8_spmm_qcsr__ref(const sp_qcsr *w, int64_t r0, int64_t r1, const int8_t *xq,
                          int64_t ldq, int64_t batch, const float *xs, float *y, int64_t ldy,
                          const float *bias, sp_act act, bool xpos) {
    (void)xpos; /* a hint for faster variants */
    for (int64_t i = r0; i < r1; i++) {
        const int64_t k0 = w->row_ptr[i], k1 = w->row_ptr[i + 1];
        for (int64_t b = 0; b < batch; b++) {
            float f = 0.0f;
            int32_t acc = 0;
            int64_t col = 0;
            for (int64_t k = k0; k < k1; k++) {
                col = w->gap ? col + w->gap[k] : k - k0; /* column of entry k */
                acc += sp_qcsr_q(w, k) * (int32_t)xq[col * ldq + b];
                /* bits 4: close a group of `group` entries (or the row's short last one) */
                if (w->bits == 4 && ((k - k0 + 1) % w->group == 0 || k + 1 == k1)) {
                    f += (float)acc * sp_qcsr_scale_of(w, i, k);
                    acc = 0;
                }
            }
            float v = w->bits == 8 ? ((float)acc * w->scale[i]) * xs[b] : f * xs[b];
            y[i * ldy + b] = sp_epilogue(v, bias, i, act);
        }
    }
}
