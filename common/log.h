/*
 * log.h - the logging API: levels, an event name and key=value fields, one line per event.
 *
 *   cxr_log(CXR_LOG_INFO, "dicom.listen", "addr=%s port=%d", addr, port);
 *   -> 2026-11-22T10:00:00.123Z INFO dicom.listen addr=127.0.0.1 port=11112
 *
 * The level is checked before any argument is evaluated. Under systemd (JOURNAL_STREAM set)
 * lines carry a "<N>" syslog priority prefix instead of a timestamp, since journald adds one.
 * Patient data is never logged unless [log] phi = true: pass such values through cxr_log_phi(),
 * which returns "[phi]" when PHI logging is off. Library modules (model, hl7, pixel, config
 * parsing) do not log above DEBUG; programs and adapter boundaries do.
 */
#ifndef CXR_LOG_H
#define CXR_LOG_H

#include <stdbool.h>
#include <stdio.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* syslog's numbering, so the journald prefix is the level itself. */
enum cxr_log_level {
    CXR_LOG_ERR = 3,
    CXR_LOG_WARNING = 4,
    CXR_LOG_NOTICE = 5,
    CXR_LOG_INFO = 6,
    CXR_LOG_DEBUG = 7,
};

extern int cxr_log_threshold; /* messages with level <= threshold are written */

#define cxr_log(level, ...)                                                                      \
    do {                                                                                         \
        if ((int)(level) > cxr_log_threshold)                                                    \
            break;                                                                               \
        cxr_log_write((level), __VA_ARGS__);                                                     \
    } while (0)

/* Writes one line: level, event, then the printf-formatted fields. Thread-safe. */
void cxr_log_write(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs at ERR and returns err, for `return cxr_log_err(CXR_EIO, "spool.write", "...")`. */
cxr_err cxr_log_err(cxr_err err, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parses "err|warning|notice|info|debug"; returns -1 when the name is unknown. */
int cxr_log_level_from_name(const char *name);
const char *cxr_log_level_name(int level);

/* Sets the threshold, whether PHI may be logged, and the sink (NULL = stderr). */
void cxr_log_setup(int threshold, bool phi, FILE *sink);
bool cxr_log_phi_enabled(void);

/* Returns value when PHI logging is on, else the constant "[phi]". */
const char *cxr_log_phi(const char *value);

#ifdef __cplusplus
}
#endif
#endif
