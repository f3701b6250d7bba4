/*
 * dcm_tls.h - inside the adapter only (C++): sets up a DCMTK DcmTLSTransportLayer from a
 * struct dcm_tls_config, for the listener (dcm_scp.cpp) and the SCU (dcm_scu.cpp). Never seen by C.
 */
#ifndef CXR_DCM_TLS_H
#define CXR_DCM_TLS_H

#include <dcmtk/config/osconfig.h>

#include <dcmtk/dcmtls/tlslayer.h>

extern "C" {
#include "dicom.h"
}

/* Loads the certificate, key and CA of tls into layer (made for the server or client role),
 * selects the profile's cipher suites and the peer verification mode. CXR_OK, or CXR_EINVAL with
 * "tls_cert 'PATH': problem" (naming the file) in errbuf. */
cxr_err dcm_tls_setup(DcmTLSTransportLayer &layer, const struct dcm_tls_config &tls, bool server,
                      char *errbuf, size_t errlen);

#endif
