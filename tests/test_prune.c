/*
 * test_prune.c - the pruning core (src/prune/): criteria against hand-computed values,
 * granularities against naive O(n^2) references, layer allocation (ER/ERK) against hand-checked
 * densities, the Zhu & Gupta schedule against its closed form, bad arguments and allocation
 * failure.
 */
#include <math.h>
#include <stdlib.h>

#include "test.h"

/* The error message of the last call contains what. */
#define CHECK_MSG_HAS(what)                                                                     \
    CHECK_MSG(strstr(sp_last_error(), (what)) != NULL, "message \"%s\" lacks \"%s\"",          \
              sp_last_error(), (what))

/* ---- criteria -------------------------------------------------------------------------------- */

static const float W6[6] = {1, -2, 3, -0.5f, 0, 4}; /* (2 x 3) */
static const float G6[6] = {0.5f, 1, -2, 4, 3, -0.25f};

static void check_exact(const float *got, const float *want, int n, const char *what) {
    for (int i = 0; i < n; i++)
        CHECK_MSG(got[i] == want[i], "%s[%d] = %.9g, want %.9g", what, i, (double)got[i],
                  (double)want[i]);
}

TEST(prune_criteria_hand_examples) {
    float s[6];
    sp_prune_inputs in = {.grad = G6, .grad_acc = G6, .xnorm = (const float[]){2, 0.5f, 1}};
    CHECK_OK(sp_prune_scores(SP_PRUNE_MAGNITUDE, 2, 3, W6, NULL, s));
    check_exact(s, (const float[]){1, 2, 3, 0.5f, 0, 4}, 6, "magnitude");
    CHECK_OK(sp_prune_scores(SP_PRUNE_SNIP, 2, 3, W6, &in, s));
    check_exact(s, (const float[]){0.5f, 2, 6, 2, 0, 1}, 6, "snip");
    CHECK_OK(sp_prune_scores(SP_PRUNE_MOVEMENT, 2, 3, W6, &in, s));
    check_exact(s, (const float[]){-0.5f, 2, 6, 2, 0, 1}, 6, "movement");
    CHECK_OK(sp_prune_scores(SP_PRUNE_WANDA, 2, 3, W6, &in, s));
    check_exact(s, (const float[]){2, 1, 3, 1, 0, 4}, 6, "wanda");
    CHECK_OK(sp_prune_scores(SP_PRUNE_ROW_L1, 2, 3, W6, NULL, s));
    check_exact(s, (const float[]){6, 4.5f}, 2, "row_l1");
    CHECK_OK(sp_prune_scores(SP_PRUNE_ROW_L2, 2, 3, W6, NULL, s));
    check_exact(s, (const float[]){(float)sqrt(14.0), (float)sqrt(16.25)}, 2, "row_l2");
    CHECK(sp_prune_criterion_per_row(SP_PRUNE_ROW_L1) && !sp_prune_criterion_per_row(SP_PRUNE_WANDA));
    CHECK(strcmp(sp_prune_criterion_name(SP_PRUNE_WANDA), "wanda") == 0);
    CHECK(strcmp(sp_prune_criterion_name((sp_prune_criterion)99), "?") == 0);
}

TEST(prune_criteria_random_is_the_seeded_stream) {
    float a[50], b[50];
    sp_prune_inputs in = {.seed = 42};
    CHECK_OK(sp_prune_scores(SP_PRUNE_RANDOM, 5, 10, NULL, &in, a)); /* w is not needed */
    CHECK_OK(sp_prune_scores(SP_PRUNE_RANDOM, 5, 10, W6, &in, b));
    sp_rng r;
    sp_rng_init(&r, 42, 0);
    bool differs = false;
    for (int i = 0; i < 50; i++) {
        float want = sp_rng_uniform(&r);
        CHECK(a[i] == want && b[i] == want && a[i] >= 0.0f && a[i] < 1.0f);
    }
    in.seed = 43;
    CHECK_OK(sp_prune_scores(SP_PRUNE_RANDOM, 5, 10, NULL, &in, b));
    for (int i = 0; i < 50; i++) differs |= a[i] != b[i];
    CHECK(differs);
}

TEST(prune_criteria_reject_missing_inputs) {
    float s[6];
    sp_prune_inputs none = {0};
    CHECK_STATUS(sp_prune_scores(SP_PRUNE_SNIP, 2, 3, W6, &none, s), SP_EINVAL);
    CHECK_MSG_HAS("grad is NULL");
    CHECK_STATUS(sp_prune_scores(SP_PRUNE_SNIP, 2, 3, W6, NULL, s), SP_EINVAL);
    CHECK_MSG_HAS("grad");
    CHECK_STATUS(sp_prune_scores(SP_PRUNE_MOVEMENT, 2, 3, W6, &none, s), SP_EINVAL);
    CHECK_MSG_HAS("grad_acc");
    CHECK_STATUS(sp_prune_scores(SP_PRUNE_WANDA, 2, 3, W6, &none, s), SP_EINVAL);
    CHECK_MSG_HAS("xnorm");
    sp_prune_inputs bad = {.xnorm = (const float[]){1, -1, 1}};
    CHECK_STATUS(sp_prune_scores(SP_PRUNE_WANDA, 2, 3, W6, &bad, s), SP_EINVAL);
    CHECK_MSG_HAS("xnorm[1]");
    CHECK_STATUS(sp_prune_scores(SP_PRUNE_MAGNITUDE, 2, 3, NULL, NULL, s), SP_EINVAL);
    CHECK_MSG_HAS("w is NULL");
    CHECK_STATUS(sp_prune_scores(SP_PRUNE_MAGNITUDE, 2, 3, W6, NULL, NULL), SP_EINVAL);
    CHECK_MSG_HAS("scores");
    CHECK_STATUS(sp_prune_scores((sp_prune_criterion)7, 2, 3, W6, NULL, s), SP_EINVAL);
    CHECK_MSG_HAS("7");
    CHECK_STATUS(sp_prune_scores(SP_PRUNE_MAGNITUDE, -1, 3, W6, NULL, s), SP_EINVAL);
    CHECK_OK(sp_prune_scores(SP_PRUNE_SNIP, 0, 3, NULL, NULL, NULL)); /* empty: nothing needed */
}

