/*
 * model_prune.c - one-shot pruning of a whole model: scores and masks from the pure core
 * (criteria.c, granularity.c), then a new model whose pruned linear layers are built on those
 * patterns in a sparse format (sp_model_new_with_patterns) and take the surviving weights.
 *
 * The new config is the old one with " format=..." (and the N:M or block shape) appended to each
 * pruned layer's line; config lines map to layers in depth-first order (every line but "input"
 * and "}" is one layer), the order of sp_model_layer, except that the body of a moe block is
 * written once for all of its experts (sp_prune_rewrite_config walks it once per expert).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/prune.h"
#include "sparrow/nn.h"

#include "../core/internal.h"
#include "internal.h"
#include "../nn/seq.h"

#define MAX_LAYERS 4096

static bool prunable(const sp_layer_info *li) {
    return !strcmp(li->kind, "linear") && !strcmp(li->format, "dense");
}

const char *sp_cfg_next_line(const char *s, sp_cfg_line *l) {
    const char *end = strchr(s, '\n');
    l->text = s;
    l->len = end ? (size_t)(end - s) : strlen(s);
    const char *q = s;
    while (q < s + l->len && (*q == ' ' || *q == '\t')) q++;
    l->body = q;
    l->is_layer = q < s + l->len && strncmp(q, "input", 5) != 0 && *q != '}' && *q != '#';
    return end ? end + 1 : s + l->len;
}

/* True if the option token t (up to its '=') is one of the keys set by opt ("k1=v1 k2=v2"). */
static bool key_in(const char *t, size_t tl, const char *opt) {
    const char *eq = memchr(t, '=', tl);
    if (!eq) return false;
    size_t kl = (size_t)(eq - t);
    for (const char *o = opt; *o;) {
        while (*o == ' ') o++;
        const char *oe = strchr(o, '=');
        if (!oe) break;
        if ((size_t)(oe - o) == kl && !strncmp(o, t, kl)) return true;
        o = strchr(o, ' ');
        if (!o) break;
    }
    return false;
}

/* The config with the i-th layer line carrying opts[i] (when not NULL): its options replace
 * those of the same key, a trailing comment is dropped. Returns owned text. */
char *sp_prune_rewrite_lines(const char *cfg, char *const *opts, int n) {
    size_t extra = 0;
    for (int i = 0; i < n; i++)
        if (opts[i]) extra += strlen(opts[i]) + 1;
    size_t len = strlen(cfg);
    char *t = sp_alloc(len + extra + 1);
    if (!t) return NULL;
    size_t o = 0;
    int layer = 0;
    const char *s = cfg;
    while (*s) {
        sp_cfg_line line;
        const char *next = sp_cfg_next_line(s, &line);
        const size_t ll = line.len;
        const bool is_layer = line.is_layer;
        const char *opt = is_layer && layer < n ? opts[layer] : NULL;
        if (is_layer) layer++;
        if (!opt) {
            memcpy(t + o, s, ll);
            o += ll;
        } else if (opt[0] == '=') {
            /* the whole line replaced, its indentation kept */
            const size_t ind = (size_t)(line.body - s);
            memcpy(t + o, s, ind);
            o += ind;
            memcpy(t + o, opt + 1, strlen(opt + 1));
            o += strlen(opt + 1);
        } else {
            /* the line's tokens up to a comment, without those that opt sets, then opt */
            const char *p = s, *stop = memchr(s, '#', ll);
            if (!stop) stop = s + ll;
            bool first = true;
            while (p < stop) {
                while (p < stop && (*p == ' ' || *p == '\t')) p++;
                const char *te = p;
                while (te < stop && *te != ' ' && *te != '\t') te++;
                if (te > p && !key_in(p, (size_t)(te - p), opt)) {
                    if (!first) t[o++] = ' ';
                    memcpy(t + o, p, (size_t)(te - p));
                    o += (size_t)(te - p);
                    first = false;
                }
                p = te;
            }
            t[o++] = ' ';
            memcpy(t + o, opt, strlen(opt));
            o += strlen(opt);
        }
        if (s[ll] == '\n') t[o++] = '\n';
        s = next;
    }
    t[o] = '\0';
    return t;
}

/* ---- layers to lines ------------------------------------------------------------------------- *
 * A moe block's config holds its expert body once while the model holds it once per expert
 * (plus a shared expert), each instance with its own layer indices; a residual body maps one to
 * one. Walking the lines as the parser does gives every layer its line. */

