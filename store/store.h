/*
 * store.h - the audit ledger of cxrtriage: one SQLite file (WAL, foreign keys on) that is both
 * the daemon's work queue and the auditors' record of every instance received, every
 * association refused and every state change.
 *
 * DESIGN
 * - One writer: the daemon's loop thread opens the database read-write (st_open with
 *   ST_OPEN_WRITE) and is the only thread that writes. Readers (the CLI, later the HTTP endpoint)
 *   open their own read-only connections (ST_OPEN_READ) and may read while the daemon writes;
 *   the one exception, `cxrtriage outbox retry`, requeues a report with ST_OPEN_UPDATE.
 * - Schema changes are versioned migrations applied in order inside one transaction each
 *   (PRAGMA user_version holds the version); a file newer than this build is refused.
 * - Tables: instances (one row per received instance: what came in, from whom, what the model
 *   said), events (append-only: every state change and every refusal, hash-chained), studies
 *   (one row per Study Instance UID: open or complete, and the combined result); from schema 2,
 *   reports and report_attempts (the outbox, see "the report outbox" below).
 * - Tamper evidence: every event row carries the SHA-256 of the previous event row and its own
 *   hash over its content; each event of an instance also records the hash of the instance row's
 *   content after the change. `st_verify` recomputes all of it, so an edited, deleted or inserted
 *   row (instance or event) is found and named.
 * - The library never logs; errors are cxr_err plus a message in errbuf naming the database file
 *   and the statement's purpose ("audit.db: insert instance: database or disk is full").
 * - Files are created 0600 (the -wal and -shm files too).
 */
#ifndef CXR_STORE_H
#define CXR_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct st_db st_db;

#define ST_MAX_CLASSES 8
#define ST_UID_MAX 65
#define ST_TEXT_MAX 256

/* An instance's state. received: in the queue; classified/skipped/failed are final. */
enum st_state { ST_RECEIVED = 0, ST_CLASSIFIED, ST_SKIPPED, ST_FAILED };
const char *st_state_name(enum st_state s);              /* "received", ... */
bool st_state_from_name(const char *name, enum st_state *ret);

/* Triage priority from the triage rule; ST_TRIAGE_NONE when not scored. */
enum st_triage { ST_TRIAGE_NONE = 0, ST_TRIAGE_URGENT, ST_TRIAGE_ROUTINE, ST_TRIAGE_NORMAL };
const char *st_triage_name(enum st_triage t);            /* NULL for NONE, "urgent", ... */
bool st_triage_from_name(const char *name, enum st_triage *ret);

/* Per-stage timings in milliseconds (-1 = not measured). */
enum st_stage { ST_T_RECEIVE = 0, ST_T_QUEUE, ST_T_DECODE, ST_T_PREPROCESS, ST_T_INFER,
                ST_T_COMMIT, ST_T__COUNT };
const char *st_stage_name(enum st_stage s);              /* "receive", "queue", ... */

/* What the listener knows when an instance has been stored durably. */
struct st_receipt {
    char sop_instance_uid[ST_UID_MAX], sop_class_uid[ST_UID_MAX];
    char study_uid[ST_UID_MAX], series_uid[ST_UID_MAX];
    char patient_id[ST_UID_MAX], accession[ST_UID_MAX];
    char calling_aet[17], called_aet[17];
    char peer[64];                 /* numeric address of the peer, "" for an upload */
    char transfer_syntax[ST_UID_MAX];
    char source[16];               /* "dicom" (C-STORE), "recovered" (spool file found at start),
                                      "upload" (the HTTP endpoint: audited, never part of a study
                                      or a report, never a duplicate of a C-STORE) */
    char spool_path[1024];
    int64_t size_bytes;
    int64_t received_at_ms;        /* Unix epoch milliseconds, when C-STORE completed */
    double receive_ms;             /* time from the C-STORE request to the durable file */
};

