/*
 * dcm_scp.cpp - the C-STORE listener of dicom.h over DCMTK 3.6.7's dcmnet: associations are
 * negotiated by a DcmThreadSCP subclass, each C-STORE data set is streamed straight into the spool.
 *
 * DESIGN. Why not DcmSCPPool. DCMTK 3.6.7's pool cannot do two things the contract needs:
 *  - it always binds its own acceptor (ASC_initializeNetwork on INADDR_ANY:port, IPv4 only), and
 *    dcmExternalSocketHandle is not a listening socket in 3.6.7: receiveTransportConnectionTCP()
 *    uses it as an already *connected* socket in place of accept() (the inetd/proxy case), so
 *    the pool cannot run on the socket the daemon bound to the configured address;
 *  - its workers delete themselves when an association ends and are never joined (joinable
 *    pthreads, pthread_exit from the worker: one leaked thread stack per association, fixed
 *    upstream after 3.6.7 in "Fixed leak in SCP Pool class, re-use threads"), and it has no way
 *    to abort the associations still running at shutdown.
 * So the listener runs its own small pool with the same shape: one accept thread polls the
 * daemon's socket and an eventfd (for stop), each accepted connection gets its own thread
 * (at most max_associations + DCM_SCP_SLACK threads; the slack threads exist only to send a
 * proper A-ASSOCIATE-RJ "local limit exceeded"), and each thread hands its connection to DCMTK
 * through dcmExternalSocketHandle - the one supported way to give DCMTK an accepted socket -
 * and then runs a DcmThreadSCP subclass on it (DCMTK's negotiation, C-ECHO and DIMSE code).
 * dcmExternalSocketHandle is a process global read once by ASC_receiveAssociation(), so that
 * call is serialised by g_ext_lock; to keep the lock short the thread first waits (acse_timeout,
 * outside the lock) until the whole A-ASSOCIATE-RQ PDU is in the socket's receive queue, so
 * ASC_receiveAssociation() parses it without waiting on the network. The thread keeps its own
 * descriptor of the socket (DCMTK gets a dup): TCP_NODELAY is set on it before anything is
 * answered, and at stop shutdown(2) on it ends a running association without racing a close.
 * The listening socket is switched to O_NONBLOCK (a reset between poll and accept would block
 * accept(2) and with it dcm_listener_stop); it is never closed here.
 * Side effects of DCMTK on the process: SIGPIPE is ignored (DUL does it at network start) and
 * dcmExternalSocketHandle belongs to the listener: one listener per process.
 *
 * Storing. The data set is written by DIMSE_receiveDataSetInFile() into our own DcmOutputStream
 * whose consumer write(2)s to spool_dir/tmp/<unique>.part behind a File Meta Information header
 * we write first (bit-preserving: the PDV bytes as received). The consumer refuses bytes past
 * max_object_bytes and fails on ENOSPC/EDQUOT; DCMTK then drains the rest of the data set without
 * writing it and the association survives to carry our 0xA700 answer: an oversized object never
 * takes more than max_object_bytes of disk. Then the header read up to the pixel data
 * (loadFileUntilTag) and UID checks while the last pages are written back, fsync, rename to
 * spool_dir/in/<UID>.<unique>.dcm, fsync of in/, and only then ops->stored(), whose status is
 * the response; a failure status removes the file.
 *
 * Every exported function catches every exception; DCMTK's logger is off (dcm_global_init).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <list>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcostrma.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/dul.h>
#include <dcmtk/dcmnet/scpthrd.h>

#include "dcm_tls.h"

extern "C" {
#include "dicom.h"
#include "dicom_int.h"
}

namespace
{

constexpr int DCM_SCP_SLACK = 4;            /* threads beyond max_associations, to refuse */
constexpr size_t DCM_MAX_RQ_PDU = 1u << 20; /* an A-ASSOCIATE-RQ larger than this is dropped */

/* ASC_receiveAssociation() reads the process-global dcmExternalSocketHandle: one at a time. */
std::mutex g_ext_lock;

/* The hold on g_ext_lock of this thread's ASC_receiveAssociation(), released by the transport
 * layer as soon as DCMTK has taken the socket (see Layer): the TLS handshake and the reading of
 * the A-ASSOCIATE-RQ then run outside the lock. */
thread_local std::unique_lock<std::mutex> *t_ext_hold = nullptr;

void release_ext_hold()
{
    if (t_ext_hold && t_ext_hold->owns_lock()) {
        dcmExternalSocketHandle.set(-1);
        t_ext_hold->unlock();
    }
}

/* DCMTK's transport layer (plain, or TLS from dcmtls) with one change: createConnection(), which
 * DUL calls right after it has read dcmExternalSocketHandle and before the TLS handshake,
 * releases this thread's hold on g_ext_lock. A slow or hostile TLS client then stalls only its
 * own thread (up to dimse_timeout, the socket's timeouts), never the others' admission. */
template <class Base> class Layer : public Base
{
  public:
    template <class... Args> explicit Layer(Args &&...args) : Base(args...)
    {
    }
    DcmTransportConnection *createConnection(DcmNativeSocketType sock,
                                             OFBool useSecureLayer) override
    {
        release_ext_hold();
        return Base::createConnection(sock, useSecureLayer);
    }
};

int64_t now_ms()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

double mono_ms()
{
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

void copy_trim(char *dst, size_t dstlen, const char *s)
{
    size_t a = 0, b = s ? std::strlen(s) : 0;
    while (a < b && (s[a] == ' ' || s[a] == '\0'))
        a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\0'))
        b--;
    size_t n = b - a < dstlen - 1 ? b - a : dstlen - 1;
    if (n)
        std::memcpy(dst, s + a, n);
    dst[n] = '\0';
}

/* AE titles go into key=value event text: anything but printable non-space ASCII becomes '_'. */
void sanitize_token(char *s)
{
    for (; *s; s++)
        if (*s <= ' ' || *s > '~' || *s == '=')
            *s = '_';
}

const char *const k_scored_classes[] = {
    UID_ComputedRadiographyImageStorage,
    UID_DigitalXRayImageStorageForPresentation,
    UID_DigitalXRayImageStorageForProcessing,
    UID_SecondaryCaptureImageStorage,
};

/* Our preference order when the SCU proposes several: uncompressed first, then lossless. */
const char *const k_xfers[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_RLELosslessTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEG2000TransferSyntax,
};

bool xfer_ok(const char *uid, bool verification)
{
    const size_t n = verification ? 3 : sizeof(k_xfers) / sizeof(k_xfers[0]);
    for (size_t i = 0; i < n; i++)
        if (std::strcmp(k_xfers[i], uid) == 0)
            return true;
    return false;
}

bool is_scored_class(const char *uid)
{
    for (const char *c : k_scored_classes)
        if (std::strcmp(c, uid) == 0)
            return true;
    return false;
}

/* The spool writer: DCMTK's DcmOutputStream over a consumer that write(2)s to our descriptor,
 * with the byte cap and the errno of the first failure. */
class SpoolConsumer : public DcmConsumer
{
  public:
    SpoolConsumer(int fd, size_t cap) : fd_(fd), cap_(cap)
    {
    }
    OFBool good() const override
    {
        return err_ == 0;
    }
    OFCondition status() const override
    {
        return err_ == 0 ? EC_Normal : EC_InvalidStream;
    }
    OFBool isFlushed() const override
    {
        return OFTrue;
    }
    offile_off_t avail() const override
    {
        return err_ == 0 ? OFstatic_cast(offile_off_t, 1 << 30) : 0;
    }
    offile_off_t write(const void *buf, offile_off_t buflen) override
    {
        if (err_ != 0 || buflen <= 0)
            return 0;
        size_t len = OFstatic_cast(size_t, buflen);
        if (len > cap_ - std::min(cap_, written_)) {
            err_ = EFBIG; /* over max_object_bytes: stop writing, DCMTK drains the rest */
            return 0;
        }
        const char *p = OFstatic_cast(const char *, buf);
        size_t done = 0;
        while (done < len) {
            ssize_t n = ::write(fd_, p + done, len - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                err_ = n < 0 ? errno : EIO;
                return OFstatic_cast(offile_off_t, done);
            }
            done += OFstatic_cast(size_t, n);
        }
        written_ += done;
        /* Start writeback of what has arrived, without waiting for it: the fsync before the
         * answer then waits only for the tail, so durability costs little more than the copy. */
        if (written_ - started_ >= k_writeback_chunk) {
            (void)::sync_file_range(fd_, 0, 0, SYNC_FILE_RANGE_WRITE); /* dirty pages only */
            started_ = written_;
        }
        return OFstatic_cast(offile_off_t, done);
    }
    void flush() override
    {
    }
    int err() const
    {
        return err_;
    }
    size_t written() const
    {
        return written_;
    }

  private:
    static constexpr size_t k_writeback_chunk = 1u << 20;
    int fd_;
    size_t cap_;
    size_t written_ = 0;
    size_t started_ = 0; /* bytes whose writeback has been started */
    int err_ = 0;
};

class SpoolStream : public DcmOutputStream
{
  public:
    explicit SpoolStream(SpoolConsumer *c) : DcmOutputStream(c)
    {
    }
};

} // namespace

