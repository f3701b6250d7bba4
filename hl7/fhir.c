/*
 * fhir.c - the FHIR R4 transaction Bundle builder (jansson).
 *
 * DESIGN
 * A jansson tree is built through small helpers that leave absent values out (FHIR ele-1: no
 * empty strings, arrays or objects, and none of the three validators catches that) and that
 * record an allocation failure in the context instead of checking every call; the tree is
 * serialised once at the end and appended to the caller's buffer only when complete.
 *
 * Entries, in order (each fullUrl = urn:uuid from SHA-256 of study UID, model digest and the
 * entry's name, so one result always gives the same ids):
 *   Device (the model)  [assessed only]
 *   Observation per class score  [assessed only]
 *   Observation for the triage  [assessed, when a triage class or priority is set]
 *   DiagnosticReport
 * Requests: POST with ifNoneExist "identifier=<system>|<value>" (conditional create: a resend
 * creates nothing new). A correction sends the Observations and the DiagnosticReport as
 * conditional updates, PUT "<Type>?identifier=<system>|<value>", so the server's report (and
 * its observations) become the corrected ones; the Device stays a conditional create.
 *
 * Mapping (STANDARDS 2.1):
 * | element                        | value                                        | note             |
 * |--------------------------------|----------------------------------------------|------------------|
 * | Device.identifier              | id_system | "model-sha256:<digest>"          | model identity   |
 * | Device.status                  | active                                       | required binding |
 * | Device.deviceName              | model name, type model-name                  |                  |
 * | Device.version                 | model version                                |                  |
 * | Observation.identifier         | id_system | "<report id>-<CODE>"             | conditional ops  |
 * | Observation.status             | preliminary, corrected for a correction      | AI, not verified |
 * | Observation.category           | observation-category#imaging                 |                  |
 * | Observation.code               | code_system#<CODE>_PROB "<class> probability"| no LOINC exists  |
 * | Observation.subject            | Patient by identifier (logical reference)    | MR, assigner =   |
 * |                                |                                              | issuer           |
 * | Observation.effectiveDateTime  | study date/time (date only without offset)   | FHIR needs an    |
 * |                                |                                              | offset with time |
 * | Observation.issued             | analysis time (UTC instant)                  |                  |
 * | Observation.valueQuantity      | score, 4 decimals, unit "1" (UCUM)           |                  |
 * | Observation.device             | the Device's urn:uuid                        | the AI model     |
 * | Observation.derivedFrom        | ImagingStudy by identifier urn:dicom:uid |   | logical reference|
 * |                                | urn:oid:<Study Instance UID>                 |                  |
 * | triage Observation.code        | code_system#TRIAGE_CLASS                     |                  |
 * | triage valueCodeableConcept    | SNOMED (840539006, 75570004) + local code    | local only for   |
 * |                                |                                              | the others       |
 * | triage component               | code_system#TRIAGE_PRIORITY = URGENT/...     |                  |
 * | triage note                    | triage reason and rule                       |                  |
 * | DiagnosticReport.identifier    | id_system | fhir_report_identifier()         | idempotent create|
 * | DiagnosticReport.basedOn       | ServiceRequest by identifier, type ACSN      | accession number |
 * | DiagnosticReport.status        | preliminary; corrected (correction);         | cancelled = "not |
 * |                                | cancelled (not assessed)                     | completed" (OBR-25 X)|
 * | DiagnosticReport.category      | v2-0074#RAD                                  |                  |
 * | DiagnosticReport.code          | the procedure code when it is LOINC, else    |                  |
 * |                                | LOINC 18748-4 Diagnostic imaging study       |                  |
 * | DiagnosticReport.subject       | as Observation.subject                       |                  |
 * | DiagnosticReport.effective     | as Observation.effectiveDateTime             |                  |
 * | DiagnosticReport.issued        | now_ms (UTC instant)                         |                  |
 * | DiagnosticReport.imagingStudy  | as Observation.derivedFrom                   |                  |
 * | DiagnosticReport.result        | the Observations' urn:uuids                  |                  |
 * | DiagnosticReport.conclusion    | triage, scores, images received (series and  | CXR_DISCLAIMER   |
 * |                                | instance counts) and not scored, disclaimer  |                  |
 * | DiagnosticReport.conclusionCode| the triage class (as the triage value)       |                  |
 * Not used: DiagnosticReport.performer (R4 allows no Device there), a Patient resource (the EHR
 * owns it; we reference it by identifier).
 */
