/*
 * explore.c - data-set statistics for `cxrtriage-train explore`; see explore.h.
 *
 * Design: one pass over the files. Each file is read whole (bounded), hashed (SHA-256 of the
 * bytes, OpenSSL's EVP), decoded by the pixel path's readers (dicom/imgio.c; bounded pixel
 * count), and reduced to a few numbers: mean and standard deviation of the luminance and the
 * dHash of a 9x8 area-averaged thumbnail. The image is then dropped, so memory stays at one
 * image. Duplicates come afterwards from the per-image numbers: exact ones by sorting the
 * hashes, near ones by comparing every pair of dHashes (64-bit popcount; 2220 images are 2.5 M
 * pairs, a few milliseconds).
 */
#include "explore.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "dicom.h"
#include "plot.h"

#define MAX_NAMES_PER_DIR ((size_t)1000000)

static const char *const known_classes[] = {"COVID", "Lung_Opacity", "Normal", "Viral_Pneumonia"};

/* ---- grey statistics ---- */

/* Mean, standard deviation and dHash of w x h grey samples (8 or 16 bits, 16 in host order). */
static void grey_stats(const void *pix, bool is16, uint32_t w, uint32_t h, struct xpl_image *img)
{
    double cell[8][9] = {{0}}, cnt[8][9] = {{0}};
    double tc[16][16] = {{0}}, tn[16][16] = {{0}};
    double sum = 0, sumsq = 0, scale = is16 ? 1.0 / 65535.0 : 1.0 / 255.0;
    uint64_t hash = 0;
    double n = (double)w * (double)h;

    for (uint32_t y = 0; y < h; y++) {
        size_t cy = (size_t)((uint64_t)y * 8 / h), ty = (size_t)((uint64_t)y * 16 / h);
        double rs = 0, rss = 0;
        for (uint32_t x = 0; x < w; x++) {
            size_t cx = (size_t)((uint64_t)x * 9 / w), tx = (size_t)((uint64_t)x * 16 / w);
            size_t o = (size_t)y * w + x;
            double v = is16 ? ((const uint16_t *)pix)[o] * scale : ((const uint8_t *)pix)[o] * scale;
            rs += v;
            rss += v * v;
            cell[cy][cx] += v;
            cnt[cy][cx] += 1;
            tc[ty][tx] += v;
            tn[ty][tx] += 1;
        }
        sum += rs;
        sumsq += rss;
    }
    img->mean = sum / n;
    img->std = sqrt(fmax(sumsq / n - img->mean * img->mean, 0));
    /* Cells of an image narrower than 9 or lower than 8 pixels can be empty: they read 0. */
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 9; c++)
            cell[r][c] = cnt[r][c] > 0 ? cell[r][c] / cnt[r][c] : 0;
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 8; c++)
            hash = (hash << 1) | (cell[r][c] > cell[r][c + 1]);
    img->dhash = hash;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            img->thumb[r * 16 + c] =
                (uint8_t)lround(tn[r][c] > 0 ? fmin(fmax(tc[r][c] / tn[r][c], 0), 1) * 255 : 0);
}

static double thumb_mad(const struct xpl_image *a, const struct xpl_image *b)
{
    unsigned sum = 0;

    for (size_t i = 0; i < sizeof(a->thumb); i++)
        sum += (unsigned)abs((int)a->thumb[i] - (int)b->thumb[i]);
    return (double)sum / (255.0 * (double)sizeof(a->thumb));
}

static void set_error(struct xpl_image *img, const char *msg)
{
    free(img->error);
    img->error = strdup(msg);
    img->ok = false;
}

/*
 * Decoding is the pixel path's (dicom/imgio.c: libpng, libjpeg-turbo), so explore reads an
 * image exactly as training and serving do; only the statistics are computed here, on the
 * decoded samples (colour as luminance, scaled to 8 or 16 bits).
 */
static cxr_err analyse_decoded(const struct px_image *pi, struct xpl_image *img)
{
    size_t n = (size_t)pi->width * (size_t)pi->height;
    bool is16 = pi->bits > 8;
    double top = (double)((1u << (pi->bits < 1 ? 1 : pi->bits > 16 ? 16 : pi->bits)) - 1);
    double scale = (is16 ? 65535.0 : 255.0) / top;
    void *buf;

    img->width = (uint32_t)pi->width;
    img->height = (uint32_t)pi->height;
    img->bit_depth = pi->bits;
    img->channels = pi->channels;
    if (n == 0) {
        set_error(img, "image has no pixels");
        return CXR_OK;
    }
    if (n > XPL_MAX_PIXELS) {
        set_error(img, "image has too many pixels");
        return CXR_OK;
    }
    buf = calloc(n, is16 ? 2 : 1);
    if (!buf)
        return CXR_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const int32_t *p = pi->samples + i * (size_t)pi->channels;
        double v = pi->channels >= 3 ? 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2] : p[0];
        v = v * scale + 0.5;
        v = v < 0 ? 0 : v > (is16 ? 65535.0 : 255.0) ? (is16 ? 65535.0 : 255.0) : v;
        if (is16)
            ((uint16_t *)buf)[i] = (uint16_t)v;
        else
            ((uint8_t *)buf)[i] = (uint8_t)v;
    }
    grey_stats(buf, is16, img->width, img->height, img);
    free(buf);
    img->ok = true;
    return CXR_OK;
}

cxr_err xpl_image_analyse(const unsigned char *data, size_t len, struct xpl_image *img)
{
    enum px_format fmt = px_detect(data, len);
    struct px_image pi = {0};
    char msg[512];
    cxr_err err;

    img->ok = false;
    if (fmt != PX_FMT_PNG && fmt != PX_FMT_JPEG) {
        set_error(img, len == 0 ? "empty file" : "not a PNG or JPEG file");
        return CXR_OK;
    }
    (void)snprintf(img->format, sizeof(img->format), fmt == PX_FMT_PNG ? "PNG" : "JPEG");
    err = fmt == PX_FMT_PNG ? px_image_read_png(data, len, "image", &pi, msg, sizeof(msg))
                            : px_image_read_jpeg(data, len, "image", &pi, msg, sizeof(msg));
    if (err == CXR_ENOMEM)
        return err;
    if (err) {
        char why[600];
        /* msg is "image: what"; keep the what. */
        const char *what = strncmp(msg, "image: ", 7) == 0 ? msg + 7 : msg;
        (void)snprintf(why, sizeof(why), "%s data is damaged or unsupported: %s", img->format, what);
        set_error(img, why);
        return CXR_OK;
    }
    err = analyse_decoded(&pi, img);
    px_image_done(&pi);
    return err;
}