/* What the pipeline found for an instance. */
struct st_result {
    enum st_state state;           /* ST_CLASSIFIED, ST_SKIPPED or ST_FAILED */
    char pixel_sha256[65];         /* of the decoded pixel matrix; "" when not decoded */
    bool gate_applicable;
    char gate_reason[ST_TEXT_MAX]; /* why not scored; "" when applicable */
    char model_digest[65];
    int n_classes;                 /* 0 when not scored */
    char class_names[ST_MAX_CLASSES][64];
    double scores[ST_MAX_CLASSES];
    char rule[ST_TEXT_MAX];        /* the triage rule and thresholds used, as text */
    enum st_triage triage;
    char triage_reason[ST_TEXT_MAX]; /* e.g. "COVID-19 0.91 >= 0.42" */
    double timings_ms[ST_T__COUNT];
    char error[ST_TEXT_MAX];       /* for ST_FAILED: what went wrong, naming the part */
};

/* One instance row as read back. */
struct st_instance {
    int64_t id;
    struct st_receipt r;
    struct st_result res;          /* state ST_RECEIVED: only state is meaningful */
    int64_t updated_at_ms;
    int64_t duplicate_of;          /* id of the earlier row for a re-scored duplicate, else 0 */
};

/* One event as read back. */
struct st_event {
    int64_t id;
    int64_t instance_id;           /* 0 for association-level events */
    int64_t at_ms;
    char kind[32];                 /* "received", "classified", "skipped", "failed", "duplicate",
                                      "association.refused", "store.failed", "recovered", ... */
    char detail[1024];             /* key=value text, no PHI */
};

/* Filters for listing; zero / empty fields do not filter. */
struct st_filter {
    int64_t since_ms, until_ms;    /* received_at in [since, until) */
    char patient_id[ST_UID_MAX], accession[ST_UID_MAX], study_uid[ST_UID_MAX];
    char class_name[64];           /* the top-scoring class */
    bool has_state;
    enum st_state state;
    bool has_triage;
    enum st_triage triage;
    int64_t after_id;              /* paging: rows with id < after_id when > 0 (newest first) */
    int limit;                     /* 0 = no limit */
    char source[16];               /* "dicom", "recovered", "upload" */
};

enum { ST_OPEN_READ = 0, ST_OPEN_WRITE = 1 };

/* Opens (ST_OPEN_WRITE: creates 0600 and migrates) the ledger at path. */
cxr_err st_open(const char *path, int mode, st_db **ret_db, char *errbuf, size_t errlen);
void st_close(st_db *db);
/* Schema version of the open file. */
int st_schema_version(const st_db *db);

/* Inserts a received instance (state received), its "received" event and, when it names a
 * study (and is not an upload: source "upload"), the study's st_study_touch, all in one
 * transaction. Returns its id. */
cxr_err st_insert_received(st_db *db, const struct st_receipt *r, int64_t duplicate_of,
                           int64_t *ret_id, char *errbuf, size_t errlen);
/* Records the pipeline's result for id (state, scores, ...) and its event in one transaction.
 * Refuses (CXR_EINVAL) when the row is already in a final state. */
cxr_err st_finish(st_db *db, int64_t id, const struct st_result *res, char *errbuf,
                  size_t errlen);
/* Appends an event (instance_id 0 for association-level events such as a refusal). */
cxr_err st_add_event(st_db *db, int64_t instance_id, const char *kind, const char *detail,
                     char *errbuf, size_t errlen);

/* The newest row with this SOP Instance UID: CXR_OK with *ret_id, or CXR_ENOTFOUND. */
cxr_err st_find_sop(st_db *db, const char *sop_instance_uid, int64_t *ret_id,
                    enum st_state *ret_state, char *errbuf, size_t errlen);
/* Whether a row refers to this spool file (restart: spool files without a row). */
cxr_err st_has_spool_path(st_db *db, const char *spool_path, bool *ret, char *errbuf,
                          size_t errlen);

