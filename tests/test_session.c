/*
 * test_session.c - inference sessions (sparrow/infer.h): after sp_session_new, runs make zero
 * allocations (counted at the allocator hook itself) and give sp_model_forward's bits, on 1 and
 * 2 threads, for a dense MLP, a sparse (CSR + N:M) MLP and CNNs; and for the deployment forms of
 * a model: quantized (qlinear layers), memory-mapped from its file, or both.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"

/* ---- a counting allocator (interchangeable with the default one: aligned_alloc / free) ---- */

static atomic_llong n_alloc, n_free;

static void *counting_alloc(size_t size, size_t align, void *user) {
    (void)user;
    atomic_fetch_add(&n_alloc, 1);
    size_t rounded = (size + align - 1) & ~(align - 1);
    return aligned_alloc(align, rounded ? rounded : align);
}

static void counting_free(void *p, void *user) {
    (void)user;
    atomic_fetch_add(&n_free, 1);
    free(p);
}

static const sp_allocator counting = {counting_alloc, counting_free, NULL};

/* ---- models ------------------------------------------------------------------------------- */

static const char SPARSE_MLP[] =
    "flatten\n"
    "linear out=64 format=csr density=0.1\n"
    "relu\n"
    "linear out=32 format=nm nm=2:4\n"
    "relu\n"
    "linear out=classes\n";

/* The form a model is used in: as built, quantized to int8 (sp_model_quantize, dynamic
 * activation scales), memory-mapped from its saved file (sp_model_open), or quantized then
 * mapped: the deployment path. */
typedef enum { AS_BUILT, QUANTIZED, MAPPED, QUANTIZED_MAPPED } form;

/* m in the given form (m is consumed; NULL with the error in sp_last_error on failure) */
static sp_model *to_form(sp_model *m, form as) {
    if (!m || as == AS_BUILT) return m;
    if (as == QUANTIZED || as == QUANTIZED_MAPPED) {
        sp_quant_opts o = {.bits = 8, .nthreads = 1};
        sp_model *q = NULL;
        sp_status st = sp_model_quantize(m, &o, &q);
        sp_model_free(m);
        if (st != SP_OK) return NULL;
        m = q;
    }
    if (as == MAPPED || as == QUANTIZED_MAPPED) {
        static atomic_int seq;
        char path[128];
        snprintf(path, sizeof path, "/tmp/sparrow_test_session_%d_%d", (int)getpid(),
                 atomic_fetch_add(&seq, 1));
        sp_model *mm = NULL;
        if (sp_checkpoint_save(path, m, NULL, NULL, NULL) == SP_OK && sp_model_open(path, &mm) == SP_OK)
            CHECK(sp_model_is_mapped(mm));
        unlink(path); /* the mapping outlives the name */
        sp_model_free(m);
        m = mm;
    }
    return m;
}

static sp_model *build(const char *spec_or_cfg, bool is_spec, uint64_t seed, form as) {
    char *cfg = NULL;
    const char *text = spec_or_cfg;
    if (is_spec) {
        if (sp_model_spec_config(spec_or_cfg, &cfg) != SP_OK) return NULL;
        text = cfg;
    }
    sp_model *m = NULL;
    sp_status st = sp_model_new(text, (sp_shape){1, 28, 28}, 10, seed, &m);
    sp_free(cfg);
    return st == SP_OK ? to_form(m, as) : NULL;
}

/* Random features in [0, 1) of B samples, feature-major. */
static float *random_input(int64_t nin, int64_t B, uint64_t seed) {
    float *x = sp_alloc(sizeof(float) * (size_t)(nin * B));
    sp_rng r;
    sp_rng_init(&r, seed, 0);
    for (int64_t i = 0; i < nin * B; i++) x[i] = sp_rng_uniform(&r);
    return x;
}

/* The whole property for one model: a session on nthreads threads, then runs of several batch
 * sizes (and predict_u8) under the counting allocator, each compared with sp_model_forward on a
 * twin model (same config and seed) run on one thread. */
