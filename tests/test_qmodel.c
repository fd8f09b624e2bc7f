/*
 * test_qmodel.c - quantized models: sp_model_quantize turns linear layers into qlinear layers
 * that keep the patterns, whose forward pass is the documented product (sparrow/quant.h) layer
 * by layer, whose calibration gives the documented static scales, and whose tensors survive
 * the model file's hooks (get_tensor / load_tensors) with every count checked.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/nn/layer.h"
#include "../src/nn/seq.h"
#include "test.h"

static sp_model *mlp(const char *cfg, uint64_t seed) {
    sp_model *m = NULL;
    sp_shape in = {24, 1, 1};
    if (sp_model_new(cfg, in, 5, seed, &m) != SP_OK) return NULL;
    return m;
}

static void fill(float *x, int64_t n, uint64_t seed) {
    sp_rng r;
    sp_rng_init(&r, seed, 0);
    for (int64_t i = 0; i < n; i++) x[i] = 2.0f * sp_rng_uniform(&r) - 1.0f;
}

static const char *const CFG_SPARSE = "flatten\n"
                                      "linear out=16 format=csr density=0.4\n"
                                      "relu\n"
                                      "linear out=12 format=mask density=0.5\n"
                                      "relu\n"
                                      "linear out=classes\n";

/* Patterns are kept exactly, dequantized weights are within half a step of the float ones, and
 * every layer that is not linear is untouched. */
TEST(qmodel_keeps_patterns_and_rounds_to_half_a_step) {
    for (int bits = 8; bits >= 4; bits -= 4) {
        sp_model *m = mlp(CFG_SPARSE, 3), *q = NULL;
        CHECK(m != NULL);
        if (!m) return;
        sp_quant_opts o = {.bits = bits, .group = 4};
        CHECK_STATUS(sp_model_quantize(m, &o, &q), SP_OK);
        if (!q) {
            sp_model_free(m);
            return;
        }
        CHECK_EQ(sp_model_nlayers(q), sp_model_nlayers(m));
        for (int i = 0; i < sp_model_nlayers(m); i++) {
            sp_layer_info a, b;
            sp_model_layer(m, i, &a);
            sp_model_layer(q, i, &b);
            if (strcmp(a.kind, "linear") != 0) {
                CHECK(strcmp(a.kind, b.kind) == 0);
                continue;
            }
            CHECK(strcmp(b.kind, "qlinear") == 0);
            CHECK_MSG(strcmp(b.format, strcmp(a.format, "dense") ? (bits == 8 ? "q8-csr" : "q4-csr")
                                                                  : (bits == 8 ? "q8-dense" : "q4-dense")) == 0,
                      "layer %d format %s (float %s)", i, b.format, a.format);
            const int64_t n = a.out.c * a.in.c;
            float *w0 = malloc(sizeof(float) * (size_t)n), *w1 = malloc(sizeof(float) * (size_t)n);
            float *b0 = malloc(sizeof(float) * (size_t)a.out.c), *b1 = malloc(sizeof(float) * (size_t)a.out.c);
            CHECK_STATUS(sp_model_layer_get_weight(m, i, w0, b0), SP_OK);
            CHECK_STATUS(sp_model_layer_get_weight(q, i, w1, b1), SP_OK);
            sp_mask *pa = NULL, *pb = NULL;
            sp_model_layer_pattern(m, i, &pa);
            sp_model_layer_pattern(q, i, &pb);
            CHECK((pa == NULL) == (strcmp(a.format, "dense") == 0));
            for (int64_t r = 0; r < a.out.c; r++) {
                CHECK(b0[r] == b1[r]);
                float amax = 0; /* the row's largest |w|: the scale is amax / qmax (per row for
                                 * 8 bits; a group's max is at most it for 4 bits) */
                for (int64_t c = 0; c < a.in.c; c++) amax = fmaxf(amax, fabsf(w0[r * a.in.c + c]));
                const float step = amax / (bits == 8 ? 127.0f : 7.0f);
                for (int64_t c = 0; c < a.in.c; c++) {
                    const float x = w0[r * a.in.c + c], y = w1[r * a.in.c + c];
                    CHECK_MSG(fabsf(x - y) <= 0.5f * step * (1 + 1e-5f) + 1e-7f,
                              "%d-bit layer %d (%lld,%lld): %g vs %g, step %g", bits, i,
                              (long long)r, (long long)c, (double)x, (double)y, (double)step);
                    if (pa && !sp_mask_get(pa, r, c)) CHECK(y == 0.0f);
                    /* a kept entry that quantized to nonzero is in the new pattern, and only those */
                    if (pb) CHECK(sp_mask_get(pb, r, c) == (y != 0.0f));
                }
            }
            sp_mask_free(pa);
            sp_mask_free(pb);
            free(w0), free(w1), free(b0), free(b1);
        }
        sp_model_free(q);
        sp_model_free(m);
    }
}

