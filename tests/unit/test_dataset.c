/* test_dataset.c - data set scanning, CSV, groups, the stratified grouped split, augmentation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "augment.h"
#include "dataset.h"

static char root[64];

static void touch(const char *rel)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", root, rel);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fclose(f), 0);
}

static void mkd(const char *rel)
{
    char path[256];

    snprintf(path, sizeof(path), "%s/%s", root, rel);
    assert_int_equal(mkdir(path, 0700), 0);
}

static int setup(void **state)
{
    char name[64];

    snprintf(root, sizeof(root), "/tmp/cxr_ds_XXXXXX");
    if (!mkdtemp(root))
        return -1;
    mkd("data");
    mkd("data/Normal");
    mkd("data/COVID");
    mkd("data/Viral_Pneumonia");
    /* 40 COVID images of 10 patients (4 each), 60 Normal singletons, 20 viral. */
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "data/COVID/p%02d_img%d.png", i / 4, i % 4);
        touch(name);
    }
    for (int i = 0; i < 60; i++) {
        snprintf(name, sizeof(name), "data/Normal/n%03d.jpg", i);
        touch(name);
    }
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof(name), "data/Viral_Pneumonia/v%03d.dcm", i);
        touch(name);
    }
    touch("data/README.md");
    touch("data/Normal/.hidden.png");
    touch("data/Normal/notes.txt");
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static void scan(struct ds *d)
{
    struct cxr_buf err;
    char dir[128];

    snprintf(dir, sizeof(dir), "%s/data", root);
    cxr_buf_init(&err, 1 << 16);
    ds_init(d);
    assert_int_equal(ds_scan_dir(d, dir, &err), CXR_OK);
    assert_string_equal(cxr_buf_str(&err), "");
    cxr_buf_done(&err);
}

static void test_scan(void **state)
{
    struct ds d;
    char disp[64];

    scan(&d);
    assert_int_equal(d.nclasses, 3);
    assert_string_equal(d.classes[0], "COVID");
    assert_string_equal(d.classes[1], "Normal");
    assert_string_equal(d.classes[2], "Viral_Pneumonia");
    assert_int_equal(d.n, 120); /* hidden file and .txt skipped */
    assert_int_equal(ds_count(&d, -1, 0), 40);
    assert_int_equal(ds_count(&d, -1, 1), 60);
    ds_display_name(d.classes[0], disp, sizeof(disp));
    assert_string_equal(disp, "COVID-19");
    ds_display_name(d.classes[2], disp, sizeof(disp));
    assert_string_equal(disp, "Viral Pneumonia");
    ds_done(&d);
}

static void test_scan_errors(void **state)
{
    struct ds d;
    struct cxr_buf err;
    char dir[128];
    const char *fixed[] = {"COVID", "Normal", "Viral Pneumonia", "Lung_Opacity"};

    /* A model with fixed classes: "Viral_Pneumonia" matches "Viral Pneumonia"; a new folder
     * would be named. */
    mkd("data2");
    mkd("data2/COVID");
    mkd("data2/Cats");
    mkd("data2/Normal");
    touch("data2/COVID/a.png");
    touch("data2/Cats/c.png");
    snprintf(dir, sizeof(dir), "%s/data2", root);
    cxr_buf_init(&err, 1 << 16);
    ds_init(&d);
    assert_int_equal(ds_set_classes(&d, fixed, 4), CXR_OK);
    assert_int_equal(ds_scan_dir(&d, dir, &err), CXR_EINVAL);
    assert_non_null(strstr(cxr_buf_str(&err), "data2/Cats: unknown class folder 'Cats'"));
    assert_non_null(strstr(cxr_buf_str(&err), "data2/Normal: class folder 'Normal' holds no images"));
    ds_done(&d);
    cxr_buf_done(&err);

    cxr_buf_init(&err, 1 << 16);
    ds_init(&d);
    assert_int_equal(ds_scan_dir(&d, "/nonexistent/dir", &err), CXR_ENOTFOUND);
    assert_non_null(strstr(cxr_buf_str(&err), "/nonexistent/dir: cannot read the data folder"));
    ds_done(&d);
    cxr_buf_done(&err);
}

static void test_csv(void **state)
{
    struct ds d;
    struct cxr_buf err;
    char path[128];
    FILE *f;

    snprintf(path, sizeof(path), "%s/list.csv", root);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("path,label,group\nimgs/a.png,COVID,p1\nimgs/b.png,COVID,p1\n/abs/c.png,Normal\n"
          "\nbroken-line\n", f);
    assert_int_equal(fclose(f), 0);
    cxr_buf_init(&err, 1 << 16);
    ds_init(&d);
    assert_int_equal(ds_read_csv(&d, path, &err), CXR_EPARSE);
    assert_non_null(strstr(cxr_buf_str(&err), "list.csv:6: expected 'path,label[,group]'"));
    assert_int_equal(d.n, 3);
    assert_int_equal(d.nclasses, 2);
    assert_non_null(strstr(d.items[0].path, "/imgs/a.png"));
    assert_string_equal(d.items[0].group, "p1");
    assert_string_equal(d.items[2].path, "/abs/c.png");
    assert_string_equal(d.items[2].group, "/abs/c.png");
    ds_done(&d);
    cxr_buf_done(&err);
}

