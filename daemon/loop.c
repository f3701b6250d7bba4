/*
 * loop.c - the daemon's loop thread: the one SQLite writer, the queue, the studies, admission
 * control, reload and stop.
 *
 * DESIGN. epoll over four descriptors: the signal self-pipe, the inbox eventfd (receipts and
 * association events from the listener), the done eventfd (results from the workers) and a
 * timerfd ticking every 250 ms (quiet studies, disk watermark, systemd status and watchdog,
 * spool retention). Every state change is one committed transaction by this thread:
 *   receipt  -> INSERT instance (received) + its study touched   -> job to the workers
 *   result   -> UPDATE instance (classified|skipped|failed)       -> study may complete
 *   quiet    -> study complete (combined result)                  -> the report issue sends it
 * Start-up resumes every row not in a final state and inserts a row for every spool file that
 * has none (a crash between the durable file and its row), before the listener accepts.
 * SIGTERM: stop accepting, let running associations finish, let queued instances be scored,
 * all within [daemon] stop_timeout; what is left stays `received` and resumes at the next start.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/statvfs.h>
#include <sys/timerfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon.h"
#include "http.h"

struct open_study {
    struct open_study *next;
    char uid[ST_UID_MAX];
    double quiet_at; /* monotonic ms after which it may complete */
};

static int sig_wr = -1;

static void on_signal(int signo)
{
    int saved = errno;
    unsigned char b = (unsigned char)signo;

    if (write(sig_wr, &b, 1) < 0) {
        /* pipe full: a signal is pending already */
    }
    errno = saved;
}

static void wake(void *user)
{
    struct daemon *d = user;
    uint64_t one = 1;

    if (write(d->done_fd, &one, sizeof(one)) < 0) {
        /* saturated: the loop is awake anyway */
    }
}

static void drain_fd(int fd)
{
    uint64_t v;

    if (read(fd, &v, sizeof(v)) < 0) {
        /* EAGAIN: nothing pending */
    }
}

/* ---- studies ---- */

static void study_arm(struct daemon *d, const char *uid, double quiet_at)
{
    struct open_study *s;

    if (!uid[0])
        return;
    for (s = d->studies; s; s = s->next)
        if (!strcmp(s->uid, uid))
            break;
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s) {
            cxr_log_err(CXR_ENOMEM, "study.arm", "msg='out of memory; the study completes at the next start'");
            return;
        }
        (void)snprintf(s->uid, sizeof(s->uid), "%s", uid);
        s->next = d->studies;
        d->studies = s;
    }
    s->quiet_at = quiet_at;
}

static bool study_try_complete(struct daemon *d, struct open_study *s, double now)
{
    char err[512];
    bool settled = false;
    struct st_study st;

    if (now < s->quiet_at)
        return false;
    if (st_study_settled(d->db, s->uid, &settled, err, sizeof(err)) != CXR_OK) {
        cxr_log_err(CXR_EDB, "study.check", "msg='%s'", err);
        return false;
    }
    if (!settled)
        return false;
    if (report_complete_study(d, s->uid, st_now_ms(), &st, err, sizeof(err)) != CXR_OK) {
        cxr_log_err(CXR_EDB, "study.complete", "msg='%s' (retried at the next tick)", err);
        s->quiet_at = now + 1000.0;
        return false;
    }
    cxr_log(CXR_LOG_INFO, "study.complete",
            "study=%s instances=%d scored=%d skipped=%d failed=%d triage=%s report=%s",
            cxr_log_phi(s->uid), st.n_instances, st.n_scored, st.n_skipped, st.n_failed,
            st_triage_name(st.triage) ? st_triage_name(st.triage) : "none",
            d->shadow                                       ? "shadow(not sent)"
            : !strcmp(st.patient_id, CXR_SELFTEST_PATIENT_ID) ? "none(selftest)"
                                                              : "queued");
    return true;
}

static void studies_tick(struct daemon *d)
{
    double now = mono_ms();
    struct open_study **pp = &d->studies;

    while (*pp) {
        struct open_study *s = *pp;
        if (study_try_complete(d, s, now)) {
            *pp = s->next;
            free(s);
        } else {
            pp = &s->next;
        }
    }
}

/* ---- receipts and results ---- */

static void submit(struct daemon *d, int64_t id, const char *path, const char *uid,
                   const char *study_uid, double receive_ms)
{
    struct job *j = calloc(1, sizeof(*j));

    if (!j) {
        cxr_log_err(CXR_ENOMEM, "pipeline.submit", "id=%lld msg='out of memory; resumes at the next start'",
                    (long long)id);
        return;
    }
    j->id = id;
    (void)snprintf(j->path, sizeof(j->path), "%s", path);
    (void)snprintf(j->sop_instance_uid, sizeof(j->sop_instance_uid), "%s", uid);
    (void)snprintf(j->study_uid, sizeof(j->study_uid), "%s", study_uid);
    j->receive_ms = receive_ms;
    j->queued_at = mono_ms();
    j->rule = d->rule;
    for (int i = 0; i < ST_T__COUNT; i++)
        j->res.timings_ms[i] = -1;
    d->queued++;
    pipeline_submit(d->pipe, j);
}

