/*
 * report.c - a complete study's reports: built (hl7/) inside the transaction that completes
 * the study, queued in the outbox (store/), delivered by the sender (hl7/, on the loop thread)
 * or written as files under [report] outbox_dir when no destination is configured.
 *
 * DESIGN
 * - Building happens inside st_study_complete_reports' transaction, so a study is complete if
 *   and only if its reports are queued: a crash can lose neither. The header fields (patient
 *   name in UTF-8, order numbers, procedure) are read from one spool file of the study
 *   (dcm_read_report_fields); a study whose files are gone (retention) reports what the ledger
 *   holds.
 * - One report per destination and format. A second report for the same study, destination
 *   and format (an image arrived after completion, or the study was scored again with another
 *   model) is a correction linked to the previous one: OBR-25/OBX-11 C, FHIR "corrected", with
 *   its own idempotency key. Identifiers (idempotency key, MSH-10, report identifier) are fixed
 *   when the report is queued and reused on every retry.
 * - Delivery: every tick the loop takes due reports (st_outbox_due) that are not in flight and
 *   submits them; each result is recorded with st_report_attempt. Retry delays double from the
 *   destination's retry_initial up to retry_max, with jitter, and honour Retry-After; a report
 *   older than the destination's max_age goes dead (visible in `cxrtriage outbox list`).
 *   The sender never blocks: a slow or hanging receiver delays only its own reports.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "hl7.h"

struct inflight {
    int64_t id;
    int attempts;
    int64_t created_ms;
    int dest;
};

struct reporter {
    snd_sender *snd;
    const struct cfg_dest *dests[SND_MAX_DESTS]; /* index = snd_request.dest */
    int n_dests;
    struct inflight *fl;
    int n_fl, cap_fl;
    bool warned_unknown;
};

/* ---- building ---- */

struct build_ctx {
    struct daemon *d;
    char error[256];
};

struct first_file {
    char path[1024];
    bool scored;
};

static bool pick_file(void *user, const struct st_instance *in)
{
    struct first_file *f = user;

    if (!in->r.spool_path[0] || access(in->r.spool_path, R_OK) != 0)
        return true;
    if (!f->path[0] || (!f->scored && in->res.state == ST_CLASSIFIED)) {
        (void)cxr_strlcpy(f->path, sizeof(f->path), in->r.spool_path);
        f->scored = in->res.state == ST_CLASSIFIED;
    }
    return !f->scored;
}

/* "UID: reason; UID: reason" (st_study.skipped) -> pairs, in place. */
static size_t parse_skipped(char *text, struct rpt_skipped *out, size_t max)
{
    size_t n = 0;
    char *p = text;

    while (p && *p && n < max) {
        char *end = strstr(p, "; ");
        char *colon;
        if (end)
            *end = '\0';
        colon = strstr(p, ": ");
        if (colon) {
            *colon = '\0';
            out[n].sop_uid = p;
            out[n].reason = colon + 2;
            n++;
        }
        p = end ? end + 2 : NULL;
    }
    return n;
}

static void model_identity(const nn_model *m, const char *path, char *name, size_t nlen,
                           char *version, size_t vlen)
{
    const char *base = strrchr(path, '/');
    const char *v = nn_model_meta(m, "version");
    const char *n = nn_model_meta(m, "name");
    size_t len;

    base = base ? base + 1 : path;
    if (n && *n) {
        (void)cxr_strlcpy(name, nlen, n);
    } else {
        len = strcspn(base, ".");
        if (len >= nlen)
            len = nlen - 1;
        memcpy(name, base, len);
        name[len] = '\0';
    }
    if (!v || !*v)
        v = nn_model_meta(m, "trained_at");
    (void)snprintf(version, vlen, "%s", v && *v ? v : "unversioned");
}

static int triage_class_of(const struct daemon *d, const struct st_study *s)
{
    int best = -1;

    if (s->triage == ST_TRIAGE_NORMAL)
        return d->rule.normal_class;
    if (s->triage != ST_TRIAGE_URGENT)
        return -1;
    for (int c = 0; c < s->n_classes && c < d->rule.n_classes; c++) {
        if (c == d->rule.normal_class || s->scores[c] < (double)d->rule.threshold[c])
            continue;
        if (best < 0 || s->scores[c] > s->scores[best])
            best = c;
    }
    return best;
}