static void test_split_grouped_stratified(void **state)
{
    struct ds d, e;
    struct cxr_buf err;
    char splitfile[128];

    scan(&d);
    cxr_buf_init(&err, 1 << 16);
    assert_int_equal(ds_groups_from_regex(&d, "^(p[0-9]+)_", &err), CXR_OK);
    assert_int_equal(ds_split(&d, 0.15, 0.15, 42), CXR_OK);
    /* Every class is represented in every split, near its fraction. */
    for (int c = 0; c < 3; c++) {
        size_t tot = ds_count(&d, -1, c), te = ds_count(&d, DS_TEST, c);
        assert_true(ds_count(&d, DS_TRAIN, c) > 0 && ds_count(&d, DS_VAL, c) > 0 && te > 0);
        assert_true(te >= (size_t)(0.15 * (double)tot) && te <= (size_t)(0.15 * (double)tot) + 4);
    }
    /* No patient straddles two splits. */
    for (size_t i = 0; i < d.n; i++)
        for (size_t j = i + 1; j < d.n; j++)
            if (!strcmp(d.items[i].group, d.items[j].group))
                assert_int_equal(d.items[i].split, d.items[j].split);
    /* The same seed gives the same split; the split file round-trips. */
    snprintf(splitfile, sizeof(splitfile), "%s/split.csv", root);
    assert_int_equal(ds_split_write(&d, splitfile), CXR_OK);
    scan(&e);
    assert_int_equal(ds_groups_from_regex(&e, "^(p[0-9]+)_", &err), CXR_OK);
    assert_int_equal(ds_split(&e, 0.15, 0.15, 42), CXR_OK);
    for (size_t i = 0; i < d.n; i++)
        assert_int_equal(d.items[i].split, e.items[i].split);
    assert_int_equal(ds_split(&e, 0.15, 0.15, 7), CXR_OK);
    {
        int differ = 0;
        for (size_t i = 0; i < d.n; i++)
            differ += d.items[i].split != e.items[i].split;
        assert_true(differ > 0);
    }
    assert_int_equal(ds_split_read(&e, splitfile, true, &err), CXR_OK);
    for (size_t i = 0; i < d.n; i++)
        assert_int_equal(d.items[i].split, e.items[i].split);
    assert_int_equal(ds_groups_from_regex(&e, "([", &err), CXR_EINVAL);
    assert_int_equal(ds_split(&e, 0.6, 0.5, 1), CXR_EINVAL);
    ds_done(&d);
    ds_done(&e);
    cxr_buf_done(&err);
}

static void test_augment(void **state)
{
    enum { S = 64 };
    static float in[S * S], out[S * S], out2[S * S];
    struct aug_params p = {0};
    uint64_t rng = 1, rng2 = 1;
    double mi = 0, mo = 0;

    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++)
            in[y * S + x] = (float)x / (S - 1);
    /* All ranges zero: the identity. */
    aug_apply(&p, &rng, in, out, S);
    for (int i = 0; i < S * S; i++)
        assert_true(fabsf(out[i] - in[i]) < 1e-5f);
    /* Flip only: left-right mirrored. */
    p.hflip = true;
    for (int k = 0; k < 4; k++) {
        aug_apply(&p, &rng, in, out, S);
        if (out[0] > 0.5f)
            break;
    }
    assert_true(fabsf(out[0] - 1.0f) < 1e-5f && fabsf(out[S - 1]) < 1e-5f);
    /* Gamma only: out = in^g for one g per image (the table's interpolation within 2e-3). */
    {
        struct aug_params g = {0};
        g.gamma = 0.2f;
        aug_apply(&g, &rng, in, out, S);
        {
            const int mid = S / 2; /* in = 32/63 */
            const double ge = log((double)out[mid]) / log((double)in[mid]);
            assert_true(ge > exp(-0.21) && ge < exp(0.21));
            for (int i = 1; i < S; i++)
                assert_true(fabs(out[i] - pow(in[i], ge)) < 2e-3);
        }
    }
    /* Defaults: values stay in [0,1], the picture stays close, and the seed repeats it. */
    aug_defaults(&p);
    rng = rng2 = 99;
    aug_apply(&p, &rng, in, out, S);
    aug_apply(&p, &rng2, in, out2, S);
    assert_memory_equal(out, out2, sizeof(out));
    for (int i = 0; i < S * S; i++) {
        assert_true(out[i] >= 0.0f && out[i] <= 1.0f);
        mi += in[i];
        mo += out[i];
    }
    assert_true(fabs(mi - mo) / mi < 0.35);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan), cmocka_unit_test(test_scan_errors),
        cmocka_unit_test(test_csv), cmocka_unit_test(test_split_grouped_stratified),
        cmocka_unit_test(test_augment),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
