/*
 * net.c - the model object (build, accessors, metadata, deterministic fills) and training
 * (forward in training mode, backward, Adam / SGD with momentum and weight decay).
 *
 * DESIGN: one arena (model->params) holds every parameter in layer order; the training state
 * mirrors it with a gradient arena and two optimiser-moment arenas of the same layout, so the
 * optimiser is one loop per parameter tensor. Activations are kept per layer for the backward
 * pass; ReLU, dropout and flatten work in place on the previous layer's buffer (their backward
 * needs only their output or their mask), which roughly halves training memory.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "nn_int.h"

nn_model *nn_model_alloc(void)
{
    return calloc(1, sizeof(struct nn_model));
}

cxr_err nn_model_alloc_params(nn_model *m)
{
    nn_free(m->params);
    m->params = nn_alloc(sizeof(float) * (m->n_params ? m->n_params : 1));
    return m->params ? CXR_OK : CXR_ENOMEM;
}

void nn_model_free(nn_model *m)
{
    if (!m)
        return;
    nn_free(m->params);
    free(m);
}

static uint32_t fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

/* u in [-1, 1), exactly representable: the same value in numpy float32 (model/golden/). */
static float hashed_unit(uint32_t i, uint32_t stream)
{
    uint32_t h = fmix32(i * 0x9e3779b1u + stream * 0x85ebca77u + 1u);
    return (float)(h >> 8) * (1.0f / 8388608.0f) - 1.0f;
}

void nn_fill_hashed_input(float *x, size_t n, uint32_t stream)
{
    for (size_t i = 0; i < n; i++)
        x[i] = hashed_unit((uint32_t)i, stream);
}

static void fill_tensor(float *p, long n, uint32_t t, float scale, float offset)
{
    for (long i = 0; i < n; i++)
        p[i] = offset + scale * hashed_unit((uint32_t)i, t);
}

void nn_model_fill_hashed(nn_model *m)
{
    uint32_t t = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        float *P = m->params;
        if (l->type == NN_L_CONV || l->type == NN_L_DENSE) {
            long fan_in = l->nw / l->oc;
            fill_tensor(P + l->w, l->nw, t++, (float)sqrt(6.0 / (double)fan_in), 0.0f);
            fill_tensor(P + l->b, l->oc, t++, 0.1f, 0.0f);
        } else if (l->type == NN_L_BN) {
            fill_tensor(P + l->gamma, l->ic, t++, 0.2f, 1.0f);
            fill_tensor(P + l->beta, l->ic, t++, 0.1f, 0.0f);
            fill_tensor(P + l->mean, l->ic, t++, 0.1f, 0.0f);
            fill_tensor(P + l->var, l->ic, t++, 0.5f, 1.0f);
        }
    }
}

static void init_params(nn_model *m, uint32_t seed)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ seed;
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        float *P = m->params;
        if (l->type == NN_L_CONV || l->type == NN_L_DENSE) {
            float a = (float)sqrt(6.0 * l->oc / (double)l->nw);
            for (long j = 0; j < l->nw; j++)
                P[l->w + j] = a * ((float)(nn_xorshift(&rng) >> 40) / 8388608.0f - 1.0f);
            memset(P + l->b, 0, sizeof(float) * l->oc);
        } else if (l->type == NN_L_BN) {
            for (int c = 0; c < l->ic; c++) {
                P[l->gamma + c] = 1.0f;
                P[l->beta + c] = 0.0f;
                P[l->mean + c] = 0.0f;
                P[l->var + c] = 1.0f;
            }
        }
    }
}

