/*
 * test_hl7.c - unit tests of the report builders (hl7/): HL7 escaping, field placement in the
 * ORU, the FHIR Bundle's shape, input checks and the derived ids. The full round trip through
 * real parsers and validators is tests/integration/test_reports.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "hl7.h"

static const char *const classes[4] = {"COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"};
static const double scores[4] = {0.91234, 0.0421, 0.03, 0.01556};

static void fill(struct rpt_result *r, struct rpt_settings *s)
{
    memset(r, 0, sizeof(*r));
    rpt_settings_init(s);
    s->sending_facility = "RAD";
    s->receiving_application = "EHR";
    s->receiving_facility = "HOSP";
    r->study.study_uid = "1.2.3.4";
    r->study.study_date = "20240101";
    r->study.study_time = "120000";
    r->patient.id = "MRN1";
    r->patient.issuer = "HOSP";
    r->patient.name = "Doe^Jane^Q^Dr.^PhD";
    r->patient.birth_date = "19700101";
    r->patient.sex = "F";
    r->order.accession = "ACC1";
    r->assessed = true;
    r->n_classes = 4;
    r->class_names = classes;
    r->scores = scores;
    r->priority = RPT_PRIO_URGENT;
    r->triage_class = 0;
    r->triage_reason = "COVID-19 0.912 >= 0.412";
    r->model_name = "m";
    r->model_version = "1";
    r->model_digest = "0123456789abcdef0123";
    r->analysis_ms = 1704110700000LL;
}

static char *escaped(const char *in, size_t len, unsigned flags)
{
    struct cxr_buf b;
    char *ret = NULL;

    cxr_buf_init(&b, 4096);
    assert_int_equal(hl7_escape(&b, in, len, flags), CXR_OK);
    assert_int_equal(cxr_buf_puts(&b, ""), CXR_OK);
    assert_int_equal(cxr_buf_take(&b, &ret), CXR_OK);
    return ret;
}

static void test_escape_separators(void **state)
{
    char *e = escaped("a|b^c&d~e\\f", (size_t)-1, 0);

    (void)state;
    /* python-hl7's escape() gives the same (STANDARDS 1.3) */
    assert_string_equal(e, "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f");
    free(e);
    e = escaped("plain Müller 山田", (size_t)-1, 0);
    assert_string_equal(e, "plain Müller 山田");
    free(e);
    e = escaped("ab|cd", 3, 0);
    assert_string_equal(e, "ab\\F\\");
    free(e);
}

static void test_escape_controls(void **state)
{
    char *e = escaped("x\ry\nz\x01", (size_t)-1, 0);

    (void)state;
    assert_string_equal(e, "x\\X0D\\y\\X0A\\z\\X01\\");
    free(e);
    e = escaped("x\r\ny\nz\rw", (size_t)-1, HL7_ESC_TEXT);
    assert_string_equal(e, "x\\.br\\y\\.br\\z\\.br\\w");
    free(e);
}

static void test_escape_limit(void **state)
{
    struct cxr_buf b;

    (void)state;
    cxr_buf_init(&b, 8);
    assert_int_equal(hl7_escape(&b, "||||", (size_t)-1, 0), CXR_ELIMIT);
    assert_null(b.data);
}

/* Field n (MSH counted as HL7 does: MSH-1 is the separator) of the first segment seg. */
static char *field(const char *msg, const char *seg, int n)
{
    const char *p = msg;
    size_t sl = strlen(seg);

    while (p && *p) {
        if (strncmp(p, seg, sl) == 0 && p[sl] == '|') {
            const char *end = strchr(p, '\r');
            int i = strcmp(seg, "MSH") == 0 ? 1 : 0;
            const char *f = p + sl;

            if (strcmp(seg, "MSH") == 0 && n == 1)
                return strdup("|");
            while (f < end && *f == '|' && i < n) {
                f++;
                i++;
                if (i == n) {
                    size_t l = strcspn(f, "|\r");
                    return strndup(f, l);
                }
                f += strcspn(f, "|\r");
            }
            return strdup("");
        }
        p = strchr(p, '\r');
        if (p)
            p++;
    }
    return NULL;
}

static void expect_field(const char *msg, const char *seg, int n, const char *want)
{
    char *got = field(msg, seg, n);

    if (!got || strcmp(got, want) != 0)
        fail_msg("%s-%d: expected '%s', got '%s'", seg, n, want, got ? got : "(no segment)");
    free(got);
}

static char *build_oru(const struct rpt_result *r, const struct rpt_settings *s)
{
    struct cxr_buf b;
    char err[256] = "", *ret = NULL;

    cxr_buf_init(&b, 1u << 20);
    if (hl7_build_oru(r, s, "CTL0001", 1704110712000LL, &b, err, sizeof(err)) != CXR_OK)
        fail_msg("hl7_build_oru: %s", err);
    assert_int_equal(cxr_buf_take(&b, &ret), CXR_OK);
    return ret;
}

