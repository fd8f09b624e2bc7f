/*
 * linear.c - the fully connected layer y = W x + b, forward and backward, with the weight
 * stored dense, dense with a fixed mask, or sparse (CSR, BSR, N:M) on the kernels of
 * sparrow/kernels.h, so that a sparse layer trains through SpMM / transposed SpMM / SDDMM and
 * never through a dense copy.
 *
 * Shapes: the layer acts on the channel axis. Input (in, h, w) per sample is an (in, cols)
 * matrix with cols = h * w * B (one column per token for sequences, per sample for vectors):
 *     forward   Y (out, cols) = W (out, in) X (in, cols) + b
 *     backward  dW += dY X^T (dense: GEMM; sparse: SDDMM at the stored entries only)
 *               db += rowsum(dY)
 *               dX  = W^T dY
 * Parameters in the arena: the weight values first (out*in dense, nnz sparse, in the format's
 * own value order), then the bias (out).
 *
 * Config: linear out=N [bias=0|1] [format=dense|mask|csr|bsr|nm] [density=D] [block=RxC]
 *         [nm=N:M]. mask/csr/bsr keep a random pattern of the given density (each row keeps
 *         round(density * in) entries, at least one; bsr per block row), nm keeps N random
 *         entries of every M. Initialization is PyTorch's default for Linear,
 *         U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, with fan_in the row's actual
 *         number of stored weights.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layer.h"
#include "sparrow/kernels.h"
#include "sparrow/sparse.h"
#include "sparrow/tensor.h"

#include "../core/internal.h"
#include "../io/model_file.h"

typedef enum lin_format { LIN_DENSE, LIN_MASK, LIN_CSR, LIN_BSR, LIN_NM } lin_format;
static const char *const format_names[] = {"dense", "mask", "csr", "bsr", "nm"};

typedef struct linear_layer {
    sp_layer base;
    int64_t in, out;
    bool bias;
    lin_format format;
    double density;
    int64_t br, bc;        /* bsr block */
    int64_t nm_n, nm_m;    /* nm pattern */
    int64_t nw;            /* weight floats in the arena */
    sp_mask *mask;         /* LIN_MASK */
    sp_csr *csr;           /* LIN_CSR: val aliases the arena */
    sp_csr *csr_t;         /* LIN_CSR: W^T for the input gradient, built on first use */
    int64_t *tperm;        /* entry k of csr_t is entry tperm[k] of csr */
    sp_bsr *bsr;
    sp_nm *nm;
} linear_layer;

static int64_t cols_of(const sp_layer *l, int64_t batch) { return l->in.h * l->in.w * batch; }

/* ---- forward / backward --------------------------------------------------------------------- */

static sp_status linear_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    linear_layer *L = (linear_layer *)l;
    const int64_t cols = cols_of(l, run->batch);
    const float *w = l->param, *b = L->bias ? l->param + L->nw : NULL;
    switch (L->format) {
    case LIN_DENSE:
    case LIN_MASK:
        /* Y = b 1^T, then Y += W X */
        for (int64_t i = 0; i < L->out; i++) {
            float bi = b ? b[i] : 0.0f;
            float *yi = y + i * cols;
            for (int64_t j = 0; j < cols; j++) yi[j] = bi;
        }
        return sp_sgemm(false, false, L->out, cols, L->in, 1.0f, w, L->in, x, cols, 1.0f, y, cols,
                        run->nthreads);
    case LIN_CSR:
        return sp_csr_spmm(L->csr, x, cols, cols, y, cols, b, SP_ACT_NONE, run->nthreads);
    case LIN_BSR:
        return sp_bsr_spmm(L->bsr, x, cols, cols, y, cols, b, SP_ACT_NONE, run->nthreads);
    case LIN_NM:
        return sp_nm_spmm(L->nm, x, cols, cols, y, cols, b, SP_ACT_NONE, run->nthreads);
    }
    return SP_EINVAL;
}

/* Activations (features x batch floats) from which a CSR layer's backward pass runs fused. */
#define FUSED_MIN_BYTES ((int64_t)16 << 20)

/* The backward pass of a CSR weight that needs dX, through W^T: each row of dX gathers its
 * entries, where scattering W's rows into dX (sp_csr_spmm_t) measured 8-12x slower than the
 * forward product on the same matrix (bench/sparse_train.sh, perf). W^T's structure is built
 * once per topology (csr_t, tperm: counting sort by column).
 * - Activations beyond the caches (FUSED_MIN_BYTES: a 333,334-wide layer at batch 64 has
 *   85 MB): dX = W^T dY and dW += dY X^T in one sweep over W^T (sp_csr_spmm_t_sddmm), each
 *   row of dY read once for both, W's values and gradients reached through tperm
 *   (0.58 s against 0.77-0.90 s for the two passes there).
 * - Otherwise two passes: sddmm in W's order (its gradient writes in order) and the forward
 *   product of W^T with values gathered through tperm. At 784-4096-4096 (1 MB of activations)
 *   the fused sweep's scattered gradient writes made the cost per entry grow by a third from
 *   1% to 20% density (bench/sparse_train.sh at ff38891). */
/* W^T's values gathered from W's every step (random reads: on one thread alone this took ~7% of
 * a 784-4096-4096-10 step at 2% density while the other threads slept) */
#define GATHER_CHUNK 32768

typedef struct gather_ctx {
    float *dst;
    const float *src;
    const int64_t *perm;
    int64_t n;
} gather_ctx;

static void gather_task(void *vctx, int64_t task) {
    const gather_ctx *g = vctx;
    const int64_t q1 = SP_MIN(g->n, (task + 1) * GATHER_CHUNK);
    for (int64_t q = task * GATHER_CHUNK; q < q1; q++) g->dst[q] = g->src[g->perm[q]];
}

