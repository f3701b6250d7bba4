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

/* ---- Report sender ----
 *
 * Delivers report bodies to the configured destinations: HTTP(S) webhooks (libcurl multi) and
 * HL7 v2 over MLLP (TCP). One attempt per snd_submit(); the outbox (which report, its state,
 * the backoff schedule, the attempts table) belongs to the caller, the daemon's loop thread.
 *
 * - Never blocks. snd_fd() is one pollable fd (an internal epoll set holding curl's sockets,
 *   the MLLP sockets and a timerfd for every deadline); the loop adds it to its own epoll
 *   set for EPOLLIN and calls snd_process() when it is readable (calling it more often is
 *   harmless). Everything happens in snd_process(): I/O, timeouts, and on_result for each
 *   finished attempt. Not thread-safe: one thread (the loop) makes every call.
 * - Every attempt ends in exactly one on_result call (unless snd_free() aborts it), with the
 *   outcome already classified (the policy below), so the policy lives here, in one place.
 * - No logging: what happened is in struct snd_result (detail, response excerpt).
 * - MLLP host names are resolved once, in snd_new() (startup); submits never touch DNS for
 *   MLLP. Webhook names are resolved by libcurl without blocking the loop.
 * - The process should ignore SIGPIPE (the daemon does): MLLP sends use MSG_NOSIGNAL and
 *   libcurl runs with CURLOPT_NOSIGNAL, but a TLS write to a peer that closed may still raise it.
 *
 * Outcome policy (snd_http_outcome(), snd_ack_outcome(); the table is in hl7/sender.c):
 *   webhook 2xx                                         DELIVERED
 *   webhook 408, 425, 429, 5xx (Retry-After reported)    RETRY
 *   webhook timeout, refused, reset, DNS failure, a
 *     response cut mid-way, any other transport error   RETRY
 *   webhook TLS failure (untrusted or wrong certificate,
 *     handshake, unreadable CA/client cert)             RETRY: an operator fixes the CA or the
 *                                                       certificate; the outbox's maximum age
 *                                                       ends the retries (dead) meanwhile
 *   webhook 3xx                                         DEAD: redirects are not followed (a POST
 *                                                       with credentials must not move to another
 *                                                       URL); the same request gets the same
 *                                                       answer; the detail names the Location:
 *                                                       fix the URL, then retry from the outbox
 *   webhook other 4xx (400, 401, 403, 404, 413, ...)    DEAD, response excerpt kept
 *   webhook other status (1xx final, >= 600)            RETRY
 *   MLLP MSA-2 != MSH-10 (any MSA-1)                    RETRY (the ACK is not for this message)
 *   MLLP AA or CA                                       DELIVERED
 *   MLLP AR or CR                                       RETRY
 *   MLLP AE or CE                                       DEAD: a content error, resending the same
 *                                                       content fails again (STANDARDS 1.4)
 *   MLLP unknown MSA-1, no MSA, broken frame, ACK over
 *     SND_ACK_MAX, no ACK in time, refused, reset        RETRY (resend with the same MSH-10)
 *
 * Webhook request (for receivers: hl7/RECEIVERS.md): POST <url>, Content-Type as given,
 * Idempotency-Key, User-Agent "cxrtriage/<version>", "Authorization: Bearer <token>" when the
 * destination has one, and with an HMAC key:
 *   X-Cxrtriage-Timestamp: <Unix seconds when the attempt started>
 *   X-Cxrtriage-Signature: sha256=<64 lower-case hex digits of HMAC-SHA256(key,
 *                                   "<timestamp>.<body bytes>")>
 * A receiver recomputes the HMAC over the timestamp header's value, a '.', and the raw body as
 * received, compares in constant time (Python: hmac.compare_digest) and rejects timestamps
 * too far from its clock (say 5 minutes) to refuse replays. TLS verification (peer and host
 * name) is always on; protocols are limited to http and https; redirects are not followed;
 * connections are kept alive and reused across attempts to the same host (libcurl's
 * connection cache lives as long as the sender); TCP_NODELAY is set on every socket.
 */

