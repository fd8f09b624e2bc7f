/*
 * model_file.c - the reader of version-2 model files (docs/FORMAT.md): the header, the tensor
 * table and the CRC-32 are checked before anything is built, then the model is rebuilt from its
 * config and its layers take their tensors, copied (sp_checkpoint_load) or in place in a
 * read-only mapping of the file (sp_model_open).
 *
 * Order of the checks: magic, version, header length and the file length it records
 * (truncation), CRC-32 of the whole file, the header's fixed fields, then every table entry on
 * its own (name, dtype, storage, shape, count, byte length, alignment, bounds, overlap with the
 * one before, zero padding), duplicate names, and only then what the tensors mean. Every count
 * is bounded by the file size before it sizes an allocation: the table by its bytes, the
 * parameter and buffer counts by the tensors that hold them, a CSR structure by its entries.
 */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_file.h"

#include "../core/internal.h"
#include "../nn/seq.h"

static const char *const storage_names[MF_STORAGE_COUNT] = {
    "raw",         "dense",       "mask_bits",   "csr_row_ptr", "csr_col_idx", "csr_values",
    "bsr_row_ptr", "bsr_col_idx", "bsr_values",  "nm_index",    "nm_values",   "layer"};

const char *mf_storage_name(uint32_t s) { return s < MF_STORAGE_COUNT ? storage_names[s] : NULL; }

/* A table entry that passed the checks of its own. */
typedef struct ment {
    char name[MF_NAME_BYTES];
    uint32_t dtype, storage, ndim;
    uint64_t shape[4];
    uint64_t count, offset, nbytes;
    const uint8_t *p; /* its bytes in the file */
    bool used;
} ment;

typedef struct mfile {
    const uint8_t *b;
    size_t len;
    ment *e;
    int n;
    int *by_name; /* entry indices sorted by name */
    bool borrow;
    sp_model_file_info *info;
} mfile;

#define FAIL(...) sp_fail(SP_EFORMAT, "model file: " __VA_ARGS__)

static uint64_t align64(uint64_t v) { return (v + MF_ALIGN - 1) / MF_ALIGN * MF_ALIGN; }

static bool name_char(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.';
}

static bool is_values(uint32_t s) {
    return s == MF_DENSE || s == MF_CSR_VALUES || s == MF_BSR_VALUES || s == MF_NM_VALUES;
}

