/*
 * test_nn_layers.c - finite-difference gradient checks for every layer's backward pass, for
 * softmax, for the loss, and for a whole small network through the training API.
 *
 * Objective: L = sum(y * r) with fixed random r, so dL/dy = r; the analytic gradient from
 * backward(dy = r) is compared with central differences (double-precision accumulation of L).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nn_int.h"
#include "nn_test_kernel.h"

static uint64_t g_rng = 88172645463325252ull;

static float frand(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) / 8388608.0 - 1.0);
}

static float *rand_buf(size_t n, float scale)
{
    float *p = nn_alloc(sizeof(float) * n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}

/* Keeps values away from 0 so ReLU kinks are not crossed by the perturbation. */
static void push_from_zero(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fabsf(p[i]) < 0.05f)
            p[i] = p[i] < 0 ? p[i] - 0.05f : p[i] + 0.05f;
}

typedef double (*objective_fn)(void *ctx);

/* Checks analytic[] against central differences of obj() w.r.t. a[] (up to 64 indices). */
static double check_grad(const char *what, float *a, const float *analytic, size_t n,
                         objective_fn obj, void *ctx, float h)
{
    double worst = 0.0;
    size_t step = n > 64 ? n / 64 : 1;
    for (size_t i = 0; i < n; i += step) {
        float keep = a[i];
        double num = 0.0, err = 1e30;
        /* A perturbation that crosses a ReLU or max-pool kink spoils the difference: retry
         * with a smaller step before calling it a failure. */
        for (float hh = h; hh >= h / 16 && err > 5e-3; hh /= 4) {
            a[i] = keep + hh;
            double lp = obj(ctx);
            a[i] = keep - hh;
            double lm = obj(ctx);
            a[i] = keep;
            num = (lp - lm) / (2.0 * hh);
            err = fabs(num - analytic[i]) / fmax(1.0, fabs(num));
        }
        if (err > worst)
            worst = err;
        if (err > 5e-3) {
            fprintf(stderr, "%s[%zu]: analytic %g numeric %g\n", what, i, (double)analytic[i],
                    num);
            fail();
        }
    }
    printf("  %-22s worst relative error %.2e over %zu entries\n", what, worst,
           (n + step - 1) / step);
    return worst;
}

/* max |a - b| over max |b|: the error relative to the reference's scale. */
static double max_rel(const float *a, const float *b, size_t n)
{
    double e = 0.0, s = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        e = d > e ? d : e;
        s = fabs((double)b[i]) > s ? fabs((double)b[i]) : s;
    }
    printf("  max difference %.3g of scale %.3g\n", e, s);
    return e / s;
}

static double dot(const float *y, const float *r, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)y[i] * r[i];
    return s;
}

static struct nn_model *model_from(const char *text, int classes)
{
    struct nn_model *m = nn_model_alloc();
    char err[256];
    assert_non_null(m);
    m->n_classes = classes;
    assert_int_equal(nn_arch_parse(text, classes, m, err, sizeof(err)), CXR_OK);
    assert_int_equal(nn_arch_resolve(m, err, sizeof(err)), CXR_OK);
    return m;
}

/* ---- conv ---- */
struct conv_ctx {
    const struct nn_layer *l;
    float *x, *w, *b, *y, *r, *col;
    int batch;
};

static double conv_obj(void *p)
{
    struct conv_ctx *c = p;
    nn_conv_forward(c->l, c->w, c->b, c->x, c->y, c->batch, c->col, 0);
    return dot(c->y, c->r, nn_layer_out_len(c->l) * c->batch);
}

