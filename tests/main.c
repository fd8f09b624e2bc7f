/*
 * main.c - the test runner: runs every registered test (or those whose name contains argv[1])
 * and prints "N passed, N failed".
 */
#include <stdarg.h>
#include <stdlib.h>

#include "test.h"

#define MAX_TESTS 1024

static struct {
    const char *name;
    sp_test_fn fn;
} tests[MAX_TESTS];
static int ntests;
static int failures_in_test;
static const char *current;

void sp_test_register(const char *name, sp_test_fn fn) {
    if (ntests == MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        exit(2);
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
}

void sp_test_fail(const char *file, int line, const char *fmt, ...) {
    if (failures_in_test++ >= 10) return; /* one broken test should not flood the log */
    fprintf(stdout, "FAIL %s (%s:%d): ", current, file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
}

int sp_test_failures(void) { return failures_in_test; }

static int by_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    /* run in name order so that output is stable whatever the link order */
    qsort(tests, (size_t)ntests, sizeof tests[0], by_name);
    const char *warn = sp_isa_env_warning();
    if (warn) printf("note: %s\n", warn);
    printf("sparrow tests: isa %s, %d tests\n", sp_isa_name(sp_isa_active()), ntests);
    for (int i = 0; i < ntests; i++) {
        if (filter && !strstr(tests[i].name, filter)) continue;
        current = tests[i].name;
        failures_in_test = 0;
        int64_t live = sp_alloc_live();
        tests[i].fn();
        if (sp_alloc_live() != live)
            sp_test_fail(__FILE__, __LINE__, "leak: %lld allocations not freed",
                         (long long)(sp_alloc_live() - live));
        if (failures_in_test) failed++;
        else passed++;
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
