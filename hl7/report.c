/*
 * report.c - what the ORU and the FHIR builders share: settings defaults, the input checks,
 * DICOM date/time parsing, class codes and SNOMED concepts, and the ids derived by hashing
 * (idempotency key, control id, report identifier).
 */
#include "hl7_int.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

void rpt_settings_init(struct rpt_settings *s)
{
    memset(s, 0, sizeof(*s));
    s->sending_application = RPT_DEFAULT_SENDING_APP;
    s->processing_id = 'P';
    s->accession_map = RPT_ACC_PLACER_FIELD1;
    s->send_pv1 = false;
    s->id_system = RPT_DEFAULT_ID_SYSTEM;
    s->code_system = RPT_DEFAULT_CODE_SYSTEM;
}

bool rpt_is_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    if (!s)
        return true;
    while (*p) {
        unsigned c = *p;
        size_t n;
        unsigned cp;

        if (c < 0x80) {
            p++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1Fu;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0Fu;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07u;
        } else {
            return false;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0u) != 0x80u)
                return false;
            cp = (cp << 6) | (p[i] & 0x3Fu);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += n + 1;
    }
    return true;
}

static bool is_uid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 64 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return false;
        } else if (!isdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

static bool is_hex(const char *s, size_t min)
{
    size_t n = 0;

    for (; s[n]; n++)
        if (!isxdigit((unsigned char)s[n]))
            return false;
    return n >= min;
}

cxr_err rpt_check(const struct rpt_result *r, const struct rpt_settings *s, char *errbuf,
                  size_t errlen)
{
    const struct {
        const char *name;
        const char *v;
    } strs[] = {
        {"study.study_uid", r->study.study_uid},
        {"study.study_date", r->study.study_date},
        {"study.study_time", r->study.study_time},
        {"study.tz_offset", r->study.tz_offset},
        {"patient.id", r->patient.id},
        {"patient.issuer", r->patient.issuer},
        {"patient.name", r->patient.name},
        {"patient.birth_date", r->patient.birth_date},
        {"patient.sex", r->patient.sex},
        {"order.accession", r->order.accession},
        {"order.placer_order", r->order.placer_order},
        {"order.filler_order", r->order.filler_order},
        {"order.requested_procedure_id", r->order.requested_procedure_id},
        {"order.procedure_code", r->order.procedure_code},
        {"order.procedure_scheme", r->order.procedure_scheme},
        {"order.procedure_meaning", r->order.procedure_meaning},
        {"triage_reason", r->triage_reason},
        {"triage_rule", r->triage_rule},
        {"model_name", r->model_name},
        {"model_version", r->model_version},
        {"model_digest", r->model_digest},
        {"previous_control_id", r->previous_control_id},
        {"previous_report_id", r->previous_report_id},
        {"settings.sending_application", s->sending_application},
        {"settings.sending_facility", s->sending_facility},
        {"settings.receiving_application", s->receiving_application},
        {"settings.receiving_facility", s->receiving_facility},
        {"settings.id_system", s->id_system},
        {"settings.code_system", s->code_system},
        {"settings.patient_id_system", s->patient_id_system},
    };

    for (size_t i = 0; i < CXR_ARRAY_SIZE(strs); i++)
        if (!rpt_is_utf8(strs[i].v))
            return rpt_fail(errbuf, errlen, CXR_EINVAL, "%s: not valid UTF-8", strs[i].name);
    if (rpt_absent(r->study.study_uid) || !is_uid(r->study.study_uid))
        return rpt_fail(errbuf, errlen, CXR_EINVAL, "study.study_uid: not a DICOM UID");
    if (rpt_absent(r->model_name) || rpt_absent(r->model_version))
        return rpt_fail(errbuf, errlen, CXR_EINVAL, "model_name/model_version: required");
    if (rpt_absent(r->model_digest) || !is_hex(r->model_digest, 16))
        return rpt_fail(errbuf, errlen, CXR_EINVAL,
                        "model_digest: required, at least 16 hex digits");
    if (s->processing_id != 'P' && s->processing_id != 'T' && s->processing_id != 'D')
        return rpt_fail(errbuf, errlen, CXR_EINVAL, "settings.processing_id: P, T or D");
    if (r->n_skipped && !r->skipped)
        return rpt_fail(errbuf, errlen, CXR_EINVAL, "skipped: NULL with n_skipped > 0");
    for (size_t i = 0; i < r->n_skipped; i++)
        if (!rpt_is_utf8(r->skipped[i].sop_uid) || !rpt_is_utf8(r->skipped[i].reason))
            return rpt_fail(errbuf, errlen, CXR_EINVAL, "skipped[%zu]: not valid UTF-8", i);
    if (!r->assessed)
        return CXR_OK;
    if (r->n_classes < 1 || r->n_classes > RPT_MAX_CLASSES || !r->class_names || !r->scores)
        return rpt_fail(errbuf, errlen, CXR_EINVAL, "n_classes: 1..%d with names and scores",
                        RPT_MAX_CLASSES);
    for (int i = 0; i < r->n_classes; i++) {
        char code[64];

        if (rpt_absent(r->class_names[i]) || !rpt_is_utf8(r->class_names[i]))
            return rpt_fail(errbuf, errlen, CXR_EINVAL, "class_names[%d]: empty or not UTF-8",
                            i);
        rpt_class_code(r->class_names[i], code, sizeof(code));
        if (strcmp(code, "_") == 0)
            return rpt_fail(errbuf, errlen, CXR_EINVAL,
                            "class_names[%d]: needs a letter or digit for its code", i);
        if (!(r->scores[i] >= 0.0 && r->scores[i] <= 1.0)) /* also refuses NaN */
            return rpt_fail(errbuf, errlen, CXR_EINVAL, "scores[%d]: not in [0,1]", i);
    }
    if (r->priority < RPT_PRIO_NONE || r->priority > RPT_PRIO_NORMAL)
        return rpt_fail(errbuf, errlen, CXR_EINVAL, "priority: unknown value");
    if (r->triage_class < -1 || r->triage_class >= r->n_classes)
        return rpt_fail(errbuf, errlen, CXR_EINVAL, "triage_class: -1..n_classes-1");
    return CXR_OK;
}

/* ---- dates ---- */

static bool digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int num(const char *s, size_t n)
{
    int v = 0;

    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

static int days_in_month(int y, int m)
{
    static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return d[m - 1];
}

void rpt_dt_parse(const char *da, const char *tm, const char *tz, struct rpt_dt *ret)
{
    struct rpt_dt d;
    size_t n;

    memset(&d, 0, sizeof(d));
    d.min = d.sec = -1;
    if (rpt_absent(da) || strlen(da) != 8 || !digits(da, 8))
        goto out;
    d.year = num(da, 4);
    d.mon = num(da + 4, 2);
    d.day = num(da + 6, 2);
    if (d.year < 1 || d.mon < 1 || d.mon > 12 || d.day < 1 || d.day > days_in_month(d.year, d.mon))
        goto out;
    d.has_date = true;
    if (rpt_absent(tm))
        goto out;
    n = strlen(tm);
    /* HH, HHMM, HHMMSS, HHMMSS.F{1,6} */
    if (!(n == 2 || n == 4 || n == 6 || (n >= 8 && n <= 13 && tm[6] == '.')) ||
        !digits(tm, n < 6 ? n : 6) || (n > 6 && !digits(tm + 7, n - 7)))
        goto out;
    d.hour = num(tm, 2);
    d.min = n >= 4 ? num(tm + 2, 2) : -1;
    d.sec = n >= 6 ? num(tm + 4, 2) : -1;
    if (d.hour > 23 || d.min > 59 || d.sec > 59)
        goto out;
    if (n > 7)
        memcpy(d.frac, tm + 7, n - 7);
    d.has_time = true;
    if (!rpt_absent(tz) && strlen(tz) == 5 && (tz[0] == '+' || tz[0] == '-') && digits(tz + 1, 4) &&
        num(tz + 1, 2) <= 14 && num(tz + 3, 2) <= 59) {
        memcpy(d.tz, tz, 5);
        d.has_tz = true;
    }
out:
    if (!d.has_date)
        memset(&d, 0, sizeof(d));
    if (!d.has_time) {
        d.hour = 0;
        d.min = d.sec = -1;
        d.frac[0] = '\0';
    }
    *ret = d;
}

void rpt_dt_from_ms(int64_t ms, struct rpt_dt *ret)
{
    time_t t = (time_t)(ms / 1000);
    int milli = (int)(ms % 1000);
    struct tm tmv;

    if (milli < 0) {
        milli += 1000;
        t -= 1;
    }
    memset(ret, 0, sizeof(*ret));
    if (!gmtime_r(&t, &tmv))
        memset(&tmv, 0, sizeof(tmv));
    ret->has_date = ret->has_time = ret->has_tz = true;
    ret->year = tmv.tm_year + 1900;
    ret->mon = tmv.tm_mon + 1;
    ret->day = tmv.tm_mday;
    ret->hour = tmv.tm_hour;
    ret->min = tmv.tm_min;
    ret->sec = tmv.tm_sec;
    (void)snprintf(ret->frac, sizeof(ret->frac), "%03d", milli);
    memcpy(ret->tz, "+0000", 6);
}

/* ---- codes ---- */

void rpt_class_code(const char *name, char *buf, size_t len)
{
    size_t o = 0;
    bool sep = false;

    if (len == 0)
        return;
    for (const char *p = name; *p && o + 1 < len; p++) {
        unsigned char c = (unsigned char)*p;

        if (c < 0x80 && isalnum(c)) {
            if (sep && o > 0 && o + 2 < len)
                buf[o++] = '_';
            sep = false;
            buf[o++] = (char)toupper(c);
        } else {
            sep = true;
        }
    }
    if (o == 0 && len > 1)
        buf[o++] = '_';
    buf[o] = '\0';
}

static const struct {
    const char *name;
    struct rpt_snomed concept;
} snomed_classes[] = {
    /* STANDARDS 1.2 (OBX-5): the concepts with an agreed code */
    {"COVID-19", {"840539006", "Disease caused by severe acute respiratory syndrome coronavirus 2"}},
    {"Viral Pneumonia", {"75570004", "Viral pneumonia"}},
};

const struct rpt_snomed *rpt_class_snomed(const char *name)
{
    for (size_t i = 0; i < CXR_ARRAY_SIZE(snomed_classes); i++)
        if (strcasecmp(name, snomed_classes[i].name) == 0)
            return &snomed_classes[i].concept;
    return NULL;
}

const char *rpt_priority_code(enum rpt_priority p)
{
    switch (p) {
    case RPT_PRIO_URGENT:
        return "URGENT";
    case RPT_PRIO_ROUTINE:
        return "ROUTINE";
    case RPT_PRIO_NORMAL:
        return "NORMAL";
    case RPT_PRIO_NONE:
        break;
    }
    return NULL;
}

const char *rpt_priority_display(enum rpt_priority p)
{
    switch (p) {
    case RPT_PRIO_URGENT:
        return "Urgent";
    case RPT_PRIO_ROUTINE:
        return "Routine";
    case RPT_PRIO_NORMAL:
        return "Normal";
    case RPT_PRIO_NONE:
        break;
    }
    return NULL;
}

/* ---- hashes and ids ---- */

cxr_err rpt_sha256(const char *const *parts, size_t n, unsigned char out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    cxr_err err = CXR_ENOMEM;
    unsigned len = 32;

    if (!ctx)
        return CXR_ENOMEM;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const char *p = parts[i] ? parts[i] : "";

        if (EVP_DigestUpdate(ctx, p, strlen(p) + 1) != 1)
            goto out;
    }
    if (EVP_DigestFinal_ex(ctx, out, &len) != 1)
        goto out;
    err = CXR_OK;
out:
    EVP_MD_CTX_free(ctx);
    return err;
}

void rpt_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* What a correction is told apart by: the report (or message) it corrects. */
static const char *correction_of(const struct rpt_result *r)
{
    if (!r->is_correction)
        return "";
    if (!rpt_absent(r->previous_report_id))
        return r->previous_report_id;
    if (!rpt_absent(r->previous_control_id))
        return r->previous_control_id;
    return "corrected";
}

cxr_err hl7_idempotency_key(const struct rpt_result *r, char *buf, size_t len)
{
    const char *parts[4];
    unsigned char md[32];
    char hex[65];
    cxr_err err;

    if (rpt_absent(r->study.study_uid) || rpt_absent(r->model_digest) || len < 37)
        return CXR_EINVAL;
    parts[0] = "cxr-report-key";
    parts[1] = r->study.study_uid;
    parts[2] = r->model_digest;
    parts[3] = correction_of(r);
    err = rpt_sha256(parts, 4, md);
    if (err)
        return err;
    rpt_hex(md, 16, hex);
    (void)snprintf(buf, len, "cxr-%s", hex);
    return CXR_OK;
}

cxr_err hl7_control_id_suggest(const struct rpt_result *r, int64_t now_ms, char *buf, size_t len)
{
    char key[40], when[24];
    const char *parts[3];
    unsigned char md[32];
    char hex[65];
    cxr_err err;

    if (len < 21)
        return CXR_EINVAL;
    err = hl7_idempotency_key(r, key, sizeof(key));
    if (err)
        return err;
    (void)snprintf(when, sizeof(when), "%lld", (long long)now_ms);
    parts[0] = "cxr-control-id";
    parts[1] = key;
    parts[2] = when;
    err = rpt_sha256(parts, 3, md);
    if (err)
        return err;
    rpt_hex(md, 9, hex);
    (void)snprintf(buf, len, "CXR%.17s", hex);
    return CXR_OK;
}

cxr_err fhir_report_identifier(const struct rpt_result *r, const struct rpt_settings *s, char *buf,
                               size_t len)
{
    int n;

    (void)s;
    if (r->is_correction && !rpt_absent(r->previous_report_id))
        n = snprintf(buf, len, "%s", r->previous_report_id);
    else if (rpt_absent(r->study.study_uid) || rpt_absent(r->model_digest) ||
             strlen(r->model_digest) < 16)
        return CXR_EINVAL;
    else
        n = snprintf(buf, len, "%s-%.16s", r->study.study_uid, r->model_digest);
    if (n < 0 || (size_t)n >= len)
        return CXR_EINVAL;
    return CXR_OK;
}
