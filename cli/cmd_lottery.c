/*
 * cmd_lottery.c - `sparrow lottery`: the lottery-ticket experiment (sp_lottery_run) on a
 * dataset, for one seed or several: a table of rounds (weights remaining, test accuracy,
 * early-stop iteration and accuracy, random re-initialization accuracy), one JSON object with
 * --json, and an SVG chart of accuracy against weights remaining with --plot.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define MAX_SEEDS 16

static void lottery_usage(FILE *f) {
    fprintf(f,
        "usage: sparrow lottery [--model SPEC|CONFIG] [--data D] [options]\n"
        "\n"
        "Lottery tickets (Frankle & Carbin 2019; Frankle et al. 2020): trains the network,\n"
        "prunes --rate of the remaining weights of every linear layer by magnitude, rewinds the\n"
        "rest to their initial values (or to step --rewind-iter) and trains again, --rounds\n"
        "times. Each round also trains the same masks on a random re-initialization: a winning\n"
        "ticket beats it. Prints one row per round; progress goes to stderr.\n"
        "\n"
        "  --model M            built-in spec or config file (default lenet300)\n"
        "  --data D             fashion-mnist (default) or idx:DIR\n"
        "  --rounds R           pruning rounds after the dense round 0 [10]\n"
        "  --rate P             fraction of the remaining weights pruned per round, in (0, 1)\n"
        "                       [0.2]\n"
        "  --output-rate P      the same for the output layer, in [0, 1) [rate / 2, as Frankle\n"
        "                       & Carbin; 0 keeps it dense]\n"
        "  --granularity G      layerwise (default) | global (one threshold over the hidden\n"
        "                       layers)\n"
        "  --rewind-iter K      rewind to the weights after K steps instead of the\n"
        "                       initialization [0]; must be below the steps of one round\n"
        "  --epochs E           epochs per training [5]\n"
        "  --batch B            [60]\n"
        "  --optimizer O        sgd | adam | adamw [adam]\n"
        "  --lr LR              constant learning rate [1.2e-3; sgd 0.05 with momentum 0.9]\n"
        "  --val N              validation samples held out of the training set for the\n"
        "                       early-stop iteration [5000]; 0: use the test set (optimistic)\n"
        "  --eval-every N       steps between validation evaluations [200]; 0: off\n"
        "  --no-reinit          skip the random re-initialization control\n"
        "  --seed S             initialization, data order and validation split [1]\n"
        "  --seeds S1,S2,...    several runs (up to %d), one after the other; the table, JSON\n"
        "                       and chart then also give the mean (chart: mean with min-max bars)\n"
        "  --threads T          threads [all]; results are identical for any T\n"
        "  --json               one JSON object on stdout instead of the table\n"
        "  --plot FILE.svg      chart of test accuracy (ticket, early stop, re-initialization)\n"
        "                       against weights remaining, log scale\n"
        "  --quiet              no progress lines\n", MAX_SEEDS);
}

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct progress {
    bool quiet;
    int rounds;
    long long seed;
} progress;

static void on_event(const sp_lottery_event *e, void *user) {
    const progress *p = user;
    if (p->quiet || !e->done) return;
    fprintf(stderr, "seed %lld round %2d/%d %-6s %7.3f%% remaining: test %.2f%%", p->seed,
            e->round, p->rounds, sp_lottery_phase_name(e->phase), 100.0 * e->remaining,
            100.0 * e->test_accuracy);
    if (e->early_stop_iter >= 0)
        fprintf(stderr, "  early stop %lld (%.2f%%)", (long long)e->early_stop_iter,
                100.0 * e->early_stop_accuracy);
    fprintf(stderr, "  %.1f s\n", e->seconds);
    fflush(stderr);
}

/* ---- output ----------------------------------------------------------------------------------- */

static void json_num(FILE *f, const char *key, double v, bool comma) {
    if (isfinite(v)) fprintf(f, "\"%s\":%.6f", key, v);
    else fprintf(f, "\"%s\":null", key);
    if (comma) fputc(',', f);
}

