/*
 * layers.c - the layer kernels, forward and backward, shared by training and inference.
 *
 * 3x3 convolutions (stride 1 or 2) run on the direct path of conv_direct.c (AVX-512, AVX2 or
 * plain C, as kernel.c chose); the others, and all of them when kernel.c chose "im2col", are
 * im2col + cblas_sgemm on tiles of output rows, the (image, tile) pairs shared out over the
 * engine's threads (a 1x1 stride-1 convolution skips im2col and multiplies the input directly,
 * by blocks of columns); the backward shares out images;
 * the bias and an optional ReLU are applied in one pass over the output (the "epilogue"), which
 * is how inference fuses BN-folded conv + ReLU. Dense is one sgemm for the whole batch. Pooling,
 * batch normalisation and ReLU are loops split by plane, channel or chunk over the threads.
 * Gradients of parameters are accumulated (callers zero them once per batch); gradients of
 * inputs are overwritten.
 */
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "nn_int.h"

size_t nn_conv_col_len(const struct nn_layer *l)
{
    return (size_t)l->ic * l->k * l->k * l->oh * l->ow;
}

static int conv_is_1x1(const struct nn_layer *l)
{
    return l->k == 1 && l->stride == 1 && l->pad == 0;
}

/* The output columns ox whose input column ox*s - p + kx lies inside [0, iw): [*ox0, *ox1). */
static void valid_ox(int ow, int s, int p, int kx, int iw, int *ox0, int *ox1)
{
    int a = 0, b = ow;

    while (a < ow && a * s - p + kx < 0)
        a++;
    while (b > a && (b - 1) * s - p + kx >= iw)
        b--;
    *ox0 = a;
    *ox1 = b;
}

/*
 * col[(c*k + ky)*k + kx][(oy - oy0)*ow + ox] = x[c][oy*s - p + ky][ox*s - p + kx] (0 outside),
 * for output rows oy0 <= oy < oy1: a tile of the full im2col matrix, with row length
 * (oy1 - oy0) * ow.
 */
static void im2col_rows(const struct nn_layer *l, const float *x, float *col, int oy0, int oy1)
{
    const int k = l->k, s = l->stride, p = l->pad, ih = l->ih, iw = l->iw, ow = l->ow;
    const size_t len = (size_t)(oy1 - oy0) * ow;
    for (int c = 0; c < l->ic; c++) {
        const float *xc = x + (size_t)c * ih * iw;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                float *row = col + ((size_t)(c * k + ky) * k + kx) * len;
                int ox0, ox1;
                valid_ox(ow, s, p, kx, iw, &ox0, &ox1);
                for (int oy = oy0; oy < oy1; oy++) {
                    float *r = row + (size_t)(oy - oy0) * ow;
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= ih) {
                        memset(r, 0, sizeof(float) * ow);
                        continue;
                    }
                    const float *xr = xc + (size_t)iy * iw - p + kx;
                    for (int ox = 0; ox < ox0; ox++)
                        r[ox] = 0.0f;
                    if (s == 1) {
                        memcpy(r + ox0, xr + ox0, sizeof(float) * (ox1 - ox0));
                    } else {
                        for (int ox = ox0; ox < ox1; ox++)
                            r[ox] = xr[ox * s];
                    }
                    for (int ox = ox1; ox < ow; ox++)
                        r[ox] = 0.0f;
                }
            }
        }
    }
}

/* The adjoint of im2col_rows: dx (zeroed by the caller) += the tile scattered back. */
static void col2im_rows(const struct nn_layer *l, const float *col, float *dx, int oy0, int oy1)
{
    const int k = l->k, s = l->stride, p = l->pad, ih = l->ih, iw = l->iw, ow = l->ow;
    const size_t len = (size_t)(oy1 - oy0) * ow;
    for (int c = 0; c < l->ic; c++) {
        float *dc = dx + (size_t)c * ih * iw;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                const float *row = col + ((size_t)(c * k + ky) * k + kx) * len;
                int ox0, ox1;
                valid_ox(ow, s, p, kx, iw, &ox0, &ox1);
                for (int oy = oy0; oy < oy1; oy++) {
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= ih)
                        continue;
                    const float *r = row + (size_t)(oy - oy0) * ow;
                    float *d = dc + (size_t)iy * iw - p + kx;
                    if (s == 1) {
                        for (int ox = ox0; ox < ox1; ox++)
                            d[ox] += r[ox];
                    } else {
                        for (int ox = ox0; ox < ox1; ox++)
                            d[ox * s] += r[ox];
                    }
                }
            }
        }
    }
}

