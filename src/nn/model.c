/*
 * model.c - the model container: parses a config into a sequence of layers (with nested
 * residual blocks), lays out the parameter, gradient and state arenas, keeps the activations
 * of the last forward pass and runs backward through them.
 *
 * Config grammar (docs/CONFIG.md): one layer per line, "kind key=value ...", '#' starts a
 * comment, an optional first line "input C H W", "residual {" ... "}" for y = x + f(x), and
 * "moe experts=E ... {" ... "}" for a mixture of experts whose body (one expert) is parsed once
 * per expert (moe.c). The value "classes" stands for the number of classes the model is built
 * for.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seq.h"

#include "../core/internal.h"

#define MAX_DEPTH 8
#define MAX_LAYERS 4096

/* y = x + f(x) where f is a nested sequence with out shape == in shape. */
typedef struct residual_layer {
    sp_layer base;
    sp_seq body;
} residual_layer;

struct sp_model {
    sp_seq root;
    sp_shape in, out;
    int64_t classes;
    uint64_t seed;
    float input_scale;     /* feature = raw * input_scale */
    int32_t *vocab;        /* classes code points (a text model's vocabulary), or NULL */
    int nthreads;
    int64_t step;
    int64_t cap;           /* batch capacity of the activation buffers */
    int64_t batch;         /* batch of the last forward pass, 0 if none */
    const float *x;        /* input of the last forward pass (borrowed) */
    int nlayers;
    sp_layer **flat;       /* depth-first list of every layer */
    int64_t nparams, nbuffers;
    float *params, *grads, *buffers;
    char *config;
    sp_backward_tap tap;
    void *tap_user;
};

/* ---- sequences ------------------------------------------------------------------------------ */

void sp_seq_free_buffers(sp_seq *s) {
    for (int i = 0; i < s->n; i++) {
        if (s->act) sp_free(s->act[i]);
        if (s->dact) sp_free(s->dact[i]);
    }
    sp_free(s->act);
    sp_free(s->dact);
    s->act = s->dact = NULL;
}

void sp_seq_deinit(sp_seq *s) {
    sp_seq_free_buffers(s);
    for (int i = 0; i < s->n; i++) sp_layer_free(s->layers[i]);
    sp_free(s->layers);
    memset(s, 0, sizeof *s);
}

sp_status sp_seq_push(sp_seq *s, sp_layer *l) {
    sp_layer **p = sp_alloc(sizeof *p * (size_t)(s->n + 1));
    if (!p) return SP_ENOMEM;
    if (s->n) memcpy(p, s->layers, sizeof *p * (size_t)s->n);
    sp_free(s->layers);
    s->layers = p;
    s->layers[s->n++] = l;
    return SP_OK;
}

sp_status sp_seq_reserve(sp_seq *s, int64_t batch) {
    sp_seq_free_buffers(s);
    if (s->n == 0) return SP_OK;
    s->act = sp_calloc((size_t)s->n, sizeof *s->act);
    s->dact = sp_calloc((size_t)s->n, sizeof *s->dact);
    if (!s->act || !s->dact) return SP_ENOMEM;
    for (int i = 0; i < s->n; i++) {
        sp_layer *l = s->layers[i];
        int64_t count;
        size_t bytes;
        if (!sp_mul_i64(sp_shape_numel(l->out), batch, &count) ||
            !sp_bytes(count, sizeof(float), &bytes))
            return sp_fail(SP_EOVERFLOW, "model: activations of %s overflow at batch %lld",
                           l->name, (long long)batch);
        s->act[i] = sp_alloc(bytes);
        s->dact[i] = sp_alloc(bytes);
        if (!s->act[i] || !s->dact[i]) return SP_ENOMEM;
        if (l->vt->reserve) {
            sp_status st = l->vt->reserve(l, batch);
            if (st != SP_OK) return st;
        }
    }
    return SP_OK;
}

sp_status sp_seq_forward(sp_seq *s, const sp_run *run, const float *x) {
    for (int i = 0; i < s->n; i++) {
        sp_layer *l = s->layers[i];
        sp_status st = l->vt->forward(l, run, i ? s->act[i - 1] : x, s->act[i]);
        if (st != SP_OK) return st;
    }
    return SP_OK;
}

/* dy is the gradient of the last output; dx (may be NULL) receives the input gradient. */
sp_status sp_seq_backward(sp_seq *s, const sp_run *run, const float *x, const float *dy,
                          float *dx) {
    for (int i = s->n - 1; i >= 0; i--) {
        sp_layer *l = s->layers[i];
        const float *xi = i ? s->act[i - 1] : x;
        const float *dyi = i == s->n - 1 ? dy : s->dact[i];
        float *dxi = i ? s->dact[i - 1] : dx;
        sp_status st = run->tap ? run->tap(l->index, xi, dyi, run->batch, run->tap_user) : SP_OK;
        if (st == SP_OK) st = l->vt->backward(l, run, xi, s->act[i], dyi, dxi);
        if (st != SP_OK) return st;
    }
    return SP_OK;
}

/* ---- residual ------------------------------------------------------------------------------- */

static sp_status residual_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    residual_layer *r = (residual_layer *)l;
    int64_t n = sp_shape_numel(l->in) * run->batch;
    if (r->body.n == 0) {
        for (int64_t i = 0; i < n; i++) y[i] = 2.0f * x[i];
        return SP_OK;
    }
    sp_status st = sp_seq_forward(&r->body, run, x);
    if (st != SP_OK) return st;
    const float *f = r->body.act[r->body.n - 1];
    for (int64_t i = 0; i < n; i++) y[i] = x[i] + f[i];
    return SP_OK;
}

