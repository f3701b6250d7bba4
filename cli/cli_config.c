/* cli_config.c - `cxrtriage config check FILE`: print the effective configuration or the errors. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "common.h"
#include "config.h"
#include "dicom.h"

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
    if (strcmp(cfg.tls, "off") != 0) {
        /* the TLS files' content, loaded as the listener will load them */
        struct dcm_tls_config tc;
        char terr[1024];
        memset(&tc, 0, sizeof(tc));
        (void)cxr_strlcpy(tc.cert, sizeof(tc.cert), cfg.tls_cert);
        (void)cxr_strlcpy(tc.key, sizeof(tc.key), cfg.tls_key);
        (void)cxr_strlcpy(tc.ca, sizeof(tc.ca), cfg.tls_ca);
        tc.verify_peer = cfg.require_client_cert;
        (void)dcm_tls_profile_from_name(cfg.tls_profile, &tc.profile);
        if (dcm_tls_check(&tc, true, terr, sizeof(terr)) != CXR_OK) {
            fprintf(stderr, "%s: [dicom] %s\n%s: configuration is NOT valid\n", argv[2], terr,
                    argv[2]);
            return 1;
        }
    }
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
