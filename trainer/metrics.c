/*
 * metrics.c - classification metrics, curves, calibration and bootstrap intervals; see metrics.h.
 *
 * Design: the predictions are sorted once per class by score (descending); every ranking
 * figure (ROC, PR, AUC, AP, operating point) walks that order group by group, a group being the
 * samples sharing one score, which is what makes ties exact. The bootstrap does not re-sort: a
 * resample is a vector of multiplicities over the original samples, and the same walks run with
 * those weights, so B resamples cost O(B * N * K) after one O(K * N log N) sort.
 */
#include "metrics.h"

#include <math.h>
#include <stdbool.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct sitem {
    double s;
    uint32_t i;
};

/* ---- random numbers: splitmix64 seeds xoshiro256** (Blackman and Vigna) ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void met_rng_seed(struct met_rng *r, uint64_t seed)
{
    uint64_t x = seed;

    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t met_rng_next(struct met_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t met_rng_below(struct met_rng *r, uint64_t bound)
{
    /* Rejection of the short last stretch removes the modulo bias. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x;

    do {
        x = met_rng_next(r);
    } while (x >= limit);
    return x % bound;
}

/* ---- helpers ---- */

static double ratio(double num, double den)
{
    return den > 0 ? num / den : 0.0;
}

static int cmp_sitem_desc(const void *a, const void *b)
{
    const struct sitem *x = a, *y = b;

    if (x->s > y->s)
        return -1;
    if (x->s < y->s)
        return 1;
    return (x->i > y->i) - (x->i < y->i);
}

static cxr_err validate(size_t n, size_t k, const int *truth, const double *prob,
                        struct cxr_buf *err_text)
{
    if (n == 0 || k < 2 || k > MET_MAX_CLASSES || !truth || !prob) {
        if (err_text)
            (void)cxr_buf_printf(err_text, "metrics: need at least one sample and 2..%d classes "
                                 "(got %zu samples, %zu classes)\n", MET_MAX_CLASSES, n, k);
        return CXR_EINVAL;
    }
    if (n > MET_MAX_SAMPLES) {
        if (err_text)
            (void)cxr_buf_printf(err_text, "metrics: %zu samples is over the limit of %zu\n", n,
                                 MET_MAX_SAMPLES);
        return CXR_ELIMIT;
    }
    for (size_t i = 0; i < n; i++) {
        if (truth[i] < 0 || (size_t)truth[i] >= k) {
            if (err_text)
                (void)cxr_buf_printf(err_text, "metrics: sample %zu has label %d, outside 0..%zu\n",
                                     i, truth[i], k - 1);
            return CXR_EINVAL;
        }
        for (size_t c = 0; c < k; c++) {
            double p = prob[i * k + c];
            if (!isfinite(p) || p < 0.0 || p > 1.0) {
                if (err_text)
                    (void)cxr_buf_printf(err_text, "metrics: sample %zu class %zu has probability "
                                         "%g, outside [0, 1]\n", i, c, p);
                return CXR_EINVAL;
            }
        }
    }
    return CXR_OK;
}

static size_t argmax(const double *p, size_t k)
{
    size_t best = 0;

    for (size_t c = 1; c < k; c++)
        if (p[c] > p[best])
            best = c;
    return best;
}

static size_t cal_bin(double conf)
{
    /* (b/10, (b+1)/10]; 0 goes to bin 0. ceil(conf*10)-1 with care at the edges. */
    double x = ceil(conf * MET_CAL_BINS) - 1.0;

    if (x < 0)
        return 0;
    if (x > MET_CAL_BINS - 1)
        return MET_CAL_BINS - 1;
    return (size_t)x;
}

/* Sorted (descending score) items for class c. */
static struct sitem *sorted_for_class(size_t n, size_t k, const double *prob, size_t c)
{
    struct sitem *it = malloc(n * sizeof(*it));

    if (!it)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        it[i].s = prob[i * k + c];
        it[i].i = (uint32_t)i;
    }
    qsort(it, n, sizeof(*it), cmp_sitem_desc);
    return it;
}

