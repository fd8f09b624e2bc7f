/*
 * test_gradual.c - pruning while training: masks replaced in place, optimizer state cleared for
 * dropped weights, the Zhu & Gupta schedule driving sp_train through its hook, and masked layers
 * converted to sparse storage afterwards.
 */
#include <math.h>
#include <stdlib.h>

#include "test.h"
#include "toy_data.h"

static const sp_shape TOY_IN = {1, 4, 4};
static const char *TOY_MLP = "flatten\nlinear out=24\nrelu\nlinear out=16   # hidden\nrelu\n"
                             "linear out=classes\n";

/* TOY_MLP with its dense linear layers behind all-ones masks (the last one stays dense). */
static sp_model *masked_model(uint64_t seed) {
    sp_model *d = NULL, *m = NULL;
    if (sp_model_new(TOY_MLP, TOY_IN, 4, seed, &d) != SP_OK) return NULL;
    sp_prune_spec ms = {.granularity = SP_PRUNE_LAYERWISE, .sparsity = 0.0, .format = "mask",
                        .keep_last = true};
    sp_status st = sp_model_prune(d, &ms, &m);
    CHECK_MSG(st == SP_OK, "to masks: %s", sp_last_error());
    sp_model_free(d);
    return m;
}

/* Dropped entries of layer i: those outside its pattern. Checks that each is exactly zero. */
static int64_t check_dropped_are_zero(const sp_model *m, int i) {
    sp_layer_info li;
    sp_model_layer(m, i, &li);
    sp_mask *p = NULL;
    CHECK_OK(sp_model_layer_pattern(m, i, &p));
    if (!p) return -1;
    float *w = malloc(sizeof(float) * (size_t)(li.out.c * li.in.c));
    CHECK_OK(sp_model_layer_get_weight(m, i, w, NULL));
    int64_t dropped = 0, nonzero = 0;
    for (int64_t r = 0; r < li.out.c; r++)
        for (int64_t c = 0; c < li.in.c; c++)
            if (!sp_mask_get(p, r, c)) {
                dropped++;
                nonzero += w[r * li.in.c + c] != 0.0f;
            }
    CHECK_MSG(nonzero == 0, "layer %d: %lld dropped weights are not zero", i, (long long)nonzero);
    free(w);
    sp_mask_free(p);
    return dropped;
}

TEST(set_pattern_replaces_a_mask_and_refuses_other_layers) {
    sp_model *m = masked_model(3), *d = NULL;
    if (!m) return;
    sp_layer_info li;
    sp_model_layer(m, 1, &li); /* linear 24 x 16 */
    CHECK(!strcmp(li.format, "mask"));
    sp_mask *k = NULL;
    CHECK_OK(sp_mask_new(li.out.c, li.in.c, &k));
    for (int64_t r = 0; r < li.out.c; r++) sp_mask_set(k, r, r % li.in.c, true);
    CHECK_OK(sp_model_layer_set_pattern(m, 1, k));
    CHECK_EQ(check_dropped_are_zero(m, 1), li.out.c * li.in.c - li.out.c);
    /* wrong shape, a dense layer, an index out of range */
    sp_mask *bad = NULL;
    CHECK_OK(sp_mask_new(li.out.c, li.in.c + 1, &bad));
    CHECK_STATUS(sp_model_layer_set_pattern(m, 1, bad), SP_ESHAPE);
    CHECK(strstr(sp_last_error(), "17") != NULL);
    CHECK_STATUS(sp_model_layer_set_pattern(m, 5, k), SP_EINVAL); /* the dense output layer */
    CHECK(strstr(sp_last_error(), "format=mask") != NULL);
    CHECK_STATUS(sp_model_layer_set_pattern(m, 0, k), SP_EINVAL); /* flatten */
    CHECK_STATUS(sp_model_layer_set_pattern(m, 99, k), SP_EINVAL);
    CHECK_OK(sp_model_new(TOY_MLP, TOY_IN, 4, 3, &d));
    CHECK_STATUS(sp_model_layer_set_pattern(d, 1, k), SP_EINVAL);
    sp_mask_free(k);
    sp_mask_free(bad);
    sp_model_free(m);
    sp_model_free(d);
}

