/*
 * cli.h - subcommands of the operator CLI `cxrtriage`.
 *
 * Each subcommand is one function taking the arguments after its name (argv[0] is the
 * subcommand) and returning the process exit status: 0 success, 1 failure (bad input, errors
 * found), 2 usage error or not built yet.
 */
#ifndef CXR_CLI_H
#define CXR_CLI_H

#include <stddef.h>

#include "dicom.h"
#include "model.h"

int cli_classify(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_preprocess(int argc, char **argv);
int cli_audit(int argc, char **argv);
int cli_outbox(int argc, char **argv);
int cli_model(int argc, char **argv);
int cli_config(int argc, char **argv);
int cli_echo(int argc, char **argv);
int cli_selftest(int argc, char **argv);

/* Prints "cxrtriage: 'what' is not built yet (arrives with: when)" and returns 2. */
int cli_not_built(const char *what, const char *when);

/* What `classify` does (cli_classify.c), shared with `selftest`: the model with its input
 * buffers, and the scoring of one file through the one pixel path. */
struct cli_scorer {
    nn_model *m;
    nn_ctx *ctx;
    float *input;            /* the model's input */
    float *unit;             /* the preprocessed [0,1] image it came from (px.size squared) */
    struct px_spec px;
    nn_gradcam *gc;          /* with cli_scorer_heatmap: scores come from Grad-CAM */
    float *cam;              /* cam_h x cam_w, the last file's map */
    int cam_h, cam_w, cam_cls, cam_used; /* cam_cls -1: top class; cam_used: the class mapped */
};
/* Loads the model and checks it wants this build's preprocessing; err gets one line. */
cxr_err cli_scorer_open(struct cli_scorer *s, const char *model_path, char *err, size_t errlen);
/* The gate's verdict in v and, when applicable, the model's probabilities in probs
 * (nn_model_num_classes values); err receives "FILE: problem". */
cxr_err cli_scorer_file(struct cli_scorer *s, const char *path, float *probs,
                        struct px_verdict *v, char *err, size_t errlen);
/* From now on also compute the Grad-CAM map of class cls (-1: the top class) into s->cam. */
cxr_err cli_scorer_heatmap(struct cli_scorer *s, int cls, char *err, size_t errlen);
void cli_scorer_close(struct cli_scorer *s);

#endif
