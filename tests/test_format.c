/*
 * test_format.c - the model file, version 2 (docs/FORMAT.md): its layout (64-byte aligned
 * tensors, zero padding, the table), every single flipped bit detected, a catalogue of
 * malformed files each failing with its own message, the mapped loader (parameters, CSR
 * structures and state used in place, the same outputs as the copying loader, training
 * refused), version-1 files through both loaders, and the fuzz corpus replayed.
 */
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"

#define V1_FIXTURE(name) SPARROW_SOURCE_DIR "/tests/fixtures/v1/" name

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/sparrow_test_format_%d_%s", (int)getpid(), name);
}

static uint8_t *slurp(const char *path, size_t *len) {
    uint8_t *b = NULL;
    *len = 0;
    if (sp_file_read(path, 1 << 26, &b, len) != SP_OK) return NULL;
    return b;
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
static void put64(uint8_t *p, uint64_t v) {
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}
static void reseal(uint8_t *b, size_t len) { put32(b + len - 4, sp_crc32(0, b, len - 4)); }

/* The 128-byte table entry called name, or NULL. */
static uint8_t *entry(uint8_t *b, size_t len, const char *name) {
    if (len < 64) return NULL;
    const uint32_t n = rd32(b + 12);
    for (uint32_t k = 0; k < n && 64 + 128 * (size_t)(k + 1) <= len; k++)
        if (!strcmp((const char *)b + 64 + 128 * (size_t)k, name)) return b + 64 + 128 * (size_t)k;
    return NULL;
}
/* The data of the entry called name. */
static uint8_t *data_of(uint8_t *b, size_t len, const char *name) {
    uint8_t *e = entry(b, len, name);
    return e ? b + rd64(e + 112) : NULL;
}

static const char *CAT_MODEL = "flatten\nlinear out=12 format=csr density=0.5\nrelu\n"
                               "linear out=classes\n";

/* The catalogue's file: a CSR layer, a dense layer, Adam, a training position, meta. */
static uint8_t *catalogue_file(size_t *len) {
    sp_model *m = NULL;
    sp_optim *o = NULL;
    uint8_t *b = NULL;
    *len = 0;
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
    if (sp_model_new(CAT_MODEL, (sp_shape){1, 4, 4}, 4, 3, &m) == SP_OK &&
        sp_optim_new(&oc, sp_model_nparams(m), &o) == SP_OK) {
        char path[128];
        tmp_path(path, sizeof path, "cat");
        sp_train_state ts = {7, 1, 2, 9};
        if (sp_checkpoint_save(path, m, o, &ts, "meta") == SP_OK) b = slurp(path, len);
        unlink(path);
    }
    sp_model_free(m);
    sp_optim_free(o);
    return b;
}

TEST(format_v2_layout_is_aligned_with_zero_padding) {
    size_t len;
    uint8_t *b = catalogue_file(&len);
    CHECK(b != NULL);
    if (!b) return;
    CHECK(memcmp(b, "SPRWCKPT", 8) == 0);
    CHECK_EQ(rd32(b + 8), 2);
    CHECK_EQ(rd64(b + 16), len);
    CHECK_EQ(rd64(b + 24), 64);
    const uint32_t n = rd32(b + 12);
    CHECK_EQ(rd64(b + 32), (64 + 128 * (uint64_t)n + 63) / 64 * 64);
    static const char *names[] = {"config", "model", "input_scale", "1.csr.row_ptr",
                                  "1.csr.col_idx", "1.param", "3.param", "optim",
                                  "optim.state", "train", "meta"};
    CHECK_EQ(n, sizeof names / sizeof names[0]);
    uint64_t end = rd64(b + 32);
    for (uint32_t k = 0; k < n; k++) {
        const uint8_t *e = b + 64 + 128 * (size_t)k;
        CHECK_MSG(!strcmp((const char *)e, names[k]), "entry %u is '%s'", k, (const char *)e);
        const uint64_t off = rd64(e + 112), nbytes = rd64(e + 120);
        CHECK_MSG(off % 64 == 0, "%s at %llu", names[k], (unsigned long long)off);
        for (uint64_t q = end; q < off; q++) CHECK(b[q] == 0);
        end = off + nbytes;
    }
    CHECK_EQ((end + 63) / 64 * 64 + 4, len);
    /* CSR storage: u16 column indices (16 columns), i64 row offsets; the parameters say
     * csr_values (5) */
    CHECK_EQ(rd32(entry(b, len, "1.csr.col_idx") + 56), SP_U16);
    CHECK_EQ(rd32(entry(b, len, "1.csr.row_ptr") + 56), SP_I64);
    CHECK_EQ(rd32(entry(b, len, "1.param") + 60), 5);
    CHECK_EQ(rd64(entry(b, len, "1.param") + 104), 12 * 8 + 12);
    CHECK_EQ(rd32(b + len - 4), sp_crc32(0, b, len - 4));
    sp_free(b);
}

/* CRC-32 detects every single-bit error: flipping any bit of the file makes it fail. */
TEST(format_every_flipped_bit_is_detected) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("linear out=3 format=csr density=0.5\nrelu\nlinear out=classes\n",
                          (sp_shape){4, 1, 1}, 2, 1, &m));
    if (!m) return;
    char path[128];
    tmp_path(path, sizeof path, "bits");
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    size_t len;
    uint8_t *b = slurp(path, &len);
    CHECK(b != NULL && len < 4096);
    sp_checkpoint c = {0};
    if (b) CHECK_OK(sp_checkpoint_parse(b, len, &c));
    sp_checkpoint_free(&c);
    int64_t passed = 0;
    for (size_t i = 0; b && i < 8 * len; i++) {
        b[i / 8] ^= (uint8_t)(1u << (i % 8));
        sp_checkpoint cc = {0};
        if (sp_checkpoint_parse(b, len, &cc) == SP_OK) passed++;
        CHECK(cc.model == NULL);
        sp_checkpoint_free(&cc);
        b[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    CHECK_MSG(passed == 0, "%lld of %zu flipped bits went unnoticed", (long long)passed, 8 * len);
    sp_free(b);
    unlink(path);
    sp_model_free(m);
}

/* The catalogue: each malformed file (sealed with a correct CRC unless the case is about the
 * CRC or the length) fails with SP_EFORMAT and a message naming what is wrong. */
TEST(format_rejects_malformed_files_each_with_its_own_error) {
    size_t len;
    uint8_t *good = catalogue_file(&len);
    CHECK(good != NULL);
    if (!good) return;
    sp_checkpoint ok = {0};
    CHECK_OK(sp_checkpoint_parse(good, len, &ok));
    CHECK(ok.has_state && ok.state.step == 7 && ok.optim && !strcmp(ok.meta, "meta"));
    sp_checkpoint_free(&ok);
    static const struct {
        const char *name, *needle;
    } cases[] = {
        {"empty", "bad magic"},
        {"bad magic", "bad magic"},
        {"version 9", "version 9 is not supported"},
        {"truncated", "truncated"},
        {"flipped bit", "CRC-32"},
        {"bytes appended", "unexpected bytes at the end"},
        {"table offset", "table offset 4096"},
        {"reserved header", "reserved header byte 40"},
        {"huge tensor count", "table bytes"},
        {"no tensors", "no tensors"},
        {"data offset", "data offset"},
        {"empty name", "name is empty"},
        {"unterminated name", "not NUL-terminated"},
        {"bad name byte", "byte 0x2f at 1"},
        {"unknown dtype", "unknown dtype code 99"},
        {"unknown storage", "unknown storage code 77"},
        {"reserved storage", "storage bsr_row_ptr is reserved"},
        {"dtype against storage", "dtype i32 does not fit storage csr_values"},
        {"no dimensions", "0 dimensions"},
        {"stray dimension", "dimension 1 is 5"},
        {"count overflows", "overflow"},
        {"byte length", "byte length 44"},
        {"shape product overflows", "product of its shape overflows"},
        {"shape against count", "shape holds 3 elements, count says 1"},
        {"unaligned offset", "not a multiple of 64"},
        {"offset in the table", "inside the header or table"},
        {"offset past the end", "run past the end"},
        {"length past the end", "run past the end"},
        {"overlapping tensors", "overlaps the tensor before it"},
        {"padding not zero", "padding byte"},
        {"duplicate name", "'config' appears twice"},
        {"missing config", "required tensor"},
        {"unknown tensor", "'metax' belongs to no part of the model"},
        {"NUL in config", "NUL byte in the architecture"},
        {"huge layer", "architecture"},
        {"parameter count", "the architecture has"},
        {"wrapping parameter count", "do not fit in a file"},
        {"csr column out of range", "out of range [0, 16)"},
        {"csr 16-bit indices, too many columns", "16-bit column indices for 70000 columns"},
        {"csr first offset", "row_ptr[0] = 1"},
        {"csr offsets count", "row offsets for 12 rows"},
        {"csr without indices", "has no '1.csr.col_idx'"},
        {"structure of a dense layer", "takes no sparsity pattern"},
        {"parameters stored otherwise", "want f32 csr_values"},
        {"parameters missing", "no tensor '3.param'"},
        {"optimizer kind", "optimizer kind 9"},
        {"optimizer state count", "optimizer step"},
        {"negative position", "negative training position"},
        {"input scale", "input_scale"},
    };
    uint8_t *b = malloc(len + 64);
    size_t ncases = sizeof cases / sizeof cases[0];
    CHECK(ncases >= 20);
    for (size_t k = 0; b && k < ncases; k++) {
        memcpy(b, good, len);
        size_t blen = len;
        bool seal = true;
        const char *n = cases[k].name;
        uint8_t *conf = entry(b, len, "config"), *meta = entry(b, len, "meta");
        uint8_t *par = entry(b, len, "1.param"), *rp = entry(b, len, "1.csr.row_ptr");
        uint8_t *ci = entry(b, len, "1.csr.col_idx"), *modl = data_of(b, len, "model");
        uint8_t *scale = entry(b, len, "input_scale");
        if (!strcmp(n, "empty")) blen = 0, seal = false;
        else if (!strcmp(n, "bad magic")) b[0] = 'X', seal = false;
        else if (!strcmp(n, "version 9")) put32(b + 8, 9);
        else if (!strcmp(n, "truncated")) blen = len - 64, seal = false;
        else if (!strcmp(n, "flipped bit")) b[len / 2] ^= 0x04, seal = false;
        else if (!strcmp(n, "bytes appended")) memset(b + len, 0, 64), blen = len + 64;
        else if (!strcmp(n, "table offset")) put64(b + 24, 4096);
        else if (!strcmp(n, "reserved header")) b[40] = 1;
        else if (!strcmp(n, "huge tensor count")) put32(b + 12, 1u << 30);
        else if (!strcmp(n, "no tensors")) put32(b + 12, 0);
        else if (!strcmp(n, "data offset")) put64(b + 32, rd64(b + 32) + 64);
        else if (!strcmp(n, "empty name")) conf[0] = 0;
        else if (!strcmp(n, "unterminated name")) memset(conf, 'a', 56);
        else if (!strcmp(n, "bad name byte")) conf[1] = '/';
        else if (!strcmp(n, "unknown dtype")) put32(par + 56, 99);
        else if (!strcmp(n, "unknown storage")) put32(par + 60, 77);
        else if (!strcmp(n, "reserved storage")) put32(rp + 60, 6);
        else if (!strcmp(n, "dtype against storage")) put32(par + 56, SP_I32);
        else if (!strcmp(n, "no dimensions")) put32(par + 64, 0);
        else if (!strcmp(n, "stray dimension")) put64(par + 80, 5);
        else if (!strcmp(n, "count overflows")) put64(par + 104, (uint64_t)1 << 63);
        else if (!strcmp(n, "byte length")) put64(par + 120, 44);
        else if (!strcmp(n, "shape product overflows")) {
            put32(par + 64, 2);
            put64(par + 72, (uint64_t)1 << 40);
            put64(par + 80, (uint64_t)1 << 40);
        } else if (!strcmp(n, "shape against count")) put64(scale + 72, 3);
        else if (!strcmp(n, "unaligned offset")) put64(par + 112, rd64(par + 112) + 4);
        else if (!strcmp(n, "offset in the table")) put64(conf + 112, 64);
        else if (!strcmp(n, "offset past the end")) put64(meta + 112, (uint64_t)1 << 40);
        else if (!strcmp(n, "length past the end")) {
            put64(meta + 104, (uint64_t)1 << 40);
            put64(meta + 120, (uint64_t)1 << 40);
            put64(meta + 72, (uint64_t)1 << 40);
        } else if (!strcmp(n, "overlapping tensors")) put64(par + 112, rd64(ci + 112));
        else if (!strcmp(n, "padding not zero")) b[rd64(conf + 112) + rd64(conf + 120)] = 1;
        else if (!strcmp(n, "duplicate name")) memcpy(meta, "config\0", 7);
        else if (!strcmp(n, "missing config")) memcpy(conf, "konfig", 6);
        else if (!strcmp(n, "unknown tensor")) memcpy(meta, "metax", 6);
        else if (!strcmp(n, "NUL in config")) b[rd64(conf + 112) + 3] = 0;
        else if (!strcmp(n, "huge layer")) {
            char *c = (char *)b + rd64(conf + 112);
            for (uint64_t q = 0; q + 6 <= rd64(conf + 120); q++)
                if (!memcmp(c + q, "out=12", 6)) {
                    memcpy(c + q, "out=99", 6);
                    break;
                }
        } else if (!strcmp(n, "parameter count")) put64(modl + 40, rd64(modl + 40) + 1);
        else if (!strcmp(n, "wrapping parameter count"))
            put64(modl + 40, rd64(modl + 40) + ((uint64_t)1 << 62));
        else if (!strcmp(n, "csr column out of range")) {
            uint8_t *d = b + rd64(ci + 112);
            d[0] = 16, d[1] = 0; /* u16 */
        } else if (!strcmp(n, "csr 16-bit indices, too many columns")) {
            put64(rp + 80, 70000); /* shape[1] of both: a u16 index cannot reach column 65536 */
            put64(ci + 80, 70000);
        } else if (!strcmp(n, "csr first offset")) put64(b + rd64(rp + 112), 1);
        else if (!strcmp(n, "csr offsets count")) {
            put64(rp + 104, 12); /* 12 offsets for 12 rows: the last one dropped */
            put64(rp + 120, 96);
            memset(b + rd64(rp + 112) + 96, 0, 8);
        } else if (!strcmp(n, "csr without indices")) memcpy(ci, "1.csr.col_idy", 13);
        else if (!strcmp(n, "structure of a dense layer")) {
            memcpy(rp, "3", 1);
            memcpy(ci, "3", 1); /* "3.csr.*": layer 3 is dense; names stay sorted-unique */
        } else if (!strcmp(n, "parameters stored otherwise")) put32(par + 60, 1);
        else if (!strcmp(n, "parameters missing")) memcpy(entry(b, len, "3.param"), "3.parax", 7);
        else if (!strcmp(n, "optimizer kind")) put32(data_of(b, len, "optim"), 9);
        else if (!strcmp(n, "optimizer state count")) put64(data_of(b, len, "optim") + 40, 3);
        else if (!strcmp(n, "negative position")) put64(data_of(b, len, "train"), (uint64_t)-1);
        else if (!strcmp(n, "input scale")) {
            const float neg = -1.0f;
            memcpy(data_of(b, len, "input_scale"), &neg, 4);
        }
        if (seal && blen >= 4) {
            if (blen != len) put64(b + 16, len); /* appended: the header keeps the old length */
            reseal(b, blen);
        }
        sp_checkpoint c = {0};
        CHECK_STATUS(sp_checkpoint_parse(b, blen, &c), SP_EFORMAT);
        CHECK_MSG(strstr(sp_last_error(), cases[k].needle), "%s: %s", n, sp_last_error());
        CHECK(c.model == NULL);
        /* the mapped loader gives the same verdict */
        char path[128];
        tmp_path(path, sizeof path, "bad");
        FILE *fp = fopen(path, "wb");
        if (fp) {
            if (blen) fwrite(b, 1, blen, fp);
            fclose(fp);
            sp_model *mm = NULL;
            sp_status st = sp_model_open(path, &mm);
            CHECK_MSG(st == SP_EFORMAT && mm == NULL, "%s mapped: %s", n, sp_last_error());
            CHECK_MSG(strstr(sp_last_error(), cases[k].needle) && strstr(sp_last_error(), path),
                      "%s mapped: %s", n, sp_last_error());
            sp_model_free(mm);
            unlink(path);
        }
    }
    free(b);
    sp_free(good);
}

/* A model of every storage, with BatchNorm state: mapped and copied loads give the same outputs
 * bit for bit as the model that was saved; the mapped one uses its parameters, state and CSR
 * structure in place and refuses training. */
TEST(format_mapped_model_runs_in_place_like_the_copy) {
    const char *cfg = "conv2d out=2 k=3 pad=1\nbatchnorm\nrelu\nflatten\n"
                      "linear out=12 format=csr density=0.3\nrelu\n"
                      "linear out=8 format=bsr density=0.5 block=2x2\ntanh\n"
                      "linear out=8 format=nm nm=2:4\nrelu\n"
                      "linear out=classes format=mask density=0.5\n";
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(cfg, (sp_shape){1, 4, 4}, 4, 5, &m));
    if (!m) return;
    for (int64_t k = 0; k < sp_model_nparams(m); k++) sp_model_params(m)[k] += 0.001f * (float)k;
    for (int64_t k = 0; k < sp_model_nbuffers(m); k++)
        sp_model_buffers(m)[k] += 0.01f * (float)(k % 3);
    char path[128];
    tmp_path(path, sizeof path, "mapped");
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    sp_model *mm = NULL;
    sp_model_file_info info;
    CHECK_OK(sp_model_open_info(path, &mm, &info));
    sp_checkpoint c = {0};
    CHECK_OK(sp_checkpoint_load(path, &c));
    if (mm && c.model) {
        CHECK(sp_model_is_mapped(mm) && !sp_model_is_mapped(c.model) && info.mapped);
        CHECK_EQ(info.version, 2);
        CHECK(info.in_place_bytes > 0 && info.in_place_bytes <= info.weight_bytes);
        /* parameters (4 per float) and state are all in place; only the masks are copied */
        CHECK(info.in_place_bytes >= 4 * (uint64_t)(sp_model_nparams(m) + sp_model_nbuffers(m)));
        CHECK(sp_model_params(mm) == NULL && sp_model_grads(mm) == NULL);
        CHECK_EQ(sp_model_nparams(mm), sp_model_nparams(m));
        const sp_csr *cm = sp_model_layer_csr(mm, 4), *cc = sp_model_layer_csr(c.model, 4);
        CHECK(cm && cm->borrowed && cc && !cc->borrowed);
        if (cm && cc) {
            CHECK(cm->nnz == cc->nnz && memcmp(cm->row_ptr, cc->row_ptr, 8 * (size_t)(cm->rows + 1)) == 0);
            CHECK((uintptr_t)cm->row_ptr % 64 == 0 && cm->panels == NULL);
        }
        CHECK_EQ(sp_model_nnz(mm), sp_model_nnz(m));
        float x[16 * 3];
        for (int i = 0; i < 48; i++) x[i] = 0.05f * (float)(i % 11) - 0.2f;
        const float *ya, *yb, *yc;
        CHECK_OK(sp_model_forward(m, x, 3, false, &ya));
        CHECK_OK(sp_model_forward(mm, x, 3, false, &yb));
        CHECK_OK(sp_model_forward(c.model, x, 3, false, &yc));
        CHECK(memcmp(ya, yb, sizeof(float) * 12) == 0 && memcmp(ya, yc, sizeof(float) * 12) == 0);
        /* a wide batch (the batched CSR path) is the same too */
        float *xw = calloc(16 * 64, sizeof(float));
        const float *wa = NULL, *wb = NULL;
        for (int i = 0; xw && i < 16 * 64; i++) xw[i] = 0.01f * (float)(i % 17);
        if (xw) {
            CHECK_OK(sp_model_forward(m, xw, 64, false, &wa));
            CHECK_OK(sp_model_forward(mm, xw, 64, false, &wb));
            CHECK(wa && wb && memcmp(wa, wb, sizeof(float) * 4 * 64) == 0);
        }
        free(xw);
        /* training and weight changes are refused, clearly */
        CHECK_STATUS(sp_model_forward(mm, x, 3, true, &yb), SP_EINVAL);
        CHECK(strstr(sp_last_error(), "evaluation mode only"));
        CHECK_OK(sp_model_forward(mm, x, 3, false, &yb));
        float dy[12] = {0};
        CHECK_STATUS(sp_model_backward(mm, dy, NULL), SP_EINVAL);
        CHECK(strstr(sp_last_error(), "no gradients"));
        float w[12 * 32] = {0};
        CHECK_STATUS(sp_model_layer_set_weight(mm, 4, w, NULL), SP_EINVAL);
        sp_model_zero_grad(mm); /* nothing to zero: no crash */
        CHECK_OK(sp_model_check_grads(mm));
        /* the copied one trains */
        CHECK_OK(sp_model_forward(c.model, x, 3, true, &yc));
    }
    sp_model_free(mm);
    sp_checkpoint_free(&c);
    unlink(path);
    sp_model_free(m);
}

