/*
 * seq.h - layer sequences and block layers, shared by the container (model.c) and the
 * mixture-of-experts block (moe.c). Internal; not installed.
 *
 * A sequence runs its layers in order and keeps the activations of its last forward pass:
 * act[i] is layer i's output (numel(out_i), batch), dact[i] the gradient with respect to it.
 * A block layer owns nested sequences ("bodies"): a residual block one, a moe block one per
 * expert (plus one for a shared expert). The config text holds a block's body once; the parser
 * builds every body from it, each with its own layer indices.
 */
#ifndef SPARROW_NN_SEQ_H
#define SPARROW_NN_SEQ_H

#include "layer.h"

typedef struct sp_seq {
    int n;
    sp_layer **layers;
    float **act, **dact;
} sp_seq;

/* Frees the activation buffers (not the layers). */
void sp_seq_free_buffers(sp_seq *s);
/* Frees the layers and the buffers; leaves s empty. */
void sp_seq_deinit(sp_seq *s);
/* Appends l (taken on success). */
sp_status sp_seq_push(sp_seq *s, sp_layer *l);
/* (Re)allocates the activations for up to `batch` samples and calls each layer's reserve. */
sp_status sp_seq_reserve(sp_seq *s, int64_t batch);
/* Runs the layers on x for run->batch samples (reserved before). */
sp_status sp_seq_forward(sp_seq *s, const sp_run *run, const float *x);
/* Back through the last forward: dy the gradient of the last output, dx (may be NULL) the
 * input gradient. Calls run->tap before each layer with run->batch. */
sp_status sp_seq_backward(sp_seq *s, const sp_run *run, const float *x, const float *dy,
                          float *dx);

/* ---- block layers ---------------------------------------------------------------------------- */

/* Number of nested sequences of l (0 for a plain layer). */
int sp_layer_nbodies(const sp_layer *l);
/* Body k of a block layer. */
sp_seq *sp_layer_body(const sp_layer *l, int k);
/* Samples body k ran on in the last forward pass of l, whose own batch was `batch`. */
int64_t sp_layer_body_batch(const sp_layer *l, int k, int64_t batch);

/* ---- mixture of experts (moe.c) --------------------------------------------------------------- */

/* Validates the options of a "moe ... {" line (a: the options without the "{") for input
 * `in` and returns owned *out with its router parameters counted; the bodies are empty until
 * the parser fills them (sp_moe_body), then sp_moe_finish checks them. */
sp_status sp_moe_create(sp_args *a, sp_shape in, sp_build *b, sp_layer **out);
bool sp_moe_is(const sp_layer *l);
/* Number of bodies: experts, plus one for the shared expert. */
int sp_moe_nbodies(const sp_layer *l);
sp_seq *sp_moe_body(const sp_layer *l, int k);
int64_t sp_moe_body_batch(const sp_layer *l, int k);
/* Weighted auxiliary loss of the last forward pass (0 unless it was in training mode). */
double sp_moe_aux_loss(const sp_layer *l);
/* Reserves every buffer an evaluation forward pass of up to `tokens` tokens (N = h * w *
 * batch) can need, whatever the routing: the routing arrays, the gather buffer, each expert's
 * activations for all the tokens it could be given (N, or its capacity) and the shared
 * expert's. Training reserves lazily instead (never E x N up front); inference sessions
 * (session.c) call this so that their runs allocate nothing. Uses the current top_k. */
sp_status sp_moe_reserve_eval(sp_layer *l, int64_t tokens);

/* Layer i of the model's depth-first list (borrowed), or NULL. */
sp_layer *sp_model_layer_ptr(const sp_model *m, int i);

#endif
