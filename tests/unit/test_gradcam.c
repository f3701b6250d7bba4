/*
 * test_gradcam.c - Grad-CAM (model/gradcam.c) and its pictures (px_heatmap_png, px_png_mem).
 *
 * `test_gradcam` (no data needed):
 * - the maps agree with PyTorch autograd Grad-CAM on identical (hash-derived) weights and
 *   inputs for every class of five architectures (model/golden/gradcam.txt, written by
 *   gen_gradcam.py in float64): 1e-4 absolute on the normalised map, on the kernel under test
 *   (CXR_KERNEL, registered once per kernel) and on im2col + OpenBLAS; cls -1 picks PyTorch's
 *   top class; the probabilities are nn_predict's
 * - errors: a model without convolution, a class out of range
 * - two contexts on two threads give the maps one context gives serially
 * - the PNGs decode to the right size and channels; hot pixels are red, cold ones the image
 * `test_gradcam bundled` (needs ../shared/data, else exit 77): the bundled model on a real
 * DICOM radiograph and a real PNG: every class's map is finite, in [0,1], has maximum 1, and is
 * the same bits on a second run.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dicom.h"
#include "model.h"
#include "nn_test_kernel.h"

#define GOLDEN_TOL 1e-4

static const char *const CLASSES4[] = {"COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"};

static const char *src_dir(void)
{
    const char *s = getenv("CXR_SOURCE_DIR");
    return s ? s : ".";
}

static nn_model *build(const char *arch, int size)
{
    struct nn_input_spec spec;
    nn_model *m = NULL;
    char err[256] = "";
    memset(&spec, 0, sizeof(spec));
    spec.size = size;
    cxr_err e = nn_model_build(arch, &spec, 4, CLASSES4, 42, &m, err, sizeof(err));
    if (e)
        fprintf(stderr, "build %s: %s\n", arch, err);
    assert_int_equal(e, CXR_OK);
    return m;
}

static void arch_path(const char *name, char *buf, size_t len)
{
    if (!strcmp(name, "mix") || !strcmp(name, "gc_tail"))
        (void)snprintf(buf, len, "%s/model/golden/%s.arch", src_dir(), name);
    else
        (void)snprintf(buf, len, "%s", name);
}

/* Every map of gradcam.txt against ours on the kernel now in use; returns the maps checked. */
static int golden_maps(const char *kernel)
{
    char path[600], line[8192], name[64], arch[700];
    FILE *f;
    int maps = 0;
    double worst = 0.0;
    (void)snprintf(path, sizeof(path), "%s/model/golden/gradcam.txt", src_dir());
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f)) {
        int size, cls, top, h, w, gh, gw, used = -1;
        double rawmax;
        if (line[0] == '#' || sscanf(line, "gradcam %63s size %d class %d top %d h %d w %d "
                                     "rawmax %lf", name, &size, &cls, &top, &h, &w,
                                     &rawmax) != 7)
            continue;
        arch_path(name, arch, sizeof(arch));
        nn_model *m = build(arch, size);
        nn_model_fill_hashed(m);
        size_t n = nn_model_input_len(m);
        float *x = malloc(sizeof(float) * n), *cam = malloc(sizeof(float) * (size_t)h * w);
        float probs[4], want_probs[4];
        nn_gradcam *g = NULL;
        nn_ctx *ctx = NULL;
        char err[256] = "";
        assert_non_null(x);
        assert_non_null(cam);
        nn_fill_hashed_input(x, n, 1000);
        assert_int_equal(nn_gradcam_new(m, &g, err, sizeof(err)), CXR_OK);
        nn_gradcam_dims(g, &gh, &gw);
        assert_int_equal(gh, h);
        assert_int_equal(gw, w);
        assert_int_equal(nn_gradcam_run(g, x, cls, probs, cam, &used), CXR_OK);
        assert_int_equal(used, cls);
        for (int y = 0; y < h; y++) {
            char *p = line;
            assert_non_null(fgets(line, sizeof(line), f));
            for (int i = 0; i < w; i++) {
                double want = strtod(p, &p), got = cam[y * w + i], d = fabs(got - want);
                if (d > worst)
                    worst = d;
                if (d > GOLDEN_TOL)
                    fprintf(stderr, "%s class %d at (%d,%d): ours %.7g pytorch %.7g\n", name,
                            cls, y, i, got, want);
                assert_true(d <= GOLDEN_TOL);
            }
        }
        /* the class chosen by -1 is PyTorch's top one, the scores are nn_predict's */
        assert_int_equal(nn_gradcam_run(g, x, -1, NULL, cam, &used), CXR_OK);
        assert_int_equal(used, top);
        assert_int_equal(nn_ctx_new(m, 1, &ctx), CXR_OK);
        assert_int_equal(nn_predict(ctx, x, 1, want_probs), CXR_OK);
        for (int c = 0; c < 4; c++)
            assert_true(fabsf(probs[c] - want_probs[c]) <= 1e-6f);
        maps++;
        nn_ctx_free(ctx);
        nn_gradcam_free(g);
        free(cam);
        free(x);
        nn_model_free(m);
    }
    (void)fclose(f);
    printf("  %d maps agree with PyTorch (%s): worst absolute difference %.2e (tolerance %.0e)\n",
           maps, kernel, worst, GOLDEN_TOL);
    return maps;
}