#include "hl7_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define SYS_UCUM "http://unitsofmeasure.org"
#define SYS_LOINC "http://loinc.org"
#define SYS_SCT "http://snomed.info/sct"
#define SYS_V2_0074 "http://terminology.hl7.org/CodeSystem/v2-0074"
#define SYS_V2_0203 "http://terminology.hl7.org/CodeSystem/v2-0203"
#define SYS_OBS_CAT "http://terminology.hl7.org/CodeSystem/observation-category"

struct fctx {
    const struct rpt_result *r;
    const struct rpt_settings *s;
    const char *id_system;
    const char *code_system;
    char report_id[128];
    bool oom;
    json_t *patient_ref;       /* template, copied into each resource; NULL without patient id */
    json_t *study_ref;         /* ImagingStudy logical reference */
    char effective[96];        /* "" when the study date is unknown */
    char device_url[48];
};

/* ---- helpers that skip absent values and record allocation failures ---- */

static json_t *chk(struct fctx *c, json_t *v)
{
    if (!v)
        c->oom = true;
    return v;
}

static void set(struct fctx *c, json_t *obj, const char *key, json_t *v)
{
    if (!v || !obj) {
        c->oom = true;
        json_decref(v);
        return;
    }
    if (json_object_set_new(obj, key, v) != 0)
        c->oom = true;
}

static void set_str(struct fctx *c, json_t *obj, const char *key, const char *s)
{
    if (!rpt_absent(s))
        set(c, obj, key, json_string(s));
}

static void push(struct fctx *c, json_t *arr, json_t *v)
{
    if (!v || !arr || json_array_append_new(arr, v) != 0)
        c->oom = true;
}

/* Sets key to arr when it has elements, else drops it. */
static void set_arr(struct fctx *c, json_t *obj, const char *key, json_t *arr)
{
    if (arr && json_array_size(arr) == 0) {
        json_decref(arr);
        return;
    }
    set(c, obj, key, arr);
}

static json_t *coding(struct fctx *c, const char *system, const char *code, const char *display)
{
    json_t *o = chk(c, json_object());

    set_str(c, o, "system", system);
    set_str(c, o, "code", code);
    set_str(c, o, "display", display);
    return o;
}

/* CodeableConcept with one coding (none without a code) and text when given. */
static json_t *concept(struct fctx *c, const char *system, const char *code, const char *display,
                       const char *text)
{
    json_t *o = chk(c, json_object());

    if (!rpt_absent(code)) {
        json_t *a = chk(c, json_array());

        push(c, a, coding(c, system, code, display));
        set(c, o, "coding", a);
    }
    set_str(c, o, "text", text);
    return o;
}

/* The class as a concept: SNOMED first where one exists, then the local code. */
static json_t *class_concept(struct fctx *c, const char *name)
{
    const struct rpt_snomed *sct = rpt_class_snomed(name);
    json_t *o = chk(c, json_object());
    json_t *a = chk(c, json_array());
    char code[64];

    rpt_class_code(name, code, sizeof(code));
    if (sct)
        push(c, a, coding(c, SYS_SCT, sct->code, sct->display));
    push(c, a, coding(c, c->code_system, code, name));
    set(c, o, "coding", a);
    set_str(c, o, "text", name);
    return o;
}

static json_t *identifier(struct fctx *c, const char *system, const char *value)
{
    json_t *o = chk(c, json_object());

    set_str(c, o, "system", system);
    set_str(c, o, "value", value);
    return o;
}

static json_t *ident_array(struct fctx *c, const char *system, const char *value)
{
    json_t *a = chk(c, json_array());

    push(c, a, identifier(c, system, value));
    return a;
}

static json_t *ref(struct fctx *c, const char *url)
{
    json_t *o = chk(c, json_object());

    set_str(c, o, "reference", url);
    return o;
}

static json_t *copy(struct fctx *c, json_t *v)
{
    return chk(c, json_deep_copy(v));
}

/* ---- ids and times ---- */