static sp_status csr_backward(linear_layer *L, const float *x, const float *dy, int64_t cols,
                              float *dx, float *dw, int nthreads) {
    const sp_csr *c = L->csr;
    if (!L->csr_t) {
        sp_csr *t = NULL;
        sp_status st = sp_csr_new(L->in, L->out, c->nnz, 0, &t);
        if (st != SP_OK) return st;
        int64_t *perm = sp_alloc(sizeof(int64_t) * (size_t)(c->nnz > 0 ? c->nnz : 1));
        int64_t *next = sp_calloc((size_t)L->in + 1, sizeof(int64_t));
        if (!perm || !next) {
            sp_free(perm);
            sp_free(next);
            sp_csr_free(t);
            return SP_ENOMEM;
        }
        for (int64_t k = 0; k < c->nnz; k++) next[sp_csr_col(c, k) + 1]++;
        for (int64_t j = 0; j < L->in; j++) next[j + 1] += next[j];
        memcpy(t->row_ptr, next, sizeof(int64_t) * (size_t)(L->in + 1));
        for (int64_t i = 0; i < L->out; i++)
            for (int64_t k = c->row_ptr[i]; k < c->row_ptr[i + 1]; k++) {
                const int64_t q = next[sp_csr_col(c, k)]++;
                if (t->col_idx16) t->col_idx16[q] = (uint16_t)i;
                else t->col_idx[q] = (int32_t)i;
                perm[q] = k;
            }
        sp_free(next);
        L->csr_t = t;
        L->tperm = perm;
    }
    if (SP_MAX(L->in, L->out) * cols * (int64_t)sizeof(float) >= FUSED_MIN_BYTES)
        return sp_csr_spmm_t_sddmm(L->csr_t, L->tperm, L->base.param, dy, cols, x, cols, cols,
                                   dx, cols, dw, true, nthreads);
    sp_status st = sp_csr_sddmm(c, dy, cols, x, cols, cols, dw, true, nthreads);
    if (st != SP_OK) return st;
    sp_csr *t = L->csr_t;
    gather_ctx g = {t->val, L->base.param, L->tperm, t->nnz};
    sp_parallel_for((t->nnz + GATHER_CHUNK - 1) / GATHER_CHUNK, nthreads, gather_task, &g);
    return sp_csr_spmm(t, dy, cols, cols, dx, cols, NULL, SP_ACT_NONE, nthreads);
}

/* Drops W^T after a topology change. */
static void drop_transpose(linear_layer *L) {
    sp_csr_free(L->csr_t);
    sp_free(L->tperm);
    L->csr_t = NULL;
    L->tperm = NULL;
}

/* db[i] += the sum of row i of dY, left to right. Eight rows at a time: eight independent chains
 * of adds side by side, where one row alone waits on every add (a 4096 x 64 dY took ~0.3 ms
 * that way, single-threaded, while the other threads slept). The order within a row, and so the
 * bits, are the plain loop's. */
#define BIAS_ROWS 256 /* rows per task */

typedef struct bias_ctx {
    const float *dy;
    int64_t cols, rows;
    float *db;
} bias_ctx;

static void bias_task(void *vctx, int64_t task) {
    const bias_ctx *c = vctx;
    const int64_t cols = c->cols, i1 = SP_MIN(c->rows, (task + 1) * BIAS_ROWS);
    int64_t i = task * BIAS_ROWS;
    for (; i + 8 <= i1; i += 8) {
        const float *r = c->dy + i * cols;
        float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t j = 0; j < cols; j++)
            for (int t = 0; t < 8; t++) s[t] += r[t * cols + j];
        for (int t = 0; t < 8; t++) c->db[i + t] += s[t];
    }
    for (; i < i1; i++) {
        const float *r = c->dy + i * cols;
        float s = 0.0f;
        for (int64_t j = 0; j < cols; j++) s += r[j];
        c->db[i] += s;
    }
}

static sp_status linear_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                                 const float *dy, float *dx) {
    linear_layer *L = (linear_layer *)l;
    const int64_t cols = cols_of(l, run->batch);
    float *dw = l->grad, *db = L->bias ? l->grad + L->nw : NULL;
    sp_status st = SP_OK;
    if (db) {
        bias_ctx c = {dy, cols, L->out, db};
        sp_parallel_for((L->out + BIAS_ROWS - 1) / BIAS_ROWS, run->nthreads, bias_task, &c);
    }
    switch (L->format) {
    case LIN_DENSE:
    case LIN_MASK:
        st = sp_sgemm(false, true, L->out, L->in, cols, 1.0f, dy, cols, x, cols, 1.0f, dw, L->in,
                      run->nthreads);
        if (st == SP_OK && L->mask) sp_mask_apply(L->mask, dw, L->in);
        if (st == SP_OK && dx)
            st = sp_sgemm(true, false, L->in, cols, L->out, 1.0f, l->param, L->in, dy, cols, 0.0f,
                          dx, cols, run->nthreads);
        return st;
    case LIN_CSR:
        if (dx) st = csr_backward(L, x, dy, cols, dx, dw, run->nthreads);
        else st = sp_csr_sddmm(L->csr, dy, cols, x, cols, cols, dw, true, run->nthreads);
        return st;
    case LIN_BSR:
        st = sp_bsr_sddmm(L->bsr, dy, cols, x, cols, cols, dw, true, run->nthreads);
        if (st == SP_OK && dx)
            st = sp_bsr_spmm_t(L->bsr, dy, cols, cols, dx, cols, false, run->nthreads);
        return st;
    case LIN_NM:
        st = sp_nm_sddmm(L->nm, dy, cols, x, cols, cols, dw, true, run->nthreads);
        if (st == SP_OK && dx)
            st = sp_nm_spmm_t(L->nm, dy, cols, cols, dx, cols, false, run->nthreads);
        return st;
    }
    return SP_EINVAL;
}

/* ---- initialization ------------------------------------------------------------------------- */

static float uniform(sp_rng *r, float bound) { return (2.0f * sp_rng_uniform(r) - 1.0f) * bound; }

