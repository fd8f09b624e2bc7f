/*
 * registry.c - the table of layer kinds a config may name. Adding a layer is one line here
 * plus its file in src/nn/.
 */
#include <string.h>

#include "layer.h"

static const struct {
    const char *kind;
    sp_layer_create_fn create;
} kinds[] = {
    {"linear", sp_linear_create},
    {"qlinear", sp_qlinear_create},
    {"flatten", sp_flatten_create},
    {"relu", sp_relu_create},
    {"gelu", sp_gelu_create},
    {"silu", sp_silu_create},
    {"tanh", sp_tanh_create},
    {"sigmoid", sp_sigmoid_create},
    {"softmax", sp_softmax_create},
    {"dropout", sp_dropout_create},
    {"conv2d", sp_conv2d_create},
    {"maxpool", sp_maxpool_create},
    {"avgpool", sp_avgpool_create},
    {"globalavgpool", sp_globalavgpool_create},
    {"batchnorm", sp_batchnorm_create},
    {"layernorm", sp_layernorm_create},
    {"embedding", sp_embedding_create},
    {"posembed", sp_posembed_create},
    {"attention", sp_attention_create},
    {"tokens", sp_tokens_create},
};

#define NKINDS (sizeof kinds / sizeof kinds[0])

sp_layer_create_fn sp_layer_find(const char *kind) {
    for (size_t i = 0; i < NKINDS; i++)
        if (strcmp(kinds[i].kind, kind) == 0) return kinds[i].create;
    return NULL;
}

const char *sp_layer_kinds(void) {
    static char list[512];
    if (!list[0]) {
        size_t len = 0;
        for (size_t i = 0; i < NKINDS && len + 32 < sizeof list; i++) {
            size_t k = strlen(kinds[i].kind);
            if (i) list[len++] = ',', list[len++] = ' ';
            memcpy(list + len, kinds[i].kind, k);
            len += k;
        }
        memcpy(list + len, ", residual, moe", 16);
    }
    return list;
}
