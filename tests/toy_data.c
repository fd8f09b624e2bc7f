/*
 * toy_data.c - a small synthetic dataset for tests that train (see toy_data.h).
 */
#include <stdlib.h>
#include <string.h>

#include "toy_data.h"

/* A small separable dataset: n samples of (1, 4, 4) u8 images whose class is the brightest
 * quadrant, built as IDX bytes and loaded through the real reader. */
sp_dataset *test_toy_dataset(int64_t n, uint64_t seed) {
    size_t ilen = 16 + (size_t)n * 16, llen = 8 + (size_t)n;
    uint8_t *img = malloc(ilen), *lab = malloc(llen);
    const uint8_t ih[16] = {0, 0, 8, 3, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                            (uint8_t)n, 0, 0, 0, 4, 0, 0, 0, 4};
    const uint8_t lh[8] = {0, 0, 8, 1, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                           (uint8_t)n};
    memcpy(img, ih, 16);
    memcpy(lab, lh, 8);
    sp_rng r;
    sp_rng_init(&r, seed, 5);
    for (int64_t i = 0; i < n; i++) {
        int c = (int)sp_rng_below(&r, 4);
        lab[8 + i] = (uint8_t)c;
        for (int p = 0; p < 16; p++) {
            int q = (p / 8) * 2 + (p % 4) / 2;
            img[16 + i * 16 + p] = (uint8_t)(sp_rng_below(&r, 120) + (q == c ? 100 : 0));
        }
    }
    sp_dataset *d = NULL;
    sp_status st = sp_dataset_from_idx(img, ilen, lab, llen, 4, &d);
    free(img);
    free(lab);
    return st == SP_OK ? d : NULL;
}
