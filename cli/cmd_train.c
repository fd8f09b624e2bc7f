/*
 * cmd_train.c - `sparrow train`: builds a model from a spec, a config file or a saved model,
 * trains it on a dataset with progress on the terminal, writes checkpoints atomically and
 * reports the result (one JSON object with --json).
 *
 * The settings that decide the weights are saved in the model file (its META section) as
 * option lines, so `--resume FILE` continues with exactly the same settings.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static void train_usage(FILE *f) {
    fprintf(f,
        "usage: sparrow train --model SPEC|CONFIG|MODEL [options]\n"
        "\n"
        "Trains a model on a dataset and writes it (architecture, weights, optimizer state) to\n"
        "--out. Progress: a bar on a terminal (stderr), else one line per epoch and one a\n"
        "minute during a long epoch (stdout; stderr with --json).\n"
        "\n"
        "model and data:\n"
        "  --model M            built-in spec (lenet300, lenet5, mlp:H1,H2,..., mobilenet,\n"
        "                       transformer, charlm:layers=L,dim=D,heads=H,ctx=T for text,\n"
        "                       moe-mlp:H,experts=E,top_k=K), a config file (docs/CONFIG.md)\n"
        "                       or a saved model to continue training from (fine-tuning: new\n"
        "                       optimizer)\n"
        "  --data D             fashion-mnist (default; Debian's dataset-fashion-mnist),\n"
        "                       idx:DIR (the four standard IDX file names, raw or .gz) or\n"
        "                       text:FILE (a UTF-8 text: a character-level language model,\n"
        "                       e.g. --model charlm:...; the last 10%% is the test set;\n"
        "                       docs/CHARLM.md)\n"
        "  --val N              hold out N training samples for validation (default 0; text:\n"
        "                       the last N windows of the training part)\n"
        "\n"
        "training (defaults in brackets):\n"
        "  --epochs E           passes over the training set [15]\n"
        "  --steps N            stop after N optimizer steps in total (overrides --epochs)\n"
        "  --batch B            samples per step [64]\n"
        "  --optimizer O        sgd | adam | adamw [adam]\n"
        "  --lr LR              base learning rate [1e-3; sgd 0.05]\n"
        "  --momentum M         SGD momentum [0.9 for sgd]\n"
        "  --nesterov           Nesterov momentum (SGD)\n"
        "  --weight-decay WD    L2 (sgd, adam) or decoupled (adamw) [0; adamw 0.01]\n"
        "  --schedule S         constant | step | cosine [cosine]\n"
        "  --warmup N           linear warmup steps [0]\n"
        "  --step-size N        steps between decays for --schedule step [one epoch]\n"
        "  --gamma G            decay factor for --schedule step [0.1]\n"
        "  --label-smoothing S  cross-entropy label smoothing in [0, 1) [0]\n"
        "  --clip C             clip the global gradient norm at C [off]\n"
        "  --seed S             initialization, data order and dropout [1]\n"
        "\n"
        "pruning while training (Zhu & Gupta 2017; docs/RECIPES.md):\n"
        "  --prune-sparsity S   prune the linear layers (not the output layer) to sparsity S\n"
        "  --prune-method M     magnitude | random [magnitude]\n"
        "  --prune-granularity G layerwise | global | nm | block [layerwise]\n"
        "  --prune-nm N:M       the N:M pattern for nm [2:4] (applied once, at --prune-start)\n"
        "  --prune-block RxC    the block shape for block [4x4]\n"
        "  --prune-schedule S   gradual (cubic ramp) | oneshot [gradual]\n"
        "  --prune-start F      the ramp starts after this fraction of the run's steps [0]\n"
        "  --prune-end F        and reaches S after this fraction [0.75]\n"
        "  --prune-every N      steps between mask updates [100]\n"
        "  --prune-format F     storage written at the end: csr | bsr | nm | mask | auto\n"
        "                       (auto: per layer, the fastest measured at batch 64, 1 thread)\n"
        "                       [nm for nm, bsr for block, else csr]\n"
        "  --prune-last         prune the output layer too\n"
        "  --prune-layers L     per-layer sparsities: NAME=S,NAME=S (names from sparrow inspect)\n"
        "  --recipe FILE        read settings from a recipe file (the options above and any\n"
        "                       others, one per line without the dashes; the command line\n"
        "                       overrides it)\n"
        "\n"
        "sparse training, sparse from the first step (docs/SPARSE_TRAINING.md):\n"
        "  --sparse-train K     set | rigl | static: linear layers stored as CSR, weights,\n"
        "                       gradients and optimizer state for nonzeros only\n"
        "  --density D          overall density of the sparse layers, (0, 1] [0.1]\n"
        "  --distribution S     uniform | er | erk: densities per layer [erk]\n"
        "  --epsilon E          Erdos-Renyi densities eps (n_in + n_out) / (n_in n_out) instead\n"
        "  --update-every N     steps between topology updates [100]\n"
        "  --drop-fraction F    fraction of each layer's weights replaced per update (SET: of\n"
        "                       each sign; RigL: annealed by cosine to 0 at --update-until),\n"
        "                       [0, 1) [0.3]\n"
        "  --update-until F     no topology updates after this fraction of the run (0, 1]\n"
        "                       [RigL 0.75, SET 1]\n"
        "  --sparse-last        make the output layer sparse too\n"
        "\n"
        "running:\n"
        "  --threads T          threads [all]; results are identical for any T\n"
        "  --out FILE           model file to write [model.sparrow]\n"
        "  --checkpoint-every N also write --out every N steps (always after each epoch)\n"
        "  --resume FILE        continue an interrupted run from its model file, with its\n"
        "                       settings (only --threads, --out, --log, --json, --quiet and\n"
        "                       --checkpoint-every may be given with it)\n"
        "  --log FILE           append one JSON line of metrics per epoch (a model with moe\n"
        "                       layers adds aux_loss and a moe array: the routing of that\n"
        "                       epoch's training batches; docs/MOE.md)\n"
        "  --weights-only       write the final model without optimizer state (smaller; it\n"
        "                       cannot be resumed, only fine-tuned anew)\n"
        "  --json               print one JSON summary object on stdout (text data adds\n"
        "                       bits_per_char: the test loss / ln 2; moe models add\n"
        "                       expert_load_max_over_mean and a moe array: the routing of\n"
        "                       the test-set evaluation)\n"
        "  --quiet              no progress output\n");
}

/* ---- shared with eval ------------------------------------------------------------------------- */

