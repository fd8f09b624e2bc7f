/*
 * sparrow/model_file.h - zero-copy loading of a model file for inference (docs/FORMAT.md).
 *
 *     sp_model *m = NULL;
 *     sp_model_file_info info;
 *     if (sp_model_open_info("model.sparrow", &m, &info) != SP_OK) ...   // sp_last_error()
 *     const float *y;
 *     sp_model_forward(m, x, batch, false, &y);     // evaluation mode only
 *     sp_model_free(m);                             // unmaps the file
 *
 * The file is mapped read-only (MAP_PRIVATE); its header, table and CRC-32 are verified, and the
 * model's parameters, state buffers, CSR structures and layer tensors point into the mapping:
 * the weights are not copied and no gradient arena is allocated. Such a model runs forward in
 * evaluation mode only: sp_model_forward with train = true and sp_model_backward return
 * SP_EINVAL, sp_model_params / sp_model_buffers / sp_model_grads return NULL (the parameters
 * are per-layer tensors of the file, not one arena), and nothing may write its weights. For
 * training or changing weights load with sp_checkpoint_load (a copy). A version-1 file (which
 * has no aligned per-layer tensors) is loaded by copying; info says so.
 */
#ifndef SPARROW_MODEL_FILE_H
#define SPARROW_MODEL_FILE_H

#include <stdbool.h>
#include <stdint.h>

#include "sparrow/core.h"
#include "sparrow/nn.h"
#include "sparrow/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What sp_model_open_info found. */
typedef struct sp_model_file_info {
    uint32_t version;         /* format version of the file (1 or 2) */
    uint64_t file_bytes;
    int64_t tensors;          /* table entries (0 for version 1) */
    bool mapped;              /* the model points into a mapping of the file */
    uint64_t weight_bytes;    /* parameters, state buffers, sparse structures, layer tensors */
    uint64_t in_place_bytes;  /* of weight_bytes, those used in place in the mapping */
} sp_model_file_info;

/* Opens a model file for inference, mapped (see above). Every check of sp_checkpoint_load
 * applies (SP_EFORMAT naming the field, SP_EIO for an unreadable file). Returns owned *out. */
sp_status sp_model_open(const char *path, sp_model **out);
/* The same, and fills *info (may be NULL). */
sp_status sp_model_open_info(const char *path, sp_model **out, sp_model_file_info *info);
/* The same as a checkpoint: the mapped model (out->model), the training settings (out->meta)
 * and position (out->state); out->optim is always NULL (a mapped model is not trained). Free
 * with sp_checkpoint_free. For commands that run a model forward and read its settings. */
sp_status sp_checkpoint_open(const char *path, sp_checkpoint *out, sp_model_file_info *info);
/* true for a model opened mapped (forward only, weights read-only). */
bool sp_model_is_mapped(const sp_model *m);

#ifdef __cplusplus
}
#endif
#endif