/* One entry's own checks; prev_end is where the entry before it ended. */
static sp_status check_entry(const mfile *f, int k, const uint8_t *r, uint64_t data_off,
                             uint64_t prev_end, ment *e) {
    memset(e, 0, sizeof *e);
    size_t nl = 0;
    while (nl < MF_NAME_BYTES && r[nl]) nl++;
    if (nl == 0 || nl == MF_NAME_BYTES)
        return FAIL("tensor %d: its name is %s", k, nl ? "not NUL-terminated within 56 bytes"
                                                       : "empty");
    for (size_t j = 0; j < nl; j++)
        if (!name_char(r[j]))
            return FAIL("tensor %d: byte 0x%02x at %zu of its name is not one of [A-Za-z0-9_.]",
                        k, r[j], j);
    for (size_t j = nl; j < MF_NAME_BYTES; j++)
        if (r[j]) return FAIL("tensor %d ('%.*s'): name padding is not zero", k, (int)nl, r);
    memcpy(e->name, r, nl);
    const char *nm = e->name;
    e->dtype = mf_rd32(r + 56);
    e->storage = mf_rd32(r + 60);
    e->ndim = mf_rd32(r + 64);
    for (int d = 0; d < 4; d++) e->shape[d] = mf_rd64(r + 72 + 8 * d);
    e->count = mf_rd64(r + 104);
    e->offset = mf_rd64(r + 112);
    e->nbytes = mf_rd64(r + 120);
    const sp_dtype_info *dt = sp_dtype_get((sp_dtype)e->dtype);
    if (e->dtype >= SP_DTYPE_COUNT || !dt)
        return FAIL("tensor '%s': unknown dtype code %u", nm, e->dtype);
    if (e->storage >= MF_STORAGE_COUNT)
        return FAIL("tensor '%s': unknown storage code %u", nm, e->storage);
    if (e->storage == MF_BSR_ROW_PTR || e->storage == MF_BSR_COL_IDX || e->storage == MF_NM_INDEX)
        return FAIL("tensor '%s': storage %s is reserved (this version keeps BSR and N:M "
                    "structure as mask bits)", nm, storage_names[e->storage]);
    if (e->ndim < 1 || e->ndim > 4)
        return FAIL("tensor '%s': %u dimensions (1 to 4)", nm, e->ndim);
    if (mf_rd32(r + 68)) return FAIL("tensor '%s': reserved field is %u", nm, mf_rd32(r + 68));
    for (uint32_t d = e->ndim; d < 4; d++)
        if (e->shape[d])
            return FAIL("tensor '%s': dimension %u is %llu past its %u dimensions", nm, d,
                        (unsigned long long)e->shape[d], e->ndim);
    /* element type by storage */
    const uint32_t s = e->storage;
    bool dt_ok = s == MF_RAW || s == MF_LAYER ||
                 (is_values(s) && e->dtype == SP_F32) ||
                 ((s == MF_MASK_BITS || s == MF_CSR_ROW_PTR) && e->dtype == SP_I64) ||
                 (s == MF_CSR_COL_IDX && (e->dtype == SP_U16 || e->dtype == SP_I32));
    if (!dt_ok)
        return FAIL("tensor '%s': dtype %s does not fit storage %s", nm, dt->name,
                    storage_names[s]);
    /* sizes: count elements of dt->size bytes, nbytes exactly that */
    if (e->count > UINT64_MAX / dt->size)
        return FAIL("tensor '%s': %llu elements of %zu bytes overflow", nm,
                    (unsigned long long)e->count, dt->size);
    if (e->nbytes != e->count * dt->size)
        return FAIL("tensor '%s': byte length %llu, want %llu for %llu %s elements", nm,
                    (unsigned long long)e->nbytes, (unsigned long long)(e->count * dt->size),
                    (unsigned long long)e->count, dt->name);
    if (s == MF_MASK_BITS || s == MF_CSR_ROW_PTR || s == MF_CSR_COL_IDX) {
        /* the component of a (rows x cols) matrix; the count is checked with its layer */
        if (e->ndim != 2 || e->shape[0] < 1 || e->shape[1] < 1 ||
            e->shape[0] > ((uint64_t)1 << 31) || e->shape[1] > ((uint64_t)1 << 31))
            return FAIL("tensor '%s': matrix shape %llux%llu (%u dimensions) out of range", nm,
                        (unsigned long long)e->shape[0], (unsigned long long)e->shape[1],
                        e->ndim);
    } else {
        uint64_t prod = 1;
        for (uint32_t d = 0; d < e->ndim; d++) {
            if (e->shape[d] && prod > UINT64_MAX / e->shape[d])
                return FAIL("tensor '%s': the product of its shape overflows", nm);
            prod *= e->shape[d];
        }
        if (prod != e->count)
            return FAIL("tensor '%s': shape holds %llu elements, count says %llu", nm,
                        (unsigned long long)prod, (unsigned long long)e->count);
    }
    /* place: aligned, after the table and the tensor before, inside the file */
    const uint64_t end = f->len - 4;
    if (e->offset % MF_ALIGN)
        return FAIL("tensor '%s': offset %llu is not a multiple of 64", nm,
                    (unsigned long long)e->offset);
    if (e->offset < data_off)
        return FAIL("tensor '%s': offset %llu lies inside the header or table (data starts at "
                    "%llu)", nm, (unsigned long long)e->offset, (unsigned long long)data_off);
    if (e->offset > end || e->nbytes > end - e->offset)
        return FAIL("tensor '%s': %llu bytes at offset %llu run past the end of the data "
                    "(%llu)", nm, (unsigned long long)e->nbytes, (unsigned long long)e->offset,
                    (unsigned long long)end);
    if (e->offset < prev_end)
        return FAIL("tensor '%s' at offset %llu overlaps the tensor before it (which ends at "
                    "%llu)", nm, (unsigned long long)e->offset, (unsigned long long)prev_end);
    for (uint64_t q = prev_end; q < e->offset; q++)
        if (f->b[q])
            return FAIL("padding byte %llu before tensor '%s' is not zero", (unsigned long long)q,
                        nm);
    e->p = f->b + e->offset;
    return SP_OK;
}

/* Sorts the entry indices by name (a merge sort: no global state, so loads may run in
 * parallel) and refuses a name given twice. */
static void merge_sort(int *v, int *tmp, int n, const ment *e) {
    if (n < 2) return;
    const int h = n / 2;
    merge_sort(v, tmp, h, e);
    merge_sort(v + h, tmp, n - h, e);
    int i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = strcmp(e[v[i]].name, e[v[j]].name) <= 0 ? v[i++] : v[j++];
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, sizeof *v * (size_t)n);
}

