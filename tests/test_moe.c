/*
 * test_moe.c - the mixture-of-experts block: forward passes against a naive reference that
 * loops over tokens and experts (token top-1/top-2, sigmoid router, capacity with drops,
 * dropless, expert choice, noisy routing, shared expert), routing statistics against the
 * reference's counts, gradient checks with the router and the auxiliary losses included,
 * composition with sparse experts and checkpoints, bad configs, the backward tap, the top-k
 * override and bitwise determinism across thread counts.
 */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "gradcheck.h"
#include "test.h"

static sp_shape shape(int64_t c, int64_t h, int64_t w) { return (sp_shape){c, h, w}; }

/* ---- the naive reference ---------------------------------------------------------------------- */

enum { R_TOKEN, R_NOISY, R_EXPERT };
static const char *const rnames[] = {"token", "noisy", "expert"};

typedef struct ref_cfg {
    int E, K, routing;
    bool sigmoid;
    double F;          /* capacity factor, 0 = none */
    bool shared;
    int renorm;        /* -1: the default */
    double balance, zloss;
} ref_cfg;

#define RMAX_E 16
#define RMAX_N 512

typedef struct ref_route {
    double p[RMAX_E][RMAX_N];
    double gate[RMAX_E][RMAX_N]; /* gate of (e, n), 0 if not assigned */
    bool on[RMAX_E][RMAX_N];     /* (e, n) assigned and kept */
    int64_t load[RMAX_E], dropped, assignments;
    double entropy_sum, balance, z;
    double margin;               /* the smallest gap in p at a selection boundary */
} ref_route;

/* The config of a moe block with body "linear out=H, gelu, linear out=D" (plus `extra` lines
 * after the block). */
static void moe_config(char *buf, size_t n, const ref_cfg *c, int64_t H, int64_t D,
                       const char *body_fmt, const char *extra) {
    char cap[32], ren[32] = "";
    if (c->F > 0) snprintf(cap, sizeof cap, "%g", c->F);
    else snprintf(cap, sizeof cap, "none");
    if (c->renorm >= 0) snprintf(ren, sizeof ren, " renorm=%d", c->renorm);
    snprintf(buf, n,
             "moe experts=%d top_k=%d routing=%s router=%s capacity=%s shared=%d balance=%g "
             "zloss=%g%s {\n  linear out=%lld%s\n  gelu\n  linear out=%lld\n}\n%s",
             c->E, c->K, rnames[c->routing], c->sigmoid ? "sigmoid" : "softmax", cap, c->shared,
             c->balance, c->zloss, ren, (long long)H, body_fmt ? body_fmt : "", (long long)D,
             extra ? extra : "");
}

/* Routing of the moe layer at index mi of m for x (D, N), in double, by the rules of
 * docs/CONFIG.md; the noise of routing=noisy in training is the stream (model seed, step 0,
 * layer index) that moe.c documents. */
static void ref_routing(const sp_model *m, int mi, const ref_cfg *c, int64_t D, const float *x,
                        int64_t N, bool train, ref_route *o) {
    memset(o, 0, sizeof *o);
    o->margin = INFINITY;
    const int E = c->E, K = c->K;
    sp_layer_info li;
    sp_model_layer(m, mi, &li);
    const float *Wr = sp_model_params((sp_model *)m) + li.param_offset, *br = Wr + E * D,
                *Wn = br + E;
    static double h[RMAX_E][RMAX_N];
    sp_rng r;
    sp_rng_init(&r, sp_model_seed(m) ^ 0x303eu, (uint64_t)mi);
    for (int e = 0; e < E; e++)
        for (int64_t n = 0; n < N; n++) {
            double a = br[e];
            for (int64_t j = 0; j < D; j++) a += (double)Wr[e * D + j] * x[j * N + n];
            h[e][n] = a;
        }
    if (c->routing == R_NOISY && train)
        for (int e = 0; e < E; e++)
            for (int64_t n = 0; n < N; n++) {
                double u = 0;
                for (int64_t j = 0; j < D; j++) u += (double)Wn[e * D + j] * x[j * N + n];
                h[e][n] += sp_rng_normal(&r) * log1p(exp(u));
            }
    for (int64_t n = 0; n < N; n++) {
        double mx = -INFINITY, s = 0, ps = 0;
        for (int e = 0; e < E; e++) mx = fmax(mx, h[e][n]);
        for (int e = 0; e < E; e++) s += exp(h[e][n] - mx);
        const double lse = mx + log(s);
        o->z += lse * lse / (double)N;
        for (int e = 0; e < E; e++) {
            o->p[e][n] = c->sigmoid ? 1.0 / (1.0 + exp(-h[e][n])) : exp(h[e][n] - lse);
            ps += o->p[e][n];
        }
        for (int e = 0; e < E; e++) {
            const double q = o->p[e][n] / ps;
            if (q > 0) o->entropy_sum -= q * log(q);
        }
    }
    if (c->routing == R_EXPERT) {
        const int64_t C = (int64_t)fmin((double)N, ceil(c->F * (double)N * K / E));
        for (int e = 0; e < E; e++) {
            bool taken[RMAX_N] = {false};
            double last = 0;
            for (int64_t s = 0; s <= C && s < N; s++) {
                int64_t best = -1;
                for (int64_t n = 0; n < N; n++)
                    if (!taken[n] && (best < 0 || o->p[e][n] > o->p[e][best])) best = n;
                if (s == C) {
                    o->margin = fmin(o->margin, last - o->p[e][best]);
                    break;
                }
                taken[best] = true;
                last = o->p[e][best];
                o->on[e][best] = true;
                o->gate[e][best] = o->p[e][best];
                o->load[e]++;
                o->assignments++;
            }
        }
    } else {
        const bool renorm = c->renorm >= 0 ? c->renorm : K >= 2;
        static int sel[RMAX_N][RMAX_E];
        static double g[RMAX_N][RMAX_E];
        for (int64_t n = 0; n < N; n++) {
            bool taken[RMAX_E] = {false};
            double sum = 0;
            for (int k = 0; k <= K && k < E; k++) {
                int best = -1;
                for (int e = 0; e < E; e++)
                    if (!taken[e] && (best < 0 || o->p[e][n] > o->p[best][n])) best = e;
                if (k == K) {
                    o->margin = fmin(o->margin, o->p[sel[n][K - 1]][n] - o->p[best][n]);
                    break;
                }
                taken[best] = true;
                sel[n][k] = best;
                sum += o->p[best][n];
            }
            for (int k = 0; k < K; k++)
                g[n][k] = renorm ? o->p[sel[n][k]][n] / sum : o->p[sel[n][k]][n];
        }
        const double C = c->F > 0 ? ceil(c->F * (double)N * K / E) : INFINITY;
        for (int k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++) {
                const int e = sel[n][k];
                if ((double)o->load[e] < C) {
                    o->load[e]++;
                    o->assignments++;
                    o->on[e][n] = true;
                    o->gate[e][n] = g[n][k];
                } else {
                    o->dropped++;
                }
            }
    }
    for (int e = 0; e < E; e++) {
        double P = 0;
        for (int64_t n = 0; n < N; n++) P += o->p[e][n];
        o->balance += E * ((double)o->load[e] / ((double)N * K)) * (P / (double)N);
    }
}

/* One expert (linear D->H, gelu, linear H->D) on token column n of x, from the model's layers
 * first..first+2, into out (D). */
static void ref_expert(const sp_model *m, int first, int64_t D, int64_t H, const float *x,
                       int64_t N, int64_t n, double *out) {
    float *W1 = malloc(sizeof(float) * (size_t)(H * D)), *b1 = malloc(sizeof(float) * (size_t)H);
    float *W2 = malloc(sizeof(float) * (size_t)(D * H)), *b2 = malloc(sizeof(float) * (size_t)D);
    CHECK_OK(sp_model_layer_get_weight(m, first, W1, b1));
    CHECK_OK(sp_model_layer_get_weight(m, first + 2, W2, b2));
    double hid[64];
    for (int64_t i = 0; i < H; i++) {
        double a = b1[i];
        for (int64_t j = 0; j < D; j++) a += (double)W1[i * D + j] * x[j * N + n];
        hid[i] = 0.5 * a * (1.0 + erf(a / sqrt(2.0)));
    }
    for (int64_t i = 0; i < D; i++) {
        double a = b2[i];
        for (int64_t j = 0; j < H; j++) a += (double)W2[i * H + j] * hid[j];
        out[i] = a;
    }
    free(W1);
    free(b1);
    free(W2);
    free(b2);
}

/* The moe layer's output (D, N): loops over tokens and experts. */
static void ref_moe(const sp_model *m, int mi, const ref_cfg *c, int64_t D, int64_t H,
                    const float *x, int64_t N, bool train, ref_route *o, double *y) {
    ref_routing(m, mi, c, D, x, N, train, o);
    double out[64];
    for (int64_t n = 0; n < N; n++) {
        for (int64_t i = 0; i < D; i++) y[i * N + n] = 0;
        for (int e = 0; e < c->E; e++) {
            if (!o->on[e][n]) continue;
            ref_expert(m, mi + 1 + 3 * e, D, H, x, N, n, out);
            for (int64_t i = 0; i < D; i++) y[i * N + n] += o->gate[e][n] * out[i];
        }
        if (c->shared) {
            ref_expert(m, mi + 1 + 3 * c->E, D, H, x, N, n, out);
            for (int64_t i = 0; i < D; i++) y[i * N + n] += out[i];
        }
    }
}

