/*
 * safetensors.c - the safetensors file format: a strict parser for untrusted files and an
 * atomic writer (docs/INTEROP.md).
 *
 * Layout: u64 little-endian header size N, N bytes of UTF-8 JSON (possibly padded with
 * spaces), then the data buffer. The JSON maps tensor names to
 * {"dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end]} (offsets relative to the
 * data buffer), plus an optional "__metadata__" string -> string object.
 *
 * Threat model: the bytes are hostile. N is checked against the buffer and the cap before
 * anything is allocated; the JSON parser allocates a string pool of N + 1 bytes and a node
 * array that grows with the nodes actually read, up to a budget of N / 8 + 64 nodes (a real
 * header spends tens of bytes per value: names, dtype, shape and offsets of each tensor), and
 * arrays hold at most JSON_MAX_ARRAY values (a shape of rank <= 8, two offsets): a hostile
 * header of "[0,0,0,..." fails at the budget instead of costing 96 bytes of node per 2 bytes
 * of text. Memory is then at most about 13 bytes of nodes per header byte (18 while the
 * array grows), plus the pool. Nesting is limited (JSON_MAX_DEPTH) so that
 * recursion is bounded; only the JSON the format needs is accepted (objects, arrays, strings,
 * non-negative integers), everything else is SP_EFORMAT naming the byte offset in the header.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sparrow/io.h"

#include "../core/internal.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors.c reads and writes tensor data in host order: little-endian only");

#define JSON_MAX_DEPTH 8
#define JSON_MAX_ARRAY 16 /* values in one array: shape (rank <= 8) and data_offsets (2) */
#define META_KEY "__metadata__"

static const struct {
    const char *name;
    size_t size;
} dtypes[SP_ST_NDTYPES] = {
    [SP_ST_BOOL] = {"BOOL", 1},       [SP_ST_U8] = {"U8", 1},     [SP_ST_I8] = {"I8", 1},
    [SP_ST_F8_E5M2] = {"F8_E5M2", 1}, [SP_ST_F8_E4M3] = {"F8_E4M3", 1},
    [SP_ST_I16] = {"I16", 2},         [SP_ST_U16] = {"U16", 2},   [SP_ST_F16] = {"F16", 2},
    [SP_ST_BF16] = {"BF16", 2},       [SP_ST_I32] = {"I32", 4},   [SP_ST_U32] = {"U32", 4},
    [SP_ST_F32] = {"F32", 4},         [SP_ST_F64] = {"F64", 8},   [SP_ST_I64] = {"I64", 8},
    [SP_ST_U64] = {"U64", 8},
};

const char *sp_st_dtype_name(sp_st_dtype dt) {
    return (unsigned)dt < SP_ST_NDTYPES ? dtypes[dt].name : "?";
}
size_t sp_st_dtype_size(sp_st_dtype dt) {
    return (unsigned)dt < SP_ST_NDTYPES ? dtypes[dt].size : 0;
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at p (n bytes available), or 0 if it is not one:
 * no overlong forms, no surrogates, nothing above U+10FFFF (RFC 3629). */
static size_t utf8_seq(const uint8_t *p, size_t n) {
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

static bool utf8_valid(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const uint8_t *)s + i, n - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

/* ---- a strict JSON parser for the header ----------------------------------------------------- */

typedef enum jkind { J_OBJ, J_ARR, J_STR, J_INT } jkind;

typedef struct jnode {
    jkind kind;
    size_t pos;            /* byte offset in the header */
    int64_t first;         /* J_OBJ / J_ARR: first child, or -1 */
    int64_t count;         /* children */
    int64_t next;          /* next sibling, or -1 */
    const char *key;       /* for an object member: its key (in the pool) */
    size_t key_pos;
    size_t key_len;        /* decoded bytes (strlen differs if it holds \u0000) */
    const char *str;       /* J_STR (in the pool) */
    size_t str_len;        /* bytes, without the NUL */
    uint64_t num;          /* J_INT */
} jnode;

typedef struct jparser {
    const uint8_t *s;
    size_t n, i;
    char *pool;            /* decoded strings, NUL-terminated; N + 1 bytes always suffice */
    size_t pool_len;
    jnode *nodes;
    int64_t nnodes, cap;
} jparser;

static void skip_ws(jparser *p) {
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
                           p->s[p->i] == '\r'))
        p->i++;
}

static sp_status new_node(jparser *p, jkind kind, int64_t *out) {
    if (p->nnodes >= (int64_t)(p->n / 8) + 64)
        return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: more than %lld JSON values in "
                       "a %zu-byte header (a safetensors header needs far fewer)", p->i,
                       (long long)(p->n / 8) + 64, p->n);
    if (p->nnodes == p->cap) {
        int64_t cap = p->cap ? 2 * p->cap : 64;
        jnode *nn = sp_alloc(sizeof *nn * (size_t)cap);
        if (!nn) return SP_ENOMEM;
        if (p->nnodes) memcpy(nn, p->nodes, sizeof *nn * (size_t)p->nnodes);
        sp_free(p->nodes);
        p->nodes = nn;
        p->cap = cap;
    }
    jnode *j = &p->nodes[p->nnodes];
    memset(j, 0, sizeof *j);
    j->kind = kind;
    j->pos = p->i;
    j->first = j->next = -1;
    *out = p->nnodes++;
    return SP_OK;
}