/* Output rows per im2col tile: the tile (K x rows*ow floats) stays within ~192 KiB so that it
 * is still in L2 when sgemm packs it, instead of streaming the whole matrix through memory. */
static int conv_tile_rows(const struct nn_layer *l)
{
    const size_t K = (size_t)l->ic * l->k * l->k, budget = 48 * 1024;
    size_t rows = budget / (K * (size_t)l->ow);
    if (rows < 1)
        rows = 1;
    if (rows * (size_t)l->ow < 128) /* keep sgemm's N from getting too thin */
        rows = (128 + l->ow - 1) / l->ow;
    return rows > (size_t)l->oh ? l->oh : (int)rows;
}

static void bias_act(float *r, int n, float bias, int relu)
{
    if (relu) {
        for (int i = 0; i < n; i++) {
            float v = r[i] + bias;
            r[i] = v > 0.0f ? v : 0.0f;
        }
    } else if (bias != 0.0f) {
        for (int i = 0; i < n; i++)
            r[i] += bias;
    }
}

/* Sums of one plane in float with vector lanes (the lanes' order of addition is allowed by the
 * simd pragma); callers add planes in double where the count is large. */
static float plane_sum(const float *p, size_t n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++)
        s += p[i];
    return s;
}

static float plane_sq_dev(const float *p, size_t n, float mean)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++)
        s += (p[i] - mean) * (p[i] - mean);
    return s;
}

/* Floats of one worker's im2col tile. */
static size_t conv_tile_len(const struct nn_layer *l)
{
    return (size_t)l->ic * l->k * l->k * conv_tile_rows(l) * l->ow;
}

/* The im2col path's workspace: a tile per worker, then a weight-gradient partial per worker. */
static size_t im2col_ws_len(const struct nn_layer *l)
{
    return NN_MAX_THREADS * (conv_tile_len(l) + (size_t)l->nw);
}

size_t nn_conv_ws_len(const struct nn_layer *l, int batch)
{
    /* enough for either path, so that switching kernels (nn_kernel_set) keeps buffers valid */
    size_t direct = nn_conv_direct_shape(l) ? nn_direct_ws_len(l, batch) : 0;
    if (nn_conv_direct_shape(l) && l->stride == 1 && nn_wino_train_ws_len(l, batch) > direct)
        direct = nn_wino_train_ws_len(l, batch);
    return direct > im2col_ws_len(l) ? direct : im2col_ws_len(l);
}

void nn_conv_forward(const struct nn_layer *l, const float *w, const float *b, const float *x,
                     float *y, int batch, float *col, int relu)
{
    if (nn_conv_is_winograd(l))
        nn_wino_forward_train(l, w, b, x, y, batch, col, relu);
    else
        nn_conv_forward_packed(l, NULL, w, b, x, y, batch, col, relu);
}

struct conv_job {
    const struct nn_layer *l;
    const float *w, *b, *x, *dy;
    float *y, *dw, *dx, *col;
    int relu;
};

/* Columns per task of a 1x1 convolution's forward (fixed, so that results do not depend on the
 * thread count). */
#define CONV_1X1_COLS 2048

/* Forward tasks per image on the im2col path: its tiles of output rows (1x1: blocks of
 * columns), so that a single image (batch 1, the daemon's latency case) keeps every thread
 * busy. */
static int conv_fwd_parts(const struct nn_layer *l)
{
    if (conv_is_1x1(l))
        return (l->oh * l->ow + CONV_1X1_COLS - 1) / CONV_1X1_COLS;
    return (l->oh + conv_tile_rows(l) - 1) / conv_tile_rows(l);
}

