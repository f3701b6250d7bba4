/*
 * bench_cnn.c - our CNN engine's speed on one architecture, for bench/cnn/run.
 *   bench_cnn ARCH THREADS SECONDS [--layers|--steps]
 *   bench_cnn --kernel      (prints the convolution kernel in use, nn_kernel_describe)
 * Prints key=value lines: batch-1 latency (median), batch-16 and training (batch 32:
 * forward, loss, backward, Adam) throughput, and, for the conv layers' shapes (M = out
 * channels, N = output pixels, K = in channels x k x k), plain cblas_sgemm GFLOP/s (OpenBLAS
 * with THREADS threads) next to our conv forward GFLOP/s on the same shapes (the direct path
 * for 3x3 layers, on the kernel model/kernel.c chose (CXR_KERNEL forces a lower one), weights
 * packed once as inference does, bias and ReLU fused; im2col + sgemm elsewhere). The first
 * line names the kernel (kernel=avx512|avx2|generic|im2col).
 * Weights are the deterministic hash fill that the PyTorch side uses too.
 * With THREADS > 1 it also prints core_rtt_ns: the round trip of one cache line between two
 * threads on the first two CPUs the process may use (ping-pong through an atomic; the main
 * thread's affinity is restored afterwards), measured before and after the batch-1
 * loop, the larger shown. On a VM whose vCPUs the hypervisor moves, this tells whether they
 * shared a die during the run (~75 ns on the AMD EPYC VM) or not (~350 ns), which decides
 * how much every layer's hand-over between the engine's threads costs.
 * THREADS is the engine's thread count (nn_set_threads: the layers split their work across
 * the engine's threads, OpenBLAS runs one thread). With THREADS > 1, batch-16 throughput is
 * measured two ways and the better one is reported: the engine's threads inside each layer,
 * or THREADS workers with one context and one thread each sharing the batch (the daemon's
 * throughput mode, DESIGN.md "Threads").
 */
/* _GNU_SOURCE (the build defines it): pthread_setaffinity_np, for core_rtt_ns */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pthread.h>
#include <stdatomic.h>

#include <cblas.h>

#include "nn_int.h"

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

struct worker {
    nn_ctx *ctx;
    const float *x;
    int batch;
    double until;
    long images;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    float probs[16 * 4];
    while (now() < w->until) {
        (void)nn_predict(w->ctx, w->x, w->batch, probs);
        w->images += w->batch;
    }
    return NULL;
}

/* core_rtt: two threads pass one cache line back and forth through an atomic */
static atomic_int rtt_flag;
enum { RTT_ROUNDS = 20000 };

static int rtt_cpu[2];

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *rtt_peer(void *arg)
{
    (void)arg;
    pin(rtt_cpu[1]);
    atomic_store_explicit(&rtt_flag, 2, memory_order_release); /* ready, on its CPU */
    while (atomic_load_explicit(&rtt_flag, memory_order_acquire) == 2)
        ;
    for (int i = 0; i < RTT_ROUNDS; i++) {
        while (atomic_load_explicit(&rtt_flag, memory_order_acquire) != 1)
            ;
        atomic_store_explicit(&rtt_flag, 0, memory_order_release);
    }
    return NULL;
}

static double core_rtt_ns(void)
{
    pthread_t t;
    cpu_set_t saved;
    double t0;
    int k = 0;
    if (pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved) != 0)
        return -1.0;
    for (int c = 0; c < CPU_SETSIZE && k < 2; c++)
        if (CPU_ISSET(c, &saved))
            rtt_cpu[k++] = c;
    if (k < 2)
        return -1.0;
    pin(rtt_cpu[0]);
    atomic_store_explicit(&rtt_flag, 0, memory_order_release);
    if (pthread_create(&t, NULL, rtt_peer, NULL) != 0) {
        (void)pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
        return -1.0;
    }
    while (atomic_load_explicit(&rtt_flag, memory_order_acquire) != 2)
        ;
    atomic_store_explicit(&rtt_flag, 0, memory_order_release);
    t0 = now();
    for (int i = 0; i < RTT_ROUNDS; i++) {
        atomic_store_explicit(&rtt_flag, 1, memory_order_release);
        while (atomic_load_explicit(&rtt_flag, memory_order_acquire) != 0)
            ;
    }
    t0 = now() - t0;
    (void)pthread_join(t, NULL);
    (void)pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
    return t0 / RTT_ROUNDS * 1e9;
}

