/*
 * eval.c - `cxrtriage-train eval`.
 *
 * The model fixes the classes: the data's folders (or CSV labels) must be among them. Images
 * are decoded once on loader threads (trainutil.h), scored in batches, and handed to the
 * metrics (metrics.h) and the report writer (report.h). Subgroups (--subgroup-regex on file
 * names, e.g. the source of each image) get their own accuracy, macro-F1, recall per class
 * and confusion matrix, since a model can score well overall by learning who took the image.
 */
#include "eval.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common.h"
#include "dataset.h"
#include "dicom.h"
#include "metrics.h"
#include "model.h"
#include "operating.h"
#include "report.h"
#include "trainutil.h"

#define EVAL_MAX_OPS 16
#define EVAL_MAX_SUBGROUPS 64

struct eval_opts {
    const char *model, *data, *split_file, *out_dir, *history, *errors_dir, *subgroup_regex;
    int split; /* -1: all images */
    int bootstrap, threads, mistakes;
    uint32_t seed;
    const char *thresholds[EVAL_MAX_OPS];
    int n_thresholds;
};

static void usage(FILE *out)
{
    fprintf(out,
        "Usage: cxrtriage-train eval --model MODEL --data DIR|CSV [OPTION]...\n"
        "Evaluates MODEL on labelled images. %s\n\n"
        "  --split-file F         the split file written by `train` (with --split)\n"
        "  --split NAME           test (default with a split file), val, train or all\n"
        "  --out-dir DIR          where report.html, report.json and predictions.csv go (.)\n"
        "  --history FILE         training curves (default MODEL.history.json when present)\n"
        "  --threshold CLASS:R    operating point reaching recall R for CLASS, e.g.\n"
        "                         'COVID-19:0.95' (repeatable)\n"
        "  --subgroup-regex RE    per-subgroup tables; the group is RE's first capture group\n"
        "                         on the file name (e.g. '^([a-zA-Z0-9]+)__' for the source)\n"
        "  --errors DIR           write the most confident mistakes there as PNGs (the model's\n"
        "                         input) and show them in the report\n"
        "  --mistakes N           how many mistakes to show (12)\n"
        "  --bootstrap N          resamples for the 95 %% intervals (1000; 0 = none)\n"
        "  --seed N               bootstrap seed (1)\n"
        "  --threads N            decoding threads (all cores)\n",
        CXR_DISCLAIMER);
}

static int parse_opts(int argc, char **argv, struct eval_opts *o)
{
    enum { O_MODEL = 256, O_DATA, O_SPLITF, O_SPLIT, O_OUT, O_HIST, O_THR, O_SUB, O_ERR,
           O_MIS, O_BOOT, O_SEED, O_THREADS };
    static const struct option lo[] = {
        {"model", 1, NULL, O_MODEL}, {"data", 1, NULL, O_DATA}, {"split-file", 1, NULL, O_SPLITF},
        {"split", 1, NULL, O_SPLIT}, {"out-dir", 1, NULL, O_OUT}, {"history", 1, NULL, O_HIST},
        {"threshold", 1, NULL, O_THR}, {"subgroup-regex", 1, NULL, O_SUB},
        {"errors", 1, NULL, O_ERR}, {"mistakes", 1, NULL, O_MIS}, {"bootstrap", 1, NULL, O_BOOT},
        {"seed", 1, NULL, O_SEED}, {"threads", 1, NULL, O_THREADS}, {"help", 0, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const char *split = NULL;
    int c, seed = 1;

    memset(o, 0, sizeof(*o));
    o->out_dir = ".";
    o->bootstrap = 1000;
    o->mistakes = 12;
    o->threads = cores > 0 ? (int)cores : 1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case O_MODEL: o->model = optarg; break;
        case O_DATA: o->data = optarg; break;
        case O_SPLITF: o->split_file = optarg; break;
        case O_SPLIT: split = optarg; break;
        case O_OUT: o->out_dir = optarg; break;
        case O_HIST: o->history = optarg; break;
        case O_SUB: o->subgroup_regex = optarg; break;
        case O_ERR: o->errors_dir = optarg; break;
        case O_THR:
            if (o->n_thresholds == EVAL_MAX_OPS) {
                fprintf(stderr, "cxrtriage-train: at most %d --threshold options\n", EVAL_MAX_OPS);
                return 2;
            }
            o->thresholds[o->n_thresholds++] = optarg;
            break;
        case O_MIS: if (tu_parse_int(optarg, 0, RPT_MAX_MISTAKES, &o->mistakes, "--mistakes")) return 2; break;
        case O_BOOT: if (tu_parse_int(optarg, 0, 100000, &o->bootstrap, "--bootstrap")) return 2; break;
        case O_SEED: if (tu_parse_int(optarg, 0, 2147483647, &seed, "--seed")) return 2; break;
        case O_THREADS: if (tu_parse_int(optarg, 1, 256, &o->threads, "--threads")) return 2; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return 2;
        }
    }
    o->seed = (uint32_t)seed;
    if (optind < argc || !o->model || !o->data) {
        fprintf(stderr, "cxrtriage-train eval: --model and --data are required\n");
        usage(stderr);
        return 2;
    }
    o->split = o->split_file ? DS_TEST : -1;
    if (split) {
        if (!strcmp(split, "all"))
            o->split = -1;
        else if (!strcmp(split, "train"))
            o->split = DS_TRAIN;
        else if (!strcmp(split, "val"))
            o->split = DS_VAL;
        else if (!strcmp(split, "test"))
            o->split = DS_TEST;
        else {
            fprintf(stderr, "cxrtriage-train: --split '%s', expected test, val, train or all\n", split);
            return 2;
        }
        if (o->split >= 0 && !o->split_file) {
            fprintf(stderr, "cxrtriage-train: --split %s needs --split-file\n", split);
            return 2;
        }
    }
    return 0;
}