static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p->i; -1 if not. */
static int32_t hex4(const jparser *p, size_t at) {
    if (p->n - at < 4) return -1;
    int32_t v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[at + k]);
        if (h < 0) return -1;
        v = v << 4 | h;
    }
    return v;
}

static void put_utf8(jparser *p, uint32_t cp) {
    char *d = p->pool + p->pool_len;
    if (cp < 0x80) d[0] = (char)cp, p->pool_len += 1;
    else if (cp < 0x800) {
        d[0] = (char)(0xC0 | cp >> 6), d[1] = (char)(0x80 | (cp & 0x3F));
        p->pool_len += 2;
    } else if (cp < 0x10000) {
        d[0] = (char)(0xE0 | cp >> 12), d[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        d[2] = (char)(0x80 | (cp & 0x3F));
        p->pool_len += 3;
    } else {
        d[0] = (char)(0xF0 | cp >> 18), d[1] = (char)(0x80 | (cp >> 12 & 0x3F));
        d[2] = (char)(0x80 | (cp >> 6 & 0x3F)), d[3] = (char)(0x80 | (cp & 0x3F));
        p->pool_len += 4;
    }
}

/* A string at p->i (the opening quote), decoded into the pool. Every escape form of RFC 8259,
 * \uXXXX with surrogate pairs; raw bytes must be valid UTF-8 and not control characters. A
 * decoded string is never longer than its encoding minus the quotes, so the pool (header size
 * + 1) cannot overflow. */
static sp_status parse_string(jparser *p, const char **out, size_t *len) {
    const size_t start = p->i++;
    char *str = p->pool + p->pool_len;
    for (;;) {
        if (p->i >= p->n)
            return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: string not closed", start);
        uint8_t c = p->s[p->i];
        if (c == '"') {
            p->i++;
            break;
        }
        if (c < 0x20)
            return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: control character 0x%02x "
                           "in a string", p->i, c);
        if (c == '\\') {
            if (p->n - p->i < 2)
                return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: string not closed",
                               start);
            uint8_t e = p->s[p->i + 1];
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e && simple) {
                static const char map[] = "\"\\/\b\f\n\r\t";
                p->pool[p->pool_len++] = map[simple - "\"\\/bfnrt"];
                p->i += 2;
                continue;
            }
            if (e != 'u')
                return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: bad escape '\\%c'",
                               p->i, e >= 0x20 && e < 0x7f ? e : '?');
            int32_t u = hex4(p, p->i + 2);
            if (u < 0)
                return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: \\u needs four hex "
                               "digits", p->i);
            uint32_t cp = (uint32_t)u;
            size_t at = p->i;
            p->i += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: lone low surrogate "
                               "\\u%04X", at, cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                int32_t lo = p->n - p->i >= 6 && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u'
                                 ? hex4(p, p->i + 2) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: high surrogate "
                                   "\\u%04X is not followed by a low one", at, cp);
                cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
                p->i += 6;
            }
            put_utf8(p, cp);
            continue;
        }
        size_t k = utf8_seq(p->s + p->i, p->n - p->i);
        if (!k)
            return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: invalid UTF-8 (byte 0x%02x)",
                           p->i, c);
        memcpy(p->pool + p->pool_len, p->s + p->i, k);
        p->pool_len += k;
        p->i += k;
    }
    *len = (size_t)(p->pool + p->pool_len - str);
    p->pool[p->pool_len++] = '\0';
    *out = str;
    return SP_OK;
}

static sp_status parse_number(jparser *p, uint64_t *out) {
    const size_t start = p->i;
    if (p->s[p->i] == '-')
        return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: negative number (sizes and "
                       "offsets are non-negative integers)", start);
    if (p->s[p->i] == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')
        return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: number with a leading zero",
                       start);
    uint64_t v = 0;
    bool over = false;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        unsigned d = p->s[p->i] - '0';
        if (v > (UINT64_MAX - d) / 10) over = true;
        else v = v * 10 + d;
        p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: fractional or exponent number "
                       "(sizes and offsets are integers)", start);
    if (over)
        return sp_fail(SP_EOVERFLOW, "safetensors: header byte %zu: number does not fit in 64 "
                       "bits", start);
    *out = v;
    return SP_OK;
}

static sp_status parse_value(jparser *p, int depth, int64_t *out);

