/*
 * idx.c - the IDX file format (Y. LeCun's MNIST files) and whole-file reading, gzip included.
 *
 * IDX: bytes 0-1 are zero, byte 2 is the element type, byte 3 the number of dimensions, then one
 * big-endian u32 per dimension, then the elements in row-major order. Every rule is checked
 * before anything is trusted: the parser is fuzzed (fuzz/fuzz_idx.c).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#ifdef SPARROW_HAVE_ZLIB
#include <zlib.h>
#endif

#include "sparrow/data.h"

#include "../core/internal.h"

/* ---- IDX ------------------------------------------------------------------------------------- */

static const char *idx_type_name(uint8_t code) {
    switch (code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    }
    return "not an IDX type";
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

sp_status sp_idx_parse(const uint8_t *buf, size_t len, sp_idx *out) {
    if (!out) return sp_fail(SP_EINVAL, "idx: out is NULL");
    memset(out, 0, sizeof *out);
    if (!buf && len > 0) return sp_fail(SP_EINVAL, "idx: buffer is NULL with length %zu", len);
    if (len < 4)
        return sp_fail(SP_EFORMAT, "idx: %zu bytes, shorter than the 4-byte magic number", len);
    if (buf[0] != 0 || buf[1] != 0)
        return sp_fail(SP_EFORMAT,
                       "idx: magic number starts with 0x%02x 0x%02x, must be 0x00 0x00 "
                       "(not an IDX file)",
                       buf[0], buf[1]);
    if (buf[2] != 0x08)
        return sp_fail(SP_EUNSUPPORTED,
                       "idx: type code 0x%02x (%s) unsupported, only 0x08 (unsigned byte)",
                       buf[2], idx_type_name(buf[2]));
    int ndim = buf[3];
    if (ndim == 0) return sp_fail(SP_EFORMAT, "idx: ndim 0, need 1..4 dimensions");
    if (ndim > 4)
        return sp_fail(SP_EUNSUPPORTED, "idx: ndim %d unsupported, at most 4 dimensions", ndim);
    size_t header = 4 + 4 * (size_t)ndim;
    if (len < header)
        return sp_fail(SP_EFORMAT, "idx: %zu bytes, shorter than the %zu-byte header of ndim %d",
                       len, header, ndim);
    int64_t count = 1, dims[4] = {0, 0, 0, 0};
    for (int i = 0; i < ndim; i++) {
        int64_t d = be32(buf + 4 + 4 * i);
        if (d == 0)
            return sp_fail(SP_EFORMAT, "idx: dimension %d is 0 (empty data is not accepted)", i);
        if (!sp_mul_i64(count, d, &count))
            return sp_fail(SP_EOVERFLOW, "idx: product of the dimensions overflows int64 at "
                                         "dimension %d (%lld)",
                           i, (long long)d);
        dims[i] = d;
    }
    size_t have = len - header;
    if ((uint64_t)count != (uint64_t)have)
        return sp_fail(SP_EFORMAT, "idx: header says %lld bytes of data, file has %zu (%s)",
                       (long long)count, have,
                       (uint64_t)count > (uint64_t)have ? "truncated" : "trailing bytes");
    out->ndim = ndim;
    memcpy(out->dims, dims, sizeof dims);
    out->data = buf + header;
    out->count = count;
    return SP_OK;
}

/* ---- whole-file reading ---------------------------------------------------------------------- */

/* A source of bytes: a stdio stream or a gzip stream. */
typedef struct reader {
    const char *path;
    FILE *f;
#ifdef SPARROW_HAVE_ZLIB
    gzFile gz;
#endif
} reader;

#define READ_CHUNK ((size_t)1 << 20)

/* Reads up to n bytes into dst; *got = 0 at the end of the content. */
static sp_status reader_read(reader *r, uint8_t *dst, size_t n, size_t *got) {
    if (n > READ_CHUNK) n = READ_CHUNK; /* gzread takes an unsigned int */
#ifdef SPARROW_HAVE_ZLIB
    if (r->gz) {
        int k = gzread(r->gz, dst, (unsigned)n);
        /* gzread reports a truncated stream by returning 0 with Z_BUF_ERROR pending */
        int errnum = Z_OK;
        const char *msg = gzerror(r->gz, &errnum);
        if (k < 0 || errnum != Z_OK) {
            if (errnum == Z_ERRNO)
                return sp_fail(SP_EIO, "file: reading '%s': %s", r->path, strerror(errno));
            if (errnum == Z_MEM_ERROR)
                return sp_fail(SP_ENOMEM, "file: zlib out of memory reading '%s'", r->path);
            return sp_fail(SP_EFORMAT, "file: '%s': corrupt or truncated gzip data (%s)",
                           r->path, errnum == Z_BUF_ERROR ? "unexpected end of file" : msg);
        }
        *got = (size_t)k;
        return SP_OK;
    }
#endif
    *got = fread(dst, 1, n, r->f);
    if (*got < n && ferror(r->f))
        return sp_fail(SP_EIO, "file: reading '%s': %s", r->path, strerror(errno));
    return SP_OK;
}

/* Reads r to its end into a buffer that starts at `hint` bytes and doubles, so its size follows
 * the real content and never exceeds max_bytes + 1 (one byte over tells "too large"). While
 * growing, the old and the new buffer are both live: at most 1.5 x (max_bytes + 1) in all. */
static sp_status read_all(reader *r, size_t hint, size_t max_bytes, bool gz, uint8_t **bytes,
                          size_t *len) {
    size_t limit = max_bytes < SIZE_MAX ? max_bytes + 1 : SIZE_MAX;
    size_t cap = hint < limit ? hint : limit;
    uint8_t *buf = sp_alloc(cap);
    if (!buf) return SP_ENOMEM;
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= limit) {
                sp_free(buf);
                return sp_fail(SP_EFORMAT, "file: '%s' holds more than max_bytes %zu bytes%s",
                               r->path, max_bytes, gz ? " once decompressed" : "");
            }
            size_t grown = cap <= limit / 2 ? SP_MAX(cap * 2, (size_t)4096) : limit;
            uint8_t *b2 = sp_alloc(grown);
            if (!b2) {
                sp_free(buf);
                return SP_ENOMEM;
            }
            memcpy(b2, buf, n);
            sp_free(buf);
            buf = b2;
            cap = grown;
        }
        size_t got = 0;
        sp_status st = reader_read(r, buf + n, cap - n, &got);
        if (st != SP_OK) {
            sp_free(buf);
            return st;
        }
        if (got == 0) break;
        n += got;
    }
    *bytes = buf;
    *len = n;
    return SP_OK;
}