struct dcm_conn; /* one accepted connection and its thread */

struct dcm_listener {
    struct dcm_listener_config cfg;
    struct dcm_listener_ops ops;
    T_ASC_Network *net = nullptr;
    std::unique_ptr<DcmTransportLayer> layer; /* Layer<>: plain, or TLS when tls_listen_fd >= 0 */
    DcmSharedSCPConfig shared;
    int wakefd = -1;  /* eventfd: stop */
    int indirfd = -1; /* spool_dir/in, for fsync after each rename */
    std::string tmpdir, indir;
    std::set<std::string> classes; /* storage SOP classes whose contexts we accept */
    std::thread acceptor;
    std::mutex mu; /* guards conns, threads */
    std::condition_variable cv;
    std::list<dcm_conn *> conns;
    std::atomic<int> active{0}; /* admitted, running associations */
    std::atomic<bool> stopping{false};
    std::atomic<uint64_t> next_id{0};
    std::atomic<uint64_t> counter{0};
    unsigned rounds = 0; /* acceptor only */

    void event(const struct dcm_assoc *a, const char *kind, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
    std::string unique()
    {
        char b[64];
        (void)std::snprintf(b, sizeof(b), "%lld-%llu", OFstatic_cast(long long, now_ms()),
                            OFstatic_cast(unsigned long long, counter.fetch_add(1) + 1));
        return b;
    }
};

struct dcm_conn {
    dcm_listener *l = nullptr;
    int fd = -1; /* ours; DCMTK owns a dup */
    bool tls = false; /* accepted on the TLS socket */
    struct dcm_assoc a {
    };
    std::thread th;
    std::atomic<bool> done{false};
    std::atomic<bool> aborted_by_stop{false};
};

void dcm_listener::event(const struct dcm_assoc *a, const char *kind, const char *fmt, ...)
{
    if (!ops.event)
        return;
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    (void)std::vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    /* One line: DCMTK's condition texts are multi-line ("DIMSE Failed to receive message\n
     * 0006:020c ..."); the log flattened them but the audit ledger stored the line breaks. */
    for (char *p = detail; *p; p++)
        if (OFstatic_cast(unsigned char, *p) < 0x20 || *p == 0x7f)
            *p = ' ';
    ops.event(ops.user, a, kind, detail);
}

namespace
{

/* The per-association SCP: DCMTK's DcmThreadSCP with our admission, refusals, idle timeout and
 * C-STORE handling. */
class ListenerSCP : public DcmThreadSCP
{
  public:
    ListenerSCP(dcm_listener *l, dcm_conn *c, T_ASC_Association *assoc)
        : l_(l), c_(c), assoc_(assoc)
    {
    }
    bool admitted() const
    {
        return admitted_;
    }

  protected:
    void notifyAssociationRequest(const T_ASC_Parameters &params,
                                  DcmSCPActionType &desiredAction) override;
    void refuseAssociation(const DcmRefuseReasonType reason) override;
    void handleAssociation() override;
    OFCondition handleIncomingCommand(T_DIMSE_Message *msg,
                                      const DcmPresentationContextInfo &info) override;
    OFCondition negotiateAssociation() override;

  private:
    OFCondition store(T_DIMSE_C_StoreRQ &req, const DcmPresentationContextInfo &info);
    OFCondition send_store_rsp(T_ASC_PresentationContextID pres, const T_DIMSE_C_StoreRQ &req,
                               Uint16 status);
    Uint16 store_file(T_DIMSE_C_StoreRQ &req, const DcmPresentationContextInfo &info, int fd,
                      const std::string &tmp, const std::string &uniq, size_t bytes, double t0,
                      const char **why);
    void refuse_event(const char *reason);