TEST(optim_mask_state_clears_only_dropped_entries) {
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
    sp_optim *o = NULL;
    CHECK_OK(sp_optim_new(&oc, 20, &o));
    float p[20], g[20];
    for (int i = 0; i < 20; i++) p[i] = 1.0f, g[i] = 0.5f + (float)i;
    CHECK_OK(sp_optim_step(o, p, g, 0.1f));
    sp_mask *k = NULL;
    CHECK_OK(sp_mask_new(3, 4, &k)); /* parameters 5..16 */
    sp_mask_set(k, 0, 1, true);
    sp_mask_set(k, 2, 3, true);
    CHECK_OK(sp_optim_mask_state(o, 5, k));
    const float *s = sp_optim_state(o);
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 20; i++) {
            bool kept = i < 5 || i > 16 || i == 5 + 1 || i == 5 + 2 * 4 + 3;
            CHECK_MSG((s[c * 20 + i] != 0.0f) == kept, "state %d of parameter %d is %g", c, i,
                      (double)s[c * 20 + i]);
        }
    CHECK_STATUS(sp_optim_mask_state(o, 9, k), SP_EINVAL); /* 9 + 12 > 20 */
    CHECK_STATUS(sp_optim_mask_state(o, -1, k), SP_EINVAL);
    sp_mask_free(k);
    sp_optim_free(o);
}

TEST(prune_masks_is_monotone_and_keeps_the_largest) {
    sp_model *m = masked_model(5);
    if (!m) return;
    sp_prune_spec sp = {.criterion = SP_PRUNE_MAGNITUDE, .granularity = SP_PRUNE_LAYERWISE,
                        .keep_last = true};
    CHECK_OK(sp_model_prune_masks(m, NULL, &sp, 0.5));
    CHECK_EQ(check_dropped_are_zero(m, 1), 24 * 16 / 2);
    CHECK_EQ(check_dropped_are_zero(m, 3), 16 * 24 / 2);
    CHECK_EQ(check_dropped_are_zero(m, 5), -1); /* the output layer: dense, untouched */
    /* the kept half of layer 1 holds its largest magnitudes */
    sp_mask *p1 = NULL;
    float w[24 * 16];
    CHECK_OK(sp_model_layer_pattern(m, 1, &p1));
    CHECK_OK(sp_model_layer_get_weight(m, 1, w, NULL));
    float min_kept = INFINITY;
    int64_t kept_count = 0;
    for (int i = 0; i < 24 * 16; i++)
        if (sp_mask_get(p1, i / 16, i % 16)) min_kept = fminf(min_kept, fabsf(w[i])), kept_count++;
    CHECK_EQ(kept_count, 24 * 16 / 2);
    CHECK(min_kept > 0.0f);
    /* random scores from a new seed would pick other entries; dropped ones must stay dropped */
    sp.criterion = SP_PRUNE_RANDOM;
    sp.seed = 77;
    CHECK_OK(sp_model_prune_masks(m, NULL, &sp, 0.75));
    sp_mask *p2 = NULL;
    CHECK_OK(sp_model_layer_pattern(m, 1, &p2));
    int64_t revived = 0;
    for (int i = 0; i < 24 * 16; i++)
        revived += sp_mask_get(p2, i / 16, i % 16) && !sp_mask_get(p1, i / 16, i % 16);
    CHECK_EQ(revived, 0);
    CHECK_EQ(sp_mask_count(p2), 24 * 16 / 4);
    /* a lower target than the layer has leaves it as it is: nothing comes back */
    sp.criterion = SP_PRUNE_MAGNITUDE;
    CHECK_OK(sp_model_prune_masks(m, NULL, &sp, 0.5));
    CHECK_EQ(check_dropped_are_zero(m, 1), 24 * 16 * 3 / 4);
    sp.granularity = SP_PRUNE_GLOBAL;
    CHECK_OK(sp_model_prune_masks(m, NULL, &sp, 0.0));
    CHECK_EQ(check_dropped_are_zero(m, 3), 16 * 24 * 3 / 4);
    sp.granularity = SP_PRUNE_LAYERWISE;
    /* global: one threshold over both layers' 768 weights */
    sp.criterion = SP_PRUNE_MAGNITUDE;
    sp.granularity = SP_PRUNE_GLOBAL;
    CHECK_OK(sp_model_prune_masks(m, NULL, &sp, 0.875));
    CHECK_EQ(check_dropped_are_zero(m, 1) + check_dropped_are_zero(m, 3), 768 - 96);
    /* bad settings */
    CHECK_STATUS(sp_model_prune_masks(m, NULL, &sp, 1.0), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "sparsity 1") != NULL);
    CHECK_STATUS(sp_model_prune_masks(m, NULL, &sp, NAN), SP_EINVAL);
    sp.criterion = SP_PRUNE_SNIP;
    CHECK_STATUS(sp_model_prune_masks(m, NULL, &sp, 0.9), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "snip") != NULL);
    sp_mask_free(p1);
    sp_mask_free(p2);
    sp_model_free(m);
    /* a model without masked layers */
    sp_model *d = NULL;
    CHECK_OK(sp_model_new(TOY_MLP, TOY_IN, 4, 3, &d));
    sp.criterion = SP_PRUNE_MAGNITUDE;
    CHECK_STATUS(sp_model_prune_masks(d, NULL, &sp, 0.5), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "no masked linear layer") != NULL);
    sp_model_free(d);
}

