/*
 * cmd_bench.c - `sparrow bench spmm`: one sparse product against dense OpenBLAS on the same
 * random data, in one process, timed in alternating blocks so that machine noise hits both.
 *
 * Layout: W is (rows x cols) = (out x in); X is (cols, batch) feature-major; Y = W X is
 * (rows, batch). The dense peer is cblas_sgemm (cblas_sgemv at batch 1) on W stored dense.
 *
 * --dtype i8|i4 (csr only) also quantizes W (sp_qcsr, include/sparrow/quant.h) and times
 * sp_qcsr_spmm (activations quantized per sample inside the call) beside sparrow's fp32 CSR
 * product on the same data: "sparse" is then the quantized product, "f32_sparse" the fp32 one,
 * and the error is measured against the fp32 product of the dequantized operands.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#if defined(SPARROW_HAVE_CBLAS)
#include <cblas.h>
#endif
#if defined(SPARROW_HAVE_OPENBLAS)
void openblas_set_num_threads(int num_threads);
#endif

typedef struct bench_cfg {
    const char *format;
    int bits; /* 32 (f32), 8 (i8) or 4 (i4) */
    int64_t rows, cols, batch, threads, br, bc, n, m, reps;
    double sparsity, min_time;
    uint64_t seed;
    bool json, no_pack, x_nonneg;
} bench_cfg;

/* ---- formats: how to draw a matrix of each kind, build it, and run its product ------------ */

typedef struct fmt {
    const char *name;
    /* fills dense (rows x cols) with a random matrix of this format's structure */
    void (*draw)(const bench_cfg *c, float *dense, sp_rng *r);
    sp_status (*build)(const bench_cfg *c, const float *dense, void **obj);
    sp_status (*spmm)(const void *obj, const float *x, int64_t batch, float *y, int threads);
    int64_t (*stored)(const void *obj); /* values stored, padding included */
    size_t (*bytes)(const void *obj);
    void (*release)(void *obj);
} fmt;

static float draw_value(sp_rng *r) {
    float v = 2.0f * sp_rng_uniform(r) - 1.0f;
    return v == 0.0f ? 0.5f : v;
}

/* Unstructured: each entry kept with probability 1 - sparsity. */
static void draw_unstructured(const bench_cfg *c, float *d, sp_rng *r) {
    for (int64_t i = 0; i < c->rows * c->cols; i++) {
        float v = draw_value(r);
        d[i] = sp_rng_uniform(r) >= c->sparsity ? v : 0.0f;
    }
}

static sp_status csr_build(const bench_cfg *c, const float *d, void **o) {
    sp_status st = sp_csr_from_dense(c->rows, c->cols, d, c->cols, NULL, 0, (sp_csr **)o);
    /* what an inference user does: pack for batched products when that is faster */
    return st == SP_OK && c->batch > 1 && !c->no_pack ? sp_csr_pack(*o, NULL) : st;
}
static sp_status csr_spmm(const void *o, const float *x, int64_t b, float *y, int t) {
    return sp_csr_spmm(o, x, b, b, y, b, NULL, SP_ACT_NONE, t);
}
static int64_t csr_stored(const void *o) { return ((const sp_csr *)o)->nnz; }
static size_t csr_bytes(const void *o) { return sp_csr_bytes(o) + sp_csr_packed_bytes(o); }
static void csr_release(void *o) { sp_csr_free(o); }

/* Block-sparse: each (br x bc) block kept with probability 1 - sparsity, dense inside. */
static void draw_blocks(const bench_cfg *c, float *d, sp_rng *r) {
    memset(d, 0, (size_t)(c->rows * c->cols) * sizeof(float));
    for (int64_t i0 = 0; i0 < c->rows; i0 += c->br)
        for (int64_t j0 = 0; j0 < c->cols; j0 += c->bc) {
            if (!(sp_rng_uniform(r) >= c->sparsity)) continue;
            for (int64_t i = i0; i < i0 + c->br && i < c->rows; i++)
                for (int64_t j = j0; j < j0 + c->bc && j < c->cols; j++)
                    d[i * c->cols + j] = draw_value(r);
        }
}

