/*
 * test_text.c - character-level language modelling: UTF-8 decoding (each invalid form with its
 * byte offset), text datasets (vocabulary, windows and labels, contiguous test and validation
 * cuts, imposed vocabularies), the model's vocabulary in checkpoints, the charlm and moe-mlp
 * specs, and a tiny charlm that learns (bits per character) and resumes bit for bit.
 */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "test.h"

static void text_tmp(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/sparrow_text_%d_%s", (int)getpid(), name);
}

/* Writes len bytes to path; true on success. */
static bool write_file(const char *path, const void *bytes, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(bytes, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

TEST(text_utf8_decodes_every_length_and_skips_a_bom) {
    /* BOM, 'a', U+00E9 (2 bytes), U+20AC (3), U+1F600 (4), U+10FFFF, U+0000 */
    const uint8_t s[] = {0xEF, 0xBB, 0xBF, 'a', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98,
                         0x80, 0xF4, 0x8F, 0xBF, 0xBF, 0x00};
    int32_t cps[sizeof s];
    int64_t n = -1;
    CHECK_OK(sp_utf8_decode(s, sizeof s, cps, &n));
    const int32_t want[] = {'a', 0xE9, 0x20AC, 0x1F600, 0x10FFFF, 0};
    CHECK_EQ(n, 6);
    for (int i = 0; i < 6 && n == 6; i++) CHECK_EQ(cps[i], want[i]);
    /* a BOM later in the text is a character (U+FEFF), not skipped */
    const uint8_t mid[] = {'x', 0xEF, 0xBB, 0xBF};
    CHECK_OK(sp_utf8_decode(mid, sizeof mid, cps, &n));
    CHECK(n == 2 && cps[1] == 0xFEFF);
    /* encoding gives the same bytes back */
    char out[4];
    CHECK_EQ(sp_utf8_encode(0xE9, out), 2);
    CHECK(memcmp(out, "\xC3\xA9", 2) == 0);
    CHECK_EQ(sp_utf8_encode(0x1F600, out), 4);
    CHECK(memcmp(out, "\xF0\x9F\x98\x80", 4) == 0);
    CHECK_EQ(sp_utf8_encode(0x20AC, out), 3);
    CHECK(memcmp(out, "\xE2\x82\xAC", 3) == 0);
    CHECK_EQ(sp_utf8_encode('z', out), 1);
    CHECK_EQ(sp_utf8_encode(0xD800, out), 0);
    CHECK_EQ(sp_utf8_encode(0x110000, out), 0);
    CHECK_EQ(sp_utf8_encode(-1, out), 0);
}

TEST(text_utf8_rejects_each_invalid_form_naming_its_offset) {
    static const struct {
        const char *name, *bytes, *needle;
    } cases[] = {
        {"overlong 2-byte", "ab\xC0\xAF", "byte offset 2: overlong 2-byte encoding of U+002F"},
        {"overlong 3-byte", "\xE0\x80\xAF", "byte offset 0: overlong 3-byte encoding"},
        {"overlong 4-byte", "xyz\xF0\x80\x80\xAF", "byte offset 3: overlong 4-byte encoding"},
        {"surrogate", "x\xED\xA0\x80", "byte offset 1: surrogate U+D800"},
        {"truncated at the end", "xy\xE2\x82", "byte offset 2: truncated sequence"},
        {"truncated by an ASCII byte", "\xE2\x28\xA1", "byte offset 0: truncated sequence"},
        {"stray continuation", "abc\x80", "byte offset 3: stray continuation byte 0x80"},
        {"above U+10FFFF", "\xF4\x90\x80\x80", "byte offset 0: code point 0x110000 is above"},
        {"lead F5", "a\xF5\x80\x80\x80", "byte offset 1: code point 0x140000 is above"},
        {"invalid lead", "ok\xFF", "byte offset 2: invalid lead byte 0xFF"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *b = cases[k].bytes;
        int32_t cps[16];
        int64_t n = 0;
        CHECK_STATUS(sp_utf8_decode((const uint8_t *)b, strlen(b), cps, &n), SP_EFORMAT);
        CHECK_MSG(strstr(sp_last_error(), cases[k].needle), "%s: %s", cases[k].name,
                  sp_last_error());
    }
}

/* ---- datasets -------------------------------------------------------------------------------- */

TEST(text_empty_files_are_errors) {
    char path[128];
    text_tmp(path, sizeof path, "empty.txt");
    CHECK(write_file(path, "", 0));
    sp_dataset *tr = NULL, *te = NULL;
    CHECK_STATUS(sp_dataset_open_text(path, NULL, 0, 4, &tr, &te), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "is empty (0 bytes)") != NULL);
    CHECK(write_file(path, "\xEF\xBB\xBF", 3));
    CHECK_STATUS(sp_dataset_open_text(path, NULL, 0, 4, &tr, &te), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), "only a byte order mark") != NULL);
    CHECK(tr == NULL && te == NULL);
    /* an invalid file names the path and the offset, through "text:FILE" too */
    CHECK(write_file(path, "abc\xC3", 4));
    char spec[160];
    snprintf(spec, sizeof spec, "text:%s", path);
    CHECK_STATUS(sp_dataset_open(spec, &tr, &te), SP_EFORMAT);
    CHECK(strstr(sp_last_error(), path) && strstr(sp_last_error(), "byte offset 3: truncated"));
    unlink(path);
    CHECK_STATUS(sp_dataset_open(spec, &tr, &te), SP_EIO);
}

