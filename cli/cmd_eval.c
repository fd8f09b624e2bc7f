/*
 * cmd_eval.c - `sparrow eval`: loss and accuracy of a saved model on a dataset's test split;
 * bits per character for a language model on a text file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

static void eval_usage(FILE *f) {
    fprintf(f,
        "usage: sparrow eval --model MODEL [--data D] [--batch B] [--threads T] [--json]\n"
        "                    [--predictions FILE] [--top-k K]\n"
        "\n"
        "Evaluates a model file written by 'sparrow train' on the test split of a dataset.\n"
        "  --data D             fashion-mnist (default), idx:DIR or text:FILE (a language\n"
        "                       model on the last 10%% of a text, encoded with the model's\n"
        "                       vocabulary, in windows of its context length; default for a\n"
        "                       language model: the text it was trained on)\n"
        "  --batch B            samples per forward pass [1000]\n"
        "  --threads T          threads [all]\n"
        "  --top-k K            mixture of experts: route every token to its K best experts\n"
        "                       in every token-choice moe layer instead of the trained top_k\n"
        "                       (1 <= K <= experts; docs/MOE.md)\n"
        "  --predictions FILE   write the predicted class of every test sample, one per line\n"
        "                       (image data only)\n"
        "  --json               print one JSON object: test_accuracy, test_loss, samples,\n"
        "                       seconds, params, nnz; for text also bits_per_char (test_loss\n"
        "                       / ln 2, the loss being nats per character) and characters;\n"
        "                       for a model with moe layers expert_load_max_over_mean and a\n"
        "                       moe array (routing statistics of this evaluation, per layer)\n");
}

int cmd_eval(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *pred_path = NULL;
    int64_t batch = 1000, threads = 0, top_k = 0;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            eval_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sparrow eval: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--predictions")) pred_path = v;
        else if (!strcmp(a, "--batch")) {
            if (!cli_parse_i64(a, v, 1, 1 << 20, &batch)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!cli_parse_i64(a, v, 0, 4096, &threads)) return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (!cli_parse_i64(a, v, 1, 4096, &top_k)) return 2;
        } else {
            fprintf(stderr, "sparrow eval: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "sparrow eval: --model is required (see --help)\n");
        return 2;
    }
    int rc = 1;
    sp_checkpoint ck = {0};
    sp_dataset *train = NULL, *test = NULL;
    int32_t *pred = NULL;
    char saved_data[4096];
    cli_moe_snap moe = {0};
    /* forward only: the file is mapped and its weights used in place (docs/FORMAT.md) */
    if (sp_checkpoint_open(model, &ck, NULL) != SP_OK) return cli_fail("--model");
    if (top_k > 0 && cli_set_top_k(ck.model, top_k)) goto done;
    if (!data && sp_model_vocab(ck.model, NULL)) {
        /* a language model: by default the text it was trained on (its file's settings) */
        if (!(data = cli_text_default(&ck, saved_data, sizeof saved_data))) {
            fprintf(stderr, "sparrow eval: %s is a language model: give --data text:FILE\n",
                    model);
            goto done;
        }
    }
    if (!data) data = "fashion-mnist";
    const bool text = strncmp(data, "text:", 5) == 0;
    if (text && pred_path) {
        fprintf(stderr, "sparrow eval: --predictions writes one class per sample and is for image "
                        "data; a text model predicts every character (its accuracy is per "
                        "character)\n");
        rc = 2;
        goto done;
    }
    if (text) {
        if (cli_open_text(data, ck.model, NULL, &train, &test)) goto done;
    } else if (sp_dataset_open(data, &train, &test) != SP_OK) {
        cli_fail("--data");
        goto done;
    }
    if (pred_path && !(pred = malloc(sizeof(int32_t) * (size_t)test->n))) goto done;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double loss, acc;
    sp_model_moe_reset_stats(ck.model);
    if (sp_evaluate(ck.model, test, batch, (int)threads, &loss, &acc, pred) != SP_OK) {
        cli_fail("eval");
        goto done;
    }
    if (cli_moe_snap_take(ck.model, &moe)) goto done;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (pred_path) {
        FILE *f = fopen(pred_path, "w");
        if (!f) {
            fprintf(stderr, "sparrow: cannot write %s: %s\n", pred_path, strerror(errno));
            goto done;
        }
        for (int64_t i = 0; i < test->n; i++) fprintf(f, "%d\n", (int)pred[i]);
        if (fclose(f) != 0) {
            fprintf(stderr, "sparrow: writing %s failed\n", pred_path);
            goto done;
        }
    }
    if (json) {
        printf("{\"model\":");
        cli_json_string(stdout, model);
        printf(",\"test_accuracy\":%.6f,\"test_loss\":%.6f,\"samples\":%lld,\"seconds\":%.3f,"
               "\"params\":%lld,\"nnz\":%lld", acc, loss, (long long)test->n, secs,
               (long long)sp_model_nparams(ck.model), (long long)sp_model_nnz(ck.model));
        if (text)
            printf(",\"bits_per_char\":%.6f,\"characters\":%lld", loss / CLI_LN2,
                   (long long)(test->n * test->label_len));
        cli_moe_snap_json(&moe, stdout);
        printf("}\n");
    } else if (text) {
        printf("test bits per character %.4f  accuracy per character %.2f%%  (%lld characters "
               "in %lld windows, %.2f s)\n", loss / CLI_LN2, 100.0 * acc,
               (long long)(test->n * test->label_len), (long long)test->n, secs);
    } else {
        printf("test accuracy %.2f%%  test loss %.4f  (%lld samples, %.2f s)\n", 100.0 * acc, loss,
               (long long)test->n, secs);
    }
    if (!json && moe.n) {
        printf("routing:");
        cli_moe_snap_summary(&moe, stdout);
        printf("  (max over %d moe layers; top_k %d)\n", moe.n, moe.layer[0].top_k);
    }
    rc = 0;
done:
    cli_moe_snap_free(&moe);
    free(pred);
    sp_checkpoint_free(&ck);
    sp_dataset_free(train);
    sp_dataset_free(test);
    return rc;
}
