/*
 * test_model.c - the model object, architectures, training, the .cxrm file and inference.
 *
 * - built-in architectures: parameter counts, FLOPs, the text files in model/archs/ match
 * - forward outputs agree with PyTorch on identical (hash-derived) weights and inputs, using
 *   the golden logits committed in model/golden/golden.txt (no PyTorch needed here)
 * - a tiny net learns a separable synthetic problem; save/load round-trips bit-identically
 * - the loader rejects each kind of damage with a message naming the part
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common.h"
#include "nn_int.h"
#include "nn_test_kernel.h"

static const char *const CLASSES4[] = {"COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"};

static const char *src_dir(void)
{
    const char *s = getenv("CXR_SOURCE_DIR");
    return s ? s : ".";
}

static nn_model *build(const char *arch, int classes, const char *const *names)
{
    nn_model *m = NULL;
    char err[256] = "";
    cxr_err e = nn_model_build(arch, NULL, classes, names, 42, &m, err, sizeof(err));
    if (e)
        fprintf(stderr, "build %s: %s\n", arch, err);
    assert_int_equal(e, CXR_OK);
    return m;
}

static void test_builtin_archs(void **state)
{
    char path[512], *text = NULL;
    size_t len;
    for (const char *const *n = nn_arch_names(); *n; n++) {
        nn_model *m = build(*n, 4, CLASSES4);
        const struct nn_input_spec *s = nn_model_input_spec(m);
        printf("%-8s input %dx%dx%d  params %zu  MFLOPs/image %.1f\n", *n, s->channels, s->size,
               s->size, nn_model_param_count(m), nn_model_flops(m) / 1e6);
        assert_string_equal(s->preprocessing, NN_PREPROC_CXR_V1);
        (void)snprintf(path, sizeof(path), "%s/model/archs/%s.arch", src_dir(), *n);
        assert_int_equal(cxr_file_read(path, 1 << 20, &text, &len), CXR_OK);
        assert_string_equal(text, nn_arch_text(*n));
        free(text);
        if (!strcmp(*n, "compact")) {
            assert_true(nn_model_param_count(m) < 2000000);
            assert_true(nn_model_flops(m) <= 1.0e9);
            assert_int_equal(s->channels, 1);
        }
        if (!strcmp(*n, "seed001")) {
            /* 3x3 convs 1->32->16->16 unpadded, pools to 26x26, dense 10816-512-256-4 */
            size_t want = (32 * 9 + 32) + (16 * 32 * 9 + 16) + (16 * 16 * 9 + 16) +
                          (10816 * 512 + 512) + (512 * 256 + 256) + (256 * 4 + 4);
            assert_int_equal(nn_model_param_count(m), want);
        }
        nn_model_free(m);
    }
    assert_null(nn_arch_text("nope"));
    {
        /* the text itself, and the text a model gives back, build the same network */
        nn_model *a = build("input 16 2\nconv 4 3 1 1\nbn\nrelu\ngap\ndense classes\n", 3,
                            CLASSES4);
        char atext[512];
        assert_true(nn_model_arch_text(a, atext, sizeof(atext)) < sizeof(atext));
        nn_model *b = build(atext, 3, CLASSES4);
        assert_int_equal(nn_model_param_count(a), nn_model_param_count(b));
        assert_true(nn_model_flops(a) == nn_model_flops(b));
        assert_int_equal(nn_model_input_spec(b)->channels, 2);
        nn_model_free(a);
        nn_model_free(b);
    }
}

