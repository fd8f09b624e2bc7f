/*
 * qlinear.c - the quantized fully connected layer, for inference: y = deq(W) quant(x) + b with
 * W an int8 or 4-bit quantized sparse (or dense) matrix (sparrow/quant.h) and x quantized to
 * int8 per call, dynamically per column or with a static scale found by calibration.
 *
 * A qlinear layer has no trained parameters: its weight, bias and activation scale are tensors
 * it keeps outside the float arenas (layer.h, sp_layer_tensor), saved in the model file as
 *     row_ptr, gap, val, scale   the sp_qcsr arrays (docs/QUANTIZATION.md)
 *     bias                       out floats (none with bias=0)
 *     act_scale                  one float: the static activation scale, 0 = dynamic
 * A model loaded from a mapped file lends them to the layer, which uses them in place.
 * sp_model_quantize (src/quant/qmodel.c) makes qlinear layers out of linear ones.
 *
 * Config: qlinear out=N [bits=8|4] [group=G] [layout=sparse|dense] [bias=0|1]. Built from its
 * config alone the layer stores no weights and no bias (zeros) until the model file or the
 * quantizer gives it its tensors; a sparse weight with no stored entry is kept (and saved) the
 * same way, as four empty arrays, and an empty bias tensor means zeros. Backward is refused: train the float model, then quantize.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layer.h"
#include "sparrow/quant.h"

#include "../core/internal.h"
#include "../kernels/kernel_table.h"

enum { QT_ROW_PTR, QT_GAP, QT_VAL, QT_SCALE, QT_BIAS, QT_ACT, QT_COUNT };

typedef struct qlinear_layer {
    sp_layer base;
    int64_t in, out;
    int bits, group;
    bool dense_layout, has_bias;
    sp_qcsr *q;            /* NULL: no weights yet (all zero) */
    float *bias;           /* out floats (owned unless bias_borrowed), or NULL */
    bool bias_borrowed;
    float act_scale;       /* static activation scale; 0 = dynamic per column */
    void *work;            /* sp_qcsr_spmm's workspace, sized by reserve */
    size_t work_bytes;
    bool calibrating;      /* forward records the input's max |x| into absmax */
    float absmax;
} qlinear_layer;

static int64_t cols_of(const sp_layer *l, int64_t batch) { return l->in.h * l->in.w * batch; }

static sp_status grow_work(qlinear_layer *L, int64_t cols) {
    const size_t need = L->q ? sp_qcsr_work_bytes(L->q, cols) : 0;
    if (need <= L->work_bytes) return SP_OK;
    void *w = sp_alloc(need);
    if (!w) return SP_ENOMEM;
    sp_free(L->work);
    L->work = w;
    L->work_bytes = need;
    return SP_OK;
}

static sp_status qlinear_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    qlinear_layer *L = (qlinear_layer *)l;
    const int64_t cols = cols_of(l, run->batch);
    if (L->calibrating) {
        sp_status st = sp_quant_act_absmax(x, cols, L->in, cols, &L->absmax);
        if (st != SP_OK) return st;
    }
    if (!L->q) {
        for (int64_t i = 0; i < L->out; i++)
            for (int64_t j = 0; j < cols; j++) y[i * cols + j] = L->bias ? L->bias[i] : 0.0f;
        return SP_OK;
    }
    /* reserve sized the workspace for the largest batch; growing here is only a fallback */
    sp_status st = grow_work(L, cols);
    if (st != SP_OK) return st;
    return sp_qcsr_spmm(L->q, x, cols, cols, L->calibrating ? 0.0f : L->act_scale, y, cols,
                        L->bias, SP_ACT_NONE, L->work, L->work_bytes, run->nthreads);
}

static sp_status qlinear_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                                  const float *dy, float *dx) {
    (void)run, (void)x, (void)y, (void)dy, (void)dx;
    return sp_fail(SP_EUNSUPPORTED, "layer %s (qlinear) is quantized, for inference only: "
                   "train or fine-tune the float model, then quantize it", l->name);
}

static void qlinear_init(sp_layer *l, sp_rng *rng) { (void)l, (void)rng; }

static sp_status qlinear_reserve(sp_layer *l, int64_t batch) {
    return grow_work((qlinear_layer *)l, cols_of(l, batch));
}

static void drop_bias(qlinear_layer *L) {
    if (!L->bias_borrowed) sp_free(L->bias);
    L->bias = NULL;
    L->bias_borrowed = false;
}