/* ---- directory scan ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Sorted names in dir (no hidden ones) that are directories (want_dir) or anything else. */
static cxr_err list_dir(const char *dir, bool want_dir, char ***ret, size_t *ret_n,
                        size_t *ret_other)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **v = NULL;
    size_t n = 0, cap = 0, other = 0;
    cxr_err err = CXR_OK;

    if (!d)
        return errno == ENOENT || errno == ENOTDIR ? CXR_ENOTFOUND : CXR_EIO;
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        bool is_dir;
        if (e->d_name[0] == '.')
            continue;
        if ((err = cxr_path_join_safe(path, sizeof(path), dir, e->d_name)) != CXR_OK)
            break;
        is_dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
        if (is_dir != want_dir) {
            other++;
            continue;
        }
        if (n == cap) {
            char **nv;
            if (cap >= MAX_NAMES_PER_DIR) {
                err = CXR_ELIMIT;
                break;
            }
            cap = cap ? cap * 2 : 64;
            nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                err = CXR_ENOMEM;
                break;
            }
            v = nv;
        }
        v[n] = strdup(e->d_name);
        if (!v[n]) {
            err = CXR_ENOMEM;
            break;
        }
        n++;
    }
    (void)closedir(d);
    if (err != CXR_OK) {
        free_names(v, n);
        return err;
    }
    if (n)
        qsort(v, n, sizeof(*v), cmp_str);
    *ret = v;
    *ret_n = n;
    if (ret_other)
        *ret_other = other;
    return CXR_OK;
}

