/*
 * test_dst.c - dynamic sparse training: CSR layers rewired in place (entries dropped and grown
 * without a dense detour, optimizer state following its weights), SET's updates (the right
 * entries dropped, valid and duplicate-free patterns of constant size, determinism), and a
 * rewired layer computing exactly what a freshly built one with the same pattern computes.
 */
#include <math.h>
#include <stdlib.h>

#include "test.h"
#include "toy_data.h"

static const sp_shape IN16 = {1, 4, 4};
static const char *SPARSE_MLP = "flatten\nlinear out=12 format=csr density=0.25\nrelu\n"
                                "linear out=8 format=csr density=0.5\nrelu\nlinear out=classes\n";

/* Checks the CSR invariants of every CSR layer: rows ascending, columns strictly ascending and
 * in range within a row (sp_csr_validate), and the entry count. */
static void check_csr_layers(const sp_model *m, const int64_t *want_nnz) {
    for (int i = 0, c = 0; i < sp_model_nlayers(m); i++) {
        const sp_csr *w = sp_model_layer_csr(m, i);
        if (!w) continue;
        CHECK_MSG(sp_csr_validate(w) == SP_OK, "layer %d: %s", i, sp_last_error());
        if (want_nnz) CHECK_EQ(w->nnz, want_nnz[c]);
        c++;
    }
}

TEST(rewire_drops_and_grows_in_place_and_reports_sources) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("flatten\nlinear out=3 format=csr density=0.5\nlinear out=classes\n",
                          (sp_shape){1, 1, 4}, 2, 5, &m));
    if (!m) return;
    const sp_csr *c = sp_model_layer_csr(m, 1);
    CHECK(c && c->nnz == 6);
    CHECK(sp_model_layer_csr(m, 2) == NULL); /* dense */
    sp_layer_info li;
    sp_model_layer(m, 1, &li);
    float *w = sp_model_params(m) + li.param_offset;
    for (int k = 0; k < 6; k++) w[k] = (float)(k + 1);
    /* the old positions, then drop entries 1 and 4, grow two free positions */
    int64_t old_pos[6];
    for (int64_t i = 0, k = 0; i < 3; i++)
        for (int64_t q = c->row_ptr[i]; q < c->row_ptr[i + 1]; q++) old_pos[k++] = i * 4 + sp_csr_col(c, q);
    int64_t grow[2], ng = 0;
    for (int64_t p = 0; p < 12 && ng < 2; p++) {
        bool taken = false;
        for (int k = 0; k < 6; k++) taken = taken || old_pos[k] == p;
        if (!taken) grow[ng++] = p;
    }
    const int64_t drop[2] = {1, 4};
    int64_t src[6];
    CHECK_OK(sp_model_layer_rewire(m, 1, drop, grow, 2, src));
    CHECK_EQ(c->nnz, 6);
    CHECK_OK(sp_csr_validate(c));
    /* every new entry is either an old survivor with its value, or a grown one at zero */
    int grown = 0;
    for (int64_t i = 0; i < 3; i++)
        for (int64_t q = c->row_ptr[i]; q < c->row_ptr[i + 1]; q++) {
            int64_t pos = i * 4 + sp_csr_col(c, q);
            if (src[q] < 0) {
                CHECK(pos == grow[0] || pos == grow[1]);
                CHECK(w[q] == 0.0f);
                grown++;
            } else {
                CHECK(src[q] != 1 && src[q] != 4);
                CHECK_EQ(pos, old_pos[src[q]]);
                CHECK(w[q] == (float)(src[q] + 1));
            }
        }
    CHECK_EQ(grown, 2);
    /* bad requests change nothing */
    float before[6];
    memcpy(before, w, sizeof before);
    const int64_t bad_drop[2] = {4, 1}, far[2] = {0, 12}, dup_drop[2] = {2, 2};
    CHECK_STATUS(sp_model_layer_rewire(m, 1, bad_drop, grow, 2, src), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "drop[1] = 1") != NULL);
    CHECK_STATUS(sp_model_layer_rewire(m, 1, drop, far, 2, src), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "grow[1] = 12") != NULL);
    CHECK_STATUS(sp_model_layer_rewire(m, 1, dup_drop, grow, 2, src), SP_EINVAL);
    /* growing where an entry is stored (one that is not dropped) */
    int64_t here[1] = {0}, d0[1] = {5};
    here[0] = 0 * 4 + sp_csr_col(c, 0);
    CHECK_STATUS(sp_model_layer_rewire(m, 1, d0, here, 1, src), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "already stored") != NULL);
    CHECK(!memcmp(before, w, sizeof before));
    CHECK_OK(sp_csr_validate(c));
    CHECK_STATUS(sp_model_layer_rewire(m, 2, drop, grow, 2, src), SP_EINVAL); /* dense */
    CHECK(strstr(sp_last_error(), "only CSR") != NULL);
    sp_model_free(m);
}

