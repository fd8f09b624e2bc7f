/*
 * test_train.c - losses, optimizers, schedules, the training loop and checkpoints:
 * determinism (same seed, 1 or 2 threads: the same bytes), resume after an interruption ends
 * bit-identical, a catalogue of corrupt checkpoints, the NaN guard.
 */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "toy_data.h"

static const char *TOY_MODEL = "flatten\nlinear out=12\nrelu\ndropout p=0.1\nlinear out=classes\n";

typedef struct run_result {
    double acc;
    uint8_t *file;
    size_t len;
} run_result;

static uint8_t *slurp(const char *path, size_t *len) {
    uint8_t *b = NULL;
    *len = 0;
    if (sp_file_read(path, 1 << 26, &b, len) != SP_OK) return NULL;
    return b;
}

/* Stops the run once `*user` steps are done, like a kill (no save at the stop). */
static bool kill_at(const sp_train_report *r, void *user) {
    return r->step < *(const int64_t *)user;
}

/* Trains TOY_MODEL for 3 epochs with Adam; "killed" after kill_step steps (0 = never) and resumed
 * from `resume` when given. Writes the final checkpoint to path. */
static sp_status toy_train(const sp_dataset *d, int threads, int64_t kill_step,
                           const char *ckpt_every_path, int64_t every, const char *resume,
                           const char *path) {
    sp_model *m = NULL;
    sp_optim *o = NULL;
    sp_train_state state = {.data_seed = 11};
    sp_checkpoint ck = {0};
    sp_status st;
    if (resume) {
        st = sp_checkpoint_load(resume, &ck);
        if (st != SP_OK) return st;
        m = ck.model;
        o = ck.optim;
        state = ck.state;
        ck.model = NULL;
        ck.optim = NULL;
        sp_checkpoint_free(&ck);
    } else {
        st = sp_model_new(TOY_MODEL, (sp_shape){1, 4, 4}, 4, 3, &m);
        if (st != SP_OK) return st;
        sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
        st = sp_optim_new(&oc, sp_model_nparams(m), &o);
        if (st != SP_OK) goto done;
    }
    sp_train_opts to = {.epochs = 3, .batch = 16,
                        .sched = {.kind = SP_SCHED_COSINE, .lr = 0.01, .warmup = 5},
                        .nthreads = threads, .checkpoint = ckpt_every_path,
                        .checkpoint_every = every, .meta = "toy",
                        .callback = kill_step > 0 ? kill_at : NULL, .user = &kill_step};
    st = sp_train(m, o, d, NULL, &to, &state);
    if (st == SP_OK && path) st = sp_checkpoint_save(path, m, o, &state, "toy");
done:
    sp_model_free(m);
    sp_optim_free(o);
    return st;
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/sparrow_test_%d_%s", (int)getpid(), name);
}

TEST(train_same_seed_same_bytes_on_1_and_2_threads) {
    sp_dataset *d = test_toy_dataset(200, 1);
    CHECK(d != NULL);
    if (!d) return;
    char a[128], b[128], c[128];
    tmp_path(a, sizeof a, "a");
    tmp_path(b, sizeof b, "b");
    tmp_path(c, sizeof c, "c");
    CHECK_OK(toy_train(d, 1, 0, NULL, 0, NULL, a));
    CHECK_OK(toy_train(d, 1, 0, NULL, 0, NULL, b));
    CHECK_OK(toy_train(d, 2, 0, NULL, 0, NULL, c));
    size_t la, lb, lc;
    uint8_t *fa = slurp(a, &la), *fb = slurp(b, &lb), *fc = slurp(c, &lc);
    CHECK(fa && fb && fc);
    if (fa && fb && fc) {
        CHECK(la == lb && memcmp(fa, fb, la) == 0);
        CHECK(la == lc && memcmp(fa, fc, la) == 0);
    }
    sp_free(fa);
    sp_free(fb);
    sp_free(fc);
    unlink(a);
    unlink(b);
    unlink(c);
    sp_dataset_free(d);
}

TEST(train_resumed_run_ends_bit_identical) {
    sp_dataset *d = test_toy_dataset(200, 2);
    CHECK(d != NULL);
    if (!d) return;
    char full[128], ck[128], fin[128];
    tmp_path(full, sizeof full, "full");
    tmp_path(ck, sizeof ck, "ck");
    tmp_path(fin, sizeof fin, "fin");
    CHECK_OK(toy_train(d, 1, 0, NULL, 0, NULL, full));
    /* "killed" at step 23, mid-epoch 2 (13 batches per epoch); the last checkpoint written is
     * the one of step 20 (every 5 steps), from which the run resumes */
    CHECK_OK(toy_train(d, 2, 23, ck, 5, NULL, NULL));
    {
        /* a stopped run's state names the next batch: step 23 is epoch 1, batch 10 */
        sp_model *m2 = NULL;
        sp_optim *o2 = NULL;
        CHECK_OK(sp_model_new(TOY_MODEL, (sp_shape){1, 4, 4}, 4, 3, &m2));
        sp_optim_config oc2 = sp_optim_defaults(SP_OPTIM_ADAM);
        CHECK_OK(sp_optim_new(&oc2, sp_model_nparams(m2), &o2));
        int64_t kill = 23;
        sp_train_state st2 = {.data_seed = 11};
        sp_train_opts to2 = {.epochs = 3, .batch = 16, .sched = {.lr = 0.01}, .nthreads = 1,
                             .callback = kill_at, .user = &kill};
        CHECK_OK(sp_train(m2, o2, d, NULL, &to2, &st2));
        CHECK(st2.step == 23 && st2.epoch == 1 && st2.batch_index == 10);
        sp_model_free(m2);
        sp_optim_free(o2);
    }
    sp_checkpoint c = {0};
    CHECK_OK(sp_checkpoint_load(ck, &c));
    CHECK(c.has_state && c.state.step == 20 && c.state.epoch == 1 && c.state.batch_index == 7);
    sp_checkpoint_free(&c);
    CHECK_OK(toy_train(d, 1, 0, NULL, 0, ck, fin));
    size_t la, lb;
    uint8_t *fa = slurp(full, &la), *fb = slurp(fin, &lb);
    CHECK(fa && fb && la == lb && memcmp(fa, fb, la) == 0);
    sp_free(fa);
    sp_free(fb);
    unlink(full);
    unlink(ck);
    unlink(fin);
    sp_dataset_free(d);
}