void cli_json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

bool cli_is_checkpoint(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char magic[8] = {0};
    size_t got = fread(magic, 1, 8, f);
    fclose(f);
    return got == 8 && memcmp(magic, "SPRWCKPT", 8) == 0;
}

char *cli_read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "sparrow: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *t = malloc(cap);
    for (;;) {
        if (!t) break;
        size_t k = fread(t + len, 1, cap - len - 1, f);
        len += k;
        if (len < cap - 1) break;
        if (cap >= (1u << 24)) {
            fprintf(stderr, "sparrow: %s is larger than 16 MiB (not a text file?)\n", path);
            free(t);
            t = NULL;
            break;
        }
        char *u = realloc(t, cap * 2);
        if (!u) {
            free(t);
            t = NULL;
            break;
        }
        t = u;
        cap *= 2;
    }
    fclose(f);
    if (t) t[len] = '\0';
    /* a text file holds no NUL byte: one would silently cut it short for every parser */
    const char *nul = t ? memchr(t, '\0', len) : NULL;
    if (nul) {
        fprintf(stderr, "sparrow: %s holds a NUL byte at offset %lld (not a text file?)\n", path,
                (long long)(nul - t));
        free(t);
        t = NULL;
    }
    return t;
}

int cli_fail(const char *what) {
    fprintf(stderr, "sparrow: %s: %s\n", what, sp_last_error());
    return 1;
}

int cli_open_text(const char *data, const sp_model *m, const char *cfg, sp_dataset **train,
                  sp_dataset **test) {
    int64_t T = 0, nv = 0;
    const int32_t *voc = NULL;
    if (m) {
        const sp_shape in = sp_model_in(m);
        T = in.c * in.h * in.w;
        voc = sp_model_vocab(m, &nv);
        if (!voc) {
            fprintf(stderr, "sparrow: --data %s: the model has no vocabulary: it was not trained "
                            "on text (sparrow train --data text:FILE)\n", data);
            return 1;
        }
    } else {
        sp_shape in;
        bool found = false;
        if (!cfg || sp_model_config_input(cfg, &in, &found) != SP_OK) return cli_fail("--model");
        if (!found) {
            fprintf(stderr, "sparrow: --data %s: text needs the model's context length T: its "
                            "config must start with 'input 1 1 T' (charlm specs do)\n", data);
            return 1;
        }
        T = in.c * in.h * in.w;
    }
    if (sp_dataset_open_text(data + 5, voc, nv, T, train, test) != SP_OK) return cli_fail("--data");
    return 0;
}

/* The model to start from: a saved model (*base, fine-tuning) or config text (*cfg: a config
 * file, read whole, *cfg_malloced; or a built-in spec, sp_free). 0, or 1 with a message. */
static int model_source(const char *model, sp_model **base, char **cfg, bool *cfg_malloced) {
    if (cli_is_checkpoint(model)) {
        sp_checkpoint bc = {0};
        if (sp_checkpoint_load(model, &bc) != SP_OK) return cli_fail("--model");
        *base = bc.model;
        bc.model = NULL;
        sp_checkpoint_free(&bc);
        return 0;
    }
    if (access(model, F_OK) == 0) {
        *cfg = cli_read_text(model);
        if (!*cfg) return 1;
        *cfg_malloced = true;
        return 0;
    }
    if (sp_model_spec_config(model, cfg) != SP_OK) return cli_fail("--model");
    return 0;
}

