/*
 * test_safetensors.c - the safetensors parser and writer (src/io/safetensors.c) and PyTorch
 * nn.Sequential import/export (src/io/safetensors_model.c): a catalogue of malformed files each
 * with its own error, round trips, the fuzz corpus replayed, and the PyTorch-trained MLP of
 * tests/golden/safetensors/ (scripts/make_safetensors_fixtures.py) giving PyTorch's prediction
 * on every Fashion-MNIST test image.
 */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"

#define GOLDEN SPARROW_SOURCE_DIR "/tests/golden/safetensors/"

/* A file: u64 header size, the header text, then data_len bytes of data (0, 1, 2, ...). */
static uint8_t *make_file(const char *header, size_t data_len, size_t *len) {
    size_t n = strlen(header);
    *len = 8 + n + data_len;
    uint8_t *b = malloc(*len);
    for (int k = 0; k < 8; k++) b[k] = (uint8_t)((uint64_t)n >> (8 * k));
    memcpy(b + 8, header, n);
    for (size_t i = 0; i < data_len; i++) b[8 + n + i] = (uint8_t)i;
    return b;
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/sparrow_st_%d_%s", (int)getpid(), name);
}

#define T1 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

TEST(safetensors_parses_a_valid_file) {
    size_t len;
    uint8_t *b = make_file("{\"__metadata__\":{\"format\":\"pt\",\"k\\u00e9\":\"v\\\"\\n\"},"
                           "\"w\":{\"dtype\":\"F16\",\"shape\":[2,1],\"data_offsets\":[8,12]},"
                           "\"\\ud83d\\ude00\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                           "\"e\":{\"dtype\":\"BF16\",\"shape\":[0,3],\"data_offsets\":[12,12]},"
                           "\"bf\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[12,16]}}   ",
                           16, &len);
    uint8_t *d = b + len - 16;
    const uint16_t h[2] = {0x3C00, 0x8001}; /* 1.0 and the smallest negative subnormal */
    memcpy(d + 8, h, 4);
    const uint16_t bf[2] = {0x4049, 0xC000}; /* 3.140625, -2 */
    memcpy(d + 12, bf, 4);
    int64_t seven = 7;
    memcpy(d, &seven, 8);
    sp_safetensors *st = NULL;
    CHECK_OK(sp_safetensors_parse(b, len, &st));
    if (st) {
        CHECK_EQ(sp_safetensors_count(st), 4);
        CHECK(!strcmp(sp_safetensors_meta(st, "format"), "pt"));
        CHECK(!strcmp(sp_safetensors_meta(st, "k\xc3\xa9"), "v\"\n"));
        CHECK(sp_safetensors_meta(st, "nope") == NULL);
        CHECK_EQ(sp_safetensors_meta_count(st), 2);
        const sp_safetensors_tensor *w = sp_safetensors_find(st, "w");
        CHECK(w && w->dtype == SP_ST_F16 && w->rank == 2 && w->shape[0] == 2 && w->numel == 2);
        float f[2];
        if (w) CHECK_OK(sp_safetensors_read_f32(w, f, 2));
        CHECK(f[0] == 1.0f && f[1] == -ldexpf(1.0f, -24));
        const sp_safetensors_tensor *bft = sp_safetensors_find(st, "bf");
        if (bft) CHECK_OK(sp_safetensors_read_f32(bft, f, 2));
        CHECK(f[0] == 3.140625f && f[1] == -2.0f);
        const sp_safetensors_tensor *s = sp_safetensors_find(st, "\xf0\x9f\x98\x80");
        int64_t v = 0;
        CHECK(s && s->rank == 0 && s->numel == 1);
        if (s) CHECK_OK(sp_safetensors_read_i64(s, &v, 1));
        CHECK_EQ(v, 7);
        if (s) CHECK_STATUS(sp_safetensors_read_f32(s, f, 1), SP_EUNSUPPORTED);
        const sp_safetensors_tensor *e = sp_safetensors_find(st, "e");
        CHECK(e && e->numel == 0 && e->nbytes == 0);
        if (w) CHECK_STATUS(sp_safetensors_read_f32(w, f, 1), SP_ESHAPE);
        /* names in strcmp order */
        for (int64_t i = 1; i < sp_safetensors_count(st); i++)
            CHECK(strcmp(sp_safetensors_at(st, i - 1)->name, sp_safetensors_at(st, i)->name) < 0);
        CHECK(sp_safetensors_at(st, 4) == NULL);
    }
    sp_safetensors_free(st);
    /* an empty file with no tensors is valid */
    free(b);
    b = make_file("{}", 0, &len);
    CHECK_OK(sp_safetensors_parse(b, len, &st));
    CHECK_EQ(sp_safetensors_count(st), 0);
    sp_safetensors_free(st);
    free(b);
}

/* Headers that would make the parser build far more JSON values than a safetensors header
 * holds fail early: an array longer than a shape or an offset pair can be, and a header packed
 * with tiny values (here 2000 empty metadata strings, 7 bytes each), so that a hostile header
 * cannot cost many times its size in parse nodes. */
TEST(safetensors_bounds_the_json_it_parses) {
    size_t len;
    sp_safetensors *st = NULL;
    uint8_t *b = make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"
                           "\"data_offsets\":[0,4]}}", 4, &len);
    CHECK_STATUS(sp_safetensors_parse(b, len, &st), SP_EFORMAT);
    CHECK_MSG(strstr(sp_last_error(), "an array of more than 16 values") != NULL, "%s",
              sp_last_error());
    free(b);
    const int n = 2000;
    char *h = malloc(32 + 7 * (size_t)n);
    if (!h) return;
    size_t k = (size_t)sprintf(h, "{\"__metadata__\":{");
    for (int i = 0; i < n; i++) k += (size_t)sprintf(h + k, "%s\"\":\"\"", i ? "," : "");
    sprintf(h + k, "}}");
    b = make_file(h, 0, &len);
    CHECK_STATUS(sp_safetensors_parse(b, len, &st), SP_EFORMAT);
    CHECK_MSG(strstr(sp_last_error(), "JSON values in a") != NULL, "%s", sp_last_error());
    CHECK(st == NULL);
    free(b);
    free(h);
}

