/*
 * test_model_noalloc.c - nn_predict and nn_gradcam_run perform no heap allocation in the
 * steady state.
 *
 * malloc, calloc, realloc and aligned_alloc are interposed (glibc's __libc_* underneath) and
 * counted while `counting` is set; after one warm-up call (OpenBLAS sets up its own buffers on
 * first use) a series of predictions at batch 1 and at the context's maximum batch must not
 * allocate. One BLAS thread, as the daemon's workers run (with more, OpenBLAS's own thread
 * server allocates per call, outside our code). Not built under the sanitizers, which own
 * malloc themselves.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include <cblas.h>

#include "model.h"

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t a, size_t n);

static volatile int counting;
static volatile long allocations;

void *malloc(size_t n)
{
    if (counting)
        allocations++;
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
    if (counting)
        allocations++;
    return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
    if (counting)
        allocations++;
    return __libc_realloc(p, n);
}

void *aligned_alloc(size_t a, size_t n)
{
    if (counting)
        allocations++;
    return __libc_memalign(a, n);
}

static void test_predict_does_not_allocate(void **state)
{
    static const char *const classes[] = {"COVID-19", "Lung Opacity", "Normal",
                                          "Viral Pneumonia"};
    nn_model *m = NULL;
    nn_ctx *ctx = NULL;
    char err[256];
    float probs[4 * 4];
    openblas_set_num_threads(1);
    assert_int_equal(nn_model_build("compact", NULL, 4, classes, 3, &m, err, sizeof(err)),
                     CXR_OK);
    size_t n = nn_model_input_len(m) * 4;
    float *x = malloc(sizeof(float) * n);
    assert_non_null(x);
    nn_fill_hashed_input(x, n, 5);
    assert_int_equal(nn_ctx_new(m, 4, &ctx), CXR_OK);
    assert_int_equal(nn_predict(ctx, x, 4, probs), CXR_OK); /* warm-up */
    allocations = 0;
    counting = 1;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(nn_predict(ctx, x, 1, probs), CXR_OK);
        assert_int_equal(nn_predict(ctx, x, 4, probs), CXR_OK);
    }
    counting = 0;
    printf("  allocations during 10 predictions: %ld\n", allocations);
    assert_int_equal(allocations, 0);
    nn_ctx_free(ctx);
    nn_model_free(m);
    free(x);
}

/* The same for Grad-CAM: every class, on the kernel chosen, after one warm-up run. */
static void test_gradcam_does_not_allocate(void **state)
{
    static const char *const classes[] = {"COVID-19", "Lung Opacity", "Normal",
                                          "Viral Pneumonia"};
    nn_model *m = NULL;
    nn_gradcam *g = NULL;
    char err[256];
    float probs[4];
    int h, w, used;
    (void)state;
    openblas_set_num_threads(1);
    assert_int_equal(nn_model_build("compact", NULL, 4, classes, 3, &m, err, sizeof(err)),
                     CXR_OK);
    nn_model_fill_hashed(m);
    size_t n = nn_model_input_len(m);
    float *x = malloc(sizeof(float) * n);
    assert_non_null(x);
    nn_fill_hashed_input(x, n, 5);
    assert_int_equal(nn_gradcam_new(m, &g, err, sizeof(err)), CXR_OK);
    nn_gradcam_dims(g, &h, &w);
    float *cam = malloc(sizeof(float) * (size_t)h * w);
    assert_non_null(cam);
    assert_int_equal(nn_gradcam_run(g, x, -1, probs, cam, &used), CXR_OK); /* warm-up */
    allocations = 0;
    counting = 1;
    for (int i = 0; i < 3; i++)
        for (int c = -1; c < 4; c++)
            assert_int_equal(nn_gradcam_run(g, x, c, probs, cam, &used), CXR_OK);
    counting = 0;
    printf("  allocations during 15 Grad-CAM runs: %ld\n", allocations);
    assert_int_equal(allocations, 0);
    nn_gradcam_free(g);
    nn_model_free(m);
    free(cam);
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_predict_does_not_allocate),
                                       cmocka_unit_test(test_gradcam_does_not_allocate)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
