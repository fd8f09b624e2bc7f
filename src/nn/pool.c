/*
 * pool.c - spatial pooling, forward and backward side by side: max, average and global average.
 *
 * Shapes per sample: x (C, H, W) -> y (C, OH, OW), OH = (H + 2 ph - kh) / sh + 1 (floor), OW
 * likewise; window (oy, ox) covers rows oy*sh - ph + [0, kh) and columns ox*sw - pw + [0, kw).
 *   maxpool        y = max over the window's real pixels (padding never wins)
 *                  dx[argmax] += dy; the argmax is the first maximum in row-major window order
 *                  (PyTorch's rule; a NaN wins, so it propagates)
 *   avgpool        y = (sum of the window's real pixels) / (kh kw): padding counts as zeros
 *                  (PyTorch's count_include_pad=True)
 *                  dx[p] += dy / (kh kw) for every real pixel p of the window
 *   globalavgpool  (C, H, W) -> (C, 1, 1), y[c] = mean over the H W pixels; dx = dy / (H W).
 *                  On a sequence (d, 1, T) it is the mean over the tokens.
 * Every loop runs over the batch innermost: one window tap is a contiguous run of B floats.
 * Padding is at most half the kernel (PyTorch's limit), so every window holds a real pixel.
 *
 * Config: maxpool k=K|KHxKW [stride=S|SHxSW] [pad=P|PHxPW] (stride defaults to k, pad to 0);
 *         avgpool with the same options; globalavgpool (no options).
 */
#include <stdio.h>
#include <string.h>

#include "layer.h"

#include "../core/internal.h"

typedef enum pool_kind { POOL_MAX, POOL_AVG, POOL_GLOBAL } pool_kind;

typedef struct pool_layer {
    sp_layer base;
    pool_kind kind;
    int64_t kh, kw, sh, sw, ph, pw;
    int64_t ih, iw, oh, ow;
    int32_t *arg;          /* maxpool: input pixel iy*W + ix of each output (numel(out), cap) */
    int64_t cap;
} pool_layer;

typedef struct pool_ctx {
    pool_layer *L;
    int64_t B;
    const float *x, *dy;
    float *y, *dx;
} pool_ctx;

/* ---- maxpool -------------------------------------------------------------------------------- */

/* One window tap into the running maxima of B samples. Strictly greater: ties keep the first;
 * a NaN takes over once and nothing is greater than NaN afterwards. Branch-free (| and &, not
 * || and &&) so that the loop vectorizes. */
static void max_tap(float *restrict y, int32_t *restrict arg, const float *restrict x, int32_t p,
                    int64_t B) {
    for (int64_t b = 0; b < B; b++) {
        const float v = x[b], m = y[b];
        const int take = (v > m) | ((v != v) & (m == m));
        y[b] = take ? v : m;
        arg[b] = take ? p : arg[b];
    }
}

/* Task: channel c. */
static void max_forward_task(void *vctx, int64_t c) {
    const pool_ctx *t = vctx;
    const pool_layer *L = t->L;
    const int64_t B = t->B;
    const float *xc = t->x + c * L->ih * L->iw * B;
    for (int64_t oy = 0; oy < L->oh; oy++)
        for (int64_t ox = 0; ox < L->ow; ox++) {
            const int64_t o = (c * L->oh + oy) * L->ow + ox;
            float *y = t->y + o * B;
            int32_t *arg = L->arg + o * B;
            bool first = true;
            for (int64_t ki = 0; ki < L->kh; ki++) {
                const int64_t iy = oy * L->sh - L->ph + ki;
                if (iy < 0 || iy >= L->ih) continue;
                for (int64_t kj = 0; kj < L->kw; kj++) {
                    const int64_t ix = ox * L->sw - L->pw + kj;
                    if (ix < 0 || ix >= L->iw) continue;
                    const int32_t p = (int32_t)(iy * L->iw + ix);
                    const float *x = xc + p * B;
                    if (first) {
                        for (int64_t b = 0; b < B; b++) {
                            y[b] = x[b];
                            arg[b] = p;
                        }
                        first = false;
                        continue;
                    }
                    max_tap(y, arg, x, p, B);
                }
            }
        }
}

