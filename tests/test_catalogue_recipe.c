/*
 * test_catalogue_recipe.c - the recipe parser (sp_recipe_parse, docs/RECIPES.md): what it keeps
 * from a valid recipe, and the catalogue of malformed recipes, each named, with its own status
 * and a message naming the line and the bad value, no recipe and no allocation left behind. The
 * fuzz target fuzz/fuzz_recipe.c checks the same parser on mutated text.
 */
#include "test.h"

TEST(recipe_parses_settings_flags_and_layers) {
    const char text[] = "# gradual\n"
                        "epochs 10   # fine-tuning\n"
                        "\tprune-sparsity\t0.9\r\n"
                        "prune-last\n"
                        "\n"
                        "prune-layer 5.linear 0.5\n"
                        "prune-layer 1.linear 0 # kept whole\n"
                        "# naïve UTF-8 in a comment is fine\n";
    sp_recipe *r = NULL;
    CHECK_OK(sp_recipe_parse(text, sizeof text - 1, &r));
    if (!r) return;
    CHECK_EQ(sp_recipe_count(r), 3);
    const char *k, *v;
    int line;
    CHECK_OK(sp_recipe_setting(r, 0, &k, &v, &line));
    CHECK(!strcmp(k, "epochs") && v && !strcmp(v, "10") && line == 2);
    CHECK_OK(sp_recipe_setting(r, 1, &k, &v, &line));
    CHECK(!strcmp(k, "prune-sparsity") && v && !strcmp(v, "0.9") && line == 3);
    CHECK_OK(sp_recipe_setting(r, 2, &k, &v, &line));
    CHECK(!strcmp(k, "prune-last") && v == NULL && line == 4);
    CHECK_STATUS(sp_recipe_setting(r, 3, &k, &v, &line), SP_EINVAL);
    CHECK_EQ(sp_recipe_nlayers(r), 2);
    const char *name;
    double s;
    CHECK_OK(sp_recipe_layer(r, 0, &name, &s, &line));
    CHECK(!strcmp(name, "5.linear") && s == 0.5 && line == 6);
    CHECK_OK(sp_recipe_layer(r, 1, &name, &s, &line));
    CHECK(!strcmp(name, "1.linear") && s == 0.0 && line == 7);
    CHECK(sp_recipe_layers(r) && !strcmp(sp_recipe_layers(r), "5.linear=0.5,1.linear=0"));
    sp_recipe_free(r);
    /* no newline at the end, no prune-layer lines */
    CHECK_OK(sp_recipe_parse("epochs 3", 8, &r));
    CHECK(r && sp_recipe_count(r) == 1 && sp_recipe_layers(r) == NULL);
    sp_recipe_free(r);
    sp_recipe_free(NULL);
    CHECK_STATUS(sp_recipe_parse("epochs 3", 8, NULL), SP_EINVAL);
    CHECK_STATUS(sp_recipe_parse(NULL, 3, &r), SP_EINVAL);
}

/* Every example recipe parses. */
TEST(recipe_examples_parse) {
    static const char *const names[] = {"gradual90", "gradual95_keep_output", "nm24",
                                        "global_from_scratch"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/examples/%s.recipe", SPARROW_SOURCE_DIR, names[i]);
        FILE *f = fopen(path, "rb");
        CHECK_MSG(f != NULL, "%s missing", path);
        if (!f) continue;
        char buf[8192];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        sp_recipe *r = NULL;
        sp_status st = sp_recipe_parse(buf, n, &r);
        CHECK_MSG(st == SP_OK, "%s: %s", names[i], sp_last_error());
        CHECK(r && sp_recipe_count(r) >= 3);
        sp_recipe_free(r);
    }
}

typedef struct bad_recipe {
    const char *name;
    const char *text;
    size_t len; /* 0: strlen(text) */
    sp_status want;
    const char *says;
} bad_recipe;

