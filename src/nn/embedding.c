/*
 * embedding.c - lookup tables for sequences: token embeddings (PyTorch's nn.Embedding) and
 * learned positional embeddings.
 *
 * embedding vocab=V dim=D
 *     Input (1, h, w) of token ids stored as floats; each of the T = h*w positions is a token
 *     (a (1, 1, T) sequence is the usual case). Output (D, 1, T). Column j = t*B + b is the
 *     same on both sides, so
 *         forward   y[:, j] = E[id_j, :]           E (V, D) row-major, like Embedding.weight
 *         backward  dE[id_j, :] += dy[:, j]        (columns in order); no input gradient:
 *                   dx, when asked for, is zero
 *     Each id must be an integer in [0, V): anything else (negative, too large, fractional,
 *     NaN, Inf) is user data, and forward returns SP_EINVAL naming the value and position.
 *     Init N(0, 1), PyTorch's default for Embedding.
 *
 * posembed
 *     A learned position embedding added to a sequence (d, 1, T):
 *         forward   y[:, t, b] = x[:, t, b] + P[t, :]     P (T, d) row-major, like an
 *                                                          Embedding(T, d) indexed by position
 *         backward  dx = dy;  dP[t, :] += sum_b dy[:, t, b]   (b in order)
 *     Init N(0, 1), PyTorch's default for Embedding (GPT-2 uses N(0, 0.02^2); the layer norms
 *     that follow in a pre-norm transformer make the scale matter little).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layer.h"

#include "../core/internal.h"

/* ---- embedding ------------------------------------------------------------------------------ */

typedef struct embedding_layer {
    sp_layer base;
    int64_t vocab, dim;
} embedding_layer;

static sp_status embedding_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    embedding_layer *L = (embedding_layer *)l;
    const int64_t B = run->batch, cols = l->in.h * l->in.w * B, D = L->dim;
    const float vmax = (float)L->vocab;
    /* validate every id before writing anything */
    for (int64_t j = 0; j < cols; j++) {
        float v = x[j];
        if (!(v >= 0.0f && v < vmax && v == floorf(v)))
            return sp_fail(SP_EINVAL, "%s: token id %.9g at position %lld of sample %lld is not "
                           "an integer in [0, %lld)", l->name, (double)v, (long long)(j / B),
                           (long long)(j % B), (long long)L->vocab);
    }
    const float *E = l->param;
    for (int64_t j = 0; j < cols; j++) {
        const float *row = E + (int64_t)x[j] * D;
        for (int64_t k = 0; k < D; k++) y[k * cols + j] = row[k];
    }
    return SP_OK;
}

static sp_status embedding_backward(sp_layer *l, const sp_run *run, const float *x,
                                    const float *y, const float *dy, float *dx) {
    embedding_layer *L = (embedding_layer *)l;
    const int64_t cols = l->in.h * l->in.w * run->batch, D = L->dim;
    float *dE = l->grad;
    /* ids were validated by the forward pass over the same x */
    for (int64_t j = 0; j < cols; j++) {
        float *row = dE + (int64_t)x[j] * D;
        for (int64_t k = 0; k < D; k++) row[k] += dy[k * cols + j];
    }
    if (dx) memset(dx, 0, sizeof(float) * (size_t)cols);
    return SP_OK;
}

static void embedding_init(sp_layer *l, sp_rng *rng) {
    for (int64_t i = 0; i < l->nparam; i++) l->param[i] = sp_rng_normal(rng);
}

static int embedding_describe(const sp_layer *l, char *buf, size_t n) {
    const embedding_layer *L = (const embedding_layer *)l;
    return snprintf(buf, n, "embedding vocab=%lld dim=%lld", (long long)L->vocab,
                    (long long)L->dim);
}

static const sp_layer_vt embedding_vt = {
    .kind = "embedding",
    .forward = embedding_forward,
    .backward = embedding_backward,
    .init_params = embedding_init,
    .describe = embedding_describe,
};

