/*
 * metrics.h - classification metrics for the evaluator: pure functions over N predictions.
 *
 * Input is N samples, each a true class index in [0, K) and a K-class probability vector
 * (row-major, prob[i * k + c]). The predicted class is the arg-max of the vector (the lowest
 * index wins a tie, as numpy's argmax). Nothing here logs or keeps global state; the bootstrap
 * uses its own seeded generator (xoshiro256** seeded by splitmix64), so equal inputs and seed
 * give equal results.
 *
 * Definitions (they follow scikit-learn 1.2 where it has the figure):
 *  - confusion[t * k + p]: samples of true class t predicted as p (rows true, columns predicted).
 *  - per class c (one-vs-rest): precision tp/(tp+fp), recall tp/(tp+fn), specificity
 *    tn/(tn+fp), F1 2tp/(2tp+fp+fn); a 0/0 ratio is 0 (sklearn's zero_division=0).
 *  - macro average: unweighted mean over all K classes (also those without support);
 *    weighted average: mean weighted by support.
 *  - ROC curve: one-vs-rest with score prob[., c], one point per distinct score (ties make one
 *    step, so the curve is exact), collinear intermediate points dropped, starting at (0, 0) with
 *    threshold max+1 (sklearn.metrics.roc_curve); AUC is the trapezoidal area
 *    (roc_auc_score). AUC is NaN when the class has no positives or no negatives.
 *  - PR curve: precision/recall at every distinct score, plus the point (recall 0, precision 1)
 *    (precision_recall_curve); AP = sum over thresholds of (R_n - R_{n-1}) * P_n, the
 *    uninterpolated step integral (average_precision_score). AP is NaN without positives.
 *  - Calibration: confidence = the top-class probability; 10 equal-width bins, bin b holds
 *    confidences in (b/10, (b+1)/10] (bin 0 also holds 0). ECE = sum_b (n_b / N) *
 *    |accuracy_b - mean confidence_b|, accuracy_b being the share of bin b predicted right.
 *    MCE is the largest |accuracy_b - confidence_b| over non-empty bins.
 *  - Log loss: mean of -ln(max(prob[i, truth_i], 1e-15)).
 *  - Confidence intervals: percentile bootstrap. Each resample draws N samples with
 *    replacement; an interval is the 2.5 % and 97.5 % quantiles (linear interpolation, numpy's
 *    default) of the figure over the resamples where it is defined. NaN when not computed.
 *  - Operating point: for class c and a target recall r, the largest threshold t taken from the
 *    distinct scores such that "predict c when prob[., c] >= t" has recall >= r, with the
 *    specificity, precision and counts that rule gives.
 */
#ifndef CXR_TRAINER_METRICS_H
#define CXR_TRAINER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define MET_MAX_CLASSES 64
#define MET_MAX_SAMPLES ((size_t)50 * 1000 * 1000)
#define MET_CAL_BINS 10

/* A 95 % confidence interval; lo = hi = NaN when not computed or undefined. */
struct met_ci {
    double lo, hi;
};

/* A curve of n points; ROC: x = false positive rate, y = true positive rate;
 * PR: x = recall, y = precision. thr[i] is the score threshold of point i. */
struct met_curve {
    size_t n;
    double *x, *y, *thr;
};

struct met_class {
    size_t support; /* samples whose true class is this one */
    size_t tp, fp, fn, tn;
    double precision, recall, specificity, f1;
    double auc; /* NaN when undefined */
    double ap;  /* NaN when undefined */
    struct met_curve roc, pr;
    struct met_ci ci_precision, ci_recall, ci_f1, ci_auc;
};

struct met_cal_bin {
    double lo, hi;      /* bin edges */
    size_t count;       /* samples whose confidence falls in the bin */
    double confidence;  /* mean confidence in the bin (NaN when empty) */
    double accuracy;    /* share predicted right in the bin (NaN when empty) */
};

struct met_report {
    size_t n, k;
    size_t *confusion; /* k * k, [true * k + predicted] */
    double accuracy;
    double macro_precision, macro_recall, macro_f1, macro_specificity;
    double weighted_precision, weighted_recall, weighted_f1;
    double macro_auc;    /* mean of the defined per-class AUCs, NaN if none */
    double log_loss;
    struct met_class *cls; /* k entries */
    double ece, mce;
    struct met_cal_bin cal[MET_CAL_BINS];
    size_t boot_resamples; /* 0 when no bootstrap was run */
    uint64_t boot_seed;
    struct met_ci ci_accuracy, ci_macro_f1, ci_macro_auc, ci_ece;
};

struct met_options {
    size_t boot_resamples; /* 0: no confidence intervals; 1000 is usual; at most 20000 */
    uint64_t seed;
};

/*
 * Computes every figure above. truth has n entries in [0, k); prob has n * k finite values in
 * [0, 1] (they need not sum to 1). opt may be NULL (no bootstrap). On success *ret owns a new
 * report (met_report_free). Errors: CXR_EINVAL (n == 0, k < 2 or > MET_MAX_CLASSES, a label out
 * of range, a non-finite or out-of-range probability; err_text, when not NULL, gets a line
 * naming the sample), CXR_ELIMIT (n > MET_MAX_SAMPLES), CXR_ENOMEM.
 */
cxr_err met_compute(size_t n, size_t k, const int *truth, const double *prob,
                    const struct met_options *opt, struct met_report **ret,
                    struct cxr_buf *err_text);

void met_report_free(struct met_report *r);

struct met_oppoint {
    size_t cls;
    double target_recall;
    double threshold;   /* predict cls when prob >= threshold */
    double recall, specificity, precision, f1;
    size_t tp, fp, fn, tn;
};

/*
 * The operating point for class cls reaching recall >= target_recall (0 < target <= 1).
 * Errors: CXR_EINVAL (bad arguments or input as for met_compute), CXR_ENOTFOUND (the class has
 * no positives), CXR_ENOMEM.
 */
cxr_err met_operating_point(size_t n, size_t k, const int *truth, const double *prob,
                            size_t cls, double target_recall, struct met_oppoint *ret);

/*
 * Parses an operating-point request "CLASS:RECALL" (e.g. "COVID:0.95"; CLASS is a class name
 * or index, RECALL in (0, 1]) as given to `eval --threshold`. Errors: CXR_EINVAL with a line
 * in err_text (may be NULL) saying what is wrong.
 */
cxr_err met_parse_target(const char *spec, const char *const *names, size_t k, size_t *ret_cls,
                         double *ret_recall, struct cxr_buf *err_text);

/*
 * The indices of the most confident mistakes (predicted class != truth, ordered by the
 * predicted class's probability, highest first, ties by index), at most max of them, into
 * ret_idx (room for max entries); *ret_n is how many. For the report's gallery.
 */
cxr_err met_top_mistakes(size_t n, size_t k, const int *truth, const double *prob, size_t max,
                         size_t *ret_idx, size_t *ret_n);

/* The seeded generator, exposed for tests and for callers that shuffle reproducibly. */
struct met_rng {
    uint64_t s[4];
};
void met_rng_seed(struct met_rng *r, uint64_t seed);
uint64_t met_rng_next(struct met_rng *r);
/* Uniform in [0, bound), bound > 0, without modulo bias. */
uint64_t met_rng_below(struct met_rng *r, uint64_t bound);

#endif
