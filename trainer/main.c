/*
 * main.c - `cxrtriage-train`, the offline trainer: train, eval, explore and export commands.
 * It links model/, dicom/ (the one preprocessing path) and common/ only.
 */
#include <stdio.h>
#include <string.h>

#include "common.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cxrtriage-train COMMAND [ARG]...\n"
            "Offline trainer and evaluator for the cxrtriage CNN. %s\n\n"
            "Commands:\n"
            "  train    train a model on a folder of labelled images\n"
            "  eval     evaluate a model: metrics, plots and an HTML report\n"
            "  explore  report on a data set: classes, sizes, duplicates, leakage\n"
            "  export   write a model's weights and metadata in another form\n\n"
            "  -h, --help     show this help and exit\n"
            "  -V, --version  show the version and exit\n",
            CXR_DISCLAIMER);
}

static int not_built(const char *what)
{
    fprintf(stderr, "cxrtriage-train: '%s' is not built yet (arrives with the trainer issue)\n",
            what);
    return 2;
}

int main(int argc, char **argv)
{
    static const char *const commands[] = {"train", "eval", "explore", "export"};

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
        printf("cxrtriage-train %s\n", CXR_VERSION);
        return 0;
    }
    for (size_t i = 0; i < CXR_ARRAY_SIZE(commands); i++)
        if (!strcmp(argv[1], commands[i]))
            return not_built(commands[i]);
    fprintf(stderr, "cxrtriage-train: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
