/*
 * sparrow/prune.h - pruning as pure functions: criteria (weights in, scores out), granularities
 * (scores in, masks out), layer allocation (shapes in, per-layer densities out) and schedules
 * (step in, sparsity out). Nothing here touches a model; training code calls these.
 *
 * Magnitude-prune a (300 x 784) weight w to 90% sparsity, unstructured:
 *
 *     float *s = sp_alloc(sizeof(float) * 300 * 784);
 *     sp_prune_scores(SP_PRUNE_MAGNITUDE, 300, 784, w, NULL, s);   // s = |w|
 *     sp_mask *m = NULL;
 *     sp_status st = sp_prune_mask_unstructured(300, 784, s, 0.9, &m);  // keeps 23520 entries
 *     if (st == SP_OK) sp_mask_apply(m, w, 784);
 *     sp_mask_free(m);
 *     sp_free(s);
 *
 * Gradually, with the Zhu & Gupta schedule: at every step t where sp_prune_schedule_is_update()
 * says so, take the sparsity from sp_prune_schedule_sparsity() and prune again as above.
 *
 * Weights are (rows x cols) row-major with rows = outputs. Scores are compared as floats; the
 * selection is exact and platform-independent: the k highest scores are kept and among equal
 * scores the lower index (row-major; for global pruning, the earlier layer) wins. NaN scores are
 * refused (SP_EINVAL naming the entry). A kept count is always round((1 - sparsity) * count).
 */
#ifndef SPARROW_PRUNE_H
#define SPARROW_PRUNE_H

#include "sparrow/core.h"
#include "sparrow/nn.h"
#include "sparrow/sparse.h"
#include "sparrow/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- criteria ------------------------------------------------------------------------------ */

typedef enum sp_prune_criterion {
    SP_PRUNE_MAGNITUDE = 0, /* |w| */
    SP_PRUNE_RANDOM = 1,    /* uniform [0, 1) from sp_rng (seed, stream 0), row-major order */
    SP_PRUNE_SNIP = 2,      /* |w * g|, g = dL/dw (Lee et al. 2019) */
    SP_PRUNE_MOVEMENT = 3,  /* -w * acc_g, acc_g = dL/dw summed over steps (Sanh et al. 2020) */
    SP_PRUNE_WANDA = 4,     /* |w_ij| * xnorm_j, xnorm_j = ||X_j||_2 (Sun et al. 2023) */
    SP_PRUNE_ROW_L1 = 5,    /* sum_j |w_ij|: one score per row (neuron / output channel) */
    SP_PRUNE_ROW_L2 = 6,    /* sqrt(sum_j w_ij^2): one score per row */
} sp_prune_criterion;

/* The optional inputs of the criteria; only those the criterion needs are read. */
typedef struct sp_prune_inputs {
    const float *grad;     /* SNIP: (rows x cols) gradient */
    const float *grad_acc; /* movement: (rows x cols) gradient summed over steps */
    const float *xnorm;    /* Wanda: cols values >= 0, the L2 norm of input feature j */
    uint64_t seed;         /* random */
} sp_prune_inputs;

/* Name of a criterion ("magnitude"), or "?" for an unknown value. */
const char *sp_prune_criterion_name(sp_prune_criterion kind);
/* True for the criteria that give one score per row (ROW_L1, ROW_L2). */
bool sp_prune_criterion_per_row(sp_prune_criterion kind);

/* Scores of a (rows x cols) weight w (row-major) into scores: rows * cols floats, or rows floats
 * for the per-row criteria. Borrows everything; allocates nothing. in may be NULL for magnitude,
 * random (seed 0) and the row norms. SP_EINVAL for an unknown kind, a NULL pointer (naming the
 * input that the criterion needs: "grad", "grad_acc", "xnorm"), a negative or NaN xnorm value. */
sp_status sp_prune_scores(sp_prune_criterion kind, int64_t rows, int64_t cols, const float *w,
                          const sp_prune_inputs *in, float *scores);

/* ---- granularities: scores -> masks --------------------------------------------------------- */
/* Every function below borrows its scores and returns an owned mask (rows x cols) in *out (NULL
 * on error). sparsity must be in [0, 1) (SP_EINVAL naming it otherwise, NaN included). */

