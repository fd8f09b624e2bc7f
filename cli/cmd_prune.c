/*
 * cmd_prune.c - `sparrow prune`: one-shot pruning of a trained model into a sparse model file
 * (sp_model_prune), with the test accuracy of both and their sizes; or expert pruning of a
 * mixture-of-experts model (--keep-experts: the most-used experts of every moe layer stay).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void prune_usage(FILE *f) {
    fprintf(f,
        "usage: sparrow prune --model MODEL --out MODEL2 [options]\n"
        "       sparrow prune --model MODEL --out MODEL2 --keep-experts K [--calib-samples N]\n"
        "                     [--data D] [--seed S] [--threads T] [--json]\n"
        "\n"
        "Prunes every dense linear layer of a model file (the output layer stays dense) and\n"
        "writes the sparse model; evaluates both on the test set. One-shot by default; with\n"
        "--finetune-epochs E it goes on training with the pruned weights held at zero, and with\n"
        "--schedule gradual the sparsity rises over those epochs (Zhu & Gupta 2017).\n"
        "  --sparsity S         fraction of weights removed, in [0, 1) (default 0.9)\n"
        "  --schedule S         oneshot (default) | gradual (needs --finetune-epochs)\n"
        "  --finetune-epochs E  epochs of training after (gradual: while) pruning (default 0)\n"
        "  --prune-end F        gradual: the sparsity reaches S after this fraction of the\n"
        "                       fine-tuning steps (default 0.75)\n"
        "  --prune-every N      gradual: steps between mask updates (default 100)\n"
        "  --lr LR              fine-tuning learning rate, Adam with cosine decay (default 1e-3)\n"
        "  --batch B            fine-tuning batch (default 64)\n"
        "  --threads T          threads (default all)\n"
        "  --method M           magnitude (default) | random; for neuron: l2 (default) | l1\n"
        "  --granularity G      layerwise (default) | global | nm | block | neuron\n"
        "                       neuron: structured, removes that fraction of each hidden\n"
        "                       layer's neurons / filters (by L2 or L1 norm) for real, giving an\n"
        "                       ordinary smaller dense model\n"
        "  --nm N:M             the N:M pattern (default 2:4)\n"
        "  --block RxC          the block shape (default 4x4)\n"
        "  --format F           csr | mask | bsr | nm | auto (default: nm for nm, bsr for block,\n"
        "                       else csr; auto: per layer, the format measured fastest at\n"
        "                       batch 64 on 1 thread)\n"
        "  --prune-last         prune the output layer too (default: it stays dense)\n"
        "  --data D             fashion-mnist (default) or idx:DIR, for the evaluation;\n"
        "                       text:FILE for a language model (default: its training text)\n"
        "  --seed S             for --method random, and the calibration sample (default 1)\n"
        "  --json               one object: sparsity, dense/pruned test_accuracy, nnz, bytes\n"
        "\n"
        "expert pruning (mixture of experts, docs/MOE.md):\n"
        "  --keep-experts K     route --calib-samples training samples of --data through the\n"
        "                       model (evaluation mode), keep the K most-used experts of every\n"
        "                       moe layer (with their router rows; ties: the lower index), drop\n"
        "                       the others and write the smaller model. top_k <= K <= experts\n"
        "                       for every moe layer. Does not mix with the weight-pruning\n"
        "                       options above (prune the result again for both).\n"
        "  --calib-samples N    training samples to measure the loads on [5000, or all if\n"
        "                       fewer]; a random subset drawn with --seed (text: the last N\n"
        "                       windows of the training part)\n"
        "  --json               one object: params_before, params, test_accuracy_before,\n"
        "                       test_accuracy, test losses (text: bits_per_char too) and a\n"
        "                       layers array: name, experts_before, kept, calib_load\n");
}


/* Runs `sparrow train` with words[0..nwords) and then each (option, value) pair whose value is
 * set: how pruning with fine-tuning runs (it is training with pruning settings). */