static void linear_init(sp_layer *l, sp_rng *rng) {
    linear_layer *L = (linear_layer *)l;
    float *w = l->param, *b = L->bias ? l->param + L->nw : NULL;
    for (int64_t i = 0; i < L->out; i++) {
        int64_t fan_in = L->in;
        switch (L->format) {
        case LIN_DENSE: break;
        case LIN_MASK: {
            fan_in = 0;
            for (int64_t j = 0; j < L->in; j++) fan_in += sp_mask_get(L->mask, i, j);
            float bound = 1.0f / sqrtf((float)SP_MAX(fan_in, 1));
            for (int64_t j = 0; j < L->in; j++)
                w[i * L->in + j] = sp_mask_get(L->mask, i, j) ? uniform(rng, bound) : 0.0f;
            break;
        }
        case LIN_CSR: {
            int64_t k0 = L->csr->row_ptr[i], k1 = L->csr->row_ptr[i + 1];
            fan_in = k1 - k0;
            float bound = 1.0f / sqrtf((float)SP_MAX(fan_in, 1));
            for (int64_t k = k0; k < k1; k++) w[k] = uniform(rng, bound);
            break;
        }
        case LIN_BSR: {
            const sp_bsr *B = L->bsr;
            int64_t I = i / B->br, r = i % B->br;
            fan_in = 0;
            for (int64_t k = B->row_ptr[I]; k < B->row_ptr[I + 1]; k++)
                fan_in += SP_MIN(B->bc, B->cols - (int64_t)B->col_idx[k] * B->bc);
            float bound = 1.0f / sqrtf((float)SP_MAX(fan_in, 1));
            for (int64_t k = B->row_ptr[I]; k < B->row_ptr[I + 1]; k++)
                for (int64_t c = 0; c < B->bc; c++) {
                    int64_t j = (int64_t)B->col_idx[k] * B->bc + c;
                    w[k * B->br * B->bc + r * B->bc + c] = j < B->cols ? uniform(rng, bound) : 0.0f;
                }
            break;
        }
        case LIN_NM: {
            const sp_nm *N = L->nm;
            fan_in = N->groups * N->n;
            float bound = 1.0f / sqrtf((float)fan_in);
            for (int64_t s = 0; s < N->groups * N->n; s++)
                w[i * N->groups * N->n + s] = uniform(rng, bound);
            break;
        }
        }
        if (L->format == LIN_DENSE) {
            float bound = 1.0f / sqrtf((float)fan_in);
            for (int64_t j = 0; j < L->in; j++) w[i * L->in + j] = uniform(rng, bound);
        }
        if (b) b[i] = uniform(rng, 1.0f / sqrtf((float)SP_MAX(fan_in, 1)));
    }
}

/* The sparse structures keep their values in the arena: swap their own array for the view. */
static sp_status linear_bind(sp_layer *l) {
    linear_layer *L = (linear_layer *)l;
    if (L->csr) {
        sp_free(L->csr->val);
        L->csr->val = l->param;
    } else if (L->bsr) {
        sp_free(L->bsr->val);
        L->bsr->val = l->param;
    } else if (L->nm) {
        sp_free(L->nm->val);
        L->nm->val = l->param;
    }
    return SP_OK;
}

static void linear_free(sp_layer *l) {
    linear_layer *L = (linear_layer *)l;
    /* values that alias the arena are not ours to free */
    if (L->csr && L->csr->val == l->param) L->csr->val = NULL;
    if (L->bsr && L->bsr->val == l->param) L->bsr->val = NULL;
    if (L->nm && L->nm->val == l->param) L->nm->val = NULL;
    drop_transpose(L);
    sp_mask_free(L->mask);
    sp_csr_free(L->csr);
    sp_bsr_free(L->bsr);
    sp_nm_free(L->nm);
}

static int linear_describe(const sp_layer *l, char *buf, size_t n) {
    const linear_layer *L = (const linear_layer *)l;
    int len = snprintf(buf, n, "linear out=%lld", (long long)L->out);
    if (!L->bias) len += snprintf(buf + len, n - (size_t)len, " bias=0");
    if (L->format != LIN_DENSE)
        len += snprintf(buf + len, n - (size_t)len, " format=%s", format_names[L->format]);
    if (L->format == LIN_MASK || L->format == LIN_CSR || L->format == LIN_BSR)
        len += snprintf(buf + len, n - (size_t)len, " density=%.9g", L->density);
    if (L->format == LIN_BSR)
        len += snprintf(buf + len, n - (size_t)len, " block=%lldx%lld", (long long)L->br,
                        (long long)L->bc);
    if (L->format == LIN_NM)
        len += snprintf(buf + len, n - (size_t)len, " nm=%lld:%lld", (long long)L->nm_n,
                        (long long)L->nm_m);
    return len;
}

static void linear_storage(const sp_layer *l, const char **format, int64_t *dense_params,
                           size_t *bytes) {
    const linear_layer *L = (const linear_layer *)l;
    *format = format_names[L->format];
    *dense_params = L->out * L->in + (L->bias ? L->out : 0);
    size_t b = sizeof(float) * (size_t)l->nparam;
    if (L->csr) b += sp_csr_bytes(L->csr) - sizeof(float) * (size_t)L->csr->nnz;
    if (L->bsr) b += sp_bsr_bytes(L->bsr) - sizeof(float) * (size_t)L->nw;
    if (L->nm) b += sp_nm_bytes(L->nm) - sizeof(float) * (size_t)L->nw;
    if (L->mask) b += sizeof(uint64_t) * (size_t)(L->mask->rows * L->mask->words_per_row);
    *bytes = b;
}

