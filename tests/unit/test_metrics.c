/* test_metrics.c - trainer/metrics.c on small cases computed by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define EPS 1e-12

/* Two classes from a score s for class 1: prob = [1 - s, s]. */
static void binary(const double *s, size_t n, double *prob)
{
    for (size_t i = 0; i < n; i++) {
        prob[2 * i] = 1 - s[i];
        prob[2 * i + 1] = s[i];
    }
}

static void test_hand_binary(void **state)
{
    /* sklearn's classic ranking: negatives 0.15, 0.45; positives 0.35, 0.85. */
    const int truth[] = {0, 0, 1, 1};
    const double s[] = {0.15, 0.45, 0.35, 0.85};
    double prob[8];
    struct met_report *r = NULL;

    binary(s, 4, prob);
    assert_int_equal(met_compute(4, 2, truth, prob, NULL, &r, NULL), CXR_OK);
    /* predicted: 0 0 0 1 */
    assert_int_equal(r->confusion[0], 2);
    assert_int_equal(r->confusion[1], 0);
    assert_int_equal(r->confusion[2], 1);
    assert_int_equal(r->confusion[3], 1);
    assert_true(fabs(r->accuracy - 0.75) < EPS);
    assert_true(fabs(r->cls[0].precision - 2.0 / 3) < EPS);
    assert_true(fabs(r->cls[0].recall - 1.0) < EPS);
    assert_true(fabs(r->cls[0].f1 - 0.8) < EPS);
    assert_true(fabs(r->cls[0].specificity - 0.5) < EPS);
    assert_true(fabs(r->cls[1].precision - 1.0) < EPS);
    assert_true(fabs(r->cls[1].recall - 0.5) < EPS);
    assert_true(fabs(r->cls[1].f1 - 2.0 / 3) < EPS);
    assert_true(fabs(r->cls[1].specificity - 1.0) < EPS);
    assert_true(fabs(r->macro_f1 - (0.8 + 2.0 / 3) / 2) < EPS);
    assert_true(fabs(r->weighted_f1 - (0.8 + 2.0 / 3) / 2) < EPS);
    /* 3 of the 4 positive-negative pairs ranked right. */
    assert_true(fabs(r->cls[1].auc - 0.75) < EPS);
    assert_true(fabs(r->cls[0].auc - 0.75) < EPS);
    /* AP: thresholds 0.85 (P 1, R .5), 0.45 (P .5, R .5), 0.35 (P 2/3, R 1) -> .5 + .5*2/3 */
    assert_true(fabs(r->cls[1].ap - (0.5 + 1.0 / 3)) < EPS);
    assert_int_equal(r->cls[1].support, 2);
    /* ROC starts at (0,0) and ends at (1,1). */
    assert_true(r->cls[1].roc.x[0] == 0 && r->cls[1].roc.y[0] == 0);
    assert_true(r->cls[1].roc.x[r->cls[1].roc.n - 1] == 1 &&
                r->cls[1].roc.y[r->cls[1].roc.n - 1] == 1);
    /* Calibration: conf .85 .55 .65 .85, right R R W R:
     * bin 8: 2 images, acc 1, conf .85; bin 5: acc 1, conf .55; bin 6: acc 0, conf .65. */
    assert_int_equal(r->cal[8].count, 2);
    assert_int_equal(r->cal[5].count, 1);
    assert_int_equal(r->cal[6].count, 1);
    assert_true(isnan(r->cal[0].accuracy));
    assert_true(fabs(r->ece - (0.5 * 0.15 + 0.25 * 0.45 + 0.25 * 0.65)) < EPS);
    assert_true(fabs(r->mce - 0.65) < EPS);
    assert_true(isnan(r->ci_accuracy.lo));
    met_report_free(r);
}

