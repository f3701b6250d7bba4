/*
 * gradcam.c - Grad-CAM over the model's last convolutional layer (see model.h).
 *
 * DESIGN: the map needs A, the activation after the last convolution (and the batch norm and
 * ReLU that follow it), and dlogit_c/dA. The forward up to A is the inference context's own
 * (nn_ctx_forward_through: folded batch norm, fused ReLU, packed or Winograd weights, on
 * whichever kernel runs), so the scores are those nn_predict gives. The layers after A (the
 * "tail": pooling, flatten, dropout, dense, ReLU, batch norm) are run here one by one in
 * inference mode, keeping each output (and the max-pool positions) for the backward pass,
 * which is the engine's own layer backward code from a one-hot dlogits down to dA; batch norm
 * uses its running statistics (nn_bn_backward_infer) and dropout is the identity. Every buffer
 * is allocated in nn_gradcam_new; nn_gradcam_run only computes. A context serves one thread.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn_int.h"

struct nn_gradcam {
    const nn_model *m;
    nn_ctx *ctx;
    int a;                          /* layer whose output is A */
    int ac, ah, aw;                 /* A's shape */
    float *act[NN_MAX_LAYERS];      /* outputs of the tail layers a+1 .. n_layers-1 */
    int32_t *argmax[NN_MAX_LAYERS]; /* max-pool positions of the tail */
    float *g1, *g2;                 /* ping-pong gradients, the largest tail activation */
    float *alpha;                   /* ac weights */
};

void nn_gradcam_free(nn_gradcam *g)
{
    if (!g)
        return;
    for (int i = 0; i < NN_MAX_LAYERS; i++) {
        nn_free(g->act[i]);
        nn_free(g->argmax[i]);
    }
    nn_free(g->g1);
    nn_free(g->g2);
    nn_free(g->alpha);
    nn_ctx_free(g->ctx);
    free(g);
}

cxr_err nn_gradcam_new(const nn_model *m, nn_gradcam **ret, char *errbuf, size_t errlen)
{
    nn_gradcam *g;
    int last_conv = -1;
    size_t maxlen;
    cxr_err err;

    if (!m || !ret) {
        nn_errf(errbuf, errlen, "grad-cam: invalid arguments");
        return CXR_EINVAL;
    }
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i].type == NN_L_CONV)
            last_conv = i;
    if (last_conv < 0) {
        nn_errf(errbuf, errlen, "grad-cam: the model has no convolutional layer");
        return CXR_EMODEL;
    }
    g = calloc(1, sizeof(*g));
    if (!g) {
        nn_errf(errbuf, errlen, "grad-cam: out of memory");
        return CXR_ENOMEM;
    }
    g->m = m;
    /* A: after the batch norm and ReLU of the last convolution (dropout, the identity in
     * inference, is passed over too, so that A is a step's output in the inference context) */
    g->a = last_conv;
    while (g->a + 1 < m->n_layers &&
           (m->layers[g->a + 1].type == NN_L_BN || m->layers[g->a + 1].type == NN_L_RELU ||
            m->layers[g->a + 1].type == NN_L_DROPOUT))
        g->a++;
    g->ac = m->layers[g->a].oc;
    g->ah = m->layers[g->a].oh;
    g->aw = m->layers[g->a].ow;
    err = nn_ctx_new(m, 1, &g->ctx);
    if (err) {
        nn_errf(errbuf, errlen, "grad-cam: inference context: %s", cxr_strerror(err));
        goto fail;
    }
    if (!nn_ctx_can_stop_after(g->ctx, g->a)) {
        nn_errf(errbuf, errlen, "grad-cam: layer %d (%s, after the last convolution) is merged "
                "with a later layer in inference; this architecture is not supported", g->a,
                nn_layer_type_name(m->layers[g->a].type));
        err = CXR_EMODEL;
        goto fail;
    }
    maxlen = nn_layer_out_len(&m->layers[g->a]);
    for (int i = g->a + 1; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        if (nn_layer_out_len(l) > maxlen)
            maxlen = nn_layer_out_len(l);
        g->act[i] = nn_alloc(sizeof(float) * nn_layer_out_len(l));
        if (!g->act[i])
            goto oom;
        if (l->type == NN_L_MAXPOOL) {
            g->argmax[i] = nn_alloc(sizeof(int32_t) * nn_layer_out_len(l));
            if (!g->argmax[i])
                goto oom;
        }
    }
    g->g1 = nn_alloc(sizeof(float) * maxlen);
    g->g2 = nn_alloc(sizeof(float) * maxlen);
    g->alpha = nn_alloc(sizeof(float) * (size_t)g->ac);
    if (!g->g1 || !g->g2 || !g->alpha)
        goto oom;
    *ret = g;
    return CXR_OK;
oom:
    nn_errf(errbuf, errlen, "grad-cam: out of memory");
    err = CXR_ENOMEM;
fail:
    nn_gradcam_free(g);
    return err;
}

void nn_gradcam_dims(const nn_gradcam *g, int *ret_h, int *ret_w)
{
    if (ret_h)
        *ret_h = g->ah;
    if (ret_w)
        *ret_w = g->aw;
}

