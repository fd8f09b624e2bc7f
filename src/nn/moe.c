/*
 * moe.c - the mixture-of-experts block: a router picks a few experts for every token, only
 * those run, and their outputs are combined with the router's gate values.
 *
 * Config (docs/CONFIG.md):
 *     moe experts=E [top_k=K] [routing=token|noisy|expert] [router=softmax|sigmoid]
 *         [capacity=F|none] [balance=A] [zloss=Z] [shared=0|1] [renorm=0|1] {
 *       ... the layers of ONE expert, mapping (D,1,1) to (D,1,1) ...
 *     }
 * The parser builds the body E times (plus once for a shared expert), each instance with its
 * own layer indices, so experts are ordinary layers: sparse formats, pruning, sparse training,
 * checkpoint patterns and summaries work on them unchanged.
 *
 * Shapes: input and output (D, h, w) per sample; every column of the (D, N) activation,
 * N = h * w * B, is one token. Expert e runs on its group of n_e tokens as a batch of n_e
 * samples of shape (D, 1, 1).
 *
 * Forward:
 *     c = Wr x + br                                  (E, N) router logits, one GEMM
 *     h = c + eps * softplus(Wn x)                   routing=noisy in training only (Shazeer et
 *                                                    al. 2017); eps ~ N(0,1) from the stream
 *                                                    (model seed, step, layer index)
 *     p = softmax_e(h) per token, or sigmoid(h)      (E, N)
 *   token / noisy: token n takes its top-K experts by p (ties: lower expert); gate = p, or
 *     p / sum of its K selected p (renorm). With capacity F each expert admits at most
 *     C = ceil(F N K / E) assignments, in priority order: every token's 1st choice in token
 *     order, then every 2nd choice, ...; an assignment to a full expert is dropped with its
 *     gate (no renormalization), so a token with all its choices dropped outputs 0.
 *   expert (Zhou et al. 2022): expert e takes its top C = min(N, ceil(F N K / E)) tokens by
 *     p[e, :] (ties: lower token); gate = p[e, n]. Selection looks across the whole batch.
 *   Dispatch: each expert's tokens are gathered into a contiguous (D, n_e) group, the expert
 *     body runs on it (only experts with n_e > 0 run), and y[:, n] = sum gate * out_e[:, slot]
 *     (+ the shared expert's output with gate 1).
 * Auxiliary losses (training mode), added to the objective by the layer's own backward:
 *     balance: E * sum_i f_i P_i, f_i = kept assignments of i / (N K), P_i = mean_n p[i, n]
 *              (Switch Transformer; gradient through P only)
 *     z-loss:  mean_n (logsumexp_e h[e, n])^2 (ST-MoE)
 * Backward: dgate = dy[:, n] . out_e[:, slot]; each expert's body back-propagates
 * gate * dy[:, n] for its group (parameter gradients accumulate; the backward tap sees the
 * expert layers with batch n_e); dx[:, n] gathers its experts' input gradients; dgate goes
 * through the gate function (renormalization included) and the softmax/sigmoid to dh, plus the
 * auxiliary gradients; then dWr += dh x^T, dbr += rowsum dh, dx += Wr^T dh, and for noisy
 * du = dh * eps * sigmoid(u), dWn += du x^T, dx += Wn^T du with the same noise sample.
 *
 * Parameters in the arena: Wr (E, D) row-major, br (E), then for routing=noisy Wn (E, D).
 * Init: Wr and br like linear's default, U(-1/sqrt(D), 1/sqrt(D)); Wn zeros (Shazeer et al.
 * initialize the gating weights to zero; the noise then starts at softplus(0) = 0.69).
 *
 * Per-forward buffers (router logits and probabilities, selections) grow on demand; each
 * expert's activations are reserved lazily to the largest group it has seen (growing
 * geometrically), never E x N up front. All loops here run on one thread in a fixed order and
 * every GEMM is deterministic, so results do not depend on the thread count.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seq.h"
#include "sparrow/tensor.h"

#include "../core/internal.h"

typedef enum route_kind { ROUTE_TOKEN, ROUTE_NOISY, ROUTE_EXPERT } route_kind;
static const char *const route_names[] = {"token", "noisy", "expert"};

typedef struct moe_layer {
    sp_layer base;
    int64_t d;
    int E, K, K_cfg;           /* experts; top_k in effect; top_k of the config */
    int K_fwd;                 /* top_k of the last forward pass (what backward's arrays hold,
                                * even if sp_model_moe_set_top_k ran in between) */
    route_kind routing;
    bool sigmoid;              /* router=sigmoid */
    double capacity;           /* F; 0 = none (dropless) */
    double balance, zloss;
    bool shared, renorm;
    int nb;                    /* bodies: E (+1 shared, last) */
    sp_seq *bodies;
    int64_t *body_cap;         /* batch each body is reserved for */
    int64_t *body_n;           /* batch each body ran with in the last forward (0: did not) */
    /* the last forward pass */
    int64_t N;                 /* tokens */
    bool noise_on, aux_on;
    double aux_b, aux_z;       /* unweighted */
    float *h, *prob, *eps, *u; /* (E, N) */
    float *lse, *tok;          /* (N): logsumexp of each token's logits; scratch */
    double *tacc;              /* (2 N) scratch */
    uint32_t *keys;            /* (N) expert choice: sort keys of one expert's row */
    int64_t n_cap;
    int64_t en_cap;            /* capacity of the (E, N) arrays */
    int32_t *sel;              /* (N, K) token choice: selected experts, priority order */
    int64_t *slot;             /* (N, K): assignment index, -1 if dropped */
    float *sel_g;              /* (N, K): gates of the selected experts */
    int64_t nk_cap;
    int64_t *cnt, *off;        /* (E), (E + 1): assignments per expert, offsets */
    int64_t A;                 /* assignments */
    int64_t *atok;             /* (A) token of each assignment, grouped by expert */
    float *agate, *adg;        /* (A) gate, and its gradient in backward */
    int64_t a_cap;
    float *xg;                 /* (D, A) gathered inputs: expert e's (D, n_e) at D * off[e] */
    int64_t xg_cap;
    float *scr;                /* backward: dY_e and dX_e of every expert, (D, A) each */
    double *gacc;              /* (A) backward: gate-gradient sums */
    int64_t scr_cap;
    float *dh, *du;            /* backward (E, N) */
    int64_t d_cap;
    /* statistics since the last reset */
    int64_t st_tokens, st_assign, st_drop;
    int64_t *st_load;
    double st_entropy;
    sp_status *est;            /* (E) status of each expert's forward when they run in parallel */
} moe_layer;

static const sp_layer_vt moe_vt;

