/*
 * plot.c - HTML page skeleton and inline SVG charts; see plot.h.
 *
 * Charts share one geometry: a W x H view box, the plot area inset by fixed margins, ticks
 * from a 1-2-5 "nice step" rule, axis labels outside the area and the legend in a column to
 * the right, so long class names never overlap the data.
 */
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define W 700.0
#define H 400.0
#define ML 64.0  /* left margin: y tick labels and y label */
#define MR 230.0 /* right margin: legend */
#define MT 36.0  /* top: title */
#define MB 54.0  /* bottom: x tick labels and x label */

static const char *const palette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                      "#E69F00", "#56B4E9", "#000000", "#8C6D00"};

const char *plot_color(size_t i)
{
    return palette[i % CXR_ARRAY_SIZE(palette)];
}

#define TRY(x)                                                                                   \
    do {                                                                                         \
        cxr_err e_ = (x);                                                                        \
        if (e_ != CXR_OK)                                                                        \
            return e_;                                                                           \
    } while (0)

cxr_err plot_escn(struct cxr_buf *b, const char *s, size_t n)
{
    size_t run = 0;

    if (!s)
        return CXR_OK;
    for (size_t i = 0; i < n && s[i]; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default:
            /* Control characters would make the XML of the SVG invalid. */
            if ((unsigned char)s[i] < 0x20 && s[i] != '\n' && s[i] != '\t')
                rep = "?";
            break;
        }
        if (!rep)
            continue;
        TRY(cxr_buf_append(b, s + run, i - run));
        TRY(cxr_buf_puts(b, rep));
        run = i + 1;
    }
    return cxr_buf_append(b, s + run, strnlen(s + run, n - run));
}

cxr_err plot_esc(struct cxr_buf *b, const char *s)
{
    return s ? plot_escn(b, s, strlen(s)) : CXR_OK;
}

cxr_err plot_num(struct cxr_buf *b, int decimals, double v)
{
    if (isnan(v))
        return cxr_buf_puts(b, "n/a");
    return cxr_buf_printf(b, "%.*f", decimals, v);
}

static const char css[] =
    "*{box-sizing:border-box}"
    "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,"
    "sans-serif;margin:0;padding:24px 32px;color:#1a1a1a;background:#fff;line-height:1.45;"
    "max-width:1400px}"
    "h1{font-size:26px;margin:0 0 8px}h2{font-size:20px;margin:28px 0 10px;"
    "border-bottom:2px solid #e3e3e3;padding-bottom:4px}"
    ".disclaimer{background:#fff4ce;border:2px solid #b8860b;color:#3d2e00;padding:10px 14px;"
    "border-radius:6px;font-weight:600;margin:10px 0 18px}"
    ".meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:14px}"
    ".meta dt{font-weight:600;color:#444}.meta dd{margin:0;font-family:ui-monospace,"
    "'DejaVu Sans Mono',monospace;word-break:break-all}"
    "table{border-collapse:collapse;font-size:14px;margin:6px 0 12px}"
    "th,td{border:1px solid #d0d0d0;padding:4px 10px;text-align:right}"
    "th{background:#f3f5f7;text-align:center}td.l,th.l{text-align:left}"
    "tr:nth-child(even) td{background:#fafafa}"
    ".ci{color:#555;font-size:12px}"
    ".charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}"
    ".charts>svg{border:1px solid #e3e3e3;border-radius:4px;background:#fff;"
    "width:calc(50% - 8px);min-width:420px;height:auto}"
    ".note{color:#444;font-size:13px;max-width:900px}"
    ".warn{color:#8a1c00;font-weight:600}"
    ".gallery{display:flex;flex-wrap:wrap;gap:12px}"
    ".gallery figure{margin:0;width:200px;font-size:12px}"
    ".gallery .path{color:#555;word-break:break-all}"
    ".gallery img{width:200px;height:200px;object-fit:contain;background:#000}"
    "svg text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif}";

