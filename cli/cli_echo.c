/*
 * cli_echo.c - `cxrtriage echo [OPTION]... HOST PORT AET`: a DICOM C-ECHO to a peer (a PACS, an
 * archive, or a cxrtriaged), with the association time, the round trip of each echo and the
 * status, through the dicom module's SCU (DCMTK stays behind dicom.h). Exit status 0 when every
 * echo was answered Success, 1 with one line naming what failed (connection refused, timeout,
 * association rejected with DICOM's reason, TLS), 2 on usage errors.
 *
 * The SCU options (--calling-aet, --timeout, --tls ...) are shared with `cxrtriage selftest`
 * through cli_scu_option().
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_scu.h"
#include "cli_util.h"
#include "common.h"
#include "config.h"
#include "dicom.h"

static const char *const prog = "cxrtriage echo";

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cxrtriage echo [OPTION]... HOST PORT AET\n"
            "Sends DICOM C-ECHO requests to the application entity AET at HOST:PORT and prints\n"
            "the association time, each round trip and the status.\n\n"
            "%s\n"
            "  --count N             send N echoes on the association (1-1000, default 1)\n\n"
            "Exit status: 0 every echo answered Success; 1 failure (the line says which:\n"
            "connection refused, timeout, association rejected and why, TLS); 2 usage.\n",
            CLI_SCU_HELP);
}

bool cli_scu_option(const char *cmd, int id, const char *arg, struct dcm_scu_config *c,
                    int *ret_rc)
{
    char *end;
    long v;

    *ret_rc = 0;
    switch (id) {
    case CLI_O_CALLING_AET:
        if (!cfg_is_valid_ae_title(arg) || strlen(arg) >= sizeof(c->calling_aet)) {
            *ret_rc = cli_bad_usage(cmd, "not an AE title (1-16 characters):", arg);
            return true;
        }
        (void)cxr_strlcpy(c->calling_aet, sizeof(c->calling_aet), arg);
        return true;
    case CLI_O_TIMEOUT:
        v = strtol(arg, &end, 10);
        if (end == arg || *end || v < 1 || v > 3600) {
            *ret_rc = cli_bad_usage(cmd, "--timeout wants seconds 1-3600, not", arg);
            return true;
        }
        c->timeout_s = (int)v;
        return true;
    case CLI_O_TLS:
        c->use_tls = true;
        return true;
    case CLI_O_TLS_CERT:
    case CLI_O_TLS_KEY:
    case CLI_O_TLS_CA: {
        char *dst = id == CLI_O_TLS_CERT ? c->tls.cert : id == CLI_O_TLS_KEY ? c->tls.key
                                                                            : c->tls.ca;
        if (!cli_set_text(dst, sizeof(c->tls.cert), arg)) {
            *ret_rc = cli_bad_usage(cmd, "path too long:", arg);
            return true;
        }
        c->use_tls = true;
        if (id == CLI_O_TLS_CA)
            c->tls.verify_peer = true;
        return true;
    }
    case CLI_O_TLS_NO_VERIFY:
        c->use_tls = true;
        c->tls.verify_peer = false;
        c->tls.ca[0] = '\0';
        return true;
    case CLI_O_TLS_PROFILE:
        if (!dcm_tls_profile_from_name(arg, &c->tls.profile)) {
            *ret_rc = cli_bad_usage(cmd, "--tls-profile wants bcp195-nd, bcp195 or bcp195-ext, not",
                                    arg);
            return true;
        }
        c->use_tls = true;
        return true;
    default:
        return false;
    }
}

int cli_scu_check_tls(const char *cmd, const struct dcm_scu_config *c)
{
    if (c->use_tls && !c->tls.verify_peer && !c->tls.ca[0]) {
        /* the caller said --tls-no-verify, or gave no CA: say what that means */
        fprintf(stderr, "%s: warning: the peer's TLS certificate is not verified (give --tls-ca "
                        "FILE to verify it)\n", cmd);
    }
    if (!c->tls.cert[0] != !c->tls.key[0]) {
        fprintf(stderr, "%s: --tls-cert and --tls-key go together\n", cmd);
        return 2;
    }
    return 0;
}