static sp_status residual_backward(sp_layer *l, const sp_run *run, const float *x,
                                   const float *y, const float *dy, float *dx) {
    residual_layer *r = (residual_layer *)l;
    int64_t n = sp_shape_numel(l->in) * run->batch;
    if (r->body.n == 0) {
        if (dx)
            for (int64_t i = 0; i < n; i++) dx[i] = 2.0f * dy[i];
        return SP_OK;
    }
    /* dx = dy + J_f^T dy. The body always needs its own input gradient here, so it writes into
     * dx (or a scratch when the caller does not want dx: the first layer of a model). */
    float *tmp = NULL;
    float *d = dx;
    if (!d) {
        d = tmp = sp_alloc(sizeof(float) * (size_t)n);
        if (!tmp) return SP_ENOMEM;
    }
    sp_status st = sp_seq_backward(&r->body, run, x, dy, d);
    if (st == SP_OK && dx)
        for (int64_t i = 0; i < n; i++) dx[i] += dy[i];
    sp_free(tmp);
    return st;
}

static sp_status residual_reserve(sp_layer *l, int64_t batch) {
    return sp_seq_reserve(&((residual_layer *)l)->body, batch);
}

static void residual_free(sp_layer *l) { sp_seq_deinit(&((residual_layer *)l)->body); }

static int residual_describe(const sp_layer *l, char *buf, size_t n) {
    return snprintf(buf, n, "residual {");
}

static const sp_layer_vt residual_vt = {
    .kind = "residual",
    .forward = residual_forward,
    .backward = residual_backward,
    .reserve = residual_reserve,
    .free = residual_free,
    .describe = residual_describe,
};

/* ---- block layers: residual (one body) and moe (one per expert) ----------------------------- */

int sp_layer_nbodies(const sp_layer *l) {
    if (l->vt == &residual_vt) return 1;
    return sp_moe_is(l) ? sp_moe_nbodies(l) : 0;
}

sp_seq *sp_layer_body(const sp_layer *l, int k) {
    if (l->vt == &residual_vt) return &((residual_layer *)l)->body;
    return sp_moe_body(l, k);
}

int64_t sp_layer_body_batch(const sp_layer *l, int k, int64_t batch) {
    if (l->vt == &residual_vt) return batch;
    return sp_moe_body_batch(l, k);
}

/* ---- parsing -------------------------------------------------------------------------------- */

typedef struct parser {
    char *text;            /* mutable copy; args point into it */
    char *orig;            /* an untouched copy, to restore a block body parsed again */
    char *cur;
    bool in_moe;           /* inside the body of a moe block (which may not nest) */
    int line;
    int64_t classes;
    char classes_str[24];
    int next_index;
    uint64_t seed;
    int64_t max_params;    /* budget over the whole model */
    int64_t params_so_far;
    const sp_mask *const *patterns; /* explicit patterns by layer index, or NULL */
    const sp_csr *const *csr_patterns; /* the same as CSR structures, or NULL */
    int npatterns;
} parser;

static bool has_pattern(const parser *p, int index) {
    return index < p->npatterns && ((p->patterns && p->patterns[index]) ||
                                    (p->csr_patterns && p->csr_patterns[index]));
}

/* Next non-empty line, comments stripped, split in place into tokens. Returns the token count
 * (0 at the end of the text), -1 on too many tokens. */
static int next_line(parser *p, char **tok, int maxtok) {
    while (*p->cur) {
        char *line = p->cur;
        char *end = strchr(line, '\n');
        if (end) {
            *end = '\0';
            p->cur = end + 1;
        } else {
            p->cur = line + strlen(line);
        }
        p->line++;
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        int n = 0;
        char *s = line;
        for (;;) {
            while (*s && isspace((unsigned char)*s)) s++;
            if (!*s) break;
            if (n == maxtok) return -1;
            tok[n++] = s;
            while (*s && !isspace((unsigned char)*s)) s++;
            if (*s) *s++ = '\0';
        }
        if (n) return n;
    }
    return 0;
}

static sp_status parse_seq(parser *p, sp_shape in, int depth, const char *block, int open_line,
                           sp_seq *seq, sp_shape *out);

static sp_status make_residual(parser *p, sp_shape in, int depth, sp_layer **out) {
    residual_layer *r = sp_layer_alloc(sizeof *r, &residual_vt, in);
    if (!r) return SP_ENOMEM;
    int open_line = p->line;
    sp_shape body_out;
    sp_status st = parse_seq(p, in, depth + 1, "residual", open_line, &r->body, &body_out);
    if (st != SP_OK) goto fail;
    if (body_out.c != in.c || body_out.h != in.h || body_out.w != in.w) {
        st = sp_fail(SP_ESHAPE,
                     "config line %d: residual block maps (%lld,%lld,%lld) to (%lld,%lld,%lld); "
                     "y = x + f(x) needs the same shape",
                     open_line, (long long)in.c, (long long)in.h, (long long)in.w,
                     (long long)body_out.c, (long long)body_out.h, (long long)body_out.w);
        goto fail;
    }
    r->base.out = in;
    *out = &r->base;
    return SP_OK;
fail:
    sp_layer_free(&r->base);
    return st;
}

/* A moe block: the options of its line (tok[1..nt-2], tok[nt-1] is "{"), then its body parsed
 * once per expert (and once more for a shared expert) from the same text, restored from
 * p->orig before each pass, so that every instance gets its own layer indices (and patterns). */