static int run_train(const char *const *words, int nwords, const char *const (*pairs)[2],
                     size_t npairs) {
    const char *targv[64];
    int targc = 0;
    for (int i = 0; i < nwords && targc < 62; i++) targv[targc++] = words[i];
    for (size_t k = 0; k < npairs && targc < 62; k++)
        if (pairs[k][1]) {
            targv[targc++] = pairs[k][0];
            targv[targc++] = pairs[k][1];
        }
    return cmd_train(targc, (char **)targv);
}

/* The model of a model file (owned), or NULL with a message naming --out. */
static sp_model *load_model(const char *path) {
    sp_checkpoint pc = {0};
    if (sp_checkpoint_load(path, &pc) != SP_OK) {
        cli_fail("--out");
        return NULL;
    }
    sp_model *m = pc.model;
    pc.model = NULL;
    sp_checkpoint_free(&pc);
    return m;
}

/* ---- expert pruning ---- */

/* The experts a layer keeps: its `keep` highest loads (ties: the lower index, as
 * sp_model_moe_prune_experts ranks them), ascending, into kept. */
static void kept_experts(const cli_moe_layer *L, int keep, int *kept) {
    bool *taken = calloc((size_t)L->experts, sizeof *taken);
    if (!taken) return;
    for (int j = 0; j < keep; j++) {
        int best = -1;
        for (int e = 0; e < L->experts; e++)
            if (!taken[e] && (best < 0 || (float)L->load[e] > (float)L->load[best])) best = e;
        taken[best] = true;
    }
    for (int e = 0, j = 0; e < L->experts; e++)
        if (taken[e]) kept[j++] = e;
    free(taken);
}

/* Expert pruning of m: routes calib (evaluation mode) to measure the loads, then keeps the
 * `keep` most-used experts of every moe layer. Layers are pruned from the last to the first
 * (indices after a pruned block shift, those before it do not), each time from freshly measured
 * statistics of the model pruned so far; routing at a layer does not depend on the layers after
 * it, so every layer is pruned by the loads the original model gives it. *loads gets those
 * statistics (per layer of m). Returns owned *out; 0, or 1 with a message. */
static int prune_experts(const sp_model *m, int keep, const sp_dataset *calib, int threads,
                         cli_moe_snap *loads, sp_model **out) {
    *out = NULL;
    const int L = cli_moe_count(m);
    sp_model *cur = (sp_model *)m; /* not changed: only its statistics are (re)measured */
    for (int j = L - 1; j >= 0; j--) {
        double l, a;
        sp_model_moe_reset_stats(cur);
        if (sp_evaluate(cur, calib, 1000, threads, &l, &a, NULL) != SP_OK) {
            cli_fail("--keep-experts: calibration");
            goto fail;
        }
        if (j == L - 1 && cli_moe_snap_take(cur, loads)) goto fail;
        sp_model *next = NULL;
        if (sp_model_moe_prune_experts(cur, loads->layer[j].index, keep, &next) != SP_OK) {
            cli_fail("--keep-experts");
            goto fail;
        }
        if (cur != m) sp_model_free(cur);
        cur = next;
    }
    *out = cur;
    return 0;
fail:
    if (cur != m) sp_model_free(cur);
    return 1;
}

