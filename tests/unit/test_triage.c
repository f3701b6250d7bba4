/*
 * test_triage.c - the triage rule (model/triage.c): reading the operating points from a
 * model's metadata (and refusing malformed ones by name), defaults for older models,
 * configuration overrides, the rule at and around its thresholds, the reason and the rule text.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "model.h"

static const char *const CLASSES4[] = {"COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"};
#define META_OK "COVID-19=0.412;Lung Opacity=0.5;Normal=0.6;Viral Pneumonia=0.3"

/* A tiny 4-class model: only its classes and metadata matter here. */
static nn_model *model4(const char *thresholds, const char *normal)
{
    nn_model *m = NULL;
    char err[256] = "";

    assert_int_equal(nn_model_build("input 8 1\nconv 2 3 1 1\nrelu\ngap\ndense classes\n", NULL,
                                    4, CLASSES4, 1, &m, err, sizeof(err)),
                     CXR_OK);
    if (thresholds)
        assert_int_equal(nn_model_set_meta(m, NN_META_TRIAGE_THRESHOLDS, thresholds), CXR_OK);
    if (normal)
        assert_int_equal(nn_model_set_meta(m, NN_META_TRIAGE_NORMAL, normal), CXR_OK);
    return m;
}

static void test_init_from_metadata(void **state)
{
    nn_model *m = model4(" COVID-19 = 0.412 ;Lung Opacity=0.5;Normal=0.6;Viral Pneumonia=0.3",
                         "Normal");
    struct nn_triage_rule r;
    char err[256] = "", text[512];

    (void)state;
    assert_int_equal(nn_triage_rule_init(m, &r, err, sizeof(err)), CXR_OK);
    assert_int_equal(r.n_classes, 4);
    assert_int_equal(r.normal_class, 2);
    assert_float_equal(r.threshold[0], 0.412f, 1e-7);
    assert_float_equal(r.threshold[1], 0.5f, 1e-7);
    assert_float_equal(r.threshold[2], 0.6f, 1e-7);
    assert_float_equal(r.threshold[3], 0.3f, 1e-7);
    for (int c = 0; c < 4; c++)
        assert_false(r.overridden[c]);
    {
        size_t need = nn_triage_rule_text(&r, m, text, sizeof(text));
        assert_int_equal(need, strlen(text));
    }
    assert_string_equal(text, "cxr-triage-v1 urgent: COVID-19>=0.412 Lung Opacity>=0.5 "
                              "Viral Pneumonia>=0.3; normal: Normal>=0.6 (source: model)");
    nn_model_free(m);
}

static void expect_refused(const char *thresholds, const char *normal, const char *want)
{
    nn_model *m = model4(thresholds, normal);
    struct nn_triage_rule r;
    char err[512] = "";

    memset(&r, 0x5a, sizeof(r));
    assert_int_equal(nn_triage_rule_init(m, &r, err, sizeof(err)), CXR_EMODEL);
    if (!strstr(err, want))
        fail_msg("'%s': got '%s', want '%s'", thresholds ? thresholds : "(none)", err, want);
    assert_int_equal(r.n_classes, 0x5a5a5a5a); /* ret untouched on failure */
    nn_model_free(m);
}

static void test_malformed_metadata(void **state)
{
    (void)state;
    expect_refused("COVID-19=0.4;Lung Opacity=0.5;Normal=0.6", NULL,
                   "class 'Viral Pneumonia' has no threshold");
    expect_refused("COVID-19=0.4;Lung Opacity;Normal=0.6;Viral Pneumonia=0.3", NULL,
                   "item 'Lung Opacity' is not CLASS=THRESHOLD");
    expect_refused("COVID=0.4;Lung Opacity=0.5;Normal=0.6;Viral Pneumonia=0.3", NULL,
                   "class 'COVID' is not one of the model's classes ('COVID-19', 'Lung Opacity', "
                   "'Normal', 'Viral Pneumonia')");
    expect_refused("COVID-19=1.2;Lung Opacity=0.5;Normal=0.6;Viral Pneumonia=0.3", NULL,
                   "threshold '1.2' of class 'COVID-19' is not a number in [0,1]");
    expect_refused("COVID-19=nan;Lung Opacity=0.5;Normal=0.6;Viral Pneumonia=0.3", NULL,
                   "threshold 'nan' of class 'COVID-19'");
    expect_refused("COVID-19=;Lung Opacity=0.5;Normal=0.6;Viral Pneumonia=0.3", NULL,
                   "threshold '' of class 'COVID-19'");
    expect_refused("COVID-19=0.4x;Lung Opacity=0.5;Normal=0.6;Viral Pneumonia=0.3", NULL,
                   "threshold '0.4x'");
    expect_refused("COVID-19=0.4;COVID-19=0.5;Lung Opacity=0.5;Normal=0.6;Viral Pneumonia=0.3",
                   NULL, "class 'COVID-19' is given twice");
    expect_refused(META_OK ";", NULL, "item '' is not CLASS=THRESHOLD");
    expect_refused("", NULL, "is not CLASS=THRESHOLD");
    expect_refused(META_OK, "Healthy", "triage_normal_class: class 'Healthy' is not one of");
}