/* Version-1 files load through both loaders (copied: they have no aligned tensors). */
TEST(format_v1_files_still_load) {
    sp_model *mm = NULL;
    sp_model_file_info info;
    CHECK_OK(sp_model_open_info(V1_FIXTURE("csr.sparrow"), &mm, &info));
    CHECK(mm && !sp_model_is_mapped(mm) && info.version == 1 && !info.mapped &&
          info.in_place_bytes == 0);
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("flatten\nlinear out=3 format=csr density=0.4375\nrelu\n"
                          "linear out=classes\n", (sp_shape){1, 4, 4}, 4, 5, &m));
    if (m && mm) {
        CHECK(memcmp(sp_model_params(m), sp_model_params(mm),
                     4 * (size_t)sp_model_nparams(m)) == 0);
        /* and saved again, it is version 2 and maps */
        char path[128];
        tmp_path(path, sizeof path, "v1tov2");
        CHECK_OK(sp_checkpoint_save(path, mm, NULL, NULL, NULL));
        sp_model *m2 = NULL;
        CHECK_OK(sp_model_open_info(path, &m2, &info));
        CHECK(m2 && sp_model_is_mapped(m2) && info.version == 2);
        sp_model_free(m2);
        unlink(path);
    }
    sp_model_free(m);
    sp_model_free(mm);
    CHECK_STATUS(sp_model_open("/nonexistent/x.sparrow", &mm), SP_EIO);
    CHECK(strstr(sp_last_error(), "/nonexistent/x.sparrow") != NULL);
}

