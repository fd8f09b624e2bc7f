/*
 * qcsr_x86.h - decoding of quantized CSR entries shared by the x86 product variants
 * (avx2/qcsr_avx2.c, avx512/qcsr_avx512.c; internal). SSE2 only, so that every x86 kernel file
 * may include it.
 */
#ifndef SPARROW_QCSR_X86_H
#define SPARROW_QCSR_X86_H

#include <emmintrin.h>
#include <string.h>

#include "kernel_table.h"

#define CHUNK 256 /* stored entries decoded at a time (dense layout, 4-bit weights) */

/* 4-bit entries [k, k + n) -> int8, 32 at a time: 16 bytes split into low and high nibbles,
 * interleaved back into entry order (entry e is the low nibble of byte e / 2 for even e), and
 * sign-extended as (v ^ 8) - 8. */
static inline void q4_values(const void *val, int64_t k, int64_t n, int8_t *out) {
    const uint8_t *bytes = val;
    const __m128i low4 = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    int64_t m = 0;
    if (n > 0 && (k & 1)) out[m++] = (int8_t)sp_q4_get(val, k); /* start on a whole byte */
    for (; m + 32 <= n; m += 32) {
        const __m128i b = _mm_loadu_si128((const __m128i *)(bytes + (k + m) / 2));
        const __m128i lo = _mm_and_si128(b, low4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low4);
        const __m128i e0 = _mm_sub_epi8(_mm_xor_si128(_mm_unpacklo_epi8(lo, hi), eight), eight);
        const __m128i e1 = _mm_sub_epi8(_mm_xor_si128(_mm_unpackhi_epi8(lo, hi), eight), eight);
        _mm_storeu_si128((__m128i *)(out + m), e0);
        _mm_storeu_si128((__m128i *)(out + m + 16), e1);
    }
    for (; m < n; m++) out[m] = (int8_t)sp_q4_get(val, k + m);
}

/* Stored entries [k, k + n) (n >= 1) of a row starting at k0 decoded (col: the column before
 * them, updated) into X element offsets and int8 values, padded with zero weights to whole
 * quads. Returns the quads. The matrix fields are read into locals first: the stores to off and
 * wv could otherwise alias them and force a reload per entry. */
static inline int64_t decode(const sp_qcsr *w, int64_t k, int64_t n, int64_t k0, int64_t ldq,
                             int64_t *col, int64_t *off, int8_t *wv) {
    const uint8_t *gap = w->gap;
    int64_t c = *col;
    if (gap) {
        for (int64_t m = 0; m < n; m++) c += gap[k + m], off[m] = c * ldq;
    } else {
        for (int64_t m = 0; m < n; m++) c = k + m - k0, off[m] = c * ldq;
    }
    if (w->bits == 8) memcpy(wv, (const int8_t *)w->val + k, (size_t)n);
    else q4_values(w->val, k, n, wv);
    *col = c;
    int64_t m = n;
    for (; m & 3; m++) off[m] = off[n - 1], wv[m] = 0;
    return m / 4;
}

#endif
