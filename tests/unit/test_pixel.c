/* test_pixel.c - the pixel path on images made here: PNG (8/16-bit, grey/colour/palette) and
 * JPEG decoding, VOI choices, area-averaged resize with aspect ratio, normalisation, the
 * PNG/JPEG verdict, and bad input (truncated, garbage, oversize). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <zlib.h>

#include "dicom.h"

/* An in-memory PNG of w x h; format is a libpng simplified-API format. */
static unsigned char *make_png(const void *pix, int w, int h, png_uint_32 format, size_t *ret_len)
{
    png_image img;
    png_alloc_size_t len = 0;
    unsigned char *mem;

    memset(&img, 0, sizeof(img));
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = format;
    assert_true(png_image_write_to_memory(&img, NULL, &len, 0, pix, 0, NULL));
    mem = malloc(len);
    assert_non_null(mem);
    assert_true(png_image_write_to_memory(&img, mem, &len, 0, pix, 0, NULL));
    *ret_len = len;
    return mem;
}

/* An in-memory JPEG (quality 100) of w x h, 1 or 3 components. */
static unsigned char *make_jpeg(unsigned char *pix, int w, int h, int comps, size_t *ret_len)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    unsigned char *mem = NULL;
    unsigned long len = 0;

    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &mem, &len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = comps == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 100, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(pix + (size_t)c.next_scanline * (size_t)w * (size_t)comps);
        (void)jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *ret_len = len;
    return mem;
}

static void test_detect(void **state)
{
    unsigned char buf[200] = {0};

    assert_int_equal(px_detect("\x89PNG\r\n\x1a\n", 8), PX_FMT_PNG);
    assert_int_equal(px_detect("\xff\xd8\xff\xe0", 4), PX_FMT_JPEG);
    buf[128] = 'D', buf[129] = 'I', buf[130] = 'C', buf[131] = 'M';
    assert_int_equal(px_detect(buf, sizeof(buf)), PX_FMT_DICOM);
    assert_int_equal(px_detect("hello world", 11), PX_FMT_UNKNOWN);
    assert_int_equal(px_detect("", 0), PX_FMT_UNKNOWN);
}

/* An 8-bit grey PNG is a display image: v / 255, no window; a 2:1 image is letterboxed. */
static void test_png8_identity_letterbox(void **state)
{
    enum { W = 512, H = 256, S = 64 };
    unsigned char *pix = malloc(W * H), *png;
    float out[S * S];
    struct px_verdict v;
    struct px_info info;
    char err[256];
    size_t len;

    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            pix[y * W + x] = (unsigned char)(x / 2); /* 0..255 ramp */
    png = make_png(pix, W, H, PNG_FORMAT_GRAY, &len);
    assert_int_equal(px_load_unit_mem_ex(png, len, "ramp.png", S, out, &v, &info, err,
                                         sizeof(err)),
                     CXR_OK);
    assert_true(v.applicable);
    assert_string_equal(v.reason, "");
    assert_int_equal(info.voi, PX_VOI_NONE);
    assert_int_equal(info.out_width, 64);
    assert_int_equal(info.out_height, 32);
    /* rows 0..15 and 48..63 are padding */
    for (int x = 0; x < S; x++) {
        assert_true(out[5 * S + x] == 0.0f);
        assert_true(out[60 * S + x] == 0.0f);
    }
    /* output column j averages source columns 8j..8j+7, i.e. values 4j..4j+3 -> 4j+1.5 */
    for (int j = 0; j < S; j++)
        assert_float_equal(out[30 * S + j], (4.0f * j + 1.5f) / 255.0f, 1e-5);
    free(png);
    free(pix);
}

/* A 16-bit PNG gets the 0.5..99.5 % window: outliers are clipped, the bulk spans [0,1]. */
static void test_png16_percentile(void **state)
{
    enum { W = 300, H = 300 };
    uint16_t *pix = malloc(W * H * 2);
    unsigned char *png;
    float *out = malloc(W * W * sizeof(float));
    struct px_info info;
    char err[256];
    size_t len;

    for (int i = 0; i < W * H; i++)
        pix[i] = (uint16_t)(1000 + i % 1000);
    pix[0] = 0;
    pix[1] = 65535;
    /* The simplified API treats 16-bit as linear but stores the values as they are. */
    png = make_png(pix, W, H, PNG_FORMAT_LINEAR_Y, &len);
    assert_int_equal(px_load_unit_mem_ex(png, len, "p16.png", W, out, NULL, &info, err,
                                         sizeof(err)),
                     CXR_OK);
    assert_int_equal(info.voi, PX_VOI_PERCENTILE);
    assert_true(out[0] == 0.0f && out[1] == 1.0f);
    /* the window covers ~1005..1995 */
    assert_true(info.window_width > 950 && info.window_width < 1010);
    assert_true(out[500] > 0.45f && out[500] < 0.55f);
    free(out);
    free(png);
    free(pix);
}

