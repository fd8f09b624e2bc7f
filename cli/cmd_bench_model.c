/*
 * cmd_bench_model.c - `sparrow bench model`: the forward pass of a whole model (evaluation
 * mode) at a given batch and thread count, optionally against a second model on the same input
 * (a pruned model against its dense original). The two alternate in timed blocks, so that load
 * from other processes on a shared machine hits both; each time is the median of its blocks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
        "usage: sparrow bench model --model M [--vs M2] [--batch B] [--threads T]\n"
        "                           [--min-time S] [--json]\n"
        "\n"
        "Times the forward pass (evaluation mode) of a model file, a config file or a built-in\n"
        "spec (random weights) on random inputs (uniform in [0, 1), or random token ids below\n"
        "--classes for a model that starts with an embedding); with --vs, also a second model on\n"
        "the same input, alternating blocks of runs.\n"
        "  --batch B      samples per pass (default 64)\n"
        "  --threads T    threads (default all)\n"
        "  --classes N    classes (the vocabulary of a language model) of a spec or config\n"
        "                 (default 10)\n"
        "  --min-time S   seconds of timed runs per model (default 1)\n"
        "  --json         one object: model, batch, threads, ms (median per pass), and with --vs\n"
        "                 vs, vs_ms and speedup = vs_ms / ms\n");
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The per-sample shape a config states on its first line ("input C [H W]"), else Fashion-MNIST's
 * (1, 28, 28); a malformed input line is left for sp_model_new to report. */
static sp_shape config_input(const char *cfg) {
    sp_shape in = {1, 28, 28};
    bool found = false;
    if (sp_model_config_input(cfg, &in, &found) != SP_OK || !found) return (sp_shape){1, 28, 28};
    return in;
}

/* A model from a file (checkpoint or config) or a spec, for the input shape its config states
 * (else (1, 28, 28)) and `classes` classes when it is not a model file. A model file's load time
 * goes to stderr when `tell` (not with --json: `sparrow inspect --json` reports it). */
static sp_model *load(const char *what, int64_t classes, bool tell) {
    if (cli_is_checkpoint(what)) {
        /* forward only: the file is mapped and its weights used in place (docs/FORMAT.md) */
        sp_model *m = NULL;
        sp_model_file_info info;
        const double t0 = now_s();
        if (sp_model_open_info(what, &m, &info) != SP_OK) {
            cli_fail(what);
            return NULL;
        }
        if (tell)
            fprintf(stderr, "%s: loaded in %.2f ms, %s, %llu of %llu weight bytes used in place\n",
                    what, 1e3 * (now_s() - t0), info.mapped ? "mapped" : "copied",
                    (unsigned long long)info.in_place_bytes, (unsigned long long)info.weight_bytes);
        return m;
    }
    char *cfg = NULL;
    bool from_file = access(what, F_OK) == 0;
    if (from_file) {
        cfg = cli_read_text(what); /* malloc'd */
        if (!cfg) return NULL;
    } else if (sp_model_spec_config(what, &cfg) != SP_OK) { /* sp_alloc'd */
        cli_fail(what);
        return NULL;
    }
    sp_model *m = NULL;
    if (sp_model_new(cfg, config_input(cfg), classes, 1, &m) != SP_OK) cli_fail(what);
    if (from_file) free(cfg);
    else sp_free(cfg);
    return m;
}

