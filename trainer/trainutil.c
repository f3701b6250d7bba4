/* trainutil.c - the image cache, batched prediction and scores shared by train and eval. */
#include "trainutil.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom.h"

bool is_loop_state_key(const char *key)
{
    static const char *const keys[] = {"train_epoch", "train_best_f1", "train_best_epoch",
                                       "train_rng", "train_history"};

    for (size_t i = 0; i < CXR_ARRAY_SIZE(keys); i++)
        if (!strcmp(key, keys[i]))
            return true;
    return false;
}

int tu_argmax(const float *v, int n)
{
    int best = 0;

    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

float *tu_alloc_floats(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes ? bytes : 64);

    if (p)
        memset(p, 0, bytes);
    return p;
}

double tu_elapsed(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

int tu_parse_int(const char *s, int lo, int hi, int *ret, const char *name)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "cxrtriage-train: %s '%s', expected a whole number from %d to %d\n",
                name, s, lo, hi);
        return -1;
    }
    *ret = (int)v;
    return 0;
}

int tu_parse_float(const char *s, float lo, float hi, float *ret, const char *name)
{
    char *end;
    float v;

    errno = 0;
    v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "cxrtriage-train: %s '%s', expected a number from %g to %g\n", name, s,
                (double)lo, (double)hi);
        return -1;
    }
    *ret = v;
    return 0;
}

struct load_job {
    struct tu_cache *c;
    const struct ds *d;
    const size_t *items; /* the items to load, slot k = items[k] */
    size_t n;
    atomic_size_t next;
    pthread_mutex_t mu; /* guards errors and the counters */
    struct cxr_buf *errors;
};

static void *load_run(void *arg)
{
    struct load_job *j = arg;
    size_t plane = (size_t)j->c->size * (size_t)j->c->size;

    for (;;) {
        size_t k = atomic_fetch_add(&j->next, 1);
        char err[512];
        struct px_verdict v;
        cxr_err e;

        if (k >= j->n)
            break;
        e = px_load_unit(j->d->items[j->items[k]].path, j->c->size, j->c->pix + k * plane, &v,
                         err, sizeof(err));
        pthread_mutex_lock(&j->mu);
        if (e) {
            j->c->slot[j->items[k]] = TU_NO_SLOT;
            j->c->unreadable++;
            (void)cxr_buf_printf(j->errors, "%s\n", err);
        } else if (!v.applicable) {
            j->c->not_applicable++;
        }
        pthread_mutex_unlock(&j->mu);
    }
    return NULL;
}

cxr_err tu_cache_load(struct tu_cache *c, const struct ds *d, unsigned split_mask, int size,
                      int threads, struct cxr_buf *errors)
{
    struct load_job j;
    pthread_t th[64];
    size_t *items;
    int started = 0;

    memset(c, 0, sizeof(*c));
    c->size = size;
    c->slot = malloc((d->n ? d->n : 1) * sizeof(*c->slot));
    c->label = malloc((d->n ? d->n : 1) * sizeof(*c->label));
    items = malloc((d->n ? d->n : 1) * sizeof(*items));
    if (!c->slot || !c->label || !items)
        goto out_nomem;
    for (size_t i = 0; i < d->n; i++) {
        c->label[i] = d->items[i].label;
        c->slot[i] = TU_NO_SLOT;
        if (d->items[i].split >= 0 && d->items[i].split < DS_NSPLITS &&
            (split_mask & (1u << d->items[i].split))) {
            c->slot[i] = c->nslots;
            items[c->nslots++] = i;
        }
    }
    c->pix = tu_alloc_floats(c->nslots * (size_t)size * (size_t)size);
    if (!c->pix)
        goto out_nomem;
    memset(&j, 0, sizeof(j));
    j.c = c;
    j.d = d;
    j.items = items;
    j.n = c->nslots;
    atomic_init(&j.next, 0);
    pthread_mutex_init(&j.mu, NULL);
    j.errors = errors;
    if (threads < 1)
        threads = 1;
    if (threads > 64)
        threads = 64;
    for (int t = 0; t < threads; t++)
        if (pthread_create(&th[t], NULL, load_run, &j) == 0)
            started++;
    if (!started)
        (void)load_run(&j);
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    pthread_mutex_destroy(&j.mu);
    free(items);
    return CXR_OK;
out_nomem:
    free(items);
    tu_cache_done(c);
    return CXR_ENOMEM;
}