/* A receipt that is not scored (other SOP class): its row is final at once. */
static void finish_unscored(struct daemon *d, int64_t id, const struct st_receipt *r)
{
    struct st_result res;
    char err[512];

    memset(&res, 0, sizeof(res));
    for (int i = 0; i < ST_T__COUNT; i++)
        res.timings_ms[i] = -1;
    res.timings_ms[ST_T_RECEIVE] = r->receive_ms;
    res.state = ST_SKIPPED;
    {
        const char *name = dcm_uid_name(r->sop_class_uid);
        (void)snprintf(res.gate_reason, sizeof(res.gate_reason),
                       "SOP class %s (%s) is not a radiograph class we score (CR, DX, Secondary "
                       "Capture)",
                       name ? name : "unknown", r->sop_class_uid[0] ? r->sop_class_uid : "none");
    }
    (void)snprintf(res.model_digest, sizeof(res.model_digest), "%s", nn_model_digest(d->model));
    if (st_finish(d->db, id, &res, err, sizeof(err)) != CXR_OK) {
        atomic_store(&d->met.db_ok, false);
        cxr_log_err(CXR_EDB, "audit.finish", "id=%lld msg='%s'", (long long)id, err);
    } else {
        d->n_final++;
        met_record(&d->met, &res, false);
    }
}

/* An upload from the HTTP endpoint: scored already; its row is inserted final at once and it
 * never joins a study (no study row, no report: uploads are not sent to the EHR). */
static void handle_upload(struct daemon *d, struct inbox_item *it)
{
    struct upload_wait *w = it->wait;
    char err[256] = "";
    int64_t id = 0;
    cxr_err e = st_insert_received(d->db, &it->r, 0, &id, err, sizeof(err));

    if (e == CXR_OK)
        e = st_finish(d->db, id, it->upload, err, sizeof(err));
    atomic_store(&d->met.db_ok, e == CXR_OK);
    if (e != CXR_OK)
        cxr_log_err(CXR_EDB, "audit.upload", "msg='%s'", err);
    else
        cxr_log(CXR_LOG_INFO, "instance.upload", "id=%lld state=%s triage=%s size=%lld",
                (long long)id, st_state_name(it->upload->state),
                st_triage_name(it->upload->triage) ? st_triage_name(it->upload->triage) : "-",
                (long long)it->r.size_bytes);
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    if (w->abandoned) {
        pthread_mutex_unlock(&w->lock);
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->cond);
        free(w);
        free(it->upload);
        return;
    }
    w->id = id;
    w->err = e;
    (void)cxr_strlcpy(w->errmsg, sizeof(w->errmsg), err);
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

/* Records a durable receipt: its row (or, for an acknowledged duplicate, an event on the first
 * row) and its job. Returns false when the ledger refused the write: the caller keeps the
 * receipt and retries it (retry_ledger). */
static bool handle_receipt(struct daemon *d, struct st_receipt *r, bool scored)
{
    char err[512];
    int64_t id = 0, prev = 0;
    enum st_state prev_state;
    cxr_err e;

    if (r->sop_instance_uid[0] &&
        st_find_sop(d->db, r->sop_instance_uid, &prev, &prev_state, err, sizeof(err)) == CXR_OK &&
        !strcmp(d->cfg.duplicates, "acknowledge")) {
        char detail[1200];
        (void)snprintf(detail, sizeof(detail),
                       "policy=acknowledge calling_aet=%s peer=%s size=%lld source=%s", r->calling_aet,
                       r->peer, (long long)r->size_bytes, r->source);
        if (st_add_event(d->db, prev, "duplicate", detail, err, sizeof(err)) != CXR_OK) {
            cxr_log_err(CXR_EDB, "audit.duplicate", "msg='%s' (kept and retried)", err);
            return false;
        }
        cxr_log(CXR_LOG_NOTICE, "instance.duplicate", "id=%lld policy=acknowledge sop=%s",
                (long long)prev, cxr_log_phi(r->sop_instance_uid));
        if (unlink(r->spool_path) != 0 && errno != ENOENT)
            cxr_log(CXR_LOG_WARNING, "spool.unlink", "path='%s' error='%s'", r->spool_path,
                    strerror(errno));
        return true;
    }
    e = st_insert_received(d->db, r, prev, &id, err, sizeof(err));
    atomic_store(&d->met.db_ok, e == CXR_OK);
    if (e != CXR_OK) {
        /* The file is durable and acknowledged: keep the receipt and retry (after a crash
         * the start-up scan makes the row from the file instead). */
        cxr_log_err(CXR_EDB, "audit.insert", "msg='%s' spool='%s' (kept and retried)", err,
                    r->spool_path);
        return false;
    }
    d->n_received++;
    atomic_fetch_add_explicit(&d->met.received, 1, memory_order_relaxed);
    cxr_log(CXR_LOG_INFO, "instance.received",
            "id=%lld source=%s calling_aet=%s peer=%s size=%lld receive_ms=%.1f%s", (long long)id,
            r->source, r->calling_aet, r->peer, (long long)r->size_bytes, r->receive_ms,
            prev ? " duplicate=rescore" : "");
    if (r->study_uid[0]) /* its study row came with the insert, in the same transaction */
        study_arm(d, r->study_uid, mono_ms() + 1000.0 * d->cfg.study_quiet_seconds);
    if (!scored) {
        finish_unscored(d, id, r);
        return true;
    }
    submit(d, id, r->spool_path, r->sop_instance_uid, r->study_uid, r->receive_ms);
    return true;
}