/* im2col path, forward, task = (image, part): im2col of one tile + sgemm + epilogue. */
static void conv_fwd_part(void *arg, int task, int worker)
{
    const struct conv_job *j = arg;
    const struct nn_layer *l = j->l;
    const int K = l->ic * l->k * l->k, N = l->oh * l->ow, M = l->oc;
    const int parts = conv_fwd_parts(l), n = task / parts, part = task % parts;
    const float *xn = j->x + n * nn_layer_in_len(l);
    float *yn = j->y + n * nn_layer_out_len(l);
    float *col = j->col + (size_t)worker * conv_tile_len(l);
    if (conv_is_1x1(l)) {
        const int c0 = part * CONV_1X1_COLS, nb = N - c0 < CONV_1X1_COLS ? N - c0 : CONV_1X1_COLS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, nb, K, 1.0f, j->w, K, xn + c0,
                    N, 0.0f, yn + c0, N);
        for (int m = 0; m < M; m++)
            bias_act(yn + (size_t)m * N + c0, nb, j->b ? j->b[m] : 0.0f, j->relu);
        return;
    }
    {
        const int tile = conv_tile_rows(l), oy0 = part * tile;
        const int oy1 = oy0 + tile < l->oh ? oy0 + tile : l->oh;
        const int nb = (oy1 - oy0) * l->ow;
        float *yt = yn + (size_t)oy0 * l->ow;
        im2col_rows(l, xn, col, oy0, oy1);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, nb, K, 1.0f, j->w, K, col, nb,
                    0.0f, yt, N);
        for (int m = 0; m < M; m++)
            bias_act(yt + (size_t)m * N, nb, j->b ? j->b[m] : 0.0f, j->relu);
    }
}

void nn_conv_forward_packed(const struct nn_layer *l, const float *wpk, const float *w,
                            const float *b, const float *x, float *y, int batch, float *col,
                            int relu)
{
    struct conv_job j = {l, w, b, x, NULL, y, NULL, NULL, col, relu};
    if (nn_conv_is_direct(l)) {
        nn_direct_forward(l, wpk, w, b, x, y, batch, col, relu);
        return;
    }
    nn_parallel(conv_fwd_part, &j, batch * conv_fwd_parts(l));
}

/* im2col path, image n, backward: the weight gradient into this worker's partial sums, the
 * input gradient of the image. */
