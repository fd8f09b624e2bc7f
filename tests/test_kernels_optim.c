/*
 * test_kernels_optim.c - every variant of the Adam / AdamW update gives the reference's bits,
 * for lengths around the vector width and with and without weight decay.
 */
#include <math.h>
#include <stdlib.h>

#include "kernels/kernel_table.h"
#include "test.h"

TEST(adam_variants_match_reference_bit_for_bit) {
    const sp_kernel_family *f = sp_kernel_family_get("adam");
    CHECK(f && f->count >= 2 && f->kernels[0].is_ref);
    if (!f) return;
    static const int64_t lens[] = {0, 1, 7, 8, 9, 15, 16, 17, 63, 1000};
    sp_rng r;
    sp_rng_init(&r, 41, 0);
    for (int kind = 0; kind < 4; kind++) { /* Adam, Adam + wd, AdamW, AdamW without decay */
        const bool adamw = kind >= 2;
        const float wd = kind == 1 ? 1e-2f : kind == 2 ? 0.05f : 0.0f, lr = 3e-3f;
        /* the optimizer's coefficients at step 4 (bias corrections below 1) */
        const sp_adam_coef c = {.b1 = 0.9f, .b2 = 0.999f, .eps = 1e-8f, .wd = wd,
                                .step_size = lr / (1.0f - powf(0.9f, 4.0f)),
                                .bc2_sqrt = sqrtf(1.0f - powf(0.999f, 4.0f)),
                                .decay = 1.0f - lr * wd, .decoupled = adamw};
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const int64_t n = lens[li];
            float *p0 = sp_test_fill_new(n + 1, &r), *g = sp_test_fill_new(n + 1, &r);
            float *m0 = sp_test_fill_new(n + 1, &r), *v0 = sp_test_fill_new(n + 1, &r);
            for (int64_t i = 0; i < n; i++) {
                v0[i] = v0[i] * v0[i] * 1e-3f; /* second moments are >= 0 */
                if (i % 5 == 3) g[i] = m0[i] = v0[i] = 0.0f; /* a weight with no gradient yet */
            }
            float *want = malloc(sizeof(float) * (size_t)(3 * (n + 1)));
            float *got = malloc(sizeof(float) * (size_t)(3 * (n + 1)));
            float *wp = want, *wm = want + n + 1, *wv = want + 2 * (n + 1);
            memcpy(wp, p0, sizeof(float) * (size_t)(n + 1));
            memcpy(wm, m0, sizeof(float) * (size_t)(n + 1));
            memcpy(wv, v0, sizeof(float) * (size_t)(n + 1));
            ((sp_adam_fn)f->kernels[0].fn)(wp, wm, wv, g, n, &c);
            for (int k = 1; k < f->count; k++) {
                if (!sp_kernel_usable(&f->kernels[k])) continue;
                float *gp = got, *gm = got + n + 1, *gv = got + 2 * (n + 1);
                memcpy(gp, p0, sizeof(float) * (size_t)(n + 1));
                memcpy(gm, m0, sizeof(float) * (size_t)(n + 1));
                memcpy(gv, v0, sizeof(float) * (size_t)(n + 1));
                ((sp_adam_fn)f->kernels[k].fn)(gp, gm, gv, g, n, &c);
                /* element n is past the end: untouched */
                CHECK_MSG(memcmp(got, want, sizeof(float) * (size_t)(3 * (n + 1))) == 0,
                          "%s, kind %d, n %lld: differs from the reference", f->kernels[k].name,
                          kind, (long long)n);
            }
            /* the reference moved every parameter with a gradient, and only within [0, n) */
            for (int64_t i = 0; i < n; i++)
                if (g[i] != 0.0f || (adamw && wd > 0.0f) || (!adamw && wd > 0.0f && p0[i] != 0.0f))
                    CHECK_MSG(wp[i] != p0[i], "kind %d, n %lld: p[%lld] did not move", kind,
                              (long long)n, (long long)i);
            CHECK(wp[n] == p0[n] && wm[n] == m0[n] && wv[n] == v0[n]);
            free(p0), free(g), free(m0), free(v0), free(want), free(got);
        }
    }
}