cxr_err plot_page_begin(struct cxr_buf *b, const char *title)
{
    TRY(cxr_buf_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n"
                        "<title>"));
    TRY(plot_esc(b, title));
    TRY(cxr_buf_printf(b, "</title>\n<style>%s</style>\n</head><body>\n<h1>", css));
    TRY(plot_esc(b, title));
    TRY(cxr_buf_puts(b, "</h1>\n<div class=\"disclaimer\" role=\"note\">"));
    TRY(plot_esc(b, CXR_DISCLAIMER));
    return cxr_buf_puts(b, "</div>\n");
}

cxr_err plot_page_end(struct cxr_buf *b)
{
    TRY(cxr_buf_puts(b, "<p class=\"note\">"));
    TRY(plot_esc(b, CXR_DISCLAIMER));
    TRY(cxr_buf_printf(b, " Generated by cxrtriage %s.</p>\n</body></html>\n", CXR_VERSION));
    return CXR_OK;
}

/* ---- axes ---- */

struct frame {
    double x0, x1, y0, y1; /* data range */
    double px0, px1, py0, py1; /* pixel box: px0 left, py0 bottom */
};

static double sx(const struct frame *f, double x)
{
    return f->px0 + (x - f->x0) / (f->x1 - f->x0) * (f->px1 - f->px0);
}

static double sy(const struct frame *f, double y)
{
    return f->py0 - (y - f->y0) / (f->y1 - f->y0) * (f->py0 - f->py1);
}

static double nice_step(double range, int target)
{
    double raw = range / target, mag, m;

    if (!(raw > 0) || !isfinite(raw))
        return 1;
    mag = pow(10, floor(log10(raw)));
    m = raw / mag;
    if (m < 1.5)
        return mag;
    if (m < 3.5)
        return 2 * mag;
    if (m < 7.5)
        return 5 * mag;
    return 10 * mag;
}

static void nice_range(double *lo, double *hi, bool integer)
{
    double step;

    if (!isfinite(*lo) || !isfinite(*hi)) {
        *lo = 0;
        *hi = 1;
    }
    if (*hi - *lo < 1e-12) {
        double pad = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 1;
        *lo -= pad;
        *hi += pad;
    }
    step = nice_step(*hi - *lo, 5);
    if (integer && step < 1)
        step = 1;
    *lo = floor(*lo / step) * step;
    *hi = ceil(*hi / step) * step;
}

static cxr_err fmt_tick(struct cxr_buf *b, double v, double step)
{
    char tmp[32];

    if (fabs(v) < step * 1e-6)
        v = 0;
    if (step >= 1 && fabs(v) < 1e15)
        (void)snprintf(tmp, sizeof(tmp), "%.0f", v);
    else if (step >= 0.1)
        (void)snprintf(tmp, sizeof(tmp), "%.1f", v);
    else if (step >= 0.01)
        (void)snprintf(tmp, sizeof(tmp), "%.2f", v);
    else
        (void)snprintf(tmp, sizeof(tmp), "%.3g", v);
    return cxr_buf_puts(b, tmp);
}

static cxr_err svg_open(struct cxr_buf *b, const char *title, double w, double h)
{
    TRY(cxr_buf_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                          "viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"",
                       w, h, w, h));
    TRY(plot_esc(b, title));
    TRY(cxr_buf_printf(b, "\"><text x=\"%.0f\" y=\"22\" font-size=\"16\" font-weight=\"600\" "
                          "fill=\"#1a1a1a\">",
                       ML));
    TRY(plot_esc(b, title));
    return cxr_buf_puts(b, "</text>\n");
}

