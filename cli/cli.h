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

/* What `classify` does to one file (cli_classify.c), shared with `selftest`: the one pixel path
 * into input, the gate's verdict in v, and when applicable the model's probabilities in probs
 * (nn_model_num_classes values). err receives "FILE: problem". */
cxr_err cli_classify_file(nn_ctx *ctx, const struct px_spec *px, float *input, const char *path,
                          float *probs, struct px_verdict *v, char *err, size_t errlen);

#endif
