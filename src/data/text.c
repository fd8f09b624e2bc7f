/*
 * text.c - text files as character-level language-modelling datasets: UTF-8 decoding (RFC 3629,
 * strict), the vocabulary (the sorted distinct code points, token id = rank), encoding with an
 * imposed vocabulary, the contiguous train/test cut and the context length (windows of T
 * tokens, each labelled with the next token at every position). The rules are stated in
 * sparrow/data.h's first comment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/data.h"

#include "../core/internal.h"
#include "text_internal.h"

#define MAX_CODE_POINT 0x10FFFF

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

/* Decodes the sequence starting at b[pos] (pos < len): *cp and *next on success, else
 * SP_EFORMAT naming the offset. Sequence length comes from the lead byte; every following byte
 * must be a continuation (10xxxxxx), then the value must be the shortest form (not overlong),
 * not a surrogate and at most U+10FFFF (Unicode 15, table 3-7 gives the same set). */
static sp_status utf8_next(const uint8_t *b, size_t len, size_t pos, int32_t *cp, size_t *next) {
    const uint8_t c = b[pos];
    if (c < 0x80) {
        *cp = c;
        *next = pos + 1;
        return SP_OK;
    }
    int n;
    uint32_t v;
    if (c < 0xC0)
        return sp_fail(SP_EFORMAT, "utf-8: byte offset %zu: stray continuation byte 0x%02X", pos,
                       c);
    if (c < 0xE0) n = 2, v = c & 0x1Fu;
    else if (c < 0xF0) n = 3, v = c & 0x0Fu;
    else if (c < 0xF8) n = 4, v = c & 0x07u;
    else return sp_fail(SP_EFORMAT, "utf-8: byte offset %zu: invalid lead byte 0x%02X", pos, c);
    for (int k = 1; k < n; k++) {
        if (pos + (size_t)k >= len)
            return sp_fail(SP_EFORMAT, "utf-8: byte offset %zu: truncated sequence (lead byte "
                           "0x%02X needs %d bytes, the file ends after %zu)", pos, c, n,
                           len - pos);
        const uint8_t t = b[pos + (size_t)k];
        if ((t & 0xC0) != 0x80)
            return sp_fail(SP_EFORMAT, "utf-8: byte offset %zu: truncated sequence (lead byte "
                           "0x%02X needs %d bytes, byte %d is 0x%02X)", pos, c, n, k + 1, t);
        v = v << 6 | (t & 0x3Fu);
    }
    static const uint32_t min_of_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min_of_len[n])
        return sp_fail(SP_EFORMAT, "utf-8: byte offset %zu: overlong %d-byte encoding of U+%04X",
                       pos, n, (unsigned)v);
    if (v >= 0xD800 && v <= 0xDFFF)
        return sp_fail(SP_EFORMAT, "utf-8: byte offset %zu: surrogate U+%04X is not a character",
                       pos, (unsigned)v);
    if (v > MAX_CODE_POINT)
        return sp_fail(SP_EFORMAT, "utf-8: byte offset %zu: code point 0x%X is above U+10FFFF",
                       pos, (unsigned)v);
    *cp = (int32_t)v;
    *next = pos + (size_t)n;
    return SP_OK;
}

static size_t bom_length(const uint8_t *b, size_t len) {
    return len >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF ? 3 : 0;
}

sp_status sp_utf8_decode(const uint8_t *bytes, size_t len, int32_t *cps, int64_t *count) {
    if ((!bytes && len) || (!cps && len) || !count)
        return sp_fail(SP_EINVAL, "utf8_decode: NULL argument");
    *count = 0;
    int64_t n = 0;
    for (size_t pos = bom_length(bytes, len); pos < len;) {
        sp_status st = utf8_next(bytes, len, pos, &cps[n], &pos);
        if (st != SP_OK) return st;
        n++;
    }
    *count = n;
    return SP_OK;
}

