/*
 * structured.c - structured pruning with physical removal (sp_model_prune_structured): whole
 * neurons of linear layers and filters of conv2d layers are removed, with everything that reads
 * them, and the result is an ordinary smaller dense model.
 *
 * Plan, per layer of the depth-first list (sp_model_layer order):
 *   1. a target (dense linear, conv2d with groups=1; never the last linear) whose output
 *      reaches a consumer (dense linear, conv2d with groups=1) through per-channel layers only
 *      gets its kept rows from the pure core: sp_prune_scores (row L1/L2 norm) and
 *      sp_prune_mask_rows;
 *      (inside a residual body, only to a consumer in the same body: the body's output is
 *      added to its input and keeps its width);
 *   2. the kept channels are carried forward: every layer between keeps them as its input (and
 *      output) channels; a flatten of a (C, H, W) input turns channel c into the features
 *      c*H*W + t, t < H*W (the feature-major layout of layer.h); the consumer keeps them as its
 *      input columns / channels;
 *   3. the config is rewritten (out= of each target, out= and groups= of a depthwise conv that
 *      follows one), a new model is built and every parameter and BatchNorm buffer is copied,
 *      sliced to the kept rows and columns.
 *
 * Parameter layouts relied on (see the layer files): linear through sp_model_layer_get_weight /
 * set_weight (dense (out x in) matrix and bias); conv2d: weight (O, C/G, kh, kw) row-major, then
 * the bias (O) when bias=1 (conv2d.c); batchnorm: gamma (C), beta (C), and in the state arena
 * running_mean (C), running_var (C) (batchnorm.c). BatchNorm is the only layer with state; the
 * state offsets are recomputed here and checked against sp_model_nbuffers.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/prune.h"
#include "sparrow/nn.h"

#include "../core/internal.h"
#include "internal.h"

#define MAX_LAYERS 4096
static const char who[] = "model_prune_structured";

typedef enum role { R_NONE = 0, R_TARGET, R_FOLLOW } role;

typedef struct plan {
    sp_layer_info li;
    const char *line;     /* its config line (in the normalized config), not terminated */
    size_t len;           /* up to a '#' comment */
    int64_t groups, kh, kw;
    bool bias;            /* conv2d */
    bool target;          /* its rows shrink by its own scores */
    bool follow;          /* a per-channel layer (or depthwise conv) after a target */
    int64_t *out_keep;    /* kept output channels, ascending (NULL: all) */
    int64_t nout;
    int64_t *in_keep;     /* kept input channels / columns, ascending (NULL: all) */
    int64_t nin;
    int block;            /* the residual layer whose body holds it, -1 for the top level */
} plan;

static bool is_kind(const plan *p, const char *k) { return !strcmp(p->li.kind, k); }