static void test_arch_text_errors(void **state)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"input 8 1\nconv 4 3 1 1\nfoo\ndense classes\n", "line 3: unknown layer 'foo'"},
        {"input 8 1\nconv 4 3 1\ndense classes\n", "line 2: bad arguments for 'conv'"},
        {"input 4 1\nconv 4 5 1 0\ndense classes\n", "layer shapes do not chain"},
        {"input 8 1\nconv 4 3 1 1\n", "layer shapes do not chain: the last layer"},
        {"input 8 1\ndropout 1.5\ndense classes\n", "bad arguments for 'dropout'"},
    };
    char path[] = "/tmp/nn_arch_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    (void)close(fd);
    for (size_t i = 0; i < CXR_ARRAY_SIZE(cases); i++) {
        nn_model *m = NULL;
        char err[256] = "";
        assert_int_equal(cxr_file_write_atomic(path, cases[i].text, strlen(cases[i].text), 0600),
                         CXR_OK);
        assert_int_not_equal(nn_model_build(path, NULL, 2, CLASSES4, 1, &m, err, sizeof(err)),
                             CXR_OK);
        assert_null(m);
        printf("  %s\n", err);
        assert_non_null(strstr(err, cases[i].want));
    }
    (void)remove(path);
    {
        nn_model *m = NULL;
        char err[256] = "";
        assert_int_not_equal(
            nn_model_build("/nonexistent.arch", NULL, 2, CLASSES4, 1, &m, err, sizeof(err)),
            CXR_OK);
        assert_non_null(strstr(err, "not a built-in name"));
    }
}

/* Forward outputs (logits) against PyTorch: 1e-4 relative to the sample's largest logit. */
/* The committed PyTorch logits, on the kernel under test and on the im2col + OpenBLAS path. */
static void golden_pytorch(const char *path_name)
{
    char path[512], line[4096], name[64];
    FILE *f;
    int archs = 0;
    (void)snprintf(path, sizeof(path), "%s/model/golden/golden.txt", src_dir());
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        int batch, classes;
        if (line[0] == '#' || sscanf(line, "arch %63s batch %d classes %d", name, &batch,
                                     &classes) != 3)
            continue;
        char arch[600];
        if (!strcmp(name, "mix"))
            (void)snprintf(arch, sizeof(arch), "%s/model/golden/mix.arch", src_dir());
        else
            (void)snprintf(arch, sizeof(arch), "%s", name);
        nn_model *m = build(arch, classes, CLASSES4);
        nn_ctx *ctx = NULL;
        size_t in_len = nn_model_input_len(m) * batch;
        float *x = malloc(sizeof(float) * in_len), probs[64];
        double worst = 0.0;
        assert_non_null(x);
        nn_model_fill_hashed(m);
        nn_fill_hashed_input(x, in_len, 1000);
        assert_int_equal(nn_ctx_new(m, batch, &ctx), CXR_OK);
        assert_int_equal(nn_predict(ctx, x, batch, probs), CXR_OK);
        const float *logits = nn_ctx_logits(ctx);
        for (int b = 0; b < batch; b++) {
            double want[64], scale = 0.0;
            char *p = line;
            assert_non_null(fgets(line, sizeof(line), f));
            for (int c = 0; c < classes; c++) {
                want[c] = strtod(p, &p);
                scale = fmax(scale, fabs(want[c]));
            }
            for (int c = 0; c < classes; c++) {
                double rel = fabs(logits[b * classes + c] - want[c]) / scale;
                worst = fmax(worst, rel);
                if (rel > 1e-4)
                    fprintf(stderr, "%s sample %d class %d: ours %.7g pytorch %.7g\n", name, b,
                            c, (double)logits[b * classes + c], want[c]);
                assert_true(rel <= 1e-4);
            }
        }
        printf("  %-8s agrees with PyTorch (%s): worst relative difference %.2e\n", name,
               path_name, worst);
        archs++;
        free(x);
        nn_ctx_free(ctx);
        nn_model_free(m);
    }
    (void)fclose(f);
    assert_int_equal(archs, 4);
}

/* A context made on a Winograd kernel (its pools fused into the convolutions) still predicts
 * the same after the process switched to im2col (the convolution and the pool then run apart). */