/* Rows in state received, oldest first (restart: resume them). fn returns false to stop. */
cxr_err st_each_pending(st_db *db, bool (*fn)(void *user, const struct st_instance *in),
                        void *user, char *errbuf, size_t errlen);
/* Rows matching f, newest first. */
cxr_err st_list(st_db *db, const struct st_filter *f,
                bool (*fn)(void *user, const struct st_instance *in), void *user, char *errbuf,
                size_t errlen);
/* One row by id, or by SOP Instance UID when id is 0 (the newest). */
cxr_err st_get(st_db *db, int64_t id, const char *sop_instance_uid, struct st_instance *ret,
               char *errbuf, size_t errlen);
/* Events of one instance (or of all, instance_id < 0), oldest first. */
cxr_err st_events(st_db *db, int64_t instance_id, bool (*fn)(void *user, const struct st_event *e),
                  void *user, char *errbuf, size_t errlen);

/* ---- studies ---- */

/* A study's state: open while instances arrive; complete once quiet for study_quiet_seconds. */
struct st_study {
    char study_uid[ST_UID_MAX];
    char patient_id[ST_UID_MAX], accession[ST_UID_MAX];
    int64_t first_received_ms, last_received_ms, completed_ms; /* completed 0 while open */
    int n_instances, n_scored, n_skipped, n_failed;
    /* Combined result: highest score per class over the scored frontal images. */
    int n_classes;
    char class_names[ST_MAX_CLASSES][64];
    double scores[ST_MAX_CLASSES];
    enum st_triage triage;
    char model_digest[65];
    char skipped[1024];            /* "SOPUID: reason; ..." of the skipped/failed ones */
};
/* Notes an instance's arrival in its study (creates the study row, re-opens a complete one). */
cxr_err st_study_touch(st_db *db, const char *study_uid, const char *patient_id,
                       const char *accession, int64_t received_ms, char *errbuf, size_t errlen);
/* Whether every instance of the study is in a final state. */
cxr_err st_study_settled(st_db *db, const char *study_uid, bool *ret, char *errbuf,
                         size_t errlen);
/* Computes the combined result from the study's final rows and marks it complete at now_ms,
 * with its event, in one transaction. */
cxr_err st_study_complete(st_db *db, const char *study_uid, int64_t now_ms,
                          struct st_study *ret_study, char *errbuf, size_t errlen);
/* Open studies (restart: re-arm their quiet timers). */
cxr_err st_each_open_study(st_db *db, bool (*fn)(void *user, const struct st_study *s),
                           void *user, char *errbuf, size_t errlen);
cxr_err st_get_study(st_db *db, const char *study_uid, struct st_study *ret, char *errbuf,
                     size_t errlen);

/* Filters for st_study_list; zero / empty fields do not filter. */
struct st_study_filter {
    int64_t since_ms, until_ms;    /* last_received in [since, until) */
    char patient_id[ST_UID_MAX], accession[ST_UID_MAX];
    int64_t after_id;              /* paging by the study row's id, newest first */
    int limit;                     /* 0 = no limit */
};
/* Studies matching f, newest first, with their live counts and (when complete) the recorded
 * combined result; fn gets the row id too. fn returns false to stop. */
cxr_err st_study_list(st_db *db, const struct st_study_filter *f,
                      bool (*fn)(void *user, int64_t id, const struct st_study *s), void *user,
                      char *errbuf, size_t errlen);

/* ---- retention ---- */

/* Spool files of rows in a final state older than cutoff_ms: fn gets each path (it deletes the
 * file); st_spool_forget then records that the file is gone (the row stays). */
cxr_err st_each_expired_spool(st_db *db, int64_t cutoff_ms,
                              bool (*fn)(void *user, int64_t id, const char *path), void *user,
                              char *errbuf, size_t errlen);
