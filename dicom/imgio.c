/*
 * imgio.c - PNG and JPEG in and out for the pixel path: format detection by content, decoding
 * with libpng and libjpeg-turbo into struct px_image, the 8-bit PNG writer of
 * `cxrtriage preprocess`, and the Grad-CAM heat-map pictures (blended over the image for the
 * CLI, or an RGBA overlay for the web page).
 *
 * Both decoders read from memory, install error handlers that longjmp back here (the libraries'
 * defaults print and exit), and check the image size against PX_MAX_SIDE and
 * DCM_MAX_DECODED_BYTES before allocating anything for the pixels. Nothing here logs.
 */
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "dicom.h"
#include "dicom_int.h"

enum px_format px_detect(const void *data, size_t len)
{
    const unsigned char *p = data;
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

    if (len >= 8 && !memcmp(p, png_sig, 8))
        return PX_FMT_PNG;
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return PX_FMT_JPEG;
    if (len >= 132 && !memcmp(p + 128, "DICM", 4))
        return PX_FMT_DICOM;
    /* A dataset without the File Meta header starts with a group 0x0002 or 0x0008 tag, little
     * endian (what DCMTK itself accepts for such files). */
    if (len >= 8 && (p[0] == 0x08 || p[0] == 0x02) && p[1] == 0x00 && p[3] == 0x00)
        return PX_FMT_DICOM;
    return PX_FMT_UNKNOWN;
}

void px_image_done(struct px_image *img)
{
    if (!img)
        return;
    free(img->samples);
    img->samples = NULL;
}

/* Checks w x h x ch against the limits and allocates the sample buffer. */
cxr_err px_image_alloc(struct px_image *img, int w, int h, int ch, const char *name, char *errbuf,
                       size_t errlen)
{
    size_t n;

    if (w <= 0 || h <= 0 || w > PX_MAX_SIDE || h > PX_MAX_SIDE || ch < 1 || ch > 4)
        return px_err(errbuf, errlen, CXR_ELIMIT, "%s: image size %dx%d (x%d) is out of range",
                      name, w, h, ch);
    n = (size_t)w * (size_t)h * (size_t)ch;
    if (n > DCM_MAX_DECODED_BYTES / sizeof(int32_t))
        return px_err(errbuf, errlen, CXR_ELIMIT,
                      "%s: decoded image %dx%d would exceed the %zu MiB limit", name, w, h,
                      DCM_MAX_DECODED_BYTES >> 20);
    img->samples = malloc(n * sizeof(int32_t));
    if (!img->samples)
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory for %dx%d pixels", name, w, h);
    img->width = w;
    img->height = h;
    img->channels = ch;
    img->is_signed = false;
    return CXR_OK;
}

/* ---- PNG ---------------------------------------------------------------------------------- */

struct png_src {
    const unsigned char *data;
    size_t len, pos;
    char msg[128];
};

