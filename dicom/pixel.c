/*
 * pixel.c - the one preprocessing path ("cxr-pixel-v1"): decoded samples -> Modality LUT ->
 * VOI -> MONOCHROME1 inverted -> [0,1] -> area-averaged resize keeping the aspect ratio ->
 * normalisation. Training (PNG/JPEG) and serving (DICOM) both come through here.
 *
 * Design. The grey transform (rescale, window or VOI LUT, inversion) is one monotone-ish
 * function of the stored value, so for images whose stored values span at most PX_LUT_MAX
 * values it is tabulated once and applied with one load per pixel; the percentile window comes
 * from a histogram of stored values. Wider ranges (32-bit data) take a per-pixel path with a
 * 65536-bin histogram over the modality values. The window formula is DICOM's linear one
 * (PS3.3 C.11.2.1.2), so a percentile window is reported as a centre/width that gives the same
 * result. Non-logging: failures come back as cxr_err plus "NAME: problem".
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dicom.h"
#include "dicom_int.h"

#define PX_LUT_MAX (1 << 20)
#define PX_PCT_LO 0.005
#define PX_PCT_HI 0.995

/* The grey transform of one image, from modality value to [0,1]. */
struct px_xform {
    double slope, intercept;
    enum px_voi_kind voi;
    double c, w;                /* PX_VOI_WINDOW / PX_VOI_PERCENTILE */
    double scale;               /* PX_VOI_NONE: v / scale */
    const uint16_t *lut;        /* PX_VOI_LUT */
    int lut_n, lut_first;
    double lut_max;
    bool invert;
};

static float px_apply(const struct px_xform *x, double stored)
{
    double m = stored * x->slope + x->intercept, y;

    switch (x->voi) {
    case PX_VOI_WINDOW:
    case PX_VOI_PERCENTILE: {
        double lo = x->c - 0.5 - (x->w - 1.0) / 2.0, hi = x->c - 0.5 + (x->w - 1.0) / 2.0;
        if (m <= lo)
            y = 0.0;
        else if (m > hi)
            y = 1.0;
        else
            y = x->w > 1.0 ? (m - (x->c - 0.5)) / (x->w - 1.0) + 0.5 : 1.0;
        break;
    }
    case PX_VOI_LUT: {
        double i = floor(m + 0.5) - x->lut_first;
        int k = i < 0 ? 0 : i >= x->lut_n ? x->lut_n - 1 : (int)i;
        y = x->lut[k] / x->lut_max;
        break;
    }
    case PX_VOI_NONE:
    default:
        y = m / x->scale;
        break;
    }
    if (y < 0.0)
        y = 0.0;
    if (y > 1.0)
        y = 1.0;
    return (float)(x->invert ? 1.0 - y : y);
}

static bool has_word(const char *s, const char *w)
{
    return s && !strcmp(s, w);
}

/* Sets the window (c, w) from the lo..hi modality values of the percentile window. */
static void px_set_percentile(struct px_xform *x, double lo, double hi)
{
    if (hi < lo) {
        double t = lo;
        lo = hi;
        hi = t;
    }
    x->voi = PX_VOI_PERCENTILE;
    x->w = hi - lo + 1.0;
    x->c = (lo + hi) / 2.0 + 0.5;
}

/* Percentile window from a histogram of n stored values starting at vmin. */
static void px_percentile_hist(struct px_xform *x, const uint32_t *hist, size_t nbins, double vmin,
                               double binw, size_t total)
{
    double want_lo = PX_PCT_LO * (double)total, want_hi = PX_PCT_HI * (double)total;
    size_t cum = 0, blo = 0, bhi = nbins - 1;
    bool got_lo = false;

    for (size_t b = 0; b < nbins; b++) {
        cum += hist[b];
        if (!got_lo && (double)cum > want_lo) {
            blo = b;
            got_lo = true;
        }
        if ((double)cum >= want_hi) {
            bhi = b;
            break;
        }
    }
    px_set_percentile(x, (vmin + (double)blo * binw) * x->slope + x->intercept,
                      (vmin + (double)bhi * binw) * x->slope + x->intercept);
}

/* An image's grey transform, ready to apply: samples (luminance for colour) and either a table
 * over vmin..vmax or the per-pixel transform. */
