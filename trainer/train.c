/*
 * train.c - `cxrtriage-train train`: the training loop.
 *
 * DESIGN
 * - Data: dataset.h gives the items and the split (seeded and stratified, or from a split
 *   file). Every image is decoded once, through the daemon's own pixel path (px_load_unit), by
 *   a pool of loader threads into an in-memory cache of [0,1] images at the model's size. The
 *   normalisation (mean, std) is measured on the training images and stored in the model.
 * - Batches: one loader thread augments and normalises the next batches into a two-slot ring
 *   while the main thread trains on the current one, so the CNN never waits for pixels.
 * - Optimisation: nn_train (model.h) with Adam + weight decay, class-weighted label-smoothed
 *   cross-entropy, a linear warm-up then cosine (or step) learning-rate schedule, early
 *   stopping on validation macro-F1 with patience.
 * - Durability: after each epoch the current weights go to OUT.ckpt and the best ones to
 *   OUT.best.ckpt (atomic writes), with the loop's state in their metadata; --resume picks the
 *   run up from there (the Adam moments restart, the schedule and the best score do not).
 * - Output: OUT is the best model by validation macro-F1, with metadata (data set, split,
 *   seed, command, metrics on the held-out test split) and OUT.history.json the per-epoch
 *   curves that the evaluation report plots.
 */
#include "train.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "augment.h"
#include "common.h"
#include "dataset.h"
#include "dicom.h"
#include "model.h"
#include "operating.h"
#include "trainutil.h"

struct opts {
    const char *data, *arch, *out, *init_from, *split_file, *group_regex, *history, *dump;
    int epochs, batch, size, warmup, patience, freeze, threads, loader_threads, step_every;
    int max_per_class;
    float lr, weight_decay, smoothing, val, test, min_lr_frac;
    bool resume, hflip, augment, cosine, progress;
    uint32_t seed;
    struct aug_params aug;
};