sp_status sp_embedding_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    int64_t vocab, dim;
    sp_status st;
    if ((st = sp_args_int(a, "vocab", -1, 1, 1 << 24, &vocab)) != SP_OK) return st;
    if ((st = sp_args_int(a, "dim", -1, 1, 1 << 24, &dim)) != SP_OK) return st;
    if (vocab < 0)
        return sp_fail(SP_EINVAL, "config line %d (embedding): vocab=V is required", a->line);
    if (dim < 0)
        return sp_fail(SP_EINVAL, "config line %d (embedding): dim=D is required", a->line);
    if (in.c != 1)
        return sp_fail(SP_ESHAPE, "config line %d (embedding): input (%lld,%lld,%lld) has %lld "
                       "channels; token ids come as (1, 1, T) or (1, h, w)", a->line,
                       (long long)in.c, (long long)in.h, (long long)in.w, (long long)in.c);
    int64_t count;
    if (!sp_mul_i64(vocab, dim, &count) || count > ((int64_t)1 << 31))
        return sp_fail(SP_ESHAPE, "config line %d (embedding): table %lld x %lld is too large",
                       a->line, (long long)vocab, (long long)dim);
    if (count > b->max_params)
        return sp_fail(SP_EFORMAT, "config line %d (embedding): table %lld x %lld exceeds the "
                       "budget of %lld parameters", a->line, (long long)vocab, (long long)dim,
                       (long long)b->max_params);
    embedding_layer *L = sp_layer_alloc(sizeof *L, &embedding_vt, in);
    if (!L) return SP_ENOMEM;
    L->vocab = vocab;
    L->dim = dim;
    L->base.out = (sp_shape){dim, 1, in.h * in.w};
    L->base.nparam = count;
    *out = &L->base;
    return SP_OK;
}

/* ---- posembed ------------------------------------------------------------------------------- */

typedef struct posembed_layer {
    sp_layer base;
} posembed_layer;

static sp_status posembed_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    const int64_t d = l->in.c, T = l->in.w, B = run->batch;
    const float *P = l->param;
    for (int64_t k = 0; k < d; k++)
        for (int64_t t = 0; t < T; t++) {
            const int64_t o = (k * T + t) * B;
            const float p = P[t * d + k];
            for (int64_t b = 0; b < B; b++) y[o + b] = x[o + b] + p;
        }
    return SP_OK;
}

static sp_status posembed_backward(sp_layer *l, const sp_run *run, const float *x,
                                   const float *y, const float *dy, float *dx) {
    const int64_t d = l->in.c, T = l->in.w, B = run->batch;
    float *dP = l->grad;
    for (int64_t k = 0; k < d; k++)
        for (int64_t t = 0; t < T; t++) {
            const float *r = dy + (k * T + t) * B;
            float s = 0.0f;
            for (int64_t b = 0; b < B; b++) s += r[b];
            dP[t * d + k] += s;
        }
    if (dx) memcpy(dx, dy, sizeof(float) * (size_t)(d * T * B));
    return SP_OK;
}

static int posembed_describe(const sp_layer *l, char *buf, size_t n) {
    return snprintf(buf, n, "posembed");
}

static const sp_layer_vt posembed_vt = {
    .kind = "posembed",
    .forward = posembed_forward,
    .backward = posembed_backward,
    .init_params = embedding_init,
    .describe = posembed_describe,
};

sp_status sp_posembed_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    if (in.h != 1)
        return sp_fail(SP_ESHAPE, "config line %d (posembed): input (%lld,%lld,%lld) is not a "
                       "sequence (d, 1, T); put 'tokens' or 'embedding' before it", a->line,
                       (long long)in.c, (long long)in.h, (long long)in.w);
    int64_t count;
    if (!sp_mul_i64(in.c, in.w, &count) || count > ((int64_t)1 << 31))
        return sp_fail(SP_ESHAPE, "config line %d (posembed): table %lld x %lld is too large",
                       a->line, (long long)in.w, (long long)in.c);
    if (count > b->max_params)
        return sp_fail(SP_EFORMAT, "config line %d (posembed): table %lld x %lld exceeds the "
                       "budget of %lld parameters", a->line, (long long)in.w, (long long)in.c,
                       (long long)b->max_params);
    posembed_layer *L = sp_layer_alloc(sizeof *L, &posembed_vt, in);
    if (!L) return SP_ENOMEM;
    L->base.nparam = count;
    *out = &L->base;
    return SP_OK;
}