TEST(train_learns_the_toy_task) {
    sp_dataset *d = test_toy_dataset(400, 3);
    if (!d) return;
    sp_model *m = NULL;
    sp_optim *o = NULL;
    CHECK_OK(sp_model_new(TOY_MODEL, (sp_shape){1, 4, 4}, 4, 1, &m));
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_SGD);
    oc.momentum = 0.9f;
    oc.nesterov = true;
    CHECK_OK(sp_optim_new(&oc, sp_model_nparams(m), &o));
    double loss0, acc0, loss1, acc1;
    CHECK_OK(sp_evaluate(m, d, 64, 1, &loss0, &acc0, NULL));
    sp_train_state s = {0};
    sp_train_opts to = {.epochs = 10, .batch = 20, .sched = {.kind = SP_SCHED_STEP, .lr = 0.1,
                        .step_size = 100, .gamma = 0.5}, .label_smoothing = 0.05f, .clip_norm = 5.0};
    CHECK_OK(sp_train(m, o, d, NULL, &to, &s));
    CHECK_OK(sp_evaluate(m, d, 64, 1, &loss1, &acc1, NULL));
    CHECK_MSG(acc1 > 0.9 && loss1 < loss0, "accuracy %.3f -> %.3f, loss %.3f -> %.3f", acc0, acc1,
              loss0, loss1);
    CHECK_EQ(s.step, 200);
    sp_model_free(m);
    sp_optim_free(o);
    sp_dataset_free(d);
}

TEST(train_stops_on_nan_naming_the_step) {
    sp_dataset *d = test_toy_dataset(64, 4);
    if (!d) return;
    sp_model *m = NULL;
    sp_optim *o = NULL;
    CHECK_OK(sp_model_new(TOY_MODEL, (sp_shape){1, 4, 4}, 4, 1, &m));
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_SGD);
    CHECK_OK(sp_optim_new(&oc, sp_model_nparams(m), &o));
    sp_model_params(m)[3] = NAN; /* a poisoned weight of the first layer */
    sp_train_state s = {0};
    sp_train_opts to = {.epochs = 1, .batch = 16, .sched = {.lr = 0.1}};
    CHECK_STATUS(sp_train(m, o, d, NULL, &to, &s), SP_EINVAL);
    CHECK_MSG(strstr(sp_last_error(), "step 0") && strstr(sp_last_error(), "NaN") &&
              strstr(sp_last_error(), "layer 1.linear"), "%s", sp_last_error());
    CHECK_EQ(s.step, 0);
    /* a gradient that overflows names its layer: huge last-layer weights make the logits'
     * gradient finite but the hidden layer's weight gradient overflow */
    sp_model_params(m)[3] = 0.0f;
    float *p = sp_model_params(m);
    sp_layer_info li;
    CHECK_OK(sp_model_layer(m, 4, &li));
    for (int64_t k = 0; k < 12 * 4; k++) p[li.param_offset + k] = k % 2 ? 3e38f : -3e38f;
    CHECK_STATUS(sp_train(m, o, d, NULL, &to, &s), SP_EINVAL);
    CHECK_MSG(strstr(sp_last_error(), "step ") && strstr(sp_last_error(), "layer 4.linear"),
              "%s", sp_last_error());
    sp_model_free(m);
    sp_optim_free(o);
    sp_dataset_free(d);
}

TEST(xent_matches_a_direct_computation) {
    /* 3 classes, 2 columns (feature-major) */
    const float z[6] = {1.0f, -2.0f, 0.5f, 0.0f, -1.0f, 3.0f};
    const int32_t y[2] = {2, 1};
    double loss;
    float d[6];
    int64_t right;
    CHECK_OK(sp_loss_xent(z, 3, 2, y, 0.0f, &loss, d, &right));
    double l0 = -(-1.0 - log(exp(1.0) + exp(0.5) + exp(-1.0)));
    double l1 = -(0.0 - log(exp(-2.0) + exp(0.0) + exp(3.0)));
    CHECK(fabs(loss - (l0 + l1) / 2) < 1e-6);
    CHECK_EQ(right, 0);
    double p00 = exp(1.0) / (exp(1.0) + exp(0.5) + exp(-1.0));
    CHECK(fabs(d[0] - p00 / 2) < 1e-6);
    int32_t bad[2] = {0, 3};
    CHECK_STATUS(sp_loss_xent(z, 3, 2, bad, 0.0f, &loss, d, NULL), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "label 3") != NULL);
    CHECK_STATUS(sp_loss_xent(z, 3, 2, y, 1.0f, &loss, d, NULL), SP_EINVAL);
}

TEST(schedules_follow_their_formulas) {
    sp_schedule s = {.kind = SP_SCHED_COSINE, .lr = 1.0, .total = 100};
    CHECK(fabsf(sp_schedule_lr(&s, 0) - 1.0f) < 1e-6f);
    CHECK(fabsf(sp_schedule_lr(&s, 50) - 0.5f) < 1e-6f);
    CHECK(fabsf(sp_schedule_lr(&s, 100)) < 1e-6f);
    s.warmup = 10;
    CHECK(fabsf(sp_schedule_lr(&s, 0) - 0.1f) < 1e-6f);
    CHECK(fabsf(sp_schedule_lr(&s, 9) - 1.0f) < 1e-6f);
    CHECK(fabsf(sp_schedule_lr(&s, 55) - 0.5f) < 1e-6f);
    sp_schedule st = {.kind = SP_SCHED_STEP, .lr = 1.0, .step_size = 10, .gamma = 0.5};
    CHECK(fabsf(sp_schedule_lr(&st, 9) - 1.0f) < 1e-6f);
    CHECK(fabsf(sp_schedule_lr(&st, 25) - 0.25f) < 1e-6f);
}

