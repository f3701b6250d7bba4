/*
 * store_fill.c - writes a small audit ledger through store.h for the CLI tests:
 *   store_fill DB
 * 1 classified urgent, 2 classified normal (accession with a comma and a quote), 3 skipped,
 * 4 failed, 5 received (pending), 6 a re-scored duplicate of 1 (routine), an association-level
 * refusal, and study 1.9.1 (instances 1, 2, 6) completed with two reports to "webhook":
 * report 1 (hl7) retried once (503) then delivered, report 2 (fhir) dead (400); then study
 * 1.9.2 completed with report 3 (hl7 to "files", corrects nothing) pending after one retry.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define DAY1 1796126400000LL /* 2026-12-01T12:00:00Z */
#define DAY2 1796212800000LL /* 2026-12-02T12:00:00Z */

static const char *const classes[4] = {"COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"};

static int insert(st_db *db, int n, const char *patient, const char *accession, const char *study,
                  int64_t at, int64_t dup, int64_t *id, char *errbuf, size_t errlen)
{
    struct st_receipt r;
    memset(&r, 0, sizeof(r));
    snprintf(r.sop_instance_uid, sizeof(r.sop_instance_uid), "1.2.826.0.1.%d", n);
    snprintf(r.sop_class_uid, sizeof(r.sop_class_uid), "1.2.840.10008.5.1.4.1.1.1.1");
    snprintf(r.study_uid, sizeof(r.study_uid), "%s", study);
    snprintf(r.series_uid, sizeof(r.series_uid), "%s.1", study);
    snprintf(r.patient_id, sizeof(r.patient_id), "%s", patient);
    snprintf(r.accession, sizeof(r.accession), "%s", accession);
    snprintf(r.calling_aet, sizeof(r.calling_aet), "PACS_A");
    snprintf(r.called_aet, sizeof(r.called_aet), "CXRTRIAGE");
    snprintf(r.peer, sizeof(r.peer), "10.0.0.%d", n);
    snprintf(r.transfer_syntax, sizeof(r.transfer_syntax), "1.2.840.10008.1.2.1");
    snprintf(r.source, sizeof(r.source), "dicom");
    snprintf(r.spool_path, sizeof(r.spool_path), "/var/lib/cxrtriage/spool/in/%d.dcm", n);
    r.size_bytes = 100000 + n;
    r.received_at_ms = at;
    r.receive_ms = 20 + n;
    return st_insert_received(db, &r, dup, id, errbuf, errlen) ? 1 : 0;
}

static void result(struct st_result *res, enum st_state state, const double *scores,
                   enum st_triage t, const char *text)
{
    memset(res, 0, sizeof(*res));
    res->state = state;
    for (int i = 0; i < ST_T__COUNT; i++)
        res->timings_ms[i] = -1;
    if (state == ST_CLASSIFIED) {
        res->gate_applicable = true;
        snprintf(res->model_digest, sizeof(res->model_digest), "%064x", 0xabc);
        snprintf(res->pixel_sha256, sizeof(res->pixel_sha256), "%064x", 0x123);
        res->n_classes = 4;
        for (int i = 0; i < 4; i++) {
            snprintf(res->class_names[i], sizeof(res->class_names[i]), "%s", classes[i]);
            res->scores[i] = scores[i];
        }
        snprintf(res->rule, sizeof(res->rule), "COVID-19>=0.42, Viral Pneumonia>=0.5");
        res->triage = t;
        snprintf(res->triage_reason, sizeof(res->triage_reason), "%s", text);
        res->timings_ms[ST_T_QUEUE] = 1.5;
        res->timings_ms[ST_T_DECODE] = 30;
        res->timings_ms[ST_T_PREPROCESS] = 8;
        res->timings_ms[ST_T_INFER] = 45;
    } else if (state == ST_SKIPPED) {
        snprintf(res->gate_reason, sizeof(res->gate_reason), "%s", text);
    } else {
        snprintf(res->error, sizeof(res->error), "%s", text);
    }
}

/* The reports of a completed study: HL7 and FHIR to "webhook" for 1.9.1, HL7 to "files" for
 * 1.9.2. */
static int build(void *user, st_db *db, const struct st_study *s, struct st_report_new *out,
                 int max)
{
    static const char hl7[] = "MSH|^~\\&|CXR-AI-GW|CXR|EHR|HOSP|20261202120010||ORU^R01|%s|P|2.5.1"
                              "\rPID|1||%s\rOBX|1|NM|COVID-19||0.91\r";
    static const char fhir[] = "{\"resourceType\":\"Bundle\",\"type\":\"transaction\"}";
    bool files = strcmp(s->study_uid, "1.9.1") != 0;
    char body[512];
    int n = files ? 1 : 2;

    (void)user;
    (void)db;
    if (max < n)
        return -1;
    for (int i = 0; i < n; i++) {
        struct st_report_new *r = &out[i];
        bool is_hl7 = i == 0;
        snprintf(r->destination, sizeof(r->destination), "%s", files ? "files" : "webhook");
        r->format = is_hl7 ? ST_FORMAT_HL7 : ST_FORMAT_FHIR;
        snprintf(r->content_type, sizeof(r->content_type), "%s",
                 is_hl7 ? "x-application/hl7-v2+er7; charset=utf-8" : "application/fhir+json");
        snprintf(r->idempotency_key, sizeof(r->idempotency_key), "cxr-%032x",
                 files ? 0x192u : 0x191u);
        if (is_hl7)
            snprintf(r->control_id, sizeof(r->control_id), "CXR%017x", files ? 0x2u : 0x1u);
        else
            snprintf(r->report_id, sizeof(r->report_id), "%s-%016x", s->study_uid, 0xabcu);
        snprintf(r->model_digest, sizeof(r->model_digest), "%s", s->model_digest);
        if (is_hl7)
            snprintf(body, sizeof(body), hl7, r->control_id, s->patient_id);
        else
            snprintf(body, sizeof(body), "%s", fhir);
        r->body = strdup(body);
        if (!r->body)
            return -1;
        r->body_len = strlen(body);
    }
    return n;
}