/* The catalogue: each malformed file fails with its own status and message. */
TEST(safetensors_rejects_malformed_files) {
    static const struct {
        const char *name, *header;
        size_t data;
        sp_status want;
        const char *needle;
    } cases[] = {
        {"header not JSON", "{not json}", 0, SP_EFORMAT, "byte 1: expected a quoted key"},
        {"trailing garbage after the JSON", T1 "} x", 8, SP_EFORMAT,
         "unexpected bytes after the JSON object"},
        {"top level not an object", "[1,2]", 0, SP_EFORMAT, "does not start with '{'"},
        {"JSON ends early", "{\"a\":", 0, SP_EFORMAT, "the JSON ends early"},
        {"missing dtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, SP_EFORMAT,
         "tensor 'a' has no dtype"},
        {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, SP_EFORMAT,
         "tensor 'a' has no shape"},
        {"missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, SP_EFORMAT,
         "tensor 'a' has no data_offsets"},
        {"unknown field", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":\"y\"}}",
         8, SP_EFORMAT, "unknown field 'x'"},
        {"field given twice",
         "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         SP_EFORMAT, "gives 'dtype' twice"},
        {"unknown dtype", "{\"a\":{\"dtype\":\"F99\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         SP_EUNSUPPORTED, "dtype 'F99' is not supported"},
        {"dtype not a string", "{\"a\":{\"dtype\":[],\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         SP_EFORMAT, "dtype is not a string"},
        {"negative shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
         SP_EFORMAT, "negative number"},
        {"fractional shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}",
         8, SP_EFORMAT, "fractional or exponent number"},
        {"exponent shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}",
         8, SP_EFORMAT, "fractional or exponent number"},
        {"leading zero", "{\"a\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", 8,
         SP_EFORMAT, "leading zero"},
        {"huge shape number",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}", 8,
         SP_EOVERFLOW, "does not fit in 64 bits"},
        {"shape above int64",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775808],\"data_offsets\":[0,8]}}", 8,
         SP_EOVERFLOW, "shape[0] = 9223372036854775808"},
        {"shape product overflow",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8,
         SP_EOVERFLOW, "shape[1] = 4294967296 makes the element count overflow"},
        {"byte size overflow",
         "{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8,
         SP_EOVERFLOW, "elements of F64 overflow"},
        {"shape not an array", "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
         SP_EFORMAT, "shape is not an array"},
        {"shape entry not an integer",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, SP_EFORMAT,
         "shape[0] is not an integer"},
        {"rank above 8",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
         SP_EUNSUPPORTED, "rank 9 exceeds 8"},
        {"offsets past the end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
         8, SP_EFORMAT, "end 16 is past the 8 bytes of data"},
        {"begin > end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
         SP_EFORMAT, "begin 8 > end 0"},
        {"offsets not a pair", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
         SP_EFORMAT, "data_offsets is not [begin, end]"},
        {"size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
         SP_EFORMAT, "hold 8 bytes, shape and dtype F32 need 12"},
        {"overlap", T1 ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
         SP_EFORMAT, "tensors 'a' [0, 8) and 'b' [4, 12) overlap"},
        {"same range twice", T1 ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         8, SP_EFORMAT, "overlap"},
        {"hole", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12,
         SP_EFORMAT, "data bytes [4, 8) before tensor 'b' belong to no tensor"},
        {"hole at the start", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, SP_EFORMAT, "data bytes [0, 4) before tensor 'a'"},
        {"bytes after the last tensor", T1 "}", 12, SP_EFORMAT,
         "data bytes [8, 12) after the last tensor"},
        {"duplicate names", T1 ",\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}",
         8, SP_EFORMAT, "duplicate tensor name 'a'"},
        {"bad UTF-8 in a name", "{\"\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         8, SP_EFORMAT, "byte 2: invalid UTF-8 (byte 0xff)"},
        {"overlong UTF-8", "{\"\xc0\xaf\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         8, SP_EFORMAT, "invalid UTF-8 (byte 0xc0)"},
        {"UTF-8 surrogate", "{\"\xed\xa0\x80\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         8, SP_EFORMAT, "invalid UTF-8 (byte 0xed)"},
        {"bad escape", "{\"a\\q\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         SP_EFORMAT, "bad escape '\\q'"},
        {"short \\u escape", "{\"a\\u12\":{}}", 0, SP_EFORMAT, "\\u needs four hex digits"},
        {"lone low surrogate", "{\"\\udc00\":{}}", 0, SP_EFORMAT, "lone low surrogate \\uDC00"},
        {"unpaired high surrogate", "{\"\\ud800x\":{}}", 0, SP_EFORMAT,
         "high surrogate \\uD800 is not followed by a low one"},
        {"NUL in a name", "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
         8, SP_EFORMAT, "holds a NUL character"},
        {"control character in a string", "{\"a\tb\":{}}", 0, SP_EFORMAT,
         "control character 0x09"},
        {"string not closed", "{\"abc", 0, SP_EFORMAT, "string not closed"},
        {"literal true", "{\"a\":true}", 0, SP_EFORMAT, "unexpected 't'"},
        {"tensor entry not an object", "{\"a\":5}", 0, SP_EFORMAT, "tensor 'a' (header byte 5) is not an object"},
        {"metadata not an object", "{\"__metadata__\":[\"x\"]}", 0, SP_EFORMAT,
         "__metadata__ is not an object of strings"},
        {"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 0, SP_EFORMAT,
         "__metadata__ value of 'k' (header byte 21) is not a string"},
        {"metadata key twice", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, SP_EFORMAT,
         "__metadata__ key 'k' appears twice"},
        {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, SP_EFORMAT,
         "__metadata__ appears twice"},
        {"metadata value with NUL", "{\"__metadata__\":{\"k\":\"a\\u0000\"}}", 0, SP_EFORMAT,
         "holds a NUL character"},
        {"too deep nesting", "{\"__metadata__\":{\"k\":[[[[[[[[[[]]]]]]]]]]}}", 0, SP_EFORMAT,
         "nesting deeper than 8"},
        {"missing comma", "{\"a\":{\"dtype\":\"F32\" \"shape\":[2]}}", 0, SP_EFORMAT,
         "expected ',' or '}'"},
        {"missing colon", "{\"a\" {}}", 0, SP_EFORMAT, "byte 5: expected ':'"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t len;
        uint8_t *b = make_file(cases[k].header, cases[k].data, &len);
        sp_safetensors *st = (sp_safetensors *)1;
        sp_clear_error();
        sp_status got = sp_safetensors_parse(b, len, &st);
        CHECK_MSG(got == cases[k].want, "%s: got %s, want %s (%s)", cases[k].name,
                  sp_status_name(got), sp_status_name(cases[k].want), sp_last_error());
        CHECK_MSG(strstr(sp_last_error(), cases[k].needle), "%s: message '%s' lacks '%s'",
                  cases[k].name, sp_last_error(), cases[k].needle);
        CHECK_MSG(st == NULL, "%s: *out not NULL on error", cases[k].name);
        if (got == SP_OK) sp_safetensors_free(st);
        free(b);
    }
    /* the size field itself */
    sp_safetensors *st = NULL;
    const uint8_t five[5] = {1, 0, 0, 0, 0};
    CHECK_STATUS(sp_safetensors_parse(five, 5, &st), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "5 bytes: shorter than the 8-byte header size"));
    uint8_t past[16] = {0xe8, 0x03}; /* 1000 */
    memcpy(past + 8, "{}      ", 8);
    CHECK_STATUS(sp_safetensors_parse(past, 16, &st), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "header size 1000 runs past the end of the 16-byte file"));
    uint8_t cap[16] = {0x00, 0xc2, 0xeb, 0x0b}; /* 200,000,000 */
    CHECK_STATUS(sp_safetensors_parse(cap, 16, &st), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "header size 200000000 exceeds the limit of 100000000 bytes"));
    uint8_t huge[16] = {0, 0, 0, 0, 0, 0, 0, 0x80};
    CHECK_STATUS(sp_safetensors_parse(huge, 16, &st), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "exceeds the limit"));
    uint8_t zero[8] = {0};
    CHECK_STATUS(sp_safetensors_parse(zero, 8, &st), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "does not start with '{'"));
    CHECK(st == NULL);
    CHECK_STATUS(sp_safetensors_load("/nonexistent/x.safetensors", &st), SP_EIO);
}

/* Every allocation of a parse may fail: the error is SP_ENOMEM and nothing leaks. */
TEST(safetensors_parse_survives_allocation_failures) {
    size_t len;
    uint8_t *b = make_file("{\"__metadata__\":{\"a\":\"b\"}," "\"x\":{\"dtype\":\"F32\",\"shape\":[2],"
                           "\"data_offsets\":[0,8]}}", 8, &len);
    int64_t live = sp_alloc_live();
    bool ok = false;
    for (int n = 1; n < 50 && !ok; n++) {
        sp_safetensors *st = NULL;
        sp_alloc_fail_after(n);
        sp_status s = sp_safetensors_parse(b, len, &st);
        sp_alloc_fail_after(0);
        CHECK(s == SP_OK || s == SP_ENOMEM);
        ok = s == SP_OK;
        sp_safetensors_free(st);
        CHECK_EQ(sp_alloc_live(), live);
    }
    CHECK(ok);
    free(b);
}

TEST(safetensors_writer_round_trips) {
    sp_safetensors_builder *b = NULL;
    CHECK_OK(sp_safetensors_builder_new(&b));
    if (!b) return;
    const float w[6] = {1, -2, 3.5f, 0, 1e-30f, -0.0f};
    const int64_t ws[2] = {2, 3}, one = 1;
    const int64_t idx[3] = {0, 5, 1LL << 40};
    const int64_t is[1] = {3};
    const uint8_t u = 200;
    CHECK_OK(sp_safetensors_builder_add(b, "z.weight", SP_ST_F32, 2, ws, w));
    CHECK_OK(sp_safetensors_builder_add(b, "a \"quoted\"\\name\n", SP_ST_U8, 1, &one, &u));
    CHECK_OK(sp_safetensors_builder_add(b, "idx", SP_ST_I64, 1, is, idx));
    CHECK_OK(sp_safetensors_builder_meta(b, "format", "pt"));
    CHECK_OK(sp_safetensors_builder_meta(b, "text", "line 1\nline \"2\" \\"));
    CHECK_STATUS(sp_safetensors_builder_add(b, "idx", SP_ST_I64, 1, is, idx), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "tensor 'idx' added twice"));
    CHECK_STATUS(sp_safetensors_builder_add(b, "__metadata__", SP_ST_I64, 1, is, idx), SP_EINVAL);
    CHECK_STATUS(sp_safetensors_builder_add(b, "bad\xff", SP_ST_I64, 1, is, idx), SP_EINVAL);
    CHECK_STATUS(sp_safetensors_builder_meta(b, "format", "x"), SP_EINVAL);
    char path[128];
    tmp_path(path, sizeof path, "rt.safetensors");
    CHECK_OK(sp_safetensors_write(b, path));
    CHECK_STATUS(sp_safetensors_write(b, "/nonexistent/dir/x.safetensors"), SP_EIO);
    sp_safetensors_builder_free(b);
    sp_safetensors *st = NULL;
    CHECK_OK(sp_safetensors_load(path, &st));
    if (st) {
        CHECK_EQ(sp_safetensors_count(st), 3);
        const sp_safetensors_tensor *t = sp_safetensors_find(st, "z.weight");
        float got[6];
        CHECK(t && t->dtype == SP_ST_F32 && t->rank == 2 && t->shape[1] == 3);
        if (t) CHECK_OK(sp_safetensors_read_f32(t, got, 6));
        CHECK(!memcmp(got, w, sizeof w));
        const sp_safetensors_tensor *i = sp_safetensors_find(st, "idx");
        int64_t gi[3];
        if (i) CHECK_OK(sp_safetensors_read_i64(i, gi, 3));
        CHECK(i && gi[2] == (1LL << 40) && gi[1] == 5);
        /* largest elements first, then by name: idx (I64) at 0, z.weight at 24, the U8 last */
        CHECK(i && i->begin == 0 && t && t->begin == 24);
        const sp_safetensors_tensor *q = sp_safetensors_find(st, "a \"quoted\"\\name\n");
        CHECK(q && q->begin == 48 && q->data[0] == 200);
        CHECK(!strcmp(sp_safetensors_meta(st, "text"), "line 1\nline \"2\" \\"));
    }
    sp_safetensors_free(st);
    /* the header is padded with spaces so that the data starts at a multiple of 8 */
    FILE *f = fopen(path, "rb");
    uint8_t head[8] = {0};
    CHECK(f && fread(head, 1, 8, f) == 8);
    if (f) fclose(f);
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--) n = n << 8 | head[k];
    CHECK_EQ(n % 8, 0);
    unlink(path);
}

