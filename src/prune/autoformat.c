/*
 * autoformat.c - choosing each pruned layer's storage by measuring it: for every masked linear
 * layer, the candidate formats that can hold its pattern (dense, CSR, BSR 4x4 and 16x1 when
 * their blocks are at least half full, N:M 2:4 / 1:4 / 2:8 when the pattern fits one) are built
 * as one-layer models with the layer's weights and timed on the same input; the fastest wins.
 *
 * The weights are the same whatever wins; only the storage differs. Timings vary from run to run,
 * so two runs may store a layer differently when two formats are close.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sparrow/prune.h"

#include "../core/internal.h"

#define AUTO_CANDIDATES 8

/* Fraction of stored entries that are in the pattern when stored in br x bc blocks. */
static double block_fill(const sp_mask *p, int64_t br, int64_t bc) {
    int64_t blocks = 0;
    for (int64_t I = 0; I < p->rows; I += br)
        for (int64_t J = 0; J < p->cols; J += bc) {
            bool any = false;
            for (int64_t i = I; i < SP_MIN(I + br, p->rows) && !any; i++)
                for (int64_t j = J; j < SP_MIN(J + bc, p->cols) && !any; j++)
                    any = sp_mask_get(p, i, j);
            blocks += any;
        }
    int64_t kept = sp_mask_count(p);
    return blocks > 0 ? (double)kept / (double)(blocks * br * bc) : 0.0;
}

/* True if every group of m consecutive columns of every row holds at most n entries. */
static bool fits_nm(const sp_mask *p, int n, int m) {
    if (p->cols % m != 0) return false;
    for (int64_t i = 0; i < p->rows; i++)
        for (int64_t g = 0; g < p->cols; g += m) {
            int set = 0;
            for (int64_t j = g; j < g + m; j++) set += sp_mask_get(p, i, j);
            if (set > n) return false;
        }
    return true;
}

/* Median-free, noise-resistant time of one forward pass: the best of 5 rounds of k passes. */
static sp_status time_forward(sp_model *lm, const float *x, int64_t batch, double *best) {
    const float *y;
    sp_status st = sp_model_forward(lm, x, batch, false, &y); /* warm up, size the buffers */
    if (st != SP_OK) return st;
    double t0 = sp_now_seconds();
    int k = 1;
    if ((st = sp_model_forward(lm, x, batch, false, &y)) != SP_OK) return st;
    double one = sp_now_seconds() - t0;
    if (one > 0) k = (int)SP_MIN(1000.0, SP_MAX(1.0, 2e-3 / one)); /* ~2 ms per round */
    *best = 1e30;
    for (int r = 0; r < 5; r++) {
        double s = sp_now_seconds();
        for (int i = 0; i < k && st == SP_OK; i++) st = sp_model_forward(lm, x, batch, false, &y);
        if (st != SP_OK) return st;
        *best = SP_MIN(*best, (sp_now_seconds() - s) / k);
    }
    return SP_OK;
}

sp_status sp_prune_pick_format(const sp_model *m, int i, int64_t batch, int nthreads,
                               char *opt, size_t optlen, double *ms) {
    sp_layer_info li;
    sp_status st = sp_model_layer(m, i, &li);
    if (st != SP_OK) return st;
    if (strcmp(li.kind, "linear") || strcmp(li.format, "mask"))
        return sp_fail(SP_EINVAL, "pick_format: layer %s is not a masked linear layer", li.name);
    if (batch < 1 || batch > 4096)
        return sp_fail(SP_EINVAL, "pick_format: batch %lld not in [1, 4096]", (long long)batch);
    const int64_t rows = li.out.c, cols = li.in.c;
    const char *cand[AUTO_CANDIDATES];
    int nc = 0;
    sp_mask *p = NULL;
    float *w = NULL, *bias = NULL, *x = NULL;
    if ((st = sp_model_layer_pattern(m, i, &p)) != SP_OK) return st;
    cand[nc++] = "format=dense density=1";
    cand[nc++] = "format=csr";
    if (block_fill(p, 4, 4) >= 0.5) cand[nc++] = "format=bsr block=4x4";
    if (block_fill(p, 16, 1) >= 0.5) cand[nc++] = "format=bsr block=16x1";
    if (fits_nm(p, 1, 4)) cand[nc++] = "format=nm nm=1:4";
    else if (fits_nm(p, 2, 4)) cand[nc++] = "format=nm nm=2:4";
    else if (fits_nm(p, 2, 8)) cand[nc++] = "format=nm nm=2:8";
    const int64_t xn = cols * li.in.h * li.in.w * batch;
    st = SP_ENOMEM;
    w = sp_alloc(sizeof(float) * (size_t)(rows * cols));
    bias = sp_alloc(sizeof(float) * (size_t)rows);
    x = sp_alloc(sizeof(float) * (size_t)xn);
    if (!w || !bias || !x) goto done;
    if ((st = sp_model_layer_get_weight(m, i, w, bias)) != SP_OK) goto done;
    for (int64_t k = 0; k < xn; k++) x[k] = (float)((k * 37) % 101) / 101.0f - 0.5f;
    double best = 1e30;
    int winner = 0;
    for (int c = 0; c < nc; c++) {
        char line[160];
        snprintf(line, sizeof line, "linear out=%lld bias=%d %s\n", (long long)rows,
                 li.nparam > rows * cols ? 1 : 0, cand[c]);
        const bool dense = !strncmp(cand[c], "format=dense", 12);
        const sp_mask *pat[1] = {dense ? NULL : p};
        sp_model *lm = NULL;
        st = sp_model_new_with_patterns(line, li.in, rows, 1, (int64_t)1 << 34, pat, 1, &lm);
        if (st == SP_OK) st = sp_model_layer_set_weight(lm, 0, w, bias);
        double t = 0.0;
        if (st == SP_OK) {
            sp_model_set_threads(lm, nthreads);
            st = time_forward(lm, x, batch, &t);
        }
        sp_model_free(lm);
        if (st != SP_OK) goto done;
        if (t < best) best = t, winner = c;
    }
    snprintf(opt, optlen, "%s", cand[winner]);
    if (ms) *ms = best * 1e3;
    st = SP_OK;
done:
    sp_mask_free(p);
    sp_free(w);
    sp_free(bias);
    sp_free(x);
    return st;
}
