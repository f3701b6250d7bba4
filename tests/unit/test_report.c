/* test_report.c - trainer/report.c and plot.c: escaping, base64, JSON content, HTML content. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plot.h"
#include "report.h"

static const char *const names[] = {"COVID", "<script>x</script>", "Normal & co"};

/* 3 classes, class 2 has no positives. */
static struct met_report *small_report(void)
{
    static const int truth[] = {0, 1, 0, 1, 1, 0};
    static const double prob[] = {.7, .2, .1, .1, .8, .1, .5, .2, .3,
                                   .2, .7, .1, .4, .1, .5, .6, .3, .1};
    struct met_options mo = {100, 3};
    struct met_report *r = NULL;

    assert_int_equal(met_compute(6, 3, truth, prob, &mo, &r, NULL), CXR_OK);
    return r;
}

static void test_escape(void **state)
{
    struct cxr_buf b;

    cxr_buf_init(&b, 1000);
    assert_int_equal(plot_esc(&b, "a<b>&\"'\x01z"), CXR_OK);
    assert_string_equal(cxr_buf_str(&b), "a&lt;b&gt;&amp;&quot;&#39;?z");
    cxr_buf_reset(&b);
    assert_int_equal(plot_escn(&b, "<<<<", 2), CXR_OK);
    assert_string_equal(cxr_buf_str(&b), "&lt;&lt;");
    cxr_buf_done(&b);
}

static void test_base64(void **state)
{
    static const struct {
        const char *in, *out;
    } v[] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foobar", "Zm9vYmFy"}};
    struct cxr_buf b;
    unsigned char big[1000];
    size_t len;

    cxr_buf_init(&b, 10000);
    for (size_t i = 0; i < CXR_ARRAY_SIZE(v); i++) {
        cxr_buf_reset(&b);
        assert_int_equal(rpt_data_uri(&b, "x/y", (const unsigned char *)v[i].in,
                                      strlen(v[i].in)),
                         CXR_OK);
        assert_true(strncmp(cxr_buf_str(&b), "data:x/y;base64,", 16) == 0);
        assert_string_equal(cxr_buf_str(&b) + 16, v[i].out);
    }
    /* Across the 192-byte chunk boundary: 1000 bytes -> 1336 characters, 2 '=' pad. */
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)(i * 7);
    cxr_buf_reset(&b);
    assert_int_equal(rpt_data_uri(&b, "a/b", big, sizeof(big)), CXR_OK);
    len = strlen(cxr_buf_str(&b)) - 16;
    assert_int_equal(len, 1336);
    assert_string_equal(cxr_buf_str(&b) + 16 + 1334, "==");
    cxr_buf_done(&b);
}

static void test_json(void **state)
{
    struct met_report *m = small_report();
    struct rpt_epoch ep[2] = {{1, 1.0, 1.2, .5, .4, .45, .35, 1e-3, 10},
                              {2, 0.8, NAN, .6, NAN, .55, NAN, 1e-3, 10}};
    struct met_oppoint op;
    static const int truth[] = {0, 1, 0, 1, 1, 0};
    struct rpt_eval ev = {0};
    json_t *j, *cls, *back;
    char *s;
    json_error_t jerr;

    assert_int_equal(met_operating_point(6, 3, truth,
                                         (const double[]){.7, .2, .1, .1, .8, .1, .5, .2, .3,
                                                          .2, .7, .1, .4, .1, .5, .6, .3, .1},
                                         0, 1.0, &op),
                     CXR_OK);
    ev.model_name = "m1";
    ev.class_names = names;
    ev.metrics = m;
    ev.epochs = ep;
    ev.n_epochs = 2;
    ev.ops = &op;
    ev.n_ops = 1;
    ev.date = "2026-01-01T00:00:00Z";
    j = rpt_eval_json(&ev);
    assert_non_null(j);
    s = json_dumps(j, 0);
    assert_non_null(s);
    back = json_loads(s, 0, &jerr); /* valid JSON: no NaN leaked into the text */
    assert_non_null(back);
    assert_string_equal(json_string_value(json_object_get(back, "disclaimer")), CXR_DISCLAIMER);
    cls = json_object_get(json_object_get(back, "metrics"), "classes");
    assert_int_equal(json_array_size(cls), 3);
    assert_true(json_is_null(json_object_get(json_array_get(cls, 2), "auc")));
    assert_true(json_is_real(json_object_get(json_array_get(cls, 0), "auc")));
    assert_true(json_is_object(json_object_get(json_array_get(cls, 0), "auc_ci95")));
    assert_int_equal(json_array_size(json_object_get(back, "epochs")), 2);
    assert_true(json_is_null(json_object_get(json_array_get(json_object_get(back, "epochs"), 1),
                                             "val_loss")));
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(back, "operating_points"), 0),
                            "class")),
                        "COVID");
    assert_int_equal(json_integer_value(json_array_get(
                         json_array_get(json_object_get(json_object_get(back, "metrics"),
                                                        "confusion"),
                                        1),
                         1)),
                     2);
    free(s);
    json_decref(back);
    json_decref(j);
    met_report_free(m);
}