static void test_missing_metadata_defaults(void **state)
{
    static const char *const other[] = {"cat", "dog"};
    nn_model *m = model4(NULL, NULL), *m2 = NULL;
    struct nn_triage_rule r;
    char err[256] = "", text[512];

    (void)state;
    assert_int_equal(nn_triage_rule_init(m, &r, err, sizeof(err)), CXR_OK);
    assert_int_equal(r.normal_class, 2);
    for (int c = 0; c < 4; c++)
        assert_float_equal(r.threshold[c], 0.5f, 0);
    (void)nn_triage_rule_text(&r, m, text, sizeof(text));
    assert_string_equal(text, "cxr-triage-v1 urgent: COVID-19>=0.5 Lung Opacity>=0.5 "
                              "Viral Pneumonia>=0.5; normal: Normal>=0.5 (source: default)");
    nn_model_free(m);

    /* No class named Normal: no normal class, everything below threshold is routine. */
    assert_int_equal(nn_model_build("input 8 1\nconv 2 3 1 1\nrelu\ngap\ndense classes\n", NULL,
                                    2, other, 1, &m2, err, sizeof(err)),
                     CXR_OK);
    assert_int_equal(nn_triage_rule_init(m2, &r, err, sizeof(err)), CXR_OK);
    assert_int_equal(r.normal_class, -1);
    (void)nn_triage_rule_text(&r, m2, text, sizeof(text));
    assert_string_equal(text, "cxr-triage-v1 urgent: cat>=0.5 dog>=0.5; normal: none "
                              "(source: default)");
    {
        const float p[2] = {0.3f, 0.4f};
        assert_int_equal(nn_triage_apply(&r, m2, p, text, sizeof(text)), NN_PRIO_ROUTINE);
        assert_string_equal(text, "no class at its threshold; the model has no normal class");
    }
    nn_model_free(m2);
}

static void test_override(void **state)
{
    nn_model *m = model4(META_OK, "Normal");
    struct nn_triage_rule r, before;
    char err[512] = "", text[512];

    (void)state;
    assert_int_equal(nn_triage_rule_init(m, &r, err, sizeof(err)), CXR_OK);
    assert_int_equal(nn_triage_rule_set(&r, m, "COVID-19", 0.25f, err, sizeof(err)), CXR_OK);
    assert_float_equal(r.threshold[0], 0.25f, 0);
    assert_true(r.overridden[0]);
    assert_false(r.overridden[1]);
    (void)nn_triage_rule_text(&r, m, text, sizeof(text));
    assert_string_equal(text, "cxr-triage-v1 urgent: COVID-19>=0.25 Lung Opacity>=0.5 "
                              "Viral Pneumonia>=0.3; normal: Normal>=0.6 "
                              "(source: model; config: COVID-19)");
    assert_int_equal(nn_triage_rule_set(&r, m, "Normal", 0.7f, err, sizeof(err)), CXR_OK);
    (void)nn_triage_rule_text(&r, m, text, sizeof(text));
    assert_non_null(strstr(text, "normal: Normal>=0.7 (source: model; config: COVID-19, Normal)"));

    before = r;
    assert_int_equal(nn_triage_rule_set(&r, m, "covid", 0.3f, err, sizeof(err)), CXR_ENOTFOUND);
    assert_string_equal(err, "triage threshold for class 'covid': the model has no such class "
                             "('COVID-19', 'Lung Opacity', 'Normal', 'Viral Pneumonia')");
    assert_int_equal(nn_triage_rule_set(&r, m, "Lung Opacity", 1.5f, err, sizeof(err)),
                     CXR_EINVAL);
    assert_non_null(strstr(err, "outside [0,1]"));
    assert_int_equal(nn_triage_rule_set(&r, m, "Lung Opacity", -0.1f, err, sizeof(err)),
                     CXR_EINVAL);
    assert_memory_equal(&r, &before, sizeof(r));

    for (int c = 0; c < 4; c++)
        assert_int_equal(nn_triage_rule_set(&r, m, CLASSES4[c], 0.5f, err, sizeof(err)), CXR_OK);
    (void)nn_triage_rule_text(&r, m, text, sizeof(text));
    assert_non_null(strstr(text, "(source: config)"));
    nn_model_free(m);
}