static sp_status parse_table(mfile *f) {
    const uint8_t *b = f->b;
    const size_t len = f->len;
    if (len < 8 || memcmp(b, MF_MAGIC, 8) != 0)
        return FAIL("not a sparrow model file (%zu bytes, bad magic)", len);
    if (len < 12) return FAIL("truncated header (%zu bytes)", len);
    const uint32_t version = mf_rd32(b + 8);
    if (version != MF_VERSION)
        return FAIL("version %u is not supported (this build reads 1 and 2)", version);
    if (len < MF_HEADER_BYTES + 4)
        return FAIL("truncated: %zu bytes, the header and CRC alone take %u", len,
                    MF_HEADER_BYTES + 4);
    const uint64_t file_len = mf_rd64(b + 16);
    if (file_len != len)
        return FAIL("the header records %llu bytes, the file has %zu: %s",
                    (unsigned long long)file_len, len,
                    file_len > len ? "truncated" : "unexpected bytes at the end");
    const uint32_t crc = mf_rd32(b + len - 4), want = sp_crc32(0, b, len - 4);
    if (crc != want)
        return FAIL("CRC-32 %08x does not match the contents (%08x): the file is corrupt", crc,
                    want);
    const uint32_t n = mf_rd32(b + 12);
    const uint64_t table_off = mf_rd64(b + 24), data_off = mf_rd64(b + 32);
    if (table_off != MF_HEADER_BYTES)
        return FAIL("table offset %llu (want %u)", (unsigned long long)table_off,
                    MF_HEADER_BYTES);
    for (size_t q = 40; q < MF_HEADER_BYTES; q++)
        if (b[q]) return FAIL("reserved header byte %zu is not zero", q);
    if (n == 0) return FAIL("the table lists no tensors");
    if (n > (len - MF_HEADER_BYTES - 4) / MF_ENTRY_BYTES)
        return FAIL("%u tensors need %llu table bytes, the file has %zu bytes", n,
                    (unsigned long long)n * MF_ENTRY_BYTES, len);
    if (data_off != align64(MF_HEADER_BYTES + (uint64_t)n * MF_ENTRY_BYTES) || data_off > len - 4)
        return FAIL("data offset %llu (want %llu for %u tensors)", (unsigned long long)data_off,
                    (unsigned long long)align64(MF_HEADER_BYTES + (uint64_t)n * MF_ENTRY_BYTES),
                    n);
    f->e = sp_calloc(n, sizeof *f->e);
    f->by_name = sp_alloc(2 * sizeof(int) * n);
    if (!f->e || !f->by_name) return SP_ENOMEM;
    f->n = (int)n;
    uint64_t prev_end = MF_HEADER_BYTES + (uint64_t)n * MF_ENTRY_BYTES;
    for (uint32_t k = 0; k < n; k++) {
        sp_status st = check_entry(f, (int)k, b + MF_HEADER_BYTES + (uint64_t)k * MF_ENTRY_BYTES,
                                   data_off, prev_end, &f->e[k]);
        if (st != SP_OK) return st;
        prev_end = f->e[k].offset + f->e[k].nbytes;
    }
    if (align64(prev_end) != len - 4)
        return FAIL("%llu unexpected bytes after the last tensor",
                    (unsigned long long)(len - 4 - prev_end));
    for (uint64_t q = prev_end; q < len - 4; q++)
        if (b[q]) return FAIL("padding byte %llu after the last tensor is not zero",
                              (unsigned long long)q);
    for (int k = 0; k < f->n; k++) f->by_name[k] = k;
    merge_sort(f->by_name, f->by_name + f->n, f->n, f->e);
    for (int k = 1; k < f->n; k++)
        if (!strcmp(f->e[f->by_name[k]].name, f->e[f->by_name[k - 1]].name))
            return FAIL("tensor name '%s' appears twice", f->e[f->by_name[k]].name);
    return SP_OK;
}