static sp_status linear_pattern(const sp_layer *l, sp_mask **out) {
    const linear_layer *L = (const linear_layer *)l;
    *out = NULL;
    if (L->format == LIN_DENSE) return SP_OK;
    sp_mask *m = NULL;
    sp_status st = sp_mask_new(L->out, L->in, &m);
    if (st != SP_OK) return st;
    if (L->mask) {
        memcpy(m->bits, L->mask->bits, sizeof(uint64_t) * (size_t)(L->out * m->words_per_row));
    } else if (L->csr) {
        for (int64_t i = 0; i < L->out; i++)
            for (int64_t k = L->csr->row_ptr[i]; k < L->csr->row_ptr[i + 1]; k++)
                sp_mask_set(m, i, sp_csr_col(L->csr, k), true);
    } else if (L->bsr) {
        const sp_bsr *B = L->bsr;
        for (int64_t I = 0; I < B->brows; I++)
            for (int64_t k = B->row_ptr[I]; k < B->row_ptr[I + 1]; k++)
                for (int64_t r = I * B->br; r < SP_MIN(B->rows, (I + 1) * B->br); r++)
                    for (int64_t c = (int64_t)B->col_idx[k] * B->bc;
                         c < SP_MIN(B->cols, ((int64_t)B->col_idx[k] + 1) * B->bc); c++)
                        sp_mask_set(m, r, c, true);
    } else if (L->nm) {
        const sp_nm *N = L->nm;
        for (int64_t i = 0; i < N->rows; i++)
            for (int64_t g = 0; g < N->groups; g++)
                for (int64_t s2 = 0; s2 < N->n; s2++)
                    sp_mask_set(m, i, g * N->m + N->idx[(i * N->groups + g) * N->n + s2], true);
    }
    *out = m;
    return SP_OK;
}

static sp_status linear_get_dense(const sp_layer *l, float *w, float *bias) {
    const linear_layer *L = (const linear_layer *)l;
    sp_status st = SP_OK;
    if (L->csr) st = sp_csr_to_dense(L->csr, w, L->in);
    else if (L->bsr) st = sp_bsr_to_dense(L->bsr, w, L->in);
    else if (L->nm) st = sp_nm_to_dense(L->nm, w, L->in);
    else memcpy(w, l->param, sizeof(float) * (size_t)(L->out * L->in));
    if (bias) {
        if (L->bias) memcpy(bias, l->param + L->nw, sizeof(float) * (size_t)L->out);
        else memset(bias, 0, sizeof(float) * (size_t)L->out);
    }
    return st;
}

static sp_status linear_set_dense(sp_layer *l, const float *w, const float *bias) {
    linear_layer *L = (linear_layer *)l;
    float *v = l->param;
    if (L->csr) {
        for (int64_t i = 0; i < L->out; i++)
            for (int64_t k = L->csr->row_ptr[i]; k < L->csr->row_ptr[i + 1]; k++)
                v[k] = w[i * L->in + sp_csr_col(L->csr, k)];
    } else if (L->bsr) {
        const sp_bsr *B = L->bsr;
        for (int64_t I = 0; I < B->brows; I++)
            for (int64_t k = B->row_ptr[I]; k < B->row_ptr[I + 1]; k++)
                for (int64_t r = 0; r < B->br; r++)
                    for (int64_t c = 0; c < B->bc; c++) {
                        int64_t i = I * B->br + r, j = (int64_t)B->col_idx[k] * B->bc + c;
                        v[(k * B->br + r) * B->bc + c] =
                            i < B->rows && j < B->cols ? w[i * L->in + j] : 0.0f;
                    }
    } else if (L->nm) {
        const sp_nm *N = L->nm;
        for (int64_t i = 0; i < N->rows; i++)
            for (int64_t g = 0; g < N->groups; g++)
                for (int64_t s2 = 0; s2 < N->n; s2++) {
                    int64_t slot = (i * N->groups + g) * N->n + s2;
                    v[slot] = w[i * L->in + g * N->m + N->idx[slot]];
                }
    } else {
        memcpy(v, w, sizeof(float) * (size_t)(L->out * L->in));
        if (L->mask) sp_mask_apply(L->mask, v, L->in);
    }
    if (bias && L->bias) memcpy(v + L->nw, bias, sizeof(float) * (size_t)L->out);
    return SP_OK;
}

static sp_status linear_set_pattern(sp_layer *l, const sp_mask *keep) {
    linear_layer *L = (linear_layer *)l;
    if (L->format != LIN_MASK)
        return sp_fail(SP_EINVAL, "layer %s stores its weight as %s; only a masked layer "
                       "(format=mask) changes its pattern in place", l->name,
                       format_names[L->format]);
    if (keep->rows != L->out || keep->cols != L->in)
        return sp_fail(SP_ESHAPE, "layer %s: a %lldx%lld pattern for a %lldx%lld weight", l->name,
                       (long long)keep->rows, (long long)keep->cols, (long long)L->out,
                       (long long)L->in);
    memcpy(L->mask->bits, keep->bits, sizeof(uint64_t) * (size_t)(L->out * keep->words_per_row));
    sp_mask_apply(L->mask, l->param, L->in);
    L->density = (double)sp_mask_count(keep) / (double)(L->out * L->in);
    return SP_OK;
}

/* Dynamic sparse training: entries drop[] go, positions grow[] come in at weight 0, in one merge
 * pass per row over the old entries (sorted by column) and the grown ones (sorted by position). */