static void max_backward_task(void *vctx, int64_t c) {
    const pool_ctx *t = vctx;
    const pool_layer *L = t->L;
    const int64_t B = t->B, n = L->oh * L->ow;
    float *dxc = t->dx + c * L->ih * L->iw * B;
    memset(dxc, 0, sizeof(float) * (size_t)(L->ih * L->iw * B));
    const float *dy = t->dy + c * n * B;
    const int32_t *arg = L->arg + c * n * B;
    for (int64_t i = 0; i < n; i++)
        for (int64_t b = 0; b < B; b++) dxc[(int64_t)arg[i * B + b] * B + b] += dy[i * B + b];
}

/* ---- avgpool -------------------------------------------------------------------------------- */

static void avg_forward_task(void *vctx, int64_t c) {
    const pool_ctx *t = vctx;
    const pool_layer *L = t->L;
    const int64_t B = t->B;
    const float *xc = t->x + c * L->ih * L->iw * B;
    const float inv = 1.0f / (float)(L->kh * L->kw);
    for (int64_t oy = 0; oy < L->oh; oy++)
        for (int64_t ox = 0; ox < L->ow; ox++) {
            float *y = t->y + ((c * L->oh + oy) * L->ow + ox) * B;
            for (int64_t b = 0; b < B; b++) y[b] = 0.0f;
            for (int64_t ki = 0; ki < L->kh; ki++) {
                const int64_t iy = oy * L->sh - L->ph + ki;
                if (iy < 0 || iy >= L->ih) continue;
                for (int64_t kj = 0; kj < L->kw; kj++) {
                    const int64_t ix = ox * L->sw - L->pw + kj;
                    if (ix < 0 || ix >= L->iw) continue;
                    const float *x = xc + (iy * L->iw + ix) * B;
                    for (int64_t b = 0; b < B; b++) y[b] += x[b];
                }
            }
            for (int64_t b = 0; b < B; b++) y[b] *= inv;
        }
}

static void avg_backward_task(void *vctx, int64_t c) {
    const pool_ctx *t = vctx;
    const pool_layer *L = t->L;
    const int64_t B = t->B;
    float *dxc = t->dx + c * L->ih * L->iw * B;
    memset(dxc, 0, sizeof(float) * (size_t)(L->ih * L->iw * B));
    const float inv = 1.0f / (float)(L->kh * L->kw);
    for (int64_t oy = 0; oy < L->oh; oy++)
        for (int64_t ox = 0; ox < L->ow; ox++) {
            const float *dy = t->dy + ((c * L->oh + oy) * L->ow + ox) * B;
            for (int64_t ki = 0; ki < L->kh; ki++) {
                const int64_t iy = oy * L->sh - L->ph + ki;
                if (iy < 0 || iy >= L->ih) continue;
                for (int64_t kj = 0; kj < L->kw; kj++) {
                    const int64_t ix = ox * L->sw - L->pw + kj;
                    if (ix < 0 || ix >= L->iw) continue;
                    float *dx = dxc + (iy * L->iw + ix) * B;
                    for (int64_t b = 0; b < B; b++) dx[b] += dy[b] * inv;
                }
            }
        }
}

/* ---- global average ------------------------------------------------------------------------- */

static void global_forward_task(void *vctx, int64_t c) {
    const pool_ctx *t = vctx;
    const pool_layer *L = t->L;
    const int64_t B = t->B, n = L->ih * L->iw;
    const float *xc = t->x + c * n * B;
    float *y = t->y + c * B;
    for (int64_t b = 0; b < B; b++) y[b] = 0.0f;
    for (int64_t p = 0; p < n; p++)
        for (int64_t b = 0; b < B; b++) y[b] += xc[p * B + b];
    const float inv = 1.0f / (float)n;
    for (int64_t b = 0; b < B; b++) y[b] *= inv;
}

