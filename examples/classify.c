/*
 * classify.c - classifies one image file with a sparrow model: the inference API
 * (sparrow/infer.h, docs/INFERENCE.md) in a small program.
 *
 *     classify MODEL IMAGE
 *
 * MODEL is a model file (sparrow train --save, sparrow prune, sparrow convert ...). IMAGE is a
 * binary PGM (P5, maxval 1 to 255) of the model's input size, e.g. 28x28 for Fashion-MNIST
 * models. Prints "class K probability P" for the most likely class K. The image is untrusted
 * input: its header is checked strictly (magic, decimal fields in range, one whitespace byte
 * before the pixels, exactly width x height pixel bytes) and anything else is a clear error with
 * exit status 1 (2 for usage errors).
 *
 * Built with the library (build/examples/classify); tests/cli_check.sh runs it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sparrow/sparrow.h"

#define MAX_FILE (64u << 20) /* bytes; far more than any image a small model takes */
#define MAX_SIDE 65535       /* the largest width or height read */

/* Reads the whole file (at most MAX_FILE bytes) into malloc'd *buf. */
static int read_file(const char *path, unsigned char **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "classify: cannot open %s\n", path);
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *b = malloc(cap);
    while (b) {
        if (n == cap) {
            if (cap > MAX_FILE) break;
            unsigned char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    const int err = ferror(f);
    fclose(f);
    if (!b) {
        fprintf(stderr, "classify: out of memory reading %s\n", path);
        return -1;
    }
    if (err) {
        fprintf(stderr, "classify: error reading %s\n", path);
        free(b);
        return -1;
    }
    if (n > MAX_FILE) {
        fprintf(stderr, "classify: %s is larger than %u bytes: not an image for this program\n",
                path, MAX_FILE);
        free(b);
        return -1;
    }
    *buf = b;
    *len = n;
    return 0;
}

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Skips whitespace and '#' comments (to the end of the line) from *pos. */
static void skip_space(const unsigned char *b, size_t len, size_t *pos) {
    while (*pos < len) {
        if (is_space(b[*pos])) {
            (*pos)++;
        } else if (b[*pos] == '#') {
            while (*pos < len && b[*pos] != '\n' && b[*pos] != '\r') (*pos)++;
        } else {
            break;
        }
    }
}

/* A decimal header field in [lo, hi]: digits only, ending at whitespace (or '#'). */
static int read_field(const unsigned char *b, size_t len, size_t *pos, const char *what, long lo,
                      long hi, long *out, const char *path) {
    skip_space(b, len, pos);
    if (*pos >= len) {
        fprintf(stderr, "classify: %s: PGM header ends before the %s\n", path, what);
        return -1;
    }
    long v = 0;
    size_t start = *pos;
    while (*pos < len && b[*pos] >= '0' && b[*pos] <= '9') {
        if (v > hi) break; /* already too large: stop before overflowing */
        v = v * 10 + (b[*pos] - '0');
        (*pos)++;
    }
    if (*pos == start) {
        fprintf(stderr, "classify: %s: PGM %s is not a decimal number (byte 0x%02x at offset "
                "%zu)\n", path, what, b[*pos], *pos);
        return -1;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "classify: %s: PGM %s %s%ld is outside [%ld, %ld]\n", path, what,
                v > hi ? "over " : "", v, lo, hi);
        return -1;
    }
    if (*pos >= len || !(is_space(b[*pos]) || b[*pos] == '#')) {
        fprintf(stderr, "classify: %s: PGM %s is not followed by whitespace (offset %zu)\n",
                path, what, *pos);
        return -1;
    }
    *out = v;
    return 0;
}