/* ---- naive references ------------------------------------------------------------------------ */

/* Entry i of p[0..n) is among the k highest (ties: lower index first): O(n) per entry. */
static bool naive_kept(const float *p, int64_t n, int64_t i, int64_t k) {
    int64_t rank = 0;
    for (int64_t j = 0; j < n; j++)
        if (p[j] > p[i] || (p[j] == p[i] && j < i)) rank++;
    return rank < k;
}

static int64_t round_keep(double s, int64_t n) { return (int64_t)floor((1.0 - s) * (double)n + 0.5); }

/* Random scores in [-1, 1) on a grid of `levels` values (levels > 0: many ties). */
static void fill_scores(float *p, int64_t n, int levels, sp_rng *r) {
    for (int64_t i = 0; i < n; i++) {
        float u = sp_rng_uniform(r) * 2.0f - 1.0f;
        p[i] = levels > 0 ? floorf(u * (float)levels) / (float)levels : u;
    }
}

/* ---- unstructured ----------------------------------------------------------------------------- */

TEST(prune_unstructured_keeps_the_highest_scores) {
    enum { R = 15, C = 23, N = R * C };
    float p[N];
    sp_rng r;
    sp_rng_init(&r, 7, 0);
    const double sp[] = {0.0, 0.1, 0.5, 0.73, 0.9, 0.998, 0.999};
    for (int levels = 0; levels <= 16; levels += 16)
        for (size_t t = 0; t < sizeof sp / sizeof *sp; t++) {
            fill_scores(p, N, levels, &r);
            sp_mask *m = NULL;
            CHECK_OK(sp_prune_mask_unstructured(R, C, p, sp[t], &m));
            if (!m) continue;
            int64_t k = round_keep(sp[t], N);
            CHECK_EQ(sp_mask_count(m), k);
            int bad = 0;
            for (int64_t i = 0; i < N && bad < 3; i++)
                if (sp_mask_get(m, i / C, i % C) != naive_kept(p, N, i, k)) {
                    bad++;
                    CHECK_MSG(false, "levels %d sparsity %g: entry %lld differs from the reference",
                              levels, sp[t], (long long)i);
                }
            sp_mask_free(m);
        }
    /* sparsity 0 keeps all; 0.999 of 345 keeps round(0.345) = 0; 0.998 keeps round(0.69) = 1 */
    sp_mask *m = NULL;
    CHECK_OK(sp_prune_mask_unstructured(R, C, p, 0.0, &m));
    CHECK_EQ(sp_mask_count(m), N);
    sp_mask_free(m);
    CHECK_OK(sp_prune_mask_unstructured(R, C, p, 0.999, &m));
    CHECK_EQ(sp_mask_count(m), 0);
    sp_mask_free(m);
    CHECK_OK(sp_prune_mask_unstructured(R, C, p, 0.998, &m));
    CHECK_EQ(sp_mask_count(m), 1);
    sp_mask_free(m);
    CHECK_OK(sp_prune_mask_unstructured(0, 5, NULL, 0.5, &m)); /* empty */
    CHECK(m && sp_mask_count(m) == 0);
    sp_mask_free(m);
}

TEST(prune_unstructured_breaks_ties_by_index) {
    float p[70];
    for (int i = 0; i < 70; i++) p[i] = 0.25f;
    sp_mask *m = NULL;
    CHECK_OK(sp_prune_mask_unstructured(7, 10, p, 0.6, &m)); /* keeps 28: the first 28 */
    for (int i = 0; m && i < 70; i++) CHECK_EQ(sp_mask_get(m, i / 10, i % 10), i < 28);
    sp_mask_free(m);
    /* -0 and +0 are the same score; infinities order as numbers */
    float z[4] = {-0.0f, 0.0f, -INFINITY, INFINITY};
    CHECK_OK(sp_prune_mask_unstructured(1, 4, z, 0.5, &m));
    CHECK(m && sp_mask_get(m, 0, 0) && !sp_mask_get(m, 0, 1) && !sp_mask_get(m, 0, 2) &&
          sp_mask_get(m, 0, 3));
    sp_mask_free(m);
}

