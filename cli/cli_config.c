/* cli_config.c - `cxrtriage config check FILE`: print the effective configuration or the errors. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "config.h"

static void usage(FILE *out)
{
    fprintf(out, "Usage: cxrtriage config check FILE\n"
                 "Validates FILE and prints the effective configuration (secrets masked), or\n"
                 "every error as FILE:LINE: [section] key: what was found, what is expected.\n"
                 "Exit status: 0 valid, 1 errors, 2 usage.\n");
}

int cli_config(int argc, char **argv)
{
    struct cfg_config cfg;
    struct cxr_buf errors, dump;
    cxr_err err;

    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc != 3 || strcmp(argv[1], "check") != 0) {
        usage(stderr);
        return 2;
    }
    cfg_defaults(&cfg);
    cxr_buf_init(&errors, 1 << 20);
    err = cfg_load(&cfg, argv[2], &errors);
    if (err) {
        fputs(cxr_buf_str(&errors), stderr);
        fprintf(stderr, "%s: configuration is NOT valid\n", argv[2]);
        cxr_buf_done(&errors);
        return 1;
    }
    cxr_buf_done(&errors);
    (void)cfg_resolve(&cfg);
    cxr_buf_init(&dump, 1 << 20);
    if (cfg_dump(&cfg, &dump) != CXR_OK) {
        cxr_buf_done(&dump);
        fprintf(stderr, "cxrtriage: out of memory\n");
        return 1;
    }
    printf("# effective configuration of %s\n%s", argv[2], cxr_buf_str(&dump));
    printf("# %s: configuration OK\n", argv[2]);
    cxr_buf_done(&dump);
    return 0;
}
