/*
 * spec.c - built-in model specs, expanded into config text (docs/CONFIG.md), so that a spec and
 * a config file go through the same parser and a saved model records plain config; and the
 * optional "input C H W" line of a config, read without building the model.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layer.h"

#include "../core/internal.h"

/* LeNet-5 as it is trained today (LeCun et al. 1998 with ReLU and max pooling): two 5x5
 * convolutions with 6 and 16 filters, then 120-84-classes. */
static const char lenet5[] =
    "conv2d out=6 k=5 pad=2\n"
    "relu\n"
    "maxpool k=2\n"
    "conv2d out=16 k=5\n"
    "relu\n"
    "maxpool k=2\n"
    "flatten\n"
    "linear out=120\n"
    "relu\n"
    "linear out=84\n"
    "relu\n"
    "linear out=classes\n";

/* A small MobileNet-style CNN (Howard et al. 2017): a plain 3x3 convolution, then
 * depthwise-separable blocks (3x3 depthwise + 1x1 pointwise, each with batch norm and ReLU). */
static const char mobilenet[] =
    "conv2d out=16 k=3 pad=1 bias=0\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=16 k=3 pad=1 groups=16 bias=0  # depthwise\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=32 k=1 bias=0                  # pointwise\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=32 k=3 stride=2 pad=1 groups=32 bias=0\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=64 k=1 bias=0\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=64 k=3 stride=2 pad=1 groups=64 bias=0\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=128 k=1 bias=0\n"
    "batchnorm\n"
    "relu\n"
    "globalavgpool\n"
    "flatten\n"
    "linear out=classes\n";

/* A small decoder-only transformer (pre-norm blocks, causal attention) reading an image as a
 * sequence of its rows: 28 tokens of 28 pixels for Fashion-MNIST. */
static const char transformer[] =
    "tokens                 # image rows become tokens\n"
    "linear out=64          # token embedding\n"
    "posembed\n"
    "residual {\n"
    "  layernorm\n"
    "  attention heads=4\n"
    "}\n"
    "residual {\n"
    "  layernorm\n"
    "  linear out=128\n"
    "  gelu\n"
    "  linear out=64\n"
    "}\n"
    "residual {\n"
    "  layernorm\n"
    "  attention heads=4\n"
    "}\n"
    "residual {\n"
    "  layernorm\n"
    "  linear out=128\n"
    "  gelu\n"
    "  linear out=64\n"
    "}\n"
    "layernorm\n"
    "globalavgpool\n"
    "flatten\n"
    "linear out=classes\n";

static sp_status dup(const char *s, char **out) {
    size_t n = strlen(s) + 1;
    *out = sp_alloc(n);
    if (!*out) return SP_ENOMEM;
    memcpy(*out, s, n);
    return SP_OK;
}

/* "mlp:300,100" -> flatten, (linear + relu) per hidden size, linear to the classes */
static sp_status mlp(const char *spec, const char *sizes, char **out) {
    size_t cap = 64 + 32 * (strlen(sizes) + 1);
    char *t = sp_alloc(cap);
    if (!t) return SP_ENOMEM;
    size_t len = (size_t)snprintf(t, cap, "flatten\n");
    const char *s = sizes;
    if (!*s) goto bad;
    while (*s) {
        char *end;
        errno = 0;
        long long h = strtoll(s, &end, 10);
        if (errno || end == s || h < 1 || h > (1 << 24) || (*end && *end != ',') ||
            (*end == ',' && !end[1])) {
        bad:
            sp_free(t);
            return sp_fail(SP_EINVAL, "model spec '%s': hidden sizes must be positive integers "
                           "separated by commas (mlp:300,100)", spec);
        }
        len += (size_t)snprintf(t + len, cap - len, "linear out=%lld\nrelu\n", h);
        s = *end ? end + 1 : end;
    }
    snprintf(t + len, cap - len, "linear out=classes\n");
    *out = t;
    return SP_OK;
}

/* ---- key=value specs (charlm, moe-mlp) ------------------------------------------------------- */

#define SPEC_MAX_KEYS 8

/* The comma-separated items of a spec after its "name:", each "key=value" (or, for the first
 * item of moe-mlp, a bare value stored under key ""). */