/*
 * Weighted AUC by walking score groups: the trapezoid between consecutive ROC points.
 * w == NULL means weight 1. Returns NaN without positives or negatives.
 */
static double weighted_auc(const struct sitem *it, size_t n, const int *truth, int c,
                           const uint32_t *w)
{
    double tp = 0, fp = 0, area = 0;

    for (size_t a = 0; a < n;) {
        double tp0 = tp, fp0 = fp;
        size_t b = a;
        for (; b < n && it[b].s == it[a].s; b++) {
            double wt = w ? w[it[b].i] : 1.0;
            if (truth[it[b].i] == c)
                tp += wt;
            else
                fp += wt;
        }
        area += (fp - fp0) * (tp + tp0) / 2.0;
        a = b;
    }
    if (tp <= 0 || fp <= 0)
        return NAN;
    return area / (tp * fp);
}

static void curve_free(struct met_curve *cv)
{
    free(cv->x);
    free(cv->y);
    free(cv->thr);
    cv->x = cv->y = cv->thr = NULL;
    cv->n = 0;
}

static cxr_err curve_alloc(struct met_curve *cv, size_t n)
{
    cv->x = malloc(n * sizeof(double));
    cv->y = malloc(n * sizeof(double));
    cv->thr = malloc(n * sizeof(double));
    cv->n = n;
    if (!cv->x || !cv->y || !cv->thr) {
        curve_free(cv);
        return CXR_ENOMEM;
    }
    return CXR_OK;
}

/*
 * ROC and PR curves, AUC and AP of class c from its sorted items (sklearn's roc_curve with
 * drop_intermediate, precision_recall_curve and average_precision_score).
 */
static cxr_err class_curves(const struct sitem *it, size_t n, const int *truth, int c,
                            struct met_class *mc)
{
    size_t g = 0;
    double *tps = NULL, *fps = NULL, *thr = NULL;
    cxr_err err = CXR_ENOMEM;
    double P, N;

    tps = malloc(n * sizeof(double));
    fps = malloc(n * sizeof(double));
    thr = malloc(n * sizeof(double));
    if (!tps || !fps || !thr)
        goto out_free;
    {
        double tp = 0, fp = 0;
        for (size_t a = 0; a < n;) {
            size_t b = a;
            for (; b < n && it[b].s == it[a].s; b++) {
                if (truth[it[b].i] == c)
                    tp++;
                else
                    fp++;
            }
            tps[g] = tp;
            fps[g] = fp;
            thr[g] = it[a].s;
            g++;
            a = b;
        }
    }
    P = tps[g - 1];
    N = fps[g - 1];

    /* ROC: keep the ends and every point where the slope changes. */
    {
        size_t m = 0;
        if ((err = curve_alloc(&mc->roc, g + 1)) != CXR_OK)
            goto out_free;
        mc->roc.x[0] = 0;
        mc->roc.y[0] = 0;
        mc->roc.thr[0] = thr[0] + 1.0;
        m = 1;
        for (size_t j = 0; j < g; j++) {
            bool keep = g <= 2 || j == 0 || j == g - 1 ||
                        fps[j - 1] - 2 * fps[j] + fps[j + 1] != 0 ||
                        tps[j - 1] - 2 * tps[j] + tps[j + 1] != 0;
            if (!keep)
                continue;
            mc->roc.x[m] = N > 0 ? fps[j] / N : NAN;
            mc->roc.y[m] = P > 0 ? tps[j] / P : NAN;
            mc->roc.thr[m] = thr[j];
            m++;
        }
        mc->roc.n = m;
        if (P > 0 && N > 0) {
            double area = 0;
            for (size_t j = 1; j < m; j++)
                area += (mc->roc.x[j] - mc->roc.x[j - 1]) * (mc->roc.y[j] + mc->roc.y[j - 1]) / 2;
            mc->auc = area;
        } else {
            mc->auc = NAN;
        }
    }