static void test_ties(void **state)
{
    /* pos .8 vs neg .8 is a tie (1/2), pos .8 > neg .1, pos .3 < neg .8, pos .3 > neg .1. */
    const int truth[] = {1, 0, 1, 0};
    const double s[] = {0.8, 0.8, 0.3, 0.1};
    const int t2[] = {0, 1, 0, 1};
    const double s2[] = {0.5, 0.5, 0.5, 0.5};
    double prob[8];
    struct met_report *r = NULL;

    binary(s, 4, prob);
    assert_int_equal(met_compute(4, 2, truth, prob, NULL, &r, NULL), CXR_OK);
    assert_true(fabs(r->cls[1].auc - 2.5 / 4) < EPS);
    /* thresholds .8: P 1/2 R 1/2; .3: P 2/3 R 1 */
    assert_true(fabs(r->cls[1].ap - (0.25 + 1.0 / 3)) < EPS);
    met_report_free(r);

    /* All scores equal: one ROC step from (0,0) to (1,1). argmax tie -> class 0. */
    binary(s2, 4, prob);
    assert_int_equal(met_compute(4, 2, t2, prob, NULL, &r, NULL), CXR_OK);
    assert_true(fabs(r->cls[1].auc - 0.5) < EPS);
    assert_true(fabs(r->cls[1].ap - 0.5) < EPS);
    assert_int_equal(r->cls[1].roc.n, 2);
    assert_int_equal(r->confusion[0 * 2 + 0], 2);
    assert_int_equal(r->confusion[1 * 2 + 0], 2);
    met_report_free(r);
}

static void test_class_without_positives(void **state)
{
    const int truth[] = {0, 1, 0, 1, 1};
    const double prob[] = {.7, .2, .1, .1, .8, .1, .5, .2, .3, .2, .7, .1, .4, .1, .5};
    struct met_report *r = NULL;

    /* predictions: 0 1 0 1 2 */
    assert_int_equal(met_compute(5, 3, truth, prob, NULL, &r, NULL), CXR_OK);
    assert_int_equal(r->cls[2].support, 0);
    assert_int_equal(r->cls[2].fp, 1);
    assert_true(r->cls[2].precision == 0 && r->cls[2].recall == 0 && r->cls[2].f1 == 0);
    assert_true(isnan(r->cls[2].auc));
    assert_true(isnan(r->cls[2].ap));
    assert_true(fabs(r->accuracy - 0.8) < EPS);
    /* class 0: tp 2 fp 0 fn 0 -> F1 1; class 1: tp 2 fn 1 -> F1 .8; class 2: 0; macro over 3 */
    assert_true(fabs(r->macro_f1 - 1.8 / 3) < EPS);
    assert_true(fabs(r->weighted_f1 - (2 * 1.0 + 3 * 0.8) / 5) < EPS);
    assert_true(fabs(r->cls[2].specificity - 0.8) < EPS);
    /* macro AUC averages the defined classes only */
    assert_true(fabs(r->macro_auc - (r->cls[0].auc + r->cls[1].auc) / 2) < EPS);
    met_report_free(r);
}

static void test_perfect_and_constant(void **state)
{
    enum { N = 60, K = 3 };
    int truth[N];
    double prob[N * K];
    struct met_report *r = NULL;
    struct met_options mo = {200, 7};

    for (int i = 0; i < N; i++) {
        truth[i] = i % K;
        for (int c = 0; c < K; c++)
            prob[i * K + c] = c == truth[i] ? 0.9 - 0.001 * i : (0.1 + 0.001 * i) / 2;
    }
    assert_int_equal(met_compute(N, K, truth, prob, &mo, &r, NULL), CXR_OK);
    assert_true(r->accuracy == 1 && r->macro_f1 == 1);
    for (int c = 0; c < K; c++) {
        assert_true(fabs(r->cls[c].auc - 1) < EPS);
        assert_true(fabs(r->cls[c].ap - 1) < EPS);
        assert_true(r->cls[c].ci_auc.lo == 1 && r->cls[c].ci_auc.hi == 1);
    }
    assert_true(r->ci_accuracy.lo == 1 && r->ci_accuracy.hi == 1);
    assert_int_equal(r->boot_resamples, 200);
    met_report_free(r);

    for (int i = 0; i < N * K; i++)
        prob[i] = 1.0 / K;
    assert_int_equal(met_compute(N, K, truth, prob, NULL, &r, NULL), CXR_OK);
    assert_true(fabs(r->accuracy - 1.0 / 3) < EPS);
    for (int c = 0; c < K; c++) {
        assert_true(fabs(r->cls[c].auc - 0.5) < EPS);
        assert_true(fabs(r->cls[c].ap - 1.0 / 3) < EPS);
    }
    assert_int_equal(r->confusion[1 * K + 0], N / 3);
    /* everything in bin 3 ((.3, .4]): confidence 1/3, accuracy 1/3 -> ECE 0 */
    assert_int_equal(r->cal[3].count, N);
    assert_true(fabs(r->ece) < EPS);
    met_report_free(r);
}