/* Per-epoch curves from the JSON that `train` writes; absent or unreadable: none. */
static struct rpt_epoch *read_history(const char *path, size_t *ret_n)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr), *arr;
    struct rpt_epoch *ep = NULL;
    size_t n;

    *ret_n = 0;
    if (!root)
        return NULL;
    arr = json_object_get(root, "epochs");
    n = json_is_array(arr) ? json_array_size(arr) : 0;
    if (n && n <= RPT_MAX_EPOCHS)
        ep = calloc(n, sizeof(*ep));
    for (size_t i = 0; ep && i < n; i++) {
        json_t *e = json_array_get(arr, i);
#define NUM(key) (json_is_number(json_object_get(e, key)) ? json_number_value(json_object_get(e, key)) : NAN)
        ep[i].epoch = (int)json_integer_value(json_object_get(e, "epoch"));
        ep[i].train_loss = NUM("train_loss");
        ep[i].val_loss = NUM("val_loss");
        ep[i].train_accuracy = NUM("train_accuracy");
        ep[i].val_accuracy = NUM("val_accuracy");
        ep[i].train_macro_f1 = NAN;
        ep[i].val_macro_f1 = NUM("val_macro_f1");
        ep[i].learning_rate = NUM("lr");
        ep[i].seconds = NUM("seconds");
#undef NUM
    }
    if (ep)
        *ret_n = n;
    json_decref(root);
    return ep;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* Subgroup tables on stdout and in the JSON: one met_report per group (no bootstrap). */
