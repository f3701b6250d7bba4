/*
 * outbox.c - the durable report outbox: reports queued with their study's completion, due
 * reports for the sender, attempts and their state changes, an operator's requeue, and the
 * readers' queries and JSON.
 *
 * DESIGN
 * - A report row is written once with everything needed to send it again (the body, the
 *   idempotency key, the HL7 control id, the FHIR identifier); later writes change only its
 *   delivery state. Each write is one transaction with its hash-chained event, whose row_hash is
 *   the hash of the report row after the change (REPORT_COLS), so st_verify can tell an edited
 *   report from one changed by the ledger.
 * - Event details name the report's id, destination and format and never the study UID or the
 *   receiver's answer, which may carry PHI; those stay in the report and attempt rows.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

static const char *const report_state_names[] = {"pending", "delivered", "dead"};
static const char *const format_names[] = {"hl7", "fhir"};
static const char *const outcome_names[] = {"delivered", "retry", "dead"};

const char *st_report_state_name(enum st_report_state s)
{
    return (unsigned)s < 3 ? report_state_names[s] : "unknown";
}

bool st_report_state_from_name(const char *name, enum st_report_state *ret)
{
    int i = st__name_index(report_state_names, 0, 3, name);
    if (i >= 0)
        *ret = (enum st_report_state)i;
    return i >= 0;
}

const char *st_report_format_name(enum st_report_format f)
{
    return (unsigned)f < 2 ? format_names[f] : "unknown";
}

bool st_report_format_from_name(const char *name, enum st_report_format *ret)
{
    int i = st__name_index(format_names, 0, 2, name);
    if (i >= 0)
        *ret = (enum st_report_format)i;
    return i >= 0;
}

const char *st_attempt_outcome_name(enum st_attempt_outcome o)
{
    return (unsigned)o < 3 ? outcome_names[o] : "unknown";
}

void st_report_done(struct st_report *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
}

/* ---- rows ---- */

/* Reads a REPORT_COLS row; the body is copied only when with_body. */
static cxr_err read_report(sqlite3_stmt *st, bool with_body, struct st_report *r)
{
    memset(r, 0, sizeof(*r));
    r->id = sqlite3_column_int64(st, 0);
    st__copy_str(r->study_uid, sizeof(r->study_uid), st__col_text(st, 1));
    st__copy_str(r->destination, sizeof(r->destination), st__col_text(st, 2));
    if (!st_report_format_from_name(st__col_text(st, 3), &r->format))
        r->format = ST_FORMAT_HL7;
    st__copy_str(r->content_type, sizeof(r->content_type), st__col_text(st, 4));
    if (!st_report_state_from_name(st__col_text(st, 5), &r->state))
        r->state = ST_REPORT_PENDING;
    r->attempts = sqlite3_column_int(st, 6);
    st__copy_str(r->idempotency_key, sizeof(r->idempotency_key), st__col_text(st, 7));
    st__copy_str(r->control_id, sizeof(r->control_id), st__col_text(st, 8));
    st__copy_str(r->report_id, sizeof(r->report_id), st__col_text(st, 9));
    st__copy_str(r->model_digest, sizeof(r->model_digest), st__col_text(st, 10));
    r->is_correction = sqlite3_column_int(st, 11) != 0;
    r->corrects = sqlite3_column_int64(st, 12);
    r->created_at_ms = sqlite3_column_int64(st, 14);
    r->next_attempt_at_ms = sqlite3_column_int64(st, 15);
    r->delivered_at_ms = sqlite3_column_int64(st, 16);
    r->last_status = sqlite3_column_int(st, 17);
    st__copy_str(r->last_detail, sizeof(r->last_detail), st__col_text(st, 18));
    st__copy_str(r->last_response, sizeof(r->last_response), st__col_text(st, 19));
    if (with_body) {
        const char *b = st__col_text(st, 13);
        size_t n = (size_t)sqlite3_column_bytes(st, 13);
        r->body = malloc(n + 1);
        if (!r->body)
            return CXR_ENOMEM;
        memcpy(r->body, b, n);
        r->body[n] = '\0';
        r->body_len = n;
    }
    return CXR_OK;
}