/* The vocabulary is the sorted set of distinct code points, ids are ranks; the BOM is not a
 * token; CR and LF are. */
TEST(text_vocabulary_is_the_sorted_distinct_code_points) {
    char path[128];
    text_tmp(path, sizeof path, "vocab.txt");
    char text[400] = "\xEF\xBB\xBF";
    for (int i = 0; i < 10; i++) strcat(text, "caf\xC3\xA9 b\xC3\xA2" "b\r\n");
    CHECK(write_file(path, text, strlen(text)));
    sp_dataset *tr = NULL, *te = NULL;
    CHECK_OK(sp_dataset_open_text(path, NULL, 0, 3, &tr, &te));
    if (!tr || !te) return;
    const int32_t want[] = {'\n', '\r', ' ', 'a', 'b', 'c', 'f', 0xE2, 0xE9};
    CHECK_EQ(tr->classes, 9);
    CHECK_EQ(te->classes, 9);
    CHECK(tr->kind == SP_DATASET_TEXT && tr->scale == 1.0f && tr->pixels == NULL);
    for (int i = 0; i < 9; i++) CHECK(tr->vocab[i] == want[i] && te->vocab[i] == want[i]);
    /* 100 code points: "café bâb\r\n" is 10 of them */
    CHECK_EQ(tr->ntokens + te->ntokens, 100);
    const int32_t line[10] = {'c', 'a', 'f', 0xE9, ' ', 'b', 0xE2, 'b', '\r', '\n'};
    for (int64_t i = 0; i < tr->ntokens; i++) CHECK_EQ(tr->vocab[tr->tokens[i]], line[i % 10]);
    for (int64_t i = 0; i < te->ntokens; i++)
        CHECK_EQ(te->vocab[te->tokens[i]], line[(tr->ntokens + i) % 10]);
    sp_dataset_free(tr);
    sp_dataset_free(te);
    unlink(path);
}

/* A text of n tokens whose code points count up: token i is 'A' + i % 50, so ids are i % 50. */
static bool counting_text(const char *path, int n) {
    char *t = malloc((size_t)n);
    for (int i = 0; i < n; i++) t[i] = (char)('A' + i % 50);
    bool ok = write_file(path, t, (size_t)n);
    free(t);
    return ok;
}

/* Window i is tokens [i*T, i*T + T), labelled with the next tokens; the batch is feature-major
 * (x[t * ldx + b]) and the labels token-major (y[t * batch + b]), columns past batch untouched. */
TEST(text_batches_are_windows_with_next_token_labels) {
    char path[128];
    text_tmp(path, sizeof path, "count.txt");
    CHECK(counting_text(path, 400));
    sp_dataset *tr = NULL, *te = NULL;
    const int64_t T = 7;
    CHECK_OK(sp_dataset_open_text(path, NULL, 0, T, &tr, &te));
    if (!tr || !te) return;
    /* test: the last 10% = 40 tokens (more than one window of 8); train 360 -> 51 windows */
    CHECK_EQ(te->ntokens, 40);
    CHECK_EQ(tr->ntokens, 360);
    CHECK_EQ(tr->n, (360 - 1) / 7);
    CHECK_EQ(te->n, (40 - 1) / 7);
    CHECK(tr->c == 1 && tr->h == 1 && tr->w == T && tr->features == T && tr->label_len == T);
    const int64_t idx[3] = {2, 0, 50}, B = 3, ldx = 5;
    float x[7 * 5];
    int32_t y[7 * 3];
    for (int i = 0; i < 35; i++) x[i] = -1.0f;
    CHECK_OK(sp_dataset_batch(tr, idx, B, x, ldx, y));
    for (int64_t t = 0; t < T; t++) {
        for (int64_t b = 0; b < B; b++) {
            CHECK(x[t * ldx + b] == (float)((idx[b] * T + t) % 50));
            CHECK_EQ(y[t * B + b], (idx[b] * T + t + 1) % 50);
        }
        CHECK(x[t * ldx + 3] == -1.0f && x[t * ldx + 4] == -1.0f);
    }
    /* the test part continues the text where training stops */
    const int64_t i0 = 0;
    CHECK_OK(sp_dataset_batch(te, &i0, 1, x, 1, y));
    CHECK(x[0] == (float)(360 % 50) && y[0] == 361 % 50);
    const int64_t bad = tr->n;
    CHECK_STATUS(sp_dataset_batch(tr, &bad, 1, x, 1, y), SP_EINVAL);
    sp_dataset_free(tr);
    sp_dataset_free(te);
    unlink(path);
}