static cxr_err subgroups(const struct eval_opts *o, const struct ds *d, const nn_model *m,
                         const char *const *names, const size_t *items, size_t n,
                         const int *truth, const double *prob, json_t *out)
{
    regex_t re;
    char keys[EVAL_MAX_SUBGROUPS][64];
    int nkeys = 0, *gid, nc = nn_model_num_classes(m);
    int *t = NULL;
    double *p = NULL;
    cxr_err err = CXR_OK;

    if (regcomp(&re, o->subgroup_regex, REG_EXTENDED)) {
        fprintf(stderr, "cxrtriage-train: --subgroup-regex '%s' is not a valid regex\n",
                o->subgroup_regex);
        return CXR_EINVAL;
    }
    gid = malloc((n ? n : 1) * sizeof(int));
    t = malloc((n ? n : 1) * sizeof(int));
    p = malloc((n ? n : 1) * (size_t)nc * sizeof(double));
    if (!gid || !t || !p) {
        err = CXR_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = base_name(d->items[items[i]].path);
        regmatch_t mt[2];
        char key[64] = "(other)";
        int g;
        if (regexec(&re, name, 2, mt, 0) == 0) {
            int k = mt[1].rm_so >= 0 ? 1 : 0;
            int len = (int)(mt[k].rm_eo - mt[k].rm_so);
            snprintf(key, sizeof(key), "%.*s", len, name + mt[k].rm_so);
        }
        for (g = 0; g < nkeys && strcmp(keys[g], key) != 0; g++)
            ;
        if (g == nkeys) {
            if (nkeys == EVAL_MAX_SUBGROUPS) {
                g = nkeys - 1; /* lump the rest into the last group */
            } else {
                snprintf(keys[nkeys++], sizeof(keys[0]), "%s", key);
            }
        }
        gid[i] = g;
    }
    printf("\nSubgroups (by /%s/ on file names):\n%-16s %6s %8s %8s", o->subgroup_regex,
           "group", "n", "accuracy", "macroF1");
    for (int c = 0; c < nc; c++)
        printf("  recall:%-12.12s", nn_model_class_name(m, c));
    printf("\n");
    for (int g = 0; g < nkeys && !err; g++) {
        size_t k = 0;
        struct met_report *r = NULL;
        json_t *jg;
        for (size_t i = 0; i < n; i++)
            if (gid[i] == g) {
                t[k] = truth[i];
                memcpy(p + k * (size_t)nc, prob + i * (size_t)nc, sizeof(double) * (size_t)nc);
                k++;
            }
        err = met_compute(k, (size_t)nc, t, p, NULL, &r, NULL);
        if (err)
            break;
        printf("%-16s %6zu %8.4f %8.4f", keys[g], k, r->accuracy, r->macro_f1);
        for (int c = 0; c < nc; c++) {
            if (r->cls[c].support)
                printf("  %19.4f", r->cls[c].recall);
            else
                printf("  %19s", "-");
        }
        printf("\n");
        jg = rpt_metrics_json(r, names);
        if (jg) {
            json_object_set_new(jg, "n", json_integer((json_int_t)k));
            json_object_set_new(out, keys[g], jg);
        }
        met_report_free(r);
    }
out:
    regfree(&re);
    free(gid);
    free(t);
    free(p);
    return err;
}

/* Sets the data set's classes from the model: its class_folders, else its class names. */
static cxr_err classes_from_model(struct ds *d, const nn_model *m)
{
    const char *folders = nn_model_meta(m, "class_folders");
    const char *cls[DS_MAX_CLASSES];
    char copy[1024], *save = NULL;
    int k = 0, nc = nn_model_num_classes(m);

    if (folders) {
        snprintf(copy, sizeof(copy), "%s", folders);
        for (char *tk = strtok_r(copy, ",", &save); tk && k < DS_MAX_CLASSES;
             tk = strtok_r(NULL, ",", &save))
            cls[k++] = tk;
    }
    if (k != nc)
        for (k = 0; k < nc && k < DS_MAX_CLASSES; k++)
            cls[k] = nn_model_class_name(m, k);
    return ds_set_classes(d, cls, k);
}

cxr_err ev_score(const nn_model *m, const char *data, const char *split_file, int split,
                 int threads, struct ev_scores *ret, struct cxr_buf *errors)
{
    int nc = nn_model_num_classes(m);
    size_t len = strlen(data), n = 0;
    cxr_err e;

    memset(ret, 0, sizeof(*ret));
    ds_init(&ret->d);
    if (nc < 2 || nc > DS_MAX_CLASSES) {
        (void)cxr_buf_printf(errors, "cxrtriage-train: the model has %d classes; 2 to %d are "
                             "supported\n", nc, DS_MAX_CLASSES);
        return CXR_EMODEL;
    }
    if (classes_from_model(&ret->d, m) != CXR_OK) {
        (void)cxr_buf_printf(errors, "cxrtriage-train: the model's classes cannot be used\n");
        return CXR_EMODEL;
    }
    e = len > 4 && !strcmp(data + len - 4, ".csv") ? ds_read_csv(&ret->d, data, errors)
                                                   : ds_scan_dir(&ret->d, data, errors);
    if (!e && split_file)
        e = ds_split_read(&ret->d, split_file, false, errors);
    if (e)
        return e;
    tu_dataset_fingerprint(&ret->d, ret->fingerprint, sizeof(ret->fingerprint));
    /* The chosen split is scored as DS_TEST (the only split the cache is asked for). */
    for (size_t i = 0; i < ret->d.n; i++)
        if (split < 0 || ret->d.items[i].split == split)
            ret->d.items[i].split = DS_TEST;
        else if (ret->d.items[i].split == DS_TEST)
            ret->d.items[i].split = DS_NONE;
    e = tu_cache_load(&ret->cache, &ret->d, 1u << DS_TEST, nn_model_input_spec(m)->size,
                      threads, errors);
    if (e) {
        (void)cxr_buf_printf(errors, "cxrtriage-train: out of memory decoding images\n");
        return e;
    }
    ret->items = malloc((ret->d.n ? ret->d.n : 1) * sizeof(*ret->items));
    ret->truth = malloc((ret->d.n ? ret->d.n : 1) * sizeof(*ret->truth));
    if (!ret->items || !ret->truth)
        return CXR_ENOMEM;
    for (size_t i = 0; i < ret->d.n; i++)
        if (ret->d.items[i].split == DS_TEST && ret->cache.slot[i] != TU_NO_SLOT) {
            ret->items[n] = i;
            ret->truth[n++] = ret->d.items[i].label;
        }
    ret->n = n;
    if (!n) {
        (void)cxr_buf_printf(errors, "cxrtriage-train: no images to evaluate\n");
        return CXR_ENOTFOUND;
    }
    ret->probs = malloc(ret->n * (size_t)nc * sizeof(float));
    if (!ret->probs)
        return CXR_ENOMEM;
    e = tu_predict(m, &ret->cache, ret->items, ret->n, ret->probs);
    if (e)
        (void)cxr_buf_printf(errors, "cxrtriage-train: scoring failed: %s\n", cxr_strerror(e));
    return e;
}

