/*
 * report_gen.c - writes the HL7 ORU and the FHIR Bundle of a set of test results, for the
 * validators of tests/integration/test_reports.sh.
 *
 *   report_gen OUTDIR
 *
 * For each case NAME: OUTDIR/NAME.hl7 (the ORU, CR-separated), OUTDIR/NAME.fhir.json (the
 * Bundle) and OUTDIR/NAME.input.json, the sidecar with every input the builders got (result,
 * settings, control id, times) so a checker can compare what it parses back with what went in.
 * Cases: plain, every HL7 encoding character and CR/LF in the DICOM values, non-ASCII names
 * (ISO_IR 100 transcoded, Japanese and Greek from ISO_IR 192), not assessed, corrections, no
 * accession, minimal input, and the other settings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hl7.h"

static const char *const classes[4] = {"COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"};
static const double scores_urgent[4] = {0.91234, 0.0421, 0.03, 0.01556};
static const double scores_normal[4] = {0.01, 0.05, 0.9, 0.04};
static const double scores_edge[4] = {1.0, 0.0, 0.00004, 0.99995};
static const struct rpt_skipped skipped_lateral[2] = {
    {"1.2.826.0.1.3680043.8.498.10.1", "lateral view (ViewPosition LL)"},
    {"1.2.826.0.1.3680043.8.498.10.2", "not a chest image: BodyPartExamined 'SKULL'"},
};
static const struct rpt_skipped skipped_special[1] = {
    {"1.2.826.0.1.3680043.8.498.10.3", "reason with | ^ ~ \\ & and\r\na line break"},
};

#define DIGEST "3f5a9c0e7b1d2468ace013579bdf02468ace013579bdf02468ace013579bdf0"

static void base(struct rpt_result *r, struct rpt_settings *s)
{
    memset(r, 0, sizeof(*r));
    rpt_settings_init(s);
    s->sending_facility = "RADIOLOGY";
    s->receiving_application = "EHR";
    s->receiving_facility = "HOSP";
    r->study.study_uid = "1.2.826.0.1.3680043.8.498.12345678901234567890";
    r->study.study_date = "20240101";
    r->study.study_time = "120000";
    r->study.n_series = 1;
    r->study.n_instances = 2;
    r->patient.id = "MRN12345";
    r->patient.issuer = "HOSP";
    r->patient.name = "Doe^Jane^Q^Dr.^PhD";
    r->patient.birth_date = "19700101";
    r->patient.sex = "F";
    r->order.accession = "ACC0001";
    r->order.placer_order = "PL0001";
    r->order.filler_order = "FI0001";
    r->order.requested_procedure_id = "RP0001";
    r->assessed = true;
    r->n_classes = 4;
    r->class_names = classes;
    r->scores = scores_urgent;
    r->priority = RPT_PRIO_URGENT;
    r->triage_class = 0;
    r->triage_reason = "COVID-19 0.912 >= 0.412";
    r->triage_rule = "cxr-triage-v1 urgent: COVID-19>=0.412 Lung Opacity>=0.5 Viral "
                     "Pneumonia>=0.3; normal: Normal>=0.6 (source: model)";
    r->model_name = "cxr4-resnet";
    r->model_version = "1.2.0";
    r->model_digest = DIGEST;
    r->analysis_ms = 1704110700123LL; /* 2024-01-01T12:05:00.123Z */
}