static void check_conv(const char *arch)
{
    struct nn_model *m = model_from(arch, 2);
    const struct nn_layer *l = &m->layers[0];
    struct conv_ctx c = {.l = l, .batch = 2};
    size_t in = nn_layer_in_len(l) * 2, out = nn_layer_out_len(l) * 2;
    float *dw, *db, *dx;
    printf("conv %dx%d s%d p%d %d->%d on %dx%d\n", l->k, l->k, l->stride, l->pad, l->ic, l->oc,
           l->ih, l->iw);
    c.x = rand_buf(in, 1.0f);
    c.w = rand_buf((size_t)l->nw, 0.5f);
    c.b = rand_buf((size_t)l->oc, 0.5f);
    c.y = rand_buf(out, 0.0f);
    c.r = rand_buf(out, 1.0f);
    c.col = rand_buf(nn_conv_ws_len(l, 2) > nn_conv_col_len(l) ? nn_conv_ws_len(l, 2)
                                                               : nn_conv_col_len(l),
                     0.0f);
    dw = rand_buf((size_t)l->nw, 0.0f);
    db = rand_buf((size_t)l->oc, 0.0f);
    dx = rand_buf(in, 0.0f);
    nn_conv_backward(l, c.w, c.x, c.r, dw, db, dx, 2, c.col);
    check_grad("conv dx", c.x, dx, in, conv_obj, &c, 1e-2f);
    check_grad("conv dw", c.w, dw, (size_t)l->nw, conv_obj, &c, 1e-2f);
    check_grad("conv db", c.b, db, (size_t)l->oc, conv_obj, &c, 1e-2f);
    nn_free(c.x), nn_free(c.w), nn_free(c.b), nn_free(c.y), nn_free(c.r), nn_free(c.col);
    nn_free(dw), nn_free(db), nn_free(dx);
    nn_model_free(m);
}

static void conv_cases(void)
{
    check_conv("input 7 3\nconv 4 3 1 1\ndense classes\n");
    check_conv("input 9 2\nconv 5 3 2 1\ndense classes\n");
    check_conv("input 6 4\nconv 3 1 1 0\ndense classes\n");
    check_conv("input 11 2\nconv 3 5 2 2\ndense classes\n");
    check_conv("input 8 1\nconv 2 2 2 0\ndense classes\n");
    /* 3x3 stride 1: the direct path unless the kernel is im2col (output channels not a
     * multiple of its 4-channel tile; no, one and two pixels of padding) */
    check_conv("input 6 2\nconv 11 3 1 0\ndense classes\n");
    check_conv("input 5 9\nconv 3 3 1 2\ndense classes\n");
    check_conv("input 9 5\nconv 10 3 1 1\ndense classes\n");
    /* 3x3 stride 1 with 8+ channels in and out: Winograd forward and input gradient */
    check_conv("input 7 8\nconv 9 3 1 1\ndense classes\n");
    check_conv("input 6 9\nconv 8 3 1 0\ndense classes\n");
    /* 3x3 stride 2 (the direct path's four phases): even and odd sizes, pad 0 and 2 */
    check_conv("input 10 3\nconv 9 3 2 0\ndense classes\n");
    check_conv("input 7 2\nconv 4 3 2 2\ndense classes\n");
}

static void test_conv(void **state)
{
    const enum nn_kernel k = nn_kernel();
    printf("kernel %s:\n", nn_kernel_name());
    conv_cases();
    if (k != NN_KERNEL_IM2COL) {
        assert_int_equal(nn_kernel_set(NN_KERNEL_IM2COL), CXR_OK);
        printf("im2col path only:\n");
        conv_cases();
        assert_int_equal(nn_kernel_set(k), CXR_OK);
    }
}

/* The kernel under test (a direct path) and the im2col path give the same forward and
 * backward results on layers large enough to cross their tiles (several 384-position blocks,
 * 4-channel tiles plus a rest). */
static void direct_vs_im2col(const char *arch)
{
    struct nn_model *m = model_from(arch, 2);
    const struct nn_layer *l = &m->layers[0];
    const int batch = 3;
    size_t in = nn_layer_in_len(l) * batch, out = nn_layer_out_len(l) * batch;
    size_t ws;
    float *x = rand_buf(in, 1.0f), *w = rand_buf((size_t)l->nw, 0.5f);
    float *b = rand_buf((size_t)l->oc, 0.5f);
    float *dy = rand_buf(out, 1.0f), *col;
    const enum nn_kernel k = nn_kernel();
    ws = nn_conv_ws_len(l, batch); /* enough for either path */
    col = rand_buf(ws, 0.0f);
    float *y[2], *dw[2], *db[2], *dx[2];
    if (k == NN_KERNEL_IM2COL) {
        printf("skipped: the kernel is im2col, so there is no direct path to compare\n");
        goto out;
    }
    for (int d = 0; d < 2; d++) {
        assert_int_equal(nn_kernel_set(d ? k : NN_KERNEL_IM2COL), CXR_OK);
        y[d] = rand_buf(out, 0.0f), dw[d] = rand_buf((size_t)l->nw, 0.0f);
        db[d] = rand_buf((size_t)l->oc, 0.0f), dx[d] = rand_buf(in, 0.0f);
        nn_conv_forward(l, w, b, x, y[d], batch, col, 1);
        nn_conv_backward(l, w, x, dy, dw[d], db[d], dx[d], batch, col);
    }
    assert_int_equal(nn_kernel_set(k), CXR_OK);
    assert_true(max_rel(y[1], y[0], out) < 1e-5);
    assert_true(max_rel(dx[1], dx[0], in) < 1e-5);
    assert_true(max_rel(dw[1], dw[0], (size_t)l->nw) < 1e-5);
    assert_true(max_rel(db[1], db[0], (size_t)l->oc) < 1e-5);
    for (int d = 0; d < 2; d++)
        nn_free(y[d]), nn_free(dw[d]), nn_free(db[d]), nn_free(dx[d]);
out:
    nn_free(x), nn_free(w), nn_free(b), nn_free(dy), nn_free(col);
    nn_model_free(m);
}

