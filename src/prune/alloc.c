/*
 * alloc.c - layer allocation: how dense each layer should be for a target overall density.
 * Uniform; Erdos-Renyi (SET, Mocanu et al. 2018): eps (n_in + n_out) / (n_in n_out); ER-Kernel
 * (RigL, Evci et al. 2020): eps (n_in + n_out + kh + kw) / (n_in n_out kh kw). eps is solved so
 * that the kept weights hit the target; layers whose density would exceed 1 become dense and eps
 * is solved again for the others (RigL's sparse_utils.get_sparsities_erdos_renyi, which makes the
 * layers of the highest raw density dense one round at a time; making every layer above 1 dense
 * at once ends the same, because eps only grows as layers leave the free set).
 */
#include <math.h>

#include "sparrow/prune.h"

#include "../core/internal.h"

sp_status sp_prune_densities(sp_prune_alloc kind, int64_t nlayers,
                             const sp_prune_layer_shape *layers, double density, double *out) {
    static const char who[] = "prune_densities";
    if ((int)kind < 0 || kind > SP_PRUNE_ALLOC_ERK)
        return sp_fail(SP_EINVAL, "%s: unknown allocation %d", who, (int)kind);
    if (nlayers < 0) return sp_fail(SP_EINVAL, "%s: nlayers %lld < 0", who, (long long)nlayers);
    if (nlayers > 0 && (!layers || !out))
        return sp_fail(SP_EINVAL, "%s: %s is NULL", who, layers ? "out" : "layers");
    if (!(density >= 0.0 && density <= 1.0))
        return sp_fail(SP_EINVAL, "%s: target density %g is outside [0, 1]", who, density);

    /* weights per layer (in double: only ratios and sums are needed), validated shapes */
    double total = 0.0, fixed_kept = 0.0, free_total = 0.0;
    for (int64_t l = 0; l < nlayers; l++) {
        const sp_prune_layer_shape *L = &layers[l];
        if (L->n_in < 1 || L->n_out < 1)
            return sp_fail(SP_EINVAL, "%s: layer %lld: n_in %lld and n_out %lld must be >= 1", who,
                           (long long)l, (long long)L->n_in, (long long)L->n_out);
        if (!((L->kh == 0 && L->kw == 0) || (L->kh >= 1 && L->kw >= 1)))
            return sp_fail(SP_EINVAL,
                           "%s: layer %lld: kernel %lld x %lld (both 0 for Linear, or both >= 1)",
                           who, (long long)l, (long long)L->kh, (long long)L->kw);
        int64_t nw;
        if (!sp_mul_i64(L->n_in, L->n_out, &nw) || !sp_mul_i64(nw, SP_MAX(L->kh, 1), &nw) ||
            !sp_mul_i64(nw, SP_MAX(L->kw, 1), &nw))
            return sp_fail(SP_EOVERFLOW, "%s: layer %lld: weight count overflows", who,
                           (long long)l);
        if (L->fixed && !(L->fixed_density >= 0.0 && L->fixed_density <= 1.0))
            return sp_fail(SP_EINVAL, "%s: layer %lld: fixed density %g is outside [0, 1]", who,
                           (long long)l, L->fixed_density);
        total += (double)nw;
        if (L->fixed) {
            fixed_kept += L->fixed_density * (double)nw;
            out[l] = L->fixed_density;
        } else {
            free_total += (double)nw;
            out[l] = -1.0; /* free: decided below */
        }
    }
    if (free_total == 0.0) return SP_OK; /* every layer fixed: nothing to share */
    double want = density * total - fixed_kept; /* weights the free layers keep */
    double slack = 1e-9 * total;
    if (want < -slack)
        return sp_fail(SP_EINVAL, "%s: target density %g is below what the fixed layers keep "
                       "(%.6g of %.6g weights)", who, density, fixed_kept, total);
    if (want > free_total + slack)
        return sp_fail(SP_EINVAL, "%s: target density %g is unreachable: the fixed layers keep "
                       "%.6g and the others at most %.6g of %.6g weights", who, density,
                       fixed_kept, free_total, total);
    want = SP_MIN(SP_MAX(want, 0.0), free_total);

    if (kind == SP_PRUNE_ALLOC_UNIFORM) {
        double d = want / free_total;
        for (int64_t l = 0; l < nlayers; l++)
            if (!layers[l].fixed) out[l] = d;
        return SP_OK;
    }
    /* ER / ERK: out[l] < 0 marks a free layer still sparse; 1.0 one made dense. */
    for (int64_t round = 0; round <= nlayers; round++) { /* each round makes >= 1 layer dense */
        double rhs = want, divisor = 0.0;
        for (int64_t l = 0; l < nlayers; l++) {
            const sp_prune_layer_shape *L = &layers[l];
            if (L->fixed) continue;
            double nin = (double)L->n_in, nout = (double)L->n_out;
            double kh = (double)SP_MAX(L->kh, 1), kw = (double)SP_MAX(L->kw, 1);
            double nw = nin * nout * kh * kw;
            if (out[l] >= 0.0) { /* dense */
                rhs -= nw;
                continue;
            }
            double raw = kind == SP_PRUNE_ALLOC_ER || L->kh == 0
                             ? (nin + nout) / (nin * nout)
                             : (nin + nout + kh + kw) / (nin * nout * kh * kw);
            divisor += raw * nw;
            out[l] = -1.0 - raw; /* keep raw for the pass below, still marked free */
        }
        if (divisor == 0.0) return SP_OK; /* every free layer dense */
        double eps = SP_MAX(rhs, 0.0) / divisor;
        bool capped = false;
        for (int64_t l = 0; l < nlayers; l++) {
            if (layers[l].fixed || out[l] >= 0.0) continue;
            double d = eps * (-1.0 - out[l]);
            if (d > 1.0) capped = true;
        }
        if (!capped) {
            for (int64_t l = 0; l < nlayers; l++)
                if (!layers[l].fixed && out[l] < 0.0) out[l] = eps * (-1.0 - out[l]);
            return SP_OK;
        }
        for (int64_t l = 0; l < nlayers; l++)
            if (!layers[l].fixed && out[l] < 0.0) out[l] = eps * (-1.0 - out[l]) > 1.0 ? 1.0 : -1.0;
    }
    return sp_fail(SP_EINVAL, "%s: capping did not converge", who); /* unreachable */
}