struct px_grey {
    const int32_t *s;
    int32_t *lum;  /* owned: luminance of a colour image */
    float *lutf;   /* owned: value of every stored value vmin..vmax, or NULL */
    int32_t vmin;
    struct px_xform x;
    int w, h;
};

static void px_grey_done(struct px_grey *g)
{
    free(g->lum);
    free(g->lutf);
    g->lum = NULL;
    g->lutf = NULL;
}

/* The smallest and largest of n samples. The per-pixel loops of this file also have an AVX2
 * build (the x86-64 baseline has no 32-bit integer min/max nor gather), chosen at load time;
 * integer work and IEEE arithmetic without FMA contraction give the same bits on either. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define PX_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define PX_CLONES
#endif

PX_CLONES static void px_minmax(const int32_t *s, size_t n, int32_t *ret_min, int32_t *ret_max)
{
    int32_t vmin = *ret_min, vmax = *ret_max;
    for (size_t i = 0; i < n; i++) {
        vmin = s[i] < vmin ? s[i] : vmin;
        vmax = s[i] > vmax ? s[i] : vmax;
    }
    *ret_min = vmin;
    *ret_max = vmax;
}

static cxr_err px_grey_init(struct px_grey *g, const struct px_image *img,
                            const struct dcm_info *info, struct px_info *ret_pinfo, char *errbuf,
                            size_t errlen, const char *name)
{
    size_t n = (size_t)img->width * (size_t)img->height;
    struct px_xform x = {.slope = 1.0, .intercept = 0.0, .voi = PX_VOI_NONE, .scale = 1.0};
    float *lutf = NULL;
    int32_t vmin = INT32_MAX, vmax = INT32_MIN;
    uint32_t *hist = NULL;
    const int32_t *s = img->samples;
    int32_t *lum = NULL;
    cxr_err err = CXR_OK;

    memset(g, 0, sizeof(*g));
    if (!name)
        name = "image";
    if (img->channels != 1 && img->channels != 3)
        return px_err(errbuf, errlen, CXR_EUNSUPPORTED, "%s: %d samples per pixel", name,
                      img->channels);
    if (n == 0 || !s)
        return px_err(errbuf, errlen, CXR_EINVAL, "%s: empty image", name);
    if (img->channels == 3) {
        /* Colour: luminance, no VOI (DICOM defines none for RGB), scaled by the bit depth. */
        lum = malloc(n * sizeof(int32_t));
        if (!lum) {
            err = px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name);
            goto out_free;
        }
        for (size_t i = 0; i < n; i++)
            lum[i] = (int32_t)lround(0.299 * s[3 * i] + 0.587 * s[3 * i + 1] +
                                     0.114 * s[3 * i + 2]);
        s = lum;
    }
    px_minmax(s, n, &vmin, &vmax);

    if (info && img->channels == 1) {
        if (info->has_rescale && info->rescale_slope != 0.0) {
            x.slope = info->rescale_slope;
            x.intercept = info->rescale_intercept;
        }
        x.invert = has_word(info->photometric, "MONOCHROME1") ||
                   has_word(info->presentation_lut_shape, "INVERSE");
        if (info->n_windows > 0 && info->window_width >= 1.0) {
            x.voi = PX_VOI_WINDOW;
            x.c = info->window_center;
            x.w = info->window_width;
        } else if (info->has_voi_lut && info->voi_lut_entries > 0 && info->voi_lut_data) {
            x.voi = PX_VOI_LUT;
            x.lut = info->voi_lut_data;
            x.lut_n = info->voi_lut_entries;
            x.lut_first = info->voi_lut_first;
            x.lut_max = info->voi_lut_bits > 0 && info->voi_lut_bits <= 16
                            ? (double)((1u << info->voi_lut_bits) - 1u)
                            : 65535.0;
            for (int i = 0; i < x.lut_n; i++)
                if (x.lut[i] > x.lut_max)
                    x.lut_max = x.lut[i];
            if (x.lut_max <= 0.0)
                x.lut_max = 1.0;
        } else {
            x.voi = PX_VOI_PERCENTILE;
        }
    } else if (img->bits > 8 && img->channels == 1) {
        x.voi = PX_VOI_PERCENTILE; /* a 16-bit PNG is raw data, not a display image */
    } else {
        x.scale = img->bits >= 1 && img->bits <= 30 ? (double)((1u << img->bits) - 1u) : 255.0;
    }

    if ((int64_t)vmax - (int64_t)vmin < PX_LUT_MAX) {
        size_t nl = (size_t)((int64_t)vmax - (int64_t)vmin + 1);
        if (x.voi == PX_VOI_PERCENTILE) {
            hist = calloc(nl, sizeof(uint32_t));
            if (!hist) {
                err = px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name);
                goto out_free;
            }
            for (size_t i = 0; i < n; i++)
                hist[s[i] - vmin]++;
            px_percentile_hist(&x, hist, nl, (double)vmin, 1.0, n);
        }
        lutf = malloc(nl * sizeof(float));
        if (!lutf) {
            err = px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name);
            goto out_free;
        }
        for (size_t k = 0; k < nl; k++)
            lutf[k] = px_apply(&x, (double)vmin + (double)k);
    } else {
        if (x.voi == PX_VOI_PERCENTILE) {
            const size_t nb = 65536;
            double binw = ((double)vmax - (double)vmin + 1.0) / (double)nb;
            hist = calloc(nb, sizeof(uint32_t));
            if (!hist) {
                err = px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name);
                goto out_free;
            }
            for (size_t i = 0; i < n; i++) {
                size_t b = (size_t)(((double)s[i] - (double)vmin) / binw);
                hist[b < nb ? b : nb - 1]++;
            }
            px_percentile_hist(&x, hist, nb, (double)vmin, binw, n);
        }
    }

    if (ret_pinfo) {
        ret_pinfo->voi = x.voi;
        ret_pinfo->window_center = x.c;
        ret_pinfo->window_width = x.w;
        ret_pinfo->inverted = x.invert;
        ret_pinfo->width = img->width;
        ret_pinfo->height = img->height;
    }
    g->s = s;
    g->lum = lum;
    g->lutf = lutf;
    g->vmin = vmin;
    g->x = x;
    g->w = img->width;
    g->h = img->height;
    lum = NULL;
    lutf = NULL;