TEST(prune_unstructured_rejects_bad_arguments) {
    float p[6] = {1, 2, 3, 4, 5, 6};
    sp_mask *m = (sp_mask *)p; /* must be reset to NULL on error */
    const double bad[] = {-0.1, 1.0, NAN, INFINITY};
    for (size_t t = 0; t < sizeof bad / sizeof *bad; t++) {
        CHECK_STATUS(sp_prune_mask_unstructured(2, 3, p, bad[t], &m), SP_EINVAL);
        CHECK_MSG_HAS("sparsity");
        CHECK(m == NULL);
    }
    p[4] = NAN;
    CHECK_STATUS(sp_prune_mask_unstructured(2, 3, p, 0.5, &m), SP_EINVAL);
    CHECK_MSG_HAS("(1, 1) is NaN");
    CHECK_STATUS(sp_prune_mask_unstructured(2, 3, NULL, 0.5, &m), SP_EINVAL);
    CHECK_MSG_HAS("scores is NULL");
    CHECK_STATUS(sp_prune_mask_unstructured(-2, 3, p, 0.5, &m), SP_EINVAL);
    CHECK_STATUS(sp_prune_mask_unstructured(2, 3, p, 0.5, NULL), SP_EINVAL);
    CHECK_STATUS(sp_prune_mask_unstructured(INT64_MAX, 3, p, 0.5, &m), SP_EOVERFLOW);
}

/* ---- global ----------------------------------------------------------------------------------- */

TEST(prune_global_prunes_the_small_layer_harder) {
    enum { NA = 12 * 10, NB = 8 * 10, NC = 3 * 7 };
    float a[NA], b[NB], c[NC], all[NA + NB + NC];
    sp_rng r;
    sp_rng_init(&r, 3, 0);
    for (int i = 0; i < NA; i++) a[i] = 0.5f + 0.5f * sp_rng_uniform(&r); /* [0.5, 1) */
    for (int i = 0; i < NB; i++) b[i] = 0.2f * sp_rng_uniform(&r);  /* all small */
    fill_scores(c, NC, 8, &r);                                      /* ties, negatives */
    memcpy(all, a, sizeof a);
    memcpy(all + NA, b, sizeof b);
    memcpy(all + NA + NB, c, sizeof c);
    sp_prune_layer L[3] = {{12, 10, a}, {8, 10, b}, {3, 7, c}};
    const double sp[] = {0.0, 0.5, 0.8, 0.97};
    for (size_t t = 0; t < sizeof sp / sizeof *sp; t++) {
        sp_mask *m[3] = {NULL, NULL, NULL};
        CHECK_OK(sp_prune_mask_global(3, L, sp[t], m));
        if (!m[0] || !m[1] || !m[2]) continue;
        int64_t k = round_keep(sp[t], NA + NB + NC);
        CHECK_EQ(sp_mask_count(m[0]) + sp_mask_count(m[1]) + sp_mask_count(m[2]), k);
        if (sp[t] > 0) CHECK(sp_mask_count(m[1]) * NA < sp_mask_count(m[0]) * NB);
        int64_t off = 0;
        for (int l = 0; l < 3; l++) {
            int64_t n = L[l].rows * L[l].cols;
            for (int64_t i = 0; i < n; i++)
                CHECK_MSG(sp_mask_get(m[l], i / L[l].cols, i % L[l].cols) ==
                              naive_kept(all, NA + NB + NC, off + i, k),
                          "sparsity %g layer %d entry %lld", sp[t], l, (long long)i);
            off += n;
            sp_mask_free(m[l]);
        }
    }
    /* at 0.5 the all-small layer loses everything: 110 kept of 221, all from layer 0 */
    sp_mask *m[3] = {NULL, NULL, NULL};
    CHECK_OK(sp_prune_mask_global(2, L, 0.5, m));
    CHECK(m[0] && m[1] && sp_mask_count(m[1]) == 0 && sp_mask_count(m[0]) == 100);
    sp_mask_free(m[0]);
    sp_mask_free(m[1]);
    /* ties across layers go to the earlier layer */
    float one[4] = {1, 1, 1, 1};
    sp_prune_layer T[2] = {{2, 2, one}, {1, 4, one}};
    CHECK_OK(sp_prune_mask_global(2, T, 0.5, m));
    CHECK(m[0] && m[1] && sp_mask_count(m[0]) == 4 && sp_mask_count(m[1]) == 0);
    sp_mask_free(m[0]);
    sp_mask_free(m[1]);
    /* errors leave every mask NULL */
    m[0] = m[1] = (sp_mask *)one;
    CHECK_STATUS(sp_prune_mask_global(2, T, 1.0, m), SP_EINVAL);
    CHECK_MSG_HAS("sparsity 1");
    CHECK(m[0] == NULL && m[1] == NULL);
    sp_prune_layer B[2] = {{2, 2, one}, {1, 4, NULL}};
    CHECK_STATUS(sp_prune_mask_global(2, B, 0.5, m), SP_EINVAL);
    CHECK_MSG_HAS("layer 1");
    CHECK_STATUS(sp_prune_mask_global(2, NULL, 0.5, m), SP_EINVAL);
    CHECK_STATUS(sp_prune_mask_global(-1, T, 0.5, m), SP_EINVAL);
    CHECK_OK(sp_prune_mask_global(0, NULL, 0.5, m));
}

