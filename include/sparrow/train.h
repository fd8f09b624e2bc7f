/*
 * sparrow/train.h - losses, optimizers, learning-rate schedules and gradient clipping.
 *
 * One training step on a model (sparrow/nn.h) with labels y (B ints) and Adam:
 *
 *     sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
 *     sp_optim *opt = NULL;
 *     sp_optim_new(&oc, sp_model_nparams(m), &opt);
 *     ...
 *     const float *logits;                       // (classes, B)
 *     sp_model_forward(m, x, B, true, &logits);
 *     double loss;
 *     sp_loss_xent(logits, classes, B, y, 0.0f, &loss, dlogits, NULL);
 *     sp_model_zero_grad(m);
 *     sp_model_backward(m, dlogits, NULL);
 *     sp_optim_step(opt, sp_model_params(m), sp_model_grads(m), lr);
 *     ...
 *     sp_optim_free(opt);
 *
 * All of it works on the flat arenas, so each call is one loop over the parameters.
 */
#ifndef SPARROW_TRAIN_H
#define SPARROW_TRAIN_H

#include "sparrow/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- losses --------------------------------------------------------------------------------- */

/* Cross-entropy of logits (classes, cols) (feature-major: column j is one sample or token)
 * against labels[cols] in [0, classes), with label smoothing s in [0, 1): the target is
 * (1 - s) one_hot + s / classes. *loss is the mean over columns. dlogits (classes, cols), if
 * not NULL, gets d(loss)/d(logits). correct, if not NULL, gets the number of columns whose
 * argmax (first maximum) is the label. SP_EINVAL naming a label out of range. */
sp_status sp_loss_xent(const float *logits, int64_t classes, int64_t cols, const int32_t *labels,
                       float smoothing, double *loss, float *dlogits, int64_t *correct);

/* Mean squared error over n values: mean((y - target)^2); dy (n) gets its gradient. */
sp_status sp_loss_mse(const float *y, const float *target, int64_t n, double *loss, float *dy);

/* ---- optimizers ----------------------------------------------------------------------------- */

typedef enum sp_optim_kind {
    SP_OPTIM_SGD = 0,   /* SGD with optional (Nesterov) momentum and L2 weight decay */
    SP_OPTIM_ADAM = 1,  /* Adam (Kingma & Ba 2015), weight decay added to the gradient */
    SP_OPTIM_ADAMW = 2, /* AdamW (Loshchilov & Hutter 2019), decoupled weight decay */
} sp_optim_kind;

typedef struct sp_optim_config {
    sp_optim_kind kind;
    float momentum;     /* SGD */
    bool nesterov;      /* SGD */
    float weight_decay;
    float beta1, beta2, eps; /* Adam, AdamW */
} sp_optim_config;

/* PyTorch's defaults: SGD momentum 0, Adam/AdamW betas (0.9, 0.999), eps 1e-8, weight decay
 * 0 (AdamW 0.01). */
sp_optim_config sp_optim_defaults(sp_optim_kind kind);
/* "sgd", "adam", "adamw"; NULL for an unknown kind. */
const char *sp_optim_name(sp_optim_kind kind);

typedef struct sp_optim sp_optim;

/* An optimizer for n parameters; its state (momentum / moments) is one arena of
 * sp_optim_state_size floats, zero at start. SP_EINVAL for out-of-range settings. */
sp_status sp_optim_new(const sp_optim_config *cfg, int64_t n, sp_optim **out);
void sp_optim_free(sp_optim *o);
/* One update of params with grads at learning rate lr (the same formulas and order of
 * operations as torch.optim). */
sp_status sp_optim_step(sp_optim *o, float *params, const float *grads, float lr);
/* The state arena and the number of steps taken, for checkpoints. */
float *sp_optim_state(sp_optim *o);
int64_t sp_optim_state_size(const sp_optim *o);
int64_t sp_optim_steps(const sp_optim *o);
void sp_optim_set_steps(sp_optim *o, int64_t steps);
const sp_optim_config *sp_optim_get_config(const sp_optim *o);

/* Scales grads so that their global L2 norm is at most max_norm (> 0); returns the norm
 * before clipping (computed in double, in a fixed order). */
double sp_clip_grad_norm(float *grads, int64_t n, double max_norm);

/* ---- learning-rate schedules ---------------------------------------------------------------- */

typedef enum sp_sched_kind {
    SP_SCHED_CONSTANT = 0,
    SP_SCHED_STEP = 1,   /* lr * gamma^floor(t / step_size) */
    SP_SCHED_COSINE = 2, /* min + (lr - min) (1 + cos(pi t / T)) / 2 */
} sp_sched_kind;

typedef struct sp_schedule {
    sp_sched_kind kind;
    double lr;          /* base learning rate */
    int64_t warmup;     /* linear warmup from lr/warmup to lr over the first warmup steps */
    int64_t total;      /* T: steps of the whole run (cosine) */
    int64_t step_size;  /* steps between decays (step) */
    double gamma;       /* decay factor (step) */
    double min_lr;      /* floor of the cosine */
} sp_schedule;

/* Learning rate at step t (0-based). Warmup applies first, then the schedule counts from the
 * end of the warmup. */
float sp_schedule_lr(const sp_schedule *s, int64_t t);
/* "constant", "step", "cosine"; NULL if unknown. */
const char *sp_sched_name(sp_sched_kind kind);

#ifdef __cplusplus
}
#endif
#endif