static sp_status make_moe(parser *p, char **tok, int nt, sp_shape in, int depth, int index,
                          sp_layer **out) {
    const int open_line = p->line;
    if (nt < 2 || strcmp(tok[nt - 1], "{") != 0)
        return sp_fail(SP_EINVAL, "config line %d: write 'moe experts=E [options] {'", open_line);
    if (p->in_moe)
        return sp_fail(SP_EINVAL, "config line %d: a moe block inside a moe block's expert; "
                       "moe blocks do not nest", open_line);
    if (has_pattern(p, index))
        return sp_fail(SP_EFORMAT, "config line %d: layer %d is a moe block and takes no "
                       "sparsity pattern, but one was given", open_line, index);
    if (depth + 1 >= MAX_DEPTH)
        return sp_fail(SP_EINVAL, "config line %d: blocks nested deeper than %d", open_line,
                       MAX_DEPTH);
    sp_args a = {.kind = "moe", .line = open_line};
    for (int i = 1; i < nt - 1; i++) {
        char *eq = strchr(tok[i], '=');
        if (!eq || eq == tok[i])
            return sp_fail(SP_EINVAL, "config line %d (moe): '%s' is not key=value", open_line,
                           tok[i]);
        *eq = '\0';
        for (int j = 0; j < a.n; j++)
            if (strcmp(a.key[j], tok[i]) == 0)
                return sp_fail(SP_EINVAL, "config line %d (moe): option '%s' given twice",
                               open_line, tok[i]);
        a.key[a.n] = tok[i];
        a.val[a.n] = strcmp(eq + 1, "classes") == 0 ? p->classes_str : eq + 1;
        a.n++;
    }
    sp_build b = {.index = index, .max_params = p->max_params - p->params_so_far};
    sp_layer *l = NULL;
    sp_status st = sp_moe_create(&a, in, &b, &l);
    if (st != SP_OK) return st;
    if ((st = sp_args_finish(&a)) != SP_OK) goto fail;
    if (l->nparam > p->max_params - p->params_so_far) {
        st = sp_fail(SP_EFORMAT, "config line %d (moe): the model would exceed %lld parameters",
                     open_line, (long long)p->max_params);
        goto fail;
    }
    p->params_so_far += l->nparam;
    const sp_shape tok_shape = {in.c, 1, 1};
    char *const start = p->cur;
    const int start_line = p->line;
    p->in_moe = true;
    for (int k = 0; k < sp_moe_nbodies(l); k++) {
        if (k > 0) {
            /* the text of the body, tokenized in place by the previous pass, comes back */
            memcpy(start, p->orig + (start - p->text), (size_t)(p->cur - start));
            p->cur = start;
            p->line = start_line;
        }
        sp_shape body_out;
        st = parse_seq(p, tok_shape, depth + 1, "moe", open_line, sp_moe_body(l, k), &body_out);
        if (st != SP_OK) break;
        if (sp_moe_body(l, k)->n == 0) {
            st = sp_fail(SP_EINVAL, "config line %d (moe): the expert body is empty", open_line);
            break;
        }
        if (body_out.c != in.c || body_out.h != 1 || body_out.w != 1) {
            st = sp_fail(SP_ESHAPE, "config line %d (moe): an expert maps a token (%lld,1,1) to "
                         "(%lld,%lld,%lld); it must keep the shape (%lld,1,1)", open_line,
                         (long long)in.c, (long long)body_out.c, (long long)body_out.h,
                         (long long)body_out.w, (long long)in.c);
            break;
        }
    }
    p->in_moe = false;
    if (st != SP_OK) goto fail;
    *out = l;
    return SP_OK;
fail:
    sp_layer_free(l);
    return st;
}