TEST(optimizers_reject_bad_settings) {
    sp_optim *o = NULL;
    sp_optim_config c = sp_optim_defaults(SP_OPTIM_SGD);
    c.nesterov = true;
    CHECK_STATUS(sp_optim_new(&c, 10, &o), SP_EINVAL);
    c = sp_optim_defaults(SP_OPTIM_ADAM);
    c.beta1 = 1.0f;
    CHECK_STATUS(sp_optim_new(&c, 10, &o), SP_EINVAL);
    c = sp_optim_defaults(SP_OPTIM_ADAMW);
    c.weight_decay = -1.0f;
    CHECK_STATUS(sp_optim_new(&c, 10, &o), SP_EINVAL);
    c.kind = (sp_optim_kind)7;
    CHECK_STATUS(sp_optim_new(&c, 10, &o), SP_EINVAL);
    CHECK(o == NULL);
}

/* ---- corrupt checkpoints ------------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
static void put64(uint8_t *p, uint64_t v) {
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}
/* The version-1 files of the catalogues below: written by sp_checkpoint_save before version 2
 * (commit a2e651f) from the models the tests build, so that a freshly built model with the same
 * seed has the same parameters and patterns. Version 1 is no longer written; these stay. */
#define V1_FIXTURE(name) SPARROW_SOURCE_DIR "/tests/fixtures/v1/" name

/* Re-seals a modified file with a correct CRC, so that the check behind the CRC is reached. */
static void reseal(uint8_t *b, size_t len) { put32(b + len - 4, sp_crc32(0, b, len - 4)); }

TEST(checkpoint_rejects_corrupt_files_each_with_its_own_error) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(TOY_MODEL, (sp_shape){1, 4, 4}, 4, 3, &m));
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
    sp_optim *o = NULL;
    CHECK_OK(sp_optim_new(&oc, sp_model_nparams(m), &o));
    char path[128];
    tmp_path(path, sizeof path, "ckpt");
    sp_train_state ts = {7, 1, 2, 9};
    CHECK_OK(sp_checkpoint_save(path, m, o, &ts, "meta"));
    size_t len, saved_len;
    uint8_t *saved = slurp(path, &saved_len);
    uint8_t *good = slurp(V1_FIXTURE("toy_adam.sparrow"), &len);
    CHECK(good != NULL && saved != NULL);
    if (!good || !saved) return;
    sp_checkpoint c = {0};
    CHECK_OK(sp_checkpoint_parse(good, len, &c));
    CHECK(c.has_state && c.state.step == 7 && strcmp(c.meta, "meta") == 0 && c.optim);
    CHECK(memcmp(sp_model_params(c.model), sp_model_params(m),
                 sizeof(float) * (size_t)sp_model_nparams(m)) == 0);
    sp_checkpoint_free(&c);
    /* the sections in order: CONF at 16 */
    uint64_t conf_len = 0;
    memcpy(&conf_len, good + 24, 8);
    size_t modl = 16 + 16 + (size_t)((conf_len + 7) / 8 * 8);
    uint8_t *b = malloc(len);
    struct {
        const char *name;
        const char *needle;
    } cases[] = {
        {"empty", "bad magic"},          {"bad magic", "bad magic"},
        {"version 3", "version 3"},      {"flipped bit", "CRC-32"},
        {"truncated", "CRC-32"},         {"section count", "sections"},
        {"section length", "exceeds"},   {"unknown tag", "unknown section"},
        {"param count", "do not match"}, {"unknown layer", "unknown layer"},
        {"huge layer", "exceed"},        {"NUL in config", "NUL byte"},
        {"trailing bytes", "unexpected bytes"},  {"wrapping count", "do not match"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(b, good, len);
        size_t blen = len;
        const char *name = cases[k].name;
        if (!strcmp(name, "empty")) blen = 0;
        else if (!strcmp(name, "bad magic")) b[0] = 'X';
        else if (!strcmp(name, "version 3")) put32(b + 8, 3), reseal(b, blen);
        else if (!strcmp(name, "flipped bit")) b[len / 2] ^= 0x10;
        else if (!strcmp(name, "truncated")) blen = len - 9;
        else if (!strcmp(name, "section count")) put32(b + 12, 1000), reseal(b, blen);
        else if (!strcmp(name, "section length")) put64(b + 24, (uint64_t)1 << 40), reseal(b, blen);
        else if (!strcmp(name, "unknown tag")) memcpy(b + modl, "XXXX", 4), reseal(b, blen);
        else if (!strcmp(name, "param count")) put64(b + modl + 16 + 40, 5), reseal(b, blen);
        else if (!strcmp(name, "wrapping count")) {
            /* 2^62 + P parameters: times 4 it wraps to the section's size */
            uint64_t np;
            memcpy(&np, b + modl + 16 + 40, 8);
            put64(b + modl + 16 + 40, np + ((uint64_t)1 << 62));
            reseal(b, blen);
        }
        else if (!strcmp(name, "unknown layer")) memcpy(b + 32 + 14, "conv9d", 6), reseal(b, blen);
        else if (!strcmp(name, "huge layer")) {
            /* "linear out=12" -> "linear out=99999999" would change the length; instead make
             * the first hidden layer claim more outputs than the file has parameters */
            const char *p = strstr((const char *)b + 32, "out=12");
            if (p) memcpy(b + (p - (const char *)b), "out=99", 6), reseal(b, blen);
        } else if (!strcmp(name, "NUL in config")) b[33] = 0, reseal(b, blen);
        else if (!strcmp(name, "trailing bytes")) {
            /* one more 8-byte unit inside the CRC'd region */
            uint8_t *bb = malloc(len + 8);
            memcpy(bb, good, len - 4);
            memset(bb + len - 4, 0, 8);
            blen = len + 8;
            reseal(bb, blen);
            memcpy(b, bb, len);
            sp_checkpoint cc = {0};
            CHECK_STATUS(sp_checkpoint_parse(bb, blen, &cc), SP_EFORMAT);
            CHECK_MSG(strstr(sp_last_error(), cases[k].needle), "%s: %s", name, sp_last_error());
            free(bb);
            continue;
        }
        sp_checkpoint cc = {0};
        CHECK_STATUS(sp_checkpoint_parse(b, blen, &cc), SP_EFORMAT);
        CHECK_MSG(strstr(sp_last_error(), cases[k].needle), "%s: %s", name, sp_last_error());
        CHECK(cc.model == NULL);
    }
    /* a missing file is an I/O error naming the path */
    sp_checkpoint cc = {0};
    CHECK_STATUS(sp_checkpoint_load("/nonexistent/x.sparrow", &cc), SP_EIO);
    CHECK(strstr(sp_last_error(), "/nonexistent/x.sparrow") != NULL);
    /* a failed save leaves the good file untouched */
    CHECK_STATUS(sp_checkpoint_save("/nonexistent/dir/x", m, o, &ts, NULL), SP_EIO);
    size_t len2;
    uint8_t *again = slurp(path, &len2);
    CHECK(again && len2 == saved_len && memcmp(again, saved, saved_len) == 0);
    sp_free(again);
    sp_free(saved);
    free(b);
    sp_free(good);
    unlink(path);
    sp_model_free(m);
    sp_optim_free(o);
}

