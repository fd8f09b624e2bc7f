/*
 * sparrow/data.h - datasets: IDX files (MNIST, Fashion-MNIST) and text files (character-level
 * language modelling), train/validation split, shuffling and batch gathering into sparrow's
 * feature-major activation layout.
 *
 *     sp_dataset *train = NULL, *test = NULL, *fit = NULL, *val = NULL;
 *     sp_status st = sp_dataset_open("fashion-mnist", &train, &test);   // or "idx:DIR"
 *     if (st == SP_OK) st = sp_dataset_split(train, 5000, 42, &fit, &val);
 *     int64_t *perm = malloc(sizeof *perm * fit->n);
 *     for (int64_t i = 0; i < fit->n; i++) perm[i] = i;
 *     sp_rng rng;
 *     sp_rng_init(&rng, 42, 1);
 *     sp_shuffle_i64(perm, fit->n, &rng);                               // once per epoch
 *     float *x = ...;   // (features, 128) row-major: x[f * 128 + b]
 *     int32_t y[128];   // 128 * fit->label_len in general
 *     for (int64_t s = 0; s + 128 <= fit->n; s += 128)
 *         st = sp_dataset_batch(fit, perm + s, 128, x, 128, y);         // then forward/backward
 *     sp_dataset_free(fit); sp_dataset_free(val); sp_dataset_free(train); sp_dataset_free(test);
 *
 * Images. Pixels are kept as the file's bytes (u8); a feature value is pixel * scale, with
 * scale = 1/255 for u8 images, so features lie in [0, 1]. Gzip-compressed files (.gz) are read
 * through zlib; a build without zlib (SPARROW_ZLIB=OFF) refuses them with SP_EUNSUPPORTED and
 * reads raw files. One label per sample (label_len = 1).
 *
 * Text ("text:FILE", sp_dataset_open_text). The file is read whole (at most
 * SP_DATASET_MAX_FILE_BYTES; gzip is decompressed as above) and must be valid UTF-8 (RFC 3629:
 * overlong forms, surrogates, code points above U+10FFFF, truncated sequences and stray
 * continuation bytes are SP_EFORMAT naming the byte offset); an empty file is SP_EFORMAT too. A
 * UTF-8 byte order mark at the start is skipped; everything else, CR and LF included, is a
 * token. Tokens are Unicode code points; the vocabulary is the sorted set of the distinct code
 * points of the whole file (token id = rank, classes = vocabulary size), unless a vocabulary is
 * imposed (the one a trained model carries, sp_model_vocab): then a code point outside it is
 * SP_EINVAL naming the character (U+XXXX) and its byte offset. The last 10% of the tokens, and
 * at least one window (ctx + 1 tokens), are the test set, the rest the training set: two
 * contiguous parts, so that no test text is seen in training. With the context length T
 * (sp_dataset_set_context, or ctx when opening) sample i is the window tokens[i*T, i*T + T)
 * with labels tokens[i*T + 1, i*T + T + 1), the next token at each position; n = (ntokens -
 * 1) / T non-overlapping windows, shape (1, 1, T), features = T, label_len = T, scale = 1 (a
 * feature is a token id as a float, what the `embedding` layer reads). sp_dataset_batch then
 * gives x[t * ldx + b] = id of token t of sample b and y[t * batch + b] = its next token: the
 * column order t*B + b of sequence layers, so logits (classes, T * B) line up with y and the
 * loss is a cross-entropy over T * B columns. sp_dataset_split takes the validation windows from
 * the END of the training part (contiguous text again), not at random.
 */
#ifndef SPARROW_DATA_H
#define SPARROW_DATA_H

#include "sparrow/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest file (after decompression) that sp_dataset_open and sp_dataset_load_idx_dir read. */
#define SP_DATASET_MAX_FILE_BYTES ((size_t)1 << 30)

/* ---- IDX files ------------------------------------------------------------------------------- */

/* Parsed view of an IDX buffer (Y. LeCun's format: 2 zero bytes, a type code, ndim, then ndim
 * big-endian u32 dims, then the data in row-major order). data points into the parsed buffer;
 * count = dims[0] * ... * dims[ndim-1] bytes. */
typedef struct sp_idx {
    int ndim;
    int64_t dims[4];
    const uint8_t *data;
    int64_t count;
} sp_idx;

