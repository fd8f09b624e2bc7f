/*
 * test_layers_seq.c - the sequence layers (tokens, embedding, posembed, layernorm, attention):
 * gradient checks against finite differences, attention against a plain-loop reference,
 * bad token ids and config errors, and bitwise determinism of the transformer spec across
 * thread counts.
 */
#include <math.h>
#include <stdlib.h>

#include "gradcheck.h"
#include "nn/layer.h"
#include "test.h"

static sp_shape shape(int64_t c, int64_t h, int64_t w) { return (sp_shape){c, h, w}; }

/* ---- gradient checks ------------------------------------------------------------------------ */

TEST(seq_gradcheck_tokens) {
    GRADCHECK("tokens\nlinear out=3\n", shape(2, 3, 4), 3);
}

TEST(seq_gradcheck_layernorm) {
    GRADCHECK("layernorm\n", shape(7, 1, 1), 7);                 /* a vector per sample */
    GRADCHECK("layernorm eps=0.01\n", shape(6, 1, 5), 6, .batch = 2); /* per token */
    GRADCHECK("linear out=5\nlayernorm\nlinear out=3\n", shape(4, 1, 3), 3);
}

/* The init gamma = 1, beta = 0 hides a missing gamma in dx: the same check at random gamma and
 * beta, by central differences of L = sum y r over the input and every parameter. */
TEST(seq_gradcheck_layernorm_at_random_affine) {
    const sp_shape in = shape(5, 1, 3);
    const int64_t B = 2, n = 5 * 3 * B;
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("layernorm\n", in, 5, 1, &m));
    if (!m) return;
    sp_model_set_threads(m, 1);
    sp_rng rng;
    sp_rng_init(&rng, 5, 0);
    float *p = sp_model_params(m);
    for (int64_t i = 0; i < sp_model_nparams(m); i++) p[i] = sp_rng_normal(&rng);
    float x[30], r[30], dx[30], g[10];
    for (int64_t i = 0; i < n; i++) x[i] = sp_rng_normal(&rng), r[i] = sp_rng_normal(&rng);
    const float *y;
    CHECK_OK(sp_model_forward(m, x, B, false, &y));
    sp_model_zero_grad(m);
    CHECK_OK(sp_model_backward(m, r, dx));
    memcpy(g, sp_model_grads(m), sizeof g);
    const float h = 1e-2f;
    for (int which = 0; which < 2; which++) {
        float *v = which ? p : x;
        int64_t count = which ? 10 : n;
        for (int64_t i = 0; i < count; i++) {
            float keep = v[i];
            double l[2];
            for (int side = 0; side < 2; side++) {
                v[i] = keep + (side ? -h : h);
                CHECK_OK(sp_model_forward(m, x, B, false, &y));
                l[side] = 0.0;
                for (int64_t j = 0; j < n; j++) l[side] += (double)y[j] * (double)r[j];
            }
            v[i] = keep;
            double num = (l[0] - l[1]) / (2.0 * h), an = which ? g[i] : dx[i];
            CHECK_MSG(fabs(num - an) <= 2e-3 + 2e-2 * fmax(fabs(num), fabs(an)),
                      "%s[%lld]: analytic %g, numeric %g", which ? "param" : "input",
                      (long long)i, an, num);
        }
    }
    sp_model_free(m);
}

TEST(seq_gradcheck_posembed) {
    GRADCHECK("posembed\n", shape(4, 1, 5), 4);
    GRADCHECK("linear out=3\nposembed\ntanh\n", shape(2, 1, 4), 3);
}

TEST(seq_gradcheck_attention) {
    static const char *const cfgs[] = {
        "attention\n",
        "attention causal=0\n",
        "attention heads=2\n",
        "attention heads=2 causal=0\n",
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        GRADCHECK(cfgs[i], shape(4, 1, 5), 4, .max_checks = 48);
        GRADCHECK(cfgs[i], shape(4, 1, 1), 4, .max_checks = 32, .batch = 2); /* T = 1 */
    }
    /* one head per feature, and a wider model */
    GRADCHECK("attention heads=4\n", shape(4, 1, 3), 4, .max_checks = 32);
    GRADCHECK("attention heads=2 causal=0\nlinear out=3\n", shape(6, 1, 4), 3, .max_checks = 48);
}