static void png_read_mem(png_structp png, png_bytep out, size_t n)
{
    struct png_src *src = png_get_io_ptr(png);

    if (n > src->len - src->pos)
        png_error(png, "file is truncated");
    memcpy(out, src->data + src->pos, n);
    src->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    struct png_src *src = png_get_error_ptr(png);

    (void)snprintf(src->msg, sizeof(src->msg), "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* True when every chunk of the PNG in p[0..len) (after the 8-byte signature, up to IEND) has its
 * data and CRC inside len. libpng allocates a chunk's length before it reads the chunk (a
 * 154-byte file claiming a 2 GB tEXt made it allocate 2 GB, png_set_chunk_malloc_max
 * notwithstanding; found by tests/fuzz/fuzz_dicom.c), so lengths are checked here first. */
static bool png_chunks_fit(const unsigned char *p, size_t len)
{
    size_t pos = 8;

    while (len - pos >= 8) {
        size_t n = ((size_t)p[pos] << 24) | ((size_t)p[pos + 1] << 16) | ((size_t)p[pos + 2] << 8) |
                   p[pos + 3];
        if (len - pos < 12 || n > len - pos - 12)
            return false;
        if (memcmp(p + pos + 4, "IEND", 4) == 0)
            return true;
        pos += 12 + n;
    }
    return true; /* no IEND: libpng reports what is missing */
}

cxr_err px_image_read_png(const void *data, size_t len, const char *name, struct px_image *ret,
                          char *errbuf, size_t errlen)
{
    struct png_src src = {.data = data, .len = len, .pos = 0, .msg = ""};
    png_structp png;
    png_infop info = NULL;
    struct px_image img = {0};
    png_bytep *volatile rowp = NULL;
    png_bytep volatile rows = NULL;
    volatile cxr_err err = CXR_OK;

    if (len < 8 || !png_chunks_fit(data, len))
        return px_err(errbuf, errlen, CXR_EPARSE, "%s: bad PNG: a chunk runs past the end", name);
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    if (!png)
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name);
    info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name);
    }
    if (setjmp(png_jmpbuf(png))) {
        err = px_err(errbuf, errlen, CXR_EPARSE, "%s: bad PNG: %s", name, src.msg);
        goto out_free;
    }
    png_set_user_limits(png, PX_MAX_SIDE, PX_MAX_SIDE);
    png_set_chunk_malloc_max(png, 64u << 20);
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    {
        png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
        int depth = png_get_bit_depth(png, info), ctype = png_get_color_type(png, info);
        int ch, bytes;
        size_t rowbytes;

        png_set_expand(png); /* palette -> RGB, grey 1/2/4 -> 8, tRNS -> alpha */
        png_set_strip_alpha(png);
        if (ctype == PNG_COLOR_TYPE_PALETTE)
            depth = 8;
        ch = (ctype & PNG_COLOR_MASK_COLOR) ? 3 : 1;
        bytes = depth == 16 ? 2 : 1;
        (void)png_set_interlace_handling(png);
        png_read_update_info(png, info);
        rowbytes = png_get_rowbytes(png, info);
        if (rowbytes != (size_t)w * (size_t)ch * (size_t)bytes) {
            err = px_err(errbuf, errlen, CXR_EUNSUPPORTED, "%s: unexpected PNG layout", name);
            goto out_free;
        }
        err = px_image_alloc(&img, (int)w, (int)h, ch, name, errbuf, errlen);
        if (err || !img.samples)
            goto out_free;
        img.bits = depth < 8 ? 8 : depth;
        rows = malloc(rowbytes * h);
        rowp = malloc(sizeof(*rowp) * h);
        if (!rows || !rowp) {
            err = px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name);
            goto out_free;
        }
        for (png_uint_32 y = 0; y < h; y++)
            rowp[y] = rows + (size_t)y * rowbytes;
        png_read_image(png, rowp);
        for (size_t i = 0, n = (size_t)w * h * (size_t)ch; i < n; i++)
            img.samples[i] = bytes == 2 ? (int32_t)((rows[2 * i] << 8) | rows[2 * i + 1])
                                        : (int32_t)rows[i];
    }
    *ret = img;
    img.samples = NULL;
out_free:
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    free(rowp);
    px_image_done(&img);
    return err;
}

/* ---- JPEG --------------------------------------------------------------------------------- */

struct jpeg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX];
};

static void jpeg_on_error(j_common_ptr cinfo)
{
    struct jpeg_err *je = (struct jpeg_err *)cinfo->err;

    je->mgr.format_message(cinfo, je->msg);
    longjmp(je->jmp, 1);
}

static void jpeg_on_message(j_common_ptr cinfo)
{
    (void)cinfo;
}

/* libjpeg only warns about corrupt or truncated data and fills the rest with grey; a medical
 * image with made-up pixels is an error here. Trace messages (level > 0) are ignored. */
static void jpeg_on_emit(j_common_ptr cinfo, int level)
{
    if (level < 0)
        jpeg_on_error(cinfo);
}

cxr_err px_image_read_jpeg(const void *data, size_t len, const char *name, struct px_image *ret,
                           char *errbuf, size_t errlen)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_err je;
    struct px_image img = {0};
    unsigned char *volatile row = NULL;
    volatile cxr_err err = CXR_OK;
    int ch;

    if (len > (size_t)0xffffffffu)
        return px_err(errbuf, errlen, CXR_ELIMIT, "%s: JPEG file too large", name);
    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jpeg_on_error;
    je.mgr.output_message = jpeg_on_message;
    je.mgr.emit_message = jpeg_on_emit;
    je.msg[0] = '\0';
    if (setjmp(je.jmp)) {
        err = px_err(errbuf, errlen, CXR_EPARSE, "%s: bad JPEG: %s", name, je.msg);
        goto out_free;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    (void)jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_GRAYSCALE) {
        cinfo.out_color_space = JCS_GRAYSCALE;
        ch = 1;
    } else if (cinfo.jpeg_color_space == JCS_YCbCr || cinfo.jpeg_color_space == JCS_RGB) {
        cinfo.out_color_space = JCS_RGB;
        ch = 3;
    } else {
        err = px_err(errbuf, errlen, CXR_EUNSUPPORTED, "%s: JPEG colour space %d is not supported",
                     name, (int)cinfo.jpeg_color_space);
        goto out_free;
    }
    err = px_image_alloc(&img, (int)cinfo.image_width, (int)cinfo.image_height, ch, name, errbuf,
                         errlen);
    if (err)
        goto out_free;
    img.bits = 8;
    (void)jpeg_start_decompress(&cinfo);
    if ((int)cinfo.output_components != ch || (int)cinfo.output_width != img.width ||
        (int)cinfo.output_height != img.height) {
        err = px_err(errbuf, errlen, CXR_EPARSE, "%s: JPEG output does not match its header", name);
        goto out_free;
    }
    row = img.width > 0 ? malloc((size_t)img.width * (size_t)ch) : NULL;
    if (!row) {
        err = px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name);
        goto out_free;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW rp = row;
        size_t y = cinfo.output_scanline, n = (size_t)img.width * (size_t)ch;

        if (jpeg_read_scanlines(&cinfo, &rp, 1) != 1) {
            err = px_err(errbuf, errlen, CXR_EPARSE, "%s: JPEG data ends early", name);
            goto out_free;
        }
        for (size_t i = 0; i < n; i++)
            img.samples[y * n + i] = row[i];
    }
    (void)jpeg_finish_decompress(&cinfo);
    *ret = img;
    img.samples = NULL;