typedef struct line_map {
    const char *cfg;
    int nlines;             /* layer lines */
    const char **line;      /* start of each layer line */
    char *const *opts;      /* by layer */
    int n;
    const char **chosen;    /* by layer line: the options of its instances */
    bool *seen;
    int *line_of;           /* by layer (may be NULL): its layer line */
    bool check;             /* instances must agree */
    int next;               /* next layer index */
} line_map;

/* Value of option key on the line starting at s (up to the newline), as an integer, or def. */
static long line_int(const char *s, const char *key, long def) {
    const char *end = strchr(s, '\n');
    const size_t kl = strlen(key);
    if (!end) end = s + strlen(s);
    for (const char *p = s; p + kl < end; p++)
        if ((p == s || p[-1] == ' ' || p[-1] == '\t') && !strncmp(p, key, kl) && p[kl] == '=')
            return strtol(p + kl + 1, NULL, 10);
    return def;
}

static bool starts_word(const char *body, const char *w) {
    size_t k = strlen(w);
    return !strncmp(body, w, k) && (body[k] == ' ' || body[k] == '\t' || body[k] == '\n' ||
                                    body[k] == '\0');
}

/* Walks the lines from *pos (a layer-line ordinal; *s the text there) to the end of the
 * enclosing block, giving each layer line its layers' options. */
static sp_status walk_lines(line_map *lm, const char **s, int *pos, int depth) {
    while (**s) {
        sp_cfg_line l;
        const char *next = sp_cfg_next_line(*s, &l);
        if (!l.is_layer) {
            *s = next;
            if (l.body < l.text + l.len && *l.body == '}') {
                if (depth == 0)
                    return sp_fail(SP_EINVAL, "prune: the config closes a block it never opened");
                return SP_OK;
            }
            continue;
        }
        const int li = (*pos)++, idx = lm->next++;
        const char *o = idx < lm->n ? lm->opts[idx] : NULL;
        if (li >= lm->nlines) return sp_fail(SP_EINVAL, "prune: config lines out of step");
        if (lm->line_of && idx < lm->n) lm->line_of[idx] = li;
        if (!lm->seen[li]) {
            lm->seen[li] = true;
            lm->chosen[li] = o;
        } else if (lm->check && ((o == NULL) != (lm->chosen[li] == NULL) ||
                                 (o && strcmp(o, lm->chosen[li]) != 0))) {
            return sp_fail(SP_EINVAL, "prune: layer %d is an instance of a moe expert's config "
                           "line, whose other instances take '%s' where it takes '%s': every "
                           "expert of a block must get the same options", idx,
                           lm->chosen[li] ? lm->chosen[li] : "(no change)", o ? o : "(no change)");
        }
        *s = next;
        if (depth > 64) return sp_fail(SP_EINVAL, "prune: blocks nested too deep");
        if (starts_word(l.body, "residual")) {
            sp_status st = walk_lines(lm, s, pos, depth + 1);
            if (st != SP_OK) return st;
        } else if (starts_word(l.body, "moe")) {
            const long nb = line_int(l.body, "experts", 1) + (line_int(l.body, "shared", 0) ? 1 : 0);
            const char *body = *s;
            const int body_pos = *pos;
            for (long k = 0; k < nb; k++) {
                *s = body;
                *pos = body_pos;
                sp_status st = walk_lines(lm, s, pos, depth + 1);
                if (st != SP_OK) return st;
            }
        }
    }
    return SP_OK;
}

/* Counts lm's layer lines, allocates its per-line arrays and walks the whole config; the
 * arrays are freed by the caller (also on error). */
static sp_status line_map_walk(line_map *lm) {
    for (const char *s = lm->cfg; *s;) {
        sp_cfg_line l;
        s = sp_cfg_next_line(s, &l);
        lm->nlines += l.is_layer;
    }
    lm->chosen = sp_calloc((size_t)lm->nlines + 1, sizeof *lm->chosen);
    lm->seen = sp_calloc((size_t)lm->nlines + 1, sizeof *lm->seen);
    if (!lm->chosen || !lm->seen) return SP_ENOMEM;
    const char *s = lm->cfg;
    int pos = 0;
    return walk_lines(lm, &s, &pos, 0);
}