static sp_status linear_rewire(sp_layer *l, const int64_t *drop, const int64_t *grow, int64_t n,
                               int64_t *src) {
    linear_layer *L = (linear_layer *)l;
    if (L->format != LIN_CSR)
        return sp_fail(SP_EINVAL, "layer %s stores its weight as %s; only CSR rewires", l->name,
                       format_names[L->format]);
    if (L->csr->borrowed)
        return sp_fail(SP_EINVAL, "layer %s: its structure is read-only (a mapped model file)",
                       l->name);
    sp_csr *c = L->csr;
    const int64_t nnz = c->nnz, total = L->out * L->in;
    /* validate everything before changing anything */
    for (int64_t k = 0; k < n; k++) {
        if (drop[k] < 0 || drop[k] >= nnz || (k > 0 && drop[k] <= drop[k - 1]))
            return sp_fail(SP_EINVAL, "layer %s: drop[%lld] = %lld is out of range [0, %lld) or "
                           "not ascending", l->name, (long long)k, (long long)drop[k],
                           (long long)nnz);
        if (grow[k] < 0 || grow[k] >= total || (k > 0 && grow[k] <= grow[k - 1]))
            return sp_fail(SP_EINVAL, "layer %s: grow[%lld] = %lld is out of range [0, %lld) or "
                           "not ascending", l->name, (long long)k, (long long)grow[k],
                           (long long)total);
    }
    int64_t *rp = sp_alloc(sizeof(int64_t) * (size_t)(L->out + 1));
    int32_t *ci = sp_alloc(sizeof(int32_t) * (size_t)(nnz > 0 ? nnz : 1));
    float *v = sp_alloc(sizeof(float) * (size_t)(nnz > 0 ? nnz : 1));
    if (!rp || !ci || !v) {
        sp_free(rp);
        sp_free(ci);
        sp_free(v);
        return SP_ENOMEM;
    }
    sp_status st = SP_OK;
    int64_t o = 0, d = 0, g = 0;
    rp[0] = 0;
    for (int64_t i = 0; i < L->out && st == SP_OK; i++) {
        int64_t k = c->row_ptr[i];
        const int64_t k1 = c->row_ptr[i + 1];
        for (;;) {
            while (k < k1 && d < n && drop[d] == k) k++, d++; /* dropped */
            const bool have_old = k < k1;
            const bool have_new = g < n && grow[g] / L->in == i;
            if (!have_old && !have_new) break;
            const int64_t oc = have_old ? sp_csr_col(c, k) : INT64_MAX;
            const int64_t nc = have_new ? grow[g] % L->in : INT64_MAX;
            if (have_new && nc == oc) {
                st = sp_fail(SP_EINVAL, "layer %s: grow position %lld (row %lld, column %lld) "
                             "is already stored", l->name, (long long)grow[g], (long long)i,
                             (long long)nc);
                break;
            }
            if (o >= nnz) {
                st = sp_fail(SP_EINVAL, "layer %s: more grown than dropped entries", l->name);
                break;
            }
            if (oc < nc) {
                ci[o] = (int32_t)oc;
                v[o] = l->param[k];
                src[o++] = k++;
            } else {
                ci[o] = (int32_t)nc;
                v[o] = 0.0f;
                src[o++] = -1;
                g++;
            }
        }
        rp[i + 1] = o;
    }
    if (st == SP_OK && (o != nnz || d != n || g != n))
        st = sp_fail(SP_EINVAL, "layer %s: %lld drops and %lld grows did not all apply (a grow "
                     "position out of order?)", l->name, (long long)d, (long long)g);
    if (st == SP_OK) {
        memcpy(c->row_ptr, rp, sizeof(int64_t) * (size_t)(L->out + 1));
        for (int64_t k = 0; k < nnz; k++) {
            if (c->col_idx16) c->col_idx16[k] = (uint16_t)ci[k];
            else c->col_idx[k] = ci[k];
        }
        memcpy(l->param, v, sizeof(float) * (size_t)nnz);
        memset(l->grad, 0, sizeof(float) * (size_t)nnz);
        drop_transpose(L);
    }
    sp_free(rp);
    sp_free(ci);
    sp_free(v);
    return st;
}

static const sp_layer_vt linear_vt;

mf_storage sp_linear_param_storage(const sp_layer *l) {
    if (!l || l->vt != &linear_vt) return MF_DENSE;
    switch (((const linear_layer *)l)->format) {
    case LIN_CSR: return MF_CSR_VALUES;
    case LIN_BSR: return MF_BSR_VALUES;
    case LIN_NM: return MF_NM_VALUES;
    default: return MF_DENSE;
    }
}

const sp_csr *sp_linear_csr(const sp_layer *l) {
    if (!l || l->vt != &linear_vt) return NULL;
    const linear_layer *L = (const linear_layer *)l;
    return L->format == LIN_CSR ? L->csr : NULL;
}

static const sp_layer_vt linear_vt = {
    .kind = "linear",
    .forward = linear_forward,
    .backward = linear_backward,
    .init_params = linear_init,
    .bind = linear_bind,
    .free = linear_free,
    .describe = linear_describe,
    .storage = linear_storage,
    .pattern = linear_pattern,
    .get_dense = linear_get_dense,
    .set_dense = linear_set_dense,
    .set_pattern = linear_set_pattern,
    .rewire = linear_rewire,
};

/* ---- construction --------------------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Chooses k distinct positions of [0, n) (Floyd's algorithm: k draws, whatever n) and writes
 * them sorted to out. bits is an all-zero scratch bitmap of n bits, left all-zero again. Costs
 * O(k log k), not O(n): a row of a million inputs with forty entries is drawn without scanning
 * the bitmap; memory stays O(n / 64 + k), never a dense (out x in) buffer. */
static void pick_sorted(int64_t n, int64_t k, uint64_t *bits, int64_t *out, sp_rng *rng) {
    int64_t c = 0;
    for (int64_t j = n - k; j < n; j++) {
        int64_t t = (int64_t)sp_rng_below(rng, (uint64_t)(j + 1));
        if (bits[t >> 6] >> (t & 63) & 1u) t = j;
        bits[t >> 6] |= (uint64_t)1 << (t & 63);
        out[c++] = t;
    }
    qsort(out, (size_t)k, sizeof *out, cmp_i64);
    for (int64_t i = 0; i < k; i++) bits[out[i] >> 6] = 0;
}

static sp_status budget_fail(const sp_args *a, int64_t need, int64_t have) {
    return sp_fail(SP_EFORMAT, "config line %d (linear): %lld parameters exceed the budget of "
                   "%lld", a->line, (long long)need, (long long)have);
}

/* A given (out x in) pattern, built into the layer's structure: the mask format keeps it, CSR
 * stores its set bits, BSR every block that holds a set bit, N:M its set bits padded to N per
 * group at the lowest free offsets. Every size is checked against the budget first. */