static void test_golden_pytorch(void **state)
{
    const enum nn_kernel k = nn_kernel();
    (void)state;
    assert_int_equal(golden_maps(nn_kernel_name()), 20);
    if (k != NN_KERNEL_IM2COL) {
        assert_int_equal(nn_kernel_set(NN_KERNEL_IM2COL), CXR_OK);
        assert_int_equal(golden_maps("im2col"), 20);
        assert_int_equal(nn_kernel_set(k), CXR_OK);
    }
}

static void test_errors(void **state)
{
    nn_model *m;
    nn_gradcam *g = NULL;
    char err[256] = "";
    float x[8 * 8], cam[8 * 8]; /* A: the 8x8 output of the ReLU before the pooling */
    (void)state;
    m = build("input 8 1\nflatten\ndense 6\nrelu\ndense classes\n", 0);
    assert_int_equal(nn_gradcam_new(m, &g, err, sizeof(err)), CXR_EMODEL);
    assert_null(g);
    assert_non_null(strstr(err, "no convolutional layer"));
    nn_model_free(m);
    m = build("input 8 1\nconv 4 3 1 1\nbn\nrelu\nmaxpool 2 2\ndense classes\n", 0);
    nn_fill_hashed_input(x, 64, 3);
    assert_int_equal(nn_gradcam_new(m, &g, err, sizeof(err)), CXR_OK);
    {
        int h, w;
        nn_gradcam_dims(g, &h, &w);
        assert_int_equal(h * w, 8 * 8);
    }
    assert_int_equal(nn_gradcam_run(g, x, 4, NULL, cam, NULL), CXR_EINVAL);
    assert_int_equal(nn_gradcam_run(g, x, -2, NULL, cam, NULL), CXR_EINVAL);
    assert_int_equal(nn_gradcam_run(g, NULL, 0, NULL, cam, NULL), CXR_EINVAL);
    assert_int_equal(nn_gradcam_run(g, x, 3, NULL, cam, NULL), CXR_OK);
    nn_gradcam_free(g);
    nn_gradcam_free(NULL);
    nn_model_free(m);
}

struct worker {
    nn_gradcam *g;
    const float *x;
    float *cam;
    int cls, runs;
    cxr_err err;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->runs && !w->err; i++)
        w->err = nn_gradcam_run(w->g, w->x, w->cls, NULL, w->cam, NULL);
    return NULL;
}

