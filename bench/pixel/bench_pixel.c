/*
 * bench_pixel.c - times the whole pixel path in-process: read the file, decode (DCMTK or
 * OpenJPEG), Modality LUT, VOI, inversion, area-averaged resize. Usage:
 *   bench_pixel FILE [SIZE=224] [ITERATIONS=7]
 * prints "median_ms=... min_ms=..." for one warm run followed by ITERATIONS timed runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dicom.h"

static double now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int size = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 224;
    int iters = argc > 3 ? (int)strtol(argv[3], NULL, 10) : 7;
    double *t;
    float *out;
    char err[512];

    if (argc < 2 || size < 1 || size > PX_MAX_SIZE || iters < 1 || iters > 1000) {
        fprintf(stderr, "usage: bench_pixel FILE [SIZE] [ITERATIONS]\n");
        return 2;
    }
    if (dcm_global_init() != CXR_OK) {
        fprintf(stderr, "bench_pixel: DICOM dictionary missing\n");
        return 1;
    }
    out = malloc(sizeof(float) * (size_t)size * (size_t)size);
    t = malloc(sizeof(double) * (size_t)iters);
    if (!out || !t) {
        free(out);
        free(t);
        return 1;
    }
    for (int i = -1; i < iters; i++) {
        double t0 = now_ms();
        if (px_load_unit(argv[1], size, out, NULL, err, sizeof(err)) != CXR_OK) {
            fprintf(stderr, "bench_pixel: %s\n", err);
            free(out);
            free(t);
            return 1;
        }
        if (i >= 0)
            t[i] = now_ms() - t0;
    }
    qsort(t, (size_t)iters, sizeof(double), cmp_double);
    printf("median_ms=%.2f min_ms=%.2f\n", t[iters / 2], t[0]);
    free(t);
    free(out);
    return 0;
}
