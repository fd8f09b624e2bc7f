/*
 * dispatch.c - the variant tables of every kernel family, and the one place that picks a
 * variant for the active ISA level (sp_isa_active, decided once per process).
 *
 * Adding a variant: declare it in kernel_table.h, add one line to its family's table here.
 * Tests (tests/test_kernels_*.c) and benchmarks walk the same tables.
 */
#include <stdatomic.h>
#include <string.h>

#include "kernel_table.h"

/* SPARROW_PORTABLE_KERNELS leaves out the ISA variants (the fuzz build: portable C only) */
#if defined(__x86_64__) && !defined(SPARROW_PORTABLE_KERNELS)
#define X86(...) __VA_ARGS__,
#else
#define X86(...)
#endif
#if defined(__aarch64__) && !defined(SPARROW_PORTABLE_KERNELS)
#define ARM(...) __VA_ARGS__,
#else
#define ARM(...)
#endif

static const sp_kernel csr_spmm[] = {
    SP_KERNEL_REF(sp_f32_spmm_csr__ref),
    SP_KERNEL(sp_f32_spmm_csr__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_f32_spmm_csr__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_f32_spmm_csr__avx512, SP_ISA_AVX512))
    ARM(SP_KERNEL(sp_f32_spmm_csr__neon, SP_ISA_NEON))
};
static const sp_kernel csr_spmm_panels[] = {
    SP_KERNEL_REF(sp_f32_spmm_csr_panels__ref),
    SP_KERNEL(sp_f32_spmm_csr_panels__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_f32_spmm_csr_panels__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_f32_spmm_csr_panels__avx512, SP_ISA_AVX512))
};
static const sp_kernel csr_spmm_t[] = {
    SP_KERNEL_REF(sp_f32_spmm_t_csr__ref),
    SP_KERNEL(sp_f32_spmm_t_csr__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_f32_spmm_t_csr__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_f32_spmm_t_csr__avx512, SP_ISA_AVX512))
    ARM(SP_KERNEL(sp_f32_spmm_t_csr__neon, SP_ISA_NEON))
};
static const sp_kernel csr_sddmm[] = {
    SP_KERNEL_REF(sp_f32_sddmm_csr__ref),
    SP_KERNEL(sp_f32_sddmm_csr__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_f32_sddmm_csr__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_f32_sddmm_csr__avx512, SP_ISA_AVX512))
    ARM(SP_KERNEL(sp_f32_sddmm_csr__neon, SP_ISA_NEON))
};
static const sp_kernel csr_spmm_t_sddmm[] = {
    SP_KERNEL_REF(sp_f32_spmm_t_sddmm_csr__ref),
    SP_KERNEL(sp_f32_spmm_t_sddmm_csr__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_f32_spmm_t_sddmm_csr__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_f32_spmm_t_sddmm_csr__avx512, SP_ISA_AVX512))
    ARM(SP_KERNEL(sp_f32_spmm_t_sddmm_csr__neon, SP_ISA_NEON))
};

static const sp_kernel bsr_spmm[] = {
    SP_KERNEL_REF(sp_f32_spmm_bsr__ref),
    SP_KERNEL(sp_f32_spmm_bsr__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_f32_spmm_bsr__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_f32_spmm_bsr__avx512, SP_ISA_AVX512))
    ARM(SP_KERNEL(sp_f32_spmm_bsr__neon, SP_ISA_NEON))
};
static const sp_kernel bsr_spmm_t[] = {
    SP_KERNEL_REF(sp_f32_spmm_t_bsr__ref),
    SP_KERNEL(sp_f32_spmm_t_bsr__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_f32_spmm_t_bsr__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_f32_spmm_t_bsr__avx512, SP_ISA_AVX512))
    ARM(SP_KERNEL(sp_f32_spmm_t_bsr__neon, SP_ISA_NEON))
};
static const sp_kernel bsr_sddmm[] = {
    SP_KERNEL_REF(sp_f32_sddmm_bsr__ref),
    SP_KERNEL(sp_f32_sddmm_bsr__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_f32_sddmm_bsr__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_f32_sddmm_bsr__avx512, SP_ISA_AVX512))
    ARM(SP_KERNEL(sp_f32_sddmm_bsr__neon, SP_ISA_NEON))
};
static const sp_kernel nm_spmm[] = {
    SP_KERNEL_REF(sp_f32_spmm_nm__ref),
    SP_KERNEL(sp_f32_spmm_nm__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_f32_spmm_nm__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_f32_spmm_nm__avx512, SP_ISA_AVX512))
    ARM(SP_KERNEL(sp_f32_spmm_nm__neon, SP_ISA_NEON))
};
static const sp_kernel nm_spmm_t[] = {
    SP_KERNEL_REF(sp_f32_spmm_t_nm__ref),
    SP_KERNEL(sp_f32_spmm_t_nm__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_f32_spmm_t_nm__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_f32_spmm_t_nm__avx512, SP_ISA_AVX512))
    ARM(SP_KERNEL(sp_f32_spmm_t_nm__neon, SP_ISA_NEON))
};
static const sp_kernel nm_sddmm[] = {
    SP_KERNEL_REF(sp_f32_sddmm_nm__ref),
    SP_KERNEL(sp_f32_sddmm_nm__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_f32_sddmm_nm__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_f32_sddmm_nm__avx512, SP_ISA_AVX512))
    ARM(SP_KERNEL(sp_f32_sddmm_nm__neon, SP_ISA_NEON))
};

