/* test_common.c - errors, logging, bounded buffers and file helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

static void test_strerror_exhaustive(void **state)
{
    for (int e = CXR_OK; e < CXR__LAST; e++) {
        const char *s = cxr_strerror((cxr_err)e);
        assert_non_null(s);
        assert_string_not_equal(s, "unknown error");
    }
    assert_string_equal(cxr_strerror(CXR__LAST), "unknown error");
}

static void test_buf_limit_frees(void **state)
{
    struct cxr_buf b;

    cxr_buf_init(&b, 10);
    assert_int_equal(cxr_buf_puts(&b, "hello"), CXR_OK);
    assert_int_equal(cxr_buf_printf(&b, "%d", 1234), CXR_OK);
    assert_string_equal(cxr_buf_str(&b), "hello1234");
    assert_int_equal(b.len, 9);
    assert_int_equal(cxr_buf_puts(&b, "xx"), CXR_ELIMIT);
    assert_null(b.data); /* freed on failure */
    assert_int_equal(b.len, 0);
    cxr_buf_done(&b);
}

static void test_buf_take(void **state)
{
    struct cxr_buf b;
    char *s = NULL;

    cxr_buf_init(&b, 100);
    assert_int_equal(cxr_buf_take(&b, &s), CXR_OK);
    assert_string_equal(s, "");
    free(s);
    assert_int_equal(cxr_buf_printf(&b, "a=%s", "b"), CXR_OK);
    assert_int_equal(cxr_buf_take(&b, &s), CXR_OK);
    assert_string_equal(s, "a=b");
    assert_null(b.data);
    free(s);
}

static void test_log_format_and_filter(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    assert_non_null(f);
    unsetenv("JOURNAL_STREAM");
    cxr_log_setup(CXR_LOG_INFO, false, f);
    cxr_log(CXR_LOG_INFO, "test.event", "key=%d name=%s", 42, cxr_log_phi("DOE^JOHN"));
    cxr_log(CXR_LOG_DEBUG, "test.hidden", "x=1");
    cxr_log(CXR_LOG_WARNING, "test.newline", "v='a\nb'");
    (void)fflush(f);
    assert_non_null(strstr(text, " INFO test.event key=42 name=[phi]\n"));
    assert_null(strstr(text, "DOE"));
    assert_null(strstr(text, "test.hidden"));
    /* A newline inside a value cannot start a forged line. */
    assert_non_null(strstr(text, "WARNING test.newline v='a b'\n"));
    assert_int_equal(fclose(f), 0);
    free(text);

    text = NULL;
    f = open_memstream(&text, &len);
    setenv("JOURNAL_STREAM", "8:1234", 1);
    cxr_log_setup(CXR_LOG_DEBUG, true, f);
    assert_int_equal(cxr_log_err(CXR_EIO, "test.err", "path='%s'", "x"), CXR_EIO);
    cxr_log(CXR_LOG_INFO, "test.phi", "name=%s", cxr_log_phi("DOE^JOHN"));
    (void)fflush(f);
    assert_string_equal(text, "<3>test.err path='x'\n<6>test.phi name=DOE^JOHN\n");
    assert_int_equal(fclose(f), 0);
    free(text);
    unsetenv("JOURNAL_STREAM");
    cxr_log_setup(CXR_LOG_INFO, false, NULL);
}

static void test_log_levels(void **state)
{
    assert_int_equal(cxr_log_level_from_name("debug"), CXR_LOG_DEBUG);
    assert_int_equal(cxr_log_level_from_name("WARNING"), CXR_LOG_WARNING);
    assert_int_equal(cxr_log_level_from_name("verbose"), -1);
    assert_string_equal(cxr_log_level_name(CXR_LOG_ERR), "ERR");
}

static void test_atomic_write_and_read(void **state)
{
    char dir[] = "/tmp/cxr_common_XXXXXX";
    char path[512], sub[256];
    char *data = NULL;
    size_t len = 0;
    struct stat st;

    assert_non_null(mkdtemp(dir));
    snprintf(sub, sizeof(sub), "%s/a/b/c", dir);
    assert_int_equal(cxr_mkdir_p(sub, 0700), CXR_OK);
    assert_true(cxr_is_dir(sub));
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    snprintf(path, sizeof(path), "%s/file", sub);
    assert_int_equal(cxr_file_write_atomic(path, "first", 5, 0600), CXR_OK);
    assert_int_equal(cxr_file_write_atomic(path, "second", 6, 0600), CXR_OK);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(cxr_file_read(path, 100, &data, &len), CXR_OK);
    assert_int_equal(len, 6);
    assert_string_equal(data, "second");
    free(data);
    assert_int_equal(cxr_file_read(path, 3, &data, &len), CXR_ELIMIT);
    snprintf(path, sizeof(path), "%s/missing", dir);
    assert_int_equal(cxr_file_read(path, 100, &data, &len), CXR_ENOTFOUND);

    assert_int_equal(cxr_path_join_safe(path, sizeof(path), dir, "ok.dcm"), CXR_OK);
    assert_int_equal(cxr_path_join_safe(path, sizeof(path), dir, "../etc"), CXR_EINVAL);
    assert_int_equal(cxr_path_join_safe(path, sizeof(path), dir, ".."), CXR_EINVAL);
    assert_int_equal(cxr_path_join_safe(path, sizeof(path), dir, ""), CXR_EINVAL);
    assert_int_equal(cxr_path_join_safe(path, 8, dir, "x"), CXR_ELIMIT);

    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
}

/* FIPS 180-4 known answers, the long one fed in uneven pieces across block boundaries. */
static void test_sha256(void **state)
{
    struct cxr_sha256 sh;
    uint8_t d[32];
    char hex[CXR_SHA256_HEX];
    static char a[1000];

    cxr_sha256_init(&sh);
    cxr_sha256_final(&sh, d);
    cxr_sha256_hex(d, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    cxr_sha256_init(&sh);
    cxr_sha256_update(&sh, "abc", 3);
    cxr_sha256_final(&sh, d);
    cxr_sha256_hex(d, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    memset(a, 'a', sizeof(a));
    cxr_sha256_init(&sh);
    for (size_t done = 0, step = 1; done < 1000000; done += step, step = step % 997 + 1) {
        if (step > 1000000 - done)
            step = 1000000 - done;
        cxr_sha256_update(&sh, a, step);
    }
    cxr_sha256_final(&sh, d);
    cxr_sha256_hex(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_exhaustive), cmocka_unit_test(test_buf_limit_frees),
        cmocka_unit_test(test_buf_take),            cmocka_unit_test(test_log_format_and_filter),
        cmocka_unit_test(test_log_levels),          cmocka_unit_test(test_atomic_write_and_read),
        cmocka_unit_test(test_sha256),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
