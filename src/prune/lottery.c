/*
 * lottery.c - lottery tickets: iterative magnitude pruning with rewinding to the initialization
 * (Frankle & Carbin 2019) or to step k (Frankle et al. 2020), and the random re-initialization
 * control. The procedure is described in sparrow/lottery.h.
 *
 * The network trains with every linear layer behind a mask (format=mask): pruning changes the
 * masks in place (sp_model_prune_masks for the hidden layers, the same selection here for the
 * output layer at its own rate), and rewinding copies the saved parameter arena back and lets
 * each mask zero what it drops. The training hook saves the rewind point at step k and evaluates
 * the early-stopping set every eval_every steps, keeping a copy of the parameters at the lowest
 * loss so that their test accuracy can be measured afterwards.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sparrow/lottery.h"

#include "../core/internal.h"

const char *sp_lottery_phase_name(sp_lottery_phase p) {
    switch (p) {
    case SP_LOTTERY_DENSE: return "dense";
    case SP_LOTTERY_TICKET: return "ticket";
    case SP_LOTTERY_REINIT: return "reinit";
    }
    return "?";
}

sp_lottery_opts sp_lottery_defaults(void) {
    sp_lottery_opts o = {
        .rounds = 10, .rate = 0.2, .output_rate = 0.1, .rewind_iter = 0,
        .granularity = SP_PRUNE_LAYERWISE, .reinit_control = true,
        .train = {.epochs = 5, .batch = 60,
                  .sched = {.kind = SP_SCHED_CONSTANT, .lr = 1.2e-3}, .nthreads = 0},
        .optim = sp_optim_defaults(SP_OPTIM_ADAM), .data_seed = 1, .val = NULL,
        .eval_every = 200};
    return o;
}

sp_status sp_lottery_check(const sp_lottery_opts *o, int64_t steps) {
    if (!o) return sp_fail(SP_EINVAL, "lottery: NULL options");
    if (o->rounds < 1 || o->rounds > 1000)
        return sp_fail(SP_EINVAL, "lottery: rounds %d not in [1, 1000]", o->rounds);
    if (!(o->rate > 0.0 && o->rate < 1.0))
        return sp_fail(SP_EINVAL, "lottery: rate %g not in (0, 1)", o->rate);
    if (!(o->output_rate >= 0.0 && o->output_rate < 1.0))
        return sp_fail(SP_EINVAL, "lottery: output_rate %g not in [0, 1)", o->output_rate);
    if (o->rewind_iter < 0)
        return sp_fail(SP_EINVAL, "lottery: rewind_iter %lld < 0", (long long)o->rewind_iter);
    if (steps > 0 && o->rewind_iter >= steps)
        return sp_fail(SP_EINVAL, "lottery: rewind_iter %lld is not below the %lld steps of one "
                       "round", (long long)o->rewind_iter, (long long)steps);
    if (o->granularity != SP_PRUNE_LAYERWISE && o->granularity != SP_PRUNE_GLOBAL)
        return sp_fail(SP_EINVAL, "lottery: granularity %d: only layerwise or global",
                       (int)o->granularity);
    if (o->eval_every < 0)
        return sp_fail(SP_EINVAL, "lottery: eval_every %lld < 0", (long long)o->eval_every);
    if (o->train.epochs < 1 || o->train.batch < 1)
        return sp_fail(SP_EINVAL, "lottery: train.epochs %lld and train.batch %lld must be >= 1",
                       (long long)o->train.epochs, (long long)o->train.batch);
    if (o->train.max_steps < 0)
        return sp_fail(SP_EINVAL, "lottery: train.max_steps %lld < 0",
                       (long long)o->train.max_steps);
    if (o->train.hook)
        return sp_fail(SP_EINVAL, "lottery: train.hook must be NULL (the lottery uses it)");
    if (o->train.checkpoint)
        return sp_fail(SP_EINVAL, "lottery: train.checkpoint must be NULL");
    return SP_OK;
}

/* ---- one training run ----------------------------------------------------------------------- */