bool sp_moe_is(const sp_layer *l) { return l && l->vt == &moe_vt; }
int sp_moe_nbodies(const sp_layer *l) { return ((const moe_layer *)l)->nb; }
sp_seq *sp_moe_body(const sp_layer *l, int k) { return &((const moe_layer *)l)->bodies[k]; }
int64_t sp_moe_body_batch(const sp_layer *l, int k) { return ((const moe_layer *)l)->body_n[k]; }

double sp_moe_aux_loss(const sp_layer *l) {
    const moe_layer *M = (const moe_layer *)l;
    return M->aux_on ? M->balance * M->aux_b + M->zloss * M->aux_z : 0.0;
}

/* Makes *p hold at least `need` elements of `elem` bytes (contents not kept), growing to
 * twice the old capacity (at most `most`) so that a slowly growing need reallocates rarely. */
static sp_status grow(void **p, int64_t *cap, int64_t need, int64_t most, size_t elem) {
    if (need <= *cap) return SP_OK;
    int64_t n = SP_MAX(need, SP_MIN(2 * *cap, most));
    size_t bytes;
    if (!sp_bytes(n, elem, &bytes))
        return sp_fail(SP_EOVERFLOW, "moe: %lld buffer entries overflow", (long long)n);
    void *q = sp_alloc(bytes);
    if (!q) return SP_ENOMEM;
    sp_free(*p);
    *p = q;
    *cap = n;
    return SP_OK;
}

/* The n arrays p[i] (elements of z[i] bytes), sharing the capacity *cap, hold at least need
 * elements (contents not kept; exact size: these follow the batch, which rarely changes). On
 * failure all are freed and *cap is 0. */
static sp_status grow_group(void **p[], const size_t z[], int n, int64_t *cap, int64_t need) {
    if (need <= *cap) return SP_OK;
    for (int i = 0; i < n; i++) {
        sp_free(*p[i]);
        *p[i] = NULL;
    }
    *cap = 0;
    for (int i = 0; i < n; i++) {
        int64_t c = 0;
        sp_status st = grow(p[i], &c, need, need, z[i]);
        if (st != SP_OK) {
            for (int j = 0; j < i; j++) {
                sp_free(*p[j]);
                *p[j] = NULL;
            }
            return st;
        }
    }
    *cap = need;
    return SP_OK;
}

/* Body k reserved for at least n samples (geometric growth up to most). */
static sp_status body_reserve(moe_layer *M, int k, int64_t n, int64_t most) {
    if (n <= M->body_cap[k]) return SP_OK;
    int64_t c = SP_MAX(n, SP_MIN(2 * M->body_cap[k], most));
    M->body_cap[k] = 0;
    sp_status st = sp_seq_reserve(&M->bodies[k], c);
    if (st != SP_OK) {
        sp_seq_free_buffers(&M->bodies[k]);
        return st;
    }
    M->body_cap[k] = c;
    return SP_OK;
}

static inline double softplus(double v) { return v > 20.0 ? v : log1p(exp(v)); }
static inline double sigm(double v) { return 1.0 / (1.0 + exp(-v)); }

/* ---- forward ---------------------------------------------------------------------------------- */

typedef struct expert_ctx {
    moe_layer *M;
    const sp_run *run;
} expert_ctx;

/* Task e of the expert-parallel forward pass: expert e's body on its group, on one thread. */
static void expert_task(void *vctx, int64_t e) {
    const expert_ctx *c = vctx;
    moe_layer *M = c->M;
    M->est[e] = SP_OK;
    if (M->cnt[e] == 0) return;
    sp_run r = *c->run;
    r.batch = M->cnt[e];
    r.nthreads = 1;
    M->est[e] = sp_seq_forward(&M->bodies[e], &r, M->xg + M->d * M->off[e]);
}

/* Token choice: top-K per token, admission under capacity. Fills sel/slot/sel_g, cnt, off and
 * the assignment arrays; returns the number dropped. */
static int64_t route_tokens(moe_layer *M, int64_t N) {
    const int E = M->E, K = M->K;
    const float *p = M->prob;
    int64_t C = INT64_MAX;
    if (M->capacity > 0) C = (int64_t)ceil(M->capacity * (double)N * K / E);
    /* the top K of each token, kept sorted while the experts stream by row by row (the
     * probabilities of one expert are contiguous): an expert enters a token's list only when
     * strictly above its K-th, so ties keep the lower expert index; NaN ranks last */
    int32_t *sel = M->sel;
    float *val = M->sel_g; /* the selected p while selecting; the gates after */
    for (int64_t i = 0; i < N * K; i++) sel[i] = -1, val[i] = -INFINITY;
    for (int e = 0; e < E; e++) {
        const float *pe = p + (int64_t)e * N;
        for (int64_t n = 0; n < N; n++) {
            const float v = isnan(pe[n]) ? -INFINITY : pe[n];
            int32_t *sn = sel + n * K;
            float *vn = val + n * K;
            if (sn[K - 1] >= 0 && !(v > vn[K - 1])) continue;
            int j = K - 1;
            for (; j > 0 && (sn[j - 1] < 0 || v > vn[j - 1]); j--) {
                sn[j] = sn[j - 1];
                vn[j] = vn[j - 1];
            }
            sn[j] = e;
            vn[j] = v;
        }
    }
    for (int64_t n = 0; n < N; n++) {
        const int32_t *sn = sel + n * K;
        double sum = 0.0;
        for (int k = 0; k < K; k++) sum += p[(int64_t)sn[k] * N + n];
        for (int k = 0; k < K; k++) {
            const double pk = p[(int64_t)sn[k] * N + n];
            val[n * K + k] = (float)(M->renorm ? (sum > 0 ? pk / sum : 1.0 / K) : pk);
        }
    }
    int64_t dropped = 0;
    memset(M->cnt, 0, sizeof(int64_t) * (size_t)E);
    /* priority: all first choices in token order, then all second choices, ... */
    for (int k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++) {
            const int e = M->sel[n * K + k];
            if (M->cnt[e] < C) M->slot[n * K + k] = M->cnt[e]++;
            else M->slot[n * K + k] = -1, dropped++;
        }
    M->off[0] = 0;
    for (int e = 0; e < E; e++) M->off[e + 1] = M->off[e] + M->cnt[e];
    for (int64_t n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            int64_t *sl = &M->slot[n * K + k];
            if (*sl < 0) continue;
            *sl += M->off[M->sel[n * K + k]];
            M->atok[*sl] = n;
            M->agate[*sl] = M->sel_g[n * K + k];
        }
    return dropped;
}

/* Order-preserving map float -> uint32 (a < b <=> key(a) < key(b)); NaN ranks below all. */
static inline uint32_t fkey(float f) {
    if (isnan(f)) return 0;
    f += 0.0f; /* -0 -> +0 */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u ^ ((uint32_t)((int32_t)u >> 31) | 0x80000000u);
}

