/*
 * eval.h - `cxrtriage-train eval`: scores a labelled data set (or one split of it) with a
 * model through the daemon's own pixel path, and writes the metrics as JSON, a self-contained
 * HTML report with plots, per-image predictions as CSV, subgroup tables and a gallery of the
 * most confident mistakes.
 */
#ifndef CXR_EVAL_H
#define CXR_EVAL_H

#include "common.h"
#include "dataset.h"
#include "model.h"
#include "trainutil.h"

int eval_main(int argc, char **argv);

/* One split of a labelled data set scored by a model (eval, and export choosing operating
 * points). The scored images are n items of d (indices in items) that decoded. */
struct ev_scores {
    struct ds d;
    struct tu_cache cache;
    char fingerprint[32]; /* tu_dataset_fingerprint of the data and split as read */
    size_t n;
    size_t *items;
    int *truth;   /* n labels, the model's class indices */
    float *probs; /* n * classes softmax scores */
};

/*
 * Reads DATA (folder or CSV) with the model's classes, the split file when given, decodes the
 * images of `split` (enum ds_split; -1: every image) through the daemon's pixel path on
 * `threads` threads and scores them. Unreadable images are left out (counted in
 * ret->cache.unreadable, named in errors). Errors, with a line in errors: CXR_EMODEL (classes),
 * CXR_EIO/CXR_EPARSE (data, split file), CXR_ENOTFOUND (no image to score), CXR_ENOMEM.
 * Call ev_scores_done on ret whatever the result.
 */
cxr_err ev_score(const nn_model *m, const char *data, const char *split_file, int split,
                 int threads, struct ev_scores *ret, struct cxr_buf *errors);
void ev_scores_done(struct ev_scores *s);

#endif