/* ---- forward against the reference, statistics against its counts ---------------------------- */

static void check_against_ref(const char *name, ref_cfg c, bool train, bool want_drops) {
    const int64_t D = 6, H = 10, T = 5, B = 3, N = T * B;
    char cfg[512];
    moe_config(cfg, sizeof cfg, &c, H, D, NULL, NULL);
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(cfg, shape(D, 1, T), 1, 21, &m));
    if (!m) return;
    CHECK_EQ(sp_model_nlayers(m), 1 + 3 * (c.E + c.shared));
    float *x = malloc(sizeof(float) * (size_t)(D * N));
    double *want = malloc(sizeof(double) * (size_t)(D * N));
    sp_rng rng;
    sp_rng_init(&rng, 4, 4);
    for (int64_t i = 0; i < D * N; i++) x[i] = 1.5f * sp_rng_normal(&rng);
    const float *y;
    sp_model_moe_reset_stats(m);
    CHECK_OK(sp_model_forward(m, x, B, train, &y));
    static ref_route o;
    ref_moe(m, 0, &c, D, H, x, N, train, &o, want);
    CHECK_MSG(o.margin > 1e-4, "%s: the reference's selection margin %g is too thin to compare",
              name, o.margin);
    for (int64_t i = 0; i < D * N; i++)
        CHECK_MSG(fabs(y[i] - want[i]) <= 2e-5 + 1e-5 * fabs(want[i]),
                  "%s: y[%lld] = %.8g, reference %.8g", name, (long long)i, y[i], want[i]);
    sp_moe_stats s;
    CHECK_OK(sp_model_moe_stats(m, 0, &s));
    CHECK_EQ(s.experts, c.E);
    CHECK_EQ(s.top_k, c.K);
    CHECK_EQ(s.tokens, N);
    CHECK_EQ(s.assignments, o.assignments);
    CHECK_EQ(s.dropped, o.dropped);
    int64_t mx = 0;
    for (int e = 0; e < c.E; e++) {
        CHECK_MSG(s.load[e] == o.load[e], "%s: load[%d] = %lld, reference %lld", name, e,
                  (long long)s.load[e], (long long)o.load[e]);
        mx = o.load[e] > mx ? o.load[e] : mx;
    }
    if (want_drops) CHECK_MSG(s.dropped > 0, "%s: no assignment was dropped", name);
    else if (c.routing != R_EXPERT) CHECK_EQ(s.assignments, N * c.K);
    CHECK(fabs(s.load_max_over_mean - (double)mx / ((double)o.assignments / c.E)) < 1e-12);
    CHECK_MSG(fabs(s.router_entropy - o.entropy_sum / N) < 1e-5, "%s: entropy %g, reference %g",
              name, s.router_entropy, o.entropy_sum / N);
    CHECK_MSG(fabs(s.balance_loss - o.balance) < 1e-5 * fmax(1, o.balance),
              "%s: balance %g, reference %g", name, s.balance_loss, o.balance);
    CHECK_MSG(fabs(s.z_loss - o.z) < 1e-5 * fmax(1, o.z), "%s: z %g, reference %g", name,
              s.z_loss, o.z);
    const double aux = train ? c.balance * o.balance + c.zloss * o.z : 0.0;
    CHECK_MSG(fabs(sp_model_aux_loss(m) - aux) < 1e-5, "%s: aux loss %g, want %g", name,
              sp_model_aux_loss(m), aux);
    /* statistics accumulate until reset */
    CHECK_OK(sp_model_forward(m, x, B, train, &y));
    CHECK_OK(sp_model_moe_stats(m, 0, &s));
    CHECK_EQ(s.tokens, 2 * N);
    CHECK_EQ(s.dropped, 2 * o.dropped);
    CHECK_EQ(s.load[0], 2 * o.load[0]);
    sp_model_moe_reset_stats(m);
    CHECK_OK(sp_model_moe_stats(m, 0, &s));
    CHECK_EQ(s.tokens, 0);
    CHECK_EQ(s.load[0], 0);
    CHECK(s.load_max_over_mean == 0.0);
    free(x);
    free(want);
    sp_model_free(m);
}

TEST(moe_token_top1_matches_reference) {
    check_against_ref("top1", (ref_cfg){.E = 4, .K = 1, .renorm = -1, .balance = 0.01}, false,
                      false);
    check_against_ref("top1 train", (ref_cfg){.E = 4, .K = 1, .renorm = -1, .balance = 0.3,
                                               .zloss = 0.2}, true, false);
}

TEST(moe_token_top2_renorm_matches_reference) {
    check_against_ref("top2", (ref_cfg){.E = 4, .K = 2, .renorm = -1}, false, false);
    check_against_ref("top2 no renorm", (ref_cfg){.E = 5, .K = 2, .renorm = 0}, false, false);
    check_against_ref("top3 of 3", (ref_cfg){.E = 3, .K = 3, .renorm = 1}, false, false);
}

TEST(moe_sigmoid_router_matches_reference) {
    check_against_ref("sigmoid top2", (ref_cfg){.E = 4, .K = 2, .sigmoid = true, .renorm = -1},
                      true, false);
    check_against_ref("sigmoid top1", (ref_cfg){.E = 4, .K = 1, .sigmoid = true, .renorm = -1},
                      false, false);
}

TEST(moe_capacity_drops_match_reference) {
    /* C = ceil(0.5 * 15 / 4) = 2: at most 8 of 15 tokens run */
    check_against_ref("cap top1", (ref_cfg){.E = 4, .K = 1, .F = 0.5, .renorm = -1}, false, true);
    /* C = ceil(0.75 * 15 * 2 / 4) = 6: second choices queue behind every first choice */
    check_against_ref("cap top2", (ref_cfg){.E = 4, .K = 2, .F = 0.75, .renorm = -1}, false,
                      true);
    /* a generous factor drops nothing */
    check_against_ref("cap 4", (ref_cfg){.E = 4, .K = 1, .F = 4.0, .renorm = -1}, false, false);
}

TEST(moe_dropless_matches_reference) {
    check_against_ref("dropless", (ref_cfg){.E = 6, .K = 2, .renorm = -1}, true, false);
}

TEST(moe_expert_choice_matches_reference) {
    /* C = ceil(15 / 4) = 4 tokens per expert; then C = ceil(1.5 * 15 * 2 / 4) = 12 */
    check_against_ref("expert", (ref_cfg){.E = 4, .K = 1, .routing = R_EXPERT, .F = 1,
                                           .renorm = -1}, false, false);
    check_against_ref("expert k2", (ref_cfg){.E = 4, .K = 2, .routing = R_EXPERT, .F = 1.5,
                                              .renorm = -1, .zloss = 0.1}, true, false);
    /* C capped at N: every expert takes every token */
    check_against_ref("expert all", (ref_cfg){.E = 3, .K = 3, .routing = R_EXPERT, .F = 2,
                                               .renorm = -1}, false, false);
}

TEST(moe_noisy_matches_reference) {
    /* training: the noise of the documented stream; evaluation: no noise */
    check_against_ref("noisy train", (ref_cfg){.E = 4, .K = 2, .routing = R_NOISY,
                                                .renorm = -1}, true, false);
    check_against_ref("noisy eval", (ref_cfg){.E = 4, .K = 2, .routing = R_NOISY,
                                               .renorm = -1}, false, false);
}

TEST(moe_shared_expert_matches_reference) {
    check_against_ref("shared", (ref_cfg){.E = 4, .K = 1, .shared = true, .renorm = -1}, false,
                      false);
    check_against_ref("shared cap", (ref_cfg){.E = 4, .K = 2, .shared = true, .F = 0.5,
                                               .renorm = -1}, true, true);
}

/* A token whose every choice is dropped outputs 0, so in a residual block it passes through. */
TEST(moe_dropped_token_passes_residual) {
    const int64_t D = 4, N = 8;
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("residual {\nmoe experts=2 capacity=0.25 {\nlinear out=4\n}\n}\n",
                          shape(D, 1, 1), 1, 3, &m));
    if (!m) return;
    float x[32];
    sp_rng rng;
    sp_rng_init(&rng, 1, 1);
    for (int i = 0; i < 32; i++) x[i] = sp_rng_normal(&rng);
    const float *y;
    CHECK_OK(sp_model_forward(m, x, N, false, &y));
    sp_moe_stats s;
    CHECK_OK(sp_model_moe_stats(m, 1, &s));
    /* C = ceil(0.25 * 8 / 2) = 1 per expert: at most 2 tokens run, the others pass through */
    CHECK(s.assignments >= 1 && s.assignments <= 2);
    CHECK_EQ(s.assignments + s.dropped, N);
    int unchanged = 0;
    for (int64_t n = 0; n < N; n++) {
        bool same = true;
        for (int64_t i = 0; i < D; i++) same &= y[i * N + n] == x[i * N + n];
        unchanged += same;
    }
    CHECK_EQ(unchanged, s.dropped);
    sp_model_free(m);
}

/* ---- gradient checks -------------------------------------------------------------------------- */

/* Top-k and capacity are piecewise constant in the router's output: a central difference
 * across a selection boundary measures the jump, not the gradient. So each check runs at the
 * first seed whose routing (recomputed by the reference from the same model and inputs as
 * GRADCHECK builds, noise included) keeps every selection boundary at least 0.02 apart in p;
 * a step of 1e-3 in any weight or input (|x| and |eps| stay below about 3 here) moves a
 * logit by under 0.01 and a probability by less, so no selection flips. */