/* Two contexts of one model on two threads at once give the serial maps, bit for bit. */
static void test_concurrent_contexts(void **state)
{
    nn_model *m = build("compact", 96);
    const size_t n = nn_model_input_len(m);
    float *x[2], *cam[2], *want[2];
    struct worker w[2];
    pthread_t th[2];
    char err[256];
    int h, wd;
    (void)state;
    nn_model_fill_hashed(m);
    for (int i = 0; i < 2; i++) {
        x[i] = malloc(sizeof(float) * n);
        assert_non_null(x[i]);
        nn_fill_hashed_input(x[i], n, 7u + (uint32_t)i);
        memset(&w[i], 0, sizeof(w[i]));
        assert_int_equal(nn_gradcam_new(m, &w[i].g, err, sizeof(err)), CXR_OK);
    }
    nn_gradcam_dims(w[0].g, &h, &wd);
    for (int i = 0; i < 2; i++) {
        cam[i] = calloc((size_t)h * wd, sizeof(float));
        want[i] = calloc((size_t)h * wd, sizeof(float));
        assert_non_null(cam[i]);
        assert_non_null(want[i]);
        assert_int_equal(nn_gradcam_run(w[0].g, x[i], i, NULL, want[i], NULL), CXR_OK);
        w[i].x = x[i];
        w[i].cam = cam[i];
        w[i].cls = i;
        w[i].runs = 20;
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].err, CXR_OK);
        assert_memory_equal(cam[i], want[i], sizeof(float) * (size_t)h * wd);
        nn_gradcam_free(w[i].g);
        free(x[i]);
        free(cam[i]);
        free(want[i]);
    }
    nn_model_free(m);
}

static void decode(const unsigned char *png, size_t len, struct px_image *img)
{
    char err[256] = "";
    assert_int_equal(px_detect(png, len), PX_FMT_PNG);
    assert_int_equal(px_image_read_png(png, len, "test.png", img, err, sizeof(err)), CXR_OK);
}

/* A 2x2 map, hot at the top left only, over a mid-grey image: the top-left corner is reddish,
 * the bottom-right one is the image's grey; the overlay's alpha is 0 there. */
static void test_pictures(void **state)
{
    enum { S = 64 };
    static float unit[S * S];
    const float cam[4] = {1.0f, 0.0f, 0.0f, 0.0f};
    unsigned char *png = NULL;
    size_t len = 0;
    struct px_image img;
    char err[256];
    (void)state;
    for (int i = 0; i < S * S; i++)
        unit[i] = 0.5f;
    assert_int_equal(px_png_mem(unit, S, &png, &len, err, sizeof(err)), CXR_OK);
    decode(png, len, &img);
    assert_int_equal(img.width, S);
    assert_int_equal(img.height, S);
    assert_int_equal(img.channels, 1);
    px_image_done(&img);
    free(png);

    assert_int_equal(px_heatmap_png(unit, S, cam, 2, 2, &png, &len, err, sizeof(err)), CXR_OK);
    decode(png, len, &img);
    assert_int_equal(img.width, S);
    assert_int_equal(img.channels, 3);
    {
        const int32_t *p = img.samples, *q = img.samples + ((size_t)(S * S) - 1) * 3;
        printf("  blended: top-left %d,%d,%d  bottom-right %d,%d,%d\n", p[0], p[1], p[2], q[0],
               q[1], q[2]);
        assert_true(p[0] > p[1] + 40 && p[0] > p[2] + 40); /* red dominates where hot */
        for (int c = 0; c < 3; c++)
            assert_true(abs(q[c] - 128) <= 1); /* the image untouched where cold */
    }
    px_image_done(&img);
    free(png);

    /* the overlay: RGBA, alpha 0 where cold (px_image_read_png drops alpha: check the bytes'
     * size instead, and that it differs from the blended picture) */
    assert_int_equal(px_heatmap_png(NULL, S, cam, 2, 2, &png, &len, err, sizeof(err)), CXR_OK);
    assert_true(len > 8 && png[25] == 6); /* IHDR colour type 6: RGBA */
    free(png);

    assert_int_equal(px_heatmap_png(unit, 0, cam, 2, 2, &png, &len, err, sizeof(err)),
                     CXR_EINVAL);
    assert_int_equal(px_heatmap_png(unit, S, cam, 0, 2, &png, &len, err, sizeof(err)),
                     CXR_EINVAL);
}

/* ---- the bundled model on real radiographs ---- */

static char g_data[4096];

static void check_map(const float *cam, int n)
{
    float mx = 0.0f;
    for (int i = 0; i < n; i++) {
        assert_true(isfinite(cam[i]));
        assert_true(cam[i] >= 0.0f && cam[i] <= 1.0f);
        if (cam[i] > mx)
            mx = cam[i];
    }
    assert_true(mx == 1.0f); /* not all zero: normalised by its maximum */
}