static sp_status parse_seq(parser *p, sp_shape in, int depth, const char *block, int open_line,
                           sp_seq *seq, sp_shape *out) {
    char *tok[SP_ARGS_MAX + 2];
    sp_shape cur = in;
    for (;;) {
        int nt = next_line(p, tok, SP_ARGS_MAX + 2);
        if (nt < 0)
            return sp_fail(SP_EINVAL, "config line %d: more than %d options", p->line,
                           SP_ARGS_MAX);
        if (nt == 0) {
            if (depth > 0)
                return sp_fail(SP_EINVAL, "config: the %s block opened on line %d is not closed "
                               "by '}'", block, open_line);
            break;
        }
        if (strcmp(tok[0], "}") == 0) {
            if (nt > 1 || depth == 0)
                return sp_fail(SP_EINVAL, "config line %d: unexpected '}'", p->line);
            break;
        }
        if (strcmp(tok[0], "input") == 0)
            return sp_fail(SP_EINVAL, "config line %d: 'input' may only be the first line",
                           p->line);
        if (p->next_index >= MAX_LAYERS)
            return sp_fail(SP_EINVAL, "config line %d: more than %d layers", p->line,
                           MAX_LAYERS);
        sp_layer *l = NULL;
        sp_status st;
        int index = p->next_index++;
        if (strcmp(tok[0], "residual") == 0) {
            if (nt != 2 || strcmp(tok[1], "{") != 0)
                return sp_fail(SP_EINVAL, "config line %d: write 'residual {'", p->line);
            if (has_pattern(p, index))
                return sp_fail(SP_EFORMAT, "config line %d: layer %d is a residual block and "
                               "takes no sparsity pattern, but one was given", p->line, index);
            if (depth + 1 >= MAX_DEPTH)
                return sp_fail(SP_EINVAL, "config line %d: residual blocks nested deeper than %d",
                               p->line, MAX_DEPTH);
            st = make_residual(p, cur, depth, &l);
        } else if (strcmp(tok[0], "moe") == 0) {
            st = make_moe(p, tok, nt, cur, depth, index, &l);
            if (st == SP_OK) p->params_so_far -= l->nparam; /* counted again below */
        } else {
            sp_layer_create_fn create = sp_layer_find(tok[0]);
            if (!create)
                return sp_fail(SP_EINVAL, "config line %d: unknown layer '%s' (known: %s)",
                               p->line, tok[0], sp_layer_kinds());
            sp_args a = {.kind = tok[0], .line = p->line};
            for (int i = 1; i < nt; i++) {
                char *eq = strchr(tok[i], '=');
                if (!eq || eq == tok[i])
                    return sp_fail(SP_EINVAL, "config line %d (%s): '%s' is not key=value",
                                   p->line, tok[0], tok[i]);
                *eq = '\0';
                for (int j = 0; j < a.n; j++)
                    if (strcmp(a.key[j], tok[i]) == 0)
                        return sp_fail(SP_EINVAL, "config line %d (%s): option '%s' given twice",
                                       p->line, tok[0], tok[i]);
                a.key[a.n] = tok[i];
                a.val[a.n] = strcmp(eq + 1, "classes") == 0 ? p->classes_str : eq + 1;
                a.n++;
            }
            sp_build b = {.index = index, .max_params = p->max_params - p->params_so_far};
            if (index < p->npatterns) {
                b.pattern = p->patterns ? p->patterns[index] : NULL;
                b.pattern_csr = p->csr_patterns ? p->csr_patterns[index] : NULL;
            }
            if (b.pattern && b.pattern_csr)
                return sp_fail(SP_EINVAL, "config line %d (%s): layer %d is given both a mask "
                               "and a CSR pattern", p->line, tok[0], index);
            sp_rng_init(&b.rng, p->seed, 0x5eed0000u + (uint64_t)index);
            st = create(&a, cur, &b, &l);
            if (st == SP_OK && (b.pattern || b.pattern_csr) && !b.pattern_used) {
                sp_layer_free(l);
                return sp_fail(SP_EFORMAT, "config line %d (%s): layer %d takes no sparsity "
                               "pattern, but one was given", p->line, tok[0], index);
            }
            if (st == SP_OK) {
                st = sp_args_finish(&a);
                if (st != SP_OK) sp_layer_free(l);
            }
        }
        if (st != SP_OK) return st;
        if (l->nparam + l->nbuffer > p->max_params - p->params_so_far) {
            st = sp_fail(SP_EFORMAT, "config line %d (%s): the model would exceed %lld parameters",
                         p->line, l->vt->kind, (long long)p->max_params);
            sp_layer_free(l);
            return st;
        }
        p->params_so_far += l->nparam + l->nbuffer;
        l->index = index;
        snprintf(l->name, sizeof l->name, "%d.%s", index, l->vt->kind);
        if (l->out.c <= 0 || l->out.h <= 0 || l->out.w <= 0) {
            st = sp_fail(SP_ESHAPE, "config line %d (%s): output shape (%lld,%lld,%lld) is empty",
                         p->line, l->vt->kind, (long long)l->out.c, (long long)l->out.h,
                         (long long)l->out.w);
            sp_layer_free(l);
            return st;
        }
        st = sp_seq_push(seq, l);
        if (st != SP_OK) {
            sp_layer_free(l);
            return st;
        }
        cur = l->out;
    }
    *out = cur;
    return SP_OK;
}

/* Reads an optional "input C H W" first line, checks that it has as many features as *inp and
 * makes it the model's input shape. The line is peeked
 * from a copy, so that any other first line is left for parse_seq. */
static sp_status parse_input_line(parser *p, sp_shape *inp) {
    sp_shape in = *inp;
    char *s = p->cur;
    int line = p->line;
    while (*s) {
        char *end = strchr(s, '\n');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        line++;
        char copy[256];
        size_t n = len < sizeof copy - 1 ? len : sizeof copy - 1;
        memcpy(copy, s, n);
        copy[n] = '\0';
        char *hash = strchr(copy, '#');
        if (hash) *hash = '\0';
        char *tok[5], *save = NULL;
        int nt = 0;
        for (char *t = strtok_r(copy, " \t\r\v\f", &save); t;
             t = strtok_r(NULL, " \t\r\v\f", &save)) {
            if (nt == 5) break;
            tok[nt++] = t;
        }
        if (nt == 0) {
            s = end ? end + 1 : s + len;
            continue;
        }
        if (strcmp(tok[0], "input") != 0) return SP_OK;
        int64_t d[3] = {1, 1, 1};
        if (nt < 2 || nt > 4)
            return sp_fail(SP_EINVAL, "config line %d: write 'input C [H W]'", line);
        for (int i = 1; i < nt; i++) {
            char *e;
            long long v = strtoll(tok[i], &e, 10);
            if (*e || v < 1 || v > (1 << 24))
                return sp_fail(SP_EINVAL, "config line %d: input size '%s' is not in [1, 2^24]",
                               line, tok[i]);
            d[i - 1] = v;
        }
        int64_t dn;
        if (!sp_mul_i64(d[0], d[1], &dn) || !sp_mul_i64(dn, d[2], &dn) ||
            dn != in.c * in.h * in.w) /* in.c * h * w <= 2^31, checked by the caller */
            return sp_fail(SP_ESHAPE,
                           "config line %d: input %lldx%lldx%lld does not match the data "
                           "(%lldx%lldx%lld)",
                           line, (long long)d[0], (long long)d[1], (long long)d[2],
                           (long long)in.c, (long long)in.h, (long long)in.w);
        /* same features, maybe another view of them (784 vs 1x28x28): the config decides */
        *inp = (sp_shape){d[0], d[1], d[2]};
        p->cur = end ? end + 1 : s + len;
        p->line = line;
        return SP_OK;
    }
    return SP_OK;
}