/* Expert choice: expert e takes its top C tokens by p[e, :], ties to the lower token index.
 * The C-th highest key comes from a radix select (four 8-bit histogram passes, O(N) per
 * expert, where a sort would cost N log N), then the tokens above it and the first of those
 * equal to it are taken in token order. */
static sp_status route_experts(moe_layer *M, int64_t N) {
    const int E = M->E;
    const int64_t C = SP_MIN(N, (int64_t)ceil(M->capacity * (double)N * M->K / E));
    uint32_t *key = M->keys;
    M->off[0] = 0;
    for (int e = 0; e < E; e++) {
        const float *pe = M->prob + (int64_t)e * N;
        for (int64_t n = 0; n < N; n++) key[n] = fkey(pe[n]);
        uint32_t prefix = 0, mask = 0;
        int64_t need = C; /* keys equal to the final threshold to take */
        for (int shift = 24; shift >= 0 && C > 0; shift -= 8) {
            int64_t hist[256] = {0};
            for (int64_t n = 0; n < N; n++)
                if ((key[n] & mask) == prefix) hist[(key[n] >> shift) & 255u]++;
            int d = 255;
            for (; d > 0 && hist[d] < need; d--) need -= hist[d];
            prefix |= (uint32_t)d << shift;
            mask |= 255u << shift;
        }
        int64_t s = M->off[e];
        for (int64_t n = 0; n < N && s < M->off[e] + C; n++) {
            const bool take = key[n] > prefix || (key[n] == prefix && need > 0);
            if (!take) continue;
            if (key[n] == prefix) need--;
            M->atok[s] = n;
            M->agate[s] = pe[n];
            s++;
        }
        M->cnt[e] = C;
        M->off[e + 1] = M->off[e] + C;
    }
    return SP_OK;
}

/* The per-forward routing arrays for N tokens (grown together, exact sizes); *amax gets the
 * most (token, expert) assignments a pass of N tokens can make. */
static sp_status forward_arrays(moe_layer *M, int64_t N, int64_t *amax_out) {
    const int E = M->E;
    const int64_t EN = (int64_t)E * N;
    sp_status st;
    const int64_t nk = M->routing == ROUTE_EXPERT ? 0 : N * M->K;
    const int64_t amax = M->routing == ROUTE_EXPERT
                             ? E * SP_MIN(N, (int64_t)ceil(M->capacity * (double)N * M->K / E))
                             : nk;
    /* per-forward arrays, grown together in groups of one capacity (eps and u: noisy only) */
    void **g_en[] = {(void **)&M->h, (void **)&M->prob, (void **)&M->eps, (void **)&M->u};
    const size_t z_en[] = {sizeof(float), sizeof(float), sizeof(float), sizeof(float)};
    void **g_nk[] = {(void **)&M->sel, (void **)&M->slot, (void **)&M->sel_g};
    const size_t z_nk[] = {sizeof(int32_t), sizeof(int64_t), sizeof(float)};
    void **g_a[] = {(void **)&M->atok, (void **)&M->agate, (void **)&M->adg, (void **)&M->gacc};
    const size_t z_a[] = {sizeof(int64_t), sizeof(float), sizeof(float), sizeof(double)};
    void **g_n[] = {(void **)&M->lse, (void **)&M->tok, (void **)&M->tacc, (void **)&M->keys};
    const size_t z_n[] = {sizeof(float), sizeof(float), 2 * sizeof(double), sizeof(uint32_t)};
    if ((st = grow_group(g_en, z_en, M->routing == ROUTE_NOISY ? 4 : 2, &M->en_cap, EN)) !=
            SP_OK ||
        (st = grow_group(g_n, z_n, 4, &M->n_cap, N)) != SP_OK ||
        (st = grow_group(g_nk, z_nk, 3, &M->nk_cap, nk)) != SP_OK ||
        (st = grow_group(g_a, z_a, 4, &M->a_cap, amax)) != SP_OK)
        return st;
    *amax_out = amax;
    return SP_OK;
}