    dcm_listener *l_;
    dcm_conn *c_;
    T_ASC_Association *assoc_;
    bool admitted_ = false;
    bool have_reason_ = false;
    T_ASC_RejectParameters rej_{};
};

void ListenerSCP::refuse_event(const char *reason)
{
    l_->event(&c_->a, "association.refused", "calling_aet=%s called_aet=%s peer=%s reason=%s",
              c_->a.calling_aet, c_->a.called_aet, c_->a.peer, reason);
}

void ListenerSCP::notifyAssociationRequest(const T_ASC_Parameters &params,
                                           DcmSCPActionType &desiredAction)
{
    struct dcm_assoc *a = &c_->a;
    copy_trim(a->calling_aet, sizeof(a->calling_aet), params.DULparams.callingAPTitle);
    copy_trim(a->called_aet, sizeof(a->called_aet), params.DULparams.calledAPTitle);
    sanitize_token(a->calling_aet);
    sanitize_token(a->called_aet);

    char reason[160] = "";
    enum dcm_admit v = DCM_ADMIT_OK;
    if (l_->stopping.load()) {
        v = DCM_ADMIT_REJECT_BUSY;
        (void)std::snprintf(reason, sizeof(reason), "stopping");
    } else if (std::strcmp(a->called_aet, l_->cfg.ae_title) != 0) {
        v = DCM_ADMIT_REJECT_CALLED_AET;
        (void)std::snprintf(reason, sizeof(reason), "called-aet-not-ours");
    } else {
        int n = l_->active.load();
        do {
            if (n >= l_->cfg.max_associations) {
                v = DCM_ADMIT_REJECT_BUSY;
                (void)std::snprintf(reason, sizeof(reason), "too-many-associations limit=%d",
                                    l_->cfg.max_associations);
                break;
            }
        } while (!l_->active.compare_exchange_weak(n, n + 1));
        if (v == DCM_ADMIT_OK) {
            admitted_ = true;
            if (l_->ops.admit) {
                char why[160] = "";
                v = l_->ops.admit(l_->ops.user, a, why, sizeof(why));
                if (v != DCM_ADMIT_OK) {
                    sanitize_token(why);
                    (void)std::snprintf(reason, sizeof(reason), "%s", why[0] ? why : "admit");
                }
            }
        }
    }
    if (v == DCM_ADMIT_OK)
        return;
    if (admitted_) {
        admitted_ = false;
        l_->active.fetch_sub(1);
    }
    switch (v) {
    case DCM_ADMIT_REJECT_CALLING_AET:
        rej_.result = ASC_RESULT_REJECTEDPERMANENT;
        rej_.source = ASC_SOURCE_SERVICEUSER;
        rej_.reason = ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED;
        break;
    case DCM_ADMIT_REJECT_CALLED_AET:
        rej_.result = ASC_RESULT_REJECTEDPERMANENT;
        rej_.source = ASC_SOURCE_SERVICEUSER;
        rej_.reason = ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED;
        break;
    default: /* BUSY and anything unknown: come back later */
        rej_.result = ASC_RESULT_REJECTEDTRANSIENT;
        rej_.source = ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED;
        rej_.reason = ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED;
        break;
    }
    have_reason_ = true;
    refuse_event(reason);
    desiredAction = DCMSCP_ACTION_REFUSE_ASSOCIATION;
}

void ListenerSCP::refuseAssociation(const DcmRefuseReasonType reason)
{
    if (have_reason_) {
        (void)ASC_rejectAssociation(assoc_, &rej_);
        return;
    }
    /* DCMTK's own refusals (no acceptable presentation context, bad application context). */
    if (admitted_) {
        admitted_ = false;
        l_->active.fetch_sub(1);
    }
    refuse_event(reason == DCMSCP_NO_PRESENTATION_CONTEXTS ? "no-acceptable-presentation-context"
                 : reason == DCMSCP_BAD_APPLICATION_CONTEXT_NAME ? "bad-application-context"
                                                                 : "negotiation");
    DcmThreadSCP::refuseAssociation(reason);
}

/* Each proposed context: accepted with the first transfer syntax *the SCU* lists that we take
 * (the SCU orders them by preference, usually the file's own first, so nothing is transcoded);
 * DCMTK's profile-based negotiation would impose our order instead. */
OFCondition ListenerSCP::negotiateAssociation()
{
    T_ASC_Parameters *p = assoc_->params;
    const int n = ASC_countPresentationContexts(p);
    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;
        if (ASC_getPresentationContext(p, i, &pc).bad())
            continue;
        const bool verification = std::strcmp(pc.abstractSyntax, UID_VerificationSOPClass) == 0;
        const bool known = verification || l_->classes.count(pc.abstractSyntax) != 0;
        const char *ts = nullptr;
        for (int j = 0; known && !ts && j < pc.transferSyntaxCount; j++)
            if (xfer_ok(pc.proposedTransferSyntaxes[j], verification))
                ts = pc.proposedTransferSyntaxes[j];
        if (ts)
            (void)ASC_acceptPresentationContext(p, pc.presentationContextID, ts);
        else
            (void)ASC_refusePresentationContext(p, pc.presentationContextID,
                                                known ? ASC_P_TRANSFERSYNTAXESNOTSUPPORTED
                                                      : ASC_P_ABSTRACTSYNTAXNOTSUPPORTED);
    }
    return EC_Normal;
}

/* DCMTK's loop, with idle_timeout between messages (dimse_timeout applies inside one) and
 * events for how the association ended. */
void ListenerSCP::handleAssociation()
{
    OFCondition cond = EC_Normal;
    const struct dcm_listener_config &cfg = l_->cfg;
    while (cond.good()) {
        T_DIMSE_Message msg;
        T_ASC_PresentationContextID pres = 0;
        cond =
            DIMSE_receiveCommand(assoc_, DIMSE_NONBLOCKING, cfg.idle_timeout, &pres, &msg, nullptr);
        if (cond.good()) {
            DcmPresentationContextInfo info;
            (void)getPresentationContextInfo(assoc_, pres, info);
            cond = handleIncomingCommand(&msg, info);
        }
    }
    const struct dcm_assoc *a = &c_->a;
    if (c_->aborted_by_stop.load()) {
        /* our shutdown(2) shows up as any kind of read failure, even as a peer abort */
        (void)ASC_abortAssociation(assoc_);
        l_->event(a, "association.aborted", "calling_aet=%s peer=%s by=us reason=stopping",
                  a->calling_aet, a->peer);
    } else if (cond == DUL_PEERREQUESTEDRELEASE) {
        (void)ASC_acknowledgeRelease(assoc_);
        l_->event(a, "association.released", "calling_aet=%s peer=%s", a->calling_aet, a->peer);
    } else if (cond == DUL_PEERABORTEDASSOCIATION) {
        l_->event(a, "association.aborted", "calling_aet=%s peer=%s by=peer", a->calling_aet,
                  a->peer);
    } else if (cond == DIMSE_NODATAAVAILABLE) {
        (void)ASC_abortAssociation(assoc_);
        l_->event(a, "association.timeout",
                  "calling_aet=%s peer=%s reason=no message within idle_timeout=%d s "
                  "(or dimse_timeout=%d s inside one)",
                  a->calling_aet, a->peer, cfg.idle_timeout, cfg.dimse_timeout);
    } else {
        (void)ASC_abortAssociation(assoc_);
        l_->event(a, "association.aborted", "calling_aet=%s peer=%s by=us reason=%s",
                  a->calling_aet, a->peer, cond.text());
    }
}

/* A UID field of a DIMSE command as DCMTK hands it over (NUL-terminated): at most 64 printable
 * ASCII characters. (Whether it is a well-formed UID is the C-STORE path's question, answered
 * with 0xC000 on the association.) */
bool command_uid_ok(const char *uid)
{
    size_t n = 0;
    for (; uid[n]; n++)
        if (static_cast<unsigned char>(uid[n]) < 0x20 || static_cast<unsigned char>(uid[n]) > 0x7E)
            return false;
    return n <= 64;
}

/* A UID field of a command that is a UID once its padding is trimmed (into out). (DCMTK takes a value
 * starting with '=' for a UID's name to look up, fails on it and leaks the element: a C-ECHO-RQ
 * whose class is "=..." leaked 368 bytes answering it, corpus/pdu/regress_echo_rq_uid_name_leak.bin.) */
bool trimmed_uid(const char *field, char *out, size_t outlen)
{
    copy_trim(out, outlen, field);
    return dcm_uid_ok(out, std::strlen(out));
}

bool uid_field_ok(const char *field)
{
    char v[65];
    return trimmed_uid(field, v, sizeof(v));
}

/* A C-STORE or C-ECHO request whose affected SOP class or instance UID holds bytes outside
 * printable ASCII ends the association (DIMSE_BADMESSAGE, logged as an abort) without an
 * answer: DCMTK 3.6.7 leaks the response command it was building when it cannot encode such a
 * UID back (found by tests/fuzz/fuzz_pdu.c, regress_store_rq_bad_uid_leak.bin). A C-ECHO-RQ
 * whose class is not a UID ends it too; a C-STORE-RQ with printable but malformed UIDs gets its
 * failure status (send_store_rsp). */
OFCondition ListenerSCP::handleIncomingCommand(T_DIMSE_Message *msg,
                                               const DcmPresentationContextInfo &info)
{
    if (msg->CommandField == DIMSE_C_STORE_RQ) {
        T_DIMSE_C_StoreRQ &req = msg->msg.CStoreRQ;
        if (!command_uid_ok(req.AffectedSOPClassUID) ||
            !command_uid_ok(req.AffectedSOPInstanceUID)) {
            const struct dcm_assoc *a = &c_->a;
            l_->event(a, "store.failed", "calling_aet=%s peer=%s reason=malformed-uid",
                      a->calling_aet, a->peer);
            if (req.DataSetType != DIMSE_DATASET_NULL) {
                DIC_UL bytes = 0, pdvs = 0;
                (void)DIMSE_ignoreDataSet(assoc_, DIMSE_NONBLOCKING, l_->cfg.dimse_timeout, &bytes,
                                          &pdvs);
            }
            return DIMSE_BADMESSAGE;
        }
        return store(req, info);
    }
    if (msg->CommandField == DIMSE_C_ECHO_RQ && !uid_field_ok(msg->msg.CEchoRQ.AffectedSOPClassUID))
        return DIMSE_BADMESSAGE;
    return DcmThreadSCP::handleIncomingCommand(msg, info);
}

bool write_meta(SpoolStream &out, T_DIMSE_C_StoreRQ &req, const DcmPresentationContextInfo &info,
                const char *calling_aet)
{
    DcmFileFormat ff;
    DcmMetaInfo *meta = ff.getMetaInfo();
    if (meta->putAndInsertString(DCM_MediaStorageSOPClassUID, req.AffectedSOPClassUID).bad() ||
        meta->putAndInsertString(DCM_MediaStorageSOPInstanceUID, req.AffectedSOPInstanceUID)
            .bad() ||
        meta->putAndInsertString(DCM_TransferSyntaxUID, info.acceptedTransferSyntax.c_str())
            .bad() ||
        (calling_aet[0] &&
         meta->putAndInsertString(DCM_SourceApplicationEntityTitle, calling_aet).bad()))
        return false;
    DcmXfer x(info.acceptedTransferSyntax.c_str());
    if (ff.validateMetaInfo(x.getXfer()).bad())
        return false;
    meta->transferInit();
    OFCondition c =
        meta->write(out, META_HEADER_DEFAULT_TRANSFERSYNTAX, EET_ExplicitLength, nullptr);
    meta->transferEnd();
    return c.good() && out.good();
}

bool disk_full(int e)
{
    return e == ENOSPC || e == EDQUOT;
}

OFCondition ListenerSCP::store(T_DIMSE_C_StoreRQ &req, const DcmPresentationContextInfo &info)
{
    const double t0 = mono_ms();
    const struct dcm_assoc *a = &c_->a;
    const T_ASC_PresentationContextID pres = info.presentationContextID;
    const std::string uniq = l_->unique();
    const std::string tmp = l_->tmpdir + "/" + uniq + ".part";
    Uint16 status = STATUS_Success;
    const char *why = nullptr;
    OFCondition cond;

    if (req.DataSetType == DIMSE_DATASET_NULL)
        return DIMSE_BADMESSAGE;

    int fd = -1;
    const bool cls_ok = uid_field_ok(req.AffectedSOPClassUID);
    if (!cls_ok || !uid_field_ok(req.AffectedSOPInstanceUID)) {
        /* not UIDs: not the context's SOP class, or an instance UID that can name no file (and
         * no file meta header can hold either): answered without touching the disk */
        status = cls_ok ? STATUS_STORE_Error_CannotUnderstand
                        : STATUS_STORE_Error_DataSetDoesNotMatchSOPClass;
        why = cls_ok ? "sop-instance-uid-invalid" : "sop-class-uid-invalid";
    } else if ((fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
        const int e = errno;
        status = STATUS_STORE_Refused_OutOfResources;
        why = disk_full(e) ? "disk-full" : "cannot-create-file";
    }
    if (fd < 0) {
        DIC_UL bytes = 0, pdvs = 0;
        cond = DIMSE_ignoreDataSet(assoc_, DIMSE_NONBLOCKING, l_->cfg.dimse_timeout, &bytes, &pdvs);
        if (cond.bad())
            return cond;
    } else {
        /* room for the meta header on top of the data set */
        SpoolConsumer consumer(fd, l_->cfg.max_object_bytes + 4096);
        SpoolStream out(&consumer);
        bool meta_ok = write_meta(out, req, info, a->calling_aet);
        T_ASC_PresentationContextID ds_pres = pres;
        if (!meta_ok) {
            DIC_UL bytes = 0, pdvs = 0;
            cond = DIMSE_ignoreDataSet(assoc_, DIMSE_NONBLOCKING, l_->cfg.dimse_timeout, &bytes,
                                       &pdvs);
        } else {
            cond = DIMSE_receiveDataSetInFile(assoc_, DIMSE_NONBLOCKING, l_->cfg.dimse_timeout,
                                              &ds_pres, &out, nullptr, nullptr);
        }
        const int werr = consumer.err();
        const size_t bytes = consumer.written();
        if (cond.bad() && !(cond.code() == DIMSEC_OUTOFRESOURCES && werr != 0)) {
            /* network failure: the association is gone, nothing to answer */
            (void)::close(fd);
            (void)::unlink(tmp.c_str());
            l_->event(a, "store.failed", "calling_aet=%s peer=%s reason=receive: %s",
                      a->calling_aet, a->peer, cond.text());
            return cond;
        }
        if (!meta_ok || werr != 0) {
            status = STATUS_STORE_Refused_OutOfResources;
            why = werr == EFBIG ? "too-large" : disk_full(werr) ? "disk-full" : "write-error";
            (void)::close(fd);
            (void)::unlink(tmp.c_str());
        } else if (ds_pres != pres) {
            status = STATUS_STORE_Error_CannotUnderstand;
            why = "presentation-context-mismatch";
            (void)::close(fd);
            (void)::unlink(tmp.c_str());
        } else {
            status = store_file(req, info, fd, tmp, uniq, bytes, t0, &why);
        }
    }
    if (why && std::strcmp(why, "refused") != 0)
        l_->event(a, "store.failed", "calling_aet=%s peer=%s status=0x%04x reason=%s",
                  a->calling_aet, a->peer, status, why);
    return send_store_rsp(pres, req, status);
}

/* The C-STORE-RSP, echoing the request's affected SOP class and instance UIDs where they are
 * UIDs and leaving out those that are not (both are optional, "U(=)", in a C-STORE-RSP: PS3.7
 * 9.3.1.2). DCMTK 3.6.7's sendSTOREResponse() copies them whatever they hold and leaks the
 * command it was building when it cannot put one into its element (fuzz_pdu, 368 bytes per
 * such request: corpus/pdu/regress_store_rsp_malformed_uid_leak.bin). */
OFCondition ListenerSCP::send_store_rsp(T_ASC_PresentationContextID pres,
                                        const T_DIMSE_C_StoreRQ &req, Uint16 status)
{
    T_DIMSE_Message rsp;
    T_DIMSE_C_StoreRSP &r = rsp.msg.CStoreRSP;
    char cls[sizeof(r.AffectedSOPClassUID)], inst[sizeof(r.AffectedSOPInstanceUID)];

    std::memset(&rsp, 0, sizeof(rsp));
    rsp.CommandField = DIMSE_C_STORE_RSP;
    r.MessageIDBeingRespondedTo = req.MessageID;
    r.DataSetType = DIMSE_DATASET_NULL;
    r.DimseStatus = status;
    if (trimmed_uid(req.AffectedSOPClassUID, cls, sizeof(cls))) {
        std::memcpy(r.AffectedSOPClassUID, cls, sizeof(cls));
        r.opts |= O_STORE_AFFECTEDSOPCLASSUID;
    }
    if (trimmed_uid(req.AffectedSOPInstanceUID, inst, sizeof(inst))) {
        std::memcpy(r.AffectedSOPInstanceUID, inst, sizeof(inst));
        r.opts |= O_STORE_AFFECTEDSOPINSTANCEUID;
    }
    return sendDIMSEMessage(pres, &rsp, nullptr);
}

/* The durable part, for the complete data set in fd (open, written): header read and checks,
 * fsync, close, rename, directory fsync, ops->stored(). The header is read while the file's
 * last pages are being written back (their writeback is started first), so the fsync waits
 * for less; nothing is renamed or answered before the fsync. fd is closed and the temporary
 * file removed on every failure; *why is set for a failed fsync (the caller audits it), else
 * "refused" for a status this function has audited itself. */
Uint16 ListenerSCP::store_file(T_DIMSE_C_StoreRQ &req, const DcmPresentationContextInfo &info,
                               int fd, const std::string &tmp, const std::string &uniq,
                               size_t bytes, double t0, const char **ret_why)
{
    const struct dcm_assoc *a = &c_->a;
    struct dcm_stored s = {};
    s.assoc = a;
    Uint16 status = STATUS_Success;
    const char *why = nullptr;

    (void)::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); /* the tail's writeback */

    DcmFileFormat ff;
    OFCondition c = ff.loadFileUntilTag(tmp.c_str(), EXS_Unknown, EGL_noChange, 4096,
                                        ERM_autoDetect, DCM_PixelData);
    DcmDataset *ds = ff.getDataset();
    OFString v;
    char req_uid[65];
    copy_trim(req_uid, sizeof(req_uid), req.AffectedSOPInstanceUID);
    if (c.bad() || !ds) {
        status = STATUS_STORE_Error_CannotUnderstand;
        why = "unreadable";
    } else {
        struct {
            const DcmTagKey &tag;
            char *dst;
            size_t len;
        } fields[] = {
            {DCM_SOPClassUID, s.sop_class_uid, sizeof(s.sop_class_uid)},
            {DCM_SOPInstanceUID, s.sop_instance_uid, sizeof(s.sop_instance_uid)},
            {DCM_StudyInstanceUID, s.study_uid, sizeof(s.study_uid)},
            {DCM_SeriesInstanceUID, s.series_uid, sizeof(s.series_uid)},
            {DCM_PatientID, s.patient_id, sizeof(s.patient_id)},
            {DCM_AccessionNumber, s.accession, sizeof(s.accession)},
        };
        for (auto &f : fields) {
            v.clear();
            if (ds->findAndGetOFString(f.tag, v).good() && v.size() < 80)
                copy_trim(f.dst, f.len, v.c_str());
        }
        copy_trim(s.transfer_syntax, sizeof(s.transfer_syntax),
                  info.acceptedTransferSyntax.c_str());
        char req_class[65];
        copy_trim(req_class, sizeof(req_class), req.AffectedSOPClassUID);
        if (!dcm_uid_ok(s.sop_instance_uid, std::strlen(s.sop_instance_uid)) ||
            std::strcmp(s.sop_instance_uid, req_uid) != 0) {
            status = STATUS_STORE_Error_CannotUnderstand;
            why = "sop-instance-uid-invalid-or-mismatch";
        } else if (std::strcmp(s.sop_class_uid, req_class) != 0 ||
                   std::strcmp(req_class, info.abstractSyntax.c_str()) != 0) {
            status = STATUS_STORE_Error_DataSetDoesNotMatchSOPClass;
            why = "sop-class-mismatch";
        }
    }
    if (status != STATUS_Success) {
        (void)::close(fd);
        (void)::unlink(tmp.c_str());
        l_->event(a, "store.failed", "calling_aet=%s peer=%s status=0x%04x reason=%s",
                  a->calling_aet, a->peer, status, why);
        *ret_why = "refused";
        return status;
    }
    {
        int fe = ::fsync(fd) == 0 ? 0 : errno;
        if (::close(fd) != 0 && fe == 0)
            fe = errno;
        if (fe != 0) {
            (void)::unlink(tmp.c_str());
            *ret_why = disk_full(fe) ? "disk-full" : "fsync-error";
            return STATUS_STORE_Refused_OutOfResources;
        }
    }
    int n = std::snprintf(s.path, sizeof(s.path), "%s/%s.%s.dcm", l_->indir.c_str(),
                          s.sop_instance_uid, uniq.c_str());
    int e = 0;
    if (n < 0 || OFstatic_cast(size_t, n) >= sizeof(s.path))
        e = ENAMETOOLONG;
    else if (::rename(tmp.c_str(), s.path) != 0)
        e = errno;
    else if (::fsync(l_->indirfd) != 0) {
        e = errno;
        (void)::unlink(s.path);
    }
    if (e != 0) {
        (void)::unlink(tmp.c_str());
        l_->event(a, "store.failed", "calling_aet=%s peer=%s status=0xa700 reason=%s",
                  a->calling_aet, a->peer, disk_full(e) ? "disk-full" : "rename-error");
        *ret_why = "refused";
        return STATUS_STORE_Refused_OutOfResources;
    }
    s.size_bytes = OFstatic_cast(int64_t, bytes);
    s.received_at_ms = now_ms();
    s.receive_ms = mono_ms() - t0;
    s.scored_class = is_scored_class(s.sop_class_uid);
    status = l_->ops.stored ? l_->ops.stored(l_->ops.user, &s) : STATUS_Success;
    if (status != STATUS_Success) {
        *ret_why = "refused";
        (void)::unlink(s.path);
        l_->event(a, "store.failed",
                  "calling_aet=%s peer=%s status=0x%04x reason=refused-by-daemon", a->calling_aet,
                  a->peer, status);
    }
    return status;
}

void peer_address(int fd, char *dst, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    dst[0] = '\0';
    if (getpeername(fd, OFreinterpret_cast(struct sockaddr *, &ss), &sl) != 0)
        return;
    if (ss.ss_family == AF_INET)
        (void)inet_ntop(AF_INET, &OFreinterpret_cast(struct sockaddr_in *, &ss)->sin_addr, dst,
                        OFstatic_cast(socklen_t, len));
    else if (ss.ss_family == AF_INET6)
        (void)inet_ntop(AF_INET6, &OFreinterpret_cast(struct sockaddr_in6 *, &ss)->sin6_addr, dst,
                        OFstatic_cast(socklen_t, len));
}

/* One step of the waits below: "stopping", "timeout" (deadline, mono_ms), or nullptr after up
 * to 200 ms of poll(2) on fd (*readable: it has data). */
const char *wait_readable(dcm_listener *l, int fd, double deadline, bool *readable)
{
    if (l->stopping.load())
        return "stopping";
    double left = deadline - mono_ms();
    if (left <= 0)
        return "timeout";
    struct pollfd p = {fd, POLLIN, 0};
    (void)poll(&p, 1, OFstatic_cast(int, left < 200 ? left : 200));
    *readable = (p.revents & POLLIN) != 0;
    return nullptr;
}

/* Makes room in fd's receive queue for an A-ASSOCIATE-RQ of `need` bytes. The kernel queues
 * only about SO_RCVBUF bytes that nobody reads (tcp_rmem's default, 128 KiB here) and receive
 * autotuning grows it only as the application reads, which wait_for_rq does not: a larger RQ
 * (PS3.8 allows 128 presentation contexts, and user identity items of up to 64 KiB) stalled
 * at a zero window until acse_timeout. Setting SO_RCVBUF (only for such RQs; it pins the buffer
 * of this connection) opens the window; the peer's next window probe carries on. False when
 * the kernel's limit (net.core.rmem_max) leaves no room for it. */
bool room_for_rq(int fd, size_t need)
{
    int have = 0;
    socklen_t sl = sizeof(have);
    /* getsockopt reports the doubled value the kernel accounts with; half of it is payload
     * room in the worst case (small segments), hence the factor 2 on top of the doubling */
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &have, &sl) == 0 &&
        OFstatic_cast(size_t, have) / 2 >= need)
        return true;
    const int want = OFstatic_cast(int, std::min(need * 2, 2 * DCM_MAX_RQ_PDU));
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
    sl = sizeof(have);
    return getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &have, &sl) == 0 &&
           OFstatic_cast(size_t, have) / 2 >= need;
}