/* Keeps the round((1 - sparsity) * rows * cols) highest of the rows * cols scores. */
sp_status sp_prune_mask_unstructured(int64_t rows, int64_t cols, const float *scores,
                                     double sparsity, sp_mask **out);

/* One layer's scores for global pruning. */
typedef struct sp_prune_layer {
    int64_t rows, cols;
    const float *scores; /* rows * cols */
} sp_prune_layer;

/* Global pruning: one threshold over all layers' scores together; keeps
 * round((1 - sparsity) * total) entries in all. masks[0..nlayers) get owned masks (all NULL on
 * error). Free each with sp_mask_free. */
sp_status sp_prune_mask_global(int64_t nlayers, const sp_prune_layer *layers, double sparsity,
                               sp_mask **masks);

/* N:M: in every group of m consecutive columns of a row, keeps the n highest scores.
 * 1 <= n < m <= 32 (SP_EINVAL); cols not a multiple of m is SP_ESHAPE. */
sp_status sp_prune_mask_nm(int64_t rows, int64_t cols, const float *scores, int32_t n, int32_t m,
                           sp_mask **out);

/* Blocks of br x bc (edge blocks may be smaller): a block's score is the sum of its scores (in
 * double, rounded to float); keeps the round((1 - sparsity) * nblocks) highest blocks, where
 * nblocks = ceil(rows / br) * ceil(cols / bc), blocks ordered row-major for ties. br, bc >= 1. */
sp_status sp_prune_mask_blocks(int64_t rows, int64_t cols, const float *scores, int32_t br,
                               int32_t bc, double sparsity, sp_mask **out);

/* Whole rows (structured neurons / filters): keeps the round((1 - sparsity) * rows) rows with
 * the highest row_scores (rows values, e.g. from SP_PRUNE_ROW_L2) and sets all their bits.
 * kept, if not NULL, gets an owned, ascending array of the kept row indices (free with sp_free;
 * a valid pointer even when none is kept) and nkept, if not NULL, their number. */
sp_status sp_prune_mask_rows(int64_t rows, int64_t cols, const float *row_scores,
                             double sparsity, sp_mask **out, int64_t **kept, int64_t *nkept);

/* ---- layer allocation: per-layer densities for a target overall density ------------------- */

typedef enum sp_prune_alloc {
    SP_PRUNE_ALLOC_UNIFORM = 0, /* the same density everywhere */
    SP_PRUNE_ALLOC_ER = 1,      /* Erdos-Renyi: eps (n_in + n_out) / (n_in n_out) (SET) */
    SP_PRUNE_ALLOC_ERK = 2,     /* ER-Kernel: eps (n_in + n_out + kh + kw) / (n_in n_out kh kw)
                                   (RigL); a Linear layer (kh = kw = 0) gets ER's raw density */
} sp_prune_alloc;

/* One layer: n_in x n_out weights times kh x kw for a convolution (kh = kw = 0 for a Linear
 * layer; both 0 or both >= 1). fixed: the layer gets exactly fixed_density (an override, e.g. a
 * denser output layer); the others share what the target leaves. */
typedef struct sp_prune_layer_shape {
    int64_t n_in, n_out, kh, kw;
    bool fixed;
    double fixed_density; /* in [0, 1], read when fixed */
} sp_prune_layer_shape;

/* Per-layer densities (density[0..nlayers), caller-owned) such that sum density_l * n_l =
 * density * sum n_l, with n_l the layer's weight count. ER/ERK: eps is solved for; a layer whose
 * density would exceed 1 is made dense and eps solved again for the rest, until none exceeds 1.
 * Allocates nothing. SP_EINVAL for a bad shape, kind, density outside [0, 1] or an unreachable
 * target (the fixed layers alone keep more, or every free layer dense keeps too few). */
sp_status sp_prune_densities(sp_prune_alloc kind, int64_t nlayers,
                             const sp_prune_layer_shape *layers, double density, double *out);

