/*
 * gradual.c - pruning while training: the masks of a model's masked linear layers (format=mask)
 * are recomputed in place at the steps of a schedule (Zhu & Gupta 2017), the dropped weights set
 * to zero and their optimizer state cleared, so that they stay zero: their gradient is masked by
 * the layer, and Adam's or momentum's memory of earlier gradients is gone.
 *
 * Entries that an earlier update dropped score below every entry still kept, so a mask only ever
 * loses entries while the sparsity rises (a weight once pruned stays pruned).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sparrow/prune.h"
#include "sparrow/train.h"

#include "../core/internal.h"
#include "internal.h"

/* The layers that prune_masks changes: masked linear layers, the last linear layer excepted
 * with keep_last. */
static bool target(const sp_model *m, int i, bool keep_last, int last, sp_layer_info *li) {
    return sp_model_layer(m, i, li) == SP_OK && !strcmp(li->kind, "linear") &&
           !strcmp(li->format, "mask") && !(keep_last && i == last);
}

double sp_prune_override(const sp_prune_spec *spec, int i) {
    if (!spec->layer_sparsity || i >= spec->nlayer_sparsity) return -1.0;
    double v = spec->layer_sparsity[i];
    return v >= 0.0 ? v : -1.0;
}

sp_status sp_prune_masks_for(const sp_model *m, const sp_prune_spec *spec, double sparsity,
                             float *const *scores, sp_mask **masks, const char *who) {
    const int n = sp_model_nlayers(m);
    int nglobal = 0;
    sp_status st = SP_ENOMEM;
    sp_prune_layer *gl = sp_calloc((size_t)n + 1, sizeof *gl);
    if (!gl) return st;
    for (int i = 0; i < n; i++) {
        if (!scores[i] || sp_prune_override(spec, i) >= 0.0 ||
            spec->granularity != SP_PRUNE_GLOBAL)
            continue;
        sp_layer_info li;
        sp_model_layer(m, i, &li);
        gl[nglobal++] = (sp_prune_layer){li.out.c, li.in.c, scores[i]};
    }
    if (nglobal > 0) {
        sp_mask **gm = sp_calloc((size_t)nglobal, sizeof *gm);
        st = SP_ENOMEM;
        if (!gm) goto done;
        st = sp_prune_mask_global(nglobal, gl, sparsity, gm);
        for (int i = 0, k = 0; i < n && st == SP_OK; i++)
            if (scores[i] && !(sp_prune_override(spec, i) >= 0.0)) masks[i] = gm[k++];
        if (st != SP_OK)
            for (int k = 0; k < nglobal; k++) sp_mask_free(gm[k]);
        sp_free(gm);
        if (st != SP_OK) goto done;
    }
    for (int i = 0; i < n; i++) {
        if (!scores[i] || masks[i]) continue;
        sp_layer_info li;
        sp_model_layer(m, i, &li);
        const int64_t rows = li.out.c, cols = li.in.c;
        const double own = sp_prune_override(spec, i);
        if (own >= 0.0) {
            st = sp_prune_mask_unstructured(rows, cols, scores[i], own, &masks[i]);
        } else {
            switch (spec->granularity) {
            case SP_PRUNE_LAYERWISE:
                st = sp_prune_mask_unstructured(rows, cols, scores[i], sparsity, &masks[i]);
                break;
            case SP_PRUNE_NM:
                st = sp_prune_mask_nm(rows, cols, scores[i], spec->n, spec->m, &masks[i]);
                break;
            case SP_PRUNE_BLOCK:
                st = sp_prune_mask_blocks(rows, cols, scores[i], spec->br > 0 ? spec->br : 4,
                                          spec->bc > 0 ? spec->bc : 4, sparsity, &masks[i]);
                break;
            default:
                st = sp_fail(SP_EINVAL, "%s: unknown granularity %d", who,
                             (int)spec->granularity);
            }
        }
        if (st != SP_OK) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", sp_last_error());
            st = sp_fail(st, "%s: layer %s: %s", who, li.name, msg);
            goto done;
        }
    }
    st = SP_OK;
done:
    if (st != SP_OK)
        for (int i = 0; i < n; i++) {
            sp_mask_free(masks[i]);
            masks[i] = NULL;
        }
    sp_free(gl);
    return st;
}