static void retry_receipt(struct daemon *d, struct inbox_item *it)
{
    it->next = NULL;
    if (d->retry_receipts_tail)
        d->retry_receipts_tail->next = it;
    else
        d->retry_receipts = it;
    d->retry_receipts_tail = it;
    d->n_retry++;
}

static void handle_inbox(struct daemon *d)
{
    struct inbox_item *l, *it;

    drain_fd(d->inbox_fd);
    pthread_mutex_lock(&d->inbox_lock);
    l = d->inbox_head;
    d->inbox_head = d->inbox_tail = NULL;
    pthread_mutex_unlock(&d->inbox_lock);
    while ((it = l)) {
        l = it->next;
        if (it->is_event) {
            char err[512];
            int lvl = strstr(it->kind, "refused") || strstr(it->kind, "failed") ||
                              strstr(it->kind, "aborted") || strstr(it->kind, "timeout")
                          ? CXR_LOG_WARNING
                          : CXR_LOG_INFO;
            cxr_log(lvl, it->kind, "%s", it->detail);
            if (strcmp(it->kind, "association.released") != 0 &&
                st_add_event(d->db, 0, it->kind, it->detail, err, sizeof(err)) != CXR_OK)
                cxr_log_err(CXR_EDB, "audit.event", "kind=%s msg='%s'", it->kind, err);
            free(it);
        } else if (it->upload) {
            handle_upload(d, it); /* hands it->upload back to the waiting HTTP thread */
            free(it);
        } else if (d->retry_receipts || !handle_receipt(d, &it->r, it->scored_class)) {
            retry_receipt(d, it); /* behind the ones already waiting: retry_ledger */
        } else {
            free(it);
        }
    }
}

/* Commits a finished job's result; false when the ledger refused the write (kept, retried). */
static bool finish_job(struct daemon *d, struct job *j)
{
    char err[512];

    if (j->study_uid[0])
        study_arm(d, j->study_uid, mono_ms() + 1000.0 * d->cfg.study_quiet_seconds);
    j->res.timings_ms[ST_T_RECEIVE] = j->receive_ms;
    j->res.timings_ms[ST_T_COMMIT] = mono_ms() - j->done_at; /* waiting for the writer */
    if (st_finish(d->db, j->id, &j->res, err, sizeof(err)) != CXR_OK) {
        atomic_store(&d->met.db_ok, false);
        cxr_log_err(CXR_EDB, "audit.finish", "id=%lld msg='%s' (kept and retried)",
                    (long long)j->id, err);
        return false;
    }
    d->n_final++;
    atomic_store(&d->met.db_ok, true);
    met_record(&d->met, &j->res, false);
    cxr_log(CXR_LOG_INFO, "instance.done", "id=%lld state=%s triage=%s ms=%.1f%s%s",
            (long long)j->id, st_state_name(j->res.state),
            st_triage_name(j->res.triage) ? st_triage_name(j->res.triage) : "-",
            mono_ms() - j->queued_at, j->res.error[0] ? " error=" : "",
            j->res.error[0] ? j->res.error : "");
    return true;
}

static void handle_done(struct daemon *d)
{
    struct job *l, *j;

    drain_fd(d->done_fd);
    l = pipeline_take_done(d->pipe);
    while ((j = l)) {
        l = j->next;
        d->queued--;
        if (d->retry_results || !finish_job(d, j)) {
            j->next = d->retry_results; /* retry_ledger */
            d->retry_results = j;
            d->n_retry++;
        } else {
            free(j);
        }
    }
    if (d->cfg.study_quiet_seconds == 0) {
        studies_tick(d);
        report_pump(d); /* send what just completed now, not at the next 250 ms tick */
    }
}

/* Every second while writes wait: results first (their rows exist), then receipts in arrival
 * order; stops at the first write the ledger still refuses. */
