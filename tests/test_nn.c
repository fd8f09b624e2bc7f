/*
 * test_nn.c - the model container, config parsing and the basic layers: gradient checks
 * against finite differences, config errors, determinism.
 */
#include <math.h>
#include <stdlib.h>

#include "gradcheck.h"
#include "test.h"

static const sp_shape VEC12 = {12, 1, 1};

TEST(nn_gradcheck_dense_mlp) {
    GRADCHECK("linear out=9\nrelu\nlinear out=7\ntanh\nlinear out=classes\n", VEC12, 5);
    GRADCHECK("linear out=6 bias=0\nsigmoid\nlinear out=5\nsilu\nlinear out=4\ngelu\n", VEC12, 4);
}

TEST(nn_gradcheck_softmax_and_flatten) {
    GRADCHECK("flatten\nlinear out=6\nsoftmax\nlinear out=3\n", ((sp_shape){2, 3, 2}), 3);
}

TEST(nn_gradcheck_sparse_and_masked_linear) {
    GRADCHECK("linear out=9 format=mask density=0.4\nrelu\nlinear out=classes\n", VEC12, 5);
    GRADCHECK("linear out=9 format=csr density=0.3\ntanh\nlinear out=classes format=csr density=0.5\n",
              VEC12, 5);
    GRADCHECK("linear out=10 format=bsr density=0.5 block=2x3\ntanh\nlinear out=classes\n", VEC12,
              5);
    GRADCHECK("linear out=7 format=nm nm=2:4\ntanh\nlinear out=classes format=nm nm=1:4\n", VEC12, 5);
}

TEST(nn_gradcheck_linear_on_tokens) {
    /* (d, 1, T): the layer acts per token */
    GRADCHECK("linear out=5\ngelu\nlinear out=3\n", ((sp_shape){4, 1, 6}), 3);
}

TEST(nn_gradcheck_residual) {
    GRADCHECK("linear out=6\nresidual {\n  linear out=6\n  tanh\n}\nresidual {\n}\nlinear out=2\n",
              VEC12, 2);
}

TEST(nn_gradcheck_dropout_train_mode) {
    /* the mask depends on (seed, step, layer): the same in every forward of the check */
    GRADCHECK("linear out=8\ndropout p=0.3\nlinear out=3\n", VEC12, 3, .train = true);
}

TEST(nn_masked_and_sparse_patterns_have_their_density) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("linear out=50 format=mask density=0.1\n"
                          "linear out=40 format=csr density=0.2\n"
                          "linear out=32 format=nm nm=1:4\n",
                          (sp_shape){100, 1, 1}, 10, 1, &m));
    if (!m) return;
    sp_layer_info li;
    CHECK_OK(sp_model_layer(m, 0, &li));
    CHECK_EQ(li.nparam, 50 * 100 + 50);
    CHECK_EQ(li.nnz, 50 * 10 + 50);   /* 10 of 100 per row, plus the bias */
    CHECK_OK(sp_model_layer(m, 1, &li));
    CHECK_EQ(li.nparam, 40 * 10 + 40); /* round(0.2 * 50) per row, stored as CSR */
    CHECK_OK(sp_model_layer(m, 2, &li));
    CHECK_EQ(li.nparam, 32 * 10 + 32); /* 40 inputs, 10 groups of 4, 1 kept each */
    sp_model_free(m);
}

TEST(nn_config_round_trips_through_its_normal_form) {
    const char *cfg = "# a comment\n\n  linear out=8 format=csr density=0.25   # trailing\n"
                      "relu\nresidual {\n linear out=8\n}\ndropout p=0.1\nlinear out=classes bias=0\n";
    sp_model *a = NULL, *b = NULL;
    CHECK_OK(sp_model_new(cfg, VEC12, 4, 3, &a));
    if (!a) return;
    CHECK_OK(sp_model_new(sp_model_config(a), VEC12, 4, 3, &b));
    if (b) {
        CHECK(strcmp(sp_model_config(a), sp_model_config(b)) == 0);
        CHECK_EQ(sp_model_nparams(a), sp_model_nparams(b));
        CHECK(memcmp(sp_model_params(a), sp_model_params(b),
                     sizeof(float) * (size_t)sp_model_nparams(a)) == 0);
    }
    CHECK(strstr(sp_model_config(a), "input 12 1 1\n") == sp_model_config(a));
    CHECK(strstr(sp_model_config(a), "linear out=4 bias=0") != NULL);
    sp_model_free(a);
    sp_model_free(b);
}