TEST(seq_gradcheck_embedding) {
    /* token ids have no gradient: only the table (and what follows) is checked */
    GRADCHECK("embedding vocab=7 dim=4\n", shape(1, 1, 5), 4, .int_input = true, .input_max = 7);
    GRADCHECK("embedding vocab=6 dim=4\nposembed\nattention heads=2\n", shape(1, 1, 5), 4,
              .int_input = true, .input_max = 6, .max_checks = 48);
    /* (1, h, w): h*w positions */
    GRADCHECK("embedding vocab=5 dim=3\n", shape(1, 2, 3), 3, .int_input = true, .input_max = 5);
}

TEST(seq_gradcheck_prenorm_transformer_block) {
    GRADCHECK("residual {\n  layernorm\n  attention heads=2\n}\n"
              "residual {\n  layernorm\n  linear out=16\n  gelu\n  linear out=8\n}\n",
              shape(8, 1, 5), 8, .batch = 2, .max_checks = 48);
}

/* ---- forward against references ------------------------------------------------------------- */

TEST(seq_tokens_are_image_rows) {
    /* (2, 3, 4) image, batch 2: token t = row t, feature ci*w + x */
    const int64_t c = 2, h = 3, w = 4, B = 2;
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("tokens\n", shape(c, h, w), 1, 1, &m));
    if (!m) return;
    sp_shape os = sp_model_out(m);
    CHECK(os.c == c * w && os.h == 1 && os.w == h);
    float x[48], dx[48];
    for (int i = 0; i < 48; i++) x[i] = (float)i;
    const float *y;
    CHECK_OK(sp_model_forward(m, x, B, false, &y));
    for (int64_t ci = 0; ci < c; ci++)
        for (int64_t t = 0; t < h; t++)
            for (int64_t xx = 0; xx < w; xx++)
                for (int64_t b = 0; b < B; b++)
                    CHECK(y[((ci * w + xx) * h + t) * B + b] == x[((ci * h + t) * w + xx) * B + b]);
    /* backward is the inverse permutation: dy = y gives dx = x */
    CHECK_OK(sp_model_backward(m, y, dx));
    CHECK(memcmp(dx, x, sizeof x) == 0);
    sp_model_free(m);
}

TEST(seq_layernorm_normalizes_each_token) {
    const int64_t d = 6, T = 4, B = 3, cols = T * B;
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("layernorm\n", shape(d, 1, T), 1, 1, &m));
    if (!m) return;
    float x[72];
    sp_rng rng;
    sp_rng_init(&rng, 3, 0);
    for (int i = 0; i < 72; i++) x[i] = 5.0f + 3.0f * sp_rng_normal(&rng);
    const float *y;
    CHECK_OK(sp_model_forward(m, x, B, false, &y));
    for (int64_t j = 0; j < cols; j++) {
        double mu = 0, var = 0, ym = 0, yv = 0;
        for (int64_t k = 0; k < d; k++) mu += x[k * cols + j], ym += y[k * cols + j];
        mu /= d;
        ym /= d;
        for (int64_t k = 0; k < d; k++) {
            var += (x[k * cols + j] - mu) * (x[k * cols + j] - mu);
            yv += (y[k * cols + j] - ym) * (y[k * cols + j] - ym);
        }
        var /= d;
        yv /= d;
        for (int64_t k = 0; k < d; k++) {
            double want = (x[k * cols + j] - mu) / sqrt(var + 1e-5);
            CHECK_MSG(fabs(y[k * cols + j] - want) < 1e-5, "(%lld, %lld): %g vs %g",
                      (long long)k, (long long)j, y[k * cols + j], want);
        }
        CHECK(fabs(ym) < 1e-6);
        CHECK(fabs(yv - var / (var + 1e-5)) < 1e-5);
    }
    sp_model_free(m);
}

/* Multi-head self-attention in plain loops over (B, T, d) arrays, in double. p is the layer's
 * arena (Wq, bq, Wk, bk, Wv, bv, Wo, bo); xs (B, T, d); ys (B, T, d); mag (B, T, d) the
 * magnitude sum |bo| + sum_g |Wo[f, g] o[g]| of the output projection, for the tolerance. */