/* The entry called name, or NULL. */
static ment *find(const mfile *f, const char *name) {
    int lo = 0, hi = f->n;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        const int c = strcmp(f->e[f->by_name[mid]].name, name);
        if (c == 0) return &f->e[f->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* Entry name with the given dtype and storage (and count, unless count < 0); NULL and an error
 * if it is there but does not fit, NULL and SP_OK in *st if it is absent. */
static ment *get(const mfile *f, const char *name, sp_dtype dt, mf_storage s, int64_t count,
                 sp_status *st) {
    *st = SP_OK;
    ment *e = find(f, name);
    if (!e) return NULL;
    if (e->dtype != (uint32_t)dt || e->storage != (uint32_t)s) {
        *st = FAIL("tensor '%s' is %s %s, want %s %s", name, sp_dtype_get((sp_dtype)e->dtype)->name,
                   storage_names[e->storage], sp_dtype_get(dt)->name, storage_names[s]);
        return NULL;
    }
    if (count >= 0 && e->count != (uint64_t)count) {
        *st = FAIL("tensor '%s' holds %llu elements, want %lld", name,
                   (unsigned long long)e->count, (long long)count);
        return NULL;
    }
    e->used = true;
    return e;
}

/* "<layer>.<suffix>" with a layer index in [0, MF_MAX_LAYERS), no leading zeros. */
static bool layer_name(const char *name, int *layer, const char **suffix) {
    int v = 0, d = 0;
    while (name[d] >= '0' && name[d] <= '9') {
        v = v * 10 + (name[d] - '0');
        if (++d > 4 || v >= MF_MAX_LAYERS) return false;
    }
    if (d == 0 || name[d] != '.' || (d > 1 && name[0] == '0')) return false;
    *layer = v;
    *suffix = name + d + 1;
    return true;
}

/* ---- sparsity structures ---------------------------------------------------------------- */

typedef struct patterns {
    sp_mask *mask[MF_MAX_LAYERS];
    sp_csr *csr[MF_MAX_LAYERS];
    int n; /* highest layer + 1 */
} patterns;

static void free_patterns(patterns *p) {
    for (int i = 0; i < p->n; i++) {
        sp_mask_free(p->mask[i]);
        if (p->csr[i] && p->csr[i]->borrowed) sp_free(p->csr[i]);
        else sp_csr_free(p->csr[i]);
    }
    sp_free(p);
}

static const float no_values[1]; /* a borrowed pattern's values are never read */

static sp_status csr_pattern(const mfile *f, int layer, ment *rp, patterns *p) {
    char nm[64];
    sp_status st;
    snprintf(nm, sizeof nm, "%d.csr.col_idx", layer);
    ment *ci = find(f, nm);
    if (!ci) return FAIL("tensor '%s' (CSR row offsets) has no '%s'", rp->name, nm);
    if (ci->storage != MF_CSR_COL_IDX)
        return FAIL("tensor '%s' has storage %s, want csr_col_idx", nm,
                    storage_names[ci->storage]);
    ci->used = true;
    const uint64_t rows = rp->shape[0], cols = rp->shape[1], nnz = ci->count;
    if (rp->count != rows + 1)
        return FAIL("tensor '%s' holds %llu row offsets for %llu rows (want rows + 1)",
                    rp->name, (unsigned long long)rp->count, (unsigned long long)rows);
    if (ci->shape[0] != rows || ci->shape[1] != cols)
        return FAIL("tensor '%s' is for a %llux%llu matrix, its row offsets for %llux%llu", nm,
                    (unsigned long long)ci->shape[0], (unsigned long long)ci->shape[1],
                    (unsigned long long)rows, (unsigned long long)cols);
    if (nnz > rows * cols) /* both <= 2^31 */
        return FAIL("tensor '%s': %llu entries in a %llux%llu matrix", nm,
                    (unsigned long long)nnz, (unsigned long long)rows, (unsigned long long)cols);
    if (ci->dtype == SP_U16 && cols > 65536) /* both loaders refuse what cannot be indexed */
        return FAIL("tensor '%s': 16-bit column indices for %llu columns", nm,
                    (unsigned long long)cols);
    sp_csr *c = NULL;
    if (f->borrow) {
        /* in place: row_ptr and the indices are read where they are (64-byte aligned) */
        c = sp_calloc(1, sizeof *c);
        if (!c) return SP_ENOMEM;
        *c = (sp_csr){.rows = (int64_t)rows, .cols = (int64_t)cols, .nnz = (int64_t)nnz,
                      .row_ptr = (int64_t *)(uintptr_t)rp->p, .val = (float *)(uintptr_t)no_values,
                      .borrowed = true};
        if (ci->dtype == SP_U16) c->col_idx16 = (uint16_t *)(uintptr_t)ci->p;
        else c->col_idx = (int32_t *)(uintptr_t)ci->p;
    } else {
        st = sp_csr_new((int64_t)rows, (int64_t)cols, (int64_t)nnz,
                        ci->dtype == SP_I32 ? SP_CSR_IDX32 : 0, &c);
        if (st != SP_OK) return st;
        if (ci->dtype == SP_U16 && !c->col_idx16) { /* u16 indices for > 65536 columns */
            sp_csr_free(c);
            return FAIL("tensor '%s': 16-bit column indices for %llu columns", nm,
                        (unsigned long long)cols);
        }
        memcpy(c->row_ptr, rp->p, (size_t)rp->nbytes);
        if (c->col_idx16) memcpy(c->col_idx16, ci->p, (size_t)ci->nbytes);
        else memcpy(c->col_idx, ci->p, (size_t)ci->nbytes);
        if (nnz) memset(c->val, 0, sizeof(float) * (size_t)nnz);
    }
    p->csr[layer] = c;
    if ((st = sp_csr_validate(c)) != SP_OK) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s", sp_last_error());
        return FAIL("layer %d CSR structure: %s", layer, msg);
    }
    return SP_OK;
}

/* The structures of the file's layers (CSR row offsets and column indices, mask bits), by
 * layer index, before the model is built from them. */
static sp_status read_patterns(const mfile *f, patterns *p) {
    for (int k = 0; k < f->n; k++) {
        ment *e = &f->e[k];
        if (e->storage != MF_MASK_BITS && e->storage != MF_CSR_ROW_PTR) continue;
        int layer;
        const char *suffix;
        const char *want = e->storage == MF_MASK_BITS ? "mask" : "csr.row_ptr";
        if (!layer_name(e->name, &layer, &suffix) || strcmp(suffix, want) != 0)
            return FAIL("tensor '%s' has storage %s but is not named '<layer>.%s'", e->name,
                        storage_names[e->storage], want);
        if (layer < p->n && (p->mask[layer] || p->csr[layer]))
            return FAIL("layer %d has both a mask and a CSR structure", layer);
        if (layer + 1 > p->n) p->n = layer + 1;
        e->used = true;
        sp_status st;
        if (e->storage == MF_CSR_ROW_PTR) {
            if ((st = csr_pattern(f, layer, e, p)) != SP_OK) return st;
            continue;
        }
        const uint64_t rows = e->shape[0], cols = e->shape[1];
        if (e->count != rows * ((cols + 63) / 64))
            return FAIL("tensor '%s' holds %llu words for a %llux%llu mask (want %llu)", e->name,
                        (unsigned long long)e->count, (unsigned long long)rows,
                        (unsigned long long)cols, (unsigned long long)(rows * ((cols + 63) / 64)));
        if ((st = sp_mask_new((int64_t)rows, (int64_t)cols, &p->mask[layer])) != SP_OK) return st;
        memcpy(p->mask[layer]->bits, e->p, (size_t)e->nbytes);
    }
    return SP_OK;
}

/* ---- a layer's tensors ---------------------------------------------------------------------- */

/* Entry "<index>.param" (or .buffer) of layer l, checked against it. */
static sp_status layer_floats(const mfile *f, const sp_layer *l, bool buffer, const ment **out) {
    char nm[64];
    snprintf(nm, sizeof nm, "%d.%s", l->index, buffer ? "buffer" : "param");
    const int64_t n = buffer ? l->nbuffer : l->nparam;
    const mf_storage s = buffer ? MF_DENSE : sp_linear_param_storage(l);
    sp_status st;
    *out = get(f, nm, SP_F32, s, n, &st);
    if (st != SP_OK) return st;
    if (!*out) return FAIL("layer %s has %lld %s and the file no tensor '%s'", l->name,
                           (long long)n, buffer ? "state floats" : "parameters", nm);
    return SP_OK;
}

static sp_status bind_mapped(void *user, sp_layer *l, float **param, float **buffer) {
    const mfile *f = user;
    const ment *e;
    sp_status st;
    if (l->nparam) {
        if ((st = layer_floats(f, l, false, &e)) != SP_OK) return st;
        *param = (float *)(uintptr_t)e->p;
    }
    if (l->nbuffer) {
        if ((st = layer_floats(f, l, true, &e)) != SP_OK) return st;
        *buffer = (float *)(uintptr_t)e->p;
    }
    return SP_OK;
}

/* The tensors a layer keeps outside the arenas, matched by name and dtype against what the
 * freshly built layer describes, and handed back all at once. */
static sp_status layer_tensors(const mfile *f, sp_layer *l) {
    if (!l->vt->ntensors || !l->vt->get_tensor || !l->vt->load_tensors) return SP_OK;
    const int n = l->vt->ntensors(l);
    if (n <= 0) return SP_OK;
    sp_layer_tensor *t = sp_calloc((size_t)n, sizeof *t);
    if (!t) return SP_ENOMEM;
    sp_status st = SP_OK;
    for (int k = 0; k < n && st == SP_OK; k++) {
        sp_layer_tensor want = {0};
        if ((st = l->vt->get_tensor(l, k, &want)) != SP_OK) break;
        char nm[64];
        snprintf(nm, sizeof nm, "%d.q.%s", l->index, want.name ? want.name : "");
        const ment *e = get(f, nm, want.dtype, MF_LAYER, -1, &st);
        if (st != SP_OK) break;
        if (!e) {
            st = FAIL("layer %s needs tensor '%s', which the file does not have", l->name, nm);
            break;
        }
        if (e->count > (uint64_t)INT64_MAX) {
            st = FAIL("tensor '%s': count %llu", nm, (unsigned long long)e->count);
            break;
        }
        t[k] = (sp_layer_tensor){.name = want.name, .dtype = want.dtype,
                                 .count = (int64_t)e->count, .data = e->p};
    }
    if (st == SP_OK) {
        st = l->vt->load_tensors(l, t, n, f->borrow);
        if (st != SP_OK && st != SP_ENOMEM) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s", sp_last_error());
            st = FAIL("layer %s: %s", l->name, msg);
        }
    }
    sp_free(t);
    return st;
}

