/*
 * oru.c - the HL7 v2.5.1 ORU^R01 builder and the HL7 escaping.
 *
 * DESIGN
 * The message is built into a private buffer (capped at what is left of the caller's) and
 * appended to the caller's only when complete. Every value that did not come from this file
 * (DICOM values, settings, model identity) goes through hl7_escape(). Segments end with CR.
 *
 * Segment order (ORU_R01 v2.5.1, STANDARDS 1.1):
 *   MSH PID [PV1] ORC OBR NTE(disclaimer) [NTE(not assessed)] [NTE(correction)]
 *   { OBX(score, NM) }  OBX(triage class, CWE) [NTE(reason) NTE(rule)] OBX(priority, CWE)
 *   OBX(Study Instance UID, ST)  [OBX(skipped images, TX)]
 * Not assessed: no score rows; one triage-class row with OBX-11 X and no value.
 *
 * Mapping (STANDARDS 1.2 and 1.5; "esc" = escaped with hl7_escape):
 * | field    | value                                     | why / note                              |
 * |----------|-------------------------------------------|-----------------------------------------|
 * | MSH-3..6 | settings sending/receiving app, facility  | configurable; MSH-3 default CXR-AI-GW   |
 * | MSH-7    | now, UTC, YYYYMMDDHHMMSS+0000             | TS with offset, required in 2.5.1       |
 * | MSH-9    | ORU^R01^ORU_R01                           | 3rd component = message structure       |
 * | MSH-10   | caller's control id                       | persisted, reused on retry (ACK, dedupe)|
 * | MSH-11   | settings processing id P/T/D              | table 0103                              |
 * | MSH-12   | 2.5.1                                     |                                         |
 * | MSH-15/16| empty                                     | original acknowledgment mode (AA/AE/AR) |
 * | MSH-18   | UNICODE UTF-8                             | table 0211; the daemon transcodes DICOM |
 * | PID-1    | 1                                         |                                         |
 * | PID-3    | esc(PatientID)^^^esc(Issuer)^MR           | CX.1, CX.4, CX.5 = MR; required         |
 * | PID-5    | XPN family^given^middle^suffix^prefix     | DICOM PN has prefix 4th, suffix 5th:    |
 * |          | one repetition per PN group; with more    | swapped. XPN-8 A/I/P names the group    |
 * |          | than one group XPN-8 = A, I or P          | (alphabetic, ideographic, phonetic)     |
 * | PID-7    | PatientBirthDate YYYYMMDD                 | left empty when not a valid DA          |
 * | PID-8    | M/F/O as is, any other value U            | table 0001; empty when DICOM is empty   |
 * | PV1      | PV1|1|U (only with settings.send_pv1)     | PV1-2 required; U = unknown (table 0004)|
 * | ORC-1    | RE                                        | observations to follow                  |
 * | ORC-2    | placer order number (0040,2016)           | EI.1                                    |
 * | ORC-3    | filler order number (0040,2017), or the   | RPT_ACC_FILLER: the RIS uses the        |
 * |          | accession number with RPT_ACC_FILLER      | accession number as its filler id       |
 * | ORC-5    | CM                                        | order status: completed                 |
 * | OBR-1    | 1                                         |                                         |
 * | OBR-2/3  | as ORC-2/3                                | must agree with the ORC                 |
 * | OBR-4    | procedure code^meaning^scheme, else       | CE (not CWE in 2.5.1); DICOM SRT/SCT -> |
 * |          | 36554-4^XR Chest Single view^LN           | SCT; no scheme -> L                     |
 * | OBR-7    | StudyDate+StudyTime[+offset]              | offset only when (0008,0201) is known   |
 * | OBR-18   | accession number (RPT_ACC_PLACER_FIELD1)  | IHE RAD convention (default)            |
 * | OBR-19   | requested procedure id (0040,1001)        | placer field 2                          |
 * | OBR-22   | analysis time, UTC                        | when the result status changed          |
 * | OBR-24   | RAD                                       | table 0074                              |
 * | OBR-25   | X not assessed, else C correction, else P | table 0123; AI output is preliminary    |
 * | NTE-3    | CXR_DISCLAIMER; correction and not-       | NTE-2 = L; FT: CR/LF as \.br\           |
 * |          | assessed notes                            |                                         |
 * | OBX-1    | 1..n                                      |                                         |
 * | OBX-2    | NM score, CWE triage, ST UID, TX skipped  | empty with no value (OBX-11 X)          |
 * | OBX-3    | <CODE>_PROB^<class> probability^99CXRAI   | no LOINC exists for an AI probability:  |
 * |          | [^SNOMED code^display^SCT]                | local code; SNOMED alternate triplet    |
 * |          |                                           | for COVID-19 840539006, Viral pneumonia |
 * |          |                                           | 75570004                                |
 * | OBX-3    | TRIAGE_CLASS^AI triage class^99CXRAI      | value: SNOMED concept^display^SCT       |
 * |          |                                           | ^local^class^99CXRAI, or local only     |
 * | OBX-3    | TRIAGE_PRIORITY^AI triage priority^99CXRAI| value URGENT/ROUTINE/NORMAL^...^99CXRAI |
 * | OBX-3    | 110180^Study Instance UID^DCM             | ST: the study the result is about       |
 * | OBX-3    | SKIPPED_IMAGES^Images not scored^99CXRAI  | TX, one repetition per image:           |
 * |          |                                           | "<SOP Instance UID>: <reason>"          |
 * | OBX-5    | score with 4 decimals (0.8123)            | NM                                      |
 * | OBX-6    | 1^^UCUM                                   | a ratio: UCUM unit "1"                  |
 * | OBX-11   | P, C (correction), X (not assessed)       | table 0085                              |
 * | OBX-14   | study date/time                           | observation time = acquisition          |
 * | OBX-18   | esc(name-version)^^first 16 of digest     | EI: equipment instance = the model      |
 * | OBX-19   | analysis time, UTC                        | TS, new in 2.5                          |
 */