static void kernel_switch_same_probs(enum nn_kernel k)
{
    nn_model *m = build("compact", 4, CLASSES4);
    nn_ctx *ctx = NULL;
    size_t in_len = nn_model_input_len(m) * 2;
    float *x = malloc(sizeof(float) * in_len), p0[8], p1[8];
    assert_non_null(x);
    nn_model_fill_hashed(m);
    nn_fill_hashed_input(x, in_len, 1000);
    assert_int_equal(nn_ctx_new(m, 2, &ctx), CXR_OK);
    assert_int_equal(nn_predict(ctx, x, 2, p0), CXR_OK);
    assert_int_equal(nn_kernel_set(NN_KERNEL_IM2COL), CXR_OK);
    assert_int_equal(nn_predict(ctx, x, 2, p1), CXR_OK);
    assert_int_equal(nn_kernel_set(k), CXR_OK);
    for (int i = 0; i < 8; i++)
        assert_true(fabs((double)p0[i] - p1[i]) < 1e-4);
    free(x);
    nn_ctx_free(ctx);
    nn_model_free(m);
}

static void test_golden_pytorch(void **state)
{
    const enum nn_kernel k = nn_kernel();
    golden_pytorch(nn_kernel_name());
    if (nn_kernel_winograd())
        kernel_switch_same_probs(k);
    if (k != NN_KERNEL_IM2COL) {
        assert_int_equal(nn_kernel_set(NN_KERNEL_IM2COL), CXR_OK);
        golden_pytorch("im2col");
        assert_int_equal(nn_kernel_set(k), CXR_OK);
    }
}

/* Class 0: bright left half; class 1: bright right half; plus noise. */
static void make_batch(float *x, int *labels, int batch, int size, uint64_t *rng)
{
    for (int b = 0; b < batch; b++) {
        int cls = (int)((*rng >> 33) & 1);
        labels[b] = cls;
        for (int i = 0; i < size * size; i++) {
            *rng ^= *rng << 13, *rng ^= *rng >> 7, *rng ^= *rng << 17;
            float noise = (float)((*rng >> 40) / 16777216.0) - 0.5f;
            int right = (i % size) >= size / 2;
            x[b * size * size + i] = noise + ((right == cls) ? 0.8f : 0.0f);
        }
    }
}

static const char *TINY = "input 12 1\nconv 4 3 1 1\nbn\nrelu\nmaxpool 2 2\nconv 8 3 2 1\nbn\n"
                          "relu\ngap\ndropout 0.1\ndense classes\n";

static nn_model *tiny_trained(float *ret_first, float *ret_last)
{
    static const char *const names[] = {"left", "right"};
    char path[] = "/tmp/nn_tiny_XXXXXX";
    nn_model *m;
    nn_train *t = NULL;
    struct nn_train_opts o;
    int labels[16], fd = mkstemp(path);
    float x[16 * 144], loss = 0.0f, first = 0.0f, last = 0.0f;
    uint64_t rng = 99;
    assert_true(fd >= 0);
    (void)close(fd);
    assert_int_equal(cxr_file_write_atomic(path, TINY, strlen(TINY), 0600), CXR_OK);
    m = build(path, 2, names);
    (void)remove(path);
    nn_train_opts_default(&o);
    o.lr = 0.01f;
    o.label_smoothing = 0.05f;
    assert_int_equal(nn_train_new(m, 16, &o, &t), CXR_OK);
    for (int step = 0; step < 80; step++) {
        make_batch(x, labels, 16, 12, &rng);
        assert_int_equal(nn_train_batch(t, x, labels, 16, &loss), CXR_OK);
        if (step < 5)
            first += loss / 5;
        if (step >= 75)
            last += loss / 5;
    }
    nn_train_free(t);
    *ret_first = first;
    *ret_last = last;
    return m;
}

