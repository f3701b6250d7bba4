/*
 * operating.c - the triage rule's operating points: chosen on validation scores, stored in
 * the model's metadata, measured through nn_triage_apply (see operating.h for the method).
 */
#include "operating.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* The stored precision: 4 decimals, rounded down (t >= result). */
static double floor4(double t)
{
    return floor(t * 10000.0) / 10000.0;
}

struct scored {
    double q; /* normal score floored to 4 decimals */
    int is_normal;
};

static int by_q_desc(const void *a, const void *b)
{
    double x = ((const struct scored *)a)->q, y = ((const struct scored *)b)->q;
    return x < y ? 1 : x > y ? -1 : 0;
}

cxr_err op_choose(size_t n, int k, const int *truth, const float *prob, int normal,
                  double sensitivity, double normal_precision, float *ret_thr,
                  bool *ret_normal_reached, char *errbuf, size_t errlen)
{
    float thr[MET_MAX_CLASSES];
    double *dp = NULL;
    struct scored *s = NULL;
    size_t ns = 0;
    bool reached = true;
    cxr_err err = CXR_OK;

    if (!n || k < 2 || k > MET_MAX_CLASSES || normal >= k || !(sensitivity > 0.0) ||
        sensitivity > 1.0 || !(normal_precision > 0.0) || normal_precision > 1.0) {
        /* spelled out, not `return cxr_errf(...)`: the analyzer cannot see that it returns
         * CXR_EINVAL, and callers read *ret_thr only on success */
        (void)cxr_errf(errbuf, errlen, CXR_EINVAL, "operating points: bad arguments");
        return CXR_EINVAL;
    }
    dp = malloc(n * (size_t)k * sizeof(*dp));
    s = malloc(n * sizeof(*s));
    if (!dp || !s) {
        err = CXR_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n * (size_t)k; i++)
        dp[i] = prob[i];
    for (int c = 0; c < k; c++) {
        struct met_oppoint op;
        if (c == normal)
            continue;
        err = met_operating_point(n, (size_t)k, truth, dp, (size_t)c, sensitivity, &op);
        if (err == CXR_ENOTFOUND) {
            (void)cxr_errf(errbuf, errlen, err,
                           "operating points: class %d has no images to choose on", c);
            goto out;
        }
        if (err) {
            (void)cxr_errf(errbuf, errlen, err, "operating points: invalid labels or scores");
            goto out;
        }
        thr[c] = (float)floor4(op.threshold);
    }
    if (normal >= 0) {
        size_t tp = 0, called = 0;
        double best = -1.0;
        /* The images the abnormal thresholds leave for the normal decision. */
        for (size_t i = 0; i < n; i++) {
            const float *p = prob + i * (size_t)k;
            bool urgent = false;
            for (int c = 0; c < k && !urgent; c++)
                urgent = c != normal && p[c] >= thr[c];
            if (urgent)
                continue;
            s[ns].q = floor4(p[normal]);
            s[ns].is_normal = truth[i] == normal;
            ns++;
        }
        qsort(s, ns, sizeof(*s), by_q_desc);
        /* Sweep thresholds downwards; a threshold takes every image with an equal score. */
        for (size_t i = 0; i < ns;) {
            size_t j = i;
            while (j < ns && s[j].q == s[i].q) {
                tp += (size_t)s[j].is_normal;
                called++;
                j++;
            }
            if ((double)tp >= normal_precision * (double)called)
                best = s[i].q;
            i = j;
        }
        reached = best >= 0.0;
        thr[normal] = reached ? (float)best : 1.0f;
    }
    memcpy(ret_thr, thr, (size_t)k * sizeof(float));
    *ret_normal_reached = reached;
out:
    free(dp);
    free(s);
    return err;
}

static double ratio(size_t a, size_t b)
{
    return b ? (double)a / (double)b : NAN;
}