static void test_conv_direct_vs_im2col(void **state)
{
    direct_vs_im2col("input 23 13\nconv 19 3 1 1\ndense classes\n");
    direct_vs_im2col("input 17 6\nconv 10 3 1 0\ndense classes\n");
    direct_vs_im2col("input 19 12\nconv 17 3 1 1\ndense classes\n"); /* Winograd */
    direct_vs_im2col("input 16 9\nconv 8 3 1 2\ndense classes\n");
    /* stride 2: the forward runs on the four input phases (odd and even sizes, pad 0 and 1) */
    direct_vs_im2col("input 25 5\nconv 12 3 2 1\ndense classes\n");
    direct_vs_im2col("input 24 3\nconv 9 3 2 0\ndense classes\n");
    direct_vs_im2col("input 30 1\nconv 16 3 2 1\ndense classes\n");
    /* one input channel, stride 2: the first-layer kernel (pad 0 and 2, odd sizes, bands of
     * rows not a multiple of 8) */
    direct_vs_im2col("input 37 1\nconv 7 3 2 0\ndense classes\n");
    direct_vs_im2col("input 20 1\nconv 5 3 2 2\ndense classes\n");
    direct_vs_im2col("input 21 4\nconv 11 3 2 2\ndense classes\n");
    /* rows longer than one 32-float vector pair plus a rest (the phase split's main loop) */
    direct_vs_im2col("input 70 2\nconv 5 3 2 1\ndense classes\n");
    direct_vs_im2col("input 67 3\nconv 6 3 2 0\ndense classes\n");
}

/* Inference's Winograd F(2x2, 3x3) against the im2col convolution: odd and even
 * sizes (a last tile half outside), pad 0, 1 and 2, output channels not a multiple of 4,
 * bias and ReLU; 1e-4 of the output's scale (the transforms round differently). */
static void winograd_vs_direct(const char *arch)
{
    struct nn_model *m = model_from(arch, 2);
    const struct nn_layer *l = &m->layers[0];
    /* with a 2x2 max pool after the convolution: fused into the output transform (inference's
     * conv + pool), against the convolution followed by nn_maxpool_forward */
    const struct nn_layer *pl = m->layers[1].type == NN_L_MAXPOOL ? &m->layers[1] : NULL;
    const int batch = pl ? 2 : 3;
    size_t in = nn_layer_in_len(l) * batch, out = nn_layer_out_len(l) * batch;
    size_t res = pl ? nn_layer_out_len(pl) * batch : out;
    float *x = rand_buf(in, 1.0f), *w = rand_buf((size_t)l->nw, 0.5f);
    float *b = rand_buf((size_t)l->oc, 0.5f), *col = rand_buf(nn_conv_ws_len(l, batch), 0.0f);
    float *y0 = rand_buf(out, 0.0f), *r0 = rand_buf(res, 0.0f), *r1 = rand_buf(res, 0.0f);
    float *wpk = rand_buf(nn_wino_pack_len(l), 0.0f);
    double scale = 0.0, worst = 0.0;
    const enum nn_kernel k = nn_kernel();
    assert_true(nn_conv_is_winograd(l));
    assert_true(!pl || nn_wino_can_pool(l, pl));
    /* the reference on im2col + sgemm (nn_conv_forward itself runs Winograd on this kernel) */
    assert_int_equal(nn_kernel_set(NN_KERNEL_IM2COL), CXR_OK);
    nn_conv_forward(l, w, b, x, y0, batch, col, 1);
    assert_int_equal(nn_kernel_set(k), CXR_OK);
    if (pl)
        nn_maxpool_forward(pl, y0, r0, NULL, batch);
    else
        memcpy(r0, y0, sizeof(float) * out);
    nn_wino_pack(l, w, wpk);
    nn_wino_forward(l, wpk, b, x, r1, batch, col, 1, pl != NULL);
    for (size_t i = 0; i < res; i++)
        scale = fmax(scale, fabs((double)r0[i]));
    for (size_t i = 0; i < res; i++)
        worst = fmax(worst, fabs((double)r1[i] - r0[i]) / scale);
    printf("winograd%s %dx%d p%d %d->%d: worst difference %.2e of the scale\n",
           pl ? " + max pool" : "", l->ih, l->iw, l->pad, l->ic, l->oc, worst);
    assert_true(worst < 1e-4);
    nn_free(x), nn_free(w), nn_free(b), nn_free(col), nn_free(y0), nn_free(r0), nn_free(r1);
    nn_free(wpk);
    nn_model_free(m);
}