static sp_status moe_forward(sp_layer *l, const sp_run *run, const float *x, float *y) {
    moe_layer *M = (moe_layer *)l;
    const int E = M->E;
    const int64_t D = M->d, N = l->in.h * l->in.w * run->batch, EN = (int64_t)E * N;
    sp_status st;
    M->N = 0;
    M->aux_on = false;
    M->K_fwd = M->K;
    int64_t amax;
    if ((st = forward_arrays(M, N, &amax)) != SP_OK) return st;

    /* router logits (E, N) = Wr (E, D) x (D, N) + br */
    const float *Wr = l->param, *br = l->param + E * D, *Wn = br + E;
    for (int e = 0; e < E; e++)
        for (int64_t n = 0; n < N; n++) M->h[(int64_t)e * N + n] = br[e];
    if ((st = sp_sgemm(false, false, E, N, D, 1.0f, Wr, D, x, N, 1.0f, M->h, N, run->nthreads)) !=
        SP_OK)
        return st;
    M->noise_on = M->routing == ROUTE_NOISY && run->train;
    if (M->noise_on) {
        if ((st = sp_sgemm(false, false, E, N, D, 1.0f, Wn, D, x, N, 0.0f, M->u, N,
                           run->nthreads)) != SP_OK)
            return st;
        sp_rng r;
        sp_rng_init(&r, run->seed ^ 0x303eu, ((uint64_t)run->step << 16) ^ (uint64_t)l->index);
        for (int64_t i = 0; i < EN; i++) {
            M->eps[i] = sp_rng_normal(&r);
            M->h[i] += (float)(M->eps[i] * softplus(M->u[i]));
        }
    }

    /* probabilities, and per token the z-loss term and the entropy, in sweeps along the rows
     * of h (contiguous per expert): one exp per (expert, token).
     *   softmax: p = exp(h - lse), entropy = lse - sum_e p_e h_e
     *   sigmoid: p = 1 / (1 + exp(-h)); entropy of q = p / sum p: log(sum p) - sum q log p */
    float *mx = M->tok;
    double *acc = M->tacc, *acc2 = M->tacc + N;
    for (int64_t n = 0; n < N; n++) mx[n] = -INFINITY, acc[n] = 0.0, acc2[n] = 0.0;
    for (int e = 0; e < E; e++) {
        const float *he = M->h + (int64_t)e * N;
        for (int64_t n = 0; n < N; n++) mx[n] = fmaxf(mx[n], he[n]);
    }
    for (int e = 0; e < E; e++) {
        const float *he = M->h + (int64_t)e * N;
        float *pe = M->prob + (int64_t)e * N;
        for (int64_t n = 0; n < N; n++) {
            const float v = expf(he[n] - mx[n]);
            acc[n] += v;
            if (!M->sigmoid) pe[n] = v;
        }
    }
    for (int64_t n = 0; n < N; n++) M->lse[n] = (float)(mx[n] + log(acc[n]));
    double zsum = 0.0, ent = 0.0;
    for (int64_t n = 0; n < N; n++) zsum += (double)M->lse[n] * M->lse[n];
    if (!M->sigmoid) {
        for (int64_t n = 0; n < N; n++) acc[n] = 1.0 / acc[n];
        for (int e = 0; e < E; e++) {
            const float *he = M->h + (int64_t)e * N;
            float *pe = M->prob + (int64_t)e * N;
            for (int64_t n = 0; n < N; n++) {
                pe[n] = (float)(pe[n] * acc[n]);
                acc2[n] += (double)pe[n] * he[n];
            }
        }
        for (int64_t n = 0; n < N; n++) {
            const double hn = M->lse[n] - acc2[n];
            if (isfinite(hn)) ent += hn;
        }
    } else {
        for (int64_t n = 0; n < N; n++) acc[n] = 0.0;
        for (int e = 0; e < E; e++) {
            const float *he = M->h + (int64_t)e * N;
            float *pe = M->prob + (int64_t)e * N;
            for (int64_t n = 0; n < N; n++) {
                const double q = sigm(he[n]);
                pe[n] = (float)q;
                acc[n] += q;
                if (q > 0) acc2[n] += q * log(q);
            }
        }
        for (int64_t n = 0; n < N; n++) {
            const double hn = log(acc[n]) - acc2[n] / acc[n];
            if (isfinite(hn)) ent += hn;
        }
    }

    /* selection */
    int64_t dropped = 0;
    if (M->routing == ROUTE_EXPERT) {
        if ((st = route_experts(M, N)) != SP_OK) return st;
    } else {
        dropped = route_tokens(M, N);
    }
    M->A = M->off[E];

    /* auxiliary losses (unweighted) */
    {
        const double denom = (double)N * M->K;
        double b = 0.0;
        for (int e = 0; e < E; e++) {
            double P = 0.0;
            for (int64_t n = 0; n < N; n++) P += M->prob[(int64_t)e * N + n];
            b += (double)M->cnt[e] / denom * (P / (double)N);
        }
        M->aux_b = E * b;
        M->aux_z = zsum / (double)N;
    }

    /* dispatch: gather, run, combine */
    if ((st = grow((void **)&M->xg, &M->xg_cap, D * M->A, D * amax, sizeof(float))) != SP_OK)
        return st;
    if (M->shared) {
        if ((st = body_reserve(M, E, N, N)) != SP_OK) return st;
        sp_run r = *run;
        r.batch = N;
        if ((st = sp_seq_forward(&M->bodies[E], &r, x)) != SP_OK) return st;
        memcpy(y, M->bodies[E].act[M->bodies[E].n - 1], sizeof(float) * (size_t)(D * N));
        M->body_n[E] = N;
    } else {
        memset(y, 0, sizeof(float) * (size_t)(D * N));
    }
    /* Gather and combine run feature by feature over all experts at once: row f of x and of
     * y (N floats) stays in L1 while every expert takes or returns its tokens' values, where
     * expert by expert each group would walk all D rows (D x N floats, more than L2 at
     * N = 4096 tokens) for a few values per row. Expert e's group is xg[D * off[e] ...], a
     * (D, n_e) matrix; the combine adds the experts in index order, as one expert after
     * another would. */
    for (int e = 0; e < E; e++) M->body_n[e] = 0;
    for (int64_t f = 0; f < D; f++) {
        const float *xf = x + f * N;
        for (int e = 0; e < E; e++) {
            const int64_t ne = M->cnt[e], o = M->off[e];
            const int64_t *t = M->atok + o;
            float *d = M->xg + D * o + f * ne;
            for (int64_t s = 0; s < ne; s++) d[s] = xf[t[s]];
        }
    }
    int busy = 0; /* experts with tokens */
    for (int e = 0; e < E; e++) {
        const int64_t ne = M->cnt[e];
        if (ne == 0) continue;
        if ((st = body_reserve(M, e, ne, N)) != SP_OK) return st;
        busy++;
    }
    const int nth = run->nthreads > 0 ? run->nthreads : sp_threads_available();
    if (nth > 1 && busy >= 2 * nth) {
        /* enough experts to keep every thread busy: one expert per task, each on one thread
         * (small groups split badly inside a GEMM). Every kernel splits its work by the sizes,
         * never by the thread count, so the bits are those of the serial loop. */
        expert_ctx c = {M, run};
        sp_parallel_for(E, nth, expert_task, &c);
        for (int e = 0; e < E; e++)
            if (M->est[e] != SP_OK) {
                /* again on this thread, for the error message (thread-local) */
                sp_run r = *run;
                r.batch = M->cnt[e];
                st = sp_seq_forward(&M->bodies[e], &r, M->xg + D * M->off[e]);
                return st != SP_OK ? st : M->est[e];
            }
    } else {
        for (int e = 0; e < E; e++) {
            const int64_t ne = M->cnt[e];
            if (ne == 0) continue;
            sp_run r = *run;
            r.batch = ne;
            if ((st = sp_seq_forward(&M->bodies[e], &r, M->xg + D * M->off[e])) != SP_OK)
                return st;
        }
    }
    for (int e = 0; e < E; e++) M->body_n[e] = M->cnt[e];
    for (int64_t f = 0; f < D; f++) {
        float *yf = y + f * N;
        for (int e = 0; e < E; e++) {
            const int64_t ne = M->cnt[e], o = M->off[e];
            if (ne == 0) continue;
            const sp_seq *b = &M->bodies[e];
            const float *of = b->act[b->n - 1] + f * ne, *g = M->agate + o;
            const int64_t *t = M->atok + o;
            for (int64_t s = 0; s < ne; s++) yf[t[s]] += g[s] * of[s];
        }
    }
    /* statistics count completed passes only */
    M->st_tokens += N;
    M->st_assign += M->A;
    M->st_drop += dropped;
    M->st_entropy += ent;
    for (int e = 0; e < E; e++) M->st_load[e] += M->cnt[e];
    M->N = N;
    M->aux_on = run->train;
    return SP_OK;
}

/* ---- backward --------------------------------------------------------------------------------- */