static cxr_err make_uuid(const struct rpt_result *r, const char *what, char out[48])
{
    const char *parts[4] = {"cxr-fhir-fullurl", r->study.study_uid, r->model_digest, what};
    unsigned char md[32];
    char h[65];
    cxr_err err = rpt_sha256(parts, 4, md);

    if (err)
        return err;
    md[6] = (unsigned char)((md[6] & 0x0Fu) | 0x80u); /* version 8: custom (RFC 9562), hash-based */
    md[8] = (unsigned char)((md[8] & 0x3Fu) | 0x80u); /* variant 10 */
    rpt_hex(md, 16, h);
    (void)snprintf(out, 48, "urn:uuid:%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
    return CXR_OK;
}

/* FHIR dateTime from a DICOM date/time: with a time only when its offset is known. */
static void fhir_datetime(const struct rpt_dt *d, char *buf, size_t len)
{
    int n;

    buf[0] = '\0';
    if (!d->has_date)
        return;
    n = snprintf(buf, len, "%04d-%02d-%02d", d->year, d->mon, d->day);
    if (!d->has_time || !d->has_tz || n < 0 || (size_t)n >= len)
        return;
    (void)snprintf(buf + n, len - (size_t)n, "T%02d:%02d:%02d%s%s%.3s:%.2s", d->hour,
                   d->min < 0 ? 0 : d->min, d->sec < 0 ? 0 : d->sec, d->frac[0] ? "." : "",
                   d->frac, d->tz, d->tz + 3);
}

static void fhir_instant(int64_t ms, char *buf, size_t len)
{
    struct rpt_dt d;

    rpt_dt_from_ms(ms, &d);
    (void)snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%sZ", d.year, d.mon, d.day, d.hour,
                   d.min, d.sec, d.frac);
}

/* ---- entries ---- */

/* Appends v as a FHIR token search value: ',', '|', '$' and '\\' escaped with a backslash
 * (FHIR search escaping), then every byte outside the URI unreserved set and ':' percent-encoded. */
static cxr_err put_query_value(struct cxr_buf *q, const char *v, bool token_escape)
{
    static const char hx[] = "0123456789ABCDEF";

    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        unsigned char ch = *p;
        char enc[3];

        if (token_escape && (ch == ',' || ch == '|' || ch == '$' || ch == '\\')) {
            if (cxr_buf_puts(q, "%5C") != CXR_OK)
                return CXR_ENOMEM;
        }
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == ':') {
            if (cxr_buf_append(q, p, 1) != CXR_OK)
                return CXR_ENOMEM;
            continue;
        }
        enc[0] = '%';
        enc[1] = hx[ch >> 4];
        enc[2] = hx[ch & 15];
        if (cxr_buf_append(q, enc, 3) != CXR_OK)
            return CXR_ENOMEM;
    }
    return CXR_OK;
}

/* The request of an entry: conditional create (POST + ifNoneExist) or, for a correction,
 * conditional update (PUT Type?identifier=...). */
static json_t *request(struct fctx *c, const char *type, const char *ident_value, bool update)
{
    json_t *o = chk(c, json_object());
    struct cxr_buf q;
    char *cond = NULL;

    cxr_buf_init(&q, 8192);
    if (cxr_buf_puts(&q, "identifier=") != CXR_OK ||
        put_query_value(&q, c->id_system, true) != CXR_OK || cxr_buf_puts(&q, "|") != CXR_OK ||
        put_query_value(&q, ident_value, true) != CXR_OK || cxr_buf_take(&q, &cond) != CXR_OK) {
        c->oom = true;
        cxr_buf_done(&q);
        return o;
    }
    if (update) {
        set_str(c, o, "method", "PUT");
        set(c, o, "url", chk(c, json_sprintf("%s?%s", type, cond)));
    } else {
        set_str(c, o, "method", "POST");
        set_str(c, o, "url", type);
        set_str(c, o, "ifNoneExist", cond);
    }
    free(cond);
    return o;
}

static void add_entry(struct fctx *c, json_t *entries, const char *full_url, json_t *res,
                      json_t *req)
{
    json_t *e = chk(c, json_object());

    set_str(c, e, "fullUrl", full_url);
    set(c, e, "resource", res);
    set(c, e, "request", req);
    push(c, entries, e);
}

static void device(struct fctx *c, json_t *entries)
{
    const struct rpt_result *r = c->r;
    json_t *d = chk(c, json_object());
    json_t *names = chk(c, json_array()), *name = chk(c, json_object());
    json_t *vers = chk(c, json_array()), *ver = chk(c, json_object());
    char value[160];

    (void)snprintf(value, sizeof(value), "model-sha256:%s", r->model_digest);
    set_str(c, d, "resourceType", "Device");
    set(c, d, "identifier", ident_array(c, c->id_system, value));
    set_str(c, d, "status", "active");
    set_str(c, name, "name", r->model_name);
    set_str(c, name, "type", "model-name");
    push(c, names, name);
    set(c, d, "deviceName", names);
    set(c, d, "type",
        concept(c, NULL, NULL, NULL, "AI triage model for chest radiographs (decision support)"));
    set_str(c, ver, "value", r->model_version);
    push(c, vers, ver);
    set(c, d, "version", vers);
    add_entry(c, entries, c->device_url, d, request(c, "Device", value, false));
}