static void test_conv_winograd(void **state)
{
    if (!nn_kernel_winograd()) {
        printf("skipped: kernel %s does not use Winograd\n", nn_kernel_name());
        return;
    }
    winograd_vs_direct("input 15 9\nconv 10 3 1 1\ndense classes\n");
    winograd_vs_direct("input 14 8\nconv 12 3 1 0\ndense classes\n");
    winograd_vs_direct("input 9 8\nconv 9 3 1 2\ndense classes\n");
    winograd_vs_direct("input 30 16\nconv 21 3 1 1\ndense classes\n");
    /* tile rows of 8 and of 17 tiles (whole vectors past the row's end), the pool fused */
    winograd_vs_direct("input 16 9\nconv 10 3 1 1\nmaxpool 2 2\ndense classes\n");
    winograd_vs_direct("input 34 12\nconv 13 3 1 1\nmaxpool 2 2\ndense classes\n");
    {
        struct nn_model *m = model_from("input 14 9\nconv 10 3 1 1\nmaxpool 3 2\ndense classes\n", 2);
        assert_false(nn_wino_can_pool(&m->layers[0], &m->layers[1])); /* overlapping windows */
        nn_model_free(m);
        m = model_from("input 15 9\nconv 10 3 1 1\nmaxpool 2 2\ndense classes\n", 2);
        assert_false(nn_wino_can_pool(&m->layers[0], &m->layers[1])); /* odd sides */
        nn_model_free(m);
    }
}

/* ---- batch norm (training mode) ---- */
struct bn_ctx {
    const struct nn_layer *l;
    float *x, *g, *b, *y, *r, *sm, *si;
    int batch, relu;
};

static double bn_obj(void *p)
{
    struct bn_ctx *c = p;
    nn_bn_forward_train(c->l, c->g, c->b, NULL, NULL, c->x, c->y, c->batch, c->sm, c->si, 0.1f,
                        c->relu);
    return dot(c->y, c->r, nn_layer_out_len(c->l) * c->batch);
}

/* relu: batch norm with the ReLU after it fused (forward clamps, backward masks by the output) */
static void check_bn(int relu)
{
    struct nn_model *m = model_from("input 4 3\nbn\ndense classes\n", 2);
    const struct nn_layer *l = &m->layers[0];
    struct bn_ctx c = {.l = l, .batch = 3, .relu = relu};
    size_t n = nn_layer_in_len(l) * 3;
    float *dg, *dbeta, *dx;
    c.x = rand_buf(n, 2.0f);
    c.g = rand_buf(3, 1.0f);
    c.b = rand_buf(3, 1.0f);
    c.y = rand_buf(n, 0.0f);
    c.r = rand_buf(n, 1.0f);
    c.sm = rand_buf(3, 0.0f);
    c.si = rand_buf(3, 0.0f);
    dg = rand_buf(3, 0.0f);
    dbeta = rand_buf(3, 0.0f);
    dx = rand_buf(n, 0.0f);
    (void)bn_obj(&c);
    nn_bn_backward(l, c.g, c.x, c.r, c.sm, c.si, dg, dbeta, dx, 3, c.relu ? c.y : NULL);
    printf("batch norm (training statistics)%s\n", relu ? " + fused ReLU" : "");
    check_grad("bn dx", c.x, dx, n, bn_obj, &c, 1e-2f);
    check_grad("bn dgamma", c.g, dg, 3, bn_obj, &c, 1e-2f);
    check_grad("bn dbeta", c.b, dbeta, 3, bn_obj, &c, 1e-2f);
    nn_free(c.x), nn_free(c.g), nn_free(c.b), nn_free(c.y), nn_free(c.r), nn_free(c.sm);
    nn_free(c.si), nn_free(dg), nn_free(dbeta), nn_free(dx);
    nn_model_free(m);
}

