/*
 * test_structured.c - structured pruning with physical removal (sp_model_prune_structured): the
 * units removed are those with the smallest row norms, the smaller model computes what the
 * original computes with those units' contributions forced to zero (MLP, CNN with BatchNorm in
 * eval mode and flatten, depthwise-separable chain, feed-forward layers inside residual blocks),
 * built-in specs shrink to the sizes worked out by hand, and every bad input has its own error.
 */
#include <math.h>
#include <stdlib.h>

#include "test.h"

/* ---- helpers -------------------------------------------------------------------------------- */

/* A copy of m (same config, parameters and BatchNorm state). */
static sp_model *copy_model(const sp_model *m) {
    sp_model *r = NULL;
    if (sp_model_new(sp_model_config(m), sp_model_in(m), sp_model_classes(m), sp_model_seed(m),
                     &r) != SP_OK) {
        CHECK_MSG(false, "copy: %s", sp_last_error());
        return NULL;
    }
    memcpy(sp_model_params(r), sp_model_params((sp_model *)m),
           sizeof(float) * (size_t)sp_model_nparams(m));
    if (sp_model_nbuffers(m))
        memcpy(sp_model_buffers(r), sp_model_buffers((sp_model *)m),
               sizeof(float) * (size_t)sp_model_nbuffers(m));
    return r;
}

/* Eval-mode outputs of a and b on the same pseudo-random batch agree within 1e-5. */
static void check_same_outputs(const sp_model *a, const sp_model *b, uint64_t seed) {
    const sp_shape in = sp_model_in(a);
    const int64_t nf = in.c * in.h * in.w, B = 3, no = sp_model_out(a).c;
    float *x = malloc(sizeof(float) * (size_t)(nf * B));
    float *ya_copy = malloc(sizeof(float) * (size_t)(no * B));
    if (!x || !ya_copy) {
        free(x);
        free(ya_copy);
        return;
    }
    sp_rng r;
    sp_rng_init(&r, seed, 7);
    for (int64_t i = 0; i < nf * B; i++) x[i] = 2.0f * sp_rng_uniform(&r) - 1.0f;
    const float *ya = NULL, *yb = NULL;
    CHECK_OK(sp_model_forward((sp_model *)a, x, B, false, &ya));
    if (ya) memcpy(ya_copy, ya, sizeof(float) * (size_t)(no * B));
    CHECK_OK(sp_model_forward((sp_model *)b, x, B, false, &yb));
    CHECK_EQ(sp_model_out(b).c, no);
    if (ya && yb) CHECK_CLOSE(yb, ya_copy, NULL, no * B, ((sp_tol){1e-5, 1e-5}));
    free(x);
    free(ya_copy);
}

/* The indices of the `drop` smallest of v[0..n) (ties: the higher index goes), ascending, as a
 * flag per index. */
static void smallest(const double *v, int n, int drop, bool *gone) {
    for (int i = 0; i < n; i++) gone[i] = false;
    for (int d = 0; d < drop; d++) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (!gone[i] && (best < 0 || v[i] <= v[best])) best = i;
        gone[best] = true;
    }
}

/* Row L2 norms of a (rows x cols) block at p. */
static void row_norms(const float *p, int rows, int cols, double *out) {
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++) s += (double)p[r * cols + c] * p[r * cols + c];
        out[r] = sqrt(s);
    }
}

/* Random BatchNorm parameters and running statistics for layer i (C channels). */
static void randomize_bn(sp_model *m, int i, int64_t boff, sp_rng *r) {
    sp_layer_info li;
    CHECK_OK(sp_model_layer(m, i, &li));
    float *p = sp_model_params(m) + li.param_offset, *b = sp_model_buffers(m) + boff;
    const int64_t C = li.in.c;
    for (int64_t c = 0; c < C; c++) {
        p[c] = 0.5f + sp_rng_uniform(r);          /* gamma */
        p[C + c] = sp_rng_uniform(r) - 0.5f;      /* beta */
        b[c] = sp_rng_uniform(r) - 0.5f;          /* running_mean */
        b[C + c] = 0.5f + sp_rng_uniform(r);      /* running_var */
    }
}