static enum rpt_priority priority_of(enum st_triage t)
{
    switch (t) {
    case ST_TRIAGE_URGENT: return RPT_PRIO_URGENT;
    case ST_TRIAGE_ROUTINE: return RPT_PRIO_ROUTINE;
    case ST_TRIAGE_NORMAL: return RPT_PRIO_NORMAL;
    default: return RPT_PRIO_NONE;
    }
}

static void settings_of(const struct daemon *d, struct rpt_settings *s)
{
    rpt_settings_init(s);
    s->sending_application = d->cfg.sending_application;
    s->sending_facility = d->cfg.sending_facility;
    s->receiving_application = d->cfg.receiving_application;
    s->receiving_facility = d->cfg.receiving_facility;
    s->processing_id = d->cfg.processing_id[0] ? d->cfg.processing_id[0] : 'P';
}

/* Which formats a destination gets: its own format, else [report] formats. */
static void formats_of(const struct daemon *d, const struct cfg_dest *dest, bool *hl7, bool *fhir)
{
    const char *f = dest && dest->format[0] ? dest->format : d->cfg.report_formats;

    if (dest && dest->kind == CFG_DEST_MLLP) {
        *hl7 = true;
        *fhir = false;
        return;
    }
    *hl7 = strstr(f, "hl7") || !strcmp(f, "both");
    *fhir = strstr(f, "fhir") || !strcmp(f, "both");
}

static int add_report(struct build_ctx *b, st_db *db, struct rpt_result *r,
                      const struct rpt_settings *set, const char *dest_name,
                      enum st_report_format fmt, int64_t now, struct st_report_new *out)
{
    struct st_report prev;
    struct cxr_buf body;
    char err[512] = "", key[ST_ID_MAX];
    cxr_err e;
    bool have_prev;

    memset(&prev, 0, sizeof(prev));
    have_prev = st_report_latest(db, r->study.study_uid, dest_name, fmt, &prev, err,
                                 sizeof(err)) == CXR_OK;
    r->is_correction = have_prev;
    r->previous_control_id = have_prev && prev.control_id[0] ? prev.control_id : NULL;
    r->previous_report_id = have_prev && prev.report_id[0] ? prev.report_id : NULL;
    (void)cxr_strlcpy(out->destination, sizeof(out->destination), dest_name);
    out->format = fmt;
    out->is_correction = have_prev;
    out->corrects = have_prev ? prev.id : 0;
    (void)cxr_strlcpy(out->model_digest, sizeof(out->model_digest), r->model_digest);
    if (hl7_idempotency_key(r, key, sizeof(key)) != CXR_OK)
        goto fail;
    (void)snprintf(out->idempotency_key, sizeof(out->idempotency_key), "%.100s-%s-%.20s", key,
                   fmt == ST_FORMAT_HL7 ? "hl7" : "fhir", dest_name);
    cxr_buf_init(&body, SND_BODY_MAX);
    if (fmt == ST_FORMAT_HL7) {
        (void)cxr_strlcpy(out->content_type, sizeof(out->content_type), "x-application/hl7-v2+er7");
        if (hl7_control_id_suggest(r, now, out->control_id, sizeof(out->control_id)) != CXR_OK)
            goto fail;
        e = hl7_build_oru(r, set, out->control_id, now, &body, err, sizeof(err));
    } else {
        (void)cxr_strlcpy(out->content_type, sizeof(out->content_type), "application/fhir+json");
        if (fhir_report_identifier(r, set, out->report_id, sizeof(out->report_id)) != CXR_OK)
            goto fail;
        e = fhir_build_bundle(r, set, now, &body, err, sizeof(err));
    }
    if (e != CXR_OK) {
        cxr_buf_done(&body);
        goto fail;
    }
    out->body_len = body.len;
    out->body = body.data; /* the store frees it */
    r->previous_control_id = r->previous_report_id = NULL; /* they pointed into prev */
    return 0;
fail:
    r->previous_control_id = r->previous_report_id = NULL;
    (void)snprintf(b->error, sizeof(b->error), "%s report for destination %.32s: %.180s",
                   fmt == ST_FORMAT_HL7 ? "HL7" : "FHIR", dest_name, err[0] ? err : "cannot build");
    return -1;
}

