/*
 * hl7_int.h - what the two report builders share (hl7/report.c): input checks, DICOM date and
 * time parsing, the class codes, hashing. Private to hl7/.
 */
#ifndef CXR_HL7_INT_H
#define CXR_HL7_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hl7.h"

/* True when s is NULL or "". */
static inline bool rpt_absent(const char *s)
{
    return s == NULL || s[0] == '\0';
}

/* Writes "what: msg" to errbuf (may be NULL) and returns err: cxr_errf (common/err.h). */
#define rpt_fail cxr_errf

/* Checks everything both builders rely on: required values, UID and digest syntax, class
 * count and scores, UTF-8 of every string. */
cxr_err rpt_check(const struct rpt_result *r, const struct rpt_settings *s, char *errbuf,
                  size_t errlen);

bool rpt_is_utf8(const char *s);

/* A DICOM date and time, checked. has_time: a time was given; frac holds 0..6 digits. */
struct rpt_dt {
    bool has_date, has_time, has_tz;
    int year, mon, day;
    int hour, min, sec; /* min/sec -1 when the DICOM TM stopped before them */
    char frac[7];
    char tz[6]; /* "+HHMM" */
};
/* Parses DA (+ optional TM and offset). Malformed parts are treated as absent: a bad time
 * keeps the date, a bad date drops everything (the Study UID still names the study). */
void rpt_dt_parse(const char *da, const char *tm, const char *tz, struct rpt_dt *ret);

/* Splits Unix epoch ms into UTC calendar fields (frac = milliseconds as 3 digits). */
void rpt_dt_from_ms(int64_t ms, struct rpt_dt *ret);

/* The local code of class name: upper case, every run of other than [A-Z0-9] as one '_'
 * ("COVID-19" -> "COVID_19", "Lung Opacity" -> "LUNG_OPACITY"). */
void rpt_class_code(const char *name, char *buf, size_t len);

/* SNOMED CT concept for a class, matched case-insensitively on the model's name; NULL when
 * there is no agreed concept (STANDARDS 1.2: Lung Opacity, Normal). */
struct rpt_snomed {
    const char *code;
    const char *display;
};
const struct rpt_snomed *rpt_class_snomed(const char *name);

/* Local code and display of a triage priority ("URGENT", "Urgent"). */
const char *rpt_priority_code(enum rpt_priority p);
const char *rpt_priority_display(enum rpt_priority p);

/* SHA-256 of the parts, each followed by a 0 byte (so ("ab","c") != ("a","bc")). */
cxr_err rpt_sha256(const char *const *parts, size_t n, unsigned char out[32]);
void rpt_hex(const unsigned char *in, size_t n, char *out); /* 2n digits + NUL */

#endif