TEST(prune_global_many_layers) {
    /* more layers than the stack segment array: 100 layers of 1 x 3 */
    enum { NL = 100 };
    float p[NL * 3];
    sp_prune_layer L[NL];
    sp_mask *m[NL];
    sp_rng r;
    sp_rng_init(&r, 5, 0);
    fill_scores(p, NL * 3, 0, &r);
    for (int l = 0; l < NL; l++) L[l] = (sp_prune_layer){1, 3, p + 3 * l};
    CHECK_OK(sp_prune_mask_global(NL, L, 0.75, m));
    int64_t kept = 0;
    for (int l = 0; l < NL; l++) {
        for (int j = 0; j < 3; j++)
            CHECK(sp_mask_get(m[l], 0, j) == naive_kept(p, NL * 3, 3 * l + j, 75));
        kept += sp_mask_count(m[l]);
        sp_mask_free(m[l]);
    }
    CHECK_EQ(kept, 75);
}

/* ---- N:M ------------------------------------------------------------------------------------- */

TEST(prune_nm_keeps_n_highest_per_group) {
    enum { R = 9, C = 64 };
    float p[R * C];
    sp_rng r;
    sp_rng_init(&r, 11, 0);
    const int pats[][2] = {{2, 4}, {1, 4}, {2, 8}, {1, 2}, {3, 16}, {31, 32}, {5, 32}};
    for (int levels = 0; levels <= 4; levels += 4)
        for (size_t t = 0; t < sizeof pats / sizeof *pats; t++) {
            int n = pats[t][0], m = pats[t][1];
            fill_scores(p, R * C, levels, &r);
            sp_mask *mk = NULL;
            CHECK_OK(sp_prune_mask_nm(R, C, p, n, m, &mk));
            if (!mk) continue;
            CHECK_EQ(sp_mask_count(mk), R * C / m * n);
            for (int i = 0; i < R; i++)
                for (int g = 0; g < C; g += m) {
                    int kept = 0;
                    for (int j = 0; j < m; j++) {
                        bool want = naive_kept(p + i * C + g, m, j, n);
                        kept += sp_mask_get(mk, i, g + j);
                        CHECK_MSG(sp_mask_get(mk, i, g + j) == want, "%d:%d row %d col %d", n, m,
                                  i, g + j);
                    }
                    CHECK_EQ(kept, n);
                }
            sp_mask_free(mk);
        }
    /* all equal: the first n of every group */
    for (int i = 0; i < R * C; i++) p[i] = -3.0f;
    sp_mask *mk = NULL;
    CHECK_OK(sp_prune_mask_nm(R, C, p, 2, 8, &mk));
    for (int i = 0; mk && i < R; i++)
        for (int j = 0; j < C; j++) CHECK_EQ(sp_mask_get(mk, i, j), j % 8 < 2);
    sp_mask_free(mk);
}

TEST(prune_nm_rejects_bad_patterns) {
    float p[24] = {0};
    sp_mask *mk = NULL;
    const int bad[][2] = {{2, 2}, {4, 2}, {0, 4}, {-1, 4}, {1, 33}, {1, 1}, {1, 0}};
    for (size_t t = 0; t < sizeof bad / sizeof *bad; t++) {
        CHECK_STATUS(sp_prune_mask_nm(2, 12, p, bad[t][0], bad[t][1], &mk), SP_EINVAL);
        CHECK_MSG_HAS("n < m <= 32");
        CHECK(mk == NULL);
    }
    CHECK_STATUS(sp_prune_mask_nm(2, 12, p, 2, 8, &mk), SP_ESHAPE);
    CHECK_MSG_HAS("cols 12");
    CHECK(mk == NULL);
    p[13] = NAN;
    CHECK_STATUS(sp_prune_mask_nm(2, 12, p, 2, 4, &mk), SP_EINVAL);
    CHECK_MSG_HAS("(1, 1) is NaN");
    CHECK_STATUS(sp_prune_mask_nm(2, 12, NULL, 2, 4, &mk), SP_EINVAL);
}

/* ---- blocks ---------------------------------------------------------------------------------- */

TEST(prune_blocks_keep_the_highest_block_sums) {
    enum { R = 10, C = 13 };
    float p[R * C];
    sp_rng r;
    sp_rng_init(&r, 13, 0);
    const int shapes[][2] = {{3, 4}, {1, 1}, {2, 13}, {10, 1}, {4, 4}, {16, 16}};
    const double sp[] = {0.0, 0.3, 0.5, 0.9};
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++)
        for (size_t u = 0; u < sizeof sp / sizeof *sp; u++) {
            int br = shapes[t][0], bc = shapes[t][1];
            int nbr = (R + br - 1) / br, nbc = (C + bc - 1) / bc, nb = nbr * nbc;
            float bs[R * C];
            fill_scores(p, R * C, (int)(t % 2) * 4, &r);
            for (int b = 0; b < nb; b++) {
                double acc = 0;
                for (int i = b / nbc * br; i < R && i < (b / nbc + 1) * br; i++)
                    for (int j = b % nbc * bc; j < C && j < (b % nbc + 1) * bc; j++)
                        acc += p[i * C + j];
                bs[b] = (float)acc;
            }
            sp_mask *m = NULL;
            CHECK_OK(sp_prune_mask_blocks(R, C, p, br, bc, sp[u], &m));
            if (!m) continue;
            int64_t k = round_keep(sp[u], nb), entries = 0;
            for (int b = 0; b < nb; b++) {
                bool want = naive_kept(bs, nb, b, k);
                for (int i = b / nbc * br; i < R && i < (b / nbc + 1) * br; i++)
                    for (int j = b % nbc * bc; j < C && j < (b % nbc + 1) * bc; j++) {
                        CHECK_MSG(sp_mask_get(m, i, j) == want, "block %dx%d s %g: (%d, %d)", br,
                                  bc, sp[u], i, j);
                        entries += want;
                    }
            }
            CHECK_EQ(sp_mask_count(m), entries);
            sp_mask_free(m);
        }
    /* all equal, 3x4 blocks of a 6x8: 4 blocks, 50% keeps the top row of blocks */
    for (int i = 0; i < 48; i++) p[i] = 1.0f;
    sp_mask *m = NULL;
    CHECK_OK(sp_prune_mask_blocks(6, 8, p, 3, 4, 0.5, &m));
    for (int i = 0; m && i < 6; i++)
        for (int j = 0; j < 8; j++) CHECK_EQ(sp_mask_get(m, i, j), i < 3);
    sp_mask_free(m);
    CHECK_STATUS(sp_prune_mask_blocks(6, 8, p, 0, 4, 0.5, &m), SP_EINVAL);
    CHECK_MSG_HAS("block 0 x 4");
    CHECK_STATUS(sp_prune_mask_blocks(6, 8, p, 3, 0, 0.5, &m), SP_EINVAL);
    CHECK_MSG_HAS("block 3 x 0");
    CHECK(m == NULL);
    CHECK_STATUS(sp_prune_mask_blocks(6, 8, p, 3, 4, -0.1, &m), SP_EINVAL);
    CHECK_MSG_HAS("sparsity");
    p[10] = NAN;
    CHECK_STATUS(sp_prune_mask_blocks(6, 8, p, 3, 4, 0.5, &m), SP_EINVAL);
    CHECK_MSG_HAS("block (0, 0)"); /* not a number */
    CHECK(m == NULL);
}

