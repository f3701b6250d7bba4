/*
 * cli_selftest.c - `cxrtriage selftest [--config FILE]`: proves a running cxrtriaged works end to
 * end, from outside, the way a PACS uses it.
 *
 * 1. scores the bundled test radiograph in-process exactly as `cxrtriage classify` does
 *    (cli_classify_file, the daemon's configured model);
 * 2. C-ECHO, then C-STORE of that file to the daemon's own listener (address, port, AE title from
 *    the configuration; TLS when [dicom] tls = required), with fresh Study, Series and SOP
 *    Instance UIDs so it is never a duplicate, and Patient ID CXRTRIAGE-SELFTEST so the daemon
 *    never reports it to the EHR (daemon/report.c);
 * 3. waits (bounded by --wait) on a read-only ledger connection until that instance's row is
 *    final, and checks it was classified with the same model and the same scores.
 * Each step prints one PASS or FAIL line; exit 0 when all passed, 1 otherwise, 2 usage.
 */
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_scu.h"
#include "cli_util.h"
#include "common.h"
#include "config.h"
#include "dicom.h"
#include "model.h"
#include "store.h"

static const char *const prog = "cxrtriage selftest";

/* Scores that differ by less than this are the same result (float32 scores stored as double;
 * the daemon's workers and this process may split the work over different thread counts). */
#define SELFTEST_TOLERANCE 1e-6

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cxrtriage selftest [OPTION]...\n"
            "Sends the bundled test radiograph (test data, not a patient: Patient ID %s)\n"
            "through the running daemon's own DICOM listener and checks that a scored row\n"
            "appears in the audit ledger with the scores `cxrtriage classify` gives the file.\n"
            "The daemon scores and audits it but never reports it to the EHR.\n\n"
            "  --config FILE         the daemon's configuration file (listener, model, ledger)\n"
            "  --state-dir DIR       override [daemon] state_dir (the ledger is DIR/audit.db)\n"
            "  --host HOST           connect here instead of [dicom] bind\n"
            "  --file FILE           send this DICOM file instead of the bundled one\n"
            "  --wait S              how long to wait for the scored row (default 60 s)\n"
            "%s\n"
            "With [dicom] tls = required the selftest connects over TLS (give --tls-cert,\n"
            "--tls-key and --tls-ca as for a client).\n"
            "Exit status: 0 every check passed, 1 a check failed, 2 usage.\n",
            CXR_SELFTEST_PATIENT_ID, CLI_SCU_HELP);
}