/* ---- arenas --------------------------------------------------------------------------------- */

static sp_status collect(sp_model *m, sp_seq *s) {
    for (int i = 0; i < s->n; i++) {
        sp_layer *l = s->layers[i];
        m->flat[m->nlayers++] = l;
        if (!sp_add_i64(m->nparams, l->nparam, &m->nparams) ||
            !sp_add_i64(m->nbuffers, l->nbuffer, &m->nbuffers))
            return sp_fail(SP_EOVERFLOW, "model: parameter count overflows");
        for (int k = 0; k < sp_layer_nbodies(l); k++) {
            sp_status st = collect(m, sp_layer_body(l, k));
            if (st != SP_OK) return st;
        }
    }
    return SP_OK;
}

static int count_layers(const sp_seq *s) {
    int n = s->n;
    for (int i = 0; i < s->n; i++)
        for (int k = 0; k < sp_layer_nbodies(s->layers[i]); k++)
            n += count_layers(sp_layer_body(s->layers[i], k));
    return n;
}

static int describe_seq(const sp_seq *s, int depth, char *buf, size_t n) {
    int len = 0;
    for (int i = 0; i < s->n; i++) {
        const sp_layer *l = s->layers[i];
        char line[512];
        l->vt->describe(l, line, sizeof line);
        len += snprintf(buf ? buf + len : NULL, buf ? n - (size_t)len : 0, "%*s%s\n", 2 * depth,
                        "", line);
        if (sp_layer_nbodies(l) > 0) {
            /* a block's body once: a moe block's experts are instances of the same text */
            len += describe_seq(sp_layer_body(l, 0), depth + 1,
                                buf ? buf + len : NULL, buf ? n - (size_t)len : 0);
            len += snprintf(buf ? buf + len : NULL, buf ? n - (size_t)len : 0, "%*s}\n",
                            2 * depth, "");
        }
    }
    return len;
}

/* ---- public API ----------------------------------------------------------------------------- */

sp_status sp_model_new(const char *text, sp_shape in, int64_t classes, uint64_t seed,
                       sp_model **out) {
    return sp_model_new_limited(text, in, classes, seed, (int64_t)1 << 34, out);
}

sp_status sp_model_new_limited(const char *text, sp_shape in, int64_t classes, uint64_t seed,
                               int64_t max_params, sp_model **out) {
    return sp_model_new_with_patterns(text, in, classes, seed, max_params, NULL, 0, out);
}

sp_status sp_model_new_with_patterns(const char *text, sp_shape in, int64_t classes,
                                     uint64_t seed, int64_t max_params,
                                     const sp_mask *const *patterns, int npatterns,
                                     sp_model **out) {
    return sp_model_new_with_structure(text, in, classes, seed, max_params, patterns, NULL,
                                       npatterns, out);
}

