/*
 * checkpoint_v1.c - the reader of version 1 model files (docs/FORMAT.md, "Version 1"): a
 * section stream (CONF, MODL, INPT, VOCB, PATT, PARM, BUFF, OPTM, TRST, META) and a CRC-32 at
 * the end. Nothing writes version 1 any more; files that users have still load, through
 * sp_checkpoint_parse, which hands a version-1 file here. Every count and offset is checked
 * against the file size before anything is allocated.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/train.h"

#include "../core/internal.h"
#include "../io/model_file.h"

#define CKPT_MAGIC "SPRWCKPT"
#define CKPT_VERSION 1u
#define CKPT_MAX_SECTIONS 64u
#define TAG(a, b, c, d) ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
#define TAG_CONF TAG('C', 'O', 'N', 'F')
#define TAG_MODL TAG('M', 'O', 'D', 'L')
#define TAG_PARM TAG('P', 'A', 'R', 'M')
#define TAG_BUFF TAG('B', 'U', 'F', 'F')
#define TAG_OPTM TAG('O', 'P', 'T', 'M')
#define TAG_TRST TAG('T', 'R', 'S', 'T')
#define TAG_META TAG('M', 'E', 'T', 'A')
#define TAG_INPT TAG('I', 'N', 'P', 'T')
#define TAG_PATT TAG('P', 'A', 'T', 'T')
#define TAG_VOCB TAG('V', 'O', 'C', 'B')
#define PATT_MAX_LAYERS 4096
#define PATT_MASK 0u /* PATT record kinds */
#define PATT_CSR 1u

#define MODL_BYTES (7 * 8)
#define OPTM_HEAD_BYTES (8 + 5 * 4 + 4 + 2 * 8)
#define TRST_BYTES (4 * 8)

static uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd_u64(const uint8_t *p) { return rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32; }
static float rd_f32(const uint8_t *p) {
    uint32_t u = rd_u32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static void rd_f32s(const uint8_t *p, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = rd_f32(p + 4 * i);
}

typedef struct section {
    const uint8_t *p;
    uint64_t len;
    bool present;
} section;

static char *dup_text(const uint8_t *p, uint64_t len) {
    char *s = sp_alloc((size_t)len + 1);
    if (!s) return NULL;
    memcpy(s, p, (size_t)len);
    s[len] = '\0';
    return s;
}

/* VOCB: u32 count, u32 zero, count u32 code points (strictly ascending Unicode scalar
 * values), one per class: the vocabulary of a text model. The count is bounded by the section's
 * bytes before anything is read. */
static sp_status parse_vocab(section s, sp_model *m) {
    if (s.len < 8)
        return sp_fail(SP_EFORMAT, "checkpoint: VOCB section of %llu bytes is too short",
                       (unsigned long long)s.len);
    const uint32_t count = rd_u32(s.p);
    if (rd_u32(s.p + 4) != 0)
        return sp_fail(SP_EFORMAT, "checkpoint: VOCB reserved field is %u, not 0",
                       rd_u32(s.p + 4));
    if (count > (s.len - 8) / 4 || s.len != 8 + 4 * (uint64_t)count)
        return sp_fail(SP_EFORMAT, "checkpoint: VOCB holds %u code points, its section %llu "
                       "bytes (want %llu)", count, (unsigned long long)s.len,
                       (unsigned long long)(8 + 4 * (uint64_t)count));
    if ((int64_t)count != sp_model_classes(m))
        return sp_fail(SP_EFORMAT, "checkpoint: VOCB holds %u code points for a model of %lld "
                       "classes", count, (long long)sp_model_classes(m));
    uint32_t prev = 0;
    for (uint32_t i = 0; i < count; i++) {
        const uint32_t c = rd_u32(s.p + 8 + 4 * (uint64_t)i);
        if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return sp_fail(SP_EFORMAT, "checkpoint: VOCB entry %u = 0x%X is not a Unicode scalar "
                           "value", i, c);
        if (i > 0 && c <= prev)
            return sp_fail(SP_EFORMAT, "checkpoint: VOCB entry %u = U+%04X is not above the one "
                           "before it (U+%04X)", i, c, prev);
        prev = c;
    }
    int32_t *v = sp_alloc(sizeof(int32_t) * (size_t)SP_MAX(count, 1));
    if (!v) return SP_ENOMEM;
    for (uint32_t i = 0; i < count; i++) v[i] = (int32_t)rd_u32(s.p + 8 + 4 * (uint64_t)i);
    sp_status st = sp_model_set_vocab(m, v, count); /* validated above: only SP_ENOMEM */
    sp_free(v);
    return st;
}

/* PATT: u32 count, u32 zero, then per record u32 layer, u32 kind, u64 rows, u64 cols and
 * - kind 0 (mask): rows * ceil(cols / 64) u64 words of mask bits;
 * - kind 1 (CSR): u64 nnz, (rows + 1) u64 row offsets, nnz u32 column indices, zero pad to 8.
 * Every size is checked against the bytes left before anything is allocated, and a CSR record
 * against every CSR invariant after. masks and csrs are indexed by layer; *npats = highest
 * layer + 1. */
static sp_status parse_patterns(section s, sp_mask **masks, sp_csr **csrs, int *npats) {
    if (s.len < 8) return sp_fail(SP_EFORMAT, "checkpoint: PATT section of %llu bytes is too short",
                                  (unsigned long long)s.len);
    uint32_t count = rd_u32(s.p);
    if (count > PATT_MAX_LAYERS || rd_u32(s.p + 4) != 0)
        return sp_fail(SP_EFORMAT, "checkpoint: PATT holds %u patterns (at most %d)", count,
                       PATT_MAX_LAYERS);
    uint64_t pos = 8;
    for (uint32_t r = 0; r < count; r++) {
        if (s.len - pos < 24)
            return sp_fail(SP_EFORMAT, "checkpoint: PATT record %u runs past its section", r);
        const uint64_t start = pos;
        uint32_t layer = rd_u32(s.p + pos), kind = rd_u32(s.p + pos + 4);
        uint64_t rows = rd_u64(s.p + pos + 8), cols = rd_u64(s.p + pos + 16);
        pos += 24;
        if (layer >= PATT_MAX_LAYERS)
            return sp_fail(SP_EFORMAT, "checkpoint: PATT record %u names layer %u", r, layer);
        if (kind != PATT_MASK && kind != PATT_CSR)
            return sp_fail(SP_EFORMAT, "checkpoint: PATT record %u (layer %u) has kind %u "
                           "(0 mask, 1 CSR)", r, layer, kind);
        if ((int)layer < *npats && (masks[layer] || csrs[layer]))
            return sp_fail(SP_EFORMAT, "checkpoint: PATT gives layer %u twice", layer);
        if (rows < 1 || cols < 1 || rows > ((uint64_t)1 << 31) || cols > ((uint64_t)1 << 31))
            return sp_fail(SP_EFORMAT, "checkpoint: PATT layer %u pattern %llux%llu out of range",
                           layer, (unsigned long long)rows, (unsigned long long)cols);
        if (kind == PATT_CSR) {
            if (s.len - pos < 8)
                return sp_fail(SP_EFORMAT, "checkpoint: PATT record %u runs past its section", r);
            uint64_t nnz = rd_u64(s.p + pos);
            pos += 8;
            /* rows * cols < 2^62, and the offsets and indices must fit in what is left */
            const uint64_t left = s.len - pos;
            if (nnz > rows * cols || rows + 1 > left / 8 || nnz > (left - 8 * (rows + 1)) / 4)
                return sp_fail(SP_EFORMAT, "checkpoint: PATT layer %u: %llu entries in %llux%llu "
                               "need more than the %llu bytes left", layer,
                               (unsigned long long)nnz, (unsigned long long)rows,
                               (unsigned long long)cols, (unsigned long long)left);
            sp_csr *c = NULL;
            sp_status st = sp_csr_new((int64_t)rows, (int64_t)cols, (int64_t)nnz, SP_CSR_IDX32, &c);
            if (st != SP_OK) return st;
            for (uint64_t i = 0; i <= rows; i++) {
                const uint64_t v = rd_u64(s.p + pos + 8 * i);
                c->row_ptr[i] = v > nnz ? -1 : (int64_t)v; /* -1: refused by validate */
            }
            pos += 8 * (rows + 1);
            for (uint64_t k = 0; k < nnz; k++) {
                const uint32_t j = rd_u32(s.p + pos + 4 * k);
                c->col_idx[k] = j > INT32_MAX ? -1 : (int32_t)j;
                c->val[k] = 0.0f;
            }
            pos += 4 * nnz;
            const uint64_t pad = (8 - (pos - start) % 8) % 8;
            bool zero = pad <= s.len - pos;
            for (uint64_t k = 0; zero && k < pad; k++) zero = s.p[pos + k] == 0;
            pos += pad;
            if (!zero) {
                sp_csr_free(c);
                return sp_fail(SP_EFORMAT, "checkpoint: PATT layer %u: padding is not %llu zero "
                               "bytes", layer, (unsigned long long)pad);
            }
            if ((st = sp_csr_validate(c)) != SP_OK) {
                char msg[300];
                snprintf(msg, sizeof msg, "%s", sp_last_error());
                sp_csr_free(c);
                return sp_fail(SP_EFORMAT, "checkpoint: PATT layer %u: %s", layer, msg);
            }
            csrs[layer] = c;
        } else {
            uint64_t words = rows * ((cols + 63) / 64); /* < 2^57: no overflow */
            if (words > (s.len - pos) / 8)
                return sp_fail(SP_EFORMAT, "checkpoint: PATT layer %u needs %llu bytes, %llu left",
                               layer, (unsigned long long)(words * 8),
                               (unsigned long long)(s.len - pos));
            sp_mask *m = NULL;
            sp_status st = sp_mask_new((int64_t)rows, (int64_t)cols, &m);
            if (st != SP_OK) return st;
            for (uint64_t k = 0; k < words; k++) m->bits[k] = rd_u64(s.p + pos + 8 * k);
            pos += 8 * words;
            masks[layer] = m;
        }
        if ((int)layer + 1 > *npats) *npats = (int)layer + 1;
    }
    if (pos != s.len)
        return sp_fail(SP_EFORMAT, "checkpoint: %llu unexpected bytes at the end of PATT",
                       (unsigned long long)(s.len - pos));
    return SP_OK;
}

static void free_patterns(sp_mask **masks, sp_csr **csrs, int n) {
    for (int i = 0; i < n; i++) {
        if (masks) sp_mask_free(masks[i]);
        if (csrs) sp_csr_free(csrs[i]);
    }
    sp_free(masks);
    sp_free(csrs);
}

sp_status sp_checkpoint_parse_v1(const uint8_t *b, size_t len, sp_checkpoint *out) {
    if (!b || !out) return sp_fail(SP_EINVAL, "checkpoint: NULL argument");
    memset(out, 0, sizeof *out);
    if (len < 20 || memcmp(b, CKPT_MAGIC, 8) != 0)
        return sp_fail(SP_EFORMAT, "checkpoint: not a sparrow checkpoint (%zu bytes, bad magic)", len);
    uint32_t version = rd_u32(b + 8);
    if (version != CKPT_VERSION)
        return sp_fail(SP_EFORMAT, "checkpoint: version %u is not supported (this build reads %u)",
                       version, CKPT_VERSION);
    uint32_t crc = rd_u32(b + len - 4), want = sp_crc32(0, b, len - 4);
    if (crc != want)
        return sp_fail(SP_EFORMAT, "checkpoint: CRC-32 %08x does not match the contents (%08x): "
                       "the file is corrupt or truncated", crc, want);
    uint32_t nsec = rd_u32(b + 12);
    if (nsec > CKPT_MAX_SECTIONS)
        return sp_fail(SP_EFORMAT, "checkpoint: %u sections (at most %u)", nsec, CKPT_MAX_SECTIONS);
    section conf = {0}, modl = {0}, parm = {0}, buff = {0}, optm = {0}, trst = {0}, meta = {0};
    section inpt = {0}, patt = {0}, vocb = {0};
    size_t pos = 16, end = len - 4;
    for (uint32_t i = 0; i < nsec; i++) {
        if (end - pos < 16)
            return sp_fail(SP_EFORMAT, "checkpoint: section %u header at byte %zu runs past the end",
                           i, pos);
        uint32_t tag = rd_u32(b + pos);
        uint64_t slen = rd_u64(b + pos + 8);
        pos += 16;
        if (slen > end - pos)
            return sp_fail(SP_EFORMAT, "checkpoint: section %u length %llu exceeds the %zu bytes left",
                           i, (unsigned long long)slen, end - pos);
        section s = {b + pos, slen, true};
        section *dst = tag == TAG_CONF ? &conf : tag == TAG_MODL ? &modl : tag == TAG_PARM ? &parm
                     : tag == TAG_BUFF ? &buff : tag == TAG_OPTM ? &optm : tag == TAG_TRST ? &trst
                     : tag == TAG_META ? &meta : tag == TAG_INPT ? &inpt
                     : tag == TAG_PATT ? &patt : tag == TAG_VOCB ? &vocb : NULL;
        if (!dst)
            return sp_fail(SP_EFORMAT, "checkpoint: unknown section tag 0x%08x", tag);
        if (dst->present)
            return sp_fail(SP_EFORMAT, "checkpoint: section %.4s appears twice", (const char *)(b + pos - 16));
        *dst = s;
        size_t padded = (size_t)slen + (8 - slen % 8) % 8;
        if (padded > end - pos)
            return sp_fail(SP_EFORMAT, "checkpoint: section %u padding runs past the end", i);
        pos += padded;
    }
    if (pos != end)
        return sp_fail(SP_EFORMAT, "checkpoint: %zu unexpected bytes after the last section", end - pos);
    if (!conf.present || !modl.present || !parm.present || !buff.present)
        return sp_fail(SP_EFORMAT, "checkpoint: missing a required section (CONF, MODL, PARM, BUFF)");
    if (modl.len != MODL_BYTES)
        return sp_fail(SP_EFORMAT, "checkpoint: MODL section is %llu bytes, want %d",
                       (unsigned long long)modl.len, MODL_BYTES);
    int64_t d[7];
    for (int k = 0; k < 7; k++) d[k] = (int64_t)rd_u64(modl.p + 8 * k);
    sp_shape in = {d[0], d[1], d[2]};
    int64_t classes = d[3], np = d[5], nb = d[6];
    uint64_t seed = (uint64_t)d[4];
    if (np < 0 || nb < 0 || parm.len % 4 || buff.len % 4 || (uint64_t)np != parm.len / 4 ||
        (uint64_t)nb != buff.len / 4)
        return sp_fail(SP_EFORMAT, "checkpoint: %lld parameters / %lld buffers do not match "
                       "sections of %llu / %llu bytes", (long long)np, (long long)nb,
                       (unsigned long long)parm.len, (unsigned long long)buff.len);
    for (uint64_t k = 0; k < conf.len; k++)
        if (conf.p[k] == 0)
            return sp_fail(SP_EFORMAT, "checkpoint: NUL byte in the architecture at offset %llu",
                           (unsigned long long)k);
    sp_status st = SP_ENOMEM;
    sp_mask **pats = sp_calloc(PATT_MAX_LAYERS, sizeof *pats);
    sp_csr **csrs = sp_calloc(PATT_MAX_LAYERS, sizeof *csrs);
    int npats = 0;
    if (!pats || !csrs) goto fail_pats;
    if (patt.present) {
        st = parse_patterns(patt, pats, csrs, &npats);
        if (st != SP_OK) goto fail_pats;
    }
    char *cfg = dup_text(conf.p, conf.len);
    st = SP_ENOMEM;
    if (!cfg) goto fail_pats;
    /* the parameter count is bounded by the file: the model may not ask for more */
    st = sp_model_new_with_structure(cfg, in, classes, seed, np + nb,
                                     (const sp_mask *const *)pats, (const sp_csr *const *)csrs,
                                     npats, &out->model);
    sp_free(cfg);
    free_patterns(pats, csrs, npats);
    if (st != SP_OK) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", sp_last_error());
        return sp_fail(st == SP_ENOMEM ? st : SP_EFORMAT, "checkpoint: architecture: %s", msg);
    }
    if (sp_model_nparams(out->model) != np || sp_model_nbuffers(out->model) != nb) {
        st = sp_fail(SP_EFORMAT, "checkpoint: the architecture has %lld parameters and %lld "
                     "buffers, the file %lld and %lld", (long long)sp_model_nparams(out->model),
                     (long long)sp_model_nbuffers(out->model), (long long)np, (long long)nb);
        goto fail;
    }
    if (inpt.present) {
        float scale = inpt.len == 8 ? rd_f32(inpt.p) : NAN;
        if (!(scale > 0.0f) || !isfinite(scale) || rd_u32(inpt.p + 4) != 0) {
            st = sp_fail(SP_EFORMAT, "checkpoint: INPT section (%llu bytes) does not hold a "
                         "positive input scale", (unsigned long long)inpt.len);
            goto fail;
        }
        sp_model_set_input_scale(out->model, scale);
    }
    if (vocb.present && (st = parse_vocab(vocb, out->model)) != SP_OK) goto fail;
    rd_f32s(parm.p, sp_model_params(out->model), np);
    rd_f32s(buff.p, sp_model_buffers(out->model), nb);
    if (optm.present) {
        if (optm.len < OPTM_HEAD_BYTES) {
            st = sp_fail(SP_EFORMAT, "checkpoint: OPTM section of %llu bytes is too short",
                         (unsigned long long)optm.len);
            goto fail;
        }
        sp_optim_config c = {.kind = (sp_optim_kind)rd_u32(optm.p), .nesterov = rd_u32(optm.p + 4) != 0,
                             .momentum = rd_f32(optm.p + 8), .weight_decay = rd_f32(optm.p + 12),
                             .beta1 = rd_f32(optm.p + 16), .beta2 = rd_f32(optm.p + 20),
                             .eps = rd_f32(optm.p + 24)};
        int64_t t = (int64_t)rd_u64(optm.p + 32), ns = (int64_t)rd_u64(optm.p + 40);
        if (rd_u32(optm.p) > 2 || rd_u32(optm.p + 4) > 1) {
            st = sp_fail(SP_EFORMAT, "checkpoint: optimizer kind %u / nesterov %u out of range",
                         rd_u32(optm.p), rd_u32(optm.p + 4));
            goto fail;
        }
        if (t < 0 || ns < 0 || (optm.len - OPTM_HEAD_BYTES) % 4 ||
            (uint64_t)ns != (optm.len - OPTM_HEAD_BYTES) / 4) {
            st = sp_fail(SP_EFORMAT, "checkpoint: optimizer step %lld / state of %lld floats does "
                         "not match its %llu bytes", (long long)t, (long long)ns,
                         (unsigned long long)optm.len);
            goto fail;
        }
        st = sp_optim_new(&c, np, &out->optim);
        if (st != SP_OK) {
            if (st != SP_ENOMEM) {
                char why[256]; /* sp_fail formats into the buffer sp_last_error returns */
                snprintf(why, sizeof why, "%s", sp_last_error());
                st = sp_fail(SP_EFORMAT, "checkpoint: optimizer: %s", why);
            }
            goto fail;
        }
        if (sp_optim_state_size(out->optim) != ns) {
            st = sp_fail(SP_EFORMAT, "checkpoint: optimizer state has %lld floats, want %lld",
                         (long long)ns, (long long)sp_optim_state_size(out->optim));
            goto fail;
        }
        rd_f32s(optm.p + OPTM_HEAD_BYTES, sp_optim_state(out->optim), ns);
        sp_optim_set_steps(out->optim, t);
    }
    if (trst.present) {
        if (trst.len != TRST_BYTES) {
            st = sp_fail(SP_EFORMAT, "checkpoint: TRST section is %llu bytes, want %d",
                         (unsigned long long)trst.len, TRST_BYTES);
            goto fail;
        }
        out->state = (sp_train_state){(int64_t)rd_u64(trst.p), (int64_t)rd_u64(trst.p + 8),
                                      (int64_t)rd_u64(trst.p + 16), rd_u64(trst.p + 24)};
        if (out->state.step < 0 || out->state.epoch < 0 || out->state.batch_index < 0) {
            st = sp_fail(SP_EFORMAT, "checkpoint: negative training position (step %lld)",
                         (long long)out->state.step);
            goto fail;
        }
        out->has_state = true;
    }
    st = SP_ENOMEM;
    out->meta = meta.present ? dup_text(meta.p, meta.len) : dup_text((const uint8_t *)"", 0);
    if (!out->meta) goto fail;
    return SP_OK;
fail_pats:
    free_patterns(pats, csrs, npats);
fail:
    sp_checkpoint_free(out);
    return st;
}

