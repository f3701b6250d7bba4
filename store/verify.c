/*
 * verify.c - tamper evidence: the canonical hash of a row and st_verify, which recomputes the
 * event chain, every instance row's hash and every report row's hash.
 *
 * DESIGN
 * - A row's canonical form is each column as a type letter, its length and its bytes (REAL as
 *   %.17g), so that NULL, '' and 0 differ and no value can run into the next one. The writer
 *   hashes the row as stored (read back inside its transaction) and st_verify reads it the same
 *   way, so both sides always agree on the bytes.
 * - Events use AUTOINCREMENT: ids are never reused, so a deleted event leaves a gap, and the
 *   sqlite_sequence high-water mark exposes events deleted from the end of the chain.
 * - Report events carry the hash of the report row after the change, like an instance's events;
 *   the report is found by the "report=ID" that starts the event's detail.
 * - The chain is unkeyed: it finds edits made with the sqlite3 shell, not an attacker who
 *   recomputes every hash after the edit. An external anchor (the last hash logged or sent
 *   elsewhere) would close that gap.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "store_int.h"

cxr_err st__hash_columns(sqlite3_stmt *st, int from, int to, char out[65])
{
    struct cxr_sha256 sh;
    uint8_t md[32];
    char head[64];

    cxr_sha256_init(&sh);
    for (int i = from; i < to; i++) {
        int type = sqlite3_column_type(st, i);
        const void *p = NULL;
        size_t n = 0;
        char num[40];

        switch (type) {
        case SQLITE_INTEGER:
            n = (size_t)snprintf(num, sizeof(num), "%lld", sqlite3_column_int64(st, i));
            p = num;
            break;
        case SQLITE_FLOAT:
            n = (size_t)snprintf(num, sizeof(num), "%.17g", sqlite3_column_double(st, i));
            p = num;
            break;
        case SQLITE_TEXT:
            p = sqlite3_column_text(st, i);
            n = (size_t)sqlite3_column_bytes(st, i);
            break;
        case SQLITE_BLOB:
            p = sqlite3_column_blob(st, i);
            n = (size_t)sqlite3_column_bytes(st, i);
            break;
        default: /* NULL */ break;
        }
        if (n > 0 && !p) /* text or blob that SQLite could not materialise */
            return CXR_ENOMEM;
        (void)snprintf(head, sizeof(head), "%c%zu:", "?IFTBN"[type >= 1 && type <= 5 ? type : 0],
                       n);
        cxr_sha256_update(&sh, head, strlen(head));
        if (n > 0)
            cxr_sha256_update(&sh, p, n);
        cxr_sha256_update(&sh, ";", 1);
    }
    cxr_sha256_final(&sh, md);
    cxr_sha256_hex(md, out);
    return CXR_OK;
}

