/*
 * sparrow/nn.h - models: layers stacked from a readable config, forward and backward passes.
 *
 * A model is built from a config text (docs/CONFIG.md) or a built-in spec, for a given input
 * shape and number of classes, then run on feature-major batches (features, B):
 *
 *     char *cfg = NULL;
 *     sp_model *m = NULL;
 *     sp_shape in = {1, 28, 28};
 *     if (sp_model_spec_config("lenet300", &cfg) != SP_OK) ...     // or read a config file
 *     if (sp_model_new(cfg, in, 10, 42, &m) != SP_OK) ...           // seed 42
 *     const float *logits;                                          // (10, B)
 *     sp_model_forward(m, x, B, true, &logits);
 *     ... dlogits from a loss (sparrow/train.h) ...
 *     sp_model_zero_grad(m);
 *     sp_model_backward(m, dlogits, NULL);  // fills sp_model_grads(m)
 *     sp_free(cfg); sp_model_free(m);
 *
 * Parameters, gradients and non-trained state (BatchNorm running statistics) each live in one
 * flat arena, so an optimizer is one loop over sp_model_params / sp_model_grads.
 */
#ifndef SPARROW_NN_H
#define SPARROW_NN_H

#include "sparrow/core.h"
#include "sparrow/sparse.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per-sample shape: channels, height, width. A flat vector is (n, 1, 1); a sequence of T
 * tokens of width d is (d, 1, T). */
typedef struct sp_shape {
    int64_t c, h, w;
} sp_shape;

typedef struct sp_model sp_model;

/* Config text of a built-in spec: "mlp:H1,H2,..." (Flatten, Linear+ReLU per hidden size, Linear
 * to the classes), "lenet300" (= mlp:300,100), "lenet5" (the classic 6/16-filter LeNet-5 with
 * ReLU and max pooling), "mobilenet" (a small depthwise-separable CNN), "transformer" (a small
 * decoder-only transformer over image rows as tokens), "charlm:layers=L,dim=D,heads=H,ctx=T"
 * with optional ",hidden=F" (FFN width, default 4*D) and ",experts=E,top_k=K,routing=token|
 * expert" (MoE feed-forward blocks; F then defaults to 4*D/K) (a character-level language
 * model: input 1 1 T of token ids, an embedding of the classes = the vocabulary, L pre-norm
 * causal transformer blocks, per-token logits), "moe-mlp:H,experts=E,top_k=K" (an MLP with a
 * residual mixture-of-experts block; top_k defaults to 1). docs/CONFIG.md shows each expansion.
 * Returns owned *text (sp_free). SP_EINVAL naming the spec (and the bad value) if unknown or
 * malformed. */
sp_status sp_model_spec_config(const char *spec, char **text);

/* Reads the optional first line "input C [H W]" of config text (comments and blank lines before
 * it skipped): *found and *in (missing sizes are 1) if present, else *found = false. A text
 * model's context length T is the W of its "input 1 1 T". SP_EINVAL naming the line for a
 * malformed input line. */
sp_status sp_model_config_input(const char *text, sp_shape *in, bool *found);

/* Builds a model from config text for inputs of shape `in` and `classes` outputs (the token
 * `classes` in the config stands for it). seed fixes the initial parameters and any random
 * sparse pattern. Borrows text; returns owned *out. SP_EINVAL/SP_ESHAPE naming the config line
 * for unknown layers, bad options or impossible shapes; SP_ENOMEM. */
sp_status sp_model_new(const char *text, sp_shape in, int64_t classes, uint64_t seed,
                       sp_model **out);
/* As sp_model_new, but fails with SP_EFORMAT before allocating if the parameters and state
 * would exceed max_params floats (how loaders bound what an untrusted file can ask for). */
sp_status sp_model_new_limited(const char *text, sp_shape in, int64_t classes, uint64_t seed,
                               int64_t max_params, sp_model **out);
