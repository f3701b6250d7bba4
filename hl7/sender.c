/*
 * sender.c - the report sender (hl7.h, "Report sender"): one delivery attempt per
 * snd_submit(), to a webhook (libcurl multi) or an MLLP peer (a non-blocking TCP socket),
 * driven by the caller's loop through one fd.
 *
 * DESIGN
 * - One internal epoll set holds three kinds of member, told apart by epoll_data.u64:
 *     TAG_TIMER        the timerfd, armed (absolute, CLOCK_MONOTONIC) at the earliest deadline:
 *                      libcurl's timer and every MLLP attempt's connect/ACK deadline;
 *     fd << 2 | TAG_CURL   a socket libcurl asked us to watch (CURLMOPT_SOCKETFUNCTION);
 *     a pointer        an MLLP attempt (malloc'ed, so its two low bits are 0).
 *   The caller's loop polls that epoll fd (snd_fd); snd_process() drains it without waiting.
 * - Webhook attempts are easy handles added to one multi handle; the multi's connection cache
 *   lives as long as the sender, so consecutive requests to one host reuse a connection.
 * - MLLP attempts: connect (non-blocking, TCP_NODELAY) -> send the frame -> read until one
 *   complete ACK frame (at most SND_ACK_MAX) -> classify -> close. One connection per attempt.
 * - An attempt ends in finish(): it is unlinked and freed first, then on_result runs, so the
 *   callback may submit again (the list is never walked across a callback).
 * - A connect that fails at once (ECONNREFUSED from connect() itself) is not reported from
 *   snd_submit(): the attempt is marked failed with a deadline of "now", and the next
 *   snd_process() reports it, so on_result never runs inside snd_submit().
 */
#include "hl7.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#define TAG_TIMER 1u
#define TAG_CURL 2u
#define TAG_MASK 3u

#define DEFAULT_CONNECT_TIMEOUT_S 10
#define DEFAULT_TIMEOUT_S 30
#define MAX_TIMEOUT_S 3600

enum mllp_state { MLLP_CONNECTING, MLLP_SENDING, MLLP_READING, MLLP_FAILED };

struct snd_attempt {
    struct snd_attempt *prev, *next;
    int kind;
    int64_t report_id;
    int dest;
    int64_t t0_ms; /* CLOCK_MONOTONIC */
    double t0_fms; /* the same, fractional, for snd_result.ms */
    uint64_t seq;  /* submit order: a pass of snd_process() expires only older attempts */
    char *body;    /* webhook: the body; mllp: the framed message */
    size_t len;

    /* webhook */
    CURL *easy;
    struct curl_slist *hdrs;
    char errbuf[CURL_ERROR_SIZE];
    char *resp; /* SND_RESPONSE_MAX bytes */
    size_t resp_len;
    int retry_after_s;
    char location[200];

    /* mllp */
    int fd;
    enum mllp_state state;
    int fail_errno; /* MLLP_FAILED: why */
    size_t sent;
    char *ack; /* SND_ACK_MAX bytes once reading */
    size_t ack_len;
    int64_t connect_deadline, deadline;
    char control_id[64];
};

struct mllp_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

struct snd_sender {
    struct snd_dest *dests;
    struct mllp_addr *addrs;
    int n;
    snd_result_fn on_result;
    void *user;
    int epfd, tfd;
    CURLM *multi;
    int64_t curl_deadline; /* -1: none */
    struct snd_attempt *head;
    int in_flight;
    bool curl_init; /* curl_global_init() succeeded: snd_free() balances it */
    uint64_t seq;   /* attempts submitted so far */
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The same clock in fractional milliseconds, for snd_result.ms. */
static double now_fms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7F)
            return true;
    return false;
}

static bool terminated(const char *field, size_t size)
{
    return memchr(field, '\0', size) != NULL;
}

/* ---- the timer ---- */

static int64_t attempt_deadline(const struct snd_attempt *a)
{
    if (a->kind != SND_MLLP)
        return -1;
    if (a->state == MLLP_FAILED)
        return a->t0_ms;
    if (a->state == MLLP_CONNECTING && a->connect_deadline < a->deadline)
        return a->connect_deadline;
    return a->deadline;
}

