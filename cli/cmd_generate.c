/*
 * cmd_generate.c - `sparrow generate`: samples text from a character-level language model
 * (`sparrow train --data text:FILE --model charlm:...`), one character at a time.
 *
 * Each step runs the model on the last T characters (T = its context length) and draws the next
 * character from softmax(logits / temperature) at the last real position, with sparrow's seeded
 * RNG: the same model, prompt, temperature and seed give the same text on any thread count
 * (the forward pass is bitwise independent of it).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void generate_usage(FILE *f) {
    fprintf(f,
        "usage: sparrow generate --model MODEL --prompt TEXT [--tokens N] [--temperature T]\n"
        "                        [--seed S] [--threads T] [--top-k K]\n"
        "\n"
        "Continues TEXT with N characters sampled from a character-level language model\n"
        "written by 'sparrow train --data text:FILE' (docs/CHARLM.md), and prints the prompt\n"
        "and the continuation (UTF-8) on stdout.\n"
        "  --model MODEL        the model file\n"
        "  --prompt TEXT        the start: at least one character, each in the model's\n"
        "                       vocabulary (the characters of its training text); the model\n"
        "                       has no start-of-text token, so an empty prompt is refused\n"
        "  --tokens N           characters to generate [200]\n"
        "  --temperature T      sampling temperature in [0, 100]: the next character is drawn\n"
        "                       from softmax(logits / T); lower is more conservative; 0 takes\n"
        "                       the most likely character every time [1]\n"
        "  --seed S             seed of the sampling [1]\n"
        "  --threads T          threads [all]; the text does not depend on it\n"
        "  --top-k K            mixture of experts: route every token to its K best experts\n"
        "                       in every token-choice moe layer instead of the trained top_k\n"
        "                       (1 <= K <= experts; docs/MOE.md)\n");
}

/* The next token from logits[0..V) (stride ld): argmax (first maximum) at temperature 0, else a
 * draw from softmax(logits / temp), computed in double with the maximum subtracted. */