typedef struct spec_items {
    int n;
    char key[SPEC_MAX_KEYS][16];
    char val[SPEC_MAX_KEYS][32];
} spec_items;

static sp_status split_items(const char *spec, const char *body, bool bare_first, const char *usage,
                             spec_items *it) {
    it->n = 0;
    const char *s = body;
    while (true) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        size_t klen = eq ? (size_t)(eq - s) : 0, vlen = eq ? len - klen - 1 : len;
        if (it->n == SPEC_MAX_KEYS || len == 0 || (!eq && !(bare_first && it->n == 0)) ||
            klen >= sizeof it->key[0] || vlen >= sizeof it->val[0] || vlen == 0)
            return sp_fail(SP_EINVAL, "model spec '%s': cannot read item '%.*s' (write %s)", spec,
                           (int)SP_MIN(len, 40), s, usage);
        memcpy(it->key[it->n], s, klen);
        it->key[it->n][klen] = '\0';
        memcpy(it->val[it->n], eq ? eq + 1 : s, vlen);
        it->val[it->n][vlen] = '\0';
        for (int k = 0; k < it->n; k++)
            if (!strcmp(it->key[k], it->key[it->n]))
                return sp_fail(SP_EINVAL, "model spec '%s': %s is given twice", spec,
                               it->key[it->n]);
        it->n++;
        if (!end) break;
        s = end + 1;
    }
    return SP_OK;
}

/* The value of key, or NULL. */
static const char *item(const spec_items *it, const char *key) {
    for (int k = 0; k < it->n; k++)
        if (!strcmp(it->key[k], key)) return it->val[k];
    return NULL;
}