static void usage(FILE *out)
{
    fprintf(out,
        "Usage: cxrtriage-train train --data DIR|CSV --arch NAME|FILE --out MODEL [OPTION]...\n"
        "Trains a CNN on labelled images (one sub-folder per class, or a CSV path,label[,group])\n"
        "through the daemon's own preprocessing. %s\n\n"
        "Data and split:\n"
        "  --data DIR|CSV         the labelled images\n"
        "  --split-file F         use the split in F (CSV path,label,group,split) when it exists,\n"
        "                         else write the seeded split there\n"
        "  --val F --test F       validation and test fractions per class (0.15, 0.15)\n"
        "  --group-regex RE       images whose file names share RE's first capture group (a\n"
        "                         patient) stay in one split\n"
        "  --max-per-class N      use at most N images of each class (quick experiments)\n"
        "Model:\n"
        "  --arch NAME|FILE       built-in architecture (compact, seed001, seed004) or a file\n"
        "  --size N               input size (default: the architecture's)\n"
        "  --init-from MODEL      fine-tune an existing model (same classes)\n"
        "  --freeze N             keep the first N layers fixed\n"
        "Optimisation:\n"
        "  --epochs N (30)  --batch N (32)  --lr X (0.001)  --weight-decay X (0.0001)\n"
        "  --label-smoothing X (0.05)  --warmup N epochs (2)  --schedule cosine|step\n"
        "  --patience N (6) epochs without a better validation macro-F1 before stopping\n"
        "  --no-augment  --hflip (off by default: chest anatomy is not symmetric)\n"
        "  --seed N (1)  --threads N (the engine's threads, default all cores, at most 8)\n"
        "  --loader-threads N (decoding threads, default cores)\n"
        "Output:\n"
        "  --out MODEL            the best model (.cxrm); OUT.ckpt and OUT.best.ckpt each epoch\n"
        "  --history FILE         per-epoch curves as JSON (default OUT.history.json)\n"
        "  --resume               continue from OUT.ckpt\n"
        "  --progress / --no-progress   force the progress bar on or off (default: on a tty)\n"
        "  --dump-inputs FILE     write the decoded [0,1] images, labels and splits (float32,\n"
        "                         see dump_inputs() in trainer/train.c) for a reference\n"
        "                         trainer such as PyTorch, then exit\n",
        CXR_DISCLAIMER);
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    enum { O_DATA = 256, O_ARCH, O_OUT, O_INIT, O_SPLIT, O_GROUP, O_HIST, O_EPOCHS, O_BATCH,
           O_SIZE, O_WARM, O_PAT, O_FREEZE, O_THREADS, O_LTHREADS, O_MAXPC, O_LR, O_WD, O_LS,
           O_VAL, O_TEST, O_RESUME, O_HFLIP, O_NOAUG, O_SCHED, O_SEED, O_PROG, O_NOPROG, O_DUMP };
    static const struct option lo[] = {
        {"data", 1, NULL, O_DATA}, {"arch", 1, NULL, O_ARCH}, {"out", 1, NULL, O_OUT},
        {"init-from", 1, NULL, O_INIT}, {"split-file", 1, NULL, O_SPLIT},
        {"group-regex", 1, NULL, O_GROUP}, {"history", 1, NULL, O_HIST},
        {"epochs", 1, NULL, O_EPOCHS}, {"batch", 1, NULL, O_BATCH}, {"size", 1, NULL, O_SIZE},
        {"warmup", 1, NULL, O_WARM}, {"patience", 1, NULL, O_PAT}, {"freeze", 1, NULL, O_FREEZE},
        {"threads", 1, NULL, O_THREADS}, {"loader-threads", 1, NULL, O_LTHREADS},
        {"max-per-class", 1, NULL, O_MAXPC}, {"lr", 1, NULL, O_LR},
        {"weight-decay", 1, NULL, O_WD}, {"label-smoothing", 1, NULL, O_LS},
        {"val", 1, NULL, O_VAL}, {"test", 1, NULL, O_TEST}, {"resume", 0, NULL, O_RESUME},
        {"hflip", 0, NULL, O_HFLIP}, {"no-augment", 0, NULL, O_NOAUG},
        {"schedule", 1, NULL, O_SCHED}, {"seed", 1, NULL, O_SEED}, {"progress", 0, NULL, O_PROG},
        {"no-progress", 0, NULL, O_NOPROG}, {"dump-inputs", 1, NULL, O_DUMP},
        {"help", 0, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    int c;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    memset(o, 0, sizeof(*o));
    o->epochs = 30;
    o->batch = 32;
    o->warmup = 2;
    o->patience = 6;
    o->threads = cores > 0 ? (int)cores : 1;
    o->loader_threads = o->threads;
    o->lr = 1e-3f;
    o->weight_decay = 1e-4f;
    o->smoothing = 0.05f;
    o->val = 0.15f;
    o->test = 0.15f;
    o->min_lr_frac = 0.01f;
    o->augment = true;
    o->cosine = true;
    o->seed = 1;
    o->progress = isatty(STDERR_FILENO);
    aug_defaults(&o->aug);
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case O_DATA: o->data = optarg; break;
        case O_ARCH: o->arch = optarg; break;
        case O_OUT: o->out = optarg; break;
        case O_INIT: o->init_from = optarg; break;
        case O_SPLIT: o->split_file = optarg; break;
        case O_GROUP: o->group_regex = optarg; break;
        case O_HIST: o->history = optarg; break;
        case O_EPOCHS: if (tu_parse_int(optarg, 1, 10000, &o->epochs, "--epochs")) return 2; break;
        case O_BATCH: if (tu_parse_int(optarg, 1, 1024, &o->batch, "--batch")) return 2; break;
        case O_SIZE: if (tu_parse_int(optarg, 16, 1024, &o->size, "--size")) return 2; break;
        case O_WARM: if (tu_parse_int(optarg, 0, 1000, &o->warmup, "--warmup")) return 2; break;
        case O_PAT: if (tu_parse_int(optarg, 1, 1000, &o->patience, "--patience")) return 2; break;
        case O_FREEZE: if (tu_parse_int(optarg, 0, 1000, &o->freeze, "--freeze")) return 2; break;
        case O_THREADS: if (tu_parse_int(optarg, 1, 256, &o->threads, "--threads")) return 2; break;
        case O_LTHREADS:
            if (tu_parse_int(optarg, 1, 256, &o->loader_threads, "--loader-threads")) return 2;
            break;
        case O_MAXPC:
            if (tu_parse_int(optarg, 1, 1 << 30, &o->max_per_class, "--max-per-class")) return 2;
            break;
        case O_LR: if (tu_parse_float(optarg, 1e-7f, 10.0f, &o->lr, "--lr")) return 2; break;
        case O_WD: if (tu_parse_float(optarg, 0, 1, &o->weight_decay, "--weight-decay")) return 2; break;
        case O_LS: if (tu_parse_float(optarg, 0, 0.5f, &o->smoothing, "--label-smoothing")) return 2; break;
        case O_VAL: if (tu_parse_float(optarg, 0.01f, 0.5f, &o->val, "--val")) return 2; break;
        case O_TEST: if (tu_parse_float(optarg, 0, 0.5f, &o->test, "--test")) return 2; break;
        case O_RESUME: o->resume = true; break;
        case O_HFLIP: o->hflip = true; break;
        case O_NOAUG: o->augment = false; break;
        case O_SCHED:
            if (!strcmp(optarg, "cosine")) o->cosine = true;
            else if (!strcmp(optarg, "step")) o->cosine = false;
            else { fprintf(stderr, "cxrtriage-train: --schedule '%s', expected cosine or step\n", optarg); return 2; }
            break;
        case O_SEED: {
            int s;
            if (tu_parse_int(optarg, 0, 2147483647, &s, "--seed")) return 2;
            o->seed = (uint32_t)s;
            break;
        }
        case O_PROG: o->progress = true; break;
        case O_NOPROG: o->progress = false; break;
        case O_DUMP: o->dump = optarg; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cxrtriage-train: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!o->data || !o->out || (!o->arch && !o->init_from)) {
        fprintf(stderr, "cxrtriage-train train: --data, --out and --arch (or --init-from) are required\n");
        usage(stderr);
        return 2;
    }
    o->aug.hflip = o->hflip;
    return 0;
}

/* Everything one training run holds. */
struct run {
    struct opts o;
    struct ds d;
    struct tu_cache cache;
    nn_model *model;
    nn_train *tr;
    struct px_spec spec;
    int nc;
    float class_weights[DS_MAX_CLASSES];
    uint64_t rng;
    int epoch0;         /* first epoch to run (after --resume) */
    double best_f1;
    int best_epoch;
    uint8_t *best;      /* serialised best model */
    size_t best_len;
    char ckpt[4096], best_ckpt[4096], history[4096];
    struct cxr_buf hist; /* JSON array body of per-epoch records */
    char class_folders[1024];
};

/* ---- the batch ring: one producer (the augmenting loader), one consumer (the trainer) ---- */

struct slot {
    float *x;
    int *y;
    int n;
    bool full;
};

struct feeder {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct slot slots[2];
    const struct run *r;
    const size_t *order; /* data-set item indices of this epoch */
    size_t count;
    uint64_t rng;
    bool stop;
    float *scratch;
};

static void *feeder_run(void *arg)
{
    struct feeder *f = arg;
    const struct run *r = f->r;
    size_t plane = (size_t)r->spec.size * (size_t)r->spec.size;
    size_t per = plane * (size_t)r->spec.channels;
    size_t next = 0;

    for (int k = 0; next < f->count; k ^= 1) {
        struct slot *s = &f->slots[k];
        int n = 0;

        pthread_mutex_lock(&f->mu);
        while (s->full && !f->stop)
            pthread_cond_wait(&f->cv, &f->mu);
        pthread_mutex_unlock(&f->mu);
        if (f->stop)
            break;
        for (; n < r->o.batch && next < f->count; n++, next++) {
            size_t idx = f->order[next];
            const float *img = r->cache.pix + r->cache.slot[idx] * plane;
            if (r->o.augment) {
                aug_apply(&r->o.aug, &f->rng, img, f->scratch, r->spec.size);
                img = f->scratch;
            }
            px_normalize(&r->spec, img, s->x + (size_t)n * per);
            s->y[n] = r->cache.label[idx];
        }
        pthread_mutex_lock(&f->mu);
        s->n = n;
        s->full = true;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
    }
    return NULL;
}

static void feeder_stop(struct feeder *f)
{
    pthread_mutex_lock(&f->mu);
    f->stop = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static float lr_at(const struct opts *o, int epoch, double frac)
{
    double e = epoch + frac;

    if (o->warmup > 0 && e < o->warmup)
        return (float)(o->lr * (0.1 + 0.9 * e / o->warmup));
    if (o->cosine) {
        double span = o->epochs - o->warmup, t = span > 0 ? (e - o->warmup) / span : 1.0;
        double lo = o->lr * o->min_lr_frac;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        return (float)(lo + 0.5 * (o->lr - lo) * (1.0 + cos(3.14159265358979 * t)));
    }
    /* step: divide by 10 at each third of the run after warm-up */
    return (float)(o->lr * pow(0.1, floor((e - o->warmup) * 3.0 / (o->epochs - o->warmup + 1))));
}

static void show_progress(const struct run *r, int epoch, size_t done, size_t total,
                          double loss, double acc, double ips)
{
    int width = 24, fill = total ? (int)((double)width * (double)done / (double)total) : 0;
    double eta = ips > 0 ? (double)(total - done) / ips : 0;
    char bar[32];

    if (!r->o.progress)
        return;
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\repoch %d/%d [%s] %3.0f%% loss %.4f acc %.3f %.1f img/s ETA %d:%02d  ",
            epoch + 1, r->o.epochs, bar, total ? 100.0 * (double)done / (double)total : 0.0,
            loss, acc, ips, (int)(eta / 60), (int)eta % 60);
    (void)fflush(stderr);
}

/* One epoch over `order`; returns the mean training loss and accuracy. */
static cxr_err run_epoch(struct run *r, const size_t *order, size_t count, int epoch,
                         double *ret_loss, double *ret_acc)
{
    struct feeder f;
    pthread_t th;
    size_t per = nn_model_input_len(r->model);
    size_t done = 0, correct = 0, nbatches = (count + (size_t)r->o.batch - 1) / (size_t)r->o.batch;
    double loss_sum = 0;
    float *dlogits = NULL;
    struct timespec t0;
    cxr_err err = CXR_OK;

    memset(&f, 0, sizeof(f));
    pthread_mutex_init(&f.mu, NULL);
    pthread_cond_init(&f.cv, NULL);
    f.r = r;
    f.order = order;
    f.count = count;
    f.rng = ds_rand(&r->rng);
    for (int k = 0; k < 2; k++) {
        f.slots[k].x = tu_alloc_floats(per * (size_t)r->o.batch);
        f.slots[k].y = calloc((size_t)r->o.batch, sizeof(int));
        if (!f.slots[k].x || !f.slots[k].y)
            err = CXR_ENOMEM;
    }
    f.scratch = tu_alloc_floats((size_t)r->spec.size * (size_t)r->spec.size);
    dlogits = tu_alloc_floats((size_t)r->o.batch * (size_t)r->nc);
    if (!f.scratch || !dlogits)
        err = CXR_ENOMEM;
    if (!err && pthread_create(&th, NULL, feeder_run, &f) != 0)
        err = CXR_ENOMEM;
    if (err)
        goto out_free;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t b = 0; b < nbatches; b++) {
        struct slot *s = &f.slots[b & 1];
        const float *logits = NULL;
        float loss = 0;
        double secs;

        pthread_mutex_lock(&f.mu);
        while (!s->full)
            pthread_cond_wait(&f.cv, &f.mu);
        pthread_mutex_unlock(&f.mu);

        nn_train_set_lr(r->tr, lr_at(&r->o, epoch, (double)b / (double)nbatches));
        err = nn_train_forward(r->tr, s->x, s->n, &logits);
        if (!err) {
            for (int i = 0; i < s->n; i++)
                correct += tu_argmax(logits + (size_t)i * (size_t)r->nc, r->nc) == s->y[i];
            err = nn_loss_xent(logits, s->y, s->n, r->nc, r->class_weights, r->o.smoothing,
                               &loss, dlogits);
        }
        if (!err && !isfinite(loss))
            err = CXR_EMODEL; /* diverged: a lower --lr is the usual cure */
        if (!err)
            err = nn_train_backward(r->tr, dlogits);
        if (err) {
            feeder_stop(&f);
            break;
        }
        nn_train_step(r->tr);
        loss_sum += (double)loss * s->n;
        done += (size_t)s->n;
        secs = tu_elapsed(&t0);
        show_progress(r, epoch, done, count, loss_sum / (double)done,
                      (double)correct / (double)done, secs > 0 ? (double)done / secs : 0);
        pthread_mutex_lock(&f.mu);
        s->full = false;
        pthread_cond_broadcast(&f.cv);
        pthread_mutex_unlock(&f.mu);
    }
    pthread_join(th, NULL);
    if (r->o.progress)
        fputc('\n', stderr);
    *ret_loss = done ? loss_sum / (double)done : 0;
    *ret_acc = done ? (double)correct / (double)done : 0;
out_free:
    for (int k = 0; k < 2; k++) {
        free(f.slots[k].x);
        free(f.slots[k].y);
    }
    free(f.scratch);
    free(dlogits);
    pthread_mutex_destroy(&f.mu);
    pthread_cond_destroy(&f.cv);
    return err;
}