static void rearm(snd_sender *s)
{
    int64_t d = s->curl_deadline;
    struct itimerspec its;

    for (const struct snd_attempt *a = s->head; a; a = a->next) {
        int64_t ad = attempt_deadline(a);

        if (ad >= 0 && (d < 0 || ad < d))
            d = ad;
    }
    memset(&its, 0, sizeof(its));
    if (d >= 0) {
        if (d < 1)
            d = 1; /* an it_value of zero would disarm */
        its.it_value.tv_sec = d / 1000;
        its.it_value.tv_nsec = (long)(d % 1000) * 1000000L;
    }
    (void)timerfd_settime(s->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* ---- finishing an attempt ---- */

static void unlink_attempt(snd_sender *s, struct snd_attempt *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        s->head = a->next;
    if (a->next)
        a->next->prev = a->prev;
    s->in_flight--;
}

static void free_attempt(snd_sender *s, struct snd_attempt *a)
{
    if (a->easy) {
        curl_multi_remove_handle(s->multi, a->easy);
        curl_easy_cleanup(a->easy);
    }
    curl_slist_free_all(a->hdrs);
    if (a->fd >= 0) {
        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, a->fd, NULL);
        (void)close(a->fd);
    }
    free(a->body);
    free(a->resp);
    free(a->ack);
    free(a);
}

static void result_init(const struct snd_attempt *a, struct snd_result *r)
{
    memset(r, 0, sizeof(*r));
    r->report_id = a->report_id;
    r->dest = a->dest;
    r->retry_after_s = -1;
    r->ms = now_fms() - a->t0_fms;
}

/* Unlinks and frees a, then reports r: on_result may submit again. */
static void finish(snd_sender *s, struct snd_attempt *a, struct snd_result *r)
{
    unlink_attempt(s, a);
    free_attempt(s, a);
    s->on_result(s->user, r);
}

/* ---- webhook ---- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct snd_attempt *a = userdata;
    size_t n = size * nmemb;
    size_t room = SND_RESPONSE_MAX - a->resp_len;

    /* Keep the start, read (and drop) the rest: aborting would lose the final status. */
    memcpy(a->resp + a->resp_len, ptr, n < room ? n : room);
    a->resp_len += n < room ? n : room;
    return n;
}

