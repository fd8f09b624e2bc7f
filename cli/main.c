/*
 * main.c - the sparrow command-line tool: dispatches to one cmd_<verb>.c per subcommand.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static void usage(FILE *f) {
    fprintf(f,
            "sparrow %s - sparse neural networks on CPUs\n"
            "\n"
            "usage: sparrow <command> [options]\n"
            "\n"
            "commands:\n"
            "  train        train a model (MLP, CNN, transformer) on a dataset\n"
            "  eval         loss and accuracy of a saved model on a test set\n"
            "  generate     sample text from a character-level language model\n"
            "  inspect      a model file layer by layer: format, nonzeros, sparsity, bytes;\n"
            "               with --data, the routing statistics of its moe layers\n"
            "  prune        prune a trained model at once into a sparse model file, or drop\n"
            "               the least-used experts of its moe layers (--keep-experts)\n"
            "  lottery      lottery tickets: iterative pruning with rewinding, random-reinit control\n"
            "  export-c     a model as C source for a microcontroller (no malloc, no libc)\n"
            "  convert      safetensors (PyTorch nn.Sequential) to and from sparrow model files\n"
            "  quantize     int8 or 4-bit weights on top of sparsity, calibrated activations\n"
            "  bench spmm   time a sparse kernel against dense OpenBLAS on the same data\n"
            "  bench model  time a model's forward pass, optionally against another (--vs)\n"
            "  info         CPU features, kernel variants and GEMM backend in use\n"
            "  version      print the version\n"
            "\n"
            "Run 'sparrow <command> --help' for a command's options.\n"
            "Environment: SPARROW_ISA=scalar|avx2|avx512|neon forces a kernel level.\n",
            sp_version());
}

static int cmd_info(void) {
    const char *warn = sp_isa_env_warning();
    if (warn) fprintf(stderr, "sparrow: warning: %s\n", warn);
    printf("sparrow %s\n", sp_version());
    printf("isa: best %s, active %s\n", sp_isa_name(sp_isa_best()), sp_isa_name(sp_isa_active()));
    printf("threads: %d available, %s\n", sp_threads_available(),
           sp_threads_enabled() ? "thread pool" : "single-threaded build");
    printf("dense gemm: %s\n", sp_gemm_backend());
    static const char *fams[] = {"csr_spmm", "csr_spmm_t", "csr_sddmm", "bsr_spmm", "bsr_spmm_t",
                                 "bsr_sddmm", "nm_spmm", "nm_spmm_t", "nm_sddmm", "qcsr_spmm"};
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        const char *k = sp_kernel_selected(fams[i]);
        if (k) printf("kernel %-11s %s\n", fams[i], k);
    }
    return 0;
}

long long cli_file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

int cli_open_data(const char *data, const sp_checkpoint *ck, sp_dataset **train,
                  sp_dataset **test) {
    char saved[4096];
    if (!data) data = cli_text_default(ck, saved, sizeof saved);
    if (!data) data = "fashion-mnist";
    if (!strncmp(data, "text:", 5)) return cli_open_text(data, ck->model, NULL, train, test);
    if (sp_dataset_open(data, train, test) != SP_OK) return cli_fail("--data");
    return 0;
}

bool cli_parse_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "sparrow: %s expects an integer in [%lld, %lld], got '%s'\n", opt,
                (long long)lo, (long long)hi, s ? s : "");
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_f64(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "sparrow: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi,
                s ? s : "");
        return false;
    }
    *out = v;
    return true;
}

bool cli_parse_pair(const char *opt, const char *s, char sep, int64_t lo, int64_t hi, int64_t *a,
                    int64_t *b) {
    const char *p = s ? strchr(s, sep) : NULL;
    char first[32];
    if (!p || (size_t)(p - s) >= sizeof first) {
        fprintf(stderr, "sparrow: %s expects A%cB, got '%s'\n", opt, sep, s ? s : "");
        return false;
    }
    memcpy(first, s, (size_t)(p - s));
    first[p - s] = '\0';
    return cli_parse_i64(opt, first, lo, hi, a) && cli_parse_i64(opt, p + 1, lo, hi, b);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    if (!strcmp(verb, "version") || !strcmp(verb, "--version")) {
        printf("sparrow %s\n", sp_version());
        return 0;
    }
    if (!strcmp(verb, "info")) return cmd_info();
    if (!strcmp(verb, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(verb, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(verb, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(verb, "generate")) return cmd_generate(argc - 1, argv + 1);
    if (!strcmp(verb, "inspect")) return cmd_inspect(argc - 1, argv + 1);
    if (!strcmp(verb, "prune")) return cmd_prune(argc - 1, argv + 1);
    if (!strcmp(verb, "lottery")) return cmd_lottery(argc - 1, argv + 1);
    if (!strcmp(verb, "convert")) return cmd_convert(argc - 1, argv + 1);
    if (!strcmp(verb, "quantize")) return cmd_quantize(argc - 1, argv + 1);
    if (!strcmp(verb, "export-c")) return cmd_export_c(argc - 1, argv + 1);
    fprintf(stderr, "sparrow: unknown command '%s' (see 'sparrow --help')\n", verb);
    return 2;
}