static int build_reports(void *user, st_db *db, const struct st_study *s, struct st_report_new *out,
                         int max)
{
    struct build_ctx *b = user;
    struct daemon *d = b->d;
    struct dcm_report_fields f;
    struct first_file ff = {"", false};
    struct st_filter flt;
    struct rpt_result r;
    struct rpt_settings set;
    struct rpt_skipped skipped[32];
    const char *names[ST_MAX_CLASSES];
    char skipped_text[sizeof(s->skipped)], err[512], reason[ST_TEXT_MAX] = "";
    char model_name[64], model_version[64];
    const struct cfg_dest *dests[CFG_MAX_DESTS + 2];
    int nd = cfg_destinations(&d->cfg, dests, (int)CXR_ARRAY_SIZE(dests)), n = 0;
    int64_t now = s->completed_ms;

    if (!strcmp(s->patient_id, CXR_SELFTEST_PATIENT_ID)) {
        /* `cxrtriage selftest`'s test image: scored and audited, never sent as a patient's */
        cxr_log(CXR_LOG_INFO, "report.skipped", "study=%s reason=selftest patient_id=%s",
                cxr_log_phi(s->study_uid), CXR_SELFTEST_PATIENT_ID);
        return 0;
    }
    memset(&f, 0, sizeof(f));
    memset(&flt, 0, sizeof(flt));
    (void)cxr_strlcpy(flt.study_uid, sizeof(flt.study_uid), s->study_uid);
    if (st_list(db, &flt, pick_file, &ff, err, sizeof(err)) == CXR_OK && ff.path[0] &&
        dcm_read_report_fields(ff.path, &f, err, sizeof(err)) != CXR_OK) {
        cxr_log(CXR_LOG_WARNING, "report.fields", "msg='%s' (the report uses what the ledger holds)", err);
        memset(&f, 0, sizeof(f));
    }
    if (f.warnings)
        cxr_log(CXR_LOG_WARNING, "report.charset", "msg='%s'", f.warning_text);
    memset(&r, 0, sizeof(r));
    r.study.study_uid = s->study_uid;
    r.study.study_date = f.study_date;
    r.study.study_time = f.study_time;
    r.study.tz_offset = f.timezone_offset;
    r.study.n_instances = s->n_instances;
    r.patient.id = f.patient_id[0] ? f.patient_id : s->patient_id;
    r.patient.issuer = f.issuer_of_patient_id;
    r.patient.name = f.patient_name;
    r.patient.birth_date = f.birth_date;
    r.patient.sex = f.sex;
    r.order.accession = f.accession[0] ? f.accession : s->accession;
    r.order.placer_order = f.placer_order;
    r.order.filler_order = f.filler_order;
    r.order.requested_procedure_id = f.requested_procedure_id;
    r.order.procedure_code = f.procedure_code;
    r.order.procedure_scheme = f.procedure_scheme;
    r.order.procedure_meaning = f.procedure_meaning;
    r.assessed = s->n_scored > 0 && s->n_classes > 0;
    if (r.assessed) {
        float probs[NN_MAX_CLASSES];
        r.n_classes = s->n_classes;
        for (int c = 0; c < s->n_classes; c++) {
            names[c] = s->class_names[c];
            probs[c] = (float)s->scores[c];
        }
        r.class_names = names;
        r.scores = s->scores;
        r.priority = priority_of(s->triage);
        r.triage_class = triage_class_of(d, s);
        (void)nn_triage_apply(&d->rule, d->model, probs, reason, sizeof(reason));
        r.triage_reason = reason;
        r.triage_rule = d->rule_text;
    } else {
        r.triage_class = -1;
    }
    memcpy(skipped_text, s->skipped, sizeof(skipped_text));
    r.n_skipped = parse_skipped(skipped_text, skipped, CXR_ARRAY_SIZE(skipped));
    r.skipped = skipped;
    model_identity(d->model, d->cfg.model_path, model_name, sizeof(model_name), model_version,
                   sizeof(model_version));
    r.model_name = model_name;
    r.model_version = model_version;
    r.model_digest = s->model_digest[0] ? s->model_digest : nn_model_digest(d->model);
    r.analysis_ms = now;
    settings_of(d, &set);

    if (nd == 0) { /* no destination: files under [report] outbox_dir */
        bool hl7, fhir;
        formats_of(d, NULL, &hl7, &fhir);
        if (hl7 && n < max && add_report(b, db, &r, &set, "files", ST_FORMAT_HL7, now, &out[n++]))
            return -1;
        if (fhir && n < max && add_report(b, db, &r, &set, "files", ST_FORMAT_FHIR, now, &out[n++]))
            return -1;
        return n;
    }
    for (int i = 0; i < nd; i++) {
        bool hl7, fhir;
        formats_of(d, dests[i], &hl7, &fhir);
        if (hl7 && n < max &&
            add_report(b, db, &r, &set, dests[i]->name, ST_FORMAT_HL7, now, &out[n++]))
            return -1;
        if (fhir && n < max &&
            add_report(b, db, &r, &set, dests[i]->name, ST_FORMAT_FHIR, now, &out[n++]))
            return -1;
    }
    return n;
}