static uint64_t stable_seed(const char *cfg, const ref_cfg *c, int64_t D, int64_t T, int64_t B,
                            bool train) {
    for (uint64_t seed = 1; seed < 300; seed++) {
        sp_model *m = NULL;
        if (sp_model_new(cfg, shape(D, 1, T), D, seed + 7, &m) != SP_OK) return 0;
        const int64_t N = T * B;
        float *x = malloc(sizeof(float) * (size_t)(D * N));
        sp_rng rng;
        sp_rng_init(&rng, seed, 99);
        for (int64_t i = 0; i < D * N; i++) x[i] = sp_rng_normal(&rng);
        static ref_route o;
        ref_routing(m, 0, c, D, x, N, train, &o);
        free(x);
        sp_model_free(m);
        if (o.margin >= 0.02) return seed;
    }
    return 0;
}

static void gradcheck_moe(const char *name, ref_cfg c, const char *body_fmt) {
    const int64_t D = 4, H = 6, T = 3, B = 2;
    char cfg[512];
    moe_config(cfg, sizeof cfg, &c, H, D, body_fmt, NULL);
    uint64_t seed = stable_seed(cfg, &c, D, T, B, true);
    CHECK_MSG(seed > 0, "%s: no seed with a stable routing", name);
    if (!seed) return;
    CHECK_MSG(GRADCHECK(cfg, shape(D, 1, T), D, .batch = B, .train = true, .seed = seed,
                        .max_checks = 96) == 0,
              "%s failed (seed %llu)", name, (unsigned long long)seed);
}

TEST(moe_gradcheck_token_top1) {
    gradcheck_moe("top1", (ref_cfg){.E = 4, .K = 1, .renorm = -1, .balance = 0.5, .zloss = 0.2},
                  NULL);
}

TEST(moe_gradcheck_token_top2) {
    gradcheck_moe("top2", (ref_cfg){.E = 4, .K = 2, .renorm = -1, .balance = 0.5, .zloss = 0.2},
                  NULL);
    gradcheck_moe("top2 no renorm", (ref_cfg){.E = 3, .K = 2, .renorm = 0, .balance = 0.5,
                                               .zloss = 0.2}, NULL);
    gradcheck_moe("top2 sigmoid", (ref_cfg){.E = 4, .K = 2, .sigmoid = true, .renorm = -1,
                                             .balance = 0.5, .zloss = 0.2}, NULL);
}

TEST(moe_gradcheck_noisy) {
    gradcheck_moe("noisy", (ref_cfg){.E = 4, .K = 2, .routing = R_NOISY, .renorm = -1,
                                      .balance = 0.5, .zloss = 0.2}, NULL);
}

TEST(moe_gradcheck_expert_choice) {
    gradcheck_moe("expert", (ref_cfg){.E = 3, .K = 1, .routing = R_EXPERT, .F = 1,
                                       .renorm = -1, .balance = 0.5, .zloss = 0.2}, NULL);
}

TEST(moe_gradcheck_capacity_and_shared) {
    gradcheck_moe("capacity", (ref_cfg){.E = 3, .K = 2, .F = 0.5, .renorm = -1, .balance = 0.5,
                                         .zloss = 0.2}, NULL);
    gradcheck_moe("shared", (ref_cfg){.E = 3, .K = 1, .shared = true, .renorm = -1,
                                       .balance = 0.5, .zloss = 0.2}, NULL);
}

TEST(moe_gradcheck_sparse_experts) {
    gradcheck_moe("csr", (ref_cfg){.E = 3, .K = 2, .renorm = -1, .balance = 0.5, .zloss = 0.2},
                  " format=csr density=0.5");
    gradcheck_moe("nm", (ref_cfg){.E = 3, .K = 1, .renorm = -1, .balance = 0.5},
                  " format=nm nm=2:4");
}

/* A pre-norm transformer-style block with the moe inside a residual: everything before the
 * router moves it too, so only a smooth configuration is checked here (E = K: every token uses
 * every expert, no selection). */
TEST(moe_gradcheck_in_residual_block) {
    GRADCHECK("residual {\n  layernorm\n  moe experts=3 top_k=3 balance=0.5 zloss=0.2 {\n"
              "    linear out=8\n    gelu\n    linear out=4\n  }\n}\nlinear out=3\n",
              shape(4, 1, 3), 3, .batch = 2, .train = true, .max_checks = 64);
}

/* ---- composition: sparse experts, the layer list, checkpoints --------------------------------- */

TEST(moe_sparse_experts_save_and_load) {
    const char *cfg = "linear out=8\n"
                      "residual {\n"
                      "  layernorm\n"
                      "  moe experts=3 top_k=2 {\n"
                      "    linear out=12 format=csr density=0.5\n"
                      "    relu\n"
                      "    linear out=8 format=mask density=0.5\n"
                      "  }\n"
                      "}\n"
                      "linear out=classes\n";
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(cfg, shape(6, 1, 4), 5, 9, &m));
    if (!m) return;
    /* 0 linear, 1 residual, 2 layernorm, 3 moe, experts at 4-6, 7-9, 10-12, 13 linear */
    CHECK_EQ(sp_model_nlayers(m), 14);
    sp_layer_info li;
    CHECK_OK(sp_model_layer(m, 3, &li));
    CHECK(!strcmp(li.kind, "moe"));
    CHECK_EQ(li.nparam, 3 * 8 + 3);
    for (int e = 0; e < 3; e++) {
        CHECK_OK(sp_model_layer(m, 4 + 3 * e, &li));
        CHECK(!strcmp(li.kind, "linear") && !strcmp(li.format, "csr"));
        CHECK_OK(sp_model_layer(m, 6 + 3 * e, &li));
        CHECK(!strcmp(li.kind, "linear") && !strcmp(li.format, "mask"));
    }
    CHECK(sp_model_layer_csr(m, 4) != NULL && sp_model_layer_csr(m, 7) != NULL);
    /* each expert draws its own pattern */
    sp_mask *p0 = NULL, *p1 = NULL;
    CHECK_OK(sp_model_layer_pattern(m, 4, &p0));
    CHECK_OK(sp_model_layer_pattern(m, 7, &p1));
    CHECK(p0 && p1 && memcmp(p0->bits, p1->bits, sizeof(uint64_t) * (size_t)(12 * p0->words_per_row)));
    /* the config holds the block once */
    const char *c = sp_model_config(m);
    CHECK(strstr(c, "moe experts=3") && strstr(c, "format=csr") &&
          strstr(strstr(c, "format=csr") + 1, "format=csr") == NULL);

    const int64_t B = 3, nin = 6 * 4 * B, nout = 5 * 4 * B;
    float x[72];
    sp_rng rng;
    sp_rng_init(&rng, 2, 2);
    for (int i = 0; i < nin; i++) x[i] = sp_rng_normal(&rng);
    const float *y;
    CHECK_OK(sp_model_forward(m, x, B, false, &y));
    float y0[60];
    memcpy(y0, y, sizeof(float) * (size_t)nout);
    char path[128];
    snprintf(path, sizeof path, "/tmp/sparrow_test_%d_moe.ckpt", (int)getpid());
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    sp_checkpoint ck = {0};
    CHECK_OK(sp_checkpoint_load(path, &ck));
    unlink(path);
    if (ck.model) {
        CHECK(!strcmp(sp_model_config(ck.model), sp_model_config(m)));
        CHECK_EQ(sp_model_nlayers(ck.model), 14);
        sp_mask *q0 = NULL, *q1 = NULL;
        CHECK_OK(sp_model_layer_pattern(ck.model, 4, &q0));
        CHECK_OK(sp_model_layer_pattern(ck.model, 7, &q1));
        CHECK(q0 && q1 &&
              !memcmp(p0->bits, q0->bits, sizeof(uint64_t) * (size_t)(12 * p0->words_per_row)) &&
              !memcmp(p1->bits, q1->bits, sizeof(uint64_t) * (size_t)(12 * p1->words_per_row)));
        sp_mask_free(q0);
        sp_mask_free(q1);
        CHECK_OK(sp_model_forward(ck.model, x, B, false, &y));
        CHECK(!memcmp(y, y0, sizeof(float) * (size_t)nout));
    }
    sp_checkpoint_free(&ck);
    sp_mask_free(p0);
    sp_mask_free(p1);
    sp_model_free(m);
}

/* The config a model writes back builds the same model (same layers, same parameters). */
TEST(moe_config_round_trips) {
    const char *cfgs[] = {
        "moe experts=4 {\nlinear out=3\n}\n",
        "moe experts=5 top_k=2 routing=noisy router=sigmoid capacity=1.25 balance=0 zloss=0.001 "
        "shared=1 renorm=0 {\nlinear out=6\ntanh\nlinear out=3\n}\n",
        "moe experts=3 routing=expert capacity=2 {\nresidual {\nlinear out=3\n}\n}\n",
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        sp_model *a = NULL, *b = NULL;
        CHECK_OK(sp_model_new(cfgs[i], shape(3, 1, 2), 1, 5, &a));
        if (!a) continue;
        CHECK_OK(sp_model_new(sp_model_config(a), shape(3, 1, 2), 1, 5, &b));
        if (b) {
            CHECK(!strcmp(sp_model_config(a), sp_model_config(b)));
            CHECK_EQ(sp_model_nparams(a), sp_model_nparams(b));
            CHECK(!memcmp(sp_model_params(a), sp_model_params(b),
                          sizeof(float) * (size_t)sp_model_nparams(a)));
        }
        sp_model_free(a);
        sp_model_free(b);
    }
}