/* Counts hook calls that update, and checks the sparsity each applies against the closed
 * form of the schedule. */
typedef struct hook_probe {
    sp_prune_gradual g;
    int64_t calls, last_step;
    bool order_ok;
} hook_probe;

static sp_status probe_hook(sp_model *m, sp_optim *o, int64_t step, void *user) {
    hook_probe *h = user;
    h->order_ok = h->order_ok && step == h->last_step + 1;
    h->last_step = step;
    h->calls++;
    return sp_prune_gradual_hook(m, o, step, &h->g);
}

TEST(gradual_pruning_in_training_follows_the_schedule_and_pruned_weights_stay_zero) {
    sp_dataset *d = test_toy_dataset(160, 21); /* 10 batches of 16 per epoch */
    sp_model *m = masked_model(7), *s = NULL;
    sp_optim *o = NULL;
    if (!d || !m) goto done;
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
    CHECK_OK(sp_optim_new(&oc, sp_model_nparams(m), &o));
    hook_probe h = {.g = {.spec = {.criterion = SP_PRUNE_MAGNITUDE,
                                   .granularity = SP_PRUNE_LAYERWISE, .keep_last = true},
                          .sched = {.s_i = 0.0, .s_f = 0.8, .t0 = 3, .dt = 4, .n = 5}},
                    .last_step = -1, .order_ok = true};
    sp_train_opts to = {.epochs = 3, .batch = 16,
                        .sched = {.kind = SP_SCHED_CONSTANT, .lr = 0.01},
                        .nthreads = 1, .hook = probe_hook, .hook_user = &h};
    sp_train_state state = {.data_seed = 4};
    CHECK_OK(sp_train(m, o, d, NULL, &to, &state));
    CHECK_EQ(h.calls, 30);
    CHECK(h.order_ok);
    CHECK_EQ(h.g.updates, 6); /* t = 3, 7, 11, 15, 19, 23 */
    CHECK(h.g.sparsity == 0.8);
    /* 7 steps after the last update under Adam, the dropped weights are still exactly zero */
    CHECK_EQ(check_dropped_are_zero(m, 1), (int64_t)llround(0.8 * 24 * 16));
    CHECK_EQ(check_dropped_are_zero(m, 3), (int64_t)llround(0.8 * 16 * 24));
    /* the closed form at an update in between: t = 11 is 2 of 5 intervals in */
    double s11 = 0.0;
    CHECK_OK(sp_prune_schedule_sparsity(&h.g.sched, 11, &s11));
    CHECK(fabs(s11 - 0.8 * (1.0 - pow(1.0 - 8.0 / 20.0, 3))) < 1e-12);
    /* to CSR: the same function, stored sparse, the masks gone */
    CHECK_OK(sp_model_sparsify(m, "csr", 0, 0, &s));
    if (s) {
        sp_layer_info a, b;
        sp_model_layer(s, 1, &a);
        sp_model_layer(s, 3, &b);
        CHECK(!strcmp(a.format, "csr") && !strcmp(b.format, "csr"));
        CHECK_EQ(a.nparam, (int64_t)llround(0.2 * 24 * 16) + 24);
        CHECK(strstr(sp_model_config(s), "format=mask") == NULL);
        float x[16 * 6];
        for (int i = 0; i < 16 * 6; i++) x[i] = 0.05f * (float)((i * 5) % 17);
        const float *ya, *yb;
        float copy[4 * 6];
        CHECK_OK(sp_model_forward(m, x, 6, false, &ya));
        memcpy(copy, ya, sizeof copy);
        CHECK_OK(sp_model_forward(s, x, 6, false, &yb));
        CHECK_CLOSE(yb, copy, NULL, 24, ((sp_tol){1e-5, 1e-4}));
    }
    sp_model_free(s);
    s = NULL;
    CHECK_OK(sp_model_sparsify(m, "bsr", 2, 4, &s));
    if (s) {
        sp_layer_info a;
        sp_model_layer(s, 1, &a);
        CHECK(!strcmp(a.format, "bsr"));
        CHECK(check_dropped_are_zero(s, 1) >= 0);
    }
    sp_model_free(s);
    s = NULL;
    CHECK_STATUS(sp_model_sparsify(m, "coo", 0, 0, &s), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "'coo'") != NULL);
    CHECK_STATUS(sp_model_sparsify(m, "bsr", 0, 4, &s), SP_EINVAL);
    CHECK(s == NULL);