static void ref_attention(const float *p, int64_t d, int64_t T, int64_t H, bool causal,
                          int64_t B, const double *xs, double *ys, double *mag) {
    const int64_t dh = d / H;
    const float *W[4], *bias[4];
    for (int i = 0; i < 4; i++) {
        W[i] = p + i * (d * d + d);
        bias[i] = W[i] + d * d;
    }
    double *q = calloc((size_t)(B * T * d), sizeof *q), *k = calloc((size_t)(B * T * d), sizeof *k);
    double *v = calloc((size_t)(B * T * d), sizeof *v), *o = calloc((size_t)(B * T * d), sizeof *o);
    double *s = calloc((size_t)T, sizeof *s);
    double *proj[3] = {q, k, v};
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int i = 0; i < 3; i++)
                for (int64_t f = 0; f < d; f++) {
                    double a = bias[i][f];
                    for (int64_t g = 0; g < d; g++) a += W[i][f * d + g] * xs[(b * T + t) * d + g];
                    proj[i][(b * T + t) * d + f] = a;
                }
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < T; t++) {
                int64_t last = causal ? t : T - 1;
                double mx = -INFINITY, sum = 0;
                for (int64_t u = 0; u <= last; u++) {
                    double a = 0;
                    for (int64_t i = 0; i < dh; i++)
                        a += q[(b * T + t) * d + h * dh + i] * k[(b * T + u) * d + h * dh + i];
                    s[u] = a / sqrt((double)dh);
                    mx = fmax(mx, s[u]);
                }
                for (int64_t u = 0; u <= last; u++) sum += s[u] = exp(s[u] - mx);
                for (int64_t i = 0; i < dh; i++) {
                    double a = 0;
                    for (int64_t u = 0; u <= last; u++) a += s[u] / sum * v[(b * T + u) * d + h * dh + i];
                    o[(b * T + t) * d + h * dh + i] = a;
                }
            }
    for (int64_t bt = 0; bt < B * T; bt++)
        for (int64_t f = 0; f < d; f++) {
            double a = bias[3][f], m = fabs(bias[3][f]);
            for (int64_t g = 0; g < d; g++) {
                a += W[3][f * d + g] * o[bt * d + g];
                m += fabs(W[3][f * d + g] * o[bt * d + g]);
            }
            ys[bt * d + f] = a;
            mag[bt * d + f] = m;
        }
    free(q);
    free(k);
    free(v);
    free(o);
    free(s);
}

TEST(seq_attention_matches_reference) {
    static const struct {
        int64_t d, T, H;
        bool causal;
    } cases[] = {{8, 5, 2, true}, {8, 5, 2, false}, {6, 7, 3, true}, {4, 1, 1, true},
                 {16, 9, 4, true}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int64_t d = cases[ci].d, T = cases[ci].T, H = cases[ci].H, B = 3, n = d * T * B;
        char cfg[64];
        snprintf(cfg, sizeof cfg, "attention heads=%lld causal=%d\n", (long long)H,
                 cases[ci].causal);
        sp_model *m = NULL;
        CHECK_OK(sp_model_new(cfg, shape(d, 1, T), 1, 11 + ci, &m));
        if (!m) continue;
        sp_model_set_threads(m, 2);
        float *x = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
        float *want = malloc(sizeof(float) * (size_t)n), *mag = malloc(sizeof(float) * (size_t)n);
        double *xs = malloc(sizeof(double) * (size_t)n), *ys = malloc(sizeof(double) * (size_t)n);
        double *ms = malloc(sizeof(double) * (size_t)n);
        sp_rng rng;
        sp_rng_init(&rng, ci, 1);
        for (int64_t i = 0; i < n; i++) x[i] = 2.0f * sp_rng_normal(&rng);
        /* layer layout (f*T + t)*B + b  <->  reference layout (b*T + t)*d + f */
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t f = 0; f < d; f++) xs[(b * T + t) * d + f] = x[(f * T + t) * B + b];
        const float *y;
        CHECK_OK(sp_model_forward(m, x, B, false, &y));
        ref_attention(sp_model_params(m), d, T, H, cases[ci].causal, B, xs, ys, ms);
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++)
                for (int64_t f = 0; f < d; f++) {
                    int64_t r = (b * T + t) * d + f;
                    got[r] = y[(f * T + t) * B + b];
                    want[r] = (float)ys[r];
                    mag[r] = (float)ms[r];
                }
        CHECK_CLOSE(got, want, mag, n, ((sp_tol){1e-6, 1e-4}));
        free(x), free(got), free(want), free(mag), free(xs), free(ys), free(ms);
        sp_model_free(m);
    }
}