/* The same model and settings write the same bytes (no time stamps, padding zeroed). */
TEST(format_same_model_same_bytes) {
    size_t la, lb;
    uint8_t *a = catalogue_file(&la), *b = catalogue_file(&lb);
    CHECK(a && b && la == lb && memcmp(a, b, la) == 0);
    sp_free(a);
    sp_free(b);
}

/* The fuzz corpus (fuzz/corpus/checkpoint/, made by fuzz/make_checkpoint_corpus.c) replayed
 * through both loaders: each seed parses cleanly (a valid file), nothing crashes or leaks. */
TEST(format_fuzz_corpus_replays) {
    const char *dir = SPARROW_SOURCE_DIR "/fuzz/corpus/checkpoint";
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "%s missing", dir);
    if (!d) return;
    int files = 0, v1 = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len;
        uint8_t *b = slurp(path, &len);
        CHECK_MSG(b != NULL, "%s unreadable", e->d_name);
        if (!b) continue;
        v1 += len >= 12 && rd32(b + 8) == 1;
        sp_checkpoint c = {0};
        sp_status st = sp_checkpoint_parse(b, len, &c);
        CHECK_MSG(st == SP_OK, "%s: %s", e->d_name, sp_last_error());
        sp_checkpoint_free(&c);
        sp_model *mm = NULL;
        st = sp_model_open(path, &mm);
        CHECK_MSG(st == SP_OK, "%s mapped: %s", e->d_name, sp_last_error());
        if (mm) {
            const sp_shape in = sp_model_in(mm);
            const int64_t nin = in.c * in.h * in.w;
            float *x = calloc((size_t)nin, sizeof(float));
            const float *y;
            if (x && sp_model_vocab(mm, NULL) == NULL) CHECK_OK(sp_model_forward(mm, x, 1, false, &y));
            free(x);
        }
        sp_model_free(mm);
        sp_free(b);
        files++;
    }
    closedir(d);
    CHECK_MSG(files >= 4, "only %d seeds", files);
    CHECK_MSG(v1 >= 1 && v1 < files, "%d of %d seeds are version 1 (want one at least, and v2 ones)",
              v1, files);
}