/* Test and validation windows come from the end, contiguous: the parts put back together are the
 * text, and a context longer than 10% of the text takes one window's worth for testing. */
TEST(text_test_and_validation_cuts_are_contiguous) {
    char path[128];
    text_tmp(path, sizeof path, "cuts.txt");
    CHECK(counting_text(path, 400));
    sp_dataset *tr = NULL, *te = NULL, *fit = NULL, *val = NULL;
    CHECK_OK(sp_dataset_open_text(path, NULL, 0, 60, &tr, &te));
    if (!tr || !te) return;
    CHECK_EQ(te->ntokens, 61); /* max(40, 60 + 1) */
    CHECK_EQ(tr->ntokens, 339);
    CHECK(tr->tokens[338] == 338 % 50 && te->tokens[0] == 339 % 50);
    sp_dataset_free(tr);
    sp_dataset_free(te);
    CHECK_OK(sp_dataset_open_text(path, NULL, 0, 10, &tr, &te));
    if (!tr || !te) return;
    CHECK_EQ(tr->n, 35); /* 360 tokens: 35 windows of 10 and their labels */
    CHECK_OK(sp_dataset_split(tr, 5, 1234, &fit, &val));
    if (fit && val) {
        CHECK_EQ(fit->n, 30);
        CHECK_EQ(val->n, 5);
        CHECK(fit->kind == SP_DATASET_TEXT && val->label_len == 10 && val->classes == 50);
        /* validation window k is training window 30 + k, fit window k is window k */
        float xa[10], xb[10];
        int32_t ya[10], yb[10];
        for (int64_t k = 0; k < 5; k++) {
            int64_t j = 30 + k;
            CHECK_OK(sp_dataset_batch(val, &k, 1, xa, 1, ya));
            CHECK_OK(sp_dataset_batch(tr, &j, 1, xb, 1, yb));
            CHECK(memcmp(xa, xb, sizeof xa) == 0 && memcmp(ya, yb, sizeof ya) == 0);
        }
        for (int64_t k = 0; k < 30; k++) {
            CHECK_OK(sp_dataset_batch(fit, &k, 1, xa, 1, ya));
            CHECK_OK(sp_dataset_batch(tr, &k, 1, xb, 1, yb));
            CHECK(memcmp(xa, xb, sizeof xa) == 0 && memcmp(ya, yb, sizeof ya) == 0);
        }
        /* no validation label is a training label: fit's last label is token 300, val's first
         * label token 301 */
        CHECK_EQ(fit->ntokens, 301);
        CHECK_EQ(val->ntokens, 51);
    }
    sp_dataset_free(fit);
    sp_dataset_free(val);
    /* the seed does not matter, and nval 0 leaves an empty validation set */
    CHECK_OK(sp_dataset_split(tr, 0, 1, &fit, &val));
    CHECK(fit && val && fit->n == 35 && val->n == 0);
    sp_dataset_free(fit);
    sp_dataset_free(val);
    CHECK_STATUS(sp_dataset_split(tr, 35, 1, &fit, &val), SP_EINVAL);
    sp_dataset_free(tr);
    sp_dataset_free(te);
    /* too short for the context: both sizes named */
    CHECK_STATUS(sp_dataset_open_text(path, NULL, 0, 200, &tr, &te), SP_EINVAL);
    CHECK_MSG(strstr(sp_last_error(), "holds 400 characters: too few for a context of 200") &&
              strstr(sp_last_error(), "need 402"), "%s", sp_last_error());
    unlink(path);
}

/* Without a context, "text:FILE" gives the last 10%; sp_dataset_set_context then makes windows,
 * and refuses image data and a context the text cannot fill. */
TEST(text_context_is_set_later_through_text_spec) {
    char path[128], spec[160];
    text_tmp(path, sizeof path, "later.txt");
    CHECK(counting_text(path, 200));
    snprintf(spec, sizeof spec, "text:%s", path);
    sp_dataset *tr = NULL, *te = NULL;
    CHECK_OK(sp_dataset_open(spec, &tr, &te));
    if (!tr || !te) return;
    CHECK(tr->n == 0 && tr->ntokens == 180 && te->ntokens == 20);
    CHECK_OK(sp_dataset_set_context(tr, 8));
    CHECK(tr->n == 22 && tr->features == 8 && tr->label_len == 8);
    CHECK_STATUS(sp_dataset_set_context(te, 20), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "20 tokens are too few for one window of context 20") != NULL);
    CHECK_STATUS(sp_dataset_set_context(te, 0), SP_EINVAL);
    CHECK_OK(sp_dataset_set_context(te, 19));
    CHECK_EQ(te->n, 1);
    sp_dataset_free(tr);
    sp_dataset_free(te);
    unlink(path);
}