/* ---- nn.Sequential import and export --------------------------------------------------------- */

#define TINY "flatten\nlinear out=3\nrelu\nlinear out=classes\n"

/* Writes a file of (name, rank, shape) F32 tensors filled with 0.01 * i and returns its path. */
typedef struct spec {
    const char *name;
    int rank;
    int64_t shape[4];
} spec;
static sp_safetensors *tiny_file(const spec *s, int n) {
    sp_safetensors_builder *b = NULL;
    if (sp_safetensors_builder_new(&b) != SP_OK) return NULL;
    for (int k = 0; k < n; k++) {
        int64_t e = 1;
        for (int r = 0; r < s[k].rank; r++) e *= s[k].shape[r];
        float *v = malloc(sizeof(float) * (size_t)(e + 1));
        for (int64_t i = 0; i < e; i++) v[i] = 0.01f * (float)(i + 1) * (k % 2 ? -1.0f : 1.0f);
        sp_safetensors_builder_add(b, s[k].name, SP_ST_F32, s[k].rank, s[k].shape, v);
        free(v);
    }
    char path[128];
    tmp_path(path, sizeof path, "tiny.safetensors");
    sp_safetensors *st = NULL;
    if (sp_safetensors_write(b, path) == SP_OK) sp_safetensors_load(path, &st);
    unlink(path);
    sp_safetensors_builder_free(b);
    return st;
}