/* ---- rows ------------------------------------------------------------------------------------ */

TEST(prune_rows_keep_the_top_rows_sorted) {
    enum { R = 37, C = 5 };
    float rs[R];
    sp_rng r;
    sp_rng_init(&r, 17, 0);
    const double sp[] = {0.0, 0.3, 0.5, 0.95, 0.99};
    for (size_t t = 0; t < sizeof sp / sizeof *sp; t++) {
        fill_scores(rs, R, t % 2 ? 6 : 0, &r);
        sp_mask *m = NULL;
        int64_t *kept = NULL, nk = -1;
        CHECK_OK(sp_prune_mask_rows(R, C, rs, sp[t], &m, &kept, &nk));
        if (!m || !kept) continue;
        int64_t k = round_keep(sp[t], R);
        CHECK_EQ(nk, k);
        CHECK_EQ(sp_mask_count(m), k * C);
        int64_t c = 0;
        for (int64_t i = 0; i < R; i++) {
            bool want = naive_kept(rs, R, i, k);
            for (int j = 0; j < C; j++) CHECK_EQ(sp_mask_get(m, i, j), want);
            if (want) {
                CHECK(c < nk && kept[c] == i); /* ascending */
                c++;
            }
        }
        sp_mask_free(m);
        sp_free(kept);
    }
    /* ties: the lower rows; kept and nkept are optional */
    for (int i = 0; i < R; i++) rs[i] = 2.0f;
    sp_mask *m = NULL;
    CHECK_OK(sp_prune_mask_rows(R, C, rs, 0.5, &m, NULL, NULL)); /* keeps round(18.5) = 19 */
    for (int i = 0; m && i < R; i++) CHECK_EQ(sp_mask_get(m, i, 0), i < 19);
    sp_mask_free(m);
    int64_t *kept = (int64_t *)rs;
    CHECK_STATUS(sp_prune_mask_rows(R, C, rs, 1.0, &m, &kept, NULL), SP_EINVAL);
    CHECK(m == NULL && kept == NULL);
    CHECK_STATUS(sp_prune_mask_rows(R, C, NULL, 0.5, &m, &kept, NULL), SP_EINVAL);
    rs[3] = NAN;
    CHECK_STATUS(sp_prune_mask_rows(R, C, rs, 0.5, &m, &kept, NULL), SP_EINVAL);
    CHECK_MSG_HAS("row 3");
}

/* ---- layer allocation ------------------------------------------------------------------------ */

static bool near(double a, double b) { return fabs(a - b) <= 1e-12 * (1.0 + fabs(b)); }

static double weights(const sp_prune_layer_shape *L) {
    return (double)L->n_in * (double)L->n_out * (double)(L->kh ? L->kh : 1) *
           (double)(L->kw ? L->kw : 1);
}

/* Sum of the kept weights (density * count, and rounded per layer) against the target. */
static void check_total(const sp_prune_layer_shape *L, int n, const double *d, double target) {
    double total = 0, kept = 0, rounded = 0;
    for (int l = 0; l < n; l++) {
        double w = weights(&L[l]);
        CHECK_MSG(d[l] >= 0.0 && d[l] <= 1.0, "layer %d density %g", l, d[l]);
        total += w;
        kept += d[l] * w;
        rounded += floor(d[l] * w + 0.5);
    }
    CHECK_MSG(fabs(kept - target * total) <= 1e-9 * total, "kept %.9g, want %.9g", kept,
              target * total);
    CHECK_MSG(fabs(rounded - target * total) <= n, "rounded %.9g, want %.9g", rounded,
              target * total);
}

