/*
 * pipeline.c - the workers: each takes a job (a received instance's spool file), runs the one
 * scoring path and hands the result back to the loop.
 *
 * DESIGN. A job queue and a done list under one mutex; workers sleep on a condition variable.
 * Each worker owns its model context, input buffers and nothing else, so scoring is a pure
 * function of (file bytes, model, triage rule): the score of a file here is the score
 * `cxrtriage classify` gives it, because both run px_load_unit_mem_ex's path (dicom/pixel.c),
 * px_normalize and nn_predict. The lock is never held while a file is read or scored.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"

struct pipeline {
    const nn_model *model;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *q_head, *q_tail;   /* waiting */
    struct job *d_head, *d_tail;   /* finished */
    int running;                   /* jobs being scored */
    bool stop;
    void (*done)(void *user);
    void *user;
    int n;
    atomic_int alive;              /* workers with a model context, not stopped */
    int inited;                    /* workers past their set-up (under lock) */
    pthread_t threads[64];
};

double mono_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* SHA-256 over the decoded samples as the pixel path saw them: "WxHxC" then the samples in
 * host (little-endian) order, each as 16 bits ("WxHxC:16" then int16/uint16) when the image
 * has at most 16 significant bits (every CR and DX), else as int32. Same pixels, same hash,
 * whatever the transfer syntax. (Rows written before 2026-12-02 hashed every image as int32:
 * twice the bytes, ~11 ms of SHA-256 for a 2500 x 2048 CR on the worker that scores it.) */
struct pixel_hash {
    char hex[65];
};

static void on_decoded(void *user, const struct px_image *img)
{
    struct pixel_hash *h = user;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    char dims[64];
    size_t n = (size_t)img->width * (size_t)img->height * (size_t)img->channels;
    const bool narrow = img->bits >= 1 && img->bits <= 16;
    int ok;

    /* libcrypto's SHA-256 uses the CPU's SHA instructions (common/sha256.c took ~80 ms) */
    h->hex[0] = '\0';
    if (!md)
        return;
    (void)snprintf(dims, sizeof(dims), "%dx%dx%d%s", img->width, img->height, img->channels,
                   narrow ? ":16" : "");
    ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
         EVP_DigestUpdate(md, dims, strlen(dims)) == 1;
    if (ok && narrow) {
        uint16_t buf[8192]; /* 16 KiB at a time, converted in L1 */
        for (size_t i = 0; ok && i < n; i += 8192) {
            const size_t m = n - i < 8192 ? n - i : 8192;
            for (size_t k = 0; k < m; k++)
                buf[k] = (uint16_t)img->samples[i + k]; /* two's complement for signed */
            ok = EVP_DigestUpdate(md, buf, m * sizeof(buf[0])) == 1;
        }
    } else if (ok) {
        ok = EVP_DigestUpdate(md, img->samples, n * sizeof(*img->samples)) == 1;
    }
    if (ok && EVP_DigestFinal_ex(md, d, &dl) == 1 && dl == 32)
        cxr_sha256_hex(d, h->hex);
    EVP_MD_CTX_free(md);
}

void pipeline_score_ex(const nn_model *model, nn_ctx *ctx, float *input, float *unit,
                       const struct nn_triage_rule *rule, const void *data, size_t len,
                       const char *name, struct st_result *res, struct px_info *ret_pinfo)
{
    pipeline_score_fd(model, ctx, input, unit, rule, data, len, -1, name, res, ret_pinfo);
}