static sp_status bsr_build(const bench_cfg *c, const float *d, void **o) {
    return sp_bsr_from_dense(c->rows, c->cols, d, c->cols, NULL, (int32_t)c->br, (int32_t)c->bc,
                             (sp_bsr **)o);
}
static sp_status bsr_spmm(const void *o, const float *x, int64_t b, float *y, int t) {
    return sp_bsr_spmm(o, x, b, b, y, b, NULL, SP_ACT_NONE, t);
}
static int64_t bsr_stored(const void *o) {
    const sp_bsr *w = o;
    return w->nblocks * w->br * w->bc;
}
static size_t bsr_bytes(const void *o) { return sp_bsr_bytes(o); }
static void bsr_release(void *o) { sp_bsr_free(o); }

/* N:M: in every group of m columns, n distinct random positions hold random nonzero values
 * (a partial last group draws from its own columns). --sparsity does not apply: it is 1 - n/m. */
static void draw_nm(const bench_cfg *c, float *d, sp_rng *r) {
    for (int64_t i = 0; i < c->rows; i++) {
        float *row = d + i * c->cols;
        memset(row, 0, sizeof(float) * (size_t)c->cols);
        for (int64_t j0 = 0; j0 < c->cols; j0 += c->m) {
            int64_t width = c->cols - j0 < c->m ? c->cols - j0 : c->m;
            int perm[32];
            for (int o = 0; o < width; o++) perm[o] = o;
            for (int64_t s = 0; s < c->n && s < width; s++) { /* partial Fisher-Yates */
                int64_t t = s + (int64_t)sp_rng_below(r, (uint64_t)(width - s));
                int tmp = perm[s];
                perm[s] = perm[t], perm[t] = tmp;
                row[j0 + perm[s]] = draw_value(r);
            }
        }
    }
}

static sp_status nm_build(const bench_cfg *c, const float *d, void **o) {
    return sp_nm_from_dense(c->rows, c->cols, d, c->cols, NULL, (int32_t)c->n, (int32_t)c->m,
                            (sp_nm **)o);
}
static sp_status nm_spmm(const void *o, const float *x, int64_t b, float *y, int t) {
    return sp_nm_spmm(o, x, b, b, y, b, NULL, SP_ACT_NONE, t);
}
static int64_t nm_stored(const void *o) {
    const sp_nm *w = o;
    return w->rows * w->groups * w->n;
}
static size_t nm_bytes(const void *o) { return sp_nm_bytes(o); }
static void nm_release(void *o) { sp_nm_free(o); }

static const fmt formats[] = {
    {"csr", draw_unstructured, csr_build, csr_spmm, csr_stored, csr_bytes, csr_release},
    {"bsr", draw_blocks, bsr_build, bsr_spmm, bsr_stored, bsr_bytes, bsr_release},
    {"nm", draw_nm, nm_build, nm_spmm, nm_stored, nm_bytes, nm_release},
};

/* ---- timing -------------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Two thread pools share this process: sparrow's and OpenBLAS's. After a call each pool's idle
 * workers spin for a while (sparrow's ~40 us, OpenBLAS up to 2^28 cycles, about 70 ms here;
 * this was measured with libgomp's ~300k spins before sparrow had its own pool) before they sleep, and a spinning pool steals the core the other pool's next run needs
 * (measured at 2 threads: 3072x768 batch 128 took 8.0 ms instead of 0.5 when run right after
 * OpenBLAS). So the benchmark pauses between the blocks of one side and the other until the
 * idle side sleeps; within a block each side keeps its own default, warm behaviour. */
#define QUIESCE_MS 100
#define SP_MIN_D(a, b) ((a) < (b) ? (a) : (b))

static void quiesce(int64_t threads) {
    if (threads < 2) return; /* one thread: neither side has a pool of workers */
    struct timespec t = {0, QUIESCE_MS * 1000000L};
    nanosleep(&t, NULL);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct dense_ctx {
    const bench_cfg *c;
    const float *w, *x;
    float *y;
} dense_ctx;

static void dense_run(const dense_ctx *d) {
    const bench_cfg *c = d->c;
#if defined(SPARROW_HAVE_CBLAS)
    if (c->batch == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)c->rows, (int)c->cols, 1.0f, d->w,
                    (int)c->cols, d->x, 1, 0.0f, d->y, 1);
        return;
    }