/* Frame, grid, ticks and labels. */
static cxr_err draw_axes(struct cxr_buf *b, const struct frame *f, const char *xlabel,
                         const char *ylabel, bool integer_x, bool xticks)
{
    double xs = nice_step(f->x1 - f->x0, 6), ys = nice_step(f->y1 - f->y0, 5);

    if (integer_x && xs < 1)
        xs = 1;
    TRY(cxr_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                          "fill=\"none\" stroke=\"#888\"/>\n",
                       f->px0, f->py1, f->px1 - f->px0, f->py0 - f->py1));
    /* Integer tick counters (bounded: the step gives about 5 ticks) avoid drift. */
    for (long t = lround(ceil(f->y0 / ys - 1e-9)); (double)t * ys <= f->y1 + ys * 1e-9; t++) {
        double y = (double)t * ys, py = sy(f, y);
        TRY(cxr_buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                              "stroke=\"#e6e6e6\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" "
                              "text-anchor=\"end\" fill=\"#333\">",
                           f->px0, py, f->px1, py, f->px0 - 6, py + 4));
        TRY(fmt_tick(b, y, ys));
        TRY(cxr_buf_puts(b, "</text>\n"));
    }
    if (xticks)
        for (long t = lround(ceil(f->x0 / xs - 1e-9)); (double)t * xs <= f->x1 + xs * 1e-9;
             t++) {
            double x = (double)t * xs, px = sx(f, x);
            TRY(cxr_buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                                  "stroke=\"#e6e6e6\"/><text x=\"%.1f\" y=\"%.1f\" "
                                  "font-size=\"12\" text-anchor=\"middle\" fill=\"#333\">",
                               px, f->py0, px, f->py1, px, f->py0 + 16));
            TRY(fmt_tick(b, x, xs));
            TRY(cxr_buf_puts(b, "</text>\n"));
        }
    TRY(cxr_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" "
                          "fill=\"#1a1a1a\">",
                       (f->px0 + f->px1) / 2, f->py0 + 40));
    TRY(plot_esc(b, xlabel));
    TRY(cxr_buf_printf(b, "</text><text transform=\"translate(16,%.1f) rotate(-90)\" "
                          "font-size=\"13\" text-anchor=\"middle\" fill=\"#1a1a1a\">",
                       (f->py0 + f->py1) / 2));
    TRY(plot_esc(b, ylabel));
    return cxr_buf_puts(b, "</text>\n");
}

static cxr_err legend_entry(struct cxr_buf *b, size_t row, const char *name, size_t color,
                            bool dashed, bool marker)
{
    double y = MT + 14 + 20.0 * (double)row, x = W - MR + 14;

    if (marker)
        TRY(cxr_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>", x + 10,
                           y - 4, plot_color(color)));
    else
        TRY(cxr_buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                              "stroke=\"%s\" stroke-width=\"3\"%s/>",
                           x, y - 4, x + 20, y - 4, plot_color(color),
                           dashed ? " stroke-dasharray=\"5,3\"" : ""));
    TRY(cxr_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#1a1a1a\">",
                       x + 26, y));
    /* Long names are cut so the legend column never runs off the picture. */
    TRY(plot_escn(b, name, 30));
    if (strlen(name) > 30)
        TRY(cxr_buf_puts(b, "\xe2\x80\xa6"));
    return cxr_buf_puts(b, "</text>\n");
}

static void data_range(const struct plot_series *s, size_t ns, bool want_x, double *lo,
                       double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (size_t i = 0; i < ns; i++)
        for (size_t j = 0; j < s[i].n; j++) {
            double v = want_x ? s[i].x[j] : s[i].y[j];
            if (!isfinite(v))
                continue;
            *lo = fmin(*lo, v);
            *hi = fmax(*hi, v);
        }
}

