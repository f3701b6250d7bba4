/*
 * test_sender.c - unit tests of the report sender's pure parts (hl7/sender_util.c): the outcome
 * policy, Retry-After (delta-seconds and the three HTTP-date forms), MLLP framing and
 * deframing, ACK parsing, the HMAC signature (RFC 4231 test case 2) and the response excerpt;
 * plus snd_new()'s destination checks and snd_submit()'s refusals, which need no peer.
 * Delivery against real peers is tests/integration/test_sender.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hl7.h"

static void test_http_policy(void **state)
{
    (void)state;
    assert_int_equal(snd_http_outcome(200), SND_DELIVERED);
    assert_int_equal(snd_http_outcome(201), SND_DELIVERED);
    assert_int_equal(snd_http_outcome(204), SND_DELIVERED);
    assert_int_equal(snd_http_outcome(500), SND_RETRY);
    assert_int_equal(snd_http_outcome(503), SND_RETRY);
    assert_int_equal(snd_http_outcome(408), SND_RETRY);
    assert_int_equal(snd_http_outcome(429), SND_RETRY);
    assert_int_equal(snd_http_outcome(400), SND_DEAD);
    assert_int_equal(snd_http_outcome(401), SND_DEAD);
    assert_int_equal(snd_http_outcome(404), SND_DEAD);
    assert_int_equal(snd_http_outcome(413), SND_DEAD);
    assert_int_equal(snd_http_outcome(301), SND_DEAD);
    assert_int_equal(snd_http_outcome(308), SND_DEAD);
    assert_int_equal(snd_http_outcome(0), SND_RETRY);
    assert_int_equal(snd_http_outcome(600), SND_RETRY);
}

static void test_ack_policy(void **state)
{
    (void)state;
    assert_int_equal(snd_ack_outcome("AA", true), SND_DELIVERED);
    assert_int_equal(snd_ack_outcome("CA", true), SND_DELIVERED);
    assert_int_equal(snd_ack_outcome("AR", true), SND_RETRY);
    assert_int_equal(snd_ack_outcome("CR", true), SND_RETRY);
    assert_int_equal(snd_ack_outcome("AE", true), SND_DEAD);
    assert_int_equal(snd_ack_outcome("CE", true), SND_DEAD);
    assert_int_equal(snd_ack_outcome("AA", false), SND_RETRY);
    assert_int_equal(snd_ack_outcome("AE", false), SND_RETRY);
    assert_int_equal(snd_ack_outcome("XX", true), SND_RETRY);
    assert_int_equal(snd_ack_outcome("", true), SND_RETRY);
}

static void test_retry_after(void **state)
{
    const int64_t t = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */

    (void)state;
    assert_int_equal(snd_parse_retry_after("120", 0), 120);
    assert_int_equal(snd_parse_retry_after(" 0 ", 0), 0);
    assert_int_equal(snd_parse_retry_after("99999999999999", 0), INT32_MAX);
    assert_int_equal(snd_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", t - 120), 120);
    assert_int_equal(snd_parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", t - 5), 5);
    assert_int_equal(snd_parse_retry_after("Sun Nov  6 08:49:37 1994", t - 7), 7);
    /* a date in the past: come back now */
    assert_int_equal(snd_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", t + 100), 0);
    assert_int_equal(snd_parse_retry_after("Wed, 02 Dec 2026 10:00:00 GMT", 1796205600 - 60), 60);
    /* malformed */
    assert_int_equal(snd_parse_retry_after(NULL, 0), -1);
    assert_int_equal(snd_parse_retry_after("", 0), -1);
    assert_int_equal(snd_parse_retry_after("-5", 0), -1);
    assert_int_equal(snd_parse_retry_after("12abc", 0), -1);
    assert_int_equal(snd_parse_retry_after("1.5", 0), -1);
    assert_int_equal(snd_parse_retry_after("tomorrow", 0), -1);
    assert_int_equal(snd_parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", 0), -1);
    assert_int_equal(snd_parse_retry_after("Sun, 06 Nov 1994 25:49:37 GMT", 0), -1);
    assert_int_equal(snd_parse_retry_after("Sun, 06 Nov 1994 08:49:37 CET", 0), -1);
    assert_int_equal(snd_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT trailing", 0), -1);
}

static void test_mllp_frame(void **state)
{
    struct cxr_buf b;
    size_t off = 0, len = 0;
    const char msg[] = "MSH|^~\\&|A\rPID|1\r";

    (void)state;
    cxr_buf_init(&b, 1024);
    assert_int_equal(snd_mllp_frame(&b, msg, strlen(msg)), CXR_OK);
    assert_int_equal(b.len, strlen(msg) + 3);
    assert_int_equal(b.data[0], 0x0B);
    assert_int_equal(b.data[b.len - 2], 0x1C);
    assert_int_equal(b.data[b.len - 1], 0x0D);
    assert_int_equal(snd_mllp_deframe(b.data, b.len, &off, &len), 1);
    assert_int_equal(off, 1);
    assert_int_equal(len, strlen(msg));
    assert_memory_equal(b.data + off, msg, len);
    /* every shorter prefix needs more bytes */
    for (size_t k = 0; k < b.len; k++)
        assert_int_equal(snd_mllp_deframe(b.data, k, &off, &len), 0);
    cxr_buf_done(&b);

    cxr_buf_init(&b, 1024);
    assert_int_equal(snd_mllp_frame(&b, "a\x0b", 2), CXR_EINVAL);
    assert_int_equal(snd_mllp_frame(&b, "a\x1c", 2), CXR_EINVAL);
    cxr_buf_done(&b);

    /* broken frames */
    assert_int_equal(snd_mllp_deframe("MSH|\x1c\r", 6, &off, &len), -1);
    assert_int_equal(snd_mllp_deframe("\x0bMSH|\x1cX", 7, &off, &len), -1);
    assert_int_equal(snd_mllp_deframe("\x0bMSH|\x0bMSH\x1c\r", 11, &off, &len), -1);
}

static void test_parse_ack(void **state)
{
    const char ack[] = "MSH|^~\\&|EHR|HOSP|CXR|RAD|20240101||ACK^R01^ACK|A1|P|2.5.1\r"
                       "MSA|AE|CTL42|Bad PID-3\rERR|||207\r";
    const char lf[] = "MSH|^~\\&|EHR|HOSP|CXR|RAD|20240101||ACK|A1|P|2.5.1\nMSA|AA|X^Y\n";
    const char other_fs[] = "MSH#^~\\&#EHR\rMSA#CA#Z9\r";
    char code[4], ctl[32], text[64];

    (void)state;
    assert_int_equal(snd_parse_ack(ack, strlen(ack), code, ctl, sizeof(ctl), text, sizeof(text)),
                     CXR_OK);
    assert_string_equal(code, "AE");
    assert_string_equal(ctl, "CTL42");
    assert_string_equal(text, "Bad PID-3");
    assert_int_equal(snd_parse_ack(lf, strlen(lf), code, ctl, sizeof(ctl), text, sizeof(text)),
                     CXR_OK);
    assert_string_equal(code, "AA");
    assert_string_equal(ctl, "X");
    assert_string_equal(text, "");
    assert_int_equal(
        snd_parse_ack(other_fs, strlen(other_fs), code, ctl, sizeof(ctl), text, sizeof(text)),
        CXR_OK);
    assert_string_equal(code, "CA");
    assert_string_equal(ctl, "Z9");
    /* a long control id is cut to the buffer */
    assert_int_equal(snd_parse_ack(ack, strlen(ack), code, ctl, 4, text, sizeof(text)), CXR_OK);
    assert_string_equal(ctl, "CTL");

    assert_int_equal(snd_parse_ack("", 0, code, ctl, sizeof(ctl), text, sizeof(text)), CXR_EPARSE);
    assert_int_equal(snd_parse_ack("garbage", 7, code, ctl, sizeof(ctl), text, sizeof(text)),
                     CXR_EPARSE);
    assert_int_equal(
        snd_parse_ack("MSH|^~\\&|A\rPID|1\r", 17, code, ctl, sizeof(ctl), text, sizeof(text)),
        CXR_EPARSE);
    /* MSAX is not MSA */
    assert_int_equal(
        snd_parse_ack("MSH|^~\\&|A\rMSAX|AA|1\r", 21, code, ctl, sizeof(ctl), text, sizeof(text)),
        CXR_EPARSE);
}

static void test_hmac(void **state)
{
    char hex[65];
    const char data[] = "what do ya want for nothing?";

    (void)state;
    /* RFC 4231 test case 2 */
    assert_int_equal(snd_signature("Jefe", 4, NULL, data, strlen(data), hex), CXR_OK);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* the webhook form: the same MAC over "<timestamp>.<body>" split at the first '.' */
    {
        char a[65], b[65];

        assert_int_equal(snd_signature("k", 1, "1700000000", "{}", 2, a), CXR_OK);
        assert_int_equal(snd_signature("k", 1, NULL, "1700000000.{}", 13, b), CXR_OK);
        assert_string_equal(a, b);
    }
}

static void test_excerpt(void **state)
{
    char out[16];
    char big[512];

    (void)state;
    snd_excerpt("a\rb\nc\\d\x01", 8, big, sizeof(big));
    assert_string_equal(big, "a\\rb\\nc\\\\d\\x01");
    snd_excerpt("\xc3\xa9", 2, big, sizeof(big));
    assert_string_equal(big, "\\xC3\\xA9");
    snd_excerpt("0123456789abcdefghij", 20, out, sizeof(out));
    assert_string_equal(out, "0123456789ab...");
    /* an escape is never cut in half */
    snd_excerpt("0123456789a\r", 12, out, sizeof(out));
    assert_string_equal(out, "0123456789a\\r");
    snd_excerpt("0123456789abcd\r", 15, out, sizeof(out));
    assert_string_equal(out, "0123456789ab...");
    snd_excerpt("0123456789abcdefgh", 15, out, sizeof(out));
    assert_string_equal(out, "0123456789abcde");
    snd_excerpt("", 0, out, sizeof(out));
    assert_string_equal(out, "");
}

static void no_result(void *user, const struct snd_result *r)
{
    (void)user;
    (void)r;
    fail_msg("no result expected");
}

static void test_new_checks(void **state)
{
    struct snd_dest d[2];
    snd_sender *s = NULL;
    char err[256];

    (void)state;
    memset(d, 0, sizeof(d));
    (void)snprintf(d[0].name, sizeof(d[0].name), "default");
    d[0].kind = SND_WEBHOOK;
    (void)snprintf(d[0].url, sizeof(d[0].url), "ftp://x/");
    assert_int_equal(snd_new(d, 1, no_result, NULL, &s, err, sizeof(err)), CXR_EINVAL);
    assert_non_null(strstr(err, "'default'"));
    assert_null(s);
    (void)snprintf(d[0].url, sizeof(d[0].url), "https://127.0.0.1:9/x");
    (void)snprintf(d[0].ca_file, sizeof(d[0].ca_file), "/nonexistent/ca.pem");
    assert_int_equal(snd_new(d, 1, no_result, NULL, &s, err, sizeof(err)), CXR_EINVAL);
    assert_non_null(strstr(err, "ca_file"));
    d[0].ca_file[0] = '\0';
    (void)snprintf(d[0].bearer_token, sizeof(d[0].bearer_token), "a\r\nX-Evil: 1");
    assert_int_equal(snd_new(d, 1, no_result, NULL, &s, err, sizeof(err)), CXR_EINVAL);
    d[0].bearer_token[0] = '\0';

    (void)snprintf(d[1].name, sizeof(d[1].name), "ehr");
    d[1].kind = SND_MLLP;
    (void)snprintf(d[1].host, sizeof(d[1].host), "127.0.0.1");
    d[1].port = 0;
    assert_int_equal(snd_new(d, 2, no_result, NULL, &s, err, sizeof(err)), CXR_EINVAL);
    d[1].port = 2575;
    d[1].timeout_s = -1;
    assert_int_equal(snd_new(d, 2, no_result, NULL, &s, err, sizeof(err)), CXR_EINVAL);
    d[1].timeout_s = 0;
    assert_int_equal(snd_new(d, 0, no_result, NULL, &s, err, sizeof(err)), CXR_EINVAL);
    assert_int_equal(snd_new(d, 2, NULL, NULL, &s, err, sizeof(err)), CXR_EINVAL);

    assert_int_equal(snd_new(d, 2, no_result, NULL, &s, err, sizeof(err)), CXR_OK);
    assert_non_null(s);
    assert_true(snd_fd(s) >= 0);
    {
        struct snd_request rq;

        memset(&rq, 0, sizeof(rq));
        rq.body = "x";
        rq.len = 1;
        rq.dest = 2;
        assert_int_equal(snd_submit(s, &rq), CXR_EINVAL);
        rq.dest = -1;
        assert_int_equal(snd_submit(s, &rq), CXR_EINVAL);
        rq.dest = 1; /* MLLP needs a control id */
        assert_int_equal(snd_submit(s, &rq), CXR_EINVAL);
        rq.control_id = "C1";
        rq.body = "MSH|\x1c";
        rq.len = 5;
        assert_int_equal(snd_submit(s, &rq), CXR_EINVAL);
        rq.dest = 0;
        rq.body = "{}";
        rq.len = 2;
        rq.idempotency_key = "k\r\nX: y";
        assert_int_equal(snd_submit(s, &rq), CXR_EINVAL);
        rq.len = 0;
        rq.idempotency_key = NULL;
        assert_int_equal(snd_submit(s, &rq), CXR_EINVAL);
        assert_int_equal(snd_in_flight(s), 0);
        /* an attempt in flight is aborted by snd_free() without a result */
        rq.len = 2;
        assert_int_equal(snd_submit(s, &rq), CXR_OK);
        assert_int_equal(snd_in_flight(s), 1);
    }
    snd_free(s);
    snd_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_policy), cmocka_unit_test(test_ack_policy),
        cmocka_unit_test(test_retry_after), cmocka_unit_test(test_mllp_frame),
        cmocka_unit_test(test_parse_ack),   cmocka_unit_test(test_hmac),
        cmocka_unit_test(test_excerpt),     cmocka_unit_test(test_new_checks),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