/* Copies a header's value (after "Name:"), trimmed, into out. */
static void header_value(const char *p, size_t n, char *out, size_t outlen)
{
    size_t k;

    while (n && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n && (p[n - 1] == '\r' || p[n - 1] == '\n' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    k = n < outlen - 1 ? n : outlen - 1;
    memcpy(out, p, k);
    out[k] = '\0';
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct snd_attempt *a = userdata;
    size_t n = size * nmemb;
    char v[200];

    if (n >= 5 && !strncmp(ptr, "HTTP/", 5)) {
        /* a new response (after a 100 Continue): forget the previous one's headers */
        a->retry_after_s = -1;
        a->location[0] = '\0';
    } else if (n > 12 && !strncasecmp(ptr, "Retry-After:", 12)) {
        header_value(ptr + 12, n - 12, v, sizeof(v));
        a->retry_after_s = snd_parse_retry_after(v, (int64_t)time(NULL));
    } else if (n > 9 && !strncasecmp(ptr, "Location:", 9)) {
        header_value(ptr + 9, n - 9, a->location, sizeof(a->location));
    }
    return n;
}

/* Writes the result's detail (cut to fit: the detail is one line for a log or an audit row). */
static void set_detail(struct snd_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_detail(struct snd_result *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
    va_end(ap);
}

static bool is_tls_error(CURLcode rc)
{
    switch (rc) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED: return true;
    default: return false;
    }
}

static void finish_webhook(snd_sender *s, struct snd_attempt *a, CURLcode rc)
{
    const struct snd_dest *d = &s->dests[a->dest];
    const char *why = a->errbuf[0] ? a->errbuf : curl_easy_strerror(rc);
    struct snd_result r;
    long status = 0, oserr = 0;

    result_init(a, &r);
    (void)curl_easy_getinfo(a->easy, CURLINFO_RESPONSE_CODE, &status);
    (void)curl_easy_getinfo(a->easy, CURLINFO_OS_ERRNO, &oserr);
    r.http_status = status > 0 && status < 1000 ? (int)status : 0;
    snd_excerpt(a->resp, a->resp_len, r.response, sizeof(r.response));

    if (rc == CURLE_OK) {
        r.outcome = snd_http_outcome(r.http_status);
        if (r.outcome == SND_RETRY)
            r.retry_after_s = a->retry_after_s;
        if (r.http_status >= 300 && r.http_status <= 399)
            set_detail(&r, "HTTP %d: redirect to '%s' not followed (fix the destination URL)",
                       r.http_status, a->location);
        else if (r.retry_after_s >= 0)
            set_detail(&r, "HTTP %d, Retry-After %d s", r.http_status, r.retry_after_s);
        else
            set_detail(&r, "HTTP %d", r.http_status);
    } else {
        /* Every transport failure is worth another try: see the policy in hl7.h. */
        r.outcome = SND_RETRY;
        if (rc == CURLE_OPERATION_TIMEDOUT)
            set_detail(&r, "timeout after %d s: %s",
                       r.http_status
                           ? d->timeout_s
                           : (strstr(why, "onnect") ? d->connect_timeout_s : d->timeout_s),
                       why);
        else if (is_tls_error(rc))
            set_detail(&r, "TLS: %s", why);
        else if (rc == CURLE_COULDNT_CONNECT && oserr == ECONNREFUSED)
            set_detail(&r, "connection refused: %s", why);
        else if (r.http_status)
            set_detail(&r, "response cut after HTTP %d: %s", r.http_status, why);
        else
            set_detail(&r, "%s: %s", curl_easy_strerror(rc), why);
    }
    finish(s, a, &r);
}

static cxr_err add_header(struct snd_attempt *a, const char *name, const char *value)
{
    char line[1024];
    struct curl_slist *l;

    if ((size_t)snprintf(line, sizeof(line), "%s: %s", name, value) >= sizeof(line))
        return CXR_EINVAL;
    l = curl_slist_append(a->hdrs, line);
    if (!l)
        return CXR_ENOMEM;
    a->hdrs = l;
    return CXR_OK;
}

static cxr_err start_webhook(snd_sender *s, struct snd_attempt *a, const struct snd_request *rq)
{
    const struct snd_dest *d = &s->dests[a->dest];
    CURL *e;
    cxr_err err = CXR_OK;
    struct curl_slist *l;

    a->resp = malloc(SND_RESPONSE_MAX);
    a->easy = e = curl_easy_init();
    if (!a->resp || !e)
        return CXR_ENOMEM;
    a->retry_after_s = -1;
    if (!err)
        err = add_header(a, "Content-Type",
                         rq->content_type ? rq->content_type : "application/octet-stream");
    if (!err && rq->idempotency_key && rq->idempotency_key[0])
        err = add_header(a, "Idempotency-Key", rq->idempotency_key);
    if (!err && d->bearer_token[0]) {
        char v[300];

        (void)snprintf(v, sizeof(v), "Bearer %s", d->bearer_token);
        err = add_header(a, "Authorization", v);
        explicit_bzero(v, sizeof(v));
    }
    if (!err && d->hmac_key[0]) {
        char ts[24], hex[65], v[80];

        (void)snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
        err = snd_signature(d->hmac_key, strlen(d->hmac_key), ts, a->body, a->len, hex);
        if (!err)
            err = add_header(a, "X-Cxrtriage-Timestamp", ts);
        (void)snprintf(v, sizeof(v), "sha256=%s", hex);
        if (!err)
            err = add_header(a, "X-Cxrtriage-Signature", v);
    }
    if (err)
        return err;
    /* no "Expect: 100-continue" round trip for large bodies */
    l = curl_slist_append(a->hdrs, "Expect:");
    if (!l)
        return CXR_ENOMEM;
    a->hdrs = l;

    if (curl_easy_setopt(e, CURLOPT_URL, d->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, a->body) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)a->len) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, a->hdrs) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_USERAGENT, "cxrtriage/" CXR_VERSION) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)d->connect_timeout_s) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)d->timeout_s) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, a) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HEADERDATA, a) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, a->errbuf) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PRIVATE, a) != CURLE_OK)
        return CXR_ENOMEM;
    if (d->ca_file[0] && curl_easy_setopt(e, CURLOPT_CAINFO, d->ca_file) != CURLE_OK)
        return CXR_ENOMEM;
    if (d->client_cert[0] && curl_easy_setopt(e, CURLOPT_SSLCERT, d->client_cert) != CURLE_OK)
        return CXR_ENOMEM;
    if (d->client_key[0] && curl_easy_setopt(e, CURLOPT_SSLKEY, d->client_key) != CURLE_OK)
        return CXR_ENOMEM;
    if (curl_multi_add_handle(s->multi, e) != CURLM_OK)
        return CXR_ENOMEM;
    return CXR_OK;
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    snd_sender *s = userp;
    struct epoll_event ev;

    if (what == CURL_POLL_REMOVE) {
        (void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    memset(&ev, 0, sizeof(ev));
    ev.data.u64 = ((uint64_t)(unsigned)fd << 2) | TAG_CURL;
    if (what & CURL_POLL_IN)
        ev.events |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
        (void)epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    snd_sender *s = userp;

    s->curl_deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    rearm(s);
    return 0;
}

static void curl_drain(snd_sender *s)
{
    CURLMsg *m;
    int left;

    /* One at a time: finish() calls on_result, which may add handles. */
    while ((m = curl_multi_info_read(s->multi, &left)) != NULL) {
        struct snd_attempt *a = NULL;

        if (m->msg != CURLMSG_DONE)
            continue;
        (void)curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&a);
        if (a)
            finish_webhook(s, a, m->data.result);
    }
}