/* ---- RigL growth ---- */
/* The k positions outside w's pattern (rows x in CSR) where |G| is largest, G = dy x^T with dy
 * (w->rows x cols) and x (w->cols x cols) row-major (feature-major activations, `cols` samples),
 * computed tile_rows rows of G at a time (<= 0: a default that keeps a tile near 1 MiB), never
 * the whole G: memory O(k + one tile). Ties: the lower row-major index wins; NaN in G is SP_EINVAL.
 * grow_idx (k entries, caller-owned) gets the positions as row * w->cols + col, ascending.
 * score, if not NULL (k entries), gets |G| at those positions in the same order.
 * SP_EINVAL if k exceeds the free positions (rows*cols - nnz) or k < 0. nthreads as elsewhere.
 * (RigL, Evci et al. 2020: the growth step.) Borrows everything; allocates one tile of
 * tile_rows x w->cols floats and 12 bytes per candidate for at most min(2k, free) candidates,
 * both freed before returning. w is validated (SP_EFORMAT); NULL w, dy, x, or grow_idx with
 * k > 0, and cols < 1, are SP_EINVAL; k = 0 returns SP_OK without computing G; SP_ENOMEM. */
sp_status sp_rigl_grow(const sp_csr *w, const float *dy, const float *x, int64_t cols, int64_t k,
                       int64_t tile_rows, int nthreads, int64_t *grow_idx, float *score);
/* The readable reference: the whole G, then the same selection. For tests. */
sp_status sp_rigl_grow_ref(const sp_csr *w, const float *dy, const float *x, int64_t cols,
                           int64_t k, int64_t *grow_idx, float *score);

/* ---- schedules ------------------------------------------------------------------------------ */

/* Zhu & Gupta (2017) gradual pruning: s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 for t in
 * [t0, t0 + n dt], s_i before t0, s_f after; masks are updated at t0, t0 + dt, ..., t0 + n dt.
 * One-shot pruning is the degenerate case s_i = s_f (e.g. n = dt = 1): prune to s_f at step t0. */
typedef struct sp_prune_schedule {
    double s_i, s_f; /* 0 <= s_i <= s_f < 1 */
    int64_t t0;      /* >= 0: first pruning step */
    int64_t dt;      /* >= 1: steps between mask updates */
    int64_t n;       /* >= 1: number of pruning intervals */
} sp_prune_schedule;

/* SP_OK if the schedule is valid, else SP_EINVAL (SP_EOVERFLOW if t0 + n dt overflows) naming
 * the bad field. */
sp_status sp_prune_schedule_check(const sp_prune_schedule *s);
/* *out = the target sparsity at step t. Validates s as above. */
sp_status sp_prune_schedule_sparsity(const sp_prune_schedule *s, int64_t t, double *out);
/* *out = true when step t is a mask-update step. Validates s as above. */
sp_status sp_prune_schedule_is_update(const sp_prune_schedule *s, int64_t t, bool *out);

/* ---- structured pruning (physical removal) ------------------------------------------------- */

/* What sp_model_prune_structured removes: per pruned layer, fraction of its units (neurons or
 * filters), ranked by the L1 or L2 norm of their weight rows. */
typedef struct sp_prune_structured_spec {
    sp_prune_criterion criterion; /* SP_PRUNE_ROW_L1 or SP_PRUNE_ROW_L2 (no default) */
    double fraction;              /* of units removed per pruned layer, [0, 1) */
} sp_prune_structured_spec;