static void conv_bwd_image(void *arg, int n, int worker)
{
    const struct conv_job *j = arg;
    const struct nn_layer *l = j->l;
    const int K = l->ic * l->k * l->k, N = l->oh * l->ow, M = l->oc;
    const size_t in_len = nn_layer_in_len(l);
    const int tile = conv_tile_rows(l);
    const float *xn = j->x + n * in_len;
    const float *dyn = j->dy + n * nn_layer_out_len(l);
    float *dxn = j->dx ? j->dx + n * in_len : NULL;
    float *col = j->col + (size_t)worker * conv_tile_len(l);
    float *dw = j->dw ? j->col + NN_MAX_THREADS * conv_tile_len(l) + (size_t)worker * l->nw
                      : NULL;
    if (conv_is_1x1(l)) {
        if (dw) /* dW[M,K] += dy[M,N] * x^T[N,K] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, N, 1.0f, dyn, N, xn, N,
                        1.0f, dw, K);
        if (dxn) /* dx[K,N] = W^T[K,M] * dy[M,N] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, M, 1.0f, j->w, K, dyn, N,
                        0.0f, dxn, N);
        return;
    }
    if (dxn)
        memset(dxn, 0, sizeof(float) * in_len);
    for (int oy0 = 0; oy0 < l->oh; oy0 += tile) {
        const int oy1 = oy0 + tile < l->oh ? oy0 + tile : l->oh;
        const int nb = (oy1 - oy0) * l->ow;
        const float *dyt = dyn + (size_t)oy0 * l->ow;
        if (dw) {
            im2col_rows(l, xn, col, oy0, oy1);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, nb, 1.0f, dyt, N, col,
                        nb, 1.0f, dw, K);
        }
        if (dxn) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, nb, M, 1.0f, j->w, K, dyt, N,
                        0.0f, col, nb);
            col2im_rows(l, col, dxn, oy0, oy1);
        }
    }
}

void nn_conv_backward(const struct nn_layer *l, const float *w, const float *x, const float *dy,
                      float *dw, float *db, float *dx, int batch, float *col)
{
    const int N = l->oh * l->ow, M = l->oc;
    const size_t out_len = nn_layer_out_len(l);
    struct conv_job j = {l, w, NULL, x, dy, NULL, dw, dx, col, 0};
    if (db)
        for (int n = 0; n < batch; n++)
            for (int m = 0; m < M; m++)
                db[m] += plane_sum(dy + n * out_len + (size_t)m * N, (size_t)N);
    if (nn_conv_is_direct(l) && dx && nn_wino_train_dx(l)) {
        if (dw)
            nn_direct_backward(l, w, x, dy, dw, NULL, batch, col);
        nn_wino_input_grad(l, w, dy, dx, batch, col);
        return;
    }
    if (nn_conv_is_direct(l)) {
        nn_direct_backward(l, w, x, dy, dw, dx, batch, col);
        return;
    }
    /* weight-gradient partials per worker (the images are shared out), added at the end */
    float *part = col + NN_MAX_THREADS * conv_tile_len(l);
    const int workers = nn_get_threads();
    if (dw)
        memset(part, 0, sizeof(float) * (size_t)workers * l->nw);
    nn_parallel(conv_bwd_image, &j, batch);
    if (dw)
        for (int t = 0; t < workers; t++)
            for (long i = 0; i < l->nw; i++)
                dw[i] += part[(size_t)t * l->nw + i];
}


/* y = x * a + b over channel c of every image: batch normalisation with its statistics folded
 * (and, with relu, the ReLU after it). */
static void bn_scale_shift(const float *x, float *y, int batch, int C, int c, size_t hw, float a,
                           float b, int relu)
{
    for (int n = 0; n < batch; n++) {
        const float *p = x + ((size_t)n * C + c) * hw;
        float *q = y + ((size_t)n * C + c) * hw;
        if (relu) {
#pragma omp simd
            for (size_t i = 0; i < hw; i++) {
                const float v = p[i] * a + b;
                q[i] = v > 0.0f ? v : 0.0f;
            }
        } else {
#pragma omp simd
            for (size_t i = 0; i < hw; i++)
                q[i] = p[i] * a + b;
        }
    }
}

/* The batch-normalisation loops, one task per channel (they share nothing across channels). */
struct bn_job {
    const struct nn_layer *l;
    const float *gamma, *beta, *mean, *var, *x, *dy, *save_mean, *save_istd, *relu_y;
    float *run_mean, *run_var, *y, *save_mean_out, *save_istd_out, *dgamma, *dbeta, *dx;
    float momentum;
    int batch, relu;
};

static void bn_train_channel(void *arg, int c, int worker)
{
    const struct bn_job *j = arg;
    const int C = j->l->ic, batch = j->batch;
    const size_t hw = (size_t)j->l->ih * j->l->iw, cnt = hw * batch;
    const float *x = j->x;
    double s = 0.0, ss = 0.0;
    for (int n = 0; n < batch; n++)
        s += plane_sum(x + ((size_t)n * C + c) * hw, hw);
    double mean = s / (double)cnt;
    for (int n = 0; n < batch; n++)
        ss += plane_sq_dev(x + ((size_t)n * C + c) * hw, hw, (float)mean);
    double var = ss / (double)cnt;
    float istd = (float)(1.0 / sqrt(var + NN_BN_EPS));
    j->save_mean_out[c] = (float)mean;
    j->save_istd_out[c] = istd;
    if (j->run_mean) {
        double unbiased = cnt > 1 ? ss / (double)(cnt - 1) : var;
        j->run_mean[c] = (1.0f - j->momentum) * j->run_mean[c] + j->momentum * (float)mean;
        j->run_var[c] = (1.0f - j->momentum) * j->run_var[c] + j->momentum * (float)unbiased;
    }
    float a = j->gamma[c] * istd;
    bn_scale_shift(x, j->y, batch, C, c, hw, a, j->beta[c] - (float)mean * a, j->relu);
}

void nn_bn_forward_train(const struct nn_layer *l, const float *gamma, const float *beta,
                         float *run_mean, float *run_var, const float *x, float *y, int batch,
                         float *save_mean, float *save_istd, float momentum, int relu)
{
    struct bn_job j = {.l = l, .gamma = gamma, .beta = beta, .x = x, .run_mean = run_mean,
                       .run_var = run_var, .y = y, .save_mean_out = save_mean,
                       .save_istd_out = save_istd, .momentum = momentum, .batch = batch,
                       .relu = relu};
    nn_parallel(bn_train_channel, &j, l->ic);
}

static void bn_infer_channel(void *arg, int c, int worker)
{
    const struct bn_job *j = arg;
    const size_t hw = (size_t)j->l->ih * j->l->iw;
    float a = j->gamma[c] / sqrtf(j->var[c] + NN_BN_EPS);
    bn_scale_shift(j->x, j->y, j->batch, j->l->ic, c, hw, a, j->beta[c] - j->mean[c] * a, 0);
}

void nn_bn_forward_infer(const struct nn_layer *l, const float *gamma, const float *beta,
                         const float *mean, const float *var, const float *x, float *y,
                         int batch)
{
    struct bn_job j = {.l = l, .gamma = gamma, .beta = beta, .mean = mean, .var = var, .x = x,
                       .y = y, .batch = batch};
    nn_parallel(bn_infer_channel, &j, l->ic);
}

/* Inference mode: the statistics are constants, so the batch norm is y = x * a + b per channel
 * and its input gradient is dy * a (Grad-CAM's backward pass, model/gradcam.c). */
static void bn_backward_infer_channel(void *arg, int c, int worker)
{
    const struct bn_job *j = arg;
    const size_t hw = (size_t)j->l->ih * j->l->iw;
    const float a = j->gamma[c] / sqrtf(j->var[c] + NN_BN_EPS);
    bn_scale_shift(j->dy, j->dx, j->batch, j->l->ic, c, hw, a, 0.0f, 0);
}

void nn_bn_backward_infer(const struct nn_layer *l, const float *gamma, const float *var,
                          const float *dy, float *dx, int batch)
{
    struct bn_job j = {.l = l, .gamma = gamma, .var = var, .dy = dy, .dx = dx, .batch = batch};
    nn_parallel(bn_backward_infer_channel, &j, l->ic);
}

/* With relu_y (the output of a ReLU that follows, in place), the gradient reaching the batch
 * norm is dy where relu_y > 0 and 0 elsewhere: the ReLU's backward, fused. */
static void bn_backward_channel(void *arg, int c, int worker)
{
    const struct bn_job *j = arg;
    const int C = j->l->ic, batch = j->batch;
    const size_t hw = (size_t)j->l->ih * j->l->iw;
    const float cnt = (float)(hw * batch);
    const float mean = j->save_mean[c], istd = j->save_istd[c];
    double sdy = 0.0, sdyx = 0.0;
    for (int n = 0; n < batch; n++) {
        const size_t off = ((size_t)n * C + c) * hw;
        const float *p = j->x + off, *g = j->dy + off, *r = j->relu_y ? j->relu_y + off : NULL;
        float a = 0.0f, b = 0.0f;
        if (r) {
#pragma omp simd reduction(+ : a, b)
            for (size_t i = 0; i < hw; i++) {
                const float gi = g[i], gm = r[i] > 0.0f ? gi : 0.0f;
                a += gm;
                b += gm * (p[i] - mean);
            }
        } else {
#pragma omp simd reduction(+ : a, b)
            for (size_t i = 0; i < hw; i++) {
                a += g[i];
                b += g[i] * (p[i] - mean);
            }
        }
        sdy += a;
        sdyx += (double)b * istd;
    }
    if (j->dgamma) {
        j->dgamma[c] += (float)sdyx;
        j->dbeta[c] += (float)sdy;
    }
    if (j->dx) {
        const float k = j->gamma[c] * istd / cnt, fsdy = (float)sdy, fsdyx = (float)sdyx;
        for (int n = 0; n < batch; n++) {
            const size_t off = ((size_t)n * C + c) * hw;
            const float *p = j->x + off, *g = j->dy + off;
            const float *r = j->relu_y ? j->relu_y + off : NULL;
            float *q = j->dx + off;
            if (r) {
#pragma omp simd
                for (size_t i = 0; i < hw; i++) {
                    const float gi = g[i], gm = r[i] > 0.0f ? gi : 0.0f;
                    q[i] = k * (cnt * gm - fsdy - (p[i] - mean) * istd * fsdyx);
                }
            } else {
#pragma omp simd
                for (size_t i = 0; i < hw; i++)
                    q[i] = k * (cnt * g[i] - fsdy - (p[i] - mean) * istd * fsdyx);
            }
        }
    }
}

void nn_bn_backward(const struct nn_layer *l, const float *gamma, const float *x,
                    const float *dy, const float *save_mean, const float *save_istd,
                    float *dgamma, float *dbeta, float *dx, int batch, const float *relu_y)
{
    struct bn_job j = {.l = l, .gamma = gamma, .x = x, .dy = dy, .save_mean = save_mean,
                       .save_istd = save_istd, .relu_y = relu_y, .dgamma = dgamma,
                       .dbeta = dbeta, .dx = dx, .batch = batch};
    nn_parallel(bn_backward_channel, &j, l->ic);
}

/* Element-wise loops: chunks of this many floats per task. */
#define EW_CHUNK (64 * 1024)

struct ew_job {
    const float *a, *b;
    float *out;
    size_t n;
};

static void relu_fwd_chunk(void *arg, int t, int worker)
{
    const struct ew_job *j = arg;
    const size_t i0 = (size_t)t * EW_CHUNK, i1 = i0 + EW_CHUNK < j->n ? i0 + EW_CHUNK : j->n;
    const float *x = j->a;
    float *y = j->out;
#pragma omp simd
    for (size_t i = i0; i < i1; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void nn_relu_forward(const float *x, float *y, size_t n)
{
    struct ew_job j = {x, NULL, y, n};
    nn_parallel(relu_fwd_chunk, &j, (int)((n + EW_CHUNK - 1) / EW_CHUNK));
}

static void relu_bwd_chunk(void *arg, int t, int worker)
{
    const struct ew_job *j = arg;
    const size_t i0 = (size_t)t * EW_CHUNK, i1 = i0 + EW_CHUNK < j->n ? i0 + EW_CHUNK : j->n;
    const float *y = j->a, *dy = j->b;
    float *dx = j->out;
    /* both loads unconditional, so that this is a vector blend, not a branch per element */
#pragma omp simd
    for (size_t i = i0; i < i1; i++) {
        const float g = dy[i];
        dx[i] = y[i] > 0.0f ? g : 0.0f;
    }
}

void nn_relu_backward(const float *y, const float *dy, float *dx, size_t n)
{
    struct ew_job j = {y, dy, dx, n};
    nn_parallel(relu_bwd_chunk, &j, (int)((n + EW_CHUNK - 1) / EW_CHUNK));
}

/* Pooling: one task per group of POOL_PLANES planes (image x channel). */
#define POOL_PLANES 16

struct pool_job {
    const struct nn_layer *l;
    const float *x;
    float *y;
    int32_t *argmax;
    const int32_t *argmax_in;
    size_t planes;
};

static void maxpool_fwd_planes(void *arg, int t, int worker)
{
    const struct pool_job *j = arg;
    const struct nn_layer *l = j->l;
    const int k = l->k, s = l->stride, ih = l->ih, iw = l->iw, oh = l->oh, ow = l->ow;
    const size_t p0 = (size_t)t * POOL_PLANES,
                 p1 = p0 + POOL_PLANES < j->planes ? p0 + POOL_PLANES : j->planes;
    if (k == 2 && s == 2 && !j->argmax) { /* inference's 2x2 pool: branch-free, vectorised */
        for (size_t pl = p0; pl < p1; pl++) {
            const float *xp = j->x + pl * ih * iw;
            float *yp = j->y + pl * oh * ow;
            for (int oy = 0; oy < oh; oy++) {
                const float *r0 = xp + (size_t)(2 * oy) * iw, *r1 = r0 + iw;
                float *yr = yp + (size_t)oy * ow;
#pragma omp simd
                for (int ox = 0; ox < ow; ox++) {
                    float a = r0[2 * ox] > r0[2 * ox + 1] ? r0[2 * ox] : r0[2 * ox + 1];
                    float b = r1[2 * ox] > r1[2 * ox + 1] ? r1[2 * ox] : r1[2 * ox + 1];
                    yr[ox] = a > b ? a : b;
                }
            }
        }
        return;
    }
    for (size_t pl = p0; pl < p1; pl++) {
        const float *xp = j->x + pl * ih * iw;
        float *yp = j->y + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                int best = (oy * s) * iw + ox * s;
                float bv = xp[best];
                for (int ky = 0; ky < k; ky++) {
                    const float *r = xp + (size_t)(oy * s + ky) * iw + ox * s;
                    for (int kx = 0; kx < k; kx++) {
                        if (r[kx] > bv) {
                            bv = r[kx];
                            best = (oy * s + ky) * iw + ox * s + kx;
                        }
                    }
                }
                yp[oy * ow + ox] = bv;
                if (j->argmax)
                    j->argmax[pl * oh * ow + oy * ow + ox] = best;
            }
        }
    }
}

void nn_maxpool_forward(const struct nn_layer *l, const float *x, float *y, int32_t *argmax,
                        int batch)
{
    struct pool_job j = {l, x, y, argmax, NULL, (size_t)batch * l->ic};
    nn_parallel(maxpool_fwd_planes, &j, (int)((j.planes + POOL_PLANES - 1) / POOL_PLANES));
}

static void maxpool_bwd_planes(void *arg, int t, int worker)
{
    const struct pool_job *j = arg;
    const size_t ihw = (size_t)j->l->ih * j->l->iw, ohw = (size_t)j->l->oh * j->l->ow;
    const size_t p0 = (size_t)t * POOL_PLANES,
                 p1 = p0 + POOL_PLANES < j->planes ? p0 + POOL_PLANES : j->planes;
    memset(j->y + p0 * ihw, 0, sizeof(float) * (p1 - p0) * ihw);
    for (size_t pl = p0; pl < p1; pl++)
        for (size_t i = 0; i < ohw; i++)
            j->y[pl * ihw + j->argmax_in[pl * ohw + i]] += j->x[pl * ohw + i];
}

void nn_maxpool_backward(const struct nn_layer *l, const float *dy, const int32_t *argmax,
                         float *dx, int batch)
{
    struct pool_job j = {l, dy, dx, NULL, argmax, (size_t)batch * l->ic};
    nn_parallel(maxpool_bwd_planes, &j, (int)((j.planes + POOL_PLANES - 1) / POOL_PLANES));
}

void nn_avgpool_forward(const struct nn_layer *l, const float *x, float *y, int batch)
{
    const int k = l->k, s = l->stride, ih = l->ih, iw = l->iw, oh = l->oh, ow = l->ow;
    const size_t planes = (size_t)batch * l->ic;
    const float inv = 1.0f / (float)(k * k);
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * ih * iw;
        float *yp = y + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            for (int ox = 0; ox < ow; ox++) {
                float acc = 0.0f;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        acc += xp[(size_t)(oy * s + ky) * iw + ox * s + kx];
                yp[oy * ow + ox] = acc * inv;
            }
        }
    }
}

