/*
 * conv2d.c - 2-D convolution (cross-correlation, as in PyTorch's Conv2d) with stride, zero
 * padding and groups, forward and backward side by side.
 *
 * Shapes per sample: x (C, H, W) -> y (O, OH, OW) with OH = (H + 2 ph - kh) / sh + 1 (floor),
 * OW likewise; G groups split the channels into G blocks, Cg = C/G inputs and Og = O/G outputs:
 *     y[o][oy][ox] = b[o] + sum_{ci < Cg, ki < kh, kj < kw}
 *                    w[o][ci][ki][kj] x[g*Cg + ci][oy*sh + ki - ph][ox*sw + kj - pw]
 * with g = o / Og and x = 0 outside the image.
 *
 * General path (im2col, Chellapilla et al. 2006) in the batch-innermost layout: the columns
 * matrix cols (C*kh*kw, OH*OW*B) has row (c, ki, kj) and column (oy*OW + ox)*B + b holding
 * x[c][oy*sh + ki - ph][ox*sw + kj - pw][b]; every copy is a contiguous run of B floats (of
 * whole output rows when sw == 1). Group g owns the rows [g K, (g+1) K), K = Cg kh kw, so
 *     forward   Y_g (Og, N) = W_g (Og, K) cols_g (K, N) + b 1^T          N = OH*OW*B
 *     backward  dW_g += dY_g cols_g^T,  db += rowsum(dY),
 *               dcols_g = W_g^T dY_g, then col2im scatter-adds dcols into dx; dcols is
 *               made a chunk of output rows at a time (about 1 MB, cache-sized), and cols
 *               is kept, so that backward may run again on the same forward pass.
 * A 1x1 kernel with stride 1 and no padding needs no columns: cols is x itself.
 * Depthwise (G = C = O, MobileNet) runs direct loops over the batch-innermost runs instead:
 *     y[c][oy][ox][:] += w[c][ki][kj] * x[c][iy][ix][:]
 *     dw[c][ki][kj]   += <dy[c][oy][ox][:], x[c][iy][ix][:]>,   dx[c][iy][ix][:] += w dy[..][:]
 *
 * Parameters in the arena: the weight in PyTorch's (O, C/G, kh, kw) row-major order, then the
 * bias (O). Initialization is PyTorch's default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both
 * with fan_in = C/G * kh * kw.
 *
 * Config: conv2d out=N k=K|KHxKW [stride=S|SHxSW] [pad=P|PHxPW] [groups=G] [bias=0|1].
 *
 * Threads: the GEMMs go through sp_sgemm, the copies and direct loops through sp_parallel_for
 * (one pool); each task writes its own outputs in a fixed order (a row of cols, a channel of
 * dx or y), and the chunks depend on the shapes and the batch only, so results are bitwise
 * identical for any thread count.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layer.h"
#include "sparrow/tensor.h"

#include "../core/internal.h"

typedef struct conv_layer {
    sp_layer base;
    int64_t cin, cout, groups;
    int64_t kh, kw, sh, sw, ph, pw;
    int64_t ih, iw, oh, ow;
    bool bias;
    bool depthwise;        /* groups == cin == cout: direct loops */
    bool pointwise;        /* 1x1, stride 1, no padding: cols is x */
    float *cols;           /* (cin*kh*kw, oh*ow*cap): im2col of the last forward input */
    float *dcols;          /* (cin*kh*kw, rows*ow*B): a chunk of output rows of W^T dY */
    int64_t cap;
} conv_layer;

static int64_t weight_count(const conv_layer *L) {
    return L->cout * (L->cin / L->groups) * L->kh * L->kw;
}

/* ---- partitions ----------------------------------------------------------------------------- */

/* Output rows per chunk: about CHUNK_TARGET floats of columns (cache-sized), at least one row.
 * Like every partition here it depends on the shapes and the batch, never on the threads. */
#define CHUNK_TARGET ((int64_t)1 << 18)
static int64_t chunk_rows(const conv_layer *L, int64_t B) {
    const int64_t per_row = L->cin * L->kh * L->kw * L->ow * B;
    return SP_MAX(1, SP_MIN(L->oh, CHUNK_TARGET / per_row));
}

/* ---- im2col / col2im ------------------------------------------------------------------------ */

