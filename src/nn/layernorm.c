/*
 * layernorm.c - layer normalization (Ba, Kiros & Hinton 2016) over the channel axis, as
 * PyTorch's nn.LayerNorm(c): each column (one token of a sequence, or one sample of a vector)
 * is normalized by its own mean and biased variance, then scaled and shifted per channel.
 *
 * Shapes: input (c, h, w) per sample is a (c, cols) matrix with cols = h * w * B.
 *     forward   mu_j = 1/c sum_k x_kj      var_j = 1/c sum_k (x_kj - mu_j)^2
 *               r_j = 1 / sqrt(var_j + eps)  xh_kj = (x_kj - mu_j) r_j
 *               y_kj = gamma_k xh_kj + beta_k
 *     backward  g_kj = dy_kj gamma_k
 *               dx_kj = r_j (g_kj - 1/c sum_k' g_k'j - xh_kj 1/c sum_k' g_k'j xh_k'j)
 *               dgamma_k += sum_j dy_kj xh_kj     dbeta_k += sum_j dy_kj
 * Sums run in float in a fixed order (channels in order for the per-column sums; 16
 * interleaved partial sums over the columns, then combined in order, for the per-channel ones),
 * so results do not depend on the thread count or the vector width.
 *
 * Parameters in the arena: gamma (c, init 1), then beta (c, init 0). The forward pass keeps
 * mu and r of each column for backward.
 *
 * Config: layernorm [eps=E] (default 1e-5).
 */
#include <math.h>
#include <stdio.h>

#include "layer.h"

#include "../core/internal.h"

#define LN_EPS_DEFAULT 1e-5
#define LN_LANES 16 /* partial sums of the per-channel gradient reductions */

typedef struct layernorm_layer {
    sp_layer base;
    double eps;
    float *mean, *rstd;   /* (cols) of the last forward pass */
    float *s1, *s2;       /* (cols) backward scratch: sums of g and of g * xh per column */
} layernorm_layer;

static int64_t cols_of(const sp_layer *l, int64_t batch) { return l->in.h * l->in.w * batch; }

static sp_status layernorm_reserve(sp_layer *l, int64_t batch) {
    layernorm_layer *L = (layernorm_layer *)l;
    sp_free(L->mean);
    L->mean = L->rstd = L->s1 = L->s2 = NULL;
    int64_t cols = cols_of(l, batch), n;
    size_t bytes;
    if (!sp_mul_i64(cols, 4, &n) || !sp_bytes(n, sizeof(float), &bytes))
        return sp_fail(SP_EOVERFLOW, "%s: statistics overflow at batch %lld", l->name,
                       (long long)batch);
    L->mean = sp_alloc(bytes);
    if (!L->mean) return SP_ENOMEM;
    L->rstd = L->mean + cols;
    L->s1 = L->rstd + cols;
    L->s2 = L->s1 + cols;
    return SP_OK;
}

static sp_status layernorm_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    layernorm_layer *L = (layernorm_layer *)l;
    const int64_t c = l->in.c, cols = cols_of(l, run->batch);
    const float *gamma = l->param, *beta = l->param + c;
    float *mu = L->mean, *r = L->rstd;
    const float inv_c = 1.0f / (float)c, eps = (float)L->eps;
    /* rows are walked whole so that the inner loops run over contiguous columns */
    for (int64_t j = 0; j < cols; j++) mu[j] = 0.0f, r[j] = 0.0f;
    for (int64_t k = 0; k < c; k++) {
        const float *xk = x + k * cols;
        for (int64_t j = 0; j < cols; j++) mu[j] += xk[j];
    }
    for (int64_t j = 0; j < cols; j++) mu[j] *= inv_c;
    for (int64_t k = 0; k < c; k++) {          /* r holds the sum of squares for now */
        const float *xk = x + k * cols;
        for (int64_t j = 0; j < cols; j++) {
            float d = xk[j] - mu[j];
            r[j] += d * d;
        }
    }
    for (int64_t j = 0; j < cols; j++) r[j] = 1.0f / sqrtf(r[j] * inv_c + eps);
    for (int64_t k = 0; k < c; k++) {
        const float *xk = x + k * cols;
        float *yk = y + k * cols;
        const float g = gamma[k], b = beta[k];
        for (int64_t j = 0; j < cols; j++) yk[j] = (xk[j] - mu[j]) * r[j] * g + b;
    }
    return SP_OK;
}

