/*
 * dst.c - dynamic sparse training: the topology of CSR layers changes while they train, their
 * weights, gradients and optimizer state existing only for the stored entries throughout.
 *
 * SET (Mocanu et al. 2018): every update drops the fraction zeta of the positive weights closest
 * to zero and the fraction zeta of the negative weights closest to zero, and grows as many
 * entries at positions drawn uniformly from the empty ones. Grown weights start at zero (as
 * RigL's do; Adam moves them at the next step), and their optimizer state is zero; surviving
 * weights keep theirs (sp_model_layer_rewire + sp_optim_remap). Static sparse training
 * ("FixProb" in SET's paper) never changes the topology.
 *
 * Everything is a function of (seed, step, layer): the random positions come from the stream
 * (seed, 0x5e7 << 32 | layer) split by the step, so runs repeat bit for bit on any thread count.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sparrow/prune.h"

#include "../core/internal.h"
#include "internal.h"

const char *sp_dst_name(sp_dst_kind kind) {
    switch (kind) {
    case SP_DST_STATIC: return "static";
    case SP_DST_SET: return "set";
    case SP_DST_RIGL: return "rigl";
    }
    return "?";
}

sp_status sp_dst_check(const sp_dst *d) {
    if (!d) return sp_fail(SP_EINVAL, "dst: NULL settings");
    if ((int)d->kind < 0 || d->kind > SP_DST_RIGL)
        return sp_fail(SP_EINVAL, "dst: unknown kind %d", (int)d->kind);
    if (d->update_every < 1)
        return sp_fail(SP_EINVAL, "dst: update interval %lld must be >= 1",
                       (long long)d->update_every);
    if (!(d->drop_fraction >= 0.0 && d->drop_fraction < 1.0))
        return sp_fail(SP_EINVAL, "dst: drop fraction %g not in [0, 1)", d->drop_fraction);
    if (d->end_step < 0)
        return sp_fail(SP_EINVAL, "dst: end step %lld is negative", (long long)d->end_step);
    return SP_OK;
}

/* Sorts n values in [0, below) ascending: least significant digit first, 11 bits a pass, as
 * many passes as below needs (three for a 4096 x 4096 layer), through tmp (n). qsort took a
 * third of a SET update of a 784-4096-4096-10 MLP. */
static void sort_positions(int64_t *a, int64_t *tmp, int64_t n, int64_t below) {
    int64_t *src = a, *dst = tmp;
    for (int shift = 0; shift < 63 && (below - 1) >> shift > 0; shift += 11) {
        int64_t count[2049] = {0};
        for (int64_t i = 0; i < n; i++) count[((src[i] >> shift) & 2047) + 1]++;
        for (int d = 0; d < 2048; d++) count[d + 1] += count[d];
        for (int64_t i = 0; i < n; i++) dst[count[(src[i] >> shift) & 2047]++] = src[i];
        int64_t *t = src;
        src = dst, dst = t;
    }
    if (src != a) memcpy(a, src, sizeof(int64_t) * (size_t)n);
}

/* For each group g < ngroups with k[g] > 0: thr[g], the key of the k[g]-th highest among the
 * keys of that group (group[i] == g), and ties[g], how many entries equal to it are taken (the
 * lowest indices first). A radix select, byte by byte from the top: four passes over n, each
 * counting both groups' candidates at once (one pass per group and byte was twice the reads). */
static void kth_highest(const uint32_t *key, const uint8_t *group, int ngroups, int64_t n,
                        const int64_t k[2], uint32_t thr[2], int64_t ties[2]) {
    uint32_t prefix[2] = {0, 0}, pmask = 0;
    int64_t need[2] = {k[0], k[1]};
    for (int shift = 24; shift >= 0; shift -= 8) {
        int64_t hist[2][256] = {{0}};
        for (int64_t i = 0; i < n; i++) {
            const int g = group[i];
            hist[g][(key[i] >> shift) & 255u] += (key[i] & pmask) == prefix[g];
        }
        for (int g = 0; g < ngroups; g++)
            if (k[g] > 0) prefix[g] |= (uint32_t)sp_radix_pick(hist[g], &need[g]) << shift;
        pmask |= 0xffu << shift;
    }
    for (int g = 0; g < ngroups; g++) thr[g] = prefix[g], ties[g] = need[g];
}

