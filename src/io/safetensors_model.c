/*
 * safetensors_model.c - PyTorch nn.Sequential state_dicts in safetensors files to and from
 * sparrow models (docs/INTEROP.md).
 *
 * Keys are "<module index>.<param>". On import, the top-level sparrow layers that hold
 * parameters take, in order, the module indices that have tensors, in ascending numeric order
 * (so Flatten / ReLU positions need not agree); on export, the index is the layer's position in
 * sparrow's sequence, which is what nn.Sequential of the same modules expects. Parameter
 * layouts agree with PyTorch's: Linear (out, in), Conv2d (out, in/groups, kh, kw) then bias,
 * BatchNorm gamma/beta (+ running statistics in the state arena), LayerNorm gamma/beta. The
 * layer structure is read from the model's normalized config, so this file needs only the
 * public model API.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/io.h"
#include "sparrow/sparse.h"

#include "../core/internal.h"

#define MAX_MODULE_INDEX 999999999LL

/* One layer of the normalized config: its kind and its option text (borrowed, not
 * NUL-terminated at the line end: opts_len). */
typedef struct cfg_layer {
    char kind[24];
    const char *opts;
    size_t opts_len;
    int depth;
} cfg_layer;

/* Splits m's normalized config into layers (nl of them, sp_model_nlayers). SP_EUNSUPPORTED for
 * a nested model. */
static sp_status config_layers(const sp_model *m, cfg_layer *out, int nl) {
    const char *s = sp_model_config(m);
    int i = 0;
    while (*s) {
        const char *end = strchr(s, '\n');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        size_t ind = 0;
        while (ind < len && s[ind] == ' ') ind++;
        const char *t = s + ind;
        size_t tl = len - ind, kl = 0;
        while (kl < tl && t[kl] != ' ') kl++;
        if (kl && !(kl == 5 && !strncmp(t, "input", 5)) && !(kl == 1 && t[0] == '}')) {
            if (i >= nl) return sp_fail(SP_EINVAL, "safetensors: the model's config has more "
                                        "layers than the model");
            cfg_layer *c = &out[i++];
            snprintf(c->kind, sizeof c->kind, "%.*s", (int)(kl < 23 ? kl : 23), t);
            c->opts = t + kl;
            c->opts_len = tl - kl;
            c->depth = (int)(ind / 2);
            if (c->depth > 0 || !strcmp(c->kind, "residual"))
                return sp_fail(SP_EUNSUPPORTED, "safetensors: layer %d is inside or is a residual "
                               "block: nested models are not imported or exported yet "
                               "(docs/INTEROP.md)", i - 1);
        }
        s += len + (end ? 1 : 0);
    }
    if (i != nl) return sp_fail(SP_EINVAL, "safetensors: the model's config lists %d layers, "
                                "the model has %d", i, nl);
    return SP_OK;
}

/* Integer option key=V of a config line (def if absent); "KxW" pairs give both parts. */
static void opt_pair(const cfg_layer *c, const char *key, int64_t def, int64_t *a, int64_t *b) {
    *a = *b = def;
    char pat[32];
    snprintf(pat, sizeof pat, " %s=", key);
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= c->opts_len; i++)
        if (!strncmp(c->opts + i, pat, pl)) {
            char *e;
            *a = *b = strtoll(c->opts + i + pl, &e, 10);
            if (*e == 'x') *b = strtoll(e + 1, NULL, 10);
            return;
        }
}

static bool opt_has(const cfg_layer *c, const char *text) {
    size_t tl = strlen(text);
    for (size_t i = 0; i + tl <= c->opts_len; i++)
        if (!strncmp(c->opts + i, text, tl) && (i + tl == c->opts_len || c->opts[i + tl] == ' '))
            return true;
    return false;
}

/* The PyTorch parameters of one sparrow layer: names and shapes, and where they live. */
#define MAX_PARAMS 5
typedef struct param_spec {
    const char *suffix;
    int rank;
    int64_t shape[4];
    bool in_buffers;      /* running statistics: the state arena */
    bool optional;        /* num_batches_tracked: ignored on import */
    bool integer;         /* num_batches_tracked: I64 */
    int64_t offset;       /* floats into the arena */
} param_spec;

