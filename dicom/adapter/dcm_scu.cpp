/*
 * dcm_scu.cpp - the SCU side of dicom.h: C-ECHO (`cxrtriage echo`) and C-STORE (`cxrtriage
 * selftest`) over DCMTK 3.6.7's dcmnet, plain or over TLS (dcmtls).
 *
 * DESIGN. One association per call, on DCMTK's association API (ASC_*, DIMSE_*), because it tells
 * exactly how a request failed: the A-ASSOCIATE-RJ's result, source and reason
 * (ASC_getRejectParameters), or the TCP / TLS condition. Every wait is bounded by timeout_s: the
 * TCP connect (dcmConnectionTimeout, a process global: this is a client-side helper for the CLI,
 * never called inside the daemon), the A-ASSOCIATE-AC (the network's ACSE timeout) and every DIMSE
 * response (non-blocking mode). A failure is classified into enum dcm_scu_fail from the condition
 * (its module and code, and for the TCP errors the system's message), so the caller can name it.
 * The Scu struct owns network, parameters, association and TLS layer, and releases them in reverse
 * order whatever happens. Every exported function catches every exception.
 */
#include <sys/random.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dcmtrans.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/dul.h>

#include "dcm_tls.h"

extern "C" {
#include "dicom_int.h"
}

namespace
{

double mono_ms()
{
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

struct Scu {
    T_ASC_Network *net = nullptr;
    T_ASC_Parameters *params = nullptr; /* owned by assoc once requested */
    T_ASC_Association *assoc = nullptr;
    std::unique_ptr<DcmTLSTransportLayer> tls;
    bool released = false;

    ~Scu()
    {
        if (assoc) {
            if (!released)
                (void)ASC_abortAssociation(assoc);
            (void)ASC_destroyAssociation(&assoc); /* frees params too */
        } else if (params) {
            (void)ASC_destroyAssociationParameters(&params);
        }
        if (net)
            (void)ASC_dropNetwork(&net);
    }
};

void set_fail(struct dcm_scu_result *r, enum dcm_scu_fail f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void set_fail(struct dcm_scu_result *r, enum dcm_scu_fail f, const char *fmt, ...)
{
    va_list ap;
    r->fail = f;
    va_start(ap, fmt);
    (void)std::vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
    va_end(ap);
}

bool contains(const char *hay, const char *needle)
{
    return hay && std::strstr(hay, needle) != nullptr;
}

/* Classifies a failed ASC_requestAssociation or DIMSE exchange. over_tls: the association
 * step over TLS, where a server that refuses our certificate (or has no TLS on the port) just
 * closes the connection: a reset or an abort there is reported as a TLS failure. */
void classify(const OFCondition &c, struct dcm_scu_result *r, const char *step,
              bool over_tls = false)
{
    const char *t = c.text();
    const bool tls = c.module() == OFM_dcmtls || contains(t, "SSL") || contains(t, "TLS") ||
                     contains(t, "certificate");
    enum dcm_scu_fail f = DCM_SCU_NETWORK;
    if (tls)
        f = DCM_SCU_TLS;
    else if (c == DUL_PEERABORTEDASSOCIATION)
        f = DCM_SCU_ABORTED;
    else if (contains(t, "Connection refused"))
        f = DCM_SCU_CONNECT_REFUSED;
    else if (c == DUL_READTIMEOUT || c == DIMSE_NODATAAVAILABLE || contains(t, "timed out") ||
             contains(t, "Timeout") || contains(t, "timeout"))
        f = DCM_SCU_TIMEOUT;
    if (over_tls && (f == DCM_SCU_ABORTED || f == DCM_SCU_NETWORK)) {
        set_fail(r, DCM_SCU_TLS,
                 "during %s: the server closed the connection in the TLS handshake or before "
                 "answering (%s)",
                 step, t);
        return;
    }
    if (f == DCM_SCU_ABORTED)
        set_fail(r, f, "during %s: the peer aborted or closed the connection (%s)", step, t);
    else
        set_fail(r, f, "during %s: %s", step, t);
}

cxr_err fail_err(const struct dcm_scu_result *r, char *errbuf, size_t errlen)
{
    return px_err(errbuf, errlen, CXR_EIO, "%s", r->reason);
}

/* Opens the association with the given contexts (abstract syntax, transfer syntaxes). */
cxr_err open_assoc(Scu &s, const struct dcm_scu_config *cfg,
                   const std::vector<std::pair<std::string, std::vector<std::string>>> &ctxs,
                   struct dcm_scu_result *r, char *errbuf, size_t errlen)
{
    /* DCMTK turns Nagle's algorithm off when TCP_NODELAY is set at connect (PEERS.md): without
     * it every request waits ~40 ms for a delayed ACK. Process-wide, like the timeouts. */
    (void)setenv("TCP_NODELAY", "1", 0);
    dcmConnectionTimeout.set(OFstatic_cast(Sint32, cfg->timeout_s));
    dcmSocketReceiveTimeout.set(OFstatic_cast(Sint32, cfg->timeout_s));
    dcmSocketSendTimeout.set(OFstatic_cast(Sint32, cfg->timeout_s));
    OFCondition c = ASC_initializeNetwork(NET_REQUESTOR, 0, cfg->timeout_s, &s.net);
    if (c.bad()) {
        set_fail(r, DCM_SCU_NETWORK, "network: %s", c.text());
        return fail_err(r, errbuf, errlen);
    }
    if (cfg->use_tls) {
        s.tls.reset(new DcmTLSTransportLayer(NET_REQUESTOR, nullptr, OFTrue));
        char why[512];
        if (dcm_tls_setup(*s.tls, cfg->tls, false, why, sizeof(why)) != CXR_OK) {
            set_fail(r, DCM_SCU_TLS, "TLS set-up: %s", why);
            return px_err(errbuf, errlen, CXR_EINVAL, "%s", r->reason);
        }
        c = ASC_setTransportLayer(s.net, s.tls.get(), 0);
        if (c.bad()) {
            set_fail(r, DCM_SCU_TLS, "TLS set-up: %s", c.text());
            return fail_err(r, errbuf, errlen);
        }
    }
    c = ASC_createAssociationParameters(&s.params, ASC_DEFAULTMAXPDU);
    if (c.good())
        c = ASC_setAPTitles(s.params, cfg->calling_aet, cfg->called_aet, nullptr);
    if (c.good())
        c = ASC_setTransportLayerType(s.params, cfg->use_tls ? OFTrue : OFFalse);
    char peer[300];
    (void)std::snprintf(peer, sizeof(peer), "%s:%d", cfg->host, cfg->port);
    if (c.good())
        c = ASC_setPresentationAddresses(s.params, "localhost", peer);
    T_ASC_PresentationContextID id = 1;
    for (const auto &ctx : ctxs) {
        std::vector<const char *> ts;
        for (const auto &t : ctx.second)
            ts.push_back(t.c_str());
        if (c.good())
            c = ASC_addPresentationContext(s.params, id, ctx.first.c_str(), ts.data(),
                                           OFstatic_cast(int, ts.size()));
        id = OFstatic_cast(T_ASC_PresentationContextID, id + 2);
    }
    if (c.bad()) {
        set_fail(r, DCM_SCU_NETWORK, "association parameters: %s", c.text());
        return fail_err(r, errbuf, errlen);
    }
    const double t0 = mono_ms();
    T_ASC_Parameters *params = s.params;
    c = ASC_requestAssociation(s.net, s.params, &s.assoc);
    if (s.assoc)
        s.params = nullptr; /* owned by the association now */
    r->assoc_ms = mono_ms() - t0;
    if (c.bad()) {
        if (c == DUL_ASSOCIATIONREJECTED) {
            T_ASC_RejectParameters rej;
            OFString text;
            (void)ASC_getRejectParameters(params, &rej);
            (void)ASC_printRejectParameters(text, &rej);
            for (char &ch : text)
                if (ch == '\n' || ch == '\r')
                    ch = ' ';
            set_fail(r, DCM_SCU_REJECTED, "%s", text.c_str());
        } else {
            classify(c, r, "association", cfg->use_tls);
        }
        s.released = true; /* nothing to abort */
        return fail_err(r, errbuf, errlen);
    }
    if (ASC_countAcceptedPresentationContexts(s.assoc->params) == 0) {
        set_fail(r, DCM_SCU_NO_CONTEXT,
                 "association accepted but no presentation context: the peer does not take %s",
                 ctxs.empty() ? "?" : ctxs[0].first.c_str());
        return fail_err(r, errbuf, errlen);
    }
    if (cfg->use_tls) {
        OFString d;
        (void)ASC_dumpConnectionParameters(d, s.assoc);
        const char *p = std::strstr(d.c_str(), "Ciphersuite : ");
        if (p) {
            p += std::strlen("Ciphersuite : ");
            size_t n = std::strcspn(p, ",\n");
            if (n >= sizeof(r->tls_cipher))
                n = sizeof(r->tls_cipher) - 1;
            std::memcpy(r->tls_cipher, p, n);
            r->tls_cipher[n] = '\0';
        }
    }
    return CXR_OK;
}

void release(Scu &s)
{
    if (s.assoc && !s.released) {
        if (ASC_releaseAssociation(s.assoc).bad())
            (void)ASC_abortAssociation(s.assoc);
        s.released = true;
    }
}

cxr_err check_cfg(const struct dcm_scu_config *cfg, struct dcm_scu_result *r, char *errbuf,
                  size_t errlen)
{
    if (!cfg || !r || !cfg->host[0] || cfg->port < 1 || cfg->port > 65535 ||
        cfg->timeout_s < 1 || cfg->timeout_s > 3600 || !cfg->calling_aet[0] ||
        !cfg->called_aet[0])
        return px_err(errbuf, errlen, CXR_EINVAL, "SCU: invalid configuration");
    *r = dcm_scu_result{};
    if (dcm_global_init() != CXR_OK)
        return px_err(errbuf, errlen, CXR_EDICOM, "SCU: DCMTK data dictionary missing");
    return CXR_OK;
}

} // namespace

extern "C" const char *dcm_scu_fail_name(enum dcm_scu_fail f)
{
    switch (f) {
    case DCM_SCU_OK: return "ok";
    case DCM_SCU_CONNECT_REFUSED: return "connection refused";
    case DCM_SCU_TIMEOUT: return "timeout";
    case DCM_SCU_NETWORK: return "network error";
    case DCM_SCU_TLS: return "TLS failure";
    case DCM_SCU_REJECTED: return "association rejected";
    case DCM_SCU_ABORTED: return "association aborted";
    case DCM_SCU_NO_CONTEXT: return "no presentation context";
    case DCM_SCU_STATUS: return "failure status";
    case DCM_SCU_FILE: return "file unreadable";
    }
    return "unknown";
}

extern "C" cxr_err dcm_scu_echo(const struct dcm_scu_config *cfg, int count,
                                struct dcm_scu_result *ret, char *errbuf, size_t errlen)
{
    try {
        cxr_err e = check_cfg(cfg, ret, errbuf, errlen);
        if (e != CXR_OK)
            return e;
        if (count < 1 || count > 1000)
            return px_err(errbuf, errlen, CXR_EINVAL, "echo: count must be 1..1000");
        Scu s;
        e = open_assoc(s,
                       cfg,
                       {{UID_VerificationSOPClass,
                         {UID_LittleEndianExplicitTransferSyntax,
                          UID_LittleEndianImplicitTransferSyntax}}},
                       ret, errbuf, errlen);
        if (e != CXR_OK)
            return e;
        double sum = 0;
        for (int i = 0; i < count; i++) {
            DIC_US status = 0;
            DcmDataset *detail = nullptr;
            const double t0 = mono_ms();
            OFCondition c = DIMSE_echoUser(s.assoc, OFstatic_cast(DIC_US, s.assoc->nextMsgID++),
                                           DIMSE_NONBLOCKING, cfg->timeout_s, &status, &detail);
            const double ms = mono_ms() - t0;
            delete detail;
            if (c.bad()) {
                classify(c, ret, "C-ECHO");
                return fail_err(ret, errbuf, errlen);
            }
            ret->status = status;
            if (status != STATUS_Success) {
                char st[16];
                (void)std::snprintf(st, sizeof(st), "0x%04x", status);
                set_fail(ret, DCM_SCU_STATUS, "C-ECHO: the peer answered status %s", st);
                return fail_err(ret, errbuf, errlen);
            }
            if (ret->n_ok == 0 || ms < ret->rtt_min_ms)
                ret->rtt_min_ms = ms;
            if (ms > ret->rtt_max_ms)
                ret->rtt_max_ms = ms;
            sum += ms;
            ret->n_ok++;
        }
        ret->rtt_avg_ms = sum / count;
        release(s);
        return CXR_OK;
    } catch (const std::bad_alloc &) {
        return px_err(errbuf, errlen, CXR_ENOMEM, "echo: out of memory");
    } catch (...) {
        return px_err(errbuf, errlen, CXR_EDICOM, "echo: failed");
    }
}

namespace
{

bool put(DcmItem *it, const DcmTagKey &tag, const char *v)
{
    return !v[0] || it->putAndInsertString(tag, v).good();
}

} // namespace

extern "C" cxr_err dcm_scu_store(const struct dcm_scu_config *cfg, const char *path,
                                 const struct dcm_store_edit *edit, struct dcm_scu_result *ret,
                                 char *errbuf, size_t errlen)
{
    try {
        cxr_err e = check_cfg(cfg, ret, errbuf, errlen);
        if (e != CXR_OK)
            return e;
        if (!path)
            return px_err(errbuf, errlen, CXR_EINVAL, "store: no file");
        DcmFileFormat ff;
        OFCondition c = ff.loadFile(path);
        DcmDataset *ds = ff.getDataset();
        if (c.bad() || !ds) {
            set_fail(ret, DCM_SCU_FILE, "%s: cannot read: %s", path, c.text());
            return px_err(errbuf, errlen, CXR_EPARSE, "%s", ret->reason);
        }
        if (edit && (!put(ds, DCM_StudyInstanceUID, edit->study_uid) ||
                     !put(ds, DCM_SeriesInstanceUID, edit->series_uid) ||
                     !put(ds, DCM_SOPInstanceUID, edit->sop_instance_uid) ||
                     !put(ff.getMetaInfo(), DCM_MediaStorageSOPInstanceUID,
                          edit->sop_instance_uid) ||
                     !put(ds, DCM_PatientID, edit->patient_id))) {
            set_fail(ret, DCM_SCU_FILE, "%s: cannot change its UIDs", path);
            return px_err(errbuf, errlen, CXR_EDICOM, "%s", ret->reason);
        }
        OFString sop_class, sop_uid;
        if (ds->findAndGetOFString(DCM_SOPClassUID, sop_class).bad() ||
            ds->findAndGetOFString(DCM_SOPInstanceUID, sop_uid).bad() || sop_class.empty() ||
            sop_uid.empty()) {
            set_fail(ret, DCM_SCU_FILE, "%s: no SOP Class or SOP Instance UID", path);
            return px_err(errbuf, errlen, CXR_EPARSE, "%s", ret->reason);
        }
        const E_TransferSyntax orig = ds->getOriginalXfer();
        std::vector<std::string> ts;
        if (orig != EXS_Unknown)
            ts.push_back(DcmXfer(orig).getXferID());
        for (const char *u :
             {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax})
            if (ts.empty() || ts[0] != u)
                ts.push_back(u);
        Scu s;
        e = open_assoc(s, cfg, {{sop_class.c_str(), ts}}, ret, errbuf, errlen);
        if (e != CXR_OK)
            return e;
        T_ASC_PresentationContextID pid =
            ASC_findAcceptedPresentationContextID(s.assoc, sop_class.c_str());
        T_ASC_PresentationContext pc;
        if (pid == 0 || ASC_findAcceptedPresentationContext(s.assoc->params, pid, &pc).bad()) {
            set_fail(ret, DCM_SCU_NO_CONTEXT, "the peer does not accept SOP class %s",
                     sop_class.c_str());
            return fail_err(ret, errbuf, errlen);
        }
        DcmXfer accepted(pc.acceptedTransferSyntax);
        if (accepted.getXfer() != orig &&
            ds->chooseRepresentation(accepted.getXfer(), nullptr).bad()) {
            set_fail(ret, DCM_SCU_FILE, "%s: cannot be converted to %s", path,
                     accepted.getXferName());
            return px_err(errbuf, errlen, CXR_EUNSUPPORTED, "%s", ret->reason);
        }
        T_DIMSE_C_StoreRQ req;
        T_DIMSE_C_StoreRSP rsp;
        std::memset(&req, 0, sizeof(req));
        std::memset(&rsp, 0, sizeof(rsp));
        req.MessageID = s.assoc->nextMsgID++;
        OFStandard::strlcpy(req.AffectedSOPClassUID, sop_class.c_str(),
                            sizeof(req.AffectedSOPClassUID));
        OFStandard::strlcpy(req.AffectedSOPInstanceUID, sop_uid.c_str(),
                            sizeof(req.AffectedSOPInstanceUID));
        req.DataSetType = DIMSE_DATASET_PRESENT;
        req.Priority = DIMSE_PRIORITY_MEDIUM;
        DcmDataset *detail = nullptr;
        const double t0 = mono_ms();
        c = DIMSE_storeUser(s.assoc, pid, &req, nullptr, ds, nullptr, nullptr, DIMSE_NONBLOCKING,
                            cfg->timeout_s, &rsp, &detail);
        const double ms = mono_ms() - t0;
        delete detail;
        if (c.bad()) {
            classify(c, ret, "C-STORE");
            return fail_err(ret, errbuf, errlen);
        }
        ret->status = rsp.DimseStatus;
        ret->rtt_min_ms = ret->rtt_avg_ms = ret->rtt_max_ms = ms;
        if (rsp.DimseStatus != STATUS_Success && (rsp.DimseStatus & 0xf000) != 0xb000) {
            char st[16];
            (void)std::snprintf(st, sizeof(st), "0x%04x", rsp.DimseStatus);
            set_fail(ret, DCM_SCU_STATUS, "C-STORE: the peer answered status %s", st);
            release(s);
            return fail_err(ret, errbuf, errlen);
        }
        ret->n_ok = 1;
        release(s);
        return CXR_OK;
    } catch (const std::bad_alloc &) {
        return px_err(errbuf, errlen, CXR_ENOMEM, "store: out of memory");
    } catch (...) {
        return px_err(errbuf, errlen, CXR_EDICOM, "store: failed");
    }
}

extern "C" cxr_err dcm_new_uid(char out[65])
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof(b)) {
        ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return CXR_EIO;
        got += OFstatic_cast(size_t, n);
    }
    /* UUID version 4 bits (RFC 4122), then the 128-bit number in decimal. */
    b[6] = OFstatic_cast(unsigned char, (b[6] & 0x0f) | 0x40);
    b[8] = OFstatic_cast(unsigned char, (b[8] & 0x3f) | 0x80);
    unsigned __int128 v = 0;
    for (unsigned char x : b)
        v = (v << 8) | x;
    char digits[48];
    int n = 0;
    do {
        digits[n++] = OFstatic_cast(char, '0' + OFstatic_cast(int, v % 10));
        v /= 10;
    } while (v != 0 && n < OFstatic_cast(int, sizeof(digits)));
    std::memcpy(out, "2.25.", 5);
    int o = 5;
    while (n > 0)
        out[o++] = digits[--n];
    out[o] = '\0';
    return CXR_OK;
}
