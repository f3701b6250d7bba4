/* test_config.c - INI parsing and validation: valid files, each kind of error, edge cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char tmpdir[64];

static int setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/cxr_config_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes text to a new file in tmpdir and returns its path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* Loads text; returns the error code and leaves the messages in *errors_out (caller frees). */
static cxr_err load(const char *text, struct cfg_config *c, char **errors_out)
{
    struct cxr_buf errors;
    const char *path = write_file("t.conf", text);
    cxr_err err;

    cfg_defaults(c);
    cxr_buf_init(&errors, 1 << 16);
    err = cfg_load(c, path, &errors);
    assert_int_equal(cxr_buf_take(&errors, errors_out), CXR_OK);
    return err;
}

static void test_defaults(void **state)
{
    struct cfg_config c;

    cfg_defaults(&c);
    assert_string_equal(c.state_dir, "./var");
    assert_int_equal(c.dicom_port, 11112);
    assert_string_equal(c.dicom_bind, "127.0.0.1");
    assert_int_equal(c.http_port, 8080);
    assert_string_equal(c.ae_title, "CXRTRIAGE");
    assert_string_equal(c.report_formats, "hl7,fhir");
    assert_false(c.log_phi);
    assert_true(c.http_enabled);
    assert_int_equal(cfg_resolve(&c), CXR_OK);
    assert_string_equal(c.audit_db, "./var/audit.db");
    assert_string_equal(c.spool_dir, "./var/spool");
    assert_string_equal(c.outbox_dir, "./var/reports");
}

static void test_valid_file(void **state)
{
    struct cfg_config c;
    char *errors;

    assert_int_equal(load("# comment\n; another\n\n[dicom]\nport = 4242\nae_title = MY AE\n"
                          "allowed_calling_aets = ORTHANC, PACS1\n"
                          "[webhook]\nurl = https://ehr.example/cxr ; inline comment\n"
                          "bearer_token = s3cret\n"
                          "[triage]\nthresholds = COVID-19=0.75, Lung Opacity = 0.5\n[log]\nlevel = debug\nphi = yes\n"
                          "  [http]  \n  port = 9090\n",
                          &c, &errors),
                     CXR_OK);
    assert_string_equal(errors, "");
    free(errors);
    assert_int_equal(c.dicom_port, 4242);
    assert_string_equal(c.ae_title, "MY AE");
    assert_string_equal(c.allowed_calling_aets, "ORTHANC, PACS1");
    assert_string_equal(c.webhook.url, "https://ehr.example/cxr");
    assert_true(c.log_phi);
    assert_int_equal(c.http_port, 9090);
    assert_string_equal(c.thresholds, "COVID-19=0.75, Lung Opacity = 0.5");
}

static void test_empty_file(void **state)
{
    struct cfg_config c, d;
    char *errors;

    assert_int_equal(load("", &c, &errors), CXR_OK);
    free(errors);
    cfg_defaults(&d);
    assert_memory_equal(&c, &d, sizeof(c));
}

static void test_missing_file(void **state)
{
    struct cfg_config c;
    struct cxr_buf errors;

    cfg_defaults(&c);
    cxr_buf_init(&errors, 4096);
    assert_int_equal(cfg_load(&c, "/nonexistent/cxr.conf", &errors), CXR_ENOTFOUND);
    assert_non_null(strstr(cxr_buf_str(&errors), "/nonexistent/cxr.conf: cannot open"));
    cxr_buf_done(&errors);
    cxr_buf_init(&errors, 4096);
    assert_int_equal(cfg_load(&c, tmpdir, &errors), CXR_EIO);
    assert_non_null(strstr(cxr_buf_str(&errors), "is a directory"));
    cxr_buf_done(&errors);
}