TEST(optim_remap_moves_state_with_its_weights) {
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
    sp_optim *o = NULL;
    CHECK_OK(sp_optim_new(&oc, 8, &o));
    float p[8] = {0}, g[8];
    for (int i = 0; i < 8; i++) g[i] = (float)(i + 1);
    CHECK_OK(sp_optim_step(o, p, g, 0.1f));
    float m_before[8];
    memcpy(m_before, sp_optim_state(o), sizeof m_before);
    const int64_t src[4] = {2, -1, 0, 3}; /* parameters 3..6 */
    CHECK_OK(sp_optim_remap(o, 3, 4, src));
    const float *s = sp_optim_state(o);
    CHECK(s[3] == m_before[5] && s[4] == 0.0f && s[5] == m_before[3] && s[6] == m_before[6]);
    CHECK(s[8 + 4] == 0.0f);                               /* v too */
    CHECK(s[0] == m_before[0] && s[7] == m_before[7]);     /* outside the range */
    const int64_t bad[4] = {0, 1, 2, 4};
    CHECK_STATUS(sp_optim_remap(o, 3, 4, bad), SP_EINVAL);
    CHECK_STATUS(sp_optim_remap(o, 6, 4, src), SP_EINVAL);
    sp_optim_free(o);
}

TEST(set_update_drops_closest_to_zero_and_keeps_patterns_valid) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(SPARSE_MLP, IN16, 4, 3, &m));
    if (!m) return;
    /* known weights: layer 1's entry k = (k - nnz/2) / 10, so the closest to zero are known */
    const sp_csr *c = sp_model_layer_csr(m, 1);
    sp_layer_info li;
    sp_model_layer(m, 1, &li);
    float *w = sp_model_params(m) + li.param_offset;
    const int64_t nnz1 = c->nnz;
    int64_t pos_before = 0, neg_before = 0;
    for (int64_t k = 0; k < nnz1; k++) {
        w[k] = (float)(k - nnz1 / 2) / 10.0f + 0.05f;
        pos_before += w[k] >= 0.0f;
        neg_before += w[k] < 0.0f;
    }
    const int64_t nnz[2] = {nnz1, sp_model_layer_csr(m, 3)->nnz};
    sp_dst d = {.kind = SP_DST_SET, .update_every = 1, .drop_fraction = 0.25, .seed = 9};
    CHECK_OK(sp_dst_update(m, NULL, &d, 1));
    check_csr_layers(m, nnz);
    CHECK_EQ(d.updates, 1);
    /* the survivors: all but the round(0.25 * count) of each sign closest to zero, so the
     * smallest surviving positive and the largest surviving negative are known */
    const float min_pos = (float)llround(0.25 * (double)pos_before) / 10.0f + 0.05f;
    const float max_neg = -1.0f / 10.0f + 0.05f - (float)llround(0.25 * (double)neg_before) / 10.0f;
    int64_t zeros = 0;
    for (int64_t k = 0; k < nnz1; k++) {
        if (w[k] == 0.0f) {
            zeros++;
            continue;
        }
        CHECK_MSG(w[k] >= min_pos - 1e-6f || w[k] <= max_neg + 1e-6f, "survivor %g", (double)w[k]);
    }
    CHECK_EQ(zeros, llround(0.25 * (double)pos_before) + llround(0.25 * (double)neg_before));
    /* determinism: the same seed and step give the same pattern */
    sp_model *a = NULL, *b = NULL;
    CHECK_OK(sp_model_new(SPARSE_MLP, IN16, 4, 3, &a));
    CHECK_OK(sp_model_new(SPARSE_MLP, IN16, 4, 3, &b));
    sp_dst da = d, db = d;
    CHECK_OK(sp_dst_update(a, NULL, &da, 7));
    CHECK_OK(sp_dst_update(b, NULL, &db, 7));
    const sp_csr *ca = sp_model_layer_csr(a, 3), *cb = sp_model_layer_csr(b, 3);
    CHECK(!memcmp(ca->row_ptr, cb->row_ptr, sizeof(int64_t) * (size_t)(ca->rows + 1)));
    for (int64_t k = 0; k < ca->nnz; k++) CHECK_EQ(sp_csr_col(ca, k), sp_csr_col(cb, k));
    /* a dense layer (90%) has fewer empty positions than zeta asks to regrow: SET replaces only
     * as many as fit */
    sp_model *dz = NULL;
    CHECK_OK(sp_model_new("flatten\nlinear out=8 format=csr density=0.875\nlinear out=classes\n",
                          IN16, 4, 3, &dz));
    if (dz) {
        const int64_t nd[1] = {sp_model_layer_csr(dz, 1)->nnz};
        CHECK_EQ(nd[0], 8 * 14);
        sp_dst dd = {.kind = SP_DST_SET, .update_every = 1, .drop_fraction = 0.5, .seed = 1};
        CHECK_OK(sp_dst_update(dz, NULL, &dd, 1));
        check_csr_layers(dz, nd);
        sp_model_free(dz);
    }
    /* bad settings */
    sp_dst bad = d;
    bad.drop_fraction = 1.0;
    CHECK_STATUS(sp_dst_update(m, NULL, &bad, 1), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "drop fraction 1") != NULL);
    bad = d;
    bad.update_every = 0;
    CHECK_STATUS(sp_dst_update(m, NULL, &bad, 1), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "interval 0") != NULL);
    sp_model_free(a);
    sp_model_free(b);
    sp_model_free(m);
}

