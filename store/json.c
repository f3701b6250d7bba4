/*
 * json.c - an instance as one line of JSON (jansson does the escaping) and the ledger's time
 * helpers: epoch milliseconds, RFC 3339 UTC text, and the CLI's --since/--until forms.
 */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_int.h"

int64_t st_now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void st_format_time(int64_t ms, char *out, size_t len)
{
    int64_t sec = ms / 1000, rem = ms % 1000;
    struct tm tm;
    time_t t;

    if (rem < 0) { /* floor for times before 1970 */
        rem += 1000;
        sec--;
    }
    t = (time_t)sec;
    if (!len)
        return;
    if (!gmtime_r(&t, &tm)) {
        (void)snprintf(out, len, "invalid");
        return;
    }
    (void)snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)rem);
}

/* Reads exactly n digits at *p. */
static bool digits(const char **p, int n, int *ret)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *ret = v;
    return true;
}

static bool parse_relative(const char *s, int64_t now_ms, int64_t *ret_ms)
{
    char *end;
    long long n;
    int64_t unit;

    if (!isdigit((unsigned char)s[0]))
        return false;
    n = strtoll(s, &end, 10);
    if (end == s || end[0] == '\0' || end[1] != '\0' || n < 0 || n > 100000)
        return false;
    switch (end[0]) {
    case 's': unit = 1000; break;
    case 'm': unit = 60 * 1000; break;
    case 'h': unit = 3600 * 1000; break;
    case 'd': unit = 86400 * 1000; break;
    case 'w': unit = 7LL * 86400 * 1000; break;
    default: return false;
    }
    *ret_ms = now_ms - (int64_t)n * unit;
    return true;
}

bool st_parse_time(const char *s, int64_t now_ms, int64_t *ret_ms)
{
    const char *p = s;
    struct tm tm;
    int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0;
    time_t t;

    if (!s || !*s)
        return false;
    if (parse_relative(s, now_ms, ret_ms))
        return true;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d))
        return false;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi))
            return false;
        if (*p == ':') {
            p++;
            if (!digits(&p, 2, &sec))
                return false;
            if (*p == '.') {
                int frac = 0, n = 0;
                p++;
                while (isdigit((unsigned char)*p)) {
                    if (n < 3) {
                        frac = frac * 10 + (*p - '0');
                        n++;
                    }
                    p++;
                }
                if (n == 0)
                    return false;
                while (n++ < 3)
                    frac *= 10;
                ms = frac;
            }
        }
        if (*p == 'Z' || *p == 'z')
            p++;
    }
    if (*p != '\0')
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return false;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    t = timegm(&tm);
    if (tm.tm_mday != d || tm.tm_mon != mo - 1) /* 2026-02-30 normalised to March */
        return false;
    *ret_ms = (int64_t)t * 1000 + ms;
    return true;
}

static int set_str(json_t *o, const char *key, const char *value)
{
    return json_object_set_new(o, key, json_string(value ? value : ""));
}

cxr_err st_instance_json(const struct st_instance *in, struct cxr_buf *out)
{
    const struct st_receipt *r = &in->r;
    const struct st_result *res = &in->res;
    json_t *o = json_object(), *scores = NULL, *timings = json_object();
    char when[40];
    int bad = 0;

    if (!o || !timings) {
        json_decref(o);
        json_decref(timings);
        return CXR_ENOMEM;
    }
    st_format_time(r->received_at_ms, when, sizeof(when));
    bad |= json_object_set_new(o, "id", json_integer(in->id));
    bad |= set_str(o, "sop_instance_uid", r->sop_instance_uid);
    bad |= set_str(o, "study_instance_uid", r->study_uid);
    bad |= set_str(o, "series_instance_uid", r->series_uid);
    bad |= set_str(o, "sop_class_uid", r->sop_class_uid);
    bad |= set_str(o, "accession", r->accession);
    bad |= set_str(o, "patient_id", r->patient_id);
    bad |= set_str(o, "calling_aet", r->calling_aet);
    bad |= set_str(o, "peer", r->peer);
    bad |= set_str(o, "transfer_syntax", r->transfer_syntax);
    bad |= json_object_set_new(o, "size_bytes", json_integer(r->size_bytes));
    bad |= set_str(o, "received_at", when);
    bad |= set_str(o, "state", st_state_name(res->state));
    bad |= set_str(o, "gate_reason", res->gate_reason);
    if (res->n_classes > 0) {
        scores = json_object();
        for (int i = 0; scores && i < res->n_classes && i < ST_MAX_CLASSES; i++)
            bad |= json_object_set_new(scores, res->class_names[i], json_real(res->scores[i]));
        bad |= json_object_set_new(o, "scores", scores ? scores : json_null());
        bad |= !scores;
    } else {
        bad |= json_object_set_new(o, "scores", json_null());
    }
    bad |= json_object_set_new(
        o, "triage",
        st_triage_name(res->triage) ? json_string(st_triage_name(res->triage)) : json_null());
    bad |= set_str(o, "triage_reason", res->triage_reason);
    bad |= set_str(o, "rule", res->rule);
    bad |= set_str(o, "model_digest", res->model_digest);
    bad |= set_str(o, "pixel_sha256", res->pixel_sha256);
    for (int i = 0; i < ST_T__COUNT; i++)
        if (res->timings_ms[i] >= 0)
            bad |= json_object_set_new(timings, st_stage_name((enum st_stage)i),
                                       json_real(res->timings_ms[i]));
    bad |= json_object_set_new(o, "timings_ms", timings);
    bad |= set_str(o, "error", res->error);
    bad |= json_object_set_new(o, "duplicate_of",
                               in->duplicate_of > 0 ? json_integer(in->duplicate_of) : json_null());
    bad |= set_str(o, "source", in->r.source);
    /* 15 significant digits: 0.91 prints as 0.91 and still reads back as the same double
     * for every value a float32 model produces */
    return st__json_put(o, bad, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15), out);
}

cxr_err st__json_put(json_t *o, int bad, size_t flags, struct cxr_buf *out)
{
    char *text;
    cxr_err err;

    if (bad) {
        json_decref(o);
        return CXR_ENOMEM;
    }
    text = json_dumps(o, flags);
    json_decref(o);
    if (!text)
        return CXR_ENOMEM;
    err = cxr_buf_puts(out, text);
    free(text);
    return err;
}