static json_t *jstr(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *sidecar(const char *name, const struct rpt_result *r, const struct rpt_settings *s,
                       const char *control_id, long long now_ms)
{
    json_t *o = json_object(), *res = json_object(), *st = json_object();
    json_t *cn = json_array(), *sc = json_array(), *sk = json_array();
    char acc[8];

    for (int i = 0; r->class_names && i < r->n_classes; i++) {
        json_array_append_new(cn, json_string(r->class_names[i]));
        json_array_append_new(sc, json_real(r->scores[i]));
    }
    for (size_t i = 0; i < r->n_skipped; i++)
        json_array_append_new(sk, json_pack("{s:o,s:o}", "sop_uid", jstr(r->skipped[i].sop_uid),
                                            "reason", jstr(r->skipped[i].reason)));
    json_object_set_new(
        res, "study",
        json_pack("{s:o,s:o,s:o,s:o}", "study_uid", jstr(r->study.study_uid), "study_date",
                  jstr(r->study.study_date), "study_time", jstr(r->study.study_time), "tz_offset",
                  jstr(r->study.tz_offset)));
    json_object_set_new(res, "patient",
                        json_pack("{s:o,s:o,s:o,s:o,s:o}", "id", jstr(r->patient.id), "issuer",
                                  jstr(r->patient.issuer), "name", jstr(r->patient.name),
                                  "birth_date", jstr(r->patient.birth_date), "sex",
                                  jstr(r->patient.sex)));
    json_object_set_new(
        res, "order",
        json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "accession", jstr(r->order.accession),
                  "placer_order", jstr(r->order.placer_order), "filler_order",
                  jstr(r->order.filler_order), "requested_procedure_id",
                  jstr(r->order.requested_procedure_id), "procedure_code",
                  jstr(r->order.procedure_code), "procedure_scheme",
                  jstr(r->order.procedure_scheme), "procedure_meaning",
                  jstr(r->order.procedure_meaning)));
    json_object_set_new(res, "n_series", json_integer(r->study.n_series));
    json_object_set_new(res, "n_instances", json_integer(r->study.n_instances));
    json_object_set_new(res, "assessed", json_boolean(r->assessed));
    json_object_set_new(res, "class_names", cn);
    json_object_set_new(res, "scores", sc);
    json_object_set_new(res, "priority", json_integer(r->priority));
    json_object_set_new(res, "triage_class", json_integer(r->triage_class));
    json_object_set_new(res, "triage_reason", jstr(r->triage_reason));
    json_object_set_new(res, "triage_rule", jstr(r->triage_rule));
    json_object_set_new(res, "skipped", sk);
    json_object_set_new(res, "model_name", jstr(r->model_name));
    json_object_set_new(res, "model_version", jstr(r->model_version));
    json_object_set_new(res, "model_digest", jstr(r->model_digest));
    json_object_set_new(res, "analysis_ms", json_integer(r->analysis_ms));
    json_object_set_new(res, "is_correction", json_boolean(r->is_correction));
    json_object_set_new(res, "previous_control_id", jstr(r->previous_control_id));
    json_object_set_new(res, "previous_report_id", jstr(r->previous_report_id));
    acc[0] = '\0';
    json_object_set_new(st, "sending_application", jstr(s->sending_application));
    json_object_set_new(st, "sending_facility", jstr(s->sending_facility));
    json_object_set_new(st, "receiving_application", jstr(s->receiving_application));
    json_object_set_new(st, "receiving_facility", jstr(s->receiving_facility));
    acc[0] = s->processing_id;
    acc[1] = '\0';
    json_object_set_new(st, "processing_id", json_string(acc));
    json_object_set_new(st, "accession_map", json_integer(s->accession_map));
    json_object_set_new(st, "send_pv1", json_boolean(s->send_pv1));
    json_object_set_new(st, "id_system", jstr(s->id_system));
    json_object_set_new(st, "code_system", jstr(s->code_system));
    json_object_set_new(st, "patient_id_system", jstr(s->patient_id_system));
    json_object_set_new(o, "case", json_string(name));
    json_object_set_new(o, "result", res);
    json_object_set_new(o, "settings", st);
    json_object_set_new(o, "control_id", json_string(control_id));
    json_object_set_new(o, "now_ms", json_integer(now_ms));
    return o;
}

static int write_file(const char *dir, const char *name, const char *ext, const char *data,
                      size_t len)
{
    char path[4096];
    FILE *f;

    (void)snprintf(path, sizeof(path), "%s/%s%s", dir, name, ext);
    f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "report_gen: cannot write '%s'\n", path);
        return -1;
    }
    return 0;
}