typedef struct run_ctx {
    const sp_lottery_opts *o;
    const sp_dataset *es;     /* early-stopping set */
    int64_t np, nb;           /* parameters, buffers */
    int64_t start;            /* first step of this training */
    /* rewind point: saved before the step rewind_iter of round 0 */
    float *rw_params, *rw_buffers;
    bool save_rewind, rewind_saved;
    /* early stopping */
    float *best;              /* np */
    double best_loss;
    int64_t best_step;
} run_ctx;

static sp_status track(run_ctx *c, sp_model *m, int64_t step) {
    double loss = 0.0;
    sp_status st = sp_evaluate(m, c->es, 1000, c->o->train.nthreads, &loss, NULL, NULL);
    if (st != SP_OK) return st;
    if (c->best_step < 0 || loss < c->best_loss) {
        c->best_loss = loss;
        c->best_step = step;
        memcpy(c->best, sp_model_params(m), sizeof(float) * (size_t)c->np);
    }
    return SP_OK;
}

static sp_status lottery_hook(sp_model *m, sp_optim *opt, int64_t step, void *user) {
    (void)opt;
    run_ctx *c = user;
    if (c->save_rewind && !c->rewind_saved && step == c->o->rewind_iter) {
        memcpy(c->rw_params, sp_model_params(m), sizeof(float) * (size_t)c->np);
        if (c->nb > 0) memcpy(c->rw_buffers, sp_model_buffers(m), sizeof(float) * (size_t)c->nb);
        c->rewind_saved = true;
    }
    if (c->o->eval_every > 0 && step > c->start && step % c->o->eval_every == 0)
        return track(c, m, step);
    return SP_OK;
}

typedef struct run_result {
    double test_accuracy, test_loss, es_accuracy, seconds;
    int64_t es_iter;
} run_result;

/* Trains m from step `start` to T with a fresh optimizer, then measures it. */
static sp_status train_one(sp_model *m, run_ctx *c, const sp_dataset *train,
                           const sp_dataset *test, int64_t start, int64_t batches,
                           run_result *res) {
    const sp_lottery_opts *o = c->o;
    const double t0 = sp_now_seconds();
    sp_optim *opt = NULL;
    float *keep = NULL;
    sp_status st = sp_optim_new(&o->optim, c->np, &opt);
    if (st != SP_OK) return st;
    c->start = start;
    c->best_step = -1;
    c->best_loss = INFINITY;
    sp_train_opts to = o->train;
    to.hook = lottery_hook;
    to.hook_user = c;
    sp_train_state state = {.step = start, .epoch = start / batches,
                            .batch_index = start % batches, .data_seed = o->data_seed};
    if ((st = sp_train(m, opt, train, NULL, &to, &state)) != SP_OK) goto done;
    if (o->eval_every > 0 && (st = track(c, m, state.step)) != SP_OK) goto done;
    if ((st = sp_evaluate(m, test, 1000, o->train.nthreads, &res->test_loss,
                          &res->test_accuracy, NULL)) != SP_OK)
        goto done;
    res->es_iter = o->eval_every > 0 ? c->best_step : -1;
    res->es_accuracy = NAN;
    if (o->eval_every > 0) {
        if (c->best_step == state.step) {
            res->es_accuracy = res->test_accuracy;
        } else {
            /* the test accuracy of the parameters at the early-stop step; then back to T */
            st = SP_ENOMEM;
            keep = sp_alloc(sizeof(float) * (size_t)c->np);
            if (!keep) goto done;
            memcpy(keep, sp_model_params(m), sizeof(float) * (size_t)c->np);
            memcpy(sp_model_params(m), c->best, sizeof(float) * (size_t)c->np);
            st = sp_evaluate(m, test, 1000, o->train.nthreads, NULL, &res->es_accuracy, NULL);
            memcpy(sp_model_params(m), keep, sizeof(float) * (size_t)c->np);
            if (st != SP_OK) goto done;
        }
    }
    res->seconds = sp_now_seconds() - t0;
    st = SP_OK;
done:
    sp_optim_free(opt);
    sp_free(keep);
    return st;
}