/* SET grows at positions drawn uniformly from the empty ones. Over `updates` updates of the
 * same layer (layer 1 of cfg, rows x 16, weights of both signs), each of its empty positions must
 * be grown updates * n / empty times within 6 binomial sd, and no stored one ever. */
static void grows_uniform_case(const char *cfg, int64_t rows, int64_t updates, int64_t n) {
    sp_model *m0 = NULL;
    CHECK_OK(sp_model_new(cfg, IN16, 4, 3, &m0));
    if (!m0) return;
    const sp_csr *c0 = sp_model_layer_csr(m0, 1);
    bool was[256] = {false};
    for (int64_t i = 0; i < rows; i++)
        for (int64_t k = c0->row_ptr[i]; k < c0->row_ptr[i + 1]; k++) was[i * 16 + sp_csr_col(c0, k)] = true;
    const int64_t nnz = c0->nnz, empty = rows * 16 - nnz;
    int64_t count[256] = {0}, grown = 0;
    for (int64_t step = 1; step <= updates && !sp_test_failures(); step++) {
        sp_model *m = NULL;
        CHECK_OK(sp_model_new(cfg, IN16, 4, 3, &m));
        if (!m) break;
        sp_layer_info li;
        sp_model_layer(m, 1, &li);
        float *w = sp_model_params(m) + li.param_offset;
        for (int64_t k = 0; k < nnz; k++) w[k] = k % 2 ? 1.0f + (float)k : -1.0f - (float)k;
        sp_dst d = {.kind = SP_DST_SET, .update_every = 1, .drop_fraction = 0.25, .seed = 5};
        CHECK_OK(sp_dst_update(m, NULL, &d, step));
        const sp_csr *c = sp_model_layer_csr(m, 1);
        for (int64_t i = 0; i < rows; i++)
            for (int64_t k = c->row_ptr[i]; k < c->row_ptr[i + 1]; k++) {
                const int64_t p = i * 16 + sp_csr_col(c, k);
                if (!was[p]) count[p]++, grown++;
            }
        sp_model_free(m);
    }
    CHECK_EQ(grown, updates * n);
    const double mean = (double)(updates * n) / (double)empty;
    const double sd = sqrt(mean * (1.0 - (double)n / (double)empty));
    for (int64_t p = 0; p < rows * 16; p++) {
        if (was[p]) continue;
        CHECK_MSG(fabs((double)count[p] - mean) < 6.0 * sd, "%s: position %lld grown %lld times "
                  "of %lld (expected %.0f)", cfg, (long long)p, (long long)count[p],
                  (long long)updates, mean);
    }
    sp_model_free(m0);
}