out_free:
    jpeg_destroy_decompress(&cinfo);
    free(row);
    px_image_done(&img);
    return err;
}

/* ---- PNG writer --------------------------------------------------------------------------- */

/* Encodes width x height pixels of `format` (PNG_FORMAT_GRAY, _RGB or _RGBA) into a malloc'ed
 * PNG; what names the output in messages. */
static cxr_err encode_png(const unsigned char *pix, int width, int height, png_uint_32 format,
                          const char *what, unsigned char **ret_png, size_t *ret_len,
                          char *errbuf, size_t errlen)
{
    png_image image;
    unsigned char *mem = NULL;
    png_alloc_size_t memlen = 0;
    cxr_err err = CXR_OK;

    memset(&image, 0, sizeof(image));
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)width;
    image.height = (png_uint_32)height;
    image.format = format;
    if (!png_image_write_to_memory(&image, NULL, &memlen, 0, pix, 0, NULL) || memlen == 0) {
        err = px_err(errbuf, errlen, CXR_EIO, "%s: cannot encode PNG: %s", what, image.message);
        goto out;
    }
    mem = malloc(memlen);
    if (!mem) {
        err = px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", what);
        goto out;
    }
    if (!png_image_write_to_memory(&image, mem, &memlen, 0, pix, 0, NULL)) {
        err = px_err(errbuf, errlen, CXR_EIO, "%s: cannot encode PNG: %s", what, image.message);
        goto out;
    }
    *ret_png = mem;
    *ret_len = memlen;
    mem = NULL;
out:
    png_image_free(&image);
    free(mem);
    return err;
}

static unsigned char to_byte(float v)
{
    v = v * 255.0f + 0.5f;
    return (unsigned char)(v > 0.0f ? (v < 255.0f ? v : 255.0f) : 0.0f); /* NaN -> 0 */
}

cxr_err px_png_mem(const float *unit, int size, unsigned char **ret_png, size_t *ret_len,
                   char *errbuf, size_t errlen)
{
    unsigned char *pix;
    size_t n = (size_t)size * (size_t)size;
    cxr_err err;

    if (!unit || !ret_png || !ret_len || size <= 0 || size > PX_MAX_SIZE)
        return px_err(errbuf, errlen, CXR_EINVAL, "PNG: bad image (size %d)", size);
    pix = malloc(n);
    if (!pix)
        return px_err(errbuf, errlen, CXR_ENOMEM, "PNG: out of memory");
    for (size_t i = 0; i < n; i++)
        pix[i] = to_byte(unit[i]);
    err = encode_png(pix, size, size, PNG_FORMAT_GRAY, "PNG", ret_png, ret_len, errbuf, errlen);
    free(pix);
    return err;
}

cxr_err px_write_png(const char *path, const float *unit, int size, char *errbuf, size_t errlen)
{
    unsigned char *mem = NULL;
    size_t memlen = 0;
    cxr_err err;

    if (size <= 0 || size > PX_MAX_SIZE)
        return px_err(errbuf, errlen, CXR_EINVAL, "%s: bad image size %d", path, size);
    err = px_png_mem(unit, size, &mem, &memlen, errbuf, errlen);
    if (err)
        return err;
    err = cxr_file_write_atomic(path, mem, memlen, 0644);
    if (err)
        err = px_err(errbuf, errlen, err, "%s: cannot write: %s", path, cxr_strerror(err));
    free(mem);
    return err;
}