/* `sparrow prune --keep-experts K`. */
static int prune_experts_cmd(const char *model, const char *outp, const char *data, int keep,
                             int64_t calib_n, uint64_t seed, const char *threads_s, bool json) {
    int64_t threads = 0;
    if (threads_s && !cli_parse_i64("--threads", threads_s, 0, 4096, &threads)) return 2;
    int rc = 1;
    sp_checkpoint ck = {0};
    sp_model *pm = NULL;
    sp_dataset *train = NULL, *test = NULL, *rest = NULL, *calib = NULL;
    cli_moe_snap conf = {0}, loads = {0};
    int *kept = NULL;
    if (sp_checkpoint_load(model, &ck) != SP_OK) return cli_fail("--model");
    if (cli_moe_snap_take(ck.model, &conf)) goto done;
    if (conf.n == 0) {
        fprintf(stderr, "sparrow prune: --keep-experts: %s has no moe layer\n", model);
        rc = 2;
        goto done;
    }
    for (int k = 0; k < conf.n; k++) {
        const cli_moe_layer *L = &conf.layer[k];
        if (keep < L->top_k || keep > L->experts) {
            fprintf(stderr, "sparrow prune: --keep-experts %d is not in [top_k, experts] = "
                            "[%d, %d] of moe layer %s\n", keep, L->top_k, L->experts, L->name);
            rc = 2;
            goto done;
        }
    }
    if (cli_open_data(data, &ck, &train, &test)) goto done;
    const sp_dataset *cal = train;
    if (calib_n < train->n) {
        if (sp_dataset_split(train, calib_n, seed, &rest, &calib) != SP_OK) {
            cli_fail("--calib-samples");
            goto done;
        }
        cal = calib;
    }
    if (prune_experts(ck.model, keep, cal, (int)threads, &loads, &pm)) goto done;
    if (sp_checkpoint_save(outp, pm, NULL, NULL, ck.meta) != SP_OK) {
        cli_fail("--out");
        goto done;
    }
    double l0, a0, l1, a1;
    sp_model_moe_reset_stats(ck.model);
    if (sp_evaluate(ck.model, test, 1000, (int)threads, &l0, &a0, NULL) != SP_OK ||
        sp_evaluate(pm, test, 1000, (int)threads, &l1, &a1, NULL) != SP_OK) {
        cli_fail("evaluate");
        goto done;
    }
    const bool text = test->kind == SP_DATASET_TEXT;
    const long long p0 = (long long)sp_model_nparams(ck.model), p1 = (long long)sp_model_nparams(pm);
    if (!(kept = malloc(sizeof(int) * (size_t)keep))) goto done;
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, model);
        printf(",\"out\":");
        cli_json_string(stdout, outp);
        printf(",\"keep_experts\":%d,\"calib_samples\":%lld,\"params_before\":%lld,"
               "\"params\":%lld,\"test_accuracy_before\":%.6f,\"test_accuracy\":%.6f,"
               "\"test_loss_before\":%.6f,\"test_loss\":%.6f", keep, (long long)cal->n, p0, p1,
               a0, a1, l0, l1);
        if (text)
            printf(",\"bits_per_char_before\":%.6f,\"bits_per_char\":%.6f", l0 / CLI_LN2,
                   l1 / CLI_LN2);
        printf(",\"layers\":[");
        for (int k = 0; k < loads.n; k++) {
            const cli_moe_layer *L = &loads.layer[k];
            kept_experts(L, keep, kept);
            printf("%s{\"name\":", k ? "," : "");
            cli_json_string(stdout, L->name);
            printf(",\"experts_before\":%d,\"kept\":[", L->experts);
            for (int j = 0; j < keep; j++) printf("%s%d", j ? "," : "", kept[j]);
            printf("],\"calib_load\":[");
            for (int e = 0; e < L->experts; e++)
                printf("%s%lld", e ? "," : "", (long long)L->load[e]);
            printf("]}");
        }
        printf("]}\n");
    } else {
        if (text) {
            printf("before: test bits per character %.4f, %lld parameters\n", l0 / CLI_LN2, p0);
            printf("after : test bits per character %.4f, %lld parameters -> %s\n", l1 / CLI_LN2,
                   p1, outp);
        } else {
            printf("before: test accuracy %.2f%%, %lld parameters\n", 100.0 * a0, p0);
            printf("after : test accuracy %.2f%%, %lld parameters -> %s\n", 100.0 * a1, p1, outp);
        }
        for (int k = 0; k < loads.n; k++) {
            const cli_moe_layer *L = &loads.layer[k];
            kept_experts(L, keep, kept);
            printf("%s: kept experts", L->name);
            for (int j = 0; j < keep; j++) printf(" %d", kept[j]);
            printf(" of %d (loads on %lld calibration samples:", L->experts, (long long)cal->n);
            for (int e = 0; e < L->experts; e++) printf(" %lld", (long long)L->load[e]);
            printf(")\n");
        }
    }
    rc = 0;
done:
    free(kept);
    cli_moe_snap_free(&conf);
    cli_moe_snap_free(&loads);
    sp_checkpoint_free(&ck);
    sp_model_free(pm);
    sp_dataset_free(train);
    sp_dataset_free(test);
    sp_dataset_free(rest);
    sp_dataset_free(calib);
    return rc;
}