TEST(checkpoint_parse_survives_allocation_failure) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(TOY_MODEL, (sp_shape){1, 4, 4}, 4, 3, &m));
    char path[128];
    tmp_path(path, sizeof path, "ckpt_alloc");
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    size_t len;
    uint8_t *good = slurp(path, &len);
    bool saw_failure = false, reached_success = false;
    for (int64_t n = 1; n < 100 && good && !reached_success; n++) {
        int64_t live = sp_alloc_live();
        sp_checkpoint c = {0};
        sp_alloc_fail_after(n);
        sp_status st = sp_checkpoint_parse(good, len, &c);
        sp_alloc_fail_after(0);
        if (st == SP_OK) reached_success = true;
        else {
            saw_failure = true;
            CHECK_MSG(st == SP_ENOMEM, "n=%lld: %s %s", (long long)n, sp_status_name(st),
                      sp_last_error());
        }
        sp_checkpoint_free(&c);
        CHECK_EQ(sp_alloc_live(), live);
    }
    CHECK(saw_failure && reached_success);
    sp_free(good);
    unlink(path);
    sp_model_free(m);
}

TEST(checkpoint_records_the_input_scale_and_data_must_match_it) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(TOY_MODEL, (sp_shape){1, 4, 4}, 4, 3, &m));
    if (!m) return;
    CHECK(sp_model_input_scale(m) == 1.0f / 255.0f);
    sp_model_set_input_scale(m, 0.5f);
    char path[128];
    tmp_path(path, sizeof path, "scale");
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    sp_checkpoint c = {0};
    CHECK_OK(sp_checkpoint_load(path, &c));
    if (c.model) CHECK(sp_model_input_scale(c.model) == 0.5f);
    sp_dataset *d = test_toy_dataset(32, 9); /* pixel / 255 */
    if (d && c.model) {
        double loss, acc;
        CHECK_STATUS(sp_evaluate(c.model, d, 16, 1, &loss, &acc, NULL), SP_EINVAL);
        CHECK(strstr(sp_last_error(), "raw * 0.5") != NULL);
    }
    sp_dataset_free(d);
    sp_checkpoint_free(&c);
    unlink(path);
    sp_model_free(m);
}

static bool record_lr(const sp_train_report *r, void *user) {
    *(float *)user = r->lr;
    return true;
}

TEST(train_max_steps_ends_the_schedule_at_the_stop) {
    sp_dataset *d = test_toy_dataset(160, 6); /* 10 batches of 16 per epoch */
    if (!d) return;
    sp_model *m = NULL;
    sp_optim *o = NULL;
    CHECK_OK(sp_model_new(TOY_MODEL, (sp_shape){1, 4, 4}, 4, 3, &m));
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
    CHECK_OK(sp_optim_new(&oc, sp_model_nparams(m), &o));
    float last_lr = -1.0f;
    sp_train_state s = {0};
    sp_train_opts to = {.epochs = 5, .batch = 16, .sched = {.kind = SP_SCHED_COSINE, .lr = 0.1},
                        .max_steps = 25, .callback = record_lr, .user = &last_lr};
    CHECK_OK(sp_train(m, o, d, NULL, &to, &s));
    CHECK_EQ(s.step, 25);
    sp_schedule want = {.kind = SP_SCHED_COSINE, .lr = 0.1, .total = 25};
    CHECK_MSG(last_lr == sp_schedule_lr(&want, 24), "last lr %g, want %g", (double)last_lr,
              (double)sp_schedule_lr(&want, 24));
    sp_model_free(m);
    sp_optim_free(o);
    sp_dataset_free(d);
}

