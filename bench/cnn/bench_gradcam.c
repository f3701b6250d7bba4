/*
 * bench_gradcam.c - what a Grad-CAM map costs next to a plain prediction, on a real model and
 * a real radiograph:
 *   bench_gradcam MODEL.cxrm IMAGE [SECONDS]
 * Loads the model and the image (DICOM, PNG or JPEG through the pixel path), then alternates
 * nn_predict and nn_gradcam_run (top class, probabilities too) at batch 1 on one thread for
 * SECONDS (default 10) and prints the kernel and the medians (and 90th percentiles) of both in
 * ms, and their ratio. Alternating puts this host's noisy spells on both sides alike.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dicom.h"
#include "model.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define MAX_RUNS 100000

int main(int argc, char **argv)
{
    static double tp[MAX_RUNS], tg[MAX_RUNS];
    char err[1024] = "", desc[256];
    nn_model *m = NULL;
    nn_ctx *ctx = NULL;
    nn_gradcam *g = NULL;
    struct px_spec px;
    float probs[NN_MAX_CLASSES], *x, *cam;
    int h, w, n = 0;
    double seconds = argc > 3 ? atof(argv[3]) : 10.0, until;

    if (argc < 3) {
        fprintf(stderr, "usage: bench_gradcam MODEL.cxrm IMAGE [SECONDS]\n");
        return 2;
    }
    if (nn_model_load(argv[1], &m, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "bench_gradcam: %s\n", err);
        return 1;
    }
    const struct nn_input_spec *s = nn_model_input_spec(m);
    px.size = s->size;
    px.channels = s->channels;
    px.mean = s->mean;
    px.std = s->std;
    x = malloc(sizeof(float) * nn_model_input_len(m));
    if (!x || px_load_file(argv[2], &px, x, NULL, err, sizeof(err)) != CXR_OK ||
        nn_ctx_new(m, 1, &ctx) != CXR_OK || nn_gradcam_new(m, &g, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "bench_gradcam: %s\n", err[0] ? err : "out of memory");
        return 1;
    }
    nn_gradcam_dims(g, &h, &w);
    cam = malloc(sizeof(float) * (size_t)h * w);
    if (!cam)
        return 1;
    (void)nn_predict(ctx, x, 1, probs); /* warm-up */
    (void)nn_gradcam_run(g, x, -1, probs, cam, NULL);
    until = now() + seconds;
    while (n < MAX_RUNS && now() < until) {
        double t0 = now();
        (void)nn_predict(ctx, x, 1, probs);
        double t1 = now();
        (void)nn_gradcam_run(g, x, -1, probs, cam, NULL);
        tp[n] = (t1 - t0) * 1e3;
        tg[n] = (now() - t1) * 1e3;
        n++;
    }
    qsort(tp, (size_t)n, sizeof(double), cmp_d);
    qsort(tg, (size_t)n, sizeof(double), cmp_d);
    (void)nn_kernel_describe(desc, sizeof(desc));
    printf("kernel=%s\nruns=%d map=%dx%d\n", desc, n, h, w);
    printf("predict_ms_median=%.3f predict_ms_p90=%.3f\n", tp[n / 2], tp[n * 9 / 10]);
    printf("gradcam_ms_median=%.3f gradcam_ms_p90=%.3f\n", tg[n / 2], tg[n * 9 / 10]);
    printf("ratio=%.3f\n", tg[n / 2] / tp[n / 2]);
    free(cam);
    free(x);
    nn_gradcam_free(g);
    nn_ctx_free(ctx);
    nn_model_free(m);
    return 0;
}
