/*
 * snd_drive.c - drives the report sender (hl7.h) against real peers for the integration tests:
 * builds destinations from the command line, runs streams of sequential requests, polls
 * snd_fd() in its own epoll loop (with a 20 ms ticker, as the daemon's loop has timers) for a
 * bounded time, and prints every snd_result as one JSON line, then a summary line.
 *
 *   snd_drive -d SPEC [-d SPEC ...] -s DEST:N [-s DEST:N ...] [-t SECONDS] [-b BODYFILE]
 *             [-c CONTENT_TYPE]
 *   SPEC: comma-separated key=value: name=, url= (webhook), mllp=HOST:PORT, token=, hmac=,
 *         ca=, cert=, key=, ct= (connect timeout s), to= (timeout s)
 *   -s DEST:N  a stream of N requests to destination index DEST, each submitted when the
 *              previous one's result arrives; streams run side by side. Report ids are
 *              stream * 1000 + i; webhook requests carry Idempotency-Key "cxr-test-<id>",
 *              MLLP messages MSH-10 "CTL<id>".
 * Exit: 0 when every result arrived, 2 when the time ran out first, 1 on a usage or setup error.
 * Summary: {"summary":1,"results":R,"expected":E,"in_flight":F,"elapsed_ms":..,
 *           "max_tick_gap_ms":..,"max_process_ms":..}: the largest gap between two ticks of the
 * loop and the longest snd_process() call, to show the loop never stalls on a slow peer.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "hl7.h"

#define MAX_STREAMS 16

struct stream {
    int dest, n, done, submitted;
};

struct drive {
    snd_sender *s;
    struct snd_dest dests[SND_MAX_DESTS];
    int ndest;
    struct stream streams[MAX_STREAMS];
    int nstream;
    int results, expected;
    const char *content_type;
    char *body_file;
    size_t body_file_len;
    double t0;
    int failed_submit;
};

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int submit_next(struct drive *dv, int si)
{
    struct stream *st = &dv->streams[si];
    const struct snd_dest *d = &dv->dests[st->dest];
    struct snd_request rq;
    char body[1024], key[64], ctl[32];
    int64_t id = (int64_t)si * 1000 + st->submitted;
    cxr_err err;

    memset(&rq, 0, sizeof(rq));
    rq.report_id = id;
    rq.dest = st->dest;
    (void)snprintf(key, sizeof(key), "cxr-test-%lld", (long long)id);
    (void)snprintf(ctl, sizeof(ctl), "CTL%lld", (long long)id);
    if (d->kind == SND_MLLP) {
        (void)snprintf(body, sizeof(body),
                       "MSH|^~\\&|CXR-AI-GW|RAD|EHR|HOSP|20240101120000+0000||ORU^R01^ORU_R01|%s|P|"
                       "2.5.1\rPID|1||MRN%lld^^^HOSP^MR||Doe^Jane\rOBR|1|||36554-4^XR Chest "
                       "Single view^LN\rOBX|1|NM|COVID_19^COVID-19^99CXRAI||0.91|1|||||P\r",
                       ctl, (long long)id);
        rq.body = body;
        rq.len = strlen(body);
        rq.content_type = "x-application/hl7-v2+er7";
        rq.control_id = ctl;
    } else if (dv->body_file) {
        rq.body = dv->body_file;
        rq.len = dv->body_file_len;
        rq.content_type = dv->content_type;
        rq.idempotency_key = key;
    } else {
        (void)snprintf(body, sizeof(body),
                       "{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"id\":\"r%lld\"}",
                       (long long)id);
        rq.body = body;
        rq.len = strlen(body);
        rq.content_type = dv->content_type;
        rq.idempotency_key = key;
    }
    err = snd_submit(dv->s, &rq);
    if (err) {
        fprintf(stderr, "snd_drive: snd_submit: %s\n", cxr_strerror(err));
        dv->failed_submit = 1;
        return -1;
    }
    st->submitted++;
    return 0;
}

static const char *outcome_name(enum snd_outcome o)
{
    switch (o) {
    case SND_DELIVERED: return "DELIVERED";
    case SND_RETRY: return "RETRY";
    case SND_DEAD: return "DEAD";
    }
    return "?";
}

static void on_result(void *user, const struct snd_result *r)
{
    struct drive *dv = user;
    int si = (int)(r->report_id / 1000);

    printf("{\"t_ms\":%.1f,\"report_id\":%lld,\"dest\":%d,\"dest_name\":", now_ms() - dv->t0,
           (long long)r->report_id, r->dest);
    json_str(dv->dests[r->dest].name);
    printf(",\"outcome\":\"%s\",\"http_status\":%d,\"ack_code\":", outcome_name(r->outcome),
           r->http_status);
    json_str(r->ack_code);
    printf(",\"retry_after_s\":%d,\"detail\":", r->retry_after_s);
    json_str(r->detail);
    printf(",\"response\":");
    json_str(r->response);
    printf(",\"ms\":%.1f}\n", r->ms);
    (void)fflush(stdout);
    dv->results++;
    if (si >= 0 && si < dv->nstream) {
        struct stream *st = &dv->streams[si];

        st->done++;
        if (st->submitted < st->n)
            (void)submit_next(dv, si); /* from inside on_result, as the daemon will */
    }
}