/* Output positions ox in [*lo, *hi) read input column ox*s + off with 0 <= it < n. */
static void valid_range(int64_t n, int64_t s, int64_t off, int64_t out, int64_t *lo,
                        int64_t *hi) {
    /* ox*s + off >= 0  <=>  ox >= ceil(-off / s);   ox*s + off < n  <=>  ox <= (n-1-off)/s */
    int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t b = n - 1 - off < 0 ? 0 : (n - 1 - off) / s + 1;
    *lo = SP_MIN(a, out);
    *hi = SP_MAX(*lo, SP_MIN(b, out));
}

typedef struct im2col_ctx {
    const conv_layer *L;
    int64_t B;
    const float *x;
    float *cols;           /* (cin*kh*kw, oh*ow*B) */
} im2col_ctx;

/* Task: row r = (c, ki, kj) of cols, one contiguous run of OH*OW*B floats. */
static void im2col_task(void *vctx, int64_t r) {
    const im2col_ctx *t = vctx;
    const conv_layer *L = t->L;
    const int64_t B = t->B, rowlen = L->ow * B, kk = L->kh * L->kw;
    const int64_t c = r / kk, ki = r % kk / L->kw, kj = r % L->kw;
    const float *xc = t->x + c * L->ih * L->iw * B;
    float *dst = t->cols + r * L->oh * rowlen;
    int64_t lo, hi;
    valid_range(L->iw, L->sw, kj - L->pw, L->ow, &lo, &hi);
    for (int64_t oy = 0; oy < L->oh; oy++, dst += rowlen) {
        int64_t iy = oy * L->sh + ki - L->ph;
        if (iy < 0 || iy >= L->ih) {
            memset(dst, 0, sizeof(float) * (size_t)rowlen);
            continue;
        }
        if (lo) memset(dst, 0, sizeof(float) * (size_t)(lo * B));
        const float *xr = xc + iy * L->iw * B;
        if (L->sw == 1) {
            /* a whole run of output columns reads a contiguous run of input */
            if (hi > lo)
                memcpy(dst + lo * B, xr + (lo + kj - L->pw) * B,
                       sizeof(float) * (size_t)((hi - lo) * B));
        } else {
            for (int64_t ox = lo; ox < hi; ox++)
                memcpy(dst + ox * B, xr + (ox * L->sw + kj - L->pw) * B,
                       sizeof(float) * (size_t)B);
        }
        if (hi < L->ow) memset(dst + hi * B, 0, sizeof(float) * (size_t)((L->ow - hi) * B));
    }
}

typedef struct col2im_ctx {
    const conv_layer *L;
    int64_t B;
    const float *dcols;    /* rows (c, ki, kj), columns of output rows [oy0, oy1) */
    float *dx;
    int64_t oy0, oy1;
} col2im_ctx;

/* Backward task: input channel c of dx += its kh*kw rows of the dcols chunk (output rows
 * [oy0, oy1)), scattered back (col2im); the first chunk clears the channel first. Rows are
 * added in (ki, kj) order and chunks in order: each dx element has a fixed summation order. */
static void col2im_task(void *vctx, int64_t c) {
    const col2im_ctx *t = vctx;
    const conv_layer *L = t->L;
    const int64_t B = t->B, rowlen = L->ow * B, nrows = t->oy1 - t->oy0;
    float *dxc = t->dx + c * L->ih * L->iw * B;
    if (t->oy0 == 0) memset(dxc, 0, sizeof(float) * (size_t)(L->ih * L->iw * B));
    for (int64_t ki = 0; ki < L->kh; ki++)
        for (int64_t kj = 0; kj < L->kw; kj++) {
            const float *src = t->dcols + ((c * L->kh + ki) * L->kw + kj) * nrows * rowlen;
            int64_t lo, hi;
            valid_range(L->iw, L->sw, kj - L->pw, L->ow, &lo, &hi);
            for (int64_t oy = t->oy0; oy < t->oy1; oy++, src += rowlen) {
                int64_t iy = oy * L->sh + ki - L->ph;
                if (iy < 0 || iy >= L->ih) continue;
                float *dr = dxc + iy * L->iw * B;
                if (L->sw == 1) {
                    float *d = dr + (lo + kj - L->pw) * B;
                    const float *s = src + lo * B;
                    for (int64_t i = 0, n = (hi - lo) * B; i < n; i++) d[i] += s[i];
                } else {
                    for (int64_t ox = lo; ox < hi; ox++) {
                        float *d = dr + (ox * L->sw + kj - L->pw) * B;
                        const float *s = src + ox * B;
                        for (int64_t b = 0; b < B; b++) d[b] += s[b];
                    }
                }
            }
        }
}