static sp_status moe_backward(sp_layer *l, const sp_run *run, const float *x, const float *y,
                              const float *dy, float *dx) {
    (void)y;
    moe_layer *M = (moe_layer *)l;
    const int E = M->E, K = M->K_fwd;
    const int64_t D = M->d, N = M->N, EN = (int64_t)E * N;
    if (N == 0 || N != l->in.h * l->in.w * run->batch)
        return sp_fail(SP_EINVAL, "%s: backward without a matching forward pass", l->name);
    sp_status st;
    void **g_d[] = {(void **)&M->dh, (void **)&M->du};
    const size_t z_d[] = {sizeof(float), sizeof(float)};
    if ((st = grow_group(g_d, z_d, 2, &M->d_cap, EN)) != SP_OK) return st;
    const int64_t A = M->A;
    if ((st = grow((void **)&M->scr, &M->scr_cap, 2 * D * A, 2 * D * M->a_cap, sizeof(float))) !=
        SP_OK)
        return st;
    const float *Wr = l->param, *Wn = l->param + E * D + E;
    float *dWr = l->grad, *dbr = l->grad + E * D, *dWn = dbr + E;

    /* Feature by feature over all experts, as in the forward pass (row f of dy stays in L1):
     * the gate gradients dgate = dy[:, n] . out_e[:, s] (summed over f in order, in double),
     * and dY_e[:, s] = gate dy[:, n], every expert's in scr at D * off[e]. */
    float *dyg = M->scr, *dxg = M->scr + D * A;
    double *gacc = M->gacc;
    for (int64_t a = 0; a < A; a++) gacc[a] = 0.0;
    for (int64_t f = 0; f < D; f++) {
        const float *dyf = dy + f * N;
        for (int e = 0; e < E; e++) {
            const int64_t ne = M->cnt[e], o = M->off[e];
            if (ne == 0) continue;
            const sp_seq *b = &M->bodies[e];
            const float *of = b->act[b->n - 1] + f * ne, *g = M->agate + o;
            const int64_t *t = M->atok + o;
            double *ga = gacc + o;
            float *d = dyg + D * o + f * ne;
            for (int64_t s = 0; s < ne; s++) {
                const float v = dyf[t[s]];
                ga[s] += (double)v * of[s];
                d[s] = g[s] * v;
            }
        }
    }
    for (int64_t a = 0; a < A; a++) M->adg[a] = (float)gacc[a];

    /* dp (E, N) into dh: through the gate function */
    float *dh = M->dh;
    memset(dh, 0, sizeof(float) * (size_t)EN);
    if (M->routing == ROUTE_EXPERT) {
        for (int e = 0; e < E; e++)
            for (int64_t a = M->off[e]; a < M->off[e + 1]; a++)
                dh[(int64_t)e * N + M->atok[a]] += M->adg[a];
    } else {
        for (int64_t n = 0; n < N; n++) {
            const int32_t *s = M->sel + n * K;
            const int64_t *sl = M->slot + n * K;
            if (!M->renorm) {
                for (int k = 0; k < K; k++)
                    if (sl[k] >= 0) dh[(int64_t)s[k] * N + n] += M->adg[sl[k]];
                continue;
            }
            /* g_k = p_k / S: dp_j = (dg_j - sum_k dg_k g_k) / S for the selected j */
            double S = 0.0, G = 0.0;
            for (int k = 0; k < K; k++) S += M->prob[(int64_t)s[k] * N + n];
            if (!(S > 0)) continue;
            for (int k = 0; k < K; k++)
                if (sl[k] >= 0) G += (double)M->adg[sl[k]] * M->sel_g[n * K + k];
            for (int k = 0; k < K; k++) {
                const double dg = sl[k] >= 0 ? M->adg[sl[k]] : 0.0;
                dh[(int64_t)s[k] * N + n] += (float)((dg - G) / S);
            }
        }
    }
    if (M->aux_on && M->balance != 0.0) {
        /* d(balance * E sum_i f_i P_i) / dp[i, n] = balance * E f_i / N */
        for (int e = 0; e < E; e++) {
            const float c = (float)(M->balance * E * ((double)M->cnt[e] / ((double)N * K)) / N);
            for (int64_t n = 0; n < N; n++) dh[(int64_t)e * N + n] += c;
        }
    }
    /* through softmax / sigmoid; then the z-loss: d(zloss mean lse^2)/dh = zloss 2 lse q / N */
    for (int64_t n = 0; n < N; n++) {
        if (M->sigmoid) {
            for (int e = 0; e < E; e++) {
                const double p = M->prob[(int64_t)e * N + n];
                dh[(int64_t)e * N + n] = (float)(dh[(int64_t)e * N + n] * p * (1.0 - p));
            }
        } else {
            double dot = 0.0;
            for (int e = 0; e < E; e++)
                dot += (double)M->prob[(int64_t)e * N + n] * dh[(int64_t)e * N + n];
            for (int e = 0; e < E; e++) {
                const int64_t i = (int64_t)e * N + n;
                dh[i] = (float)(M->prob[i] * (dh[i] - dot));
            }
        }
        if (M->aux_on && M->zloss != 0.0) {
            const double lse = M->lse[n], c = M->zloss * 2.0 * lse / (double)N;
            for (int e = 0; e < E; e++) {
                const int64_t i = (int64_t)e * N + n;
                dh[i] += (float)(c * (M->sigmoid ? exp(M->h[i] - lse) : M->prob[i]));
            }
        }
    }

    /* the shared expert writes dx first; everything else adds to it */
    bool dx_set = false;
    if (M->shared) {
        sp_run r = *run;
        r.batch = N;
        if ((st = sp_seq_backward(&M->bodies[E], &r, x, dy, dx)) != SP_OK) return st;
        dx_set = dx != NULL;
    }
    /* router: dWr += dh x^T, dbr += rowsum dh, dx (+)= Wr^T dh */
    if ((st = sp_sgemm(false, true, E, D, N, 1.0f, dh, N, x, N, 1.0f, dWr, D, run->nthreads)) !=
        SP_OK)
        return st;
    for (int e = 0; e < E; e++) {
        double s = 0.0;
        for (int64_t n = 0; n < N; n++) s += dh[(int64_t)e * N + n];
        dbr[e] += (float)s;
    }
    if (dx) {
        if ((st = sp_sgemm(true, false, D, N, E, 1.0f, Wr, D, dh, N, dx_set ? 1.0f : 0.0f, dx, N,
                           run->nthreads)) != SP_OK)
            return st;
        dx_set = true;
    }
    if (M->noise_on) {
        /* h = c + eps softplus(u): du = dh eps sigmoid(u) */
        for (int64_t i = 0; i < EN; i++) M->du[i] = (float)(dh[i] * M->eps[i] * sigm(M->u[i]));
        if ((st = sp_sgemm(false, true, E, D, N, 1.0f, M->du, N, x, N, 1.0f, dWn, D,
                           run->nthreads)) != SP_OK)
            return st;
        if (dx && (st = sp_sgemm(true, false, D, N, E, 1.0f, Wn, D, M->du, N, 1.0f, dx, N,
                                 run->nthreads)) != SP_OK)
            return st;
    }

    /* experts: back through each body from dY_e; then dx[:, n] += dX_e[:, s], feature by
     * feature, the experts in index order */
    for (int e = 0; e < E; e++) {
        const int64_t ne = M->cnt[e], o = M->off[e];
        if (ne == 0) continue;
        sp_run r = *run;
        r.batch = ne;
        if ((st = sp_seq_backward(&M->bodies[e], &r, M->xg + D * o, dyg + D * o,
                                  dx ? dxg + D * o : NULL)) != SP_OK)
            return st;
    }
    if (dx)
        for (int64_t f = 0; f < D; f++) {
            float *dxf = dx + f * N;
            for (int e = 0; e < E; e++) {
                const int64_t ne = M->cnt[e], o = M->off[e];
                const int64_t *t = M->atok + o;
                const float *d = dxg + D * o + f * ne;
                for (int64_t s = 0; s < ne; s++) dxf[t[s]] += d[s];
            }
        }
    return SP_OK;
}