static void check_form(const char *what, bool is_spec, int nthreads, form as) {
    enum { MAXB = 12 };
    sp_model *m = build(what, is_spec, 7, as), *twin = build(what, is_spec, 7, as);
    CHECK_MSG(m && twin, "%s: %s", what, sp_last_error());
    if (!m || !twin) goto out;
    sp_model_set_threads(twin, 1);
    const int64_t nin = 28 * 28, C = 10;
    float *x = random_input(nin, MAXB, 11);
    uint8_t *img = sp_alloc((size_t)(nin * MAXB));
    float *xt = sp_alloc(sizeof(float) * (size_t)(nin * MAXB));
    for (int64_t i = 0; i < nin * MAXB; i++) img[i] = (uint8_t)((i * 37 + i / 5) % 256);
    int32_t cls[MAXB];
    float prob[MAXB * 10];
    sp_session *s = NULL;
    CHECK_OK(sp_session_new(m, MAXB, nthreads, &s));
    if (!s) goto free_bufs;
    CHECK_EQ(sp_session_in_features(s), nin);
    CHECK_EQ(sp_session_out_features(s), C);
    CHECK_EQ(sp_session_max_batch(s), MAXB);
    CHECK(sp_session_model(s) == m);

    const int64_t batches[] = {MAXB, 1, 5, MAXB, 3};
    for (size_t k = 0; k < sizeof batches / sizeof batches[0]; k++) {
        const int64_t B = batches[k];
        const float *y = NULL;
        /* the hot path, under the counting allocator */
        sp_set_allocator(&counting);
        atomic_store(&n_alloc, 0);
        atomic_store(&n_free, 0);
        const int64_t live0 = sp_alloc_live();
        sp_status st = sp_session_run(s, x, B, &y);
        const long long a1 = atomic_load(&n_alloc), f1 = atomic_load(&n_free);
        sp_status st2 = sp_session_predict_u8(s, img, B, cls, prob);
        const long long a2 = atomic_load(&n_alloc), f2 = atomic_load(&n_free);
        const int64_t live1 = sp_alloc_live();
        sp_set_allocator(NULL);
        CHECK_MSG(st == SP_OK && st2 == SP_OK, "%s B=%lld: %s", what, (long long)B, sp_last_error());
        CHECK_MSG(a1 == 0 && f1 == 0, "%s threads=%d B=%lld: run made %lld allocations, %lld frees",
                  what, nthreads, (long long)B, a1, f1);
        CHECK_MSG(a2 - a1 == 0 && f2 - f1 == 0, "%s threads=%d B=%lld: predict made %lld allocations, "
                  "%lld frees", what, nthreads, (long long)B, a2 - a1, f2 - f1);
        CHECK_EQ(live1, live0);
        if (st != SP_OK || st2 != SP_OK) break;

        /* run: the x columns are a prefix only when B == MAXB; build a B-sample input */
        float *xb = sp_alloc(sizeof(float) * (size_t)(nin * B));
        for (int64_t f = 0; f < nin; f++)
            for (int64_t b = 0; b < B; b++) xb[f * B + b] = x[f * MAXB + b];
        const float *want = NULL;
        sp_set_allocator(&counting);
        atomic_store(&n_alloc, 0);
        st = sp_session_run(s, xb, B, &y);
        CHECK_EQ(atomic_load(&n_alloc), 0);
        sp_set_allocator(NULL);
        /* copy before the twin runs (different models: no aliasing, but be explicit) */
        float *got = sp_alloc(sizeof(float) * (size_t)(C * B));
        memcpy(got, y, sizeof(float) * (size_t)(C * B));
        CHECK_OK(sp_model_forward(twin, xb, B, false, &want));
        CHECK_MSG(memcmp(got, want, sizeof(float) * (size_t)(C * B)) == 0,
                  "%s threads=%d B=%lld: session output differs from sp_model_forward", what,
                  nthreads, (long long)B);

        /* predict_u8: the same as scaling and transposing by hand, then the forward pass */
        const float scale = sp_model_input_scale(twin);
        for (int64_t b = 0; b < B; b++)
            for (int64_t f = 0; f < nin; f++) xt[f * B + b] = (float)img[b * nin + f] * scale;
        CHECK_OK(sp_model_forward(twin, xt, B, false, &want));
        for (int64_t b = 0; b < B; b++) {
            int64_t arg = 0;
            for (int64_t c = 1; c < C; c++)
                if (want[c * B + b] > want[arg * B + b]) arg = c;
            CHECK_MSG(cls[b] == arg, "%s B=%lld sample %lld: class %d, want %lld", what,
                      (long long)B, (long long)b, cls[b], (long long)arg);
            /* probabilities: softmax computed independently here in double */
            double sum = 0.0, top = want[arg * B + b];
            for (int64_t c = 0; c < C; c++) sum += exp((double)want[c * B + b] - top);
            for (int64_t c = 0; c < C; c++) {
                const double p = exp((double)want[c * B + b] - top) / sum;
                CHECK_MSG(fabs(prob[b * C + c] - p) <= 1e-6 * p + 1e-12,
                          "%s sample %lld class %lld: prob %.9g, want %.9g", what, (long long)b,
                          (long long)c, prob[b * C + c], p);
            }
        }
        sp_free(got);
        sp_free(xb);
    }
    sp_session_free(s);
free_bufs:
    sp_free(x);
    sp_free(img);
    sp_free(xt);
out:
    sp_model_free(m);
    sp_model_free(twin);
}

