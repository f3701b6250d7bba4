/*
 * imgio.c - PNG and JPEG in and out for the pixel path: format detection by content, decoding
 * with libpng and libjpeg-turbo into struct px_image, and the 8-bit PNG writer of
 * `cxrtriage preprocess`.
 *
 * Both decoders read from memory, install error handlers that longjmp back here (the libraries'
 * defaults print and exit), and check the image size against PX_MAX_SIDE and
 * DCM_MAX_DECODED_BYTES before allocating anything for the pixels. Nothing here logs.
 */
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

cxr_err px_write_png(const char *path, const float *unit, int size, char *errbuf, size_t errlen)
{
    png_image image;
    unsigned char *pix = NULL, *mem = NULL;
    png_alloc_size_t memlen = 0;
    size_t n = (size_t)size * (size_t)size;
    cxr_err err = CXR_OK;

    if (size <= 0 || size > PX_MAX_SIZE)
        return px_err(errbuf, errlen, CXR_EINVAL, "%s: bad image size %d", path, size);
    pix = malloc(n);
    if (!pix)
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) {
        float v = unit[i] * 255.0f + 0.5f;
        pix[i] = (unsigned char)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
    }
    memset(&image, 0, sizeof(image));
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)size;
    image.height = (png_uint_32)size;
    image.format = PNG_FORMAT_GRAY;
    if (!png_image_write_to_memory(&image, NULL, &memlen, 0, pix, 0, NULL) || memlen == 0) {
        err = px_err(errbuf, errlen, CXR_EIO, "%s: cannot encode PNG: %s", path, image.message);
        goto out_free;
    }
    mem = malloc(memlen);
    if (!mem) {
        err = px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", path);
        goto out_free;
    }
    if (!png_image_write_to_memory(&image, mem, &memlen, 0, pix, 0, NULL)) {
        err = px_err(errbuf, errlen, CXR_EIO, "%s: cannot encode PNG: %s", path, image.message);
        goto out_free;
    }
    err = cxr_file_write_atomic(path, mem, memlen, 0644);
    if (err)
        err = px_err(errbuf, errlen, err, "%s: cannot write: %s", path, cxr_strerror(err));
out_free:
    png_image_free(&image);
    free(mem);
    free(pix);
    return err;
}
