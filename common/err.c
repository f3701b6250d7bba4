/* err.c - text for every cxr_err (the switch is exhaustive so -Wswitch catches a missing one)
 * and the errbuf formatter every module shares. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

const char *cxr_strerror(cxr_err err)
{
    switch (err) {
    case CXR_OK: return "success";
    case CXR_ENOMEM: return "out of memory";
    case CXR_EINVAL: return "invalid argument";
    case CXR_EIO: return "input/output error";
    case CXR_ELIMIT: return "limit exceeded";
    case CXR_EPARSE: return "parse error";
    case CXR_EDICOM: return "DICOM error";
    case CXR_EMODEL: return "model error";
    case CXR_EDB: return "database error";
    case CXR_ENET: return "network error";
    case CXR_ETIMEOUT: return "timed out";
    case CXR_EBUSY: return "busy";
    case CXR_ENOTFOUND: return "not found";
    case CXR_EUNSUPPORTED: return "unsupported";
    case CXR__LAST: break;
    }
    return "unknown error";
}

cxr_err cxr_errf(char *errbuf, size_t errlen, cxr_err err, const char *fmt, ...)
{
    va_list ap;

    if (errbuf && errlen) {
        va_start(ap, fmt);
        (void)vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return err;
}
