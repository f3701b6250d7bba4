/*
 * cli_scu.h - what `cxrtriage echo` and `cxrtriage selftest` share as DICOM SCUs (cli_echo.c):
 * the --calling-aet, --timeout and --tls* options, and the failure message that names what
 * failed.
 */
#ifndef CXR_CLI_SCU_H
#define CXR_CLI_SCU_H

#include <getopt.h>
#include <stdbool.h>

#include "dicom.h"

enum {
    CLI_O_CALLING_AET = 300,
    CLI_O_TIMEOUT,
    CLI_O_TLS,
    CLI_O_TLS_CERT,
    CLI_O_TLS_KEY,
    CLI_O_TLS_CA,
    CLI_O_TLS_NO_VERIFY,
    CLI_O_TLS_PROFILE,
};

#define CLI_SCU_LONGOPTS                                                                           \
    {"calling-aet", required_argument, NULL, CLI_O_CALLING_AET},                                   \
        {"timeout", required_argument, NULL, CLI_O_TIMEOUT},                                       \
        {"tls", no_argument, NULL, CLI_O_TLS},                                                     \
        {"tls-cert", required_argument, NULL, CLI_O_TLS_CERT},                                     \
        {"tls-key", required_argument, NULL, CLI_O_TLS_KEY},                                       \
        {"tls-ca", required_argument, NULL, CLI_O_TLS_CA},                                         \
        {"tls-no-verify", no_argument, NULL, CLI_O_TLS_NO_VERIFY},                                 \
    {                                                                                              \
        "tls-profile", required_argument, NULL, CLI_O_TLS_PROFILE                                  \
    }

#define CLI_SCU_HELP                                                                               \
    "  --calling-aet AET     our AE title (default CXRTRIAGE-SCU; selftest: CXRSELFTEST)\n"       \
    "  --timeout S           bound on the connect, the association and each response (default\n" \
    "                        10 s)\n"                                                              \
    "  --tls                 DICOM over TLS (DCMTK's dcmtls, OpenSSL)\n"                          \
    "  --tls-cert FILE --tls-key FILE\n"                                                           \
    "                        our client certificate and key (PEM), for peers that require one\n"  \
    "  --tls-ca FILE         verify the peer's certificate against these CAs (PEM)\n"             \
    "  --tls-no-verify       do not verify it (without --tls-ca it is not verified: a warning)\n" \
    "  --tls-profile P       bcp195-nd (default: TLS 1.2+, AES-GCM), bcp195, bcp195-ext\n"

/* Sets c to the defaults: calling_aet, 10 s, no TLS (profile bcp195-nd when enabled). */
void cli_scu_defaults(struct dcm_scu_config *c, const char *calling_aet);
/* Applies one of the CLI_O_* options; false when id is not one of them. *ret_rc is the usage
 * status (2, message printed) when its value is bad, else 0. */
bool cli_scu_option(const char *cmd, int id, const char *arg, struct dcm_scu_config *c,
                    int *ret_rc);
/* Checks the TLS options together (warns when the peer is not verified): 0, or 2. */
int cli_scu_check_tls(const char *cmd, const struct dcm_scu_config *c);
/* "CMD: HOST:PORT AET: connection refused: ..." and a hint, on stderr. */
void cli_scu_print_failure(const char *cmd, const struct dcm_scu_config *c,
                           const struct dcm_scu_result *r, const char *err);

#endif
