/*
 * test_http.c - the HTTP endpoint's handler (daemon/http.c) without libmicrohttpd: a daemon
 * struct with the bundled model and a ledger in a temporary directory, requests built here and
 * answered by http_handle(). Routing (404, 405 with Allow), the JSON errors, readiness without
 * workers or listener, metrics, classify (415, 413, 400, multipart, a real PNG audited as an
 * upload through the record callback), paging parameters, bearer and basic authentication.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon.h"
#include "http.h"

static struct daemon g_d;
static st_db *g_db;
static char g_tmp[256];
static int g_recorded;

static cxr_err record(void *user, const struct st_receipt *r, const struct st_result *res,
                      int64_t *ret_id, char *errbuf, size_t errlen)
{
    st_db *db = user;
    cxr_err e = st_insert_received(db, r, 0, ret_id, errbuf, errlen);

    if (e == CXR_OK)
        e = st_finish(db, *ret_id, res, errbuf, errlen);
    g_recorded++;
    return e;
}

static int setup(void **state)
{
    const char *src = getenv("CXR_SOURCE_DIR");
    char err[512];

    (void)state;
    (void)snprintf(g_tmp, sizeof(g_tmp), "%s/cxr-http-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_non_null(mkdtemp(g_tmp));
    cfg_defaults(&g_d.cfg);
    (void)snprintf(g_d.cfg.state_dir, sizeof(g_d.cfg.state_dir), "%s", g_tmp);
    if (src)
        (void)snprintf(g_d.cfg.model_path, sizeof(g_d.cfg.model_path),
                       "%s/model/weights/cxr4-default.cxrm", src);
    assert_int_equal(cfg_resolve(&g_d.cfg), CXR_OK);
    assert_int_equal(cxr_mkdir_p(g_d.cfg.spool_dir, 0700), CXR_OK);
    assert_int_equal(nn_model_load(g_d.cfg.model_path, &g_d.model, err, sizeof(err)), CXR_OK);
    assert_int_equal(nn_triage_rule_init(g_d.model, &g_d.rule, err, sizeof(err)), CXR_OK);
    pthread_mutex_init(&g_d.rule_lock, NULL);
    pthread_mutex_init(&g_d.inbox_lock, NULL);
    atomic_store(&g_d.met.db_ok, true);
    g_d.met.start_ms = st_now_ms();
    assert_int_equal(st_open(g_d.cfg.audit_db, ST_OPEN_WRITE, &g_db, err, sizeof(err)), CXR_OK);
    return 0;
}

static int teardown(void **state)
{
    char cmd[600];

    (void)state;
    st_close(g_db);
    nn_model_free(g_d.model);
    (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_tmp);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static struct http_server *server(void)
{
    struct http_server *s = NULL;
    char err[512];

    assert_int_equal(http_server_new(&g_d, record, g_db, &s, err, sizeof(err)), CXR_OK);
    return s;
}

/* Sends one request; the JSON body (or NULL) is returned, the response kept in *rs. */
static json_t *call(struct http_server *s, const char *method, const char *path,
                    const struct http_kv *query, size_t nq, const struct http_kv *headers,
                    size_t nh, const void *body, size_t len, struct http_response *rs)
{
    struct http_request rq;

    memset(&rq, 0, sizeof(rq));
    rq.method = method;
    rq.path = path;
    rq.query = query;
    rq.n_query = nq;
    rq.headers = headers;
    rq.n_headers = nh;
    rq.body = body;
    rq.body_len = len;
    http_handle(s, &rq, rs);
    if (!strcmp(rs->content_type, "application/json"))
        return json_loadb((const char *)rs->body, rs->body_len, 0, NULL);
    return NULL;
}

static const char *err_code(json_t *j)
{
    return json_string_value(json_object_get(json_object_get(j, "error"), "code"));
}

static const char *header(const struct http_response *rs, const char *name)
{
    for (int i = 0; i < rs->n_headers; i++)
        if (!strcmp(rs->header_name[i], name))
            return rs->header_value[i];
    return NULL;
}