/* Per-channel layers that carry a channel through unchanged (flatten reshapes it). */
static bool passes_channels(const plan *p) {
    static const char *const kinds[] = {"relu",    "gelu",    "silu",          "tanh",
                                        "sigmoid", "dropout", "batchnorm",     "maxpool",
                                        "avgpool", "flatten", "globalavgpool"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (is_kind(p, kinds[i]))
            return !strcmp(kinds[i], "flatten") || p->li.out.c == p->li.in.c;
    return false;
}

static bool is_depthwise(const plan *p) {
    return is_kind(p, "conv2d") && p->groups > 1 && p->groups == p->li.in.c &&
           p->groups == p->li.out.c;
}

static bool is_consumer(const plan *p) {
    return (is_kind(p, "linear") && !strcmp(p->li.format, "dense")) ||
           (is_kind(p, "conv2d") && p->groups == 1);
}

/* The value of option `key` on a config line (borrowed, not terminated; *vlen its length), or
 * NULL when absent. Options are whitespace-separated key=value tokens after the kind. */
static const char *find_opt(const char *line, size_t len, const char *key, size_t *vlen) {
    const size_t kl = strlen(key);
    for (size_t i = 0; i + kl + 1 <= len; i++) {
        if (i > 0 && !isspace((unsigned char)line[i - 1])) continue;
        if (strncmp(line + i, key, kl) != 0 || line[i + kl] != '=') continue;
        size_t e = i + kl + 1;
        while (e < len && !isspace((unsigned char)line[e])) e++;
        *vlen = e - (i + kl + 1);
        return line + i + kl + 1;
    }
    return NULL;
}

/* An integer option (or "AxB": a = A, b = B; a single "A": both), def when absent. */
static bool opt_pair(const plan *p, const char *key, int64_t def, int64_t *a, int64_t *b) {
    size_t vl;
    const char *v = find_opt(p->line, p->len, key, &vl);
    *a = *b = def;
    if (!v) return true;
    char buf[64];
    if (vl == 0 || vl >= sizeof buf) return false;
    memcpy(buf, v, vl);
    buf[vl] = '\0';
    char *end;
    long long x = strtoll(buf, &end, 10), y = x;
    if (*end == 'x') y = strtoll(end + 1, &end, 10);
    if (*end) return false;
    *a = x;
    *b = y;
    return true;
}

/* Splits the config into lines and gives every layer its line (every line but "input", "}",
 * comments and blank lines is one layer, in depth-first order) and its enclosing residual
 * block ("residual {" opens one, "}" closes it). */
#define MAX_NEST 64
static sp_status map_lines(const char *cfg, plan *p, int n) {
    int layer = 0, depth = 0, stack[MAX_NEST];
    const char *s = cfg;
    while (*s) {
        sp_cfg_line l;
        const char *next = sp_cfg_next_line(s, &l);
        const char *q = l.body;
        const size_t ll = l.len;
        const bool is_layer = l.is_layer;
        if (is_layer) {
            if (layer >= n) break;
            const char *hash = memchr(q, '#', (size_t)(s + ll - q));
            p[layer].line = q;
            p[layer].len = (size_t)((hash ? hash : s + ll) - q);
            p[layer].block = depth > 0 ? stack[depth - 1] : -1;
            if (!strcmp(p[layer].li.kind, "residual")) {
                if (depth == MAX_NEST)
                    return sp_fail(SP_EINVAL, "%s: residual blocks nested deeper than %d", who,
                                   MAX_NEST);
                stack[depth++] = layer;
            }
            layer++;
        } else if (q < s + ll && *q == '}') {
            if (depth == 0) return sp_fail(SP_EINVAL, "%s: the config closes a block it never "
                                           "opened", who);
            depth--;
        }
        s = next;
    }
    if (layer != n)
        return sp_fail(SP_EINVAL, "%s: the config has %d layer lines for %d layers", who, layer, n);
    return SP_OK;
}

/* Copy of the config with option `key` of the lines in edits replaced. Writes into t (large
 * enough: the old length plus 24 bytes per replaced value). */
typedef struct edit {
    const char *at;   /* value to replace (inside the config) */
    size_t vlen;
    int64_t value;
} edit;

static int by_pos(const void *a, const void *b) {
    const edit *x = a, *y = b;
    return x->at < y->at ? -1 : x->at > y->at;
}

static char *apply_edits(const char *cfg, edit *e, int ne) {
    qsort(e, (size_t)ne, sizeof *e, by_pos);
    size_t len = strlen(cfg);
    char *t = sp_alloc(len + 24 * (size_t)ne + 1);
    if (!t) return NULL;
    size_t o = 0;
    const char *s = cfg;
    for (int i = 0; i < ne; i++) {
        memcpy(t + o, s, (size_t)(e[i].at - s));
        o += (size_t)(e[i].at - s);
        o += (size_t)snprintf(t + o, 24, "%lld", (long long)e[i].value);
        s = e[i].at + e[i].vlen;
    }
    memcpy(t + o, s, strlen(s) + 1);
    return t;
}

static sp_status add_edit(const plan *p, const char *key, int64_t value, edit *e, int *ne) {
    size_t vl;
    const char *v = find_opt(p->line, p->len, key, &vl);
    if (!v)
        return sp_fail(SP_EINVAL, "%s: layer %s has no %s= option to rewrite", who, p->li.name,
                       key);
    e[*ne] = (edit){v, vl, value};
    (*ne)++;
    return SP_OK;
}

/* Index of the consumer that layer i's output reaches through per-channel layers, or -1. The
 * walk stays in i's residual body: a body's last layer feeds the addition, whose width stays,
 * and a nested block (kind residual) is not a per-channel layer. */
static int consumer_of(const plan *p, int n, int i) {
    for (int j = i + 1; j < n; j++) {
        if (p[j].block != p[i].block) return -1;
        if (is_consumer(&p[j])) return j;
        if (passes_channels(&p[j]) || is_depthwise(&p[j])) continue;
        return -1;
    }
    return -1;
}

static int64_t *copy_idx(const int64_t *v, int64_t n) {
    int64_t *c = sp_alloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (c && n) memcpy(c, v, sizeof(int64_t) * (size_t)n);
    return c;
}

/* Carries target i's kept channels to its consumer c (layers i+1 .. c). */
static sp_status propagate(plan *p, int i, int c) {
    int64_t *cur = copy_idx(p[i].out_keep, p[i].nout);
    int64_t ncur = p[i].nout;
    if (!cur) return SP_ENOMEM;
    for (int j = i + 1; j <= c; j++) {
        p[j].in_keep = cur;
        p[j].nin = ncur;
        if (j == c) return SP_OK;
        p[j].follow = true;
        if (is_kind(&p[j], "flatten")) {
            /* channel k of (C, H, W) is features k*H*W .. k*H*W + H*W - 1 */
            const int64_t hw = p[j].li.in.h * p[j].li.in.w;
            int64_t nn;
            if (!sp_mul_i64(ncur, hw, &nn))
                return sp_fail(SP_EOVERFLOW, "%s: layer %s: feature count overflows", who,
                               p[j].li.name);
            int64_t *next = sp_alloc(sizeof(int64_t) * (size_t)(nn > 0 ? nn : 1));
            if (!next) return SP_ENOMEM;
            for (int64_t k = 0; k < ncur; k++)
                for (int64_t t = 0; t < hw; t++) next[k * hw + t] = cur[k] * hw + t;
            cur = next;
            ncur = nn;
        } else {
            if (!(cur = copy_idx(cur, ncur))) return SP_ENOMEM;
        }
        p[j].out_keep = cur;
        p[j].nout = ncur;
        if (!(cur = copy_idx(cur, ncur))) return SP_ENOMEM;
    }
    return SP_OK; /* not reached: c > i */
}

/* idx[k], or k when idx is NULL (all kept) */
static inline int64_t at(const int64_t *idx, int64_t k) { return idx ? idx[k] : k; }

/* Copies layer i's parameters from m (layer a) to pm (layer b), sliced to its kept rows and
 * columns. */
static sp_status copy_params(const sp_model *m, sp_model *pm, int i, const plan *p) {
    sp_layer_info b;
    sp_status st = sp_model_layer(pm, i, &b);
    if (st != SP_OK) return st;
    const sp_layer_info *a = &p->li;
    const float *src = sp_model_params((sp_model *)m) + a->param_offset;
    float *dst = sp_model_params(pm) + b.param_offset;
    if (!p->out_keep && !p->in_keep) {
        if (a->nparam != b.nparam)
            return sp_fail(SP_EINVAL, "%s: layer %s has %lld parameters after rebuilding, %lld "
                           "before", who, a->name, (long long)b.nparam, (long long)a->nparam);
        if (a->nparam) memcpy(dst, src, sizeof(float) * (size_t)a->nparam);
        return SP_OK;
    }
    const int64_t rows = p->out_keep ? p->nout : a->out.c;
    if (b.out.c != rows || b.in.c != (p->in_keep ? p->nin : a->in.c))
        return sp_fail(SP_EINVAL, "%s: layer %s was rebuilt as %lld -> %lld channels, not "
                       "%lld -> %lld", who, a->name, (long long)b.in.c, (long long)b.out.c,
                       (long long)(p->in_keep ? p->nin : a->in.c), (long long)rows);
    if (is_kind(p, "linear")) {
        /* (out x in) row-major: the kept rows, and in each the kept columns */
        const int64_t ri = a->out.c, ci = a->in.c, co = b.in.c;
        float *w = sp_alloc(sizeof(float) * (size_t)(ri * ci));
        float *bias = sp_alloc(sizeof(float) * (size_t)ri);
        float *nw = sp_alloc(sizeof(float) * (size_t)(rows * co > 0 ? rows * co : 1));
        float *nb = sp_alloc(sizeof(float) * (size_t)rows);
        st = SP_ENOMEM;
        if (w && bias && nw && nb) st = sp_model_layer_get_weight(m, i, w, bias);
        if (st == SP_OK) {
            for (int64_t r = 0; r < rows; r++) {
                const float *wr = w + at(p->out_keep, r) * ci;
                for (int64_t c = 0; c < co; c++) nw[r * co + c] = wr[at(p->in_keep, c)];
                nb[r] = bias[at(p->out_keep, r)];
            }
            st = sp_model_layer_set_weight(pm, i, nw, nb);
        }
        sp_free(w);
        sp_free(bias);
        sp_free(nw);
        sp_free(nb);
        return st;
    }
    if (is_kind(p, "conv2d")) {
        /* (O, C/G, kh, kw) then bias (O): groups=1 slices rows and input channels; a depthwise
         * conv has one input channel per filter, so only its rows (= its channels) go */
        const int64_t kk = p->kh * p->kw;
        const int64_t cg_old = a->in.c / p->groups;
        const bool dw = is_depthwise(p);
        const int64_t cg_new = dw ? 1 : b.in.c;
        const int64_t *cols = dw ? NULL : p->in_keep;
        const int64_t *rowk = dw ? p->in_keep : p->out_keep;
        if (b.nparam != rows * cg_new * kk + (p->bias ? rows : 0))
            return sp_fail(SP_EINVAL, "%s: layer %s: %lld parameters after rebuilding, %lld "
                           "expected", who, a->name, (long long)b.nparam,
                           (long long)(rows * cg_new * kk + (p->bias ? rows : 0)));
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cg_new; c++)
                memcpy(dst + (r * cg_new + c) * kk,
                       src + (at(rowk, r) * cg_old + at(cols, c)) * kk, sizeof(float) * (size_t)kk);
        if (p->bias) {
            const float *sb = src + a->out.c * cg_old * kk;
            float *db = dst + rows * cg_new * kk;
            for (int64_t r = 0; r < rows; r++) db[r] = sb[at(rowk, r)];
        }
        return SP_OK;
    }
    if (is_kind(p, "batchnorm")) {
        /* gamma (C), beta (C) */
        const int64_t C = a->in.c;
        for (int64_t k = 0; k < p->nin; k++) {
            dst[k] = src[p->in_keep[k]];
            dst[p->nin + k] = src[C + p->in_keep[k]];
        }
        return SP_OK;
    }
    if (a->nparam || b.nparam)
        return sp_fail(SP_EUNSUPPORTED, "%s: layer %s (%s) has parameters this code does not "
                       "know how to shrink", who, a->name, a->kind);
    return SP_OK;
}

