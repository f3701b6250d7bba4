/*
 * store_int.h - private helpers shared by the files of the audit ledger (not part of store.h).
 */
#ifndef CXR_STORE_INT_H
#define CXR_STORE_INT_H

#include <jansson.h>
#include <sqlite3.h>

#include "store.h"

struct st_db {
    sqlite3 *h;
    char path[1024];
    int mode;    /* ST_OPEN_READ, ST_OPEN_WRITE or ST_OPEN_UPDATE */
    int version; /* PRAGMA user_version after open (and migration) */
};

/* The instance columns in the order st_get reads them and the row hash covers them. */
#define INSTANCE_COLS                                                                              \
    "id, sop_instance_uid, sop_class_uid, study_uid, series_uid, patient_id, accession,"           \
    " calling_aet, called_aet, peer, transfer_syntax, source, spool_path, size_bytes,"             \
    " received_at, state, pixel_sha256, gate_applicable, gate_reason, model_digest, scores,"       \
    " top_class, top_score, rule, triage, triage_reason, timings, error, duplicate_of,"            \
    " spool_gone, updated_at"
#define INSTANCE_NCOLS 31

/* Fills errbuf with "PATH: WHAT: sqlite's message" and maps the SQLite code to a cxr_err. */
cxr_err st__dberr(st_db *db, const char *what, char *errbuf, size_t errlen);
/* Fills errbuf with "PATH: WHAT: text" and returns err. */
cxr_err st__fail(const st_db *db, cxr_err err, const char *what, const char *text, char *errbuf,
                 size_t errlen);
/* Runs sql (no rows expected); on failure fills errbuf naming what. */
cxr_err st__exec(st_db *db, const char *sql, const char *what, char *errbuf, size_t errlen);
/* Prepares sql; on failure fills errbuf naming what. */
cxr_err st__prepare(st_db *db, const char *sql, sqlite3_stmt **ret, const char *what, char *errbuf,
                    size_t errlen);

/* Write transactions: BEGIN IMMEDIATE (refused on a read-only connection), COMMIT, and a
 * ROLLBACK that is harmless outside a transaction. */
cxr_err st__begin(st_db *db, const char *what, char *errbuf, size_t errlen);
cxr_err st__commit(st_db *db, const char *what, char *errbuf, size_t errlen);
void st__rollback(st_db *db);
/* Ends a write transaction begun with st__begin: commits when err is CXR_OK, rolls back when
 * it is not (or the commit fails), and finalizes st (may be NULL) either way. Returns err, or
 * the commit's error. */
cxr_err st__end(st_db *db, sqlite3_stmt *st, cxr_err err, const char *what, char *errbuf,
                size_t errlen);
/* Steps st once, expecting no row (INSERT, UPDATE); on failure fills errbuf naming what. */
cxr_err st__step_done(st_db *db, sqlite3_stmt *st, const char *what, char *errbuf, size_t errlen);
/* The index of name in names[from..n) (NULL entries never match), or -1 (also for NULL name). */
int st__name_index(const char *const *names, int from, int n, const char *name);
/* Bounded copy that always terminates; a column's text ("" for NULL); binds s ("" for NULL). */
void st__copy_str(char *dst, size_t len, const char *src);
const char *st__col_text(sqlite3_stmt *st, int i);
void st__bind_text(sqlite3_stmt *st, int i, const char *s);
/* Appends an event to the hash chain inside the caller's transaction. row_hash (NULL: none) is
 * the hash of the row the event changed, as it is now (an instance's or a report's). */
cxr_err st__append_event_row(st_db *db, int64_t instance_id, const char *row_hash, int64_t at_ms,
                             const char *kind, const char *detail, char *errbuf, size_t errlen);

/* The hash (st__hash_columns of columns [0, ncols)) of the row sql (one "?" for id) selects,
 * inside the caller's transaction; CXR_ENOTFOUND with missing as the text when there is none. */
cxr_err st__row_hash(st_db *db, const char *sql, int ncols, int64_t id, const char *what,
                     const char *missing, char out[65], char *errbuf, size_t errlen);

/* The report columns in the order st_report_get reads them and the row hash covers them. */
#define REPORT_COLS                                                                                \
    "id, study_uid, destination, format, content_type, state, attempts, idempotency_key,"          \
    " control_id, report_id, model_digest, is_correction, corrects, body, created_at,"             \
    " next_attempt_at, delivered_at, last_status, last_detail, last_response"
#define REPORT_NCOLS 20
/* Queues reports[0..n) of a study inside the caller's transaction (outbox.c), each with its
 * "report.queued" event. */
cxr_err st__reports_insert(st_db *db, const char *study_uid, int64_t now_ms,
                           const struct st_report_new *reports, int n, char *errbuf, size_t errlen);

/* SHA-256 (hex, 64 chars + NUL) of the canonical form of columns [from, to) of the current row
 * of st: each value as its type, its length and its bytes, so NULL, '' and 0 differ. */
cxr_err st__hash_columns(sqlite3_stmt *st, int from, int to, char out[65]);

/* The schema: migrations applied in order; st__schema_count() is the newest version. */
int st__schema_count(void);
const char *st__schema_sql(int version); /* version 1.. st__schema_count() */

/* Puts o (which it consumes) into out as json_dumps(o, flags) does; CXR_ENOMEM when bad (a
 * member could not be set) or jansson runs out of memory. */
cxr_err st__json_put(json_t *o, int bad, size_t flags, struct cxr_buf *out);

#endif