void nn_avgpool_backward(const struct nn_layer *l, const float *dy, float *dx, int batch)
{
    const int k = l->k, s = l->stride, ih = l->ih, iw = l->iw, oh = l->oh, ow = l->ow;
    const size_t planes = (size_t)batch * l->ic;
    const float inv = 1.0f / (float)(k * k);
    memset(dx, 0, sizeof(float) * planes * ih * iw);
    for (size_t pl = 0; pl < planes; pl++) {
        float *xp = dx + pl * ih * iw;
        const float *yp = dy + pl * oh * ow;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float g = yp[oy * ow + ox] * inv;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        xp[(size_t)(oy * s + ky) * iw + ox * s + kx] += g;
            }
    }
}

void nn_gap_forward(const struct nn_layer *l, const float *x, float *y, int batch)
{
    const size_t planes = (size_t)batch * l->ic, hw = (size_t)l->ih * l->iw;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *p = x + pl * hw;
        float acc = 0.0f;
        for (size_t i = 0; i < hw; i++)
            acc += p[i];
        y[pl] = acc / (float)hw;
    }
}

void nn_gap_backward(const struct nn_layer *l, const float *dy, float *dx, int batch)
{
    const size_t planes = (size_t)batch * l->ic, hw = (size_t)l->ih * l->iw;
    for (size_t pl = 0; pl < planes; pl++) {
        float g = dy[pl] / (float)hw;
        for (size_t i = 0; i < hw; i++)
            dx[pl * hw + i] = g;
    }
}