/* ---- depthwise direct loops ----------------------------------------------------------------- */

typedef struct dw_ctx {
    const conv_layer *L;
    int64_t B;
    const float *x, *w, *bias, *dy;
    float *y, *dx, *dw, *db;
} dw_ctx;

/* Task: channel c of y. y[c] = b[c], then the kh*kw taps in order, each an axpy over runs. */
static void dw_forward_task(void *vctx, int64_t c) {
    const dw_ctx *t = vctx;
    const conv_layer *L = t->L;
    const int64_t B = t->B, rowlen = L->ow * B;
    const float *xc = t->x + c * L->ih * L->iw * B;
    float *yc = t->y + c * L->oh * rowlen;
    const float bc = t->bias ? t->bias[c] : 0.0f;
    for (int64_t i = 0, n = L->oh * rowlen; i < n; i++) yc[i] = bc;
    for (int64_t ki = 0; ki < L->kh; ki++)
        for (int64_t kj = 0; kj < L->kw; kj++) {
            const float wv = t->w[(c * L->kh + ki) * L->kw + kj];
            int64_t lo, hi;
            valid_range(L->iw, L->sw, kj - L->pw, L->ow, &lo, &hi);
            for (int64_t oy = 0; oy < L->oh; oy++) {
                int64_t iy = oy * L->sh + ki - L->ph;
                if (iy < 0 || iy >= L->ih) continue;
                const float *xr = xc + iy * L->iw * B;
                float *yr = yc + oy * rowlen;
                if (L->sw == 1) {
                    const float *s = xr + (lo + kj - L->pw) * B;
                    float *d = yr + lo * B;
                    for (int64_t i = 0, n = (hi - lo) * B; i < n; i++) d[i] += wv * s[i];
                } else {
                    for (int64_t ox = lo; ox < hi; ox++) {
                        const float *s = xr + (ox * L->sw + kj - L->pw) * B;
                        float *d = yr + ox * B;
                        for (int64_t b = 0; b < B; b++) d[b] += wv * s[b];
                    }
                }
            }
        }
}

/* Sum of a[i] * b[i] in eight float lanes added pairwise at the end: a fixed order that the
 * compiler can vectorize (a plain serial sum it may not reorder). */
static double dot8(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    for (; i < n; i++) acc[i & 7] += a[i] * b[i];
    return ((double)acc[0] + acc[4]) + ((double)acc[1] + acc[5]) + ((double)acc[2] + acc[6]) +
           ((double)acc[3] + acc[7]);
}

static double sum8(const float *a, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j];
    for (; i < n; i++) acc[i & 7] += a[i];
    return ((double)acc[0] + acc[4]) + ((double)acc[1] + acc[5]) + ((double)acc[2] + acc[6]) +
           ((double)acc[3] + acc[7]);
}

/* Task: channel c of dw, db and dx. */
static void dw_backward_task(void *vctx, int64_t c) {
    const dw_ctx *t = vctx;
    const conv_layer *L = t->L;
    const int64_t B = t->B, rowlen = L->ow * B;
    const float *xc = t->x + c * L->ih * L->iw * B;
    const float *dyc = t->dy + c * L->oh * rowlen;
    float *dxc = t->dx ? t->dx + c * L->ih * L->iw * B : NULL;
    if (t->db) t->db[c] += (float)sum8(dyc, L->oh * rowlen);
    if (dxc) memset(dxc, 0, sizeof(float) * (size_t)(L->ih * L->iw * B));
    for (int64_t ki = 0; ki < L->kh; ki++)
        for (int64_t kj = 0; kj < L->kw; kj++) {
            const int64_t wi = (c * L->kh + ki) * L->kw + kj;
            const float wv = t->w[wi];
            double g = 0.0;
            int64_t lo, hi;
            valid_range(L->iw, L->sw, kj - L->pw, L->ow, &lo, &hi);
            for (int64_t oy = 0; oy < L->oh; oy++) {
                int64_t iy = oy * L->sh + ki - L->ph;
                if (iy < 0 || iy >= L->ih) continue;
                const float *xr = xc + iy * L->iw * B;
                const float *dyr = dyc + oy * rowlen;
                float *dxr = dxc ? dxc + iy * L->iw * B : NULL;
                if (L->sw == 1) {
                    const int64_t n = (hi - lo) * B, off = (lo + kj - L->pw) * B;
                    const float *s = dyr + lo * B;
                    g += dot8(s, xr + off, n);
                    if (dxr) {
                        float *d = dxr + off;
                        for (int64_t i = 0; i < n; i++) d[i] += wv * s[i];
                    }
                } else {
                    for (int64_t ox = lo; ox < hi; ox++) {
                        const int64_t off = (ox * L->sw + kj - L->pw) * B;
                        const float *s = dyr + ox * B;
                        g += dot8(s, xr + off, B);
                        if (dxr) {
                            float *d = dxr + off;
                            for (int64_t b = 0; b < B; b++) d[b] += wv * s[b];
                        }
                    }
                }
            }
            t->dw[wi] += (float)g;
        }
}