/* A quantized model (qlinear layers: tensors kept outside the arenas, saved as "N.q.NAME" through
 * the layer hooks ntensors / get_tensor / load_tensors) round-trips through the file: copied and
 * mapped (borrow = true: the int8 / 4-bit arrays used in place) it gives the quantized model's
 * outputs bit for bit. A corrupt layer tensor fails with the layer's own check. */
TEST(format_quantized_model_round_trips_through_the_layer_hooks) {
    sp_model *m = NULL;
    CHECK_OK(sp_model_new("flatten\nlinear out=24 format=csr density=0.3\nrelu\n"
                          "linear out=16\nrelu\nlinear out=classes\n",
                          (sp_shape){1, 4, 4}, 4, 11, &m));
    if (!m) return;
    for (int bits = 8; bits >= 4; bits -= 4) {
        sp_quant_opts o = {.bits = bits, .nthreads = 1};
        sp_model *qm = NULL;
        CHECK_OK(sp_model_quantize(m, &o, &qm));
        if (!qm) break;
        char path[128];
        tmp_path(path, sizeof path, "quant");
        CHECK_OK(sp_checkpoint_save(path, qm, NULL, NULL, NULL));
        size_t len;
        uint8_t *b = slurp(path, &len);
        CHECK(b && entry(b, len, "1.q.val") && entry(b, len, "1.q.row_ptr") &&
              entry(b, len, "5.q.bias") && entry(b, len, "5.q.act_scale"));
        CHECK(b && !entry(b, len, "1.mask") && !entry(b, len, "1.param"));
        CHECK(b && rd32(entry(b, len, "1.q.val") + 60) == 11); /* storage "layer" */
        sp_model *mm = NULL;
        sp_model_file_info info;
        CHECK_OK(sp_model_open_info(path, &mm, &info));
        sp_checkpoint c = {0};
        CHECK_OK(sp_checkpoint_load(path, &c));
        if (mm && c.model) {
            CHECK(info.mapped && info.in_place_bytes == info.weight_bytes && info.weight_bytes > 0);
            float x[16 * 5];
            for (int i = 0; i < 80; i++) x[i] = 0.07f * (float)(i % 13) - 0.3f;
            const float *ya, *yb, *yc;
            sp_model_set_threads(qm, 1);
            sp_model_set_threads(mm, 1);
            sp_model_set_threads(c.model, 1);
            CHECK_OK(sp_model_forward(qm, x, 5, false, &ya));
            CHECK_OK(sp_model_forward(mm, x, 5, false, &yb));
            CHECK_OK(sp_model_forward(c.model, x, 5, false, &yc));
            CHECK_MSG(memcmp(ya, yb, sizeof(float) * 20) == 0 &&
                      memcmp(ya, yc, sizeof(float) * 20) == 0, "bits %d", bits);
            CHECK_EQ(sp_model_nnz(mm), sp_model_nnz(qm));
        }
        sp_model_free(mm);
        sp_checkpoint_free(&c);
        /* a layer tensor the layer refuses: act_scale negative; and one of the wrong dtype */
        if (b) {
            const float neg = -2.0f;
            memcpy(data_of(b, len, "5.q.act_scale"), &neg, 4);
            reseal(b, len);
            sp_checkpoint bad = {0};
            CHECK_STATUS(sp_checkpoint_parse(b, len, &bad), SP_EFORMAT);
            CHECK_MSG(strstr(sp_last_error(), "act_scale -2 is not a finite value"), "%s",
                      sp_last_error());
            const float one = 1.0f;
            memcpy(data_of(b, len, "5.q.act_scale"), &one, 4);
            put32(entry(b, len, "1.q.scale") + 56, SP_I32);
            reseal(b, len);
            CHECK_STATUS(sp_checkpoint_parse(b, len, &bad), SP_EFORMAT);
            CHECK_MSG(strstr(sp_last_error(), "'1.q.scale' is i32 layer, want f32 layer"), "%s",
                      sp_last_error());
        }
        sp_free(b);
        unlink(path);
        sp_model_free(qm);
    }
    sp_model_free(m);
}