static void test_oru_fields(void **state)
{
    struct rpt_result r;
    struct rpt_settings s;
    char *m;

    (void)state;
    fill(&r, &s);
    m = build_oru(&r, &s);
    assert_null(strchr(m, '\n'));
    assert_int_equal(m[strlen(m) - 1], '\r');
    assert_memory_equal(m, "MSH|^~\\&|CXR-AI-GW|RAD|EHR|HOSP|20240101120512+0000||", 52);
    expect_field(m, "MSH", 9, "ORU^R01^ORU_R01");
    expect_field(m, "MSH", 10, "CTL0001");
    expect_field(m, "MSH", 11, "P");
    expect_field(m, "MSH", 12, "2.5.1");
    expect_field(m, "MSH", 18, "UNICODE UTF-8");
    expect_field(m, "PID", 3, "MRN1^^^HOSP^MR");
    expect_field(m, "PID", 5, "Doe^Jane^Q^PhD^Dr."); /* DICOM prefix^suffix -> XPN suffix^prefix */
    expect_field(m, "PID", 7, "19700101");
    expect_field(m, "PID", 8, "F");
    expect_field(m, "ORC", 1, "RE");
    expect_field(m, "ORC", 5, "CM");
    expect_field(m, "OBR", 4, "36554-4^XR Chest Single view^LN");
    expect_field(m, "OBR", 7, "20240101120000");
    expect_field(m, "OBR", 18, "ACC1");
    expect_field(m, "OBR", 3, "");
    expect_field(m, "OBR", 22, "20240101120500+0000");
    expect_field(m, "OBR", 24, "RAD");
    expect_field(m, "OBR", 25, "P");
    expect_field(m, "OBX", 2, "NM");
    expect_field(m, "OBX", 3,
                 "COVID_19_PROB^COVID-19 probability^99CXRAI^840539006^Disease caused by severe "
                 "acute respiratory syndrome coronavirus 2^SCT");
    expect_field(m, "OBX", 5, "0.9123");
    expect_field(m, "OBX", 6, "1^^UCUM");
    expect_field(m, "OBX", 11, "P");
    expect_field(m, "OBX", 18, "m-1^^0123456789abcdef");
    expect_field(m, "OBX", 19, "20240101120500+0000");
    expect_field(m, "NTE", 3, CXR_DISCLAIMER);
    assert_non_null(strstr(m, "\rOBX|4|NM|VIRAL_PNEUMONIA_PROB^Viral Pneumonia probability^99CXRAI"
                              "^75570004^Viral pneumonia^SCT||0.0156|"));
    assert_non_null(strstr(m, "\rOBX|5|CWE|TRIAGE_CLASS^AI triage class^99CXRAI||840539006^"));
    assert_non_null(strstr(m, "\rOBX|6|CWE|TRIAGE_PRIORITY^AI triage priority^99CXRAI||URGENT^"
                              "Urgent^99CXRAI|||A|||P|"));
    assert_non_null(strstr(m, "\rOBX|7|ST|110180^Study Instance UID^DCM||1.2.3.4||||||P|"));
    assert_null(strstr(m, "PV1"));
    free(m);
}

static void test_oru_mapping_options(void **state)
{
    struct rpt_result r;
    struct rpt_settings s;
    char *m;

    (void)state;
    fill(&r, &s);
    s.accession_map = RPT_ACC_FILLER;
    s.send_pv1 = true;
    r.order.filler_order = "F9";
    r.patient.name = "Yamada^Tarou=山田^太郎";
    r.patient.id = "a|b";
    r.patient.sex = "X";
    r.study.study_time = "093015.123456";
    r.study.tz_offset = "-0500";
    m = build_oru(&r, &s);
    expect_field(m, "PV1", 2, "U");
    expect_field(m, "ORC", 3, "ACC1"); /* the accession replaces (0040,2017) */
    expect_field(m, "OBR", 3, "ACC1");
    expect_field(m, "OBR", 18, "");
    expect_field(m, "PID", 3, "a\\F\\b^^^HOSP^MR");
    expect_field(m, "PID", 5, "Yamada^Tarou^^^^^^A~山田^太郎^^^^^^I");
    expect_field(m, "PID", 8, "U");
    expect_field(m, "OBR", 7, "20240101093015.1234-0500");
    free(m);
}