/* As sp_model_new_limited, with explicit sparsity patterns: patterns[i] (NULL for none), for
 * i < npatterns, is the (out x in) pattern of layer i, which must be a masked or sparse linear
 * layer; it replaces the random pattern its density would draw (a pruned layer's pattern).
 * Borrows the masks. SP_EFORMAT naming the layer for a pattern that does not fit it (shape,
 * more than N of M, a layer that takes none). */
sp_status sp_model_new_with_patterns(const char *text, sp_shape in, int64_t classes,
                                     uint64_t seed, int64_t max_params,
                                     const sp_mask *const *patterns, int npatterns,
                                     sp_model **out);
/* As sp_model_new_with_patterns, where a layer's pattern may also come as a CSR structure:
 * csrs[i] (NULL for none; its row_ptr and column indices count, its values are ignored) is the
 * pattern of layer i, which must then be a CSR linear layer. A CSR pattern costs memory in its
 * entries, not in out x in bits: how a layer too large for a bit mask is saved and loaded. At
 * most one of masks[i] and csrs[i] per layer; either array may be NULL. */
sp_status sp_model_new_with_structure(const char *text, sp_shape in, int64_t classes,
                                      uint64_t seed, int64_t max_params,
                                      const sp_mask *const *masks, const sp_csr *const *csrs,
                                      int npatterns, sp_model **out);
/* Accepts NULL. */
void sp_model_free(sp_model *m);

/* Runs the model on x (features, batch), feature-major, leading dimension batch. train selects
 * batch statistics and active dropout. *y points at the output (out features, batch), owned by
 * the model and valid until the next call. Activations are kept for sp_model_backward. */
sp_status sp_model_forward(sp_model *m, const float *x, int64_t batch, bool train,
                           const float **y);
/* Back-propagates dy (out features, batch) through the last forward pass, ADDING into the
 * parameter gradients (call sp_model_zero_grad first). dx (in features, batch), if not NULL,
 * gets the gradient with respect to the input. SP_EINVAL if no forward came first. */
sp_status sp_model_backward(sp_model *m, const float *dy, float *dx);
/* Zeroes the gradient arena. */
void sp_model_zero_grad(sp_model *m);

/* SP_OK if every gradient is finite; else SP_EINVAL naming the first layer and entry that holds
 * a NaN or Inf. */
sp_status sp_model_check_grads(const sp_model *m);

/* Name of the first layer (in execution order) whose output in the last forward pass holds a
 * NaN or Inf, or NULL: for diagnosing a non-finite loss. */
const char *sp_model_first_nonfinite(const sp_model *m);

/* Threads for later passes (<= 0: all); results are bitwise identical for any count. */
void sp_model_set_threads(sp_model *m, int nthreads);
/* Training step number: with the seed it fixes the random streams of stochastic layers
 * (Dropout), so that a resumed run draws the same numbers. */
void sp_model_set_step(sp_model *m, int64_t step);

/* A look at the backward pass: called for every layer, before its backward, with its index (as
 * sp_model_layer counts), its input x and the gradient dy of its output, both feature-major
 * (features x (h * w * batch))). Borrowed, valid during the call. An error stops the pass.
 * RigL uses it to see dL/dW = dy x^T of its sparse layers without storing it. */
typedef sp_status (*sp_backward_tap)(int layer, const float *x, const float *dy, int64_t batch,
                                     void *user);
/* Installs tap (NULL removes it) for the following backward passes. */
void sp_model_set_backward_tap(sp_model *m, sp_backward_tap tap, void *user);

/* The input convention the model was trained with: a feature is raw value * scale (1/255 for
 * u8 images, the default). Saved in model files, so that an imported or evaluated model is fed
 * what it was trained on; sp_train and sp_evaluate refuse data with another scale. */
void sp_model_set_input_scale(sp_model *m, float scale);
float sp_model_input_scale(const sp_model *m);

