/*
 * infer.c - per-thread inference contexts: fold, fuse, then predict without allocating.
 *
 * nn_ctx_new() copies the model's parameters and folds each batch normalisation that follows a
 * convolution into that convolution's weights and bias (w' = w * g / sqrt(v + eps),
 * b' = (b - mean) * g / sqrt(v + eps) + beta); a ReLU that follows a convolution or dense
 * layer (directly or after a folded BN) becomes its epilogue; a 2x2 max pool that follows a
 * Winograd convolution is taken in its output transform (each 2x2 output tile is one pooling
 * window); dropout and flatten vanish. The result is a short list of steps. Two ping-pong activation buffers and one im2col buffer
 * sized for max_batch are allocated once; nn_predict() only computes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn_int.h"

struct nn_step {
    const struct nn_layer *l;
    int relu;      /* fused ReLU epilogue */
    float *wpk;    /* direct convolution: the folded weights, packed once */
    int wino;      /* wpk holds Winograd-transformed weights (nn_wino_pack) */
    const struct nn_layer *pool; /* a 2x2 max pool fused into the Winograd output transform */
};

struct nn_ctx {
    const nn_model *m;
    int max_batch, n_steps;
    struct nn_step steps[NN_MAX_LAYERS];
    float *params; /* folded copy */
    float *a, *b, *col, *logits;
    struct nn_adapt adapt; /* batch 1: the pool or serial (nn_int.h) */
};

int nn_adapt_pick(struct nn_adapt *a)
{
    const int best = a->ms[1] > 0.0 && a->ms[1] < a->ms[0] ? 1 : 0;
    a->calls++;
    if (a->calls <= NN_ADAPT_FIRST) /* both modes in turn at first: the first calls are cold */
        return (int)(a->calls % 2u == 0u);
    return a->calls % NN_ADAPT_PROBE == 0 ? !best : best;
}

/* Fast down, slow up: a faster time is taken at once (one probe notices that the pool has
 * become fast again), a slower one moves the average by a quarter (one slow call, a page fault
 * or a preempted worker, does not flip the choice; a run of them does, within a few calls). */
void nn_adapt_note(struct nn_adapt *a, int mode, double ms)
{
    if (ms <= 0.0)
        ms = 1e-6;
    if (a->ms[mode] <= 0.0 || ms < a->ms[mode])
        a->ms[mode] = ms;
    else
        a->ms[mode] = 0.75 * a->ms[mode] + 0.25 * ms;
}

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

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

/* No layer after m->layers[i] becomes a step of its own (only dropout and flatten follow). */
static int last_step(const nn_model *m, int i)
{
    for (int k = i + 1; k < m->n_layers; k++)
        if (m->layers[k].type != NN_L_DROPOUT && m->layers[k].type != NN_L_FLATTEN)
            return 0;
    return 1;
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
            /* conv (+ BN + ReLU) + 2x2 max pool: the pool is taken in the output transform */
            if (l->type == NN_L_MAXPOOL && pl->type == NN_L_CONV && !prev->pool &&
                nn_conv_is_winograd(pl) && nn_wino_can_pool(pl, l) && !last_step(m, i)) {
                prev->pool = l;
                continue;
            }
        }
        s = &c->steps[c->n_steps++];
        s->l = l;
        s->relu = 0;
        s->wpk = NULL;
        s->pool = NULL;
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

static double step_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}


int nn_ctx_steps(const nn_ctx *c, const char **names, int max)
{
    for (int i = 0; i < c->n_steps && i < max; i++)
        names[i] = nn_layer_type_name(c->steps[i].l->type);
    return c->n_steps;
}

/* Runs the first n_steps steps on `batch` images and returns the last one's output (the logits
 * when n_steps is every step); step_s (may be NULL) gets each step's CPU time. With unpool_last,
 * a max pool fused into the last step run is left out, so its output is the convolution's own
 * (Grad-CAM's activation: the tail runs the pool itself). */