#include "hl7_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define TRY(x)                                                                                    \
    do {                                                                                          \
        cxr_err e_ = (x);                                                                         \
        if (e_ != CXR_OK)                                                                         \
            return e_;                                                                            \
    } while (0)

cxr_err hl7_escape(struct cxr_buf *out, const char *s, size_t len, unsigned flags)
{
    size_t start = 0;

    if (!s)
        return CXR_OK;
    if (len == (size_t)-1)
        len = strlen(s);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *rep = NULL;
        char hex[8];

        switch (c) {
        case '|':
            rep = "\\F\\";
            break;
        case '^':
            rep = "\\S\\";
            break;
        case '~':
            rep = "\\R\\";
            break;
        case '\\':
            rep = "\\E\\";
            break;
        case '&':
            rep = "\\T\\";
            break;
        default:
            if (c < 0x20 || c == 0x7F) {
                if ((flags & HL7_ESC_TEXT) && (c == '\r' || c == '\n')) {
                    rep = "\\.br\\";
                } else {
                    (void)snprintf(hex, sizeof(hex), "\\X%02X\\", c);
                    rep = hex;
                }
            }
            break;
        }
        if (!rep)
            continue;
        TRY(cxr_buf_append(out, s + start, i - start));
        TRY(cxr_buf_puts(out, rep));
        /* a CRLF pair in text is one line break */
        if ((flags & HL7_ESC_TEXT) && c == '\r' && i + 1 < len && s[i + 1] == '\n')
            i++;
        start = i + 1;
    }
    return cxr_buf_append(out, s + start, len - start);
}

static cxr_err esc(struct cxr_buf *b, const char *s)
{
    return hl7_escape(b, s, (size_t)-1, 0);
}

static cxr_err esc_text(struct cxr_buf *b, const char *s)
{
    return hl7_escape(b, s, (size_t)-1, HL7_ESC_TEXT);
}

/* HL7 TS: YYYYMMDD[HH[MM[SS[.SSSS]]]][+ZZZZ]. Nothing for an absent date. */
static cxr_err put_ts(struct cxr_buf *b, const struct rpt_dt *d)
{
    if (!d->has_date)
        return CXR_OK;
    TRY(cxr_buf_printf(b, "%04d%02d%02d", d->year, d->mon, d->day));
    if (!d->has_time)
        return CXR_OK;
    TRY(cxr_buf_printf(b, "%02d", d->hour));
    if (d->min >= 0)
        TRY(cxr_buf_printf(b, "%02d", d->min));
    if (d->sec >= 0)
        TRY(cxr_buf_printf(b, "%02d", d->sec));
    if (d->frac[0]) /* TS allows 4 fractional digits, DICOM TM 6 */
        TRY(cxr_buf_printf(b, ".%.4s", d->frac));
    if (d->has_tz)
        TRY(cxr_buf_puts(b, d->tz));
    return CXR_OK;
}