static void retry_ledger(struct daemon *d)
{
    double now = mono_ms();
    int before = d->n_retry;

    if (!d->n_retry || now < d->retry_at)
        return;
    d->retry_at = now + 1000.0;
    while (d->retry_results) {
        struct job *j = d->retry_results;
        if (!finish_job(d, j))
            return;
        d->retry_results = j->next;
        d->n_retry--;
        free(j);
    }
    while (d->retry_receipts) {
        struct inbox_item *it = d->retry_receipts;
        if (!handle_receipt(d, &it->r, it->scored_class))
            return;
        d->retry_receipts = it->next;
        if (!d->retry_receipts)
            d->retry_receipts_tail = NULL;
        d->n_retry--;
        free(it);
    }
    cxr_log(CXR_LOG_NOTICE, "audit.recovered", "committed=%d msg='the ledger takes writes again'",
            before);
}

static void retry_free(struct daemon *d)
{
    if (d->n_retry)
        cxr_log(CXR_LOG_WARNING, "audit.uncommitted",
                "writes=%d msg='the ledger refused them until the end; their spool files and rows "
                "are taken up at the next start'",
                d->n_retry);
    while (d->retry_results) {
        struct job *j = d->retry_results;
        d->retry_results = j->next;
        free(j);
    }
    while (d->retry_receipts) {
        struct inbox_item *it = d->retry_receipts;
        d->retry_receipts = it->next;
        free(it);
    }
    d->retry_receipts_tail = NULL;
    d->n_retry = 0;
}

/* ---- start-up recovery ---- */

static bool resume_one(void *user, const struct st_instance *in)
{
    struct daemon *d = user;

    if (in->r.study_uid[0])
        study_arm(d, in->r.study_uid, mono_ms() + 1000.0 * d->cfg.study_quiet_seconds);
    submit(d, in->id, in->r.spool_path, in->r.sop_instance_uid, in->r.study_uid,
           in->r.receive_ms);
    return true;
}

static bool recover_one(void *user, struct st_receipt *r, bool scored)
{
    struct daemon *d = user;

    cxr_log(CXR_LOG_NOTICE, "spool.recovered", "path='%s' msg='durable file without a row'",
            r->spool_path);
    if (!handle_receipt(d, r, scored)) {
        struct inbox_item *it = calloc(1, sizeof(*it));
        if (!it)
            return false; /* the next start finds the file again */
        it->r = *r;
        it->scored_class = scored;
        retry_receipt(d, it);
    }
    return true;
}

static bool rearm_study(void *user, const struct st_study *s)
{
    struct daemon *d = user;

    study_arm(d, s->study_uid, mono_ms() + 1000.0 * d->cfg.study_quiet_seconds);
    return true;
}

static cxr_err recover(struct daemon *d)
{
    char err[512];
    int before = d->queued;

    if (st_each_pending(d->db, resume_one, d, err, sizeof(err)) != CXR_OK)
        return cxr_log_err(CXR_EDB, "recover.pending", "msg='%s'", err);
    if (d->queued > before)
        cxr_log(CXR_LOG_NOTICE, "recover.resumed", "rows=%d", d->queued - before);
    if (ingest_scan_spool(d, recover_one, d) != CXR_OK)
        return CXR_EIO;
    if (st_each_open_study(d->db, rearm_study, d, err, sizeof(err)) != CXR_OK)
        return cxr_log_err(CXR_EDB, "recover.studies", "msg='%s'", err);
    return CXR_OK;
}

/* ---- admission, status, retention ---- */

/* 0 when a file can be created in spool_dir (the listener's first write goes to its tmp/),
 * else errno. An ext4 that turned read-only after an error (errors=remount-ro) shows it only
 * here: statvfs does not report ST_RDONLY for it. The probe lives beside in/ and tmp/, not in
 * them: nothing that looks at received or partial files ever sees it; one left by a crash is
 * an empty file that the next probe reuses. */
