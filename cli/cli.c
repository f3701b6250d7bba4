/*
 * cli.c - `cxrtriage`, the operator's command-line tool: dispatch to one function per
 * subcommand (cli_*.c). Nothing pretends to work: a subcommand that is not built yet says so
 * and exits 2.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_util.h"
#include "common.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"classify", cli_classify, "score DICOM, PNG or JPEG files with the model"},
    {"inspect", cli_inspect, "print DICOM attributes and the applicability verdict"},
    {"preprocess", cli_preprocess, "write the model's input for a file as a PNG"},
    {"audit", cli_audit, "list, show, export or verify audit records"},
    {"outbox", cli_outbox, "list or retry reports waiting for delivery"},
    {"model", cli_model, "show a model file's architecture, input and metadata"},
    {"config", cli_config, "check a configuration file"},
    {"echo", cli_echo, "send a DICOM C-ECHO to a peer, with timing"},
    {"selftest", cli_selftest, "send the test radiograph through the running daemon, check it"},
};

static void usage(FILE *out)
{
    fprintf(out, "Usage: cxrtriage COMMAND [ARG]...\n"
                 "Operator tool for the cxrtriage daemon. %s\n\nCommands:\n",
            CXR_DISCLAIMER);
    for (size_t i = 0; i < CXR_ARRAY_SIZE(commands); i++)
        fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n  -h, --help     show this help and exit\n"
                 "  -V, --version  show the version and exit\n"
                 "Run 'cxrtriage COMMAND --help' for a command's options.\n");
}

int cli_not_built(const char *what, const char *when)
{
    fprintf(stderr, "cxrtriage: '%s' is not built yet (arrives with: %s)\n", what, when);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (cli_is_help(argv[1])) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
        printf("cxrtriage %s\n", CXR_VERSION);
        return 0;
    }
    for (size_t i = 0; i < CXR_ARRAY_SIZE(commands); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "cxrtriage: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
