/*
 * attention.c - multi-head scaled dot-product self-attention (Vaswani et al. 2017) on
 * sequences, with an optional causal mask, forward and backward.
 *
 * Shapes: input and output (d, 1, T) per sample, i.e. (d, cols) matrices with cols = T*B and
 * token t of sequence b in column t*B + b. H heads of width dh = d/H; head h owns the features
 * [h*dh, (h+1)*dh).
 *     Q = Wq X + bq,  K = Wk X + bk,  V = Wv X + bv            (d, cols) each, one GEMM each
 *     (three GEMMs rather than one over the stacked weights: at d = 64 OpenBLAS's small-matrix
 *     kernels make the three faster, 1.76 vs 2.0 ms for the backward pass at T = 28, B = 64)
 *     S_h[t, s] = q_h(t) . k_h(s) / sqrt(dh)                    per sequence: (T, T)
 *     P_h[t, :] = softmax_s(S_h[t, :]),  s <= t when causal      (masked entries are 0)
 *     O_h(t)    = sum_s P_h[t, s] v_h(s);  O = concat_h O_h      (d, cols)
 *     Y = Wo O + bo
 * Backward (dS already holding the 1/sqrt(dh) factor):
 *     dbo += rowsum dY,  dWo += dY O^T,  dO = Wo^T dY
 *     dP_h[t, s] = dO_h(t) . v_h(s)
 *     dS_h[t, s] = P_h[t, s] (dP_h[t, s] - sum_s' P_h[t, s'] dP_h[t, s']) / sqrt(dh)
 *     dq_h(t) = sum_s dS_h[t, s] k_h(s),  dk_h(s) = sum_t dS_h[t, s] q_h(t),
 *     dv_h(s) = sum_t P_h[t, s] dO_h(t)
 *     dW* += dQ/dK/dV X^T,  db* += rowsums,  dX = Wq^T dQ + Wk^T dK + Wv^T dV
 *
 * The per-sequence products work directly in the batch-innermost layout: q_h(t) of every
 * sequence is dh rows of B contiguous floats, so each step of a T x T product is a
 * multiply-add over the B sequences at once (no transposes, inner loops over b). The
 * probabilities are kept as (H, T, T, B). Tasks are (head, query t) pairs in the forward pass
 * and in the first backward phase, (head, key s) pairs in the second; each writes only its own
 * outputs with a fixed summation order, so results do not depend on the thread count.
 *
 * Parameters in the arena: Wq (d, d) row-major (out, in) like PyTorch's Linear.weight, bq (d),
 * Wk, bk, Wv, bv, Wo, bo. Each weight and bias is initialized like PyTorch's Linear default,
 * U(-1/sqrt(d), 1/sqrt(d)) (nn.MultiheadAttention itself uses Xavier for the input projection).
 *
 * Config: attention [heads=H] (default 1; must divide d) [causal=0|1] (default 1).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layer.h"
#include "sparrow/tensor.h"

#include "../core/internal.h"

typedef struct attention_layer {
    sp_layer base;
    int64_t d, T, heads, dh;
    bool causal;
    float *mem;                    /* one allocation for everything below */
    float *q, *k, *v, *o;          /* (d, cols) of the last forward pass; o = concat heads */
    float *p;                      /* (H, T, T, B) attention probabilities */
    float *dq, *dk, *dv, *dout;    /* (d, cols) backward scratch */
    float *ds;                     /* (H, T, T, B) backward scratch: dS */
    float *stat;                   /* (2, H, T, B) per-row softmax maxima and sums / row dots */
} attention_layer;

/* offsets of the parameters in the arena */
static int64_t w_off(const attention_layer *L, int which) { return which * (L->d * L->d + L->d); }
static int64_t b_off(const attention_layer *L, int which) { return w_off(L, which) + L->d * L->d; }
enum { WQ = 0, WK = 1, WV = 2, WO = 3 };

