/*
 * arch.c - architectures as data: the built-in ones, the text format, shape inference.
 *
 * Text format, one layer per line ('#' starts a comment):
 *   input SIZE CHANNELS          image size and planes (the input spec may override them)
 *   conv OUT K STRIDE PAD        convolution KxK with bias
 *   bn | relu | gap | flatten    batch normalisation, ReLU, global average pooling, flatten
 *   maxpool K STRIDE | avgpool K STRIDE
 *   dense OUT|classes            fully connected; `classes` = the number of classes
 *   dropout P                    training only
 * The last layer must be `dense classes`; softmax is applied to its output.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "archs_builtin.h"
#include "nn_int.h"

/* Limits that keep a hostile file from asking for unbounded memory. */
#define NN_MAX_SIZE 2048
#define NN_MAX_CHANNELS 16
#define NN_MAX_WIDTH 4096
#define NN_MAX_PARAMS (64L * 1024 * 1024)
#define NN_MAX_ACT (64L * 1024 * 1024)

void nn_errf(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!errbuf || errlen == 0)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

void *nn_alloc(size_t bytes)
{
    size_t sz = (bytes + 63) & ~(size_t)63;
    void *p;
    if (bytes == 0)
        sz = 64;
    if (sz < bytes)
        return NULL;
    p = aligned_alloc(64, sz);
    if (p)
        memset(p, 0, sz);
    return p;
}

void nn_free(void *p)
{
    free(p);
}

size_t nn_layer_in_len(const struct nn_layer *l)
{
    return (size_t)l->ic * l->ih * l->iw;
}

size_t nn_layer_out_len(const struct nn_layer *l)
{
    return (size_t)l->oc * l->oh * l->ow;
}

static const char *const builtin_names[] = {"compact", "seed001", "seed004", NULL};

const char *const *nn_arch_names(void)
{
    return builtin_names;
}

const char *nn_arch_text(const char *name)
{
    if (!name)
        return NULL;
    if (!strcmp(name, "compact"))
        return arch_compact;
    if (!strcmp(name, "seed001"))
        return arch_seed001;
    if (!strcmp(name, "seed004"))
        return arch_seed004;
    return NULL;
}

const char *nn_layer_type_name(enum nn_layer_type t)
{
    switch (t) {
    case NN_L_CONV: return "conv";
    case NN_L_BN: return "bn";
    case NN_L_RELU: return "relu";
    case NN_L_MAXPOOL: return "maxpool";
    case NN_L_AVGPOOL: return "avgpool";
    case NN_L_GAP: return "gap";
    case NN_L_FLATTEN: return "flatten";
    case NN_L_DENSE: return "dense";
    case NN_L_DROPOUT: return "dropout";
    }
    return "?";
}

static int parse_int(const char *s, int lo, int hi, int *ret)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *ret = (int)v;
    return 0;
}

