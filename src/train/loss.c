/*
 * loss.c - cross-entropy (with label smoothing) and mean squared error, with their gradients.
 *
 * Cross-entropy per column j with p = softmax(z_j) and smoothed target
 * q = (1 - s) onehot(label) + s / C:      loss_j = -sum_k q_k log p_k
 *                                         d loss_j / d z_k = p_k - q_k
 * The mean over the cols columns divides both by cols. Logits are feature-major (C, cols),
 * so the column loops stride by cols; the work is tiny next to the layers.
 */
#include <math.h>

#include "sparrow/train.h"

#include "../core/internal.h"

sp_status sp_loss_xent(const float *logits, int64_t classes, int64_t cols, const int32_t *labels,
                       float smoothing, double *loss, float *dlogits, int64_t *correct) {
    if (!logits || !labels || !loss) return sp_fail(SP_EINVAL, "xent: NULL argument");
    if (classes < 1 || cols < 1)
        return sp_fail(SP_EINVAL, "xent: classes %lld and columns %lld must be >= 1",
                       (long long)classes, (long long)cols);
    if (!(smoothing >= 0.0f && smoothing < 1.0f))
        return sp_fail(SP_EINVAL, "xent: label smoothing %g not in [0, 1)", (double)smoothing);
    for (int64_t j = 0; j < cols; j++)
        if (labels[j] < 0 || labels[j] >= classes)
            return sp_fail(SP_EINVAL, "xent: label %d of column %lld not in [0, %lld)",
                           (int)labels[j], (long long)j, (long long)classes);
    double total = 0.0;
    int64_t right = 0;
    const float off = smoothing / (float)classes, on = 1.0f - smoothing + off;
    const float inv_cols = 1.0f / (float)cols;
    for (int64_t j = 0; j < cols; j++) {
        float mx = logits[j];
        int64_t arg = 0;
        for (int64_t k = 1; k < classes; k++)
            if (logits[k * cols + j] > mx) mx = logits[k * cols + j], arg = k;
        right += arg == labels[j];
        float sum = 0.0f;
        for (int64_t k = 0; k < classes; k++) sum += expf(logits[k * cols + j] - mx);
        float lse = mx + logf(sum);
        /* -sum_k q_k (z_k - lse) */
        double lj = 0.0;
        for (int64_t k = 0; k < classes; k++) {
            float q = k == labels[j] ? on : off;
            if (q != 0.0f) lj -= (double)q * (double)(logits[k * cols + j] - lse);
        }
        total += lj;
        if (dlogits) {
            float inv = 1.0f / sum;
            for (int64_t k = 0; k < classes; k++) {
                float p = expf(logits[k * cols + j] - mx) * inv;
                float q = k == labels[j] ? on : off;
                dlogits[k * cols + j] = (p - q) * inv_cols;
            }
        }
    }
    *loss = total / (double)cols;
    if (correct) *correct = right;
    return SP_OK;
}

sp_status sp_loss_mse(const float *y, const float *target, int64_t n, double *loss, float *dy) {
    if (!y || !target || !loss) return sp_fail(SP_EINVAL, "mse: NULL argument");
    if (n < 1) return sp_fail(SP_EINVAL, "mse: %lld values", (long long)n);
    double total = 0.0;
    const float scale = 2.0f / (float)n;
    for (int64_t i = 0; i < n; i++) {
        float d = y[i] - target[i];
        total += (double)d * (double)d;
        if (dy) dy[i] = scale * d;
    }
    *loss = total / (double)n;
    return SP_OK;
}