static int emit(const char *dir, const char *name, const struct rpt_result *r,
                const struct rpt_settings *s)
{
    const long long now_ms = 1704110712000LL; /* 2024-01-01T12:05:12Z */
    struct cxr_buf oru, fhir;
    char control_id[32], errbuf[256];
    json_t *side;
    char *side_text;
    int rc = 0;

    cxr_buf_init(&oru, 1u << 20);
    cxr_buf_init(&fhir, 1u << 20);
    if (hl7_control_id_suggest(r, now_ms, control_id, sizeof(control_id)) != CXR_OK ||
        hl7_build_oru(r, s, control_id, now_ms, &oru, errbuf, sizeof(errbuf)) != CXR_OK) {
        fprintf(stderr, "report_gen: %s: ORU: %s\n", name, errbuf);
        rc = -1;
        goto out;
    }
    if (fhir_build_bundle(r, s, now_ms, &fhir, errbuf, sizeof(errbuf)) != CXR_OK) {
        fprintf(stderr, "report_gen: %s: Bundle: %s\n", name, errbuf);
        rc = -1;
        goto out;
    }
    side = sidecar(name, r, s, control_id, now_ms);
    side_text = json_dumps(side, JSON_INDENT(1));
    json_decref(side);
    if (!side_text) {
        rc = -1;
        goto out;
    }
    if (write_file(dir, name, ".hl7", oru.data, oru.len) ||
        write_file(dir, name, ".fhir.json", fhir.data, fhir.len) ||
        write_file(dir, name, ".input.json", side_text, strlen(side_text)))
        rc = -1;
    free(side_text);
out:
    cxr_buf_done(&oru);
    cxr_buf_done(&fhir);
    return rc;
}