static void test_bootstrap_reproducible(void **state)
{
    enum { N = 300, K = 4 };
    int truth[N];
    double prob[N * K];
    struct met_report *a = NULL, *b = NULL, *c = NULL;
    struct met_options mo = {500, 12345};
    struct met_rng rng;

    met_rng_seed(&rng, 99);
    for (int i = 0; i < N; i++) {
        double sum = 0;
        truth[i] = (int)met_rng_below(&rng, K);
        for (int j = 0; j < K; j++) {
            prob[i * K + j] = (double)met_rng_below(&rng, 1000) / 1000.0 + 0.4 * (j == truth[i]);
            sum += prob[i * K + j];
        }
        for (int j = 0; j < K; j++)
            prob[i * K + j] /= sum;
    }
    assert_int_equal(met_compute(N, K, truth, prob, &mo, &a, NULL), CXR_OK);
    assert_int_equal(met_compute(N, K, truth, prob, &mo, &b, NULL), CXR_OK);
    mo.seed = 1;
    assert_int_equal(met_compute(N, K, truth, prob, &mo, &c, NULL), CXR_OK);
    assert_true(a->ci_accuracy.lo == b->ci_accuracy.lo && a->ci_accuracy.hi == b->ci_accuracy.hi);
    assert_true(a->cls[2].ci_auc.lo == b->cls[2].ci_auc.lo);
    assert_true(a->ci_macro_f1.lo != c->ci_macro_f1.lo || a->ci_macro_f1.hi != c->ci_macro_f1.hi);
    assert_true(a->ci_accuracy.lo < a->accuracy && a->accuracy < a->ci_accuracy.hi);
    assert_true(a->ci_macro_f1.lo < a->macro_f1 && a->macro_f1 < a->ci_macro_f1.hi);
    for (int j = 0; j < K; j++) {
        assert_true(a->cls[j].ci_auc.lo <= a->cls[j].auc && a->cls[j].auc <= a->cls[j].ci_auc.hi);
        assert_true(a->cls[j].ci_recall.lo <= a->cls[j].recall &&
                    a->cls[j].recall <= a->cls[j].ci_recall.hi);
        /* the interval is not degenerate with 300 noisy samples */
        assert_true(a->cls[j].ci_recall.hi - a->cls[j].ci_recall.lo > 0.02);
    }
    met_report_free(a);
    met_report_free(b);
    met_report_free(c);
}

static void test_operating_point(void **state)
{
    const int truth[] = {0, 0, 1, 1};
    const double s[] = {0.15, 0.45, 0.35, 0.85};
    double prob[8];
    struct met_oppoint op;

    binary(s, 4, prob);
    assert_int_equal(met_operating_point(4, 2, truth, prob, 1, 0.5, &op), CXR_OK);
    assert_true(op.threshold == 0.85 && op.tp == 1 && op.fp == 0);
    assert_true(op.specificity == 1 && op.precision == 1 && op.recall == 0.5);
    assert_int_equal(met_operating_point(4, 2, truth, prob, 1, 0.95, &op), CXR_OK);
    assert_true(op.threshold == 0.35 && op.tp == 2 && op.fp == 1 && op.tn == 1);
    assert_true(fabs(op.specificity - 0.5) < EPS && fabs(op.precision - 2.0 / 3) < EPS);
    assert_int_equal(met_operating_point(4, 2, truth, prob, 2, 0.9, &op), CXR_EINVAL);
    assert_int_equal(met_operating_point(4, 2, truth, prob, 1, 0.0, &op), CXR_EINVAL);
    {
        const int none[] = {0, 0, 0, 0};
        assert_int_equal(met_operating_point(4, 2, none, prob, 1, 0.9, &op), CXR_ENOTFOUND);
    }
}