int sp_utf8_encode(int32_t cp, char out[4]) {
    const uint32_t v = (uint32_t)cp;
    if (cp < 0 || v > MAX_CODE_POINT || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    if (v < 0x80) {
        out[0] = (char)v;
        return 1;
    }
    if (v < 0x800) {
        out[0] = (char)(0xC0 | v >> 6);
        out[1] = (char)(0x80 | (v & 0x3F));
        return 2;
    }
    if (v < 0x10000) {
        out[0] = (char)(0xE0 | v >> 12);
        out[1] = (char)(0x80 | (v >> 6 & 0x3F));
        out[2] = (char)(0x80 | (v & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | v >> 18);
    out[1] = (char)(0x80 | (v >> 12 & 0x3F));
    out[2] = (char)(0x80 | (v >> 6 & 0x3F));
    out[3] = (char)(0x80 | (v & 0x3F));
    return 4;
}

/* ---- vocabulary ------------------------------------------------------------------------------ */

int64_t sp_vocab_find(const int32_t *vocab, int64_t n, int32_t cp) {
    if (!vocab) return -1;
    int64_t lo = 0, hi = n; /* binary search in [lo, hi) */
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (vocab[mid] < cp) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && vocab[lo] == cp ? lo : -1;
}

sp_status sp_text_vocab_check(const int32_t *vocab, int64_t n) {
    if (!vocab || n < 1 || n > SP_TEXT_MAX_VOCAB)
        return sp_fail(SP_EINVAL, "vocabulary: %lld code points (need 1 to %d)", (long long)n,
                       SP_TEXT_MAX_VOCAB);
    for (int64_t i = 0; i < n; i++) {
        const int32_t c = vocab[i];
        if (c < 0 || c > MAX_CODE_POINT || (c >= 0xD800 && c <= 0xDFFF))
            return sp_fail(SP_EINVAL, "vocabulary: entry %lld = 0x%X is not a Unicode scalar "
                           "value", (long long)i, (unsigned)c);
        if (i > 0 && c <= vocab[i - 1])
            return sp_fail(SP_EINVAL, "vocabulary: entry %lld = U+%04X does not follow U+%04X "
                           "in strictly ascending order", (long long)i, (unsigned)c,
                           (unsigned)vocab[i - 1]);
    }
    return SP_OK;
}

/* "U+00E9 'é'" (the character itself only when printable) into buf */
static void describe_char(int32_t cp, char *buf, size_t n) {
    char u[5] = {0};
    int k = cp >= 0x20 && cp != 0x7F && !(cp >= 0x80 && cp < 0xA0) ? sp_utf8_encode(cp, u) : 0;
    if (k) snprintf(buf, n, "U+%04X '%s'", (unsigned)cp, u);
    else snprintf(buf, n, "U+%04X", (unsigned)cp);
}

sp_status sp_text_encode(const uint8_t *bytes, size_t len, const int32_t *vocab, int64_t nvocab,
                         int32_t *ids, int64_t *count) {
    if ((!bytes && len) || (!ids && len) || !count)
        return sp_fail(SP_EINVAL, "text_encode: NULL argument");
    *count = 0;
    sp_status st = sp_text_vocab_check(vocab, nvocab);
    if (st != SP_OK) return st;
    int64_t n = 0;
    for (size_t pos = bom_length(bytes, len); pos < len;) {
        int32_t cp = 0;
        size_t next = len;
        if ((st = utf8_next(bytes, len, pos, &cp, &next)) != SP_OK) return st;
        const int64_t id = sp_vocab_find(vocab, nvocab, cp);
        if (id < 0) {
            char what[32];
            describe_char(cp, what, sizeof what);
            return sp_fail(SP_EINVAL, "text: character %s at byte offset %zu is not in the "
                           "vocabulary (%lld characters)", what, pos, (long long)nvocab);
        }
        ids[n++] = (int32_t)id;
        pos = next;
    }
    *count = n;
    return SP_OK;
}

/* The file's own vocabulary: the distinct code points of cps[0..n), ascending, as an owned
 * array in *vocab (*nvocab entries); cps are replaced by their ids. A bit per possible code
 * point (136 KiB) marks those present; ids come from a binary search in the vocabulary. */
static sp_status build_vocab(int32_t *cps, int64_t n, int32_t **vocab, int64_t *nvocab) {
    const size_t words = (MAX_CODE_POINT + 1 + 63) / 64;
    uint64_t *seen = sp_calloc(words, sizeof *seen);
    if (!seen) return SP_ENOMEM;
    for (int64_t i = 0; i < n; i++) seen[cps[i] >> 6] |= (uint64_t)1 << (cps[i] & 63);
    int64_t v = 0;
    for (size_t w = 0; w < words; w++) v += __builtin_popcountll(seen[w]);
    int32_t *voc = sp_alloc(sizeof(int32_t) * (size_t)SP_MAX(v, 1));
    if (!voc) {
        sp_free(seen);
        return SP_ENOMEM;
    }
    int64_t k = 0;
    for (size_t w = 0; w < words; w++)
        for (uint64_t bits = seen[w]; bits; bits &= bits - 1)
            voc[k++] = (int32_t)(w * 64 + (size_t)__builtin_ctzll(bits));
    sp_free(seen);
    for (int64_t i = 0; i < n; i++) cps[i] = (int32_t)sp_vocab_find(voc, v, cps[i]);
    *vocab = voc;
    *nvocab = v;
    return SP_OK;
}

/* ---- datasets -------------------------------------------------------------------------------- */

/* Windows of T tokens in ntokens: n = (ntokens - 1) / T (0 for T = 0 or too few tokens). */
static void apply_context(sp_dataset *d, int64_t T) {
    d->c = 1;
    d->h = 1;
    d->w = T;
    d->features = T;
    d->label_len = T;
    d->n = T > 0 && d->ntokens > T ? (d->ntokens - 1) / T : 0;
}

sp_status sp_text_dataset_new(const int32_t *tokens, int64_t ntokens, const int32_t *vocab,
                              int64_t nvocab, int64_t T, sp_dataset **out) {
    *out = NULL;
    size_t tok_bytes;
    if (ntokens < 0 || !sp_bytes(SP_MAX(ntokens, 1), sizeof(int32_t), &tok_bytes))
        return sp_fail(SP_EOVERFLOW, "text: %lld tokens overflow", (long long)ntokens);
    sp_dataset *d = sp_calloc(1, sizeof *d);
    if (!d) return SP_ENOMEM;
    d->kind = SP_DATASET_TEXT;
    d->classes = (int32_t)nvocab;
    d->scale = 1.0f;
    d->ntokens = ntokens;
    d->tokens = sp_alloc(tok_bytes);
    d->vocab = d->tokens ? sp_alloc(sizeof(int32_t) * (size_t)nvocab) : NULL;
    if (!d->vocab) {
        sp_dataset_free(d);
        return SP_ENOMEM;
    }
    if (ntokens) memcpy(d->tokens, tokens, sizeof(int32_t) * (size_t)ntokens);
    memcpy(d->vocab, vocab, sizeof(int32_t) * (size_t)nvocab);
    apply_context(d, T);
    *out = d;
    return SP_OK;
}

sp_status sp_dataset_set_context(sp_dataset *d, int64_t T) {
    if (!d) return sp_fail(SP_EINVAL, "dataset_set_context: d is NULL");
    if (d->kind != SP_DATASET_TEXT)
        return sp_fail(SP_EINVAL, "dataset_set_context: not a text dataset");
    if (T < 1 || T > (1 << 24))
        return sp_fail(SP_EINVAL, "text: context length %lld not in [1, 2^24]", (long long)T);
    if (d->ntokens < T + 1)
        return sp_fail(SP_EINVAL, "text: %lld tokens are too few for one window of context %lld "
                       "(T + 1 = %lld tokens: the window and the token after it)",
                       (long long)d->ntokens, (long long)T, (long long)(T + 1));
    apply_context(d, T);
    return SP_OK;
}

sp_status sp_dataset_open_text(const char *path, const int32_t *vocab, int64_t nvocab,
                               int64_t ctx, sp_dataset **train, sp_dataset **test) {
    if (train) *train = NULL;
    if (test) *test = NULL;
    if (!path || !train || !test)
        return sp_fail(SP_EINVAL, "dataset_open_text: path, train or test is NULL");
    if (ctx < 0 || ctx > (1 << 24))
        return sp_fail(SP_EINVAL, "text: context length %lld not in [0, 2^24]", (long long)ctx);
    sp_status st;
    if (vocab && (st = sp_text_vocab_check(vocab, nvocab)) != SP_OK) return st;
    uint8_t *bytes = NULL;
    size_t len = 0;
    st = sp_file_read(path, SP_DATASET_MAX_FILE_BYTES, &bytes, &len);
    if (st != SP_OK) return st;
    int32_t *ids = NULL, *own_vocab = NULL;
    int64_t n = 0;
    size_t id_bytes;
    if (!sp_bytes((int64_t)SP_MAX(len, 1), sizeof(int32_t), &id_bytes)) {
        st = sp_fail(SP_EOVERFLOW, "text: %zu bytes overflow", len);
        goto done;
    }
    ids = sp_alloc(id_bytes);
    st = SP_ENOMEM;
    if (!ids) goto done;
    /* every code point takes at least one byte: len entries are enough */
    if (vocab) {
        st = sp_text_encode(bytes, len, vocab, nvocab, ids, &n);
    } else {
        st = sp_utf8_decode(bytes, len, ids, &n);
        if (st == SP_OK && n > 0) st = build_vocab(ids, n, &own_vocab, &nvocab);
        vocab = own_vocab;
    }
    if (st != SP_OK) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", sp_last_error());
        st = sp_fail(st, "%s: %s", path, msg);
        goto done;
    }
    if (n == 0) {
        st = sp_fail(SP_EFORMAT, "text: %s is empty (%zu bytes%s)", path, len,
                     len ? ": only a byte order mark" : "");
        goto done;
    }
    /* the last 10% of the tokens, at least one window of T + 1, are the test part */
    const int64_t window = SP_MAX(ctx, 1) + 1;
    const int64_t ntest = SP_MAX(n / 10, window);
    if (n - ntest < window) {
        st = sp_fail(SP_EINVAL, "text: %s holds %lld characters: too few for a context of %lld "
                     "(one training and one test window of %lld characters each need %lld)",
                     path, (long long)n, (long long)ctx, (long long)window,
                     (long long)(2 * window));
        goto done;
    }
    st = sp_text_dataset_new(ids, n - ntest, vocab, nvocab, ctx, train);
    if (st == SP_OK) st = sp_text_dataset_new(ids + (n - ntest), ntest, vocab, nvocab, ctx, test);
    if (st != SP_OK) {
        sp_dataset_free(*train);
        *train = NULL;
    }
done:
    sp_free(bytes);
    sp_free(ids);
    sp_free(own_vocab);
    return st;
}
