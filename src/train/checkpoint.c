/*
 * checkpoint.c - the model file (docs/FORMAT.md): the writer of version 2 and the loaders'
 * entry points. A version-2 file is a fixed header, a table of fixed-size tensor entries and
 * the tensors, each at a 64-byte aligned offset with zero padding between, then the CRC-32 of
 * every byte before it. The file is written atomically, streamed through a small buffer with
 * its CRC taken on the way. Version 2 is read by src/io/model_file.c (copying here, mapped by
 * sp_model_open), version 1 by checkpoint_v1.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sparrow/train.h"

#include "../core/internal.h"
#include "../io/model_file.h"
#include "../nn/seq.h"

#define OPTM_BYTES (8 + 5 * 4 + 4 + 2 * 8) /* the "optim" record */

/* ---- CRC-32 (reflected polynomial 0xEDB88320), slicing by 8, tables built on first use ---- */

static uint32_t crc_table[8][256];
static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = crc_table[0][crc_table[t - 1][i] & 0xff] ^ (crc_table[t - 1][i] >> 8);
}

/* Byte by byte: c = table[(c ^ b) & 0xff] ^ (c >> 8). Eight bytes at once fold the same steps
 * into eight table look-ups (the bytes are read one by one, so this holds on any host). */
uint32_t sp_crc32(uint32_t crc, const void *bytes, size_t len) {
    static int ready; /* the tables are a pure function: a racing second init writes the same */
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        crc_init();
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    const uint8_t *p = bytes;
    uint32_t c = ~crc;
    for (; len >= 8; len -= 8, p += 8) {
        const uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                                 (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
    }
    for (; len; len--, p++) c = crc_table[0][(c ^ *p) & 0xff] ^ (c >> 8);
    return ~c;
}
/* ---- writing --------------------------------------------------------------------------------- */

/* The file is streamed through a small buffer, its CRC-32 taken on the way: a checkpoint of a
 * model with hundreds of millions of bytes of state costs no second copy of it in memory. */
typedef struct wfile {
    int fd;
    int err;       /* errno of the first failed write, or 0 */
    uint32_t crc;  /* of every byte flushed so far */
    uint64_t len;  /* bytes put so far */
    size_t n;      /* bytes waiting in buf */
    uint8_t buf[1 << 16];
} wfile;

/* Writes out the buffer; after a failed write the rest is discarded (err says why). */
static void wf_flush(wfile *w) {
    w->crc = sp_crc32(w->crc, w->buf, w->n);
    size_t done = 0;
    while (!w->err && done < w->n) {
        ssize_t k = write(w->fd, w->buf + done, w->n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) w->err = k < 0 && errno ? errno : EIO;
        else done += (size_t)k;
    }
    w->n = 0;
}
static void wf_put(wfile *w, const void *src, size_t n) {
    const uint8_t *p = src;
    w->len += n;
    while (n) {
        size_t k = SP_MIN(n, sizeof w->buf - w->n);
        memcpy(w->buf + w->n, p, k);
        w->n += k, p += k, n -= k;
        if (w->n == sizeof w->buf) wf_flush(w);
    }
}
static void wf_u32(wfile *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    wf_put(w, b, 4);
}
static void wf_u64(wfile *w, uint64_t v) {
    wf_u32(w, (uint32_t)v);
    wf_u32(w, (uint32_t)(v >> 32));
}

/* Flushes w and replaces path by its temporary file tmp (sp_atomic_commit); on any error the
 * temporary file goes and path is untouched. */
static sp_status commit_file(wfile *w, const char *tmp, const char *path) {
    wf_flush(w);
    int err = sp_atomic_commit(w->fd, tmp, path, w->err);
    if (err) return sp_fail(SP_EIO, "checkpoint: writing %s failed: %s", path, strerror(err));
    return SP_OK;
}


/* One table entry to write: the tensor's bytes are data (host order; little-endian hosts). */
typedef struct went {
    char name[MF_NAME_BYTES];
    uint32_t dtype, storage, ndim;
    uint64_t shape[4];
    uint64_t count, nbytes, offset;
    const void *data;
} went;

typedef struct wlist {
    went *e;
    int n, cap;
} wlist;

static sp_status wl_add(wlist *w, const char *name, sp_dtype dt, mf_storage s, uint64_t count,
                        const void *data, uint64_t rows, uint64_t cols) {
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        went *e = sp_calloc((size_t)cap, sizeof *e);
        if (!e) return SP_ENOMEM;
        if (w->n) memcpy(e, w->e, sizeof *e * (size_t)w->n);
        sp_free(w->e);
        w->e = e;
        w->cap = cap;
    }
    went *e = &w->e[w->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->dtype = (uint32_t)dt;
    e->storage = (uint32_t)s;
    e->count = count;
    e->nbytes = count * sp_dtype_get(dt)->size;
    e->data = data;
    if (rows) { /* a matrix component: the shape is the matrix's */
        e->ndim = 2;
        e->shape[0] = rows;
        e->shape[1] = cols;
    } else {
        e->ndim = 1;
        e->shape[0] = count;
    }
    return SP_OK;
}

static uint64_t align64(uint64_t v) { return (v + MF_ALIGN - 1) / MF_ALIGN * MF_ALIGN; }

/* The tensors of a layer: its sparsity structure (CSR row offsets and column indices, or the
 * keep-bits of any other masked or sparse layer, which is rebuilt from them), its parameters
 * and state (its slices of the arenas) and the tensors it keeps outside the arenas. masks
 * receives the owned masks to free after writing. */
static sp_status layer_entries(wlist *w, const sp_model *m, int i, sp_mask **mask_out) {
    sp_layer *l = sp_model_layer_ptr(m, i);
    char nm[MF_NAME_BYTES + 32];
    sp_status st;
    const sp_csr *c = sp_model_layer_csr(m, i);
    if (c) {
        snprintf(nm, sizeof nm, "%d.csr.row_ptr", i);
        if ((st = wl_add(w, nm, SP_I64, MF_CSR_ROW_PTR, (uint64_t)c->rows + 1, c->row_ptr,
                         (uint64_t)c->rows, (uint64_t)c->cols)) != SP_OK)
            return st;
        snprintf(nm, sizeof nm, "%d.csr.col_idx", i);
        const void *idx = c->col_idx16 ? (const void *)c->col_idx16 : (const void *)c->col_idx;
        if ((st = wl_add(w, nm, c->col_idx16 ? SP_U16 : SP_I32, MF_CSR_COL_IDX, (uint64_t)c->nnz,
                         idx, (uint64_t)c->rows, (uint64_t)c->cols)) != SP_OK)
            return st;
    } else if (!l->vt->ntensors) { /* a layer with tensors of its own keeps its structure there */
        if ((st = sp_model_layer_pattern(m, i, mask_out)) != SP_OK) return st;
        const sp_mask *mk = *mask_out;
        if (mk) {
            snprintf(nm, sizeof nm, "%d.mask", i);
            if ((st = wl_add(w, nm, SP_I64, MF_MASK_BITS,
                             (uint64_t)(mk->rows * mk->words_per_row), mk->bits,
                             (uint64_t)mk->rows, (uint64_t)mk->cols)) != SP_OK)
                return st;
        }
    }
    if (l->nparam) {
        snprintf(nm, sizeof nm, "%d.param", i);
        if ((st = wl_add(w, nm, SP_F32, sp_linear_param_storage(l), (uint64_t)l->nparam,
                         l->param, 0, 0)) != SP_OK)
            return st;
    }
    if (l->nbuffer) {
        snprintf(nm, sizeof nm, "%d.buffer", i);
        if ((st = wl_add(w, nm, SP_F32, MF_DENSE, (uint64_t)l->nbuffer, l->buffer, 0, 0)) != SP_OK)
            return st;
    }
    const int nt = l->vt->ntensors && l->vt->get_tensor ? l->vt->ntensors(l) : 0;
    for (int k = 0; k < nt; k++) {
        sp_layer_tensor t = {0};
        if ((st = l->vt->get_tensor(l, k, &t)) != SP_OK) return st;
        size_t len = t.name ? strlen(t.name) : 0;
        bool ok = len >= 1 && len <= 15 && sp_dtype_get(t.dtype) && t.count >= 0 &&
                  (t.data || t.count == 0);
        for (size_t j = 0; ok && j < len; j++)
            ok = (t.name[j] >= 'a' && t.name[j] <= 'z') || (t.name[j] >= '0' && t.name[j] <= '9') ||
                 t.name[j] == '_';
        if (!ok)
            return sp_fail(SP_EINVAL, "checkpoint_save: layer %s describes tensor %d badly (name "
                           "'%s', dtype %d, count %lld)", l->name, k, t.name ? t.name : "(null)",
                           (int)t.dtype, (long long)t.count);
        snprintf(nm, sizeof nm, "%d.q.%s", i, t.name);
        if ((st = wl_add(w, nm, t.dtype, MF_LAYER, (uint64_t)t.count, t.data, 0, 0)) != SP_OK)
            return st;
    }
    return SP_OK;
}

static void wf_zeros(wfile *w, uint64_t n) {
    static const uint8_t z[MF_ALIGN] = {0};
    while (n) {
        const uint64_t k = SP_MIN(n, (uint64_t)MF_ALIGN);
        wf_put(w, z, (size_t)k);
        n -= k;
    }
}

sp_status sp_checkpoint_save(const char *path, const sp_model *cm, const sp_optim *o,
                             const sp_train_state *ts, const char *meta) {
    if (!path || !cm) return sp_fail(SP_EINVAL, "checkpoint_save: NULL argument");
    if (!mf_host_le())
        return sp_fail(SP_EINVAL, "checkpoint_save: the model file is little-endian and written "
                       "from memory as it is; this host is big-endian");
    sp_model *m = (sp_model *)cm; /* read only: the arenas are not changed */
    const char *cfg = sp_model_config(m);
    const sp_shape in = sp_model_in(m);
    const int nl = sp_model_nlayers(m);
    const int64_t modl[7] = {in.c, in.h, in.w, sp_model_classes(m), (int64_t)sp_model_seed(m),
                             sp_model_nparams(m), sp_model_nbuffers(m)};
    const float scale = sp_model_input_scale(m);
    int64_t nvocab = 0;
    const int32_t *vocab = sp_model_vocab(m, &nvocab);
    uint8_t optm[OPTM_BYTES] = {0};
    int64_t trst[4] = {0};
    wlist wl = {0};
    sp_mask **masks = sp_calloc((size_t)nl + 1, sizeof *masks);
    wfile *w = NULL;
    char *tmp = NULL;
    sp_status st = masks ? SP_OK : SP_ENOMEM;
    if (st == SP_OK) st = wl_add(&wl, "config", SP_U8, MF_RAW, strlen(cfg), cfg, 0, 0);
    if (st == SP_OK) st = wl_add(&wl, "model", SP_I64, MF_RAW, 7, modl, 0, 0);
    if (st == SP_OK) st = wl_add(&wl, "input_scale", SP_F32, MF_RAW, 1, &scale, 0, 0);
    if (st == SP_OK && vocab)
        st = wl_add(&wl, "vocab", SP_I32, MF_RAW, (uint64_t)nvocab, vocab, 0, 0);
    for (int i = 0; i < nl && st == SP_OK; i++) st = layer_entries(&wl, m, i, &masks[i]);
    if (st == SP_OK && o) {
        /* u32 kind, u32 nesterov, f32 momentum, weight decay, beta1, beta2, eps, u32 zero,
         * u64 steps, u64 state floats */
        const sp_optim_config *c = sp_optim_get_config(o);
        const uint32_t u[2] = {(uint32_t)c->kind, c->nesterov ? 1u : 0u};
        const float f[5] = {c->momentum, c->weight_decay, c->beta1, c->beta2, c->eps};
        const uint64_t q[2] = {(uint64_t)sp_optim_steps(o), (uint64_t)sp_optim_state_size(o)};
        memcpy(optm, u, 8);
        memcpy(optm + 8, f, 20);
        memcpy(optm + 32, q, 16);
        st = wl_add(&wl, "optim", SP_U8, MF_RAW, OPTM_BYTES, optm, 0, 0);
        if (st == SP_OK)
            st = wl_add(&wl, "optim.state", SP_F32, MF_DENSE, q[1],
                        sp_optim_state((sp_optim *)o), 0, 0);
    }
    if (st == SP_OK && ts) {
        trst[0] = ts->step, trst[1] = ts->epoch, trst[2] = ts->batch_index;
        trst[3] = (int64_t)ts->data_seed;
        st = wl_add(&wl, "train", SP_I64, MF_RAW, 4, trst, 0, 0);
    }
    if (st == SP_OK && meta) st = wl_add(&wl, "meta", SP_U8, MF_RAW, strlen(meta), meta, 0, 0);
    /* the layout: header, table, then every tensor at a 64-byte boundary, then the CRC */
    const uint64_t data_off = align64(MF_HEADER_BYTES + (uint64_t)wl.n * MF_ENTRY_BYTES);
    uint64_t pos = data_off;
    for (int k = 0; k < wl.n; k++) {
        wl.e[k].offset = pos;
        pos = align64(pos + wl.e[k].nbytes);
    }
    const uint64_t file_len = pos + 4;
    if (st == SP_OK && !(w = sp_calloc(1, sizeof *w))) st = SP_ENOMEM;
    if (st == SP_OK) st = sp_atomic_open(path, "checkpoint", &w->fd, &tmp);
    if (st == SP_OK) {
        wf_put(w, MF_MAGIC, 8);
        wf_u32(w, MF_VERSION);
        wf_u32(w, (uint32_t)wl.n);
        wf_u64(w, file_len);
        wf_u64(w, MF_HEADER_BYTES);
        wf_u64(w, data_off);
        wf_zeros(w, MF_HEADER_BYTES - w->len);
        for (int k = 0; k < wl.n; k++) {
            const went *e = &wl.e[k];
            uint8_t name[MF_NAME_BYTES] = {0};
            memcpy(name, e->name, strlen(e->name));
            wf_put(w, name, sizeof name);
            wf_u32(w, e->dtype);
            wf_u32(w, e->storage);
            wf_u32(w, e->ndim);
            wf_u32(w, 0);
            for (int d = 0; d < 4; d++) wf_u64(w, e->shape[d]);
            wf_u64(w, e->count);
            wf_u64(w, e->offset);
            wf_u64(w, e->nbytes);
        }
        for (int k = 0; k < wl.n; k++) {
            wf_zeros(w, wl.e[k].offset - w->len);
            if (wl.e[k].nbytes) wf_put(w, wl.e[k].data, (size_t)wl.e[k].nbytes);
        }
        wf_zeros(w, file_len - 4 - w->len);
        wf_flush(w);
        const uint32_t crc = w->crc;
        wf_u32(w, crc);
        st = commit_file(w, tmp, path);
    }
    for (int i = 0; masks && i < nl; i++) sp_mask_free(masks[i]);
    sp_free(masks);
    sp_free(wl.e);
    sp_free(tmp);
    sp_free(w);
    return st;
}

/* ---- reading ----------------------------------------------------------------------------- */

void sp_checkpoint_free(sp_checkpoint *c) {
    if (!c) return;
    sp_model_free(c->model);
    sp_optim_free(c->optim);
    sp_free(c->meta);
    memset(c, 0, sizeof *c);
}

sp_status sp_checkpoint_parse(const uint8_t *b, size_t len, sp_checkpoint *out) {
    if (!b || !out) return sp_fail(SP_EINVAL, "checkpoint: NULL argument");
    memset(out, 0, sizeof *out);
    if (len >= 12 && memcmp(b, MF_MAGIC, 8) == 0 && mf_rd32(b + 8) == 1)
        return sp_checkpoint_parse_v1(b, len, out);
    if ((uintptr_t)b % 64 == 0) return sp_model_file_parse(b, len, false, out, NULL);
    /* the tensors are read in place as typed arrays, which the file aligns to 64 bytes from
     * its start: a buffer that does not start aligned is parsed from an aligned copy */
    uint8_t *copy = sp_alloc(len ? len : 1);
    if (!copy) return SP_ENOMEM;
    memcpy(copy, b, len);
    sp_status st = sp_model_file_parse(copy, len, false, out, NULL);
    sp_free(copy);
    return st;
}

sp_status sp_checkpoint_load(const char *path, sp_checkpoint *out) {
    if (!path || !out) return sp_fail(SP_EINVAL, "checkpoint_load: NULL argument");
    memset(out, 0, sizeof *out);
    uint8_t *bytes;
    size_t len;
    sp_status rs = sp_read_file(path, "checkpoint", &bytes, &len);
    if (rs != SP_OK) return rs;
    sp_status st = sp_checkpoint_parse(bytes, len, out);
    sp_free(bytes);
    if (st != SP_OK && st != SP_ENOMEM) {
        char msg[480];
        snprintf(msg, sizeof msg, "%s", sp_last_error());
        sp_fail(st, "%s: %s", path, msg);
    }
    return st;
}