static void test_html(void **state)
{
    struct met_report *m = small_report();
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0};
    struct rpt_mistake mk = {"COVID/<evil>.png", 0, 1, 0.93, png, sizeof(png)};
    struct rpt_eval ev = {0};
    struct cxr_buf b;
    const char *h, *p;

    ev.model_name = "model \"x\" <1>";
    ev.class_names = names;
    ev.metrics = m;
    ev.mistakes = &mk;
    ev.n_mistakes = 1;
    cxr_buf_init(&b, RPT_MAX_HTML);
    assert_int_equal(rpt_eval_html(&ev, &b), CXR_OK);
    h = cxr_buf_str(&b);
    assert_non_null(strstr(h, "<!DOCTYPE html>"));
    assert_non_null(strstr(h, CXR_DISCLAIMER));
    assert_non_null(strstr(h, "&lt;script&gt;x&lt;/script&gt;"));
    assert_null(strstr(h, "<script"));
    assert_non_null(strstr(h, "model &quot;x&quot; &lt;1&gt;"));
    assert_non_null(strstr(h, "COVID/&lt;evil&gt;.png"));
    assert_non_null(strstr(h, "data:image/png;base64,iVBORw0KGgo"));
    assert_non_null(strstr(h, "No per-epoch records were given"));
    assert_non_null(strstr(h, "<svg"));
    /* Self-contained: the only URL is the SVG namespace. */
    for (p = strstr(h, "http"); p; p = strstr(p + 1, "http"))
        assert_true(strncmp(p, "http://www.w3.org/2000/svg\"", 27) == 0);
    cxr_buf_done(&b);

    /* A buffer too small fails cleanly. */
    cxr_buf_init(&b, 2000);
    assert_int_equal(rpt_eval_html(&ev, &b), CXR_ELIMIT);
    cxr_buf_done(&b);
    ev.metrics = NULL;
    cxr_buf_init(&b, 2000);
    assert_int_equal(rpt_eval_html(&ev, &b), CXR_EINVAL);
    cxr_buf_done(&b);
    met_report_free(m);
}

static void test_write(void **state)
{
    struct met_report *m = small_report();
    struct rpt_eval ev = {0};
    char dir[] = "/tmp/cxr-report-XXXXXX", html[256], json[256];
    struct cxr_buf e;

    assert_non_null(mkdtemp(dir));
    (void)snprintf(html, sizeof(html), "%s/r.html", dir);
    (void)snprintf(json, sizeof(json), "%s/r.json", dir);
    ev.class_names = names;
    ev.metrics = m;
    cxr_buf_init(&e, 4096);
    assert_int_equal(rpt_eval_write(&ev, html, json, &e), CXR_OK);
    assert_int_equal(access(html, R_OK), 0);
    assert_int_equal(access(json, R_OK), 0);
    assert_int_equal(rpt_eval_write(&ev, "/nonexistent-dir/r.html", NULL, &e), CXR_EIO);
    assert_non_null(strstr(cxr_buf_str(&e), "'/nonexistent-dir/r.html'"));
    (void)unlink(html);
    (void)unlink(json);
    (void)rmdir(dir);
    cxr_buf_done(&e);
    met_report_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape), cmocka_unit_test(test_base64),
        cmocka_unit_test(test_json),   cmocka_unit_test(test_html),
        cmocka_unit_test(test_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