/* ---- model-level records ------------------------------------------------------------------- */

static char *dup_text(const uint8_t *p, uint64_t len) {
    char *s = sp_alloc((size_t)len + 1);
    if (!s) return NULL;
    if (len) memcpy(s, p, (size_t)len);
    s[len] = '\0';
    return s;
}

static sp_status read_vocab(const mfile *f, sp_model *m) {
    sp_status st;
    const ment *e = get(f, "vocab", SP_I32, MF_RAW, -1, &st);
    if (!e) return st;
    if (e->count != (uint64_t)sp_model_classes(m))
        return FAIL("vocab holds %llu code points for a model of %lld classes",
                    (unsigned long long)e->count, (long long)sp_model_classes(m));
    uint32_t prev = 0;
    for (uint64_t i = 0; i < e->count; i++) {
        const uint32_t c = mf_rd32(e->p + 4 * i);
        if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return FAIL("vocab entry %llu = 0x%X is not a Unicode scalar value",
                        (unsigned long long)i, c);
        if (i > 0 && c <= prev)
            return FAIL("vocab entry %llu = U+%04X is not above the one before it (U+%04X)",
                        (unsigned long long)i, c, prev);
        prev = c;
    }
    return sp_model_set_vocab(m, (const int32_t *)(const void *)e->p, (int64_t)e->count);
}