typedef struct layer_spec {
    int layer;
    sp_layer_info info;
    bool linear;
    bool sparse;          /* a linear layer with a pattern: it takes the nonzeros */
    int n;
    param_spec p[MAX_PARAMS];
} layer_spec;

static void shape_str(char *buf, size_t n, int rank, const int64_t *shape) {
    int len = snprintf(buf, n, "[");
    for (int r = 0; r < rank && (size_t)len < n; r++)
        len += snprintf(buf + len, n - (size_t)len, r ? ", %lld" : "%lld", (long long)shape[r]);
    if ((size_t)len < n) snprintf(buf + len, n - (size_t)len, "]");
}

/* The parameters of layer i (kind c->kind); *has is false for a layer without parameters. */
static sp_status layer_params(const sp_model *m, int i, const cfg_layer *c, int64_t *buf_off,
                              layer_spec *ls, bool *has) {
    memset(ls, 0, sizeof *ls);
    ls->layer = i;
    sp_status st = sp_model_layer(m, i, &ls->info);
    if (st != SP_OK) return st;
    const sp_layer_info *f = &ls->info;
    *has = f->nparam > 0 || !strcmp(c->kind, "batchnorm");
    if (!*has) return SP_OK;
    const int64_t po = f->param_offset;
    param_spec *p = ls->p;
    if (!strcmp(c->kind, "linear")) {
        const int64_t out = f->out.c, in = f->in.c;
        const bool bias = !opt_has(c, "bias=0");
        ls->linear = true;
        ls->sparse = strcmp(f->format, "dense") != 0;
        p[ls->n++] = (param_spec){"weight", 2, {out, in}, .offset = po};
        if (bias) p[ls->n++] = (param_spec){"bias", 1, {out}, .offset = po + f->nparam - out};
    } else if (!strcmp(c->kind, "conv2d")) {
        int64_t kh, kw, g, g2;
        opt_pair(c, "k", 1, &kh, &kw);
        opt_pair(c, "groups", 1, &g, &g2);
        const int64_t o = f->out.c, cin = f->in.c;
        if (g < 1 || cin % g) return sp_fail(SP_EINVAL, "safetensors: layer %s: groups %lld",
                                             f->name, (long long)g);
        const int64_t nw = o * (cin / g) * kh * kw;
        p[ls->n++] = (param_spec){"weight", 4, {o, cin / g, kh, kw}, .offset = po};
        if (!opt_has(c, "bias=0")) p[ls->n++] = (param_spec){"bias", 1, {o}, .offset = po + nw};
    } else if (!strcmp(c->kind, "batchnorm")) {
        const int64_t ch = f->in.c;
        p[ls->n++] = (param_spec){"weight", 1, {ch}, .offset = po};
        p[ls->n++] = (param_spec){"bias", 1, {ch}, .offset = po + ch};
        p[ls->n++] = (param_spec){"running_mean", 1, {ch}, .in_buffers = true, .offset = *buf_off};
        p[ls->n++] = (param_spec){"running_var", 1, {ch}, .in_buffers = true,
                                  .offset = *buf_off + ch};
        p[ls->n++] = (param_spec){"num_batches_tracked", 0, {0}, .optional = true, .integer = true};
        *buf_off += 2 * ch;
    } else if (!strcmp(c->kind, "layernorm")) {
        const int64_t ch = f->in.c;
        p[ls->n++] = (param_spec){"weight", 1, {ch}, .offset = po};
        p[ls->n++] = (param_spec){"bias", 1, {ch}, .offset = po + ch};
    } else {
        return sp_fail(SP_EUNSUPPORTED, "safetensors: layer %s has parameters, but only linear, "
                       "conv2d, batchnorm and layernorm layers map to PyTorch modules",
                       f->name);
    }
    /* the layout above must account for every float the layer owns */
    int64_t np = 0;
    for (int k = 0; k < ls->n; k++) {
        if (p[k].in_buffers || p[k].integer) continue;
        int64_t e = 1;
        for (int r = 0; r < p[k].rank; r++) e *= p[k].shape[r];
        np += ls->linear && k == 0 ? 0 : e;
    }
    if (!ls->linear && np != f->nparam)
        return sp_fail(SP_EUNSUPPORTED, "safetensors: layer %s holds %lld parameters, its PyTorch "
                       "counterpart %lld", f->name, (long long)f->nparam, (long long)np);
    return SP_OK;
}