static void test_train_save_load(void **state)
{
    float first, last, x[16 * 144], p1[32], p2[32];
    int labels[16], correct = 0;
    uint64_t rng = 12345;
    nn_model *m = tiny_trained(&first, &last), *m2 = NULL;
    nn_ctx *c1 = NULL, *c2 = NULL;
    char path[] = "/tmp/nn_model_XXXXXX", err[256] = "";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    (void)close(fd);
    printf("  loss first 5 steps %.4f, last 5 steps %.4f\n", (double)first, (double)last);
    assert_true(last < 0.5f * first);

    make_batch(x, labels, 16, 12, &rng);
    assert_int_equal(nn_ctx_new(m, 16, &c1), CXR_OK);
    assert_int_equal(nn_predict(c1, x, 16, p1), CXR_OK);
    for (int b = 0; b < 16; b++)
        correct += (p1[2 * b + 1] > p1[2 * b]) == (labels[b] == 1);
    printf("  held-out accuracy %d/16\n", correct);
    assert_true(correct >= 15);

    assert_int_equal(nn_model_set_meta(m, "dataset_sha256", "abc123"), CXR_OK);
    assert_int_equal(nn_model_set_meta(m, "val_acc", "0.93"), CXR_OK);
    assert_int_equal(nn_model_set_meta(m, "val_acc", "0.94"), CXR_OK);
    assert_string_equal(nn_model_digest(m), "");
    assert_int_equal(nn_model_save(m, path, err, sizeof(err)), CXR_OK);
    assert_int_equal(strlen(nn_model_digest(m)), 64);
    assert_int_equal(nn_model_load(path, &m2, err, sizeof(err)), CXR_OK);
    assert_string_equal(nn_model_digest(m), nn_model_digest(m2));
    assert_string_equal(nn_model_meta(m2, "val_acc"), "0.94");
    assert_int_equal(nn_model_meta_count(m2), 2);
    assert_string_equal(nn_model_class_name(m2, 1), "right");
    assert_int_equal(nn_model_param_count(m2), nn_model_param_count(m));
    assert_int_equal(nn_ctx_new(m2, 16, &c2), CXR_OK);
    assert_int_equal(nn_predict(c2, x, 16, p2), CXR_OK);
    assert_memory_equal(p1, p2, sizeof(p1));

    /* batch invariance: one at a time gives the same scores */
    for (int b = 0; b < 16; b += 5) {
        float one[2];
        assert_int_equal(nn_predict(c2, x + b * 144, 1, one), CXR_OK);
        assert_float_equal(one[0], p2[2 * b], 1e-5);
        assert_float_equal(one[1], p2[2 * b + 1], 1e-5);
    }
    assert_int_equal(nn_predict(c2, x, 17, p2), CXR_EINVAL);
    assert_int_equal(nn_predict(c2, x, 0, p2), CXR_EINVAL);

    /* fine-tuning a loaded model with the first layers frozen leaves them unchanged */
    {
        nn_train *t = NULL;
        float before = m2->params[m2->layers[0].w], loss;
        float bn_before = m2->params[m2->layers[1].mean];
        long last_w = m2->layers[m2->n_layers - 1].w;
        float dense_before = m2->params[last_w];
        struct nn_train_opts o;
        nn_train_opts_default(&o);
        o.optim = NN_OPT_SGD;
        o.lr = 0.05f;
        assert_int_equal(nn_train_new(m2, 16, &o, &t), CXR_OK);
        nn_train_freeze(t, 4);
        assert_int_equal(nn_train_batch(t, x, labels, 16, &loss), CXR_OK);
        assert_true(m2->params[m2->layers[0].w] == before);
        assert_true(m2->params[m2->layers[1].mean] == bn_before);
        assert_true(m2->params[last_w] != dense_before);
        nn_train_free(t);
    }
    nn_ctx_free(c1);
    nn_ctx_free(c2);
    nn_model_free(m);
    nn_model_free(m2);
    (void)remove(path);
}