static cxr_err put_ms(struct cxr_buf *b, int64_t ms)
{
    struct rpt_dt d;

    rpt_dt_from_ms(ms, &d);
    d.frac[0] = '\0'; /* seconds are precise enough for a message time */
    return put_ts(b, &d);
}

/* n empty-or-not fields: appends "|" n times. */
static cxr_err bars(struct cxr_buf *b, int n)
{
    for (int i = 0; i < n; i++)
        TRY(cxr_buf_append(b, "|", 1));
    return CXR_OK;
}

/* One DICOM PN component group -> XPN, prefix and suffix swapped. */
static cxr_err put_xpn(struct cxr_buf *b, const char *group, size_t len, char repr)
{
    const char *comp[5] = {0};
    size_t clen[5] = {0};
    static const int order[5] = {0, 1, 2, 4, 3}; /* XPN position -> DICOM component */
    size_t start = 0;
    int n = 0, last;

    for (size_t i = 0; i <= len && n < 5; i++) {
        if (i == len || group[i] == '^') {
            comp[n] = group + start;
            clen[n] = i - start;
            n++;
            start = i + 1;
        }
    }
    /* A sixth '^' is not DICOM; keep what follows in the last component rather than drop it. */
    if (n == 5 && start <= len && comp[4] + clen[4] < group + len)
        clen[4] = (size_t)(group + len - comp[4]);
    last = -1;
    for (int k = 0; k < 5; k++)
        if (clen[order[k]])
            last = k;
    for (int k = 0; k <= last; k++) {
        if (k)
            TRY(cxr_buf_append(b, "^", 1));
        TRY(hl7_escape(b, comp[order[k]], clen[order[k]], 0));
    }
    if (repr)
        TRY(cxr_buf_printf(b, "%.*s%c", 7 - (last < 0 ? 0 : last), "^^^^^^^", repr));
    return CXR_OK;
}

static cxr_err put_pid5(struct cxr_buf *b, const char *pn)
{
    static const char reprs[3] = {'A', 'I', 'P'};
    const char *g[3];
    size_t glen[3];
    int n = 0, nonempty = 0;
    const char *p = pn;
    bool first = true;

    if (rpt_absent(pn))
        return CXR_OK;
    while (n < 3) {
        const char *eq = strchr(p, '=');
        size_t l = eq && n < 2 ? (size_t)(eq - p) : strlen(p);

        g[n] = p;
        glen[n] = l;
        n++;
        if (!eq || n == 3)
            break;
        p = eq + 1;
    }
    for (int i = 0; i < n; i++)
        if (strspn(g[i], "^") < glen[i])
            nonempty++;
    for (int i = 0; i < n; i++) {
        if (strspn(g[i], "^") >= glen[i])
            continue;
        if (!first)
            TRY(cxr_buf_append(b, "~", 1));
        first = false;
        TRY(put_xpn(b, g[i], glen[i], nonempty > 1 ? reprs[i] : 0));
    }
    return CXR_OK;
}

static const char *sex_code(const char *s)
{
    if (rpt_absent(s))
        return "";
    if (strcmp(s, "M") == 0 || strcmp(s, "F") == 0 || strcmp(s, "O") == 0)
        return s;
    return "U";
}

/* DICOM coding scheme designator -> HL7 coding-system name, table 0396. */
static const char *hl7_scheme(const char *scheme)
{
    if (rpt_absent(scheme))
        return "L";
    if (strcmp(scheme, "SRT") == 0 || strcmp(scheme, "SNM3") == 0 || strcmp(scheme, "SCT") == 0)
        return "SCT";
    return scheme;
}

struct oru_ctx {
    const struct rpt_result *r;
    const struct rpt_settings *s;
    struct cxr_buf *b;
    struct rpt_dt study;
    char status; /* OBX-11 */
    int obx;     /* last OBX-1 */
};

