/*
 * text_internal.h - what dataset.c needs from text.c (split and free of text datasets).
 */
#ifndef SPARROW_DATA_TEXT_INTERNAL_H
#define SPARROW_DATA_TEXT_INTERNAL_H

#include "sparrow/data.h"

/* Largest vocabulary: every Unicode code point. */
#define SP_TEXT_MAX_VOCAB 0x110000

/* SP_OK if vocab[0..n) is 1..SP_TEXT_MAX_VOCAB Unicode scalar values in strictly ascending
 * order; else SP_EINVAL naming the first bad entry. */
sp_status sp_text_vocab_check(const int32_t *vocab, int64_t n);

/* A text dataset holding copies of tokens[0..ntokens) and vocab[0..nvocab), with context T
 * (0: none yet; no length check here: n = (ntokens - 1) / T, or 0). Returns owned *out. */
sp_status sp_text_dataset_new(const int32_t *tokens, int64_t ntokens, const int32_t *vocab,
                              int64_t nvocab, int64_t T, sp_dataset **out);

#endif
