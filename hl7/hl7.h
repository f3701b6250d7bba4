/*
 * hl7.h - the report builders of cxrtriage: one study's result as an HL7 v2.5.1 ORU^R01
 * message and as a FHIR R4 transaction Bundle.
 *
 * DESIGN
 * - One input, two outputs. The daemon fills one struct rpt_result (study, patient, order,
 *   the combined scores and triage, the model's identity) and one struct rpt_settings (from
 *   the [report] configuration), then calls hl7_build_oru() and/or fhir_build_bundle(). Both
 *   are pure functions: no I/O, no logging, no global state; they only read their inputs and
 *   append to the caller's bounded buffer (common/buf.h), so a report can never grow past the
 *   configured cap. Safe to call from any thread.
 * - Strings are borrowed UTF-8, NUL-terminated. NULL and "" both mean "absent": an absent
 *   optional value is left out of both outputs (an empty HL7 field; no FHIR element at all,
 *   since FHIR forbids empty strings, arrays and objects). Values taken from DICOM are used
 *   verbatim (the daemon transcodes DICOM character sets to UTF-8 and trims DICOM padding);
 *   the builders escape them (HL7) or JSON-encode them (FHIR), so a '|', '^', '\\' or CR in a
 *   DICOM value can never break the output's grammar. Invalid UTF-8 is refused (CXR_EINVAL).
 * - Repeatable output. The same result and settings give the same ORU (apart from MSH-7, the
 *   build time, and MSH-10, the caller's control id) and the same Bundle (apart from
 *   DiagnosticReport.issued): FHIR fullUrls are urn:uuid values derived from a hash of the
 *   Study Instance UID, the model digest and the resource, and every resource carries a
 *   business identifier used for conditional create, so a resend creates nothing new.
 * - Delivery ids. hl7_idempotency_key() gives the key the outbox stores with the report and
 *   sends on every retry (Idempotency-Key header); the HL7 control id (MSH-10) is chosen by
 *   the caller, persisted before the first send and reused on every retry
 *   (hl7_control_id_suggest() proposes one).
 * - The field-by-field mappings, with the reason for each, are the comment tables at the top of
 *   hl7/oru.c and hl7/fhir.c. They follow STANDARDS.md sections 1 and 2.
 *
 * Errors (every builder): CXR_OK; CXR_EINVAL when a required input is missing or malformed
 * (errbuf names the input, e.g. "study.study_uid: not a DICOM UID"); CXR_ENOMEM; CXR_ELIMIT when
 * the output would pass the buffer's maximum. On an error the output buffer has been freed by
 * cxr_buf (see buf.h) or left as it was, never holding a half-built report that looks complete.
 */
#ifndef CXR_HL7_H
#define CXR_HL7_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Local code system of the AI observations: HL7 v2 coding-system name (a local name starts
 * with "99", HL7 table 0396) and the default FHIR CodeSystem URI (rpt_settings.code_system). */
#define RPT_LOCAL_CS "99CXRAI"
#define RPT_DEFAULT_CODE_SYSTEM "urn:cxrtriage:codes"
#define RPT_DEFAULT_ID_SYSTEM "urn:cxrtriage:id"
#define RPT_DEFAULT_SENDING_APP "CXR-AI-GW"

#define RPT_MAX_CLASSES 64 /* model.h's NN_MAX_CLASSES */

/* Triage priority; same values as model.h's enum nn_priority, so the daemon can cast. */
enum rpt_priority { RPT_PRIO_NONE = 0, RPT_PRIO_URGENT, RPT_PRIO_ROUTINE, RPT_PRIO_NORMAL };

/* Where the DICOM Accession Number (0008,0050) goes in the ORU (STANDARDS 1.5); bit flags. */
enum rpt_accession_map {
    RPT_ACC_PLACER_FIELD1 = 1, /* OBR-18 (Placer Field 1), as IHE RAD does: the default */
    RPT_ACC_FILLER = 2,        /* ORC-3 / OBR-3 (filler order number), when the RIS uses the
                                * accession number as its filler id; it then replaces the DICOM
                                * Filler Order Number (0040,2017) */
};

