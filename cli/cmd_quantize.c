/*
 * cmd_quantize.c - `sparrow quantize`: int8 or 4-bit weights on top of a model's sparsity
 * (sp_model_quantize), calibrated activation scales, and the accuracy and file size it costs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static void quantize_usage(FILE *f) {
    fprintf(f,
        "usage: sparrow quantize --model MODEL --out QMODEL [--bits 8|4] [--group G]\n"
        "                        [--calib-data D] [--calib-batches N] [--batch B]\n"
        "                        [--data D] [--no-eval] [--seed S] [--threads T] [--json]\n"
        "\n"
        "Quantizes every linear layer of a model file (dense or sparse; other layers stay\n"
        "float): weights symmetric int8 per output row (--bits 8) or 4-bit with one scale per\n"
        "group of G stored entries of a row (--bits 4); a sparse layer keeps its pattern and\n"
        "only its stored entries are quantized. Activations are quantized to int8 when the\n"
        "model runs: per sample at run time, or with one static scale per layer found on\n"
        "calibration data (--calib-data). The result is for inference (eval, inspect, bench\n"
        "model); docs/QUANTIZATION.md has the format and the measurements.\n"
        "  --bits B             8 (default) or 4\n"
        "  --group G            4-bit: stored entries per scale [32]\n"
        "  --calib-data D       static activation scales from N x B training samples of D\n"
        "                       (fashion-mnist, idx:DIR, text:FILE); default: dynamic scales\n"
        "  --calib-batches N    calibration batches [8]\n"
        "  --batch B            calibration batch [128]\n"
        "  --data D             test set for the before/after accuracy [the calibration data,\n"
        "                       else fashion-mnist; a language model: its training text]\n"
        "  --no-eval            skip the evaluation\n"
        "  --seed S             which training samples calibrate [1]\n"
        "  --threads T          threads [all]\n"
        "  --json               one object: bits, group, calibration, test_accuracy_float,\n"
        "                       test_accuracy, model_bytes, out_bytes, nnz\n");
}

/* n training samples of d drawn with seed, feature-major (features, n): owned *x. */
static int calib_inputs(const sp_dataset *d, int64_t n, uint64_t seed, float **x) {
    sp_dataset *rest = NULL, *pick = NULL;
    const sp_dataset *src = d;
    int64_t *idx = NULL;
    int rc = 1;
    *x = NULL;
    if (n < d->n) {
        if (sp_dataset_split(d, n, seed, &rest, &pick) != SP_OK) return cli_fail("--calib-data");
        src = pick;
    }
    const int64_t cnt = src->n, feat = src->features;
    if (!(idx = malloc(sizeof *idx * (size_t)cnt)) ||
        !(*x = malloc(sizeof(float) * (size_t)(feat * cnt)))) {
        fprintf(stderr, "sparrow quantize: out of memory for %lld calibration samples\n",
                (long long)cnt);
        goto done;
    }
    for (int64_t i = 0; i < cnt; i++) idx[i] = i;
    if (sp_dataset_batch(src, idx, cnt, *x, cnt, NULL) != SP_OK) {
        cli_fail("--calib-data");
        goto done;
    }
    rc = 0;
done:
    if (rc) {
        free(*x);
        *x = NULL;
    }
    free(idx);
    sp_dataset_free(rest);
    sp_dataset_free(pick);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *outp = NULL, *calib_data = NULL, *data = NULL;
    int64_t bits = 8, group = 32, calib_batches = 8, batch = 128, threads = 0, seed = 1;
    bool json = false, eval = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            quantize_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (!strcmp(a, "--no-eval")) {
            eval = false;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sparrow quantize: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--out")) outp = v;
        else if (!strcmp(a, "--calib-data")) calib_data = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--bits")) {
            if (!cli_parse_i64(a, v, 4, 8, &bits)) return 2;
            if (bits != 4 && bits != 8) {
                fprintf(stderr, "sparrow quantize: --bits expects 8 or 4, got '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--group")) {
            if (!cli_parse_i64(a, v, 1, 4096, &group)) return 2;
        } else if (!strcmp(a, "--calib-batches")) {
            if (!cli_parse_i64(a, v, 1, 1 << 20, &calib_batches)) return 2;
        } else if (!strcmp(a, "--batch")) {
            if (!cli_parse_i64(a, v, 1, 1 << 16, &batch)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!cli_parse_i64(a, v, 0, 4096, &threads)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!cli_parse_i64(a, v, 0, INT64_MAX, &seed)) return 2;
        } else {
            fprintf(stderr, "sparrow quantize: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model || !outp) {
        fprintf(stderr, "sparrow quantize: --model and --out are required (see --help)\n");
        return 2;
    }
    int rc = 1;
    sp_checkpoint ck = {0};
    sp_dataset *ctrain = NULL, *ctest = NULL, *train = NULL, *test = NULL;
    sp_model *qm = NULL;
    float *cx = NULL;
    if (sp_checkpoint_load(model, &ck) != SP_OK) return cli_fail("--model");
    sp_quant_opts o = {.bits = (int)bits, .group = (int)group, .nthreads = (int)threads};
    if (calib_data) {
        if (cli_open_data(calib_data, &ck, &ctrain, &ctest)) goto done;
        const int64_t n = calib_batches * batch;
        if (calib_inputs(ctrain, n, (uint64_t)seed, &cx)) goto done;
        o.calib_x = cx;
        o.calib_n = n < ctrain->n ? n : ctrain->n;
        o.calib_batch = batch;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (sp_model_quantize(ck.model, &o, &qm) != SP_OK) {
        cli_fail("quantize");
        goto done;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (sp_checkpoint_save(outp, qm, NULL, NULL, ck.meta) != SP_OK) {
        cli_fail("--out");
        goto done;
    }
    double l0 = 0, a0 = 0, l1 = 0, a1 = 0;
    if (eval) {
        if (cli_open_data(data ? data : calib_data, &ck, &train, &test)) goto done;
        if (sp_evaluate(ck.model, test, 1000, (int)threads, &l0, &a0, NULL) != SP_OK ||
            sp_evaluate(qm, test, 1000, (int)threads, &l1, &a1, NULL) != SP_OK) {
            cli_fail("evaluate");
            goto done;
        }
    }
    const long long b0 = cli_file_size(model), b1 = cli_file_size(outp);
    const char *calib = calib_data ? "static" : "dynamic";
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, model);
        printf(",\"out\":");
        cli_json_string(stdout, outp);
        printf(",\"bits\":%d,\"group\":%d,\"calibration\":\"%s\",\"calib_samples\":%lld,"
               "\"seconds\":%.3f,\"model_bytes\":%lld,\"out_bytes\":%lld,\"nnz\":%lld",
               (int)bits, bits == 4 ? (int)group : 0, calib, (long long)o.calib_n, secs, b0, b1,
               (long long)sp_model_nnz(qm));
        if (eval)
            printf(",\"test_accuracy_float\":%.6f,\"test_accuracy\":%.6f,\"test_loss_float\":%.6f,"
                   "\"test_loss\":%.6f", a0, a1, l0, l1);
        printf("}\n");
    } else {
        printf("quantized to %d-bit weights%s, %s activation scales%s, in %.2f s\n", (int)bits,
               bits == 4 ? "" : " (per row)", calib,
               calib_data ? " (calibrated)" : " (per sample)", secs);
        if (eval) {
            printf("float    : test accuracy %.2f%%, %lld bytes\n", 100.0 * a0, b0);
            printf("quantized: test accuracy %.2f%%, %lld bytes -> %s\n", 100.0 * a1, b1, outp);
        } else {
            printf("%lld bytes -> %s (%lld bytes)\n", b0, outp, b1);
        }
    }
    rc = 0;
done:
    free(cx);
    sp_model_free(qm);
    sp_checkpoint_free(&ck);
    sp_dataset_free(ctrain);
    sp_dataset_free(ctest);
    sp_dataset_free(train);
    sp_dataset_free(test);
    return rc;
}