/* ---- B-wide vector steps (the inner loops of every per-sequence product) ------------------ */

static inline void vzero(int64_t n, float *restrict y) {
    for (int64_t b = 0; b < n; b++) y[b] = 0.0f;
}

#define MAC_CHUNK 16 /* sequences per register-held accumulator block */

/* out[u] = scale * sum_{r < nr} a[r*sa + u] b[r*sb + u] for u < n: a multiply-accumulate over
 * nr row pairs, r in order, for n sequences side by side. Blocks of MAC_CHUNK sequences keep
 * their sums in registers. */
static void mac_rows(int64_t nr, const float *restrict a, int64_t sa, const float *restrict b,
                     int64_t sb, float scale, float *restrict out, int64_t n) {
    int64_t u0 = 0;
    for (; u0 + MAC_CHUNK <= n; u0 += MAC_CHUNK) {
        float acc[MAC_CHUNK] = {0};
        for (int64_t r = 0; r < nr; r++) {
            const float *ar = a + r * sa + u0, *br = b + r * sb + u0;
            for (int u = 0; u < MAC_CHUNK; u++) acc[u] += ar[u] * br[u];
        }
        for (int u = 0; u < MAC_CHUNK; u++) out[u0 + u] = acc[u] * scale;
    }
    if (u0 == n) return;
    const int64_t rest = n - u0;
    float acc[MAC_CHUNK] = {0};
    for (int64_t r = 0; r < nr; r++) {
        const float *ar = a + r * sa + u0, *br = b + r * sb + u0;
        for (int64_t u = 0; u < rest; u++) acc[u] += ar[u] * br[u];
    }
    for (int64_t u = 0; u < rest; u++) out[u0 + u] = acc[u] * scale;
}

/* sum of r[0..n) in a fixed order that vectorizes: MAC_CHUNK interleaved partial sums, then
 * those in order, then the tail */
static float fixed_sum(const float *restrict r, int64_t n) {
    float acc[MAC_CHUNK] = {0}, s = 0.0f;
    int64_t j = 0;
    for (; j + MAC_CHUNK <= n; j += MAC_CHUNK)
        for (int u = 0; u < MAC_CHUNK; u++) acc[u] += r[j + u];
    for (int u = 0; u < MAC_CHUNK; u++) s += acc[u];
    for (; j < n; j++) s += r[j];
    return s;
}

/* ---- per-(head, row) tasks ------------------------------------------------------------------- */

typedef struct att_ctx {
    attention_layer *L;
    int64_t B;
    float scale;
} att_ctx;

/* Forward for head h and query t of every sequence: scores, softmax, weighted sum of values. */
static void fwd_task(void *vctx, int64_t task) {
    const att_ctx *c = vctx;
    const attention_layer *L = c->L;
    const int64_t B = c->B, T = L->T, dh = L->dh, cols = T * B;
    const int64_t h = task / T, t = task % T, smax = L->causal ? t : T - 1;
    float *prow = L->p + (h * T + t) * T * B;
    float *mx = L->stat + (h * T + t) * B, *sum = mx + L->heads * T * B;
    /* S[t, s] = q(t) . k(s) * scale, dh steps over the B sequences */
    const int64_t head = h * dh * cols;
    for (int64_t s = 0; s <= smax; s++)
        mac_rows(dh, L->q + head + t * B, cols, L->k + head + s * B, cols, c->scale,
                 prow + s * B, B);
    /* softmax over s <= smax, per sequence */
    memcpy(mx, prow, sizeof(float) * (size_t)B);
    for (int64_t s = 1; s <= smax; s++) {
        const float *ps = prow + s * B;
        for (int64_t b = 0; b < B; b++) mx[b] = ps[b] > mx[b] ? ps[b] : mx[b];
    }
    vzero(B, sum);
    for (int64_t s = 0; s <= smax; s++) {
        float *ps = prow + s * B;
        for (int64_t b = 0; b < B; b++) {
            ps[b] = expf(ps[b] - mx[b]);
            sum[b] += ps[b];
        }
    }
    for (int64_t b = 0; b < B; b++) sum[b] = 1.0f / sum[b];
    for (int64_t s = 0; s <= smax; s++) {
        float *ps = prow + s * B;
        for (int64_t b = 0; b < B; b++) ps[b] *= sum[b];
    }
    if (smax + 1 < T) vzero((T - 1 - smax) * B, prow + (smax + 1) * B);
    /* o(t) = sum_s P[t, s] v(s) */
    for (int64_t i = 0; i < dh; i++) {
        const int64_t row = head + i * cols;
        mac_rows(smax + 1, prow, B, L->v + row, B, 1.0f, L->o + row + t * B, B);
    }
}