cxr_err nn_model_build(const char *arch, const struct nn_input_spec *spec, int n_classes,
                       const char *const *class_names, uint32_t seed, nn_model **ret_model,
                       char *errbuf, size_t errlen)
{
    nn_model *m = NULL;
    char *filetext = NULL;
    const char *text;
    cxr_err err;

    if (!arch || !ret_model || n_classes < 2 || n_classes > NN_MAX_CLASSES || !class_names) {
        nn_errf(errbuf, errlen, "model build: invalid arguments (classes must be 2..%d)",
                NN_MAX_CLASSES);
        return CXR_EINVAL;
    }
    text = nn_arch_text(arch);
    if (!text && strchr(arch, '\n'))
        text = arch; /* the architecture text itself */
    if (!text) {
        size_t len;
        err = cxr_file_read(arch, 1 << 20, &filetext, &len);
        if (err) {
            nn_errf(errbuf, errlen, "architecture '%s': not a built-in name and not readable "
                    "(%s)", arch, cxr_strerror(err));
            return err;
        }
        text = filetext;
    }
    m = nn_model_alloc();
    if (!m) {
        err = CXR_ENOMEM;
        goto out;
    }
    m->n_classes = n_classes;
    for (int i = 0; i < n_classes; i++) {
        if (!class_names[i] || !class_names[i][0] ||
            strlen(class_names[i]) >= NN_NAME_MAX) {
            nn_errf(errbuf, errlen, "class name %d: empty or longer than %d bytes", i,
                    NN_NAME_MAX - 1);
            err = CXR_EINVAL;
            goto out;
        }
        (void)snprintf(m->classes[i], NN_NAME_MAX, "%s", class_names[i]);
    }
    err = nn_arch_parse(text, n_classes, m, errbuf, errlen);
    if (err)
        goto out;
    (void)snprintf(m->spec.preprocessing, NN_NAME_MAX, "%s", NN_PREPROC_CXR_V1);
    m->spec.mean = 0.0f;
    m->spec.std = 1.0f;
    if (spec) {
        if (spec->size > 0)
            m->spec.size = spec->size;
        if (spec->channels > 0)
            m->spec.channels = spec->channels;
        if (spec->preprocessing[0])
            (void)snprintf(m->spec.preprocessing, NN_NAME_MAX, "%s", spec->preprocessing);
        if (spec->std > 0.0f) {
            m->spec.mean = spec->mean;
            m->spec.std = spec->std;
        }
    }
    err = nn_arch_resolve(m, errbuf, errlen);
    if (err)
        goto out;
    err = nn_model_alloc_params(m);
    if (err)
        goto out;
    init_params(m, seed);
    *ret_model = m;
    m = NULL;
out:
    free(filetext);
    nn_model_free(m);
    return err;
}

int nn_model_num_classes(const nn_model *m)
{
    return m->n_classes;
}

const char *nn_model_class_name(const nn_model *m, int i)
{
    return (i >= 0 && i < m->n_classes) ? m->classes[i] : NULL;
}

const struct nn_input_spec *nn_model_input_spec(const nn_model *m)
{
    return &m->spec;
}

void nn_model_set_normalisation(nn_model *m, float mean, float std)
{
    m->spec.mean = mean;
    m->spec.std = std;
}

const char *nn_model_digest(const nn_model *m)
{
    return m->digest;
}

size_t nn_model_param_count(const nn_model *m)
{
    return m->n_trainable;
}

double nn_model_flops(const nn_model *m)
{
    double f = 0.0;
    for (int i = 0; i < m->n_layers; i++)
        f += nn_layer_flops(&m->layers[i]);
    return f;
}

size_t nn_model_input_len(const nn_model *m)
{
    return (size_t)m->spec.channels * m->spec.size * m->spec.size;
}

cxr_err nn_model_set_meta(nn_model *m, const char *key, const char *value)
{
    int i;
    if (!key || !value || !key[0] || strlen(key) >= NN_NAME_MAX ||
        strlen(value) >= NN_META_VALUE_MAX)
        return CXR_EINVAL;
    for (i = 0; i < m->n_meta; i++)
        if (!strcmp(m->meta[i].key, key))
            break;
    if (i == m->n_meta) {
        if (m->n_meta >= NN_MAX_META)
            return CXR_ELIMIT;
        m->n_meta++;
    }
    (void)snprintf(m->meta[i].key, NN_NAME_MAX, "%s", key);
    (void)snprintf(m->meta[i].value, NN_META_VALUE_MAX, "%s", value);
    return CXR_OK;
}

bool nn_model_del_meta(nn_model *m, const char *key)
{
    for (int i = 0; i < m->n_meta; i++) {
        if (strcmp(m->meta[i].key, key) != 0)
            continue;
        memmove(&m->meta[i], &m->meta[i + 1], (size_t)(m->n_meta - i - 1) * sizeof(m->meta[0]));
        m->n_meta--;
        return true;
    }
    return false;
}

