/*
 * dropout.c - inverted dropout: in training each element is kept with probability 1 - p and
 * scaled by 1/(1 - p); in evaluation the layer is the identity. The random stream is
 * (model seed, step, layer index), so a resumed run and any thread count draw the same mask.
 * Config: dropout p=P (0 <= P < 1, default 0.5).
 */
#include <stdio.h>
#include <string.h>

#include "layer.h"

#include "../core/internal.h"

typedef struct dropout_layer {
    sp_layer base;
    double p;
    uint8_t *keep;      /* mask of the last training forward, numel(in) * cap */
    int64_t cap;
} dropout_layer;

static sp_status dropout_reserve(sp_layer *l, int64_t batch) {
    dropout_layer *L = (dropout_layer *)l;
    sp_free(L->keep);
    L->cap = 0;
    L->keep = sp_alloc((size_t)(sp_shape_numel(l->in) * batch));
    if (!L->keep) return SP_ENOMEM;
    L->cap = batch;
    return SP_OK;
}

static sp_status dropout_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    dropout_layer *L = (dropout_layer *)l;
    const int64_t n = sp_shape_numel(l->in) * run->batch;
    if (!run->train || L->p == 0.0) {
        memcpy(y, x, sizeof(float) * (size_t)n);
        if (L->keep) memset(L->keep, 1, (size_t)n);
        return SP_OK;
    }
    sp_rng r;
    sp_rng_init(&r, run->seed ^ 0xd50u, ((uint64_t)run->step << 16) ^ (uint64_t)l->index);
    const float keep_p = (float)(1.0 - L->p), scale = 1.0f / keep_p;
    for (int64_t i = 0; i < n; i++) {
        uint8_t k = sp_rng_uniform(&r) < keep_p;
        L->keep[i] = k;
        y[i] = k ? x[i] * scale : 0.0f;
    }
    return SP_OK;
}

static sp_status dropout_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                                  const float *dy, float *dx) {
    dropout_layer *L = (dropout_layer *)l;
    if (!dx) return SP_OK;
    const int64_t n = sp_shape_numel(l->in) * run->batch;
    const float scale = L->p == 0.0 ? 1.0f : 1.0f / (float)(1.0 - L->p);
    for (int64_t i = 0; i < n; i++) dx[i] = L->keep[i] ? dy[i] * scale : 0.0f;
    return SP_OK;
}

static void dropout_free(sp_layer *l) { sp_free(((dropout_layer *)l)->keep); }

static int dropout_describe(const sp_layer *l, char *buf, size_t n) {
    return snprintf(buf, n, "dropout p=%.9g", ((const dropout_layer *)l)->p);
}

static const sp_layer_vt dropout_vt = {
    .kind = "dropout",
    .forward = dropout_forward,
    .backward = dropout_backward,
    .reserve = dropout_reserve,
    .free = dropout_free,
    .describe = dropout_describe,
};

sp_status sp_dropout_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    double p;
    sp_status st = sp_args_num(a, "p", 0.5, 0.0, 0.999, &p);
    if (st != SP_OK) return st;
    dropout_layer *L = sp_layer_alloc(sizeof *L, &dropout_vt, in);
    if (!L) return SP_ENOMEM;
    L->p = p;
    *out = &L->base;
    return SP_OK;
}
