/*
 * trainer.c - the training loop and evaluation: shuffled mini-batches, forward, loss, backward,
 * optional clipping, optimizer step, NaN/Inf guard, progress reports, periodic checkpoints.
 *
 * Everything that decides the weights is a function of (model seed, data seed, step), never of
 * time or thread count: the epoch's order is a Fisher-Yates shuffle from the stream
 * (data seed, epoch), dropout draws from (model seed, step). A run resumed from a checkpoint
 * therefore replays the same steps as an uninterrupted one, bit for bit.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sparrow/train.h"

#include "../core/internal.h"

/* Labels per sample: 1 for images, the context length T for text (one per token). */
static int64_t labels_per_sample(const sp_dataset *d) {
    return d->kind == SP_DATASET_TEXT ? d->label_len : 1;
}

static sp_status check_fit(const sp_model *m, const sp_dataset *d) {
    sp_shape in = sp_model_in(m), out = sp_model_out(m);
    const int64_t L = labels_per_sample(d);
    if (d->kind == SP_DATASET_TEXT && L < 1)
        return sp_fail(SP_EINVAL, "text data without a context length (sp_dataset_set_context)");
    if (in.c * in.h * in.w != d->features)
        return sp_fail(SP_ESHAPE, "the model takes %lld features per sample, the data has %lld",
                       (long long)(in.c * in.h * in.w), (long long)d->features);
    if (d->scale != sp_model_input_scale(m))
        return sp_fail(SP_EINVAL, "the model was trained on features = raw * %g, the data gives "
                       "raw * %g", (double)sp_model_input_scale(m), (double)d->scale);
    if (out.c * out.h * out.w != sp_model_classes(m) * L || sp_model_classes(m) < d->classes) {
        if (L == 1)
            return sp_fail(SP_ESHAPE, "the model has %lld outputs, the data %d classes",
                           (long long)(out.c * out.h * out.w), (int)d->classes);
        return sp_fail(SP_ESHAPE, "the model has %lld outputs of %lld classes, the data %lld "
                       "labels per sample (one per token) of %d classes",
                       (long long)(out.c * out.h * out.w), (long long)sp_model_classes(m),
                       (long long)L, (int)d->classes);
    }
    int64_t nv;
    const int32_t *voc = sp_model_vocab(m, &nv);
    if (voc && d->kind == SP_DATASET_TEXT &&
        (nv != d->classes || memcmp(voc, d->vocab, sizeof(int32_t) * (size_t)nv) != 0))
        return sp_fail(SP_EINVAL, "the text was encoded with another vocabulary (%d characters) "
                       "than the model's (%lld): open it with the model's vocabulary",
                       (int)d->classes, (long long)nv);
    return SP_OK;
}

/* The order of epoch e: a permutation of [0, n) drawn from stream (seed, e). */
static void epoch_order(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    sp_rng r;
    sp_rng_init(&r, seed, 0xda7a0000u + (uint64_t)epoch);
    sp_shuffle_i64(perm, n, &r);
}

