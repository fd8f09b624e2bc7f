/*
 * moe_stats.c - the command line's view of mixture-of-experts routing: snapshots of the
 * per-layer statistics (sp_model_moe_stats), as a one-line summary, a JSON array and a table,
 * shared by train, eval, inspect and prune (docs/MOE.md).
 *
 * drop_rate is the fraction of routing decisions a capacity limit dropped:
 * dropped / (assignments + dropped), which for token choice is dropped / (tokens * top_k); it is
 * 0 for dropless layers and for expert choice (which selects exactly its capacity).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_moe_count(const sp_model *m) {
    int n = 0;
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        sp_layer_info li;
        if (sp_model_layer(m, i, &li) == SP_OK && !strcmp(li.kind, "moe")) n++;
    }
    return n;
}

/* The k-th "moe ..." line of the model's normalized config (the k-th moe layer: blocks do not
 * nest and the config holds each once), without its " {", into buf. */
static void moe_config_line(const sp_model *m, int k, char *buf, size_t n) {
    buf[0] = '\0';
    for (const char *s = sp_model_config(m); s && *s;) {
        const char *b = s;
        while (*b == ' ') b++;
        size_t len = strcspn(b, "\n");
        if (!strncmp(b, "moe ", 4) && k-- == 0) {
            while (len > 0 && (b[len - 1] == '{' || b[len - 1] == ' ')) len--;
            snprintf(buf, n, "%.*s", (int)len, b);
            return;
        }
        if (!b[len]) return;
        s = b + len + 1;
    }
}

/* The value of key= in a config line ("routing=token" -> "token"), or dflt. */
static void config_value(const char *line, const char *key, const char *dflt, char *out,
                         size_t n) {
    const char *p = strstr(line, key);
    if (!p) {
        snprintf(out, n, "%s", dflt);
        return;
    }
    p += strlen(key);
    snprintf(out, n, "%.*s", (int)strcspn(p, " "), p);
}

int cli_moe_snap_take(const sp_model *m, cli_moe_snap *s) {
    cli_moe_snap_free(s);
    const int n = cli_moe_count(m);
    if (n == 0) return 0;
    s->layer = calloc((size_t)n, sizeof *s->layer);
    if (!s->layer) {
        fprintf(stderr, "sparrow: out of memory\n");
        return 1;
    }
    for (int i = 0, k = 0; i < sp_model_nlayers(m) && k < n; i++) {
        sp_moe_stats st;
        if (sp_model_moe_stats(m, i, &st) != SP_OK) continue;
        cli_moe_layer *L = &s->layer[k];
        sp_layer_info li;
        sp_model_layer(m, i, &li);
        L->index = i;
        snprintf(L->name, sizeof L->name, "%s", li.name);
        moe_config_line(m, k, L->config, sizeof L->config);
        config_value(L->config, "routing=", "token", L->routing, sizeof L->routing);
        L->experts = st.experts;
        L->top_k = st.top_k;
        L->tokens = st.tokens;
        L->assignments = st.assignments;
        L->dropped = st.dropped;
        L->load_max_over_mean = st.load_max_over_mean;
        L->router_entropy = st.router_entropy;
        L->load = malloc(sizeof(int64_t) * (size_t)st.experts);
        s->n = ++k;
        if (!L->load) {
            fprintf(stderr, "sparrow: out of memory\n");
            return 1;
        }
        memcpy(L->load, st.load, sizeof(int64_t) * (size_t)st.experts);
    }
    return 0;
}

void cli_moe_snap_free(cli_moe_snap *s) {
    for (int k = 0; s->layer && k < s->n; k++) free(s->layer[k].load);
    free(s->layer);
    s->layer = NULL;
    s->n = 0;
}

double cli_moe_drop_rate(const cli_moe_layer *L) {
    const int64_t tried = L->assignments + L->dropped;
    return tried > 0 ? (double)L->dropped / (double)tried : 0.0;
}

double cli_moe_snap_max_load(const cli_moe_snap *s) {
    double mx = 0.0;
    for (int k = 0; k < s->n; k++)
        if (s->layer[k].load_max_over_mean > mx) mx = s->layer[k].load_max_over_mean;
    return mx;
}

static double snap_max_drop(const cli_moe_snap *s) {
    double mx = 0.0;
    for (int k = 0; k < s->n; k++) {
        double d = cli_moe_drop_rate(&s->layer[k]);
        if (d > mx) mx = d;
    }
    return mx;
}

void cli_moe_snap_summary(const cli_moe_snap *s, FILE *f) {
    if (s->n == 0) return;
    fprintf(f, "  load max/mean %.2f  drop %.1f%%", cli_moe_snap_max_load(s),
            100.0 * snap_max_drop(s));
}

void cli_moe_snap_json(const cli_moe_snap *s, FILE *f) {
    if (s->n == 0) return;
    fprintf(f, ",\"expert_load_max_over_mean\":%.6g,\"moe\":[", cli_moe_snap_max_load(s));
    for (int k = 0; k < s->n; k++) {
        const cli_moe_layer *L = &s->layer[k];
        fprintf(f, "%s{\"name\":", k ? "," : "");
        cli_json_string(f, L->name);
        fprintf(f, ",\"routing\":");
        cli_json_string(f, L->routing);
        fprintf(f, ",\"experts\":%d,\"top_k\":%d,\"tokens\":%lld,\"assignments\":%lld,"
                "\"dropped\":%lld,\"load\":[", L->experts, L->top_k, (long long)L->tokens,
                (long long)L->assignments, (long long)L->dropped);
        for (int e = 0; e < L->experts; e++)
            fprintf(f, "%s%lld", e ? "," : "", (long long)L->load[e]);
        fprintf(f, "],\"load_max_over_mean\":%.6g,\"router_entropy\":%.6g,\"drop_rate\":%.6g}",
                L->load_max_over_mean, L->router_entropy, cli_moe_drop_rate(L));
    }
    fputc(']', f);
}

void cli_moe_snap_table(const cli_moe_snap *s, FILE *f) {
    for (int k = 0; k < s->n; k++) {
        const cli_moe_layer *L = &s->layer[k];
        fprintf(f, "%s: %lld tokens, top_k %d, %s routing: load max/mean %.3f, router entropy "
                "%.3f nats, drop rate %.2f%%\n", L->name, (long long)L->tokens, L->top_k,
                L->routing, L->load_max_over_mean, L->router_entropy,
                100.0 * cli_moe_drop_rate(L));
        int64_t sum = 0;
        for (int e = 0; e < L->experts; e++) sum += L->load[e];
        fprintf(f, "  %-8s %12s %8s\n", "expert", "tokens", "share");
        for (int e = 0; e < L->experts; e++)
            fprintf(f, "  %-8d %12lld %7.2f%%\n", e, (long long)L->load[e],
                    sum > 0 ? 100.0 * (double)L->load[e] / (double)sum : 0.0);
    }
}

const char *cli_text_default(const sp_checkpoint *ck, char *buf, size_t n) {
    if (!sp_model_vocab(ck->model, NULL) || !ck->meta) return NULL;
    const char *d = strstr(ck->meta, "--data text:");
    if (!d || (d != ck->meta && d[-1] != '\n')) return NULL;
    d += strlen("--data ");
    snprintf(buf, n, "%.*s", (int)strcspn(d, "\n"), d);
    return buf;
}

int cli_set_top_k(sp_model *m, int64_t k) {
    if (sp_model_moe_set_top_k(m, (int)k) != SP_OK) return cli_fail("--top-k");
    return 0;
}