TEST(safetensors_import_maps_sequential_keys) {
    const spec good[] = {{"1.weight", 2, {3, 4}}, {"1.bias", 1, {3}}, {"3.weight", 2, {2, 3}},
                         {"3.bias", 1, {2}}};
    sp_safetensors *st = tiny_file(good, 4);
    CHECK(st != NULL);
    sp_model *m = NULL;
    CHECK_OK(sp_model_import_safetensors(st, TINY, (sp_shape){1, 2, 2}, 2, 1, &m));
    if (m) {
        float w[12], b[3];
        CHECK_OK(sp_model_layer_get_weight(m, 1, w, b));
        CHECK(w[0] == 0.01f && w[11] == 0.12f && b[2] == -0.03f);
        CHECK_OK(sp_model_layer_get_weight(m, 3, w, b));
        CHECK(w[5] == 0.01f * 6 && b[0] == -0.01f);
    }
    sp_model_free(m);
    /* indices need not match sparrow's positions: the layers with parameters take them in order */
    const spec shifted[] = {{"0.weight", 2, {3, 4}}, {"0.bias", 1, {3}}, {"10.weight", 2, {2, 3}},
                            {"10.bias", 1, {2}}};
    sp_safetensors *st2 = tiny_file(shifted, 4);
    m = NULL;
    CHECK_OK(sp_model_import_safetensors(st2, TINY, (sp_shape){1, 2, 2}, 2, 1, &m));
    if (m) {
        float w[6];
        CHECK_OK(sp_model_layer_get_weight(m, 3, w, NULL));
        CHECK(w[0] == 0.01f); /* "10" after "0", numerically (strcmp puts it before "2") */
    }
    sp_model_free(m);
    sp_safetensors_free(st2);
    sp_safetensors_free(st);
}