void nn_dense_forward(const struct nn_layer *l, const float *w, const float *b, const float *x,
                      float *y, int batch, int relu)
{
    const int in = l->ic * l->ih * l->iw, out = l->oc;
    if (batch == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, w, in, x, 1, 0.0f, y, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, out, in, 1.0f, x, in, w, in,
                    0.0f, y, out);
    }
    for (int n = 0; n < batch; n++) {
        float *r = y + (size_t)n * out;
        for (int o = 0; o < out; o++) {
            float v = r[o] + b[o];
            r[o] = (relu && v < 0.0f) ? 0.0f : v;
        }
    }
}

void nn_dense_backward(const struct nn_layer *l, const float *w, const float *x,
                       const float *dy, float *dw, float *db, float *dx, int batch)
{
    const int in = l->ic * l->ih * l->iw, out = l->oc;
    if (dw) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, batch, 1.0f, dy, out, x,
                    in, 1.0f, dw, in);
        for (int n = 0; n < batch; n++)
            for (int o = 0; o < out; o++)
                db[o] += dy[(size_t)n * out + o];
    }
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, in, out, 1.0f, dy, out, w,
                    in, 0.0f, dx, in);
}

void nn_dropout_forward(float p, const float *x, float *y, uint8_t *mask, size_t n,
                        uint64_t *rng)
{
    const float scale = 1.0f / (1.0f - p);
    const uint32_t thr = (uint32_t)((double)p * 4294967296.0 > 4294967295.0
                                        ? 4294967295.0
                                        : (double)p * 4294967296.0);
    for (size_t i = 0; i < n; i++) {
        uint32_t r = (uint32_t)(nn_xorshift(rng) >> 32);
        mask[i] = r >= thr;
        y[i] = mask[i] ? x[i] * scale : 0.0f;
    }
}

