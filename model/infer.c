/*
 * infer.c - per-thread inference contexts: fold, fuse, then predict without allocating.
 *
 * nn_ctx_new() copies the model's parameters and folds each batch normalisation that follows a
 * convolution into that convolution's weights and bias (w' = w * g / sqrt(v + eps),
 * b' = (b - mean) * g / sqrt(v + eps) + beta); a ReLU that follows a convolution or dense
 * layer (directly or after a folded BN) becomes its epilogue; dropout and flatten vanish. The
 * result is a short list of steps. Two ping-pong activation buffers and one im2col buffer
 * sized for max_batch are allocated once; nn_predict() only computes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn_int.h"

struct nn_step {
    const struct nn_layer *l;
    int relu;      /* fused ReLU epilogue */
    float *wpk;    /* direct convolution: the folded weights, packed once */
    int wino;      /* wpk holds Winograd-transformed weights (nn_wino_pack) */
};

struct nn_ctx {
    const nn_model *m;
    int max_batch, n_steps;
    struct nn_step steps[NN_MAX_LAYERS];
    float *params; /* folded copy */
    float *a, *b, *col, *logits;
};

void nn_ctx_free(nn_ctx *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_steps; i++)
        nn_free(c->steps[i].wpk);
    nn_free(c->params);
    nn_free(c->a);
    nn_free(c->b);
    nn_free(c->col);
    nn_free(c->logits);
    free(c);
}

cxr_err nn_ctx_new(const nn_model *m, int max_batch, nn_ctx **ret_ctx)
{
    nn_ctx *c;
    size_t maxact, maxcol = 1;
    if (!m || !ret_ctx || max_batch < 1 || max_batch > 4096)
        return CXR_EINVAL;
    c = calloc(1, sizeof(*c));
    if (!c)
        return CXR_ENOMEM;
    c->m = m;
    c->max_batch = max_batch;
    c->params = nn_alloc(sizeof(float) * (m->n_params ? m->n_params : 1));
    if (!c->params)
        goto oom;
    memcpy(c->params, m->params, sizeof(float) * m->n_params);
    maxact = nn_model_input_len(m);
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        struct nn_step *s;
        if (nn_layer_out_len(l) > maxact)
            maxact = nn_layer_out_len(l);
        if (l->type == NN_L_CONV && nn_conv_ws_len(l, max_batch) > maxcol)
            maxcol = nn_conv_ws_len(l, max_batch);
        if (l->type == NN_L_DROPOUT || l->type == NN_L_FLATTEN)
            continue;
        if (c->n_steps > 0) {
            struct nn_step *prev = &c->steps[c->n_steps - 1];
            const struct nn_layer *pl = prev->l;
            int fusable = (pl->type == NN_L_CONV || pl->type == NN_L_DENSE) && !prev->relu;
            if (l->type == NN_L_BN && pl->type == NN_L_CONV && !prev->relu) {
                float *P = c->params;
                long per = pl->nw / pl->oc;
                for (int o = 0; o < pl->oc; o++) {
                    float a = P[l->gamma + o] / sqrtf(P[l->var + o] + NN_BN_EPS);
                    for (long j = 0; j < per; j++)
                        P[pl->w + o * per + j] *= a;
                    P[pl->b + o] = (P[pl->b + o] - P[l->mean + o]) * a + P[l->beta + o];
                }
                continue;
            }
            if (l->type == NN_L_RELU && fusable) {
                prev->relu = 1;
                continue;
            }
        }
        s = &c->steps[c->n_steps++];
        s->l = l;
        s->relu = 0;
        s->wpk = NULL;
    }
    for (int i = 0; i < c->n_steps; i++) {
        struct nn_step *s = &c->steps[i];
        if (s->l->type != NN_L_CONV || !nn_conv_direct_shape(s->l))
            continue;
        s->wino = nn_conv_is_winograd(s->l);
        s->wpk = nn_alloc(sizeof(float) * (s->wino ? nn_wino_pack_len(s->l)
                                                   : nn_conv_pack_len(s->l)));
        if (!s->wpk)
            goto oom;
        if (s->wino)
            nn_wino_pack(s->l, c->params + s->l->w, s->wpk);
        else
            nn_conv_pack(s->l, c->params + s->l->w, s->wpk);
    }
    c->a = nn_alloc(sizeof(float) * maxact * max_batch);
    c->b = nn_alloc(sizeof(float) * maxact * max_batch);
    c->col = nn_alloc(sizeof(float) * maxcol);
    c->logits = nn_alloc(sizeof(float) * (size_t)m->n_classes * max_batch);
    if (!c->a || !c->b || !c->col || !c->logits)
        goto oom;
    *ret_ctx = c;
    return CXR_OK;