static void test_oru_not_assessed_and_correction(void **state)
{
    static const struct rpt_skipped sk[1] = {{"1.2.9", "lateral | view"}};
    struct rpt_result r;
    struct rpt_settings s;
    char *m;

    (void)state;
    fill(&r, &s);
    r.assessed = false;
    r.n_skipped = 1;
    r.skipped = sk;
    m = build_oru(&r, &s);
    expect_field(m, "OBR", 25, "X");
    assert_null(strstr(m, "|NM|"));
    assert_non_null(strstr(m, "\rOBX|1||TRIAGE_CLASS^AI triage class^99CXRAI||||||||X|"));
    assert_non_null(strstr(m, "|TX|SKIPPED_IMAGES^Images not scored^99CXRAI||1.2.9: lateral \\F\\ view|"));
    free(m);

    fill(&r, &s);
    r.is_correction = true;
    r.previous_control_id = "OLD1";
    m = build_oru(&r, &s);
    expect_field(m, "OBR", 25, "C");
    expect_field(m, "OBX", 11, "C");
    assert_non_null(strstr(m, "NTE|2|L|Correction: this report replaces the report sent as OLD1.\r"));
    free(m);
}

static void expect_einval(const struct rpt_result *r, const struct rpt_settings *s,
                          const char *control_id, const char *what)
{
    struct cxr_buf b;
    char err[256] = "";

    cxr_buf_init(&b, 1u << 16);
    assert_int_equal(cxr_buf_puts(&b, "keep"), CXR_OK);
    assert_int_equal(hl7_build_oru(r, s, control_id, 0, &b, err, sizeof(err)), CXR_EINVAL);
    if (!strstr(err, what))
        fail_msg("error '%s' does not name '%s'", err, what);
    assert_string_equal(cxr_buf_str(&b), "keep"); /* untouched on a refused input */
    if (strcmp(what, "control_id") != 0) {
        err[0] = '\0';
        assert_int_equal(fhir_build_bundle(r, s, 0, &b, err, sizeof(err)), CXR_EINVAL);
        if (!strstr(err, what))
            fail_msg("fhir error '%s' does not name '%s'", err, what);
        assert_string_equal(cxr_buf_str(&b), "keep");
    }
    cxr_buf_done(&b);
}

static void test_refused_inputs(void **state)
{
    struct rpt_result r;
    struct rpt_settings s;
    double bad_scores[4] = {0.5, 1.5, 0, 0};

    (void)state;
    fill(&r, &s);
    r.study.study_uid = "1.2.x";
    expect_einval(&r, &s, "C1", "study.study_uid");
    fill(&r, &s);
    r.study.study_uid = NULL;
    expect_einval(&r, &s, "C1", "study.study_uid");
    fill(&r, &s);
    r.model_digest = "xyz";
    expect_einval(&r, &s, "C1", "model_digest");
    fill(&r, &s);
    r.patient.name = "M\xfcller"; /* ISO 8859-1, not transcoded */
    expect_einval(&r, &s, "C1", "patient.name");
    fill(&r, &s);
    r.scores = bad_scores;
    expect_einval(&r, &s, "C1", "scores[1]");
    fill(&r, &s);
    r.triage_class = 4;
    expect_einval(&r, &s, "C1", "triage_class");
    fill(&r, &s);
    expect_einval(&r, &s, "C|1", "control_id");
    expect_einval(&r, &s, "123456789012345678901", "control_id");
    expect_einval(&r, &s, "", "control_id");
}

static void test_oru_limit(void **state)
{
    struct rpt_result r;
    struct rpt_settings s;
    struct cxr_buf b;
    char err[128];

    (void)state;
    fill(&r, &s);
    cxr_buf_init(&b, 200);
    assert_int_equal(hl7_build_oru(&r, &s, "C1", 0, &b, err, sizeof(err)), CXR_ELIMIT);
    cxr_buf_init(&b, 200);
    assert_int_equal(fhir_build_bundle(&r, &s, 0, &b, err, sizeof(err)), CXR_ELIMIT);
}

/* True when v holds no empty string, array or object and no null (FHIR ele-1). */
static bool no_empties(json_t *v)
{
    const char *k;
    json_t *x;
    size_t i;

    switch (json_typeof(v)) {
    case JSON_NULL:
        return false;
    case JSON_STRING:
        return json_string_length(v) > 0;
    case JSON_ARRAY:
        if (json_array_size(v) == 0)
            return false;
        json_array_foreach(v, i, x) if (!no_empties(x)) return false;
        return true;
    case JSON_OBJECT:
        if (json_object_size(v) == 0)
            return false;
        json_object_foreach(v, k, x) if (!no_empties(x)) return false;
        return true;
    default:
        return true;
    }
}