/* Items of one split that loaded, in data-set order. */
static size_t split_items(const struct run *r, int split, size_t *out)
{
    size_t n = 0;

    for (size_t i = 0; i < r->d.n; i++)
        if (r->d.items[i].split == split && r->cache.slot[i] != TU_NO_SLOT)
            out[n++] = i;
    return n;
}

static cxr_err evaluate(const struct run *r, const nn_model *m, int split, struct tu_scores *ret)
{
    size_t *items = malloc((r->d.n ? r->d.n : 1) * sizeof(*items));
    size_t n = items ? split_items(r, split, items) : 0;
    float *probs = NULL;
    int *labels = NULL;
    cxr_err err = CXR_ENOMEM;

    memset(ret, 0, sizeof(*ret));
    if (!items)
        return CXR_ENOMEM;
    probs = malloc((n ? n : 1) * (size_t)r->nc * sizeof(float));
    labels = malloc((n ? n : 1) * sizeof(int));
    if (probs && labels) {
        for (size_t i = 0; i < n; i++)
            labels[i] = r->d.items[items[i]].label;
        err = tu_predict(m, &r->cache, items, n, probs);
        if (!err)
            tu_score(probs, labels, n, r->nc, ret);
    }
    free(items);
    free(probs);
    free(labels);
    return err;
}