/* The quantized model's forward pass is exactly the chain of sp_qcsr_spmm products, and its
 * backward pass is refused. */
TEST(qmodel_forward_is_the_chain_of_quantized_products) {
    sp_model *m = mlp(CFG_SPARSE, 5), *q = NULL;
    CHECK(m != NULL);
    if (!m) return;
    sp_quant_opts o = {.bits = 8};
    CHECK_STATUS(sp_model_quantize(m, &o, &q), SP_OK);
    if (!q) {
        sp_model_free(m);
        return;
    }
    enum { B = 7 };
    float x[24 * B], h0[16 * B], h1[12 * B], ref[5 * B];
    fill(x, 24 * B, 11);
    const float *y = NULL;
    CHECK_STATUS(sp_model_forward(q, x, B, false, &y), SP_OK);
    /* layers: 0 flatten, 1 qlinear, 2 relu, 3 qlinear, 4 relu, 5 qlinear */
    const float *in = x;
    float *outs[3] = {h0, h1, ref};
    const int ql[3] = {1, 3, 5};
    for (int k = 0; k < 3; k++) {
        const sp_layer *l = sp_model_layer_ptr(q, ql[k]);
        sp_layer_tensor t[6];
        for (int j = 0; j < 6; j++) l->vt->get_tensor(l, j, &t[j]);
        sp_qcsr *w = NULL;
        int bits, group;
        bool dense;
        sp_qlinear_config(l, &bits, &group, &dense);
        CHECK_STATUS(sp_qcsr_wrap(l->out.c, l->in.c, bits, bits == 4 ? group : 0, t[0].data,
                                  t[0].count, t[1].data, t[1].count, t[2].data, t[2].count,
                                  t[3].data, t[3].count, true, &w),
                     SP_OK);
        if (!w) break;
        size_t wb = sp_qcsr_work_bytes(w, B);
        void *work = sp_alloc(wb);
        CHECK_STATUS(sp_qcsr_spmm(w, in, B, B, 0.0f, outs[k], B, t[4].data,
                                  k < 2 ? SP_ACT_RELU : SP_ACT_NONE, work, wb, 1),
                     SP_OK);
        sp_free(work);
        sp_qcsr_free(w);
        in = outs[k];
    }
    for (int i = 0; i < 5 * B; i++) CHECK_MSG(y[i] == ref[i], "output %d: %g vs %g", i, (double)y[i], (double)ref[i]);
    float dy[5 * B];
    memset(dy, 0, sizeof dy);
    sp_model_zero_grad(q);
    CHECK_STATUS(sp_model_backward(q, dy, NULL), SP_EUNSUPPORTED);
    CHECK(strstr(sp_last_error(), "qlinear") != NULL);
    sp_model_free(q);
    sp_model_free(m);
}

/* Calibration: the first quantized layer sees the inputs themselves, so its static scale is
 * their largest |x| / 127; later layers get a positive finite scale. Same bits on 1 and 2
 * threads. */
TEST(qmodel_calibration_gives_absmax_scales) {
    sp_model *m = mlp(CFG_SPARSE, 7);
    CHECK(m != NULL);
    if (!m) return;
    enum { N = 40 };
    float x[24 * N];
    fill(x, 24 * N, 21);
    float amax = 0;
    for (int i = 0; i < 24 * N; i++) amax = fmaxf(amax, fabsf(x[i]));
    sp_model *q1 = NULL, *q2 = NULL;
    sp_quant_opts o = {.bits = 8, .calib_x = x, .calib_n = N, .calib_batch = 16, .nthreads = 1};
    CHECK_STATUS(sp_model_quantize(m, &o, &q1), SP_OK);
    o.nthreads = 2;
    CHECK_STATUS(sp_model_quantize(m, &o, &q2), SP_OK);
    if (!q1 || !q2) goto done;
    CHECK(sp_qlinear_act_scale(sp_model_layer_ptr(q1, 1)) == amax / 127.0f);
    for (int i = 3; i <= 5; i += 2) {
        const float s = sp_qlinear_act_scale(sp_model_layer_ptr(q1, i));
        CHECK_MSG(s > 0 && isfinite(s), "layer %d scale %g", i, (double)s);
        CHECK(s == sp_qlinear_act_scale(sp_model_layer_ptr(q2, i)));
    }
    const float *y1, *y2;
    CHECK_STATUS(sp_model_forward(q1, x, N, false, &y1), SP_OK);
    CHECK_STATUS(sp_model_forward(q2, x, N, false, &y2), SP_OK);
    CHECK(memcmp(y1, y2, sizeof(float) * 5 * N) == 0);
done:
    sp_model_free(q1);
    sp_model_free(q2);
    sp_model_free(m);
}

