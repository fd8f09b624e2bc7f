/*
 * fuzz_idx.c - libFuzzer target for the IDX reader: the whole input goes to sp_idx_parse, then
 * the input minus its first byte is split in two at that byte's value (images | labels) and
 * given to sp_dataset_from_idx; a dataset that comes out is checked for its invariants and
 * used once (batch gather, split), so that ASan/UBSan see every byte it claims to own.
 *
 * Build and run: make fuzz (FUZZ_SECONDS=30 per target). Seeds: fuzz/corpus/idx/, written by
 * fuzz/make_corpus.py.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "sparrow/sparrow.h"

#include "fuzz.h"

static void use_dataset(const sp_dataset *d) {
    int64_t f = d->c * d->h * d->w;
    MUST(d->n >= 1 && d->c >= 1 && d->h >= 1 && d->w >= 1 && d->features == f);
    MUST(d->classes >= 1 && d->classes <= 256);
    for (int64_t i = 0; i < d->n; i++) MUST(d->labels[i] >= 0 && d->labels[i] < d->classes);
    /* the last sample and the first, feature-major */
    int64_t idx[2] = {d->n - 1, 0};
    float *x = malloc(sizeof *x * (size_t)f * 2);
    int32_t y[2];
    MUST(x != NULL);
    MUST(sp_dataset_batch(d, idx, 2, x, 2, y) == SP_OK);
    MUST(y[0] == d->labels[d->n - 1] && y[1] == d->labels[0]);
    MUST(x[(f - 1) * 2] == (float)d->pixels[d->n * f - 1] * d->scale);
    free(x);
    sp_dataset *tr = NULL, *va = NULL;
    MUST(sp_dataset_split(d, d->n / 2, 1, &tr, &va) == SP_OK);
    MUST(tr->n + va->n == d->n);
    sp_dataset_free(tr);
    sp_dataset_free(va);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sp_idx v;
    if (sp_idx_parse(data, size, &v) == SP_OK) {
        MUST(v.ndim >= 1 && v.ndim <= 4 && v.data + v.count == data + size);
        int64_t count = 1;
        for (int i = 0; i < v.ndim; i++) count *= v.dims[i];
        MUST(count == v.count);
    }
    if (size < 1) return 0;
    size_t split = data[0] < size - 1 ? data[0] : size - 1;
    const uint8_t *images = data + 1, *labels = data + 1 + split;
    size_t labels_len = size - 1 - split;
    for (int32_t classes = 0; classes <= 10; classes += 10) {
        sp_dataset *d = NULL;
        if (sp_dataset_from_idx(images, split, labels, labels_len, classes, &d) == SP_OK) {
            MUST(classes == 0 || d->classes == classes);
            use_dataset(d);
        } else {
            MUST(d == NULL && sp_last_error()[0] != '\0');
        }
        sp_dataset_free(d);
    }
    return 0;
}