cxr_err report_complete_study(struct daemon *d, const char *study_uid, int64_t now_ms,
                              struct st_study *ret, char *errbuf, size_t errlen)
{
    struct build_ctx b = {d, ""};
    cxr_err e;

    if (d->shadow)
        return st_study_complete(d->db, study_uid, now_ms, ret, errbuf, errlen);
    e = st_study_complete_reports(d->db, study_uid, now_ms, build_reports, &b, ret, errbuf,
                                  errlen);
    if (e != CXR_OK && b.error[0])
        (void)snprintf(errbuf, errlen, "%s", b.error);
    return e;
}

/* ---- delivery ---- */

static void on_result(void *user, const struct snd_result *sr);

static cxr_err sender_open(struct daemon *d)
{
    struct reporter *rp = d->rep;
    struct snd_dest sd[SND_MAX_DESTS];
    const struct cfg_dest *cd[CFG_MAX_DESTS + 2];
    int n = cfg_destinations(&d->cfg, cd, (int)CXR_ARRAY_SIZE(cd));
    char err[512];

    if (n > SND_MAX_DESTS)
        n = SND_MAX_DESTS;
    rp->n_dests = 0;
    if (n == 0)
        return CXR_OK;
    memset(sd, 0, sizeof(sd));
    for (int i = 0; i < n; i++) {
        const struct cfg_dest *c = cd[i];
        (void)cxr_strlcpy(sd[i].name, sizeof(sd[i].name), c->name);
        sd[i].kind = c->kind == CFG_DEST_MLLP ? SND_MLLP : SND_WEBHOOK;
        (void)cxr_strlcpy(sd[i].url, sizeof(sd[i].url), c->url);
        (void)cxr_strlcpy(sd[i].host, sizeof(sd[i].host), c->host);
        sd[i].port = c->port;
        (void)cxr_strlcpy(sd[i].bearer_token, sizeof(sd[i].bearer_token), c->bearer_token);
        (void)cxr_strlcpy(sd[i].hmac_key, sizeof(sd[i].hmac_key), c->hmac_key);
        (void)cxr_strlcpy(sd[i].ca_file, sizeof(sd[i].ca_file), c->ca_file);
        (void)cxr_strlcpy(sd[i].client_cert, sizeof(sd[i].client_cert), c->client_cert);
        (void)cxr_strlcpy(sd[i].client_key, sizeof(sd[i].client_key), c->client_key);
        sd[i].connect_timeout_s = c->connect_timeout;
        sd[i].timeout_s = c->timeout;
        rp->dests[i] = c;
    }
    if (snd_new(sd, n, on_result, d, &rp->snd, err, sizeof(err)) != CXR_OK) {
        memset(sd, 0, sizeof(sd)); /* secrets */
        return cxr_log_err(CXR_EINVAL, "report.sender", "msg='%s'", err);
    }
    memset(sd, 0, sizeof(sd));
    rp->n_dests = n;
    for (int i = 0; i < n; i++)
        cxr_log(CXR_LOG_INFO, "report.destination", "name=%s kind=%s target='%s%s%s' format=%s",
                cd[i]->name, cd[i]->kind == CFG_DEST_MLLP ? "mllp" : "webhook",
                cd[i]->kind == CFG_DEST_MLLP ? cd[i]->host : cd[i]->url,
                cd[i]->kind == CFG_DEST_MLLP ? ":" : "",
                cd[i]->kind == CFG_DEST_MLLP ? "port" : "",
                cd[i]->format[0] ? cd[i]->format : d->cfg.report_formats);
    return CXR_OK;
}

