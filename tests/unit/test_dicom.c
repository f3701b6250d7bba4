/* test_dicom.c - the DICOM adapter on the real files of ../shared/data/dicom: attributes, every
 * lossless encoding of one image decoding to the same samples, several threads decoding at
 * once, truncated / bit-flipped copies failing cleanly (run under ASan + UBSan), and a mapped
 * file (the daemon's way in) giving what the same bytes in memory give.
 * Exits 77 (skipped) when the data set is absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dicom.h"

static char g_dir[4096];

static void path_of(char *out, size_t outlen, const char *name)
{
    (void)snprintf(out, outlen, "%s/%s", g_dir, name);
}

static struct px_image decode_file(const char *name)
{
    char path[4200], err[512];
    dcm_file *f = NULL;
    struct px_image img = {0};

    path_of(path, sizeof(path), name);
    if (dcm_file_open(path, &f, err, sizeof(err)) != CXR_OK)
        fail_msg("%s", err);
    if (dcm_file_decode(f, &img, err, sizeof(err)) != CXR_OK)
        fail_msg("%s", err);
    dcm_file_free(f);
    return img;
}

static void test_attributes(void **state)
{
    char path[4200], err[512];
    dcm_file *f = NULL;
    const struct dcm_info *in;
    struct px_verdict v;

    path_of(path, sizeof(path), "cxr_siim_12bit_rescale_window.dcm");
    assert_int_equal(dcm_file_open(path, &f, err, sizeof(err)), CXR_OK);
    in = dcm_file_info(f);
    assert_string_equal(in->modality, "CR");
    assert_string_equal(in->photometric, "MONOCHROME2");
    assert_string_equal(in->transfer_syntax, "1.2.840.10008.1.2.1");
    assert_int_equal(in->rows, 1024);
    assert_int_equal(in->columns, 1024);
    assert_int_equal(in->bits_stored, 12);
    assert_true(in->has_rescale);
    assert_true(in->rescale_intercept == -1024.0);
    assert_int_equal(in->n_windows, 1);
    assert_true(in->window_center == 1024.0 && in->window_width == 4096.0);
    assert_true(in->has_meta && in->has_pixel_data);
    assert_true(strlen(in->sop_instance_uid) > 10);
    dcm_gate(in, &v);
    assert_true(v.applicable);
    dcm_file_free(f);

    path_of(path, sizeof(path), "cxr_siim_16bit_voilut_seq.dcm");
    assert_int_equal(dcm_file_open(path, &f, err, sizeof(err)), CXR_OK);
    in = dcm_file_info(f);
    assert_true(in->has_voi_lut);
    assert_int_equal(in->voi_lut_entries, 4096);
    assert_int_equal(in->voi_lut_bits, 8);
    assert_non_null(in->voi_lut_data);
    dcm_file_free(f);

    path_of(path, sizeof(path), "bad/pydicom_test-SR.dcm");
    assert_int_equal(dcm_file_open(path, &f, err, sizeof(err)), CXR_OK);
    in = dcm_file_info(f);
    assert_string_equal(in->modality, "SR");
    assert_false(in->has_pixel_data);
    dcm_gate(in, &v);
    assert_false(v.applicable);
    {
        struct px_image img = {0};
        assert_int_equal(dcm_file_decode(f, &img, err, sizeof(err)), CXR_EUNSUPPORTED);
        assert_non_null(strstr(err, "not an image"));
    }
    dcm_file_free(f);
}

/* Every lossless encoding of the same image gives the same samples as explicit VR LE. */
static void check_same(const char *ref_name, const char *const *names, size_t n)
{
    struct px_image ref = decode_file(ref_name);

    for (size_t i = 0; i < n; i++) {
        struct px_image img = decode_file(names[i]);
        size_t count = (size_t)img.width * (size_t)img.height * (size_t)img.channels;
        assert_int_equal(img.width, ref.width);
        assert_int_equal(img.height, ref.height);
        assert_int_equal(img.channels, ref.channels);
        if (memcmp(img.samples, ref.samples, count * sizeof(int32_t)) != 0)
            fail_msg("%s decodes differently from %s", names[i], ref_name);
        px_image_done(&img);
    }
    px_image_done(&ref);
}