static int parse_dest(const char *spec, struct snd_dest *d)
{
    char *copy = strdup(spec), *save = NULL, *tok;
    int rc = 0;

    if (!copy)
        return -1;
    memset(d, 0, sizeof(*d));
    d->kind = SND_WEBHOOK;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        const char *k = tok, *v;

        if (!eq) {
            rc = -1;
            break;
        }
        *eq = '\0';
        v = eq + 1;
        if (!strcmp(k, "name"))
            (void)snprintf(d->name, sizeof(d->name), "%s", v);
        else if (!strcmp(k, "url"))
            (void)snprintf(d->url, sizeof(d->url), "%s", v);
        else if (!strcmp(k, "mllp")) {
            const char *colon = strrchr(v, ':');

            if (!colon) {
                rc = -1;
                break;
            }
            d->kind = SND_MLLP;
            (void)snprintf(d->host, sizeof(d->host), "%.*s", (int)(colon - v), v);
            d->port = (int)strtol(colon + 1, NULL, 10);
        } else if (!strcmp(k, "token"))
            (void)snprintf(d->bearer_token, sizeof(d->bearer_token), "%s", v);
        else if (!strcmp(k, "hmac"))
            (void)snprintf(d->hmac_key, sizeof(d->hmac_key), "%s", v);
        else if (!strcmp(k, "ca"))
            (void)snprintf(d->ca_file, sizeof(d->ca_file), "%s", v);
        else if (!strcmp(k, "cert"))
            (void)snprintf(d->client_cert, sizeof(d->client_cert), "%s", v);
        else if (!strcmp(k, "key"))
            (void)snprintf(d->client_key, sizeof(d->client_key), "%s", v);
        else if (!strcmp(k, "ct"))
            d->connect_timeout_s = (int)strtol(v, NULL, 10);
        else if (!strcmp(k, "to"))
            d->timeout_s = (int)strtol(v, NULL, 10);
        else {
            rc = -1;
            break;
        }
    }
    free(copy);
    return rc;
}

static char *read_file(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    char *b = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
        b = malloc((size_t)n);
        if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
            free(b);
            b = NULL;
        }
        *ret_len = (size_t)n;
    }
    (void)fclose(f);
    return b;
}