static int64_t layer_out(const sp_model *m, int i) {
    sp_layer_info li;
    if (sp_model_layer(m, i, &li) != SP_OK) return -1;
    return li.out.c;
}

static int64_t layer_in(const sp_model *m, int i) {
    sp_layer_info li;
    if (sp_model_layer(m, i, &li) != SP_OK) return -1;
    return li.in.c;
}

/* ---- MLP ------------------------------------------------------------------------------------ */

/* mlp:8,6 with rows scaled so that the row norms, and so the neurons that go, are known: W1 row
 * r is scale1[r] times a common row, W2 likewise. Row L2 at 50%: layer 1 keeps the 4 largest of
 * {0.5, 2, 0.1, 3, 1, 0.2, 4, 0.3} = rows 1, 3, 4, 6 (0, 2, 5, 7 go); layer 2 keeps
 * round(0.5 * 6) = 3 of {1, 0.1, 2, 0.2, 3, 0.3} = rows 0, 2, 4 (1, 3, 5 go). */
TEST(structured_mlp_removes_the_smallest_neurons) {
    static const float scale1[8] = {0.5f, 2, 0.1f, 3, 1, 0.2f, 4, 0.3f};
    static const float scale2[6] = {1, 0.1f, 2, 0.2f, 3, 0.3f};
    static const int gone1[4] = {0, 2, 5, 7}, gone2[3] = {1, 3, 5};
    static const int kept1[4] = {1, 3, 4, 6}, kept2[3] = {0, 2, 4};
    const sp_shape in = {1, 2, 5};
    char *cfg = NULL;
    sp_model *m = NULL, *p = NULL, *ref = NULL;
    CHECK_OK(sp_model_spec_config("mlp:8,6", &cfg));
    if (cfg) CHECK_OK(sp_model_new(cfg, in, 3, 5, &m));
    sp_free(cfg);
    if (!m) return;
    float w1[8 * 10], b1[8], w2[6 * 8], b2[6];
    CHECK_OK(sp_model_layer_get_weight(m, 1, w1, b1));
    CHECK_OK(sp_model_layer_get_weight(m, 3, w2, b2));
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 10; c++)
            w1[r * 10 + c] = scale1[r] * (c % 2 ? 1.0f : -1.0f) * (1 + 0.1f * (float)c);
    for (int r = 0; r < 6; r++)
        for (int c = 0; c < 8; c++)
            w2[r * 8 + c] = scale2[r] * (c % 3 ? 0.5f : -0.7f) * (1 + 0.2f * (float)c);
    for (int r = 0; r < 8; r++) b1[r] = 0.05f * (float)(r - 3);
    for (int r = 0; r < 6; r++) b2[r] = 0.1f + 0.03f * (float)r;
    CHECK_OK(sp_model_layer_set_weight(m, 1, w1, b1));
    CHECK_OK(sp_model_layer_set_weight(m, 3, w2, b2));

    sp_prune_structured_spec spec = {SP_PRUNE_ROW_L2, 0.5};
    CHECK_OK(sp_model_prune_structured(m, &spec, &p));
    if (!p) goto out;
    CHECK_EQ(sp_model_nlayers(p), 6);
    CHECK_EQ(layer_out(p, 1), 4);
    CHECK_EQ(layer_in(p, 3), 4);
    CHECK_EQ(layer_out(p, 3), 3);
    CHECK_EQ(layer_in(p, 5), 3);
    CHECK_EQ(layer_out(p, 5), 3); /* the classes stay */
    CHECK_EQ(sp_model_nparams(p), 10 * 4 + 4 + 4 * 3 + 3 + 3 * 3 + 3);
    /* the kept rows are the original rows, their columns the kept inputs */
    float pw1[4 * 10], pb1[4], pw2[3 * 4], pb2[3];
    CHECK_OK(sp_model_layer_get_weight(p, 1, pw1, pb1));
    CHECK_OK(sp_model_layer_get_weight(p, 3, pw2, pb2));
    for (int k = 0; k < 4; k++) {
        CHECK(pb1[k] == b1[kept1[k]]);
        for (int c = 0; c < 10; c++) CHECK(pw1[k * 10 + c] == w1[kept1[k] * 10 + c]);
    }
    for (int k = 0; k < 3; k++) {
        CHECK(pb2[k] == b2[kept2[k]]);
        for (int c = 0; c < 4; c++) CHECK(pw2[k * 4 + c] == w2[kept2[k] * 8 + kept1[c]]);
    }
    CHECK(sp_model_input_scale(p) == sp_model_input_scale(m));
    /* reference: the original with the removed neurons' rows and biases zeroed (ReLU(0) = 0) */
    ref = copy_model(m);
    if (!ref) goto out;
    for (int k = 0; k < 4; k++) {
        for (int c = 0; c < 10; c++) w1[gone1[k] * 10 + c] = 0.0f;
        b1[gone1[k]] = 0.0f;
    }
    for (int k = 0; k < 3; k++) {
        for (int c = 0; c < 8; c++) w2[gone2[k] * 8 + c] = 0.0f;
        b2[gone2[k]] = 0.0f;
    }
    CHECK_OK(sp_model_layer_set_weight(ref, 1, w1, b1));
    CHECK_OK(sp_model_layer_set_weight(ref, 3, w2, b2));
    check_same_outputs(ref, p, 1);
    /* row L1 ranks these rows the same way */
    sp_model *p1 = NULL;
    spec.criterion = SP_PRUNE_ROW_L1;
    CHECK_OK(sp_model_prune_structured(m, &spec, &p1));
    if (p1) check_same_outputs(ref, p1, 2);
    sp_model_free(p1);
