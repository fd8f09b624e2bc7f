/*
 * qmodel.c - quantizing a whole model: every linear layer becomes a qlinear layer (src/nn/
 * qlinear.c) with int8 or 4-bit weights that keep its sparsity pattern, and, given calibration
 * inputs, a static activation scale per layer.
 */
#include <stdio.h>
#include <string.h>

#include "sparrow/quant.h"

#include "../core/internal.h"
#include "../nn/seq.h"
#include "../prune/internal.h"

/* The config line of layer i's quantized replacement, "=qlinear ..." (the '=' asks
 * sp_prune_rewrite_config to replace the whole line), or NULL with *st set. */
static char *qline(const sp_layer_info *li, bool has_bias, const sp_quant_opts *o, sp_status *st) {
    char *s = sp_alloc(160);
    if (!s) {
        *st = SP_ENOMEM;
        return NULL;
    }
    int n = snprintf(s, 160, "=qlinear out=%lld bits=%d", (long long)li->out.c, o->bits);
    if (o->bits == 4) n += snprintf(s + n, 160 - (size_t)n, " group=%d", o->group);
    if (!strcmp(li->format, "dense")) n += snprintf(s + n, 160 - (size_t)n, " layout=dense");
    if (!has_bias) snprintf(s + n, 160 - (size_t)n, " bias=0");
    return s;
}

/* True if linear layer l has a bias: its config line does not say bias=0. */
static bool has_bias(const sp_layer *l) {
    char line[512];
    l->vt->describe(l, line, sizeof line);
    return strstr(line, " bias=0") == NULL;
}

/* Layer i of m quantized: CSR layers straight from their structure (no out x in detour: a
 * layer too large for a dense copy stays so), every other storage through its dense weight
 * and pattern. Returns owned *q and the bias in bias (out floats). */
static sp_status quantize_layer(const sp_model *m, int i, const sp_layer_info *li,
                                const sp_quant_opts *o, float *bias, sp_qcsr **q) {
    const int64_t out = li->out.c, in = li->in.c;
    const int group = o->bits == 4 ? o->group : 0;
    const sp_csr *csr = sp_model_layer_csr(m, i);
    sp_status st;
    if (csr) {
        /* the bias follows the values in the arena */
        const sp_layer *l = sp_model_layer_ptr(m, i);
        if (l->nparam > csr->nnz) memcpy(bias, l->param + csr->nnz, sizeof(float) * (size_t)out);
        else memset(bias, 0, sizeof(float) * (size_t)out);
        return sp_qcsr_from_csr(csr, o->bits, group, q);
    }
    size_t bytes;
    if (!sp_bytes(out * in, sizeof(float), &bytes)) return SP_EOVERFLOW;
    float *w = sp_alloc(bytes);
    sp_mask *mask = NULL;
    if (!w) return SP_ENOMEM;
    st = sp_model_layer_get_weight(m, i, w, bias);
    if (st == SP_OK) st = sp_model_layer_pattern(m, i, &mask);
    if (st == SP_OK)
        st = sp_qcsr_from_dense(out, in, w, in, mask, mask == NULL, o->bits, group, q);
    sp_mask_free(mask);
    sp_free(w);
    return st;
}

/* Runs the calibration inputs through qm with every qlinear layer recording its inputs, then
 * fixes their static activation scales. */
static sp_status calibrate(sp_model *qm, const sp_quant_opts *o) {
    const int n = sp_model_nlayers(qm);
    const int64_t feat = sp_shape_numel(sp_model_in(qm));
    const int64_t nb = SP_MIN(o->calib_batch > 0 ? o->calib_batch : 256, o->calib_n);
    size_t bytes;
    if (!sp_bytes(feat * nb, sizeof(float), &bytes)) return SP_EOVERFLOW;
    float *x = sp_alloc(bytes);
    if (!x) return SP_ENOMEM;
    for (int i = 0; i < n; i++)
        if (sp_qlinear_is(sp_model_layer_ptr(qm, i))) sp_qlinear_calibrate(sp_model_layer_ptr(qm, i), true);
    sp_status st = SP_OK;
    for (int64_t s = 0; s < o->calib_n && st == SP_OK; s += nb) {
        const int64_t b = SP_MIN(nb, o->calib_n - s);
        for (int64_t f = 0; f < feat; f++)
            memcpy(x + f * b, o->calib_x + f * o->calib_n + s, sizeof(float) * (size_t)b);
        const float *y;
        st = sp_model_forward(qm, x, b, false, &y);
    }
    for (int i = 0; i < n; i++)
        if (sp_qlinear_is(sp_model_layer_ptr(qm, i))) sp_qlinear_calibrate(sp_model_layer_ptr(qm, i), false);
    sp_free(x);
    return st;
}