static int spool_writable(const struct daemon *d)
{
    char path[CFG_PATH_MAX + 40];
    int fd, e = 0;

    (void)snprintf(path, sizeof(path), "%s/.admission-probe", d->cfg.spool_dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == ENOENT ? 0 : errno; /* no spool_dir yet: the listener creates it */
    if (close(fd) != 0)
        e = errno;
    if (unlink(path) != 0 && !e)
        e = errno;
    return e;
}

static void check_admission(struct daemon *d)
{
    int want = REFUSE_NONE, had = atomic_load(&d->refusing), werr;
    struct statvfs sv;
    char detail[256] = "";

    if (d->stopping) {
        want = REFUSE_STOPPING;
    } else if ((werr = spool_writable(d)) != 0 && werr != ENOSPC && werr != EDQUOT) {
        want = REFUSE_UNWRITABLE;
        (void)snprintf(detail, sizeof(detail), "reason=unwritable error='%s' (read-only or failing file system under spool_dir)",
                       strerror(werr));
    } else if (d->cfg.min_free_mb > 0 && statvfs(d->cfg.spool_dir, &sv) == 0 &&
               (double)sv.f_bavail * (double)sv.f_frsize < (double)d->cfg.min_free_mb * 1048576.0) {
        want = REFUSE_DISK;
        (void)snprintf(detail, sizeof(detail), "reason=disk free_mb=%.0f min_free_mb=%d",
                       (double)sv.f_bavail * (double)sv.f_frsize / 1048576.0, d->cfg.min_free_mb);
    } else if (d->queued + d->n_retry >= d->cfg.max_queue) {
        want = REFUSE_QUEUE;
        (void)snprintf(detail, sizeof(detail), "reason=queue queued=%d uncommitted=%d max_queue=%d",
                       d->queued, d->n_retry, d->cfg.max_queue);
    }
    if (want == had)
        return;
    atomic_store(&d->refusing, want);
    if (want == REFUSE_STOPPING)
        return;
    {
        char err[512];
        const char *kind = want ? "admission.refusing" : "admission.accepting";
        if (!want)
            (void)snprintf(detail, sizeof(detail), "msg='the condition cleared'");
        cxr_log(want ? CXR_LOG_WARNING : CXR_LOG_NOTICE, kind, "%s", detail);
        if (st_add_event(d->db, 0, kind, detail, err, sizeof(err)) != CXR_OK)
            cxr_log_err(CXR_EDB, "audit.event", "kind=%s msg='%s'", kind, err);
    }
}

static void notify_status(struct daemon *d)
{
    (void)sd_notifyf(0,
                     "STATUS=received %lld, final %lld, queued %d, associations %d, refused %lld%s",
                     (long long)d->n_received, (long long)d->n_final, d->queued,
                     dcm_listener_active(d->listener),
                     (long long)atomic_load(&d->n_assoc_refused),
                     atomic_load(&d->refusing) == REFUSE_DISK         ? " (refusing: disk)"
                     : atomic_load(&d->refusing) == REFUSE_QUEUE      ? " (refusing: queue)"
                     : atomic_load(&d->refusing) == REFUSE_UNWRITABLE ? " (refusing: spool unwritable)"
                                                                       : "");
}

static bool expire_one(void *user, int64_t id, const char *path)
{
    struct daemon *d = user;
    char err[512];

    if (unlink(path) != 0 && errno != ENOENT) {
        cxr_log(CXR_LOG_WARNING, "spool.retention", "id=%lld error='%s'", (long long)id,
                strerror(errno));
        return true;
    }
    if (st_spool_forget(d->db, id, err, sizeof(err)) != CXR_OK)
        cxr_log_err(CXR_EDB, "spool.retention", "id=%lld msg='%s'", (long long)id, err);
    return true;
}

static void retention(struct daemon *d)
{
    char err[512];
    int64_t cutoff;

    if (d->cfg.spool_retention_days <= 0)
        return;
    cutoff = st_now_ms() - (int64_t)d->cfg.spool_retention_days * 86400000LL;
    if (st_each_expired_spool(d->db, cutoff, expire_one, d, err, sizeof(err)) != CXR_OK)
        cxr_log_err(CXR_EDB, "spool.retention", "msg='%s'", err);
}

/* ---- configuration reload (SIGHUP) ---- */

struct rule_apply {
    struct daemon *d;
    struct nn_triage_rule *rule;
    bool ok;
    char err[512];
};

static void apply_threshold(void *user, const char *name, double value)
{
    struct rule_apply *a = user;

    if (a->ok && nn_triage_rule_set(a->rule, a->d->model, name, (float)value, a->err,
                                    sizeof(a->err)) != CXR_OK)
        a->ok = false;
}

cxr_err daemon_build_rule(struct daemon *d, const char *thresholds, struct nn_triage_rule *ret)
{
    struct rule_apply a = {d, ret, true, ""};
    char bad[128];

    if (nn_triage_rule_init(d->model, ret, a.err, sizeof(a.err)) != CXR_OK)
        return cxr_log_err(CXR_EMODEL, "triage.rule", "msg='%s'", a.err);
    if (!cfg_parse_thresholds(thresholds, apply_threshold, &a, bad, sizeof(bad)) || !a.ok)
        return cxr_log_err(CXR_EINVAL, "triage.rule", "key='[triage] thresholds' msg='%s'",
                           a.ok ? bad : a.err);
    return CXR_OK;
}

static void reload(struct daemon *d)
{
    struct cfg_config c;
    struct cxr_buf errors;
    struct nn_triage_rule rule;

    if (!d->config_path) {
        cxr_log(CXR_LOG_NOTICE, "daemon.reload", "msg='running on built-in defaults; nothing to re-read'");
        return;
    }
    cfg_defaults(&c);
    cxr_buf_init(&errors, 1 << 16);
    if (cfg_load(&c, d->config_path, &errors) != CXR_OK) {
        cxr_log(CXR_LOG_ERR, "daemon.reload", "msg='configuration has errors, keeping the old one' errors='%s'",
                cxr_buf_str(&errors));
        cxr_buf_done(&errors);
        return;
    }
    cxr_buf_done(&errors);
    if (daemon_build_rule(d, c.thresholds, &rule) != CXR_OK) {
        cxr_log(CXR_LOG_ERR, "daemon.reload", "msg='bad triage thresholds, keeping the old configuration'");
        return;
    }
    pthread_mutex_lock(&d->allow_lock);
    (void)snprintf(d->allowed_aets, sizeof(d->allowed_aets), "%s", c.allowed_calling_aets);
    pthread_mutex_unlock(&d->allow_lock);
    memcpy(d->cfg.allowed_calling_aets, c.allowed_calling_aets, sizeof(c.allowed_calling_aets));
    memcpy(d->cfg.thresholds, c.thresholds, sizeof(c.thresholds));
    memcpy(d->cfg.report_mode, c.report_mode, sizeof(c.report_mode));
    memcpy(d->cfg.duplicates, c.duplicates, sizeof(c.duplicates));
    memcpy(d->cfg.report_formats, c.report_formats, sizeof(c.report_formats));
    memcpy(d->cfg.sending_application, c.sending_application, sizeof(c.sending_application));
    memcpy(d->cfg.sending_facility, c.sending_facility, sizeof(c.sending_facility));
    memcpy(d->cfg.receiving_application, c.receiving_application,
           sizeof(c.receiving_application));
    memcpy(d->cfg.receiving_facility, c.receiving_facility, sizeof(c.receiving_facility));
    memcpy(d->cfg.processing_id, c.processing_id, sizeof(c.processing_id));
    memcpy(&d->cfg.webhook, &c.webhook, sizeof(c.webhook));
    memcpy(&d->cfg.mllp, &c.mllp, sizeof(c.mllp));
    memcpy(d->cfg.named, c.named, sizeof(c.named));
    d->cfg.n_named = c.n_named;
    pthread_mutex_lock(&d->rule_lock);
    d->rule = rule;
    pthread_mutex_unlock(&d->rule_lock);
    (void)nn_triage_rule_text(&d->rule, d->model, d->rule_text, sizeof(d->rule_text));
    d->shadow = !strcmp(d->cfg.report_mode, "shadow");
    (void)report_reload(d);
    d->snd_fd_changed = true;
    cxr_log(CXR_LOG_NOTICE, "daemon.reload",
            "allowed_calling_aets='%s' duplicates=%s rule='%s' report_mode=%s",
            d->cfg.allowed_calling_aets, d->cfg.duplicates, d->rule_text, d->cfg.report_mode);
    {
        char err[512];
        if (st_add_event(d->db, 0, "config.reloaded", d->rule_text, err, sizeof(err)) != CXR_OK)
            cxr_log_err(CXR_EDB, "audit.event", "kind=config.reloaded msg='%s'", err);
    }
}

/* ---- the loop ---- */

static cxr_err setup_fds(struct daemon *d, int *ret_ep, int *ret_tfd)
{
    int p[2], ep, tfd;
    struct epoll_event ev;
    struct itimerspec its = {{0, 250000000}, {0, 250000000}};
    struct sigaction sa;

    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0)
        return cxr_log_err(CXR_EIO, "daemon.signals", "error='%s'", strerror(errno));
    d->sig_fd = p[0];
    sig_wr = p[1];
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL) ||
        sigaction(SIGHUP, &sa, NULL))
        return cxr_log_err(CXR_EIO, "daemon.signals", "error='%s'", strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    d->inbox_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    d->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (d->inbox_fd < 0 || d->done_fd < 0 || tfd < 0 || ep < 0 ||
        timerfd_settime(tfd, 0, &its, NULL) != 0)
        return cxr_log_err(CXR_EIO, "daemon.loop", "error='%s'", strerror(errno));
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.fd = d->sig_fd;
    (void)epoll_ctl(ep, EPOLL_CTL_ADD, d->sig_fd, &ev);
    ev.data.fd = d->inbox_fd;
    (void)epoll_ctl(ep, EPOLL_CTL_ADD, d->inbox_fd, &ev);
    ev.data.fd = d->done_fd;
    (void)epoll_ctl(ep, EPOLL_CTL_ADD, d->done_fd, &ev);
    ev.data.fd = tfd;
    (void)epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    *ret_ep = ep;
    *ret_tfd = tfd;
    return CXR_OK;
}

