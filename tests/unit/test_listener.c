/*
 * test_listener.c - the C-STORE listener (dicom.h) driven by DCMTK's own echoscu and storescu
 * (Debian package dcmtk, run with TCP_NODELAY=1) on a free 127.0.0.1 port in a temporary
 * spool. Callbacks record what they get; files in spool/in are compared byte for byte (the data
 * set after the File Meta Information) with what was sent. Exits 77 (skipped) when the shared
 * data set or the DCMTK tools are absent.
 */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dicom.h"

#define AET "CXRTRIAGE"
#define MAX_REC 256

static char g_data[4200];
static char g_tmp[256];
static bool g_have_small_fs; /* g_tmp/full is a 3 MiB tmpfs in our own mount namespace */

/* ---- what the callbacks saw ------------------------------------------------------------ */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static enum dcm_admit g_verdict = DCM_ADMIT_OK;
static uint16_t g_status = 0;
static int g_nstored;
static struct dcm_stored g_stored[MAX_REC];
static int g_nevents;
static char g_events[MAX_REC][600];

static enum dcm_admit cb_admit(void *user, const struct dcm_assoc *a, char *reason, size_t len)
{
    enum dcm_admit v;
    (void)user;
    (void)a;
    pthread_mutex_lock(&g_mu);
    v = g_verdict;
    pthread_mutex_unlock(&g_mu);
    if (v != DCM_ADMIT_OK)
        (void)snprintf(reason, len, "test-verdict-%d", (int)v);
    return v;
}

static uint16_t cb_stored(void *user, const struct dcm_stored *s)
{
    uint16_t st;
    (void)user;
    pthread_mutex_lock(&g_mu);
    if (g_nstored < MAX_REC)
        g_stored[g_nstored++] = *s;
    st = g_status;
    pthread_mutex_unlock(&g_mu);
    return st;
}

static void cb_event(void *user, const struct dcm_assoc *a, const char *kind, const char *detail)
{
    (void)user;
    (void)a;
    pthread_mutex_lock(&g_mu);
    if (g_nevents < MAX_REC)
        (void)snprintf(g_events[g_nevents++], sizeof(g_events[0]), "%s %s", kind, detail);
    pthread_mutex_unlock(&g_mu);
}

static void reset(void)
{
    pthread_mutex_lock(&g_mu);
    g_verdict = DCM_ADMIT_OK;
    g_status = 0;
    g_nstored = 0;
    g_nevents = 0;
    pthread_mutex_unlock(&g_mu);
}

static bool saw_event(const char *a, const char *b)
{
    bool found = false;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_nevents && !found; i++)
        found = strstr(g_events[i], a) && (!b || strstr(g_events[i], b));
    pthread_mutex_unlock(&g_mu);
    return found;
}

/* dcm_listener_active once it is `want`, waiting up to 5 s (a slot is freed just after the
 * association's last event). */
static int wait_active(const dcm_listener *l, int want)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 500 && dcm_listener_active(l) != want; i++)
        (void)nanosleep(&ts, NULL);
    return dcm_listener_active(l);
}

/* saw_event, waiting up to 5 s: an event the listener posts after it answered (the release of
 * an association, after the A-RELEASE-RP) may come after the peer has exited. */
static bool wait_event(const char *a, const char *b)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 500; i++) {
        if (saw_event(a, b))
            return true;
        (void)nanosleep(&ts, NULL);
    }
    return false;
}

/* ---- a listener on a free port --------------------------------------------------------- */

struct lsn {
    dcm_listener *l;
    int fd, port;
    char spool[512];
};

static const struct dcm_listener_ops g_ops = {NULL, cb_admit, cb_stored, cb_event};