int main(int argc, char **argv)
{
    static struct drive dv;
    double max_s = 30, last_tick, max_gap = 0, max_proc = 0;
    int opt, ep, tfd, rc = 0;
    struct epoll_event ev;
    struct itimerspec its;
    char err[256];

    /* as the daemon does: a peer that closes mid-write must not kill the process */
    (void)signal(SIGPIPE, SIG_IGN);
    dv.content_type = "application/fhir+json";
    while ((opt = getopt(argc, argv, "d:s:t:b:c:")) != -1) {
        switch (opt) {
        case 'd':
            if (dv.ndest == SND_MAX_DESTS || parse_dest(optarg, &dv.dests[dv.ndest]) != 0) {
                fprintf(stderr, "snd_drive: bad destination '%s'\n", optarg);
                return 1;
            }
            dv.ndest++;
            break;
        case 's': {
            struct stream *st = &dv.streams[dv.nstream];

            if (dv.nstream == MAX_STREAMS || sscanf(optarg, "%d:%d", &st->dest, &st->n) != 2 ||
                st->n < 1 || st->n > 999) {
                fprintf(stderr, "snd_drive: bad stream '%s'\n", optarg);
                return 1;
            }
            dv.expected += st->n;
            dv.nstream++;
            break;
        }
        case 't': max_s = strtod(optarg, NULL); break;
        case 'b':
            dv.body_file = read_file(optarg, &dv.body_file_len);
            if (!dv.body_file) {
                fprintf(stderr, "snd_drive: cannot read '%s'\n", optarg);
                return 1;
            }
            break;
        case 'c': dv.content_type = optarg; break;
        default:
            fprintf(stderr, "usage: snd_drive -d SPEC... -s DEST:N... [-t S] [-b FILE] [-c CT]\n");
            return 1;
        }
    }
    for (int i = 0; i < dv.nstream; i++)
        if (dv.streams[i].dest < 0 || dv.streams[i].dest >= dv.ndest) {
            fprintf(stderr, "snd_drive: stream %d names no destination\n", i);
            return 1;
        }
    if (snd_new(dv.dests, dv.ndest, on_result, &dv, &dv.s, err, sizeof(err)) != CXR_OK) {
        fprintf(stderr, "snd_drive: snd_new: %s\n", err);
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    memset(&its, 0, sizeof(its));
    its.it_value.tv_nsec = its.it_interval.tv_nsec = 20 * 1000000L;
    (void)timerfd_settime(tfd, 0, &its, NULL);
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.fd = snd_fd(dv.s);
    (void)epoll_ctl(ep, EPOLL_CTL_ADD, snd_fd(dv.s), &ev);
    ev.data.fd = tfd;
    (void)epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);

    dv.t0 = now_ms();
    last_tick = dv.t0;
    for (int i = 0; i < dv.nstream; i++)
        if (submit_next(&dv, i) != 0)
            rc = 1;
    while (rc == 0 && dv.results < dv.expected && !dv.failed_submit) {
        struct epoll_event evs[4];
        int n = epoll_wait(ep, evs, 4, 100);
        double t = now_ms();

        if (n < 0 && errno != EINTR) {
            rc = 1;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == tfd) {
                uint64_t x;

                (void)!read(tfd, &x, sizeof(x));
                if (t - last_tick > max_gap)
                    max_gap = t - last_tick;
                last_tick = t;
            } else {
                double p0 = now_ms();

                snd_process(dv.s);
                if (now_ms() - p0 > max_proc)
                    max_proc = now_ms() - p0;
            }
        }
        if (t - dv.t0 > max_s * 1e3) {
            rc = 2;
            break;
        }
    }
    if (dv.failed_submit)
        rc = 1;
    printf("{\"summary\":1,\"results\":%d,\"expected\":%d,\"in_flight\":%d,\"elapsed_ms\":%.1f,"
           "\"max_tick_gap_ms\":%.1f,\"max_process_ms\":%.1f}\n",
           dv.results, dv.expected, snd_in_flight(dv.s), now_ms() - dv.t0, max_gap, max_proc);
    snd_free(dv.s);
    (void)close(tfd);
    (void)close(ep);
    free(dv.body_file);
    return rc;
}
