/*
 * criteria.c - pruning criteria: a weight (and the statistics a criterion needs) in, one score
 * per weight or per row out. Higher score = more worth keeping. Formulas: REFERENCES.md
 * (SNIP, movement, Wanda); the row norms score whole neurons / output channels.
 */
#include <math.h>

#include "sparrow/prune.h"

#include "../core/internal.h"

static const char *const criterion_names[] = {"magnitude", "random", "snip", "movement",
                                              "wanda", "row_l1", "row_l2"};

const char *sp_prune_criterion_name(sp_prune_criterion kind) {
    if ((int)kind < 0 || (int)kind >= (int)(sizeof criterion_names / sizeof *criterion_names))
        return "?";
    return criterion_names[kind];
}

bool sp_prune_criterion_per_row(sp_prune_criterion kind) {
    return kind == SP_PRUNE_ROW_L1 || kind == SP_PRUNE_ROW_L2;
}

/* The pointer a criterion needs, or an SP_EINVAL naming it. */
static sp_status need(const void *p, const char *what, sp_prune_criterion kind) {
    if (p) return SP_OK;
    return sp_fail(SP_EINVAL, "prune_scores (%s): %s is NULL", sp_prune_criterion_name(kind),
                   what);
}

sp_status sp_prune_scores(sp_prune_criterion kind, int64_t rows, int64_t cols, const float *w,
                          const sp_prune_inputs *in, float *scores) {
    if ((int)kind < 0 || kind > SP_PRUNE_ROW_L2)
        return sp_fail(SP_EINVAL, "prune_scores: unknown criterion %d", (int)kind);
    if (rows < 0 || cols < 0)
        return sp_fail(SP_EINVAL, "prune_scores: negative shape %lld x %lld", (long long)rows,
                       (long long)cols);
    int64_t n;
    if (!sp_mul_i64(rows, cols, &n))
        return sp_fail(SP_EOVERFLOW, "prune_scores: %lld x %lld overflows", (long long)rows,
                       (long long)cols);
    int64_t nout = sp_prune_criterion_per_row(kind) ? rows : n;
    if (nout == 0) return SP_OK;
    sp_status st;
    if ((st = need(scores, "scores", kind)) != SP_OK) return st;
    if (n > 0 && kind != SP_PRUNE_RANDOM && (st = need(w, "w", kind)) != SP_OK) return st;
    static const sp_prune_inputs none = {0};
    if (!in) in = &none;

    switch (kind) {
    case SP_PRUNE_MAGNITUDE:
        for (int64_t i = 0; i < n; i++) scores[i] = fabsf(w[i]);
        break;
    case SP_PRUNE_RANDOM: {
        sp_rng r;
        sp_rng_init(&r, in->seed, 0);
        for (int64_t i = 0; i < n; i++) scores[i] = sp_rng_uniform(&r);
        break;
    }
    case SP_PRUNE_SNIP:
        if ((st = need(in->grad, "grad", kind)) != SP_OK) return st;
        for (int64_t i = 0; i < n; i++) scores[i] = fabsf(w[i] * in->grad[i]);
        break;
    case SP_PRUNE_MOVEMENT:
        /* weights moving away from zero (w and acc_g of opposite signs under descent) score high */
        if ((st = need(in->grad_acc, "grad_acc", kind)) != SP_OK) return st;
        for (int64_t i = 0; i < n; i++) scores[i] = -(w[i] * in->grad_acc[i]);
        break;
    case SP_PRUNE_WANDA:
        if ((st = need(in->xnorm, "xnorm", kind)) != SP_OK) return st;
        for (int64_t j = 0; j < cols; j++)
            if (!(in->xnorm[j] >= 0.0f))
                return sp_fail(SP_EINVAL, "prune_scores (wanda): xnorm[%lld] = %g is not >= 0",
                               (long long)j, (double)in->xnorm[j]);
        // (rows, cols) .* (1, cols)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++)
                scores[i * cols + j] = fabsf(w[i * cols + j]) * in->xnorm[j];
        break;
    case SP_PRUNE_ROW_L1:
    case SP_PRUNE_ROW_L2:
        /* summed in double in column order: the same value on every platform */
        for (int64_t i = 0; i < rows; i++) {
            const float *row = w + i * cols;
            double acc = 0.0;
            if (kind == SP_PRUNE_ROW_L1)
                for (int64_t j = 0; j < cols; j++) acc += fabs((double)row[j]);
            else
                for (int64_t j = 0; j < cols; j++) acc += (double)row[j] * (double)row[j];
            scores[i] = (float)(kind == SP_PRUNE_ROW_L1 ? acc : sqrt(acc));
        }
        break;
    }
    return SP_OK;
}