/* The entries to drop, ascending, in O(nnz): per group (SET: 0 = w >= 0 ranked by -w, 1 = w < 0
 * ranked by w, so that each ranks the values closest to zero highest; RigL: one group ranked by
 * -|w|), the k[g] highest keys, ties to the lower index. Returns their number, or -1 when out of
 * memory. */
static int64_t select_drops(const float *w, int64_t nnz, bool by_sign, const int64_t k[2],
                            int64_t *drop) {
    uint32_t *key = sp_alloc(sizeof(uint32_t) * (size_t)(nnz > 0 ? nnz : 1));
    uint8_t *group = sp_alloc((size_t)(nnz > 0 ? nnz : 1));
    if (!key || !group) {
        sp_free(key);
        sp_free(group);
        return -1;
    }
    for (int64_t i = 0; i < nnz; i++) {
        group[i] = by_sign && w[i] < 0.0f;
        key[i] = by_sign && w[i] < 0.0f ? sp_fkey(w[i]) : ~sp_fkey(by_sign ? w[i] : fabsf(w[i]));
    }
    uint32_t thr[2] = {0, 0};
    int64_t ties[2] = {0, 0}, left[2] = {k[0], k[1]};
    kth_highest(key, group, by_sign ? 2 : 1, nnz, k, thr, ties);
    int64_t n = 0;
    for (int64_t i = 0; i < nnz; i++) {
        const int g = group[i];
        if (left[g] == 0) continue;
        if (key[i] > thr[g] || (key[i] == thr[g] && ties[g] > 0)) {
            if (key[i] == thr[g]) ties[g]--;
            left[g]--;
            drop[n++] = i;
        }
    }
    sp_free(key);
    sp_free(group);
    return n;
}

/* SET's drop: the zeta fraction of the positive (>= 0) weights with the smallest values and of
 * the negative ones with the largest, at most max in all. */
static int64_t set_drops(const float *w, int64_t nnz, double zeta, int64_t max, int64_t *drop) {
    int64_t np = 0;
    for (int64_t i = 0; i < nnz; i++) np += w[i] >= 0.0f;
    const int64_t nn = nnz - np;
    int64_t kp = (int64_t)llround(zeta * (double)np), kn = (int64_t)llround(zeta * (double)nn);
    if (kp + kn > max) { /* a dense layer has fewer empty positions than zeta asks to regrow */
        const int64_t total = kp + kn;
        kp = (int64_t)((double)kp * (double)max / (double)total);
        kn = SP_MIN(kn, max - kp);
    }
    const int64_t k[2] = {kp, kn};
    return select_drops(w, nnz, true, k, drop);
}

/* n positions drawn uniformly from the empty ones of a rows x cols pattern, ascending in
 * grow (the caller guarantees n <= the empty count). In rounds: as many candidates as are still
 * missing, drawn uniformly over all positions, are sorted and walked together with the pattern
 * and the positions taken so far, so every read is in order (a random probe of a 333,334-row
 * pattern per candidate took seconds); candidates that are stored, taken or repeated are
 * dropped. Each round's survivors are a uniformly random subset of the free positions (every
 * free position is equally likely to be drawn), so the n positions are a uniform n-subset. A
 * layer with total <= 8 (n + nnz) positions is sampled in one ordered pass instead: there every
 * round would keep a fraction of its candidates that shrinks as the free positions run out. */
