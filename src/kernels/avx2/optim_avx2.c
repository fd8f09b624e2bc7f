/*
 * optim_avx2.c - the Adam / AdamW update 8 elements at a time, with the reference's operations
 * in the reference's order (no fused multiply-add: the file is built with -ffp-contract=off),
 * so every bit matches it. sqrt and the two divisions are most of the cost; at 8 lanes they
 * take half the time of the portable loop's 4 (SSE2, the x86-64 baseline). AVX-512 machines run
 * this one too: the same loop on 16 lanes (masked tail) was slower on an AMD Zen 5 (lenet300,
 * 2 threads: 78k against 102k samples/s in paired runs, bits identical), whose 512-bit divides
 * and square roots do not keep up.
 */
#include <immintrin.h>

#include "../kernel_table.h"

void sp_adam__avx2(float *restrict p, float *restrict m, float *restrict v,
                   const float *restrict g, int64_t n, const sp_adam_coef *c) {
    const __m256 b1 = _mm256_set1_ps(c->b1), b1c = _mm256_set1_ps(1.0f - c->b1);
    const __m256 b2 = _mm256_set1_ps(c->b2), b2c = _mm256_set1_ps(1.0f - c->b2);
    const __m256 eps = _mm256_set1_ps(c->eps), wd = _mm256_set1_ps(c->wd);
    const __m256 step = _mm256_set1_ps(c->step_size), bc2 = _mm256_set1_ps(c->bc2_sqrt);
    const __m256 decay = _mm256_set1_ps(c->decay);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 pi = _mm256_loadu_ps(p + i), gi = _mm256_loadu_ps(g + i);
        if (c->decoupled) pi = _mm256_mul_ps(pi, decay);
        else gi = _mm256_add_ps(gi, _mm256_mul_ps(wd, pi));
        const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)),
                                        _mm256_mul_ps(b1c, gi));
        const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)),
                                        _mm256_mul_ps(_mm256_mul_ps(b2c, gi), gi));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        const __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
        _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_mul_ps(step, _mm256_div_ps(mi, den))));
    }
    if (i < n) sp_adam__ref(p + i, m + i, v + i, g + i, n - i, c);
}