sp_status sp_file_read(const char *path, size_t max_bytes, uint8_t **bytes, size_t *len) {
    if (!bytes || !len) return sp_fail(SP_EINVAL, "file_read: bytes or len is NULL");
    *bytes = NULL;
    *len = 0;
    if (!path) return sp_fail(SP_EINVAL, "file_read: path is NULL");
    reader r = {.path = path};
    r.f = fopen(path, "rb");
    if (!r.f) return sp_fail(SP_EIO, "file: cannot open '%s': %s", path, strerror(errno));
    /* size of a regular file: the first guess for the buffer (pipes and such start small) */
    struct stat sb;
    size_t fsize = 0;
    if (fstat(fileno(r.f), &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0)
        fsize = (uint64_t)sb.st_size < SIZE_MAX - 1 ? (size_t)sb.st_size : SIZE_MAX - 1;
    uint8_t magic[2];
    size_t nmagic = fread(magic, 1, 2, r.f);
    if (nmagic < 2 && ferror(r.f)) {
        sp_status st = sp_fail(SP_EIO, "file: reading '%s': %s", path, strerror(errno));
        fclose(r.f);
        return st;
    }
    bool gz = nmagic == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    sp_status st;
    if (!gz) {
        if (fsize > max_bytes) {
            fclose(r.f);
            return sp_fail(SP_EFORMAT, "file: '%s' has %zu bytes, more than max_bytes %zu", path,
                           fsize, max_bytes);
        }
        rewind(r.f);
        /* fsize + 1: the read that finds the end needs room */
        st = read_all(&r, fsize + 1, max_bytes, false, bytes, len);
        fclose(r.f);
        return st;
    }
    fclose(r.f);
    r.f = NULL;
#ifdef SPARROW_HAVE_ZLIB
    errno = 0;
    r.gz = gzopen(path, "rb");
    if (!r.gz) {
        if (errno) return sp_fail(SP_EIO, "file: cannot open '%s': %s", path, strerror(errno));
        return sp_fail(SP_ENOMEM, "file: zlib out of memory opening '%s'", path);
    }
    gzbuffer(r.gz, 128 * 1024);
    /* Fashion-MNIST images compress about 1.8:1; twice the file is one allocation for them and
     * still proportional to what is on disk. */
    size_t hint = fsize <= SIZE_MAX / 2 ? SP_MAX(fsize * 2, (size_t)65536) : SIZE_MAX;
    st = read_all(&r, hint, max_bytes, true, bytes, len);
    gzclose(r.gz);
    return st;
#else
    return sp_fail(SP_EUNSUPPORTED,
                   "file: '%s' is gzip-compressed and this build has no zlib (configure with "
                   "-DSPARROW_ZLIB=ON, or gunzip the file)",
                   path);
#endif
}