cxr_err nn_arch_parse(const char *text, int n_classes, struct nn_model *m, char *errbuf,
                      size_t errlen)
{
    int lineno = 0;
    const char *p = text;
    m->n_layers = 0;
    while (*p) {
        char line[256], *tok[8], *save = NULL, *t;
        int ntok = 0;
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        lineno++;
        if (len >= sizeof(line)) {
            nn_errf(errbuf, errlen, "architecture line %d: too long", lineno);
            return CXR_EPARSE;
        }
        memcpy(line, p, len);
        line[len] = '\0';
        p += len + (eol ? 1 : 0);
        t = strchr(line, '#');
        if (t)
            *t = '\0';
        for (t = strtok_r(line, " \t\r", &save); t && ntok < 8; t = strtok_r(NULL, " \t\r", &save))
            tok[ntok++] = t;
        if (ntok == 0)
            continue;
        if (!strcmp(tok[0], "input")) {
            if (ntok != 3 || parse_int(tok[1], 1, NN_MAX_SIZE, &m->spec.size) ||
                parse_int(tok[2], 1, NN_MAX_CHANNELS, &m->spec.channels)) {
                nn_errf(errbuf, errlen, "architecture line %d: expected 'input SIZE CHANNELS'",
                        lineno);
                return CXR_EPARSE;
            }
            continue;
        }
        if (m->n_layers >= NN_MAX_LAYERS) {
            nn_errf(errbuf, errlen, "architecture line %d: more than %d layers", lineno,
                    NN_MAX_LAYERS);
            return CXR_EPARSE;
        }
        struct nn_layer *l = &m->layers[m->n_layers];
        memset(l, 0, sizeof(*l));
        int bad = 0;
        if (!strcmp(tok[0], "conv")) {
            l->type = NN_L_CONV;
            bad = ntok != 5 || parse_int(tok[1], 1, NN_MAX_WIDTH, &l->out) ||
                  parse_int(tok[2], 1, 15, &l->k) || parse_int(tok[3], 1, 8, &l->stride) ||
                  parse_int(tok[4], 0, 7, &l->pad);
        } else if (!strcmp(tok[0], "maxpool") || !strcmp(tok[0], "avgpool")) {
            l->type = tok[0][0] == 'm' ? NN_L_MAXPOOL : NN_L_AVGPOOL;
            bad = ntok != 3 || parse_int(tok[1], 1, 15, &l->k) ||
                  parse_int(tok[2], 1, 15, &l->stride);
        } else if (!strcmp(tok[0], "dense")) {
            l->type = NN_L_DENSE;
            if (ntok == 2 && !strcmp(tok[1], "classes"))
                l->out = n_classes;
            else
                bad = ntok != 2 || parse_int(tok[1], 1, NN_MAX_WIDTH * 4, &l->out);
        } else if (!strcmp(tok[0], "dropout")) {
            char *end;
            l->type = NN_L_DROPOUT;
            bad = ntok != 2;
            if (!bad) {
                l->p = strtof(tok[1], &end);
                bad = *end || !(l->p >= 0.0f && l->p < 1.0f);
            }
        } else if (!strcmp(tok[0], "bn")) {
            l->type = NN_L_BN;
            bad = ntok != 1;
        } else if (!strcmp(tok[0], "relu")) {
            l->type = NN_L_RELU;
            bad = ntok != 1;
        } else if (!strcmp(tok[0], "gap")) {
            l->type = NN_L_GAP;
            bad = ntok != 1;
        } else if (!strcmp(tok[0], "flatten")) {
            l->type = NN_L_FLATTEN;
            bad = ntok != 1;
        } else {
            nn_errf(errbuf, errlen, "architecture line %d: unknown layer '%s'", lineno, tok[0]);
            return CXR_EPARSE;
        }
        if (bad) {
            nn_errf(errbuf, errlen, "architecture line %d: bad arguments for '%s'", lineno,
                    tok[0]);
            return CXR_EPARSE;
        }
        m->n_layers++;
    }
    if (m->n_layers == 0) {
        nn_errf(errbuf, errlen, "architecture: no layers");
        return CXR_EPARSE;
    }
    return CXR_OK;
}