static sp_status random_grows(const sp_csr *c, int64_t n, sp_rng *r, int64_t *grow) {
    const int64_t total = c->rows * c->cols, empty = total - c->nnz;
    if (n > empty)
        return sp_fail(SP_EINVAL, "dst: %lld entries to grow, %lld empty positions", (long long)n,
                       (long long)empty);
    if (total <= 8 * (n + c->nnz)) {
        /* a small or dense layer, where rounds would find ever fewer free positions: selection
         * sampling over every position (Knuth's algorithm S), each empty one taken with
         * probability (still needed) / (empty ones left), in O(total) = O(n + nnz) */
        int64_t got = 0, left = empty, q = 0;
        for (int64_t i = 0; i < c->rows && got < n; i++) {
            const int64_t q1 = c->row_ptr[i + 1];
            for (int64_t j = 0; j < c->cols && got < n; j++) {
                if (q < q1 && sp_csr_col(c, q) == j) {
                    q++;
                    continue;
                }
                if ((int64_t)sp_rng_below(r, (uint64_t)left) < n - got) grow[got++] = i * c->cols + j;
                left--;
            }
            q = q1;
        }
        return SP_OK;
    }
    int64_t *cand = sp_alloc(sizeof(int64_t) * (size_t)(n + 1));
    int64_t *merged = sp_alloc(sizeof(int64_t) * (size_t)(n + 1));
    if (!cand || !merged) {
        sp_free(cand);
        sp_free(merged);
        return SP_ENOMEM;
    }
    int64_t have = 0;
    while (have < n) {
        const int64_t want = n - have;
        for (int64_t k = 0; k < want; k++) cand[k] = (int64_t)sp_rng_below(r, (uint64_t)total);
        sort_positions(cand, merged, want, total);
        int64_t kept = 0, row = -1, q = 0, q1 = 0, t = 0;
        for (int64_t k = 0; k < want; k++) {
            const int64_t p = cand[k];
            if (k > 0 && p == cand[k - 1]) continue; /* repeated */
            const int64_t i = p / c->cols, j = p % c->cols;
            if (i != row) row = i, q = c->row_ptr[i], q1 = c->row_ptr[i + 1];
            while (q < q1 && sp_csr_col(c, q) < j) q++;
            if (q < q1 && sp_csr_col(c, q) == j) continue; /* stored */
            while (t < have && grow[t] < p) merged[kept++] = grow[t++];
            if (t < have && grow[t] == p) continue; /* taken in an earlier round */
            merged[kept++] = p;
        }
        while (t < have) merged[kept++] = grow[t++];
        memcpy(grow, merged, sizeof(int64_t) * (size_t)kept);
        have = kept;
    }
    sp_free(cand);
    sp_free(merged);
    return SP_OK;
}

/* RigL's drop: the k stored entries of smallest |w| (ties: the lower index), ascending. */
static sp_status magnitude_drops(const float *w, int64_t nnz, int64_t k, int64_t *drop) {
    const int64_t kk[2] = {k, 0};
    return select_drops(w, nnz, false, kk, drop) < 0 ? SP_ENOMEM : SP_OK;
}

/* What the backward tap of a RigL update gathers: per CSR layer, the positions to grow. */
typedef struct rigl_ctx {
    sp_model *m;
    const int64_t *k;   /* per layer: entries to replace */
    int64_t **grow;     /* per layer: k positions */
    bool *tapped;       /* per layer: its tap fired (an expert of a moe block that got no
                         * token in the batch has no gradient, and keeps its topology) */
    int nthreads;
} rigl_ctx;

static sp_status rigl_tap(int layer, const float *x, const float *dy, int64_t batch, void *user) {
    rigl_ctx *c = user;
    const sp_csr *w = sp_model_layer_csr(c->m, layer);
    if (!w || c->k[layer] == 0) return SP_OK;
    c->tapped[layer] = true;
    sp_layer_info li;
    sp_model_layer(c->m, layer, &li);
    return sp_rigl_grow(w, dy, x, li.in.h * li.in.w * batch, c->k[layer], 0, c->nthreads,
                        c->grow[layer], NULL);
}

/* RigL (Evci et al. 2020): k_l = f(t) nnz_l entries of smallest magnitude go; as many come in
 * where |dL/dW| of one batch is largest among the empty positions, f(t) = alpha/2 (1 +
 * cos(pi t / T_end)). The batch is drawn from d->data by (seed, step); its gradient is seen
 * through the backward tap, layer by layer, tile by tile (sp_rigl_grow), never whole. */