#endif
#if defined(SPARROW_HAVE_CBLAS)
    /* the peer is OpenBLAS as a user runs it: its own threads (sp_sgemm runs it
     * single-threaded inside sparrow's task split) */
#if defined(SPARROW_HAVE_OPENBLAS)
    openblas_set_num_threads((int)c->threads);
#endif
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c->rows, (int)c->batch,
                (int)c->cols, 1.0f, d->w, (int)c->cols, d->x, (int)c->batch, 0.0f, d->y,
                (int)c->batch);
#else
    sp_sgemm(false, false, c->rows, c->batch, c->cols, 1.0f, d->w, c->cols, d->x, c->batch, 0.0f,
             d->y, c->batch, (int)c->threads);
#endif
}

/* ---- options ------------------------------------------------------------------------------- */

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: sparrow bench spmm [options]\n"
            "\n"
            "Times Y = W X with W sparse (rows x cols) against dense OpenBLAS on the same data.\n"
            "\n"
            "  --rows R         output features (default 4096)\n"
            "  --cols C         input features (default 4096)\n"
            "  --batch B        columns of X, 1 = SpMV (default 64)\n"
            "  --sparsity S     fraction of zero weights in [0, 1) (default 0.9; for nm it is\n"
            "                   1 - N/M)\n"
            "  --format F       csr (default), bsr or nm\n"
            "  --dtype D        f32 (default), i8 or i4 (csr: quantized weights, timed beside\n"
            "                   the f32 CSR product; i4 uses groups of 32)\n"
            "  --block RxC      block shape for bsr, each side in [1, 64] (default 4x4)\n"
            "  --nm N:M         pattern for --format nm, 1 <= N <= M <= 32 (default 2:4)\n"
            "  --threads T      threads for both sides (default 1)\n"
            "  --reps N         timed repetitions per side (default: enough for --min-time)\n"
            "  --min-time SEC   least time per side (default 0.5)\n"
            "  --seed N         random seed (default 1)\n"
            "  --no-pack        csr: keep the plain rows (no sp_csr_pack) for batched products\n"
            "  --x-nonneg       X uniform in [0, 1) as after a ReLU (default: (-1, 1))\n"
            "  --json           print one JSON object instead of a table\n");
}

static const fmt *find_format(const char *name) {
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (!strcmp(formats[i].name, name)) return &formats[i];
    return NULL;
}

