/*
 * optim.c - SGD (momentum, Nesterov, L2 weight decay), Adam and AdamW over one flat parameter
 * arena, with the update formulas of torch.optim (so that golden tests can compare step by
 * step):
 *
 *   SGD:   g += wd p;  buf = mu buf + g (buf = g at the first step);
 *          g = nesterov ? g + mu buf : buf;  p -= lr g
 *   Adam:  g += wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *          p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *   AdamW: p *= 1 - lr wd, then Adam without the wd term.
 *
 * The state (SGD momentum; Adam m then v) is one arena, saved whole in checkpoints.
 */
#include <math.h>
#include <string.h>

#include "sparrow/train.h"

#include "../core/internal.h"
#include "../kernels/kernel_table.h"

struct sp_optim {
    sp_optim_config cfg;
    int64_t n;
    int64_t t;          /* steps taken */
    float *state;       /* SGD: n; Adam/AdamW: 2n (m, then v) */
    int64_t nstate;
};

sp_optim_config sp_optim_defaults(sp_optim_kind kind) {
    sp_optim_config c = {.kind = kind, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    if (kind == SP_OPTIM_ADAMW) c.weight_decay = 0.01f;
    return c;
}

const char *sp_optim_name(sp_optim_kind kind) {
    switch (kind) {
    case SP_OPTIM_SGD: return "sgd";
    case SP_OPTIM_ADAM: return "adam";
    case SP_OPTIM_ADAMW: return "adamw";
    }
    return NULL;
}

sp_status sp_optim_new(const sp_optim_config *cfg, int64_t n, sp_optim **out) {
    if (!cfg || !out) return sp_fail(SP_EINVAL, "optim: NULL argument");
    *out = NULL;
    if (!sp_optim_name(cfg->kind)) return sp_fail(SP_EINVAL, "optim: unknown kind %d", (int)cfg->kind);
    if (n < 0) return sp_fail(SP_EINVAL, "optim: %lld parameters", (long long)n);
    if (!(cfg->momentum >= 0.0f && cfg->momentum < 1.0f))
        return sp_fail(SP_EINVAL, "optim: momentum %g not in [0, 1)", (double)cfg->momentum);
    if (cfg->nesterov && cfg->momentum == 0.0f)
        return sp_fail(SP_EINVAL, "optim: Nesterov momentum needs momentum > 0");
    if (!(cfg->weight_decay >= 0.0f && cfg->weight_decay < 1.0f))
        return sp_fail(SP_EINVAL, "optim: weight decay %g not in [0, 1)", (double)cfg->weight_decay);
    if (cfg->kind != SP_OPTIM_SGD &&
        !(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f && cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f &&
          cfg->eps > 0.0f))
        return sp_fail(SP_EINVAL, "optim: betas (%g, %g) must be in [0, 1) and eps %g > 0",
                       (double)cfg->beta1, (double)cfg->beta2, (double)cfg->eps);
    sp_optim *o = sp_calloc(1, sizeof *o);
    if (!o) return SP_ENOMEM;
    o->cfg = *cfg;
    o->n = n;
    o->nstate = cfg->kind == SP_OPTIM_SGD ? (cfg->momentum > 0.0f ? n : 0) : 2 * n;
    o->state = sp_calloc((size_t)o->nstate + 1, sizeof(float));
    if (!o->state) {
        sp_free(o);
        return SP_ENOMEM;
    }
    *out = o;
    return SP_OK;
}

void sp_optim_free(sp_optim *o) {
    if (!o) return;
    sp_free(o->state);
    sp_free(o);
}

/* The update is element-wise, so chunks of the arena can run on any thread in any order and
 * give the same bits. */
#define OPTIM_CHUNK 16384

typedef struct step_ctx {
    const sp_optim *o;
    float *p;
    const float *g;
    float lr, step_size, bc2_sqrt;
    bool first;
    sp_adam_fn adam; /* the dispatched Adam / AdamW variant (kernel_table.h) */
} step_ctx;

static void sgd_chunk(void *vctx, int64_t task) {
    const step_ctx *c = vctx;
    const sp_optim *o = c->o;
    const int64_t i0 = task * OPTIM_CHUNK, i1 = SP_MIN(o->n, i0 + OPTIM_CHUNK);
    const float mu = o->cfg.momentum, wd = o->cfg.weight_decay, lr = c->lr;
    float *p = c->p, *buf = o->state;
    const float *g = c->g;
    for (int64_t i = i0; i < i1; i++) {
        float gi = g[i] + wd * p[i];
        if (mu > 0.0f) {
            buf[i] = c->first ? gi : mu * buf[i] + gi;
            gi = o->cfg.nesterov ? gi + mu * buf[i] : buf[i];
        }
        p[i] -= lr * gi;
    }
}

static void adam_chunk(void *vctx, int64_t task) {
    const step_ctx *c = vctx;
    const sp_optim *o = c->o;
    const int64_t n = o->n, i0 = task * OPTIM_CHUNK, i1 = SP_MIN(n, i0 + OPTIM_CHUNK);
    const sp_adam_coef k = {.b1 = o->cfg.beta1, .b2 = o->cfg.beta2, .eps = o->cfg.eps,
                            .wd = o->cfg.weight_decay, .step_size = c->step_size,
                            .bc2_sqrt = c->bc2_sqrt, .decay = 1.0f - c->lr * o->cfg.weight_decay,
                            .decoupled = o->cfg.kind == SP_OPTIM_ADAMW};
    c->adam(c->p + i0, o->state + i0, o->state + n + i0, c->g + i0, i1 - i0, &k);
}

sp_status sp_optim_step_mt(sp_optim *o, float *p, const float *g, float lr, int nthreads) {
    if (!o || (o->n && (!p || !g))) return sp_fail(SP_EINVAL, "optim_step: NULL argument");
    if (!(lr >= 0.0f) || !isfinite(lr))
        return sp_fail(SP_EINVAL, "optim_step: learning rate %g", (double)lr);
    o->t++;
    step_ctx c = {.o = o, .p = p, .g = g, .lr = lr, .first = o->t == 1};
    const int64_t tasks = (o->n + OPTIM_CHUNK - 1) / OPTIM_CHUNK;
    if (nthreads <= 0) nthreads = sp_threads_available();
    if (o->cfg.kind == SP_OPTIM_SGD) {
        sp_parallel_for(tasks, nthreads, sgd_chunk, &c);
        return SP_OK;
    }
    const float b1 = o->cfg.beta1, b2 = o->cfg.beta2;
    const float bc1 = 1.0f - powf(b1, (float)o->t), bc2 = 1.0f - powf(b2, (float)o->t);
    c.step_size = lr / bc1;
    c.bc2_sqrt = sqrtf(bc2);
    static const sp_kernel *_Atomic adam_k;
    c.adam = (sp_adam_fn)sp_kernel_cached("adam", &adam_k)->fn;
    sp_parallel_for(tasks, nthreads, adam_chunk, &c);
    return SP_OK;
}

sp_status sp_optim_step(sp_optim *o, float *p, const float *g, float lr) {
    return sp_optim_step_mt(o, p, g, lr, 1);
}

sp_status sp_optim_mask_state(sp_optim *o, int64_t offset, const sp_mask *keep) {
    if (!o || !keep) return sp_fail(SP_EINVAL, "optim_mask_state: NULL argument");
    if (offset < 0 || keep->rows < 0 || keep->cols < 0 ||
        keep->rows * keep->cols > o->n - offset)
        return sp_fail(SP_EINVAL, "optim_mask_state: a %lldx%lld pattern at parameter %lld "
                       "leaves the %lld parameters", (long long)keep->rows,
                       (long long)keep->cols, (long long)offset, (long long)o->n);
    const int64_t copies = o->nstate / (o->n > 0 ? o->n : 1); /* 0 (plain SGD), 1 or 2 */
    for (int64_t c = 0; c < copies; c++) {
        float *s = o->state + c * o->n + offset;
        for (int64_t i = 0; i < keep->rows; i++)
            for (int64_t j = 0; j < keep->cols; j++)
                if (!sp_mask_get(keep, i, j)) s[i * keep->cols + j] = 0.0f;
    }
    return SP_OK;
}

sp_status sp_optim_remap(sp_optim *o, int64_t offset, int64_t n, const int64_t *src) {
    if (!o || (n > 0 && !src)) return sp_fail(SP_EINVAL, "optim_remap: NULL argument");
    if (offset < 0 || n < 0 || n > o->n - offset)
        return sp_fail(SP_EINVAL, "optim_remap: %lld entries at parameter %lld leave the %lld "
                       "parameters", (long long)n, (long long)offset, (long long)o->n);
    for (int64_t k = 0; k < n; k++)
        if (src[k] >= n)
            return sp_fail(SP_EINVAL, "optim_remap: src[%lld] = %lld not below %lld",
                           (long long)k, (long long)src[k], (long long)n);
    const int64_t copies = o->nstate / (o->n > 0 ? o->n : 1);
    if (copies == 0 || n == 0) return SP_OK;
    float *tmp = sp_alloc(sizeof(float) * (size_t)n);
    if (!tmp) return SP_ENOMEM;
    for (int64_t c = 0; c < copies; c++) {
        float *s = o->state + c * o->n + offset;
        memcpy(tmp, s, sizeof(float) * (size_t)n);
        for (int64_t k = 0; k < n; k++) s[k] = src[k] >= 0 ? tmp[src[k]] : 0.0f;
    }
    sp_free(tmp);
    return SP_OK;
}

float *sp_optim_state(sp_optim *o) { return o->state; }
int64_t sp_optim_state_size(const sp_optim *o) { return o->nstate; }
int64_t sp_optim_steps(const sp_optim *o) { return o->t; }
void sp_optim_set_steps(sp_optim *o, int64_t steps) { o->t = steps; }
const sp_optim_config *sp_optim_get_config(const sp_optim *o) { return &o->cfg; }

double sp_clip_grad_norm(float *g, int64_t n, double max_norm) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)g[i] * (double)g[i];
    double norm = sqrt(ss);
    if (max_norm > 0.0 && norm > max_norm) {
        float scale = (float)(max_norm / (norm + 1e-6));
        for (int64_t i = 0; i < n; i++) g[i] *= scale;
    }
    return norm;
}