static void qlinear_free(sp_layer *l) {
    qlinear_layer *L = (qlinear_layer *)l;
    sp_qcsr_free(L->q);
    drop_bias(L);
    sp_free(L->work);
}

static int qlinear_describe(const sp_layer *l, char *buf, size_t n) {
    const qlinear_layer *L = (const qlinear_layer *)l;
    int len = snprintf(buf, n, "qlinear out=%lld bits=%d", (long long)L->out, L->bits);
    if (L->bits == 4) len += snprintf(buf + len, n - (size_t)len, " group=%d", L->group);
    if (L->dense_layout) len += snprintf(buf + len, n - (size_t)len, " layout=dense");
    if (!L->has_bias) len += snprintf(buf + len, n - (size_t)len, " bias=0");
    return len;
}

static void qlinear_storage(const sp_layer *l, const char **format, int64_t *dense_params,
                            size_t *bytes) {
    const qlinear_layer *L = (const qlinear_layer *)l;
    static const char *const names[2][2] = {{"q8-csr", "q8-dense"}, {"q4-csr", "q4-dense"}};
    *format = names[L->bits == 4][L->dense_layout];
    *dense_params = L->out * L->in + (L->has_bias ? L->out : 0);
    *bytes = (L->q ? sp_qcsr_bytes(L->q) : 0) + sizeof(float) * (size_t)(L->bias ? L->out : 0) +
             sizeof(float);
}

/* Calls fn(u, i, j, value) for every stored entry (row i, column j). */
static void walk(const sp_qcsr *q, void (*fn)(void *u, int64_t i, int64_t j, int v), void *u) {
    for (int64_t i = 0; i < q->rows; i++) {
        int64_t j = -1;
        for (int64_t k = q->row_ptr[i]; k < q->row_ptr[i + 1]; k++) {
            j = q->dense ? k - q->row_ptr[i] : (j < 0 ? 0 : j) + q->gap[k];
            fn(u, i, j, sp_qcsr_q(q, k)); /* fillers read 0 */
        }
    }
}

static void count_nonzero(void *u, int64_t i, int64_t j, int v) {
    (void)i, (void)j;
    *(int64_t *)u += v != 0;
}

static void mark_nonzero(void *u, int64_t i, int64_t j, int v) {
    if (v) sp_mask_set(u, i, j, true);
}

static int64_t qlinear_nnz(const sp_layer *l) {
    const qlinear_layer *L = (const qlinear_layer *)l;
    int64_t n = 0;
    if (L->q) walk(L->q, count_nonzero, &n);
    return n;
}

/* The entries that hold a nonzero value (a dense-layout layer has no pattern). */
static sp_status qlinear_pattern(const sp_layer *l, sp_mask **out) {
    const qlinear_layer *L = (const qlinear_layer *)l;
    *out = NULL;
    if (L->dense_layout) return SP_OK;
    sp_mask *m = NULL;
    sp_status st = sp_mask_new(L->out, L->in, &m);
    if (st != SP_OK) return st;
    if (L->q) walk(L->q, mark_nonzero, m);
    *out = m;
    return SP_OK;
}

static sp_status qlinear_get_dense(const sp_layer *l, float *w, float *bias) {
    const qlinear_layer *L = (const qlinear_layer *)l;
    sp_status st = SP_OK;
    if (L->q) st = sp_qcsr_to_dense(L->q, w, L->in);
    else memset(w, 0, sizeof(float) * (size_t)(L->out * L->in));
    if (bias) {
        if (L->bias) memcpy(bias, L->bias, sizeof(float) * (size_t)L->out);
        else memset(bias, 0, sizeof(float) * (size_t)L->out);
    }
    return st;
}

/* ---- tensors: what the model file saves ------------------------------------------------------ */

static int qlinear_ntensors(const sp_layer *l) {
    (void)l;
    return QT_COUNT;
}