out_free:
    free(lutf);
    free(hist);
    free(lum);
    return err;
}

/* Row y of the [0,1] image: into scratch, returned. */
PX_CLONES static const float *px_grey_row(const struct px_grey *g, int y, float *scratch)
{
    const int32_t *s = g->s + (size_t)y * (size_t)g->w;
    const int w = g->w; /* in a register: the stores into scratch could alias g */

    if (g->lutf) {
        const float *restrict lut = g->lutf;
        const int32_t *restrict sr = s;
        float *restrict dst = scratch;
        int32_t vmin = g->vmin;
        for (int i = 0; i < w; i++)
            dst[i] = lut[sr[i] - vmin];
    } else {
        for (int i = 0; i < w; i++)
            scratch[i] = px_apply(&g->x, (double)s[i]);
    }
    return scratch;
}

cxr_err px_to_unit(const struct px_image *img, const struct dcm_info *info, float **ret_unit,
                   struct px_info *ret_pinfo, char *errbuf, size_t errlen, const char *name)
{
    struct px_grey g;
    float *unit;
    cxr_err err = px_grey_init(&g, img, info, ret_pinfo, errbuf, errlen, name);

    if (err)
        return err;
    unit = malloc((size_t)g.w * (size_t)g.h * sizeof(float));
    if (!unit) {
        px_grey_done(&g);
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", name ? name : "image");
    }
    for (int y = 0; y < g.h; y++)
        (void)px_grey_row(&g, y, unit + (size_t)y * (size_t)g.w);
    px_grey_done(&g);
    *ret_unit = unit;
    return CXR_OK;
}



/* The weights of an area-averaging 1-D resample from n to m samples, seen from the source:
 * output j averages [j*n/m, (j+1)*n/m), so source sample i adds its overlap with that interval,
 * divided by n/m, to output j. Going down in size, each source sample touches at most two
 * outputs, so a resample costs about two multiply-adds per source sample. */
struct px_span {
    int first, count; /* outputs first .. first+count-1 */
    float *w;
};

