/*
 * batchnorm.c - batch normalization (Ioffe & Szegedy 2015), forward and backward side by side.
 * One layer covers PyTorch's BatchNorm1d and BatchNorm2d: channel c is normalized over all its
 * N = H W B positions, which in the batch-innermost layout are the contiguous block
 * x[c] (H*W*B floats). A (C, 1, 1) input is BatchNorm1d over the batch; a sequence (d, 1, T)
 * normalizes each feature over T B tokens.
 *
 *   train  mean = sum(x) / N,  var = sum((x - mean)^2) / N   (biased, used to normalize)
 *          xhat = (x - mean) / sqrt(var + eps),  y = gamma xhat + beta
 *          running_mean = (1 - momentum) running_mean + momentum mean
 *          running_var  = (1 - momentum) running_var  + momentum var N / (N - 1)   (unbiased)
 *   eval   the same with running_mean, running_var in place of the batch statistics
 *   backward (train):  dgamma += sum(dy xhat),  dbeta += sum(dy),
 *          dx = gamma inv_std / N (N dy - sum(dy) - xhat sum(dy xhat))
 *   backward (eval):   dx = dy gamma inv_std  (the statistics are constants)
 * Channel sums run in float64 in a fixed order (eight lanes, added pairwise), so results do not
 * depend on the thread count. The mean and 1/std of each channel are kept for backward, which
 * recomputes xhat from x, and so is the mode of the forward pass (sp_model_backward always runs
 * in training mode).
 *
 * Parameters in the arena: gamma (C) then beta (C), initialized to 1 and 0. Non-trained state
 * (l->buffer): running_mean (C) then running_var (C), initialized to 0 and 1.
 *
 * Config: batchnorm [eps=E] (default 1e-5) [momentum=M] (default 0.1).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layer.h"

#include "../core/internal.h"

typedef struct bn_layer {
    sp_layer base;
    int64_t c;
    double eps, momentum;
    double *mean, *inv_std;  /* (C) statistics used by the last forward pass */
    bool last_train;         /* mode of the last forward pass */
} bn_layer;

typedef struct bn_ctx {
    bn_layer *L;
    int64_t n;               /* positions per channel: H W B */
    const float *x, *dy;
    float *y, *dx;
} bn_ctx;

/* sum(a) and sum((a - m)^2) and sum(a * b) in eight float64 lanes, added pairwise: fixed order */
static double lanes_total(const double acc[8]) {
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static double sum_f64(const float *a, int64_t n) {
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j];
    for (; i < n; i++) acc[i & 7] += a[i];
    return lanes_total(acc);
}

static double sumsq_f64(const float *a, double m, int64_t n) {
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            double d = a[i + j] - m;
            acc[j] += d * d;
        }
    for (; i < n; i++) {
        double d = a[i] - m;
        acc[i & 7] += d * d;
    }
    return lanes_total(acc);
}

/* sum(dy * (x - m)) */
static double dot_centered_f64(const float *dy, const float *x, double m, int64_t n) {
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += dy[i + j] * (x[i + j] - m);
    for (; i < n; i++) acc[i & 7] += dy[i] * (x[i] - m);
    return lanes_total(acc);
}

/* ---- forward -------------------------------------------------------------------------------- */

/* Task: channel c in training mode. */
static void bn_train_task(void *vctx, int64_t c) {
    const bn_ctx *t = vctx;
    bn_layer *L = t->L;
    const int64_t n = t->n;
    const float *x = t->x + c * n;
    float *y = t->y + c * n;
    double mean = sum_f64(x, n) / (double)n;
    double var = sumsq_f64(x, mean, n) / (double)n;
    double inv_std = 1.0 / sqrt(var + L->eps);
    L->mean[c] = mean;
    L->inv_std[c] = inv_std;
    const float *gamma = L->base.param, *beta = L->base.param + L->c;
    /* y = scale x + shift with scale = gamma inv_std, shift = beta - mean scale */
    const float scale = (float)(gamma[c] * inv_std);
    const float shift = (float)(beta[c] - mean * gamma[c] * inv_std);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale + shift;
    float *rm = L->base.buffer, *rv = L->base.buffer + L->c;
    const double mo = L->momentum;
    rm[c] = (float)((1.0 - mo) * rm[c] + mo * mean);
    rv[c] = (float)((1.0 - mo) * rv[c] + mo * var * (double)n / (double)(n - 1));
}

/* Task: channel c in evaluation mode. */
static void bn_eval_task(void *vctx, int64_t c) {
    const bn_ctx *t = vctx;
    bn_layer *L = t->L;
    const int64_t n = t->n;
    const float *x = t->x + c * n;
    float *y = t->y + c * n;
    const float *rm = L->base.buffer, *rv = L->base.buffer + L->c;
    double mean = rm[c], inv_std = 1.0 / sqrt((double)rv[c] + L->eps);
    L->mean[c] = mean;
    L->inv_std[c] = inv_std;
    const float *gamma = L->base.param, *beta = L->base.param + L->c;
    const float scale = (float)(gamma[c] * inv_std);
    const float shift = (float)(beta[c] - mean * gamma[c] * inv_std);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale + shift;
}