/* ---- settings --------------------------------------------------------------------------------- */

typedef struct settings {
    const char *model, *data;
    int64_t epochs, steps, batch, val, warmup, step_size, seed;
    const char *optimizer, *schedule;
    double lr, momentum, weight_decay, gamma, label_smoothing, clip;
    bool nesterov, lr_set, momentum_set, wd_set;
    cli_prune_settings prune;
    cli_sparse_settings sparse;
} settings;

/* The options that decide the weights, as "--key value" lines: saved in the model file. */
static char *settings_text(const settings *s) {
    size_t layers = s->prune.layers ? strlen(s->prune.layers) : 0;
    char *t = malloc(4096 + strlen(s->model) + strlen(s->data) + layers); /* = total below */
    if (!t) return NULL;
    int len = sprintf(t,
            "--model %s\n--data %s\n--epochs %lld\n--steps %lld\n--batch %lld\n--val %lld\n"
            "--optimizer %s\n--lr %.17g\n--momentum %.17g\n--weight-decay %.17g\n%s"
            "--schedule %s\n--warmup %lld\n--step-size %lld\n--gamma %.17g\n"
            "--label-smoothing %.17g\n--clip %.17g\n--seed %lld\n",
            s->model, s->data, (long long)s->epochs, (long long)s->steps, (long long)s->batch,
            (long long)s->val, s->optimizer, s->lr, s->momentum, s->weight_decay,
            s->nesterov ? "--nesterov\n" : "", s->schedule, (long long)s->warmup,
            (long long)s->step_size, s->gamma, s->label_smoothing, s->clip, (long long)s->seed);
    const size_t total = 4096 + strlen(s->model) + strlen(s->data) + layers;
    cli_prune_text(&s->prune, t + len, total - (size_t)len);
    len += (int)strlen(t + len);
    cli_sparse_text(&s->sparse, t + len, total - (size_t)len);
    return t;
}

typedef struct run_opts {
    int64_t threads, checkpoint_every;
    const char *out, *resume, *log;
    bool json, quiet, weights_only;
} run_opts;

/* Parses one option at argv[*i]; returns 0 if handled, 1 on error, -1 if unknown.
 * `resuming` refuses options that would change the weights. */
static int parse_option(int argc, char **argv, int *i, settings *s, run_opts *r, bool from_file,
                        bool resuming) {
    const char *a = argv[*i];
    static const char *const flags[] = {"--nesterov", "--json", "--quiet", "--prune-last",
                                        "--weights-only", "--sparse-last"};
    bool is_flag = false;
    for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
        if (!strcmp(a, flags[k])) is_flag = true;
    const char *v = NULL;
    if (!is_flag) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "sparrow train: %s needs a value (see --help)\n", a);
            return 1;
        }
        v = argv[++*i];
    }
    bool run_opt = !strcmp(a, "--threads") || !strcmp(a, "--out") || !strcmp(a, "--log") ||
                   !strcmp(a, "--json") || !strcmp(a, "--quiet") || !strcmp(a, "--weights-only") ||
                   !strcmp(a, "--checkpoint-every") || !strcmp(a, "--resume");
    if (resuming && !from_file && !run_opt) {
        fprintf(stderr, "sparrow train: %s cannot be given with --resume: the run continues "
                        "with the settings saved in its model file\n", a);
        return 1;
    }
    if (from_file && run_opt) {
        fprintf(stderr, "sparrow train: the model file's settings hold an unexpected %s\n", a);
        return 1;
    }
    if (!strcmp(a, "--model")) s->model = v;
    else if (!strcmp(a, "--data")) s->data = v;
    else if (!strcmp(a, "--epochs")) return !cli_parse_i64(a, v, 1, 1000000, &s->epochs);
    else if (!strcmp(a, "--steps")) return !cli_parse_i64(a, v, 0, INT64_C(1) << 40, &s->steps);
    else if (!strcmp(a, "--batch")) return !cli_parse_i64(a, v, 1, 1 << 20, &s->batch);
    else if (!strcmp(a, "--val")) return !cli_parse_i64(a, v, 0, INT64_C(1) << 40, &s->val);
    else if (!strcmp(a, "--warmup")) return !cli_parse_i64(a, v, 0, INT64_C(1) << 40, &s->warmup);
    else if (!strcmp(a, "--step-size")) return !cli_parse_i64(a, v, 0, INT64_C(1) << 40, &s->step_size);
    else if (!strcmp(a, "--seed")) return !cli_parse_i64(a, v, 0, INT64_MAX, &s->seed);
    else if (!strcmp(a, "--optimizer")) {
        if (strcmp(v, "sgd") && strcmp(v, "adam") && strcmp(v, "adamw")) {
            fprintf(stderr, "sparrow train: --optimizer must be sgd, adam or adamw, got '%s'\n", v);
            return 1;
        }
        s->optimizer = v;
    } else if (!strcmp(a, "--schedule")) {
        if (strcmp(v, "constant") && strcmp(v, "step") && strcmp(v, "cosine")) {
            fprintf(stderr, "sparrow train: --schedule must be constant, step or cosine, got '%s'\n", v);
            return 1;
        }
        s->schedule = v;
    } else if (!strcmp(a, "--lr")) {
        s->lr_set = true;
        return !cli_parse_f64(a, v, 0.0, 100.0, &s->lr);
    } else if (!strcmp(a, "--momentum")) {
        s->momentum_set = true;
        return !cli_parse_f64(a, v, 0.0, 0.999999, &s->momentum);
    } else if (!strcmp(a, "--weight-decay")) {
        s->wd_set = true;
        return !cli_parse_f64(a, v, 0.0, 0.999999, &s->weight_decay);
    } else if (!strcmp(a, "--gamma")) return !cli_parse_f64(a, v, 0.0, 1.0, &s->gamma);
    else if (!strcmp(a, "--label-smoothing")) return !cli_parse_f64(a, v, 0.0, 0.999, &s->label_smoothing);
    else if (!strcmp(a, "--clip")) return !cli_parse_f64(a, v, 0.0, 1e30, &s->clip);
    else if (!strcmp(a, "--nesterov")) s->nesterov = true;
    else if (!strcmp(a, "--threads")) return !cli_parse_i64(a, v, 0, 4096, &r->threads);
    else if (!strcmp(a, "--checkpoint-every")) return !cli_parse_i64(a, v, 0, INT64_C(1) << 40, &r->checkpoint_every);
    else if (!strcmp(a, "--out")) r->out = v;
    else if (!strcmp(a, "--resume")) r->resume = v;
    else if (!strcmp(a, "--log")) r->log = v;
    else if (!strcmp(a, "--json")) r->json = true;
    else if (!strcmp(a, "--quiet")) r->quiet = true;
    else if (!strcmp(a, "--weights-only")) r->weights_only = true;
    else {
        int rc = cli_prune_option(a, v, &s->prune);
        if (rc < 0) rc = cli_sparse_option(a, v, &s->sparse);
        if (rc < 0) --*i;
        return rc;
    }
    return 0;
}

