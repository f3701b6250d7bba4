/*
 * http.c - the HTTP endpoint (see http.h for the design): routes, the JSON API, metrics,
 * readiness, the embedded page, and the libmicrohttpd glue at the end of the file.
 */
#include "http.h"

#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "daemon.h"
#include "web_assets.h"

#define HTTP_PAGE_DEFAULT 50
#define HTTP_PAGE_MAX 1000
#define UPLOAD_WAIT_MS 10000

struct score_slot {
    bool busy;
    nn_ctx *ctx;
    float *input, *unit;
    nn_gradcam *cam_ctx;           /* made on the first heatmap=1 on this slot */
    float *cam;
};

struct http_server {
    struct daemon *d;
    http_upload_fn *record;
    void *record_user;
    struct MHD_Daemon *mhd;
    char url[CFG_STR_MAX + 32];
    char token[CFG_STR_MAX];       /* bearer */
    char basic[2 * CFG_STR_MAX];   /* "user:password" for basic */
    size_t max_body;
    char *tls_cert, *tls_key;
    pthread_mutex_t pool_lock;
    int n_slots;
    struct score_slot slots[64];
};

/* ---- responses ---- */

static void set_header(struct http_response *rs, const char *name, const char *value)
{
    if (rs->n_headers >= HTTP_RESP_HEADERS)
        return;
    (void)cxr_strlcpy(rs->header_name[rs->n_headers], sizeof(rs->header_name[0]), name);
    (void)cxr_strlcpy(rs->header_value[rs->n_headers], sizeof(rs->header_value[0]), value);
    rs->n_headers++;
}

static void set_body(struct http_response *rs, int status, const char *type, char *body,
                     size_t len)
{
    free(rs->owned);
    rs->body_static = false;
    rs->status = status;
    (void)cxr_strlcpy(rs->content_type, sizeof(rs->content_type), type);
    rs->owned = (unsigned char *)body;
    rs->body = rs->owned;
    rs->body_len = body ? len : 0;
}

/* Takes ownership of j. */
static void reply_json(struct http_response *rs, int status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;

    json_decref(j);
    if (!text) {
        static const char oom[] =
            "{\"error\":{\"status\":500,\"code\":\"internal\",\"message\":\"out of memory\"}}";
        char *copy = strdup(oom);
        set_body(rs, 500, "application/json", copy, copy ? strlen(copy) : 0);
        return;
    }
    set_body(rs, status, "application/json", text, strlen(text));
}

/* Takes the buffer's text. */
static void reply_buf(struct http_response *rs, int status, const char *type, struct cxr_buf *b)
{
    char *text = NULL;

    if (cxr_buf_take(b, &text) != CXR_OK || !text) {
        cxr_buf_done(b);
        reply_json(rs, 500, NULL);
        return;
    }
    set_body(rs, status, type, text, strlen(text));
}

static const char *error_code(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 409: return "conflict";
    case 413: return "payload_too_large";
    case 415: return "unsupported_media_type";
    case 422: return "unprocessable";
    case 503: return "not_ready";
    default: return "internal";
    }
}

static json_t *error_obj(int status, const char *message)
{
    return json_pack("{s:{s:i,s:s,s:s}}", "error", "status", status, "code", error_code(status),
                     "message", message);
}

static void reply_error(struct http_response *rs, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_error(struct http_response *rs, int status, const char *fmt, ...)
{
    char msg[768];
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    reply_json(rs, status, error_obj(status, msg));
}

void http_response_done(struct http_response *rs)
{
    free(rs->owned);
    rs->owned = NULL;
    rs->body = NULL;
    rs->body_len = 0;
}

/* ---- request helpers ---- */

static const char *query_get(const struct http_request *rq, const char *name)
{
    for (size_t i = 0; i < rq->n_query; i++)
        if (rq->query[i].name && !strcmp(rq->query[i].name, name))
            return rq->query[i].value ? rq->query[i].value : "";
    return NULL;
}

static const char *header_get(const struct http_request *rq, const char *name)
{
    for (size_t i = 0; i < rq->n_headers; i++)
        if (rq->headers[i].name && !strcasecmp(rq->headers[i].name, name))
            return rq->headers[i].value ? rq->headers[i].value : "";
    return NULL;
}

/* A positive decimal id of at most 18 digits; 0 when it is not one. */
static int64_t parse_id(const char *s)
{
    int64_t v = 0;
    size_t n = 0;

    if (!s || !*s)
        return 0;
    for (; s[n]; n++) {
        if (s[n] < '0' || s[n] > '9' || n >= 18)
            return 0;
        v = v * 10 + (s[n] - '0');
    }
    return v;
}

/* Paging: limit (1..HTTP_PAGE_MAX, default 50) and after_id. False with a 400 reply. */
static bool parse_paging(const struct http_request *rq, struct http_response *rs, int *ret_limit,
                         int64_t *ret_after)
{
    const char *l = query_get(rq, "limit"), *a = query_get(rq, "after_id");

    *ret_limit = HTTP_PAGE_DEFAULT;
    *ret_after = 0;
    if (l && *l) {
        int64_t v = parse_id(l);
        if (v < 1 || v > HTTP_PAGE_MAX) {
            reply_error(rs, 400, "limit: expected a whole number from 1 to %d", HTTP_PAGE_MAX);
            return false;
        }
        *ret_limit = (int)v;
    }
    if (a && *a) {
        *ret_after = parse_id(a);
        if (*ret_after < 1) {
            reply_error(rs, 400, "after_id: expected a positive whole number (next_after_id of "
                                 "the previous page)");
            return false;
        }
    }
    return true;
}

static bool parse_time_arg(const struct http_request *rq, struct http_response *rs,
                           const char *name, int64_t *ret)
{
    const char *v = query_get(rq, name);

    *ret = 0;
    if (!v || !*v)
        return true;
    if (!st_parse_time(v, st_now_ms(), ret)) {
        reply_error(rs, 400, "%s: expected a date (2026-12-02), a UTC time (2026-12-02T09:30Z) "
                             "or a relative time (24h, 7d)", name);
        return false;
    }
    return true;
}

static bool copy_arg(const struct http_request *rq, struct http_response *rs, const char *name,
                     char *dst, size_t len)
{
    const char *v = query_get(rq, name);

    dst[0] = '\0';
    if (!v)
        return true;
    if (!cxr_strlcpy(dst, len, v)) {
        reply_error(rs, 400, "%s: at most %zu characters", name, len - 1);
        return false;
    }
    return true;
}

static bool open_read(struct http_server *s, struct http_response *rs, st_db **ret)
{
    char err[512];

    if (st_open(s->d->cfg.audit_db, ST_OPEN_READ, ret, err, sizeof(err)) != CXR_OK) {
        reply_error(rs, 503, "the audit ledger cannot be read: %s", err);
        return false;
    }
    return true;
}

/* ---- operations: /healthz, /readyz, /metrics ---- */

static void h_healthz(struct http_server *s, const struct http_request *rq,
                      struct http_response *rs, const char *param)
{
    (void)s;
    (void)rq;
    (void)param;
    reply_json(rs, 200, json_pack("{s:s}", "status", "ok"));
}

static void add_check(json_t *checks, bool *all, const char *name, bool ok, const char *detail,
                      struct cxr_buf *failing)
{
    (void)json_array_append_new(checks, json_pack("{s:s,s:b,s:s}", "name", name, "ok", ok,
                                                  "detail", detail));
    if (!ok) {
        *all = false;
        (void)cxr_buf_printf(failing, "%s%s (%s)", failing->len ? "; " : "", name, detail);
    }
}

static void h_readyz(struct http_server *s, const struct http_request *rq,
                     struct http_response *rs, const char *param)
{
    struct daemon *d = s->d;
    json_t *checks = json_array(), *o;
    struct cxr_buf failing;
    struct statvfs sv;
    char detail[512];
    bool all = true, ok;
    int started = 0, alive;

    (void)rq;
    (void)param;
    cxr_buf_init(&failing, 4096);
    add_check(checks, &all, "model", d->model != NULL, d->model ? nn_model_digest(d->model) : "not loaded",
              &failing);
    ok = atomic_load(&d->met.db_ok) && access(d->cfg.audit_db, W_OK) == 0;
    (void)snprintf(detail, sizeof(detail), "%s", ok ? "the writer's last transaction committed"
                                            : atomic_load(&d->met.db_ok)
                                                ? "the ledger file is not writable"
                                                : "the writer's last transaction failed (see the log)");
    add_check(checks, &all, "database", ok, detail, &failing);
    if (statvfs(d->cfg.spool_dir, &sv) == 0) {
        double free_mb = (double)sv.f_bavail * (double)sv.f_frsize / 1048576.0;
        ok = free_mb >= (double)d->cfg.min_free_mb;
        (void)snprintf(detail, sizeof(detail), "%.0f MB free, watermark %d MB ([daemon] min_free_mb)",
                       free_mb, d->cfg.min_free_mb);
    } else {
        ok = false;
        (void)snprintf(detail, sizeof(detail), "cannot stat the spool: %s", strerror(errno));
    }
    add_check(checks, &all, "spool_space", ok, detail, &failing);
    alive = pipeline_alive(d->pipe, &started);
    (void)snprintf(detail, sizeof(detail), "%d of %d alive", alive, started);
    add_check(checks, &all, "workers", started > 0 && alive == started, detail, &failing);
    ok = atomic_load(&d->met.listening);
    (void)snprintf(detail, sizeof(detail), "%s:%d%s", d->cfg.dicom_bind, d->cfg.dicom_port,
                   ok ? "" : " (not listening)");
    add_check(checks, &all, "listener", ok, detail, &failing);
    o = json_pack("{s:b,s:o}", "ready", all, "checks", checks);
    if (o && !all) {
        json_t *e = error_obj(503, cxr_buf_str(&failing));
        (void)json_object_set(o, "error", json_object_get(e, "error"));
        json_decref(e);
    }
    cxr_buf_done(&failing);
    reply_json(rs, all ? 200 : 503, o);
}

static void prom_escape(struct cxr_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            (void)cxr_buf_printf(b, "\\%c", *v);
        else if (*v == '\n')
            (void)cxr_buf_puts(b, "\\n");
        else
            (void)cxr_buf_append(b, v, 1);
    }
}