/* ---- masks ------------------------------------------------------------------------------------ */

/* Every linear layer of d behind an all-ones mask. */
static sp_status to_masks(const sp_model *d, sp_model **out) {
    sp_prune_spec ms = {.criterion = SP_PRUNE_MAGNITUDE, .granularity = SP_PRUNE_LAYERWISE,
                        .sparsity = 0.0, .format = "mask", .keep_last = false};
    return sp_model_prune(d, &ms, out);
}

static bool is_masked(const sp_model *m, int i, sp_layer_info *li) {
    return sp_model_layer(m, i, li) == SP_OK && !strcmp(li->kind, "linear") &&
           !strcmp(li->format, "mask");
}

/* Kept weights over dense weights of the masked layers: all of them, and the hidden ones. */
static sp_status remaining(const sp_model *m, int last, double *all, double *hidden) {
    int64_t kept = 0, total = 0, hk = 0, ht = 0;
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        sp_layer_info li;
        if (!is_masked(m, i, &li)) continue;
        sp_mask *p = NULL;
        sp_status st = sp_model_layer_pattern(m, i, &p);
        if (st != SP_OK) return st;
        const int64_t k = sp_mask_count(p), t = li.out.c * li.in.c;
        sp_mask_free(p);
        kept += k;
        total += t;
        if (i != last) hk += k, ht += t;
    }
    *all = total > 0 ? (double)kept / (double)total : 1.0;
    *hidden = ht > 0 ? (double)hk / (double)ht : *all;
    return SP_OK;
}

/* Magnitude pruning of one masked layer to `sparsity`, entries already dropped first. */
static sp_status prune_layer(sp_model *m, int i, double sparsity) {
    sp_layer_info li;
    if (!is_masked(m, i, &li)) return sp_fail(SP_EINVAL, "lottery: layer %d is not masked", i);
    const int64_t rows = li.out.c, cols = li.in.c;
    float *w = sp_alloc(sizeof(float) * (size_t)(rows * cols));
    sp_mask *old = NULL, *keep = NULL;
    sp_status st = SP_ENOMEM;
    if (!w) goto done;
    if ((st = sp_model_layer_get_weight(m, i, w, NULL)) != SP_OK ||
        (st = sp_model_layer_pattern(m, i, &old)) != SP_OK)
        goto done;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < cols; k++)
            w[r * cols + k] = sp_mask_get(old, r, k) ? fabsf(w[r * cols + k]) : -INFINITY;
    if ((st = sp_prune_mask_unstructured(rows, cols, w, sparsity, &keep)) != SP_OK) goto done;
    st = sp_model_layer_set_pattern(m, i, keep);
done:
    sp_free(w);
    sp_mask_free(old);
    sp_mask_free(keep);
    return st;
}

/* Round r's masks from the trained weights of m: hidden layers at 1 - (1 - rate)^r (layerwise
 * or global), the last at 1 - (1 - output_rate)^r. */
static sp_status prune_round(sp_model *m, const sp_lottery_opts *o, int r, int last,
                             int nmasked) {
    sp_status st = SP_OK;
    if (nmasked > 1) {
        sp_prune_spec sp = {.criterion = SP_PRUNE_MAGNITUDE, .granularity = o->granularity,
                            .keep_last = true};
        st = sp_model_prune_masks(m, NULL, &sp, 1.0 - pow(1.0 - o->rate, r));
    }
    if (st == SP_OK && o->output_rate > 0.0)
        st = prune_layer(m, last, 1.0 - pow(1.0 - o->output_rate, r));
    return st;
}

/* m's parameters and buffers from the rewind point, every mask re-applied. */
static sp_status rewind_to(sp_model *m, const run_ctx *c) {
    memcpy(sp_model_params(m), c->rw_params, sizeof(float) * (size_t)c->np);
    if (c->nb > 0) memcpy(sp_model_buffers(m), c->rw_buffers, sizeof(float) * (size_t)c->nb);
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        sp_layer_info li;
        if (!is_masked(m, i, &li)) continue;
        sp_mask *p = NULL;
        sp_status st = sp_model_layer_pattern(m, i, &p);
        if (st == SP_OK) st = sp_model_layer_set_pattern(m, i, p);
        sp_mask_free(p);
        if (st != SP_OK) return st;
    }
    return SP_OK;
}

