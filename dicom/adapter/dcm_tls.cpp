/*
 * dcm_tls.cpp - DICOM TLS set-up shared by the listener and the SCU: certificate, key, trusted
 * CA, the BCP 195 profile (DCMTK 3.6.7's DcmTLSSecurityProfile) and peer verification, over
 * DCMTK's dcmtls (OpenSSL). Errors name the configuration key and the file.
 */
#include <cstdio>
#include <cstring>
#include <new>

#include "dcm_tls.h"

extern "C" {
#include "dicom_int.h"
}

namespace
{

DcmTLSSecurityProfile profile_of(enum dcm_tls_profile p)
{
    switch (p) {
    case DCM_TLS_BCP195:
        return TSP_Profile_BCP195;
    case DCM_TLS_BCP195_EXT:
        return TSP_Profile_BCP195_Extended;
    default:
        return TSP_Profile_BCP195_ND;
    }
}

} // namespace

cxr_err dcm_tls_setup(DcmTLSTransportLayer &layer, const struct dcm_tls_config &tls, bool server,
                      char *errbuf, size_t errlen)
{
    if (!layer)
        return px_err(errbuf, errlen, CXR_EINVAL, "TLS: OpenSSL context could not be created");
    if (server && (!tls.cert[0] || !tls.key[0]))
        return px_err(errbuf, errlen, CXR_EINVAL,
                      "tls_cert, tls_key: a TLS listener needs a certificate and its key");
    if (tls.verify_peer && !tls.ca[0])
        return px_err(errbuf, errlen, CXR_EINVAL,
                      "tls_ca: verifying the peer's certificate needs the CA certificates");
    if (!tls.cert[0] != !tls.key[0])
        return px_err(errbuf, errlen, CXR_EINVAL,
                      "tls_cert, tls_key: give both the certificate and its key, or neither");
    OFCondition c;
    if (tls.ca[0]) {
        c = layer.addTrustedCertificateFile(tls.ca, DCF_Filetype_PEM);
        if (c.bad())
            return px_err(errbuf, errlen, CXR_EINVAL,
                          "tls_ca '%s': not a readable PEM certificate file (%s)", tls.ca,
                          c.text());
    }
    if (tls.key[0]) {
        layer.setPrivateKeyPasswd(""); /* an encrypted key fails here instead of prompting */
        c = layer.setPrivateKeyFile(tls.key, DCF_Filetype_PEM);
        if (c.bad())
            return px_err(errbuf, errlen, CXR_EINVAL,
                          "tls_key '%s': not a readable, unencrypted PEM private key (%s)",
                          tls.key, c.text());
        c = layer.setCertificateFile(tls.cert, DCF_Filetype_PEM);
        if (c.bad())
            return px_err(errbuf, errlen, CXR_EINVAL,
                          "tls_cert '%s': not a readable PEM certificate (%s)", tls.cert,
                          c.text());
        if (!layer.checkPrivateKeyMatchesCertificate())
            return px_err(errbuf, errlen, CXR_EINVAL,
                          "tls_key '%s' does not belong to tls_cert '%s'", tls.key, tls.cert);
    }
    c = layer.setTLSProfile(profile_of(tls.profile));
    if (c.good())
        c = layer.activateCipherSuites();
    if (c.bad())
        return px_err(errbuf, errlen, CXR_EINVAL, "tls_profile %s: %s",
                      dcm_tls_profile_name(tls.profile), c.text());
    if (server)
        (void)layer.setBuiltInDHParameters(); /* for the DHE suites of the profile */
    layer.setCertificateVerification(tls.verify_peer ? DCV_requireCertificate
                                                     : DCV_ignoreCertificate);
    return CXR_OK;
}

extern "C" bool dcm_tls_profile_from_name(const char *name, enum dcm_tls_profile *ret)
{
    static const struct {
        const char *name;
        enum dcm_tls_profile p;
    } names[] = {{"bcp195-nd", DCM_TLS_BCP195_ND},
                 {"bcp195", DCM_TLS_BCP195},
                 {"bcp195-ext", DCM_TLS_BCP195_EXT}};
    for (const auto &n : names)
        if (name && std::strcmp(name, n.name) == 0) {
            if (ret)
                *ret = n.p;
            return true;
        }
    return false;
}

extern "C" const char *dcm_tls_profile_name(enum dcm_tls_profile p)
{
    switch (p) {
    case DCM_TLS_BCP195:
        return "bcp195";
    case DCM_TLS_BCP195_EXT:
        return "bcp195-ext";
    default:
        return "bcp195-nd";
    }
}

extern "C" cxr_err dcm_tls_check(const struct dcm_tls_config *tls, bool server, char *errbuf,
                                 size_t errlen)
{
    try {
        if (!tls)
            return px_err(errbuf, errlen, CXR_EINVAL, "TLS: no configuration");
        DcmTLSTransportLayer layer(server ? NET_ACCEPTOR : NET_REQUESTOR, nullptr, OFFalse);
        return dcm_tls_setup(layer, *tls, server, errbuf, errlen);
    } catch (const std::bad_alloc &) {
        return px_err(errbuf, errlen, CXR_ENOMEM, "TLS: out of memory");
    } catch (...) {
        return px_err(errbuf, errlen, CXR_EDICOM, "TLS: set-up failed");
    }
}