/* The A-ASSOCIATE-RQ's structure (PS3.8 9.3.2) is checked before DCMTK parses it: DCMTK 3.6.7
 * leaks the lists it has built when it fails on a malformed request, while parsing it or while
 * building the answer (over 100 bytes a time), so a hostile peer could grow the daemon with
 * every one. Found by tests/fuzz/fuzz_pdu.c; its regress_* inputs are such requests. */

size_t be16(const unsigned char *p)
{
    return (OFstatic_cast(size_t, p[0]) << 8) | p[1];
}

/* Items (type, reserved, 2-byte length, value) that exactly fill p[0..len), each checked by
 * ok(type, value, length). */
template <typename F> bool items_ok(const unsigned char *p, size_t len, F ok)
{
    size_t off = 0;
    while (off < len) {
        if (len - off < 4)
            return false;
        const size_t n = be16(p + off + 2);
        if (n > len - off - 4 || !ok(p[off], p + off + 4, n))
            return false;
        off += 4 + n;
    }
    return true;
}

/* A UID: 1..64 digits and dots, padded with one NUL or space at most. */
bool uid_ok(const unsigned char *v, size_t n)
{
    if (n > 0 && (v[n - 1] == 0 || v[n - 1] == ' '))
        n--;
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(v[i] == '.' || (v[i] >= '0' && v[i] <= '9')))
            return false;
    return true;
}