/* ---- the rest of the vtable ------------------------------------------------------------------- */

static void moe_init(sp_layer *l, sp_rng *rng) {
    moe_layer *M = (moe_layer *)l;
    const int64_t D = M->d, E = M->E;
    const float bound = 1.0f / sqrtf((float)D);
    for (int64_t i = 0; i < E * D + E; i++)
        l->param[i] = (2.0f * sp_rng_uniform(rng) - 1.0f) * bound;
    for (int64_t i = E * D + E; i < l->nparam; i++) l->param[i] = 0.0f; /* Wn */
}

static void moe_free(sp_layer *l) {
    moe_layer *M = (moe_layer *)l;
    for (int k = 0; k < M->nb && M->bodies; k++) sp_seq_deinit(&M->bodies[k]);
    sp_free(M->bodies);
    sp_free(M->body_cap);
    sp_free(M->body_n);
    sp_free(M->h);
    sp_free(M->prob);
    sp_free(M->eps);
    sp_free(M->u);
    sp_free(M->lse);
    sp_free(M->tok);
    sp_free(M->tacc);
    sp_free(M->keys);
    sp_free(M->sel);
    sp_free(M->slot);
    sp_free(M->sel_g);
    sp_free(M->cnt);
    sp_free(M->off);
    sp_free(M->atok);
    sp_free(M->agate);
    sp_free(M->adg);
    sp_free(M->xg);
    sp_free(M->scr);
    sp_free(M->gacc);
    sp_free(M->dh);
    sp_free(M->du);
    sp_free(M->st_load);
    sp_free(M->est);
}

static int moe_describe(const sp_layer *l, char *buf, size_t n) {
    const moe_layer *M = (const moe_layer *)l;
    char cap[32];
    if (M->capacity > 0) snprintf(cap, sizeof cap, "%.9g", M->capacity);
    else snprintf(cap, sizeof cap, "none");
    int len = snprintf(buf, n, "moe experts=%d top_k=%d routing=%s router=%s capacity=%s "
                       "balance=%.9g zloss=%.9g shared=%d", M->E, M->K_cfg,
                       route_names[M->routing], M->sigmoid ? "sigmoid" : "softmax", cap,
                       M->balance, M->zloss, M->shared);
    if (M->routing != ROUTE_EXPERT)
        len += snprintf(buf + len, n > (size_t)len ? n - (size_t)len : 0, " renorm=%d", M->renorm);
    len += snprintf(buf + len, n > (size_t)len ? n - (size_t)len : 0, " {");
    return len;
}

sp_status sp_moe_reserve_eval(sp_layer *l, int64_t tokens) {
    moe_layer *M = (moe_layer *)l;
    const int E = M->E;
    const int64_t D = M->d, N = tokens;
    int64_t amax;
    sp_status st = forward_arrays(M, N, &amax);
    if (st != SP_OK) return st;
    if ((st = grow((void **)&M->xg, &M->xg_cap, D * amax, D * amax, sizeof(float))) != SP_OK)
        return st;
    /* an expert gets each token at most once, and at most its capacity */
    int64_t most = N;
    if (M->capacity > 0) most = SP_MIN(N, (int64_t)ceil(M->capacity * (double)N * M->K / E));
    for (int e = 0; e < E; e++)
        if ((st = body_reserve(M, e, most, most)) != SP_OK) return st;
    if (M->shared && (st = body_reserve(M, E, N, N)) != SP_OK) return st;
    return SP_OK;
}

static const sp_layer_vt moe_vt = {
    .kind = "moe",
    .forward = moe_forward,
    .backward = moe_backward,
    .init_params = moe_init,
    .free = moe_free,
    .describe = moe_describe,
};

#define MOE_MAX_EXPERTS 4096

sp_status sp_moe_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out) {
    int64_t E, K, shared, renorm;
    const char *routing, *router, *cap;
    double balance, zloss;
    sp_status st;
    if ((st = sp_args_int(a, "experts", -1, 1, MOE_MAX_EXPERTS, &E)) != SP_OK) return st;
    if (E < 0) return sp_fail(SP_EINVAL, "config line %d (moe): experts=E is required", a->line);
    if ((st = sp_args_int(a, "top_k", 1, 1, INT32_MAX, &K)) != SP_OK) return st;
    if (K > E)
        return sp_fail(SP_EINVAL, "config line %d (moe): top_k=%lld exceeds experts=%lld",
                       a->line, (long long)K, (long long)E);
    if ((st = sp_args_str(a, "routing", "token", &routing)) != SP_OK) return st;
    int rk = -1;
    for (int i = 0; i < 3; i++)
        if (!strcmp(routing, route_names[i])) rk = i;
    if (rk < 0)
        return sp_fail(SP_EINVAL, "config line %d (moe): routing=%s is not one of token, noisy, "
                       "expert", a->line, routing);
    if ((st = sp_args_str(a, "router", "softmax", &router)) != SP_OK) return st;
    if (strcmp(router, "softmax") && strcmp(router, "sigmoid"))
        return sp_fail(SP_EINVAL, "config line %d (moe): router=%s is not softmax or sigmoid",
                       a->line, router);
    if ((st = sp_args_str(a, "capacity", rk == ROUTE_EXPERT ? "1" : "none", &cap)) != SP_OK)
        return st;
    double F = 0.0;
    if (strcmp(cap, "none") != 0) {
        char *end;
        F = strtod(cap, &end);
        if (end == cap || *end || !isfinite(F) || F <= 0.0 || F > 1e6)
            return sp_fail(SP_EINVAL, "config line %d (moe): capacity=%s is not a factor > 0 "
                           "(at most 1e6) or none", a->line, cap);
    } else if (rk == ROUTE_EXPERT) {
        return sp_fail(SP_EINVAL, "config line %d (moe): routing=expert needs a capacity "
                       "factor; capacity=none is only for token choice", a->line);
    }
    if ((st = sp_args_num(a, "balance", 0.01, 0.0, 1e6, &balance)) != SP_OK) return st;
    if ((st = sp_args_num(a, "zloss", 0.0, 0.0, 1e6, &zloss)) != SP_OK) return st;
    if ((st = sp_args_int(a, "shared", 0, 0, 1, &shared)) != SP_OK) return st;
    if ((st = sp_args_int(a, "renorm", -1, 0, 1, &renorm)) != SP_OK) return st;
    if (renorm >= 0 && rk == ROUTE_EXPERT)
        return sp_fail(SP_EINVAL, "config line %d (moe): renorm=%lld applies to token choice; "
                       "routing=expert uses p[e, n] as the gate", a->line, (long long)renorm);
    if (renorm < 0) renorm = K >= 2;
    const int64_t D = in.c;
    int64_t np;
    if (!sp_mul_i64(E, D, &np) || np > ((int64_t)1 << 31))
        return sp_fail(SP_ESHAPE, "config line %d (moe): router %lld x %lld is too large",
                       a->line, (long long)E, (long long)D);
    np = np * (rk == ROUTE_NOISY ? 2 : 1) + E;
    if (np > b->max_params)
        return sp_fail(SP_EFORMAT, "config line %d (moe): %lld router parameters exceed the "
                       "budget of %lld", a->line, (long long)np, (long long)b->max_params);
    moe_layer *M = sp_layer_alloc(sizeof *M, &moe_vt, in);
    if (!M) return SP_ENOMEM;
    M->d = D;
    M->E = (int)E;
    M->K = M->K_cfg = (int)K;
    M->routing = (route_kind)rk;
    M->sigmoid = !strcmp(router, "sigmoid");
    M->capacity = F;
    M->balance = balance;
    M->zloss = zloss;
    M->shared = shared != 0;
    M->renorm = renorm != 0;
    M->nb = (int)E + (shared ? 1 : 0);
    M->base.nparam = np;
    M->bodies = sp_calloc((size_t)M->nb, sizeof *M->bodies);
    M->body_cap = sp_calloc((size_t)M->nb, sizeof(int64_t));
    M->body_n = sp_calloc((size_t)M->nb, sizeof(int64_t));
    M->cnt = sp_calloc((size_t)E, sizeof(int64_t));
    M->off = sp_calloc((size_t)E + 1, sizeof(int64_t));
    M->st_load = sp_calloc((size_t)E, sizeof(int64_t));
    M->est = sp_calloc((size_t)E, sizeof(sp_status));
    if (!M->bodies || !M->body_cap || !M->body_n || !M->cnt || !M->off || !M->st_load ||
        !M->est) {
        sp_layer_free(&M->base);
        return SP_ENOMEM;
    }
    *out = &M->base;
    return SP_OK;
}