/* Re-reads the settings saved in a model file's META text. */
static int settings_from_meta(char *meta, settings *s, run_opts *r) {
    char *argv[128];
    int argc = 0;
    for (char *line = strtok(meta, "\n"); line; line = strtok(NULL, "\n")) {
        if (argc > 126) {
            fprintf(stderr, "sparrow train: the model file holds more settings than this "
                            "version reads (%d words)\n", argc);
            return 1;
        }
        char *sp = strchr(line, ' ');
        argv[argc++] = line;
        if (sp) {
            *sp = '\0';
            argv[argc++] = sp + 1;
        }
    }
    for (int i = 0; i < argc; i++) {
        int rc = parse_option(argc, argv, &i, s, r, true, true);
        if (rc) {
            if (rc < 0) fprintf(stderr, "sparrow train: unknown saved setting '%s'\n", argv[i]);
            return 1;
        }
    }
    return 0;
}

/* ---- progress --------------------------------------------------------------------------------- */

typedef struct progress {
    const sp_prune_gradual *prune; /* when pruning: the sparsity reached, for the epoch lines */
    bool tty, quiet, json;
    bool text;                     /* text data: bits per character in the epoch lines */
    bool smoothed;                 /* label smoothing: the training loss is not the data's
                                    * cross-entropy, so no training bits per character */
    FILE *log;
    double last_draw;
    double train_seconds;
    int64_t samples;
    sp_model *m;                   /* the model, for its moe routing statistics */
    int nmoe;                      /* moe layers; 0: none */
    cli_moe_snap moe;              /* routing of the epoch's training batches */
} progress;

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_time(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* The routing statistics of an epoch describe its training batches only: taken (and reset)
 * at the report of the epoch's last step, which sp_train makes before the validation pass, or
 * at the report of a --steps stop; the validation pass's routing is reset at the epoch's end. */
static void moe_track(const sp_train_report *r, progress *p) {
    if (p->nmoe == 0) return;
    if ((!r->epoch_done && r->batch_index == r->batches) || (r->epoch_done && r->partial)) {
        if (cli_moe_snap_take(p->m, &p->moe)) cli_moe_snap_free(&p->moe);
        sp_model_moe_reset_stats(p->m);
    } else if (r->epoch_done) {
        sp_model_moe_reset_stats(p->m);
    }
}

static bool on_report(const sp_train_report *r, void *user) {
    progress *p = user;
    moe_track(r, p);
    char eta[32];
    fmt_time(eta, sizeof eta, r->eta_seconds);
    if (!r->epoch_done) {
        if (p->quiet) return true;
        double t = wall();
        if (!p->tty) {
            /* a log, not a terminal: a plain line a minute during a long epoch */
            if (t - p->last_draw < 60.0) return true;
            p->last_draw = t;
            fprintf(p->json ? stderr : stdout, "epoch %lld/%lld  step %lld/%lld (%d%%)  loss %.4f  "
                    "acc %.2f%%  %.0f samples/s  ETA %s\n", (long long)r->epoch + 1,
                    (long long)r->epochs, (long long)r->batch_index, (long long)r->batches,
                    (int)(100 * r->batch_index / r->batches), r->loss, 100.0 * r->accuracy,
                    r->samples_per_second, eta);
            fflush(p->json ? stderr : stdout);
            return true;
        }
        if (t - p->last_draw < 0.1) return true;
        p->last_draw = t;
        int width = 24, fill = (int)(width * r->batch_index / r->batches);
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\repoch %lld/%lld [%s] %3d%%  loss %.4f  acc %5.2f%%  %.0f samples/s  ETA %s ",
                (long long)r->epoch + 1, (long long)r->epochs, bar,
                (int)(100 * r->batch_index / r->batches), r->loss, 100.0 * r->accuracy,
                r->samples_per_second, eta);
        fflush(stderr);
        return true;
    }
    p->train_seconds += r->epoch_seconds;
    p->samples += (int64_t)llround(r->samples_per_second * r->epoch_seconds);
    if (!p->quiet) {
        FILE *f = p->json ? stderr : stdout;
        if (p->tty) fprintf(stderr, "\r%*s\r", 100, "");
        fprintf(f, "epoch %lld/%lld%s  loss %.4f  acc %.2f%%", (long long)r->epoch + 1,
                (long long)r->epochs, r->partial ? " (stopped by --steps)" : "", r->loss,
                100.0 * r->accuracy);
        if (p->text && !p->smoothed) fprintf(f, "  bits_per_char %.4f", r->loss / CLI_LN2);
        if (!isnan(r->val_loss))
            fprintf(f, "  val_loss %.4f  val_acc %.2f%%", r->val_loss, 100.0 * r->val_accuracy);
        if (p->text && !isnan(r->val_loss))
            fprintf(f, "  val_bits_per_char %.4f", r->val_loss / CLI_LN2);
        if (p->prune) fprintf(f, "  sparsity %.1f%%", 100.0 * p->prune->sparsity);
        if (p->nmoe) {
            fprintf(f, "  aux %.4f", r->aux_loss);
            cli_moe_snap_summary(&p->moe, f);
        }
        fprintf(f, "  lr %.3g  %.0f samples/s  %.1fs  ETA %s\n", (double)r->lr,
                r->samples_per_second, r->epoch_seconds, eta);
        fflush(f);
    }
    if (p->log) {
        fprintf(p->log, "{\"epoch\":%lld,\"step\":%lld,\"loss\":%.6g,\"accuracy\":%.6g,",
                (long long)r->epoch + 1, (long long)r->step, r->loss, r->accuracy);
        if (p->text && !p->smoothed)
            fprintf(p->log, "\"bits_per_char\":%.6g,", r->loss / CLI_LN2);
        if (!isnan(r->val_loss))
            fprintf(p->log, "\"val_loss\":%.6g,\"val_accuracy\":%.6g,", r->val_loss, r->val_accuracy);
        if (p->text && !isnan(r->val_loss))
            fprintf(p->log, "\"val_bits_per_char\":%.6g,", r->val_loss / CLI_LN2);
        if (p->prune) fprintf(p->log, "\"sparsity\":%.6g,", p->prune->sparsity);
        fprintf(p->log, "\"lr\":%.6g,\"samples_per_second\":%.1f,\"epoch_seconds\":%.3f",
                (double)r->lr, r->samples_per_second, r->epoch_seconds);
        if (p->nmoe) {
            fprintf(p->log, ",\"aux_loss\":%.6g", r->aux_loss);
            cli_moe_snap_json(&p->moe, p->log);
        }
        fputs("}\n", p->log);
        fflush(p->log);
    }
    return true;
}