static sp_status rigl_update(sp_model *m, sp_optim *o, sp_dst *d, int64_t step) {
    if (!d->data || d->batch < 1 || d->data->n < 1)
        return sp_fail(SP_EINVAL, "dst: RigL needs a non-empty dataset and a batch size for its "
                       "gradient");
    const double f = d->end_step > 0
                         ? d->drop_fraction / 2.0 *
                               (1.0 + cos(3.14159265358979323846 * (double)step / (double)d->end_step))
                         : d->drop_fraction;
    const int n = sp_model_nlayers(m);
    const int64_t B = SP_MIN(d->batch, d->data->n), feat = d->data->features;
    const int64_t classes = sp_model_classes(m);
    /* labels per sample: 1, or T for text (the loss then runs over B * T token columns) */
    const int64_t L = d->data->kind == SP_DATASET_TEXT ? d->data->label_len : 1, cols = B * L;
    sp_status st = SP_ENOMEM;
    int64_t *k = sp_calloc((size_t)n, sizeof *k), **grow = sp_calloc((size_t)n, sizeof *grow);
    int64_t *idx = sp_alloc(sizeof(int64_t) * (size_t)B);
    float *x = sp_alloc(sizeof(float) * (size_t)(feat * B));
    float *dl = sp_alloc(sizeof(float) * (size_t)(classes * cols));
    int32_t *y = sp_alloc(sizeof(int32_t) * (size_t)cols);
    bool *tapped = sp_calloc((size_t)n, sizeof *tapped);
    int64_t *drop = NULL, *src = NULL;
    float *saved = NULL;
    if (!k || !grow || !idx || !x || !dl || !y || !tapped) goto done;
    int any = 0;
    for (int i = 0; i < n; i++) {
        const sp_csr *c = sp_model_layer_csr(m, i);
        if (!c) continue;
        k[i] = SP_MIN((int64_t)llround(f * (double)c->nnz), c->rows * c->cols - c->nnz);
        if (k[i] > 0 && !(grow[i] = sp_alloc(sizeof(int64_t) * (size_t)k[i]))) goto done;
        any += k[i] > 0;
    }
    if (!any) {
        st = SP_OK;
        goto done;
    }
    /* one batch, its gradient seen through the tap */
    sp_rng base, r;
    sp_rng_init(&base, d->seed, (uint64_t)0x5161 << 32);
    r = sp_rng_split(&base, (uint64_t)step);
    /* a batch as large as the data takes it whole, in order */
    for (int64_t b = 0; b < B; b++)
        idx[b] = B == d->data->n ? b : (int64_t)sp_rng_below(&r, (uint64_t)d->data->n);
    const float *logits;
    double loss;
    /* the forward runs at this step's dropout stream (as the training step will, so a resumed
     * run repeats it), and the state buffers (BatchNorm's running statistics) it would update
     * are put back afterwards */
    const int64_t nbuf = sp_model_nbuffers(m);
    if (nbuf > 0) {
        st = SP_ENOMEM;
        if (!(saved = sp_alloc(sizeof(float) * (size_t)nbuf))) goto done;
        memcpy(saved, sp_model_buffers(m), sizeof(float) * (size_t)nbuf);
    }
    sp_model_set_step(m, step);
    if ((st = sp_dataset_batch(d->data, idx, B, x, B, y)) != SP_OK ||
        (st = sp_model_forward(m, x, B, true, &logits)) != SP_OK ||
        (st = sp_loss_xent(logits, classes, cols, y, 0.0f, &loss, dl, NULL)) != SP_OK)
        goto done;
    rigl_ctx ctx = {.m = m, .k = k, .grow = grow, .tapped = tapped, .nthreads = d->nthreads};
    sp_model_zero_grad(m);
    sp_model_set_backward_tap(m, rigl_tap, &ctx);
    st = sp_model_backward(m, dl, NULL);
    sp_model_set_backward_tap(m, NULL, NULL);
    sp_model_zero_grad(m);
    if (st != SP_OK) goto done;
    for (int i = 0; i < n && st == SP_OK; i++) {
        if (k[i] == 0 || !tapped[i]) continue;
        const sp_csr *c = sp_model_layer_csr(m, i);
        sp_layer_info li;
        sp_model_layer(m, i, &li);
        st = SP_ENOMEM;
        sp_free(drop);
        sp_free(src);
        drop = sp_alloc(sizeof(int64_t) * (size_t)k[i]);
        src = sp_alloc(sizeof(int64_t) * (size_t)c->nnz);
        if (!drop || !src) goto done;
        st = magnitude_drops(sp_model_params(m) + li.param_offset, c->nnz, k[i], drop);
        if (st == SP_OK) st = sp_model_layer_rewire(m, i, drop, grow[i], k[i], src);
        if (st == SP_OK && o) st = sp_optim_remap(o, li.param_offset, c->nnz, src);
    }
done:
    for (int i = 0; i < n && grow; i++) sp_free(grow[i]);
    sp_free(grow);
    sp_free(k);
    sp_free(idx);
    sp_free(x);
    sp_free(dl);
    sp_free(y);
    sp_free(tapped);
    sp_free(drop);
    sp_free(src);
    if (saved) memcpy(sp_model_buffers(m), saved, sizeof(float) * (size_t)sp_model_nbuffers(m));
    sp_free(saved);
    return st;
}