void nn_dropout_backward(float p, const float *dy, const uint8_t *mask, float *dx, size_t n)
{
    const float scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++)
        dx[i] = mask[i] ? dy[i] * scale : 0.0f;
}

void nn_softmax_forward(const float *x, float *y, int batch, int n)
{
    for (int b = 0; b < batch; b++) {
        const float *xr = x + (size_t)b * n;
        float *yr = y + (size_t)b * n;
        float mx = xr[0];
        for (int i = 1; i < n; i++)
            mx = xr[i] > mx ? xr[i] : mx;
        double sum = 0.0;
        for (int i = 0; i < n; i++) {
            yr[i] = expf(xr[i] - mx);
            sum += yr[i];
        }
        for (int i = 0; i < n; i++)
            yr[i] = (float)(yr[i] / sum);
    }
}

void nn_softmax_backward(const float *y, const float *dy, float *dx, int batch, int n)
{
    for (int b = 0; b < batch; b++) {
        const float *yr = y + (size_t)b * n, *gr = dy + (size_t)b * n;
        float *dr = dx + (size_t)b * n;
        double dot = 0.0;
        for (int i = 0; i < n; i++)
            dot += (double)yr[i] * gr[i];
        for (int i = 0; i < n; i++)
            dr[i] = yr[i] * (gr[i] - (float)dot);
    }
}