/* THREADS workers, each with its own context, share batches of 16 (one BLAS thread). */
static double workers_b16(const nn_model *m, const float *x, int threads, double budget)
{
    struct worker w[8];
    pthread_t tid[8];
    long images = 0;
    double t0;
    int n = threads > 8 ? 8 : threads, started = 0;
    (void)nn_set_threads(1);
    for (int i = 0; i < n; i++) {
        w[i].ctx = NULL;
        if (nn_ctx_new(m, 16 / n, &w[i].ctx))
            return 0.0;
    }
    t0 = now();
    for (int i = 0; i < n; i++) {
        w[i].x = x + i * (16 / n) * nn_model_input_len(m);
        w[i].batch = 16 / n;
        w[i].until = t0 + budget;
        w[i].images = 0;
        if (pthread_create(&tid[i], NULL, worker_main, &w[i]) == 0)
            started++;
    }
    for (int i = 0; i < started; i++)
        (void)pthread_join(tid[i], NULL);
    for (int i = 0; i < n; i++) {
        images += w[i].images;
        nn_ctx_free(w[i].ctx);
    }
    (void)nn_set_threads(threads);
    return (double)images / (now() - t0);
}

/* --layers: each conv layer alone at batch 32, forward, input gradient and weight gradient,
 * in GFLOP/s of the nominal 2 * (weights) * (output pixels) * batch flops: where a training
 * step's time goes. */
static int layer_table(const nn_model *m, double budget)
{
    const int batch = 32;
    printf("| layer | in -> out | input | stride | forward ms | GF/s | input grad ms | GF/s | "
           "weight grad ms | GF/s |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        if (l->type != NN_L_CONV)
            continue;
        size_t in = nn_layer_in_len(l) * batch, out = nn_layer_out_len(l) * batch;
        size_t ws = nn_conv_ws_len(l, batch);
        float *x = nn_alloc(sizeof(float) * in), *y = nn_alloc(sizeof(float) * out);
        float *dy = nn_alloc(sizeof(float) * out), *dx = nn_alloc(sizeof(float) * in);
        float *dw = nn_alloc(sizeof(float) * (size_t)l->nw), *col = nn_alloc(sizeof(float) * ws);
        double f = 2.0 * (double)l->nw * l->oh * l->ow * batch, t[3];
        if (!x || !y || !dy || !dx || !dw || !col) {
            nn_free(x), nn_free(y), nn_free(dy), nn_free(dx), nn_free(dw), nn_free(col);
            return 1;
        }
        nn_fill_hashed_input(x, in, 1);
        nn_fill_hashed_input(dy, out, 2);
        for (int k = 0; k < 3; k++) {
            int reps = 0;
            double t0 = now();
            do {
                if (k == 0)
                    nn_conv_forward(l, m->params + l->w, m->params + l->b, x, y, batch, col, 0);
                else if (k == 1)
                    nn_conv_backward(l, m->params + l->w, x, dy, NULL, NULL, dx, batch, col);
                else
                    nn_conv_backward(l, m->params + l->w, x, dy, dw, NULL, NULL, batch, col);
                reps++;
            } while (now() - t0 < budget / 8 || reps < 2);
            t[k] = (now() - t0) / reps;
        }
        printf("| %d | %d -> %d | %dx%d | %d | %.1f | %.0f | %.1f | %.0f | %.1f | %.0f |\n", i,
               l->ic, l->oc, l->ih, l->iw, l->stride, t[0] * 1e3, f / t[0] / 1e9, t[1] * 1e3,
               f / t[1] / 1e9, t[2] * 1e3, f / t[2] / 1e9);
        nn_free(x), nn_free(y), nn_free(dy), nn_free(dx), nn_free(dw), nn_free(col);
    }
    return 0;
}

/* --steps: batch-1 inference step by step (the fused steps of nn_ctx), the best of many runs
 * of each step's CPU time on the calling thread (robust to other processes on the machine;
 * with THREADS > 1 the workers' share is not counted), and the wall time of the whole. */