/* All layers of m with parameters, in order: owned *out (sp_free), *n of them. */
static sp_status model_specs(const sp_model *m, layer_spec **out, int *n) {
    const int nl = sp_model_nlayers(m);
    cfg_layer *cl = sp_calloc((size_t)nl + 1, sizeof *cl);
    layer_spec *ls = sp_calloc((size_t)nl + 1, sizeof *ls);
    sp_status st = SP_ENOMEM;
    *out = NULL;
    *n = 0;
    if (!cl || !ls) goto fail;
    if ((st = config_layers(m, cl, nl)) != SP_OK) goto fail;
    int64_t buf_off = 0;
    for (int i = 0; i < nl; i++) {
        bool has;
        if ((st = layer_params(m, i, &cl[i], &buf_off, &ls[*n], &has)) != SP_OK) goto fail;
        if (has) (*n)++;
    }
    if (buf_off != sp_model_nbuffers(m)) {
        st = sp_fail(SP_EUNSUPPORTED, "safetensors: the model holds %lld state floats, of which "
                     "BatchNorm statistics account for %lld", (long long)sp_model_nbuffers(m),
                     (long long)buf_off);
        goto fail;
    }
    sp_free(cl);
    *out = ls;
    return SP_OK;
fail:
    sp_free(cl);
    sp_free(ls);
    *n = 0;
    return st;
}

/* ---- import --------------------------------------------------------------------------------- */

/* The module index of key "<index>.<rest>" in *idx and rest in *rest; false if it is not one. */
static bool split_key(const char *key, int64_t *idx, const char **rest) {
    const char *p = key;
    int64_t v = 0;
    if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9')) return false;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        if (v > MAX_MODULE_INDEX) return false;
        p++;
    }
    if (*p != '.' || !p[1]) return false;
    *idx = v;
    *rest = p + 1;
    return true;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The tensor "<idx>.<suffix>", or NULL. */
static const sp_safetensors_tensor *find_param(const sp_safetensors *st, int64_t idx,
                                               const char *suffix) {
    char key[96];
    snprintf(key, sizeof key, "%lld.%s", (long long)idx, suffix);
    return sp_safetensors_find(st, key);
}

static sp_status check_shape(const sp_safetensors_tensor *t, int rank, const int64_t *shape) {
    bool ok = t->rank == rank;
    for (int r = 0; ok && r < rank; r++) ok = t->shape[r] == shape[r];
    if (ok) return SP_OK;
    char want[128], got[128];
    shape_str(want, sizeof want, rank, shape);
    shape_str(got, sizeof got, t->rank, t->shape);
    return sp_fail(SP_ESHAPE, "safetensors: key '%s': expected shape %s, found %s", t->name, want,
                   got);
}

/* A linear weight given as CSR components "<idx>.weight.{crow_indices,col_indices,values,size}"
 * into the dense (out x in) w: sizes, offsets and column indices all checked. */