struct rpt_study {
    const char *study_uid;  /* (0020,000D) Study Instance UID: required */
    const char *study_date; /* (0008,0020) DA "YYYYMMDD" */
    const char *study_time; /* (0008,0030) TM "HH[MM[SS[.F{1,6}]]]" */
    const char *tz_offset;  /* (0008,0201) "+HHMM"/"-HHMM": when absent the study time has no
                             * offset in HL7 and FHIR gets the date only (FHIR requires an
                             * offset on a dateTime with a time) */
    int n_series;           /* series and instances received for the study (0 = unknown);
                             * stated in the FHIR conclusion */
    int n_instances;
};

struct rpt_patient {
    const char *id;         /* (0010,0020) Patient ID: required for the ORU (PID-3 is R) */
    const char *issuer;     /* (0010,0021) Issuer of Patient ID */
    const char *name;       /* (0010,0010) DICOM PN in UTF-8: up to three component groups
                             * (alphabetic=ideographic=phonetic), each with the components
                             * Family^Given^Middle^Prefix^Suffix */
    const char *birth_date; /* (0010,0030) DA "YYYYMMDD" */
    const char *sex;        /* (0010,0040) CS "M", "F", "O" */
};

struct rpt_order {
    const char *accession;              /* (0008,0050) */
    const char *placer_order;           /* (0040,2016) */
    const char *filler_order;           /* (0040,2017) */
    const char *requested_procedure_id; /* (0040,1001) */
    /* Procedure code from (0008,1032)/(0032,1064): value, DICOM coding scheme designator
     * ("LN", "SCT", "DCM", a local "99..."), meaning. All absent: LOINC 36554-4. */
    const char *procedure_code;
    const char *procedure_scheme;
    const char *procedure_meaning;
};

struct rpt_skipped {
    const char *sop_uid; /* (0008,0018) of the image that was not scored */
    const char *reason;  /* why, as the applicability gate said ("lateral view", ...) */
};

struct rpt_result {
    struct rpt_study study;
    struct rpt_patient patient;
    struct rpt_order order;

    /* false when no image of the study could be scored (no frontal chest image): the reports
     * then say "results cannot be obtained" (OBR-25 X; DiagnosticReport "cancelled") and carry
     * no score. */
    bool assessed;
    int n_classes;                  /* 1..RPT_MAX_CLASSES when assessed */
    const char *const *class_names; /* n_classes names, as the model spells them */
    const double *scores;           /* n_classes probabilities in [0,1] */
    enum rpt_priority priority;     /* RPT_PRIO_NONE: no triage row */
    int triage_class;               /* index of the class the triage names (for urgent the
                                     * triggering class), -1 for none */
    const char *triage_reason;      /* "COVID-19 0.912 >= 0.412" */
    const char *triage_rule;        /* nn_triage_rule_text(): the rule and its thresholds */

    size_t n_skipped; /* images of the study that were not scored, with the reason */
    const struct rpt_skipped *skipped;

    const char *model_name;    /* required */
    const char *model_version; /* required */
    const char *model_digest;  /* required: hex SHA-256 of the model file (>= 16 hex digits) */
    int64_t analysis_ms;       /* when the result was computed, Unix epoch milliseconds */

    /* A correction replaces a report already sent (a re-run, or a new model): OBR-25/OBX-11 C,
     * FHIR status "corrected" and conditional update instead of create. */
    bool is_correction;
    const char *previous_control_id; /* MSH-10 of the corrected ORU (named in an NTE) */
    const char *previous_report_id;  /* Identifier.value of the corrected DiagnosticReport
                                      * (at most 127 bytes); absent: the one this result
                                      * would get (same study and model) */
};