static sp_status qlinear_get_tensor(const sp_layer *l, int k, sp_layer_tensor *t) {
    const qlinear_layer *L = (const qlinear_layer *)l;
    if (k < 0 || k >= QT_COUNT) return sp_fail(SP_EINVAL, "qlinear: no tensor %d", k);
    if (k <= QT_SCALE) {
        static const char *const names[] = {"row_ptr", "gap", "val", "scale"};
        static const sp_dtype types[] = {SP_I32, SP_U8, SP_I8, SP_F32};
        *t = (sp_layer_tensor){.name = names[k], .dtype = types[k], .count = 0, .data = NULL};
        if (k == QT_VAL && L->bits == 4) t->dtype = SP_U8;
        if (!L->q) return SP_OK; /* no weights: every array empty */
        return sp_qcsr_array(L->q, k, NULL, NULL, &t->count, &t->data);
    }
    if (k == QT_BIAS)
        *t = (sp_layer_tensor){.name = "bias", .dtype = SP_F32, .count = L->bias ? L->out : 0,
                               .data = L->bias};
    else
        *t = (sp_layer_tensor){.name = "act_scale", .dtype = SP_F32, .count = 1,
                               .data = &L->act_scale};
    return SP_OK;
}

static sp_status qlinear_load_tensors(sp_layer *l, const sp_layer_tensor *t, int n, bool borrow) {
    qlinear_layer *L = (qlinear_layer *)l;
    if (n != QT_COUNT)
        return sp_fail(SP_EFORMAT, "layer %s (qlinear): %d tensors, expected %d", l->name, n,
                       QT_COUNT);
    const sp_layer_tensor *bt = &t[QT_BIAS], *at = &t[QT_ACT];
    if (bt->count != (L->has_bias ? L->out : 0) && bt->count != 0)
        return sp_fail(SP_EFORMAT, "layer %s (qlinear): bias has %lld values, expected %lld "
                       "(or none: zeros)", l->name, (long long)bt->count,
                       (long long)(L->has_bias ? L->out : 0));
    if (at->count != 1)
        return sp_fail(SP_EFORMAT, "layer %s (qlinear): act_scale has %lld values, expected 1",
                       l->name, (long long)at->count);
    float act;
    memcpy(&act, at->data, sizeof act);
    if (!isfinite(act) || act < 0.0f)
        return sp_fail(SP_EFORMAT, "layer %s (qlinear): act_scale %g is not a finite value >= 0",
                       l->name, (double)act);
    for (int64_t i = 0; i < bt->count; i++) {
        float b;
        memcpy(&b, (const float *)bt->data + i, sizeof b);
        if (!isfinite(b))
            return sp_fail(SP_EFORMAT, "layer %s (qlinear): bias[%lld] is not finite", l->name,
                           (long long)i);
    }
    sp_qcsr *q = NULL;
    const bool empty = t[QT_ROW_PTR].count == 0 && t[QT_GAP].count == 0 &&
                       t[QT_VAL].count == 0 && t[QT_SCALE].count == 0;
    if (!empty) {
        if (L->dense_layout && t[QT_GAP].count != 0)
            return sp_fail(SP_EFORMAT, "layer %s (qlinear): the config says layout=%s but the "
                           "gap array has %lld entries", l->name, "dense",
                           (long long)t[QT_GAP].count);
        sp_status st = sp_qcsr_wrap(L->out, L->in, L->bits, L->bits == 4 ? L->group : 0,
                                    t[QT_ROW_PTR].data, t[QT_ROW_PTR].count, t[QT_GAP].data,
                                    t[QT_GAP].count, t[QT_VAL].data, t[QT_VAL].count,
                                    t[QT_SCALE].data, t[QT_SCALE].count, borrow, &q);
        if (st == SP_OK && q->dense != L->dense_layout) {
            sp_qcsr_free(q);
            return sp_fail(SP_EFORMAT, "layer %s (qlinear): the config says layout=sparse but "
                           "the arrays hold the dense layout (no gap array)", l->name);
        }
        if (st != SP_OK) {
            char why[256]; /* sp_fail formats into the buffer sp_last_error returns */
            snprintf(why, sizeof why, "%s", sp_last_error());
            return sp_fail(st, "layer %s (qlinear): %s", l->name, why);
        }
    }
    float *bias = NULL;
    if (bt->count && !borrow) {
        if (!(bias = sp_alloc(sizeof(float) * (size_t)L->out))) {
            sp_qcsr_free(q);
            return SP_ENOMEM;
        }
        memcpy(bias, bt->data, sizeof(float) * (size_t)L->out);
    }
    sp_qcsr_free(L->q);
    L->q = q;
    drop_bias(L);
    if (bt->count) {
        L->bias = borrow ? (float *)(uintptr_t)bt->data : bias;
        L->bias_borrowed = borrow;
    }
    L->act_scale = act;
    return SP_OK;
}

