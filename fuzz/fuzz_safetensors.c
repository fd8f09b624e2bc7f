/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors parser and the nn.Sequential import
 * (docs/INTEROP.md): any bytes go to sp_safetensors_parse. A file that parses is checked for
 * its invariants (every tensor inside the buffer, sizes consistent, names found again by
 * lookup), every float and index tensor is converted, and the file is imported into a tiny
 * fixed model (flatten, linear 4 -> 3, relu, linear 3 -> 2 on 1x2x2 inputs, and the same with
 * a CSR first layer), which then runs one sample, so that ASan/UBSan see everything it claims.
 *
 * Build and run: make fuzz. Seeds: fuzz/corpus/safetensors/, written by fuzz/make_corpus.py.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/sparrow.h"

#include "fuzz.h"

static const char *const configs[] = {
    "flatten\nlinear out=3\nrelu\nlinear out=classes\n",
    "flatten\nlinear out=3 format=csr density=0.5\nrelu\nlinear out=classes\n",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sp_safetensors *st = NULL;
    if (sp_safetensors_parse(data, size, &st) != SP_OK) {
        MUST(st == NULL && sp_last_error()[0] != '\0');
        return 0;
    }
    MUST(st != NULL && size >= 8);
    const int64_t n = sp_safetensors_count(st);
    for (int64_t i = 0; i < n; i++) {
        const sp_safetensors_tensor *t = sp_safetensors_at(st, i);
        MUST(t && t->data >= data && t->end >= t->begin && t->nbytes == t->end - t->begin);
        MUST((size_t)(t->data - data) + t->nbytes <= size);
        MUST(t->nbytes == (size_t)t->numel * sp_st_dtype_size(t->dtype));
        MUST(sp_safetensors_find(st, t->name) == t);
        if (t->numel > 4096) continue;
        float *f = malloc(sizeof(float) * (size_t)(t->numel + 1));
        int64_t *k = malloc(sizeof(int64_t) * (size_t)(t->numel + 1));
        if (f) (void)sp_safetensors_read_f32(t, f, t->numel);
        if (k) (void)sp_safetensors_read_i64(t, k, t->numel);
        free(f);
        free(k);
    }
    for (int64_t i = 0; i < sp_safetensors_meta_count(st); i++) {
        const char *key, *value;
        MUST(sp_safetensors_meta_at(st, i, &key, &value) == SP_OK && key && value);
        MUST(sp_safetensors_meta(st, key) != NULL);
    }
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        sp_model *m = NULL;
        if (sp_model_import_safetensors(st, configs[c], (sp_shape){1, 2, 2}, 2, 1, &m) != SP_OK) {
            MUST(m == NULL && sp_last_error()[0] != '\0');
            continue;
        }
        const float x[4] = {0.5f, -1.0f, 2.0f, 0.25f};
        const float *y;
        sp_model_set_threads(m, 1);
        (void)sp_model_forward(m, x, 1, false, &y); /* huge weights may overflow: an error */
        sp_model_free(m);
    }
    sp_safetensors_free(st);
    return 0;
}