/* ---- MLLP ---- */

static void finish_mllp(snd_sender *s, struct snd_attempt *a, enum snd_outcome o, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));
static void finish_mllp(snd_sender *s, struct snd_attempt *a, enum snd_outcome o, const char *fmt,
                        ...)
{
    struct snd_result r;
    va_list ap;

    result_init(a, &r);
    r.outcome = o;
    va_start(ap, fmt);
    (void)vsnprintf(r.detail, sizeof(r.detail), fmt, ap);
    va_end(ap);
    if (a->ack_len)
        snd_excerpt(a->ack, a->ack_len, r.response, sizeof(r.response));
    finish(s, a, &r);
}

static void mllp_ack(snd_sender *s, struct snd_attempt *a, size_t off, size_t len)
{
    struct snd_result r;
    char ctl[128], text[128];
    bool match;

    result_init(a, &r);
    snd_excerpt(a->ack + off, len, r.response, sizeof(r.response));
    if (snd_parse_ack(a->ack + off, len, r.ack_code, ctl, sizeof(ctl), text, sizeof(text))) {
        r.outcome = SND_RETRY;
        set_detail(&r, "ACK without MSH and MSA segments");
    } else {
        match = strcmp(ctl, a->control_id) == 0;
        r.outcome = snd_ack_outcome(r.ack_code, match);
        if (!match)
            set_detail(&r, "MSA-2 '%.60s' does not match MSH-10 '%s'", ctl, a->control_id);
        else if (text[0])
            set_detail(&r, "ACK %s: %.200s", r.ack_code, text);
        else
            set_detail(&r, "ACK %s", r.ack_code);
    }
    finish(s, a, &r);
}

static void mllp_watch(snd_sender *s, struct snd_attempt *a, uint32_t events)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.ptr = a;
    (void)epoll_ctl(s->epfd, EPOLL_CTL_MOD, a->fd, &ev);
}

