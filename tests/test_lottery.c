/*
 * test_lottery.c - lottery tickets on the toy dataset: the fraction of weights remaining per
 * round, nested masks, rewinding to the initialization and to step k (bit-exact), the random
 * re-initialization control (same masks, other values), determinism over thread counts, and
 * one error per bad option.
 */
#include <math.h>
#include <stdlib.h>

#include "test.h"
#include "toy_data.h"

static const sp_shape TOY_IN = {1, 4, 4};
static const char *TOY_MLP = "flatten\nlinear out=24\nrelu\nlinear out=16\nrelu\n"
                             "linear out=classes\n";
static const int LIN[3] = {1, 3, 5}; /* the linear layers; 5 is the output layer */

static sp_lottery_opts toy_opts(void) {
    sp_lottery_opts o = sp_lottery_defaults();
    o.rounds = 3;
    o.rate = 0.5;
    o.output_rate = 0.25;
    o.train.epochs = 2;
    o.train.batch = 16;
    o.train.sched = (sp_schedule){.kind = SP_SCHED_CONSTANT, .lr = 0.01};
    o.train.nthreads = 1;
    o.eval_every = 4;
    o.data_seed = 5;
    return o;
}

/* What the callback saw: the patterns and weights of every network just before it trains. */
typedef struct probe {
    sp_mask *pat[8][3];       /* [event][linear layer] */
    float *w[8][3];
    sp_lottery_phase phase[8];
    int round[8];
    int n;
    int done_events;
} probe;

static void record(const sp_lottery_event *e, void *user) {
    probe *p = user;
    if (e->done) {
        p->done_events++;
        return;
    }
    if (p->n >= 8) return;
    for (int k = 0; k < 3; k++) {
        sp_layer_info li;
        sp_model_layer(e->model, LIN[k], &li);
        sp_model_layer_pattern(e->model, LIN[k], &p->pat[p->n][k]);
        p->w[p->n][k] = malloc(sizeof(float) * (size_t)(li.out.c * li.in.c));
        sp_model_layer_get_weight(e->model, LIN[k], p->w[p->n][k], NULL);
    }
    p->phase[p->n] = e->phase;
    p->round[p->n] = e->round;
    p->n++;
}

static void probe_free(probe *p) {
    for (int i = 0; i < p->n; i++)
        for (int k = 0; k < 3; k++) {
            sp_mask_free(p->pat[i][k]);
            free(p->w[i][k]);
        }
}

static const int64_t ROWS[3] = {24, 16, 4}, COLS[3] = {16, 24, 16};

/* Kept entries of p (layer k) hold exactly want's values and dropped ones are zero: counts the
 * mismatches. */
static int64_t rewind_mismatches(const probe *p, int ev, int k, const float *want) {
    int64_t bad = 0;
    for (int64_t r = 0; r < ROWS[k]; r++)
        for (int64_t c = 0; c < COLS[k]; c++) {
            float got = p->w[ev][k][r * COLS[k] + c];
            float exp = sp_mask_get(p->pat[ev][k], r, c) ? want[r * COLS[k] + c] : 0.0f;
            bad += memcmp(&got, &exp, sizeof got) != 0;
        }
    return bad;
}