done:
    sp_model_free(m);
    sp_optim_free(o);
    sp_dataset_free(d);
}

TEST(a_failing_hook_stops_training_with_its_error) {
    sp_dataset *d = test_toy_dataset(64, 22);
    sp_model *m = NULL; /* dense: prune_masks finds nothing to prune at t0 = 2 */
    sp_optim *o = NULL;
    if (!d) return;
    CHECK_OK(sp_model_new(TOY_MLP, TOY_IN, 4, 3, &m));
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_SGD);
    CHECK_OK(sp_optim_new(&oc, sp_model_nparams(m), &o));
    sp_prune_gradual g = {.spec = {.criterion = SP_PRUNE_MAGNITUDE},
                          .sched = {.s_i = 0.5, .s_f = 0.5, .t0 = 2, .dt = 1, .n = 1}};
    sp_train_opts to = {.epochs = 1, .batch = 16, .sched = {.kind = SP_SCHED_CONSTANT, .lr = 0.01},
                        .nthreads = 1, .hook = sp_prune_gradual_hook, .hook_user = &g};
    sp_train_state state = {.data_seed = 4};
    CHECK_STATUS(sp_train(m, o, d, NULL, &to, &state), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "no masked linear layer") != NULL);
    CHECK_EQ(state.step, 2);
    sp_model_free(m);
    sp_optim_free(o);
    sp_dataset_free(d);
}

