/*
 * plot.h - self-contained HTML pages with inline SVG charts, shared by the evaluation report
 * (report.c) and the data-set report (explore.c).
 *
 * Everything is appended to a bounded struct cxr_buf; nothing refers to an external script,
 * font or image, so a page opens offline. Every text that comes from outside (class names,
 * file paths, titles) goes through plot_esc(). Colours are the Okabe-Ito palette, which stays
 * distinguishable with the common colour-vision deficiencies.
 */
#ifndef CXR_TRAINER_PLOT_H
#define CXR_TRAINER_PLOT_H

/* Returns from the enclosing function when x, a cxr_err expression, is not CXR_OK (the HTML
 * writers chain many appends). */
#define TRY(x)                                                                                   \
    do {                                                                                         \
        cxr_err e_ = (x);                                                                        \
        if (e_ != CXR_OK)                                                                        \
            return e_;                                                                           \
    } while (0)

#include <stdbool.h>
#include <stddef.h>

#include "common.h"

/* Colour i of the palette (cycles). */
const char *plot_color(size_t i);

/* Appends s with & < > " ' escaped (for HTML text, attributes and SVG text). */
cxr_err plot_esc(struct cxr_buf *b, const char *s);
/* Appends the first n bytes of s, escaped. */
cxr_err plot_escn(struct cxr_buf *b, const char *s, size_t n);

/* Opens the page: doctype, styles, <h1>title</h1>, and the disclaimer banner. */
cxr_err plot_page_begin(struct cxr_buf *b, const char *title);
cxr_err plot_page_end(struct cxr_buf *b);

/* A number with that many decimals, "n/a" for NaN. */
cxr_err plot_num(struct cxr_buf *b, int decimals, double v);

struct plot_series {
    const char *name; /* legend text; NULL: no legend entry */
    size_t n;
    const double *x, *y; /* NaN points are skipped */
    size_t color;        /* palette index */
    bool markers;        /* draw a dot at each point */
    bool no_line;        /* markers only (scatter) */
    bool dashed;
    bool step;           /* post-step line (PR curves) */
};

struct plot_axes {
    const char *title, *xlabel, *ylabel;
    double xmin, xmax, ymin, ymax; /* xmin == xmax: from the data (same for y) */
    bool diagonal;                 /* dashed y = x reference line */
    bool integer_x;                /* ticks at whole numbers only */
};

/* A line / scatter chart with axes, ticks, labels and a legend. */
cxr_err plot_lines(struct cxr_buf *b, const struct plot_axes *ax, const struct plot_series *s,
                   size_t ns);

/* A bar chart of n categories; values[i] with labels[i]; color per bar from colors (NULL: 0). */
cxr_err plot_bars(struct cxr_buf *b, const char *title, const char *ylabel,
                  const char *const *labels, const double *values, const size_t *colors,
                  size_t n);

/*
 * Overlaid histograms: ns series of nbins counts each over [lo, hi]; drawn as outlined steps.
 * counts is ns * nbins, row per series.
 */
cxr_err plot_histograms(struct cxr_buf *b, const char *title, const char *xlabel,
                        const char *const *names, const double *counts, size_t ns,
                        size_t nbins, double lo, double hi, bool normalise);

/*
 * A k x k heat map: cell colour from shade[r*k+c] in [0, 1], cell text from text (NULL: the
 * shade as a percentage). Row labels on the left (true class), column labels below.
 */
cxr_err plot_heatmap(struct cxr_buf *b, const char *title, const char *const *labels, size_t k,
                     const double *shade, const char *const *text, const char *rowlabel,
                     const char *collabel);

#endif