TEST(set_grows_uniformly_over_the_empty_positions) {
    /* 4 x 16 at half density: 8 grown of 32 empty a time, by one ordered pass */
    grows_uniform_case("flatten\nlinear out=4 format=csr density=0.5\nlinear out=classes\n",
                       4, 4000, 8);
    /* 8 x 16 with one entry a row: 2 grown of 120 empty a time, by rounds of candidates */
    grows_uniform_case("flatten\nlinear out=8 format=csr density=0.0625\nlinear out=classes\n",
                       8, 12000, 2);
}

/* The hook, checking the patterns after every update. */
typedef struct checked_dst {
    sp_dst d;
    int64_t nnz[2];
    int64_t updates_seen;
} checked_dst;

static sp_status checked_hook(sp_model *m, sp_optim *o, int64_t step, void *user) {
    checked_dst *c = user;
    int64_t before = c->d.updates;
    sp_status st = sp_dst_hook(m, o, step, &c->d);
    if (st == SP_OK && c->d.updates != before) {
        c->updates_seen++;
        check_csr_layers(m, c->nnz);
    }
    return st;
}

TEST(set_training_rewires_learns_and_matches_a_fresh_build) {
    sp_dataset *data = test_toy_dataset(320, 31);
    sp_model *m = NULL, *f = NULL;
    sp_optim *o = NULL;
    if (!data) return;
    CHECK_OK(sp_model_new(SPARSE_MLP, IN16, 4, 4, &m));
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
    CHECK_OK(sp_optim_new(&oc, sp_model_nparams(m), &o));
    checked_dst cd = {.d = {.kind = SP_DST_SET, .update_every = 10, .drop_fraction = 0.3,
                            .seed = 2},
                      .nnz = {sp_model_layer_csr(m, 1)->nnz, sp_model_layer_csr(m, 3)->nnz}};
    sp_train_opts to = {.epochs = 4, .batch = 16, .sched = {.kind = SP_SCHED_CONSTANT, .lr = 0.02},
                        .nthreads = 1, .hook = checked_hook, .hook_user = &cd};
    sp_train_state state = {.data_seed = 5};
    CHECK_OK(sp_train(m, o, data, NULL, &to, &state));
    CHECK_EQ(cd.updates_seen, 7); /* steps 10, 20, ..., 70 of 80 */
    double acc = 0.0;
    CHECK_OK(sp_evaluate(m, data, 64, 1, NULL, &acc, NULL));
    CHECK_MSG(acc > 0.6, "accuracy %.3f on the toy task", acc);
    /* a model built fresh on the rewired patterns, with the same weights, computes the same
     * outputs and the same gradients */
    sp_mask *pats[6] = {NULL};
    for (int i = 0; i < 6; i++) CHECK_OK(sp_model_layer_pattern(m, i, &pats[i]));
    CHECK_OK(sp_model_new_with_patterns(sp_model_config(m), IN16, 4, 4, 1 << 20,
                                        (const sp_mask *const *)pats, 6, &f));
    if (f) {
        CHECK_EQ(sp_model_nparams(f), sp_model_nparams(m));
        for (int i = 0; i < 6; i++) {
            sp_layer_info li;
            sp_model_layer(m, i, &li);
            if (strcmp(li.kind, "linear")) continue;
            float *w = malloc(sizeof(float) * (size_t)(li.out.c * li.in.c));
            float *bias = malloc(sizeof(float) * (size_t)li.out.c);
            CHECK_OK(sp_model_layer_get_weight(m, i, w, bias));
            CHECK_OK(sp_model_layer_set_weight(f, i, w, bias));
            free(w);
            free(bias);
        }
        CHECK(!memcmp(sp_model_params(f), sp_model_params(m),
                      sizeof(float) * (size_t)sp_model_nparams(m)));
        float x[16 * 5], r[4 * 5];
        for (int i = 0; i < 16 * 5; i++) x[i] = 0.05f * (float)((i * 7) % 19);
        for (int i = 0; i < 4 * 5; i++) r[i] = 0.1f * (float)((i * 3) % 7) - 0.3f;
        const float *ym, *yf;
        CHECK_OK(sp_model_forward(m, x, 5, true, &ym));
        float copy[4 * 5];
        memcpy(copy, ym, sizeof copy);
        CHECK_OK(sp_model_forward(f, x, 5, true, &yf));
        CHECK(!memcmp(copy, yf, sizeof copy));
        sp_model_zero_grad(m);
        sp_model_zero_grad(f);
        CHECK_OK(sp_model_backward(m, r, NULL));
        CHECK_OK(sp_model_backward(f, r, NULL));
        CHECK(!memcmp(sp_model_grads(m), sp_model_grads(f),
                      sizeof(float) * (size_t)sp_model_nparams(m)));
    }
    for (int i = 0; i < 6; i++) sp_mask_free(pats[i]);
    sp_model_free(f);
    sp_model_free(m);
    sp_optim_free(o);
    sp_dataset_free(data);
}