static void mllp_io(snd_sender *s, struct snd_attempt *a, uint32_t events)
{
    if (a->state == MLLP_CONNECTING) {
        int e = 0;
        socklen_t el = sizeof(e);

        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0)
            e = errno;
        if (e == ECONNREFUSED) {
            finish_mllp(s, a, SND_RETRY, "connection refused");
            return;
        }
        if (e) {
            finish_mllp(s, a, SND_RETRY, "connect failed: %s", strerror(e));
            return;
        }
        a->state = MLLP_SENDING;
    }
    if (a->state == MLLP_SENDING) {
        while (a->sent < a->len) {
            ssize_t n = send(a->fd, a->body + a->sent, a->len - a->sent, MSG_NOSIGNAL);

            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (n < 0) {
                finish_mllp(s, a, SND_RETRY, "send failed: %s", strerror(errno));
                return;
            }
            a->sent += (size_t)n;
        }
        a->ack = malloc(SND_ACK_MAX);
        if (!a->ack) {
            finish_mllp(s, a, SND_RETRY, "out of memory for the ACK");
            return;
        }
        a->state = MLLP_READING;
        mllp_watch(s, a, EPOLLIN);
        return; /* the ACK comes later; a level-triggered EPOLLIN brings us back */
    }
    if (a->state == MLLP_READING) {
        for (;;) {
            ssize_t n;
            size_t off, len;
            int fr;

            if (a->ack_len == SND_ACK_MAX) {
                finish_mllp(s, a, SND_RETRY, "ACK frame larger than %d bytes", SND_ACK_MAX);
                return;
            }
            n = recv(a->fd, a->ack + a->ack_len, SND_ACK_MAX - a->ack_len, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            if (n < 0) {
                finish_mllp(s, a, SND_RETRY, "%s while waiting for the ACK",
                            errno == ECONNRESET ? "connection reset" : strerror(errno));
                return;
            }
            if (n == 0) {
                if (a->ack_len)
                    finish_mllp(s, a, SND_RETRY,
                                "broken MLLP frame: connection closed after %zu bytes of the ACK",
                                a->ack_len);
                else
                    finish_mllp(s, a, SND_RETRY, "connection closed without an ACK");
                return;
            }
            a->ack_len += (size_t)n;
            fr = snd_mllp_deframe(a->ack, a->ack_len, &off, &len);
            if (fr < 0) {
                finish_mllp(s, a, SND_RETRY, "broken MLLP frame");
                return;
            }
            if (fr > 0) {
                mllp_ack(s, a, off, len);
                return;
            }
        }
    }
}

static void mllp_timeout(snd_sender *s, struct snd_attempt *a)
{
    const struct snd_dest *d = &s->dests[a->dest];

    switch (a->state) {
    case MLLP_FAILED:
        if (a->fail_errno == ECONNREFUSED)
            finish_mllp(s, a, SND_RETRY, "connection refused");
        else
            finish_mllp(s, a, SND_RETRY, "connect failed: %s", strerror(a->fail_errno));
        break;
    case MLLP_CONNECTING:
        finish_mllp(s, a, SND_RETRY, "connect timeout after %d s",
                    a->connect_deadline < a->deadline ? d->connect_timeout_s : d->timeout_s);
        break;
    case MLLP_SENDING:
        finish_mllp(s, a, SND_RETRY, "timeout after %d s while sending", d->timeout_s);
        break;
    case MLLP_READING:
        finish_mllp(s, a, SND_RETRY, "timeout after %d s: no ACK%s", d->timeout_s,
                    a->ack_len ? " frame completed" : "");
        break;
    }
}

