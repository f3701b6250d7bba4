/*
 * eval.h - `cxrtriage-train eval`: scores a labelled data set (or one split of it) with a
 * model through the daemon's own pixel path, and writes the metrics as JSON, a self-contained
 * HTML report with plots, per-image predictions as CSV, subgroup tables and a gallery of the
 * most confident mistakes.
 */
#ifndef CXR_EVAL_H
#define CXR_EVAL_H

int eval_main(int argc, char **argv);

#endif