static cxr_err warn(struct xpl_dataset *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static cxr_err warn(struct xpl_dataset *d, const char *fmt, ...)
{
    struct cxr_buf b;
    va_list ap;
    char **nv;
    cxr_err err;

    cxr_buf_init(&b, 8192);
    va_start(ap, fmt);
    err = cxr_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (err != CXR_OK)
        return err;
    nv = realloc(d->warnings, (d->n_warnings + 1) * sizeof(*nv));
    if (!nv) {
        cxr_buf_done(&b);
        return CXR_ENOMEM;
    }
    d->warnings = nv;
    return cxr_buf_take(&b, &d->warnings[d->n_warnings++]);
}

void xpl_dataset_free(struct xpl_dataset *d)
{
    if (!d)
        return;
    free(d->dir);
    free_names(d->class_names, d->n_classes);
    free(d->class_counts);
    free(d->class_files);
    if (d->img)
        for (size_t i = 0; i < d->n; i++) {
            free(d->img[i].path);
            free(d->img[i].error);
        }
    free(d->img);
    free(d->exact_members);
    free(d->exact_start);
    free(d->near);
    free_names(d->splits, d->n_splits);
    free_names(d->warnings, d->n_warnings);
    free(d);
}

static bool is_known_class(const char *name)
{
    for (size_t i = 0; i < CXR_ARRAY_SIZE(known_classes); i++)
        if (strcmp(name, known_classes[i]) == 0)
            return true;
    /* "Viral Pneumonia" and "Lung Opacity" (the database's spelling) are the same classes. */
    return strcmp(name, "Viral Pneumonia") == 0 || strcmp(name, "Lung Opacity") == 0;
}

static cxr_err analyse_file(const char *dir, struct xpl_image *img)
{
    char path[4096];
    char *data = NULL;
    size_t len = 0;
    cxr_err err;
    int n = snprintf(path, sizeof(path), "%s/%s", dir, img->path);

    if (n < 0 || (size_t)n >= sizeof(path)) {
        set_error(img, "path too long");
        return img->error ? CXR_OK : CXR_ENOMEM;
    }
    err = cxr_file_read(path, XPL_MAX_FILE_BYTES, &data, &len);
    if (err == CXR_ELIMIT) {
        set_error(img, "file larger than the 128 MiB limit");
        return img->error ? CXR_OK : CXR_ENOMEM;
    }
    if (err == CXR_ENOMEM)
        return err;
    if (err != CXR_OK) {
        char msg[160];
        (void)snprintf(msg, sizeof(msg), "cannot read the file: %s", cxr_strerror(err));
        set_error(img, msg);
        return img->error ? CXR_OK : CXR_ENOMEM;
    }
    img->bytes = len;
    if (!EVP_Digest(data, len, img->sha256, NULL, EVP_sha256(), NULL)) {
        free(data);
        return CXR_ENOMEM;
    }
    err = xpl_image_analyse((const unsigned char *)data, len, img);
    free(data);
    if (err == CXR_OK && !img->ok && !img->error)
        err = CXR_ENOMEM;
    return err;
}

/* ---- duplicates ---- */

/* Index comparators for glibc's qsort_r (the images are the context, no global state). */
static int cmp_sha(const void *a, const void *b, void *ctx)
{
    const struct xpl_image *img = ctx;

    return memcmp(img[*(const size_t *)a].sha256, img[*(const size_t *)b].sha256, 32);
}

static cxr_err find_duplicates(struct xpl_dataset *d)
{
    size_t *idx = NULL, m = 0, g = 0;
    size_t cap_pairs = 0;

    idx = malloc((d->n ? d->n : 1) * sizeof(*idx));
    d->exact_members = malloc((d->n ? d->n : 1) * sizeof(size_t));
    d->exact_start = malloc((d->n / 2 + 2) * sizeof(size_t));
    if (!idx || !d->exact_members || !d->exact_start) {
        free(idx);
        return CXR_ENOMEM;
    }
    for (size_t i = 0; i < d->n; i++)
        if (d->img[i].ok)
            idx[m++] = i;
    qsort_r(idx, m, sizeof(*idx), cmp_sha, d->img);
    {
        size_t used = 0;
        for (size_t a = 0; a < m;) {
            size_t b = a + 1;
            while (b < m && memcmp(d->img[idx[a]].sha256, d->img[idx[b]].sha256, 32) == 0)
                b++;
            if (b - a >= 2) {
                bool cross = false;
                d->exact_start[g++] = used;
                for (size_t j = a; j < b; j++) {
                    d->exact_members[used++] = idx[j];
                    cross |= d->img[idx[j]].cls != d->img[idx[a]].cls;
                }
                d->exact_cross_class += cross;
            }
            a = b;
        }
        d->exact_start[g] = used;
        d->n_exact_groups = g;
    }
    free(idx);

    for (size_t i = 0; i < d->n; i++) {
        const struct xpl_image *a = &d->img[i];
        if (!a->ok)
            continue;
        for (size_t j = i + 1; j < d->n; j++) {
            const struct xpl_image *b = &d->img[j];
            unsigned dist;
            double mad;
            if (!b->ok)
                continue;
            dist = (unsigned)__builtin_popcountll(a->dhash ^ b->dhash);
            if (dist > d->near_max_distance || memcmp(a->sha256, b->sha256, 32) == 0)
                continue;
            d->near_candidates++;
            mad = thumb_mad(a, b);
            if (mad > XPL_NEAR_MAD)
                continue;
            d->near_total++;
            d->near_cross_class += a->cls != b->cls;
            if (d->n_near >= XPL_MAX_PAIRS_KEPT)
                continue;
            if (d->n_near == cap_pairs) {
                size_t nc = cap_pairs ? cap_pairs * 2 : 64;
                struct xpl_pair *np = realloc(d->near, nc * sizeof(*np));
                if (!np)
                    return CXR_ENOMEM;
                d->near = np;
                cap_pairs = nc;
            }
            d->near[d->n_near++] = (struct xpl_pair){i, j, dist, mad};
        }
    }
    return CXR_OK;
}

/* ---- splits ---- */

static int cmp_path_idx(const void *a, const void *b, void *ctx)
{
    const struct xpl_image *img = ctx;

    return strcmp(img[*(const size_t *)a].path, img[*(const size_t *)b].path);
}

static cxr_err load_splits(struct xpl_dataset *d, const char *csv, struct cxr_buf *err_text)
{
    char *text = NULL, *line, *save = NULL;
    size_t *byp = NULL, lineno = 0;
    cxr_err err = cxr_file_read(csv, (size_t)256 * 1024 * 1024, &text, NULL);

    if (err != CXR_OK) {
        if (err_text)
            (void)cxr_buf_printf(err_text, "split file '%s': %s\n", csv, cxr_strerror(err));
        return err;
    }
    byp = malloc((d->n ? d->n : 1) * sizeof(*byp));
    if (!byp) {
        free(text);
        return CXR_ENOMEM;
    }
    for (size_t i = 0; i < d->n; i++) {
        byp[i] = i;
        d->img[i].split = -1;
    }
    qsort_r(byp, d->n, sizeof(*byp), cmp_path_idx, d->img);
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *comma, *split;
        size_t lo = 0, hi = d->n, s;
        lineno++;
        line[strcspn(line, "\r")] = '\0';
        if (!line[0])
            continue;
        comma = strrchr(line, ',');
        if (!comma) {
            if (err_text)
                (void)cxr_buf_printf(err_text, "split file '%s' line %zu: expected PATH,SPLIT\n",
                                     csv, lineno);
            err = CXR_EINVAL;
            break;
        }
        *comma = '\0';
        split = comma + 1;
        if (lineno == 1 && strcmp(split, "split") == 0)
            continue;
        if (strncmp(line, "./", 2) == 0)
            line += 2;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int c = strcmp(d->img[byp[mid]].path, line);
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo >= d->n || strcmp(d->img[byp[lo]].path, line) != 0) {
            d->split_unmatched++;
            continue;
        }
        for (s = 0; s < d->n_splits; s++)
            if (strcmp(d->splits[s], split) == 0)
                break;
        if (s == d->n_splits) {
            char **ns;
            if (d->n_splits >= 64) {
                if (err_text)
                    (void)cxr_buf_printf(err_text, "split file '%s': more than 64 split names\n",
                                         csv);
                err = CXR_ELIMIT;
                break;
            }
            ns = realloc(d->splits, (d->n_splits + 1) * sizeof(*ns));
            if (!ns) {
                err = CXR_ENOMEM;
                break;
            }
            d->splits = ns;
            d->splits[d->n_splits] = strdup(split);
            if (!d->splits[d->n_splits]) {
                err = CXR_ENOMEM;
                break;
            }
            d->n_splits++;
        }
        d->img[byp[lo]].split = (int)s;
    }
    free(byp);
    free(text);
    if (err != CXR_OK)
        return err;
    for (size_t i = 0; i < d->n; i++)
        if (d->img[i].ok && d->img[i].split < 0)
            d->split_missing++;
    for (size_t g = 0; g < d->n_exact_groups; g++) {
        int first = -1;
        bool cross = false;
        for (size_t j = d->exact_start[g]; j < d->exact_start[g + 1]; j++) {
            int s = d->img[d->exact_members[j]].split;
            if (s < 0)
                continue;
            if (first < 0)
                first = s;
            else if (s != first)
                cross = true;
        }
        d->leak_exact += cross;
    }
    for (size_t p = 0; p < d->n_near; p++) {
        int a = d->img[d->near[p].a].split, b = d->img[d->near[p].b].split;
        d->leak_near += a >= 0 && b >= 0 && a != b;
    }
    return CXR_OK;
}

cxr_err xpl_scan(const char *dir, const struct xpl_options *opt, struct xpl_dataset **ret,
                 struct cxr_buf *err_text)
{
    struct xpl_dataset *d = calloc(1, sizeof(*d));
    char **files = NULL;
    size_t nfiles = 0, top_files = 0, cap = 0;
    cxr_err err = CXR_ENOMEM;