static int result(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int result(bool ok, const char *fmt, ...)
{
    va_list ap;
    printf("%s ", ok ? "PASS" : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    (void)fflush(stdout);
    return ok ? 0 : 1;
}

/* The bundled file: the source tree's copy for a build, else the installed one. */
static bool bundled_file(char *buf, size_t len)
{
    const char *dirs[] = {CXR_SELFTEST_SOURCE_DIR, CXR_MODEL_INSTALL_DIR};
    for (size_t i = 0; i < CXR_ARRAY_SIZE(dirs); i++) {
        int n = snprintf(buf, len, "%s/%s", dirs[i], CXR_SELFTEST_FILE_NAME);
        if (n > 0 && (size_t)n < len && access(buf, R_OK) == 0)
            return true;
    }
    return false;
}

struct expected {
    int n;
    char names[NN_MAX_CLASSES][64];
    float probs[NN_MAX_CLASSES];
    char digest[65];
};

/* Step 1: the file's scores by the classify path, with the daemon's model. */
static int score_locally(const char *model_path, const char *file, struct expected *ex)
{
    struct cli_scorer sc;
    struct px_verdict v = {0};
    char err[1024] = "";
    int rc = 1;

    if (cli_scorer_open(&sc, model_path, err, sizeof(err)) != CXR_OK)
        return result(false, "classify: %s", err);
    if (cli_scorer_file(&sc, file, ex->probs, &v, err, sizeof(err)) != CXR_OK) {
        rc = result(false, "classify: %s", err);
        goto out;
    }
    if (!v.applicable) {
        rc = result(false, "classify: %s: the gate refuses it: %s", file, v.reason);
        goto out;
    }
    ex->n = nn_model_num_classes(sc.m);
    for (int c = 0; c < ex->n; c++)
        (void)cxr_strlcpy(ex->names[c], sizeof(ex->names[c]), nn_model_class_name(sc.m, c));
    (void)cxr_strlcpy(ex->digest, sizeof(ex->digest), nn_model_digest(sc.m));
    printf("     classify (in-process, the daemon's model sha256:%.12s):", ex->digest);
    for (int c = 0; c < ex->n; c++)
        printf(" %s %.4f", ex->names[c], (double)ex->probs[c]);
    putchar('\n');
    rc = result(true, "classify: %s scored in-process", file);
out:
    cli_scorer_close(&sc);
    return rc;
}

/* Step 3: waits for the row and compares it. */
static int check_row(st_db *db, const char *uid, const struct expected *ex, double wait_s,
                     double t_sent)
{
    struct st_instance in;
    char err[512] = "";
    double deadline = cli_mono_ms() + 1000.0 * wait_s;
    cxr_err e;
    int fails = 0;

    for (;;) {
        e = st_get(db, 0, uid, &in, err, sizeof(err));
        if (e == CXR_OK && in.res.state != ST_RECEIVED)
            break;
        if (e != CXR_OK && e != CXR_ENOTFOUND)
            return result(false, "ledger: %s", err);
        if (cli_mono_ms() >= deadline)
            return result(false,
                          "ledger: no final row for SOP Instance UID %s within %.0f s (%s): is "
                          "the daemon scoring? (cxrtriage audit list)",
                          uid, wait_s, e == CXR_OK ? "still received" : "no row at all");
        struct timespec ts = {0, 100 * 1000 * 1000};
        (void)nanosleep(&ts, NULL);
    }
    fails += result(in.res.state == ST_CLASSIFIED,
                    "ledger: row %lld %s %.0f ms after the C-STORE response%s%s",
                    (long long)in.id, st_state_name(in.res.state), cli_mono_ms() - t_sent,
                    in.res.state == ST_CLASSIFIED ? "" : ": ",
                    in.res.state == ST_CLASSIFIED ? ""
                    : in.res.error[0]            ? in.res.error
                                                 : in.res.gate_reason);
    if (in.res.state != ST_CLASSIFIED)
        return fails;
    fails += result(!strcmp(in.res.model_digest, ex->digest),
                    "model: the daemon scored with sha256:%.12s, classify with sha256:%.12s",
                    in.res.model_digest, ex->digest);
    double worst = 0;
    bool all = in.res.n_classes == ex->n;
    for (int c = 0; all && c < ex->n; c++) {
        int k = -1;
        for (int j = 0; j < in.res.n_classes; j++)
            if (!strcmp(in.res.class_names[j], ex->names[c]))
                k = j;
        if (k < 0) {
            all = false;
            break;
        }
        double d = fabs(in.res.scores[k] - (double)ex->probs[c]);
        if (d > worst)
            worst = d;
    }
    printf("     daemon (row %lld):", (long long)in.id);
    for (int j = 0; j < in.res.n_classes; j++)
        printf(" %s %.4f", in.res.class_names[j], in.res.scores[j]);
    printf("  triage %s\n", st_triage_name(in.res.triage) ? st_triage_name(in.res.triage) : "-");
    fails += result(all && worst <= SELFTEST_TOLERANCE,
                    "scores: the daemon's equal classify's (%d classes, max |difference| %.2g, "
                    "tolerance %.0e)",
                    in.res.n_classes, worst, SELFTEST_TOLERANCE);
    fails += result(!strcmp(in.r.patient_id, CXR_SELFTEST_PATIENT_ID),
                    "marker: the row's patient ID is %s: the daemon does not report this study "
                    "to the EHR",
                    in.r.patient_id[0] ? in.r.patient_id : "(none)");
    return fails;
}

int cli_selftest(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_SCU_LONGOPTS,
        {"config", required_argument, NULL, 'c'},
        {"state-dir", required_argument, NULL, 's'},
        {"host", required_argument, NULL, 'H'},
        {"file", required_argument, NULL, 'f'},
        {"wait", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *state_dir = NULL, *host = NULL, *file = NULL;
    char filebuf[4096], err[1024] = "", *end;
    struct cfg_config cfg;
    struct cxr_buf errors;
    struct dcm_scu_config c;
    struct dcm_scu_result r;
    struct dcm_store_edit edit;
    struct expected ex;
    double wait_s = 60, t_sent;
    int opt, li = -1, rc, fails = 0;
    st_db *db = NULL;

    memset(&ex, 0, sizeof(ex));
    cli_scu_defaults(&c, "CXRSELFTEST");
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "+h", longopts, &li)) != -1) {
        switch (opt) {
        case 'h': usage(stdout); return 0;
        case 'c': config = optarg; break;
        case 's': state_dir = optarg; break;
        case 'H': host = optarg; break;
        case 'f': file = optarg; break;
        case 'w':
            wait_s = strtod(optarg, &end);
            if (end == optarg || *end || !(wait_s >= 1 && wait_s <= 3600))
                return cli_bad_value(prog, longopts, li, optarg);
            break;
        case '?':
        case ':':
            return cli_bad_usage(prog, "unknown option or missing value:",
                                 argv[optind - 1 > 0 ? optind - 1 : 0]);
        default:
            if (cli_scu_option(prog, opt, optarg, &c, &rc) && rc)
                return rc;
        }
        li = -1;
    }
    if (optind != argc)
        return cli_bad_usage(prog, "unexpected argument", argv[optind]);

    /* the daemon's configuration, as it reads it */
    cfg_defaults(&cfg);
    cxr_buf_init(&errors, 1 << 16);
    if (config && cfg_load(&cfg, config, &errors) != CXR_OK) {
        fprintf(stderr, "%s", cxr_buf_str(&errors));
        cxr_buf_done(&errors);
        return result(false, "config: %s is not valid", config);
    }
    if (state_dir && cfg_set(&cfg, "daemon", "state_dir", state_dir, "--state-dir", &errors)) {
        fprintf(stderr, "%s", cxr_buf_str(&errors));
        cxr_buf_done(&errors);
        return 2;
    }
    cxr_buf_done(&errors);
    if (cfg_resolve(&cfg) != CXR_OK || !cfg.model_path[0])
        return result(false, "config: no model (set [model] path)");
    if (!file) {
        if (!bundled_file(filebuf, sizeof(filebuf)))
            return result(false, "the bundled %s is missing (under %s or %s); give --file",
                          CXR_SELFTEST_FILE_NAME, CXR_SELFTEST_SOURCE_DIR, CXR_MODEL_INSTALL_DIR);
        file = filebuf;
    }
    printf("     %s\n", CXR_DISCLAIMER);

    /* where the daemon listens */
    if (!host)
        host = !strcmp(cfg.dicom_bind, "0.0.0.0") ? "127.0.0.1"
               : !strcmp(cfg.dicom_bind, "::")    ? "::1"
                                                  : cfg.dicom_bind;
    (void)cxr_strlcpy(c.host, sizeof(c.host), host);
    (void)cxr_strlcpy(c.called_aet, sizeof(c.called_aet), cfg.ae_title);
    c.port = cfg.dicom_port;
    if (!strcmp(cfg.tls, "required")) {
        c.use_tls = true;
        c.port = cfg.tls_port;
    }
    if (c.use_tls && !strcmp(cfg.tls, "on"))
        c.port = cfg.tls_port;
    rc = cli_scu_check_tls(prog, &c);
    if (rc)
        return rc;
    if (!cfg_aet_allowed(cfg.allowed_calling_aets, c.calling_aet, NULL))
        fprintf(stderr,
                "%s: warning: calling AE title %s is not in [dicom] allowed_calling_aets: give "
                "--calling-aet with one that is\n",
                prog, c.calling_aet);

    /* 1. the expected scores */
    if (score_locally(cfg.model_path, file, &ex))
        return 1;

    /* 2. echo, then store with fresh UIDs */
    if (dcm_scu_echo(&c, 1, &r, err, sizeof(err)) != CXR_OK) {
        result(false, "echo: %s:%d %s: %s", c.host, c.port, c.called_aet,
               dcm_scu_fail_name(r.fail));
        cli_scu_print_failure(prog, &c, &r, err);
        return 1;
    }
    result(true, "echo: %s -> %s at %s:%d%s, association %.1f ms, round trip %.2f ms",
           c.calling_aet, c.called_aet, c.host, c.port, c.use_tls ? " (TLS)" : "", r.assoc_ms,
           r.rtt_avg_ms);
    memset(&edit, 0, sizeof(edit));
    if (dcm_new_uid(edit.study_uid) != CXR_OK || dcm_new_uid(edit.series_uid) != CXR_OK ||
        dcm_new_uid(edit.sop_instance_uid) != CXR_OK)
        return result(false, "uid: no random numbers");
    (void)cxr_strlcpy(edit.patient_id, sizeof(edit.patient_id), CXR_SELFTEST_PATIENT_ID);
    if (dcm_scu_store(&c, file, &edit, &r, err, sizeof(err)) != CXR_OK) {
        result(false, "store: status 0x%04x: %s", r.status, dcm_scu_fail_name(r.fail));
        cli_scu_print_failure(prog, &c, &r, err);
        return 1;
    }
    t_sent = cli_mono_ms();
    result(true, "store: C-STORE answered 0x%04x in %.1f ms (SOP Instance UID %s)", r.status,
           r.rtt_avg_ms, edit.sop_instance_uid);

    /* 3. the row */
    if (cli_open_ledger(prog, config, state_dir, NULL, ST_OPEN_READ, &db) != 0)
        return result(false, "ledger: cannot open the audit ledger (read-only)");
    fails += check_row(db, edit.sop_instance_uid, &ex, wait_s, t_sent);
    st_close(db);
    printf("%s: %s\n", prog, fails ? "FAILED" : "all checks passed");
    return cli_flush(prog, fails ? 1 : 0);
}