TEST(seq_attention_causal_ignores_the_future) {
    /* changing the last token changes no earlier output */
    const int64_t d = 4, T = 6, B = 2, n = d * T * B;
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("attention heads=2\n", shape(d, 1, T), 1, 4, &m));
    if (!m) return;
    float x[48], y0[48];
    sp_rng rng;
    sp_rng_init(&rng, 4, 0);
    for (int64_t i = 0; i < n; i++) x[i] = sp_rng_normal(&rng);
    const float *y;
    CHECK_OK(sp_model_forward(m, x, B, false, &y));
    memcpy(y0, y, sizeof y0);
    for (int64_t f = 0; f < d; f++) x[(f * T + T - 1) * B + 1] += 1.0f;
    CHECK_OK(sp_model_forward(m, x, B, false, &y));
    for (int64_t f = 0; f < d; f++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t b = 0; b < B; b++) {
                int64_t i = (f * T + t) * B + b;
                if (t < T - 1 || b == 0) CHECK_MSG(y[i] == y0[i], "f %lld t %lld b %lld",
                                                   (long long)f, (long long)t, (long long)b);
                else CHECK(y[i] != y0[i]);
            }
    sp_model_free(m);
}

TEST(seq_embedding_looks_up_rows) {
    const int64_t V = 5, D = 3, T = 4, B = 2;
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("embedding vocab=5 dim=3\n", shape(1, 1, T), 1, 2, &m));
    if (!m) return;
    CHECK_EQ(sp_model_nparams(m), V * D);
    const float ids[8] = {4, 0, 2, 2, 0, 3, 1, 4};   /* column t*B + b */
    const float *y;
    CHECK_OK(sp_model_forward(m, ids, B, true, &y));
    const float *E = sp_model_params(m);
    for (int64_t j = 0; j < T * B; j++)
        for (int64_t k = 0; k < D; k++) CHECK(y[k * T * B + j] == E[(int64_t)ids[j] * D + k]);
    /* backward: rows scatter-add; token 2 appears twice, token 0 twice */
    float dy[24], dx[8];
    for (int i = 0; i < 24; i++) dy[i] = 1.0f;
    sp_model_zero_grad(m);
    CHECK_OK(sp_model_backward(m, dy, dx));
    const float *g = sp_model_grads(m);
    const float count[5] = {2, 1, 2, 1, 2};
    for (int64_t v = 0; v < V; v++)
        for (int64_t k = 0; k < D; k++) CHECK(g[v * D + k] == count[v]);
    for (int i = 0; i < 8; i++) CHECK(dx[i] == 0.0f);
    sp_model_free(m);
}

/* ---- bad input -------------------------------------------------------------------------------- */

TEST(seq_embedding_rejects_bad_token_ids) {
    static const struct {
        float v;
        const char *needle;
    } bad[] = {
        {-1.0f, "token id -1 at position 3 of sample 1 is not an integer in [0, 7)"},
        {7.0f, "token id 7 at position 3"},
        {1e9f, "token id 1e+09 at"},
        {2.5f, "token id 2.5 at"},
        {NAN, "nan at position 3"},
        {INFINITY, "inf at position 3"},
    };
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("embedding vocab=7 dim=4\n", shape(1, 1, 5), 3, 1, &m));
    if (!m) return;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        float x[10] = {0, 1, 2, 3, 4, 5, 6, 0, 1, 2};
        x[3 * 2 + 1] = bad[i].v; /* token 3 of sample 1 */
        const float *y;
        CHECK_STATUS(sp_model_forward(m, x, 2, false, &y), SP_EINVAL);
        CHECK_MSG(strstr(sp_last_error(), bad[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i,
                  sp_last_error(), bad[i].needle);
        CHECK(strstr(sp_last_error(), "0.embedding") != NULL);
    }
    /* no forward, no backward */
    float dy[40] = {0};
    CHECK_STATUS(sp_model_backward(m, dy, NULL), SP_EINVAL);
    sp_model_free(m);
}