static cxr_err start_mllp(snd_sender *s, struct snd_attempt *a, const struct snd_request *rq)
{
    const struct snd_dest *d = &s->dests[a->dest];
    const struct mllp_addr *ad = &s->addrs[a->dest];
    struct epoll_event ev;
    int one = 1;

    a->connect_deadline = a->t0_ms + (int64_t)d->connect_timeout_s * 1000;
    a->deadline = a->t0_ms + (int64_t)d->timeout_s * 1000;
    a->fd = socket(ad->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->fd < 0)
        return CXR_ENET;
    /* an ACK must not wait for a delayed ACK of ours (PEERS.md, Nagle) */
    (void)setsockopt(a->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    a->state = MLLP_CONNECTING;
    if (connect(a->fd, (const struct sockaddr *)&ad->ss, ad->len) == 0) {
        a->state = MLLP_SENDING;
    } else if (errno != EINPROGRESS) {
        a->state = MLLP_FAILED; /* reported by the next snd_process() */
        a->fail_errno = errno;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLOUT;
    ev.data.ptr = a;
    if (a->state != MLLP_FAILED && epoll_ctl(s->epfd, EPOLL_CTL_ADD, a->fd, &ev) != 0)
        return CXR_ENET;
    return CXR_OK;
}

/* ---- public ---- */

static cxr_err check_dest(const struct snd_dest *d, int i, char *errbuf, size_t errlen)
{
    const char *files[3] = {d->ca_file, d->client_cert, d->client_key};
    static const char *const file_names[3] = {"ca_file", "client_cert", "client_key"};

    if (!terminated(d->name, sizeof(d->name)) || !terminated(d->url, sizeof(d->url)) ||
        !terminated(d->host, sizeof(d->host)) ||
        !terminated(d->bearer_token, sizeof(d->bearer_token)) ||
        !terminated(d->hmac_key, sizeof(d->hmac_key)) ||
        !terminated(d->ca_file, sizeof(d->ca_file)) ||
        !terminated(d->client_cert, sizeof(d->client_cert)) ||
        !terminated(d->client_key, sizeof(d->client_key)))
        return cxr_errf(errbuf, errlen, CXR_EINVAL, "destination %d: a string is not terminated",
                        i);
    if (d->connect_timeout_s < 0 || d->connect_timeout_s > MAX_TIMEOUT_S || d->timeout_s < 0 ||
        d->timeout_s > MAX_TIMEOUT_S)
        return cxr_errf(errbuf, errlen, CXR_EINVAL, "destination '%s': timeouts must be 0..%d s",
                        d->name, MAX_TIMEOUT_S);
    if (d->kind == SND_WEBHOOK) {
        if (strncasecmp(d->url, "http://", 7) != 0 && strncasecmp(d->url, "https://", 8) != 0)
            return cxr_errf(errbuf, errlen, CXR_EINVAL,
                            "destination '%s': url '%s' is not http:// or https://", d->name,
                            d->url);
        if (has_ctl(d->url) || strchr(d->url, ' '))
            return cxr_errf(errbuf, errlen, CXR_EINVAL,
                            "destination '%s': url holds spaces or control characters", d->name);
        if (has_ctl(d->bearer_token) || has_ctl(d->hmac_key))
            return cxr_errf(errbuf, errlen, CXR_EINVAL,
                            "destination '%s': bearer_token or hmac_key holds control characters",
                            d->name);
        for (int k = 0; k < 3; k++)
            if (files[k][0] && access(files[k], R_OK) != 0)
                return cxr_errf(errbuf, errlen, CXR_EINVAL, "destination '%s': %s '%s': %s",
                                d->name, file_names[k], files[k], strerror(errno));
        if (d->client_key[0] && !d->client_cert[0])
            return cxr_errf(errbuf, errlen, CXR_EINVAL,
                            "destination '%s': client_key without client_cert", d->name);
    } else if (d->kind == SND_MLLP) {
        if (!d->host[0] || d->port < 1 || d->port > 65535)
            return cxr_errf(errbuf, errlen, CXR_EINVAL,
                            "destination '%s': MLLP needs a host and a port 1..65535", d->name);
    } else {
        return cxr_errf(errbuf, errlen, CXR_EINVAL, "destination '%s': unknown kind %d", d->name,
                        d->kind);
    }
    return CXR_OK;
}

static cxr_err resolve(const struct snd_dest *d, struct mllp_addr *ret, char *errbuf, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char port[8];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    (void)snprintf(port, sizeof(port), "%d", d->port);
    rc = getaddrinfo(d->host, port, &hints, &res);
    if (rc != 0 || !res)
        return cxr_errf(errbuf, errlen, CXR_ENET, "destination '%s': cannot resolve '%s': %s",
                        d->name, d->host, gai_strerror(rc));
    memcpy(&ret->ss, res->ai_addr, res->ai_addrlen);
    ret->len = res->ai_addrlen;
    freeaddrinfo(res);
    return CXR_OK;
}

cxr_err snd_new(const struct snd_dest *dests, int n, snd_result_fn on_result, void *user,
                snd_sender **ret, char *errbuf, size_t errlen)
{
    snd_sender *s;
    struct epoll_event ev;
    cxr_err err;
    bool https = false;

    if (!dests || n < 1 || n > SND_MAX_DESTS || !on_result || !ret)
        return cxr_errf(errbuf, errlen, CXR_EINVAL, "need 1..%d destinations and a result callback",
                        SND_MAX_DESTS);
    for (int i = 0; i < n; i++) {
        err = check_dest(&dests[i], i, errbuf, errlen);
        if (err)
            return err;
        if (dests[i].kind == SND_WEBHOOK && !strncasecmp(dests[i].url, "https://", 8))
            https = true;
    }
    if (https && !(curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_SSL))
        return cxr_errf(errbuf, errlen, CXR_EUNSUPPORTED, "libcurl was built without TLS");

    s = calloc(1, sizeof(*s));
    if (!s)
        return CXR_ENOMEM;
    s->epfd = s->tfd = -1;
    s->curl_deadline = -1;
    s->dests = calloc((size_t)n, sizeof(*s->dests));
    s->addrs = calloc((size_t)n, sizeof(*s->addrs));
    if (!s->dests || !s->addrs) {
        err = CXR_ENOMEM;
        goto out_free;
    }
    memcpy(s->dests, dests, (size_t)n * sizeof(*dests));
    s->n = n;
    s->on_result = on_result;
    s->user = user;
    for (int i = 0; i < n; i++) {
        struct snd_dest *d = &s->dests[i];

        if (!d->connect_timeout_s)
            d->connect_timeout_s = DEFAULT_CONNECT_TIMEOUT_S;
        if (!d->timeout_s)
            d->timeout_s = DEFAULT_TIMEOUT_S;
        if (d->kind == SND_MLLP) {
            err = resolve(d, &s->addrs[i], errbuf, errlen);
            if (err)
                goto out_free;
        }
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        err = cxr_errf(errbuf, errlen, CXR_ENOMEM, "curl_global_init failed");
        goto out_free;
    }
    s->curl_init = true;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (s->epfd < 0 || s->tfd < 0) {
        err = cxr_errf(errbuf, errlen, CXR_EIO, "epoll/timerfd: %s", strerror(errno));
        goto out_free;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u64 = TAG_TIMER;
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->tfd, &ev) != 0) {
        err = cxr_errf(errbuf, errlen, CXR_EIO, "epoll_ctl: %s", strerror(errno));
        goto out_free;
    }
    s->multi = curl_multi_init();
    if (!s->multi) {
        err = CXR_ENOMEM;
        goto out_free;
    }
    (void)curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    (void)curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    (void)curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    (void)curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
    /* room to keep one idle connection per destination (and some) for reuse */
    (void)curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)(4 * n + 4));
    *ret = s;
    return CXR_OK;