static void lsn_start(struct lsn *s, const char *name, size_t max_object, bool refuse_other)
{
    struct dcm_listener_config cfg;
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    char err[256];

    memset(&sa, 0, sizeof(sa));
    assert_int_equal(dcm_listen_socket("127.0.0.1", 0, &s->fd, err, sizeof(err)), CXR_OK);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&sa, &sl), 0);
    s->port = ntohs(sa.sin_port);
    (void)snprintf(s->spool, sizeof(s->spool), "%s/%s", g_tmp, name);
    memset(&cfg, 0, sizeof(cfg));
    cfg.listen_fd = s->fd;
    (void)snprintf(cfg.ae_title, sizeof(cfg.ae_title), "%s", AET);
    cfg.max_associations = strcmp(name, "stop") == 0 ? 1 : 6;
    cfg.max_pdu = 65536;
    cfg.acse_timeout = strcmp(name, "acse") == 0 ? 1 : 5;
    cfg.dimse_timeout = strcmp(name, "acse") == 0 ? 1 : 10;
    cfg.idle_timeout = strcmp(name, "acse") == 0 ? 1 : 10;
    cfg.max_object_bytes = max_object;
    cfg.refuse_other_classes = refuse_other;
    (void)snprintf(cfg.spool_dir, sizeof(cfg.spool_dir), "%s", s->spool);
    /* a stale, never acknowledged part file must be gone after start */
    {
        char p[700];
        FILE *f;
        (void)mkdir(s->spool, 0700);
        (void)snprintf(p, sizeof(p), "%s/tmp", s->spool);
        (void)mkdir(p, 0700);
        (void)snprintf(p, sizeof(p), "%s/tmp/stale.part", s->spool);
        f = fopen(p, "w");
        if (f)
            (void)fclose(f);
    }
    if (dcm_listener_start(&cfg, &g_ops, &s->l, err, sizeof(err)) != CXR_OK)
        fail_msg("dcm_listener_start: %s", err);
}

static void lsn_stop(struct lsn *s)
{
    dcm_listener_stop(s->l, 2000);
    (void)close(s->fd);
}

static int count_dir(const struct lsn *s, const char *sub)
{
    char p[700];
    DIR *d;
    struct dirent *e;
    int n = 0;
    (void)snprintf(p, sizeof(p), "%s/%s", s->spool, sub);
    d = opendir(p);
    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    (void)closedir(d);
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs a shell command line; returns its exit status (or -1). */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    int rc;
    va_start(ap, fmt);
    (void)vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    rc = system(cmd);
    if (rc == -1 || !WIFEXITED(rc))
        return -1;
    return WEXITSTATUS(rc);
}

static int storescu(const struct lsn *s, const char *aet, const char *aec, const char *opts,
                    const char *files)
{
    return sh("cd '%s' && env TCP_NODELAY=1 storescu -aet %s -aec %s %s 127.0.0.1 %d %s "
              ">>'%s/storescu.log' 2>&1",
              g_data, aet, aec, opts, s->port, files, g_tmp);
}

/* ---- byte comparison of the data sets ---------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        (void)fclose(f);
        return NULL;
    }
    buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    (void)fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Offset of the data set: after the preamble and the group 0002 elements (explicit VR LE). */
static size_t dataset_offset(const unsigned char *b, size_t len)
{
    size_t off = 132;
    if (len < 132 || memcmp(b + 128, "DICM", 4) != 0)
        return 0;
    while (off + 8 <= len) {
        unsigned group = (unsigned)b[off] | ((unsigned)b[off + 1] << 8);
        const char *vr = (const char *)b + off + 4;
        size_t vl;
        if (group != 2)
            break;
        if (!memcmp(vr, "OB", 2) || !memcmp(vr, "OW", 2) || !memcmp(vr, "SQ", 2) ||
            !memcmp(vr, "UN", 2) || !memcmp(vr, "UT", 2)) {
            if (off + 12 > len)
                return 0;
            vl = (size_t)b[off + 8] | ((size_t)b[off + 9] << 8) | ((size_t)b[off + 10] << 16) |
                 ((size_t)b[off + 11] << 24);
            off += 12 + vl;
        } else {
            vl = (size_t)b[off + 6] | ((size_t)b[off + 7] << 8);
            off += 8 + vl;
        }
    }
    return off;
}

static int g_exact, g_dumped;

/* storescu sends what DCMTK re-encodes from the file (it drops trailing padding and group
 * lengths), so the bytes it sent are the file's bytes only most of the time. The data set in the
 * spool file must be byte-identical to the sent file's where storescu kept the encoding, and
 * otherwise equal element by element with every value in full (dcmdump +L, pixel data included),
 * leaving out only what storescu drops. */