int main(int argc, char **argv)
{
    struct rpt_result r;
    struct rpt_settings s;
    int bad = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: report_gen OUTDIR\n");
        return 2;
    }
    const char *dir = argv[1];

    base(&r, &s);
    bad |= emit(dir, "plain", &r, &s);

    /* Every encoding character and CR/LF in values taken from DICOM. */
    base(&r, &s);
    r.patient.name = "O'Brien|Smith~Jones^Ann\\Marie&Co^Mid\rdle^Dr.|^III&";
    r.patient.id = "ID|1^2~3\\4&5\r6";
    r.patient.issuer = "HOSP&LAB|X^Y";
    r.order.accession = "ACC|^~\\&\r\n9";
    r.order.placer_order = "PL&1|^";
    r.order.filler_order = "FI~2\\";
    r.order.requested_procedure_id = "RP^3|";
    r.order.procedure_code = "RPID|^7";
    r.order.procedure_scheme = "99L&C";
    r.order.procedure_meaning = "Chest ~ PA\\AP & lateral | x^y";
    r.triage_reason = "COVID-19 0.912 >= 0.412 | ^ ~ \\ & \r\nsecond line";
    r.n_skipped = 1;
    r.skipped = skipped_special;
    s.sending_facility = "RAD|IO^LOGY";
    bad |= emit(dir, "special", &r, &s);

    /* ISO_IR 100 transcoded to UTF-8 by the daemon. */
    base(&r, &s);
    r.patient.name = "Müller^Zoë^^Frau Dr.";
    r.patient.issuer = "Klinikum Süd";
    r.patient.sex = "M";
    r.scores = scores_normal;
    r.priority = RPT_PRIO_NORMAL;
    r.triage_class = 2;
    r.triage_reason = "no class at its threshold; Normal 0.90 >= 0.60 (Größe: ß)";
    bad |= emit(dir, "latin1", &r, &s);

    /* ISO_IR 192: three component groups (alphabetic, ideographic, phonetic). */
    base(&r, &s);
    r.patient.name = "Yamada^Tarou=山田^太郎=やまだ^たろう";
    r.patient.id = "患者-0042";
    r.order.accession = "受付123";
    r.scores = scores_edge;
    r.triage_class = 3;
    r.triage_reason = "Viral Pneumonia 1.000 >= 0.300";
    bad |= emit(dir, "japanese", &r, &s);

    base(&r, &s);
    r.patient.name = "Διονυσίου^Νίκος";
    r.patient.sex = "O";
    r.patient.issuer = "Νοσοκομείο";
    r.priority = RPT_PRIO_ROUTINE;
    r.triage_class = -1;
    r.triage_reason = "no class at its threshold; Normal 0.03 < 0.60";
    bad |= emit(dir, "greek", &r, &s);

    /* No scorable frontal image. */
    base(&r, &s);
    r.assessed = false;
    r.n_classes = 0;
    r.class_names = NULL;
    r.scores = NULL;
    r.priority = RPT_PRIO_NONE;
    r.triage_class = -1;
    r.triage_reason = NULL;
    r.n_skipped = 2;
    r.skipped = skipped_lateral;
    bad |= emit(dir, "not_assessed", &r, &s);

    /* A re-run of the same study with the same model, correcting the ORU sent before. */
    base(&r, &s);
    r.is_correction = true;
    r.previous_control_id = "CXR0123456789abcdef0";
    r.n_skipped = 1;
    r.skipped = skipped_lateral;
    bad |= emit(dir, "correction", &r, &s);

    /* A new model corrects the report of the old one (FHIR: names the corrected report). */
    base(&r, &s);
    r.is_correction = true;
    r.model_version = "1.3.0";
    r.model_digest = "aa11bb22cc33dd44ee55ff6677889900aa11bb22cc33dd44ee55ff6677889900";
    r.previous_report_id = "1.2.826.0.1.3680043.8.498.12345678901234567890-3f5a9c0e7b1d2468";
    r.previous_control_id = "CXR00000000000000001";
    bad |= emit(dir, "correction_new_model", &r, &s);

    /* A corrected report named by an identifier with search and URL special characters. */
    base(&r, &s);
    r.is_correction = true;
    r.previous_report_id = "RPT|1,2$3\\4 ü&x=y";
    bad |= emit(dir, "correction_odd_id", &r, &s);

    /* No accession number; accession mapped to the filler order number when there is one. */
    base(&r, &s);
    r.order.accession = NULL;
    s.accession_map = RPT_ACC_FILLER | RPT_ACC_PLACER_FIELD1;
    bad |= emit(dir, "no_accession", &r, &s);

    /* Accession as filler id, PV1, LOINC procedure code, known UTC offset, test processing. */
    base(&r, &s);
    s.accession_map = RPT_ACC_FILLER;
    s.send_pv1 = true;
    s.processing_id = 'T';
    s.patient_id_system = "urn:oid:1.2.3.4.5";
    s.id_system = "urn:oid:1.2.3.4.6";
    s.code_system = "urn:oid:1.2.3.4.7";
    r.order.procedure_code = "36643-5";
    r.order.procedure_scheme = "LN";
    r.order.procedure_meaning = "XR Chest 2 Views";
    r.study.study_time = "093015.123456";
    r.study.tz_offset = "+0100";
    bad |= emit(dir, "filler_pv1", &r, &s);

    /* Only what is required: every optional value absent. */
    memset(&r, 0, sizeof(r));
    memset(&s, 0, sizeof(s));
    s.processing_id = 'D';
    r.study.study_uid = "2.25.123456789";
    r.patient.id = "X1";
    r.assessed = true;
    r.n_classes = 4;
    r.class_names = classes;
    r.scores = scores_normal;
    r.priority = RPT_PRIO_NONE;
    r.triage_class = -1;
    r.model_name = "m";
    r.model_version = "0";
    r.model_digest = "0123456789abcdef";
    r.analysis_ms = 0;
    bad |= emit(dir, "minimal", &r, &s);

    /* A DICOM date/time and sex the builders cannot use are left out, not passed on. */
    base(&r, &s);
    r.study.study_date = "2024-01-01";
    r.study.study_time = "25:61";
    r.patient.birth_date = "19701340";
    r.patient.sex = "X";
    bad |= emit(dir, "malformed_dates", &r, &s);

    return bad ? 1 : 0;
}
