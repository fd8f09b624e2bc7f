/*
 * alloc.c - the one allocation hook (64-byte aligned) with fault injection and a live count.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SP_ALIGN 64

static void *default_alloc(size_t size, size_t align, void *user) {
    SP_UNUSED(user);
    /* aligned_alloc wants a size that is a multiple of the alignment. */
    size_t rounded = (size + align - 1) & ~(align - 1);
    if (rounded < size) return NULL;
    return aligned_alloc(align, rounded ? rounded : align);
}

static void default_free(void *p, void *user) {
    SP_UNUSED(user);
    free(p);
}

static sp_allocator current = {default_alloc, default_free, NULL};
static atomic_llong fail_countdown; /* > 0: allocations left until the failing one */
static atomic_llong live;

void sp_set_allocator(const sp_allocator *a) {
    if (a && a->alloc && a->free) current = *a;
    else current = (sp_allocator){default_alloc, default_free, NULL};
}

void sp_alloc_fail_after(int64_t n) { atomic_store(&fail_countdown, n > 0 ? n : 0); }

int64_t sp_alloc_live(void) { return atomic_load(&live); }

void *sp_alloc(size_t size) {
    long long c = atomic_load(&fail_countdown);
    while (c > 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &c, c - 1)) {
            if (c == 1) {
                sp_fail(SP_ENOMEM, "out of memory allocating %zu bytes (injected failure)", size);
                return NULL;
            }
            break;
        }
    }
    void *p = current.alloc(size, SP_ALIGN, current.user);
    if (!p) {
        sp_fail(SP_ENOMEM, "out of memory allocating %zu bytes", size);
        return NULL;
    }
    atomic_fetch_add(&live, 1);
    return p;
}

void *sp_calloc(size_t n, size_t size) {
    size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes)) {
        sp_fail(SP_ENOMEM, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    void *p = sp_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void sp_free(void *p) {
    if (!p) return;
    atomic_fetch_sub(&live, 1);
    current.free(p, current.user);
}