/* Parses a binary PGM: *w, *h and *pixels (pointing into b, w * h bytes of maxval *maxval). */
static int parse_pgm(const unsigned char *b, size_t len, const char *path, long *w, long *h,
                     long *maxval, const unsigned char **pixels) {
    if (len < 2 || b[0] != 'P' || b[1] != '5') {
        fprintf(stderr, "classify: %s: not a binary PGM (the file must start with \"P5\"; "
                "P2 ASCII and other formats are not read)\n", path);
        return -1;
    }
    size_t pos = 2;
    if (pos >= len || !(is_space(b[pos]) || b[pos] == '#')) {
        fprintf(stderr, "classify: %s: no whitespace after the magic P5\n", path);
        return -1;
    }
    if (read_field(b, len, &pos, "width", 1, MAX_SIDE, w, path) ||
        read_field(b, len, &pos, "height", 1, MAX_SIDE, h, path) ||
        read_field(b, len, &pos, "maxval", 1, 65535, maxval, path))
        return -1;
    if (*maxval > 255) {
        fprintf(stderr, "classify: %s: maxval %ld means 16-bit pixels; only 8-bit PGM (maxval "
                "<= 255) is read\n", path, *maxval);
        return -1;
    }
    /* exactly one whitespace byte separates maxval from the pixels (a '#' here would be a
     * pixel: the format allows no comment after maxval) */
    if (b[pos] == '#') {
        fprintf(stderr, "classify: %s: comment after the maxval; the pixels must follow it "
                "after a single whitespace byte\n", path);
        return -1;
    }
    pos++;
    const size_t want = (size_t)*w * (size_t)*h; /* <= 65535^2: fits */
    const size_t have = len - pos;
    if (have < want) {
        fprintf(stderr, "classify: %s: truncated: %zu bytes of pixels, a %ldx%ld image needs "
                "%zu\n", path, have, *w, *h, want);
        return -1;
    }
    if (have > want) {
        fprintf(stderr, "classify: %s: %zu bytes after the %ldx%ld image's %zu pixel bytes "
                "(only single-image files are read)\n", path, have - want, *w, *h, want);
        return -1;
    }
    *pixels = b + pos;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: classify MODEL IMAGE\n"
                        "  MODEL  a sparrow model file of an image classifier\n"
                        "  IMAGE  a binary PGM (P5, 8-bit) of the model's input size\n");
        return 2;
    }
    const char *model_path = argv[1], *image_path = argv[2];
    int rc = 1;
    unsigned char *file = NULL;
    uint8_t *image = NULL;
    float *prob = NULL;
    sp_checkpoint ck = {0};
    sp_session *s = NULL;

    /* the image first: a bad file fails before the model is loaded */
    size_t len = 0;
    long w = 0, h = 0, maxval = 0;
    const unsigned char *pixels = NULL;
    if (read_file(image_path, &file, &len) || parse_pgm(file, len, image_path, &w, &h, &maxval,
                                                        &pixels))
        goto out;

    sp_status st = sp_checkpoint_load(model_path, &ck);
    if (st != SP_OK) {
        fprintf(stderr, "classify: %s: %s: %s\n", model_path, sp_status_name(st), sp_last_error());
        goto out;
    }
    const sp_shape in = sp_model_in(ck.model);
    const int flat = in.h == 1 && in.w == 1 && in.c == w * h; /* a model of flat vectors */
    if (!(in.c == 1 && in.h == h && in.w == w) && !flat) {
        fprintf(stderr, "classify: %s is a %ldx%ld image; the model takes inputs of shape %lld "
                "%lld %lld (channels, height, width)\n", image_path, w, h, (long long)in.c,
                (long long)in.h, (long long)in.w);
        goto out;
    }

    /* pixels on the 0..255 scale the model was trained on */
    image = malloc((size_t)(w * h));
    prob = malloc(sizeof(float) * (size_t)sp_model_classes(ck.model));
    if (!image || !prob) {
        fprintf(stderr, "classify: out of memory\n");
        goto out;
    }
    for (long i = 0; i < w * h; i++) {
        if (pixels[i] > maxval) {
            fprintf(stderr, "classify: %s: pixel %ld is %d, over the maxval %ld\n", image_path,
                    i, pixels[i], maxval);
            goto out;
        }
        image[i] = (uint8_t)((pixels[i] * 255 + maxval / 2) / maxval); /* maxval 255: as is */
    }

    /* one session (buffers for one image), one prediction */
    int32_t cls = -1;
    st = sp_session_new(ck.model, 1, 1, &s);
    if (st == SP_OK) st = sp_session_predict_u8(s, image, 1, &cls, prob);
    if (st != SP_OK) {
        fprintf(stderr, "classify: %s: %s\n", sp_status_name(st), sp_last_error());
        goto out;
    }
    printf("class %d probability %.4f\n", cls, prob[cls]);
    rc = 0;
out:
    sp_session_free(s);
    sp_checkpoint_free(&ck);
    free(prob);
    free(image);
    free(file);
    return rc;
}