static cxr_err problem(struct cxr_buf *report, int64_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static cxr_err problem(struct cxr_buf *report, int64_t *n, const char *fmt, ...)
{
    va_list ap;
    cxr_err err;

    (*n)++;
    va_start(ap, fmt);
    err = cxr_buf_vprintf(report, fmt, ap);
    va_end(ap);
    return err ? err : cxr_buf_puts(report, "\n");
}

static cxr_err check_integrity(st_db *db, struct cxr_buf *report, int64_t *n, char *errbuf,
                               size_t errlen)
{
    static const char *what = "verify: integrity check";
    sqlite3_stmt *st;
    int rc;
    cxr_err err = st__prepare(db, "PRAGMA integrity_check", &st, what, errbuf, errlen);
    if (err)
        return err;
    while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        if (t && strcmp(t, "ok") != 0)
            err = problem(report, n, "database: integrity check: %s", t);
    }
    if (!err && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

static cxr_err check_chain(st_db *db, struct cxr_buf *report, int64_t *n, char *errbuf,
                           size_t errlen)
{
    static const char *what = "verify: event chain";
    sqlite3_stmt *st;
    char prev_hash[65] = "", hash[65];
    int64_t prev_id = 0, seq = 0;
    int rc;
    cxr_err err;

    err = st__prepare(db,
                      "SELECT id, instance_id, at, kind, detail, row_hash, prev_hash, hash"
                      " FROM events ORDER BY id",
                      &st, what, errbuf, errlen);
    if (err)
        return err;
    while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        const char *stored = (const char *)sqlite3_column_text(st, 7);
        const char *prev = (const char *)sqlite3_column_text(st, 6);

        err = st__hash_columns(st, 0, 7, hash);
        if (err) {
            err = st__fail(db, err, what, "SHA-256 failed", errbuf, errlen);
            break;
        }
        if (!stored || strcmp(stored, hash) != 0)
            err = problem(report, n, "event %" PRId64 ": hash does not match its content", id);
        if (!err && id != prev_id + 1)
            err = id - prev_id == 2
                      ? problem(report, n,
                                "event %" PRId64 ": missing (chain jumps from %" PRId64
                                " to %" PRId64 ")",
                                prev_id + 1, prev_id, id)
                      : problem(report, n,
                                "events %" PRId64 "-%" PRId64 ": missing (chain jumps from %" PRId64
                                " to %" PRId64 ")",
                                prev_id + 1, id - 1, prev_id, id);
        else if (!err && prev_id > 0 && (!prev || strcmp(prev, prev_hash) != 0))
            err = problem(report, n,
                          "event %" PRId64 ": previous hash does not match event %" PRId64
                          " (chain broken)",
                          id, prev_id);
        else if (!err && prev_id == 0 && (!prev || strspn(prev, "0") != 64 || prev[64]))
            err = problem(report, n, "event %" PRId64 ": first event does not start the chain", id);
        (void)snprintf(prev_hash, sizeof(prev_hash), "%s", stored ? stored : "");
        prev_id = id;
    }
    if (!err && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    if (err)
        return err;

    /* AUTOINCREMENT's high-water mark: events deleted from the end of the chain */
    err = st__prepare(db, "SELECT seq FROM sqlite_sequence WHERE name = 'events'", &st, what,
                      errbuf, errlen);
    if (err)
        return err;
    if (sqlite3_step(st) == SQLITE_ROW)
        seq = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (seq > prev_id)
        err = problem(report, n,
                      "events %" PRId64 "-%" PRId64 ": missing (deleted from the end of the "
                      "chain)",
                      prev_id + 1, seq);
    return err;
}

static cxr_err check_orphans(st_db *db, struct cxr_buf *report, int64_t *n, char *errbuf,
                             size_t errlen)
{
    static const char *what = "verify: missing instances";
    sqlite3_stmt *st;
    int rc;
    cxr_err err = st__prepare(db,
                              "SELECT e.instance_id, min(e.id), count(*) FROM events e"
                              " LEFT JOIN instances i ON i.id = e.instance_id"
                              " WHERE e.instance_id IS NOT NULL AND i.id IS NULL"
                              " GROUP BY e.instance_id ORDER BY e.instance_id",
                              &st, what, errbuf, errlen);
    if (err)
        return err;
    while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW)
        err = problem(report, n,
                      "instance %lld: missing (deleted), but %lld event(s) from event %lld "
                      "record it",
                      sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 2),
                      sqlite3_column_int64(st, 1));
    if (!err && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

/* The current row of st against its newest event: columns [0, ncols) are the row (its id
 * first), column ncols the id of the newest event that records it (NULL: none) and ncols + 1
 * that event's row hash. label names the row in the report ("instance", "report"). */
static cxr_err check_row(st_db *db, sqlite3_stmt *st, int ncols, const char *label,
                         struct cxr_buf *report, int64_t *n, const char *what, char *errbuf,
                         size_t errlen)
{
    char hash[65];
    int64_t id = sqlite3_column_int64(st, 0);
    const char *row_hash = (const char *)sqlite3_column_text(st, ncols + 1);
    cxr_err err = st__hash_columns(st, 0, ncols, hash);

    if (err)
        return st__fail(db, err, what, "SHA-256 failed", errbuf, errlen);
    if (sqlite3_column_type(st, ncols) == SQLITE_NULL)
        return problem(report, n,
                       "%s %" PRId64 ": no event records it (row inserted outside the ledger)",
                       label, id);
    if (!row_hash || strcmp(row_hash, hash) != 0)
        return problem(report, n, "%s %" PRId64 ": content changed after event %lld", label, id,
                       sqlite3_column_int64(st, ncols));
    return CXR_OK;
}

static cxr_err check_rows(st_db *db, struct cxr_buf *report, int64_t *n, char *errbuf,
                          size_t errlen)
{
    static const char *what = "verify: instance rows";
    sqlite3_stmt *st;
    int rc;
    cxr_err err;

    /* INSTANCE_COLS, then the id and row hash of the instance's newest event */
    err = st__prepare(db,
                      "SELECT i.*, e.id, e.row_hash FROM (SELECT " INSTANCE_COLS
                      " FROM instances) i LEFT JOIN events e"
                      " ON e.id = (SELECT max(id) FROM events WHERE instance_id = i.id)"
                      " ORDER BY i.id",
                      &st, what, errbuf, errlen);
    if (err)
        return err;
    while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW)
        err = check_row(db, st, INSTANCE_NCOLS, "instance", report, n, what, errbuf, errlen);
    if (!err && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

/* Each report row against the row hash of its newest event ("report=ID ..." in the detail), and
 * report events whose report is gone. */
static cxr_err check_reports(st_db *db, struct cxr_buf *report, int64_t *n, char *errbuf,
                             size_t errlen)
{
    static const char *what = "verify: report rows";
    sqlite3_stmt *st;
    int rc;
    cxr_err err;

    err = st__prepare(db,
                      "WITH ev AS (SELECT CAST(substr(detail, 8, instr(detail || ' ', ' ') - 8)"
                      " AS INTEGER) AS rid, max(id) AS eid, count(*) AS n FROM events"
                      " WHERE instance_id IS NULL AND kind LIKE 'report.%'"
                      " AND detail LIKE 'report=%' GROUP BY rid)"
                      " SELECT r.*, e.id, e.row_hash, NULL FROM (SELECT " REPORT_COLS
                      " FROM reports) r LEFT JOIN ev ON ev.rid = r.id"
                      " LEFT JOIN events e ON e.id = ev.eid"
                      " UNION ALL SELECT ev.rid, " /* then events of deleted reports */
                      " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
                      " NULL, NULL, NULL, NULL, NULL, NULL, NULL, ev.eid, NULL, ev.n FROM ev"
                      " LEFT JOIN reports x ON x.id = ev.rid WHERE x.id IS NULL ORDER BY 1",
                      &st, what, errbuf, errlen);
    if (err)
        return err;
    while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_type(st, REPORT_NCOLS + 2) != SQLITE_NULL)
            err = problem(report, n,
                          "report %" PRId64 ": missing (deleted), but %lld event(s) up to event "
                          "%lld record it",
                          (int64_t)sqlite3_column_int64(st, 0),
                          sqlite3_column_int64(st, REPORT_NCOLS + 2),
                          sqlite3_column_int64(st, REPORT_NCOLS));
        else
            err = check_row(db, st, REPORT_NCOLS, "report", report, n, what, errbuf, errlen);
    }
    if (!err && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

cxr_err st_verify(st_db *db, struct cxr_buf *report, int64_t *ret_problems, char *errbuf,
                  size_t errlen)
{
    int64_t n = 0;
    cxr_err err;

    if (errbuf && errlen)
        errbuf[0] = '\0';
    /* One read transaction: the daemon may append while we read, and every check must see
     * the same snapshot. */
    err = st__exec(db, "BEGIN", "verify", errbuf, errlen);
    if (err)
        return err;
    err = check_integrity(db, report, &n, errbuf, errlen);
    if (!err)
        err = check_chain(db, report, &n, errbuf, errlen);
    if (!err)
        err = check_orphans(db, report, &n, errbuf, errlen);
    if (!err)
        err = check_rows(db, report, &n, errbuf, errlen);
    if (!err && db->version >= 2) /* the outbox's tables arrived with schema 2 */
        err = check_reports(db, report, &n, errbuf, errlen);
    (void)sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL);
    if (err && errbuf && errlen && !errbuf[0]) /* the report buffer failed, not SQLite */
        (void)st__fail(db, err, "verify", "report buffer full or out of memory", errbuf, errlen);
    if (err == CXR_ENOMEM || err == CXR_ELIMIT)
        return st__fail(db, err, "verify", "report buffer full or out of memory", errbuf, errlen);
    if (err)
        return err;
    *ret_problems = n;
    return CXR_OK;
}