static cxr_err px_spans(int n, int m, struct px_span **ret_spans, float **ret_w)
{
    double step = (double)n / (double)m;
    int maxc = (int)ceil(1.0 / step) + 2;
    struct px_span *sp = NULL;
    float *w = NULL;

    if (n < 1 || m < 1)
        return CXR_EINVAL;
    sp = malloc((size_t)n * sizeof(*sp));
    w = malloc((size_t)n * (size_t)maxc * sizeof(float));
    if (!sp || !w) {
        free(sp);
        free(w);
        return CXR_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        int j0 = (int)floor(i / step), j1 = (int)ceil((i + 1) / step);
        if (j1 > m)
            j1 = m;
        if (j0 >= j1)
            j0 = j1 - 1;
        sp[i].first = j0;
        sp[i].count = 0;
        sp[i].w = w + (size_t)i * (size_t)maxc;
        for (int j = j0; j < j1 && sp[i].count < maxc; j++) {
            double lo = j * step > i ? j * step : i;
            double hi = (j + 1) * step < i + 1 ? (j + 1) * step : i + 1;
            sp[i].w[sp[i].count++] = hi > lo ? (float)((hi - lo) / step) : 0.0f;
        }
    }
    *ret_spans = sp;
    *ret_w = w;
    return CXR_OK;
}

/* Gives row y of a w x h [0,1] image, in scratch (w floats) or its own storage. */
typedef const float *(*px_row_fn)(const void *ctx, int y, float *scratch);

struct px_plane {
    const float *in;
    int w;
};

static const float *px_plane_row(const void *ctx, int y, float *scratch)
{
    const struct px_plane *p = ctx;
    (void)scratch;
    return p->in + (size_t)y * (size_t)p->w;
}

static const float *px_grey_row_fn(const void *ctx, int y, float *scratch)
{
    return px_grey_row(ctx, y, scratch);
}

/* Separable area averaging: each source row is fetched once (so a LUT-mapped image never
 * exists in full), resampled horizontally, and accumulated into the output rows it covers. */
/* Separable area averaging. Horizontally, the mean of a row over [a, b) is read off the row's
 * running sum (linear inside a pixel), so each source pixel costs one add whatever the scale;
 * vertically, each resampled source row is added with its overlap weight into the (at most two,
 * going down in size) output rows it covers. Each source row is fetched once, so a LUT-mapped
 * copy of the whole image never exists. */
#define PX_RB 4 /* source rows resampled together */