/* The tensors a model file saves come back through load_tensors, copied or borrowed, and every
 * count that does not fit the layer is refused with the layer named. */
TEST(qlinear_tensors_round_trip_and_bad_counts_are_refused) {
    sp_model *m = mlp(CFG_SPARSE, 9), *q = NULL, *fresh = NULL;
    sp_quant_opts o = {.bits = 4, .group = 3};
    CHECK(m != NULL);
    if (!m) return;
    CHECK_STATUS(sp_model_quantize(m, &o, &q), SP_OK);
    if (!q) goto done;
    /* a model built from the quantized config alone has empty qlinear layers */
    CHECK_STATUS(sp_model_new(sp_model_config(q), sp_model_in(q), 5, 1, &fresh), SP_OK);
    if (!fresh) goto done;
    for (int i = 1; i <= 5; i += 2) {
        const sp_layer *src = sp_model_layer_ptr(q, i);
        sp_layer *dst = sp_model_layer_ptr(fresh, i);
        sp_layer_tensor t[6];
        CHECK_EQ(src->vt->ntensors(src), 6);
        for (int j = 0; j < 6; j++) CHECK_STATUS(src->vt->get_tensor(src, j, &t[j]), SP_OK);
        CHECK(strcmp(t[2].name, "val") == 0 && t[2].dtype == SP_U8);
        /* wrong counts: each refused, the layer unchanged */
        sp_layer_tensor bad[6];
        memcpy(bad, t, sizeof bad);
        bad[4].count--;
        CHECK_STATUS(dst->vt->load_tensors(dst, bad, 6, false), SP_EFORMAT);
        CHECK(strstr(sp_last_error(), "bias") != NULL);
        memcpy(bad, t, sizeof bad);
        bad[5].count = 2;
        CHECK_STATUS(dst->vt->load_tensors(dst, bad, 6, false), SP_EFORMAT);
        memcpy(bad, t, sizeof bad);
        bad[0].count--;
        CHECK_STATUS(dst->vt->load_tensors(dst, bad, 6, false), SP_EFORMAT);
        CHECK(strstr(sp_last_error(), dst->name) != NULL);
        CHECK_STATUS(dst->vt->load_tensors(dst, t, 5, false), SP_EFORMAT);
        const float nan_scale = NAN;
        memcpy(bad, t, sizeof bad);
        bad[5].data = &nan_scale;
        CHECK_STATUS(dst->vt->load_tensors(dst, bad, 6, false), SP_EFORMAT);
        CHECK_STATUS(dst->vt->load_tensors(dst, t, 6, i == 3), SP_OK); /* one borrowed */
    }
    enum { B = 3 };
    float x[24 * B];
    fill(x, 24 * B, 2);
    const float *ya, *yb;
    CHECK_STATUS(sp_model_forward(q, x, B, false, &ya), SP_OK);
    CHECK_STATUS(sp_model_forward(fresh, x, B, false, &yb), SP_OK);
    CHECK(memcmp(ya, yb, sizeof(float) * 5 * B) == 0);
    CHECK_EQ(sp_model_nnz(fresh), sp_model_nnz(q));
done:
    sp_model_free(fresh);
    sp_model_free(q);
    sp_model_free(m);
}

/* Dense layers take the dense layout (no index bytes), a CNN keeps its float convolutions, and
 * the output of a quantized lenet5 stays close to the float one. */