static void test_routing(void **state)
{
    struct http_server *s = server();
    struct http_response rs;
    json_t *j;

    (void)state;
    j = call(s, "GET", "/healthz", NULL, 0, NULL, 0, NULL, 0, &rs);
    assert_int_equal(rs.status, 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    assert_string_equal(header(&rs, "X-Content-Type-Options"), "nosniff");
    json_decref(j);
    http_response_done(&rs);

    j = call(s, "GET", "/api/v1/nothing", NULL, 0, NULL, 0, NULL, 0, &rs);
    assert_int_equal(rs.status, 404);
    assert_string_equal(err_code(j), "not_found");
    json_decref(j);
    http_response_done(&rs);

    j = call(s, "PUT", "/api/v1/outbox/3/retry", NULL, 0, NULL, 0, NULL, 0, &rs);
    assert_int_equal(rs.status, 405);
    assert_string_equal(header(&rs, "Allow"), "POST");
    assert_string_equal(err_code(j), "method_not_allowed");
    json_decref(j);
    http_response_done(&rs);

    /* a known path is not a static file: GET /healthz never falls through to /{file} */
    j = call(s, "POST", "/healthz", NULL, 0, NULL, 0, NULL, 0, &rs);
    assert_int_equal(rs.status, 405);
    json_decref(j);
    http_response_done(&rs);

    j = call(s, "GET", "/api/v1/instances/abc", NULL, 0, NULL, 0, NULL, 0, &rs);
    assert_int_equal(rs.status, 404);
    json_decref(j);
    http_response_done(&rs);

    j = call(s, "GET", "relative", NULL, 0, NULL, 0, NULL, 0, &rs);
    assert_int_equal(rs.status, 400);
    json_decref(j);
    http_response_done(&rs);

    json_decref(call(s, "GET", "/", NULL, 0, NULL, 0, NULL, 0, &rs));
    assert_int_equal(rs.status, 200);
    assert_true(rs.body_static);
    assert_non_null(header(&rs, "ETag"));
    {
        char etag[320];
        struct http_kv h = {"If-None-Match", etag};
        (void)snprintf(etag, sizeof(etag), "%s", header(&rs, "ETag"));
        http_response_done(&rs);
        json_decref(call(s, "GET", "/index.html", NULL, 0, &h, 1, NULL, 0, &rs));
        assert_int_equal(rs.status, 304);
        assert_int_equal(rs.body_len, 0);
        http_response_done(&rs);
    }
    http_server_free(s);
}

static void test_ready_and_metrics(void **state)
{
    struct http_server *s = server();
    struct http_response rs;
    json_t *j, *checks;

    (void)state;
    /* no pipeline and no listener here: those two checks fail, the others pass */
    j = call(s, "GET", "/readyz", NULL, 0, NULL, 0, NULL, 0, &rs);
    assert_int_equal(rs.status, 503);
    assert_false(json_is_true(json_object_get(j, "ready")));
    checks = json_object_get(j, "checks");
    assert_int_equal(json_array_size(checks), 5);
    assert_true(json_is_true(json_object_get(json_array_get(checks, 0), "ok")));
    assert_true(json_is_true(json_object_get(json_array_get(checks, 1), "ok")));
    assert_false(json_is_true(json_object_get(json_array_get(checks, 3), "ok")));
    assert_false(json_is_true(json_object_get(json_array_get(checks, 4), "ok")));
    assert_string_equal(err_code(j), "not_ready");
    json_decref(j);
    http_response_done(&rs);

    {
        struct st_result res;
        memset(&res, 0, sizeof(res));
        res.state = ST_CLASSIFIED;
        res.triage = ST_TRIAGE_URGENT;
        res.n_classes = 4;
        res.scores[0] = 0.05;
        res.scores[1] = 0.95;
        res.scores[2] = 1.0;
        for (int i = 0; i < ST_T__COUNT; i++)
            res.timings_ms[i] = 3.0;
        met_record(&g_d.met, &res, false);
    }
    json_decref(call(s, "GET", "/metrics", NULL, 0, NULL, 0, NULL, 0, &rs));
    assert_int_equal(rs.status, 200);
    assert_non_null(strstr(rs.content_type, "version=0.0.4"));
    {
        char *text = strndup((const char *)rs.body, rs.body_len);
        assert_non_null(strstr(text, "cxrtriage_instances_classified_total 1\n"));
        assert_non_null(strstr(text, "cxrtriage_triage_total{triage=\"urgent\"} 1\n"));
        assert_non_null(strstr(text, "cxrtriage_stage_duration_seconds_bucket{stage=\"infer\",le=\"0.002\"} 0\n"));
        assert_non_null(strstr(text, "cxrtriage_stage_duration_seconds_bucket{stage=\"infer\",le=\"0.005\"} 1\n"));
        assert_non_null(strstr(text, "cxrtriage_score_bucket{class=\"COVID-19\",le=\"0.1\"} 1\n"));
        assert_non_null(strstr(text, "cxrtriage_score_bucket{class=\"Lung Opacity\",le=\"0.9\"} 0\n"));
        assert_non_null(strstr(text, "cxrtriage_score_bucket{class=\"Lung Opacity\",le=\"1\"} 1\n"));
        assert_non_null(strstr(text, "cxrtriage_score_bucket{class=\"Normal\",le=\"1\"} 1\n"));
        assert_non_null(strstr(text, "cxrtriage_model_info{digest=\""));
        free(text);
    }
    http_response_done(&rs);
    http_server_free(s);
}

static void test_classify(void **state)
{
    struct http_server *s = server();
    struct http_response rs;
    struct http_request rq;
    char path[600], *png = NULL, err[256];
    size_t png_len = 0;
    json_t *j;
    int before = g_recorded;

    (void)state;
    j = call(s, "POST", "/api/v1/classify", NULL, 0, NULL, 0, "hello", 5, &rs);
    assert_int_equal(rs.status, 415);
    assert_string_equal(err_code(j), "unsupported_media_type");
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"), "message")),
                           "68 65 6c 6c 6f"));
    json_decref(j);
    http_response_done(&rs);

    j = call(s, "POST", "/api/v1/classify", NULL, 0, NULL, 0, NULL, 0, &rs);
    assert_int_equal(rs.status, 400);
    json_decref(j);
    http_response_done(&rs);

    memset(&rq, 0, sizeof(rq));
    rq.method = "POST";
    rq.path = "/api/v1/classify";
    rq.body_too_large = true;
    http_handle(s, &rq, &rs);
    assert_int_equal(rs.status, 413);
    http_response_done(&rs);

    {
        struct http_kv h = {"Content-Type", "multipart/form-data"};
        j = call(s, "POST", "/api/v1/classify", NULL, 0, &h, 1, "x", 1, &rs);
        assert_int_equal(rs.status, 400); /* no boundary */
        json_decref(j);
        http_response_done(&rs);
    }
    assert_int_equal(g_recorded, before);

    /* a real PNG, raw and as multipart: audited as an upload through the record callback */
    (void)snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/dicom/g16.png", getenv("CXR_SOURCE_DIR"));
    assert_int_equal(px_read_file(path, &png, &png_len, err, sizeof(err)), CXR_OK);
    j = call(s, "POST", "/api/v1/classify", NULL, 0, NULL, 0, png, png_len, &rs);
    assert_true(rs.status == 200 || rs.status == 422);
    assert_string_equal(json_string_value(json_object_get(j, "format")), "png");
    assert_true(json_integer_value(json_object_get(j, "id")) > 0);
    assert_int_equal(g_recorded, before + 1);
    json_decref(j);
    http_response_done(&rs);
    {
        static const char head[] = "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n"
                                   "hi\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; "
                                   "filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n";
        static const char tail[] = "\r\n--XyZ--\r\n";
        struct cxr_buf body;
        struct http_kv h = {"content-type", "multipart/form-data; boundary=\"XyZ\""};
        cxr_buf_init(&body, 1 << 20);
        assert_int_equal(cxr_buf_puts(&body, head), CXR_OK);
        assert_int_equal(cxr_buf_append(&body, png, png_len), CXR_OK);
        assert_int_equal(cxr_buf_puts(&body, tail), CXR_OK);
        j = call(s, "POST", "/api/v1/classify", NULL, 0, &h, 1, body.data, body.len, &rs);
        assert_true(rs.status == 200 || rs.status == 422);
        assert_string_equal(json_string_value(json_object_get(j, "format")), "png");
        assert_int_equal(g_recorded, before + 2);
        json_decref(j);
        http_response_done(&rs);
        cxr_buf_done(&body);
    }
    free(png);

    {
        struct http_kv q[2] = {{"source", "upload"}, {"limit", "1"}};
        j = call(s, "GET", "/api/v1/instances", q, 2, NULL, 0, NULL, 0, &rs);
        assert_int_equal(rs.status, 200);
        assert_int_equal(json_array_size(json_object_get(j, "items")), 1);
        assert_string_equal(json_string_value(json_object_get(
                                json_array_get(json_object_get(j, "items"), 0), "source")),
                            "upload");
        assert_true(json_is_integer(json_object_get(j, "next_after_id")));
        json_decref(j);
        http_response_done(&rs);
    }
    {
        static const char *const bad[][2] = {{"limit", "0"}, {"limit", "1001"}, {"limit", "x"},
                                             {"after_id", "-1"}, {"since", "soon"},
                                             {"state", "lost"}, {"triage", "maybe"},
                                             {"source", "fax"}};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            struct http_kv q = {bad[i][0], bad[i][1]};
            j = call(s, "GET", "/api/v1/instances", &q, 1, NULL, 0, NULL, 0, &rs);
            assert_int_equal(rs.status, 400);
            assert_string_equal(err_code(j), "bad_request");
            json_decref(j);
            http_response_done(&rs);
        }
    }
    http_server_free(s);
}

