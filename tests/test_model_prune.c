/*
 * test_model_prune.c - one-shot pruning of a whole model (sp_model_prune): the pruned layers
 * keep the right number of weights in the requested format, the pruned model computes what the
 * dense model computes with the pruned weights zeroed, and it survives save and load.
 */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"

static const char *MLP = "flatten\nlinear out=24\nrelu\nlinear out=16\nrelu\nlinear out=classes\n";
static const sp_shape IN = {1, 4, 8}; /* 32 inputs */

static sp_model *trained_like(void) {
    sp_model *m = NULL;
    if (sp_model_new(MLP, IN, 4, 9, &m) != SP_OK) return NULL;
    return m;
}

/* The dense model with every weight its pruned copy does not store set to zero. */
static sp_model *zeroed_reference(const sp_model *dense, const sp_model *pruned) {
    /* a copy of `dense` (with its own patterns, if it has sparse layers) */
    sp_model *r = NULL;
    sp_mask *pats[16] = {NULL};
    int n = sp_model_nlayers(dense);
    for (int i = 0; i < n && i < 16; i++) sp_model_layer_pattern(dense, i, &pats[i]);
    sp_status st = sp_model_new_with_patterns(sp_model_config(dense), IN, 4, sp_model_seed(dense),
                                              1 << 20, (const sp_mask *const *)pats, n, &r);
    for (int i = 0; i < 16; i++) sp_mask_free(pats[i]);
    if (st != SP_OK || sp_model_nparams(r) != sp_model_nparams(dense)) {
        CHECK_MSG(false, "reference copy: %s", sp_last_error());
        sp_model_free(r);
        return NULL;
    }
    memcpy(sp_model_params(r), sp_model_params((sp_model *)dense),
           sizeof(float) * (size_t)sp_model_nparams(r));
    for (int i = 0; i < sp_model_nlayers(r); i++) {
        sp_mask *p = NULL;
        if (sp_model_layer_pattern(pruned, i, &p) != SP_OK || !p) continue;
        sp_layer_info li;
        sp_model_layer(r, i, &li);
        float *w = malloc(sizeof(float) * (size_t)(li.out.c * li.in.c));
        if (w && sp_model_layer_get_weight(r, i, w, NULL) == SP_OK) {
            sp_mask_apply(p, w, li.in.c);
            sp_model_layer_set_weight(r, i, w, NULL);
        }
        free(w);
        sp_mask_free(p);
    }
    return r;
}

static void check_same_outputs(const sp_model *a, const sp_model *b) {
    float x[32 * 5];
    for (int i = 0; i < 32 * 5; i++) x[i] = 0.1f * (float)((i * 7) % 13) - 0.5f;
    const float *ya, *yb;
    CHECK_OK(sp_model_forward((sp_model *)a, x, 5, false, &ya));
    float copy[4 * 5];
    memcpy(copy, ya, sizeof copy);
    CHECK_OK(sp_model_forward((sp_model *)b, x, 5, false, &yb));
    CHECK_CLOSE(yb, copy, NULL, 20, ((sp_tol){1e-5, 1e-4}));
}