static void assert_same_dataset(const char *sent, const char *got)
{
    char p[4400];
    size_t la = 0, lb = 0, oa, ob;
    unsigned char *a, *b;
    (void)snprintf(p, sizeof(p), "%s/%s", g_data, sent);
    a = slurp(p, &la);
    b = slurp(got, &lb);
    assert_non_null(a);
    assert_non_null(b);
    oa = dataset_offset(a, la);
    ob = dataset_offset(b, lb);
    assert_true(oa > 0 && ob > 0);
    if (la - oa == lb - ob && memcmp(a + oa, b + ob, la - oa) == 0) {
        g_exact++;
    } else {
        const char *filt = "grep -v -e '^#' -e '^ *(0002,' -e '^ *(fffc,fffc)' -e '^ *(....,0000)' "
                           "-e '^ *(fffe,e00d)' -e '^ *(fffe,e0dd)' | sed -e 's/ *#.*//' "
                           "-e 's/(Sequence with [^)]*/(Sequence/' -e 's/(Item with [^)]*/(Item/'";
        g_dumped++;
        if (sh("dcmdump +L -q '%s' | %s >'%s/a.txt' && dcmdump +L -q '%s' | %s >'%s/b.txt' && "
               "cmp -s '%s/a.txt' '%s/b.txt'",
               p, filt, g_tmp, got, filt, g_tmp, g_tmp, g_tmp) != 0)
            fail_msg("%s: data set in '%s' differs from what was sent", sent, got);
    }
    free(a);
    free(b);
}

/* The derived files share their source's SOP Instance UID: match the transfer syntax too. */
static const struct dcm_stored *find_stored(const char *uid, const char *xfer)
{
    for (int i = g_nstored - 1; i >= 0; i--)
        if (strcmp(g_stored[i].sop_instance_uid, uid) == 0 &&
            strcmp(g_stored[i].transfer_syntax, xfer) == 0)
            return &g_stored[i];
    return NULL;
}

/* The SOP Instance UID of a data file, read through the module's own reader. */
static void file_uid(const char *name, char *uid, size_t len, char *xfer, size_t xlen)
{
    char p[4400], err[256];
    dcm_file *f = NULL;
    (void)snprintf(p, sizeof(p), "%s/%s", g_data, name);
    if (dcm_file_open(p, &f, err, sizeof(err)) != CXR_OK)
        fail_msg("%s", err);
    (void)snprintf(uid, len, "%s", dcm_file_info(f)->sop_instance_uid);
    if (xfer)
        (void)snprintf(xfer, xlen, "%s", dcm_file_info(f)->transfer_syntax);
    dcm_file_free(f);
}

static void check_received(const char *name, bool scored)
{
    char uid[65], xfer[65];
    const struct dcm_stored *s;
    const char *base;
    file_uid(name, uid, sizeof(uid), xfer, sizeof(xfer));
    pthread_mutex_lock(&g_mu);
    s = find_stored(uid, xfer);
    pthread_mutex_unlock(&g_mu);
    if (!s) {
        fail_msg("%s: not delivered to stored() in its transfer syntax %s", name, xfer);
        return;
    }
    assert_string_equal(s->transfer_syntax, xfer); /* no transcoding on the way */
    assert_int_equal(s->scored_class, scored);
    assert_true(s->size_bytes > 0);
    assert_true(s->received_at_ms > 0);
    base = strrchr(s->path, '/');
    assert_non_null(base);
    assert_true(dcm_spool_name_ok(base + 1));
    assert_true(strncmp(base + 1, uid, strlen(uid)) == 0);
    assert_same_dataset(name, s->path);
    {
        /* the spool file is a DICOM file with a File Meta header naming the same syntax */
        char err[256];
        dcm_file *f = NULL;
        if (dcm_file_open(s->path, &f, err, sizeof(err)) != CXR_OK)
            fail_msg("%s", err);
        assert_true(dcm_file_info(f)->has_meta);
        assert_string_equal(dcm_file_info(f)->transfer_syntax, xfer);
        assert_string_equal(dcm_file_info(f)->sop_instance_uid, uid);
        dcm_file_free(f);
    }
}

/* ---- the tests ---------------------------------------------------------------------------- */

static struct lsn g_main, g_acse;

static int setup(void **state)
{
    (void)state;
    lsn_start(&g_main, "main", 64u << 20, false);
    lsn_start(&g_acse, "acse", 64u << 20, false);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    lsn_stop(&g_main);
    lsn_stop(&g_acse);
    return 0;
}

