/*
 * session.c - inference sessions (sparrow/infer.h): every buffer reserved in sp_session_new by
 * one evaluation pass of max_batch samples over zeros, so that later passes of up to max_batch
 * samples allocate nothing. sp_model_forward only reserves when the batch grows past its
 * capacity, and the warm-up pass also starts the thread pool's workers. One kind of layer
 * reserves lazily by what its input routes: a mixture of experts grows an expert's buffers to
 * the most tokens that expert has been given. A session therefore reserves every moe block for
 * all the tokens of max_batch up front (sp_moe_reserve_eval). tests/test_session.c counts the
 * allocator's calls to prove that runs make none.
 */
#include <math.h>
#include <string.h>

#include "sparrow/infer.h"

#include "../core/internal.h"
#include "seq.h"

struct sp_session {
    sp_model *m;       /* borrowed */
    int64_t max_batch;
    int nthreads;
    int64_t in_features, out_features, classes;
    float *x;          /* in_features x max_batch: the transposed, scaled input of predict */
};

/* Every moe block reserved for the most tokens it can see in a pass of max_batch samples: the
 * flat layer list is depth-first, so a block comes before the layers of its bodies, and
 * bound[i] (samples layer i can be run on) is known when layer i is reached. A residual body
 * runs on its block's batch, a moe body on up to all of its block's tokens. */
static sp_status reserve_moe(sp_model *m, int64_t max_batch) {
    const int n = sp_model_nlayers(m);
    bool any = false;
    for (int i = 0; i < n && !any; i++) any = sp_moe_is(sp_model_layer_ptr(m, i));
    if (!any) return SP_OK;
    int64_t *bound = sp_alloc(sizeof(int64_t) * (size_t)n);
    if (!bound) return SP_ENOMEM;
    for (int i = 0; i < n; i++) bound[i] = max_batch;
    sp_status st = SP_OK;
    for (int i = 0; i < n && st == SP_OK; i++) {
        sp_layer *l = sp_model_layer_ptr(m, i);
        const bool moe = sp_moe_is(l);
        int64_t tokens;
        if (!sp_mul_i64(l->in.h * l->in.w, bound[i], &tokens)) {
            st = sp_fail(SP_EOVERFLOW, "session_new: tokens of %s overflow at max_batch %lld",
                         l->name, (long long)max_batch);
            break;
        }
        for (int k = 0; k < sp_layer_nbodies(l); k++) {
            const sp_seq *body = sp_layer_body(l, k);
            for (int j = 0; j < body->n; j++) {
                const int c = body->layers[j]->index;
                if (c > i && c < n) bound[c] = moe ? tokens : bound[i];
            }
        }
        if (moe) st = sp_moe_reserve_eval(l, tokens);
    }
    sp_free(bound);
    return st;
}

sp_status sp_session_new(sp_model *m, int64_t max_batch, int nthreads, sp_session **out) {
    if (!m || !out) return sp_fail(SP_EINVAL, "session_new: NULL argument");
    *out = NULL;
    if (max_batch < 1)
        return sp_fail(SP_EINVAL, "session_new: max_batch %lld < 1", (long long)max_batch);
    const sp_shape in = sp_model_in(m), o = sp_model_out(m);
    const int64_t nin = in.c * in.h * in.w, nout = o.c * o.h * o.w;
    int64_t count;
    size_t bytes;
    if (!sp_mul_i64(nin, max_batch, &count) || !sp_bytes(count, sizeof(float), &bytes))
        return sp_fail(SP_EOVERFLOW, "session_new: input of %lld features x max_batch %lld "
                       "overflows", (long long)nin, (long long)max_batch);
    sp_session *s = sp_calloc(1, sizeof *s);
    if (!s) return SP_ENOMEM;
    s->m = m;
    s->max_batch = max_batch;
    s->nthreads = nthreads;
    s->in_features = nin;
    s->out_features = nout;
    s->classes = sp_model_classes(m);
    s->x = sp_calloc(1, bytes); /* zeros: the warm-up input */
    if (!s->x) {
        sp_session_free(s);
        return SP_ENOMEM;
    }
    const float *y;
    sp_model_set_threads(m, nthreads);
    sp_status st = sp_model_forward(m, s->x, max_batch, false, &y);
    if (st == SP_OK) st = reserve_moe(m, max_batch);
    if (st != SP_OK) {
        sp_session_free(s);
        return st;
    }
    *out = s;
    return SP_OK;
}

static sp_status check_batch(const sp_session *s, const char *who, int64_t batch) {
    if (batch < 1 || batch > s->max_batch)
        return sp_fail(SP_EINVAL, "%s: batch %lld outside [1, max_batch %lld] of the session",
                       who, (long long)batch, (long long)s->max_batch);
    return SP_OK;
}

sp_status sp_session_run(sp_session *s, const float *x, int64_t batch, const float **y) {
    if (!s || !x || !y) return sp_fail(SP_EINVAL, "session_run: NULL argument");
    sp_status st = check_batch(s, "session_run", batch);
    if (st != SP_OK) return st;
    sp_model_set_threads(s->m, s->nthreads);
    return sp_model_forward(s->m, x, batch, false, y);
}

sp_status sp_session_predict_u8(sp_session *s, const uint8_t *images, int64_t batch,
                                int32_t *classes, float *probs) {
    if (!s || !images) return sp_fail(SP_EINVAL, "session_predict_u8: NULL argument");
    sp_status st = check_batch(s, "session_predict_u8", batch);
    if (st != SP_OK) return st;
    const int64_t C = s->classes;
    if (s->out_features != C)
        return sp_fail(SP_EUNSUPPORTED, "session_predict_u8: the model gives %lld outputs per "
                       "sample, not one per class (%lld): not a classifier of whole samples",
                       (long long)s->out_features, (long long)C);
    /* x[f * batch + b] = images[b * nin + f] * scale, as sp_dataset_batch gathers it */
    const int64_t nin = s->in_features;
    const float scale = sp_model_input_scale(s->m);
    for (int64_t b = 0; b < batch; b++) {
        const uint8_t *img = images + b * nin;
        for (int64_t f = 0; f < nin; f++) s->x[f * batch + b] = (float)img[f] * scale;
    }
    const float *y;
    st = sp_session_run(s, s->x, batch, &y);
    if (st != SP_OK) return st;
    for (int64_t b = 0; b < batch; b++) {
        int64_t arg = 0;
        for (int64_t k = 1; k < C; k++)
            if (y[k * batch + b] > y[arg * batch + b]) arg = k;
        if (classes) classes[b] = (int32_t)arg;
        if (probs) {
            /* softmax in double, shifted by the largest output (NaN outputs give NaN) */
            const double top = y[arg * batch + b];
            double sum = 0.0;
            for (int64_t k = 0; k < C; k++) sum += exp((double)y[k * batch + b] - top);
            for (int64_t k = 0; k < C; k++)
                probs[b * C + k] = (float)(exp((double)y[k * batch + b] - top) / sum);
        }
    }
    return SP_OK;
}

sp_model *sp_session_model(const sp_session *s) { return s ? s->m : NULL; }
int64_t sp_session_max_batch(const sp_session *s) { return s ? s->max_batch : 0; }
int64_t sp_session_in_features(const sp_session *s) { return s ? s->in_features : 0; }
int64_t sp_session_out_features(const sp_session *s) { return s ? s->out_features : 0; }

void sp_session_free(sp_session *s) {
    if (!s) return;
    sp_free(s->x);
    sp_free(s);
}
