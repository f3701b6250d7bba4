/*
 * sender_util.c - the pure parts of the report sender (hl7.h, "the sender's pure parts"): the
 * outcome policy, Retry-After, MLLP framing, ACK parsing, the HMAC signature and the response
 * excerpt. No I/O and no state, so tests/unit/test_sender.c covers them without peers.
 */
#include "hl7.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define MLLP_SB 0x0B
#define MLLP_EB 0x1C
#define MLLP_CR 0x0D

/*
 * The outcome of a completed HTTP exchange. Why each row (also in hl7.h):
 *   2xx            accepted
 *   408 425 429    the receiver asks to come back later (timeout, too early, rate limit)
 *   5xx            the receiver's trouble, usually transient
 *   3xx            DEAD: redirects are not followed, and the same POST gets the same redirect:
 *                  the destination URL needs fixing, after which the outbox retries
 *   other 4xx      DEAD: the receiver refuses this content or these credentials; a resend of
 *                  the same request fails the same way
 *   anything else  RETRY (no final answer we understand)
 */
enum snd_outcome snd_http_outcome(int status)
{
    if (status >= 200 && status <= 299)
        return SND_DELIVERED;
    if (status == 408 || status == 425 || status == 429)
        return SND_RETRY;
    if (status >= 500 && status <= 599)
        return SND_RETRY;
    if (status >= 300 && status <= 499)
        return SND_DEAD;
    return SND_RETRY;
}

enum snd_outcome snd_ack_outcome(const char *code, bool control_id_matches)
{
    if (!control_id_matches || !code)
        return SND_RETRY;
    if (!strcmp(code, "AA") || !strcmp(code, "CA"))
        return SND_DELIVERED;
    if (!strcmp(code, "AE") || !strcmp(code, "CE"))
        return SND_DEAD;
    return SND_RETRY; /* AR, CR, unknown */
}

static int month_index(const char *m)
{
    static const char *const names[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

    for (int i = 0; i < 12; i++)
        if (!strncmp(m, names[i], 3) && m[3] == '\0')
            return i;
    return -1;
}

static bool valid_time(int year, int mon, int day, int h, int mi, int sec)
{
    return year >= 1970 && year <= 9999 && mon >= 0 && mon < 12 && day >= 1 && day <= 31 &&
           h >= 0 && h < 24 && mi >= 0 && mi < 60 && sec >= 0 && sec <= 60;
}

/* The three HTTP-date forms (RFC 9110 5.6.7) -> Unix seconds, or -1. */
static int64_t parse_http_date(const char *v)
{
    char wd[16], mon[4], tz[4];
    int day, year, h, mi, sec, n = 0, form = 0;
    struct tm tm;
    int m;

    memset(&tm, 0, sizeof(tm));
    /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    if (sscanf(v, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d %3s%n", wd, &day, mon, &year, &h, &mi,
               &sec, tz, &n) == 8 &&
        v[n] == '\0' && !strcmp(tz, "GMT"))
        form = 1;
    /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT (two-digit year: 70..99 is 19xx, else 20xx) */
    n = 0;
    if (!form &&
        sscanf(v, "%15[A-Za-z], %2d-%3[A-Za-z]-%2d %2d:%2d:%2d %3s%n", wd, &day, mon, &year, &h,
               &mi, &sec, tz, &n) == 8 &&
        v[n] == '\0' && !strcmp(tz, "GMT")) {
        form = 2;
        year += year < 70 ? 2000 : 1900;
    }
    /* asctime: Sun Nov  6 08:49:37 1994 */
    n = 0;
    if (!form &&
        sscanf(v, "%3[A-Za-z] %3[A-Za-z] %2d %2d:%2d:%2d %4d%n", wd, mon, &day, &h, &mi, &sec,
               &year, &n) == 7 &&
        v[n] == '\0')
        form = 3;
    if (!form)
        return -1;
    m = month_index(mon);
    if (!valid_time(year, m, day, h, mi, sec))
        return -1;
    tm.tm_year = year - 1900;
    tm.tm_mon = m;
    tm.tm_mday = day;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    return (int64_t)timegm(&tm);
}

int snd_parse_retry_after(const char *value, int64_t now_s)
{
    const char *p = value;
    char buf[64];
    size_t n;

    if (!value)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n'))
        n--;
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    if (isdigit((unsigned char)buf[0])) {
        int64_t v = 0;

        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)buf[i]))
                return -1;
            if (v < INT32_MAX)
                v = v * 10 + (buf[i] - '0');
        }
        return v > INT32_MAX ? INT32_MAX : (int)v;
    }
    {
        int64_t t = parse_http_date(buf);

        if (t < 0)
            return -1;
        if (t <= now_s)
            return 0;
        return t - now_s > INT32_MAX ? INT32_MAX : (int)(t - now_s);
    }
}

int snd_mllp_deframe(const char *buf, size_t len, size_t *ret_off, size_t *ret_len)
{
    if (len == 0)
        return 0;
    if ((unsigned char)buf[0] != MLLP_SB)
        return -1;
    for (size_t i = 1; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];

        if (c == MLLP_SB)
            return -1;
        if (c == MLLP_EB) {
            if (i + 1 == len)
                return 0;
            if ((unsigned char)buf[i + 1] != MLLP_CR)
                return -1;
            *ret_off = 1;
            *ret_len = i - 1;
            return 1;
        }
    }
    return 0;
}

