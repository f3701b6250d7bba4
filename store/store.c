/*
 * store.c - the audit ledger: opening and migrating the SQLite file, the writer's transactions
 * (instances, events, studies, retention) and the readers' queries.
 *
 * DESIGN
 * - Statements are prepared per call: the daemon writes a few rows per instance, far below the
 *   cost of a prepare, and it keeps the handle free of cached state.
 * - Every write is one BEGIN IMMEDIATE ... COMMIT that also appends its event to the hash chain
 *   (append_event), so a row and the event that explains it are committed together.
 * - Scores and timings are JSON text (jansson) so that the class list follows the model; the
 *   top class and score are columns of their own for filtering and statistics.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_int.h"

#define BUSY_TIMEOUT_MS 5000
#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"

/* ---- names ---- */

static const char *const state_names[] = {"received", "classified", "skipped", "failed"};
static const char *const triage_names[] = {NULL, "urgent", "routine", "normal"};
static const char *const stage_names[] = {"receive",    "queue", "decode",
                                          "preprocess", "infer", "commit"};

const char *st_state_name(enum st_state s)
{
    return (unsigned)s < 4 ? state_names[s] : "unknown";
}

bool st_state_from_name(const char *name, enum st_state *ret)
{
    int i = st__name_index(state_names, 0, 4, name);
    if (i >= 0)
        *ret = (enum st_state)i;
    return i >= 0;
}

const char *st_triage_name(enum st_triage t)
{
    return (unsigned)t < 4 ? triage_names[t] : NULL;
}

bool st_triage_from_name(const char *name, enum st_triage *ret)
{
    int i = st__name_index(triage_names, 1, 4, name);
    if (i >= 0)
        *ret = (enum st_triage)i;
    return i >= 0;
}

const char *st_stage_name(enum st_stage s)
{
    return (unsigned)s < ST_T__COUNT ? stage_names[s] : "unknown";
}

/* ---- errors and statements ---- */

static void put_err(char *errbuf, size_t errlen, const char *path, const char *what,
                    const char *text)
{
    if (errbuf && errlen)
        (void)snprintf(errbuf, errlen, "%s: %s: %s", path, what, text);
}

cxr_err st__fail(const st_db *db, cxr_err err, const char *what, const char *text, char *errbuf,
                 size_t errlen)
{
    put_err(errbuf, errlen, db->path, what, text);
    return err;
}

cxr_err st__dberr(st_db *db, const char *what, char *errbuf, size_t errlen)
{
    int rc = sqlite3_errcode(db->h);
    put_err(errbuf, errlen, db->path, what, sqlite3_errmsg(db->h));
    switch (rc) {
    case SQLITE_NOMEM: return CXR_ENOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return CXR_EBUSY;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN: return CXR_EIO;
    default: return CXR_EDB;
    }
}

cxr_err st__exec(st_db *db, const char *sql, const char *what, char *errbuf, size_t errlen)
{
    if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) != SQLITE_OK)
        return st__dberr(db, what, errbuf, errlen);
    return CXR_OK;
}

cxr_err st__prepare(st_db *db, const char *sql, sqlite3_stmt **ret, const char *what, char *errbuf,
                    size_t errlen)
{
    if (sqlite3_prepare_v2(db->h, sql, -1, ret, NULL) != SQLITE_OK) {
        *ret = NULL;
        return st__dberr(db, what, errbuf, errlen);
    }
    return CXR_OK;
}

cxr_err st__begin(st_db *db, const char *what, char *errbuf, size_t errlen)
{
    if (db->mode == ST_OPEN_READ)
        return st__fail(db, CXR_EINVAL, what, "database opened read-only", errbuf, errlen);
    return st__exec(db, "BEGIN IMMEDIATE", what, errbuf, errlen);
}

cxr_err st__commit(st_db *db, const char *what, char *errbuf, size_t errlen)
{
    return st__exec(db, "COMMIT", what, errbuf, errlen);
}

void st__rollback(st_db *db)
{
    if (!sqlite3_get_autocommit(db->h))
        (void)sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

cxr_err st__end(st_db *db, sqlite3_stmt *st, cxr_err err, const char *what, char *errbuf,
                size_t errlen)
{
    if (!err)
        err = st__commit(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    if (err)
        st__rollback(db);
    return err;
}

cxr_err st__step_done(st_db *db, sqlite3_stmt *st, const char *what, char *errbuf, size_t errlen)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        return st__dberr(db, what, errbuf, errlen);
    return CXR_OK;
}

int st__name_index(const char *const *names, int from, int n, const char *name)
{
    for (int i = from; name && i < n; i++)
        if (names[i] && !strcmp(name, names[i]))
            return i;
    return -1;
}

/* Bounded copy that always terminates (truncates silently: columns have their own limits). */
void st__copy_str(char *dst, size_t len, const char *src)
{
    size_t n = src ? strnlen(src, len - 1) : 0;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

const char *st__col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

void st__bind_text(sqlite3_stmt *st, int i, const char *s)
{
    (void)sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_TRANSIENT);
}

/* ---- open, migrate, close ---- */

static cxr_err migrate(st_db *db, char *errbuf, size_t errlen)
{
    int known = st__schema_count();
    char what[64], sql[64];
    cxr_err err;

    for (int v = db->version + 1; v <= known; v++) {
        (void)snprintf(what, sizeof(what), "migration to schema %d", v);
        err = st__exec(db, "BEGIN IMMEDIATE", what, errbuf, errlen);
        if (err)
            return err;
        err = st__exec(db, st__schema_sql(v), what, errbuf, errlen);
        if (!err) {
            (void)snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v);
            err = st__exec(db, sql, what, errbuf, errlen);
        }
        if (!err)
            err = st__commit(db, what, errbuf, errlen);
        if (err) {
            st__rollback(db);
            return err;
        }
        db->version = v;
    }
    return CXR_OK;
}

static cxr_err read_version(st_db *db, char *errbuf, size_t errlen)
{
    sqlite3_stmt *st;
    cxr_err err =
        st__prepare(db, "PRAGMA user_version", &st, "read schema version", errbuf, errlen);
    if (err)
        return err;
    if (sqlite3_step(st) != SQLITE_ROW) {
        err = st__dberr(db, "read schema version", errbuf, errlen);
        sqlite3_finalize(st);
        return err;
    }
    db->version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return CXR_OK;
}

/* Creates the file 0600 before SQLite sees it: SQLite gives -wal and -shm the database file's
 * permissions, so they are 0600 too, whatever the process umask. */
