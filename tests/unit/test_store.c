/*
 * test_store.c - the audit ledger on a real file in a temporary directory: round trips, every
 * list filter and paging, the final-state rule, readers beside the writer, migrations, file
 * modes, tamper evidence (edits made with the raw sqlite3 API), study completion, the JSON form
 * of a row, the report outbox (queued with the study's completion, attempts, requeue from a
 * second writer, corrections, verify) and the time parser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four above first */
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"

static char tmpdir[64];
static char dbpath[128];
static char errbuf[512];

static int setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/cxr_store_XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(dbpath, sizeof(dbpath), "%s/audit.db", tmpdir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static st_db *open_db(int mode)
{
    st_db *db = NULL;
    cxr_err err = st_open(dbpath, mode, &db, errbuf, sizeof(errbuf));
    if (err)
        fail_msg("st_open: %s", errbuf);
    return db;
}

static void receipt(struct st_receipt *r, int n, const char *patient, const char *study,
                    int64_t at_ms)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->sop_instance_uid, sizeof(r->sop_instance_uid), "1.2.3.4.%d", n);
    snprintf(r->sop_class_uid, sizeof(r->sop_class_uid), "1.2.840.10008.5.1.4.1.1.1.1");
    snprintf(r->study_uid, sizeof(r->study_uid), "%s", study);
    snprintf(r->series_uid, sizeof(r->series_uid), "%s.1", study);
    snprintf(r->patient_id, sizeof(r->patient_id), "%s", patient);
    snprintf(r->accession, sizeof(r->accession), "ACC%d", n);
    snprintf(r->calling_aet, sizeof(r->calling_aet), "PACS%d", n % 2);
    snprintf(r->called_aet, sizeof(r->called_aet), "CXRTRIAGE");
    snprintf(r->peer, sizeof(r->peer), "127.0.0.%d", n);
    snprintf(r->transfer_syntax, sizeof(r->transfer_syntax), "1.2.840.10008.1.2.1");
    snprintf(r->source, sizeof(r->source), "dicom");
    snprintf(r->spool_path, sizeof(r->spool_path), "/spool/in/%d.dcm", n);
    r->size_bytes = 1000 + n;
    r->received_at_ms = at_ms;
    r->receive_ms = 12.5;
}

static const char *const classes[4] = {"COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia"};

static void classified(struct st_result *res, double c0, double c1, double c2, double c3,
                       enum st_triage t)
{
    double s[4] = {c0, c1, c2, c3};
    memset(res, 0, sizeof(*res));
    res->state = ST_CLASSIFIED;
    snprintf(res->pixel_sha256, sizeof(res->pixel_sha256), "%064d", 7);
    res->gate_applicable = true;
    snprintf(res->model_digest, sizeof(res->model_digest), "%064d", 42);
    res->n_classes = 4;
    for (int i = 0; i < 4; i++) {
        snprintf(res->class_names[i], sizeof(res->class_names[i]), "%s", classes[i]);
        res->scores[i] = s[i];
    }
    snprintf(res->rule, sizeof(res->rule), "COVID-19>=0.42");
    res->triage = t;
    snprintf(res->triage_reason, sizeof(res->triage_reason), "COVID-19 %.2f >= 0.42", c0);
    for (int i = 0; i < ST_T__COUNT; i++)
        res->timings_ms[i] = -1;
    res->timings_ms[ST_T_DECODE] = 3.25;
    res->timings_ms[ST_T_INFER] = 40.5;
}

static void skipped(struct st_result *res, const char *reason)
{
    memset(res, 0, sizeof(*res));
    res->state = ST_SKIPPED;
    snprintf(res->gate_reason, sizeof(res->gate_reason), "%s", reason);
    for (int i = 0; i < ST_T__COUNT; i++)
        res->timings_ms[i] = -1;
}

static int64_t insert(st_db *db, int n, const char *patient, const char *study, int64_t at)
{
    struct st_receipt r;
    int64_t id = 0;
    receipt(&r, n, patient, study, at);
    if (st_insert_received(db, &r, 0, &id, errbuf, sizeof(errbuf)))
        fail_msg("insert: %s", errbuf);
    return id;
}

static void finish(st_db *db, int64_t id, const struct st_result *res)
{
    if (st_finish(db, id, res, errbuf, sizeof(errbuf)))
        fail_msg("finish: %s", errbuf);
}

#define T0 1796169600000LL /* 2026-12-02T00:00:00Z */
#define HOUR 3600000LL

/* Five instances: 1 classified urgent, 2 classified normal, 3 skipped, 4 failed, 5 received. */
static void fill(st_db *db)
{
    struct st_result res;
    int64_t id;

    id = insert(db, 1, "PAT1", "1.9.1", T0);
    classified(&res, 0.91, 0.05, 0.02, 0.02, ST_TRIAGE_URGENT);
    finish(db, id, &res);
    id = insert(db, 2, "PAT1", "1.9.1", T0 + HOUR);
    classified(&res, 0.10, 0.20, 0.60, 0.10, ST_TRIAGE_NORMAL);
    finish(db, id, &res);
    id = insert(db, 3, "PAT2", "1.9.2", T0 + 2 * HOUR);
    skipped(&res, "ViewPosition LL is not PA or AP");
    finish(db, id, &res);
    id = insert(db, 4, "PAT2", "1.9.2", T0 + 3 * HOUR);
    memset(&res, 0, sizeof(res));
    res.state = ST_FAILED;
    snprintf(res.error, sizeof(res.error), "dicom: pixel data truncated");
    for (int i = 0; i < ST_T__COUNT; i++)
        res.timings_ms[i] = -1;
    finish(db, id, &res);
    (void)insert(db, 5, "PAT3", "1.9.3", T0 + 4 * HOUR);
}

struct collect {
    int n;
    int64_t ids[128];
};

static bool collect_fn(void *user, const struct st_instance *in)
{
    struct collect *c = user;
    if (c->n < 128)
        c->ids[c->n++] = in->id;
    return true;
}

static int list_count(st_db *db, const struct st_filter *f, struct collect *c)
{
    memset(c, 0, sizeof(*c));
    if (st_list(db, f, collect_fn, c, errbuf, sizeof(errbuf)))
        fail_msg("list: %s", errbuf);
    return c->n;
}