/* Backward, phase 1, for head h and query t: dS[t, :] and dq(t). */
static void bwd_query_task(void *vctx, int64_t task) {
    const att_ctx *c = vctx;
    const attention_layer *L = c->L;
    const int64_t B = c->B, T = L->T, dh = L->dh, cols = T * B;
    const int64_t h = task / T, t = task % T, smax = L->causal ? t : T - 1;
    const float *prow = L->p + (h * T + t) * T * B;
    float *dsrow = L->ds + (h * T + t) * T * B;
    float *rd = L->stat + (h * T + t) * B;
    /* dP[t, s] = dO(t) . v(s) */
    const int64_t head = h * dh * cols;
    for (int64_t s = 0; s <= smax; s++)
        mac_rows(dh, L->dout + head + t * B, cols, L->v + head + s * B, cols, 1.0f, dsrow + s * B,
                 B);
    /* softmax backward: dS = P (dP - sum_s P dP), times the score scale */
    mac_rows(smax + 1, prow, B, dsrow, B, 1.0f, rd, B);
    for (int64_t s = 0; s <= smax; s++) {
        const float *ps = prow + s * B;
        float *dps = dsrow + s * B;
        for (int64_t b = 0; b < B; b++) dps[b] = ps[b] * (dps[b] - rd[b]) * c->scale;
    }
    /* dq(t) = sum_s dS[t, s] k(s) */
    for (int64_t i = 0; i < dh; i++) {
        const int64_t row = head + i * cols;
        mac_rows(smax + 1, dsrow, B, L->k + row, B, 1.0f, L->dq + row + t * B, B);
    }
}

/* Backward, phase 2, for head h and key s: dk(s) and dv(s), sums over the queries t in order. */
static void bwd_key_task(void *vctx, int64_t task) {
    const att_ctx *c = vctx;
    const attention_layer *L = c->L;
    const int64_t B = c->B, T = L->T, dh = L->dh, cols = T * B;
    const int64_t h = task / T, s = task % T, tmin = L->causal ? s : 0;
    const float *pcol = L->p + (h * T * T + s) * B, *dscol = L->ds + (h * T * T + s) * B;
    for (int64_t i = 0; i < dh; i++) {
        const int64_t row = (h * dh + i) * cols;
        mac_rows(T - tmin, dscol + tmin * T * B, T * B, L->q + row + tmin * B, B, 1.0f,
                 L->dk + row + s * B, B);
        mac_rows(T - tmin, pcol + tmin * T * B, T * B, L->dout + row + tmin * B, B, 1.0f,
                 L->dv + row + s * B, B);
    }
}

/* ---- forward / backward ---------------------------------------------------------------------- */

/* Y (d, cols) = W X + b */
static sp_status project(const attention_layer *L, int which, const float *x, float *y,
                         int64_t cols, int nthreads) {
    const float *w = L->base.param + w_off(L, which), *bias = L->base.param + b_off(L, which);
    for (int64_t i = 0; i < L->d; i++)
        for (int64_t j = 0; j < cols; j++) y[i * cols + j] = bias[i];
    return sp_sgemm(false, false, L->d, cols, L->d, 1.0f, w, L->d, x, cols, 1.0f, y, cols,
                    nthreads);
}

