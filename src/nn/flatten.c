/*
 * flatten.c - (c, h, w) per sample -> (c*h*w, 1, 1). In the feature-major layout the data do
 * not move: element (c, y, x) of sample b is row (c*h + y)*w + x of both, so forward and
 * backward are copies. Config: flatten.
 */
#include <stdio.h>
#include <string.h>

#include "layer.h"

typedef struct flatten_layer {
    sp_layer base;
} flatten_layer;

static sp_status flatten_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    memcpy(y, x, sizeof(float) * (size_t)(sp_shape_numel(l->in) * run->batch));
    return SP_OK;
}

static sp_status flatten_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                                  const float *dy, float *dx) {
    if (dx) memcpy(dx, dy, sizeof(float) * (size_t)(sp_shape_numel(l->in) * run->batch));
    return SP_OK;
}

static int flatten_describe(const sp_layer *l, char *buf, size_t n) {
    return snprintf(buf, n, "flatten");
}

static const sp_layer_vt flatten_vt = {
    .kind = "flatten",
    .forward = flatten_forward,
    .backward = flatten_backward,
    .describe = flatten_describe,
};

sp_status sp_flatten_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    flatten_layer *L = sp_layer_alloc(sizeof *L, &flatten_vt, in);
    if (!L) return SP_ENOMEM;
    L->base.out = (sp_shape){sp_shape_numel(in), 1, 1};
    *out = &L->base;
    return SP_OK;
}
