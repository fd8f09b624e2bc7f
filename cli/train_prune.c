/*
 * train_prune.c - the pruning options of `sparrow train` (and of `sparrow prune --schedule
 * gradual`, which trains): parsing, the text saved in a model file for --resume, turning the
 * model's dense linear layers into masked ones, the schedule hook, and the sparse model written
 * at the end. Recipes (docs/RECIPES.md) are files of these and the other train options.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

bool cli_prune_enabled(const cli_prune_settings *p) {
    return p->sparsity > 0.0 || !strcmp(p->granularity, "nm");
}

int cli_prune_option(const char *a, const char *v, cli_prune_settings *p) {
    if (!strcmp(a, "--prune-sparsity")) return !cli_parse_f64(a, v, 0.0, 0.999999, &p->sparsity);
    if (!strcmp(a, "--prune-start")) return !cli_parse_f64(a, v, 0.0, 1.0, &p->start);
    if (!strcmp(a, "--prune-end")) return !cli_parse_f64(a, v, 0.0, 1.0, &p->end);
    if (!strcmp(a, "--prune-every")) return !cli_parse_i64(a, v, 1, INT64_C(1) << 40, &p->every);
    if (!strcmp(a, "--prune-layers")) {
        p->layers = v;
        return 0;
    }
    static const struct {
        const char *opt, *choices;
    } words[] = {{"--prune-method", "magnitude random"},
                 {"--prune-granularity", "layerwise global nm block"},
                 {"--prune-schedule", "gradual oneshot"},
                 {"--prune-format", "csr bsr nm mask auto"}};
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++) {
        if (strcmp(a, words[k].opt)) continue;
        const char *c = words[k].choices;
        size_t vl = strlen(v);
        for (const char *q = c; *q;) {
            const char *e = strchr(q, ' ');
            size_t ql = e ? (size_t)(e - q) : strlen(q);
            if (ql == vl && !strncmp(q, v, vl)) {
                if (k == 0) p->method = v;
                else if (k == 1) p->granularity = v;
                else if (k == 2) p->schedule = v;
                else p->format = v;
                return 0;
            }
            q = e ? e + 1 : q + ql;
        }
        fprintf(stderr, "sparrow: %s must be one of: %s; got '%s'\n", a, c, v);
        return 1;
    }
    int64_t x, y;
    if (!strcmp(a, "--prune-nm")) {
        if (!cli_parse_pair(a, v, ':', 1, 32, &x, &y)) return 1;
        if (x >= y) {
            fprintf(stderr, "sparrow: --prune-nm %s: N must be smaller than M\n", v);
            return 1;
        }
        p->n = (int32_t)x;
        p->m = (int32_t)y;
        return 0;
    }
    if (!strcmp(a, "--prune-block")) {
        if (!cli_parse_pair(a, v, 'x', 1, 64, &x, &y)) return 1;
        p->br = (int32_t)x;
        p->bc = (int32_t)y;
        return 0;
    }
    if (!strcmp(a, "--prune-last")) {
        p->prune_last = true;
        return 0;
    }
    return -1;
}

void cli_prune_text(const cli_prune_settings *p, char *buf, size_t n) {
    if (!cli_prune_enabled(p)) {
        buf[0] = '\0';
        return;
    }
    snprintf(buf, n,
             "--prune-sparsity %.17g\n--prune-method %s\n--prune-granularity %s\n"
             "--prune-nm %d:%d\n--prune-block %dx%d\n--prune-schedule %s\n--prune-start %.17g\n"
             "--prune-end %.17g\n--prune-every %lld\n--prune-format %s\n%s%s%s%s",
             p->sparsity, p->method, p->granularity, (int)p->n, (int)p->m, (int)p->br,
             (int)p->bc, p->schedule, p->start, p->end, (long long)p->every,
             cli_prune_format(p), p->prune_last ? "--prune-last\n" : "",
             p->layers ? "--prune-layers " : "", p->layers ? p->layers : "",
             p->layers ? "\n" : "");
}

const char *cli_prune_format(const cli_prune_settings *p) {
    if (p->format) return p->format;
    if (!strcmp(p->granularity, "nm")) return "nm";
    if (!strcmp(p->granularity, "block")) return "bsr";
    return "csr";
}

/* Fills own[0..n) from "NAME=S,NAME=S": -1 where not named. The output layer (the last linear
 * one) can be named only when it is pruned (prune_last). */
