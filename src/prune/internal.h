/*
 * internal.h - helpers shared by the files of src/prune (not installed).
 */
#ifndef SPARROW_PRUNE_INTERNAL_H
#define SPARROW_PRUNE_INTERNAL_H

/* The config with layer i's line carrying opts[i] (when not NULL; n layers): its options
 * replace those of the same key, a trailing comment is dropped. Owned result (sp_free), or NULL
 * when out of memory. Config lines map to layers depth-first (model_prune.c). */
char *sp_prune_rewrite_config(const char *cfg, char *const *opts, int n);

#endif
