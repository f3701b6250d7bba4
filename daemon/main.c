/*
 * main.c - cxrtriaged, the triage daemon.
 *
 * Startup order: log to stderr, parse the config (file, then command-line overrides), create the
 * state directory (0700), log the effective configuration, tell systemd READY=1, then run until
 * SIGTERM or SIGINT. Signal handlers only write the signal's number to a pipe that the main
 * thread reads, so no other code runs in signal context.
 * The DICOM listener, the pipeline and the report sender arrive with later issues; until then
 * the daemon says plainly at start-up what it does not do yet.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "dicom.h"
#include "model.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cxrtriaged [OPTION]...\n"
            "Chest radiograph triage daemon: receives DICOM, scores frontal chest radiographs,\n"
            "audits every result and reports it to the EHR. %s\n\n"
            "  -c, --config FILE      read FILE (default: built-in defaults only)\n"
            "  -p, --port PORT        DICOM port (overrides [dicom] port)\n"
            "      --http-port PORT   HTTP port (overrides [http] port)\n"
            "  -s, --state-dir DIR    state directory (overrides [daemon] state_dir)\n"
            "  -a, --ae-title AET     our AE title (overrides [dicom] ae_title)\n"
            "  -l, --log-level LEVEL  err, warning, notice, info or debug\n"
            "  -f, --foreground       run in the foreground (always: the daemon never forks;\n"
            "                         systemd or the shell supervises it)\n"
            "  -n, --check            check the configuration, print it and exit\n"
            "  -h, --help             show this help and exit\n"
            "  -V, --version          show the version and exit\n",
            CXR_DISCLAIMER);
}

enum { OPT_HTTP_PORT = 256 };

static int sig_pipe[2] = {-1, -1};

static void on_signal(int signo)
{
    int saved = errno;
    unsigned char b = (unsigned char)signo;

    if (write(sig_pipe[1], &b, 1) < 0) {
        /* the pipe is full: a stop is already pending */
    }
    errno = saved;
}

static int override(struct cfg_config *cfg, const char *section, const char *key,
                    const char *value, const char *origin, struct cxr_buf *errors)
{
    return cfg_set(cfg, section, key, value, origin, errors) == CXR_OK ? 0 : -1;
}

static cxr_err prepare_state(const struct cfg_config *cfg)
{
    const char *dirs[] = {cfg->state_dir, cfg->spool_dir, cfg->outbox_dir};

    for (size_t i = 0; i < CXR_ARRAY_SIZE(dirs); i++) {
        if (cxr_mkdir_p(dirs[i], 0700) != CXR_OK)
            return cxr_log_err(CXR_EIO, "state.mkdir", "dir='%s' error='%s'", dirs[i],
                               strerror(errno));
    }
    return CXR_OK;
}