void ev_scores_done(struct ev_scores *s)
{
    free(s->items);
    free(s->probs);
    free(s->truth);
    tu_cache_done(&s->cache);
    ds_done(&s->d);
    memset(s, 0, sizeof(*s));
}

int eval_main(int argc, char **argv)
{
    struct eval_opts o;
    struct ev_scores sc;
    nn_model *m = NULL;
    struct cxr_buf errors;
    char err[1024], path[4096], hist_path[4096];
    const size_t *items = NULL;
    size_t n = 0;
    const float *probs = NULL;
    double *dprob = NULL;
    const int *truth = NULL;
    int rc, nc;
    cxr_err serr;
    struct met_report *mr = NULL;
    struct met_oppoint ops[EVAL_MAX_OPS];
    struct rpt_mistake mist[RPT_MAX_MISTAKES];
    unsigned char *pngs[RPT_MAX_MISTAKES] = {NULL};
    size_t n_mist = 0, n_epochs = 0;
    struct rpt_epoch *epochs = NULL;
    const char *names[DS_MAX_CLASSES];
    json_t *sub = NULL;

    rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    rc = 1;
    memset(&sc, 0, sizeof(sc));
    ds_init(&sc.d);
    cxr_buf_init(&errors, 1 << 20);
    (void)nn_set_threads(o.threads > NN_MAX_THREADS ? NN_MAX_THREADS : o.threads);
    if (dcm_global_init() != CXR_OK) {
        fprintf(stderr, "cxrtriage-train: cannot initialise the DICOM codecs\n");
        goto out;
    }
    if (nn_model_load(o.model, &m, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "cxrtriage-train: %s\n", err);
        goto out;
    }
    nc = nn_model_num_classes(m);
    serr = ev_score(m, o.data, o.split_file, o.split, o.threads, &sc, &errors);
    if (serr == CXR_OK && sc.cache.unreadable)
        fprintf(stderr, "%scxrtriage-train: %zu unreadable image(s) left out of the evaluation\n",
                cxr_buf_str(&errors), sc.cache.unreadable);
    if (serr != CXR_OK) {
        fprintf(stderr, "%s", cxr_buf_str(&errors));
        goto out;
    }
    for (int c = 0; c < nc; c++)
        names[c] = nn_model_class_name(m, c);
    items = sc.items;
    n = sc.n;
    probs = sc.probs;
    truth = sc.truth;
    dprob = malloc(n * (size_t)nc * sizeof(double));
    if (!dprob)
        goto out;
    for (size_t i = 0; i < n * (size_t)nc; i++)
        dprob[i] = probs[i];
    {
        struct met_options mo = {.boot_resamples = (size_t)o.bootstrap, .seed = o.seed};
        if (met_compute(n, (size_t)nc, truth, dprob, &mo, &mr, &errors) != CXR_OK) {
            fprintf(stderr, "%scxrtriage-train: metrics failed\n", cxr_buf_str(&errors));
            goto out;
        }
    }
    for (int k = 0; k < o.n_thresholds; k++) {
        size_t ci;
        double target;
        if (met_parse_target(o.thresholds[k], names, (size_t)nc, &ci, &target, &errors) != CXR_OK ||
            met_operating_point(n, (size_t)nc, truth, dprob, ci, target, &ops[k]) != CXR_OK) {
            fprintf(stderr, "%scxrtriage-train: --threshold '%s' cannot be met (expected "
                            "CLASS:RECALL with a class that has positives)\n",
                    cxr_buf_str(&errors), o.thresholds[k]);
            goto out;
        }
    }
    /* The most confident mistakes, as the model saw them. */
    if (o.mistakes > 0) {
        size_t idx[RPT_MAX_MISTAKES];
        const struct nn_input_spec *in = nn_model_input_spec(m);
        size_t plane = (size_t)in->size * (size_t)in->size;

        if (met_top_mistakes(n, (size_t)nc, truth, dprob, (size_t)o.mistakes, idx, &n_mist) != CXR_OK)
            goto out;
        if (o.errors_dir && cxr_mkdir_p(o.errors_dir, 0755) != CXR_OK) {
            fprintf(stderr, "cxrtriage-train: cannot create '%s'\n", o.errors_dir);
            goto out;
        }
        for (size_t j = 0; j < n_mist; j++) {
            size_t best = idx[j];
            int pred = tu_argmax(probs + best * (size_t)nc, nc);
            mist[j].path = sc.d.items[items[best]].path;
            mist[j].truth = (size_t)truth[best];
            mist[j].pred = (size_t)pred;
            mist[j].confidence = probs[best * (size_t)nc + (size_t)pred];
            mist[j].png = NULL;
            mist[j].png_len = 0;
            if (o.errors_dir) {
                char *data = NULL;
                size_t len = 0;
                snprintf(path, sizeof(path), "%s/%02zu_%s_as_%s.png", o.errors_dir, j + 1,
                         names[truth[best]], names[pred]);
                for (char *q = path + strlen(o.errors_dir) + 1; *q; q++)
                    if (*q == ' ' || *q == '/')
                        *q = '_';
                if (px_write_png(path, sc.cache.pix + sc.cache.slot[items[best]] * plane, in->size, err,
                                 sizeof(err)) == CXR_OK &&
                    cxr_file_read(path, RPT_MAX_PNG, &data, &len) == CXR_OK) {
                    pngs[j] = (unsigned char *)data;
                    mist[j].png = pngs[j];
                    mist[j].png_len = len;
                }
            }
        }
    }
    snprintf(hist_path, sizeof(hist_path), "%s.history.json", o.model);
    epochs = read_history(o.history ? o.history : hist_path, &n_epochs);

    /* Stdout: the headline and the per-class table. */
    printf("model: %s (sha256 %s)\ndata: %s, %s: %zu images\n", o.model, nn_model_digest(m),
           o.data, o.split < 0 ? "all" : ds_split_name(o.split), n);
    printf("accuracy %.4f [%.4f, %.4f]  macro-F1 %.4f [%.4f, %.4f]  macro-AUC %.4f  ECE %.4f\n",
           mr->accuracy, mr->ci_accuracy.lo, mr->ci_accuracy.hi, mr->macro_f1,
           mr->ci_macro_f1.lo, mr->ci_macro_f1.hi, mr->macro_auc, mr->ece);
    printf("%-18s %9s %9s %11s %8s %8s %7s\n", "class", "precision", "recall", "specificity",
           "F1", "AUC", "support");
    for (int c = 0; c < nc; c++)
        printf("%-18s %9.4f %9.4f %11.4f %8.4f %8.4f %7zu\n", names[c], mr->cls[c].precision,
               mr->cls[c].recall, mr->cls[c].specificity, mr->cls[c].f1, mr->cls[c].auc,
               mr->cls[c].support);
    for (int k = 0; k < o.n_thresholds; k++)
        printf("operating point %s recall >= %.3f: threshold %.4f, recall %.4f, specificity "
               "%.4f, precision %.4f\n", names[ops[k].cls], ops[k].target_recall,
               ops[k].threshold, ops[k].recall, ops[k].specificity, ops[k].precision);
    {
        /* The model's triage rule on these images: what the model card reports. */
        struct nn_triage_rule rule;
        struct op_figures f;
        if (nn_triage_rule_init(m, &rule, err, sizeof(err)) == CXR_OK) {
            op_measure(&rule, m, n, truth, probs, &f);
            printf("\n");
            op_print(stdout, o.split < 0 ? "all" : ds_split_name(o.split), &rule, m, &f);
        } else {
            fprintf(stderr, "cxrtriage-train: triage rule: %s, ignoring\n", err);
        }
    }
    if (o.subgroup_regex) {
        sub = json_object();
        if (!sub || subgroups(&o, &sc.d, m, names, items, n, truth, dprob, sub) != CXR_OK)
            goto out;
    }
    {
        struct rpt_eval ev;
        char html[4096], jpath[4096];
        json_t *j;
        struct cxr_buf csv;
        cxr_err e;

        memset(&ev, 0, sizeof(ev));
        ev.model_name = o.model;
        ev.model_digest = nn_model_digest(m);
        ev.dataset = o.data;
        ev.dataset_digest = nn_model_meta(m, "dataset_fingerprint");
        ev.class_names = names;
        ev.metrics = mr;
        ev.epochs = epochs;
        ev.n_epochs = n_epochs;
        ev.ops = o.n_thresholds ? ops : NULL;
        ev.n_ops = (size_t)o.n_thresholds;
        ev.mistakes = n_mist ? mist : NULL;
        ev.n_mistakes = n_mist;
        if (cxr_mkdir_p(o.out_dir, 0755) != CXR_OK) {
            fprintf(stderr, "cxrtriage-train: cannot create '%s'\n", o.out_dir);
            goto out;
        }
        snprintf(html, sizeof(html), "%s/report.html", o.out_dir);
        snprintf(jpath, sizeof(jpath), "%s/report.json", o.out_dir);
        if (rpt_eval_write(&ev, html, NULL, &errors) != CXR_OK) {
            fprintf(stderr, "%s", cxr_buf_str(&errors));
            goto out;
        }
        j = rpt_eval_json(&ev);
        if (!j) {
            fprintf(stderr, "cxrtriage-train: out of memory building the JSON\n");
            goto out;
        }
        json_object_set_new(j, "split", json_string(o.split < 0 ? "all" : ds_split_name(o.split)));
        if (sub) {
            json_object_set(j, "subgroups", sub);
            json_object_set_new(j, "subgroup_regex", json_string(o.subgroup_regex));
        }
        e = rpt_json_write(j, jpath, &errors);
        json_decref(j);
        if (e) {
            fprintf(stderr, "%s", cxr_buf_str(&errors));
            goto out;
        }
        cxr_buf_init(&csv, (size_t)1 << 28);
        e = cxr_buf_puts(&csv, "path,truth,predicted");
        for (int c = 0; c < nc && !e; c++)
            e = cxr_buf_printf(&csv, ",p_%s", names[c]);
        e = e ? e : cxr_buf_puts(&csv, "\n");
        for (size_t i = 0; i < n && !e; i++) {
            e = cxr_buf_printf(&csv, "%s,%s,%s", sc.d.items[items[i]].path, names[truth[i]],
                               names[tu_argmax(probs + i * (size_t)nc, nc)]);
            for (int c = 0; c < nc && !e; c++)
                e = cxr_buf_printf(&csv, ",%.6f", (double)probs[i * (size_t)nc + (size_t)c]);
            e = e ? e : cxr_buf_puts(&csv, "\n");
        }
        snprintf(path, sizeof(path), "%s/predictions.csv", o.out_dir);
        if (!e)
            e = cxr_file_write_atomic(path, csv.data, csv.len, 0644);
        cxr_buf_done(&csv);
        if (e) {
            fprintf(stderr, "cxrtriage-train: cannot write '%s'\n", path);
            goto out;
        }
        printf("\nreport: %s\njson: %s\npredictions: %s\n%s\n", html, jpath, path, CXR_DISCLAIMER);
    }
    rc = 0;
out:
    json_decref(sub);
    for (size_t i = 0; i < RPT_MAX_MISTAKES; i++)
        free(pngs[i]);
    free(epochs);
    met_report_free(mr);
    free(dprob);
    ev_scores_done(&sc);
    nn_model_free(m);
    cxr_buf_done(&errors);
    return rc;
}