static cxr_err create_file(const st_db *db, char *errbuf, size_t errlen)
{
    int fd = open(db->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return st__fail(db, errno == ENOENT ? CXR_ENOTFOUND : CXR_EIO, "create", strerror(errno),
                        errbuf, errlen);
    (void)close(fd);
    return CXR_OK;
}

/* journal_mode answers with the mode in effect: a file system without shared memory keeps the
 * old one silently, and readers beside the writer would then block. */
static cxr_err set_wal(st_db *db, char *errbuf, size_t errlen)
{
    sqlite3_stmt *st;
    cxr_err err = st__prepare(db, "PRAGMA journal_mode = WAL", &st, "enable WAL", errbuf, errlen);
    if (err)
        return err;
    if (sqlite3_step(st) != SQLITE_ROW)
        err = st__dberr(db, "enable WAL", errbuf, errlen);
    else if (sqlite3_stricmp(st__col_text(st, 0), "wal") != 0)
        err =
            st__fail(db, CXR_EDB, "enable WAL", "the file system refused WAL mode", errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

cxr_err st_open(const char *path, int mode, st_db **ret_db, char *errbuf, size_t errlen)
{
    st_db *db;
    struct stat sb;
    cxr_err err;
    int flags;

    if (!path || !*path || strlen(path) >= sizeof(db->path)) {
        put_err(errbuf, errlen, path ? path : "(null)", "open", "invalid path");
        return CXR_EINVAL;
    }
    db = calloc(1, sizeof(*db));
    if (!db) {
        put_err(errbuf, errlen, path, "open", "out of memory");
        return CXR_ENOMEM;
    }
    st__copy_str(db->path, sizeof(db->path), path);
    db->mode = mode == ST_OPEN_WRITE || mode == ST_OPEN_UPDATE ? mode : ST_OPEN_READ;

    if (db->mode == ST_OPEN_WRITE) {
        err = create_file(db, errbuf, errlen);
        if (err)
            goto out_free;
        flags = SQLITE_OPEN_READWRITE;
    } else {
        if (stat(path, &sb) != 0) {
            err = st__fail(db, errno == ENOENT ? CXR_ENOTFOUND : CXR_EIO, "open",
                           errno == ENOENT ? "no such file (has the daemon run yet?)"
                                           : strerror(errno),
                           errbuf, errlen);
            goto out_free;
        }
        flags = db->mode == ST_OPEN_UPDATE ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY;
    }
    if (sqlite3_open_v2(path, &db->h, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        err = db->h ? st__dberr(db, "open", errbuf, errlen)
                    : st__fail(db, CXR_ENOMEM, "open", "out of memory", errbuf, errlen);
        goto out_close;
    }
    (void)sqlite3_extended_result_codes(db->h, 0);
    (void)sqlite3_busy_timeout(db->h, BUSY_TIMEOUT_MS);
    err = st__exec(db, "PRAGMA foreign_keys = ON", "enable foreign keys", errbuf, errlen);
    if (err)
        goto out_close;
    if (db->mode != ST_OPEN_READ) {
        err = set_wal(db, errbuf, errlen);
        if (!err) /* a committed row is on disk: fsync at every commit */
            err = st__exec(db, "PRAGMA synchronous = FULL", "set synchronous", errbuf, errlen);
        if (err)
            goto out_close;
    } else {
        err = st__exec(db, "PRAGMA query_only = ON", "set query_only", errbuf, errlen);
        if (err)
            goto out_close;
    }
    err = read_version(db, errbuf, errlen);
    if (err)
        goto out_close;
    if (db->version > st__schema_count()) {
        char text[160];
        (void)snprintf(text, sizeof(text),
                       "schema version %d is newer than this build knows (%d): "
                       "use the cxrtriage that wrote it",
                       db->version, st__schema_count());
        err = st__fail(db, CXR_EUNSUPPORTED, "open", text, errbuf, errlen);
        goto out_close;
    }
    if (db->mode == ST_OPEN_WRITE) {
        err = migrate(db, errbuf, errlen);
        if (err)
            goto out_close;
    } else if (db->version == 0) {
        err =
            st__fail(db, CXR_EDB, "open", "not an audit ledger (schema version 0)", errbuf, errlen);
        goto out_close;
    } else if (db->mode == ST_OPEN_UPDATE && db->version < st__schema_count()) {
        char text[160];
        (void)snprintf(text, sizeof(text),
                       "schema version %d is older than this build's (%d): start the daemon "
                       "once to migrate it",
                       db->version, st__schema_count());
        err = st__fail(db, CXR_EUNSUPPORTED, "open", text, errbuf, errlen);
        goto out_close;
    }
    *ret_db = db;
    return CXR_OK;

out_close:
    sqlite3_close(db->h);
out_free:
    free(db);
    return err;
}

void st_close(st_db *db)
{
    if (!db)
        return;
    sqlite3_close(db->h);
    free(db);
}

int st_schema_version(const st_db *db)
{
    return db->version;
}

/* ---- hash chain ---- */

cxr_err st__row_hash(st_db *db, const char *sql, int ncols, int64_t id, const char *what,
                     const char *missing, char out[65], char *errbuf, size_t errlen)
{
    sqlite3_stmt *st;
    cxr_err err = st__prepare(db, sql, &st, what, errbuf, errlen);
    if (err)
        return err;
    (void)sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW)
        err = st__hash_columns(st, 0, ncols, out)
                  ? st__fail(db, CXR_ENOMEM, what, "SHA-256 failed", errbuf, errlen)
                  : CXR_OK;
    else
        err = st__fail(db, CXR_ENOTFOUND, what, missing, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

static cxr_err instance_row_hash(st_db *db, int64_t id, char out[65], char *errbuf, size_t errlen)
{
    return st__row_hash(db, "SELECT " INSTANCE_COLS " FROM instances WHERE id = ?", INSTANCE_NCOLS,
                        id, "hash instance row", "no such instance", out, errbuf, errlen);
}

cxr_err st__append_event_row(st_db *db, int64_t instance_id, const char *row_hash, int64_t at_ms,
                             const char *kind, const char *detail, char *errbuf, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    char prev[65] = ZERO_HASH, hash[65];
    int64_t eid;
    cxr_err err;

    err = st__prepare(db, "SELECT hash FROM events ORDER BY id DESC LIMIT 1", &st, "append event",
                      errbuf, errlen);
    if (err)
        return err;
    if (sqlite3_step(st) == SQLITE_ROW)
        st__copy_str(prev, sizeof(prev), st__col_text(st, 0));
    sqlite3_finalize(st);

    err = st__prepare(db,
                      "INSERT INTO events (instance_id, at, kind, detail, row_hash, prev_hash,"
                      " hash) VALUES (?, ?, ?, ?, ?, ?, '')",
                      &st, "append event", errbuf, errlen);
    if (err)
        return err;
    if (instance_id > 0)
        (void)sqlite3_bind_int64(st, 1, instance_id);
    if (row_hash)
        st__bind_text(st, 5, row_hash);
    (void)sqlite3_bind_int64(st, 2, at_ms);
    st__bind_text(st, 3, kind);
    st__bind_text(st, 4, detail);
    st__bind_text(st, 6, prev);
    err = st__step_done(db, st, "append event", errbuf, errlen);
    sqlite3_finalize(st);
    if (err)
        return err;
    eid = sqlite3_last_insert_rowid(db->h);

    err = st__prepare(db,
                      "SELECT id, instance_id, at, kind, detail, row_hash, prev_hash FROM events"
                      " WHERE id = ?",
                      &st, "hash event", errbuf, errlen);
    if (err)
        return err;
    (void)sqlite3_bind_int64(st, 1, eid);
    if (sqlite3_step(st) == SQLITE_ROW)
        err = st__hash_columns(st, 0, 7, hash)
                  ? st__fail(db, CXR_ENOMEM, "hash event", "SHA-256 failed", errbuf, errlen)
                  : CXR_OK;
    else
        err = st__dberr(db, "hash event", errbuf, errlen);
    sqlite3_finalize(st);
    if (err)
        return err;
    err = st__prepare(db, "UPDATE events SET hash = ? WHERE id = ?", &st, "hash event", errbuf,
                      errlen);
    if (err)
        return err;
    st__bind_text(st, 1, hash);
    (void)sqlite3_bind_int64(st, 2, eid);
    err = st__step_done(db, st, "hash event", errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

/* Appends an event inside the caller's transaction; an instance's event also records the hash
 * of the instance row as it is now. */
static cxr_err append_event(st_db *db, int64_t instance_id, int64_t at_ms, const char *kind,
                            const char *detail, char *errbuf, size_t errlen)
{
    char row[65];
    if (instance_id > 0) {
        cxr_err err = instance_row_hash(db, instance_id, row, errbuf, errlen);
        if (err)
            return err;
    }
    return st__append_event_row(db, instance_id, instance_id > 0 ? row : NULL, at_ms, kind, detail,
                                errbuf, errlen);
}

/* ---- JSON columns ---- */

static char *timings_json(const double *t, double receive_ms)
{
    json_t *o = json_object();
    char *s;
    if (!o)
        return NULL;
    for (int i = 0; i < ST_T__COUNT; i++) {
        double v = t ? t[i] : -1;
        if (i == ST_T_RECEIVE && v < 0)
            v = receive_ms;
        if (v >= 0)
            (void)json_object_set_new(o, stage_names[i], json_real(v));
    }
    s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

static void timings_parse(const char *text, double *t)
{
    json_t *o = text && *text ? json_loads(text, 0, NULL) : NULL;
    for (int i = 0; i < ST_T__COUNT; i++) {
        json_t *v = o ? json_object_get(o, stage_names[i]) : NULL;
        t[i] = json_is_number(v) ? json_number_value(v) : -1;
    }
    json_decref(o);
}

/* scores as {class: score} in the model's order; NULL when there are none. */
static char *scores_json(int n, const char (*names)[64], const double *scores, bool *ret_oom)
{
    json_t *o;
    char *s;
    *ret_oom = false;
    if (n <= 0)
        return NULL;
    o = json_object();
    if (!o) {
        *ret_oom = true;
        return NULL;
    }
    for (int i = 0; i < n && i < ST_MAX_CLASSES; i++)
        (void)json_object_set_new(o, names[i], json_real(scores[i]));
    s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!s)
        *ret_oom = true;
    return s;
}

static int scores_parse(const char *text, char (*names)[64], double *scores)
{
    json_t *o = text && *text ? json_loads(text, 0, NULL) : NULL;
    const char *k;
    json_t *v;
    int n = 0;
    if (!json_is_object(o)) {
        json_decref(o);
        return 0;
    }
    json_object_foreach(o, k, v)
    {
        if (n >= ST_MAX_CLASSES)
            break;
        st__copy_str(names[n], 64, k);
        scores[n] = json_number_value(v);
        n++;
    }
    json_decref(o);
    return n;
}

/* ---- instances ---- */

static cxr_err study_touch_tx(st_db *db, const char *study_uid, const char *patient_id,
                              const char *accession, int64_t received_ms, const char *what,
                              char *errbuf, size_t errlen);

cxr_err st_insert_received(st_db *db, const struct st_receipt *r, int64_t duplicate_of,
                           int64_t *ret_id, char *errbuf, size_t errlen)
{
    static const char *what = "insert instance";
    sqlite3_stmt *st = NULL;
    char *timings = NULL, detail[256];
    int64_t id = 0, now = st_now_ms();
    cxr_err err;

    err = st__begin(db, what, errbuf, errlen);
    if (err)
        return err;
    timings = timings_json(NULL, r->receive_ms);
    if (!timings) {
        err = st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
        goto out_end;
    }
    err = st__prepare(db,
                      "INSERT INTO instances (sop_instance_uid, sop_class_uid, study_uid,"
                      " series_uid, patient_id, accession, calling_aet, called_aet, peer,"
                      " transfer_syntax, source, spool_path, size_bytes, received_at, state,"
                      " timings, duplicate_of, updated_at)"
                      " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,'received',?,?,?)",
                      &st, what, errbuf, errlen);
    if (err)
        goto out_end;
    st__bind_text(st, 1, r->sop_instance_uid);
    st__bind_text(st, 2, r->sop_class_uid);
    st__bind_text(st, 3, r->study_uid);
    st__bind_text(st, 4, r->series_uid);
    st__bind_text(st, 5, r->patient_id);
    st__bind_text(st, 6, r->accession);
    st__bind_text(st, 7, r->calling_aet);
    st__bind_text(st, 8, r->called_aet);
    st__bind_text(st, 9, r->peer);
    st__bind_text(st, 10, r->transfer_syntax);
    st__bind_text(st, 11, r->source);
    st__bind_text(st, 12, r->spool_path);
    (void)sqlite3_bind_int64(st, 13, r->size_bytes);
    (void)sqlite3_bind_int64(st, 14, r->received_at_ms);
    st__bind_text(st, 15, timings);
    if (duplicate_of > 0)
        (void)sqlite3_bind_int64(st, 16, duplicate_of);
    (void)sqlite3_bind_int64(st, 17, now);
    err = st__step_done(db, st, what, errbuf, errlen);
    if (err)
        goto out_end;
    id = sqlite3_last_insert_rowid(db->h);
    (void)snprintf(detail, sizeof(detail), "source=%s size=%" PRId64 " calling_aet=%s%s",
                   r->source[0] ? r->source : "dicom", r->size_bytes, r->calling_aet,
                   duplicate_of > 0 ? " duplicate" : "");
    err = append_event(db, id, now, "received", detail, errbuf, errlen);
    if (err)
        goto out_end;
    if (duplicate_of > 0) {
        (void)snprintf(detail, sizeof(detail), "duplicate_of=%" PRId64, duplicate_of);
        err = append_event(db, id, now, "duplicate", detail, errbuf, errlen);
        if (err)
            goto out_end;
    }
    /* The study row in the same transaction: a crash between two commits left a row whose
     * study did not exist, and that study never completed (no report) after the restart.
     * Uploads (HTTP classify) never join a study: they are not reported to the EHR. */
    if (r->study_uid[0] && strcmp(r->source, "upload") != 0)
        err = study_touch_tx(db, r->study_uid, r->patient_id, r->accession, r->received_at_ms,
                             what, errbuf, errlen);
out_end:
    err = st__end(db, st, err, what, errbuf, errlen);
    free(timings);
    if (!err)
        *ret_id = id;
    return err;
}

static cxr_err row_state(st_db *db, int64_t id, enum st_state *ret, double *ret_receive,
                         const char *what, char *errbuf, size_t errlen)
{
    sqlite3_stmt *st;
    cxr_err err = st__prepare(db, "SELECT state, timings FROM instances WHERE id = ?", &st, what,
                              errbuf, errlen);
    if (err)
        return err;
    (void)sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        double t[ST_T__COUNT];
        if (!st_state_from_name(st__col_text(st, 0), ret))
            err = st__fail(db, CXR_EDB, what, "row has an unknown state", errbuf, errlen);
        timings_parse(st__col_text(st, 1), t);
        *ret_receive = t[ST_T_RECEIVE];
    } else {
        char text[64];
        (void)snprintf(text, sizeof(text), "no instance %" PRId64, id);
        err = st__fail(db, CXR_ENOTFOUND, what, text, errbuf, errlen);
    }
    sqlite3_finalize(st);
    return err;
}

cxr_err st_finish(st_db *db, int64_t id, const struct st_result *res, char *errbuf, size_t errlen)
{
    static const char *what = "finish instance";
    sqlite3_stmt *st = NULL;
    char *timings = NULL, *scores = NULL, detail[512];
    enum st_state cur = ST_RECEIVED;
    double receive_ms = -1;
    int top = -1;
    bool oom;
    int64_t now = st_now_ms();
    cxr_err err;

    if (res->state != ST_CLASSIFIED && res->state != ST_SKIPPED && res->state != ST_FAILED)
        return st__fail(db, CXR_EINVAL, what, "result state is not final", errbuf, errlen);
    err = st__begin(db, what, errbuf, errlen);
    if (err)
        return err;
    err = row_state(db, id, &cur, &receive_ms, what, errbuf, errlen);
    if (err)
        goto out_end;
    if (cur != ST_RECEIVED) {
        char text[96];
        (void)snprintf(text, sizeof(text), "instance %" PRId64 " is already %s", id,
                       st_state_name(cur));
        err = st__fail(db, CXR_EINVAL, what, text, errbuf, errlen);
        goto out_end;
    }
    timings = timings_json(res->timings_ms, receive_ms);
    scores = scores_json(res->n_classes, res->class_names, res->scores, &oom);
    if (!timings || oom) {
        err = st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
        goto out_end;
    }
    for (int i = 0; i < res->n_classes && i < ST_MAX_CLASSES; i++)
        if (top < 0 || res->scores[i] > res->scores[top])
            top = i;
    err = st__prepare(db,
                      "UPDATE instances SET state = ?, pixel_sha256 = ?, gate_applicable = ?,"
                      " gate_reason = ?, model_digest = ?, scores = ?, top_class = ?,"
                      " top_score = ?, rule = ?, triage = ?, triage_reason = ?, timings = ?,"
                      " error = ?, updated_at = ? WHERE id = ?",
                      &st, what, errbuf, errlen);
    if (err)
        goto out_end;
    st__bind_text(st, 1, st_state_name(res->state));
    st__bind_text(st, 2, res->pixel_sha256);
    (void)sqlite3_bind_int(st, 3, res->gate_applicable ? 1 : 0);
    st__bind_text(st, 4, res->gate_reason);
    st__bind_text(st, 5, res->model_digest);
    if (scores)
        st__bind_text(st, 6, scores);
    if (top >= 0) {
        st__bind_text(st, 7, res->class_names[top]);
        (void)sqlite3_bind_double(st, 8, res->scores[top]);
    }
    st__bind_text(st, 9, res->rule);
    if (st_triage_name(res->triage))
        st__bind_text(st, 10, st_triage_name(res->triage));
    st__bind_text(st, 11, res->triage_reason);
    st__bind_text(st, 12, timings);
    st__bind_text(st, 13, res->error);
    (void)sqlite3_bind_int64(st, 14, now);
    (void)sqlite3_bind_int64(st, 15, id);
    err = st__step_done(db, st, what, errbuf, errlen);
    if (err)
        goto out_end;
    if (res->state == ST_CLASSIFIED)
        (void)snprintf(detail, sizeof(detail), "model=%.16s triage=%s top=%s", res->model_digest,
                       st_triage_name(res->triage) ? st_triage_name(res->triage) : "none",
                       top >= 0 ? res->class_names[top] : "none");
    else if (res->state == ST_SKIPPED)
        (void)snprintf(detail, sizeof(detail), "reason=%s", res->gate_reason);
    else
        (void)snprintf(detail, sizeof(detail), "error=%s", res->error);
    err = append_event(db, id, now, st_state_name(res->state), detail, errbuf, errlen);
out_end:
    err = st__end(db, st, err, what, errbuf, errlen);
    free(timings);
    free(scores);
    return err;
}

cxr_err st_add_event(st_db *db, int64_t instance_id, const char *kind, const char *detail,
                     char *errbuf, size_t errlen)
{
    static const char *what = "add event";
    cxr_err err;

    if (!kind || !*kind)
        return st__fail(db, CXR_EINVAL, what, "empty event kind", errbuf, errlen);
    err = st__begin(db, what, errbuf, errlen);
    if (err)
        return err;
    err = append_event(db, instance_id, st_now_ms(), kind, detail, errbuf, errlen);
    return st__end(db, NULL, err, what, errbuf, errlen);
}

cxr_err st_find_sop(st_db *db, const char *sop_instance_uid, int64_t *ret_id,
                    enum st_state *ret_state, char *errbuf, size_t errlen)
{
    static const char *what = "find SOP instance";
    sqlite3_stmt *st;
    cxr_err err = st__prepare(db,
                              "SELECT id, state FROM instances WHERE sop_instance_uid = ?"
                              " AND source != 'upload' ORDER BY id DESC LIMIT 1",
                              &st, what, errbuf, errlen);
    if (err)
        return err;
    st__bind_text(st, 1, sop_instance_uid);
    switch (sqlite3_step(st)) {
    case SQLITE_ROW: {
        enum st_state s = ST_RECEIVED;
        (void)st_state_from_name(st__col_text(st, 1), &s);
        *ret_id = sqlite3_column_int64(st, 0);
        if (ret_state)
            *ret_state = s;
        break;
    }
    case SQLITE_DONE:
        err = st__fail(db, CXR_ENOTFOUND, what, "no such SOP Instance UID", errbuf, errlen);
        break;
    default: err = st__dberr(db, what, errbuf, errlen);
    }
    sqlite3_finalize(st);
    return err;
}

cxr_err st_has_spool_path(st_db *db, const char *spool_path, bool *ret, char *errbuf, size_t errlen)
{
    static const char *what = "look up spool path";
    sqlite3_stmt *st;
    int rc;
    cxr_err err = st__prepare(db, "SELECT 1 FROM instances WHERE spool_path = ? LIMIT 1", &st, what,
                              errbuf, errlen);
    if (err)
        return err;
    st__bind_text(st, 1, spool_path);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE)
        *ret = rc == SQLITE_ROW;
    else
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

static void read_instance(sqlite3_stmt *st, struct st_instance *in)
{
    struct st_receipt *r = &in->r;
    struct st_result *res = &in->res;

    memset(in, 0, sizeof(*in));
    in->id = sqlite3_column_int64(st, 0);
    st__copy_str(r->sop_instance_uid, sizeof(r->sop_instance_uid), st__col_text(st, 1));
    st__copy_str(r->sop_class_uid, sizeof(r->sop_class_uid), st__col_text(st, 2));
    st__copy_str(r->study_uid, sizeof(r->study_uid), st__col_text(st, 3));
    st__copy_str(r->series_uid, sizeof(r->series_uid), st__col_text(st, 4));
    st__copy_str(r->patient_id, sizeof(r->patient_id), st__col_text(st, 5));
    st__copy_str(r->accession, sizeof(r->accession), st__col_text(st, 6));
    st__copy_str(r->calling_aet, sizeof(r->calling_aet), st__col_text(st, 7));
    st__copy_str(r->called_aet, sizeof(r->called_aet), st__col_text(st, 8));
    st__copy_str(r->peer, sizeof(r->peer), st__col_text(st, 9));
    st__copy_str(r->transfer_syntax, sizeof(r->transfer_syntax), st__col_text(st, 10));
    st__copy_str(r->source, sizeof(r->source), st__col_text(st, 11));
    st__copy_str(r->spool_path, sizeof(r->spool_path), st__col_text(st, 12));
    r->size_bytes = sqlite3_column_int64(st, 13);
    r->received_at_ms = sqlite3_column_int64(st, 14);
    (void)st_state_from_name(st__col_text(st, 15), &res->state);
    st__copy_str(res->pixel_sha256, sizeof(res->pixel_sha256), st__col_text(st, 16));
    res->gate_applicable = sqlite3_column_int(st, 17) != 0;
    st__copy_str(res->gate_reason, sizeof(res->gate_reason), st__col_text(st, 18));
    st__copy_str(res->model_digest, sizeof(res->model_digest), st__col_text(st, 19));
    res->n_classes = scores_parse(st__col_text(st, 20), res->class_names, res->scores);
    /* 21, 22: top_class, top_score are derived from scores */
    st__copy_str(res->rule, sizeof(res->rule), st__col_text(st, 23));
    if (!st_triage_from_name(st__col_text(st, 24), &res->triage))
        res->triage = ST_TRIAGE_NONE;
    st__copy_str(res->triage_reason, sizeof(res->triage_reason), st__col_text(st, 25));
    timings_parse(st__col_text(st, 26), res->timings_ms);
    r->receive_ms = res->timings_ms[ST_T_RECEIVE] >= 0 ? res->timings_ms[ST_T_RECEIVE] : 0;
    st__copy_str(res->error, sizeof(res->error), st__col_text(st, 27));
    in->duplicate_of = sqlite3_column_int64(st, 28);
    /* 29: spool_gone, not part of struct st_instance */
    in->updated_at_ms = sqlite3_column_int64(st, 30);
}

/* Steps st and hands each row to fn as an instance. */
static cxr_err each_instance(st_db *db, sqlite3_stmt *st,
                             bool (*fn)(void *user, const struct st_instance *in), void *user,
                             const char *what, char *errbuf, size_t errlen)
{
    struct st_instance *in = malloc(sizeof(*in));
    cxr_err err = CXR_OK;
    int rc;

    if (!in)
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        read_instance(st, in);
        if (!fn(user, in))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    free(in);
    return err;
}

cxr_err st_each_pending(st_db *db, bool (*fn)(void *user, const struct st_instance *in), void *user,
                        char *errbuf, size_t errlen)
{
    static const char *what = "list pending instances";
    sqlite3_stmt *st;
    cxr_err err = st__prepare(db,
                              "SELECT " INSTANCE_COLS " FROM instances WHERE state = 'received'"
                              " ORDER BY id",
                              &st, what, errbuf, errlen);
    if (err)
        return err;
    err = each_instance(db, st, fn, user, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

cxr_err st_list(st_db *db, const struct st_filter *f,
                bool (*fn)(void *user, const struct st_instance *in), void *user, char *errbuf,
                size_t errlen)
{
    static const char *what = "list instances";
    struct cxr_buf sql;
    sqlite3_stmt *st = NULL;
    int n = 0;
    cxr_err err;

    cxr_buf_init(&sql, 4096);
    err = cxr_buf_puts(&sql, "SELECT " INSTANCE_COLS " FROM instances WHERE 1");
    /* Parameters are numbered so that the binding below follows the same order. */
    if (!err && f->since_ms)
        err = cxr_buf_printf(&sql, " AND received_at >= ?%d", ++n);
    if (!err && f->until_ms)
        err = cxr_buf_printf(&sql, " AND received_at < ?%d", ++n);
    if (!err && f->patient_id[0])
        err = cxr_buf_printf(&sql, " AND patient_id = ?%d", ++n);
    if (!err && f->accession[0])
        err = cxr_buf_printf(&sql, " AND accession = ?%d", ++n);
    if (!err && f->study_uid[0])
        err = cxr_buf_printf(&sql, " AND study_uid = ?%d", ++n);
    if (!err && f->class_name[0])
        err = cxr_buf_printf(&sql, " AND top_class = ?%d", ++n);
    if (!err && f->has_state)
        err = cxr_buf_printf(&sql, " AND state = ?%d", ++n);
    if (!err && f->has_triage) {
        if (f->triage == ST_TRIAGE_NONE)
            err = cxr_buf_puts(&sql, " AND triage IS NULL");
        else
            err = cxr_buf_printf(&sql, " AND triage = ?%d", ++n);
    }
    if (!err && f->source[0])
        err = cxr_buf_printf(&sql, " AND source = ?%d", ++n);
    if (!err && f->after_id > 0)
        err = cxr_buf_printf(&sql, " AND id < ?%d", ++n);
    if (!err)
        err = cxr_buf_puts(&sql, " ORDER BY id DESC");
    if (!err && f->limit > 0)
        err = cxr_buf_printf(&sql, " LIMIT %d", f->limit);
    if (err) {
        cxr_buf_done(&sql);
        return st__fail(db, err, what, "out of memory", errbuf, errlen);
    }
    err = st__prepare(db, cxr_buf_str(&sql), &st, what, errbuf, errlen);
    cxr_buf_done(&sql);
    if (err)
        return err;
    n = 0;
    if (f->since_ms)
        (void)sqlite3_bind_int64(st, ++n, f->since_ms);
    if (f->until_ms)
        (void)sqlite3_bind_int64(st, ++n, f->until_ms);
    if (f->patient_id[0])
        st__bind_text(st, ++n, f->patient_id);
    if (f->accession[0])
        st__bind_text(st, ++n, f->accession);
    if (f->study_uid[0])
        st__bind_text(st, ++n, f->study_uid);
    if (f->class_name[0])
        st__bind_text(st, ++n, f->class_name);
    if (f->has_state)
        st__bind_text(st, ++n, st_state_name(f->state));
    if (f->has_triage && f->triage != ST_TRIAGE_NONE)
        st__bind_text(st, ++n, st_triage_name(f->triage));
    if (f->source[0])
        st__bind_text(st, ++n, f->source);
    if (f->after_id > 0)
        (void)sqlite3_bind_int64(st, ++n, f->after_id);
    err = each_instance(db, st, fn, user, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

cxr_err st_get(st_db *db, int64_t id, const char *sop_instance_uid, struct st_instance *ret,
               char *errbuf, size_t errlen)
{
    static const char *what = "get instance";
    sqlite3_stmt *st;
    int rc;
    cxr_err err;

    if (id > 0)
        err = st__prepare(db, "SELECT " INSTANCE_COLS " FROM instances WHERE id = ?", &st, what,
                          errbuf, errlen);
    else
        err = st__prepare(db,
                          "SELECT " INSTANCE_COLS " FROM instances WHERE sop_instance_uid = ?"
                          " ORDER BY id DESC LIMIT 1",
                          &st, what, errbuf, errlen);
    if (err)
        return err;
    if (id > 0)
        (void)sqlite3_bind_int64(st, 1, id);
    else
        st__bind_text(st, 1, sop_instance_uid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        read_instance(st, ret);
    else if (rc == SQLITE_DONE)
        err = st__fail(db, CXR_ENOTFOUND, what, "no such instance", errbuf, errlen);
    else
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

cxr_err st_events(st_db *db, int64_t instance_id, bool (*fn)(void *user, const struct st_event *e),
                  void *user, char *errbuf, size_t errlen)
{
    static const char *what = "list events";
    sqlite3_stmt *st;
    struct st_event e;
    int rc;
    cxr_err err;

    err = st__prepare(db,
                      instance_id < 0 ? "SELECT id, instance_id, at, kind, detail FROM events"
                                        " ORDER BY id"
                                      : "SELECT id, instance_id, at, kind, detail FROM events"
                                        " WHERE instance_id IS ? ORDER BY id",
                      &st, what, errbuf, errlen);
    if (err)
        return err;
    if (instance_id > 0)
        (void)sqlite3_bind_int64(st, 1, instance_id);
    /* instance_id 0 binds NULL: the association-level events */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        memset(&e, 0, sizeof(e));
        e.id = sqlite3_column_int64(st, 0);
        e.instance_id = sqlite3_column_int64(st, 1);
        e.at_ms = sqlite3_column_int64(st, 2);
        st__copy_str(e.kind, sizeof(e.kind), st__col_text(st, 3));
        st__copy_str(e.detail, sizeof(e.detail), st__col_text(st, 4));
        if (!fn(user, &e))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

/* ---- studies ---- */

/* The study upsert of st_study_touch, inside the caller's transaction. */
static cxr_err study_touch_tx(st_db *db, const char *study_uid, const char *patient_id,
                              const char *accession, int64_t received_ms, const char *what,
                              char *errbuf, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    cxr_err err;

    err = st__prepare(db,
                      "INSERT INTO studies (study_uid, patient_id, accession, first_received,"
                      " last_received) VALUES (?1, ?2, ?3, ?4, ?4)"
                      " ON CONFLICT (study_uid) DO UPDATE SET"
                      " first_received = min(first_received, excluded.first_received),"
                      " last_received = max(last_received, excluded.last_received),"
                      " completed = 0",
                      &st, what, errbuf, errlen);
    if (err)
        return err;
    st__bind_text(st, 1, study_uid);
    st__bind_text(st, 2, patient_id);
    st__bind_text(st, 3, accession);
    (void)sqlite3_bind_int64(st, 4, received_ms);
    err = st__step_done(db, st, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

cxr_err st_study_touch(st_db *db, const char *study_uid, const char *patient_id,
                       const char *accession, int64_t received_ms, char *errbuf, size_t errlen)
{
    static const char *what = "touch study";
    cxr_err err;

    err = st__begin(db, what, errbuf, errlen);
    if (err)
        return err;
    err = study_touch_tx(db, study_uid, patient_id, accession, received_ms, what, errbuf, errlen);
    return st__end(db, NULL, err, what, errbuf, errlen);
}

cxr_err st_study_settled(st_db *db, const char *study_uid, bool *ret, char *errbuf, size_t errlen)
{
    static const char *what = "check study settled";
    sqlite3_stmt *st;
    cxr_err err = st__prepare(db,
                              "SELECT count(*) FROM instances WHERE study_uid = ?"
                              " AND state = 'received' AND source != 'upload'",
                              &st, what, errbuf, errlen);
    if (err)
        return err;
    st__bind_text(st, 1, study_uid);
    if (sqlite3_step(st) == SQLITE_ROW)
        *ret = sqlite3_column_int64(st, 0) == 0;
    else
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

/* Lower is more urgent; NONE sorts after everything. */
static int triage_rank(enum st_triage t)
{
    return t == ST_TRIAGE_NONE ? 99 : (int)t;
}

/* Appends "SOPUID: reason; " to s->skipped, or marks the list truncated when it is full. */
static void skipped_add(struct st_study *s, const char *uid, const char *reason, bool *full)
{
    static const char mark[] = "...";
    size_t len = strlen(s->skipped), room = sizeof(s->skipped) - len;
    size_t need = strlen(uid) + strlen(reason) + 4; /* ": " and "; " */
    if (*full)
        return;
    if (need + sizeof(mark) > room) {
        st__copy_str(s->skipped + len, room, mark);
        *full = true;
        return;
    }
    (void)snprintf(s->skipped + len, room, "%s%s: %s", len ? "; " : "", uid, reason);
}

/* Fills the counts and the combined result of a study from its instance rows. A row that a
 * later row of the same SOP Instance UID supersedes (the instance received again and scored
 * again: [dicom] duplicates = rescore, e.g. after a model change) does not count: the study's
 * result, and so a correction report, is that of the latest scoring of each instance, with its
 * model digest, not a mix of the old and the new model. */
static cxr_err study_combine(st_db *db, struct st_study *s, const char *what, char *errbuf,
                             size_t errlen)
{
    sqlite3_stmt *st;
    char names[ST_MAX_CLASSES][64];
    double scores[ST_MAX_CLASSES];
    bool full = false;
    int rc;
    cxr_err err;

    s->n_instances = s->n_scored = s->n_skipped = s->n_failed = 0;
    s->n_classes = 0;
    s->triage = ST_TRIAGE_NONE;
    s->model_digest[0] = s->skipped[0] = '\0';
    err = st__prepare(db,
                      "SELECT state, scores, triage, model_digest, sop_instance_uid,"
                      " gate_reason, error FROM instances i WHERE study_uid = ?"
                      " AND source != 'upload'"
                      " AND NOT (sop_instance_uid != '' AND EXISTS (SELECT 1 FROM instances j"
                      " WHERE j.sop_instance_uid = i.sop_instance_uid AND j.id > i.id"
                      " AND j.source != 'upload'))"
                      " ORDER BY id",
                      &st, what, errbuf, errlen);
    if (err)
        return err;
    st__bind_text(st, 1, s->study_uid);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        enum st_state state = ST_RECEIVED;
        enum st_triage t;
        int n;

        s->n_instances++;
        (void)st_state_from_name(st__col_text(st, 0), &state);
        if (state == ST_SKIPPED || state == ST_FAILED) {
            if (state == ST_SKIPPED)
                s->n_skipped++;
            else
                s->n_failed++;
            skipped_add(s, st__col_text(st, 4), st__col_text(st, state == ST_SKIPPED ? 5 : 6),
                        &full);
            continue;
        }
        if (state != ST_CLASSIFIED)
            continue;
        s->n_scored++;
        n = scores_parse(st__col_text(st, 1), names, scores);
        for (int i = 0; i < n; i++) {
            int j = 0;
            while (j < s->n_classes && strcmp(s->class_names[j], names[i]) != 0)
                j++;
            if (j == s->n_classes) {
                if (j == ST_MAX_CLASSES)
                    continue;
                st__copy_str(s->class_names[j], sizeof(s->class_names[j]), names[i]);
                s->scores[j] = scores[i];
                s->n_classes++;
            } else if (scores[i] > s->scores[j]) {
                s->scores[j] = scores[i];
            }
        }
        if (st_triage_from_name(st__col_text(st, 2), &t) && triage_rank(t) < triage_rank(s->triage))
            s->triage = t;
        if (!s->model_digest[0])
            st__copy_str(s->model_digest, sizeof(s->model_digest), st__col_text(st, 3));
    }
    if (rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

static void read_study_row(sqlite3_stmt *st, struct st_study *s)
{
    memset(s, 0, sizeof(*s));
    st__copy_str(s->study_uid, sizeof(s->study_uid), st__col_text(st, 0));
    st__copy_str(s->patient_id, sizeof(s->patient_id), st__col_text(st, 1));
    st__copy_str(s->accession, sizeof(s->accession), st__col_text(st, 2));
    s->first_received_ms = sqlite3_column_int64(st, 3);
    s->last_received_ms = sqlite3_column_int64(st, 4);
    s->completed_ms = sqlite3_column_int64(st, 5);
}

#define STUDY_COLS "study_uid, patient_id, accession, first_received, last_received, completed, id"

/* The reports build() gives for a completed study, queued inside the completion's transaction;
 * the bodies are freed here whatever build() returns. */
static cxr_err queue_reports(st_db *db, const struct st_study *s, int64_t now_ms,
                             st_report_build_fn *build, void *user, const char *what, char *errbuf,
                             size_t errlen)
{
    struct st_report_new *out = calloc(ST_REPORTS_MAX, sizeof(*out));
    int n;
    cxr_err err;

    if (!out)
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    n = build(user, db, s, out, ST_REPORTS_MAX);
    if (n < 0 || n > ST_REPORTS_MAX)
        err = st__fail(db, CXR_EINVAL, what,
                       n < 0 ? "the report builder refused (study left open)"
                             : "the report builder returned more reports than it may",
                       errbuf, errlen);
    else
        err = st__reports_insert(db, s->study_uid, now_ms, out, n, errbuf, errlen);
    for (int i = 0; i < ST_REPORTS_MAX; i++)
        free(out[i].body);
    free(out);
    return err;
}

/* st_study_complete and st_study_complete_reports: one transaction that computes the combined
 * result, marks the study complete, appends its event and (build != NULL) queues its reports. */
static cxr_err study_complete(st_db *db, const char *study_uid, int64_t now_ms,
                              st_report_build_fn *build, void *user, struct st_study *ret_study,
                              char *errbuf, size_t errlen)
{
    static const char *what = "complete study";
    sqlite3_stmt *st = NULL;
    struct st_study *s;
    char *scores = NULL, detail[256];
    int64_t sid = 0;
    bool oom;
    cxr_err err;

    s = calloc(1, sizeof(*s));
    if (!s)
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    err = st__begin(db, what, errbuf, errlen);
    if (err)
        goto out_free;
    err = st__prepare(db, "SELECT " STUDY_COLS " FROM studies WHERE study_uid = ?", &st, what,
                      errbuf, errlen);
    if (err)
        goto out_end;
    st__bind_text(st, 1, study_uid);
    if (sqlite3_step(st) != SQLITE_ROW) {
        err = st__fail(db, CXR_ENOTFOUND, what, "no such study", errbuf, errlen);
        goto out_end;
    }
    read_study_row(st, s);
    sid = sqlite3_column_int64(st, 6);
    sqlite3_finalize(st);
    st = NULL;
    err = study_combine(db, s, what, errbuf, errlen);
    if (err)
        goto out_end;
    scores = scores_json(s->n_classes, s->class_names, s->scores, &oom);
    if (oom) {
        err = st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
        goto out_end;
    }
    s->completed_ms = now_ms;
    err = st__prepare(db,
                      "UPDATE studies SET completed = ?, scores = ?, triage = ?,"
                      " model_digest = ?, skipped = ? WHERE id = ?",
                      &st, what, errbuf, errlen);
    if (err)
        goto out_end;
    (void)sqlite3_bind_int64(st, 1, now_ms);
    if (scores)
        st__bind_text(st, 2, scores);
    if (st_triage_name(s->triage))
        st__bind_text(st, 3, st_triage_name(s->triage));
    st__bind_text(st, 4, s->model_digest);
    st__bind_text(st, 5, s->skipped);
    (void)sqlite3_bind_int64(st, 6, sid);
    err = st__step_done(db, st, what, errbuf, errlen);
    if (err)
        goto out_end;
    (void)snprintf(detail, sizeof(detail),
                   "study=%" PRId64 " instances=%d scored=%d skipped=%d failed=%d triage=%s", sid,
                   s->n_instances, s->n_scored, s->n_skipped, s->n_failed,
                   st_triage_name(s->triage) ? st_triage_name(s->triage) : "none");
    err = append_event(db, 0, now_ms, "study.complete", detail, errbuf, errlen);
    if (err)
        goto out_end;
    if (build) {
        err = queue_reports(db, s, now_ms, build, user, what, errbuf, errlen);
        if (err)
            goto out_end;
    }
out_end:
    err = st__end(db, st, err, what, errbuf, errlen);
    if (!err && ret_study)
        *ret_study = *s;
out_free:
    free(scores);
    free(s);
    return err;
}

cxr_err st_study_complete(st_db *db, const char *study_uid, int64_t now_ms,
                          struct st_study *ret_study, char *errbuf, size_t errlen)
{
    return study_complete(db, study_uid, now_ms, NULL, NULL, ret_study, errbuf, errlen);
}

cxr_err st_study_complete_reports(st_db *db, const char *study_uid, int64_t now_ms,
                                  st_report_build_fn *build, void *user, struct st_study *ret_study,
                                  char *errbuf, size_t errlen)
{
    if (!build)
        return st__fail(db, CXR_EINVAL, "complete study", "no report builder", errbuf, errlen);
    return study_complete(db, study_uid, now_ms, build, user, ret_study, errbuf, errlen);
}

cxr_err st_each_open_study(st_db *db, bool (*fn)(void *user, const struct st_study *s), void *user,
                           char *errbuf, size_t errlen)
{
    static const char *what = "list open studies";
    sqlite3_stmt *st;
    struct st_study *s;
    int rc;
    cxr_err err;

    s = malloc(sizeof(*s));
    if (!s)
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    err = st__prepare(db, "SELECT " STUDY_COLS " FROM studies WHERE completed = 0 ORDER BY id", &st,
                      what, errbuf, errlen);
    if (err) {
        free(s);
        return err;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        read_study_row(st, s);
        err = study_combine(db, s, what, errbuf, errlen);
        if (err || !fn(user, s))
            break;
    }
    if (!err && rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    free(s);
    return err;
}

cxr_err st_get_study(st_db *db, const char *study_uid, struct st_study *ret, char *errbuf,
                     size_t errlen)
{
    static const char *what = "get study";
    sqlite3_stmt *st;
    struct st_study *s;
    int rc;
    cxr_err err;

    s = malloc(sizeof(*s));
    if (!s)
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    err = st__prepare(db,
                      "SELECT " STUDY_COLS ", scores, triage, model_digest, skipped FROM studies"
                      " WHERE study_uid = ?",
                      &st, what, errbuf, errlen);
    if (err) {
        free(s);
        return err;
    }
    st__bind_text(st, 1, study_uid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        read_study_row(st, s);
        /* counts are live; the combined result is the one recorded at completion */
        err = study_combine(db, s, what, errbuf, errlen);
        if (!err && s->completed_ms) {
            s->n_classes = scores_parse(st__col_text(st, 7), s->class_names, s->scores);
            if (!st_triage_from_name(st__col_text(st, 8), &s->triage))
                s->triage = ST_TRIAGE_NONE;
            st__copy_str(s->model_digest, sizeof(s->model_digest), st__col_text(st, 9));
            st__copy_str(s->skipped, sizeof(s->skipped), st__col_text(st, 10));
        }
        if (!err)
            *ret = *s;
    } else if (rc == SQLITE_DONE) {
        err = st__fail(db, CXR_ENOTFOUND, what, "no such study", errbuf, errlen);
    } else {
        err = st__dberr(db, what, errbuf, errlen);
    }
    sqlite3_finalize(st);
    free(s);
    return err;
}

cxr_err st_study_list(st_db *db, const struct st_study_filter *f,
                      bool (*fn)(void *user, int64_t id, const struct st_study *s), void *user,
                      char *errbuf, size_t errlen)
{
    static const char *what = "list studies";
    struct cxr_buf sql;
    sqlite3_stmt *st = NULL;
    struct st_study *s;
    int n = 0, rc;
    cxr_err err;

    cxr_buf_init(&sql, 4096);
    err = cxr_buf_puts(&sql, "SELECT " STUDY_COLS ", scores, triage, model_digest, skipped"
                             " FROM studies WHERE 1");
    if (!err && f->since_ms)
        err = cxr_buf_printf(&sql, " AND last_received >= ?%d", ++n);
    if (!err && f->until_ms)
        err = cxr_buf_printf(&sql, " AND last_received < ?%d", ++n);
    if (!err && f->patient_id[0])
        err = cxr_buf_printf(&sql, " AND patient_id = ?%d", ++n);
    if (!err && f->accession[0])
        err = cxr_buf_printf(&sql, " AND accession = ?%d", ++n);
    if (!err && f->after_id > 0)
        err = cxr_buf_printf(&sql, " AND id < ?%d", ++n);
    if (!err)
        err = cxr_buf_puts(&sql, " ORDER BY id DESC");
    if (!err && f->limit > 0)
        err = cxr_buf_printf(&sql, " LIMIT %d", f->limit);
    if (err) {
        cxr_buf_done(&sql);
        return st__fail(db, err, what, "out of memory", errbuf, errlen);
    }
    err = st__prepare(db, cxr_buf_str(&sql), &st, what, errbuf, errlen);
    cxr_buf_done(&sql);
    if (err)
        return err;
    n = 0;
    if (f->since_ms)
        (void)sqlite3_bind_int64(st, ++n, f->since_ms);
    if (f->until_ms)
        (void)sqlite3_bind_int64(st, ++n, f->until_ms);
    if (f->patient_id[0])
        st__bind_text(st, ++n, f->patient_id);
    if (f->accession[0])
        st__bind_text(st, ++n, f->accession);
    if (f->after_id > 0)
        (void)sqlite3_bind_int64(st, ++n, f->after_id);
    s = malloc(sizeof(*s));
    if (!s) {
        sqlite3_finalize(st);
        return st__fail(db, CXR_ENOMEM, what, "out of memory", errbuf, errlen);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 6);
        read_study_row(st, s);
        err = study_combine(db, s, what, errbuf, errlen);
        if (err)
            break;
        if (s->completed_ms) {
            s->n_classes = scores_parse(st__col_text(st, 7), s->class_names, s->scores);
            if (!st_triage_from_name(st__col_text(st, 8), &s->triage))
                s->triage = ST_TRIAGE_NONE;
            st__copy_str(s->model_digest, sizeof(s->model_digest), st__col_text(st, 9));
            st__copy_str(s->skipped, sizeof(s->skipped), st__col_text(st, 10));
        }
        if (!fn(user, id, s))
            break;
    }
    if (!err && rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    free(s);
    return err;
}

/* ---- retention ---- */

cxr_err st_each_expired_spool(st_db *db, int64_t cutoff_ms,
                              bool (*fn)(void *user, int64_t id, const char *path), void *user,
                              char *errbuf, size_t errlen)
{
    static const char *what = "list expired spool files";
    sqlite3_stmt *st;
    int rc;
    cxr_err err = st__prepare(db,
                              "SELECT id, spool_path FROM instances WHERE state != 'received'"
                              " AND spool_gone = 0 AND spool_path != '' AND received_at < ?"
                              " ORDER BY id",
                              &st, what, errbuf, errlen);
    if (err)
        return err;
    (void)sqlite3_bind_int64(st, 1, cutoff_ms);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (!fn(user, sqlite3_column_int64(st, 0), st__col_text(st, 1)))
            break;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}

cxr_err st_spool_forget(st_db *db, int64_t id, char *errbuf, size_t errlen)
{
    static const char *what = "forget spool file";
    sqlite3_stmt *st = NULL;
    int64_t now = st_now_ms();
    cxr_err err;

    err = st__begin(db, what, errbuf, errlen);
    if (err)
        return err;
    err = st__prepare(db, "UPDATE instances SET spool_gone = 1, updated_at = ? WHERE id = ?", &st,
                      what, errbuf, errlen);
    if (err)
        goto out_end;
    (void)sqlite3_bind_int64(st, 1, now);
    (void)sqlite3_bind_int64(st, 2, id);
    err = st__step_done(db, st, what, errbuf, errlen);
    if (err)
        goto out_end;
    if (sqlite3_changes(db->h) != 1) {
        err = st__fail(db, CXR_ENOTFOUND, what, "no such instance", errbuf, errlen);
        goto out_end;
    }
    err = append_event(db, id, now, "spool.deleted", "retention", errbuf, errlen);
out_end:
    return st__end(db, st, err, what, errbuf, errlen);
}

/* ---- statistics ---- */

cxr_err st_counts(st_db *db, int64_t n_by_state[4], int64_t n_by_triage[4], char *errbuf,
                  size_t errlen)
{
    static const char *what = "count instances";
    sqlite3_stmt *st;
    int rc;
    cxr_err err = st__prepare(db,
                              "SELECT state, triage, count(*) FROM instances"
                              " GROUP BY state, triage",
                              &st, what, errbuf, errlen);
    if (err)
        return err;
    for (int i = 0; i < 4; i++)
        n_by_state[i] = n_by_triage[i] = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        enum st_state s;
        enum st_triage t = ST_TRIAGE_NONE;
        int64_t n = sqlite3_column_int64(st, 2);
        if (st_state_from_name(st__col_text(st, 0), &s))
            n_by_state[s] += n;
        if (!st_triage_from_name(st__col_text(st, 1), &t))
            t = ST_TRIAGE_NONE;
        n_by_triage[t] += n;
    }
    if (rc != SQLITE_DONE)
        err = st__dberr(db, what, errbuf, errlen);
    sqlite3_finalize(st);
    return err;
}