const char *nn_model_meta(const nn_model *m, const char *key)
{
    for (int i = 0; i < m->n_meta; i++)
        if (!strcmp(m->meta[i].key, key))
            return m->meta[i].value;
    return NULL;
}

int nn_model_meta_count(const nn_model *m)
{
    return m->n_meta;
}

bool nn_model_meta_at(const nn_model *m, int i, const char **ret_key, const char **ret_value)
{
    if (i < 0 || i >= m->n_meta)
        return false;
    *ret_key = m->meta[i].key;
    *ret_value = m->meta[i].value;
    return true;
}

static size_t append(char *buf, size_t len, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static size_t append(char *buf, size_t len, size_t pos, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(pos < len ? buf + pos : NULL, pos < len ? len - pos : 0, fmt, ap);
    va_end(ap);
    return pos + (n > 0 ? (size_t)n : 0);
}

size_t nn_model_arch_text(const nn_model *m, char *buf, size_t len)
{
    size_t pos = 0;
    if (buf && len)
        buf[0] = '\0';
    pos = append(buf, len, pos, "input %d %d\n", m->spec.size, m->spec.channels);
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        const char *n = nn_layer_type_name(l->type);
        switch (l->type) {
        case NN_L_CONV:
            pos = append(buf, len, pos, "conv %d %d %d %d\n", l->out, l->k, l->stride, l->pad);
            break;
        case NN_L_MAXPOOL:
        case NN_L_AVGPOOL:
            pos = append(buf, len, pos, "%s %d %d\n", n, l->k, l->stride);
            break;
        case NN_L_DENSE:
            if (i == m->n_layers - 1)
                pos = append(buf, len, pos, "dense classes\n");
            else
                pos = append(buf, len, pos, "dense %d\n", l->out);
            break;
        case NN_L_DROPOUT:
            pos = append(buf, len, pos, "dropout %g\n", (double)l->p);
            break;
        default:
            pos = append(buf, len, pos, "%s\n", n);
        }
    }
    return pos;
}

size_t nn_model_describe(const nn_model *m, char *buf, size_t len)
{
    size_t pos = 0;
    if (buf && len)
        buf[0] = '\0';
    pos = append(buf, len, pos, "  %-3s %-8s %-14s %-16s %12s %14s\n", "#", "layer", "args",
                 "output (CxHxW)", "params", "MFLOPs");
    pos = append(buf, len, pos, "  %-3s %-8s %-14s %5dx%4dx%-6d %12s %14s\n", "-", "input", "",
                 m->spec.channels, m->spec.size, m->spec.size, "", "");
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        char args[32] = "";
        long np = 0;
        switch (l->type) {
        case NN_L_CONV:
            (void)snprintf(args, sizeof(args), "%dx%d s%d p%d", l->k, l->k, l->stride, l->pad);
            np = l->nw + l->oc;
            break;
        case NN_L_MAXPOOL:
        case NN_L_AVGPOOL:
            (void)snprintf(args, sizeof(args), "%dx%d s%d", l->k, l->k, l->stride);
            break;
        case NN_L_DENSE:
            np = l->nw + l->oc;
            break;
        case NN_L_BN:
            np = 2L * l->ic;
            break;
        case NN_L_DROPOUT:
            (void)snprintf(args, sizeof(args), "p=%g", (double)l->p);
            break;
        default:
            break;
        }
        pos = append(buf, len, pos, "  %-3d %-8s %-14s %5dx%4dx%-6d %12ld %14.2f\n", i,
                     nn_layer_type_name(l->type), args, l->oc, l->oh, l->ow, np,
                     nn_layer_flops(l) / 1e6);
    }
    return pos;
}

/* ---------------- training ---------------- */

struct nn_train {
    nn_model *m;
    int max_batch, batch, n_frozen;
    struct nn_train_opts o;
    float *grad, *adam_m, *adam_v; /* same layout as m->params */
    float *x0;                     /* copy of the input */
    float *act[NN_MAX_LAYERS];     /* output of each layer (aliases for in-place layers) */
    float *own[NN_MAX_LAYERS];     /* what this layer allocated (NULL for in-place) */
    float *save_mean[NN_MAX_LAYERS], *save_istd[NN_MAX_LAYERS];
    int32_t *argmax[NN_MAX_LAYERS];
    uint8_t *mask[NN_MAX_LAYERS];
    float *g1, *g2, *col;
    float class_w[NN_MAX_CLASSES];
    int has_class_w;
    float *dlogits;
    long step;
    uint64_t rng;
};