static int parse_layers(const char *list, const sp_model *m, double *own, int n,
                        bool prune_last) {
    for (int i = 0; i < n; i++) own[i] = -1.0;
    if (!list) return 0;
    const char *s = list;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        char name[64], val[64];
        if (!eq || (size_t)(eq - s) >= sizeof name || len - (size_t)(eq - s) - 1 >= sizeof val) {
            fprintf(stderr, "sparrow: --prune-layers: '%.*s' is not NAME=SPARSITY\n", (int)len, s);
            return 1;
        }
        snprintf(name, sizeof name, "%.*s", (int)(eq - s), s);
        snprintf(val, sizeof val, "%.*s", (int)(len - (size_t)(eq - s) - 1), eq + 1);
        int found = -1;
        char names[512] = "";
        for (int i = 0; i < n; i++) {
            sp_layer_info li;
            if (sp_model_layer(m, i, &li) != SP_OK || strcmp(li.kind, "linear")) continue;
            if (!strcmp(li.name, name)) found = i;
            if (strlen(names) + strlen(li.name) + 3 < sizeof names) {
                if (names[0]) strcat(names, ", ");
                strcat(names, li.name);
            }
        }
        if (found < 0) {
            fprintf(stderr, "sparrow: --prune-layers: the model has no linear layer named '%s' "
                            "(its linear layers: %s)\n", name, names);
            return 1;
        }
        int last = -1;
        for (int i = 0; i < n; i++) {
            sp_layer_info li;
            if (sp_model_layer(m, i, &li) == SP_OK && !strcmp(li.kind, "linear")) last = i;
        }
        if (found == last && !prune_last) {
            fprintf(stderr, "sparrow: --prune-layers: '%s' is the output layer, which stays dense "
                            "unless --prune-last is given\n", name);
            return 1;
        }
        double v;
        if (!cli_parse_f64("--prune-layers", val, 0.0, 0.999999, &v)) return 1;
        own[found] = v;
        s = e ? e + 1 : s + len;
    }
    return 0;
}

int cli_prune_setup(const cli_prune_settings *p, sp_model **m, bool fresh, int64_t total_steps,
                    sp_prune_gradual *g, double **own) {
    *own = NULL;
    memset(g, 0, sizeof *g);
    if (p->end < p->start) {
        fprintf(stderr, "sparrow: --prune-end %g is before --prune-start %g\n", p->end, p->start);
        return 1;
    }
    if (!strcmp(cli_prune_format(p), "nm") && strcmp(p->granularity, "nm")) {
        fprintf(stderr, "sparrow: --prune-format nm needs --prune-granularity nm\n");
        return 1;
    }
    if (!strcmp(cli_prune_format(p), "nm") && p->layers) {
        fprintf(stderr, "sparrow: --prune-layers gives layers an unstructured sparsity, which N:M "
                        "storage cannot hold: use --prune-format csr or drop --prune-layers\n");
        return 1;
    }
    if (fresh) {
        sp_prune_spec ms = {.granularity = SP_PRUNE_LAYERWISE, .sparsity = 0.0,
                            .format = "mask", .keep_last = !p->prune_last};
        sp_model *mm = NULL;
        if (sp_model_prune(*m, &ms, &mm) != SP_OK) return cli_fail("pruning");
        sp_model_free(*m);
        *m = mm;
    }
    const int n = sp_model_nlayers(*m);
    double *o = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!o) return cli_fail("pruning");
    if (parse_layers(p->layers, *m, o, n, p->prune_last)) {
        free(o);
        return 1;
    }
    g->spec = (sp_prune_spec){
        .criterion = !strcmp(p->method, "random") ? SP_PRUNE_RANDOM : SP_PRUNE_MAGNITUDE,
        .granularity = !strcmp(p->granularity, "global") ? SP_PRUNE_GLOBAL
                     : !strcmp(p->granularity, "nm") ? SP_PRUNE_NM
                     : !strcmp(p->granularity, "block") ? SP_PRUNE_BLOCK : SP_PRUNE_LAYERWISE,
        .n = p->n, .m = p->m, .br = p->br, .bc = p->bc, .keep_last = !p->prune_last,
        .seed = 1, .layer_sparsity = o, .nlayer_sparsity = n};
    /* the schedule over this run's steps: ramp from --prune-start to --prune-end */
    const int64_t last = total_steps > 0 ? total_steps - 1 : 0;
    int64_t t0 = (int64_t)llround(p->start * (double)total_steps), t1;
    t1 = (int64_t)llround(p->end * (double)total_steps);
    if (t0 > last) t0 = last;
    if (t1 > last) t1 = last;
    /* N:M has no sparsity to ramp: it is applied once, at --prune-start */
    bool oneshot = !strcmp(p->schedule, "oneshot") || g->spec.granularity == SP_PRUNE_NM ||
                   t1 - t0 < p->every;
    if (oneshot) {
        g->sched = (sp_prune_schedule){.s_i = p->sparsity, .s_f = p->sparsity, .t0 = t0,
                                       .dt = 1, .n = 1};
    } else {
        int64_t intervals = (t1 - t0) / p->every;
        g->sched = (sp_prune_schedule){.s_i = 0.0, .s_f = p->sparsity, .t0 = t0,
                                       .dt = p->every, .n = intervals};
    }
    if (sp_prune_schedule_check(&g->sched) != SP_OK) {
        free(o);
        return cli_fail("pruning schedule");
    }
    *own = o;
    return 0;
}