/* A trained model's vocabulary, imposed: the same ids as the model saw; a character outside it
 * is named with its code point and byte offset. */
TEST(text_imposed_vocabulary_maps_ids_and_names_unknown_characters) {
    char path[128];
    text_tmp(path, sizeof path, "imposed.txt");
    const char *t = "abba cab\nabba cab\n";
    CHECK(write_file(path, t, strlen(t)));
    const int32_t voc[6] = {'\n', ' ', 'a', 'b', 'c', 'z'};
    sp_dataset *tr = NULL, *te = NULL;
    CHECK_OK(sp_dataset_open_text(path, voc, 6, 2, &tr, &te));
    if (tr && te) {
        CHECK_EQ(tr->classes, 6);
        for (int64_t i = 0; i < tr->ntokens; i++) CHECK_EQ(voc[tr->tokens[i]], t[i]);
    }
    sp_dataset_free(tr);
    sp_dataset_free(te);
    const char *u = "abba\xC3\xA9 cab\nabba cab\n"; /* U+00E9 at byte offset 4 */
    CHECK(write_file(path, u, strlen(u)));
    CHECK_STATUS(sp_dataset_open_text(path, voc, 6, 2, &tr, &te), SP_EINVAL);
    CHECK_MSG(strstr(sp_last_error(), "character U+00E9 '\xC3\xA9' at byte offset 4 is not in "
                     "the vocabulary (6 characters)"), "%s", sp_last_error());
    const int32_t unsorted[3] = {'a', 'c', 'b'}, surrogate[2] = {'a', 0xDC00};
    CHECK_STATUS(sp_dataset_open_text(path, unsorted, 3, 2, &tr, &te), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "strictly ascending") != NULL);
    CHECK_STATUS(sp_dataset_open_text(path, surrogate, 2, 2, &tr, &te), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "not a Unicode scalar value") != NULL);
    /* the same through sp_text_encode (what `sparrow generate` does with a prompt) */
    int32_t ids[8];
    int64_t n = 0;
    CHECK_OK(sp_text_encode((const uint8_t *)"cab z", 5, voc, 6, ids, &n));
    CHECK(n == 5 && ids[0] == 4 && ids[1] == 2 && ids[2] == 3 && ids[3] == 1 && ids[4] == 5);
    CHECK_STATUS(sp_text_encode((const uint8_t *)"ca\tb", 4, voc, 6, ids, &n), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "character U+0009 at byte offset 2") != NULL);
    CHECK_EQ(sp_vocab_find(voc, 6, 'z'), 5);
    CHECK_EQ(sp_vocab_find(voc, 6, 'y'), -1);
    unlink(path);
}

/* ---- the model's vocabulary ------------------------------------------------------------------ */

TEST(text_model_vocabulary_round_trips_through_checkpoints) {
    char *cfg = NULL;
    CHECK_OK(sp_model_spec_config("charlm:layers=1,dim=8,heads=2,ctx=4", &cfg));
    sp_model *m = NULL;
    if (cfg) CHECK_OK(sp_model_new(cfg, (sp_shape){1, 1, 4}, 4, 3, &m));
    sp_free(cfg);
    if (!m) return;
    int64_t n = 9;
    CHECK(sp_model_vocab(m, &n) == NULL && n == 0);
    const int32_t voc[4] = {'\n', 'a', 0x20AC, 0x1F600};
    const int32_t three[3] = {'a', 'b', 'c'}, down[4] = {'a', 'b', 'b', 'c'};
    const int32_t high[4] = {'a', 'b', 'c', 0x110000};
    CHECK_STATUS(sp_model_set_vocab(m, three, 3), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "vocabulary of 3 characters for a model of 4 classes"));
    CHECK_STATUS(sp_model_set_vocab(m, down, 4), SP_EINVAL);
    CHECK_STATUS(sp_model_set_vocab(m, high, 4), SP_EINVAL);
    CHECK(sp_model_vocab(m, NULL) == NULL);
    CHECK_OK(sp_model_set_vocab(m, voc, 4));
    char path[128];
    text_tmp(path, sizeof path, "vocab.sparrow");
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    sp_checkpoint ck = {0};
    CHECK_OK(sp_checkpoint_load(path, &ck));
    const int32_t *got = ck.model ? sp_model_vocab(ck.model, &n) : NULL;
    CHECK(got && n == 4 && memcmp(got, voc, sizeof voc) == 0);
    CHECK(ck.model && sp_model_input_scale(ck.model) == sp_model_input_scale(m));
    sp_checkpoint_free(&ck);
    /* a model without one saves none */
    CHECK_OK(sp_model_set_vocab(m, NULL, 0));
    CHECK_OK(sp_checkpoint_save(path, m, NULL, NULL, NULL));
    CHECK_OK(sp_checkpoint_load(path, &ck));
    CHECK(ck.model && sp_model_vocab(ck.model, &n) == NULL && n == 0);
    sp_checkpoint_free(&ck);
    unlink(path);
    sp_model_free(m);
}