/* A UID after its 2-byte length at v[*off], inside v[0..n); moves *off past it. */
bool next_uid(const unsigned char *v, size_t n, size_t *off)
{
    if (n - *off < 2)
        return false;
    const size_t ul = be16(v + *off);
    if (ul > n - *off - 2 || !uid_ok(v + *off + 2, ul))
        return false;
    *off += 2 + ul;
    return true;
}

/* A User Information sub-item of an RQ (PS3.7 D.3.3, PS3.8 D.1). */
bool user_info_sub_ok(unsigned type, const unsigned char *v, size_t n)
{
    size_t off = 0;
    switch (type) {
    case 0x51: /* maximum length */
    case 0x53: /* asynchronous operations window */
        return n == 4;
    case 0x52: /* implementation class UID */
        return uid_ok(v, n);
    case 0x54: /* SCU/SCP role selection: UID, SCU role, SCP role */
        return next_uid(v, n, &off) && off + 2 == n;
    case 0x55: /* implementation version name */
        return n >= 1 && n <= 16;
    case 0x56: /* SOP class extended negotiation: UID, application information */
        return next_uid(v, n, &off);
    case 0x57: /* SOP class common extended negotiation: two UIDs, an optional UID list */
        for (int k = 0; k < 2; k++)
            if (!next_uid(v, n, &off))
                return false;
        if (off == n)
            return true;
        if (n - off < 2 || be16(v + off) != n - off - 2)
            return false;
        for (off += 2; off < n;)
            if (!next_uid(v, n, &off))
                return false;
        return true;
    case 0x58: /* user identity: type 1..5, response wanted, two length-prefixed fields */
        if (n < 6 || v[0] < 1 || v[0] > 5 || be16(v + 2) > n - 6)
            return false;
        return 6 + be16(v + 2) + be16(v + 4 + be16(v + 2)) == n;
    default: /* 0x59 (user identity AC) and unknown sub-items have no place in an RQ */
        return false;
    }
}

