/*
 * store_int.h - private helpers shared by the files of the audit ledger (not part of store.h).
 */
#ifndef CXR_STORE_INT_H
#define CXR_STORE_INT_H

#include <sqlite3.h>

#include "store.h"

struct st_db {
    sqlite3 *h;
    char path[1024];
    int mode;    /* ST_OPEN_READ or ST_OPEN_WRITE */
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

/* SHA-256 (hex, 64 chars + NUL) of the canonical form of columns [from, to) of the current row
 * of st: each value as its type, its length and its bytes, so NULL, '' and 0 differ. */
cxr_err st__hash_columns(sqlite3_stmt *st, int from, int to, char out[65]);

/* The schema: migrations applied in order; st__schema_count() is the newest version. */
int st__schema_count(void);
const char *st__schema_sql(int version); /* version 1.. st__schema_count() */

#endif