/* ---- the command ------------------------------------------------------------------------------ */

int cmd_train(int argc, char **argv) {
    settings s = {.model = NULL, .data = "fashion-mnist", .epochs = 15, .batch = 64,
                  .optimizer = "adam", .schedule = "cosine", .gamma = 0.1, .seed = 1,
                  .prune = CLI_PRUNE_DEFAULTS, .sparse = CLI_SPARSE_DEFAULTS};
    run_opts r = {.out = "model.sparrow"};
    bool resuming = false;
    const char *recipe_path = NULL;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            train_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--resume")) {
            resuming = true;
        } else if (!strcmp(argv[i], "--recipe") && i + 1 < argc) {
            recipe_path = argv[i + 1];
        }
    /* a recipe's settings first, so that the command line can override them */
    cli_recipe recipe = {0};
    if (recipe_path) {
        if (resuming) {
            fprintf(stderr, "sparrow train: --recipe cannot be given with --resume: the run "
                            "continues with the settings saved in its model file\n");
            return 2;
        }
        if (cli_recipe_read(recipe_path, &recipe)) {
            cli_recipe_free(&recipe);
            return 2;
        }
        for (int i = 0; i < recipe.argc; i++) {
            if (strncmp(recipe.argv[i], "--", 2)) {
                fprintf(stderr, "sparrow train: recipe %s line %d: '%s' is not a setting (a value "
                                "after a setting that takes none?)\n", recipe_path,
                        recipe.line[i], recipe.argv[i]);
                cli_recipe_free(&recipe);
                return 2;
            }
            int rc = parse_option(recipe.argc, recipe.argv, &i, &s, &r, false, false);
            if (rc) {
                if (rc < 0)
                    fprintf(stderr, "sparrow train: unknown setting '%s'\n", recipe.argv[i] + 2);
                fprintf(stderr, "sparrow train: in recipe %s line %d\n", recipe_path,
                        recipe.line[i < recipe.argc ? i : recipe.argc - 1]);
                cli_recipe_free(&recipe);
                return 2;
            }
        }
        if (recipe.layers) s.prune.layers = recipe.layers;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--recipe")) {
            i++;
            continue;
        }
        int rc = parse_option(argc, argv, &i, &s, &r, false, resuming);
        if (rc < 0) fprintf(stderr, "sparrow train: unknown option '%s' (see --help)\n", argv[i]);
        if (rc) {
            cli_recipe_free(&recipe);
            return 2;
        }
    }
    sp_checkpoint ck = {0};
    char *meta_copy = NULL;
    if (resuming) {
        if (sp_checkpoint_load(r.resume, &ck) != SP_OK) return cli_fail("--resume");
        if (!ck.optim || !ck.has_state || !ck.meta[0]) {
            fprintf(stderr, "sparrow train: %s has no training state to resume from (a pruned "
                            "model's final file holds none: resume from a checkpoint written "
                            "during the run)\n", r.resume);
            sp_checkpoint_free(&ck);
            return 1;
        }
        meta_copy = strdup(ck.meta);
        if (!meta_copy || settings_from_meta(meta_copy, &s, &r)) {
            sp_checkpoint_free(&ck);
            free(meta_copy);
            return 1;
        }
    }
    if (!s.model) {
        fprintf(stderr, "sparrow train: --model is required (see --help)\n");
        cli_recipe_free(&recipe);
        return 2;
    }
    /* optimizer defaults that depend on the optimizer */
    sp_optim_kind kind = !strcmp(s.optimizer, "sgd") ? SP_OPTIM_SGD
                       : !strcmp(s.optimizer, "adam") ? SP_OPTIM_ADAM : SP_OPTIM_ADAMW;
    if (!s.lr_set) s.lr = kind == SP_OPTIM_SGD ? 0.05 : 1e-3;
    if (!s.momentum_set) s.momentum = kind == SP_OPTIM_SGD ? 0.9 : 0.0;
    if (!s.wd_set) s.weight_decay = kind == SP_OPTIM_ADAMW ? 0.01 : 0.0;
    s.lr_set = s.momentum_set = s.wd_set = true;
    if (s.nesterov && s.momentum == 0.0) {
        fprintf(stderr, "sparrow train: --nesterov needs --momentum > 0\n");
        cli_recipe_free(&recipe);
        return 2;
    }

    int rc = 1;
    sp_dataset *train_all = NULL, *test = NULL, *train = NULL, *val = NULL;
    sp_model *m = NULL, *final = NULL;
    sp_optim *o = NULL;
    sp_prune_gradual gradual;
    sp_dst dst = {0};
    double *layer_sparsity = NULL;
    const bool pruning = cli_prune_enabled(&s.prune), sparse = cli_sparse_enabled(&s.sparse);
    char *cfg = NULL, *meta = NULL;
    bool cfg_malloced = false;
    FILE *logf = NULL;
    sp_train_state state = {0};
    cli_moe_snap test_moe = {0};
    progress pr = {0};

    /* text: the context length (and, for a saved model, the vocabulary) come from the model,
     * so the model's source is read before the data */
    const bool text = strncmp(s.data, "text:", 5) == 0;
    sp_model *base = NULL;
    if (text && !resuming && model_source(s.model, &base, &cfg, &cfg_malloced)) goto done;
    if (text) {
        if (cli_open_text(s.data, resuming ? ck.model : base, cfg, &train_all, &test)) goto done;
    } else if (sp_dataset_open(s.data, &train_all, &test) != SP_OK) {
        cli_fail("--data");
        goto done;
    }
    if (s.val > 0) {
        if (sp_dataset_split(train_all, s.val, (uint64_t)s.seed, &train, &val) != SP_OK) {
            cli_fail("--val");
            goto done;
        }
    } else {
        train = train_all;
        train_all = NULL;
    }
    sp_shape in = {train->c, train->h, train->w};
    if (resuming) {
        m = ck.model;
        o = ck.optim;
        state = ck.state;
        ck.model = NULL;
        ck.optim = NULL;
    } else {
        if (!text && model_source(s.model, &base, &cfg, &cfg_malloced)) goto done;
        if (base) {
            m = base; /* fine-tuning a saved model */
            base = NULL;
        } else {
            if (cli_sparse_enabled(&s.sparse)) {
                char *sparse_cfg = NULL;
                if (cli_sparse_config(&s.sparse, cfg, in, train->classes, &sparse_cfg)) goto done;
                if (cfg_malloced) free(cfg);
                else sp_free(cfg);
                cfg = sparse_cfg;
                cfg_malloced = false;
            }
            if (sp_model_new(cfg, in, train->classes, (uint64_t)s.seed, &m) != SP_OK) {
                fprintf(stderr, "sparrow: --model %s: %s\n", s.model, sp_last_error());
                goto done;
            }
            /* a text model reads token ids (scale 1) and keeps its vocabulary */
            if (text) {
                sp_model_set_input_scale(m, train->scale);
                if (sp_model_set_vocab(m, train->vocab, train->classes) != SP_OK) {
                    cli_fail("--model");
                    goto done;
                }
            }
        }
    }
    int64_t batches = (train->n + s.batch - 1) / s.batch;
    if (s.batch > train->n) batches = 1;
    int64_t epochs = s.epochs;
    if (s.steps > 0) epochs = (s.steps + batches - 1) / batches;
    if (s.prune.layers && !pruning) {
        fprintf(stderr, "sparrow train: --prune-layers (or a recipe's prune-layer lines) needs "
                        "--prune-sparsity S or --prune-granularity nm: nothing is pruned "
                        "otherwise\n");
        goto done;
    }
    if (pruning && sparse) {
        fprintf(stderr, "sparrow train: --sparse-train and --prune-* do not mix: sparse training "
                        "keeps its density from the first step\n");
        goto done;
    }
    if (sparse && cli_sparse_setup(&s.sparse, m, (uint64_t)s.seed, train, s.batch,
                                   s.steps > 0 ? s.steps : epochs * batches, (int)r.threads,
                                   &dst))
        goto done;
    if (pruning && cli_prune_setup(&s.prune, &m, !resuming, s.steps > 0 ? s.steps : epochs * batches,
                                   &gradual, &layer_sparsity))
        goto done;
    if (!o) {
        sp_optim_config oc = sp_optim_defaults(kind);
        oc.momentum = (float)s.momentum;
        oc.nesterov = s.nesterov;
        oc.weight_decay = (float)s.weight_decay;
        if (sp_optim_new(&oc, sp_model_nparams(m), &o) != SP_OK) {
            cli_fail("optimizer");
            goto done;
        }
        state.data_seed = (uint64_t)s.seed;
    }
    if (pruning) gradual.sparsity = cli_model_sparsity(m); /* where a resumed run stands */
    meta = settings_text(&s);
    if (!meta) goto done;
    if (r.log) {
        logf = fopen(r.log, "a");
        if (!logf) {
            fprintf(stderr, "sparrow: cannot open --log %s: %s\n", r.log, strerror(errno));
            goto done;
        }
    }
    sp_train_opts to = {
        .epochs = epochs, .batch = s.batch,
        .sched = {.kind = !strcmp(s.schedule, "constant") ? SP_SCHED_CONSTANT
                        : !strcmp(s.schedule, "step") ? SP_SCHED_STEP : SP_SCHED_COSINE,
                  .lr = s.lr, .warmup = s.warmup,
                  .step_size = s.step_size > 0 ? s.step_size : batches, .gamma = s.gamma},
        .label_smoothing = (float)s.label_smoothing, .clip_norm = s.clip,
        .nthreads = (int)r.threads, .checkpoint = r.out, .checkpoint_every = r.checkpoint_every,
        .max_steps = s.steps, .meta = meta, .callback = on_report,
        .hook = pruning ? sp_prune_gradual_hook : sparse ? sp_dst_hook : NULL,
        .hook_user = pruning ? (void *)&gradual : (void *)&dst};
    pr = (progress){.tty = isatty(2) != 0, .quiet = r.quiet, .json = r.json, .text = text,
                   .smoothed = s.label_smoothing > 0,
                   .log = logf,
                   .prune = pruning ? &gradual : NULL, .last_draw = wall()};
    to.user = &pr;
    pr.m = m;
    pr.nmoe = cli_moe_count(m);
    sp_model_moe_reset_stats(m); /* a fine-tuned or resumed model's file holds none, but be sure */
    if (!r.quiet && text)
        fprintf(r.json ? stderr : stdout, "text: %d distinct characters; samples are windows "
                "of %lld characters (the model's context); test set: the last %lld characters\n",
                (int)train->classes, (long long)train->label_len, (long long)test->ntokens);
    if (!r.quiet)
        fprintf(r.json ? stderr : stdout, "%s %lld samples (%lld validation), model %s: %lld "
                "parameters, %s lr %g, %lld epochs of %lld steps\n",
                resuming ? "resuming on" : "training on", (long long)train->n,
                (long long)(val ? val->n : 0), s.model, (long long)sp_model_nparams(m),
                s.optimizer, s.lr, (long long)epochs, (long long)batches);
    sp_status st = sp_train(m, o, train, val, &to, &state);
    if (pr.tty && !r.quiet) fprintf(stderr, "\r%*s\r", 100, "");
    if (st != SP_OK) {
        fprintf(stderr, "sparrow train: %s\n", sp_last_error());
        fprintf(stderr, "sparrow train: stopped; %s keeps the last good checkpoint (if any)\n", r.out);
        goto done;
    }
    /* the final model: also written when --steps stopped mid-epoch; a pruned one in its sparse
     * storage, without optimizer state (the masked checkpoints written during the run resume) */
    if (pruning) {
        if (cli_prune_finish(&s.prune, m, &final)) goto done;
        if (final) {
            sp_model_free(m);
            m = final;
            final = NULL;
        }
        if (sp_checkpoint_save(r.out, m, NULL, NULL, meta) != SP_OK) {
            cli_fail("--out");
            goto done;
        }
    } else if (sp_checkpoint_save(r.out, m, r.weights_only ? NULL : o,
                                  r.weights_only ? NULL : &state, meta) != SP_OK) {
        cli_fail("--out");
        goto done;
    }
    double test_loss = NAN, test_acc = NAN;
    sp_model_moe_reset_stats(m); /* the summary's routing: the test set's */
    if (sp_evaluate(m, test, 1000, (int)r.threads, &test_loss, &test_acc, NULL) != SP_OK) {
        cli_fail("evaluate");
        goto done;
    }
    if (cli_moe_snap_take(m, &test_moe)) goto done;
    double sps = pr.train_seconds > 0 ? (double)pr.samples / pr.train_seconds : 0.0;
    if (r.json) {
        printf("{\"model\":");
        cli_json_string(stdout, s.model);
        printf(",\"data\":");
        cli_json_string(stdout, s.data);
        printf(",\"out\":");
        cli_json_string(stdout, r.out);
        printf(",\"test_accuracy\":%.6f,\"test_loss\":%.6f,\"train_seconds\":%.3f,"
               "\"samples_per_second\":%.1f,\"params\":%lld,\"nnz\":%lld,\"epochs\":%lld,"
               "\"steps\":%lld,\"batch\":%lld,\"optimizer\":\"%s\",\"lr\":%g,\"threads\":%lld",
               test_acc, test_loss, pr.train_seconds, sps, (long long)sp_model_nparams(m),
               (long long)sp_model_nnz(m), (long long)epochs, (long long)state.step,
               (long long)s.batch, s.optimizer, s.lr,
               (long long)(r.threads > 0 ? r.threads : sp_threads_available()));
        if (text) printf(",\"bits_per_char\":%.6f", test_loss / CLI_LN2);
        if (pruning)
            printf(",\"sparsity\":%.6f,\"format\":\"%s\"", cli_model_sparsity(m),
                   cli_prune_format(&s.prune));
        if (sparse) {
            printf(",\"sparsity\":%.6f", cli_model_sparsity(m));
            cli_sparse_json(m, &dst, stdout);
        }
        cli_moe_snap_json(&test_moe, stdout);
        printf("}\n");
    } else if (!r.quiet) {
        if (text)
            printf("test bits per character %.4f (the last 10%% of the text)\n",
                   test_loss / CLI_LN2);
        printf("test accuracy %.2f%%  test loss %.4f  (%lld params, %.1f s training, %.0f "
               "samples/s) -> %s\n", 100.0 * test_acc, test_loss, (long long)sp_model_nparams(m),
               pr.train_seconds, sps, r.out);
        if (pruning)
            printf("pruned layers %.1f%% sparse, stored as %s\n", 100.0 * cli_model_sparsity(m),
                   cli_prune_format(&s.prune));
        if (sparse)
            printf("sparse training (%s): layers %.1f%% sparse, %lld topology updates in %.2f s\n",
                   sp_dst_name(dst.kind), 100.0 * cli_model_sparsity(m), (long long)dst.updates,
                   dst.update_seconds);
        if (test_moe.n) {
            printf("test-set routing:");
            cli_moe_snap_summary(&test_moe, stdout);
            printf("  (max over %d moe layers)\n", test_moe.n);
        }
    }
    rc = 0;
done:
    cli_moe_snap_free(&test_moe);
    cli_moe_snap_free(&pr.moe);
    if (logf) fclose(logf);
    if (cfg_malloced) free(cfg);
    else sp_free(cfg);
    free(meta);
    free(meta_copy);
    sp_checkpoint_free(&ck);
    sp_model_free(m);
    sp_model_free(base);
    sp_model_free(final);
    sp_optim_free(o);
    free(layer_sparsity);
    cli_recipe_free(&recipe);
    sp_dataset_free(train_all);
    sp_dataset_free(train);
    sp_dataset_free(val);
    sp_dataset_free(test);
    return rc;
}