/* A 16-byte AE title field: printable ASCII without backslash (PS3.5 AE), padded with spaces
 * (or trailing NULs), not blank. */
bool ae_title_ok(const unsigned char *p)
{
    bool seen = false, nul = false;
    for (int i = 0; i < 16; i++) {
        if (p[i] == 0) {
            nul = true;
            continue;
        }
        if (nul || p[i] < 0x20 || p[i] > 0x7e || p[i] == '\\')
            return false;
        seen |= p[i] != ' ';
    }
    return seen;
}

/* The need bytes of the A-ASSOCIATE-RQ queued on fd: both AE titles, then only the items an RQ
 * has, filling the PDU exactly: Application Context (0x10), Presentation Contexts (0x20: 4
 * fixed bytes, then one Abstract Syntax 0x30 and one or more Transfer Syntax 0x40 sub-items)
 * and User Information (0x50, sub-items as above); every UID as uid_ok() says. */
bool associate_rq_ok(int fd, size_t need)
{
    std::vector<unsigned char> pdu(need);
    ssize_t got = recv(fd, pdu.data(), need, MSG_PEEK | MSG_DONTWAIT);
    if (got < 0 || OFstatic_cast(size_t, got) != need || need < 6 + 68 ||
        !ae_title_ok(pdu.data() + 10) || !ae_title_ok(pdu.data() + 26))
        return false;
    const auto item = [](unsigned type, const unsigned char *v, size_t n) {
        if (type == 0x10)
            return uid_ok(v, n);
        if (type == 0x50)
            return items_ok(v, n, user_info_sub_ok);
        if (type != 0x20 || n < 4)
            return false;
        int abstract = 0, transfer = 0;
        const auto sub = [&](unsigned st, const unsigned char *sv, size_t sn) {
            abstract += st == 0x30;
            transfer += st == 0x40;
            return (st == 0x30 || st == 0x40) && uid_ok(sv, sn);
        };
        return items_ok(v + 4, n - 4, sub) && abstract == 1 && transfer >= 1;
    };
    return items_ok(pdu.data() + 6 + 68, need - 6 - 68, item);
}

/* Waits (outside g_ext_lock) until the whole A-ASSOCIATE-RQ is queued on fd and checks its
 * structure. 0 ok, else a reason. A peer that half-closes before the whole PDU is queued is
 * answered at once ("closed-mid-associate-rq"), not after acse_timeout. */
const char *wait_for_rq(dcm_listener *l, int fd)
{
    const double deadline = mono_ms() + 1000.0 * l->cfg.acse_timeout;
    size_t need = 6;
    bool sized = false, hup = false;
    for (;;) {
        unsigned char h[6];
        ssize_t n = recv(fd, h, sizeof(h), MSG_PEEK | MSG_DONTWAIT);
        if (n == 0)
            return "closed";
        if (n == 6) {
            if (h[0] != 0x01)
                return "not-an-associate-rq";
            size_t plen = (OFstatic_cast(size_t, h[2]) << 24) |
                          (OFstatic_cast(size_t, h[3]) << 16) | (OFstatic_cast(size_t, h[4]) << 8) |
                          h[5];
            if (plen > DCM_MAX_RQ_PDU)
                return "associate-rq-too-large";
            need = plen + 6;
            if (!sized && !room_for_rq(fd, need))
                return "associate-rq-too-large-for-socket-buffer";
            sized = true;
            int q = 0;
            if (ioctl(fd, FIONREAD, &q) == 0 && OFstatic_cast(size_t, q) >= need)
                return associate_rq_ok(fd, need) ? nullptr : "malformed-associate-rq";
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return "closed";
        }
        /* The peer closed (or reset) before the whole RQ came (looked at once more above, as
         * the last bytes may come with the FIN): nothing more will come. A truncated RQ used
         * to spin here (POLLIN at EOF) until acse_timeout. */
        if (hup)
            return n > 0 ? "closed-mid-associate-rq" : "closed";
        if (l->stopping.load())
            return "stopping";
        double left = deadline - mono_ms();
        if (left <= 0)
            return "timeout";
        struct pollfd p = {fd, POLLIN | POLLRDHUP, 0};
        (void)poll(&p, 1, OFstatic_cast(int, left < 200 ? left : 200));
        hup = (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
        if (!hup && n == 6 && (p.revents & POLLIN)) {
            /* more bytes than the header are queued but not yet all: wait a little */
            struct timespec ts = {0, 2 * 1000 * 1000};
            (void)nanosleep(&ts, nullptr);
        }
    }
}

/* On the TLS socket: waits (outside g_ext_lock, up to acse_timeout) for the peer's first byte.
 * A TLS handshake record (0x16) goes on; an A-ASSOCIATE-RQ (0x01) is plain DICOM where TLS is
 * required, refused by closing. 0 ok, else a reason. */
const char *wait_for_tls(dcm_listener *l, int fd)
{
    const double deadline = mono_ms() + 1000.0 * l->cfg.acse_timeout;
    for (;;) {
        unsigned char b = 0;
        ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0)
            return "closed";
        if (n == 1)
            return b == 0x16 ? nullptr : b == 0x01 ? "plain-dicom-on-tls-port" : "not-tls";
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return "closed";
        bool readable = false;
        if (const char *why = wait_readable(l, fd, deadline, &readable))
            return why;
    }
}