static sp_status build_given(linear_layer *L, sp_args *a, sp_build *b) {
    const sp_mask *pm = b->pattern;
    const int64_t out = L->out, in = L->in;
    sp_status st;
    if (pm->rows != out || pm->cols != in || pm->words_per_row != (in + 63) / 64)
        return sp_fail(SP_EFORMAT, "config line %d (linear): the given pattern is %lldx%lld, the "
                       "layer %lldx%lld", a->line, (long long)pm->rows, (long long)pm->cols,
                       (long long)out, (long long)in);
    if (in % 64)
        for (int64_t i = 0; i < out; i++)
            if (pm->bits[i * pm->words_per_row + pm->words_per_row - 1] >> (in % 64))
                return sp_fail(SP_EFORMAT, "config line %d (linear): pattern row %lld has bits "
                               "past column %lld", a->line, (long long)i, (long long)in);
    b->pattern_used = true;
    L->density = (double)sp_mask_count(pm) / (double)(out * in); /* what describe reports */
    if (L->density <= 0.0) L->density = 1e-9;
    if (L->format == LIN_MASK) {
        st = sp_mask_new(out, in, &L->mask);
        if (st != SP_OK) return st;
        memcpy(L->mask->bits, pm->bits, sizeof(uint64_t) * (size_t)(out * pm->words_per_row));
        L->nw = out * in;
        return SP_OK;
    }
    if (L->format == LIN_CSR) {
        int64_t nnz = sp_mask_count(pm);
        if (nnz + out > b->max_params) return budget_fail(a, nnz + out, b->max_params);
        st = sp_csr_new(out, in, nnz, 0, &L->csr);
        if (st != SP_OK) return st;
        int64_t k = 0;
        for (int64_t i = 0; i < out; i++) {
            for (int64_t w = 0; w < pm->words_per_row; w++)
                for (uint64_t x = pm->bits[i * pm->words_per_row + w]; x; x &= x - 1) {
                    int64_t j = w * 64 + __builtin_ctzll(x);
                    if (L->csr->col_idx16) L->csr->col_idx16[k] = (uint16_t)j;
                    else L->csr->col_idx[k] = (int32_t)j;
                    L->csr->val[k++] = 0.0f;
                }
            L->csr->row_ptr[i + 1] = k;
        }
        L->nw = nnz;
        return sp_csr_validate(L->csr);
    }
    if (L->format == LIN_BSR) {
        const int64_t brows = (out + L->br - 1) / L->br, bcols = (in + L->bc - 1) / L->bc;
        /* blocks holding a set bit, block row by block row (a bitmap of bcols bits) */
        uint64_t *hit = sp_calloc((size_t)(bcols + 63) / 64, sizeof(uint64_t));
        if (!hit) return SP_ENOMEM;
        int64_t nblocks = 0;
        for (int pass = 0; pass < 2; pass++) {
            nblocks = 0;
            for (int64_t I = 0; I < brows; I++) {
                memset(hit, 0, sizeof(uint64_t) * (size_t)((bcols + 63) / 64));
                for (int64_t i = I * L->br; i < SP_MIN(out, (I + 1) * L->br); i++)
                    for (int64_t w = 0; w < pm->words_per_row; w++)
                        for (uint64_t x = pm->bits[i * pm->words_per_row + w]; x; x &= x - 1) {
                            int64_t J = (w * 64 + __builtin_ctzll(x)) / L->bc;
                            hit[J >> 6] |= (uint64_t)1 << (J & 63);
                        }
                for (int64_t w = 0; w < (bcols + 63) / 64; w++)
                    for (uint64_t x = hit[w]; x; x &= x - 1) {
                        if (pass) L->bsr->col_idx[nblocks] = (int32_t)(w * 64 + __builtin_ctzll(x));
                        nblocks++;
                    }
                if (pass) L->bsr->row_ptr[I + 1] = nblocks;
            }
            if (pass == 0) {
                int64_t nw;
                if (!sp_mul_i64(nblocks, L->br * L->bc, &nw) || nw + out > b->max_params) {
                    sp_free(hit);
                    return budget_fail(a, nblocks * L->br * L->bc + out, b->max_params);
                }
                st = sp_bsr_new(out, in, (int32_t)L->br, (int32_t)L->bc, nblocks, &L->bsr);
                if (st != SP_OK) {
                    sp_free(hit);
                    return st;
                }
                L->nw = nw;
            }
        }
        sp_free(hit);
        return sp_bsr_validate(L->bsr);
    }
    /* N:M */
    const int64_t groups = (in + L->nm_m - 1) / L->nm_m;
    int64_t nw;
    if (!sp_mul_i64(out, groups * L->nm_n, &nw) || nw + out > b->max_params)
        return budget_fail(a, out * groups * L->nm_n + out, b->max_params);
    st = sp_nm_new(out, in, (int32_t)L->nm_n, (int32_t)L->nm_m, &L->nm);
    if (st != SP_OK) return st;
    for (int64_t i = 0; i < out; i++)
        for (int64_t g = 0; g < groups; g++) {
            int64_t width = SP_MIN(L->nm_m, in - g * L->nm_m), set = 0;
            bool take[32] = {false};
            for (int64_t o = 0; o < width; o++)
                if (sp_mask_get(pm, i, g * L->nm_m + o)) take[o] = true, set++;
            if (set > L->nm_n)
                return sp_fail(SP_EFORMAT, "config line %d (linear): pattern row %lld, group %lld "
                               "holds %lld entries, more than N=%lld of nm=%lld:%lld", a->line,
                               (long long)i, (long long)g, (long long)set, (long long)L->nm_n,
                               (long long)L->nm_n, (long long)L->nm_m);
            for (int64_t o = 0; o < width && set < L->nm_n; o++)
                if (!take[o]) take[o] = true, set++; /* padding: lowest free offsets */
            int64_t s2 = 0;
            for (int64_t o = 0; o < width; o++)
                if (take[o]) {
                    L->nm->idx[(i * groups + g) * L->nm_n + s2] = (uint8_t)o;
                    L->nm->val[(i * groups + g) * L->nm_n + s2] = 0.0f;
                    s2++;
                }
        }
    L->nw = nw;
    return sp_nm_validate(L->nm);
}

