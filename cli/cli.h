/*
 * cli.h - shared bits of the sparrow command-line tool: one cmd_<verb>.c per subcommand.
 */
#ifndef SPARROW_CLI_H
#define SPARROW_CLI_H

#include <stdio.h>

#include "sparrow/sparrow.h"

int cmd_bench(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_lottery(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_bench_model(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_export_c(int argc, char **argv);

/* ln 2: a loss in nats per character / CLI_LN2 = bits per character. */
#define CLI_LN2 0.693147180559945309417

/* Writes s as a JSON string literal. */
void cli_json_string(FILE *f, const char *s);
/* True if path is a sparrow model/checkpoint file (by its magic). */
bool cli_is_checkpoint(const char *path);
/* Reads a text file (config, recipe) whole, up to 16 MiB; owned result (free), or NULL with a
 * message for an unreadable file, a larger one, or one holding a NUL byte. */
char *cli_read_text(const char *path);
/* Size of the file at path in bytes, or -1 if it cannot be read. */
long long cli_file_size(const char *path);
/* Opens data D for the model of file ck: "text:FILE" with the model's vocabulary, fashion-mnist
 * or idx:DIR; D NULL: a language model's training text (its META), else fashion-mnist. 0, or 1
 * with a message. */
int cli_open_data(const char *data, const sp_checkpoint *ck, sp_dataset **train,
                  sp_dataset **test);
/* Prints "sparrow: what: <last error>" to stderr and returns 1. */
int cli_fail(const char *what);
/* Opens data "text:FILE" for model m (its context length and vocabulary) or, when m is NULL,
 * for config text cfg (the context from its "input 1 1 T" line, the file's own vocabulary).
 * 0, or 1 with a message. */
int cli_open_text(const char *data, const sp_model *m, const char *cfg, sp_dataset **train,
                  sp_dataset **test);

/* Parses a whole decimal integer in [lo, hi]; false (with a message on stderr) otherwise. */
bool cli_parse_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out);
/* Parses a finite double in [lo, hi]. */
bool cli_parse_f64(const char *opt, const char *s, double lo, double hi, double *out);
/* Parses "AxB" with both parts in [lo, hi] (a block shape "4x4" or an N:M pair "2:4" with sep). */
bool cli_parse_pair(const char *opt, const char *s, char sep, int64_t lo, int64_t hi, int64_t *a,
                    int64_t *b);

/* ---- pruning while training (train_prune.c) ---- */

typedef struct cli_prune_settings {
    double sparsity;       /* --prune-sparsity; 0 = no pruning (unless granularity is nm) */
    const char *method, *granularity, *schedule, *format; /* format NULL: by granularity */
    const char *layers;    /* --prune-layers NAME=S,...: per-layer sparsities */
    int32_t n, m, br, bc;
    double start, end;     /* the ramp, as fractions of the run's steps */
    int64_t every;         /* steps between mask updates */
    bool prune_last;
} cli_prune_settings;

#define CLI_PRUNE_DEFAULTS                                                                    \
    {.method = "magnitude", .granularity = "layerwise", .schedule = "gradual", .n = 2, .m = 4, \
     .br = 4, .bc = 4, .start = 0.0, .end = 0.75, .every = 100}

bool cli_prune_enabled(const cli_prune_settings *p);
/* Parses one --prune-* option (v is NULL for the flag --prune-last): 0 handled, 1 error
 * (printed), -1 not a pruning option. */
int cli_prune_option(const char *a, const char *v, cli_prune_settings *p);
/* The final storage: --prune-format, or nm / bsr / csr by granularity. */
const char *cli_prune_format(const cli_prune_settings *p);
/* The settings as "--key value" lines for a model file's META ("" when pruning is off). */
void cli_prune_text(const cli_prune_settings *p, char *buf, size_t n);
/* Prepares a run of total_steps steps: on a fresh run, *m's dense linear layers become masked
 * (the output layer stays dense without --prune-last); g gets the schedule hook's state and
 * *own the per-layer sparsities it points to (free it after training). 0, or 1 with a message. */
int cli_prune_setup(const cli_prune_settings *p, sp_model **m, bool fresh, int64_t total_steps,
                    sp_prune_gradual *g, double **own);
/* The model to write at the end: masks turned into the final storage (*final NULL when that is
 * mask, i.e. m itself). 0, or 1 with a message. */
int cli_prune_finish(const cli_prune_settings *p, const sp_model *m, sp_model **final);
/* The fraction of zeros in the patterns of m's masked and sparse linear layers (0 if none). */
double cli_model_sparsity(const sp_model *m);

/* ---- sparse training (train_sparse.c) ---- */

typedef struct cli_sparse_settings {
    const char *kind;         /* --sparse-train set|rigl|static; NULL: off */
    double density, epsilon;  /* overall density of the sparse layers; or ER's epsilon (> 0) */
    const char *distribution; /* uniform | er | erk */
    int64_t update_every;
    double drop_fraction;
    double update_until;      /* fraction of the run after which the topology stays; <= 0: the
                                 method's default (RigL 0.75, SET 1) */
    bool sparse_last;
} cli_sparse_settings;

#define CLI_SPARSE_DEFAULTS                                                                   \
    {.density = 0.1, .distribution = "erk", .update_every = 100, .drop_fraction = 0.3}

bool cli_sparse_enabled(const cli_sparse_settings *p);
/* --update-until, or the method's default */
double cli_sparse_until(const cli_sparse_settings *p);
/* Parses one sparse-training option (v NULL for the flag --sparse-last): 0, 1 (error
 * printed) or -1 (not one). */
int cli_sparse_option(const char *a, const char *v, cli_sparse_settings *p);
/* The settings as "--key value" lines for META ("" when off). */
void cli_sparse_text(const cli_sparse_settings *p, char *buf, size_t n);
/* The sparse config of a fresh model (owned *out, sp_free). 0, or 1 with a message. */
int cli_sparse_config(const cli_sparse_settings *p, const char *cfg, sp_shape in,
                      int64_t classes, char **out);
/* The hook's settings for model m. 0, or 1 with a message. */
int cli_sparse_setup(const cli_sparse_settings *p, const sp_model *m, uint64_t seed,
                     const sp_dataset *train, int64_t batch, int64_t total_steps, int nthreads,
                     sp_dst *d);
/* The JSON summary's sparse-training fields (each starting with a comma). */
void cli_sparse_json(const sp_model *m, const sp_dst *d, FILE *f);

/* A recipe file (docs/RECIPES.md): `sparrow train` options one per line without the dashes
 * ("prune-sparsity 0.9"), `# comments`, and "prune-layer NAME SPARSITY" lines, gathered into
 * layers ("NAME=S,..." for --prune-layers). argv holds "--key" [value] words to parse like the
 * command line; line[k] is the recipe line of argv[k]. */
#define CLI_RECIPE_MAX 128
typedef struct cli_recipe {
    char *text;
    int argc;
    char *argv[CLI_RECIPE_MAX];
    int line[CLI_RECIPE_MAX];
    char *owned[CLI_RECIPE_MAX];
    int nowned;
    char *layers;
} cli_recipe;
int cli_recipe_read(const char *path, cli_recipe *r);
void cli_recipe_free(cli_recipe *r);

/* ---- mixture of experts (moe_stats.c; docs/MOE.md) ---- */

/* One moe layer's routing statistics, copied out of the model (sp_model_moe_stats). */
typedef struct cli_moe_layer {
    int index;                 /* layer index (sp_model_layer) */
    char name[64], routing[16];
    char config[256];          /* the layer's config line, without " {" */
    int experts, top_k;        /* top_k in effect */
    int64_t tokens, assignments, dropped;
    int64_t *load;             /* assignments per expert (owned) */
    double load_max_over_mean, router_entropy;
} cli_moe_layer;
typedef struct cli_moe_snap {
    int n;                     /* moe layers; 0 for a model without */
    cli_moe_layer *layer;
} cli_moe_snap;

/* Number of moe layers of m. */
int cli_moe_count(const sp_model *m);
/* Copies the statistics of every moe layer into *s (freeing what it held). 0, or 1 with a
 * message. */
int cli_moe_snap_take(const sp_model *m, cli_moe_snap *s);
void cli_moe_snap_free(cli_moe_snap *s);
/* dropped / (assignments + dropped): the fraction of routing decisions capacity dropped. */
double cli_moe_drop_rate(const cli_moe_layer *L);
/* The largest load_max_over_mean over the layers (0 without any). */
double cli_moe_snap_max_load(const cli_moe_snap *s);
/* "  load max/mean X  drop Y%" (maxima over the layers); nothing without moe layers. */
void cli_moe_snap_summary(const cli_moe_snap *s, FILE *f);
/* ',"expert_load_max_over_mean":X,"moe":[{per layer}]'; nothing without moe layers. */
void cli_moe_snap_json(const cli_moe_snap *s, FILE *f);
/* Per layer: a summary line and tokens per expert as a table. */
void cli_moe_snap_table(const cli_moe_snap *s, FILE *f);
/* For a language model: the "text:FILE" it was trained on (from its file's settings) in buf,
 * or NULL (an image model, or no such setting). */
const char *cli_text_default(const sp_checkpoint *ck, char *buf, size_t n);
/* sp_model_moe_set_top_k(m, k): 0, or 1 with a message naming --top-k. */
int cli_set_top_k(sp_model *m, int64_t k);

#endif