void run_connection(dcm_conn *c)
{
    dcm_listener *l = c->l;
    int one = 1;
    struct timeval tv;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* Every blocking read or write inside DCMTK ends after dimse_timeout (a stalled peer). */
    tv.tv_sec = l->cfg.dimse_timeout;
    tv.tv_usec = 0;
    (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    peer_address(c->fd, c->a.peer, sizeof(c->a.peer));

    if (c->tls) {
        const char *tw = wait_for_tls(l, c->fd);
        if (tw && std::strcmp(tw, "plain-dicom-on-tls-port") == 0) {
            l->event(&c->a, "association.refused",
                     "calling_aet= called_aet= peer=%s tls=required reason=%s", c->a.peer, tw);
            return;
        }
        if (tw) {
            l->event(&c->a,
                     std::strcmp(tw, "timeout") == 0 ? "association.timeout"
                                                     : "association.aborted",
                     "peer=%s phase=tls-hello reason=%s", c->a.peer, tw);
            return;
        }
    }
    const char *why = c->tls ? nullptr : wait_for_rq(l, c->fd);
    if (why) {
        l->event(&c->a,
                 std::strcmp(why, "timeout") == 0 ? "association.timeout" : "association.aborted",
                 "peer=%s phase=associate-rq reason=%s", c->a.peer, why);
        return;
    }
    int dfd = fcntl(c->fd, F_DUPFD_CLOEXEC, 3);
    if (dfd < 0) {
        l->event(&c->a, "association.aborted", "peer=%s reason=dup: %s", c->a.peer,
                 std::strerror(errno));
        return;
    }
    T_ASC_Association *assoc = nullptr;
    OFCondition cond;
    {
        std::unique_lock<std::mutex> g(g_ext_lock);
        t_ext_hold = &g;
        dcmExternalSocketHandle.set(dfd);
        /* a TLS association's A-ASSOCIATE-RQ arrives after the handshake: wait for it (bounded by
         * acse_timeout) once the layer has released the lock */
        cond = ASC_receiveAssociation(l->net, &assoc, OFstatic_cast(Uint32, l->cfg.max_pdu),
                                      nullptr, nullptr, c->tls ? OFTrue : OFFalse,
                                      DUL_NOBLOCK,
                                      c->tls ? l->cfg.acse_timeout : 1);
        release_ext_hold();
        t_ext_hold = nullptr;
    }
    if (cond.bad()) {
        if (assoc) {
            (void)ASC_dropAssociation(assoc);
            (void)ASC_destroyAssociation(&assoc);
        } else {
            (void)::close(dfd);
        }
        if (c->tls && cond.module() == OFM_dcmtls) {
            /* certificate missing, not trusted, or no common protocol / cipher suite */
            l->event(&c->a, "association.refused",
                     "calling_aet= called_aet= peer=%s tls=yes reason=tls-handshake-failed: %s",
                     c->a.peer, cond.text());
            return;
        }
        l->event(&c->a, "association.aborted", "peer=%s phase=associate-rq%s reason=%s",
                 c->a.peer, c->tls ? " tls=yes" : "", cond.text());
        return;
    }
    ListenerSCP scp(l, c, assoc);
    (void)scp.setSharedConfig(l->shared);
    (void)scp.run(assoc); /* negotiates, runs, and the destructor drops the association */
    if (scp.admitted())
        l->active.fetch_sub(1);
}

void connection_main(dcm_conn *c)
{
    try {
        run_connection(c);
    } catch (...) {
        /* nothing may escape a thread; the connection is closed below */
    }
    dcm_listener *l = c->l;
    {
        std::lock_guard<std::mutex> g(l->mu);
        (void)::close(c->fd);
        c->fd = -1;
        c->done.store(true);
    }
    l->cv.notify_all();
}

/* Joins and frees finished connections; with all, waits for every one. Called without l->mu. */
void reap(dcm_listener *l, bool all)
{
    std::list<dcm_conn *> fin;
    {
        std::lock_guard<std::mutex> g(l->mu);
        for (auto it = l->conns.begin(); it != l->conns.end();) {
            if (all || (*it)->done.load()) {
                fin.push_back(*it);
                it = l->conns.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (dcm_conn *c : fin) {
        if (c->th.joinable())
            c->th.join();
        delete c;
    }
}

void accept_loop(dcm_listener *l)
{
    while (!l->stopping.load()) {
        /* poll(2) skips the negative descriptor of a socket not configured */
        struct pollfd p[3] = {{l->cfg.listen_fd, POLLIN, 0},
                              {l->cfg.tls_listen_fd, POLLIN, 0},
                              {l->wakefd, POLLIN, 0}};
        int n = poll(p, 3, 1000);
        reap(l, false);
        if (n <= 0 || (p[2].revents & POLLIN))
            continue;
        /* take the TLS socket first every other round, so neither starves the other */
        const bool tls = (p[1].revents & POLLIN) && (!(p[0].revents & POLLIN) || (l->rounds++ & 1));
        if (!tls && !(p[0].revents & POLLIN))
            continue;
        int fd = accept4(tls ? l->cfg.tls_listen_fd : l->cfg.listen_fd, nullptr, nullptr,
                         SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* the connection stays queued; do not spin on it */
                struct timespec ts = {0, 100 * 1000 * 1000};
                (void)nanosleep(&ts, nullptr);
            }
            continue;
        }
        size_t live;
        {
            std::lock_guard<std::mutex> g(l->mu);
            live = l->conns.size();
        }
        dcm_conn *c = nullptr;
        try {
            c = new dcm_conn;
            c->l = l;
            c->fd = fd;
            c->tls = tls;
            c->a.id = l->next_id.fetch_add(1) + 1;
            if (live >= OFstatic_cast(size_t, l->cfg.max_associations) + DCM_SCP_SLACK) {
                /* even the refusing threads are all busy: close without an A-ASSOCIATE-RJ */
                peer_address(fd, c->a.peer, sizeof(c->a.peer));
                l->event(&c->a, "association.refused",
                         "calling_aet= called_aet= peer=%s reason=too-many-connections", c->a.peer);
                (void)::close(fd);
                delete c;
                continue;
            }
            std::lock_guard<std::mutex> g(l->mu);
            l->conns.push_back(c);
            c->th = std::thread(connection_main, c);
        } catch (...) {
            std::lock_guard<std::mutex> g(l->mu);
            if (!c) {
                (void)::close(fd);
            } else if (!c->th.joinable()) {
                l->conns.remove(c);
                delete c;
                (void)::close(fd);
            }
        }
    }
}

void acceptor_main(dcm_listener *l)
{
    try {
        accept_loop(l);
    } catch (...) {
    }
}

cxr_err make_dir(const std::string &d, char *errbuf, size_t errlen)
{
    if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST)
        return px_err(errbuf, errlen, CXR_EIO, "listener: mkdir '%s': %s", d.c_str(),
                      std::strerror(errno));
    struct stat st;
    if (::stat(d.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        return px_err(errbuf, errlen, CXR_EIO, "listener: '%s' is not a directory", d.c_str());
    return CXR_OK;
}

/* Stale *.part files were never acknowledged: the sender still has them. */
void clean_tmp(const std::string &d)
{
    DIR *dir = opendir(d.c_str());
    if (!dir)
        return;
    while (struct dirent *e = readdir(dir)) {
        size_t n = std::strlen(e->d_name);
        if (n > 5 && std::strcmp(e->d_name + n - 5, ".part") == 0)
            (void)unlinkat(dirfd(dir), e->d_name, 0);
    }
    (void)closedir(dir);
}

void configure(dcm_listener *l)
{
    DcmSCPConfig cfg;
    cfg.setAETitle(l->cfg.ae_title);
    cfg.setRespondWithCalledAETitle(OFFalse);
    cfg.setMaxReceivePDULength(OFstatic_cast(Uint32, l->cfg.max_pdu));
    cfg.setACSETimeout(OFstatic_cast(Uint32, l->cfg.acse_timeout));
    cfg.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    cfg.setDIMSETimeout(OFstatic_cast(Uint32, l->cfg.dimse_timeout));
    cfg.setHostLookupEnabled(OFFalse);
    for (const char *c : k_scored_classes)
        l->classes.insert(c);
    if (!l->cfg.refuse_other_classes) {
        for (int i = 0; i < numberOfDcmAllStorageSOPClassUIDs; i++)
            if (dcmAllStorageSOPClassUIDs[i])
                l->classes.insert(dcmAllStorageSOPClassUIDs[i]);
    }
    l->shared = DcmSharedSCPConfig(cfg);
}

void destroy(dcm_listener *l)
{
    if (l->net) {
        std::lock_guard<std::mutex> g(g_ext_lock);
        (void)ASC_dropNetwork(&l->net);
    }
    if (l->wakefd >= 0)
        (void)::close(l->wakefd);
    if (l->indirfd >= 0)
        (void)::close(l->indirfd);
    delete l;
}

} // namespace

extern "C" cxr_err dcm_listener_start(const struct dcm_listener_config *cfg,
                                      const struct dcm_listener_ops *ops, dcm_listener **ret,
                                      char *errbuf, size_t errlen)
{
    dcm_listener *l = nullptr;
    try {
        if (!cfg || !ops || !ret || (cfg->listen_fd < 0 && cfg->tls_listen_fd <= 0) ||
            cfg->max_associations < 1 ||
            cfg->max_associations > 4096 || cfg->max_pdu < 4096 || cfg->max_pdu > 131072 ||
            cfg->acse_timeout < 1 || cfg->dimse_timeout < 1 || cfg->idle_timeout < 1 ||
            cfg->max_object_bytes == 0 || !cfg->spool_dir[0] || !ops->stored || !cfg->ae_title[0] ||
            std::strlen(cfg->ae_title) > 16)
            return px_err(errbuf, errlen, CXR_EINVAL, "listener: invalid configuration");
        if (dcm_global_init() != CXR_OK)
            return px_err(errbuf, errlen, CXR_EDICOM, "listener: DCMTK data dictionary missing");
        l = new dcm_listener;
        l->cfg = *cfg;
        if (l->cfg.tls_listen_fd <= 0)
            l->cfg.tls_listen_fd = -1; /* none (0 in a zeroed config is not a socket of ours) */
        /* A peer that stalls in the middle of a PDU: DCMTK's reads block until its socket
         * receive timeout (60 s by default), not dimse_timeout. Bound them by dimse_timeout
         * (process-wide, like dcmExternalSocketHandle: one listener per process). */
        dcmSocketReceiveTimeout.set(OFstatic_cast(Sint32, cfg->dimse_timeout));
        dcmSocketSendTimeout.set(OFstatic_cast(Sint32, cfg->dimse_timeout));
        l->ops = *ops;
        l->cfg.spool_dir[sizeof(l->cfg.spool_dir) - 1] = '\0';
        l->cfg.ae_title[sizeof(l->cfg.ae_title) - 1] = '\0';
        copy_trim(l->cfg.ae_title, sizeof(l->cfg.ae_title), cfg->ae_title);
        std::string root = l->cfg.spool_dir;
        l->tmpdir = root + "/tmp";
        l->indir = root + "/in";
        cxr_err err = make_dir(root, errbuf, errlen);
        if (err == CXR_OK)
            err = make_dir(l->tmpdir, errbuf, errlen);
        if (err == CXR_OK)
            err = make_dir(l->indir, errbuf, errlen);
        if (err != CXR_OK) {
            destroy(l);
            return err;
        }
        clean_tmp(l->tmpdir);
        l->indirfd = ::open(l->indir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        l->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (l->indirfd < 0 || l->wakefd < 0) {
            int e = errno;
            destroy(l);
            return px_err(errbuf, errlen, CXR_EIO, "listener: %s", std::strerror(e));
        }
        configure(l);
        if (l->cfg.tls_listen_fd >= 0) {
            auto *tl = new Layer<DcmTLSTransportLayer>(NET_ACCEPTOR, nullptr, OFTrue);
            l->layer.reset(tl);
            cxr_err te = dcm_tls_setup(*tl, cfg->tls, true, errbuf, errlen);
            if (te != CXR_OK) {
                destroy(l);
                return te;
            }
        } else {
            l->layer.reset(new Layer<DcmTransportLayer>());
        }
        /* A connection reset between poll and accept must not block the acceptor (and stop). */
        for (int lfd : {l->cfg.listen_fd, l->cfg.tls_listen_fd}) {
            if (lfd < 0)
                continue;
            const int fl = fcntl(lfd, F_GETFL);
            if (fl < 0 || fcntl(lfd, F_SETFL, fl | O_NONBLOCK) != 0) {
                int e = errno;
                destroy(l);
                return px_err(errbuf, errlen, CXR_EINVAL, "listener: listen_fd: %s",
                              std::strerror(e));
            }
        }
        OFCondition c;
        {
            /* With the global set, the acceptor network binds nothing (see DESIGN). */
            std::lock_guard<std::mutex> g(g_ext_lock);
            dcmExternalSocketHandle.set(l->cfg.listen_fd >= 0 ? l->cfg.listen_fd
                                                              : l->cfg.tls_listen_fd);
            c = ASC_initializeNetwork(NET_ACCEPTOR, 0, cfg->acse_timeout, &l->net);
            dcmExternalSocketHandle.set(-1);
        }
        if (c.good())
            c = ASC_setTransportLayer(l->net, l->layer.get(), 0);
        if (c.bad()) {
            l->net = nullptr;
            destroy(l);
            return px_err(errbuf, errlen, CXR_EDICOM, "listener: DCMTK network: %s", c.text());
        }
        l->acceptor = std::thread(acceptor_main, l);
        *ret = l;
        return CXR_OK;
    } catch (const std::bad_alloc &) {
        if (l)
            destroy(l);
        return px_err(errbuf, errlen, CXR_ENOMEM, "listener: out of memory");
    } catch (...) {
        if (l)
            destroy(l);
        return px_err(errbuf, errlen, CXR_EDICOM, "listener: could not start");
    }
}

extern "C" int dcm_listener_active(const dcm_listener *l)
{
    return l ? l->active.load() : 0;
}

extern "C" void dcm_listener_stop(dcm_listener *l, int timeout_ms)
{
    if (!l)
        return;
    try {
        l->stopping.store(true);
        uint64_t one = 1;
        if (::write(l->wakefd, &one, sizeof(one)) < 0) {
            /* the acceptor polls with a 1 s timeout and sees stopping anyway */
        }
        if (l->acceptor.joinable())
            l->acceptor.join();
        {
            std::unique_lock<std::mutex> g(l->mu);
            auto all_done = [l] {
                for (dcm_conn *c : l->conns)
                    if (!c->done.load())
                        return false;
                return true;
            };
            (void)l->cv.wait_for(g, std::chrono::milliseconds(timeout_ms < 0 ? 0 : timeout_ms),
                                 all_done);
            /* abort the rest: their reads fail at once, DCMTK aborts, the threads end */
            for (dcm_conn *c : l->conns) {
                if (!c->done.load() && c->fd >= 0) {
                    c->aborted_by_stop.store(true);
                    (void)::shutdown(c->fd, SHUT_RDWR);
                }
            }
        }
        reap(l, true);
        destroy(l);
    } catch (...) {
        /* nothing sensible is left to do; do not let it cross into C */
    }
}