/* ---- public: auxiliary loss, statistics, top-k override -------------------------------------- */

double sp_model_aux_loss(const sp_model *m) {
    double s = 0.0;
    if (!m) return 0.0;
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        const sp_layer *l = sp_model_layer_ptr(m, i);
        if (sp_moe_is(l)) s += sp_moe_aux_loss(l);
    }
    return s;
}

sp_status sp_model_moe_stats(const sp_model *m, int layer, sp_moe_stats *out) {
    if (!m || !out) return sp_fail(SP_EINVAL, "model_moe_stats: NULL argument");
    const sp_layer *l = sp_model_layer_ptr(m, layer);
    if (!l)
        return sp_fail(SP_EINVAL, "model_moe_stats: layer %d not in [0, %d)", layer,
                       sp_model_nlayers(m));
    if (!sp_moe_is(l))
        return sp_fail(SP_EINVAL, "model_moe_stats: layer %s is not a moe layer", l->name);
    const moe_layer *M = (const moe_layer *)l;
    double mx = 0.0, sum = 0.0;
    for (int e = 0; e < M->E; e++) {
        mx = fmax(mx, (double)M->st_load[e]);
        sum += (double)M->st_load[e];
    }
    *out = (sp_moe_stats){
        .experts = M->E, .top_k = M->K, .tokens = M->st_tokens, .assignments = M->st_assign,
        .dropped = M->st_drop, .load = M->st_load,
        .load_max_over_mean = sum > 0 ? mx / (sum / M->E) : 0.0,
        .router_entropy = M->st_tokens > 0 ? M->st_entropy / (double)M->st_tokens : 0.0,
        .balance_loss = M->aux_b, .z_loss = M->aux_z};
    return SP_OK;
}

void sp_model_moe_reset_stats(sp_model *m) {
    if (!m) return;
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        sp_layer *l = sp_model_layer_ptr(m, i);
        if (!sp_moe_is(l)) continue;
        moe_layer *M = (moe_layer *)l;
        M->st_tokens = M->st_assign = M->st_drop = 0;
        M->st_entropy = 0.0;
        memset(M->st_load, 0, sizeof(int64_t) * (size_t)M->E);
    }
}

sp_status sp_model_moe_set_top_k(sp_model *m, int k) {
    if (!m) return sp_fail(SP_EINVAL, "model_moe_set_top_k: NULL model");
    int found = 0;
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        const sp_layer *l = sp_model_layer_ptr(m, i);
        if (!sp_moe_is(l) || ((const moe_layer *)l)->routing == ROUTE_EXPERT) continue;
        const moe_layer *M = (const moe_layer *)l;
        if (k < 1 || k > M->E)
            return sp_fail(SP_EINVAL, "model_moe_set_top_k: k=%d is not in [1, %d] for layer "
                           "%s (experts=%d)", k, M->E, l->name, M->E);
        found++;
    }
    if (!found)
        return sp_fail(SP_EINVAL, "model_moe_set_top_k: the model has no token-choice moe layer");
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        sp_layer *l = sp_model_layer_ptr(m, i);
        if (sp_moe_is(l) && ((moe_layer *)l)->routing != ROUTE_EXPERT) ((moe_layer *)l)->K = k;
    }
    return SP_OK;
}

/* ---- expert pruning --------------------------------------------------------------------------- */

typedef struct expert_load {
    int64_t load;
    int idx;
} expert_load;