static sp_status read_csr_weight(const sp_safetensors *st, int64_t idx, int64_t out, int64_t in,
                                 float *w, int *used) {
    const sp_safetensors_tensor *crow = find_param(st, idx, "weight.crow_indices"),
                                *col = find_param(st, idx, "weight.col_indices"),
                                *val = find_param(st, idx, "weight.values"),
                                *size = find_param(st, idx, "weight.size");
    if (!crow || !col || !val || !size)
        return sp_fail(SP_EFORMAT, "safetensors: module %lld has a CSR weight without its '%s' "
                       "(expected crow_indices, col_indices, values, size)", (long long)idx,
                       !crow ? "weight.crow_indices" : !col ? "weight.col_indices"
                       : !val ? "weight.values" : "weight.size");
    *used += 4;
    const int64_t two = 2, rows1 = out + 1;
    sp_status s = check_shape(size, 1, &two);
    int64_t sz[2] = {0, 0};
    if (s == SP_OK) s = sp_safetensors_read_i64(size, sz, 2);
    if (s == SP_OK && (sz[0] != out || sz[1] != in)) {
        int64_t want[2] = {out, in};
        return check_shape(&(sp_safetensors_tensor){.name = size->name, .rank = 2,
                                                     .shape = {sz[0], sz[1]}}, 2, want);
    }
    if (s == SP_OK) s = check_shape(crow, 1, &rows1);
    if (s != SP_OK) return s;
    const int64_t nnz = col->numel;
    if (col->rank != 1 || val->rank != 1 || val->numel != nnz)
        return sp_fail(SP_ESHAPE, "safetensors: module %lld: col_indices and values must be "
                       "vectors of the same length (%lld and %lld)", (long long)idx,
                       (long long)col->numel, (long long)val->numel);
    int64_t *rp = sp_alloc(sizeof *rp * (size_t)rows1);
    int64_t *ci = sp_alloc(sizeof *ci * (size_t)(nnz + 1));
    float *v = sp_alloc(sizeof *v * (size_t)(nnz + 1));
    s = SP_ENOMEM;
    if (!rp || !ci || !v) goto done;
    if ((s = sp_safetensors_read_i64(crow, rp, rows1)) != SP_OK ||
        (s = sp_safetensors_read_i64(col, ci, nnz)) != SP_OK ||
        (s = sp_safetensors_read_f32(val, v, nnz)) != SP_OK)
        goto done;
    s = sp_fail(SP_EFORMAT, "safetensors: '%s': crow_indices[0] = %lld, [%lld] = %lld: must run "
                "from 0 to nnz = %lld", crow->name, (long long)rp[0], (long long)out,
                (long long)rp[out], (long long)nnz);
    if (rp[0] != 0 || rp[out] != nnz) goto done;
    for (int64_t r = 0; r < out; r++)
        if (rp[r + 1] < rp[r] || rp[r + 1] > nnz) {
            s = sp_fail(SP_EFORMAT, "safetensors: '%s': crow_indices[%lld] = %lld is out of order "
                        "or past nnz %lld", crow->name, (long long)(r + 1), (long long)rp[r + 1],
                        (long long)nnz);
            goto done;
        }
    memset(w, 0, sizeof *w * (size_t)(out * in));
    for (int64_t r = 0; r < out; r++) {
        for (int64_t k = rp[r]; k < rp[r + 1]; k++) {
            if (ci[k] < 0 || ci[k] >= in || (k > rp[r] && ci[k] <= ci[k - 1])) {
                s = sp_fail(SP_EFORMAT, "safetensors: '%s': column %lld of entry %lld (row %lld) "
                            "is out of [0, %lld) or not increasing", col->name, (long long)ci[k],
                            (long long)k, (long long)r, (long long)in);
                goto done;
            }
            w[r * in + ci[k]] = v[k];
        }
    }
    s = SP_OK;
done:
    sp_free(rp);
    sp_free(ci);
    sp_free(v);
    return s;
}