static json_t *build_bundle(const struct rpt_result *r, const struct rpt_settings *s)
{
    struct cxr_buf b;
    char err[256] = "";
    json_error_t jerr;
    json_t *root;

    cxr_buf_init(&b, 1u << 20);
    if (fhir_build_bundle(r, s, 1704110712000LL, &b, err, sizeof(err)) != CXR_OK)
        fail_msg("fhir_build_bundle: %s", err);
    root = json_loads(cxr_buf_str(&b), 0, &jerr);
    if (!root)
        fail_msg("bundle is not JSON: %s", jerr.text);
    cxr_buf_done(&b);
    return root;
}

static void test_bundle_shape(void **state)
{
    struct rpt_result r;
    struct rpt_settings s;
    json_t *root, *entries, *dr, *obs;
    char id[128];

    (void)state;
    fill(&r, &s);
    r.triage_rule = NULL;
    r.order.accession = NULL;
    r.patient.issuer = NULL;
    root = build_bundle(&r, &s);
    assert_true(no_empties(root));
    assert_string_equal(json_string_value(json_object_get(root, "type")), "transaction");
    entries = json_object_get(root, "entry");
    assert_int_equal(json_array_size(entries), 7); /* Device, 4 scores, triage, report */
    dr = json_object_get(json_array_get(entries, 6), "resource");
    assert_string_equal(json_string_value(json_object_get(dr, "status")), "preliminary");
    assert_null(json_object_get(dr, "basedOn"));
    assert_int_equal(fhir_report_identifier(&r, &s, id, sizeof(id)), CXR_OK);
    assert_string_equal(id, "1.2.3.4-0123456789abcdef");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(dr, "identifier"), 0),
                                          "value")),
        id);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(entries, 6), "request"), "ifNoneExist")),
                        "identifier=urn:cxrtriage:id|1.2.3.4-0123456789abcdef");
    obs = json_object_get(json_array_get(entries, 1), "resource");
    assert_true(json_real_value(json_object_get(json_object_get(obs, "valueQuantity"), "value")) ==
                0.9123);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(obs, "device"), "reference")),
        json_string_value(json_object_get(json_array_get(entries, 0), "fullUrl")));
    json_decref(root);

    r.assessed = false;
    r.is_correction = true;
    root = build_bundle(&r, &s);
    assert_true(no_empties(root));
    entries = json_object_get(root, "entry");
    assert_int_equal(json_array_size(entries), 1);
    dr = json_object_get(json_array_get(entries, 0), "resource");
    assert_string_equal(json_string_value(json_object_get(dr, "status")), "cancelled");
    assert_null(json_object_get(dr, "result"));
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(entries, 0), "request"), "method")),
                        "PUT");
    json_decref(root);
}

static void test_ids(void **state)
{
    struct rpt_result r;
    struct rpt_settings s;
    char k1[64], k2[64], k3[64], c1[32], c2[32];

    (void)state;
    fill(&r, &s);
    assert_int_equal(hl7_idempotency_key(&r, k1, sizeof(k1)), CXR_OK);
    assert_int_equal(strlen(k1), 36);
    assert_memory_equal(k1, "cxr-", 4);
    r.patient.name = "Other^Name"; /* not part of the key */
    r.analysis_ms += 5000;
    assert_int_equal(hl7_idempotency_key(&r, k2, sizeof(k2)), CXR_OK);
    assert_string_equal(k1, k2);
    r.is_correction = true;
    assert_int_equal(hl7_idempotency_key(&r, k3, sizeof(k3)), CXR_OK);
    assert_string_not_equal(k1, k3);
    r.is_correction = false;
    r.model_digest = "fedcba98765432100000";
    assert_int_equal(hl7_idempotency_key(&r, k3, sizeof(k3)), CXR_OK);
    assert_string_not_equal(k1, k3);
    assert_int_equal(hl7_idempotency_key(&r, k3, 36), CXR_EINVAL);

    assert_int_equal(hl7_control_id_suggest(&r, 1, c1, sizeof(c1)), CXR_OK);
    assert_int_equal(hl7_control_id_suggest(&r, 2, c2, sizeof(c2)), CXR_OK);
    assert_int_equal(strlen(c1), 20);
    assert_string_not_equal(c1, c2);
    assert_int_equal(hl7_control_id_suggest(&r, 1, c2, 20), CXR_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_separators),
        cmocka_unit_test(test_escape_controls),
        cmocka_unit_test(test_escape_limit),
        cmocka_unit_test(test_oru_fields),
        cmocka_unit_test(test_oru_mapping_options),
        cmocka_unit_test(test_oru_not_assessed_and_correction),
        cmocka_unit_test(test_refused_inputs),
        cmocka_unit_test(test_oru_limit),
        cmocka_unit_test(test_bundle_shape),
        cmocka_unit_test(test_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