/* An Observation up to its code, subject and times; the caller adds the value, then calls
 * observation_end(). */
static json_t *observation(struct fctx *c, const char *ident_value, json_t *code)
{
    const struct rpt_result *r = c->r;
    json_t *o = chk(c, json_object());
    json_t *cat = chk(c, json_array());
    char issued[40];

    set_str(c, o, "resourceType", "Observation");
    set(c, o, "identifier", ident_array(c, c->id_system, ident_value));
    set_str(c, o, "status", r->is_correction ? "corrected" : "preliminary");
    push(c, cat, concept(c, SYS_OBS_CAT, "imaging", "Imaging", NULL));
    set(c, o, "category", cat);
    set(c, o, "code", code);
    if (c->patient_ref)
        set(c, o, "subject", copy(c, c->patient_ref));
    set_str(c, o, "effectiveDateTime", c->effective);
    fhir_instant(r->analysis_ms, issued, sizeof(issued));
    set_str(c, o, "issued", issued);
    return o;
}

/* Adds device and derivedFrom, and the entry; appends its reference to results. */
static void observation_end(struct fctx *c, json_t *entries, json_t *results, json_t *o,
                            const char *what, const char *ident_value)
{
    json_t *derived = chk(c, json_array());
    char url[48];

    set(c, o, "device", ref(c, c->device_url));
    push(c, derived, copy(c, c->study_ref));
    set(c, o, "derivedFrom", derived);
    if (make_uuid(c->r, what, url) != CXR_OK) {
        c->oom = true;
        json_decref(o);
        return;
    }
    add_entry(c, entries, url, o, request(c, "Observation", ident_value, c->r->is_correction));
    push(c, results, ref(c, url));
}

static void score_observations(struct fctx *c, json_t *entries, json_t *results)
{
    const struct rpt_result *r = c->r;

    for (int i = 0; i < r->n_classes; i++) {
        char code[64], ident[256], display[300];
        json_t *o, *q;

        rpt_class_code(r->class_names[i], code, sizeof(code));
        (void)snprintf(code + strlen(code), sizeof(code) - strlen(code), "_PROB");
        (void)snprintf(ident, sizeof(ident), "%s-%s", c->report_id, code);
        (void)snprintf(display, sizeof(display), "%s probability", r->class_names[i]);
        o = observation(c, ident, concept(c, c->code_system, code, display, NULL));
        q = chk(c, json_object());
        set(c, q, "value", json_real(round(r->scores[i] * 1e4) / 1e4));
        set_str(c, q, "unit", "1");
        set_str(c, q, "system", SYS_UCUM);
        set_str(c, q, "code", "1");
        set(c, o, "valueQuantity", q);
        observation_end(c, entries, results, o, code, ident);
    }
}

static void triage_observation(struct fctx *c, json_t *entries, json_t *results)
{
    const struct rpt_result *r = c->r;
    char ident[256];
    json_t *o;

    if (r->triage_class < 0 && r->priority == RPT_PRIO_NONE)
        return;
    (void)snprintf(ident, sizeof(ident), "%s-TRIAGE_CLASS", c->report_id);
    o = observation(c, ident,
                    concept(c, c->code_system, "TRIAGE_CLASS", "AI triage class", NULL));
    if (r->triage_class >= 0)
        set(c, o, "valueCodeableConcept", class_concept(c, r->class_names[r->triage_class]));
    if (!rpt_absent(r->triage_reason) || !rpt_absent(r->triage_rule)) {
        json_t *notes = chk(c, json_array());

        if (!rpt_absent(r->triage_reason)) {
            json_t *n = chk(c, json_object());

            set(c, n, "text", json_sprintf("Triage reason: %s", r->triage_reason));
            push(c, notes, n);
        }
        if (!rpt_absent(r->triage_rule)) {
            json_t *n = chk(c, json_object());

            set(c, n, "text", json_sprintf("Triage rule: %s", r->triage_rule));
            push(c, notes, n);
        }
        set(c, o, "note", notes);
    }
    if (r->priority != RPT_PRIO_NONE) {
        json_t *comps = chk(c, json_array()), *comp = chk(c, json_object());

        set(c, comp, "code",
            concept(c, c->code_system, "TRIAGE_PRIORITY", "AI triage priority", NULL));
        set(c, comp, "valueCodeableConcept",
            concept(c, c->code_system, rpt_priority_code(r->priority),
                    rpt_priority_display(r->priority), NULL));
        push(c, comps, comp);
        set(c, o, "component", comps);
    }
    observation_end(c, entries, results, o, "TRIAGE_CLASS", ident);
}

