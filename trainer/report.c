/*
 * report.c - the evaluation report as JSON (jansson) and as one self-contained HTML page with
 * inline SVG (plot.c); see report.h.
 *
 * The JSON builder records any failed insertion in a flag instead of checking each call, and
 * returns NULL when anything failed, so a caller never writes a silently incomplete file.
 */
#include "report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plot.h"


/* ---- JSON ---- */

static json_t *jnum(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static void put(json_t *o, const char *key, json_t *v, bool *ok)
{
    if (!v || !o || json_object_set_new(o, key, v) != 0)
        *ok = false;
}

static void push(json_t *a, json_t *v, bool *ok)
{
    if (!v || !a || json_array_append_new(a, v) != 0)
        *ok = false;
}

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *jarr(const double *v, size_t n, bool *ok)
{
    json_t *a = json_array();

    for (size_t i = 0; i < n && a; i++)
        push(a, jnum(v[i]), ok);
    if (!a)
        *ok = false;
    return a;
}

static json_t *jci(struct met_ci ci, bool *ok)
{
    json_t *o;

    if (isnan(ci.lo) || isnan(ci.hi))
        return json_null();
    o = json_object();
    put(o, "lo", jnum(ci.lo), ok);
    put(o, "hi", jnum(ci.hi), ok);
    return o;
}

static json_t *jcurve(const struct met_curve *cv, bool *ok)
{
    json_t *o = json_object();

    put(o, "x", jarr(cv->x, cv->n, ok), ok);
    put(o, "y", jarr(cv->y, cv->n, ok), ok);
    put(o, "threshold", jarr(cv->thr, cv->n, ok), ok);
    return o;
}

json_t *rpt_metrics_json(const struct met_report *m, const char *const *class_names)
{
    bool ok = true;
    json_t *o, *cm, *cls, *cal, *avg;

    if (!m || !class_names)
        return NULL;
    o = json_object();
    put(o, "samples", json_integer((json_int_t)m->n), &ok);
    put(o, "accuracy", jnum(m->accuracy), &ok);
    put(o, "accuracy_ci95", jci(m->ci_accuracy, &ok), &ok);
    avg = json_object();
    put(avg, "precision", jnum(m->macro_precision), &ok);
    put(avg, "recall", jnum(m->macro_recall), &ok);
    put(avg, "f1", jnum(m->macro_f1), &ok);
    put(avg, "f1_ci95", jci(m->ci_macro_f1, &ok), &ok);
    put(avg, "specificity", jnum(m->macro_specificity), &ok);
    put(avg, "auc", jnum(m->macro_auc), &ok);
    put(avg, "auc_ci95", jci(m->ci_macro_auc, &ok), &ok);
    put(o, "macro", avg, &ok);
    avg = json_object();
    put(avg, "precision", jnum(m->weighted_precision), &ok);
    put(avg, "recall", jnum(m->weighted_recall), &ok);
    put(avg, "f1", jnum(m->weighted_f1), &ok);
    put(o, "weighted", avg, &ok);
    put(o, "log_loss", jnum(m->log_loss), &ok);

    cm = json_array();
    for (size_t t = 0; t < m->k; t++) {
        json_t *row = json_array();
        for (size_t p = 0; p < m->k; p++)
            push(row, json_integer((json_int_t)m->confusion[t * m->k + p]), &ok);
        push(cm, row, &ok);
    }
    put(o, "confusion", cm, &ok);

    cls = json_array();
    for (size_t c = 0; c < m->k; c++) {
        const struct met_class *mc = &m->cls[c];
        json_t *e = json_object();
        put(e, "name", json_string(class_names[c]), &ok);
        put(e, "support", json_integer((json_int_t)mc->support), &ok);
        put(e, "tp", json_integer((json_int_t)mc->tp), &ok);
        put(e, "fp", json_integer((json_int_t)mc->fp), &ok);
        put(e, "fn", json_integer((json_int_t)mc->fn), &ok);
        put(e, "tn", json_integer((json_int_t)mc->tn), &ok);
        put(e, "precision", jnum(mc->precision), &ok);
        put(e, "recall", jnum(mc->recall), &ok);
        put(e, "specificity", jnum(mc->specificity), &ok);
        put(e, "f1", jnum(mc->f1), &ok);
        put(e, "auc", jnum(mc->auc), &ok);
        put(e, "average_precision", jnum(mc->ap), &ok);
        put(e, "precision_ci95", jci(mc->ci_precision, &ok), &ok);
        put(e, "recall_ci95", jci(mc->ci_recall, &ok), &ok);
        put(e, "f1_ci95", jci(mc->ci_f1, &ok), &ok);
        put(e, "auc_ci95", jci(mc->ci_auc, &ok), &ok);
        put(e, "roc", jcurve(&mc->roc, &ok), &ok);
        put(e, "pr", jcurve(&mc->pr, &ok), &ok);
        push(cls, e, &ok);
    }
    put(o, "classes", cls, &ok);

    cal = json_object();
    put(cal, "definition", json_string("top-class confidence, 10 equal-width bins (lo, hi], "
                                       "ECE = sum n_b/N |acc_b - conf_b|"), &ok);
    put(cal, "ece", jnum(m->ece), &ok);
    put(cal, "ece_ci95", jci(m->ci_ece, &ok), &ok);
    put(cal, "mce", jnum(m->mce), &ok);
    {
        json_t *bins = json_array();
        for (size_t b = 0; b < MET_CAL_BINS; b++) {
            json_t *e = json_object();
            put(e, "lo", jnum(m->cal[b].lo), &ok);
            put(e, "hi", jnum(m->cal[b].hi), &ok);
            put(e, "count", json_integer((json_int_t)m->cal[b].count), &ok);
            put(e, "confidence", jnum(m->cal[b].confidence), &ok);
            put(e, "accuracy", jnum(m->cal[b].accuracy), &ok);
            push(bins, e, &ok);
        }
        put(cal, "bins", bins, &ok);
    }
    put(o, "calibration", cal, &ok);
    {
        json_t *bt = json_object();
        put(bt, "resamples", json_integer((json_int_t)m->boot_resamples), &ok);
        put(bt, "seed", json_integer((json_int_t)(m->boot_seed & 0x7fffffffffffffffULL)), &ok);
        put(bt, "method", json_string("percentile, 95 %"), &ok);
        put(o, "bootstrap", bt, &ok);
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static void iso_now(char *out, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;

    if (!gmtime_r(&t, &tm) || strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        (void)snprintf(out, len, "unknown");
}

static bool ev_valid(const struct rpt_eval *ev)
{
    return ev && ev->metrics && ev->class_names && ev->n_epochs <= RPT_MAX_EPOCHS &&
           (ev->epochs || ev->n_epochs == 0) && (ev->ops || ev->n_ops == 0) &&
           (ev->mistakes || ev->n_mistakes == 0);
}

json_t *rpt_eval_json(const struct rpt_eval *ev)
{
    bool ok = true;
    json_t *o, *a;
    char now[64];

    if (!ev_valid(ev))
        return NULL;
    iso_now(now, sizeof(now));
    o = json_object();
    put(o, "disclaimer", json_string(CXR_DISCLAIMER), &ok);
    put(o, "generator", json_string("cxrtriage " CXR_VERSION), &ok);
    put(o, "model", jstr(ev->model_name), &ok);
    put(o, "model_digest", jstr(ev->model_digest), &ok);
    put(o, "dataset", jstr(ev->dataset), &ok);
    put(o, "dataset_digest", jstr(ev->dataset_digest), &ok);
    put(o, "date", json_string(ev->date ? ev->date : now), &ok);
    a = json_array();
    for (size_t c = 0; c < ev->metrics->k; c++)
        push(a, json_string(ev->class_names[c]), &ok);
    put(o, "class_names", a, &ok);
    put(o, "metrics", rpt_metrics_json(ev->metrics, ev->class_names), &ok);

    a = json_array();
    for (size_t i = 0; i < ev->n_epochs; i++) {
        const struct rpt_epoch *e = &ev->epochs[i];
        json_t *r = json_object();
        put(r, "epoch", json_integer(e->epoch), &ok);
        put(r, "train_loss", jnum(e->train_loss), &ok);
        put(r, "val_loss", jnum(e->val_loss), &ok);
        put(r, "train_accuracy", jnum(e->train_accuracy), &ok);
        put(r, "val_accuracy", jnum(e->val_accuracy), &ok);
        put(r, "train_macro_f1", jnum(e->train_macro_f1), &ok);
        put(r, "val_macro_f1", jnum(e->val_macro_f1), &ok);
        put(r, "learning_rate", jnum(e->learning_rate), &ok);
        put(r, "seconds", jnum(e->seconds), &ok);
        push(a, r, &ok);
    }
    put(o, "epochs", a, &ok);

    a = json_array();
    for (size_t i = 0; i < ev->n_ops; i++) {
        const struct met_oppoint *p = &ev->ops[i];
        json_t *r = json_object();
        put(r, "class", json_string(p->cls < ev->metrics->k ? ev->class_names[p->cls] : "?"),
            &ok);
        put(r, "target_recall", jnum(p->target_recall), &ok);
        put(r, "threshold", jnum(p->threshold), &ok);
        put(r, "recall", jnum(p->recall), &ok);
        put(r, "specificity", jnum(p->specificity), &ok);
        put(r, "precision", jnum(p->precision), &ok);
        put(r, "f1", jnum(p->f1), &ok);
        put(r, "tp", json_integer((json_int_t)p->tp), &ok);
        put(r, "fp", json_integer((json_int_t)p->fp), &ok);
        put(r, "fn", json_integer((json_int_t)p->fn), &ok);
        put(r, "tn", json_integer((json_int_t)p->tn), &ok);
        push(a, r, &ok);
    }
    put(o, "operating_points", a, &ok);

    a = json_array();
    for (size_t i = 0; i < ev->n_mistakes; i++) {
        const struct rpt_mistake *mk = &ev->mistakes[i];
        json_t *r = json_object();
        bool in = mk->truth < ev->metrics->k && mk->pred < ev->metrics->k;
        put(r, "path", jstr(mk->path), &ok);
        put(r, "truth", json_string(in ? ev->class_names[mk->truth] : "?"), &ok);
        put(r, "predicted", json_string(in ? ev->class_names[mk->pred] : "?"), &ok);
        put(r, "confidence", jnum(mk->confidence), &ok);
        push(a, r, &ok);
    }
    put(o, "mistakes", a, &ok);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- HTML ---- */

static cxr_err cell_ci(struct cxr_buf *b, double v, struct met_ci ci)
{
    TRY(cxr_buf_puts(b, "<td>"));
    TRY(plot_num(b, 3, v));
    if (!isnan(ci.lo)) {
        TRY(cxr_buf_puts(b, " <span class=\"ci\">["));
        TRY(plot_num(b, 3, ci.lo));
        TRY(cxr_buf_puts(b, ", "));
        TRY(plot_num(b, 3, ci.hi));
        TRY(cxr_buf_puts(b, "]</span>"));
    }
    return cxr_buf_puts(b, "</td>");
}

static cxr_err meta_row(struct cxr_buf *b, const char *k, const char *v)
{
    TRY(cxr_buf_puts(b, "<dt>"));
    TRY(plot_esc(b, k));
    TRY(cxr_buf_puts(b, "</dt><dd>"));
    TRY(plot_esc(b, v ? v : "(not given)"));
    return cxr_buf_puts(b, "</dd>\n");
}

static cxr_err headline(struct cxr_buf *b, const struct met_report *m)
{
    TRY(cxr_buf_puts(b, "<h2>Headline figures</h2>\n<table><tr><th class=\"l\">figure</th>"
                        "<th>value [95 % CI]</th></tr>\n"));
    TRY(cxr_buf_puts(b, "<tr><td class=\"l\">Accuracy</td>"));
    TRY(cell_ci(b, m->accuracy, m->ci_accuracy));
    TRY(cxr_buf_puts(b, "</tr>\n<tr><td class=\"l\">Macro F1</td>"));
    TRY(cell_ci(b, m->macro_f1, m->ci_macro_f1));
    TRY(cxr_buf_puts(b, "</tr>\n<tr><td class=\"l\">Macro AUC (one-vs-rest)</td>"));
    TRY(cell_ci(b, m->macro_auc, m->ci_macro_auc));
    TRY(cxr_buf_puts(b, "</tr>\n<tr><td class=\"l\">Macro precision</td>"));
    TRY(cell_ci(b, m->macro_precision, (struct met_ci){NAN, NAN}));
    TRY(cxr_buf_puts(b, "</tr>\n<tr><td class=\"l\">Macro recall (sensitivity)</td>"));
    TRY(cell_ci(b, m->macro_recall, (struct met_ci){NAN, NAN}));
    TRY(cxr_buf_puts(b, "</tr>\n<tr><td class=\"l\">Weighted F1</td>"));
    TRY(cell_ci(b, m->weighted_f1, (struct met_ci){NAN, NAN}));
    TRY(cxr_buf_puts(b, "</tr>\n<tr><td class=\"l\">Expected calibration error</td>"));
    TRY(cell_ci(b, m->ece, m->ci_ece));
    TRY(cxr_buf_puts(b, "</tr>\n<tr><td class=\"l\">Log loss</td>"));
    TRY(cell_ci(b, m->log_loss, (struct met_ci){NAN, NAN}));
    TRY(cxr_buf_puts(b, "</tr>\n</table>\n"));
    if (m->boot_resamples)
        TRY(cxr_buf_printf(b, "<p class=\"note\">Intervals: percentile bootstrap, %zu resamples "
                              "of the %zu evaluation images (seed %llu).</p>\n",
                           m->boot_resamples, m->n, (unsigned long long)m->boot_seed));
    else
        TRY(cxr_buf_puts(b, "<p class=\"note\">No bootstrap was run: no intervals.</p>\n"));
    return CXR_OK;
}

static cxr_err class_table(struct cxr_buf *b, const struct met_report *m,
                           const char *const *names)
{
    TRY(cxr_buf_puts(b, "<h2>Per class (one-vs-rest)</h2>\n<table><tr><th class=\"l\">class</th>"
                        "<th>support</th><th>precision</th><th>recall (sensitivity)</th>"
                        "<th>specificity</th><th>F1</th><th>ROC AUC</th><th>average precision"
                        "</th></tr>\n"));
    for (size_t c = 0; c < m->k; c++) {
        const struct met_class *mc = &m->cls[c];
        TRY(cxr_buf_puts(b, "<tr><td class=\"l\">"));
        TRY(plot_esc(b, names[c]));
        TRY(cxr_buf_printf(b, "</td><td>%zu</td>", mc->support));
        TRY(cell_ci(b, mc->precision, mc->ci_precision));
        TRY(cell_ci(b, mc->recall, mc->ci_recall));
        TRY(cell_ci(b, mc->specificity, (struct met_ci){NAN, NAN}));
        TRY(cell_ci(b, mc->f1, mc->ci_f1));
        TRY(cell_ci(b, mc->auc, mc->ci_auc));
        TRY(cell_ci(b, mc->ap, (struct met_ci){NAN, NAN}));
        TRY(cxr_buf_puts(b, "</tr>\n"));
    }
    TRY(cxr_buf_puts(b, "<tr><td class=\"l\"><b>macro average</b></td><td></td>"));
    TRY(cell_ci(b, m->macro_precision, (struct met_ci){NAN, NAN}));
    TRY(cell_ci(b, m->macro_recall, (struct met_ci){NAN, NAN}));
    TRY(cell_ci(b, m->macro_specificity, (struct met_ci){NAN, NAN}));
    TRY(cell_ci(b, m->macro_f1, m->ci_macro_f1));
    TRY(cell_ci(b, m->macro_auc, m->ci_macro_auc));
    TRY(cxr_buf_puts(b, "<td></td></tr>\n<tr><td class=\"l\"><b>weighted average</b></td>"));
    TRY(cxr_buf_printf(b, "<td>%zu</td>", m->n));
    TRY(cell_ci(b, m->weighted_precision, (struct met_ci){NAN, NAN}));
    TRY(cell_ci(b, m->weighted_recall, (struct met_ci){NAN, NAN}));
    TRY(cxr_buf_puts(b, "<td></td>"));
    TRY(cell_ci(b, m->weighted_f1, (struct met_ci){NAN, NAN}));
    return cxr_buf_puts(b, "<td></td><td></td></tr>\n</table>\n");
}

static cxr_err confusion(struct cxr_buf *b, const struct met_report *m, const char *const *names)
{
    size_t k = m->k;
    double *shade = malloc(k * k * sizeof(double));
    char **text = calloc(k * k, sizeof(char *));
    cxr_err err = CXR_ENOMEM;

    if (!shade || !text)
        goto out_free;
    for (size_t t = 0; t < k; t++) {
        double row = 0;
        for (size_t p = 0; p < k; p++)
            row += (double)m->confusion[t * k + p];
        for (size_t p = 0; p < k; p++) {
            char tmp[32];
            shade[t * k + p] = row > 0 ? (double)m->confusion[t * k + p] / row : 0;
            (void)snprintf(tmp, sizeof(tmp), "%zu", m->confusion[t * k + p]);
            text[t * k + p] = strdup(tmp);
            if (!text[t * k + p])
                goto out_free;
        }
    }
    if ((err = cxr_buf_puts(b, "<h2>Confusion matrix</h2>\n<div class=\"charts\">\n")) != CXR_OK)
        goto out_free;
    if ((err = plot_heatmap(b, "Counts (shade: share of the row)", names, k, shade,
                            (const char *const *)text, "true class", "predicted class")) != CXR_OK)
        goto out_free;
    if ((err = plot_heatmap(b, "Row-normalised (recall on the diagonal)", names, k, shade, NULL,
                            "true class", "predicted class")) != CXR_OK)
        goto out_free;
    err = cxr_buf_puts(b, "</div>\n");
out_free:
    if (text)
        for (size_t i = 0; i < k * k; i++)
            free(text[i]);
    free(text);
    free(shade);
    return err;
}

static cxr_err curves(struct cxr_buf *b, const struct met_report *m, const char *const *names)
{
    struct plot_series s[MET_MAX_CLASSES];
    char label[MET_MAX_CLASSES][80];
    struct plot_axes roc = {"ROC curves (one-vs-rest)", "false positive rate (1 - specificity)",
                            "true positive rate (sensitivity)", 0, 1, 0, 1, true, false};
    struct plot_axes pr = {"Precision-recall curves", "recall (sensitivity)", "precision",
                           0, 1, 0, 1.02, false, false};

    TRY(cxr_buf_puts(b, "<h2>ROC and precision-recall curves</h2>\n<div class=\"charts\">\n"));
    for (size_t c = 0; c < m->k; c++) {
        char auc[16];
        if (isnan(m->cls[c].auc))
            (void)snprintf(auc, sizeof(auc), "n/a");
        else
            (void)snprintf(auc, sizeof(auc), "%.3f", m->cls[c].auc);
        (void)snprintf(label[c], sizeof(label[c]), "%.20s AUC %s", names[c], auc);
        s[c] = (struct plot_series){label[c], m->cls[c].roc.n, m->cls[c].roc.x, m->cls[c].roc.y,
                                    c, false, false, c >= 8, false};
    }
    TRY(plot_lines(b, &roc, s, m->k));
    for (size_t c = 0; c < m->k; c++) {
        char ap[16];
        if (isnan(m->cls[c].ap))
            (void)snprintf(ap, sizeof(ap), "n/a");
        else
            (void)snprintf(ap, sizeof(ap), "%.3f", m->cls[c].ap);
        (void)snprintf(label[c], sizeof(label[c]), "%.20s AP %s", names[c], ap);
        /* sklearn's order runs from recall 1 down to 0; the step is drawn in that order. */
        s[c] = (struct plot_series){label[c], m->cls[c].pr.n, m->cls[c].pr.x, m->cls[c].pr.y,
                                    c, false, false, c >= 8, false};
    }
    TRY(plot_lines(b, &pr, s, m->k));
    return cxr_buf_puts(b, "</div>\n");
}

static cxr_err reliability(struct cxr_buf *b, const struct met_report *m)
{
    double x[MET_CAL_BINS], y[MET_CAL_BINS], mid[MET_CAL_BINS], share[MET_CAL_BINS];
    char title[96];
    struct plot_axes ax = {title, "mean confidence (top class)", "accuracy", 0, 1, 0, 1, true,
                           false};
    struct plot_series s[2];

    (void)snprintf(title, sizeof(title), "Reliability diagram (ECE %.3f)", m->ece);
    for (size_t i = 0; i < MET_CAL_BINS; i++) {
        x[i] = m->cal[i].confidence;
        y[i] = m->cal[i].accuracy;
        mid[i] = (m->cal[i].lo + m->cal[i].hi) / 2;
        share[i] = m->cal[i].count ? (double)m->cal[i].count / (double)m->n : NAN;
    }
    s[0] = (struct plot_series){"accuracy per bin", MET_CAL_BINS, x, y, 0, true, false, false,
                                false};
    s[1] = (struct plot_series){"share of images", MET_CAL_BINS, mid, share, 4, true, false, true,
                                false};
    TRY(cxr_buf_puts(b, "<h2>Calibration</h2>\n<div class=\"charts\">\n"));
    TRY(plot_lines(b, &ax, s, 2));
    TRY(cxr_buf_puts(b, "<table><tr><th>confidence bin</th><th>images</th><th>mean confidence"
                        "</th><th>accuracy</th><th>gap</th></tr>\n"));
    for (size_t i = 0; i < MET_CAL_BINS; i++) {
        const struct met_cal_bin *cb = &m->cal[i];
        TRY(cxr_buf_printf(b, "<tr><td>(%.1f, %.1f]</td><td>%zu</td><td>", cb->lo, cb->hi,
                           cb->count));
        TRY(plot_num(b, 3, cb->confidence));
        TRY(cxr_buf_puts(b, "</td><td>"));
        TRY(plot_num(b, 3, cb->accuracy));
        TRY(cxr_buf_puts(b, "</td><td>"));
        if (cb->accuracy - cb->confidence >= 0)
            TRY(cxr_buf_puts(b, "+"));
        TRY(plot_num(b, 3, cb->accuracy - cb->confidence));
        TRY(cxr_buf_puts(b, "</td></tr>\n"));
    }
    TRY(cxr_buf_puts(b, "</table>\n</div>\n<p class=\"note\">Confidence is the top-class "
                        "probability; 10 equal-width bins (lo, hi]. ECE = &sum; n<sub>b</sub>/N "
                        "&middot; |accuracy<sub>b</sub> &minus; confidence<sub>b</sub>|. "));
    TRY(cxr_buf_puts(b, "MCE "));
    TRY(plot_num(b, 3, m->mce));
    return cxr_buf_puts(b, "</p>\n");
}

static cxr_err training(struct cxr_buf *b, const struct rpt_epoch *ep, size_t n)
{
    double *v = NULL;
    cxr_err err = CXR_ENOMEM;
    struct plot_axes la = {"Loss per epoch", "epoch", "loss", 0, 0, 0, 0, false, true};
    struct plot_axes aa = {"Accuracy and macro F1 per epoch", "epoch", "score", 0, 0, 0, 1, false,
                           true};
    struct plot_series s[4];

    TRY(cxr_buf_puts(b, "<h2>Training curves</h2>\n"));
    if (n == 0)
        return cxr_buf_puts(b, "<p class=\"note\">No per-epoch records were given.</p>\n");
    v = malloc(7 * n * sizeof(double));
    if (!v)
        return CXR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        v[i] = ep[i].epoch;
        v[n + i] = ep[i].train_loss;
        v[2 * n + i] = ep[i].val_loss;
        v[3 * n + i] = ep[i].train_accuracy;
        v[4 * n + i] = ep[i].val_accuracy;
        v[5 * n + i] = ep[i].train_macro_f1;
        v[6 * n + i] = ep[i].val_macro_f1;
    }
    if ((err = cxr_buf_puts(b, "<div class=\"charts\">\n")) != CXR_OK)
        goto out_free;
    s[0] = (struct plot_series){"train loss", n, v, v + n, 0, n < 60, false, false, false};
    s[1] = (struct plot_series){"validation loss", n, v, v + 2 * n, 1, n < 60, false, true,
                                false};
    if ((err = plot_lines(b, &la, s, 2)) != CXR_OK)
        goto out_free;
    s[0] = (struct plot_series){"train accuracy", n, v, v + 3 * n, 0, n < 60, false, false,
                                false};
    s[1] = (struct plot_series){"validation accuracy", n, v, v + 4 * n, 1, n < 60, false, true,
                                false};
    s[2] = (struct plot_series){"train macro F1", n, v, v + 5 * n, 2, n < 60, false, false, false};
    s[3] = (struct plot_series){"validation macro F1", n, v, v + 6 * n, 3, n < 60, false, true,
                                false};
    if ((err = plot_lines(b, &aa, s, 4)) != CXR_OK)
        goto out_free;
    err = cxr_buf_puts(b, "</div>\n");
out_free:
    free(v);
    return err;
}

static cxr_err oppoints(struct cxr_buf *b, const struct rpt_eval *ev)
{
    TRY(cxr_buf_puts(b, "<h2>Operating points</h2>\n"));
    if (ev->n_ops == 0)
        return cxr_buf_puts(b, "<p class=\"note\">No operating point was requested "
                               "(eval --threshold CLASS:RECALL).</p>\n");
    TRY(cxr_buf_puts(b, "<table><tr><th class=\"l\">class</th><th>target sensitivity</th>"
                        "<th>threshold</th><th>sensitivity</th><th>specificity</th>"
                        "<th>precision</th><th>F1</th><th>TP</th><th>FP</th><th>FN</th>"
                        "<th>TN</th></tr>\n"));
    for (size_t i = 0; i < ev->n_ops; i++) {
        const struct met_oppoint *p = &ev->ops[i];
        TRY(cxr_buf_puts(b, "<tr><td class=\"l\">"));
        TRY(plot_esc(b, p->cls < ev->metrics->k ? ev->class_names[p->cls] : "?"));
        TRY(cxr_buf_printf(b, "</td><td>%.3f</td><td>%.4f</td><td>%.3f</td><td>%.3f</td>"
                              "<td>%.3f</td><td>%.3f</td><td>%zu</td><td>%zu</td><td>%zu</td>"
                              "<td>%zu</td></tr>\n",
                           p->target_recall, p->threshold, p->recall, p->specificity,
                           p->precision, p->f1, p->tp, p->fp, p->fn, p->tn));
    }
    return cxr_buf_puts(b, "</table>\n<p class=\"note\">Rule: flag the class when its "
                           "probability is at least the threshold, the highest threshold that "
                           "reaches the target sensitivity on this set.</p>\n");
}

static cxr_err gallery(struct cxr_buf *b, const struct rpt_eval *ev)
{
    size_t n = ev->n_mistakes < RPT_MAX_MISTAKES ? ev->n_mistakes : RPT_MAX_MISTAKES;

    if (n == 0)
        return CXR_OK;
    TRY(cxr_buf_puts(b, "<h2>Most confident mistakes</h2>\n<div class=\"gallery\">\n"));
    for (size_t i = 0; i < n; i++) {
        const struct rpt_mistake *mk = &ev->mistakes[i];
        bool in = mk->truth < ev->metrics->k && mk->pred < ev->metrics->k;
        TRY(cxr_buf_puts(b, "<figure>"));
        if (mk->png && mk->png_len > 0 && mk->png_len <= RPT_MAX_PNG) {
            TRY(cxr_buf_puts(b, "<img alt=\"\" src=\""));
            TRY(rpt_data_uri(b, "image/png", mk->png, mk->png_len));
            TRY(cxr_buf_puts(b, "\">"));
        }
        TRY(cxr_buf_puts(b, "<figcaption><b>true</b> "));
        TRY(plot_esc(b, in ? ev->class_names[mk->truth] : "?"));
        TRY(cxr_buf_puts(b, ", <b>predicted</b> "));
        TRY(plot_esc(b, in ? ev->class_names[mk->pred] : "?"));
        TRY(cxr_buf_puts(b, " ("));
        TRY(plot_num(b, 3, mk->confidence));
        TRY(cxr_buf_puts(b, ")<br><span class=\"path\">"));
        TRY(plot_esc(b, mk->path ? mk->path : "(no path)"));
        TRY(cxr_buf_puts(b, "</span></figcaption></figure>\n"));
    }
    return cxr_buf_puts(b, "</div>\n");
}

cxr_err rpt_eval_html(const struct rpt_eval *ev, struct cxr_buf *b)
{
    char now[64], tmp[160];
    const struct met_report *m;

    if (!ev_valid(ev) || !b)
        return CXR_EINVAL;
    m = ev->metrics;
    iso_now(now, sizeof(now));
    TRY(plot_page_begin(b, ev->title ? ev->title : "cxrtriage evaluation report"));
    TRY(cxr_buf_puts(b, "<dl class=\"meta\">\n"));
    TRY(meta_row(b, "model", ev->model_name ? ev->model_name : "(unnamed)"));
    TRY(meta_row(b, "model digest", ev->model_digest));
    TRY(meta_row(b, "data set", ev->dataset));
    if (ev->dataset_digest)
        TRY(meta_row(b, "data set digest", ev->dataset_digest));
    TRY(meta_row(b, "date", ev->date ? ev->date : now));
    (void)snprintf(tmp, sizeof(tmp), "%zu images, %zu classes", m->n, m->k);
    TRY(meta_row(b, "evaluated", tmp));
    TRY(cxr_buf_puts(b, "</dl>\n"));
    TRY(headline(b, m));
    TRY(class_table(b, m, ev->class_names));
    TRY(confusion(b, m, ev->class_names));
    TRY(curves(b, m, ev->class_names));
    TRY(reliability(b, m));
    TRY(training(b, ev->epochs, ev->n_epochs));
    TRY(oppoints(b, ev));
    TRY(gallery(b, ev));
    return plot_page_end(b);
}

cxr_err rpt_data_uri(struct cxr_buf *b, const char *mime, const unsigned char *data, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char out[4 * 256];

    TRY(cxr_buf_printf(b, "data:%s;base64,", mime));
    for (size_t i = 0; i < len;) {
        size_t o = 0;
        /* 192 input bytes -> 256 output characters per chunk. */
        for (size_t j = 0; j < 64 && i < len; j++) {
            uint32_t v = (uint32_t)data[i] << 16;
            size_t rem = len - i;
            if (rem > 1)
                v |= (uint32_t)data[i + 1] << 8;
            if (rem > 2)
                v |= data[i + 2];
            out[o++] = tbl[(v >> 18) & 63];
            out[o++] = tbl[(v >> 12) & 63];
            out[o++] = rem > 1 ? tbl[(v >> 6) & 63] : '=';
            out[o++] = rem > 2 ? tbl[v & 63] : '=';
            i += rem > 2 ? 3 : rem;
        }
        TRY(cxr_buf_append(b, out, o));
    }
    return CXR_OK;
}

cxr_err rpt_json_write(const json_t *j, const char *path, struct cxr_buf *err_text)
{
    char *s = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    cxr_err err;

    if (!s) {
        if (err_text)
            (void)cxr_buf_printf(err_text, "'%s': could not serialise the JSON\n", path);
        return CXR_ENOMEM;
    }
    err = cxr_file_write_atomic(path, s, strlen(s), 0644);
    if (err != CXR_OK && err_text)
        (void)cxr_buf_printf(err_text, "'%s': could not write: %s\n", path, cxr_strerror(err));
    free(s);
    return err;
}

cxr_err rpt_eval_write(const struct rpt_eval *ev, const char *html_path, const char *json_path,
                       struct cxr_buf *err_text)
{
    cxr_err err = CXR_OK;

    if (!ev_valid(ev))
        return CXR_EINVAL;
    if (json_path) {
        json_t *j = rpt_eval_json(ev);
        if (!j) {
            if (err_text)
                (void)cxr_buf_printf(err_text, "'%s': could not build the JSON report\n",
                                     json_path);
            return CXR_ENOMEM;
        }
        err = rpt_json_write(j, json_path, err_text);
        json_decref(j);
        if (err != CXR_OK)
            return err;
    }
    if (html_path) {
        struct cxr_buf b;
        cxr_buf_init(&b, RPT_MAX_HTML);
        err = rpt_eval_html(ev, &b);
        if (err != CXR_OK) {
            if (err_text)
                (void)cxr_buf_printf(err_text, "'%s': could not build the HTML report: %s\n",
                                     html_path, cxr_strerror(err));
        } else {
            err = cxr_file_write_atomic(html_path, b.data, b.len, 0644);
            if (err != CXR_OK && err_text)
                (void)cxr_buf_printf(err_text, "'%s': could not write: %s\n", html_path,
                                     cxr_strerror(err));
        }
        cxr_buf_done(&b);
    }
    return err;
}
