/*
 * fuzz_checkpoint.c - libFuzzer target for the model file loaders (docs/FORMAT.md): any bytes
 * go to sp_checkpoint_parse (version 1 or 2, copying) and, from a read-only page-aligned copy
 * as a mapping would be, to the in-place loader of sp_model_open (the model points into the
 * bytes).
 * A model that loads is checked for its invariants and run once (a forward pass of one sample),
 * so that ASan/UBSan see every array it claims.
 *
 * Build and run: make fuzz. Seeds: fuzz/corpus/checkpoint/ (tiny valid model files written by
 * fuzz/make_checkpoint_corpus.c).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "sparrow/sparrow.h"

#include "fuzz.h"

#include "../src/io/model_file.h"

static void parse_one(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    parse_one(data, size);
    /* Almost every mutation breaks the CRC, which the loader checks first: parse a copy with
     * the CRC made right as well, so that the checks behind it are fuzzed too. */
    if (size >= 20) {
        uint8_t *copy = malloc(size);
        if (!copy) return 0;
        memcpy(copy, data, size);
        uint32_t crc = sp_crc32(0, copy, size - 4);
        for (int k = 0; k < 4; k++) copy[size - 4 + k] = (uint8_t)(crc >> (8 * k));
        parse_one(copy, size);
        free(copy);
    }
    return 0;
}

static void run_once(sp_model *m) {
    sp_shape in = sp_model_in(m);
    int64_t f = in.c * in.h * in.w;
    if (f <= 4096) {
        float *x = calloc((size_t)f, sizeof(float));
        const float *y;
        if (x) {
            sp_model_set_threads(m, 1);
            (void)sp_model_forward(m, x, 1, false, &y); /* may fail (e.g. token ids), never crash */
            free(x);
        }
    }
}

/* The loader of sp_model_open on the bytes in place, as it gets them from mmap: page-aligned
 * and read-only, so that a write into the file's bytes faults here as it would there. */
static void parse_mapped(const uint8_t *data, size_t size) {
    const size_t len = size ? size : 1;
    uint8_t *copy = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED) return;
    if (size) memcpy(copy, data, size);
    if (mprotect(copy, len, PROT_READ) != 0) {
        munmap(copy, len);
        return;
    }
    sp_checkpoint c = {0};
    if (sp_model_file_parse(copy, size, true, &c, NULL) == SP_OK) {
        MUST(c.model != NULL && sp_model_is_mapped(c.model) && c.optim == NULL);
        MUST(sp_model_params(c.model) == NULL && sp_model_grads(c.model) == NULL);
        run_once(c.model);
    } else {
        MUST(c.model == NULL && sp_last_error()[0] != '\0');
    }
    sp_checkpoint_free(&c); /* before the bytes it points into */
    munmap(copy, len);
}

static void parse_one(const uint8_t *data, size_t size) {
    if (size >= 12 && mf_rd32(data + 8) == MF_VERSION) parse_mapped(data, size);
    sp_checkpoint c = {0};
    if (sp_checkpoint_parse(data, size, &c) != SP_OK) {
        MUST(c.model == NULL && c.optim == NULL && c.meta == NULL);
        MUST(sp_last_error()[0] != '\0');
        return;
    }
    sp_model *m = c.model;
    MUST(m != NULL && c.meta != NULL);
    /* the parameter count is bounded by the file */
    MUST((size_t)sp_model_nparams(m) * 4 <= size);
    run_once(m);
    sp_checkpoint_free(&c);
}