/* Structured pruning with physical removal: whole neurons (rows of a linear layer's weight) and
 * filters (output channels of a conv2d, their (C/G, kh, kw) weights being the row) go, and the
 * result is an ordinary, smaller dense model (owned *out) whose config has the smaller out=
 * counts; every other parameter and BatchNorm running statistic is copied. m is not changed.
 *
 * A layer is pruned when it is a dense linear or a conv2d with groups=1 whose output reaches a
 * consumer through per-channel layers only: relu, gelu, silu, tanh, sigmoid, dropout,
 * batchnorm, maxpool, avgpool, globalavgpool, flatten, and depthwise conv2d (groups = in = out
 * channels). The consumer is a dense linear or a conv2d with groups=1. Such a layer keeps
 * round((1 - fraction) * units) units, at least 1, chosen by sp_prune_mask_rows (ties: the
 * lower index stays). Then the per-channel layers between keep the kept channels (BatchNorm's
 * gamma, beta, running mean and variance; a depthwise conv's filters, its out= and groups=
 * shrinking together: it is never a target itself), a flatten maps channel c of a (C, H, W)
 * input to its H*W features c*H*W .. c*H*W + H*W - 1, and the consumer loses the matching input
 * columns (linear) or input channels (conv2d). The pruned model computes what m computes with
 * the removed units' contributions to their consumer set to zero.
 *
 * Not pruned (left as they are): the last linear layer (the classes); a layer whose output
 * reaches the model output, or a layer of any other kind (softmax, layernorm, attention,
 * embedding, ...), a grouped (not depthwise) conv or a masked / sparse linear layer (format
 * other than dense) before any consumer; masked / sparse linear layers themselves, which keep
 * their patterns. In a residual block the consumer must be in the same body: the body's output
 * is added to its input and keeps its width (a transformer's feed-forward hidden layer shrinks,
 * its output layer does not). SP_EINVAL for a NULL argument, a criterion other than row_l1 /
 * row_l2, a fraction outside [0, 1) (NaN included) and a model with no layer to prune;
 * SP_ENOMEM. */
sp_status sp_model_prune_structured(const sp_model *m, const sp_prune_structured_spec *spec,
                                    sp_model **out);

/* ---- pruning a model ------------------------------------------------------------------------- */

typedef enum sp_prune_granularity {
    SP_PRUNE_LAYERWISE = 0, /* unstructured, the same sparsity in every pruned layer */
    SP_PRUNE_GLOBAL = 1,    /* unstructured, one threshold across all pruned layers */
    SP_PRUNE_NM = 2,        /* n of every m inputs */
    SP_PRUNE_BLOCK = 3,     /* br x bc blocks */
} sp_prune_granularity;

typedef struct sp_prune_spec {
    sp_prune_criterion criterion; /* magnitude or random (the others need training inputs) */
    sp_prune_granularity granularity;
    double sparsity;              /* layerwise, global, block: fraction removed, [0, 1) */
    int32_t n, m;                 /* N:M */
    int32_t br, bc;               /* blocks */
    const char *format;           /* storage of the pruned layers: "csr", "mask", "bsr", "nm";
                                   * NULL: nm for N:M, bsr for blocks, else csr */
    bool keep_last;               /* leave the last linear layer dense (the output layer) */
    uint64_t seed;                /* for the random criterion */
    /* per-layer overrides (may be NULL): layer_sparsity[i] >= 0 gives layer i (model layer
     * index, i < nlayer_sparsity) that sparsity, layerwise, outside a global threshold; 0 keeps
     * it whole; < 0 (or NaN) leaves it to the settings above. */
    const double *layer_sparsity;
    int nlayer_sparsity;
} sp_prune_spec;

/* One-shot pruning: every dense linear layer of m (but the last with keep_last) is pruned by
 * spec and stored in spec->format; the result is a new model (owned *out) whose pruned layers
 * keep their patterns on save and load, with every other parameter and state copied. m is not
 * changed. SP_EINVAL naming the bad setting, SP_ESHAPE for an N:M pattern that does not divide
 * a layer. */
sp_status sp_model_prune(const sp_model *m, const sp_prune_spec *spec, sp_model **out);

/* Sparse storage after training with masks: every masked linear layer (format=mask) of m becomes
 * `format` on the same pattern with the same weights: "csr", "bsr" with a x b blocks, "nm"
 * with a:b (every group of b inputs may hold at most a entries; SP_EFORMAT naming the group
 * otherwise), or "auto": each layer in the format that runs its forward pass fastest at batch a
 * (0: 64) on b threads (0: 1), by sp_prune_pick_format. The rest is copied. New model in *out;
 * m is not changed. */
sp_status sp_model_sparsify(const sp_model *m, const char *format, int32_t a, int32_t b,
                            sp_model **out);

/* Measures which storage runs masked linear layer i of m fastest: its weights as one-layer
 * models in each format that can hold its pattern (dense, CSR, BSR 4x4 / 16x1 when their blocks
 * are at least half full, N:M 2:4 / 1:4 / 2:8 when the pattern fits), each timed on the same
 * input (forward pass, best of 5 rounds of ~2 ms). Writes the winner's config options
 * ("format=csr", "format=bsr block=16x1", "format=dense density=1", ...) to opt and, if ms is
 * not NULL, its time per pass in milliseconds. Timing decides, so close calls may differ from
 * run to run; the weights never do. */