static void test_bn(void **state)
{
    check_bn(0);
    check_bn(1);
}

/* ---- parameter-free layers: relu, pools, gap, dropout, softmax ---- */
struct pf_ctx {
    const struct nn_layer *l;
    int kind, batch;
    float *x, *y, *r;
    int32_t *am;
    uint8_t *mask;
    size_t n_in, n_out;
};

static void pf_forward(struct pf_ctx *c)
{
    uint64_t rng = 12345;
    switch (c->kind) {
    case 0: nn_relu_forward(c->x, c->y, c->n_in); break;
    case 1: nn_maxpool_forward(c->l, c->x, c->y, c->am, c->batch); break;
    case 2: nn_avgpool_forward(c->l, c->x, c->y, c->batch); break;
    case 3: nn_gap_forward(c->l, c->x, c->y, c->batch); break;
    case 4: nn_dropout_forward(0.3f, c->x, c->y, c->mask, c->n_in, &rng); break;
    case 5: nn_softmax_forward(c->x, c->y, c->batch, (int)(c->n_in / c->batch)); break;
    default: fail();
    }
}

static double pf_obj(void *p)
{
    struct pf_ctx *c = p;
    pf_forward(c);
    return dot(c->y, c->r, c->n_out);
}

static void check_pf(const char *name, const char *arch, int kind)
{
    struct nn_model *m = model_from(arch, 2);
    const struct nn_layer *l = &m->layers[0];
    struct pf_ctx c = {.l = l, .kind = kind, .batch = 2};
    float *dx;
    c.n_in = nn_layer_in_len(l) * 2;
    c.n_out = nn_layer_out_len(l) * 2;
    if (kind == 5)
        c.n_out = c.n_in;
    c.x = rand_buf(c.n_in, 1.0f);
    push_from_zero(c.x, c.n_in);
    if (kind == 1) /* distinct, well-spaced values: no near-ties inside a pooling window */
        for (size_t i = 0; i < c.n_in; i++)
            c.x[i] = (float)((i * 37) % c.n_in) * 0.01f - 1.0f;
    c.y = rand_buf(c.n_out, 0.0f);
    c.r = rand_buf(c.n_out, 1.0f);
    c.am = nn_alloc(sizeof(int32_t) * c.n_out);
    c.mask = nn_alloc(c.n_in);
    dx = rand_buf(c.n_in, 0.0f);
    pf_forward(&c);
    switch (kind) {
    case 0: nn_relu_backward(c.y, c.r, dx, c.n_in); break;
    case 1: nn_maxpool_backward(l, c.r, c.am, dx, 2); break;
    case 2: nn_avgpool_backward(l, c.r, dx, 2); break;
    case 3: nn_gap_backward(l, c.r, dx, 2); break;
    case 4: nn_dropout_backward(0.3f, c.r, c.mask, dx, c.n_in); break;
    case 5: nn_softmax_backward(c.y, c.r, dx, 2, (int)(c.n_in / 2)); break;
    default: fail();
    }
    check_grad(name, c.x, dx, c.n_in, pf_obj, &c, 1e-3f);
    nn_free(c.x), nn_free(c.y), nn_free(c.r), nn_free(c.am), nn_free(c.mask), nn_free(dx);
    nn_model_free(m);
}

static void test_param_free(void **state)
{
    check_pf("relu dx", "input 5 3\nrelu\ndense classes\n", 0);
    check_pf("maxpool 2/2 dx", "input 6 2\nmaxpool 2 2\ndense classes\n", 1);
    check_pf("maxpool 3/2 dx", "input 7 2\nmaxpool 3 2\ndense classes\n", 1);
    check_pf("avgpool 2/2 dx", "input 6 2\navgpool 2 2\ndense classes\n", 2);
    check_pf("avgpool 3/1 dx", "input 5 2\navgpool 3 1\ndense classes\n", 2);
    check_pf("gap dx", "input 5 3\ngap\ndense classes\n", 3);
    check_pf("dropout dx", "input 5 3\ndropout 0.3\ndense classes\n", 4);
    check_pf("softmax dx", "input 1 7\nflatten\ndense classes\n", 5);
}