void op_measure(const struct nn_triage_rule *rule, const nn_model *m, size_t n, const int *truth,
                const float *prob, struct op_figures *ret)
{
    size_t hit[MET_MAX_CLASSES] = {0};
    int k = rule->n_classes;

    memset(ret, 0, sizeof(*ret));
    ret->n = n;
    for (size_t i = 0; i < n; i++) {
        const float *p = prob + i * (size_t)k;
        int t = truth[i];
        bool is_normal = t == rule->normal_class;
        enum nn_priority pr = nn_triage_apply(rule, m, p, NULL, 0);

        if (t < 0 || t >= k || k > MET_MAX_CLASSES)
            continue;
        ret->class_support[t]++;
        if (p[t] >= rule->threshold[t])
            hit[t]++;
        if (is_normal)
            ret->n_normal++;
        else
            ret->n_abnormal++;
        switch (pr) {
        case NN_PRIO_URGENT:
            if (is_normal)
                ret->urgent_fp++;
            else
                ret->urgent_tp++;
            break;
        case NN_PRIO_NORMAL:
            ret->called_normal++;
            ret->called_normal_ok += is_normal ? 1 : 0;
            break;
        case NN_PRIO_ROUTINE: ret->routine++; break;
        case NN_PRIO_NONE: ret->none++; break;
        }
    }
    ret->sensitivity = ratio(ret->urgent_tp, ret->n_abnormal);
    ret->specificity = ret->n_normal ? 1.0 - ratio(ret->urgent_fp, ret->n_normal) : NAN;
    ret->normal_precision = ratio(ret->called_normal_ok, ret->called_normal);
    ret->normal_recall = ratio(ret->called_normal_ok, ret->n_normal);
    for (int c = 0; c < k && c < MET_MAX_CLASSES; c++)
        ret->class_sensitivity[c] = c == rule->normal_class ? NAN : ratio(hit[c], ret->class_support[c]);
}

/* "COVID-19=0.4123;Lung Opacity=0.5000;..." */
static cxr_err store_thresholds(nn_model *m, const float *thr)
{
    char v[NN_META_VALUE_MAX];
    size_t pos = 0;

    for (int c = 0; c < nn_model_num_classes(m); c++) {
        int w = snprintf(v + pos, sizeof(v) - pos, "%s%s=%.4f", c ? ";" : "",
                         nn_model_class_name(m, c), (double)thr[c]);
        if (w < 0 || (size_t)w >= sizeof(v) - pos)
            return CXR_ELIMIT;
        pos += (size_t)w;
    }
    return nn_model_set_meta(m, NN_META_TRIAGE_THRESHOLDS, v);
}

cxr_err op_set_model(nn_model *m, size_t n, const int *truth, const float *prob,
                     const char *source, struct op_figures *ret_fig, char *errbuf, size_t errlen)
{
    const char *normal_name = nn_model_meta(m, NN_META_TRIAGE_NORMAL);
    struct nn_triage_rule rule;
    struct op_figures f;
    float thr[MET_MAX_CLASSES];
    char method[NN_META_VALUE_MAX];
    int k = nn_model_num_classes(m), normal = -1;
    bool reached;
    cxr_err err;

    /* The normal class: the one the model names, else the default rule's ("Normal"). */
    if (normal_name) {
        for (int c = 0; c < k; c++)
            if (!strcmp(nn_model_class_name(m, c), normal_name))
                normal = c;
    } else {
        err = nn_triage_rule_init(m, &rule, errbuf, errlen);
        if (err)
            return err;
        normal = rule.normal_class;
    }
    err = op_choose(n, k, truth, prob, normal, OP_SENSITIVITY, OP_NORMAL_PRECISION, thr,
                    &reached, errbuf, errlen);
    if (err)
        return err;
    if (store_thresholds(m, thr) != CXR_OK ||
        (normal >= 0 &&
         nn_model_set_meta(m, NN_META_TRIAGE_NORMAL, nn_model_class_name(m, normal)) != CXR_OK)) {
        return cxr_errf(errbuf, errlen, CXR_ELIMIT,
                        "operating points: cannot store them in the model's metadata");
    }
    if (normal < 0)
        (void)nn_model_del_meta(m, NN_META_TRIAGE_NORMAL);
    err = nn_triage_rule_init(m, &rule, errbuf, errlen);
    if (err)
        return err;
    op_measure(&rule, m, n, truth, prob, &f);
    (void)snprintf(method, sizeof(method),
                   "%s, n=%zu; abnormal classes: highest threshold with one-vs-rest sensitivity "
                   ">= %.2f (floored to 4 decimals); normal: lowest threshold with precision "
                   ">= %.2f among images not urgent%s; there: urgent sensitivity %.4f, "
                   "specificity %.4f, normal precision %.4f, normal recall %.4f "
                   "(cxrtriage-train %s)",
                   source, n, OP_SENSITIVITY, OP_NORMAL_PRECISION,
                   normal < 0 ? " (the model has no normal class)"
                   : reached  ? ""
                              : " (not reached: threshold 1, practically never normal)",
                   f.sensitivity, f.specificity, f.normal_precision, f.normal_recall,
                   CXR_VERSION);
    if (nn_model_set_meta(m, NN_META_TRIAGE_METHOD, method) != CXR_OK)
        return cxr_errf(errbuf, errlen, CXR_ELIMIT,
                        "operating points: cannot store the method in the metadata");
    if (ret_fig)
        *ret_fig = f;
    return CXR_OK;
}