void cli_scu_print_failure(const char *cmd, const struct dcm_scu_config *c,
                           const struct dcm_scu_result *r, const char *err)
{
    fprintf(stderr, "%s: %s:%d %s: %s: %s\n", cmd, c->host, c->port, c->called_aet,
            dcm_scu_fail_name(r->fail), r->reason[0] ? r->reason : err);
    switch (r->fail) {
    case DCM_SCU_CONNECT_REFUSED:
        fprintf(stderr, "%s: hint: nothing listens on %s:%d (wrong port, or the peer is down)\n",
                cmd, c->host, c->port);
        break;
    case DCM_SCU_REJECTED:
        fprintf(stderr,
                "%s: hint: the peer refused the association: check the called AE title (%s) "
                "and that it knows the calling AE title (%s)\n",
                cmd, c->called_aet, c->calling_aet);
        break;
    case DCM_SCU_TIMEOUT:
        fprintf(stderr, "%s: hint: no answer within --timeout %d s\n", cmd, c->timeout_s);
        break;
    case DCM_SCU_ABORTED:
    case DCM_SCU_TLS:
        if (!c->use_tls)
            fprintf(stderr, "%s: hint: if the peer wants DICOM over TLS, add --tls\n", cmd);
        else
            fprintf(stderr,
                    "%s: hint: a TLS server closes the connection like this when it refuses our "
                    "client certificate (missing: give --tls-cert and --tls-key; or not signed "
                    "by a CA it trusts), or when it does not speak TLS on this port\n",
                    cmd);
        break;
    default:
        break;
    }
}

void cli_scu_defaults(struct dcm_scu_config *c, const char *calling_aet)
{
    memset(c, 0, sizeof(*c));
    (void)cxr_strlcpy(c->calling_aet, sizeof(c->calling_aet), calling_aet);
    c->timeout_s = 10;
    c->tls.profile = DCM_TLS_BCP195_ND;
}

int cli_echo(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_SCU_LONGOPTS,
        {"count", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dcm_scu_config c;
    struct dcm_scu_result r;
    char err[512] = "", *end;
    int count = 1, opt, li = -1, rc;
    long v;

    cli_scu_defaults(&c, "CXRTRIAGE-SCU");
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+h", longopts, &li)) != -1) {
        if (opt == 'h') {
            usage(stdout);
            return 0;
        }
        if (opt == 'n') {
            v = strtol(optarg, &end, 10);
            if (end == optarg || *end || v < 1 || v > 1000)
                return cli_bad_value(prog, longopts, li, optarg);
            count = (int)v;
        } else if (opt == '?' || opt == ':') {
            return cli_bad_usage(prog, "unknown option or missing value:",
                                 argv[optind - 1 > 0 ? optind - 1 : 0]);
        } else if (cli_scu_option(prog, opt, optarg, &c, &rc)) {
            if (rc)
                return rc;
        }
        li = -1;
    }
    if (argc - optind != 3) {
        usage(stderr);
        return 2;
    }
    if (!cli_set_text(c.host, sizeof(c.host), argv[optind]))
        return cli_bad_usage(prog, "host name too long:", argv[optind]);
    v = strtol(argv[optind + 1], &end, 10);
    if (end == argv[optind + 1] || *end || v < 1 || v > 65535)
        return cli_bad_usage(prog, "not a TCP port (1-65535):", argv[optind + 1]);
    c.port = (int)v;
    if (!cfg_is_valid_ae_title(argv[optind + 2]) || strlen(argv[optind + 2]) >= sizeof(c.called_aet))
        return cli_bad_usage(prog, "not an AE title (1-16 characters):", argv[optind + 2]);
    (void)cxr_strlcpy(c.called_aet, sizeof(c.called_aet), argv[optind + 2]);
    rc = cli_scu_check_tls(prog, &c);
    if (rc)
        return rc;

    if (dcm_scu_echo(&c, count, &r, err, sizeof(err)) != CXR_OK) {
        cli_scu_print_failure(prog, &c, &r, err);
        return 1;
    }
    printf("association  %s -> %s at %s:%d accepted in %.1f ms%s%s%s\n", c.calling_aet,
           c.called_aet, c.host, c.port, r.assoc_ms, c.use_tls ? " over TLS (" : "",
           c.use_tls ? (r.tls_cipher[0] ? r.tls_cipher : "?") : "", c.use_tls ? ")" : "");
    printf("echo         %d/%d answered status 0x%04x (Success); round trip min %.2f avg %.2f "
           "max %.2f ms\n",
           r.n_ok, count, r.status, r.rtt_min_ms, r.rtt_avg_ms, r.rtt_max_ms);
    return cli_flush(prog, 0);
}