out_free:
    snd_free(s);
    return err;
}

int snd_fd(const snd_sender *s)
{
    return s->epfd;
}

int snd_in_flight(const snd_sender *s)
{
    return s->in_flight;
}

cxr_err snd_submit(snd_sender *s, const struct snd_request *rq)
{
    struct snd_attempt *a;
    const struct snd_dest *d;
    cxr_err err;

    if (!rq || rq->dest < 0 || rq->dest >= s->n || !rq->body || rq->len == 0)
        return CXR_EINVAL;
    if (rq->len > SND_BODY_MAX)
        return CXR_ELIMIT;
    d = &s->dests[rq->dest];
    if ((rq->content_type && has_ctl(rq->content_type)) ||
        (rq->idempotency_key && has_ctl(rq->idempotency_key)))
        return CXR_EINVAL;
    if (d->kind == SND_MLLP && (!rq->control_id || !rq->control_id[0] || has_ctl(rq->control_id) ||
                                strlen(rq->control_id) >= sizeof(a->control_id)))
        return CXR_EINVAL;

    a = calloc(1, sizeof(*a));
    if (!a)
        return CXR_ENOMEM;
    a->fd = -1;
    a->kind = d->kind;
    a->report_id = rq->report_id;
    a->dest = rq->dest;
    a->t0_ms = now_ms();
    a->t0_fms = now_fms();
    a->seq = ++s->seq;
    if (d->kind == SND_MLLP) {
        struct cxr_buf b;

        cxr_buf_init(&b, rq->len + 3);
        err = snd_mllp_frame(&b, rq->body, rq->len);
        if (!err)
            err = cxr_buf_take(&b, &a->body);
        cxr_buf_done(&b);
        if (err) {
            free(a);
            return err;
        }
        a->len = rq->len + 3;
        (void)snprintf(a->control_id, sizeof(a->control_id), "%s", rq->control_id);
    } else {
        a->body = malloc(rq->len);
        if (!a->body) {
            free(a);
            return CXR_ENOMEM;
        }
        memcpy(a->body, rq->body, rq->len);
        a->len = rq->len;
    }

    /* linked before starting: curl may call back into the sender from add_handle */
    a->next = s->head;
    if (s->head)
        s->head->prev = a;
    s->head = a;
    s->in_flight++;
    err = d->kind == SND_MLLP ? start_mllp(s, a, rq) : start_webhook(s, a, rq);
    if (err) {
        unlink_attempt(s, a);
        free_attempt(s, a);
        return err;
    }
    rearm(s);
    return CXR_OK;
}

