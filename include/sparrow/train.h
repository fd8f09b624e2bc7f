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
#include "sparrow/data.h"
#include "sparrow/nn.h"

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
/* The same on nthreads threads (<= 0: all), with identical results. */
sp_status sp_optim_step_mt(sp_optim *o, float *params, const float *grads, float lr,
                           int nthreads);
/* The state arena and the number of steps taken, for checkpoints. */
float *sp_optim_state(sp_optim *o);
int64_t sp_optim_state_size(const sp_optim *o);
int64_t sp_optim_steps(const sp_optim *o);
void sp_optim_set_steps(sp_optim *o, int64_t steps);
const sp_optim_config *sp_optim_get_config(const sp_optim *o);
/* Zeroes the state (momentum, Adam moments) of the parameters that a pattern drops: parameter
 * offset + i * keep->cols + j for every (i, j) not set in keep. A weight pruned to zero whose
 * gradient is masked then stays exactly zero under every optimizer. SP_EINVAL if the range
 * leaves the parameters. */
sp_status sp_optim_mask_state(sp_optim *o, int64_t offset, const sp_mask *keep);
/* Re-orders the state of parameters [offset, offset + n) after a topology change: entry k takes
 * the state of entry offset + src[k], or zero where src[k] < 0 (sp_model_layer_rewire's src).
 * SP_EINVAL if the range leaves the parameters or a src index leaves [0, n). */
sp_status sp_optim_remap(sp_optim *o, int64_t offset, int64_t n, const int64_t *src);

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


/* ---- checkpoints ---------------------------------------------------------------------------- */

/* Where a training run stands: saved in checkpoints so that a resumed run continues exactly. */
typedef struct sp_train_state {
    int64_t step;          /* optimizer steps taken */
    int64_t epoch;         /* current epoch, from 0 */
    int64_t batch_index;   /* batches of this epoch already done */
    uint64_t data_seed;    /* seed of the per-epoch shuffles: set it for a fresh run */
} sp_train_state;

/* Writes model (architecture, parameters, state buffers), the optimizer (may be NULL), the
 * training state (may be NULL) and `meta` (free text, e.g. the training settings; may be NULL)
 * to path atomically: a temporary file in the same directory, fsync, rename. A crash or error
 * leaves any previous file at path untouched. Format: docs/FORMAT.md (version 2; version-1
 * files still load). */
sp_status sp_checkpoint_save(const char *path, const sp_model *m, const sp_optim *o,
                             const sp_train_state *ts, const char *meta);

/* What a checkpoint holds; free with sp_checkpoint_free. */
typedef struct sp_checkpoint {
    sp_model *model;       /* owned */
    sp_optim *optim;       /* owned; NULL if the file has no optimizer */
    sp_train_state state;
    bool has_state;
    char *meta;            /* owned; "" if none */
} sp_checkpoint;

/* Loads a checkpoint file. Every count, size and offset is checked against the file size
 * before anything is allocated, and the CRC-32 of the whole file is verified: a truncated or
 * corrupt file gives SP_EFORMAT (or SP_EIO for a missing one) with a message naming the bad
 * field. Returns owned contents in *out. */
sp_status sp_checkpoint_load(const char *path, sp_checkpoint *out);
/* The same from bytes in memory (borrowed). */
sp_status sp_checkpoint_parse(const uint8_t *bytes, size_t len, sp_checkpoint *out);
/* Frees the contents (not the struct); accepts a zeroed struct. */
void sp_checkpoint_free(sp_checkpoint *c);

/* CRC-32 (IEEE 802.3, the one of zlib and PNG) of len bytes, continuing from crc (0 to start). */
uint32_t sp_crc32(uint32_t crc, const void *bytes, size_t len);

/* ---- the training loop ---------------------------------------------------------------------- */

/* One progress report: after every step (the caller decides what to print) and once more at
 * the end of each epoch (epoch_done, with validation figures when a validation set is given). */