cxr_err st_spool_forget(st_db *db, int64_t id, char *errbuf, size_t errlen);

/* ---- statistics and verification ---- */

/* Counts by state (n[state]) and by triage (t[triage]), for STATUS= lines and metrics. */
cxr_err st_counts(st_db *db, int64_t n_by_state[4], int64_t n_by_triage[4], char *errbuf,
                  size_t errlen);

/* Recomputes the hash chain and every instance's content hash. *ret_problems gets the number
 * of problems; each is appended to report as one line naming the row ("event 17: hash does not
 * match its content", "instance 5: content changed after event 12", "event 9: missing (chain
 * jumps from 8 to 10)"). Also runs PRAGMA integrity_check. */
cxr_err st_verify(st_db *db, struct cxr_buf *report, int64_t *ret_problems, char *errbuf,
                  size_t errlen);

/* JSON object (one line, no newline) of an instance as `cxrtriage audit list --format json`
 * prints it: sop_instance_uid, study_instance_uid, accession, state, gate_reason, scores (object
 * keyed by class name, or null), triage (or null), model_digest, received_at (RFC 3339),
 * timings_ms (object), and the rest of the row. */
cxr_err st_instance_json(const struct st_instance *in, struct cxr_buf *out);

/* Current time as Unix epoch milliseconds; RFC 3339 UTC text of ms ("2026-12-02T09:37:53.123Z"). */
int64_t st_now_ms(void);
void st_format_time(int64_t ms, char *out, size_t len);
/* Parses "2026-12-02", "2026-12-02T09:37:53Z" or a relative "24h" / "7d" (before now). */
bool st_parse_time(const char *s, int64_t now_ms, int64_t *ret_ms);


/* ---- the report outbox ----
 *
 * A report is queued (state pending) in the same transaction that completes its study
 * (st_study_complete_reports), so a crash can lose neither the study's result nor its report.
 * The sender takes due reports (st_outbox_due), sends the stored body byte for byte and records
 * each attempt (st_report_attempt): delivered, retry (with the next time) or dead. A report keeps
 * its idempotency key, HL7 control id (MSH-10) and FHIR report identifier for life, through every
 * retry and an operator's requeue, so receivers can de-duplicate (at-least-once delivery).
 * Nothing is deleted: a dead report stays until an operator requeues it (st_report_requeue).
 * Every state change appends a hash-chained event (instance_id 0) whose detail names the
 * report, its destination and format ("report=7 destination=webhook format=fhir ...", no PHI)
 * and records the hash of the report row, so st_verify finds an edited body or state too.
 */

enum st_report_state { ST_REPORT_PENDING = 0, ST_REPORT_DELIVERED, ST_REPORT_DEAD };
const char *st_report_state_name(enum st_report_state s); /* "pending", "delivered", "dead" */
bool st_report_state_from_name(const char *name, enum st_report_state *ret);

enum st_report_format { ST_FORMAT_HL7 = 0, ST_FORMAT_FHIR };
const char *st_report_format_name(enum st_report_format f); /* "hl7", "fhir" */
bool st_report_format_from_name(const char *name, enum st_report_format *ret);

/* An attempt's outcome as the sender saw it; same values as hl7.h's enum snd_outcome, so the
 * daemon can cast. */
enum st_attempt_outcome { ST_ATTEMPT_DELIVERED = 0, ST_ATTEMPT_RETRY, ST_ATTEMPT_DEAD };
const char *st_attempt_outcome_name(enum st_attempt_outcome o); /* "delivered", "retry", "dead" */

#define ST_DEST_MAX 33       /* a destination's name (config's cfg_dest.name) or "files" */
#define ST_ID_MAX 128        /* idempotency key, control id, report identifier */
#define ST_RESPONSE_MAX 1024 /* the receiver's response excerpt kept per attempt */
#define ST_REPORTS_MAX 16    /* reports one study completion may queue */

