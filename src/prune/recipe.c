/*
 * recipe.c - the recipe file parser (sparrow/prune.h, docs/RECIPES.md). A recipe is untrusted
 * text: every byte, line length, name and count is checked before it is kept, and every error
 * names the line. The text is copied once; keys, values and layer names point into the copy,
 * NUL-terminated in place.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/prune.h"

#include "../core/internal.h"

#define RECIPE_MAX_BYTES ((size_t)1 << 20)
#define RECIPE_MAX_LINE 4096
#define RECIPE_MAX_SETTINGS 64
#define RECIPE_MAX_LAYERS 256
#define RECIPE_MAX_KEY 64
#define RECIPE_MAX_NAME 15

struct sp_recipe {
    char *buf; /* the text, tokens NUL-terminated in place */
    int n;
    const char *key[RECIPE_MAX_SETTINGS];
    const char *val[RECIPE_MAX_SETTINGS];
    int line[RECIPE_MAX_SETTINGS];
    int nlayers;
    const char *lname[RECIPE_MAX_LAYERS];
    const char *ltext[RECIPE_MAX_LAYERS]; /* the sparsity as written */
    double lsp[RECIPE_MAX_LAYERS];
    int lline[RECIPE_MAX_LAYERS];
    char *layers; /* "NAME=S,..." or NULL */
};

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/* Checks the bytes of one line (len bytes, no '\n'): SP_EFORMAT for a NUL or control byte
 * anywhere, a byte >= 0x80 before any '#'. */
static sp_status check_bytes(const char *s, size_t len, int line) {
    bool comment = false;
    for (size_t i = 0; i < len; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c == '#') comment = true;
        if (c == 0)
            return sp_fail(SP_EFORMAT, "recipe line %d: NUL byte at column %zu: not a text file",
                           line, i + 1);
        if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
            return sp_fail(SP_EFORMAT, "recipe line %d: control byte 0x%02x at column %zu", line,
                           c, i + 1);
        if (c >= 0x80 && !comment)
            return sp_fail(SP_EFORMAT, "recipe line %d: non-ASCII byte 0x%02x at column %zu "
                           "(only comments may hold other characters)", line, c, i + 1);
    }
    return SP_OK;
}

static sp_status check_key(const char *k, int line) {
    const size_t len = strlen(k);
    if (k[0] == '-')
        return sp_fail(SP_EFORMAT, "recipe line %d: write settings without the dashes "
                       "('%.40s', not '%.40s')", line, k + strspn(k, "-"), k);
    if (len > RECIPE_MAX_KEY)
        return sp_fail(SP_EFORMAT, "recipe line %d: setting name of %zu characters (at most %d)",
                       line, len, RECIPE_MAX_KEY);
    for (size_t i = 0; i < len; i++) {
        const char c = k[i];
        const bool ok = (c >= 'a' && c <= 'z') || (i > 0 && ((c >= '0' && c <= '9') || c == '-'));
        if (!ok)
            return sp_fail(SP_EFORMAT, "recipe line %d: '%.40s' is not a setting name (a "
                           "lowercase letter, then lowercase letters, digits and '-'; write "
                           "'name value')", line, k);
    }
    return SP_OK;
}

static sp_status add_layer(sp_recipe *r, char **tok, int nt, int line) {
    if (nt != 3)
        return sp_fail(SP_EFORMAT, "recipe line %d: prune-layer takes a layer name and a "
                       "sparsity, found %d word%s after it", line, nt - 1, nt == 2 ? "" : "s");
    const char *name = tok[1], *sp = tok[2];
    const size_t len = strlen(name);
    if (len > RECIPE_MAX_NAME || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW"
                                              "XYZ0123456789._-") != len)
        return sp_fail(SP_EINVAL, "recipe line %d: layer name '%.40s' is not 1 to %d of "
                       "[A-Za-z0-9._-] (names as sparrow inspect prints them: 1.linear)", line,
                       name, RECIPE_MAX_NAME);
    char *end;
    const double v = strtod(sp, &end);
    if (end == sp || *end || !isfinite(v) || v < 0.0 || v >= 1.0)
        return sp_fail(SP_EINVAL, "recipe line %d: sparsity '%.40s' of layer %s is not a number "
                       "in [0, 1)", line, sp, name);
    for (int i = 0; i < r->nlayers; i++)
        if (!strcmp(r->lname[i], name))
            return sp_fail(SP_EINVAL, "recipe line %d: layer %s was given already on line %d",
                           line, name, r->lline[i]);
    if (r->nlayers == RECIPE_MAX_LAYERS)
        return sp_fail(SP_EFORMAT, "recipe line %d: more than %d prune-layer lines", line,
                       RECIPE_MAX_LAYERS);
    r->lname[r->nlayers] = name;
    r->ltext[r->nlayers] = sp;
    r->lsp[r->nlayers] = v;
    r->lline[r->nlayers] = line;
    r->nlayers++;
    return SP_OK;
}