/* ---- bad configs ------------------------------------------------------------------------------ */

TEST(moe_rejects_bad_configs) {
    static const struct {
        const char *cfg;
        sp_status st;
        const char *msg;
    } cases[] = {
        {"moe experts=2 top_k=3 {\nlinear out=4\n}\n", SP_EINVAL, "top_k=3 exceeds experts=2"},
        {"moe experts=0 {\nlinear out=4\n}\n", SP_EINVAL, "experts=0"},
        {"moe top_k=1 {\nlinear out=4\n}\n", SP_EINVAL, "experts=E is required"},
        {"moe experts=2 capacity=0 {\nlinear out=4\n}\n", SP_EINVAL, "capacity=0"},
        {"moe experts=2 capacity=-1 {\nlinear out=4\n}\n", SP_EINVAL, "capacity=-1"},
        {"moe experts=2 capacity=lots {\nlinear out=4\n}\n", SP_EINVAL, "capacity=lots"},
        {"moe experts=2 routing=expert capacity=none {\nlinear out=4\n}\n", SP_EINVAL,
         "capacity=none"},
        {"moe experts=2 routing=hash {\nlinear out=4\n}\n", SP_EINVAL, "routing=hash"},
        {"moe experts=2 router=relu {\nlinear out=4\n}\n", SP_EINVAL, "router=relu"},
        {"moe experts=2 routing=expert renorm=1 {\nlinear out=4\n}\n", SP_EINVAL, "renorm=1"},
        {"moe experts=2 top_k=0 {\nlinear out=4\n}\n", SP_EINVAL, "top_k=0"},
        {"moe experts=2 topk=1 {\nlinear out=4\n}\n", SP_EINVAL, "unknown option 'topk'"},
        {"moe experts=2 {\nlinear out=5\n}\n", SP_ESHAPE, "(5,1,1)"},
        {"moe experts=2 {\nlinear out=4\n", SP_EINVAL, "moe block opened on line 1 is not closed"},
        {"moe experts=2\nlinear out=4\n}\n", SP_EINVAL, "write 'moe experts=E"},
        {"moe experts=2 {\n}\n", SP_EINVAL, "expert body is empty"},
        {"moe experts=2 {\nmoe experts=2 {\nlinear out=4\n}\n}\n", SP_EINVAL, "do not nest"},
        {"moe experts=3000 {\nlinear out=4\nlinear out=4\n}\n", SP_EINVAL, "more than 4096 layers"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sp_model *m = NULL;
        CHECK_STATUS(sp_model_new(cases[i].cfg, shape(4, 1, 3), 2, 1, &m), cases[i].st);
        CHECK_MSG(strstr(sp_last_error(), cases[i].msg) != NULL, "case %zu: '%s' lacks '%s'", i,
                  sp_last_error(), cases[i].msg);
        CHECK(m == NULL);
    }
    /* a sparsity pattern goes to an expert's layer, not to the block */
    sp_mask *pat = NULL;
    CHECK_OK(sp_mask_new(4, 4, &pat));
    if (pat) {
        const sp_mask *pats[2] = {pat, NULL};
        sp_model *mp = NULL;
        CHECK_STATUS(sp_model_new_with_patterns("moe experts=2 {\nlinear out=4 format=mask\n}\n",
                                                shape(4, 1, 3), 2, 1, (int64_t)1 << 20, pats, 2,
                                                &mp),
                     SP_EFORMAT);
        CHECK(strstr(sp_last_error(), "moe block and takes no sparsity pattern") != NULL);
        pats[0] = NULL;
        pats[1] = pat;
        CHECK_OK(sp_model_new_with_patterns("moe experts=2 {\nlinear out=4 format=mask\n}\n",
                                            shape(4, 1, 3), 2, 1, (int64_t)1 << 20, pats, 2, &mp));
        sp_mask *got = NULL;
        if (mp) CHECK_OK(sp_model_layer_pattern(mp, 1, &got));
        CHECK(got && sp_mask_count(got) == 0); /* layer 1 took the (empty) pattern given */
        sp_mask_free(got);
        sp_model_free(mp);
        sp_mask_free(pat);
    }
    /* a budget counts every expert */
    sp_model *m = NULL;
    CHECK_STATUS(sp_model_new_limited("moe experts=8 {\nlinear out=4\n}\n", shape(4, 1, 3), 2, 1,
                                      100, &m),
                 SP_EFORMAT);
    CHECK(m == NULL);
}

/* ---- run-time controls, the tap, threads ------------------------------------------------------ */

TEST(moe_set_top_k_overrides_at_run_time) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("moe experts=4 top_k=1 {\nlinear out=4\n}\n"
                          "moe experts=3 routing=expert {\nlinear out=4\n}\n",
                          shape(4, 1, 1), 1, 1, &m));
    if (!m) return;
    float x[40];
    sp_rng rng;
    sp_rng_init(&rng, 1, 1);
    for (int i = 0; i < 40; i++) x[i] = sp_rng_normal(&rng);
    const float *y;
    sp_moe_stats s;
    CHECK_STATUS(sp_model_moe_set_top_k(m, 5), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "k=5") && strstr(sp_last_error(), "0.moe"));
    CHECK_STATUS(sp_model_moe_set_top_k(m, 0), SP_EINVAL);
    CHECK_OK(sp_model_moe_set_top_k(m, 3));
    CHECK_OK(sp_model_forward(m, x, 10, false, &y));
    CHECK_OK(sp_model_moe_stats(m, 0, &s));
    CHECK_EQ(s.top_k, 3);
    CHECK_EQ(s.assignments, 30);
    /* the expert-choice layer keeps its own */
    CHECK_OK(sp_model_moe_stats(m, 5, &s)); /* experts of the first block are layers 1-4 */
    CHECK_EQ(s.top_k, 1);
    CHECK_EQ(s.assignments, 3 * 4); /* C = ceil(10 / 3) */
    /* the config keeps top_k=1 */
    CHECK(strstr(sp_model_config(m), "moe experts=4 top_k=1 ") != NULL);
    CHECK_STATUS(sp_model_moe_stats(m, 1, &s), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "1.linear is not a moe layer") != NULL);
    sp_model_free(m);

    CHECK_OK(sp_model_new("linear out=4\n", shape(4, 1, 1), 1, 1, &m));
    if (!m) return;
    CHECK_STATUS(sp_model_moe_set_top_k(m, 1), SP_EINVAL);
    CHECK(sp_model_aux_loss(m) == 0.0);
    sp_model_free(m);
}

typedef struct tap_log {
    int n;
    int layer[64];
    int64_t batch[64];
} tap_log;

static sp_status log_tap(int layer, const float *x, const float *dy, int64_t batch, void *user) {
    (void)x;
    (void)dy;
    tap_log *t = user;
    if (t->n < 64) t->layer[t->n] = layer, t->batch[t->n] = batch, t->n++;
    return SP_OK;
}

/* RigL's tap sees every expert layer that ran, with that expert's own batch. */
TEST(moe_backward_tap_sees_expert_batches) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("moe experts=3 top_k=1 {\nlinear out=5 format=csr density=0.6\nrelu\n"
                          "linear out=4\n}\n",
                          shape(4, 1, 4), 1, 2, &m));
    if (!m) return;
    const int64_t B = 5, N = 20;
    float x[80], dy[80];
    sp_rng rng;
    sp_rng_init(&rng, 3, 1);
    for (int i = 0; i < 80; i++) x[i] = sp_rng_normal(&rng), dy[i] = sp_rng_normal(&rng);
    tap_log t = {0};
    sp_model_set_backward_tap(m, log_tap, &t);
    const float *y;
    CHECK_OK(sp_model_forward(m, x, B, true, &y));
    sp_moe_stats s;
    CHECK_OK(sp_model_moe_stats(m, 0, &s));
    sp_model_zero_grad(m);
    CHECK_OK(sp_model_backward(m, dy, NULL));
    int ran = 0;
    for (int e = 0; e < 3; e++) ran += s.load[e] > 0;
    CHECK_EQ(t.n, 1 + 3 * ran);
    CHECK_EQ(t.layer[0], 0);
    CHECK_EQ(t.batch[0], B);
    for (int i = 1; i < t.n; i++) {
        const int e = (t.layer[i] - 1) / 3;
        CHECK_MSG(t.batch[i] == s.load[e], "tap on layer %d: batch %lld, expert %d ran %lld",
                  t.layer[i], (long long)t.batch[i], e, (long long)s.load[e]);
    }
    int64_t total = 0;
    for (int e = 0; e < 3; e++) total += s.load[e];
    CHECK_EQ(total, N);
    sp_model_free(m);
}