static cxr_err px_resize_core(px_row_fn get_row, const void *ctx, int w, int h, int size,
                              float *out, int *ret_ow, int *ret_oh)
{
    int ow, oh, offx, offy;
    cxr_err err = CXR_ENOMEM;
    struct px_span *sy = NULL;
    float *wy = NULL, *hr = NULL, *scratch = NULL;
    double *cum = NULL, *fa = NULL, *fb = NULL, inv;
    int *ia = NULL, *ib = NULL;

    if (!get_row || !out || w < 1 || h < 1 || size < 1)
        return CXR_EINVAL;
    memset(out, 0, (size_t)size * (size_t)size * sizeof(float));
    if (w >= h) {
        ow = size;
        oh = (int)lround((double)h * size / w);
    } else {
        oh = size;
        ow = (int)lround((double)w * size / h);
    }
    if (ow < 1)
        ow = 1;
    if (oh < 1)
        oh = 1;
    offx = (size - ow) / 2;
    offy = (size - oh) / 2;
    if (px_spans(h, oh, &sy, &wy))
        goto out_free;
    hr = malloc((size_t)PX_RB * (size_t)ow * sizeof(float));
    scratch = calloc((size_t)PX_RB * (size_t)w, sizeof(float));
    cum = malloc((size_t)PX_RB * ((size_t)w + 1) * sizeof(double));
    fa = malloc((size_t)ow * sizeof(double));
    fb = malloc((size_t)ow * sizeof(double));
    ia = malloc((size_t)ow * sizeof(int));
    ib = malloc((size_t)ow * sizeof(int));
    if (!hr || !scratch || !cum || !fa || !fb || !ia || !ib)
        goto out_free;
    {
        double step = (double)w / (double)ow;
        inv = 1.0 / step;
        for (int j = 0; j < ow; j++) {
            double a = j * step, b = (j + 1) * step;
            if (b > w)
                b = w;
            ia[j] = (int)floor(a);
            ib[j] = (int)floor(b);
            if (ib[j] >= w) { /* b == w: the whole last pixel */
                ib[j] = w - 1;
                fb[j] = 1.0;
            } else {
                fb[j] = b - ib[j];
            }
            fa[j] = a - ia[j];
        }
    }
    /* PX_RB rows at a time: their running sums are independent chains of additions, which
     * interleaved keep the adder busy (one row's chain waits ~4 cycles per pixel); every row's
     * sums, and the order in which rows are added into the output, are as one row at a time. */
    for (int y0 = 0; y0 < h; y0 += PX_RB) {
        const int nr = h - y0 < PX_RB ? h - y0 : PX_RB;
        const float *rows[PX_RB] = {NULL};
        double *cr[PX_RB] = {NULL};
        for (int r = 0; r < nr; r++) {
            rows[r] = get_row(ctx, y0 + r, scratch + (size_t)r * (size_t)w);
            cr[r] = cum + (size_t)r * ((size_t)w + 1);
            cr[r][0] = 0.0;
        }
        if (nr == PX_RB) {
            double c0 = 0.0, c1 = 0.0, c2 = 0.0, c3 = 0.0;
            const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
            double *s0 = cr[0], *s1 = cr[1], *s2 = cr[2], *s3 = cr[3];
            for (int i = 0; i < w; i++) {
                c0 += r0[i];
                c1 += r1[i];
                c2 += r2[i];
                c3 += r3[i];
                s0[i + 1] = c0;
                s1[i + 1] = c1;
                s2[i + 1] = c2;
                s3[i + 1] = c3;
            }
        } else {
            for (int r = 0; r < nr; r++) {
                double c = 0.0;
                for (int i = 0; i < w; i++) {
                    c += rows[r][i];
                    cr[r][i + 1] = c;
                }
            }
        }
        for (int r = 0; r < nr; r++) {
            const float *row = rows[r];
            const double *cs = cr[r];
            float *h_r = hr + (size_t)r * (size_t)ow;
            const int y = y0 + r;
            for (int j = 0; j < ow; j++) {
                double A = cs[ia[j]] + fa[j] * row[ia[j]], B = cs[ib[j]] + fb[j] * row[ib[j]];
                h_r[j] = (float)((B - A) * inv);
            }
            for (int k = 0; k < sy[y].count; k++) {
                float *o = out + (size_t)(offy + sy[y].first + k) * (size_t)size + offx;
                float wk = sy[y].w[k];
                for (int j = 0; j < ow; j++)
                    o[j] += h_r[j] * wk;
            }
        }
    }
    if (ret_ow)
        *ret_ow = ow;
    if (ret_oh)
        *ret_oh = oh;
    err = CXR_OK;
out_free:
    free(sy);
    free(wy);
    free(hr);
    free(scratch);
    free(cum);
    free(fa);
    free(fb);
    free(ia);
    free(ib);
    return err;
}

cxr_err px_resize_area(const float *in, int w, int h, int size, float *out, int *ret_ow,
                       int *ret_oh)
{
    struct px_plane p = {.in = in, .w = w};

    if (!in)
        return CXR_EINVAL;
    return px_resize_core(px_plane_row, &p, w, h, size, out, ret_ow, ret_oh);
}

void px_normalize(const struct px_spec *spec, const float *unit, float *out)
{
    size_t n = (size_t)spec->size * (size_t)spec->size;
    int ch = spec->channels > 0 ? spec->channels : 1;
    float inv = spec->std != 0.0f ? 1.0f / spec->std : 1.0f;

    for (int c = 0; c < ch; c++)
        for (size_t i = 0; i < n; i++)
            out[(size_t)c * n + i] = (unit[i] - spec->mean) * inv;
}

/* The text of a failure to get at an input file: err, and why (for the others than
 * CXR_ENOTFOUND and CXR_ELIMIT). */
