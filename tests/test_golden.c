/*
 * test_golden.c - replays the PyTorch golden fixtures of tests/golden/ (made by tools/golden.py,
 * format in tests/golden/README.md) without PyTorch: forward outputs, losses, every gradient,
 * BatchNorm statistics and 10 steps of Adam, SGD (Nesterov, weight decay) and AdamW, compared
 * with |c - golden| <= 1e-6 + 1e-4 |golden|.
 *
 * PyTorch tensors are batch-first; sparrow's are feature-major with the batch innermost. A
 * PyTorch (B, T, C) tensor (images: T = 1, C = C*H*W) maps to sparrow's element
 * (c * T + t) * B + b. Parameters keep PyTorch's own layouts ((out, in) Linear weights,
 * (out, in/groups, kh, kw) convolutions), so they are copied as they are, in the order each case
 * lists.
 */
#include <math.h>
#include <stdlib.h>

#include "test.h"

/* ---- fixture files ---------------------------------------------------------------------------- */

typedef struct record {
    char name[64];
    int ndim;
    int64_t dims[6];
    int64_t count;
    float *v;
} record;

typedef struct fixture {
    int n;
    record *r;
} fixture;

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void fixture_free(fixture *f) {
    for (int i = 0; i < f->n; i++) free(f->r[i].v);
    free(f->r);
    f->n = 0;
    f->r = NULL;
}

/* Reads tests/golden/<name>; the test fails (never crashes) on a malformed file. */
static bool fixture_load(const char *name, fixture *f) {
    char path[256];
    snprintf(path, sizeof path, "%s/tests/golden/%s", SPARROW_SOURCE_DIR, name);
    uint8_t *b = NULL;
    size_t len = 0;
    memset(f, 0, sizeof *f);
    if (sp_file_read(path, 1 << 24, &b, &len) != SP_OK) {
        CHECK_MSG(false, "cannot read %s: %s", path, sp_last_error());
        return false;
    }
    bool ok = len >= 12 && memcmp(b, "SPGF", 4) == 0 && rd32(b + 4) == 1;
    uint32_t count = ok ? rd32(b + 8) : 0;
    ok = ok && count < 1000;
    f->r = ok ? calloc(count, sizeof *f->r) : NULL;
    size_t pos = 12;
    for (uint32_t i = 0; ok && i < count; i++) {
        record *r = &f->r[i];
        if (len - pos < 4) { ok = false; break; }
        uint32_t nl = rd32(b + pos);
        pos += 4;
        if (nl >= sizeof r->name || len - pos < nl + 4) { ok = false; break; }
        memcpy(r->name, b + pos, nl);
        pos += nl;
        uint32_t nd = rd32(b + pos);
        pos += 4;
        if (nd > 6 || len - pos < 4 * (size_t)nd) { ok = false; break; }
        r->ndim = (int)nd;
        r->count = 1;
        for (uint32_t d = 0; d < nd; d++, pos += 4) {
            r->dims[d] = rd32(b + pos);
            r->count *= r->dims[d];
        }
        if (r->count > (1 << 20) || len - pos < 4 * (size_t)r->count) { ok = false; break; }
        r->v = malloc(sizeof(float) * (size_t)r->count);
        memcpy(r->v, b + pos, 4 * (size_t)r->count); /* little-endian host (x86, aarch64) */
        pos += 4 * (size_t)r->count;
        f->n++;
    }
    ok = ok && pos == len;
    CHECK_MSG(ok, "%s: malformed fixture", path);
    sp_free(b);
    if (!ok) fixture_free(f);
    return ok;
}

static const record *find(const fixture *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->r[i].name, name) == 0) return &f->r[i];
    CHECK_MSG(false, "fixture has no record '%s'", name);
    return NULL;
}

/* ---- layout ---------------------------------------------------------------------------------- */

/* PyTorch (B, T, C) -> sparrow (C, T, B) */
static void to_fm(const float *t, int64_t B, int64_t T, int64_t C, float *s) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t tt = 0; tt < T; tt++)
            for (int64_t c = 0; c < C; c++) s[(c * T + tt) * B + b] = t[(b * T + tt) * C + c];
}

static const sp_tol GOLDEN_TOL = {1e-6, 1e-4};