static void meta_num(nn_model *m, const char *key, double v)
{
    char buf[64];

    snprintf(buf, sizeof(buf), "%.6f", v);
    (void)nn_model_set_meta(m, key, buf);
}

static void meta_int(nn_model *m, const char *key, long v)
{
    char buf[64];

    snprintf(buf, sizeof(buf), "%ld", v);
    (void)nn_model_set_meta(m, key, buf);
}

/* The loop's state beside the checkpoint (OUT.ckpt.json), so the model's own metadata stays
 * free of it. */
static cxr_err save_checkpoint(struct run *r, int epoch, char *err, size_t errlen)
{
    struct cxr_buf b;
    char path[4200];
    cxr_err e = nn_model_save(r->model, r->ckpt, err, errlen);

    if (e)
        return e;
    cxr_buf_init(&b, (size_t)1 << 24);
    e = cxr_buf_printf(&b, "{\"next_epoch\": %d, \"best_macro_f1\": %.17g, \"best_epoch\": %d, "
                           "\"rng\": \"%llu\", \"epochs\": [%s]}\n", epoch + 1, r->best_f1,
                       r->best_epoch, (unsigned long long)r->rng, cxr_buf_str(&r->hist));
    snprintf(path, sizeof(path), "%s.json", r->ckpt);
    if (!e)
        e = cxr_file_write_atomic(path, b.data, b.len, 0644);
    cxr_buf_done(&b);
    if (e)
        snprintf(err, errlen, "%.900s: cannot write the training state", path);
    return e;
}

/* Reads OUT.ckpt.json back; the history body is re-serialised into r->hist. */
static cxr_err load_checkpoint_state(struct run *r, char *err, size_t errlen)
{
    char path[4200];
    json_error_t jerr;
    json_t *root, *epochs;
    const char *rng;
    size_t i;
    json_t *e;

    snprintf(path, sizeof(path), "%s.json", r->ckpt);
    root = json_load_file(path, 0, &jerr);
    if (!root) {
        snprintf(err, errlen, "%.600s: %.200s (line %d)", path, jerr.text, jerr.line);
        return CXR_EPARSE;
    }
    r->epoch0 = (int)json_integer_value(json_object_get(root, "next_epoch"));
    r->best_f1 = json_number_value(json_object_get(root, "best_macro_f1"));
    r->best_epoch = (int)json_integer_value(json_object_get(root, "best_epoch"));
    rng = json_string_value(json_object_get(root, "rng"));
    if (rng)
        r->rng = strtoull(rng, NULL, 10);
    epochs = json_object_get(root, "epochs");
    json_array_foreach(epochs, i, e) {
        char *text = json_dumps(e, JSON_COMPACT | JSON_REAL_PRECISION(9));
        if (!text || cxr_buf_printf(&r->hist, "%s%s", r->hist.len ? ", " : "", text)) {
            free(text);
            json_decref(root);
            return CXR_ENOMEM;
        }
        free(text);
    }
    json_decref(root);
    return CXR_OK;
}

