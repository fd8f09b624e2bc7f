/*
 * train_sparse.c - the sparse-training options of `sparrow train` (--sparse-train set|rigl|
 * static and its settings): parsing, the text saved in a model file for --resume, the sparse
 * config of a fresh model, and the topology-update hook (src/prune/dst.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"

bool cli_sparse_enabled(const cli_sparse_settings *p) { return p->kind != NULL; }

double cli_sparse_until(const cli_sparse_settings *p) {
    if (p->update_until > 0.0) return p->update_until;
    return p->kind && !strcmp(p->kind, "rigl") ? 0.75 : 1.0;
}

int cli_sparse_option(const char *a, const char *v, cli_sparse_settings *p) {
    if (!strcmp(a, "--sparse-train")) {
        if (strcmp(v, "set") && strcmp(v, "rigl") && strcmp(v, "static")) {
            fprintf(stderr, "sparrow: --sparse-train must be set, rigl or static, got '%s'\n", v);
            return 1;
        }
        p->kind = v;
        return 0;
    }
    if (!strcmp(a, "--density")) {
        if (!cli_parse_f64(a, v, 0.0, 1.0, &p->density)) return 1;
        if (p->density <= 0.0) {
            fprintf(stderr, "sparrow: --density %s must be in (0, 1]\n", v);
            return 1;
        }
        return 0;
    }
    if (!strcmp(a, "--epsilon")) return !cli_parse_f64(a, v, 0.0, 1e9, &p->epsilon);
    if (!strcmp(a, "--distribution")) {
        if (strcmp(v, "uniform") && strcmp(v, "er") && strcmp(v, "erk")) {
            fprintf(stderr, "sparrow: --distribution must be uniform, er or erk, got '%s'\n", v);
            return 1;
        }
        p->distribution = v;
        return 0;
    }
    if (!strcmp(a, "--update-every")) {
        if (!cli_parse_i64(a, v, 0, INT64_C(1) << 40, &p->update_every)) return 1;
        if (p->update_every < 1) {
            fprintf(stderr, "sparrow: --update-every %s must be >= 1 (steps between topology "
                            "updates)\n", v);
            return 1;
        }
        return 0;
    }
    if (!strcmp(a, "--drop-fraction")) {
        if (!cli_parse_f64(a, v, 0.0, 1.0, &p->drop_fraction)) return 1;
        if (p->drop_fraction >= 1.0) {
            fprintf(stderr, "sparrow: --drop-fraction %s must be in [0, 1)\n", v);
            return 1;
        }
        return 0;
    }
    if (!strcmp(a, "--update-until")) {
        if (!cli_parse_f64(a, v, 0.0, 1.0, &p->update_until)) return 1;
        if (p->update_until <= 0.0) {
            fprintf(stderr, "sparrow: --update-until %s must be in (0, 1] (the fraction of the "
                            "run after which the topology stays)\n", v);
            return 1;
        }
        return 0;
    }
    if (!strcmp(a, "--sparse-last")) {
        p->sparse_last = true;
        return 0;
    }
    return -1;
}

void cli_sparse_text(const cli_sparse_settings *p, char *buf, size_t n) {
    if (!cli_sparse_enabled(p)) {
        buf[0] = '\0';
        return;
    }
    snprintf(buf, n,
             "--sparse-train %s\n--density %.17g\n--epsilon %.17g\n--distribution %s\n"
             "--update-every %lld\n--drop-fraction %.17g\n--update-until %.17g\n%s",
             p->kind, p->density, p->epsilon, p->distribution, (long long)p->update_every,
             p->drop_fraction, cli_sparse_until(p), p->sparse_last ? "--sparse-last\n" : "");
}

int cli_sparse_config(const cli_sparse_settings *p, const char *cfg, sp_shape in,
                      int64_t classes, char **out) {
    sp_prune_alloc dist = !strcmp(p->distribution, "uniform") ? SP_PRUNE_ALLOC_UNIFORM
                        : !strcmp(p->distribution, "er") ? SP_PRUNE_ALLOC_ER : SP_PRUNE_ALLOC_ERK;
    if (sp_dst_config(cfg, in, classes, dist, p->density, p->epsilon, p->sparse_last, out) !=
        SP_OK)
        return cli_fail("--sparse-train");
    return 0;
}

int cli_sparse_setup(const cli_sparse_settings *p, const sp_model *m, uint64_t seed,
                     const sp_dataset *train, int64_t batch, int64_t total_steps, int nthreads,
                     sp_dst *d) {
    bool any = false;
    for (int i = 0; i < sp_model_nlayers(m); i++) any = any || sp_model_layer_csr(m, i);
    if (!any) {
        fprintf(stderr, "sparrow: --sparse-train: the model has no CSR linear layer (a saved "
                        "dense model cannot be trained sparse; start from a spec or config)\n");
        return 1;
    }
    *d = (sp_dst){.kind = !strcmp(p->kind, "set") ? SP_DST_SET
                        : !strcmp(p->kind, "rigl") ? SP_DST_RIGL : SP_DST_STATIC,
                  .update_every = p->update_every, .drop_fraction = p->drop_fraction,
                  .seed = seed, .data = train, .batch = batch, .nthreads = nthreads};
    /* no updates from --update-until of the run on: by default RigL stops at 75%, its drop
     * fraction annealed by cosine to 0 there (Evci et al. 2020), and SET goes on to the end */
    d->end_step = (int64_t)(cli_sparse_until(p) * (double)total_steps);
    if (d->end_step < 1) d->end_step = 1;
    if (sp_dst_check(d) != SP_OK) return cli_fail("--sparse-train");
    return 0;
}

void cli_sparse_json(const sp_model *m, const sp_dst *d, FILE *f) {
    fprintf(f, ",\"sparse_train\":\"%s\",\"layers_nnz\":[", sp_dst_name(d->kind));
    bool first = true;
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        sp_layer_info li;
        if (sp_model_layer(m, i, &li) != SP_OK || strcmp(li.kind, "linear")) continue;
        const sp_csr *c = sp_model_layer_csr(m, i);
        fprintf(f, "%s%lld", first ? "" : ",", (long long)(c ? c->nnz : li.out.c * li.in.c));
        first = false;
    }
    struct rusage ru;
    double peak_mb = getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : -1.0;
    fprintf(f, "],\"topology_updates\":%lld,\"topology_update_seconds\":%.3f,\"peak_rss_mb\":%.1f",
            (long long)d->updates, d->update_seconds, peak_mb);
}