    if (!d || !(d->dir = strdup(dir)))
        goto out_fail;
    d->near_max_distance = opt ? opt->near_max_distance : 4;
    err = list_dir(dir, true, &d->class_names, &d->n_classes, &top_files);
    if (err != CXR_OK) {
        if (err_text)
            (void)cxr_buf_printf(err_text, "data folder '%s': %s\n", dir,
                                 err == CXR_ENOTFOUND ? "no such directory" : cxr_strerror(err));
        goto out_fail;
    }
    if (d->n_classes < 2) {
        if (err_text)
            (void)cxr_buf_printf(err_text, "data folder '%s' has %zu class folder%s; it needs one "
                                 "folder per class and at least 2\n", dir, d->n_classes,
                                 d->n_classes == 1 ? "" : "s");
        err = CXR_EINVAL;
        goto out_fail;
    }
    if (d->n_classes > XPL_MAX_CLASSES) {
        if (err_text)
            (void)cxr_buf_printf(err_text, "data folder '%s' has %zu class folders, over the "
                                 "limit of %d\n", dir, d->n_classes, XPL_MAX_CLASSES);
        err = CXR_ELIMIT;
        goto out_fail;
    }
    err = CXR_ENOMEM;
    d->class_counts = calloc(d->n_classes, sizeof(size_t));
    d->class_files = calloc(d->n_classes, sizeof(size_t));
    if (!d->class_counts || !d->class_files)
        goto out_fail;
    if (top_files && (err = warn(d, "%zu file%s at the top of '%s' %s not in a class folder, "
                                 "ignoring", top_files, top_files == 1 ? "" : "s", dir,
                                 top_files == 1 ? "is" : "are")) != CXR_OK)
        goto out_fail;

    for (size_t c = 0; c < d->n_classes; c++) {
        char cdir[4096];
        size_t subdirs = 0;
        if ((err = cxr_path_join_safe(cdir, sizeof(cdir), dir, d->class_names[c])) != CXR_OK)
            goto out_fail;
        if ((err = list_dir(cdir, false, &files, &nfiles, &subdirs)) != CXR_OK) {
            if (err_text)
                (void)cxr_buf_printf(err_text, "class folder '%s': %s\n", cdir,
                                     cxr_strerror(err));
            goto out_fail;
        }
        if (!is_known_class(d->class_names[c]) &&
            (err = warn(d, "class folder '%s' is not one of the model's classes (COVID, "
                           "Lung_Opacity, Normal, Viral_Pneumonia); explored anyway",
                        d->class_names[c])) != CXR_OK)
            goto out_fail;
        if (nfiles == 0 &&
            (err = warn(d, "class folder '%s' has no files", d->class_names[c])) != CXR_OK)
            goto out_fail;
        if (subdirs &&
            (err = warn(d, "class folder '%s' holds %zu sub-folder%s, ignoring",
                        d->class_names[c], subdirs, subdirs == 1 ? "" : "s")) != CXR_OK)
            goto out_fail;
        if (d->n + nfiles > XPL_MAX_IMAGES) {
            if (err_text)
                (void)cxr_buf_printf(err_text, "data folder '%s' has more than %zu files\n", dir,
                                     XPL_MAX_IMAGES);
            err = CXR_ELIMIT;
            goto out_fail;
        }
        if (d->n + nfiles > cap) {
            size_t nc = (d->n + nfiles) * 2;
            struct xpl_image *ni = realloc(d->img, nc * sizeof(*ni));
            err = CXR_ENOMEM;
            if (!ni)
                goto out_fail;
            d->img = ni;
            cap = nc;
        }
        for (size_t f = 0; f < nfiles; f++) {
            struct xpl_image *img = &d->img[d->n];
            struct cxr_buf p;
            memset(img, 0, sizeof(*img));
            img->cls = c;
            img->split = -1;
            cxr_buf_init(&p, 8192);
            if ((err = cxr_buf_printf(&p, "%s/%s", d->class_names[c], files[f])) != CXR_OK ||
                (err = cxr_buf_take(&p, &img->path)) != CXR_OK)
                goto out_fail;
            d->n++;
            if ((err = analyse_file(dir, img)) != CXR_OK)
                goto out_fail;
            d->class_files[c]++;
            if (img->ok)
                d->class_counts[c]++;
            else
                d->n_unreadable++;
        }
        if (nfiles > 0 && d->class_counts[c] == 0 &&
            (err = warn(d, "class folder '%s' has no readable image", d->class_names[c])) !=
                CXR_OK)
            goto out_fail;
        free_names(files, nfiles);
        files = NULL;
        nfiles = 0;
    }
    if ((err = find_duplicates(d)) != CXR_OK)
        goto out_fail;
    if (opt && opt->split_csv && (err = load_splits(d, opt->split_csv, err_text)) != CXR_OK)
        goto out_fail;
    *ret = d;
    return CXR_OK;

out_fail:
    free_names(files, nfiles);
    xpl_dataset_free(d);
    return err;
}

/* ---- report ---- */

struct combo {
    uint32_t a, b; /* width/height, or bit depth/channels */
    int fmt;       /* 0 PNG, 1 JPEG (for depth combos) */
    size_t count;
};

static int cmp_combo(const void *x, const void *y)
{
    const struct combo *p = x, *q = y;

    if (p->fmt != q->fmt)
        return p->fmt - q->fmt;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    return (p->b > q->b) - (p->b < q->b);
}

static int cmp_combo_count(const void *x, const void *y)
{
    const struct combo *p = x, *q = y;

    if (p->count != q->count)
        return p->count < q->count ? 1 : -1;
    return cmp_combo(x, y);
}

/* Distinct (width, height) (depth == false) or (format, bit depth, channels) with counts,
 * most frequent first. */
static struct combo *combos(const struct xpl_dataset *d, bool depth, size_t *ret_n)
{
    struct combo *v = malloc((d->n ? d->n : 1) * sizeof(*v));
    size_t m = 0, out = 0;

    if (!v)
        return NULL;
    for (size_t i = 0; i < d->n; i++) {
        const struct xpl_image *im = &d->img[i];
        if (!im->ok)
            continue;
        v[m++] = depth ? (struct combo){(uint32_t)im->bit_depth, (uint32_t)im->channels,
                                        strcmp(im->format, "JPEG") == 0, 1}
                       : (struct combo){im->width, im->height, 0, 1};
    }
    if (m)
        qsort(v, m, sizeof(*v), cmp_combo);
    for (size_t i = 0; i < m; i++) {
        if (out && cmp_combo(&v[out - 1], &v[i]) == 0)
            v[out - 1].count++;
        else
            v[out++] = v[i];
    }
    if (out)
        qsort(v, out, sizeof(*v), cmp_combo_count);
    *ret_n = out;
    return v;
}