static cxr_err write_history(const struct run *r)
{
    struct cxr_buf b;
    cxr_err err;

    cxr_buf_init(&b, (size_t)1 << 24);
    err = cxr_buf_printf(&b, "{\"best_epoch\": %d, \"best_val_macro_f1\": %.6f, \"epochs\": [%s]}\n",
                         r->best_epoch, r->best_f1, cxr_buf_str(&r->hist));
    if (!err)
        err = cxr_file_write_atomic(r->history, b.data, b.len, 0644);
    cxr_buf_done(&b);
    return err;
}

static cxr_err setup_data(struct run *r)
{
    struct cxr_buf errors;
    struct stat st;
    cxr_err err;
    size_t len;

    cxr_buf_init(&errors, 1 << 20);
    if (r->o.init_from) {
        /* Fine-tuning keeps the model's classes: folders must match them. */
        const char *folders = nn_model_meta(r->model, "class_folders");
        const char *names[DS_MAX_CLASSES];
        char copy[1024], *save = NULL;
        int n = 0;

        if (folders) {
            snprintf(copy, sizeof(copy), "%s", folders);
            for (char *t = strtok_r(copy, ",", &save); t && n < DS_MAX_CLASSES;
                 t = strtok_r(NULL, ",", &save))
                names[n++] = t;
        } else {
            for (; n < nn_model_num_classes(r->model) && n < DS_MAX_CLASSES; n++)
                names[n] = nn_model_class_name(r->model, n);
        }
        err = ds_set_classes(&r->d, names, n);
        if (err)
            goto out;
    }
    len = strlen(r->o.data);
    if (stat(r->o.data, &st) == 0 && S_ISREG(st.st_mode) && len > 4 &&
        !strcmp(r->o.data + len - 4, ".csv"))
        err = ds_read_csv(&r->d, r->o.data, &errors);
    else
        err = ds_scan_dir(&r->d, r->o.data, &errors);
    if (!err && r->o.group_regex)
        err = ds_groups_from_regex(&r->d, r->o.group_regex, &errors);
    if (err)
        goto out;
    if (r->o.max_per_class) {
        /* Keep a seeded random subset of each class (whole data-set order otherwise). */
        uint64_t rng = r->o.seed * 0x9E3779B97F4A7C15ULL + 7;
        size_t kept = 0, seen[DS_MAX_CLASSES] = {0}, total[DS_MAX_CLASSES] = {0};
        size_t have[DS_MAX_CLASSES] = {0}, want = (size_t)r->o.max_per_class;
        for (size_t i = 0; i < r->d.n; i++)
            total[r->d.items[i].label]++;
        for (size_t i = 0; i < r->d.n; i++) {
            struct ds_item it = r->d.items[i];
            size_t left = total[it.label] - seen[it.label]++;
            /* Selection sampling: each remaining item is kept with probability need/left. */
            if (have[it.label] < want &&
                ds_rand_unit(&rng) * (double)left < (double)(want - have[it.label])) {
                have[it.label]++;
                r->d.items[kept++] = it;
            } else {
                free(it.path);
                free(it.group);
            }
        }
        r->d.n = kept;
    }
    if (r->o.split_file && access(r->o.split_file, R_OK) == 0) {
        err = ds_split_read(&r->d, r->o.split_file, true, &errors);
    } else {
        err = ds_split(&r->d, r->o.val, r->o.test, r->o.seed);
        if (!err && r->o.split_file && ds_split_write(&r->d, r->o.split_file) != CXR_OK) {
            (void)cxr_buf_printf(&errors, "%s: cannot write the split file\n", r->o.split_file);
            err = CXR_EIO;
        }
    }
out:
    if (errors.len)
        fprintf(stderr, "%s", cxr_buf_str(&errors));
    cxr_buf_done(&errors);
    return err;
}

static cxr_err setup_model(struct run *r, char *err, size_t errlen)
{
    cxr_err e;
    struct nn_input_spec spec;
    const char *names[DS_MAX_CLASSES];
    char display[DS_MAX_CLASSES][64];

    if (r->o.resume && access(r->ckpt, R_OK) == 0) {
        e = nn_model_load(r->ckpt, &r->model, err, errlen);
        if (!e)
            e = load_checkpoint_state(r, err, errlen);
        if (e)
            return e;
        if (access(r->best_ckpt, R_OK) == 0 &&
            cxr_file_read(r->best_ckpt, (size_t)1 << 30, (char **)&r->best, &r->best_len))
            return CXR_EIO;
        fprintf(stderr, "cxrtriage-train: resuming '%s' at epoch %d (best validation macro-F1 "
                        "%.4f at epoch %d; optimiser moments restart)\n",
                r->ckpt, r->epoch0 + 1, r->best_f1, r->best_epoch + 1);
        return CXR_OK;
    }
    if (r->o.init_from)
        return nn_model_load(r->o.init_from, &r->model, err, errlen);
    memset(&spec, 0, sizeof(spec));
    spec.size = r->o.size;
    snprintf(spec.preprocessing, sizeof(spec.preprocessing), "%s", PX_PREPROC_NAME);
    spec.mean = 0.5f;
    spec.std = 0.25f;
    for (int c = 0; c < r->d.nclasses; c++) {
        ds_display_name(r->d.classes[c], display[c], sizeof(display[c]));
        names[c] = display[c];
    }
    return nn_model_build(r->o.arch, &spec, r->d.nclasses, names, r->o.seed, &r->model, err,
                          errlen);
}

