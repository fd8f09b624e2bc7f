/*
 * gradcheck.h - finite-difference gradient checks for any model config (tests only).
 *
 * For L = sum_ij y_ij r_ij + sp_model_aux_loss (the MoE auxiliary losses of a training-mode
 * forward; 0 for other models) with a fixed random r, the analytic gradients (sp_model_backward
 * with dy = r) of the parameters and the input are compared with central differences
 * (L(t + h) - L(t - h)) / 2h, where L is summed in float64 from the float32 forward. Checks a
 * spread of up to max_checks entries of each, and reports the worst one through the harness.
 */
#ifndef SPARROW_GRADCHECK_H
#define SPARROW_GRADCHECK_H

#include "sparrow/sparrow.h"

typedef struct sp_gradcheck_opts {
    int64_t batch;        /* samples */
    double h;             /* step (default 1e-3) */
    double atol, rtol;    /* |a - n| <= atol + rtol * max(|a|, |n|) (defaults 2e-3, 2e-2) */
    int max_checks;       /* entries per tensor (default 64) */
    bool train;           /* forward in training mode (default false: eval) */
    bool int_input;       /* inputs are token ids in [0, input_max): no input gradient */
    int input_max;
    uint64_t seed;
} sp_gradcheck_opts;

/* Runs the check on config (model input `in`, `classes` outputs); records failures with the
 * test harness, naming file and line of the caller. Parameters that are exactly zero with a
 * zero gradient (outside a mask) are skipped. Returns the number of failing entries. */
int sp_gradcheck_at(const char *file, int line, const char *config, sp_shape in,
                    int64_t classes, sp_gradcheck_opts opts);
#define GRADCHECK(config, in, classes, ...)                                                     \
    sp_gradcheck_at(__FILE__, __LINE__, config, in, classes, (sp_gradcheck_opts){__VA_ARGS__})

#endif