static double imbalance(const struct xpl_dataset *d)
{
    size_t lo = SIZE_MAX, hi = 0;

    for (size_t c = 0; c < d->n_classes; c++) {
        lo = d->class_counts[c] < lo ? d->class_counts[c] : lo;
        hi = d->class_counts[c] > hi ? d->class_counts[c] : hi;
    }
    return lo > 0 ? (double)hi / (double)lo : NAN;
}

/* Per class: mean and standard deviation over images of the image mean and image std. */
static void class_intensity(const struct xpl_dataset *d, size_t c, double out[4])
{
    double n = 0, sm = 0, smm = 0, ss = 0, sss = 0;

    for (size_t i = 0; i < d->n; i++) {
        const struct xpl_image *im = &d->img[i];
        if (!im->ok || im->cls != c)
            continue;
        n++;
        sm += im->mean;
        smm += im->mean * im->mean;
        ss += im->std;
        sss += im->std * im->std;
    }
    if (n == 0) {
        out[0] = out[1] = out[2] = out[3] = NAN;
        return;
    }
    out[0] = sm / n;
    out[1] = sqrt(fmax(smm / n - out[0] * out[0], 0));
    out[2] = ss / n;
    out[3] = sqrt(fmax(sss / n - out[2] * out[2], 0));
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char h[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = h[p[i] >> 4];
        out[2 * i + 1] = h[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void jput(json_t *o, const char *k, json_t *v, bool *ok)
{
    if (!v || !o || json_object_set_new(o, k, v) != 0)
        *ok = false;
}

static void jpush(json_t *a, json_t *v, bool *ok)
{
    if (!v || !a || json_array_append_new(a, v) != 0)
        *ok = false;
}

static json_t *jreal(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static void iso_now(char *out, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;

    if (!gmtime_r(&t, &tm) || strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        (void)snprintf(out, len, "unknown");
}

json_t *xpl_json(const struct xpl_dataset *d)
{
    bool ok = true;
    json_t *o = json_object(), *a;
    struct combo *cv;
    size_t nc = 0, readable = 0;
    char now[64];

    iso_now(now, sizeof(now));
    jput(o, "disclaimer", json_string(CXR_DISCLAIMER), &ok);
    jput(o, "generator", json_string("cxrtriage " CXR_VERSION), &ok);
    jput(o, "dir", json_string(d->dir), &ok);
    jput(o, "date", json_string(now), &ok);
    for (size_t c = 0; c < d->n_classes; c++)
        readable += d->class_counts[c];
    jput(o, "files", json_integer((json_int_t)d->n), &ok);
    jput(o, "images", json_integer((json_int_t)readable), &ok);
    a = json_array();
    for (size_t c = 0; c < d->n_classes; c++) {
        double ci[4];
        class_intensity(d, c, ci);
        jpush(a, json_pack("{s:s,s:I,s:I,s:o,s:o,s:o,s:o,s:o}", "name", d->class_names[c],
                           "files", (json_int_t)d->class_files[c], "images",
                           (json_int_t)d->class_counts[c], "share",
                           jreal(readable ? (double)d->class_counts[c] / (double)readable : NAN),
                           "brightness_mean", jreal(ci[0]), "brightness_sd", jreal(ci[1]),
                           "contrast_mean", jreal(ci[2]), "contrast_sd", jreal(ci[3])),
              &ok);
    }
    jput(o, "classes", a, &ok);
    jput(o, "imbalance_ratio", jreal(imbalance(d)), &ok);

    cv = combos(d, false, &nc);
    a = json_array();
    for (size_t i = 0; cv && i < nc; i++)
        jpush(a, json_pack("{s:I,s:I,s:I}", "width", (json_int_t)cv[i].a, "height",
                           (json_int_t)cv[i].b, "count", (json_int_t)cv[i].count), &ok);
    free(cv);
    jput(o, "sizes", a, &ok);
    cv = combos(d, true, &nc);
    a = json_array();
    for (size_t i = 0; cv && i < nc; i++)
        jpush(a, json_pack("{s:s,s:I,s:I,s:I}", "format", cv[i].fmt ? "JPEG" : "PNG", "bit_depth",
                           (json_int_t)cv[i].a, "channels", (json_int_t)cv[i].b, "count",
                           (json_int_t)cv[i].count), &ok);
    free(cv);
    jput(o, "bit_depths", a, &ok);

    a = json_array();
    for (size_t i = 0; i < d->n; i++) {
        const struct xpl_image *im = &d->img[i];
        char sha[65], dh[17];
        if (!im->ok)
            continue;
        hex(im->sha256, 32, sha);
        (void)snprintf(dh, sizeof(dh), "%016llx", (unsigned long long)im->dhash);
        jpush(a, json_pack("{s:s,s:s,s:s,s:I,s:I,s:i,s:i,s:o,s:o,s:s,s:s,s:I}", "path", im->path,
                           "class", d->class_names[im->cls], "format", im->format, "width",
                           (json_int_t)im->width, "height", (json_int_t)im->height, "bit_depth",
                           im->bit_depth, "channels", im->channels, "mean", jreal(im->mean),
                           "std", jreal(im->std), "dhash", dh, "sha256", sha, "bytes",
                           (json_int_t)im->bytes),
              &ok);
    }
    jput(o, "image_stats", a, &ok);

    {
        json_t *ex = json_object(), *list = json_array();
        for (size_t g = 0; g < d->n_exact_groups; g++) {
            json_t *grp = json_array();
            for (size_t j = d->exact_start[g]; j < d->exact_start[g + 1]; j++)
                jpush(grp, json_string(d->img[d->exact_members[j]].path), &ok);
            jpush(list, grp, &ok);
        }
        jput(ex, "groups", json_integer((json_int_t)d->n_exact_groups), &ok);
        jput(ex, "cross_class_groups", json_integer((json_int_t)d->exact_cross_class), &ok);
        jput(ex, "method", json_string("SHA-256 of the file bytes"), &ok);
        jput(ex, "list", list, &ok);
        jput(o, "exact_duplicates", ex, &ok);
    }
    {
        json_t *nr = json_object(), *list = json_array();
        for (size_t p = 0; p < d->n_near; p++) {
            const struct xpl_pair *pr = &d->near[p];
            jpush(list, json_pack("{s:s,s:s,s:i,s:o,s:b}", "a", d->img[pr->a].path, "b",
                                  d->img[pr->b].path, "distance", (int)pr->distance,
                                  "thumb_mad", jreal(pr->mad), "cross_class",
                                  d->img[pr->a].cls != d->img[pr->b].cls),
                  &ok);
        }
        jput(nr, "method", json_string("candidates: 64-bit dHash of a 9x8 grey thumbnail within "
                                       "max_distance bits, exact duplicates excluded; kept when "
                                       "the 16x16 grey thumbnails differ by at most max_mad "
                                       "(mean absolute difference, intensity in [0, 1])"), &ok);
        jput(nr, "max_distance", json_integer(d->near_max_distance), &ok);
        jput(nr, "max_mad", json_real(XPL_NEAR_MAD), &ok);
        jput(nr, "dhash_candidates", json_integer((json_int_t)d->near_candidates), &ok);
        jput(nr, "pairs", json_integer((json_int_t)d->near_total), &ok);
        jput(nr, "cross_class_pairs", json_integer((json_int_t)d->near_cross_class), &ok);
        jput(nr, "listed", json_integer((json_int_t)d->n_near), &ok);
        jput(nr, "list", list, &ok);
        jput(o, "near_duplicates", nr, &ok);
    }
    a = json_array();
    for (size_t i = 0; i < d->n; i++)
        if (!d->img[i].ok)
            jpush(a, json_pack("{s:s,s:s}", "path", d->img[i].path, "reason",
                               d->img[i].error ? d->img[i].error : "unknown"), &ok);
    jput(o, "unreadable", a, &ok);
    a = json_array();
    for (size_t i = 0; i < d->n_warnings; i++)
        jpush(a, json_string(d->warnings[i]), &ok);
    jput(o, "warnings", a, &ok);
    if (d->n_splits) {
        json_t *sp = json_object(), *names = json_array();
        for (size_t s = 0; s < d->n_splits; s++)
            jpush(names, json_string(d->splits[s]), &ok);
        jput(sp, "names", names, &ok);
        jput(sp, "exact_groups_across_splits", json_integer((json_int_t)d->leak_exact), &ok);
        jput(sp, "near_pairs_across_splits", json_integer((json_int_t)d->leak_near), &ok);
        jput(sp, "unmatched_lines", json_integer((json_int_t)d->split_unmatched), &ok);
        jput(sp, "images_without_split", json_integer((json_int_t)d->split_missing), &ok);
        jput(o, "splits", sp, &ok);
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}


static cxr_err td(struct cxr_buf *b, const char *s, bool left)
{
    TRY(cxr_buf_puts(b, left ? "<td class=\"l\">" : "<td>"));
    TRY(plot_esc(b, s));
    return cxr_buf_puts(b, "</td>");
}

static cxr_err html_classes(struct cxr_buf *b, const struct xpl_dataset *d, size_t readable)
{
    double vals[XPL_MAX_CLASSES];
    size_t cols[XPL_MAX_CLASSES];

    TRY(cxr_buf_puts(b, "<h2>Classes</h2>\n<div class=\"charts\">\n"));
    for (size_t c = 0; c < d->n_classes; c++) {
        vals[c] = (double)d->class_counts[c];
        cols[c] = c;
    }
    TRY(plot_bars(b, "Readable images per class", "images", (const char *const *)d->class_names,
                  vals, cols, d->n_classes));
    TRY(cxr_buf_puts(b, "<table><tr><th class=\"l\">class</th><th>files</th><th>readable images"
                        "</th><th>share</th></tr>\n"));
    for (size_t c = 0; c < d->n_classes; c++) {
        TRY(cxr_buf_puts(b, "<tr>"));
        TRY(td(b, d->class_names[c], true));
        TRY(cxr_buf_printf(b, "<td>%zu</td><td>%zu</td><td>", d->class_files[c],
                           d->class_counts[c]));
        TRY(plot_num(b, 1, readable ? 100.0 * (double)d->class_counts[c] / (double)readable : NAN));
        TRY(cxr_buf_puts(b, " %</td></tr>\n"));
    }
    TRY(cxr_buf_printf(b, "<tr><td class=\"l\"><b>total</b></td><td>%zu</td><td>%zu</td><td>"
                          "</td></tr>\n</table>\n</div>\n<p>Imbalance ratio (largest class / "
                          "smallest class): <b>",
                       d->n, readable));
    TRY(plot_num(b, 2, imbalance(d)));
    return cxr_buf_puts(b, "</b></p>\n");
}

static cxr_err html_sizes(struct cxr_buf *b, const struct xpl_dataset *d)
{
    size_t nc = 0;
    struct combo *cv = combos(d, false, &nc);
    cxr_err err = CXR_ENOMEM;
    double *xy = malloc((d->n ? d->n : 1) * 2 * sizeof(double));
    struct plot_series s[XPL_MAX_CLASSES];
    struct plot_axes ax = {"Image width and height", "width (pixels)", "height (pixels)",
                           0, 0, 0, 0, false, false};
    size_t used = 0;

    if (!cv || !xy)
        goto out_free;
    for (size_t c = 0; c < d->n_classes; c++) {
        size_t start = used;
        for (size_t i = 0; i < d->n; i++)
            if (d->img[i].ok && d->img[i].cls == c) {
                xy[used] = d->img[i].width;
                xy[d->n + used] = d->img[i].height;
                used++;
            }
        s[c] = (struct plot_series){d->class_names[c], used - start, xy + start,
                                    xy + d->n + start, c, false, true, false, false};
    }
    if ((err = cxr_buf_puts(b, "<h2>Image sizes and bit depths</h2>\n<div class=\"charts\">\n")) !=
        CXR_OK)
        goto out_free;
    if ((err = plot_lines(b, &ax, s, d->n_classes)) != CXR_OK)
        goto out_free;
    if ((err = cxr_buf_puts(b, "<table><tr><th>width &times; height</th><th>images</th></tr>\n")) !=
        CXR_OK)
        goto out_free;
    for (size_t i = 0; i < nc && i < 15; i++)
        if ((err = cxr_buf_printf(b, "<tr><td>%u &times; %u</td><td>%zu</td></tr>\n", cv[i].a,
                                  cv[i].b, cv[i].count)) != CXR_OK)
            goto out_free;
    if (nc > 15 &&
        (err = cxr_buf_printf(b, "<tr><td colspan=\"2\">%zu more sizes</td></tr>\n", nc - 15)) !=
            CXR_OK)
        goto out_free;
    free(cv);
    cv = combos(d, true, &nc);
    err = CXR_ENOMEM;
    if (!cv)
        goto out_free;
    if ((err = cxr_buf_puts(b, "</table>\n<table><tr><th>format</th><th>bits per sample</th>"
                               "<th>channels</th><th>images</th></tr>\n")) != CXR_OK)
        goto out_free;
    for (size_t i = 0; i < nc; i++) {
        static const char *const chn[] = {"?", "grey", "grey + alpha", "colour", "colour + alpha"};
        if ((err = cxr_buf_printf(b, "<tr><td>%s</td><td>%u</td><td>%s</td><td>%zu</td></tr>\n",
                                  cv[i].fmt ? "JPEG" : "PNG", cv[i].a,
                                  cv[i].b <= 4 ? chn[cv[i].b] : "?", cv[i].count)) != CXR_OK)
            goto out_free;
    }
    err = cxr_buf_puts(b, "</table>\n</div>\n");
out_free:
    free(cv);
    free(xy);
    return err;
}

static cxr_err html_intensity(struct cxr_buf *b, const struct xpl_dataset *d)
{
    enum { NB = 20 };
    double *xy = malloc((d->n ? d->n : 1) * 2 * sizeof(double));
    double *hb = calloc((d->n_classes ? d->n_classes : 1) * NB, sizeof(double));
    double *hc = calloc((d->n_classes ? d->n_classes : 1) * NB, sizeof(double));
    struct plot_series s[XPL_MAX_CLASSES];
    struct plot_axes ax = {"Brightness and contrast per image", "mean intensity (0 black, 1 white)",
                           "standard deviation of intensity", 0, 1, 0, 0, false, false};
    size_t used = 0;
    cxr_err err = CXR_ENOMEM;

    if (!xy || !hb || !hc)
        goto out_free;
    for (size_t c = 0; c < d->n_classes; c++) {
        size_t start = used;
        for (size_t i = 0; i < d->n; i++) {
            const struct xpl_image *im = &d->img[i];
            if (!im->ok || im->cls != c)
                continue;
            xy[used] = im->mean;
            xy[d->n + used] = im->std;
            used++;
            hb[c * NB + (size_t)fmin(NB - 1, fmax(0, floor(im->mean * NB)))] += 1;
            hc[c * NB + (size_t)fmin(NB - 1, fmax(0, floor(im->std / 0.5 * NB)))] += 1;
        }
        s[c] = (struct plot_series){d->class_names[c], used - start, xy + start,
                                    xy + d->n + start, c, false, true, false, false};
    }
    if ((err = cxr_buf_puts(b, "<h2>Brightness and contrast</h2>\n<div class=\"charts\">\n")) !=
        CXR_OK)
        goto out_free;
    if ((err = plot_lines(b, &ax, s, d->n_classes)) != CXR_OK)
        goto out_free;
    if ((err = plot_histograms(b, "Brightness (mean intensity) per class", "mean intensity",
                               (const char *const *)d->class_names, hb, d->n_classes, NB, 0, 1,
                               true)) != CXR_OK)
        goto out_free;
    if ((err = plot_histograms(b, "Contrast (standard deviation) per class",
                               "standard deviation of intensity",
                               (const char *const *)d->class_names, hc, d->n_classes, NB, 0, 0.5,
                               true)) != CXR_OK)
        goto out_free;
    if ((err = cxr_buf_puts(b, "<table><tr><th class=\"l\">class</th><th>brightness<br>mean "
                               "&plusmn; sd</th><th>contrast<br>mean &plusmn; sd</th></tr>\n")) !=
        CXR_OK)
        goto out_free;
    for (size_t c = 0; c < d->n_classes; c++) {
        double ci[4];
        class_intensity(d, c, ci);
        if ((err = cxr_buf_puts(b, "<tr>")) != CXR_OK ||
            (err = td(b, d->class_names[c], true)) != CXR_OK ||
            (err = cxr_buf_puts(b, "<td>")) != CXR_OK || (err = plot_num(b, 3, ci[0])) != CXR_OK ||
            (err = cxr_buf_puts(b, " &plusmn; ")) != CXR_OK ||
            (err = plot_num(b, 3, ci[1])) != CXR_OK ||
            (err = cxr_buf_puts(b, "</td><td>")) != CXR_OK ||
            (err = plot_num(b, 3, ci[2])) != CXR_OK ||
            (err = cxr_buf_puts(b, " &plusmn; ")) != CXR_OK ||
            (err = plot_num(b, 3, ci[3])) != CXR_OK ||
            (err = cxr_buf_puts(b, "</td></tr>\n")) != CXR_OK)
            goto out_free;
    }
    if ((err = cxr_buf_puts(b, "</table>\n")) != CXR_OK)
        goto out_free;
    err = cxr_buf_puts(b, "</div>\n<p class=\"note\">Intensity is the luminance scaled to [0, 1] "
                          "from the file's own bit depth. Classes that differ here can be told "
                          "apart by exposure rather than by disease: a shortcut to check.</p>\n");
out_free:
    free(xy);
    free(hb);
    free(hc);
    return err;
}

static cxr_err html_dups(struct cxr_buf *b, const struct xpl_dataset *d)
{
    TRY(cxr_buf_printf(b, "<h2>Duplicates</h2>\n<p>Exact duplicates (same SHA-256 of the file "
                          "bytes): <b>%zu</b> group%s, <b>%zu</b> across classes.</p>\n",
                       d->n_exact_groups, d->n_exact_groups == 1 ? "" : "s",
                       d->exact_cross_class));
    if (d->n_exact_groups) {
        TRY(cxr_buf_puts(b, "<table><tr><th>group</th><th class=\"l\">files</th><th>classes"
                            "</th></tr>\n"));
        for (size_t g = 0; g < d->n_exact_groups && g < 200; g++) {
            bool cross = false;
            TRY(cxr_buf_printf(b, "<tr><td>%zu</td><td class=\"l\">", g + 1));
            for (size_t j = d->exact_start[g]; j < d->exact_start[g + 1]; j++) {
                const struct xpl_image *im = &d->img[d->exact_members[j]];
                cross |= im->cls != d->img[d->exact_members[d->exact_start[g]]].cls;
                TRY(plot_esc(b, im->path));
                TRY(cxr_buf_puts(b, "<br>"));
            }
            TRY(cxr_buf_printf(b, "</td><td>%s</td></tr>\n",
                               cross ? "<span class=\"warn\">across classes</span>" : "same"));
        }
        TRY(cxr_buf_puts(b, "</table>\n"));
    }
    TRY(cxr_buf_printf(b, "<p>Near duplicates: <b>%zu</b> pair%s, <b>%zu</b> across classes. "
                          "Candidates are pairs whose 64-bit dHash (9&times;8 grey thumbnail) "
                          "differ in at most %u bits (%zu pairs, exact duplicates excluded); a "
                          "candidate is kept when the 16&times;16 grey thumbnails differ by at "
                          "most %.2f on average (intensity 0..1), because at 9&times;8 most "
                          "chest radiographs look alike.</p>\n",
                       d->near_total, d->near_total == 1 ? "" : "s", d->near_cross_class,
                       d->near_max_distance, d->near_candidates, XPL_NEAR_MAD));
    if (d->n_near) {
        TRY(cxr_buf_puts(b, "<table><tr><th class=\"l\">image</th><th class=\"l\">image</th>"
                            "<th>dHash distance</th><th>thumbnail difference</th><th>classes</th></tr>\n"));
        for (size_t p = 0; p < d->n_near && p < 300; p++) {
            const struct xpl_pair *pr = &d->near[p];
            TRY(cxr_buf_puts(b, "<tr>"));
            TRY(td(b, d->img[pr->a].path, true));
            TRY(td(b, d->img[pr->b].path, true));
            TRY(cxr_buf_printf(b, "<td>%u</td><td>%.4f</td><td>%s</td></tr>\n", pr->distance,
                               pr->mad,
                               d->img[pr->a].cls != d->img[pr->b].cls
                                   ? "<span class=\"warn\">across classes</span>"
                                   : "same"));
        }
        TRY(cxr_buf_puts(b, "</table>\n"));
        if (d->near_total > 300)
            TRY(cxr_buf_printf(b, "<p class=\"note\">%zu more pairs are in the JSON (up to %zu)."
                                  "</p>\n",
                               d->near_total - 300, XPL_MAX_PAIRS_KEPT));
    }
    if (d->n_splits) {
        TRY(cxr_buf_puts(b, "<h2>Leakage across splits</h2>\n<p>Splits: "));
        for (size_t s = 0; s < d->n_splits; s++) {
            TRY(cxr_buf_puts(b, s ? ", " : ""));
            TRY(plot_esc(b, d->splits[s]));
        }
        TRY(cxr_buf_printf(b, ". Exact-duplicate groups across splits: <b%s>%zu</b>; "
                              "near-duplicate pairs across splits: <b%s>%zu</b>. Split-file lines "
                              "naming no image: %zu; readable images without a split: %zu.</p>\n",
                           d->leak_exact ? " class=\"warn\"" : "", d->leak_exact,
                           d->leak_near ? " class=\"warn\"" : "", d->leak_near,
                           d->split_unmatched, d->split_missing));
    }
    return CXR_OK;
}

cxr_err xpl_html(const struct xpl_dataset *d, struct cxr_buf *b)
{
    char now[64];
    size_t readable = 0;

    if (!d || !b)
        return CXR_EINVAL;
    for (size_t c = 0; c < d->n_classes; c++)
        readable += d->class_counts[c];
    iso_now(now, sizeof(now));
    TRY(plot_page_begin(b, "cxrtriage data set report"));
    TRY(cxr_buf_puts(b, "<dl class=\"meta\"><dt>data folder</dt><dd>"));
    TRY(plot_esc(b, d->dir));
    TRY(cxr_buf_printf(b, "</dd><dt>date</dt><dd>%s</dd><dt>files</dt><dd>%zu (%zu readable "
                          "images, %zu unreadable)</dd><dt>classes</dt><dd>%zu</dd></dl>\n",
                       now, d->n, readable, d->n_unreadable, d->n_classes));
    if (d->n_warnings) {
        TRY(cxr_buf_puts(b, "<h2>Warnings</h2>\n<ul>\n"));
        for (size_t i = 0; i < d->n_warnings; i++) {
            TRY(cxr_buf_puts(b, "<li class=\"warn\">"));
            TRY(plot_esc(b, d->warnings[i]));
            TRY(cxr_buf_puts(b, "</li>\n"));
        }
        TRY(cxr_buf_puts(b, "</ul>\n"));
    }
    TRY(html_classes(b, d, readable));
    TRY(html_sizes(b, d));
    TRY(html_intensity(b, d));
    TRY(html_dups(b, d));
    TRY(cxr_buf_printf(b, "<h2>Unreadable files</h2>\n<p>%zu file%s could not be decoded.</p>\n",
                       d->n_unreadable, d->n_unreadable == 1 ? "" : "s"));
    if (d->n_unreadable) {
        TRY(cxr_buf_puts(b, "<table><tr><th class=\"l\">file</th><th class=\"l\">reason</th>"
                            "</tr>\n"));
        for (size_t i = 0; i < d->n; i++) {
            if (d->img[i].ok)
                continue;
            TRY(cxr_buf_puts(b, "<tr>"));
            TRY(td(b, d->img[i].path, true));
            TRY(td(b, d->img[i].error ? d->img[i].error : "unknown", true));
            TRY(cxr_buf_puts(b, "</tr>\n"));
        }
        TRY(cxr_buf_puts(b, "</table>\n"));
    }
    return plot_page_end(b);
}
