/*
 * cmd_export_c.c - `sparrow export-c`: a model file as one self-contained C source and header
 * for a microcontroller (docs/MCU.md). The weights become const arrays (flash): dense layers
 * dense, sparse layers (mask, csr, bsr, nm storage) as CSR with the smallest index types that
 * hold them (u8 column indices within 256-column panels when that is smaller); the forward pass is a few loops over two static activation buffers, with no
 * allocation and nothing from libc (math.h only for the smooth activations).
 *
 * Supported: flatten, linear (any storage), relu, sigmoid, tanh, silu, gelu, softmax, dropout
 * (identity at inference): MLPs. Anything else is refused with SP_EUNSUPPORTED naming the layer.
 *
 * The generated forward pass sums in sparrow's reference order: per output, the products over
 * the stored entries in ascending column order, then the bias (sp_f32_spmm_csr__ref).
 * With --int8 the weights are quantized per output channel (export_quantize_rows, below) and the
 * activations stay float: y_i = (sum_j q_ij x_j) * scale_i + b_i, the sum in float.
 *
 * Both files are written next to their targets under temporary names and renamed over them only
 * once both are complete: an error leaves no half-written file.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static void export_usage(FILE *f) {
    fprintf(f,
        "usage: sparrow export-c --model MODEL --out DIR [--int8] [--name PREFIX]\n"
        "\n"
        "Writes DIR/PREFIX.c and DIR/PREFIX.h: the model's weights as const arrays and a\n"
        "forward pass with no allocation and no libc (static activation buffers), for a\n"
        "microcontroller or any C99 compiler (docs/MCU.md). API:\n"
        "    int PREFIX_predict(const float *input, float *logits_out);  /* the class */\n"
        "    PREFIX_INPUTS, PREFIX_CLASSES, PREFIX_INPUT_SCALE (upper-case prefix)\n"
        "Input: one sample in sparrow's feature order, each raw value times the model's\n"
        "input scale (a u8 pixel p: (float)p * PREFIX_INPUT_SCALE).\n"
        "  --model MODEL   a model file (sparrow train / prune); MLPs: flatten, linear in any\n"
        "                  storage, relu, sigmoid, tanh, silu, gelu, softmax, dropout\n"
        "  --out DIR       output directory (created if missing; its parent must exist)\n"
        "  --int8          int8 weights, symmetric per output channel (scale = max|w| / 127),\n"
        "                  float activations; about 4x less flash\n"
        "  --name PREFIX   C identifier prefixing every symbol and the file names [model]\n"
        "Sparse layers are stored as CSR (indices u8/u16/u32 by size; with more than 256\n"
        "inputs in 256-column panels with u8 indices when that is smaller) unless dense\n"
        "storage is smaller (a mask layer at low sparsity); dense layers stay dense.\n"
        "Outputs are bitwise those of sparrow's reference kernels on any target that rounds\n"
        "float as IEEE single (no -ffast-math). Details: docs/MCU.md.\n");
}

/* ---- a growable text buffer ------------------------------------------------------------------ */

typedef struct xbuf {
    char *p;
    size_t len, cap;
    bool oom;
} xbuf;