/* Parses an IDX buffer; borrows buf (out->data points into it). Rules, in order: len >= 4
 * (SP_EFORMAT), two zero bytes (SP_EFORMAT), type code 0x08 = u8 (any other SP_EUNSUPPORTED
 * naming it), ndim 0 (SP_EFORMAT) or > 4 (SP_EUNSUPPORTED), the dims fit in len (SP_EFORMAT),
 * every dim >= 1 (a 0 dim is SP_EFORMAT: an empty dataset or sample is refused), the dims'
 * product fits int64 (SP_EOVERFLOW), and header + product == len exactly (SP_EFORMAT for
 * truncated data and for trailing bytes). */
sp_status sp_idx_parse(const uint8_t *buf, size_t len, sp_idx *out);

/* Reads a whole file into *bytes (returned owned, free with sp_free) and *len. A file starting
 * with the gzip magic 1f 8b is decompressed (zlib, in chunks: memory grows with the real
 * content). SP_EIO if it cannot be opened or read (message names the path and strerror),
 * SP_EFORMAT for corrupt or truncated gzip or more than max_bytes of (decompressed) content,
 * SP_EUNSUPPORTED for gzip in a build without zlib. On error *bytes is NULL. */
sp_status sp_file_read(const char *path, size_t max_bytes, uint8_t **bytes, size_t *len);

/* ---- datasets -------------------------------------------------------------------------------- */

/* What the samples of a dataset are. */
typedef enum sp_dataset_kind {
    SP_DATASET_IMAGES = 0, /* u8 pixels, one label per sample */
    SP_DATASET_TEXT = 1,   /* windows of a token sequence, one label (next token) per position */
} sp_dataset_kind;

/* n labelled samples of shape (c, h, w): images stored as bytes, sample after sample, or
 * windows of T tokens of one text. */
typedef struct sp_dataset {
    int64_t n;        /* samples */
    int64_t c, h, w;  /* per-sample shape: (1, 28, 28) for Fashion-MNIST; IDX 2-d data (n, f)
                         gives (f, 1, 1); text (1, 1, T) */
    int64_t features; /* c * h * w */
    int32_t classes;  /* every label is in [0, classes); text: the vocabulary size */
    float scale;      /* feature value = pixel * scale; 1/255 for u8 images, 1 for text */
    uint8_t *pixels;  /* images: n * features, sample-major, owned; text: NULL */
    int32_t *labels;  /* images: n, owned; text: NULL */
    sp_dataset_kind kind;
    int64_t label_len; /* labels per sample: 1 for images, T for text (0 before a context) */
    int32_t *tokens;  /* text: ntokens token ids in [0, classes), in file order, owned */
    int64_t ntokens;
    int32_t *vocab;   /* text: classes code points, strictly ascending (id = rank), owned */
} sp_dataset;

/* Dataset from an images IDX buffer (ndim 2..4: (n, f), (n, h, w) or (n, c, h, w), kept in file
 * order) and a labels IDX buffer (ndim 1: (n)); copies both, borrows the buffers. classes > 0:
 * every label must be < classes; classes == 0: classes = max label + 1. Returns owned *out.
 * SP_EFORMAT for count mismatch or a label out of range (naming index and value), plus every
 * error of sp_idx_parse; SP_EINVAL for classes < 0; SP_ENOMEM. */
sp_status sp_dataset_from_idx(const uint8_t *images, size_t images_len, const uint8_t *labels,
                              size_t labels_len, int32_t classes, sp_dataset **out);

/* Loads dir/{train,t10k}-images-idx3-ubyte and the matching -labels-idx1-ubyte (train picks
 * which), each raw if present, else with .gz; files capped at SP_DATASET_MAX_FILE_BYTES.
 * classes as in sp_dataset_from_idx. SP_EIO if neither form exists (naming both paths). */
sp_status sp_dataset_load_idx_dir(const char *dir, bool train, int32_t classes, sp_dataset **out);

/* Opens a named dataset's train and test sets, both returned owned. spec "fashion-mnist": the
 * directory in env SPARROW_FASHION_MNIST if set, else /usr/share/datasets/fashion-mnist
 * (Debian's dataset-fashion-mnist), 10 classes. "idx:DIR": any directory with the 4 standard
 * names; classes = max train label + 1 and every test label must be below it (SP_EFORMAT).
 * Train and test must have the same sample shape (SP_ESHAPE). "text:FILE": the text file's
 * own vocabulary and no context yet (sp_dataset_open_text(FILE, NULL, 0, 0, ...); set one with
 * sp_dataset_set_context before batching). Unknown spec: SP_EINVAL. On error nothing is leaked
 * and *train, *test are NULL. */
sp_status sp_dataset_open(const char *spec, sp_dataset **train, sp_dataset **test);

/* ---- text ------------------------------------------------------------------------------------ */