/* The control network: the same config from another seed, behind the ticket's masks. */
static sp_status build_reinit(const char *config, sp_shape in, int64_t classes, uint64_t seed,
                              const sp_model *ticket, sp_model **out) {
    sp_model *d = NULL, *m = NULL;
    *out = NULL;
    sp_status st = sp_model_new(config, in, classes, seed ^ SP_LOTTERY_REINIT_SEED_XOR, &d);
    if (st == SP_OK) st = to_masks(d, &m);
    sp_model_free(d);
    for (int i = 0; st == SP_OK && i < sp_model_nlayers(ticket); i++) {
        sp_layer_info li;
        if (!is_masked(ticket, i, &li)) continue;
        sp_mask *p = NULL;
        st = sp_model_layer_pattern(ticket, i, &p);
        if (st == SP_OK) st = sp_model_layer_set_pattern(m, i, p);
        sp_mask_free(p);
    }
    if (st != SP_OK) {
        sp_model_free(m);
        return st;
    }
    *out = m;
    return SP_OK;
}

/* ---- the experiment --------------------------------------------------------------------------- */

static void emit(const sp_lottery_opts *o, int round, sp_lottery_phase ph, bool done,
                 double rem, int64_t start, int64_t steps, const run_result *res,
                 const sp_model *m) {
    if (!o->callback) return;
    sp_lottery_event e = {.round = round, .phase = ph, .done = done, .remaining = rem,
                          .start_step = start, .steps = steps, .test_accuracy = NAN,
                          .early_stop_iter = -1, .early_stop_accuracy = NAN, .model = m};
    if (done && res) {
        e.test_accuracy = res->test_accuracy;
        e.early_stop_iter = res->es_iter;
        e.early_stop_accuracy = res->es_accuracy;
        e.seconds = res->seconds;
    }
    o->callback(&e, o->user);
}