/* The vocabulary of a text model (a character-level language model): codepoints[i] is the
 * Unicode code point of token id i, strictly ascending, n == classes. Copied (borrows the
 * array); NULL removes it. Saved in model files (VOCB, docs/CHECKPOINT.md), so that evaluation
 * and generation encode text as training did. SP_EINVAL naming the entry for n != classes, a
 * value that is not a Unicode scalar value (surrogates, > U+10FFFF) or one out of order. */
sp_status sp_model_set_vocab(sp_model *m, const int32_t *codepoints, int64_t n);
/* The vocabulary (borrowed, valid until the next set or free) and *n its length (if n is not
 * NULL), or NULL and *n = 0 for a model without one (image models). */
const int32_t *sp_model_vocab(const sp_model *m, int64_t *n);

/* The arenas (nparams floats each for params and grads; nbuffers for state). */
int64_t sp_model_nparams(const sp_model *m);
float *sp_model_params(sp_model *m);
float *sp_model_grads(sp_model *m);
int64_t sp_model_nbuffers(const sp_model *m);
float *sp_model_buffers(sp_model *m);

/* Shapes, seed and the normalized config (an "input C H W" line, then one line per layer):
 * sp_model_new(config, in, classes, seed) rebuilds the same model. */
sp_shape sp_model_in(const sp_model *m);
sp_shape sp_model_out(const sp_model *m);
int64_t sp_model_classes(const sp_model *m);
uint64_t sp_model_seed(const sp_model *m);
const char *sp_model_config(const sp_model *m);

/* One row of a model summary. */
typedef struct sp_layer_info {
    const char *name;   /* "2.linear" */
    const char *kind;   /* "linear" */
    sp_shape in, out;
    int64_t nparam;     /* trained floats */
    int64_t nnz;        /* nonzero parameters */
    int64_t param_offset; /* where its parameters start in the arena */
    const char *format; /* storage of its weight: "dense", "mask", "csr", "bsr", "nm"; "" if it
                         * has no weight matrix */
    int64_t dense_params; /* parameters of the same layer stored dense */
    size_t bytes;       /* bytes its parameters take: values plus any sparse index structure */
} sp_layer_info;
/* Number of layers (nested ones included, depth-first). */
int sp_model_nlayers(const sp_model *m);
/* Summary of layer i; SP_EINVAL if out of range. */
sp_status sp_model_layer(const sp_model *m, int i, sp_layer_info *info);
/* An owned copy of layer i's sparsity pattern, or *out = NULL for a layer without one (dense
 * weights, no weights). For N:M it includes the padding slots of groups with fewer entries. */
sp_status sp_model_layer_pattern(const sp_model *m, int i, sp_mask **out);
/* Layer i's weight as a dense (out x in) row-major matrix, whatever its storage (zeros where
 * nothing is stored), and its bias (out floats; bias may be NULL). SP_EINVAL for a layer with
 * no weight matrix (only linear layers have one today). */
sp_status sp_model_layer_get_weight(const sp_model *m, int i, float *w, float *bias);
/* Sets layer i's weight from a dense (out x in) matrix: every stored entry takes its value from
 * w (entries the layer does not store are ignored) and the bias from bias (if not NULL). */
sp_status sp_model_layer_set_weight(sp_model *m, int i, const float *w, const float *bias);
/* Replaces the pattern of layer i, a linear layer stored dense behind a mask (format=mask), by
 * keep (out x in, borrowed) and zeroes the weights it drops: pruning during training. Any other
 * layer is SP_EINVAL (sparse storage changes its pattern by rebuilding, sp_model_prune). */
sp_status sp_model_layer_set_pattern(sp_model *m, int i, const sp_mask *keep);
/* The CSR structure of layer i (borrowed; valid until the next topology change), or NULL if the
 * layer is not a CSR linear layer. Its values are the parameter arena slice of the layer. */