static void test_spool_names(void **state)
{
    (void)state;
    assert_true(dcm_spool_name_ok("1.2.840.10008.1.2.3.1700000000000-1.dcm"));
    assert_false(dcm_spool_name_ok("1.2..3.1700000000000-1.dcm"));
    assert_false(dcm_spool_name_ok("1.2.3.1700000000000.dcm"));
    assert_false(dcm_spool_name_ok("../1.2.1-1.dcm"));
    assert_false(dcm_spool_name_ok("1.2.3.17-1.part"));
    assert_false(dcm_spool_name_ok(".1-1.dcm"));
    assert_int_equal(count_dir(&g_main, "tmp"), 0); /* the stale part file is gone */
}

static void test_echo(void **state)
{
    (void)state;
    reset();
    assert_int_equal(sh("env TCP_NODELAY=1 echoscu -aet SCU -aec %s 127.0.0.1 %d >/dev/null 2>&1",
                        AET, g_main.port),
                     0);
    assert_true(wait_event("association.released", "calling_aet=SCU"));
    assert_int_equal(wait_active(g_main.l, 0), 0);
}

static void test_store_one(void **state)
{
    (void)state;
    reset();
    assert_int_equal(storescu(&g_main, "SCU", AET, "", "cxr_siim_8bit_explicit_le.dcm"), 0);
    assert_int_equal(g_nstored, 1);
    check_received("cxr_siim_8bit_explicit_le.dcm", true);
    assert_int_equal(count_dir(&g_main, "tmp"), 0);
}

static const char *const k_syntaxes[][2] = {
    /* file, storescu option proposing its transfer syntax */
    {"cxr_siim_8bit_implicit_le.dcm", "-xi"},
    {"cxr_siim_8bit_explicit_be.dcm", "-xb"},
    {"cxr_siim_8bit_deflated.dcm", "-xd"},
    {"cxr_siim_8bit_jpeg_lossless_sv1.dcm", "-xs"},
    {"cxr_siim_12bit_jpeg_extended.dcm", "-xx"},
    {"cxr_siim_8bit_jpegls_lossless.dcm", "-xt"},
    {"cxr_siim_8bit_jpegls_nearlossless.dcm", "-xu"},
    {"cxr_siim_8bit_j2k_lossless.dcm", "-xv"},
    {"cxr_siim_8bit_j2k_lossy.dcm", "-xw"},
    {"cxr_siim_8bit_rle.dcm", "-xr"},
    {"txrv_siim_cxr_1.2.276.0.7230010.3.1.4.8323329.6904.dcm", "-xy"},
    {"pydicom_SC_rgb_jpeg_dcmtk.dcm", "-xy"},
};

static void test_transfer_syntaxes(void **state)
{
    (void)state;
    reset();
    for (size_t i = 0; i < sizeof(k_syntaxes) / sizeof(k_syntaxes[0]); i++) {
        if (storescu(&g_main, "SCU", AET, k_syntaxes[i][1], k_syntaxes[i][0]) != 0)
            fail_msg("storescu %s %s failed (see %s/storescu.log)", k_syntaxes[i][1],
                     k_syntaxes[i][0], g_tmp);
        check_received(k_syntaxes[i][0], strncmp(k_syntaxes[i][0], "cxr_", 4) == 0 ||
                                             strncmp(k_syntaxes[i][0], "txrv_", 5) == 0 ||
                                             strstr(k_syntaxes[i][0], "_SC_") != NULL);
    }
    assert_int_equal(count_dir(&g_main, "tmp"), 0);
}

static const char *const k_dir_files[] = {
    "cxr_siim_8bit_explicit_le.dcm",
    "cxr_siim_8bit_mono1_inverted.dcm",
    "cxr_siim_12bit_rescale_window.dcm",
    "cxr_siim_16bit_signed_window.dcm",
    "cxr_rg1_15bit_mono1_half_explicit_le.dcm",
    "cxr_siim_8bit_odd_513x777.dcm",
};