void nn_train_opts_default(struct nn_train_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->optim = NN_OPT_ADAM;
    o->lr = 1e-3f;
    o->momentum = 0.9f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = 1e-4f;
    o->label_smoothing = 0.0f;
    o->seed = 1;
}

void nn_train_free(nn_train *t)
{
    if (!t)
        return;
    for (int i = 0; i < NN_MAX_LAYERS; i++) {
        nn_free(t->own[i]);
        nn_free(t->save_mean[i]);
        nn_free(t->save_istd[i]);
        nn_free(t->argmax[i]);
        nn_free(t->mask[i]);
    }
    nn_free(t->grad);
    nn_free(t->adam_m);
    nn_free(t->adam_v);
    nn_free(t->x0);
    nn_free(t->g1);
    nn_free(t->g2);
    nn_free(t->col);
    nn_free(t->dlogits);
    free(t);
}

static int is_inplace(enum nn_layer_type t)
{
    return t == NN_L_RELU || t == NN_L_DROPOUT || t == NN_L_FLATTEN;
}

cxr_err nn_train_new(nn_model *m, int max_batch, const struct nn_train_opts *opts,
                     nn_train **ret_train)
{
    nn_train *t;
    size_t maxact, maxcol = 1, in_len;
    const size_t fsz = sizeof(float);

    if (!m || max_batch < 1 || max_batch > 4096 || !ret_train)
        return CXR_EINVAL;
    t = calloc(1, sizeof(*t));
    if (!t)
        return CXR_ENOMEM;
    t->m = m;
    t->max_batch = max_batch;
    if (opts)
        t->o = *opts;
    else
        nn_train_opts_default(&t->o);
    t->rng = 0x2545f4914f6cdd1dull ^ ((uint64_t)t->o.seed << 1);
    in_len = nn_model_input_len(m);
    maxact = in_len;
    t->grad = nn_alloc(fsz * m->n_params);
    t->adam_m = nn_alloc(fsz * m->n_params);
    t->adam_v = nn_alloc(fsz * m->n_params);
    t->x0 = nn_alloc(fsz * in_len * max_batch);
    if (!t->grad || !t->adam_m || !t->adam_v || !t->x0)
        goto oom;
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        size_t out = nn_layer_out_len(l) * max_batch;
        float *prev = i ? t->act[i - 1] : t->x0;
        if (nn_layer_out_len(l) > maxact)
            maxact = nn_layer_out_len(l);
        if (is_inplace(l->type)) {
            t->act[i] = prev;
        } else {
            t->own[i] = nn_alloc(fsz * out);
            if (!t->own[i])
                goto oom;
            t->act[i] = t->own[i];
        }
        if (l->type == NN_L_CONV && nn_conv_ws_len(l, max_batch) > maxcol)
            maxcol = nn_conv_ws_len(l, max_batch);
        if (l->type == NN_L_BN) {
            t->save_mean[i] = nn_alloc(fsz * l->ic);
            t->save_istd[i] = nn_alloc(fsz * l->ic);
            if (!t->save_mean[i] || !t->save_istd[i])
                goto oom;
        }
        if (l->type == NN_L_MAXPOOL) {
            t->argmax[i] = nn_alloc(sizeof(int32_t) * out);
            if (!t->argmax[i])
                goto oom;
        }
        if (l->type == NN_L_DROPOUT) {
            t->mask[i] = nn_alloc(nn_layer_in_len(l) * max_batch);
            if (!t->mask[i])
                goto oom;
        }
    }
    t->g1 = nn_alloc(fsz * maxact * max_batch);
    t->g2 = nn_alloc(fsz * maxact * max_batch);
    t->col = nn_alloc(fsz * maxcol);
    t->dlogits = nn_alloc(fsz * (size_t)m->n_classes * max_batch);
    if (!t->g1 || !t->g2 || !t->col || !t->dlogits)
        goto oom;
    *ret_train = t;
    return CXR_OK;