const sp_csr *sp_model_layer_csr(const sp_model *m, int i);
/* Changes the topology of layer i, a linear layer stored as CSR, keeping its number of stored
 * entries: the entries drop[0..n) (stored-entry indices, ascending, distinct) go and the
 * positions grow[0..n) (row * in + col, ascending, distinct, not among the entries that stay) come in with
 * weight 0, without a dense detour. The layer's values in the parameter arena are re-ordered to
 * the new CSR order; src (the layer's entry count) gets, for each new entry, the index of the
 * old entry it came from, or -1 for a grown one, so that a caller can re-order optimizer state
 * alike (sp_optim_remap). SP_EINVAL naming the first bad index; on error nothing changes. */
sp_status sp_model_layer_rewire(sp_model *m, int i, const int64_t *drop, const int64_t *grow,
                                int64_t n, int64_t *src);
/* Nonzero parameters over the whole model. */
int64_t sp_model_nnz(const sp_model *m);

/* ---- mixture of experts (the `moe` block of docs/CONFIG.md) ------------------------------- *
 *
 * A `moe experts=E top_k=K ... { <one expert's layers> }` block builds E experts (ordinary
 * layers, listed by sp_model_layer after the moe layer) and a router:
 *
 *     sp_model_forward(m, x, B, true, &y);
 *     double loss = main_loss + sp_model_aux_loss(m);   // what backward differentiates
 *     sp_model_backward(m, dy, NULL);                    // adds the aux gradients itself
 *     sp_moe_stats s;
 *     if (sp_model_moe_stats(m, i, &s) == SP_OK) ... s.load_max_over_mean, s.dropped ...
 *     sp_model_moe_set_top_k(m, 1);                      // cheaper inference
 */

/* Sum over the moe layers of their weighted auxiliary losses (balance * Switch load-balancing
 * loss + zloss * router z-loss) of the last forward pass if it was in training mode, else 0
 * (and 0 for a model without moe). sp_model_backward adds their gradients itself, so the
 * objective being trained is the main loss + sp_model_aux_loss. */
double sp_model_aux_loss(const sp_model *m);

/* Routing statistics of one moe layer, accumulated over forward passes (training and
 * evaluation) since the last sp_model_moe_reset_stats. */
typedef struct sp_moe_stats {
    int experts, top_k;        /* E and the top_k in effect (after sp_model_moe_set_top_k) */
    int64_t tokens;            /* tokens routed since the last reset */
    int64_t assignments;       /* (token, expert) pairs that ran */
    int64_t dropped;           /* pairs dropped by capacity */
    const int64_t *load;       /* tokens per expert (experts entries), borrowed until the next
                                * reset or the model is freed */
    double load_max_over_mean; /* max_i load_i / mean_i load_i (0 if nothing routed) */
    double router_entropy;     /* mean over tokens of -sum_i p_i log p_i, nats (sigmoid routers:
                                * of p normalized to sum 1) */
    double balance_loss, z_loss; /* unweighted, of the last forward pass */
} sp_moe_stats;
/* Statistics of layer `layer` (as sp_model_layer counts). SP_EINVAL if it is not a moe layer. */
sp_status sp_model_moe_stats(const sp_model *m, int layer, sp_moe_stats *out);
/* Zeroes the accumulated statistics of every moe layer. */
void sp_model_moe_reset_stats(sp_model *m);
/* Inference override: every token-choice (routing=token or noisy) moe layer routes each token
 * to its k best experts from now on (capacity, if any, scales with k); the config keeps the
 * top_k it was built with. SP_EINVAL naming the layer if k < 1 or k > its experts (nothing
 * changes then), or if the model has no token-choice moe layer. */
sp_status sp_model_moe_set_top_k(sp_model *m, int k);
/* Expert pruning: a new model (owned *out) whose moe layer `layer` keeps its `keep` most-loaded
 * experts by the accumulated statistics (ties: lower index), in their old order, with their
 * router rows and weights (sparse experts keep their patterns); every other layer is copied.
 * Layer indices after the dropped experts shift down. m is not changed. SP_EINVAL if layer is
 * not moe, or keep is not in [top_k, experts]. */
sp_status sp_model_moe_prune_experts(const sp_model *m, int layer, int keep, sp_model **out);

#ifdef __cplusplus
}
#endif
#endif