static int parse(int argc, char **argv, bench_cfg *c) {
    *c = (bench_cfg){.format = "csr", .bits = 32, .rows = 4096, .cols = 4096, .batch = 64, .threads = 1,
                     .br = 4, .bc = 4, .n = 2, .m = 4, .sparsity = 0.9, .min_time = 0.5,
                     .seed = 1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            bench_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            c->json = true;
            continue;
        } else if (!strcmp(a, "--x-nonneg")) {
            c->x_nonneg = true;
            continue;
        } else if (!strcmp(a, "--no-pack")) {
            c->no_pack = true;
            continue;
        } else if (!v) {
            fprintf(stderr, "sparrow bench: %s needs a value (see --help)\n", a);
            return 2;
        } else if (!strcmp(a, "--rows")) ok = cli_parse_i64(a, v, 1, 1 << 20, &c->rows);
        else if (!strcmp(a, "--cols")) ok = cli_parse_i64(a, v, 1, 1 << 20, &c->cols);
        else if (!strcmp(a, "--batch")) ok = cli_parse_i64(a, v, 1, 1 << 16, &c->batch);
        else if (!strcmp(a, "--threads")) ok = cli_parse_i64(a, v, 1, 256, &c->threads);
        else if (!strcmp(a, "--reps")) ok = cli_parse_i64(a, v, 1, 100000, &c->reps);
        else if (!strcmp(a, "--sparsity")) ok = cli_parse_f64(a, v, 0.0, 0.9999, &c->sparsity);
        else if (!strcmp(a, "--min-time")) ok = cli_parse_f64(a, v, 0.0, 600.0, &c->min_time);
        else if (!strcmp(a, "--seed")) {
            int64_t s;
            ok = cli_parse_i64(a, v, 0, INT64_MAX, &s);
            c->seed = (uint64_t)s;
        } else if (!strcmp(a, "--format")) {
            if (!find_format(v)) {
                fprintf(stderr, "sparrow bench: unknown format '%s' (", v);
                for (size_t k = 0; k < sizeof formats / sizeof formats[0]; k++)
                    fprintf(stderr, "%s%s", k ? ", " : "", formats[k].name);
                fprintf(stderr, ")\n");
                return 2;
            }
            c->format = v;
        } else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "f32")) c->bits = 32;
            else if (!strcmp(v, "i8")) c->bits = 8;
            else if (!strcmp(v, "i4")) c->bits = 4;
            else {
                fprintf(stderr, "sparrow bench: unknown dtype '%s' (f32, i8, i4)\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--block")) ok = cli_parse_pair(a, v, 'x', 1, 64, &c->br, &c->bc);
        else if (!strcmp(a, "--nm")) {
            ok = cli_parse_pair(a, v, ':', 1, 32, &c->n, &c->m);
            if (ok && c->n > c->m) {
                fprintf(stderr, "sparrow bench: --nm %s needs N <= M\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "sparrow bench: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (!ok) return 2;
        i++;
    }
    if (c->bits != 32 && strcmp(c->format, "csr") != 0) {
        fprintf(stderr, "sparrow bench: --dtype i8/i4 needs --format csr\n");
        return 2;
    }
    int64_t cells;
    if (!sp_mul_i64(c->rows, c->cols, &cells) || cells > ((int64_t)1 << 31)) {
        fprintf(stderr, "sparrow bench: %lld x %lld is too large for the dense peer\n",
                (long long)c->rows, (long long)c->cols);
        return 2;
    }
    return -1;
}

static int fail(const char *what, sp_status st) {
    fprintf(stderr, "sparrow bench: %s: %s: %s\n", what, sp_status_name(st), sp_last_error());
    return 1;
}

/* ---- the benchmark ------------------------------------------------------------------------- */

/* The quantized side of --dtype i8/i4: W quantized, its workspace, and its output. */
typedef struct quant_side {
    sp_qcsr *w;
    void *work;
    size_t work_bytes;
    float *y;
} quant_side;

static sp_status quant_run(const quant_side *q, const bench_cfg *c, const float *x) {
    return sp_qcsr_spmm(q->w, x, c->batch, c->batch, 0.0f, q->y, c->batch, NULL, SP_ACT_NONE,
                        q->work, q->work_bytes, (int)c->threads);
}

/* X dequantized as sp_qcsr_spmm sees it: per sample s = max |x| / 127, round(x / s) * s */
static void dequant_x(const bench_cfg *c, const float *x, float *xd) {
    for (int64_t b = 0; b < c->batch; b++) {
        float m = 0.0f;
        for (int64_t j = 0; j < c->cols; j++) m = fmaxf(m, fabsf(x[j * c->batch + b]));
        float inv = m > 0.0f ? 127.0f / m : 0.0f, s = m / 127.0f;
        for (int64_t j = 0; j < c->cols; j++)
            xd[j * c->batch + b] = rintf(x[j * c->batch + b] * inv) * s;
    }
}

static int run_spmm(const bench_cfg *c) {
    const fmt *f = find_format(c->format);
    size_t wbytes = (size_t)(c->rows * c->cols) * sizeof(float);
    float *wd = sp_alloc(wbytes), *wabs = sp_alloc(wbytes);
    float *x = sp_alloc((size_t)(c->cols * c->batch) * sizeof(float));
    float *xabs = sp_alloc((size_t)(c->cols * c->batch) * sizeof(float));
    float *ys = sp_alloc((size_t)(c->rows * c->batch) * sizeof(float));
    float *yd = sp_alloc((size_t)(c->rows * c->batch) * sizeof(float));
    float *mag = sp_alloc((size_t)(c->rows * c->batch) * sizeof(float));
    void *obj = NULL;
    quant_side qs = {0};
    float *wq = NULL, *xq = NULL;
    int rc = 1;
    if (!wd || !wabs || !x || !xabs || !ys || !yd || !mag) {
        rc = fail("allocating the operands", SP_ENOMEM);
        goto done;
    }
    sp_rng r;
    sp_rng_init(&r, c->seed, 0);
    f->draw(c, wd, &r);
    for (int64_t i = 0; i < c->cols * c->batch; i++)
        x[i] = c->x_nonneg ? sp_rng_uniform(&r) : 2.0f * sp_rng_uniform(&r) - 1.0f;
    sp_status st = f->build(c, wd, &obj);
    if (st != SP_OK) {
        rc = fail("building the sparse matrix", st);
        goto done;
    }
    if (c->bits != 32) {
        if ((st = sp_qcsr_from_csr(obj, c->bits, c->bits == 4 ? 32 : 0, &qs.w)) != SP_OK) {
            rc = fail("quantizing the sparse matrix", st);
            goto done;
        }
        qs.work_bytes = sp_qcsr_work_bytes(qs.w, c->batch);
        qs.work = sp_alloc(qs.work_bytes);
        qs.y = sp_alloc((size_t)(c->rows * c->batch) * sizeof(float));
        wq = sp_alloc(wbytes);
        xq = sp_alloc((size_t)(c->cols * c->batch) * sizeof(float));
        if (!qs.work || !qs.y || !wq || !xq) {
            rc = fail("allocating the quantized operands", SP_ENOMEM);
            goto done;
        }
    }
    int64_t nnz_true = 0;
    for (int64_t i = 0; i < c->rows * c->cols; i++) {
        nnz_true += wd[i] != 0.0f;
        wabs[i] = fabsf(wd[i]);
    }
    for (int64_t i = 0; i < c->cols * c->batch; i++) xabs[i] = fabsf(x[i]);

#if defined(SPARROW_HAVE_OPENBLAS)
    openblas_set_num_threads((int)c->threads);
#endif
    dense_ctx dc = {c, wd, x, yd};
    /* warm up both, then check the sparse result against the dense one */
    dense_run(&dc);
    if ((st = f->spmm(obj, x, c->batch, ys, (int)c->threads)) != SP_OK) {
        rc = fail("sparse product", st);
        goto done;
    }
    dense_ctx mc = {c, wabs, xabs, mag};
    dense_run(&mc);
    dense_run(&dc);
    double max_abs = 0, worst_ratio = 0, quant_err = 0;
    for (int64_t i = 0; i < c->rows * c->batch; i++) {
        double e = fabs((double)ys[i] - (double)yd[i]);
        double bound = 1e-6 + 2e-5 * (double)mag[i];
        if (!(e <= max_abs)) max_abs = e;
        if (!(e / bound <= worst_ratio)) worst_ratio = e / bound;
    }
    if (qs.w) {
        /* the quantized product against the fp32 product of the dequantized operands (which
         * it must match to fp32 rounding), and, for information, against the fp32 product */
        if ((st = quant_run(&qs, c, x)) != SP_OK) {
            rc = fail("quantized product", st);
            goto done;
        }
        for (int64_t i = 0; i < c->rows * c->batch; i++) {
            double e = fabs((double)qs.y[i] - (double)yd[i]);
            if (!(e <= quant_err)) quant_err = e;
        }
        sp_qcsr_to_dense(qs.w, wq, c->cols);
        dequant_x(c, x, xq);
        dense_ctx qd = {c, wq, xq, ys}; /* ys, wabs, xabs, mag are free again */
        dense_run(&qd);
        for (int64_t i = 0; i < c->rows * c->cols; i++) wabs[i] = fabsf(wq[i]);
        for (int64_t i = 0; i < c->cols * c->batch; i++) xabs[i] = fabsf(xq[i]);
        dense_run(&mc);
        max_abs = 0, worst_ratio = 0;
        for (int64_t i = 0; i < c->rows * c->batch; i++) {
            double e = fabs((double)qs.y[i] - (double)ys[i]);
            double bound = 1e-6 + 2e-5 * (double)mag[i];
            if (!(e <= max_abs)) max_abs = e;
            if (!(e / bound <= worst_ratio)) worst_ratio = e / bound;
        }
    }

    /* time: alternating blocks of dense and sparse runs */
    /* calibrate: the slower side's best of three runs sets how many runs fit in min_time */
    double td = 1e9, tsp = 1e9, tq = 0, t0;
    for (int k = 0; k < 3; k++) {
        t0 = now_s();
        dense_run(&dc);
        td = SP_MIN_D(td, now_s() - t0);
        t0 = now_s();
        f->spmm(obj, x, c->batch, ys, (int)c->threads);
        tsp = SP_MIN_D(tsp, now_s() - t0);
        if (qs.w) {
            t0 = now_s();
            quant_run(&qs, c, x);
            tq = k ? SP_MIN_D(tq, now_s() - t0) : now_s() - t0;
        }
    }
    int reps = (int)c->reps;
    if (reps <= 0) {
        double one = td > tsp ? td : tsp;
        if (tq > one) one = tq;
        reps = (int)(c->min_time / (one > 1e-7 ? one : 1e-7));
        if (reps < 10) reps = 10;
        if (reps > 3000) reps = 3000;
    }
    double *tds = malloc(sizeof(double) * (size_t)reps), *tss = malloc(sizeof(double) * (size_t)reps);
    double *tqs = malloc(sizeof(double) * (size_t)reps);
    if (!tds || !tss || !tqs) {
        free(tds), free(tss), free(tqs);
        rc = fail("allocating timers", SP_ENOMEM);
        goto done;
    }
    const int rounds = c->threads > 1 ? 3 : 5;
    int nd = 0, ns = 0, nq = 0;
    for (int round = 0; round < rounds; round++) {
        int share = (reps * (round + 1)) / rounds - (reps * round) / rounds;
        quiesce(c->threads);
        for (int k = 0; k < share; k++) {
            t0 = now_s();
            dense_run(&dc);
            tds[nd++] = now_s() - t0;
        }
        quiesce(c->threads);
        for (int k = 0; k < share; k++) {
            t0 = now_s();
            f->spmm(obj, x, c->batch, ys, (int)c->threads);
            tss[ns++] = now_s() - t0;
        }
        if (!qs.w) continue;
        quiesce(c->threads);
        for (int k = 0; k < share; k++) {
            t0 = now_s();
            quant_run(&qs, c, x);
            tqs[nq++] = now_s() - t0;
        }
    }
    double dense_ms = 1e3 * median(tds, nd), sparse_ms = 1e3 * median(tss, ns);
    const double f32_ms = sparse_ms;
    const size_t f32_bytes = f->bytes(obj);
    size_t sparse_bytes = f32_bytes;
    if (qs.w) sparse_ms = 1e3 * median(tqs, nq), sparse_bytes = sp_qcsr_bytes(qs.w);
    free(tds), free(tss), free(tqs);
    const char *dtype = c->bits == 8 ? "i8" : c->bits == 4 ? "i4" : "f32";

    int64_t stored = f->stored(obj);
    double sparsity = 1.0 - (double)nnz_true / (double)(c->rows * c->cols);
    double gflops = 2.0 * (double)nnz_true * (double)c->batch / (sparse_ms * 1e6);
    double moved = (double)sparse_bytes + 4.0 * (double)(c->cols + c->rows) * (double)c->batch;
    double gbps = moved / (sparse_ms * 1e6);
    char family[32];
    snprintf(family, sizeof family, "%s_spmm", qs.w ? "qcsr" : c->format);
    const char *isa = sp_kernel_selected(family);
    if (!isa) isa = sp_isa_name(sp_isa_active());
    char shape[32] = "";
    if (!strcmp(c->format, "bsr")) snprintf(shape, sizeof shape, "%lldx%lld", (long long)c->br, (long long)c->bc);
    if (!strcmp(c->format, "nm")) snprintf(shape, sizeof shape, "%lld:%lld", (long long)c->n, (long long)c->m);
    if (c->json) {
        printf("{\"format\":\"%s\",\"shape\":\"%s\",\"rows\":%lld,\"cols\":%lld,\"batch\":%lld,"
               "\"sparsity\":%.4f,\"threads\":%lld,\"sparse_ms\":%.5f,\"dense_ms\":%.5f,"
               "\"speedup\":%.3f,\"max_abs_err\":%.3g,\"err_vs_tol\":%.3g,\"within_tol\":%s,"
               "\"gflops_nnz\":%.2f,\"gbytes_per_s\":%.2f,\"nnz\":%lld,\"stored\":%lld,"
               "\"sparse_bytes\":%zu,\"dense_bytes\":%zu,\"isa\":\"%s\",\"dense\":\"%s\","
               "\"reps\":%d,\"dtype\":\"%s\",\"f32_sparse_ms\":%.5f,\"speedup_vs_f32\":%.3f,"
               "\"f32_sparse_bytes\":%zu,\"quant_err_vs_f32\":%.3g,\"x_nonneg\":%s}\n",
               c->format, shape, (long long)c->rows, (long long)c->cols, (long long)c->batch,
               sparsity, (long long)c->threads, sparse_ms, dense_ms, dense_ms / sparse_ms,
               max_abs, worst_ratio, worst_ratio <= 1.0 ? "true" : "false", gflops, gbps,
               (long long)nnz_true, (long long)stored, sparse_bytes, wbytes,
               isa, sp_gemm_backend(), reps, dtype, f32_ms, f32_ms / sparse_ms, f32_bytes,
               quant_err, c->x_nonneg ? "true" : "false");
    } else {
        printf("%s%s%s %s %lldx%lld batch %lld sparsity %.3f threads %lld (isa %s, dense %s)\n",
               c->format, shape[0] ? " " : "", shape, dtype, (long long)c->rows, (long long)c->cols,
               (long long)c->batch, sparsity, (long long)c->threads, isa, sp_gemm_backend());
        printf("  sparse %9.4f ms  %7.2f GFLOP/s on nonzeros  %6.2f GB/s  %zu bytes\n", sparse_ms,
               gflops, gbps, sparse_bytes);
        if (qs.w)
            printf("  f32 sparse %9.4f ms  %zu bytes  speedup_vs_f32 %.2fx  (%s vs f32: max abs "
                   "diff %.3g)\n",
                   f32_ms, f32_bytes, f32_ms / sparse_ms, dtype, quant_err);
        printf("  dense  %9.4f ms  %7.2f GFLOP/s  %zu bytes\n", dense_ms,
               2.0 * (double)c->rows * (double)c->cols * (double)c->batch / (dense_ms * 1e6),
               wbytes);
        printf("  speedup %.2fx   max_abs_err %.3g (%.2f of f32 tolerance%s)\n",
               dense_ms / sparse_ms, max_abs, worst_ratio,
               qs.w ? ", against the dequantized operands" : "");
    }
    rc = worst_ratio <= 1.0 ? 0 : 3;
    if (rc) fprintf(stderr, "sparrow bench: result outside the f32 tolerance\n");
done:
    if (obj) f->release(obj);
    sp_qcsr_free(qs.w);
    sp_free(qs.work), sp_free(qs.y), sp_free(wq), sp_free(xq);
    sp_free(wd), sp_free(wabs), sp_free(x), sp_free(xabs), sp_free(ys), sp_free(yd), sp_free(mag);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        bench_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "model")) return cmd_bench_model(argc - 1, argv + 1);
    if (strcmp(argv[1], "spmm") != 0) {
        fprintf(stderr, "sparrow bench: unknown benchmark '%s' (spmm, model)\n", argv[1]);
        return 2;
    }
    bench_cfg c;
    int rc = parse(argc - 2, argv + 2, &c);
    if (rc >= 0) return rc;
    const char *warn = sp_isa_env_warning();
    if (warn) fprintf(stderr, "sparrow: warning: %s\n", warn);
    return run_spmm(&c);
}