TEST(checkpoint_round_trips_sparse_and_masked_layers) {
    /* the patterns come back from (config, seed); the file holds only the stored values */
    const char *cfg = "flatten\nlinear out=12 format=csr density=0.3\nrelu\n"
                      "linear out=8 format=bsr density=0.5 block=2x2\ntanh\n"
                      "linear out=8 format=nm nm=2:4\nrelu\n"
                      "linear out=classes format=mask density=0.5\n";
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(cfg, (sp_shape){1, 4, 4}, 4, 5, &m));
    if (!m) return;
    for (int64_t k = 0; k < sp_model_nparams(m); k++) sp_model_params(m)[k] += 0.001f * (float)k;
    char path[128];
    tmp_path(path, sizeof path, "sparse");
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    sp_checkpoint c = {0};
    CHECK_OK(sp_checkpoint_load(path, &c));
    if (c.model) {
        CHECK_EQ(sp_model_nparams(c.model), sp_model_nparams(m));
        CHECK(memcmp(sp_model_params(c.model), sp_model_params(m),
                     sizeof(float) * (size_t)sp_model_nparams(m)) == 0);
        float x[16 * 3];
        for (int i = 0; i < 48; i++) x[i] = 0.05f * (float)(i % 11);
        const float *ya, *yb;
        CHECK_OK(sp_model_forward(m, x, 3, false, &ya));
        CHECK_OK(sp_model_forward(c.model, x, 3, false, &yb));
        CHECK(memcmp(ya, yb, sizeof(float) * 12) == 0);
        sp_layer_info li;
        CHECK_OK(sp_model_layer(c.model, 1, &li));
        CHECK(strcmp(li.format, "csr") == 0 && li.dense_params == 12 * 16 + 12 &&
              li.nparam == 12 * 5 + 12);
    }
    sp_checkpoint_free(&c);
    unlink(path);
    sp_model_free(m);
}

/* A pattern that no seed would draw: row i keeps columns j with (i + 2 j) % 5 == 0. */
static sp_mask *odd_pattern(int64_t rows, int64_t cols) {
    sp_mask *m = NULL;
    if (sp_mask_new(rows, cols, &m) != SP_OK) return NULL;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            if ((i + 2 * j) % 5 == 0) sp_mask_set(m, i, j, true);
    return m;
}

TEST(checkpoint_keeps_explicit_sparsity_patterns) {
    const char *cfg = "flatten\nlinear out=12 format=csr density=0.5\nrelu\n"
                      "linear out=8 format=bsr block=2x2 density=0.5\ntanh\n"
                      "linear out=8 format=nm nm=2:4\nrelu\n"
                      "linear out=classes format=mask density=0.5\n";
    sp_mask *p1 = odd_pattern(12, 16), *p3 = odd_pattern(8, 12), *p5 = odd_pattern(8, 8),
            *p7 = odd_pattern(4, 8);
    const sp_mask *pats[8] = {NULL, p1, NULL, p3, NULL, p5, NULL, p7};
    sp_model *m = NULL;
    CHECK_OK(sp_model_new_with_patterns(cfg, (sp_shape){1, 4, 4}, 4, 5, 1 << 20, pats, 8, &m));
    if (!m) goto done;
    /* CSR and mask keep exactly the pattern; N:M pads groups to 2 (each has <= 2 here) */
    sp_mask *got = NULL;
    CHECK_OK(sp_model_layer_pattern(m, 1, &got));
    CHECK(got && memcmp(got->bits, p1->bits, 8 * (size_t)(12 * p1->words_per_row)) == 0);
    sp_mask_free(got);
    got = NULL;
    CHECK_OK(sp_model_layer_pattern(m, 7, &got));
    CHECK(got && memcmp(got->bits, p7->bits, 8 * (size_t)(4 * p7->words_per_row)) == 0);
    sp_mask_free(got);
    got = NULL;
    CHECK_OK(sp_model_layer_pattern(m, 0, &got));
    CHECK(got == NULL);
    sp_layer_info li;
    CHECK_OK(sp_model_layer(m, 1, &li));
    CHECK_EQ(li.nparam, sp_mask_count(p1) + 12);
    for (int64_t k = 0; k < sp_model_nparams(m); k++) sp_model_params(m)[k] += 0.01f * (float)(k % 7);
    char path[128];
    tmp_path(path, sizeof path, "patterns");
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    sp_checkpoint c = {0};
    CHECK_OK(sp_checkpoint_load(path, &c));
    if (c.model) {
        CHECK_EQ(sp_model_nparams(c.model), sp_model_nparams(m));
        CHECK(memcmp(sp_model_params(c.model), sp_model_params(m),
                     sizeof(float) * (size_t)sp_model_nparams(m)) == 0);
        for (int i = 0; i < sp_model_nlayers(m); i++) {
            sp_mask *a = NULL, *b = NULL;
            CHECK_OK(sp_model_layer_pattern(m, i, &a));
            CHECK_OK(sp_model_layer_pattern(c.model, i, &b));
            CHECK((a == NULL) == (b == NULL));
            if (a && b) CHECK(memcmp(a->bits, b->bits, 8 * (size_t)(a->rows * a->words_per_row)) == 0);
            sp_mask_free(a);
            sp_mask_free(b);
        }
    }
    sp_checkpoint_free(&c);
    unlink(path);
    /* bad patterns: on a layer without weights, the wrong shape, more than N of M */
    sp_model *bad = NULL;
    const sp_mask *on_relu[3] = {NULL, NULL, p1};
    CHECK_STATUS(sp_model_new_with_patterns(cfg, (sp_shape){1, 4, 4}, 4, 5, 1 << 20, on_relu, 3,
                                            &bad), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "takes no sparsity pattern") != NULL);
    const sp_mask *wrong_shape[2] = {NULL, p3};
    CHECK_STATUS(sp_model_new_with_patterns(cfg, (sp_shape){1, 4, 4}, 4, 5, 1 << 20, wrong_shape, 2,
                                            &bad), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "pattern is 8x12") != NULL);
    sp_mask *full = NULL;
    CHECK_OK(sp_mask_new(8, 8, &full));
    if (full) {
        for (int64_t j = 0; j < 8; j++) sp_mask_set(full, 0, j, true);
        const sp_mask *too_many[6] = {NULL, NULL, NULL, NULL, NULL, full};
        CHECK_STATUS(sp_model_new_with_patterns(cfg, (sp_shape){1, 4, 4}, 4, 5, 1 << 20, too_many,
                                                6, &bad), SP_EFORMAT);
        CHECK(strstr(sp_last_error(), "more than N=2") != NULL);
    }
    sp_mask_free(full);
    const sp_mask *past_end[20] = {[19] = p1};
    CHECK_STATUS(sp_model_new_with_patterns(cfg, (sp_shape){1, 4, 4}, 4, 5, 1 << 20, past_end, 20,
                                            &bad), SP_EFORMAT);
    CHECK(bad == NULL);