/* Colour becomes luminance; grey and colour JPEG decode close to their source. */
static void test_colour_and_jpeg(void **state)
{
    enum { W = 256, H = 256 };
    unsigned char *rgb = malloc(W * H * 3), *grey = malloc(W * H), *f;
    float out[W * W];
    struct px_verdict v;
    char err[256];
    size_t len;

    for (int i = 0; i < W * H; i++) {
        rgb[3 * i] = 200;
        rgb[3 * i + 1] = 100;
        rgb[3 * i + 2] = 50;
        grey[i] = (unsigned char)(i % W);
    }
    f = make_png(rgb, W, H, PNG_FORMAT_RGB, &len);
    assert_int_equal(px_load_unit_mem(f, len, "c.png", W, out, &v, err, sizeof(err)), CXR_OK);
    assert_float_equal(out[1000], (0.299f * 200 + 0.587f * 100 + 0.114f * 50) / 255.0f, 0.003);
    free(f);

    f = make_jpeg(grey, W, H, 1, &len);
    assert_int_equal(px_load_unit_mem(f, len, "g.jpg", W, out, &v, err, sizeof(err)), CXR_OK);
    assert_true(v.applicable);
    for (int x = 0; x < W; x += 17)
        assert_float_equal(out[100 * W + x], x / 255.0f, 3.0f / 255.0f);
    free(f);

    f = make_jpeg(rgb, W, H, 3, &len);
    assert_int_equal(px_load_unit_mem(f, len, "c.jpg", W, out, &v, err, sizeof(err)), CXR_OK);
    assert_float_equal(out[1000], (0.299f * 200 + 0.587f * 100 + 0.114f * 50) / 255.0f, 0.02);
    free(f);
    free(rgb);
    free(grey);
}

/* Small PNG: decoded, but the verdict says too small. */
static void test_small_png_verdict(void **state)
{
    unsigned char pix[100 * 80];
    float out[32 * 32];
    struct px_verdict v;
    char err[256];
    size_t len;
    unsigned char *f;

    memset(pix, 128, sizeof(pix));
    f = make_png(pix, 100, 80, PNG_FORMAT_GRAY, &len);
    assert_int_equal(px_load_unit_mem(f, len, "s.png", 32, out, &v, err, sizeof(err)), CXR_OK);
    assert_false(v.applicable);
    assert_non_null(strstr(v.reason, "too small"));
    free(f);
}

/* Truncated and corrupt files fail with the name and the problem; nothing leaks (ASan). */
static void test_bad_input(void **state)
{
    unsigned char pix[300 * 300];
    float *out = malloc(64 * 64 * sizeof(float));
    char err[256];
    size_t len;
    unsigned char *f;

    memset(pix, 7, sizeof(pix));
    f = make_png(pix, 300, 300, PNG_FORMAT_GRAY, &len);
    for (size_t cut = 8; cut < len; cut += len / 7 + 1) {
        err[0] = '\0';
        assert_int_not_equal(px_load_unit_mem(f, cut, "cut.png", 64, out, NULL, err, sizeof(err)),
                             CXR_OK);
        assert_non_null(strstr(err, "cut.png: "));
    }
    f[40] ^= 0xff; /* corrupt the IDAT: CRC error */
    assert_int_equal(px_load_unit_mem(f, len, "crc.png", 64, out, NULL, err, sizeof(err)),
                     CXR_EPARSE);
    free(f);
    f = make_jpeg(pix, 300, 300, 1, &len);
    assert_int_not_equal(px_load_unit_mem(f, len / 2, "half.jpg", 64, out, NULL, err,
                                          sizeof(err)),
                         CXR_OK);
    assert_non_null(strstr(err, "half.jpg: "));
    free(f);
    assert_int_equal(px_load_unit_mem("garbage!", 8, "g.bin", 64, out, NULL, err, sizeof(err)),
                     CXR_EPARSE);
    assert_string_equal(err, "g.bin: not a DICOM, PNG or JPEG file");
    assert_int_equal(px_load_unit_mem("x", 1, "x", 0, out, NULL, err, sizeof(err)), CXR_EINVAL);
    assert_int_equal(px_load_unit("/nonexistent/f.png", 64, out, NULL, err, sizeof(err)),
                     CXR_ENOTFOUND);
    assert_string_equal(err, "/nonexistent/f.png: no such file");
    free(out);
}