/* A given CSR structure: only a CSR layer takes it, copied entry by entry (its values are not
 * read), so a layer too large for a bit mask loads in memory proportional to its entries. A
 * borrowed one (a mapped model file) is shared, not copied: the layer's structure points at the
 * same read-only arrays, and its values are bound to the parameters by linear_bind. */
static sp_status build_given_csr(linear_layer *L, sp_args *a, sp_build *b) {
    const sp_csr *pc = b->pattern_csr;
    if (L->format != LIN_CSR)
        return sp_fail(SP_EFORMAT, "config line %d (linear): a CSR pattern was given for a layer "
                       "stored as %s", a->line, format_names[L->format]);
    if (pc->rows != L->out || pc->cols != L->in)
        return sp_fail(SP_EFORMAT, "config line %d (linear): the given pattern is %lldx%lld, the "
                       "layer %lldx%lld", a->line, (long long)pc->rows, (long long)pc->cols,
                       (long long)L->out, (long long)L->in);
    sp_status st = sp_csr_validate(pc);
    if (st != SP_OK) return st;
    if (pc->nnz + L->out > b->max_params) return budget_fail(a, pc->nnz + L->out, b->max_params);
    b->pattern_used = true;
    if (pc->borrowed) {
        L->csr = sp_calloc(1, sizeof *L->csr);
        if (!L->csr) return SP_ENOMEM;
        *L->csr = (sp_csr){.rows = pc->rows, .cols = pc->cols, .nnz = pc->nnz,
                           .row_ptr = pc->row_ptr, .col_idx = pc->col_idx,
                           .col_idx16 = pc->col_idx16, .borrowed = true};
        L->nw = pc->nnz;
        L->density = SP_MAX(1e-9, (double)pc->nnz / ((double)L->out * (double)L->in));
        return SP_OK;
    }
    st = sp_csr_new(L->out, L->in, pc->nnz, 0, &L->csr);
    if (st != SP_OK) return st;
    memcpy(L->csr->row_ptr, pc->row_ptr, sizeof(int64_t) * (size_t)(L->out + 1));
    for (int64_t k = 0; k < pc->nnz; k++) {
        const int64_t j = sp_csr_col(pc, k);
        if (L->csr->col_idx16) L->csr->col_idx16[k] = (uint16_t)j;
        else L->csr->col_idx[k] = (int32_t)j;
    }
    memset(L->csr->val, 0, sizeof(float) * (size_t)pc->nnz);
    L->nw = pc->nnz;
    L->density = SP_MAX(1e-9, (double)pc->nnz / ((double)L->out * (double)L->in));
    return SP_OK;
}

/* The random pattern of a masked or sparse layer, built straight into its structure. */
static sp_status build_pattern(linear_layer *L, sp_args *a, sp_build *b) {
    if (b->pattern) return build_given(L, a, b);
    if (b->pattern_csr) return build_given_csr(L, a, b);
    const int64_t out = L->out, in = L->in;
    sp_status st = SP_OK;
    if (L->format == LIN_MASK) {
        /* dense storage: the mask is out x in bits beside out x in weights (budget checked) */
        st = sp_mask_new(out, in, &L->mask);
        if (st != SP_OK) return st;
        int64_t k = SP_MAX(1, (int64_t)llround(L->density * (double)in));
        uint64_t *bits = sp_calloc((size_t)(in + 63) / 64, sizeof(uint64_t));
        int64_t *cols = sp_alloc(sizeof(int64_t) * (size_t)k);
        if (!bits || !cols) st = SP_ENOMEM;
        for (int64_t i = 0; st == SP_OK && i < out; i++) {
            pick_sorted(in, k, bits, cols, &b->rng);
            for (int64_t c = 0; c < k; c++) sp_mask_set(L->mask, i, cols[c], true);
        }
        sp_free(bits);
        sp_free(cols);
        L->nw = out * in;
        L->density = (double)k / (double)in; /* what was built, so that describe round-trips */
        return st;
    }
    if (L->format == LIN_CSR) {
        int64_t k = SP_MAX(1, (int64_t)llround(L->density * (double)in)), nnz;
        if (!sp_mul_i64(out, k, &nnz) || nnz + out > b->max_params)
            return budget_fail(a, out * k + out, b->max_params);
        st = sp_csr_new(out, in, nnz, 0, &L->csr);
        if (st != SP_OK) return st;
        uint64_t *bits = sp_calloc((size_t)(in + 63) / 64, sizeof(uint64_t));
        int64_t *cols = sp_alloc(sizeof(int64_t) * (size_t)k);
        if (!bits || !cols) st = SP_ENOMEM;
        for (int64_t i = 0; st == SP_OK && i < out; i++) {
            pick_sorted(in, k, bits, cols, &b->rng);
            L->csr->row_ptr[i + 1] = (i + 1) * k;
            for (int64_t c = 0; c < k; c++) {
                if (L->csr->col_idx16) L->csr->col_idx16[i * k + c] = (uint16_t)cols[c];
                else L->csr->col_idx[i * k + c] = (int32_t)cols[c];
            }
        }
        sp_free(bits);
        sp_free(cols);
        if (st == SP_OK) memset(L->csr->val, 0, sizeof(float) * (size_t)nnz);
        if (st == SP_OK) st = sp_csr_validate(L->csr);
        L->nw = nnz;
        L->density = (double)k / (double)in; /* what was built, as a loaded model reports it */
        return st;
    }
    if (L->format == LIN_BSR) {
        int64_t brows = (out + L->br - 1) / L->br, bcols = (in + L->bc - 1) / L->bc;
        int64_t k = SP_MAX(1, (int64_t)llround(L->density * (double)bcols)), nblocks, nw;
        if (!sp_mul_i64(brows, k, &nblocks) || !sp_mul_i64(nblocks, L->br * L->bc, &nw) ||
            nw + out > b->max_params)
            return budget_fail(a, brows * k * L->br * L->bc + out, b->max_params);
        st = sp_bsr_new(out, in, (int32_t)L->br, (int32_t)L->bc, nblocks, &L->bsr);
        if (st != SP_OK) return st;
        uint64_t *bits = sp_calloc((size_t)(bcols + 63) / 64, sizeof(uint64_t));
        int64_t *cols = sp_alloc(sizeof(int64_t) * (size_t)k);
        if (!bits || !cols) st = SP_ENOMEM;
        for (int64_t I = 0; st == SP_OK && I < brows; I++) {
            pick_sorted(bcols, k, bits, cols, &b->rng);
            L->bsr->row_ptr[I + 1] = (I + 1) * k;
            for (int64_t c = 0; c < k; c++) L->bsr->col_idx[I * k + c] = (int32_t)cols[c];
        }
        sp_free(bits);
        sp_free(cols);
        if (st == SP_OK) st = sp_bsr_validate(L->bsr);
        L->nw = nw;
        L->density = (double)k / (double)bcols; /* block density, as built */
        return st;
    }
    /* N:M: n random offsets of every group of m (the last, partial group has at least n) */
    int64_t groups = (in + L->nm_m - 1) / L->nm_m, nw;
    if (!sp_mul_i64(out, groups * L->nm_n, &nw) || nw + out > b->max_params)
        return budget_fail(a, out * groups * L->nm_n + out, b->max_params);
    st = sp_nm_new(out, in, (int32_t)L->nm_n, (int32_t)L->nm_m, &L->nm);
    if (st != SP_OK) return st;
    uint64_t bits[1] = {0};
    int64_t offs[32];
    for (int64_t i = 0; i < out; i++)
        for (int64_t g = 0; g < groups; g++) {
            int64_t width = SP_MIN(L->nm_m, in - g * L->nm_m);
            pick_sorted(width, L->nm_n, bits, offs, &b->rng);
            for (int64_t s2 = 0; s2 < L->nm_n; s2++) {
                L->nm->idx[(i * groups + g) * L->nm_n + s2] = (uint8_t)offs[s2];
                L->nm->val[(i * groups + g) * L->nm_n + s2] = 0.0f;
            }
        }
    L->nw = nw;
    return sp_nm_validate(L->nm);
}

