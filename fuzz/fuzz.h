/*
 * fuzz.h - what every libFuzzer target of fuzz/ shares: the entry point and MUST, which stops
 * with a crash that libFuzzer records when an invariant breaks (a bug in sparrow). The test
 * suite replays the corpora through the targets' own code (tests/test_corpus.c) with a MUST of
 * its own, defined before it includes a target, that names the file first.
 */
#include <stddef.h>
#include <stdint.h>

/* No include guard: tests/test_corpus.c includes several targets, each with the entry point
 * renamed by a macro, and each needs its own declaration. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef MUST
#define MUST(cond)                                                                              \
    do {                                                                                        \
        if (!(cond)) __builtin_trap();                                                          \
    } while (0)
#endif