TEST(prune_densities_er_erk_hand_checked) {
    double d[3];
    /* ER: 100 -> 10 (raw 0.11, 1000 weights), 10 -> 10 (raw 0.2, 100); target 0.1 keeps 110:
     * eps = 110 / (110 + 20) */
    sp_prune_layer_shape L[2] = {{100, 10, 0, 0, false, 0}, {10, 10, 0, 0, false, 0}};
    CHECK_OK(sp_prune_densities(SP_PRUNE_ALLOC_ER, 2, L, 0.1, d));
    CHECK(near(d[0], 0.11 * 110.0 / 130.0) && near(d[1], 0.2 * 110.0 / 130.0));
    check_total(L, 2, d, 0.1);
    /* ERK = ER for Linear layers */
    double e[2];
    CHECK_OK(sp_prune_densities(SP_PRUNE_ALLOC_ERK, 2, L, 0.1, e));
    CHECK(near(e[0], d[0]) && near(e[1], d[1]));
    /* ERK: conv 2 -> 4, 3x3 (72 weights, raw 12/72), linear 8 -> 8 (64, raw 16/64); target 0.2
     * keeps 27.2: eps = 27.2 / 28 */
    sp_prune_layer_shape K[2] = {{2, 4, 3, 3, false, 0}, {8, 8, 0, 0, false, 0}};
    CHECK_OK(sp_prune_densities(SP_PRUNE_ALLOC_ERK, 2, K, 0.2, d));
    CHECK_MSG(near(d[0], 27.2 / 28.0 / 6.0) && near(d[1], 27.2 / 28.0 / 4.0), "%.17g %.17g", d[0],
              d[1]);
    check_total(K, 2, d, 0.2);
    /* ER ignores the kernel: raw (2 + 4) / 8 for the conv */
    CHECK_OK(sp_prune_densities(SP_PRUNE_ALLOC_ER, 2, K, 0.2, d));
    CHECK(near(d[0], 27.2 / (0.75 * 72 + 16) * 0.75) && near(d[1], 27.2 / (0.75 * 72 + 16) / 4));
    /* uniform */
    CHECK_OK(sp_prune_densities(SP_PRUNE_ALLOC_UNIFORM, 2, K, 0.2, d));
    CHECK(near(d[0], 0.2) && near(d[1], 0.2));
}

TEST(prune_densities_cap_dense_layers_and_rescale) {
    /* LeNet-300-100 at 10%: ER wants 1.84 for the 100 -> 10 layer; it becomes dense and eps is
     * solved again for the other two: (26620 - 1000) / (1084 + 400) */
    sp_prune_layer_shape L[3] = {{784, 300, 0, 0, false, 0}, {300, 100, 0, 0, false, 0},
                                 {100, 10, 0, 0, false, 0}};
    double d[4];
    CHECK_OK(sp_prune_densities(SP_PRUNE_ALLOC_ER, 3, L, 0.1, d));
    double eps = (26620.0 - 1000.0) / 1484.0;
    CHECK_MSG(d[2] == 1.0 && near(d[1], eps * 400.0 / 30000.0) && near(d[0], eps * 1084.0 / 235200.0),
              "%g %g %g", d[0], d[1], d[2]);
    check_total(L, 3, d, 0.1);
    /* a VGG-like mix: every allocation hits every target */
    sp_prune_layer_shape M[4] = {{512, 512, 3, 3, false, 0}, {3, 16, 3, 3, false, 0},
                                 {16, 32, 3, 3, false, 0}, {256, 10, 0, 0, false, 0}};
    for (int kind = SP_PRUNE_ALLOC_UNIFORM; kind <= SP_PRUNE_ALLOC_ERK; kind++) {
        const double targets[] = {0.01, 0.05, 0.3, 0.9, 1.0};
        for (int t = 0; t < 5; t++) {
            CHECK_OK(sp_prune_densities((sp_prune_alloc)kind, 4, M, targets[t], d));
            check_total(M, 4, d, targets[t]);
        }
    }
    /* ERK at 1%: eps 17.2 caps the linear (raw 0.104) first; eps 19.0 then caps the 3 -> 16
     * conv (raw 25/432); eps 19.07 leaves the rest sparse */
    CHECK_OK(sp_prune_densities(SP_PRUNE_ALLOC_ERK, 4, M, 0.01, d));
    CHECK_MSG(d[3] == 1.0 && d[1] == 1.0 && d[2] < 1.0 && d[0] < d[2], "%g %g %g %g", d[0], d[1],
              d[2], d[3]);
    double total = 0;
    for (int l = 0; l < 4; l++) total += weights(&M[l]);
    eps = (0.01 * total - 432 - 2560) / (1030.0 + 54.0);
    CHECK(near(d[2], eps * 54.0 / 4608.0) && near(d[0], eps * 1030.0 / (512.0 * 512 * 9)));
    CHECK_OK(sp_prune_densities(SP_PRUNE_ALLOC_ER, 4, M, 1.0, d));
    CHECK(d[0] == 1.0 && d[1] == 1.0 && d[2] == 1.0 && d[3] == 1.0);
}