static cxr_err px_file_err(const char *path, cxr_err err, const char *why, char *errbuf,
                           size_t errlen)
{
    switch (err) {
    case CXR_OK: return CXR_OK;
    case CXR_ENOTFOUND: return px_err(errbuf, errlen, err, "%s: no such file", path);
    case CXR_ELIMIT:
        return px_err(errbuf, errlen, err, "%s: file is larger than %zu MiB", path,
                      DCM_MAX_FILE_BYTES >> 20);
    default: return px_err(errbuf, errlen, err, "%s: cannot read: %s", path, why);
    }
}

cxr_err px_read_file(const char *path, char **ret_data, size_t *ret_len, char *errbuf,
                     size_t errlen)
{
    cxr_err err = cxr_file_read(path, DCM_MAX_FILE_BYTES, ret_data, ret_len);

    return px_file_err(path, err, cxr_strerror(err), errbuf, errlen);
}

cxr_err px_map_file(const char *path, struct px_mapped *ret_map, char *errbuf, size_t errlen)
{
    static const char empty[1];
    struct stat st;
    const char *why = "";
    cxr_err err = CXR_OK;
    void *p;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    ret_map->data = NULL;
    ret_map->len = 0;
    ret_map->fd = -1;
    ret_map->map = NULL;
    if (fd < 0)
        return px_file_err(path, errno == ENOENT ? CXR_ENOTFOUND : CXR_EIO, strerror(errno),
                           errbuf, errlen);
    if (fstat(fd, &st) != 0) {
        err = CXR_EIO;
        why = strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
        err = CXR_EIO;
        why = "not a regular file";
    } else if ((uint64_t)st.st_size > DCM_MAX_FILE_BYTES) {
        err = CXR_ELIMIT;
    }
    if (err) {
        (void)close(fd);
        return px_file_err(path, err, why, errbuf, errlen);
    }
    if (st.st_size == 0) {
        ret_map->data = empty;
        ret_map->fd = fd;
        return CXR_OK;
    }
    p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        err = errno == ENOMEM ? CXR_ENOMEM : CXR_EIO;
        why = strerror(errno);
        (void)close(fd);
        return px_file_err(path, err, why, errbuf, errlen);
    }
    ret_map->data = p;
    ret_map->map = p;
    ret_map->len = (size_t)st.st_size;
    ret_map->fd = fd;
    return CXR_OK;
}

void px_unmap_file(struct px_mapped *m)
{
    if (m->map)
        (void)munmap(m->map, m->len);
    if (m->fd >= 0)
        (void)close(m->fd);
    m->data = NULL;
    m->len = 0;
    m->fd = -1;
    m->map = NULL;
}

static void px_verdict_set(struct px_verdict *v, bool ok, const char *reason)
{
    v->applicable = ok;
    (void)snprintf(v->reason, sizeof(v->reason), "%s", ok ? "" : reason);
}

static double px_mono_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

cxr_err px_load_unit_mem_ex(const void *data, size_t len, const char *name, int size, float *out,
                            struct px_verdict *ret_verdict, struct px_info *ret_pinfo,
                            char *errbuf, size_t errlen)
{
    return px_load_unit_mem_trace(data, len, name, size, out, ret_verdict, ret_pinfo, NULL,
                                  errbuf, errlen);
}

cxr_err px_load_unit_mem_trace(const void *data, size_t len, const char *name, int size,
                               float *out, struct px_verdict *ret_verdict,
                               struct px_info *ret_pinfo, struct px_trace *trace, char *errbuf,
                               size_t errlen)
{
    return px_load_unit_fd_trace(data, len, -1, name, size, out, ret_verdict, ret_pinfo, trace,
                                 errbuf, errlen);
}