void daemon_tls_config(const struct cfg_config *c, struct dcm_tls_config *ret)
{
    memset(ret, 0, sizeof(*ret));
    (void)cxr_strlcpy(ret->cert, sizeof(ret->cert), c->tls_cert);
    (void)cxr_strlcpy(ret->key, sizeof(ret->key), c->tls_key);
    (void)cxr_strlcpy(ret->ca, sizeof(ret->ca), c->tls_ca);
    ret->verify_peer = c->require_client_cert;
    if (!dcm_tls_profile_from_name(c->tls_profile, &ret->profile))
        ret->profile = DCM_TLS_BCP195_ND;
}

static cxr_err start_listener(struct daemon *d)
{
    static struct dcm_listener_ops ops;
    struct dcm_listener_config lc;
    char err[512];
    const bool plain = strcmp(d->cfg.tls, "required") != 0, tls = strcmp(d->cfg.tls, "off") != 0;

    memset(&lc, 0, sizeof(lc));
    d->listen_fd = d->tls_listen_fd = -1;
    if (plain && dcm_listen_socket(d->cfg.dicom_bind, d->cfg.dicom_port, &d->listen_fd, err,
                                   sizeof(err)) != CXR_OK)
        return cxr_log_err(CXR_EDICOM, "dicom.listen", "bind=%s port=%d msg='%s'",
                           d->cfg.dicom_bind, d->cfg.dicom_port, err);
    if (tls && dcm_listen_socket(d->cfg.dicom_bind, d->cfg.tls_port, &d->tls_listen_fd, err,
                                 sizeof(err)) != CXR_OK)
        return cxr_log_err(CXR_EDICOM, "dicom.listen", "bind=%s tls_port=%d msg='%s'",
                           d->cfg.dicom_bind, d->cfg.tls_port, err);
    lc.listen_fd = d->listen_fd;
    lc.tls_listen_fd = d->tls_listen_fd;
    if (tls)
        daemon_tls_config(&d->cfg, &lc.tls);
    (void)snprintf(lc.ae_title, sizeof(lc.ae_title), "%s", d->cfg.ae_title);
    lc.max_associations = d->cfg.max_associations;
    lc.max_pdu = d->cfg.max_pdu;
    lc.acse_timeout = d->cfg.acse_timeout;
    lc.dimse_timeout = d->cfg.dimse_timeout;
    lc.idle_timeout = d->cfg.idle_timeout;
    lc.max_object_bytes = (size_t)d->cfg.max_object_mb << 20;
    lc.refuse_other_classes = !strcmp(d->cfg.other_sop_classes, "refuse");
    (void)snprintf(lc.spool_dir, sizeof(lc.spool_dir), "%s", d->cfg.spool_dir);
    ops = daemon_listener_ops;
    ops.user = d;
    if (dcm_listener_start(&lc, &ops, &d->listener, err, sizeof(err)) != CXR_OK)
        return cxr_log_err(CXR_EDICOM, "dicom.listen", "msg='%s'", err);
    memset(&lc.tls, 0, sizeof(lc.tls)); /* paths only, but keep no copy */
    cxr_log(CXR_LOG_NOTICE, "dicom.listen",
            "bind=%s port=%d tls=%s tls_port=%d ae_title=%s max_associations=%d max_pdu=%d "
            "other_sop_classes=%s",
            d->cfg.dicom_bind, plain ? d->cfg.dicom_port : 0, d->cfg.tls,
            tls ? d->cfg.tls_port : 0, d->cfg.ae_title, d->cfg.max_associations,
            d->cfg.max_pdu, d->cfg.other_sop_classes);
    return CXR_OK;
}