static sp_status bn_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    bn_layer *L = (bn_layer *)l;
    const int64_t n = l->in.h * l->in.w * run->batch;
    if (run->train && n < 2)
        return sp_fail(SP_ESHAPE, "%s: training needs more than 1 value per channel (got %lld: "
                       "batch %lld of %lldx%lld)", l->name, (long long)n, (long long)run->batch,
                       (long long)l->in.h, (long long)l->in.w);
    bn_ctx t = {.L = L, .n = n, .x = x, .y = y};
    sp_parallel_for(L->c, run->nthreads, run->train ? bn_train_task : bn_eval_task, &t);
    L->last_train = run->train;
    return SP_OK;
}

/* ---- backward ------------------------------------------------------------------------------- */

static void bn_backward_task(void *vctx, int64_t c) {
    const bn_ctx *t = vctx;
    bn_layer *L = t->L;
    const int64_t n = t->n;
    const float *x = t->x + c * n, *dy = t->dy + c * n;
    const double mean = L->mean[c], inv_std = L->inv_std[c];
    const double sum_dy = sum_f64(dy, n);
    const double sum_dy_xhat = dot_centered_f64(dy, x, mean, n) * inv_std;
    float *dgamma = L->base.grad, *dbeta = L->base.grad + L->c;
    const double gamma = L->base.param[c];
    dgamma[c] += (float)sum_dy_xhat;
    dbeta[c] += (float)sum_dy;
    if (!t->dx) return;
    float *dx = t->dx + c * n;
    if (!L->last_train) {
        const float s = (float)(gamma * inv_std);
        for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * s;
        return;
    }
    /* dx = a dy + b (x - mean) + d with a = gamma inv_std, b = -a inv_std sum(dy xhat) / N,
     * d = -a sum(dy) / N: xhat = (x - mean) inv_std folded into b */
    const double a = gamma * inv_std;
    const float fa = (float)a;
    const float fb = (float)(-a * inv_std * sum_dy_xhat / (double)n);
    const float fm = (float)mean;
    const float fd = (float)(-a * sum_dy / (double)n);
    for (int64_t i = 0; i < n; i++) dx[i] = fa * dy[i] + fb * (x[i] - fm) + fd;
}

static sp_status bn_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                             const float *dy, float *dx) {
    bn_layer *L = (bn_layer *)l;
    bn_ctx t = {.L = L, .n = l->in.h * l->in.w * run->batch, .x = x, .dy = dy, .dx = dx};
    sp_parallel_for(L->c, run->nthreads, bn_backward_task, &t);
    return SP_OK;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void bn_init(sp_layer *l, sp_rng *rng) {
    bn_layer *L = (bn_layer *)l;
    for (int64_t c = 0; c < L->c; c++) {
        l->param[c] = 1.0f;          /* gamma */
        l->param[L->c + c] = 0.0f;   /* beta */
        l->buffer[c] = 0.0f;         /* running_mean */
        l->buffer[L->c + c] = 1.0f;  /* running_var */
    }
}

static void bn_free(sp_layer *l) {
    bn_layer *L = (bn_layer *)l;
    sp_free(L->mean);
    sp_free(L->inv_std);
}

/* The shortest of %.15g / %.17g that reads back as v: "0.2", not "0.20000000000000001". */
static int num_str(char *buf, size_t n, double v) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%.15g", v);
    if (strtod(tmp, NULL) != v) snprintf(tmp, sizeof tmp, "%.17g", v);
    return snprintf(buf, n, "%s", tmp);
}

static int bn_describe(const sp_layer *l, char *buf, size_t n) {
    const bn_layer *L = (const bn_layer *)l;
    int len = snprintf(buf, n, "batchnorm");
    if (L->eps != 1e-5) {
        len += snprintf(buf + len, n - (size_t)len, " eps=");
        len += num_str(buf + len, n - (size_t)len, L->eps);
    }
    if (L->momentum != 0.1) {
        len += snprintf(buf + len, n - (size_t)len, " momentum=");
        len += num_str(buf + len, n - (size_t)len, L->momentum);
    }
    return len;
}

static const sp_layer_vt bn_vt = {
    .kind = "batchnorm",
    .forward = bn_forward,
    .backward = bn_backward,
    .init_params = bn_init,
    .free = bn_free,
    .describe = bn_describe,
};

sp_status sp_batchnorm_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    double eps, momentum;
    sp_status st;
    if ((st = sp_args_num(a, "eps", 1e-5, 1e-30, 1.0, &eps)) != SP_OK) return st;
    if ((st = sp_args_num(a, "momentum", 0.1, 0.0, 1.0, &momentum)) != SP_OK) return st;
    if (4 * in.c > b->max_params)
        return sp_fail(SP_EFORMAT, "config line %d (batchnorm): %lld channels exceed the budget "
                       "of %lld parameters", a->line, (long long)in.c, (long long)b->max_params);
    bn_layer *L = sp_layer_alloc(sizeof *L, &bn_vt, in);
    if (!L) return SP_ENOMEM;
    L->c = in.c;
    L->eps = eps;
    L->momentum = momentum;
    L->mean = sp_calloc((size_t)in.c, sizeof(double));
    L->inv_std = sp_calloc((size_t)in.c, sizeof(double));
    if (!L->mean || !L->inv_std) {
        sp_layer_free(&L->base);
        return SP_ENOMEM;
    }
    L->base.nparam = 2 * in.c;
    L->base.nbuffer = 2 * in.c;
    *out = &L->base;
    return SP_OK;
}