static sp_status read_optim(const mfile *f, sp_checkpoint *out) {
    sp_status st;
    const ment *e = get(f, "optim", SP_U8, MF_RAW, 48, &st);
    if (!e) return st;
    const ment *s = get(f, "optim.state", SP_F32, MF_DENSE, -1, &st);
    if (st != SP_OK) return st;
    if (!s) return FAIL("tensor 'optim' without 'optim.state'");
    const uint8_t *p = e->p;
    const uint32_t kind = mf_rd32(p), nesterov = mf_rd32(p + 4);
    if (kind > 2 || nesterov > 1 || mf_rd32(p + 28))
        return FAIL("optimizer kind %u / nesterov %u / reserved %u out of range", kind, nesterov,
                    mf_rd32(p + 28));
    float fl[5];
    memcpy(fl, p + 8, sizeof fl);
    sp_optim_config c = {.kind = (sp_optim_kind)kind, .nesterov = nesterov != 0,
                         .momentum = fl[0], .weight_decay = fl[1], .beta1 = fl[2],
                         .beta2 = fl[3], .eps = fl[4]};
    const uint64_t t = mf_rd64(p + 32), ns = mf_rd64(p + 40);
    if (t > (uint64_t)INT64_MAX || ns != s->count)
        return FAIL("optimizer step %llu / state of %llu floats (tensor 'optim.state' holds "
                    "%llu)", (unsigned long long)t, (unsigned long long)ns,
                    (unsigned long long)s->count);
    if (f->borrow) return SP_OK; /* a mapped model is not trained: no optimizer is built */
    st = sp_optim_new(&c, sp_model_nparams(out->model), &out->optim);
    if (st != SP_OK) {
        if (st == SP_ENOMEM) return st;
        char msg[300];
        snprintf(msg, sizeof msg, "%s", sp_last_error());
        return FAIL("optimizer: %s", msg);
    }
    if ((uint64_t)sp_optim_state_size(out->optim) != ns)
        return FAIL("optimizer state has %llu floats, want %lld", (unsigned long long)ns,
                    (long long)sp_optim_state_size(out->optim));
    if (ns) memcpy(sp_optim_state(out->optim), s->p, (size_t)s->nbytes);
    sp_optim_set_steps(out->optim, (int64_t)t);
    return SP_OK;
}

/* ---- the whole file --------------------------------------------------------------------- */