static void xprintf(xbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void xprintf(xbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len <= (size_t)n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A float as a C literal that reads back as the same float ("0.5f", "-3.0f", "1e-07f"). */
static void xfloat(xbuf *b, float v) {
    char s[48];
    snprintf(s, sizeof s, "%.9g", (double)v);
    if (!strpbrk(s, ".eE")) strcat(s, ".0");
    xprintf(b, "%sf", s);
}

/* ---- the plan: what each layer becomes ----------------------------------------------------- */

enum op_kind { OP_NONE, OP_LINEAR, OP_RELU, OP_SIGMOID, OP_TANH, OP_SILU, OP_GELU, OP_SOFTMAX };

typedef struct xop {
    enum op_kind kind;
    char name[64];       /* "1.linear" */
    const char *format;  /* a linear layer's storage in the model */
    int64_t in, out;     /* features */
    int index;           /* the layer index (sp_model_layer) */
    /* linear */
    bool csr, bias;
    float *w, *b;        /* dense (out x in) weight and bias (owned) */
    sp_mask *keep;       /* the stored entries of a sparse layer (owned), NULL for dense */
    int64_t nnz;         /* stored entries (out * in for dense) */
    int64_t npan;        /* CSR: 0 for one row pointer per row and column indices of the size
                          * in needs; else the columns split into npan panels of 256, one
                          * pointer per (row, panel) and u8 indices within the panel */
} xop;

typedef struct xplan {
    xop *op;
    int nop;
    int64_t inputs, classes;
    sp_shape in;
    float scale;
    bool int8, need_math;
    int64_t buf[2];      /* floats each static buffer must hold */
} xplan;

static void plan_free(xplan *p) {
    for (int i = 0; i < p->nop; i++) {
        free(p->op[i].w);
        free(p->op[i].b);
        sp_mask_free(p->op[i].keep);
    }
    free(p->op);
    memset(p, 0, sizeof *p);
}

/* Dense matrices larger than this are refused: no microcontroller holds one, and the exporter
 * reads every layer as a dense matrix. */
#define EXPORT_MAX_DENSE ((int64_t)1 << 26)

static const char *idx_type(int64_t maxval) {
    if (maxval <= 255) return "uint8_t";
    if (maxval <= 65535) return "uint16_t";
    return "uint32_t";
}
static int64_t idx_size(int64_t maxval) { return maxval <= 255 ? 1 : maxval <= 65535 ? 2 : 4; }

/* Columns per panel of the panelled CSR: its column indices fit a byte. */
#define EXPORT_PANEL 256

/* Bytes of a CSR weight in the export (pointers, column indices, values): npan = 0 one pointer
 * per row, else one per (row, panel) and byte-sized column indices. */
static int64_t csr_bytes(int64_t out, int64_t in, int64_t nnz, int64_t vbytes, int64_t npan) {
    if (npan) return (out * npan + 1) * idx_size(nnz) + nnz + nnz * vbytes;
    return (out + 1) * idx_size(nnz) + nnz * idx_size(in - 1) + nnz * vbytes;
}

/* Validates every layer and gathers the weights. SP_EUNSUPPORTED (message in err) for a layer
 * the export cannot run; other errors from the library with its message. */
static sp_status plan_build(const sp_model *m, bool int8, xplan *p, char *err, size_t nerr) {
    memset(p, 0, sizeof *p);
    p->int8 = int8;
    p->in = sp_model_in(m);
    p->inputs = p->in.c * p->in.h * p->in.w;
    p->classes = sp_model_classes(m);
    p->scale = sp_model_input_scale(m);
    const int n = sp_model_nlayers(m);
    p->op = calloc((size_t)(n > 0 ? n : 1), sizeof *p->op);
    if (!p->op) {
        snprintf(err, nerr, "out of memory");
        return SP_ENOMEM;
    }
    int where = -1; /* the buffer holding the current activations: -1 the input, else 0 or 1 */
    int64_t width = p->inputs;
    for (int i = 0; i < n; i++) {
        sp_layer_info li;
        sp_status st = sp_model_layer(m, i, &li);
        if (st != SP_OK) {
            snprintf(err, nerr, "%s", sp_last_error());
            return st;
        }
        xop *o = &p->op[p->nop];
        snprintf(o->name, sizeof o->name, "%s", li.name);
        o->index = i;
        o->in = li.in.c * li.in.h * li.in.w;
        o->out = li.out.c * li.out.h * li.out.w;
        const char *k = li.kind;
        if (!strcmp(k, "flatten") || !strcmp(k, "dropout")) continue; /* no data move */
        if (!strcmp(k, "linear")) {
            if (li.in.h * li.in.w != 1) {
                snprintf(err, nerr, "layer %s: a linear layer over a %lldx%lldx%lld input (per "
                         "position) is not supported; put a flatten before it", li.name,
                         (long long)li.in.c, (long long)li.in.h, (long long)li.in.w);
                return SP_EUNSUPPORTED;
            }
            if (li.out.c > EXPORT_MAX_DENSE / (li.in.c > 0 ? li.in.c : 1)) {
                snprintf(err, nerr, "layer %s: %lld x %lld is too large for a microcontroller "
                         "export (more than %lld weights)", li.name, (long long)li.out.c,
                         (long long)li.in.c, (long long)EXPORT_MAX_DENSE);
                return SP_EUNSUPPORTED;
            }
            o->kind = OP_LINEAR;
            o->format = li.format;
            o->in = li.in.c;
            o->out = li.out.c;
            o->bias = li.dense_params > o->out * o->in;
            o->w = malloc(sizeof(float) * (size_t)(o->out * o->in + 1));
            o->b = malloc(sizeof(float) * (size_t)(o->out + 1));
            if (!o->w || !o->b) {
                snprintf(err, nerr, "out of memory for layer %s", li.name);
                return SP_ENOMEM;
            }
            if ((st = sp_model_layer_get_weight(m, i, o->w, o->b)) != SP_OK ||
                (st = sp_model_layer_pattern(m, i, &o->keep)) != SP_OK) {
                snprintf(err, nerr, "%s", sp_last_error());
                return st;
            }
            for (int64_t e = 0; e < o->out * o->in; e++)
                if (!isfinite(o->w[e])) {
                    snprintf(err, nerr, "layer %s: weight (%lld, %lld) is not finite", li.name,
                             (long long)(e / o->in), (long long)(e % o->in));
                    return SP_EINVAL;
                }
            for (int64_t r = 0; o->bias && r < o->out; r++)
                if (!isfinite(o->b[r])) {
                    snprintf(err, nerr, "layer %s: bias %lld is not finite", li.name,
                             (long long)r);
                    return SP_EINVAL;
                }
            o->nnz = o->out * o->in;
            if (o->keep) {
                int64_t nnz = 0;
                for (int64_t r = 0; r < o->out; r++)
                    for (int64_t c = 0; c < o->in; c++) nnz += sp_mask_get(o->keep, r, c);
                const int64_t vb = int8 ? 1 : 4;
                if (nnz > 0xffffffffLL) {
                    snprintf(err, nerr, "layer %s: %lld entries", li.name, (long long)nnz);
                    return SP_EUNSUPPORTED;
                }
                /* CSR unless dense storage is no larger (a mask layer at low sparsity); with
                 * more than 256 inputs panelled if that is smaller (u8 instead of u16 indices
                 * against more pointers: at 90% sparsity and int8 values, a third less) */
                const int64_t npan = (o->in + EXPORT_PANEL - 1) / EXPORT_PANEL;
                const int64_t plain = csr_bytes(o->out, o->in, nnz, vb, 0);
                const int64_t panels = o->in > EXPORT_PANEL ? csr_bytes(o->out, o->in, nnz, vb, npan)
                                                            : plain;
                if ((plain < panels ? plain : panels) < o->out * o->in * vb) {
                    o->csr = true;
                    o->nnz = nnz;
                    o->npan = panels < plain ? npan : 0;
                }
            }
        } else if (!strcmp(k, "relu")) o->kind = OP_RELU;
        else if (!strcmp(k, "sigmoid")) o->kind = OP_SIGMOID;
        else if (!strcmp(k, "tanh")) o->kind = OP_TANH;
        else if (!strcmp(k, "silu")) o->kind = OP_SILU;
        else if (!strcmp(k, "gelu")) o->kind = OP_GELU;
        else if (!strcmp(k, "softmax")) {
            if (li.in.h * li.in.w != 1) {
                snprintf(err, nerr, "layer %s: softmax over a %lldx%lldx%lld input is not "
                         "supported (only over a flat vector)", li.name, (long long)li.in.c,
                         (long long)li.in.h, (long long)li.in.w);
                return SP_EUNSUPPORTED;
            }
            o->kind = OP_SOFTMAX;
        } else {
            snprintf(err, nerr, "layer %s (%s) is not supported by export-c, which handles "
                     "MLPs: flatten, linear, relu, sigmoid, tanh, silu, gelu, softmax, dropout",
                     li.name, k);
            return SP_EUNSUPPORTED;
        }
        if (o->kind != OP_LINEAR && o->kind != OP_RELU) p->need_math = true;
        if (o->in != width) { /* cannot happen for a model that builds; checked all the same */
            snprintf(err, nerr, "layer %s: input of %lld features after %lld", li.name,
                     (long long)o->in, (long long)width);
            return SP_EINVAL;
        }
        /* where the output goes: a linear layer writes the other buffer; an element-wise one
         * works in place, unless the activations are still the caller's input */
        int dst = o->kind == OP_LINEAR ? (where == 0 ? 1 : 0) : (where < 0 ? 0 : where);
        if (p->buf[dst] < o->out) p->buf[dst] = o->out;
        where = dst;
        width = o->out;
        p->nop++;
    }
    if (width != p->classes) {
        snprintf(err, nerr, "the model's output has %lld features for %lld classes",
                 (long long)width, (long long)p->classes);
        return SP_EUNSUPPORTED;
    }
    if (p->nop == 0) {
        snprintf(err, nerr, "the model has no layer that computes anything");
        return SP_EUNSUPPORTED;
    }
    return SP_OK;
}

/* ---- int8 weights ----------------------------------------------------------------------------- */

/* The weight quantization of --int8: the library's 8-bit one (sp_qcsr, sp_quant_value), per
 * output channel (row r of the (rows x cols) matrix w): scale_r = max_j |w_rj| / 127 over the
 * stored entries (keep, or all when NULL), q_rj = round-half-even(w_rj / scale_r) in
 * [-127, 127]. A row of zeros gets scale 0 and q 0. */
static void export_quantize_rows(const float *w, int64_t rows, int64_t cols, const sp_mask *keep,
                                 int8_t *q, float *scale) {
    for (int64_t r = 0; r < rows; r++) {
        float mx = 0.0f;
        for (int64_t c = 0; c < cols; c++)
            if (!keep || sp_mask_get(keep, r, c)) mx = fmaxf(mx, fabsf(w[r * cols + c]));
        scale[r] = mx / 127.0f;
        for (int64_t c = 0; c < cols; c++)
            q[r * cols + c] = (int8_t)sp_quant_value(w[r * cols + c], scale[r], 127);
    }
}

/* ---- emitting C ------------------------------------------------------------------------------- */

static void emit_floats(xbuf *b, const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        xprintf(b, i % 8 == 0 ? "\n    " : " ");
        xfloat(b, v[i]);
        xprintf(b, ",");
    }
    xprintf(b, "\n};\n");
}
static void emit_ints(xbuf *b, const int64_t *v, int64_t n, int per_line) {
    for (int64_t i = 0; i < n; i++) {
        xprintf(b, i % per_line == 0 ? "\n    " : " ");
        xprintf(b, "%lld,", (long long)v[i]);
    }
    xprintf(b, "\n};\n");
}

/* The arrays of linear layer o (number j among the linear layers): l<j>_w (dense) or l<j>_rows,
 * l<j>_cols, l<j>_w (CSR values), l<j>_scale (int8), l<j>_b (bias). Returns the flash bytes. */
static int64_t emit_linear_arrays(xbuf *b, const char *pre, const xop *o, int j, bool int8) {
    const int64_t n = o->nnz;
    const int64_t nptr = o->csr && o->npan ? o->out * o->npan : o->out; /* pointers - 1 */
    int64_t *iv = malloc(sizeof(int64_t) * (size_t)((n > nptr ? n : nptr) + 1));
    float *fv = malloc(sizeof(float) * (size_t)(n + 1));
    int8_t *q = int8 ? malloc((size_t)(o->out * o->in + 1)) : NULL;
    float *scale = int8 ? malloc(sizeof(float) * (size_t)(o->out + 1)) : NULL;
    if (!iv || !fv || (int8 && (!q || !scale))) {
        b->oom = true;
        free(iv), free(fv), free(q), free(scale);
        return 0;
    }
    int64_t bytes = 0;
    if (int8) export_quantize_rows(o->w, o->out, o->in, o->csr ? o->keep : NULL, q, scale);
    if (o->csr) {
        /* rows[r] (or rows[r * npan + q], panel q) starts the entries of the row (segment) */
        const int64_t seg = o->npan ? o->npan : 1, width = o->npan ? EXPORT_PANEL : o->in;
        xprintf(b, "static const %s %s_l%d_rows[%lld] = {", idx_type(n), pre, j,
                (long long)(nptr + 1));
        int64_t e = 0;
        iv[0] = 0;
        for (int64_t r = 0; r < o->out; r++)
            for (int64_t g = 0; g < seg; g++) {
                for (int64_t c = g * width; c < o->in && c < (g + 1) * width; c++)
                    e += sp_mask_get(o->keep, r, c);
                iv[r * seg + g + 1] = e;
            }
        emit_ints(b, iv, nptr + 1, 16);
        xprintf(b, "static const %s %s_l%d_cols[%lld] = {", idx_type(width - 1), pre, j,
                (long long)(n > 0 ? n : 1));
        e = 0;
        for (int64_t r = 0; r < o->out; r++)
            for (int64_t c = 0; c < o->in; c++)
                if (sp_mask_get(o->keep, r, c)) {
                    iv[e] = c % width;
                    fv[e] = int8 ? (float)q[r * o->in + c] : o->w[r * o->in + c];
                    e++;
                }
        if (n == 0) iv[0] = 0, fv[0] = 0.0f;
        emit_ints(b, iv, n > 0 ? n : 1, 16);
        bytes += (nptr + 1) * idx_size(n) + (n > 0 ? n : 1) * idx_size(width - 1);
    }
    const int64_t nv = o->csr ? (n > 0 ? n : 1) : o->out * o->in;
    if (int8) {
        xprintf(b, "static const int8_t %s_l%d_w[%lld] = {", pre, j, (long long)nv);
        for (int64_t e = 0; e < nv; e++) iv[e] = o->csr ? (int64_t)fv[e] : (int64_t)q[e];
        emit_ints(b, iv, nv, 16);
        xprintf(b, "static const float %s_l%d_scale[%lld] = {", pre, j, (long long)o->out);
        emit_floats(b, scale, o->out);
        bytes += nv + 4 * o->out;
    } else {
        xprintf(b, "static const float %s_l%d_w[%lld] = {", pre, j, (long long)nv);
        emit_floats(b, o->csr ? fv : o->w, nv);
        bytes += 4 * nv;
    }
    if (o->bias) {
        xprintf(b, "static const float %s_l%d_b[%lld] = {", pre, j, (long long)o->out);
        emit_floats(b, o->b, o->out);
        bytes += 4 * o->out;
    }
    free(iv), free(fv), free(q), free(scale);
    return bytes;
}

/* The loop of linear layer j: y = W x (+ b), x and y expressions naming float arrays. */
static void emit_linear_code(xbuf *b, const char *pre, const xop *o, int j, bool int8,
                             const char *x, const char *y) {
    const char *cast = int8 ? "(float)" : "";
    xprintf(b, "    for (int32_t i = 0; i < %lld; i++) {\n", (long long)o->out);
    xprintf(b, "        float acc = 0.0f;\n");
    if (o->csr && o->npan) {
        /* panel by panel: the same entries in the same (ascending column) order */
        const long long np = (long long)o->npan;
        xprintf(b, "        for (int32_t q = 0; q < %lld; q++) {\n", np);
        xprintf(b, "            const float *xq = %s + %d * q;\n", x, EXPORT_PANEL);
        xprintf(b, "            const int32_t s = %lld * i + q;\n", np);
        xprintf(b, "            for (int32_t k = (int32_t)%s_l%d_rows[s]; k < (int32_t)%s_l%d_rows[s + 1]; "
                "k++)\n", pre, j, pre, j);
        xprintf(b, "                acc += %s%s_l%d_w[k] * xq[%s_l%d_cols[k]];\n", cast, pre, j,
                pre, j);
        xprintf(b, "        }\n");
    } else if (o->csr) {
        xprintf(b, "        for (int32_t k = (int32_t)%s_l%d_rows[i]; k < (int32_t)%s_l%d_rows[i + 1]; "
                "k++)\n", pre, j, pre, j);
        xprintf(b, "            acc += %s%s_l%d_w[k] * %s[%s_l%d_cols[k]];\n", cast, pre, j, x,
                pre, j);
    } else {
        xprintf(b, "        const %s *w = %s_l%d_w + (int32_t)%lld * i;\n",
                int8 ? "int8_t" : "float", pre, j, (long long)o->in);
        xprintf(b, "        for (int32_t k = 0; k < %lld; k++) acc += %sw[k] * %s[k];\n",
                (long long)o->in, cast, x);
    }
    if (int8) xprintf(b, "        acc *= %s_l%d_scale[i];\n", pre, j);
    if (o->bias) xprintf(b, "        %s[i] = acc + %s_l%d_b[i];\n", y, pre, j);
    else xprintf(b, "        %s[i] = acc;\n", y);
    xprintf(b, "    }\n");
}

static void emit_elementwise(xbuf *b, const xop *o, const char *x, const char *y) {
    const long long n = (long long)o->out;
    switch (o->kind) {
    case OP_RELU:
        xprintf(b, "    for (int32_t i = 0; i < %lld; i++) %s[i] = %s[i] < 0.0f ? 0.0f : %s[i];\n",
                n, y, x, x);
        break;
    case OP_SIGMOID:
        xprintf(b, "    for (int32_t i = 0; i < %lld; i++) %s[i] = 1.0f / (1.0f + expf(-%s[i]));\n",
                n, y, x);
        break;
    case OP_TANH:
        xprintf(b, "    for (int32_t i = 0; i < %lld; i++) %s[i] = tanhf(%s[i]);\n", n, y, x);
        break;
    case OP_SILU:
        xprintf(b, "    for (int32_t i = 0; i < %lld; i++) %s[i] = %s[i] * (1.0f / (1.0f + "
                "expf(-%s[i])));\n", n, y, x, x);
        break;
    case OP_GELU:
        xprintf(b, "    for (int32_t i = 0; i < %lld; i++)\n        %s[i] = 0.5f * %s[i] * (1.0f + "
                "erff(%s[i] * ", n, y, x, x);
        xfloat(b, (float)M_SQRT1_2);
        xprintf(b, "));\n");
        break;
    case OP_SOFTMAX:
        /* sparrow's order: the maximum, the exponentials, their sum from the first, 1 / sum */
        xprintf(b, "    {\n        float mx = %s[0], s = 0.0f;\n", x);
        xprintf(b, "        for (int32_t i = 1; i < %lld; i++) mx = %s[i] > mx ? %s[i] : mx;\n",
                n, x, x);
        xprintf(b, "        for (int32_t i = 0; i < %lld; i++) %s[i] = expf(%s[i] - mx);\n", n, y,
                x);
        xprintf(b, "        for (int32_t i = 0; i < %lld; i++) s += %s[i];\n", n, y);
        xprintf(b, "        const float inv = 1.0f / s;\n");
        xprintf(b, "        for (int32_t i = 0; i < %lld; i++) %s[i] *= inv;\n    }\n", n, y);
        break;
    default:
        break;
    }
}

static void upper(char *dst, const char *src, size_t n) {
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++)
        dst[i] = (char)(src[i] >= 'a' && src[i] <= 'z' ? src[i] - 'a' + 'A' : src[i]);
    dst[i] = '\0';
}