cxr_err px_load_unit_fd_trace(const void *data, size_t len, int fd, const char *name, int size,
                              float *out, struct px_verdict *ret_verdict,
                              struct px_info *ret_pinfo, struct px_trace *trace, char *errbuf,
                              size_t errlen)
{
    double t0 = px_mono_ms(), t1;
    struct px_image img = {0};
    struct px_verdict verdict = {.applicable = true, .reason = ""};
    struct px_info pinfo;
    dcm_file *df = NULL;
    struct px_grey grey;
    enum px_format fmt;
    cxr_err err;

    memset(&pinfo, 0, sizeof(pinfo));
    if (!name)
        name = "<memory>";
    if (size < 1 || size > PX_MAX_SIZE)
        return px_err(errbuf, errlen, CXR_EINVAL, "%s: model input size %d is out of range", name,
                      size);
    fmt = px_detect(data, len);
    switch (fmt) {
    case PX_FMT_PNG:
        err = px_image_read_png(data, len, name, &img, errbuf, errlen);
        (void)snprintf(pinfo.kind, sizeof(pinfo.kind), "PNG");
        break;
    case PX_FMT_JPEG:
        err = px_image_read_jpeg(data, len, name, &img, errbuf, errlen);
        (void)snprintf(pinfo.kind, sizeof(pinfo.kind), "JPEG");
        break;
    case PX_FMT_DICOM:
        (void)snprintf(pinfo.kind, sizeof(pinfo.kind), "DICOM");
        err = dcm_file_open_fd(data, len, fd, name, &df, errbuf, errlen);
        if (err)
            break;
        dcm_gate(dcm_file_info(df), &verdict);
        err = dcm_file_decode(df, &img, errbuf, errlen);
        break;
    case PX_FMT_UNKNOWN:
    default:
        err = px_err(errbuf, errlen, CXR_EPARSE, "%s: not a DICOM, PNG or JPEG file", name);
        break;
    }
    if (err)
        goto out_free;
    if (trace && trace->on_decoded)
        trace->on_decoded(trace->user, &img);
    t1 = px_mono_ms();
    if (trace)
        trace->decode_ms = t1 - t0;
    if (fmt != PX_FMT_DICOM && (img.width < PX_MIN_SIDE || img.height < PX_MIN_SIDE)) {
        char why[160];
        (void)snprintf(why, sizeof(why), "too small: %dx%d, under %d pixels a side", img.width,
                       img.height, PX_MIN_SIDE);
        px_verdict_set(&verdict, false, why);
    }
    err = px_grey_init(&grey, &img, df ? dcm_file_info(df) : NULL, &pinfo, errbuf, errlen, name);
    if (err)
        goto out_free;
    err = px_resize_core(px_grey_row_fn, &grey, img.width, img.height, size, out,
                         &pinfo.out_width, &pinfo.out_height);
    px_grey_done(&grey);
    if (err) {
        err = px_err(errbuf, errlen, err, "%s: out of memory", name);
        goto out_free;
    }
    if (trace)
        trace->preprocess_ms = px_mono_ms() - t1;
    if (ret_verdict)
        *ret_verdict = verdict;
    if (ret_pinfo)
        *ret_pinfo = pinfo;
out_free:
    px_image_done(&img);
    dcm_file_free(df);
    return err;
}

cxr_err px_load_unit_mem(const void *data, size_t len, const char *name, int size, float *out,
                         struct px_verdict *ret_verdict, char *errbuf, size_t errlen)
{
    return px_load_unit_mem_ex(data, len, name, size, out, ret_verdict, NULL, errbuf, errlen);
}

cxr_err px_load_unit(const char *path, int size, float *out, struct px_verdict *ret_verdict,
                     char *errbuf, size_t errlen)
{
    char *data = NULL;
    size_t len = 0;
    cxr_err err = px_read_file(path, &data, &len, errbuf, errlen);

    if (err)
        return err;
    err = px_load_unit_mem(data, len, path, size, out, ret_verdict, errbuf, errlen);
    free(data);
    return err;
}

cxr_err px_load_file(const char *path, const struct px_spec *spec, float *out,
                     struct px_verdict *ret_verdict, char *errbuf, size_t errlen)
{
    float *unit;
    cxr_err err;

    if (!spec || spec->size < 1 || spec->size > PX_MAX_SIZE)
        return px_err(errbuf, errlen, CXR_EINVAL, "%s: bad model input spec", path);
    unit = calloc((size_t)spec->size * (size_t)spec->size, sizeof(float));
    if (!unit)
        return px_err(errbuf, errlen, CXR_ENOMEM, "%s: out of memory", path);
    err = px_load_unit(path, spec->size, unit, ret_verdict, errbuf, errlen);
    if (!err)
        px_normalize(spec, unit, out);
    free(unit);
    return err;
}