void pipeline_score_fd(const nn_model *model, nn_ctx *ctx, float *input, float *unit,
                       const struct nn_triage_rule *rule, const void *data, size_t len, int fd,
                       const char *name, struct st_result *res, struct px_info *ret_pinfo)
{
    const struct nn_input_spec *in = nn_model_input_spec(model);
    struct px_spec spec = {in->size, in->channels, in->mean, in->std};
    struct px_verdict v = {0};
    struct pixel_hash h = {{0}};
    struct px_trace tr = {on_decoded, &h, -1, -1};
    char err[512] = "";
    float probs[NN_MAX_CLASSES];
    double t0;
    cxr_err e;
    int nc = nn_model_num_classes(model);

    (void)cxr_strlcpy(res->model_digest, sizeof(res->model_digest), nn_model_digest(model));
    e = px_load_unit_fd_trace(data, len, fd, name, in->size, unit, &v, ret_pinfo, &tr, err,
                              sizeof(err));
    res->timings_ms[ST_T_DECODE] = tr.decode_ms;
    res->timings_ms[ST_T_PREPROCESS] = tr.preprocess_ms;
    (void)cxr_strlcpy(res->pixel_sha256, sizeof(res->pixel_sha256), h.hex);
    if (e != CXR_OK) {
        res->state = ST_FAILED;
        (void)cxr_strlcpy(res->error, sizeof(res->error), err[0] ? err : cxr_strerror(e));
        return;
    }
    res->gate_applicable = v.applicable;
    if (!v.applicable) {
        res->state = ST_SKIPPED;
        (void)cxr_strlcpy(res->gate_reason, sizeof(res->gate_reason), v.reason);
        return;
    }
    px_normalize(&spec, unit, input);
    t0 = mono_ms();
    e = nn_predict(ctx, input, 1, probs);
    res->timings_ms[ST_T_INFER] = mono_ms() - t0;
    if (e != CXR_OK) {
        res->state = ST_FAILED;
        (void)snprintf(res->error, sizeof(res->error), "model: prediction failed: %s",
                       cxr_strerror(e));
        return;
    }
    res->state = ST_CLASSIFIED;
    res->n_classes = nc < ST_MAX_CLASSES ? nc : ST_MAX_CLASSES;
    for (int c = 0; c < res->n_classes; c++) {
        (void)cxr_strlcpy(res->class_names[c], sizeof(res->class_names[c]), nn_model_class_name(model, c));
        res->scores[c] = (double)probs[c];
    }
    (void)nn_triage_rule_text(rule, model, res->rule, sizeof(res->rule));
    switch (nn_triage_apply(rule, model, probs, res->triage_reason, sizeof(res->triage_reason))) {
    case NN_PRIO_URGENT: res->triage = ST_TRIAGE_URGENT; break;
    case NN_PRIO_ROUTINE: res->triage = ST_TRIAGE_ROUTINE; break;
    case NN_PRIO_NORMAL: res->triage = ST_TRIAGE_NORMAL; break;
    default: res->triage = ST_TRIAGE_NONE; break;
    }
}

/* The spool file is mapped, not read: its bytes are parsed where the page cache holds them and
 * DCMTK loads the pixel data from the file itself (a 10 MB CR was copied twice before, into a
 * buffer and into a memory file, on a worker sharing two cores with the listener). Nobody
 * truncates a spool file: retention only unlinks files of rows in a final state. */
static void run_job(struct pipeline *p, nn_ctx *ctx, float *input, float *unit, struct job *j)
{
    struct px_mapped m;
    char err[512] = "";
    cxr_err e;

    j->res.timings_ms[ST_T_QUEUE] = mono_ms() - j->queued_at;
    e = px_map_file(j->path, &m, err, sizeof(err));
    if (e != CXR_OK) {
        j->res.state = ST_FAILED;
        (void)snprintf(j->res.error, sizeof(j->res.error), "spool: %.240s",
                       err[0] ? err : cxr_strerror(e));
        return;
    }
    pipeline_score_fd(p->model, ctx, input, unit, &j->rule, m.data, m.len, m.fd,
                      j->sop_instance_uid, &j->res, NULL);
    px_unmap_file(&m);
}

struct worker_arg {
    struct pipeline *p;
};

static void *worker(void *arg)
{
    struct pipeline *p = arg;
    /* Receiving (the PACS waits for each C-STORE answer) goes before scoring (a queue that
     * catches up in the gaps): workers run at a lower priority than the association threads.
     * An idle daemon scores a lone radiograph at once all the same. */
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
    nn_ctx *ctx = NULL;
    size_t in_len = nn_model_input_len(p->model);
    int size = nn_model_input_spec(p->model)->size;
    float *input = malloc(in_len * sizeof(float));
    float *unit = malloc((size_t)size * (size_t)size * sizeof(float));
    bool ok = input && unit && nn_ctx_new(p->model, 1, &ctx) == CXR_OK;

    if (ok)
        atomic_fetch_add(&p->alive, 1);
    pthread_mutex_lock(&p->lock);
    p->inited++;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);

    for (;;) {
        struct job *j;

        pthread_mutex_lock(&p->lock);
        while (!p->stop && !p->q_head)
            pthread_cond_wait(&p->cond, &p->lock);
        if (p->stop) {
            pthread_mutex_unlock(&p->lock);
            break;
        }
        j = p->q_head;
        p->q_head = j->next;
        if (!p->q_head)
            p->q_tail = NULL;
        j->next = NULL;
        p->running++;
        pthread_mutex_unlock(&p->lock);

        if (ok) {
            run_job(p, ctx, input, unit, j);
        } else {
            j->res.state = ST_FAILED;
            (void)cxr_strlcpy(j->res.error, sizeof(j->res.error),
                     "worker: out of memory for the model context");
        }

        j->done_at = mono_ms();
        pthread_mutex_lock(&p->lock);
        p->running--;
        if (p->d_tail)
            p->d_tail->next = j;
        else
            p->d_head = j;
        p->d_tail = j;
        pthread_mutex_unlock(&p->lock);
        p->done(p->user);
    }
    if (ok)
        atomic_fetch_sub(&p->alive, 1);
    nn_ctx_free(ctx);
    free(input);
    free(unit);
    return NULL;
}

