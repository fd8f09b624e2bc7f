/*
 * sparrow/data.h - datasets: IDX files (MNIST, Fashion-MNIST), train/validation split,
 * shuffling and batch gathering into sparrow's feature-major activation layout.
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
 *     int32_t y[128];
 *     for (int64_t s = 0; s + 128 <= fit->n; s += 128)
 *         st = sp_dataset_batch(fit, perm + s, 128, x, 128, y);         // then forward/backward
 *     sp_dataset_free(fit); sp_dataset_free(val); sp_dataset_free(train); sp_dataset_free(test);
 *
 * Pixels are kept as the file's bytes (u8); a feature value is pixel * scale, with scale = 1/255
 * for u8 images, so features lie in [0, 1]. Gzip-compressed files (.gz) are read through zlib;
 * a build without zlib (SPARROW_ZLIB=OFF) refuses them with SP_EUNSUPPORTED and reads raw files.
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

/* n labelled samples of shape (c, h, w), pixels stored as bytes, sample after sample. */
typedef struct sp_dataset {
    int64_t n;        /* samples */
    int64_t c, h, w;  /* per-sample shape: (1, 28, 28) for Fashion-MNIST; IDX 2-d data (n, f)
                         gives (f, 1, 1) */
    int64_t features; /* c * h * w */
    int32_t classes;  /* every label is in [0, classes) */
    float scale;      /* feature value = pixel * scale; 1/255 for u8 images */
    uint8_t *pixels;  /* n * features, sample-major, owned */
    int32_t *labels;  /* n, owned */
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
 * Train and test must have the same sample shape (SP_ESHAPE). Unknown spec: SP_EINVAL. On
 * error nothing is leaked and *train, *test are NULL. */
sp_status sp_dataset_open(const char *spec, sp_dataset **train, sp_dataset **test);

/* Frees a dataset and its arrays; accepts NULL. */
void sp_dataset_free(sp_dataset *d);

/* Splits d (borrowed) into copies: *val holds nval samples chosen by a permutation seeded with
 * seed (sp_shuffle_i64), *train the other d->n - nval, both in d's order; both returned owned,
 * with d's shape, classes and scale. SP_EINVAL unless 0 <= nval < d->n; SP_ENOMEM. */
sp_status sp_dataset_split(const sp_dataset *d, int64_t nval, uint64_t seed, sp_dataset **train,
                           sp_dataset **val);

/* Shuffles perm[0..n) in place (Fisher-Yates, sp_rng_below): the same rng state gives the same
 * order on every platform. Does nothing for n < 2 or NULL arguments. */
void sp_shuffle_i64(int64_t *perm, int64_t n, sp_rng *rng);

/* Gathers samples idx[0..batch) of d into x FEATURE-MAJOR, x[f * ldx + b] =
 * pixels[idx[b] * features + f] * scale (a (features, batch) activation, leading dim ldx), and
 * y[b] = label (y may be NULL). Columns [batch, ldx) of x are not touched. SP_EINVAL for an idx
 * outside [0, n) (naming it), NULL pointers or batch < 0; SP_ESHAPE for ldx < batch. */
sp_status sp_dataset_batch(const sp_dataset *d, const int64_t *idx, int64_t batch, float *x,
                           int64_t ldx, int32_t *y);

#ifdef __cplusplus
}
#endif
#endif