sp_status sp_dst_update(sp_model *m, sp_optim *o, sp_dst *d, int64_t step) {
    sp_status st = sp_dst_check(d);
    if (st != SP_OK) return st;
    if (!m) return sp_fail(SP_EINVAL, "dst: NULL model");
    if (d->kind == SP_DST_STATIC) return SP_OK;
    const double t0 = sp_now_seconds();
    if (d->kind == SP_DST_RIGL) {
        if ((st = rigl_update(m, o, d, step)) != SP_OK) return st;
        d->updates++;
        d->update_seconds += sp_now_seconds() - t0;
        return SP_OK;
    }
    for (int i = 0; i < sp_model_nlayers(m); i++) {
        const sp_csr *c = sp_model_layer_csr(m, i);
        if (!c || c->nnz == 0) continue;
        sp_layer_info li;
        sp_model_layer(m, i, &li);
        const float *w = sp_model_params(m) + li.param_offset;
        int64_t *drop = sp_alloc(sizeof(int64_t) * (size_t)c->nnz);
        int64_t *grow = sp_alloc(sizeof(int64_t) * (size_t)c->nnz);
        int64_t *src = sp_alloc(sizeof(int64_t) * (size_t)c->nnz);
        st = SP_ENOMEM;
        int64_t n = -1;
        if (drop && grow && src)
            n = set_drops(w, c->nnz, d->drop_fraction, c->rows * c->cols - c->nnz, drop);
        if (n >= 0) {
            sp_rng base, r;
            sp_rng_init(&base, d->seed, ((uint64_t)0x5e7 << 32) | (uint64_t)i);
            r = sp_rng_split(&base, (uint64_t)step);
            st = random_grows(c, n, &r, grow);
            if (st == SP_OK) st = sp_model_layer_rewire(m, i, drop, grow, n, src);
            if (st == SP_OK && o) st = sp_optim_remap(o, li.param_offset, c->nnz, src);
        }
        sp_free(drop);
        sp_free(grow);
        sp_free(src);
        if (st != SP_OK) return st;
    }
    d->updates++;
    d->update_seconds += sp_now_seconds() - t0;
    return SP_OK;
}

sp_status sp_dst_hook(sp_model *m, sp_optim *o, int64_t step, void *user) {
    sp_dst *d = user;
    if (!d) return sp_fail(SP_EINVAL, "dst_hook: NULL settings");
    if (d->kind == SP_DST_STATIC || step == 0 || step % d->update_every != 0) return SP_OK;
    if (d->end_step > 0 && step >= d->end_step) return SP_OK;
    return sp_dst_update(m, o, d, step);
}