static int by_load(const void *a, const void *b) {
    const expert_load *x = a, *y = b; /* higher load first; ties: lower index */
    if (x->load != y->load) return x->load > y->load ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* Layers of a sequence, nested ones included (as the model's depth-first list counts them). */
static int seq_count(const sp_seq *s) {
    int n = s->n;
    for (int i = 0; i < s->n; i++)
        for (int k = 0; k < sp_layer_nbodies(s->layers[i]); k++)
            n += seq_count(sp_layer_body(s->layers[i], k));
    return n;
}

sp_status sp_model_moe_prune_experts(const sp_model *m, int layer, int keep, sp_model **out) {
    if (!m || !out) return sp_fail(SP_EINVAL, "model_moe_prune_experts: NULL argument");
    *out = NULL;
    const sp_layer *l = sp_model_layer_ptr(m, layer);
    if (!l)
        return sp_fail(SP_EINVAL, "model_moe_prune_experts: layer %d not in [0, %d)", layer,
                       sp_model_nlayers(m));
    if (!sp_moe_is(l))
        return sp_fail(SP_EINVAL, "model_moe_prune_experts: layer %s is not a moe layer",
                       l->name);
    const moe_layer *M = (const moe_layer *)l;
    if (keep < 1 || keep > M->E)
        return sp_fail(SP_EINVAL, "model_moe_prune_experts: keep=%d is not in [1, %d] (the "
                       "experts of %s)", keep, M->E, l->name);
    if (keep < M->K_cfg)
        return sp_fail(SP_EINVAL, "model_moe_prune_experts: keep=%d is fewer than top_k=%d of "
                       "%s", keep, M->K_cfg, l->name);
    if (M->routing == ROUTE_EXPERT)
        return sp_fail(SP_EUNSUPPORTED, "model_moe_prune_experts: %s routes by expert choice, "
                       "where every expert takes the same number of tokens, so its load does not "
                       "rank the experts", l->name);
    const int E = M->E, nl = sp_model_nlayers(m);
    /* layers per expert (nested residual blocks included), the same for every instance */
    const int L = seq_count(&M->bodies[0]);
    sp_status st = SP_ENOMEM;
    expert_load *order = sp_alloc(sizeof *order * (size_t)E);
    int *kept = sp_alloc(sizeof *kept * (size_t)keep);
    int *map = sp_alloc(sizeof *map * (size_t)nl); /* old layer -> new layer, -1: dropped */
    sp_mask **masks = sp_calloc((size_t)nl, sizeof *masks);
    const sp_csr **csrs = sp_calloc((size_t)nl, sizeof *csrs);
    char *cfg = NULL;
    sp_model *pm = NULL;
    if (!order || !kept || !map || !masks || !csrs) goto done;
    /* the `keep` most-loaded experts, in their old order */
    for (int e = 0; e < E; e++) order[e] = (expert_load){M->st_load[e], e};
    qsort(order, (size_t)E, sizeof *order, by_load);
    for (int j = 0; j < keep; j++) kept[j] = order[j].idx;
    for (int a = 1; a < keep; a++)
        for (int b = a; b > 0 && kept[b - 1] > kept[b]; b--) {
            int t = kept[b];
            kept[b] = kept[b - 1];
            kept[b - 1] = t;
        }
    for (int i = 0; i < nl; i++) map[i] = i <= layer ? i : -1;
    for (int j = 0; j < keep; j++)
        for (int t = 0; t < L; t++) map[layer + 1 + kept[j] * L + t] = layer + 1 + j * L + t;
    const int body_end = layer + 1 + M->nb * L; /* first old layer after the block */
    for (int t = 0; M->shared && t < L; t++) map[layer + 1 + E * L + t] = layer + 1 + keep * L + t;
    for (int i = body_end; i < nl; i++) map[i] = i - (E - keep) * L;
    const int nnew = nl - (E - keep) * L;

    /* the config: the k-th moe line of the text is the k-th moe layer (blocks do not nest and
     * describe each once) */
    {
        int k = 0;
        for (int i = 0; i < layer; i++) k += sp_moe_is(sp_model_layer_ptr(m, i));
        const char *c = sp_model_config(m), *line = NULL;
        for (const char *s = c; *s;) {
            const char *b = s;
            while (*b == ' ') b++;
            if (!strncmp(b, "moe ", 4) && k-- == 0) {
                line = b;
                break;
            }
            const char *nl2 = strchr(s, '\n');
            if (!nl2) break;
            s = nl2 + 1;
        }
        const char *ex = line ? strstr(line, "experts=") : NULL;
        if (!ex) {
            st = sp_fail(SP_EINVAL, "model_moe_prune_experts: no config line for %s", l->name);
            goto done;
        }
        const char *after = ex + 8;
        while (*after >= '0' && *after <= '9') after++;
        const size_t len = strlen(c) + 16;
        cfg = sp_alloc(len);
        if (!cfg) goto done;
        snprintf(cfg, len, "%.*sexperts=%d%s", (int)(ex - c), c, keep, after);
    }
    /* patterns follow their layers */
    for (int i = 0; i < nl; i++) {
        if (map[i] < 0) continue;
        const sp_csr *cs = sp_model_layer_csr(m, i);
        if (cs) csrs[map[i]] = cs;
        else if ((st = sp_model_layer_pattern(m, i, &masks[map[i]])) != SP_OK) goto done;
    }
    if ((st = sp_model_new_with_structure(cfg, sp_model_in(m), sp_model_classes(m),
                                          sp_model_seed(m), (int64_t)1 << 34,
                                          (const sp_mask *const *)masks, csrs, nnew, &pm)) !=
        SP_OK)
        goto done;
    sp_model_set_input_scale(pm, sp_model_input_scale(m));
    {
        /* a language model keeps its vocabulary (how its text is encoded) */
        int64_t nv;
        const int32_t *voc = sp_model_vocab(m, &nv);
        if (voc && (st = sp_model_set_vocab(pm, voc, nv)) != SP_OK) goto done;
    }
    /* parameters and state: every kept layer as it was, the router's kept rows */
    for (int i = 0; i < nl; i++) {
        if (map[i] < 0) continue;
        const sp_layer *a = sp_model_layer_ptr(m, i);
        sp_layer *b = sp_model_layer_ptr(pm, map[i]);
        if (!b || strcmp(a->vt->kind, b->vt->kind) != 0) {
            st = sp_fail(SP_EINVAL, "model_moe_prune_experts: layer %s has no counterpart in "
                         "the rebuilt model", a->name);
            goto done;
        }
        if (i == layer) {
            const int64_t D = M->d;
            const moe_layer *N2 = (const moe_layer *)b;
            for (int j = 0; j < keep; j++) {
                const int e = kept[j];
                memcpy(b->param + j * D, a->param + e * D, sizeof(float) * (size_t)D);
                b->param[keep * D + j] = a->param[E * D + e];
                if (N2->routing == ROUTE_NOISY)
                    memcpy(b->param + keep * D + keep + j * D, a->param + E * D + E + e * D,
                           sizeof(float) * (size_t)D);
            }
            continue;
        }
        if (a->nparam != b->nparam || a->nbuffer != b->nbuffer) {
            st = sp_fail(SP_EINVAL, "model_moe_prune_experts: layer %s has %lld parameters "
                         "after rebuilding, %lld before", b->name, (long long)b->nparam,
                         (long long)a->nparam);
            goto done;
        }
        if (a->nparam) memcpy(b->param, a->param, sizeof(float) * (size_t)a->nparam);
        if (a->nbuffer) memcpy(b->buffer, a->buffer, sizeof(float) * (size_t)a->nbuffer);
    }
    *out = pm;
    pm = NULL;
    st = SP_OK;
done:
    for (int i = 0; masks && i < nl; i++) sp_mask_free(masks[i]);
    sp_free(masks);
    sp_free(csrs);
    sp_free(order);
    sp_free(kept);
    sp_free(map);
    sp_free(cfg);
    sp_model_free(pm);
    return st;
}