static void bundled_on(const char *file)
{
    char path[4200], err[1024] = "";
    nn_model *m = NULL;
    nn_gradcam *g = NULL;
    nn_ctx *ctx = NULL;
    struct px_spec px;
    struct px_verdict v;
    float probs[NN_MAX_CLASSES], want[NN_MAX_CLASSES];
    int h, w, used;
    (void)snprintf(path, sizeof(path), "%s/model/weights/cxr4-default.cxrm", src_dir());
    assert_int_equal(nn_model_load(path, &m, err, sizeof(err)), CXR_OK);
    const struct nn_input_spec *s = nn_model_input_spec(m);
    px.size = s->size;
    px.channels = s->channels;
    px.mean = s->mean;
    px.std = s->std;
    float *x = malloc(sizeof(float) * nn_model_input_len(m));
    assert_non_null(x);
    (void)snprintf(path, sizeof(path), "%s/%s", g_data, file);
    if (px_load_file(path, &px, x, &v, err, sizeof(err)) != CXR_OK)
        fail_msg("%s", err);
    assert_true(v.applicable);
    assert_int_equal(nn_gradcam_new(m, &g, err, sizeof(err)), CXR_OK);
    nn_gradcam_dims(g, &h, &w);
    assert_true(h > 1 && w > 1);
    float *cam = malloc(sizeof(float) * (size_t)h * w), *again = malloc(sizeof(float) * h * w);
    assert_non_null(cam);
    assert_non_null(again);
    assert_int_equal(nn_ctx_new(m, 1, &ctx), CXR_OK);
    assert_int_equal(nn_predict(ctx, x, 1, want), CXR_OK);
    for (int c = -1; c < nn_model_num_classes(m); c++) {
        assert_int_equal(nn_gradcam_run(g, x, c, probs, cam, &used), CXR_OK);
        if (c == -1)
            check_map(cam, h * w); /* the top class looked somewhere */
        else
            for (int i = 0; i < h * w; i++)
                assert_true(isfinite(cam[i]) && cam[i] >= 0.0f && cam[i] <= 1.0f);
        for (int k = 0; k < nn_model_num_classes(m); k++)
            assert_true(fabsf(probs[k] - want[k]) <= 1e-6f);
        assert_int_equal(nn_gradcam_run(g, x, c, NULL, again, NULL), CXR_OK);
        assert_memory_equal(cam, again, sizeof(float) * (size_t)h * w);
        if (c == -1)
            printf("  %s: %dx%d map of the top class %s (p %.3f)\n", file, h, w,
                   nn_model_class_name(m, used), (double)probs[used]);
    }
    nn_ctx_free(ctx);
    nn_gradcam_free(g);
    free(cam);
    free(again);
    free(x);
    nn_model_free(m);
}

static void test_bundled_dicom(void **state)
{
    (void)state;
    bundled_on("dicom/cxr_siim_8bit_explicit_le.dcm");
    bundled_on("dicom/cxr_siim_16bit_voilut_seq.dcm");
}

static void test_bundled_png(void **state)
{
    (void)state;
    bundled_on("cxr4/Lung_Opacity/figure1__COVID-00031.png");
}

int main(int argc, char **argv)
{
    nn_test_kernel_or_skip();
    if (argc > 1 && !strcmp(argv[1], "bundled")) {
        const char *d = getenv("CXR_DATA_DIR");
        char probe[4200];
        FILE *f;
        const struct CMUnitTest tests[] = {cmocka_unit_test(test_bundled_dicom),
                                           cmocka_unit_test(test_bundled_png)};
        (void)snprintf(g_data, sizeof(g_data), "%s", d ? d : "");
        (void)snprintf(probe, sizeof(probe), "%s/dicom/MANIFEST.csv", g_data);
        f = d ? fopen(probe, "r") : NULL;
        if (!f) {
            printf("skipped: needs the shared data set at '%s' (CXR_DATA_DIR)\n", g_data);
            return 77;
        }
        (void)fclose(f);
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_pytorch), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_concurrent_contexts), cmocka_unit_test(test_pictures)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
