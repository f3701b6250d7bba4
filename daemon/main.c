/*
 * main.c - cxrtriaged, the triage daemon.
 *
 * Startup order: log to stderr, parse the config (file, then command-line overrides), create the
 * state directory (0700), log the effective configuration, load and check the model and the
 * triage rule, then hand over to the loop (loop.c): it opens the audit ledger, starts the
 * workers, resumes unfinished work, starts the DICOM listener, tells systemd READY=1 and runs
 * until SIGTERM or SIGINT, with the report sender and the HTTP endpoint (http.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "daemon.h"
#include "http.h"
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
            "      --list-routes      print the HTTP endpoint's routes (METHOD PATH) and exit\n"
            "  -h, --help             show this help and exit\n"
            "  -V, --version          show the version and exit\n",
            CXR_DISCLAIMER);
}

enum { OPT_HTTP_PORT = 256, OPT_LIST_ROUTES };

static void print_route(void *user, const char *method, const char *pattern)
{
    (void)user;
    printf("%s %s\n", method, pattern);
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

/* Loads and checks the model: a daemon with a broken or incompatible model must not start. */
static cxr_err load_model(struct daemon *d)
{
    char err[1024];
    const struct nn_input_spec *in;

    if (!d->cfg.model_path[0])
        return cxr_log_err(CXR_EMODEL, "model.missing",
                           "msg='no model file configured ([model] path) and no bundled model found'");
    if (nn_model_load(d->cfg.model_path, &d->model, err, sizeof(err)) != CXR_OK)
        return cxr_log_err(CXR_EMODEL, "model.invalid", "msg='%s'", err);
    in = nn_model_input_spec(d->model);
    if (strcmp(in->preprocessing, PX_PREPROC_NAME) != 0) {
        cxr_log_err(CXR_EMODEL, "model.unsupported",
                    "path='%s' preprocessing='%s' msg='this build implements only %s'",
                    d->cfg.model_path, in->preprocessing, PX_PREPROC_NAME);
        nn_model_free(d->model);
        d->model = NULL;
        return CXR_EMODEL;
    }
    if (nn_model_num_classes(d->model) > ST_MAX_CLASSES) {
        cxr_log_err(CXR_EMODEL, "model.unsupported", "path='%s' classes=%d msg='at most %d are audited'",
                    d->cfg.model_path, nn_model_num_classes(d->model), ST_MAX_CLASSES);
        nn_model_free(d->model);
        d->model = NULL;
        return CXR_EMODEL;
    }
    cxr_log(CXR_LOG_INFO, "model.loaded", "path='%s' digest=%s classes=%d input=%dx%dx%d",
            d->cfg.model_path, nn_model_digest(d->model), nn_model_num_classes(d->model),
            in->channels, in->size, in->size);
    {
        char kdesc[256];
        (void)nn_kernel_describe(kdesc, sizeof(kdesc));
        cxr_log(CXR_LOG_INFO, "model.kernel", "%s", kdesc);
    }
    return CXR_OK;
}

/* One worker: the engine's threads on every core, for the lowest latency; several workers: one
 * core each unless [daemon] threads_per_worker says otherwise. */
static void set_threads(const struct cfg_config *cfg)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int t = cfg->threads_per_worker;

    if (t == 0)
        t = cfg->workers == 1 ? (int)(cores > 0 ? cores : 1) : 1;
    if (t > NN_MAX_THREADS)
        t = NN_MAX_THREADS;
    (void)nn_set_threads(t);
    cxr_log(CXR_LOG_INFO, "pipeline.threads", "workers=%d engine_threads=%d", cfg->workers, t);
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
        {"list-routes", no_argument, NULL, OPT_LIST_ROUTES},
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
        case OPT_LIST_ROUTES: http_each_route(print_route, NULL); return 0;
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
    if (strcmp(cfg.tls, "off") != 0) {
        /* the certificate, key and CA files as the listener will load them */
        struct dcm_tls_config tc;
        char terr[1024];
        daemon_tls_config(&cfg, &tc);
        if (dcm_tls_check(&tc, true, terr, sizeof(terr)) != CXR_OK) {
            fprintf(stderr, "cxrtriaged: configuration errors:\n[dicom] %s\n", terr);
            return 1;
        }
    }
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
    /* Each image takes tens of MB of short-lived buffers (the file, the decoded samples, the
     * [0,1] image). Served by mmap they are fresh zero pages every time, and the page faults
     * cost more than the decoding itself (a 10 MB CR: ~200 ms instead of ~25 ms). Keep them in
     * the heap for reuse: at most a few hundred MB stay mapped per worker. */
    (void)mallopt(M_MMAP_THRESHOLD, 256 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 512 << 20);
    cxr_log(CXR_LOG_NOTICE, "daemon.start", "version=%s pid=%ld config='%s'", CXR_VERSION,
            (long)getpid(), config_path ? config_path : "(built-in defaults)");
    log_config(&cfg);
    if (prepare_state(&cfg) != CXR_OK)
        return 1;
    if (dcm_global_init() != CXR_OK) {
        cxr_log_err(CXR_EDICOM, "dicom.init", "msg='the DICOM data dictionary cannot be loaded'");
        return 1;
    }
    {
        static struct daemon d;
        int rc;

        d.cfg = cfg;
        d.config_path = config_path;
        if (load_model(&d) != CXR_OK)
            return 1;
        if (daemon_build_rule(&d, cfg.thresholds, &d.rule) != CXR_OK) {
            nn_model_free(d.model);
            return 1;
        }
        (void)nn_triage_rule_text(&d.rule, d.model, d.rule_text, sizeof(d.rule_text));
        d.shadow = !strcmp(cfg.report_mode, "shadow");
        set_threads(&cfg);
        rc = daemon_run(&d);
        nn_model_free(d.model);
        cxr_log(CXR_LOG_NOTICE, "daemon.exit", "status=%d", rc);
        return rc;
    }
}