/* What the daemon provides to queue one report. body is malloc'ed by the builder and always
 * freed by the store (st_study_complete_reports frees every body it was given). */
struct st_report_new {
    char destination[ST_DEST_MAX];
    enum st_report_format format;
    char content_type[128];
    char idempotency_key[ST_ID_MAX]; /* required */
    char control_id[ST_ID_MAX];      /* HL7 MSH-10 (required for HL7), persisted before the first
                                        send; "" for FHIR */
    char report_id[ST_ID_MAX];       /* FHIR DiagnosticReport identifier value; "" for HL7 */
    char model_digest[65];
    bool is_correction;
    int64_t corrects; /* id of the report this one corrects, 0 for none */
    char *body;       /* the exact bytes to send (required) */
    size_t body_len;
};

/* One report as read back. */
struct st_report {
    int64_t id;
    char study_uid[ST_UID_MAX];
    char destination[ST_DEST_MAX];
    enum st_report_format format;
    char content_type[128];
    enum st_report_state state;
    int attempts; /* failed attempts so far (retry and dead outcomes) */
    char idempotency_key[ST_ID_MAX], control_id[ST_ID_MAX], report_id[ST_ID_MAX];
    char model_digest[65];
    bool is_correction;
    int64_t corrects; /* 0 for none */
    int64_t created_at_ms, next_attempt_at_ms;
    int64_t delivered_at_ms; /* 0 until delivered */
    int last_status;         /* HTTP status of the last attempt, or 0 */
    char last_detail[ST_TEXT_MAX];
    char last_response[ST_RESPONSE_MAX];
    char *body; /* NUL-terminated copy when asked for, else NULL */
    size_t body_len;
};
/* Frees r->body (the struct itself is the caller's). */
void st_report_done(struct st_report *r);

/* One delivery attempt as read back. */
struct st_report_attempt {
    int64_t id, report_id, at_ms;
    enum st_attempt_outcome outcome;
    int status;
    char detail[ST_TEXT_MAX];
    char response[ST_RESPONSE_MAX];
    double ms;
};

/* Filters for st_report_list; zero / empty fields do not filter. */
struct st_report_filter {
    bool has_state;
    enum st_report_state state;
    char study_uid[ST_UID_MAX];
    char destination[ST_DEST_MAX];
    int64_t after_id; /* paging: rows with id < after_id when > 0 (newest first) */
    int limit;        /* 0 = no limit */
};

/*
 * Called by st_study_complete_reports INSIDE the completion's transaction, after the combined
 * result is computed (combined->completed_ms is set). It may read the ledger through db (e.g.
 * st_report_latest to link a correction) but must not write to it. It fills out[0..n) (zeroed
 * beforehand) and returns n (0..max), or -1 to roll everything back: the study then stays open
 * and nothing is queued (the builder keeps its own reason in user).
 */
typedef int st_report_build_fn(void *user, st_db *db, const struct st_study *combined,
                               struct st_report_new *out, int max);

/* st_study_complete, and in the same transaction queues the reports build gives (pending, next
 * attempt at now_ms), each with its "report.queued" event. Any failure, or build returning -1
 * (CXR_EINVAL), rolls back the completion too. */
cxr_err st_study_complete_reports(st_db *db, const char *study_uid, int64_t now_ms,
                                  st_report_build_fn *build, void *user, struct st_study *ret_study,
                                  char *errbuf, size_t errlen);

/* The newest report of a study for one destination and format (the one a correction corrects):
 * CXR_OK, or CXR_ENOTFOUND. No body. */
cxr_err st_report_latest(st_db *db, const char *study_uid, const char *destination,
                         enum st_report_format format, struct st_report *ret, char *errbuf,
                         size_t errlen);

/* Pending reports with next_attempt_at <= now_ms, oldest first (by next_attempt_at, then id), at
 * most limit (0: all), with their bodies (valid during fn only). fn returns false to stop. */
