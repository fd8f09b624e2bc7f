/*
 * sparrow/io.h - interop: safetensors files (read, write) and PyTorch nn.Sequential state_dicts
 * imported into / exported from sparrow models. The mapping and conventions: docs/INTEROP.md.
 *
 *     sp_safetensors *st = NULL;
 *     sp_model *m = NULL;
 *     char *cfg = NULL;
 *     if (sp_safetensors_load("mlp.safetensors", &st) != SP_OK) ...   // every field validated
 *     const sp_safetensors_tensor *w = sp_safetensors_find(st, "1.weight");  // or NULL
 *     sp_model_spec_config("mlp:64", &cfg);
 *     if (sp_model_import_safetensors(st, cfg, (sp_shape){1, 28, 28}, 10, 1, &m) != SP_OK) ...
 *     sp_model_export_safetensors(m, "back.safetensors", false);       // dense, with zeros
 *     sp_model_free(m); sp_free(cfg); sp_safetensors_free(st);
 *
 * The parser treats its input as hostile: every count, size and offset is checked against the
 * buffer before anything proportional to it is allocated (at most a few times the header size
 * is allocated), and any malformed input is an error with a message naming the bad value.
 */
#ifndef SPARROW_IO_H
#define SPARROW_IO_H

#include "sparrow/core.h"
#include "sparrow/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest header accepted (as the reference implementation): 100,000,000 bytes. */
#define SP_SAFETENSORS_MAX_HEADER 100000000ull
/* The highest tensor rank accepted. */
#define SP_SAFETENSORS_MAX_RANK 8

/* Element types of the format. Every name of this list is known; a file with any other dtype
 * name (F8_E8M0, F4, C64, ...) is refused as a whole with SP_EUNSUPPORTED naming it. */
typedef enum sp_st_dtype {
    SP_ST_BOOL, SP_ST_U8, SP_ST_I8, SP_ST_F8_E5M2, SP_ST_F8_E4M3, SP_ST_I16, SP_ST_U16,
    SP_ST_F16, SP_ST_BF16, SP_ST_I32, SP_ST_U32, SP_ST_F32, SP_ST_F64, SP_ST_I64, SP_ST_U64,
    SP_ST_NDTYPES
} sp_st_dtype;

/* "F32" for SP_ST_F32; "?" out of range. */
const char *sp_st_dtype_name(sp_st_dtype dt);
/* Bytes per element (1, 2, 4 or 8); 0 out of range. */
size_t sp_st_dtype_size(sp_st_dtype dt);

/* One tensor of a parsed file. */
typedef struct sp_safetensors_tensor {
    const char *name;      /* owned by the sp_safetensors */
    sp_st_dtype dtype;
    int rank;              /* 0..SP_SAFETENSORS_MAX_RANK; rank 0 is a scalar */
    int64_t shape[SP_SAFETENSORS_MAX_RANK];
    int64_t numel;         /* product of the shape (1 for a scalar) */
    const uint8_t *data;   /* little-endian elements, borrowed from the parsed bytes */
    size_t nbytes;         /* numel * dtype size */
    uint64_t begin, end;   /* data_offsets, relative to the byte buffer after the header */
} sp_safetensors_tensor;

typedef struct sp_safetensors sp_safetensors;

/* Parses a safetensors buffer: u64 LE header size N (1 <= N <= len - 8, N <=
 * SP_SAFETENSORS_MAX_HEADER), N bytes of UTF-8 JSON starting with '{', then the data. Borrows
 * bytes, which must outlive *out (tensor data points into them). Validates everything: strict
 * JSON (SP_EFORMAT naming the byte offset in the header), each entry exactly "dtype", "shape",
 * "data_offsets" (SP_EUNSUPPORTED for an unknown dtype; SP_EOVERFLOW for a shape whose size
 * overflows), offsets inside the data with end - begin = numel * size, the tensors covering the
 * data without holes or overlaps, distinct names without NUL, "__metadata__" a string -> string
 * object. Returns owned *out (NULL on error). */
sp_status sp_safetensors_parse(const uint8_t *bytes, size_t len, sp_safetensors **out);
/* Reads the file at path whole and parses it; *out owns the bytes. SP_EIO if unreadable. */
sp_status sp_safetensors_load(const char *path, sp_safetensors **out);
/* Accepts NULL. */
void sp_safetensors_free(sp_safetensors *st);

/* Number of tensors, and tensor i in strcmp order of names (i in [0, count)), or NULL. */
int64_t sp_safetensors_count(const sp_safetensors *st);
const sp_safetensors_tensor *sp_safetensors_at(const sp_safetensors *st, int64_t i);
/* The tensor named name, or NULL (binary search). */
const sp_safetensors_tensor *sp_safetensors_find(const sp_safetensors *st, const char *name);
/* Number of "__metadata__" entries; entry i (keys in strcmp order) as *key, *value (borrowed). */
int64_t sp_safetensors_meta_count(const sp_safetensors *st);
sp_status sp_safetensors_meta_at(const sp_safetensors *st, int64_t i, const char **key,
                                 const char **value);