static sp_status load(mfile *f, sp_checkpoint *out) {
    sp_status st = parse_table(f);
    if (st != SP_OK) return st;
    if (f->info) f->info->tensors = f->n;
    const ment *conf = get(f, "config", SP_U8, MF_RAW, -1, &st);
    if (st != SP_OK) return st;
    const ment *modl = get(f, "model", SP_I64, MF_RAW, 7, &st);
    if (st != SP_OK) return st;
    if (!conf || !modl) return FAIL("a required tensor ('config', 'model') is missing");
    if (memchr(conf->p, 0, (size_t)conf->nbytes))
        return FAIL("NUL byte in the architecture ('config') at offset %lld",
                    (long long)((const uint8_t *)memchr(conf->p, 0, (size_t)conf->nbytes) -
                                conf->p));
    int64_t d[7];
    for (int k = 0; k < 7; k++) d[k] = (int64_t)mf_rd64(modl->p + 8 * k);
    const int64_t np = d[5], nb = d[6];
    /* the parameters and state are in the file: their counts are bounded by its size */
    if (np < 0 || nb < 0 || (uint64_t)np > f->len / 4 || (uint64_t)nb > f->len / 4)
        return FAIL("%lld parameters / %lld buffers do not fit in a file of %zu bytes",
                    (long long)np, (long long)nb, f->len);
    patterns *pat = sp_calloc(1, sizeof *pat);
    if (!pat) return SP_ENOMEM;
    st = read_patterns(f, pat);
    char *cfg = st == SP_OK ? dup_text(conf->p, conf->nbytes) : NULL;
    if (st == SP_OK && !cfg) st = SP_ENOMEM;
    if (st == SP_OK) {
        const sp_shape in = {d[0], d[1], d[2]};
        if (f->borrow)
            st = sp_model_build_mapped(cfg, in, d[3], (uint64_t)d[4], np + nb,
                                       (const sp_mask *const *)pat->mask,
                                       (const sp_csr *const *)pat->csr, pat->n, bind_mapped, f,
                                       &out->model);
        else
            st = sp_model_new_with_structure(cfg, in, d[3], (uint64_t)d[4], np + nb,
                                             (const sp_mask *const *)pat->mask,
                                             (const sp_csr *const *)pat->csr, pat->n,
                                             &out->model);
        if (st != SP_OK && st != SP_ENOMEM) {
            char msg[400];
            snprintf(msg, sizeof msg, "%s", sp_last_error());
            st = strncmp(msg, "model file: ", 12) == 0 ? sp_fail(SP_EFORMAT, "%s", msg)
                                                        : FAIL("architecture: %s", msg);
        }
    }
    sp_free(cfg);
    free_patterns(pat);
    if (st != SP_OK) return st;
    sp_model *m = out->model;
    if (sp_model_nparams(m) != np || sp_model_nbuffers(m) != nb)
        return FAIL("the architecture has %lld parameters and %lld buffers, the file %lld and "
                    "%lld", (long long)sp_model_nparams(m), (long long)sp_model_nbuffers(m),
                    (long long)np, (long long)nb);
    /* every layer's tensors: its structure was given (and used) above; copy or bind the rest */
    const int nl = sp_model_nlayers(m);
    uint64_t weight = 0, in_place = 0;
    for (int i = 0; i < nl; i++) {
        sp_layer *l = sp_model_layer_ptr(m, i);
        char nm[64];
        const char *sfx[3] = {"mask", "csr.row_ptr", "csr.col_idx"};
        const sp_csr *csr = sp_model_layer_csr(m, i);
        const char *format = "";
        int64_t dense_params;
        size_t bytes;
        if (l->vt->storage) l->vt->storage(l, &format, &dense_params, &bytes);
        const bool patterned = csr || !strcmp(format, "mask") || !strcmp(format, "bsr") ||
                               !strcmp(format, "nm");
        for (int s = 0; s < 3; s++) {
            snprintf(nm, sizeof nm, "%d.%s", i, sfx[s]);
            const ment *e = find(f, nm);
            if (e) weight += e->nbytes, in_place += csr && f->borrow && s > 0 ? e->nbytes : 0;
            if (patterned && !e && (csr ? s > 0 : s == 0))
                return FAIL("layer %s stores a %s pattern and the file has no '%s'", l->name,
                            csr ? "CSR" : "sparse or masked", nm);
        }
        for (int buf = 0; buf < 2; buf++) {
            if (!(buf ? l->nbuffer : l->nparam)) continue;
            const ment *e;
            if ((st = layer_floats(f, l, buf, &e)) != SP_OK) return st;
            weight += e->nbytes;
            if (f->borrow) in_place += e->nbytes;
            else memcpy(buf ? l->buffer : l->param, e->p, (size_t)e->nbytes);
        }
        if ((st = layer_tensors(f, l)) != SP_OK) return st;
        for (int k = 0; l->vt->ntensors && k < f->n; k++) {
            int li;
            const char *suffix;
            if (f->e[k].storage == MF_LAYER && layer_name(f->e[k].name, &li, &suffix) && li == i) {
                weight += f->e[k].nbytes;
                if (f->borrow) in_place += f->e[k].nbytes;
            }
        }
    }
    if (f->info) f->info->weight_bytes = weight, f->info->in_place_bytes = in_place;
    const ment *e = get(f, "input_scale", SP_F32, MF_RAW, 1, &st);
    if (st != SP_OK) return st;
    if (e) {
        float scale;
        memcpy(&scale, e->p, 4);
        if (!(scale > 0.0f) || !isfinite(scale))
            return FAIL("input_scale %g is not a positive number", (double)scale);
        sp_model_set_input_scale(m, scale);
    }
    if ((st = read_vocab(f, m)) != SP_OK) return st;
    if ((st = read_optim(f, out)) != SP_OK) return st;
    if ((e = get(f, "train", SP_I64, MF_RAW, 4, &st)) != NULL) {
        out->state = (sp_train_state){(int64_t)mf_rd64(e->p), (int64_t)mf_rd64(e->p + 8),
                                      (int64_t)mf_rd64(e->p + 16), mf_rd64(e->p + 24)};
        if (out->state.step < 0 || out->state.epoch < 0 || out->state.batch_index < 0)
            return FAIL("negative training position (step %lld, epoch %lld, batch %lld)",
                        (long long)out->state.step, (long long)out->state.epoch,
                        (long long)out->state.batch_index);
        out->has_state = true;
    }
    if (st != SP_OK) return st;
    e = get(f, "meta", SP_U8, MF_RAW, -1, &st);
    if (st != SP_OK) return st;
    out->meta = e ? dup_text(e->p, e->nbytes) : dup_text((const uint8_t *)"", 0);
    if (!out->meta) return SP_ENOMEM;
    for (int k = 0; k < f->n; k++)
        if (!f->e[k].used)
            return FAIL("tensor '%s' belongs to no part of the model", f->e[k].name);
    return SP_OK;
}