int main(int argc, char **argv)
{
    static const double urgent[4] = {0.91, 0.05, 0.02, 0.02}, normal[4] = {0.03, 0.12, 0.80, 0.05},
                        routine[4] = {0.30, 0.55, 0.10, 0.05};
    char errbuf[1200];
    st_db *db = NULL;
    struct st_result res;
    struct st_study s;
    int64_t id[7] = {0};
    int bad = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: store_fill DB\n");
        return 2;
    }
    if (st_open(argv[1], ST_OPEN_WRITE, &db, errbuf, sizeof(errbuf))) {
        fprintf(stderr, "store_fill: %s\n", errbuf);
        return 1;
    }
    bad |= insert(db, 1, "PAT001", "ACC1", "1.9.1", DAY1, 0, &id[1], errbuf, sizeof(errbuf));
    bad |= bad || st_study_touch(db, "1.9.1", "PAT001", "ACC1", DAY1, errbuf, sizeof(errbuf));
    result(&res, ST_CLASSIFIED, urgent, ST_TRIAGE_URGENT, "COVID-19 0.91 >= 0.42");
    bad |= bad || st_finish(db, id[1], &res, errbuf, sizeof(errbuf));
    bad |= bad || insert(db, 2, "PAT001", "ACC,\"2\"", "1.9.1", DAY1 + 60000, 0, &id[2], errbuf,
                         sizeof(errbuf));
    result(&res, ST_CLASSIFIED, normal, ST_TRIAGE_NORMAL, "no threshold reached");
    bad |= bad || st_finish(db, id[2], &res, errbuf, sizeof(errbuf));
    bad |= bad || insert(db, 3, "PAT002", "ACC3", "1.9.2", DAY2, 0, &id[3], errbuf, sizeof(errbuf));
    result(&res, ST_SKIPPED, NULL, ST_TRIAGE_NONE, "ViewPosition LL is not PA or AP");
    bad |= bad || st_finish(db, id[3], &res, errbuf, sizeof(errbuf));
    bad |= bad ||
           insert(db, 4, "PAT002", "ACC4", "1.9.2", DAY2 + 1000, 0, &id[4], errbuf, sizeof(errbuf));
    result(&res, ST_FAILED, NULL, ST_TRIAGE_NONE, "dicom: pixel data truncated");
    bad |= bad || st_finish(db, id[4], &res, errbuf, sizeof(errbuf));
    bad |= bad ||
           insert(db, 5, "PAT003", "ACC5", "1.9.3", DAY2 + 2000, 0, &id[5], errbuf, sizeof(errbuf));
    bad |= bad || insert(db, 1, "PAT001", "ACC1", "1.9.1", DAY2 + 3000, id[1], &id[6], errbuf,
                         sizeof(errbuf));
    result(&res, ST_CLASSIFIED, routine, ST_TRIAGE_ROUTINE, "Lung Opacity 0.55 >= 0.5");
    bad |= bad || st_finish(db, id[6], &res, errbuf, sizeof(errbuf));
    bad |= bad || st_add_event(db, 0, "association.refused", "calling_aet=EVIL reason=allow-list",
                               errbuf, sizeof(errbuf));
    bad |= bad || st_study_complete_reports(db, "1.9.1", DAY2 + 10000, build, NULL, &s, errbuf,
                                            sizeof(errbuf));
    bad |= bad || st_report_attempt(db, 1, DAY2 + 11000, ST_ATTEMPT_RETRY, 503,
                                    "HTTP 503 Service Unavailable", "busy, try later", 120.5,
                                    DAY2 + 41000, errbuf, sizeof(errbuf));
    bad |= bad || st_report_attempt(db, 1, DAY2 + 41000, ST_ATTEMPT_DELIVERED, 200, "HTTP 200",
                                    "{\"ok\":true}", 80, 0, errbuf, sizeof(errbuf));
    bad |= bad || st_report_attempt(db, 2, DAY2 + 11000, ST_ATTEMPT_DEAD, 400,
                                    "HTTP 400 Bad Request, not retried", "{\"issue\":\"invalid\"}",
                                    95, 0, errbuf, sizeof(errbuf));
    bad |= bad || st_study_touch(db, "1.9.2", "PAT002", "ACC3", DAY2, errbuf, sizeof(errbuf));
    bad |= bad || st_study_complete_reports(db, "1.9.2", DAY2 + 20000, build, NULL, &s, errbuf,
                                            sizeof(errbuf));
    bad |= bad || st_report_attempt(db, 3, DAY2 + 21000, ST_ATTEMPT_RETRY, 0,
                                    "write reports/1.9.2.hl7: No space left on device", "", 2,
                                    DAY2 + 81000, errbuf, sizeof(errbuf));
    if (bad) {
        fprintf(stderr, "store_fill: %s\n", errbuf);
        st_close(db);
        return 1;
    }
    st_close(db);
    return 0;
}