static int step_table(const nn_model *m, double budget)
{
    nn_ctx *ctx = NULL;
    const char *names[NN_MAX_LAYERS];
    double best[NN_MAX_LAYERS], st[NN_MAX_LAYERS], tot = 1e9, wall = 1e9, sum = 0.0;
    float probs[16];
    size_t in_len = nn_model_input_len(m);
    float *x = malloc(sizeof(float) * in_len);
    int ns, reps = 0;
    if (!x || nn_ctx_new(m, 1, &ctx)) {
        free(x);
        return 1;
    }
    nn_fill_hashed_input(x, in_len, 1000);
    ns = nn_ctx_steps(ctx, names, NN_MAX_LAYERS);
    for (int i = 0; i < ns; i++)
        best[i] = 1e9;
    {
        double t0 = now();
        while (now() - t0 < budget || reps < 20) {
            double t = now(), s = 0.0;
            (void)nn_predict_timed(ctx, x, 1, probs, st);
            t = now() - t;
            for (int i = 0; i < ns; i++) {
                best[i] = st[i] < best[i] ? st[i] : best[i];
                s += st[i];
            }
            tot = s < tot ? s : tot;
            wall = t < wall ? t : wall;
            reps++;
        }
    }
    printf("| step | layer | best CPU us |\n|---|---|---|\n");
    for (int i = 0; i < ns; i++) {
        printf("| %d | %s | %.1f |\n", i, names[i], best[i] * 1e6);
        sum += best[i];
    }
    printf("steps_sum_us=%.1f best_total_cpu_us=%.1f best_wall_us=%.1f runs=%d\n", sum * 1e6,
           tot * 1e6, wall * 1e6, reps);
    nn_ctx_free(ctx);
    free(x);
    return 0;
}