done:
    sp_model_free(m);
    sp_mask_free(p1);
    sp_mask_free(p3);
    sp_mask_free(p5);
    sp_mask_free(p7);
}

/* A full disk in the middle of a save: the file size limit (RLIMIT_FSIZE, SIGXFSZ ignored, so
 * write fails with EFBIG) cuts the streamed write after 64 KiB. The save fails with SP_EIO,
 * leaves the previous file whole and no temporary file behind. */
TEST(checkpoint_save_survives_a_full_disk) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("flatten\nlinear out=2000\nlinear out=classes\n", (sp_shape){1, 4, 4},
                          4, 5, &m)); /* 42,000 parameters: 168 KB */
    if (!m) return;
    char dir[128], path[160];
    tmp_path(dir, sizeof dir, "fulldisk");
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(path, sizeof path, "%s/m.sparrow", dir);
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    size_t len;
    uint8_t *good = slurp(path, &len);
    sp_model_params(m)[0] += 1.0f; /* the next save differs */
    struct rlimit old, lim;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    lim = old;
    lim.rlim_cur = 65536;
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    sp_status st = sp_checkpoint_save(path, m, NULL, NULL, NULL);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", sp_last_error());
    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    signal(SIGXFSZ, prev);
    CHECK_MSG(st == SP_EIO && strstr(msg, path) && strstr(msg, "too large"), "%s: %s",
              sp_status_name(st), msg);
    size_t len2;
    uint8_t *again = slurp(path, &len2);
    CHECK(good && again && len2 == len && memcmp(again, good, len) == 0);
    /* nothing else in the directory: the temporary file is gone */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 1", dir);
    CHECK(system(cmd) == 0);
    sp_free(good);
    sp_free(again);
    unlink(path);
    rmdir(dir);
    sp_model_free(m);
}

/* A CSR structure as a pattern: a CSR layer takes it entry for entry (the model initializes
 * the values; the given ones are not read), any other layer refuses it, and a layer given two patterns fails. */
TEST(model_takes_csr_patterns) {
    const char *cfg = "flatten\nlinear out=12 format=csr density=0.5\nrelu\n"
                      "linear out=8 format=mask density=0.5\nrelu\nlinear out=classes\n";
    sp_mask *p1 = odd_pattern(12, 16), *p3 = odd_pattern(8, 12);
    float *dense = calloc(12 * 16, sizeof(float)), *d3 = calloc(8 * 12, sizeof(float));
    sp_csr *c1 = NULL, *c3 = NULL;
    for (int64_t i = 0; i < 12 * 16; i++) dense[i] = 1.0f + (float)i;
    for (int64_t i = 0; i < 8 * 12; i++) d3[i] = 1.0f;
    CHECK_OK(sp_csr_from_dense(12, 16, dense, 16, p1, SP_CSR_IDX32, &c1));
    CHECK_OK(sp_csr_from_dense(8, 12, d3, 12, p3, 0, &c3));
    sp_model *m = NULL, *bad = NULL;
    const sp_csr *csrs[2] = {NULL, c1};
    CHECK_OK(sp_model_new_with_structure(cfg, (sp_shape){1, 4, 4}, 4, 5, 1 << 20, NULL, csrs, 2,
                                         &m));
    const sp_csr *got = m ? sp_model_layer_csr(m, 1) : NULL;
    CHECK(got && c1 && got->nnz == c1->nnz);
    for (int64_t i = 0; got && c1 && i <= 12; i++) CHECK_EQ(got->row_ptr[i], c1->row_ptr[i]);
    for (int64_t k = 0; got && c1 && k < c1->nnz; k++) {
        CHECK_EQ(sp_csr_col(got, k), sp_csr_col(c1, k));
        CHECK(fabsf(got->val[k]) < 1.0f); /* initialized by the model, not c1's 1 + i */
    }
    const sp_csr *on_mask[4] = {NULL, NULL, NULL, c3};
    CHECK_STATUS(sp_model_new_with_structure(cfg, (sp_shape){1, 4, 4}, 4, 5, 1 << 20, NULL,
                                             on_mask, 4, &bad), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "a CSR pattern was given for a layer stored as mask") != NULL);
    const sp_mask *masks[2] = {NULL, p1};
    CHECK_STATUS(sp_model_new_with_structure(cfg, (sp_shape){1, 4, 4}, 4, 5, 1 << 20, masks, csrs,
                                             2, &bad), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "both a mask and a CSR pattern") != NULL);
    const sp_csr *wrong[2] = {NULL, c3};
    CHECK_STATUS(sp_model_new_with_structure(cfg, (sp_shape){1, 4, 4}, 4, 5, 1 << 20, NULL, wrong,
                                             2, &bad), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "pattern is 8x12, the layer 12x16") != NULL);
    CHECK(bad == NULL);
    sp_model_free(m);
    sp_csr_free(c1);
    sp_csr_free(c3);
    free(dense);
    free(d3);
    sp_mask_free(p1);
    sp_mask_free(p3);
}