cxr_err snd_mllp_frame(struct cxr_buf *out, const char *msg, size_t len)
{
    static const char sb = MLLP_SB, trailer[2] = {MLLP_EB, MLLP_CR};
    cxr_err err;

    if (memchr(msg, MLLP_SB, len) || memchr(msg, MLLP_EB, len))
        return CXR_EINVAL;
    err = cxr_buf_append(out, &sb, 1);
    if (!err)
        err = cxr_buf_append(out, msg, len);
    if (!err)
        err = cxr_buf_append(out, trailer, 2);
    return err;
}

/* Copies field idx (0 = segment name) of seg (seglen bytes) up to the first component
 * separator into out. */
static void seg_field(const char *seg, size_t seglen, char fs, char cs, int idx, char *out,
                      size_t outlen)
{
    size_t i = 0, start, end;
    int f = 0;

    if (outlen)
        out[0] = '\0';
    while (f < idx && i < seglen) {
        if (seg[i] == fs)
            f++;
        i++;
    }
    if (f < idx)
        return;
    start = i;
    while (i < seglen && seg[i] != fs && (cs == '\0' || seg[i] != cs))
        i++;
    end = i;
    if (outlen) {
        size_t n = end - start < outlen - 1 ? end - start : outlen - 1;

        memcpy(out, seg + start, n);
        out[n] = '\0';
    }
}

cxr_err snd_parse_ack(const char *msg, size_t len, char code[4], char *control_id,
                      size_t control_id_len, char *text, size_t text_len)
{
    char fs = 0, cs = 0;
    bool have_msa = false;
    size_t i = 0;

    code[0] = '\0';
    if (control_id_len)
        control_id[0] = '\0';
    if (text_len)
        text[0] = '\0';
    while (i < len && (msg[i] == '\r' || msg[i] == '\n'))
        i++;
    if (len - i < 8 || memcmp(msg + i, "MSH", 3) != 0)
        return CXR_EPARSE;
    fs = msg[i + 3];
    cs = msg[i + 4];
    if (fs == '\r' || fs == '\n' || fs == '\0' || cs == fs)
        return CXR_EPARSE;
    while (i < len) {
        size_t j = i;

        while (j < len && msg[j] != '\r' && msg[j] != '\n')
            j++;
        if (j - i >= 4 && memcmp(msg + i, "MSA", 3) == 0 && msg[i + 3] == fs) {
            seg_field(msg + i, j - i, fs, cs, 1, code, 4);
            seg_field(msg + i, j - i, fs, cs, 2, control_id, control_id_len);
            seg_field(msg + i, j - i, fs, '\0', 3, text, text_len);
            have_msa = true;
            break;
        }
        i = j;
        while (i < len && (msg[i] == '\r' || msg[i] == '\n'))
            i++;
    }
    return have_msa ? CXR_OK : CXR_EPARSE;
}

cxr_err snd_signature(const char *key, size_t keylen, const char *timestamp, const char *body,
                      size_t len, char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    EVP_MAC *m = NULL;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    cxr_err err = CXR_EINVAL;
    char digest[] = "SHA256";

    hex[0] = '\0';
    m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!m)
        return CXR_EINVAL;
    ctx = EVP_MAC_CTX_new(m);
    if (!ctx) {
        err = CXR_ENOMEM;
        goto out_free;
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (!EVP_MAC_init(ctx, (const unsigned char *)key, keylen, params))
        goto out_free;
    if (timestamp && (!EVP_MAC_update(ctx, (const unsigned char *)timestamp, strlen(timestamp)) ||
                      !EVP_MAC_update(ctx, (const unsigned char *)".", 1)))
        goto out_free;
    if (len && !EVP_MAC_update(ctx, (const unsigned char *)body, len))
        goto out_free;
    if (!EVP_MAC_final(ctx, mac, &maclen, sizeof(mac)) || maclen != 32)
        goto out_free;
    for (size_t i = 0; i < 32; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 15];
    }
    hex[64] = '\0';
    err = CXR_OK;
out_free:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return err;
}

void snd_excerpt(const char *in, size_t len, char *out, size_t outlen)
{
    size_t o = 0, cut = 0, i;

    if (outlen < 4) {
        if (outlen)
            out[0] = '\0';
        return;
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        char e[5];
        size_t n;

        if (c == '\r')
            n = (size_t)snprintf(e, sizeof(e), "\\r");
        else if (c == '\n')
            n = (size_t)snprintf(e, sizeof(e), "\\n");
        else if (c == '\t')
            n = (size_t)snprintf(e, sizeof(e), "\\t");
        else if (c == '\\')
            n = (size_t)snprintf(e, sizeof(e), "\\\\");
        else if (c < 0x20 || c >= 0x7F)
            n = (size_t)snprintf(e, sizeof(e), "\\x%02X", c);
        else {
            e[0] = (char)c;
            e[1] = '\0';
            n = 1;
        }
        if (o + n > outlen - 1)
            break;
        memcpy(out + o, e, n);
        o += n;
        /* where to cut if the rest does not fit: room for "..." and the NUL */
        if (o <= outlen - 4)
            cut = o;
    }
    if (i < len) {
        /* never half an escape: cut after the last whole one that leaves room */
        memcpy(out + cut, "...", 3);
        o = cut + 3;
    }
    out[o] = '\0';
}