sp_status sp_prune_rewrite_config(const char *cfg, char *const *opts, int n, char **out) {
    *out = NULL;
    line_map lm = {.cfg = cfg, .opts = opts, .n = n, .check = true};
    sp_status st = line_map_walk(&lm);
    for (int i = lm.next; st == SP_OK && i < n; i++)
        if (opts[i])
            st = sp_fail(SP_EINVAL, "prune: options for layer %d, but the config has %d layers",
                         i, lm.next);
    if (st == SP_OK) {
        *out = sp_prune_rewrite_lines(cfg, (char *const *)lm.chosen, lm.nlines);
        if (!*out) st = SP_ENOMEM;
    }
    sp_free(lm.chosen);
    sp_free(lm.seen);
    return st;
}

/* line_of[i] (n layers) = the layer line of layer i: the instances of a moe expert's body line
 * share one. */
static sp_status layer_lines(const char *cfg, int n, int *line_of) {
    char **none = sp_calloc((size_t)n + 1, sizeof *none);
    line_map lm = {.cfg = cfg, .opts = none, .n = n, .line_of = line_of};
    for (int i = 0; i < n; i++) line_of[i] = -1;
    sp_status st = none ? line_map_walk(&lm) : SP_ENOMEM;
    sp_free(none);
    sp_free(lm.chosen);
    sp_free(lm.seen);
    return st;
}

/* The model m rebuilt with opts[i] on the line of layer i and masks[i] (owned by the caller;
 * NULL: the layer's own pattern, if any) as its pattern. Layers with w[i] take that dense weight
 * (masked by masks[i]) and their bias from m; the others copy their parameters as they are. */
static sp_status rebuild(const sp_model *m, char *const *opts, sp_mask **masks, float **w,
                         sp_model **out) {
    const int n = sp_model_nlayers(m);
    sp_status st = SP_ENOMEM;
    sp_mask **own = sp_calloc((size_t)n, sizeof *own);
    const sp_mask **pat = sp_calloc((size_t)n, sizeof *pat);
    char *cfg = NULL;
    sp_model *pm = NULL;
    if (!own || !pat) goto done;
    /* layers without a new pattern keep their own */
    for (int i = 0; i < n; i++) {
        if (masks[i]) pat[i] = masks[i];
        else if (opts[i] && strstr(opts[i], "format=dense")) pat[i] = NULL; /* no pattern */
        else if ((st = sp_model_layer_pattern(m, i, &own[i])) != SP_OK) goto done;
        else pat[i] = own[i];
    }
    if ((st = sp_prune_rewrite_config(sp_model_config(m), opts, n, &cfg)) != SP_OK) goto done;
    st = sp_model_new_with_patterns(cfg, sp_model_in(m), sp_model_classes(m), sp_model_seed(m),
                                    (int64_t)1 << 34, pat, n, &pm);
    if (st != SP_OK) goto done;
    sp_model_set_input_scale(pm, sp_model_input_scale(m));
    {
        int64_t nv;
        const int32_t *voc = sp_model_vocab(m, &nv); /* a text model keeps its vocabulary */
        if (voc && (st = sp_model_set_vocab(pm, voc, nv)) != SP_OK) goto done;
    }
    /* parameters and state through each layer's own views: a mapped model (sp_model_open) has
     * no arenas */
    for (int i = 0; i < n; i++) {
        sp_layer_info a, b;
        sp_model_layer(m, i, &a);
        sp_model_layer(pm, i, &b);
        const sp_layer *la = sp_model_layer_ptr(m, i);
        sp_layer *lb = sp_model_layer_ptr(pm, i);
        if (la->nbuffer && la->nbuffer == lb->nbuffer)
            memcpy(lb->buffer, la->buffer, sizeof(float) * (size_t)la->nbuffer);
        if (!w[i] && a.nparam != b.nparam) {
            st = sp_fail(SP_EINVAL, "model_prune: layer %s has %lld parameters after "
                         "rebuilding, %lld before", a.name, (long long)b.nparam,
                         (long long)a.nparam);
            goto done;
        }
        if (w[i]) {
            st = SP_ENOMEM;
            float *bias = sp_alloc(sizeof(float) * (size_t)a.out.c);
            if (!bias) goto done;
            st = sp_model_layer_get_weight(m, i, w[i], bias);
            /* a format that stores more than the mask (BSR keeps whole blocks) must hold zeros
             * where the mask pruned */
            if (st == SP_OK && pat[i]) st = sp_mask_apply(pat[i], w[i], a.in.c);
            if (st == SP_OK) st = sp_model_layer_set_weight(pm, i, w[i], bias);
            sp_free(bias);
            if (st != SP_OK) goto done;
        } else if (a.nparam) {
            memcpy(lb->param, la->param, sizeof(float) * (size_t)a.nparam);
        }
    }
    *out = pm;
    pm = NULL;
    st = SP_OK;
done:
    for (int i = 0; i < n && own; i++) sp_mask_free(own[i]);
    sp_free(own);
    sp_free(pat);
    sp_free(cfg);
    sp_model_free(pm);
    return st;
}