TEST(qmodel_quantizes_the_linear_layers_of_a_cnn) {
    char *cfg = NULL;
    sp_model *m = NULL, *q = NULL;
    sp_shape in = {1, 28, 28};
    CHECK_STATUS(sp_model_spec_config("lenet5", &cfg), SP_OK);
    CHECK_STATUS(sp_model_new(cfg, in, 10, 4, &m), SP_OK);
    sp_free(cfg);
    if (!m) return;
    sp_quant_opts o = {.bits = 8};
    CHECK_STATUS(sp_model_quantize(m, &o, &q), SP_OK);
    if (!q) {
        sp_model_free(m);
        return;
    }
    int nq = 0;
    for (int i = 0; i < sp_model_nlayers(q); i++) {
        sp_layer_info a, b;
        sp_model_layer(m, i, &a);
        sp_model_layer(q, i, &b);
        if (!strcmp(a.kind, "linear")) {
            nq++;
            CHECK(strcmp(b.format, "q8-dense") == 0);
            /* 1 byte per weight, a float per row and the bias, row offsets, the act scale */
            CHECK_EQ(b.bytes, (size_t)(a.out.c * a.in.c + 4 * a.out.c + 4 * a.out.c +
                                       4 * (a.out.c + 1) + 4));
        } else {
            CHECK(strcmp(a.kind, b.kind) == 0 && a.nparam == b.nparam);
        }
    }
    CHECK(nq == 3);
    enum { B = 4 };
    float *x = malloc(sizeof(float) * 784 * B), *y0 = malloc(sizeof(float) * 10 * B);
    sp_rng r;
    sp_rng_init(&r, 8, 0);
    for (int i = 0; i < 784 * B; i++) x[i] = sp_rng_uniform(&r);
    const float *y;
    CHECK_STATUS(sp_model_forward(m, x, B, false, &y), SP_OK);
    memcpy(y0, y, sizeof(float) * 10 * B);
    CHECK_STATUS(sp_model_forward(q, x, B, false, &y), SP_OK);
    double num = 0, den = 0;
    for (int i = 0; i < 10 * B; i++) {
        num += (y[i] - y0[i]) * (y[i] - y0[i]);
        den += y0[i] * y0[i];
    }
    /* int8 weights and activations: a few tenths of a percent of relative error per layer */
    CHECK_MSG(sqrt(num / den) < 0.03, "relative error %g", sqrt(num / den));
    free(x), free(y0);
    sp_model_free(q);
    sp_model_free(m);
}

TEST(qmodel_rejects_bad_options) {
    sp_model *m = mlp(CFG_SPARSE, 1), *q = NULL;
    if (!m) return;
    sp_quant_opts o = {.bits = 6};
    CHECK_STATUS(sp_model_quantize(m, &o, &q), SP_EINVAL);
    o = (sp_quant_opts){.bits = 4, .group = 5000};
    CHECK_STATUS(sp_model_quantize(m, &o, &q), SP_EINVAL);
    float x[24];
    o = (sp_quant_opts){.bits = 8, .calib_x = x, .calib_n = 0};
    CHECK_STATUS(sp_model_quantize(m, &o, &q), SP_EINVAL);
    CHECK(q == NULL);
    sp_model_free(m);
    sp_model *c = NULL;
    sp_shape in = {24, 1, 1};
    CHECK_STATUS(sp_model_new("flatten\nrelu\n", in, 24, 1, &c), SP_OK);
    if (c) CHECK_STATUS(sp_model_quantize(c, &(sp_quant_opts){.bits = 8}, &q), SP_EINVAL);
    sp_model_free(c);
    /* config errors of the layer itself */
    CHECK_STATUS(sp_model_new("qlinear out=4 bits=6\n", in, 4, 1, &c), SP_EINVAL);
    CHECK_STATUS(sp_model_new("qlinear out=4 layout=diagonal\n", in, 4, 1, &c), SP_EINVAL);
    CHECK_STATUS(sp_model_new("qlinear bits=8\n", in, 4, 1, &c), SP_EINVAL);
}

static void qtmp(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/sparrow_test_qmodel_%d_%s", (int)getpid(), name);
}

/* The same model quantized from a copy and from a mapping of its file (no arenas: parameters
 * and BatchNorm-free layernorm state come through the layers' views) gives the same outputs. */