static void begin_stop(struct daemon *d, int signo)
{
    double t0 = mono_ms();

    cxr_log(CXR_LOG_NOTICE, "daemon.stop", "signal=%s", strsignal(signo));
    (void)sd_notify(0, "STOPPING=1");
    d->stopping = true;
    atomic_store(&d->met.listening, false);
    d->stop_deadline = t0 + 1000.0 * d->cfg.stop_timeout;
    atomic_store(&d->refusing, REFUSE_STOPPING);
    /* Running associations finish (their receipts wait in the inbox); half the budget. */
    dcm_listener_stop(d->listener, d->cfg.stop_timeout * 500);
    d->listener = NULL;
    cxr_log(CXR_LOG_INFO, "dicom.stopped", "ms=%.0f", mono_ms() - t0);
}

int daemon_run(struct daemon *d)
{
    char err[512];
    int ep = -1, tfd = -1, rc = 1, ticks = 0;
    double last_retention = 0;
    uint64_t wd_usec = 0;
    bool watchdog = sd_watchdog_enabled(0, &wd_usec) > 0;

    pthread_mutex_init(&d->inbox_lock, NULL);
    pthread_mutex_init(&d->allow_lock, NULL);
    pthread_mutex_init(&d->rule_lock, NULL);
    d->met.start_ms = st_now_ms();
    (void)snprintf(d->allowed_aets, sizeof(d->allowed_aets), "%s", d->cfg.allowed_calling_aets);
    d->listen_fd = d->tls_listen_fd = -1;
    if (setup_fds(d, &ep, &tfd) != CXR_OK)
        goto out;
    if (st_open(d->cfg.audit_db, ST_OPEN_WRITE, &d->db, err, sizeof(err)) != CXR_OK) {
        cxr_log_err(CXR_EDB, "audit.open", "msg='%s'", err);
        goto out;
    }
    atomic_store(&d->met.db_ok, true);
    cxr_log(CXR_LOG_INFO, "audit.open", "db='%s' schema=%d", d->cfg.audit_db,
            st_schema_version(d->db));
    if (pipeline_start(d->model, d->cfg.workers, wake, d, &d->pipe, err, sizeof(err)) != CXR_OK) {
        cxr_log_err(CXR_ENOMEM, "pipeline.start", "msg='%s'", err);
        goto out;
    }
    if (report_start(d) != CXR_OK)
        goto out;
    d->snd_fd_changed = true;
    if (recover(d) != CXR_OK)
        goto out;
    check_admission(d);
    if (start_listener(d) != CXR_OK)
        goto out;
    atomic_store(&d->met.listening, true);
    if (d->cfg.http_enabled && http_start(d, &d->http) != CXR_OK)
        goto out;
    (void)sd_notifyf(0, "READY=1\nSTATUS=Listening on %s:%d", d->cfg.dicom_bind,
                     d->cfg.dicom_port);
    cxr_log(CXR_LOG_NOTICE, "daemon.ready",
            "dicom=%s:%d tls=%s tls_port=%d ae_title=%s http=%s workers=%d model=%s rule='%s' "
            "report_mode=%s state_dir='%s'",
            d->cfg.dicom_bind, d->cfg.dicom_port, d->cfg.tls, d->cfg.tls_port, d->cfg.ae_title,
            d->http ? http_url(d->http) : "off", d->cfg.workers,
            nn_model_digest(d->model), d->rule_text, d->cfg.report_mode, d->cfg.state_dir);

    for (;;) {
        struct epoll_event evs[8];
        int n;

        if (d->snd_fd_changed) {
            struct epoll_event ev = {.events = EPOLLIN};
            ev.data.fd = report_fd(d);
            if (ev.data.fd >= 0)
                (void)epoll_ctl(ep, EPOLL_CTL_ADD, ev.data.fd, &ev);
            d->snd_fd_changed = false;
        }
        n = epoll_wait(ep, evs, 8, 1000);

        if (n < 0 && errno != EINTR) {
            cxr_log_err(CXR_EIO, "daemon.loop", "error='%s'", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == d->sig_fd) {
                unsigned char signo;
                while (read(d->sig_fd, &signo, 1) == 1) {
                    if (signo == SIGHUP)
                        reload(d);
                    else if (!d->stopping)
                        begin_stop(d, signo);
                }
            } else if (fd == d->inbox_fd) {
                handle_inbox(d);
            } else if (fd == d->done_fd) {
                handle_done(d);
            } else if (fd == report_fd(d)) {
                report_process(d);
            } else if (fd == tfd) {
                drain_fd(tfd);
                ticks++;
                retry_ledger(d);
                studies_tick(d);
                check_admission(d);
                atomic_store(&d->met.queue_depth, d->queued);
                atomic_store(&d->met.assoc_active, dcm_listener_active(d->listener));
                report_process(d);
                report_pump(d);
                if (ticks % 20 == 0)
                    notify_status(d);
                if (watchdog)
                    (void)sd_notify(0, "WATCHDOG=1");
                if (mono_ms() - last_retention > 3600e3) {
                    last_retention = mono_ms();
                    retention(d);
                }
            }
        }
        if (d->stopping) {
            handle_inbox(d); /* receipts of the associations that just finished */
            handle_done(d);
            if (pipeline_busy(d->pipe) == 0 || mono_ms() >= d->stop_deadline)
                break;
        }
    }
    if (d->stopping) {
        int left = pipeline_busy(d->pipe);
        studies_tick(d);
        if (left)
            cxr_log(CXR_LOG_WARNING, "daemon.stop",
                    "queued=%d msg='stop_timeout reached; they stay received and resume at the next start'",
                    left);
        rc = 0;
    }
out:
    http_stop(d->http); /* first: its uploads wait for this loop, which no longer answers */
    d->http = NULL;
    dcm_listener_stop(d->listener, 1000);
    d->listener = NULL;
    pipeline_stop(d->pipe);
    d->pipe = NULL;
    report_stop(d);
    if (d->listen_fd >= 0)
        (void)close(d->listen_fd);
    if (d->tls_listen_fd >= 0)
        (void)close(d->tls_listen_fd);
    retry_free(d);
    st_close(d->db);
    d->db = NULL;
    while (d->studies) {
        struct open_study *s = d->studies;
        d->studies = s->next;
        free(s);
    }
    if (ep >= 0)
        (void)close(ep);
    if (tfd >= 0)
        (void)close(tfd);
    return rc;
}