static void check_close(const char *what, const float *got, const float *want, int64_t n) {
    char why[256];
    if (!sp_close(got, want, NULL, n, GOLDEN_TOL, why, sizeof why))
        CHECK_MSG(false, "%s: %s", what, why);
}

/* ---- cases ----------------------------------------------------------------------------------- */

typedef struct golden_case {
    const char *file;
    const char *config;
    sp_shape in;
    int64_t classes;
    int64_t T, C;           /* output per sample as PyTorch (T, C); input as (T, Cin) */
    int64_t in_T, in_C;
    bool mse;               /* MSE against "targets" instead of cross-entropy on "labels" */
    float smoothing;
    bool int_input;         /* token ids: no input gradient */
    const char *params[32]; /* fixture parameter names in sparrow's arena order; "0:N" = N zeros
                             * for a sparrow parameter the fixture does not have */
    const char *buffers[8]; /* BatchNorm running_mean / running_var in sparrow's state order */
} golden_case;

typedef struct replay {
    const golden_case *gc;
    fixture f;
    sp_model *m;
    int64_t B;
    float *x, *dy, *dx, *target;
    int32_t *labels;
    float *p0, *b0;         /* initial parameters and buffers, sparrow order */
} replay;

/* Copies fixture records prefix+name, in case order, into dst (sparrow arena order); entries
 * "0:N" are N zeros (or are skipped by compare). Returns floats written. */
static int64_t gather(const replay *r, const char *const *names, const char *prefix, float *dst,
                      bool *skip) {
    int64_t off = 0;
    for (int i = 0; names[i]; i++) {
        if (names[i][0] == '0' && names[i][1] == ':') {
            int64_t n = atoll(names[i] + 2);
            for (int64_t k = 0; k < n; k++) {
                dst[off + k] = 0.0f;
                if (skip) skip[off + k] = true;
            }
            off += n;
            continue;
        }
        char full[96];
        snprintf(full, sizeof full, "%s%s", prefix, names[i]);
        const record *rec = find(&r->f, full);
        if (!rec) return -1;
        memcpy(dst + off, rec->v, sizeof(float) * (size_t)rec->count);
        if (skip)
            for (int64_t k = 0; k < rec->count; k++) skip[off + k] = false;
        off += rec->count;
    }
    return off;
}

/* Compares arena values with the fixture records prefix+name (skipping "0:N" entries). */
static void compare_arena(const replay *r, const char *const *names, const char *prefix,
                          const float *arena, int64_t n) {
    float *want = malloc(sizeof(float) * (size_t)(n + 1));
    bool *skip = malloc((size_t)n + 1);
    int64_t got = gather(r, names, prefix, want, skip);
    CHECK_MSG(got == n, "%s%s: %lld floats in the fixture, %lld in sparrow", prefix, r->gc->file,
              (long long)got, (long long)n);
    if (got == n) {
        int64_t off = 0;
        for (int i = 0; names[i]; i++) {
            int64_t cnt;
            if (names[i][0] == '0' && names[i][1] == ':') {
                off += atoll(names[i] + 2);
                continue;
            }
            char what[128];
            snprintf(what, sizeof what, "%s: %s%s", r->gc->file, prefix, names[i]);
            char full[96];
            snprintf(full, sizeof full, "%s%s", prefix, names[i]);
            const record *rec = find(&r->f, full);
            cnt = rec ? rec->count : 0;
            check_close(what, arena + off, want + off, cnt);
            off += cnt;
        }
    }
    free(want);
    free(skip);
}