static void test_apply_thresholds(void **state)
{
    nn_model *m = model4(META_OK, "Normal");
    struct nn_triage_rule r;
    char err[256] = "", why[256];
    float p[4];

    (void)state;
    assert_int_equal(nn_triage_rule_init(m, &r, err, sizeof(err)), CXR_OK);

    /* Exactly at the threshold triggers ("at or above"). */
    p[0] = r.threshold[0]; p[1] = 0.1f; p[2] = 0.2f; p[3] = 0.1f;
    assert_int_equal(nn_triage_apply(&r, m, p, why, sizeof(why)), NN_PRIO_URGENT);
    assert_string_equal(why, "COVID-19 0.4120 >= 0.412");
    /* Just below does not. */
    p[0] = nextafterf(r.threshold[0], 0.0f);
    assert_int_equal(nn_triage_apply(&r, m, p, why, sizeof(why)), NN_PRIO_ROUTINE);
    assert_string_equal(why, "no class at its threshold; Normal 0.2000 < 0.6");

    /* Normal at and just below its threshold, nothing abnormal triggering. */
    p[0] = 0.1f; p[1] = 0.1f; p[2] = 0.6f; p[3] = 0.2f;
    assert_int_equal(nn_triage_apply(&r, m, p, why, sizeof(why)), NN_PRIO_NORMAL);
    assert_string_equal(why, "Normal 0.6000 >= 0.6; no other class at its threshold");
    p[2] = nextafterf(0.6f, 0.0f);
    assert_int_equal(nn_triage_apply(&r, m, p, why, sizeof(why)), NN_PRIO_ROUTINE);

    /* An abnormal class at its threshold wins over a high normal score. */
    p[0] = 0.0f; p[1] = 0.0f; p[2] = 0.7f; p[3] = 0.3f;
    assert_int_equal(nn_triage_apply(&r, m, p, why, sizeof(why)), NN_PRIO_URGENT);
    assert_string_equal(why, "Viral Pneumonia 0.3000 >= 0.3");

    /* The normal class's own threshold never makes an image urgent. */
    p[0] = 0.0f; p[1] = 0.0f; p[2] = 0.99f; p[3] = 0.01f;
    assert_int_equal(nn_triage_apply(&r, m, p, NULL, 0), NN_PRIO_NORMAL);
    assert_int_equal(nn_triage_apply(&r, m, p, NULL, 99), NN_PRIO_NORMAL);

    /* A non-finite score gives no priority. */
    p[1] = NAN;
    assert_int_equal(nn_triage_apply(&r, m, p, why, sizeof(why)), NN_PRIO_NONE);
    assert_non_null(strstr(why, "Lung Opacity"));
    nn_model_free(m);
}

static void test_urgent_picks_highest(void **state)
{
    nn_model *m = model4(META_OK, "Normal");
    struct nn_triage_rule r;
    char err[256] = "", why[256];
    /* All three abnormal classes trigger; Lung Opacity has the highest score though its margin
     * over its threshold (0.05) is below Viral Pneumonia's (0.2). */
    const float p[4] = {0.42f, 0.55f, 0.0f, 0.5f};

    (void)state;
    assert_int_equal(nn_triage_rule_init(m, &r, err, sizeof(err)), CXR_OK);
    assert_int_equal(nn_triage_apply(&r, m, p, why, sizeof(why)), NN_PRIO_URGENT);
    assert_string_equal(why, "Lung Opacity 0.5500 >= 0.5; also COVID-19 0.4200 >= 0.412; "
                             "also Viral Pneumonia 0.5000 >= 0.3");
    /* A short buffer is truncated, never overrun. */
    {
        char small[12];
        assert_int_equal(nn_triage_apply(&r, m, p, small, sizeof(small)), NN_PRIO_URGENT);
        assert_string_equal(small, "Lung Opacit");
    }
    nn_model_free(m);
}

static void test_text_snprintf_like(void **state)
{
    nn_model *m = model4(META_OK, "Normal");
    struct nn_triage_rule r;
    char err[256] = "", text[512], small[10];
    size_t need;

    (void)state;
    assert_int_equal(nn_triage_rule_init(m, &r, err, sizeof(err)), CXR_OK);
    need = nn_triage_rule_text(&r, m, NULL, 0);
    assert_int_equal(nn_triage_rule_text(&r, m, text, sizeof(text)), need);
    assert_int_equal(strlen(text), need);
    assert_int_equal(nn_triage_rule_text(&r, m, small, sizeof(small)), need);
    assert_string_equal(small, "cxr-triag");
    assert_string_equal(nn_priority_name(NN_PRIO_URGENT), "urgent");
    assert_string_equal(nn_priority_name(NN_PRIO_ROUTINE), "routine");
    assert_string_equal(nn_priority_name(NN_PRIO_NORMAL), "normal");
    assert_null(nn_priority_name(NN_PRIO_NONE));
    nn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_from_metadata),   cmocka_unit_test(test_malformed_metadata),
        cmocka_unit_test(test_missing_metadata_defaults), cmocka_unit_test(test_override),
        cmocka_unit_test(test_apply_thresholds),     cmocka_unit_test(test_urgent_picks_highest),
        cmocka_unit_test(test_text_snprintf_like),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