static void check_model(const char *what, bool is_spec, int nthreads) {
    check_form(what, is_spec, nthreads, AS_BUILT);
}

TEST(session_mlp_no_alloc_and_forward_bits) {
    check_model("mlp:64,32", true, 1);
    check_model("mlp:64,32", true, 2);
}

TEST(session_sparse_mlp_no_alloc_and_forward_bits) {
    check_model(SPARSE_MLP, false, 1);
    check_model(SPARSE_MLP, false, 2);
}

/* The deployment path: an int8-quantized sparse MLP mapped from its file, and each step alone */
TEST(session_quantized_and_mapped_no_alloc_and_forward_bits) {
    for (int nthreads = 1; nthreads <= 2; nthreads++) {
        check_form(SPARSE_MLP, false, nthreads, QUANTIZED);
        check_form(SPARSE_MLP, false, nthreads, MAPPED);
        check_form(SPARSE_MLP, false, nthreads, QUANTIZED_MAPPED);
        check_form("mlp:64,32", true, nthreads, QUANTIZED_MAPPED);
    }
    check_form("lenet5", true, 2, MAPPED);
}

TEST(session_lenet5_no_alloc_and_forward_bits) {
    check_model("lenet5", true, 1);
    check_model("lenet5", true, 2);
}

/* BatchNorm (running statistics in evaluation) and depthwise convolutions. */
TEST(session_mobilenet_no_alloc_and_forward_bits) {
    check_model("mobilenet", true, 2);
}

/* The thread count changes nothing: 1 and 2 threads give the same bits. */
TEST(session_threads_same_bits) {
    sp_model *m = build("lenet5", true, 3, AS_BUILT);
    CHECK(m != NULL);
    if (!m) return;
    float *x = random_input(784, 6, 5);
    float a[60], b[60];
    const float *y;
    for (int t = 1; t <= 2; t++) {
        sp_session *s = NULL;
        CHECK_OK(sp_session_new(m, 6, t, &s));
        if (!s) break;
        CHECK_OK(sp_session_run(s, x, 6, &y));
        memcpy(t == 1 ? a : b, y, sizeof a);
        sp_session_free(s);
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    sp_free(x);
    sp_model_free(m);
}

TEST(session_rejects_bad_arguments) {
    sp_model *m = build("mlp:16", true, 1, AS_BUILT);
    CHECK(m != NULL);
    if (!m) return;
    sp_session *s = NULL;
    CHECK_STATUS(sp_session_new(NULL, 4, 1, &s), SP_EINVAL);
    CHECK_STATUS(sp_session_new(m, 0, 1, &s), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "max_batch 0") != NULL);
    CHECK(s == NULL);
    CHECK_STATUS(sp_session_new(m, INT64_MAX / 2, 1, &s), SP_EOVERFLOW);
    CHECK(s == NULL);
    CHECK_OK(sp_session_new(m, 4, 1, &s));
    float x[784 * 5] = {0};
    uint8_t img[784 * 5] = {0};
    const float *y;
    CHECK_STATUS(sp_session_run(s, x, 5, &y), SP_EINVAL);
    CHECK_MSG(strstr(sp_last_error(), "batch 5") && strstr(sp_last_error(), "max_batch 4"),
              "message: %s", sp_last_error());
    CHECK_STATUS(sp_session_run(s, x, 0, &y), SP_EINVAL);
    CHECK_STATUS(sp_session_run(s, NULL, 1, &y), SP_EINVAL);
    CHECK_STATUS(sp_session_predict_u8(s, img, 5, NULL, NULL), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "max_batch 4") != NULL);
    CHECK_STATUS(sp_session_predict_u8(s, NULL, 1, NULL, NULL), SP_EINVAL);
    CHECK_OK(sp_session_predict_u8(s, img, 4, NULL, NULL));
    sp_session_free(s);
    sp_session_free(NULL);
    sp_model_free(m);
}