static void json_rows(FILE *f, const sp_lottery_round *rows, int n) {
    fputc('[', f);
    for (int r = 0; r < n; r++) {
        const sp_lottery_round *w = &rows[r];
        fprintf(f, "%s{\"round\":%d,", r ? "," : "", w->round);
        json_num(f, "remaining", w->remaining, true);
        json_num(f, "hidden_remaining", w->hidden_remaining, true);
        json_num(f, "test_accuracy", w->test_accuracy, true);
        json_num(f, "test_loss", w->test_loss, true);
        fprintf(f, "\"early_stop_iter\":%lld,", (long long)w->early_stop_iter);
        json_num(f, "early_stop_accuracy", w->early_stop_accuracy, true);
        json_num(f, "reinit_accuracy", w->reinit_accuracy, true);
        json_num(f, "reinit_early_stop_accuracy", w->reinit_early_stop_accuracy, false);
        fputc('}', f);
    }
    fputc(']', f);
}

static void print_cell(double v) {
    if (isfinite(v)) printf("  %8.2f%%", 100.0 * v);
    else printf("  %9s", "-");
}

static void print_table(const sp_lottery_round *rows, int n) {
    printf("round  remaining  test_acc  early_stop_iter  early_stop_acc  reinit_acc\n");
    for (int r = 0; r < n; r++) {
        const sp_lottery_round *w = &rows[r];
        printf("%5d  %8.3f%%", w->round, 100.0 * w->remaining);
        print_cell(w->test_accuracy);
        if (w->early_stop_iter >= 0) printf("  %15lld", (long long)w->early_stop_iter);
        else printf("  %15s", "-");
        printf("     ");
        print_cell(w->early_stop_accuracy);
        printf("  ");
        print_cell(w->reinit_accuracy);
        printf("\n");
    }
}

/* Mean over runs, row by row (early-stop iteration: the rounded mean). */
static void mean_rows(sp_lottery_round *const *runs, int nruns, int n, sp_lottery_round *out) {
    for (int r = 0; r < n; r++) {
        sp_lottery_round m = {.round = r};
        double es = 0.0;
        for (int k = 0; k < nruns; k++) {
            const sp_lottery_round *w = &runs[k][r];
            m.remaining += w->remaining / nruns;
            m.hidden_remaining += w->hidden_remaining / nruns;
            m.test_accuracy += w->test_accuracy / nruns;
            m.test_loss += w->test_loss / nruns;
            m.early_stop_accuracy += w->early_stop_accuracy / nruns;
            m.reinit_accuracy += w->reinit_accuracy / nruns;
            m.reinit_early_stop_accuracy += w->reinit_early_stop_accuracy / nruns;
            es += (double)w->early_stop_iter / nruns;
        }
        m.early_stop_iter = runs[0][r].early_stop_iter < 0 ? -1 : llround(es);
        m.reinit_early_stop_iter = -1;
        out[r] = m;
    }
}

/* ---- the chart -------------------------------------------------------------------------------- */

typedef struct series {
    const char *name, *color, *dash, *marker; /* marker: "circle" | "square" | "diamond" */
    size_t field; /* offsetof the accuracy in sp_lottery_round */
} series;

static double field(const sp_lottery_round *w, size_t off) {
    double v;
    memcpy(&v, (const char *)w + off, sizeof v);
    return v;
}

static void marker(FILE *f, const char *kind, double x, double y, const char *color) {
    if (!strcmp(kind, "square"))
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" fill=\"%s\"/>\n",
                x - 3.5, y - 3.5, color);
    else if (!strcmp(kind, "diamond"))
        fprintf(f, "<path d=\"M%.1f %.1f l4 4 l-4 4 l-4 -4 z\" fill=\"%s\"/>\n", x, y - 4, color);
    else fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", x, y, color);
}

/* Writes an SVG line chart: test accuracy (%) against weights remaining (%, log scale,
 * decreasing from left to right); with several runs, their mean with min-max bars. */