sp_status sp_linear_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    int64_t nout, bias;
    const char *fmt;
    double density;
    int64_t br, bc;
    const char *nm;
    sp_status st;
    if ((st = sp_args_int(a, "out", -1, 1, 1 << 24, &nout)) != SP_OK) return st;
    if (nout < 0) return sp_fail(SP_EINVAL, "config line %d (linear): out=N is required", a->line);
    if ((st = sp_args_int(a, "bias", 1, 0, 1, &bias)) != SP_OK) return st;
    if ((st = sp_args_str(a, "format", "dense", &fmt)) != SP_OK) return st;
    if ((st = sp_args_num(a, "density", 1.0, 1e-9, 1.0, &density)) != SP_OK) return st;
    if ((st = sp_args_pair(a, "block", 4, 1, 64, &br, &bc)) != SP_OK) return st;
    if ((st = sp_args_str(a, "nm", "2:4", &nm)) != SP_OK) return st;
    int f = -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(fmt, format_names[i]) == 0) f = i;
    if (f < 0)
        return sp_fail(SP_EINVAL, "config line %d (linear): format=%s is not one of "
                       "dense, mask, csr, bsr, nm", a->line, fmt);
    int nn = 0, mm = 0, used = 0;
    if (sscanf(nm, "%d:%d%n", &nn, &mm, &used) != 2 || nm[used] || nn < 1 || mm < nn || mm > 32)
        return sp_fail(SP_EINVAL, "config line %d (linear): nm=%s is not N:M with "
                       "1 <= N <= M <= 32", a->line, nm);
    /* a weight is limited to 2^31 dense entries, except in CSR: a CSR layer's dense size only
     * has to be countable (its indices are int32), since its storage, its pattern in model
     * files and everything done to it grow with its entries (checked in build_pattern, before
     * allocating). BSR and N:M layers keep the limit: their patterns are saved and pruned as
     * out x in bit masks. */
    int64_t wcount;
    const bool stores_all = f == LIN_DENSE || f == LIN_MASK;
    if (!sp_mul_i64(nout, in.c, &wcount) || (f != LIN_CSR && wcount > ((int64_t)1 << 31)) ||
        in.c > INT32_MAX)
        return sp_fail(SP_ESHAPE, "config line %d (linear): weight %lld x %lld is too large "
                       "(the limit is 2^31 entries%s)", a->line, (long long)nout, (long long)in.c,
                       f == LIN_CSR ? "" : " except in format=csr");
    if (stores_all && wcount + nout > b->max_params)
        return sp_fail(SP_EFORMAT, "config line %d (linear): %lld x %lld weights exceed the "
                       "budget of %lld parameters", a->line, (long long)nout, (long long)in.c,
                       (long long)b->max_params);
    linear_layer *L = sp_layer_alloc(sizeof *L, &linear_vt, in);
    if (!L) return SP_ENOMEM;
    L->in = in.c;
    L->out = nout;
    L->bias = bias != 0;
    L->format = (lin_format)f;
    L->density = density;
    L->br = br;
    L->bc = bc;
    L->nm_n = nn;
    L->nm_m = mm;
    L->nw = nout * in.c;
    L->base.out = (sp_shape){nout, in.h, in.w};
    if (L->format != LIN_DENSE) {
        if (L->format == LIN_NM && in.c % mm != 0 && in.c % mm < nn) {
            sp_layer_free(&L->base);
            return sp_fail(SP_ESHAPE, "config line %d (linear): %lld inputs end in a group of "
                           "%lld, narrower than N=%d of nm=%s", a->line, (long long)in.c,
                           (long long)(in.c % mm), nn, nm);
        }
        st = build_pattern(L, a, b);
        if (st != SP_OK) {
            sp_layer_free(&L->base);
            return st;
        }
    }
    L->base.nparam = L->nw + (L->bias ? nout : 0);
    *out = &L->base;
    return SP_OK;
}
