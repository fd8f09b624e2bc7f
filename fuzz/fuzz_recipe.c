/*
 * fuzz_recipe.c - libFuzzer target for the recipe parser (sp_recipe_parse, docs/RECIPES.md):
 * the input is recipe text. An error must come with a message and no recipe; a recipe that
 * comes out must hold only well-formed settings (a valid name, not 'recipe' or 'resume', no
 * name twice, at most one value without blanks) and layers (sparsity in [0, 1), no name twice),
 * its --prune-layers list must join the layers, and written back as text ("name value" and
 * "prune-layer NAME S" lines) it must parse to the same settings and layers.
 *
 * The same function is replayed over fuzz/corpus/recipe/ by tests/test_corpus.c.
 * Build and run: make fuzz FUZZ_TARGETS=recipe. Seeds: fuzz/corpus/recipe/ (the example recipes and two more).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/sparrow.h"

#include "fuzz.h"

static bool well_formed_word(const char *w) {
    if (!w || !*w) return false;
    for (const char *p = w; *p; p++)
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == '#' ||
            (unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sp_recipe *r = (sp_recipe *)(uintptr_t)1; /* must be reset to NULL on error */
    sp_clear_error();
    sp_status st = sp_recipe_parse((const char *)data, size, &r);
    if (st != SP_OK) {
        MUST(r == NULL && (st == SP_EFORMAT || st == SP_EINVAL) && sp_last_error()[0] != '\0');
        return 0;
    }
    const int n = sp_recipe_count(r), nl = sp_recipe_nlayers(r);
    MUST(n >= 0 && n <= 64 && nl >= 0 && nl <= 256 && n + nl >= 1);
    /* written back as text, one line each */
    size_t cap = 64;
    for (int i = 0; i < n; i++) {
        const char *k, *v;
        int line;
        MUST(sp_recipe_setting(r, i, &k, &v, &line) == SP_OK);
        MUST(line >= 1 && well_formed_word(k) && k[0] >= 'a' && k[0] <= 'z');
        MUST(strcmp(k, "recipe") && strcmp(k, "resume") && strcmp(k, "prune-layer"));
        MUST(v == NULL || well_formed_word(v));
        for (int j = 0; j < i; j++) {
            const char *kj;
            MUST(sp_recipe_setting(r, j, &kj, NULL, NULL) == SP_OK && strcmp(k, kj) != 0);
        }
        cap += strlen(k) + (v ? strlen(v) + 1 : 0) + 1;
    }
    MUST(sp_recipe_setting(r, n, NULL, NULL, NULL) == SP_EINVAL);
    const char *joined = sp_recipe_layers(r);
    MUST((nl == 0) == (joined == NULL));
    size_t at = 0;
    for (int i = 0; i < nl; i++) {
        const char *name;
        double s;
        int line;
        MUST(sp_recipe_layer(r, i, &name, &s, &line) == SP_OK);
        MUST(line >= 1 && well_formed_word(name) && strlen(name) <= 15 && isfinite(s) &&
             s >= 0.0 && s < 1.0);
        /* the joined list: NAME=S entries in order */
        const size_t len = strlen(name);
        MUST(strncmp(joined + at, name, len) == 0 && joined[at + len] == '=');
        const char *comma = strchr(joined + at, ',');
        at = comma ? (size_t)(comma - joined) + 1 : strlen(joined);
        MUST((i == nl - 1) == (comma == NULL));
        cap += strlen("prune-layer ") + len + 1 + 64 + 1;
    }
    char *text = malloc(cap), *p = text;
    MUST(text != NULL);
    for (int i = 0; i < n; i++) {
        const char *k, *v;
        sp_recipe_setting(r, i, &k, &v, NULL);
        p += sprintf(p, v ? "%s %s\n" : "%s\n", k, v);
    }
    /* the layers from the joined list, each sparsity as written */
    const char *q = joined;
    for (int i = 0; i < nl; i++) {
        const char *eq = strchr(q, '='), *end = strchr(q, ',');
        if (!end) end = q + strlen(q);
        p += sprintf(p, "prune-layer %.*s %.*s\n", (int)(eq - q), q, (int)(end - eq - 1), eq + 1);
        q = *end ? end + 1 : end;
    }
    sp_recipe *again = NULL;
    MUST(sp_recipe_parse(text, (size_t)(p - text), &again) == SP_OK);
    MUST(sp_recipe_count(again) == n && sp_recipe_nlayers(again) == nl);
    for (int i = 0; i < n; i++) {
        const char *k1, *v1, *k2, *v2;
        sp_recipe_setting(r, i, &k1, &v1, NULL);
        sp_recipe_setting(again, i, &k2, &v2, NULL);
        MUST(!strcmp(k1, k2) && (v1 == NULL) == (v2 == NULL) && (!v1 || !strcmp(v1, v2)));
    }
    for (int i = 0; i < nl; i++) {
        const char *n1, *n2;
        double s1, s2;
        sp_recipe_layer(r, i, &n1, &s1, NULL);
        sp_recipe_layer(again, i, &n2, &s2, NULL);
        MUST(!strcmp(n1, n2) && s1 == s2);
    }
    MUST(nl == 0 || !strcmp(sp_recipe_layers(again), joined));
    sp_recipe_free(again);
    free(text);
    sp_recipe_free(r);
    return 0;
}