cxr_err st_outbox_due(st_db *db, int64_t now_ms, int limit,
                      bool (*fn)(void *user, const struct st_report *r), void *user, char *errbuf,
                      size_t errlen);

/*
 * Records one attempt of pending report id and moves its state, in one transaction with its event
 * ("report.delivered", "report.retry", "report.dead"): delivered sets delivered_at = at_ms;
 * retry counts the attempt and sets next_attempt_at = next_attempt_ms; dead counts it and parks
 * the report. status is the HTTP status (0: none, e.g. a connection failure); detail is the
 * sender's text; response an excerpt of the receiver's answer (cut to ST_RESPONSE_MAX - 1 bytes
 * on a UTF-8 boundary); ms the attempt's duration. CXR_ENOTFOUND, or CXR_EINVAL when the report
 * is not pending (a delivered or dead report gets no attempts).
 */
cxr_err st_report_attempt(st_db *db, int64_t id, int64_t at_ms, enum st_attempt_outcome outcome,
                          int status, const char *detail, const char *response, double ms,
                          int64_t next_attempt_ms, char *errbuf, size_t errlen);

/*
 * An operator's retry: dead report id back to pending, due at now_ms, with its ORIGINAL
 * idempotency key, control id and report identifier (a receiver that got it before de-duplicates
 * it) and its attempt count kept, plus its "report.requeued" event. Refuses (CXR_EINVAL) a
 * report that is not dead; CXR_ENOTFOUND when there is none.
 * Meant for a second writer beside the running daemon (the CLI opens with ST_OPEN_UPDATE): its
 * BEGIN IMMEDIATE waits up to the connection's busy timeout (5 s) for the daemon's write
 * transaction, which is always short, and then fails with CXR_EBUSY.
 */
cxr_err st_report_requeue(st_db *db, int64_t id, int64_t now_ms, char *errbuf, size_t errlen);

/* One report by id (with its body when with_body; free it with st_report_done): CXR_OK or
 * CXR_ENOTFOUND. */
cxr_err st_report_get(st_db *db, int64_t id, bool with_body, struct st_report *ret, char *errbuf,
                      size_t errlen);
/* Reports matching f, newest first, without bodies. fn returns false to stop. */
cxr_err st_report_list(st_db *db, const struct st_report_filter *f,
                       bool (*fn)(void *user, const struct st_report *r), void *user, char *errbuf,
                       size_t errlen);
/* The attempts of report id, oldest first. */
cxr_err st_report_attempts(st_db *db, int64_t id,
                           bool (*fn)(void *user, const struct st_report_attempt *a), void *user,
                           char *errbuf, size_t errlen);
/* Reports by state, for STATUS= lines and metrics. */
cxr_err st_outbox_counts(st_db *db, int64_t *ret_pending, int64_t *ret_delivered, int64_t *ret_dead,
                         char *errbuf, size_t errlen);

/* JSON object (one line, no newline) of a report as `cxrtriage outbox list --format json` prints
 * it: id, study_instance_uid, destination, format, content_type, state, attempts,
 * idempotency_key, control_id, report_id, model_digest, is_correction, corrects (or null),
 * created_at, next_attempt_at, delivered_at (RFC 3339, or null), last_status, last_detail,
 * last_response, and body when r->body is set. */
cxr_err st_report_json(const struct st_report *r, struct cxr_buf *out);

/* JSON object (one line) of an attempt: id, report (the report's id), at (RFC 3339), outcome,
 * status, detail, response, ms. */
cxr_err st_report_attempt_json(const struct st_report_attempt *a, struct cxr_buf *out);

/* st_open mode for a short-lived second writer beside the daemon (`cxrtriage outbox retry`): an
 * existing ledger of this build's schema, read-write, never created, never migrated. */
enum { ST_OPEN_UPDATE = 2 };

#ifdef __cplusplus
}
#endif
#endif