cxr_err nn_arch_resolve(struct nn_model *m, char *errbuf, size_t errlen)
{
    int c = m->spec.channels, h = m->spec.size, w = h;
    long off = 0, trainable = 0;
    if (c < 1 || c > NN_MAX_CHANNELS || h < 1 || h > NN_MAX_SIZE) {
        nn_errf(errbuf, errlen, "input spec: size %d / channels %d out of range", h, c);
        return CXR_EMODEL;
    }
    if (m->n_layers < 1 || m->n_layers > NN_MAX_LAYERS) {
        nn_errf(errbuf, errlen, "layer list: %d layers", m->n_layers);
        return CXR_EMODEL;
    }
    for (int i = 0; i < m->n_layers; i++) {
        struct nn_layer *l = &m->layers[i];
        const char *name = nn_layer_type_name(l->type);
        l->ic = c;
        l->ih = h;
        l->iw = w;
        l->w = l->b = l->gamma = l->beta = l->mean = l->var = -1;
        l->nw = 0;
        switch (l->type) {
        case NN_L_CONV:
            if (l->out < 1 || l->out > NN_MAX_WIDTH || l->k < 1 || l->stride < 1 ||
                l->pad < 0 || l->pad >= l->k || h + 2 * l->pad < l->k ||
                w + 2 * l->pad < l->k) {
                nn_errf(errbuf, errlen,
                        "layer shapes do not chain: layer %d (conv %d k%d s%d p%d) on %dx%dx%d",
                        i, l->out, l->k, l->stride, l->pad, c, h, w);
                return CXR_EMODEL;
            }
            l->oc = l->out;
            l->oh = (h + 2 * l->pad - l->k) / l->stride + 1;
            l->ow = (w + 2 * l->pad - l->k) / l->stride + 1;
            l->nw = (long)l->oc * c * l->k * l->k;
            l->w = off;
            off += l->nw;
            l->b = off;
            off += l->oc;
            trainable += l->nw + l->oc;
            break;
        case NN_L_MAXPOOL:
        case NN_L_AVGPOOL:
            if (l->k < 1 || l->stride < 1 || h < l->k || w < l->k) {
                nn_errf(errbuf, errlen,
                        "layer shapes do not chain: layer %d (%s %d/%d) on %dx%dx%d", i, name,
                        l->k, l->stride, c, h, w);
                return CXR_EMODEL;
            }
            l->oc = c;
            l->oh = (h - l->k) / l->stride + 1;
            l->ow = (w - l->k) / l->stride + 1;
            break;
        case NN_L_BN:
            l->oc = c, l->oh = h, l->ow = w;
            l->gamma = off, l->beta = off + c, l->mean = off + 2L * c, l->var = off + 3L * c;
            off += 4L * c;
            trainable += 2L * c;
            break;
        case NN_L_RELU:
        case NN_L_DROPOUT:
            if (l->type == NN_L_DROPOUT && !(l->p >= 0.0f && l->p < 1.0f)) {
                nn_errf(errbuf, errlen, "layer %d: dropout probability out of range", i);
                return CXR_EMODEL;
            }
            l->oc = c, l->oh = h, l->ow = w;
            break;
        case NN_L_GAP:
            l->oc = c, l->oh = 1, l->ow = 1;
            break;
        case NN_L_FLATTEN:
            l->oc = c * h * w, l->oh = 1, l->ow = 1;
            break;
        case NN_L_DENSE: {
            long in = (long)c * h * w;
            if (l->out < 1 || l->out > NN_MAX_WIDTH * 4) {
                nn_errf(errbuf, errlen, "layer shapes do not chain: layer %d (dense %d)", i,
                        l->out);
                return CXR_EMODEL;
            }
            l->oc = l->out, l->oh = 1, l->ow = 1;
            l->nw = in * l->out;
            l->w = off;
            off += l->nw;
            l->b = off;
            off += l->out;
            trainable += l->nw + l->out;
            break;
        }
        default:
            nn_errf(errbuf, errlen, "layer list: layer %d has unknown type %d", i, (int)l->type);
            return CXR_EMODEL;
        }
        if ((long)l->oc * l->oh * l->ow > NN_MAX_ACT || off > NN_MAX_PARAMS ||
            (l->type == NN_L_CONV && (long)nn_conv_col_len(l) > NN_MAX_ACT)) {
            nn_errf(errbuf, errlen, "layer %d: too large (limits: %ld activations, %ld params)",
                    i, NN_MAX_ACT, NN_MAX_PARAMS);
            return CXR_EMODEL;
        }
        c = l->oc, h = l->oh, w = l->ow;
    }
    const struct nn_layer *last = &m->layers[m->n_layers - 1];
    if (last->type != NN_L_DENSE || last->oc != m->n_classes) {
        nn_errf(errbuf, errlen,
                "layer shapes do not chain: the last layer must be dense with %d outputs "
                "(one per class), found %s with %d",
                m->n_classes, nn_layer_type_name(last->type), last->oc);
        return CXR_EMODEL;
    }
    m->n_params = (size_t)off;
    m->n_trainable = (size_t)trainable;
    return CXR_OK;
}

double nn_layer_flops(const struct nn_layer *l)
{
    switch (l->type) {
    case NN_L_CONV:
        return 2.0 * l->oc * l->oh * l->ow * (double)l->ic * l->k * l->k;
    case NN_L_DENSE:
        return 2.0 * (double)l->nw;
    case NN_L_BN:
    case NN_L_RELU:
    case NN_L_GAP:
    case NN_L_DROPOUT:
        return (double)nn_layer_in_len(l);
    case NN_L_MAXPOOL:
    case NN_L_AVGPOOL:
        return (double)nn_layer_out_len(l) * l->k * l->k;
    case NN_L_FLATTEN:
        return 0.0;
    }
    return 0.0;
}
