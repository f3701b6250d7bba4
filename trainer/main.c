/*
 * main.c - `cxrtriage-train`, the offline trainer: train, eval, explore and export commands.
 * It links model/, dicom/ (the one preprocessing path) and common/ only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "eval.h"
#include "explore.h"
#include "export.h"
#include "plot.h"
#include "report.h"
#include "train.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cxrtriage-train COMMAND [ARG]...\n"
            "Offline trainer and evaluator for the cxrtriage CNN. %s\n\n"
            "Commands:\n"
            "  train    train a model on a folder of labelled images\n"
            "  eval     evaluate a model: metrics, plots and an HTML report\n"
            "  explore  report on a data set: classes, sizes, duplicates, leakage\n"
            "  export   write a deployment copy of a model (training state removed)\n\n"
            "  -h, --help     show this help and exit\n"
            "  -V, --version  show the version and exit\n",
            CXR_DISCLAIMER);
}

static void explore_usage(FILE *out)
{
    fprintf(out,
            "Usage: cxrtriage-train explore --data DIR [--out REPORT.html] [--json OUT.json]\n"
            "                               [--split SPLIT.csv] [--near-distance N]\n"
            "Reports on a data set of one folder per class (PNG and JPEG): class counts and\n"
            "imbalance, image sizes and bit depths, brightness and contrast per class, exact and\n"
            "near duplicates (dHash distance <= N, default 4), unreadable files; with --split\n"
            "(CSV lines PATH,SPLIT, PATH relative to DIR) duplicates across splits.\n"
            "Default output: explore.html in the current directory.\n");
}

static int cmd_explore(int argc, char **argv)
{
    const char *data = NULL, *out = NULL, *json = NULL;
    struct xpl_options opt = {4, NULL};
    struct xpl_dataset *d = NULL;
    struct cxr_buf errs, page;
    size_t readable = 0;
    cxr_err err;
    int rc = 1;

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            explore_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "cxrtriage-train explore: '%s' needs a value\n", a);
            explore_usage(stderr);
            return 2;
        }
        if (!strcmp(a, "--data"))
            data = v;
        else if (!strcmp(a, "--out"))
            out = v;
        else if (!strcmp(a, "--json"))
            json = v;
        else if (!strcmp(a, "--split"))
            opt.split_csv = v;
        else if (!strcmp(a, "--near-distance")) {
            char *end;
            unsigned long n;
            errno = 0;
            n = strtoul(v, &end, 10);
            if (errno || *end || end == v || n > 32) {
                fprintf(stderr, "cxrtriage-train explore: --near-distance '%s': expected 0..32\n",
                        v);
                return 2;
            }
            opt.near_max_distance = (unsigned)n;
        } else {
            fprintf(stderr, "cxrtriage-train explore: unknown option '%s'\n", a);
            explore_usage(stderr);
            return 2;
        }
        i++;
    }
    if (!data) {
        fprintf(stderr, "cxrtriage-train explore: --data DIR is required\n");
        explore_usage(stderr);
        return 2;
    }
    if (!out && !json)
        out = "explore.html";
    cxr_buf_init(&errs, 64 * 1024);
    cxr_buf_init(&page, RPT_MAX_HTML);
    err = xpl_scan(data, &opt, &d, &errs);
    if (err != CXR_OK) {
        if (errs.len)
            fprintf(stderr, "cxrtriage-train explore: %s", cxr_buf_str(&errs));
        else
            fprintf(stderr, "cxrtriage-train explore: '%s': %s\n", data, cxr_strerror(err));
        goto out;
    }
    for (size_t i = 0; i < d->n_warnings; i++)
        fprintf(stderr, "cxrtriage-train explore: warning: %s\n", d->warnings[i]);
    for (size_t i = 0; i < d->n; i++)
        if (!d->img[i].ok)
            fprintf(stderr, "cxrtriage-train explore: unreadable '%s/%s': %s\n", data,
                    d->img[i].path, d->img[i].error ? d->img[i].error : "unknown");
    if (json) {
        json_t *j = xpl_json(d);
        if (!j) {
            fprintf(stderr, "cxrtriage-train explore: '%s': out of memory building the JSON\n",
                    json);
            goto out;
        }
        err = rpt_json_write(j, json, &errs);
        json_decref(j);
        if (err != CXR_OK) {
            fprintf(stderr, "cxrtriage-train explore: %s", cxr_buf_str(&errs));
            goto out;
        }
    }
    if (out) {
        err = xpl_html(d, &page);
        if (err == CXR_OK)
            err = cxr_file_write_atomic(out, page.data, page.len, 0644);
        if (err != CXR_OK) {
            fprintf(stderr, "cxrtriage-train explore: '%s': %s\n", out, cxr_strerror(err));
            goto out;
        }
    }
    for (size_t c = 0; c < d->n_classes; c++)
        readable += d->class_counts[c];
    printf("%zu classes, %zu readable images, %zu unreadable, %zu exact-duplicate groups, "
           "%zu near-duplicate pairs\n",
           d->n_classes, readable, d->n_unreadable, d->n_exact_groups, d->near_total);
    if (d->n_splits)
        printf("across splits: %zu exact-duplicate groups, %zu near-duplicate pairs\n",
               d->leak_exact, d->leak_near);
    if (out)
        printf("report: %s\n", out);
    if (json)
        printf("json: %s\n", json);
    printf("%s\n", CXR_DISCLAIMER);
    rc = 0;
out:
    xpl_dataset_free(d);
    cxr_buf_done(&page);
    cxr_buf_done(&errs);
    return rc;
}

int main(int argc, char **argv)
{

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
        printf("cxrtriage-train %s\n", CXR_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "explore"))
        return cmd_explore(argc, argv);
    if (!strcmp(argv[1], "train"))
        return train_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "eval"))
        return eval_main(argc - 1, argv + 1);
    if (!strcmp(argv[1], "export"))
        return export_main(argc - 1, argv + 1);
    fprintf(stderr, "cxrtriage-train: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