sp_status sp_evaluate(sp_model *m, const sp_dataset *d, int64_t batch, int nthreads,
                      double *loss, double *accuracy, int32_t *pred) {
    if (!m || !d || batch < 1) return sp_fail(SP_EINVAL, "evaluate: bad argument");
    sp_status st = check_fit(m, d);
    if (st != SP_OK) return st;
    if (d->n == 0) return sp_fail(SP_EINVAL, "evaluate: empty dataset");
    const int64_t f = d->features, classes = sp_model_classes(m), L = labels_per_sample(d);
    int64_t per_sample = 0; /* activation floats of one sample, over every layer */
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        sp_layer_info li;
        sp_model_layer(m, i, &li);
        per_sample += li.out.c * li.out.h * li.out.w;
        /* attention keeps (heads, T, T) probabilities and as much backward scratch per
         * sample: quadratic in the context (a charlm with ctx=256 holds 0.5 MB per head and
         * sample); heads taken as d / 16, at least 1 (head width 16 or more) */
        if (!strcmp(li.kind, "attention"))
            per_sample += 2 * li.in.w * li.in.w * SP_MAX(1, li.in.c / 16);
    }
    batch = SP_MIN(batch, SP_MAX(1, SP_EVAL_ACT_BYTES / (4 * SP_MAX(1, per_sample))));
    batch = SP_MIN(batch, d->n);
    float *x = sp_alloc(sizeof(float) * (size_t)(f * batch));
    int32_t *y = sp_alloc(sizeof(int32_t) * (size_t)(batch * L));
    int64_t *idx = sp_alloc(sizeof(int64_t) * (size_t)batch);
    st = SP_ENOMEM;
    if (!x || !y || !idx) goto done;
    sp_model_set_threads(m, nthreads);
    double total = 0.0;
    int64_t right = 0;
    for (int64_t s = 0; s < d->n; s += batch) {
        int64_t b = SP_MIN(batch, d->n - s);
        for (int64_t i = 0; i < b; i++) idx[i] = s + i;
        st = sp_dataset_batch(d, idx, b, x, b, y);
        const float *logits;
        if (st == SP_OK) st = sp_model_forward(m, x, b, false, &logits);
        double l = 0.0;
        int64_t c = 0;
        /* logits (classes, b * L): column t*b + j is token t of sample j (L = 1: sample j) */
        const int64_t cols = b * L;
        if (st == SP_OK) st = sp_loss_xent(logits, classes, cols, y, 0.0f, &l, NULL, &c);
        if (st != SP_OK) goto done;
        total += l * (double)b; /* a mean over the sample's L labels, weighted by samples */
        right += c;
        if (pred)
            for (int64_t j = 0; j < cols; j++) {
                int64_t arg = 0;
                for (int64_t k = 1; k < classes; k++)
                    if (logits[k * cols + j] > logits[arg * cols + j]) arg = k;
                pred[(s + j % b) * L + j / b] = (int32_t)arg;
            }
    }
    if (loss) *loss = total / (double)d->n;
    if (accuracy) *accuracy = (double)right / ((double)d->n * (double)L);
    st = SP_OK;
done:
    sp_free(x);
    sp_free(y);
    sp_free(idx);
    return st;
}

/* Running figures of the current epoch. */
typedef struct epoch_stats {
    double loss_sum, seconds; /* summed over samples; training time only */
    double aux_sum;           /* sp_model_aux_loss summed over batches */
    int64_t steps;            /* batches done */
    int64_t right, seen;      /* right of `labels` predictions, over `seen` samples */
    int64_t labels;
    float lr;                 /* of the last step */
} epoch_stats;

/* Where a run stands, for reports: when it started and how much it has to do. */
typedef struct run_clock {
    double start;
    int64_t steps_at_start, total_steps;
} run_clock;

/* The report after batch_index batches of this epoch; eta is left 0 for a run that stops. */
static sp_train_report make_report(const sp_train_opts *opts, const sp_train_state *state,
                                   int64_t batch_index, int64_t batches, const epoch_stats *e,
                                   const run_clock *clock, bool with_eta) {
    sp_train_report r = {
        .epoch = state->epoch, .epochs = opts->epochs, .batch_index = batch_index,
        .batches = batches, .step = state->step, .loss = e->loss_sum / (double)e->seen,
        .accuracy = (double)e->right / (double)e->labels,
        .aux_loss = e->steps > 0 ? e->aux_sum / (double)e->steps : 0.0,
        .samples_per_second = e->seconds > 0 ? (double)e->seen / e->seconds : 0.0,
        .epoch_seconds = e->seconds, .lr = e->lr, .val_loss = NAN, .val_accuracy = NAN};
    int64_t done_steps = state->step - clock->steps_at_start;
    if (with_eta && done_steps > 0)
        r.eta_seconds = (sp_now_seconds() - clock->start) / (double)done_steps *
                        (double)(clock->total_steps - state->step);
    return r;
}