/* Mean and standard deviation of the training images' [0,1] pixels. */
static void measure_normalisation(const struct run *r, float *ret_mean, float *ret_std)
{
    double s = 0, s2 = 0, n = 0;
    size_t plane = (size_t)r->cache.size * (size_t)r->cache.size;

    for (size_t i = 0; i < r->d.n; i++) {
        const float *p;
        if (r->d.items[i].split != DS_TRAIN || r->cache.slot[i] == TU_NO_SLOT)
            continue;
        p = r->cache.pix + r->cache.slot[i] * plane;
        for (size_t k = 0; k < plane; k += 7) {
            s += p[k];
            s2 += (double)p[k] * p[k];
            n++;
        }
    }
    *ret_mean = n ? (float)(s / n) : 0.5f;
    *ret_std = n ? (float)sqrt(s2 / n - (s / n) * (s / n)) : 0.25f;
    if (!(*ret_std > 1e-3f))
        *ret_std = 1.0f;
}

/*
 * The decoded images for a reference trainer: int32 n, size; then per loaded item int32 label,
 * int32 split and size*size float32 [0,1] pixels (native byte order).
 */
static cxr_err dump_inputs(const struct run *r, const char *path)
{
    FILE *f = fopen(path, "wb");
    size_t plane = (size_t)r->cache.size * (size_t)r->cache.size;
    int32_t head[2] = {(int32_t)r->cache.nslots, r->cache.size};
    bool ok;

    if (!f)
        return CXR_EIO;
    ok = fwrite(head, sizeof(head), 1, f) == 1;
    for (size_t i = 0; i < r->d.n && ok; i++) {
        int32_t ls[2] = {r->d.items[i].label, r->d.items[i].split};
        if (r->cache.slot[i] == TU_NO_SLOT)
            continue;
        ok = fwrite(ls, sizeof(ls), 1, f) == 1 &&
             fwrite(r->cache.pix + r->cache.slot[i] * plane, sizeof(float), plane, f) == plane;
    }
    return fclose(f) == 0 && ok ? CXR_OK : CXR_EIO;
}

static void run_done(struct run *r)
{
    nn_train_free(r->tr);
    nn_model_free(r->model);
    tu_cache_done(&r->cache);
    ds_done(&r->d);
    free(r->best);
    cxr_buf_done(&r->hist);
}

/* The triage rule's operating points, chosen on the validation split (operating.h). */
static cxr_err choose_operating_points(const struct run *r, nn_model *best, const char *fp,
                                       char *err, size_t errlen)
{
    size_t *items = malloc((r->d.n ? r->d.n : 1) * sizeof(*items));
    size_t n = items ? split_items(r, DS_VAL, items) : 0;
    float *probs = NULL;
    int *labels = NULL;
    char source[128];
    struct op_figures f;
    struct nn_triage_rule rule;
    cxr_err e = CXR_ENOMEM;

    if (!items)
        return CXR_ENOMEM;
    if (!n) {
        free(items);
        (void)snprintf(err, errlen, "no validation images to choose them on");
        return CXR_ENOTFOUND;
    }
    probs = malloc(n * (size_t)r->nc * sizeof(float));
    labels = malloc(n * sizeof(int));
    if (probs && labels) {
        for (size_t i = 0; i < n; i++)
            labels[i] = r->d.items[items[i]].label;
        e = tu_predict(best, &r->cache, items, n, probs);
        (void)snprintf(source, sizeof(source), "validation split of data set %s", fp);
        if (!e)
            e = op_set_model(best, n, labels, probs, source, &f, err, errlen);
        if (!e && nn_triage_rule_init(best, &rule, err, errlen) == CXR_OK)
            op_print(stdout, "validation", &rule, best, &f);
    }
    if (e) { /* no stale operating points from a model this one was fine-tuned from */
        (void)nn_model_del_meta(best, NN_META_TRIAGE_THRESHOLDS);
        (void)nn_model_del_meta(best, NN_META_TRIAGE_NORMAL);
        (void)nn_model_del_meta(best, NN_META_TRIAGE_METHOD);
    }
    free(items);
    free(probs);
    free(labels);
    return e;
}

