/*
 * cpu.c - CPU feature detection and the kernel ISA level.
 *
 * On x86-64 a level is usable only if CPUID reports the instructions AND the OS saves the
 * register state (XGETBV: XMM|YMM for AVX2; also opmask|ZMM_Hi256|Hi16_ZMM for AVX-512).
 * Extensions beyond a level (AVX-512 VNNI) are feature bits that single kernel variants need
 * (sp_cpu_features). On aarch64 NEON is baseline. SPARROW_ISA may lower (never raise) the level, once per process.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static bool x86_has(sp_isa isa) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx) return false;
    uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return false; /* XMM and YMM state */
    if (__get_cpuid_max(0, NULL) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    bool avx2 = (b >> 5) & 1;
    if (isa == SP_ISA_AVX2) return avx2 && fma;
    if (isa == SP_ISA_AVX512) {
        bool f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
        bool zmm_state = (xcr0 & 0xE0) == 0xE0; /* opmask, ZMM_Hi256, Hi16_ZMM */
        return avx2 && fma && f && dq && bw && vl && zmm_state;
    }
    return false;
}

/* Extension bits; called only where the AVX-512 level is supported (leaf 7 exists) */
static unsigned x86_features(void) {
    unsigned a, b, c, d, f = 0;
    __cpuid_count(7, 0, a, b, c, d);
    if ((c >> 11) & 1) f |= SP_FEAT_AVX512VNNI;
    return f;
}
#endif

static bool isa_probe(sp_isa isa) {
    switch (isa) {
    case SP_ISA_SCALAR: return true;
#if defined(__x86_64__) || defined(_M_X64)
    case SP_ISA_AVX2:
    case SP_ISA_AVX512: return x86_has(isa);
#endif
#if defined(__aarch64__)
    case SP_ISA_NEON: return true;
#endif
    default: return false;
    }
}

/* CPUID traps to the hypervisor in a VM (microseconds): probe once, answer from a table. */
static bool isa_table[SP_ISA_NEON + 1];
static unsigned feature_bits;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

static void probe_all(void) {
    for (int i = SP_ISA_SCALAR; i <= SP_ISA_NEON; i++) isa_table[i] = isa_probe((sp_isa)i);
#if defined(__x86_64__) || defined(_M_X64)
    if (isa_table[SP_ISA_AVX512]) feature_bits = x86_features();
#endif
}

unsigned sp_cpu_features(void) {
    pthread_once(&probe_once, probe_all);
    return feature_bits;
}

bool sp_isa_supported(sp_isa isa) {
    if ((int)isa < SP_ISA_SCALAR || (int)isa > SP_ISA_NEON) return false;
    pthread_once(&probe_once, probe_all);
    return isa_table[isa];
}

const char *sp_isa_name(sp_isa isa) {
    switch (isa) {
    case SP_ISA_SCALAR: return "scalar";
    case SP_ISA_AVX2: return "avx2";
    case SP_ISA_AVX512: return "avx512";
    case SP_ISA_NEON: return "neon";
    }
    return "?";
}

sp_isa sp_isa_best(void) {
    if (sp_isa_supported(SP_ISA_AVX512)) return SP_ISA_AVX512;
    if (sp_isa_supported(SP_ISA_AVX2)) return SP_ISA_AVX2;
    if (sp_isa_supported(SP_ISA_NEON)) return SP_ISA_NEON;
    return SP_ISA_SCALAR;
}

static sp_isa active_isa;
static char env_warning[160];
static bool env_has_warning;

static void decide_isa(void) {
    active_isa = sp_isa_best();
    const char *env = getenv("SPARROW_ISA");
    if (!env || !*env) return;
    for (int i = SP_ISA_SCALAR; i <= SP_ISA_NEON; i++) {
        if (strcmp(env, sp_isa_name((sp_isa)i)) != 0) continue;
        if (sp_isa_supported((sp_isa)i) && i <= (int)active_isa) {
            active_isa = (sp_isa)i;
            return;
        }
        env_has_warning = true;
        snprintf(env_warning, sizeof env_warning, "SPARROW_ISA=%.32s is not supported here; using %s",
                 env, sp_isa_name(active_isa));
        return;
    }
    env_has_warning = true;
    snprintf(env_warning, sizeof env_warning,
             "SPARROW_ISA=%.32s is not one of scalar|avx2|avx512|neon; using %s", env,
             sp_isa_name(active_isa));
}

static pthread_once_t isa_once = PTHREAD_ONCE_INIT;

sp_isa sp_isa_active(void) {
    pthread_once(&isa_once, decide_isa);
    return active_isa;
}

const char *sp_isa_env_warning(void) {
    pthread_once(&isa_once, decide_isa);
    return env_has_warning ? env_warning : NULL;
}