TEST(seq_config_errors) {
    static const struct {
        const char *cfg;
        sp_shape in;
        sp_status st;
        const char *needle;
    } bad[] = {
        {"attention heads=3\n", {8, 1, 5}, SP_EINVAL, "heads=3 does not divide the model width d=8"},
        {"attention heads=0\n", {8, 1, 5}, SP_EINVAL, "heads=0"},
        {"attention causal=2\n", {8, 1, 5}, SP_EINVAL, "causal=2"},
        {"attention\n", {2, 3, 4}, SP_ESHAPE, "(attention): input (2,3,4) is not a sequence"},
        {"embedding dim=4\n", {1, 1, 5}, SP_EINVAL, "vocab=V is required"},
        {"embedding vocab=4\n", {1, 1, 5}, SP_EINVAL, "dim=D is required"},
        {"embedding vocab=0 dim=4\n", {1, 1, 5}, SP_EINVAL, "vocab=0"},
        {"embedding vocab=10 dim=4\n", {3, 1, 5}, SP_ESHAPE, "has 3 channels"},
        {"embedding vocab=100000 dim=100000\n", {1, 1, 5}, SP_ESHAPE, "too large"},
        {"posembed\n", {2, 3, 4}, SP_ESHAPE, "(posembed): input (2,3,4) is not a sequence"},
        {"layernorm eps=0\n", {4, 1, 1}, SP_EINVAL, "eps=0"},
        {"layernorm eps=x\n", {4, 1, 1}, SP_EINVAL, "eps=x"},
        {"tokens k=2\n", {1, 4, 4}, SP_EINVAL, "unknown option 'k'"},
        {"posembed dim=3\n", {4, 1, 4}, SP_EINVAL, "unknown option 'dim'"},
        /* past 2^31 dense entries only CSR builds (wide_csr_layers_build_and_run) */
        {"linear out=70000 format=bsr density=1e-6\n", {70000, 1, 1}, SP_ESHAPE,
         "too large (the limit is 2^31 entries except in format=csr)"},
        {"linear out=70000 format=mask density=1e-6\n", {70000, 1, 1}, SP_ESHAPE,
         "except in format=csr"},
        {"linear out=70000\n", {70000, 1, 1}, SP_ESHAPE, "except in format=csr"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sp_model *m = NULL;
        CHECK_STATUS(sp_model_new(bad[i].cfg, bad[i].in, 3, 1, &m), bad[i].st);
        CHECK_MSG(strstr(sp_last_error(), bad[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i,
                  sp_last_error(), bad[i].needle);
        CHECK(m == NULL);
    }
}

TEST(seq_layers_respect_the_parameter_budget) {
    static const struct {
        const char *cfg;
        sp_shape in;
    } big[] = {
        {"embedding vocab=1000 dim=64\n", {1, 1, 5}},
        {"posembed\n", {64, 1, 100}},
        {"attention heads=4\n", {64, 1, 5}},
        {"layernorm\n", {5000, 1, 1}},
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        sp_model *m = NULL;
        CHECK_STATUS(sp_model_new_limited(big[i].cfg, big[i].in, 3, 1, 4000, &m), SP_EFORMAT);
        CHECK_MSG(strstr(sp_last_error(), "budget") != NULL, "case %zu: '%s'", i, sp_last_error());
        CHECK(m == NULL);
    }
}

TEST(seq_config_round_trips) {
    const char *cfg = "tokens\nlinear out=8\nposembed\nlayernorm eps=0.001\n"
                      "attention heads=2 causal=0\nattention\nlayernorm\n";
    sp_model *a = NULL, *b = NULL, *e = NULL;
    CHECK_OK(sp_model_new(cfg, shape(1, 5, 6), 3, 9, &a));
    if (!a) return;
    CHECK(strcmp(sp_model_config(a), "input 1 5 6\ntokens\nlinear out=8\nposembed\n"
                                     "layernorm eps=0.001\nattention heads=2 causal=0\n"
                                     "attention\nlayernorm\n") == 0);
    CHECK_OK(sp_model_new(sp_model_config(a), shape(1, 5, 6), 3, 9, &b));
    if (b) {
        CHECK(strcmp(sp_model_config(a), sp_model_config(b)) == 0);
        CHECK_EQ(sp_model_nparams(a), sp_model_nparams(b));
        CHECK(memcmp(sp_model_params(a), sp_model_params(b),
                     sizeof(float) * (size_t)sp_model_nparams(a)) == 0);
    }
    CHECK_OK(sp_model_new("embedding vocab=9 dim=4\n", shape(1, 1, 3), 3, 9, &e));
    if (e) CHECK(strstr(sp_model_config(e), "embedding vocab=9 dim=4\n") != NULL);
    sp_model_free(a);
    sp_model_free(b);
    sp_model_free(e);
}

TEST(seq_models_survive_allocation_failure) {
    const char *cfg = "tokens\nlinear out=4\nposembed\nresidual {\n layernorm\n attention heads=2\n}\n"
                      "flatten\nlinear out=3\n";
    bool saw_failure = false, reached_success = false;
    for (int64_t n = 1; n < 200 && !reached_success; n++) {
        int64_t live = sp_alloc_live();
        sp_model *m = NULL;
        sp_alloc_fail_after(n);
        sp_status st = sp_model_new(cfg, shape(1, 3, 3), 3, 1, &m);
        const float *y;
        float x[9 * 2] = {0}, dy[3 * 2] = {0};
        if (st == SP_OK) st = sp_model_forward(m, x, 2, true, &y);
        if (st == SP_OK) st = sp_model_backward(m, dy, NULL);
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

/* ---- determinism ------------------------------------------------------------------------------ */

/* The built-in transformer spec; without globalavgpool (written elsewhere) its line is dropped,
 * which leaves flatten over the whole sequence. Returns malloc'ed text. */
static char *transformer_config(void) {
    char *t = NULL;
    if (sp_model_spec_config("transformer", &t) != SP_OK) return NULL;
    size_t n = strlen(t) + 1;
    char *c = malloc(n);
    memcpy(c, t, n);
    sp_free(t);
    if (!sp_layer_find("globalavgpool")) {
        char *g = strstr(c, "globalavgpool\n");
        if (g) memmove(g, g + 14, strlen(g + 14) + 1);
    }
    return c;
}

TEST(seq_transformer_is_bitwise_identical_on_1_and_2_threads) {
    char *cfg = transformer_config();
    CHECK(cfg != NULL);
    if (!cfg) return;
    const sp_shape in = shape(1, 8, 8);
    const int64_t B = 12, nin = 64 * B, nout = 10 * B;
    sp_model *m[2] = {NULL, NULL};
    float *x = malloc(sizeof(float) * (size_t)nin), *dy = malloc(sizeof(float) * (size_t)nout);
    float *dx[2], *y[2];
    sp_rng rng;
    sp_rng_init(&rng, 8, 0);
    for (int64_t i = 0; i < nin; i++) x[i] = sp_rng_uniform(&rng);
    for (int64_t i = 0; i < nout; i++) dy[i] = sp_rng_normal(&rng);
    for (int k = 0; k < 2; k++) {
        dx[k] = malloc(sizeof(float) * (size_t)nin);
        y[k] = malloc(sizeof(float) * (size_t)nout);
        CHECK_OK(sp_model_new(cfg, in, 10, 42, &m[k]));
        if (!m[k]) continue;
        sp_model_set_threads(m[k], k + 1);
        const float *out;
        /* two steps, so that the second starts from accumulated gradients */
        for (int step = 0; step < 2; step++) {
            CHECK_OK(sp_model_forward(m[k], x, B, true, &out));
            CHECK_OK(sp_model_backward(m[k], dy, dx[k]));
        }
        memcpy(y[k], out, sizeof(float) * (size_t)nout);
    }
    if (m[0] && m[1]) {
        CHECK_EQ(sp_model_nparams(m[0]), sp_model_nparams(m[1]));
        CHECK(memcmp(y[0], y[1], sizeof(float) * (size_t)nout) == 0);
        CHECK(memcmp(dx[0], dx[1], sizeof(float) * (size_t)nin) == 0);
        CHECK(memcmp(sp_model_grads(m[0]), sp_model_grads(m[1]),
                     sizeof(float) * (size_t)sp_model_nparams(m[0])) == 0);
        bool nonzero = false;
        for (int64_t i = 0; i < sp_model_nparams(m[0]); i++) nonzero |= sp_model_grads(m[0])[i] != 0;
        CHECK(nonzero);
    }
    for (int k = 0; k < 2; k++) {
        sp_model_free(m[k]);
        free(dx[k]);
        free(y[k]);
    }
    free(x);
    free(dy);
    free(cfg);
}

/* A CSR layer may exceed 2^31 dense entries (70,000 x 70,000 = 4.9e9 here, one entry a row):
 * it is built and run in memory proportional to its entries. */
TEST(wide_csr_layers_build_and_run) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("linear out=70000 format=csr density=1e-6\nlinear out=classes\n",
                          (sp_shape){70000, 1, 1}, 3, 1, &m));
    if (!m) return;
    const sp_csr *c = sp_model_layer_csr(m, 0);
    CHECK(c && c->rows == 70000 && c->cols == 70000 && c->nnz == 70000);
    float *x = calloc(70000, sizeof(float));
    const float *y = NULL;
    for (int64_t i = 0; x && i < 70000; i++) x[i] = (float)(i % 7) / 7.0f;
    if (x) CHECK_OK(sp_model_forward(m, x, 1, false, &y));
    CHECK(y != NULL);
    free(x);
    sp_model_free(m);
}

/* A CSR layer whose activations exceed the caches runs its backward pass fused
 * (sp_csr_spmm_t_sddmm): 70,000 -> 8 at batch 64 has 17.9 MB of input. Its gradients (its
 * weights', its bias', and through dX the 16 -> 70,000 layer's below) match the same layer
 * stored dense behind a mask of the same pattern with the same weights. */
TEST(wide_csr_backward_matches_the_masked_layer) {
    const char *csr_cfg = "linear out=70000 format=csr density=0.25\nrelu\n"
                          "linear out=8 format=csr density=0.001\n";
    const char *mask_cfg = "linear out=70000 format=csr density=0.25\nrelu\n"
                           "linear out=8 format=mask density=0.001\n";
    const sp_shape in = {16, 1, 1};
    const int64_t B = 64;
    sp_model *a = NULL, *b = NULL;
    sp_mask *pat2 = NULL;
    CHECK_OK(sp_model_new(csr_cfg, in, 8, 3, &a));
    if (a) CHECK_OK(sp_model_layer_pattern(a, 2, &pat2));
    const sp_mask *pats[3] = {NULL, NULL, pat2};
    if (pat2) CHECK_OK(sp_model_new_with_patterns(mask_cfg, in, 8, 3, (int64_t)1 << 30, pats, 3, &b));
    float *w = malloc(sizeof(float) * 8 * 70000), *bias = malloc(sizeof(float) * 8);
    float *x = malloc(sizeof(float) * 16 * B), *dy = malloc(sizeof(float) * 8 * B);
    if (!a || !b || !w || !bias || !x || !dy) goto done;
    /* the same weights everywhere: layer 0 shares the seed and pattern; layer 2 copied */
    CHECK_OK(sp_model_layer_get_weight(a, 2, w, bias));
    CHECK_OK(sp_model_layer_set_weight(b, 2, w, bias));
    CHECK(sp_model_nparams(a) == sp_model_nparams(b) - (8 * 70000 - sp_model_layer_csr(a, 2)->nnz));
    sp_rng r;
    sp_rng_init(&r, 4, 0);
    for (int64_t i = 0; i < 16 * B; i++) x[i] = sp_rng_uniform(&r);
    for (int64_t i = 0; i < 8 * B; i++) dy[i] = sp_rng_uniform(&r) - 0.5f;
    sp_model *ms[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        const float *y = NULL;
        CHECK_OK(sp_model_forward(ms[k], x, B, true, &y));
        sp_model_zero_grad(ms[k]);
        CHECK_OK(sp_model_backward(ms[k], dy, NULL));
    }
    /* layer 0 (CSR in both, the same entries): its gradient came through layer 2's dX */
    sp_layer_info la, lb;
    sp_model_layer(a, 0, &la);
    sp_model_layer(b, 0, &lb);
    CHECK_CLOSE(sp_model_grads(a) + la.param_offset, sp_model_grads(b) + lb.param_offset, NULL,
                la.nparam, ((sp_tol){1e-5, 1e-4}));
    /* layer 2: CSR entries against the mask's dense gradient at the same positions, and bias */
    sp_model_layer(a, 2, &la);
    sp_model_layer(b, 2, &lb);
    const sp_csr *c = sp_model_layer_csr(a, 2);
    const float *ga = sp_model_grads(a) + la.param_offset, *gb = sp_model_grads(b) + lb.param_offset;
    float *want = malloc(sizeof(float) * (size_t)(c->nnz + 8));
    for (int64_t i = 0; want && i < 8; i++)
        for (int64_t k = c->row_ptr[i]; k < c->row_ptr[i + 1]; k++) want[k] = gb[i * 70000 + sp_csr_col(c, k)];
    for (int64_t i = 0; want && i < 8; i++) want[c->nnz + i] = gb[8 * 70000 + i];
    if (want) CHECK_CLOSE(ga, want, NULL, c->nnz + 8, ((sp_tol){1e-5, 1e-4}));
    free(want);
done:
    free(w), free(bias), free(x), free(dy);
    sp_mask_free(pat2);
    sp_model_free(a);
    sp_model_free(b);
}