/* Decodes len bytes of UTF-8 into code points: cps (room for len entries) gets them, *count how
 * many. A byte order mark (EF BB BF) at the very start is skipped. SP_EFORMAT naming the byte
 * offset of the offending sequence for an invalid lead byte (F8..FF), a stray continuation
 * byte, a truncated sequence, an overlong form, a surrogate (U+D800..U+DFFF) or a code point
 * above U+10FFFF; SP_EINVAL for NULL pointers. */
sp_status sp_utf8_decode(const uint8_t *bytes, size_t len, int32_t *cps, int64_t *count);

/* Writes the UTF-8 form of code point cp (a Unicode scalar value) into out[0..4) and returns
 * its length (1..4); 0 for a surrogate, a negative value or one above U+10FFFF. */
int sp_utf8_encode(int32_t cp, char out[4]);

/* Token id of code point cp in vocab[0..n) (strictly ascending): its rank, or -1 if absent. */
int64_t sp_vocab_find(const int32_t *vocab, int64_t n, int32_t cp);

/* Encodes UTF-8 text into token ids with a given vocabulary (strictly ascending code points,
 * as sp_model_vocab gives): ids (room for len entries) gets one id per code point, *count how
 * many; a BOM at the start is skipped. Every error of sp_utf8_decode; SP_EINVAL naming the
 * character (U+XXXX) and its byte offset for one outside the vocabulary. */
sp_status sp_text_encode(const uint8_t *bytes, size_t len, const int32_t *vocab, int64_t nvocab,
                         int32_t *ids, int64_t *count);

/* Opens a text file as a character-level language-modelling dataset (the rules are in this
 * header's first comment): *train and *test returned owned. vocab (nvocab code points, strictly
 * ascending; borrowed, copied) imposes a vocabulary, NULL makes the file's own. ctx >= 1 sets the
 * context length T of both parts; ctx = 0 leaves it for sp_dataset_set_context (the test part
 * is then the last max(10%, 2) tokens). SP_EIO for an unreadable file, SP_EFORMAT for an empty
 * or invalid one (naming the offset), SP_EINVAL for a character outside an imposed vocabulary,
 * a bad vocab or ctx < 0, and for a file too short to give the context one training and one
 * test window (naming the sizes). */
sp_status sp_dataset_open_text(const char *path, const int32_t *vocab, int64_t nvocab,
                               int64_t ctx, sp_dataset **train, sp_dataset **test);

/* Sets the context length of a text dataset: shape (1, 1, T), features = label_len = T,
 * n = (ntokens - 1) / T windows. SP_EINVAL for an image dataset, T < 1 or a text too short for
 * one window (ntokens < T + 1, naming both). */
sp_status sp_dataset_set_context(sp_dataset *d, int64_t T);

/* Frees a dataset and its arrays; accepts NULL. */
void sp_dataset_free(sp_dataset *d);

/* Splits d (borrowed) into copies: *val holds nval samples chosen by a permutation seeded with
 * seed (sp_shuffle_i64), *train the other d->n - nval, both in d's order; both returned owned,
 * with d's shape, classes and scale. Text: *val holds the LAST nval windows (seed unused) and
 * *train the windows before them, each with its own contiguous tokens (the one token where they
 * meet is a label of the last training window and the first input of validation; no
 * validation label is trained on). SP_EINVAL unless 0 <= nval < d->n; SP_ENOMEM. */
sp_status sp_dataset_split(const sp_dataset *d, int64_t nval, uint64_t seed, sp_dataset **train,
                           sp_dataset **val);

/* Shuffles perm[0..n) in place (Fisher-Yates, sp_rng_below): the same rng state gives the same
 * order on every platform. Does nothing for n < 2 or NULL arguments. */
void sp_shuffle_i64(int64_t *perm, int64_t n, sp_rng *rng);

/* Gathers samples idx[0..batch) of d into x FEATURE-MAJOR, x[f * ldx + b] =
 * pixels[idx[b] * features + f] * scale (a (features, batch) activation, leading dim ldx), and
 * y[b] = label (y may be NULL). Text: x[t * ldx + b] = id of token t of window idx[b] and
 * y[t * batch + b] = the token after it (y holds batch * label_len labels). Columns [batch, ldx)
 * of x are not touched. SP_EINVAL for an idx outside [0, n) (naming it), NULL pointers or batch
 * < 0; SP_ESHAPE for ldx < batch. */
sp_status sp_dataset_batch(const sp_dataset *d, const int64_t *idx, int64_t batch, float *x,
                           int64_t ldx, int32_t *y);

#ifdef __cplusplus
}
#endif
#endif