static void test_auth(void **state)
{
    struct http_server *s;
    struct http_response rs;
    char pwfile[400], err[256];
    FILE *f;

    (void)state;
    (void)snprintf(g_d.cfg.http_auth, sizeof(g_d.cfg.http_auth), "bearer");
    (void)snprintf(g_d.cfg.http_token, sizeof(g_d.cfg.http_token), "t0ken");
    s = server();
    {
        struct http_kv good = {"Authorization", "Bearer t0ken"}, bad = {"authorization", "Bearer t0ke"};
        json_decref(call(s, "GET", "/api/v1/status", NULL, 0, NULL, 0, NULL, 0, &rs));
        assert_int_equal(rs.status, 401);
        assert_non_null(strstr(header(&rs, "WWW-Authenticate"), "Bearer"));
        http_response_done(&rs);
        json_decref(call(s, "GET", "/api/v1/status", NULL, 0, &bad, 1, NULL, 0, &rs));
        assert_int_equal(rs.status, 401);
        http_response_done(&rs);
        json_decref(call(s, "GET", "/api/v1/status", NULL, 0, &good, 1, NULL, 0, &rs));
        assert_int_equal(rs.status, 200);
        http_response_done(&rs);
        json_decref(call(s, "GET", "/healthz", NULL, 0, NULL, 0, NULL, 0, &rs));
        assert_int_equal(rs.status, 200);
        http_response_done(&rs);
    }
    http_server_free(s);

    (void)snprintf(pwfile, sizeof(pwfile), "%s/pw", g_tmp);
    f = fopen(pwfile, "w");
    assert_non_null(f);
    fputs("open sesame\n", f);
    (void)fclose(f);
    (void)snprintf(g_d.cfg.http_auth, sizeof(g_d.cfg.http_auth), "basic");
    (void)snprintf(g_d.cfg.http_user, sizeof(g_d.cfg.http_user), "ops");
    (void)snprintf(g_d.cfg.http_password_file, sizeof(g_d.cfg.http_password_file), "%s", pwfile);
    s = server();
    {
        /* base64("ops:open sesame") and a wrong one; padding and garbage */
        struct http_kv good = {"Authorization", "Basic b3BzOm9wZW4gc2VzYW1l"};
        struct http_kv bad[] = {{"Authorization", "Basic b3BzOm9wZW4gc2VzYW1m"},
                                {"Authorization", "Basic ====" },
                                {"Authorization", "Basic"},
                                {"Authorization", "Basic b3Bz"}};
        json_decref(call(s, "GET", "/metrics", NULL, 0, &good, 1, NULL, 0, &rs));
        assert_int_equal(rs.status, 200);
        http_response_done(&rs);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            json_decref(call(s, "GET", "/metrics", NULL, 0, &bad[i], 1, NULL, 0, &rs));
            assert_int_equal(rs.status, 401);
            http_response_done(&rs);
        }
    }
    http_server_free(s);
    (void)snprintf(g_d.cfg.http_password_file, sizeof(g_d.cfg.http_password_file), "%s/absent", g_tmp);
    assert_int_not_equal(http_server_new(&g_d, record, g_db, &s, err, sizeof(err)), CXR_OK);
    assert_non_null(strstr(err, "password_file"));
    (void)snprintf(g_d.cfg.http_auth, sizeof(g_d.cfg.http_auth), "none");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routing),
        cmocka_unit_test(test_ready_and_metrics),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_auth),
    };

    if (!getenv("CXR_SOURCE_DIR")) {
        printf("SKIPPED: run through ctest (CXR_SOURCE_DIR not set)\n");
        return 77;
    }
    return cmocka_run_group_tests(tests, setup, teardown);
}