/* Records dy x^T of layer `want` (a linear layer) as the tap sees it. */
typedef struct tap_probe {
    int want, calls;
    int64_t out, in;
    double g[12 * 16];
} tap_probe;

static sp_status probe_tap(int layer, const float *x, const float *dy, int64_t batch, void *user) {
    tap_probe *p = user;
    p->calls++;
    if (layer != p->want) return SP_OK;
    for (int64_t i = 0; i < p->out; i++)
        for (int64_t j = 0; j < p->in; j++) {
            double s = 0.0;
            for (int64_t b = 0; b < batch; b++) s += (double)dy[i * batch + b] * x[j * batch + b];
            p->g[i * p->in + j] = s;
        }
    return SP_OK;
}

TEST(backward_tap_sees_each_layers_input_and_output_gradient) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("flatten\nlinear out=12\nrelu\nlinear out=classes\n", IN16, 4, 2, &m));
    if (!m) return;
    tap_probe p = {.want = 1, .out = 12, .in = 16};
    float x[16 * 3], r[4 * 3];
    for (int i = 0; i < 16 * 3; i++) x[i] = 0.1f * (float)((i * 5) % 11) - 0.4f;
    for (int i = 0; i < 4 * 3; i++) r[i] = 0.2f * (float)((i * 7) % 5) - 0.3f;
    const float *y;
    CHECK_OK(sp_model_forward(m, x, 3, true, &y));
    sp_model_zero_grad(m);
    sp_model_set_backward_tap(m, probe_tap, &p);
    CHECK_OK(sp_model_backward(m, r, NULL));
    CHECK_EQ(p.calls, 4);
    sp_layer_info li;
    sp_model_layer(m, 1, &li);
    const float *g = sp_model_grads(m) + li.param_offset; /* the dense weight gradient */
    for (int k = 0; k < 12 * 16; k++)
        CHECK_MSG(fabs(g[k] - p.g[k]) <= 1e-5 + 1e-4 * fabs(p.g[k]), "entry %d: %g vs %g", k,
                  (double)g[k], p.g[k]);
    sp_model_set_backward_tap(m, NULL, NULL);
    p.calls = 0;
    CHECK_OK(sp_model_backward(m, r, NULL));
    CHECK_EQ(p.calls, 0);
    sp_model_free(m);
}