/* ---- dense ---- */
struct dense_ctx {
    const struct nn_layer *l;
    float *x, *w, *b, *y, *r;
    int batch;
};

static double dense_obj(void *p)
{
    struct dense_ctx *c = p;
    nn_dense_forward(c->l, c->w, c->b, c->x, c->y, c->batch, 0);
    return dot(c->y, c->r, (size_t)c->l->oc * c->batch);
}

static void test_dense(void **state)
{
    for (int batch = 1; batch <= 3; batch += 2) {
        struct nn_model *m = model_from("input 3 2\ndense 5\ndense classes\n", 2);
        const struct nn_layer *l = &m->layers[0];
        struct dense_ctx c = {.l = l, .batch = batch};
        size_t in = nn_layer_in_len(l) * batch;
        float *dw, *db, *dx;
        c.x = rand_buf(in, 1.0f);
        c.w = rand_buf((size_t)l->nw, 0.5f);
        c.b = rand_buf((size_t)l->oc, 0.5f);
        c.y = rand_buf((size_t)l->oc * batch, 0.0f);
        c.r = rand_buf((size_t)l->oc * batch, 1.0f);
        dw = rand_buf((size_t)l->nw, 0.0f);
        db = rand_buf((size_t)l->oc, 0.0f);
        dx = rand_buf(in, 0.0f);
        nn_dense_backward(l, c.w, c.x, c.r, dw, db, dx, batch);
        printf("dense 18->5, batch %d\n", batch);
        check_grad("dense dx", c.x, dx, in, dense_obj, &c, 1e-2f);
        check_grad("dense dw", c.w, dw, (size_t)l->nw, dense_obj, &c, 1e-2f);
        check_grad("dense db", c.b, db, (size_t)l->oc, dense_obj, &c, 1e-2f);
        nn_free(c.x), nn_free(c.w), nn_free(c.b), nn_free(c.y), nn_free(c.r);
        nn_free(dw), nn_free(db), nn_free(dx);
        nn_model_free(m);
    }
}

/* ---- loss ---- */
struct loss_ctx {
    float *z;
    int *labels;
    float *w;
    float smooth;
};

static double loss_obj(void *p)
{
    struct loss_ctx *c = p;
    float loss;
    assert_int_equal(nn_loss_xent(c->z, c->labels, 3, 4, c->w, c->smooth, &loss, NULL), CXR_OK);
    return loss;
}

static void test_loss(void **state)
{
    int labels[3] = {0, 3, 1};
    float w[4] = {2.0f, 0.5f, 1.0f, 1.5f}, dz[12], loss;
    struct loss_ctx c = {.labels = labels};
    c.z = rand_buf(12, 2.0f);
    for (int v = 0; v < 4; v++) {
        c.w = (v & 1) ? w : NULL;
        c.smooth = (v & 2) ? 0.1f : 0.0f;
        assert_int_equal(nn_loss_xent(c.z, labels, 3, 4, c.w, c.smooth, &loss, dz), CXR_OK);
        printf("loss weights=%s smoothing=%.1f: %.4f\n", c.w ? "yes" : "no", (double)c.smooth,
               (double)loss);
        check_grad("xent dlogits", c.z, dz, 12, loss_obj, &c, 1e-3f);
    }
    /* uniform logits: the loss is log(C) whatever the weights and smoothing */
    memset(c.z, 0, sizeof(float) * 12);
    assert_int_equal(nn_loss_xent(c.z, labels, 3, 4, w, 0.1f, &loss, dz), CXR_OK);
    assert_float_equal(loss, logf(4.0f), 1e-5);
    labels[1] = 4;
    assert_int_equal(nn_loss_xent(c.z, labels, 3, 4, w, 0.1f, &loss, dz), CXR_EINVAL);
    nn_free(c.z);
}

/* ---- a whole network through the training API (chaining, in-place layers) ---- */
struct net_ctx {
    nn_train *t;
    float *x;
    int *labels;
};

static double net_obj(void *p)
{
    struct net_ctx *c = p;
    const float *logits;
    float loss;
    assert_int_equal(nn_train_forward(c->t, c->x, 3, &logits), CXR_OK);
    assert_int_equal(nn_loss_xent(logits, c->labels, 3, 3, NULL, 0.05f, &loss, NULL), CXR_OK);
    return loss;
}

