/*
 * dicom_int.h - helpers shared inside the dicom module (C and the C++ adapter); not part of
 * the public API.
 */
#ifndef CXR_DICOM_INT_H
#define CXR_DICOM_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Formats "..." into errbuf (when not NULL) and returns err, for `return px_err(...)`: the
 * shared cxr_errf (common/err.h) under the name the module's C and C++ files use. */
#define px_err cxr_errf

/* Checks w x h x ch against the limits and allocates img->samples (sets width/height/channels). */
cxr_err px_image_alloc(struct px_image *img, int w, int h, int ch, const char *name, char *errbuf,
                       size_t errlen);

/* Checks a DICOM file's tags and lengths (every length fits, sequences closed, nesting bounded)
 * before DCMTK allocates anything from them; see dcmscan.c. CXR_EPARSE + text on failure. */
cxr_err dcm_scan_structure(const void *data, size_t len, const char *name, char *errbuf,
                           size_t errlen);

/* dcm_scan_structure() up to the top-level Pixel Data only: what is after it (the pixel data
 * itself, trailing elements) is not walked, so a file cut inside its pixel data passes. */
cxr_err dcm_scan_header(const void *data, size_t len, const char *name, char *errbuf,
                        size_t errlen);

/* A DICOM UID: 1..64 characters of [0-9.], no empty component (len chars of uid, which need
 * not be NUL-terminated). */
bool dcm_uid_ok(const char *uid, size_t len);

#ifdef __cplusplus
}
#endif
#endif
