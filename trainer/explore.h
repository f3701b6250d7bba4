/*
 * explore.h - the data-set report behind `cxrtriage-train explore`: class counts and
 * imbalance, image sizes, bit depths and colour types, per-image brightness and contrast,
 * exact duplicates (SHA-256 of the file bytes), near duplicates, unreadable files with the
 * reason, and with a split file, duplicates that cross splits (leakage).
 *
 * Near duplicates: candidates are pairs whose 64-bit dHash (9x8 grey thumbnail) differ in at
 * most near_max_distance bits. Chest radiographs look alike at 9x8 (on cxr4, distance <= 4
 * pairs 15 k different images), so a candidate counts as a near duplicate only when the
 * mean absolute difference of the two 16x16 grey thumbnails (intensity in [0, 1]) is at most
 * XPL_NEAR_MAD; on cxr4 true re-encodings measure < 0.001 and different patients > 0.05.
 *
 * DIR holds one folder per class (any number from 2 up) with PNG and JPEG files, decoded by
 * the pixel path's own readers (dicom/imgio.c; colour converted to luminance), so a file that
 * explore reads is one training reads. The statistics are computed on the decoded samples. Library code: nothing is logged, problems are
 * recorded in the result (unreadable files, warnings) or returned with a message.
 */
#ifndef CXR_TRAINER_EXPLORE_H
#define CXR_TRAINER_EXPLORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define XPL_MAX_CLASSES 64
#define XPL_MAX_IMAGES ((size_t)200000)
#define XPL_MAX_FILE_BYTES ((size_t)128 * 1024 * 1024)
#define XPL_MAX_PIXELS ((uint64_t)64 * 1024 * 1024)
#define XPL_MAX_PAIRS_KEPT ((size_t)20000)
#define XPL_NEAR_MAD 0.03

struct xpl_options {
    unsigned near_max_distance; /* dHash Hamming distance for "near duplicate"; 4 is usual */
    const char *split_csv;      /* NULL, or a CSV "path,split" (path relative to DIR) */
};

struct xpl_image {
    char *path;      /* "Class/file.png", relative to DIR */
    size_t cls;
    bool ok;         /* decoded */
    char *error;     /* why not, when !ok */
    char format[8];  /* "PNG" or "JPEG" */
    uint32_t width, height;
    int bit_depth;   /* bits per sample in the file */
    int channels;    /* 1 grey, 2 grey+alpha, 3 colour, 4 colour+alpha */
    double mean, std; /* of the luminance scaled to [0, 1] */
    uint64_t dhash;
    uint8_t thumb[16 * 16]; /* area-averaged 16x16 grey thumbnail, confirms near duplicates */
    uint8_t sha256[32];
    size_t bytes;
    int split;       /* index into splits, -1 when unknown */
};

struct xpl_pair {
    size_t a, b;      /* image indices, a < b */
    unsigned distance; /* dHash Hamming distance */
    double mad;        /* mean absolute difference of the 16x16 thumbnails */
};

struct xpl_dataset {
    char *dir;
    size_t n_classes;
    char **class_names;
    size_t *class_counts; /* readable images per class */
    size_t *class_files;  /* all files per class */
    struct xpl_image *img;
    size_t n;
    size_t n_unreadable;
    /* exact duplicates: groups of images with the same SHA-256 */
    size_t *exact_members; /* image indices, grouped */
    size_t *exact_start;   /* group g spans exact_members[exact_start[g] .. exact_start[g+1]) */
    size_t n_exact_groups;
    size_t exact_cross_class; /* groups spanning more than one class */
    /* near duplicates: pairs with distance <= threshold and different SHA-256 */
    struct xpl_pair *near; /* the first XPL_MAX_PAIRS_KEPT pairs */
    size_t n_near;         /* pairs kept */
    size_t near_total;     /* pairs found */
    size_t near_candidates; /* dHash-only candidates (before the thumbnail check) */
    size_t near_cross_class;
    unsigned near_max_distance;
    /* splits (only with a split file) */
    char **splits;
    size_t n_splits;
    size_t leak_exact, leak_near; /* duplicate groups / pairs that cross splits */
    size_t split_unmatched;       /* split-file lines naming no image */
    size_t split_missing;         /* readable images the split file does not name */
    char **warnings;
    size_t n_warnings;
};

/*
 * Scans dir. On success *ret owns a new data set (xpl_dataset_free); unreadable images and
 * odd folders are recorded in it, not errors. Errors (with a line in err_text naming the path):
 * CXR_ENOTFOUND (dir or the split file missing), CXR_EINVAL (fewer than 2 class folders, a bad
 * split file), CXR_ELIMIT (more than XPL_MAX_IMAGES files or XPL_MAX_CLASSES classes),
 * CXR_EIO, CXR_ENOMEM.
 */
cxr_err xpl_scan(const char *dir, const struct xpl_options *opt, struct xpl_dataset **ret,
                 struct cxr_buf *err_text);

void xpl_dataset_free(struct xpl_dataset *d);

/* Decodes one PNG or JPEG held in memory and fills the statistics of img (ok, format, size,
 * bit depth, channels, mean, std, dhash); on failure img->error explains. Exposed for tests. */
cxr_err xpl_image_analyse(const unsigned char *data, size_t len, struct xpl_image *img);

/* The report as JSON (json_decref) or HTML (appended to out). */
json_t *xpl_json(const struct xpl_dataset *d);
cxr_err xpl_html(const struct xpl_dataset *d, struct cxr_buf *out);

#endif