cxr_err plot_lines(struct cxr_buf *b, const struct plot_axes *ax, const struct plot_series *s,
                   size_t ns)
{
    struct frame f = {ax->xmin, ax->xmax, ax->ymin, ax->ymax, ML, W - MR, H - MB, MT};
    size_t row = 0;

    if (f.x0 == f.x1) {
        data_range(s, ns, true, &f.x0, &f.x1);
        nice_range(&f.x0, &f.x1, ax->integer_x);
    }
    if (f.y0 == f.y1) {
        data_range(s, ns, false, &f.y0, &f.y1);
        nice_range(&f.y0, &f.y1, false);
    }
    TRY(svg_open(b, ax->title, W, H));
    TRY(draw_axes(b, &f, ax->xlabel, ax->ylabel, ax->integer_x, true));
    if (ax->diagonal)
        TRY(cxr_buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                              "stroke=\"#999\" stroke-dasharray=\"4,4\"/>\n",
                           sx(&f, fmax(f.x0, f.y0)), sy(&f, fmax(f.x0, f.y0)),
                           sx(&f, fmin(f.x1, f.y1)), sy(&f, fmin(f.x1, f.y1))));
    for (size_t i = 0; i < ns; i++) {
        const struct plot_series *p = &s[i];
        const char *col = plot_color(p->color);
        if (!p->no_line && p->n > 0) {
            bool pen = false;
            TRY(cxr_buf_puts(b, "<path d=\""));
            for (size_t j = 0; j < p->n; j++) {
                if (!isfinite(p->x[j]) || !isfinite(p->y[j])) {
                    pen = false;
                    continue;
                }
                if (p->step && pen)
                    TRY(cxr_buf_printf(b, "H%.1f", sx(&f, p->x[j])));
                TRY(cxr_buf_printf(b, "%c%.1f,%.1f", pen ? 'L' : 'M', sx(&f, p->x[j]),
                                   sy(&f, p->y[j])));
                pen = true;
            }
            TRY(cxr_buf_printf(b, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"2.2\"%s/>\n", col,
                               p->dashed ? " stroke-dasharray=\"6,4\"" : ""));
        }
        if (p->markers || p->no_line) {
            TRY(cxr_buf_printf(b, "<g fill=\"%s\"%s>", col,
                               p->no_line ? " fill-opacity=\"0.55\"" : ""));
            for (size_t j = 0; j < p->n; j++) {
                if (!isfinite(p->x[j]) || !isfinite(p->y[j]))
                    continue;
                TRY(cxr_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%s\"/>",
                                   sx(&f, p->x[j]), sy(&f, p->y[j]), p->no_line ? "2.5" : "3.5"));
            }
            TRY(cxr_buf_puts(b, "</g>\n"));
        }
        if (p->name)
            TRY(legend_entry(b, row++, p->name, p->color, p->dashed, p->no_line));
    }
    return cxr_buf_puts(b, "</svg>\n");
}

cxr_err plot_bars(struct cxr_buf *b, const char *title, const char *ylabel,
                  const char *const *labels, const double *values, const size_t *colors,
                  size_t n)
{
    struct frame f = {0, (double)(n ? n : 1), 0, 0, ML, W - 30, H - MB - 20, MT};
    double bw;

    f.y1 = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(values[i]))
            f.y1 = fmax(f.y1, values[i]);
    f.y1 *= 1.08; /* headroom for the value printed above the tallest bar */
    nice_range(&f.y0, &f.y1, false);
    f.y0 = 0;
    bw = (f.px1 - f.px0) / (double)(n ? n : 1);
    TRY(svg_open(b, title, W, H));
    TRY(draw_axes(b, &f, "", ylabel, false, false));
    for (size_t i = 0; i < n; i++) {
        double v = isfinite(values[i]) ? values[i] : 0;
        double x = f.px0 + bw * (double)i + bw * 0.15, top = sy(&f, v);
        TRY(cxr_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                              "fill=\"%s\"/>",
                           x, top, bw * 0.7, f.py0 - top, plot_color(colors ? colors[i] : 0)));
        TRY(cxr_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" "
                              "fill=\"#1a1a1a\">%.0f</text>",
                           x + bw * 0.35, top - 4, v));
        TRY(cxr_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\" "
                              "fill=\"#1a1a1a\">",
                           x + bw * 0.35, f.py0 + 18));
        TRY(plot_escn(b, labels[i], 24));
        TRY(cxr_buf_puts(b, "</text>\n"));
    }
    return cxr_buf_puts(b, "</svg>\n");
}