TEST(prune_masks_per_layer_overrides_and_nm_to_nm_storage) {
    sp_model *m = masked_model(9), *s = NULL;
    if (!m) return;
    double own[6] = {-1, -1, -1, 0.25, -1, -1};
    sp_prune_spec sp = {.criterion = SP_PRUNE_MAGNITUDE, .granularity = SP_PRUNE_GLOBAL,
                        .keep_last = true, .layer_sparsity = own, .nlayer_sparsity = 6};
    CHECK_OK(sp_model_prune_masks(m, NULL, &sp, 0.5)); /* layer 1 alone in the global pool */
    CHECK_EQ(check_dropped_are_zero(m, 1), 24 * 16 / 2);
    CHECK_EQ(check_dropped_are_zero(m, 3), 16 * 24 / 4);
    own[3] = 1.0;
    CHECK_STATUS(sp_model_prune_masks(m, NULL, &sp, 0.5), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "layer 3") != NULL);
    sp_model_free(m);

    /* 2:4 masks, stored as N:M */
    m = masked_model(9);
    if (!m) return;
    sp_prune_spec nm = {.criterion = SP_PRUNE_MAGNITUDE, .granularity = SP_PRUNE_NM, .n = 2,
                        .m = 4, .keep_last = true};
    CHECK_OK(sp_model_prune_masks(m, NULL, &nm, 0.0));
    CHECK_EQ(check_dropped_are_zero(m, 1), 24 * 16 / 2);
    CHECK_STATUS(sp_model_sparsify(m, "nm", 1, 4, &s), SP_EFORMAT); /* 2 set in a group of 4 */
    CHECK(s == NULL);
    CHECK_STATUS(sp_model_sparsify(m, "nm", 4, 4, &s), SP_EINVAL);
    CHECK_OK(sp_model_sparsify(m, "nm", 2, 4, &s));
    if (s) {
        sp_layer_info a;
        sp_model_layer(s, 3, &a);
        CHECK(!strcmp(a.format, "nm"));
        float x[16 * 3];
        for (int i = 0; i < 16 * 3; i++) x[i] = 0.03f * (float)((i * 11) % 19);
        const float *ya, *yb;
        float copy[4 * 3];
        CHECK_OK(sp_model_forward(m, x, 3, false, &ya));
        memcpy(copy, ya, sizeof copy);
        CHECK_OK(sp_model_forward(s, x, 3, false, &yb));
        CHECK_CLOSE(yb, copy, NULL, 12, ((sp_tol){1e-5, 1e-4}));
    }
    sp_model_free(s);
    sp_model_free(m);
}

TEST(auto_format_picks_a_measured_format_that_computes_the_same) {
    sp_model *m = masked_model(11), *s = NULL;
    if (!m) return;
    sp_prune_spec nm = {.criterion = SP_PRUNE_MAGNITUDE, .granularity = SP_PRUNE_NM, .n = 2,
                        .m = 4, .keep_last = true};
    CHECK_OK(sp_model_prune_masks(m, NULL, &nm, 0.0));
    char opt[64];
    double ms = -1.0;
    CHECK_OK(sp_prune_pick_format(m, 1, 8, 1, opt, sizeof opt, &ms));
    CHECK(ms > 0.0);
    CHECK(!strncmp(opt, "format=", 7));
    CHECK_STATUS(sp_prune_pick_format(m, 5, 8, 1, opt, sizeof opt, NULL), SP_EINVAL); /* dense */
    CHECK(strstr(sp_last_error(), "5.linear") != NULL);
    CHECK_STATUS(sp_prune_pick_format(m, 1, 0, 1, opt, sizeof opt, NULL), SP_EINVAL);
    CHECK_OK(sp_model_sparsify(m, "auto", 8, 1, &s));
    if (s) {
        static const char *const ok[] = {"dense", "csr", "bsr", "nm"};
        for (int i = 1; i <= 3; i += 2) {
            sp_layer_info a;
            sp_model_layer(s, i, &a);
            bool known = false;
            for (int k = 0; k < 4; k++) known = known || !strcmp(a.format, ok[k]);
            CHECK_MSG(known, "layer %d stored as '%s'", i, a.format);
        }
        CHECK(strstr(sp_model_config(s), "format=mask") == NULL);
        float x[16 * 4];
        for (int i = 0; i < 16 * 4; i++) x[i] = 0.04f * (float)((i * 13) % 23) - 0.3f;
        const float *ya, *yb;
        float copy[4 * 4];
        CHECK_OK(sp_model_forward(m, x, 4, false, &ya));
        memcpy(copy, ya, sizeof copy);
        CHECK_OK(sp_model_forward(s, x, 4, false, &yb));
        CHECK_CLOSE(yb, copy, NULL, 16, ((sp_tol){1e-5, 1e-4}));
        /* dense keeps the zeros; CSR and N:M store exactly the pattern; BSR whole blocks */
        sp_layer_info a;
        sp_model_layer(s, 1, &a);
        if (!strcmp(a.format, "csr") || !strcmp(a.format, "nm"))
            CHECK_EQ(check_dropped_are_zero(s, 1), 24 * 16 / 2);
        else if (!strcmp(a.format, "bsr"))
            CHECK(check_dropped_are_zero(s, 1) <= 24 * 16 / 2);
    }
    sp_model_free(s);
    sp_model_free(m);
}