out:
    sp_model_free(ref);
    sp_model_free(p);
    sp_model_free(m);
}

TEST(structured_fraction_zero_keeps_everything) {
    char *cfg = NULL;
    sp_model *m = NULL, *p = NULL;
    CHECK_OK(sp_model_spec_config("mlp:8,6", &cfg));
    if (cfg) CHECK_OK(sp_model_new(cfg, (sp_shape){1, 2, 5}, 3, 11, &m));
    sp_free(cfg);
    if (!m) return;
    sp_prune_structured_spec spec = {SP_PRUNE_ROW_L2, 0.0};
    CHECK_OK(sp_model_prune_structured(m, &spec, &p));
    if (p) {
        CHECK_EQ(sp_model_nparams(p), sp_model_nparams(m));
        CHECK(strcmp(sp_model_config(p), sp_model_config(m)) == 0);
        check_same_outputs(m, p, 3);
    }
    sp_model_free(p);
    /* a layer keeps at least one unit: 0.9 of 2 rounds to 0 kept */
    m = (sp_model_free(m), NULL);
    CHECK_OK(sp_model_new("flatten\nlinear out=2\nrelu\nlinear out=classes\n",
                          (sp_shape){1, 2, 5}, 3, 11, &m));
    spec.fraction = 0.9;
    p = NULL;
    if (m) CHECK_OK(sp_model_prune_structured(m, &spec, &p));
    if (p) CHECK_EQ(layer_out(p, 1), 1);
    sp_model_free(p);
    sp_model_free(m);
}

/* ---- CNN: conv -> batchnorm -> relu -> maxpool -> flatten -> linear ------------------------ */