/* dW += dY X^T, db += rowsum dY */
static sp_status project_grad(const attention_layer *L, int which, const float *x,
                              const float *dy, int64_t cols, int nthreads) {
    float *dw = L->base.grad + w_off(L, which), *db = L->base.grad + b_off(L, which);
    for (int64_t i = 0; i < L->d; i++) db[i] += fixed_sum(dy + i * cols, cols);
    return sp_sgemm(false, true, L->d, L->d, cols, 1.0f, dy, cols, x, cols, 1.0f, dw, L->d,
                    nthreads);
}

static sp_status attention_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    attention_layer *L = (attention_layer *)l;
    const int64_t cols = L->T * run->batch;
    sp_status st;
    if ((st = project(L, WQ, x, L->q, cols, run->nthreads)) != SP_OK) return st;
    if ((st = project(L, WK, x, L->k, cols, run->nthreads)) != SP_OK) return st;
    if ((st = project(L, WV, x, L->v, cols, run->nthreads)) != SP_OK) return st;
    att_ctx c = {L, run->batch, 1.0f / sqrtf((float)L->dh)};
    sp_parallel_for(L->heads * L->T, run->nthreads, fwd_task, &c);
    return project(L, WO, L->o, y, cols, run->nthreads);
}

static sp_status attention_backward(sp_layer *l, const sp_run *run, const float *x,
                                    const float *y, const float *dy, float *dx) {
    attention_layer *L = (attention_layer *)l;
    const int64_t d = L->d, cols = L->T * run->batch;
    const float *w = l->param;
    sp_status st;
    /* output projection: dWo, dbo, dO = Wo^T dY */
    if ((st = project_grad(L, WO, L->o, dy, cols, run->nthreads)) != SP_OK) return st;
    if ((st = sp_sgemm(true, false, d, cols, d, 1.0f, w + w_off(L, WO), d, dy, cols, 0.0f,
                       L->dout, cols, run->nthreads)) != SP_OK)
        return st;
    att_ctx c = {L, run->batch, 1.0f / sqrtf((float)L->dh)};
    sp_parallel_for(L->heads * L->T, run->nthreads, bwd_query_task, &c);
    sp_parallel_for(L->heads * L->T, run->nthreads, bwd_key_task, &c);
    /* input projections */
    if ((st = project_grad(L, WQ, x, L->dq, cols, run->nthreads)) != SP_OK) return st;
    if ((st = project_grad(L, WK, x, L->dk, cols, run->nthreads)) != SP_OK) return st;
    if ((st = project_grad(L, WV, x, L->dv, cols, run->nthreads)) != SP_OK) return st;
    if (!dx) return SP_OK;
    if ((st = sp_sgemm(true, false, d, cols, d, 1.0f, w + w_off(L, WQ), d, L->dq, cols, 0.0f, dx,
                       cols, run->nthreads)) != SP_OK)
        return st;
    if ((st = sp_sgemm(true, false, d, cols, d, 1.0f, w + w_off(L, WK), d, L->dk, cols, 1.0f, dx,
                       cols, run->nthreads)) != SP_OK)
        return st;
    return sp_sgemm(true, false, d, cols, d, 1.0f, w + w_off(L, WV), d, L->dv, cols, 1.0f, dx,
                    cols, run->nthreads);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static sp_status attention_reserve(sp_layer *l, int64_t batch) {
    attention_layer *L = (attention_layer *)l;
    sp_free(L->mem);
    L->mem = NULL;
    int64_t act, probs, stat, total;
    size_t bytes;
    if (!sp_mul_i64(L->d * L->T, batch, &act) || !sp_mul_i64(L->heads * L->T * L->T, batch, &probs) ||
        !sp_mul_i64(2 * L->heads * L->T, batch, &stat) || !sp_mul_i64(act, 8, &total) ||
        !sp_add_i64(total, 2 * probs, &total) || !sp_add_i64(total, stat, &total) ||
        !sp_bytes(total, sizeof(float), &bytes))
        return sp_fail(SP_EOVERFLOW, "%s: caches overflow at batch %lld", l->name,
                       (long long)batch);
    L->mem = sp_alloc(bytes);
    if (!L->mem) return SP_ENOMEM;
    float *m = L->mem;
    float **acts[] = {&L->q, &L->k, &L->v, &L->o, &L->dq, &L->dk, &L->dv, &L->dout};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++, m += act) *acts[i] = m;
    L->p = m;
    L->ds = m + probs;
    L->stat = m + 2 * probs;
    return SP_OK;
}