/* ---- specs ----------------------------------------------------------------------------------- */

TEST(text_charlm_spec_expands_to_a_pre_norm_transformer) {
    char *t = NULL;
    CHECK_OK(sp_model_spec_config("charlm:layers=2,dim=32,heads=4,ctx=16", &t));
    const char *want =
        "input 1 1 16\nembedding vocab=classes dim=32\nposembed\n"
        "residual {\n  layernorm\n  attention heads=4\n}\n"
        "residual {\n  layernorm\n  linear out=128\n  gelu\n  linear out=32\n}\n"
        "residual {\n  layernorm\n  attention heads=4\n}\n"
        "residual {\n  layernorm\n  linear out=128\n  gelu\n  linear out=32\n}\n"
        "layernorm\nlinear out=classes\n";
    CHECK_MSG(t && !strcmp(t, want), "got:\n%s", t ? t : "(null)");
    sp_free(t);
    /* it builds, its input line is the context, its output one prediction per position */
    CHECK_OK(sp_model_spec_config("charlm:layers=1,dim=8,heads=2,ctx=5,hidden=12", &t));
    CHECK(t && strstr(t, "  linear out=12\n  gelu\n  linear out=8\n"));
    sp_shape in = {0, 0, 0};
    bool found = false;
    if (t) CHECK_OK(sp_model_config_input(t, &in, &found));
    CHECK(found && in.c == 1 && in.h == 1 && in.w == 5);
    sp_model *m = NULL;
    if (t) CHECK_OK(sp_model_new(t, in, 7, 1, &m));
    sp_shape out = m ? sp_model_out(m) : (sp_shape){0, 0, 0};
    CHECK(out.c == 7 && out.h == 1 && out.w == 5);
    sp_model_free(m);
    sp_free(t);
    CHECK_OK(sp_model_config_input("# no input line\nflatten\n", &in, &found));
    CHECK(!found);
    CHECK_STATUS(sp_model_config_input("\ninput 1 x 3\n", &in, &found), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "config line 2: input size 'x'") != NULL);
}

TEST(text_moe_specs_expand_to_moe_blocks) {
    char *t = NULL;
    /* F = 4 * D / K = 64 with top_k 2: the active parameters per token of the dense FFN */
    CHECK_OK(sp_model_spec_config("charlm:layers=1,dim=32,heads=4,ctx=8,experts=8,top_k=2", &t));
    const char *ffn = "residual {\n  layernorm\n  moe experts=8 top_k=2 routing=token {\n"
                      "    linear out=64\n    gelu\n    linear out=32\n  }\n}\n";
    CHECK_MSG(t && strstr(t, ffn) && strstr(t, "attention heads=4") &&
              !strstr(t, "  linear out=128"), "got:\n%s", t ? t : "(null)");
    sp_free(t);
    CHECK_OK(sp_model_spec_config("charlm:layers=3,dim=16,heads=2,ctx=8,experts=16,routing=expert",
                                  &t));
    int blocks = 0;
    for (const char *p = t; p && (p = strstr(p, "moe experts=16 top_k=1 routing=expert {")); p++)
        blocks++;
    CHECK_EQ(blocks, 3);
    CHECK(t && strstr(t, "    linear out=64\n"));
    sp_free(t);
    CHECK_OK(sp_model_spec_config("moe-mlp:128,experts=4,top_k=2", &t));
    const char *mlp = "flatten\nlinear out=128\nrelu\nresidual {\n  moe experts=4 top_k=2 {\n"
                      "    linear out=128\n    relu\n    linear out=128\n  }\n}\n"
                      "linear out=classes\n";
    CHECK_MSG(t && !strcmp(t, mlp), "got:\n%s", t ? t : "(null)");
    sp_free(t);
}