/* Offset of the payload of section `tag` in a checkpoint, or 0. */
static size_t find_section(const uint8_t *b, size_t len, const char *tag) {
    size_t pos = 16;
    while (pos + 16 <= len - 4) {
        uint64_t slen;
        memcpy(&slen, b + pos + 8, 8);
        if (memcmp(b + pos, tag, 4) == 0) return pos + 16;
        pos += 16 + (size_t)((slen + 7) / 8 * 8);
    }
    return 0;
}

/* Seals the corrupted checkpoint b (fresh CRC) and checks that parsing it fails with
 * SP_EFORMAT, a message holding needle, and no model. */
static void expect_corrupt(uint8_t *b, size_t len, const char *name, const char *needle) {
    reseal(b, len);
    sp_checkpoint c = {0};
    CHECK_STATUS(sp_checkpoint_parse(b, len, &c), SP_EFORMAT);
    CHECK_MSG(strstr(sp_last_error(), needle), "%s: %s", name, sp_last_error());
    CHECK(c.model == NULL);
}

TEST(checkpoint_rejects_corrupt_patterns) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("flatten\nlinear out=6 format=mask density=0.5\nrelu\nlinear out=classes\n",
                          (sp_shape){1, 4, 4}, 4, 5, &m));
    if (!m) return;
    char path[128];
    tmp_path(path, sizeof path, "badpatt");
    size_t len;
    uint8_t *good = slurp(V1_FIXTURE("mask.sparrow"), &len);
    size_t pp = good ? find_section(good, len, "PATT") : 0;
    CHECK(pp != 0);
    uint8_t *b = malloc(len);
    static const struct {
        const char *name, *needle;
    } cases[] = {
        {"count", "patterns (at most"},   {"layer of relu", "takes no sparsity pattern"},
        {"layer too big", "names layer"}, {"rows", "needs 56 bytes, 48 left"},
        {"cols", "is 6x20, the layer 6x16"},
        {"huge rows", "out of range"},    {"section length", "runs past"},
        {"stray bit", "past column"},
    };
    for (size_t k = 0; pp && b && k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(b, good, len);
        const char *n = cases[k].name;
        uint8_t *rec = b + pp + 8; /* first record: layer, zero, rows, cols, words */
        if (!strcmp(n, "count")) put32(b + pp, 5000);
        else if (!strcmp(n, "layer of relu")) put32(rec, 2);
        else if (!strcmp(n, "layer too big")) put32(rec, 9999);
        else if (!strcmp(n, "rows")) put64(rec + 8, 7);
        else if (!strcmp(n, "cols")) put64(rec + 16, 20);
        else if (!strcmp(n, "huge rows")) put64(rec + 8, (uint64_t)1 << 40);
        else if (!strcmp(n, "section length")) put32(b + pp, 2);
        else if (!strcmp(n, "stray bit")) rec[24] |= 0x80, rec[24 + 2] |= 0x01; /* bit 16+ of row 0 */
        expect_corrupt(b, len, n, cases[k].needle);
    }
    free(b);
    sp_free(good);
    unlink(path);
    sp_model_free(m);
}

/* A CSR layer's pattern is saved as its row offsets and column indices (PATT kind 1), which
 * grow with its entries: 3 x 16 with 7 entries a row is 32 header bytes, 4 offsets, 21 indices
 * and 4 bytes of padding. Every field is checked before and after the structure is built. */
TEST(checkpoint_rejects_corrupt_csr_patterns) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("flatten\nlinear out=3 format=csr density=0.4375\nrelu\n"
                          "linear out=classes\n", (sp_shape){1, 4, 4}, 4, 5, &m));
    if (!m) return;
    char path[128];
    tmp_path(path, sizeof path, "badcsrpatt");
    size_t len;
    uint8_t *good = slurp(V1_FIXTURE("csr.sparrow"), &len);
    size_t pp = good ? find_section(good, len, "PATT") : 0;
    CHECK(pp != 0);
    /* the good file loads, with the same pattern */
    sp_checkpoint ok = {0};
    if (good) CHECK_OK(sp_checkpoint_parse(good, len, &ok));
    if (ok.model) {
        const sp_csr *a = sp_model_layer_csr(m, 1), *c = sp_model_layer_csr(ok.model, 1);
        CHECK(a && c && a->nnz == 21 && c->nnz == 21);
        for (int64_t k = 0; a && c && k < 21; k++) CHECK(sp_csr_col(a, k) == sp_csr_col(c, k));
    }
    sp_checkpoint_free(&ok);
    uint8_t *b = malloc(len);
    static const struct {
        const char *name, *needle;
    } cases[] = {
        {"kind", "has kind 7"},
        {"nnz", "!= nnz 22"},
        {"nnz past the section", "need more than"},
        {"huge nnz", "need more than"},
        {"first offset", "row_ptr[0] = 1"},
        {"offsets decrease", "not monotonic"},
        {"offset past nnz", "row_ptr"},
        {"column out of range", "out of range [0, 16)"},
        {"columns unsorted", "row 0"},
        {"cols", "is 3x20, the layer 3x16"},
        {"padding", "padding is not 4 zero bytes"},
        {"layer of relu", "takes no sparsity pattern"},
        {"layer of dense", "takes no sparsity pattern"},
    };
    for (size_t k = 0; pp && b && k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(b, good, len);
        const char *n = cases[k].name;
        uint8_t *rec = b + pp + 8; /* layer, kind, rows, cols, nnz, offsets, indices, pad */
        uint8_t *off = rec + 32, *col = off + 4 * 8;
        if (!strcmp(n, "kind")) put32(rec + 4, 7);
        else if (!strcmp(n, "nnz")) put64(rec + 24, 22); /* fits, in the padding */
        else if (!strcmp(n, "nnz past the section")) put64(rec + 24, 23);
        else if (!strcmp(n, "huge nnz")) put64(rec + 24, (uint64_t)1 << 40);
        else if (!strcmp(n, "first offset")) put64(off, 1);
        else if (!strcmp(n, "offsets decrease")) put64(off + 16, 6); /* row 1: 7 -> 6 */
        else if (!strcmp(n, "offset past nnz")) put64(off + 8, 1000);
        else if (!strcmp(n, "column out of range")) put32(col, 16);
        else if (!strcmp(n, "columns unsorted")) put32(col, 15);
        else if (!strcmp(n, "cols")) put64(rec + 16, 20);
        else if (!strcmp(n, "padding")) col[84] = 1;
        else if (!strcmp(n, "layer of relu")) put32(rec, 2);
        else if (!strcmp(n, "layer of dense")) put32(rec, 3);
        expect_corrupt(b, len, n, cases[k].needle);
    }
    free(b);
    sp_free(good);
    unlink(path);
    sp_model_free(m);
}

