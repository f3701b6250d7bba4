/*
 * test_operating.c - choosing the triage rule's operating points (trainer/operating.c) on
 * synthetic scores: hand-checked cases, then random ones checked by brute force over every
 * 4-decimal threshold against the definition (highest threshold keeping the sensitivity;
 * lowest keeping the normal precision), through the stored rule.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model.h"
#include "operating.h"

/* Class 1 is the normal one, as "Normal" sorts between the abnormal classes in cxr4. */
static const char *const CLASSES3[] = {"Alpha", "Normal", "Beta"};

static nn_model *model3(void)
{
    nn_model *m = NULL;
    char err[256] = "";

    assert_int_equal(nn_model_build("input 8 1\nconv 2 3 1 1\nrelu\ngap\ndense classes\n", NULL,
                                    3, CLASSES3, 1, &m, err, sizeof(err)),
                     CXR_OK);
    return m;
}

static void set_row(float *p, float a, float normal, float b)
{
    p[0] = a;
    p[1] = normal;
    p[2] = b;
}

static void test_hand_checked(void **state)
{
    /* 10 Alpha images scored 0.95, 0.90, ..., 0.50 (the 9th highest is 0.55: 90 %), 10 Beta
     * images scored 0.123456 + i/100 for Beta, 10 normal images. */
    enum { N = 30 };
    int truth[N];
    float p[N * 3], thr[3];
    bool reached;
    char err[256] = "";

    (void)state;
    for (int i = 0; i < 10; i++) {
        truth[i] = 0;
        set_row(p + i * 3, (float)(95 - 5 * i) / 100.0f, 0.0f, 0.0f);
        truth[10 + i] = 2;
        set_row(p + (10 + i) * 3, 0.0f, 0.0f, 0.123456f + 0.01f * (float)i);
        truth[20 + i] = 1;
        /* Normal scores 0.50 .. 0.95; abnormal images all score 0 for Normal. */
        set_row(p + (20 + i) * 3, 0.0f, (float)(50 + 5 * i) / 100.0f, 0.0f);
    }
    assert_int_equal(op_choose(N, 3, truth, p, 1, 0.9, 0.95, thr, &reached, err, sizeof(err)),
                     CXR_OK);
    assert_float_equal(thr[0], 0.55f, 1e-6);
    /* Beta: 9th highest is 0.133456 -> floored to 0.1334 (never rounded up past a score). */
    assert_float_equal(thr[2], 0.1334f, 1e-6);
    /* Normal: the non-urgent images are the normal ones and the 1 Alpha at 0.50 and Beta at
     * 0.123456 (scores 0 for Normal), so every threshold above 0 is 100 % precise: the lowest
     * is 0.5. */
    assert_true(reached);
    assert_float_equal(thr[1], 0.5f, 1e-6);

    /* Two abnormal images left non-urgent with the highest normal scores (0.97, 0.96): no
     * threshold has precision >= 0.95 any more (at most 10/12), so the target is not reached
     * and 'normal' is practically never given. */
    set_row(p + 9 * 3, 0.50f, 0.97f, 0.0f);   /* the Alpha left non-urgent */
    set_row(p + 10 * 3, 0.0f, 0.96f, 0.123456f); /* the Beta left non-urgent */
    assert_int_equal(op_choose(N, 3, truth, p, 1, 0.9, 0.95, thr, &reached, err, sizeof(err)),
                     CXR_OK);
    assert_false(reached);
    assert_float_equal(thr[1], 1.0f, 0);
    /* At 0.8 precision is enough: 10/12 = 0.833 >= 0.8, and all lower thresholds too. */
    assert_int_equal(op_choose(N, 3, truth, p, 1, 0.9, 0.8, thr, &reached, err, sizeof(err)),
                     CXR_OK);
    assert_true(reached);
    assert_float_equal(thr[1], 0.5f, 1e-6);
}

static void test_errors(void **state)
{
    int truth[4] = {0, 1, 0, 1};
    float p[12] = {0}, thr[3];
    bool reached;
    char err[256] = "";

    (void)state;
    /* No Beta image: its threshold cannot be chosen. */
    assert_int_equal(op_choose(4, 3, truth, p, 1, 0.9, 0.95, thr, &reached, err, sizeof(err)),
                     CXR_ENOTFOUND);
    assert_non_null(strstr(err, "class 2 has no images"));
    assert_int_equal(op_choose(0, 3, truth, p, 1, 0.9, 0.95, thr, &reached, err, sizeof(err)),
                     CXR_EINVAL);
    assert_int_equal(op_choose(4, 3, truth, p, 1, 1.5, 0.95, thr, &reached, err, sizeof(err)),
                     CXR_EINVAL);
    truth[0] = 2;
    p[0] = NAN;
    assert_int_equal(op_choose(4, 3, truth, p, 1, 0.9, 0.95, thr, &reached, err, sizeof(err)),
                     CXR_EINVAL);
}