/* Each case: text, the expected line number and a fragment of its message. */
static void test_each_error_kind(void **state)
{
    static const struct {
        const char *text, *expect;
    } cases[] = {
        {"[dicom]\nprot = 11112\n", ":2: [dicom] prot: unknown key"},
        {"[dicm]\nport = 1\n", ":1: unknown section [dicm]"},
        {"[dicom]\nport = 1\nport = 2\n", ":3: [dicom] port: duplicate key, first set on line 2"},
        {"[dicom]\nport = 12x\n", ":2: [dicom] port: found '12x', expected a TCP port from 1 to 65535"},
        {"[dicom]\nport = 70000\n", ":2: [dicom] port: found '70000', expected a TCP port"},
        {"[dicom]\nport = 0\n", ":2: [dicom] port: found '0'"},
        {"[http]\nport = -1\n", ":2: [http] port: found '-1'"},
        {"[daemon]\nworkers = 1000\n", "expected a whole number from 1 to 64"},
        {"[dicom]\nae_title = WAY_TOO_LONG_AE_TITLE\n", ":2: [dicom] ae_title: found 'WAY_TOO_LONG_AE_TITLE', expected an AE title"},
        {"[dicom]\nae_title = BAD\\AE\n", "[dicom] ae_title: found 'BAD\\AE'"},
        {"[dicom]\nallowed_calling_aets = OK, BAD\\ONE\n", "('BAD\\ONE' is not one)"},
        {"[dicom]\nallowed_calling_aets = PACS@not-an-ip\n", "('PACS@not-an-ip' is not one)"},
        {"[dicom]\nother_sop_classes = maybe\n", "expected one of skip|refuse"},
        {"[dicom]\ntls = maybe\n", ":2: [dicom] tls: found 'maybe', expected one of off|on|required"},
        {"[dicom]\ntls = on\n", ":2: [dicom] tls_cert: missing, tls = on needs the listener's certificate"},
        {"[dicom]\ntls = required\n", ":2: [dicom] tls_key: missing"},
        {"[dicom]\ntls = on\n", ":2: [dicom] tls_ca: missing, require_client_cert = true needs"},
        {"[dicom]\nport = 2762\ntls = on\n", ":3: [dicom] tls_port: 2762 is also the plain port"},
        {"[dicom]\ntls_profile = tls10\n", "expected one of bcp195-nd|bcp195|bcp195-ext"},
        {"[dicom]\ntls_cert = /nonexistent/cert.pem\n", ":2: [dicom] tls_cert: found '/nonexistent/cert.pem', expected a readable file"},
        {"[dicom]\ntls_key = /nonexistent/key.pem\n", "[dicom] tls_key: found '********'"},
        {"[triage]\nthresholds = COVID-19=1.5\n", "('COVID-19=1.5' is not one)"},
        {"[triage]\nthresholds = Normal 0.5\n", "('Normal 0.5' is not one)"},
        {"[report]\nformats = hl7,pdf\n", "expected a comma-separated list of hl7|fhir"},
        {"[report]\nprocessing_id = X\n", "expected one of P|T|D"},
        {"[webhook]\nurl = ftp://x\n", "expected an http:// or https:// URL"},
        {"[log]\nlevel = loud\n", "expected one of err|warning|notice|info|debug"},
        {"port = 1\n", ":1: key 'port' outside any section"},
        {"[dicom]\njust some words\n", ":2: 'just some words' is not a 'key = value' line"},
        {"[dicom\nport = 1\n", ":1: malformed section header '[dicom'"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cfg_config c;
        char *errors;
        cxr_err err = load(cases[i].text, &c, &errors);
        if (err != CXR_EPARSE || !strstr(errors, cases[i].expect))
            fail_msg("case %zu: got %d, errors:\n%s\nwanted: %s", i, err, errors, cases[i].expect);
        free(errors);
    }
}

static void test_all_errors_reported(void **state)
{
    struct cfg_config c;
    char *errors;
    int lines = 0;

    assert_int_equal(load("[dicom]\nport = x\nae_tilte = A\n[nope]\nk = v\n[http]\nport = 99999\n",
                          &c, &errors),
                     CXR_EPARSE);
    for (const char *p = errors; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 4); /* port, ae_tilte, [nope]; k in [nope] is not repeated; http port */
    assert_non_null(strstr(errors, ":2: [dicom] port"));
    assert_non_null(strstr(errors, ":3: [dicom] ae_tilte: unknown key"));
    assert_non_null(strstr(errors, ":4: unknown section [nope]"));
    assert_non_null(strstr(errors, ":7: [http] port"));
    free(errors);
}

static void test_huge_line(void **state)
{
    struct cfg_config c;
    char *errors;
    size_t n = 1 << 20;
    char *text = malloc(n + 64);

    assert_non_null(text);
    strcpy(text, "[webhook]\nurl = https://");
    memset(text + strlen(text), 'a', n);
    text[n + 24] = '\0';
    strcat(text, "\n[dicom]\nport = 5\n");
    assert_int_equal(load(text, &c, &errors), CXR_EPARSE);
    assert_non_null(strstr(errors, ":2: line is"));
    assert_non_null(strstr(errors, "at most 190 are allowed"));
    assert_null(strstr(errors, ":3:")); /* parsing went on */
    assert_int_equal(c.dicom_port, 5);
    assert_string_equal(c.webhook.url, "");
    free(errors);
    free(text);
}

static void test_binary_garbage(void **state)
{
    struct cfg_config c;
    char *errors;
    char text[] = "[dicom]\nport = 1\x01\x02\xff\n\x7f\x45LF\n";

    assert_int_equal(load(text, &c, &errors), CXR_EPARSE);
    free(errors);
}

static void test_override_and_dump(void **state)
{
    struct cfg_config c;
    struct cxr_buf errors, dump;

    cfg_defaults(&c);
    cxr_buf_init(&errors, 4096);
    assert_int_equal(cfg_set(&c, "dicom", "port", "104", "--port", &errors), CXR_OK);
    assert_int_equal(cfg_set(&c, "dicom", "port", "abc", "--port", &errors), CXR_EINVAL);
    assert_non_null(strstr(cxr_buf_str(&errors), "--port: found 'abc', expected a TCP port"));
    assert_int_equal(cfg_set(&c, "webhook", "hmac_key", "topsecret", "test", &errors), CXR_OK);
    cxr_buf_done(&errors);
    assert_int_equal(c.dicom_port, 104);

    cxr_buf_init(&dump, 1 << 16);
    assert_int_equal(cfg_dump(&c, &dump), CXR_OK);
    assert_non_null(strstr(cxr_buf_str(&dump), "[dicom]\nbind = 127.0.0.1\nport = 104\n"));
    assert_non_null(strstr(cxr_buf_str(&dump), "hmac_key = ********\n"));
    assert_null(strstr(cxr_buf_str(&dump), "topsecret"));
    cxr_buf_done(&dump);
}

static void test_example_file_is_valid(void **state)
{
    struct cfg_config c, d;
    struct cxr_buf errors;
    char path[1024];
    /* The source tree is compiled in (config/CMakeLists.txt), so this runs outside ctest too. */
    snprintf(path, sizeof(path), "%s/config/cxrtriage.conf.example", CXR_TEST_SOURCE_DIR);
    cfg_defaults(&c);
    cxr_buf_init(&errors, 1 << 16);
    assert_int_equal(cfg_load(&c, path, &errors), CXR_OK);
    cxr_buf_done(&errors);
    /* The example documents the defaults: loading it changes nothing. */
    cfg_defaults(&d);
    assert_memory_equal(&c, &d, sizeof(c));
}

static void test_ae_title_rule(void **state)
{
    assert_true(cfg_is_valid_ae_title("A"));
    assert_true(cfg_is_valid_ae_title("SIXTEEN_CHARS_AE"));
    assert_true(cfg_is_valid_ae_title("WITH SPACE"));
    assert_false(cfg_is_valid_ae_title(""));
    assert_false(cfg_is_valid_ae_title("    "));
    assert_false(cfg_is_valid_ae_title("SEVENTEEN_CHARS_A"));
    assert_false(cfg_is_valid_ae_title("TAB\tAE"));
    assert_false(cfg_is_valid_ae_title("BACK\\SLASH"));
    assert_false(cfg_is_valid_ae_title("\xc3\xa9t\xc3\xa9"));
}

static void collect(void *user, const char *name, double value)
{
    char *out = user;
    size_t n = strlen(out);
    snprintf(out + n, 256 - n, "[%s]=%.2f;", name, value);
}

static void test_thresholds_and_allow_list(void **state)
{
    char got[256] = "", bad[64];
    (void)state;

    assert_true(cfg_parse_thresholds(" COVID-19 = 0.25 ,Lung Opacity=1", collect, got, bad, sizeof(bad)));
    assert_string_equal(got, "[COVID-19]=0.25;[Lung Opacity]=1.00;");
    assert_true(cfg_parse_thresholds("", NULL, NULL, bad, sizeof(bad)));
    assert_false(cfg_parse_thresholds("A=0.5,=0.2", NULL, NULL, bad, sizeof(bad)));
    assert_string_equal(bad, "=0.2");
    assert_false(cfg_parse_thresholds("A=-0.1", NULL, NULL, bad, sizeof(bad)));

    assert_true(cfg_aet_allowed("", "ANY", "10.0.0.1"));
    assert_true(cfg_aet_allowed("ORTHANC, PACS1@127.0.0.1", "ORTHANC", "10.9.9.9"));
    assert_true(cfg_aet_allowed("ORTHANC, PACS1@127.0.0.1", "PACS1 ", "127.0.0.1"));
    assert_false(cfg_aet_allowed("ORTHANC, PACS1@127.0.0.1", "PACS1", "127.0.0.2"));
    assert_false(cfg_aet_allowed("ORTHANC, PACS1@127.0.0.1", "ORTHANC2", "127.0.0.1"));
    assert_false(cfg_aet_allowed("ORTHANC", "orthanc", "127.0.0.1"));
}

static void test_destinations(void **state)
{
    static struct cfg_config c; /* large: keep it off the stack */
    const struct cfg_dest *d[16];
    struct cxr_buf dump;
    char *errors;
    (void)state;

    assert_int_equal(load("[webhook]\nurl = https://a.example/r\nformat = fhir\n"
                          "[mllp]\nhost = 127.0.0.1\nport = 2600\n"
                          "[webhook second]\nurl = http://b.example/x\nbearer_token = tok\n"
                          "max_age = 3600\n[mllp lab-1]\nhost = ::1\n",
                          &c, &errors),
                     CXR_OK);
    free(errors);
    assert_int_equal(cfg_destinations(&c, d, 16), 4);
    assert_string_equal(d[0]->name, "webhook");
    assert_string_equal(d[0]->format, "fhir");
    assert_int_equal(d[1]->kind, CFG_DEST_MLLP);
    assert_int_equal(d[1]->port, 2600);
    assert_string_equal(d[1]->format, "hl7");
    assert_string_equal(d[2]->name, "second");
    assert_int_equal(d[2]->max_age, 3600);
    assert_int_equal(d[2]->timeout, 10);
    assert_string_equal(d[3]->name, "lab-1");
    assert_int_equal(d[3]->port, 2575);
    cxr_buf_init(&dump, 1 << 20);
    assert_int_equal(cfg_dump(&c, &dump), CXR_OK);
    assert_non_null(strstr(cxr_buf_str(&dump), "[webhook second]\nurl = http://b.example/x\n"));
    assert_non_null(strstr(cxr_buf_str(&dump), "bearer_token = ********"));
    assert_null(strstr(cxr_buf_str(&dump), "= tok\n"));
    cxr_buf_done(&dump);

    /* No destination configured: reports stay in the local outbox. */
    cfg_defaults(&c);
    assert_int_equal(cfg_destinations(&c, d, 16), 0);

    assert_int_equal(load("[webhook x]\nformat = hl7\n", &c, &errors), CXR_EPARSE);
    assert_non_null(strstr(errors, ":1: [webhook x] url: missing"));
    free(errors);
    assert_int_equal(load("[mllp]\nurl = http://x\n", &c, &errors), CXR_EPARSE);
    assert_non_null(strstr(errors, "[mllp] url: unknown key"));
    free(errors);
    assert_int_equal(load("[webhook a]\nurl = http://x\nurl = http://y\n", &c, &errors), CXR_EPARSE);
    assert_non_null(strstr(errors, ":3: [webhook a] url: duplicate key, first set on line 2"));
    free(errors);
    assert_int_equal(load("[webhook bad name!]\nurl = http://x\n", &c, &errors), CXR_EPARSE);
    assert_non_null(strstr(errors, "unknown section [webhook bad name!]"));
    free(errors);
    assert_int_equal(load("[webhook]\nformat = pdf\n", &c, &errors), CXR_EPARSE);
    assert_non_null(strstr(errors, "expected one of hl7|fhir|both, or empty"));
    free(errors);
}

static void test_http_exposure(void **state)
{
    struct cfg_config c;
    struct cxr_buf errors;
    const char *path;

    (void)state;
    assert_true(cfg_is_loopback("127.0.0.1"));
    assert_true(cfg_is_loopback("127.8.9.10"));
    assert_true(cfg_is_loopback("::1"));
    assert_true(cfg_is_loopback("localhost"));
    assert_false(cfg_is_loopback("0.0.0.0"));
    assert_false(cfg_is_loopback("::"));
    assert_false(cfg_is_loopback("10.1.2.3"));
    assert_false(cfg_is_loopback("host.example.org"));

    path = write_file("open.conf", "[http]\nport = 8443\nbind = 0.0.0.0\n");
    cfg_defaults(&c);
    cxr_buf_init(&errors, 1 << 16);
    assert_int_equal(cfg_load(&c, path, &errors), CXR_EPARSE);
    assert_non_null(strstr(cxr_buf_str(&errors), "open.conf:3: [http] bind: found '0.0.0.0'"));
    cxr_buf_done(&errors);

    /* disabled: nothing listens, nothing to refuse */
    path = write_file("off.conf", "[http]\nenabled = false\nbind = 0.0.0.0\n");
    cfg_defaults(&c);
    cxr_buf_init(&errors, 1 << 16);
    assert_int_equal(cfg_load(&c, path, &errors), CXR_OK);
    cxr_buf_done(&errors);

    /* TLS and auth together are enough; the check counts each missing piece */
    cfg_defaults(&c);
    cxr_buf_init(&errors, 1 << 16);
    (void)snprintf(c.http_bind, sizeof(c.http_bind), "192.0.2.1");
    assert_int_equal(cfg_check(&c, "x: ", &errors), 1);
    (void)snprintf(c.http_auth, sizeof(c.http_auth), "bearer");
    cxr_buf_reset(&errors);
    assert_int_equal(cfg_check(&c, "x: ", &errors), 2); /* no token, no TLS */
    (void)snprintf(c.http_token, sizeof(c.http_token), "t");
    (void)snprintf(c.http_tls_cert, sizeof(c.http_tls_cert), "/c.pem");
    (void)snprintf(c.http_tls_key, sizeof(c.http_tls_key), "/k.pem");
    cxr_buf_reset(&errors);
    assert_int_equal(cfg_check(&c, "x: ", &errors), 0);
    cxr_buf_done(&errors);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),          cmocka_unit_test(test_valid_file),
        cmocka_unit_test(test_empty_file),        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_each_error_kind),   cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_huge_line),         cmocka_unit_test(test_binary_garbage),
        cmocka_unit_test(test_override_and_dump), cmocka_unit_test(test_example_file_is_valid),
        cmocka_unit_test(test_ae_title_rule),     cmocka_unit_test(test_thresholds_and_allow_list),
        cmocka_unit_test(test_destinations),      cmocka_unit_test(test_http_exposure),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