sp_status sp_model_file_parse(const uint8_t *b, size_t len, bool borrow, sp_checkpoint *out,
                              sp_model_file_info *info) {
    memset(out, 0, sizeof *out);
    if (!mf_host_le())
        return sp_fail(SP_EINVAL, "model file: this build reads little-endian files on "
                       "little-endian hosts only");
    mfile f = {.b = b, .len = len, .borrow = borrow, .info = info};
    if (info) *info = (sp_model_file_info){.version = MF_VERSION, .file_bytes = len,
                                           .mapped = borrow};
    sp_status st = load(&f, out);
    sp_free(f.e);
    sp_free(f.by_name);
    if (st != SP_OK) sp_checkpoint_free(out);
    return st;
}

/* ---- sp_model_open: the mapped loader ---------------------------------------------------- */

sp_status sp_checkpoint_open(const char *path, sp_checkpoint *out, sp_model_file_info *info) {
    if (!path || !out) return sp_fail(SP_EINVAL, "checkpoint_open: NULL argument");
    memset(out, 0, sizeof *out);
    if (info) memset(info, 0, sizeof *info);
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sp_fail(SP_EIO, "checkpoint_open: cannot open %s", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return sp_fail(SP_EIO, "checkpoint_open: %s is not a regular file", path);
    }
    const size_t len = (size_t)sb.st_size;
    uint8_t head[12] = {0};
    const bool v1 = len >= 12 && pread(fd, head, 12, 0) == 12 &&
                    memcmp(head, MF_MAGIC, 8) == 0 && mf_rd32(head + 8) == 1;
    void *map = NULL;
    if (!v1 && len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return sp_fail(SP_EIO, "checkpoint_open: cannot map %s (%zu bytes)", path, len);
        }
    }
    close(fd);
    if (v1) { /* no aligned per-layer tensors: copied */
        sp_status st = sp_checkpoint_load(path, out); /* its messages name the path */
        if (st != SP_OK) return st;
        sp_optim_free(out->optim);
        out->optim = NULL;
        if (info)
            *info = (sp_model_file_info){
                .version = 1, .file_bytes = len,
                .weight_bytes = 4 * (uint64_t)(sp_model_nparams(out->model) +
                                               sp_model_nbuffers(out->model))};
        return SP_OK;
    }
    static const uint8_t empty[1];
    sp_status st = sp_model_file_parse(map ? map : empty, len, true, out, info);
    if (st != SP_OK) {
        if (map) munmap(map, len);
        if (st != SP_ENOMEM) {
            char msg[480];
            snprintf(msg, sizeof msg, "%s", sp_last_error());
            sp_fail(st, "%s: %s", path, msg);
        }
        return st;
    }
    sp_model_adopt_mapping(out->model, map, len);
    return SP_OK;
}

sp_status sp_model_open_info(const char *path, sp_model **out, sp_model_file_info *info) {
    if (!path || !out) return sp_fail(SP_EINVAL, "model_open: NULL argument");
    *out = NULL;
    sp_checkpoint ck;
    sp_status st = sp_checkpoint_open(path, &ck, info);
    if (st != SP_OK) return st;
    *out = ck.model;
    ck.model = NULL;
    sp_checkpoint_free(&ck);
    return SP_OK;
}

sp_status sp_model_open(const char *path, sp_model **out) {
    return sp_model_open_info(path, out, NULL);
}