#define SND_MAX_DESTS 16
#define SND_ACK_MAX (64 * 1024)      /* largest MLLP ACK frame read */
#define SND_RESPONSE_MAX (16 * 1024) /* response body bytes kept per attempt */
#define SND_BODY_MAX (64 * 1024 * 1024) /* largest report body accepted by snd_submit */

enum snd_kind { SND_WEBHOOK = 1, SND_MLLP = 2 };

/* One destination, from the configuration. Every string is NUL-terminated; "" = absent. */
struct snd_dest {
    char name[32];            /* "default", "ehr2", ...: for the caller's logs and audit */
    int kind;                 /* enum snd_kind */
    char url[1024];           /* webhook: http:// or https:// */
    char host[256];           /* mllp: name or address, resolved in snd_new() */
    int port;                 /* mllp: 1..65535 */
    char bearer_token[256];   /* webhook, optional: Authorization: Bearer */
    char hmac_key[256];       /* webhook, optional: the signature headers above */
    char ca_file[1024];       /* webhook, optional: CA bundle (PEM) instead of the system's */
    char client_cert[1024];   /* webhook, optional: client certificate (PEM) for mutual TLS */
    char client_key[1024];    /* with client_cert: its private key (PEM); "" = in client_cert */
    int connect_timeout_s;    /* per attempt: TCP (and TLS) connect; 0 = 10 */
    int timeout_s;            /* per attempt, everything (connect, send, response/ACK); 0 = 30 */
};

/* One delivery attempt. Strings are borrowed for the call only; the body is copied. */
struct snd_request {
    int64_t report_id;           /* the caller's id, given back in the result */
    int dest;                    /* index into the dests given to snd_new() */
    const char *body;            /* the report (an ORU without MLLP framing, or JSON) */
    size_t len;
    const char *content_type;    /* webhook: "application/fhir+json", "x-application/hl7-v2+er7" */
    const char *idempotency_key; /* webhook: Idempotency-Key (hl7_idempotency_key()); optional */
    const char *control_id;      /* mllp: MSH-10 of body, checked against MSA-2 of the ACK */
};

enum snd_outcome { SND_DELIVERED = 0, SND_RETRY, SND_DEAD };

struct snd_result {
    int64_t report_id;
    int dest;
    enum snd_outcome outcome;
    int http_status;        /* webhook: the final status, 0 when no response arrived */
    char ack_code[4];       /* mllp: MSA-1 (AA/AE/AR/CA/CE/CR), "" when no ACK was read */
    int retry_after_s;      /* webhook RETRY: Retry-After (delta-seconds or HTTP-date, as seconds
                             * from now, >= 0, not capped: the outbox bounds it), -1 when absent
                             * or unreadable */
    char detail[256];       /* what happened, one line: "HTTP 503", "timeout after 10 s",
                             * "connection refused", "MSA-2 'X' does not match MSH-10 'Y'",
                             * "TLS: SSL certificate problem: self-signed certificate" */
    char response[512];     /* the start of the response body or of the ACK, with control
                             * characters, backslash and non-ASCII bytes escaped (\r \n \t \\
                             * \xHH); "..." at the end when cut */
    double ms;              /* from snd_submit() to the outcome */
};

typedef struct snd_sender snd_sender;
typedef void (*snd_result_fn)(void *user, const struct snd_result *r);

/*
 * Creates a sender for n (1..SND_MAX_DESTS) destinations, copied. Checks each one (kind, URL
 * scheme, MLLP host and port, readable CA/certificate files) and resolves MLLP host names.
 * on_result is called from snd_process() for every finished attempt; it may call snd_submit()
 * (e.g. the next report) but not snd_free().
 * Errors: CXR_EINVAL (errbuf names the destination and the field), CXR_ENET (an MLLP host name
 * does not resolve), CXR_ENOMEM, CXR_EIO (epoll/timerfd), CXR_EUNSUPPORTED (libcurl without
 * HTTPS).
 */