cxr_err plot_histograms(struct cxr_buf *b, const char *title, const char *xlabel,
                        const char *const *names, const double *counts, size_t ns,
                        size_t nbins, double lo, double hi, bool normalise)
{
    struct frame f = {lo, hi, 0, 0, ML, W - MR, H - MB, MT};
    double bw = (hi - lo) / (double)(nbins ? nbins : 1);

    for (size_t s = 0; s < ns; s++) {
        double tot = 0;
        for (size_t j = 0; j < nbins; j++)
            tot += counts[s * nbins + j];
        for (size_t j = 0; j < nbins; j++) {
            double v = counts[s * nbins + j];
            if (normalise)
                v = tot > 0 ? v / tot : 0;
            f.y1 = fmax(f.y1, v);
        }
    }
    nice_range(&f.y0, &f.y1, false);
    f.y0 = 0;
    TRY(svg_open(b, title, W, H));
    TRY(draw_axes(b, &f, xlabel, normalise ? "share of images" : "images", false, true));
    for (size_t s = 0; s < ns; s++) {
        double tot = 0;
        for (size_t j = 0; j < nbins; j++)
            tot += counts[s * nbins + j];
        TRY(cxr_buf_printf(b, "<path d=\"M%.1f,%.1f", sx(&f, lo), sy(&f, 0)));
        for (size_t j = 0; j < nbins; j++) {
            double v = counts[s * nbins + j];
            if (normalise)
                v = tot > 0 ? v / tot : 0;
            TRY(cxr_buf_printf(b, "V%.1fH%.1f", sy(&f, v), sx(&f, lo + bw * (double)(j + 1))));
        }
        TRY(cxr_buf_printf(b, "V%.1f\" fill=\"%s\" fill-opacity=\"0.12\" stroke=\"%s\" "
                              "stroke-width=\"2\"/>\n",
                           sy(&f, 0), plot_color(s), plot_color(s)));
        TRY(legend_entry(b, s, names[s], s, false, false));
    }
    return cxr_buf_puts(b, "</svg>\n");
}

cxr_err plot_heatmap(struct cxr_buf *b, const char *title, const char *const *labels, size_t k,
                     const double *shade, const char *const *text, const char *rowlabel,
                     const char *collabel)
{
    double left = 150, top = MT + 10, cell = fmin(72, 380.0 / (double)(k ? k : 1));
    double w = left + cell * (double)k + 130, h = top + cell * (double)k + 120;

    TRY(svg_open(b, title, fmax(w, 420), h));
    for (size_t r = 0; r < k; r++) {
        TRY(cxr_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\" "
                              "fill=\"#1a1a1a\">",
                           left - 8, top + cell * ((double)r + 0.5) + 4));
        TRY(plot_escn(b, labels[r], 20));
        TRY(cxr_buf_puts(b, "</text>\n"));
        for (size_t c = 0; c < k; c++) {
            double v = shade[r * k + c];
            double t = isfinite(v) ? fmin(fmax(v, 0), 1) : 0;
            /* White to the palette's blue; text flips to white on dark cells. */
            int R = (int)lround(255 - t * (255 - 0)), G = (int)lround(255 - t * (255 - 0x55)),
                B = (int)lround(255 - t * (255 - 0x9a));
            double x = left + cell * (double)c, y = top + cell * (double)r;
            TRY(cxr_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                                  "fill=\"rgb(%d,%d,%d)\" stroke=\"#fff\"/>"
                                  "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%s\" "
                                  "text-anchor=\"middle\" fill=\"%s\">",
                               x, y, cell, cell, R, G, B, x + cell / 2, y + cell / 2 + 4,
                               cell < 40 ? "10" : "13", t > 0.5 ? "#fff" : "#1a1a1a"));
            if (text)
                TRY(plot_esc(b, text[r * k + c]));
            else {
                TRY(plot_num(b, 0, v * 100));
                TRY(cxr_buf_puts(b, "%"));
            }
            TRY(cxr_buf_puts(b, "</text>\n"));
        }
    }
    for (size_t c = 0; c < k; c++) {
        double x = left + cell * ((double)c + 0.5), y = top + cell * (double)k + 10;
        TRY(cxr_buf_printf(b, "<text transform=\"translate(%.1f,%.1f) rotate(35)\" "
                              "font-size=\"12\" fill=\"#1a1a1a\">",
                           x - 4, y + 4));
        TRY(plot_escn(b, labels[c], 20));
        TRY(cxr_buf_puts(b, "</text>\n"));
    }
    TRY(cxr_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" "
                          "fill=\"#1a1a1a\">",
                       left + cell * (double)k / 2, h - 8));
    TRY(plot_esc(b, collabel));
    TRY(cxr_buf_printf(b, "</text><text transform=\"translate(16,%.1f) rotate(-90)\" "
                          "font-size=\"13\" text-anchor=\"middle\" fill=\"#1a1a1a\">",
                       top + cell * (double)k / 2));
    TRY(plot_esc(b, rowlabel));
    return cxr_buf_puts(b, "</text>\n</svg>\n");
}