typedef struct xsizes {
    int64_t flash, ram;
} xsizes;

static void emit_all(const xplan *p, const sp_model *m, const char *pre, const char *model_path,
                     xbuf *h, xbuf *c, xsizes *sz) {
    char PRE[80];
    upper(PRE, pre, sizeof PRE);
    const char *base = strrchr(model_path, '/') ? strrchr(model_path, '/') + 1 : model_path;
    const int64_t ram = 4 * (p->buf[0] + p->buf[1]);
    /* ---- the source first: it counts the flash bytes the header states ---- */
    xprintf(c, "/*\n * %s.c - generated by `sparrow export-c` (sparrow %s) from %s. Do not "
            "edit;\n * %s.h documents the API. Weights: %s.\n */\n", pre, sp_version(), base,
            pre, p->int8 ? "int8 per output channel, float activations" : "float32");
    /* sparrow rounds every product and every sum; a fused multiply-add (the M4F has one,
     * x86-64 builds do not use it by default) would round once and give other bits */
    xprintf(c, "/* no fused multiply-add: every product and sum rounded, as in sparrow, for the "
            "same\n * bits on every target (GCC contracts a * b + c by default outside ISO C "
            "modes) */\n#if defined(__clang__)\n#pragma STDC FP_CONTRACT OFF\n#elif "
            "defined(__GNUC__)\n#pragma GCC optimize(\"fp-contract=off\")\n#endif\n\n");
    xprintf(c, "#include <stdint.h>\n");
    if (p->need_math) xprintf(c, "#include <math.h>\n");
    xprintf(c, "\n#include \"%s.h\"\n\n", pre);
    int64_t flash = 0;
    int j = 0;
    for (int i = 0; i < p->nop; i++) {
        const xop *o = &p->op[i];
        if (o->kind != OP_LINEAR) continue;
        if (o->csr)
            xprintf(c, "/* %s: %lld x %lld, %s in the model, here CSR%s: %lld entries (%.1f%% "
                    "zeros) */\n", o->name, (long long)o->out, (long long)o->in, o->format,
                    o->npan ? " in panels of 256 columns (one pointer per row and panel, u8 "
                    "columns within the panel)" : "",
                    (long long)o->nnz, 100.0 * (1.0 - (double)o->nnz / (double)(o->out * o->in)));
        else
            xprintf(c, "/* %s: %lld x %lld, %s in the model, here dense */\n", o->name,
                    (long long)o->out, (long long)o->in, o->format);
        flash += emit_linear_arrays(c, pre, o, ++j, p->int8);
        xprintf(c, "\n");
    }
    xprintf(c, "/* the activations: each layer reads one buffer and writes the other */\n");
    for (int k = 0; k < 2; k++)
        if (p->buf[k] > 0) xprintf(c, "static float %s_buf%d[%lld];\n", pre, k,
                                   (long long)p->buf[k]);
    xprintf(c, "\nint %s_predict(const float *input, float *logits_out)\n{\n", pre);
    xprintf(c, "    if (!input) return -1;\n");
    int where = -1;
    j = 0;
    char xs[96], ys[96];
    for (int i = 0; i < p->nop; i++) {
        const xop *o = &p->op[i];
        int dst = o->kind == OP_LINEAR ? (where == 0 ? 1 : 0) : (where < 0 ? 0 : where);
        if (where < 0) snprintf(xs, sizeof xs, "input");
        else snprintf(xs, sizeof xs, "%s_buf%d", pre, where);
        snprintf(ys, sizeof ys, "%s_buf%d", pre, dst);
        xprintf(c, "    /* %s */\n", o->name);
        if (o->kind == OP_LINEAR) emit_linear_code(c, pre, o, ++j, p->int8, xs, ys);
        else emit_elementwise(c, o, xs, ys);
        where = dst;
    }
    snprintf(xs, sizeof xs, "%s_buf%d", pre, where);
    xprintf(c, "    /* the class: the first largest logit, as sparrow's evaluation picks it */\n");
    xprintf(c, "    int32_t best = 0;\n");
    xprintf(c, "    for (int32_t i = 1; i < %lld; i++)\n        if (%s[i] > %s[best]) best = i;\n",
            (long long)p->classes, xs, xs);
    xprintf(c, "    if (logits_out)\n        for (int32_t i = 0; i < %lld; i++) logits_out[i] = "
            "%s[i];\n", (long long)p->classes, xs);
    xprintf(c, "    return (int)best;\n}\n");

    /* ---- the header ---- */
    xprintf(h, "/*\n * %s.h - generated by `sparrow export-c` (sparrow %s) from %s. Do not edit.\n"
            " *\n", pre, sp_version(), base);
    xprintf(h, " * The model (sparrow config):\n");
    const char *cfg = sp_model_config(m);
    while (cfg && *cfg) {
        const char *nl = strchr(cfg, '\n');
        int len = nl ? (int)(nl - cfg) : (int)strlen(cfg);
        if (len > 0) {
            xprintf(h, " *     ");
            for (int k = 0; k < len; k++) {
                if (cfg[k] == '/' && k > 0 && cfg[k - 1] == '*') xprintf(h, " "); /* no "*" "/" */
                xprintf(h, "%c", cfg[k]);
            }
            xprintf(h, "\n");
        }
        cfg += len + (nl ? 1 : 0);
    }
    xprintf(h, " *\n"
            " * int %s_predict(const float *input, float *logits_out)\n"
            " *   input: %s_INPUTS floats, one sample as sparrow feeds it: feature-major, for an\n"
            " *   image of C channels, H rows, W columns the value at (c, y, x) at index\n"
            " *   (c * H + y) * W + x, each raw value times %s_INPUT_SCALE (the model's input\n"
            " *   scale: a u8 pixel p becomes (float)p * %s_INPUT_SCALE, computed in float).\n"
            " *   logits_out: NULL, or room for %s_CLASSES floats, the model's outputs.\n"
            " *   Returns the class, the index of the first largest output (-1 if input is NULL).\n"
            " *   Not reentrant: the activations live in static buffers (%s_RAM_BYTES bytes).\n"
            " *\n", pre, PRE, PRE, PRE, PRE, PRE);
    if (p->int8)
        xprintf(h, " * Weights: int8, symmetric per output channel (scale_i = max_j |w_ij| / 127,\n"
                " * q_ij = round-half-even(w_ij / scale_i)); activations float32; each output is the float\n"
                " * sum of (float)q_ij * x_j over j in ascending order, times scale_i, plus the\n"
                " * bias (no int32 accumulation), with no fused multiply-add (see %s.c).\n", pre);
    else
        xprintf(h, " * Weights: float32. Each output is the float sum of w_ij * x_j over the stored\n"
                " * j in ascending order, plus the bias: sparrow's reference order, with no\n"
                " * fused multiply-add (%s.c turns contraction off for GCC and clang; do not\n"
                " * build it with -ffast-math), so the outputs are the same bits on every target.\n",
                pre);
    xprintf(h, " * Sparse layers are CSR arrays, dense layers dense (see %s.c).%s\n */\n", pre,
            p->need_math ? "\n * Uses expf/tanhf/erff from <math.h>: link with -lm." : "");
    xprintf(h, "#ifndef %s_SPARROW_EXPORT_H\n#define %s_SPARROW_EXPORT_H\n\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n",
            PRE, PRE);
    xprintf(h, "#define %s_INPUTS %lld\n", PRE, (long long)p->inputs);
    xprintf(h, "#define %s_CLASSES %lld\n", PRE, (long long)p->classes);
    xprintf(h, "/* the input's shape (channels, rows, columns) */\n");
    xprintf(h, "#define %s_INPUT_C %lld\n#define %s_INPUT_H %lld\n#define %s_INPUT_W %lld\n", PRE,
            (long long)p->in.c, PRE, (long long)p->in.h, PRE, (long long)p->in.w);
    xprintf(h, "#define %s_INPUT_SCALE ", PRE);
    xfloat(h, p->scale);
    xprintf(h, "\n/* 1 if the weights are int8 */\n#define %s_INT8 %d\n", PRE, p->int8 ? 1 : 0);
    xprintf(h, "/* bytes of const weight arrays (flash) and of the activation buffers (RAM) */\n");
    xprintf(h, "#define %s_WEIGHT_BYTES %lld\n#define %s_RAM_BYTES %lld\n\n", PRE,
            (long long)flash, PRE, (long long)ram);
    xprintf(h, "int %s_predict(const float *input, float *logits_out);\n\n", pre);
    xprintf(h, "#ifdef __cplusplus\n}\n#endif\n\n#endif /* %s_SPARROW_EXPORT_H */\n", PRE);
    sz->flash = flash;
    sz->ram = ram;
}