sp_status sp_prune_pick_format(const sp_model *m, int i, int64_t batch, int nthreads, char *opt,
                               size_t optlen, double *ms);

/* ---- pruning while training ------------------------------------------------------------------ */
/*
 * Gradual pruning (Zhu & Gupta 2017) of a trained dense model m for E more epochs:
 *
 *     sp_prune_spec ms = {.granularity = SP_PRUNE_LAYERWISE, .sparsity = 0, .format = "mask",
 *                         .keep_last = true};
 *     sp_model_prune(m, &ms, &mm);              // dense linear layers -> masks, nothing dropped
 *     sp_prune_gradual g = {.spec = {.criterion = SP_PRUNE_MAGNITUDE, .keep_last = true},
 *                           .sched = {.s_i = 0, .s_f = 0.9, .t0 = 0, .dt = 100, .n = 20}};
 *     opts.hook = sp_prune_gradual_hook; opts.hook_user = &g;
 *     sp_train(mm, o, train, NULL, &opts, &state);
 *     sp_model_sparsify(mm, "csr", 0, 0, &sparse);   // masks -> CSR for inference
 */

/* Prunes, in place, the masked linear layers (format=mask) of m (the last linear layer
 * excepted with spec->keep_last) to `sparsity` by spec's criterion (magnitude or random) and
 * granularity (layerwise, global, block; N:M keeps spec->n of every spec->m and ignores
 * sparsity), with spec's per-layer overrides. Entries already dropped stay dropped (they rank
 * below every kept one, and a target below a layer's sparsity leaves it as it is); the dropped
 * weights become zero and, when o is not NULL, their optimizer state too, so that they stay
 * zero while training goes on. spec->sparsity and spec->format are not read. SP_EINVAL if m has
 * no masked layer to prune. */
sp_status sp_model_prune_masks(sp_model *m, sp_optim *o, const sp_prune_spec *spec,
                               double sparsity);

/* Gradual pruning as a training hook (sp_train_opts.hook, with hook_user a sp_prune_gradual):
 * before every step t at which sched updates, prunes the masks to the schedule's s_t. */
typedef struct sp_prune_gradual {
    sp_prune_spec spec;       /* criterion, granularity, keep_last, n:m, block, seed */
    sp_prune_schedule sched;
    int64_t updates;          /* mask updates this hook made */
    double sparsity;          /* the last sparsity it applied (0 before the first) */
} sp_prune_gradual;
sp_status sp_prune_gradual_hook(sp_model *m, sp_optim *o, int64_t step, void *gradual);

/* ---- dynamic sparse training ------------------------------------------------------------------ */
/*
 * Sparse from the first step to the last: a model whose linear layers are CSR (config
 * `format=csr density=D`, or densities from sp_prune_densities) trains with weights, gradients
 * and optimizer state for the stored entries only; every update_every steps SET changes each CSR
 * layer's topology in place (sp_model_layer_rewire), keeping its entry count. Set
 * opts.hook = sp_dst_hook and opts.hook_user = a sp_dst for sp_train.
 */
typedef enum sp_dst_kind {
    SP_DST_STATIC = 0, /* a fixed random pattern: the baseline ("FixProb") */
    SP_DST_SET = 1,    /* Mocanu et al. 2018: drop closest to zero, grow at random */
    SP_DST_RIGL = 2,   /* Evci et al. 2020: drop by magnitude, grow by gradient */
} sp_dst_kind;

typedef struct sp_dst {
    sp_dst_kind kind;
    int64_t update_every;  /* >= 1: steps between topology updates (steps 0 and t % dT != 0
                            * never update) */
    double drop_fraction;  /* [0, 1): zeta, of each sign's weights (SET); alpha, annealed by
                            * cosine to 0 at end_step (RigL) */
    int64_t end_step;      /* no updates from this step on (0: none such; RigL then keeps alpha) */
    uint64_t seed;         /* the random positions (SET), the gradient batch (RigL) */
    const sp_dataset *data; /* RigL: the data its gradient batch is drawn from (with
                             * replacement, by seed and step; a batch >= data->n takes it all) */
    int64_t batch;         /* RigL: that batch's size */
    int nthreads;          /* RigL: threads of its gradient tiles (<= 0: all) */
    int64_t updates;       /* out: updates made */
    double update_seconds; /* out: time spent in them */
} sp_dst;

