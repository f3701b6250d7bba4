/*
 * cli.h - subcommands of the operator CLI `cxrtriage`.
 *
 * Each subcommand is one function taking the arguments after its name (argv[0] is the
 * subcommand) and returning the process exit status: 0 success, 1 failure (bad input, errors
 * found), 2 usage error or not built yet.
 */
#ifndef CXR_CLI_H
#define CXR_CLI_H

int cli_classify(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_preprocess(int argc, char **argv);
int cli_audit(int argc, char **argv);
int cli_outbox(int argc, char **argv);
int cli_model(int argc, char **argv);
int cli_config(int argc, char **argv);
int cli_echo(int argc, char **argv);

/* Prints "cxrtriage: 'what' is not built yet (arrives with: when)" and returns 2. */
int cli_not_built(const char *what, const char *when);

#endif
