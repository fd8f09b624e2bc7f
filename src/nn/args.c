/*
 * args.c - typed getters for the key=value options of one config line. Every getter names the
 * line and option in its error, and sp_args_finish rejects options that nobody asked for, so a
 * typo ("strid=2") is an error instead of a silent default.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layer.h"

#include "../core/internal.h"

static const char *find(sp_args *a, const char *key) {
    for (int i = 0; i < a->n; i++) {
        if (strcmp(a->key[i], key) == 0) {
            a->used[i] = true;
            return a->val[i];
        }
    }
    return NULL;
}

static bool parse_i64(const char *s, int64_t *v) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end) return false;
    *v = x;
    return true;
}

sp_status sp_args_int(sp_args *a, const char *key, int64_t def, int64_t lo, int64_t hi,
                      int64_t *out) {
    const char *s = find(a, key);
    if (!s) {
        *out = def;
        return SP_OK;
    }
    int64_t v;
    if (!parse_i64(s, &v) || v < lo || v > hi)
        return sp_fail(SP_EINVAL, "config line %d (%s): %s=%s is not an integer in [%lld, %lld]",
                       a->line, a->kind, key, s, (long long)lo, (long long)hi);
    *out = v;
    return SP_OK;
}

sp_status sp_args_num(sp_args *a, const char *key, double def, double lo, double hi,
                      double *out) {
    const char *s = find(a, key);
    if (!s) {
        *out = def;
        return SP_OK;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return sp_fail(SP_EINVAL, "config line %d (%s): %s=%s is not a number in [%g, %g]",
                       a->line, a->kind, key, s, lo, hi);
    *out = v;
    return SP_OK;
}

sp_status sp_args_str(sp_args *a, const char *key, const char *def, const char **out) {
    const char *s = find(a, key);
    *out = s ? s : def;
    return SP_OK;
}

sp_status sp_args_pair(sp_args *a, const char *key, int64_t def, int64_t lo, int64_t hi,
                       int64_t *first, int64_t *second) {
    const char *s = find(a, key);
    if (!s) {
        *first = *second = def;
        return SP_OK;
    }
    char buf[64];
    size_t len = strlen(s);
    if (len >= sizeof buf) goto bad;
    memcpy(buf, s, len + 1);
    char *x = strchr(buf, 'x');
    int64_t p, q;
    if (x) {
        *x = '\0';
        if (!parse_i64(buf, &p) || !parse_i64(x + 1, &q)) goto bad;
    } else {
        if (!parse_i64(buf, &p)) goto bad;
        q = p;
    }
    if (p < lo || p > hi || q < lo || q > hi) goto bad;
    *first = p;
    *second = q;
    return SP_OK;
bad:
    return sp_fail(SP_EINVAL, "config line %d (%s): %s=%s is not N or AxB with values in [%lld, %lld]",
                   a->line, a->kind, key, s, (long long)lo, (long long)hi);
}

sp_status sp_args_finish(const sp_args *a) {
    for (int i = 0; i < a->n; i++)
        if (!a->used[i])
            return sp_fail(SP_EINVAL, "config line %d (%s): unknown option '%s'", a->line,
                           a->kind, a->key[i]);
    return SP_OK;
}