/* An object or array at p->i; members are linked in order. */
static sp_status parse_container(jparser *p, int depth, int64_t *out) {
    const bool obj = p->s[p->i] == '{';
    const uint8_t close = obj ? '}' : ']';
    if (depth >= JSON_MAX_DEPTH)
        return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: nesting deeper than %d", p->i,
                       JSON_MAX_DEPTH);
    int64_t self;
    sp_status st = new_node(p, obj ? J_OBJ : J_ARR, &self);
    if (st != SP_OK) return st;
    p->i++;
    skip_ws(p);
    int64_t last = -1;
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        *out = self;
        return SP_OK;
    }
    for (;;) {
        const char *key = NULL;
        size_t key_pos = 0, key_len = 0;
        if (obj) {
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != '"')
                return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: expected a quoted key",
                               p->i);
            key_pos = p->i;
            if ((st = parse_string(p, &key, &key_len)) != SP_OK) return st;
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':')
                return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: expected ':'", p->i);
            p->i++;
        }
        int64_t child;
        if ((st = parse_value(p, depth + 1, &child)) != SP_OK) return st;
        p->nodes[child].key = key;
        p->nodes[child].key_pos = key_pos;
        p->nodes[child].key_len = obj ? key_len : 0;
        if (last < 0) p->nodes[self].first = child;
        else p->nodes[last].next = child;
        last = child;
        p->nodes[self].count++;
        if (!obj && p->nodes[self].count > JSON_MAX_ARRAY)
            return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: an array of more than %d "
                           "values (shapes have rank <= %d, offsets two values)",
                           p->nodes[self].pos, JSON_MAX_ARRAY, SP_SAFETENSORS_MAX_RANK);
        skip_ws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            continue;
        }
        if (p->i < p->n && p->s[p->i] == close) {
            p->i++;
            break;
        }
        return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: expected ',' or '%c'", p->i,
                       close);
    }
    *out = self;
    return SP_OK;
}

static sp_status parse_value(jparser *p, int depth, int64_t *out) {
    skip_ws(p);
    if (p->i >= p->n)
        return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: the JSON ends early", p->i);
    uint8_t c = p->s[p->i];
    sp_status st;
    if (c == '{' || c == '[') return parse_container(p, depth, out);
    if (c == '"') {
        int64_t j;
        if ((st = new_node(p, J_STR, &j)) != SP_OK) return st;
        const char *s;
        size_t len;
        if ((st = parse_string(p, &s, &len)) != SP_OK) return st;
        p->nodes[j].str = s;
        p->nodes[j].str_len = len;
        *out = j;
        return SP_OK;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        int64_t j;
        if ((st = new_node(p, J_INT, &j)) != SP_OK) return st;
        uint64_t v = 0;
        if ((st = parse_number(p, &v)) != SP_OK) return st;
        p->nodes[j].num = v;
        *out = j;
        return SP_OK;
    }
    return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: unexpected '%c' (the header holds "
                   "only objects, arrays, strings and non-negative integers)", p->i,
                   c >= 0x20 && c < 0x7f ? c : '?');
}

/* ---- the parsed file ------------------------------------------------------------------------- */

struct sp_safetensors {
    uint8_t *owned;               /* the file's bytes when loaded from a path */
    char *pool;                   /* names, keys and values */
    int64_t n;
    sp_safetensors_tensor *t;     /* by name */
    int64_t nmeta;
    const char **mkey, **mval;    /* by key */
};

void sp_safetensors_free(sp_safetensors *st) {
    if (!st) return;
    sp_free(st->owned);
    sp_free(st->pool);
    sp_free(st->t);
    sp_free(st->mkey);
    sp_free(st->mval);
    sp_free(st);
}

static int by_tensor_name(const void *a, const void *b) {
    return strcmp(((const sp_safetensors_tensor *)a)->name,
                  ((const sp_safetensors_tensor *)b)->name);
}

