/*
 * optim_ref.c - the Adam / AdamW update (src/optim/optim.c has the formulas), one element at a
 * time. It is also the portable variant: the compiler vectorizes the loop as it stands.
 */
#include <math.h>

#include "../kernel_table.h"

void sp_adam__ref(float *restrict p, float *restrict m, float *restrict v, const float *restrict g,
                  int64_t n, const sp_adam_coef *c) {
    const float b1 = c->b1, b2 = c->b2, eps = c->eps, wd = c->wd;
    const float step_size = c->step_size, bc2_sqrt = c->bc2_sqrt, decay = c->decay;
    if (c->decoupled) {
        for (int64_t i = 0; i < n; i++) {
            p[i] *= decay;
            m[i] = b1 * m[i] + (1.0f - b1) * g[i];
            v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
            p[i] -= step_size * (m[i] / (sqrtf(v[i]) / bc2_sqrt + eps));
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i] + wd * p[i];
            m[i] = b1 * m[i] + (1.0f - b1) * gi;
            v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
            p[i] -= step_size * (m[i] / (sqrtf(v[i]) / bc2_sqrt + eps));
        }
    }
}
