/*
 * fuzz_config.c - libFuzzer target for the model config parser (docs/CONFIG.md): the input is
 * config text. Its "input C H W" line (sp_model_config_input) sets the input shape when it has
 * at most 4096 features (else 1x8x8); sp_model_new_limited builds the model with a budget of
 * 2^16 parameter floats, so that no config makes the fuzzer allocate much, and an execution
 * stays around a millisecond (with 2^20, mutants of the larger seeds ran at ~85 per second,
 * too slow for the million executions a run needs). An error must
 * come with a message and no model, and never be SP_ENOMEM (the budget bounds every
 * allocation). A model that comes out must rebuild from its normalized config to the same
 * config and the same parameter bits, list every layer, and run one evaluation pass of 2 samples
 * of zeros (when its activations stay under 2^16 floats), which succeeds or is refused with
 * SP_EINVAL and a message (a layer checking its input: token ids for an embedding).
 *
 * The same function is replayed over fuzz/corpus/config/ by tests/test_corpus.c.
 * Build and run: make fuzz FUZZ_TARGETS=config. Seeds: fuzz/corpus/config/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/sparrow.h"

#include "fuzz.h"

#define MAX_PARAMS ((int64_t)1 << 16)
#define MAX_ACT ((int64_t)1 << 16)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    MUST(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';

    sp_shape in = {1, 8, 8};
    bool found = false;
    sp_shape line = {0, 0, 0};
    sp_status st = sp_model_config_input(text, &line, &found);
    MUST(st == SP_OK || (st == SP_EINVAL && sp_last_error()[0] != '\0'));
    if (st == SP_OK && found) {
        MUST(line.c >= 1 && line.h >= 1 && line.w >= 1);
        if (line.c <= 4096 && line.h <= 4096 && line.w <= 4096 && line.c * line.h * line.w <= 4096)
            in = line;
    }

    sp_model *m = (sp_model *)(uintptr_t)1; /* must be reset to NULL on error */
    sp_clear_error();
    st = sp_model_new_limited(text, in, 10, 1, MAX_PARAMS, &m);
    if (st != SP_OK) {
        MUST(m == NULL && st != SP_ENOMEM && sp_last_error()[0] != '\0');
        free(text);
        return 0;
    }
    MUST(m != NULL && sp_model_nparams(m) + sp_model_nbuffers(m) <= MAX_PARAMS);

    /* the normalized config rebuilds the same model */
    sp_model *again = NULL;
    st = sp_model_new_limited(sp_model_config(m), sp_model_in(m), 10, 1, MAX_PARAMS, &again);
    MUST(st == SP_OK);
    MUST(strcmp(sp_model_config(m), sp_model_config(again)) == 0);
    MUST(sp_model_nparams(m) == sp_model_nparams(again));
    MUST(sp_model_nbuffers(m) == sp_model_nbuffers(again));
    MUST(memcmp(sp_model_params(m), sp_model_params(again),
                sizeof(float) * (size_t)sp_model_nparams(m)) == 0);
    sp_model_free(again);

    /* every layer describes itself; activations of a pass bounded */
    int64_t act = 0;
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        sp_layer_info li;
        MUST(sp_model_layer(m, i, &li) == SP_OK);
        MUST(li.out.c >= 1 && li.out.h >= 1 && li.out.w >= 1);
        act += li.out.c * li.out.h * li.out.w;
        if (!strcmp(li.kind, "attention")) act += 2 * li.in.w * li.in.w * li.in.c;
    }
    MUST(sp_model_layer(m, sp_model_nlayers(m), &(sp_layer_info){0}) == SP_EINVAL);

    const int64_t nin = in.c * in.h * in.w;
    if (act * 2 <= MAX_ACT) {
        float *x = calloc((size_t)nin * 2, sizeof(float));
        MUST(x != NULL);
        const float *y = NULL;
        sp_model_set_threads(m, 1);
        st = sp_model_forward(m, x, 2, false, &y);
        /* a layer may refuse what reaches it (an embedding fed the non-integer outputs of a
         * linear layer is not given token ids): an error with a message, never a crash */
        MUST((st == SP_OK && y != NULL) || (st == SP_EINVAL && sp_last_error()[0] != '\0'));
        free(x);
    }
    sp_model_free(m);
    free(text);
    return 0;
}