sp_status sp_dst_config(const char *config, sp_shape in, int64_t classes, sp_prune_alloc dist,
                        double density, double epsilon, bool sparse_last, char **out) {
    if (!config || !out) return sp_fail(SP_EINVAL, "dst_config: NULL argument");
    *out = NULL;
    if (epsilon > 0.0 ? !(epsilon < 1e12) : !(density > 0.0 && density <= 1.0))
        return sp_fail(SP_EINVAL, epsilon > 0.0 ? "dst_config: epsilon %g is not finite"
                                                : "dst_config: density %g not in (0, 1]",
                       epsilon > 0.0 ? epsilon : density);
    /* the shapes, from a probe model whose linear layers hold one entry per row: a network
     * too large to build dense is probed in memory proportional to its rows */
    sp_model *probe = NULL;
    char *probe_cfg = NULL, *text = NULL;
    char **opts = NULL;
    sp_prune_layer_shape *shapes = NULL;
    double *dens = NULL;
    int *which = NULL;
    int n = 0;
    sp_status st = SP_ENOMEM;
    /* count the layer lines (an upper bound on the layers) */
    for (const char *s = config; *s; s++) n += *s == '\n';
    n += 2;
    opts = sp_calloc((size_t)n, sizeof *opts);
    if (!opts) goto done;
    for (int i = 0; i < n; i++) opts[i] = NULL;
    static char probe_opt[] = "format=csr density=1e-9";
    /* the linear layers' lines get the probe options */
    {
        int layer = 0;
        const char *s = config;
        while (*s) {
            sp_cfg_line l;
            s = sp_cfg_next_line(s, &l);
            if (!l.is_layer) continue;
            const size_t rest = l.len - (size_t)(l.body - l.text);
            if (layer < n && rest >= 6 && !strncmp(l.body, "linear", 6) &&
                (rest == 6 || l.body[6] == ' ' || l.body[6] == '\t'))
                opts[layer] = probe_opt;
            layer++;
        }
    }
    st = SP_ENOMEM;
    probe_cfg = sp_prune_rewrite_lines(config, opts, n);
    if (!probe_cfg) goto done;
    if ((st = sp_model_new(probe_cfg, in, classes, 1, &probe)) != SP_OK) goto done;
    const int nl = sp_model_nlayers(probe);
    st = SP_ENOMEM;
    shapes = sp_calloc((size_t)nl + 1, sizeof *shapes);
    dens = sp_calloc((size_t)nl + 1, sizeof *dens);
    which = sp_calloc((size_t)nl + 1, sizeof *which);
    if (!shapes || !dens || !which) goto done;
    int last = -1, ns = 0;
    for (int i = 0; i < nl; i++) {
        sp_layer_info li;
        sp_model_layer(probe, i, &li);
        if (!strcmp(li.kind, "linear")) last = i;
    }
    for (int i = 0; i < nl; i++) {
        sp_layer_info li;
        sp_model_layer(probe, i, &li);
        if (strcmp(li.kind, "linear") || (i == last && !sparse_last)) continue;
        shapes[ns] = (sp_prune_layer_shape){.n_in = li.in.c, .n_out = li.out.c};
        which[ns++] = i;
    }
    if (ns == 0) {
        st = sp_fail(SP_EINVAL, "dst_config: the model has no linear layer to make sparse%s",
                     sparse_last ? "" : " (the output layer stays dense without sparse_last)");
        goto done;
    }
    if (epsilon > 0.0) {
        for (int k = 0; k < ns; k++)
            dens[k] = SP_MIN(1.0, epsilon * (double)(shapes[k].n_in + shapes[k].n_out) /
                                      ((double)shapes[k].n_in * (double)shapes[k].n_out));
    } else if ((st = sp_prune_densities(dist, ns, shapes, density, dens)) != SP_OK) {
        goto done;
    }
    /* from here on opts is by layer (a moe block's body line stands for several layers) */
    for (int i = 0; i < n; i++) opts[i] = NULL;
    sp_free(opts);
    n = nl;
    st = SP_ENOMEM;
    opts = sp_calloc((size_t)n + 1, sizeof *opts);
    if (!opts) goto done;
    for (int k = 0; k < ns; k++) {
        if (dens[k] >= 1.0) continue; /* dense */
        opts[which[k]] = sp_alloc(64);
        if (!opts[which[k]]) goto done;
        snprintf(opts[which[k]], 64, "format=csr density=%.9g", SP_MAX(dens[k], 1e-9));
    }
    if ((st = sp_prune_rewrite_config(config, opts, n, &text)) != SP_OK) goto done;
    *out = text;
    text = NULL;
    st = SP_OK;
done:
    if (opts)
        for (int i = 0; i < n; i++)
            if (opts[i] != probe_opt) sp_free(opts[i]);
    sp_free(opts);
    sp_free(probe_cfg);
    sp_free(text);
    sp_free(shapes);
    sp_free(dens);
    sp_free(which);
    sp_model_free(probe);
    return st;
}