int cmd_prune(int argc, char **argv) {
    const char *model = NULL, *outp = NULL, *data = NULL, *method = "magnitude",
               *gran = "layerwise", *format = NULL, *nm = "2:4", *block = "4x4";
    double sparsity = 0.9;
    int64_t seed = 1, finetune = 0;
    const char *schedule = "oneshot", *prune_end = NULL, *prune_every = NULL, *lr = NULL,
               *batch = NULL, *threads = NULL;
    bool json = false, prune_last = false;
    int64_t keep_experts = 0, calib_samples = 0;
    const char *weight_opt = NULL; /* a weight-pruning option given (refused with experts) */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            prune_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) { json = true; continue; }
        if (!strcmp(a, "--prune-last")) {
            prune_last = true;
            weight_opt = a;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sparrow prune: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--model") && strcmp(a, "--out") && strcmp(a, "--data") &&
            strcmp(a, "--threads") && strcmp(a, "--seed") && strcmp(a, "--keep-experts") &&
            strcmp(a, "--calib-samples"))
            weight_opt = a;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--out")) outp = v;
        else if (!strcmp(a, "--keep-experts")) {
            if (!cli_parse_i64(a, v, 1, 4096, &keep_experts)) return 2;
        } else if (!strcmp(a, "--calib-samples")) {
            if (!cli_parse_i64(a, v, 1, INT64_C(1) << 40, &calib_samples)) return 2;
        }
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--method")) method = v;
        else if (!strcmp(a, "--granularity")) gran = v;
        else if (!strcmp(a, "--format")) format = v;
        else if (!strcmp(a, "--nm")) nm = v;
        else if (!strcmp(a, "--block")) block = v;
        else if (!strcmp(a, "--prune-end")) prune_end = v;
        else if (!strcmp(a, "--prune-every")) prune_every = v;
        else if (!strcmp(a, "--lr")) lr = v;
        else if (!strcmp(a, "--batch")) batch = v;
        else if (!strcmp(a, "--threads")) threads = v;
        else if (!strcmp(a, "--schedule")) {
            if (strcmp(v, "oneshot") && strcmp(v, "gradual")) {
                fprintf(stderr, "sparrow prune: --schedule must be oneshot or gradual, got '%s'\n",
                        v);
                return 2;
            }
            schedule = v;
        } else if (!strcmp(a, "--finetune-epochs")) {
            if (!cli_parse_i64(a, v, 0, 1000000, &finetune)) return 2;
        }
        else if (!strcmp(a, "--sparsity")) {
            if (!cli_parse_f64(a, v, 0.0, 0.999999, &sparsity)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!cli_parse_i64(a, v, 0, INT64_MAX, &seed)) return 2;
        } else {
            fprintf(stderr, "sparrow prune: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model || !outp) {
        fprintf(stderr, "sparrow prune: --model and --out are required (see --help)\n");
        return 2;
    }
    if (calib_samples && !keep_experts) {
        fprintf(stderr, "sparrow prune: --calib-samples is for expert pruning: give "
                        "--keep-experts K\n");
        return 2;
    }
    if (keep_experts && weight_opt) {
        fprintf(stderr, "sparrow prune: --keep-experts prunes whole experts and does not mix with "
                        "%s (weight pruning): prune the smaller model again for both\n",
                weight_opt);
        return 2;
    }
    if (keep_experts) return prune_experts_cmd(model, outp, data, (int)keep_experts,
                                               calib_samples ? calib_samples : 5000,
                                               (uint64_t)seed, threads, json);
    if (!data) data = "fashion-mnist";
    sp_prune_spec spec = {.sparsity = sparsity, .keep_last = !prune_last, .format = format,
                          .seed = (uint64_t)seed};
    const bool neuron = !strcmp(gran, "neuron");
    sp_prune_structured_spec sspec = {.criterion = SP_PRUNE_ROW_L2, .fraction = sparsity};
    if (neuron) {
        if (!strcmp(method, "l1")) sspec.criterion = SP_PRUNE_ROW_L1;
        else if (strcmp(method, "l2") && strcmp(method, "magnitude")) {
            fprintf(stderr, "sparrow prune: --method for --granularity neuron must be l2 or l1, "
                            "got '%s'\n", method);
            return 2;
        }
        method = sspec.criterion == SP_PRUNE_ROW_L1 ? "l1" : "l2";
        if (strcmp(schedule, "oneshot") || format || prune_last) {
            fprintf(stderr, "sparrow prune: --granularity neuron removes neurons at once: "
                            "--schedule gradual, --format and --prune-last do not apply\n");
            return 2;
        }
    } else if (!strcmp(method, "magnitude")) spec.criterion = SP_PRUNE_MAGNITUDE;
    else if (!strcmp(method, "random")) spec.criterion = SP_PRUNE_RANDOM;
    else {
        fprintf(stderr, "sparrow prune: --method must be magnitude or random, got '%s'\n", method);
        return 2;
    }
    if (!strcmp(gran, "layerwise")) spec.granularity = SP_PRUNE_LAYERWISE;
    else if (!strcmp(gran, "global")) spec.granularity = SP_PRUNE_GLOBAL;
    else if (!strcmp(gran, "nm")) spec.granularity = SP_PRUNE_NM;
    else if (!strcmp(gran, "block")) spec.granularity = SP_PRUNE_BLOCK;
    else if (!neuron) {
        fprintf(stderr, "sparrow prune: --granularity must be layerwise, global, nm, block or "
                        "neuron, got '%s'\n", gran);
        return 2;
    }
    int64_t a1, a2;
    if (!cli_parse_pair("--nm", nm, ':', 1, 32, &a1, &a2)) return 2;
    spec.n = (int32_t)a1;
    spec.m = (int32_t)a2;
    if (!cli_parse_pair("--block", block, 'x', 1, 64, &a1, &a2)) return 2;
    spec.br = (int32_t)a1;
    spec.bc = (int32_t)a2;
    if (!strcmp(schedule, "gradual") && finetune == 0) {
        fprintf(stderr, "sparrow prune: --schedule gradual prunes while training: give "
                        "--finetune-epochs E (E >= 1)\n");
        return 2;
    }
    if (finetune == 0 && (prune_end || prune_every || lr || batch)) {
        fprintf(stderr, "sparrow prune: --prune-end, --prune-every, --lr and --batch set the "
                        "fine-tuning: give --finetune-epochs E\n");
        return 2;
    }
    if (finetune > 0 && !neuron) {
        if (!cli_is_checkpoint(model)) {
            fprintf(stderr, "sparrow prune: --model %s is not a sparrow model file\n", model);
            return 1;
        }
        /* pruning with training is `sparrow train` with pruning settings */
        char epochs_s[32], sparsity_s[32], seed_s[32];
        snprintf(epochs_s, sizeof epochs_s, "%lld", (long long)finetune);
        snprintf(sparsity_s, sizeof sparsity_s, "%.17g", sparsity);
        snprintf(seed_s, sizeof seed_s, "%lld", (long long)seed);
        const char *const words[] = {"train", "--model", model, "--data", data, "--out", outp,
                                     "--epochs", epochs_s, "--prune-sparsity", sparsity_s,
                                     "--prune-method", method, "--prune-granularity", gran,
                                     "--prune-schedule", schedule, "--prune-nm", nm,
                                     "--prune-block", block, "--seed", seed_s, "--quiet",
                                     "--prune-last"}; /* the last word only with it */
        const char *const pairs[][2] = {{"--prune-format", format}, {"--prune-end", prune_end},
                                        {"--prune-every", prune_every}, {"--lr", lr},
                                        {"--batch", batch}, {"--threads", threads}};
        if (!json) fprintf(stderr, "fine-tuning %lld epochs while pruning (%s) ...\n",
                           (long long)finetune, schedule);
        const int nwords = (int)(sizeof words / sizeof words[0]) - (prune_last ? 0 : 1);
        int trc = run_train(words, nwords, pairs, sizeof pairs / sizeof pairs[0]);
        if (trc) return trc;
    }

    int rc = 1;
    sp_checkpoint ck = {0};
    sp_model *pm = NULL;
    sp_dataset *train = NULL, *test = NULL;
    if (sp_checkpoint_load(model, &ck) != SP_OK) return cli_fail("--model");
    if (neuron) {
        /* structured: remove, save, then (with --finetune-epochs) train the smaller model */
        if (sp_model_prune_structured(ck.model, &sspec, &pm) != SP_OK) {
            cli_fail("prune");
            goto done;
        }
        if (sp_checkpoint_save(outp, pm, NULL, NULL, NULL) != SP_OK) {
            cli_fail("--out");
            goto done;
        }
        if (finetune > 0) {
            char epochs_s[32], seed_s[32];
            snprintf(epochs_s, sizeof epochs_s, "%lld", (long long)finetune);
            snprintf(seed_s, sizeof seed_s, "%lld", (long long)seed);
            const char *const words[] = {"train", "--model", outp, "--data", data, "--out", outp,
                                         "--epochs", epochs_s, "--seed", seed_s,
                                         "--weights-only", "--quiet"};
            const char *const pairs[][2] = {{"--lr", lr}, {"--batch", batch},
                                            {"--threads", threads}};
            if (!json) fprintf(stderr, "fine-tuning the smaller model for %lld epochs ...\n",
                               (long long)finetune);
            sp_model_free(pm);
            pm = NULL;
            rc = run_train(words, (int)(sizeof words / sizeof words[0]), pairs,
                           sizeof pairs / sizeof pairs[0]);
            if (rc != 0) goto done;
            rc = 1;
            if (!(pm = load_model(outp))) goto done;
        }
    } else if (finetune > 0) {
        if (!(pm = load_model(outp))) goto done; /* what the fine-tuning run wrote */
    } else {
        const bool autof = format && !strcmp(format, "auto");
        if (autof) spec.format = "mask"; /* masks first, then the measured formats */
        if (sp_model_prune(ck.model, &spec, &pm) != SP_OK) {
            cli_fail("prune");
            goto done;
        }
        if (autof) {
            sp_model *fm = NULL;
            if (sp_model_sparsify(pm, "auto", 64, 1, &fm) != SP_OK) {
                cli_fail("--format auto");
                goto done;
            }
            sp_model_free(pm);
            pm = fm;
        }
        if (sp_checkpoint_save(outp, pm, NULL, NULL, NULL) != SP_OK) {
            cli_fail("--out");
            goto done;
        }
    }
    if (!strncmp(data, "text:", 5)) {
        if (cli_open_text(data, ck.model, NULL, &train, &test)) goto done; /* a char LM */
    } else if (sp_dataset_open(data, &train, &test) != SP_OK) {
        cli_fail("--data");
        goto done;
    }
    double dl, da, pl, pa;
    if (sp_evaluate(ck.model, test, 1000, 0, &dl, &da, NULL) != SP_OK ||
        sp_evaluate(pm, test, 1000, 0, &pl, &pa, NULL) != SP_OK) {
        cli_fail("evaluate");
        goto done;
    }
    int64_t dnnz = sp_model_nnz(ck.model), pnnz = sp_model_nnz(pm);
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, model);
        printf(",\"out\":");
        cli_json_string(stdout, outp);
        printf(",\"method\":\"%s\",\"granularity\":\"%s\",\"schedule\":\"%s\","
               "\"finetune_epochs\":%lld,\"sparsity\":%g,"
               "\"dense_test_accuracy\":%.6f,\"test_accuracy\":%.6f,\"test_loss\":%.6f,"
               "\"dense_nnz\":%lld,\"nnz\":%lld,\"dense_file_bytes\":%lld,\"file_bytes\":%lld}\n",
               method, gran, schedule, (long long)finetune, cli_model_sparsity(pm), da, pa, pl, (long long)dnnz, (long long)pnnz,
               cli_file_size(model), cli_file_size(outp));
    } else {
        printf("dense : test accuracy %.2f%%, %lld nonzero parameters, file %lld bytes\n",
               100.0 * da, (long long)dnnz, cli_file_size(model));
        printf("pruned: test accuracy %.2f%%, %lld nonzero parameters, file %lld bytes -> %s\n",
               100.0 * pa, (long long)pnnz, cli_file_size(outp), outp);
    }
    rc = 0;
done:
    sp_checkpoint_free(&ck);
    sp_model_free(pm);
    sp_dataset_free(train);
    sp_dataset_free(test);
    return rc;
}