TEST(lottery_prunes_at_the_rate_with_nested_masks_and_rewinds_to_init) {
    sp_dataset *d = test_toy_dataset(160, 31), *t = test_toy_dataset(64, 32);
    sp_model *init = NULL;
    probe p = {0};
    if (!d || !t) goto done;
    sp_lottery_opts o = toy_opts();
    o.callback = record;
    o.user = &p;
    sp_lottery_round rows[4];
    CHECK_OK(sp_lottery_run(TOY_MLP, TOY_IN, 4, 11, d, t, &o, rows));
    CHECK_EQ(p.n, 7); /* dense, then ticket + reinit for 3 rounds */
    CHECK_EQ(p.done_events, 7);
    CHECK_OK(sp_model_new(TOY_MLP, TOY_IN, 4, 11, &init));
    float w0[3][24 * 24];
    for (int k = 0; k < 3; k++) CHECK_OK(sp_model_layer_get_weight(init, LIN[k], w0[k], NULL));
    /* round 0 starts from the initialization, every mask full */
    CHECK(p.phase[0] == SP_LOTTERY_DENSE);
    for (int k = 0; k < 3; k++) {
        CHECK_EQ(sp_mask_count(p.pat[0][k]), ROWS[k] * COLS[k]);
        CHECK_EQ(rewind_mismatches(&p, 0, k, w0[k]), 0);
    }
    CHECK(rows[0].remaining == 1.0 && rows[0].round == 0);
    CHECK(isnan(rows[0].reinit_accuracy));
    for (int r = 1; r <= 3; r++) {
        const int ev = 2 * r - 1; /* the ticket; ev + 1 its control */
        CHECK(p.phase[ev] == SP_LOTTERY_TICKET && p.round[ev] == r);
        CHECK(p.phase[ev + 1] == SP_LOTTERY_REINIT && p.round[ev + 1] == r);
        int64_t kept = 0, total = 0;
        for (int k = 0; k < 3; k++) {
            const double keep = pow(k == 2 ? 0.75 : 0.5, r);
            const int64_t n = ROWS[k] * COLS[k], want = llround(keep * (double)n);
            const int64_t got = sp_mask_count(p.pat[ev][k]);
            CHECK_MSG(got == want, "round %d layer %d: %lld kept, want %lld", r, k,
                      (long long)got, (long long)want);
            kept += got;
            total += n;
            /* nested: nothing kept now was dropped a round before */
            int64_t revived = 0;
            for (int64_t i = 0; i < ROWS[k]; i++)
                for (int64_t j = 0; j < COLS[k]; j++)
                    revived += sp_mask_get(p.pat[ev][k], i, j) &&
                               !sp_mask_get(p.pat[ev - (r == 1 ? 1 : 2)][k], i, j);
            CHECK_EQ(revived, 0);
            /* rewound: kept weights are the initial values bit for bit, dropped ones zero */
            CHECK_EQ(rewind_mismatches(&p, ev, k, w0[k]), 0);
            /* the control: the same mask, other values on it */
            int64_t same_mask = 0, same_value = 0;
            for (int64_t i = 0; i < ROWS[k]; i++)
                for (int64_t j = 0; j < COLS[k]; j++) {
                    bool a = sp_mask_get(p.pat[ev][k], i, j);
                    same_mask += a == sp_mask_get(p.pat[ev + 1][k], i, j);
                    same_value += a && p.w[ev][k][i * COLS[k] + j] ==
                                           p.w[ev + 1][k][i * COLS[k] + j];
                }
            CHECK_EQ(same_mask, n);
            CHECK_MSG(same_value <= got / 20, "round %d layer %d: the control shares %lld of "
                      "%lld values", r, k, (long long)same_value, (long long)got);
        }
        CHECK(fabs(rows[r].remaining - (double)kept / (double)total) < 1e-12);
        CHECK(fabs(rows[r].hidden_remaining - pow(0.5, r)) < 1e-12);
        CHECK(rows[r].test_accuracy >= 0.0 && rows[r].test_accuracy <= 1.0);
        CHECK(rows[r].reinit_accuracy >= 0.0 && rows[r].reinit_accuracy <= 1.0);
        CHECK(rows[r].early_stop_iter >= 4 && rows[r].early_stop_iter <= 20);
        CHECK(rows[r].early_stop_iter % 4 == 0);
        CHECK(rows[r].early_stop_accuracy >= 0.0 && rows[r].early_stop_accuracy <= 1.0);
    }
    /* the toy task is easy: the dense network learns it */
    CHECK_MSG(rows[0].test_accuracy > 0.6, "dense accuracy %g", rows[0].test_accuracy);
done:
    probe_free(&p);
    sp_model_free(init);
    sp_dataset_free(d);
    sp_dataset_free(t);
}

TEST(lottery_rewinds_to_step_k_exactly) {
    sp_dataset *d = test_toy_dataset(160, 33), *t = test_toy_dataset(64, 34);
    sp_model *dense = NULL, *ref = NULL;
    sp_optim *opt = NULL;
    probe p = {0};
    if (!d || !t) goto done;
    sp_lottery_opts o = toy_opts();
    o.rounds = 2;
    o.rewind_iter = 7;
    o.reinit_control = false;
    o.callback = record;
    o.user = &p;
    sp_lottery_round rows[3];
    CHECK_OK(sp_lottery_run(TOY_MLP, TOY_IN, 4, 12, d, t, &o, rows));
    CHECK_EQ(p.n, 3);
    /* the reference: the same masked network trained 7 steps on the same data order */
    CHECK_OK(sp_model_new(TOY_MLP, TOY_IN, 4, 12, &dense));
    sp_prune_spec ms = {.granularity = SP_PRUNE_LAYERWISE, .format = "mask"};
    CHECK_OK(sp_model_prune(dense, &ms, &ref));
    if (!ref) goto done;
    CHECK_OK(sp_optim_new(&o.optim, sp_model_nparams(ref), &opt));
    sp_train_opts to = o.train;
    to.callback = NULL;
    to.max_steps = 7;
    sp_train_state st = {.data_seed = o.data_seed};
    CHECK_OK(sp_train(ref, opt, d, NULL, &to, &st));
    CHECK_EQ(st.step, 7);
    float wk[3][24 * 24];
    for (int k = 0; k < 3; k++) CHECK_OK(sp_model_layer_get_weight(ref, LIN[k], wk[k], NULL));
    for (int ev = 1; ev < p.n; ev++)
        for (int k = 0; k < 3; k++) CHECK_EQ(rewind_mismatches(&p, ev, k, wk[k]), 0);
    for (int r = 1; r <= 2; r++) {
        CHECK(rows[r].early_stop_iter > 7 && rows[r].early_stop_iter <= 20);
        CHECK(isnan(rows[r].reinit_accuracy));
    }
done:
    probe_free(&p);
    sp_model_free(dense);
    sp_model_free(ref);
    sp_optim_free(opt);
    sp_dataset_free(d);
    sp_dataset_free(t);
}

