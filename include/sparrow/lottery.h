/*
 * sparrow/lottery.h - lottery tickets: iterative magnitude pruning with rewinding (Frankle &
 * Carbin 2019, "The Lottery Ticket Hypothesis"; Frankle et al. 2020, "Linear Mode Connectivity
 * and the Lottery Ticket Hypothesis"), with the random re-initialization control that tells a
 * winning ticket from a merely sparse network.
 *
 * Ten rounds of 20% on LeNet-300-100, rewinding to the initialization:
 *
 *     char *cfg = NULL;
 *     sp_model_spec_config("lenet300", &cfg);
 *     sp_lottery_opts o = sp_lottery_defaults();          // 10 rounds, rate 0.2, rewind 0
 *     o.train.epochs = 5;
 *     o.val = val;                                         // early stopping; may be NULL
 *     sp_lottery_round rows[11];
 *     sp_status st = sp_lottery_run(cfg, (sp_shape){1, 28, 28}, 10, 42, train, test, &o, rows);
 *     // rows[r].remaining, .test_accuracy, .early_stop_iter, .reinit_accuracy ...
 *     sp_free(cfg);
 *
 * The procedure. Every linear layer (the output layer too) is put behind a mask (sp_model_prune
 * with format=mask and sparsity 0). Round 0 trains the dense network for T steps (T = epochs x
 * batches, or max_steps when smaller), saving the rewind point: the parameters at step
 * rewind_iter (0: the initialization). After each round, magnitude pruning of the trained
 * weights brings the hidden layers to the cumulative sparsity 1 - (1 - rate)^r and the output
 * layer to 1 - (1 - output_rate)^r (entries pruned earlier stay pruned, so masks are nested).
 * Then the network is rewound: every parameter (biases included) takes its saved value and the
 * mask zeroes the pruned weights; it trains again with a fresh optimizer from step rewind_iter
 * to T, on the same data order and learning-rate schedule (as OpenLTH does). The control: a
 * network of the same config from another seed (model_seed ^ SP_LOTTERY_REINIT_SEED_XOR), given
 * the ticket's masks, trained from step 0 to T in the same way.
 */
#ifndef SPARROW_LOTTERY_H
#define SPARROW_LOTTERY_H

#include "sparrow/core.h"
#include "sparrow/data.h"
#include "sparrow/nn.h"
#include "sparrow/prune.h"
#include "sparrow/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The random re-initialization control is built with seed model_seed ^ this. */
#define SP_LOTTERY_REINIT_SEED_XOR UINT64_C(0x9E3779B97F4A7C15)

/* What a progress event is about. */
typedef enum sp_lottery_phase {
    SP_LOTTERY_DENSE = 0,  /* round 0: the dense network */
    SP_LOTTERY_TICKET = 1, /* round r >= 1: the pruned network rewound */
    SP_LOTTERY_REINIT = 2, /* round r >= 1: the same masks on a random re-initialization */
} sp_lottery_phase;

/* "dense", "ticket", "reinit"; "?" for an unknown value. */
const char *sp_lottery_phase_name(sp_lottery_phase p);

/* One progress event: before a training (done = false; model is the network about to train,
 * rewound and masked) and after it (done = true, with its results). model is borrowed and
 * valid during the call only. */
typedef struct sp_lottery_event {
    int round;
    sp_lottery_phase phase;
    bool done;
    double remaining;        /* weights remaining in the pruned layers, fraction */
    int64_t start_step;      /* the step the training starts from (rewind_iter for a ticket) */
    int64_t steps;           /* T */
    double test_accuracy;    /* done: at step T */
    int64_t early_stop_iter; /* done: -1 without early stopping */
    double early_stop_accuracy;
    double seconds;          /* done: wall time of this training, evaluations included */
    const sp_model *model;
} sp_lottery_event;

typedef void (*sp_lottery_callback)(const sp_lottery_event *e, void *user);

typedef struct sp_lottery_opts {
    int rounds;              /* >= 1 pruning rounds after the dense round 0 */
    double rate;             /* fraction of the remaining hidden-layer weights pruned per round,
                              * in (0, 1) */
    double output_rate;      /* the same for the last linear layer, in [0, 1): Frankle &
                              * Carbin prune it at rate / 2 (0: it stays dense) */
    int64_t rewind_iter;     /* 0: rewind to the initialization; k in (0, T): to step k */
    sp_prune_granularity granularity; /* LAYERWISE (each hidden layer at the same sparsity) or
                              * GLOBAL (one magnitude threshold over the hidden layers) */
    bool reinit_control;     /* also train the random re-initialization each round */
    sp_train_opts train;     /* epochs, batch, sched, label smoothing, clip, nthreads,
                              * max_steps, callback/user (passed through to sp_train). hook and
                              * checkpoint must be NULL: the lottery uses the hook itself */
    sp_optim_config optim;   /* a fresh optimizer of this config for every training */
    uint64_t data_seed;      /* the data order, the same for every training */
    const sp_dataset *val;   /* early stopping: evaluated every eval_every steps and at T; the
                              * step with the lowest loss (the first of equals) is the early-stop
                              * iteration. NULL: the test set is used (optimistic; say so) */
    int64_t eval_every;      /* >= 0; 0: no early-stop tracking (early_stop_iter = -1) */
    sp_lottery_callback callback; /* may be NULL */
    void *user;
} sp_lottery_opts;

/* 10 rounds at rate 0.2 (output layer 0.1), rewind to initialization, layerwise, with the
 * control; Adam (PyTorch defaults) at a constant 1.2e-3, batch 60, 5 epochs (Frankle & Carbin's
 * LeNet settings, shorter), all threads; eval_every 200, data_seed 1. */
sp_lottery_opts sp_lottery_defaults(void);

/* One row of the result table. Round 0 is the dense network (reinit_accuracy NaN). */
typedef struct sp_lottery_round {
    int round;
    double remaining;           /* kept / dense weights over all linear layers (biases and
                                 * other parameters not counted) */
    double hidden_remaining;    /* the same over the hidden linear layers only */
    double test_accuracy;       /* of the ticket after T steps */
    double test_loss;
    int64_t early_stop_iter;    /* step of the lowest validation loss; -1 if not tracked */
    double early_stop_accuracy; /* test accuracy at that step */
    double reinit_accuracy;     /* the control after T steps; NaN if not run */
    double reinit_early_stop_accuracy;
    int64_t reinit_early_stop_iter;
} sp_lottery_round;

/* SP_OK if o is a valid setting for T steps per training (T <= 0: T is not checked), else
 * SP_EINVAL naming the bad field. */
sp_status sp_lottery_check(const sp_lottery_opts *o, int64_t steps);

/* Runs the lottery-ticket experiment on a model built from config text (borrowed) for inputs
 * `in` and `classes` outputs with model_seed, trained on `train` and tested on `test`; fills
 * rows[0..o->rounds] (caller-owned). The models are built and freed inside; same seeds give
 * the same rows bit for bit on any number of threads. SP_EINVAL for a bad option (naming it), a
 * model without a linear layer to prune, or rewind_iter >= T; errors of model building and
 * training pass through. */
sp_status sp_lottery_run(const char *config, sp_shape in, int64_t classes, uint64_t model_seed,
                         const sp_dataset *train, const sp_dataset *test,
                         const sp_lottery_opts *o, sp_lottery_round *rows);

#ifdef __cplusplus
}
#endif
#endif