oom:
    nn_ctx_free(c);
    return CXR_ENOMEM;
}

/* Runs the first n_steps steps on `batch` images; returns the last step's output (the logits
 * when n_steps is every step). */
static const float *run_steps(nn_ctx *c, const float *input, int batch, int n_steps)
{
    const float *x = input;
    float *y = c->a, *spare = c->b;
    for (int i = 0; i < n_steps; i++) {
        const struct nn_step *s = &c->steps[i];
        const struct nn_layer *l = s->l;
        const float *P = c->params;
        const size_t n = nn_layer_in_len(l) * batch;
        float *out = (i == c->n_steps - 1) ? c->logits : y;
        switch (l->type) {
        case NN_L_CONV:
            if (s->wino && nn_conv_is_winograd(l))
                nn_wino_forward(l, s->wpk, P + l->b, x, out, batch, c->col, s->relu);
            else /* (weights packed for another kernel than the one now in use: repacked) */
                nn_conv_forward_packed(l, s->wino ? NULL : s->wpk, P + l->w, P + l->b, x, out,
                                       batch, c->col, s->relu);
            break;
        case NN_L_BN:
            nn_bn_forward_infer(l, P + l->gamma, P + l->beta, P + l->mean, P + l->var, x, out,
                                batch);
            break;
        case NN_L_RELU:
            nn_relu_forward(x, out, n);
            break;
        case NN_L_MAXPOOL:
            nn_maxpool_forward(l, x, out, NULL, batch);
            break;
        case NN_L_AVGPOOL:
            nn_avgpool_forward(l, x, out, batch);
            break;
        case NN_L_GAP:
            nn_gap_forward(l, x, out, batch);
            break;
        case NN_L_DENSE:
            nn_dense_forward(l, P + l->w, P + l->b, x, out, batch, s->relu);
            break;
        case NN_L_FLATTEN:
        case NN_L_DROPOUT:
            break;
        }
        x = out;
        /* the next step writes into the buffer that is not its input */
        {
            float *t = y;
            y = spare;
            spare = t;
        }
    }
    return x;
}

cxr_err nn_predict(nn_ctx *c, const float *input, int batch, float *probs)
{
    if (!c || !input || !probs || batch < 1 || batch > c->max_batch)
        return CXR_EINVAL;
    (void)run_steps(c, input, batch, c->n_steps);
    nn_softmax_forward(c->logits, probs, batch, c->m->n_classes);
    return CXR_OK;
}

/* The steps that end at or before layer `last`, or -1 when layer last's output is not the
 * output of a step (a later layer was folded or fused into it) or is the logits. */
static int steps_through(const nn_ctx *c, int last)
{
    const struct nn_layer *L = c->m->layers;
    int n = 0;
    while (n < c->n_steps && c->steps[n].l - L <= last)
        n++;
    if (n == 0 || n == c->n_steps)
        return -1;
    for (long i = last + 1; i < c->steps[n].l - L; i++)
        if (L[i].type != NN_L_DROPOUT && L[i].type != NN_L_FLATTEN)
            return -1;
    return n;
}

int nn_ctx_can_stop_after(const nn_ctx *c, int last)
{
    return steps_through(c, last) > 0;
}

const float *nn_ctx_forward_through(nn_ctx *c, const float *input, int last)
{
    const int n = steps_through(c, last);
    return n > 0 ? run_steps(c, input, 1, n) : NULL;
}

const float *nn_ctx_logits(const nn_ctx *c)
{
    return c->logits;
}