cxr_err op_set_by_hand(nn_model *m, const char *list, char *errbuf, size_t errlen)
{
    struct nn_triage_rule rule;
    const char *old = nn_model_meta(m, NN_META_TRIAGE_METHOD), *p = list;
    char method[NN_META_VALUE_MAX], item[NN_NAME_MAX + 32];
    cxr_err err = nn_triage_rule_init(m, &rule, errbuf, errlen);

    if (err)
        return err;
    for (;;) {
        size_t len = strcspn(p, ",;");
        char *eq, *name, *end, *val;
        double v;

        if (len >= sizeof(item))
            return cxr_errf(errbuf, errlen, CXR_EINVAL, "--thresholds: item '%.*s' is too long",
                            (int)len, p);
        memcpy(item, p, len);
        item[len] = '\0';
        eq = strchr(item, '=');
        if (!eq)
            return cxr_errf(errbuf, errlen, CXR_EINVAL,
                            "--thresholds: item '%s' is not CLASS=THRESHOLD", item);
        *eq = '\0';
        for (name = item; *name == ' '; name++)
            ;
        for (end = eq; end > name && end[-1] == ' '; end--)
            end[-1] = '\0';
        val = eq + 1;
        errno = 0;
        v = strtod(val, &end);
        while (*end == ' ')
            end++;
        if (end == val || *end || errno || !(v >= 0.0 && v <= 1.0))
            return cxr_errf(errbuf, errlen, CXR_EINVAL,
                            "--thresholds: '%s' for class '%s' is not a number in [0,1]", val,
                            name);
        err = nn_triage_rule_set(&rule, m, name, (float)v, errbuf, errlen);
        if (err)
            return err;
        if (!p[len])
            break;
        p += len + 1;
    }
    if (store_thresholds(m, rule.threshold) != CXR_OK ||
        (rule.normal_class >= 0 &&
         nn_model_set_meta(m, NN_META_TRIAGE_NORMAL,
                           nn_model_class_name(m, rule.normal_class)) != CXR_OK)) {
        return cxr_errf(errbuf, errlen, CXR_ELIMIT,
                        "--thresholds: cannot store them in the model's metadata");
    }
    (void)snprintf(method, sizeof(method), "set by hand (cxrtriage-train export --thresholds '%s')"
                   "; the other classes kept: %s", list, old ? old : "default 0.5");
    if (nn_model_set_meta(m, NN_META_TRIAGE_METHOD, method) != CXR_OK)
        return cxr_errf(errbuf, errlen, CXR_ELIMIT,
                        "--thresholds: cannot store the method in the metadata");
    return nn_triage_rule_init(m, &rule, errbuf, errlen);
}

static void pct(FILE *out, const char *name, double v, size_t a, size_t b)
{
    if (isnan(v))
        fprintf(out, "%s -", name);
    else
        fprintf(out, "%s %.4f (%zu/%zu)", name, v, a, b);
}

void op_print(FILE *out, const char *label, const struct nn_triage_rule *rule,
              const nn_model *m, const struct op_figures *f)
{
    char text[2048];
    bool first = true;

    (void)nn_triage_rule_text(rule, m, text, sizeof(text));
    fprintf(out, "triage rule: %s\n", text);
    fprintf(out, "triage on %s (n=%zu): ", label, f->n);
    pct(out, "urgent sensitivity", f->sensitivity, f->urgent_tp, f->n_abnormal);
    pct(out, ", specificity", f->specificity, f->n_normal - f->urgent_fp, f->n_normal);
    pct(out, "; normal precision", f->normal_precision, f->called_normal_ok, f->called_normal);
    pct(out, ", normal recall", f->normal_recall, f->called_normal_ok, f->n_normal);
    fprintf(out, "; routine %zu\n", f->routine);
    fprintf(out, "triage per class (score >= own threshold):");
    for (int c = 0; c < rule->n_classes && c < MET_MAX_CLASSES; c++) {
        if (c == rule->normal_class)
            continue;
        fprintf(out, "%s", first ? " " : ", ");
        first = false;
        if (isnan(f->class_sensitivity[c]))
            fprintf(out, "%s -", nn_model_class_name(m, c));
        else
            fprintf(out, "%s %.4f (%zu)", nn_model_class_name(m, c), f->class_sensitivity[c],
                    f->class_support[c]);
    }
    fprintf(out, "\n");
}