int train_main(int argc, char **argv)
{
    struct run r;
    char err[1024];
    struct cxr_buf errors;
    struct nn_train_opts to;
    struct timespec t0;
    size_t *order = NULL, ntrain;
    const struct nn_input_spec *in;
    struct tu_scores vs, ts;
    int rc = 1, stale = 0, epoch;
    cxr_err e;

    memset(&r, 0, sizeof(r));
    rc = parse_opts(argc, argv, &r.o);
    if (rc)
        return rc == 1 ? 0 : rc;
    rc = 1;
    cxr_buf_init(&r.hist, (size_t)1 << 22);
    cxr_buf_init(&errors, 1 << 20);
    ds_init(&r.d);
    r.rng = (uint64_t)r.o.seed * 0xD1B54A32D192ED03ULL + 1;
    r.best_f1 = -1;
    r.best_epoch = -1;
    snprintf(r.ckpt, sizeof(r.ckpt), "%s.ckpt", r.o.out);
    snprintf(r.best_ckpt, sizeof(r.best_ckpt), "%s.best.ckpt", r.o.out);
    snprintf(r.history, sizeof(r.history), "%s", r.o.history ? r.o.history : "");
    if (!r.o.history)
        snprintf(r.history, sizeof(r.history), "%s.history.json", r.o.out);
    (void)nn_set_threads(r.o.threads > NN_MAX_THREADS ? NN_MAX_THREADS : r.o.threads);
    clock_gettime(CLOCK_MONOTONIC, &t0);

    if (dcm_global_init() != CXR_OK) {
        fprintf(stderr, "cxrtriage-train: cannot initialise the DICOM codecs\n");
        goto out;
    }
    /* A model to fine-tune comes first: it fixes the classes the data must have. */
    if (r.o.init_from && !r.o.resume) {
        e = nn_model_load(r.o.init_from, &r.model, err, sizeof(err));
        if (e) {
            fprintf(stderr, "cxrtriage-train: %s\n", err);
            goto out;
        }
    }
    if (setup_data(&r) != CXR_OK)
        goto out;
    if (!r.model && setup_model(&r, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "cxrtriage-train: %s\n", err);
        goto out;
    }
    r.nc = nn_model_num_classes(r.model);
    if (r.nc != r.d.nclasses) {
        fprintf(stderr, "cxrtriage-train: the model has %d classes, the data %d\n", r.nc,
                r.d.nclasses);
        goto out;
    }
    in = nn_model_input_spec(r.model);
    if (strcmp(in->preprocessing, PX_PREPROC_NAME) != 0) {
        fprintf(stderr, "cxrtriage-train: the model wants preprocessing '%s'; this build "
                        "implements '%s'\n", in->preprocessing, PX_PREPROC_NAME);
        goto out;
    }
    fprintf(stderr, "cxrtriage-train: %zu images, %d classes; train %zu, val %zu, test %zu; "
                    "input %dx%d x%d; decoding on %d threads\n",
            r.d.n, r.d.nclasses, ds_count(&r.d, DS_TRAIN, -1), ds_count(&r.d, DS_VAL, -1),
            ds_count(&r.d, DS_TEST, -1), in->size, in->size, in->channels, r.o.loader_threads);
    e = tu_cache_load(&r.cache, &r.d, 1u << DS_TRAIN | 1u << DS_VAL | 1u << DS_TEST, in->size,
                      r.o.loader_threads, &errors);
    if (e || r.cache.unreadable) {
        fprintf(stderr, "%scxrtriage-train: %zu unreadable image(s); fix or remove them\n",
                cxr_buf_str(&errors), r.cache.unreadable);
        goto out;
    }
    if (r.cache.not_applicable)
        fprintf(stderr, "cxrtriage-train: note: %zu image(s) would be refused by the "
                        "applicability gate when served\n", r.cache.not_applicable);
    fprintf(stderr, "cxrtriage-train: decoded in %.1f s\n", tu_elapsed(&t0));
    if (r.o.dump) {
        if (dump_inputs(&r, r.o.dump) != CXR_OK) {
            fprintf(stderr, "cxrtriage-train: cannot write '%s'\n", r.o.dump);
            goto out;
        }
        rc = 0;
        goto out;
    }
    if (!r.o.resume || !r.epoch0) {
        float mean, sd;
        if (!r.o.init_from) {
            measure_normalisation(&r, &mean, &sd);
            nn_model_set_normalisation(r.model, mean, sd);
        }
    }
    in = nn_model_input_spec(r.model);
    r.spec.size = in->size;
    r.spec.channels = in->channels;
    r.spec.mean = in->mean;
    r.spec.std = in->std;
    /* Inverse-frequency class weights, normalised so that their mean is 1. */
    for (int c = 0; c < r.nc; c++) {
        size_t n = ds_count(&r.d, DS_TRAIN, c);
        r.class_weights[c] = n ? (float)((double)ds_count(&r.d, DS_TRAIN, -1) /
                                         ((double)r.nc * (double)n)) : 0.0f;
    }
    nn_train_opts_default(&to);
    to.lr = r.o.lr;
    to.weight_decay = r.o.weight_decay;
    to.label_smoothing = r.o.smoothing;
    to.seed = r.o.seed;
    if (nn_train_new(r.model, r.o.batch, &to, &r.tr) != CXR_OK) {
        fprintf(stderr, "cxrtriage-train: out of memory for training state\n");
        goto out;
    }
    if (r.o.freeze)
        nn_train_freeze(r.tr, r.o.freeze);
    (void)nn_train_set_class_weights(r.tr, r.class_weights);

    order = malloc((r.d.n ? r.d.n : 1) * sizeof(*order));
    if (!order)
        goto out;
    for (epoch = r.epoch0; epoch < r.o.epochs; epoch++) {
        double tl, ta, secs;
        struct timespec te;

        clock_gettime(CLOCK_MONOTONIC, &te);
        ntrain = split_items(&r, DS_TRAIN, order);
        for (size_t i = ntrain; i > 1; i--) {
            size_t j = (size_t)(ds_rand(&r.rng) % i), t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        e = run_epoch(&r, order, ntrain, epoch, &tl, &ta);
        if (e) {
            fprintf(stderr, "cxrtriage-train: epoch %d failed: %s%s\n", epoch + 1,
                    cxr_strerror(e), e == CXR_EMODEL ? " (the loss diverged: try a lower --lr)" : "");
            goto out;
        }
        e = evaluate(&r, r.model, DS_VAL, &vs);
        if (e) {
            fprintf(stderr, "cxrtriage-train: validation failed: %s\n", cxr_strerror(e));
            goto out;
        }
        secs = tu_elapsed(&te);
        (void)cxr_buf_printf(&r.hist,
                             "%s{\"epoch\": %d, \"lr\": %.6g, \"train_loss\": %.6f, "
                             "\"train_accuracy\": %.6f, \"val_loss\": %.6f, \"val_accuracy\": "
                             "%.6f, \"val_macro_f1\": %.6f, \"seconds\": %.1f}",
                             r.hist.len ? ", " : "", epoch + 1,
                             (double)lr_at(&r.o, epoch, 1.0), tl, ta, vs.loss, vs.accuracy,
                             vs.macro_f1, secs);
        fprintf(stderr, "epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f acc %.3f "
                        "macro-F1 %.4f | %.0f s (%.1f img/s)%s\n",
                epoch + 1, r.o.epochs, tl, ta, vs.loss, vs.accuracy, vs.macro_f1, secs,
                (double)ntrain / secs, vs.macro_f1 > r.best_f1 + 1e-4 ? " best" : "");
        if (vs.macro_f1 > r.best_f1 + 1e-4) {
            r.best_f1 = vs.macro_f1;
            r.best_epoch = epoch;
            stale = 0;
            free(r.best);
            r.best = NULL;
            if (nn_model_serialize(r.model, &r.best, &r.best_len, err, sizeof(err)) != CXR_OK ||
                cxr_file_write_atomic(r.best_ckpt, r.best, r.best_len, 0644) != CXR_OK) {
                fprintf(stderr, "cxrtriage-train: cannot keep the best model: %s\n", err);
                goto out;
            }
        } else {
            stale++;
        }
        if (save_checkpoint(&r, epoch, err, sizeof(err)) != CXR_OK) {
            fprintf(stderr, "cxrtriage-train: checkpoint: %s\n", err);
            goto out;
        }
        if (stale >= r.o.patience) {
            fprintf(stderr, "cxrtriage-train: no better validation macro-F1 for %d epochs: "
                            "stopping early\n", stale);
            break;
        }
    }
    if (!r.best) {
        fprintf(stderr, "cxrtriage-train: no epoch was run (already at --epochs?)\n");
        goto out;
    }
    {
        nn_model *best = NULL;
        char fp[64], when[32], folders[1024] = "";
        time_t now = time(NULL);
        struct tm tm;
        size_t fl = 0;

        if (nn_model_load_mem(r.best, r.best_len, &best, err, sizeof(err)) != CXR_OK) {
            fprintf(stderr, "cxrtriage-train: best model: %s\n", err);
            goto out;
        }
        e = evaluate(&r, best, DS_TEST, &ts);
        gmtime_r(&now, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        tu_dataset_fingerprint(&r.d, fp, sizeof(fp));
        for (int c = 0; c < r.d.nclasses; c++)
            fl += (size_t)snprintf(folders + fl, sizeof(folders) - fl, "%s%s", c ? "," : "",
                                   r.d.classes[c]);
        /* Keys a model fine-tuned from an older checkpoint may carry: not part of a model. */
        for (int k = nn_model_meta_count(best) - 1; k >= 0; k--) {
            const char *key, *val;
            if (nn_model_meta_at(best, k, &key, &val) && is_loop_state_key(key))
                (void)nn_model_del_meta(best, key);
        }
        (void)nn_model_set_meta(best, "class_folders", folders);
        (void)nn_model_set_meta(best, "trained_at", when);
        (void)nn_model_set_meta(best, "dataset", r.o.data);
        (void)nn_model_set_meta(best, "dataset_fingerprint", fp);
        (void)nn_model_set_meta(best, "arch", r.o.arch ? r.o.arch : "(from --init-from)");
        meta_int(best, "seed", r.o.seed);
        meta_int(best, "epochs_run", epoch < r.o.epochs ? epoch + 1 : r.o.epochs);
        meta_int(best, "best_epoch", r.best_epoch + 1);
        meta_int(best, "train_images", (long)ds_count(&r.d, DS_TRAIN, -1));
        meta_int(best, "val_images", (long)ds_count(&r.d, DS_VAL, -1));
        meta_int(best, "test_images", (long)ds_count(&r.d, DS_TEST, -1));
        meta_num(best, "val_macro_f1", r.best_f1);
        meta_num(best, "training_seconds", tu_elapsed(&t0));
        if (!e && ds_count(&r.d, DS_TEST, -1)) {
            meta_num(best, "test_accuracy", ts.accuracy);
            meta_num(best, "test_macro_f1", ts.macro_f1);
            for (int c = 0; c < r.nc; c++) {
                char key[96];
                snprintf(key, sizeof(key), "test_recall_%s", r.d.classes[c]);
                meta_num(best, key, ts.recall[c]);
                snprintf(key, sizeof(key), "test_precision_%s", r.d.classes[c]);
                meta_num(best, key, ts.precision[c]);
            }
        }
        (void)nn_model_set_meta(best, "intended_use", "triage decision support only, not a diagnosis");
        if (choose_operating_points(&r, best, fp, err, sizeof(err)) != CXR_OK)
            fprintf(stderr, "cxrtriage-train: triage operating points: %s; the model keeps "
                            "the default rule\n", err);
        if (nn_model_save(best, r.o.out, err, sizeof(err)) != CXR_OK) {
            fprintf(stderr, "cxrtriage-train: %s\n", err);
            nn_model_free(best);
            goto out;
        }
        if (write_history(&r) != CXR_OK)
            fprintf(stderr, "cxrtriage-train: cannot write '%s', ignoring\n", r.history);
        printf("model: %s\ndigest: %s\nbest epoch: %d, validation macro-F1 %.4f\n", r.o.out,
               nn_model_digest(best), r.best_epoch + 1, r.best_f1);
        if (!e && ds_count(&r.d, DS_TEST, -1))
            printf("test: accuracy %.4f, macro-F1 %.4f (%zu images)\n", ts.accuracy, ts.macro_f1,
                   ds_count(&r.d, DS_TEST, -1));
        printf("training time: %.0f s\n%s\n", tu_elapsed(&t0), CXR_DISCLAIMER);
        nn_model_free(best);
    }
    rc = 0;
out:
    free(order);
    cxr_buf_done(&errors);
    run_done(&r);
    return rc;
}