/* Injected allocation failures in sp_session_new: SP_ENOMEM, nothing leaked, no session. */
TEST(session_new_alloc_failures) {
    bool done = false;
    for (int64_t k = 1; k <= 200 && !done; k++) {
        const int64_t live0 = sp_alloc_live();
        sp_model *fresh = build("lenet5", true, 2, AS_BUILT);
        if (!fresh) break;
        sp_session *s = NULL;
        sp_alloc_fail_after(k);
        sp_status st = sp_session_new(fresh, 8, 1, &s);
        sp_alloc_fail_after(0);
        if (st == SP_OK) {
            sp_session_free(s);
            sp_model_free(fresh);
            done = true;
            break;
        }
        CHECK_EQ(st, SP_ENOMEM);
        CHECK(s == NULL);
        sp_model_free(fresh); /* the model may keep buffers it reserved: it frees them */
        CHECK_EQ(sp_alloc_live(), live0);
    }
    CHECK(done); /* some k is past the last allocation */
}

/* A language model gives per-token logits: predict_u8 is for whole-sample classifiers. */
TEST(session_predict_needs_classifier) {
    char *cfg = NULL;
    CHECK_OK(sp_model_spec_config("charlm:layers=1,dim=16,heads=2,ctx=8", &cfg));
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(cfg, (sp_shape){1, 1, 8}, 20, 1, &m));
    sp_free(cfg);
    if (!m) return;
    sp_session *s = NULL;
    CHECK_OK(sp_session_new(m, 2, 1, &s));
    uint8_t tok[16] = {0};
    int32_t cls[2];
    CHECK_STATUS(sp_session_predict_u8(s, tok, 2, cls, NULL), SP_EUNSUPPORTED);
    float x[16] = {0};
    const float *y;
    CHECK_OK(sp_session_run(s, x, 2, &y));
    sp_session_free(s);
    sp_model_free(m);
}

/* Mixture of experts: an expert's buffers follow the tokens it gets, so the session reserves
 * every expert (and the routing arrays) for all the tokens of max_batch up front. */
TEST(session_moe_no_alloc_and_forward_bits) {
    check_model("moe-mlp:32,experts=4,top_k=1", true, 1);
    check_model("moe-mlp:32,experts=4,top_k=2", true, 2);
}

/* Token sequences through moe blocks of every kind (token choice with capacity and a shared
 * expert inside a residual block, expert choice): runs allocate nothing and match the twin. */
TEST(session_moe_sequences_no_alloc) {
    static const char cfg[] = "input 1 1 8\n"
                              "embedding vocab=classes dim=16\n"
                              "residual {\n"
                              "  moe experts=4 top_k=2 capacity=1.5 shared=1 {\n"
                              "    linear out=16\n"
                              "    relu\n"
                              "  }\n"
                              "}\n"
                              "moe experts=4 top_k=1 routing=expert {\n"
                              "  linear out=16\n"
                              "}\n"
                              "linear out=classes\n";
    enum { MAXB = 6, T = 8, V = 12 };
    sp_model *m = NULL, *twin = NULL;
    CHECK_OK(sp_model_new(cfg, (sp_shape){1, 1, T}, V, 5, &m));
    CHECK_OK(sp_model_new(cfg, (sp_shape){1, 1, T}, V, 5, &twin));
    if (!m || !twin) goto out;
    sp_model_set_threads(twin, 1);
    sp_session *s = NULL;
    CHECK_OK(sp_session_new(m, MAXB, 2, &s));
    if (!s) goto out;
    float x[T * MAXB];
    sp_rng r;
    sp_rng_init(&r, 9, 0);
    const int64_t batches[] = {MAXB, 2, 5, 1, MAXB};
    for (size_t k = 0; k < sizeof batches / sizeof batches[0]; k++) {
        const int64_t B = batches[k];
        for (int64_t i = 0; i < T * B; i++) x[i] = (float)sp_rng_below(&r, V);
        const float *y = NULL, *want = NULL;
        sp_set_allocator(&counting);
        atomic_store(&n_alloc, 0);
        sp_status st = sp_session_run(s, x, B, &y);
        const long long a = atomic_load(&n_alloc);
        sp_set_allocator(NULL);
        CHECK_MSG(st == SP_OK, "B=%lld: %s", (long long)B, sp_last_error());
        CHECK_MSG(a == 0, "B=%lld: run made %lld allocations", (long long)B, a);
        if (st != SP_OK) break;
        float got[V * T * MAXB];
        memcpy(got, y, sizeof(float) * (size_t)(V * T * B));
        CHECK_OK(sp_model_forward(twin, x, B, false, &want));
        CHECK_MSG(want && memcmp(got, want, sizeof(float) * (size_t)(V * T * B)) == 0,
                  "B=%lld: session output differs from sp_model_forward", (long long)B);
    }
    sp_session_free(s);
out:
    sp_model_free(m);
    sp_model_free(twin);
}