/* The reference growth of a RigL update: in a tap, the whole gradient of each CSR layer and its
 * top-k empty positions by sp_rigl_grow_ref. */
typedef struct rigl_ref {
    sp_model *m;
    int64_t k[8];
    int64_t grow[8][64];
} rigl_ref;

static sp_status ref_tap(int layer, const float *x, const float *dy, int64_t batch, void *user) {
    rigl_ref *r = user;
    const sp_csr *c = sp_model_layer_csr(r->m, layer);
    if (!c || r->k[layer] == 0) return SP_OK;
    return sp_rigl_grow_ref(c, dy, x, batch, r->k[layer], r->grow[layer], NULL);
}

TEST(rigl_update_grows_where_a_dense_gradient_reference_says) {
    sp_dataset *data = test_toy_dataset(32, 41);
    sp_model *m = NULL;
    if (!data) return;
    CHECK_OK(sp_model_new(SPARSE_MLP, IN16, 4, 6, &m));
    sp_dst d = {.kind = SP_DST_RIGL, .update_every = 1, .drop_fraction = 0.3, .end_step = 0,
                .seed = 3, .data = data, .batch = 32, .nthreads = 1};
    /* the reference: k = round(0.3 nnz) per CSR layer (end_step 0: no annealing) */
    rigl_ref ref = {.m = m};
    sp_mask *before[6] = {NULL};
    for (int i = 0; i < 6; i++) {
        const sp_csr *c = sp_model_layer_csr(m, i);
        if (c) ref.k[i] = llround(0.3 * (double)c->nnz);
        CHECK_OK(sp_model_layer_pattern(m, i, &before[i]));
    }
    float x[16 * 32], dl[4 * 32];
    int32_t y[32];
    int64_t idx[32];
    for (int b = 0; b < 32; b++) idx[b] = b;
    CHECK_OK(sp_dataset_batch(data, idx, 32, x, 32, y));
    const float *logits;
    double loss;
    CHECK_OK(sp_model_forward(m, x, 32, true, &logits));
    CHECK_OK(sp_loss_xent(logits, 4, 32, y, 0.0f, &loss, dl, NULL));
    sp_model_set_backward_tap(m, ref_tap, &ref);
    CHECK_OK(sp_model_backward(m, dl, NULL));
    sp_model_set_backward_tap(m, NULL, NULL);
    /* the update itself */
    const int64_t nnz[2] = {sp_model_layer_csr(m, 1)->nnz, sp_model_layer_csr(m, 3)->nnz};
    CHECK_OK(sp_dst_update(m, NULL, &d, 1));
    check_csr_layers(m, nnz);
    for (int i = 1; i <= 3; i += 2) {
        sp_mask *after = NULL;
        CHECK_OK(sp_model_layer_pattern(m, i, &after));
        /* the positions added are exactly the reference's */
        int64_t added = 0, matched = 0;
        for (int64_t r = 0; r < after->rows; r++)
            for (int64_t c = 0; c < after->cols; c++)
                if (sp_mask_get(after, r, c) && !sp_mask_get(before[i], r, c)) {
                    added++;
                    for (int64_t q = 0; q < ref.k[i]; q++)
                        matched += ref.grow[i][q] == r * after->cols + c;
                }
        CHECK_EQ(added, ref.k[i]);
        CHECK_EQ(matched, ref.k[i]);
        sp_mask_free(after);
    }
    for (int i = 0; i < 6; i++) sp_mask_free(before[i]);
    CHECK_STATUS(sp_dst_update(m, NULL, &(sp_dst){.kind = SP_DST_RIGL, .update_every = 1,
                                                   .drop_fraction = 0.3},
                               2),
                 SP_EINVAL);
    CHECK(strstr(sp_last_error(), "RigL needs a non-empty dataset") != NULL);
    sp_model_free(m);
    sp_dataset_free(data);
}