/* Bitwise identical forward, gradients and input gradient on 1 and 2 threads. */
TEST(moe_threads_give_identical_bits) {
    const char *cfg = "residual {\n  layernorm\n"
                      "  moe experts=6 top_k=2 routing=noisy capacity=1.5 zloss=0.01 shared=1 {\n"
                      "    linear out=48\n    gelu\n    linear out=16\n  }\n}\n"
                      "residual {\n  layernorm\n  moe experts=4 routing=expert {\n"
                      "    linear out=32 format=csr density=0.3\n    relu\n    linear out=16\n"
                      "  }\n}\nlinear out=classes\n";
    const int64_t T = 12, B = 8, nin = 16 * T * B, nout = 5 * T * B;
    float *x = malloc(sizeof(float) * (size_t)nin), *dy = malloc(sizeof(float) * (size_t)nout);
    sp_rng rng;
    sp_rng_init(&rng, 8, 8);
    for (int64_t i = 0; i < nin; i++) x[i] = sp_rng_normal(&rng);
    for (int64_t i = 0; i < nout; i++) dy[i] = sp_rng_normal(&rng);
    float *out[2] = {0}, *grads[2] = {0}, *dx[2] = {0};
    int64_t np = 0;
    for (int t = 0; t < 2; t++) {
        sp_model *m = NULL;
        CHECK_OK(sp_model_new(cfg, shape(16, 1, T), 5, 13, &m));
        if (!m) break;
        sp_model_set_threads(m, t + 1);
        sp_model_set_step(m, 7);
        np = sp_model_nparams(m);
        out[t] = malloc(sizeof(float) * (size_t)nout);
        grads[t] = malloc(sizeof(float) * (size_t)np);
        dx[t] = malloc(sizeof(float) * (size_t)nin);
        const float *y;
        CHECK_OK(sp_model_forward(m, x, B, true, &y));
        memcpy(out[t], y, sizeof(float) * (size_t)nout);
        sp_model_zero_grad(m);
        CHECK_OK(sp_model_backward(m, dy, dx[t]));
        memcpy(grads[t], sp_model_grads(m), sizeof(float) * (size_t)np);
        sp_model_free(m);
    }
    if (out[0] && out[1]) {
        CHECK(!memcmp(out[0], out[1], sizeof(float) * (size_t)nout));
        CHECK(!memcmp(grads[0], grads[1], sizeof(float) * (size_t)np));
        CHECK(!memcmp(dx[0], dx[1], sizeof(float) * (size_t)nin));
    }
    for (int t = 0; t < 2; t++) free(out[t]), free(grads[t]), free(dx[t]);
    free(x);
    free(dy);
}

/* Batches that change size grow the per-expert buffers and still match a fresh model. */
TEST(moe_changing_batch_sizes) {
    const char *cfg = "moe experts=4 top_k=2 capacity=1 {\nlinear out=8\nrelu\nlinear out=4\n}\n";
    sp_model *a = NULL, *b = NULL;
    CHECK_OK(sp_model_new(cfg, shape(4, 1, 1), 1, 3, &a));
    CHECK_OK(sp_model_new(cfg, shape(4, 1, 1), 1, 3, &b));
    if (!a || !b) {
        sp_model_free(a);
        sp_model_free(b);
        return;
    }
    float x[4 * 64];
    sp_rng rng;
    sp_rng_init(&rng, 6, 6);
    for (int i = 0; i < 4 * 64; i++) x[i] = sp_rng_normal(&rng);
    const int64_t sizes[] = {3, 64, 1, 17};
    const float *y;
    for (size_t i = 0; i < 4; i++) CHECK_OK(sp_model_forward(a, x, sizes[i], true, &y));
    float ya[4 * 17];
    memcpy(ya, y, sizeof ya);
    CHECK_OK(sp_model_forward(b, x, 17, true, &y));
    CHECK(!memcmp(ya, y, sizeof ya));
    sp_model_free(a);
    sp_model_free(b);
}

/* ---- pruning and sparse training see the experts as ordinary layers --------------------------- */

#include "prune/internal.h"

static const char *const prune_cfg = "linear out=8\n"
                                     "residual {\n"
                                     "  layernorm\n"
                                     "  moe experts=3 top_k=2 shared=1 {\n"
                                     "    linear out=16\n"
                                     "    relu\n"
                                     "    linear out=8\n"
                                     "  }\n"
                                     "}\n"
                                     "linear out=classes\n";

TEST(moe_model_prune_reaches_every_expert) {
    sp_model *m = NULL, *p = NULL;
    CHECK_OK(sp_model_new(prune_cfg, shape(6, 1, 2), 4, 3, &m));
    if (!m) return;
    const int n = sp_model_nlayers(m);
    CHECK_EQ(n, 4 + 4 * 3 + 1); /* linear, residual, layernorm, moe, 4 x 3, linear */
    sp_prune_spec spec = {.criterion = SP_PRUNE_MAGNITUDE, .granularity = SP_PRUNE_LAYERWISE,
                          .sparsity = 0.75, .keep_last = true};
    CHECK_OK(sp_model_prune(m, &spec, &p));
    if (p) {
        /* one body line per expert layer: layer 0 and the two body lines say csr */
        int ncsr = 0;
        for (const char *q = sp_model_config(p); (q = strstr(q, "format=csr")); q++) ncsr++;
        CHECK_EQ(ncsr, 3);
        CHECK(strstr(sp_model_config(p), "moe experts=3") != NULL);
        for (int e = 0; e < 4; e++)
            for (int j = 0; j < 3; j += 2) {
                const int i = 4 + 3 * e + j;
                sp_layer_info a, b;
                CHECK_OK(sp_model_layer(m, i, &a));
                CHECK_OK(sp_model_layer(p, i, &b));
                CHECK_MSG(!strcmp(b.format, "csr"), "layer %d is %s", i, b.format);
                CHECK_EQ(b.nparam, a.out.c * a.in.c / 4 + a.out.c);
                /* the kept weights are the expert's own */
                float *wa = malloc(sizeof(float) * (size_t)(a.out.c * a.in.c));
                float *wb = malloc(sizeof(float) * (size_t)(a.out.c * a.in.c));
                CHECK_OK(sp_model_layer_get_weight(m, i, wa, NULL));
                CHECK_OK(sp_model_layer_get_weight(p, i, wb, NULL));
                int kept = 0;
                for (int64_t k = 0; k < a.out.c * a.in.c; k++) {
                    CHECK(wb[k] == 0.0f || wb[k] == wa[k]);
                    kept += wb[k] != 0.0f;
                }
                CHECK_EQ(kept, a.out.c * a.in.c / 4);
                free(wa);
                free(wb);
            }
        /* the router is copied */
        sp_layer_info ra, rb;
        CHECK_OK(sp_model_layer(m, 3, &ra));
        CHECK_OK(sp_model_layer(p, 3, &rb));
        CHECK(!memcmp(sp_model_params(m) + ra.param_offset, sp_model_params(p) + rb.param_offset,
                      sizeof(float) * (size_t)ra.nparam));
    }
    sp_model_free(p);
    /* structured pruning refuses clearly */
    sp_prune_structured_spec ss = {.criterion = SP_PRUNE_ROW_L1, .fraction = 0.5};
    CHECK_STATUS(sp_model_prune_structured(m, &ss, &p), SP_EUNSUPPORTED);
    CHECK(strstr(sp_last_error(), "3.moe") != NULL);
    sp_model_free(m);
}

TEST(moe_config_rewrite_maps_expert_instances) {
    const char *cfg = "moe experts=2 {\nlinear out=4\n}\nlinear out=3\n";
    char *opts[4] = {NULL, "format=csr", "format=csr", "bias=0"};
    char *out = NULL;
    CHECK_OK(sp_prune_rewrite_config(cfg, opts, 4, &out));
    CHECK(out && !strcmp(out, "moe experts=2 {\nlinear out=4 format=csr\n}\nlinear out=3 bias=0\n"));
    sp_free(out);
    /* instances that disagree cannot share one line */
    char *bad[4] = {NULL, "format=csr", NULL, NULL};
    CHECK_STATUS(sp_prune_rewrite_config(cfg, bad, 4, &out), SP_EINVAL);
    CHECK(out == NULL && strstr(sp_last_error(), "layer 2") != NULL);
}

TEST(moe_sparse_training_config_reaches_experts) {
    char *text = NULL;
    CHECK_OK(sp_dst_config(prune_cfg, shape(6, 1, 2), 4, SP_PRUNE_ALLOC_ER, 0.3, 0.0, false,
                           &text));
    if (!text) return;
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(text, shape(6, 1, 2), 4, 3, &m));
    if (m) {
        for (int e = 0; e < 4; e++) {
            CHECK(sp_model_layer_csr(m, 4 + 3 * e) != NULL);
            CHECK(sp_model_layer_csr(m, 6 + 3 * e) != NULL);
        }
        CHECK(sp_model_layer_csr(m, 16) == NULL); /* the output layer stays dense */
    }
    sp_model_free(m);
    sp_free(text);
}

/* ---- expert pruning --------------------------------------------------------------------------- */

