/*
 * layer.h - the contract between the model container and its layers (internal; not installed).
 *
 * A layer maps a batch of per-sample tensors of shape in = (c, h, w) to out = (c', h', w').
 * Activations are feature-major with the batch innermost: element (c, y, x) of sample b sits at
 * ((c * h + y) * w + x) * B + b, so a batch is a (c*h*w, B) row-major matrix and a dense layer
 * is one GEMM Y = W X. Sequences use the same layout with (c, h, w) = (d_model, 1, T): token t of
 * sequence b is column t * B + b, and a per-token layer (Linear, LayerNorm) sees a
 * (d_model, T*B) matrix.
 *
 * Each layer kind is a struct whose first member is sp_layer, plus a vtable:
 *
 *   forward(l, run, x, y)              y = f(x) for run->batch samples; caches what backward needs
 *   backward(l, run, x, y, dy, dx)     dx = (df/dx)^T dy (dx == NULL: not needed, skip it) and
 *                                      ACCUMULATES parameter gradients into l->grad
 *   init_params(l, rng)                writes the initial parameters into l->param
 *   reserve(l, batch)                  (optional) sizes per-batch caches for up to `batch`
 *   bind(l)                            (optional) called once l->param/grad/buffer are set
 *   free(l)                            frees the layer's own memory (not the arena views)
 *   describe(l, buf, n)                the config line that re-creates the layer
 *
 * Parameters live in the model's flat arenas: l->param and l->grad point at l->nparam floats
 * inside them, l->buffer at l->nbuffer floats of non-trained state (BatchNorm running
 * statistics), so that saving, zeroing gradients and optimizer steps are single loops.
 */
#ifndef SPARROW_NN_LAYER_H
#define SPARROW_NN_LAYER_H

#include <stdbool.h>
#include <stdint.h>

#include "sparrow/nn.h"
#include "sparrow/sparse.h"
#include "sparrow/tensor.h"

typedef struct sp_layer sp_layer;

/* A tensor a layer keeps outside the float arenas: a quantized layer's int8 or 4-bit weights,
 * their scales and its index arrays. The model file (docs/FORMAT.md) saves each as its own
 * table entry and hands all of them back on load. Arrays are flat, little-endian, fixed-width
 * elements, so the bytes in memory are the bytes in the file. */
typedef struct sp_layer_tensor {
    const char *name;      /* unique within the layer: [a-z0-9_], 1 to 15 characters */
    sp_dtype dtype;        /* element type (sparrow/tensor.h) */
    int64_t count;         /* elements */
    const void *data;      /* count elements */
} sp_layer_tensor;

/* What one forward/backward pass is about. */
typedef struct sp_run {
    int64_t batch;     /* B: samples in this pass (<= the reserved capacity) */
    bool train;        /* training mode (BatchNorm batch statistics, Dropout active) */
    int nthreads;      /* threads for kernels and GEMM; results do not depend on it */
    uint64_t seed;     /* with step and the layer index: the stream of stochastic layers */
    int64_t step;
    sp_backward_tap tap; /* backward: called before each layer's backward (may be NULL) */
    void *tap_user;
} sp_run;

typedef struct sp_layer_vt {
    const char *kind;
    sp_status (*forward)(sp_layer *l, const sp_run *run, const float *x, float *y);
    sp_status (*backward)(sp_layer *l, const sp_run *run, const float *x, const float *y,
                          const float *dy, float *dx);
    void (*init_params)(sp_layer *l, sp_rng *rng);
    sp_status (*reserve)(sp_layer *l, int64_t batch);
    sp_status (*bind)(sp_layer *l);
    void (*free)(sp_layer *l);
    int (*describe)(const sp_layer *l, char *buf, size_t n);
    /* optional: storage of the weight for summaries (default: "", nparam, 4 * nparam bytes) */
    void (*storage)(const sp_layer *l, const char **format, int64_t *dense_params, size_t *bytes);
    /* optional: an owned copy of the layer's sparsity pattern (*out NULL if it has none) */
    sp_status (*pattern)(const sp_layer *l, sp_mask **out);
    /* optional: the weight as a dense (out x in) matrix and the bias (out, may be NULL), and
     * back: set writes the stored entries from a dense matrix (others are not stored) */
    sp_status (*get_dense)(const sp_layer *l, float *w, float *bias);
    sp_status (*set_dense)(sp_layer *l, const float *w, const float *bias);
    /* optional: replaces the pattern of a weight stored dense behind a mask (out x in bits),
     * zeroing the weights it drops; the storage does not change */
    sp_status (*set_pattern)(sp_layer *l, const sp_mask *keep);
    /* optional: a sparse weight drops the stored entries drop[0..n) and gains the positions
     * grow[0..n) (row * in + col), keeping its entry count; src gets, for each new entry, the
     * old entry it came from or -1 (see sp_model_layer_rewire) */
    sp_status (*rewire)(sp_layer *l, const int64_t *drop, const int64_t *grow, int64_t n,
                        int64_t *src);
    /* optional: the tensors the layer keeps outside the arenas (see sp_layer_tensor), for
     * saving. ntensors says how many; get_tensor describes the k-th, its data borrowed from
     * the layer. */
    int (*ntensors)(const sp_layer *l);
    sp_status (*get_tensor)(const sp_layer *l, int k, sp_layer_tensor *t);
    /* optional, with the two above: the loader hands back all n tensors at once, in the order
     * get_tensor gave them (names and dtypes already matched). The layer checks every count
     * and every value it will index with (SP_EFORMAT naming the bad one; the layer is then
     * unchanged). borrow: the data stays valid and unchanged for the layer's life (a
     * read-only mapping of the file, 64-byte aligned) and may be used in place, with no copy;
     * otherwise the layer copies what it keeps. */
    sp_status (*load_tensors)(sp_layer *l, const sp_layer_tensor *t, int n, bool borrow);
    /* optional: nonzero weights of a layer that keeps them outside the arena (default: the
     * nonzero floats of its parameters) */
    int64_t (*nnz)(const sp_layer *l);
} sp_layer_vt;