static void test_store_directory(void **state)
{
    char dir[400];
    double t;
    size_t n = sizeof(k_dir_files) / sizeof(k_dir_files[0]);
    (void)state;
    reset();
    (void)snprintf(dir, sizeof(dir), "%s/batch", g_tmp);
    assert_int_equal(mkdir(dir, 0700), 0);
    for (size_t i = 0; i < n; i++) {
        char a[4400], b[700];
        (void)snprintf(a, sizeof(a), "%s/%s", g_data, k_dir_files[i]);
        (void)snprintf(b, sizeof(b), "%s/%s", dir, k_dir_files[i]);
        assert_int_equal(symlink(a, b), 0);
    }
    t = now_s();
    {
        char arg[500];
        (void)snprintf(arg, sizeof(arg), "+sd '%s'", dir);
        assert_int_equal(storescu(&g_main, "SCU", AET, "", arg), 0);
    }
    t = now_s() - t;
    printf("# storescu +sd of %zu files, one association: %.2f s\n", n, t);
    assert_int_equal(g_nstored, (int)n);
    for (size_t i = 0; i < n; i++)
        check_received(k_dir_files[i], true);
    assert_int_equal(count_dir(&g_main, "tmp"), 0);
}

static void test_parallel(void **state)
{
    const char *files[4] = {"cxr_siim_8bit_rle.dcm", "cxr_siim_8bit_jpegls_lossless.dcm",
                            "cxr_rg1_15bit_mono1_half_implicit_le.dcm",
                            "cxr_siim_8bit_j2k_lossless.dcm"};
    double t;
    int rc;
    (void)state;
    reset();
    t = now_s();
    rc = sh("cd '%s' && for f in '-xr %s' '-xt %s' '-xi %s' '-xv %s'; do set -- $f; "
            "(env TCP_NODELAY=1 storescu -aet PAR -aec %s $1 127.0.0.1 %d $2 $2 $2 "
            ">>'%s/storescu.log' 2>&1 || echo fail >>'%s/par.fail') & done; wait; "
            "test ! -e '%s/par.fail'",
            g_data, files[0], files[1], files[2], files[3], AET, g_main.port, g_tmp, g_tmp, g_tmp);
    t = now_s() - t;
    assert_int_equal(rc, 0);
    printf("# 4 parallel storescu x 3 files: %.2f s\n", t);
    assert_int_equal(g_nstored, 12);
    for (int i = 0; i < 4; i++)
        check_received(files[i], true);
    assert_int_equal(count_dir(&g_main, "tmp"), 0);
}

/* Not a pass/fail bound (the machine is shared): prints what one and four associations
 * sustain with write + fsync + rename + directory fsync per 2 MB image, on the test's disk. */
static void test_throughput(void **state)
{
    const char *f = "cxr_siim_12bit_rescale_window.dcm";
    char files[2048] = "";
    double t1, t4;
    (void)state;
    reset();
    for (int i = 0; i < 40; i++) {
        (void)strncat(files, f, sizeof(files) - strlen(files) - 2);
        (void)strncat(files, " ", sizeof(files) - strlen(files) - 1);
    }
    t1 = now_s();
    assert_int_equal(storescu(&g_main, "SCU", AET, "", files), 0);
    t1 = now_s() - t1;
    assert_int_equal(g_nstored, 40);
    reset();
    files[strlen(f) * 10 + 10] = '\0';
    t4 = now_s();
    assert_int_equal(sh("cd '%s' && for i in 1 2 3 4; do (env TCP_NODELAY=1 storescu -aec %s "
                        "127.0.0.1 %d %s >>'%s/storescu.log' 2>&1 || echo fail >>'%s/tp.fail') & "
                        "done; wait; test ! -e '%s/tp.fail'",
                        g_data, AET, g_main.port, files, g_tmp, g_tmp, g_tmp),
                     0);
    t4 = now_s() - t4;
    assert_int_equal(g_nstored, 40);
    printf("# 40 x 2 MB image: 1 association %.2f s (%.0f images/s), 4 x 10 in parallel %.2f s "
           "(%.0f images/s)\n",
           t1, 40 / t1, t4, 40 / t4);
    assert_int_equal(count_dir(&g_main, "tmp"), 0);
}