sp_status sp_model_new_with_structure(const char *text, sp_shape in, int64_t classes,
                                      uint64_t seed, int64_t max_params,
                                      const sp_mask *const *patterns, const sp_csr *const *csrs,
                                      int npatterns, sp_model **out) {
    if (!text || !out) return sp_fail(SP_EINVAL, "model: NULL argument");
    *out = NULL;
    int64_t in_numel;
    if (in.c < 1 || in.h < 1 || in.w < 1 || in.c > (1 << 24) || in.h > (1 << 24) ||
        in.w > (1 << 24) || !sp_mul_i64(in.c, in.h, &in_numel) ||
        !sp_mul_i64(in_numel, in.w, &in_numel) || in_numel > ((int64_t)1 << 31))
        return sp_fail(SP_EINVAL, "model: input shape (%lld,%lld,%lld) out of range",
                       (long long)in.c, (long long)in.h, (long long)in.w);
    if (classes < 1 || classes > (1 << 24))
        return sp_fail(SP_EINVAL, "model: classes %lld not in [1, 2^24]", (long long)classes);
    sp_model *m = sp_calloc(1, sizeof *m);
    parser p = {.line = 0, .classes = classes, .seed = seed, .max_params = max_params,
                .patterns = patterns, .csr_patterns = csrs,
                .npatterns = patterns || csrs ? npatterns : 0};
    if (!m) return SP_ENOMEM;
    sp_status st = SP_ENOMEM;
    size_t tlen = strlen(text);
    p.text = sp_alloc(tlen + 1);
    p.orig = sp_alloc(tlen + 1);
    if (!p.text || !p.orig) goto fail;
    memcpy(p.text, text, tlen + 1);
    memcpy(p.orig, text, tlen + 1);
    p.cur = p.text;
    snprintf(p.classes_str, sizeof p.classes_str, "%lld", (long long)classes);
    m->in = in;
    m->classes = classes;
    m->seed = seed;
    m->input_scale = 1.0f / 255.0f;
    m->nthreads = 0;
    st = parse_input_line(&p, &in);
    if (st != SP_OK) goto fail;
    m->in = in;
    st = parse_seq(&p, in, 0, "", 0, &m->root, &m->out);
    if (st != SP_OK) goto fail;
    if (m->root.n == 0) {
        st = sp_fail(SP_EINVAL, "config: no layers");
        goto fail;
    }
    for (int i = p.next_index; i < p.npatterns; i++)
        if (has_pattern(&p, i)) {
            st = sp_fail(SP_EFORMAT, "a sparsity pattern is given for layer %d, but the model "
                         "has %d layers", i, p.next_index);
            goto fail;
        }
    int total = count_layers(&m->root);
    m->flat = sp_calloc((size_t)total, sizeof *m->flat);
    st = SP_ENOMEM;
    if (!m->flat) goto fail;
    st = collect(m, &m->root);
    if (st != SP_OK) goto fail;
    size_t pbytes, bbytes;
    if (!sp_bytes(m->nparams, sizeof(float), &pbytes) ||
        !sp_bytes(m->nbuffers, sizeof(float), &bbytes)) {
        st = sp_fail(SP_EOVERFLOW, "model: %lld parameters overflow", (long long)m->nparams);
        goto fail;
    }
    st = SP_ENOMEM;
    m->params = sp_calloc(1, pbytes);
    m->grads = sp_calloc(1, pbytes);
    m->buffers = sp_calloc(1, bbytes);
    if (!m->params || !m->grads || !m->buffers) goto fail;
    int64_t po = 0, bo = 0;
    for (int i = 0; i < m->nlayers; i++) {
        sp_layer *l = m->flat[i];
        if (l->nparam) {
            l->param = m->params + po;
            l->grad = m->grads + po;
        }
        if (l->nbuffer) l->buffer = m->buffers + bo;
        po += l->nparam;
        bo += l->nbuffer;
        if (l->vt->init_params) {
            sp_rng r;
            sp_rng_init(&r, seed, (uint64_t)l->index);
            l->vt->init_params(l, &r);
        }
        if (l->vt->bind) {
            st = l->vt->bind(l);
            if (st != SP_OK) goto fail;
        }
    }
    /* normalized config */
    int clen = snprintf(NULL, 0, "input %lld %lld %lld\n", (long long)in.c, (long long)in.h,
                        (long long)in.w);
    int blen = describe_seq(&m->root, 0, NULL, 0);
    st = SP_ENOMEM;
    m->config = sp_alloc((size_t)clen + (size_t)blen + 1);
    if (!m->config) goto fail;
    snprintf(m->config, (size_t)clen + 1, "input %lld %lld %lld\n", (long long)in.c,
             (long long)in.h, (long long)in.w);
    describe_seq(&m->root, 0, m->config + clen, (size_t)blen + 1);
    sp_free(p.text);
    sp_free(p.orig);
    *out = m;
    return SP_OK;
fail:
    sp_free(p.text);
    sp_free(p.orig);
    sp_model_free(m);
    return st;
}

void sp_model_free(sp_model *m) {
    if (!m) return;
    sp_seq_deinit(&m->root);
    sp_free(m->flat);
    sp_free(m->params);
    sp_free(m->grads);
    sp_free(m->buffers);
    sp_free(m->config);
    sp_free(m->vocab);
    sp_free(m);
}

static sp_run make_run(const sp_model *m, int64_t batch, bool train) {
    sp_run r = {.batch = batch, .train = train, .nthreads = m->nthreads, .seed = m->seed,
                .step = m->step, .tap = m->tap, .tap_user = m->tap_user};
    if (r.nthreads <= 0) r.nthreads = sp_threads_available();
    return r;
}

sp_status sp_model_forward(sp_model *m, const float *x, int64_t batch, bool train,
                           const float **y) {
    if (!m || !x || !y) return sp_fail(SP_EINVAL, "model_forward: NULL argument");
    if (batch < 1) return sp_fail(SP_EINVAL, "model_forward: batch %lld < 1", (long long)batch);
    if (batch > m->cap) {
        m->cap = 0;
        sp_status st = sp_seq_reserve(&m->root, batch);
        if (st != SP_OK) {
            sp_seq_free_buffers(&m->root);
            m->batch = 0;
            return st;
        }
        m->cap = batch;
    }
    sp_run run = make_run(m, batch, train);
    m->batch = 0;
    sp_status st = sp_seq_forward(&m->root, &run, x);
    if (st != SP_OK) return st;
    m->batch = batch;
    m->x = x;
    *y = m->root.act[m->root.n - 1];
    return SP_OK;
}

sp_status sp_model_backward(sp_model *m, const float *dy, float *dx) {
    if (!m || !dy) return sp_fail(SP_EINVAL, "model_backward: NULL argument");
    if (m->batch == 0) return sp_fail(SP_EINVAL, "model_backward: no forward pass to go back through");
    sp_run run = make_run(m, m->batch, true);
    return sp_seq_backward(&m->root, &run, m->x, dy, dx);
}

/* Arena sweeps (zeroing, the finite check) run in fixed chunks on the model's threads: the
 * arena is written by whichever core ran the layer, so one core alone would pull it all over. */
#define ARENA_CHUNK 32768

typedef struct arena_ctx {
    float *v;
    int64_t n;
    uint32_t bad[64]; /* per task, for the finite check (at most 64 tasks are flagged) */
} arena_ctx;

static void zero_chunk(void *vctx, int64_t t) {
    arena_ctx *c = vctx;
    int64_t i0 = t * ARENA_CHUNK, i1 = SP_MIN(c->n, i0 + ARENA_CHUNK);
    memset(c->v + i0, 0, sizeof(float) * (size_t)(i1 - i0));
}