TEST(safetensors_import_rejects_mismatches) {
    static const struct {
        const char *name;
        spec t[5];
        int n;
        const char *config;
        sp_status want;
        const char *needle;
    } cases[] = {
        {"transposed weight", {{"1.weight", 2, {4, 3}}, {"1.bias", 1, {3}}, {"3.weight", 2, {2, 3}},
                               {"3.bias", 1, {2}}}, 4, TINY, SP_ESHAPE,
         "key '1.weight': expected shape [3, 4], found [4, 3]"},
        {"bias of the wrong size", {{"1.weight", 2, {3, 4}}, {"1.bias", 1, {2}},
                                    {"3.weight", 2, {2, 3}}, {"3.bias", 1, {2}}}, 4, TINY,
         SP_ESHAPE, "key '1.bias': expected shape [3], found [2]"},
        {"missing bias", {{"1.weight", 2, {3, 4}}, {"3.weight", 2, {2, 3}}, {"3.bias", 1, {2}}}, 3,
         TINY, SP_EFORMAT, "missing key '1.bias' (for sparrow layer 1.linear)"},
        {"missing module", {{"1.weight", 2, {3, 4}}, {"1.bias", 1, {3}}}, 2, TINY, SP_EFORMAT,
         "missing keys: sparrow layer 3.linear has no module"},
        {"leftover module", {{"1.weight", 2, {3, 4}}, {"1.bias", 1, {3}}, {"3.weight", 2, {2, 3}},
                             {"3.bias", 1, {2}}, {"5.weight", 1, {2}}}, 5, TINY, SP_EFORMAT,
         "leftover keys: module 5"},
        {"leftover key", {{"1.weight", 2, {3, 4}}, {"1.bias", 1, {3}}, {"1.gamma", 1, {3}},
                          {"3.weight", 2, {2, 3}}, {"3.bias", 1, {2}}}, 5, TINY, SP_EFORMAT,
         "leftover key '1.gamma': not a parameter of sparrow layer 1.linear"},
        {"bias for a layer without one", {{"1.weight", 2, {3, 4}}, {"1.bias", 1, {3}},
                                          {"3.weight", 2, {2, 3}}, {"3.bias", 1, {2}}}, 4,
         "flatten\nlinear out=3 bias=0\nrelu\nlinear out=classes\n", SP_EFORMAT,
         "leftover key '1.bias'"},
        {"not nn.Sequential", {{"fc1.weight", 2, {3, 4}}}, 1, TINY, SP_EFORMAT,
         "key 'fc1.weight' is not an nn.Sequential key: expected '<index>.<param>'"},
        {"leading zero index", {{"01.weight", 2, {3, 4}}}, 1, TINY, SP_EFORMAT,
         "key '01.weight' is not an nn.Sequential key"},
        {"nested model", {{"0.weight", 2, {4, 4}}}, 1, "flatten\nresidual {\n linear out=4\n}\n"
         "linear out=classes\n", SP_EUNSUPPORTED, "nested models are not imported"},
        {"layer kind without a mapping", {{"0.weight", 2, {4, 4}}}, 1,
         "embedding vocab=10 dim=4\nflatten\nlinear out=classes\n", SP_EUNSUPPORTED,
         "only linear, conv2d, batchnorm and layernorm"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        sp_safetensors *st = tiny_file(cases[k].t, cases[k].n);
        CHECK_MSG(st != NULL, "%s: no file", cases[k].name);
        sp_model *m = (sp_model *)1;
        sp_clear_error();
        sp_status got = st ? sp_model_import_safetensors(st, cases[k].config, (sp_shape){1, 2, 2},
                                                          2, 1, &m) : SP_EINVAL;
        CHECK_MSG(got == cases[k].want, "%s: got %s, want %s (%s)", cases[k].name,
                  sp_status_name(got), sp_status_name(cases[k].want), sp_last_error());
        CHECK_MSG(strstr(sp_last_error(), cases[k].needle), "%s: message '%s' lacks '%s'",
                  cases[k].name, sp_last_error(), cases[k].needle);
        if (got == SP_OK) sp_model_free(m);
        else CHECK_MSG(m == NULL, "%s: *out not NULL", cases[k].name);
        sp_safetensors_free(st);
    }
}

/* Runs m and n on the same batch and checks their outputs: bitwise equal when both run the
 * same kernels (same storage), else within the f32 tolerance (a CSR product and a dense GEMM add
 * the same terms in different orders). */
static void same_outputs(sp_model *m, sp_model *n, int64_t features, bool bitwise,
                         const char *what) {
    const int64_t B = 7;
    float *x = malloc(sizeof(float) * (size_t)(features * B));
    sp_rng r;
    sp_rng_init(&r, 3, 0);
    for (int64_t i = 0; i < features * B; i++) x[i] = sp_rng_uniform(&r);
    const float *ym = NULL, *yn = NULL;
    const int64_t ny = sp_model_out(m).c * B;
    CHECK_OK(sp_model_forward(m, x, B, false, &ym));
    float *copy = malloc(sizeof(float) * (size_t)ny);
    if (ym) memcpy(copy, ym, sizeof(float) * (size_t)ny);
    CHECK_OK(sp_model_forward(n, x, B, false, &yn));
    if (ym && yn && bitwise)
        CHECK_MSG(!memcmp(copy, yn, sizeof(float) * (size_t)ny), "%s: outputs differ", what);
    else if (ym && yn)
        CHECK_CLOSE(yn, copy, NULL, ny, sp_tol_for(SP_F32));
    free(copy);
    free(x);
}

/* A pruned (CSR) model exports dense with its zeros and as CSR components; both re-import to a
 * model with identical outputs, and the CSR one keeps the pattern. A CNN with BatchNorm maps
 * conv and BatchNorm parameters and running statistics. */
TEST(safetensors_export_reimports_identically) {
    const char *cfg = "flatten\nlinear out=16 format=csr density=0.25\nrelu\nlinear out=classes\n";
    const sp_shape in = {1, 4, 4};
    sp_model *m = NULL;
    CHECK_OK(sp_model_new(cfg, in, 3, 9, &m));
    if (!m) return;
    sp_model_set_input_scale(m, 0.5f);
    char dense[128], csr[128];
    tmp_path(dense, sizeof dense, "dense.safetensors");
    tmp_path(csr, sizeof csr, "csr.safetensors");
    CHECK_OK(sp_model_export_safetensors(m, dense, false));
    CHECK_OK(sp_model_export_safetensors(m, csr, true));
    sp_safetensors *sd = NULL, *sc = NULL;
    CHECK_OK(sp_safetensors_load(dense, &sd));
    CHECK_OK(sp_safetensors_load(csr, &sc));
    const sp_csr *c = sp_model_layer_csr(m, 1);
    if (sd && sc && c) {
        const sp_safetensors_tensor *w = sp_safetensors_find(sd, "1.weight");
        CHECK(w && w->rank == 2 && w->shape[0] == 16 && w->shape[1] == 16);
        CHECK(sp_safetensors_find(sd, "3.bias") != NULL);
        CHECK(!strcmp(sp_safetensors_meta(sd, "sparrow.input_scale"), "0.5"));
        CHECK(strstr(sp_safetensors_meta(sd, "sparrow.config"), "format=csr") != NULL);
        const sp_safetensors_tensor *v = sp_safetensors_find(sc, "1.weight.values"),
                                    *ci = sp_safetensors_find(sc, "1.weight.col_indices"),
                                    *cr = sp_safetensors_find(sc, "1.weight.crow_indices"),
                                    *sz = sp_safetensors_find(sc, "1.weight.size");
        CHECK(v && v->numel == c->nnz && ci && ci->dtype == SP_ST_I64 && cr && cr->numel == 17);
        int64_t size[2] = {0, 0};
        if (sz) CHECK_OK(sp_safetensors_read_i64(sz, size, 2));
        CHECK(size[0] == 16 && size[1] == 16);
        CHECK(sp_safetensors_find(sc, "1.weight") == NULL);
        CHECK(sp_safetensors_find(sc, "3.weight") != NULL); /* the dense output layer */
        /* dense export into a dense config */
        sp_model *a = NULL, *b = NULL, *d = NULL;
        CHECK_OK(sp_model_import_safetensors(sd, "flatten\nlinear out=16\nrelu\nlinear out=classes\n",
                                             in, 3, 1, &a));
        if (a) {
            CHECK(sp_model_input_scale(a) == 0.5f);
            same_outputs(m, a, 16, false, "dense re-import");
        }
        /* the CSR export into the CSR config keeps exactly the pattern */
        CHECK_OK(sp_model_import_safetensors(sc, cfg, in, 3, 1, &b));
        const sp_csr *cb = b ? sp_model_layer_csr(b, 1) : NULL;
        CHECK(cb && cb->nnz == c->nnz);
        for (int64_t k = 0; cb && k < c->nnz; k++) CHECK(sp_csr_col(cb, k) == sp_csr_col(c, k));
        if (b) same_outputs(m, b, 16, true, "CSR re-import");
        /* and the dense export into the CSR config: the nonzeros become the pattern */
        CHECK_OK(sp_model_import_safetensors(sd, cfg, in, 3, 1, &d));
        const sp_csr *cd = d ? sp_model_layer_csr(d, 1) : NULL;
        CHECK(cd && cd->nnz <= c->nnz && cd->nnz > 0);
        if (d) same_outputs(m, d, 16, true, "dense into CSR");
        sp_model_free(a);
        sp_model_free(b);
        sp_model_free(d);
    }
    sp_safetensors_free(sd);
    sp_safetensors_free(sc);
    unlink(dense);
    unlink(csr);
    sp_model_free(m);

    /* conv2d + batchnorm (running statistics in the state arena) + layernorm */
    const char *cnn = "conv2d out=4 k=3 pad=1 groups=2\nbatchnorm\nrelu\nflatten\nlayernorm\n"
                      "linear out=classes bias=0\n";
    const sp_shape cin = {2, 5, 5};
    CHECK_OK(sp_model_new(cnn, cin, 3, 4, &m));
    if (!m) return;
    /* make the running statistics something other than their initial values */
    float *bufs = sp_model_buffers(m);
    for (int64_t i = 0; i < sp_model_nbuffers(m); i++) bufs[i] = 0.5f + 0.1f * (float)i;
    float *params = sp_model_params(m);
    for (int64_t i = 0; i < sp_model_nparams(m); i++) params[i] = 0.01f * (float)(i % 37) - 0.1f;
    CHECK_OK(sp_model_export_safetensors(m, dense, false));
    sp_safetensors *s2 = NULL;
    CHECK_OK(sp_safetensors_load(dense, &s2));
    if (s2) {
        const sp_safetensors_tensor *w = sp_safetensors_find(s2, "0.weight");
        CHECK(w && w->rank == 4 && w->shape[0] == 4 && w->shape[1] == 1 && w->shape[2] == 3);
        CHECK(sp_safetensors_find(s2, "1.running_var") != NULL);
        CHECK(sp_safetensors_find(s2, "1.num_batches_tracked") != NULL);
        CHECK(sp_safetensors_find(s2, "5.bias") == NULL);
        sp_model *a = NULL;
        CHECK_OK(sp_model_import_safetensors(s2, cnn, cin, 3, 99, &a));
        if (a) {
            CHECK(!memcmp(sp_model_params(a), params, sizeof(float) * (size_t)sp_model_nparams(m)));
            CHECK(!memcmp(sp_model_buffers(a), bufs, sizeof(float) * (size_t)sp_model_nbuffers(m)));
            same_outputs(m, a, 50, true, "CNN re-import");
        }
        sp_model_free(a);
    }
    sp_safetensors_free(s2);
    unlink(dense);
    /* nested models are refused on export too */
    sp_model *r = NULL;
    CHECK_OK(sp_model_new("flatten\nresidual {\n linear out=50\n}\nlinear out=classes\n", cin, 3, 1,
                          &r));
    if (r) CHECK_STATUS(sp_model_export_safetensors(r, dense, false), SP_EUNSUPPORTED);
    sp_model_free(r);
    sp_model_free(m);
}

/* The PyTorch-trained MLP (scripts/make_safetensors_fixtures.py) gives PyTorch's predicted class
 * on every one of the 10,000 Fashion-MNIST test images. */
TEST(safetensors_pytorch_mlp_same_predictions) {
    sp_safetensors *st = NULL, *ex = NULL;
    CHECK_OK(sp_safetensors_load(GOLDEN "mlp64.safetensors", &st));
    CHECK_OK(sp_safetensors_load(GOLDEN "mlp64_expected.safetensors", &ex));
    char *cfg = NULL;
    CHECK_OK(sp_model_spec_config("mlp:64", &cfg));
    sp_model *m = NULL;
    if (st && cfg) CHECK_OK(sp_model_import_safetensors(st, cfg, (sp_shape){1, 28, 28}, 10, 1, &m));
    const sp_safetensors_tensor *pred = ex ? sp_safetensors_find(ex, "pred") : NULL,
                                *margin = ex ? sp_safetensors_find(ex, "margin") : NULL;
    CHECK(pred && pred->numel == 10000 && margin && margin->numel == 10000);
#ifndef SPARROW_HAVE_ZLIB
    printf("note: safetensors_pytorch_mlp_same_predictions: no zlib in this build, the gzip test "
           "set cannot be read; checked the import only\n");
#else
    sp_dataset *tr = NULL, *te = NULL;
    if (m && pred && margin) CHECK_OK(sp_dataset_open("fashion-mnist", &tr, &te));
    if (te) {
        CHECK_EQ(te->n, 10000);
        int32_t *p = malloc(sizeof(int32_t) * (size_t)te->n);
        float *mg = malloc(sizeof(float) * 10000);
        double loss, acc;
        CHECK_OK(sp_evaluate(m, te, 1000, 0, &loss, &acc, p));
        CHECK_OK(sp_safetensors_read_f32(margin, mg, 10000));
        int64_t mismatches = 0, correct = 0;
        for (int64_t i = 0; i < te->n && i < 10000; i++) {
            correct += p[i] == te->labels[i];
            if (p[i] != pred->data[i]) {
                if (mismatches++ < 10)
                    printf("  image %lld: sparrow %d, PyTorch %d (PyTorch top-2 margin %g)\n",
                           (long long)i, (int)p[i], (int)pred->data[i], (double)mg[i]);
            }
        }
        printf("note: PyTorch MLP imported: %lld of 10000 test predictions differ from PyTorch's, "
               "accuracy %.2f%%\n", (long long)mismatches, 100.0 * acc);
        CHECK_MSG(mismatches == 0, "%lld of 10000 predictions differ from PyTorch's",
                  (long long)mismatches);
        /* the accuracy PyTorch reported */
        const char *want = sp_safetensors_meta(ex, "correct");
        CHECK(want && correct == atoll(want));
        free(p);
        free(mg);
    }
    sp_dataset_free(tr);
    sp_dataset_free(te);
#endif
    sp_model_free(m);
    sp_free(cfg);
    sp_safetensors_free(st);
    sp_safetensors_free(ex);
}

/* The fuzz corpus (fuzz/corpus/safetensors/, made by fuzz/make_corpus.py) replayed as the fuzz
 * target runs it: parse, then import into the target's fixed tiny config. Every seed must parse;
 * the harness checks that nothing leaks. */
TEST(safetensors_fuzz_corpus_replays) {
    const char *dir = SPARROW_SOURCE_DIR "/fuzz/corpus/safetensors";
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "%s missing", dir);
    if (!d) return;
    int files = 0, imported = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        sp_safetensors *st = NULL;
        sp_status s = sp_safetensors_load(path, &st);
        CHECK_MSG(s == SP_OK, "%s: %s", e->d_name, sp_last_error());
        files++;
        sp_model *m = NULL;
        if (st && sp_model_import_safetensors(st, "flatten\nlinear out=3\nrelu\nlinear out=classes\n",
                                              (sp_shape){1, 2, 2}, 2, 1, &m) == SP_OK)
            imported++;
        sp_model_free(m);
        sp_safetensors_free(st);
    }
    closedir(d);
    CHECK_MSG(files >= 4, "only %d seeds", files);
    CHECK_MSG(imported >= 2, "only %d seeds import into the fuzz config", imported);
}

