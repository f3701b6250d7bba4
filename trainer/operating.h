/*
 * operating.h - the triage rule's operating points (model.h, "the triage rule"): chosen once
 * here, on labelled validation scores, for `train` (at its end) and `export` (--data), and
 * measured here for `eval`.
 *
 * Method (the rule serves triage, so it errs towards flagging):
 *  - every class but the normal one: the highest threshold whose one-vs-rest sensitivity
 *    (score >= threshold among images of that class) is >= OP_SENSITIVITY, taken from the
 *    distinct scores (met_operating_point) and floored to 4 decimals, which keeps the
 *    sensitivity since every score at or above the exact threshold is also above the floor;
 *  - the normal class: among the images the abnormal thresholds leave non-urgent, the lowest
 *    threshold whose precision for "normal" is >= OP_NORMAL_PRECISION, so 'normal' is rarely
 *    given to a sick patient; the candidates are the scores floored to 4 decimals, so the stored
 *    value selects exactly the images it was chosen on. When no threshold reaches the target
 *    the threshold is 1 (practically never normal) and the method text says so.
 * Figures are always measured by nn_triage_apply on the rule as stored (re-read from the
 * metadata), never on the unrounded values.
 */
#ifndef CXR_OPERATING_H
#define CXR_OPERATING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "common.h"
#include "metrics.h"
#include "model.h"

#define OP_SENSITIVITY 0.90
#define OP_NORMAL_PRECISION 0.95

/* What the rule does on labelled images. Truth "abnormal" is every class but the normal one. */
struct op_figures {
    size_t n, n_abnormal, n_normal;
    size_t urgent_tp;        /* abnormal images made urgent */
    size_t urgent_fp;        /* normal images made urgent */
    size_t called_normal;    /* images given 'normal' */
    size_t called_normal_ok; /* ... that are normal */
    size_t routine;
    size_t none;             /* no priority (non-finite scores) */
    double sensitivity, specificity;        /* urgent vs not; NaN without positives/negatives */
    double normal_precision, normal_recall; /* of 'normal'; NaN when undefined */
    size_t class_support[MET_MAX_CLASSES];
    double class_sensitivity[MET_MAX_CLASSES]; /* score >= own threshold; NaN: normal or no support */
};

/*
 * Chooses the thresholds (k floats into ret_thr) for n labelled images (truth in [0,k), prob
 * n * k scores) with class `normal` (-1: none). *ret_normal_reached is false when the normal
 * target could not be met. Errors: CXR_EINVAL (bad arguments or scores), CXR_ENOTFOUND (an
 * abnormal class without images: errbuf names it), CXR_ENOMEM.
 */
cxr_err op_choose(size_t n, int k, const int *truth, const float *prob, int normal,
                  double sensitivity, double normal_precision, float *ret_thr,
                  bool *ret_normal_reached, char *errbuf, size_t errlen);

/* Applies the rule to n labelled images. */
void op_measure(const struct nn_triage_rule *rule, const nn_model *m, size_t n, const int *truth,
                const float *prob, struct op_figures *ret);

/*
 * Chooses the operating points on n labelled images (the validation split, described by
 * `source`, e.g. "validation split of fnv1a64:..."), writes NN_META_TRIAGE_THRESHOLDS,
 * NN_META_TRIAGE_NORMAL and NN_META_TRIAGE_METHOD into m, re-reads them and measures the
 * stored rule into ret_fig (may be NULL). Errors as op_choose, or CXR_EMODEL.
 */
cxr_err op_set_model(nn_model *m, size_t n, const int *truth, const float *prob,
                     const char *source, struct op_figures *ret_fig, char *errbuf, size_t errlen);

/*
 * Sets thresholds by hand from "Class=0.4,Other=0.3" (',' or ';' between items): the listed
 * classes change, the others keep the model's current (or default) values; all are stored with
 * a method text saying so. Errors: CXR_EINVAL / CXR_ENOTFOUND / CXR_EMODEL with errbuf.
 */
cxr_err op_set_by_hand(nn_model *m, const char *list, char *errbuf, size_t errlen);

/* Prints the rule line and the figures, labelled (e.g. "validation"). */
void op_print(FILE *out, const char *label, const struct nn_triage_rule *rule,
              const nn_model *m, const struct op_figures *f);

#endif