TEST(qmodel_quantizes_a_mapped_model_like_a_copied_one) {
    const char *cfg = "flatten\nlinear out=16 format=csr density=0.4\nlayernorm\nrelu\n"
                      "linear out=classes\n";
    sp_model *m = mlp(cfg, 12), *mm = NULL, *q1 = NULL, *q2 = NULL;
    char path[128];
    qtmp(path, sizeof path, "mapped");
    CHECK(m != NULL);
    if (!m) return;
    CHECK_STATUS(sp_checkpoint_save(path, m, NULL, NULL, NULL), SP_OK);
    CHECK_STATUS(sp_model_open(path, &mm), SP_OK);
    sp_quant_opts o = {.bits = 8};
    CHECK_STATUS(sp_model_quantize(m, &o, &q1), SP_OK);
    if (mm) CHECK_STATUS(sp_model_quantize(mm, &o, &q2), SP_OK);
    if (q1 && q2) {
        enum { B = 3 };
        float x[24 * B], y1[5 * B];
        fill(x, 24 * B, 4);
        const float *y;
        CHECK_STATUS(sp_model_forward(q1, x, B, false, &y), SP_OK);
        memcpy(y1, y, sizeof y1);
        CHECK_STATUS(sp_model_forward(q2, x, B, false, &y), SP_OK);
        CHECK(memcmp(y1, y, sizeof y1) == 0);
    }
    sp_model_free(q1);
    sp_model_free(q2);
    sp_model_free(mm);
    sp_model_free(m);
    remove(path);
}

/* Model files of quantized models load back: one whose sparse layer was emptied (no stored
 * entry: the weightless state), and one built from a qlinear config alone (zero bias). A
 * sp_qcsr_wrap error reaches the caller readable, with the layer named. */
TEST(qmodel_files_with_empty_layers_load) {
    sp_model *m = mlp("flatten\nlinear out=16 format=mask density=0.5\nrelu\nlinear out=classes\n", 2);
    sp_model *q = NULL, *back = NULL, *fresh = NULL;
    char path[128];
    qtmp(path, sizeof path, "empty");
    CHECK(m != NULL);
    if (!m) return;
    sp_mask *none = NULL;
    CHECK_STATUS(sp_mask_new(16, 24, &none), SP_OK);
    CHECK_STATUS(sp_model_layer_set_pattern(m, 1, none), SP_OK);
    sp_mask_free(none);
    CHECK_STATUS(sp_model_quantize(m, &(sp_quant_opts){.bits = 8}, &q), SP_OK);
    if (q) {
        CHECK_STATUS(sp_checkpoint_save(path, q, NULL, NULL, NULL), SP_OK);
        sp_checkpoint ck = {0};
        CHECK_STATUS(sp_checkpoint_load(path, &ck), SP_OK);
        CHECK_STATUS(sp_model_open(path, &back), SP_OK);
        enum { B = 2 };
        float x[24 * B], y1[5 * B];
        fill(x, 24 * B, 6);
        const float *y;
        CHECK_STATUS(sp_model_forward(q, x, B, false, &y), SP_OK);
        memcpy(y1, y, sizeof y1);
        if (ck.model) {
            CHECK_STATUS(sp_model_forward(ck.model, x, B, false, &y), SP_OK);
            CHECK(memcmp(y1, y, sizeof y1) == 0);
        }
        if (back) {
            CHECK_STATUS(sp_model_forward(back, x, B, false, &y), SP_OK);
            CHECK(memcmp(y1, y, sizeof y1) == 0);
        }
        sp_checkpoint_free(&ck);
        /* a model built from the quantized config alone saves and loads */
        CHECK_STATUS(sp_model_new(sp_model_config(q), sp_model_in(q), 5, 1, &fresh), SP_OK);
        if (fresh) {
            CHECK_STATUS(sp_checkpoint_save(path, fresh, NULL, NULL, NULL), SP_OK);
            CHECK_STATUS(sp_checkpoint_load(path, &ck), SP_OK);
            sp_checkpoint_free(&ck);
        }
        /* a broken array: the wrap's own message, readable, behind the layer's name */
        const sp_layer *l = sp_model_layer_ptr(q, 3);
        sp_layer_tensor t[6];
        for (int j = 0; j < 6; j++) l->vt->get_tensor(l, j, &t[j]);
        int32_t rp[6] = {0, 1, 2, 3, 4, 99};
        t[0].data = rp; /* the last row ends past the stored entries */
        sp_layer *dst = sp_model_layer_ptr(fresh ? fresh : q, 3);
        CHECK_STATUS(dst->vt->load_tensors(dst, t, 6, false), SP_EFORMAT);
        CHECK_MSG(strstr(sp_last_error(), "layer 3.qlinear (qlinear): qcsr: ") == sp_last_error(),
                  "message: %s", sp_last_error());
    }
    sp_model_free(fresh);
    sp_model_free(back);
    sp_model_free(q);
    sp_model_free(m);
    remove(path);
}