sp_status sp_train(sp_model *m, sp_optim *o, const sp_dataset *train, const sp_dataset *val,
                   const sp_train_opts *opts, sp_train_state *state) {
    if (!m || !o || !train || !opts || !state) return sp_fail(SP_EINVAL, "train: NULL argument");
    if (opts->epochs < 1 || opts->batch < 1)
        return sp_fail(SP_EINVAL, "train: epochs %lld and batch %lld must be >= 1",
                       (long long)opts->epochs, (long long)opts->batch);
    if (!(opts->label_smoothing >= 0.0f && opts->label_smoothing < 1.0f))
        return sp_fail(SP_EINVAL, "train: label smoothing %g not in [0, 1)",
                       (double)opts->label_smoothing);
    sp_status st = check_fit(m, train);
    if (st != SP_OK) return st;
    if (val && (st = check_fit(m, val)) != SP_OK) return st;
    if (train->n == 0) return sp_fail(SP_EINVAL, "train: empty training set");
    const int64_t n = train->n, f = train->features, classes = sp_model_classes(m);
    const int64_t L = labels_per_sample(train); /* labels per sample: 1, or T for text */
    const int64_t B = SP_MIN(opts->batch, n);
    const int64_t batches = (n + B - 1) / B;
    const int64_t total_steps = batches * opts->epochs;
    if (state->batch_index < 0 || state->epoch < 0 || state->step < 0 ||
        state->batch_index > batches || state->epoch > opts->epochs)
        return sp_fail(SP_EINVAL, "train: resume position epoch %lld batch %lld is outside a run "
                       "of %lld epochs of %lld batches", (long long)state->epoch,
                       (long long)state->batch_index, (long long)opts->epochs, (long long)batches);
    sp_schedule sched = opts->sched;
    /* the schedule spans the run: all epochs, or max_steps when that stops it earlier */
    sched.total = opts->max_steps > 0 ? SP_MIN(total_steps, opts->max_steps) : total_steps;
    const int64_t np = sp_model_nparams(m);

    int64_t *perm = sp_alloc(sizeof(int64_t) * (size_t)n);
    float *x = sp_alloc(sizeof(float) * (size_t)(f * B));
    float *dlogits = sp_alloc(sizeof(float) * (size_t)(classes * B * L));
    int32_t *y = sp_alloc(sizeof(int32_t) * (size_t)(B * L));
    st = SP_ENOMEM;
    if (!perm || !x || !dlogits || !y) goto done;
    sp_model_set_threads(m, opts->nthreads);
    const run_clock clock = {sp_now_seconds(), state->step, total_steps};

    for (; state->epoch < opts->epochs; state->epoch++, state->batch_index = 0) {
        epoch_order(perm, n, state->data_seed, state->epoch);
        epoch_stats e = {0};
        for (; state->batch_index < batches; state->batch_index++) {
            if (opts->max_steps > 0 && state->step >= opts->max_steps) {
                if (opts->callback && e.seen > 0) {
                    sp_train_report r = make_report(opts, state, state->batch_index, batches, &e,
                                                    &clock, false);
                    r.epoch_done = r.partial = true;
                    (void)opts->callback(&r, opts->user);
                }
                st = SP_OK;
                goto done;
            }
            if (opts->hook && (st = opts->hook(m, o, state->step, opts->hook_user)) != SP_OK)
                goto done;
            const double t0 = sp_now_seconds();
            const int64_t s0 = state->batch_index * B, b = SP_MIN(B, n - s0);
            st = sp_dataset_batch(train, perm + s0, b, x, b, y);
            if (st != SP_OK) goto done;
            sp_model_set_step(m, state->step);
            const float *logits;
            st = sp_model_forward(m, x, b, true, &logits);
            if (st != SP_OK) goto done;
            double loss;
            int64_t c;
            /* the mean cross-entropy over the b * L label columns: every token of a text
             * window is a prediction of the next one */
            st = sp_loss_xent(logits, classes, b * L, y, opts->label_smoothing, &loss, dlogits,
                              &c);
            if (st != SP_OK) goto done;
            /* MoE: the objective is loss + the auxiliary (load-balancing, z-) losses of the moe
             * layers, whose gradients come from the layers' own backward passes; `loss` stays the
             * data loss in reports (bits per character mean what they say) and the guard checks
             * the sum. 0 for a model without moe. */
            const double aux = sp_model_aux_loss(m);
            if (!isfinite(loss + aux)) {
                const char *where = sp_model_first_nonfinite(m);
                const bool data_bad = !isfinite(loss);
                const double bad = data_bad ? loss : aux;
                st = sp_fail(SP_EINVAL, "step %lld (epoch %lld): the %s is %s (first non-finite "
                             "output: layer %s); lower the learning rate or clip gradients "
                             "(--clip)", (long long)state->step, (long long)state->epoch + 1,
                             data_bad ? "loss" : "auxiliary moe loss (balance, z-loss)",
                             isnan(bad) ? "NaN" : "Inf",
                             where ? where : data_bad ? "none: in the loss" : "none: in the router");
                goto done;
            }
            sp_model_zero_grad(m);
            st = sp_model_backward(m, dlogits, NULL);
            if (st != SP_OK) goto done;
            if ((st = sp_model_check_grads(m)) != SP_OK) {
                char msg[300];
                snprintf(msg, sizeof msg, "%s", sp_last_error());
                st = sp_fail(SP_EINVAL, "step %lld (epoch %lld): %s", (long long)state->step,
                             (long long)state->epoch + 1, msg);
                goto done;
            }
            if (opts->clip_norm > 0.0) sp_clip_grad_norm(sp_model_grads(m), np, opts->clip_norm);
            e.lr = sp_schedule_lr(&sched, state->step);
            st = sp_optim_step_mt(o, sp_model_params(m), sp_model_grads(m), e.lr, opts->nthreads);
            if (st != SP_OK) goto done;
            state->step++;
            e.seconds += sp_now_seconds() - t0;
            e.loss_sum += loss * (double)b;
            e.aux_sum += aux;
            e.steps++;
            e.right += c;
            e.seen += b;
            e.labels += b * L;
            bool last = state->batch_index + 1 == batches;
            if (opts->checkpoint && opts->checkpoint_every > 0 &&
                state->step % opts->checkpoint_every == 0 && !last) {
                sp_train_state at = *state;
                at.batch_index++;
                st = sp_checkpoint_save(opts->checkpoint, m, o, &at, opts->meta);
                if (st != SP_OK) goto done;
            }
            if (opts->callback) {
                sp_train_report r = make_report(opts, state, state->batch_index + 1, batches,
                                                &e, &clock, true);
                if (!opts->callback(&r, opts->user)) {
                    /* *state names the next batch to run, as a checkpoint would */
                    if (++state->batch_index == batches) {
                        state->epoch++;
                        state->batch_index = 0;
                    }
                    st = SP_OK;
                    goto done;
                }
            }
        }
        /* end of the epoch */
        double vl = NAN, va = NAN;
        if (val && val->n > 0) {
            st = sp_evaluate(m, val, 1000, opts->nthreads, &vl, &va, NULL);
            if (st != SP_OK) goto done;
        }
        if (opts->checkpoint) {
            sp_train_state at = {state->step, state->epoch + 1, 0, state->data_seed};
            st = sp_checkpoint_save(opts->checkpoint, m, o, &at, opts->meta);
            if (st != SP_OK) goto done;
        }
        if (opts->callback && e.seen > 0) {
            sp_train_report r = make_report(opts, state, batches, batches, &e, &clock, true);
            r.epoch_done = true;
            r.val_loss = vl;
            r.val_accuracy = va;
            if (!opts->callback(&r, opts->user)) {
                st = SP_OK;
                state->epoch++;
                state->batch_index = 0;
                goto done;
            }
        }
    }
    st = SP_OK;
done:
    sp_free(perm);
    sp_free(x);
    sp_free(dlogits);
    sp_free(y);
    return st;
}