static const bad_recipe recipe_catalogue[] = {
    {"empty", "", 0, SP_EINVAL, "recipe: no settings"},
    {"only comments", "# nothing\n\n   # here\n", 0, SP_EINVAL, "no settings (only comments"},
    {"NUL byte", "epochs 3\nlr\0 1\n", 13, SP_EFORMAT, "line 2: NUL byte at column 3"},
    {"control byte", "epochs 3\x1b[0m\n", 0, SP_EFORMAT, "line 1: control byte 0x1b at column 9"},
    {"DEL byte", "lr 1e-3\x7f\n", 0, SP_EFORMAT, "line 1: control byte 0x7f"},
    {"non-ASCII in a value", "prune-method magnitüde\n", 0, SP_EFORMAT,
     "line 1: non-ASCII byte 0xc3 at column 20"},
    {"written with dashes", "epochs 3\n--lr 0.1\n", 0, SP_EFORMAT,
     "line 2: write settings without the dashes ('lr', not '--lr')"},
    {"capital letters", "Epochs 3\n", 0, SP_EFORMAT, "line 1: 'Epochs' is not a setting name"},
    {"key=value form", "epochs=3\n", 0, SP_EFORMAT, "'epochs=3' is not a setting name"},
    {"name starting with a digit", "3epochs 3\n", 0, SP_EFORMAT, "'3epochs' is not a setting name"},
    {"name too long",
     "prune-sparsity-prune-sparsity-prune-sparsity-prune-sparsity-prune-sparsity 0.5\n", 0,
     SP_EFORMAT, "setting name of 74 characters (at most 64)"},
    {"two values", "epochs 3 4\n", 0, SP_EFORMAT, "line 1: 'epochs' takes at most one value, found 2"},
    {"sets recipe", "recipe other.recipe\n", 0, SP_EINVAL, "'recipe' cannot be set in a recipe"},
    {"sets resume", "epochs 2\nresume\n", 0, SP_EINVAL, "line 2: 'resume' cannot be set"},
    {"setting twice", "epochs 3\nlr 0.1\nepochs 4\n", 0, SP_EINVAL,
     "line 3: 'epochs' was set already on line 1"},
    {"prune-layer without sparsity", "prune-layer 1.linear\n", 0, SP_EFORMAT,
     "prune-layer takes a layer name and a sparsity, found 1 word after it"},
    {"prune-layer with three words", "prune-layer 1.linear 0.5 0.6\n", 0, SP_EFORMAT,
     "found 3 words after it"},
    {"prune-layer alone", "prune-layer\n", 0, SP_EFORMAT, "found 0 words after it"},
    {"layer name with '='", "prune-layer 1.linear=0.9 0.5\n", 0, SP_EINVAL,
     "layer name '1.linear=0.9' is not 1 to 15"},
    {"layer name with ','", "prune-layer a,b 0.5\n", 0, SP_EINVAL, "layer name 'a,b'"},
    {"layer name too long", "prune-layer 1234567890123456 0.5\n", 0, SP_EINVAL,
     "layer name '1234567890123456'"},
    {"sparsity not a number", "prune-layer 1.linear half\n", 0, SP_EINVAL,
     "sparsity 'half' of layer 1.linear is not a number in [0, 1)"},
    {"sparsity 1", "prune-layer 1.linear 1\n", 0, SP_EINVAL, "sparsity '1' of layer 1.linear"},
    {"sparsity negative", "prune-layer 1.linear -0.1\n", 0, SP_EINVAL, "sparsity '-0.1'"},
    {"sparsity nan", "prune-layer 1.linear nan\n", 0, SP_EINVAL, "sparsity 'nan'"},
    {"sparsity with junk", "prune-layer 1.linear 0.5x\n", 0, SP_EINVAL, "sparsity '0.5x'"},
    {"layer twice", "prune-layer 1.linear 0.5\nprune-layer 1.linear 0.6\n", 0, SP_EINVAL,
     "line 2: layer 1.linear was given already on line 1"},
};

TEST(recipe_catalogue_rejects_each_case) {
    const size_t n = sizeof recipe_catalogue / sizeof recipe_catalogue[0];
    CHECK(n >= 20);
    for (size_t i = 0; i < n; i++) {
        const bad_recipe *c = &recipe_catalogue[i];
        const int64_t live = sp_alloc_live();
        sp_recipe *r = (sp_recipe *)&live; /* must come back NULL */
        sp_clear_error();
        sp_status st = sp_recipe_parse(c->text, c->len ? c->len : strlen(c->text), &r);
        CHECK_MSG(st == c->want, "%s: got %s, want %s (%s)", c->name, sp_status_name(st),
                  sp_status_name(c->want), sp_last_error());
        CHECK_MSG(strstr(sp_last_error(), c->says) != NULL, "%s: message '%s' lacks '%s'",
                  c->name, sp_last_error(), c->says);
        CHECK_MSG(r == NULL, "%s: a recipe came out", c->name);
        CHECK_MSG(sp_alloc_live() == live, "%s: allocations leaked", c->name);
    }
}

/* Limits: a line over 4096 bytes, more than 64 settings, more than 1 MiB. */
TEST(recipe_catalogue_limits) {
    const size_t big = ((size_t)1 << 20) + 1;
    char *t = sp_alloc(big + 1);
    if (!t) return;
    sp_recipe *r = NULL;
    /* a 4097-byte line */
    memset(t, 'a', 4097);
    t[4097] = '\n';
    CHECK_STATUS(sp_recipe_parse(t, 4098, &r), SP_EFORMAT);
    CHECK_MSG(strstr(sp_last_error(), "line 1: 4097 bytes long (at most 4096)"), "%s", sp_last_error());
    /* 4096 bytes: a name too long, but not a line too long */
    CHECK_STATUS(sp_recipe_parse(t, 4096, &r), SP_EFORMAT);
    CHECK_MSG(strstr(sp_last_error(), "setting name of 4096 characters"), "%s", sp_last_error());
    /* 65 settings */
    size_t at = 0, at64 = 0;
    for (int i = 0; i < 65; i++) {
        if (i == 64) at64 = at;
        at += (size_t)sprintf(t + at, "s%d 1\n", i);
    }
    CHECK_STATUS(sp_recipe_parse(t, at, &r), SP_EFORMAT);
    CHECK_MSG(strstr(sp_last_error(), "line 65: more than 64 settings"), "%s", sp_last_error());
    CHECK_OK(sp_recipe_parse(t, at64, &r)); /* 64 are fine */
    CHECK(r && sp_recipe_count(r) == 64);
    sp_recipe_free(r);
    r = NULL;
    /* 257 prune-layer lines */
    at = 0;
    for (int i = 0; i < 257; i++) at += (size_t)sprintf(t + at, "prune-layer l%d 0.5\n", i);
    CHECK_STATUS(sp_recipe_parse(t, at, &r), SP_EFORMAT);
    CHECK_MSG(strstr(sp_last_error(), "line 257: more than 256 prune-layer lines"), "%s",
              sp_last_error());
    /* more than 1 MiB, whatever it holds */
    memset(t, '#', big);
    CHECK_STATUS(sp_recipe_parse(t, big, &r), SP_EFORMAT);
    CHECK_MSG(strstr(sp_last_error(), "1048577 bytes, more than the 1048576"), "%s", sp_last_error());
    CHECK(r == NULL);
    sp_free(t);
}
