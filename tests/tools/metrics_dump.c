/*
 * metrics_dump.c - test driver for trainer/metrics.c and trainer/report.c.
 *
 *   metrics_dump [--boot B] [--seed S] [--op CLASS:RECALL]... [--html F] [--demo-epochs N]
 *                [--names a,b,c] CSV
 *
 * CSV has one line per sample: "truth,p0,p1,...,p(k-1)" (k from the first line). Prints the
 * metrics as JSON (rpt_metrics_json, plus "operating_points") on stdout, and with --html writes
 * the evaluation report (--demo-epochs adds made-up training curves to exercise that plot).
 * Used by tests/integration/test_metrics_sklearn.sh and for report screenshots.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "report.h"

#define MAX_OPS 8

static int die(const char *msg, const char *arg)
{
    fprintf(stderr, "metrics_dump: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

int main(int argc, char **argv)
{
    struct met_options mo = {0, 42};
    const char *csv = NULL, *html = NULL, *names_arg = NULL;
    size_t demo_epochs = 0, n_ops = 0, cap = 0, n = 0, k = 0;
    size_t op_cls[MAX_OPS];
    double op_rec[MAX_OPS];
    int *truth = NULL;
    double *prob = NULL;
    char line[65536];
    FILE *f;
    struct met_report *m = NULL;
    struct cxr_buf errs;
    char *names[MET_MAX_CLASSES] = {0};
    struct met_oppoint ops[MAX_OPS];
    struct rpt_epoch *ep = NULL;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--boot") && i + 1 < argc)
            mo.boot_resamples = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            mo.seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--html") && i + 1 < argc)
            html = argv[++i];
        else if (!strcmp(argv[i], "--names") && i + 1 < argc)
            names_arg = argv[++i];
        else if (!strcmp(argv[i], "--demo-epochs") && i + 1 < argc)
            demo_epochs = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--op") && i + 1 < argc && n_ops < MAX_OPS) {
            char *end;
            op_cls[n_ops] = strtoul(argv[++i], &end, 10);
            if (*end != ':')
                return die("--op wants CLASS:RECALL", argv[i]);
            op_rec[n_ops++] = strtod(end + 1, NULL);
        } else if (argv[i][0] != '-' && !csv)
            csv = argv[i];
        else
            return die("bad argument", argv[i]);
    }
    if (!csv)
        return die("usage: metrics_dump [options] CSV", NULL);
    f = fopen(csv, "r");
    if (!f)
        return die(strerror(errno), csv);
    while (fgets(line, sizeof(line), f)) {
        size_t cols = 0;
        char *p = line, *end;
        double v[MET_MAX_CLASSES + 1];
        while (cols <= MET_MAX_CLASSES) {
            v[cols++] = strtod(p, &end);
            if (end == p)
                break;
            p = end;
            if (*p != ',')
                break;
            p++;
        }
        if (k == 0)
            k = cols - 1;
        if (cols - 1 != k || k < 2) {
            (void)fclose(f);
            free(truth);
            free(prob);
            return die("bad CSV line", line);
        }
        if (n == cap) {
            int *nt;
            double *np;
            cap = cap ? cap * 2 : 1024;
            nt = realloc(truth, cap * sizeof(*truth));
            if (!nt)
                abort();
            truth = nt;
            np = realloc(prob, cap * k * sizeof(*prob));
            if (!np)
                abort();
            prob = np;
        }
        truth[n] = (int)v[0];
        memcpy(prob + n * k, v + 1, k * sizeof(double));
        n++;
    }
    (void)fclose(f);

    for (size_t c = 0; c < k; c++) {
        char tmp[32];
        (void)snprintf(tmp, sizeof(tmp), "class%zu", c);
        names[c] = strdup(tmp);
    }
    if (names_arg) {
        char *dup = strdup(names_arg), *save = NULL, *t;
        size_t c = 0;
        for (t = strtok_r(dup, ",", &save); t && c < k; t = strtok_r(NULL, ",", &save), c++) {
            free(names[c]);
            names[c] = strdup(t);
        }
        free(dup);
    }

    cxr_buf_init(&errs, 4096);
    if (met_compute(n, k, truth, prob, &mo, &m, &errs) != CXR_OK) {
        fprintf(stderr, "metrics_dump: %s", cxr_buf_str(&errs));
        goto out;
    }
    for (size_t i = 0; i < n_ops; i++) {
        cxr_err e = met_operating_point(n, k, truth, prob, op_cls[i], op_rec[i], &ops[i]);
        if (e != CXR_OK) {
            fprintf(stderr, "metrics_dump: operating point: %s\n", cxr_strerror(e));
            goto out;
        }
    }
    {
        json_t *j = rpt_metrics_json(m, (const char *const *)names);
        json_t *a = json_array();
        char *s;
        for (size_t i = 0; i < n_ops; i++)
            json_array_append_new(a, json_pack("{s:i,s:f,s:f,s:f,s:f,s:f,s:i,s:i,s:i,s:i}",
                                               "class", (int)ops[i].cls, "target_recall",
                                               ops[i].target_recall, "threshold",
                                               ops[i].threshold, "recall", ops[i].recall,
                                               "specificity", ops[i].specificity, "precision",
                                               ops[i].precision, "tp", (int)ops[i].tp, "fp",
                                               (int)ops[i].fp, "fn", (int)ops[i].fn, "tn",
                                               (int)ops[i].tn));
        json_object_set_new(j, "operating_points", a);
        s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17));
        puts(s);
        free(s);
        json_decref(j);
    }
    if (html) {
        struct rpt_eval ev = {0};
        if (demo_epochs) {
            ep = calloc(demo_epochs, sizeof(*ep));
            for (size_t e = 0; e < demo_epochs; e++) {
                double t = (double)e / (double)demo_epochs;
                ep[e] = (struct rpt_epoch){(int)e + 1, 1.3 * exp(-3 * t) + 0.2,
                                           1.3 * exp(-2 * t) + 0.35, 0.5 + 0.45 * (1 - exp(-4 * t)),
                                           0.5 + 0.3 * (1 - exp(-3 * t)), 0.45 + 0.5 * (1 - exp(-4 * t)),
                                           0.42 + 0.33 * (1 - exp(-3 * t)), 1e-3, 60};
            }
        }
        ev.model_name = "demo <model> & \"quotes\"";
        ev.model_digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        ev.dataset = csv;
        ev.class_names = (const char *const *)names;
        ev.metrics = m;
        ev.epochs = ep;
        ev.n_epochs = demo_epochs;
        ev.ops = ops;
        ev.n_ops = n_ops;
        if (rpt_eval_write(&ev, html, NULL, &errs) != CXR_OK) {
            fprintf(stderr, "metrics_dump: %s", cxr_buf_str(&errs));
            goto out;
        }
    }
    rc = 0;
out:
    cxr_buf_done(&errs);
    met_report_free(m);
    for (size_t c = 0; c < MET_MAX_CLASSES; c++)
        free(names[c]);
    free(ep);
    free(truth);
    free(prob);
    return rc;
}