sp_status sp_lottery_run(const char *config, sp_shape in, int64_t classes, uint64_t model_seed,
                         const sp_dataset *train, const sp_dataset *test,
                         const sp_lottery_opts *o, sp_lottery_round *rows) {
    if (!config || !train || !test || !o || !rows)
        return sp_fail(SP_EINVAL, "lottery: NULL argument");
    sp_status st = sp_lottery_check(o, 0);
    if (st != SP_OK) return st;
    if (train->n < 1) return sp_fail(SP_EINVAL, "lottery: empty training set");
    if (train->kind == SP_DATASET_TEXT || test->kind == SP_DATASET_TEXT)
        return sp_fail(SP_EUNSUPPORTED, "lottery: text data (one label per token) is not "
                       "supported; lottery runs take labelled samples such as images");
    const int64_t B = SP_MIN(o->train.batch, train->n);
    const int64_t batches = (train->n + B - 1) / B;
    int64_t T = 0;
    if (__builtin_mul_overflow(batches, o->train.epochs, &T))
        return sp_fail(SP_EOVERFLOW, "lottery: epochs x batches overflows");
    if (o->train.max_steps > 0) T = SP_MIN(T, o->train.max_steps);
    if ((st = sp_lottery_check(o, T)) != SP_OK) return st;

    sp_model *d = NULL, *m = NULL, *ri = NULL;
    run_ctx c = {.o = o, .es = o->val ? o->val : test};
    if ((st = sp_model_new(config, in, classes, model_seed, &d)) != SP_OK) return st;
    st = to_masks(d, &m);
    sp_model_free(d);
    if (st != SP_OK) return st;
    /* the masked layers: the output layer is the last of them */
    int last = -1, nmasked = 0;
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        sp_layer_info li;
        if (is_masked(m, i, &li)) last = i, nmasked++;
    }
    if (nmasked == 0) {
        st = sp_fail(SP_EINVAL, "lottery: the model has no linear layer to prune");
        goto done;
    }
    if (nmasked == 1 && o->output_rate == 0.0) {
        st = sp_fail(SP_EINVAL, "lottery: the model's only linear layer is the output layer and "
                     "output_rate is 0: nothing to prune");
        goto done;
    }
    c.np = sp_model_nparams(m);
    c.nb = sp_model_nbuffers(m);
    st = SP_ENOMEM;
    c.rw_params = sp_alloc(sizeof(float) * (size_t)c.np);
    c.rw_buffers = sp_alloc(sizeof(float) * (size_t)(c.nb > 0 ? c.nb : 1));
    c.best = sp_alloc(sizeof(float) * (size_t)c.np);
    if (!c.rw_params || !c.rw_buffers || !c.best) goto done;

    /* round 0: the dense network; the rewind point is saved before step rewind_iter */
    c.save_rewind = true;
    run_result res = {0};
    emit(o, 0, SP_LOTTERY_DENSE, false, 1.0, 0, T, NULL, m);
    if ((st = train_one(m, &c, train, test, 0, batches, &res)) != SP_OK) goto done;
    c.save_rewind = false;
    if (!c.rewind_saved) {
        st = sp_fail(SP_EINVAL, "lottery: the rewind point (step %lld) was never reached",
                     (long long)o->rewind_iter);
        goto done;
    }
    emit(o, 0, SP_LOTTERY_DENSE, true, 1.0, 0, T, &res, m);
    rows[0] = (sp_lottery_round){.round = 0, .remaining = 1.0, .hidden_remaining = 1.0,
                                 .test_accuracy = res.test_accuracy, .test_loss = res.test_loss,
                                 .early_stop_iter = res.es_iter,
                                 .early_stop_accuracy = res.es_accuracy,
                                 .reinit_accuracy = NAN, .reinit_early_stop_accuracy = NAN,
                                 .reinit_early_stop_iter = -1};

    for (int r = 1; r <= o->rounds; r++) {
        sp_lottery_round *row = &rows[r];
        *row = (sp_lottery_round){.round = r, .reinit_accuracy = NAN,
                                  .reinit_early_stop_accuracy = NAN,
                                  .reinit_early_stop_iter = -1};
        if ((st = prune_round(m, o, r, last, nmasked)) != SP_OK) goto done;
        if ((st = rewind_to(m, &c)) != SP_OK) goto done;
        if ((st = remaining(m, last, &row->remaining, &row->hidden_remaining)) != SP_OK)
            goto done;
        emit(o, r, SP_LOTTERY_TICKET, false, row->remaining, o->rewind_iter, T, NULL, m);
        if ((st = train_one(m, &c, train, test, o->rewind_iter, batches, &res)) != SP_OK)
            goto done;
        emit(o, r, SP_LOTTERY_TICKET, true, row->remaining, o->rewind_iter, T, &res, m);
        row->test_accuracy = res.test_accuracy;
        row->test_loss = res.test_loss;
        row->early_stop_iter = res.es_iter;
        row->early_stop_accuracy = res.es_accuracy;
        if (!o->reinit_control) continue;
        if ((st = build_reinit(config, in, classes, model_seed, m, &ri)) != SP_OK) goto done;
        emit(o, r, SP_LOTTERY_REINIT, false, row->remaining, 0, T, NULL, ri);
        if ((st = train_one(ri, &c, train, test, 0, batches, &res)) != SP_OK) goto done;
        emit(o, r, SP_LOTTERY_REINIT, true, row->remaining, 0, T, &res, ri);
        row->reinit_accuracy = res.test_accuracy;
        row->reinit_early_stop_iter = res.es_iter;
        row->reinit_early_stop_accuracy = res.es_accuracy;
        sp_model_free(ri);
        ri = NULL;
    }
    st = SP_OK;
done:
    sp_model_free(m);
    sp_model_free(ri);
    sp_free(c.rw_params);
    sp_free(c.rw_buffers);
    sp_free(c.best);
    return st;
}