TEST(structured_cnn_with_batchnorm_and_flatten) {
    const sp_shape in = {2, 6, 6};
    sp_model *m = NULL, *p = NULL, *ref = NULL;
    CHECK_OK(sp_model_new("conv2d out=6 k=3 pad=1\nbatchnorm\nrelu\nmaxpool k=2\nflatten\n"
                          "linear out=classes\n", in, 4, 21, &m));
    if (!m) return;
    sp_rng r;
    sp_rng_init(&r, 99, 1);
    randomize_bn(m, 1, 0, &r);
    sp_layer_info conv, lin;
    CHECK_OK(sp_model_layer(m, 0, &conv));
    CHECK_OK(sp_model_layer(m, 5, &lin));
    CHECK_EQ(lin.in.c, 6 * 3 * 3);
    /* by hand: the 3 filters (of 6) with the smallest L2 norm over their 2*3*3 weights go */
    double norms[6];
    bool gone[6];
    row_norms(sp_model_params(m) + conv.param_offset, 6, 18, norms);
    smallest(norms, 6, 3, gone);

    sp_prune_structured_spec spec = {SP_PRUNE_ROW_L2, 0.5};
    CHECK_OK(sp_model_prune_structured(m, &spec, &p));
    if (!p) goto out;
    CHECK_EQ(layer_out(p, 0), 3);
    CHECK_EQ(layer_in(p, 1), 3);
    CHECK_EQ(layer_in(p, 5), 3 * 3 * 3);
    CHECK_EQ(layer_out(p, 5), 4);
    CHECK_EQ(sp_model_nparams(p), (3 * 2 * 9 + 3) + 2 * 3 + (4 * 27 + 4));
    CHECK_EQ(sp_model_nbuffers(p), 2 * 3);
    /* the BatchNorm statistics kept are those of the kept channels */
    {
        const float *sb = sp_model_buffers(m), *pb = sp_model_buffers(p);
        for (int c = 0, k = 0; c < 6; c++) {
            if (gone[c]) continue;
            CHECK(pb[k] == sb[c]);
            CHECK(pb[3 + k] == sb[6 + c]);
            k++;
        }
    }
    /* reference: the linear layer reads nothing from the removed channels (their 3x3 blocks of
     * flattened features, index (c*3 + y)*3 + x) */
    ref = copy_model(m);
    if (!ref) goto out;
    float w[4 * 54], b[4];
    CHECK_OK(sp_model_layer_get_weight(ref, 5, w, b));
    for (int o = 0; o < 4; o++)
        for (int c = 0; c < 6; c++)
            if (gone[c])
                for (int t = 0; t < 9; t++) w[o * 54 + c * 9 + t] = 0.0f;
    CHECK_OK(sp_model_layer_set_weight(ref, 5, w, b));
    check_same_outputs(ref, p, 4);
out:
    sp_model_free(ref);
    sp_model_free(p);
    sp_model_free(m);
}

/* ---- depthwise-separable chain -------------------------------------------------------------- */