static void prom_head(struct cxr_buf *b, const char *name, const char *type, const char *help)
{
    (void)cxr_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static long long ld(atomic_llong *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void h_metrics(struct http_server *s, const struct http_request *rq,
                      struct http_response *rs, const char *param)
{
    struct daemon *d = s->d;
    struct daemon_metrics *m = &d->met;
    struct cxr_buf b;
    static const char *const tri[4] = {NULL, "urgent", "routine", "normal"};
    static const char *const upl[4] = {"rejected", "classified", "skipped", "failed"};
    int64_t pending = 0, delivered = 0, dead = 0;
    bool outbox_ok = false;
    int nc = d->model ? nn_model_num_classes(d->model) : 0;

    (void)rq;
    (void)param;
    {
        st_db *db = NULL;
        char err[512];
        if (st_open(d->cfg.audit_db, ST_OPEN_READ, &db, err, sizeof(err)) == CXR_OK) {
            outbox_ok = st_outbox_counts(db, &pending, &delivered, &dead, err, sizeof(err)) == CXR_OK;
            st_close(db);
        }
    }
    cxr_buf_init(&b, 1 << 22);
    prom_head(&b, "cxrtriage_instances_received_total", "counter",
              "DICOM instances received and audited (C-STORE and spool recovery).");
    (void)cxr_buf_printf(&b, "cxrtriage_instances_received_total %lld\n", ld(&m->received));
    prom_head(&b, "cxrtriage_instances_classified_total", "counter", "Instances scored by the model.");
    (void)cxr_buf_printf(&b, "cxrtriage_instances_classified_total %lld\n", ld(&m->classified));
    prom_head(&b, "cxrtriage_instances_skipped_total", "counter",
              "Instances not scored: refused by the applicability gate or another SOP class.");
    (void)cxr_buf_printf(&b, "cxrtriage_instances_skipped_total %lld\n", ld(&m->skipped));
    prom_head(&b, "cxrtriage_instances_failed_total", "counter",
              "Instances whose pixel data could not be read.");
    (void)cxr_buf_printf(&b, "cxrtriage_instances_failed_total %lld\n", ld(&m->failed));
    prom_head(&b, "cxrtriage_triage_total", "counter", "Scored instances by triage class.");
    for (int t = 1; t < 4; t++)
        (void)cxr_buf_printf(&b, "cxrtriage_triage_total{triage=\"%s\"} %lld\n", tri[t],
                             ld(&m->triage[t]));
    prom_head(&b, "cxrtriage_stage_duration_seconds", "histogram",
              "Per-stage latency of DICOM instances (receive, queue, decode, preprocess, infer, commit).");
    for (int st = 0; st < ST_T__COUNT; st++) {
        const struct met_hist *h = &m->stage[st];
        long long cum = 0;
        for (int i = 0; i < MET_LAT_BUCKETS; i++) {
            cum += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
            (void)cxr_buf_printf(&b, "cxrtriage_stage_duration_seconds_bucket{stage=\"%s\",le=\"%g\"} %lld\n",
                                 st_stage_name((enum st_stage)st), met_lat_le[i] / 1000.0, cum);
        }
        (void)cxr_buf_printf(&b, "cxrtriage_stage_duration_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %lld\n",
                             st_stage_name((enum st_stage)st),
                             (long long)atomic_load_explicit(&h->count, memory_order_relaxed));
        (void)cxr_buf_printf(&b, "cxrtriage_stage_duration_seconds_sum{stage=\"%s\"} %.6f\n",
                             st_stage_name((enum st_stage)st),
                             (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
        (void)cxr_buf_printf(&b, "cxrtriage_stage_duration_seconds_count{stage=\"%s\"} %lld\n",
                             st_stage_name((enum st_stage)st),
                             (long long)atomic_load_explicit(&h->count, memory_order_relaxed));
    }
    prom_head(&b, "cxrtriage_score", "histogram",
              "Model scores of scored DICOM instances per class (watch for drift).");
    for (int c = 0; c < nc && c < ST_MAX_CLASSES; c++) {
        long long cum = 0;
        const char *name = nn_model_class_name(d->model, c);
        for (int i = 0; i < MET_SCORE_BUCKETS; i++) {
            cum += ld(&m->score_bucket[c][i]);
            (void)cxr_buf_puts(&b, "cxrtriage_score_bucket{class=\"");
            prom_escape(&b, name);
            (void)cxr_buf_printf(&b, "\",le=\"%g\"} %lld\n", (double)(i + 1) / MET_SCORE_BUCKETS, cum);
        }
        (void)cxr_buf_puts(&b, "cxrtriage_score_bucket{class=\"");
        prom_escape(&b, name);
        (void)cxr_buf_printf(&b, "\",le=\"+Inf\"} %lld\n", ld(&m->score_count[c]));
        (void)cxr_buf_puts(&b, "cxrtriage_score_sum{class=\"");
        prom_escape(&b, name);
        (void)cxr_buf_printf(&b, "\"} %.6f\n", (double)ld(&m->score_sum_e6[c]) / 1e6);
        (void)cxr_buf_puts(&b, "cxrtriage_score_count{class=\"");
        prom_escape(&b, name);
        (void)cxr_buf_printf(&b, "\"} %lld\n", ld(&m->score_count[c]));
    }
    prom_head(&b, "cxrtriage_queue_depth", "gauge", "Instances received and not yet scored.");
    (void)cxr_buf_printf(&b, "cxrtriage_queue_depth %d\n", atomic_load(&m->queue_depth));
    prom_head(&b, "cxrtriage_associations_active", "gauge", "DICOM associations open now.");
    (void)cxr_buf_printf(&b, "cxrtriage_associations_active %d\n", atomic_load(&m->assoc_active));
    prom_head(&b, "cxrtriage_associations_refused_total", "counter",
              "DICOM associations refused (AE title, disk, queue, stopping).");
    (void)cxr_buf_printf(&b, "cxrtriage_associations_refused_total %lld\n",
                         (long long)atomic_load(&d->n_assoc_refused));
    if (outbox_ok) {
        prom_head(&b, "cxrtriage_outbox_reports", "gauge", "Reports in the outbox by state.");
        (void)cxr_buf_printf(&b, "cxrtriage_outbox_reports{state=\"pending\"} %lld\n"
                                 "cxrtriage_outbox_reports{state=\"delivered\"} %lld\n"
                                 "cxrtriage_outbox_reports{state=\"dead\"} %lld\n",
                             (long long)pending, (long long)delivered, (long long)dead);
    }
    prom_head(&b, "cxrtriage_uploads_total", "counter",
              "Images posted to /api/v1/classify by result (rejected: not an image, too large, busy).");
    for (int u = 0; u < 4; u++)
        (void)cxr_buf_printf(&b, "cxrtriage_uploads_total{result=\"%s\"} %lld\n", upl[u],
                             ld(&m->uploads[u]));
    if (d->model) {
        const char *name = nn_model_meta(d->model, "name");
        const char *slash = strrchr(d->cfg.model_path, '/');
        prom_head(&b, "cxrtriage_model_info", "gauge", "The model in use (digest and name), always 1.");
        (void)cxr_buf_printf(&b, "cxrtriage_model_info{digest=\"%s\",name=\"", nn_model_digest(d->model));
        prom_escape(&b, name ? name : slash ? slash + 1 : d->cfg.model_path);
        (void)cxr_buf_puts(&b, "\"} 1\n");
    }
    prom_head(&b, "cxrtriage_process_start_time_seconds", "gauge",
              "Start time of the daemon since the Unix epoch in seconds.");
    (void)cxr_buf_printf(&b, "cxrtriage_process_start_time_seconds %.3f\n", (double)m->start_ms / 1000.0);
    reply_buf(rs, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
}

/* ---- the API: ledger views ---- */

static const char *model_name(const struct daemon *d)
{
    const char *name = d->model ? nn_model_meta(d->model, "name") : NULL;
    const char *slash = strrchr(d->cfg.model_path, '/');

    return name ? name : slash ? slash + 1 : d->cfg.model_path;
}

struct page {
    struct cxr_buf b;
    int n, limit;
    int64_t last_id;
    cxr_err err;
};

static bool page_begin(struct page *p, int limit)
{
    memset(p, 0, sizeof(*p));
    cxr_buf_init(&p->b, 64u << 20);
    p->limit = limit;
    return cxr_buf_puts(&p->b, "{\"items\":[") == CXR_OK;
}

/* Appends one item's JSON text; false once the page is full (one extra row was read). */
static bool page_add(struct page *p, int64_t id, const struct cxr_buf *item)
{
    if (p->n == p->limit) {
        p->n++; /* there is a next page */
        return false;
    }
    if ((p->n && cxr_buf_puts(&p->b, ",")) || cxr_buf_append(&p->b, item->data, item->len)) {
        p->err = CXR_ENOMEM;
        return false;
    }
    p->n++;
    p->last_id = id;
    return true;
}

static void page_end(struct page *p, struct http_response *rs)
{
    if (p->err) {
        cxr_buf_done(&p->b);
        reply_error(rs, 500, "the page does not fit in memory; ask for fewer rows (limit)");
        return;
    }
    if (p->n > p->limit)
        (void)cxr_buf_printf(&p->b, "],\"next_after_id\":%lld}", (long long)p->last_id);
    else
        (void)cxr_buf_puts(&p->b, "],\"next_after_id\":null}");
    reply_buf(rs, 200, "application/json", &p->b);
}

static cxr_err instance_json_v(const void *o, struct cxr_buf *b) { return st_instance_json(o, b); }
static cxr_err report_json_v(const void *o, struct cxr_buf *b) { return st_report_json(o, b); }
static cxr_err attempt_json_v(const void *o, struct cxr_buf *b) { return st_report_attempt_json(o, b); }

/* Appends obj as fn writes it. */
static bool page_add_obj(struct page *p, int64_t id, cxr_err (*fn)(const void *, struct cxr_buf *),
                         const void *obj)
{
    struct cxr_buf item;
    bool more = false;

    cxr_buf_init(&item, 1 << 20);
    if (fn(obj, &item) != CXR_OK)
        p->err = CXR_ENOMEM;
    else
        more = page_add(p, id, &item);
    cxr_buf_done(&item);
    return more;
}

/* One page of a listing: list(db, filter, page) with limit + 1 rows (the extra one says whether
 * there is a next page). */
typedef cxr_err page_lister(st_db *db, void *filter, struct page *p, char *err, size_t errlen);

static void list_page(struct http_server *s, struct http_response *rs, int limit,
                      page_lister *list, void *filter)
{
    struct page p;
    st_db *db;
    char err[512];

    if (!open_read(s, rs, &db))
        return;
    if (!page_begin(&p, limit)) {
        st_close(db);
        return reply_error(rs, 500, "out of memory");
    }
    if (list(db, filter, &p, err, sizeof(err)) != CXR_OK) {
        st_close(db);
        cxr_buf_done(&p.b);
        return reply_error(rs, 503, "the audit ledger cannot be read: %s", err);
    }
    st_close(db);
    page_end(&p, rs);
}

static bool add_instance(void *user, const struct st_instance *in)
{
    return page_add_obj(user, in->id, instance_json_v, in);
}

static cxr_err list_instances(st_db *db, void *filter, struct page *p, char *err, size_t errlen)
{
    return st_list(db, filter, add_instance, p, err, errlen);
}

static void h_instances(struct http_server *s, const struct http_request *rq,
                        struct http_response *rs, const char *param)
{
    struct st_filter f;
    const char *v;

    (void)param;
    memset(&f, 0, sizeof(f));
    if (!parse_paging(rq, rs, &f.limit, &f.after_id) || !parse_time_arg(rq, rs, "since", &f.since_ms) ||
        !parse_time_arg(rq, rs, "until", &f.until_ms) ||
        !copy_arg(rq, rs, "patient", f.patient_id, sizeof(f.patient_id)) ||
        !copy_arg(rq, rs, "accession", f.accession, sizeof(f.accession)) ||
        !copy_arg(rq, rs, "study", f.study_uid, sizeof(f.study_uid)) ||
        !copy_arg(rq, rs, "class", f.class_name, sizeof(f.class_name)) ||
        !copy_arg(rq, rs, "source", f.source, sizeof(f.source)))
        return;
    if ((v = query_get(rq, "state")) && *v) {
        if (!st_state_from_name(v, &f.state))
            return reply_error(rs, 400, "state: expected received, classified, skipped or failed");
        f.has_state = true;
    }
    if ((v = query_get(rq, "triage")) && *v) {
        if (!strcmp(v, "none"))
            f.triage = ST_TRIAGE_NONE;
        else if (!st_triage_from_name(v, &f.triage))
            return reply_error(rs, 400, "triage: expected urgent, routine, normal or none");
        f.has_triage = true;
    }
    if (f.source[0] && strcmp(f.source, "dicom") != 0 && strcmp(f.source, "recovered") != 0 &&
        strcmp(f.source, "upload") != 0)
        return reply_error(rs, 400, "source: expected dicom, recovered or upload");
    f.limit++; /* one more row tells whether there is a next page */
    list_page(s, rs, f.limit - 1, list_instances, &f);
}

static json_t *json_of(cxr_err (*fn)(const void *, struct cxr_buf *), const void *obj)
{
    struct cxr_buf b;
    json_t *j = NULL;

    cxr_buf_init(&b, 8u << 20);
    if (fn(obj, &b) == CXR_OK)
        j = json_loads(cxr_buf_str(&b), 0, NULL);
    cxr_buf_done(&b);
    return j;
}


static bool add_event(void *user, const struct st_event *e)
{
    char at[40];

    st_format_time(e->at_ms, at, sizeof(at));
    return json_array_append_new(user, json_pack("{s:s,s:s,s:s}", "at", at, "kind", e->kind,
                                                 "detail", e->detail)) == 0;
}

static bool add_attempt(void *user, const struct st_report_attempt *a)
{
    json_t *j = json_of(attempt_json_v, a);
    return j && json_array_append_new(user, j) == 0;
}

#define REPORT_IDS_MAX 256
struct report_ids {
    int64_t ids[REPORT_IDS_MAX];
    int n;
};

static bool collect_report(void *user, const struct st_report *r)
{
    struct report_ids *ri = user;

    if (ri->n >= (int)CXR_ARRAY_SIZE(ri->ids))
        return false;
    ri->ids[ri->n++] = r->id;
    return true;
}

/* A report as `outbox show --format json` prints it, with its attempts. */
static json_t *report_with_attempts(st_db *db, int64_t id, char *err, size_t errlen)
{
    struct st_report r;
    json_t *j, *att;

    if (st_report_get(db, id, false, &r, err, errlen) != CXR_OK)
        return NULL;
    j = json_of(report_json_v, &r);
    st_report_done(&r);
    att = json_array();
    if (!j || !att || st_report_attempts(db, id, add_attempt, att, err, errlen) != CXR_OK) {
        json_decref(j);
        json_decref(att);
        return NULL;
    }
    (void)json_object_set_new(j, "attempts", att);
    return j;
}

static void h_instance(struct http_server *s, const struct http_request *rq,
                       struct http_response *rs, const char *param)
{
    int64_t id = parse_id(param);
    struct st_instance *in;
    json_t *j = NULL, *events = NULL, *reports = NULL;
    st_db *db;
    char err[512];
    cxr_err e;

    (void)rq;
    if (id < 1)
        return reply_error(rs, 404, "no instance '%.64s': ids are positive whole numbers", param);
    if (!open_read(s, rs, &db))
        return;
    in = calloc(1, sizeof(*in));
    if (!in) {
        st_close(db);
        return reply_error(rs, 500, "out of memory");
    }
    e = st_get(db, id, NULL, in, err, sizeof(err));
    if (e == CXR_ENOTFOUND) {
        reply_error(rs, 404, "no instance %lld in the audit ledger", (long long)id);
        goto out;
    }
    if (e != CXR_OK) {
        reply_error(rs, 503, "the audit ledger cannot be read: %s", err);
        goto out;
    }
    j = json_of(instance_json_v, in);
    events = json_array();
    reports = json_array();
    if (!j || !events || !reports) {
        reply_error(rs, 500, "out of memory");
        goto out;
    }
    if (st_events(db, id, add_event, events, err, sizeof(err)) != CXR_OK) {
        reply_error(rs, 503, "the audit ledger cannot be read: %s", err);
        goto out;
    }
    if (in->r.study_uid[0] && strcmp(in->r.source, "upload") != 0) {
        struct st_report_filter rf;
        struct report_ids *ri = calloc(1, sizeof(*ri));
        memset(&rf, 0, sizeof(rf));
        (void)cxr_strlcpy(rf.study_uid, sizeof(rf.study_uid), in->r.study_uid);
        rf.limit = REPORT_IDS_MAX;
        if (!ri || st_report_list(db, &rf, collect_report, ri, err, sizeof(err)) != CXR_OK) {
            free(ri);
            reply_error(rs, 503, "the outbox cannot be read: %s", ri ? err : "out of memory");
            goto out;
        }
        for (int i = 0; i < ri->n; i++) {
            json_t *r = report_with_attempts(db, ri->ids[i], err, sizeof(err));
            if (r)
                (void)json_array_append_new(reports, r);
        }
        free(ri);
    }
    (void)json_object_set_new(j, "events", events);
    (void)json_object_set_new(j, "reports", reports);
    events = reports = NULL;
    reply_json(rs, 200, j);
    j = NULL;
out:
    json_decref(j);
    json_decref(events);
    json_decref(reports);
    free(in);
    st_close(db);
}

static json_t *time_or_null(int64_t ms)
{
    char t[40];

    if (!ms)
        return json_null();
    st_format_time(ms, t, sizeof(t));
    return json_string(t);
}

static bool add_study(void *user, int64_t id, const struct st_study *st)
{
    struct page *p = user;
    json_t *j, *scores = json_null();
    const char *top = NULL;
    double best = -1;
    char *text;
    struct cxr_buf item;
    bool more;

    if (st->completed_ms && st->n_classes > 0) {
        scores = json_object();
        for (int c = 0; c < st->n_classes; c++) {
            (void)json_object_set_new(scores, st->class_names[c], json_real(st->scores[c]));
            if (st->scores[c] > best) {
                best = st->scores[c];
                top = st->class_names[c];
            }
        }
    }
    j = json_pack("{s:I,s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:s}", "id",
                  (json_int_t)id, "study_instance_uid", st->study_uid, "patient_id", st->patient_id,
                  "accession", st->accession, "n_instances", st->n_instances, "n_scored",
                  st->n_scored, "n_skipped", st->n_skipped, "n_failed", st->n_failed, "state",
                  st->completed_ms ? "complete" : "open", "first_received_at",
                  time_or_null(st->first_received_ms), "last_received_at",
                  time_or_null(st->last_received_ms), "completed_at", time_or_null(st->completed_ms),
                  "triage",
                  st_triage_name(st->triage) ? json_string(st_triage_name(st->triage)) : json_null(),
                  "top_class", top ? json_string(top) : json_null(), "scores", scores,
                  "model_digest", st->model_digest);
    text = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(j);
    if (!text) {
        p->err = CXR_ENOMEM;
        return false;
    }
    cxr_buf_init(&item, 1 << 20);
    (void)cxr_buf_puts(&item, text);
    free(text);
    more = page_add(p, id, &item);
    cxr_buf_done(&item);
    return more;
}

static cxr_err list_studies(st_db *db, void *filter, struct page *p, char *err, size_t errlen)
{
    return st_study_list(db, filter, add_study, p, err, errlen);
}

static void h_studies(struct http_server *s, const struct http_request *rq,
                      struct http_response *rs, const char *param)
{
    struct st_study_filter f;

    (void)param;
    memset(&f, 0, sizeof(f));
    if (!parse_paging(rq, rs, &f.limit, &f.after_id) || !parse_time_arg(rq, rs, "since", &f.since_ms) ||
        !parse_time_arg(rq, rs, "until", &f.until_ms) ||
        !copy_arg(rq, rs, "patient", f.patient_id, sizeof(f.patient_id)) ||
        !copy_arg(rq, rs, "accession", f.accession, sizeof(f.accession)))
        return;
    f.limit++;
    list_page(s, rs, f.limit - 1, list_studies, &f);
}

static bool add_report(void *user, const struct st_report *r)
{
    return page_add_obj(user, r->id, report_json_v, r);
}

static cxr_err list_reports(st_db *db, void *filter, struct page *p, char *err, size_t errlen)
{
    return st_report_list(db, filter, add_report, p, err, errlen);
}

static void h_outbox(struct http_server *s, const struct http_request *rq,
                     struct http_response *rs, const char *param)
{
    struct st_report_filter f;
    const char *v;

    (void)param;
    memset(&f, 0, sizeof(f));
    if (!parse_paging(rq, rs, &f.limit, &f.after_id) ||
        !copy_arg(rq, rs, "destination", f.destination, sizeof(f.destination)) ||
        !copy_arg(rq, rs, "study", f.study_uid, sizeof(f.study_uid)))
        return;
    if ((v = query_get(rq, "state")) && *v) {
        if (!st_report_state_from_name(v, &f.state))
            return reply_error(rs, 400, "state: expected pending, delivered or dead");
        f.has_state = true;
    }
    f.limit++;
    list_page(s, rs, f.limit - 1, list_reports, &f);
}

static void h_retry(struct http_server *s, const struct http_request *rq,
                    struct http_response *rs, const char *param)
{
    int64_t id = parse_id(param);
    struct st_report r;
    st_db *db = NULL;
    json_t *j;
    char err[512];
    cxr_err e;

    (void)rq;
    if (id < 1)
        return reply_error(rs, 404, "no report '%.64s': ids are positive whole numbers", param);
    if (st_open(s->d->cfg.audit_db, ST_OPEN_UPDATE, &db, err, sizeof(err)) != CXR_OK)
        return reply_error(rs, 503, "the outbox cannot be opened for the retry: %s", err);
    e = st_report_get(db, id, false, &r, err, sizeof(err));
    if (e == CXR_ENOTFOUND) {
        st_close(db);
        return reply_error(rs, 404, "no report %lld in the outbox", (long long)id);
    }
    if (e == CXR_OK && r.state != ST_REPORT_DEAD) {
        st_close(db);
        return reply_error(rs, 409, "report %lld is %s; only a dead report can be retried",
                           (long long)id, st_report_state_name(r.state));
    }
    if (e == CXR_OK)
        e = st_report_requeue(db, id, st_now_ms(), err, sizeof(err));
    if (e != CXR_OK) {
        st_close(db);
        return reply_error(rs, e == CXR_EBUSY ? 503 : e == CXR_EINVAL ? 409 : 500,
                           "report %lld was not requeued: %s", (long long)id, err);
    }
    cxr_log(CXR_LOG_NOTICE, "http.retry", "report=%lld msg='requeued by an operator'", (long long)id);
    j = report_with_attempts(db, id, err, sizeof(err));
    st_close(db);
    if (!j)
        return reply_error(rs, 500, "report %lld was requeued but cannot be read back: %s",
                           (long long)id, err);
    reply_json(rs, 200, j);
}

static void h_status(struct http_server *s, const struct http_request *rq,
                     struct http_response *rs, const char *param)
{
    struct daemon *d = s->d;
    int64_t by_state[4] = {0}, by_triage[4] = {0}, pending = 0, delivered = 0, dead = 0;
    char kernel[256] = "", listener[CFG_STR_MAX + 64], err[512];
    st_db *db;
    json_t *j;

    (void)rq;
    (void)param;
    if (!open_read(s, rs, &db))
        return;
    if (st_counts(db, by_state, by_triage, err, sizeof(err)) != CXR_OK ||
        st_outbox_counts(db, &pending, &delivered, &dead, err, sizeof(err)) != CXR_OK) {
        st_close(db);
        return reply_error(rs, 503, "the audit ledger cannot be read: %s", err);
    }
    st_close(db);
    (void)nn_kernel_describe(kernel, sizeof(kernel));
    (void)snprintf(listener, sizeof(listener), "%s:%d AE %s", d->cfg.dicom_bind, d->cfg.dicom_port,
                   d->cfg.ae_title);
    j = json_pack("{s:s,s:s,s:s,s:s,s:I,s:s,s:{s:I,s:I,s:I,s:I,s:I},s:{s:I,s:I,s:I},s:I,s:s}",
                  "version", CXR_VERSION, "model_digest", d->model ? nn_model_digest(d->model) : "",
                  "model_name", model_name(d), "kernel", kernel, "uptime_s",
                  (json_int_t)((st_now_ms() - d->met.start_ms) / 1000), "listener", listener,
                  "counts", "received",
                  (json_int_t)by_state[0] + (json_int_t)by_state[1] +
                      (json_int_t)by_state[2] + (json_int_t)by_state[3], "queued",
                  (json_int_t)by_state[ST_RECEIVED], "classified",
                  (json_int_t)by_state[ST_CLASSIFIED], "skipped", (json_int_t)by_state[ST_SKIPPED],
                  "failed", (json_int_t)by_state[ST_FAILED], "outbox", "pending",
                  (json_int_t)pending, "delivered", (json_int_t)delivered, "dead", (json_int_t)dead,
                  "queue_depth", (json_int_t)atomic_load(&d->met.queue_depth), "disclaimer",
                  CXR_DISCLAIMER);
    reply_json(rs, j ? 200 : 500, j);
}

/* ---- POST /api/v1/classify ---- */

/* The part named "file" of a multipart/form-data body. */
static bool multipart_file(const struct http_request *rq, const char *ctype,
                           const unsigned char **ret, size_t *ret_len, char *why, size_t whylen)
{
    const char *b = strcasestr(ctype, "boundary=");
    char delim[200];
    size_t dl, blen;
    const unsigned char *p, *end;

    if (!rq->body || rq->body_len == 0) { /* (NULL + 0 is undefined: found by fuzz_http) */
        (void)snprintf(why, whylen, "empty multipart/form-data body");
        return false;
    }
    end = rq->body + rq->body_len;
    if (!b) {
        (void)snprintf(why, whylen, "multipart/form-data without a boundary parameter");
        return false;
    }
    b += 9;
    blen = strcspn(b, "; ");
    if (*b == '"') {
        b++;
        blen = strcspn(b, "\"");
    }
    if (blen == 0 || blen > 70) {
        (void)snprintf(why, whylen, "multipart boundary of %zu characters (1 to 70 allowed)", blen);
        return false;
    }
    dl = (size_t)snprintf(delim, sizeof(delim), "--%.*s", (int)blen, b);
    p = memmem(rq->body, rq->body_len, delim, dl);
    while (p) {
        const unsigned char *hdr = p + dl, *hend, *data, *next;
        if (end - hdr >= 2 && hdr[0] == '-' && hdr[1] == '-')
            break; /* the closing delimiter */
        if (end - hdr >= 2 && hdr[0] == '\r' && hdr[1] == '\n')
            hdr += 2;
        hend = memmem(hdr, (size_t)(end - hdr), "\r\n\r\n", 4);
        if (!hend)
            break;
        data = hend + 4;
        next = memmem(data, (size_t)(end - data), delim, dl);
        if (!next)
            break;
        {
            /* the part's headers: look for name="file" in Content-Disposition */
            char h[2048];
            size_t hl = (size_t)(hend - hdr) < sizeof(h) - 1 ? (size_t)(hend - hdr) : sizeof(h) - 1;
            memcpy(h, hdr, hl);
            h[hl] = '\0';
            if (strcasestr(h, "content-disposition") && strstr(h, "name=\"file\"")) {
                size_t n = (size_t)(next - data);
                if (n >= 2 && next[-2] == '\r' && next[-1] == '\n')
                    n -= 2;
                *ret = data;
                *ret_len = n;
                return true;
            }
        }
        p = next;
    }
    (void)snprintf(why, whylen, "multipart/form-data without a part named \"file\"");
    return false;
}

static bool slot_take(struct http_server *s, int *ret)
{
    bool ok = false;

    pthread_mutex_lock(&s->pool_lock);
    for (int i = 0; i < s->n_slots; i++) {
        struct score_slot *sl = &s->slots[i];
        if (sl->busy)
            continue;
        if (!sl->ctx) {
            size_t in_len = nn_model_input_len(s->d->model);
            int size = nn_model_input_spec(s->d->model)->size;
            sl->input = malloc(in_len * sizeof(float));
            sl->unit = malloc((size_t)size * (size_t)size * sizeof(float));
            if (!sl->input || !sl->unit || nn_ctx_new(s->d->model, 1, &sl->ctx) != CXR_OK) {
                free(sl->input);
                free(sl->unit);
                sl->input = sl->unit = NULL;
                sl->ctx = NULL;
                break;
            }
        }
        sl->busy = true;
        *ret = i;
        ok = true;
        break;
    }
    pthread_mutex_unlock(&s->pool_lock);
    return ok;
}

static void slot_give(struct http_server *s, int i)
{
    pthread_mutex_lock(&s->pool_lock);
    s->slots[i].busy = false;
    pthread_mutex_unlock(&s->pool_lock);
}

/* Posts the upload to the loop (the one writer) and waits for its row id. */
static cxr_err record_via_loop(void *user, const struct st_receipt *r, const struct st_result *res,
                               int64_t *ret_id, char *errbuf, size_t errlen)
{
    struct daemon *d = user;
    struct inbox_item *it = calloc(1, sizeof(*it));
    struct upload_wait *w = calloc(1, sizeof(*w));
    struct st_result *copy = malloc(sizeof(*copy));
    struct timespec until;
    cxr_err e = CXR_ETIMEOUT;
    int rc = 0;

    if (!it || !w || !copy) {
        free(it);
        free(w);
        free(copy);
        return cxr_errf(errbuf, errlen, CXR_ENOMEM, "out of memory");
    }
    *copy = *res;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    it->r = *r;
    it->upload = copy;
    it->wait = w;
    daemon_post(d, it);
    (void)clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += UPLOAD_WAIT_MS / 1000;
    pthread_mutex_lock(&w->lock);
    while (!w->done && rc == 0)
        rc = pthread_cond_timedwait(&w->cond, &w->lock, &until);
    if (!w->done) {
        /* the loop frees w and copy when it gets to the item */
        w->abandoned = true;
        pthread_mutex_unlock(&w->lock);
        return cxr_errf(errbuf, errlen, CXR_ETIMEOUT,
                        "the daemon's loop did not audit the upload within %d s", UPLOAD_WAIT_MS / 1000);
    }
    e = w->err;
    *ret_id = w->id;
    if (e != CXR_OK)
        (void)snprintf(errbuf, errlen, "%s", w->errmsg);
    pthread_mutex_unlock(&w->lock);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w);
    free(copy);
    return e;
}

/* "data:image/png;base64,..." of png (malloc'ed), or NULL. */
static char *png_data_url(const unsigned char *png, size_t len)
{
    static const char prefix[] = "data:image/png;base64,";
    size_t n = sizeof(prefix) - 1 + 4 * ((len + 2) / 3) + 1;
    char *out;

    if (len > (size_t)INT32_MAX / 2)
        return NULL;
    out = malloc(n);
    if (!out)
        return NULL;
    memcpy(out, prefix, sizeof(prefix) - 1);
    (void)EVP_EncodeBlock((unsigned char *)out + sizeof(prefix) - 1, png, (int)len);
    return out;
}

/* The Grad-CAM of the slot's input (scored just before) for class cls: the model's input as a
 * grey PNG and the map as an RGBA overlay of the same size, both as data URLs, into j. */
static cxr_err add_heatmap(struct http_server *s, struct score_slot *sl, int cls, json_t *j,
                           double *ret_ms, char *err, size_t errlen)
{
    const nn_model *m = s->d->model;
    int size = nn_model_input_spec(m)->size, gh = 0, gw = 0, used = -1;
    unsigned char *png = NULL;
    size_t len = 0;
    char *url;
    double t0 = mono_ms();
    cxr_err e;

    if (!sl->cam_ctx) {
        e = nn_gradcam_new(m, &sl->cam_ctx, err, errlen);
        if (e != CXR_OK)
            return e;
        nn_gradcam_dims(sl->cam_ctx, &gh, &gw);
        sl->cam = malloc((size_t)gh * (size_t)gw * sizeof(float));
        if (!sl->cam) {
            nn_gradcam_free(sl->cam_ctx);
            sl->cam_ctx = NULL;
            return cxr_errf(err, errlen, CXR_ENOMEM, "out of memory for the heat map");
        }
    }
    nn_gradcam_dims(sl->cam_ctx, &gh, &gw);
    e = nn_gradcam_run(sl->cam_ctx, sl->input, cls, NULL, sl->cam, &used);
    if (e != CXR_OK)
        return cxr_errf(err, errlen, e, "Grad-CAM failed: %s", cxr_strerror(e));
    e = px_png_mem(sl->unit, size, &png, &len, err, errlen);
    if (e != CXR_OK)
        return e;
    url = png_data_url(png, len);
    free(png);
    if (!url)
        return cxr_errf(err, errlen, CXR_ENOMEM, "out of memory for the image");
    (void)json_object_set_new(j, "image", json_string(url));
    free(url);
    e = px_heatmap_png(NULL, size, sl->cam, gh, gw, &png, &len, err, errlen);
    if (e != CXR_OK)
        return e;
    url = png_data_url(png, len);
    free(png);
    if (!url)
        return cxr_errf(err, errlen, CXR_ENOMEM, "out of memory for the heat map");
    (void)json_object_set_new(j, "heatmap",
                              json_pack("{s:s,s:s,s:[i,i]}", "class", nn_model_class_name(m, used),
                                        "png", url, "grid", gh, gw));
    free(url);
    *ret_ms = mono_ms() - t0;
    return CXR_OK;
}

static const char *format_name(enum px_format f)
{
    switch (f) {
    case PX_FMT_DICOM: return "dicom";
    case PX_FMT_PNG: return "png";
    case PX_FMT_JPEG: return "jpeg";
    default: return "unknown";
    }
}

static json_t *timing_or_null(double ms)
{
    return ms >= 0 ? json_real(ms) : json_null();
}

static void h_classify(struct http_server *s, const struct http_request *rq,
                       struct http_response *rs, const char *param)
{
    struct daemon *d = s->d;
    const unsigned char *data = rq->body;
    size_t len = rq->body_len;
    const char *ctype = header_get(rq, "Content-Type"), *hm = query_get(rq, "heatmap");
    const char *cname = query_get(rq, "class");
    bool want_map = false;
    int map_class = -1;
    double map_ms = -1;
    char map_err[512] = "";
    json_t *map = NULL;
    enum px_format fmt;
    struct st_result *res = NULL;
    struct st_receipt *r = NULL;
    struct px_info pinfo;
    struct nn_triage_rule rule;
    char why[256], err[512];
    int64_t id = 0;
    int slot = -1, nc;
    double t0 = mono_ms();
    json_t *j, *scores;
    const char *top = NULL;
    double best = -1;

    (void)param;
    if (ctype && !strncasecmp(ctype, "multipart/form-data", 19) &&
        !multipart_file(rq, ctype, &data, &len, why, sizeof(why))) {
        atomic_fetch_add(&d->met.uploads[0], 1);
        return reply_error(rs, 400, "%s", why);
    }
    if (len == 0) {
        atomic_fetch_add(&d->met.uploads[0], 1);
        return reply_error(rs, 400, "the request has no image: send a DICOM, PNG or JPEG file as "
                                    "the body or as the multipart part \"file\"");
    }
    fmt = px_detect(data, len);
    if (fmt == PX_FMT_UNKNOWN) {
        char hex[3 * 8 + 1] = "";
        for (size_t i = 0; i < len && i < 8; i++)
            (void)snprintf(hex + strlen(hex), sizeof(hex) - strlen(hex), "%s%02x", i ? " " : "",
                           data[i]);
        atomic_fetch_add(&d->met.uploads[0], 1);
        return reply_error(rs, 415, "the body is neither DICOM, PNG nor JPEG (first bytes %s%s)",
                           hex, len > 8 ? " ..." : "");
    }
    if (hm && (!strcmp(hm, "1") || !strcmp(hm, "true")))
        want_map = true;
    else if (hm && *hm && strcmp(hm, "0") != 0 && strcmp(hm, "false") != 0)
        return reply_error(rs, 400, "heatmap: expected 1 or 0");
    if (cname && *cname) {
        for (int c = 0; d->model && c < nn_model_num_classes(d->model); c++)
            if (!strcmp(nn_model_class_name(d->model, c), cname))
                map_class = c;
        if (map_class < 0)
            return reply_error(rs, 400, "class: '%.64s' is not one of the model's classes", cname);
    }
    if (!d->model)
        return reply_error(rs, 503, "no model is loaded");
    if (!slot_take(s, &slot)) {
        atomic_fetch_add(&d->met.uploads[0], 1);
        set_header(rs, "Retry-After", "1");
        return reply_error(rs, 503, "every scoring slot of the HTTP endpoint is busy ([http] "
                                    "threads = %d); try again", s->n_slots);
    }
    res = calloc(1, sizeof(*res));
    r = calloc(1, sizeof(*r));
    if (!res || !r) {
        slot_give(s, slot);
        free(res);
        free(r);
        return reply_error(rs, 500, "out of memory");
    }
    for (int i = 0; i < ST_T__COUNT; i++)
        res->timings_ms[i] = -1;
    memset(&pinfo, 0, sizeof(pinfo));
    pthread_mutex_lock(&d->rule_lock);
    rule = d->rule;
    pthread_mutex_unlock(&d->rule_lock);
    pipeline_score_ex(d->model, s->slots[slot].ctx, s->slots[slot].input, s->slots[slot].unit,
                      &rule, data, len, "upload", res, &pinfo);
    if (want_map && res->state == ST_CLASSIFIED) {
        map = json_object();
        if (!map || add_heatmap(s, &s->slots[slot], map_class, map, &map_ms, map_err,
                                sizeof(map_err)) != CXR_OK) {
            json_decref(map);
            map = NULL;
        }
    }
    slot_give(s, slot);

    /* the audit row: what the upload is, from whom nobody knows (peer and AE empty) */
    (void)cxr_strlcpy(r->source, sizeof(r->source), "upload");
    r->size_bytes = (int64_t)len;
    r->received_at_ms = st_now_ms();
    r->receive_ms = -1;
    if (fmt == PX_FMT_DICOM) {
        dcm_file *f = NULL;
        if (dcm_file_open_mem(data, len, "upload", &f, err, sizeof(err)) == CXR_OK) {
            const struct dcm_info *in = dcm_file_info(f);
            (void)cxr_strlcpy(r->sop_instance_uid, sizeof(r->sop_instance_uid), in->sop_instance_uid);
            (void)cxr_strlcpy(r->sop_class_uid, sizeof(r->sop_class_uid), in->sop_class_uid);
            (void)cxr_strlcpy(r->study_uid, sizeof(r->study_uid), in->study_uid);
            (void)cxr_strlcpy(r->series_uid, sizeof(r->series_uid), in->series_uid);
            (void)cxr_strlcpy(r->patient_id, sizeof(r->patient_id), in->patient_id);
            (void)cxr_strlcpy(r->accession, sizeof(r->accession), in->accession);
            (void)cxr_strlcpy(r->transfer_syntax, sizeof(r->transfer_syntax), in->transfer_syntax);
            dcm_file_free(f);
        }
    }
    {
        cxr_err e = s->record ? s->record(s->record_user, r, res, &id, err, sizeof(err))
                              : record_via_loop(d, r, res, &id, err, sizeof(err));
        if (e != CXR_OK) {
            free(res);
            free(r);
            atomic_fetch_add(&d->met.uploads[0], 1);
            return reply_error(rs, 503, "the upload was scored but could not be audited, so no "
                                        "result is given: %s", err);
        }
    }
    met_record(&d->met, res, true);
    nc = res->n_classes;
    scores = json_object();
    for (int c = 0; c < nc; c++) {
        (void)json_object_set_new(scores, res->class_names[c], json_real(res->scores[c]));
        if (res->scores[c] > best) {
            best = res->scores[c];
            top = res->class_names[c];
        }
    }
    {
        json_t *classes = json_array();
        for (int c = 0; d->model && c < nn_model_num_classes(d->model); c++)
            (void)json_array_append_new(classes, json_string(nn_model_class_name(d->model, c)));
        j = json_pack("{s:I,s:s,s:s,s:o,s:o,s:o,s:o,s:s,s:s,s:{s:b,s:s},s:s,s:i,s:i,"
                      "s:{s:o,s:o,s:o,s:f},s:s}",
                      "id", (json_int_t)id, "model_digest", res->model_digest, "model_name",
                      model_name(d), "classes", classes, "scores", nc ? scores : json_null(),
                      "top_class", top ? json_string(top) : json_null(), "triage",
                      st_triage_name(res->triage) ? json_string(st_triage_name(res->triage))
                                                  : json_null(),
                      "triage_reason", res->triage_reason, "rule", res->rule, "gate",
                      "applicable", res->state == ST_CLASSIFIED, "reason",
                      res->state == ST_SKIPPED ? res->gate_reason : "",
                      "format", format_name(fmt), "width", pinfo.width, "height", pinfo.height,
                      "timings_ms", "decode", timing_or_null(res->timings_ms[ST_T_DECODE]),
                      "preprocess", timing_or_null(res->timings_ms[ST_T_PREPROCESS]), "infer",
                      timing_or_null(res->timings_ms[ST_T_INFER]), "total", mono_ms() - t0,
                      "disclaimer", CXR_DISCLAIMER);
        if (!nc)
            json_decref(scores);
    }
    if (j && map) {
        (void)json_object_update(j, map);
        (void)json_object_set_new(json_object_get(j, "timings_ms"), "heatmap", json_real(map_ms));
    } else if (j && want_map && res->state == ST_CLASSIFIED) {
        (void)json_object_set_new(j, "heatmap_error", json_string(map_err));
    }
    json_decref(map);
    if (j && res->state != ST_CLASSIFIED) {
        json_t *e = error_obj(422, res->state == ST_SKIPPED ? res->gate_reason : res->error);
        (void)json_object_set(j, "error", json_object_get(e, "error"));
        json_decref(e);
        reply_json(rs, 422, j);
    } else {
        reply_json(rs, j ? 200 : 500, j);
    }
    free(res);
    free(r);
}

/* ---- the page ---- */

static void h_static(struct http_server *s, const struct http_request *rq,
                     struct http_response *rs, const char *param)
{
    const struct web_asset *a = web_asset_find(rq->path);
    const char *inm = header_get(rq, "If-None-Match");

    (void)s;
    (void)param;
    if (!a)
        return reply_error(rs, 404, "no such page or file: %.200s", rq->path);
    set_header(rs, "ETag", a->etag);
    set_header(rs, "Cache-Control", "no-cache");
    set_header(rs, "Content-Security-Policy",
               "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'");
    set_header(rs, "Referrer-Policy", "no-referrer");
    if (inm && strstr(inm, a->etag)) {
        set_body(rs, 304, a->content_type, NULL, 0);
        return;
    }
    set_body(rs, 200, a->content_type, NULL, 0);
    rs->body = a->data;
    rs->body_len = a->len;
    rs->body_static = true;
}

/* ---- routing ---- */

typedef void route_fn(struct http_server *s, const struct http_request *rq,
                      struct http_response *rs, const char *param);

struct route {
    const char *method;
    const char *pattern;  /* at most one {param} segment */
    route_fn *fn;
    bool open;            /* served without authentication */
};

static const struct route routes[] = {
    {"GET", "/healthz", h_healthz, true},
    {"GET", "/readyz", h_readyz, false},
    {"GET", "/metrics", h_metrics, false},
    {"POST", "/api/v1/classify", h_classify, false},
    {"GET", "/api/v1/instances", h_instances, false},
    {"GET", "/api/v1/instances/{id}", h_instance, false},
    {"GET", "/api/v1/studies", h_studies, false},
    {"GET", "/api/v1/outbox", h_outbox, false},
    {"POST", "/api/v1/outbox/{id}/retry", h_retry, false},
    {"GET", "/api/v1/status", h_status, false},
    {"GET", "/", h_static, true},
    {"GET", "/{file}", h_static, true},
};

void http_each_route(void (*fn)(void *user, const char *method, const char *pattern), void *user)
{
    for (size_t i = 0; i < CXR_ARRAY_SIZE(routes); i++)
        fn(user, routes[i].method, routes[i].pattern);
}

/* Whether path matches pattern; the {param} segment's text goes to param. */
static bool route_match(const char *pattern, const char *path, char *param, size_t plen)
{
    const char *p = pattern, *q = path;

    param[0] = '\0';
    while (*p && *q) {
        if (*p == '{') {
            const char *pe = strchr(p, '}');
            size_t n = strcspn(q, "/");
            if (!pe || n == 0 || n >= plen)
                return false;
            memcpy(param, q, n);
            param[n] = '\0';
            p = pe + 1;
            q += n;
            continue;
        }
        if (*p != *q)
            return false;
        p++;
        q++;
    }
    return *p == '\0' && *q == '\0';
}

static bool authorized(const struct http_server *s, const struct http_request *rq)
{
    const char *auth = header_get(rq, "Authorization");
    const char *mode = s->d->cfg.http_auth;

    if (!strcmp(mode, "none"))
        return true;
    if (!auth)
        return false;
    if (!strcmp(mode, "bearer")) {
        size_t n = strlen(s->token);
        if (strncasecmp(auth, "Bearer ", 7) != 0)
            return false;
        auth += 7;
        return strlen(auth) == n && CRYPTO_memcmp(auth, s->token, n) == 0;
    }
    if (!strcmp(mode, "basic")) {
        unsigned char dec[2 * CFG_STR_MAX + 4];
        size_t in, n = strlen(s->basic);
        int out;
        if (strncasecmp(auth, "Basic ", 6) != 0)
            return false;
        in = strlen(auth + 6);
        if (in == 0 || in % 4 || in > 4 * (sizeof(dec) / 3) - 8)
            return false;
        out = EVP_DecodeBlock(dec, (const unsigned char *)auth + 6, (int)in);
        if (out < 0)
            return false;
        while (out > 0 && in > 0 && auth[6 + in - 1] == '=') { /* padding decoded as zero bytes */
            out--;
            in--;
        }
        return (size_t)out == n && CRYPTO_memcmp(dec, s->basic, n) == 0;
    }
    return false;
}

void http_handle(struct http_server *s, const struct http_request *rq, struct http_response *rs)
{
    char param[256], allow[64] = "";
    const struct route *hit = NULL;
    bool path_known = false;

    memset(rs, 0, sizeof(*rs));
    set_header(rs, "X-Content-Type-Options", "nosniff");
    if (!rq->method || !rq->path || rq->path[0] != '/')
        return reply_error(rs, 400, "malformed request line");
    for (size_t i = 0; i < CXR_ARRAY_SIZE(routes); i++) {
        if (!route_match(routes[i].pattern, rq->path, param, sizeof(param)))
            continue;
        /* "/{file}" is the fallback: a path another route knows is not a file */
        if (!strcmp(routes[i].pattern, "/{file}") && path_known)
            break;
        path_known = true;
        if (!strcmp(routes[i].method, rq->method) ||
            (!strcmp(rq->method, "HEAD") && !strcmp(routes[i].method, "GET"))) {
            hit = &routes[i];
            break;
        }
        if (!strstr(allow, routes[i].method))
            (void)snprintf(allow + strlen(allow), sizeof(allow) - strlen(allow), "%s%s",
                           allow[0] ? ", " : "", routes[i].method);
    }
    if (!hit && path_known) {
        set_header(rs, "Allow", allow);
        return reply_error(rs, 405, "%s is not allowed on %.200s; allowed: %s", rq->method,
                           rq->path, allow);
    }
    if (!hit)
        return reply_error(rs, 404, "no such route: %.200s", rq->path);
    if (!hit->open && !authorized(s, rq)) {
        set_header(rs, "WWW-Authenticate", !strcmp(s->d->cfg.http_auth, "basic")
                                               ? "Basic realm=\"cxrtriage\", charset=\"UTF-8\""
                                               : "Bearer realm=\"cxrtriage\"");
        return reply_error(rs, 401, "authentication required ([http] auth = %s)",
                           s->d->cfg.http_auth);
    }
    if (rq->body_too_large) {
        if (!strcmp(hit->pattern, "/api/v1/classify"))
            atomic_fetch_add(&s->d->met.uploads[0], 1);
        return reply_error(rs, 413, "the body is larger than [http] max_body_mb = %d MB",
                           s->d->cfg.http_max_body_mb);
    }
    if (strncmp(hit->pattern, "/api/", 5) == 0 || !hit->open)
        set_header(rs, "Cache-Control", "no-store");
    hit->fn(s, rq, rs, param);
}

/* ---- set-up ---- */

/* The first line of a secret file, without its line end. */
static cxr_err read_secret(const char *path, const char *key, char *out, size_t len, char *errbuf,
                           size_t errlen)
{
    FILE *f = fopen(path, "r");
    char line[CFG_STR_MAX * 2];

    if (!f)
        return cxr_errf(errbuf, errlen, CXR_EIO, "[http] %s: cannot open '%s': %s", key, path,
                        strerror(errno));
    if (!fgets(line, sizeof(line), f))
        line[0] = '\0';
    (void)fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    if (!line[0])
        return cxr_errf(errbuf, errlen, CXR_EINVAL, "[http] %s: '%s' is empty", key, path);
    if (!cxr_strlcpy(out, len, line))
        return cxr_errf(errbuf, errlen, CXR_ELIMIT, "[http] %s: the secret in '%s' is too long",
                        key, path);
    return CXR_OK;
}

cxr_err http_server_new(struct daemon *d, http_upload_fn *record, void *record_user,
                        struct http_server **ret, char *errbuf, size_t errlen)
{
    struct http_server *s = calloc(1, sizeof(*s));
    const struct cfg_config *c = &d->cfg;
    cxr_err e = CXR_OK;

    if (!s)
        return cxr_errf(errbuf, errlen, CXR_ENOMEM, "out of memory");
    s->d = d;
    s->record = record;
    s->record_user = record_user;
    s->max_body = (size_t)c->http_max_body_mb << 20;
    s->n_slots = c->http_threads < (int)CXR_ARRAY_SIZE(s->slots) ? c->http_threads
                                                                 : (int)CXR_ARRAY_SIZE(s->slots);
    if (s->n_slots < 1)
        s->n_slots = 1;
    pthread_mutex_init(&s->pool_lock, NULL);
    if (!strcmp(c->http_auth, "bearer")) {
        if (c->http_token_file[0])
            e = read_secret(c->http_token_file, "token_file", s->token, sizeof(s->token), errbuf,
                            errlen);
        else if (!cxr_strlcpy(s->token, sizeof(s->token), c->http_token) || !s->token[0])
            e = cxr_errf(errbuf, errlen, CXR_EINVAL, "[http] token: missing for auth = bearer");
    } else if (!strcmp(c->http_auth, "basic")) {
        char pw[CFG_STR_MAX];
        e = read_secret(c->http_password_file, "password_file", pw, sizeof(pw), errbuf, errlen);
        if (!e)
            (void)snprintf(s->basic, sizeof(s->basic), "%s:%s", c->http_user, pw);
        OPENSSL_cleanse(pw, sizeof(pw));
    }
    if (e) {
        http_server_free(s);
        return e;
    }
    *ret = s;
    return CXR_OK;
}

void http_server_free(struct http_server *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_slots; i++) {
        nn_gradcam_free(s->slots[i].cam_ctx);
        free(s->slots[i].cam);
        nn_ctx_free(s->slots[i].ctx);
        free(s->slots[i].input);
        free(s->slots[i].unit);
    }
    pthread_mutex_destroy(&s->pool_lock);
    free(s->tls_cert);
    if (s->tls_key) {
        OPENSSL_cleanse(s->tls_key, strlen(s->tls_key));
        free(s->tls_key);
    }
    OPENSSL_cleanse(s->token, sizeof(s->token));
    OPENSSL_cleanse(s->basic, sizeof(s->basic));
    free(s);
}

const char *http_url(const struct http_server *s)
{
    return s ? s->url : "";
}

/* ---- libmicrohttpd glue ---- */

#define MAX_KV 64

struct conn {
    struct cxr_buf body;
    bool too_large;
    bool started;
};

struct kv_collect {
    struct http_kv kv[MAX_KV];
    size_t n;
};

static enum MHD_Result collect_kv(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value)
{
    struct kv_collect *c = cls;

    (void)kind;
    if (c->n < MAX_KV) {
        c->kv[c->n].name = key;
        c->kv[c->n].value = value;
        c->n++;
    }
    return MHD_YES;
}

static enum MHD_Result send_response(struct MHD_Connection *mc, const struct http_response *rs)
{
    struct MHD_Response *r;
    enum MHD_Result ret;
    void *buf;

    /* MHD 0.9.75 takes a non-const pointer; it never writes through it in either mode */
    memcpy(&buf, &rs->body, sizeof(buf));
    r = MHD_create_response_from_buffer(rs->body_len, buf,
                                        rs->body_static ? MHD_RESPMEM_PERSISTENT
                                                        : MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    if (rs->content_type[0])
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, rs->content_type);
    for (int i = 0; i < rs->n_headers; i++)
        (void)MHD_add_response_header(r, rs->header_name[i], rs->header_value[i]);
    ret = MHD_queue_response(mc, (unsigned int)rs->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct http_server *s = cls;
    struct conn *c = *con_cls;
    struct kv_collect *q, *h;
    struct http_request rq;
    struct http_response rs;
    enum MHD_Result ret;

    (void)version;
    if (!c) {
        const char *cl = MHD_lookup_connection_value(mc, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        c = calloc(1, sizeof(*c));
        if (!c)
            return MHD_NO;
        cxr_buf_init(&c->body, s->max_body);
        *con_cls = c;
        if (cl && strtoull(cl, NULL, 10) > s->max_body)
            c->too_large = true; /* answered below at once: the body is never read */
        else
            return MHD_YES;
    }
    if (*upload_data_size) {
        if (!c->too_large && cxr_buf_append(&c->body, upload_data, *upload_data_size) != CXR_OK)
            c->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (c->started)
        return MHD_YES;
    c->started = true;
    q = calloc(1, sizeof(*q));
    h = calloc(1, sizeof(*h));
    if (!q || !h) {
        free(q);
        free(h);
        return MHD_NO;
    }
    (void)MHD_get_connection_values(mc, MHD_GET_ARGUMENT_KIND, collect_kv, q);
    (void)MHD_get_connection_values(mc, MHD_HEADER_KIND, collect_kv, h);
    memset(&rq, 0, sizeof(rq));
    rq.method = method;
    rq.path = url;
    rq.query = q->kv;
    rq.n_query = q->n;
    rq.headers = h->kv;
    rq.n_headers = h->n;
    rq.body = (const unsigned char *)c->body.data;
    rq.body_len = c->body.len;
    rq.body_too_large = c->too_large;
    http_handle(s, &rq, &rs);
    if (!strcmp(method, "HEAD"))
        rs.body_len = 0;
    ret = send_response(mc, &rs);
    if (rs.status >= 500 || rs.status == 413 || rs.status == 401)
        cxr_log(rs.status >= 500 ? CXR_LOG_WARNING : CXR_LOG_INFO, "http.request",
                "method=%s path=%s status=%d", method, url, rs.status);
    http_response_done(&rs);
    free(q);
    free(h);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct conn *c = *con_cls;

    (void)cls;
    (void)mc;
    (void)toe;
    if (c) {
        cxr_buf_done(&c->body);
        free(c);
        *con_cls = NULL;
    }
}

static char *read_text(const char *path, char *errbuf, size_t errlen, const char *key)
{
    char *data = NULL;
    size_t len = 0;

    if (px_read_file(path, &data, &len, errbuf, errlen) != CXR_OK) {
        (void)cxr_errf(errbuf, errlen, CXR_EIO, "[http] %s: cannot read '%s'", key, path);
        return NULL;
    }
    {
        char *t = realloc(data, len + 1);
        if (!t) {
            free(data);
            return NULL;
        }
        t[len] = '\0';
        return t;
    }
}

cxr_err http_start(struct daemon *d, struct http_server **ret)
{
    const struct cfg_config *c = &d->cfg;
    struct http_server *s = NULL;
    struct addrinfo hints, *ai = NULL;
    char err[512], port[16];
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    bool tls = c->http_tls_cert[0] && c->http_tls_key[0];
    int gai;

    if (http_server_new(d, NULL, NULL, &s, err, sizeof(err)) != CXR_OK || !s)
        return cxr_log_err(CXR_EINVAL, "http.start", "msg='%s'", err);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    (void)snprintf(port, sizeof(port), "%d", c->http_port);
    gai = getaddrinfo(c->http_bind, port, &hints, &ai);
    if (gai != 0 || !ai) {
        http_server_free(s);
        return cxr_log_err(CXR_EINVAL, "http.start", "key='[http] bind' bind=%s msg='%s'",
                           c->http_bind, gai_strerror(gai));
    }
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (tls) {
        if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
            freeaddrinfo(ai);
            http_server_free(s);
            return cxr_log_err(CXR_EUNSUPPORTED, "http.start",
                               "msg='this libmicrohttpd has no TLS; [http] tls_cert is set'");
        }
        s->tls_cert = read_text(c->http_tls_cert, err, sizeof(err), "tls_cert");
        s->tls_key = s->tls_cert ? read_text(c->http_tls_key, err, sizeof(err), "tls_key") : NULL;
        if (!s->tls_cert || !s->tls_key) {
            freeaddrinfo(ai);
            http_server_free(s);
            return cxr_log_err(CXR_EIO, "http.start", "msg='%s'", err);
        }
        flags |= MHD_USE_TLS;
    }
    {
        struct MHD_OptionItem o[12];
        int n = 0;
#define OPT(opt, v, p) (o[n++] = (struct MHD_OptionItem){(opt), (intptr_t)(v), (p)})
        OPT(MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr);
        if (c->http_threads > 1) /* one thread: MHD's own polling thread serves every request */
            OPT(MHD_OPTION_THREAD_POOL_SIZE, c->http_threads, NULL);
        OPT(MHD_OPTION_CONNECTION_LIMIT, c->http_max_connections, NULL);
        OPT(MHD_OPTION_CONNECTION_TIMEOUT, c->http_timeout_s, NULL);
        OPT(MHD_OPTION_CONNECTION_MEMORY_LIMIT, 64 * 1024, NULL);
        if (tls) {
            OPT(MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert);
            OPT(MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key);
        }
        OPT(MHD_OPTION_END, 0, NULL);
#undef OPT
        s->mhd = MHD_start_daemon(flags, (uint16_t)c->http_port, NULL, NULL, on_request, s,
                                  MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_ARRAY,
                                  o, MHD_OPTION_END);
    }
    freeaddrinfo(ai);
    if (!s->mhd) {
        http_server_free(s);
        return cxr_log_err(CXR_ENET, "http.start",
                           "bind=%s port=%d msg='cannot listen (address in use or not local?)'",
                           c->http_bind, c->http_port);
    }
    (void)snprintf(s->url, sizeof(s->url), "%s://%s%s%s:%d/", tls ? "https" : "http",
                   strchr(c->http_bind, ':') ? "[" : "", c->http_bind,
                   strchr(c->http_bind, ':') ? "]" : "", c->http_port);
    cxr_log(CXR_LOG_NOTICE, "http.listen",
            "url=%s auth=%s tls=%s threads=%d max_body_mb=%d timeout_s=%d max_connections=%d "
            "msg='web page, API and metrics at %s'",
            s->url, c->http_auth, tls ? "yes" : "no", c->http_threads, c->http_max_body_mb,
            c->http_timeout_s, c->http_max_connections, s->url);
    *ret = s;
    return CXR_OK;
}

void http_stop(struct http_server *s)
{
    if (!s)
        return;
    if (s->mhd)
        MHD_stop_daemon(s->mhd);
    http_server_free(s);
}
