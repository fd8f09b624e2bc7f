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

/* Element-wise layers run in fixed chunks on the pass's threads: each element is computed the
 * same way wherever it runs, so results do not depend on the thread count. */
#define ACT_CHUNK 16384

typedef void (*fwd_range_fn)(const float *x, float *y, int64_t i0, int64_t i1);
typedef void (*bwd_range_fn)(const float *x, const float *y, const float *dy, float *dx,
                             int64_t i0, int64_t i1);

typedef struct ew_ctx {
    fwd_range_fn fwd;
    bwd_range_fn bwd;
    const float *x, *y, *dy;
    float *out;
    int64_t n;
} ew_ctx;

static void ew_task(void *vctx, int64_t t) {
    const ew_ctx *c = vctx;
    int64_t i0 = t * ACT_CHUNK, i1 = SP_MIN(c->n, i0 + ACT_CHUNK);
    if (c->fwd) c->fwd(c->x, c->out, i0, i1);
    else c->bwd(c->x, c->y, c->dy, c->out, i0, i1);
}

static sp_status ew_forward(const sp_layer *l, const sp_run *run, fwd_range_fn f, const float *x,
                            float *y) {
    ew_ctx c = {.fwd = f, .x = x, .out = y, .n = numel(l, run)};
    sp_parallel_for((c.n + ACT_CHUNK - 1) / ACT_CHUNK, run->nthreads, ew_task, &c);
    return SP_OK;
}

static sp_status ew_backward(const sp_layer *l, const sp_run *run, bwd_range_fn f, const float *x,
                             const float *y, const float *dy, float *dx) {
    if (!dx) return SP_OK;
    ew_ctx c = {.bwd = f, .x = x, .y = y, .dy = dy, .out = dx, .n = numel(l, run)};
    sp_parallel_for((c.n + ACT_CHUNK - 1) / ACT_CHUNK, run->nthreads, ew_task, &c);
    return SP_OK;
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void relu_f(const float *x, float *y, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i]; /* NaN stays NaN */
}
static void relu_b(const float *x, const float *y, const float *dy, float *dx, int64_t i0,
                   int64_t i1) {
    /* dy is read unconditionally so that the select vectorizes */
    for (int64_t i = i0; i < i1; i++) {
        const float d = dy[i];
        dx[i] = x[i] > 0.0f ? d : 0.0f;
    }
}

static void gelu_f(const float *x, float *y, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}
static void gelu_b(const float *x, const float *y, const float *dy, float *dx, int64_t i0,
                   int64_t i1) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
    for (int64_t i = i0; i < i1; i++) {
        float cdf = 0.5f * (1.0f + erff(x[i] * (float)M_SQRT1_2));
        float pdf = inv_sqrt_2pi * expf(-0.5f * x[i] * x[i]);
        dx[i] = dy[i] * (cdf + x[i] * pdf);
    }
}

static void silu_f(const float *x, float *y, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) y[i] = x[i] * sigmoidf(x[i]);
}
static void silu_b(const float *x, const float *y, const float *dy, float *dx, int64_t i0,
                   int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
        float s = sigmoidf(x[i]);
        dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}

static void tanh_f(const float *x, float *y, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) y[i] = tanhf(x[i]);
}
static void tanh_b(const float *x, const float *y, const float *dy, float *dx, int64_t i0,
                   int64_t i1) {
    for (int64_t i = i0; i < i1; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

static void sigmoid_f(const float *x, float *y, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) y[i] = sigmoidf(x[i]);
}
static void sigmoid_b(const float *x, const float *y, const float *dy, float *dx, int64_t i0,
                      int64_t i1) {
    for (int64_t i = i0; i < i1; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

#define ELEMENTWISE(name)                                                                      \
    static sp_status name##_forward(sp_layer *l, const sp_run *run, const float *x, float *y) { \
        return ew_forward(l, run, name##_f, x, y);                                             \
    }                                                                                          \
    static sp_status name##_backward(sp_layer *l, const sp_run *run, const float *x,           \
                                     const float *y, const float *dy, float *dx) {             \
        return ew_backward(l, run, name##_b, x, y, dy, dx);                                    \
    }

ELEMENTWISE(relu)
ELEMENTWISE(gelu)
ELEMENTWISE(silu)
ELEMENTWISE(tanh)
ELEMENTWISE(sigmoid)

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