TEST(structured_depthwise_follows_its_producer) {
    const sp_shape in = {3, 6, 6};
    sp_model *m = NULL, *p = NULL, *ref = NULL;
    CHECK_OK(sp_model_new("conv2d out=8 k=3 pad=1 bias=0\nbatchnorm\nrelu\n"
                          "conv2d out=8 k=3 pad=1 groups=8 bias=0  # depthwise\n"
                          "batchnorm\nrelu\nconv2d out=5 k=1\nglobalavgpool\nflatten\n"
                          "linear out=classes\n", in, 3, 33, &m));
    if (!m) return;
    sp_rng r;
    sp_rng_init(&r, 5, 2);
    randomize_bn(m, 1, 0, &r);
    randomize_bn(m, 4, 16, &r);
    sp_layer_info c0, pw;
    CHECK_OK(sp_model_layer(m, 0, &c0));
    CHECK_OK(sp_model_layer(m, 6, &pw));
    /* by hand: conv 0 keeps 4 of 8 filters (27 weights each); the pointwise conv 6 keeps
     * round(0.5 * 5) = 3 of 5 (8 weights each, then its bias) */
    double n0[8], n6[5];
    bool gone0[8], gone6[5];
    row_norms(sp_model_params(m) + c0.param_offset, 8, 27, n0);
    row_norms(sp_model_params(m) + pw.param_offset, 5, 8, n6);
    smallest(n0, 8, 4, gone0);
    smallest(n6, 5, 2, gone6);

    sp_prune_structured_spec spec = {SP_PRUNE_ROW_L2, 0.5};
    CHECK_OK(sp_model_prune_structured(m, &spec, &p));
    if (!p) goto out;
    CHECK_EQ(layer_out(p, 0), 4);
    CHECK_EQ(layer_in(p, 3), 4);
    CHECK_EQ(layer_out(p, 3), 4); /* the depthwise conv shrinks along */
    CHECK_EQ(layer_in(p, 6), 4);
    CHECK_EQ(layer_out(p, 6), 3);
    CHECK_EQ(layer_in(p, 9), 3);
    CHECK(strstr(sp_model_config(p), "conv2d out=4 k=3 pad=1 groups=4 bias=0") != NULL);
    CHECK_EQ(sp_model_nparams(p), 4 * 27 + 2 * 4 + 4 * 9 + 2 * 4 + (3 * 4 + 3) + (3 * 3 + 3));
    CHECK_EQ(sp_model_nbuffers(p), 2 * 4 + 2 * 4);
    /* reference: the pointwise conv reads nothing from conv 0's removed channels (its weight is
     * (5, 8, 1, 1)), and the linear layer nothing from the pointwise conv's removed filters */
    ref = copy_model(m);
    if (!ref) goto out;
    float *pwp = sp_model_params(ref) + pw.param_offset;
    for (int o = 0; o < 5; o++)
        for (int c = 0; c < 8; c++)
            if (gone0[c]) pwp[o * 8 + c] = 0.0f;
    float w[3 * 5], b[3];
    CHECK_OK(sp_model_layer_get_weight(ref, 9, w, b));
    for (int o = 0; o < 3; o++)
        for (int c = 0; c < 5; c++)
            if (gone6[c]) w[o * 5 + c] = 0.0f;
    CHECK_OK(sp_model_layer_set_weight(ref, 9, w, b));
    check_same_outputs(ref, p, 5);
out:
    sp_model_free(ref);
    sp_model_free(p);
    sp_model_free(m);
}

/* ---- built-in specs ------------------------------------------------------------------------- */

TEST(structured_lenet300_half) {
    char *cfg = NULL;
    sp_model *m = NULL, *p = NULL;
    CHECK_OK(sp_model_spec_config("lenet300", &cfg));
    if (cfg) CHECK_OK(sp_model_new(cfg, (sp_shape){1, 28, 28}, 10, 1, &m));
    sp_free(cfg);
    if (!m) return;
    sp_prune_structured_spec spec = {SP_PRUNE_ROW_L2, 0.5};
    CHECK_OK(sp_model_prune_structured(m, &spec, &p));
    if (p) {
        CHECK_EQ(layer_out(p, 1), 150);
        CHECK_EQ(layer_out(p, 3), 50);
        CHECK_EQ(layer_out(p, 5), 10);
        CHECK_EQ(sp_model_nparams(p), 784 * 150 + 150 + 150 * 50 + 50 + 50 * 10 + 10);
        CHECK(strstr(sp_model_config(p), "linear out=150\n") != NULL);
        CHECK(strstr(sp_model_config(p), "linear out=50\n") != NULL);
    }
    sp_model_free(p);
    sp_model_free(m);
}