TEST(text_specs_name_their_bad_values) {
    static const struct {
        const char *spec, *needle;
    } cases[] = {
        {"charlm:layers=2,dim=32,heads=4", "ctx is required"},
        {"charlm:dim=32,heads=4,ctx=8", "layers is required"},
        {"charlm:layers=2,dim=3x,heads=4,ctx=8", "dim=3x is not an integer in [1, 65536]"},
        {"charlm:layers=0,dim=32,heads=4,ctx=8", "layers=0 is not an integer"},
        {"charlm:layers=2,dim=30,heads=4,ctx=8", "heads=4 does not divide dim=30"},
        {"charlm:layers=2,dim=32,heads=4,ctx=-1", "ctx=-1 is not an integer"},
        {"charlm:layers=2,dim=32,heads=4,ctx=8,depth=3", "unknown option 'depth'"},
        {"charlm:layers=2,dim=32,heads=4,ctx=8,layers=3", "layers is given twice"},
        {"charlm:layers=2,dim=32,heads=4,ctx=8,top_k=2", "top_k and routing need experts=E"},
        {"charlm:layers=2,dim=32,heads=4,ctx=8,experts=2,top_k=3", "top_k=3 is larger than "
                                                                    "experts=2"},
        {"charlm:layers=2,dim=32,heads=4,ctx=8,experts=2,routing=random", "routing=random is "
                                                                          "not token or expert"},
        {"charlm:layers=2,,dim=32", "cannot read item ''"},
        {"charlm:layers", "cannot read item 'layers'"},
        {"moe-mlp:experts=4", "the first value is required"},
        {"moe-mlp:64", "experts is required"},
        {"moe-mlp:64,experts=0", "experts=0 is not an integer in [1, 4096]"},
        {"moe-mlp:x,experts=2", "x is not an integer"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *t = NULL;
        CHECK_STATUS(sp_model_spec_config(cases[k].spec, &t), SP_EINVAL);
        CHECK_MSG(strstr(sp_last_error(), cases[k].needle) &&
                  strstr(sp_last_error(), cases[k].spec), "%s: %s", cases[k].spec,
                  sp_last_error());
        CHECK(t == NULL);
    }
}

/* ---- training -------------------------------------------------------------------------------- */

/* A few KB of repetitive text: a 45-character sentence, repeated. Its unigram entropy is about
 * 4.4 bits per character (what a model without context can reach at best); each character is
 * all but determined by the few before it, so a model that uses its context goes far below. */
static const char PANGRAM[] = "the quick brown fox jumps over the lazy dog. ";

static sp_model *tiny_charlm(int64_t classes) {
    char *cfg = NULL;
    sp_model *m = NULL;
    if (sp_model_spec_config("charlm:layers=1,dim=16,heads=2,ctx=16", &cfg) != SP_OK) return NULL;
    if (sp_model_new(cfg, (sp_shape){1, 1, 16}, classes, 11, &m) != SP_OK) m = NULL;
    sp_free(cfg);
    if (m) sp_model_set_input_scale(m, 1.0f); /* token ids, as text data gives them */
    return m;
}

static bool pangram_file(const char *path, int repeats) {
    size_t n = strlen(PANGRAM);
    char *t = malloc(n * (size_t)repeats);
    for (int i = 0; i < repeats; i++) memcpy(t + n * (size_t)i, PANGRAM, n);
    bool ok = write_file(path, t, n * (size_t)repeats);
    free(t);
    return ok;
}

/* Unigram entropy (bits) of d's tokens. */
static double unigram_bits(const sp_dataset *d) {
    int64_t count[256] = {0};
    for (int64_t i = 0; i < d->ntokens; i++) count[d->tokens[i]]++;
    double h = 0.0;
    for (int k = 0; k < d->classes; k++)
        if (count[k]) {
            double p = (double)count[k] / (double)d->ntokens;
            h -= p * log2(p);
        }
    return h;
}

TEST(text_tiny_charlm_learns_far_below_the_unigram_entropy) {
    char path[128];
    text_tmp(path, sizeof path, "pangram.txt");
    CHECK(pangram_file(path, 100)); /* 4500 characters */
    sp_dataset *tr = NULL, *te = NULL;
    CHECK_OK(sp_dataset_open_text(path, NULL, 0, 16, &tr, &te));
    sp_model *m = tr ? tiny_charlm(tr->classes) : NULL;
    CHECK(m != NULL);
    if (!tr || !te || !m) {
        sp_dataset_free(tr);
        sp_dataset_free(te);
        sp_model_free(m);
        return;
    }
    const double h1 = unigram_bits(tr), uniform = log2((double)tr->classes);
    CHECK(tr->classes == 28 && h1 > 4.3 && h1 < 4.5);
    double loss0 = 0.0, acc0 = 0.0, loss = 0.0, acc = 0.0;
    CHECK_OK(sp_evaluate(m, te, 64, 1, &loss0, &acc0, NULL));
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
    sp_optim *o = NULL;
    CHECK_OK(sp_optim_new(&oc, sp_model_nparams(m), &o));
    sp_train_opts opts = {.epochs = 100, .batch = 16, .max_steps = 300, .nthreads = 1,
                          .sched = {.kind = SP_SCHED_CONSTANT, .lr = 1e-2}};
    sp_train_state state = {.data_seed = 5};
    if (o) CHECK_OK(sp_train(m, o, tr, NULL, &opts, &state));
    CHECK_EQ(state.step, 300);
    int32_t *pred = malloc(sizeof(int32_t) * (size_t)(te->n * te->label_len));
    CHECK_OK(sp_evaluate(m, te, 64, 1, &loss, &acc, pred));
    const double bpc0 = loss0 / log(2.0), bpc = loss / log(2.0);
    /* untrained: about uniform; trained: under 0.5 bits, less than an eighth of the unigram
     * entropy. Anything below the unigram entropy can only come from using the context
     * (attention over the earlier characters); the run reaches about 0.08. */
    CHECK_MSG(bpc0 > 0.8 * uniform, "untrained bpc %.3f, log2(V) %.3f", bpc0, uniform);
    CHECK_MSG(bpc < 0.5, "bits per character %.3f after 300 steps (unigram %.3f, uniform "
              "%.3f)", bpc, h1, uniform);
    /* accuracy per token: the fraction of positions whose prediction is the next character */
    int64_t right = 0;
    for (int64_t i = 0; i < te->n; i++)
        for (int64_t t = 0; t < te->label_len; t++)
            right += pred[i * te->label_len + t] == te->tokens[i * te->label_len + t + 1];
    CHECK(fabs(acc - (double)right / (double)(te->n * te->label_len)) < 1e-12);
    CHECK(acc > 0.8);
    /* the same figures in batches of 1 (one window at a time) */
    double loss1 = 0.0, acc1 = 0.0;
    CHECK_OK(sp_evaluate(m, te, 1, 1, &loss1, &acc1, NULL));
    CHECK(fabs(loss1 - loss) < 1e-5 && acc1 == acc);
    free(pred);
    sp_optim_free(o);
    sp_model_free(m);
    sp_dataset_free(tr);
    sp_dataset_free(te);
    unlink(path);
}

static bool stop_at(const sp_train_report *r, void *user) {
    return r->step < *(const int64_t *)user;
}

/* Text training stopped after 25 steps, saved, loaded and resumed ends bit-identical to an
 * uninterrupted run of 60 steps (2 threads one way, 1 the other). */
TEST(text_training_resumes_bit_for_bit) {
    char path[128], ck_path[128];
    text_tmp(path, sizeof path, "resume.txt");
    text_tmp(ck_path, sizeof ck_path, "resume.sparrow");
    CHECK(pangram_file(path, 30));
    sp_dataset *tr = NULL, *te = NULL, *fit = NULL, *val = NULL;
    CHECK_OK(sp_dataset_open_text(path, NULL, 0, 16, &tr, &te));
    if (tr) CHECK_OK(sp_dataset_split(tr, 4, 0, &fit, &val));
    sp_model *a = fit ? tiny_charlm(fit->classes) : NULL, *b = fit ? tiny_charlm(fit->classes) : NULL;
    sp_optim_config oc = sp_optim_defaults(SP_OPTIM_ADAM);
    sp_optim *oa = NULL, *ob = NULL;
    if (a && b) {
        CHECK_OK(sp_optim_new(&oc, sp_model_nparams(a), &oa));
        CHECK_OK(sp_optim_new(&oc, sp_model_nparams(b), &ob));
    }
    if (!oa || !ob || !val) goto done;
    sp_train_opts opts = {.epochs = 20, .batch = 8, .max_steps = 60, .nthreads = 2,
                          .sched = {.kind = SP_SCHED_COSINE, .lr = 3e-3}};
    sp_train_state sa = {.data_seed = 9}, sb = {.data_seed = 9};
    CHECK_OK(sp_train(a, oa, fit, val, &opts, &sa));
    int64_t stop = 25;
    opts.callback = stop_at;
    opts.user = &stop;
    opts.nthreads = 1;
    CHECK_OK(sp_train(b, ob, fit, val, &opts, &sb));
    CHECK_EQ(sb.step, 25);
    CHECK_OK(sp_checkpoint_save(ck_path, b, ob, &sb, NULL));
    sp_checkpoint ck = {0};
    CHECK_OK(sp_checkpoint_load(ck_path, &ck));
    if (ck.model && ck.optim) {
        opts.callback = NULL;
        sp_train_state sc = ck.state;
        CHECK_OK(sp_train(ck.model, ck.optim, fit, val, &opts, &sc));
        CHECK_EQ(sc.step, 60);
        CHECK(memcmp(sp_model_params(ck.model), sp_model_params(a),
                     sizeof(float) * (size_t)sp_model_nparams(a)) == 0);
    }
    sp_checkpoint_free(&ck);
done:
    sp_optim_free(oa);
    sp_optim_free(ob);
    sp_model_free(a);
    sp_model_free(b);
    sp_dataset_free(fit);
    sp_dataset_free(val);
    sp_dataset_free(tr);
    sp_dataset_free(te);
    unlink(path);
    unlink(ck_path);
}

/* The trainer refuses text that does not fit the model: no context, other vocabulary, a model
 * with one output per sample instead of one per token. */
TEST(text_training_refuses_data_that_does_not_fit) {
    char path[128];
    text_tmp(path, sizeof path, "fit.txt");
    CHECK(pangram_file(path, 10));
    sp_dataset *tr = NULL, *te = NULL;
    CHECK_OK(sp_dataset_open_text(path, NULL, 0, 0, &tr, &te));
    sp_model *m = tr ? tiny_charlm(tr->classes) : NULL, *flat = NULL;
    double loss, acc;
    if (!m) goto done;
    CHECK_STATUS(sp_evaluate(m, tr, 8, 1, &loss, &acc, NULL), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "without a context length") != NULL);
    CHECK_OK(sp_dataset_set_context(tr, 16));
    CHECK_OK(sp_evaluate(m, tr, 8, 1, &loss, &acc, NULL));
    int32_t other[28];
    for (int k = 0; k < 28; k++) other[k] = 0x100 + k;
    CHECK_OK(sp_model_set_vocab(m, other, 28));
    CHECK_STATUS(sp_evaluate(m, tr, 8, 1, &loss, &acc, NULL), SP_EINVAL);
    CHECK(strstr(sp_last_error(), "another vocabulary") != NULL);
    CHECK_OK(sp_model_set_vocab(m, tr->vocab, tr->classes));
    CHECK_OK(sp_evaluate(m, tr, 8, 1, &loss, &acc, NULL));
    CHECK_OK(sp_model_new("input 1 1 16\nembedding vocab=classes dim=4\nflatten\n"
                          "linear out=classes\n", (sp_shape){1, 1, 16}, 28, 1, &flat));
    if (flat) {
        sp_model_set_input_scale(flat, 1.0f);
        CHECK_STATUS(sp_evaluate(flat, tr, 8, 1, &loss, &acc, NULL), SP_ESHAPE);
        CHECK(strstr(sp_last_error(), "16 labels per sample (one per token)") != NULL);
    }
done:
    sp_model_free(m);
    sp_model_free(flat);
    sp_dataset_free(tr);
    sp_dataset_free(te);
    unlink(path);
}