/* Fraction of class c's images with score >= t, or of images given 'normal' that are normal. */
static double sens_at(size_t n, const int *truth, const float *p, int c, float t)
{
    size_t pos = 0, hit = 0;
    for (size_t i = 0; i < n; i++)
        if (truth[i] == c) {
            pos++;
            hit += p[i * 3 + (size_t)c] >= t;
        }
    return (double)hit / (double)pos;
}

static void test_random_against_definition(void **state)
{
    enum { N = 400 };
    static int truth[N];
    static float p[N * 3];
    uint64_t rng = 12345;
    nn_model *m = model3();
    struct op_figures f;
    struct nn_triage_rule rule;
    char err[512] = "";

    (void)state;
    for (size_t i = 0; i < N; i++) {
        float raw[3], sum = 0;
        truth[i] = (int)(i % 3);
        for (int c = 0; c < 3; c++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            raw[c] = (float)((rng >> 33) % 1000) / 1000.0f + (c == truth[i] ? 0.6f : 0.0f);
            sum += raw[c];
        }
        for (int c = 0; c < 3; c++)
            p[i * 3 + (size_t)c] = raw[c] / sum;
    }
    assert_int_equal(op_set_model(m, N, truth, p, "synthetic", &f, err, sizeof(err)), CXR_OK);
    assert_string_equal(nn_model_meta(m, NN_META_TRIAGE_NORMAL), "Normal");
    assert_non_null(strstr(nn_model_meta(m, NN_META_TRIAGE_METHOD), "synthetic, n=400;"));
    assert_int_equal(nn_triage_rule_init(m, &rule, err, sizeof(err)), CXR_OK);
    {
        /* "Alpha=0.xxxx;Normal=0.xxxx;Beta=0.xxxx": 4 decimals each. */
        const char *v = nn_model_meta(m, NN_META_TRIAGE_THRESHOLDS);
        char want[128];
        snprintf(want, sizeof(want), "Alpha=%.4f;Normal=%.4f;Beta=%.4f",
                 (double)rule.threshold[0], (double)rule.threshold[1], (double)rule.threshold[2]);
        assert_string_equal(v, want);
    }
    /* Abnormal classes: the stored threshold keeps >= 90 %, the next 4-decimal step does not. */
    for (int c = 0; c < 3; c += 2) {
        float t = rule.threshold[c], up = (float)((round((double)t * 1e4) + 1) / 1e4);
        assert_true(sens_at(N, truth, p, c, t) >= 0.9);
        assert_true(sens_at(N, truth, p, c, up) < 0.9);
        assert_float_equal(f.class_sensitivity[c], sens_at(N, truth, p, c, t), 1e-12);
    }
    assert_true(f.sensitivity >= 0.9);
    /* Normal: precision >= 95 % at the stored threshold (one of the floored scores), and at no
     * lower 4-decimal one that gives 'normal' to more images. */
    assert_true(f.normal_precision >= 0.95);
    {
        struct nn_triage_rule r2 = rule;
        struct op_figures g;
        long stored = lround((double)rule.threshold[1] * 1e4);
        for (long k = 0; k < stored; k++) {
            r2.threshold[1] = (float)((double)k / 1e4);
            op_measure(&r2, m, N, truth, p, &g);
            if (g.called_normal > f.called_normal && g.normal_precision >= 0.95)
                fail_msg("threshold %.4f already has precision %.4f", (double)k / 1e4,
                         g.normal_precision);
        }
    }
    assert_int_equal(f.n, N);
    assert_int_equal(f.urgent_tp + f.urgent_fp + f.called_normal + f.routine, N);
    nn_model_free(m);
}

static void test_by_hand(void **state)
{
    nn_model *m = model3();
    struct nn_triage_rule rule;
    char err[512] = "";

    (void)state;
    assert_int_equal(op_set_by_hand(m, "Alpha=0.3, Normal = 0.75", err, sizeof(err)), CXR_OK);
    assert_string_equal(nn_model_meta(m, NN_META_TRIAGE_THRESHOLDS),
                        "Alpha=0.3000;Normal=0.7500;Beta=0.5000");
    assert_non_null(strstr(nn_model_meta(m, NN_META_TRIAGE_METHOD), "set by hand"));
    assert_int_equal(nn_triage_rule_init(m, &rule, err, sizeof(err)), CXR_OK);
    assert_float_equal(rule.threshold[1], 0.75f, 0);
    assert_int_equal(op_set_by_hand(m, "Gamma=0.3", err, sizeof(err)), CXR_ENOTFOUND);
    assert_non_null(strstr(err, "'Gamma': the model has no such class ('Alpha', 'Normal', 'Beta')"));
    assert_int_equal(op_set_by_hand(m, "Alpha=1.3", err, sizeof(err)), CXR_EINVAL);
    assert_int_equal(op_set_by_hand(m, "Alpha", err, sizeof(err)), CXR_EINVAL);
    assert_non_null(strstr(err, "not CLASS=THRESHOLD"));
    nn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_checked),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_random_against_definition),
        cmocka_unit_test(test_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