typedef struct sp_train_report {
    int64_t epoch, epochs;         /* epoch from 0 */
    int64_t batch_index, batches;  /* batches done in this epoch, of batches per epoch */
    int64_t step;                  /* optimizer steps done in total */
    double loss, accuracy;         /* running means over this epoch's batches so far; loss is
                                    * the data loss (cross-entropy) without the moe terms */
    double aux_loss;               /* running mean over this epoch's batches of
                                    * sp_model_aux_loss (the weighted moe balance and z-losses
                                    * that training adds to loss); 0 without moe layers */
    double samples_per_second;     /* training samples over training time, this epoch */
    double epoch_seconds;          /* training time of this epoch so far */
    double eta_seconds;            /* estimate for the rest of the run */
    float lr;                      /* learning rate of the last step */
    bool epoch_done;               /* end of an epoch, or of a run stopped by max_steps */
    bool partial;                  /* epoch_done because max_steps stopped the run mid-epoch */
    double val_loss, val_accuracy; /* NAN without a validation set or before the epoch ends */
} sp_train_report;

/* Called with every report; returning false stops training right there, as if the process had
 * been killed (no further steps, no checkpoint written for the stop; sp_train returns SP_OK
 * with *state at the stop). */
typedef bool (*sp_train_callback)(const sp_train_report *r, void *user);

/* Called before every optimizer step with the number of steps done so far (from 0): a place
 * to change the model between steps, as gradual pruning does (sp_prune_gradual_hook). An error
 * stops training and is returned by sp_train. It must depend only on its arguments and its own
 * state (not on time) so that resumed runs replay exactly. */
typedef sp_status (*sp_train_hook)(sp_model *m, sp_optim *o, int64_t step, void *user);

typedef struct sp_train_opts {
    int64_t epochs;            /* >= 1 */
    int64_t batch;             /* >= 1 */
    sp_schedule sched;         /* lr, kind, warmup, ...; total is set from epochs x batches
                                * (or max_steps, when smaller) */
    float label_smoothing;     /* [0, 1) */
    double clip_norm;          /* global gradient-norm clip, 0 = off */
    int nthreads;              /* <= 0: all */
    const char *checkpoint;    /* written every checkpoint_every steps and after each epoch */
    int64_t checkpoint_every;  /* steps; 0 = only after each epoch */
    int64_t max_steps;         /* stop once this many steps are done in total (0 = no limit) */
    const char *meta;          /* saved in checkpoints (the settings, to resume with) */
    sp_train_callback callback;
    void *user;
    sp_train_hook hook;        /* may be NULL */
    void *hook_user;
} sp_train_opts;

/* Trains m with o on `train`, shuffled each epoch by (seed, epoch), continuing from *state
 * (zero it for a fresh run; a checkpoint's state to resume) and updating it. Evaluates `val`
 * (may be NULL) after each epoch. Text data (label_len = T labels per sample) trains on the
 * mean cross-entropy over every token of the batch (the model's output must be classes x T:
 * one prediction per position); reports then count accuracy per token and samples are
 * windows. The objective is the loss plus sp_model_aux_loss (moe layers); a NaN or Inf in
 * either, or in a gradient, stops training with SP_EINVAL
 * naming the step and the layer. Returns the first error of a step or checkpoint write. */
sp_status sp_train(sp_model *m, sp_optim *o, const sp_dataset *train, const sp_dataset *val,
                   const sp_train_opts *opts, sp_train_state *state);

/* Mean cross-entropy and accuracy of m on d in evaluation mode, batch by batch; pred (d->n), if
 * not NULL, gets each sample's predicted class. Text data: both are per token (the loss in
 * nats per character; bits per character = loss / ln 2), and pred (d->n * d->label_len) gets
 * pred[i * T + t], the prediction after token t of window i. A model with a vocabulary
 * (sp_model_vocab) refuses text encoded with another one (SP_EINVAL). batch is an upper bound:
 * a model whose activations at that batch would exceed SP_EVAL_ACT_BYTES is run in smaller
 * batches (a million hidden units take 8 MB of activations per sample; attention adds its
 * T x T caches per head, heads estimated as width / 16). SP_ESHAPE if the model does not fit
 * the data. */
#define SP_EVAL_ACT_BYTES ((int64_t)512 << 20)
sp_status sp_evaluate(sp_model *m, const sp_dataset *d, int64_t batch, int nthreads,
                      double *loss, double *accuracy, int32_t *pred);

#ifdef __cplusplus
}
#endif
#endif