static void finite_chunk(void *vctx, int64_t t) {
    arena_ctx *c = vctx;
    int64_t i0 = t * ARENA_CHUNK, i1 = SP_MIN(c->n, i0 + ARENA_CHUNK);
    /* an all-ones exponent marks NaN and Inf; an integer OR-reduction vectorizes */
    uint32_t bad = 0;
    for (int64_t k = i0; k < i1; k++) {
        uint32_t u;
        memcpy(&u, &c->v[k], 4);
        bad |= (u & 0x7f800000u) == 0x7f800000u;
    }
    if (bad) __atomic_store_n(&c->bad[t % 64], 1u, __ATOMIC_RELAXED); /* slots may be shared */
}

static int arena_threads(const sp_model *m) {
    return m->nthreads > 0 ? m->nthreads : sp_threads_available();
}

void sp_model_zero_grad(sp_model *m) {
    if (!m || !m->nparams) return;
    arena_ctx c = {.v = m->grads, .n = m->nparams};
    sp_parallel_for((m->nparams + ARENA_CHUNK - 1) / ARENA_CHUNK, arena_threads(m), zero_chunk, &c);
}

static const sp_layer *first_nonfinite(const sp_seq *s, int64_t batch) {
    for (int i = 0; i < s->n; i++) {
        const sp_layer *l = s->layers[i];
        for (int k = 0; k < sp_layer_nbodies(l); k++) {
            const int64_t bb = sp_layer_body_batch(l, k, batch);
            const sp_layer *in = bb > 0 ? first_nonfinite(sp_layer_body(l, k), bb) : NULL;
            if (in) return in;
        }
        const int64_t n = sp_shape_numel(l->out) * batch;
        for (int64_t k = 0; k < n; k++)
            if (!isfinite(s->act[i][k])) return l;
    }
    return NULL;
}

const char *sp_model_first_nonfinite(const sp_model *m) {
    if (!m || m->batch == 0) return NULL;
    const sp_layer *l = first_nonfinite(&m->root, m->batch);
    return l ? l->name : NULL;
}

sp_status sp_model_check_grads(const sp_model *m) {
    arena_ctx c = {.v = m->grads, .n = m->nparams};
    sp_parallel_for((m->nparams + ARENA_CHUNK - 1) / ARENA_CHUNK, arena_threads(m), finite_chunk,
                    &c);
    uint32_t bad = 0;
    for (int k = 0; k < 64; k++) bad |= c.bad[k];
    if (!bad) return SP_OK;
    for (int i = 0; i < m->nlayers; i++) {
        const sp_layer *l = m->flat[i];
        for (int64_t k = 0; k < l->nparam; k++)
            if (!isfinite(l->grad[k]))
                return sp_fail(SP_EINVAL, "layer %s: gradient of parameter %lld is %s", l->name,
                               (long long)k, isnan(l->grad[k]) ? "NaN" : "Inf");
    }
    return SP_OK;
}

void sp_model_set_input_scale(sp_model *m, float scale) { m->input_scale = scale; }
float sp_model_input_scale(const sp_model *m) { return m->input_scale; }