/* The hash of report id's row as it is now (inside the caller's transaction). */
static cxr_err report_row_hash(st_db *db, int64_t id, char out[65], char *errbuf, size_t errlen)
{
    return st__row_hash(db, "SELECT " REPORT_COLS " FROM reports WHERE id = ?", REPORT_NCOLS, id,
                        "hash report row", "no such report", out, errbuf, errlen);
}

/* Appends kind for report id: "report=ID destination=D format=F" and extra; the row hash of the
 * report after the change. */
static cxr_err report_event(st_db *db, int64_t id, int64_t at_ms, const char *kind,
                            const char *destination, enum st_report_format format,
                            const char *extra, char *errbuf, size_t errlen)
{
    char row[65], detail[256];
    cxr_err err = report_row_hash(db, id, row, errbuf, errlen);
    if (err)
        return err;
    (void)snprintf(detail, sizeof(detail), "report=%" PRId64 " destination=%s format=%s%s%s", id,
                   destination, st_report_format_name(format), extra && *extra ? " " : "",
                   extra ? extra : "");
    return st__append_event_row(db, 0, row, at_ms, kind, detail, errbuf, errlen);
}

static cxr_err check_new(st_db *db, const struct st_report_new *n, const char *what, char *errbuf,
                         size_t errlen)
{
    const char *bad = NULL;
    if (!n->destination[0])
        bad = "a report has no destination";
    else if ((unsigned)n->format > ST_FORMAT_FHIR)
        bad = "a report has an unknown format";
    else if (!n->idempotency_key[0])
        bad = "a report has no idempotency key";
    else if (n->format == ST_FORMAT_HL7 && !n->control_id[0])
        bad = "an HL7 report has no control id (MSH-10)";
    else if (!n->body || !n->body_len)
        bad = "a report has no body";
    else if (n->body_len > (size_t)INT32_MAX)
        bad = "a report body is too large";
    else if (n->corrects < 0)
        bad = "a report corrects an invalid id";
    return bad ? st__fail(db, CXR_EINVAL, what, bad, errbuf, errlen) : CXR_OK;
}

cxr_err st__reports_insert(st_db *db, const char *study_uid, int64_t now_ms,
                           const struct st_report_new *reports, int n, char *errbuf, size_t errlen)
{
    static const char *what = "queue report";
    sqlite3_stmt *st = NULL;
    cxr_err err = CXR_OK;

    for (int i = 0; !err && i < n; i++) {
        const struct st_report_new *r = &reports[i];
        char extra[64] = "";
        int64_t id;

        err = check_new(db, r, what, errbuf, errlen);
        if (err)
            break;
        err = st__prepare(db,
                          "INSERT INTO reports (study_uid, destination, format, content_type,"
                          " state, attempts, idempotency_key, control_id, report_id,"
                          " model_digest, is_correction, corrects, body, created_at,"
                          " next_attempt_at) VALUES (?,?,?,?,'pending',0,?,?,?,?,?,?,?,?,?)",
                          &st, what, errbuf, errlen);
        if (err)
            break;
        st__bind_text(st, 1, study_uid);
        st__bind_text(st, 2, r->destination);
        st__bind_text(st, 3, st_report_format_name(r->format));
        st__bind_text(st, 4, r->content_type);
        st__bind_text(st, 5, r->idempotency_key);
        st__bind_text(st, 6, r->control_id);
        st__bind_text(st, 7, r->report_id);
        st__bind_text(st, 8, r->model_digest);
        (void)sqlite3_bind_int(st, 9, r->is_correction ? 1 : 0);
        if (r->corrects > 0)
            (void)sqlite3_bind_int64(st, 10, r->corrects);
        (void)sqlite3_bind_text(st, 11, r->body, (int)r->body_len, SQLITE_TRANSIENT);
        (void)sqlite3_bind_int64(st, 12, now_ms);
        (void)sqlite3_bind_int64(st, 13, now_ms);
        err = st__step_done(db, st, what, errbuf, errlen);
        if (err)
            break;
        sqlite3_finalize(st);
        st = NULL;
        id = sqlite3_last_insert_rowid(db->h);
        if (r->corrects > 0)
            (void)snprintf(extra, sizeof(extra), "corrects=%" PRId64, r->corrects);
        else if (r->is_correction)
            (void)snprintf(extra, sizeof(extra), "correction");
        err = report_event(db, id, now_ms, "report.queued", r->destination, r->format, extra,
                           errbuf, errlen);
    }
    sqlite3_finalize(st);
    return err;
}