sp_status sp_model_prune_masks(sp_model *m, sp_optim *o, const sp_prune_spec *spec,
                               double sparsity) {
    if (!m || !spec) return sp_fail(SP_EINVAL, "prune_masks: NULL argument");
    if (spec->criterion != SP_PRUNE_MAGNITUDE && spec->criterion != SP_PRUNE_RANDOM)
        return sp_fail(SP_EINVAL, "prune_masks: criterion %s needs training inputs; pruning "
                       "masks in place takes magnitude or random",
                       sp_prune_criterion_name(spec->criterion));
    if (!(sparsity >= 0.0 && sparsity < 1.0))
        return sp_fail(SP_EINVAL, "prune_masks: sparsity %g not in [0, 1)", sparsity);
    const int n = sp_model_nlayers(m);
    int last = -1, count = 0;
    for (int i = 0; i < n; i++) {
        sp_layer_info li;
        if (sp_model_layer(m, i, &li) == SP_OK && !strcmp(li.kind, "linear")) last = i;
    }
    for (int i = 0; i < spec->nlayer_sparsity && spec->layer_sparsity; i++)
        if (spec->layer_sparsity[i] >= 1.0)
            return sp_fail(SP_EINVAL, "prune_masks: layer %d: sparsity %g not in [0, 1)", i,
                           spec->layer_sparsity[i]);
    sp_status st = SP_ENOMEM;
    float **scores = sp_calloc((size_t)n, sizeof *scores);
    sp_mask **masks = sp_calloc((size_t)n, sizeof *masks);
    sp_mask **olds = sp_calloc((size_t)n, sizeof *olds);
    float *w = NULL;
    if (!scores || !masks || !olds) goto done;
    for (int i = 0; i < n; i++) {
        sp_layer_info li;
        if (!target(m, i, spec->keep_last, last, &li)) continue;
        const int64_t rows = li.out.c, cols = li.in.c;
        st = SP_ENOMEM;
        sp_free(w);
        w = sp_alloc(sizeof(float) * (size_t)(rows * cols));
        scores[i] = sp_alloc(sizeof(float) * (size_t)(rows * cols));
        if (!w || !scores[i]) goto done;
        if ((st = sp_model_layer_get_weight(m, i, w, NULL)) != SP_OK ||
            (st = sp_model_layer_pattern(m, i, &olds[i])) != SP_OK)
            goto done;
        const sp_mask *old = olds[i];
        sp_prune_inputs pin = {.seed = spec->seed + (uint64_t)i};
        st = sp_prune_scores(spec->criterion, rows, cols, w, &pin, scores[i]);
        /* dropped entries rank below all kept ones */
        for (int64_t r = 0; r < rows && st == SP_OK; r++)
            for (int64_t c = 0; c < cols; c++)
                if (!sp_mask_get(old, r, c)) scores[i][r * cols + c] = -INFINITY;
        if (st != SP_OK) goto done;
        count++;
    }
    if (count == 0) {
        st = sp_fail(SP_EINVAL, "prune_masks: the model has no masked linear layer (format=mask) "
                     "to prune");
        goto done;
    }
    if ((st = sp_prune_masks_for(m, spec, sparsity, scores, masks, "prune_masks")) != SP_OK)
        goto done;
    for (int i = 0; i < n; i++) {
        if (!masks[i]) continue;
        sp_layer_info li;
        sp_model_layer(m, i, &li);
        /* a target below the layer's sparsity would take dropped entries back: they stay out */
        for (int64_t k = 0; k < masks[i]->rows * masks[i]->words_per_row; k++)
            masks[i]->bits[k] &= olds[i]->bits[k];
        if ((st = sp_model_layer_set_pattern(m, i, masks[i])) != SP_OK) goto done;
        if (o && (st = sp_optim_mask_state(o, li.param_offset, masks[i])) != SP_OK) goto done;
    }
    st = SP_OK;
done:
    for (int i = 0; i < n && scores; i++) sp_free(scores[i]);
    for (int i = 0; i < n && masks; i++) sp_mask_free(masks[i]);
    for (int i = 0; i < n && olds; i++) sp_mask_free(olds[i]);
    sp_free(olds);
    sp_free(scores);
    sp_free(masks);
    sp_free(w);
    return st;
}

sp_status sp_prune_gradual_hook(sp_model *m, sp_optim *o, int64_t step, void *user) {
    sp_prune_gradual *g = user;
    if (!g) return sp_fail(SP_EINVAL, "prune_gradual_hook: NULL state");
    bool update = false;
    sp_status st = sp_prune_schedule_is_update(&g->sched, step, &update);
    if (st != SP_OK || !update) return st;
    double s = 0.0;
    if ((st = sp_prune_schedule_sparsity(&g->sched, step, &s)) != SP_OK) return st;
    if ((st = sp_model_prune_masks(m, o, &g->spec, s)) != SP_OK) return st;
    g->updates++;
    g->sparsity = s;
    return SP_OK;
}