sp_status sp_model_prune(const sp_model *m, const sp_prune_spec *spec, sp_model **out) {
    if (!m || !spec || !out) return sp_fail(SP_EINVAL, "model_prune: NULL argument");
    *out = NULL;
    const int n = sp_model_nlayers(m);
    if (n > MAX_LAYERS) return sp_fail(SP_EINVAL, "model_prune: %d layers (at most %d)", n, MAX_LAYERS);
    if (spec->criterion != SP_PRUNE_MAGNITUDE && spec->criterion != SP_PRUNE_RANDOM)
        return sp_fail(SP_EINVAL, "model_prune: criterion %s needs training inputs; one-shot "
                       "pruning of a model takes magnitude or random",
                       sp_prune_criterion_name(spec->criterion));
    const char *fmt = spec->format ? spec->format
                    : spec->granularity == SP_PRUNE_NM ? "nm"
                    : spec->granularity == SP_PRUNE_BLOCK ? "bsr" : "csr";
    if (strcmp(fmt, "csr") && strcmp(fmt, "mask") && strcmp(fmt, "bsr") && strcmp(fmt, "nm"))
        return sp_fail(SP_EINVAL, "model_prune: format '%s' is not csr, mask, bsr or nm", fmt);
    if (!strcmp(fmt, "nm") && spec->granularity != SP_PRUNE_NM)
        return sp_fail(SP_EINVAL, "model_prune: the nm format needs N:M granularity");

    /* the layers to prune */
    int last = -1, count = 0;
    for (int i = 0; i < n; i++) {
        sp_layer_info li;
        if (sp_model_layer(m, i, &li) == SP_OK && !strcmp(li.kind, "linear")) last = i;
    }
    sp_status st = SP_ENOMEM;
    float **w = sp_calloc((size_t)n, sizeof *w);
    float **scores = sp_calloc((size_t)n, sizeof *scores);
    sp_mask **masks = sp_calloc((size_t)n, sizeof *masks);
    char **opts = sp_calloc((size_t)n, sizeof *opts);
    if (!w || !scores || !masks || !opts) goto done;
    for (int i = 0; i < n; i++) {
        sp_layer_info li;
        if ((st = sp_model_layer(m, i, &li)) != SP_OK) goto done;
        if (!prunable(&li) || (spec->keep_last && i == last)) continue;
        const int64_t rows = li.out.c, cols = li.in.c;
        st = SP_ENOMEM;
        w[i] = sp_alloc(sizeof(float) * (size_t)(rows * cols));
        scores[i] = sp_alloc(sizeof(float) * (size_t)(rows * cols));
        opts[i] = sp_alloc(64);
        if (!w[i] || !scores[i] || !opts[i]) goto done;
        if ((st = sp_model_layer_get_weight(m, i, w[i], NULL)) != SP_OK) goto done;
        sp_prune_inputs pin = {.seed = spec->seed + (uint64_t)i};
        if ((st = sp_prune_scores(spec->criterion, rows, cols, w[i], &pin, scores[i])) != SP_OK)
            goto done;
        count++;
        if (!strcmp(fmt, "nm"))
            snprintf(opts[i], 64, "format=nm nm=%d:%d", (int)spec->n, (int)spec->m);
        else if (!strcmp(fmt, "bsr"))
            snprintf(opts[i], 64, "format=bsr block=%dx%d",
                     (int)(spec->br > 0 ? spec->br : 4), (int)(spec->bc > 0 ? spec->bc : 4));
        else
            snprintf(opts[i], 64, "format=%s", fmt);
    }
    if (count == 0) {
        st = sp_fail(SP_EINVAL, "model_prune: the model has no dense linear layer to prune");
        goto done;
    }
    /* masks */
    if ((st = sp_prune_masks_for(m, spec, spec->sparsity, scores, masks, "model_prune")) != SP_OK)
        goto done;
    st = rebuild(m, opts, masks, w, out);
done:
    for (int i = 0; i < n && w; i++) sp_free(w[i]);
    for (int i = 0; i < n && scores; i++) sp_free(scores[i]);
    for (int i = 0; i < n && masks; i++) sp_mask_free(masks[i]);
    for (int i = 0; i < n && opts; i++) sp_free(opts[i]);
    sp_free(w);
    sp_free(scores);
    sp_free(masks);
    sp_free(opts);
    return st;
}