static void test_round_trip(void **state)
{
    st_db *db = open_db(ST_OPEN_WRITE);
    struct st_instance in;
    struct st_filter f;
    struct collect c;
    enum st_state s;
    int64_t id, n_state[4], n_triage[4];
    bool has;

    fill(db);
    assert_int_equal(st_get(db, 1, NULL, &in, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(in.id, 1);
    assert_string_equal(in.r.sop_instance_uid, "1.2.3.4.1");
    assert_string_equal(in.r.study_uid, "1.9.1");
    assert_string_equal(in.r.series_uid, "1.9.1.1");
    assert_string_equal(in.r.patient_id, "PAT1");
    assert_string_equal(in.r.accession, "ACC1");
    assert_string_equal(in.r.calling_aet, "PACS1");
    assert_string_equal(in.r.called_aet, "CXRTRIAGE");
    assert_string_equal(in.r.peer, "127.0.0.1");
    assert_string_equal(in.r.spool_path, "/spool/in/1.dcm");
    assert_string_equal(in.r.source, "dicom");
    assert_int_equal(in.r.size_bytes, 1001);
    assert_int_equal(in.r.received_at_ms, T0);
    assert_true(in.r.receive_ms == 12.5);
    assert_int_equal(in.res.state, ST_CLASSIFIED);
    assert_int_equal(in.res.n_classes, 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(in.res.class_names[i], classes[i]);
    assert_true(in.res.scores[0] == 0.91 && in.res.scores[2] == 0.02);
    assert_int_equal(in.res.triage, ST_TRIAGE_URGENT);
    assert_string_equal(in.res.triage_reason, "COVID-19 0.91 >= 0.42");
    assert_string_equal(in.res.rule, "COVID-19>=0.42");
    assert_true(in.res.gate_applicable);
    assert_true(in.res.timings_ms[ST_T_RECEIVE] == 12.5);
    assert_true(in.res.timings_ms[ST_T_QUEUE] == -1);
    assert_true(in.res.timings_ms[ST_T_INFER] == 40.5);
    assert_int_equal(in.duplicate_of, 0);
    assert_true(in.updated_at_ms > 0);

    /* by SOP Instance UID: the newest row */
    assert_int_equal(st_get(db, 0, "1.2.3.4.3", &in, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(in.id, 3);
    assert_int_equal(in.res.state, ST_SKIPPED);
    assert_string_equal(in.res.gate_reason, "ViewPosition LL is not PA or AP");
    assert_int_equal(in.res.n_classes, 0);
    assert_int_equal(st_get(db, 99, NULL, &in, errbuf, sizeof(errbuf)), CXR_ENOTFOUND);
    assert_non_null(strstr(errbuf, dbpath));

    assert_int_equal(st_find_sop(db, "1.2.3.4.5", &id, &s, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(id, 5);
    assert_int_equal(s, ST_RECEIVED);
    assert_int_equal(st_find_sop(db, "9.9", &id, &s, errbuf, sizeof(errbuf)), CXR_ENOTFOUND);
    assert_int_equal(st_has_spool_path(db, "/spool/in/4.dcm", &has, errbuf, sizeof(errbuf)),
                     CXR_OK);
    assert_true(has);
    assert_int_equal(st_has_spool_path(db, "/spool/in/9.dcm", &has, errbuf, sizeof(errbuf)),
                     CXR_OK);
    assert_false(has);

    /* a duplicate row points at the earlier one */
    {
        struct st_receipt r;
        receipt(&r, 1, "PAT1", "1.9.1", T0 + 5 * HOUR);
        assert_int_equal(st_insert_received(db, &r, 1, &id, errbuf, sizeof(errbuf)), CXR_OK);
        assert_int_equal(st_get(db, id, NULL, &in, errbuf, sizeof(errbuf)), CXR_OK);
        assert_int_equal(in.duplicate_of, 1);
        assert_int_equal(st_find_sop(db, "1.2.3.4.1", &id, &s, errbuf, sizeof(errbuf)), CXR_OK);
        assert_int_equal(id, 6);
    }

    memset(&f, 0, sizeof(f));
    assert_int_equal(list_count(db, &f, &c), 6);
    assert_int_equal(c.ids[0], 6); /* newest first */
    assert_int_equal(c.ids[5], 1);
    f.since_ms = T0 + HOUR;
    f.until_ms = T0 + 3 * HOUR;
    assert_int_equal(list_count(db, &f, &c), 2);
    assert_int_equal(c.ids[0], 3);
    assert_int_equal(c.ids[1], 2);
    memset(&f, 0, sizeof(f));
    snprintf(f.patient_id, sizeof(f.patient_id), "PAT2");
    assert_int_equal(list_count(db, &f, &c), 2);
    memset(&f, 0, sizeof(f));
    snprintf(f.accession, sizeof(f.accession), "ACC4");
    assert_int_equal(list_count(db, &f, &c), 1);
    assert_int_equal(c.ids[0], 4);
    memset(&f, 0, sizeof(f));
    snprintf(f.study_uid, sizeof(f.study_uid), "1.9.1");
    assert_int_equal(list_count(db, &f, &c), 3);
    memset(&f, 0, sizeof(f));
    snprintf(f.class_name, sizeof(f.class_name), "Normal");
    assert_int_equal(list_count(db, &f, &c), 1);
    assert_int_equal(c.ids[0], 2);
    memset(&f, 0, sizeof(f));
    f.has_state = true;
    f.state = ST_RECEIVED;
    assert_int_equal(list_count(db, &f, &c), 2);
    f.state = ST_FAILED;
    assert_int_equal(list_count(db, &f, &c), 1);
    assert_int_equal(c.ids[0], 4);
    memset(&f, 0, sizeof(f));
    f.has_triage = true;
    f.triage = ST_TRIAGE_URGENT;
    assert_int_equal(list_count(db, &f, &c), 1);
    assert_int_equal(c.ids[0], 1);
    f.triage = ST_TRIAGE_NONE;
    assert_int_equal(list_count(db, &f, &c), 4);
    /* combined filters */
    memset(&f, 0, sizeof(f));
    snprintf(f.patient_id, sizeof(f.patient_id), "PAT1");
    f.has_state = true;
    f.state = ST_CLASSIFIED;
    assert_int_equal(list_count(db, &f, &c), 2);
    /* paging: 2 per page, newest first */
    memset(&f, 0, sizeof(f));
    f.limit = 2;
    assert_int_equal(list_count(db, &f, &c), 2);
    assert_int_equal(c.ids[1], 5);
    f.after_id = c.ids[1];
    assert_int_equal(list_count(db, &f, &c), 2);
    assert_int_equal(c.ids[0], 4);
    assert_int_equal(c.ids[1], 3);
    f.after_id = 1;
    assert_int_equal(list_count(db, &f, &c), 0);

    /* pending: oldest first */
    memset(&c, 0, sizeof(c));
    assert_int_equal(st_each_pending(db, collect_fn, &c, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.ids[0], 5);
    assert_int_equal(c.ids[1], 6);

    assert_int_equal(st_counts(db, n_state, n_triage, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(n_state[ST_RECEIVED], 2);
    assert_int_equal(n_state[ST_CLASSIFIED], 2);
    assert_int_equal(n_state[ST_SKIPPED], 1);
    assert_int_equal(n_state[ST_FAILED], 1);
    assert_int_equal(n_triage[ST_TRIAGE_URGENT], 1);
    assert_int_equal(n_triage[ST_TRIAGE_NORMAL], 1);
    assert_int_equal(n_triage[ST_TRIAGE_NONE], 4);
    st_close(db);
}

struct evlist {
    int n;
    char kinds[16][32];
    int64_t inst[16];
};

static bool ev_fn(void *user, const struct st_event *e)
{
    struct evlist *l = user;
    if (l->n < 16) {
        snprintf(l->kinds[l->n], sizeof(l->kinds[0]), "%s", e->kind);
        l->inst[l->n++] = e->instance_id;
    }
    return true;
}

static void test_events_and_finish_twice(void **state)
{
    st_db *db = open_db(ST_OPEN_WRITE);
    struct st_result res;
    struct evlist l;
    int64_t id = insert(db, 1, "P", "1.9", T0);

    classified(&res, 0.5, 0.2, 0.2, 0.1, ST_TRIAGE_ROUTINE);
    finish(db, id, &res);
    assert_int_equal(st_finish(db, id, &res, errbuf, sizeof(errbuf)), CXR_EINVAL);
    assert_non_null(strstr(errbuf, dbpath));
    assert_non_null(strstr(errbuf, "finish instance"));
    assert_non_null(strstr(errbuf, "already classified"));
    skipped(&res, "x");
    assert_int_equal(st_finish(db, id, &res, errbuf, sizeof(errbuf)), CXR_EINVAL);
    assert_int_equal(st_finish(db, 77, &res, errbuf, sizeof(errbuf)), CXR_ENOTFOUND);
    res.state = ST_RECEIVED;
    assert_int_equal(st_finish(db, id, &res, errbuf, sizeof(errbuf)), CXR_EINVAL);

    assert_int_equal(
        st_add_event(db, 0, "association.refused", "calling_aet=EVIL", errbuf, sizeof(errbuf)),
        CXR_OK);
    memset(&l, 0, sizeof(l));
    assert_int_equal(st_events(db, id, ev_fn, &l, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.kinds[0], "received");
    assert_string_equal(l.kinds[1], "classified");
    memset(&l, 0, sizeof(l));
    assert_int_equal(st_events(db, 0, ev_fn, &l, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.kinds[0], "association.refused");
    assert_int_equal(l.inst[0], 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(st_events(db, -1, ev_fn, &l, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(l.n, 3);
    st_close(db);
}

struct writer_arg {
    int n;
    cxr_err err;
};

static void *writer_thread(void *p)
{
    struct writer_arg *a = p;
    st_db *db = NULL;
    char eb[512];
    struct st_receipt r;
    struct st_result res;
    int64_t id;

    a->err = st_open(dbpath, ST_OPEN_WRITE, &db, eb, sizeof(eb));
    for (int i = 0; !a->err && i < a->n; i++) {
        receipt(&r, 100 + i, "PW", "1.8", T0 + i);
        a->err = st_insert_received(db, &r, 0, &id, eb, sizeof(eb));
        classified(&res, 0.1, 0.1, 0.7, 0.1, ST_TRIAGE_NORMAL);
        if (!a->err)
            a->err = st_finish(db, id, &res, eb, sizeof(eb));
    }
    st_close(db);
    return NULL;
}

static void test_readers_during_writes(void **state)
{
    st_db *w = open_db(ST_OPEN_WRITE), *r;
    struct writer_arg arg = {.n = 60, .err = CXR_OK};
    struct st_filter f;
    struct collect c;
    struct st_receipt rc;
    sqlite3 *raw;
    pthread_t t;
    int64_t id, problems = 0, last = 0;
    struct cxr_buf rep;

    fill(w);
    r = open_db(ST_OPEN_READ);
    /* a reader cannot write */
    receipt(&rc, 9, "P", "1.9", T0);
    assert_int_equal(st_insert_received(r, &rc, 0, &id, errbuf, sizeof(errbuf)), CXR_EINVAL);
    assert_non_null(strstr(errbuf, "read-only"));

    /* an open write transaction does not block the reader (WAL) */
    assert_int_equal(sqlite3_open(dbpath, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw, "BEGIN IMMEDIATE; UPDATE instances SET accession = 'X'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    memset(&f, 0, sizeof(f));
    assert_int_equal(list_count(r, &f, &c), 5);
    assert_int_equal(sqlite3_exec(raw, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(raw);

    /* a writer thread inserting while the reader lists and verifies */
    st_close(w);
    assert_int_equal(pthread_create(&t, NULL, writer_thread, &arg), 0);
    for (int i = 0; i < 40; i++) {
        int n = list_count(r, &f, &c);
        assert_true(n >= last);
        last = n;
        cxr_buf_init(&rep, 1 << 20);
        assert_int_equal(st_verify(r, &rep, &problems, errbuf, sizeof(errbuf)), CXR_OK);
        if (problems)
            fail_msg("verify during writes: %s", cxr_buf_str(&rep));
        cxr_buf_done(&rep);
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(arg.err, CXR_OK);
    assert_int_equal(list_count(r, &f, &c), 5 + 60);
    st_close(r);
}

static void test_migrations(void **state)
{
    st_db *db;
    sqlite3 *raw;
    char missing[160];

    /* a reader on a file that does not exist */
    snprintf(missing, sizeof(missing), "%s/nope.db", tmpdir);
    assert_int_equal(st_open(missing, ST_OPEN_READ, &db, errbuf, sizeof(errbuf)), CXR_ENOTFOUND);
    assert_non_null(strstr(errbuf, missing));
    assert_int_equal(access(missing, F_OK), -1); /* and it did not create it */

    db = open_db(ST_OPEN_WRITE);
    assert_true(st_schema_version(db) >= 1);
    st_close(db);
    db = open_db(ST_OPEN_WRITE); /* reopening migrates nothing */
    assert_true(st_schema_version(db) >= 1);
    st_close(db);
    db = open_db(ST_OPEN_READ);
    assert_true(st_schema_version(db) >= 1);
    st_close(db);

    assert_int_equal(sqlite3_open(dbpath, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(raw);
    db = NULL;
    assert_int_equal(st_open(dbpath, ST_OPEN_WRITE, &db, errbuf, sizeof(errbuf)), CXR_EUNSUPPORTED);
    assert_null(db);
    assert_non_null(strstr(errbuf, dbpath));
    assert_non_null(strstr(errbuf, "newer"));
    assert_non_null(strstr(errbuf, "99"));
    assert_int_equal(st_open(dbpath, ST_OPEN_READ, &db, errbuf, sizeof(errbuf)), CXR_EUNSUPPORTED);

    /* a reader on a file the daemon never initialised */
    snprintf(missing, sizeof(missing), "%s/empty.db", tmpdir);
    {
        FILE *f = fopen(missing, "w");
        assert_non_null(f);
        assert_int_equal(fclose(f), 0);
    }
    assert_int_equal(st_open(missing, ST_OPEN_READ, &db, errbuf, sizeof(errbuf)), CXR_EDB);
    assert_non_null(strstr(errbuf, "schema version 0"));
}

static void check_mode(const char *suffix)
{
    char p[200];
    struct stat sb;
    snprintf(p, sizeof(p), "%s%s", dbpath, suffix);
    if (stat(p, &sb) != 0)
        fail_msg("%s: missing", p);
    if ((sb.st_mode & 0777) != 0600)
        fail_msg("%s: mode %o, want 600", p, (unsigned)(sb.st_mode & 0777));
}

static void test_file_modes(void **state)
{
    mode_t old = umask(0); /* the worst case: a umask that hides nothing */
    st_db *db = open_db(ST_OPEN_WRITE), *r;

    fill(db);
    r = open_db(ST_OPEN_READ);
    check_mode("");
    check_mode("-wal");
    check_mode("-shm");
    st_close(r);
    st_close(db);
    umask(old);
}

/* Runs sql on the file with a plain connection, as an attacker with the sqlite3 shell would
 * (foreign keys off, the shell's default). */
static void tamper(const char *sql)
{
    sqlite3 *raw;
    char *msg = NULL;
    assert_int_equal(sqlite3_open(dbpath, &raw), SQLITE_OK);
    if (sqlite3_exec(raw, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("tamper '%s': %s", sql, msg);
    sqlite3_close(raw);
}

static void remove_db(void)
{
    char p[200];
    (void)unlink(dbpath);
    snprintf(p, sizeof(p), "%s-wal", dbpath);
    (void)unlink(p);
    snprintf(p, sizeof(p), "%s-shm", dbpath);
    (void)unlink(p);
}

/* Runs st_verify on a fresh ledger after sql and checks that a line contains want. */
/* Runs sql (NULL: nothing) on the closed ledger, then st_verify: no problem when want is NULL,
 * else at least one whose text contains want. */
static void tamper_and_verify(const char *sql, const char *want)
{
    struct cxr_buf rep;
    int64_t problems = -1;
    st_db *db;

    if (sql)
        tamper(sql);
    db = open_db(ST_OPEN_READ);
    cxr_buf_init(&rep, 1 << 20);
    assert_int_equal(st_verify(db, &rep, &problems, errbuf, sizeof(errbuf)), CXR_OK);
    if (!want) {
        if (problems)
            fail_msg("clean ledger: %s", cxr_buf_str(&rep));
    } else if (problems == 0 || !strstr(cxr_buf_str(&rep), want)) {
        fail_msg("after '%s': wanted '%s', got %lld problem(s):\n%s", sql, want,
                 (long long)problems, cxr_buf_str(&rep));
    }
    cxr_buf_done(&rep);
    st_close(db);
}

static void verify_finds(const char *sql, const char *want)
{
    st_db *db;

    remove_db();
    db = open_db(ST_OPEN_WRITE);
    fill(db);
    st_close(db);
    tamper_and_verify(sql, want);
}

static void test_verify(void **state)
{
    verify_finds(NULL, NULL);
    verify_finds("UPDATE instances SET top_score = 0.99,"
                 " scores = replace(scores, '0.91', '0.11') WHERE id = 1",
                 "instance 1: content changed after event");
    verify_finds("UPDATE instances SET triage = 'normal' WHERE id = 1",
                 "instance 1: content changed after event");
    verify_finds("DELETE FROM events WHERE id = 3", "event 3: missing (chain jumps from 2 to 4)");
    verify_finds("DELETE FROM events WHERE id = (SELECT max(id) FROM events)",
                 "deleted from the end of the chain");
    verify_finds("DELETE FROM instances WHERE id = 2", "instance 2: missing (deleted)");
    verify_finds("INSERT INTO events (instance_id, at, kind, detail, row_hash, prev_hash, hash)"
                 " VALUES (1, 0, 'classified', 'forged', 'x',"
                 " (SELECT hash FROM events ORDER BY id DESC LIMIT 1), 'y')",
                 ": hash does not match its content");
    verify_finds("UPDATE events SET detail = 'edited' WHERE id = 2",
                 "event 2: hash does not match its content");
    verify_finds("UPDATE events SET prev_hash = hash WHERE id = 4", "event 4:");
    verify_finds("INSERT INTO instances (sop_instance_uid, received_at, state, updated_at)"
                 " VALUES ('6.6.6', 0, 'received', 0)",
                 "instance 6: no event records it");
}

struct spool_list {
    int n;
    int64_t ids[8];
};

static bool spool_fn(void *user, int64_t id, const char *path)
{
    struct spool_list *l = user;
    if (l->n < 8)
        l->ids[l->n++] = id;
    return strstr(path, "/spool/in/") != NULL;
}

static void test_spool_expiry(void **state)
{
    st_db *db = open_db(ST_OPEN_WRITE);
    struct spool_list l = {0};
    struct cxr_buf rep;
    int64_t problems = -1;

    fill(db);
    assert_int_equal(st_each_expired_spool(db, T0 + 2 * HOUR, spool_fn, &l, errbuf, sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.ids[0], 1);
    assert_int_equal(l.ids[1], 2);
    assert_int_equal(st_spool_forget(db, 1, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(st_spool_forget(db, 99, errbuf, sizeof(errbuf)), CXR_ENOTFOUND);
    memset(&l, 0, sizeof(l));
    assert_int_equal(st_each_expired_spool(db, T0 + 2 * HOUR, spool_fn, &l, errbuf, sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.ids[0], 2);
    cxr_buf_init(&rep, 1 << 20);
    assert_int_equal(st_verify(db, &rep, &problems, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(problems, 0);
    cxr_buf_done(&rep);
    st_close(db);
}

struct study_list {
    int n;
    char uids[8][ST_UID_MAX];
};

static bool study_fn(void *user, const struct st_study *s)
{
    struct study_list *l = user;
    if (l->n < 8)
        snprintf(l->uids[l->n++], ST_UID_MAX, "%s", s->study_uid);
    return true;
}

/* Issue 13 (tests/reliability/run, kill -9 rounds): the instance row and its study row are one
 * transaction. They were two, and a daemon killed between the commits left a row whose study
 * did not exist: after the restart that study never completed ("no such study") and its report
 * was never sent. Now the insert alone opens the study, and an instance without a study UID
 * opens none. */
static void test_study_with_insert(void **state)
{
    st_db *db = open_db(ST_OPEN_WRITE);
    struct st_result res;
    struct st_study s;
    struct study_list l = {0};
    int64_t a;
    (void)state;

    a = insert(db, 1, "P", "1.8", T0);
    (void)insert(db, 2, "P", "", T0 + 1000);
    assert_int_equal(st_each_open_study(db, study_fn, &l, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.uids[0], "1.8");
    classified(&res, 0.30, 0.70, 0.10, 0.05, ST_TRIAGE_ROUTINE);
    finish(db, a, &res);
    memset(&s, 0, sizeof(s));
    assert_int_equal(st_study_complete(db, "1.8", T0 + 5000, &s, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(s.n_instances, 1);
    assert_int_equal(s.first_received_ms, T0);
    st_close(db);
}

static void test_study(void **state)
{
    st_db *db = open_db(ST_OPEN_WRITE);
    struct st_result res;
    struct st_study s;
    struct study_list l = {0};
    struct cxr_buf rep;
    int64_t a, b, c, problems = -1;
    bool settled;

    a = insert(db, 1, "P", "1.7", T0);
    assert_int_equal(st_study_touch(db, "1.7", "P", "ACC1", T0, errbuf, sizeof(errbuf)), CXR_OK);
    b = insert(db, 2, "P", "1.7", T0 + 1000);
    assert_int_equal(st_study_touch(db, "1.7", "P", "ACC1", T0 + 1000, errbuf, sizeof(errbuf)),
                     CXR_OK);
    c = insert(db, 3, "P", "1.7", T0 + 2000);
    assert_int_equal(st_study_touch(db, "1.7", "P", "ACC1", T0 + 2000, errbuf, sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(st_each_open_study(db, study_fn, &l, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.uids[0], "1.7");

    classified(&res, 0.30, 0.70, 0.10, 0.05, ST_TRIAGE_ROUTINE);
    finish(db, a, &res);
    assert_int_equal(st_study_settled(db, "1.7", &settled, errbuf, sizeof(errbuf)), CXR_OK);
    assert_false(settled);
    classified(&res, 0.60, 0.20, 0.15, 0.40, ST_TRIAGE_URGENT);
    finish(db, b, &res);
    skipped(&res, "Modality CT");
    finish(db, c, &res);
    assert_int_equal(st_study_settled(db, "1.7", &settled, errbuf, sizeof(errbuf)), CXR_OK);
    assert_true(settled);

    assert_int_equal(st_study_complete(db, "1.7", T0 + 60000, &s, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(s.n_instances, 3);
    assert_int_equal(s.n_scored, 2);
    assert_int_equal(s.n_skipped, 1);
    assert_int_equal(s.n_failed, 0);
    assert_int_equal(s.n_classes, 4);
    assert_true(s.scores[0] == 0.60 && s.scores[1] == 0.70 && s.scores[2] == 0.15 &&
                s.scores[3] == 0.40);
    assert_int_equal(s.triage, ST_TRIAGE_URGENT);
    assert_string_equal(s.skipped, "1.2.3.4.3: Modality CT");
    assert_int_equal(s.completed_ms, T0 + 60000);
    assert_int_equal(s.first_received_ms, T0);
    assert_int_equal(s.last_received_ms, T0 + 2000);

    memset(&s, 0, sizeof(s));
    assert_int_equal(st_get_study(db, "1.7", &s, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(s.triage, ST_TRIAGE_URGENT);
    assert_true(s.scores[1] == 0.70);
    assert_string_equal(s.accession, "ACC1");
    assert_int_equal(s.completed_ms, T0 + 60000);
    memset(&l, 0, sizeof(l));
    assert_int_equal(st_each_open_study(db, study_fn, &l, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(l.n, 0);
    assert_int_equal(st_get_study(db, "9.9", &s, errbuf, sizeof(errbuf)), CXR_ENOTFOUND);

    /* a late instance re-opens it */
    assert_int_equal(st_study_touch(db, "1.7", "P", "ACC1", T0 + 90000, errbuf, sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(st_get_study(db, "1.7", &s, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(s.completed_ms, 0);

    /* many skipped instances: the list is bounded and marked truncated */
    for (int i = 0; i < 40; i++) {
        int64_t id = insert(db, 200 + i, "P", "1.6", T0);
        skipped(&res, "ViewPosition LL is not PA or AP, BodyPartExamined is SKULL");
        finish(db, id, &res);
    }
    assert_int_equal(st_study_touch(db, "1.6", "P", "", T0, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(st_study_complete(db, "1.6", T0 + 1, &s, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(s.n_skipped, 40);
    assert_int_equal(s.n_classes, 0);
    assert_int_equal(s.triage, ST_TRIAGE_NONE);
    assert_true(strlen(s.skipped) < sizeof(s.skipped));
    assert_non_null(strstr(s.skipped, "1.2.3.4.200: ViewPosition"));
    assert_string_equal(s.skipped + strlen(s.skipped) - 3, "...");

    cxr_buf_init(&rep, 1 << 20);
    assert_int_equal(st_verify(db, &rep, &problems, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(problems, 0);
    cxr_buf_done(&rep);
    st_close(db);
}

static void test_json(void **state)
{
    static const char *const keys[] = {"id",
                                       "sop_instance_uid",
                                       "study_instance_uid",
                                       "series_instance_uid",
                                       "sop_class_uid",
                                       "accession",
                                       "patient_id",
                                       "calling_aet",
                                       "peer",
                                       "transfer_syntax",
                                       "size_bytes",
                                       "received_at",
                                       "state",
                                       "gate_reason",
                                       "scores",
                                       "triage",
                                       "triage_reason",
                                       "rule",
                                       "model_digest",
                                       "pixel_sha256",
                                       "timings_ms",
                                       "error",
                                       "duplicate_of",
                                       "source"};
    st_db *db = open_db(ST_OPEN_WRITE);
    struct st_instance in;
    struct st_result res;
    struct cxr_buf out;
    json_t *o, *v;
    json_error_t jerr;
    int64_t id;

    id = insert(db, 1, "PAT \"quoted\"\n", "1.9", T0 + 123);
    classified(&res, 0.91, 0.05, 0.02, 0.02, ST_TRIAGE_URGENT);
    finish(db, id, &res);
    assert_int_equal(st_get(db, id, NULL, &in, errbuf, sizeof(errbuf)), CXR_OK);
    cxr_buf_init(&out, 1 << 16);
    assert_int_equal(st_instance_json(&in, &out), CXR_OK);
    assert_null(strchr(cxr_buf_str(&out), '\n'));
    o = json_loads(cxr_buf_str(&out), 0, &jerr);
    if (!o)
        fail_msg("not JSON (%s): %s", jerr.text, cxr_buf_str(&out));
    assert_int_equal(json_object_size(o), CXR_ARRAY_SIZE(keys));
    for (size_t i = 0; i < CXR_ARRAY_SIZE(keys); i++)
        if (!json_object_get(o, keys[i]))
            fail_msg("key '%s' missing: %s", keys[i], cxr_buf_str(&out));
    assert_int_equal(json_integer_value(json_object_get(o, "id")), id);
    assert_string_equal(json_string_value(json_object_get(o, "sop_instance_uid")), "1.2.3.4.1");
    assert_string_equal(json_string_value(json_object_get(o, "study_instance_uid")), "1.9");
    assert_string_equal(json_string_value(json_object_get(o, "series_instance_uid")), "1.9.1");
    assert_string_equal(json_string_value(json_object_get(o, "accession")), "ACC1");
    assert_string_equal(json_string_value(json_object_get(o, "patient_id")), "PAT \"quoted\"\n");
    assert_string_equal(json_string_value(json_object_get(o, "calling_aet")), "PACS1");
    assert_string_equal(json_string_value(json_object_get(o, "peer")), "127.0.0.1");
    assert_int_equal(json_integer_value(json_object_get(o, "size_bytes")), 1001);
    assert_string_equal(json_string_value(json_object_get(o, "received_at")),
                        "2026-12-02T00:00:00.123Z");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "classified");
    assert_string_equal(json_string_value(json_object_get(o, "gate_reason")), "");
    assert_string_equal(json_string_value(json_object_get(o, "triage")), "urgent");
    assert_string_equal(json_string_value(json_object_get(o, "triage_reason")),
                        "COVID-19 0.91 >= 0.42");
    assert_string_equal(json_string_value(json_object_get(o, "model_digest")), res.model_digest);
    assert_true(json_is_null(json_object_get(o, "duplicate_of")));
    v = json_object_get(o, "scores");
    assert_int_equal(json_object_size(v), 4);
    assert_true(json_real_value(json_object_get(v, "COVID-19")) == 0.91);
    assert_true(json_real_value(json_object_get(v, "Viral Pneumonia")) == 0.02);
    v = json_object_get(o, "timings_ms");
    assert_int_equal(json_object_size(v), 3); /* receive, decode, infer were measured */
    assert_true(json_real_value(json_object_get(v, "receive")) == 12.5);
    assert_true(json_real_value(json_object_get(v, "decode")) == 3.25);
    assert_true(json_real_value(json_object_get(v, "infer")) == 40.5);
    assert_null(json_object_get(v, "queue"));
    json_decref(o);

    /* a received row: no scores, no triage */
    id = insert(db, 2, "P", "1.9", T0);
    assert_int_equal(st_get(db, id, NULL, &in, errbuf, sizeof(errbuf)), CXR_OK);
    cxr_buf_reset(&out);
    assert_int_equal(st_instance_json(&in, &out), CXR_OK);
    o = json_loads(cxr_buf_str(&out), 0, &jerr);
    assert_non_null(o);
    assert_true(json_is_null(json_object_get(o, "scores")));
    assert_true(json_is_null(json_object_get(o, "triage")));
    assert_string_equal(json_string_value(json_object_get(o, "state")), "received");
    json_decref(o);
    cxr_buf_done(&out);
    st_close(db);
}

/* ---- the report outbox ---- */

struct build_ctx {
    int n;           /* reports to give; -1 to refuse */
    bool correct;    /* link each to the latest report of its destination and format */
    bool no_key;     /* give a report without an idempotency key */
    bool no_control; /* give an HL7 report without its control id */
    int calls;
    int64_t completed_ms; /* the combined result seen by the builder */
    int n_scored;
};

static int build_reports(void *user, st_db *db, const struct st_study *s, struct st_report_new *out,
                         int max)
{
    struct build_ctx *b = user;
    static const char *const dests[2] = {"webhook", "ehr2"};

    b->calls++;
    b->completed_ms = s->completed_ms;
    b->n_scored = s->n_scored;
    assert_true(max >= 2);
    for (int i = 0; i < (b->n < 0 ? 1 : b->n); i++) {
        struct st_report_new *r = &out[i];
        enum st_report_format f = i % 2 ? ST_FORMAT_FHIR : ST_FORMAT_HL7;
        struct st_report prev;
        char body[256];

        snprintf(r->destination, sizeof(r->destination), "%s", dests[i / 2 % 2]);
        r->format = f;
        snprintf(r->content_type, sizeof(r->content_type), "%s",
                 f == ST_FORMAT_HL7 ? "x-application/hl7-v2+er7" : "application/fhir+json");
        if (!b->no_key)
            snprintf(r->idempotency_key, sizeof(r->idempotency_key), "cxr-%s-%d%s", s->study_uid, i,
                     b->correct ? "c" : "");
        if (!b->no_control)
            snprintf(r->control_id, sizeof(r->control_id), "CXR%017d", i + 1);
        snprintf(r->report_id, sizeof(r->report_id), "%s-%d", s->study_uid, i);
        snprintf(r->model_digest, sizeof(r->model_digest), "%s", s->model_digest);
        if (b->correct) {
            /* inside the completion's transaction: the builder reads the ledger */
            assert_int_equal(st_report_latest(db, s->study_uid, r->destination, f, &prev, errbuf,
                                              sizeof(errbuf)),
                             CXR_OK);
            r->is_correction = true;
            r->corrects = prev.id;
        }
        snprintf(body, sizeof(body), "MSH|^~\\&|CXR|%s|%d\r", s->study_uid, i);
        r->body = strdup(body);
        assert_non_null(r->body);
        r->body_len = strlen(body);
    }
    return b->n;
}

/* A study 1.7 of two classified instances, settled and ready to complete. */
static void open_study(st_db *db, const char *uid, int first)
{
    struct st_result res;
    for (int i = 0; i < 2; i++) {
        int64_t id = insert(db, first + i, "P", uid, T0 + i);
        assert_int_equal(st_study_touch(db, uid, "P", "ACC", T0 + i, errbuf, sizeof(errbuf)),
                         CXR_OK);
        classified(&res, 0.6 - 0.1 * i, 0.2, 0.1, 0.1, ST_TRIAGE_URGENT);
        finish(db, id, &res);
    }
}

struct rlist {
    int n;
    struct st_report r[16];
};

static bool rlist_fn(void *user, const struct st_report *r)
{
    struct rlist *l = user;
    if (l->n < 16) {
        l->r[l->n] = *r;
        l->r[l->n].body = NULL; /* valid during the call only */
        if (r->body)
            l->r[l->n].body_len = r->body_len;
        l->n++;
    }
    return true;
}

static int report_count(st_db *db, const struct st_report_filter *f, struct rlist *l)
{
    memset(l, 0, sizeof(*l));
    if (st_report_list(db, f, rlist_fn, l, errbuf, sizeof(errbuf)))
        fail_msg("report list: %s", errbuf);
    return l->n;
}

static int due_count(st_db *db, int64_t now, struct rlist *l)
{
    memset(l, 0, sizeof(*l));
    if (st_outbox_due(db, now, 0, rlist_fn, l, errbuf, sizeof(errbuf)))
        fail_msg("due: %s", errbuf);
    return l->n;
}

static void verify_clean(st_db *db)
{
    struct cxr_buf rep;
    int64_t problems = -1;
    cxr_buf_init(&rep, 1 << 20);
    assert_int_equal(st_verify(db, &rep, &problems, errbuf, sizeof(errbuf)), CXR_OK);
    if (problems)
        fail_msg("verify: %s", cxr_buf_str(&rep));
    cxr_buf_done(&rep);
}

static void test_outbox_complete(void **state)
{
    st_db *db = open_db(ST_OPEN_WRITE);
    struct build_ctx b = {.n = 2};
    struct st_report_filter f;
    struct st_report r;
    struct st_study s;
    struct study_list l = {0};
    struct evlist ev;
    struct rlist rl;

    open_study(db, "1.7", 1);
    assert_int_equal(st_study_complete_reports(db, "1.7", T0 + 60000, build_reports, &b, &s, errbuf,
                                               sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.completed_ms, T0 + 60000); /* the combined result was computed first */
    assert_int_equal(b.n_scored, 2);
    assert_int_equal(s.completed_ms, T0 + 60000);
    memset(&f, 0, sizeof(f));
    assert_int_equal(report_count(db, &f, &rl), 2);
    assert_int_equal(rl.r[0].id, 2); /* newest first */
    assert_int_equal(rl.r[1].format, ST_FORMAT_HL7);
    assert_int_equal(rl.r[1].state, ST_REPORT_PENDING);
    assert_int_equal(rl.r[1].attempts, 0);
    assert_int_equal(rl.r[1].created_at_ms, T0 + 60000);
    assert_int_equal(rl.r[1].next_attempt_at_ms, T0 + 60000);
    assert_int_equal(rl.r[1].delivered_at_ms, 0);
    assert_string_equal(rl.r[1].study_uid, "1.7");
    assert_string_equal(rl.r[1].destination, "webhook");
    assert_string_equal(rl.r[1].idempotency_key, "cxr-1.7-0");
    assert_string_equal(rl.r[1].control_id, "CXR00000000000000001");
    assert_string_equal(rl.r[1].report_id, "1.7-0");
    assert_string_equal(rl.r[0].content_type, "application/fhir+json");
    assert_false(rl.r[1].is_correction);
    assert_null(rl.r[1].body); /* lists carry no bodies */

    assert_int_equal(st_report_get(db, 1, true, &r, errbuf, sizeof(errbuf)), CXR_OK);
    assert_string_equal(r.body, "MSH|^~\\&|CXR|1.7|0\r");
    assert_int_equal(r.body_len, strlen("MSH|^~\\&|CXR|1.7|0\r"));
    st_report_done(&r);
    assert_null(r.body);
    assert_int_equal(st_report_get(db, 1, false, &r, errbuf, sizeof(errbuf)), CXR_OK);
    assert_null(r.body);
    assert_int_equal(st_report_get(db, 99, false, &r, errbuf, sizeof(errbuf)), CXR_ENOTFOUND);
    assert_non_null(strstr(errbuf, dbpath));
    assert_non_null(strstr(errbuf, "get report"));

    /* the completion and the queueing are one transaction, in that order in the chain */
    memset(&ev, 0, sizeof(ev));
    assert_int_equal(st_events(db, 0, ev_fn, &ev, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(ev.n, 3);
    assert_string_equal(ev.kinds[0], "study.complete");
    assert_string_equal(ev.kinds[1], "report.queued");
    assert_string_equal(ev.kinds[2], "report.queued");

    /* the builder refuses: nothing is committed and the study stays open */
    open_study(db, "1.8", 10);
    b = (struct build_ctx){.n = -1};
    assert_int_equal(st_study_complete_reports(db, "1.8", T0 + 70000, build_reports, &b, &s, errbuf,
                                               sizeof(errbuf)),
                     CXR_EINVAL);
    assert_non_null(strstr(errbuf, "complete study"));
    assert_non_null(strstr(errbuf, "report builder refused"));
    assert_int_equal(st_get_study(db, "1.8", &s, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(s.completed_ms, 0);
    assert_int_equal(st_each_open_study(db, study_fn, &l, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.uids[0], "1.8");
    snprintf(f.study_uid, sizeof(f.study_uid), "1.8");
    assert_int_equal(report_count(db, &f, &rl), 0);

    /* an invalid report rolls the completion back as well */
    b = (struct build_ctx){.n = 2, .no_key = true};
    assert_int_equal(st_study_complete_reports(db, "1.8", T0 + 70000, build_reports, &b, &s, errbuf,
                                               sizeof(errbuf)),
                     CXR_EINVAL);
    assert_non_null(strstr(errbuf, "idempotency key"));
    b = (struct build_ctx){.n = 1, .no_control = true};
    assert_int_equal(st_study_complete_reports(db, "1.8", T0 + 70000, build_reports, &b, &s, errbuf,
                                               sizeof(errbuf)),
                     CXR_EINVAL);
    assert_non_null(strstr(errbuf, "control id"));
    assert_int_equal(st_get_study(db, "1.8", &s, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(s.completed_ms, 0);
    assert_int_equal(report_count(db, &f, &rl), 0);
    memset(&ev, 0, sizeof(ev));
    assert_int_equal(st_events(db, 0, ev_fn, &ev, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(ev.n, 3);

    /* no reports: the study completes like st_study_complete */
    b = (struct build_ctx){.n = 0};
    assert_int_equal(st_study_complete_reports(db, "1.8", T0 + 80000, build_reports, &b, &s, errbuf,
                                               sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(s.completed_ms, T0 + 80000);
    assert_int_equal(report_count(db, &f, &rl), 0);
    verify_clean(db);
    st_close(db);
}

static void test_outbox_corrections(void **state)
{
    st_db *db = open_db(ST_OPEN_WRITE);
    struct build_ctx b = {.n = 4};
    struct st_report r;
    struct st_study s;
    struct st_result res;
    int64_t id;

    assert_int_equal(
        st_report_latest(db, "1.7", "webhook", ST_FORMAT_HL7, &r, errbuf, sizeof(errbuf)),
        CXR_ENOTFOUND);
    open_study(db, "1.7", 1);
    assert_int_equal(st_study_complete_reports(db, "1.7", T0 + 60000, build_reports, &b, &s, errbuf,
                                               sizeof(errbuf)),
                     CXR_OK);
    /* reports 1 webhook/hl7, 2 webhook/fhir, 3 ehr2/hl7, 4 ehr2/fhir */
    assert_int_equal(st_report_latest(db, "1.7", "ehr2", ST_FORMAT_HL7, &r, errbuf, sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(r.id, 3);
    assert_null(r.body);
    assert_int_equal(
        st_report_latest(db, "1.7", "webhook", ST_FORMAT_FHIR, &r, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(r.id, 2);
    assert_int_equal(
        st_report_latest(db, "1.9", "webhook", ST_FORMAT_FHIR, &r, errbuf, sizeof(errbuf)),
        CXR_ENOTFOUND);

    /* a late instance re-opens the study; its second completion corrects each report */
    id = insert(db, 5, "P", "1.7", T0 + 90000);
    assert_int_equal(st_study_touch(db, "1.7", "P", "ACC", T0 + 90000, errbuf, sizeof(errbuf)),
                     CXR_OK);
    classified(&res, 0.95, 0.2, 0.1, 0.1, ST_TRIAGE_URGENT);
    finish(db, id, &res);
    b = (struct build_ctx){.n = 4, .correct = true};
    assert_int_equal(st_study_complete_reports(db, "1.7", T0 + 120000, build_reports, &b, &s,
                                               errbuf, sizeof(errbuf)),
                     CXR_OK);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(st_report_get(db, 5 + i, false, &r, errbuf, sizeof(errbuf)), CXR_OK);
        assert_true(r.is_correction);
        assert_int_equal(r.corrects, 1 + i);
    }
    assert_int_equal(
        st_report_latest(db, "1.7", "webhook", ST_FORMAT_HL7, &r, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(r.id, 5);
    verify_clean(db);
    st_close(db);
}

struct alist {
    int n;
    struct st_report_attempt a[8];
};

static bool alist_fn(void *user, const struct st_report_attempt *a)
{
    struct alist *l = user;
    if (l->n < 8)
        l->a[l->n++] = *a;
    return true;
}

static void test_outbox_delivery(void **state)
{
    static const char *const keys[] = {
        "id",           "study_instance_uid", "destination",     "format",       "content_type",
        "state",        "attempts",           "idempotency_key", "control_id",   "report_id",
        "model_digest", "is_correction",      "corrects",        "created_at",   "next_attempt_at",
        "delivered_at", "last_status",        "last_detail",     "last_response"};
    const int64_t t = T0 + 60000;
    st_db *db = open_db(ST_OPEN_WRITE);
    struct build_ctx b = {.n = 2};
    struct st_report r, before;
    struct st_study s;
    struct rlist rl;
    struct alist al;
    struct st_report_filter f;
    struct cxr_buf out;
    json_t *o;
    json_error_t jerr;
    int64_t np, nd, nx;
    char big[3000];

    open_study(db, "1.7", 1);
    assert_int_equal(
        st_study_complete_reports(db, "1.7", t, build_reports, &b, &s, errbuf, sizeof(errbuf)),
        CXR_OK);
    assert_int_equal(due_count(db, t - 1, &rl), 0);
    assert_int_equal(due_count(db, t, &rl), 2);
    assert_int_equal(rl.r[0].id, 1); /* oldest first, with bodies */
    assert_int_equal(rl.r[0].body_len, strlen("MSH|^~\\&|CXR|1.7|0\r"));
    memset(&rl, 0, sizeof(rl));
    assert_int_equal(st_outbox_due(db, t, 1, rlist_fn, &rl, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(rl.n, 1);

    /* retry: counted, due again later; the receiver's excerpt is bounded */
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    big[ST_RESPONSE_MAX - 2] = (char)0xc3; /* a two-byte sequence across the cut */
    big[ST_RESPONSE_MAX - 1] = (char)0xa9;
    assert_int_equal(st_report_attempt(db, 1, t + 100, ST_ATTEMPT_RETRY, 503, "HTTP 503", big, 12.5,
                                       t + 30000, errbuf, sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(st_report_get(db, 1, false, &r, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(r.state, ST_REPORT_PENDING);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.next_attempt_at_ms, t + 30000);
    assert_int_equal(r.last_status, 503);
    assert_string_equal(r.last_detail, "HTTP 503");
    assert_int_equal(strlen(r.last_response), ST_RESPONSE_MAX - 2);
    assert_int_equal(r.delivered_at_ms, 0);
    assert_int_equal(due_count(db, t + 1000, &rl), 1);
    assert_int_equal(rl.r[0].id, 2);
    assert_int_equal(due_count(db, t + 30000, &rl), 2);

    /* delivered */
    assert_int_equal(st_report_attempt(db, 1, t + 30100, ST_ATTEMPT_DELIVERED, 200, "HTTP 200",
                                       "{\"ok\":true}", 8, 0, errbuf, sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(st_report_get(db, 1, false, &r, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(r.state, ST_REPORT_DELIVERED);
    assert_int_equal(r.delivered_at_ms, t + 30100);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.last_status, 200);
    /* a delivered report gets no more attempts and cannot be requeued */
    assert_int_equal(st_report_attempt(db, 1, t + 30200, ST_ATTEMPT_RETRY, 500, "", "", 1, t,
                                       errbuf, sizeof(errbuf)),
                     CXR_EINVAL);
    assert_non_null(strstr(errbuf, "report 1 is delivered, not pending"));
    assert_int_equal(st_report_requeue(db, 1, t, errbuf, sizeof(errbuf)), CXR_EINVAL);
    assert_non_null(strstr(errbuf, "not dead"));
    /* a pending one cannot be requeued either; a missing one is not found */
    assert_int_equal(st_report_requeue(db, 2, t, errbuf, sizeof(errbuf)), CXR_EINVAL);
    assert_non_null(strstr(errbuf, "report 2 is pending, not dead"));
    assert_int_equal(st_report_requeue(db, 42, t, errbuf, sizeof(errbuf)), CXR_ENOTFOUND);
    assert_int_equal(
        st_report_attempt(db, 42, t, ST_ATTEMPT_DEAD, 0, "", "", 1, 0, errbuf, sizeof(errbuf)),
        CXR_ENOTFOUND);

    /* dead: parked, not due, kept */
    assert_int_equal(st_report_attempt(db, 2, t + 40000, ST_ATTEMPT_DEAD, 400, "HTTP 400 refused",
                                       "bad bundle", 9.5, 0, errbuf, sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(st_report_get(db, 2, false, &before, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(before.state, ST_REPORT_DEAD);
    assert_int_equal(before.attempts, 1);
    assert_int_equal(due_count(db, t + 999999, &rl), 0);
    assert_int_equal(st_outbox_counts(db, &np, &nd, &nx, errbuf, sizeof(errbuf)), CXR_OK);
    assert_true(np == 0 && nd == 1 && nx == 1);
    memset(&f, 0, sizeof(f));
    f.has_state = true;
    f.state = ST_REPORT_DEAD;
    assert_int_equal(report_count(db, &f, &rl), 1);
    assert_int_equal(rl.r[0].id, 2);
    memset(&f, 0, sizeof(f));
    snprintf(f.destination, sizeof(f.destination), "webhook");
    assert_int_equal(report_count(db, &f, &rl), 2);
    snprintf(f.destination, sizeof(f.destination), "nowhere");
    assert_int_equal(report_count(db, &f, &rl), 0);
    memset(&f, 0, sizeof(f));
    f.limit = 1;
    assert_int_equal(report_count(db, &f, &rl), 1);
    f.after_id = 2;
    assert_int_equal(report_count(db, &f, &rl), 1);
    assert_int_equal(rl.r[0].id, 1);

    /* requeue: pending again, due now, with the original identifiers and attempts kept */
    assert_int_equal(st_report_requeue(db, 2, t + 50000, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(st_report_get(db, 2, true, &r, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(r.state, ST_REPORT_PENDING);
    assert_int_equal(r.next_attempt_at_ms, t + 50000);
    assert_int_equal(r.attempts, before.attempts);
    assert_string_equal(r.idempotency_key, before.idempotency_key);
    assert_string_equal(r.control_id, before.control_id);
    assert_string_equal(r.report_id, before.report_id);
    assert_string_equal(r.body, "MSH|^~\\&|CXR|1.7|1\r");
    st_report_done(&r);
    assert_int_equal(due_count(db, t + 50000, &rl), 1);
    assert_int_equal(st_report_requeue(db, 2, t + 50000, errbuf, sizeof(errbuf)), CXR_EINVAL);

    memset(&al, 0, sizeof(al));
    assert_int_equal(st_report_attempts(db, 1, alist_fn, &al, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(al.n, 2);
    assert_int_equal(al.a[0].outcome, ST_ATTEMPT_RETRY);
    assert_int_equal(al.a[0].status, 503);
    assert_int_equal(al.a[0].at_ms, t + 100);
    assert_true(al.a[0].ms == 12.5);
    assert_int_equal(strlen(al.a[0].response), ST_RESPONSE_MAX - 2);
    assert_int_equal(al.a[1].outcome, ST_ATTEMPT_DELIVERED);
    assert_string_equal(al.a[1].response, "{\"ok\":true}");
    cxr_buf_init(&out, 1 << 16);
    assert_int_equal(st_report_attempt_json(&al.a[0], &out), CXR_OK);
    o = json_loads(cxr_buf_str(&out), 0, &jerr);
    assert_non_null(o);
    assert_int_equal(json_object_size(o), 8);
    assert_int_equal(json_integer_value(json_object_get(o, "report")), 1);
    assert_string_equal(json_string_value(json_object_get(o, "outcome")), "retry");
    assert_string_equal(json_string_value(json_object_get(o, "at")), "2026-12-02T00:01:00.100Z");
    assert_true(json_real_value(json_object_get(o, "ms")) == 12.5);
    json_decref(o);
    cxr_buf_done(&out);

    /* JSON */
    assert_int_equal(st_report_get(db, 1, false, &r, errbuf, sizeof(errbuf)), CXR_OK);
    cxr_buf_init(&out, 1 << 16);
    assert_int_equal(st_report_json(&r, &out), CXR_OK);
    assert_null(strchr(cxr_buf_str(&out), '\n'));
    o = json_loads(cxr_buf_str(&out), 0, &jerr);
    if (!o)
        fail_msg("not JSON (%s): %s", jerr.text, cxr_buf_str(&out));
    assert_int_equal(json_object_size(o), CXR_ARRAY_SIZE(keys));
    for (size_t i = 0; i < CXR_ARRAY_SIZE(keys); i++)
        if (!json_object_get(o, keys[i]))
            fail_msg("key '%s' missing: %s", keys[i], cxr_buf_str(&out));
    assert_int_equal(json_integer_value(json_object_get(o, "id")), 1);
    assert_string_equal(json_string_value(json_object_get(o, "study_instance_uid")), "1.7");
    assert_string_equal(json_string_value(json_object_get(o, "format")), "hl7");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "delivered");
    assert_string_equal(json_string_value(json_object_get(o, "idempotency_key")), "cxr-1.7-0");
    assert_string_equal(json_string_value(json_object_get(o, "delivered_at")),
                        "2026-12-02T00:01:30.100Z");
    assert_string_equal(json_string_value(json_object_get(o, "created_at")),
                        "2026-12-02T00:01:00.000Z");
    assert_true(json_is_null(json_object_get(o, "corrects")));
    assert_true(json_is_false(json_object_get(o, "is_correction")));
    assert_int_equal(json_integer_value(json_object_get(o, "last_status")), 200);
    json_decref(o);
    /* pending: no delivered_at; with a body: a body key; an invalid UTF-8 excerpt still prints */
    assert_int_equal(st_report_get(db, 2, true, &r, errbuf, sizeof(errbuf)), CXR_OK);
    snprintf(r.last_response, sizeof(r.last_response), "bad \xff byte");
    cxr_buf_reset(&out);
    assert_int_equal(st_report_json(&r, &out), CXR_OK);
    o = json_loads(cxr_buf_str(&out), 0, &jerr);
    assert_non_null(o);
    assert_true(json_is_null(json_object_get(o, "delivered_at")));
    assert_string_equal(json_string_value(json_object_get(o, "body")), "MSH|^~\\&|CXR|1.7|1\r");
    assert_string_equal(json_string_value(json_object_get(o, "last_response")), "bad ? byte");
    json_decref(o);
    st_report_done(&r);
    cxr_buf_done(&out);

    verify_clean(db);
    st_close(db);
}

/* Runs verify on a ledger with a study, its two reports, a retry, a dead one and a requeue, after
 * sql; want NULL: clean. */
static void verify_outbox_finds(const char *sql, const char *want)
{
    struct build_ctx b = {.n = 2};
    struct st_study s;
    st_db *db;

    remove_db();
    db = open_db(ST_OPEN_WRITE);
    open_study(db, "1.7", 1);
    assert_int_equal(
        st_study_complete_reports(db, "1.7", T0, build_reports, &b, &s, errbuf, sizeof(errbuf)),
        CXR_OK);
    assert_int_equal(st_report_attempt(db, 1, T0 + 1, ST_ATTEMPT_RETRY, 503, "", "", 1, T0 + 2,
                                       errbuf, sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(st_report_attempt(db, 2, T0 + 1, ST_ATTEMPT_DEAD, 400, "", "", 1, 0, errbuf,
                                       sizeof(errbuf)),
                     CXR_OK);
    assert_int_equal(st_report_requeue(db, 2, T0 + 3, errbuf, sizeof(errbuf)), CXR_OK);
    st_close(db);
    tamper_and_verify(sql, want);
}

static void test_outbox_verify(void **state)
{
    verify_outbox_finds(NULL, NULL);
    verify_outbox_finds("UPDATE events SET detail = replace(detail, 'status=400', 'status=200')"
                        " WHERE kind = 'report.dead'",
                        ": hash does not match its content");
    verify_outbox_finds("UPDATE reports SET body = 'MSH|forged' WHERE id = 1",
                        "report 1: content changed after event");
    verify_outbox_finds("UPDATE reports SET state = 'delivered' WHERE id = 2",
                        "report 2: content changed after event");
    verify_outbox_finds("DELETE FROM events WHERE kind = 'report.requeued'",
                        "deleted from the end of the chain");
    verify_outbox_finds("DELETE FROM reports WHERE id = 2", "report 2: missing (deleted)");
    verify_outbox_finds("INSERT INTO reports (study_uid, destination, format, state,"
                        " idempotency_key, body, created_at, next_attempt_at)"
                        " VALUES ('1.7', 'x', 'hl7', 'pending', 'k', 'b', 0, 0)",
                        "report 3: no event records it");
}

struct holder_arg {
    sqlite3 *raw;
    int hold_ms;
};

static void *release_later(void *p)
{
    struct holder_arg *a = p;
    usleep((useconds_t)a->hold_ms * 1000);
    (void)sqlite3_exec(a->raw, "COMMIT", NULL, NULL, NULL);
    return NULL;
}

static void test_outbox_second_writer(void **state)
{
    st_db *daemon = open_db(ST_OPEN_WRITE), *cli = NULL;
    struct build_ctx b = {.n = 2};
    struct holder_arg hold = {.hold_ms = 300};
    struct st_study s;
    struct st_report r;
    char missing[160];
    pthread_t t;

    /* ST_OPEN_UPDATE never creates a file */
    snprintf(missing, sizeof(missing), "%s/nope.db", tmpdir);
    assert_int_equal(st_open(missing, ST_OPEN_UPDATE, &cli, errbuf, sizeof(errbuf)), CXR_ENOTFOUND);
    assert_int_equal(access(missing, F_OK), -1);

    open_study(daemon, "1.7", 1);
    assert_int_equal(
        st_study_complete_reports(daemon, "1.7", T0, build_reports, &b, &s, errbuf, sizeof(errbuf)),
        CXR_OK);
    assert_int_equal(st_report_attempt(daemon, 1, T0 + 1, ST_ATTEMPT_DEAD, 0, "connect refused", "",
                                       1, 0, errbuf, sizeof(errbuf)),
                     CXR_OK);

    /* the CLI's connection while the daemon's is open and a write transaction is in flight: the
     * requeue waits for it (busy timeout) and then commits */
    cli = open_db(ST_OPEN_UPDATE);
    assert_int_equal(sqlite3_open(dbpath, &hold.raw), SQLITE_OK);
    assert_int_equal(sqlite3_exec(hold.raw, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(pthread_create(&t, NULL, release_later, &hold), 0);
    assert_int_equal(st_report_requeue(cli, 1, T0 + 5, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(pthread_join(t, NULL), 0);
    sqlite3_close(hold.raw);
    assert_int_equal(st_report_requeue(cli, 1, T0 + 5, errbuf, sizeof(errbuf)), CXR_EINVAL);
    st_close(cli);

    /* the daemon sees it and goes on writing */
    assert_int_equal(st_report_get(daemon, 1, false, &r, errbuf, sizeof(errbuf)), CXR_OK);
    assert_int_equal(r.state, ST_REPORT_PENDING);
    assert_int_equal(st_report_attempt(daemon, 1, T0 + 6, ST_ATTEMPT_DELIVERED, 200, "", "", 1, 0,
                                       errbuf, sizeof(errbuf)),
                     CXR_OK);
    verify_clean(daemon);
    st_close(daemon);
}

static void test_outbox_migration(void **state)
{
    st_db *db = open_db(ST_OPEN_WRITE);
    sqlite3 *raw;
    int64_t np, nd, nx;

    assert_int_equal(st_schema_version(db), 2);
    st_close(db);
    /* a schema 1 file, as the previous release left it */
    assert_int_equal(sqlite3_open(dbpath, &raw), SQLITE_OK);
    assert_int_equal(sqlite3_exec(raw,
                                  "DROP TABLE report_attempts; DROP TABLE reports;"
                                  " PRAGMA user_version = 1",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(raw);
    db = NULL;
    assert_int_equal(st_open(dbpath, ST_OPEN_UPDATE, &db, errbuf, sizeof(errbuf)),
                     CXR_EUNSUPPORTED);
    assert_non_null(strstr(errbuf, "older"));
    db = open_db(ST_OPEN_READ); /* verify still reads a schema 1 file */
    verify_clean(db);
    st_close(db);
    db = open_db(ST_OPEN_WRITE);
    assert_int_equal(st_schema_version(db), 2);
    assert_int_equal(st_outbox_counts(db, &np, &nd, &nx, errbuf, sizeof(errbuf)), CXR_OK);
    assert_true(np == 0 && nd == 0 && nx == 0);
    st_close(db);
    db = open_db(ST_OPEN_UPDATE);
    st_close(db);
}

static void test_time(void **state)
{
    const int64_t now = 1796204273000LL; /* 2026-12-02T09:37:53Z */
    int64_t t;
    char text[40];

    assert_true(st_parse_time("2026-12-02", now, &t));
    assert_int_equal(t, 1796169600000LL);
    assert_true(st_parse_time("2026-12-02T09:37:53Z", now, &t));
    assert_int_equal(t, now);
    assert_true(st_parse_time("2026-12-02T09:37:53", now, &t));
    assert_int_equal(t, now);
    assert_true(st_parse_time("2026-12-02T09:37:53.123Z", now, &t));
    assert_int_equal(t, now + 123);
    assert_true(st_parse_time("2026-12-02T09:37Z", now, &t));
    assert_int_equal(t, now - 53000);
    assert_true(st_parse_time("24h", now, &t));
    assert_int_equal(t, now - 24 * HOUR);
    assert_true(st_parse_time("7d", now, &t));
    assert_int_equal(t, now - 7 * 24 * HOUR);
    assert_true(st_parse_time("30m", now, &t));
    assert_int_equal(t, now - 30 * 60000);
    assert_true(st_parse_time("2024-02-29", now, &t));

    assert_false(st_parse_time("", now, &t));
    assert_false(st_parse_time("yesterday", now, &t));
    assert_false(st_parse_time("2026-13-01", now, &t));
    assert_false(st_parse_time("2026-02-30", now, &t));
    assert_false(st_parse_time("2026-12-02T25:00Z", now, &t));
    assert_false(st_parse_time("2026-12-02x", now, &t));
    assert_false(st_parse_time("24", now, &t));
    assert_false(st_parse_time("24hh", now, &t));
    assert_false(st_parse_time("-1d", now, &t));
    assert_false(st_parse_time("26-12-02", now, &t));

    st_format_time(now + 45, text, sizeof(text));
    assert_string_equal(text, "2026-12-02T09:37:53.045Z");
    st_format_time(-1, text, sizeof(text));
    assert_string_equal(text, "1969-12-31T23:59:59.999Z");
    assert_true(st_now_ms() > now - 365 * 24 * HOUR);

    assert_string_equal(st_state_name(ST_SKIPPED), "skipped");
    assert_null(st_triage_name(ST_TRIAGE_NONE));
    assert_string_equal(st_triage_name(ST_TRIAGE_ROUTINE), "routine");
    assert_string_equal(st_stage_name(ST_T_PREPROCESS), "preprocess");
    {
        enum st_state s;
        enum st_triage tr;
        assert_true(st_state_from_name("failed", &s) && s == ST_FAILED);
        assert_false(st_state_from_name("done", &s));
        assert_true(st_triage_from_name("normal", &tr) && tr == ST_TRIAGE_NORMAL);
        assert_false(st_triage_from_name("none", &tr));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_and_finish_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readers_during_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spool_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_study, setup, teardown),
        cmocka_unit_test_setup_teardown(test_study_with_insert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_complete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_corrections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_delivery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_second_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox_migration, setup, teardown),
        cmocka_unit_test(test_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