oom:
    nn_train_free(t);
    return CXR_ENOMEM;
}

void nn_train_set_lr(nn_train *t, float lr)
{
    t->o.lr = lr;
}

void nn_train_freeze(nn_train *t, int n)
{
    t->n_frozen = n < 0 ? 0 : (n > t->m->n_layers ? t->m->n_layers : n);
}

cxr_err nn_train_set_class_weights(nn_train *t, const float *w)
{
    if (!w) {
        t->has_class_w = 0;
        return CXR_OK;
    }
    for (int c = 0; c < t->m->n_classes; c++)
        if (!(w[c] >= 0.0f) || !isfinite(w[c]))
            return CXR_EINVAL;
    memcpy(t->class_w, w, sizeof(float) * t->m->n_classes);
    t->has_class_w = 1;
    return CXR_OK;
}

/* Layer i is a batch norm in training mode followed by a ReLU (in place on its output): the two
 * run as one pass forward and one backward. */
static int bn_relu_fused(const nn_train *t, int i)
{
    const nn_model *m = t->m;
    return i >= t->n_frozen && i + 1 < m->n_layers && m->layers[i].type == NN_L_BN &&
           m->layers[i + 1].type == NN_L_RELU;
}

cxr_err nn_train_forward(nn_train *t, const float *input, int batch, const float **ret_logits)
{
    nn_model *m = t->m;
    if (!input || batch < 1 || batch > t->max_batch)
        return CXR_EINVAL;
    t->batch = batch;
    memcpy(t->x0, input, sizeof(float) * nn_model_input_len(m) * batch);
    for (int i = 0; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        const float *x = i ? t->act[i - 1] : t->x0;
        float *y = t->act[i], *P = m->params;
        size_t n = nn_layer_in_len(l) * batch;
        switch (l->type) {
        case NN_L_CONV:
            nn_conv_forward(l, P + l->w, P + l->b, x, y, batch, t->col, 0);
            break;
        case NN_L_BN:
            if (i < t->n_frozen)
                nn_bn_forward_infer(l, P + l->gamma, P + l->beta, P + l->mean, P + l->var, x, y,
                                    batch);
            else
                nn_bn_forward_train(l, P + l->gamma, P + l->beta, P + l->mean, P + l->var, x, y,
                                    batch, t->save_mean[i], t->save_istd[i], 0.1f,
                                    bn_relu_fused(t, i));
            break;
        case NN_L_RELU:
            if (!(i > 0 && bn_relu_fused(t, i - 1)))
                nn_relu_forward(x, y, n);
            break;
        case NN_L_MAXPOOL:
            nn_maxpool_forward(l, x, y, t->argmax[i], batch);
            break;
        case NN_L_AVGPOOL:
            nn_avgpool_forward(l, x, y, batch);
            break;
        case NN_L_GAP:
            nn_gap_forward(l, x, y, batch);
            break;
        case NN_L_FLATTEN:
            break;
        case NN_L_DENSE:
            nn_dense_forward(l, P + l->w, P + l->b, x, y, batch, 0);
            break;
        case NN_L_DROPOUT:
            if (l->p > 0.0f)
                nn_dropout_forward(l->p, x, y, t->mask[i], n, &t->rng);
            else
                memset(t->mask[i], 1, n);
            break;
        }
    }
    if (ret_logits)
        *ret_logits = t->act[m->n_layers - 1];
    return CXR_OK;
}