static void test_refusals(void **state)
{
    (void)state;
    reset();
    pthread_mutex_lock(&g_mu);
    g_verdict = DCM_ADMIT_REJECT_CALLING_AET;
    pthread_mutex_unlock(&g_mu);
    assert_int_not_equal(storescu(&g_main, "BADSCU", AET, "", "cxr_siim_8bit_rle.dcm"), 0);
    assert_true(saw_event("association.refused", "calling_aet=BADSCU"));
    assert_true(saw_event("association.refused", "reason=test-verdict-1"));

    pthread_mutex_lock(&g_mu);
    g_verdict = DCM_ADMIT_REJECT_BUSY;
    pthread_mutex_unlock(&g_mu);
    assert_int_not_equal(storescu(&g_main, "SCU", AET, "", "cxr_siim_8bit_rle.dcm"), 0);
    assert_true(saw_event("association.refused", "reason=test-verdict-3"));

    pthread_mutex_lock(&g_mu);
    g_verdict = DCM_ADMIT_OK;
    pthread_mutex_unlock(&g_mu);
    assert_int_not_equal(storescu(&g_main, "SCU", "NOTUS", "", "cxr_siim_8bit_rle.dcm"), 0);
    assert_true(saw_event("association.refused", "called_aet=NOTUS"));
    assert_int_equal(g_nstored, 0);
    assert_int_equal(dcm_listener_active(g_main.l), 0);
}

static void test_stored_refuses(void **state)
{
    char path[1024];
    (void)state;
    reset();
    pthread_mutex_lock(&g_mu);
    g_status = 0xA700;
    pthread_mutex_unlock(&g_mu);
    (void)storescu(&g_main, "SCU", AET, "-v", "cxr_siim_8bit_implicit_le.dcm");
    assert_int_equal(g_nstored, 1);
    (void)snprintf(path, sizeof(path), "%s", g_stored[0].path);
    assert_int_not_equal(access(path, F_OK), 0); /* deleted */
    assert_true(saw_event("store.failed", "status=0xa700"));
    assert_int_equal(sh("grep -q 'Refused: OutOfResources' '%s/storescu.log'", g_tmp), 0);
}

static void test_other_classes(void **state)
{
    struct lsn s;
    (void)state;
    reset();
    /* accepted (not scored) on the main listener */
    assert_int_equal(storescu(&g_main, "SCU", AET, "", "pydicom_CT_small.dcm"), 0);
    check_received("pydicom_CT_small.dcm", false);
    /* refused where only the scored classes are wanted */
    reset();
    lsn_start(&s, "strict", 64u << 20, true);
    assert_int_not_equal(storescu(&s, "SCU", AET, "-R", "pydicom_CT_small.dcm"), 0);
    assert_int_equal(g_nstored, 0);
    assert_int_equal(count_dir(&s, "in"), 0);
    assert_true(saw_event("association.refused", "reason=no-acceptable-presentation-context"));
    lsn_stop(&s);
}

/* A SOP Instance UID that is not a UID never becomes a path: 0xC000, nothing kept. */
static void test_bad_uid(void **state)
{
    (void)state;
    reset();
    assert_int_equal(
        sh("cp '%s/pydicom_CT_small.dcm' '%s/baduid.dcm' && chmod u+w '%s/baduid.dcm' && "
           "dcmodify -nb -m '(0008,0018)=1.2.3.abc/../x' '%s/baduid.dcm' >/dev/null 2>&1",
           g_data, g_tmp, g_tmp, g_tmp),
        0);
    (void)sh("env TCP_NODELAY=1 storescu -v -aec %s 127.0.0.1 %d '%s/baduid.dcm' "
             ">>'%s/storescu.log' 2>&1",
             AET, g_main.port, g_tmp, g_tmp);
    assert_int_equal(g_nstored, 0);
    assert_true(saw_event("store.failed", "status=0xc000 reason=sop-instance-uid-invalid"));
    assert_int_equal(sh("grep -q 'Error: CannotUnderstand' '%s/storescu.log'", g_tmp), 0);
    assert_int_equal(count_dir(&g_main, "tmp"), 0);
}

/* ENOSPC while a data set streams in: 0xA700, nothing half-written left, the association goes on.
 */