static sp_status layernorm_backward(sp_layer *l, const sp_run *run, const float *x,
                                    const float *y, const float *dy, float *dx) {
    layernorm_layer *L = (layernorm_layer *)l;
    const int64_t c = l->in.c, cols = cols_of(l, run->batch);
    const float *gamma = l->param, *mu = L->mean, *r = L->rstd;
    float *dgamma = l->grad, *dbeta = l->grad + c, *s1 = L->s1, *s2 = L->s2;
    const float inv_c = 1.0f / (float)c;
    for (int64_t j = 0; j < cols; j++) s1[j] = 0.0f, s2[j] = 0.0f;
    for (int64_t k = 0; k < c; k++) {
        const float *xk = x + k * cols, *dyk = dy + k * cols;
        const float g = gamma[k];
        /* dgamma/dbeta sums in LN_LANES interleaved partial sums (vectorizable, fixed order) */
        float dg[LN_LANES] = {0}, db[LN_LANES] = {0};
        int64_t j0 = 0;
        for (; j0 + LN_LANES <= cols; j0 += LN_LANES)
            for (int u = 0; u < LN_LANES; u++) {
                const int64_t j = j0 + u;
                float xh = (xk[j] - mu[j]) * r[j];
                dg[u] += dyk[j] * xh;
                db[u] += dyk[j];
                s1[j] += dyk[j] * g;
                s2[j] += dyk[j] * g * xh;
            }
        float sg = 0.0f, sb = 0.0f;
        for (int u = 0; u < LN_LANES; u++) sg += dg[u], sb += db[u];
        for (int64_t j = j0; j < cols; j++) {
            float xh = (xk[j] - mu[j]) * r[j];
            sg += dyk[j] * xh;
            sb += dyk[j];
            s1[j] += dyk[j] * g;
            s2[j] += dyk[j] * g * xh;
        }
        dgamma[k] += sg;
        dbeta[k] += sb;
    }
    if (!dx) return SP_OK;
    for (int64_t j = 0; j < cols; j++) s1[j] *= inv_c, s2[j] *= inv_c;
    for (int64_t k = 0; k < c; k++) {
        const float *xk = x + k * cols, *dyk = dy + k * cols;
        float *dxk = dx + k * cols;
        const float g = gamma[k];
        for (int64_t j = 0; j < cols; j++) {
            float xh = (xk[j] - mu[j]) * r[j];
            dxk[j] = r[j] * (dyk[j] * g - s1[j] - xh * s2[j]);
        }
    }
    return SP_OK;
}

static void layernorm_init(sp_layer *l, sp_rng *rng) {
    const int64_t c = l->in.c;
    for (int64_t k = 0; k < c; k++) {
        l->param[k] = 1.0f;
        l->param[c + k] = 0.0f;
    }
}

static void layernorm_free(sp_layer *l) { sp_free(((layernorm_layer *)l)->mean); }

static int layernorm_describe(const sp_layer *l, char *buf, size_t n) {
    const layernorm_layer *L = (const layernorm_layer *)l;
    if (L->eps == LN_EPS_DEFAULT) return snprintf(buf, n, "layernorm");
    return snprintf(buf, n, "layernorm eps=%.17g", L->eps);
}

static const sp_layer_vt layernorm_vt = {
    .kind = "layernorm",
    .forward = layernorm_forward,
    .backward = layernorm_backward,
    .init_params = layernorm_init,
    .reserve = layernorm_reserve,
    .free = layernorm_free,
    .describe = layernorm_describe,
};

sp_status sp_layernorm_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    double eps;
    sp_status st = sp_args_num(a, "eps", LN_EPS_DEFAULT, 1e-12, 1.0, &eps);
    if (st != SP_OK) return st;
    if (2 * in.c > b->max_params)
        return sp_fail(SP_EFORMAT, "config line %d (layernorm): %lld channels exceed the budget "
                       "of %lld parameters", a->line, (long long)in.c, (long long)b->max_params);
    layernorm_layer *L = sp_layer_alloc(sizeof *L, &layernorm_vt, in);
    if (!L) return SP_ENOMEM;
    L->eps = eps;
    L->base.nparam = 2 * in.c;
    *out = &L->base;
    return SP_OK;
}
