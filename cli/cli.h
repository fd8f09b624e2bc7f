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
int cmd_bench_model(int argc, char **argv);

/* Writes s as a JSON string literal. */
void cli_json_string(FILE *f, const char *s);
/* True if path is a sparrow model/checkpoint file (by its magic). */
bool cli_is_checkpoint(const char *path);
/* Reads a config file whole (up to 16 MiB); owned result (free), or NULL with a message. */
char *cli_read_text(const char *path);
/* Prints "sparrow: what: <last error>" to stderr and returns 1. */
int cli_fail(const char *what);

/* Parses a whole decimal integer in [lo, hi]; false (with a message on stderr) otherwise. */
bool cli_parse_i64(const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out);
/* Parses a finite double in [lo, hi]. */
bool cli_parse_f64(const char *opt, const char *s, double lo, double hi, double *out);
/* Parses "AxB" with both parts in [lo, hi] (a block shape "4x4" or an N:M pair "2:4" with sep). */
bool cli_parse_pair(const char *opt, const char *s, char sep, int64_t lo, int64_t hi, int64_t *a,
                    int64_t *b);

#endif
