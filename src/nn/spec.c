/*
 * spec.c - built-in model specs, expanded into config text (docs/CONFIG.md), so that a spec and
 * a config file go through the same parser and a saved model records plain config.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layer.h"

#include "../core/internal.h"

/* LeNet-5 as it is trained today (LeCun et al. 1998 with ReLU and max pooling): two 5x5
 * convolutions with 6 and 16 filters, then 120-84-classes. */
static const char lenet5[] =
    "conv2d out=6 k=5 pad=2\n"
    "relu\n"
    "maxpool k=2\n"
    "conv2d out=16 k=5\n"
    "relu\n"
    "maxpool k=2\n"
    "flatten\n"
    "linear out=120\n"
    "relu\n"
    "linear out=84\n"
    "relu\n"
    "linear out=classes\n";

/* A small MobileNet-style CNN (Howard et al. 2017): a plain 3x3 convolution, then
 * depthwise-separable blocks (3x3 depthwise + 1x1 pointwise, each with batch norm and ReLU). */
static const char mobilenet[] =
    "conv2d out=16 k=3 pad=1 bias=0\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=16 k=3 pad=1 groups=16 bias=0  # depthwise\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=32 k=1 bias=0                  # pointwise\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=32 k=3 stride=2 pad=1 groups=32 bias=0\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=64 k=1 bias=0\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=64 k=3 stride=2 pad=1 groups=64 bias=0\n"
    "batchnorm\n"
    "relu\n"
    "conv2d out=128 k=1 bias=0\n"
    "batchnorm\n"
    "relu\n"
    "globalavgpool\n"
    "flatten\n"
    "linear out=classes\n";

/* A small decoder-only transformer (pre-norm blocks, causal attention) reading an image as a
 * sequence of its rows: 28 tokens of 28 pixels for Fashion-MNIST. */
static const char transformer[] =
    "tokens                 # image rows become tokens\n"
    "linear out=64          # token embedding\n"
    "posembed\n"
    "residual {\n"
    "  layernorm\n"
    "  attention heads=4\n"
    "}\n"
    "residual {\n"
    "  layernorm\n"
    "  linear out=128\n"
    "  gelu\n"
    "  linear out=64\n"
    "}\n"
    "residual {\n"
    "  layernorm\n"
    "  attention heads=4\n"
    "}\n"
    "residual {\n"
    "  layernorm\n"
    "  linear out=128\n"
    "  gelu\n"
    "  linear out=64\n"
    "}\n"
    "layernorm\n"
    "globalavgpool\n"
    "flatten\n"
    "linear out=classes\n";

static sp_status dup(const char *s, char **out) {
    size_t n = strlen(s) + 1;
    *out = sp_alloc(n);
    if (!*out) return SP_ENOMEM;
    memcpy(*out, s, n);
    return SP_OK;
}

/* "mlp:300,100" -> flatten, (linear + relu) per hidden size, linear to the classes */
static sp_status mlp(const char *spec, const char *sizes, char **out) {
    size_t cap = 64 + 32 * (strlen(sizes) + 1);
    char *t = sp_alloc(cap);
    if (!t) return SP_ENOMEM;
    size_t len = (size_t)snprintf(t, cap, "flatten\n");
    const char *s = sizes;
    if (!*s) goto bad;
    while (*s) {
        char *end;
        errno = 0;
        long long h = strtoll(s, &end, 10);
        if (errno || end == s || h < 1 || h > (1 << 24) || (*end && *end != ',') ||
            (*end == ',' && !end[1])) {
        bad:
            sp_free(t);
            return sp_fail(SP_EINVAL, "model spec '%s': hidden sizes must be positive integers "
                           "separated by commas (mlp:300,100)", spec);
        }
        len += (size_t)snprintf(t + len, cap - len, "linear out=%lld\nrelu\n", h);
        s = *end ? end + 1 : end;
    }
    snprintf(t + len, cap - len, "linear out=classes\n");
    *out = t;
    return SP_OK;
}

sp_status sp_model_spec_config(const char *spec, char **text) {
    if (!spec || !text) return sp_fail(SP_EINVAL, "model spec: NULL argument");
    *text = NULL;
    if (strcmp(spec, "lenet300") == 0) return mlp(spec, "300,100", text);
    if (strncmp(spec, "mlp:", 4) == 0 || strcmp(spec, "mlp") == 0)
        return mlp(spec, spec[3] ? spec + 4 : "", text);
    if (strcmp(spec, "lenet5") == 0) return dup(lenet5, text);
    if (strcmp(spec, "mobilenet") == 0) return dup(mobilenet, text);
    if (strcmp(spec, "transformer") == 0) return dup(transformer, text);
    return sp_fail(SP_EINVAL, "unknown model spec '%s' (known: mlp:H1,H2,..., lenet300, lenet5, "
                   "mobilenet, transformer; or a config file)", spec);
}
