/*
 * common.h - the base every cxrtriage module links: errors, logging, bounded buffers,
 * durable file helpers and the project's version.
 */
#ifndef CXR_COMMON_H
#define CXR_COMMON_H

#include "buf.h"
#include "err.h"
#include "fsutil.h"
#include "sha256.h"
#include "log.h"
#include "version.h"

#define CXR_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The one sentence every report, page and CLI output carries. */
#define CXR_DISCLAIMER \
    "Decision support only, not a diagnosis: scores must be reviewed by a qualified radiologist."

/* The Patient ID of `cxrtriage selftest`'s instance (data/selftest/README.md): the daemon scores
 * and audits it like any other but never reports its study to the EHR. */
#define CXR_SELFTEST_PATIENT_ID "CXRTRIAGE-SELFTEST"

#endif