/* The config text for sparse training: each linear layer of config (the last one only with
 * sparse_last) gets `format=csr density=d_l`, with d_l from sp_prune_densities(dist, ...,
 * density) or, when epsilon > 0, Erdos-Renyi's min(1, epsilon (n_in + n_out) / (n_in n_out))
 * directly; a layer at density 1 stays dense. The shapes come from a probe whose linear layers
 * hold one entry per row, so a network far too large to build dense is configured in memory
 * proportional to its neurons. Owned text in *out (sp_free). */
sp_status sp_dst_config(const char *config, sp_shape in, int64_t classes, sp_prune_alloc dist,
                        double density, double epsilon, bool sparse_last, char **out);
/* "static", "set", "rigl"; "?" otherwise. */
const char *sp_dst_name(sp_dst_kind kind);
/* SP_OK or SP_EINVAL naming the bad setting. */
sp_status sp_dst_check(const sp_dst *d);
/* One topology update of every CSR linear layer of m at step `step`, with o's state re-ordered
 * alike (o may be NULL). Layer by layer: an error part way (out of memory) leaves the layers
 * before it updated, and training must stop there (sp_train does). A layer too dense to regrow
 * what SET drops replaces only as many entries as it has empty positions. */
sp_status sp_dst_update(sp_model *m, sp_optim *o, sp_dst *d, int64_t step);
/* The training hook: sp_dst_update at the steps d's settings say. */
sp_status sp_dst_hook(sp_model *m, sp_optim *o, int64_t step, void *d);


/* ---- recipe files (docs/RECIPES.md) --------------------------------------------------------- *
 *
 * A recipe is text: `sparrow train` settings one per line without the dashes ("prune-sparsity
 * 0.9", a flag alone: "prune-last"), '#' comments, blank lines, and "prune-layer NAME SPARSITY"
 * lines (per-layer overrides). The parser checks the syntax, as for any untrusted file; what a
 * setting's value means is for the caller (the CLI parses them as its options). */
typedef struct sp_recipe sp_recipe;
/* Parses len bytes of recipe text (borrowed; need not end in NUL). Errors name the line:
 * SP_EFORMAT for bytes that are not recipe text (a NUL or control byte, non-ASCII outside a
 * comment, a line over 4096 bytes, more than 1 MiB), a malformed setting name (dashes, capitals,
 * other characters, over 64 characters), a setting with more than one value, a prune-layer line
 * without exactly a name and a sparsity, or more than 64 settings or 256 prune-layer lines;
 * SP_EINVAL for 'recipe' or 'resume', a setting or layer given twice, a layer name that is not
 * 1 to 15 of [A-Za-z0-9._-], a sparsity that is not a number in [0, 1), and a recipe with no
 * setting at all. Returns owned *out (sp_recipe_free). */
sp_status sp_recipe_parse(const char *text, size_t len, sp_recipe **out);
/* Number of settings (prune-layer lines not counted). */
int sp_recipe_count(const sp_recipe *r);
/* Setting i in file order: *key without dashes, *value (NULL for a flag), *line (1-based); each
 * output may be NULL. Borrowed until sp_recipe_free. SP_EINVAL if i is out of range. */
sp_status sp_recipe_setting(const sp_recipe *r, int i, const char **key, const char **value,
                            int *line);
/* Number of prune-layer lines, and line i's layer name, sparsity and line number. */
int sp_recipe_nlayers(const sp_recipe *r);
sp_status sp_recipe_layer(const sp_recipe *r, int i, const char **name, double *sparsity,
                          int *line);
/* The prune-layer lines as one "NAME=S,NAME=S" list (the --prune-layers syntax, each S as
 * written), or NULL if there are none. Borrowed. */
const char *sp_recipe_layers(const sp_recipe *r);
/* Accepts NULL. */
void sp_recipe_free(sp_recipe *r);

#ifdef __cplusplus
}
#endif
#endif