void tu_cache_done(struct tu_cache *c)
{
    free(c->pix);
    free(c->slot);
    free(c->label);
    memset(c, 0, sizeof(*c));
}

cxr_err tu_predict(const nn_model *m, const struct tu_cache *c, const size_t *items, size_t n,
                   float *probs)
{
    const struct nn_input_spec *in = nn_model_input_spec(m);
    struct px_spec spec = {in->size, in->channels, in->mean, in->std};
    int nc = nn_model_num_classes(m), batch = 16;
    size_t plane = (size_t)c->size * (size_t)c->size, per = nn_model_input_len(m);
    nn_ctx *ctx = NULL;
    float *x;
    cxr_err err;

    if (in->size != c->size)
        return CXR_EINVAL;
    x = tu_alloc_floats(per * (size_t)batch);
    if (!x)
        return CXR_ENOMEM;
    err = nn_ctx_new(m, batch, &ctx);
    for (size_t i = 0; i < n && !err; i += (size_t)batch) {
        int b = (int)(n - i < (size_t)batch ? n - i : (size_t)batch);
        for (int k = 0; k < b; k++) {
            size_t s = c->slot[items[i + (size_t)k]];
            if (s == TU_NO_SLOT) {
                err = CXR_EINVAL;
                break;
            }
            px_normalize(&spec, c->pix + s * plane, x + (size_t)k * per);
        }
        if (!err)
            err = nn_predict(ctx, x, b, probs + i * (size_t)nc);
    }
    nn_ctx_free(ctx);
    free(x);
    return err;
}

void tu_score(const float *probs, const int *labels, size_t n, int nc, struct tu_scores *ret)
{
    size_t tp[DS_MAX_CLASSES] = {0}, fp[DS_MAX_CLASSES] = {0}, fn[DS_MAX_CLASSES] = {0};
    size_t correct = 0;
    double loss = 0, f1sum = 0;

    memset(ret, 0, sizeof(*ret));
    for (size_t i = 0; i < n; i++) {
        int p = tu_argmax(probs + i * (size_t)nc, nc), y = labels[i];
        float q = probs[i * (size_t)nc + (size_t)y];
        loss -= log(q > 1e-12f ? (double)q : 1e-12);
        if (p == y) {
            correct++;
            tp[y]++;
        } else {
            fp[p]++;
            fn[y]++;
        }
    }
    for (int k = 0; k < nc; k++) {
        double pr = tp[k] + fp[k] ? (double)tp[k] / (double)(tp[k] + fp[k]) : 0;
        double rc = tp[k] + fn[k] ? (double)tp[k] / (double)(tp[k] + fn[k]) : 0;
        ret->precision[k] = pr;
        ret->recall[k] = rc;
        ret->f1[k] = pr + rc > 0 ? 2 * pr * rc / (pr + rc) : 0;
        f1sum += ret->f1[k];
    }
    ret->accuracy = n ? (double)correct / (double)n : 0;
    ret->macro_f1 = nc ? f1sum / nc : 0;
    ret->loss = n ? loss / (double)n : 0;
}

/* FNV-1a over the sorted (path, label, split) list: names the data a model was trained on. */
void tu_dataset_fingerprint(const struct ds *d, char *out, size_t outlen)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < d->n; i++) {
        const char *name = strrchr(d->items[i].path, '/');
        char tail[16];
        name = name ? name + 1 : d->items[i].path;
        for (const char *p = name; *p; p++)
            h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
        snprintf(tail, sizeof(tail), "|%d|%d;", d->items[i].label, d->items[i].split);
        for (const char *p = tail; *p; p++)
            h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    }
    snprintf(out, outlen, "fnv1a64:%016llx", (unsigned long long)h);
}