static const sp_kernel qact[] = {
    SP_KERNEL_REF(sp_qact__ref),
    SP_KERNEL(sp_qact__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_qact__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL(sp_qact__avx512, SP_ISA_AVX512))
    ARM(SP_KERNEL(sp_qact__neon, SP_ISA_NEON))
};
static const sp_kernel qcsr_spmm[] = {
    SP_KERNEL_REF(sp_i8_spmm_qcsr__ref),
    SP_KERNEL(sp_i8_spmm_qcsr__scalar, SP_ISA_SCALAR),
    X86(SP_KERNEL(sp_i8_spmm_qcsr__avx2, SP_ISA_AVX2))
    X86(SP_KERNEL_FEAT(sp_i8_spmm_qcsr__avx512vnni, SP_ISA_AVX512, SP_FEAT_AVX512VNNI))
    ARM(SP_KERNEL(sp_i8_spmm_qcsr__neon, SP_ISA_NEON))
};

static const sp_kernel adam[] = {
    SP_KERNEL_REF(sp_adam__ref),
    SP_KERNEL(sp_adam__ref, SP_ISA_SCALAR), /* the reference loop vectorizes as it stands */
    X86(SP_KERNEL(sp_adam__avx2, SP_ISA_AVX2))
};

#define FAMILY(name, table) {name, table, (int)(sizeof table / sizeof table[0])}

const sp_kernel_family sp_kernel_families[] = {
    FAMILY("csr_spmm", csr_spmm),
    FAMILY("csr_spmm_panels", csr_spmm_panels),
    FAMILY("csr_spmm_t", csr_spmm_t),
    FAMILY("csr_sddmm", csr_sddmm),
    FAMILY("csr_spmm_t_sddmm", csr_spmm_t_sddmm),
    FAMILY("bsr_spmm", bsr_spmm),
    FAMILY("bsr_spmm_t", bsr_spmm_t),
    FAMILY("bsr_sddmm", bsr_sddmm),
    FAMILY("nm_spmm", nm_spmm),
    FAMILY("nm_spmm_t", nm_spmm_t),
    FAMILY("nm_sddmm", nm_sddmm),
    FAMILY("qact", qact),
    FAMILY("qcsr_spmm", qcsr_spmm),
    FAMILY("adam", adam),
    {NULL, NULL, 0},
};

const sp_kernel_family *sp_kernel_family_get(const char *name) {
    for (const sp_kernel_family *f = sp_kernel_families; f->name; f++)
        if (strcmp(f->name, name) == 0) return f;
    return NULL;
}

/* Preference order for each active level: the level itself, then what it falls back to. */
static int rank(sp_isa want, sp_isa have) {
    if (have == want) return 3;
    if (want == SP_ISA_AVX512 && have == SP_ISA_AVX2) return 2;
    if (have == SP_ISA_SCALAR) return 1;
    return 0;
}

bool sp_kernel_usable(const sp_kernel *k) {
    return sp_isa_supported(k->isa) && (k->feat & ~sp_cpu_features()) == 0;
}

const sp_kernel *sp_kernel_pick(const sp_kernel_family *fam) {
    if (!fam) return NULL;
    sp_isa want = sp_isa_active();
    const sp_kernel *best = NULL;
    int best_rank = 0;
    for (int i = 0; i < fam->count; i++) {
        const sp_kernel *k = &fam->kernels[i];
        if (k->is_ref || !sp_kernel_usable(k)) continue;
        int r = rank(want, k->isa);
        if (r > best_rank) best = k, best_rank = r;
    }
    return best;
}

const sp_kernel *sp_kernel_cached(const char *family, const sp_kernel *_Atomic *slot) {
    const sp_kernel *k = atomic_load_explicit(slot, memory_order_acquire);
    if (!k) {
        /* racing threads compute the same answer; the level is fixed per process */
        k = sp_kernel_pick(sp_kernel_family_get(family));
        atomic_store_explicit(slot, k, memory_order_release);
    }
    return k;
}

const char *sp_kernel_selected(const char *family) {
    const sp_kernel *k = sp_kernel_pick(sp_kernel_family_get(family));
    if (k && (k->feat & SP_FEAT_AVX512VNNI)) return "avx512-vnni";
    return k ? sp_isa_name(k->isa) : NULL;
}