static int by_offsets(const void *a, const void *b) {
    const sp_safetensors_tensor *x = *(const sp_safetensors_tensor *const *)a;
    const sp_safetensors_tensor *y = *(const sp_safetensors_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

typedef struct meta_pair {
    const char *key, *val;
} meta_pair;

static int by_meta_key(const void *a, const void *b) {
    return strcmp(((const meta_pair *)a)->key, ((const meta_pair *)b)->key);
}

/* The "__metadata__" object: strings only, no NUL, no repeated key. */
static sp_status read_metadata(const jparser *p, const jnode *m, sp_safetensors *st) {
    if (m->kind != J_OBJ)
        return sp_fail(SP_EFORMAT, "safetensors: header byte %zu: __metadata__ is not an object "
                       "of strings", m->pos);
    meta_pair *pairs = sp_calloc((size_t)m->count + 1, sizeof *pairs);
    st->mkey = sp_calloc((size_t)m->count + 1, sizeof *st->mkey);
    st->mval = sp_calloc((size_t)m->count + 1, sizeof *st->mval);
    if (!pairs || !st->mkey || !st->mval) {
        sp_free(pairs);
        return SP_ENOMEM;
    }
    int64_t k = 0;
    for (int64_t c = m->first; c >= 0; c = p->nodes[c].next, k++) {
        const jnode *v = &p->nodes[c];
        if (v->kind != J_STR) {
            sp_free(pairs);
            return sp_fail(SP_EFORMAT, "safetensors: __metadata__ value of '%s' (header byte %zu) "
                           "is not a string", v->key, v->pos);
        }
        if (strlen(v->key) != v->key_len || memchr(v->str, 0, v->str_len)) {
            sp_free(pairs);
            return sp_fail(SP_EFORMAT, "safetensors: __metadata__ key or value of '%s' holds a "
                           "NUL character (\\u0000)", v->key);
        }
        pairs[k] = (meta_pair){v->key, v->str};
    }
    qsort(pairs, (size_t)m->count, sizeof *pairs, by_meta_key);
    for (int64_t i = 1; i < m->count; i++)
        if (!strcmp(pairs[i].key, pairs[i - 1].key)) {
            sp_status r = sp_fail(SP_EFORMAT, "safetensors: __metadata__ key '%s' appears twice",
                                  pairs[i].key);
            sp_free(pairs);
            return r;
        }
    for (int64_t i = 0; i < m->count; i++) st->mkey[i] = pairs[i].key, st->mval[i] = pairs[i].val;
    st->nmeta = m->count;
    sp_free(pairs);
    return SP_OK;
}

/* One tensor entry: exactly dtype, shape and data_offsets, checked against the data size. */
static sp_status read_tensor(const jparser *p, const jnode *e, uint64_t data_len,
                             sp_safetensors_tensor *t) {
    const char *name = e->key;
    if (e->kind != J_OBJ)
        return sp_fail(SP_EFORMAT, "safetensors: tensor '%s' (header byte %zu) is not an object",
                       name, e->pos);
    const jnode *dt = NULL, *shape = NULL, *offs = NULL;
    for (int64_t c = e->first; c >= 0; c = p->nodes[c].next) {
        const jnode *f = &p->nodes[c];
        const jnode **slot = !strcmp(f->key, "dtype") ? &dt : !strcmp(f->key, "shape") ? &shape
                           : !strcmp(f->key, "data_offsets") ? &offs : NULL;
        if (!slot)
            return sp_fail(SP_EFORMAT, "safetensors: tensor '%s' has an unknown field '%s' "
                           "(header byte %zu; expected dtype, shape, data_offsets)", name, f->key,
                           f->key_pos);
        if (*slot)
            return sp_fail(SP_EFORMAT, "safetensors: tensor '%s' gives '%s' twice", name, f->key);
        *slot = f;
    }
    if (!dt || !shape || !offs)
        return sp_fail(SP_EFORMAT, "safetensors: tensor '%s' has no %s", name,
                       !dt ? "dtype" : !shape ? "shape" : "data_offsets");
    if (dt->kind != J_STR)
        return sp_fail(SP_EFORMAT, "safetensors: tensor '%s': dtype is not a string", name);
    int d = 0;
    while (d < SP_ST_NDTYPES && strcmp(dtypes[d].name, dt->str)) d++;
    if (d == SP_ST_NDTYPES || memchr(dt->str, 0, dt->str_len))
        return sp_fail(SP_EUNSUPPORTED, "safetensors: tensor '%s': dtype '%s' is not supported "
                       "(known: BOOL U8 I8 F8_E5M2 F8_E4M3 I16 U16 F16 BF16 I32 U32 F32 F64 I64 "
                       "U64)", name, dt->str);
    t->dtype = (sp_st_dtype)d;
    if (shape->kind != J_ARR)
        return sp_fail(SP_EFORMAT, "safetensors: tensor '%s': shape is not an array", name);
    if (shape->count > SP_SAFETENSORS_MAX_RANK)
        return sp_fail(SP_EUNSUPPORTED, "safetensors: tensor '%s': rank %lld exceeds %d", name,
                       (long long)shape->count, SP_SAFETENSORS_MAX_RANK);
    t->rank = (int)shape->count;
    int64_t numel = 1;
    int r = 0;
    for (int64_t c = shape->first; c >= 0; c = p->nodes[c].next, r++) {
        const jnode *v = &p->nodes[c];
        if (v->kind != J_INT)
            return sp_fail(SP_EFORMAT, "safetensors: tensor '%s': shape[%d] is not an integer",
                           name, r);
        if (v->num > (uint64_t)INT64_MAX || !sp_mul_i64(numel, (int64_t)v->num, &numel))
            return sp_fail(SP_EOVERFLOW, "safetensors: tensor '%s': shape[%d] = %llu makes the "
                           "element count overflow", name, r, (unsigned long long)v->num);
        t->shape[r] = (int64_t)v->num;
    }
    size_t nbytes;
    if (!sp_bytes(numel, dtypes[d].size, &nbytes) || nbytes > (size_t)INT64_MAX)
        return sp_fail(SP_EOVERFLOW, "safetensors: tensor '%s': %lld elements of %s overflow",
                       name, (long long)numel, dtypes[d].name);
    t->numel = numel;
    t->nbytes = nbytes;
    if (offs->kind != J_ARR || offs->count != 2 || p->nodes[offs->first].kind != J_INT ||
        p->nodes[p->nodes[offs->first].next].kind != J_INT)
        return sp_fail(SP_EFORMAT, "safetensors: tensor '%s': data_offsets is not [begin, end]",
                       name);
    t->begin = p->nodes[offs->first].num;
    t->end = p->nodes[p->nodes[offs->first].next].num;
    if (t->begin > t->end)
        return sp_fail(SP_EFORMAT, "safetensors: tensor '%s': data_offsets begin %llu > end %llu",
                       name, (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > data_len)
        return sp_fail(SP_EFORMAT, "safetensors: tensor '%s': data_offsets end %llu is past the "
                       "%llu bytes of data", name, (unsigned long long)t->end,
                       (unsigned long long)data_len);
    if (t->end - t->begin != (uint64_t)nbytes)
        return sp_fail(SP_EFORMAT, "safetensors: tensor '%s': data_offsets hold %llu bytes, "
                       "shape and dtype %s need %zu", name,
                       (unsigned long long)(t->end - t->begin), dtypes[d].name, nbytes);
    return SP_OK;
}

static sp_status parse_into(const uint8_t *b, size_t len, sp_safetensors *st) {
    if (len < 8)
        return sp_fail(SP_EFORMAT, "safetensors: %zu bytes: shorter than the 8-byte header size",
                       len);
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--) n = n << 8 | b[k];
    if (n > SP_SAFETENSORS_MAX_HEADER)
        return sp_fail(SP_EFORMAT, "safetensors: header size %llu exceeds the limit of %llu bytes",
                       (unsigned long long)n, SP_SAFETENSORS_MAX_HEADER);
    if (n > len - 8)
        return sp_fail(SP_EFORMAT, "safetensors: header size %llu runs past the end of the "
                       "%zu-byte file", (unsigned long long)n, len);
    if (n < 2 || b[8] != '{')
        return sp_fail(SP_EFORMAT, "safetensors: the header (%llu bytes) does not start with '{'",
                       (unsigned long long)n);
    const uint64_t data_len = len - 8 - n;
    jparser p = {.s = b + 8, .n = (size_t)n};
    sp_status s = SP_ENOMEM;
    p.pool = sp_alloc((size_t)n + 1);
    sp_safetensors_tensor **order = NULL;
    if (!p.pool) goto done;
    int64_t root;
    if ((s = parse_value(&p, 0, &root)) != SP_OK) goto done;
    skip_ws(&p);
    if (p.i != p.n) {
        s = sp_fail(SP_EFORMAT, "safetensors: header byte %zu: unexpected bytes after the JSON "
                    "object", p.i);
        goto done;
    }
    const jnode *r = &p.nodes[root];
    /* names must be usable as C strings */
    for (int64_t c = p.nodes[root].first; c >= 0; c = p.nodes[c].next) {
        const jnode *e = &p.nodes[c];
        if (strlen(e->key) != e->key_len) {
            s = sp_fail(SP_EFORMAT, "safetensors: header byte %zu: tensor name '%s...' holds a "
                        "NUL character (\\u0000)", e->key_pos, e->key);
            goto done;
        }
    }
    s = SP_ENOMEM;
    st->t = sp_calloc((size_t)r->count + 1, sizeof *st->t);
    if (!st->t) goto done;
    bool have_meta = false;
    for (int64_t c = r->first; c >= 0; c = p.nodes[c].next) {
        const jnode *e = &p.nodes[c];
        if (!strcmp(e->key, META_KEY)) {
            if (have_meta) {
                s = sp_fail(SP_EFORMAT, "safetensors: __metadata__ appears twice");
                goto done;
            }
            have_meta = true;
            if ((s = read_metadata(&p, e, st)) != SP_OK) goto done;
            continue;
        }
        sp_safetensors_tensor *t = &st->t[st->n];
        t->name = e->key;
        if ((s = read_tensor(&p, e, data_len, t)) != SP_OK) goto done;
        t->data = b + 8 + n + t->begin;
        st->n++;
    }
    qsort(st->t, (size_t)st->n, sizeof *st->t, by_tensor_name);
    for (int64_t i = 1; i < st->n; i++)
        if (!strcmp(st->t[i].name, st->t[i - 1].name)) {
            s = sp_fail(SP_EFORMAT, "safetensors: duplicate tensor name '%s'", st->t[i].name);
            goto done;
        }
    /* the tensors must tile the data buffer: sorted by offsets, each begins where the previous
     * ended (the format's rule: no holes, no overlaps, nothing after the last) */
    s = SP_ENOMEM;
    order = sp_calloc((size_t)st->n + 1, sizeof *order);
    if (!order) goto done;
    for (int64_t i = 0; i < st->n; i++) order[i] = &st->t[i];
    qsort(order, (size_t)st->n, sizeof *order, by_offsets);
    uint64_t pos = 0;
    for (int64_t i = 0; i < st->n; i++) {
        const sp_safetensors_tensor *t = order[i];
        if (t->begin < pos) {
            s = sp_fail(SP_EFORMAT, "safetensors: tensors '%s' [%llu, %llu) and '%s' [%llu, "
                        "%llu) overlap", order[i - 1]->name,
                        (unsigned long long)order[i - 1]->begin,
                        (unsigned long long)order[i - 1]->end, t->name,
                        (unsigned long long)t->begin, (unsigned long long)t->end);
            goto done;
        }
        if (t->begin > pos) {
            s = sp_fail(SP_EFORMAT, "safetensors: data bytes [%llu, %llu) before tensor '%s' "
                        "belong to no tensor (a hole)", (unsigned long long)pos,
                        (unsigned long long)t->begin, t->name);
            goto done;
        }
        pos = t->end;
    }
    if (pos != data_len) {
        s = sp_fail(SP_EFORMAT, "safetensors: data bytes [%llu, %llu) after the last tensor belong "
                    "to no tensor", (unsigned long long)pos, (unsigned long long)data_len);
        goto done;
    }
    st->pool = p.pool;
    p.pool = NULL;
    s = SP_OK;
done:
    sp_free(order);
    sp_free(p.pool);
    sp_free(p.nodes);
    return s;
}

sp_status sp_safetensors_parse(const uint8_t *bytes, size_t len, sp_safetensors **out) {
    if (!out) return sp_fail(SP_EINVAL, "safetensors_parse: NULL argument");
    *out = NULL;
    if (!bytes && len) return sp_fail(SP_EINVAL, "safetensors_parse: NULL bytes");
    sp_safetensors *st = sp_calloc(1, sizeof *st);
    if (!st) return SP_ENOMEM;
    sp_status s = parse_into(bytes ? bytes : (const uint8_t *)"", len, st);
    if (s != SP_OK) {
        sp_safetensors_free(st);
        return s;
    }
    *out = st;
    return SP_OK;
}

sp_status sp_safetensors_load(const char *path, sp_safetensors **out) {
    if (!path || !out) return sp_fail(SP_EINVAL, "safetensors_load: NULL argument");
    *out = NULL;
    uint8_t *bytes;
    size_t len;
    sp_status rs = sp_read_file(path, "safetensors", &bytes, &len);
    if (rs != SP_OK) return rs;
    sp_status s = sp_safetensors_parse(bytes, len, out);
    if (s != SP_OK) {
        sp_free(bytes);
        if (s != SP_ENOMEM) {
            char msg[440];
            snprintf(msg, sizeof msg, "%s", sp_last_error());
            sp_fail(s, "%s: %s", path, msg);
        }
        return s;
    }
    (*out)->owned = bytes;
    return SP_OK;
}

int64_t sp_safetensors_count(const sp_safetensors *st) { return st ? st->n : 0; }

const sp_safetensors_tensor *sp_safetensors_at(const sp_safetensors *st, int64_t i) {
    return st && i >= 0 && i < st->n ? &st->t[i] : NULL;
}

const sp_safetensors_tensor *sp_safetensors_find(const sp_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    int64_t lo = 0, hi = st->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->t[mid].name, name);
        if (c == 0) return &st->t[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

int64_t sp_safetensors_meta_count(const sp_safetensors *st) { return st ? st->nmeta : 0; }

sp_status sp_safetensors_meta_at(const sp_safetensors *st, int64_t i, const char **key,
                                 const char **value) {
    if (!st || !key || !value || i < 0 || i >= st->nmeta)
        return sp_fail(SP_EINVAL, "safetensors_meta_at: index %lld not in [0, %lld)", (long long)i,
                       (long long)(st ? st->nmeta : 0));
    *key = st->mkey[i];
    *value = st->mval[i];
    return SP_OK;
}

const char *sp_safetensors_meta(const sp_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (int64_t i = 0; i < st->nmeta; i++)
        if (!strcmp(st->mkey[i], key)) return st->mval[i];
    return NULL;
}

/* ---- element conversion ---------------------------------------------------------------------- */

/* IEEE binary16 -> binary32, exact (subnormals, infinities and NaN included). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = h >> 10 & 0x1F, man = h & 0x3FF, u;
    if (exp == 0x1F) u = sign | 0x7F800000u | man << 13;
    else if (exp) u = sign | (exp + 112) << 23 | man << 13;
    else if (!man) u = sign;
    else {
        /* subnormal: man * 2^-24, renormalized */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400));
        u = sign | (uint32_t)(112 - e) << 23 | (man & 0x3FF) << 13;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

sp_status sp_safetensors_read_f32(const sp_safetensors_tensor *t, float *dst, int64_t n) {
    if (!t || (!dst && n)) return sp_fail(SP_EINVAL, "safetensors_read_f32: NULL argument");
    if (n != t->numel)
        return sp_fail(SP_ESHAPE, "safetensors: tensor '%s' has %lld elements, %lld asked for",
                       t->name, (long long)t->numel, (long long)n);
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case SP_ST_F32:
        if (n) memcpy(dst, p, (size_t)n * 4);
        return SP_OK;
    case SP_ST_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return SP_OK;
    case SP_ST_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = half_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return SP_OK;
    case SP_ST_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
            memcpy(&dst[i], &u, 4);
        }
        return SP_OK;
    default:
        return sp_fail(SP_EUNSUPPORTED, "safetensors: tensor '%s' is %s; floats are read from F32, "
                       "F64, F16 or BF16", t->name, sp_st_dtype_name(t->dtype));
    }
}