static void test_disk_full(void **state)
{
    struct lsn s;
    (void)state;
    if (!g_have_small_fs) {
        printf("# skipped: no private mount namespace for a small tmpfs (needs root)\n");
        skip();
    }
    reset();
    lsn_start(&s, "full", 64u << 20, false);
    (void)sh(": >'%s/storescu.log'", g_tmp);
    (void)storescu(&s, "SCU", AET, "-v",
                   "cxr_siim_12bit_rescale_window.dcm cxr_siim_12bit_rescale_window.dcm");
    assert_int_equal(g_nstored, 1); /* the first 2 MB image fits, the second does not */
    assert_true(saw_event("store.failed", "status=0xa700 reason=disk-full"));
    /* answered on the association (not aborted) */
    assert_int_equal(sh("grep -q 'Refused: OutOfResources' '%s/storescu.log'", g_tmp), 0);
    assert_int_equal(count_dir(&s, "tmp"), 0);
    assert_int_equal(count_dir(&s, "in"), 1);
    lsn_stop(&s);
}

static void test_too_large(void **state)
{
    struct lsn s;
    (void)state;
    reset();
    lsn_start(&s, "small", 100000, false);
    (void)sh(": >'%s/storescu.log'", g_tmp);
    (void)storescu(&s, "SCU", AET, "-v", "cxr_siim_8bit_explicit_le.dcm");
    assert_int_equal(g_nstored, 0);
    assert_true(saw_event("store.failed", "reason=too-large"));
    /* the rest of the data set was drained, not written, and the refusal answered in time */
    assert_int_equal(sh("grep -q 'Refused: OutOfResources' '%s/storescu.log'", g_tmp), 0);
    assert_int_equal(count_dir(&s, "in"), 0);
    assert_int_equal(count_dir(&s, "tmp"), 0);
    /* objects under the cap still go through */
    assert_int_equal(storescu(&s, "SCU", AET, "", "pydicom_CT_small.dcm"), 0);
    assert_int_equal(g_nstored, 1);
    lsn_stop(&s);
}

/* A peer that connects and never sends its A-ASSOCIATE-RQ is dropped after acse_timeout. */
static void test_acse_timeout(void **state)
{
    struct sockaddr_in sa;
    int fd;
    (void)state;
    reset();
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)g_acse.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    for (int i = 0; i < 60 && !saw_event("association.timeout", "phase=associate-rq"); i++)
        usleep(50000);
    assert_true(saw_event("association.timeout", "peer=127.0.0.1"));
    {
        char c;
        assert_true(read(fd, &c, 1) <= 0); /* closed by the listener */
    }
    (void)close(fd);
}

/* An association that goes quiet (the SCU is stopped with SIGSTOP) is aborted after
 * idle_timeout (1 s on this listener). */
static void test_idle_timeout(void **state)
{
    char pidf[400];
    FILE *f;
    int pid = 0;
    (void)state;
    reset();
    (void)snprintf(pidf, sizeof(pidf), "%s/echoscu.pid", g_tmp);
    assert_int_equal(sh("env TCP_NODELAY=1 echoscu -aec %s --repeat 1000000 127.0.0.1 %d "
                        ">/dev/null 2>&1 & echo $! >'%s'",
                        AET, g_acse.port, pidf),
                     0);
    f = fopen(pidf, "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%d", &pid), 1);
    (void)fclose(f);
    for (int i = 0; i < 100 && dcm_listener_active(g_acse.l) == 0; i++)
        usleep(20000);
    assert_int_equal(dcm_listener_active(g_acse.l), 1);
    assert_int_equal(kill(pid, SIGSTOP), 0);
    /* Stopped between two C-ECHOs: idle_timeout ends it ("association.timeout") in about 1 s.
     * Stopped in the middle of a PDU (a race we cannot steer, seen about once in ten runs
     * under load): DCMTK's blocking read ends on the socket timeouts the listener sets from
     * dimse_timeout, which took up to ~11 s here ("association.aborted ... by=us"); bounding
     * a mid-PDU stall tightly is the reliability issue's hostile-peer case. Both must end. */
    int waited = 0;
    for (; waited < 400 && !saw_event("association.timeout", "calling_aet=ECHOSCU") &&
           !saw_event("association.aborted", "calling_aet=ECHOSCU");
         waited++)
        usleep(50000);
    if (waited > 40)
        fprintf(stderr, "note: the stopped association ended after %.1f s\n", waited * 0.05);
    (void)kill(pid, SIGKILL);
    (void)kill(pid, SIGCONT);
    if (!saw_event("association.timeout", "calling_aet=ECHOSCU") &&
        !saw_event("association.aborted", "calling_aet=ECHOSCU")) {
        pthread_mutex_lock(&g_mu);
        for (int i = 0; i < g_nevents; i++)
            fprintf(stderr, "event: %s\n", g_events[i]);
        pthread_mutex_unlock(&g_mu);
        fail_msg("the stopped association was not ended within 20 s");
    }
    for (int i = 0; i < 50 && dcm_listener_active(g_acse.l) != 0; i++)
        usleep(20000);
    assert_int_equal(dcm_listener_active(g_acse.l), 0);
}