/*
 * Loss per sample i with label y: w[y] * sum_c -q_c log p_c, q = (1 - eps) onehot(y) + eps / C;
 * the mean divides by sum_i w[y_i] (PyTorch's weighted mean). dlogits_i = w[y] (p - q) / sum w.
 */
cxr_err nn_loss_xent(const float *logits, const int *labels, int batch, int n_classes,
                     const float *class_weights, float smoothing, float *ret_loss,
                     float *dlogits)
{
    double total = 0.0, wsum = 0.0;
    if (!logits || !labels || batch <= 0 || n_classes <= 1 || n_classes > NN_MAX_CLASSES ||
        smoothing < 0.0f || smoothing >= 1.0f)
        return CXR_EINVAL;
    for (int b = 0; b < batch; b++) {
        if (labels[b] < 0 || labels[b] >= n_classes)
            return CXR_EINVAL;
        wsum += class_weights ? class_weights[labels[b]] : 1.0;
    }
    if (wsum <= 0.0)
        return CXR_EINVAL;
    for (int b = 0; b < batch; b++) {
        const float *z = logits + (size_t)b * n_classes;
        float w = class_weights ? class_weights[labels[b]] : 1.0f;
        float mx = z[0];
        for (int c = 1; c < n_classes; c++)
            mx = z[c] > mx ? z[c] : mx;
        double se = exp((double)z[0] - mx);
        for (int c = 1; c < n_classes; c++)
            se += exp((double)z[c] - mx);
        double lse = log(se) + mx, l = 0.0;
        for (int c = 0; c < n_classes; c++) {
            double q = smoothing / n_classes + (c == labels[b] ? 1.0 - smoothing : 0.0);
            double logp = z[c] - lse;
            l -= q * logp;
            if (dlogits)
                dlogits[(size_t)b * n_classes + c] = (float)(w * (exp(logp) - q) / wsum);
        }
        total += w * l;
    }
    if (ret_loss)
        *ret_loss = (float)(total / wsum);
    return CXR_OK;
}