sp_status sp_safetensors_read_i64(const sp_safetensors_tensor *t, int64_t *dst, int64_t n) {
    if (!t || (!dst && n)) return sp_fail(SP_EINVAL, "safetensors_read_i64: NULL argument");
    if (n != t->numel)
        return sp_fail(SP_ESHAPE, "safetensors: tensor '%s' has %lld elements, %lld asked for",
                       t->name, (long long)t->numel, (long long)n);
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case SP_ST_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); dst[i] = v; break; }
        case SP_ST_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); dst[i] = v; break; }
        case SP_ST_U32: { uint32_t v; memcpy(&v, p + 4 * i, 4); dst[i] = v; break; }
        case SP_ST_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); dst[i] = v; break; }
        case SP_ST_U16: { uint16_t v; memcpy(&v, p + 2 * i, 2); dst[i] = v; break; }
        case SP_ST_I8: dst[i] = (int8_t)p[i]; break;
        case SP_ST_U8: dst[i] = p[i]; break;
        default:
            return sp_fail(SP_EUNSUPPORTED, "safetensors: tensor '%s' is %s; indices are read from "
                           "I64, I32, U32, I16, U16, I8 or U8", t->name,
                           sp_st_dtype_name(t->dtype));
        }
    }
    return SP_OK;
}