/* OBX-14 .. OBX-19 after OBX-11, shared by every row. */
static cxr_err obx_tail(struct oru_ctx *c)
{
    struct cxr_buf *b = c->b;

    TRY(bars(b, 3)); /* -> OBX-14 */
    TRY(put_ts(b, &c->study));
    TRY(bars(b, 4)); /* -> OBX-18 */
    TRY(esc(b, c->r->model_name));
    TRY(cxr_buf_append(b, "-", 1));
    TRY(esc(b, c->r->model_version));
    TRY(cxr_buf_printf(b, "^^%.16s|", c->r->model_digest));
    TRY(put_ms(b, c->r->analysis_ms));
    return cxr_buf_append(b, "\r", 1);
}

/* "OBX|n|type|" ; the caller writes OBX-3 onwards up to OBX-10 inclusive. */
static cxr_err obx_head(struct oru_ctx *c, const char *type)
{
    return cxr_buf_printf(c->b, "OBX|%d|%s|", ++c->obx, type);
}

static cxr_err put_class_cwe(struct cxr_buf *b, const char *name)
{
    const struct rpt_snomed *sct = rpt_class_snomed(name);
    char code[64];

    rpt_class_code(name, code, sizeof(code));
    if (sct)
        TRY(cxr_buf_printf(b, "%s^%s^SCT^", sct->code, sct->display));
    TRY(cxr_buf_printf(b, "%s^", code));
    TRY(esc(b, name));
    return cxr_buf_puts(b, "^" RPT_LOCAL_CS);
}

static cxr_err put_scores(struct oru_ctx *c)
{
    const struct rpt_result *r = c->r;
    struct cxr_buf *b = c->b;

    for (int i = 0; i < r->n_classes; i++) {
        const struct rpt_snomed *sct = rpt_class_snomed(r->class_names[i]);
        char code[64];

        rpt_class_code(r->class_names[i], code, sizeof(code));
        TRY(obx_head(c, "NM"));
        TRY(cxr_buf_printf(b, "%s_PROB^", code));
        TRY(esc(b, r->class_names[i]));
        TRY(cxr_buf_puts(b, " probability^" RPT_LOCAL_CS));
        if (sct)
            TRY(cxr_buf_printf(b, "^%s^%s^SCT", sct->code, sct->display));
        TRY(cxr_buf_printf(b, "||%.4f|1^^UCUM|||||%c", round(r->scores[i] * 1e4) / 1e4, c->status));
        TRY(obx_tail(c));
    }
    return CXR_OK;
}

/* NTE|n|L|prefix text suffix (NTE-3 is FT: line breaks as \.br\). */
static cxr_err put_nte(struct cxr_buf *b, int *n, const char *prefix, const char *text,
                       const char *suffix)
{
    TRY(cxr_buf_printf(b, "NTE|%d|L|", ++*n));
    TRY(esc_text(b, prefix));
    TRY(esc_text(b, text));
    TRY(esc_text(b, suffix));
    return cxr_buf_append(b, "\r", 1);
}

static cxr_err put_triage(struct oru_ctx *c)
{
    const struct rpt_result *r = c->r;
    struct cxr_buf *b = c->b;
    int nte = 0;

    if (!r->assessed) {
        TRY(obx_head(c, ""));
        TRY(cxr_buf_puts(b, "TRIAGE_CLASS^AI triage class^" RPT_LOCAL_CS "||||||||X"));
        return obx_tail(c);
    }
    if (r->triage_class >= 0) {
        TRY(obx_head(c, "CWE"));
        TRY(cxr_buf_puts(b, "TRIAGE_CLASS^AI triage class^" RPT_LOCAL_CS "||"));
        TRY(put_class_cwe(b, r->class_names[r->triage_class]));
        TRY(cxr_buf_printf(b, "||||||%c", c->status));
        TRY(obx_tail(c));
    }
    if (r->priority != RPT_PRIO_NONE) {
        TRY(obx_head(c, "CWE"));
        TRY(cxr_buf_printf(b,
                           "TRIAGE_PRIORITY^AI triage priority^" RPT_LOCAL_CS
                           "||%s^%s^" RPT_LOCAL_CS "|||%s|||%c",
                           rpt_priority_code(r->priority), rpt_priority_display(r->priority),
                           r->priority == RPT_PRIO_URGENT ? "A" : "", c->status));
        TRY(obx_tail(c));
        if (!rpt_absent(r->triage_reason))
            TRY(put_nte(b, &nte, "Triage reason: ", r->triage_reason, ""));
        if (!rpt_absent(r->triage_rule))
            TRY(put_nte(b, &nte, "Triage rule: ", r->triage_rule, ""));
    }
    return CXR_OK;
}