struct sp_layer {
    const sp_layer_vt *vt;
    sp_shape in, out;      /* per-sample shapes */
    int64_t nparam;        /* floats of trained parameters */
    int64_t nbuffer;       /* floats of non-trained state, saved with the model */
    float *param, *grad;   /* views into the model's arenas (NULL while nparam == 0) */
    float *buffer;
    int index;             /* position in a depth-first walk of the model, from 0 */
    char name[16];         /* "3.linear" */
};

/* Options of one config line: kind and key=value pairs, with typed getters that report unknown
 * or malformed options naming the line. */
#define SP_ARGS_MAX 16
typedef struct sp_args {
    const char *kind;
    int line;              /* 1-based line in the config, for messages */
    int n;
    const char *key[SP_ARGS_MAX];
    const char *val[SP_ARGS_MAX];
    bool used[SP_ARGS_MAX];
} sp_args;

/* Integer option `key` in [lo, hi], or def when absent. */
sp_status sp_args_int(sp_args *a, const char *key, int64_t def, int64_t lo, int64_t hi,
                      int64_t *out);
/* Number option in [lo, hi]. */
sp_status sp_args_num(sp_args *a, const char *key, double def, double lo, double hi, double *out);
/* String option (borrowed from the config text), or def. */
sp_status sp_args_str(sp_args *a, const char *key, const char *def, const char **out);
/* "AxB" or a single "A" (then both): kernel sizes, strides, block shapes. */
sp_status sp_args_pair(sp_args *a, const char *key, int64_t def, int64_t lo, int64_t hi,
                       int64_t *first, int64_t *second);
/* SP_EINVAL naming the first option that no getter asked for. */
sp_status sp_args_finish(const sp_args *a);

/* What a layer constructor gets besides its options. */
typedef struct sp_build {
    sp_rng rng;            /* structure randomness (a sparse layer's random pattern) */
    int index;             /* the layer's index in the model */
    int64_t max_params;    /* budget: a constructor whose weights would exceed it (or that would
                            * allocate more than that many floats) fails with SP_EFORMAT before
                            * allocating; bounds what an untrusted checkpoint can make us build */
    const sp_mask *pattern; /* an explicit (out x in) sparsity pattern for this layer, or NULL */
    const sp_csr *pattern_csr; /* or the same as a CSR structure (values ignored), or NULL */
    bool pattern_used;     /* set by a constructor that took the pattern */
} sp_build;

/* A layer constructor: validates its options against the input shape and returns owned *out
 * with vt, in, out, nparam and nbuffer set. */
typedef sp_status (*sp_layer_create_fn)(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);

/* The table of layer kinds (registry.c). NULL if kind is unknown. */
sp_layer_create_fn sp_layer_find(const char *kind);
/* Comma-separated list of the kinds, for error messages. */
const char *sp_layer_kinds(void);

/* Allocates a zeroed layer struct of `size` bytes (its first member an sp_layer). */
void *sp_layer_alloc(size_t size, const sp_layer_vt *vt, sp_shape in);
/* Frees a layer through its vtable; accepts NULL. */
void sp_layer_free(sp_layer *l);

/* Features per sample. */
static inline int64_t sp_shape_numel(sp_shape s) { return s.c * s.h * s.w; }

/* Checks a forward/backward output for NaN/Inf: SP_EINVAL naming the layer and what. */
sp_status sp_check_finite(const sp_layer *l, const char *what, const float *v, int64_t n);

/* The CSR weight of a linear layer stored as CSR, else NULL (linear.c). */
const sp_csr *sp_linear_csr(const sp_layer *l);

/* The quantized linear layer (qlinear.c), for the quantizer (src/quant/qmodel.c). */
struct sp_qcsr;
bool sp_qlinear_is(const sp_layer *l);
/* Its config: bits, group (bits 4) and whether it stores every entry (layout=dense). */
void sp_qlinear_config(const sp_layer *l, int *bits, int *group, bool *dense_layout);
/* Gives it the quantized weight q (taken on success; must match the layer's shape, bits and
 * layout) and the bias (out floats, copied; NULL = zeros). */
sp_status sp_qlinear_set(sp_layer *l, struct sp_qcsr *q, const float *bias);
/* start: the following forward passes run with dynamic activation scales and record the
 * largest |input|; !start: that maximum / 127 becomes the static activation scale. */
void sp_qlinear_calibrate(sp_layer *l, bool start);
float sp_qlinear_act_scale(const sp_layer *l);

/* Layer constructors (one file each in src/nn/). */
sp_status sp_qlinear_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_linear_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_flatten_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_relu_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_gelu_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_silu_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_tanh_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_sigmoid_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_softmax_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_dropout_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_conv2d_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_maxpool_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_avgpool_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_globalavgpool_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_batchnorm_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_layernorm_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_embedding_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_posembed_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_attention_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
sp_status sp_tokens_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);

#endif