TEST(prune_densities_overrides) {
    /* the output layer fixed at 1.0 (dense), the rest share the remainder */
    sp_prune_layer_shape L[3] = {{784, 300, 0, 0, false, 0}, {300, 100, 0, 0, false, 0},
                                 {100, 10, 0, 0, true, 1.0}};
    double d[3];
    CHECK_OK(sp_prune_densities(SP_PRUNE_ALLOC_UNIFORM, 3, L, 0.1, d));
    CHECK(d[2] == 1.0 && near(d[0], 25620.0 / 265200.0) && near(d[1], d[0]));
    check_total(L, 3, d, 0.1);
    L[2].fixed_density = 0.5;
    CHECK_OK(sp_prune_densities(SP_PRUNE_ALLOC_ERK, 3, L, 0.1, d));
    CHECK(d[2] == 0.5);
    check_total(L, 3, d, 0.1);
    /* every layer fixed: the overrides as given */
    sp_prune_layer_shape F[2] = {{4, 4, 0, 0, true, 0.25}, {4, 4, 0, 0, true, 0.75}};
    CHECK_OK(sp_prune_densities(SP_PRUNE_ALLOC_ER, 2, F, 0.3, d));
    CHECK(d[0] == 0.25 && d[1] == 0.75);
}

TEST(prune_densities_reject_bad_arguments) {
    sp_prune_layer_shape L[2] = {{100, 10, 0, 0, false, 0}, {10, 10, 0, 0, false, 0}};
    double d[2];
    const double bad[] = {-0.1, 1.5, NAN};
    for (int t = 0; t < 3; t++) {
        CHECK_STATUS(sp_prune_densities(SP_PRUNE_ALLOC_ER, 2, L, bad[t], d), SP_EINVAL);
        CHECK_MSG_HAS("target density");
    }
    CHECK_STATUS(sp_prune_densities((sp_prune_alloc)3, 2, L, 0.1, d), SP_EINVAL);
    CHECK_STATUS(sp_prune_densities(SP_PRUNE_ALLOC_ER, 2, NULL, 0.1, d), SP_EINVAL);
    CHECK_STATUS(sp_prune_densities(SP_PRUNE_ALLOC_ER, 2, L, 0.1, NULL), SP_EINVAL);
    L[1].kh = 3;
    CHECK_STATUS(sp_prune_densities(SP_PRUNE_ALLOC_ERK, 2, L, 0.1, d), SP_EINVAL);
    CHECK_MSG_HAS("layer 1: kernel 3 x 0");
    L[1].kh = 0;
    L[0].n_in = 0;
    CHECK_STATUS(sp_prune_densities(SP_PRUNE_ALLOC_ERK, 2, L, 0.1, d), SP_EINVAL);
    CHECK_MSG_HAS("layer 0");
    L[0].n_in = 100;
    L[1].fixed = true;
    L[1].fixed_density = 1.5;
    CHECK_STATUS(sp_prune_densities(SP_PRUNE_ALLOC_ERK, 2, L, 0.1, d), SP_EINVAL);
    CHECK_MSG_HAS("fixed density 1.5");
    /* fixed layers alone keep more than the target / the others cannot reach it */
    L[0].fixed = false;
    L[1].fixed_density = 1.0; /* keeps 100 of 1100 */
    CHECK_STATUS(sp_prune_densities(SP_PRUNE_ALLOC_ER, 2, L, 0.05, d), SP_EINVAL);
    CHECK_MSG_HAS("below");
    L[1].fixed_density = 0.0;
    CHECK_STATUS(sp_prune_densities(SP_PRUNE_ALLOC_UNIFORM, 2, L, 0.95, d), SP_EINVAL);
    CHECK_MSG_HAS("unreachable");
    L[0].n_in = INT64_MAX / 2;
    L[0].n_out = 4;
    CHECK_STATUS(sp_prune_densities(SP_PRUNE_ALLOC_ER, 2, L, 0.1, d), SP_EOVERFLOW);
}

/* ---- schedules ------------------------------------------------------------------------------- */

TEST(prune_schedule_matches_the_closed_form) {
    const double s_is[] = {0.0, 0.2};
    for (int a = 0; a < 2; a++) {
        sp_prune_schedule s = {.s_i = s_is[a], .s_f = 0.9, .t0 = 100, .dt = 10, .n = 5};
        const int64_t ts[] = {0, 99, 100, 105, 110, 125, 140, 149, 150, 151, 100000};
        for (size_t k = 0; k < sizeof ts / sizeof *ts; k++) {
            int64_t t = ts[k];
            double want;
            if (t < 100) want = s.s_i;
            else if (t > 150) want = 0.9;
            else want = 0.9 + (s.s_i - 0.9) * pow(1.0 - (double)(t - 100) / 50.0, 3);
            double got = -1;
            CHECK_OK(sp_prune_schedule_sparsity(&s, t, &got));
            CHECK_MSG(fabs(got - want) <= 1e-15, "s_i %g t %lld: %.17g != %.17g", s.s_i,
                      (long long)t, got, want);
        }
        double got;
        CHECK_OK(sp_prune_schedule_sparsity(&s, 125, &got)); /* half way: 1/8 of the gap left */
        CHECK(fabs(got - (0.9 - (0.9 - s.s_i) / 8)) <= 1e-15);
        CHECK_OK(sp_prune_schedule_sparsity(&s, 150, &got));
        CHECK(got == 0.9);
        CHECK_OK(sp_prune_schedule_sparsity(&s, 100, &got));
        CHECK(got == s.s_i);
    }
}

