/*
 * test_catalogue_config.c - the catalogue of malformed model configs (docs/CONFIG.md): each
 * named case is config text that sp_model_new_limited must refuse with its own status and a
 * message naming the line and the bad value, leaving no model and no allocation behind. The
 * fuzz target fuzz/fuzz_config.c checks the same calls on mutated text; tests/test_nn.c has the
 * basic grammar cases (unknown layers, options given twice, unclosed blocks).
 */
#include "test.h"

typedef struct bad_config {
    const char *name;
    const char *text;
    sp_status want;
    const char *says;
} bad_config;

static const bad_config config_catalogue[] = {
    {"input size 0", "input 0 28 28\nrelu\n", SP_EINVAL, "line 1: input size '0' is not in [1, 2^24]"},
    {"input size not a number", "input 1 2x8 28\nrelu\n", SP_EINVAL, "input size '2x8'"},
    {"input with four sizes", "input 1 28 28 3\nrelu\n", SP_EINVAL, "line 1: write 'input C [H W]'"},
    {"input bigger than 2^24", "input 16777217\nrelu\n", SP_EINVAL, "input size '16777217'"},
    {"conv2d without k", "input 1 28 28\nconv2d out=4\n", SP_EINVAL,
     "line 2 (conv2d): k=K or k=KHxKW is required"},
    {"conv2d kernel over the input", "input 1 28 28\nconv2d out=4 k=29\n", SP_ESHAPE,
     "kernel 29x29 is larger than the padded input 28x28"},
    {"conv2d groups not dividing", "input 1 28 28\nconv2d out=4 k=3 groups=3\n", SP_EINVAL,
     "groups=3 does not divide out=4"},
    {"conv2d stride 0", "input 1 28 28\nconv2d out=4 k=3 stride=0\n", SP_EINVAL,
     "stride=0 is not N or AxB"},
    {"conv2d pad cut short", "input 1 28 28\nconv2d out=4 k=3 pad=2x\n", SP_EINVAL,
     "pad=2x is not N or AxB"},
    {"maxpool pad over half the kernel", "input 1 28 28\nmaxpool k=2 pad=2\n", SP_EINVAL,
     "pad=2x2 is more than half the kernel 2x2"},
    {"avgpool without k", "input 1 28 28\navgpool\n", SP_EINVAL,
     "line 2 (avgpool): k=K or k=KHxKW is required"},
    {"batchnorm eps 0", "input 1 28 28\nbatchnorm eps=0\n", SP_EINVAL,
     "eps=0 is not a number in [1e-30, 1]"},
    {"batchnorm momentum 2", "input 1 28 28\nbatchnorm momentum=2\n", SP_EINVAL,
     "momentum=2 is not a number in [0, 1]"},
    {"layernorm eps negative", "input 8 1 4\nlayernorm eps=-1\n", SP_EINVAL,
     "eps=-1 is not a number in [1e-12, 1]"},
    {"bsr block 0", "input 1 28 28\nflatten\nlinear out=4 format=bsr block=0x4\n", SP_EINVAL,
     "line 3 (linear): block=0x4"},
    {"linear too wide", "input 1 28 28\nflatten\nlinear out=100000000\n", SP_EINVAL,
     "out=100000000 is not an integer in [1, 16777216]"},
    {"linear out overflowing int64", "input 8 1 4\nlinear out=99999999999999999999\n", SP_EINVAL,
     "out=99999999999999999999 is not an integer"},
    {"linear out empty", "input 8 1 4\nlinear out= \n", SP_EINVAL, "out= is not an integer"},
    {"option without a key", "input 8 1 4\nlinear =4\n", SP_EINVAL, "'=4' is not key=value"},
    {"linear bias 2", "input 8 1 4\nlinear out=4 bias=2\n", SP_EINVAL,
     "bias=2 is not an integer in [0, 1]"},
    {"nm with M 0", "input 8 1 4\nlinear out=4 format=nm nm=2:0\n", SP_EINVAL,
     "nm=2:0 is not N:M"},
    {"density over 1", "input 8 1 4\nlinear out=classes format=csr density=1.5\n", SP_EINVAL,
     "density=1.5 is not a number"},
    {"density nan", "input 8 1 4\nlinear out=4 density=nan format=mask\n", SP_EINVAL,
     "density=nan is not a number"},
    {"dropout p negative", "input 8 1 4\ndropout p=-0.1\n", SP_EINVAL,
     "p=-0.1 is not a number in [0, 0.999]"},
    {"more than 16 options",
     "input 8 1 4\nlinear out=4 a=1 b=2 c=3 d=4 e=5 f=6 g=7 h=8 i=9 j=10 k=11 l=12 m=13 n=14 "
     "o=15 p=16 q=17\n",
     SP_EINVAL, "line 2: more than 16 options"},
    {"embedding dim 0", "input 1 1 8\nembedding vocab=classes dim=0\n", SP_EINVAL,
     "dim=0 is not an integer"},
    {"attention heads not dividing", "input 8 1 4\nattention heads=3\n", SP_EINVAL,
     "heads=3 does not divide the model width d=8"},
    {"attention heads 0", "input 8 1 4\nattention heads=0\n", SP_EINVAL, "heads=0"},
    {"moe top_k over experts", "input 8 1 4\nmoe experts=4 top_k=5 {\nlinear out=8\n}\n",
     SP_EINVAL, "top_k=5 exceeds experts=4"},
    {"moe expert changing the shape", "input 8 1 4\nmoe experts=4 top_k=1 {\nlinear out=7\n}\n",
     SP_ESHAPE, "an expert maps a token (8,1,1) to (7,1,1)"},
    {"moe unknown routing",
     "input 8 1 4\nmoe experts=4 top_k=1 routing=bogus {\nlinear out=8\n}\n", SP_EINVAL,
     "routing=bogus is not one of token, noisy, expert"},
    {"moe empty body", "input 8 1 4\nmoe experts=4 top_k=1 {\n}\n", SP_EINVAL,
     "the expert body is empty"},
    {"residual nested 9 deep",
     "input 8 1 4\nresidual {\nresidual {\nresidual {\nresidual {\nresidual {\nresidual {\n"
     "residual {\nresidual {\nresidual {\nrelu\n}\n}\n}\n}\n}\n}\n}\n}\n}\n",
     SP_EINVAL, "line 9: residual blocks nested deeper than 8"},
    {"block on a plain layer", "input 8 1 4\nrelu {\n}\n", SP_EINVAL, "'{' is not key=value"},
    {"unknown option on relu", "input 8 1 4\nrelu x=1\n", SP_EINVAL, "(relu): unknown option 'x'"},
    {"over the parameter budget", "input 1 28 28\nflatten\nlinear out=2000\n", SP_EFORMAT,
     "linear"},
};

