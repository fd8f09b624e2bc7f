/*
 * internal.h - helpers shared by the files of src/prune (not installed).
 */
#ifndef SPARROW_PRUNE_INTERNAL_H
#define SPARROW_PRUNE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sparrow/prune.h"

/* The config with layer i's line carrying opts[i] (when not NULL; i as sp_model_layer counts,
 * n layers): its options replace those of the same key, a trailing comment is dropped; an
 * opts[i] that starts with '=' replaces the whole line (kind included) by the rest. Config
 * lines map to layers depth-first, except that a moe block's body line stands for the same
 * layer of every expert, which must then all get the same options (SP_EINVAL naming the layer
 * otherwise). Owned *out (sp_free). */
sp_status sp_prune_rewrite_config(const char *cfg, char *const *opts, int n, char **out);
/* The same with opts indexed by layer line (the i-th line that is a layer, blocks' bodies
 * counted once). Owned result, or NULL when out of memory. */
char *sp_prune_rewrite_lines(const char *cfg, char *const *opts, int n);

/* Layer i's own sparsity from spec's per-layer overrides, or -1 when it has none. */
double sp_prune_override(const sp_prune_spec *spec, int i);

/* Masks (owned, into masks[i]) for the layers of m with scores[i] != NULL: layers with an
 * override unstructured at their own sparsity; the others by spec's granularity at `sparsity`
 * (global: one threshold over all of them). who names the caller in messages. On error every
 * mask is freed and NULL. */
sp_status sp_prune_masks_for(const sp_model *m, const sp_prune_spec *spec, double sparsity,
                             float *const *scores, sp_mask **masks, const char *who);

/* Order-preserving map float -> uint32 (a < b <=> key(a) < key(b)); -0 maps like +0. */
static inline uint32_t sp_fkey(float f) {
    f = f + 0.0f; /* -0 + +0 = +0 in round-to-nearest */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    /* negative: flip every bit; positive: set the sign bit (branch-free) */
    return u ^ ((uint32_t)((int32_t)u >> 31) | 0x80000000u);
}

/* One digit of a radix select for the k highest keys: with hist[d] the count of candidates
 * (matching the digits so far) whose current 8-bit digit is d, the highest digit d whose
 * candidates reach the `need` still to find; *need is reduced by the candidates above d. */
static inline int sp_radix_pick(const int64_t hist[256], int64_t *need) {
    int d = 255;
    for (; d > 0; d--) {
        if (hist[d] >= *need) break;
        *need -= hist[d];
    }
    return d;
}

/* One line of a model config (docs/CONFIG.md): text[0..len) without its newline, body = text
 * past leading blanks, is_layer = the line is a layer (not "input", "}", a comment or blank).
 * Lines map to layers in depth-first order, as sp_model_layer counts them. */
typedef struct sp_cfg_line {
    const char *text, *body;
    size_t len;
    bool is_layer;
} sp_cfg_line;
/* Reads the line starting at s (not at the end of the text) into *l; returns the start of the
 * next line. */
const char *sp_cfg_next_line(const char *s, sp_cfg_line *l);

#endif