cxr_err report_start(struct daemon *d)
{
    d->rep = calloc(1, sizeof(*d->rep));
    if (!d->rep)
        return CXR_ENOMEM;
    if (cxr_mkdir_p(d->cfg.outbox_dir, 0700) != CXR_OK)
        return cxr_log_err(CXR_EIO, "report.files", "dir='%s' error='%s'", d->cfg.outbox_dir,
                           strerror(errno));
    if (sender_open(d) != CXR_OK)
        return CXR_EINVAL;
    if (d->rep->n_dests == 0 && !d->shadow)
        cxr_log(CXR_LOG_NOTICE, "report.files",
                "dir='%s' msg='no [webhook] or [mllp] destination: reports are written here'",
                d->cfg.outbox_dir);
    return CXR_OK;
}

int report_fd(const struct daemon *d)
{
    return d->rep && d->rep->snd ? snd_fd(d->rep->snd) : -1;
}

void report_process(struct daemon *d)
{
    if (d->rep && d->rep->snd)
        snd_process(d->rep->snd);
}

void report_stop(struct daemon *d)
{
    if (!d->rep)
        return;
    snd_free(d->rep->snd); /* attempts in flight stay pending: retried at the next start */
    free(d->rep->fl);
    free(d->rep);
    d->rep = NULL;
}

cxr_err report_reload(struct daemon *d)
{
    struct reporter *rp = d->rep;

    if (!rp)
        return CXR_OK;
    snd_free(rp->snd); /* aborted attempts stay pending and are resubmitted at the next tick */
    rp->snd = NULL;
    rp->n_fl = 0;
    rp->warned_unknown = false;
    return sender_open(d);
}

static struct inflight *fl_find(struct reporter *rp, int64_t id)
{
    for (int i = 0; i < rp->n_fl; i++)
        if (rp->fl[i].id == id)
            return &rp->fl[i];
    return NULL;
}

static void fl_remove(struct reporter *rp, int64_t id)
{
    for (int i = 0; i < rp->n_fl; i++)
        if (rp->fl[i].id == id) {
            rp->fl[i] = rp->fl[--rp->n_fl];
            return;
        }
}

/* Next attempt after `attempts` failures: retry_initial doubled per failure up to retry_max,
 * jittered to 50-100 % so many reports to one receiver do not retry in step; at least the
 * receiver's Retry-After (capped at retry_max). */
static int64_t backoff_ms(const struct cfg_dest *c, int attempts, int retry_after_s)
{
    static uint64_t x = 0x9e3779b97f4a7c15ULL;
    double delay = c->retry_initial, jitter;

    x ^= (uint64_t)st_now_ms(); /* xorshift64: spread, not secrecy */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    jitter = 0.5 + 0.5 * (double)(x % 1000) / 1000.0;

    for (int i = 0; i < attempts && delay < c->retry_max; i++)
        delay *= 2;
    if (delay > c->retry_max)
        delay = c->retry_max;
    delay *= jitter;
    if (retry_after_s > 0)
        delay = retry_after_s < c->retry_max ? (double)retry_after_s : (double)c->retry_max;
    return (int64_t)(delay * 1000.0);
}

static void record(struct daemon *d, const struct inflight *f, const struct snd_result *sr)
{
    const struct cfg_dest *c = d->rep->dests[f->dest];
    enum st_attempt_outcome o = sr->outcome == SND_DELIVERED ? ST_ATTEMPT_DELIVERED
                                : sr->outcome == SND_DEAD    ? ST_ATTEMPT_DEAD
                                                             : ST_ATTEMPT_RETRY;
    int64_t now = st_now_ms(), next = 0;
    char detail[ST_TEXT_MAX], err[512];

    (void)cxr_strlcpy(detail, sizeof(detail), sr->detail);
    if (o == ST_ATTEMPT_RETRY) {
        next = now + backoff_ms(c, f->attempts, sr->retry_after_s);
        if (next - f->created_ms > (int64_t)c->max_age * 1000) {
            o = ST_ATTEMPT_DEAD;
            (void)snprintf(detail, sizeof(detail), "%.180s; max_age %d s reached", sr->detail,
                           c->max_age);
        }
    }
    if (st_report_attempt(d->db, f->id, now, o, sr->http_status, detail, sr->response, sr->ms,
                          next, err, sizeof(err)) != CXR_OK) {
        cxr_log_err(CXR_EDB, "report.attempt", "report=%lld msg='%s'", (long long)f->id, err);
        return;
    }
    cxr_log(o == ST_ATTEMPT_DELIVERED ? CXR_LOG_INFO : CXR_LOG_WARNING,
            o == ST_ATTEMPT_DELIVERED ? "report.delivered"
            : o == ST_ATTEMPT_DEAD    ? "report.dead"
                                      : "report.retry",
            "report=%lld destination=%s status=%d ms=%.0f detail='%s'%s", (long long)f->id,
            c->name, sr->http_status, sr->ms, detail,
            o == ST_ATTEMPT_RETRY ? " (will retry)" : "");
}