static cxr_err put_tail_rows(struct oru_ctx *c)
{
    const struct rpt_result *r = c->r;
    struct cxr_buf *b = c->b;

    TRY(obx_head(c, "ST"));
    TRY(cxr_buf_puts(b, "110180^Study Instance UID^DCM||"));
    TRY(esc(b, r->study.study_uid));
    TRY(cxr_buf_printf(b, "||||||%c", c->status));
    TRY(obx_tail(c));
    if (r->n_skipped == 0)
        return CXR_OK;
    TRY(obx_head(c, "TX"));
    TRY(cxr_buf_puts(b, "SKIPPED_IMAGES^Images not scored^" RPT_LOCAL_CS "||"));
    for (size_t i = 0; i < r->n_skipped; i++) {
        if (i)
            TRY(cxr_buf_append(b, "~", 1));
        TRY(esc_text(b, rpt_absent(r->skipped[i].sop_uid) ? "(no SOP Instance UID)"
                                                          : r->skipped[i].sop_uid));
        TRY(cxr_buf_puts(b, ": "));
        TRY(esc_text(b, rpt_absent(r->skipped[i].reason) ? "not applicable"
                                                         : r->skipped[i].reason));
    }
    TRY(cxr_buf_printf(b, "||||||%c", c->status));
    return obx_tail(c);
}

static cxr_err put_header(struct oru_ctx *c, const char *control_id, int64_t now_ms)
{
    const struct rpt_result *r = c->r;
    const struct rpt_settings *s = c->s;
    struct cxr_buf *b = c->b;
    struct rpt_dt birth;

    TRY(cxr_buf_puts(b, "MSH|^~\\&|"));
    TRY(esc(b, rpt_absent(s->sending_application) ? RPT_DEFAULT_SENDING_APP
                                                  : s->sending_application));
    TRY(bars(b, 1));
    TRY(esc(b, s->sending_facility));
    TRY(bars(b, 1));
    TRY(esc(b, s->receiving_application));
    TRY(bars(b, 1));
    TRY(esc(b, s->receiving_facility));
    TRY(bars(b, 1));
    TRY(put_ms(b, now_ms));
    TRY(cxr_buf_printf(b, "||ORU^R01^ORU_R01|%s|%c|2.5.1||||||UNICODE UTF-8\r", control_id,
                       s->processing_id));

    TRY(cxr_buf_puts(b, "PID|1||"));
    TRY(esc(b, r->patient.id));
    TRY(cxr_buf_puts(b, "^^^"));
    TRY(esc(b, r->patient.issuer));
    TRY(cxr_buf_puts(b, "^MR||"));
    TRY(put_pid5(b, r->patient.name));
    TRY(bars(b, 2));
    rpt_dt_parse(r->patient.birth_date, NULL, NULL, &birth);
    TRY(put_ts(b, &birth));
    TRY(cxr_buf_printf(b, "|%s\r", sex_code(r->patient.sex)));
    if (s->send_pv1)
        TRY(cxr_buf_puts(b, "PV1|1|U\r"));
    return CXR_OK;
}