TEST(model_prune_layerwise_csr_keeps_the_largest_weights) {
    sp_model *m = trained_like(), *p = NULL;
    if (!m) return;
    sp_prune_spec spec = {.criterion = SP_PRUNE_MAGNITUDE, .granularity = SP_PRUNE_LAYERWISE,
                          .sparsity = 0.75, .keep_last = true};
    CHECK_OK(sp_model_prune(m, &spec, &p));
    if (p) {
        sp_layer_info li;
        CHECK_OK(sp_model_layer(p, 1, &li));
        CHECK(strcmp(li.format, "csr") == 0);
        CHECK_EQ(li.nparam, 24 * 32 / 4 + 24);
        CHECK_OK(sp_model_layer(p, 3, &li));
        CHECK_EQ(li.nparam, 16 * 24 / 4 + 16);
        CHECK_OK(sp_model_layer(p, 5, &li));
        CHECK(strcmp(li.format, "dense") == 0); /* keep_last */
        /* the kept weights are the largest of the layer */
        float w[24 * 32], kept_min = INFINITY, dropped_max = 0.0f;
        CHECK_OK(sp_model_layer_get_weight(m, 1, w, NULL));
        sp_mask *pat = NULL;
        CHECK_OK(sp_model_layer_pattern(p, 1, &pat));
        for (int64_t k = 0; pat && k < 24 * 32; k++) {
            float a = fabsf(w[k]);
            if (sp_mask_get(pat, k / 32, k % 32)) kept_min = fminf(kept_min, a);
            else dropped_max = fmaxf(dropped_max, a);
        }
        CHECK(kept_min >= dropped_max);
        sp_mask_free(pat);
        sp_model *r = zeroed_reference(m, p);
        if (r) check_same_outputs(r, p);
        sp_model_free(r);
        /* save and load keep the pruned structure and weights */
        char path[128];
        snprintf(path, sizeof path, "/tmp/sparrow_test_%d_pruned", (int)getpid());
        CHECK_OK(sp_checkpoint_save(path, p, NULL, NULL, NULL));
        sp_checkpoint c = {0};
        CHECK_OK(sp_checkpoint_load(path, &c));
        if (c.model) {
            CHECK_EQ(sp_model_nparams(c.model), sp_model_nparams(p));
            check_same_outputs(p, c.model);
        }
        sp_checkpoint_free(&c);
        unlink(path);
    }
    sp_model_free(p);
    sp_model_free(m);
}

TEST(model_prune_global_nm_block_and_mask) {
    sp_model *m = trained_like();
    if (!m) return;
    static const struct {
        sp_prune_granularity g;
        const char *format;
        const char *want_format;
    } cases[] = {{SP_PRUNE_GLOBAL, NULL, "csr"}, {SP_PRUNE_NM, NULL, "nm"},
                 {SP_PRUNE_BLOCK, NULL, "bsr"}, {SP_PRUNE_LAYERWISE, "mask", "mask"},
                 {SP_PRUNE_NM, "csr", "csr"}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        sp_prune_spec spec = {.criterion = SP_PRUNE_MAGNITUDE, .granularity = cases[k].g,
                              .sparsity = 0.5, .n = 2, .m = 4, .br = 4, .bc = 4,
                              .format = cases[k].format};
        sp_model *p = NULL;
        CHECK_OK(sp_model_prune(m, &spec, &p));
        if (!p) continue;
        sp_layer_info li;
        CHECK_OK(sp_model_layer(p, 1, &li));
        CHECK_MSG(strcmp(li.format, cases[k].want_format) == 0, "case %zu: %s", k, li.format);
        int64_t nnz = 0;
        for (int i = 0; i < sp_model_nlayers(p); i++) {
            sp_mask *pat = NULL;
            CHECK_OK(sp_model_layer_pattern(p, i, &pat));
            if (pat) nnz += sp_mask_count(pat);
            sp_mask_free(pat);
        }
        /* half of 24*32 + 16*24 + 4*16 = 1216 weights */
        CHECK_MSG(nnz == 608, "case %zu: %lld kept", k, (long long)nnz);
        sp_model *r = zeroed_reference(m, p);
        if (r) check_same_outputs(r, p);
        sp_model_free(r);
        sp_model_free(p);
    }
    sp_model_free(m);
}