TEST(structured_lenet5_and_mobilenet_shrink_and_run) {
    char *cfg = NULL;
    sp_model *m = NULL, *p = NULL;
    sp_prune_structured_spec spec = {SP_PRUNE_ROW_L1, 0.5};
    /* lenet5: conv 6 -> 3, conv 16 -> 8 (flatten: 8*5*5 = 200 inputs), 120 -> 60, 84 -> 42 */
    CHECK_OK(sp_model_spec_config("lenet5", &cfg));
    if (cfg) CHECK_OK(sp_model_new(cfg, (sp_shape){1, 28, 28}, 10, 1, &m));
    sp_free(cfg);
    cfg = NULL;
    if (m) CHECK_OK(sp_model_prune_structured(m, &spec, &p));
    if (p) {
        CHECK_EQ(layer_out(p, 0), 3);
        CHECK_EQ(layer_out(p, 3), 8);
        CHECK_EQ(layer_in(p, 7), 200);
        CHECK_EQ(layer_out(p, 7), 60);
        CHECK_EQ(layer_out(p, 9), 42);
        CHECK_EQ(layer_out(p, 11), 10);
        CHECK_EQ(sp_model_nparams(p), (3 * 25 + 3) + (8 * 3 * 25 + 8) + (60 * 200 + 60) +
                                          (42 * 60 + 42) + (10 * 42 + 10));
        check_same_outputs(p, p, 6); /* runs */
    }
    sp_model_free(p);
    sp_model_free(m);
    m = p = NULL;
    /* mobilenet: every plain / pointwise conv but the last halves, depthwise convs along */
    CHECK_OK(sp_model_spec_config("mobilenet", &cfg));
    if (cfg) CHECK_OK(sp_model_new(cfg, (sp_shape){1, 28, 28}, 10, 1, &m));
    sp_free(cfg);
    if (m) CHECK_OK(sp_model_prune_structured(m, &spec, &p));
    if (p) {
        CHECK_EQ(layer_out(p, 0), 8);
        CHECK_EQ(layer_out(p, 3), 8);   /* depthwise */
        CHECK_EQ(layer_out(p, 6), 16);
        CHECK_EQ(layer_out(p, 9), 16);  /* depthwise */
        CHECK_EQ(layer_out(p, 12), 32);
        CHECK_EQ(layer_out(p, 15), 32); /* depthwise */
        CHECK_EQ(layer_out(p, 18), 64);
        CHECK_EQ(layer_in(p, 23), 64);
        check_same_outputs(p, p, 7);
    }
    sp_model_free(p);
    sp_model_free(m);
}

/* transformer: each feed-forward hidden layer (128, inside a residual body) halves; the token
 * embedding (before posembed), the bodies' last layers (added to their inputs) and the classes
 * keep their widths. */
TEST(structured_transformer_feed_forward_shrinks_inside_residual_blocks) {
    char *cfg = NULL;
    sp_model *m = NULL, *p = NULL, *ref = NULL;
    CHECK_OK(sp_model_spec_config("transformer", &cfg));
    if (cfg) CHECK_OK(sp_model_new(cfg, (sp_shape){1, 28, 28}, 10, 3, &m));
    sp_free(cfg);
    if (!m) return;
    static const int hidden[2] = {8, 16}; /* linear out=128; gelu; linear out=64 (at +2) */
    bool gone[2][128];
    float *w = malloc(sizeof(float) * 128 * 64);
    if (!w) goto out;
    for (int k = 0; k < 2; k++) {
        double norms[128];
        CHECK_OK(sp_model_layer_get_weight(m, hidden[k], w, NULL));
        row_norms(w, 128, 64, norms);
        smallest(norms, 128, 64, gone[k]);
    }
    sp_prune_structured_spec spec = {SP_PRUNE_ROW_L2, 0.5};
    CHECK_OK(sp_model_prune_structured(m, &spec, &p));
    if (!p) goto out;
    CHECK_EQ(layer_out(p, 1), 64);
    for (int k = 0; k < 2; k++) {
        CHECK_EQ(layer_out(p, hidden[k]), 64);
        CHECK_EQ(layer_in(p, hidden[k] + 2), 64);
        CHECK_EQ(layer_out(p, hidden[k] + 2), 64);
    }
    CHECK_EQ(sp_model_nparams(p), sp_model_nparams(m) - 2 * (64 * 64 + 64 + 64 * 64));
    /* reference: the bodies' output layers read nothing from the removed hidden units */
    ref = copy_model(m);
    if (!ref) goto out;
    for (int k = 0; k < 2; k++) {
        float b[64];
        CHECK_OK(sp_model_layer_get_weight(ref, hidden[k] + 2, w, b));
        for (int o = 0; o < 64; o++)
            for (int c = 0; c < 128; c++)
                if (gone[k][c]) w[o * 128 + c] = 0.0f;
        CHECK_OK(sp_model_layer_set_weight(ref, hidden[k] + 2, w, b));
    }
    check_same_outputs(ref, p, 8);
out:
    free(w);
    sp_model_free(ref);
    sp_model_free(p);
    sp_model_free(m);
}