static int write_svg(const char *path, const char *title, sp_lottery_round *const *runs,
                     int nruns, int n, bool reinit) {
    enum { W = 760, H = 470, L = 70, R = 190, TOP = 50, BOT = 60 };
    const double pw = W - L - R, ph = H - TOP - BOT;
    static const series S[] = {
        {"ticket (end of training)", "#1f77b4", "", "circle",
         offsetof(sp_lottery_round, test_accuracy)},
        {"ticket (early stop)", "#2ca02c", "2,3", "diamond",
         offsetof(sp_lottery_round, early_stop_accuracy)},
        {"random re-init (end)", "#d62728", "6,4", "square",
         offsetof(sp_lottery_round, reinit_accuracy)},
    };
    const int ns = reinit ? 3 : 2;
    sp_lottery_round mean[1024];
    if (n > 1024) n = 1024;
    mean_rows(runs, nruns, n, mean);
    double lo = INFINITY, hi = -INFINITY, minrem = 1.0;
    for (int k = 0; k < nruns; k++)
        for (int r = 0; r < n; r++) {
            minrem = fmin(minrem, runs[k][r].remaining);
            for (int s = 0; s < ns; s++) {
                double v = 100.0 * field(&runs[k][r], S[s].field);
                if (isfinite(v)) lo = fmin(lo, v), hi = fmax(hi, v);
            }
        }
    if (!isfinite(lo)) lo = 0.0, hi = 100.0;
    static const double steps[] = {0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 25};
    double step = 25;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if ((hi - lo) / steps[i] <= 8.0) {
            step = steps[i];
            break;
        }
    double ylo = floor(lo / step) * step, yhi = ceil(hi / step) * step;
    if (yhi - ylo < step) yhi = ylo + step;
    if (ylo == lo) ylo -= step;
    if (yhi == hi && yhi < 100.0) yhi += step;
    const double span = log(1.0 / (minrem < 1.0 ? minrem : 0.5));
#define XOF(rem) (L + pw * log(1.0 / (rem)) / span)
#define YOF(acc) (TOP + ph * (yhi - (acc)) / (yhi - ylo))
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "sparrow lottery: cannot write --plot %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">", (L + W - R) / 2);
    for (const char *c = title; *c; c++) {
        if (*c == '<') fputs("&lt;", f);
        else if (*c == '&') fputs("&amp;", f);
        else fputc(*c, f);
    }
    fputs("</text>\n", f);
    /* y grid and ticks */
    for (double v = ylo; v <= yhi + 1e-9; v += step) {
        double y = YOF(v);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                L, y, L + pw, y, L - 6, y + 4, v);
    }
    /* x grid and ticks at round percentages */
    static const double round_ticks[] = {100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02,
                                         0.01};
    double xt[1024];
    int nxt = 0;
    for (size_t i = 0; i < sizeof round_ticks / sizeof round_ticks[0]; i++)
        if (round_ticks[i] / 100.0 >= minrem * 0.95) xt[nxt++] = round_ticks[i];
    if (nxt < 3) /* a short run: a tick at every round instead */
        for (nxt = 0; nxt < n; nxt++) xt[nxt] = round(1000.0 * mean[nxt].remaining) / 10.0;
    for (int i = 0; i < nxt; i++) {
        double x = XOF(xt[i] / 100.0);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
                x, TOP, x, TOP + ph, x, TOP + ph + 18, xt[i]);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
               "stroke=\"black\"/>\n", L, TOP, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">weights remaining (%%, log "
               "scale)</text>\n", L + pw / 2, H - 18);
    fprintf(f, "<text transform=\"translate(20 %.1f) rotate(-90)\" text-anchor=\"middle\">test "
               "accuracy (%%)</text>\n", TOP + ph / 2);
    /* the dense accuracy as a reference line */
    double dense = 100.0 * mean[0].test_accuracy;
    if (isfinite(dense) && dense >= ylo && dense <= yhi)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#777\" "
                   "stroke-dasharray=\"1,3\"/>\n", L, YOF(dense), L + pw, YOF(dense));
    for (int s = 0; s < ns; s++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s%s%s points=\"",
                S[s].color, S[s].dash[0] ? " stroke-dasharray=\"" : "", S[s].dash,
                S[s].dash[0] ? "\"" : "");
        for (int r = 0; r < n; r++) {
            double v = 100.0 * field(&mean[r], S[s].field);
            if (isfinite(v)) fprintf(f, "%.1f,%.1f ", XOF(mean[r].remaining), YOF(v));
        }
        fputs("\"/>\n", f);
        for (int r = 0; r < n; r++) {
            double v = 100.0 * field(&mean[r], S[s].field);
            if (!isfinite(v)) continue;
            double x = XOF(mean[r].remaining);
            if (nruns > 1) {
                double a = INFINITY, b = -INFINITY;
                for (int k = 0; k < nruns; k++) {
                    double u = 100.0 * field(&runs[k][r], S[s].field);
                    a = fmin(a, u), b = fmax(b, u);
                }
                const double bx = x + 3.0 * (s - 1); /* side by side where series meet */
                fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n",
                        bx, YOF(a), bx, YOF(b), S[s].color);
            }
            marker(f, S[s].marker, x, YOF(v), S[s].color);
        }
    }
    /* legend */
    double ly = TOP + 10;
    for (int s = 0; s < ns; s++, ly += 22) {
        double lx = L + pw + 14;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                   "stroke-width=\"2\"%s%s%s/>\n", lx, ly, lx + 26, ly, S[s].color,
                S[s].dash[0] ? " stroke-dasharray=\"" : "", S[s].dash, S[s].dash[0] ? "\"" : "");
        marker(f, S[s].marker, lx + 13, ly, S[s].color);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", lx + 32, ly + 4, S[s].name);
    }
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#777\" "
               "stroke-dasharray=\"1,3\"/>\n<text x=\"%.1f\" y=\"%.1f\">dense network</text>\n",
            L + pw + 14, ly, L + pw + 40, ly, L + pw + 46, ly + 4);
    if (nruns > 1)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">mean of %d seeds;</text>\n"
                   "<text x=\"%.1f\" y=\"%.1f\">bars: min to max</text>\n",
                L + pw + 14, ly + 26, nruns, L + pw + 14, ly + 42);
    fputs("</svg>\n", f);
