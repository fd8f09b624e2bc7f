/*
 * model_file.h - internals of the model file (docs/FORMAT.md), shared by its writer
 * (src/train/checkpoint.c), its readers (src/io/model_file.c for version 2,
 * src/train/checkpoint_v1.c for version 1) and the two layer-side hooks it needs in
 * src/nn/model.c and src/nn/linear.c. Not installed.
 */
#ifndef SPARROW_IO_MODEL_FILE_H
#define SPARROW_IO_MODEL_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sparrow/model_file.h"
#include "sparrow/train.h"

#include "../nn/layer.h"

#define MF_MAGIC "SPRWCKPT"
#define MF_VERSION 2u
#define MF_HEADER_BYTES 64u
#define MF_ENTRY_BYTES 128u
#define MF_NAME_BYTES 56u
#define MF_ALIGN 64u
#define MF_MAX_LAYERS 4096

/* Storage kinds of a table entry (docs/FORMAT.md, "Storage kinds"). */
typedef enum mf_storage {
    MF_RAW = 0,          /* plain data: text, small records */
    MF_DENSE = 1,        /* a layer's parameters or state, every element stored */
    MF_MASK_BITS = 2,    /* keep-bits of a weight pattern, rows x ceil(cols/64) words */
    MF_CSR_ROW_PTR = 3,  /* CSR row offsets, rows + 1 */
    MF_CSR_COL_IDX = 4,  /* CSR column indices, nnz */
    MF_CSR_VALUES = 5,   /* parameters whose weight part is CSR values */
    MF_BSR_ROW_PTR = 6,  /* block-row offsets (reserved: not written by this version) */
    MF_BSR_COL_IDX = 7,  /* block-column indices (reserved) */
    MF_BSR_VALUES = 8,   /* parameters whose weight part is BSR block values */
    MF_NM_INDEX = 9,     /* N:M in-group positions (reserved) */
    MF_NM_VALUES = 10,   /* parameters whose weight part is N:M values */
    MF_LAYER = 11,       /* a tensor a layer keeps outside the arenas (quantized weights...) */
    MF_STORAGE_COUNT
} mf_storage;

/* Name of a storage kind ("csr_values"), or NULL. */
const char *mf_storage_name(uint32_t s);

/* model.c: builds a model like sp_model_new_with_structure, except that no arena is allocated:
 * bind gives each layer with parameters or state its param (nparam floats) and buffer (nbuffer
 * floats), which stay owned by the caller (a mapped file), init_params is not called, and the
 * model is marked mapped: forward only, train mode and backward refused. */
typedef sp_status (*sp_model_bind_fn)(void *user, sp_layer *l, float **param, float **buffer);
sp_status sp_model_build_mapped(const char *text, sp_shape in, int64_t classes, uint64_t seed,
                                int64_t max_params, const sp_mask *const *patterns,
                                const sp_csr *const *csrs, int npatterns, sp_model_bind_fn bind,
                                void *user, sp_model **out);
/* Hands the mapping (munmap at sp_model_free) to a mapped model. */
void sp_model_adopt_mapping(sp_model *m, void *map, size_t len);

/* linear.c: the storage kind of layer l's parameters (MF_DENSE, MF_CSR_VALUES, MF_BSR_VALUES,
 * MF_NM_VALUES); MF_DENSE for any layer that is not linear. */
mf_storage sp_linear_param_storage(const sp_layer *l);

/* checkpoint_v1.c: a version-1 file. */
sp_status sp_checkpoint_parse_v1(const uint8_t *b, size_t len, sp_checkpoint *out);

/* model_file.c: a version-2 file. borrow: b is a read-only mapping handed to the model (which
 * then points into it; the caller gives it to the model with sp_model_adopt_mapping after
 * success). info may be NULL. */
sp_status sp_model_file_parse(const uint8_t *b, size_t len, bool borrow, sp_checkpoint *out,
                              sp_model_file_info *info);

static inline uint32_t mf_rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t mf_rd64(const uint8_t *p) {
    return mf_rd32(p) | (uint64_t)mf_rd32(p + 4) << 32;
}
static inline bool mf_host_le(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

#endif
