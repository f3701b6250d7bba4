/*
 * fuzz_pdu.c - libFuzzer target for the DICOM listener's network input: the bytes a peer sends
 * on a TCP connection (A-ASSOCIATE-RQ, P-DATA-TF with C-ECHO / C-STORE, A-RELEASE-RQ, A-ABORT,
 * or anything else), as dicom/adapter/dcm_scp.cpp receives them through DCMTK.
 *
 * LLVMFuzzerInitialize starts the real listener (dcm_listener_start) once, on 127.0.0.1 on a
 * port the kernel picks, with a spool directory in /dev/shm (else $TMPDIR or /tmp: the listener
 * fsyncs every stored file, which takes seconds on a busy disk) and callbacks that admit every
 * association (except calling AE titles starting "REJECT" or "BUSY", which take the two
 * refusal paths), check what they are given and remove each stored file. Each input is one
 * connection: connect, write the bytes, half-close, read the answers until the listener closes.
 *
 * Asserted (abort() = a finding): the listener keeps accepting (a refused connect means it
 * died); it closes every connection by itself and has no association left within 30 s of the
 * half-close (the listener's timeouts are 2 s; 30 s leaves room for a machine under heavy load);
 * callbacks get terminated strings.
 *
 * DCMTK 3.6.7 allocates a DIMSE command element's value from its length field (up to 4 GiB)
 * before it reads it (corpus/pdu/regress_dimse_command_huge_length.bin). In the daemon that is
 * address space, released at once; when the allocation fails DCMTK refuses the command cleanly.
 * So under ASan allocations over 64 MiB fail here (returning NULL) instead of ending the run,
 * which checks that failure path on every such input.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dicom.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__asan_default_options(void);

const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1:max_allocation_size_mb=64";
}

#define HANG_S 30.0 /* seconds after the half-close by which the listener must be done */

static dcm_listener *g_l;
static int g_port, g_fd = -1;
static char g_spool[256];

static void die(const char *what)
{
    fprintf(stderr, "fuzz_pdu: %s\n", what);
    abort();
}

static void terminated(const char *s, size_t cap, const char *what)
{
    if (strnlen(s, cap) == cap)
        die(what);
}

static enum dcm_admit cb_admit(void *user, const struct dcm_assoc *a, char *reason, size_t len)
{
    (void)user;
    terminated(a->calling_aet, sizeof(a->calling_aet), "admit: calling_aet not terminated");
    terminated(a->called_aet, sizeof(a->called_aet), "admit: called_aet not terminated");
    if (strncmp(a->calling_aet, "REJECT", 6) == 0) {
        (void)snprintf(reason, len, "fuzz-reject");
        return DCM_ADMIT_REJECT_CALLING_AET;
    }
    if (strncmp(a->calling_aet, "BUSY", 4) == 0) {
        (void)snprintf(reason, len, "fuzz-busy");
        return DCM_ADMIT_REJECT_BUSY;
    }
    return DCM_ADMIT_OK;
}

static uint16_t cb_stored(void *user, const struct dcm_stored *s)
{
    (void)user;
    terminated(s->sop_instance_uid, sizeof(s->sop_instance_uid), "stored: uid not terminated");
    terminated(s->path, sizeof(s->path), "stored: path not terminated");
    if (unlink(s->path) != 0)
        die("stored: the reported path does not exist");
    return 0x0000;
}

static void cb_event(void *user, const struct dcm_assoc *a, const char *kind, const char *detail)
{
    (void)user;
    (void)a;
    if (!kind || !detail)
        die("event: NULL kind or detail");
    terminated(detail, 4096, "event: detail over 4 KB");
}

static const struct dcm_listener_ops g_ops = {NULL, cb_admit, cb_stored, cb_event};

static void rm_tree(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        char p[512];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        (void)snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (depth < 2)
            rm_tree(p, depth + 1);
        (void)unlink(p);
    }
    (void)closedir(d);
    (void)rmdir(dir);
}

static void stop(void)
{
    dcm_listener_stop(g_l, 2000);
    g_l = NULL;
    if (g_fd >= 0)
        (void)close(g_fd);
    rm_tree(g_spool, 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct dcm_listener_config cfg;
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof(sa);
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    char err[256];

    (void)argc;
    (void)argv;
    (void)signal(SIGPIPE, SIG_IGN);
    if (dcm_global_init() != CXR_OK)
        die("dcm_global_init failed");
    (void)snprintf(g_spool, sizeof(g_spool), "%s/fuzz_pdu.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_spool))
        die("mkdtemp failed");
    if (dcm_listen_socket("127.0.0.1", 0, &g_fd, err, sizeof(err)) != CXR_OK ||
        getsockname(g_fd, (struct sockaddr *)&sa, &sl) != 0)
        die("cannot listen on 127.0.0.1");
    g_port = ntohs(sa.sin_port);
    memset(&cfg, 0, sizeof(cfg));
    cfg.listen_fd = g_fd;
    (void)snprintf(cfg.ae_title, sizeof(cfg.ae_title), "CXRTRIAGE");
    cfg.max_associations = 4;
    cfg.max_pdu = 16384;
    cfg.acse_timeout = cfg.dimse_timeout = cfg.idle_timeout = 2;
    cfg.max_object_bytes = (size_t)1 << 20;
    cfg.refuse_other_classes = false;
    (void)snprintf(cfg.spool_dir, sizeof(cfg.spool_dir), "%s", g_spool);
    if (dcm_listener_start(&cfg, &g_ops, &g_l, err, sizeof(err)) != CXR_OK)
        die(err);
    (void)atexit(stop);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sockaddr_in sa;
    struct timeval tv = {(time_t)HANG_S, 0};
    char buf[16384];
    size_t off = 0;
    double t0;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (s < 0)
        die("socket failed");
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)g_port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    (void)setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    /* a connect that fails for 2 s means the listener is gone (one transient failure, errno not
     * known then, was seen after 200,000 connections in 194 s) */
    for (int tries = 0; connect(s, (struct sockaddr *)&sa, sizeof(sa)) != 0; tries++) {
        if (tries == 20) {
            fprintf(stderr, "fuzz_pdu: connect: %s\n", strerror(errno));
            die("the listener no longer accepts connections");
        }
        (void)close(s);
        (void)poll(NULL, 0, 100);
        s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            die("socket failed");
        (void)setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    while (off < size) { /* the listener may close early: stop writing then */
        ssize_t n = send(s, data + off, size - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    (void)shutdown(s, SHUT_WR);
    t0 = now_s();
    for (;;) { /* until the listener closes (or resets) the connection */
        ssize_t n = recv(s, buf, sizeof(buf), 0);
        /* EINTR: libFuzzer's timer signal; EAGAIN: SO_RCVTIMEO ran out */
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK))
            break;
        if (now_s() - t0 > HANG_S)
            die("the listener kept a half-closed connection open over 30 s");
    }
    (void)close(s);
    while (dcm_listener_active(g_l) > 0) { /* its association thread ends too */
        if (now_s() - t0 > HANG_S)
            die("an association still running 30 s after its peer half-closed");
        (void)poll(NULL, 0, 1);
    }
    return 0;
}