static void on_result(void *user, const struct snd_result *sr)
{
    struct daemon *d = user;
    struct inflight *f = fl_find(d->rep, sr->report_id);
    struct inflight copy;

    if (!f)
        return;
    copy = *f;
    fl_remove(d->rep, sr->report_id);
    record(d, &copy, sr);
}

/* The local outbox: <outbox_dir>/<id>-<format>.{hl7,json}, written atomically. */
static void write_file(struct daemon *d, const struct st_report *r)
{
    char path[CFG_PATH_MAX + 64], err[512], detail[ST_TEXT_MAX];
    bool ok;

    (void)snprintf(path, sizeof(path), "%s/report-%06lld-%s.%s", d->cfg.outbox_dir,
                   (long long)r->id, r->is_correction ? "correction" : "study",
                   r->format == ST_FORMAT_HL7 ? "hl7" : "json");
    ok = cxr_file_write_atomic(path, r->body, r->body_len, 0600) == CXR_OK;
    (void)snprintf(detail, sizeof(detail), ok ? "written to %.200s" : "cannot write %.200s",
                   path);
    if (st_report_attempt(d->db, r->id, st_now_ms(), ok ? ST_ATTEMPT_DELIVERED : ST_ATTEMPT_RETRY,
                          0, detail, "", 0, st_now_ms() + 60000, err, sizeof(err)) != CXR_OK)
        cxr_log_err(CXR_EDB, "report.attempt", "report=%lld msg='%s'", (long long)r->id, err);
    else
        cxr_log(ok ? CXR_LOG_INFO : CXR_LOG_WARNING, ok ? "report.written" : "report.retry",
                "report=%lld path='%s'", (long long)r->id, path);
}

static bool due_one(void *user, const struct st_report *r)
{
    struct daemon *d = user;
    struct reporter *rp = d->rep;
    struct snd_request rq;
    int dest = -1;

    if (fl_find(rp, r->id))
        return true;
    if (rp->n_fl >= 64)
        return false; /* enough in flight; the rest wait for the next tick */
    if (!strcmp(r->destination, "files")) {
        write_file(d, r);
        return true;
    }
    for (int i = 0; i < rp->n_dests; i++)
        if (!strcmp(rp->dests[i]->name, r->destination))
            dest = i;
    if (dest < 0 || !rp->snd) {
        if (!rp->warned_unknown)
            cxr_log(CXR_LOG_WARNING, "report.destination",
                    "report=%lld destination=%s msg='no such destination in the configuration; "
                    "the report waits (or goes dead at its max_age) until it is configured again'",
                    (long long)r->id, r->destination);
        rp->warned_unknown = true;
        return true;
    }
    if (rp->n_fl == rp->cap_fl) {
        int cap = rp->cap_fl ? rp->cap_fl * 2 : 16;
        struct inflight *nf = realloc(rp->fl, (size_t)cap * sizeof(*nf));
        if (!nf)
            return false;
        rp->fl = nf;
        rp->cap_fl = cap;
    }
    memset(&rq, 0, sizeof(rq));
    rq.report_id = r->id;
    rq.dest = dest;
    rq.body = r->body;
    rq.len = r->body_len;
    rq.content_type = r->content_type;
    rq.idempotency_key = r->idempotency_key;
    rq.control_id = r->control_id;
    if (snd_submit(rp->snd, &rq) != CXR_OK) {
        cxr_log(CXR_LOG_WARNING, "report.submit", "report=%lld msg='the sender refused it'",
                (long long)r->id);
        return true;
    }
    rp->fl[rp->n_fl++] = (struct inflight){r->id, r->attempts, r->created_at_ms, dest};
    return true;
}

void report_pump(struct daemon *d)
{
    char err[512];

    if (!d->rep || d->stopping)
        return;
    if (st_outbox_due(d->db, st_now_ms(), 64 + d->rep->n_fl, due_one, d, err, sizeof(err)) !=
        CXR_OK)
        cxr_log_err(CXR_EDB, "report.due", "msg='%s'", err);
}

int report_in_flight(const struct daemon *d)
{
    return d->rep ? d->rep->n_fl : 0;
}