static void test_lossless_encodings_agree(void **state)
{
    static const char *const rg1[] = {
        "cxr_rg1_15bit_mono1_half_implicit_le.dcm", "cxr_rg1_15bit_mono1_half_explicit_be.dcm",
        "cxr_rg1_15bit_mono1_half_deflated.dcm",    "cxr_rg1_15bit_mono1_half_rle.dcm",
        "cxr_rg1_15bit_mono1_half_jpeg_lossless.dcm", "cxr_rg1_15bit_mono1_half_jpegls.dcm",
        "cxr_rg1_15bit_mono1_half_j2k_lossless.dcm",
    };
    static const char *const siim[] = {
        "cxr_siim_8bit_implicit_le.dcm",   "cxr_siim_8bit_explicit_be.dcm",
        "cxr_siim_8bit_deflated.dcm",      "cxr_siim_8bit_rle.dcm",
        "cxr_siim_8bit_jpeg_lossless_sv1.dcm", "cxr_siim_8bit_jpegls_lossless.dcm",
        "cxr_siim_8bit_j2k_lossless.dcm",
    };
    check_same("cxr_rg1_15bit_mono1_half_explicit_le.dcm", rg1, CXR_ARRAY_SIZE(rg1));
    check_same("cxr_siim_8bit_explicit_le.dcm", siim, CXR_ARRAY_SIZE(siim));
}

/* Several threads decoding different files at once give what one thread gives. */
struct job {
    const char *name;
    float *out;
    cxr_err err;
};

static void *run_job(void *arg)
{
    struct job *j = arg;
    char path[4200], err[512];

    path_of(path, sizeof(path), j->name);
    for (int k = 0; k < 3 && !j->err; k++)
        j->err = px_load_unit(path, 128, j->out, NULL, err, sizeof(err));
    return NULL;
}

static void test_threads(void **state)
{
    static const char *const names[] = {
        "cxr_rg1_15bit_mono1_half_jpegls.dcm", "cxr_rg1_15bit_mono1_half_jpeg_lossless.dcm",
        "cxr_siim_8bit_j2k_lossy.dcm",         "cxr_siim_8bit_rle.dcm",
        "cxr_siim_12bit_jpeg_extended.dcm",    "cxr_rg1_15bit_mono1_half_deflated.dcm",
    };
    enum { N = CXR_ARRAY_SIZE(names) };
    struct job jobs[N];
    pthread_t th[N];
    float *ref = malloc(128 * 128 * sizeof(float));
    char path[4200], err[512];

    assert_int_equal(dcm_global_init(), CXR_OK);
    for (size_t i = 0; i < N; i++) {
        jobs[i].name = names[i];
        jobs[i].out = malloc(128 * 128 * sizeof(float));
        jobs[i].err = CXR_OK;
        assert_int_equal(pthread_create(&th[i], NULL, run_job, &jobs[i]), 0);
    }
    for (size_t i = 0; i < N; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(jobs[i].err, CXR_OK);
        path_of(path, sizeof(path), names[i]);
        assert_int_equal(px_load_unit(path, 128, ref, NULL, err, sizeof(err)), CXR_OK);
        assert_memory_equal(ref, jobs[i].out, 128 * 128 * sizeof(float));
        free(jobs[i].out);
    }
    free(ref);
}

/* Cut and bit-flipped copies of small files of each codec: an error naming the input or a
 * result, never a crash, a leak or a huge allocation (ASan would abort). */
static void test_damaged_copies(void **state)
{
    static const char *const names[] = {
        "pydicom_MR_small.dcm",         "pydicom_MR_small_RLE.dcm",
        "pydicom_MR_small_jp2klossless.dcm", "pydicom_MR_small_jpeg_ls_lossless.dcm",
        "pydicom_SC_rgb_jpeg_dcmtk.dcm", "pydicom_image_dfl.dcm",
        "pydicom_JPEG-lossy.dcm",       "pydicomdata_liver_deflate.dcm",
        "pydicomdata_JLSL_08_07_0_1F.dcm", "pydicomdata_gdcm-US-ALOKA-16_big.dcm",
    };
    float *out = malloc(64 * 64 * sizeof(float));
    unsigned int seed = 12345;

    for (size_t i = 0; i < CXR_ARRAY_SIZE(names); i++) {
        char path[4200], err[512];
        char *data = NULL, *copy;
        size_t len = 0;

        path_of(path, sizeof(path), names[i]);
        assert_int_equal(px_read_file(path, &data, &len, err, sizeof(err)), CXR_OK);
        assert_int_equal(px_load_unit_mem(data, len, "x.dcm", 64, out, NULL, err, sizeof(err)),
                         CXR_OK);
        copy = malloc(len);
        for (size_t cut = 0; cut < len; cut += len / 23 + 1) {
            memcpy(copy, data, cut);
            err[0] = '\0';
            if (px_load_unit_mem(copy, cut, "cut.dcm", 64, out, NULL, err, sizeof(err)))
                assert_non_null(strstr(err, "cut.dcm: "));
        }
        for (int round = 0; round < 40; round++) {
            memcpy(copy, data, len);
            for (int k = 0; k < 8; k++) {
                seed = seed * 1103515245u + 12345u;
                copy[(seed >> 8) % len] ^= (char)(1u << ((seed >> 4) & 7));
            }
            err[0] = '\0';
            if (px_load_unit_mem(copy, len, "flip.dcm", 64, out, NULL, err, sizeof(err)))
                assert_non_null(strstr(err, "flip.dcm: "));
        }
        free(copy);
        free(data);
    }
    free(out);
}

