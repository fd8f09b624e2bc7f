/*
 * cmd_convert.c - `sparrow convert`: safetensors (a PyTorch nn.Sequential state_dict) to a
 * sparrow model file, and a sparrow model file to safetensors (dense with zeros, or CSR
 * components). The direction is decided by the input's content (docs/INTEROP.md).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void convert_usage(FILE *f) {
    fprintf(f,
        "usage: sparrow convert --in FILE --out FILE [--model SPEC|CONFIG] [--csr]\n"
        "                       [--input C,H,W] [--classes N] [--seed S]\n"
        "\n"
        "Converts between safetensors and sparrow model files; the direction follows the\n"
        "input's content (a sparrow model file starts with SPRWCKPT), not its name.\n"
        "\n"
        "safetensors -> sparrow model: a PyTorch nn.Sequential state_dict (keys 0.weight,\n"
        "  0.bias, 2.weight, ...). The sparrow layers with parameters take the module indices\n"
        "  in ascending order; shapes must match exactly (Linear (out, in), Conv2d\n"
        "  (out, in/groups, kh, kw), BatchNorm, LayerNorm). Sparse layers of the architecture\n"
        "  (format=csr|mask|bsr|nm) take the nonzeros of the imported weights.\n"
        "  --model SPEC|CONFIG  the architecture: a built-in spec (mlp:64, lenet300, ...) or a\n"
        "                       config file; may be left out for a file written by sparrow\n"
        "                       (its __metadata__ holds the config)\n"
        "  --input C,H,W        input shape (default 1,28,28: Fashion-MNIST)\n"
        "  --classes N          outputs (default 10)\n"
        "  --seed S             seed of the model (default 1; no weight depends on it)\n"
        "\n"
        "sparrow model -> safetensors: keys <i>.weight / <i>.bias with i the layer's position,\n"
        "  so that nn.Sequential of the same modules loads it with load_state_dict; sparse\n"
        "  weights are written dense with their zeros, or with --csr as\n"
        "  <i>.weight.{crow_indices,col_indices,values,size} for torch.sparse_csr_tensor.\n"
        "  __metadata__ holds sparrow.config, sparrow.input_scale and sparrow.classes.\n"
        "\n"
        "Nested (residual) models are not converted yet. The output is written atomically.\n");
}

/* "C,H,W" into *s. */
static bool parse_shape(const char *v, sp_shape *s) {
    int64_t d[3];
    const char *p = v;
    for (int k = 0; k < 3; k++) {
        char part[32];
        const char *e = strchr(p, ',');
        size_t n = e && k < 2 ? (size_t)(e - p) : strlen(p);
        if ((k < 2 && !e) || n >= sizeof part) {
            fprintf(stderr, "sparrow convert: --input expects C,H,W, got '%s'\n", v);
            return false;
        }
        memcpy(part, p, n);
        part[n] = '\0';
        if (!cli_parse_i64("--input", part, 1, 1 << 24, &d[k])) return false;
        p += n + 1;
    }
    *s = (sp_shape){d[0], d[1], d[2]};
    return true;
}

/* The input shape from a normalized config's "input C H W" first line. */
static bool config_input(const char *cfg, sp_shape *s) {
    long long c, h, w;
    if (sscanf(cfg, "input %lld %lld %lld", &c, &h, &w) != 3 || c < 1 || h < 1 || w < 1)
        return false;
    *s = (sp_shape){c, h, w};
    return true;
}