sp_status sp_model_import_safetensors(const sp_safetensors *st, const char *config_text,
                                      sp_shape in, int64_t classes, uint64_t seed,
                                      sp_model **out) {
    if (!st || !config_text || !out) return sp_fail(SP_EINVAL, "model_import: NULL argument");
    *out = NULL;
    sp_model *probe = NULL, *m = NULL;
    layer_spec *ls = NULL;
    int nls = 0;
    int64_t *mods = NULL, nmods = 0;
    float **vals = NULL;    /* per layer spec, per param: the floats read */
    sp_mask **masks = NULL;
    int nl = 0;
    sp_status s = sp_model_new(config_text, in, classes, seed, &probe);
    if (s != SP_OK) return s;
    nl = sp_model_nlayers(probe);
    if ((s = model_specs(probe, &ls, &nls)) != SP_OK) goto done;
    /* the module indices that have tensors */
    const int64_t nt = sp_safetensors_count(st);
    s = SP_ENOMEM;
    mods = sp_alloc(sizeof *mods * (size_t)(nt + 1));
    if (!mods) goto done;
    for (int64_t i = 0; i < nt; i++) {
        const sp_safetensors_tensor *t = sp_safetensors_at(st, i);
        int64_t idx;
        const char *rest;
        if (!split_key(t->name, &idx, &rest)) {
            s = sp_fail(SP_EFORMAT, "safetensors: key '%s' is not an nn.Sequential key: expected "
                        "'<index>.<param>' such as '0.weight' (save the state_dict of an "
                        "nn.Sequential, or rename the keys by module position)", t->name);
            goto done;
        }
        mods[nmods++] = idx;
    }
    qsort(mods, (size_t)nmods, sizeof *mods, cmp_i64);
    int64_t u = 0;
    for (int64_t i = 0; i < nmods; i++)
        if (!u || mods[i] != mods[u - 1]) mods[u++] = mods[i];
    nmods = u;
    if (nmods > nls) {
        s = sp_fail(SP_EFORMAT, "safetensors: leftover keys: module %lld (e.g. '%lld.weight') has "
                    "no sparrow layer to take it: the config has %d layers with parameters, the "
                    "file %lld modules", (long long)mods[nls], (long long)mods[nls], nls,
                    (long long)nmods);
        goto done;
    }
    if (nmods < nls) {
        s = sp_fail(SP_EFORMAT, "safetensors: missing keys: sparrow layer %s has no module in the "
                    "file (the config has %d layers with parameters, the file %lld modules)",
                    ls[nmods].info.name, nls, (long long)nmods);
        goto done;
    }
    s = SP_ENOMEM;
    vals = sp_calloc((size_t)nls * MAX_PARAMS + 1, sizeof *vals);
    masks = sp_calloc((size_t)nl + 1, sizeof *masks);
    if (!vals || !masks) goto done;
    bool any_sparse = false;
    for (int k = 0; k < nls; k++) {
        layer_spec *L = &ls[k];
        const int64_t idx = mods[k];
        int used = 0;
        for (int j = 0; j < L->n; j++) {
            const param_spec *p = &L->p[j];
            const sp_safetensors_tensor *t = find_param(st, idx, p->suffix);
            int64_t e = 1;
            for (int r = 0; r < p->rank; r++) e *= p->shape[r];
            if (p->integer) { /* num_batches_tracked: not used by sparrow */
                used += t != NULL;
                continue;
            }
            float *v = vals[k * MAX_PARAMS + j] = sp_alloc(sizeof(float) * (size_t)(e + 1));
            if (!v) { s = SP_ENOMEM; goto done; }
            if (!t && L->linear && j == 0 && find_param(st, idx, "weight.crow_indices")) {
                s = read_csr_weight(st, idx, p->shape[0], p->shape[1], v, &used);
                if (s != SP_OK) goto done;
            } else if (!t) {
                s = sp_fail(SP_EFORMAT, "safetensors: missing key '%lld.%s' (for sparrow layer "
                            "%s)", (long long)idx, p->suffix, L->info.name);
                goto done;
            } else {
                used++;
                if ((s = check_shape(t, p->rank, p->shape)) != SP_OK ||
                    (s = sp_safetensors_read_f32(t, v, e)) != SP_OK)
                    goto done;
            }
            for (int64_t q = 0; q < e; q++)
                if (!isfinite(v[q])) {
                    s = sp_fail(SP_EFORMAT, "safetensors: '%lld.%s'[%lld] is not finite",
                                (long long)idx, p->suffix, (long long)q);
                    goto done;
                }
        }
        /* every tensor of this module must have been taken */
        int have = 0;
        char prefix[32];
        int pl = snprintf(prefix, sizeof prefix, "%lld.", (long long)idx);
        const char *extra = NULL;
        for (int64_t i = 0; i < nt; i++) {
            const char *name = sp_safetensors_at(st, i)->name;
            if (strncmp(name, prefix, (size_t)pl)) continue;
            have++;
            bool known = false;
            for (int j = 0; j < L->n && !known; j++)
                known = !strcmp(name + pl, L->p[j].suffix) ||
                        (L->linear && j == 0 && !strncmp(name + pl, "weight.", 7) &&
                         (!strcmp(name + pl + 7, "crow_indices") ||
                          !strcmp(name + pl + 7, "col_indices") ||
                          !strcmp(name + pl + 7, "values") || !strcmp(name + pl + 7, "size")));
            if (!known && !extra) extra = name;
        }
        if (!extra && have != used) {
            s = sp_fail(SP_EFORMAT, "safetensors: module %lld gives its weight both as '%s' and "
                        "as CSR components", (long long)idx, "weight");
            goto done;
        }
        if (extra) {
            char list[160] = "";
            for (int j = 0, len = 0; j < L->n && len < (int)sizeof list; j++)
                len += snprintf(list + len, sizeof list - (size_t)len, "%s%s", j ? ", " : "",
                                L->p[j].suffix);
            s = sp_fail(SP_EFORMAT, "safetensors: leftover key '%s': not a parameter of sparrow "
                        "layer %s (module %lld; expected %s)", extra,
                        L->info.name, (long long)idx, list);
            goto done;
        }
        if (L->sparse) {
            any_sparse = true;
            s = sp_mask_from_dense(L->p[0].shape[0], L->p[0].shape[1], vals[k * MAX_PARAMS],
                                   L->p[0].shape[1], &masks[L->layer]);
            if (s != SP_OK) goto done;
        }
    }
    if (any_sparse) {
        /* sparse layers take the nonzeros of their imported weights as their pattern */
        s = sp_model_new_with_patterns(config_text, in, classes, seed, (int64_t)1 << 34,
                                       (const sp_mask *const *)masks, nl, &m);
        if (s != SP_OK) goto done;
    } else {
        m = probe;
        probe = NULL;
    }
    float *params = sp_model_params(m), *bufs = sp_model_buffers(m);
    for (int k = 0; k < nls; k++) {
        const layer_spec *L = &ls[k];
        if (L->linear) {
            s = sp_model_layer_set_weight(m, L->layer, vals[k * MAX_PARAMS],
                                          L->n > 1 ? vals[k * MAX_PARAMS + 1] : NULL);
            if (s != SP_OK) goto done;
            continue;
        }
        for (int j = 0; j < L->n; j++) {
            const param_spec *p = &L->p[j];
            if (p->integer) continue;
            int64_t e = 1;
            for (int r = 0; r < p->rank; r++) e *= p->shape[r];
            memcpy((p->in_buffers ? bufs : params) + p->offset, vals[k * MAX_PARAMS + j],
                   sizeof(float) * (size_t)e);
        }
    }
    const char *scale = sp_safetensors_meta(st, "sparrow.input_scale");
    if (scale) {
        char *e;
        double v = strtod(scale, &e);
        if (*e || !(v > 0) || !isfinite(v) || !isfinite((float)v) || (float)v <= 0) {
            s = sp_fail(SP_EFORMAT, "safetensors: __metadata__ sparrow.input_scale '%s' is not a "
                        "positive number", scale);
            goto done;
        }
        sp_model_set_input_scale(m, (float)v);
    }
    *out = m;
    m = NULL;
    s = SP_OK;
done:
    if (vals)
        for (int i = 0; i < nls * MAX_PARAMS; i++) sp_free(vals[i]);
    if (masks)
        for (int i = 0; i < nl; i++) sp_mask_free(masks[i]);
    sp_free(vals);
    sp_free(masks);
    sp_free(mods);
    sp_free(ls);
    sp_model_free(probe);
    sp_model_free(m);
    return s;
}

