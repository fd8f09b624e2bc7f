/*
 * schedule.c - pruning schedules as data: the gradual cubic schedule of Zhu & Gupta (2017),
 * s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3, with masks updated every dt steps from t0 to
 * t0 + n dt. One-shot pruning is the degenerate case s_i = s_f.
 */
#include "sparrow/prune.h"

#include "../core/internal.h"

sp_status sp_prune_schedule_check(const sp_prune_schedule *s) {
    static const char who[] = "prune_schedule";
    if (!s) return sp_fail(SP_EINVAL, "%s: schedule is NULL", who);
    if (!(s->s_i >= 0.0 && s->s_i < 1.0))
        return sp_fail(SP_EINVAL, "%s: s_i %g is outside [0, 1)", who, s->s_i);
    if (!(s->s_f >= 0.0 && s->s_f < 1.0))
        return sp_fail(SP_EINVAL, "%s: s_f %g is outside [0, 1)", who, s->s_f);
    if (s->s_i > s->s_f)
        return sp_fail(SP_EINVAL, "%s: s_i %g > s_f %g", who, s->s_i, s->s_f);
    if (s->t0 < 0) return sp_fail(SP_EINVAL, "%s: t0 %lld < 0", who, (long long)s->t0);
    if (s->dt < 1) return sp_fail(SP_EINVAL, "%s: dt %lld < 1", who, (long long)s->dt);
    if (s->n < 1) return sp_fail(SP_EINVAL, "%s: n %lld < 1", who, (long long)s->n);
    int64_t span, end;
    if (!sp_mul_i64(s->n, s->dt, &span) || !sp_add_i64(s->t0, span, &end))
        return sp_fail(SP_EOVERFLOW, "%s: t0 %lld + n %lld * dt %lld overflows", who,
                       (long long)s->t0, (long long)s->n, (long long)s->dt);
    return SP_OK;
}

sp_status sp_prune_schedule_sparsity(const sp_prune_schedule *s, int64_t t, double *out) {
    sp_status st = sp_prune_schedule_check(s);
    if (st != SP_OK) return st;
    if (!out) return sp_fail(SP_EINVAL, "prune_schedule_sparsity: out is NULL");
    int64_t span = s->n * s->dt; /* checked above */
    if (t <= s->t0) {
        *out = s->s_i;
    } else if (t - s->t0 >= span) {
        *out = s->s_f;
    } else {
        double r = 1.0 - (double)(t - s->t0) / (double)span;
        *out = s->s_f + (s->s_i - s->s_f) * r * r * r;
    }
    return SP_OK;
}

sp_status sp_prune_schedule_is_update(const sp_prune_schedule *s, int64_t t, bool *out) {
    sp_status st = sp_prune_schedule_check(s);
    if (st != SP_OK) return st;
    if (!out) return sp_fail(SP_EINVAL, "prune_schedule_is_update: out is NULL");
    *out = t >= s->t0 && t - s->t0 <= s->n * s->dt && (t - s->t0) % s->dt == 0;
    return SP_OK;
}