#undef XOF
#undef YOF
    if (fclose(f) != 0) {
        fprintf(stderr, "sparrow lottery: cannot write --plot %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

/* ---- the command ------------------------------------------------------------------------------ */

static int bad(const char *msg, const char *v) {
    fprintf(stderr, "sparrow lottery: %s, got '%s'\n", msg, v);
    return 2;
}

int cmd_lottery(int argc, char **argv) {
    const char *model = "lenet300", *data = "fashion-mnist", *optimizer = "adam",
               *gran = "layerwise", *plot = NULL, *seeds_arg = NULL;
    int64_t rounds = 10, rewind = 0, epochs = 5, batch = 60, val = 5000, eval_every = 200,
            seed = 1, threads = 0;
    double rate = 0.2, output_rate = -1.0, lr = -1.0;
    bool json = false, reinit = true, quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            lottery_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "--no-reinit")) { reinit = false; continue; }
        if (!strcmp(a, "--quiet")) { quiet = true; continue; }
        if (i + 1 >= argc) {
            fprintf(stderr, "sparrow lottery: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--optimizer")) optimizer = v;
        else if (!strcmp(a, "--granularity")) gran = v;
        else if (!strcmp(a, "--plot")) plot = v;
        else if (!strcmp(a, "--seeds")) seeds_arg = v;
        else if (!strcmp(a, "--rounds")) {
            if (!cli_parse_i64(a, v, INT64_MIN, INT64_MAX, &rounds)) return 2;
            if (rounds < 1 || rounds > 1000) return bad("--rounds must be in [1, 1000]", v);
        } else if (!strcmp(a, "--rate")) {
            if (!cli_parse_f64(a, v, -1e300, 1e300, &rate)) return 2;
            if (!(rate > 0.0 && rate < 1.0))
                return bad("--rate is the fraction pruned per round and must be in (0, 1)", v);
        } else if (!strcmp(a, "--output-rate")) {
            if (!cli_parse_f64(a, v, -1e300, 1e300, &output_rate)) return 2;
            if (!(output_rate >= 0.0 && output_rate < 1.0))
                return bad("--output-rate must be in [0, 1)", v);
        } else if (!strcmp(a, "--rewind-iter")) {
            if (!cli_parse_i64(a, v, INT64_MIN, INT64_MAX, &rewind)) return 2;
            if (rewind < 0) return bad("--rewind-iter must be >= 0 (0: the initialization)", v);
        } else if (!strcmp(a, "--epochs")) {
            if (!cli_parse_i64(a, v, 1, 100000, &epochs)) return 2;
        } else if (!strcmp(a, "--batch")) {
            if (!cli_parse_i64(a, v, 1, 1 << 20, &batch)) return 2;
        } else if (!strcmp(a, "--val")) {
            if (!cli_parse_i64(a, v, 0, INT64_C(1) << 40, &val)) return 2;
        } else if (!strcmp(a, "--eval-every")) {
            if (!cli_parse_i64(a, v, 0, INT64_C(1) << 40, &eval_every)) return 2;
        } else if (!strcmp(a, "--lr")) {
            if (!cli_parse_f64(a, v, 1e-12, 100.0, &lr)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!cli_parse_i64(a, v, 0, INT64_MAX, &seed)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!cli_parse_i64(a, v, 0, 4096, &threads)) return 2;
        } else {
            fprintf(stderr, "sparrow lottery: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    /* the remaining choices, checked before any data is read */
    sp_optim_kind kind;
    if (!strcmp(optimizer, "sgd")) kind = SP_OPTIM_SGD;
    else if (!strcmp(optimizer, "adam")) kind = SP_OPTIM_ADAM;
    else if (!strcmp(optimizer, "adamw")) kind = SP_OPTIM_ADAMW;
    else return bad("--optimizer must be sgd, adam or adamw", optimizer);
    sp_prune_granularity g;
    if (!strcmp(gran, "layerwise")) g = SP_PRUNE_LAYERWISE;
    else if (!strcmp(gran, "global")) g = SP_PRUNE_GLOBAL;
    else return bad("--granularity must be layerwise or global", gran);
    if (plot) {
        const char *dot = strrchr(plot, '.');
        if (!dot || strcmp(dot, ".svg") != 0)
            return bad("--plot writes an SVG picture: the file name must end in .svg", plot);
    }
    int64_t seeds[MAX_SEEDS];
    int nseeds = 0;
    if (seeds_arg) {
        const char *s = seeds_arg;
        while (*s) {
            char buf[32];
            const char *c = strchr(s, ',');
            size_t len = c ? (size_t)(c - s) : strlen(s);
            if (nseeds == MAX_SEEDS || len == 0 || len >= sizeof buf)
                return bad("--seeds takes 1 to 16 comma-separated seeds", seeds_arg);
            memcpy(buf, s, len);
            buf[len] = '\0';
            if (!cli_parse_i64("--seeds", buf, 0, INT64_MAX, &seeds[nseeds++])) return 2;
            s += len + (c ? 1 : 0);
            if (c && !*s) return bad("--seeds takes 1 to 16 comma-separated seeds", seeds_arg);
        }
        if (nseeds == 0) return bad("--seeds takes 1 to 16 comma-separated seeds", seeds_arg);
    } else {
        seeds[nseeds++] = seed;
    }
    if (output_rate < 0.0) output_rate = rate / 2.0;
    if (lr < 0.0) lr = kind == SP_OPTIM_SGD ? 0.05 : 1.2e-3;

    int rc = 1;
    sp_dataset *all = NULL, *test = NULL, *train = NULL, *vset = NULL;
    char *cfg = NULL;
    bool cfg_malloced = false;
    sp_lottery_round *runs[MAX_SEEDS] = {0};
    sp_lottery_round *mean = NULL;
    if (sp_dataset_open(data, &all, &test) != SP_OK) {
        cli_fail("--data");
        goto done;
    }
    if (access(model, F_OK) == 0) {
        cfg = cli_read_text(model);
        if (!cfg) goto done;
        cfg_malloced = true;
    } else if (sp_model_spec_config(model, &cfg) != SP_OK) {
        cli_fail("--model");
        goto done;
    }
    if (val >= all->n) {
        fprintf(stderr, "sparrow lottery: --val %lld leaves no training data (%lld samples)\n",
                (long long)val, (long long)all->n);
        rc = 2;
        goto done;
    }
    /* T: the steps of one round, for the --rewind-iter check */
    const int64_t ntrain = all->n - val, B = batch < ntrain ? batch : ntrain;
    const int64_t T = (ntrain + B - 1) / B * epochs;
    if (rewind >= T) {
        fprintf(stderr, "sparrow lottery: --rewind-iter %lld is not below the %lld steps of one "
                "round (%lld epochs of %lld batches)\n", (long long)rewind, (long long)T,
                (long long)epochs, (long long)(T / epochs));
        rc = 2;
        goto done;
    }
    mean = calloc((size_t)rounds + 1, sizeof *mean);
    if (!mean) goto done;
    const sp_shape in = {all->c, all->h, all->w};
    const double t0 = wall();
    for (int k = 0; k < nseeds; k++) {
        sp_dataset_free(train);
        sp_dataset_free(vset);
        train = vset = NULL;
        if (val > 0) {
            if (sp_dataset_split(all, val, (uint64_t)seeds[k], &train, &vset) != SP_OK) {
                cli_fail("--val");
                goto done;
            }
        }
        sp_lottery_opts o = sp_lottery_defaults();
        o.rounds = (int)rounds;
        o.rate = rate;
        o.output_rate = output_rate;
        o.rewind_iter = rewind;
        o.granularity = g;
        o.reinit_control = reinit;
        o.train.epochs = epochs;
        o.train.batch = batch;
        o.train.sched = (sp_schedule){.kind = SP_SCHED_CONSTANT, .lr = lr};
        o.train.nthreads = (int)threads;
        o.optim = sp_optim_defaults(kind);
        if (kind == SP_OPTIM_SGD) o.optim.momentum = 0.9f;
        o.data_seed = (uint64_t)seeds[k];
        o.val = vset;
        o.eval_every = eval_every;
        progress pr = {.quiet = quiet, .rounds = (int)rounds, .seed = (long long)seeds[k]};
        o.callback = on_event;
        o.user = &pr;
        runs[k] = calloc((size_t)rounds + 1, sizeof *runs[k]);
        if (!runs[k]) goto done;
        if (!quiet)
            fprintf(stderr, "lottery: %s on %s, seed %lld: %lld rounds at %g (output layer %g), "
                    "rewind to step %lld, %lld steps per training, %lld training / %lld "
                    "validation samples\n", model, data, (long long)seeds[k], (long long)rounds,
                    rate, output_rate, (long long)rewind, (long long)T,
                    (long long)(train ? train->n : all->n), (long long)(vset ? vset->n : 0));
        if (sp_lottery_run(cfg, in, all->classes, (uint64_t)seeds[k], train ? train : all, test,
                           &o, runs[k]) != SP_OK) {
            cli_fail("lottery");
            goto done;
        }
    }
    const int n = (int)rounds + 1;
    mean_rows(runs, nseeds, n, mean);
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, model);
        printf(",\"data\":");
        cli_json_string(stdout, data);
        printf(",\"rate\":%g,\"output_rate\":%g,\"rewind_iter\":%lld,\"epochs\":%lld,"
               "\"batch\":%lld,\"lr\":%g,\"optimizer\":\"%s\",\"granularity\":\"%s\","
               "\"steps_per_round\":%lld,\"val\":%lld,\"eval_every\":%lld,\"seconds\":%.1f,",
               rate, output_rate, (long long)rewind, (long long)epochs, (long long)batch, lr,
               optimizer, gran, (long long)T, (long long)val, (long long)eval_every,
               wall() - t0);
        if (nseeds == 1) {
            printf("\"seed\":%lld,\"rounds\":", (long long)seeds[0]);
            json_rows(stdout, runs[0], n);
        } else {
            printf("\"seeds\":[");
            for (int k = 0; k < nseeds; k++) printf("%s%lld", k ? "," : "", (long long)seeds[k]);
            printf("],\"runs\":[");
            for (int k = 0; k < nseeds; k++) {
                printf("%s{\"seed\":%lld,\"rounds\":", k ? "," : "", (long long)seeds[k]);
                json_rows(stdout, runs[k], n);
                printf("}");
            }
            printf("],\"rounds\":");
            json_rows(stdout, mean, n);
        }
        printf("}\n");
    } else {
        for (int k = 0; k < nseeds; k++) {
            printf("%sseed %lld\n", k ? "\n" : "", (long long)seeds[k]);
            print_table(runs[k], n);
        }
        if (nseeds > 1) {
            printf("\nmean of %d seeds\n", nseeds);
            print_table(mean, n);
        }
    }
    if (plot) {
        char title[256];
        char to[48] = "init";
        if (rewind) snprintf(to, sizeof to, "step %lld", (long long)rewind);
        snprintf(title, sizeof title, "Lottery tickets: %s, %g%% per round, rewind to %s", model,
                 100.0 * rate, to);
        if (write_svg(plot, title, runs, nseeds, n, reinit)) goto done;
        if (!quiet) fprintf(stderr, "lottery: chart -> %s\n", plot);
    }
    rc = 0;
done:
    if (cfg_malloced) free(cfg);
    else sp_free(cfg);
    for (int k = 0; k < MAX_SEEDS; k++) free(runs[k]);
    free(mean);
    sp_dataset_free(all);
    sp_dataset_free(test);
    sp_dataset_free(train);
    sp_dataset_free(vset);
    return rc;
}