/* ---- writing --------------------------------------------------------------------------------- */

typedef struct bentry {
    char *name;
    sp_st_dtype dtype;
    int rank;
    int64_t shape[SP_SAFETENSORS_MAX_RANK];
    size_t nbytes;
    uint8_t *data;
} bentry;

struct sp_safetensors_builder {
    int64_t n, cap;
    bentry *e;
    int64_t nmeta, mcap;
    char **mkey, **mval;
};

sp_status sp_safetensors_builder_new(sp_safetensors_builder **out) {
    if (!out) return sp_fail(SP_EINVAL, "safetensors_builder_new: NULL argument");
    *out = sp_calloc(1, sizeof **out);
    return *out ? SP_OK : SP_ENOMEM;
}

void sp_safetensors_builder_free(sp_safetensors_builder *b) {
    if (!b) return;
    for (int64_t i = 0; i < b->n; i++) {
        sp_free(b->e[i].name);
        sp_free(b->e[i].data);
    }
    for (int64_t i = 0; i < b->nmeta; i++) {
        sp_free(b->mkey[i]);
        sp_free(b->mval[i]);
    }
    sp_free(b->e);
    sp_free(b->mkey);
    sp_free(b->mval);
    sp_free(b);
}

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *d = sp_alloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* Grows an array of elem-byte items to hold one more. */
static bool grow(void **arr, int64_t n, int64_t *cap, size_t elem) {
    if (n < *cap) return true;
    int64_t c = *cap ? 2 * *cap : 16;
    void *a = sp_alloc(elem * (size_t)c);
    if (!a) return false;
    if (n) memcpy(a, *arr, elem * (size_t)n);
    sp_free(*arr);
    *arr = a;
    *cap = c;
    return true;
}

