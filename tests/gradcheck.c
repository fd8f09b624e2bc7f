/*
 * gradcheck.c - finite-difference gradient checks (see gradcheck.h). The loss checked is
 * sum y r + sp_model_aux_loss, the objective whose gradient sp_model_backward computes.
 */
#include <math.h>
#include <stdlib.h>

#include "gradcheck.h"
#include "test.h"

static double loss_of(sp_model *m, const float *x, int64_t batch, bool train, const float *r,
                      int64_t n, sp_status *st) {
    const float *y;
    *st = sp_model_forward(m, x, batch, train, &y);
    if (*st != SP_OK) return 0.0;
    double l = 0.0;
    for (int64_t i = 0; i < n; i++) l += (double)y[i] * (double)r[i];
    /* the auxiliary losses (MoE balancing, z-loss), whose gradients backward adds itself */
    return l + sp_model_aux_loss(m);
}

/* (L(v + h) - L(v - h)) / 2h for the entry *v (a parameter or an input), restored after; a failed
 * forward is reported, not read as a zero loss. */
static double central_diff(sp_model *m, const float *x, float *v, const float *r, int64_t nout,
                           const sp_gradcheck_opts *o, const char *file, int line) {
    const float keep = *v;
    sp_status st1, st2;
    *v = (float)(keep + o->h);
    double lp = loss_of(m, x, o->batch, o->train, r, nout, &st1);
    *v = (float)(keep - o->h);
    double lm = loss_of(m, x, o->batch, o->train, r, nout, &st2);
    *v = keep;
    if (st1 != SP_OK || st2 != SP_OK)
        sp_test_fail(file, line, "gradcheck: forward failed: %s", sp_last_error());
    return (lp - lm) / ((double)(float)(keep + o->h) - (double)(float)(keep - o->h));
}

static int check_one(const char *file, int line, const char *config, const char *what, int64_t i,
                     double a, double num, const sp_gradcheck_opts *o) {
    double err = fabs(a - num), mag = fmax(fabs(a), fabs(num));
    if (err <= o->atol + o->rtol * mag) return 0;
    sp_test_fail(file, line, "gradcheck %s[%lld]: analytic %.6g, numeric %.6g (config: %.60s)",
                 what, (long long)i, a, num, config);
    return 1;
}

int sp_gradcheck_at(const char *file, int line, const char *config, sp_shape in,
                    int64_t classes, sp_gradcheck_opts o) {
    if (o.batch <= 0) o.batch = 3;
    if (o.h <= 0) o.h = 1e-3;
    if (o.atol <= 0) o.atol = 2e-3;
    if (o.rtol <= 0) o.rtol = 2e-2;
    if (o.max_checks <= 0) o.max_checks = 64;
    int bad = 0;
    sp_model *m = NULL;
    sp_status st = sp_model_new(config, in, classes, o.seed + 7, &m);
    if (st != SP_OK) {
        sp_test_fail(file, line, "gradcheck: model: %s %s", sp_status_name(st), sp_last_error());
        return 1;
    }
    sp_model_set_threads(m, 1);
    const int64_t nin = in.c * in.h * in.w * o.batch;
    const sp_shape os = sp_model_out(m);
    const int64_t nout = os.c * os.h * os.w * o.batch;
    const int64_t np = sp_model_nparams(m);
    float *x = sp_alloc(sizeof(float) * (size_t)nin);
    float *r = sp_alloc(sizeof(float) * (size_t)nout);
    float *dx = sp_alloc(sizeof(float) * (size_t)nin);
    float *g = sp_alloc(sizeof(float) * (size_t)(np + 1));
    sp_rng rng;
    sp_rng_init(&rng, o.seed, 99);
    for (int64_t i = 0; i < nin; i++)
        x[i] = o.int_input ? (float)sp_rng_below(&rng, (uint64_t)o.input_max) : sp_rng_normal(&rng);
    for (int64_t i = 0; i < nout; i++) r[i] = sp_rng_normal(&rng);
    const float *y;
    CHECK_OK(sp_model_forward(m, x, o.batch, o.train, &y));
    sp_model_zero_grad(m);
    CHECK_OK(sp_model_backward(m, r, o.int_input ? NULL : dx));
    memcpy(g, sp_model_grads(m), sizeof(float) * (size_t)np);
    float *p = sp_model_params(m);
    int64_t step = np > o.max_checks ? np / o.max_checks : 1;
    for (int64_t i = 0; i < np && bad < 5; i += step) {
        /* a weight held at exactly zero by a mask is not a parameter: skip it */
        if (p[i] == 0.0f && g[i] == 0.0f) continue;
        double num = central_diff(m, x, &p[i], r, nout, &o, file, line);
        bad += check_one(file, line, config, "param", i, g[i], num, &o);
    }
    if (!o.int_input) {
        step = nin > o.max_checks ? nin / o.max_checks : 1;
        for (int64_t i = 0; i < nin && bad < 5; i += step) {
            double num = central_diff(m, x, &x[i], r, nout, &o, file, line);
            bad += check_one(file, line, config, "input", i, dx[i], num, &o);
        }
    }
    sp_free(x);
    sp_free(r);
    sp_free(dx);
    sp_free(g);
    sp_model_free(m);
    return bad;
}