int main(int argc, char **argv)
{
    static const char *const classes[] = {"COVID-19", "Lung Opacity", "Normal",
                                          "Viral Pneumonia"};
    nn_model *m = NULL;
    nn_ctx *ctx = NULL;
    nn_train *tr = NULL;
    char err[256];
    double budget, t0, times[4096];
    int threads, n;
    float *x, probs[16 * 4];
    int labels[32];
    if (argc == 2 && !strcmp(argv[1], "--kernel")) {
        char desc[256];
        (void)nn_kernel_describe(desc, sizeof(desc));
        printf("kernel=%s\nkernel_desc=%s\n", nn_kernel_name(), desc);
        return 0;
    }
    if (argc != 4 && !(argc == 5 && (!strcmp(argv[4], "--layers") || !strcmp(argv[4], "--steps")))) {
        fprintf(stderr,
                "usage: bench_cnn ARCH THREADS SECONDS [--layers|--steps] | bench_cnn --kernel\n");
        return 2;
    }
    threads = (int)strtol(argv[2], NULL, 10);
    budget = strtod(argv[3], NULL);
    if (nn_set_threads(threads) != CXR_OK) {
        fprintf(stderr, "bench_cnn: cannot start %d threads\n", threads);
        return 1;
    }
    if (nn_model_build(argv[1], NULL, 4, classes, 1, &m, err, sizeof(err))) {
        fprintf(stderr, "bench_cnn: %s\n", err);
        return 1;
    }
    nn_model_fill_hashed(m);
    if (argc == 5) {
        int rc = !strcmp(argv[4], "--steps") ? step_table(m, budget) : layer_table(m, budget);
        nn_model_free(m);
        return rc;
    }
    size_t in_len = nn_model_input_len(m);
    x = malloc(sizeof(float) * in_len * 32);
    if (!x || nn_ctx_new(m, 16, &ctx)) {
        free(x);
        nn_model_free(m);
        return 1;
    }
    nn_fill_hashed_input(x, in_len * 32, 1000);
    for (int i = 0; i < 32; i++)
        labels[i] = i % 4;
    printf("arch=%s threads=%d params=%zu mflops=%.1f kernel=%s\n", argv[1], threads,
           nn_model_param_count(m), nn_model_flops(m) / 1e6, nn_kernel_name());

    /* batch 1 latency */
    double rtt = threads > 1 ? core_rtt_ns() : 0.0;
    (void)nn_predict(ctx, x, 1, probs);
    n = 0;
    t0 = now();
    while (n < 4096 && (now() - t0 < budget || n < 5)) {
        double t = now();
        (void)nn_predict(ctx, x, 1, probs);
        times[n++] = now() - t;
    }
    qsort(times, (size_t)n, sizeof(double), cmp_d);
    printf("b1_ms=%.3f b1_ips=%.2f\n", times[n / 2] * 1e3, 1.0 / times[n / 2]);
    if (threads > 1) {
        double after = core_rtt_ns();
        printf("core_rtt_ns=%.0f\n", after > rtt ? after : rtt);
    }

    /* batch 16 throughput */
    n = 0;
    t0 = now();
    while (now() - t0 < budget || n < 2) {
        (void)nn_predict(ctx, x, 16, probs);
        n++;
    }
    {
        double blas = 16.0 * n / (now() - t0), workers = 0.0;
        if (threads > 1)
            workers = workers_b16(m, x, threads, budget);
        printf("b16_blas_ips=%.2f b16_workers_ips=%.2f\n", blas, workers);
        printf("b16_ips=%.2f b16_mode=%s\n", blas > workers ? blas : workers,
               blas >= workers ? "layer-threads" : "workers");
    }

    /* training step, batch 32 */
    {
        struct nn_train_opts o;
        float loss;
        nn_train_opts_default(&o);
        if (nn_train_new(m, 32, &o, &tr)) {
            free(x);
            nn_ctx_free(ctx);
            nn_model_free(m);
            return 1;
        }
        (void)nn_train_batch(tr, x, labels, 32, &loss);
        n = 0;
        t0 = now();
        while (now() - t0 < budget || n < 2) {
            (void)nn_train_batch(tr, x, labels, 32, &loss);
            n++;
        }
        printf("train_ips=%.2f\n", 32.0 * n / (now() - t0));
    }

    /* conv layers: plain sgemm on their shapes vs our conv forward (batch 1) */
    {
        double flops = 0.0, t_gemm = 0.0, t_conv = 0.0;
        size_t maxcol = 1, maxact = 1;
        for (int i = 0; i < m->n_layers; i++) {
            const struct nn_layer *l = &m->layers[i];
            if (l->type != NN_L_CONV)
                continue;
            if (nn_conv_col_len(l) > maxcol)
                maxcol = nn_conv_col_len(l);
            if (nn_conv_ws_len(l, 1) > maxcol)
                maxcol = nn_conv_ws_len(l, 1);
            if (nn_layer_out_len(l) > maxact)
                maxact = nn_layer_out_len(l);
            if (nn_layer_in_len(l) > maxact)
                maxact = nn_layer_in_len(l);
        }
        float *col = nn_alloc(sizeof(float) * maxcol), *a = nn_alloc(sizeof(float) * maxact),
              *y = nn_alloc(sizeof(float) * maxact);
        nn_fill_hashed_input(col, maxcol, 7);
        nn_fill_hashed_input(a, maxact, 8);
        for (int i = 0; i < m->n_layers; i++) {
            const struct nn_layer *l = &m->layers[i];
            int M, N, K, reps;
            double t, f;
            if (l->type != NN_L_CONV)
                continue;
            M = l->oc, N = l->oh * l->ow, K = l->ic * l->k * l->k;
            f = 2.0 * M * N * K;
            reps = (int)(2e8 / f) + 1;
            /* the reference: OpenBLAS with as many threads as our engine has */
            openblas_set_num_threads(threads);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f,
                        m->params + l->w, K, col, N, 0.0f, y, N);
            t = now();
            for (int r = 0; r < reps; r++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f,
                            m->params + l->w, K, col, N, 0.0f, y, N);
            double tg = (now() - t) / reps;
            openblas_set_num_threads(1);
            /* as inference runs it: direct-path weights packed once, when the context is made */
            float *wpk = nn_conv_direct_shape(l) ? nn_alloc(sizeof(float) * nn_conv_pack_len(l))
                                              : NULL;
            if (wpk)
                nn_conv_pack(l, m->params + l->w, wpk);
            nn_conv_forward_packed(l, wpk, m->params + l->w, m->params + l->b, a, y, 1, col, 1);
            t = now();
            for (int r = 0; r < reps; r++)
                nn_conv_forward_packed(l, wpk, m->params + l->w, m->params + l->b, a, y, 1, col,
                                       1);
            nn_free(wpk);
            double tc = (now() - t) / reps;
            printf("conv layer=%d M=%d N=%d K=%d sgemm_gflops=%.1f conv_gflops=%.1f\n", i, M, N,
                   K, f / tg / 1e9, f / tc / 1e9);
            flops += f, t_gemm += tg, t_conv += tc;
        }
        printf("sgemm_gflops=%.1f conv_gflops=%.1f sgemm_share=%.2f\n", flops / t_gemm / 1e9,
               flops / t_conv / 1e9, t_gemm / t_conv);
        nn_free(col), nn_free(a), nn_free(y);
    }
    nn_train_free(tr);
    nn_ctx_free(ctx);
    free(x);
    nn_model_free(m);
    return 0;
}