int cmd_convert(int argc, char **argv) {
    const char *in_path = NULL, *out_path = NULL, *model = NULL;
    bool csr = false, in_set = false, classes_set = false;
    sp_shape in = {1, 28, 28};
    int64_t classes = 10, seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            convert_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--csr")) {
            csr = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sparrow convert: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--in")) in_path = v;
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--input")) {
            if (!parse_shape(v, &in)) return 2;
            in_set = true;
        } else if (!strcmp(a, "--classes")) {
            if (!cli_parse_i64(a, v, 1, 1 << 24, &classes)) return 2;
            classes_set = true;
        } else if (!strcmp(a, "--seed")) {
            if (!cli_parse_i64(a, v, 0, INT64_MAX, &seed)) return 2;
        } else {
            fprintf(stderr, "sparrow convert: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!in_path || !out_path) {
        fprintf(stderr, "sparrow convert: --in and --out are required (see --help)\n");
        return 2;
    }
    if (access(in_path, R_OK) != 0) {
        fprintf(stderr, "sparrow convert: cannot open %s: %s\n", in_path, strerror(errno));
        return 1;
    }

    if (cli_is_checkpoint(in_path)) {
        /* sparrow model -> safetensors */
        if (model || in_set || classes_set) {
            fprintf(stderr, "sparrow convert: --model, --input and --classes are for importing "
                            "safetensors; %s is a sparrow model file, which describes itself\n",
                    in_path);
            return 2;
        }
        sp_checkpoint ck = {0};
        if (sp_checkpoint_load(in_path, &ck) != SP_OK) return cli_fail("--in");
        int rc = 0;
        if (sp_model_export_safetensors(ck.model, out_path, csr) != SP_OK) rc = cli_fail("--out");
        else
            printf("wrote %s: %lld parameters (%lld nonzero), %s\n", out_path,
                   (long long)sp_model_nparams(ck.model), (long long)sp_model_nnz(ck.model),
                   csr ? "CSR layers as crow_indices/col_indices/values/size" : "dense weights");
        sp_checkpoint_free(&ck);
        return rc;
    }

    /* safetensors -> sparrow model */
    if (csr) {
        fprintf(stderr, "sparrow convert: --csr is for exporting a sparrow model; to import into "
                        "CSR layers, give an architecture with format=csr layers\n");
        return 2;
    }
    sp_safetensors *st = NULL;
    if (sp_safetensors_load(in_path, &st) != SP_OK) {
        fprintf(stderr, "sparrow: --in: %s (neither a sparrow model file nor safetensors)\n",
                sp_last_error());
        return 1;
    }
    int rc = 1;
    char *cfg = NULL;
    bool cfg_malloced = false;
    sp_model *m = NULL;
    if (model) {
        if (access(model, F_OK) == 0) {
            cfg = cli_read_text(model);
            if (!cfg) goto done;
            cfg_malloced = true;
        } else if (sp_model_spec_config(model, &cfg) != SP_OK) {
            cli_fail("--model");
            goto done;
        }
    } else {
        const char *meta = sp_safetensors_meta(st, "sparrow.config");
        if (!meta) {
            fprintf(stderr, "sparrow convert: --model is required: %s does not say its "
                            "architecture (no sparrow.config in its __metadata__)\n", in_path);
            rc = 2;
            goto done;
        }
        cfg = (char *)meta;
        sp_shape s;
        if (!in_set && config_input(meta, &s)) in = s;
        const char *cl = sp_safetensors_meta(st, "sparrow.classes");
        if (!classes_set && cl && !cli_parse_i64("sparrow.classes", cl, 1, 1 << 24, &classes))
            goto done;
    }
    if (sp_model_import_safetensors(st, cfg, in, classes, (uint64_t)seed, &m) != SP_OK) {
        cli_fail("--in");
        goto done;
    }
    if (sp_checkpoint_save(out_path, m, NULL, NULL, NULL) != SP_OK) {
        cli_fail("--out");
        goto done;
    }
    printf("wrote %s: %lld tensors into %lld parameters (%lld nonzero)\n", out_path,
           (long long)sp_safetensors_count(st), (long long)sp_model_nparams(m),
           (long long)sp_model_nnz(m));
    rc = 0;
done:
    if (cfg_malloced) free(cfg);
    else if (model) sp_free(cfg);
    sp_model_free(m);
    sp_safetensors_free(st);
    return rc;
}