int cli_prune_finish(const cli_prune_settings *p, const sp_model *m, sp_model **final) {
    const char *f = cli_prune_format(p);
    *final = NULL;
    if (!strcmp(f, "mask")) return 0;
    int32_t a = 0, b = 0;
    if (!strcmp(f, "bsr")) a = p->br, b = p->bc;
    if (!strcmp(f, "nm")) a = p->n, b = p->m;
    if (!strcmp(f, "auto")) a = 64, b = 1; /* the fastest forward pass at batch 64, 1 thread */
    if (sp_model_sparsify(m, f, a, b, final) != SP_OK) return cli_fail("--prune-format");
    return 0;
}

/* ---- recipes ---------------------------------------------------------------------------------- */

int cli_recipe_read(const char *path, cli_recipe *r) {
    memset(r, 0, sizeof *r);
    r->text = cli_read_text(path);
    if (!r->text) return 1;
    /* the syntax is checked by the library (sp_recipe_parse); the values are parsed as the
     * command line's options by the caller */
    sp_recipe *rc = NULL;
    if (sp_recipe_parse(r->text, strlen(r->text), &rc) != SP_OK) {
        fprintf(stderr, "sparrow: %s: %s\n", path, sp_last_error());
        return 1;
    }
    int rv = 0;
    if (sp_recipe_layers(rc) && !(r->layers = strdup(sp_recipe_layers(rc)))) rv = 1;
    for (int i = 0; i < sp_recipe_count(rc) && !rv; i++) {
        const char *key, *val;
        int line;
        sp_recipe_setting(rc, i, &key, &val, &line);
        char *opt = malloc(strlen(key) + 3), *v = val ? strdup(val) : NULL;
        if (opt) r->owned[r->nowned++] = opt;
        if (v) r->owned[r->nowned++] = v;
        if (!opt || (val && !v)) {
            rv = 1;
            break;
        }
        sprintf(opt, "--%s", key);
        r->line[r->argc] = line;
        r->argv[r->argc++] = opt;
        if (v) {
            r->line[r->argc] = line;
            r->argv[r->argc++] = v;
        }
    }
    sp_recipe_free(rc);
    return rv;
}

void cli_recipe_free(cli_recipe *r) {
    for (int i = 0; i < r->nowned; i++) free(r->owned[i]);
    free(r->layers);
    free(r->text);
    memset(r, 0, sizeof *r);
}

double cli_model_sparsity(const sp_model *m) {
    int64_t kept = 0, total = 0;
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        sp_layer_info li;
        sp_mask *p = NULL;
        const sp_csr *c = sp_model_layer_csr(m, i);
        if (c) { /* without a dense bit mask: a sparse layer may be huge */
            kept += c->nnz;
            total += c->rows * c->cols;
            continue;
        }
        if (sp_model_layer(m, i, &li) != SP_OK || strcmp(li.kind, "linear") ||
            sp_model_layer_pattern(m, i, &p) != SP_OK || !p)
            continue;
        kept += sp_mask_count(p);
        total += p->rows * p->cols;
        sp_mask_free(p);
    }
    return total > 0 ? 1.0 - (double)kept / (double)total : 0.0;
}