/* The metadata value of key, or NULL. */
const char *sp_safetensors_meta(const sp_safetensors *st, const char *key);

/* Converts t's elements to float into dst (n floats, n == t->numel): F32 as is, F64 rounded,
 * F16 and BF16 widened exactly. Any other dtype is SP_EUNSUPPORTED naming it; SP_ESHAPE if n
 * differs. */
sp_status sp_safetensors_read_f32(const sp_safetensors_tensor *t, float *dst, int64_t n);
/* The same into int64_t for I64, I32 (and I16, I8, U8, U16, U32). */
sp_status sp_safetensors_read_i64(const sp_safetensors_tensor *t, int64_t *dst, int64_t n);

/* ---- writing -------------------------------------------------------------------------------- */

typedef struct sp_safetensors_builder sp_safetensors_builder;

/* An empty builder; owned *out. */
sp_status sp_safetensors_builder_new(sp_safetensors_builder **out);
/* Accepts NULL. */
void sp_safetensors_builder_free(sp_safetensors_builder *b);
/* Adds a tensor: name (non-empty, valid UTF-8, not "__metadata__", not added before), dtype,
 * rank shape dims (each >= 0) and numel * size bytes of data in little-endian order (the host
 * order: sparrow builds only for little-endian targets). Copies name and data. SP_EINVAL naming
 * the name for a bad or duplicate one; SP_EOVERFLOW for a size that overflows. */
sp_status sp_safetensors_builder_add(sp_safetensors_builder *b, const char *name,
                                     sp_st_dtype dtype, int rank, const int64_t *shape,
                                     const void *data);
/* Adds a "__metadata__" entry (key and value valid UTF-8, key not given before); copies both. */
sp_status sp_safetensors_builder_meta(sp_safetensors_builder *b, const char *key,
                                      const char *value);
/* Writes the file atomically (temporary file, fsync, rename: a failed write leaves any file at
 * path untouched). Tensors are laid out by element size, largest first, then by name (so every
 * tensor is aligned to its element size), and the header is padded with spaces so that the data
 * starts at a multiple of 8. SP_EIO naming path on failure. */
sp_status sp_safetensors_write(const sp_safetensors_builder *b, const char *path);

/* ---- PyTorch nn.Sequential state_dicts ------------------------------------------------------- */

/* Builds the model of config_text (sp_model_new with in, classes, seed) and fills its
 * parameters from a PyTorch nn.Sequential state_dict: keys "<index>.<param>". The top-level
 * layers with parameters (linear, conv2d, batchnorm, layernorm), in order, take the module
 * indices that have tensors, in ascending numeric order. Linear: "weight" (out, in) dense or as
 * CSR components "weight.crow_indices", "weight.col_indices", "weight.values", "weight.size"
 * (docs/INTEROP.md) and "bias" (out) unless bias=0; Conv2d: "weight" (out, in/groups, kh, kw),
 * "bias"; BatchNorm: "weight", "bias", "running_mean", "running_var" (C), and
 * "num_batches_tracked" ignored; LayerNorm: "weight", "bias". A sparse linear layer of the
 * config (format=csr|mask|bsr|nm) takes the nonzeros of its imported weight as its pattern.
 * Values may be F32, F64, F16 or BF16. Errors: SP_ESHAPE naming the key, the expected and the
 * found shape; SP_EFORMAT naming a missing or leftover key, or a key that is not an
 * nn.Sequential key ("fc1.weight"); SP_EUNSUPPORTED for nested (residual) models and layers
 * with parameters of other kinds. Borrows st and config_text; returns owned *out. */
sp_status sp_model_import_safetensors(const sp_safetensors *st, const char *config_text,
                                      sp_shape in, int64_t classes, uint64_t seed,
                                      sp_model **out);

/* Writes m's parameters as a safetensors file that a PyTorch nn.Sequential of the same modules
 * (Flatten, Linear, ReLU, ...) loads with load_state_dict: keys "<i>.weight", "<i>.bias" (and
 * BatchNorm's "running_mean", "running_var", "num_batches_tracked" = 0) where i is the layer's
 * position in m's top-level sequence. Sparse linear weights are written dense with their zeros,
 * or, with csr true, a CSR linear layer as "<i>.weight.crow_indices" (I64, out + 1),
 * "<i>.weight.col_indices" (I64, nnz), "<i>.weight.values" (F32, nnz) and "<i>.weight.size"
 * (I64, [out, in]): torch.sparse_csr_tensor(crow, col, values, size). __metadata__ holds
 * "sparrow.config" (the normalized config), "sparrow.input_scale", "sparrow.classes" and
 * "format" = "pt". Nested (residual) models are SP_EUNSUPPORTED. Written atomically. */
sp_status sp_model_export_safetensors(const sp_model *m, const char *path, bool csr);

#ifdef __cplusplus
}
#endif
#endif