/* The conclusion: triage, scores, images received and not scored, the disclaimer. */
static char *conclusion(struct fctx *c)
{
    const struct rpt_result *r = c->r;
    struct cxr_buf b;
    cxr_err err = CXR_OK;
    char *ret = NULL;

    cxr_buf_init(&b, 1u << 20);
    if (!r->assessed) {
        err = cxr_buf_puts(&b, "Not assessed: the study has no image the model can score "
                               "(a frontal chest radiograph).");
    } else {
        if (r->priority != RPT_PRIO_NONE) {
            err = cxr_buf_printf(&b, "AI triage: %s", rpt_priority_display(r->priority));
            if (!err && !rpt_absent(r->triage_reason))
                err = cxr_buf_printf(&b, " (%s)", r->triage_reason);
            if (!err)
                err = cxr_buf_puts(&b, ". ");
        }
        if (!err)
            err = cxr_buf_puts(&b, "Scores:");
        for (int i = 0; !err && i < r->n_classes; i++)
            err = cxr_buf_printf(&b, "%s %s %.4f", i ? "," : "", r->class_names[i],
                                 round(r->scores[i] * 1e4) / 1e4);
        if (!err)
            err = cxr_buf_puts(&b, ".");
    }
    if (!err && r->study.n_instances > 0)
        err = cxr_buf_printf(&b, " Images received: %d in %d series.", r->study.n_instances,
                             r->study.n_series);
    if (!err && r->n_skipped)
        err = cxr_buf_printf(&b, " Images not scored (%zu):", r->n_skipped);
    for (size_t i = 0; !err && i < r->n_skipped; i++)
        err = cxr_buf_printf(&b, "%s %s: %s", i ? ";" : "",
                             rpt_absent(r->skipped[i].sop_uid) ? "(no SOP Instance UID)"
                                                               : r->skipped[i].sop_uid,
                             rpt_absent(r->skipped[i].reason) ? "not applicable"
                                                              : r->skipped[i].reason);
    if (!err && r->n_skipped)
        err = cxr_buf_puts(&b, ".");
    if (!err)
        err = cxr_buf_puts(&b, " " CXR_DISCLAIMER);
    if (!err)
        err = cxr_buf_take(&b, &ret);
    if (err) {
        c->oom = true;
        cxr_buf_done(&b);
        return NULL;
    }
    return ret;
}

static void report(struct fctx *c, json_t *entries, json_t *results, int64_t now_ms)
{
    const struct rpt_result *r = c->r;
    json_t *d = chk(c, json_object());
    json_t *cats = chk(c, json_array()), *studies = chk(c, json_array());
    char issued[40], url[48];
    char *text;

    set_str(c, d, "resourceType", "DiagnosticReport");
    set(c, d, "identifier", ident_array(c, c->id_system, c->report_id));
    if (!rpt_absent(r->order.accession)) {
        json_t *based = chk(c, json_array()), *sr = chk(c, json_object());
        json_t *ident = chk(c, json_object());

        set_str(c, sr, "type", "ServiceRequest");
        set(c, ident, "type", concept(c, SYS_V2_0203, "ACSN", "Accession ID", NULL));
        set_str(c, ident, "value", r->order.accession);
        set(c, sr, "identifier", ident);
        push(c, based, sr);
        set(c, d, "basedOn", based);
    }
    set_str(c, d, "status",
            !r->assessed ? "cancelled" : r->is_correction ? "corrected" : "preliminary");
    push(c, cats, concept(c, SYS_V2_0074, "RAD", "Radiology", NULL));
    set(c, d, "category", cats);
    if (!rpt_absent(r->order.procedure_code) && !rpt_absent(r->order.procedure_scheme) &&
        strcmp(r->order.procedure_scheme, "LN") == 0)
        set(c, d, "code",
            concept(c, SYS_LOINC, r->order.procedure_code, r->order.procedure_meaning, NULL));
    else
        set(c, d, "code", concept(c, SYS_LOINC, "18748-4", "Diagnostic imaging study", NULL));
    if (c->patient_ref)
        set(c, d, "subject", copy(c, c->patient_ref));
    set_str(c, d, "effectiveDateTime", c->effective);
    fhir_instant(now_ms, issued, sizeof(issued));
    set_str(c, d, "issued", issued);
    push(c, studies, copy(c, c->study_ref));
    set(c, d, "imagingStudy", studies);
    set_arr(c, d, "result", results);
    text = conclusion(c);
    if (text) {
        set_str(c, d, "conclusion", text);
        free(text);
    }
    if (r->assessed && r->triage_class >= 0) {
        json_t *codes = chk(c, json_array());

        push(c, codes, class_concept(c, r->class_names[r->triage_class]));
        set(c, d, "conclusionCode", codes);
    }
    if (make_uuid(r, "DiagnosticReport", url) != CXR_OK) {
        c->oom = true;
        json_decref(d);
        return;
    }
    add_entry(c, entries, url, d,
              request(c, "DiagnosticReport", c->report_id, r->is_correction));
}

