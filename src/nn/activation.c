/*
 * activation.c - element-wise activations and softmax, forward and backward side by side.
 *
 *   relu     y = max(x, 0) (NaN stays NaN)      dx = dy * (x > 0)
 *   gelu     y = x Phi(x) = x/2 (1 + erf(x/sqrt 2))   (exact form, PyTorch's default)
 *                                               dx = dy * (Phi(x) + x phi(x))
 *   silu     y = x sigmoid(x)                   dx = dy * s (1 + x (1 - s)),  s = sigmoid(x)
 *   tanh     y = tanh(x)                        dx = dy * (1 - y^2)
 *   sigmoid  y = 1 / (1 + e^-x)                 dx = dy * y (1 - y)
 *   softmax  over the channel axis, per column (sample or token):
 *            y_k = e^(x_k - max) / sum_j e^(x_j - max)     dx = y * (dy - sum_k dy_k y_k)
 *
 * None has parameters; shapes are unchanged. The element-wise ones take no options.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layer.h"

#include "../core/internal.h"

typedef struct act_layer {
    sp_layer base;
} act_layer;

static int64_t numel(const sp_layer *l, const sp_run *run) {
    return sp_shape_numel(l->in) * run->batch;
}

/* ---- relu ----------------------------------------------------------------------------------- */

static sp_status relu_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    int64_t n = numel(l, run);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i]; /* NaN stays NaN */
    return SP_OK;
}
static sp_status relu_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                               const float *dy, float *dx) {
    if (!dx) return SP_OK;
    int64_t n = numel(l, run);
    /* dy is read unconditionally so that the select vectorizes */
    for (int64_t i = 0; i < n; i++) {
        const float d = dy[i];
        dx[i] = x[i] > 0.0f ? d : 0.0f;
    }
    return SP_OK;
}

/* ---- gelu ----------------------------------------------------------------------------------- */

static sp_status gelu_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    int64_t n = numel(l, run);
    for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
    return SP_OK;
}
static sp_status gelu_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                               const float *dy, float *dx) {
    if (!dx) return SP_OK;
    int64_t n = numel(l, run);
    const float inv_sqrt_2pi = 0.3989422804014327f;
    for (int64_t i = 0; i < n; i++) {
        float cdf = 0.5f * (1.0f + erff(x[i] * (float)M_SQRT1_2));
        float pdf = inv_sqrt_2pi * expf(-0.5f * x[i] * x[i]);
        dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
    return SP_OK;
}

/* ---- silu ----------------------------------------------------------------------------------- */

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static sp_status silu_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    int64_t n = numel(l, run);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * sigmoidf(x[i]);
    return SP_OK;
}
static sp_status silu_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                               const float *dy, float *dx) {
    if (!dx) return SP_OK;
    int64_t n = numel(l, run);
    for (int64_t i = 0; i < n; i++) {
        float s = sigmoidf(x[i]);
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
    return SP_OK;
}

/* ---- tanh ----------------------------------------------------------------------------------- */

static sp_status tanh_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    int64_t n = numel(l, run);
    for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
    return SP_OK;
}
static sp_status tanh_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                               const float *dy, float *dx) {
    if (!dx) return SP_OK;
    int64_t n = numel(l, run);
    for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
    return SP_OK;
}

/* ---- sigmoid -------------------------------------------------------------------------------- */

static sp_status sigmoid_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    int64_t n = numel(l, run);
    for (int64_t i = 0; i < n; i++) y[i] = sigmoidf(x[i]);
    return SP_OK;
}
static sp_status sigmoid_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                                  const float *dy, float *dx) {
    if (!dx) return SP_OK;
    int64_t n = numel(l, run);
    for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
    return SP_OK;
}

/* ---- softmax over channels ------------------------------------------------------------------ */

/* (c, cols) with cols = h * w * B: column j is one distribution; rows are walked whole so that
 * the inner loops run over contiguous columns. */
static sp_status softmax_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    const int64_t c = l->in.c, cols = l->in.h * l->in.w * run->batch;
    for (int64_t j = 0; j < cols; j++) y[j] = x[j];
    for (int64_t k = 1; k < c; k++)
        for (int64_t j = 0; j < cols; j++) y[j] = fmaxf(y[j], x[k * cols + j]);
    /* y row 0 holds the column maxima for now; exponentiate the other rows first */
    for (int64_t k = c - 1; k >= 0; k--)
        for (int64_t j = 0; j < cols; j++) y[k * cols + j] = expf(x[k * cols + j] - y[j]);
    /* row 0 was overwritten last (k = 0), after every other row used the maxima */
    for (int64_t j = 0; j < cols; j++) {
        float s = 0.0f;
        for (int64_t k = 0; k < c; k++) s += y[k * cols + j];
        float inv = 1.0f / s;
        for (int64_t k = 0; k < c; k++) y[k * cols + j] *= inv;
    }
    return SP_OK;
}
static sp_status softmax_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                                  const float *dy, float *dx) {
    if (!dx) return SP_OK;
    const int64_t c = l->in.c, cols = l->in.h * l->in.w * run->batch;
    for (int64_t j = 0; j < cols; j++) {
        float s = 0.0f;
        for (int64_t k = 0; k < c; k++) s += dy[k * cols + j] * y[k * cols + j];
        for (int64_t k = 0; k < c; k++) dx[k * cols + j] = y[k * cols + j] * (dy[k * cols + j] - s);
    }
    return SP_OK;
}

/* ---- vtables and constructors --------------------------------------------------------------- */

#define ACT(name)                                                                              \
    static int name##_describe(const sp_layer *l, char *buf, size_t n) {                       \
        return snprintf(buf, n, "%s", #name);                                                  \
    }                                                                                          \
    static const sp_layer_vt name##_vt = {                                                     \
        .kind = #name,                                                                         \
        .forward = name##_forward,                                                             \
        .backward = name##_backward,                                                           \
        .describe = name##_describe,                                                           \
    };                                                                                         \
    sp_status sp_##name##_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {       \
        act_layer *L = sp_layer_alloc(sizeof *L, &name##_vt, in);                              \
        if (!L) return SP_ENOMEM;                                                              \
        *out = &L->base;                                                                       \
        return SP_OK;                                                                          \
    }

ACT(relu)
ACT(gelu)
ACT(silu)
ACT(tanh)
ACT(sigmoid)
ACT(softmax)