/* A PNG header claiming 100000 x 100000 is refused before any pixel buffer exists. */
static void test_png_huge_header(void **state)
{
    unsigned char pix[4] = {1, 2, 3, 4};
    float out[16];
    char err[256];
    size_t len;
    unsigned char *f = make_png(pix, 2, 2, PNG_FORMAT_GRAY, &len);

    /* IHDR width/height at bytes 16..23; fix the CRC so only the size is wrong. */
    f[16] = 0x00, f[17] = 0x01, f[18] = 0x86, f[19] = 0xa0;
    f[20] = 0x00, f[21] = 0x01, f[22] = 0x86, f[23] = 0xa0;
    {
        uint32_t crc = (uint32_t)crc32(0, f + 12, 17);
        f[29] = (unsigned char)(crc >> 24), f[30] = (unsigned char)(crc >> 16);
        f[31] = (unsigned char)(crc >> 8), f[32] = (unsigned char)crc;
    }
    assert_int_not_equal(px_load_unit_mem(f, len, "huge.png", 4, out, NULL, err, sizeof(err)),
                         CXR_OK);
    assert_non_null(strstr(err, "huge.png: "));
    free(f);
}

static void test_resize_and_normalize(void **state)
{
    float in[6 * 3], out[4 * 4], chw[2 * 16];
    struct px_spec spec = {.size = 4, .channels = 2, .mean = 0.5f, .std = 0.25f};
    int ow = 0, oh = 0;

    for (int i = 0; i < 18; i++)
        in[i] = 1.0f;
    /* 6x3 -> fits 4x2, centred at rows 1..2 */
    assert_int_equal(px_resize_area(in, 6, 3, 4, out, &ow, &oh), CXR_OK);
    assert_int_equal(ow, 4);
    assert_int_equal(oh, 2);
    for (int x = 0; x < 4; x++) {
        assert_float_equal(out[x], 0.0f, 1e-6);
        assert_float_equal(out[4 + x], 1.0f, 1e-5);
        assert_float_equal(out[8 + x], 1.0f, 1e-5);
        assert_float_equal(out[12 + x], 0.0f, 1e-6);
    }
    px_normalize(&spec, out, chw);
    assert_float_equal(chw[0], -2.0f, 1e-5);
    assert_float_equal(chw[4], 2.0f, 1e-5);
    assert_float_equal(chw[16 + 4], 2.0f, 1e-5);
}

/* The grey transform on synthetic headers: rescale, window, VOI LUT, MONOCHROME1. */
static void test_voi_paths(void **state)
{
    int32_t s[4] = {0, 100, 200, 300};
    struct px_image img = {.width = 4, .height = 1, .channels = 1, .bits = 12, .samples = s};
    struct dcm_info in;
    uint16_t lut[4] = {0, 1000, 3000, 4095};
    float *u = NULL;
    struct px_info pi;
    char err[128];

    memset(&in, 0, sizeof(in));
    (void)snprintf(in.photometric, sizeof(in.photometric), "MONOCHROME2");
    in.has_rescale = true;
    in.rescale_slope = 2.0;
    in.rescale_intercept = -100.0; /* modality: -100, 100, 300, 500 */
    in.n_windows = 1;
    in.window_center = 200.5; /* DICOM linear: 0 at <= 0, 1 above 400 */
    in.window_width = 401.0;
    assert_int_equal(px_to_unit(&img, &in, &u, &pi, err, sizeof(err), "t"), CXR_OK);
    assert_int_equal(pi.voi, PX_VOI_WINDOW);
    assert_float_equal(u[0], 0.0f, 1e-6);
    assert_float_equal(u[1], 0.25f, 1e-6);
    assert_float_equal(u[2], 0.75f, 1e-6);
    assert_float_equal(u[3], 1.0f, 1e-6);
    free(u);

    (void)snprintf(in.photometric, sizeof(in.photometric), "MONOCHROME1");
    in.n_windows = 0;
    in.has_voi_lut = true;
    in.voi_lut_entries = 4;
    in.voi_lut_first = 99; /* modality 100 -> entry 1 */
    in.voi_lut_bits = 12;
    in.voi_lut_data = lut;
    assert_int_equal(px_to_unit(&img, &in, &u, &pi, err, sizeof(err), "t"), CXR_OK);
    assert_int_equal(pi.voi, PX_VOI_LUT);
    assert_true(pi.inverted);
    assert_float_equal(u[0], 1.0f, 1e-6);          /* clamped to entry 0, inverted */
    assert_float_equal(u[1], 1.0f - 1000.0f / 4095.0f, 1e-6);
    assert_float_equal(u[3], 0.0f, 1e-6);
    free(u);
}