static const float *run_steps(nn_ctx *c, const float *input, int batch, int n_steps,
                              double *step_s, int unpool_last)
{
    const float *x = input;
    for (int i = 0; i < n_steps; i++) {
        const struct nn_step *s = &c->steps[i];
        const struct nn_layer *l = s->l;
        const float *P = c->params;
        const size_t n = nn_layer_in_len(l) * batch;
        const struct nn_layer *pool = (unpool_last && i == n_steps - 1) ? NULL : s->pool;
        /* the next step writes into the buffer that is not its input */
        float *y = x == c->a ? c->b : c->a;
        float *out = (i == c->n_steps - 1) ? c->logits : y, *res = out;
        const double t0 = step_s ? step_clock() : 0.0;
        switch (l->type) {
        case NN_L_CONV:
            if (s->wino && nn_conv_is_winograd(l)) {
                nn_wino_forward(l, s->wpk, P + l->b, x, out, batch, c->col, s->relu,
                                pool != NULL);
                break;
            }
            /* (weights packed for another kernel than the one now in use: repacked) */
            nn_conv_forward_packed(l, s->wino ? NULL : s->wpk, P + l->w, P + l->b, x, out, batch,
                                   c->col, s->relu);
            if (pool) { /* the fused pool, apart: into the buffer the input came from */
                res = x == c->a ? c->a : x == c->b ? c->b : (out == c->a ? c->b : c->a);
                nn_maxpool_forward(pool, out, res, NULL, batch);
            }
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
        if (step_s)
            step_s[i] = step_clock() - t0;
        x = res;
    }
    return x;
}

cxr_err nn_predict_timed(nn_ctx *c, const float *input, int batch, float *probs, double *step_s)
{
    if (!c || !input || !probs || batch < 1 || batch > c->max_batch)
        return CXR_EINVAL;
    if (batch == 1 && !step_s && nn_get_threads() > 1) {
        const int mode = nn_adapt_pick(&c->adapt);
        const double t0 = wall_ms();
        nn_serial(mode);
        (void)run_steps(c, input, batch, c->n_steps, step_s, 0);
        nn_serial(0);
        nn_adapt_note(&c->adapt, mode, wall_ms() - t0);
    } else {
        (void)run_steps(c, input, batch, c->n_steps, step_s, 0);
    }
    nn_softmax_forward(c->logits, probs, batch, c->m->n_classes);
    return CXR_OK;
}

cxr_err nn_predict(nn_ctx *c, const float *input, int batch, float *probs)
{
    return nn_predict_timed(c, input, batch, probs, NULL);
}

/* How many steps produce layer `last`'s output (their last step's output; before its fused pool
 * when that pool comes after `last`: *unpool); -1 when another later layer is folded or fused
 * into that step, or when it is the last step (its output is the logits). */
static int steps_through(const nn_ctx *c, int last, int *unpool)
{
    const struct nn_layer *L = c->m->layers;
    int n = 0;
    *unpool = 0;
    while (n < c->n_steps && c->steps[n].l - L <= last)
        n++;
    if (n == 0 || n == c->n_steps)
        return -1;
    for (long i = last + 1; i < c->steps[n].l - L; i++) {
        if (&L[i] == c->steps[n - 1].pool && c->steps[n - 1].pool - L > last) {
            *unpool = 1;
            continue;
        }
        if (L[i].type != NN_L_DROPOUT && L[i].type != NN_L_FLATTEN)
            return -1;
    }
    return n;
}

int nn_ctx_can_stop_after(const nn_ctx *c, int last)
{
    int unpool;
    return steps_through(c, last, &unpool) > 0;
}

const float *nn_ctx_forward_through(nn_ctx *c, const float *input, int last)
{
    int unpool;
    const int n = steps_through(c, last, &unpool);
    return n > 0 ? run_steps(c, input, 1, n, NULL, unpool) : NULL;
}

const float *nn_ctx_logits(const nn_ctx *c)
{
    return c->logits;
}