int cmd_bench_model(int argc, char **argv) {
    const char *model = NULL, *vs = NULL;
    int64_t batch = 64, threads = 0, classes = 10;
    double min_time = 1.0;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sparrow bench model: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--vs")) vs = v;
        else if (!strcmp(a, "--batch")) {
            if (!cli_parse_i64(a, v, 1, 1 << 16, &batch)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!cli_parse_i64(a, v, 0, 4096, &threads)) return 2;
        } else if (!strcmp(a, "--classes")) {
            if (!cli_parse_i64(a, v, 1, 1 << 20, &classes)) return 2;
        } else if (!strcmp(a, "--min-time")) {
            if (!cli_parse_f64(a, v, 0.01, 600, &min_time)) return 2;
        } else {
            fprintf(stderr, "sparrow bench model: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "sparrow bench model: --model is required (see --help)\n");
        return 2;
    }
    int rc = 1;
    sp_model *m[2] = {load(model, classes, !json), vs ? load(vs, classes, !json) : NULL};
    float *x = NULL;
    double *t[2] = {NULL, NULL};
    if (!m[0] || (vs && !m[1])) goto done;
    sp_shape in = sp_model_in(m[0]);
    int64_t f = in.c * in.h * in.w;
    if (m[1]) {
        sp_shape in2 = sp_model_in(m[1]);
        if (in2.c * in2.h * in2.w != f) {
            fprintf(stderr, "sparrow bench model: %s takes %lld features, %s %lld\n", model,
                    (long long)f, vs, (long long)(in2.c * in2.h * in2.w));
            goto done;
        }
    }
    x = malloc(sizeof(float) * (size_t)(f * batch));
    int maxb = 4096;
    t[0] = malloc(sizeof(double) * (size_t)maxb);
    t[1] = malloc(sizeof(double) * (size_t)maxb);
    if (!x || !t[0] || !t[1]) goto done;
    sp_rng r;
    sp_rng_init(&r, 1, 0);
    /* a model that starts with an embedding reads token ids, below its vocabulary: the
     * smaller of the two models' classes (a model file brings its own) */
    sp_layer_info first;
    bool ids = sp_model_layer(m[0], 0, &first) == SP_OK && !strcmp(first.kind, "embedding");
    int64_t vocab = sp_model_classes(m[0]);
    if (m[1]) vocab = vocab < sp_model_classes(m[1]) ? vocab : sp_model_classes(m[1]);
    for (int64_t i = 0; i < f * batch; i++)
        x[i] = ids ? (float)sp_rng_below(&r, (uint64_t)vocab) : sp_rng_uniform(&r);
    int nm = m[1] ? 2 : 1;
    const float *y;
    for (int k = 0; k < nm; k++) {
        sp_model_set_threads(m[k], (int)threads);
        for (int w = 0; w < 3; w++)
            if (sp_model_forward(m[k], x, batch, false, &y) != SP_OK) {
                cli_fail("forward");
                goto done;
            }
    }
    /* calibrate a block to ~20 ms, then alternate blocks until each model had min_time */
    int reps[2];
    for (int k = 0; k < nm; k++) {
        double t0 = now_s();
        int n = 0;
        while (now_s() - t0 < 0.02) {
            sp_model_forward(m[k], x, batch, false, &y);
            n++;
        }
        reps[k] = n;
    }
    double total[2] = {0, 0};
    int nb[2] = {0, 0};
    while ((total[0] < min_time || (nm == 2 && total[1] < min_time)) && nb[0] < maxb) {
        for (int k = 0; k < nm; k++) {
            double t0 = now_s();
            for (int i = 0; i < reps[k]; i++) sp_model_forward(m[k], x, batch, false, &y);
            double dt = now_s() - t0;
            total[k] += dt;
            t[k][nb[k]++] = dt / reps[k];
        }
    }
    double ms[2];
    for (int k = 0; k < nm; k++) {
        qsort(t[k], (size_t)nb[k], sizeof(double), cmp_d);
        ms[k] = 1e3 * t[k][nb[k] / 2];
    }
    int th = (int)(threads > 0 ? threads : sp_threads_available());
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, model);
        printf(",\"batch\":%lld,\"threads\":%d,\"ms\":%.6f", (long long)batch, th, ms[0]);
        if (nm == 2) {
            printf(",\"vs\":");
            cli_json_string(stdout, vs);
            printf(",\"vs_ms\":%.6f,\"speedup\":%.4f", ms[1], ms[1] / ms[0]);
        }
        printf("}\n");
    } else {
        printf("%s: %.4f ms per forward pass (batch %lld, %d threads, median of %d blocks)\n",
               model, ms[0], (long long)batch, th, nb[0]);
        if (nm == 2)
            printf("%s: %.4f ms -> %s is %.2fx faster\n", vs, ms[1], model, ms[1] / ms[0]);
    }
    rc = 0;
done:
    sp_model_free(m[0]);
    sp_model_free(m[1]);
    free(x);
    free(t[0]);
    free(t[1]);
    return rc;
}