/* Integer item key in [lo, hi]: *out = def if absent (def < 0 and absent: required). */
static sp_status item_int(const char *spec, const spec_items *it, const char *key, int64_t def,
                          int64_t lo, int64_t hi, const char *usage, int64_t *out) {
    const char *v = item(it, key);
    if (!v) {
        if (def < 0)
            return sp_fail(SP_EINVAL, "model spec '%s': %s is required (%s)", spec,
                           key[0] ? key : "the first value", usage);
        *out = def;
        return SP_OK;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return sp_fail(SP_EINVAL, "model spec '%s': %s%s%s is not an integer in [%lld, %lld]",
                       spec, key, key[0] ? "=" : "", v, (long long)lo, (long long)hi);
    *out = x;
    return SP_OK;
}

/* Every key must be one of known[] (NULL-terminated). */
static sp_status check_keys(const char *spec, const spec_items *it, const char *const *known,
                            const char *usage) {
    for (int k = 0; k < it->n; k++) {
        bool ok = false;
        for (int j = 0; known[j]; j++) ok = ok || !strcmp(it->key[k], known[j]);
        if (!ok)
            return sp_fail(SP_EINVAL, "model spec '%s': unknown option '%s' (%s)", spec,
                           it->key[k], usage);
    }
    return SP_OK;
}

/* experts=E [top_k=K] [routing=token|expert]: E >= 1 (0 = none given), 1 <= K <= E. */
static sp_status moe_items(const char *spec, const spec_items *it, const char *usage,
                           bool experts_required, int64_t *experts, int64_t *top_k,
                           const char **routing) {
    sp_status st = item_int(spec, it, "experts", experts_required ? -1 : 0, 1, 4096, usage,
                            experts);
    if (st != SP_OK) return st;
    if (!*experts && (item(it, "top_k") || item(it, "routing")))
        return sp_fail(SP_EINVAL, "model spec '%s': top_k and routing need experts=E (%s)", spec,
                       usage);
    if ((st = item_int(spec, it, "top_k", 1, 1, 4096, usage, top_k)) != SP_OK) return st;
    if (*experts && *top_k > *experts)
        return sp_fail(SP_EINVAL, "model spec '%s': top_k=%lld is larger than experts=%lld",
                       spec, (long long)*top_k, (long long)*experts);
    *routing = item(it, "routing");
    if (*routing && strcmp(*routing, "token") && strcmp(*routing, "expert"))
        return sp_fail(SP_EINVAL, "model spec '%s': routing=%s is not token or expert", spec,
                       *routing);
    return SP_OK;
}

/* Appends printf output to the growing text *t (length *len, capacity *cap). */
static sp_status put(char **t, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static sp_status put(char **t, size_t *len, size_t *cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (*len + (size_t)k + 1 > *cap) {
        size_t ncap = SP_MAX(*cap * 2, *len + (size_t)k + 1);
        char *u = sp_alloc(ncap);
        if (!u) return SP_ENOMEM;
        if (*t) memcpy(u, *t, *len + 1);
        sp_free(*t);
        *t = u;
        *cap = ncap;
    }
    va_start(ap, fmt);
    vsnprintf(*t + *len, *cap - *len, fmt, ap);
    va_end(ap);
    *len += (size_t)k;
    return SP_OK;
}

/* charlm:layers=L,dim=D,heads=H,ctx=T[,hidden=F][,experts=E,top_k=K,routing=token|expert]:
 * a decoder-only pre-norm transformer over token ids (a character-level language model). With
 * experts, each feed-forward block becomes a mixture of E experts of width F, top_k of them
 * active per token; F defaults to 4*D/K so that the active parameters per token equal the
 * dense model's 4*D (floored when K does not divide 4*D). */
static sp_status charlm(const char *spec, char **out) {
    static const char usage[] = "charlm:layers=L,dim=D,heads=H,ctx=T[,hidden=F]"
                                "[,experts=E,top_k=K,routing=token|expert]";
    static const char *const known[] = {"layers", "dim", "heads", "ctx", "hidden",
                                        "experts", "top_k", "routing", NULL};
    spec_items it;
    int64_t L, D, H, T, F, E, K;
    const char *routing;
    sp_status st = split_items(spec, spec + 7, false, usage, &it);
    if (st == SP_OK) st = check_keys(spec, &it, known, usage);
    if (st == SP_OK) st = item_int(spec, &it, "layers", -1, 1, 256, usage, &L);
    if (st == SP_OK) st = item_int(spec, &it, "dim", -1, 1, 1 << 16, usage, &D);
    if (st == SP_OK) st = item_int(spec, &it, "heads", -1, 1, 1 << 16, usage, &H);
    if (st == SP_OK) st = item_int(spec, &it, "ctx", -1, 1, 1 << 16, usage, &T);
    if (st == SP_OK) st = moe_items(spec, &it, usage, false, &E, &K, &routing);
    if (st != SP_OK) return st;
    if (D % H)
        return sp_fail(SP_EINVAL, "model spec '%s': heads=%lld does not divide dim=%lld", spec,
                       (long long)H, (long long)D);
    st = item_int(spec, &it, "hidden", E ? SP_MAX(4 * D / K, 1) : 4 * D, 1, 1 << 24, usage, &F);
    if (st != SP_OK) return st;
    char *t = NULL;
    size_t len = 0, cap = 0;
    st = put(&t, &len, &cap, "input 1 1 %lld\nembedding vocab=classes dim=%lld\nposembed\n",
             (long long)T, (long long)D);
    for (int64_t l = 0; l < L && st == SP_OK; l++) {
        st = put(&t, &len, &cap, "residual {\n  layernorm\n  attention heads=%lld\n}\n"
                 "residual {\n  layernorm\n", (long long)H);
        if (st == SP_OK && E)
            st = put(&t, &len, &cap, "  moe experts=%lld top_k=%lld routing=%s {\n"
                     "    linear out=%lld\n    gelu\n    linear out=%lld\n  }\n", (long long)E,
                     (long long)K, routing ? routing : "token", (long long)F, (long long)D);
        else if (st == SP_OK)
            st = put(&t, &len, &cap, "  linear out=%lld\n  gelu\n  linear out=%lld\n",
                     (long long)F, (long long)D);
        if (st == SP_OK) st = put(&t, &len, &cap, "}\n");
    }
    if (st == SP_OK) st = put(&t, &len, &cap, "layernorm\nlinear out=classes\n");
    if (st != SP_OK) {
        sp_free(t);
        return st;
    }
    *out = t;
    return SP_OK;
}

/* moe-mlp:H,experts=E[,top_k=K][,routing=token|expert]: an MLP whose hidden block is a residual
 * mixture of E experts (each Linear(H, H), ReLU, Linear(H, H)), top_k (default 1) per sample. */
static sp_status moe_mlp(const char *spec, char **out) {
    static const char usage[] = "moe-mlp:H,experts=E,top_k=K[,routing=token|expert]";
    static const char *const known[] = {"", "experts", "top_k", "routing", NULL};
    spec_items it;
    int64_t Hd, E, K;
    const char *routing;
    sp_status st = split_items(spec, spec + 8, true, usage, &it);
    if (st == SP_OK) st = check_keys(spec, &it, known, usage);
    if (st == SP_OK) st = item_int(spec, &it, "", -1, 1, 1 << 24, usage, &Hd);
    if (st == SP_OK) st = moe_items(spec, &it, usage, true, &E, &K, &routing);
    if (st != SP_OK) return st;
    char *t = NULL;
    size_t len = 0, cap = 0;
    st = put(&t, &len, &cap, "flatten\nlinear out=%lld\nrelu\nresidual {\n"
             "  moe experts=%lld top_k=%lld%s%s {\n    linear out=%lld\n    relu\n"
             "    linear out=%lld\n  }\n}\nlinear out=classes\n", (long long)Hd, (long long)E,
             (long long)K, routing ? " routing=" : "", routing ? routing : "", (long long)Hd,
             (long long)Hd);
    if (st != SP_OK) {
        sp_free(t);
        return st;
    }
    *out = t;
    return SP_OK;
}

sp_status sp_model_spec_config(const char *spec, char **text) {
    if (!spec || !text) return sp_fail(SP_EINVAL, "model spec: NULL argument");
    *text = NULL;
    if (strcmp(spec, "lenet300") == 0) return mlp(spec, "300,100", text);
    if (strncmp(spec, "mlp:", 4) == 0 || strcmp(spec, "mlp") == 0)
        return mlp(spec, spec[3] ? spec + 4 : "", text);
    if (strcmp(spec, "lenet5") == 0) return dup(lenet5, text);
    if (strcmp(spec, "mobilenet") == 0) return dup(mobilenet, text);
    if (strcmp(spec, "transformer") == 0) return dup(transformer, text);
    if (strncmp(spec, "charlm:", 7) == 0) return charlm(spec, text);
    if (strncmp(spec, "moe-mlp:", 8) == 0) return moe_mlp(spec, text);
    return sp_fail(SP_EINVAL, "unknown model spec '%s' (known: mlp:H1,H2,..., lenet300, lenet5, "
                   "mobilenet, transformer, charlm:layers=L,dim=D,heads=H,ctx=T, "
                   "moe-mlp:H,experts=E,top_k=K; or a config file)", spec);
}

sp_status sp_model_config_input(const char *text, sp_shape *in, bool *found) {
    if (!text || !in || !found) return sp_fail(SP_EINVAL, "model_config_input: NULL argument");
    *found = false;
    int line = 0;
    for (const char *s = text; *s;) {
        const char *end = strchr(s, '\n');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        line++;
        char copy[256];
        size_t n = SP_MIN(len, sizeof copy - 1);
        memcpy(copy, s, n);
        copy[n] = '\0';
        char *hash = strchr(copy, '#');
        if (hash) *hash = '\0';
        char *tok[5], *save = NULL;
        int nt = 0;
        for (char *t = strtok_r(copy, " \t\r\v\f", &save); t && nt < 5;
             t = strtok_r(NULL, " \t\r\v\f", &save))
            tok[nt++] = t;
        s = end ? end + 1 : s + len;
        if (nt == 0) continue;
        if (strcmp(tok[0], "input") != 0) return SP_OK;
        int64_t d[3] = {1, 1, 1};
        if (nt < 2 || nt > 4)
            return sp_fail(SP_EINVAL, "config line %d: write 'input C [H W]'", line);
        for (int i = 1; i < nt; i++) {
            char *e;
            errno = 0;
            long long v = strtoll(tok[i], &e, 10);
            if (errno || *e || v < 1 || v > (1 << 24))
                return sp_fail(SP_EINVAL, "config line %d: input size '%s' is not in [1, 2^24]",
                               line, tok[i]);
            d[i - 1] = v;
        }
        *in = (sp_shape){d[0], d[1], d[2]};
        *found = true;
        return SP_OK;
    }
    return SP_OK;
}