static cxr_err put_order(struct oru_ctx *c)
{
    const struct rpt_result *r = c->r;
    const struct rpt_settings *s = c->s;
    struct cxr_buf *b = c->b;
    unsigned map = s->accession_map ? s->accession_map : RPT_ACC_PLACER_FIELD1;
    const char *filler = r->order.filler_order;
    char status = !r->assessed ? 'X' : r->is_correction ? 'C' : 'P';
    int nte = 0;

    if ((map & RPT_ACC_FILLER) && !rpt_absent(r->order.accession))
        filler = r->order.accession;
    TRY(cxr_buf_puts(b, "ORC|RE|"));
    TRY(esc(b, r->order.placer_order));
    TRY(bars(b, 1));
    TRY(esc(b, filler));
    TRY(cxr_buf_puts(b, "||CM\r"));

    TRY(cxr_buf_puts(b, "OBR|1|"));
    TRY(esc(b, r->order.placer_order));
    TRY(bars(b, 1));
    TRY(esc(b, filler));
    TRY(bars(b, 1));
    if (rpt_absent(r->order.procedure_code)) {
        TRY(cxr_buf_puts(b, "36554-4^XR Chest Single view^LN"));
    } else {
        TRY(esc(b, r->order.procedure_code));
        TRY(cxr_buf_append(b, "^", 1));
        TRY(esc(b, r->order.procedure_meaning));
        TRY(cxr_buf_append(b, "^", 1));
        TRY(esc(b, hl7_scheme(r->order.procedure_scheme)));
    }
    TRY(bars(b, 3)); /* -> OBR-7 */
    TRY(put_ts(b, &c->study));
    TRY(bars(b, 11)); /* -> OBR-18 */
    if (map & RPT_ACC_PLACER_FIELD1)
        TRY(esc(b, r->order.accession));
    TRY(bars(b, 1));
    TRY(esc(b, r->order.requested_procedure_id));
    TRY(bars(b, 3)); /* -> OBR-22 */
    TRY(put_ms(b, r->analysis_ms));
    TRY(cxr_buf_printf(b, "||RAD|%c\r", status));

    TRY(put_nte(b, &nte, "", CXR_DISCLAIMER, ""));
    if (!r->assessed)
        TRY(put_nte(b, &nte, "",
                    "Not assessed: the study has no image the model can score "
                    "(a frontal chest radiograph).",
                    ""));
    if (r->is_correction) {
        const char *prev = !rpt_absent(r->previous_control_id) ? r->previous_control_id
                           : !rpt_absent(r->previous_report_id) ? r->previous_report_id
                                                                : NULL;

        if (prev)
            TRY(put_nte(b, &nte, "Correction: this report replaces the report sent as ", prev,
                        "."));
        else
            TRY(put_nte(b, &nte, "Correction: this report replaces the report sent earlier ",
                        "for this study.", ""));
    }
    return CXR_OK;
}

cxr_err hl7_build_oru(const struct rpt_result *r, const struct rpt_settings *s,
                      const char *control_id, int64_t now_ms, struct cxr_buf *out, char *errbuf,
                      size_t errlen)
{
    struct cxr_buf b;
    struct oru_ctx c;
    size_t n;
    cxr_err err;

    err = rpt_check(r, s, errbuf, errlen);
    if (err)
        return err;
    n = control_id ? strlen(control_id) : 0;
    if (n == 0 || n > 20 || strcspn(control_id, "|^~\\&") != n)
        return rpt_fail(errbuf, errlen, CXR_EINVAL,
                        "control_id: 1..20 characters without an encoding character");
    for (size_t i = 0; i < n; i++)
        if (control_id[i] < 0x21 || control_id[i] > 0x7E)
            return rpt_fail(errbuf, errlen, CXR_EINVAL, "control_id: printable ASCII only");
    if (rpt_absent(r->patient.id))
        return rpt_fail(errbuf, errlen, CXR_EINVAL, "patient.id: required (PID-3)");

    cxr_buf_init(&b, out->max - out->len);
    memset(&c, 0, sizeof(c));
    c.r = r;
    c.s = s;
    c.b = &b;
    c.status = r->is_correction ? 'C' : 'P';
    rpt_dt_parse(r->study.study_date, r->study.study_time, r->study.tz_offset, &c.study);

    err = put_header(&c, control_id, now_ms);
    if (!err)
        err = put_order(&c);
    if (!err && r->assessed)
        err = put_scores(&c);
    if (!err)
        err = put_triage(&c);
    if (!err)
        err = put_tail_rows(&c);
    if (!err)
        err = cxr_buf_append(out, b.data, b.len);
    cxr_buf_done(&b);
    if (err == CXR_ELIMIT)
        return rpt_fail(errbuf, errlen, err, "the ORU is larger than the buffer's maximum");
    if (err)
        return rpt_fail(errbuf, errlen, err, "out of memory building the ORU");
    return CXR_OK;
}