TEST(moe_prune_experts_keeps_the_most_loaded) {
    const char *cfg = "linear out=6\n"
                      "moe experts=5 top_k=1 renorm=1 shared=1 {\n"
                      "  linear out=10 format=csr density=0.5\n"
                      "  relu\n"
                      "  linear out=6\n"
                      "}\n"
                      "linear out=classes\n";
    sp_model *m = NULL, *p = NULL;
    CHECK_OK(sp_model_new(cfg, shape(4, 1, 1), 3, 12, &m));
    if (!m) return;
    const int64_t B = 40;
    float x[4 * 40];
    sp_rng rng;
    sp_rng_init(&rng, 12, 1);
    for (int i = 0; i < 4 * 40; i++) x[i] = 2.0f * sp_rng_normal(&rng);
    const float *y;
    CHECK_OK(sp_model_forward(m, x, B, false, &y));
    sp_moe_stats s;
    CHECK_OK(sp_model_moe_stats(m, 1, &s));
    /* the expected survivors: top 3 by load, ties to the lower index, in index order */
    int want[3], nw = 0;
    for (int e = 0; e < 5; e++) {
        int above = 0;
        for (int f = 0; f < 5; f++)
            above += s.load[f] > s.load[e] || (s.load[f] == s.load[e] && f < e);
        if (above < 3) want[nw++] = e;
    }
    CHECK_EQ(nw, 3);

    CHECK_STATUS(sp_model_moe_prune_experts(m, 0, 2, &p), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "0.linear is not a moe layer") != NULL);
    CHECK_STATUS(sp_model_moe_prune_experts(m, 1, 0, &p), SP_EINVAL);
    CHECK_STATUS(sp_model_moe_prune_experts(m, 1, 6, &p), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "keep=6") != NULL);
    CHECK_OK(sp_model_moe_prune_experts(m, 1, 3, &p));
    if (!p) {
        sp_model_free(m);
        return;
    }
    /* 0 linear, 1 moe, 3 experts + the shared one of 3 layers, the output layer */
    CHECK_EQ(sp_model_nlayers(p), 2 + 4 * 3 + 1);
    CHECK(strstr(sp_model_config(p), "moe experts=3 ") != NULL);
    for (int j = 0; j < 4; j++) {
        const int oldf = j < 3 ? 2 + 3 * want[j] : 2 + 3 * 5, newf = 2 + 3 * j;
        for (int t = 0; t < 3; t += 2) {
            sp_layer_info a, b;
            CHECK_OK(sp_model_layer(m, oldf + t, &a));
            CHECK_OK(sp_model_layer(p, newf + t, &b));
            CHECK(!strcmp(a.format, b.format) && a.nparam == b.nparam);
            CHECK(!memcmp(sp_model_params(m) + a.param_offset, sp_model_params(p) + b.param_offset,
                          sizeof(float) * (size_t)a.nparam));
        }
        sp_mask *pa = NULL, *pb = NULL;
        CHECK_OK(sp_model_layer_pattern(m, oldf, &pa));
        CHECK_OK(sp_model_layer_pattern(p, newf, &pb));
        CHECK(pa && pb && !memcmp(pa->bits, pb->bits, sizeof(uint64_t) * (size_t)(10 * pa->words_per_row)));
        sp_mask_free(pa);
        sp_mask_free(pb);
    }
    /* router rows */
    sp_layer_info ra, rb;
    CHECK_OK(sp_model_layer(m, 1, &ra));
    CHECK_OK(sp_model_layer(p, 1, &rb));
    CHECK_EQ(rb.nparam, 3 * 6 + 3);
    const float *wa = sp_model_params(m) + ra.param_offset, *wb = sp_model_params(p) + rb.param_offset;
    for (int j = 0; j < 3; j++) {
        CHECK(!memcmp(wb + 6 * j, wa + 6 * want[j], sizeof(float) * 6));
        CHECK(wb[18 + j] == wa[30 + want[j]]);
    }
    /* the output layer is copied */
    sp_layer_info oa, ob;
    CHECK_OK(sp_model_layer(m, 18, &oa));
    CHECK_OK(sp_model_layer(p, 13, &ob));
    CHECK(!memcmp(sp_model_params(m) + oa.param_offset, sp_model_params(p) + ob.param_offset,
                  sizeof(float) * (size_t)oa.nparam));
    /* with top-1 and renorm (gate 1) a sample routed to a kept expert gives the same output */
    float y0[3 * 40];
    memcpy(y0, y, sizeof y0);
    CHECK_OK(sp_model_forward(p, x, B, false, &y));
    sp_moe_stats sp;
    CHECK_OK(sp_model_moe_stats(p, 1, &sp));
    int64_t sum = 0;
    for (int j = 0; j < 3; j++) sum += sp.load[j];
    CHECK_EQ(sum, B);
    int same = 0;
    for (int64_t b = 0; b < B; b++) {
        bool eq = true;
        for (int o = 0; o < 3; o++) eq &= fabsf(y[o * B + b] - y0[o * B + b]) <= 1e-5f * (1 + fabsf(y0[o * B + b]));
        same += eq;
    }
    CHECK_MSG(same >= s.load[want[0]] + s.load[want[1]] + s.load[want[2]],
              "%d samples unchanged, %lld were routed to kept experts", same,
              (long long)(s.load[want[0]] + s.load[want[1]] + s.load[want[2]]));
    sp_model_free(p);
    sp_model_free(m);
}

/* SET and RigL rewire the CSR layers of every expert (RigL's gradient through the tap, with
 * each expert's own batch), keeping their entry counts. */
#include "toy_data.h"

TEST(moe_set_and_rigl_rewire_expert_layers) {
    sp_dataset *data = test_toy_dataset(48, 5);
    if (!data) return;
    const char *cfg = "flatten\nlinear out=8\nresidual {\n"
                      "  moe experts=3 top_k=2 {\n"
                      "    linear out=12 format=csr density=0.5\n    relu\n"
                      "    linear out=8 format=csr density=0.5\n  }\n}\nlinear out=classes\n";
    /* kind 2: RigL while expert 2 gets no token (its router bias far down): no gradient, so
     * its layers keep their topology, and the others still change */
    for (int kind = 0; kind < 3; kind++) {
        sp_model *m = NULL;
        CHECK_OK(sp_model_new(cfg, shape(data->c, data->h, data->w), 4, 6, &m));
        if (!m) break;
        if (kind == 2) {
            sp_layer_info ri;
            CHECK_OK(sp_model_layer(m, 3, &ri));
            sp_model_params(m)[ri.param_offset + 3 * 8 + 2] = -100.0f;
        }
        const int csr_layers[6] = {4, 6, 7, 9, 10, 12};
        int64_t nnz[6];
        sp_mask *before[6];
        for (int j = 0; j < 6; j++) {
            const sp_csr *c = sp_model_layer_csr(m, csr_layers[j]);
            CHECK(c != NULL);
            nnz[j] = c ? c->nnz : 0;
            CHECK_OK(sp_model_layer_pattern(m, csr_layers[j], &before[j]));
        }
        sp_dst d = {.kind = kind ? SP_DST_RIGL : SP_DST_SET, .update_every = 1,
                    .drop_fraction = 0.3, .seed = 3, .data = data, .batch = 48, .nthreads = 1};
        CHECK_OK(sp_dst_update(m, NULL, &d, 1));
        int changed = 0, changed_idle = 0;
        for (int j = 0; j < 6; j++) {
            const sp_csr *c = sp_model_layer_csr(m, csr_layers[j]);
            CHECK(c && c->nnz == nnz[j]);
            sp_mask *after = NULL;
            CHECK_OK(sp_model_layer_pattern(m, csr_layers[j], &after));
            if (after && before[j]) {
                const int ch = memcmp(after->bits, before[j]->bits,
                                      sizeof(uint64_t) * (size_t)(after->rows * after->words_per_row)) != 0;
                changed += ch;
                if (j >= 4) changed_idle += ch;
            }
            sp_mask_free(after);
            sp_mask_free(before[j]);
        }
        if (kind == 2) {
            sp_moe_stats st;
            CHECK_OK(sp_model_moe_stats(m, 3, &st));
            CHECK(st.tokens > 0 && st.load[2] == 0);
            CHECK_EQ(changed_idle, 0);
            CHECK_MSG(changed == 4, "rigl with an idle expert changed %d of 6 layers", changed);
        } else {
            CHECK_MSG(changed >= 4, "%s changed %d of 6 expert layers", kind ? "rigl" : "set",
                      changed);
        }
        sp_model_free(m);
    }
    sp_dataset_free(data);
}

/* Every allocation of building and running a moe model may fail: SP_ENOMEM, nothing leaks, and a
 * model whose forward or backward pass failed part way (its lazily grown buffers included) runs
 * the next pass exactly as a fresh model does. */
TEST(moe_allocation_failures) {
    const char *cfg = "residual {\n  layernorm\n"
                      "  moe experts=3 top_k=2 routing=noisy capacity=1 shared=1 zloss=0.1 {\n"
                      "    linear out=6 format=csr density=0.5\n    gelu\n    linear out=4\n  }\n}\n"
                      "moe experts=2 routing=expert {\n  linear out=4\n}\n";
    float x[4 * 6], dy[4 * 6], ref[4 * 6];
    sp_rng rng;
    sp_rng_init(&rng, 2, 9);
    for (int i = 0; i < 24; i++) x[i] = sp_rng_normal(&rng), dy[i] = sp_rng_normal(&rng);
    const float *y;
    sp_model *r = NULL;
    CHECK_OK(sp_model_new(cfg, shape(4, 1, 3), 1, 4, &r));
    if (!r) return;
    CHECK_OK(sp_model_forward(r, x, 2, true, &y));
    memcpy(ref, y, sizeof ref);
    sp_model_free(r);
    bool saw_failure = false, reached_success = false;
    for (int64_t n = 1; n < 400 && !reached_success; n++) {
        int64_t live = sp_alloc_live();
        sp_model *m = NULL;
        sp_alloc_fail_after(n);
        sp_status st = sp_model_new(cfg, shape(4, 1, 3), 1, 4, &m);
        const bool built = st == SP_OK;
        if (st == SP_OK) st = sp_model_forward(m, x, 2, true, &y);
        if (st == SP_OK) st = sp_model_backward(m, dy, NULL);
        sp_alloc_fail_after(0);
        if (st == SP_OK) {
            reached_success = true;
        } else {
            saw_failure = true;
            CHECK_MSG(st == SP_ENOMEM, "n=%lld: %s", (long long)n, sp_status_name(st));
        }
        if (built && !reached_success) {
            /* the same model recovers */
            CHECK_OK(sp_model_forward(m, x, 2, true, &y));
            CHECK_MSG(!memcmp(y, ref, sizeof ref), "n=%lld: output differs after a failure",
                      (long long)n);
            CHECK_OK(sp_model_backward(m, dy, NULL));
        }
        sp_model_free(m);
        CHECK_EQ(sp_alloc_live(), live);
    }
    CHECK(saw_failure);
    CHECK(reached_success);
}