/* Pixel data of odd length (one byte short of Rows x Columns x 2) in an explicit VR LE file:
 * refused with the byte counts, not read past its end. */
static void test_odd_length_pixel_data(void **state)
{
    static const unsigned char tag[4] = {0xe0, 0x7f, 0x10, 0x00};
    char path[4200], err[512];
    char *data = NULL;
    size_t len = 0, at = 0;
    float out[32 * 32];

    path_of(path, sizeof(path), "cxr_rg1_15bit_mono1_half_explicit_le.dcm");
    assert_int_equal(px_read_file(path, &data, &len, err, sizeof(err)), CXR_OK);
    for (size_t i = 132; i + 12 <= len; i++)
        if (!memcmp(data + i, tag, 4) && data[i + 4] == 'O' && data[i + 5] == 'W')
            at = i;
    assert_true(at > 0);
    {
        unsigned char *l = (unsigned char *)data + at + 8;
        uint32_t n = (uint32_t)l[0] | ((uint32_t)l[1] << 8) | ((uint32_t)l[2] << 16) |
                     ((uint32_t)l[3] << 24);
        assert_int_equal(n, 978u * 921u * 2u);
        n -= 1;
        l[0] = (unsigned char)n, l[1] = (unsigned char)(n >> 8);
        l[2] = (unsigned char)(n >> 16), l[3] = (unsigned char)(n >> 24);
        len = at + 12 + n;
    }
    assert_int_not_equal(px_load_unit_mem(data, len, "odd.dcm", 32, out, NULL, err, sizeof(err)),
                         CXR_OK);
    assert_non_null(strstr(err, "odd.dcm: "));
    free(data);
}

/* Segmented Palette Color LUTs with a bad first segment (the red LUT of the ALOKA file,
 * explicit VR big endian, edited in memory): a named error, never a read past the data. */
static void test_bad_segmented_lut(void **state)
{
    static const unsigned char tag[6] = {0x00, 0x28, 0x12, 0x21, 'O', 'W'};
    static const struct {
        unsigned short words[7];
        int n;
        const char *want;
    } cases[] = {
        {{1}, 1, "first segment is a linear one"},
        {{7}, 1, "unknown segment type"},
        {{0, 0xffff}, 2, "discrete segment runs past the end"},
        {{0, 1, 0x1234, 2, 1, 0xffff, 0xffff}, 7, "indirect segment points past the end"},
        {{0, 1, 0x1234, 2, 1, 3, 0}, 7, "indirect segment refers to another indirect"},
    };
    char path[4200], err[512];
    char *data = NULL;
    size_t len = 0, at = 0;

    path_of(path, sizeof(path), "pydicomdata_gdcm-US-ALOKA-16_big.dcm");
    assert_int_equal(px_read_file(path, &data, &len, err, sizeof(err)), CXR_OK);
    for (size_t i = 132; i + 12 + 14 <= len && !at; i++)
        if (!memcmp(data + i, tag, sizeof(tag)))
            at = i + 12;
    assert_true(at > 0);
    for (size_t c = 0; c < CXR_ARRAY_SIZE(cases); c++) {
        char *copy = malloc(len);
        dcm_file *f = NULL;
        struct px_image img = {0};

        memcpy(copy, data, len);
        for (int k = 0; k < cases[c].n; k++) {
            copy[at + 2 * (size_t)k] = (char)(cases[c].words[k] >> 8);
            copy[at + 2 * (size_t)k + 1] = (char)(cases[c].words[k] & 0xff);
        }
        assert_int_equal(dcm_file_open_mem(copy, len, "seg.dcm", &f, err, sizeof(err)), CXR_OK);
        assert_int_equal(dcm_file_decode(f, &img, err, sizeof(err)), CXR_EDICOM);
        if (!strstr(err, "seg.dcm: bad segmented Palette Color LUT 0") ||
            !strstr(err, cases[c].want))
            fail_msg("case %zu: %s", c, err);
        dcm_file_free(f);
        free(copy);
    }
    free(data);
}