sp_status sp_model_sparsify(const sp_model *m, const char *format, int32_t a, int32_t b,
                            sp_model **out) {
    if (!m || !format || !out) return sp_fail(SP_EINVAL, "model_sparsify: NULL argument");
    *out = NULL;
    const bool autof = !strcmp(format, "auto");
    if (strcmp(format, "csr") && strcmp(format, "bsr") && strcmp(format, "nm") && !autof)
        return sp_fail(SP_EINVAL, "model_sparsify: format '%s' is not csr, bsr, nm or auto",
                       format);
    if (!strcmp(format, "bsr") && (a < 1 || b < 1 || a > 64 || b > 64))
        return sp_fail(SP_EINVAL, "model_sparsify: block %dx%d not within 1..64", (int)a, (int)b);
    if (!strcmp(format, "nm") && !(a >= 1 && a < b && b <= 32))
        return sp_fail(SP_EINVAL, "model_sparsify: N:M %d:%d needs 1 <= N < M <= 32", (int)a,
                       (int)b);
    const int n = sp_model_nlayers(m);
    if (n > MAX_LAYERS) return sp_fail(SP_EINVAL, "model_sparsify: %d layers (at most %d)", n, MAX_LAYERS);
    sp_status st = SP_ENOMEM;
    float **w = sp_calloc((size_t)n, sizeof *w);
    sp_mask **masks = sp_calloc((size_t)n, sizeof *masks);
    char **opts = sp_calloc((size_t)n, sizeof *opts);
    if (!w || !masks || !opts) goto done;
    for (int i = 0; i < n; i++) {
        sp_layer_info li;
        if ((st = sp_model_layer(m, i, &li)) != SP_OK) goto done;
        if (strcmp(li.kind, "linear") || strcmp(li.format, "mask")) continue;
        st = SP_ENOMEM;
        w[i] = sp_alloc(sizeof(float) * (size_t)(li.out.c * li.in.c));
        opts[i] = sp_alloc(64);
        if (!w[i] || !opts[i]) goto done;
        if ((st = sp_model_layer_pattern(m, i, &masks[i])) != SP_OK) goto done;
        if (autof) {
            st = sp_prune_pick_format(m, i, a > 0 ? a : 64, b > 0 ? b : 1, opts[i], 64, NULL);
            if (st != SP_OK) goto done;
            if (strstr(opts[i], "format=dense")) {
                sp_mask_free(masks[i]); /* stored dense, zeros included */
                masks[i] = NULL;
            }
        } else if (!strcmp(format, "bsr")) {
            snprintf(opts[i], 64, "format=bsr block=%dx%d", (int)a, (int)b);
        } else if (!strcmp(format, "nm")) {
            snprintf(opts[i], 64, "format=nm nm=%d:%d", (int)a, (int)b);
        } else {
            snprintf(opts[i], 64, "format=csr");
        }
    }
    if (autof) {
        /* the experts of a moe block share one config line, so one format: the first
         * instance's choice (the timings of equal layers differ only by noise) */
        st = SP_ENOMEM;
        int *line_of = sp_alloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
        if (!line_of) goto done;
        st = layer_lines(sp_model_config(m), n, line_of);
        for (int i = 0; i < n && st == SP_OK; i++) {
            if (!opts[i]) continue;
            int j = 0;
            while (j < i && !(opts[j] && line_of[j] == line_of[i])) j++;
            if (j == i || !strcmp(opts[i], opts[j])) continue;
            memcpy(opts[i], opts[j], 64);
            sp_mask_free(masks[i]);
            masks[i] = NULL;
            if (!strstr(opts[i], "format=dense"))
                st = sp_model_layer_pattern(m, i, &masks[i]);
        }
        sp_free(line_of);
        if (st != SP_OK) goto done;
    }
    st = rebuild(m, opts, masks, w, out);
done:
    for (int i = 0; i < n && w; i++) sp_free(w[i]);
    for (int i = 0; i < n && masks; i++) sp_mask_free(masks[i]);
    for (int i = 0; i < n && opts; i++) sp_free(opts[i]);
    sp_free(w);
    sp_free(masks);
    sp_free(opts);
    return st;
}