static void global_backward_task(void *vctx, int64_t c) {
    const pool_ctx *t = vctx;
    const pool_layer *L = t->L;
    const int64_t B = t->B, n = L->ih * L->iw;
    float *dxc = t->dx + c * n * B;
    const float *dy = t->dy + c * B;
    const float inv = 1.0f / (float)n;
    for (int64_t p = 0; p < n; p++)
        for (int64_t b = 0; b < B; b++) dxc[p * B + b] = dy[b] * inv;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

static sp_status pool_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    pool_layer *L = (pool_layer *)l;
    pool_ctx t = {.L = L, .B = run->batch, .x = x, .y = y};
    switch (L->kind) {
    case POOL_MAX:
        if (!L->arg || run->batch > L->cap)
            return sp_fail(SP_EINVAL, "%s: batch %lld exceeds the reserved %lld", l->name,
                           (long long)run->batch, (long long)L->cap);
        sp_parallel_for(l->in.c, run->nthreads, max_forward_task, &t);
        break;
    case POOL_AVG: sp_parallel_for(l->in.c, run->nthreads, avg_forward_task, &t); break;
    case POOL_GLOBAL: sp_parallel_for(l->in.c, run->nthreads, global_forward_task, &t); break;
    }
    return SP_OK;
}

static sp_status pool_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                               const float *dy, float *dx) {
    pool_layer *L = (pool_layer *)l;
    if (!dx) return SP_OK;
    pool_ctx t = {.L = L, .B = run->batch, .dy = dy, .dx = dx};
    switch (L->kind) {
    case POOL_MAX: sp_parallel_for(l->in.c, run->nthreads, max_backward_task, &t); break;
    case POOL_AVG: sp_parallel_for(l->in.c, run->nthreads, avg_backward_task, &t); break;
    case POOL_GLOBAL: sp_parallel_for(l->in.c, run->nthreads, global_backward_task, &t); break;
    }
    return SP_OK;
}

static sp_status pool_reserve(sp_layer *l, int64_t batch) {
    pool_layer *L = (pool_layer *)l;
    if (L->kind != POOL_MAX) return SP_OK;
    sp_free(L->arg);
    L->arg = NULL;
    L->cap = 0;
    int64_t n;
    size_t bytes;
    if (!sp_mul_i64(sp_shape_numel(l->out), batch, &n) || !sp_bytes(n, sizeof(int32_t), &bytes))
        return sp_fail(SP_EOVERFLOW, "%s: argmax cache overflows at batch %lld", l->name,
                       (long long)batch);
    L->arg = sp_alloc(bytes);
    if (!L->arg) return SP_ENOMEM;
    L->cap = batch;
    return SP_OK;
}

static void pool_free(sp_layer *l) { sp_free(((pool_layer *)l)->arg); }

static int pair_str(char *buf, size_t n, int64_t a, int64_t b) {
    return a == b ? snprintf(buf, n, "%lld", (long long)a)
                  : snprintf(buf, n, "%lldx%lld", (long long)a, (long long)b);
}

static int pool_describe(const sp_layer *l, char *buf, size_t n) {
    const pool_layer *L = (const pool_layer *)l;
    if (L->kind == POOL_GLOBAL) return snprintf(buf, n, "globalavgpool");
    char k[48], s[48], p[48];
    pair_str(k, sizeof k, L->kh, L->kw);
    pair_str(s, sizeof s, L->sh, L->sw);
    pair_str(p, sizeof p, L->ph, L->pw);
    int len = snprintf(buf, n, "%s k=%s", L->kind == POOL_MAX ? "maxpool" : "avgpool", k);
    if (L->sh != L->kh || L->sw != L->kw)
        len += snprintf(buf + len, n - (size_t)len, " stride=%s", s);
    if (L->ph != 0 || L->pw != 0) len += snprintf(buf + len, n - (size_t)len, " pad=%s", p);
    return len;
}