sp_status sp_model_quantize(const sp_model *m, const sp_quant_opts *opts, sp_model **out) {
    if (!m || !opts || !out) return sp_fail(SP_EINVAL, "model_quantize: NULL argument");
    *out = NULL;
    sp_quant_opts o = *opts;
    if (o.bits != 8 && o.bits != 4)
        return sp_fail(SP_EINVAL, "model_quantize: bits %d is not 8 or 4", o.bits);
    if (o.group == 0) o.group = 32;
    if (o.bits == 4 && (o.group < 1 || o.group > 4096))
        return sp_fail(SP_EINVAL, "model_quantize: group %d is not in [1, 4096]", o.group);
    if (o.calib_x && o.calib_n < 1)
        return sp_fail(SP_EINVAL, "model_quantize: %lld calibration samples",
                       (long long)o.calib_n);
    const int n = sp_model_nlayers(m);
    char **opt = sp_calloc((size_t)n + 1, sizeof *opt);
    sp_qcsr **q = sp_calloc((size_t)n + 1, sizeof *q);
    float **bias = sp_calloc((size_t)n + 1, sizeof *bias);
    char *cfg = NULL;
    sp_model *qm = NULL;
    sp_status st = SP_ENOMEM;
    int nq = 0;
    if (!opt || !q || !bias) goto done;
    for (int i = 0; i < n; i++) {
        sp_layer_info li;
        if ((st = sp_model_layer(m, i, &li)) != SP_OK) goto done;
        if (strcmp(li.kind, "linear") != 0) continue;
        if (!(opt[i] = qline(&li, has_bias(sp_model_layer_ptr(m, i)), &o, &st))) goto done;
        if (!(bias[i] = sp_alloc(sizeof(float) * (size_t)li.out.c))) {
            st = SP_ENOMEM;
            goto done;
        }
        if ((st = quantize_layer(m, i, &li, &o, bias[i], &q[i])) != SP_OK) goto done;
        nq++;
    }
    if (nq == 0) {
        st = sp_fail(SP_EINVAL, "model_quantize: the model has no linear layer to quantize");
        goto done;
    }
    if ((st = sp_prune_rewrite_config(sp_model_config(m), opt, n, &cfg)) != SP_OK) goto done;
    if ((st = sp_model_new(cfg, sp_model_in(m), sp_model_classes(m), sp_model_seed(m), &qm)) !=
        SP_OK)
        goto done;
    if (sp_model_nlayers(qm) != n || sp_model_nbuffers(qm) != sp_model_nbuffers(m)) {
        st = sp_fail(SP_EINVAL, "model_quantize: the quantized config builds %d layers, not %d",
                     sp_model_nlayers(qm), n);
        goto done;
    }
    sp_model_set_input_scale(qm, sp_model_input_scale(m));
    {
        int64_t nv;
        const int32_t *voc = sp_model_vocab(m, &nv);
        if (voc && (st = sp_model_set_vocab(qm, voc, nv)) != SP_OK) goto done;
    }
    /* float layers keep their parameters; buffers (BatchNorm statistics) keep their layout,
     * linear layers having none */
    /* through each layer's own views: a mapped model (sp_model_open) has no arenas */
    for (int i = 0; i < n; i++) {
        sp_layer_info a, b;
        sp_model_layer(m, i, &a);
        sp_model_layer(qm, i, &b);
        const sp_layer *la = sp_model_layer_ptr(m, i);
        sp_layer *lb = sp_model_layer_ptr(qm, i);
        if (la->nbuffer && la->nbuffer == lb->nbuffer)
            memcpy(lb->buffer, la->buffer, sizeof(float) * (size_t)la->nbuffer);
        if (q[i]) {
            if ((st = sp_qlinear_set(sp_model_layer_ptr(qm, i), q[i], bias[i])) != SP_OK) goto done;
            q[i] = NULL;
        } else if (a.nparam != b.nparam) {
            st = sp_fail(SP_EINVAL, "model_quantize: layer %s has %lld parameters after "
                         "quantizing, %lld before", a.name, (long long)b.nparam,
                         (long long)a.nparam);
            goto done;
        } else if (a.nparam) {
            memcpy(lb->param, la->param, sizeof(float) * (size_t)a.nparam);
        }
    }
    sp_model_set_threads(qm, o.nthreads);
    if (o.calib_x && (st = calibrate(qm, &o)) != SP_OK) goto done;
    *out = qm;
    qm = NULL;
    st = SP_OK;
done:
    for (int i = 0; i < n && opt; i++) sp_free(opt[i]);
    for (int i = 0; i < n && q; i++) sp_qcsr_free(q[i]);
    for (int i = 0; i < n && bias; i++) sp_free(bias[i]);
    sp_free(opt);
    sp_free(q);
    sp_free(bias);
    sp_free(cfg);
    sp_model_free(qm);
    return st;
}