/* Deflated Image Frame Compression with Rows edited in memory (liver_deflate.dcm, explicit VR
 * little endian): a frame that inflates to more or fewer bytes than Rows x Columns / 8 is an
 * error with the sizes, and the output buffer is never overrun. */
static void test_deflate_frame_size(void **state)
{
    static const unsigned char tag[6] = {0x28, 0x00, 0x10, 0x00, 'U', 'S'};
    static const struct {
        unsigned short rows;
        const char *want;
    } cases[] = {
        {256, "inflates to more than the frame's 16384 bytes"},
        {1024, "inflates to 32768 bytes"},
    };
    char path[4200], err[512];
    char *data = NULL;
    size_t len = 0, at = 0;

    path_of(path, sizeof(path), "pydicomdata_liver_deflate.dcm");
    assert_int_equal(px_read_file(path, &data, &len, err, sizeof(err)), CXR_OK);
    for (size_t i = 132; i + 10 <= len && !at; i++)
        if (!memcmp(data + i, tag, sizeof(tag)))
            at = i + 8;
    assert_true(at > 0);
    for (size_t c = 0; c < CXR_ARRAY_SIZE(cases); c++) {
        dcm_file *f = NULL;
        struct px_image img = {0};

        data[at] = (char)(cases[c].rows & 0xff);
        data[at + 1] = (char)(cases[c].rows >> 8);
        assert_int_equal(dcm_file_open_mem(data, len, "dfl.dcm", &f, err, sizeof(err)), CXR_OK);
        assert_int_equal(dcm_file_decode(f, &img, err, sizeof(err)), CXR_EDICOM);
        if (!strstr(err, "dfl.dcm: ") || !strstr(err, cases[c].want))
            fail_msg("rows %u: %s", cases[c].rows, err);
        dcm_file_free(f);
    }
    free(data);
}

/* One file through both entrances of the pixel path: read into memory (px_load_unit_mem_trace,
 * as classify and uploads) and mapped with DCMTK reading the file itself (px_load_unit_fd_trace,
 * as the daemon's workers). Same return, same error text, same verdict, same output floats. */
static void check_fd_same(const char *path, const char *name)
{
    enum { S = 96 };
    static float a[S * S], b[S * S];
    char ea[512] = "", eb[512] = "", *data = NULL;
    size_t len = 0;
    struct px_verdict va = {0}, vb = {0};
    struct px_info ia, ib;
    struct px_mapped m;
    cxr_err ra, rb;

    memset(&ia, 0, sizeof(ia));
    memset(&ib, 0, sizeof(ib));
    assert_int_equal(px_read_file(path, &data, &len, ea, sizeof(ea)), CXR_OK);
    ra = px_load_unit_mem_trace(data, len, name, S, a, &va, &ia, NULL, ea, sizeof(ea));
    free(data);
    assert_int_equal(px_map_file(path, &m, eb, sizeof(eb)), CXR_OK);
    assert_int_equal(m.len, len);
    assert_true(m.fd >= 0);
    rb = px_load_unit_fd_trace(m.data, m.len, m.fd, name, S, b, &vb, &ib, NULL, eb, sizeof(eb));
    px_unmap_file(&m);
    assert_int_equal(m.fd, -1);
    if (ra != rb || strcmp(ea, eb) != 0)
        fail_msg("%s: in memory %d '%s', mapped %d '%s'", name, ra, ea, rb, eb);
    if (ra != CXR_OK)
        return;
    assert_int_equal(va.applicable, vb.applicable);
    assert_string_equal(va.reason, vb.reason);
    assert_int_equal(ia.width, ib.width);
    assert_int_equal(ia.height, ib.height);
    assert_string_equal(ia.kind, ib.kind);
    for (size_t i = 0; i < S * S; i++)
        if (a[i] != b[i])
            fail_msg("%s: pixel %zu is %.9g mapped, %.9g read into memory", name, i,
                     (double)b[i], (double)a[i]);
}