sp_status sp_safetensors_builder_add(sp_safetensors_builder *b, const char *name,
                                     sp_st_dtype dtype, int rank, const int64_t *shape,
                                     const void *data) {
    if (!b || !name || (rank && !shape))
        return sp_fail(SP_EINVAL, "safetensors_builder_add: NULL argument");
    if (!*name || !strcmp(name, META_KEY) || !utf8_valid(name))
        return sp_fail(SP_EINVAL, "safetensors: tensor name '%s' is empty, reserved or not "
                       "UTF-8", name);
    if ((unsigned)dtype >= SP_ST_NDTYPES)
        return sp_fail(SP_EINVAL, "safetensors: tensor '%s': dtype code %d out of range", name,
                       (int)dtype);
    if (rank < 0 || rank > SP_SAFETENSORS_MAX_RANK)
        return sp_fail(SP_EINVAL, "safetensors: tensor '%s': rank %d not in [0, %d]", name, rank,
                       SP_SAFETENSORS_MAX_RANK);
    for (int64_t i = 0; i < b->n; i++)
        if (!strcmp(b->e[i].name, name))
            return sp_fail(SP_EINVAL, "safetensors: tensor '%s' added twice", name);
    int64_t numel = 1;
    for (int r = 0; r < rank; r++)
        if (shape[r] < 0 || !sp_mul_i64(numel, shape[r], &numel))
            return sp_fail(SP_EOVERFLOW, "safetensors: tensor '%s': shape[%d] = %lld is negative "
                           "or overflows", name, r, (long long)shape[r]);
    size_t nbytes;
    if (!sp_bytes(numel, dtypes[dtype].size, &nbytes))
        return sp_fail(SP_EOVERFLOW, "safetensors: tensor '%s': size overflows", name);
    if (nbytes && !data) return sp_fail(SP_EINVAL, "safetensors: tensor '%s': NULL data", name);
    if (!grow((void **)&b->e, b->n, &b->cap, sizeof *b->e)) return SP_ENOMEM;
    bentry e = {.dtype = dtype, .rank = rank, .nbytes = nbytes};
    for (int r = 0; r < rank; r++) e.shape[r] = shape[r];
    e.name = dup_str(name);
    e.data = sp_alloc(nbytes ? nbytes : 1);
    if (!e.name || !e.data) {
        sp_free(e.name);
        sp_free(e.data);
        return SP_ENOMEM;
    }
    if (nbytes) memcpy(e.data, data, nbytes);
    b->e[b->n++] = e;
    return SP_OK;
}

sp_status sp_safetensors_builder_meta(sp_safetensors_builder *b, const char *key,
                                      const char *value) {
    if (!b || !key || !value) return sp_fail(SP_EINVAL, "safetensors_builder_meta: NULL argument");
    if (!utf8_valid(key) || !utf8_valid(value))
        return sp_fail(SP_EINVAL, "safetensors: metadata '%s' is not UTF-8", key);
    for (int64_t i = 0; i < b->nmeta; i++)
        if (!strcmp(b->mkey[i], key))
            return sp_fail(SP_EINVAL, "safetensors: metadata key '%s' given twice", key);
    int64_t c1 = b->mcap, c2 = b->mcap;
    if (!grow((void **)&b->mkey, b->nmeta, &c1, sizeof *b->mkey) ||
        !grow((void **)&b->mval, b->nmeta, &c2, sizeof *b->mval))
        return SP_ENOMEM;
    b->mcap = c1 < c2 ? c1 : c2;
    char *k = dup_str(key), *v = dup_str(value);
    if (!k || !v) {
        sp_free(k);
        sp_free(v);
        return SP_ENOMEM;
    }
    b->mkey[b->nmeta] = k;
    b->mval[b->nmeta] = v;
    b->nmeta++;
    return SP_OK;
}