static void reseal(uint8_t *d, size_t len)
{
    struct cxr_sha256 s;
    cxr_sha256_init(&s);
    cxr_sha256_update(&s, d, len - 32);
    cxr_sha256_final(&s, d + len - 32);
}

static void expect_load_error(const uint8_t *d, size_t len, const char *want)
{
    nn_model *m = NULL;
    char err[256] = "";
    assert_int_equal(nn_model_load_mem(d, len, &m, err, sizeof(err)), CXR_EMODEL);
    assert_null(m);
    printf("  rejected: %s\n", err);
    if (!strstr(err, want))
        fprintf(stderr, "expected '%s'\n", want);
    assert_non_null(strstr(err, want));
}

static void test_loader_errors(void **state)
{
    static const char *const names[] = {"left", "right"};
    char path[] = "/tmp/nn_tiny_XXXXXX", err[256];
    uint8_t *good = NULL, *d;
    size_t len = 0;
    nn_model *m, *ok = NULL;
    int fd = mkstemp(path);
    (void)close(fd);
    assert_int_equal(cxr_file_write_atomic(path, TINY, strlen(TINY), 0600), CXR_OK);
    m = build(path, 2, names);
    (void)remove(path);
    assert_int_equal(nn_model_serialize(m, &good, &len, err, sizeof(err)), CXR_OK);
    assert_int_equal(nn_model_load_mem(good, len, &ok, err, sizeof(err)), CXR_OK);
    nn_model_free(ok);
    d = malloc(len);
    assert_non_null(d);
    uint8_t *arch = memmem(good, len, "ARCH", 4), *tens = memmem(good, len, "TENS", 4);
    uint8_t *inpt = memmem(good, len, "INPT", 4);
    assert_non_null(arch);
    assert_non_null(tens);

    memcpy(d, good, len), d[0] = 'X';
    expect_load_error(d, len, "wrong magic");
    memcpy(d, good, len), d[8] = 2;
    expect_load_error(d, len, "unknown version 2");
    expect_load_error(good, len - 100, "truncated file");
    expect_load_error(good, 5, "truncated file");
    memcpy(d, good, len), d[len / 2] ^= 1;
    expect_load_error(d, len, "checksum mismatch");
    /* layer 0 declares a wrong output height */
    memcpy(d, good, len), d[(arch - good) + 12 + 7 * 4] += 1, reseal(d, len);
    expect_load_error(d, len, "layer shapes do not chain: layer 0");
    /* first tensor claims one float fewer */
    memcpy(d, good, len), d[(tens - good) + 12 + 8] -= 1, reseal(d, len);
    expect_load_error(d, len, "tensor sizes do not match: layer 0 conv weight");
    /* a conv with a kernel larger than its padded input */
    memcpy(d, good, len), d[(arch - good) + 12 + 2 * 4] = 14, reseal(d, len);
    expect_load_error(d, len, "layer shapes do not chain");
    /* input spec with std 0 */
    memcpy(d, good, len), memset(d + (inpt - good) + 8 + 8 + 64 + 4, 0, 4), reseal(d, len);
    expect_load_error(d, len, "input spec");
    /* a NaN weight */
    {
        const float nan = NAN;
        memcpy(d, good, len), memcpy(d + (tens - good) + 12 + 16, &nan, 4), reseal(d, len);
        expect_load_error(d, len, "invalid value");
    }
    /* section length running past the end */
    memcpy(d, good, len), d[(tens - good) + 7] = 0x7f, reseal(d, len);
    expect_load_error(d, len, "section TENS");
    /* every truncation point fails cleanly (and never crashes) */
    for (size_t cut = 0; cut < len; cut += 7) {
        nn_model *bad = NULL;
        assert_int_not_equal(nn_model_load_mem(good, cut, &bad, err, sizeof(err)), CXR_OK);
        assert_null(bad);
    }
    free(d);
    free(good);
    nn_model_free(m);
    {
        nn_model *bad = NULL;
        assert_int_not_equal(nn_model_load("/nonexistent/x.cxrm", &bad, err, sizeof(err)),
                             CXR_OK);
        assert_null(bad);
        assert_non_null(strstr(err, "/nonexistent/x.cxrm"));
    }
}