cxr_err nn_train_backward(nn_train *t, const float *dlogits)
{
    nn_model *m = t->m;
    const int batch = t->batch;
    float *dy = t->g1, *dx = t->g2;
    if (!dlogits || batch < 1)
        return CXR_EINVAL;
    memset(t->grad, 0, sizeof(float) * m->n_params);
    memcpy(dy, dlogits, sizeof(float) * m->n_classes * batch);
    for (int i = m->n_layers - 1; i >= t->n_frozen; i--) {
        const struct nn_layer *l = &m->layers[i];
        const float *x = i ? t->act[i - 1] : t->x0;
        const float *P = m->params;
        float *G = t->grad;
        const int need_dx = i > t->n_frozen;
        const size_t n = nn_layer_in_len(l) * batch;
        float *tmp;
        switch (l->type) {
        case NN_L_CONV:
            nn_conv_backward(l, P + l->w, x, dy, G + l->w, G + l->b, need_dx ? dx : NULL, batch,
                             t->col);
            break;
        case NN_L_BN:
            nn_bn_backward(l, P + l->gamma, x, dy, t->save_mean[i], t->save_istd[i],
                           G + l->gamma, G + l->beta, need_dx ? dx : NULL, batch,
                           bn_relu_fused(t, i) ? t->act[i + 1] : NULL);
            break;
        case NN_L_RELU:
            if (bn_relu_fused(t, i - 1))
                continue; /* done by the batch norm before it; dy passes on unchanged */
            /* in place: act[i] is the output */
            if (need_dx)
                nn_relu_backward(t->act[i], dy, dx, n);
            break;
        case NN_L_MAXPOOL:
            if (need_dx)
                nn_maxpool_backward(l, dy, t->argmax[i], dx, batch);
            break;
        case NN_L_AVGPOOL:
            if (need_dx)
                nn_avgpool_backward(l, dy, dx, batch);
            break;
        case NN_L_GAP:
            if (need_dx)
                nn_gap_backward(l, dy, dx, batch);
            break;
        case NN_L_FLATTEN:
            if (need_dx)
                memcpy(dx, dy, sizeof(float) * n);
            break;
        case NN_L_DENSE:
            nn_dense_backward(l, P + l->w, x, dy, G + l->w, G + l->b, need_dx ? dx : NULL,
                              batch);
            break;
        case NN_L_DROPOUT:
            if (need_dx)
                nn_dropout_backward(l->p, dy, t->mask[i], dx, n);
            break;
        }
        tmp = dy;
        dy = dx;
        dx = tmp;
    }
    return CXR_OK;
}

static void update(nn_train *t, long off, long n, int decay, float bc1, float bc2)
{
    float *w = t->m->params + off, *g = t->grad + off, *mm = t->adam_m + off,
          *vv = t->adam_v + off;
    const struct nn_train_opts *o = &t->o;
    const float wd = decay ? o->weight_decay : 0.0f;
    if (o->optim == NN_OPT_SGD) {
        for (long i = 0; i < n; i++) {
            float gi = g[i] + wd * w[i];
            mm[i] = o->momentum * mm[i] + gi;
            w[i] -= o->lr * mm[i];
        }
        return;
    }
    for (long i = 0; i < n; i++) {
        float gi = g[i] + wd * w[i];
        mm[i] = o->beta1 * mm[i] + (1.0f - o->beta1) * gi;
        vv[i] = o->beta2 * vv[i] + (1.0f - o->beta2) * gi * gi;
        w[i] -= o->lr * (mm[i] / bc1) / (sqrtf(vv[i] / bc2) + o->eps);
    }
}

void nn_train_step(nn_train *t)
{
    nn_model *m = t->m;
    float bc1, bc2;
    t->step++;
    bc1 = 1.0f - powf(t->o.beta1, (float)t->step);
    bc2 = 1.0f - powf(t->o.beta2, (float)t->step);
    for (int i = t->n_frozen; i < m->n_layers; i++) {
        const struct nn_layer *l = &m->layers[i];
        if (l->type == NN_L_CONV || l->type == NN_L_DENSE) {
            update(t, l->w, l->nw, 1, bc1, bc2);
            update(t, l->b, l->oc, 0, bc1, bc2);
        } else if (l->type == NN_L_BN) {
            update(t, l->gamma, l->ic, 0, bc1, bc2);
            update(t, l->beta, l->ic, 0, bc1, bc2);
        }
    }
}

cxr_err nn_train_batch(nn_train *t, const float *input, const int *labels, int batch,
                       float *ret_loss)
{
    const float *logits;
    cxr_err err = nn_train_forward(t, input, batch, &logits);
    if (err)
        return err;
    err = nn_loss_xent(logits, labels, batch, t->m->n_classes, t->has_class_w ? t->class_w : NULL,
                       t->o.label_smoothing, ret_loss, t->dlogits);
    if (err)
        return err;
    err = nn_train_backward(t, t->dlogits);
    if (err)
        return err;
    nn_train_step(t);
    return CXR_OK;
}

const float *nn_train_grad(const nn_train *t)
{
    return t->grad;
}
