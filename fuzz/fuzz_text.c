/*
 * fuzz_text.c - libFuzzer target for the UTF-8 decoder and the text encoder: the input is
 * decoded; when it is valid, re-encoding every code point must give back exactly the input
 * (minus a leading BOM: UTF-8 has one encoding per scalar value, so a decoder that accepts
 * anything else, an overlong form or a surrogate, breaks this), the input encoded with the
 * vocabulary of its own code points must give their ranks, and with that vocabulary minus one
 * character it must fail naming that character; when it is invalid, the error is SP_EFORMAT
 * and sp_text_encode fails the same way.
 *
 * Build and run: make fuzz (FUZZ_SECONDS=30 per target). Seeds: fuzz/corpus/text/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/sparrow.h"

#include "fuzz.h"

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int32_t *cps = malloc(sizeof(int32_t) * (size + 1));
    int32_t *ids = malloc(sizeof(int32_t) * (size + 1));
    int32_t *voc = malloc(sizeof(int32_t) * (size + 1));
    char *again = malloc(size + 1);
    MUST(cps && ids && voc && again);
    int64_t n = -1, m = -1;
    sp_status st = sp_utf8_decode(data, size, cps, &n);
    const size_t bom = size >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF ? 3 : 0;
    if (st != SP_OK) {
        MUST(st == SP_EFORMAT && n == 0);
        const int32_t any = 'a';
        MUST(sp_text_encode(data, size, &any, 1, ids, &m) != SP_OK);
        goto out;
    }
    /* one encoding per scalar value: re-encoding gives the input back */
    size_t len = 0;
    for (int64_t i = 0; i < n; i++) {
        char u[4];
        int k = sp_utf8_encode(cps[i], u);
        MUST(k >= 1 && len + (size_t)k <= size - bom);
        memcpy(again + len, u, (size_t)k);
        len += (size_t)k;
    }
    MUST(len == size - bom && memcmp(again, data + bom, len) == 0);
    if (n == 0) goto out;
    /* the vocabulary of its own code points: ids are ranks */
    memcpy(voc, cps, sizeof(int32_t) * (size_t)n);
    qsort(voc, (size_t)n, sizeof *voc, cmp_i32);
    int64_t v = 0;
    for (int64_t i = 0; i < n; i++)
        if (v == 0 || voc[i] != voc[v - 1]) voc[v++] = voc[i];
    MUST(sp_text_encode(data, size, voc, v, ids, &m) == SP_OK && m == n);
    for (int64_t i = 0; i < n; i++) MUST(ids[i] >= 0 && ids[i] < v && voc[ids[i]] == cps[i]);
    /* without the first character's code point: refused (unless it was the only one) */
    if (v > 1) {
        const int64_t gone = sp_vocab_find(voc, v, cps[0]);
        memmove(voc + gone, voc + gone + 1, sizeof(int32_t) * (size_t)(v - gone - 1));
        MUST(sp_text_encode(data, size, voc, v - 1, ids, &m) == SP_EINVAL);
    }
out:
    free(cps);
    free(ids);
    free(voc);
    free(again);
    return 0;
}