/* One training step and one prediction with the engine's pool at 1 and at 3 threads: the
 * same predictions bit for bit (every output is computed by one task, the same way) and the
 * same gradients to rounding (the im2col path's weight gradient adds per-worker partial sums).
 * The architecture has every parallel loop: stride-2 and stride-1 3x3 convolutions, a 1x1 and
 * a 5x5 (im2col path), batch norm, ReLU, max pooling, GAP and dense. */
static void test_threads_same_result(void **state)
{
    static const char *arch = "input 40 1\nconv 16 3 2 1\nbn\nrelu\nconv 20 3 1 1\nbn\nrelu\n"
                              "maxpool 2 2\nconv 12 1 1 0\nrelu\nconv 9 5 2 2\nbn\nrelu\n"
                              "gap\ndense classes\n";
    const int batch = 7;
    int labels[7] = {0, 1, 2, 3, 0, 1, 2};
    float *grad[2], probs[2][7 * 4];
    size_t np = 0, in;
    float *x;
    {
        nn_model *m = build(arch, 4, CLASSES4);
        in = nn_model_input_len(m) * batch;
        np = m->n_params;
        nn_model_free(m);
    }
    x = malloc(sizeof(float) * in);
    assert_non_null(x);
    nn_fill_hashed_input(x, in, 5);
    for (int r = 0; r < 2; r++) {
        nn_model *m = build(arch, 4, CLASSES4);
        nn_train *t = NULL;
        nn_ctx *c = NULL;
        float loss;
        assert_int_equal(nn_set_threads(r ? 3 : 1), CXR_OK);
        assert_int_equal(nn_get_threads(), r ? 3 : 1);
        assert_int_equal(nn_train_new(m, batch, NULL, &t), CXR_OK);
        assert_int_equal(nn_train_forward(t, x, batch, NULL), CXR_OK);
        {
            const float *logits;
            float dl[7 * 4];
            assert_int_equal(nn_train_forward(t, x, batch, &logits), CXR_OK);
            assert_int_equal(nn_loss_xent(logits, labels, batch, 4, NULL, 0.0f, &loss, dl),
                             CXR_OK);
            assert_int_equal(nn_train_backward(t, dl), CXR_OK);
        }
        grad[r] = malloc(sizeof(float) * np);
        assert_non_null(grad[r]);
        memcpy(grad[r], nn_train_grad(t), sizeof(float) * np);
        nn_train_free(t);
        assert_int_equal(nn_ctx_new(m, batch, &c), CXR_OK);
        assert_int_equal(nn_predict(c, x, batch, probs[r]), CXR_OK);
        nn_ctx_free(c);
        nn_model_free(m);
    }
    assert_int_equal(nn_set_threads(1), CXR_OK);
    assert_memory_equal(probs[0], probs[1], sizeof(probs[0]));
    {
        double worst = 0.0, scale = 1e-30;
        for (size_t i = 0; i < np; i++) {
            double d = fabs((double)grad[0][i] - grad[1][i]);
            worst = d > worst ? d : worst;
            scale = fabs((double)grad[0][i]) > scale ? fabs((double)grad[0][i]) : scale;
        }
        printf("gradients at 1 and 3 threads: max difference %.3g of scale %.3g\n", worst,
               scale);
        assert_true(worst <= 1e-5 * scale);
    }
    free(grad[0]);
    free(grad[1]);
    free(x);
}

/* Batch 1 on two threads switches between the pool and serial (nn_adapt): every call gives the
 * same bits as one thread, whichever mode it ran in; and the choice follows the timings. */