sp_status sp_model_set_vocab(sp_model *m, const int32_t *codepoints, int64_t n) {
    if (!m) return sp_fail(SP_EINVAL, "model_set_vocab: m is NULL");
    if (!codepoints) {
        sp_free(m->vocab);
        m->vocab = NULL;
        return SP_OK;
    }
    if (n != m->classes)
        return sp_fail(SP_EINVAL, "vocabulary of %lld characters for a model of %lld classes",
                       (long long)n, (long long)m->classes);
    for (int64_t i = 0; i < n; i++) {
        const int32_t c = codepoints[i];
        if (c < 0 || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return sp_fail(SP_EINVAL, "vocabulary entry %lld = 0x%X is not a Unicode scalar "
                           "value", (long long)i, (unsigned)c);
        if (i > 0 && c <= codepoints[i - 1])
            return sp_fail(SP_EINVAL, "vocabulary entry %lld = U+%04X is not above the one "
                           "before it (U+%04X)", (long long)i, (unsigned)c,
                           (unsigned)codepoints[i - 1]);
    }
    int32_t *v = sp_alloc(sizeof(int32_t) * (size_t)n);
    if (!v) return SP_ENOMEM;
    memcpy(v, codepoints, sizeof(int32_t) * (size_t)n);
    sp_free(m->vocab);
    m->vocab = v;
    return SP_OK;
}

const int32_t *sp_model_vocab(const sp_model *m, int64_t *n) {
    if (n) *n = m->vocab ? m->classes : 0;
    return m->vocab;
}

void sp_model_set_threads(sp_model *m, int nthreads) { m->nthreads = nthreads; }
void sp_model_set_backward_tap(sp_model *m, sp_backward_tap tap, void *user) {
    if (!m) return;
    m->tap = tap;
    m->tap_user = user;
}

void sp_model_set_step(sp_model *m, int64_t step) { m->step = step; }
int64_t sp_model_nparams(const sp_model *m) { return m->nparams; }
float *sp_model_params(sp_model *m) { return m->params; }
float *sp_model_grads(sp_model *m) { return m->grads; }
int64_t sp_model_nbuffers(const sp_model *m) { return m->nbuffers; }
float *sp_model_buffers(sp_model *m) { return m->buffers; }
sp_shape sp_model_in(const sp_model *m) { return m->in; }
sp_shape sp_model_out(const sp_model *m) { return m->out; }
int64_t sp_model_classes(const sp_model *m) { return m->classes; }
uint64_t sp_model_seed(const sp_model *m) { return m->seed; }
const char *sp_model_config(const sp_model *m) { return m->config; }
int sp_model_nlayers(const sp_model *m) { return m->nlayers; }
sp_layer *sp_model_layer_ptr(const sp_model *m, int i) {
    return m && i >= 0 && i < m->nlayers ? m->flat[i] : NULL;
}

sp_status sp_model_layer(const sp_model *m, int i, sp_layer_info *info) {
    if (!m || !info || i < 0 || i >= m->nlayers)
        return sp_fail(SP_EINVAL, "model_layer: index %d not in [0, %d)", i, m ? m->nlayers : 0);
    const sp_layer *l = m->flat[i];
    int64_t nnz = 0;
    for (int64_t k = 0; k < l->nparam; k++) nnz += l->param[k] != 0.0f;
    if (l->vt->nnz) nnz += l->vt->nnz(l);
    *info = (sp_layer_info){.name = l->name, .kind = l->vt->kind, .in = l->in, .out = l->out,
                            .nparam = l->nparam, .nnz = nnz,
                            .param_offset = l->nparam ? (int64_t)(l->param - m->params) : 0,
                            .format = "", .dense_params = l->nparam,
                            .bytes = sizeof(float) * (size_t)l->nparam};
    if (l->vt->storage) l->vt->storage(l, &info->format, &info->dense_params, &info->bytes);
    return SP_OK;
}

sp_status sp_model_layer_pattern(const sp_model *m, int i, sp_mask **out) {
    if (!m || !out || i < 0 || i >= m->nlayers)
        return sp_fail(SP_EINVAL, "model_layer_pattern: index %d not in [0, %d)", i,
                       m ? m->nlayers : 0);
    *out = NULL;
    const sp_layer *l = m->flat[i];
    return l->vt->pattern ? l->vt->pattern(l, out) : SP_OK;
}

sp_status sp_model_layer_get_weight(const sp_model *m, int i, float *w, float *bias) {
    if (!m || !w || i < 0 || i >= m->nlayers)
        return sp_fail(SP_EINVAL, "model_layer_get_weight: index %d not in [0, %d)", i,
                       m ? m->nlayers : 0);
    const sp_layer *l = m->flat[i];
    if (!l->vt->get_dense)
        return sp_fail(SP_EINVAL, "layer %s has no weight matrix", l->name);
    return l->vt->get_dense(l, w, bias);
}

sp_status sp_model_layer_set_weight(sp_model *m, int i, const float *w, const float *bias) {
    if (!m || !w || i < 0 || i >= m->nlayers)
        return sp_fail(SP_EINVAL, "model_layer_set_weight: index %d not in [0, %d)", i,
                       m ? m->nlayers : 0);
    sp_layer *l = m->flat[i];
    if (!l->vt->set_dense)
        return sp_fail(SP_EINVAL, "layer %s has no weight matrix", l->name);
    return l->vt->set_dense(l, w, bias);
}

sp_status sp_model_layer_set_pattern(sp_model *m, int i, const sp_mask *keep) {
    if (!m || !keep || i < 0 || i >= m->nlayers)
        return sp_fail(SP_EINVAL, "model_layer_set_pattern: index %d not in [0, %d)", i,
                       m ? m->nlayers : 0);
    sp_layer *l = m->flat[i];
    if (!l->vt->set_pattern)
        return sp_fail(SP_EINVAL, "layer %s has no weight pattern to set", l->name);
    return l->vt->set_pattern(l, keep);
}

const sp_csr *sp_model_layer_csr(const sp_model *m, int i) {
    if (!m || i < 0 || i >= m->nlayers) return NULL;
    return sp_linear_csr(m->flat[i]);
}

sp_status sp_model_layer_rewire(sp_model *m, int i, const int64_t *drop, const int64_t *grow,
                                int64_t n, int64_t *src) {
    if (!m || i < 0 || i >= m->nlayers)
        return sp_fail(SP_EINVAL, "model_layer_rewire: index %d not in [0, %d)", i,
                       m ? m->nlayers : 0);
    if (n < 0 || (n > 0 && (!drop || !grow)) || !src)
        return sp_fail(SP_EINVAL, "model_layer_rewire: bad count %lld or NULL array",
                       (long long)n);
    sp_layer *l = m->flat[i];
    if (!l->vt->rewire)
        return sp_fail(SP_EINVAL, "layer %s is not a CSR linear layer: its topology cannot be "
                       "rewired", l->name);
    return l->vt->rewire(l, drop, grow, n, src);
}

int64_t sp_model_nnz(const sp_model *m) {
    int64_t nnz = 0;
    for (int64_t k = 0; k < m->nparams; k++) nnz += m->params[k] != 0.0f;
    for (int i = 0; i < m->nlayers; i++) /* weights kept outside the arena (qlinear) */
        if (m->flat[i]->vt->nnz) nnz += m->flat[i]->vt->nnz(m->flat[i]);
    return nnz;
}

/* ---- helpers for layers --------------------------------------------------------------------- */

void *sp_layer_alloc(size_t size, const sp_layer_vt *vt, sp_shape in) {
    sp_layer *l = sp_calloc(1, size);
    if (!l) return NULL;
    l->vt = vt;
    l->in = in;
    l->out = in;
    return l;
}

void sp_layer_free(sp_layer *l) {
    if (!l) return;
    if (l->vt && l->vt->free) l->vt->free(l);
    sp_free(l);
}

sp_status sp_check_finite(const sp_layer *l, const char *what, const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return sp_fail(SP_EINVAL, "%s: %s[%lld] is %s", l->name, what, (long long)i,
                           isnan(v[i]) ? "NaN" : "Inf");
    return SP_OK;
}
