/*
 * cmd_inspect.c - `sparrow inspect`: what a model file holds, layer by layer: shape, storage
 * format, parameters, nonzeros, sparsity and bytes, with totals against the same model stored
 * dense in fp32. Mixture-of-experts layers show their experts, top_k and routing; with --data
 * the test set is routed in evaluation mode and each moe layer's statistics are printed.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

static void inspect_usage(FILE *f) {
    fprintf(f,
        "usage: sparrow inspect MODEL [--json] [--copy] [--data D [--threads T]]\n"
        "\n"
        "Lists each layer of a model file: shape, weight format, parameters, nonzeros, sparsity\n"
        "and bytes, then the totals against the dense fp32 size. A moe layer also shows its\n"
        "experts, top_k and routing (its config line), and how long the file took to load: it\n"
        "is mapped and its weights used in place (docs/FORMAT.md).\n"
        "  --copy       load it by copying instead (as training does), to compare load times\n"
        "  --data D     route the test split of D (fashion-mnist, idx:DIR, text:FILE) through\n"
        "               the model in evaluation mode and print each moe layer's statistics:\n"
        "               tokens per expert, max/mean load, router entropy, drop rate\n"
        "               (docs/MOE.md); a model without moe layers refuses it\n"
        "  --threads T  threads for --data [all]\n"
        "  --json       one object: params, nnz, sparsity, bytes, file_bytes, dense_fp32_bytes,\n"
        "               input_scale, config, and a layers array (moe layers with experts,\n"
        "               top_k, routing); with --data also test_accuracy, test_loss,\n"
        "               expert_load_max_over_mean and a moe array of statistics per layer\n");
}

static void shape_str(char *buf, size_t n, sp_shape s) {
    if (s.h == 1 && s.w == 1) snprintf(buf, n, "%lld", (long long)s.c);
    else snprintf(buf, n, "%lldx%lldx%lld", (long long)s.c, (long long)s.h, (long long)s.w);
}

int cmd_inspect(int argc, char **argv) {
    const char *path = NULL, *data = NULL;
    bool json = false, copy = false;
    int64_t threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            inspect_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--copy")) {
            copy = true;
        } else if (!strcmp(argv[i], "--data") || !strcmp(argv[i], "--threads")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "sparrow inspect: %s needs a value (see --help)\n", argv[i]);
                return 2;
            }
            if (!strcmp(argv[i], "--data")) data = argv[++i];
            else if (!cli_parse_i64("--threads", argv[++i], 0, 4096, &threads)) return 2;
        } else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "sparrow inspect: unexpected argument '%s' (see --help)\n", argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        fprintf(stderr, "sparrow inspect: a model file is required (see --help)\n");
        return 2;
    }
    sp_checkpoint ck = {0};
    sp_model_file_info info;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* mapped: the weights are used in place in the file (docs/FORMAT.md) */
    sp_status ls = copy ? sp_checkpoint_load(path, &ck) : sp_checkpoint_open(path, &ck, &info);
    if (ls != SP_OK) return cli_fail("inspect");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (copy) { /* the same figures as the mapped load would give, nothing in place */
        info = (sp_model_file_info){.version = 0, .mapped = false};
        sp_model *pm = NULL;
        sp_model_file_info mi;
        if (sp_model_open_info(path, &pm, &mi) == SP_OK)
            info.version = mi.version, info.weight_bytes = mi.weight_bytes;
        sp_model_free(pm);
    }
    const double load_ms = 1e3 * (double)(t1.tv_sec - t0.tv_sec) + 1e-6 * (double)(t1.tv_nsec - t0.tv_nsec);
    struct stat sb;
    long long file_bytes = stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
    sp_model *m = ck.model;
    int n = sp_model_nlayers(m);
    /* --data: the routing of the test set (evaluation mode) */
    cli_moe_snap moe = {0}, conf = {0};
    double test_loss = 0.0, test_acc = 0.0;
    bool text = false;
    int rc = 1;
    if (cli_moe_snap_take(m, &conf)) goto done; /* experts, top_k, routing of each moe layer */
    if (data) {
        sp_dataset *train = NULL, *test = NULL;
        if (conf.n == 0) {
            fprintf(stderr, "sparrow inspect: --data routes the test set through the moe layers, "
                            "and %s has none\n", path);
            rc = 2;
            goto done;
        }
        text = strncmp(data, "text:", 5) == 0;
        if (text ? cli_open_text(data, m, NULL, &train, &test) != 0
                 : (sp_dataset_open(data, &train, &test) != SP_OK && cli_fail("--data"))) {
            sp_dataset_free(train);
            goto done;
        }
        sp_model_moe_reset_stats(m);
        sp_status st = sp_evaluate(m, test, 1000, (int)threads, &test_loss, &test_acc, NULL);
        sp_dataset_free(train);
        sp_dataset_free(test);
        if (st != SP_OK) {
            cli_fail("--data");
            goto done;
        }
        if (cli_moe_snap_take(m, &moe)) goto done;
    }
    int64_t params = 0, nnz = 0, dense = 0;
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        sp_layer_info li;
        if (sp_model_layer(m, i, &li) != SP_OK) continue;
        params += li.nparam;
        nnz += li.nnz;
        dense += li.dense_params;
        bytes += li.bytes;
    }
    /* non-trained state (BatchNorm statistics) is stored as it is, dense or not */
    int64_t nbuf = sp_model_nbuffers(m);
    long long dense_bytes = 4LL * (dense + nbuf);
    double sparsity = dense ? 1.0 - (double)nnz / (double)dense : 0.0;
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, path);
        printf(",\"params\":%lld,\"nnz\":%lld,\"sparsity\":%.6f,\"bytes\":%zu,\"file_bytes\":%lld,"
               "\"dense_fp32_bytes\":%lld,\"buffers\":%lld,\"input_scale\":%.9g,",
               (long long)params, (long long)nnz, sparsity, bytes + 4 * (size_t)nbuf, file_bytes,
               dense_bytes, (long long)nbuf, (double)sp_model_input_scale(m));
        printf("\"format_version\":%u,\"load_ms\":%.3f,\"mapped\":%s,\"weight_bytes\":%llu,"
               "\"in_place_bytes\":%llu,\"config\":", info.version, load_ms,
               info.mapped ? "true" : "false", (unsigned long long)info.weight_bytes,
               (unsigned long long)info.in_place_bytes);
        cli_json_string(stdout, sp_model_config(m));
        printf(",\"layers\":[");
        for (int i = 0; i < n; i++) {
            sp_layer_info li;
            if (sp_model_layer(m, i, &li) != SP_OK) continue;
            char in[64], out[64];
            shape_str(in, sizeof in, li.in);
            shape_str(out, sizeof out, li.out);
            printf("%s{\"name\":\"%s\",\"kind\":\"%s\",\"in\":\"%s\",\"out\":\"%s\",\"format\":\"%s\","
                   "\"params\":%lld,\"nnz\":%lld,\"dense_params\":%lld,\"sparsity\":%.6f,"
                   "\"bytes\":%zu",
                   i ? "," : "", li.name, li.kind, in, out, li.format, (long long)li.nparam,
                   (long long)li.nnz, (long long)li.dense_params,
                   li.dense_params ? 1.0 - (double)li.nnz / (double)li.dense_params : 0.0,
                   li.bytes);
            for (int k = 0; k < conf.n; k++)
                if (conf.layer[k].index == i) {
                    printf(",\"experts\":%d,\"top_k\":%d,\"routing\":\"%s\",\"moe_config\":",
                           conf.layer[k].experts, conf.layer[k].top_k, conf.layer[k].routing);
                    cli_json_string(stdout, conf.layer[k].config);
                }
            printf("}");
        }
        printf("]");
        if (data) {
            printf(",\"data\":");
            cli_json_string(stdout, data);
            printf(",\"test_accuracy\":%.6f,\"test_loss\":%.6f", test_acc, test_loss);
            if (text) printf(",\"bits_per_char\":%.6f", test_loss / CLI_LN2);
            cli_moe_snap_json(&moe, stdout);
        }
        printf("}\n");
    } else {
        printf("%s: input %lldx%lldx%lld (features = raw x %g), %lld classes\n", path,
               (long long)sp_model_in(m).c, (long long)sp_model_in(m).h,
               (long long)sp_model_in(m).w, (double)sp_model_input_scale(m),
               (long long)sp_model_classes(m));
        printf("%-16s %-14s %-14s %-8s %10s %10s %8s %10s\n", "layer", "in", "out", "format",
               "params", "nnz", "sparsity", "bytes");
        for (int i = 0; i < n; i++) {
            sp_layer_info li;
            if (sp_model_layer(m, i, &li) != SP_OK) continue;
            char in[64], out[64];
            shape_str(in, sizeof in, li.in);
            shape_str(out, sizeof out, li.out);
            if (li.nparam == 0 && !li.format[0]) { /* no weights (a qlinear layer keeps its own) */
                printf("%-16s %-14s %-14s\n", li.name, in, out);
                continue;
            }
            printf("%-16s %-14s %-14s %-8s %10lld %10lld %7.2f%% %10zu\n", li.name, in, out,
                   li.format[0] ? li.format : "-", (long long)li.nparam, (long long)li.nnz,
                   li.dense_params ? 100.0 * (1.0 - (double)li.nnz / (double)li.dense_params) : 0.0,
                   li.bytes);
            for (int k = 0; k < conf.n; k++)
                if (conf.layer[k].index == i)
                    printf("  %s: %d experts, top_k %d, routing %s (%s)\n", li.name,
                           conf.layer[k].experts, conf.layer[k].top_k, conf.layer[k].routing,
                           conf.layer[k].config);
        }
        printf("total: %lld parameters, %lld nonzero (%.2f%% sparse), %zu bytes in memory; file "
               "%lld bytes; dense fp32 %lld bytes\n", (long long)params, (long long)nnz,
               100.0 * sparsity, bytes + 4 * (size_t)nbuf, file_bytes, dense_bytes);
        printf("loaded in %.2f ms, %s, %llu of %llu weight bytes used in place (format version "
               "%u)\n", load_ms, info.mapped ? "mapped" : "copied",
               (unsigned long long)info.in_place_bytes, (unsigned long long)info.weight_bytes,
               info.version);
        if (data) {
            if (text)
                printf("routing of the test set of %s (evaluation mode): bits per character "
                       "%.4f\n", data, test_loss / CLI_LN2);
            else
                printf("routing of the test set of %s (evaluation mode): accuracy %.2f%%\n", data,
                       100.0 * test_acc);
            cli_moe_snap_table(&moe, stdout);
        }
    }
    rc = 0;
done:
    cli_moe_snap_free(&moe);
    cli_moe_snap_free(&conf);
    sp_checkpoint_free(&ck);
    return rc;
}