static int32_t sample(const float *logits, int64_t ld, int64_t V, double temp, sp_rng *rng,
                      double *p) {
    int64_t arg = 0;
    for (int64_t c = 1; c < V; c++)
        if (logits[c * ld] > logits[arg * ld]) arg = c;
    if (temp == 0.0) return (int32_t)arg;
    const double mx = logits[arg * ld];
    double sum = 0.0;
    for (int64_t c = 0; c < V; c++) sum += p[c] = exp(((double)logits[c * ld] - mx) / temp);
    /* u uniform in [0, sum): 53 random bits */
    const double u = (double)(sp_rng_u64(rng) >> 11) * 0x1.0p-53 * sum;
    double acc = 0.0;
    for (int64_t c = 0; c < V; c++) {
        acc += p[c];
        if (u < acc) return (int32_t)c;
    }
    return (int32_t)arg; /* u at the very top, lost to rounding */
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL;
    int64_t tokens = 200, seed = 1, threads = 0, top_k = 0;
    double temp = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            generate_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sparrow generate: %s needs a value (see --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--tokens")) {
            if (!cli_parse_i64(a, v, 0, 1 << 24, &tokens)) return 2;
        } else if (!strcmp(a, "--temperature")) {
            if (!cli_parse_f64(a, v, 0.0, 100.0, &temp)) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (!cli_parse_i64(a, v, 0, INT64_MAX, &seed)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (!cli_parse_i64(a, v, 0, 4096, &threads)) return 2;
        } else if (!strcmp(a, "--top-k")) {
            if (!cli_parse_i64(a, v, 1, 4096, &top_k)) return 2;
        } else {
            fprintf(stderr, "sparrow generate: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (!model || !prompt) {
        fprintf(stderr, "sparrow generate: --model and --prompt are required (see --help)\n");
        return 2;
    }
    const size_t plen = strlen(prompt);
    if (plen == 0) {
        fprintf(stderr, "sparrow generate: --prompt is empty: the model predicts each character "
                        "from the ones before it and has no start-of-text token, so give at "
                        "least one character (a newline, say)\n");
        return 2;
    }
    int rc = 1;
    sp_checkpoint ck = {0};
    int32_t *ids = NULL;
    float *x = NULL;
    double *p = NULL;
    /* forward only: the file is mapped and its weights used in place (docs/FORMAT.md) */
    if (sp_checkpoint_open(model, &ck, NULL) != SP_OK) return cli_fail("--model");
    sp_model *m = ck.model;
    int64_t V = 0;
    const int32_t *vocab = sp_model_vocab(m, &V);
    const sp_shape in = sp_model_in(m), out = sp_model_out(m);
    const int64_t T = in.c * in.h * in.w;
    if (!vocab) {
        fprintf(stderr, "sparrow generate: %s has no vocabulary: it was not trained on text "
                        "(sparrow train --data text:FILE --model charlm:...)\n", model);
        goto done;
    }
    if (out.c * out.h * out.w != V * T) {
        fprintf(stderr, "sparrow generate: %s has %lld outputs, not one prediction of %lld "
                        "characters per position of its context %lld\n", model,
                (long long)(out.c * out.h * out.w), (long long)V, (long long)T);
        goto done;
    }
    if (strstr(sp_model_config(m), "causal=0")) {
        fprintf(stderr, "sparrow generate: %s has non-causal attention (causal=0): a prediction "
                        "would see the characters after it, so it cannot generate\n", model);
        goto done;
    }
    /* MoE routing that looks across tokens: expert choice (each expert picks its tokens among
     * all positions) is not causal at all; a capacity lets the filler positions after the
     * prompt take expert slots (and drop) before a real position's later choices */
    const char *cfgtext = sp_model_config(m);
    if (strstr(cfgtext, "routing=expert")) {
        fprintf(stderr, "sparrow generate: %s routes by expert choice (routing=expert), which "
                        "picks tokens across all positions: a prediction would depend on the "
                        "characters after it, so it cannot generate\n", model);
        goto done;
    }
    for (const char *c = strstr(cfgtext, "capacity="); c; c = strstr(c + 9, "capacity="))
        if (strncmp(c + 9, "none", 4) != 0) {
            fprintf(stderr, "sparrow generate: warning: %s has a moe capacity (%.*s): the filler "
                            "positions after the text compete for expert slots, so the samples "
                            "may differ from the model's own predictions\n", model,
                    (int)strcspn(c, " \n"), c);
            break;
        }
    if (top_k > 0 && cli_set_top_k(m, top_k)) goto done;
    ids = malloc(sizeof(int32_t) * (plen + (size_t)tokens));
    x = malloc(sizeof(float) * (size_t)T);
    p = malloc(sizeof(double) * (size_t)V);
    if (!ids || !x || !p) {
        fprintf(stderr, "sparrow generate: out of memory\n");
        goto done;
    }
    int64_t n = 0;
    if (sp_text_encode((const uint8_t *)prompt, plen, vocab, V, ids, &n) != SP_OK) {
        cli_fail("--prompt");
        goto done;
    }
    if (n == 0) {
        fprintf(stderr, "sparrow generate: --prompt holds no character (only a byte order "
                        "mark)\n");
        goto done;
    }
    sp_model_set_threads(m, (int)threads);
    sp_rng rng;
    sp_rng_init(&rng, (uint64_t)seed, 0x67656e);
    char u8[4];
    for (int64_t k = 0; k < n; k++) fwrite(u8, 1, (size_t)sp_utf8_encode(vocab[ids[k]], u8), stdout);
    for (int64_t k = 0; k < tokens; k++) {
        /* the last min(n, T) characters at positions 0..len-1; the positions after them hold
         * token 0 as filler. Attention is causal, so the logits at position len - 1 depend on
         * positions 0..len-1 only, never on the filler after them (and the per-token layers act
         * on each position alone). */
        const int64_t len = n < T ? n : T, start = n - len;
        for (int64_t t = 0; t < T; t++) x[t] = t < len ? (float)ids[start + t] : 0.0f;
        const float *logits;
        if (sp_model_forward(m, x, 1, false, &logits) != SP_OK) {
            cli_fail("generate");
            goto done;
        }
        /* logits (V, T) for batch 1: class c at position t is logits[c * T + t] */
        const int32_t next = sample(logits + (len - 1), T, V, temp, &rng, p);
        ids[n++] = next;
        fwrite(u8, 1, (size_t)sp_utf8_encode(vocab[next], u8), stdout);
        fflush(stdout);
    }
    fputc('\n', stdout);
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    free(ids);
    free(x);
    free(p);
    sp_checkpoint_free(&ck);
    return rc;
}
