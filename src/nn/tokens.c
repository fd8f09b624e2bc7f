/*
 * tokens.c - reads an image as a sequence of its rows: (c, h, w) -> (c*w, 1, h). Token t is
 * image row t, and its features are the pixels of that row in every channel, feature
 * f = ci*w + x for channel ci and column x.
 *
 * In the batch-innermost layout both sides are matrices of rows of B floats, and the layer is a
 * permutation of those rows:
 *     forward   out row (ci*w + x)*h + t  =  in row (ci*h + t)*w + x
 *     backward  the inverse permutation (dx row (ci*h + t)*w + x = dy row (ci*w + x)*h + t)
 * No parameters. Config: tokens.
 */
#include <stdio.h>
#include <string.h>

#include "layer.h"

typedef struct tokens_layer {
    sp_layer base;
} tokens_layer;

/* in_row(ci, t, x) = (ci*h + t)*w + x; out_row(ci, t, x) = (ci*w + x)*h + t. to_seq chooses the
 * direction: image -> sequence (forward) or sequence -> image (backward). */
static void permute(const sp_layer *l, int64_t batch, const float *src, float *dst, bool to_seq) {
    const int64_t c = l->in.c, h = l->in.h, w = l->in.w;
    const size_t row = sizeof(float) * (size_t)batch;
    for (int64_t ci = 0; ci < c; ci++)
        for (int64_t t = 0; t < h; t++)
            for (int64_t x = 0; x < w; x++) {
                int64_t img = ((ci * h + t) * w + x) * batch, seq = ((ci * w + x) * h + t) * batch;
                if (to_seq)
                    memcpy(dst + seq, src + img, row);
                else
                    memcpy(dst + img, src + seq, row);
            }
}

static sp_status tokens_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    permute(l, run->batch, x, y, true);
    return SP_OK;
}

static sp_status tokens_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                                 const float *dy, float *dx) {
    if (dx) permute(l, run->batch, dy, dx, false);
    return SP_OK;
}

static int tokens_describe(const sp_layer *l, char *buf, size_t n) {
    return snprintf(buf, n, "tokens");
}

static const sp_layer_vt tokens_vt = {
    .kind = "tokens",
    .forward = tokens_forward,
    .backward = tokens_backward,
    .describe = tokens_describe,
};

sp_status sp_tokens_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    tokens_layer *L = sp_layer_alloc(sizeof *L, &tokens_vt, in);
    if (!L) return SP_ENOMEM;
    L->base.out = (sp_shape){in.c * in.w, 1, in.h};
    *out = &L->base;
    return SP_OK;
}