static json_t *patient_ref(struct fctx *c)
{
    const struct rpt_patient *p = &c->r->patient;
    json_t *o, *ident;

    if (rpt_absent(p->id))
        return NULL;
    o = chk(c, json_object());
    ident = chk(c, json_object());
    set_str(c, o, "type", "Patient");
    set(c, ident, "type", concept(c, SYS_V2_0203, "MR", "Medical record number", NULL));
    set_str(c, ident, "system", c->s->patient_id_system);
    set_str(c, ident, "value", p->id);
    if (!rpt_absent(p->issuer)) {
        json_t *a = chk(c, json_object());

        set_str(c, a, "display", p->issuer);
        set(c, ident, "assigner", a);
    }
    set(c, o, "identifier", ident);
    return o;
}

static json_t *study_ref(struct fctx *c)
{
    json_t *o = chk(c, json_object());
    json_t *ident = chk(c, json_object());

    set_str(c, o, "type", "ImagingStudy");
    set_str(c, ident, "system", "urn:dicom:uid");
    set(c, ident, "value", json_sprintf("urn:oid:%s", c->r->study.study_uid));
    set(c, o, "identifier", ident);
    return o;
}

cxr_err fhir_build_bundle(const struct rpt_result *r, const struct rpt_settings *s, int64_t now_ms,
                          struct cxr_buf *out, char *errbuf, size_t errlen)
{
    struct fctx c;
    struct rpt_dt study;
    json_t *root = NULL, *entries, *results;
    char *text = NULL;
    cxr_err err;

    err = rpt_check(r, s, errbuf, errlen);
    if (err)
        return err;
    memset(&c, 0, sizeof(c));
    c.r = r;
    c.s = s;
    c.id_system = rpt_absent(s->id_system) ? RPT_DEFAULT_ID_SYSTEM : s->id_system;
    c.code_system = rpt_absent(s->code_system) ? RPT_DEFAULT_CODE_SYSTEM : s->code_system;
    if (fhir_report_identifier(r, s, c.report_id, sizeof(c.report_id)) != CXR_OK)
        return rpt_fail(errbuf, errlen, CXR_EINVAL, "previous_report_id: too long");
    rpt_dt_parse(r->study.study_date, r->study.study_time, r->study.tz_offset, &study);
    fhir_datetime(&study, c.effective, sizeof(c.effective));
    err = make_uuid(r, "Device", c.device_url);
    if (err)
        return rpt_fail(errbuf, errlen, err, "hashing failed");

    c.patient_ref = patient_ref(&c);
    c.study_ref = study_ref(&c);
    root = chk(&c, json_object());
    entries = chk(&c, json_array());
    results = chk(&c, json_array());
    set_str(&c, root, "resourceType", "Bundle");
    set_str(&c, root, "type", "transaction");
    if (r->assessed) {
        device(&c, entries);
        score_observations(&c, entries, results);
        triage_observation(&c, entries, results);
    }
    report(&c, entries, results, now_ms);
    set(&c, root, "entry", entries);
    if (!c.oom)
        text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(root);
    json_decref(c.patient_ref);
    json_decref(c.study_ref);
    if (!text)
        return rpt_fail(errbuf, errlen, CXR_ENOMEM, "out of memory building the Bundle");
    err = cxr_buf_puts(out, text);
    free(text);
    if (err)
        return rpt_fail(errbuf, errlen, err, "%s", err == CXR_ELIMIT
                                                        ? "the Bundle is larger than the buffer's maximum"
                                                        : "out of memory building the Bundle");
    return CXR_OK;
}