/* A text model's vocabulary (VOCB: u32 count, u32 zero, count ascending code points): every
 * field is checked against the section's bytes and the model before it is taken. The model has
 * 5 classes; its vocabulary "\n", ' ', 'a', 'b', U+00E9. A file without VOCB (every image
 * model's) loads without a vocabulary. */
TEST(checkpoint_rejects_corrupt_vocab) {
    sp_model *m = NULL;
    /* parameters that do not depend on the classes, so that MODL can claim 6 of them */
    CHECK_OK(sp_model_new("input 1 1 4\nembedding vocab=8 dim=5\nlayernorm\n", (sp_shape){1, 1, 4},
                          5, 5, &m));
    if (!m) return;
    const int32_t voc[5] = {'\n', ' ', 'a', 'b', 0xE9};
    CHECK_OK(sp_model_set_vocab(m, voc, 5));
    char path[128];
    tmp_path(path, sizeof path, "badvocb");
    size_t len;
    uint8_t *good = slurp(V1_FIXTURE("vocab.sparrow"), &len);
    size_t vp = good ? find_section(good, len, "VOCB") : 0;
    CHECK(vp != 0);
    sp_checkpoint ok = {0};
    if (good) CHECK_OK(sp_checkpoint_parse(good, len, &ok));
    int64_t n = 0;
    const int32_t *got = ok.model ? sp_model_vocab(ok.model, &n) : NULL;
    CHECK(got && n == 5 && memcmp(got, voc, sizeof voc) == 0);
    sp_checkpoint_free(&ok);
    uint8_t *b = malloc(len);
    static const struct {
        const char *name, *needle;
    } cases[] = {
        {"reserved", "VOCB reserved field is 7"},
        {"count past the section", "VOCB holds 9 code points, its section 28 bytes (want 44)"},
        {"count short of the section", "VOCB holds 4 code points, its section 28 bytes (want 24)"},
        {"short section", "VOCB section of 4 bytes is too short"},
        {"count not the classes", "VOCB holds 5 code points for a model of 6 classes"},
        {"not ascending", "VOCB entry 3 = U+0061 is not above the one before it (U+0061)"},
        {"surrogate", "VOCB entry 4 = 0xD800 is not a Unicode scalar value"},
        {"above U+10FFFF", "VOCB entry 4 = 0x110000 is not a Unicode scalar value"},
    };
    for (size_t k = 0; vp && b && k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(b, good, len);
        const char *nm = cases[k].name;
        uint8_t *cp = b + vp + 8; /* the code points */
        if (!strcmp(nm, "reserved")) put32(b + vp + 4, 7);
        else if (!strcmp(nm, "count past the section")) put32(b + vp, 9);
        else if (!strcmp(nm, "count short of the section")) put32(b + vp, 4);
        else if (!strcmp(nm, "short section")) put64(b + vp - 8, 4); /* the padding absorbs it */
        else if (!strcmp(nm, "count not the classes")) put64(b + find_section(b, len, "MODL") + 24, 6);
        else if (!strcmp(nm, "not ascending")) put32(cp + 12, 'a');
        else if (!strcmp(nm, "surrogate")) put32(cp + 16, 0xD800);
        else if (!strcmp(nm, "above U+10FFFF")) put32(cp + 16, 0x110000);
        if (!strcmp(nm, "short section")) {
            /* a 4-byte VOCB: shrink the section by 24 bytes (28 -> 4 bytes, padded 32 -> 8) */
            memmove(b + vp + 8, b + vp + 32, len - (vp + 32));
            expect_corrupt(b, len - 24, nm, cases[k].needle);
            continue;
        }
        expect_corrupt(b, len, nm, cases[k].needle);
    }
    free(b);
    sp_free(good);
    unlink(path);
    sp_model_free(m);
}

/* A saved model is an ordinary new file: mode 0666 less the umask (the temporary file it is
 * renamed from is made that way, with no process-wide umask change while saving), and no
 * temporary file is left next to it. */
TEST(checkpoint_file_mode_follows_the_umask) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("linear out=classes\n", (sp_shape){4, 1, 1}, 3, 1, &m));
    if (!m) return;
    char dir[] = "/tmp/sparrow_test_umask_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[96];
    snprintf(path, sizeof path, "%s/m.sparrow", dir);
    mode_t old = umask(027);
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    umask(old);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0640);
    DIR *d = opendir(dir);
    int entries = 0;
    for (struct dirent *e; d && (e = readdir(d));) entries += e->d_name[0] != '.';
    if (d) closedir(d);
    CHECK_EQ(entries, 1);
    unlink(path);
    rmdir(dir);
    sp_model_free(m);
}
