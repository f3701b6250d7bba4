/*
 * report.h - the evaluation report: JSON for machines and one self-contained HTML page with
 * inline SVG plots for people (headline figures with 95 % bootstrap intervals, per-class
 * table, confusion matrices, ROC and PR curves, reliability diagram, training curves,
 * operating points and, optionally, a gallery of the most confident mistakes).
 *
 * Usage from `cxrtriage-train eval` (after scoring the evaluation set):
 *
 *   struct met_options mo = {.boot_resamples = 1000, .seed = 42};
 *   struct met_report *m = NULL;
 *   met_compute(n, k, truth, prob, &mo, &m, &errs);
 *   size_t cls; double target; struct met_oppoint op;
 *   met_parse_target("COVID:0.95", names, k, &cls, &target, &errs);   (eval --threshold)
 *   met_operating_point(n, k, truth, prob, cls, target, &op);
 *   size_t idx[16], nm;                                               (optional gallery)
 *   met_top_mistakes(n, k, truth, prob, 16, idx, &nm);
 *   ... fill struct rpt_mistake[nm] with path, truth, pred, confidence, PNG bytes ...
 *   struct rpt_eval ev = {.model_name = ..., .model_digest = ..., .dataset = dir,
 *                         .class_names = names, .metrics = m,
 *                         .epochs = curves, .n_epochs = n_curves,     (may be NULL, 0)
 *                         .ops = &op, .n_ops = 1, .mistakes = mk, .n_mistakes = nm};
 *   rpt_eval_write(&ev, "report.html", "report.json", &errs);
 *
 * Training curves: the training loop appends one struct rpt_epoch per epoch (NaN for any
 * figure it did not measure, e.g. no validation set) and passes the array here; the model
 * file's metadata may carry the same records so `eval` of a saved model can show them.
 *
 * Nothing is logged; every function returns a cxr_err. All strings are borrowed.
 */
#ifndef CXR_TRAINER_REPORT_H
#define CXR_TRAINER_REPORT_H

#include <jansson.h>
#include <stddef.h>

#include "common.h"
#include "metrics.h"

#define RPT_MAX_HTML ((size_t)96 * 1024 * 1024)
#define RPT_MAX_MISTAKES 64
#define RPT_MAX_PNG ((size_t)4 * 1024 * 1024)
#define RPT_MAX_EPOCHS 100000

/* One training epoch; any figure not measured is NaN (left out of the JSON and the plots). */
struct rpt_epoch {
    int epoch; /* 1-based */
    double train_loss, val_loss;
    double train_accuracy, val_accuracy;
    double train_macro_f1, val_macro_f1;
    double learning_rate;
    double seconds; /* wall time of the epoch */
};

/* A wrongly classified image for the gallery; png may be NULL (listed without a picture). */
struct rpt_mistake {
    const char *path;
    size_t truth, pred;
    double confidence; /* the predicted class's probability */
    const unsigned char *png;
    size_t png_len;
};

struct rpt_eval {
    const char *title;          /* NULL: "cxrtriage evaluation report" */
    const char *model_name;     /* NULL: "(unnamed)" */
    const char *model_digest;   /* e.g. sha256 hex; may be NULL */
    const char *dataset;        /* path or name of the evaluation set; may be NULL */
    const char *dataset_digest; /* may be NULL */
    const char *date;           /* NULL: now, UTC, ISO 8601 */
    const char *const *class_names; /* metrics->k names, required */
    const struct met_report *metrics; /* required */
    const struct rpt_epoch *epochs;   /* may be NULL */
    size_t n_epochs;
    const struct met_oppoint *ops;    /* may be NULL */
    size_t n_ops;
    const struct rpt_mistake *mistakes; /* may be NULL; at most RPT_MAX_MISTAKES are shown */
    size_t n_mistakes;
};

/*
 * The metrics alone as a new JSON object (json_decref): every figure of struct met_report,
 * NaN as null, curves as {"x":[], "y":[], "threshold":[]}. NULL on out of memory.
 */
json_t *rpt_metrics_json(const struct met_report *m, const char *const *class_names);

/* The whole evaluation (metadata, disclaimer, metrics, epochs, operating points, mistakes'
 * paths) as a new JSON object; NULL on out of memory or invalid input. */
json_t *rpt_eval_json(const struct rpt_eval *ev);

/* Appends the HTML page to out (cxr_buf_init(out, RPT_MAX_HTML) is a good size).
 * Errors: CXR_EINVAL (missing metrics or class names, too many epochs), CXR_ENOMEM, CXR_ELIMIT. */
cxr_err rpt_eval_html(const struct rpt_eval *ev, struct cxr_buf *out);

/*
 * Writes the HTML page and/or the JSON (either path may be NULL) atomically. On failure a line
 * naming the file and the problem is appended to err_text (may be NULL). Errors: as above,
 * CXR_EIO.
 */
cxr_err rpt_eval_write(const struct rpt_eval *ev, const char *html_path, const char *json_path,
                       struct cxr_buf *err_text);

/* Appends "data:image/png;base64,..." for the bytes (shared with explore). */
cxr_err rpt_data_uri(struct cxr_buf *b, const char *mime, const unsigned char *data, size_t len);

/* Writes a JSON value to path atomically (pretty-printed, NaN-free). */
cxr_err rpt_json_write(const json_t *j, const char *path, struct cxr_buf *err_text);

#endif
