/*
 * tensor.c - the dtype table and dense tensor lifecycle.
 */
#include "sparrow/tensor.h"

#include "../core/internal.h"

static const sp_dtype_info dtype_table[SP_DTYPE_COUNT] = {
    [SP_F32] = {"f32", 4},
    [SP_I8] = {"i8", 1},
    [SP_I32] = {"i32", 4},
    [SP_BF16] = {"bf16", 2},
    [SP_U8] = {"u8", 1},
    [SP_U16] = {"u16", 2},
    [SP_I64] = {"i64", 8},
};

const sp_dtype_info *sp_dtype_get(sp_dtype t) {
    if ((int)t < 0 || t >= SP_DTYPE_COUNT) return NULL;
    return &dtype_table[t];
}

sp_status sp_tensor_new(sp_dtype dtype, int ndim, const int64_t *shape, sp_tensor **out) {
    if (!out) return sp_fail(SP_EINVAL, "tensor_new: out is NULL");
    *out = NULL;
    const sp_dtype_info *info = sp_dtype_get(dtype);
    if (!info) return sp_fail(SP_EINVAL, "tensor_new: dtype %d is not a valid sp_dtype", (int)dtype);
    if (ndim < 0 || ndim > SP_TENSOR_MAX_DIMS)
        return sp_fail(SP_EINVAL, "tensor_new: ndim %d not in [0, %d]", ndim, SP_TENSOR_MAX_DIMS);
    if (ndim > 0 && !shape) return sp_fail(SP_EINVAL, "tensor_new: shape is NULL");
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return sp_fail(SP_EINVAL, "tensor_new: shape[%d] = %lld < 0", d, (long long)shape[d]);
        if (!sp_mul_i64(numel, shape[d], &numel))
            return sp_fail(SP_EOVERFLOW, "tensor_new: element count overflows at dim %d", d);
    }
    size_t bytes;
    if (!sp_bytes(numel, info->size, &bytes))
        return sp_fail(SP_EOVERFLOW, "tensor_new: %lld elements of %zu bytes overflow",
                       (long long)numel, info->size);
    sp_tensor *t = sp_calloc(1, sizeof *t);
    if (!t) return SP_ENOMEM;
    t->data = sp_calloc(1, bytes);
    if (!t->data) {
        sp_free(t);
        return SP_ENOMEM;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    t->numel = numel;
    int64_t stride = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t->shape[d] = shape[d];
        t->stride[d] = stride;
        stride *= shape[d];
    }
    *out = t;
    return SP_OK;
}

void sp_tensor_free(sp_tensor *t) {
    if (!t) return;
    sp_free(t->data);
    sp_free(t);
}

float *sp_tensor_f32(const sp_tensor *t) { return t && t->dtype == SP_F32 ? (float *)t->data : NULL; }