/* The tail forward, inference mode, batch 1; x is A. Returns the logits. */
static const float *tail_forward(nn_gradcam *g, const float *x)
{
    const nn_model *m = g->m;
    const float *P = m->params;
    for (int i = g->a + 1; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        const size_t n = nn_layer_in_len(l);
        float *y = g->act[i];
        switch (l->type) {
        case NN_L_CONV: /* not after the last convolution */
            break;
        case NN_L_BN:
            nn_bn_forward_infer(l, P + l->gamma, P + l->beta, P + l->mean, P + l->var, x, y, 1);
            break;
        case NN_L_RELU:
            nn_relu_forward(x, y, n);
            break;
        case NN_L_MAXPOOL:
            nn_maxpool_forward(l, x, y, g->argmax[i], 1);
            break;
        case NN_L_AVGPOOL:
            nn_avgpool_forward(l, x, y, 1);
            break;
        case NN_L_GAP:
            nn_gap_forward(l, x, y, 1);
            break;
        case NN_L_DENSE:
            nn_dense_forward(l, P + l->w, P + l->b, x, y, 1, 0);
            break;
        case NN_L_FLATTEN:
        case NN_L_DROPOUT: /* the identity in inference */
            memcpy(y, x, sizeof(float) * n);
            break;
        }
        x = y;
    }
    return x;
}

/* The tail backward from dlogits (in g->g1) to dA; returns the buffer holding dA. */
static const float *tail_backward(nn_gradcam *g, const float *A)
{
    const nn_model *m = g->m;
    const float *P = m->params;
    float *dy = g->g1, *dx = g->g2;
    for (int i = m->n_layers - 1; i > g->a; i--) {
        const struct nn_layer *l = &m->layers[i];
        const float *x = i - 1 > g->a ? g->act[i - 1] : A;
        const size_t n = nn_layer_in_len(l);
        float *t;
        switch (l->type) {
        case NN_L_CONV:
            break;
        case NN_L_BN:
            nn_bn_backward_infer(l, P + l->gamma, P + l->var, dy, dx, 1);
            break;
        case NN_L_RELU:
            nn_relu_backward(g->act[i], dy, dx, n);
            break;
        case NN_L_MAXPOOL:
            nn_maxpool_backward(l, dy, g->argmax[i], dx, 1);
            break;
        case NN_L_AVGPOOL:
            nn_avgpool_backward(l, dy, dx, 1);
            break;
        case NN_L_GAP:
            nn_gap_backward(l, dy, dx, 1);
            break;
        case NN_L_DENSE:
            nn_dense_backward(l, P + l->w, x, dy, NULL, NULL, dx, 1);
            break;
        case NN_L_FLATTEN:
        case NN_L_DROPOUT:
            memcpy(dx, dy, sizeof(float) * n);
            break;
        }
        t = dy;
        dy = dx;
        dx = t;
    }
    return dy;
}

cxr_err nn_gradcam_run(nn_gradcam *g, const float *input, int cls, float *probs, float *cam,
                       int *ret_cls)
{
    const nn_model *m;
    const float *A, *logits, *dA;
    size_t hw;
    float mx = 0.0f;

    if (!g || !input || !cam)
        return CXR_EINVAL;
    m = g->m;
    hw = (size_t)g->ah * (size_t)g->aw;
    if (cls < -1 || cls >= m->n_classes)
        return CXR_EINVAL;
    A = nn_ctx_forward_through(g->ctx, input, g->a);
    if (!A)
        return CXR_EINVAL;
    logits = tail_forward(g, A);
    if (cls < 0) {
        cls = 0;
        for (int c = 1; c < m->n_classes; c++)
            if (logits[c] > logits[cls])
                cls = c;
    }
    if (probs)
        nn_softmax_forward(logits, probs, 1, m->n_classes);
    memset(g->g1, 0, sizeof(float) * (size_t)m->n_classes);
    g->g1[cls] = 1.0f;
    dA = tail_backward(g, A);
    for (int k = 0; k < g->ac; k++) {
        double s = 0.0;
        for (size_t i = 0; i < hw; i++)
            s += dA[(size_t)k * hw + i];
        g->alpha[k] = (float)(s / (double)hw);
    }
    memset(cam, 0, sizeof(float) * hw);
    for (int k = 0; k < g->ac; k++) {
        const float ak = g->alpha[k], *Ak = A + (size_t)k * hw;
        for (size_t i = 0; i < hw; i++)
            cam[i] += ak * Ak[i];
    }
    for (size_t i = 0; i < hw; i++) {
        cam[i] = cam[i] > 0.0f ? cam[i] : 0.0f; /* (NaN too becomes 0) */
        if (cam[i] > mx)
            mx = cam[i];
    }
    if (mx > 0.0f && isfinite(mx)) {
        for (size_t i = 0; i < hw; i++) /* (a division: the maximum becomes exactly 1) */
            cam[i] = fminf(cam[i] / mx, 1.0f);
    } else {
        memset(cam, 0, sizeof(float) * hw);
    }
    if (ret_cls)
        *ret_cls = cls;
    return CXR_OK;
}