/* ---- the sender's writes ---- */

/* Cuts s to at most max - 1 bytes without splitting a UTF-8 sequence; returns the length. */
static size_t utf8_cut(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n < max)
        return n;
    n = max - 1;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* Binds s ("" for NULL) cut to at most max - 1 bytes on a UTF-8 boundary. */
static void bind_cut(sqlite3_stmt *st, int i, const char *s, size_t max)
{
    (void)sqlite3_bind_text(st, i, s ? s : "", (int)utf8_cut(s, max), SQLITE_TRANSIENT);
}

/* Reads report id (its body only when with_body) into r, inside the caller's transaction if
 * any; r may be changed on failure too. */
static cxr_err select_report(st_db *db, int64_t id, bool with_body, struct st_report *r,
                             const char *what, char *errbuf, size_t errlen)
{
    sqlite3_stmt *st;
    int rc;
    cxr_err err = st__prepare(db, "SELECT " REPORT_COLS " FROM reports WHERE id = ?", &st, what,
                              errbuf, errlen);
    if (err)
        return err;
    (void)sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        err = read_report(st, with_body, r);
        if (err) {
            err = st__fail(db, err, what, "out of memory", errbuf, errlen);
            st_report_done(r);
        }
    } else if (rc == SQLITE_DONE) {
        char text[64];
        (void)snprintf(text, sizeof(text), "no report %" PRId64, id);
        err = st__fail(db, CXR_ENOTFOUND, what, text, errbuf, errlen);
    } else {
        err = st__dberr(db, what, errbuf, errlen);
    }
    sqlite3_finalize(st);
    return err;
}

/* Runs an UPDATE of one report row (bound by the caller) and checks that it changed a row. */
static cxr_err step_update(st_db *db, sqlite3_stmt *st, const char *what, char *errbuf,
                           size_t errlen)
{
    cxr_err err = st__step_done(db, st, what, errbuf, errlen);
    if (err)
        return err;
    if (sqlite3_changes(db->h) != 1)
        return st__fail(db, CXR_EDB, what, "the report row did not change", errbuf, errlen);
    return CXR_OK;
}