/* ---- files ------------------------------------------------------------------------------------ */

/* Writes b to a new temporary file next to path; *tmp gets its (owned) name. 0, or errno. */
static int write_tmp(const char *path, const xbuf *b, char **tmp) {
    size_t n = strlen(path) + 32;
    *tmp = malloc(n);
    if (!*tmp) return ENOMEM;
    snprintf(*tmp, n, "%s.tmp%ld", path, (long)getpid());
    int fd = open(*tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        int e = errno;
        free(*tmp);
        *tmp = NULL;
        return e;
    }
    int err = 0;
    for (size_t off = 0; off < b->len && !err;) {
        ssize_t w = write(fd, b->p + off, b->len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) err = w < 0 ? errno : EIO;
        else off += (size_t)w;
    }
    if (!err && fsync(fd) != 0) err = errno;
    if (close(fd) != 0 && !err) err = errno;
    if (err) {
        unlink(*tmp);
        free(*tmp);
        *tmp = NULL;
    }
    return err;
}

static bool valid_prefix(const char *s) {
    if (!s || !*s || strlen(s) > 48) return false;
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return false;
    for (const char *q = s; *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
              *q == '_'))
            return false;
    return true;
}

int cmd_export_c(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *name = "model";
    bool int8 = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            export_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--int8")) {
            int8 = true;
            continue;
        }
        if (strcmp(a, "--model") && strcmp(a, "--out") && strcmp(a, "--name")) {
            fprintf(stderr, "sparrow export-c: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sparrow export-c: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--out")) out = v;
        else name = v;
    }
    if (!model || !out) {
        fprintf(stderr, "sparrow export-c: %s is required (see --help)\n",
                !model ? "--model" : "--out");
        return 2;
    }
    if (!valid_prefix(name)) {
        fprintf(stderr, "sparrow export-c: --name expects a C identifier of at most 48 "
                        "characters ([A-Za-z_][A-Za-z0-9_]*), got '%s'\n", name);
        return 2;
    }
    int rc = 1;
    sp_checkpoint ck = {0};
    xplan plan = {0};
    xbuf h = {0}, c = {0};
    char *path_h = NULL, *path_c = NULL, *tmp_h = NULL, *tmp_c = NULL;
    char err[512];
    if (sp_checkpoint_load(model, &ck) != SP_OK) return cli_fail("--model");
    sp_status st = plan_build(ck.model, int8, &plan, err, sizeof err);
    if (st != SP_OK) {
        fprintf(stderr, "sparrow export-c: %s: %s\n", sp_status_name(st), err);
        goto done;
    }
    xsizes sz;
    emit_all(&plan, ck.model, name, model, &h, &c, &sz);
    if (h.oom || c.oom) {
        fprintf(stderr, "sparrow export-c: out of memory writing the C source\n");
        goto done;
    }
    struct stat sb;
    if (stat(out, &sb) != 0) {
        if (errno != ENOENT || mkdir(out, 0777) != 0) {
            fprintf(stderr, "sparrow export-c: --out: cannot create directory %s: %s\n", out,
                    strerror(errno));
            goto done;
        }
    } else if (!S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "sparrow export-c: --out: %s is not a directory\n", out);
        goto done;
    }
    size_t n = strlen(out) + strlen(name) + 8;
    path_h = malloc(n);
    path_c = malloc(n);
    if (!path_h || !path_c) goto done;
    snprintf(path_h, n, "%s/%s.h", out, name);
    snprintf(path_c, n, "%s/%s.c", out, name);
    int e = write_tmp(path_h, &h, &tmp_h);
    const char *failed = path_h;
    if (!e) {
        e = write_tmp(path_c, &c, &tmp_c);
        failed = path_c;
    }
    if (!e && rename(tmp_h, path_h) != 0) e = errno, failed = path_h;
    if (!e && rename(tmp_c, path_c) != 0) e = errno, failed = path_c;
    if (e) {
        fprintf(stderr, "sparrow export-c: --out: cannot write %s: %s\n", failed, strerror(e));
        if (tmp_h) unlink(tmp_h);
        if (tmp_c) unlink(tmp_c);
        goto done;
    }
    int nlin = 0, ncsr = 0;
    for (int i = 0; i < plan.nop; i++) {
        nlin += plan.op[i].kind == OP_LINEAR;
        ncsr += plan.op[i].kind == OP_LINEAR && plan.op[i].csr;
    }
    printf("wrote %s and %s: %d linear layers (%d CSR, %d dense), %s weights: %lld bytes of "
           "weights, %lld bytes of activation buffers\n", path_c, path_h, nlin, ncsr, nlin - ncsr,
           int8 ? "int8" : "float32", (long long)sz.flash, (long long)sz.ram);
    rc = 0;
done:
    free(h.p);
    free(c.p);
    free(path_h);
    free(path_c);
    free(tmp_h);
    free(tmp_c);
    plan_free(&plan);
    sp_checkpoint_free(&ck);
    return rc;
}