static void test_mapped_file_same_result(void **state)
{
    static const char *const names[] = {
        "cxr_siim_12bit_rescale_window.dcm",     "cxr_rg1_15bit_mono1_half_explicit_le.dcm",
        "cxr_rg1_15bit_mono1_half_deflated.dcm", "cxr_rg1_15bit_mono1_half_j2k_lossless.dcm",
        "cxr_siim_8bit_rle.dcm",                 "cxr_siim_16bit_voilut_seq.dcm",
        "pydicom_SC_rgb_small_odd.dcm",          "pydicom_CT_small.dcm",
        "bad/bad_truncated_siim_half.dcm",       "bad/bad_rows_mismatch.dcm",
        "bad/bad_not_dicom_png_renamed.dcm",     "bad/bad_random_with_dicm_preamble.dcm",
        "bad/pydicom_no_meta.dcm",               "bad/bad_header_only_siim.dcm",
    };
    char path[4200];

    assert_int_equal(dcm_global_init(), CXR_OK);
    for (size_t i = 0; i < CXR_ARRAY_SIZE(names); i++) {
        path_of(path, sizeof(path), names[i]);
        check_fd_same(path, names[i]);
    }
}

/* A mapped file unlinked before it is decoded still decodes (DCMTK reads the pixel data through
 * the descriptor, not the name); a missing file, a directory and an empty file give errors that
 * name them. */
static void test_mapped_file_edges(void **state)
{
    enum { S = 64 };
    static float a[S * S], b[S * S];
    const char *t = getenv("TMPDIR");
    char dir[4200], copy[4300], src[4200], err[512], *data = NULL;
    size_t len = 0;
    struct px_mapped m;
    FILE *f;

    (void)snprintf(dir, sizeof(dir), "%s/cxr-map-XXXXXX", t && *t ? t : "/tmp");
    assert_non_null(mkdtemp(dir));
    path_of(src, sizeof(src), "cxr_siim_12bit_rescale_window.dcm");
    assert_int_equal(px_read_file(src, &data, &len, err, sizeof(err)), CXR_OK);
    assert_int_equal(px_load_unit_mem(data, len, "x", S, a, NULL, err, sizeof(err)), CXR_OK);
    (void)snprintf(copy, sizeof(copy), "%s/x.dcm", dir);
    f = fopen(copy, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    free(data);
    assert_int_equal(px_map_file(copy, &m, err, sizeof(err)), CXR_OK);
    assert_int_equal(unlink(copy), 0);
    assert_int_equal(px_load_unit_fd_trace(m.data, m.len, m.fd, "x", S, b, NULL, NULL, NULL, err,
                                           sizeof(err)),
                     CXR_OK);
    px_unmap_file(&m);
    assert_memory_equal(a, b, sizeof(a));

    assert_int_equal(px_map_file(copy, &m, err, sizeof(err)), CXR_ENOTFOUND);
    assert_non_null(strstr(err, "x.dcm: no such file"));
    assert_int_equal(px_map_file(dir, &m, err, sizeof(err)), CXR_EIO);
    assert_non_null(strstr(err, "not a regular file"));
    f = fopen(copy, "wb");
    assert_non_null(f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(px_map_file(copy, &m, err, sizeof(err)), CXR_OK);
    assert_int_equal(m.len, 0);
    assert_int_not_equal(px_load_unit_fd_trace(m.data, m.len, m.fd, "empty.dcm", S, b, NULL, NULL,
                                               NULL, err, sizeof(err)),
                         CXR_OK);
    assert_non_null(strstr(err, "empty.dcm: "));
    px_unmap_file(&m);
    assert_int_equal(unlink(copy), 0);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const char *d = getenv("CXR_DATA_DIR");
    char probe[4200];
    FILE *f;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attributes),
        cmocka_unit_test(test_lossless_encodings_agree),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_damaged_copies),
        cmocka_unit_test(test_odd_length_pixel_data),
        cmocka_unit_test(test_bad_segmented_lut),
        cmocka_unit_test(test_deflate_frame_size),
        cmocka_unit_test(test_mapped_file_same_result),
        cmocka_unit_test(test_mapped_file_edges),
    };

    (void)snprintf(g_dir, sizeof(g_dir), "%s/dicom", d ? d : "");
    (void)snprintf(probe, sizeof(probe), "%s/MANIFEST.csv", g_dir);
    f = d ? fopen(probe, "r") : NULL;
    if (!f) {
        printf("SKIPPED: needs the shared data set at '%s' (set -DCXR_DATA_DIR)\n", g_dir);
        return 77;
    }
    (void)fclose(f);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