int pipeline_alive(struct pipeline *p, int *ret_started)
{
    if (!p) {
        *ret_started = 0;
        return 0;
    }
    *ret_started = p->n;
    return atomic_load(&p->alive);
}

const double met_lat_le[MET_LAT_BUCKETS] = {1,   2,   5,    10,   25,   50,    100,
                                            250, 500, 1000, 2500, 5000, 10000, 30000};

void met_observe(struct met_hist *h, double ms)
{
    if (ms < 0)
        return;
    for (int i = 0; i < MET_LAT_BUCKETS; i++)
        if (ms <= met_lat_le[i]) {
            atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
            break;
        }
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (long long)(ms * 1000.0), memory_order_relaxed);
}

void met_record(struct daemon_metrics *m, const struct st_result *res, bool upload)
{
    if (upload) {
        atomic_fetch_add_explicit(&m->uploads[res->state], 1, memory_order_relaxed);
        return;
    }
    switch (res->state) {
    case ST_CLASSIFIED: atomic_fetch_add_explicit(&m->classified, 1, memory_order_relaxed); break;
    case ST_SKIPPED: atomic_fetch_add_explicit(&m->skipped, 1, memory_order_relaxed); break;
    case ST_FAILED: atomic_fetch_add_explicit(&m->failed, 1, memory_order_relaxed); break;
    default: break;
    }
    if (res->triage > ST_TRIAGE_NONE && res->triage <= ST_TRIAGE_NORMAL)
        atomic_fetch_add_explicit(&m->triage[res->triage], 1, memory_order_relaxed);
    for (int s = 0; s < ST_T__COUNT; s++)
        met_observe(&m->stage[s], res->timings_ms[s]);
    for (int c = 0; c < res->n_classes && c < ST_MAX_CLASSES; c++) {
        double v = res->scores[c];
        int b = (int)(v * MET_SCORE_BUCKETS - 1e-9);
        if (b < 0)
            b = 0;
        if (b >= MET_SCORE_BUCKETS)
            b = MET_SCORE_BUCKETS - 1;
        atomic_fetch_add_explicit(&m->score_bucket[c][b], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&m->score_count[c], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&m->score_sum_e6[c], (long long)(v * 1e6), memory_order_relaxed);
    }
}

cxr_err pipeline_start(const nn_model *model, int n_workers, void (*done)(void *user),
                       void *user, struct pipeline **ret, char *errbuf, size_t errlen)
{
    struct pipeline *p = calloc(1, sizeof(*p));

    if (!p) {
        (void)snprintf(errbuf, errlen, "pipeline: out of memory");
        return CXR_ENOMEM;
    }
    if (n_workers < 1 || n_workers > (int)CXR_ARRAY_SIZE(p->threads))
        n_workers = 1;
    p->model = model;
    p->done = done;
    p->user = user;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    for (int i = 0; i < n_workers; i++) {
        int r = pthread_create(&p->threads[i], NULL, worker, p);
        if (r != 0) {
            (void)snprintf(errbuf, errlen, "pipeline: cannot start worker %d: %s", i,
                           strerror(r));
            pipeline_stop(p);
            return CXR_ENOMEM;
        }
        p->n++;
    }
    /* Ready means ready: wait until every worker has its model context (or failed to). */
    pthread_mutex_lock(&p->lock);
    while (p->inited < p->n)
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
    *ret = p;
    return CXR_OK;
}

void pipeline_submit(struct pipeline *p, struct job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->q_tail)
        p->q_tail->next = j;
    else
        p->q_head = j;
    p->q_tail = j;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

struct job *pipeline_take_done(struct pipeline *p)
{
    struct job *l;

    pthread_mutex_lock(&p->lock);
    l = p->d_head;
    p->d_head = p->d_tail = NULL;
    pthread_mutex_unlock(&p->lock);
    return l;
}

int pipeline_busy(struct pipeline *p)
{
    int n = 0;

    pthread_mutex_lock(&p->lock);
    for (struct job *j = p->q_head; j; j = j->next)
        n++;
    n += p->running;
    pthread_mutex_unlock(&p->lock);
    return n;
}

void pipeline_stop(struct pipeline *p)
{
    struct job *j;

    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n; i++)
        (void)pthread_join(p->threads[i], NULL);
    /* Jobs never run stay in state received: the next start resumes them. */
    while ((j = p->q_head)) {
        p->q_head = j->next;
        free(j);
    }
    while ((j = p->d_head)) {
        p->d_head = j->next;
        free(j);
    }
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