static void test_bad_input(void **state)
{
    const int truth[] = {0, 2};
    const double prob[] = {0.5, 0.5, 0.5, 0.5};
    const double nanp[] = {0.5, NAN, 0.5, 0.5};
    const int ok[] = {0, 1};
    struct met_report *r = NULL;
    struct cxr_buf e;

    cxr_buf_init(&e, 1024);
    assert_int_equal(met_compute(2, 2, truth, prob, NULL, &r, &e), CXR_EINVAL);
    assert_non_null(strstr(cxr_buf_str(&e), "sample 1"));
    assert_null(r);
    cxr_buf_reset(&e);
    assert_int_equal(met_compute(2, 2, ok, nanp, NULL, &r, &e), CXR_EINVAL);
    assert_non_null(strstr(cxr_buf_str(&e), "sample 0 class 1"));
    assert_int_equal(met_compute(0, 2, ok, prob, NULL, &r, NULL), CXR_EINVAL);
    assert_int_equal(met_compute(2, 1, ok, prob, NULL, &r, NULL), CXR_EINVAL);
    {
        struct met_options mo = {1000000, 1};
        assert_int_equal(met_compute(2, 2, ok, prob, &mo, &r, NULL), CXR_ELIMIT);
    }
    assert_null(r);
    met_report_free(NULL);
    cxr_buf_done(&e);
}

static void test_rng(void **state)
{
    struct met_rng a, b;
    size_t hist[7] = {0};

    met_rng_seed(&a, 5);
    met_rng_seed(&b, 5);
    for (int i = 0; i < 100; i++)
        assert_true(met_rng_next(&a) == met_rng_next(&b));
    for (int i = 0; i < 70000; i++)
        hist[met_rng_below(&a, 7)]++;
    for (int i = 0; i < 7; i++)
        assert_true(hist[i] > 9500 && hist[i] < 10500);
}

static void test_parse_target_and_mistakes(void **state)
{
    const char *const names[] = {"COVID", "Lung_Opacity", "Normal"};
    size_t cls = 99, idx[4], m = 0;
    double rec = 0;
    struct cxr_buf e;
    const int truth[] = {0, 1, 2, 0};
    const double prob[] = {.2, .7, .1, .1, .8, .1, .9, .05, .05, .3, .3, .4};

    cxr_buf_init(&e, 1024);
    assert_int_equal(met_parse_target("COVID:0.95", names, 3, &cls, &rec, &e), CXR_OK);
    assert_int_equal(cls, 0);
    assert_true(rec == 0.95);
    assert_int_equal(met_parse_target("2:1", names, 3, &cls, &rec, &e), CXR_OK);
    assert_int_equal(cls, 2);
    assert_int_equal(met_parse_target("Covid:0.9", names, 3, &cls, &rec, &e), CXR_EINVAL);
    assert_non_null(strstr(cxr_buf_str(&e), "unknown class 'Covid'"));
    assert_int_equal(met_parse_target("Normal:1.5", names, 3, &cls, &rec, &e), CXR_EINVAL);
    assert_int_equal(met_parse_target("Normal:", names, 3, &cls, &rec, &e), CXR_EINVAL);
    assert_int_equal(met_parse_target("0.95", names, 3, &cls, &rec, &e), CXR_EINVAL);
    assert_int_equal(met_parse_target("3:0.5", names, 3, &cls, &rec, &e), CXR_EINVAL);
    cxr_buf_done(&e);

    /* mistakes: sample 0 (conf .7), 2 (conf .9), 3 (conf .4); sample 1 is right */
    assert_int_equal(met_top_mistakes(4, 3, truth, prob, 4, idx, &m), CXR_OK);
    assert_int_equal(m, 3);
    assert_int_equal(idx[0], 2);
    assert_int_equal(idx[1], 0);
    assert_int_equal(idx[2], 3);
    assert_int_equal(met_top_mistakes(4, 3, truth, prob, 1, idx, &m), CXR_OK);
    assert_int_equal(m, 1);
    assert_int_equal(idx[0], 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_binary),
        cmocka_unit_test(test_ties),
        cmocka_unit_test(test_class_without_positives),
        cmocka_unit_test(test_perfect_and_constant),
        cmocka_unit_test(test_bootstrap_reproducible),
        cmocka_unit_test(test_operating_point),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_rng),
        cmocka_unit_test(test_parse_target_and_mistakes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