static const sp_layer_vt maxpool_vt = {
    .kind = "maxpool",
    .forward = pool_forward,
    .backward = pool_backward,
    .reserve = pool_reserve,
    .free = pool_free,
    .describe = pool_describe,
};

static const sp_layer_vt avgpool_vt = {
    .kind = "avgpool",
    .forward = pool_forward,
    .backward = pool_backward,
    .describe = pool_describe,
};

static const sp_layer_vt globalavgpool_vt = {
    .kind = "globalavgpool",
    .forward = pool_forward,
    .backward = pool_backward,
    .describe = pool_describe,
};

/* ---- construction --------------------------------------------------------------------------- */

static sp_status pool_create(sp_args *a, sp_shape in, pool_kind kind, const sp_layer_vt *vt,
                             sp_layer **out) {
    int64_t kh, kw, sh, sw, ph, pw;
    sp_status st;
    if ((st = sp_args_pair(a, "k", -1, 1, 1 << 16, &kh, &kw)) != SP_OK) return st;
    if ((st = sp_args_pair(a, "stride", -1, 1, 1 << 16, &sh, &sw)) != SP_OK) return st;
    if ((st = sp_args_pair(a, "pad", 0, 0, 1 << 16, &ph, &pw)) != SP_OK) return st;
    if (kh < 0)
        return sp_fail(SP_EINVAL, "config line %d (%s): k=K or k=KHxKW is required", a->line,
                       a->kind);
    if (sh < 0) {
        sh = kh;
        sw = kw;
    }
    if (2 * ph > kh || 2 * pw > kw)
        return sp_fail(SP_EINVAL, "config line %d (%s): pad=%lldx%lld is more than half the "
                       "kernel %lldx%lld", a->line, a->kind, (long long)ph, (long long)pw,
                       (long long)kh, (long long)kw);
    if (in.h + 2 * ph < kh || in.w + 2 * pw < kw)
        return sp_fail(SP_ESHAPE, "config line %d (%s): kernel %lldx%lld is larger than the "
                       "padded input %lldx%lld (input %lldx%lld, pad %lldx%lld)", a->line,
                       a->kind, (long long)kh, (long long)kw, (long long)(in.h + 2 * ph),
                       (long long)(in.w + 2 * pw), (long long)in.h, (long long)in.w,
                       (long long)ph, (long long)pw);
    if (kind == POOL_MAX && in.h * in.w > INT32_MAX)
        return sp_fail(SP_ESHAPE, "config line %d (%s): %lldx%lld pixels exceed the argmax "
                       "index range", a->line, a->kind, (long long)in.h, (long long)in.w);
    pool_layer *L = sp_layer_alloc(sizeof *L, vt, in);
    if (!L) return SP_ENOMEM;
    L->kind = kind;
    L->kh = kh;
    L->kw = kw;
    L->sh = sh;
    L->sw = sw;
    L->ph = ph;
    L->pw = pw;
    L->ih = in.h;
    L->iw = in.w;
    L->oh = (in.h + 2 * ph - kh) / sh + 1;
    L->ow = (in.w + 2 * pw - kw) / sw + 1;
    L->base.out = (sp_shape){in.c, L->oh, L->ow};
    *out = &L->base;
    return SP_OK;
}

sp_status sp_maxpool_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    return pool_create(a, in, POOL_MAX, &maxpool_vt, out);
}

sp_status sp_avgpool_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    return pool_create(a, in, POOL_AVG, &avgpool_vt, out);
}

sp_status sp_globalavgpool_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    pool_layer *L = sp_layer_alloc(sizeof *L, &globalavgpool_vt, in);
    if (!L) return SP_ENOMEM;
    L->kind = POOL_GLOBAL;
    L->kh = L->oh = 1;
    L->kw = L->ow = 1;
    L->ih = in.h;
    L->iw = in.w;
    L->base.out = (sp_shape){in.c, 1, 1};
    *out = &L->base;
    return SP_OK;
}