void snd_process(snd_sender *s)
{
    struct epoll_event evs[32];
    int n, running = 0;
    uint64_t seq_limit;

    for (int round = 0; round < 8; round++) {
        n = epoll_wait(s->epfd, evs, (int)CXR_ARRAY_SIZE(evs), 0);
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64 & TAG_MASK;

            if (tag == TAG_TIMER && evs[i].data.u64 == TAG_TIMER) {
                uint64_t expirations;

                (void)!read(s->tfd, &expirations, sizeof(expirations));
            } else if (tag == TAG_CURL) {
                int mask = 0;

                if (evs[i].events & EPOLLIN)
                    mask |= CURL_CSELECT_IN;
                if (evs[i].events & EPOLLOUT)
                    mask |= CURL_CSELECT_OUT;
                if (evs[i].events & (EPOLLERR | EPOLLHUP))
                    mask |= CURL_CSELECT_ERR;
                (void)curl_multi_socket_action(s->multi, (curl_socket_t)(evs[i].data.u64 >> 2),
                                               mask, &running);
            } else {
                mllp_io(s, evs[i].data.ptr, evs[i].events);
            }
        }
        curl_drain(s);
        if (n < (int)CXR_ARRAY_SIZE(evs))
            break;
    }
    if (s->curl_deadline >= 0 && now_ms() >= s->curl_deadline) {
        s->curl_deadline = -1;
        (void)curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        curl_drain(s);
    }
    /* Expired MLLP attempts, one per walk: finish() may change the list. Only attempts older
     * than this pass: a callback that resubmits at once to a refused port must not spin here. */
    seq_limit = s->seq;
    for (;;) {
        int64_t now = now_ms();
        struct snd_attempt *a;

        for (a = s->head; a; a = a->next) {
            int64_t d = attempt_deadline(a);

            if (d >= 0 && d <= now && a->seq <= seq_limit)
                break;
        }
        if (!a)
            break;
        mllp_timeout(s, a);
    }
    rearm(s);
}

void snd_free(snd_sender *s)
{
    if (!s)
        return;
    while (s->head) {
        struct snd_attempt *a = s->head;

        unlink_attempt(s, a);
        free_attempt(s, a);
    }
    if (s->multi)
        curl_multi_cleanup(s->multi);
    if (s->epfd >= 0)
        (void)close(s->epfd);
    if (s->tfd >= 0)
        (void)close(s->tfd);
    if (s->dests)
        explicit_bzero(s->dests, (size_t)s->n * sizeof(*s->dests));
    free(s->dests);
    free(s->addrs);
    if (s->curl_init)
        curl_global_cleanup();
    free(s);
}