/* State arena offset of every layer: BatchNorm holds running_mean (C), running_var (C); no
 * other layer has state (checked against the arena size). */
static sp_status buffer_offsets(const sp_model *m, int n, int64_t *off) {
    int64_t o = 0;
    for (int i = 0; i < n; i++) {
        sp_layer_info li;
        sp_status st = sp_model_layer(m, i, &li);
        if (st != SP_OK) return st;
        off[i] = o;
        if (!strcmp(li.kind, "batchnorm")) o += 2 * li.in.c;
    }
    if (o != sp_model_nbuffers(m))
        return sp_fail(SP_EUNSUPPORTED, "%s: the model holds %lld floats of state, its batchnorm "
                       "layers %lld; a layer with unknown state cannot be shrunk", who,
                       (long long)sp_model_nbuffers(m), (long long)o);
    return SP_OK;
}

sp_status sp_model_prune_structured(const sp_model *m, const sp_prune_structured_spec *spec,
                                    sp_model **out) {
    if (out) *out = NULL;
    if (!m || !spec || !out)
        return sp_fail(SP_EINVAL, "%s: %s is NULL", who, !m ? "m" : !spec ? "spec" : "out");
    if (!sp_model_params((sp_model *)m) && sp_model_nparams(m))
        return sp_fail(SP_EINVAL, "%s: the model is mapped from its file (sp_model_open), for "
                       "inference; load it with sp_checkpoint_load to prune it", who);
    if (spec->criterion != SP_PRUNE_ROW_L1 && spec->criterion != SP_PRUNE_ROW_L2)
        return sp_fail(SP_EINVAL, "%s: criterion %s (%d) ranks weights, not units; structured "
                       "pruning takes row_l1 or row_l2", who,
                       sp_prune_criterion_name(spec->criterion), (int)spec->criterion);
    if (!(spec->fraction >= 0.0 && spec->fraction < 1.0))
        return sp_fail(SP_EINVAL, "%s: fraction %g is outside [0, 1)", who, spec->fraction);
    const int n = sp_model_nlayers(m);
    if (n > MAX_LAYERS) return sp_fail(SP_EINVAL, "%s: %d layers (at most %d)", who, n, MAX_LAYERS);
    /* a moe block's experts share one config body, so their widths cannot differ */
    for (int i = 0; i < n; i++) {
        sp_layer_info li;
        if (sp_model_layer(m, i, &li) == SP_OK && !strcmp(li.kind, "moe"))
            return sp_fail(SP_EUNSUPPORTED, "%s: layer %s is a moe block, whose experts share "
                           "one config body; structured pruning does not handle it", who,
                           li.name);
    }

    sp_status st = SP_ENOMEM;
    plan *p = sp_calloc((size_t)(n > 0 ? n : 1), sizeof *p);
    edit *ed = sp_calloc((size_t)(2 * n + 1), sizeof *ed);
    int64_t *boff_a = sp_calloc((size_t)(n + 1), sizeof *boff_a);
    int64_t *boff_b = sp_calloc((size_t)(n + 1), sizeof *boff_b);
    float *w = NULL, *scores = NULL;
    char *cfg = NULL;
    sp_model *pm = NULL;
    sp_mask **pats = sp_calloc((size_t)(n > 0 ? n : 1), sizeof *pats);
    int ne = 0;
    if (!p || !ed || !boff_a || !boff_b || !pats) goto done;

    /* the layers and their config lines */
    int last_linear = -1;
    for (int i = 0; i < n; i++) {
        if ((st = sp_model_layer(m, i, &p[i].li)) != SP_OK) goto done;
        if (is_kind(&p[i], "linear")) last_linear = i;
    }
    if ((st = map_lines(sp_model_config(m), p, n)) != SP_OK) goto done;
    for (int i = 0; i < n; i++) {
        if (!is_kind(&p[i], "conv2d")) continue;
        int64_t g, g2, bias, b2;
        if (!opt_pair(&p[i], "groups", 1, &g, &g2) ||
            !opt_pair(&p[i], "k", -1, &p[i].kh, &p[i].kw) ||
            !opt_pair(&p[i], "bias", 1, &bias, &b2) || g < 1 || p[i].kh < 1 || p[i].kw < 1 ||
            p[i].li.in.c % g != 0) {
            st = sp_fail(SP_EINVAL, "%s: layer %s: cannot read groups=, k= or bias= from its "
                         "config line", who, p[i].li.name);
            goto done;
        }
        p[i].groups = g;
        p[i].bias = bias != 0;
        int64_t expect = p[i].li.out.c * (p[i].li.in.c / g) * p[i].kh * p[i].kw +
                         (p[i].bias ? p[i].li.out.c : 0);
        if (expect != p[i].li.nparam) {
            st = sp_fail(SP_EINVAL, "%s: layer %s: %lld parameters, its config line gives %lld",
                         who, p[i].li.name, (long long)p[i].li.nparam, (long long)expect);
            goto done;
        }
    }

    /* targets and their kept rows */
    int ntargets = 0;
    for (int i = 0; i < n; i++) {
        if (!is_consumer(&p[i]) || i == last_linear) continue; /* same kinds as the targets */
        const int c = consumer_of(p, n, i);
        if (c < 0) continue;
        const int64_t rows = p[i].li.out.c;
        const int64_t cols = is_kind(&p[i], "linear") ? p[i].li.in.c
                             : p[i].li.in.c / p[i].groups * p[i].kh * p[i].kw;
        st = SP_ENOMEM;
        w = sp_alloc(sizeof(float) * (size_t)(rows * cols > 0 ? rows * cols : 1));
        scores = sp_alloc(sizeof(float) * (size_t)rows);
        if (!w || !scores) goto done;
        if (is_kind(&p[i], "linear")) {
            if ((st = sp_model_layer_get_weight(m, i, w, NULL)) != SP_OK) goto done;
        } else {
            /* the conv weight is (O, C*kh*kw) row-major at the start of its parameters */
            memcpy(w, sp_model_params((sp_model *)m) + p[i].li.param_offset,
                   sizeof(float) * (size_t)(rows * cols));
        }
        if ((st = sp_prune_scores(spec->criterion, rows, cols, w, NULL, scores)) != SP_OK)
            goto done;
        /* round((1 - fraction) rows), at least one */
        double s = spec->fraction;
        if (floor((1.0 - s) * (double)rows + 0.5) < 1.0) s = 1.0 - 1.0 / (double)rows;
        sp_mask *mk = NULL;
        st = sp_prune_mask_rows(rows, cols, scores, s, &mk, &p[i].out_keep, &p[i].nout);
        sp_mask_free(mk);
        if (st != SP_OK) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", sp_last_error());
            st = sp_fail(st, "%s: layer %s: %s", who, p[i].li.name, msg);
            goto done;
        }
        sp_free(w);
        sp_free(scores);
        w = NULL;
        scores = NULL;
        p[i].target = true;
        ntargets++;
        if ((st = propagate(p, i, c)) != SP_OK) goto done;
    }
    if (ntargets == 0) {
        st = sp_fail(SP_EINVAL, "%s: no layer to shrink: a pruned layer is a dense linear (not "
                     "the last) or a conv2d with groups=1 whose output reaches a dense linear or "
                     "a conv2d with groups=1 through per-channel layers only", who);
        goto done;
    }

    /* the new config: out= of the targets, out= and groups= of depthwise followers */
    for (int i = 0; i < n; i++) {
        if (p[i].target && (st = add_edit(&p[i], "out", p[i].nout, ed, &ne)) != SP_OK) goto done;
        if (p[i].follow && is_depthwise(&p[i])) {
            if ((st = add_edit(&p[i], "out", p[i].nout, ed, &ne)) != SP_OK ||
                (st = add_edit(&p[i], "groups", p[i].nout, ed, &ne)) != SP_OK)
                goto done;
        }
    }
    st = SP_ENOMEM;
    if (!(cfg = apply_edits(sp_model_config(m), ed, ne))) goto done;
    /* masked / sparse layers are never shrunk (nor next to a shrunk one): they keep their
     * patterns */
    for (int i = 0; i < n; i++)
        if ((st = sp_model_layer_pattern(m, i, &pats[i])) != SP_OK) goto done;
    st = sp_model_new_with_patterns(cfg, sp_model_in(m), sp_model_classes(m), sp_model_seed(m),
                                    (int64_t)1 << 34, (const sp_mask *const *)pats, n, &pm);
    if (st != SP_OK) goto done;
    sp_model_set_input_scale(pm, sp_model_input_scale(m));
    {
        int64_t nv;
        const int32_t *voc = sp_model_vocab(m, &nv); /* a text model keeps its vocabulary */
        if (voc && (st = sp_model_set_vocab(pm, voc, nv)) != SP_OK) goto done;
    }
    if (sp_model_nlayers(pm) != n) {
        st = sp_fail(SP_EINVAL, "%s: the rebuilt model has %d layers, not %d", who,
                     sp_model_nlayers(pm), n);
        goto done;
    }

    /* parameters, then BatchNorm state */
    for (int i = 0; i < n; i++)
        if ((st = copy_params(m, pm, i, &p[i])) != SP_OK) goto done;
    if ((st = buffer_offsets(m, n, boff_a)) != SP_OK ||
        (st = buffer_offsets(pm, n, boff_b)) != SP_OK)
        goto done;
    {
        const float *sb = sp_model_buffers((sp_model *)m);
        float *db = sp_model_buffers(pm);
        for (int i = 0; i < n; i++) {
            if (!is_kind(&p[i], "batchnorm")) continue;
            const int64_t C = p[i].li.in.c;
            const float *s = sb + boff_a[i];
            float *d = db + boff_b[i];
            if (!p[i].in_keep) {
                memcpy(d, s, sizeof(float) * (size_t)(2 * C));
                continue;
            }
            for (int64_t k = 0; k < p[i].nin; k++) {
                d[k] = s[p[i].in_keep[k]];                /* running_mean */
                d[p[i].nin + k] = s[C + p[i].in_keep[k]]; /* running_var */
            }
        }
    }
    *out = pm;
    pm = NULL;
    st = SP_OK;
done:
    for (int i = 0; p && i < n; i++) {
        sp_free(p[i].out_keep);
        sp_free(p[i].in_keep);
    }
    for (int i = 0; pats && i < n; i++) sp_mask_free(pats[i]);
    sp_free(pats);
    sp_free(p);
    sp_free(ed);
    sp_free(boff_a);
    sp_free(boff_b);
    sp_free(w);
    sp_free(scores);
    sp_free(cfg);
    sp_model_free(pm);
    return st;
}