static void log_config(const struct cfg_config *cfg)
{
    struct cxr_buf dump;
    char *line, *save = NULL, *section = NULL;

    cxr_buf_init(&dump, 1 << 20);
    if (cfg_dump(cfg, &dump) != CXR_OK)
        return;
    for (line = strtok_r(dump.data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '[') {
            section = line;
            continue;
        }
        cxr_log(CXR_LOG_INFO, "config", "%s %s", section ? section : "", line);
    }
    cxr_buf_done(&dump);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"port", required_argument, NULL, 'p'},
        {"http-port", required_argument, NULL, OPT_HTTP_PORT},
        {"state-dir", required_argument, NULL, 's'},
        {"ae-title", required_argument, NULL, 'a'},
        {"log-level", required_argument, NULL, 'l'},
        {"foreground", no_argument, NULL, 'f'},
        {"check", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct cfg_config cfg;
    struct cxr_buf errors;
    const char *config_path = NULL;
    bool check_only = false;
    int opt, bad = 0, level;
    /* Overrides are applied after the file, in command-line order. */
    struct { const char *section, *key, *value, *origin; } ov[16];
    size_t nov = 0;

    cfg_defaults(&cfg);
    cxr_buf_init(&errors, 1 << 20);
    while ((opt = getopt_long(argc, argv, "c:p:s:a:l:fnhV", opts, NULL)) != -1) {
        const char *section = NULL, *key = NULL, *origin = NULL;
        switch (opt) {
        case 'c': config_path = optarg; continue;
        case 'p': section = "dicom"; key = "port"; origin = "--port"; break;
        case OPT_HTTP_PORT: section = "http"; key = "port"; origin = "--http-port"; break;
        case 's': section = "daemon"; key = "state_dir"; origin = "--state-dir"; break;
        case 'a': section = "dicom"; key = "ae_title"; origin = "--ae-title"; break;
        case 'l': section = "log"; key = "level"; origin = "--log-level"; break;
        case 'f': continue;
        case 'n': check_only = true; continue;
        case 'h': usage(stdout); return 0;
        case 'V': printf("cxrtriaged %s\n", CXR_VERSION); return 0;
        default: usage(stderr); return 2;
        }
        if (nov == CXR_ARRAY_SIZE(ov)) {
            fprintf(stderr, "cxrtriaged: too many overrides\n");
            return 2;
        }
        ov[nov].section = section;
        ov[nov].key = key;
        ov[nov].value = optarg;
        ov[nov].origin = origin;
        nov++;
    }
    if (optind < argc) {
        fprintf(stderr, "cxrtriaged: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (config_path && cfg_load(&cfg, config_path, &errors) != CXR_OK)
        bad = 1;
    for (size_t i = 0; i < nov; i++)
        if (override(&cfg, ov[i].section, ov[i].key, ov[i].value, ov[i].origin, &errors))
            bad = 1;
    if (bad) {
        fprintf(stderr, "cxrtriaged: configuration errors:\n%s", cxr_buf_str(&errors));
        cxr_buf_done(&errors);
        return 1;
    }
    cxr_buf_done(&errors);
    if (cfg_resolve(&cfg) != CXR_OK) {
        fprintf(stderr, "cxrtriaged: a derived path is too long\n");
        return 1;
    }
    level = cxr_log_level_from_name(cfg.log_level);
    cxr_log_setup(level, cfg.log_phi, NULL);
    if (check_only) {
        struct cxr_buf dump;
        cxr_buf_init(&dump, 1 << 20);
        if (cfg_dump(&cfg, &dump) == CXR_OK)
            fputs(cxr_buf_str(&dump), stdout);
        cxr_buf_done(&dump);
        printf("configuration OK\n");
        return 0;
    }

    umask(077);
    cxr_log(CXR_LOG_NOTICE, "daemon.start", "version=%s pid=%ld config='%s'", CXR_VERSION,
            (long)getpid(), config_path ? config_path : "(built-in defaults)");
    log_config(&cfg);
    if (prepare_state(&cfg) != CXR_OK)
        return 1;
    if (cfg.model_path[0]) {
        /* Load and check the model now: a daemon with a broken model must not start. */
        char err[1024];
        nn_model *model = NULL;
        const struct nn_input_spec *in;

        if (nn_model_load(cfg.model_path, &model, err, sizeof(err)) != CXR_OK) {
            cxr_log_err(CXR_EMODEL, "model.invalid", "msg='%s'", err);
            return 1;
        }
        in = nn_model_input_spec(model);
        if (strcmp(in->preprocessing, PX_PREPROC_NAME) != 0) {
            cxr_log_err(CXR_EMODEL, "model.unsupported",
                        "path='%s' preprocessing='%s' msg='this build implements only %s'",
                        cfg.model_path, in->preprocessing, PX_PREPROC_NAME);
            nn_model_free(model);
            return 1;
        }
        cxr_log(CXR_LOG_INFO, "model.loaded", "path='%s' digest=%s classes=%d input=%dx%dx%d",
                cfg.model_path, nn_model_digest(model), nn_model_num_classes(model), in->channels,
                in->size, in->size);
        nn_model_free(model);
    } else {
        cxr_log(CXR_LOG_WARNING, "model.missing",
                "msg='no model file configured and no bundled model found'");
    }
    cxr_log(CXR_LOG_WARNING, "daemon.incomplete",
            "msg='this build does not yet listen for DICOM, score images, write the audit "
            "database, send reports or serve HTTP; it only validates its configuration and "
            "prepares its state directory'");

    /* A self-pipe, not a signalfd: libraries (OpenBLAS) start threads before main() runs,
     * and a signal may be delivered to any of them; the handler only writes one byte. */
    if (pipe2(sig_pipe, O_CLOEXEC) != 0 || fcntl(sig_pipe[1], F_SETFL, O_NONBLOCK) != 0) {
        cxr_log_err(CXR_EIO, "daemon.signals", "error='%s'", strerror(errno));
        return 1;
    }
    {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL) ||
            sigaction(SIGHUP, &sa, NULL)) {
            cxr_log_err(CXR_EIO, "daemon.signals", "error='%s'", strerror(errno));
            return 1;
        }
    }
    (void)sd_notify(0, "READY=1\nSTATUS=Running (configuration only)");
    cxr_log(CXR_LOG_NOTICE, "daemon.ready", "dicom=%s:%d http=%s:%d state_dir='%s'",
            cfg.dicom_bind, cfg.dicom_port, cfg.http_bind, cfg.http_port, cfg.state_dir);

    for (;;) {
        unsigned char signo;
        ssize_t n = read(sig_pipe[0], &signo, 1);

        if (n < 0 && errno == EINTR)
            continue;
        if (n != 1) {
            cxr_log_err(CXR_EIO, "daemon.signals", "error='%s'", strerror(errno));
            break;
        }
        if (signo == SIGHUP) {
            cxr_log(CXR_LOG_NOTICE, "daemon.reload", "msg='nothing to reload yet, ignoring'");
            continue;
        }
        cxr_log(CXR_LOG_NOTICE, "daemon.stop", "signal=%s", strsignal((int)signo));
        break;
    }
    (void)sd_notify(0, "STOPPING=1");
    (void)close(sig_pipe[0]);
    (void)close(sig_pipe[1]);
    cxr_log(CXR_LOG_NOTICE, "daemon.exit", "status=0");
    return 0;
}
