/*
 * rng.c - Philox4x32-10 counter-based random numbers (Salmon et al., "Parallel random numbers:
 * as easy as 1, 2, 3", SC 2011). The stream is a pure function of (key, counter), so results are
 * the same on every platform and for any number of threads that each own a split stream.
 */
#include <math.h>

#include "internal.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void sp_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* SplitMix64 finaliser: mixes seeds and stream ids into keys. */
static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void set_key(sp_rng *r, uint64_t k) {
    r->key[0] = (uint32_t)k;
    r->key[1] = (uint32_t)(k >> 32);
    r->counter = 0;
    r->avail = 0;
}

void sp_rng_init(sp_rng *r, uint64_t seed, uint64_t stream) {
    set_key(r, mix64(mix64(seed) ^ mix64(stream + 0x632BE59BD9B4E019ull)));
}

sp_rng sp_rng_split(const sp_rng *r, uint64_t id) {
    sp_rng child;
    uint64_t parent = (uint64_t)r->key[0] | ((uint64_t)r->key[1] << 32);
    set_key(&child, mix64(parent ^ mix64(id ^ 0xA0761D6478BD642Full)));
    return child;
}

uint32_t sp_rng_u32(sp_rng *r) {
    if (r->avail == 0) {
        uint32_t ctr[4] = {(uint32_t)r->counter, (uint32_t)(r->counter >> 32), 0, 0};
        sp_philox4x32_10(ctr, r->key, r->buf);
        r->counter++;
        r->avail = 4;
    }
    return r->buf[4 - r->avail--];
}

uint64_t sp_rng_u64(sp_rng *r) {
    uint64_t lo = sp_rng_u32(r);
    return lo | ((uint64_t)sp_rng_u32(r) << 32);
}

float sp_rng_uniform(sp_rng *r) { return (float)(sp_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

uint64_t sp_rng_below(sp_rng *r, uint64_t n) {
    /* Rejection sampling: draw until the value falls below the largest multiple of n. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = sp_rng_u64(r);
    while (x >= limit);
    return x % n;
}

float sp_rng_normal(sp_rng *r) {
    /* Box-Muller; u1 in (0, 1] keeps logf finite. */
    float u1 = 1.0f - sp_rng_uniform(r);
    float u2 = sp_rng_uniform(r);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}