/* ---- export --------------------------------------------------------------------------------- */

sp_status sp_model_export_safetensors(const sp_model *m, const char *path, bool csr) {
    if (!m || !path) return sp_fail(SP_EINVAL, "model_export: NULL argument");
    if (!sp_model_params((sp_model *)m) && sp_model_nparams(m))
        return sp_fail(SP_EINVAL, "model_export: the model is mapped from its file "
                       "(sp_model_open), for inference; load it with sp_checkpoint_load to "
                       "export it");
    layer_spec *ls = NULL;
    int nls = 0;
    sp_safetensors_builder *b = NULL;
    float *w = NULL;
    int64_t *idx = NULL;
    sp_status s = model_specs(m, &ls, &nls);
    if (s != SP_OK) return s;
    if ((s = sp_safetensors_builder_new(&b)) != SP_OK) goto done;
    const float *params = sp_model_params((sp_model *)m), *bufs = sp_model_buffers((sp_model *)m);
    char key[96];
    for (int k = 0; k < nls; k++) {
        const layer_spec *L = &ls[k];
        const sp_csr *c = L->linear && csr ? sp_model_layer_csr(m, L->layer) : NULL;
        for (int j = 0; j < L->n; j++) {
            const param_spec *p = &L->p[j];
            snprintf(key, sizeof key, "%d.%s", L->layer, p->suffix);
            if (p->integer) {
                const int64_t zero = 0;
                s = sp_safetensors_builder_add(b, key, SP_ST_I64, 0, NULL, &zero);
            } else if (L->linear && j == 0 && c) {
                /* torch.sparse_csr_tensor(crow_indices, col_indices, values, size) */
                const int64_t rows1 = c->rows + 1, nnz = c->nnz, size[2] = {c->rows, c->cols};
                s = SP_ENOMEM;
                sp_free(idx);
                idx = sp_alloc(sizeof *idx * (size_t)(nnz + 1));
                if (!idx) goto done;
                for (int64_t q = 0; q < nnz; q++) idx[q] = sp_csr_col(c, q);
                snprintf(key, sizeof key, "%d.weight.crow_indices", L->layer);
                s = sp_safetensors_builder_add(b, key, SP_ST_I64, 1, &rows1, c->row_ptr);
                snprintf(key, sizeof key, "%d.weight.col_indices", L->layer);
                if (s == SP_OK) s = sp_safetensors_builder_add(b, key, SP_ST_I64, 1, &nnz, idx);
                snprintf(key, sizeof key, "%d.weight.values", L->layer);
                if (s == SP_OK) s = sp_safetensors_builder_add(b, key, SP_ST_F32, 1, &nnz, c->val);
                snprintf(key, sizeof key, "%d.weight.size", L->layer);
                const int64_t two = 2;
                if (s == SP_OK) s = sp_safetensors_builder_add(b, key, SP_ST_I64, 1, &two, size);
            } else if (L->linear && j == 0) {
                /* dense, with the zeros of a sparse layer */
                s = SP_ENOMEM;
                sp_free(w);
                w = sp_alloc(sizeof *w * (size_t)(p->shape[0] * p->shape[1] + 1));
                if (!w) goto done;
                s = sp_model_layer_get_weight(m, L->layer, w, NULL);
                if (s == SP_OK) s = sp_safetensors_builder_add(b, key, SP_ST_F32, 2, p->shape, w);
            } else {
                s = sp_safetensors_builder_add(b, key, SP_ST_F32, p->rank, p->shape,
                                               (p->in_buffers ? bufs : params) + p->offset);
            }
            if (s != SP_OK) goto done;
        }
    }
    char num[48];
    snprintf(num, sizeof num, "%.9g", (double)sp_model_input_scale(m));
    if ((s = sp_safetensors_builder_meta(b, "format", "pt")) != SP_OK ||
        (s = sp_safetensors_builder_meta(b, "sparrow.config", sp_model_config(m))) != SP_OK ||
        (s = sp_safetensors_builder_meta(b, "sparrow.input_scale", num)) != SP_OK)
        goto done;
    snprintf(num, sizeof num, "%lld", (long long)sp_model_classes(m));
    if ((s = sp_safetensors_builder_meta(b, "sparrow.classes", num)) != SP_OK) goto done;
    s = sp_safetensors_write(b, path);
done:
    sp_free(w);
    sp_free(idx);
    sp_free(ls);
    sp_safetensors_builder_free(b);
    return s;
}