/* The gate's rules, one at a time, on a synthetic frontal chest CR header. */
static void gate_case(void (*edit)(struct dcm_info *), bool want, const char *reason)
{
    struct dcm_info in;
    struct px_verdict v;

    memset(&in, 0, sizeof(in));
    (void)snprintf(in.modality, sizeof(in.modality), "CR");
    (void)snprintf(in.photometric, sizeof(in.photometric), "MONOCHROME1");
    in.rows = 2000;
    in.columns = 1800;
    in.samples_per_pixel = 1;
    in.number_of_frames = 1;
    in.has_pixel_data = true;
    if (edit)
        edit(&in);
    dcm_gate(&in, &v);
    assert_int_equal(v.applicable, want);
    assert_string_equal(v.reason, reason);
}

static void e_dx_pa(struct dcm_info *in)
{
    (void)snprintf(in->modality, sizeof(in->modality), "DX");
    (void)snprintf(in->view_position, sizeof(in->view_position), "AP");
    (void)snprintf(in->body_part, sizeof(in->body_part), "chest");
}
static void e_sc(struct dcm_info *in)
{
    in->modality[0] = '\0';
    (void)snprintf(in->sop_class_uid, sizeof(in->sop_class_uid), "1.2.840.10008.5.1.4.1.1.7");
}
static void e_sc_ct(struct dcm_info *in)
{
    e_sc(in);
    (void)snprintf(in->modality, sizeof(in->modality), "CT");
}
static void e_ll(struct dcm_info *in)
{
    (void)snprintf(in->view_position, sizeof(in->view_position), "LL");
}
static void e_hand(struct dcm_info *in)
{
    (void)snprintf(in->body_part, sizeof(in->body_part), "HAND");
}
static void e_frames(struct dcm_info *in)
{
    in->number_of_frames = 3;
}
static void e_small(struct dcm_info *in)
{
    in->columns = 255;
}
static void e_rgb(struct dcm_info *in)
{
    (void)snprintf(in->photometric, sizeof(in->photometric), "RGB");
    in->samples_per_pixel = 3;
}
static void e_nopix(struct dcm_info *in)
{
    in->has_pixel_data = false;
    (void)snprintf(in->modality, sizeof(in->modality), "SR");
}

static void test_gate(void **state)
{
    gate_case(NULL, true, "");
    gate_case(e_dx_pa, true, "");
    gate_case(e_sc, true, "");
    gate_case(e_sc_ct, false, "not CR, DX or Secondary Capture (Modality 'CT')");
    gate_case(e_ll, false, "not a frontal view (ViewPosition 'LL')");
    gate_case(e_hand, false, "body part is not chest (BodyPartExamined 'HAND')");
    gate_case(e_frames, false, "several frames (3)");
    gate_case(e_small, false, "too small: 255x2000, under 256 pixels a side");
    gate_case(e_rgb, false, "colour where grayscale is required (RGB, 3 samples per pixel)");
    gate_case(e_nopix, false, "not an image: no Pixel Data (Modality 'SR')");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_png8_identity_letterbox),
        cmocka_unit_test(test_png16_percentile),
        cmocka_unit_test(test_colour_and_jpeg),
        cmocka_unit_test(test_small_png_verdict),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_png_huge_header),
        cmocka_unit_test(test_resize_and_normalize),
        cmocka_unit_test(test_voi_paths),
        cmocka_unit_test(test_gate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