/* A masked layer is not shrunk and keeps its pattern; the dense layer after it is. */
TEST(structured_leaves_sparse_layers_alone) {
    sp_model *m = NULL, *p = NULL;
    CHECK_OK(sp_model_new("flatten\nlinear out=8 format=mask density=0.5\nrelu\nlinear out=6\n"
                          "relu\nlinear out=classes\n", (sp_shape){1, 2, 5}, 3, 4, &m));
    if (!m) return;
    sp_prune_structured_spec spec = {SP_PRUNE_ROW_L2, 0.5};
    CHECK_OK(sp_model_prune_structured(m, &spec, &p));
    if (p) {
        CHECK_EQ(layer_out(p, 1), 8);
        CHECK_EQ(layer_out(p, 3), 3);
        sp_mask *a = NULL, *b = NULL;
        CHECK_OK(sp_model_layer_pattern(m, 1, &a));
        CHECK_OK(sp_model_layer_pattern(p, 1, &b));
        CHECK(a && b && sp_mask_count(a) == sp_mask_count(b));
        for (int64_t i = 0; a && b && i < 8; i++)
            for (int64_t j = 0; j < 10; j++) CHECK(sp_mask_get(a, i, j) == sp_mask_get(b, i, j));
        sp_mask_free(a);
        sp_mask_free(b);
    }
    sp_model_free(p);
    sp_model_free(m);
}

/* ---- bad inputs ----------------------------------------------------------------------------- */

static void check_error(sp_status got, sp_status want, const char *needle) {
    CHECK_MSG(got == want, "got %s, want %s (%s)", sp_status_name(got), sp_status_name(want),
              sp_last_error());
    CHECK_MSG(strstr(sp_last_error(), needle) != NULL, "message '%s' does not name '%s'",
              sp_last_error(), needle);
}