TEST(model_prune_rejects_bad_settings) {
    sp_model *m = trained_like(), *p = NULL;
    if (!m) return;
    sp_prune_spec spec = {.criterion = SP_PRUNE_MAGNITUDE, .sparsity = 1.0};
    CHECK_STATUS(sp_model_prune(m, &spec, &p), SP_EINVAL);
    spec.sparsity = -0.1;
    CHECK_STATUS(sp_model_prune(m, &spec, &p), SP_EINVAL);
    spec = (sp_prune_spec){.criterion = SP_PRUNE_MAGNITUDE, .granularity = SP_PRUNE_NM, .n = 2,
                           .m = 5};
    CHECK_STATUS(sp_model_prune(m, &spec, &p), SP_ESHAPE); /* 32 inputs: not groups of 5 */
    spec = (sp_prune_spec){.criterion = SP_PRUNE_SNIP, .sparsity = 0.5};
    CHECK_STATUS(sp_model_prune(m, &spec, &p), SP_EINVAL);
    spec = (sp_prune_spec){.criterion = SP_PRUNE_MAGNITUDE, .sparsity = 0.5, .format = "coo"};
    CHECK_STATUS(sp_model_prune(m, &spec, &p), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "coo") != NULL);
    CHECK(p == NULL);
    sp_model_free(m);
}

TEST(model_prune_again_keeps_earlier_patterns_and_bsr_holds_zeros) {
    sp_model *m = trained_like(), *p1 = NULL, *p2 = NULL, *pb = NULL;
    if (!m) return;
    /* prune the first layers, then the last one too: the earlier patterns must survive */
    sp_prune_spec spec = {.criterion = SP_PRUNE_MAGNITUDE, .sparsity = 0.5, .keep_last = true};
    CHECK_OK(sp_model_prune(m, &spec, &p1));
    spec.keep_last = false;
    if (p1) CHECK_OK(sp_model_prune(p1, &spec, &p2));
    if (p1 && p2) {
        for (int i = 0; i < 4; i++) {
            sp_mask *a = NULL, *b = NULL;
            CHECK_OK(sp_model_layer_pattern(p1, i, &a));
            CHECK_OK(sp_model_layer_pattern(p2, i, &b));
            CHECK((a == NULL) == (b == NULL));
            if (a && b) CHECK(memcmp(a->bits, b->bits, 8 * (size_t)(a->rows * a->words_per_row)) == 0);
            sp_mask_free(a);
            sp_mask_free(b);
        }
        sp_model *r = zeroed_reference(p1, p2);
        if (r) check_same_outputs(r, p2);
        sp_model_free(r);
    }
    /* BSR stores whole blocks: with an unstructured mask, the pruned entries inside kept blocks
     * must be zero, so the model computes the masked weights */
    spec = (sp_prune_spec){.criterion = SP_PRUNE_MAGNITUDE, .sparsity = 0.9, .format = "bsr",
                           .br = 4, .bc = 4, .keep_last = true};
    CHECK_OK(sp_model_prune(m, &spec, &pb));
    if (pb) {
        sp_layer_info li;
        CHECK_OK(sp_model_layer(pb, 1, &li));
        CHECK(strcmp(li.format, "bsr") == 0);
        CHECK_MSG(li.nnz - 24 <= 24 * 32 / 10 + 1, "%lld nonzero weights", (long long)li.nnz);
        float w[24 * 32];
        sp_mask *pat = NULL;
        CHECK_OK(sp_model_layer_get_weight(pb, 1, w, NULL));
        sp_prune_spec s2 = spec;
        s2.format = "csr";
        sp_model *pc = NULL;
        CHECK_OK(sp_model_prune(m, &s2, &pc));
        if (pc) {
            CHECK_OK(sp_model_layer_pattern(pc, 1, &pat));
            for (int64_t k = 0; pat && k < 24 * 32; k++)
                if (!sp_mask_get(pat, k / 32, k % 32)) CHECK(w[k] == 0.0f);
            sp_model *r = zeroed_reference(m, pc);
            if (r) check_same_outputs(r, pb);
            sp_model_free(r);
        }
        sp_mask_free(pat);
        sp_model_free(pc);
    }
    sp_model_free(pb);
    sp_model_free(p1);
    sp_model_free(p2);
    sp_model_free(m);
}