static void attention_init(sp_layer *l, sp_rng *rng) {
    const attention_layer *L = (const attention_layer *)l;
    /* every weight and bias has fan_in d: U(-1/sqrt(d), 1/sqrt(d)), in arena order */
    const float bound = 1.0f / sqrtf((float)L->d);
    for (int64_t i = 0; i < l->nparam; i++)
        l->param[i] = (2.0f * sp_rng_uniform(rng) - 1.0f) * bound;
}

static void attention_free(sp_layer *l) { sp_free(((attention_layer *)l)->mem); }

static int attention_describe(const sp_layer *l, char *buf, size_t n) {
    const attention_layer *L = (const attention_layer *)l;
    int len = snprintf(buf, n, "attention");
    if (L->heads != 1)
        len += snprintf(buf + len, n - (size_t)len, " heads=%lld", (long long)L->heads);
    if (!L->causal) len += snprintf(buf + len, n - (size_t)len, " causal=0");
    return len;
}

static const sp_layer_vt attention_vt = {
    .kind = "attention",
    .forward = attention_forward,
    .backward = attention_backward,
    .init_params = attention_init,
    .reserve = attention_reserve,
    .free = attention_free,
    .describe = attention_describe,
};

sp_status sp_attention_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    int64_t heads, causal;
    sp_status st;
    if ((st = sp_args_int(a, "heads", 1, 1, 1 << 16, &heads)) != SP_OK) return st;
    if ((st = sp_args_int(a, "causal", 1, 0, 1, &causal)) != SP_OK) return st;
    if (in.h != 1)
        return sp_fail(SP_ESHAPE, "config line %d (attention): input (%lld,%lld,%lld) is not a "
                       "sequence (d, 1, T); put 'tokens' or 'embedding' before it", a->line,
                       (long long)in.c, (long long)in.h, (long long)in.w);
    if (in.c % heads != 0)
        return sp_fail(SP_EINVAL, "config line %d (attention): heads=%lld does not divide the "
                       "model width d=%lld", a->line, (long long)heads, (long long)in.c);
    int64_t wcount, probs;
    if (!sp_mul_i64(in.c, in.c, &wcount) || wcount > ((int64_t)1 << 29) ||
        !sp_mul_i64(heads * in.w, in.w, &probs) || probs > ((int64_t)1 << 31))
        return sp_fail(SP_ESHAPE, "config line %d (attention): d=%lld, T=%lld, heads=%lld is "
                       "too large", a->line, (long long)in.c, (long long)in.w, (long long)heads);
    if (4 * (wcount + in.c) > b->max_params)
        return sp_fail(SP_EFORMAT, "config line %d (attention): 4 projections of %lld x %lld "
                       "exceed the budget of %lld parameters", a->line, (long long)in.c,
                       (long long)in.c, (long long)b->max_params);
    attention_layer *L = sp_layer_alloc(sizeof *L, &attention_vt, in);
    if (!L) return SP_ENOMEM;
    L->d = in.c;
    L->T = in.w;
    L->heads = heads;
    L->dh = in.c / heads;
    L->causal = causal != 0;
    L->base.nparam = 4 * (wcount + in.c);
    *out = &L->base;
    return SP_OK;
}