static bool replay_open(const golden_case *gc, replay *r) {
    memset(r, 0, sizeof *r);
    r->gc = gc;
    if (!fixture_load(gc->file, &r->f)) return false;
    sp_status st = sp_model_new(gc->config, gc->in, gc->classes, 1, &r->m);
    CHECK_MSG(st == SP_OK, "%s: model: %s", gc->file, sp_last_error());
    if (st != SP_OK) return false;
    sp_model_set_threads(r->m, 1);
    const record *in = find(&r->f, "input");
    if (!in) return false;
    r->B = in->dims[0];
    int64_t nin = in->count, nout = r->B * gc->T * gc->C;
    r->x = malloc(sizeof(float) * (size_t)nin);
    r->dx = malloc(sizeof(float) * (size_t)nin);
    r->dy = malloc(sizeof(float) * (size_t)nout);
    r->target = malloc(sizeof(float) * (size_t)nout);
    r->labels = malloc(sizeof(int32_t) * (size_t)(r->B * gc->T));
    to_fm(in->v, r->B, gc->in_T, gc->in_C, r->x);
    if (gc->mse) {
        const record *t = find(&r->f, "targets");
        if (!t) return false;
        to_fm(t->v, r->B, gc->T, gc->C, r->target);
    } else {
        const record *l = find(&r->f, gc->T > 1 ? "targets" : "labels");
        if (!l) return false;
        for (int64_t b = 0; b < r->B; b++)
            for (int64_t t = 0; t < gc->T; t++) r->labels[t * r->B + b] = (int32_t)l->v[b * gc->T + t];
    }
    int64_t np = sp_model_nparams(r->m), nb = sp_model_nbuffers(r->m);
    r->p0 = malloc(sizeof(float) * (size_t)(np + 1));
    r->b0 = malloc(sizeof(float) * (size_t)(nb + 1));
    int64_t got = gather(r, gc->params, "param.", r->p0, NULL);
    CHECK_MSG(got == np, "%s: fixture has %lld parameters, sparrow %lld", gc->file, (long long)got,
              (long long)np);
    if (got != np) return false;
    if (nb) {
        got = gather(r, gc->buffers, "buffer.", r->b0, NULL);
        CHECK_MSG(got == nb, "%s: fixture has %lld buffers, sparrow %lld", gc->file,
                  (long long)got, (long long)nb);
        if (got != nb) return false;
    }
    return true;
}

static void replay_close(replay *r) {
    fixture_free(&r->f);
    sp_model_free(r->m);
    free(r->x);
    free(r->dx);
    free(r->dy);
    free(r->target);
    free(r->labels);
    free(r->p0);
    free(r->b0);
}

static void reset(replay *r) {
    memcpy(sp_model_params(r->m), r->p0, sizeof(float) * (size_t)sp_model_nparams(r->m));
    if (sp_model_nbuffers(r->m))
        memcpy(sp_model_buffers(r->m), r->b0, sizeof(float) * (size_t)sp_model_nbuffers(r->m));
}

/* forward (train or eval), loss and its gradient into r->dy */
static double loss_of(replay *r, bool train, const float **y) {
    CHECK_OK(sp_model_forward(r->m, r->x, r->B, train, y));
    double loss = NAN;
    const golden_case *gc = r->gc;
    if (gc->mse)
        CHECK_OK(sp_loss_mse(*y, r->target, r->B * gc->T * gc->C, &loss, r->dy));
    else
        CHECK_OK(sp_loss_xent(*y, gc->C, r->B * gc->T, r->labels, gc->smoothing, &loss, r->dy, NULL));
    return loss;
}