/* A growing text buffer for the header. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *s, const char *src, size_t n) {
    if (s->oom) return;
    if (s->n + n + 1 > s->cap) {
        size_t c = s->cap ? s->cap : 256;
        while (c < s->n + n + 1) c *= 2;
        char *q = sp_alloc(c);
        if (!q) {
            s->oom = true;
            return;
        }
        if (s->n) memcpy(q, s->p, s->n);
        sp_free(s->p);
        s->p = q;
        s->cap = c;
    }
    memcpy(s->p + s->n, src, n);
    s->n += n;
    s->p[s->n] = '\0';
}
static void sb_str(sbuf *s, const char *str) { sb_put(s, str, strlen(str)); }
static void sb_fmt(sbuf *s, const char *fmt, unsigned long long v) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, fmt, v);
    sb_put(s, tmp, (size_t)k);
}
/* A JSON string literal: quotes, backslashes and control characters escaped, UTF-8 kept. */
static void sb_json(sbuf *s, const char *str) {
    sb_put(s, "\"", 1);
    for (const char *c = str; *c; c++) {
        unsigned char u = (unsigned char)*c;
        if (u == '"' || u == '\\') {
            char e[2] = {'\\', (char)u};
            sb_put(s, e, 2);
        } else if (u < 0x20) {
            sb_fmt(s, "\\u%04llx", u);
        } else {
            sb_put(s, c, 1);
        }
    }
    sb_put(s, "\"", 1);
}

/* Data layout order: element size, largest first, then name (as the reference writer). */
typedef struct layout_key {
    size_t size;
    const char *name;
    int64_t index;
} layout_key;
static int by_layout(const void *a, const void *b) {
    const layout_key *x = a, *y = b;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    return strcmp(x->name, y->name);
}

static sp_status write_all(int fd, const uint8_t *p, size_t n, int *err) {
    while (n && !*err) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) *err = k < 0 && errno ? errno : EIO;
        else p += k, n -= (size_t)k;
    }
    return *err ? SP_EIO : SP_OK;
}

sp_status sp_safetensors_write(const sp_safetensors_builder *b, const char *path) {
    if (!b || !path) return sp_fail(SP_EINVAL, "safetensors_write: NULL argument");
    layout_key *keys = sp_calloc((size_t)b->n + 1, sizeof *keys);
    int64_t *order = sp_calloc((size_t)b->n + 1, sizeof *order);
    char *tmp = NULL;
    sbuf h = {0};
    sp_status st = SP_ENOMEM;
    if (!keys || !order) goto done;
    for (int64_t i = 0; i < b->n; i++)
        keys[i] = (layout_key){dtypes[b->e[i].dtype].size, b->e[i].name, i};
    qsort(keys, (size_t)b->n, sizeof *keys, by_layout);
    for (int64_t i = 0; i < b->n; i++) order[i] = keys[i].index;
    /* the header: metadata, then the tensors in data order */
    sb_str(&h, "{");
    bool first = true;
    if (b->nmeta) {
        sb_str(&h, "\"" META_KEY "\":{");
        for (int64_t i = 0; i < b->nmeta; i++) {
            if (i) sb_str(&h, ",");
            sb_json(&h, b->mkey[i]);
            sb_str(&h, ":");
            sb_json(&h, b->mval[i]);
        }
        sb_str(&h, "}");
        first = false;
    }
    uint64_t pos = 0;
    for (int64_t k = 0; k < b->n; k++) {
        const bentry *e = &b->e[order[k]];
        if (!first) sb_str(&h, ",");
        first = false;
        sb_json(&h, e->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, dtypes[e->dtype].name);
        sb_str(&h, "\",\"shape\":[");
        for (int r = 0; r < e->rank; r++)
            sb_fmt(&h, r ? ",%llu" : "%llu", (unsigned long long)e->shape[r]);
        sb_fmt(&h, "],\"data_offsets\":[%llu,", pos);
        pos += e->nbytes;
        sb_fmt(&h, "%llu]}", pos);
    }
    sb_str(&h, "}");
    while (!h.oom && (8 + h.n) % 8) sb_str(&h, " ");
    if (h.oom) goto done;
    if (h.n > SP_SAFETENSORS_MAX_HEADER) {
        st = sp_fail(SP_EOVERFLOW, "safetensors: header of %zu bytes exceeds the limit", h.n);
        goto done;
    }
    int fd;
    if ((st = sp_atomic_open(path, "safetensors", &fd, &tmp)) != SP_OK) goto done;
    int err = 0;
    uint8_t size[8];
    for (int k = 0; k < 8; k++) size[k] = (uint8_t)((uint64_t)h.n >> (8 * k));
    write_all(fd, size, 8, &err);
    write_all(fd, (const uint8_t *)h.p, h.n, &err);
    for (int64_t k = 0; k < b->n && !err; k++)
        write_all(fd, b->e[order[k]].data, b->e[order[k]].nbytes, &err);
    if ((err = sp_atomic_commit(fd, tmp, path, err)) != 0) {
        st = sp_fail(SP_EIO, "safetensors: writing %s failed: %s", path, strerror(err));
        goto done;
    }
    st = SP_OK;
done:
    sp_free(h.p);
    sp_free(keys);
    sp_free(order);
    sp_free(tmp);
    return st;
}