TEST(structured_refuses_bad_inputs) {
    char *cfg = NULL;
    sp_model *m = NULL, *p = (sp_model *)&cfg; /* a stale pointer that must become NULL */
    CHECK_OK(sp_model_spec_config("mlp:8,6", &cfg));
    if (cfg) CHECK_OK(sp_model_new(cfg, (sp_shape){1, 2, 5}, 3, 5, &m));
    sp_free(cfg);
    if (!m) return;
    sp_prune_structured_spec spec = {SP_PRUNE_ROW_L2, -0.1};
    check_error(sp_model_prune_structured(m, &spec, &p), SP_EINVAL, "fraction -0.1");
    CHECK(p == NULL);
    spec.fraction = 1.0;
    check_error(sp_model_prune_structured(m, &spec, &p), SP_EINVAL, "fraction 1 ");
    spec.fraction = NAN;
    check_error(sp_model_prune_structured(m, &spec, &p), SP_EINVAL, "fraction nan");
    spec.fraction = 0.5;
    spec.criterion = SP_PRUNE_MAGNITUDE;
    check_error(sp_model_prune_structured(m, &spec, &p), SP_EINVAL, "criterion magnitude");
    spec.criterion = (sp_prune_criterion)77;
    check_error(sp_model_prune_structured(m, &spec, &p), SP_EINVAL, "(77)");
    spec.criterion = SP_PRUNE_ROW_L2;
    check_error(sp_model_prune_structured(NULL, &spec, &p), SP_EINVAL, "m is NULL");
    check_error(sp_model_prune_structured(m, NULL, &p), SP_EINVAL, "spec is NULL");
    check_error(sp_model_prune_structured(m, &spec, NULL), SP_EINVAL, "out is NULL");
    CHECK(p == NULL);
    sp_model_free(m);

    /* nothing to shrink: a single linear layer (the classes); a sparse hidden layer before the
     * classes; a hidden layer whose output only reaches a softmax */
    static const char *const none[] = {
        "flatten\nlinear out=classes\n",
        "flatten\nlinear out=8\nrelu\nlinear out=classes format=csr density=0.5\n",
        "flatten\nlinear out=8\nsoftmax\nlinear out=classes\n",
    };
    for (size_t k = 0; k < sizeof none / sizeof none[0]; k++) {
        m = NULL;
        CHECK_OK(sp_model_new(none[k], (sp_shape){1, 2, 5}, 3, 5, &m));
        if (!m) continue;
        check_error(sp_model_prune_structured(m, &spec, &p), SP_EINVAL, "no layer to shrink");
        CHECK(p == NULL);
        sp_model_free(m);
    }
    /* a residual block's edges: the layer before it and the body's last layer keep their
     * widths (the addition needs them) */
    m = NULL;
    CHECK_OK(sp_model_new("flatten\nlinear out=8\nresidual {\n  linear out=8\n  relu\n}\n"
                          "linear out=classes\n", (sp_shape){1, 2, 5}, 3, 5, &m));
    if (m) check_error(sp_model_prune_structured(m, &spec, &p), SP_EINVAL, "no layer to shrink");
    CHECK(p == NULL);
    sp_model_free(m);
}

/* Failing each allocation in turn: SP_ENOMEM, nothing leaked, m unchanged. */
TEST(structured_survives_allocation_failure) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("conv2d out=4 k=3 pad=1 bias=0\nbatchnorm\nrelu\n"
                          "conv2d out=4 k=3 pad=1 groups=4\nrelu\nmaxpool k=2\nflatten\n"
                          "linear out=6\nrelu\nlinear out=classes\n", (sp_shape){2, 4, 4}, 3, 8,
                          &m));
    if (!m) return;
    sp_prune_structured_spec spec = {SP_PRUNE_ROW_L2, 0.5};
    bool finished = false;
    for (int64_t n = 1; n < 2000 && !finished; n++) {
        int64_t live = sp_alloc_live();
        sp_model *p = NULL;
        sp_alloc_fail_after(n);
        sp_status st = sp_model_prune_structured(m, &spec, &p);
        sp_alloc_fail_after(0);
        if (st == SP_OK) {
            finished = true;
            CHECK(n > 1);
            CHECK_EQ(layer_out(p, 0), 2);
            CHECK_EQ(layer_out(p, 3), 2);
            CHECK_EQ(layer_in(p, 7), 2 * 2 * 2);
            CHECK_EQ(layer_out(p, 7), 3);
            sp_model_free(p);
        } else {
            CHECK_MSG(st == SP_ENOMEM, "failure %lld: %s (%s)", (long long)n, sp_status_name(st),
                      sp_last_error());
            CHECK(p == NULL);
        }
        CHECK_MSG(sp_alloc_live() == live, "failure %lld: %lld allocations leaked", (long long)n,
                  (long long)(sp_alloc_live() - live));
        if (sp_test_failures() > 0) break;
    }
    CHECK(finished);
    sp_model_free(m);
}