static sp_status add_setting(sp_recipe *r, char **tok, int nt, int line) {
    if (nt > 2)
        return sp_fail(SP_EFORMAT, "recipe line %d: '%s' takes at most one value, found %d",
                       line, tok[0], nt - 1);
    if (!strcmp(tok[0], "recipe") || !strcmp(tok[0], "resume"))
        return sp_fail(SP_EINVAL, "recipe line %d: '%s' cannot be set in a recipe", line, tok[0]);
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->key[i], tok[0]))
            return sp_fail(SP_EINVAL, "recipe line %d: '%s' was set already on line %d", line,
                           tok[0], r->line[i]);
    if (r->n == RECIPE_MAX_SETTINGS)
        return sp_fail(SP_EFORMAT, "recipe line %d: more than %d settings", line,
                       RECIPE_MAX_SETTINGS);
    r->key[r->n] = tok[0];
    r->val[r->n] = nt == 2 ? tok[1] : NULL;
    r->line[r->n] = line;
    r->n++;
    return SP_OK;
}

static sp_status parse(sp_recipe *r, size_t len) {
    char *s = r->buf, *const stop = r->buf + len;
    for (int line = 1; s < stop; line++) {
        char *nl = memchr(s, '\n', (size_t)(stop - s));
        char *eol = nl ? nl : stop;
        const size_t n = (size_t)(eol - s);
        sp_status st = check_bytes(s, n, line);
        if (st != SP_OK) return st;
        if (n > RECIPE_MAX_LINE)
            return sp_fail(SP_EFORMAT, "recipe line %d: %zu bytes long (at most %d)", line, n,
                           RECIPE_MAX_LINE);
        *eol = '\0';
        char *hash = strchr(s, '#');
        if (hash) *hash = '\0';
        /* words: the first three kept, all counted */
        char *tok[3];
        int nt = 0;
        for (char *p = s; *p;) {
            while (is_blank(*p)) p++;
            if (!*p) break;
            if (nt < 3) tok[nt] = p;
            nt++;
            while (*p && !is_blank(*p)) p++;
            if (*p) *p++ = '\0';
        }
        s = eol + 1;
        if (nt == 0) continue;
        st = check_key(tok[0], line);
        if (st != SP_OK) return st;
        st = !strcmp(tok[0], "prune-layer") ? add_layer(r, tok, nt, line)
                                            : add_setting(r, tok, nt, line);
        if (st != SP_OK) return st;
    }
    if (r->n == 0 && r->nlayers == 0)
        return sp_fail(SP_EINVAL, "recipe: no settings (only comments and blank lines)");
    return SP_OK;
}

sp_status sp_recipe_parse(const char *text, size_t len, sp_recipe **out) {
    if (!out) return sp_fail(SP_EINVAL, "recipe_parse: NULL argument");
    *out = NULL;
    if (!text && len) return sp_fail(SP_EINVAL, "recipe_parse: NULL text");
    if (len > RECIPE_MAX_BYTES)
        return sp_fail(SP_EFORMAT, "recipe: %zu bytes, more than the %zu a recipe may have", len,
                       RECIPE_MAX_BYTES);
    sp_recipe *r = sp_calloc(1, sizeof *r);
    if (!r) return SP_ENOMEM;
    r->buf = sp_alloc(len + 1);
    if (!r->buf) {
        sp_recipe_free(r);
        return SP_ENOMEM;
    }
    if (len) memcpy(r->buf, text, len);
    r->buf[len] = '\0';
    sp_status st = parse(r, len);
    if (st == SP_OK && r->nlayers) {
        size_t need = 1;
        for (int i = 0; i < r->nlayers; i++) need += strlen(r->lname[i]) + strlen(r->ltext[i]) + 2;
        r->layers = sp_alloc(need);
        if (!r->layers) {
            st = SP_ENOMEM;
        } else {
            size_t at = 0;
            for (int i = 0; i < r->nlayers; i++) {
                const size_t a = strlen(r->lname[i]), b = strlen(r->ltext[i]);
                if (i) r->layers[at++] = ',';
                memcpy(r->layers + at, r->lname[i], a);
                at += a;
                r->layers[at++] = '=';
                memcpy(r->layers + at, r->ltext[i], b);
                at += b;
            }
            r->layers[at] = '\0';
        }
    }
    if (st != SP_OK) {
        sp_recipe_free(r);
        return st;
    }
    *out = r;
    return SP_OK;
}

int sp_recipe_count(const sp_recipe *r) { return r ? r->n : 0; }

sp_status sp_recipe_setting(const sp_recipe *r, int i, const char **key, const char **value,
                            int *line) {
    if (!r || i < 0 || i >= r->n)
        return sp_fail(SP_EINVAL, "recipe_setting: index %d outside [0, %d)", i, r ? r->n : 0);
    if (key) *key = r->key[i];
    if (value) *value = r->val[i];
    if (line) *line = r->line[i];
    return SP_OK;
}

int sp_recipe_nlayers(const sp_recipe *r) { return r ? r->nlayers : 0; }

sp_status sp_recipe_layer(const sp_recipe *r, int i, const char **name, double *sparsity,
                          int *line) {
    if (!r || i < 0 || i >= r->nlayers)
        return sp_fail(SP_EINVAL, "recipe_layer: index %d outside [0, %d)", i,
                       r ? r->nlayers : 0);
    if (name) *name = r->lname[i];
    if (sparsity) *sparsity = r->lsp[i];
    if (line) *line = r->lline[i];
    return SP_OK;
}

const char *sp_recipe_layers(const sp_recipe *r) { return r ? r->layers : NULL; }

void sp_recipe_free(sp_recipe *r) {
    if (!r) return;
    sp_free(r->buf);
    sp_free(r->layers);
    sp_free(r);
}