/* The router gradient against values worked out by hand for one token, D = 1, two experts of
 * one weight each, top-1 without renorm: y = p0 (w0 x + b0) with p = softmax(a x + c), plus
 * balance * E * f0 * p0 (f0 = 1) and zloss * lse^2. */
TEST(moe_router_gradient_by_hand) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("moe experts=2 top_k=1 balance=0.25 zloss=0.125 {\nlinear out=1\n}\n",
                          shape(1, 1, 1), 1, 1, &m));
    if (!m) return;
    CHECK_EQ(sp_model_nparams(m), 4 + 2 + 2);
    const double a0 = 0.8, a1 = -0.3, c0 = 0.1, c1 = 0.2, w0 = 1.5, b0 = -0.25, w1 = -2.0,
                 b1 = 0.5, x0 = 1.25, r = 0.75, A = 0.25, Z = 0.125;
    float *p = sp_model_params(m);
    const float set[8] = {(float)a0, (float)a1, (float)c0, (float)c1, (float)w0, (float)b0,
                          (float)w1, (float)b1};
    memcpy(p, set, sizeof set);
    const float x = (float)x0, dy = (float)r;
    float dx;
    const float *y;
    CHECK_OK(sp_model_forward(m, &x, 1, true, &y));
    const double h0 = a0 * x0 + c0, h1 = a1 * x0 + c1; /* 1.1 > -0.175: expert 0 */
    const double lse = log(exp(h0) + exp(h1)), p0 = exp(h0 - lse), p1 = exp(h1 - lse);
    const double out0 = w0 * x0 + b0;
    CHECK(fabs(*y - p0 * out0) < 1e-6);
    CHECK(fabs(sp_model_aux_loss(m) - (A * 2 * p0 + Z * lse * lse)) < 1e-6);
    sp_model_zero_grad(m);
    CHECK_OK(sp_model_backward(m, &dy, &dx));
    /* dL/dp0 = r out0 + 2A; dh_e = p_e (dp_e - p0 dp0) + 2 Z lse p_e */
    const double dp0 = r * out0 + 2 * A;
    const double dh0 = p0 * (dp0 - p0 * dp0) + 2 * Z * lse * p0;
    const double dh1 = p1 * (0 - p0 * dp0) + 2 * Z * lse * p1;
    const double want[8] = {dh0 * x0, dh1 * x0, dh0, dh1, r * p0 * x0, r * p0, 0, 0};
    const float *g = sp_model_grads(m);
    for (int i = 0; i < 8; i++)
        CHECK_MSG(fabs(g[i] - want[i]) < 1e-6 * (1 + fabs(want[i])), "grad[%d] = %.8g, by hand %.8g",
                  i, g[i], want[i]);
    const double dxw = r * p0 * w0 + dh0 * a0 + dh1 * a1;
    CHECK_MSG(fabs(dx - dxw) < 1e-6 * (1 + fabs(dxw)), "dx = %.8g, by hand %.8g", dx, dxw);
    sp_model_free(m);
}

/* With a zero router every probability ties: token choice takes the lowest expert indices,
 * expert choice the lowest token indices (the other tokens get no expert and output 0). */
TEST(moe_ties_go_to_lower_indices) {
    for (int expert = 0; expert < 2; expert++) {
        sp_model *m = NULL;
        CHECK_OK(sp_model_new(expert ? "moe experts=4 routing=expert {\nlinear out=3\n}\n"
                                     : "moe experts=4 top_k=2 {\nlinear out=3\n}\n",
                              shape(3, 1, 1), 1, 1, &m));
        if (!m) continue;
        memset(sp_model_params(m), 0, sizeof(float) * 16); /* Wr (4 x 3) and br (4) */
        float x[30];
        sp_rng rng;
        sp_rng_init(&rng, 1, 1);
        for (int i = 0; i < 30; i++) x[i] = sp_rng_normal(&rng);
        const float *y;
        CHECK_OK(sp_model_forward(m, x, 10, false, &y));
        sp_moe_stats s;
        CHECK_OK(sp_model_moe_stats(m, 0, &s));
        if (!expert) {
            CHECK(s.load[0] == 10 && s.load[1] == 10 && s.load[2] == 0 && s.load[3] == 0);
        } else {
            /* C = ceil(10 / 4) = 3: tokens 0-2 go to every expert, 3-9 to none */
            for (int e = 0; e < 4; e++) CHECK_EQ(s.load[e], 3);
            for (int n = 0; n < 10; n++) {
                bool zero = true;
                for (int i = 0; i < 3; i++) zero &= y[i * 10 + n] == 0.0f;
                CHECK_MSG(zero == (n >= 3), "token %d: output %s", n, zero ? "zero" : "nonzero");
            }
        }
        sp_model_free(m);
    }
}

/* Masked experts to sparse storage: every expert of a body line takes one format (with "auto"
 * the first instance's measured choice), the weights stay, so the outputs do. */
TEST(moe_sparsify_gives_experts_one_format) {
    const char *cfg = "moe experts=3 top_k=2 {\n  linear out=24 format=mask density=0.3\n  relu\n"
                      "  linear out=8 format=mask density=0.3\n}\nlinear out=classes\n";
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(cfg, shape(8, 1, 4), 3, 2, &m));
    if (!m) return;
    float x[8 * 4 * 5], y0[3 * 4 * 5];
    sp_rng rng;
    sp_rng_init(&rng, 4, 2);
    for (int i = 0; i < 160; i++) x[i] = sp_rng_normal(&rng);
    const float *y;
    CHECK_OK(sp_model_forward(m, x, 5, false, &y));
    memcpy(y0, y, sizeof y0);
    const char *formats[] = {"csr", "auto"};
    for (int f = 0; f < 2; f++) {
        sp_model *s = NULL;
        CHECK_OK(sp_model_sparsify(m, formats[f], 0, 1, &s));
        if (!s) continue;
        for (int t = 0; t < 3; t += 2) {
            sp_layer_info a, b;
            CHECK_OK(sp_model_layer(s, 1 + t, &a));
            CHECK(strcmp(a.format, "mask") != 0);
            for (int e = 1; e < 3; e++) {
                CHECK_OK(sp_model_layer(s, 1 + 3 * e + t, &b));
                CHECK_MSG(!strcmp(a.format, b.format), "%s: expert 0 %s, expert %d %s",
                          formats[f], a.format, e, b.format);
            }
        }
        CHECK_OK(sp_model_forward(s, x, 5, false, &y));
        for (int i = 0; i < 60; i++)
            CHECK_MSG(fabsf(y[i] - y0[i]) <= 1e-5f * (1 + fabsf(y0[i])), "%s: y[%d] %g vs %g",
                      formats[f], i, y[i], y0[i]);
        sp_model_free(s);
    }
    sp_model_free(m);
}

/* The built-in MoE specs (spec.c) build, run forward and backward, and report statistics. */
TEST(moe_builtin_specs_build_and_run) {
    static const struct {
        const char *spec;
        sp_shape in;
        int64_t classes;
        bool ids;
    } cases[] = {
        {"moe-mlp:16,experts=4,top_k=2", {1, 4, 4}, 3, false},
        {"charlm:layers=1,dim=16,heads=2,ctx=6,experts=4,top_k=2", {1, 1, 6}, 11, true},
        {"charlm:layers=2,dim=16,heads=2,ctx=6,experts=4,routing=expert", {1, 1, 6}, 11, true},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char *t = NULL;
        sp_model *m = NULL;
        CHECK_OK(sp_model_spec_config(cases[c].spec, &t));
        if (!t) continue;
        CHECK_OK(sp_model_new(t, cases[c].in, cases[c].classes, 3, &m));
        sp_free(t);
        if (!m) continue;
        const int64_t B = 3, nin = cases[c].in.c * cases[c].in.h * cases[c].in.w * B;
        const sp_shape os = sp_model_out(m);
        const int64_t nout = os.c * os.h * os.w * B;
        float *x = malloc(sizeof(float) * (size_t)nin), *dy = malloc(sizeof(float) * (size_t)nout);
        sp_rng rng;
        sp_rng_init(&rng, 7, c);
        for (int64_t i = 0; i < nin; i++)
            x[i] = cases[c].ids ? (float)sp_rng_below(&rng, (uint64_t)cases[c].classes)
                                : sp_rng_uniform(&rng);
        for (int64_t i = 0; i < nout; i++) dy[i] = sp_rng_normal(&rng);
        const float *y;
        CHECK_OK(sp_model_forward(m, x, B, true, &y));
        CHECK(sp_model_aux_loss(m) > 0.0); /* balance=0.01 by default */
        sp_model_zero_grad(m);
        CHECK_OK(sp_model_backward(m, dy, NULL));
        CHECK_OK(sp_model_check_grads(m));
        int moes = 0;
        for (int i = 0; i < sp_model_nlayers(m); i++) {
            sp_moe_stats s;
            if (sp_model_moe_stats(m, i, &s) != SP_OK) continue;
            moes++;
            CHECK_EQ(s.experts, 4);
            CHECK(s.tokens == (cases[c].ids ? 6 * B : B) && s.assignments > 0);
        }
        CHECK_MSG(moes >= 1, "%s: no moe layer", cases[c].spec);
        free(x);
        free(dy);
        sp_model_free(m);
    }
}