static void test_network(void **state)
{
    static const char *const names[] = {"a", "b", "c"};
    char path[] = "/tmp/nn_gc_XXXXXX", err[256];
    nn_model *m = NULL;
    nn_train *t = NULL;
    struct nn_train_opts o;
    int labels[3] = {2, 0, 1};
    const float *logits;
    float loss, dz[9], *g;
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs("input 8 2\nconv 4 3 1 1\nbn\nrelu\nmaxpool 2 2\nconv 6 3 2 1\nrelu\navgpool 2 1\n"
          "conv 5 1 1 0\nbn\nrelu\ngap\ndropout 0\ndense 6\nrelu\ndense classes\n",
          f);
    (void)fclose(f);
    assert_int_equal(nn_model_build(path, NULL, 3, names, 7, &m, err, sizeof(err)), CXR_OK);
    (void)remove(path);
    nn_train_opts_default(&o);
    assert_int_equal(nn_train_new(m, 3, &o, &t), CXR_OK);
    struct net_ctx c = {.t = t, .labels = labels};
    c.x = rand_buf(nn_model_input_len(m) * 3, 1.0f);
    assert_int_equal(nn_train_forward(t, c.x, 3, &logits), CXR_OK);
    assert_int_equal(nn_loss_xent(logits, labels, 3, 3, NULL, 0.05f, &loss, dz), CXR_OK);
    assert_int_equal(nn_train_backward(t, dz), CXR_OK);
    g = rand_buf(m->n_params, 0.0f);
    memcpy(g, nn_train_grad(t), sizeof(float) * m->n_params);
    printf("whole network (conv-bn-relu-maxpool-conv-relu-avgpool-1x1conv-bn-relu-gap-"
           "dropout-dense-relu-dense)\n");
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        char what[40];
        if (l->type == NN_L_CONV || l->type == NN_L_DENSE) {
            (void)snprintf(what, sizeof(what), "net layer %d %s w", i, nn_layer_type_name(l->type));
            check_grad(what, m->params + l->w, g + l->w, (size_t)l->nw, net_obj, &c, 2e-3f);
        } else if (l->type == NN_L_BN) {
            (void)snprintf(what, sizeof(what), "net layer %d bn gamma", i);
            check_grad(what, m->params + l->gamma, g + l->gamma, (size_t)l->ic, net_obj, &c,
                       1e-2f);
        }
    }
    nn_free(g);
    nn_free(c.x);
    nn_train_free(t);
    nn_model_free(m);
}

/* ---- the engine's thread pool ---- */
struct count_job {
    int *hits;
};

static void count_task(void *arg, int task, int worker)
{
    struct count_job *j = arg;
    assert_true(worker >= 0 && worker < nn_get_threads());
    j->hits[task]++; /* tasks are disjoint: no two threads touch one slot */
}

/* Many short loops back to back (the pattern of a training step), task counts from 1 to 97:
 * every task runs exactly once per loop, whichever thread takes it. */
static void test_pool(void **state)
{
    int hits[97];
    for (int threads = 1; threads <= 3; threads++) {
        assert_int_equal(nn_set_threads(threads), CXR_OK);
        for (int loop = 0; loop < 3000; loop++) {
            struct count_job j = {hits};
            int n = 1 + loop % 97;
            memset(hits, 0, sizeof(hits));
            nn_parallel(count_task, &j, n);
            for (int i = 0; i < n; i++)
                assert_int_equal(hits[i], 1);
            for (int i = n; i < 97; i++)
                assert_int_equal(hits[i], 0);
        }
    }
    assert_int_equal(nn_set_threads(0), CXR_EINVAL);
    assert_int_equal(nn_set_threads(NN_MAX_THREADS + 1), CXR_EINVAL);
    assert_int_equal(nn_set_threads(1), CXR_OK);
}

int main(void)
{
    nn_test_kernel_or_skip();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv),         cmocka_unit_test(test_conv_direct_vs_im2col),
        cmocka_unit_test(test_conv_winograd), cmocka_unit_test(test_bn),
        cmocka_unit_test(test_param_free),   cmocka_unit_test(test_dense),
        cmocka_unit_test(test_loss),         cmocka_unit_test(test_network),
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