static void replay_case(const golden_case *gc) {
    replay r;
    if (!replay_open(gc, &r)) {
        replay_close(&r);
        return;
    }
    const int64_t nout = r.B * gc->T * gc->C, np = sp_model_nparams(r.m);
    float *want = malloc(sizeof(float) * (size_t)(nout + r.B * gc->in_T * gc->in_C));
    char what[128];

    /* one forward and backward in train mode */
    reset(&r);
    const float *y;
    double loss = loss_of(&r, true, &y);
    to_fm(find(&r.f, "output")->v, r.B, gc->T, gc->C, want);
    snprintf(what, sizeof what, "%s: output", gc->file);
    check_close(what, y, want, nout);
    float lf = (float)loss;
    snprintf(what, sizeof what, "%s: loss", gc->file);
    check_close(what, &lf, find(&r.f, "loss")->v, 1);
    sp_model_zero_grad(r.m);
    CHECK_OK(sp_model_backward(r.m, r.dy, gc->int_input ? NULL : r.dx));
    compare_arena(&r, gc->params, "grad.", sp_model_grads(r.m), np);
    if (!gc->int_input) {
        to_fm(find(&r.f, "grad.input")->v, r.B, gc->in_T, gc->in_C, want);
        snprintf(what, sizeof what, "%s: grad.input", gc->file);
        check_close(what, r.dx, want, r.B * gc->in_T * gc->in_C);
    }
    if (sp_model_nbuffers(r.m))
        compare_arena(&r, gc->buffers, "after.", sp_model_buffers(r.m), sp_model_nbuffers(r.m));

    /* 10 steps of each optimizer from the initial parameters and buffers */
    static const struct {
        const char *name;
        sp_optim_kind kind;
        float lr, momentum, wd;
        bool nesterov;
    } opts[] = {{"adam", SP_OPTIM_ADAM, 1e-2f, 0.0f, 0.0f, false},
                {"sgd", SP_OPTIM_SGD, 0.05f, 0.9f, 1e-3f, true},
                {"adamw", SP_OPTIM_ADAMW, 1e-2f, 0.0f, 0.1f, false}};
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
        reset(&r);
        sp_optim_config oc = sp_optim_defaults(opts[k].kind);
        oc.momentum = opts[k].momentum;
        oc.nesterov = opts[k].nesterov;
        oc.weight_decay = opts[k].wd;
        sp_optim *o = NULL;
        CHECK_OK(sp_optim_new(&oc, np, &o));
        if (!o) break;
        float losses[10];
        for (int s = 0; s < 10; s++) {
            losses[s] = (float)loss_of(&r, true, &y);
            sp_model_zero_grad(r.m);
            CHECK_OK(sp_model_backward(r.m, r.dy, NULL));
            CHECK_OK(sp_optim_step(o, sp_model_params(r.m), sp_model_grads(r.m), opts[k].lr));
        }
        sp_optim_free(o);
        char name[64];
        snprintf(name, sizeof name, "%s.losses", opts[k].name);
        snprintf(what, sizeof what, "%s: %s", gc->file, name);
        check_close(what, losses, find(&r.f, name)->v, 10);
        snprintf(name, sizeof name, "%s.final.", opts[k].name);
        compare_arena(&r, gc->params, name, sp_model_params(r.m), np);
        if (sp_model_nbuffers(r.m))
            compare_arena(&r, gc->buffers, name, sp_model_buffers(r.m), sp_model_nbuffers(r.m));
        if (opts[k].kind == SP_OPTIM_ADAM) {
            CHECK_OK(sp_model_forward(r.m, r.x, r.B, false, &y));
            to_fm(find(&r.f, "eval.output")->v, r.B, gc->T, gc->C, want);
            snprintf(what, sizeof what, "%s: eval.output", gc->file);
            check_close(what, y, want, nout);
        }
    }
    free(want);
    replay_close(&r);
}

TEST(golden_mlp_matches_pytorch) {
    static const golden_case gc = {
        .file = "mlp.bin",
        .config = "flatten\nlinear out=16\nrelu\nlinear out=12\ntanh\nlinear out=classes\n",
        .in = {20, 1, 1}, .classes = 10, .T = 1, .C = 10, .in_T = 1, .in_C = 20,
        .smoothing = 0.1f,
        .params = {"1.weight", "1.bias", "3.weight", "3.bias", "5.weight", "5.bias", NULL}};
    replay_case(&gc);
}