typedef struct bias_ctx {
    const float *dy;
    float *db;
    int64_t N;
} bias_ctx;

/* Task: db[o] += sum of row o of dY (N). */
static void bias_task(void *vctx, int64_t o) {
    const bias_ctx *t = vctx;
    t->db[o] += (float)sum8(t->dy + o * t->N, t->N);
}

/* ---- forward / backward --------------------------------------------------------------------- */

static sp_status conv_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    conv_layer *L = (conv_layer *)l;
    const int64_t B = run->batch, N = L->oh * L->ow * B;
    const float *w = l->param, *bias = L->bias ? l->param + weight_count(L) : NULL;
    if (L->depthwise) {
        dw_ctx t = {.L = L, .B = B, .x = x, .w = w, .bias = bias, .y = y};
        sp_parallel_for(L->cin, run->nthreads, dw_forward_task, &t);
        return SP_OK;
    }
    const float *cols = x;
    if (!L->pointwise) {
        if (!L->cols || B > L->cap)
            return sp_fail(SP_EINVAL, "%s: batch %lld exceeds the reserved %lld", l->name,
                           (long long)B, (long long)L->cap);
        im2col_ctx t = {.L = L, .B = B, .x = x, .cols = L->cols};
        sp_parallel_for(L->cin * L->kh * L->kw, run->nthreads, im2col_task, &t);
        cols = L->cols;
    }
    const int64_t og = L->cout / L->groups, K = L->cin / L->groups * L->kh * L->kw;
    for (int64_t o = 0; o < L->cout; o++) {
        const float bo = bias ? bias[o] : 0.0f;
        float *yo = y + o * N;
        for (int64_t j = 0; j < N; j++) yo[j] = bo;
    }
    sp_status st = SP_OK;
    for (int64_t g = 0; g < L->groups && st == SP_OK; g++)
        st = sp_sgemm(false, false, og, N, K, 1.0f, w + g * og * K, K, cols + g * K * N, N, 1.0f,
                      y + g * og * N, N, run->nthreads);
    return st;
}