TEST(nn_config_errors_name_the_line) {
    static const struct {
        const char *cfg;
        sp_status st;
        const char *needle;
    } bad[] = {
        {"", SP_EINVAL, "no layers"},
        {"linear out=4\nconv9d\n", SP_EINVAL, "line 2: unknown layer 'conv9d'"},
        {"linear\n", SP_EINVAL, "out=N is required"},
        {"linear out=0\n", SP_EINVAL, "out=0"},
        {"linear out=4 strid=2\n", SP_EINVAL, "unknown option 'strid'"},
        {"linear out=4 out=5\n", SP_EINVAL, "given twice"},
        {"linear out=4 bias\n", SP_EINVAL, "'bias' is not key=value"},
        {"linear out=four\n", SP_EINVAL, "out=four"},
        {"linear out=4 format=coo\n", SP_EINVAL, "format=coo"},
        {"linear out=4 format=csr density=0\n", SP_EINVAL, "density=0"},
        {"linear out=4 format=nm nm=5:4\n", SP_EINVAL, "nm=5:4"},
        {"linear out=4 format=nm nm=3:5\n", SP_ESHAPE, "narrower than N=3"},
        {"residual {\nlinear out=3\n}\n", SP_ESHAPE, "residual block maps"},
        {"residual {\nlinear out=12\n", SP_EINVAL, "not closed"},
        {"linear out=4\n}\n", SP_EINVAL, "unexpected '}'"},
        {"residual\n", SP_EINVAL, "residual {"},
        {"input 1 28 28\nlinear out=3\n", SP_ESHAPE, "does not match the data"},
        {"linear out=3\ninput 12\n", SP_EINVAL, "first line"},
        {"dropout p=1\n", SP_EINVAL, "p=1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sp_model *m = NULL;
        CHECK_STATUS(sp_model_new(bad[i].cfg, VEC12, 3, 1, &m), bad[i].st);
        CHECK_MSG(strstr(sp_last_error(), bad[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i,
                  sp_last_error(), bad[i].needle);
        CHECK(m == NULL);
    }
}

TEST(nn_specs_expand) {
    char *t = NULL;
    CHECK_OK(sp_model_spec_config("lenet300", &t));
    CHECK(t && strcmp(t, "flatten\nlinear out=300\nrelu\nlinear out=100\nrelu\n"
                         "linear out=classes\n") == 0);
    sp_free(t);
    t = NULL;
    CHECK_OK(sp_model_spec_config("mlp:64", &t));
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(t, (sp_shape){1, 28, 28}, 10, 0, &m));
    if (m) CHECK_EQ(sp_model_nparams(m), 784 * 64 + 64 + 64 * 10 + 10);
    sp_model_free(m);
    sp_free(t);
    const char *bad[] = {"mlp", "mlp:", "mlp:3,", "mlp:,3", "mlp:-4", "mlp:3x", "lenet6", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = NULL;
        CHECK_STATUS(sp_model_spec_config(bad[i], &t), SP_EINVAL);
        CHECK(t == NULL);
    }
}

TEST(nn_model_new_survives_allocation_failure) {
    const char *cfg = "linear out=8 format=csr density=0.5\nrelu\nresidual {\n linear out=8\n}\n"
                      "dropout p=0.2\nlinear out=3\n";
    bool saw_failure = false, reached_success = false;
    for (int64_t n = 1; n < 200 && !reached_success; n++) {
        int64_t live = sp_alloc_live();
        sp_model *m = NULL;
        sp_alloc_fail_after(n);
        sp_status st = sp_model_new(cfg, VEC12, 3, 1, &m);
        const float *y;
        float x[12 * 2] = {0};
        if (st == SP_OK) st = sp_model_forward(m, x, 2, true, &y);
        sp_alloc_fail_after(0);
        if (st == SP_OK) {
            reached_success = true;
        } else {
            saw_failure = true;
            CHECK_MSG(st == SP_ENOMEM, "n=%lld: %s", (long long)n, sp_status_name(st));
        }
        sp_model_free(m);
        CHECK_EQ(sp_alloc_live(), live);
    }
    CHECK(saw_failure);
    CHECK(reached_success);
}

TEST(nn_backward_needs_a_forward) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("linear out=3\n", VEC12, 3, 1, &m));
    float dy[3] = {0};
    if (m) CHECK_STATUS(sp_model_backward(m, dy, NULL), SP_EINVAL);
    sp_model_free(m);
}