TEST(golden_mlp_mse_matches_pytorch) {
    static const golden_case gc = {
        .file = "mlp_mse.bin",
        .config = "linear out=5\nsigmoid\nlinear out=4\nsilu\nlinear out=3\n",
        .in = {6, 1, 1}, .classes = 3, .T = 1, .C = 3, .in_T = 1, .in_C = 6, .mse = true,
        .params = {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias", NULL}};
    replay_case(&gc);
}

TEST(golden_activations_match_pytorch) {
    fixture f;
    if (!fixture_load("act.bin", &f)) return;
    const record *in = find(&f, "input"), *dyr = find(&f, "dy");
    if (!in || !dyr) {
        fixture_free(&f);
        return;
    }
    const int64_t B = in->dims[0], C = in->dims[1], n = B * C;
    float *x = malloc(4 * (size_t)n), *dy = malloc(4 * (size_t)n), *dx = malloc(4 * (size_t)n);
    float *want = malloc(4 * (size_t)n);
    to_fm(in->v, B, 1, C, x);
    to_fm(dyr->v, B, 1, C, dy);
    const char *acts[] = {"gelu", "silu", "tanh", "sigmoid", "relu", "softmax"};
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        sp_model *m = NULL;
        char cfg[32], name[64];
        snprintf(cfg, sizeof cfg, "%s\n", acts[a]);
        CHECK_OK(sp_model_new(cfg, (sp_shape){C, 1, 1}, C, 1, &m));
        if (!m) continue;
        const float *y;
        CHECK_OK(sp_model_forward(m, x, B, true, &y));
        snprintf(name, sizeof name, "act.%s.output", acts[a]);
        to_fm(find(&f, name)->v, B, 1, C, want);
        check_close(name, y, want, n);
        CHECK_OK(sp_model_backward(m, dy, dx));
        snprintf(name, sizeof name, "act.%s.grad_input", acts[a]);
        to_fm(find(&f, name)->v, B, 1, C, want);
        check_close(name, dx, want, n);
        sp_model_free(m);
    }
    free(x);
    free(dy);
    free(dx);
    free(want);
    fixture_free(&f);
}

TEST(golden_cnn_matches_pytorch) {
    /* conv + BatchNorm2d + depthwise-separable block + max and average pooling */
    static const golden_case gc = {
        .file = "cnn.bin",
        .config = "conv2d out=4 k=3 pad=1 bias=0\nbatchnorm\nrelu\n"
                  "conv2d out=4 k=3 stride=2 pad=1 groups=4 bias=0\nbatchnorm\nrelu\n"
                  "conv2d out=8 k=1\nrelu\nmaxpool k=2\navgpool k=2\nflatten\nlinear out=classes\n",
        .in = {1, 8, 8}, .classes = 10, .T = 1, .C = 10, .in_T = 1, .in_C = 64,
        .params = {"0.weight", "1.weight", "1.bias", "3.weight", "4.weight", "4.bias", "6.weight",
                   "6.bias", "11.weight", "11.bias", NULL},
        .buffers = {"1.running_mean", "1.running_var", "4.running_mean", "4.running_var", NULL}};
    replay_case(&gc);
}

TEST(golden_cnn2_matches_pytorch) {
    /* grouped (non-depthwise) convolution on odd sizes, BatchNorm1d after flatten */
    static const golden_case gc = {
        .file = "cnn2.bin",
        .config = "conv2d out=6 k=3 stride=2 pad=1 groups=2 bias=0\nmaxpool k=2 stride=2\n"
                  "flatten\nbatchnorm\nlinear out=classes\n",
        .in = {2, 7, 7}, .classes = 5, .T = 1, .C = 5, .in_T = 1, .in_C = 98,
        .params = {"0.weight", "3.weight", "3.bias", "4.weight", "4.bias", NULL},
        .buffers = {"3.running_mean", "3.running_var", NULL}};
    replay_case(&gc);
}

TEST(golden_transformer_matches_pytorch) {
    /* token + position embeddings, pre-norm causal attention and GELU MLP blocks, final norm,
     * a head over every position; cross-entropy over all B*T tokens. The fixture's key
     * projection has no bias (tests/golden/README.md: its gradient is zero in exact
     * arithmetic); sparrow's attention has one, held at zero and not compared. */
    static const golden_case gc = {
        .file = "transformer.bin",
        .config = "embedding vocab=11 dim=8\nposembed\n"
                  "residual {\n layernorm\n attention heads=2\n}\n"
                  "residual {\n layernorm\n linear out=32\n gelu\n linear out=8\n}\n"
                  "layernorm\nlinear out=classes\n",
        .in = {1, 1, 5}, .classes = 11, .T = 5, .C = 11, .in_T = 5, .in_C = 1,
        .int_input = true,
        .params = {"tok_emb.weight", "pos_emb.weight", "ln1.weight", "ln1.bias",
                   "attn.q.weight", "attn.q.bias", "attn.k.weight", "0:8", "attn.v.weight",
                   "attn.v.bias", "attn.o.weight", "attn.o.bias", "ln2.weight", "ln2.bias",
                   "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "lnf.weight",
                   "lnf.bias", "head.weight", "head.bias", NULL}};
    replay_case(&gc);
}