static const sp_layer_vt qlinear_vt = {
    .kind = "qlinear",
    .forward = qlinear_forward,
    .backward = qlinear_backward,
    .init_params = qlinear_init,
    .reserve = qlinear_reserve,
    .free = qlinear_free,
    .describe = qlinear_describe,
    .storage = qlinear_storage,
    .pattern = qlinear_pattern,
    .get_dense = qlinear_get_dense,
    .nnz = qlinear_nnz,
    .ntensors = qlinear_ntensors,
    .get_tensor = qlinear_get_tensor,
    .load_tensors = qlinear_load_tensors,
};

/* ---- the quantizer's access (layer.h) -------------------------------------------------------- */

bool sp_qlinear_is(const sp_layer *l) { return l && l->vt == &qlinear_vt; }

void sp_qlinear_config(const sp_layer *l, int *bits, int *group, bool *dense_layout) {
    const qlinear_layer *L = (const qlinear_layer *)l;
    *bits = L->bits;
    *group = L->group;
    *dense_layout = L->dense_layout;
}

sp_status sp_qlinear_set(sp_layer *l, sp_qcsr *q, const float *bias) {
    qlinear_layer *L = (qlinear_layer *)l;
    if (q->rows != L->out || q->cols != L->in || q->bits != L->bits || q->dense != L->dense_layout)
        return sp_fail(SP_EINVAL, "layer %s (qlinear): a %lld x %lld %d-bit%s matrix does not "
                       "fit it", l->name, (long long)q->rows, (long long)q->cols, q->bits,
                       q->dense ? " dense" : "");
    float *b = NULL;
    if (L->has_bias) {
        if (!(b = sp_alloc(sizeof(float) * (size_t)L->out))) return SP_ENOMEM;
        if (bias) memcpy(b, bias, sizeof(float) * (size_t)L->out);
        else memset(b, 0, sizeof(float) * (size_t)L->out);
    }
    sp_qcsr_free(L->q);
    L->q = q;
    if (q->nnz == 0) { /* no stored entry (an emptied layer): the weightless state */
        sp_qcsr_free(q);
        L->q = NULL;
    }
    drop_bias(L);
    L->bias = b;
    return SP_OK;
}

void sp_qlinear_calibrate(sp_layer *l, bool start) {
    qlinear_layer *L = (qlinear_layer *)l;
    if (start) {
        L->calibrating = true;
        L->absmax = 0.0f;
    } else if (L->calibrating) {
        L->calibrating = false;
        L->act_scale = L->absmax / 127.0f;
    }
}

float sp_qlinear_act_scale(const sp_layer *l) { return ((const qlinear_layer *)l)->act_scale; }

/* ---- construction ---------------------------------------------------------------------------- */

sp_status sp_qlinear_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    (void)b; /* its weights come from the model file's own tensors (or the quantizer) */
    int64_t nout, bias, bits, group;
    const char *layout;
    sp_status st;
    if ((st = sp_args_int(a, "out", -1, 1, 1 << 24, &nout)) != SP_OK) return st;
    if (nout < 0) return sp_fail(SP_EINVAL, "config line %d (qlinear): out=N is required", a->line);
    if ((st = sp_args_int(a, "bias", 1, 0, 1, &bias)) != SP_OK) return st;
    if ((st = sp_args_int(a, "bits", 8, 4, 8, &bits)) != SP_OK) return st;
    if (bits != 4 && bits != 8)
        return sp_fail(SP_EINVAL, "config line %d (qlinear): bits=%lld is not 8 or 4", a->line,
                       (long long)bits);
    if ((st = sp_args_int(a, "group", 32, 1, 4096, &group)) != SP_OK) return st;
    if ((st = sp_args_str(a, "layout", "sparse", &layout)) != SP_OK) return st;
    if (strcmp(layout, "sparse") != 0 && strcmp(layout, "dense") != 0)
        return sp_fail(SP_EINVAL, "config line %d (qlinear): layout=%s is not sparse or dense",
                       a->line, layout);
    if (in.c > INT32_MAX)
        return sp_fail(SP_ESHAPE, "config line %d (qlinear): %lld inputs are too many", a->line,
                       (long long)in.c);
    qlinear_layer *L = sp_layer_alloc(sizeof *L, &qlinear_vt, in);
    if (!L) return SP_ENOMEM;
    L->in = in.c;
    L->out = nout;
    L->bits = (int)bits;
    L->group = (int)group;
    L->dense_layout = strcmp(layout, "dense") == 0;
    L->has_bias = bias != 0;
    L->base.out = (sp_shape){nout, in.h, in.w};
    *out = &L->base;
    return SP_OK;
}
