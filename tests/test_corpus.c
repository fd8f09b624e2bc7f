/*
 * test_corpus.c - the fuzz corpora replayed through the fuzz targets' own code: every file of
 * fuzz/corpus/{idx,text,config,recipe}/ goes to that target's LLVMFuzzerTestOneInput, compiled
 * here from fuzz/fuzz_<name>.c under another name. A broken invariant (the targets' MUST) names
 * the corpus file and aborts the suite, as it crashes the fuzzer; the harness also checks that
 * nothing leaks. Inputs the fuzzer finds worth keeping can be copied into fuzz/corpus/<name>/
 * and are then replayed here on every run.
 */
#include <dirent.h>
#include <stdlib.h>

#include "test.h"

static const char *replaying; /* the corpus file being replayed, for MUST's message */

#define MUST(cond)                                                                              \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "%s:%d: MUST(%s) failed replaying %s\n", __FILE__, __LINE__, #cond, \
                    replaying);                                                                 \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

#define LLVMFuzzerTestOneInput fuzz_idx_one
#include "../fuzz/fuzz_idx.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_text_one
#include "../fuzz/fuzz_text.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_config_one
#include "../fuzz/fuzz_config.c"
#undef LLVMFuzzerTestOneInput
static const int64_t config_max_params = MAX_PARAMS;
#undef MAX_PARAMS
#undef MAX_ACT
#define LLVMFuzzerTestOneInput fuzz_recipe_one
#include "../fuzz/fuzz_recipe.c"
#undef LLVMFuzzerTestOneInput

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);

/* Replays every file of fuzz/corpus/<name>/ through fn; returns the number of files, and calls
 * check (if not NULL) with each file's bytes for what a seed must also satisfy. */
static int replay(const char *name, fuzz_fn fn,
                  void (*check)(const char *file, const uint8_t *data, size_t size)) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/fuzz/corpus/%s", SPARROW_SOURCE_DIR, name);
    DIR *d = opendir(dir);
    CHECK_MSG(d != NULL, "%s missing", dir);
    if (!d) return 0;
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        CHECK_MSG(f != NULL, "cannot open %s", path);
        if (!f) continue;
        uint8_t *buf = malloc(1 << 20);
        size_t n = buf ? fread(buf, 1, 1 << 20, f) : 0;
        fclose(f);
        CHECK_MSG(buf && n < (1 << 20), "%s: larger than 1 MiB", path);
        if (!buf) continue;
        replaying = path;
        const int64_t live = sp_alloc_live();
        CHECK_EQ(fn(buf, n), 0);
        CHECK_MSG(sp_alloc_live() == live, "%s: %lld allocations leaked", path,
                  (long long)(sp_alloc_live() - live));
        if (check) check(e->d_name, buf, n);
        free(buf);
        files++;
    }
    closedir(d);
    return files;
}

TEST(corpus_idx_replays) {
    CHECK(replay("idx", fuzz_idx_one, NULL) >= 4);
}

TEST(corpus_text_replays) {
    CHECK(replay("text", fuzz_text_one, NULL) >= 6);
}

/* A config seed must also build (an invalid seed starts the fuzzer from an error path only). */
static void config_seed_builds(const char *file, const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    sp_shape in = {1, 8, 8};
    bool found = false;
    CHECK_OK(sp_model_config_input(text, &in, &found));
    CHECK_MSG(found, "%s: no input line", file);
    sp_model *m = NULL;
    sp_status st = sp_model_new_limited(text, in, 10, 1, config_max_params, &m);
    CHECK_MSG(st == SP_OK, "%s: %s", file, sp_last_error());
    sp_model_free(m);
    free(text);
}

TEST(corpus_config_replays) {
    CHECK(replay("config", fuzz_config_one, config_seed_builds) >= 10);
}

/* A recipe seed must also parse. */
static void recipe_seed_parses(const char *file, const uint8_t *data, size_t size) {
    sp_recipe *r = NULL;
    sp_status st = sp_recipe_parse((const char *)data, size, &r);
    CHECK_MSG(st == SP_OK, "%s: %s", file, sp_last_error());
    CHECK_MSG(r && sp_recipe_count(r) + sp_recipe_nlayers(r) >= 1, "%s: empty", file);
    sp_recipe_free(r);
}

TEST(corpus_recipe_replays) {
    CHECK(replay("recipe", fuzz_recipe_one, recipe_seed_parses) >= 4);
}