static cxr_err insert_attempt(st_db *db, int64_t id, int64_t at_ms, enum st_attempt_outcome outcome,
                              int status, const char *detail, const char *response, double ms,
                              const char *what, char *errbuf, size_t errlen)
{
    sqlite3_stmt *st;
    cxr_err err = st__prepare(db,
                              "INSERT INTO report_attempts (report_id, at, outcome, status, detail,"
                              " response, ms) VALUES (?,?,?,?,?,?,?)",
                              &st, what, errbuf, errlen);
    if (err)
        return err;
    (void)sqlite3_bind_int64(st, 1, id);
    (void)sqlite3_bind_int64(st, 2, at_ms);
    st__bind_text(st, 3, st_attempt_outcome_name(outcome));
    (void)sqlite3_bind_int(st, 4, status);
    bind_cut(st, 5, detail, ST_TEXT_MAX);
    bind_cut(st, 6, response, ST_RESPONSE_MAX);
    (void)sqlite3_bind_double(st, 7, ms);
    err = st__step_done(db, st, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

cxr_err st_report_attempt(st_db *db, int64_t id, int64_t at_ms, enum st_attempt_outcome outcome,
                          int status, const char *detail, const char *response, double ms,
                          int64_t next_attempt_ms, char *errbuf, size_t errlen)
{
    static const char *what = "record report attempt";
    sqlite3_stmt *st = NULL;
    struct st_report *r;
    char extra[96];
    cxr_err err;

    if ((unsigned)outcome > ST_ATTEMPT_DEAD)
        return st__fail(db, CXR_EINVAL, what, "unknown outcome", errbuf, errlen);
    r = calloc(1, sizeof(*r));
    if (!r)
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    err = st__begin(db, what, errbuf, errlen);
    if (err)
        goto out_free;
    err = select_report(db, id, false, r, what, errbuf, errlen);
    if (err)
        goto out_end;
    if (r->state != ST_REPORT_PENDING) {
        char text[96];
        (void)snprintf(text, sizeof(text), "report %" PRId64 " is %s, not pending", id,
                       st_report_state_name(r->state));
        err = st__fail(db, CXR_EINVAL, what, text, errbuf, errlen);
        goto out_end;
    }
    err =
        insert_attempt(db, id, at_ms, outcome, status, detail, response, ms, what, errbuf, errlen);
    if (err)
        goto out_end;
    err =
        st__prepare(db,
                    "UPDATE reports SET state = ?1,"
                    " attempts = attempts + (?1 != 'delivered'),"
                    " delivered_at = CASE WHEN ?1 = 'delivered' THEN ?2 END,"
                    " next_attempt_at = CASE WHEN ?1 = 'pending' THEN ?3 ELSE next_attempt_at END,"
                    " last_status = ?4, last_detail = ?5, last_response = ?6 WHERE id = ?7",
                    &st, what, errbuf, errlen);
    if (err)
        goto out_end;
    st__bind_text(st, 1,
                  outcome == ST_ATTEMPT_DELIVERED ? "delivered"
                  : outcome == ST_ATTEMPT_RETRY   ? "pending"
                                                  : "dead");
    (void)sqlite3_bind_int64(st, 2, at_ms);
    (void)sqlite3_bind_int64(st, 3, next_attempt_ms);
    (void)sqlite3_bind_int(st, 4, status);
    bind_cut(st, 5, detail, ST_TEXT_MAX);
    bind_cut(st, 6, response, ST_RESPONSE_MAX);
    (void)sqlite3_bind_int64(st, 7, id);
    err = step_update(db, st, what, errbuf, errlen);
    if (err)
        goto out_end;
    if (outcome == ST_ATTEMPT_RETRY)
        (void)snprintf(extra, sizeof(extra), "attempt=%d status=%d next_attempt_at=%" PRId64,
                       r->attempts + 1, status, next_attempt_ms);
    else
        (void)snprintf(extra, sizeof(extra), "attempt=%d status=%d",
                       r->attempts + (outcome == ST_ATTEMPT_DEAD), status);
    err = report_event(db, id, at_ms,
                       outcome == ST_ATTEMPT_DELIVERED ? "report.delivered"
                       : outcome == ST_ATTEMPT_RETRY   ? "report.retry"
                                                       : "report.dead",
                       r->destination, r->format, extra, errbuf, errlen);
out_end:
    err = st__end(db, st, err, what, errbuf, errlen);
out_free:
    free(r);
    return err;
}

cxr_err st_report_requeue(st_db *db, int64_t id, int64_t now_ms, char *errbuf, size_t errlen)
{
    static const char *what = "requeue report";
    sqlite3_stmt *st = NULL;
    struct st_report *r = calloc(1, sizeof(*r));
    char extra[64];
    cxr_err err;

    if (!r)
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    err = st__begin(db, what, errbuf, errlen);
    if (err)
        goto out_free;
    err = select_report(db, id, false, r, what, errbuf, errlen);
    if (err)
        goto out_end;
    if (r->state != ST_REPORT_DEAD) {
        char text[96];
        (void)snprintf(text, sizeof(text), "report %" PRId64 " is %s, not dead", id,
                       st_report_state_name(r->state));
        err = st__fail(db, CXR_EINVAL, what, text, errbuf, errlen);
        goto out_end;
    }
    /* identifiers and the attempt count stay: only the delivery state moves */
    err = st__prepare(db,
                      "UPDATE reports SET state = 'pending', next_attempt_at = ?"
                      " WHERE id = ? AND state = 'dead'",
                      &st, what, errbuf, errlen);
    if (err)
        goto out_end;
    (void)sqlite3_bind_int64(st, 1, now_ms);
    (void)sqlite3_bind_int64(st, 2, id);
    err = step_update(db, st, what, errbuf, errlen);
    if (err)
        goto out_end;
    (void)snprintf(extra, sizeof(extra), "attempts=%d", r->attempts);
    err = report_event(db, id, now_ms, "report.requeued", r->destination, r->format, extra, errbuf,
                       errlen);
out_end:
    err = st__end(db, st, err, what, errbuf, errlen);
out_free:
    free(r);
    return err;
}

/* ---- readers ---- */

/* Steps st (REPORT_COLS rows) and calls fn with each; bodies only when with_body. */
static cxr_err each_report(st_db *db, sqlite3_stmt *st, bool with_body,
                           bool (*fn)(void *user, const struct st_report *r), void *user,
                           const char *what, char *errbuf, size_t errlen)
{
    struct st_report *r = calloc(1, sizeof(*r));
    cxr_err err = CXR_OK;
    int rc;

    if (!r)
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        bool more;
        err = read_report(st, with_body, r);
        if (err) {
            err = st__fail(db, err, what, "out of memory", errbuf, errlen);
            break;
        }
        more = fn(user, r);
        st_report_done(r);
        if (!more)
            break;
    }
    if (!err && rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    free(r);
    return err;
}

cxr_err st_outbox_due(st_db *db, int64_t now_ms, int limit,
                      bool (*fn)(void *user, const struct st_report *r), void *user, char *errbuf,
                      size_t errlen)
{
    static const char *what = "list due reports";
    sqlite3_stmt *st;
    cxr_err err = st__prepare(db,
                              "SELECT " REPORT_COLS " FROM reports WHERE state = 'pending'"
                              " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                              &st, what, errbuf, errlen);
    if (err)
        return err;
    (void)sqlite3_bind_int64(st, 1, now_ms);
    (void)sqlite3_bind_int(st, 2, limit > 0 ? limit : -1);
    err = each_report(db, st, true, fn, user, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

/* fn for a single row: copies it into user (a struct st_report), body and all. */
static bool take_one(void *user, const struct st_report *r)
{
    struct st_report *ret = user;
    *ret = *r;
    return false;
}

cxr_err st_report_get(st_db *db, int64_t id, bool with_body, struct st_report *ret, char *errbuf,
                      size_t errlen)
{
    static const char *what = "get report";
    struct st_report *r = calloc(1, sizeof(*r));
    cxr_err err;

    if (!r)
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    err = select_report(db, id, with_body, r, what, errbuf, errlen);
    if (!err)
        *ret = *r; /* the body, if any, now belongs to ret */
    free(r);
    return err;
}

cxr_err st_report_latest(st_db *db, const char *study_uid, const char *destination,
                         enum st_report_format format, struct st_report *ret, char *errbuf,
                         size_t errlen)
{
    static const char *what = "find latest report";
    sqlite3_stmt *st;
    struct st_report *r = calloc(1, sizeof(*r));
    cxr_err err;

    if (!r)
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    r->id = 0;
    err = st__prepare(db,
                      "SELECT " REPORT_COLS " FROM reports WHERE study_uid = ? AND destination = ?"
                      " AND format = ? ORDER BY id DESC LIMIT 1",
                      &st, what, errbuf, errlen);
    if (err) {
        free(r);
        return err;
    }
    st__bind_text(st, 1, study_uid);
    st__bind_text(st, 2, destination);
    st__bind_text(st, 3, st_report_format_name(format));
    err = each_report(db, st, false, take_one, r, what, errbuf, errlen);
    sqlite3_finalize(st);
    if (!err && r->id == 0)
        err = st__fail(db, CXR_ENOTFOUND, what, "no report of this study for the destination",
                       errbuf, errlen);
    if (!err)
        *ret = *r;
    free(r);
    return err;
}

cxr_err st_report_list(st_db *db, const struct st_report_filter *f,
                       bool (*fn)(void *user, const struct st_report *r), void *user, char *errbuf,
                       size_t errlen)
{
    static const char *what = "list reports";
    sqlite3_stmt *st;
    cxr_err err;

    /* NULL parameters do not filter: one statement for every combination */
    err = st__prepare(db,
                      "SELECT " REPORT_COLS " FROM reports WHERE (?1 IS NULL OR state = ?1)"
                      " AND (?2 IS NULL OR study_uid = ?2) AND (?3 IS NULL OR destination = ?3)"
                      " AND (?4 IS NULL OR id < ?4) ORDER BY id DESC LIMIT ?5",
                      &st, what, errbuf, errlen);
    if (err)
        return err;
    if (f->has_state)
        st__bind_text(st, 1, st_report_state_name(f->state));
    if (f->study_uid[0])
        st__bind_text(st, 2, f->study_uid);
    if (f->destination[0])
        st__bind_text(st, 3, f->destination);
    if (f->after_id > 0)
        (void)sqlite3_bind_int64(st, 4, f->after_id);
    (void)sqlite3_bind_int(st, 5, f->limit > 0 ? f->limit : -1);
    err = each_report(db, st, false, fn, user, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

cxr_err st_report_attempts(st_db *db, int64_t id,
                           bool (*fn)(void *user, const struct st_report_attempt *a), void *user,
                           char *errbuf, size_t errlen)
{
    static const char *what = "list report attempts";
    sqlite3_stmt *st;
    struct st_report_attempt *a;
    int rc;
    cxr_err err;

    a = malloc(sizeof(*a));
    if (!a)
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    err = st__prepare(db,
                      "SELECT id, report_id, at, outcome, status, detail, response, ms"
                      " FROM report_attempts WHERE report_id = ? ORDER BY id",
                      &st, what, errbuf, errlen);
    if (err) {
        free(a);
        return err;
    }
    (void)sqlite3_bind_int64(st, 1, id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *o = st__col_text(st, 3);
        memset(a, 0, sizeof(*a));
        a->id = sqlite3_column_int64(st, 0);
        a->report_id = sqlite3_column_int64(st, 1);
        a->at_ms = sqlite3_column_int64(st, 2);
        int k = st__name_index(outcome_names, 0, 3, o);
        a->outcome = k < 0 ? ST_ATTEMPT_DEAD : (enum st_attempt_outcome)k;
        a->status = sqlite3_column_int(st, 4);
        st__copy_str(a->detail, sizeof(a->detail), st__col_text(st, 5));
        st__copy_str(a->response, sizeof(a->response), st__col_text(st, 6));
        a->ms = sqlite3_column_double(st, 7);
        if (!fn(user, a))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    free(a);
    return err;
}

cxr_err st_outbox_counts(st_db *db, int64_t *ret_pending, int64_t *ret_delivered, int64_t *ret_dead,
                         char *errbuf, size_t errlen)
{
    static const char *what = "count reports";
    sqlite3_stmt *st;
    int64_t n[3] = {0, 0, 0};
    int rc;
    cxr_err err = st__prepare(db, "SELECT state, count(*) FROM reports GROUP BY state", &st, what,
                              errbuf, errlen);
    if (err)
        return err;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        enum st_report_state s;
        if (st_report_state_from_name(st__col_text(st, 0), &s))
            n[s] += sqlite3_column_int64(st, 1);
    }
    if (rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    if (err)
        return err;
    *ret_pending = n[ST_REPORT_PENDING];
    *ret_delivered = n[ST_REPORT_DELIVERED];
    *ret_dead = n[ST_REPORT_DEAD];
    return CXR_OK;
}

/* ---- JSON ---- */

static int set_time(json_t *o, const char *key, int64_t ms)
{
    char when[40];
    if (ms <= 0)
        return json_object_set_new(o, key, json_null());
    st_format_time(ms, when, sizeof(when));
    return json_object_set_new(o, key, json_string(when));
}

/* A JSON string of s[0..n); jansson refuses invalid UTF-8 (a receiver's excerpt may hold some),
 * so such text is kept with every non-ASCII byte shown as '?'. */
static json_t *safe_string(const char *s, size_t n)
{
    json_t *v = json_stringn(s, n);
    char *copy;
    if (v)
        return v;
    copy = malloc(n + 1);
    if (!copy)
        return NULL;
    for (size_t i = 0; i < n; i++)
        copy[i] = (unsigned char)s[i] >= 0x80 || s[i] == '\0' ? '?' : s[i];
    copy[n] = '\0';
    v = json_stringn(copy, n);
    free(copy);
    return v;
}

static int set_text(json_t *o, const char *key, const char *value)
{
    const char *s = value ? value : "";
    return json_object_set_new(o, key, safe_string(s, strlen(s)));
}

cxr_err st_report_json(const struct st_report *r, struct cxr_buf *out)
{
    json_t *o = json_object();
    int bad = 0;

    if (!o)
        return CXR_ENOMEM;
    bad |= json_object_set_new(o, "id", json_integer(r->id));
    bad |= set_text(o, "study_instance_uid", r->study_uid);
    bad |= set_text(o, "destination", r->destination);
    bad |= set_text(o, "format", st_report_format_name(r->format));
    bad |= set_text(o, "content_type", r->content_type);
    bad |= set_text(o, "state", st_report_state_name(r->state));
    bad |= json_object_set_new(o, "attempts", json_integer(r->attempts));
    bad |= set_text(o, "idempotency_key", r->idempotency_key);
    bad |= set_text(o, "control_id", r->control_id);
    bad |= set_text(o, "report_id", r->report_id);
    bad |= set_text(o, "model_digest", r->model_digest);
    bad |= json_object_set_new(o, "is_correction", json_boolean(r->is_correction));
    bad |= json_object_set_new(o, "corrects",
                               r->corrects > 0 ? json_integer(r->corrects) : json_null());
    bad |= set_time(o, "created_at", r->created_at_ms);
    bad |= set_time(o, "next_attempt_at", r->next_attempt_at_ms);
    bad |= set_time(o, "delivered_at", r->delivered_at_ms);
    bad |= json_object_set_new(o, "last_status", json_integer(r->last_status));
    bad |= set_text(o, "last_detail", r->last_detail);
    bad |= set_text(o, "last_response", r->last_response);
    if (r->body)
        bad |= json_object_set_new(o, "body", safe_string(r->body, r->body_len));
    return st__json_put(o, bad, JSON_COMPACT | JSON_PRESERVE_ORDER, out);
}

cxr_err st_report_attempt_json(const struct st_report_attempt *a, struct cxr_buf *out)
{
    json_t *o = json_object();
    int bad = 0;

    if (!o)
        return CXR_ENOMEM;
    bad |= json_object_set_new(o, "id", json_integer(a->id));
    bad |= json_object_set_new(o, "report", json_integer(a->report_id));
    bad |= set_time(o, "at", a->at_ms);
    bad |= set_text(o, "outcome", st_attempt_outcome_name(a->outcome));
    bad |= json_object_set_new(o, "status", json_integer(a->status));
    bad |= set_text(o, "detail", a->detail);
    bad |= set_text(o, "response", a->response);
    bad |= json_object_set_new(o, "ms", json_real(a->ms));
    return st__json_put(o, bad, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15), out);
}