/* sp_train reports the moe auxiliary loss as the running mean over the epoch's batches of
 * sp_model_aux_loss (0 without moe), beside the data loss. */
typedef struct aux_watch {
    sp_model *m;
    double sum;
    int64_t steps, epochs_done, bad, positive;
    double last_mean;
} aux_watch;

static bool aux_watch_cb(const sp_train_report *r, void *user) {
    aux_watch *w = user;
    if (!r->epoch_done) {
        if (r->batch_index == 1) w->sum = 0.0, w->steps = 0;
        w->sum += sp_model_aux_loss(w->m); /* the last forward pass: this step's */
        w->steps++;
        w->last_mean = w->sum / (double)w->steps;
        if (r->aux_loss != w->last_mean) w->bad++;
        if (r->aux_loss > 0.0) w->positive++;
    } else {
        w->epochs_done++;
        if (r->aux_loss != w->last_mean) w->bad++;
    }
    return true;
}

TEST(moe_train_reports_the_aux_loss) {
    sp_dataset *d = test_toy_dataset(96, 5);
    if (!d) return;
    const char *cfgs[2] = {"flatten\nlinear out=8\nrelu\nresidual {\n"
                           "  moe experts=4 top_k=2 zloss=0.001 {\n    linear out=8\n    relu\n"
                           "    linear out=8\n  }\n}\nlinear out=classes\n",
                           "flatten\nlinear out=8\nrelu\nlinear out=classes\n"};
    for (int c = 0; c < 2; c++) {
        sp_model *m = NULL;
        sp_optim *o = NULL;
        CHECK_OK(sp_model_new(cfgs[c], shape(1, 4, 4), 4, 3, &m));
        sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
        CHECK_OK(sp_optim_new(&oc, sp_model_nparams(m), &o));
        if (!m || !o) {
            sp_model_free(m);
            sp_optim_free(o);
            break;
        }
        aux_watch w = {.m = m};
        sp_train_state s = {0};
        sp_train_opts to = {.epochs = 2, .batch = 32, .sched = {.lr = 0.01},
                            .callback = aux_watch_cb, .user = &w};
        CHECK_OK(sp_train(m, o, d, NULL, &to, &s));
        CHECK_EQ(w.epochs_done, 2);
        CHECK_MSG(w.bad == 0, "%lld reports differ from the mean of sp_model_aux_loss",
                  (long long)w.bad);
        /* 2 epochs of 3 steps: every report positive with moe, 0 without */
        CHECK_EQ(w.positive, c == 0 ? 6 : 0);
        sp_model_free(m);
        sp_optim_free(o);
    }
    sp_dataset_free(d);
}

/* Expert pruning keeps a language model's vocabulary (how its text is encoded). */
TEST(moe_prune_experts_keeps_the_vocabulary) {
    char *cfg = NULL;
    CHECK_OK(sp_model_spec_config("charlm:layers=1,dim=8,heads=2,ctx=4,experts=4,top_k=1", &cfg));
    sp_model *m = NULL, *p = NULL;
    if (cfg) CHECK_OK(sp_model_new(cfg, shape(1, 1, 4), 3, 1, &m));
    sp_free(cfg);
    if (!m) return;
    const int32_t voc[3] = {'a', 'b', 'c'};
    sp_model_set_input_scale(m, 1.0f);
    CHECK_OK(sp_model_set_vocab(m, voc, 3));
    float x[4 * 2] = {0, 1, 2, 0, 1, 2, 0, 1};
    const float *y;
    CHECK_OK(sp_model_forward(m, x, 2, false, &y));
    int layer = -1;
    for (int i = 0; i < sp_model_nlayers(m) && layer < 0; i++) {
        sp_layer_info li;
        CHECK_OK(sp_model_layer(m, i, &li));
        if (!strcmp(li.kind, "moe")) layer = i;
    }
    CHECK(layer >= 0);
    CHECK_OK(sp_model_moe_prune_experts(m, layer, 2, &p));
    int64_t n = 0;
    const int32_t *pv = p ? sp_model_vocab(p, &n) : NULL;
    CHECK(pv && n == 3 && !memcmp(pv, voc, sizeof voc));
    CHECK(p && sp_model_input_scale(p) == 1.0f);
    sp_model_free(p);
    sp_model_free(m);
}

/* A model file whose config names another expert count than its weights were saved with (the
 * text "experts=4" edited to "experts=8", the CRC made right again) is refused naming the
 * parameter counts, never built with weights that do not fit it. */
TEST(moe_checkpoint_with_other_expert_count_is_refused) {
    const char *cfg = "linear out=8\n"
                      "residual {\n"
                      "  moe experts=4 top_k=1 {\n"
                      "    linear out=8\n"
                      "  }\n"
                      "}\n"
                      "linear out=classes\n";
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(cfg, shape(6, 1, 1), 3, 1, &m));
    if (!m) return;
    char path[128];
    snprintf(path, sizeof path, "/tmp/sparrow_test_%d_moe_count.ckpt", (int)getpid());
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    sp_model_free(m);
    FILE *f = fopen(path, "rb");
    uint8_t buf[8192];
    size_t len = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    unlink(path);
    CHECK(len > 16 && len < sizeof buf);
    uint8_t *at = NULL;
    for (size_t i = 0; i + 9 <= len && !at; i++)
        if (!memcmp(buf + i, "experts=4", 9)) at = buf + i;
    CHECK(at != NULL);
    if (!at) return;
    at[8] = '8';
    uint32_t crc = sp_crc32(0, buf, len - 4);
    for (int i = 0; i < 4; i++) buf[len - 4 + i] = (uint8_t)(crc >> (8 * i));
    sp_checkpoint ck = {0};
    CHECK_STATUS(sp_checkpoint_parse(buf, len, &ck), SP_EFORMAT);
    CHECK_MSG(strstr(sp_last_error(), "parameters") != NULL, "message: %s", sp_last_error());
    CHECK(ck.model == NULL);
    sp_checkpoint_free(&ck);
}

/* Expert pruning counts an expert's layers depth first (a residual block inside the body is
 * several layers of the model's list), and refuses expert-choice layers, whose loads are all
 * equal and rank nothing. */
TEST(moe_prune_experts_with_nested_bodies_and_expert_choice) {
    const char *cfg = "linear out=6\n"
                      "moe experts=4 top_k=1 {\n"
                      "  residual {\n"
                      "    linear out=6\n"
                      "    relu\n"
                      "  }\n"
                      "  linear out=6\n"
                      "}\n"
                      "linear out=classes\n";
    sp_model *m = NULL, *p = NULL;
    CHECK_OK(sp_model_new(cfg, shape(4, 1, 1), 3, 5, &m));
    if (!m) return;
    /* 0 linear, 1 moe, per expert 4 layers (residual, linear, relu, linear), 18 linear */
    CHECK_EQ(sp_model_nlayers(m), 2 + 4 * 4 + 1);
    const int64_t B = 32;
    float x[4 * 32];
    sp_rng rng;
    sp_rng_init(&rng, 5, 1);
    for (int i = 0; i < 4 * 32; i++) x[i] = 2.0f * sp_rng_normal(&rng);
    const float *y;
    CHECK_OK(sp_model_forward(m, x, B, false, &y));
    sp_moe_stats s;
    CHECK_OK(sp_model_moe_stats(m, 1, &s));
    int best = 0; /* the most loaded expert (ties: lower index) */
    for (int e = 1; e < 4; e++)
        if (s.load[e] > s.load[best]) best = e;
    CHECK_OK(sp_model_moe_prune_experts(m, 1, 1, &p));
    if (p) {
        CHECK_EQ(sp_model_nlayers(p), 2 + 4 + 1);
        for (int t = 0; t < 4; t++) {
            sp_layer_info a, b;
            CHECK_OK(sp_model_layer(m, 2 + 4 * best + t, &a));
            CHECK_OK(sp_model_layer(p, 2 + t, &b));
            CHECK(!strcmp(a.kind, b.kind) && a.nparam == b.nparam);
            CHECK(!memcmp(sp_model_params(m) + a.param_offset,
                          sp_model_params(p) + b.param_offset, sizeof(float) * (size_t)a.nparam));
        }
        sp_layer_info oa, ob;
        CHECK_OK(sp_model_layer(m, 18, &oa));
        CHECK_OK(sp_model_layer(p, 6, &ob));
        CHECK(!memcmp(sp_model_params(m) + oa.param_offset, sp_model_params(p) + ob.param_offset,
                      sizeof(float) * (size_t)oa.nparam));
    }
    sp_model_free(p);
    sp_model_free(m);
    m = p = NULL;

    CHECK_OK(sp_model_new("moe experts=4 top_k=1 routing=expert {\n  linear out=4\n}\n"
                          "linear out=classes\n", shape(4, 1, 1), 3, 5, &m));
    if (!m) return;
    CHECK_OK(sp_model_forward(m, x, B, false, &y));
    CHECK_STATUS(sp_model_moe_prune_experts(m, 0, 2, &p), SP_EUNSUPPORTED);
    CHECK(strstr(sp_last_error(), "expert choice") != NULL);
    CHECK(p == NULL);
    sp_model_free(m);
}