static sp_status conv_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                               const float *dy, float *dx) {
    conv_layer *L = (conv_layer *)l;
    const int64_t B = run->batch, N = L->oh * L->ow * B;
    const float *w = l->param;
    float *dw = l->grad, *db = L->bias ? l->grad + weight_count(L) : NULL;
    if (L->depthwise) {
        dw_ctx t = {.L = L, .B = B, .x = x, .w = w, .dy = dy, .dx = dx, .dw = dw, .db = db};
        sp_parallel_for(L->cin, run->nthreads, dw_backward_task, &t);
        return SP_OK;
    }
    if (db) {
        bias_ctx t = {.dy = dy, .db = db, .N = N};
        sp_parallel_for(L->cout, run->nthreads, bias_task, &t);
    }
    /* cols still holds the im2col of x from the forward pass (x itself when pointwise) */
    const float *cols = L->pointwise ? x : L->cols;
    const int64_t og = L->cout / L->groups, K = L->cin / L->groups * L->kh * L->kw;
    sp_status st = SP_OK;
    for (int64_t g = 0; g < L->groups && st == SP_OK; g++)
        st = sp_sgemm(false, true, og, K, N, 1.0f, dy + g * og * N, N, cols + g * K * N, N, 1.0f,
                      dw + g * og * K, K, run->nthreads);
    if (st != SP_OK || !dx) return st;
    if (L->pointwise) {
        /* dx_g (K, N) = W_g^T dY_g */
        for (int64_t g = 0; g < L->groups && st == SP_OK; g++)
            st = sp_sgemm(true, false, K, N, og, 1.0f, w + g * og * K, K, dy + g * og * N, N,
                          0.0f, dx + g * K * N, N, run->nthreads);
        return st;
    }
    /* dcols = W^T dY a chunk of output rows at a time (cols itself stays intact, so backward
     * may run again on the same forward pass), each chunk scattered into dx before the next */
    col2im_ctx t = {.L = L, .B = B, .dcols = L->dcols, .dx = dx};
    const int64_t rows = chunk_rows(L, B);
    for (int64_t oy0 = 0; oy0 < L->oh && st == SP_OK; oy0 += rows) {
        t.oy0 = oy0;
        t.oy1 = SP_MIN(L->oh, oy0 + rows);
        const int64_t j0 = oy0 * L->ow * B, nc = (t.oy1 - oy0) * L->ow * B;
        for (int64_t g = 0; g < L->groups && st == SP_OK; g++)
            st = sp_sgemm(true, false, K, nc, og, 1.0f, w + g * og * K, K, dy + g * og * N + j0,
                          N, 0.0f, L->dcols + g * K * nc, nc, run->nthreads);
        if (st == SP_OK) sp_parallel_for(L->cin, run->nthreads, col2im_task, &t);
    }
    return st;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static sp_status conv_reserve(sp_layer *l, int64_t batch) {
    conv_layer *L = (conv_layer *)l;
    sp_free(L->cols);
    sp_free(L->dcols);
    L->cols = L->dcols = NULL;
    L->cap = 0;
    if (L->depthwise || L->pointwise) return SP_OK;
    int64_t n, nd = 0;
    size_t bytes, dbytes;
    /* a smaller batch has more rows per chunk but never more floats than CHUNK_TARGET or one
     * row at the full batch */
    if (!sp_mul_i64(L->cin * L->kh * L->kw, L->oh * L->ow, &n) || !sp_mul_i64(n, batch, &n) ||
        !sp_bytes(n, sizeof(float), &bytes) ||
        !sp_mul_i64(L->cin * L->kh * L->kw * L->ow, batch, &nd) ||
        !sp_bytes(SP_MIN(n, SP_MAX(nd, CHUNK_TARGET)), sizeof(float), &dbytes))
        return sp_fail(SP_EOVERFLOW, "%s: im2col buffer overflows at batch %lld", l->name,
                       (long long)batch);
    L->cols = sp_alloc(bytes);
    L->dcols = sp_alloc(dbytes);
    if (!L->cols || !L->dcols) return SP_ENOMEM;
    L->cap = batch;
    return SP_OK;
}

static float uniform(sp_rng *r, float bound) { return (2.0f * sp_rng_uniform(r) - 1.0f) * bound; }

static void conv_init(sp_layer *l, sp_rng *rng) {
    conv_layer *L = (conv_layer *)l;
    const int64_t nw = weight_count(L);
    const float bound = 1.0f / sqrtf((float)(L->cin / L->groups * L->kh * L->kw));
    for (int64_t i = 0; i < nw; i++) l->param[i] = uniform(rng, bound);
    if (L->bias)
        for (int64_t o = 0; o < L->cout; o++) l->param[nw + o] = uniform(rng, bound);
}

static void conv_free(sp_layer *l) {
    sp_free(((conv_layer *)l)->cols);
    sp_free(((conv_layer *)l)->dcols);
}

/* "K" when both sides agree, else "AxB" */
static int pair_str(char *buf, size_t n, int64_t a, int64_t b) {
    return a == b ? snprintf(buf, n, "%lld", (long long)a)
                  : snprintf(buf, n, "%lldx%lld", (long long)a, (long long)b);
}

static int conv_describe(const sp_layer *l, char *buf, size_t n) {
    const conv_layer *L = (const conv_layer *)l;
    char k[48], s[48], p[48];
    pair_str(k, sizeof k, L->kh, L->kw);
    pair_str(s, sizeof s, L->sh, L->sw);
    pair_str(p, sizeof p, L->ph, L->pw);
    int len = snprintf(buf, n, "conv2d out=%lld k=%s", (long long)L->cout, k);
    if (L->sh != 1 || L->sw != 1) len += snprintf(buf + len, n - (size_t)len, " stride=%s", s);
    if (L->ph != 0 || L->pw != 0) len += snprintf(buf + len, n - (size_t)len, " pad=%s", p);
    if (L->groups != 1)
        len += snprintf(buf + len, n - (size_t)len, " groups=%lld", (long long)L->groups);
    if (!L->bias) len += snprintf(buf + len, n - (size_t)len, " bias=0");
    return len;
}

static const sp_layer_vt conv_vt = {
    .kind = "conv2d",
    .forward = conv_forward,
    .backward = conv_backward,
    .init_params = conv_init,
    .reserve = conv_reserve,
    .free = conv_free,
    .describe = conv_describe,
};

/* ---- construction --------------------------------------------------------------------------- */

sp_status sp_conv2d_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    int64_t nout, kh, kw, sh, sw, ph, pw, groups, bias;
    sp_status st;
    if ((st = sp_args_int(a, "out", -1, 1, 1 << 24, &nout)) != SP_OK) return st;
    if ((st = sp_args_pair(a, "k", -1, 1, 1 << 16, &kh, &kw)) != SP_OK) return st;
    if ((st = sp_args_pair(a, "stride", 1, 1, 1 << 16, &sh, &sw)) != SP_OK) return st;
    if ((st = sp_args_pair(a, "pad", 0, 0, 1 << 16, &ph, &pw)) != SP_OK) return st;
    if ((st = sp_args_int(a, "groups", 1, 1, 1 << 24, &groups)) != SP_OK) return st;
    if ((st = sp_args_int(a, "bias", 1, 0, 1, &bias)) != SP_OK) return st;
    if (nout < 0) return sp_fail(SP_EINVAL, "config line %d (conv2d): out=N is required", a->line);
    if (kh < 0)
        return sp_fail(SP_EINVAL, "config line %d (conv2d): k=K or k=KHxKW is required", a->line);
    if (nout % groups != 0)
        return sp_fail(SP_EINVAL, "config line %d (conv2d): groups=%lld does not divide out=%lld",
                       a->line, (long long)groups, (long long)nout);
    if (in.c % groups != 0)
        return sp_fail(SP_ESHAPE, "config line %d (conv2d): groups=%lld does not divide the %lld "
                       "input channels", a->line, (long long)groups, (long long)in.c);
    if (in.h + 2 * ph < kh || in.w + 2 * pw < kw)
        return sp_fail(SP_ESHAPE, "config line %d (conv2d): kernel %lldx%lld is larger than the "
                       "padded input %lldx%lld (input %lldx%lld, pad %lldx%lld)", a->line,
                       (long long)kh, (long long)kw, (long long)(in.h + 2 * ph),
                       (long long)(in.w + 2 * pw), (long long)in.h, (long long)in.w,
                       (long long)ph, (long long)pw);
    int64_t wcount, rows;
    if (!sp_mul_i64(nout, in.c / groups * kh * kw, &wcount) || wcount > ((int64_t)1 << 31) ||
        !sp_mul_i64(in.c, kh * kw, &rows) || rows > ((int64_t)1 << 31))
        return sp_fail(SP_ESHAPE, "config line %d (conv2d): weight %lld x %lld x %lldx%lld is too "
                       "large", a->line, (long long)nout, (long long)(in.c / groups),
                       (long long)kh, (long long)kw);
    if (wcount + nout > b->max_params)
        return sp_fail(SP_EFORMAT, "config line %d (conv2d): %lld weights exceed the budget of "
                       "%lld parameters", a->line, (long long)wcount, (long long)b->max_params);
    conv_layer *L = sp_layer_alloc(sizeof *L, &conv_vt, in);
    if (!L) return SP_ENOMEM;
    L->cin = in.c;
    L->cout = nout;
    L->groups = groups;
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
    L->bias = bias != 0;
    L->depthwise = groups == in.c && nout == in.c;
    L->pointwise = kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0;
    L->base.out = (sp_shape){nout, L->oh, L->ow};
    L->base.nparam = wcount + (L->bias ? nout : 0);
    *out = &L->base;
    return SP_OK;
}
