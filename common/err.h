/*
 * err.h - the one error type of cxrtriage.
 *
 * Every action function returns a cxr_err; CXR_OK is 0. Values are appended, never renumbered,
 * so logs and audit rows stay comparable across versions. Foreign codes (OFCondition, SQLITE_*,
 * CURLcode) are translated in exactly one function per adapter.
 */
#ifndef CXR_ERR_H
#define CXR_ERR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cxr_err {
    CXR_OK = 0,
    CXR_ENOMEM,    /* 1: out of memory */
    CXR_EINVAL,    /* 2: invalid argument or value */
    CXR_EIO,       /* 3: file or socket I/O failed */
    CXR_ELIMIT,    /* 4: a configured or built-in limit was exceeded */
    CXR_EPARSE,    /* 5: malformed input (config, DICOM header, JSON, ...) */
    CXR_EDICOM,    /* 6: DICOM decoding or network failure */
    CXR_EMODEL,    /* 7: model file invalid or incompatible */
    CXR_EDB,       /* 8: audit database failure */
    CXR_ENET,      /* 9: network failure */
    CXR_ETIMEOUT,  /* 10: timed out */
    CXR_EBUSY,     /* 11: resource busy */
    CXR_ENOTFOUND, /* 12: no such file, key or record */
    CXR_EUNSUPPORTED, /* 13: valid input we do not handle (transfer syntax, SOP class, ...) */
    CXR__LAST /* never use! */
} cxr_err;

/* Returns a static, human-readable text for err; never NULL. */
const char *cxr_strerror(cxr_err err);

/* Formats "..." into errbuf (nothing when it is NULL or errlen is 0) and returns err, so that a
 * failure is described and returned in one step: `return cxr_errf(errbuf, errlen, CXR_EINVAL,
 * "bad %s", what);`. */
cxr_err cxr_errf(char *errbuf, size_t errlen, cxr_err err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif
#endif