TEST(lottery_same_seed_same_rows_on_1_and_2_threads) {
    sp_dataset *d = test_toy_dataset(160, 35), *t = test_toy_dataset(64, 36);
    if (!d || !t) goto done;
    sp_lottery_opts o = toy_opts();
    o.rounds = 2;
    o.granularity = SP_PRUNE_GLOBAL;
    o.val = t;
    sp_lottery_round a[3], b[3];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    CHECK_OK(sp_lottery_run(TOY_MLP, TOY_IN, 4, 13, d, t, &o, a));
    o.train.nthreads = 2;
    CHECK_OK(sp_lottery_run(TOY_MLP, TOY_IN, 4, 13, d, t, &o, b));
    CHECK(memcmp(a, b, sizeof a) == 0);
    /* global: the hidden layers together keep (1 - rate)^r */
    CHECK(fabs(a[2].hidden_remaining - 0.25) < 1e-12);
done:
    sp_dataset_free(d);
    sp_dataset_free(t);
}

static sp_status hook_stub(sp_model *m, sp_optim *o, int64_t step, void *user) {
    (void)m, (void)o, (void)step, (void)user;
    return SP_OK;
}

TEST(lottery_refuses_bad_options_each_with_its_message) {
    sp_dataset *d = test_toy_dataset(32, 37);
    if (!d) return;
    sp_lottery_round rows[12];
    struct {
        const char *needle;
        sp_lottery_opts o;
    } cases[12];
    int n = 0;
    for (int i = 0; i < 12; i++) cases[i].o = toy_opts();
    cases[n].needle = "rounds 0";
    cases[n++].o.rounds = 0;
    cases[n].needle = "rate 0 not in (0, 1)";
    cases[n++].o.rate = 0.0;
    cases[n].needle = "rate 1 not in (0, 1)";
    cases[n++].o.rate = 1.0;
    cases[n].needle = "rate nan";
    cases[n++].o.rate = NAN;
    cases[n].needle = "output_rate 1";
    cases[n++].o.output_rate = 1.0;
    cases[n].needle = "rewind_iter -1 < 0";
    cases[n++].o.rewind_iter = -1;
    cases[n].needle = "rewind_iter 4 is not below the 4 steps"; /* 2 epochs of 2 batches */
    cases[n++].o.rewind_iter = 4;
    cases[n].needle = "only layerwise or global";
    cases[n++].o.granularity = SP_PRUNE_NM;
    cases[n].needle = "eval_every -1";
    cases[n++].o.eval_every = -1;
    cases[n].needle = "hook must be NULL";
    cases[n++].o.train.hook = hook_stub;
    cases[n].needle = "checkpoint must be NULL";
    cases[n++].o.train.checkpoint = "x.sparrow";
    for (int i = 0; i < n; i++) {
        CHECK_STATUS(sp_lottery_run(TOY_MLP, TOY_IN, 4, 1, d, d, &cases[i].o, rows), SP_EINVAL);
        CHECK_MSG(strstr(sp_last_error(), cases[i].needle) != NULL, "case %d: '%s' lacks '%s'",
                  i, sp_last_error(), cases[i].needle);
    }
    /* a model with no hidden linear layer and a dense output layer: nothing to prune */
    sp_lottery_opts o = toy_opts();
    o.output_rate = 0.0;
    CHECK_STATUS(sp_lottery_run("flatten\nlinear out=classes\n", TOY_IN, 4, 1, d, d, &o, rows),
                 SP_EINVAL);
    CHECK(strstr(sp_last_error(), "nothing to prune") != NULL);
    CHECK(sp_lottery_run("flatten\nrelu\n", TOY_IN, 4, 1, d, d, &o, rows) != SP_OK);
    CHECK_STATUS(sp_lottery_run(TOY_MLP, TOY_IN, 4, 1, d, NULL, &o, rows), SP_EINVAL);
    CHECK(strcmp(sp_lottery_phase_name(SP_LOTTERY_REINIT), "reinit") == 0);
    sp_dataset_free(d);
}