/* The colour of a heat-map value v in [0,1]: Turbo-like (dark blue, cyan, green, yellow,
 * orange, dark red), brightness rising then falling so that both ends stay readable over a
 * grey radiograph; linear between these anchors. */
static void heat_colour(float v, unsigned char rgb[3])
{
    static const float anchors[][3] = {
        {0.19f, 0.07f, 0.23f}, {0.27f, 0.41f, 0.89f}, {0.13f, 0.74f, 0.87f},
        {0.28f, 0.97f, 0.47f}, {0.76f, 0.93f, 0.20f}, {0.99f, 0.70f, 0.21f},
        {0.93f, 0.35f, 0.07f}, {0.70f, 0.09f, 0.01f},
    };
    const int last = (int)(sizeof(anchors) / sizeof(anchors[0])) - 1;
    float t, f;
    int i;
    v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;
    t = v * (float)last;
    i = (int)t;
    if (i >= last)
        i = last - 1;
    f = t - (float)i;
    for (int c = 0; c < 3; c++)
        rgb[c] = to_byte(anchors[i][c] + f * (anchors[i + 1][c] - anchors[i][c]));
}

/* The map (ch x cw) sampled bilinearly at pixel (x, y) of a size x size picture (pixel centres
 * aligned, edges clamped). */
static float cam_at(const float *cam, int ch, int cw, int size, int x, int y)
{
    float sy = ((float)y + 0.5f) * (float)ch / (float)size - 0.5f;
    float sx = ((float)x + 0.5f) * (float)cw / (float)size - 0.5f;
    int y0, x0, y1, x1;
    float fy, fx, v;
    sy = sy < 0.0f ? 0.0f : (sy > (float)(ch - 1) ? (float)(ch - 1) : sy);
    sx = sx < 0.0f ? 0.0f : (sx > (float)(cw - 1) ? (float)(cw - 1) : sx);
    y0 = (int)sy;
    x0 = (int)sx;
    y1 = y0 + 1 < ch ? y0 + 1 : y0;
    x1 = x0 + 1 < cw ? x0 + 1 : x0;
    fy = sy - (float)y0;
    fx = sx - (float)x0;
    v = (1.0f - fy) * ((1.0f - fx) * cam[y0 * cw + x0] + fx * cam[y0 * cw + x1]) +
        fy * ((1.0f - fx) * cam[y1 * cw + x0] + fx * cam[y1 * cw + x1]);
    return v == v ? v : 0.0f; /* NaN -> 0 */
}

/* Opacity of the colour at value v: none at 0, growing linearly to HEAT_ALPHA_MAX, so that the
 * anatomy stays visible under cool regions (a faint tint) and the hot ones stand out. */
#define HEAT_ALPHA_MAX 0.65f

static float heat_alpha(float v)
{
    v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;
    return HEAT_ALPHA_MAX * v;
}

cxr_err px_heatmap_png(const float *unit, int size, const float *cam, int ch, int cw,
                       unsigned char **ret_png, size_t *ret_len, char *errbuf, size_t errlen)
{
    const int bpp = unit ? 3 : 4;
    unsigned char *pix;
    cxr_err err;

    if (!cam || !ret_png || !ret_len || size <= 0 || size > PX_MAX_SIZE || ch <= 0 ||
        cw <= 0 || ch > PX_MAX_SIZE || cw > PX_MAX_SIZE)
        return px_err(errbuf, errlen, CXR_EINVAL, "heat map: bad sizes (image %d, map %dx%d)",
                      size, ch, cw);
    pix = malloc((size_t)size * (size_t)size * (size_t)bpp);
    if (!pix)
        return px_err(errbuf, errlen, CXR_ENOMEM, "heat map: out of memory");
    for (int y = 0; y < size; y++) {
        for (int x = 0; x < size; x++) {
            const float v = cam_at(cam, ch, cw, size, x, y), a = heat_alpha(v);
            unsigned char rgb[3], *p = pix + ((size_t)y * (size_t)size + (size_t)x) * bpp;
            heat_colour(v, rgb);
            if (unit) {
                const float grey = unit[(size_t)y * (size_t)size + (size_t)x];
                for (int c = 0; c < 3; c++)
                    p[c] = to_byte((1.0f - a) * grey + a * (float)rgb[c] / 255.0f);
            } else {
                p[0] = rgb[0];
                p[1] = rgb[1];
                p[2] = rgb[2];
                p[3] = to_byte(a);
            }
        }
    }
    err = encode_png(pix, size, size, unit ? PNG_FORMAT_RGB : PNG_FORMAT_RGBA, "heat map",
                     ret_png, ret_len, errbuf, errlen);
    free(pix);
    return err;
}