TEST(prune_schedule_update_steps) {
    sp_prune_schedule s = {.s_i = 0.0, .s_f = 0.9, .t0 = 100, .dt = 10, .n = 5};
    int count = 0;
    for (int64_t t = 0; t < 300; t++) {
        bool up = true;
        CHECK_OK(sp_prune_schedule_is_update(&s, t, &up));
        bool want = t >= 100 && t <= 150 && t % 10 == 0;
        CHECK_MSG(up == want, "t %lld", (long long)t);
        count += up;
    }
    CHECK_EQ(count, 6); /* t0, t0 + dt, ..., t0 + n dt */
    /* one-shot: s_i = s_f */
    sp_prune_schedule one = {.s_i = 0.5, .s_f = 0.5, .t0 = 7, .dt = 1, .n = 1};
    double v;
    bool up;
    CHECK_OK(sp_prune_schedule_sparsity(&one, 7, &v));
    CHECK(v == 0.5);
    CHECK_OK(sp_prune_schedule_is_update(&one, 7, &up));
    CHECK(up);
    CHECK_OK(sp_prune_schedule_is_update(&one, 9, &up));
    CHECK(!up);
    CHECK_OK(sp_prune_schedule_check(&one));
}

TEST(prune_schedule_rejects_bad_arguments) {
    const sp_prune_schedule ok = {.s_i = 0.1, .s_f = 0.9, .t0 = 0, .dt = 2, .n = 3};
    struct {
        sp_prune_schedule s;
        sp_status st;
        const char *msg;
    } bad[] = {
        {ok, SP_EINVAL, "dt 0"},      {ok, SP_EINVAL, "n 0"},     {ok, SP_EINVAL, "s_i 0.5 > s_f"},
        {ok, SP_EINVAL, "s_f 1"},     {ok, SP_EINVAL, "s_i -0.1"}, {ok, SP_EINVAL, "s_f nan"},
        {ok, SP_EINVAL, "t0 -1"},     {ok, SP_EOVERFLOW, "overflows"},
    };
    bad[0].s.dt = 0;
    bad[1].s.n = 0;
    bad[2].s.s_i = 0.5, bad[2].s.s_f = 0.3;
    bad[3].s.s_f = 1.0;
    bad[4].s.s_i = -0.1;
    bad[5].s.s_f = NAN;
    bad[6].s.t0 = -1;
    bad[7].s.n = INT64_MAX / 2, bad[7].s.dt = 4;
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        double v;
        bool up;
        CHECK_STATUS(sp_prune_schedule_check(&bad[k].s), bad[k].st);
        CHECK_MSG_HAS(bad[k].msg);
        CHECK_STATUS(sp_prune_schedule_sparsity(&bad[k].s, 5, &v), bad[k].st);
        CHECK_STATUS(sp_prune_schedule_is_update(&bad[k].s, 5, &up), bad[k].st);
    }
    CHECK_STATUS(sp_prune_schedule_check(NULL), SP_EINVAL);
    CHECK_STATUS(sp_prune_schedule_sparsity(&ok, 5, NULL), SP_EINVAL);
    CHECK_STATUS(sp_prune_schedule_is_update(&ok, 5, NULL), SP_EINVAL);
}

/* ---- allocation failure ---------------------------------------------------------------------- */

TEST(prune_masks_survive_allocation_failure) {
    float p[96];
    sp_rng r;
    sp_rng_init(&r, 19, 0);
    fill_scores(p, 96, 0, &r);
    enum { NL = 70 };
    sp_prune_layer L[NL];
    for (int l = 0; l < NL; l++) L[l] = (sp_prune_layer){1, 1, p + l};
    for (int which = 0; which < 7; which++) {
        bool finished = false;
        for (int64_t n = 1; n < 200 && !finished; n++) {
            int64_t live = sp_alloc_live();
            sp_mask *m = NULL, *ms[NL] = {NULL};
            int64_t *kept = NULL;
            sp_alloc_fail_after(n);
            sp_status st = SP_OK;
            switch (which) {
            case 0: st = sp_prune_mask_unstructured(8, 12, p, 0.5, &m); break;
            case 1: st = sp_prune_mask_global(3, (sp_prune_layer[]){{8, 4, p}, {2, 16, p + 32}, {4, 8, p + 64}}, 0.5, ms); break;
            case 2: st = sp_prune_mask_global(NL, L, 0.5, ms); break; /* segments on the heap */
            case 3: st = sp_prune_mask_nm(8, 12, p, 2, 4, &m); break;
            case 4: st = sp_prune_mask_blocks(8, 12, p, 3, 5, 0.5, &m); break;
            case 5: st = sp_prune_mask_rows(8, 12, p, 0.5, &m, &kept, NULL); break;
            case 6: st = sp_prune_mask_rows(8, 12, p, 0.5, &m, NULL, NULL); break;
            }
            sp_alloc_fail_after(0);
            if (st == SP_OK) {
                finished = true;
                CHECK_MSG(n > 1, "function %d succeeded at the first injected failure", which);
            } else {
                CHECK_MSG(st == SP_ENOMEM, "function %d, failure %lld: %s", which, (long long)n,
                          sp_status_name(st));
                CHECK(m == NULL && kept == NULL);
                for (int l = 0; l < NL; l++) CHECK(ms[l] == NULL);
            }
            sp_mask_free(m);
            for (int l = 0; l < NL; l++) sp_mask_free(ms[l]);
            sp_free(kept);
            CHECK_MSG(sp_alloc_live() == live, "function %d leaks at failure %lld", which,
                      (long long)n);
        }
        CHECK_MSG(finished, "function %d never succeeded", which);
    }
}