TEST(config_catalogue_rejects_each_case) {
    const size_t n = sizeof config_catalogue / sizeof config_catalogue[0];
    CHECK(n >= 20);
    for (size_t i = 0; i < n; i++) {
        const bad_config *c = &config_catalogue[i];
        const int64_t live = sp_alloc_live();
        sp_shape in = {1, 8, 8};
        bool found = false;
        sp_clear_error();
        sp_status st = sp_model_config_input(c->text, &in, &found);
        sp_model *m = (sp_model *)&in; /* must come back NULL */
        if (st == SP_OK) {
            if (!found) in = (sp_shape){1, 8, 8};
            st = sp_model_new_limited(c->text, in, 10, 1, (int64_t)1 << 20, &m);
        } else {
            m = NULL;
        }
        CHECK_MSG(st == c->want, "%s: got %s, want %s (%s)", c->name, sp_status_name(st),
                  sp_status_name(c->want), sp_last_error());
        CHECK_MSG(strstr(sp_last_error(), c->says) != NULL, "%s: message '%s' lacks '%s'",
                  c->name, sp_last_error(), c->says);
        CHECK_MSG(m == NULL, "%s: a model came out", c->name);
        CHECK_MSG(sp_alloc_live() == live, "%s: %lld allocations leaked", c->name,
                  (long long)(sp_alloc_live() - live));
    }
}

/* The catalogue's texts are one edit away from valid configs: the fixed versions build, so each
 * case fails for the reason it names and not for another. */
TEST(config_catalogue_cases_are_one_edit_from_valid) {
    static const struct {
        const char *text;
        sp_shape in;
    } fixed[] = {
        {"input 1 28 28\nconv2d out=4 k=3\n", {1, 28, 28}},
        {"input 1 28 28\nconv2d out=4 k=3 groups=1\n", {1, 28, 28}},
        {"input 1 28 28\nmaxpool k=2 pad=1\n", {1, 28, 28}},
        {"input 1 28 28\nbatchnorm eps=1e-5 momentum=1\n", {1, 28, 28}},
        {"input 8 1 4\nattention heads=4\n", {8, 1, 4}},
        {"input 8 1 4\nmoe experts=4 top_k=4 {\nlinear out=8\n}\n", {8, 1, 4}},
        /* 7 nested residual blocks build (8 already fail, although the message says "deeper
         * than 8": model.c's check is depth + 1 >= 8) */
        {"input 8 1 4\nresidual {\nresidual {\nresidual {\nresidual {\nresidual {\nresidual {\n"
         "residual {\nrelu\n}\n}\n}\n}\n}\n}\n}\n", {8, 1, 4}},
        {"input 1 28 28\nflatten\nlinear out=1000\n", {1, 28, 28}},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        sp_model *m = NULL;
        sp_status st = sp_model_new_limited(fixed[i].text, fixed[i].in, 10, 1, (int64_t)1 << 20, &m);
        CHECK_MSG(st == SP_OK, "fixed case %zu: %s", i, sp_last_error());
        sp_model_free(m);
    }
}