    /* PR in sklearn's order: lowest threshold first, then the (recall 0, precision 1) end. */
    if ((err = curve_alloc(&mc->pr, g + 1)) != CXR_OK)
        goto out_free;
    for (size_t j = 0; j < g; j++) {
        size_t o = g - 1 - j;
        double ps = tps[j] + fps[j];
        mc->pr.y[o] = ps > 0 ? tps[j] / ps : 0.0;
        mc->pr.x[o] = P > 0 ? tps[j] / P : 1.0;
        mc->pr.thr[o] = thr[j];
    }
    mc->pr.x[g] = 0.0;
    mc->pr.y[g] = 1.0;
    mc->pr.thr[g] = NAN;
    if (P > 0) {
        double ap = 0;
        for (size_t j = 0; j < g; j++)
            ap += (mc->pr.x[j] - mc->pr.x[j + 1]) * mc->pr.y[j];
        mc->ap = ap;
    } else {
        mc->ap = NAN;
    }
    err = CXR_OK;
out_free:
    free(tps);
    free(fps);
    free(thr);
    return err;
}

static double quantile_sorted(const double *v, size_t m, double q)
{
    double pos = q * (double)(m - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < m ? lo + 1 : lo;
    double f = pos - (double)lo;

    return v[lo] + (v[hi] - v[lo]) * f;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* 95 % percentile interval of the finite values among v[0..m). Sorts v in place. */
static struct met_ci percentile_ci(double *v, size_t m)
{
    struct met_ci ci = {NAN, NAN};
    size_t f = 0;

    for (size_t i = 0; i < m; i++)
        if (!isnan(v[i]))
            v[f++] = v[i];
    if (f == 0)
        return ci;
    qsort(v, f, sizeof(double), cmp_double);
    ci.lo = quantile_sorted(v, f, 0.025);
    ci.hi = quantile_sorted(v, f, 0.975);
    return ci;
}

/*
 * One bootstrap pass: weights w (multiplicities), writes acc, macro-F1, macro-AUC, ECE and per
 * class precision/recall/F1/AUC into out[] (layout: 4 + 4 * k values).
 */
static void boot_eval(size_t n, size_t k, const int *truth, const size_t *pred,
                      const double *conf, struct sitem *const *sorted, const uint32_t *w,
                      double *cm, double *out)
{
    double correct = 0, total = 0, f1sum = 0, aucsum = 0;
    size_t aucn = 0;
    double bc[MET_CAL_BINS] = {0}, bn[MET_CAL_BINS] = {0}, ba[MET_CAL_BINS] = {0};
    double ece = 0;

    memset(cm, 0, k * k * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        double wt;
        size_t b;
        if (!w[i])
            continue;
        wt = w[i];
        cm[(size_t)truth[i] * k + pred[i]] += wt;
        total += wt;
        b = cal_bin(conf[i]);
        bn[b] += wt;
        bc[b] += wt * conf[i];
        if ((size_t)truth[i] == pred[i]) {
            correct += wt;
            ba[b] += wt;
        }
    }
    for (size_t b = 0; b < MET_CAL_BINS; b++)
        if (bn[b] > 0)
            ece += bn[b] / total * fabs(ba[b] / bn[b] - bc[b] / bn[b]);
    for (size_t c = 0; c < k; c++) {
        double tp = cm[c * k + c], col = 0, row = 0, prec, rec, f1;
        for (size_t j = 0; j < k; j++) {
            col += cm[j * k + c];
            row += cm[c * k + j];
        }
        prec = ratio(tp, col);
        rec = ratio(tp, row);
        f1 = ratio(2 * tp, col + row);
        f1sum += f1;
        out[4 + 4 * c + 0] = prec;
        out[4 + 4 * c + 1] = rec;
        out[4 + 4 * c + 2] = f1;
        out[4 + 4 * c + 3] = weighted_auc(sorted[c], n, truth, (int)c, w);
        if (!isnan(out[4 + 4 * c + 3])) {
            aucsum += out[4 + 4 * c + 3];
            aucn++;
        }
    }
    out[0] = ratio(correct, total);
    out[1] = f1sum / (double)k;
    out[2] = aucn ? aucsum / (double)aucn : NAN;
    out[3] = ece;
}

static cxr_err bootstrap(struct met_report *r, const int *truth, const size_t *pred,
                         const double *conf, struct sitem *const *sorted, size_t B,
                         uint64_t seed)
{
    size_t n = r->n, k = r->k, nv = 4 + 4 * k;
    uint32_t *w = calloc(n, sizeof(*w));
    double *cm = malloc(k * k * sizeof(double));
    double *vals = malloc(B * nv * sizeof(double)); /* [metric][resample] */
    double *one = malloc(nv * sizeof(double));
    double *col = malloc(B * sizeof(double));
    struct met_rng rng;
    cxr_err err = CXR_ENOMEM;

    if (!w || !cm || !vals || !one || !col)
        goto out_free;
    met_rng_seed(&rng, seed);
    for (size_t b = 0; b < B; b++) {
        memset(w, 0, n * sizeof(*w));
        for (size_t i = 0; i < n; i++)
            w[met_rng_below(&rng, n)]++;
        boot_eval(n, k, truth, pred, conf, sorted, w, cm, one);
        for (size_t v = 0; v < nv; v++)
            vals[v * B + b] = one[v];
    }
#define CI_OF(v) (memcpy(col, vals + (size_t)(v) * B, B * sizeof(double)), percentile_ci(col, B))
    r->ci_accuracy = CI_OF(0);
    r->ci_macro_f1 = CI_OF(1);
    r->ci_macro_auc = CI_OF(2);
    r->ci_ece = CI_OF(3);
    for (size_t c = 0; c < k; c++) {
        r->cls[c].ci_precision = CI_OF(4 + 4 * c + 0);
        r->cls[c].ci_recall = CI_OF(4 + 4 * c + 1);
        r->cls[c].ci_f1 = CI_OF(4 + 4 * c + 2);
        r->cls[c].ci_auc = CI_OF(4 + 4 * c + 3);
    }
#undef CI_OF
    r->boot_resamples = B;
    r->boot_seed = seed;
    err = CXR_OK;
out_free:
    free(w);
    free(cm);
    free(vals);
    free(one);
    free(col);
    return err;
}

void met_report_free(struct met_report *r)
{
    if (!r)
        return;
    if (r->cls)
        for (size_t c = 0; c < r->k; c++) {
            curve_free(&r->cls[c].roc);
            curve_free(&r->cls[c].pr);
        }
    free(r->cls);
    free(r->confusion);
    free(r);
}

static const struct met_ci no_ci = {NAN, NAN};

cxr_err met_compute(size_t n, size_t k, const int *truth, const double *prob,
                    const struct met_options *opt, struct met_report **ret,
                    struct cxr_buf *err_text)
{
    struct met_report *r = NULL;
    size_t *pred = NULL;
    double *conf = NULL;
    struct sitem *sorted[MET_MAX_CLASSES] = {0};
    size_t B = opt ? opt->boot_resamples : 0;
    cxr_err err;

    if ((err = validate(n, k, truth, prob, err_text)) != CXR_OK)
        return err;
    if (B > 20000) {
        if (err_text)
            (void)cxr_buf_printf(err_text, "metrics: %zu bootstrap resamples is over the limit "
                                 "of 20000\n", B);
        return CXR_ELIMIT;
    }
    err = CXR_ENOMEM;
    r = calloc(1, sizeof(*r));
    pred = malloc(n * sizeof(*pred));
    conf = malloc(n * sizeof(*conf));
    if (!r || !pred || !conf)
        goto out_fail;
    r->n = n;
    r->k = k;
    r->confusion = calloc(k * k, sizeof(size_t));
    r->cls = calloc(k, sizeof(*r->cls));
    if (!r->confusion || !r->cls)
        goto out_fail;

    {
        size_t correct = 0;
        double ll = 0;
        for (size_t i = 0; i < n; i++) {
            const double *p = prob + i * k;
            pred[i] = argmax(p, k);
            conf[i] = p[pred[i]];
            r->confusion[(size_t)truth[i] * k + pred[i]]++;
            if (pred[i] == (size_t)truth[i])
                correct++;
            ll -= log(fmax(p[truth[i]], 1e-15));
        }
        r->accuracy = (double)correct / (double)n;
        r->log_loss = ll / (double)n;
    }

    {
        double aucsum = 0;
        size_t aucn = 0;
        for (size_t c = 0; c < k; c++) {
            struct met_class *mc = &r->cls[c];
            size_t col = 0, row = 0;
            for (size_t j = 0; j < k; j++) {
                col += r->confusion[j * k + c];
                row += r->confusion[c * k + j];
            }
            mc->support = row;
            mc->tp = r->confusion[c * k + c];
            mc->fp = col - mc->tp;
            mc->fn = row - mc->tp;
            mc->tn = n - mc->tp - mc->fp - mc->fn;
            mc->precision = ratio((double)mc->tp, (double)col);
            mc->recall = ratio((double)mc->tp, (double)row);
            mc->specificity = ratio((double)mc->tn, (double)(mc->tn + mc->fp));
            mc->f1 = ratio(2.0 * (double)mc->tp, (double)(col + row));
            mc->ci_precision = mc->ci_recall = mc->ci_f1 = mc->ci_auc = no_ci;

            sorted[c] = sorted_for_class(n, k, prob, c);
            if (!sorted[c])
                goto out_fail;
            if ((err = class_curves(sorted[c], n, truth, (int)c, mc)) != CXR_OK)
                goto out_fail;
            err = CXR_ENOMEM;
            if (!isnan(mc->auc)) {
                aucsum += mc->auc;
                aucn++;
            }

            r->macro_precision += mc->precision / (double)k;
            r->macro_recall += mc->recall / (double)k;
            r->macro_f1 += mc->f1 / (double)k;
            r->macro_specificity += mc->specificity / (double)k;
            r->weighted_precision += mc->precision * (double)mc->support / (double)n;
            r->weighted_recall += mc->recall * (double)mc->support / (double)n;
            r->weighted_f1 += mc->f1 * (double)mc->support / (double)n;
        }
        r->macro_auc = aucn ? aucsum / (double)aucn : NAN;
    }

    /* Calibration. */
    {
        double bc[MET_CAL_BINS] = {0}, ba[MET_CAL_BINS] = {0};
        r->mce = 0;
        for (size_t i = 0; i < n; i++) {
            size_t b = cal_bin(conf[i]);
            r->cal[b].count++;
            bc[b] += conf[i];
            if (pred[i] == (size_t)truth[i])
                ba[b] += 1;
        }
        for (size_t b = 0; b < MET_CAL_BINS; b++) {
            struct met_cal_bin *cb = &r->cal[b];
            cb->lo = (double)b / MET_CAL_BINS;
            cb->hi = (double)(b + 1) / MET_CAL_BINS;
            if (cb->count == 0) {
                cb->confidence = cb->accuracy = NAN;
                continue;
            }
            cb->confidence = bc[b] / (double)cb->count;
            cb->accuracy = ba[b] / (double)cb->count;
            r->ece += (double)cb->count / (double)n * fabs(cb->accuracy - cb->confidence);
            r->mce = fmax(r->mce, fabs(cb->accuracy - cb->confidence));
        }
    }

    r->ci_accuracy = r->ci_macro_f1 = r->ci_macro_auc = r->ci_ece = no_ci;
    if (B > 0) {
        if ((err = bootstrap(r, truth, pred, conf, sorted, B, opt->seed)) != CXR_OK)
            goto out_fail;
    }

    for (size_t c = 0; c < k; c++)
        free(sorted[c]);
    free(pred);
    free(conf);
    *ret = r;
    return CXR_OK;

out_fail:
    for (size_t c = 0; c < k; c++)
        free(sorted[c]);
    free(pred);
    free(conf);
    met_report_free(r);
    return err;
}

cxr_err met_operating_point(size_t n, size_t k, const int *truth, const double *prob,
                            size_t cls, double target_recall, struct met_oppoint *ret)
{
    struct sitem *it;
    struct met_oppoint op = {0};
    double P = 0, N;
    double tp = 0, fp = 0;
    cxr_err err;

    if (cls >= k || !(target_recall > 0.0 && target_recall <= 1.0) || !ret)
        return CXR_EINVAL;
    if ((err = validate(n, k, truth, prob, NULL)) != CXR_OK)
        return err;
    for (size_t i = 0; i < n; i++)
        if ((size_t)truth[i] == cls)
            P++;
    if (P == 0)
        return CXR_ENOTFOUND;
    N = (double)n - P;
    it = sorted_for_class(n, k, prob, cls);
    if (!it)
        return CXR_ENOMEM;
    for (size_t a = 0; a < n;) {
        size_t b = a;
        for (; b < n && it[b].s == it[a].s; b++) {
            if ((size_t)truth[it[b].i] == cls)
                tp++;
            else
                fp++;
        }
        /* A small tolerance so that, e.g., 19/20 meets a target of 0.95. */
        if (tp / P >= target_recall - 1e-12) {
            op.threshold = it[a].s;
            break;
        }
        a = b;
    }
    free(it);
    op.cls = cls;
    op.target_recall = target_recall;
    op.tp = (size_t)tp;
    op.fp = (size_t)fp;
    op.fn = (size_t)(P - tp);
    op.tn = (size_t)(N - fp);
    op.recall = tp / P;
    op.specificity = ratio(N - fp, N);
    op.precision = ratio(tp, tp + fp);
    op.f1 = ratio(2 * tp, 2 * tp + fp + (P - tp));
    *ret = op;
    return CXR_OK;
}

cxr_err met_parse_target(const char *spec, const char *const *names, size_t k, size_t *ret_cls,
                         double *ret_recall, struct cxr_buf *err_text)
{
    const char *colon = spec ? strrchr(spec, ':') : NULL;
    size_t cls = k, namelen;
    char *end;
    double r;

    if (!colon || colon == spec) {
        if (err_text)
            (void)cxr_buf_printf(err_text, "threshold '%s': expected CLASS:RECALL, e.g. "
                                 "COVID:0.95\n", spec ? spec : "");
        return CXR_EINVAL;
    }
    namelen = (size_t)(colon - spec);
    for (size_t c = 0; c < k; c++)
        if (names && names[c] && strlen(names[c]) == namelen &&
            strncmp(names[c], spec, namelen) == 0)
            cls = c;
    if (cls == k) {
        unsigned long v;
        errno = 0;
        v = strtoul(spec, &end, 10);
        if (errno == 0 && end == colon && v < k)
            cls = (size_t)v;
    }
    if (cls == k) {
        if (err_text)
            (void)cxr_buf_printf(err_text, "threshold '%s': unknown class '%.*s'\n", spec,
                                 (int)namelen, spec);
        return CXR_EINVAL;
    }
    errno = 0;
    r = strtod(colon + 1, &end);
    if (errno || end == colon + 1 || *end || !(r > 0.0 && r <= 1.0)) {
        if (err_text)
            (void)cxr_buf_printf(err_text, "threshold '%s': recall '%s' is not in (0, 1]\n",
                                 spec, colon + 1);
        return CXR_EINVAL;
    }
    *ret_cls = cls;
    *ret_recall = r;
    return CXR_OK;
}

cxr_err met_top_mistakes(size_t n, size_t k, const int *truth, const double *prob, size_t max,
                         size_t *ret_idx, size_t *ret_n)
{
    struct sitem *it;
    size_t m = 0, out = 0;
    cxr_err err = validate(n, k, truth, prob, NULL);

    if (err != CXR_OK)
        return err;
    if (!ret_idx || !ret_n || n > UINT32_MAX)
        return CXR_EINVAL;
    it = malloc(n * sizeof(*it));
    if (!it)
        return CXR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t p = argmax(prob + i * k, k);
        if (p == (size_t)truth[i])
            continue;
        it[m].s = prob[i * k + p];
        it[m].i = (uint32_t)i;
        m++;
    }
    if (m)
        qsort(it, m, sizeof(*it), cmp_sitem_desc);
    for (; out < m && out < max; out++)
        ret_idx[out] = it[out].i;
    free(it);
    *ret_n = out;
    return CXR_OK;
}