/* Weights in F64, F16 and BF16 are converted; CSR components are checked entry by entry. */
TEST(safetensors_import_converts_dtypes_and_checks_csr) {
    sp_safetensors_builder *b = NULL;
    CHECK_OK(sp_safetensors_builder_new(&b));
    if (!b) return;
    double w1[12];
    for (int i = 0; i < 12; i++) w1[i] = 0.25 * i - 1.0;
    const uint16_t b1[3] = {0x3C00, 0xC000, 0x3800};          /* F16 1, -2, 0.5 */
    const uint16_t w3[6] = {0x3F80, 0xBF80, 0x4000, 0, 0, 0x3E80}; /* BF16 1, -1, 2, 0, 0, 0.25 */
    const float b3[2] = {0.5f, -0.5f};
    const int64_t s1[2] = {3, 4}, s3[2] = {2, 3}, n3 = 3, n2 = 2;
    CHECK_OK(sp_safetensors_builder_add(b, "1.weight", SP_ST_F64, 2, s1, w1));
    CHECK_OK(sp_safetensors_builder_add(b, "1.bias", SP_ST_F16, 1, &n3, b1));
    CHECK_OK(sp_safetensors_builder_add(b, "3.weight", SP_ST_BF16, 2, s3, w3));
    CHECK_OK(sp_safetensors_builder_add(b, "3.bias", SP_ST_F32, 1, &n2, b3));
    char path[128];
    tmp_path(path, sizeof path, "dtypes.safetensors");
    CHECK_OK(sp_safetensors_write(b, path));
    sp_safetensors_builder_free(b);
    sp_safetensors *st = NULL;
    CHECK_OK(sp_safetensors_load(path, &st));
    sp_model *m = NULL;
    if (st) CHECK_OK(sp_model_import_safetensors(st, TINY, (sp_shape){1, 2, 2}, 2, 1, &m));
    if (m) {
        float w[12], bias[3];
        CHECK_OK(sp_model_layer_get_weight(m, 1, w, bias));
        CHECK(w[0] == -1.0f && w[11] == 1.75f && bias[0] == 1.0f && bias[1] == -2.0f &&
              bias[2] == 0.5f);
        CHECK_OK(sp_model_layer_get_weight(m, 3, w, bias));
        CHECK(w[1] == -1.0f && w[2] == 2.0f && w[5] == 0.25f);
    }
    sp_model_free(m);
    sp_safetensors_free(st);

    /* CSR components: good, then each broken in turn */
    static const struct {
        const char *name;
        int64_t crow[4], col[5];
        int64_t size0;
        bool with_dense;
        sp_status want;
        const char *needle;
    } cases[] = {
        {"good", {0, 2, 3, 5}, {0, 3, 1, 0, 2}, 3, false, SP_OK, ""},
        {"crow not from 0", {1, 2, 3, 5}, {0, 3, 1, 0, 2}, 3, false, SP_EFORMAT,
         "crow_indices[0] = 1"},
        {"crow decreasing", {0, 4, 3, 5}, {0, 3, 1, 0, 2}, 3, false, SP_EFORMAT,
         "crow_indices[2] = 3 is out of order"},
        {"column out of range", {0, 2, 3, 5}, {0, 4, 1, 0, 2}, 3, false, SP_EFORMAT,
         "column 4 of entry 1 (row 0) is out of [0, 4)"},
        {"repeated column", {0, 2, 3, 5}, {3, 3, 1, 0, 2}, 3, false, SP_EFORMAT,
         "not increasing"},
        {"size of another layer", {0, 2, 3, 5}, {0, 3, 1, 0, 2}, 4, false, SP_ESHAPE,
         "'1.weight.size': expected shape [3, 4], found [4, 4]"},
        {"dense and CSR at once", {0, 2, 3, 5}, {0, 3, 1, 0, 2}, 3, true, SP_EFORMAT,
         "gives its weight both"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        CHECK_OK(sp_safetensors_builder_new(&b));
        if (!b) return;
        const int64_t n4 = 4, n5 = 5, two = 2, size[2] = {cases[k].size0, 4};
        const float v[5] = {1, 2, 3, 4, 5};
        float dense[12] = {0};
        sp_safetensors_builder_add(b, "1.weight.crow_indices", SP_ST_I64, 1, &n4, cases[k].crow);
        sp_safetensors_builder_add(b, "1.weight.col_indices", SP_ST_I64, 1, &n5, cases[k].col);
        sp_safetensors_builder_add(b, "1.weight.values", SP_ST_F32, 1, &n5, v);
        sp_safetensors_builder_add(b, "1.weight.size", SP_ST_I64, 1, &two, size);
        if (cases[k].with_dense) sp_safetensors_builder_add(b, "1.weight", SP_ST_F32, 2, s1, dense);
        sp_safetensors_builder_add(b, "1.bias", SP_ST_F16, 1, &n3, b1);
        sp_safetensors_builder_add(b, "3.weight", SP_ST_BF16, 2, s3, w3);
        sp_safetensors_builder_add(b, "3.bias", SP_ST_F32, 1, &n2, b3);
        CHECK_OK(sp_safetensors_write(b, path));
        sp_safetensors_builder_free(b);
        st = NULL;
        CHECK_OK(sp_safetensors_load(path, &st));
        m = NULL;
        sp_clear_error();
        sp_status got = st ? sp_model_import_safetensors(
                                 st, "flatten\nlinear out=3 format=csr density=0.5\nrelu\n"
                                     "linear out=classes\n", (sp_shape){1, 2, 2}, 2, 1, &m)
                           : SP_EINVAL;
        CHECK_MSG(got == cases[k].want, "%s: got %s, want %s (%s)", cases[k].name,
                  sp_status_name(got), sp_status_name(cases[k].want), sp_last_error());
        CHECK_MSG(strstr(sp_last_error(), cases[k].needle), "%s: message '%s' lacks '%s'",
                  cases[k].name, sp_last_error(), cases[k].needle);
        if (m) {
            /* the pattern is exactly the stored entries: rows {0, 3}, {1}, {0, 2} */
            const sp_csr *c = sp_model_layer_csr(m, 1);
            CHECK(c && c->nnz == 5 && c->row_ptr[1] == 2 && sp_csr_col(c, 1) == 3);
            float w[12];
            CHECK_OK(sp_model_layer_get_weight(m, 1, w, NULL));
            CHECK(w[0] == 1 && w[3] == 2 && w[5] == 3 && w[8] == 4 && w[10] == 5 && w[1] == 0);
        }
        sp_model_free(m);
        sp_safetensors_free(st);
    }
    unlink(path);
}

/* Every allocation of an import and an export may fail: SP_ENOMEM (or SP_EIO for the file),
 * nothing leaks, and the file at the path is either the old one or complete. */
TEST(safetensors_import_export_survive_allocation_failures) {
    const spec good[] = {{"1.weight", 2, {3, 4}}, {"1.bias", 1, {3}}, {"3.weight", 2, {2, 3}},
                         {"3.bias", 1, {2}}};
    sp_safetensors *st = tiny_file(good, 4);
    CHECK(st != NULL);
    if (!st) return;
    const char *cfg = "flatten\nlinear out=3 format=csr density=0.5\nrelu\nlinear out=classes\n";
    char path[128];
    tmp_path(path, sizeof path, "oom.safetensors");
    int64_t live = sp_alloc_live();
    bool imported = false, exported = false;
    sp_model *good_m = NULL;
    for (int n = 1; n < 400 && !imported; n++) {
        sp_model *m = NULL;
        sp_alloc_fail_after(n);
        sp_status s = sp_model_import_safetensors(st, cfg, (sp_shape){1, 2, 2}, 2, 1, &m);
        sp_alloc_fail_after(0);
        CHECK_MSG(s == SP_OK || s == SP_ENOMEM, "import, allocation %d: %s (%s)", n,
                  sp_status_name(s), sp_last_error());
        imported = s == SP_OK;
        if (imported) good_m = m;
        else CHECK_EQ(sp_alloc_live(), live);
    }
    live = sp_alloc_live();
    for (int n = 1; n < 400 && good_m && !exported; n++) {
        sp_alloc_fail_after(n);
        sp_status s = sp_model_export_safetensors(good_m, path, true);
        sp_alloc_fail_after(0);
        CHECK_MSG(s == SP_OK || s == SP_ENOMEM, "export, allocation %d: %s (%s)", n,
                  sp_status_name(s), sp_last_error());
        CHECK_MSG(s == SP_OK || access(path, F_OK) != 0, "export, allocation %d: a file was left",
                  n);
        exported = s == SP_OK;
        CHECK_EQ(sp_alloc_live(), live);
    }
    sp_model_free(good_m);
    CHECK(imported && exported);
    sp_safetensors_free(st);
    unlink(path);
}
