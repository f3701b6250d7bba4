/*
 * schema.c - the ledger's schema as versioned migrations. Migration N brings a file from
 * user_version N-1 to N; store.c applies each in its own transaction. Append new migrations at
 * the end and never edit a released one: files in the field were created by it.
 *
 * Foreign keys use ON DELETE RESTRICT on purpose: the daemon never deletes an instance, and a
 * cascade would let a DELETE erase the events that prove the row existed. An attacker with the
 * sqlite3 shell (foreign keys off by default) can still delete a row; st_verify then finds
 * events that point at a missing instance and a chain whose row hashes no longer add up.
 */
#include "store_int.h"

static const char *const migrations[] = {
    /* 1: instances, events (hash chain), studies and their indices. */
    "CREATE TABLE instances ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " sop_instance_uid TEXT NOT NULL,"
    " sop_class_uid TEXT NOT NULL DEFAULT '',"
    " study_uid TEXT NOT NULL DEFAULT '',"
    " series_uid TEXT NOT NULL DEFAULT '',"
    " patient_id TEXT NOT NULL DEFAULT '',"
    " accession TEXT NOT NULL DEFAULT '',"
    " calling_aet TEXT NOT NULL DEFAULT '',"
    " called_aet TEXT NOT NULL DEFAULT '',"
    " peer TEXT NOT NULL DEFAULT '',"
    " transfer_syntax TEXT NOT NULL DEFAULT '',"
    " source TEXT NOT NULL DEFAULT '',"
    " spool_path TEXT NOT NULL DEFAULT '',"
    " size_bytes INTEGER NOT NULL DEFAULT 0,"
    " received_at INTEGER NOT NULL," /* Unix epoch ms */
    " state TEXT NOT NULL CHECK (state IN ('received','classified','skipped','failed')),"
    " pixel_sha256 TEXT NOT NULL DEFAULT '',"
    " gate_applicable INTEGER NOT NULL DEFAULT 0,"
    " gate_reason TEXT NOT NULL DEFAULT '',"
    " model_digest TEXT NOT NULL DEFAULT '',"
    " scores TEXT," /* JSON object {class: score} in model order */
    " top_class TEXT,"
    " top_score REAL,"
    " rule TEXT NOT NULL DEFAULT '',"
    " triage TEXT CHECK (triage IN ('urgent','routine','normal')),"
    " triage_reason TEXT NOT NULL DEFAULT '',"
    " timings TEXT NOT NULL DEFAULT '{}'," /* JSON object {stage: ms}, measured ones only */
    " error TEXT NOT NULL DEFAULT '',"
    " duplicate_of INTEGER REFERENCES instances(id) ON DELETE RESTRICT,"
    " spool_gone INTEGER NOT NULL DEFAULT 0,"
    " updated_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX instances_received_at ON instances(received_at);"
    "CREATE INDEX instances_patient_id ON instances(patient_id);"
    "CREATE INDEX instances_accession ON instances(accession);"
    "CREATE INDEX instances_study_uid ON instances(study_uid);"
    "CREATE INDEX instances_state ON instances(state);"
    "CREATE INDEX instances_sop_instance_uid ON instances(sop_instance_uid);"
    "CREATE INDEX instances_spool_path ON instances(spool_path);"
    "CREATE TABLE events ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " instance_id INTEGER REFERENCES instances(id) ON DELETE RESTRICT," /* NULL: association */
    " at INTEGER NOT NULL,"
    " kind TEXT NOT NULL,"
    " detail TEXT NOT NULL DEFAULT '',"
    " row_hash TEXT,"           /* SHA-256 of the instance row after the change */
    " prev_hash TEXT NOT NULL," /* hash of the previous event, 64 zeros for the first */
    " hash TEXT NOT NULL"       /* SHA-256 over all the columns above */
    ");"
    "CREATE INDEX events_instance_id ON events(instance_id);"
    "CREATE TABLE studies ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " study_uid TEXT NOT NULL UNIQUE,"
    " patient_id TEXT NOT NULL DEFAULT '',"
    " accession TEXT NOT NULL DEFAULT '',"
    " first_received INTEGER NOT NULL,"
    " last_received INTEGER NOT NULL,"
    " completed INTEGER NOT NULL DEFAULT 0," /* 0 while open */
    " scores TEXT,"
    " triage TEXT CHECK (triage IN ('urgent','routine','normal')),"
    " model_digest TEXT NOT NULL DEFAULT '',"
    " skipped TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE INDEX studies_completed ON studies(completed);",

    /* 2: the report outbox: reports (the exact bytes to send and their delivery state) and
     * report_attempts (one row per try). Identifiers persisted here are reused on every retry. */
    "CREATE TABLE reports ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " study_uid TEXT NOT NULL,"
    " destination TEXT NOT NULL," /* a configured destination's name, or "files" */
    " format TEXT NOT NULL CHECK (format IN ('hl7','fhir')),"
    " content_type TEXT NOT NULL DEFAULT '',"
    " state TEXT NOT NULL CHECK (state IN ('pending','delivered','dead')),"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " idempotency_key TEXT NOT NULL,"
    " control_id TEXT NOT NULL DEFAULT ''," /* HL7 MSH-10 */
    " report_id TEXT NOT NULL DEFAULT '',"  /* FHIR DiagnosticReport identifier value */
    " model_digest TEXT NOT NULL DEFAULT '',"
    " is_correction INTEGER NOT NULL DEFAULT 0,"
    " corrects INTEGER REFERENCES reports(id) ON DELETE RESTRICT,"
    " body TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " next_attempt_at INTEGER NOT NULL,"
    " delivered_at INTEGER,"
    " last_status INTEGER NOT NULL DEFAULT 0," /* HTTP status, or 0 */
    " last_detail TEXT NOT NULL DEFAULT '',"
    " last_response TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE INDEX reports_state_next ON reports(state, next_attempt_at);"
    "CREATE INDEX reports_study_uid ON reports(study_uid);"
    "CREATE TABLE report_attempts ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " report_id INTEGER NOT NULL REFERENCES reports(id) ON DELETE RESTRICT,"
    " at INTEGER NOT NULL,"
    " outcome TEXT NOT NULL CHECK (outcome IN ('delivered','retry','dead')),"
    " status INTEGER NOT NULL DEFAULT 0,"
    " detail TEXT NOT NULL DEFAULT '',"
    " response TEXT NOT NULL DEFAULT ''," /* excerpt */
    " ms REAL NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX report_attempts_report_id ON report_attempts(report_id);",
};

int st__schema_count(void)
{
    return (int)(sizeof(migrations) / sizeof(migrations[0]));
}

const char *st__schema_sql(int version)
{
    if (version < 1 || version > st__schema_count())
        return NULL;
    return migrations[version - 1];
}