static void test_stop_bounded(void **state)
{
    struct lsn s;
    double t;
    (void)state;
    reset();
    lsn_start(&s, "stop", 64u << 20, false);
    /* an association kept busy with C-ECHOs */
    (void)sh("(env TCP_NODELAY=1 echoscu -aec %s --repeat 1000000 127.0.0.1 %d >/dev/null 2>&1 &)",
             AET, s.port);
    for (int i = 0; i < 100 && dcm_listener_active(s.l) == 0; i++)
        usleep(20000);
    assert_int_equal(dcm_listener_active(s.l), 1);
    /* max_associations is 1 here: a second association is refused, transient */
    assert_int_not_equal(storescu(&s, "SECOND", AET, "", "cxr_siim_8bit_rle.dcm"), 0);
    assert_true(saw_event("association.refused", "reason=too-many-associations"));
    assert_int_equal(sh("grep -q 'Rejected Transient' '%s/storescu.log'", g_tmp), 0);
    t = now_s();
    dcm_listener_stop(s.l, 300);
    t = now_s() - t;
    (void)close(s.fd);
    printf("# stop with one open association: %.3f s\n", t);
    assert_true(t < 2.5);
    assert_true(saw_event("association.aborted", "reason=stopping"));
}

int main(void)
{
    const char *d = getenv("CXR_DATA_DIR");
    char probe[4300];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spool_names),     cmocka_unit_test(test_echo),
        cmocka_unit_test(test_store_one),       cmocka_unit_test(test_transfer_syntaxes),
        cmocka_unit_test(test_store_directory), cmocka_unit_test(test_parallel),
        cmocka_unit_test(test_throughput),      cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_stored_refuses),  cmocka_unit_test(test_other_classes),
        cmocka_unit_test(test_bad_uid),         cmocka_unit_test(test_disk_full),
        cmocka_unit_test(test_too_large),       cmocka_unit_test(test_acse_timeout),
        cmocka_unit_test(test_idle_timeout),    cmocka_unit_test(test_stop_bounded),
    };
    int rc;

    (void)snprintf(g_data, sizeof(g_data), "%s/dicom", d ? d : "");
    (void)snprintf(probe, sizeof(probe), "%s/MANIFEST.csv", g_data);
    if (!d || access(probe, R_OK) != 0) {
        printf("SKIPPED: needs the shared data set at '%s' (set -DCXR_DATA_DIR)\n", g_data);
        return 77;
    }
    if (sh("command -v storescu >/dev/null && command -v echoscu >/dev/null") != 0) {
        printf("SKIPPED: needs DCMTK's storescu and echoscu (Debian package dcmtk)\n");
        return 77;
    }
    (void)snprintf(g_tmp, sizeof(g_tmp), "/tmp/cxr-listener.XXXXXX");
    if (!mkdtemp(g_tmp))
        return 1;
    if (dcm_global_init() != CXR_OK)
        return 1;
    {
        /* before any thread exists: a private mount namespace with a small tmpfs */
        char full[300];
        (void)snprintf(full, sizeof(full), "%s/full", g_tmp);
        g_have_small_fs = mkdir(full, 0700) == 0 && unshare(CLONE_NEWNS) == 0 &&
                          mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
                          mount("cxrfull", full, "tmpfs", 0, "size=3m,mode=0700") == 0;
    }
    rc = cmocka_run_group_tests(tests, setup, teardown);
    printf("# data sets byte-identical to the sent file: %d, equal by dcmdump +L: %d\n", g_exact,
           g_dumped);
    if (g_have_small_fs) {
        char full[300];
        (void)snprintf(full, sizeof(full), "%s/full", g_tmp);
        (void)umount2(full, MNT_DETACH);
    }
    if (rc == 0)
        (void)sh("rm -rf '%s'", g_tmp);
    else
        printf("# kept %s for inspection\n", g_tmp);
    return rc;
}