static void test_batch1_adapt(void **state)
{
    static const char *arch = "input 40 1\nconv 16 3 2 1\nbn\nrelu\nconv 20 3 1 1\nbn\nrelu\n"
                              "maxpool 2 2\nconv 12 1 1 0\nrelu\ngap\ndense classes\n";
    nn_model *m = build(arch, 4, CLASSES4);
    nn_ctx *c = NULL;
    float *x, one[4], p[4];
    struct nn_adapt a = {{0.0, 0.0}, 0};
    int serial_calls = 0;
    (void)state;
    x = malloc(sizeof(float) * nn_model_input_len(m));
    assert_non_null(x);
    nn_fill_hashed_input(x, nn_model_input_len(m), 9);
    assert_int_equal(nn_set_threads(1), CXR_OK);
    assert_int_equal(nn_ctx_new(m, 1, &c), CXR_OK);
    assert_int_equal(nn_predict(c, x, 1, one), CXR_OK);
    assert_int_equal(nn_set_threads(2), CXR_OK);
    for (int i = 0; i < 3 * NN_ADAPT_PROBE; i++) { /* both modes run, whatever the timings */
        assert_int_equal(nn_predict(c, x, 1, p), CXR_OK);
        assert_memory_equal(one, p, sizeof(p));
    }
    nn_ctx_free(c);
    assert_int_equal(nn_set_threads(1), CXR_OK);

    /* the choice: the first calls alternate (a cold first call does not decide), then the
     * faster runs and the other is tried every 32nd call */
    for (int i = 0; i < NN_ADAPT_FIRST; i++) {
        int mode = nn_adapt_pick(&a);
        assert_int_equal(mode, i % 2);
        nn_adapt_note(&a, mode, i == 0 ? 9.0 : mode ? 3.0 : 2.0); /* the first one cold */
    }
    for (unsigned i = NN_ADAPT_FIRST; i < NN_ADAPT_FIRST + 4 * NN_ADAPT_PROBE; i++) {
        int mode = nn_adapt_pick(&a);
        serial_calls += mode;
        nn_adapt_note(&a, mode, mode ? 3.0 : 2.0);
    }
    assert_int_equal(serial_calls, 4); /* one probe in 32 */
    /* one slow call of the pool does not flip the choice */
    nn_adapt_note(&a, 0, 3.5);
    assert_true(a.ms[0] < a.ms[1]);
    /* the pool becomes slow (the vCPUs on different dies): serial within a few calls */
    for (int i = 0; i < 4; i++) {
        int mode = nn_adapt_pick(&a);
        nn_adapt_note(&a, mode, mode ? 3.0 : 4.5);
    }
    assert_true(a.ms[0] > a.ms[1]);
    for (int i = 0; i < 4 * NN_ADAPT_PROBE; i++) {
        int mode = nn_adapt_pick(&a);
        nn_adapt_note(&a, mode, mode ? 3.0 : 4.5);
    }
    assert_int_equal(a.calls % NN_ADAPT_PROBE != 0 ? nn_adapt_pick(&a) : 1, 1);
    /* and back at the first probe once it is fast again */
    while ((a.calls + 1) % NN_ADAPT_PROBE != 0)
        nn_adapt_note(&a, nn_adapt_pick(&a), 3.0);
    assert_int_equal(nn_adapt_pick(&a), 0); /* the probe */
    nn_adapt_note(&a, 0, 1.8);
    assert_int_equal(nn_adapt_pick(&a), 0);
    free(x);
    nn_model_free(m);
}

int main(void)
{
    nn_test_kernel_or_skip();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_archs),   cmocka_unit_test(test_arch_text_errors),
        cmocka_unit_test(test_golden_pytorch),  cmocka_unit_test(test_train_save_load),
        cmocka_unit_test(test_loader_errors),   cmocka_unit_test(test_threads_same_result),
        cmocka_unit_test(test_batch1_adapt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