cxr_err snd_new(const struct snd_dest *dests, int n, snd_result_fn on_result, void *user,
                snd_sender **ret, char *errbuf, size_t errlen);

/* The one fd the loop polls for EPOLLIN (level-triggered), valid until snd_free(). */
int snd_fd(const snd_sender *s);

/* Does all pending work without blocking: socket I/O, libcurl, deadlines; calls on_result for
 * every attempt that finished. Call when snd_fd() is readable (or on every loop tick). */
void snd_process(snd_sender *s);

/*
 * Starts one attempt now, without blocking (the connect is non-blocking; nothing is sent until
 * snd_process()). The body is copied. Errors (no attempt started, no on_result): CXR_EINVAL
 * (bad dest index, empty body, an MLLP body holding 0x0B or 0x1C, a control id or key with
 * control characters), CXR_ELIMIT (body over SND_BODY_MAX), CXR_ENOMEM, CXR_ENET (no socket).
 * A refused connection is not an error here: it is an attempt that ends in SND_RETRY.
 */
cxr_err snd_submit(snd_sender *s, const struct snd_request *rq);

/* Attempts started and not yet reported. */
int snd_in_flight(const snd_sender *s);

/* Aborts the attempts in flight (no on_result for them), closes every connection, wipes the
 * secrets. NULL is a no-op. */
void snd_free(snd_sender *s);

/* ---- the sender's pure parts (unit-tested) ---- */

/* Outcome of a completed HTTP exchange by status (policy table above). */
enum snd_outcome snd_http_outcome(int status);

/* Outcome of an MLLP ACK: MSA-1 code and whether MSA-2 matched MSH-10 (policy above). */
enum snd_outcome snd_ack_outcome(const char *code, bool control_id_matches);

/* Retry-After value -> seconds from now (>= 0, capped at INT32_MAX), or -1 when malformed.
 * Accepts delta-seconds and the three HTTP-date forms of RFC 9110 (IMF-fixdate, RFC 850,
 * asctime); a date in the past gives 0. */
int snd_parse_retry_after(const char *value, int64_t now_s);

/* Finds the first complete MLLP frame in buf: 0x0B, message, 0x1C 0x0D. Returns 1 and the
 * message's offset and length when complete, 0 when more bytes are needed, -1 when broken
 * (not starting with 0x0B, a 0x1C not followed by 0x0D, a second 0x0B inside). */
int snd_mllp_deframe(const char *buf, size_t len, size_t *ret_off, size_t *ret_len);

/* Appends the MLLP frame of msg to out. Errors: CXR_EINVAL (msg holds 0x0B or 0x1C), and
 * those of cxr_buf. */
cxr_err snd_mllp_frame(struct cxr_buf *out, const char *msg, size_t len);

/* Reads MSA-1 (into code, up to 3 characters), MSA-2 (into control_id) and MSA-3 (into text)
 * from an ACK message (segments end with CR; LF and CRLF are tolerated; the field separator is
 * the one MSH declares). Errors: CXR_EPARSE (no MSH or no MSA). */
cxr_err snd_parse_ack(const char *msg, size_t len, char code[4], char *control_id,
                      size_t control_id_len, char *text, size_t text_len);

/* HMAC-SHA256 of "<timestamp>.<body>" under key, as 64 lower-case hex digits and a NUL;
 * timestamp NULL: of the body alone (for test vectors).
 * Errors: CXR_ENOMEM, CXR_EINVAL (OpenSSL failure). */
cxr_err snd_signature(const char *key, size_t keylen, const char *timestamp, const char *body,
                      size_t len, char hex[65]);

/* Copies an excerpt of in into out (outlen >= 4) with \r \n \t \\ and \xHH escapes, ending
 * with "..." when cut. */
void snd_excerpt(const char *in, size_t len, char *out, size_t outlen);

#ifdef __cplusplus
}
#endif
#endif