/* ---- the book of the docs -------------------------------------------------------------------- */

#define MOBY_DICK "/usr/share/gocode/src/github.com/colinmarc/hdfs/testdata/mobydick.txt"

/* Moby Dick as Debian ships it (golang-github-colinmarc-hdfs-dev, installed by
 * scripts/install-deps.sh test / data): a BOM, CRLF line ends, 1,257,273 characters of 86
 * kinds (CR and LF among them; the rest is printable ASCII), cut 90/10 for a context of 64. */
TEST(text_moby_dick_real_file) {
    FILE *f = fopen(MOBY_DICK, "rb");
    CHECK_MSG(f != NULL, "%s missing: install Debian's golang-github-colinmarc-hdfs-dev "
              "(scripts/install-deps.sh test)", MOBY_DICK);
    if (!f) return;
    fclose(f);
    sp_dataset *tr = NULL, *te = NULL;
    CHECK_OK(sp_dataset_open_text(MOBY_DICK, NULL, 0, 64, &tr, &te));
    if (!tr || !te) return;
    CHECK_EQ(tr->ntokens + te->ntokens, 1257273);
    CHECK_EQ(te->ntokens, 125727);
    CHECK_EQ(tr->n, 17680);
    CHECK_EQ(te->n, 1964);
    CHECK_EQ(tr->classes, 86);
    CHECK(tr->vocab[0] == '\n' && tr->vocab[1] == '\r' && tr->vocab[2] == ' ' &&
          tr->vocab[85] == 'z');
    CHECK_EQ(tr->vocab[tr->tokens[0]], 'T'); /* "The Project Gutenberg EBook", after the BOM */
    int64_t cr = 0, lf = 0;
    for (int64_t i = 0; i < tr->ntokens; i++) cr += tr->tokens[i] == 1, lf += tr->tokens[i] == 0;
    for (int64_t i = 0; i < te->ntokens; i++) cr += te->tokens[i] == 1, lf += te->tokens[i] == 0;
    CHECK(cr == 22108 && lf == 22108);
    sp_dataset_free(tr);
    sp_dataset_free(te);
}