struct rpt_settings {
    const char *sending_application;   /* MSH-3; absent: RPT_DEFAULT_SENDING_APP */
    const char *sending_facility;      /* MSH-4 */
    const char *receiving_application; /* MSH-5 */
    const char *receiving_facility;    /* MSH-6 */
    char processing_id;                /* MSH-11: 'P', 'T' or 'D' (table 0103) */
    unsigned accession_map;            /* enum rpt_accession_map bits; 0 = RPT_ACC_PLACER_FIELD1 */
    bool send_pv1;                     /* add "PV1|1|U" for receivers whose profile wants it */
    const char *id_system;   /* FHIR Identifier.system of our reports, observations and device
                              * (a URI); absent: RPT_DEFAULT_ID_SYSTEM */
    const char *code_system; /* FHIR CodeSystem URI of the local codes; absent:
                              * RPT_DEFAULT_CODE_SYSTEM */
    const char *patient_id_system; /* FHIR Identifier.system for the Patient ID when the site has
                                    * one (a URI); absent: none, the issuer goes in assigner */
};

/* Fills s with the defaults: processing id 'P', accession in OBR-18, no PV1, default systems. */
void rpt_settings_init(struct rpt_settings *s);

/* ---- HL7 v2.5.1 ---- */

/* Flags of hl7_escape(). */
#define HL7_ESC_TEXT 1u /* the value goes in a TX/FT field: CR/LF become \.br\ (else \X0D\ \X0A\) */

/*
 * Appends s (len bytes, or up to its NUL when len is (size_t)-1) to out with the HL7 escapes of
 * the standard encoding characters: | ^ ~ \ & become \F\ \S\ \R\ \E\ \T\; CR and LF become
 * \X0D\ and \X0A\ (\.br\ with HL7_ESC_TEXT, a CRLF pair as one \.br\); other control bytes
 * become \Xhh\. UTF-8 above 0x7F passes through (MSH-18 says UNICODE UTF-8).
 * Errors: CXR_ENOMEM, CXR_ELIMIT (from cxr_buf).
 */
cxr_err hl7_escape(struct cxr_buf *out, const char *s, size_t len, unsigned flags);

/*
 * Builds the ORU^R01 for r into out (appended; segments end with CR only, no MLLP framing).
 * r->patient.id is required here (PID-3); the Bundle goes without a subject instead.
 * control_id is MSH-10 (1..20 printable ASCII characters, no encoding character): the caller
 * chooses it, persists it before the first send and reuses it on every retry. now_ms is MSH-7.
 * Errors: see the top of this file.
 */
cxr_err hl7_build_oru(const struct rpt_result *r, const struct rpt_settings *s,
                      const char *control_id, int64_t now_ms, struct cxr_buf *out, char *errbuf,
                      size_t errlen);

/* A fresh MSH-10 for r: "CXR" + 17 hex digits from the study, the model, the correction and
 * now_ms (20 characters). Needs len >= 21. Errors: CXR_EINVAL (study UID or digest absent, or
 * len too small). */
cxr_err hl7_control_id_suggest(const struct rpt_result *r, int64_t now_ms, char *buf, size_t len);

/*
 * The idempotency key of r's report: "cxr-" + 32 hex digits of SHA-256 over the Study Instance
 * UID and the model digest (the DESIGN's key); a correction also hashes the id of the report it
 * corrects, so it gets its own key while every retry of one report shares one. Contains no PHI.
 * Needs len >= 37. Errors: CXR_EINVAL.
 */
cxr_err hl7_idempotency_key(const struct rpt_result *r, char *buf, size_t len);

/* ---- FHIR R4 ---- */

/*
 * The business identifier value of r's DiagnosticReport (its system is s->id_system):
 * previous_report_id for a correction that names one, else "<Study Instance UID>-<first 16
 * hex digits of the model digest>". Needs len >= 82. Errors: CXR_EINVAL.
 */
cxr_err fhir_report_identifier(const struct rpt_result *r, const struct rpt_settings *s, char *buf,
                               size_t len);

/*
 * Builds a FHIR R4 transaction Bundle (JSON, UTF-8) for r into out (appended): a Device (the
 * model), one Observation per class score, one Observation for the triage, and the
 * DiagnosticReport that references them. Creates are conditional (ifNoneExist on each
 * resource's identifier); a correction updates the same resources (conditional PUT).
 * now_ms is DiagnosticReport.issued. Errors: see the top of this file.
 */
cxr_err fhir_build_bundle(const struct rpt_result *r, const struct rpt_settings *s, int64_t now_ms,
                          struct cxr_buf *out, char *errbuf, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
